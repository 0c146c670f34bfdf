import { invariant } from './errors.js';
import { Raft, type Config, type ProposalTicket } from './raft.js';
import type { Storage } from './storage.js';
import type { Entry, HardState, Index, Message, NodeId, ReadState, Snapshot, Term } from './types.js';
import { Role } from './types.js';
import { entriesSize, isResponse } from './types.js';

export interface SoftState {
  readonly leader: NodeId | null;
  readonly role: Role;
  readonly term: Term;
}

/**
 * What the core asks the caller to do, in this order:
 * 1. Persist `snapshot` (if any), `entries` (truncating any conflicting suffix at entries[0].index)
 *    and `hardState` (if any) in one atomic write, synced to disk when `mustSync`. A snapshot's data
 *    must be durable before the log is cut to it, and reach the state machine before the committed
 *    entries after it are applied (a state machine found behind the log on restart is reloaded from it).
 * 2. Send `messages`. They may depend on step 1 (a granted vote, an append acknowledgement): never
 *    send them before it is durable, except those `sendableBeforePersist` allows (a leader's appends
 *    and heartbeats: pipelined persistence, Raft thesis §10.2.1).
 * 3. Apply `committedEntries` in order; serve `readStates` once applied reaches their index; fail the
 *    reads in `abortedReads` (leadership was lost).
 * 4. Call advance(ready).
 * Between ready() and advance() the caller may keep calling tick(), step() and propose(); it may not
 * call ready() again.
 */
export interface Ready {
  /** Set when leader, role or term changed since the last Ready. */
  readonly softState: SoftState | null;
  /** Set when term, vote or commit changed since the last persisted hard state. */
  readonly hardState: HardState | null;
  readonly entries: readonly Entry[];
  readonly snapshot: Snapshot | null;
  readonly mustSync: boolean;
  /** Whether the hard state's term or vote changed: then every message waits for the sync. */
  readonly termOrVoteChanged: boolean;
  readonly messages: readonly Message[];
  readonly committedEntries: readonly Entry[];
  readonly readStates: readonly ReadState[];
  readonly abortedReads: readonly unknown[];
}

/**
 * The Raft core as the caller drives it: tick, step, propose, then ready/advance; and what the caller
 * may ask of it between turns (term, log position, a transfer under way), as etcd's RawNode has
 * Status() and TransferLeader(). The partition host uses these; `raft` itself is for the core's own
 * tests.
 */
export class RawNode {
  readonly raft: Raft;
  private prevSoft: SoftState;
  private prevHard: HardState;
  private outstanding = false;
  private readonly maxCommittedSizePerReady: number;

  constructor(cfg: Config, storage: Storage) {
    this.raft = new Raft(cfg, storage);
    this.prevSoft = this.softState();
    this.prevHard = storage.initialState().hardState;
    this.maxCommittedSizePerReady = cfg.maxCommittedSizePerReady ?? 4 * 1024 * 1024;
  }

  tick(): void {
    this.raft.tick();
  }

  step(m: Message): void {
    this.raft.step(m);
  }

  propose(datas: readonly Uint8Array[]): ProposalTicket {
    return this.raft.propose(datas);
  }

  readIndex(context: unknown): void {
    this.raft.readIndex(context);
  }

  transferLeadership(to: NodeId): void {
    this.raft.transferLeadership(to);
  }

  campaign(): void {
    this.raft.campaignNow();
  }

  /** Messages to `to` may have been lost (its connection broke with them unacknowledged): see Raft.reportUnreachable. */
  reportUnreachable(to: NodeId): void {
    this.raft.reportUnreachable(to);
  }

  reportSnapshotFailed(to: NodeId): void {
    this.raft.reportSnapshotFailed(to);
  }

  /** The current term. */
  term(): Term {
    return this.raft.term;
  }

  /**
   * Where the log stands: the last index, the highest known committed and applied, and the last one
   * persisted (stable). No allocation beyond the answer: asked every turn.
   */
  position(): { lastIndex: Index; committed: Index; applied: Index; stableLastIndex: Index } {
    const log = this.raft.log;
    return { lastIndex: log.lastIndex(), committed: log.committed, applied: log.applied, stableLastIndex: log.stableLastIndex() };
  }

  /**
   * The entries of the log from `lo` (at least the first index held) to its end, persisted or not:
   * what a leader appended and its state machine has not applied yet.
   */
  entriesFrom(lo: Index): Entry[] {
    const log = this.raft.log;
    return log.slice(Math.max(lo, log.firstIndex()), log.lastIndex() + 1, Number.POSITIVE_INFINITY);
  }

  /** Whether this leader is handing its leadership over (transferLeadership) right now. */
  isTransferring(): boolean {
    return this.raft.leadTransferee !== null;
  }

  /** Stops taking part in elections (no votes, no campaigns) until resumeVoting: a node whose state may be lost. */
  suspendVoting(): void {
    this.raft.suspendVoting();
  }

  resumeVoting(): void {
    this.raft.resumeVoting();
  }

  votingIsSuspended(): boolean {
    return this.raft.votingIsSuspended;
  }

  /** Raises the term to `term` (no vote), answering the hard state the caller must persist before anything else. */
  raiseTerm(term: Term): HardState {
    this.raft.raiseTerm(term);
    return this.raft.hardState();
  }

  softState(): SoftState {
    return { leader: this.raft.lead, role: this.raft.role, term: this.raft.term };
  }

  /**
   * Leader only: how many entries at the end of this leader's log `peer` is not known to hold (its
   * log's end as far as acknowledged); null on a follower or for a node not in the group.
   */
  lagOf(peer: NodeId): number | null {
    if (this.raft.role !== Role.Leader) return null;
    const pr = this.raft.progress.get(peer);
    return pr === undefined ? null : this.raft.log.lastIndex() - pr.match;
  }

  status(): { id: NodeId; soft: SoftState; hard: HardState; applied: Index; lastIndex: Index; match: ReadonlyMap<NodeId, Index> } {
    const match = new Map<NodeId, Index>();
    for (const [id, pr] of this.raft.progress) match.set(id, pr.match);
    return {
      id: this.raft.id,
      soft: this.softState(),
      hard: this.raft.hardState(),
      applied: this.raft.log.applied,
      lastIndex: this.raft.log.lastIndex(),
      match,
    };
  }

  hasReady(): boolean {
    if (this.outstanding) return false;
    this.raft.flush();
    const r = this.raft;
    const soft = this.softState();
    if (!sameSoft(soft, this.prevSoft)) return true;
    if (!sameHard(r.hardState(), this.prevHard)) return true;
    if (r.log.unstable.pending().length > 0) return true;
    if (r.log.unstable.snapshot !== null && !r.log.unstable.snapshotInProgress) return true;
    if (r.msgs.length > 0 || r.readStates.length > 0 || r.reads.hasAborted()) return true;
    return r.log.hasNextCommitted();
  }

  ready(): Ready {
    invariant(!this.outstanding, 'ready() called twice without advance()');
    const r = this.raft;
    r.flush();
    const soft = this.softState();
    const hard = r.hardState();
    const entries = r.log.unstable.pending();
    const unstableSnap = r.log.unstable.snapshot;
    const snapshot = unstableSnap !== null && !r.log.unstable.snapshotInProgress ? unstableSnap : null;
    r.log.unstable.acceptInProgress();
    const rd: Ready = {
      softState: sameSoft(soft, this.prevSoft) ? null : soft,
      hardState: sameHard(hard, this.prevHard) ? null : hard,
      entries,
      snapshot,
      mustSync: entries.length > 0 || snapshot !== null || hard.term !== this.prevHard.term || hard.vote !== this.prevHard.vote,
      termOrVoteChanged: hard.term !== this.prevHard.term || hard.vote !== this.prevHard.vote,
      messages: r.msgs,
      committedEntries: r.log.nextCommitted(this.maxCommittedSizePerReady),
      readStates: r.readStates,
      abortedReads: r.reads.drainAborted(),
    };
    r.msgs = [];
    r.readStates = [];
    if (rd.softState !== null) this.prevSoft = soft;
    this.outstanding = true;
    return rd;
  }

  advance(rd: Ready): void {
    invariant(this.outstanding, 'advance() without ready()');
    this.outstanding = false;
    const r = this.raft;
    if (rd.hardState !== null) this.prevHard = rd.hardState;
    if (rd.snapshot !== null) {
      r.log.unstable.stableSnapTo(rd.snapshot.meta.index);
      if (rd.snapshot.meta.index > r.log.applied) r.log.applied = rd.snapshot.meta.index;
    }
    const last = rd.entries[rd.entries.length - 1];
    if (last !== undefined) r.log.unstable.stableTo(last.index, last.term);
    r.selfPersisted(r.log.stableLastIndex());
    const lastApplied = rd.committedEntries[rd.committedEntries.length - 1];
    if (lastApplied !== undefined) {
      r.log.appliedTo(lastApplied.index);
      r.reduceUncommitted(entriesSize(rd.committedEntries));
    }
  }
}

/**
 * Whether `m`, a message of `rd`, may leave while rd's write is still being synced (pipelined
 * persistence, Raft thesis §10.2.1). A leader's appends and heartbeats may: it counts itself toward a
 * commit only once its own write is durable (advance() is called after the sync), and a follower
 * acknowledges only what it made durable itself. Never a response (an acknowledgement, a granted
 * vote), nor anything of a Ready that installs a snapshot or changes the term or the vote: a vote or
 * term forgotten in a crash would allow two leaders in one term.
 */
export function sendableBeforePersist(rd: Ready, m: Message): boolean {
  return !rd.termOrVoteChanged && rd.snapshot === null && !isResponse(m);
}

function sameSoft(a: SoftState, b: SoftState): boolean {
  return a.leader === b.leader && a.role === b.role && a.term === b.term;
}

function sameHard(a: HardState, b: HardState): boolean {
  return a.term === b.term && a.vote === b.vote && a.commit === b.commit;
}
