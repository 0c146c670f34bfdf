// A snapshot image downloaded from a peer (the transport's fetchSnapshot): written beside its place,
// fsynced, renamed and the folder fsynced, so that the image is either absent or complete.
import { open, unlink, type FileHandle } from 'node:fs/promises';
import type { Pool } from 'undici';
import { renameDurably } from '../store/durable.js';
import { errorText } from './errors.js';

export class SnapshotFetchError extends Error {
  override name = 'SnapshotFetchError';
  constructor(
    message: string,
    /** The peer's HTTP status, when it answered. */
    readonly status?: number,
    options?: ErrorOptions,
  ) {
    super(message, options);
  }
}

/**
 * Downloads `from.path` from `from.pool` (the snapshot route of a peer) into `destPath`: written to
 * `destPath.part`, fsynced, renamed, and the directory fsynced. Rejects with SnapshotFetchError on a
 * non-200 answer, a cut-short body or a failed request; `what` names the image in its message.
 */
export async function downloadSnapshot(from: { pool: Pool; path: string; authorization: string }, what: string, destPath: string): Promise<void> {
  const { pool, path, authorization } = from;
  let res;
  try {
    res = await pool.request({
      method: 'GET',
      path,
      headers: { authorization },
    });
  } catch (cause) {
    throw new SnapshotFetchError(`fetching ${what} failed: ${errorText(cause)}`, undefined, { cause });
  }
  if (res.statusCode !== 200) {
    const detail = await res.body.text().then((t) => t.slice(0, 300), () => '');
    throw new SnapshotFetchError(`fetching ${what}: the peer answered ${res.statusCode} ${detail}`, res.statusCode);
  }
  const length = res.headers['content-length'];
  const expected = typeof length === 'string' ? Number(length) : undefined;

  const part = `${destPath}.part`;
  let file: FileHandle | undefined;
  try {
    file = await open(part, 'w');
    let written = 0;
    for await (const chunk of res.body as AsyncIterable<Buffer>) {
      await writeAll(file, chunk);
      written += chunk.byteLength;
    }
    if (expected !== undefined && written !== expected) {
      throw new SnapshotFetchError(`fetching ${what}: got ${written} of ${expected} bytes`, res.statusCode);
    }
    await file.sync();
    await file.close();
    file = undefined;
    await renameDurably(part, destPath, { synced: true });
  } catch (cause) {
    res.body.destroy();
    await file?.close().catch(() => undefined);
    await unlink(part).catch(() => undefined);
    if (cause instanceof SnapshotFetchError) throw cause;
    throw new SnapshotFetchError(`fetching ${what} failed: ${errorText(cause)}`, res.statusCode, { cause });
  }
}

async function writeAll(file: FileHandle, chunk: Buffer): Promise<void> {
  let offset = 0;
  while (offset < chunk.byteLength) {
    const { bytesWritten } = await file.write(chunk, offset, chunk.byteLength - offset);
    offset += bytesWritten;
  }
}
