// A node's snapshots, for every partition it hosts (the loop in host.ts calls in):
//
//   local compaction   the state database made durable up to its applied index, that point recorded
//                      as the partition's snapshot, the log behind it dropped (maybeCompact)
//   images served      a copy of a partition's state made when a follower asks (imageFor), kept
//                      while in use, and the log after it kept meanwhile
//   images fetched     a leader's image copied here before its snapshot message reaches the core
//                      (receive), then installed in place of the state (install)
//   bodies released    entries kept below the log for the bodies rows point at (format 4), let go
//                      once no row does, so that the log's oldest segment can go (releaseBodies)
//
// A snapshot is a point the state was durable at, never a copy; an image is made only on demand.
// docs/storage.md has the crash order of each step.
import { existsSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { EntryUnavailableError, type Message, type NodeId, type Ready } from '../raft/index.js';
import { BodyMissingError, BrokerStateMachine } from '../store/broker/index.js';
import { renameSyncedDurably } from '../store/durable.js';
import type { PartitionLog, WalStore } from '../store/wal/index.js';
import type { PartitionReplica } from './replica.js';

/** Kept entries asked about per turn when looking for ones to release (Snapshots.deadAmong). */
export const RELEASE_CHUNK = 1000;

/** An image nobody asked for this long is deleted, and the log no longer kept for it. */
const SERVED_IDLE_MS = 5 * 60_000;
/** A retired image stays this long for a fetch that got its path just before. */
const SERVED_GRACE_MS = 60_000;
/**
 * An image older than a partition's newest, not read for this long, has no download left: only
 * downloads refresh it (reading()), and a fetch gives up after a minute without bytes.
 */
const OLDER_IDLE_MS = 2 * 60_000;

/** A snapshot message of the Raft core. */
type SnapMessage = Extract<Message, { type: 'snap' }>;

/** An image of a partition's state made for followers. */
interface ServedImage {
  readonly path: string;
  /** The state's applied index when the copy began: the image holds at least that. */
  readonly from: number;
  /** When a fetch last asked for it (ms). */
  usedAt: number;
  readonly ready: Promise<string>;
}

/** What the snapshots need of the node's host. */
export interface SnapshotsHost {
  readonly replicas: readonly PartitionReplica[];
  readonly logStore: WalStore;
  /** The newest log format this node reads. */
  readable(): number;
  /** The monotonic clock (ms). */
  elapsed(): number;
  isClosed(): boolean;
  /** Runs a loop turn soon. */
  schedule(): void;
}

export interface SnapshotsOptions {
  readonly dataDir: string;
  readonly voters: readonly NodeId[];
  /** Applied entries between two local snapshots (default 10,000). */
  readonly snapshotEvery?: number;
  /** Entries kept in the log behind a snapshot, so a briefly slow follower needs no snapshot (default 1,000). */
  readonly keepBehindSnapshot?: number;
  /** Copies the image `ref` of `partition` from `peer` to `dest`, durably (the transport). */
  fetch(peer: NodeId, partition: number, ref: string, dest: string): Promise<void>;
  readonly logger?: { warn(obj: object, msg: string): void };
}

export class Snapshots {
  /**
   * Images being fetched from leaders, by `partition/ref`, each with the message of the newest term
   * received for it meanwhile: the one stepped once the image is here.
   */
  private readonly fetching = new Map<string, SnapMessage>();
  /** Per partition, the leader and term of the latest image fetch begun and not yet ended. */
  private readonly downloads = new Map<number, { readonly from: NodeId; readonly term: number }>();
  /** Partitions whose state is being made durable for a local snapshot. */
  private readonly compacting = new Set<number>();
  /** A pass of releaseBodies() is running. */
  private releasing = false;
  /**
   * Images being made, per partition (imageFor). Meanwhile the partition is neither compacted nor
   * released of kept entries: the image takes the bodies of its rows from the log (format 4), and its
   * rows are those of the state when the copy ended, which may be gone from the state since.
   */
  private readonly imaging = new Map<number, number>();
  /**
   * The images of each partition's state made for followers (imageFor) and still in use, oldest
   * first: a newer one is made for a newer ref while an older one may still be downloading.
   */
  private readonly served = new Map<number, ServedImage[]>();
  private servedSeq = 0;

  constructor(
    private readonly host: SnapshotsHost,
    private readonly opts: SnapshotsOptions,
  ) {}

  statePath(p: number): string {
    return statePath(this.opts.dataDir, p);
  }

  snapshotPath(ref: string): string {
    return snapshotPath(this.opts.dataDir, ref);
  }

  /**
   * An image for a follower that asked for snapshot `ref` of `partition`; null if this node never
   * recorded that far. The image is made on demand, from the state as it is now (SQLite's online
   * backup, a few pages per event-loop turn), so it holds every entry up to `ref` and maybe more, all
   * committed. The follower restarts its log at the image's own index (receive), and while the image
   * is in use this node keeps the log after it (compact()), so the follower can go on from there. The
   * newest image of a partition serves every fetch whose ref it covers; a fetch for a newer ref gets
   * a newer one, and the older stays in use while its downloads go on.
   */
  async imageFor(partition: number, ref: string): Promise<string | null> {
    const r = this.host.replicas[partition];
    if (!isImageRef(partition, ref) || r === undefined) return null;
    const kept = this.snapshotPath(ref);
    if (existsSync(kept)) return kept;
    const wanted = Number(ref.split('-')[1]);
    // A state closed for an install, or in a format this build cannot read (halted), makes no image.
    if (wanted > r.log.snapshot().meta.index || !r.state.isOpen()) return null;
    let s = this.served.get(partition)?.at(-1);
    if (s === undefined || s.from < wanted) {
      // Each image is a copy of the state: the older ones go once no download reads them.
      this.retireServed(partition, (i) => this.host.elapsed() - i.usedAt > OLDER_IDLE_MS);
      const path = join(this.opts.dataDir, 'snapshots', `p${partition}-serve-${++this.servedSeq}.db`);
      const from = r.state.applied().index;
      this.imaging.set(partition, (this.imaging.get(partition) ?? 0) + 1);
      const made: ServedImage = {
        path,
        from,
        usedAt: this.host.elapsed(),
        ready: r.state
          .snapshotTo(path)
          .finally(() => this.imaging.set(partition, this.imaging.get(partition)! - 1))
          .then(
            () => path,
            (err: unknown) => {
              this.dropServed(partition, made);
              rmSync(path, { force: true });
              throw err;
            },
          ),
      };
      this.served.set(partition, [...(this.served.get(partition) ?? []), made]);
      s = made;
    }
    s.usedAt = this.host.elapsed();
    return s.ready;
  }

  /**
   * A download of `path`, the image of `partition` served, moved on (the route calls this as each
   * chunk leaves): the image stays in use, and the log after it kept (compact()), as long as its
   * download goes on. Refreshed only when a fetch began, an image downloading for longer than
   * SERVED_IDLE_MS was let go meanwhile, and the follower, once it had installed it, found the log
   * compacted past it and needed another image, and another if that took as long. A download that
   * stalls ends at the fetcher's idle deadline, a minute.
   */
  reading(partition: number, path: string): void {
    const s = this.served.get(partition)?.find((i) => i.path === path);
    if (s !== undefined) s.usedAt = this.host.elapsed();
  }

  /**
   * Stops using the images of `partition` that `which` picks (all of them by default). A fetch that
   * got the path of one a moment ago has yet to open it, so the file goes a minute later (a download
   * in progress reads on from its open file).
   */
  private retireServed(partition: number, which: (s: ServedImage) => boolean = () => true): void {
    for (const s of this.served.get(partition) ?? []) {
      if (!which(s)) continue;
      this.dropServed(partition, s);
      void s.ready.then(
        (path) => setTimeout(() => rmSync(path, { force: true }), SERVED_GRACE_MS).unref(),
        () => undefined,
      );
    }
  }

  private dropServed(partition: number, s: ServedImage): void {
    const left = (this.served.get(partition) ?? []).filter((i) => i !== s);
    if (left.length > 0) this.served.set(partition, left);
    else this.served.delete(partition);
  }

  /** A snapshot message from `from`: its image is fetched before the message reaches the core. */
  receive(from: NodeId, r: PartitionReplica, m: SnapMessage): void {
    const ref = new TextDecoder().decode(m.snapshot.data);
    if (!isImageRef(r.partition, ref)) return;
    const path = this.snapshotPath(ref);
    const key = `${r.partition}/${ref}`;
    // Being fetched: the fetch steps it, or this one if it is of a newer term (the same snapshot
    // from a new leader: stepped, the old leader's message would be dropped by the core, and the new
    // leader's next ask would fetch the image again). Its file may already be in place, and is then
    // renamed to the image's own index: a repeat stepped meanwhile had the core hand out a snapshot
    // whose file was gone when the turn installed it (chaos seed 3315).
    const pending = this.fetching.get(key);
    if (pending !== undefined) {
      if (m.term > pending.term) this.fetching.set(key, m);
      return;
    }
    // Already covered (a repeated message, or the log caught up meanwhile): the core answers with
    // its commit index, and nothing is fetched.
    if (existsSync(path) || m.snapshot.meta.index <= r.raw.position().committed) {
      r.raw.step(m);
      return;
    }
    // An image of this partition being fetched from the same leader in the same term: it asked
    // again (a follower silent for two election timeouts), with its newest snapshot, while a large
    // image downloads. That fetch steps its own message, and the leader keeps its log after that
    // image while it is in use (compact()); fetching this one too had the leader copy its state
    // again, and the two downloads share the link, each slower, inviting a third. Should that fetch
    // fail, the leader's next ask fetches anew. A message from another leader or term fetches at
    // once: the core would drop the older message that the download in progress steps.
    const current = this.downloads.get(r.partition);
    if (current !== undefined && current.from === from && current.term === m.term) return;
    const download = { from, term: m.term };
    this.downloads.set(r.partition, download);
    this.fetching.set(key, m);
    this.opts
      .fetch(from, r.partition, ref, path)
      .then(() => {
        if (this.host.isClosed()) return;
        // Covered only where the core has committed it too: a state ahead of its log (a power cut
        // took the log write of entries applied meanwhile) would have the core restore the message's
        // snapshot with no image to install, and its log would keep nothing for the state's rows.
        const covered = r.state.isOpen() ? Math.min(r.state.applied().index, r.raw.position().committed) : 0;
        r.raw.step(this.asImaged(r.partition, this.fetching.get(key) ?? m, path, covered));
        this.host.schedule();
      })
      .catch((err: unknown) => this.opts.logger?.warn({ err, partition: r.partition, ref }, 'snapshot fetch failed'))
      .finally(() => {
        this.fetching.delete(key);
        if (this.downloads.get(r.partition) === download) this.downloads.delete(r.partition);
      });
  }

  /**
   * The leader makes an image when asked, from its state as it is then: it may hold entries past the
   * snapshot its message named (all committed: the leader had applied them). The snapshot is taken
   * at the image's own index and term, under a ref that names them, so the log restarts where the
   * state is, and the leader, which keeps its log after the image while it is in use, goes on from
   * there. An image behind the message's snapshot is refused (and the fetch tried again later). An
   * image the state has applied past meanwhile (an earlier fetch's install, or the log) is deleted,
   * and the message goes on as it came: the core answers it with its commit index. (Not one the core
   * has only committed past: an earlier fetch's image at the same path may await its install.)
   */
  private asImaged(partition: number, m: SnapMessage, path: string, applied: number): SnapMessage {
    let at: { index: number; term: number };
    try {
      at = BrokerStateMachine.imageApplied(path);
      if (at.index < m.snapshot.meta.index) throw new Error(`the image holds entries up to ${at.index}, behind the snapshot at ${m.snapshot.meta.index}`);
    } catch (err) {
      // Not an image to install: gone, so the next snapshot message fetches again.
      rmSync(path, { force: true });
      throw err;
    }
    if (at.index <= applied) {
      rmSync(path, { force: true });
      return m;
    }
    if (at.index === m.snapshot.meta.index) return m;
    const ref = imageRef(partition, at.index, at.term);
    renameSyncedDurably(path, this.snapshotPath(ref));
    return { ...m, snapshot: { meta: { ...m.snapshot.meta, index: at.index, term: at.term }, data: new TextEncoder().encode(ref) } };
  }

  /** Replaces a partition's state with the snapshot image of a Ready, received from its leader. */
  async install(r: PartitionReplica, rd: Ready): Promise<void> {
    const ref = new TextDecoder().decode(rd.snapshot!.data);
    await r.state.close();
    await BrokerStateMachine.installSnapshot(this.statePath(r.partition), this.snapshotPath(ref));
    r.state = readsBodiesFrom(r.log, await BrokerStateMachine.open(this.statePath(r.partition), r.partition, { readable: this.host.readable() }));
    this.retireServed(r.partition);
    // Images fetched before this one and never installed (the core refused them as covered, or of an
    // old term) stayed until a local snapshot past them.
    this.removeOldImages(r.partition, rd.snapshot!.meta.index);
  }

  /**
   * Local compaction, when due: make the state database durable up to its applied index (an
   * fdatasync of its files on the thread pool; nothing is copied, however large the state), then
   * record that point as the partition's snapshot and drop the log behind it, less the entries kept
   * for slow followers. One at a time per partition.
   */
  maybeCompact(r: PartitionReplica): void {
    const p = r.partition;
    // An image unused for SERVED_IDLE_MS goes, also where no local snapshot comes to retire it: on a
    // partition gone quiet it stayed, a whole copy of the state, until its next 10,000 entries or the
    // node's restart (review of 2026-12-07).
    if (this.isImaging(p) || this.host.isClosed()) return;
    if (this.served.has(p)) this.retireServed(p, (s) => this.host.elapsed() - s.usedAt > SERVED_IDLE_MS);
    if (this.compacting.has(p)) return;
    const every = this.opts.snapshotEvery ?? 10_000;
    // Measured from the last snapshot, not the log's length: the kept tail must not retrigger it.
    // The core's applied index (no query) decides.
    if (r.raw.position().applied - r.log.snapshot().meta.index < every) return;
    this.compacting.add(p);
    void this.compact(r)
      .catch((err: unknown) => {
        // The sync failed (an I/O error): the log keeps everything, and the next due turn tries again.
        // If the state's commit failed, that turn stops the host (NodeHost.commitDueStates): run it now.
        if (!this.host.isClosed()) this.opts.logger?.warn({ err, partition: p }, 'local snapshot failed; the log is kept');
        this.host.schedule();
      })
      .finally(() => this.compacting.delete(p));
  }

  private async compact(r: PartitionReplica): Promise<void> {
    const p = r.partition;
    const state = r.state;
    // Read before the sync: the sync covers every commit made before it started. The core's applied
    // index, which its log holds: an image installed from the leader may be ahead of the log (see
    // imageFor), and the state holds every entry up to either.
    const index = Math.min(r.raw.position().applied, state.applied().index);
    const at = { index, term: r.log.term(index) };
    // The entries about to be compacted that rows point at for their bodies (format 4): the log keeps
    // them. Read before the state is made durable, so that a row gone from the state read here is
    // gone from the state on disk too: rows point only at the entry that made them, so none comes
    // back, and a replay after a crash finds every body its rows need (docs/design/bodies-in-log.md).
    const referenced = state.referencedEntries(r.log.firstIndex(), index);
    await state.durable();
    // Meanwhile a snapshot from the leader may have replaced the state (a newer one recorded, or the
    // state reopened), or the node stopped: then this point is of no use.
    if (this.host.isClosed() || r.state !== state || at.index <= r.log.snapshot().meta.index || this.isImaging(p)) return;
    let upTo = at.index - (this.opts.keepBehindSnapshot ?? 1000);
    // A follower installing the image made for it goes on from the image's index: while an image is
    // in use (asked for, or read by a download, within SERVED_IDLE_MS), keep the log after it, and
    // after what the slowest replica holds once that is further. A leader that kept it all until the
    // image went unused kept every entry of the next five minutes: 57 segments of 32 KiB after 3,000
    // entries in a test where 3 do. Retired once no replica needs the hold; not at the install's
    // acknowledgement, when the follower still has the entries written during its download to catch
    // up on.
    if (this.served.has(p)) {
      const slowest = leastHeld(r);
      const wanted = upTo;
      this.retireServed(p, (s) => this.host.elapsed() - s.usedAt > SERVED_IDLE_MS || (slowest !== null && slowest >= wanted));
      for (const s of this.served.get(p) ?? []) upTo = Math.min(upTo, Math.max(s.from, slowest ?? 0));
    }
    const compactTo = Math.max(r.log.firstIndex() - 1, upTo);
    const bodies = referenced.filter((i) => i >= r.log.firstIndex() && i <= compactTo);
    this.host.logStore.recordSnapshot(p, { index: at.index, term: at.term, voters: this.opts.voters }, imageRef(p, at.index, at.term), compactTo, bodies);
    this.removeOldImages(p, at.index);
    await this.releaseBodies();
  }

  private isImaging(p: number): boolean {
    return (this.imaging.get(p) ?? 0) > 0;
  }

  /**
   * Lets go of the entries kept for their bodies that hold the log's oldest segment back and that no
   * row points at any more, so that the segment can be deleted: for each partition holding some, its
   * state names those still pointed at, is made durable (the same order as compact()'s), and the log
   * releases the others. Segment after segment, while that frees one. One pass at a time per node.
   */
  private async releaseBodies(): Promise<void> {
    if (this.releasing) return;
    this.releasing = true;
    try {
      for (let freed = true; freed && !this.host.isClosed(); ) {
        freed = false;
        for (const [p, held] of this.host.logStore.keptInOldestSegment()) {
          const r = this.host.replicas[p]!;
          const state = r.state;
          // Closed between the old state and an installed image: the next pass asks the new one.
          if (!state.isOpen() || this.isImaging(p)) continue;
          const dead = await this.deadAmong(r, state, held);
          if (dead === null || dead.length === 0) continue;
          await state.durable();
          // Meanwhile an image from the leader may have replaced the state (and what the log kept),
          // or an image began here, which may hold rows gone from the state since.
          if (this.host.isClosed() || r.state !== state || this.isImaging(p)) continue;
          const still = this.host.logStore.stillKept(p, dead);
          if (still.length === 0) continue;
          this.host.logStore.releaseBodies(p, still);
          freed = true;
        }
      }
    } finally {
      this.releasing = false;
    }
  }

  /**
   * Those of `held` (ascending) that no row of `state` points at, asked RELEASE_CHUNK entries at a
   * time, oldest first, with a turn of the event loop between two asks; null when the state was
   * replaced meanwhile. It stops after the first chunk with an entry still pointed at: the segment
   * cannot be freed then, and asking about every entry of a segment of unacknowledged messages (50,000
   * of them) after each compaction held the event loop 100-250 ms (send-1 on a queue with a backlog).
   */
  private async deadAmong(r: PartitionReplica, state: BrokerStateMachine, held: readonly number[]): Promise<number[] | null> {
    const dead: number[] = [];
    for (let k = 0; k < held.length; k += RELEASE_CHUNK) {
      if (k > 0) await new Promise((res) => setImmediate(res));
      if (this.host.isClosed() || r.state !== state || !state.isOpen() || this.isImaging(r.partition)) return null;
      const chunk = held.slice(k, k + RELEASE_CHUNK);
      const live = new Set(state.referencedAmong(chunk));
      for (const i of chunk) if (!live.has(i)) dead.push(i);
      if (live.size > 0) break;
    }
    return dead;
  }

  /**
   * Deletes images of `partition` older than the one just recorded. Never a download in progress, nor
   * an image fetched from the leader and not yet installed: the log may be about to record it.
   */
  private removeOldImages(partition: number, recorded: number): void {
    const dir = join(this.opts.dataDir, 'snapshots');
    for (const f of readdirSync(dir)) {
      const m = /^p(\d+)-(\d+)-(\d+)\.db$/.exec(f);
      if (m === null || Number(m[1]) !== partition || Number(m[2]) >= recorded) continue;
      if (this.fetching.has(`${partition}/${f.slice(0, -3)}`)) continue;
      rmSync(join(dir, f), { force: true });
    }
  }
}

/**
 * Where `r` leads its partition: the end of the log that every replica it replicates to is known to
 * hold (the least match of its progress, which a new leader starts at 0); null on a follower.
 */
function leastHeld(r: PartitionReplica): number | null {
  if (!r.isLeader()) return null;
  let least = Infinity;
  for (const match of r.raw.status().match.values()) least = Math.min(least, match);
  return least === Infinity ? null : least;
}

/** Where partition p's state database lives under a node's data folder. */
export function statePath(dataDir: string, p: number): string {
  return join(dataDir, 'state', `p${p}.db`);
}

/** Where the image of snapshot `ref` lives under a node's data folder. */
export function snapshotPath(dataDir: string, ref: string): string {
  return join(dataDir, 'snapshots', `${ref}.db`);
}

/** The name of a snapshot (and of its image file): p<partition>-<index>-<term>. */
export function imageRef(partition: number, index: number, term: number): string {
  return `p${partition}-${index}-${term}`;
}

/** Whether `ref` names a snapshot of `partition` (imageRef). A peer's ref is checked before any file use. */
function isImageRef(partition: number, ref: string): boolean {
  return /^p\d+-\d+-\d+$/.test(ref) && ref.startsWith(`p${partition}-`);
}

/**
 * Whether every entry below the Raft log that the state's rows point at for their bodies (format 4) is
 * kept by the log; if not, the error to halt the partition with. Entries from the log's first index
 * on are the Raft log's own. A node that ran an older build on this disk (rolled back past format 4)
 * let such entries go: its state would fail at the first receive of those messages, so the partition
 * stops at start instead, and the node is rebuilt from its peers (docs/operations.md). One range scan
 * of the primary key per channel: a start with a backlog of 1,000,000 rows reads them once.
 */
export function bodiesLost(log: PartitionLog, state: BrokerStateMachine): BodyMissingError | null {
  const below = log.firstIndex() - 1;
  if (below < 1) return null;
  const referenced = state.referencedEntries(1, below);
  if (referenced.length === 0) return null;
  const kept = log.keptBodies();
  const missing: number[] = [];
  let k = 0;
  for (const i of referenced) {
    while (k < kept.length && kept[k]! < i) k++;
    if (k >= kept.length || kept[k] !== i) missing.push(i);
  }
  if (missing.length === 0) return null;
  const more = missing.length === 1 ? '' : ` (and ${missing.length - 1} more entries rows point at)`;
  return new BodyMissingError(
    state.partition,
    missing[0]!,
    `is gone from the log${more}: the log let go of entries the state's rows still point at (a node rolled back past format 4 ran on this disk, or the disk lost writes). Rebuild this node from its peers (docs/operations.md)`,
  );
}

/**
 * Gives a partition's state its log to read bodies from (format 4; src/store/broker/bodies.ts): the
 * Raft log, or the entries kept below it. An index past the log's end is an entry the log lost.
 */
export function readsBodiesFrom(log: PartitionLog, state: BrokerStateMachine): BrokerStateMachine {
  state.attachBodies({
    entry: (i) => {
      try {
        return log.body(i)?.data ?? null;
      } catch (err) {
        if (err instanceof EntryUnavailableError) return null;
        throw err;
      }
    },
  });
  return state;
}
