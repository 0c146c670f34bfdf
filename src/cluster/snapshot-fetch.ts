// A snapshot image downloaded from a peer (the transport's fetchSnapshot): written beside its place,
// fsynced, renamed and the folder fsynced, so that the image is either absent or complete.
import { createHash } from 'node:crypto';
import { open, unlink, type FileHandle } from 'node:fs/promises';
import type { Pool } from 'undici';
import { renameDurably } from '../store/durable.js';
import { errorText } from './errors.js';

/**
 * On the answer carrying an image: the SHA-256 of the whole file, in hex, so that the receiver
 * installs only the bytes the serving node had (a copy damaged on the way, or on the receiver's side
 * before its sync, would otherwise become the partition's state there without a sign). Builds before
 * it send none; their images are checked by length alone.
 */
export const IMAGE_DIGEST_HEADER = 'x-mom-image-sha256';

/** Bytes read at a time to make an image's digest (fileDigest). */
const DIGEST_READ_BYTES = 1024 * 1024;

/** The SHA-256 (hex) of the first `size` bytes of `file`, read by position, so its offset stays where it was. */
export async function fileDigest(file: FileHandle, size: number): Promise<string> {
  const hash = createHash('sha256');
  const buf = Buffer.allocUnsafe(Math.min(DIGEST_READ_BYTES, Math.max(size, 1)));
  for (let at = 0; at < size; ) {
    const { bytesRead } = await file.read(buf, 0, Math.min(buf.length, size - at), at);
    if (bytesRead === 0) throw new Error(`the file ended at ${at} of ${size} bytes`);
    hash.update(buf.subarray(0, bytesRead));
    at += bytesRead;
  }
  return hash.digest('hex');
}

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
 * non-200 answer, a cut-short body, bytes whose SHA-256 is not the one the peer said
 * (IMAGE_DIGEST_HEADER) or a failed request; `what` names the image in its message.
 */
export async function downloadSnapshot(from: { pool: Pool; path: string; headers: Record<string, string> }, what: string, destPath: string): Promise<void> {
  const { pool, path, headers } = from;
  let res;
  try {
    res = await pool.request({
      method: 'GET',
      path,
      headers,
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
  const said = res.headers[IMAGE_DIGEST_HEADER];
  const digest = typeof said === 'string' ? said : undefined;

  const part = `${destPath}.part`;
  let file: FileHandle | undefined;
  try {
    file = await open(part, 'w+');
    let written = 0;
    for await (const chunk of res.body as AsyncIterable<Buffer>) {
      await writeAll(file, chunk);
      written += chunk.byteLength;
    }
    if (expected !== undefined && written !== expected) {
      throw new SnapshotFetchError(`fetching ${what}: got ${written} of ${expected} bytes`, res.statusCode);
    }
    await file.sync();
    // Read back once synced: the file as it will be installed (from the page cache), not the chunks as they arrived.
    if (digest !== undefined) {
      const got = await fileDigest(file, written);
      if (got !== digest) throw new SnapshotFetchError(`fetching ${what}: the copy's SHA-256 is ${got}, the peer's image has ${digest}`, res.statusCode);
    }
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
