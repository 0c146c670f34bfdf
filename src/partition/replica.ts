// One partition's replica on this node: the Raft core, its log (a view of the node's log store) and
// the broker state it applies to. The node host drives every replica's Ready in one loop; this class
// holds what is per partition: proposals waiting for their entry to apply, reads waiting for their
// ReadIndex, and long polls waiting for messages.
import {
  DropReason,
  EntryKind,
  Outcome,
  ProposalDroppedError,
  ProposalTracker,
  RawNode,
  type Entry,
  type NodeId,
  type ProposalTicket,
  type Ready,
} from '../raft/index.js';
import type { PartitionLog } from '../store/wal/index.js';
import { MAX_FANOUT, encodeEnvelope, type BodyMissingError, type Command, type Delivery, type FormatTooNewError, type Result } from '../store/broker/index.js';

/** Why a replica stopped for good in this process (PartitionReplica.halt). */
export type HaltReason = FormatTooNewError | BodyMissingError;
import type { BrokerStateMachine } from '../store/broker/index.js';
import { NotCommittedError, NotLeaderError, OutcomeUnknownError, OverloadedError, ReplicaClosedError } from './errors.js';
import { TOGETHER_MAX_BYTES, TOGETHER_MAX_ITEMS, bytesOf, groupOf, itemsOf, merged, sharesEntry, sharesOf, type SharedCommand } from './shared-entries.js';

export interface ReplicaConfig {
  readonly partition: number;
  readonly self: NodeId;
  readonly voters: readonly NodeId[];
  readonly electionTick: number;
  readonly heartbeatTick: number;
  readonly random: (n: number) => number;
  /** The leader's clock, for stamping entries. */
  readonly now: () => number;
  /** How long a proposal waits for its entry to apply before its outcome is reported unknown. */
  readonly proposalTimeoutMs: number;
  /**
   * Asks the node's loop for a turn: a proposal or a read gave the core work (entries to persist and
   * send, a heartbeat round). Without it the work would wait for the next tick or peer message.
   */
  readonly schedule: () => void;
}

interface Waiter {
  resolve(r: Result): void;
  reject(e: Error): void;
  timer: NodeJS.Timeout;
  /** A forwarded write another leader appended (awaitEntry), not a proposal of this node. */
  readonly forwarded: boolean;
}

/** A command held for the loop's next turn, to be appended with the others of its group (PartitionReplica.propose). */
interface Held {
  readonly command: SharedCommand;
  /** Its items (itemsOf) and bytes (bytesOf). */
  readonly items: number;
  readonly bytes: number;
  resolve(r: Result): void;
  reject(e: Error): void;
}

/** Bytes a replica holds at most: past them a command is appended at once, where the core's overload check applies. */
const HELD_MAX_BYTES = 8 << 20;

/**
 * Appends a leader keeps unacknowledged per follower (the core's pipelining window). With one, what
 * the leader appends and commits while a follower writes and syncs the last append leaves as ONE
 * append when that follower acknowledges: one frame, one loop turn and one fdatasync there, and the
 * new commit index rides in it. A wider window sent an append each leader turn, commit announcements
 * included, and each cost the follower a turn of its own. Measured in bench/README.md ("What
 * changed"): a fifth fewer context switches per single send on the leader and a follower.
 */
const INFLIGHT_APPENDS = 1;

interface ReadWaiter {
  run(): void;
  reject(e: Error): void;
  /** Set once the ReadState came back: the read may run when applied reaches it. */
  index: number | null;
}

export class PartitionReplica {
  readonly raw: RawNode;
  private readonly proposals = new ProposalTracker<Waiter>();
  private readonly reads = new Map<number, ReadWaiter>();
  /** Commands held since the last loop turn, by group (groupOf), each with its user (proposeHeld()). */
  private held = new Map<string, { readonly actor: string; readonly list: Held[] }>();
  /** Their bytes (Held.bytes), at most HELD_MAX_BYTES. */
  private heldBytes = 0;
  /** Refuses the held commands should no loop turn come for them in time (a stalled disk). */
  private heldTimer: NodeJS.Timeout | null = null;
  private readSeq = 0;
  private readonly wakeListeners = new Set<(channelId: number, visible: number) => void>();
  private readonly deliverListeners = new Set<(delivery: Delivery) => void>();
  private readonly haltListeners = new Set<() => void>();
  private closed = false;
  /**
   * Set when this build cannot read the partition's log format, or when its state points at log
   * entries the log no longer holds: the host no longer drives it.
   */
  private haltedBy: HaltReason | null = null;

  constructor(
    readonly cfg: ReplicaConfig,
    readonly log: PartitionLog,
    public state: BrokerStateMachine,
  ) {
    this.raw = new RawNode(
      {
        id: cfg.self,
        voters: cfg.voters,
        electionTick: cfg.electionTick,
        heartbeatTick: cfg.heartbeatTick,
        random: cfg.random,
        // An image installed from the leader may hold entries the log has not received yet (it is
        // made when the follower asks, past the snapshot's index); the state machine skips them.
        applied: Math.min(state.applied().index, log.lastIndex()),
        maxSizePerMsg: 1 << 20,
        maxInflightMsgs: INFLIGHT_APPENDS,
        maxUncommittedBytes: 64 << 20,
        maxCommittedSizePerReady: 8 << 20,
      },
      log,
    );
  }

  get partition(): number {
    return this.cfg.partition;
  }

  isLeader(): boolean {
    return this.haltedBy === null && this.raw.softState().role === 'leader';
  }

  /** The leader this replica knows; null while halted, since it no longer follows the group. */
  leader(): NodeId | null {
    return this.haltedBy === null ? this.raw.softState().leader : null;
  }

  /** Why this replica stopped, or null while it runs (see halt). */
  get halted(): HaltReason | null {
    return this.haltedBy;
  }

  /**
   * Stops this replica for good, in this process: its log holds entries in a format this build cannot
   * read, and applying them anyway would part its state from the others' (a newer build applies on
   * from the state's applied index, the entry before the one that stopped it); or its state points
   * at entries its log lost (the replica is rebuilt from its peers). The host neither ticks nor
   * steps nor applies it again; waiting requests fail as on close.
   */
  halt(reason: HaltReason): void {
    this.haltedBy = reason;
    this.close();
    for (const fn of [...this.haltListeners]) fn();
  }

  /** Calls `fn` when this replica halts (the router then wakes the long polls waiting on it). */
  onHalt(fn: () => void): () => void {
    this.haltListeners.add(fn);
    return () => this.haltListeners.delete(fn);
  }

  /**
   * Proposes a command, stamped with this leader's clock; resolves with the command's result once its
   * entry is applied here. Rejects with NotLeaderError (nothing appended: forward or retry),
   * NotCommittedError (overwritten: never applied) or OutcomeUnknownError (may still apply).
   */
  propose(actor: string | null, command: Command, idempotencyKey?: string): Promise<Result> {
    // A plain send, publish, ack, nack or lease extension waits for the loop's next turn, which
    // appends it with the others of its group as one entry (shared-entries.ts).
    if (!this.closed && this.isLeader() && sharesEntry(actor, command, this.state.format(), idempotencyKey)) {
      const bytes = bytesOf(command);
      if (this.heldBytes + bytes <= HELD_MAX_BYTES) return this.hold(actor!, command, bytes);
    }
    let ticket;
    try {
      ticket = this.append(actor, command, idempotencyKey);
    } catch (err) {
      return Promise.reject(err as Error);
    }
    return this.waitFor(ticket.firstIndex, ticket.term, false);
  }

  /**
   * Appends a command to this leader's log, stamped with its clock, and returns where: nobody here
   * waits for its result (the node that forwarded it answers from its own apply, awaitEntry). Throws
   * ReplicaClosedError, NotLeaderError or OverloadedError, all before anything was appended.
   */
  append(actor: string | null, command: Command, idempotencyKey?: string): ProposalTicket {
    if (this.closed) throw new ReplicaClosedError('replica closed');
    const env = idempotencyKey === undefined ? { time: this.cfg.now(), actor, command } : { time: this.cfg.now(), actor, command, idempotencyKey };
    try {
      const ticket = this.raw.propose([encodeEnvelope(env, this.state.format())]);
      this.cfg.schedule();
      return ticket;
    } catch (err) {
      if (!(err instanceof ProposalDroppedError)) throw err;
      // Refused before appending: never applied, safe to retry (at the leader, or shortly).
      if (err.reason === DropReason.Overloaded) throw new OverloadedError(`partition ${this.partition} is overloaded`, { cause: err });
      throw new NotLeaderError(this.partition, err.reason === DropReason.NotLeader ? err.leader : null);
    }
  }

  /**
   * Whether this node's log holds an entry its state has not applied yet that carries `actor`'s
   * `idempotencyKey` for `command`'s resource (BrokerStateMachine.entryCarriesKey): a retry's first
   * attempt, whose record comes with its apply. Read by a leader before proposing.
   */
  holdsUnappliedKey(actor: string, command: Command, idempotencyKey: string): boolean {
    const state = this.state;
    if (!state.isOpen()) return false;
    for (const e of this.raw.entriesFrom(state.applied().index + 1)) {
      if (e.kind === EntryKind.Normal && state.entryCarriesKey(e.data, actor, command, idempotencyKey)) return true;
    }
    return false;
  }

  private hold(actor: string, command: SharedCommand, bytes: number): Promise<Result> {
    return new Promise<Result>((resolve, reject) => {
      const key = groupOf(actor, command);
      let group = this.held.get(key);
      if (group === undefined) this.held.set(key, (group = { actor, list: [] }));
      group.list.push({ command, items: itemsOf(command), bytes, resolve, reject });
      this.heldBytes += bytes;
      // Never appended: refused as overloaded (safe to retry) should the turn not come in time.
      this.heldTimer ??= setTimeout(
        () => this.dropHeld(new OverloadedError(`partition ${this.partition}: no loop turn within ${this.cfg.proposalTimeoutMs} ms to append the write`)),
        this.cfg.proposalTimeoutMs,
      );
      this.cfg.schedule();
    });
  }

  /** What is held, taken out (and the timer stopped). */
  private takeHeld(): Map<string, { readonly actor: string; readonly list: Held[] }> {
    const held = this.held;
    this.held = new Map();
    this.heldBytes = 0;
    if (this.heldTimer !== null) clearTimeout(this.heldTimer);
    this.heldTimer = null;
    return held;
  }

  private dropHeld(err: Error): void {
    for (const { list } of this.takeHeld().values()) for (const h of list) h.reject(err);
  }

  /**
   * Appends the commands propose() held since the last turn: those of one group as one command of
   * all their items, in the order they came (up to TOGETHER_MAX_ITEMS and TOGETHER_MAX_BYTES an
   * entry), each answered with its share of the result. The node's loop calls this at the start of
   * every turn, before it collects the entries to write.
   */
  proposeHeld(): void {
    if (this.held.size === 0) return;
    for (const { actor, list } of this.takeHeld().values()) {
      const perItem = this.copiesPerItem(list[0]!.command);
      let from = 0;
      while (from < list.length) {
        let to = from + 1;
        let items = list[from]!.items;
        let bytes = list[from]!.bytes;
        let copies = items * perItem;
        while (to < list.length) {
          const next = list[to]!;
          if (items + next.items > TOGETHER_MAX_ITEMS || bytes + next.bytes > TOGETHER_MAX_BYTES || copies + next.items * perItem > MAX_FANOUT) break;
          items += next.items;
          bytes += next.bytes;
          copies += next.items * perItem;
          to++;
        }
        this.appendTogether(actor, list.slice(from, to));
        from = to;
      }
    }
  }

  /**
   * The copies one item of `command` stores: for a publish, one per subscription of its topic, as this
   * replica's state holds them now (MAX_FANOUT each when it cannot tell); nothing to count for others.
   * Publishes that share an entry are applied together, each checked alone against MAX_FANOUT, so an
   * entry of them stores no more copies between them than one publish may: a thousand shared
   * publishes to a topic of a hundred subscriptions stored 100,000 copies in one apply, and with a
   * thousand subscriptions a million, holding every partition of the node for seconds (review of
   * 2026-12-07). Subscriptions created by entries not yet applied are not counted: a few more.
   */
  private copiesPerItem(command: SharedCommand): number {
    if (command.type !== 'topic.publish') return 0;
    return this.state.isOpen() ? this.state.subscriptionCount(command.name) : MAX_FANOUT;
  }

  /** Never throws: each command is answered, with its share of the entry's result or with why it was not appended. */
  private appendTogether(actor: string, held: readonly Held[]): void {
    let whole: Promise<Result>;
    const commands = held.map((h) => h.command);
    try {
      const ticket = this.append(actor, merged(commands));
      whole = this.waitFor(ticket.firstIndex, ticket.term, false);
    } catch (err) {
      for (const h of held) h.reject(err as Error);
      return;
    }
    whole.then(
      (r) => {
        let shares: Result[];
        try {
          shares = sharesOf(commands, r);
        } catch (err) {
          // A result not shaped as its command's (a bug): the entry applied, but whose share is what
          // cannot be told; every request learns so, none waits forever.
          const unknown = new OutcomeUnknownError(`partition ${this.partition}: the shared entry's result could not be dealt out: ${String(err)}`);
          for (const h of held) h.reject(unknown);
          return;
        }
        held.forEach((h, i) => h.resolve(shares[i]!));
      },
      (err: Error) => {
        for (const h of held) h.reject(err);
      },
    );
  }

  /**
   * Resolves with the result of the entry the leader appended at (index, term) for a command this
   * node forwarded to it, once this replica applies it: every replica computes the same result. Rejects
   * with NotCommittedError when another entry is applied there, and with OutcomeUnknownError when
   * this replica cannot tell: it applied past the index already (the leader's word came late), a
   * snapshot jumps over it, the replica closes, or proposalTimeoutMs passes. A change of leader alone
   * ends no wait, nor does a proposal of another term at the same index (this node's own, say, as
   * the next leader): whichever entry is applied there decides both.
   */
  awaitEntry(index: number, term: number): Promise<Result> {
    if (this.closed) return Promise.reject(new OutcomeUnknownError('the replica closed before the write applied here'));
    if (!this.state.isOpen() || index <= this.state.applied().index) {
      return Promise.reject(new OutcomeUnknownError(`entry ${index} applied here before the leader said it was the write's`));
    }
    // Two writes cannot be the same entry: a word repeated (a bug) is not trusted twice.
    if (this.proposals.awaits(index, term)) return Promise.reject(new OutcomeUnknownError(`entry ${index} is awaited already`));
    return this.waitFor(index, term, true);
  }

  /** A waiter for the entry at (index, term), settled by applyEntries or given up on after proposalTimeoutMs. */
  private waitFor(index: number, term: number, forwarded: boolean): Promise<Result> {
    return new Promise<Result>((resolve, reject) => {
      const waiter: Waiter = {
        forwarded,
        resolve,
        reject,
        timer: setTimeout(() => {
          // Stop waiting, and following: a late apply finds nobody (and makes no result for nobody).
          this.proposals.forget(index, waiter);
          reject(new OutcomeUnknownError(`no outcome within ${this.cfg.proposalTimeoutMs} ms`, true));
        }, this.cfg.proposalTimeoutMs),
      };
      this.proposals.track({ term, firstIndex: index, lastIndex: index }, [waiter]);
    });
  }

  /**
   * A linearizable read (ReadIndex): runs `fn` on the local state once this node has confirmed it is
   * still leader and has applied everything committed when the read arrived.
   */
  read<T>(fn: (state: BrokerStateMachine) => T): Promise<T> {
    if (this.closed) return Promise.reject(new ReplicaClosedError('replica closed'));
    const seq = ++this.readSeq;
    return new Promise<T>((resolve, reject) => {
      const w: ReadWaiter = {
        index: null,
        run: () => {
          try {
            resolve(fn(this.state));
          } catch (err) {
            reject(err as Error);
          }
        },
        reject,
      };
      try {
        this.raw.readIndex(seq);
        this.cfg.schedule();
      } catch (err) {
        if (err instanceof ProposalDroppedError) reject(new NotLeaderError(this.partition, err.leader));
        else reject(err as Error);
        return;
      }
      this.reads.set(seq, w);
    });
  }

  /** Calls `fn` with the messages each apply leased to a parked long poll (format 3), on every replica. */
  onDeliver(fn: (delivery: Delivery) => void): () => void {
    this.deliverListeners.add(fn);
    return () => this.deliverListeners.delete(fn);
  }

  /**
   * Calls `fn(channel, n)` whenever apply made n messages visible on a channel, and `fn(channel, 0)`
   * when it gave one a message that becomes visible later by time alone (for long polls).
   */
  onWake(fn: (channelId: number, visible: number) => void): () => void {
    this.wakeListeners.add(fn);
    return () => this.wakeListeners.delete(fn);
  }

  /** Step 3 of a Ready: apply committed entries, settle proposals, serve and fail reads. */
  applyReady(rd: Ready): void {
    if (rd.committedEntries.length > 0) this.applyEntries(rd.committedEntries);
    for (const rs of rd.readStates) {
      const w = this.reads.get(rs.context as number);
      if (w !== undefined) w.index = rs.index;
    }
    for (const ctx of rd.abortedReads) {
      const w = this.reads.get(ctx as number);
      if (w === undefined) continue;
      this.reads.delete(ctx as number);
      w.reject(new NotLeaderError(this.partition, this.leader()));
    }
    this.serveReads();
    if (rd.softState !== null && rd.softState.role !== 'leader') {
      // Leadership moved: what this node proposed may or may not commit under the next leader, and
      // this node, no longer leading, may not learn which for long. A forwarded write waits on: the
      // entry the leader named is applied here or replaced by another, whoever leads (a snapshot
      // past it, or its timer, ends the wait otherwise).
      for (const w of this.proposals.drainWhere((w) => !w.forwarded)) {
        clearTimeout(w.timer);
        w.reject(new OutcomeUnknownError('leadership changed before the write applied'));
      }
    }
  }

  private applyEntries(entries: readonly Entry[]): void {
    // Committed by the host on its schedule (NodeHost.commitDueStates).
    // Results are whole only for what a proposal here waits for (a receive's texts, otherwise).
    const applied = this.state.apply(entries, { defer: true, answered: (index, term) => this.proposals.awaits(index, term) });
    const byIndex = new Map(applied.map((a) => [a.index, a]));
    this.proposals.settle(entries, (w, outcome, e) => {
      clearTimeout(w.timer);
      if (outcome === Outcome.Overwritten) return w.reject(new NotCommittedError('another leader’s entry took its place'));
      const a = byIndex.get(e.index);
      if (a === undefined) return w.reject(new OutcomeUnknownError('entry applied before this node started'));
      // apply() leaves a receive's messages out only where no proposal waits (above): a wiring that
      // broke this would answer an empty receive and leave its messages leased, so it fails loudly.
      if (a.result.ok && (a.result.value as { unanswered?: unknown } | null)?.unanswered !== undefined) {
        return w.reject(new Error(`partition ${this.partition}: the result of entry ${e.index} was left out, yet a proposal waited for it`));
      }
      w.resolve(a.result);
    });
    for (const a of applied) {
      for (const d of a.delivered) notify(this.deliverListeners, d);
      for (const [ch, n] of a.woke) notify(this.wakeListeners, ch, n);
      for (const ch of a.retimed) notify(this.wakeListeners, ch, 0);
    }
  }

  private serveReads(): void {
    if (this.reads.size === 0) return;
    const applied = this.state.applied().index;
    for (const [seq, w] of this.reads) {
      if (w.index === null || w.index > applied) continue;
      this.reads.delete(seq);
      w.run();
    }
  }

  /** After a snapshot replaced the state: proposals up to it have unknown outcomes here. */
  snapshotInstalled(index: number): void {
    for (const w of this.proposals.dropUpTo(index)) {
      clearTimeout(w.timer);
      w.reject(new OutcomeUnknownError('a snapshot replaced the log before the write applied here'));
    }
    this.serveReads();
  }

  close(): void {
    this.closed = true;
    // Never appended: safe to try again, at the next leader.
    this.dropHeld(new ReplicaClosedError('replica closed'));
    for (const w of this.proposals.drain()) {
      clearTimeout(w.timer);
      // Appended (maybe committed) already: it may still apply under the next leader.
      w.reject(new OutcomeUnknownError('the replica closed before the write applied here'));
    }
    for (const w of this.reads.values()) w.reject(new ReplicaClosedError('replica closed'));
    this.reads.clear();
  }
}

/** Calls every listener; a waiting request's callback must never break the loop that applies for everyone. */
function notify<A extends unknown[]>(listeners: Set<(...args: A) => void>, ...args: A): void {
  for (const fn of listeners) {
    try {
      fn(...args);
    } catch {
      listeners.delete(fn);
    }
  }
}
