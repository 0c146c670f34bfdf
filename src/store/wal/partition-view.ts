// One partition's log as the Raft core reads it (the `Storage` of src/raft, answering exactly as
// MemoryStorage, the reference), over the shared write-ahead log: its LogState, where each entry lies,
// and the newest entries kept in memory, so that apply and replication to a follower that keeps up
// never read the disk.
import type { Entry, EntryKind, HardState, Index, Storage } from '../../raft/index.js';
import { StorageCorruptError } from '../storage-errors.js';
import { Deque } from './deque.js';
import { KeptBodies } from './kept-bodies.js';
import { LogStateStorage, termAt } from './log-state.js';
import { Locations } from './locations.js';
import { RecordKind, decodeRecord } from './record.js';

/** Bytes of recent entries a partition keeps in memory at most. */
export const CACHE_BYTES = 4 * 1024 * 1024;

/**
 * The bytes of cached entries of every partition of a node together, kept under `limit` by the store
 * (WalStore.trimCaches): one hot partition may keep its CACHE_BYTES, sixteen may not keep sixteen times
 * that. What is evicted is read back from the segments when asked for.
 */
export interface CacheBudget {
  readonly limit: number;
  used: number;
}

/** Reads bytes of a segment (the store keeps the files open). */
export interface SegmentReader {
  read(segment: number, offset: number, bytes: number): Buffer;
  path(segment: number): string;
}

/** What verify() checked. */
export interface VerifyReport {
  readonly partition: number;
  readonly firstIndex: Index;
  readonly lastIndex: Index;
  readonly entries: number;
  /** Entries kept below the log for the bodies they carry, each read back and checked. */
  readonly kept: number;
}

/** A partition's log as the Raft core reads it, plus what its host needs on start. */
export interface PartitionLog extends Storage {
  readonly partition: number;
  hardState(): HardState;
  /** The ref of the latest snapshot's image, or null before the first snapshot. */
  snapshotRef(): string | null;
  /** Reads the whole log of the partition back from disk and checks every record; throws StorageCorruptError. */
  verify(): VerifyReport;
  /**
   * The entry at `index` as it was written, from the Raft log or, below it, from the entries kept for
   * their bodies (WalStore.recordSnapshot's `keep`); null when it was compacted and not kept. Throws
   * EntryUnavailableError past the last index.
   */
  body(index: Index): Entry | null;
  /** The indexes kept below the Raft log for their bodies, ascending. */
  keptBodies(): Index[];
}


export class PartitionView extends LogStateStorage implements PartitionLog {
  readonly locations = new Locations();
  /** Entries below the Raft log kept for their bodies. Invariant: every index kept is <= offset. */
  readonly kept = new KeptBodies();
  /** Entries cacheFirst..cacheFirst+cache.length-1, the newest of the log. Invariant: within offset+1..last. */
  private cache = new Deque<Entry>();
  private cacheFirst = 1;
  private cacheBytes = 0;

  constructor(
    partition: number,
    private readonly reader: SegmentReader,
    private readonly budget: CacheBudget = { limit: Infinity, used: 0 },
  ) {
    super(partition, []);
  }

  /** Bytes of entries this partition keeps in memory. */
  get cachedBytes(): number {
    return this.cacheBytes;
  }

  /** Drops the oldest cached entry (the node's budget is exceeded); false when none is left to drop. */
  evictOldest(): boolean {
    if (this.cache.length === 0) return false;
    this.dropFront();
    return true;
  }

  protected readEntries(lo: Index, hi: Index, maxBytes: number): Entry[] {
    const out: Entry[] = [];
    let size = 0;
    let i = lo;
    while (i < hi) {
      const cached = this.cached(i);
      const run = cached === null ? this.readRun(i, hi) : [cached];
      for (const e of run) {
        size += e.data.byteLength;
        if (out.length > 0 && size > maxBytes) return out;
        out.push(e);
      }
      i += run.length;
    }
    return out;
  }

  verify(): VerifyReport {
    const s = this.state;
    const unknown = this.locations.firstUnknown();
    if (unknown !== null) throw this.corrupt(unknown, 'entry missing from every segment');
    if (this.locations.size !== s.last - s.offset || (s.last > s.offset && this.locations.first !== s.offset + 1)) {
      throw this.corrupt(null, `the index holds ${this.locations.size} entries from ${this.locations.first}, the log (${s.offset}, ${s.last}]`);
    }
    for (let i = s.offset + 1; i <= s.last; ) i += this.readRun(i, s.last + 1).length;
    const keptUnknown = this.kept.firstUnknown();
    if (keptUnknown !== null) throw this.corrupt(keptUnknown, 'kept entry missing from every segment');
    const kept = this.kept.indexes();
    if (kept.length > 0 && kept[kept.length - 1]! > s.offset) throw this.corrupt(kept[kept.length - 1]!, `entry kept for its bodies above the compacted log at ${s.offset}`);
    for (const i of kept) this.body(i);
    return { partition: this.partition, firstIndex: s.offset + 1, lastIndex: s.last, entries: s.last - s.offset, kept: kept.length };
  }

  body(index: Index): Entry | null {
    if (index > this.state.offset) return this.entries(index, index + 1, Infinity)[0]!;
    const place = this.kept.place(index);
    if (place === null) return null;
    if (place.segment === 0) throw this.corrupt(index, 'kept entry missing from every segment');
    const buf = this.reader.read(place.segment, place.offset, place.bytes);
    const r = decodeRecord(buf, 0, place.segment, place.offset);
    if (r === null || (r.kind !== RecordKind.Entry && r.kind !== RecordKind.Copy) || r.partition !== this.partition || r.index !== index) {
      throw new StorageCorruptError({ path: this.reader.path(place.segment), partition: this.partition, index }, `the record at ${place.offset} is not this kept entry's`);
    }
    return { index, term: r.term, kind: r.entryKind as EntryKind, data: r.payload };
  }

  keptBodies(): Index[] {
    return this.kept.indexes();
  }

  // --- what the store does after a write is on disk ---------------------------------------------

  /** Entries appended (after cutting at entries[0].index), at their places in a segment. */
  noteAppended(entries: readonly Entry[], segment: number, offsets: readonly number[], sizes: readonly number[]): void {
    const first = entries[0]!.index;
    this.locations.truncateFrom(first);
    if (this.locations.size === 0) this.locations.reset(first);
    for (let k = 0; k < entries.length; k++) this.locations.push(segment, offsets[k]!, sizes[k]!);
    if (first < this.cacheFirst + this.cache.length) this.dropCacheFrom(first);
    if (this.cache.length === 0) this.cacheFirst = first;
    for (const e of entries) {
      this.cache.push(e);
      this.cacheBytes += e.data.byteLength;
      this.budget.used += e.data.byteLength;
    }
    while (this.cacheBytes > CACHE_BYTES && this.cache.length > 1) this.dropFront();
  }

  /** The log restarted after `index` (a snapshot installed): nothing before it is kept. */
  noteRestarted(index: Index): void {
    this.locations.reset(index + 1);
    this.kept.clear();
    this.budget.used -= this.cacheBytes;
    this.cache.clear();
    this.cacheBytes = 0;
    this.cacheFirst = index + 1;
  }

  /** Entries through `index` dropped, but those at `keep` (ascending, above the kept ones), kept for their bodies. */
  noteCompacted(index: Index, keep: readonly Index[] = []): void {
    const locs = this.locations;
    for (const i of keep) {
      if (locs.has(i)) this.kept.push(i, locs.segment(i), locs.offset(i), locs.bytes(i));
      else this.kept.push(i, 0, 0, 0); // its place comes from a copy further on (replay), or the log is damaged
    }
    locs.dropThrough(index);
    while (this.cache.length > 0 && this.cacheFirst <= index) this.dropFront();
    if (this.cache.length === 0) this.cacheFirst = Math.max(this.cacheFirst, index + 1);
  }

  // --- reading ------------------------------------------------------------------------------------

  private cached(i: Index): Entry | null {
    const k = i - this.cacheFirst;
    return this.cache.at(k) ?? null;
  }

  private dropFront(): void {
    const bytes = this.cache.shift()!.data.byteLength;
    this.cacheBytes -= bytes;
    this.budget.used -= bytes;
    this.cacheFirst++;
  }

  private dropCacheFrom(i: Index): void {
    const keep = Math.max(0, i - this.cacheFirst);
    for (const e of this.cache.truncate(keep)) {
      this.cacheBytes -= e.data.byteLength;
      this.budget.used -= e.data.byteLength;
    }
  }

  /**
   * Entries from `lo` on, read from disk in one read: those lying one after the other in one segment,
   * up to 1 MiB or the first cached one. Each is checked: its record holds, names this partition
   * and index, and has the term the log's index says.
   */
  private readRun(lo: Index, hi: Index): Entry[] {
    const locs = this.locations;
    if (!locs.has(lo) || locs.segment(lo) === 0) throw this.corrupt(lo, 'entry missing from every segment');
    const segment = locs.segment(lo);
    const start = locs.offset(lo);
    let end = start + locs.bytes(lo);
    let j = lo + 1;
    while (j < hi && end - start < 1 << 20 && this.cached(j) === null && locs.segment(j) === segment && locs.offset(j) === end) {
      end += locs.bytes(j);
      j++;
    }
    const buf = this.reader.read(segment, start, end - start);
    const out: Entry[] = [];
    let at = 0;
    for (let i = lo; i < j; i++) {
      const r = decodeRecord(buf, at, segment, start);
      if (r === null || (r.kind !== RecordKind.Entry && r.kind !== RecordKind.Copy) || r.partition !== this.partition || r.index !== i) {
        throw this.corrupt(i, `the record at ${this.reader.path(segment)}:${start + at} is not this entry's`);
      }
      const term = termAt(this.state, i);
      if (r.term !== term) throw this.corrupt(i, `entry has term ${r.term}, the log's index says ${term}`);
      out.push({ index: i, term: r.term, kind: r.entryKind as EntryKind, data: r.payload });
      at += r.size;
    }
    return out;
  }

  private corrupt(index: Index | null, detail: string): StorageCorruptError {
    return new StorageCorruptError({ path: this.reader.path(this.locations.has(index ?? -1) ? this.locations.segment(index!) : 0), partition: this.partition, index }, detail);
  }
}
