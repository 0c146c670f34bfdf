// What the parts of the state machine share (access, queues, messages, topics, views): the partition's
// store, which outlives commands, and the context of the one command being applied.
import type { BodySource, EntryBodies } from './bodies.js';
import type { FilterCache } from './filters.js';
import { ok, type Delivery, type Failure, type Result } from './commands.js';
import type { ChannelRow } from './schema.js';
import type { Statements } from './statements.js';

export const DEDUP_WINDOW_MS = 5 * 60 * 1000;
export const IDEMPOTENCY_WINDOW_MS = 24 * 60 * 60 * 1000;

/** A queue's channel row with the queue's name. */
export type QueueRow = ChannelRow & { name: string };

/** One partition's state as every part works on it: made once when the state machine opens. */
export interface Store {
  readonly st: Statements;
  readonly partition: number;
  /**
   * Queues as sends read them (name, owner, id, delay, retention: what only queue.create and
   * queue.delete change), so that a send does not query the queue for every message. Any command
   * that may change a queue or a grant empties it, and so does every rollback (of a command, a
   * batch or a group, whose rows it may have cached): replicas answer the same with or without it.
   * It outlives batches, so the first send of a batch finds it too. Its rows' counters and next
   * sequence go stale: sends read neither (enqueueMany takes sequences with an update).
   */
  readonly sendTargets: Map<string, QueueRow>;
  /**
   * Subscription filters as publishes match them, parsed once (filters.ts, which says why replicas
   * answer the same with or without it). Outlives batches and rollbacks.
   */
  readonly filters: FilterCache;
  /** Where rows of format 4 read their bodies: the partition's log, once its host attaches it. */
  bodies: BodySource | null;
  /**
   * Rows with a sequence from this one on hold their bodies in the log (bodies.ts): set by the raise
   * to format 4, Infinity before it.
   */
  bodiesFrom: number;
  /** The entry a body was read from last, walked once: the messages of one batch read it once. */
  lastBodyEntry: EntryBodies | null;
}

/** The per-apply context: the entry's position and the clock. */
export interface Ctx {
  readonly index: number;
  readonly now: number;
  readonly actor: string | null;
  /** Channel id → messages made visible by this command. */
  woke: Map<number, number>;
  retimed: Set<number>;
  /** Messages leased to parked long polls by this command (format 3). */
  delivered: Delivery[];
  /**
   * Whether this replica answers the command, so that its result must be whole (apply()'s
   * `answered`, or an Idempotency-Key that keeps the result). A receive nobody here answers leases
   * the same messages and leaves out their texts (messages.ts receive()).
   */
  readonly answers: boolean;
  /**
   * Whether a lease this entry makes stays leased through it, however short (format 12,
   * OWN_LEASES_HELD): its lease id is the entry's index, which a second lease in the entry would
   * share, and with it the receipt handle.
   */
  readonly holdsOwnLeases: boolean;
  /**
   * Whether a message whose last allowed lease ended goes to its dead-letter queue before a purge, a
   * delete or its retention deletes it (format 15, DEAD_LETTERS_FIRST; messages.ts, deadLetterDue).
   */
  readonly deadLettersFirst: boolean;
  /**
   * Whether a purge or a delete deletes at most CLEAR_BUDGET messages in its entry and leaves the
   * rest to sweeps (format 15, BOUNDED_DELETES; messages.ts, clearRows).
   */
  readonly boundedDeletes: boolean;
  /** What is left of the messages this entry may delete for purges and deletes (CLEAR_BUDGET). */
  clearBudget: number;
  /**
   * Whether a parked poll that is served stays in the state, with where its messages are, until its
   * poll looks again (format 16, SERVED_POLLS_KEPT; messages.ts, serveWaiters).
   */
  readonly keepsServed: boolean;
  /**
   * The bytes of bodies and attributes one receive leases at most, past its first message (format
   * 17, BOUNDED_RECEIVES: RECEIVE_BYTES); null for no limit.
   */
  readonly receiveBytes: number | null;
  /**
   * What is left of the due messages this entry may make ready or dead-letter (format 17,
   * BOUNDED_PROMOTION: PROMOTE_BUDGET); null for no limit.
   */
  promoteBudget: number | null;
}

export function wokeUp(ctx: Ctx, channelId: number, visible: number): void {
  if (visible > 0) ctx.woke.set(channelId, (ctx.woke.get(channelId) ?? 0) + visible);
}

/** A refusal raised deep in a check; apply turns it into the command's result. */
export class Refusal extends Error {
  constructor(readonly failure: Failure) {
    super(failure.detail);
  }
}

/** Runs a read, answering a refusal raised in its checks as its result. */
export function read<T>(f: () => T): Result<T> {
  try {
    return ok(f());
  } catch (err) {
    if (err instanceof Refusal) return err.failure;
    throw err;
  }
}

export function meta(s: Store, key: 'applied_index' | 'applied_term' | 'clock'): number {
  return (s.st.getMeta.get(key) as { value: number }).value;
}

/** The partition's log format in force (format.ts): 1 where no entry raised it. */
export function format(s: Store): number {
  return (s.st.getMeta.get('format') as { value: number } | undefined)?.value ?? 1;
}

/** The first sequence of rows whose bodies are in the log (bodies.ts), or Infinity before format 4. */
export function bodiesFrom(s: Store): number {
  return (s.st.getMeta.get('bodies_from') as { value: number } | undefined)?.value ?? Infinity;
}

/** The partition's clock: the largest leader stamp applied. */
export function clock(s: Store): number {
  return meta(s, 'clock');
}

/**
 * A time as ISO 8601 text. The last one is kept: the messages a receive returns were often sent in
 * the same millisecond (a batch), and a Date and its text per message were 1% of a replica's busy
 * time under receive + ack.
 */
export function iso(ms: number): string {
  if (ms !== lastIso.ms) {
    lastIso.text = new Date(ms).toISOString();
    lastIso.ms = ms;
  }
  return lastIso.text;
}
const lastIso = { ms: Number.NaN, text: '' };
export const seconds = (ms: number): number => Math.round(ms / 1000);
