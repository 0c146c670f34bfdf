// A deterministic simulator of a Raft group: a virtual clock, a seeded network that drops, duplicates,
// delays and reorders messages, partitions (symmetric and one-way), crashes at any point of a Ready
// (losing every write not yet synced, or in the crashes mix sometimes keeping a prefix of it, as a
// torn write does), restarts, compaction with snapshots and leadership transfers. With
// `partialFaults`, also single links cut (one way or both), reads asked of any node that believes it
// leads (a deposed leader's too), and a liveness phase that keeps one directed link cut.
// Persistence is pipelined as the node host does it (Raft thesis §10.2.1): a Ready's write is done at
// once but synced some time later; meanwhile the node steps messages and proposals, and a leader's
// appends and heartbeats leave before the sync (sendableBeforePersist); the rest of the Ready (its
// other messages, apply, advance) waits for the sync. A crash before the sync loses the write.
// After every step it checks the safety properties of §5 (see checkNow and the apply/persist hooks);
// in liveness mode it then heals a majority and requires progress within a bound.
import {
  MemoryStorage,
  ProposalDroppedError,
  RawNode,
  nodeId,
  sendableBeforePersist,
  type Entry,
  type HardState,
  type Index,
  type Message,
  type NodeId,
  type Ready,
  type Snapshot,
  type Term,
} from '../../../src/raft/index.js';
import { Rng } from './rng.js';

export interface Mix {
  readonly name: string;
  /** Probability a message is dropped / delivered twice. */
  readonly drop: number;
  readonly dup: number;
  /** Message delay in time units is uniform in [1, maxDelay]; a tick is TICK units. */
  readonly maxDelay: number;
  /** Per time unit: probability to start a partition, crash a node, compact a log, transfer leadership. */
  readonly partition: number;
  readonly crash: number;
  /** Probability that handling one Ready crashes the node part-way through it. */
  readonly crashInReady: number;
  readonly compact: number;
  readonly transfer: number;
  /**
   * Probability that a crash with a write in flight keeps part of it, as a disk may have written some
   * of its pages before the power went: a prefix of its entries (any length, all of them included),
   * and the hard state after them only if every entry was kept (the node's log writes a partition's
   * entries, then its hard state, and cuts a torn tail at the first damaged record). Otherwise the
   * whole unsynced write is lost.
   */
  readonly tornWrites?: number;
}

export const MIXES: Record<string, Mix> = {
  clean: { name: 'clean', drop: 0, dup: 0, maxDelay: 5, partition: 0, crash: 0, crashInReady: 0, compact: 0, transfer: 0 },
  lossy: { name: 'lossy', drop: 0.1, dup: 0.05, maxDelay: 40, partition: 0, crash: 0, crashInReady: 0, compact: 0.002, transfer: 0 },
  partitions: { name: 'partitions', drop: 0.02, dup: 0.02, maxDelay: 20, partition: 0.004, crash: 0, crashInReady: 0, compact: 0.002, transfer: 0.001 },
  crashes: { name: 'crashes', drop: 0.02, dup: 0.02, maxDelay: 20, partition: 0, crash: 0.002, crashInReady: 0.003, compact: 0.003, transfer: 0.001, tornWrites: 0.5 },
  storms: { name: 'storms', drop: 0.1, dup: 0.1, maxDelay: 80, partition: 0.01, crash: 0.003, crashInReady: 0.01, compact: 0.003, transfer: 0.002 },
  chaos: { name: 'chaos', drop: 0.08, dup: 0.05, maxDelay: 40, partition: 0.003, crash: 0.0015, crashInReady: 0.003, compact: 0.004, transfer: 0.002 },
};

export interface SimOptions {
  readonly seed: number;
  readonly nodes: number;
  readonly mix: Mix;
  /** Time units of the fault phase. */
  readonly duration: number;
  /** After the fault phase, heal a majority and require a commit within the liveness bound. */
  readonly liveness: boolean;
  /** Keep a trace of events for the report of a failure. */
  readonly trace?: boolean;
  /** The core's knobs, drawn per run so every configuration meets every fault. */
  readonly maxSizePerMsg: number;
  readonly maxInflightMsgs: number;
  /** Back-pressure: without it a slow configuration builds an unbounded backlog. */
  readonly maxUncommittedBytes: number;
  readonly preVote: boolean;
  readonly checkQuorum: boolean;
  /**
   * Sends acknowledgements before their write is synced: a deliberately broken host, for the test
   * that shows the simulator catches it. Never set otherwise.
   */
  readonly brokenEarlyAcks?: boolean;
  /**
   * For the simulator's own test: a log that writes a partition's hard state before its entries, so
   * that a torn write can keep a commit index without the entries it counts.
   */
  readonly brokenTornOrder?: boolean;
  /**
   * Time units a sync may take (0 completes it in the next step). Drawn per seed: short, or as long
   * as message delays and more, since an fsync can be slower than a round trip to a peer.
   */
  readonly maxSyncDelay: number;
  /**
   * Partial faults: a partition may cut one link only (one way or both ways); a read may be asked of
   * any node that believes it leads, a deposed leader of an older term included; and the liveness
   * phase, when it heals every node, may keep one directed link cut until the commit it requires (a
   * majority that can talk must still elect and commit; a follower that cannot hear the leader need
   * not converge, so the link heals before the convergence check). Drawn from a stream of its own, so
   * a run without it is the run it always was.
   */
  readonly partialFaults?: boolean;
}

export const TICK = 10;
export const ELECTION_TICK = 10;
/** Liveness bound: a proposal commits within this many election timeouts once a majority is healed. */
export const LIVENESS_ELECTIONS = 20;

export class Violation extends Error {
  override name = 'Violation';
}

interface SimEntryState {
  readonly term: Term;
  readonly payload: string;
}

interface CommittedEntry extends SimEntryState {
  /**
   * The lowest current term of a node seen holding the entry as committed. The entry was committed
   * in this term or before, so every leader of a later term must hold it (Leader Completeness).
   */
  seenInTerm: Term;
}

type ProposalStatus = 'pending' | 'dropped' | 'acked' | 'failed';
interface Proposal {
  status: ProposalStatus;
  node: NodeId;
  term: Term;
  index: Index;
}

/** The replicated state machine of the simulation: the sequence of applied payloads. */
class Fsm {
  applied: Index = 0;
  items: [Index, Term, string][] = [];
  readonly set = new Set<string>();

  snapshotData(upTo: Index): Uint8Array {
    const items = this.items.filter(([i]) => i <= upTo);
    return new TextEncoder().encode(JSON.stringify(items));
  }

  restore(s: Snapshot): [Index, Term, string][] {
    const items = JSON.parse(new TextDecoder().decode(s.data)) as [Index, Term, string][];
    this.items = items;
    this.set.clear();
    for (const [, , p] of items) this.set.add(p);
    this.applied = s.meta.index;
    return items;
  }
}

class SimNode {
  raw: RawNode | null = null;
  /** What the core reads: every write done, synced or not. */
  storage: MemoryStorage;
  /** The hard state as last synced; a crash reverts to it (entries and snapshots are always synced). */
  durableHard: HardState = { term: 0, vote: null, commit: 0 };
  fsm = new Fsm();
  downUntil = 0;
  readonly rng: Rng;
  tickPhase: number;
  /** ReadStates waiting for apply: [readIndex, acked count when the read was issued]. */
  reads: [Index, number][] = [];
  /**
   * The Ready whose write is done but not yet synced: until `at`, when the rest of it runs. `before`
   * is the storage as it was durable; a crash meanwhile goes back to it.
   */
  syncing: { readonly rd: Ready; readonly at: number; readonly before: MemoryStorage; readonly early: ReadonlySet<Message> } | null = null;

  constructor(
    readonly id: NodeId,
    voters: NodeId[],
    rng: Rng,
  ) {
    this.storage = new MemoryStorage(voters);
    this.rng = rng;
    this.tickPhase = rng.int(TICK);
  }
}

interface InFlight {
  readonly at: number;
  readonly seq: number;
  readonly m: Message;
}

export interface SimResult {
  readonly seed: number;
  readonly mix: string;
  readonly nodes: number;
  readonly proposals: number;
  readonly acked: number;
  readonly committed: number;
  readonly elections: number;
  readonly crashes: number;
  /** Crashes that kept part of an unsynced write (Mix.tornWrites). */
  readonly tornWrites: number;
  readonly snapshotsSent: number;
  readonly reads: number;
  /** Time units from healing to the first commit, in liveness mode. */
  readonly recovery: number | null;
}

export class Simulation {
  readonly rng: Rng;
  readonly ids: NodeId[];
  readonly nodes = new Map<NodeId, SimNode>();
  now = 0;
  private seq = 0;
  private queue: InFlight[] = [];
  /** Appends dropped whose loss their sender is told of, at the next delivery round. */
  private lostAppends: Message[] = [];
  /** Per directed link, the latest delivery time scheduled (for FIFO delivery). */
  private readonly linkClock = new Map<string, number>();
  /** Directed links that are cut: "a>b". Value: time the cut heals. */
  private cuts = new Map<string, number>();
  private drop: number;
  private dup: number;
  private crashInReady: number;
  private readonly tornWrites: number;
  private maxDelay: number;
  private maxSyncDelay: number;
  /** The randomness of the partial faults (SimOptions.partialFaults), apart from the main stream. */
  private readonly partialRng: Rng;

  // What the checker knows.
  private readonly leaders = new Map<Term, NodeId>();
  /** Entries known committed (some node's commit covered them), by index. */
  private readonly committed = new Map<Index, CommittedEntry>();
  private committedMax = 0;
  /** Entries applied by any node, by index: every other node must apply the same. */
  private readonly appliedAt = new Map<Index, SimEntryState>();
  private readonly proposals = new Map<string, Proposal>();
  private readonly acked: string[] = [];
  private proposalSeq = 0;
  private stats = { elections: 0, crashes: 0, tornWrites: 0, snapshotsSent: 0, reads: 0 };
  readonly traceLines: string[] = [];

  constructor(readonly opts: SimOptions) {
    this.rng = new Rng(opts.seed);
    this.ids = Array.from({ length: opts.nodes }, (_, i) => nodeId(`n${i + 1}`));
    this.drop = opts.mix.drop;
    this.dup = opts.mix.dup;
    this.crashInReady = opts.mix.crashInReady;
    this.tornWrites = opts.mix.tornWrites ?? 0;
    this.maxDelay = opts.mix.maxDelay;
    this.maxSyncDelay = opts.maxSyncDelay;
    this.partialRng = new Rng(opts.seed ^ 0x0a5e);
    for (const id of this.ids) {
      const n = new SimNode(id, this.ids, this.rng.fork());
      this.nodes.set(id, n);
      this.start(n);
    }
  }

  private trace(s: string): void {
    if (this.opts.trace === true) this.traceLines.push(`${this.now} ${s}`);
  }

  private fail(what: string): never {
    throw new Violation(`seed ${this.opts.seed} (${this.opts.mix.name}, ${this.opts.nodes} nodes) at t=${this.now}: ${what}`);
  }

  // ---- node lifecycle ----

  private start(n: SimNode): void {
    const rng = n.rng;
    n.raw = new RawNode(
      {
        id: n.id,
        voters: this.ids,
        electionTick: ELECTION_TICK,
        heartbeatTick: 1,
        random: (k) => rng.int(k),
        applied: n.fsm.applied,
        maxSizePerMsg: this.opts.maxSizePerMsg,
        maxInflightMsgs: this.opts.maxInflightMsgs,
        maxUncommittedBytes: this.opts.maxUncommittedBytes,
        preVote: this.opts.preVote,
        checkQuorum: this.opts.checkQuorum,
      },
      n.storage,
    );
    n.reads = [];
    this.trace(`${n.id} start term=${n.durableHard.term} applied=${n.fsm.applied} last=${n.storage.lastIndex()}`);
  }

  private crash(n: SimNode, why: string): void {
    if (n.raw === null) return;
    n.raw = null;
    // Every write not yet synced is lost, or part of it kept (Mix.tornWrites): a Ready whose sync was
    // in flight, and a hard state's commit index written without a sync.
    if (n.syncing !== null) {
      const { rd, before } = n.syncing;
      n.storage = before;
      n.syncing = null;
      if (this.tornWrites > 0 && this.rng.chance(this.tornWrites)) {
        const kept = this.rng.int(rd.entries.length + 1);
        if (kept > 0) before.append(rd.entries.slice(0, kept));
        const hardKept = kept === rd.entries.length || this.opts.brokenTornOrder === true;
        if (hardKept && rd.hardState !== null && this.rng.chance(0.5)) n.durableHard = rd.hardState;
        if (kept > 0) this.stats.tornWrites++;
        this.trace(`${n.id} keeps ${kept} of ${rd.entries.length} unsynced entries${n.durableHard === rd.hardState ? ' and the hard state' : ''}`);
      }
    }
    this.pendingCrash.delete(n);
    n.storage.setHardState(n.durableHard);
    // Mostly a quick restart (a process manager), sometimes a long outage.
    n.downUntil = this.now + (this.rng.chance(0.5) ? this.rng.range(1, 3 * TICK) : this.rng.range(TICK, 40 * TICK));
    this.stats.crashes++;
    this.trace(`${n.id} crash (${why})`);
  }

  alive(): SimNode[] {
    return [...this.nodes.values()].filter((n) => n.raw !== null);
  }

  // ---- network ----

  private send(m: Message): void {
    if (this.rng.chance(this.drop)) {
      // Half the time the sender learns that an append was lost, as the HTTP transport tells its
      // host when a stream breaks with the frame unacknowledged (reportUnreachable: probe again now).
      if (m.type === 'app' && this.rng.chance(0.5)) this.lostAppends.push(m);
      return;
    }
    const copies = this.rng.chance(this.dup) ? 2 : 1;
    const link = `${m.from}>${m.to}`;
    for (let i = 0; i < copies; i++) {
      let at = this.now + this.rng.range(1, this.maxDelay);
      // Links are mostly FIFO, as a TCP connection is; one message in ten may overtake others.
      if (!this.rng.chance(0.1)) at = Math.max(at, this.linkClock.get(link) ?? 0);
      this.linkClock.set(link, at);
      this.queue.push({ at, seq: this.seq++, m });
    }
    if (m.type === 'snap') this.stats.snapshotsSent++;
  }

  private linkUp(from: NodeId, to: NodeId): boolean {
    return !this.cuts.has(`${from}>${to}`);
  }

  private deliverDue(): void {
    if (this.lostAppends.length > 0) {
      const lost = this.lostAppends;
      this.lostAppends = [];
      for (const m of lost) this.nodes.get(m.from)?.raw?.reportUnreachable(m.to);
    }
    if (this.queue.length === 0) return;
    const due: InFlight[] = [];
    const rest: InFlight[] = [];
    for (const f of this.queue) (f.at <= this.now ? due : rest).push(f);
    this.queue = rest;
    due.sort((a, b) => a.at - b.at || a.seq - b.seq);
    for (const f of due) {
      const n = this.nodes.get(f.m.to)!;
      if (n.raw === null || !this.linkUp(f.m.from, f.m.to)) continue;
      n.raw.step(f.m);
    }
  }

  // ---- faults ----

  private startPartition(): void {
    const kind = this.rng.int(4);
    const until = this.now + this.rng.range(5 * TICK, 150 * TICK);
    const cut = (a: NodeId, b: NodeId): void => {
      this.cuts.set(`${a}>${b}`, until);
    };
    const leader = this.currentLeader();
    if (this.opts.partialFaults === true && this.partialRng.chance(0.4)) {
      // One link only: a node cut from one peer, both ways or one way.
      const [a, b] = this.partialRng.shuffle([...this.ids]) as [NodeId, NodeId];
      const both = this.partialRng.chance(0.5);
      cut(a, b);
      if (both) cut(b, a);
      this.trace(`partition: link ${a}${both ? '<' : ''}>${b} cut until ${until}`);
      return;
    }
    if (kind === 0 || (kind === 1 && leader !== null)) {
      // One node (the leader, for kind 1) isolated, both ways.
      const a = kind === 1 && leader !== null ? leader : this.rng.pick(this.ids);
      for (const b of this.ids) {
        if (b === a) continue;
        cut(a, b);
        cut(b, a);
      }
      this.trace(`partition: isolate ${a} until ${until}`);
    } else if (kind === 2) {
      // A random split into two sides.
      const side = new Set(this.ids.filter(() => this.rng.chance(0.5)));
      for (const a of this.ids) for (const b of this.ids) if (side.has(a) !== side.has(b)) cut(a, b);
      this.trace(`partition: split {${[...side].join(',')}} until ${until}`);
    } else {
      // Asymmetric: one node can send but not receive, or the other way round.
      const a = this.rng.pick(this.ids);
      const inbound = this.rng.chance(0.5);
      for (const b of this.ids) {
        if (b === a) continue;
        if (inbound) cut(b, a);
        else cut(a, b);
      }
      this.trace(`partition: one-way ${inbound ? 'into' : 'out of'} ${a} until ${until}`);
    }
  }

  private healExpired(): void {
    for (const [k, until] of this.cuts) if (until <= this.now) this.cuts.delete(k);
  }

  currentLeader(): NodeId | null {
    let best: { id: NodeId; term: Term } | null = null;
    for (const n of this.alive()) {
      const s = n.raw!.softState();
      if (s.role === 'leader' && (best === null || s.term > best.term)) best = { id: n.id, term: s.term };
    }
    return best?.id ?? null;
  }

  private compact(n: SimNode): void {
    const snapIndex = n.storage.snapshot().meta.index;
    const upTo = n.fsm.applied - this.rng.int(4);
    if (upTo <= snapIndex || upTo > n.storage.lastIndex() || upTo < n.storage.firstIndex()) return;
    n.storage.createSnapshot(upTo, n.fsm.snapshotData(upTo));
    this.trace(`${n.id} compact to ${upTo}`);
  }

  // ---- clients ----

  private propose(): void {
    const alive = this.alive();
    if (alive.length === 0) return;
    // Clients mostly find the leader; sometimes they ask a node that is not.
    const leader = this.currentLeader();
    const n = leader !== null && this.rng.chance(0.8) ? this.nodes.get(leader)! : this.rng.pick(alive);
    const count = this.rng.chance(0.2) ? this.rng.range(2, 20) : 1;
    const payloads = Array.from({ length: count }, () => `p${this.proposalSeq++}`);
    try {
      const t = n.raw!.propose(payloads.map((p) => new TextEncoder().encode(p)));
      payloads.forEach((p, i) => this.proposals.set(p, { status: 'pending', node: n.id, term: t.term, index: t.firstIndex + i }));
      this.trace(`${n.id} propose ${payloads[0]}..(${count}) at ${t.firstIndex} term ${t.term}`);
    } catch (err) {
      if (!(err instanceof ProposalDroppedError)) throw err;
      for (const p of payloads) this.proposals.set(p, { status: 'dropped', node: n.id, term: 0, index: 0 });
    }
  }

  private read(): void {
    let leader = this.currentLeader();
    if (this.opts.partialFaults === true && this.partialRng.chance(0.5)) {
      // Any node that believes it leads: a deposed leader must never release a read.
      const believers = this.alive().filter((n) => n.raw!.softState().role === 'leader');
      leader = believers.length === 0 ? null : this.partialRng.pick(believers).id;
    }
    if (leader === null) return;
    const n = this.nodes.get(leader)!;
    n.raw!.readIndex(this.acked.length);
  }

  // ---- the Ready loop, with the crash model ----

  private handleReadies(n: SimNode): void {
    while (n.raw !== null && n.syncing === null && n.raw.hasReady()) {
      const rd = n.raw.ready();
      // Where, if anywhere, this Ready is interrupted by a crash: 0 before its write, 1 after the write
      // (and the messages that may leave before the sync) but before the sync, 2 part-way through
      // applying, 3 before advance.
      const crashAt = this.crashPoint(n, rd);
      if (crashAt === 0) return this.crash(n, 'before persist');
      // A snapshot is installed and synced in line, as the host does; a write that needs no sync (a
      // commit index) needs no wait.
      const pipelined = rd.mustSync && rd.snapshot === null;
      const before = pipelined ? n.storage.clone() : null;
      this.persist(n, rd);
      if (before === null) {
        if (rd.mustSync) n.durableHard = n.storage.hardState();
        if (crashAt === 1) return this.crash(n, 'after persist');
        this.finishReady(n, rd, crashAt, new Set());
        continue;
      }
      const early = new Set(rd.messages.filter((m) => sendableBeforePersist(rd, m) || (this.opts.brokenEarlyAcks === true && m.type === 'app-resp' && !rd.termOrVoteChanged)));
      for (const m of early) {
        this.checkDurableBeforeSend(n, m);
        this.send(m);
      }
      if (crashAt === 1) {
        n.syncing = { rd, at: this.now, before, early };
        return this.crash(n, 'before the sync');
      }
      n.syncing = { rd, at: this.now + this.rng.int(this.maxSyncDelay + 1), before, early };
      if (crashAt >= 2) this.pendingCrash.set(n, crashAt);
    }
  }

  /** Crash points (2, 3) drawn for a Ready whose sync was in flight, taken once it completes. */
  private readonly pendingCrash = new Map<SimNode, number>();

  /** Completes the syncs that are due, and runs the rest of their Readies. */
  private completeSyncs(): void {
    for (const n of this.nodes.values()) {
      const s = n.syncing;
      if (n.raw === null || s === null || s.at > this.now) continue;
      n.syncing = null;
      n.durableHard = n.storage.hardState();
      const crashAt = this.pendingCrash.get(n) ?? -1;
      this.pendingCrash.delete(n);
      this.finishReady(n, s.rd, crashAt, s.early);
    }
  }

  /** A Ready once its write is durable: its other messages, apply, reads, advance. */
  private finishReady(n: SimNode, rd: Ready, crashAt: number, sent: ReadonlySet<Message>): void {
    if (n.raw === null) return;
    {
      for (const m of rd.messages) {
        if (sent.has(m)) continue;
        this.checkDurableBeforeSend(n, m);
        this.send(m);
      }
      const applyCount = crashAt === 2 ? this.rng.int(rd.committedEntries.length + 1) : rd.committedEntries.length;
      for (let i = 0; i < applyCount; i++) this.apply(n, rd.committedEntries[i]!);
      if (crashAt === 2) return this.crash(n, `applying (${applyCount} of ${rd.committedEntries.length})`);
      for (const rs of rd.readStates) n.reads.push([rs.index, rs.context as number]);
      if (crashAt === 3) return this.crash(n, 'before advance');
      if (rd.softState !== null) this.onSoftState(n, rd);
      n.raw.advance(rd);
      this.serveReads(n);
    }
  }

  /**
   * Where, if anywhere, this Ready is interrupted by a crash. The nemesis aims at writes that are not
   * synced: ten times likelier while the Ready holds one, very likely (after its messages left) when
   * the unsynced write is a term or a vote, which the core must never leave unsynced, and likelier
   * between a follower's write of entries and its sync, the window that pipelining opens.
   */
  private crashPoint(n: SimNode, rd: Ready): number {
    if (this.crashInReady === 0) return -1;
    const unsynced = rd.hardState !== null && !rd.mustSync;
    if (unsynced && (rd.hardState!.term !== n.durableHard.term || rd.hardState!.vote !== n.durableHard.vote)) {
      if (this.rng.chance(0.5)) return this.rng.range(2, 3);
    }
    if (rd.entries.length > 0 && rd.messages.some((m) => m.type === 'app-resp') && this.rng.chance(this.crashInReady * 20)) return 1;
    return this.rng.chance(this.crashInReady * (unsynced ? 10 : 1)) ? this.rng.int(4) : -1;
  }

  /**
   * The persistence contract: a message that depends on a term or vote leaves only once that term
   * and vote are synced (a vote granted and then forgotten in a crash allows a second vote in the same
   * term, and two leaders). Entries are always synced with their Ready in this model.
   */
  private checkDurableBeforeSend(n: SimNode, m: Message): void {
    const d = n.durableHard;
    if (m.type === 'pre-vote' || m.type === 'pre-vote-resp') return;
    if (d.term < m.term) this.fail(`${n.id} sends ${m.type} of term ${m.term} with only term ${d.term} synced`);
    if (m.type === 'vote-resp' && !m.reject && d.term === m.term && d.vote !== m.to) {
      this.fail(`${n.id} grants its vote in term ${m.term} to ${m.to} before the vote is synced`);
    }
    if (m.type === 'vote' && d.term === m.term && d.vote !== n.id) {
      this.fail(`${n.id} campaigns in term ${m.term} before its vote for itself is synced`);
    }
  }

  private persist(n: SimNode, rd: Ready): void {
    const s = n.storage;
    if (rd.snapshot !== null) {
      const items = n.fsm.restore(rd.snapshot);
      for (const [i, term, payload] of items) this.checkApplied(n, i, term, payload);
      s.applySnapshot(rd.snapshot);
      this.trace(`${n.id} install snapshot ${rd.snapshot.meta.index}/${rd.snapshot.meta.term}`);
    }
    if (rd.entries.length > 0) {
      const first = rd.entries[0]!.index;
      const oldLast = s.lastIndex();
      // Nothing known committed may be overwritten or cut off (§5.4: committed entries are durable),
      // by a node in the term it was committed in or a later one: every leader from that term on
      // holds it (Leader Completeness). A node still in an earlier term may lose its copy to that
      // term's leader, deposed without knowing it (no CheckQuorum, or not yet), while the majority
      // that committed it keeps it: Raft allows that, and a run of seed 72584 did it.
      const nodeTerm = n.raw!.raft.term;
      for (let i = first; i <= Math.min(oldLast, this.committedMax); i++) {
        const c = this.committed.get(i);
        if (c === undefined || i < s.firstIndex() || nodeTerm < c.seenInTerm) continue;
        const had = s.term(i);
        const replaced = rd.entries[i - first];
        if (had === c.term && (replaced === undefined || replaced.term !== c.term)) {
          this.fail(`${n.id} overwrites committed entry ${i} (term ${c.term})`);
        }
      }
      s.append(rd.entries);
    }
    if (rd.hardState !== null) s.setHardState(rd.hardState);
  }

  private apply(n: SimNode, e: Entry): void {
    if (e.index !== n.fsm.applied + 1) this.fail(`${n.id} applies ${e.index} after ${n.fsm.applied}`);
    n.fsm.applied = e.index;
    if (e.kind !== 0) return;
    const payload = new TextDecoder().decode(e.data);
    this.checkApplied(n, e.index, e.term, payload);
    if (n.fsm.set.has(payload)) this.fail(`${n.id} applies ${payload} twice`);
    n.fsm.set.add(payload);
    n.fsm.items.push([e.index, e.term, payload]);
    const p = this.proposals.get(payload);
    if (p === undefined) this.fail(`${n.id} applies ${payload}, which nobody proposed`);
    if (p.status === 'dropped') this.fail(`${n.id} applies ${payload}, whose proposal was refused`);
    // The proposer learns the outcome when it applies the index it was given.
    if (n.id === p.node && p.status === 'pending' && e.index === p.index && n.raw !== null) {
      if (e.term !== p.term) this.fail(`${payload} proposed at ${p.index}/${p.term} applied there with term ${e.term}`);
      p.status = 'acked';
      this.acked.push(payload);
    }
  }

  private checkApplied(n: SimNode, index: Index, term: Term, payload: string): void {
    const seen = this.appliedAt.get(index);
    if (seen === undefined) this.appliedAt.set(index, { term, payload });
    else if (seen.term !== term || seen.payload !== payload) {
      this.fail(`${n.id} applied ${payload}/${term} at ${index}, another node applied ${seen.payload}/${seen.term}`);
    }
  }

  private serveReads(n: SimNode): void {
    const keep: [Index, number][] = [];
    for (const [index, ackedBefore] of n.reads) {
      if (n.fsm.applied < index) {
        keep.push([index, ackedBefore]);
        continue;
      }
      // Linearizable: the read sees every write acknowledged before it was issued.
      for (let i = 0; i < ackedBefore; i++) {
        const p = this.acked[i]!;
        if (!n.fsm.set.has(p)) this.fail(`read at ${index} on ${n.id} misses ${p}, acknowledged before the read`);
      }
      this.stats.reads++;
    }
    n.reads = keep;
  }

  private onSoftState(n: SimNode, rd: Ready): void {
    const s = rd.softState!;
    this.trace(`${n.id} ${s.role} term=${s.term} leader=${s.leader ?? '-'}`);
    if (s.role !== 'leader') return;
    this.stats.elections++;
  }

  // ---- the checker ----

  private checkNow(): void {
    for (const n of this.alive()) {
      const r = n.raw!.raft;
      // Election Safety: at most one leader per term.
      if (r.role === 'leader') {
        const other = this.leaders.get(r.term);
        if (other === undefined) {
          this.leaders.set(r.term, n.id);
          this.checkLeaderCompleteness(n);
        } else if (other !== n.id) {
          this.fail(`two leaders in term ${r.term}: ${other} and ${n.id}`);
        }
      }
      // Commit grows the known-committed set; it must agree with what others committed.
      const c = r.log.committed;
      for (let i = Math.max(r.log.firstIndex(), this.committedMax + 1); i <= c; i++) {
        const term = r.log.term(i);
        if (term === undefined) this.fail(`${n.id} committed ${i} but has no entry there`);
        const [e] = r.log.slice(i, i + 1, Infinity);
        this.committed.set(i, { term, payload: e!.kind === 0 ? new TextDecoder().decode(e!.data) : '', seenInTerm: r.term });
      }
      if (c > this.committedMax) this.committedMax = c;
      for (let i = Math.max(r.log.firstIndex(), c - 20); i <= c; i++) {
        const known = this.committed.get(i);
        if (known === undefined) continue;
        if (r.log.term(i) !== known.term) {
          this.fail(`${n.id} has committed ${i} with term ${r.log.term(i)}, committed was term ${known.term}`);
        }
        if (r.term < known.seenInTerm) known.seenInTerm = r.term;
      }
    }
  }

  /** Leader Completeness (§5.4): a new leader holds every entry committed before its term. */
  private checkLeaderCompleteness(n: SimNode): void {
    const log = n.raw!.raft.log;
    for (let i = log.firstIndex(); i <= this.committedMax; i++) {
      const c = this.committed.get(i);
      if (c !== undefined && c.seenInTerm < n.raw!.raft.term && log.term(i) !== c.term) {
        this.fail(`leader ${n.id} of term ${n.raw!.raft.term} lacks committed entry ${i}/${c.term}`);
      }
    }
  }

  /** Log Matching (§5.3): two logs with an entry of the same index and term agree on every entry before. */
  checkLogMatching(): void {
    const alive = this.alive();
    for (let x = 0; x < alive.length; x++) {
      for (let y = x + 1; y < alive.length; y++) {
        const a = alive[x]!.raw!.raft.log;
        const b = alive[y]!.raw!.raft.log;
        const lo = Math.max(a.firstIndex(), b.firstIndex());
        let hi = Math.min(a.lastIndex(), b.lastIndex());
        while (hi >= lo && a.term(hi) !== b.term(hi)) hi--;
        if (hi < lo) continue;
        const ea = a.slice(lo, hi + 1, Infinity);
        const eb = b.slice(lo, hi + 1, Infinity);
        for (let i = 0; i < ea.length; i++) {
          const p = ea[i]!;
          const q = eb[i]!;
          if (p.term !== q.term || !sameBytes(p.data, q.data)) {
            this.fail(`log matching: ${alive[x]!.id} and ${alive[y]!.id} agree at ${hi} but differ at ${p.index}`);
          }
        }
      }
    }
  }

  // ---- the run ----

  private step(): void {
    this.now++;
    this.healExpired();
    this.deliverDue();
    this.completeSyncs();
    for (const n of this.nodes.values()) {
      if (n.raw === null) {
        if (this.now >= n.downUntil && n.downUntil > 0) this.start(n);
        continue;
      }
      if ((this.now + n.tickPhase) % TICK === 0) n.raw.tick();
    }
    for (const n of this.rng.shuffle([...this.nodes.values()])) this.handleReadies(n);
    this.checkNow();
    if (this.now % 500 === 0) this.checkLogMatching();
  }

  private faults(): void {
    const mix = this.opts.mix;
    if (this.rng.chance(mix.partition)) this.startPartition();
    if (this.rng.chance(mix.crash)) {
      const leader = this.currentLeader();
      const victim = leader !== null && this.rng.chance(0.5) ? this.nodes.get(leader)! : this.rng.pick([...this.nodes.values()]);
      this.crash(victim, 'scheduled');
    }
    if (this.rng.chance(mix.compact)) {
      const alive = this.alive();
      if (alive.length > 0) this.compact(this.rng.pick(alive));
    }
    if (this.rng.chance(mix.transfer)) {
      const leader = this.currentLeader();
      if (leader !== null) {
        const to = this.rng.pick(this.ids.filter((i) => i !== leader));
        this.trace(`${leader} transfer to ${to}`);
        this.nodes.get(leader)!.raw!.transferLeadership(to);
      }
    }
  }

  run(): SimResult {
    const mix = this.opts.mix;
    while (this.now < this.opts.duration) {
      this.faults();
      if (this.rng.chance(0.05)) this.propose();
      if (this.rng.chance(0.01)) this.read();
      this.step();
    }
    let recovery: number | null = null;
    if (this.opts.liveness) recovery = this.livenessPhase(mix);
    this.checkLogMatching();
    const ps = [...this.proposals.values()];
    return {
      seed: this.opts.seed,
      mix: mix.name,
      nodes: this.opts.nodes,
      proposals: ps.length,
      acked: this.acked.length,
      committed: this.committedMax,
      elections: this.stats.elections,
      crashes: this.stats.crashes,
      tornWrites: this.stats.tornWrites,
      snapshotsSent: this.stats.snapshotsSent,
      reads: this.stats.reads,
      recovery,
    };
  }

  /**
   * Heal a majority (sometimes everybody): restart crashed nodes, mend their links, stop dropping.
   * A proposal must then commit within LIVENESS_ELECTIONS election timeouts, and every node of the
   * healed majority must then apply everything acknowledged.
   */
  private livenessPhase(mix: Mix): number {
    const healedAt = this.now;
    this.drop = 0;
    this.dup = 0;
    this.crashInReady = 0;
    // Healed links and disks are fast again: Raft needs a round trip well inside the election
    // timeout (§5.6), and a round trip includes the syncs of the vote or the entries it answers. With
    // syncs of up to 85 time units against a 100-unit timeout, leaders lost CheckQuorum and elections
    // went round past the bound, on the old code as on the new (seeds 502781, 503036, 504113).
    this.maxDelay = Math.min(this.maxDelay, TICK);
    this.maxSyncDelay = Math.min(this.maxSyncDelay, TICK);
    const keepDown = this.rng.chance(0.5) ? this.rng.int(Math.floor((this.opts.nodes - 1) / 2) + 1) : 0;
    const down = new Set(this.rng.shuffle([...this.ids]).slice(0, keepDown));
    this.cuts.clear();
    for (const id of this.ids) {
      const n = this.nodes.get(id)!;
      if (down.has(id)) {
        // Kept away: either crashed or cut off from everybody.
        if (this.rng.chance(0.5)) {
          this.crash(n, 'kept down');
          n.downUntil = Number.MAX_SAFE_INTEGER;
        } else {
          for (const b of this.ids) {
            if (b === id) continue;
            this.cuts.set(`${id}>${b}`, Infinity);
            this.cuts.set(`${b}>${id}`, Infinity);
          }
        }
      } else if (n.raw === null) {
        this.start(n);
      }
    }
    let keptCut: string | null = null;
    if (this.opts.partialFaults === true && down.size === 0 && this.partialRng.chance(0.5)) {
      const [a, b] = this.partialRng.shuffle([...this.ids]) as [NodeId, NodeId];
      keptCut = `${a}>${b}`;
      this.cuts.set(keptCut, Infinity);
      this.trace(`heal: all but the link ${a}>${b}, cut until the commit`);
    }
    this.trace(`heal: majority ${this.ids.filter((i) => !down.has(i)).join(',')} (mix ${mix.name})`);
    const bound = LIVENESS_ELECTIONS * ELECTION_TICK * TICK;
    // The client retries with a fresh proposal every election timeout until one is acknowledged.
    const markers: string[] = [];
    let lastTry = -Infinity;
    let committedAt = -1;
    while (this.now - healedAt <= bound) {
      if (this.now - lastTry >= ELECTION_TICK * TICK) {
        const leader = this.currentLeader();
        if (leader !== null && !down.has(leader)) {
          const payload = `live-${this.proposalSeq++}`;
          try {
            const t = this.nodes.get(leader)!.raw!.propose([new TextEncoder().encode(payload)]);
            this.proposals.set(payload, { status: 'pending', node: leader, term: t.term, index: t.firstIndex });
            markers.push(payload);
            lastTry = this.now;
          } catch (err) {
            if (!(err instanceof ProposalDroppedError)) throw err;
            this.proposals.set(payload, { status: 'dropped', node: leader, term: 0, index: 0 });
          }
        }
      }
      this.step();
      if (markers.some((p) => this.proposals.get(p)!.status === 'acked')) {
        committedAt = this.now;
        break;
      }
    }
    if (committedAt < 0) this.fail(`no commit within ${LIVENESS_ELECTIONS} election timeouts after healing a majority${keptCut === null ? '' : ` (link ${keptCut} still cut)`}`);
    if (keptCut !== null) this.cuts.delete(keptCut);
    // Convergence: the healed majority applies everything any node ever saw committed, which
    // includes every acknowledged proposal.
    const deadline = this.now + bound;
    const healed = this.ids.filter((i) => !down.has(i)).map((i) => this.nodes.get(i)!);
    const converged = (): boolean => healed.every((n) => n.raw !== null && n.fsm.applied >= this.committedMax);
    while (this.now < deadline && !converged()) this.step();
    for (const n of healed) {
      if (n.fsm.applied < this.committedMax) this.fail(`${n.id} applied ${n.fsm.applied}, behind commit ${this.committedMax} after healing`);
      for (const p of this.acked) if (!n.fsm.set.has(p)) this.fail(`${n.id} lacks acknowledged ${p}`);
    }
    return committedAt - healedAt;
  }
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.byteLength !== b.byteLength) return false;
  for (let i = 0; i < a.byteLength; i++) if (a[i] !== b[i]) return false;
  return true;
}

function pickFlowControl(rng: Rng): { maxSizePerMsg: number; maxInflightMsgs: number; maxUncommittedBytes: number } {
  const maxSizePerMsg = rng.pick([1, 100, 4096]);
  // One entry per append and one append in flight is too slow for the liveness bound; not a bug.
  const maxInflightMsgs = maxSizePerMsg === 1 ? 16 : rng.pick([1, 4, 16]);
  // Payloads are about 5 bytes: 256 bytes of back-pressure is about 50 uncommitted entries.
  const maxUncommittedBytes = maxSizePerMsg === 4096 ? rng.pick([0, 256]) : rng.pick([64, 256]);
  return { maxSizePerMsg, maxInflightMsgs, maxUncommittedBytes };
}

function pickElectionMode(rng: Rng): { preVote: boolean; checkQuorum: boolean } {
  const r = rng.int(10);
  if (r < 7) return { preVote: true, checkQuorum: true };
  if (r < 8) return { preVote: true, checkQuorum: false };
  if (r < 9) return { preVote: false, checkQuorum: true };
  return { preVote: false, checkQuorum: false };
}

/** Derives a run's shape from its seed, so that one number replays it exactly. */
export function optionsForSeed(seed: number, overrides: Partial<SimOptions> = {}): SimOptions {
  const rng = new Rng(seed ^ 0x5eed);
  const names = Object.keys(MIXES);
  return {
    seed,
    nodes: rng.chance(0.7) ? 3 : 5,
    mix: MIXES[names[seed % names.length]!]!,
    duration: 6000,
    liveness: true,
    ...pickFlowControl(rng),
    ...pickElectionMode(rng),
    maxSyncDelay: rng.chance(0.5) ? 4 : rng.range(10, 100),
    ...overrides,
  };
}

export function runSeed(seed: number, overrides: Partial<SimOptions> = {}): SimResult {
  return new Simulation(optionsForSeed(seed, overrides)).run();
}
