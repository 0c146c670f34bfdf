// The router: how a request that arrived at this node reaches its partition's leader.
//
// The node that received a client's request does the work that needs no replicated state: it
// validates, authenticates the caller, hashes passwords. What is left is a command (a write) or a
// query (a read) of one partition. The router runs it on the local replica when this node leads the
// partition, and otherwise sends it to the leader over the authenticated inter-node route, where it
// runs under the same caller's identity and request id. It follows a changing leader a bounded number
// of hops, waits a bounded time for an election, and then gives up with a 503.
//
// A forwarded command's result comes from this node's own replica where it can: the leader answers
// where it appended the command's entry, and the router waits for the local apply of that entry
// (forward()), which computes the same result as the leader's.
//
// A node that has heard from no peer for two election timeouts (cut off) does not wait: it answers
// 503 at once, so that a client or load balancer tries another node.
//
// Only what the router knows to be unapplied is retried on the caller's behalf: a refusal by a
// non-leader, an overwritten entry, a peer that could not be connected to. A write whose fate is
// unknown (a lost answer, leadership lost while waiting) is retried only when it carries an
// Idempotency-Key, which makes the retry a replay; otherwise the client hears 503 or 504 and decides.
import type { NodeId } from '../raft/index.js';
import { NotCommittedError, NotLeaderError, OutcomeUnknownError, OverloadedError, ReplicaClosedError } from '../partition/errors.js';
import { clockLag, commandOrigin, type NodeHost } from '../partition/host.js';
import { sharesEntry } from '../partition/shared-entries.js';
import { randomBytes } from 'node:crypto';
import { FormatTooNewError, MAX_CLOCK_STEP_MS, leavingLook, runQuery, type ChannelRef, type Command, type Query, type ReceivedMessage, type Result } from '../store/broker/index.js';
import { UnavailableError } from './errors.js';
import { addsData, diskShort, keyDecision } from './disk-space.js';
import { decodeAnswer, type Answer, type PeerCaller, type Proposed } from './answer.js';
import { ForwardBatcher } from './forward-batch.js';
import { PROPOSE_PATH, QUERY_PATH } from './internal-routes.js';
import type { Forwarded } from './internal-schemas.js';


export type { Answer, PeerCaller } from './answer.js';

/** A waiting long poll: woken to receive again, or told that a lease or delay changed the next time. */
interface Watcher {
  /** Messages its receive takes at most. */
  readonly want: number;
  /** Ends the wait to receive again; false if the wait had already ended. */
  wake(): boolean;
  retime(): void;
}

/** A long poll parked in the partition's state under `tag` (Router.park). */
export interface Parking {
  readonly tag: string;
  /** Resolves with the messages an apply on this node leased to the poll. */
  readonly delivered: Promise<ReceivedMessage[]>;
  /**
   * The poll will not take a delivery any more (its client left, its wait failed): one that came
   * and was not answered with, or that still comes within `graceMs`, goes to `release` (to be given
   * back), not to nobody.
   */
  abandon(release: (messages: ReceivedMessage[]) => void, graceMs: number): void;
  /** The poll is answered (with a delivery, if it took one): nothing is released. */
  done(): void;
}

/** A long poll's registration (Router.watch). */
export interface Watch {
  /** Resolves when the poll should receive again (false), or when its wait is over (true). */
  readonly woken: Promise<boolean>;
  cancel(): void;
  /**
   * The poll was woken but will not receive (its client left, its receive failed): if messages are
   * still visible here, the next poll waiting on the channel is woken in its place.
   */
  passOn(): void;
}

export interface RouterOptions {
  readonly self: NodeId;
  readonly partitions: number;
  /** Milliseconds between looks at the local replica while waiting for a leader. */
  readonly pollMs: number;
  /** How long a request waits for a reachable leader before the 503 (default 5 s). */
  readonly leaderWaitMs?: number;
  /** Leaders a request may be sent to in turn (default 3). */
  readonly maxHops?: number;
  /**
   * The clock a request's wait for a leader is timed by (ms; default performance.now, monotonic). Reads
   * and long polls count the state's times by the host's ClusterClock instead.
   */
  readonly now?: () => number;
  /** Longest sleep of an idle long poll before it asks again anyway (default 5 s; a guard only). */
  readonly maxIdleMs?: number;
}

export interface RequestContext {
  readonly requestId?: string;
}

/**
 * A forwarding node whose replica is more entries behind this leader's log than this gets its
 * command's result, not where it was appended (Router.appendHere). Under load a healthy follower is
 * a few dozen entries behind (those in flight); one catching up after a restart is thousands.
 */
const MAX_TRACKED_LAG = 1_000;
/** How long (ms) a partition's clock found up to date is taken as such (Router.holdWhileClockBehind). */
const CLOCK_CHECK_MS = 1_000;
/** Forwarded writes may wait for the leader's proposal timeout (10 s) and its answer. */
const COMMAND_TIMEOUT_MS = 15_000;
/**
 * A forwarded read waits at most what is left of the wait for a leader (leaderWaitMs), but never less
 * than QUERY_ATTEMPT_MIN_MS nor more than QUERY_TIMEOUT_MS. A leader that went silent without closing
 * its connections (paused, cut off, its power cut) held a read for the whole 10 s, past the wait for
 * a leader, and the read was refused though a new leader had been known here for most of it (review
 * of 2026-12-07).
 */
const QUERY_TIMEOUT_MS = 10_000;
const QUERY_ATTEMPT_MIN_MS = 2_000;

/**
 * How long after it starts (the router's clock) a node looks for the long polls its previous process
 * left parked (Router.leaveOrphanedPolls): a poll waits at most 20 s from its last receive, and that
 * receive's entry may be applied here only once this node has caught up.
 */
export const ORPHANED_POLLS_MS = 60_000;
/** A previous process's parked polls taken out per partition and pass. */
const ORPHANED_POLLS_PER_PASS = 100;

export class Router {
  private readonly leaderWaitMs: number;
  private readonly maxHops: number;
  private readonly now: () => number;
  /** Long polls waiting on this node, by partition and channel id; one wake listener per replica. */
  private readonly watchers = new Map<number, Map<number, Set<Watcher>>>();
  /** Every watch not yet finished, so that a shutdown can end them. */
  private readonly open = new Set<(expired: boolean) => void>();
  private stopped = false;
  /** Forwarded commands leave in one request per leader and loop turn. */
  private readonly batcher: ForwardBatcher;
  /** Writes that run after their request was answered (a poll's last look, a release): close awaits them. */
  private readonly behind = new Set<Promise<unknown>>();
  /** Forwarded writes the leader appended, waiting for this node's apply of their entries (forward()). */
  private readonly applying = new Set<Promise<unknown>>();
  /** Parked polls of this process by tag: what an apply here delivers to them goes to these. */
  private readonly parked = new Map<string, (messages: ReceivedMessage[]) => void>();
  /** The peer that last served a partition's request while this node's replica of it is halted: asked first. */
  private readonly servedBy = new Map<number, NodeId>();
  /**
   * Per partition, the term in which this node found its partition's clock up to date, and until when
   * (the router's clock) that answer holds: the clock is a read of the state's database, and a leader
   * keeps it up to date once it has caught up (housekeeping's sweeps), so it is not read for every
   * command. A new term (a leader again, perhaps after an outage) looks again.
   */
  private readonly clockUpToDate = new Map<number, { readonly term: number; readonly until: number }>();
  /** Makes this process's tags unique across restarts. */
  private readonly nonce = randomBytes(6).toString('base64url');
  private tags = 0;
  /** When this router started (its clock): it looks for its previous process's polls for a while. */
  private readonly startedAt: number;
  /** Tags of a previous process's polls whose look was proposed (leaveOrphanedPolls): each once. */
  private readonly orphansLooked = new Set<string>();
  /** The scan for them in progress, if one is: one at a time. */
  private orphanScan: Promise<number> | null = null;

  constructor(
    private readonly host: NodeHost,
    private readonly peers: PeerCaller,
    private readonly opts: RouterOptions,
  ) {
    this.batcher = new ForwardBatcher(peers, COMMAND_TIMEOUT_MS);
    this.leaderWaitMs = opts.leaderWaitMs ?? 5_000;
    this.maxHops = opts.maxHops ?? 3;
    this.now = opts.now ?? (() => performance.now());
    this.startedAt = this.now();
    for (let p = 0; p < opts.partitions; p++) {
      const byChannel = new Map<number, Set<Watcher>>();
      this.watchers.set(p, byChannel);
      host.replica(p).onWake((channelId, visible) => {
        const set = byChannel.get(channelId);
        if (set === undefined) return;
        if (visible === 0) for (const w of [...set]) w.retime();
        else wakeFor(set, visible);
      });
      host.replica(p).onDeliver((d) => this.parked.get(d.tag)?.(d.messages));
      // A halted replica applies nothing more: each long poll waiting on it looks again now, and
      // goes on through the leader (appliesHere).
      host.replica(p).onHalt(() => {
        for (const set of byChannel.values()) for (const w of [...set]) w.wake();
      });
    }
  }

  /**
   * Whether this node applies partition `p`: not while its replica is halted, whose requests its
   * peers serve (route()), so that no long poll parks for a delivery this node would never apply.
   */
  appliesHere(p: number): boolean {
    return this.host.replica(p).halted === null;
  }

  /** The log format partition `p` is in, as this node's replica applied it or halted on it (format.ts). */
  format(p: number): number {
    const replica = this.host.replica(p);
    // Halted on a format this build cannot read: the partition is in that one at least, even when
    // the halt came mid-apply and rolled back the raises before it (the state shows an older one).
    const halted = replica.halted;
    return halted instanceof FormatTooNewError ? Math.max(halted.format, replica.state.format()) : replica.state.format();
  }

  /**
   * A tag for a long poll that parks in the state (format 3), listened for here from now on:
   * register before proposing the receive, as the delivery may be applied here before its answer.
   */
  park(): Parking {
    const tag = `${this.opts.self}.${this.nonce}.${++this.tags}`;
    let resolve = (_: ReceivedMessage[]): void => undefined;
    const delivered = new Promise<ReceivedMessage[]>((r) => {
      resolve = r;
    });
    /** A delivery that came and that the poll has not answered with (yet). */
    let unclaimed: ReceivedMessage[] | null = null;
    /** Set once the poll gave up: a delivery goes there instead. */
    let releaseTo: ((messages: ReceivedMessage[]) => void) | null = null;
    this.parked.set(tag, (messages) => {
      this.parked.delete(tag);
      if (releaseTo !== null) return releaseTo(messages);
      unclaimed = messages;
      resolve(messages);
    });
    return {
      tag,
      delivered,
      abandon: (release, graceMs) => {
        // Delivered while nobody was waiting for it (the poll's last look was in flight, or its
        // receive failed): it goes back now.
        if (unclaimed !== null) {
          release(unclaimed);
          unclaimed = null;
        } else if (this.parked.has(tag)) {
          releaseTo = release;
          setTimeout(() => this.parked.delete(tag), graceMs).unref();
        }
      },
      done: () => {
        unclaimed = null;
        this.parked.delete(tag);
      },
    };
  }

  /** The node host's pass (NodeHost.onPass): in its first ORPHANED_POLLS_MS, leaveOrphanedPolls. */
  pass(): void {
    if (!this.stopped && this.now() - this.startedAt < ORPHANED_POLLS_MS) void this.leaveOrphanedPolls();
  }

  /**
   * Takes out of the state the long polls that a previous process of this node parked and left
   * waiting: it crashed, and its clients' sockets went with it. Each stayed until its deadline (20 s
   * at most), and was served before any live poll on its channel: the messages it took stayed leased
   * to nobody for their visibility timeout, each counted as a delivery (with maxDeliveries 1,
   * dead-lettered unseen). Found in this node's replicas by their tags (`<self>.<another nonce>.`),
   * each gets the look a poll takes when its client leaves (ms 0, leave), proposed as its user, once.
   * A poll served before its look keeps what it was given under its lease: its process may have
   * answered its client before it died, so that delivery may have been seen, as a receive whose answer
   * was lost. Runs on the passes of this router's first ORPHANED_POLLS_MS (pass); resolves with the
   * polls taken out.
   */
  leaveOrphanedPolls(): Promise<number> {
    this.orphanScan ??= this.takeOutOrphans().finally(() => (this.orphanScan = null));
    return this.orphanScan;
  }

  private async takeOutOrphans(): Promise<number> {
    const self = this.opts.self;
    const own = `${self}.${this.nonce}`;
    const looks: Promise<boolean>[] = [];
    for (let p = 0; p < this.opts.partitions; p++) {
      const replica = this.host.replica(p);
      if (replica.halted !== null || !replica.state.isOpen()) continue;
      const now = this.host.clock.now();
      // This node's tags sort in [`<self>.`, `<self>/`), this process's in [`<own>.`, `<own>/`).
      const polls = [
        ...replica.state.waitingTagged(`${self}.`, `${own}.`, now, ORPHANED_POLLS_PER_PASS),
        ...replica.state.waitingTagged(`${own}/`, `${self}/`, now, ORPHANED_POLLS_PER_PASS),
      ].filter((poll) => !this.orphansLooked.has(poll.tag));
      for (const poll of polls.slice(0, ORPHANED_POLLS_PER_PASS)) {
        this.orphansLooked.add(poll.tag);
        looks.push(
          this.propose(p, poll.actor, leavingLook(poll), undefined).then(
            (r) => {
              const given = r.ok ? (r.value as { messages?: unknown[] }).messages?.length ?? 0 : 0;
              if (given > 0) this.host.opts.logger?.info?.({ partition: p, tag: poll.tag, messages: given }, 'a long poll of the previous process was served before its look: its messages keep their lease');
              return true;
            },
            (err: unknown) => {
              // Looked for again at the next pass, while the scan runs.
              this.orphansLooked.delete(poll.tag);
              this.host.opts.logger?.debug?.({ err: String(err), partition: p, tag: poll.tag }, "a long poll of the previous process could not be taken out; trying again");
              return false;
            },
          ),
        );
      }
    }
    const done = await Promise.all(looks);
    const taken = done.filter(Boolean).length;
    if (taken > 0) this.host.opts.logger?.info?.({ polls: taken }, 'long polls left waiting by the previous process of this node were taken out of the state');
    return taken;
  }

  get partitions(): number {
    return this.opts.partitions;
  }

  /** The nodes short of disk space (DiskSpace.shortNodes): while any is, commands that add data are refused. */
  private shortOfDisk: () => readonly string[] = () => [];

  /** From now on, refuses commands that add data while `shortNodes` names any node (the node's DiskSpace). */
  refuseWhenShort(shortNodes: () => readonly string[]): void {
    this.shortOfDisk = shortNodes;
  }

  /** Proposes `command` as `actor` on partition `p`, wherever its leader is; resolves once applied. */
  async propose(p: number, actor: string | null, command: Command, idempotencyKey: string | undefined, ctx: RequestContext = {}): Promise<Result> {
    // The system's own commands go by proposeSystemAt, from housekeeping, never from a request.
    if (commandOrigin(command) !== 'client') throw new TypeError(`'${command.type}' is not a command a request may propose`);
    // Refused here at once, unless a retry with an Idempotency-Key, which its leader may answer from
    // the record of the write that went through (keyForDisk).
    if (idempotencyKey === undefined && addsData(command) && this.shortOfDisk().length > 0) return diskShort(command);
    const body = {
      partition: p,
      actor,
      command,
      ...(idempotencyKey === undefined ? {} : { idempotencyKey }),
      ...(ctx.requestId === undefined ? {} : { requestId: ctx.requestId }),
    };
    return this.route(p, 'write', idempotencyKey !== undefined, () => this.proposeHere(p, actor, command, idempotencyKey), (leader) => this.forward(leader, body));
  }

  /** A linearizable read of partition `p` (ReadIndex on its leader). */
  async query(p: number, query: Query, ctx: RequestContext = {}): Promise<Result> {
    return this.route(p, 'read', true, () => this.queryHere(p, query), (leader, deadline) => {
      const timeoutMs = Math.min(QUERY_TIMEOUT_MS, Math.max(QUERY_ATTEMPT_MIN_MS, deadline - this.now()));
      return this.remoteQuery(leader, { partition: p, query }, ctx, timeoutMs);
    });
  }

  /** A read of the local replica as it is, leader or not: may miss the latest writes. */
  staleQuery(p: number, query: Query): { result: Result; appliedIndex: number } {
    const replica = this.host.replica(p);
    const state = replica.state;
    // A halted replica's state is unreadable (a newer format) or frozen where it halted (mid-apply),
    // however far behind: another node can serve the read.
    if (replica.halted !== null) throw new UnavailableError('halted', `partition ${p}: ${replica.halted.message}`);
    if (!state.isOpen()) {
      // Between closing the old state and opening the installed snapshot, there is nothing to read.
      throw new UnavailableError('catching_up', `partition ${p}: this node is installing a snapshot`);
    }
    return { result: runQuery(state, query, this.host.clock.now()), appliedIndex: state.applied().index };
  }

  /**
   * A system command (SYSTEM_COMMANDS: dead letters for a queue of partition `p`) for `leader`, which
   * leads `p`, the way a client's command is forwarded: carried in the Raft stream, or posted with
   * the others of this turn. A leader of an older build, which has not said in its stream's answer
   * that it takes them (SYSTEM_HEADER), gets it at /internal/propose. Resolves with its result;
   * rejects when it was not applied there (no longer the leader, unreachable, outcome unknown), and
   * the housekeeping that asked proposes it again later.
   */
  async proposeSystemAt(leader: NodeId, p: number, command: Command): Promise<Result> {
    if (this.peers.takesSystemCommands?.(leader) !== true) {
      const res = await this.peers.call(leader, PROPOSE_PATH, { partition: p, command }, { timeoutMs: COMMAND_TIMEOUT_MS });
      if (res.status !== 200) throw new Error(`forwarding to ${leader} answered ${res.status}: ${JSON.stringify(res.body).slice(0, 200)}`);
      return (res.body as { result: Result }).result;
    }
    const answer = await this.forward(leader, { partition: p, actor: null, command });
    if (answer.kind === 'ok') return answer.result;
    throw new Error(`forwarding to ${leader}: ${answer.kind === 'not_leader' ? `not the leader (leader: ${String(answer.leader)})` : `${answer.kind}: ${answer.detail}`}`);
  }

  /** A command forwarded by a peer: runs here if this node leads `p`, never hops further. */
  proposeHere(p: number, actor: string | null, command: Command, idempotencyKey?: string): Promise<Answer> {
    const taken = this.notNow(p, actor, command, idempotencyKey);
    if ('answer' in taken) return Promise.resolve(taken.answer);
    return settle(this.host.replica(p).propose(actor, command, taken.key));
  }

  /**
   * What a leader answers, without proposing, to a command it does not take now (the disk short, or
   * the partition's clock catching up), for its own requests and its peers' alike; else the
   * Idempotency-Key to propose it with, none while the disk is short (keyForDisk).
   */
  private notNow(p: number, actor: string | null, command: Command, idempotencyKey: string | undefined): { answer: Answer } | { key: string | undefined } {
    // Only the leader decides: a follower's state may not hold yet the record of a keyed retry whose
    // first attempt applied, and its refusal ('nothing written') would be false. It answers
    // not_leader, from the propose, with its hint (review of 2026-12-07).
    if (!this.host.replica(p).isLeader()) return { key: idempotencyKey };
    const forDisk = this.keyForDisk(p, actor, command, idempotencyKey);
    if (typeof forDisk === 'object') return { answer: { kind: 'ok', result: forDisk } };
    const held = this.holdWhileClockBehind(p, command);
    return held === null ? { key: forDisk } : { answer: held };
  }

  /**
   * A client's command at the leader of a partition whose clock is more than one step behind the
   * nodes' (MAX_CLOCK_STEP_MS: an entry moves it no further): one that had no leader for minutes, the
   * whole cluster or two nodes down. Applied now, its entry would be stamped with the partition's old
   * time: a send's retention counted from minutes ago, its message expired as the clock caught up
   * (its 201 given), its deduplication window and delay cut short (review of 2026-12-07). Nothing is
   * done ('retry'): the node that took the request asks again until housekeeping's sweeps have brought
   * the clock up, a few ticks after the election, and answers 503 if its wait runs out first.
   */
  private holdWhileClockBehind(p: number, command: Command): Answer | null {
    // Dead letters too, forwarded by their source partition's leader: stamped with the old clock,
    // each expired unseen as the clock caught up (review of stop 61). The other system commands
    // (sweeps, format raises, outbox clean-ups) are the leader's own, and sweeps bring the clock up.
    if (commandOrigin(command) !== 'client' && command.type !== 'deadletter.deliver') return null;
    const replica = this.host.replica(p);
    // A follower answers not_leader, with its hint, as before: its own clock says nothing of the leader's.
    if (!replica.isLeader()) return null;
    const term = replica.raw.term();
    const at = this.now();
    const known = this.clockUpToDate.get(p);
    if (known !== undefined && known.term === term && at < known.until) return null;
    const behind = clockLag(replica, this.host.clock.now());
    if (behind === null) return null;
    if (behind > MAX_CLOCK_STEP_MS) return { kind: 'retry', detail: `partition ${p}'s clock is ${Math.round(behind / 1000)} s behind the nodes' after an outage; it is catching up` };
    this.clockUpToDate.set(p, { term, until: at + CLOCK_CHECK_MS });
    return null;
  }

  /**
   * While a node is short of disk space (disk-space.ts), at the partition's leader, for its own
   * requests and its peers' alike: the refusal of a command that adds data, or of a receive with a
   * new Idempotency-Key, or else the key to propose the command with, none for another command with
   * a new key, whose record would add data too. A retry whose key this state has a record of is
   * taken with its key: the apply answers it from the record, adding nothing (a client whose first
   * answer was lost gets it, not a refusal), as is one whose key an entry of this leader's log not
   * applied yet carries (its record comes with that apply). The key is `idempotencyKey` while no
   * node is short.
   */
  private keyForDisk(p: number, actor: string | null, command: Command, idempotencyKey: string | undefined): Result | string | undefined {
    if (this.shortOfDisk().length === 0) return idempotencyKey;
    // Only a user's command keeps its key's record (state-machine.ts, applyEnvelope).
    const keyed = idempotencyKey !== undefined && actor !== null;
    const replica = this.host.replica(p);
    const state = replica.state;
    // A state being replaced by a snapshot cannot say: taken as holding no record. A key in an entry
    // not applied yet is a retry's too (its first attempt timed out, or its leader was lost): taken
    // without its key, a receive's retry was refused, 'nothing written', while its first attempt
    // leased messages nobody was told of.
    const recorded =
      keyed &&
      state.isOpen() &&
      (state.hasIdempotencyRecord(actor, command, idempotencyKey, this.host.clock.now()) || replica.holdsUnappliedKey(actor, command, idempotencyKey));
    const decision = keyDecision(command, keyed, recorded);
    if (decision === 'refuse') return diskShort(command);
    return decision === 'take' ? idempotencyKey : undefined;
  }

  /**
   * A command forwarded by `from`, which holds a replica of `p` and answers from its own apply:
   * appended here if this node leads `p`, answered at once with where, or with why it was not
   * appended. When `from`'s replica is far behind (restarted, catching up), it would answer only
   * once it caught up: the command then runs as proposeHere's, answered with its result.
   */
  appendHere(from: NodeId, p: number, actor: string | null, command: Command, idempotencyKey?: string): Answer | Proposed | Promise<Answer> {
    const taken = this.notNow(p, actor, command, idempotencyKey);
    if ('answer' in taken) return taken.answer;
    const { key } = taken;
    const replica = this.host.replica(p);
    const lag = replica.raw.lagOf(from);
    // A plain send, publish, ack, nack or lease extension may share its entry with others
    // (sharesEntry, as the replica's propose decides it), so where it was appended does not name its
    // result: it is answered with its result, a few bytes.
    if (lag === null || lag > MAX_TRACKED_LAG || sharesEntry(actor, command, this.format(p), key)) return this.proposeHere(p, actor, command, key);
    try {
      const ticket = replica.append(actor, command, key);
      return { kind: 'proposed', index: ticket.firstIndex, term: ticket.term };
    } catch (err) {
      return answerFor(err);
    }
  }

  /** A query forwarded by a peer, or this node's own: ReadIndex here, if this node leads `p`. */
  queryHere(p: number, query: Query): Promise<Answer> {
    // Delays, leases and ages count by the time this node stamps entries with (the nodes' median,
    // cluster-clock.ts), as the receive that follows does: by its own wall clock, a node an hour ahead
    // would show as visible what no receive can take yet.
    return settle(this.host.replica(p).read((state) => runQuery(state, query, this.host.clock.now())));
  }

  /**
   * Registers a long poll's interest in a channel of partition `p`: `woken` resolves when the local
   * replica applies an entry that makes messages visible on it, when the next lease or delay of the
   * channel ends, or at `until` (ms, on the router's clock: performance.now() unless a test sets one) at the latest, with
   * `true` for that last case: the wait is over. A wall clock stepped back would stretch a wait.
   * Register before proposing the receive, so that no wake-up falls between the two.
   *
   * An apply that makes n messages visible wakes the polls that waited longest, as many as take n
   * messages between them (`want` each), not every poll: each woken poll is a replicated receive,
   * and the others would find nothing.
   */
  watch(p: number, ref: ChannelRef, until: number, want = 1): Watch {
    const byChannel = this.watchers.get(p);
    if (byChannel === undefined) throw new RangeError(`no partition ${p}`);
    const initial = this.host.replica(p).state;
    // While a snapshot is being installed the state is closed: look again shortly, as for a channel
    // this replica has not applied yet (the leader knew it, or the receive would have failed).
    const channelId = initial.isOpen() ? initial.channelIdOf(ref) : null;
    let resolve = (_expired: boolean): void => undefined;
    const woken = new Promise<boolean>((r) => {
      resolve = r;
    });
    let timer: NodeJS.Timeout | null = null;
    let settled = false;
    const finish = (expired: boolean): void => {
      if (settled) return;
      settled = true;
      if (timer !== null) clearTimeout(timer);
      this.open.delete(finish);
      if (channelId !== null) {
        const set = byChannel.get(channelId);
        set?.delete(watcher);
        if (set?.size === 0) byChannel.delete(channelId);
      }
      resolve(expired);
    };
    // Leases and delays end by time alone, with no entry to wake us: wake when the next one ends.
    const arm = (): void => {
      if (settled) return;
      const state = this.host.replica(p).state;
      const now = this.now();
      // A halted replica applies nothing, so nothing here wakes the poll, and its state (open when it
      // halted mid-apply) is frozen: a lease due in it would stay due. The poll asks the leader again
      // every HALTED_LOOK_MS.
      const next = !this.appliesHere(p) ? now + HALTED_LOOK_MS : channelId === null || !state.isOpen() ? now : this.inPartitionTime(state.nextVisibleAt(channelId), now);
      const at = Math.min(next ?? until, now + (this.opts.maxIdleMs ?? DEFAULT_MAX_IDLE_MS));
      if (timer !== null) clearTimeout(timer);
      // Never sooner than pollMs: this replica may not have applied yet what made the time come.
      timer = at < until ? setTimeout(() => finish(false), Math.max(this.opts.pollMs, at - now)) : setTimeout(() => finish(true), Math.max(0, until - now));
    };
    let woke = false;
    const watcher: Watcher = {
      want: Math.max(1, want),
      wake: () => {
        if (settled) return false;
        woke = true;
        finish(false);
        return true;
      },
      retime: arm,
    };
    if (channelId !== null) {
      let set = byChannel.get(channelId);
      if (set === undefined) byChannel.set(channelId, (set = new Set()));
      set.add(watcher);
    }
    this.open.add(finish);
    arm();
    if (this.stopped) finish(true);
    const passOn = (): void => {
      if (!woke || channelId === null) return;
      woke = false;
      // A halted replica's state is frozen: what it shows visible says nothing.
      if (!this.appliesHere(p)) return;
      const state = this.host.replica(p).state;
      const set = byChannel.get(channelId);
      if (set !== undefined && state.isOpen() && state.hasVisible(channelId, this.host.clock.now())) wakeFor(set, 1);
    };
    return { woken, cancel: () => finish(false), passOn };
  }

  /**
   * When (on the router's clock, from its `now`) the partition's clock reaches `at`, or null for null. Leases and
   * delays end on the partition's clock, which the leaders' stamps of the nodes' median move
   * (cluster-clock.ts): this node's own wall clock may be far off, and an hour ahead it would find
   * every lease ended and have its polls propose a receive every pollMs for their whole wait.
   */
  private inPartitionTime(at: number | null, now: number): number | null {
    return at === null ? null : now + (at - this.host.clock.now());
  }

  /** Runs `work` after its request's answer; a shutdown waits for it (settleBehind). */
  afterAnswer(work: Promise<unknown>): void {
    const p = work.catch(() => undefined).finally(() => this.behind.delete(p));
    this.behind.add(p);
  }

  /** Waits (at most `maxMs`) for the writes that run after their answers: before the node stops. */
  async settleBehind(maxMs: number): Promise<void> {
    await settledWithin(this.behind, maxMs);
  }

  /**
   * Waits (at most `maxMs`) for the forwarded writes whose entries the leader appended to apply
   * here: their commits come in the Raft streams this node serves, which a close ends.
   */
  async settleApplying(maxMs: number): Promise<void> {
    await settledWithin(this.applying, maxMs);
  }

  /**
   * Ends every long poll as if its wait were over (they answer what they have: nothing), so that a
   * shutdown does not wait up to 20 s for them. Later polls end at once.
   */
  stopWaiting(): void {
    this.stopped = true;
    for (const finish of [...this.open]) finish(true);
  }

  /** Long polls waiting on this node (for metrics). */
  waiting(): number {
    let n = 0;
    for (const byChannel of this.watchers.values()) for (const set of byChannel.values()) n += set.size;
    return n;
  }

  private async route(
    p: number,
    what: 'write' | 'read',
    retryUnknown: boolean,
    here: () => Promise<Answer>,
    there: (leader: NodeId, deadline: number) => Promise<Answer>,
  ): Promise<Result> {
    if (!Number.isInteger(p) || p < 0 || p >= this.opts.partitions) throw new RangeError(`no partition ${p}`);
    const deadline = this.now() + this.leaderWaitMs;
    let hint: NodeId | null = null;
    let hops = 0;
    let last = 'no leader is known';
    /** An answer of unknown outcome, when retried (with an Idempotency-Key) until the deadline. */
    let unknown: Extract<Answer, { kind: 'unknown' }> | null = null;
    /** Peers asked in turn while this node's replica is halted (it follows no leader), from `first`. */
    let asked = 0;
    /** The node asked last, whose failure may have outlasted the wait while another was elected. */
    let tried: NodeId | null = null;
    let lastChance = true;
    const first = this.servedBy.get(p);
    for (;;) {
      const replica = this.host.replica(p);
      let target: NodeId | null = replica.isLeader() ? this.opts.self : (hint ?? replica.leader());
      // A halted replica knows no leader: a peer serves the request, or its not_leader names one.
      if (target === null && replica.halted !== null) target = peerInTurn(replica.cfg.voters, this.opts.self, asked++, first);
      const followed = hint !== null;
      hint = null;
      if (target !== null && (target !== this.opts.self || replica.isLeader())) {
        tried = target;
        const answer: Answer = target === this.opts.self ? await here() : await there(target, deadline);
        if (answer.kind === 'ok') {
          if (replica.halted !== null && target !== this.opts.self) this.servedBy.set(p, target);
          return answer.result;
        }
        if (answer.kind === 'unknown') {
          if (!retryUnknown) throw unknownOutcome(what, answer);
          // A read changes nothing: its failure is just a reason to try again.
          if (what === 'write') unknown = answer;
        }
        if (answer.kind === 'not_leader') {
          // A hop is a redirection followed; a leader handing over (no hint yet) is waited out.
          if (followed && ++hops > this.maxHops) throw new UnavailableError('leader_moving', `partition ${p}: leadership moved ${hops} times`);
          last = `${target} is not the leader`;
          if (answer.leader !== null && answer.leader !== target) {
            hint = answer.leader;
            continue;
          }
        } else {
          last = answer.detail;
        }
      }
      const cutOff = this.host.leadership.cutOffFor();
      if (this.now() >= deadline && cutOff === 0 && lastChance && what === 'read') {
        // The wait ran out on a leader that did not answer: one that became known meanwhile is asked once.
        const known = replica.isLeader() ? this.opts.self : replica.leader();
        lastChance = false;
        if (known !== null && known !== tried) continue;
      }
      if (this.now() >= deadline || cutOff > 0) {
        if (unknown !== null) throw unknownOutcome(what, unknown);
        // Cut off from every peer: no leader can be reached from here; waiting helps no one.
        if (cutOff > 0) throw new UnavailableError('cut_off', `this node has heard from no other node for ${(cutOff / 1000).toFixed(1)} s, so it cannot reach partition ${p}'s leader (${last})`);
        throw new UnavailableError('no_leader', `partition ${p} has no reachable leader (${last})`);
      }
      await sleep(this.opts.pollMs);
    }
  }

  /**
   * A command for `leader`, to propose. While this node's replica of the partition runs, the leader
   * may answer where it appended the command, and the result comes from this replica's own apply of
   * that entry (the same result the leader computes): the leader sends no result back.
   */
  private async forward(leader: NodeId, body: Forwarded): Promise<Answer> {
    const replica = this.host.replica(body.partition);
    const answer = await this.batcher.forward(leader, body, replica.halted === null);
    if (answer.kind !== 'proposed') return answer;
    const applied = settle(replica.awaitEntry(answer.index, answer.term));
    const done = (): void => void this.applying.delete(applied);
    applied.then(done, done);
    this.applying.add(applied);
    return applied;
  }

  /** A read on the leader; any failure is a reason to try again (a read changes nothing). */
  private async remoteQuery(leader: NodeId, body: unknown, ctx: RequestContext, timeoutMs: number): Promise<Answer> {
    try {
      const res = await this.peers.call(leader, QUERY_PATH, body, { timeoutMs, ...(ctx.requestId === undefined ? {} : { requestId: ctx.requestId }) });
      return decodeAnswer(res.status, res.body);
    } catch (err) {
      const code = (err as { code?: string }).code ?? '';
      return { kind: 'retry', detail: `${leader} could not be reached (${code || (err as Error).name})` };
    }
  }
}

/** The `turn`th voter other than `self` from `first` (the first of them if absent), round and round; null when there is none. */
function peerInTurn(voters: readonly NodeId[], self: NodeId, turn: number, first: NodeId | undefined): NodeId | null {
  const others = voters.filter((v) => v !== self);
  const start = first === undefined ? 0 : Math.max(0, others.indexOf(first));
  return others.length === 0 ? null : others[(start + turn) % others.length]!;
}

function unknownOutcome(what: string, answer: Extract<Answer, { kind: 'unknown' }>): UnavailableError {
  return new UnavailableError(what === 'write' ? 'write_unknown' : 'read_unknown', `the ${what}'s outcome is unknown (${answer.detail})`, answer.timedOut ? 504 : 503, true);
}

/** How often a long poll through a node whose replica is halted asks the leader again. */
const HALTED_LOOK_MS = 1_000;
/** How long an idle long poll sleeps before it asks again anyway (a guard, not the mechanism). */
const DEFAULT_MAX_IDLE_MS = 5_000;

/** Wakes the watchers that waited longest (a Set keeps insertion order) until they take `visible` messages. */
function wakeFor(set: ReadonlySet<Watcher>, visible: number): void {
  let left = visible;
  for (const w of [...set]) {
    if (left <= 0) return;
    if (w.wake()) left -= w.want;
  }
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** Resolves once every promise of `set` (as it is now) settled, or after `maxMs`. */
async function settledWithin(set: ReadonlySet<Promise<unknown>>, maxMs: number): Promise<void> {
  if (set.size === 0) return;
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([Promise.allSettled([...set]), new Promise((r) => (timer = setTimeout(r, maxMs)))]);
  clearTimeout(timer);
}

/** Turns the partition layer's outcome into an Answer (what a leader sends back to a peer). */
async function settle(run: Promise<Result>): Promise<Answer> {
  try {
    return { kind: 'ok', result: await run };
  } catch (err) {
    return answerFor(err);
  }
}

/** The Answer for the partition layer's error; rethrows any other. */
function answerFor(err: unknown): Answer {
  if (err instanceof NotLeaderError) return { kind: 'not_leader', leader: err.leader };
  if (err instanceof OverloadedError || err instanceof NotCommittedError) return { kind: 'retry', detail: err.message };
  if (err instanceof OutcomeUnknownError) return { kind: 'unknown', detail: err.message, timedOut: err.timedOut };
  if (err instanceof ReplicaClosedError) return { kind: 'retry', detail: 'the replica is closing' };
  throw err;
}
