import { invariant } from './errors.js';
import type { Index } from './types.js';

/**
 * How the leader sends to one follower.
 * - Probe: the follower's log position is unknown; one append per heartbeat interval until one is
 *   accepted, backtracking `next` on each rejection (§5.3).
 * - Replicate: position known; appends are pipelined, optimistically advancing `next`, bounded by
 *   the in-flight window.
 * - Snapshot: the follower needs a snapshot; nothing else is sent until it reports back.
 */
export const ProgressState = { Probe: 'probe', Replicate: 'replicate', Snapshot: 'snapshot' } as const;
export type ProgressState = (typeof ProgressState)[keyof typeof ProgressState];

/** A bounded window of in-flight appends, each remembered by its last index and payload bytes. */
export class Inflights {
  private readonly items: { index: Index; bytes: number }[] = [];
  private totalBytes = 0;

  constructor(
    readonly maxCount: number,
    readonly maxBytes: number,
  ) {
    invariant(maxCount > 0, 'inflight window must hold at least one append');
  }

  add(index: Index, bytes: number): void {
    const last = this.items[this.items.length - 1];
    invariant(last === undefined || index > last.index, 'inflight indexes must grow');
    this.items.push({ index, bytes });
    this.totalBytes += bytes;
  }

  /** Frees every append whose last index is at or below `index` (acknowledged). */
  freeLE(index: Index): void {
    let n = 0;
    while (n < this.items.length && this.items[n]!.index <= index) {
      this.totalBytes -= this.items[n]!.bytes;
      n++;
    }
    if (n > 0) this.items.splice(0, n);
  }

  freeFirst(): void {
    const first = this.items[0];
    if (first !== undefined) this.freeLE(first.index);
  }

  full(): boolean {
    return this.items.length >= this.maxCount || (this.maxBytes > 0 && this.totalBytes >= this.maxBytes);
  }

  count(): number {
    return this.items.length;
  }

  bytes(): number {
    return this.totalBytes;
  }

  reset(): void {
    this.items.length = 0;
    this.totalBytes = 0;
  }
}

/** The leader's view of one follower (Figure 2: nextIndex[], matchIndex[]). */
export class Progress {
  /** Highest index known to be replicated (durably) on the follower. Invariant: match < next. */
  match: Index = 0;
  /** Index of the next entry to send. */
  next: Index;
  state: ProgressState = ProgressState.Probe;
  /** In Probe: an append was sent this heartbeat interval; wait for an answer or the next beat. */
  probeSent = false;
  /** In Snapshot: the index of the snapshot being sent. */
  pendingSnapshot: Index = 0;
  /** In Snapshot: leader ticks since the snapshot was sent (to give up on a lost one). */
  snapshotTicks = 0;
  /** The follower answered a heartbeat while behind: send it an append even if it carries nothing. */
  needsAppend = false;
  /**
   * The commit index last sent to it in an append, capped at `next - 1` when it is probed or
   * replicates again: what it may have learned (a follower commits up to the entries it holds).
   * Only decides whether an empty append is worth sending.
   */
  sentCommit: Index = 0;
  /** Heard from since the last CheckQuorum round (§6.2 of the thesis: leader steps down otherwise). */
  recentActive = false;
  readonly inflights: Inflights;

  constructor(next: Index, maxInflight: number, maxInflightBytes: number) {
    this.next = next;
    this.inflights = new Inflights(maxInflight, maxInflightBytes);
  }

  becomeProbe(): void {
    // From Snapshot, the follower has at least the snapshot: probe from just after it.
    if (this.state === ProgressState.Snapshot) {
      const pending = this.pendingSnapshot;
      this.reset(ProgressState.Probe);
      this.next = Math.max(this.match + 1, pending + 1);
    } else {
      this.reset(ProgressState.Probe);
      this.next = this.match + 1;
    }
    this.sentCommit = Math.min(this.sentCommit, this.next - 1);
  }

  becomeReplicate(): void {
    this.reset(ProgressState.Replicate);
    this.next = this.match + 1;
    this.sentCommit = Math.min(this.sentCommit, this.next - 1);
  }

  becomeSnapshot(snapshotIndex: Index): void {
    this.reset(ProgressState.Snapshot);
    this.pendingSnapshot = snapshotIndex;
  }

  private reset(state: ProgressState): void {
    this.state = state;
    this.probeSent = false;
    this.pendingSnapshot = 0;
    this.snapshotTicks = 0;
    this.inflights.reset();
  }

  /** An acknowledgement up to `n`; returns whether it told us anything new. */
  maybeUpdate(n: Index): boolean {
    let updated = false;
    if (this.match < n) {
      this.match = n;
      updated = true;
      this.probeSent = false;
    }
    this.next = Math.max(this.next, n + 1);
    return updated;
  }

  /** Records an append of entries up to `last` just sent (pipelining in Replicate). */
  sentEntries(last: Index, count: number, bytes: number): void {
    if (this.state === ProgressState.Replicate) {
      if (count > 0) {
        this.next = last + 1;
        this.inflights.add(last, bytes);
      }
    } else if (this.state === ProgressState.Probe) {
      this.probeSent = true;
    }
  }

  /**
   * A rejection of the append whose prevIndex was `rejected`; `hint` is where to retry. Returns false
   * for a stale rejection (of an append we have moved past).
   */
  maybeDecrTo(rejected: Index, hint: Index): boolean {
    if (this.state === ProgressState.Replicate) {
      // Only a rejection at or after what we know matches is news; pipelined ones before are stale.
      if (rejected <= this.match) return false;
      this.becomeProbe();
      this.next = Math.max(this.match + 1, Math.min(hint + 1, rejected));
      return true;
    }
    // In Probe only the answer to the append just sent (prevIndex = next - 1) counts.
    if (this.next - 1 !== rejected) return false;
    this.next = Math.max(Math.min(rejected, hint + 1), this.match + 1);
    this.probeSent = false;
    return true;
  }

  /**
   * Whether an append, even an empty one, would tell the follower of a commit it cannot know yet:
   * `committed` is past what it was sent, and what it was sent did not already cover every entry
   * it was sent. A commit that advanced while the window was full is sent once the window opens.
   */
  canBumpCommit(committed: Index): boolean {
    return committed > this.sentCommit && this.sentCommit < this.next - 1;
  }

  /** Whether sending must wait: a probe already out, the window full, or a snapshot in flight. */
  paused(): boolean {
    switch (this.state) {
      case ProgressState.Probe:
        return this.probeSent;
      case ProgressState.Replicate:
        return this.inflights.full();
      case ProgressState.Snapshot:
        return true;
    }
  }
}
