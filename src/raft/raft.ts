import { DropReason, ProposalDroppedError, RaftError, invariant } from './errors.js';
import { RaftLog } from './log.js';
import { Progress, ProgressState } from './progress.js';
import { VoteResult, committedIndex, hasQuorum, tally } from './quorum.js';
import { PendingReads } from './pending-reads.js';
import type { Storage } from './storage.js';
import {
  EntryKind,
  MessageType,
  Role,
  entriesSize,
  type AppendRequest,
  type AppendResponse,
  type Entry,
  type Heartbeat,
  type HeartbeatResponse,
  type Index,
  type Message,
  type NodeId,
  type ReadState,
  type Snapshot,
  type SnapshotRequest,
  type Term,
  type VoteRequest,
  type VoteResponse,
} from './types.js';

export interface Config {
  readonly id: NodeId;
  /** The voters of a new group; ignored when storage already knows them (from a snapshot). */
  readonly voters?: readonly NodeId[];
  /** Ticks without hearing from a leader before campaigning; the actual timeout is random in [n, 2n). */
  readonly electionTick: number;
  /** Ticks between a leader's heartbeats. Must be below electionTick. */
  readonly heartbeatTick: number;
  /** Injected randomness: an integer in [0, n). The core never touches Math.random. */
  readonly random: (n: number) => number;
  /** Index the state machine has applied (durably); entries after it are handed out again. */
  readonly applied?: Index;
  /** Payload bytes per append message (at least one entry is always sent). */
  readonly maxSizePerMsg?: number;
  /** Appends in flight to one follower before the leader waits (pipelining window). */
  readonly maxInflightMsgs?: number;
  /** Payload bytes in flight to one follower before the leader waits; 0 for no limit. */
  readonly maxInflightBytes?: number;
  /** Uncommitted payload bytes the leader accepts before refusing proposals; 0 for no limit. */
  readonly maxUncommittedBytes?: number;
  /** Payload bytes of committed entries handed out in one Ready. */
  readonly maxCommittedSizePerReady?: number;
  /** Thesis §9.6: ask for votes without raising the term first, so a rejoining node disrupts nobody. */
  readonly preVote?: boolean;
  /** Thesis §6.2: a leader steps down when it has not heard from a majority for an election timeout. */
  readonly checkQuorum?: boolean;
}

export interface ProposalTicket {
  readonly term: Term;
  readonly firstIndex: Index;
  readonly lastIndex: Index;
}

const CampaignType = { PreElection: 'pre-election', Election: 'election', PreTransfer: 'pre-transfer', Transfer: 'transfer' } as const;
type CampaignType = (typeof CampaignType)[keyof typeof CampaignType];

/**
 * The Raft state machine of one replica (§5 of the Raft paper, with PreVote, CheckQuorum, ReadIndex
 * and leadership transfer from Ongaro's thesis). Pure: driven by tick() and step(); what it wants
 * done comes out through RawNode's Ready.
 */
export class Raft {
  readonly id: NodeId;
  readonly voters: readonly NodeId[];
  readonly log: RaftLog;

  /** Latest term seen (Figure 2: currentTerm). Never decreases. */
  term: Term = 0;
  /** Candidate voted for in `term` (Figure 2: votedFor). */
  vote: NodeId | null = null;
  role: Role = Role.Follower;
  /** The leader of `term` as far as this node knows. */
  lead: NodeId | null = null;

  /** Messages to send once the Ready that carries them has been persisted. */
  msgs: Message[] = [];
  readStates: ReadState[] = [];

  /** Leader only: every voter's progress, this node's included (its match = its durable last index). */
  readonly progress = new Map<NodeId, Progress>();
  /** Candidate only: the answers received in this campaign. */
  private readonly votes = new Map<NodeId, boolean>();

  private electionElapsed = 0;
  private heartbeatElapsed = 0;
  private randomizedElectionTimeout = 0;
  /** PreCandidate only: whether the pre-campaign was asked for by the leader (TimeoutNow). */
  private preTransfer = false;
  /**
   * PreCandidate with preTransfer only: ticks since the pre-campaign began. The leader's appends keep
   * the election timer at 0 meanwhile, so this alone ends a pre-campaign whose answers never came.
   */
  private preTransferTicks = 0;
  /** Leader only: the target of a leadership transfer in progress. */
  leadTransferee: NodeId | null = null;
  /** See suspendVoting. */
  private votingSuspended = false;
  /**
   * Follower: the last index up to which this log is known to hold what this term's leader holds (an
   * append of that leader matched up to it). A heartbeat commits no further than this or the commit
   * index: its commit is the leader's match for this node, which describes the log this node held when
   * it last answered an append, not necessarily the one it holds now (a folder restored from a backup,
   * whose entries past its commit index may be another leader's, never committed).
   */
  private matched: Index = 0;
  /** Leader only: a change of commit index followers have not been told of yet. */
  private commitUnannounced = false;
  /** Leader only: payload bytes appended but not yet applied (back-pressure). */
  private uncommittedBytes = 0;

  /** ReadIndex (thesis §6.4): reads waiting for a heartbeat round (leader only), and those aborted since the last Ready. */
  readonly reads: PendingReads;

  readonly electionTick: number;
  readonly heartbeatTick: number;
  private readonly random: (n: number) => number;
  readonly maxSizePerMsg: number;
  private readonly maxInflightMsgs: number;
  private readonly maxInflightBytes: number;
  private readonly maxUncommittedBytes: number;
  readonly preVote: boolean;
  readonly checkQuorum: boolean;

  constructor(cfg: Config, storage: Storage) {
    invariant(cfg.heartbeatTick > 0 && cfg.electionTick > cfg.heartbeatTick, 'electionTick must exceed heartbeatTick');
    this.id = cfg.id;
    this.random = cfg.random;
    this.electionTick = cfg.electionTick;
    this.heartbeatTick = cfg.heartbeatTick;
    this.maxSizePerMsg = cfg.maxSizePerMsg ?? 1024 * 1024;
    this.maxInflightMsgs = cfg.maxInflightMsgs ?? 256;
    this.maxInflightBytes = cfg.maxInflightBytes ?? 0;
    this.maxUncommittedBytes = cfg.maxUncommittedBytes ?? 0;
    this.preVote = cfg.preVote ?? true;
    this.checkQuorum = cfg.checkQuorum ?? true;

    const { hardState, voters } = storage.initialState();
    this.voters = voters.length > 0 ? [...voters] : [...(cfg.voters ?? [])];
    invariant(this.voters.length > 0, 'a group needs voters');
    invariant(new Set(this.voters).size === this.voters.length, 'voters must be distinct');
    this.reads = new PendingReads(this.id, this.voters);

    this.log = new RaftLog(storage, cfg.applied ?? 0);
    invariant(
      hardState.commit <= this.log.lastIndex(),
      `durable commit ${hardState.commit} is past the durable log's end ${this.log.lastIndex()}: the log lost entries`,
    );
    invariant(this.log.applied <= this.log.lastIndex(), 'applied past the end of the log');
    this.term = hardState.term;
    this.vote = hardState.vote;
    // Whatever the state machine applied was committed, even if the lazily persisted commit lags.
    this.log.commitTo(Math.max(hardState.commit, this.log.applied));
    this.becomeFollower(this.term, null);
  }

  // ---- queries ----

  promotable(): boolean {
    return !this.votingSuspended && this.voters.includes(this.id);
  }

  /**
   * For a node whose stored state may be older than the cluster (an empty disk, or one restored from
   * a backup): it may have voted, and acknowledged entries, in terms it no longer remembers. Until it
   * holds everything a leader had committed, it grants no vote and never campaigns, so a leader is
   * elected by the other voters, whose logs hold every committed entry, and this node catches up from
   * it. An append that brings its log up to the leader's commit index ends the suspension, and the
   * node's vote in that term goes to that leader (it may have voted in this term before its disk was
   * lost, so it must not vote for anyone else in it). Terms it may have voted in before come from its
   * peers first (raiseTerm): it never acknowledges a leader of an older term.
   */
  suspendVoting(): void {
    this.votingSuspended = true;
  }

  /** Ends the suspension without catching up: only for a cluster every member of which is new. */
  resumeVoting(): void {
    this.votingSuspended = false;
  }

  get votingIsSuspended(): boolean {
    return this.votingSuspended;
  }

  /**
   * Moves to `term` as a follower (no effect at or below the current term): for a node that lost its
   * state, the highest term its peers hold, so that it never acknowledges a leader of an older term.
   */
  raiseTerm(term: Term): void {
    if (term > this.term) this.becomeFollower(term, null);
  }

  hardState(): { term: Term; vote: NodeId | null; commit: Index } {
    return { term: this.term, vote: this.vote, commit: this.log.committed };
  }

  private committedInCurrentTerm(): boolean {
    return this.log.term(this.log.committed) === this.term;
  }

  // ---- role changes ----

  private reset(term: Term): void {
    if (this.term !== term) {
      this.term = term;
      this.vote = null;
      this.matched = 0;
    }
    this.lead = null;
    this.electionElapsed = 0;
    this.heartbeatElapsed = 0;
    this.randomizedElectionTimeout = this.electionTick + this.random(this.electionTick);
    this.leadTransferee = null;
    this.votes.clear();
    this.progress.clear();
    this.uncommittedBytes = 0;
    this.commitUnannounced = false;
    this.reads.abortAll();
  }

  becomeFollower(term: Term, lead: NodeId | null): void {
    this.reset(term);
    this.role = Role.Follower;
    this.lead = lead;
  }

  /** `lead`: the leader that asked for the transfer (TimeoutNow), which leads until it is won. */
  private becomePreCandidate(lead: NodeId | null): void {
    invariant(this.role !== Role.Leader, 'a leader cannot become a pre-candidate');
    // PreVote changes neither term nor vote (thesis §9.6): a node that cannot win disturbs no one.
    this.votes.clear();
    this.lead = lead;
    this.role = Role.PreCandidate;
  }

  private becomeCandidate(): void {
    invariant(this.role !== Role.Leader, 'a leader cannot become a candidate');
    this.reset(this.term + 1);
    this.vote = this.id;
    this.role = Role.Candidate;
  }

  private becomeLeader(): void {
    invariant(this.role === Role.Candidate, 'only a candidate becomes leader');
    this.reset(this.term);
    this.role = Role.Leader;
    this.lead = this.id;
    const last = this.log.lastIndex();
    for (const v of this.voters) {
      const pr = new Progress(last + 1, this.maxInflightMsgs, this.maxInflightBytes);
      // Our own match is what is durable here, not what is merely appended (§5.3 with a parallel write).
      if (v === this.id) pr.match = this.log.stableLastIndex();
      pr.recentActive = true;
      this.progress.set(v, pr);
    }
    // §5.4.2 and §8: a no-op of the new term lets the leader commit what earlier terms left behind.
    this.appendEntries([{ term: this.term, index: last + 1, kind: EntryKind.Noop, data: new Uint8Array(0) }]);
  }

  // ---- time ----

  tick(): void {
    if (this.role === Role.Leader) this.tickHeartbeat();
    else this.tickElection();
  }

  private tickElection(): void {
    // A transfer's pre-vote undecided after an election timeout (answers lost with a stream, a voter
    // down): its leader has abandoned the transfer by now (tickHeartbeat), so follow it again rather
    // than wait for answers no one will send again (review of 2026-12-07).
    if (this.role === Role.PreCandidate && this.preTransfer && ++this.preTransferTicks >= this.electionTick) {
      // The election timer goes on from where the leader's last append left it: a leader that died
      // meanwhile is not waited for a second time.
      const elapsed = this.electionElapsed;
      this.becomeFollower(this.term, this.lead);
      this.electionElapsed = elapsed;
      return;
    }
    this.electionElapsed++;
    if (this.promotable() && this.electionElapsed >= this.randomizedElectionTimeout) {
      this.electionElapsed = 0;
      this.hup(this.preVote ? CampaignType.PreElection : CampaignType.Election);
    }
  }

  private tickHeartbeat(): void {
    this.heartbeatElapsed++;
    this.electionElapsed++;
    if (this.electionElapsed >= this.electionTick) {
      this.electionElapsed = 0;
      if (this.checkQuorum && !this.quorumActive()) {
        this.becomeFollower(this.term, null);
        return;
      }
      // A transfer that did not finish within an election timeout is abandoned (thesis §3.10).
      this.leadTransferee = null;
    }
    for (const pr of this.progress.values()) {
      if (pr.state === ProgressState.Snapshot) {
        pr.snapshotTicks++;
        // A snapshot lost on the way would pause the follower forever: probe again after a while.
        if (pr.snapshotTicks >= this.electionTick * 2) pr.becomeProbe();
      }
    }
    if (this.heartbeatElapsed >= this.heartbeatTick) {
      this.heartbeatElapsed = 0;
      this.broadcastHeartbeat();
    }
  }

  /** CheckQuorum: whether a majority has been heard from since the last check; resets the marks. */
  private quorumActive(): boolean {
    const active = hasQuorum(this.voters, (id) => id === this.id || this.progress.get(id)?.recentActive === true);
    for (const [id, pr] of this.progress) pr.recentActive = id === this.id;
    return active;
  }

  // ---- elections (§5.2) ----

  /** Start an election now, as if the election timeout had passed. */
  campaignNow(): void {
    if (this.role === Role.Leader) return;
    this.hup(this.preVote ? CampaignType.PreElection : CampaignType.Election);
  }

  private hup(t: CampaignType): void {
    if (this.role === Role.Leader || !this.promotable()) return;
    // Entries we have committed but not applied could be a snapshot we have not installed yet; that
    // is fine for elections: the log, not the state machine, decides who may lead.
    this.campaign(t);
  }

  private campaign(t: CampaignType): void {
    let voteTerm: Term;
    let type: typeof MessageType.Vote | typeof MessageType.PreVote;
    if (t === CampaignType.PreElection || t === CampaignType.PreTransfer) {
      this.becomePreCandidate(t === CampaignType.PreTransfer ? this.lead : null);
      this.preTransfer = t === CampaignType.PreTransfer;
      this.preTransferTicks = 0;
      voteTerm = this.term + 1;
      type = MessageType.PreVote;
    } else {
      this.becomeCandidate();
      voteTerm = this.term;
      type = MessageType.Vote;
    }
    this.votes.set(this.id, true);
    if (this.tallyAndAct()) return;
    const lastLogIndex = this.log.lastIndex();
    const lastLogTerm = this.log.lastTerm();
    for (const v of this.voters) {
      if (v === this.id) continue;
      const m: VoteRequest = {
        type,
        from: this.id,
        to: v,
        term: voteTerm,
        lastLogIndex,
        lastLogTerm,
        transfer: t === CampaignType.Transfer || t === CampaignType.PreTransfer,
      };
      this.msgs.push(m);
    }
  }

  /** Acts on the current tally; returns true when the campaign ended. */
  private tallyAndAct(): boolean {
    const r = tally(this.voters, this.votes);
    if (r === VoteResult.Won) {
      if (this.role === Role.PreCandidate) this.campaign(this.preTransfer ? CampaignType.Transfer : CampaignType.Election);
      else this.becomeLeader();
      return true;
    }
    if (r === VoteResult.Lost) {
      this.becomeFollower(this.term, null);
      return true;
    }
    return false;
  }

  // ---- messages ----

  step(m: Message): void {
    invariant(m.to === this.id, `message for ${m.to} stepped into ${this.id}`);
    if (!this.voters.includes(m.from)) return;
    // §5.1: settle terms first.
    if (m.term > this.term) {
      if (m.type === MessageType.Vote || m.type === MessageType.PreVote) {
        // Thesis §4.2.3: while a follower hears from a live leader, it ignores campaigns (unless the
        // leader itself asked for one by TimeoutNow), so a flapping node cannot depose it.
        const inLease = this.checkQuorum && this.lead !== null && this.electionElapsed < this.electionTick;
        if (inLease && !m.transfer) return;
      }
      if (m.type === MessageType.PreVote) {
        // A pre-vote does not move our term.
      } else if (m.type === MessageType.PreVoteResp && !m.reject) {
        // A granted pre-vote echoes the term the candidate would campaign in.
      } else if (m.type === MessageType.App || m.type === MessageType.Heartbeat || m.type === MessageType.Snap) {
        this.becomeFollower(m.term, m.from);
      } else if (m.type === MessageType.Vote) {
        // Figure 2: the election timer restarts on hearing from a leader or granting a vote, not on
        // merely seeing a higher term. Restarting it here would let candidates that cannot win (their
        // logs are behind) keep the one node that could win from ever timing out.
        const elapsed = this.electionElapsed;
        this.becomeFollower(m.term, null);
        this.electionElapsed = elapsed;
      } else {
        this.becomeFollower(m.term, null);
      }
    } else if (m.term < this.term) {
      if ((this.checkQuorum || this.preVote) && (m.type === MessageType.App || m.type === MessageType.Heartbeat)) {
        // A stale leader (or one that was cut off while we moved on) learns our term from this answer
        // and steps down; without it a node isolated with a higher term could never rejoin.
        this.send({ type: MessageType.AppResp, to: m.from, term: this.term, index: 0, reject: true, hintIndex: 0, hintTerm: 0 });
      } else if (m.type === MessageType.PreVote) {
        this.send({ type: MessageType.PreVoteResp, to: m.from, term: this.term, reject: true });
      }
      return;
    }

    if (m.type === MessageType.Vote || m.type === MessageType.PreVote) {
      this.handleVoteRequest(m);
      return;
    }
    switch (this.role) {
      case Role.Leader:
        this.stepLeader(m);
        break;
      case Role.Candidate:
      case Role.PreCandidate:
        this.stepCandidate(m);
        break;
      case Role.Follower:
        this.stepFollower(m);
        break;
    }
  }

  private handleVoteRequest(m: VoteRequest): void {
    // §5.2: one vote per term, first come first served; a pre-vote for a future term binds nothing.
    const canVote =
      !this.votingSuspended &&
      (this.vote === m.from ||
      (this.vote === null && this.lead === null) ||
      (m.type === MessageType.PreVote && m.term > this.term));
    // §5.4.1: only for a candidate whose log is at least as up-to-date as ours.
    if (canVote && this.log.isUpToDate(m.lastLogIndex, m.lastLogTerm)) {
      const respType = m.type === MessageType.Vote ? MessageType.VoteResp : MessageType.PreVoteResp;
      this.send({ type: respType, to: m.from, term: m.term, reject: false });
      if (m.type === MessageType.Vote) {
        this.electionElapsed = 0;
        this.vote = m.from;
      }
      return;
    }
    const respType = m.type === MessageType.Vote ? MessageType.VoteResp : MessageType.PreVoteResp;
    this.send({ type: respType, to: m.from, term: this.term, reject: true });
  }

  private stepFollower(m: Message): void {
    switch (m.type) {
      case MessageType.App:
        this.electionElapsed = 0;
        this.lead = m.from;
        this.handleAppend(m);
        return;
      case MessageType.Heartbeat:
        this.electionElapsed = 0;
        this.lead = m.from;
        this.handleHeartbeat(m);
        return;
      case MessageType.Snap:
        this.electionElapsed = 0;
        this.lead = m.from;
        this.handleSnapshot(m);
        return;
      case MessageType.TimeoutNow:
        // Thesis §3.10: the leader asked us to take over; campaign at once. With PreVote, a pre-vote
        // first, carrying the transfer so that leases give way to it too: a TimeoutNow that arrives
        // after its transfer was abandoned, at a node the leader has since written past, made every
        // node set its lease aside, the leader stepped down, and no one could win for an election
        // timeout (review of 2026-12-07). A pre-vote it cannot win moves no term.
        if (this.promotable()) this.campaign(this.preVote ? CampaignType.PreTransfer : CampaignType.Transfer);
        return;
      default:
        return;
    }
  }

  private stepCandidate(m: Message): void {
    if (this.role === Role.PreCandidate && this.preTransfer && (m.type === MessageType.App || m.type === MessageType.Heartbeat)) {
      // The leader that asked for the transfer goes on sending while its pre-vote is out (the commit
      // of the entries it just caught up on, heartbeats): as a follower would, without ending the
      // pre-campaign, which ends when the votes are counted. Ended here, most transfers to a node
      // just caught up ended with it. It is still the leader, and this node says so (the router
      // forwards to it).
      this.electionElapsed = 0;
      this.lead = m.from;
      if (m.type === MessageType.App) this.handleAppend(m);
      else this.handleHeartbeat(m);
      return;
    }
    switch (m.type) {
      case MessageType.App:
        // §5.2: a leader of our term exists; return to follower.
        this.becomeFollower(m.term, m.from);
        this.handleAppend(m);
        return;
      case MessageType.Heartbeat:
        this.becomeFollower(m.term, m.from);
        this.handleHeartbeat(m);
        return;
      case MessageType.Snap:
        this.becomeFollower(m.term, m.from);
        this.handleSnapshot(m);
        return;
      case MessageType.TimeoutNow:
        // The leader asks again (a transfer retried while the last pre-vote is undecided): ask
        // every voter again, as a follower would.
        if (this.role === Role.PreCandidate && this.promotable()) this.campaign(this.preVote ? CampaignType.PreTransfer : CampaignType.Transfer);
        return;
      case MessageType.VoteResp:
      case MessageType.PreVoteResp: {
        const expected = this.role === Role.PreCandidate ? MessageType.PreVoteResp : MessageType.VoteResp;
        if (m.type !== expected) return;
        // A grant echoes the term asked for: one of an earlier pre-campaign (asked for this term, now
        // current) is not a vote in this one, which asks for the next (review of 2026-12-07).
        if (m.type === MessageType.PreVoteResp && !m.reject && m.term !== this.term + 1) return;
        if (!this.votes.has(m.from)) this.votes.set(m.from, !m.reject);
        this.tallyAndAct();
        return;
      }
      default:
        return;
    }
  }

  private stepLeader(m: Message): void {
    switch (m.type) {
      case MessageType.App:
      case MessageType.Heartbeat:
      case MessageType.Snap:
        invariant(false, `two leaders in term ${this.term}: ${m.from} and ${this.id}`);
        return;
      case MessageType.AppResp:
        this.handleAppendResponse(m);
        return;
      case MessageType.HeartbeatResp:
        this.handleHeartbeatResponse(m);
        return;
      default:
        return;
    }
  }

  // ---- follower side of replication (§5.3) ----

  private handleAppend(m: AppendRequest): void {
    if (m.prevIndex < this.log.committed) {
      // Everything up to commit matches the leader already (§5.4.3); say so and let it move on.
      this.send({ type: MessageType.AppResp, to: m.from, term: this.term, index: this.log.committed, reject: false, hintIndex: 0, hintTerm: 0 });
      return;
    }
    const lastNew = this.log.maybeAppend(m.prevIndex, m.prevTerm, m.commit, m.entries);
    if (lastNew !== null) {
      this.matched = Math.max(this.matched, lastNew);
      // Holding all the leader had committed, a node that forgot its votes may vote again. Only once
      // the leader has committed an entry of its own term: until then its commit index may be short of
      // what its predecessors committed (§5.4.2), with this node's lost acknowledgement among them.
      if (this.votingSuspended && m.commit <= lastNew && this.log.term(m.commit) === m.term) {
        this.votingSuspended = false;
        // This term's vote, if it was ever cast, went to the leader it elected: say so, durably.
        if (this.vote === null) this.vote = m.from;
      }
      this.send({ type: MessageType.AppResp, to: m.from, term: this.term, index: lastNew, reject: false, hintIndex: 0, hintTerm: 0 });
      return;
    }
    // Consistency check failed. Point the leader at the last entry that can possibly match, so a
    // whole term of conflicting entries is skipped in one round trip.
    const hintIndex = this.log.findConflictByTerm(Math.min(m.prevIndex, this.log.lastIndex()), m.prevTerm);
    const hintTerm = this.log.term(hintIndex) ?? 0;
    this.send({ type: MessageType.AppResp, to: m.from, term: this.term, index: m.prevIndex, reject: true, hintIndex, hintTerm });
  }

  private handleHeartbeat(m: Heartbeat): void {
    // The leader sends min(commit, its match for us). We commit only what we know we share with it:
    // its match may be of a log we no longer hold (lost, rolled back, or a restored backup's, whose
    // entries past its commit index may be a deposed leader's; review of 2026-12-07).
    const known = Math.min(Math.max(this.log.committed, this.matched), this.log.lastIndex());
    this.log.commitTo(Math.min(m.commit, known));
    // More than we can vouch for: the leader checks our log from there (a probe), as for a follower
    // that is behind. Also after this process restarted, before the leader's next append matched.
    this.send({ type: MessageType.HeartbeatResp, to: m.from, term: this.term, readRound: m.readRound, ...(m.commit > known ? { lastIndex: known } : {}) });
  }

  private handleSnapshot(m: SnapshotRequest): void {
    if (this.restore(m.snapshot)) {
      this.send({ type: MessageType.AppResp, to: m.from, term: this.term, index: this.log.lastIndex(), reject: false, hintIndex: 0, hintTerm: 0 });
    } else {
      this.send({ type: MessageType.AppResp, to: m.from, term: this.term, index: this.log.committed, reject: false, hintIndex: 0, hintTerm: 0 });
    }
  }

  /** Installs a snapshot unless the log already covers it; returns whether it did. */
  private restore(s: Snapshot): boolean {
    if (s.meta.index <= this.log.committed) return false;
    if (this.log.matchTerm(s.meta.index, s.meta.term)) {
      // We hold the entry the snapshot ends with, so the prefix matches: just move commit forward.
      this.log.commitTo(s.meta.index);
      return false;
    }
    this.log.restore(s);
    return true;
  }

  // ---- leader side of replication (§5.3, §5.4) ----

  private handleAppendResponse(m: AppendResponse): void {
    const pr = this.progress.get(m.from);
    if (pr === undefined) return;
    pr.recentActive = true;
    if (m.reject) {
      // A stale-term rejection (index 0 from a node with a higher term) never reaches here.
      let next = m.hintIndex;
      if (m.hintTerm > 0) next = this.log.findConflictByTerm(m.hintIndex, m.hintTerm);
      // The next flush() probes again from the new position.
      pr.maybeDecrTo(m.index, next);
      return;
    }
    // A follower can hold more than this leader's log only if it installed an image (fetched from
    // another node, stepped under this leader's snapshot message: Snapshots.receive) holding entries
    // committed in a later term: this leader is stale. Dropped, as if lost; counting it would credit
    // the follower with entries of this log it does not hold.
    if (m.index > this.log.lastIndex()) return;
    if (pr.maybeUpdate(m.index) || (pr.match === m.index && pr.state !== ProgressState.Replicate)) {
      if (pr.state === ProgressState.Probe) {
        pr.becomeReplicate();
      } else if (pr.state === ProgressState.Snapshot && pr.match + 1 >= this.log.firstIndex()) {
        pr.becomeProbe();
        pr.becomeReplicate();
      } else if (pr.state === ProgressState.Replicate) {
        pr.inflights.freeLE(m.index);
      }
      if (this.maybeCommit()) this.commitUnannounced = true;
      if (m.from === this.leadTransferee && pr.match === this.log.lastIndex()) {
        this.sendTimeoutNow(m.from);
      }
    }
  }

  private handleHeartbeatResponse(m: HeartbeatResponse): void {
    const pr = this.progress.get(m.from);
    if (pr === undefined) return;
    pr.recentActive = true;
    pr.probeSent = false;
    // A full window whose acknowledgements were lost would stall replication: free one slot so the
    // next append goes out, is rejected or accepted, and the progress recovers.
    if (pr.state === ProgressState.Replicate && pr.inflights.full()) pr.inflights.freeFirst();
    // A follower whose log lost what it had acknowledged (a lost or restored disk): replicate to it
    // again from where its log ends, probing back as for any follower that is behind.
    if (m.lastIndex !== undefined && m.lastIndex < pr.match) {
      pr.match = m.lastIndex;
      pr.becomeProbe();
    }
    // §5.3: the leader retries until the follower holds every entry. Appends to it may have been lost
    // with `next` already past them; an append from `next` (empty if need be) is rejected and the
    // rejection starts backtracking.
    if (pr.match < this.log.lastIndex()) pr.needsAppend = true;
    if (m.readRound > 0) {
      this.reads.recvAck(m.from, m.readRound);
      for (const rs of this.reads.advance()) this.readStates.push(rs);
    }
  }

  /** §5.3/§5.4.2: commit the highest index a majority holds, but only by counting our own term's entries. */
  maybeCommit(): boolean {
    const mci = committedIndex(this.voters, (id) => this.progress.get(id)?.match ?? 0);
    if (mci <= this.log.committed) return false;
    if (this.log.term(mci) !== this.term) return false;
    this.log.commitTo(mci);
    this.releaseReadsAwaitingCommit();
    return true;
  }

  /** Sends appends to every follower that can take them: new entries, or a new commit index. */
  flush(): void {
    if (this.role !== Role.Leader) return;
    const announce = this.commitUnannounced;
    this.commitUnannounced = false;
    for (const v of this.voters) {
      if (v === this.id) continue;
      const pr = this.progress.get(v)!;
      const force = announce || pr.needsAppend || pr.canBumpCommit(this.log.committed);
      pr.needsAppend = false;
      if (!this.maybeSendAppend(v, force)) continue;
      // Pipelining: keep sending while the follower replicates and the window has room.
      while (this.maybeSendAppend(v, false)) {
        /* each call sends one append */
      }
    }
  }

  /** Sends one append (or a snapshot) to `to` if its progress allows; returns whether it sent. */
  private maybeSendAppend(to: NodeId, sendIfEmpty: boolean): boolean {
    const pr = this.progress.get(to);
    if (pr === undefined || pr.paused()) return false;
    const prevIndex = pr.next - 1;
    const prevTerm = this.log.term(prevIndex);
    if (prevTerm === undefined) return this.sendSnapshot(to, pr);
    const last = this.log.lastIndex();
    let entries: Entry[] = [];
    if (pr.next <= last) {
      entries = this.log.slice(pr.next, last + 1, this.maxSizePerMsg);
    }
    if (entries.length === 0 && !sendIfEmpty) return false;
    const m: AppendRequest = {
      type: MessageType.App,
      from: this.id,
      to,
      term: this.term,
      prevIndex,
      prevTerm,
      entries,
      commit: this.log.committed,
    };
    this.msgs.push(m);
    const lastSent = entries.length > 0 ? entries[entries.length - 1]!.index : prevIndex;
    pr.sentEntries(lastSent, entries.length, entriesSize(entries));
    pr.sentCommit = Math.max(pr.sentCommit, m.commit);
    return entries.length > 0;
  }

  private sendSnapshot(to: NodeId, pr: Progress): boolean {
    if (!pr.recentActive) return false; // do not ship a snapshot to a node we cannot hear
    const snapshot = this.log.snapshot();
    invariant(snapshot.meta.index > 0, 'log compacted without a snapshot');
    pr.becomeSnapshot(snapshot.meta.index);
    this.msgs.push({ type: MessageType.Snap, from: this.id, to, term: this.term, snapshot });
    return false;
  }

  /**
   * The caller's transport reports that messages to `to` may have been lost undelivered (its
   * connection broke with them unacknowledged): replicating to it, probe again from its match, so
   * the next flush() sends an append rather than waiting for a heartbeat's answer to free the
   * window (a window of one append waits a heartbeat interval otherwise). Probing is always safe:
   * at worst the follower is sent entries it holds, and answers as for any append.
   */
  reportUnreachable(to: NodeId): void {
    if (this.role !== Role.Leader) return;
    const pr = this.progress.get(to);
    if (pr === undefined || to === this.id) return;
    if (pr.state === ProgressState.Replicate) pr.becomeProbe();
    else if (pr.state === ProgressState.Probe) pr.probeSent = false;
    else return;
    if (pr.match < this.log.lastIndex()) pr.needsAppend = true;
  }

  /** The caller's transport reports a snapshot it could not deliver: probe again. */
  reportSnapshotFailed(to: NodeId): void {
    const pr = this.progress.get(to);
    if (pr?.state === ProgressState.Snapshot) pr.becomeProbe();
  }

  private broadcastHeartbeat(): void {
    for (const v of this.voters) {
      if (v === this.id) continue;
      const pr = this.progress.get(v)!;
      const hb: Heartbeat = {
        type: MessageType.Heartbeat,
        from: this.id,
        to: v,
        term: this.term,
        commit: Math.min(pr.match, this.log.committed),
        readRound: this.reads.round,
      };
      this.msgs.push(hb);
    }
  }

  private appendEntries(ents: Entry[]): void {
    this.log.append(ents);
    // Our own entries count towards commit only once durable: see RawNode.advance().
  }

  // ---- the caller's requests ----

  /** Appends commands to the log (leader only). Throws ProposalDroppedError when it cannot. */
  propose(datas: readonly Uint8Array[]): ProposalTicket {
    if (datas.length === 0) throw new RaftError('propose needs at least one command');
    if (this.role !== Role.Leader) throw new ProposalDroppedError(DropReason.NotLeader, this.lead);
    if (this.leadTransferee !== null) throw new ProposalDroppedError(DropReason.Transferring, this.lead);
    let bytes = 0;
    for (const d of datas) bytes += d.byteLength;
    if (this.maxUncommittedBytes > 0 && this.uncommittedBytes > 0 && this.uncommittedBytes + bytes > this.maxUncommittedBytes) {
      throw new ProposalDroppedError(DropReason.Overloaded, this.lead);
    }
    this.uncommittedBytes += bytes;
    const first = this.log.lastIndex() + 1;
    const ents: Entry[] = datas.map((data, i) => ({ term: this.term, index: first + i, kind: EntryKind.Normal, data }));
    this.appendEntries(ents);
    if (this.voters.length === 1) this.maybeCommit();
    return { term: this.term, firstIndex: first, lastIndex: first + ents.length - 1 };
  }

  /** Applied entries leave the uncommitted budget. */
  reduceUncommitted(bytes: number): void {
    this.uncommittedBytes = Math.max(0, this.uncommittedBytes - bytes);
  }

  /**
   * ReadIndex (thesis §6.4): a linearizable read without a log write. The context comes back in a
   * ReadState once a heartbeat round proves this node is still leader; serve the read when applied
   * reaches its index. Throws ProposalDroppedError on a non-leader.
   */
  readIndex(context: unknown): void {
    if (this.role !== Role.Leader) throw new ProposalDroppedError(DropReason.NotLeader, this.lead);
    if (!this.committedInCurrentTerm()) {
      // Until an entry of its own term commits, a new leader does not know the latest commit index.
      this.reads.awaitCommit(context);
      return;
    }
    this.startRead(context);
  }

  private startRead(context: unknown): void {
    if (this.voters.length === 1) {
      this.readStates.push({ index: this.log.committed, context });
      return;
    }
    this.reads.addRequest(this.log.committed, context);
    this.broadcastHeartbeat();
  }

  private releaseReadsAwaitingCommit(): void {
    if (!this.reads.hasAwaitingCommit() || !this.committedInCurrentTerm()) return;
    for (const context of this.reads.takeAwaitingCommit()) this.startRead(context);
  }

  /** Leadership transfer (thesis §3.10): bring `to` up to date, then tell it to campaign. */
  transferLeadership(to: NodeId): void {
    if (this.role !== Role.Leader) throw new ProposalDroppedError(DropReason.NotLeader, this.lead);
    if (!this.voters.includes(to)) throw new RaftError(`${to} is not a voter of this group`);
    if (to === this.id || this.leadTransferee === to) return;
    this.leadTransferee = to;
    // The transfer must finish within an election timeout or it is abandoned.
    this.electionElapsed = 0;
    // If it is behind, flush() keeps replicating and the acknowledgement that catches it up sends
    // TimeoutNow (handleAppendResponse).
    if (this.progress.get(to)!.match === this.log.lastIndex()) this.sendTimeoutNow(to);
  }

  private sendTimeoutNow(to: NodeId): void {
    this.msgs.push({ type: MessageType.TimeoutNow, from: this.id, to, term: this.term });
  }

  /** Called by RawNode once this node's own entries up to `index` (of `term`) are durable. */
  selfPersisted(index: Index): void {
    if (this.role !== Role.Leader) return;
    const pr = this.progress.get(this.id)!;
    if (pr.maybeUpdate(index) && this.maybeCommit()) this.commitUnannounced = true;
  }

  private send(m: Omit<VoteResponse, 'from'> | Omit<AppendResponse, 'from'> | Omit<HeartbeatResponse, 'from'>): void {
    this.msgs.push({ ...m, from: this.id } as Message);
  }
}
