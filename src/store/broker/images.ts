// A partition's state made durable, copied into an image for a follower, and an image installed in
// place of a state: the files of snapshots (the node host decides when: src/partition/snapshots.ts).
//
// A snapshot is a point the state was durable at (syncStateFiles), never a copy. An image is made
// only when a follower asks: SQLite's online backup a few pages per event-loop turn (copyState),
// then the bodies its rows leave in the log put into it (finishImage). Each file step is durable
// before the next: written under a temporary name, fsynced, renamed, the folder fsynced.
import { rm } from 'node:fs/promises';
import { dirname } from 'node:path';
import Database from 'better-sqlite3';
import { rowBody } from './bodies.js';
import type { Store } from './context.js';
import { fsyncPathAsync, renameDurably } from '../durable.js';
import type { Sqlite } from './sqlite.js';
import { prepareImageBodies, prepareImageMeta, prepareOutboxAdvance } from './statements.js';

/**
 * Bytes a snapshot copies per event-loop turn (64 pages of 4 KiB, 128 of 2 KiB): about a millisecond
 * of work, so requests and the Raft loop interleave with a copy of any size.
 */
const SNAPSHOT_BYTES_PER_STEP = 256 * 1024;

/** Rows an image gets their bodies in per event-loop turn (fillBodies). */
const IMAGE_FILL_ROWS = 1000;

/**
 * Makes every transaction committed to the state database at `path` durable, without copying
 * anything. The state commits with synchronous=NORMAL, so a commit is written to the -wal file and
 * not synced; a checkpoint syncs the WAL before it copies pages into the database and syncs the
 * database after, and only then may the WAL be restarted. Syncing the -wal file therefore covers
 * every commit it still holds, and the database file every commit checkpointed out of it. The syncs
 * run on the thread pool.
 */
export async function syncStateFiles(path: string): Promise<void> {
  await fsyncPathAsync(`${path}-wal`, { missingOk: true });
  await fsyncPathAsync(path);
  // And their folder: SQLite makes the -wal file anew when a node opens its state after a clean
  // close, and syncs a folder only at its own first sync of that file (a checkpoint), so the
  // entry of a -wal file that holds every commit since may not be durable yet.
  await fsyncPathAsync(dirname(path));
}

/**
 * Copies the state of `sqlite` to `tmp` with SQLite's online backup, a few pages per event-loop turn:
 * the node goes on serving and applying meanwhile, and what this connection applies during the copy
 * is carried into it, so the copy is the state as of its last step.
 */
export async function copyState(sqlite: Sqlite, tmp: string): Promise<void> {
  await rm(tmp, { force: true });
  const pages = Math.max(1, Math.floor(SNAPSHOT_BYTES_PER_STEP / (sqlite.pragma('page_size', { simple: true }) as number)));
  await sqlite.backup(tmp, { progress: () => pages });
}

/** Removes an image's database file and what SQLite may have left beside it. */
export async function removeImageFiles(path: string): Promise<void> {
  await Promise.all(['', '-journal', '-wal', '-shm'].map((suffix) => rm(`${path}${suffix}`, { force: true })));
}

/**
 * Makes the copy at `tmp` an image under `path`: one self-contained file, its rows holding their
 * bodies (read through `store`), durable under its final name, so a crash never leaves a partial
 * image there. Returns the applied position its meta table records.
 */
export async function finishImage(tmp: string, path: string, store: Store): Promise<{ index: number; term: number }> {
  const image = new Database(tmp, { fileMustExist: true });
  let at: { index: number; term: number };
  try {
    // The copy carries the write-ahead-log mode in its header; an image is one self-contained file.
    image.pragma('journal_mode = DELETE');
    at = appliedOf(image);
    await fillBodies(image, store);
  } finally {
    image.close();
  }
  await renameDurably(tmp, path);
  return at;
}

/**
 * Puts into an image's rows of format 4 the bodies they leave in the log (bodies.ts), read from
 * this replica's log, so that a follower installing it needs no entry it never had. They go in as
 * bytes, which tells them from rows whose bodies are in the log (rowBody). A thousand rows per
 * event-loop turn. The caller keeps the log from dropping the entries meanwhile (the node host
 * neither compacts nor releases a partition while it makes an image): every row of the image was a
 * row of this state at the copy's last step, so the log had its entry then.
 */
async function fillBodies(image: Sqlite, store: Store): Promise<void> {
  const from = (prepareImageMeta(image).get('bodies_from') as { value: number } | undefined)?.value;
  if (from === undefined) return;
  const { next, fill } = prepareImageBodies(image);
  let after = { channel: -1, seq: -1 };
  for (;;) {
    const rows = next.all(after.channel, after.seq, from, IMAGE_FILL_ROWS) as { channel_id: number; seq: number }[];
    if (rows.length === 0) return;
    image.transaction(() => {
      for (const r of rows) {
        const body = rowBody(store, { seq: r.seq, body: '' });
        fill.run(typeof body === 'string' ? Buffer.from(body, 'utf8') : Buffer.from(body.buffer, body.byteOffset, body.byteLength), r.channel_id, r.seq);
      }
    })();
    const last = rows[rows.length - 1]!;
    after = { channel: last.channel_id, seq: last.seq };
    await new Promise((resolve) => setImmediate(resolve));
  }
}

/**
 * Moves the dead-letter outbox sequence of the closed state database or image at `path` on by `by`,
 * durably (the file synced, its -wal checkpointed away). Returns the sequence after. Only for a
 * cluster restored from one copy (src/cluster/restore.ts), where the three nodes get the same file
 * and so stay byte-identical.
 */
export function advanceOutbox(path: string, by: number): number {
  const state = new Database(path, { fileMustExist: true });
  try {
    state.pragma('synchronous = FULL');
    return (prepareOutboxAdvance(state).get(by) as { value: number }).value;
  } finally {
    state.close();
  }
}

/** The entry an image's state holds everything up to (read from the closed image file). */
export function imageApplied(path: string): { index: number; term: number } {
  const image = new Database(path, { readonly: true, fileMustExist: true });
  try {
    return appliedOf(image);
  } finally {
    image.close();
  }
}

/**
 * Replaces the state database at `dbPath` with a snapshot image (closed state machine; the caller
 * reopens it). The image is moved, not copied (an image can be gigabytes): it is synced, the old
 * database's -wal and -shm are removed and the folder synced (so the old WAL is never applied to
 * the new file), then the image is renamed into place and the folder synced again. A power cut
 * leaves either the image still in place, which the next open installs again, or the new database.
 */
export async function installImage(dbPath: string, snapshotPath: string): Promise<void> {
  await fsyncPathAsync(snapshotPath);
  for (const suffix of ['-wal', '-shm']) await rm(dbPath + suffix, { force: true });
  await fsyncPathAsync(dirname(dbPath));
  await renameDurably(snapshotPath, dbPath, { synced: true });
}

/** The applied position an image's meta table records. */
function appliedOf(image: Sqlite): { index: number; term: number } {
  const get = prepareImageMeta(image);
  return { index: (get.get('applied_index') as { value: number }).value, term: (get.get('applied_term') as { value: number }).value };
}
