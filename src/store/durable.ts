// Durable file writes, for files a node reads back after a power cut (its cluster identity, snapshot
// images, fetched or made). A write that returned is only in the page cache until an fsync: a power
// cut can leave the file empty or torn. Written under a temporary name, fsynced, renamed over the
// final name, and the folder fsynced (the rename is a change of the folder), the file holds either
// its old content or the new one, whole. The Raft log's new segments (src/store/wal) are moved into
// place the same way.
import { closeSync, existsSync, fsyncSync, mkdirSync, openSync, renameSync, writeSync } from 'node:fs';
import { open, rename } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';

/** fsync of a file or a folder (opened read-only: enough for fsync on Linux). */
export function fsyncPath(path: string): void {
  const fd = openSync(path, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/**
 * fsync of a file or a folder on libuv's thread pool: a large file's flush does not stall the node.
 * With `missingOk`, a file that does not exist is nothing to sync.
 */
export async function fsyncPathAsync(path: string, opts: { missingOk?: boolean } = {}): Promise<void> {
  let handle;
  try {
    handle = await open(path, 'r');
  } catch (err) {
    if (opts.missingOk === true && (err as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw err;
  }
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/**
 * Moves the file `from` to `to` so that after a crash `to` holds either what it held or all of
 * `from`: `from` is fsynced (unless the caller has just done so: `synced`), renamed, and the
 * folders fsynced. On the thread pool: an image can be gigabytes.
 */
export async function renameDurably(from: string, to: string, opts: { synced?: boolean } = {}): Promise<void> {
  if (opts.synced !== true) await fsyncPathAsync(from);
  await rename(from, to);
  await fsyncPathAsync(dirname(to));
  if (dirname(from) !== dirname(to)) await fsyncPathAsync(dirname(from));
}

/**
 * Makes the folder `path` and any missing parent of it so that a power cut leaves them there: a new
 * folder is an entry of its parent, durable only once the parent is fsynced, and what a node then
 * syncs inside it (a log segment, a state database) does not sync that entry. Each folder made is
 * recorded by an fsync of its parent, the deepest first; a folder already there costs nothing.
 */
export function mkdirDurably(path: string): void {
  // Resolved first, so that the walk up from the folder meets each folder made.
  const target = resolve(path);
  const made = mkdirs(target);
  if (made.length === 0) return;
  for (let dir = target; dirname(dir) !== dir; dir = dirname(dir)) {
    fsyncPath(dirname(dir));
    if (dir === made[0]) break;
  }
}

/**
 * Makes folder `target` (absolute) and its missing parents, one mkdir each, the outermost first;
 * returns the folders made in that order. Not mkdirSync's recursive mode: in Node 20 it loops for
 * ever, at full CPU, where mkdir answers ENOENT under a folder that exists (anywhere in /proc: a
 * node given `--data-dir /proc/x` hung without a word); here that ENOENT is thrown.
 */
function mkdirs(target: string): string[] {
  const missing: string[] = [];
  for (let dir = target; !existsSync(dir); dir = dirname(dir)) {
    missing.unshift(dir);
    if (dirname(dir) === dir) break;
  }
  for (const dir of missing) {
    try {
      mkdirSync(dir);
    } catch (err) {
      // Made meanwhile by another process: what matters is that it is there.
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
  }
  return missing;
}

/** renameDurably on the main thread, for a file already synced: a rename and a folder's fsync, both quick. */
export function renameSyncedDurably(from: string, to: string): void {
  renameSync(from, to);
  fsyncPath(dirname(to));
  if (dirname(from) !== dirname(to)) fsyncPath(dirname(from));
}

/** Writes `data` to `path` so that after a crash the file holds either its old content or `data`. */
export function writeFileDurably(path: string, data: string | Uint8Array): void {
  const tmp = `${path}.tmp`;
  const fd = openSync(tmp, 'w', 0o600);
  try {
    const buf = typeof data === 'string' ? Buffer.from(data, 'utf8') : data;
    let done = 0;
    while (done < buf.length) done += writeSync(fd, buf, done, buf.length - done);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSyncedDurably(tmp, path);
}
