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
  /**
   * Pending proposals by index. Mostly one per index; more when a node waits for an entry another
   * leader named (a forwarded write) at an index a leader of another term names too: each is
   * decided by the entry applied there, by its own term.
   */
  private readonly pending = new Map<Index, { term: Term; waiter: T }[]>();
  private count = 0;

  track(ticket: ProposalTicket, waiters: readonly T[]): void {
    for (let i = 0; i < waiters.length; i++) {
      const index = ticket.firstIndex + i;
      const p = { term: ticket.term, waiter: waiters[i]! };
      const list = this.pending.get(index);
      if (list === undefined) this.pending.set(index, [p]);
      else list.push(p);
      this.count++;
    }
  }

  /** Whether a proposal waits for the entry at (index, term): its result will be answered. */
  awaits(index: Index, term: Term): boolean {
    const list = this.pending.get(index);
    if (list === undefined) return false;
    for (const p of list) if (p.term === term) return true;
    return false;
  }

  /** Stops following `waiter` at `index` (its caller gave up); whether it was there. */
  forget(index: Index, waiter: T): boolean {
    const list = this.pending.get(index);
    const at = list?.findIndex((p) => p.waiter === waiter) ?? -1;
    if (at < 0) return false;
    list!.splice(at, 1);
    if (list!.length === 0) this.pending.delete(index);
    this.count--;
    return true;
  }

  /** Settles the proposals decided by applied entries. */
  settle(applied: readonly Entry[], done: (waiter: T, outcome: Outcome, entry: Entry) => void): void {
    for (const e of applied) {
      const list = this.pending.get(e.index);
      if (list === undefined) continue;
      this.pending.delete(e.index);
      this.count -= list.length;
      for (const p of list) done(p.waiter, p.term === e.term ? Outcome.Applied : Outcome.Overwritten, e);
    }
  }

  /** A snapshot jumped past these indexes: their fate is unknown here. Returns their waiters. */
  dropUpTo(index: Index): T[] {
    return this.drainWhere(() => true, index);
  }

  /** Gives up on every pending proposal (shutdown, or a caller's timeout); outcomes unknown. */
  drain(): T[] {
    return this.drainWhere(() => true);
  }

  /** Gives up on the pending proposals (up to index `upTo`) whose waiters `which` picks; returns them. */
  drainWhere(which: (waiter: T) => boolean, upTo = Infinity): T[] {
    const out: T[] = [];
    for (const [i, list] of this.pending) {
      if (i > upTo) continue;
      const kept: typeof list = [];
      for (const p of list) {
        if (which(p.waiter)) out.push(p.waiter);
        else kept.push(p);
      }
      if (kept.length === 0) this.pending.delete(i);
      else this.pending.set(i, kept);
    }
    this.count -= out.length;
    return out;
  }

  get size(): number {
    return this.count;
  }
}
