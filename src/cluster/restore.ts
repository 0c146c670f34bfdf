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
//   (two leaders of one term). So each restore prints a fingerprint of the copy (every partition's
//   hard state, log positions and applied position); the three must print the same.
// - Only before the restored cluster runs: a node lost afterwards restored again would vote with a
//   log older than the cluster's. It is rebuilt from its peers; the restore refuses while a peer
//   answers under the new secret (best effort: an unreachable peer says nothing).
// - A state no further than its log: a copy whose state applied entries its log lost (power lost
//   before the log's sync) would give those indexes to new entries, which the state then skips.
// - A new cluster secret: the restored folders are recorded under it, so a node of the old cluster
//   (a survivor started by mistake, a node restored from an older backup) can never reach the
//   restored ones, nor they it, and an old folder is refused at their start. The restore refuses the
//   copy's own secret, and a copy that does not say which secret made it.
// - Dead-letter outbox ids the lost peers gave: each partition's outbox sequence moves far on
//   (OUTBOX_PAST_COPY), the same in the three restored folders, so that no new dead letter reuses
//   an id a dead-letter queue still deduplicates.
// - Nothing else about the copy changes: every entry it acknowledged is kept; entries it held
//   without knowing them committed are committed by the restored cluster (at least once, as a
//   client's retry would); leases, delays and long polls run on in the cluster's clock.
//
// The copy is never written to, and the target must be new or empty: a restore never overwrites.
import { accessSync, closeSync, constants, copyFileSync, existsSync, fsyncSync, openSync, readdirSync, realpathSync, rmSync, statSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { basename, dirname, isAbsolute, join, relative, resolve, sep } from 'node:path';
import type { NodeId } from '../raft/index.js';
import { snapshotPath, statePath } from '../partition/snapshots.js';
import { BrokerStateMachine } from '../store/broker/index.js';
import { fsyncPath, mkdirDurably } from '../store/durable.js';
import { WAL_FOLDER, logHolder, openNodeLog } from '../store/wal/index.js';
import { folderIdentity, madeWithSecret, markCaughtUp, type NodeConfig } from './config.js';
import { POSITIONS_PATH, tokenKeyOf } from './internal-routes.js';
import { tlsMaterial } from './node.js';
import { HttpTransport } from './transport.js';

/**
 * How far a restore moves every partition's dead-letter outbox sequence on (meta `outbox_seq`). A
 * dead letter's queue deduplicates it for a day by its outbox row, `<partition>/<id>` (messages.ts),
 * and one node's replicas lag apart: the copy's replica of a dead-letter queue may hold the ids of
 * letters whose source partition's replica never gave them. Reused, those ids would drop new
 * letters as duplicates. Past any id the lost peers could have given (four billion dead letters
 * beyond the copy), and safe for two million restores.
 */
export const OUTBOX_PAST_COPY = 2 ** 32;

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
  /** The entry the partition's state database holds everything up to ([0, 0] without one). */
  readonly applied: readonly [index: number, term: number];
  /** The partition's dead-letter outbox sequence once moved on (OUTBOX_PAST_COPY). */
  readonly outbox: number;
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
  const target = realTarget(resolve(cfg.dataDir));
  if (inside(target, source) || inside(source, target)) throw new RestoreRefusedError(`the copy ${from} and the data folder ${cfg.dataDir} must be apart`);

  const identity = folderIdentity(source);
  if (identity === null) throw new RestoreRefusedError(`${from} is not a node's data folder: it has no cluster.json`);
  const holder = logHolder(join(source, WAL_FOLDER));
  if (holder !== null) throw new RestoreRefusedError(`${from} is in use by ${holder}: stop that node, or restore from a copy of its folder`);
  if (identity.partitions !== cfg.partitions) throw new RestoreRefusedError(`${from} is of a cluster of ${identity.partitions} partitions, not ${cfg.partitions}`);
  const ids = cfg.peers.map((p) => p.id as string);
  if ([...identity.peers].sort().join(',') !== [...ids].sort().join(',')) {
    throw new RestoreRefusedError(`${from} is of a cluster of ${identity.peers.join(', ')}, not ${ids.join(', ')}`);
  }
  if (identity.cluster === undefined) {
    throw new RestoreRefusedError(
      `${from}'s cluster.json does not say which cluster secret made it (a folder of an older build, or the key removed), so the restore cannot tell that the new secret is another one. Start a node on this copy once with the secret it ran with (it records it at start), stop it, and restore again`,
    );
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
  if (present !== null && present.length > 0) {
    throw new RestoreRefusedError(`${cfg.dataDir} is not empty (${present.slice(0, 3).join(', ')}${present.length > 3 ? ', …' : ''}): move it aside first. A restore cut short leaves files without a cluster.json: empty the folder and restore again`);
  }
  const running = await answeringPeers(cfg);
  if (running.length > 0) {
    throw new RestoreRefusedError(
      `${running.join(' and ')} ${running.length === 1 ? 'answers' : 'answer'} as ${running.length === 1 ? 'a node' : 'nodes'} of this cluster: it already runs. A node lost after a restore is rebuilt from its peers ("Rebuild a lost node from its peers" in docs/operations.md), never restored again; and the three are restored before any of them starts`,
    );
  }
  if (present === null) mkdirDurably(target);

  try {
    const copied = copyTree(source, target, '', target);
    const positions = await readPositions(target, cfg.partitions, cfg.peers.map((p) => p.id));
    // Last: a folder without its cluster.json is a restore cut short, which a start refuses
    // (config.ts, heldData) until it is emptied and restored again.
    markCaughtUp(cfg);
    const fingerprint = createHash('sha256').update(JSON.stringify(positions)).digest('hex').slice(0, 16);
    return { fingerprint, ...copied, positions };
  } catch (err) {
    // A node started on the folder meanwhile (a service still enabled) keeps what it made.
    const holder = logHolder(join(target, WAL_FOLDER));
    if (holder !== null) throw new RestoreRefusedError(`${holder} opened ${cfg.dataDir} during the restore: stop it, empty the folder and restore again`, { cause: err });
    for (const name of entries(target) ?? []) rmSync(join(target, name), { recursive: true, force: true });
    fsyncPath(target);
    if (err instanceof RestoreRefusedError) throw err;
    // The target's own trouble (a full disk, a permission) is the machine's, mended there.
    if (isTargetError(err, target)) throw err;
    throw new RestoreRefusedError(`the copy ${from} cannot be restored: ${(err as Error).message}`, { cause: err });
  }
}

/** Whether `a` is `b` or lies inside it (a folder named `..x` inside `b` is inside). */
function inside(a: string, b: string): boolean {
  const r = relative(b, a);
  return r === '' || !(r === '..' || r.startsWith(`..${sep}`) || isAbsolute(r));
}

/** Whether `err` is a failure of writing under `target` (ENOSPC, EACCES, …), not of the copy. */
function isTargetError(err: unknown, target: string): boolean {
  const e = err as NodeJS.ErrnoException & { dest?: string };
  if (e.code === undefined || e.code === 'ENOENT') return false;
  if (e.code === 'ENOSPC' || e.code === 'EDQUOT' || e.code === 'EROFS') return true;
  return typeof e.dest === 'string' ? inside(e.dest, target) : typeof e.path === 'string' && inside(e.path, target);
}

/**
 * The peers that answer this cluster's positions route under the new secret: the restored cluster
 * runs already (a node lost after the restore, restored again instead of rebuilt, would vote with a
 * log older than the cluster's). Best effort: a peer that cannot be reached says nothing.
 */
async function answeringPeers(cfg: NodeConfig): Promise<string[]> {
  const tls = tlsMaterial(cfg);
  const transport = new HttpTransport({
    self: cfg.nodeId,
    peers: cfg.peers,
    clusterSecret: cfg.clusterSecret,
    tokenKey: tokenKeyOf(cfg.jwtSecret),
    ...(tls === null ? {} : { tls }),
    logger: { warn: () => undefined },
  });
  try {
    const others = cfg.peers.filter((p) => p.id !== cfg.nodeId);
    const answered = await Promise.all(others.map((p) => transport.call(p.id, POSITIONS_PATH, {}, { timeoutMs: 2_000 }).then((r) => r.status === 200, () => false)));
    return others.filter((_, i) => answered[i]).map((p) => p.id);
  } finally {
    await transport.close();
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

function readable(path: string): boolean {
  try {
    accessSync(path, constants.R_OK);
    return true;
  } catch {
    return false;
  }
}

/** `path` (absolute) with every link resolved: the nearest folder that exists, resolved, and the rest of the path. */
function realTarget(path: string): string {
  if (existsSync(path)) return realpathSync(path);
  const parent = dirname(path);
  return parent === path ? path : join(realTarget(parent), basename(path));
}

/**
 * Copies folder `from`/`rel` into `to`/`rel`, but for what leftOut names: each file written and
 * fsynced, each folder made durably and fsynced once its entries are in. Links in the copy are
 * followed (a log kept on another disk, archived as a link), never into `target` (the real path of
 * `to`): that would copy the copy into itself.
 */
function copyTree(from: string, to: string, rel: string, target: string): { files: number; bytes: number } {
  let files = 0;
  let bytes = 0;
  for (const name of readdirSync(join(from, rel)).sort()) {
    const path = rel === '' ? name : join(rel, name);
    if (leftOut(path)) continue;
    const stat = statSync(join(from, path));
    if (stat.isDirectory()) {
      if (inside(target, realpathSync(join(from, path)))) throw new RestoreRefusedError(`${join(from, path)} leads into the data folder being restored`);
      mkdirDurably(join(to, path));
      const sub = copyTree(from, to, path, target);
      files += sub.files;
      bytes += sub.bytes;
    } else if (stat.isFile()) {
      try {
        copyFileSync(join(from, path), join(to, path), constants.COPYFILE_EXCL | constants.COPYFILE_FICLONE);
      } catch (err) {
        // Which side failed: a file of the copy this user cannot read is the copy's, not the machine's.
        if (!readable(join(from, path))) throw new RestoreRefusedError(`cannot read ${join(from, path)}: ${(err as Error).message}`, { cause: err });
        throw err;
      }
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

/**
 * Opens the copied log (checking every record, as a node's start does) and reads where each partition
 * stands; and moves each partition's dead-letter outbox sequence past any id its lost peers could have
 * given (OUTBOX_PAST_COPY).
 */
async function readPositions(dataDir: string, partitions: number, voters: readonly NodeId[]): Promise<RestoredPosition[]> {
  const store = await openNodeLog(dataDir, partitions, voters);
  try {
    // Its cluster.json says the node took part, yet no partition's log holds anything: the log was left
    // out (kept on a disk not mounted when the copy was made). A node's own start calls that a lost
    // log; restored, the three would have taken each other for a new cluster, every write gone
    // (review of stop 62).
    const logs = Array.from({ length: partitions }, (_, p) => store.partition(p, voters));
    if (logs.every((log) => log.hardState().term === 0 && log.lastIndex() === 0 && log.snapshot().meta.index === 0)) {
      throw new RestoreRefusedError(`the copy's log is empty in every partition (wal/ missing or empty), though its node had taken part in its cluster: the copy lacks its log. Take the whole folder, the log's disk included`);
    }
    const positions: RestoredPosition[] = [];
    for (let p = 0; p < partitions; p++) {
      const log = logs[p]!;
      log.verify();
      const hard = log.hardState();
      const snapshot = log.snapshot().meta;
      const last = log.lastIndex();
      const state = statePath(dataDir, p);
      const hasState = existsSync(state);
      let applied = hasState ? BrokerStateMachine.imageApplied(state) : { index: 0, term: 0 };
      // As a node's start does (NodeHost.open): an image of the log's snapshot still in the folder (an
      // install a crash cut short) replaces the state; a state behind the compacted log needs it.
      const ref = log.snapshotRef();
      const image = ref === null ? null : snapshotPath(dataDir, ref);
      const hasImage = image !== null && existsSync(image);
      if (hasImage) applied = BrokerStateMachine.imageApplied(image);
      else if (image !== null && applied.index < log.firstIndex() - 1) {
        throw new RestoreRefusedError(
          `partition ${p}'s state holds entries up to ${applied.index}, its log starts after ${log.firstIndex() - 1}, and the image ${ref} is not in the copy: the copy lacks files (state/p${p}.db?). Take the whole folder`,
        );
      }
      // Every node makes each partition's state at its first start. Rebuilt from the log, it would give
      // dead-letter outbox ids from 0 again, where OUTBOX_PAST_COPY moves them on (review of stop 62).
      if (!hasState && !hasImage) {
        throw new RestoreRefusedError(`partition ${p}'s state (state/p${p}.db) is not in the copy: the copy lacks files. Take the whole folder`);
      }
      // A state ahead of its log: the node applied entries its log had not synced when it went down
      // (host.ts applies while syncing). A restart gets them again from the leader; after a restore
      // nobody has them, new entries would take their indexes, and the state, which skips indexes it
      // applied, would never apply those, while rows of the lost ones read their bodies from them.
      if (applied.index > last || (applied.index > snapshot.index && log.term(applied.index) !== applied.term)) {
        throw new RestoreRefusedError(
          `partition ${p}'s state holds entry ${applied.index} (term ${applied.term}), its log ends at ${last} (term ${log.term(last)}): this node went down before its log was synced, and the entries between are on no node of the copy. Restore from another node's copy, or from a backup taken while the node was stopped`,
        );
      }
      // The state it replaces, and the state a node starts from (the image when there is one).
      let outbox = hasState ? BrokerStateMachine.advanceOutbox(state, OUTBOX_PAST_COPY) : 0;
      if (hasImage) outbox = BrokerStateMachine.advanceOutbox(image, OUTBOX_PAST_COPY);
      positions.push({
        partition: p,
        term: hard.term,
        vote: hard.vote,
        commit: hard.commit,
        snapshot: [snapshot.index, snapshot.term],
        last: [last, log.term(last)],
        applied: [applied.index, applied.term],
        outbox,
      });
    }
    return positions;
  } finally {
    store.close();
  }
}
