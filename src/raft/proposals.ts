import type { ProposalTicket } from './raft.js';
import type { Entry, Index, Term } from './types.js';

export const Outcome = {
  /** The entry at the ticket's index, of the ticket's term, was applied: the proposal took effect. */
  Applied: 'applied',
  /** Another entry was applied at that index: the proposal was overwritten and will never apply. */
  Overwritten: 'overwritten',
} as const;
export type Outcome = (typeof Outcome)[keyof typeof Outcome];

/**
 * Follows proposals from propose() to their end. A proposal accepted at (index, term) either applies
 * at that index with that term, or is overwritten by another entry there (§5.3: the log at an index
 * is decided by the leader that commits it). A change of leader alone decides nothing: the entry may
 * still commit under the next leader, so callers that stop waiting must report the outcome as
 * unknown (and clients retry with an idempotency key), never as failed.
 */
export class ProposalTracker<T> {
  /** Pending proposals by index; invariant: at most one per index. */
  private readonly pending = new Map<Index, { term: Term; waiter: T }>();

  /**
   * Follows `waiters`, one per index from the ticket's first. Returns the waiters it displaced: a
   * proposal of an older term at one of those indexes, whose outcome is then unknown to the caller.
   */
  track(ticket: ProposalTicket, waiters: readonly T[]): T[] {
    const displaced: T[] = [];
    for (let i = 0; i < waiters.length; i++) {
      const index = ticket.firstIndex + i;
      const old = this.pending.get(index);
      if (old !== undefined) displaced.push(old.waiter);
      this.pending.set(index, { term: ticket.term, waiter: waiters[i]! });
    }
    return displaced;
  }

  /** Whether a proposal waits for the entry at (index, term): its result will be answered. */
  awaits(index: Index, term: Term): boolean {
    return this.pending.get(index)?.term === term;
  }

  /** Whether a proposal waits for the entry at `index`, of any term. */
  holds(index: Index): boolean {
    return this.pending.has(index);
  }

  /** Settles the proposals decided by applied entries. */
  settle(applied: readonly Entry[], done: (waiter: T, outcome: Outcome, entry: Entry) => void): void {
    for (const e of applied) {
      const p = this.pending.get(e.index);
      if (p === undefined) continue;
      this.pending.delete(e.index);
      done(p.waiter, p.term === e.term ? Outcome.Applied : Outcome.Overwritten, e);
    }
  }

  /** A snapshot jumped past these indexes: their fate is unknown here. Returns their waiters. */
  dropUpTo(index: Index): T[] {
    const out: T[] = [];
    for (const [i, p] of this.pending) {
      if (i > index) continue;
      this.pending.delete(i);
      out.push(p.waiter);
    }
    return out;
  }

  /** Gives up on every pending proposal (shutdown, or a caller's timeout); outcomes unknown. */
  drain(): T[] {
    const out = [...this.pending.values()].map((p) => p.waiter);
    this.pending.clear();
    return out;
  }

  /** Gives up on the pending proposals whose waiters `which` picks; returns them. */
  drainWhere(which: (waiter: T) => boolean): T[] {
    const out: T[] = [];
    for (const [i, p] of this.pending) {
      if (!which(p.waiter)) continue;
      this.pending.delete(i);
      out.push(p.waiter);
    }
    return out;
  }

  get size(): number {
    return this.pending.size;
  }
}
