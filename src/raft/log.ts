import { CompactedError, invariant } from './errors.js';
import type { Storage } from './storage.js';
import type { Entry, Index, Snapshot, Term } from './types.js';

/**
 * The entries not yet durable: a received snapshot and/or a tail of entries, handed to the caller in a
 * Ready and dropped from here once the caller reports them persisted (advance).
 *
 * Invariants: entries[i].index === offset + i; if snapshot is set, offset === snapshot.index + 1;
 * offset <= inProgress <= offset + entries.length (entries below inProgress are being persisted).
 */
class Unstable {
  snapshot: Snapshot | null = null;
  snapshotInProgress = false;
  entries: Entry[] = [];
  offset: Index;
  inProgress: Index;

  constructor(offset: Index) {
    this.offset = offset;
    this.inProgress = offset;
  }

  lastIndex(): Index | undefined {
    if (this.entries.length > 0) return this.offset + this.entries.length - 1;
    if (this.snapshot !== null) return this.snapshot.meta.index;
    return undefined;
  }

  term(i: Index): Term | undefined {
    if (i < this.offset) {
      if (this.snapshot !== null && this.snapshot.meta.index === i) return this.snapshot.meta.term;
      return undefined;
    }
    const e = this.entries[i - this.offset];
    return e?.term;
  }

  truncateAndAppend(ents: readonly Entry[]): void {
    const from = ents[0]!.index;
    if (from === this.offset + this.entries.length) {
      this.entries.push(...ents);
    } else if (from <= this.offset) {
      // Replaces everything unstable; entries below `offset` are rewritten by the caller's storage.
      this.entries = ents.slice();
      this.offset = from;
      this.inProgress = from;
    } else {
      this.entries = this.entries.slice(0, from - this.offset).concat(ents);
      this.inProgress = Math.min(this.inProgress, from);
    }
  }

  restore(s: Snapshot): void {
    this.offset = s.meta.index + 1;
    this.inProgress = this.offset;
    this.entries = [];
    this.snapshot = s;
    this.snapshotInProgress = false;
  }

  /** Entries not yet handed to the caller. */
  pending(): Entry[] {
    return this.entries.slice(this.inProgress - this.offset);
  }

  acceptInProgress(): void {
    if (this.entries.length > 0) this.inProgress = this.offset + this.entries.length;
    if (this.snapshot !== null) this.snapshotInProgress = true;
  }

  /** Entries up to (index, term) are durable: drop them, unless a truncation has replaced them. */
  stableTo(index: Index, term: Term): void {
    const t = this.term(index);
    if (t !== term || index < this.offset) return;
    const n = index + 1 - this.offset;
    this.entries = this.entries.slice(n);
    this.offset = index + 1;
    this.inProgress = Math.max(this.inProgress, this.offset);
  }

  stableSnapTo(index: Index): void {
    if (this.snapshot !== null && this.snapshot.meta.index === index) {
      this.snapshot = null;
      this.snapshotInProgress = false;
    }
  }
}

/**
 * The Raft log: what storage holds durably, followed by the unstable tail.
 *
 * Invariants: applied <= committed <= lastIndex(); committed entries never change (§5.4 Log
 * Matching and Leader Completeness rest on it, and every change is asserted here).
 */
export class RaftLog {
  readonly unstable: Unstable;
  /** Highest index known to be committed. */
  committed: Index;
  /** Highest index handed to the caller to apply and acknowledged by advance(). */
  applied: Index;

  constructor(
    readonly storage: Storage,
    applied: Index,
  ) {
    const first = storage.firstIndex();
    this.unstable = new Unstable(storage.lastIndex() + 1);
    this.committed = first - 1;
    this.applied = first - 1;
    if (applied > this.applied) this.applied = applied;
  }

  firstIndex(): Index {
    if (this.unstable.snapshot !== null) return this.unstable.snapshot.meta.index + 1;
    return this.storage.firstIndex();
  }

  lastIndex(): Index {
    return this.unstable.lastIndex() ?? this.storage.lastIndex();
  }

  /** The last index durable in storage that is still part of this log (0 while a snapshot is pending). */
  stableLastIndex(): Index {
    if (this.unstable.snapshot !== null) return 0;
    return this.unstable.offset - 1;
  }

  lastTerm(): Term {
    const t = this.term(this.lastIndex());
    invariant(t !== undefined, 'the last entry must have a term');
    return t;
  }

  /** Term of entry i, or undefined when i is compacted away or past the end. */
  term(i: Index): Term | undefined {
    const dummy = this.firstIndex() - 1;
    if (i < dummy || i > this.lastIndex()) return undefined;
    const u = this.unstable.term(i);
    if (u !== undefined) return u;
    try {
      return this.storage.term(i);
    } catch (err) {
      if (err instanceof CompactedError) return undefined;
      throw err;
    }
  }

  matchTerm(i: Index, t: Term): boolean {
    return this.term(i) === t;
  }

  /** §5.4.1: a log is at least as up-to-date if its last term is higher, or equal with a longer log. */
  isUpToDate(lastIndex: Index, lastTerm: Term): boolean {
    const myTerm = this.lastTerm();
    return lastTerm > myTerm || (lastTerm === myTerm && lastIndex >= this.lastIndex());
  }

  /**
   * Entries [lo, hi) up to maxBytes of payload (at least one). Throws CompactedError if lo was
   * compacted (the leader must then send a snapshot).
   */
  slice(lo: Index, hi: Index, maxBytes: number): Entry[] {
    invariant(lo <= hi, `slice(${lo}, ${hi}) is inverted`);
    if (lo === hi) return [];
    if (lo < this.firstIndex()) throw new CompactedError(lo);
    invariant(hi <= this.lastIndex() + 1, `slice(${lo}, ${hi}) past the last index ${this.lastIndex()}`);
    const out: Entry[] = [];
    const uOff = this.unstable.offset;
    if (lo < uOff) {
      const stored = this.storage.entries(lo, Math.min(hi, uOff), maxBytes);
      out.push(...stored);
      // Storage stopped early because of the byte limit: do not add unstable entries after a gap.
      if (lo + stored.length < Math.min(hi, uOff)) return out;
    }
    let size = 0;
    for (const e of out) size += e.data.byteLength;
    for (let i = Math.max(lo, uOff); i < hi; i++) {
      const e = this.unstable.entries[i - uOff]!;
      size += e.data.byteLength;
      if (out.length > 0 && size > maxBytes) break;
      out.push(e);
    }
    return out;
  }

  /**
   * The first index where `ents` disagree with the log (a different term), or where they go past its
   * end; 0 if the log already holds them all (§5.3: "if an existing entry conflicts with a new one").
   */
  findConflict(ents: readonly Entry[]): Index {
    for (const e of ents) {
      if (!this.matchTerm(e.index, e.term)) return e.index;
    }
    return 0;
  }

  /**
   * For fast backtracking: the largest index j <= index whose term is at most `term`. Where the term
   * is unknown (compacted), returns j there: the snapshot point matches by definition.
   */
  findConflictByTerm(index: Index, term: Term): Index {
    let j = Math.min(index, this.lastIndex());
    for (; j > 0; j--) {
      const t = this.term(j);
      if (t === undefined || t <= term) return j;
    }
    return 0;
  }

  /**
   * The follower's side of AppendEntries (§5.3). Returns the last index of the new entries, or null if
   * the log does not contain an entry at prevIndex with prevTerm.
   */
  maybeAppend(prevIndex: Index, prevTerm: Term, commit: Index, ents: readonly Entry[]): Index | null {
    if (!this.matchTerm(prevIndex, prevTerm)) return null;
    const lastNew = prevIndex + ents.length;
    const ci = this.findConflict(ents);
    if (ci !== 0) {
      // Only a conflicting or missing entry truncates: an append we already hold changes nothing,
      // which keeps a delayed, shorter append from cutting entries that came after it.
      invariant(ci > this.committed, `entry ${ci} conflicts with the committed prefix (commit ${this.committed})`);
      this.append(ents.slice(ci - (prevIndex + 1)));
    }
    this.commitTo(Math.min(commit, lastNew));
    return lastNew;
  }

  append(ents: readonly Entry[]): Index {
    if (ents.length === 0) return this.lastIndex();
    const first = ents[0]!.index;
    invariant(first > this.committed, `append at ${first} would overwrite committed ${this.committed}`);
    invariant(first <= this.lastIndex() + 1, `append at ${first} leaves a gap after ${this.lastIndex()}`);
    this.unstable.truncateAndAppend(ents);
    return this.lastIndex();
  }

  commitTo(i: Index): void {
    if (i <= this.committed) return;
    invariant(i <= this.lastIndex(), `commit ${i} is past the last index ${this.lastIndex()}`);
    this.committed = i;
  }

  appliedTo(i: Index): void {
    if (i === 0) return;
    invariant(i <= this.committed && i >= this.applied, `applied ${i} outside [${this.applied}, ${this.committed}]`);
    this.applied = i;
  }

  restore(s: Snapshot): void {
    invariant(s.meta.index > this.committed, 'restoring a snapshot that is not ahead of commit');
    this.committed = s.meta.index;
    this.unstable.restore(s);
  }

  /** The snapshot to send to a follower behind the compacted log. */
  snapshot(): Snapshot {
    return this.unstable.snapshot ?? this.storage.snapshot();
  }

  /** Committed entries the caller may apply: after `applied`, persisted or being persisted. */
  nextCommitted(maxBytes: number): Entry[] {
    const [lo, hi] = this.committedRange();
    if (lo >= hi) return [];
    return this.slice(lo, hi, maxBytes);
  }

  /** Whether nextCommitted() would return any entry, without reading one (a Ready is due). */
  hasNextCommitted(): boolean {
    const [lo, hi] = this.committedRange();
    return lo < hi;
  }

  /** The indexes [lo, hi) of nextCommitted(). */
  private committedRange(): [Index, Index] {
    return [Math.max(this.applied + 1, this.firstIndex()), Math.min(this.committed, this.unstable.inProgress - 1) + 1];
  }
}
