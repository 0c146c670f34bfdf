// What the log knows of one partition besides its entries' bytes: hard state, snapshot, bounds and
// the term of every entry. Values are replaced, never changed in place, so a write computes the next
// state first and commits it only once the bytes are on disk.
import { CompactedError, EntryUnavailableError, emptyHardState, type Entry, type HardState, type Index, type NodeId, type Snapshot, type SnapshotMeta, type Storage, type Term } from '../../raft/index.js';

export interface SnapshotRecord {
  readonly meta: SnapshotMeta;
  /** Names the state machine image (a file kept by the broker); Storage.snapshot().data is its UTF-8. */
  readonly ref: string;
}

export interface LogState {
  readonly hard: HardState;
  readonly snap: SnapshotRecord | null;
  /**
   * The last entry removed from the front (or the installed snapshot's point): firstIndex() - 1.
   * Invariant: offset <= snap.meta.index, and offset === 0 while there is no snapshot.
   */
  readonly offset: Index;
  readonly offsetTerm: Term;
  /** Invariant: offset <= last, hard.commit <= last, snap.meta.index <= last. */
  readonly last: Index;
  /**
   * Terms of entries offset+1..last, run-length encoded (terms never decrease along a Raft log, so
   * there are as many runs as terms seen): run k covers runStarts[k] up to runStarts[k+1]-1 (or last).
   */
  readonly runStarts: readonly Index[];
  readonly runTerms: readonly Term[];
}

export const emptyLogState: LogState = { hard: emptyHardState, snap: null, offset: 0, offsetTerm: 0, last: 0, runStarts: [], runTerms: [] };

/** Term of entry i; the caller guarantees offset <= i <= last. */
export function termAt(s: LogState, i: Index): Term {
  if (i === s.offset) return s.offsetTerm;
  let lo = 0;
  let hi = s.runStarts.length - 1;
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1;
    if (s.runStarts[mid]! <= i) lo = mid;
    else hi = mid - 1;
  }
  return s.runTerms[lo]!;
}

/** Drops entries from..last. */
export function truncated(s: LogState, from: Index): LogState {
  let k = s.runStarts.length;
  while (k > 0 && s.runStarts[k - 1]! >= from) k--;
  return { ...s, last: from - 1, runStarts: s.runStarts.slice(0, k), runTerms: s.runTerms.slice(0, k) };
}

/** Adds entries right after last (the caller has checked contiguity and truncated). */
export function appended(s: LogState, entries: readonly { readonly index: Index; readonly term: Term }[]): LogState {
  if (entries.length === 0) return s;
  const starts = s.runStarts.slice();
  const terms = s.runTerms.slice();
  for (const e of entries) {
    if (terms.length === 0 || terms[terms.length - 1] !== e.term) {
      starts.push(e.index);
      terms.push(e.term);
    }
  }
  return { ...s, last: entries[entries.length - 1]!.index, runStarts: starts, runTerms: terms };
}

/** Drops entries offset+1..index, keeping index as the new offset. */
export function compacted(s: LogState, index: Index): LogState {
  const offsetTerm = termAt(s, index);
  let k = 0;
  // Skip the runs that end at or before index.
  while (k < s.runStarts.length && (s.runStarts[k + 1] ?? s.last + 1) - 1 <= index) k++;
  const starts = s.runStarts.slice(k);
  const terms = s.runTerms.slice(k);
  if (starts.length > 0) starts[0] = Math.max(starts[0]!, index + 1);
  return { ...s, offset: index, offsetTerm, runStarts: starts, runTerms: terms };
}

/** The log restarted after a snapshot received from the leader: nothing before or after it is kept. */
export function restartedAt(s: LogState, snap: SnapshotRecord): LogState {
  return { ...s, snap, offset: snap.meta.index, offsetTerm: snap.meta.term, last: snap.meta.index, runStarts: [], runTerms: [] };
}

export function sameHard(a: HardState, b: HardState): boolean {
  return a.term === b.term && a.vote === b.vote && a.commit === b.commit;
}

export function sameVoters(a: readonly NodeId[], b: readonly NodeId[]): boolean {
  return a.length === b.length && a.every((v, i) => v === b[i]);
}

/** Whether two states describe the same log (what a checkpoint must agree with). */
export function sameLogState(a: LogState, b: LogState): boolean {
  return (
    sameHard(a.hard, b.hard) &&
    a.offset === b.offset &&
    a.offsetTerm === b.offsetTerm &&
    a.last === b.last &&
    a.runStarts.length === b.runStarts.length &&
    a.runStarts.every((x, i) => x === b.runStarts[i] && a.runTerms[i] === b.runTerms[i]) &&
    (a.snap?.meta.index ?? 0) === (b.snap?.meta.index ?? 0) &&
    (a.snap?.meta.term ?? 0) === (b.snap?.meta.term ?? 0) &&
    a.snap?.ref === b.snap?.ref
  );
}

const utf8 = new TextEncoder();

/**
 * The core's Storage over a LogState, answering exactly as MemoryStorage (the reference); a store
 * adds how entries are read.
 */
export abstract class LogStateStorage implements Storage {
  /** Replaced, never changed in place, once a write is done. */
  state: LogState = emptyLogState;

  constructor(
    readonly partition: number,
    /** The group's voters before its first snapshot (MemoryStorage's constructor argument). */
    public voters: readonly NodeId[],
  ) {}

  /** Entries [lo, hi) with offset < lo <= hi <= last + 1, at most maxBytes but at least one. */
  protected abstract readEntries(lo: Index, hi: Index, maxBytes: number): Entry[];

  initialState(): { hardState: HardState; voters: readonly NodeId[] } {
    return { hardState: this.state.hard, voters: this.state.snap?.meta.voters ?? this.voters };
  }

  hardState(): HardState {
    return this.state.hard;
  }

  entries(lo: Index, hi: Index, maxBytes: number): Entry[] {
    const s = this.state;
    if (lo <= s.offset) throw new CompactedError(lo);
    if (hi > s.last + 1) throw new EntryUnavailableError(hi - 1);
    if (hi <= lo) return [];
    return this.readEntries(lo, hi, maxBytes);
  }

  term(i: Index): Term {
    const s = this.state;
    if (i < s.offset) throw new CompactedError(i);
    if (i > s.last) throw new EntryUnavailableError(i);
    return termAt(s, i);
  }

  firstIndex(): Index {
    return this.state.offset + 1;
  }

  lastIndex(): Index {
    return this.state.last;
  }

  snapshot(): Snapshot {
    const snap = this.state.snap;
    if (snap === null) return { meta: { index: 0, term: 0, voters: this.voters }, data: new Uint8Array(0) };
    return { meta: snap.meta, data: utf8.encode(snap.ref) };
  }

  snapshotRef(): string | null {
    return this.state.snap?.ref ?? null;
  }
}
