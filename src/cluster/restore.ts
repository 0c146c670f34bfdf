// Restoring the whole cluster from one node's data folder (docs/operations.md, "Restore the cluster
// from one copy"), for when no two nodes are left: two disks lost, or all three machines. Raft then
// has no majority to elect a leader, and no number of restarts finds one. The one copy left (a
// backup, or the last node's own folder, copied while it is stopped) becomes the folder of each of
// the three nodes: the same log and states, and each node's own cluster.json.
//
// Why this is safe where restoring one node alone from a backup is not (that takes --rejoin):
// - The same copy on all three: their logs are identical, so whichever is elected holds every entry
//   the others hold, and no node can remember a vote of a term that another copy of itself forgot.
//   Copies of two nodes, or of two times, could each hold a vote of the same term for another node
//   (two leaders of one term). So each restore prints a fingerprint of the copy's log (every
//   partition's hard state and positions); the three must print the same.
// - A new cluster secret: the restored folders are recorded under it, so a node of the old cluster
//   (a survivor started by mistake, a node restored from an older backup) can never reach the
//   restored ones, nor they it, and an old folder is refused at their start. The restore refuses the
//   copy's own secret.
// - Nothing else about the copy changes: every entry it acknowledged is kept; entries it held
//   without knowing them committed are committed by the restored cluster (at least once, as a
//   client's retry would); leases, delays and long polls run on in the cluster's clock.
//
// The copy is never written to, and the target must be new or empty: a restore never overwrites.
import { closeSync, constants, copyFileSync, fsyncSync, lstatSync, openSync, readdirSync, realpathSync, rmSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { join, relative, resolve, sep } from 'node:path';
import type { NodeId } from '../raft/index.js';
import { fsyncPath, mkdirDurably } from '../store/durable.js';
import { WAL_FOLDER, logHolder, openNodeLog } from '../store/wal/index.js';
import { folderIdentity, madeWithSecret, markCaughtUp, type NodeConfig } from './config.js';

export class RestoreRefusedError extends Error {
  override name = 'RestoreRefusedError';
}

/** Where a partition's log stood in the copy: what the fingerprint is made of. */
export interface RestoredPosition {
  readonly partition: number;
  readonly term: number;
  readonly vote: string | null;
  readonly commit: number;
  readonly snapshot: readonly [index: number, term: number];
  readonly last: readonly [index: number, term: number];
}

export interface Restored {
  /** 16 hex digits over every partition's position in the copy: the same for the same copy. */
  readonly fingerprint: string;
  readonly files: number;
  readonly bytes: number;
  readonly positions: readonly RestoredPosition[];
}

/**
 * Files of a data folder that belong to the node that ran on it, or to work it left unfinished, not
 * to its data: its identity (written anew), the log's LOCK, a log import cut short (redone from the
 * old log), an imported old log (kept for the operator), SQLite's shared-memory index (rebuilt),
 * images made for followers and downloads cut short (a node deletes them at start), and files
 * written under a temporary name and never renamed.
 */
function leftOut(path: string): boolean {
  const [top, ...rest] = path.split(sep);
  if (rest.length === 0) return top === 'cluster.json' || top === `${WAL_FOLDER}.importing` || top === 'raft-log.db.imported' || top!.endsWith('.tmp');
  const name = rest[rest.length - 1]!;
  if (top === WAL_FOLDER && rest.length === 1 && (name === 'LOCK' || name === 'LOCK.boot')) return true;
  if (top === 'snapshots' && /^p\d+-serve-/.test(name)) return true;
  return name.endsWith('-shm') || name.endsWith('.part') || name.endsWith('.tmp');
}

/**
 * Makes `cfg.dataDir` the folder of node `cfg.nodeId` of a cluster restored from the data folder
 * `from` (any one node's, of the same peers and partition count), recorded under `cfg.clusterSecret`,
 * which must not be the one `from` was made with. `from` is only read. Refused (RestoreRefusedError)
 * when `from` is not a node's folder, had not caught up, is in use, or belongs to another layout;
 * when the target holds anything; or when the copy's log fails its checks (the target is then
 * emptied again).
 */
export async function restoreCluster(cfg: NodeConfig, from: string): Promise<Restored> {
  let source: string;
  try {
    source = realpathSync(from);
  } catch (err) {
    throw new RestoreRefusedError(`cannot read the copy ${from}: ${(err as Error).message}`);
  }
  const target = resolve(cfg.dataDir);
  const inside = (a: string, b: string): boolean => a === b || !relative(b, a).startsWith('..');
  if (inside(target, source) || inside(source, realTarget(target))) throw new RestoreRefusedError(`the copy ${from} and the data folder ${cfg.dataDir} must be apart`);

  const identity = folderIdentity(source);
  if (identity === null) throw new RestoreRefusedError(`${from} is not a node's data folder: it has no cluster.json`);
  const holder = logHolder(join(source, WAL_FOLDER));
  if (holder !== null) throw new RestoreRefusedError(`${from} is in use by process ${holder}: stop that node, or restore from a copy of its folder`);
  if (identity.partitions !== cfg.partitions) throw new RestoreRefusedError(`${from} is of a cluster of ${identity.partitions} partitions, not ${cfg.partitions}`);
  const ids = cfg.peers.map((p) => p.id as string);
  if ([...identity.peers].sort().join(',') !== [...ids].sort().join(',')) {
    throw new RestoreRefusedError(`${from} is of a cluster of ${identity.peers.join(', ')}, not ${ids.join(', ')}`);
  }
  if (identity.catchingUp === true) {
    throw new RestoreRefusedError(`${from} (node ${identity.nodeId}) had not caught up from its leaders: its log may lack acknowledged writes. Restore from another node's copy`);
  }
  if (madeWithSecret(identity, cfg.clusterSecret)) {
    throw new RestoreRefusedError(
      `${from} was made with this cluster secret: give the restored cluster a new MOM_CLUSTER_SECRET (the same on its three nodes), so that no node of the old cluster can ever reach it`,
    );
  }
  const present = entries(target);
  if (present === null) mkdirDurably(target);
  else if (present.length > 0) {
    throw new RestoreRefusedError(`${cfg.dataDir} is not empty (${present.slice(0, 3).join(', ')}${present.length > 3 ? ', …' : ''}): move it aside first. A restore cut short leaves files without a cluster.json: empty the folder and restore again`);
  }

  try {
    const copied = copyTree(source, target, '');
    const positions = await readPositions(target, cfg.partitions, cfg.peers.map((p) => p.id));
    // Last: a folder without its cluster.json is a restore cut short, which a start takes for a new
    // folder that must catch up from leaders (never votes with a partial log).
    markCaughtUp(cfg);
    const fingerprint = createHash('sha256').update(JSON.stringify(positions)).digest('hex').slice(0, 16);
    return { fingerprint, ...copied, positions };
  } catch (err) {
    for (const name of entries(target) ?? []) rmSync(join(target, name), { recursive: true, force: true });
    fsyncPath(target);
    if (err instanceof RestoreRefusedError) throw err;
    throw new RestoreRefusedError(`the copy ${from} cannot be restored: ${(err as Error).message}`, { cause: err });
  }
}

/** The names in folder `dir`, or null when there is no such folder. */
function entries(dir: string): string[] | null {
  try {
    return readdirSync(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  }
}

/** `path` with its links resolved, as far as it exists. */
function realTarget(path: string): string {
  try {
    return realpathSync(path);
  } catch {
    return path;
  }
}

/**
 * Copies folder `from`/`rel` into `to`/`rel`, but for what leftOut names: each file written and
 * fsynced, each folder made durably and fsynced once its entries are in.
 */
function copyTree(from: string, to: string, rel: string): { files: number; bytes: number } {
  let files = 0;
  let bytes = 0;
  for (const name of readdirSync(join(from, rel)).sort()) {
    const path = rel === '' ? name : join(rel, name);
    if (leftOut(path)) continue;
    const stat = lstatSync(join(from, path));
    if (stat.isDirectory()) {
      mkdirDurably(join(to, path));
      const sub = copyTree(from, to, path);
      files += sub.files;
      bytes += sub.bytes;
    } else if (stat.isFile()) {
      copyFileSync(join(from, path), join(to, path), constants.COPYFILE_EXCL | constants.COPYFILE_FICLONE);
      const fd = openSync(join(to, path), 'r');
      try {
        fsyncSync(fd);
      } finally {
        closeSync(fd);
      }
      files++;
      bytes += stat.size;
    } else {
      throw new RestoreRefusedError(`${join(from, path)} is neither a file nor a folder`);
    }
  }
  fsyncPath(join(to, rel));
  return { files, bytes };
}

/** Opens the copied log (checking every record, as a node's start does) and reads where each partition stands. */
async function readPositions(dataDir: string, partitions: number, voters: readonly NodeId[]): Promise<RestoredPosition[]> {
  const store = await openNodeLog(dataDir, partitions, voters);
  try {
    const positions: RestoredPosition[] = [];
    for (let p = 0; p < partitions; p++) {
      const log = store.partition(p, voters);
      log.verify();
      const hard = log.hardState();
      const snapshot = log.snapshot().meta;
      const last = log.lastIndex();
      positions.push({ partition: p, term: hard.term, vote: hard.vote, commit: hard.commit, snapshot: [snapshot.index, snapshot.term], last: [last, log.term(last)] });
    }
    return positions;
  } finally {
    store.close();
  }
}
