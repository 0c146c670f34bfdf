// The durable Raft log of a node: one append-only stream of records for the logs, hard states and
// snapshot points of ALL its partitions, cut into preallocated segment files, so that one write and
// one fdatasync persist the Readies of every group of a loop turn (docs/storage.md; DESIGN.md,
// Persistence). Modelled on etcd's server/storage/wal (records with CRCs, torn-tail repair) and
// tikv/raft-engine (one log for many Raft groups, an index in memory, purge by rewriting forward).
//
// The durability argument.
// 1. Order: a turn's records go out in one writev at the end of the newest segment (append()), then
//    one fdatasync when the turn must be synced (new entries, a snapshot, a term or a vote), on the
//    thread pool (sync()); the caller sends what depends on the turn only once sync() resolved.
//    persist() does both on the event loop. A turn that only moves commit indexes is written without
//    a sync: losing it in a power cut loses only commit indexes, which Raft learns again; the next
//    sync covers it too (the same file).
// 2. Atomicity: a crash can tear only what was not synced, at the end of the newest segment. On open
//    the first record that fails its check ends the log there; the bytes after it are zeroed, unless
//    a later record says they had been synced (segment.ts): that is damage, and the log refuses to
//    open. So after any crash the log holds every synced turn, whole, and unsynced ones in order.
// 3. Integrity: every record carries a CRC (seeded with its segment, holding its own offset), checked
//    on every read; replay re-checks every invariant of transitions.ts; each segment starts with a
//    checkpoint of every partition, which must agree with what replay built. A mismatch throws
//    StorageCorruptError: the node refuses to start on a log it cannot trust.
// 4. Failed I/O: after a failed write or fdatasync the store refuses every later write: the kernel
//    may have dropped the dirty pages, so a retry could "succeed" without the data (fsyncgate). It
//    notes durably (SYNC-FAILED) where the segment was last known synced; the node stops, and the
//    next open cuts the log there, since the page cache may still hold, marked clean, records that
//    never reached the disk.
// 5. Segments: one is created whole (header and checkpoints) under a temporary name and renamed once
//    synced, so every segment holds its checkpoints. A segment is deleted once no partition holds a
//    live entry in it (compaction moved past them, or the few left were copied forward).
// 6. What the frontier cannot tell: damage to what the newest sync covered (every record written
//    after the sync before it completed, since a record's frontier is stamped when it is written),
//    which no later record vouches for, looks like a torn tail and is cut (etcd's WAL has the same
//    limit); the peers hold it.
//
// One writer: the process holding the log holds an flock on its folder (with the native addon) and a
// LOCK file naming it; a second open fails while either says the log is held.
import { closeSync, existsSync, fdatasync, fdatasyncSync, linkSync, openSync, renameSync, readFileSync, readSync, readdirSync, realpathSync, rmSync, writeFileSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { promisify } from 'node:util';
import { constants as osConstants } from 'node:os';
import { join, resolve } from 'node:path';
import { native } from '../../native/native.js';
import { InvariantError, invariant, type Entry, type HardState, type Index, type NodeId, type SnapshotMeta } from '../../raft/index.js';
import { fsyncPath, fsyncPathAsync, mkdirDurably, writeFileDurably } from '../durable.js';
import { LogInUseError, StorageCorruptError } from '../storage-errors.js';
import { fromRuns, toRuns } from './kept-bodies.js';
import { emptyLogState, sameLogState, sameVoters, type LogState, type SnapshotRecord } from './log-state.js';
import { PartitionView, type CacheBudget, type PartitionLog, type SegmentReader, type VerifyReport } from './partition-view.js';
import { RecordKind, encodeRecord, jsonPayload, parseJsonPayload, recordSize, type DecodedRecord, type RecordFields } from './record.js';
import { SEGMENT_HEADER_BYTES, createSegment, listSegments, scanSegment, segmentName, writeAll, zeroRange } from './segment.js';
import { appendEntries, compactTo, installSnapshot, localSnapshot, setHardState } from './transitions.js';

/** One partition's share of a loop turn's Ready, as persist() takes it. */
export interface PersistItem {
  readonly partition: number;
  readonly hardState: HardState | null;
  /** Appended after truncating any conflicting suffix at entries[0].index. */
  readonly entries: readonly Entry[];
  /** A snapshot received from the leader; its image must already be durable where `ref` says. */
  readonly snapshot: SnapshotRecord | null;
}

export interface WalOptions {
  /** Nominal size of a segment file (preallocated); a turn larger than that gets a larger segment. */
  readonly segmentBytes?: number;
  /** Bytes of recent entries kept in memory for every partition together (default NODE_CACHE_BYTES). */
  readonly cacheBytes?: number;
  /** Told when a segment no partition needs could not be deleted (its file stays until a later open). */
  readonly onDeleteFailed?: (path: string, err: unknown) => void;
}

/**
 * The entries a node keeps in memory, all partitions together: four partitions' worth of
 * CACHE_BYTES, so that sixteen busy partitions take 16 MiB, not 64.
 */
export const NODE_CACHE_BYTES = 16 * 1024 * 1024;

export const DEFAULT_SEGMENT_BYTES = 64 * 1024 * 1024;
/**
 * Offsets within a segment are kept in 32-bit slots (Locations). A segment may pass segmentBytes by
 * one write (the first after its checkpoints), so segmentBytes is capped well below 4 GiB, and a
 * write that would end past the slots' range is refused before a byte is written.
 */
export const MAX_SEGMENT_BYTES = 2 ** 31;
const MAX_SEGMENT_END = 2 ** 32 - 1;

/** A record to write: its fields and payload, and where it went once written. */
interface Pending {
  readonly fields: RecordFields;
  readonly payload: Uint8Array;
  segment: number;
  offset: number;
  size: number;
}

interface Segment {
  readonly seq: number;
  readonly fd: number;
  /**
   * A second descriptor of a segment this process writes, for syncs on the event loop (syncNow).
   * Linux tells a writeback error once per open file, to whichever fdatasync of it asks first: a
   * sync on the loop and one on the thread pool through one descriptor could see the same failed
   * pages, one of them told and the other succeeding. Through two, each is told. Null for a segment
   * only read, and closed once a rollover has synced the segment whole (no sync on the loop is of an
   * older segment).
   */
  loopFd: number | null;
  /** Where the next record goes. */
  end: number;
  /** Offset below which the segment is known synced. Invariant: durable <= end. */
  durable: number;
  /** End of the checkpoint records that open the segment. */
  checkpointEnd: number;
  /**
   * Settles when the fdatasync in flight on the thread pool ends, or null; the descriptor is closed
   * only once it is done. One at a time per segment (syncThrough), for the reason loopFd says: two
   * through one descriptor, and a success could hide the other's failure of the same pages.
   */
  poolSync: Promise<void> | null;
  /** Deleted while a sync was in flight: close the descriptor when it ends. */
  closeWhenIdle: boolean;
}

/**
 * The checkpoint payload: a partition's LogState, and the entries it keeps below its log for their
 * bodies as runs (toRuns), when it keeps any.
 */
type CheckpointPayload = LogState & { readonly kept?: number[] };

/**
 * The payload of a Compaction record: the entries of the compacted range kept for their bodies
 * (`keep`), or kept entries let go (`drop`, in a record at the partition's current offset, which
 * compacts nothing). Both as runs. A compaction that keeps nothing has an empty payload, as before
 * bodies were kept; builds that predate them read these records as the compaction they are.
 */
interface CompactionPayload {
  readonly keep?: number[];
  readonly drop?: number[];
}

/**
 * The logs open in this process, by their folder's real path: the descriptor holding the folder's
 * flock, or null where there is none (no addon, or a file system without flock).
 */
const held = new Map<string, number | null>();
/** The note of a failed write or sync (failed()). */
const SYNC_FAILED = 'SYNC-FAILED';
const fdatasyncAsync = promisify(fdatasync);

export class WalStore {
  private readonly views = new Map<number, PartitionView>();
  private readonly segments = new Map<number, Segment>();
  private active!: Segment;
  private failure: unknown = null;
  private syncedWrites = 0;
  private unsyncedWrites = 0;
  private readonly reader: SegmentReader;
  private readonly cache: CacheBudget;
  /** Bytes of records written since open. */
  private written = 0;
  /**
   * The oldest segment as purge() last left it, held back by live entries too many to copy, and the
   * bytes written then. Weighing what to copy costs a pass over every kept entry (a backlog of a
   * million single sends keeps a million), so while entries still hold it, it is weighed again only
   * after a release, or once another segment's worth was written (outgrown() may have turned).
   */
  private heldBack: { readonly segment: number; readonly written: number } | null = null;
  /** The chain of segment deletions in progress (deleteSoon). */
  private deleting: Promise<void> = Promise.resolve();
  /**
   * Segments to delete, oldest first, each with the sync that must come before its deletion (the
   * newest segment then, through its end then). One whose deletion failed stays first, and the
   * ones after it wait: tried again at the next deletion asked for (deleteSoon).
   */
  private readonly undeleted: { seq: number; seg: Segment; target: number }[] = [];
  private closed = false;

  private constructor(
    readonly dir: string,
    private readonly segmentBytes: number,
    cacheBytes: number,
    private readonly onDeleteFailed: (path: string, err: unknown) => void,
  ) {
    this.cache = { limit: cacheBytes, used: 0 };
    this.reader = {
      read: (seq, offset, bytes) => {
        const s = this.segments.get(seq);
        if (s === undefined) throw new StorageCorruptError({ path: this.segmentPath(seq), partition: null, index: null }, 'read of a deleted segment');
        const buf = Buffer.allocUnsafe(bytes);
        let done = 0;
        while (done < bytes) {
          const n = readSync(s.fd, buf, done, bytes - done, offset + done);
          if (n === 0) break;
          done += n;
        }
        return done === bytes ? buf : buf.subarray(0, done);
      },
      path: (seq) => this.segmentPath(seq),
    };
  }

  /**
   * Opens the log in `dir` (creating it), replays every segment, cuts a torn tail, and checks what
   * it read. Throws StorageCorruptError on damage, and an Error when another process holds the log.
   */
  static async open(dir: string, opts: WalOptions = {}): Promise<WalStore> {
    const segmentBytes = opts.segmentBytes ?? DEFAULT_SEGMENT_BYTES;
    if (!Number.isSafeInteger(segmentBytes) || segmentBytes < 1 || segmentBytes > MAX_SEGMENT_BYTES) {
      throw new RangeError(`segmentBytes must be an integer from 1 to ${MAX_SEGMENT_BYTES}, not ${segmentBytes}`);
    }
    const abs = resolve(dir);
    mkdirDurably(abs);
    lock(abs);
    const store = new WalStore(abs, segmentBytes, opts.cacheBytes ?? NODE_CACHE_BYTES, opts.onDeleteFailed ?? (() => {}));
    try {
      store.replay();
      return store;
    } catch (err) {
      // The descriptors replay opened go too: a node restarted in process must not leak them.
      for (const s of store.segments.values()) closeSegment(s);
      store.segments.clear();
      unlock(abs);
      throw err;
    }
  }

  /**
   * The view of partition p. `voters` are the group's voters before its first snapshot
   * (MemoryStorage's constructor argument); later the snapshot's.
   */
  partition(p: number, voters: readonly NodeId[]): PartitionLog {
    invariant(Number.isSafeInteger(p) && p >= 0 && p < 2 ** 32, `partition ${p} is not a non-negative 32-bit integer`);
    const view = this.view(p);
    if (view.voters.length > 0) invariant(sameVoters(view.voters, voters), `partition ${p} reopened with other voters`);
    view.voters = voters.slice();
    return view;
  }

  /**
   * Persists a loop turn's Readies, of any number of partitions, in one write. Per item: install the
   * snapshot (the log restarts after it), cut the suffix from entries[0].index and append, then save
   * the hard state. Synced before it returns when `mustSync`. Every item is checked first: a refused
   * item (InvariantError) writes nothing of the batch.
   */
  persist(batch: readonly PersistItem[], mustSync: boolean): void {
    this.append(batch);
    if (mustSync) this.syncNow();
  }

  /**
   * Writes a loop turn's batch as persist() does, without syncing it: sync() makes it durable. The
   * views answer with it at once (the core reads what it handed out), but nothing that depends on it
   * may leave the node before sync() resolved.
   */
  append(batch: readonly PersistItem[]): void {
    if (batch.every((i) => i.snapshot === null && i.entries.length === 0 && i.hardState === null)) return;
    const next = new Map<number, LogState>();
    const records: Pending[] = [];
    for (const item of batch) {
      const p = item.partition;
      let s = next.get(p) ?? this.view(p).state;
      if (item.snapshot !== null) {
        s = installSnapshot(p, s, item.snapshot);
        records.push(pending(RecordKind.InstalledSnapshot, p, item.snapshot.meta.term, item.snapshot.meta.index, jsonPayload(item.snapshot)));
      }
      if (item.entries.length > 0) {
        s = appendEntries(p, s, item.entries);
        for (const e of item.entries) records.push(pending(RecordKind.Entry, p, e.term, e.index, e.data, e.kind));
      }
      if (item.hardState !== null) {
        s = setHardState(p, s, item.hardState);
        records.push(pending(RecordKind.HardState, p, item.hardState.term, item.hardState.commit, jsonPayload({ vote: item.hardState.vote })));
      }
      next.set(p, s);
    }
    this.write(records, false);
    // Written: now the views follow, record by record, in the order written.
    let k = 0;
    for (const item of batch) {
      const view = this.view(item.partition);
      if (item.snapshot !== null) {
        view.noteRestarted(item.snapshot.meta.index);
        k++;
      }
      if (item.entries.length > 0) {
        const written = records.slice(k, k + item.entries.length);
        view.noteAppended(item.entries, written[0]!.segment, written.map((r) => r.offset), written.map((r) => r.size));
        k += item.entries.length;
      }
      if (item.hardState !== null) k++;
    }
    for (const [p, s] of next) this.view(p).state = s;
    this.trimCaches();
  }

  /**
   * Per partition, the entries kept for their bodies (recordSnapshot's `keep`) that lie in the oldest
   * segment, when that segment could be deleted at all (it is not the newest): what releaseBodies()
   * could free it of.
   */
  keptInOldestSegment(): Map<number, Index[]> {
    const out = new Map<number, Index[]>();
    const oldest = Math.min(...this.segments.keys());
    if (oldest === this.active.seq) return out;
    for (const view of this.views.values()) {
      const held = view.kept.indexesIn(oldest);
      if (held.length > 0) out.set(view.partition, held);
    }
    return out;
  }

  /** Those of `indexes` (ascending) that partition p still keeps for their bodies. */
  stillKept(p: number, indexes: readonly Index[]): Index[] {
    const kept = this.view(p).kept;
    return indexes.filter((i) => kept.has(i));
  }

  /** Bytes of entries kept in memory, every partition together (at most the budget after a write). */
  cachedBytes(): number {
    return this.cache.used;
  }

  /** Evicts the oldest entries of the partitions that keep the most until the node's budget holds. */
  private trimCaches(): void {
    while (this.cache.used > this.cache.limit) {
      let largest: PartitionView | null = null;
      for (const v of this.views.values()) if (largest === null || v.cachedBytes > largest.cachedBytes) largest = v;
      if (largest === null || !largest.evictOldest()) return;
    }
  }

  /**
   * Makes everything written so far durable: one fdatasync of the newest segment on libuv's thread
   * pool, so the event loop goes on (requests arrive, the next turn's batch grows) while the disk
   * works. A failure fails every later write too (see the header, point 4).
   */
  async sync(): Promise<void> {
    await this.syncThrough(this.active, this.active.end);
  }

  /**
   * sync() of `seg` up to `target`, which it had reached when the caller asked. Syncs of one segment
   * on the pool go one after another (poolSync): a turn's and a segment deletion's could otherwise
   * be in flight together.
   */
  private async syncThrough(seg: Segment, target: number): Promise<void> {
    this.checkUsable();
    while (seg.poolSync !== null) {
      await seg.poolSync;
      this.checkUsable();
    }
    if (seg.durable >= target) return;
    // Closed while this waited: its descriptor is gone, and its number may be another file's by now.
    if (this.closed) throw new Error('the write-ahead log is closed');
    const sync = fdatasyncAsync(seg.fd);
    seg.poolSync = sync.then(
      () => undefined,
      () => undefined,
    );
    try {
      await sync;
    } catch (err) {
      // Not a failure of the disk when the store was closed under the sync (its descriptor with it).
      if (!this.closed) this.failed(err, seg);
      throw err;
    } finally {
      seg.poolSync = null;
      if (seg.closeWhenIdle) closeSegment(seg);
    }
    // The store failed while this sync was in flight (a write or a sync on the loop failed): its
    // success proves nothing, and the note failed() wrote cuts the log below what it covered
    // (review of 2026-12-07).
    this.checkUsable();
    seg.durable = Math.max(seg.durable, target);
    this.syncedWrites++;
  }

  /** sync(), on the event loop: for writes that are rare or must be durable before the call returns. */
  private syncNow(): void {
    this.checkUsable();
    const seg = this.active;
    if (seg.durable >= seg.end) return;
    try {
      fdatasyncSync(seg.loopFd ?? seg.fd);
    } catch (err) {
      this.failed(err, seg);
      throw err;
    }
    seg.durable = seg.end;
    this.syncedWrites++;
  }

  private checkUsable(): void {
    if (this.failure !== null) throw new Error('the write-ahead log failed a write earlier; restart the node', { cause: this.failure });
  }

  /** fdatasync calls since open: persists, compactions, snapshots, copies forward. */
  get syncs(): number {
    return this.syncedWrites;
  }

  /** Writes not synced by themselves (a turn's batch before its sync, a commit index) since open. */
  get unsynced(): number {
    return this.unsyncedWrites;
  }

  /** Segment files now, oldest first. */
  segmentFiles(): string[] {
    return [...this.segments.keys()].sort((a, b) => a - b).map((seq) => this.segmentPath(seq));
  }

  /**
   * Drops partition p's entries up to and including `index` (a no-op at or below the current first
   * index - 1). Never past the recorded snapshot: the log is the only copy of entries the snapshot
   * does not cover.
   */
  compact(p: number, index: Index, keep: readonly Index[] = []): void {
    const view = this.view(p);
    const s = compactTo(p, view.state, index);
    checkKeep(p, view.state, s, keep);
    if (s === view.state) return;
    const payload = keep.length === 0 ? new Uint8Array(0) : jsonPayload({ keep: toRuns(keep) } satisfies CompactionPayload);
    this.write([pending(RecordKind.Compaction, p, s.offsetTerm, index, payload)], true);
    view.state = s;
    view.noteCompacted(index, keep);
    this.purge();
  }

  /**
   * Lets go of entries kept below partition p's log for their bodies (none of the state's messages
   * points at them any more): their segments may then be deleted. Not synced by itself: a segment is
   * deleted only after a sync, and a release lost in a crash only keeps the entries longer.
   */
  releaseBodies(p: number, indexes: readonly Index[]): void {
    if (indexes.length === 0) return;
    const view = this.view(p);
    for (let k = 0; k < indexes.length; k++) {
      const i = indexes[k]!;
      invariant(k === 0 || i > indexes[k - 1]!, `partition ${p}: bodies to release are not ascending at ${i}`);
      invariant(view.kept.has(i), `partition ${p}: entry ${i} is not kept for its bodies`);
    }
    const s = view.state;
    this.write([pending(RecordKind.Compaction, p, s.offsetTerm, s.offset, jsonPayload({ drop: toRuns(indexes) } satisfies CompactionPayload))], false);
    view.kept.remove(indexes);
    this.heldBack = null;
    this.purge();
  }

  /**
   * Records a snapshot taken locally (its image already durable where `ref` says) and compacts the
   * log to `to` (default: the snapshot's index; lower keeps a tail for followers slightly behind,
   * sparing them a snapshot). The entries at `keep` (ascending, within the range compacted now)
   * stay readable through body() after the compaction, until releaseBodies() lets them go: the
   * broker's state points at the message bodies they carry.
   */
  recordSnapshot(p: number, meta: SnapshotMeta, ref: string, to: Index = meta.index, keep: readonly Index[] = []): void {
    const view = this.view(p);
    const s = localSnapshot(p, view.state, meta, ref, to);
    checkKeep(p, view.state, s, keep);
    const payload = keep.length === 0 ? { meta, ref, compactTo: to } : { meta, ref, compactTo: to, keep: toRuns(keep) };
    this.write([pending(RecordKind.LocalSnapshot, p, meta.term, meta.index, jsonPayload(payload))], true);
    view.state = s;
    view.noteCompacted(s.offset, keep);
    this.purge();
  }

  /**
   * Writes `log`, a partition's whole log from another store (the SQLite log this one replaced), as
   * partition p's: its snapshot point and hard state, and its entries, in one synced write. The
   * partition must be empty here.
   */
  adopt(p: number, log: { hardState(): HardState; snapshotRef(): string | null; snapshot(): { meta: SnapshotMeta }; firstIndex(): Index; lastIndex(): Index; term(i: Index): number; entries(lo: Index, hi: Index, maxBytes: number): Entry[] }): void {
    const view = this.view(p);
    invariant(view.state === emptyLogState, `partition ${p} is not empty: nothing is adopted over it`);
    const ref = log.snapshotRef();
    const offset = log.firstIndex() - 1;
    const hard = log.hardState();
    const start: CheckpointPayload = {
      hard: { ...hard, commit: Math.min(hard.commit, offset) },
      snap: ref === null ? null : { meta: log.snapshot().meta, ref },
      offset,
      offsetTerm: log.term(offset),
      last: offset,
      runStarts: [],
      runTerms: [],
    };
    const records = [pending(RecordKind.Checkpoint, p, hard.term, offset, jsonPayload(start))];
    const last = log.lastIndex();
    if (last > offset) for (const e of log.entries(offset + 1, last + 1, Infinity)) records.push(pending(RecordKind.Entry, p, e.term, e.index, e.data, e.kind));
    records.push(pending(RecordKind.HardState, p, hard.term, hard.commit, jsonPayload({ vote: hard.vote })));
    this.write(records, true);
    // The view follows exactly as a replay of these records would make it.
    for (const r of records) {
      const written: DecodedRecord = { ...r.fields, offset: r.offset, size: r.size, frontier: 0, end: false, payload: r.payload };
      this.replayRecord(written, r.segment, this.segmentPath(r.segment));
    }
  }

  /** Reads partition p's whole log back from disk, checking every record. */
  verify(p: number): VerifyReport {
    return this.view(p).verify();
  }

  /**
   * Whether this store holds its folder's flock; false where the LOCK file holds the log alone (no
   * addon, or a file system without flock), which a pid reused across pid namespaces can fool.
   */
  get folderLocked(): boolean {
    return (held.get(realpathSync(this.dir)) ?? null) !== null;
  }

  /** Closes the segments and lets the folder go; deletions not started by then are left (settled() first). */
  close(): void {
    this.closed = true;
    for (const s of this.segments.values()) closeSegment(s);
    this.segments.clear();
    this.views.clear();
    unlock(this.dir);
  }

  // --- writing ------------------------------------------------------------------------------------

  /** Appends `records` at the end of the newest segment (a new one when full), synced if `sync`. */
  private write(records: Pending[], sync: boolean): void {
    this.checkUsable();
    try {
      const bytes = records.reduce((n, r) => n + recordSize(r.payload.byteLength), 0);
      if (this.active.end + bytes > this.segmentBytes && this.active.end > this.active.checkpointEnd) this.rollover();
      const seg = this.active;
      invariant(seg.end + bytes <= MAX_SEGMENT_END, `a write of ${bytes} bytes at ${seg.end} would pass the 32-bit offsets of a segment`);
      const { buffers, end: pos } = encodeWrite(records, seg.seq, seg.end, seg.durable);
      writeAll(seg.fd, buffers, seg.end);
      this.written += pos - seg.end;
      seg.end = pos;
    } catch (err) {
      if (!(err instanceof InvariantError)) this.failed(err, this.active);
      throw err;
    }
    if (sync) this.syncNow();
    else this.unsyncedWrites++;
  }

  /** Closes the newest segment (synced whole) and starts the next with a checkpoint of every partition. */
  private rollover(): void {
    this.syncNow();
    const old = this.active;
    this.startSegment(old.seq + 1);
    closeLoopFd(old);
  }

  /**
   * A new newest segment, opening with a checkpoint of every partition. It is created whole under a
   * temporary name and renamed once synced, so that a segment file always holds its header and all
   * its checkpoints: a crash or a failed write in between leaves only a temporary file, deleted on
   * open (replay and purge rely on every segment's checkpoints being there).
   */
  private startSegment(seq: number): void {
    const checkpoints: Pending[] = [];
    for (const view of [...this.views.values()].sort((a, b) => a.partition - b.partition)) {
      const s = view.state;
      if (s === emptyLogState) continue;
      const payload: CheckpointPayload = view.kept.size === 0 ? s : { ...s, kept: toRuns(view.kept.indexes()) };
      checkpoints.push(pending(RecordKind.Checkpoint, view.partition, s.hard.term, s.last, jsonPayload(payload)));
    }
    const { buffers, end } = encodeWrite(checkpoints, seq, SEGMENT_HEADER_BYTES, SEGMENT_HEADER_BYTES);
    let fd: number | null = null;
    let loopFd: number;
    try {
      fd = createSegment(this.dir, seq, this.segmentBytes, buffers);
      loopFd = openSync(this.segmentPath(seq), 'r+');
    } catch (err) {
      // Renamed into place, then not opened (descriptors ran out): the segment holds its checkpoints
      // only, and goes, or the next open would find a newer segment than the failure's note names
      // and refuse a log that lost nothing (review of 2026-12-07).
      if (fd !== null) closeQuietly(fd);
      try {
        if (existsSync(this.segmentPath(seq))) {
          rmSync(this.segmentPath(seq), { force: true });
          fsyncPath(this.dir);
        }
      } catch {
        // The disk refuses this too: the error to report is the first, and the next start finds
        // a newer segment than the note names, and refuses the log (a node to rebuild).
      }
      throw err;
    }
    if (checkpoints.length > 0) this.syncedWrites++;
    const seg: Segment = { seq, fd, loopFd, end, durable: end, checkpointEnd: end, poolSync: null, closeWhenIdle: false };
    this.segments.set(seq, seg);
    this.active = seg;
  }

  /**
   * Deletes the oldest segments no partition needs. When only a few entries hold the oldest one
   * back (a partition whose snapshot lags), they are copied forward first, as raft-engine purges.
   */
  private purge(): void {
    // Only segments older than the newest one at the start: copies forward may roll over into new
    // segments, whose checkpoints list every kept entry, and a pass that went on into those could
    // copy and roll over forever (review of 416b3c7).
    const newestAtStart = this.active.seq;
    for (;;) {
      const seqs = [...this.segments.keys()].sort((a, b) => a - b);
      const oldest = seqs[0]!;
      if (oldest >= newestAtStart) return;
      const holders = [...this.views.values()].filter((v) => v.locations.holds(oldest) || v.kept.holds(oldest));
      if (holders.length > 0) {
        if (this.heldBack?.segment === oldest && this.written - this.heldBack.written < this.segmentBytes) return;
        if (!this.copyForward(oldest, holders)) {
          this.heldBack = { segment: oldest, written: this.written };
          return;
        }
      }
      const seg = this.segments.get(oldest)!;
      if (seg.poolSync === null) closeSegment(seg);
      else seg.closeWhenIdle = true;
      this.segments.delete(oldest);
      this.deleteSoon(oldest);
    }
  }

  /**
   * Deletes the file of segment `seq`, which no partition needs any more, on libuv's thread pool.
   * Unlinking a full segment took 15-41 ms, and one snapshot can free many at once: seven in a row
   * stalled every node's event loop for 218-240 ms under receive-ack-100 (bench/README.md, "What
   * changed"). Deletions go one at a time, oldest first, each after a sync of what had been written
   * when it was asked for: releases written since the last sync must be durable before the segment
   * they free goes (replayed without them, the log would look for kept entries in a segment that is
   * gone). A segment whose deletion is cut short by a crash or a failure is one replay and the next
   * open's purge delete again, as before, when a crash came between the sync and the unlink. A
   * deletion that fails stays first, and the later ones wait behind it until it is tried again, at
   * the next deletion asked for: deleting a newer segment while an older one stays would leave a gap
   * that the next open cannot replay across (review of 2026-12-07).
   */
  private deleteSoon(seq: number): void {
    this.undeleted.push({ seq, seg: this.active, target: this.active.end });
    this.deleting = this.deleting.then(async () => {
      while (this.undeleted.length > 0) {
        // Closed meanwhile (its descriptors with it): the files stay for the next open's purge.
        if (this.closed) return;
        const { seq: oldest, seg, target } = this.undeleted[0]!;
        const path = this.segmentPath(oldest);
        try {
          await this.syncThrough(seg, target);
          if (this.closed) return;
          await rm(path, { force: true });
          await fsyncPathAsync(this.dir);
          this.undeleted.shift();
        } catch (err) {
          // Closed while it waited: nothing failed, and the file stays for the next open's purge.
          if (this.closed) return;
          // A failed sync fails the store (syncThrough), and every later try with it.
          this.onDeleteFailed(path, err);
          return;
        }
      }
    });
  }

  /** Resolves once every segment deletion asked for so far has ended (deleteSoon). */
  settled(): Promise<void> {
    return this.deleting;
  }

  /**
   * Copies the live entries of `segment` forward (those of the Raft logs, and those kept for their
   * bodies) when they are few, or when the log has outgrown what lives in it; whether it did.
   */
  private copyForward(segment: number, holders: PartitionView[]): boolean {
    const moves: { view: PartitionView; index: Index; kept: boolean }[] = [];
    let bytes = 0;
    for (const view of holders) {
      for (const index of view.locations.indexesIn(segment)) {
        moves.push({ view, index, kept: false });
        bytes += view.locations.bytes(index);
      }
      for (const index of view.kept.indexesIn(segment)) {
        moves.push({ view, index, kept: true });
        bytes += view.kept.place(index)!.bytes;
      }
    }
    // Copy at most a quarter of a segment, and only once the log holds three segments: a partition
    // that holds more is about to snapshot, and copying would only write the same bytes twice. But a
    // backlog that stays (bodies kept for a long time) must not hold every later segment back: once
    // the segments take more than four times what lives in them, the oldest one's live entries are
    // copied whatever their size, so the disk stays within about four times the live bytes, and a
    // live byte is copied again only after about three more have been written (tikv/raft-engine's
    // purge by rewrite).
    if (this.segments.size < 3) return false;
    if (bytes > this.segmentBytes / 4 && !this.outgrown()) return false;
    const records: Pending[] = [];
    for (const { view, index } of moves) {
      const e = view.body(index)!;
      records.push(pending(RecordKind.Copy, view.partition, e.term, e.index, e.data, e.kind));
    }
    // Not synced here: the segment they leave is deleted only after a sync that covers them
    // (deleteSoon), and until then a replay finds the entries where they were. A sync per copy cost
    // 4-14 ms of the event loop each, several in a row after one snapshot.
    this.write(records, false);
    records.forEach((r, k) => {
      const { view, index, kept } = moves[k]!;
      if (kept) view.kept.set(index, r.segment, r.offset, r.size);
      else view.locations.set(index, r.segment, r.offset, r.size);
    });
    return true;
  }

  /**
   * Whether the segments' records hold more than four times the bytes of live entries, and two
   * segments more. Checkpoints are left out: they are rewritten at every rollover whatever is copied.
   */
  private outgrown(): boolean {
    let live = 0;
    for (const v of this.views.values()) live += v.locations.totalBytes() + v.kept.bytes();
    let used = 0;
    for (const s of this.segments.values()) used += s.end - s.checkpointEnd;
    return used > 4 * live + 2 * this.segmentBytes;
  }

  // --- replay -------------------------------------------------------------------------------------

  private replay(): void {
    // A segment left half-created by a crash or a failed write never held anything acknowledged.
    for (const f of readdirSync(this.dir)) if (f.endsWith('.wal.tmp')) rmSync(join(this.dir, f), { force: true });
    const seqs = listSegments(this.dir);
    // A process killed between a new segment's rename and the folder's sync left its name in the
    // page cache only: this process writes there, so the folder is synced before it does.
    if (seqs.length > 0) {
      try {
        fsyncPath(this.dir);
      } catch (err) {
        // As for a failed sync of what the open read (below): the next start would be told nothing.
        // Not when the folder could not even be opened (no descriptors left): nothing was synced.
        if ((err as NodeJS.ErrnoException).syscall === 'fsync') this.noteFailure(err, { segment: seqs.at(-1)!, durable: 0, atOpen: true });
        throw err;
      }
    }
    const failedSync = this.readSyncFailure(seqs);
    if (seqs.length === 0) {
      this.startSegment(1);
      return;
    }
    for (const [k, seq] of seqs.entries()) {
      const path = this.segmentPath(seq);
      const newest = k === seqs.length - 1;
      const fd = openSync(path, newest ? 'r+' : 'r');
      let loopFd: number | null = null;
      try {
        if (newest) loopFd = openSync(path, 'r+');
      } catch (err) {
        closeQuietly(fd);
        throw err;
      }
      const seg: Segment = { seq, fd, loopFd, end: SEGMENT_HEADER_BYTES, durable: SEGMENT_HEADER_BYTES, checkpointEnd: SEGMENT_HEADER_BYTES, poolSync: null, closeWhenIdle: false };
      this.segments.set(seq, seg);
      let scanned = scanSegment(readFileSync(path), seq, path, newest);
      if (newest && failedSync !== null && scanned.end > failedSync.durable) {
        // What follows the last successful sync may be in the page cache only, marked clean after
        // the failed writeback: never acknowledged, and not to be trusted now.
        scanned = { records: scanned.records.filter((r) => r.offset < failedSync.durable), end: failedSync.durable, dirtyTo: Math.max(scanned.dirtyTo, scanned.end) };
      }
      let checkpoints = true;
      for (const r of scanned.records) {
        if (r.kind !== RecordKind.Checkpoint) checkpoints = false;
        this.replayRecord(r, seq, path);
        if (checkpoints) seg.checkpointEnd = r.offset + r.size;
      }
      seg.end = scanned.end;
      if (newest) {
        // A torn tail is cut before anything is appended there; what was read is synced now (a
        // crash of the process leaves it in the page cache only).
        try {
          if (scanned.dirtyTo > scanned.end) zeroRange(fd, scanned.end, scanned.dirtyTo);
          else fdatasyncSync(fd);
        } catch (err) {
          // A failed sync of what was read: it may be in the page cache only, and stay readable
          // there, marked clean, to the next start in this boot, which would take it for durable.
          // No cut is honest either (the last write the process before synced says so nowhere), so
          // the note makes the next start refuse the log (review of 2026-12-07). A failed write of
          // the zeros (a full disk) marks nothing clean: the next start tries again.
          if ((err as NodeJS.ErrnoException).syscall === 'fdatasync') this.failed(err, seg, true);
          throw err;
        }
      }
      seg.durable = seg.end;
      this.active = seg;
    }
    if (failedSync !== null) {
      // The note goes only once the cut is synced, and its removal is synced in turn: a note that
      // came back after a power cut would cut again, at the same place, whatever was synced since.
      rmSync(join(this.dir, SYNC_FAILED), { force: true });
      fsyncPath(this.dir);
    }
    for (const view of this.views.values()) {
      const unknown = view.locations.firstUnknown();
      if (unknown !== null) throw new StorageCorruptError({ path: this.dir, partition: view.partition, index: unknown }, 'entry missing from every segment');
      const keptUnknown = view.kept.firstUnknown();
      if (keptUnknown !== null) throw new StorageCorruptError({ path: this.dir, partition: view.partition, index: keptUnknown }, 'kept entry missing from every segment');
      const s = view.state;
      if (s.hard.commit > s.last) throw new StorageCorruptError({ path: this.dir, partition: view.partition, index: null }, `commit ${s.hard.commit} past the last index ${s.last}`);
    }
  }

  /**
   * A failed write or fdatasync: the store refuses every later write (the kernel may have dropped
   * the dirty pages, so a retry could "succeed" without the data), and notes durably where the
   * segment was last known synced, for the next open to cut the log there (fsyncgate); `atOpen`: a
   * sync of the open itself failed, and the next open refuses the log instead.
   */
  private failed(err: unknown, seg: Segment, atOpen = false): void {
    this.noteFailure(err, { segment: seg.seq, durable: seg.durable, ...(atOpen ? { atOpen } : {}) });
  }

  private noteFailure(err: unknown, note: { segment: number; durable: number; atOpen?: true }): void {
    this.failure = err;
    try {
      writeFileDurably(join(this.dir, SYNC_FAILED), JSON.stringify(note));
    } catch {
      // The disk refuses even this: the node stops anyway, and the next open finds what it finds.
    }
  }

  /** The note of a failed sync, checked against the segments it must be about (the newest). */
  private readSyncFailure(seqs: readonly number[]): { segment: number; durable: number } | null {
    const file = join(this.dir, SYNC_FAILED);
    if (!existsSync(file)) return null;
    const note = JSON.parse(readFileSync(file, 'utf8')) as { segment: number; durable: number; atOpen?: boolean };
    if (note.atOpen === true) {
      throw new StorageCorruptError({ path: file, partition: null, index: null }, `a sync of segment ${note.segment} failed when the log was opened: what it read may never have reached the disk`);
    }
    if (note.segment !== seqs.at(-1)) {
      throw new StorageCorruptError({ path: file, partition: null, index: null }, `a sync of segment ${note.segment} failed, but the newest segment is ${String(seqs.at(-1))}`);
    }
    return note;
  }

  private replayRecord(r: DecodedRecord, seq: number, path: string): void {
    const p = r.partition;
    const view = this.view(p);
    const corrupt = (detail: string, cause?: unknown): StorageCorruptError =>
      new StorageCorruptError({ path, partition: p, index: r.index }, `${detail} (record at ${r.offset})`, cause === undefined ? undefined : { cause });
    try {
      switch (r.kind) {
        case RecordKind.Entry: {
          const entry: Entry = { index: r.index, term: r.term, kind: r.entryKind as Entry['kind'], data: new Uint8Array(0) };
          view.state = appendEntries(p, view.state, [entry]);
          view.locations.truncateFrom(r.index);
          if (view.locations.size === 0) view.locations.reset(r.index);
          view.locations.push(seq, r.offset, r.size);
          break;
        }
        case RecordKind.Copy:
          if (view.locations.has(r.index) && r.index > view.state.offset && r.index <= view.state.last && view.term(r.index) === r.term) {
            view.locations.set(r.index, seq, r.offset, r.size);
          } else if (r.index <= view.state.offset) {
            view.kept.set(r.index, seq, r.offset, r.size);
          }
          break;
        case RecordKind.HardState: {
          const { vote } = parseJsonPayload(r.payload) as { vote: NodeId | null };
          view.state = setHardState(p, view.state, { term: r.term, vote, commit: r.index });
          break;
        }
        case RecordKind.InstalledSnapshot:
          view.state = installSnapshot(p, view.state, parseJsonPayload(r.payload) as SnapshotRecord);
          view.locations.reset(r.index + 1);
          view.kept.clear();
          break;
        case RecordKind.LocalSnapshot: {
          const { meta, ref, compactTo: to, keep } = parseJsonPayload(r.payload) as { meta: SnapshotMeta; ref: string; compactTo: Index; keep?: unknown };
          const before = view.state;
          view.state = localSnapshot(p, before, meta, ref, to);
          const kept = keep === undefined ? [] : fromRuns(keep);
          if (kept === null) throw corrupt('the entries kept for their bodies are not a list of runs');
          checkKeep(p, before, view.state, kept);
          view.noteCompacted(view.state.offset, kept);
          break;
        }
        case RecordKind.Compaction: {
          const payload = (r.payload.byteLength === 0 ? {} : parseJsonPayload(r.payload)) as { keep?: unknown; drop?: unknown };
          const keep = payload.keep === undefined ? [] : fromRuns(payload.keep);
          const drop = payload.drop === undefined ? [] : fromRuns(payload.drop);
          if (keep === null || drop === null) throw corrupt('the entries kept for their bodies are not a list of runs');
          const before = view.state;
          view.state = compactTo(p, before, r.index);
          checkKeep(p, before, view.state, keep);
          view.noteCompacted(view.state.offset, keep);
          const unknown = drop.find((i) => !view.kept.has(i));
          if (unknown !== undefined) throw corrupt(`entry ${unknown} released, but it is not kept`);
          view.kept.remove(drop);
          break;
        }
        case RecordKind.Checkpoint: {
          const { kept: keptRuns, ...s } = parseJsonPayload(r.payload) as CheckpointPayload;
          const kept = keptRuns === undefined ? [] : fromRuns(keptRuns);
          if (kept === null) throw corrupt('the entries kept for their bodies are not a list of runs');
          if (view.state === emptyLogState) {
            // The segments before this one are gone: the entries' places come from copies further on.
            view.state = s;
            view.locations.reset(s.offset + 1);
            for (let i = s.offset + 1; i <= s.last; i++) view.locations.push(0, 0, 0);
            view.kept.clear();
            for (const i of kept) view.kept.push(i, 0, 0, 0);
          } else if (!sameLogState(view.state, s)) {
            throw corrupt('the checkpoint disagrees with the log before it');
          } else if (!sameIndexes(view.kept.indexes(), kept)) {
            throw corrupt('the checkpoint disagrees with the log before it on the entries kept for their bodies');
          }
          break;
        }
        default:
          throw corrupt(`unknown record kind ${String(r.kind)}`);
      }
    } catch (err) {
      if (err instanceof StorageCorruptError) throw err;
      throw corrupt(`replay refused the record: ${(err as Error).message}`, err);
    }
  }

  private view(p: number): PartitionView {
    let v = this.views.get(p);
    if (v === undefined) {
      v = new PartitionView(p, this.reader, this.cache);
      this.views.set(p, v);
    }
    return v;
  }

  private segmentPath(seq: number): string {
    return join(this.dir, segmentName(seq));
  }
}

/** One write's buffers: `records` from offset `pos` of segment `seq`, the last one marked END. */
function encodeWrite(records: Pending[], seq: number, pos: number, frontier: number): { buffers: Uint8Array[]; end: number } {
  const buffers: Uint8Array[] = [];
  let at = pos;
  for (const [k, r] of records.entries()) {
    buffers.push(...encodeRecord(r.fields, r.payload, at, frontier, seq, k === records.length - 1));
    r.segment = seq;
    r.offset = at;
    r.size = recordSize(r.payload.byteLength);
    at += r.size;
  }
  return { buffers, end: at };
}

/**
 * Checks the entries a compaction from `before` to `after` keeps for their bodies: ascending, and all
 * within the range it compacts (so above every entry kept before, and none when it compacts nothing).
 */
function checkKeep(p: number, before: LogState, after: LogState, keep: readonly Index[]): void {
  for (let k = 0; k < keep.length; k++) {
    const i = keep[k]!;
    invariant(k === 0 || i > keep[k - 1]!, `partition ${p}: entries to keep are not ascending at ${i}`);
    invariant(i > before.offset && i <= after.offset, `partition ${p}: entry ${i} to keep is outside the compacted range (${before.offset}, ${after.offset}]`);
  }
}

const sameIndexes = (a: readonly Index[], b: readonly Index[]): boolean => a.length === b.length && a.every((x, k) => x === b[k]);

/** Closes the segment's descriptors. */
function closeSegment(seg: Segment): void {
  closeQuietly(seg.fd);
  closeLoopFd(seg);
}

/** Closes the segment's descriptor for syncs on the event loop, once. */
function closeLoopFd(seg: Segment): void {
  const loopFd = seg.loopFd;
  seg.loopFd = null;
  if (loopFd !== null) closeQuietly(loopFd);
}

/**
 * Closes `fd`, ignoring an error: Linux releases the descriptor whatever close() says (it can say
 * EIO on a network or FUSE file system), so trying again could close whatever took its number, and
 * a throw would leave the rest of a close undone (review of 2026-12-07). Every segment closed here
 * was synced, or its log failed already.
 */
function closeQuietly(fd: number): void {
  try {
    closeSync(fd);
  } catch {
    // Released anyway.
  }
}

function pending(kind: RecordKind, partition: number, term: number, index: number, payload: Uint8Array, entryKind = 0): Pending {
  return { fields: { kind, entryKind, partition, term, index }, payload, segment: 0, offset: 0, size: 0 };
}

/**
 * Takes the log in `dir` for this process: first its folder's flock, then its LOCK file. Refused while
 * another process holds the flock, or while the LOCK names a live process (a build without the flock),
 * or while another store of this process holds the log.
 */
function lock(dir: string): void {
  const key = realpathSync(dir);
  if (held.has(key)) throw new Error(`the write-ahead log in ${dir} is already open in this process`);
  const fd = lockFolder(dir);
  const file = join(dir, 'LOCK');
  try {
    for (let attempt = 0; ; attempt++) {
      try {
        // Created exclusively: of two processes starting at once, one gets the log.
        createLock(file);
        // Which boot the pid is of, beside the LOCK (whose content the previous build reads as a pid).
        if (BOOT !== null) {
          // Whole or not at all, as the LOCK: one read empty would say another boot, so stale.
          writeFileSync(`${file}.boot.${process.pid}.tmp`, `${BOOT}\n`, { mode: 0o600 });
          renameSync(`${file}.boot.${process.pid}.tmp`, `${file}.boot`);
        }
        break;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST' || attempt > 0) throw err;
        // A LOCK left by a process that died (or by this one, before a restart in the same process).
        const pid = lockedBy(file);
        if (pid !== null && pid !== process.pid) throw new LogInUseError(`the write-ahead log in ${dir} is held by process ${pid}`);
        rmSync(`${file}.boot`, { force: true });
        rmSync(file, { force: true });
      }
    }
  } catch (err) {
    if (fd !== null) closeQuietly(fd);
    throw err;
  }
  held.set(key, fd);
}

/**
 * Holds the folder `dir` with an flock for as long as the descriptor returned stays open, or returns
 * null where the addon or the file system gives no flock (the LOCK file alone then, as before). The
 * LOCK's pid cannot do this alone: two processes that both found it stale could both remove it and
 * take the log, and a pid means nothing across pid namespaces (two containers on one volume, each
 * node its container's process 1, each took the other's LOCK for its own, so stale). The kernel's
 * lock is one per file whatever the pids, and goes with its process however that ends.
 */
function lockFolder(dir: string): number | null {
  const tried = tryLockFolder(dir);
  if (tried === null || tried.errno === 0) return tried?.fd ?? null;
  closeQuietly(tried.fd);
  if (tried.errno === osConstants.errno.EWOULDBLOCK) throw new LogInUseError(`the write-ahead log in ${dir} is held by ${holderNamed(join(dir, 'LOCK'))} (its folder is locked)`);
  // Only an answer that says this file system has no flock lets the LOCK decide alone. Any other
  // (ENOMEM: the kernel's lock record, checked before any conflict) says nothing of another holder,
  // and took the log from one (review of 2026-12-07).
  if (!NO_FLOCK_HERE.has(tried.errno)) throw new Error(`the write-ahead log's folder ${dir} could not be locked: flock failed with errno ${tried.errno}`);
  return null;
}

/**
 * flock's answers that mean the file system gives none: ENOLCK (no lock manager, as on some NFS
 * mounts), EOPNOTSUPP, EINVAL, and EBADF (NFS emulates flock with fcntl's locks, which want a
 * descriptor open for writing, where this one is a folder's).
 */
const NO_FLOCK_HERE = new Set([osConstants.errno.ENOLCK, osConstants.errno.EOPNOTSUPP, osConstants.errno.EINVAL, osConstants.errno.EBADF]);

/** Whether another process holds the flock of the folder `dir` (false where there is none to hold). */
function lockedByAnother(dir: string): boolean {
  const tried = tryLockFolder(dir);
  if (tried === null) return false;
  // Released with the descriptor, if this probe took it.
  closeQuietly(tried.fd);
  return tried.errno === osConstants.errno.EWOULDBLOCK;
}

/** The folder `dir` opened and flock()ed: its descriptor and flock's errno (0: held); null without the addon's flock. */
function tryLockFolder(dir: string): { readonly fd: number; readonly errno: number } | null {
  const lockFile = native?.lockFile;
  if (lockFile === undefined) return null;
  const fd = openSync(dir, 'r');
  return { fd, errno: lockFile(fd) };
}

/**
 * Creates the LOCK `file` naming this process, or throws EEXIST. Written whole under a name of this
 * process's and then linked, so that a LOCK is never seen empty: one read between its creation and
 * its pid's write read as stale, and was taken over (review of 2026-12-07). Where the folder takes
 * no hard links, created in place as before.
 */
function createLock(file: string): void {
  const tmp = `${file}.${process.pid}.tmp`;
  writeFileSync(tmp, `${process.pid}\n`, { mode: 0o600 });
  try {
    linkSync(tmp, file);
    return;
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code !== 'EPERM' && code !== 'ENOTSUP' && code !== 'EOPNOTSUPP' && code !== 'ENOSYS') throw err;
  } finally {
    rmSync(tmp, { force: true });
  }
  const fd = openSync(file, 'wx', 0o600);
  try {
    writeFileSync(fd, `${process.pid}\n`);
  } finally {
    closeSync(fd);
  }
}

/**
 * Who holds the log in `dir` ("process 1234"; "another process" when its flock is held and its LOCK
 * names no one yet), or null: a folder no node has open may be copied.
 */
export function logHolder(dir: string): string | null {
  if (held.has(realpathSync(dir))) return `process ${process.pid}`;
  const file = join(dir, 'LOCK');
  if (lockedByAnother(dir)) return holderNamed(file);
  const pid = lockedBy(file);
  return pid === null || pid === process.pid ? null : `process ${pid}`;
}

/** The process the LOCK `file` names, read as it is ("another process" for none). */
function holderNamed(file: string): string {
  const pid = namedPid(file);
  return pid === null ? 'another process' : `process ${pid}`;
}

/** The pid the LOCK `file` holds, or null: no LOCK, or one without a pid. */
function namedPid(file: string): number | null {
  let pid: number;
  try {
    pid = Number(readFileSync(file, 'utf8').trim());
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  }
  return Number.isSafeInteger(pid) && pid > 0 ? pid : null;
}

/**
 * The live process of this boot that the LOCK `file` names, or null: no LOCK, or one a process left
 * that died, or one of an earlier boot (a power cut, a reboot), stale whatever process its pid names
 * now. This process's own pid is returned as it is: the caller tells a restart from a holder.
 */
function lockedBy(file: string): number | null {
  const pid = namedPid(file);
  if (pid === null || ofEarlierBoot(file)) return null;
  return pid === process.pid || alive(pid) ? pid : null;
}

function unlock(dir: string): void {
  let key: string;
  try {
    key = realpathSync(dir);
  } catch {
    return; // the folder is gone, and its LOCK with it
  }
  const fd = held.get(key);
  if (fd === undefined) return;
  held.delete(key);
  try {
    rmSync(join(dir, 'LOCK.boot'), { force: true });
    rmSync(join(dir, 'LOCK'), { force: true });
  } finally {
    // The flock last, so that no other process takes the log while its LOCK is still here.
    if (fd !== null) closeQuietly(fd);
  }
}

/** This boot's id (Linux), or null where there is none. */
const BOOT = ((): string | null => {
  try {
    return readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim() || null;
  } catch {
    return null;
  }
})();

/** Whether the LOCK `file` says it was taken in another boot than this one (unknown: no). */
function ofEarlierBoot(file: string): boolean {
  if (BOOT === null) return false;
  try {
    const boot = readFileSync(`${file}.boot`, 'utf8').trim();
    // Empty: one being written by an older build, which wrote it in place (unknown: no).
    return boot !== '' && boot !== BOOT;
  } catch {
    return false;
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}
