import { hasQuorum } from './quorum.js';
import type { Index, NodeId, ReadState } from './types.js';

interface PendingRead {
  readonly round: number;
  readonly index: Index;
  readonly context: unknown;
  readonly acks: Set<NodeId>;
}

/**
 * The leader's ReadIndex bookkeeping (thesis §6.4), as etcd's read_only.go: the reads waiting for a
 * heartbeat round to confirm leadership, and the reads given up when leadership was lost. Raft
 * decides when a read may start (leader, an entry of its term committed) and sends the heartbeats.
 */
export class PendingReads {
  /** ReadIndex rounds: each confirms leadership with one heartbeat round (thesis §6.4). */
  private readRound = 0;
  private pendingReads: PendingRead[] = [];
  /** Reads asked for before this leader committed an entry of its own term. */
  private readsAwaitingCommit: unknown[] = [];
  private abortedReads: unknown[] = [];

  constructor(
    private readonly self: NodeId,
    private readonly voters: readonly NodeId[],
  ) {}

  /** The latest round; heartbeats carry it, 0 before the first read. */
  get round(): number {
    return this.readRound;
  }

  /** Holds a read until the leader commits an entry of its own term. */
  awaitCommit(context: unknown): void {
    this.readsAwaitingCommit.push(context);
  }

  hasAwaitingCommit(): boolean {
    return this.readsAwaitingCommit.length > 0;
  }

  /** Removes and returns the reads held by awaitCommit, oldest first. */
  takeAwaitingCommit(): unknown[] {
    const waiting = this.readsAwaitingCommit;
    this.readsAwaitingCommit = [];
    return waiting;
  }

  /** Starts a new round for a read at the commit index `index`; the leader's own ack counts at once. */
  addRequest(index: Index, context: unknown): void {
    this.readRound++;
    this.pendingReads.push({ round: this.readRound, index, context, acks: new Set([this.self]) });
  }

  /** Records that `from` answered a heartbeat of `round`. */
  recvAck(from: NodeId, round: number): void {
    for (const r of this.pendingReads) {
      if (r.round > round) break;
      r.acks.add(from);
    }
  }

  /** Removes and returns the reads a quorum has confirmed, oldest first. */
  advance(): ReadState[] {
    const confirmed: ReadState[] = [];
    // An ack of round n acknowledges every earlier round too, so reads are released in order.
    while (this.pendingReads.length > 0) {
      const r = this.pendingReads[0]!;
      if (!hasQuorum(this.voters, (id) => r.acks.has(id))) break;
      this.pendingReads.shift();
      confirmed.push({ index: r.index, context: r.context });
    }
    return confirmed;
  }

  /** Leadership was lost: every read not yet confirmed, pending or held, is aborted. */
  abortAll(): void {
    for (const r of this.pendingReads) this.abortedReads.push(r.context);
    for (const context of this.readsAwaitingCommit) this.abortedReads.push(context);
    this.pendingReads = [];
    this.readsAwaitingCommit = [];
  }

  hasAborted(): boolean {
    return this.abortedReads.length > 0;
  }

  /** Removes and returns the contexts of the aborted reads, in the order they were aborted. */
  drainAborted(): unknown[] {
    const aborted = this.abortedReads;
    this.abortedReads = [];
    return aborted;
  }
}
