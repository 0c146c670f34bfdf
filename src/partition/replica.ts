// One partition's replica on this node: the Raft core, its log (a view of the node's log store) and
// the broker state it applies to. The node host drives every replica's Ready in one loop; this class
// holds what is per partition: proposals waiting for their entry to apply, reads waiting for their
// ReadIndex, and long polls waiting for messages.
import {
  DropReason,
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
import { encodeEnvelope, ok, type BodyMissingError, type Command, type Delivery, type FormatTooNewError, type MessageInput, type Result } from '../store/broker/index.js';

/** Why a replica stopped for good in this process (PartitionReplica.halt). */
export type HaltReason = FormatTooNewError | BodyMissingError;
import type { BrokerStateMachine } from '../store/broker/index.js';
import { NotCommittedError, NotLeaderError, OutcomeUnknownError, OverloadedError, ReplicaClosedError } from './errors.js';

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

/** A send as it may share its entry (sharesEntry). */
type SharedSend = Extract<Command, { type: 'queue.send' }>;

/** A send held for the loop's next turn, to be appended with the others to its queue (PartitionReplica.propose). */
interface HeldSend {
  readonly command: SharedSend;
  /** Its bodies' and attributes' UTF-8 bytes. */
  readonly bytes: number;
  resolve(r: Result): void;
  reject(e: Error): void;
}

/**
 * The most messages, and bytes of bodies and attributes, one entry of sends appended together takes:
 * a few turns' worth under load, far below what an entry holds (SLOTS messages) and half a Raft
 * message (maxSizePerMsg, 1 MiB). A request past them alone goes alone, as it always did.
 */
export const TOGETHER_MAX_MESSAGES = 1_000;
export const TOGETHER_MAX_BYTES = 512 * 1024;
/** Bytes a replica holds at most: past them a send is appended at once, where the core's overload check applies. */
const HELD_MAX_BYTES = 8 << 20;

/**
 * Whether a command may share its entry with others (PartitionReplica.propose): a user's send to a
 * queue without an Idempotency-Key or deduplication ids, holding exactly what this build's API makes
 * (a peer's malformed one goes alone, to be refused alone). Its result is one item per message, in
 * order, whatever else the entry holds, so each request's answer is its slice of the entry's; and
 * nothing in its apply fails one message alone (the API checked every limit). Publishes are not:
 * one publish stores at most MAX_FANOUT copies, so two that pass alone could fail together.
 */
export function sharesEntry(actor: string | null, command: Command, idempotencyKey?: string): command is SharedSend {
  if (actor === null || idempotencyKey !== undefined || command.type !== 'queue.send') return false;
  const c = command as unknown as Record<string, unknown>;
  if (Object.keys(c).length !== 3 || typeof c.name !== 'string' || !Array.isArray(c.messages) || c.messages.length === 0) return false;
  return (c.messages as unknown[]).every(isPlainMessage);
}

const MESSAGE_FIELDS: ReadonlySet<string> = new Set(['body', 'attributes', 'delaySeconds']);

/** A message of text with string attributes and maybe a delay: nothing else, no deduplication id. */
function isPlainMessage(m: unknown): boolean {
  if (typeof m !== 'object' || m === null || Array.isArray(m)) return false;
  const { body, attributes, delaySeconds } = m as Record<string, unknown>;
  if (!Object.keys(m).every((k) => MESSAGE_FIELDS.has(k))) return false;
  if (typeof body !== 'string' || typeof attributes !== 'object' || attributes === null || Array.isArray(attributes)) return false;
  if (!Object.values(attributes).every((v) => typeof v === 'string')) return false;
  return delaySeconds === undefined || Number.isSafeInteger(delaySeconds);
}

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
  /** Sends held since the last loop turn, by actor, then queue (proposeHeld()). */
  private held = new Map<string, Map<string, HeldSend[]>>();
  /** Their bytes (HeldSend.bytes), at most HELD_MAX_BYTES. */
  private heldBytes = 0;
  /** Refuses the held sends should no loop turn come for them in time (a stalled disk). */
  private heldTimer: NodeJS.Timeout | null = null;
  private readSeq = 0;
  private readonly wakeListeners = new Set<(channelId: number, visible: number) => void>();
  private readonly deliverListeners = new Set<(delivery: Delivery) => void>();
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
        maxInflightMsgs: 256,
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
  }

  /**
   * Proposes a command, stamped with this leader's clock; resolves with the command's result once its
   * entry is applied here. Rejects with NotLeaderError (nothing appended: forward or retry),
   * NotCommittedError (overwritten: never applied) or OutcomeUnknownError (may still apply).
   */
  propose(actor: string | null, command: Command, idempotencyKey?: string): Promise<Result> {
    // A send (sharesEntry) waits for the loop's next turn, which appends the sends held for its queue
    // as one entry: its entry would only be written and sent at that turn anyway, and every entry
    // costs each replica its own record, frame and apply, which a send of 1 KiB pays several times over.
    if (!this.closed && this.isLeader() && sharesEntry(actor, command, idempotencyKey)) {
      const bytes = sendBytes(command.messages);
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

  private hold(actor: string, command: SharedSend, bytes: number): Promise<Result> {
    return new Promise<Result>((resolve, reject) => {
      let byQueue = this.held.get(actor);
      if (byQueue === undefined) this.held.set(actor, (byQueue = new Map()));
      let list = byQueue.get(command.name);
      if (list === undefined) byQueue.set(command.name, (list = []));
      list.push({ command, bytes, resolve, reject });
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
  private takeHeld(): Map<string, Map<string, HeldSend[]>> {
    const held = this.held;
    this.held = new Map();
    this.heldBytes = 0;
    if (this.heldTimer !== null) clearTimeout(this.heldTimer);
    this.heldTimer = null;
    return held;
  }

  private dropHeld(err: Error): void {
    for (const byQueue of this.takeHeld().values()) for (const list of byQueue.values()) for (const h of list) h.reject(err);
  }

  /**
   * Appends the sends propose() held since the last turn: those of one user to one queue as one
   * send of all their messages, in the order they came (up to TOGETHER_MAX_MESSAGES and
   * TOGETHER_MAX_BYTES an entry), each answered with its own messages' slice of the result. The
   * node's loop calls this at the start of every turn, before it collects the entries to write.
   */
  proposeHeld(): void {
    if (this.held.size === 0) return;
    for (const [actor, byQueue] of this.takeHeld()) {
      for (const list of byQueue.values()) {
        let from = 0;
        while (from < list.length) {
          let to = from + 1;
          let messages = list[from]!.command.messages.length;
          let bytes = list[from]!.bytes;
          while (to < list.length) {
            const next = list[to]!;
            if (messages + next.command.messages.length > TOGETHER_MAX_MESSAGES || bytes + next.bytes > TOGETHER_MAX_BYTES) break;
            messages += next.command.messages.length;
            bytes += next.bytes;
            to++;
          }
          this.appendTogether(actor, list.slice(from, to));
          from = to;
        }
      }
    }
  }

  /** Never throws: each send is answered, with its slice of the entry's result or with why it was not appended. */
  private appendTogether(actor: string, sends: readonly HeldSend[]): void {
    let whole: Promise<Result>;
    try {
      const first = sends[0]!.command;
      let command: Command = first;
      if (sends.length > 1) {
        const messages: SharedSend['messages'][number][] = [];
        for (const h of sends) messages.push(...h.command.messages);
        command = { type: 'queue.send', name: first.name, messages };
      }
      const ticket = this.append(actor, command);
      whole = this.waitFor(ticket.firstIndex, ticket.term, false);
    } catch (err) {
      for (const h of sends) h.reject(err as Error);
      return;
    }
    let at = 0;
    for (const h of sends) {
      const from = at;
      const n = h.command.messages.length;
      at += n;
      whole.then((r) => h.resolve(sends.length === 1 ? r : sliceOf(r, from, n)), h.reject);
    }
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

  /**
   * Calls `fn(channel, n)` whenever apply made n messages visible on a channel, and `fn(channel, 0)`
   * when it gave one a message that becomes visible later by time alone (for long polls).
   */
  /** Calls `fn` with the messages each apply leased to a parked long poll (format 3), on every replica. */
  onDeliver(fn: (delivery: Delivery) => void): () => void {
    this.deliverListeners.add(fn);
    return () => this.deliverListeners.delete(fn);
  }

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

/** The UTF-8 bytes of the messages' bodies and attributes (plain messages: sharesEntry). */
function sendBytes(messages: readonly MessageInput[]): number {
  let n = 0;
  for (const m of messages) {
    n += Buffer.byteLength(m.body as string, 'utf8');
    for (const k in m.attributes) n += Buffer.byteLength(k, 'utf8') + Buffer.byteLength(m.attributes[k]!, 'utf8');
  }
  return n;
}

/** One request's share of the result of a send appended with others: its `n` items from `from`; a failure is everyone's. */
function sliceOf(r: Result, from: number, n: number): Result {
  if (!r.ok) return r;
  const items = (r.value as { items: unknown[] }).items;
  return ok({ items: items.slice(from, from + n) });
}
