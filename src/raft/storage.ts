import { CompactedError, EntryUnavailableError, invariant } from './errors.js';
import type { Entry, HardState, Index, NodeId, Snapshot, Term } from './types.js';
import { emptyHardState } from './types.js';

/**
 * The durable log as the core reads it (the write side belongs to the caller, who persists each
 * Ready). Calls are synchronous: the production storage is the write-ahead log of src/store/wal, which
 * answers from its cache of recent entries or reads its segment files synchronously.
 *
 * Layout: a snapshot covers indexes 1..snapshot.index; entries follow from firstIndex() to
 * lastIndex(). term(firstIndex() - 1) is the snapshot's term and must be answerable.
 */
export interface Storage {
  initialState(): { hardState: HardState; voters: readonly NodeId[] };
  /** Entries [lo, hi), at most maxBytes of payload but always at least one if any. */
  entries(lo: Index, hi: Index, maxBytes: number): Entry[];
  /** Term of entry i, for firstIndex()-1 <= i <= lastIndex(); throws CompactedError below. */
  term(i: Index): Term;
  firstIndex(): Index;
  lastIndex(): Index;
  snapshot(): Snapshot;
}

/** Storage in memory, for tests and the simulator; also the reference for the SQLite one. */
export class MemoryStorage implements Storage {
  private hard: HardState = emptyHardState;
  private snap: Snapshot;
  /** ents[0] is a dummy standing for the snapshot's last entry (index and term only). */
  private ents: Entry[];

  constructor(voters: readonly NodeId[]) {
    this.snap = { meta: { index: 0, term: 0, voters }, data: new Uint8Array(0) };
    this.ents = [{ index: 0, term: 0, kind: 0, data: new Uint8Array(0) }];
  }

  initialState(): { hardState: HardState; voters: readonly NodeId[] } {
    return { hardState: this.hard, voters: this.snap.meta.voters };
  }

  setHardState(hs: HardState): void {
    this.hard = hs;
  }

  hardState(): HardState {
    return this.hard;
  }

  private offset(): Index {
    return this.ents[0]!.index;
  }

  entries(lo: Index, hi: Index, maxBytes: number): Entry[] {
    const off = this.offset();
    if (lo <= off) throw new CompactedError(lo);
    if (hi > this.lastIndex() + 1) throw new EntryUnavailableError(hi - 1);
    const out: Entry[] = [];
    let size = 0;
    for (let i = lo; i < hi; i++) {
      const e = this.ents[i - off]!;
      size += e.data.byteLength;
      if (out.length > 0 && size > maxBytes) break;
      out.push(e);
    }
    return out;
  }

  term(i: Index): Term {
    const off = this.offset();
    if (i < off) throw new CompactedError(i);
    if (i - off >= this.ents.length) throw new EntryUnavailableError(i);
    return this.ents[i - off]!.term;
  }

  firstIndex(): Index {
    return this.offset() + 1;
  }

  lastIndex(): Index {
    return this.offset() + this.ents.length - 1;
  }

  snapshot(): Snapshot {
    return this.snap;
  }

  /** Appends entries, truncating any conflicting suffix first (the caller persisting a Ready). */
  append(entries: readonly Entry[]): void {
    if (entries.length === 0) return;
    const first = entries[0]!.index;
    const off = this.offset();
    invariant(first > off, `append at ${first} below the snapshot at ${off}`);
    invariant(first <= this.lastIndex() + 1, `append at ${first} leaves a gap after ${this.lastIndex()}`);
    // Truncate in place: copying the whole log on every append made long runs quadratic.
    const keep = first - off;
    if (keep < this.ents.length) this.ents.length = keep;
    for (const e of entries) this.ents.push(e);
  }

  /** Replaces the whole log with a snapshot received from the leader. */
  applySnapshot(snap: Snapshot): void {
    invariant(snap.meta.index >= this.snap.meta.index, 'snapshot older than the current one');
    this.snap = snap;
    this.ents = [{ index: snap.meta.index, term: snap.meta.term, kind: 0, data: new Uint8Array(0) }];
  }

  /** Takes a snapshot of the local state machine at `index` (<= applied) and drops entries up to it. */
  createSnapshot(index: Index, data: Uint8Array): Snapshot {
    invariant(index > this.snap.meta.index, 'snapshot not newer than the current one');
    invariant(index <= this.lastIndex(), 'snapshot past the last index');
    this.snap = { meta: { index, term: this.term(index), voters: this.snap.meta.voters }, data };
    this.compact(index);
    return this.snap;
  }

  /** Drops entries up to and including `index`, keeping it as the dummy. */
  compact(index: Index): void {
    const off = this.offset();
    if (index <= off) return;
    invariant(index <= this.lastIndex(), 'compact past the last index');
    this.ents = this.ents.slice(index - off);
    this.ents[0] = { index, term: this.ents[0]!.term, kind: 0, data: new Uint8Array(0) };
  }

  /** A deep-enough copy for the simulator's crash model (entries are immutable). */
  clone(): MemoryStorage {
    const c = new MemoryStorage(this.snap.meta.voters);
    c.hard = this.hard;
    c.snap = this.snap;
    c.ents = this.ents.slice();
    return c;
  }
}
