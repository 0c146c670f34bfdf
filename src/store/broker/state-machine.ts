// The broker's replicated state machine for one partition: applies committed log entries to SQLite.
//
// What must hold:
// - Deterministic: time comes from the entries (the clock is the largest stamp applied), ids from the
//   log position; no local clock, no randomness, no environment. The same log gives the same state.
// - Exactly once: the applied index is written in the same transaction as the changes it covers.
// - Permissions are checked here, against the replicated state, so no forwarded or replayed command
//   can bypass them.
import { createHash } from 'node:crypto';
import { rename, rm } from 'node:fs/promises';
import { dirname } from 'node:path';
import type { Kysely } from 'kysely';
import Database, { type Statement } from 'better-sqlite3';
import {
  ErrorCode,
  decodeEnvelope,
  fail,
  ok,
  type ChannelRef,
  type Command,
  type Envelope,
  type Failure,
  type HandleOutcome,
  type MessageInput,
  type ReceivedMessage,
  type Result,
  type SentMessage,
} from './commands.js';
import { fsyncPathAsync } from '../durable.js';
import { brokerMigrations } from './migrations.js';
import { MessageState, type BrokerDatabase, type ChannelRow, type MessageRow, type TopicRow } from './schema.js';
import { openSqlite, type Sqlite } from './sqlite.js';

export const DEDUP_WINDOW_MS = 5 * 60 * 1000;
export const IDEMPOTENCY_WINDOW_MS = 24 * 60 * 60 * 1000;
/** Expired idempotency records and deduplication ids are deleted at every entry index divisible by this. */
export const HOUSEKEEPING_EVERY = 64;
/** Dead-letter deliveries are deduplicated by the original message id for a day: forwarder retries. */
const DEADLETTER_DEDUP_MS = IDEMPOTENCY_WINDOW_MS;
/**
 * Pages (4 KiB) a snapshot copies per event-loop turn: about a millisecond of work, so requests and
 * the Raft loop interleave with a copy of any size.
 */
const SNAPSHOT_PAGES_PER_STEP = 64;
/** Message rows one insert statement carries (9 parameters each; SQLite allows 32,766). */
const INSERT_ROWS = 100;

export interface ApplyEntry {
  readonly index: number;
  readonly term: number;
  /** 0: a command; 1: a Raft no-op (advances the applied index only). */
  readonly kind: number;
  readonly data: Uint8Array;
}

export interface Applied {
  readonly index: number;
  readonly result: Result;
  /**
   * Channels that gained visible messages, with how many: that many long polls' worth waiting on
   * them should wake (a poll takes up to its maxMessages).
   */
  readonly woke: readonly (readonly [channelId: number, visible: number])[];
  /**
   * Channels that gained a message that becomes visible later by time alone (a delay, a lease): long
   * polls waiting on them should look again at when that is.
   */
  readonly retimed: readonly number[];
}

export interface QueueView {
  name: string;
  owner: string;
  visibilityTimeoutSeconds: number;
  maxDeliveries: number | null;
  deadLetterQueue: string | null;
  delaySeconds: number;
  retentionSeconds: number;
  createdAt: string;
  stats: { visible: number; inFlight: number; delayed: number; dropped: number; oldestMessageAgeSeconds: number };
}

export interface TopicView {
  name: string;
  owner: string;
  subscribe: 'anyone' | 'granted';
  createdAt: string;
  stats: { subscriptions: number; published: number };
}

export interface SubscriptionView {
  topic: string;
  name: string;
  owner: string;
  visibilityTimeoutSeconds: number;
  maxDeliveries: number | null;
  deadLetterQueue: string | null;
  filter: Record<string, string> | null;
  createdAt: string;
  stats: { visible: number; inFlight: number; delayed: number; dropped: number; oldestMessageAgeSeconds: number };
}

const iso = (ms: number): string => new Date(ms).toISOString();
const seconds = (ms: number): number => Math.round(ms / 1000);

/** Receipt handles name one delivery: channel, message sequence and the lease (receive entry index). */
export function encodeReceipt(channelId: number, seq: number, leaseId: number): string {
  return Buffer.from(`${channelId}.${seq}.${leaseId}`).toString('base64url');
}

function decodeReceipt(h: string): { channelId: number; seq: number; leaseId: number } | null {
  if (h.length === 0 || h.length > 200) return null;
  const parts = Buffer.from(h, 'base64url').toString('utf8').split('.');
  if (parts.length !== 3 || !parts.every((p) => /^\d{1,15}$/.test(p))) return null;
  const [channelId, seq, leaseId] = parts.map(Number) as [number, number, number];
  // Lease ids are log indexes of receives, so never 0: a message never leased has no valid handle.
  if (leaseId === 0) return null;
  return { channelId, seq, leaseId };
}

function matchesFilter(filter: string | null, attributes: Readonly<Record<string, string>>): boolean {
  if (filter === null) return true;
  const f = JSON.parse(filter) as Record<string, string>;
  for (const [k, v] of Object.entries(f)) if (attributes[k] !== v) return false;
  return true;
}

/** The queue or topic a command acts on, which scopes its Idempotency-Key. */
function resourceOf(c: Command): string {
  switch (c.type) {
    case 'queue.create':
    case 'queue.delete':
    case 'queue.purge':
    case 'queue.send':
      return `queue:${c.name}`;
    case 'topic.create':
    case 'topic.delete':
    case 'topic.publish':
      return `topic:${c.name}`;
    case 'grant.put':
    case 'grant.delete':
      return `${c.kind}:${c.name}`;
    case 'subscription.create':
    case 'subscription.delete':
      return `topic:${c.topic}`;
    case 'receive':
    case 'ack':
    case 'nack':
    case 'lease':
      return 'queue' in c.channel ? `queue:${c.channel.queue}` : `topic:${c.channel.topic}`;
    default:
      return c.type;
  }
}

function parseActions(json: string): string[] {
  return JSON.parse(json) as string[];
}

/** The per-apply context: the entry's position and the clock. */
interface Ctx {
  readonly index: number;
  readonly now: number;
  readonly actor: string | null;
  /** Channel id → messages made visible by this command. */
  woke: Map<number, number>;
  retimed: Set<number>;
}

function wokeUp(ctx: Ctx, channelId: number, visible: number): void {
  if (visible > 0) ctx.woke.set(channelId, (ctx.woke.get(channelId) ?? 0) + visible);
}

export class BrokerStateMachine {
  private readonly st: ReturnType<typeof prepare>;

  private constructor(
    readonly sqlite: Sqlite,
    private readonly kysely: Kysely<BrokerDatabase>,
    readonly partition: number,
    readonly path: string,
  ) {
    this.st = prepare(sqlite);
  }

  /** Opens (creating and migrating if needed) the state database of one partition. */
  static async open(path: string, partition: number, synchronous: 'FULL' | 'NORMAL' = 'NORMAL'): Promise<BrokerStateMachine> {
    const { sqlite, kysely } = await openSqlite<BrokerDatabase>(path, brokerMigrations, { synchronous });
    // Housekeeping prunes expired deduplication ids of every channel at once. An index, not a
    // migration: snapshot images carry the migration table, and a node of the previous version must
    // still open an image made by this one during a rolling upgrade (an extra index is harmless).
    sqlite.exec('create index if not exists dedup_expires_at on dedup (expires_at)');
    return new BrokerStateMachine(sqlite, kysely, partition, path);
  }

  async close(): Promise<void> {
    await this.kysely.destroy();
  }

  private meta(key: string): number {
    return (this.st.getMeta.get(key) as { value: number }).value;
  }

  applied(): { index: number; term: number } {
    return { index: this.meta('applied_index'), term: this.meta('applied_term') };
  }

  /** The partition's clock: the largest leader stamp applied. */
  clock(): number {
    return this.meta('clock');
  }

  // ---- apply ----

  /**
   * Applies committed entries in one transaction, with the applied index. Entries at or below the
   * applied index were applied before (a replay after a crash) and are skipped; a gap is a bug.
   *
   * Commands check before they write, so a refused one writes nothing and needs no savepoint. One
   * that breaks an assumption of the code (a malformed field that slipped through, a constraint)
   * throws: the batch is rolled back and applied again one command at a time, each in a savepoint,
   * so that it fails alone, the same way on every replica, instead of halting the partition there.
   * A savepoint for every command cost about a tenth of a node's busy time under single sends.
   */
  apply(entries: readonly ApplyEntry[]): Applied[] {
    try {
      return this.applyBatch(entries, false);
    } catch (err) {
      if (!(err instanceof MalformedCommand)) throw err;
      return this.applyBatch(entries, true);
    }
  }

  private applyBatch(entries: readonly ApplyEntry[], guarded: boolean): Applied[] {
    this.sendTargets.clear();
    const out: Applied[] = [];
    const run = this.sqlite.transaction(() => {
      let applied = this.meta('applied_index');
      let clock = this.meta('clock');
      let term: number | null = null;
      // Single sends to one queue by its owner, one entry after another: stored together (sends()).
      let sends: PendingSends | null = null;
      const flush = (): void => {
        if (sends !== null) this.storeSends(sends, out);
        sends = null;
      };
      for (const e of entries) {
        if (e.index <= applied) continue;
        if (e.index !== applied + 1) throw new Error(`apply of ${e.index} after ${applied}: a gap in the log`);
        applied = e.index;
        term = e.term;
        // Housekeeping at fixed log positions (not per apply call, whose batches differ between
        // replicas), so that every replica holds the same rows at the same index. Lookups check
        // expiry themselves: pruning only frees space.
        if (e.index % HOUSEKEEPING_EVERY === 0) {
          flush();
          this.st.pruneIdempotency.run(clock);
          this.st.pruneAllDedup.run(clock);
        }
        const env = e.kind === 0 ? parseEnvelope(e.data) : null;
        if (env !== null && env.time > clock) clock = env.time;
        const ch = guarded || env === null ? undefined : this.bulkSendTarget(env);
        if (ch === undefined || (sends !== null && sends.ch.id !== ch.id)) flush();
        if (e.kind !== 0) {
          out.push({ index: e.index, result: ok(null), woke: [], retimed: [] });
          continue;
        }
        if (env === null) {
          out.push({ index: e.index, result: fail(ErrorCode.ValidationFailed, 'undecodable command'), woke: [], retimed: [] });
          continue;
        }
        const ctx: Ctx = { index: e.index, now: clock, actor: env.actor, woke: new Map(), retimed: new Set() };
        if (ch !== undefined) {
          sends ??= { ch, sends: [] };
          sends.sends.push({ at: out.length, ctx, messages: (env.command as Extract<Command, { type: 'queue.send' }>).messages });
          out.push({ index: e.index, result: ok(null), woke: [], retimed: [] });
          continue;
        }
        out.push({ index: e.index, result: guarded ? this.applyGuarded(env, ctx) : this.applyUnguarded(env, ctx), woke: [...ctx.woke], retimed: [...ctx.retimed] });
      }
      flush();
      this.st.setMeta.run(applied, 'applied_index');
      if (term !== null) this.st.setMeta.run(term, 'applied_term');
      this.st.setMeta.run(clock, 'clock');
    });
    run();
    return out;
  }

  /** Applies one command in the batch's transaction; an error of the code aborts the batch (apply()). */
  private applyUnguarded(env: Envelope, ctx: Ctx): Result {
    try {
      return this.applyEnvelope(env, ctx);
    } catch (err) {
      if (isStorageFailure(err)) throw err;
      throw new MalformedCommand(err);
    }
  }

  /**
   * Applies one command inside a savepoint. A command that breaks an assumption of the code (a
   * malformed field that slipped through, a constraint) fails alone, the same way on every replica,
   * instead of halting the partition at that index forever. Storage failures (I/O, full disk,
   * corruption) are not the command's fault and stop the apply.
   */
  private applyGuarded(env: Envelope, ctx: Ctx): Result {
    try {
      return this.sqlite.transaction(() => this.applyEnvelope(env, ctx))();
    } catch (err) {
      if (isStorageFailure(err)) throw err;
      ctx.woke.clear();
      ctx.retimed.clear();
      return fail(ErrorCode.ValidationFailed, 'malformed command');
    }
  }

  private applyEnvelope(env: Envelope, ctx: Ctx): Result {
    // Keys are scoped per user and resource: the same key on another queue or topic is another
    // request, wherever its partition is (a partition cannot see the keys of the others).
    const key = env.idempotencyKey === undefined ? undefined : `${resourceOf(env.command)}\u0000${env.idempotencyKey}`;
    const fingerprint = key === undefined ? '' : createHash('sha256').update(JSON.stringify(env.command)).digest('hex');
    if (key !== undefined && env.actor !== null) {
      const prior = this.st.getIdempotency.get(env.actor, key, ctx.now) as { fingerprint: string; result: string } | undefined;
      if (prior !== undefined) {
        if (prior.fingerprint !== fingerprint) return fail(ErrorCode.Conflict, 'this Idempotency-Key was used for a different request');
        return JSON.parse(prior.result) as Result;
      }
    }
    let result: Result;
    try {
      result = this.dispatch(env.command, ctx);
    } catch (err) {
      if (err instanceof Refusal) result = err.failure;
      else throw err;
    }
    // A receive that leased nothing changed nothing: its key stays free, so that a long poll may
    // propose again under the same Idempotency-Key and bind it to the receive that finds messages.
    const emptyReceive = env.command.type === 'receive' && result.ok && (result.value as { messages: unknown[] }).messages.length === 0;
    if (key !== undefined && env.actor !== null && !emptyReceive) {
      this.st.putIdempotency.run(env.actor, key, fingerprint, JSON.stringify(result), ctx.now + IDEMPOTENCY_WINDOW_MS);
    }
    return result;
  }

  /**
   * Queues as sends read them (name, owner, id, delay, retention: what only queue.create and
   * queue.delete change), so that a send does not query the queue for every message. Any command
   * that may change a queue or a grant empties it, and so does every batch's start (a rolled-back
   * batch leaves nothing behind): replicas answer the same with or without it.
   */
  private readonly sendTargets = new Map<string, ChannelRow & { name: string }>();
  /** Multi-row message inserts, by row count (enqueueMany). */
  private readonly insertStatements = new Map<number, Statement>();

  /** The commands that change no queue definition and no grant: the send-target cache survives them. */
  private static readonly KEEPS_SEND_TARGETS: ReadonlySet<Command['type']> = new Set<Command['type']>([
    'queue.send',
    'receive',
    'ack',
    'nack',
    'lease',
    'topic.publish',
    'sweep',
    'outbox.done',
    'deadletter.deliver',
    'queue.purge',
  ]);

  private dispatch(c: Command, ctx: Ctx): Result {
    if (!BrokerStateMachine.KEEPS_SEND_TARGETS.has(c.type)) this.sendTargets.clear();
    switch (c.type) {
      case 'user.register':
        return this.register(c.username, c.passwordHash, ctx);
      case 'queue.create':
        return this.createQueue(c, ctx);
      case 'queue.delete':
        return this.deleteQueue(c.name, ctx);
      case 'queue.purge':
        return this.purgeQueue(c.name, ctx);
      case 'grant.put':
        return this.putGrant(c.kind, c.name, c.username, c.actions, ctx);
      case 'grant.delete':
        return this.deleteGrant(c.kind, c.name, c.username, ctx);
      case 'queue.send':
        return this.sendToQueue(c.name, c.messages, ctx);
      case 'receive':
        return this.receive(c.channel, c.maxMessages, c.visibilityTimeoutSeconds, ctx);
      case 'ack':
        return this.ack(c.channel, c.receiptHandles, ctx);
      case 'nack':
        return this.nack(c.channel, c.receiptHandles, c.delaySeconds, ctx);
      case 'lease':
        return this.extendLeases(c.channel, c.receiptHandles, c.visibilityTimeoutSeconds, ctx);
      case 'topic.create':
        return this.createTopic(c.name, c.subscribe, ctx);
      case 'topic.delete':
        return this.deleteTopic(c.name, ctx);
      case 'topic.publish':
        return this.publish(c.name, c.messages, ctx);
      case 'subscription.create':
        return this.createSubscription(c, ctx);
      case 'subscription.delete':
        return this.deleteSubscription(c.topic, c.name, ctx);
      case 'deadletter.deliver':
        return this.deliverDeadLetters(c, ctx);
      case 'outbox.done':
        return this.outboxDone(c.ids, ctx);
      case 'sweep':
        return this.sweep(ctx);
      default:
        return fail(ErrorCode.ValidationFailed, `unknown command ${(c as { type: string }).type}`);
    }
  }

  private requireActor(ctx: Ctx): string {
    if (ctx.actor === null) throw new Refusal(fail(ErrorCode.Forbidden, 'this command needs a user'));
    return ctx.actor;
  }

  // ---- users ----

  private register(username: string, passwordHash: string, ctx: Ctx): Result {
    if (this.st.getUser.get(username) !== undefined) return fail(ErrorCode.Conflict, `user '${username}' exists`);
    this.st.insertUser.run(username, passwordHash, ctx.now);
    return ok({ username, createdAt: iso(ctx.now) });
  }

  getUser(username: string): { username: string; passwordHash: string; createdAt: string } | null {
    const u = this.st.getUser.get(username) as { username: string; password_hash: string; created_at: number } | undefined;
    return u === undefined ? null : { username: u.username, passwordHash: u.password_hash, createdAt: iso(u.created_at) };
  }

  // ---- access ----

  private grantActions(kind: 'queue' | 'topic', name: string, user: string): string[] {
    const g = this.st.getGrant.get(kind, name, user) as { actions: string } | undefined;
    return g === undefined ? [] : parseActions(g.actions);
  }

  /** The queue and its channel, if `user` may see it (owner or any grant); otherwise a 404. */
  private visibleQueue(name: string, user: string): ChannelRow & { name: string } {
    const q = this.st.getQueue.get(name) as (ChannelRow & { name: string }) | undefined;
    if (q === undefined) throw new Refusal(fail(ErrorCode.NotFound, `queue '${name}' not found`));
    if (q.owner !== user && this.grantActions('queue', name, user).length === 0) {
      throw new Refusal(fail(ErrorCode.NotFound, `queue '${name}' not found`));
    }
    return q;
  }

  private requireQueueRight(q: ChannelRow & { name: string }, user: string, action: 'send' | 'receive'): void {
    if (q.owner === user) return;
    if (!this.grantActions('queue', q.name, user).includes(action)) {
      throw new Refusal(fail(ErrorCode.Forbidden, `no '${action}' right on queue '${q.name}'`));
    }
  }

  private requireOwner(owner: string, user: string, what: string): void {
    if (owner !== user) throw new Refusal(fail(ErrorCode.Forbidden, `only the owner may ${what}`));
  }

  /** A topic is visible to its owner, to grantees, and to everyone when anyone may subscribe. */
  private visibleTopic(name: string, user: string): TopicRow {
    const t = this.st.getTopic.get(name) as TopicRow | undefined;
    const hidden = (): never => {
      throw new Refusal(fail(ErrorCode.NotFound, `topic '${name}' not found`));
    };
    if (t === undefined) return hidden();
    if (t.owner !== user && t.subscribe_policy !== 'anyone' && this.grantActions('topic', name, user).length === 0) hidden();
    return t;
  }

  /** Resolves a receive/ack/nack/lease target and checks the caller may consume from it. */
  private consumable(ref: ChannelRef, user: string): ChannelRow {
    if ('queue' in ref) {
      const q = this.visibleQueue(ref.queue, user);
      this.requireQueueRight(q, user, 'receive');
      return q;
    }
    const s = this.st.getSubscription.get(ref.topic, ref.subscription) as (ChannelRow & { topic_owner: string }) | undefined;
    if (s === undefined || (s.owner !== user && s.topic_owner !== user)) {
      throw new Refusal(fail(ErrorCode.NotFound, `subscription '${ref.subscription}' of topic '${ref.topic}' not found`));
    }
    // The topic's owner may see and delete a subscription, but only its owner consumes from it.
    if (s.owner !== user) throw new Refusal(fail(ErrorCode.Forbidden, 'only the subscription owner may consume from it'));
    return s;
  }

  // ---- queues ----

  private createQueue(c: Extract<Command, { type: 'queue.create' }>, ctx: Ctx): Result {
    const user = this.requireActor(ctx);
    if (this.st.getQueue.get(c.name) !== undefined) return fail(ErrorCode.Conflict, `queue '${c.name}' exists`);
    if (c.deadLetterQueue === c.name) return fail(ErrorCode.ValidationFailed, 'a queue cannot be its own dead-letter queue');
    this.st.insertChannel.run(
      ctx.index,
      'queue',
      user,
      c.visibilityTimeoutSeconds * 1000,
      c.maxDeliveries,
      c.deadLetterQueue,
      c.delaySeconds * 1000,
      c.retentionSeconds * 1000,
      ctx.now,
    );
    this.st.insertQueue.run(c.name, ctx.index);
    return ok(this.queueView(this.st.getQueue.get(c.name) as ChannelRow & { name: string }, ctx.now));
  }

  private deleteQueue(name: string, ctx: Ctx): Result {
    const user = this.requireActor(ctx);
    const q = this.visibleQueue(name, user);
    this.requireOwner(q.owner, user, `delete queue '${name}'`);
    this.dropChannel(q.id);
    this.st.deleteQueue.run(name);
    this.st.deleteGrants.run('queue', name);
    return ok(null);
  }

  private purgeQueue(name: string, ctx: Ctx): Result {
    const user = this.requireActor(ctx);
    const q = this.visibleQueue(name, user);
    this.requireOwner(q.owner, user, `purge queue '${name}'`);
    this.expire(q, ctx.now);
    const c = this.st.getChannel.get(q.id) as ChannelRow;
    const purged = c.n_ready + c.n_leased + c.n_delayed;
    this.st.deleteMessages.run(q.id);
    this.st.setCounts.run(0, 0, 0, q.id);
    return ok({ purged });
  }

  /** Deletes a channel with its messages and deduplication ids: a new one of the same name starts empty. */
  private dropChannel(id: number): void {
    this.st.deleteMessages.run(id);
    this.st.deleteDedup.run(id);
    this.st.deleteChannel.run(id);
  }

  private putGrant(kind: 'queue' | 'topic', name: string, username: string, actions: readonly string[], ctx: Ctx): Result {
    const user = this.requireActor(ctx);
    const owner = kind === 'queue' ? this.visibleQueue(name, user).owner : this.visibleTopic(name, user).owner;
    this.requireOwner(owner, user, `grant rights on ${kind} '${name}'`);
    const allowed = kind === 'queue' ? ['send', 'receive'] : ['publish', 'subscribe'];
    if (actions.length === 0 || !actions.every((a) => allowed.includes(a))) {
      return fail(ErrorCode.ValidationFailed, `actions must be a non-empty subset of ${allowed.join(', ')}`);
    }
    if (username === owner) return fail(ErrorCode.ValidationFailed, 'the owner already has every right');
    const sorted = [...new Set(actions)].sort();
    this.st.putGrant.run(kind, name, username, JSON.stringify(sorted));
    return ok({ username, actions: sorted });
  }

  private deleteGrant(kind: 'queue' | 'topic', name: string, username: string, ctx: Ctx): Result {
    const user = this.requireActor(ctx);
    const owner = kind === 'queue' ? this.visibleQueue(name, user).owner : this.visibleTopic(name, user).owner;
    this.requireOwner(owner, user, `revoke rights on ${kind} '${name}'`);
    const r = this.st.deleteGrant.run(kind, name, username);
    if (r.changes === 0) return fail(ErrorCode.NotFound, `no grant for '${username}'`);
    return ok(null);
  }

  listGrants(kind: 'queue' | 'topic', name: string, user: string): Result<{ username: string; actions: string[] }[]> {
    return this.read(() => {
      const owner = kind === 'queue' ? this.visibleQueue(name, user).owner : this.visibleTopic(name, user).owner;
      this.requireOwner(owner, user, `list the grants of ${kind} '${name}'`);
      const rows = this.st.listGrants.all(kind, name) as { username: string; actions: string }[];
      return rows.map((r) => ({ username: r.username, actions: parseActions(r.actions) }));
    });
  }

  // ---- messages ----

  private sendToQueue(name: string, messages: readonly MessageInput[], ctx: Ctx): Result<{ items: SentMessage[] }> {
    const user = this.requireActor(ctx);
    let q = this.sendTargets.get(name);
    if (q === undefined || q.owner !== user) {
      q = this.visibleQueue(name, user);
      this.requireQueueRight(q, user, 'send');
      if (q.owner === user) this.sendTargets.set(name, q);
    }
    if (messages.length === 0) return fail(ErrorCode.ValidationFailed, 'no messages');
    const ids = messages.map((_, i) => `${this.partition}-${ctx.index}-${i}`);
    // Deduplication ids are looked up one message at a time (a batch may repeat one); the rest go in
    // bulk: one update takes every sequence number and counts the messages, a few multi-row inserts.
    if (messages.some((m) => m.deduplicationId !== undefined)) return ok({ items: messages.map((m, i) => this.enqueue(q, m, ids[i]!, ctx, DEDUP_WINDOW_MS)) });
    return ok({ items: this.enqueueMany(q, messages, ids, messages.map(() => ctx.now), ctx) });
  }

  /**
   * The queue of a send that can be stored in bulk with the sends around it: by the queue's owner
   * (read from the send-target cache, so visible and allowed), no Idempotency-Key, messages without
   * deduplication ids. Anything else is applied on its own.
   */
  private bulkSendTarget(env: Envelope): (ChannelRow & { name: string }) | undefined {
    const c = env.command;
    if (c.type !== 'queue.send' || env.idempotencyKey !== undefined || env.actor === null) return undefined;
    if (!Array.isArray(c.messages) || c.messages.length === 0 || c.messages.some((m) => m.deduplicationId !== undefined)) return undefined;
    const q = this.sendTargets.get(c.name);
    return q !== undefined && q.owner === env.actor ? q : undefined;
  }

  /**
   * Stores sends gathered by applyBatch, in their order: one update takes all their sequence numbers
   * and counts, multi-row inserts store them; each send's result is what sendToQueue would answer.
   */
  private storeSends(p: PendingSends, out: Applied[]): void {
    const messages = p.sends.flatMap((s) => s.messages);
    const ids = p.sends.flatMap((s) => s.messages.map((_, i) => `${this.partition}-${s.ctx.index}-${i}`));
    const nows = p.sends.flatMap((s) => s.messages.map(() => s.ctx.now));
    const items = this.enqueueMany(p.ch, messages, ids, nows);
    let k = 0;
    for (const s of p.sends) {
      const mine = items.slice(k, k + s.messages.length);
      k += s.messages.length;
      const visible = s.messages.filter((m) => delayOf(p.ch, m) === 0).length;
      const retimed = visible < s.messages.length;
      out[s.at] = { index: s.ctx.index, result: ok({ items: mine }), woke: visible > 0 ? [[p.ch.id, visible]] : [], retimed: retimed ? [p.ch.id] : [] };
    }
  }

  /** Adds messages without deduplication ids to a channel: the same rows and counts as enqueue() one by one. */
  private enqueueMany(ch: ChannelRow, messages: readonly MessageInput[], ids: readonly string[], nows: readonly number[], ctx?: Ctx): SentMessage[] {
    const delays = messages.map((m) => delayOf(ch, m));
    const delayed = delays.filter((d) => d > 0).length;
    const first = (this.st.takeSeqs.get(messages.length, messages.length - delayed, delayed, ch.id, messages.length) as { first: number }).first;
    const rows: unknown[][] = messages.map((m, i) => {
      const state = delays[i]! > 0 ? MessageState.Delayed : MessageState.Ready;
      const now = nows[i]!;
      return [ch.id, first + i, ids[i]!, m.body, JSON.stringify(m.attributes), now, state, now + delays[i]!, now + ch.retention_ms];
    });
    for (let k = 0; k < rows.length; k += INSERT_ROWS) {
      const chunk = rows.slice(k, k + INSERT_ROWS);
      this.insertRows(chunk.length).run(...chunk.flat());
    }
    if (ctx !== undefined) wokeUp(ctx, ch.id, messages.length - delayed);
    if (delayed > 0) ctx?.retimed.add(ch.id);
    return messages.map((_, i) => ({ messageId: ids[i]!, sequence: first + i }));
  }

  /** The insert of `n` message rows, prepared once per row count. */
  private insertRows(n: number): Statement {
    let st = this.insertStatements.get(n);
    if (st === undefined) {
      const row = '(?, ?, ?, ?, ?, ?, ?, ?, 0, 0, ?)';
      st = this.sqlite.prepare(
        `insert into messages (channel_id, seq, message_id, body, attributes, sent_at, state, visible_at, delivery_count, lease_id, expires_at) values ${Array.from({ length: n }, () => row).join(', ')}`,
      );
      this.insertStatements.set(n, st);
    }
    return st;
  }

  /** Adds one message to a channel, or returns the first one sent with the same deduplication id. */
  private enqueue(ch: ChannelRow, m: MessageInput, messageId: string, ctx: Ctx, dedupWindow: number, topicSeq?: number): SentMessage {
    if (m.deduplicationId !== undefined) {
      const d = this.st.getDedup.get(ch.id, m.deduplicationId, ctx.now) as { message_id: string; seq: number } | undefined;
      if (d !== undefined) return { messageId: d.message_id, sequence: d.seq };
    }
    // A subscription's copy keeps the topic's sequence: subscribers see what publish answered.
    const delay = delayOf(ch, m);
    const state = delay > 0 ? MessageState.Delayed : MessageState.Ready;
    // One update of the channel row takes the next sequence number and counts the message.
    let seq: number;
    if (topicSeq === undefined) {
      seq = (this.st.nextSeqCounting[state === MessageState.Ready ? 'ready' : 'delayed'].get(ch.id) as { seq: number }).seq;
    } else {
      seq = topicSeq;
      this.st.bumpCount[state].run(1, ch.id);
    }
    this.st.insertMessage.run(ch.id, seq, messageId, m.body, JSON.stringify(m.attributes), ctx.now, state, ctx.now + delay, ctx.now + ch.retention_ms);
    if (state === MessageState.Ready) wokeUp(ctx, ch.id, 1);
    else ctx.retimed.add(ch.id);
    if (m.deduplicationId !== undefined) this.st.putDedup.run(ch.id, m.deduplicationId, messageId, seq, ctx.now + dedupWindow);
    return { messageId, sequence: seq };
  }

  /** Deletes messages whose retention ended (a prefix in sequence order), keeping the counts exact. */
  private expire(ch: ChannelRow, now: number): number {
    const rows = this.st.expiredByState.all(ch.id, now) as { state: MessageState; n: number }[];
    if (rows.length === 0) return 0;
    let n = 0;
    for (const r of rows) {
      this.st.bumpCount[r.state].run(-r.n, ch.id);
      n += r.n;
    }
    this.st.deleteExpired.run(ch.id, now);
    return n;
  }

  /** At most this many messages are dead-lettered by one sweep, to bound the entry's apply time. */
  static readonly SWEEP_BUDGET = 1000;

  private sweep(ctx: Ctx): Result<{ expired: number; deadLettered: number }> {
    if (ctx.actor !== null) return fail(ErrorCode.Forbidden, 'only the system sweeps');
    let expired = 0;
    let deadLettered = 0;
    for (const ch of this.st.allChannels.all() as ChannelRow[]) {
      expired += this.expire(ch, ctx.now);
      if (ch.max_deliveries === null) continue;
      const budget = BrokerStateMachine.SWEEP_BUDGET - deadLettered;
      if (budget <= 0) break;
      const dead = this.st.dueDead.all(ch.id, ctx.now, ch.max_deliveries, budget) as { seq: number }[];
      for (const m of dead) this.deadLetter(ch, m.seq, MessageState.Leased, ctx);
      deadLettered += dead.length;
    }
    return ok({ expired, deadLettered });
  }

  /**
   * Leased and delayed messages whose time has come become ready again; one that has been delivered
   * maxDeliveries times is dead-lettered instead.
   */
  private promoteDue(ch: ChannelRow, ctx: Ctx): void {
    const due = this.st.due.all(ch.id, ctx.now) as Pick<MessageRow, 'seq' | 'state' | 'delivery_count'>[];
    for (const m of due) {
      if (m.state === MessageState.Leased && ch.max_deliveries !== null && m.delivery_count >= ch.max_deliveries) {
        this.deadLetter(ch, m.seq, m.state, ctx);
        continue;
      }
      this.st.setState.run(MessageState.Ready, ctx.now, m.seq, ch.id);
      this.st.bumpCount[m.state].run(-1, ch.id);
      this.st.bumpCount[MessageState.Ready].run(1, ch.id);
      wokeUp(ctx, ch.id, 1);
    }
  }

  private deadLetter(ch: ChannelRow, seq: number, state: MessageState, ctx: Ctx): void {
    const m = this.st.getMessage.get(ch.id, seq) as MessageRow;
    this.st.deleteMessage.run(ch.id, seq);
    this.st.bumpCount[state].run(-1, ch.id);
    if (ch.dead_letter_queue === null) {
      this.st.bumpDropped.run(ch.id);
      return;
    }
    const id = (this.st.nextOutbox.get() as { value: number }).value;
    this.st.insertOutbox.run(id, ch.dead_letter_queue, ch.owner, m.message_id, m.body, m.attributes, ctx.now);
  }

  private receive(ref: ChannelRef, max: number, vtSeconds: number | null, ctx: Ctx): Result<{ messages: ReceivedMessage[] }> {
    const user = this.requireActor(ctx);
    const ch = this.consumable(ref, user);
    if (!Number.isInteger(max) || max < 1 || max > 100) return fail(ErrorCode.ValidationFailed, 'maxMessages must be 1 to 100');
    this.expire(ch, ctx.now);
    this.promoteDue(ch, ctx);
    const vt = vtSeconds !== null ? vtSeconds * 1000 : ch.visibility_timeout_ms;
    const rows = this.st.ready.all(ch.id, max) as MessageRow[];
    const messages: ReceivedMessage[] = [];
    for (const m of rows) {
      this.st.lease.run(ctx.now + vt, ctx.index, ch.id, m.seq);
      messages.push({
        messageId: m.message_id,
        sequence: m.seq,
        body: m.body,
        attributes: JSON.parse(m.attributes) as Record<string, string>,
        receiptHandle: encodeReceipt(ch.id, m.seq, ctx.index),
        deliveryCount: m.delivery_count + 1,
        sentAt: iso(m.sent_at),
      });
    }
    if (rows.length > 0) {
      this.st.bumpCount[MessageState.Ready].run(-rows.length, ch.id);
      this.st.bumpCount[MessageState.Leased].run(rows.length, ch.id);
      ctx.retimed.add(ch.id);
    }
    return ok({ messages });
  }

  /**
   * Resolves receipt handles to the messages they still lease. A handle is stale once its message is
   * gone or was delivered again (a newer lease).
   */
  private handles(
    ch: ChannelRow,
    receiptHandles: readonly string[],
    each: (m: MessageRow) => boolean,
  ): HandleOutcome {
    const out: HandleOutcome = { acked: [], failed: [] };
    for (const h of receiptHandles) {
      const r = decodeReceipt(h);
      if (r === null || r.channelId !== ch.id) {
        out.failed.push({ receiptHandle: h, code: 'receipt_invalid' });
        continue;
      }
      const m = this.st.getMessage.get(ch.id, r.seq) as MessageRow | undefined;
      if (m === undefined || m.lease_id !== r.leaseId || !each(m)) {
        out.failed.push({ receiptHandle: h, code: 'receipt_stale' });
        continue;
      }
      out.acked.push(h);
    }
    return out;
  }

  private ack(ref: ChannelRef, receiptHandles: readonly string[], ctx: Ctx): Result<HandleOutcome> {
    const ch = this.consumable(ref, this.requireActor(ctx));
    return ok(
      this.handles(ch, receiptHandles, (m) => {
        this.st.deleteMessage.run(ch.id, m.seq);
        this.st.bumpCount[m.state].run(-1, ch.id);
        return true;
      }),
    );
  }

  private nack(ref: ChannelRef, receiptHandles: readonly string[], delaySeconds: number, ctx: Ctx): Result<HandleOutcome> {
    const ch = this.consumable(ref, this.requireActor(ctx));
    return ok(
      this.handles(ch, receiptHandles, (m) => {
        if (m.state !== MessageState.Leased) return false;
        if (ch.max_deliveries !== null && m.delivery_count >= ch.max_deliveries) {
          this.deadLetter(ch, m.seq, m.state, ctx);
          return true;
        }
        // Giving the lease up makes the handle stale: the next delivery gets a new one.
        const state = delaySeconds > 0 ? MessageState.Delayed : MessageState.Ready;
        this.st.release.run(state, ctx.now + delaySeconds * 1000, m.seq, ch.id);
        this.st.bumpCount[m.state].run(-1, ch.id);
        this.st.bumpCount[state].run(1, ch.id);
        if (state === MessageState.Ready) wokeUp(ctx, ch.id, 1);
        else ctx.retimed.add(ch.id);
        return true;
      }),
    );
  }

  private extendLeases(ref: ChannelRef, receiptHandles: readonly string[], vtSeconds: number, ctx: Ctx): Result<HandleOutcome> {
    const ch = this.consumable(ref, this.requireActor(ctx));
    return ok(
      this.handles(ch, receiptHandles, (m) => {
        // An expired lease can no longer be extended: the message is visible to others already.
        if (m.state !== MessageState.Leased || m.visible_at <= ctx.now) return false;
        this.st.setState.run(MessageState.Leased, ctx.now + vtSeconds * 1000, m.seq, ch.id);
        return true;
      }),
    );
  }

  // ---- topics ----

  private createTopic(name: string, subscribe: 'anyone' | 'granted', ctx: Ctx): Result {
    const user = this.requireActor(ctx);
    if (this.st.getTopic.get(name) !== undefined) return fail(ErrorCode.Conflict, `topic '${name}' exists`);
    this.st.insertTopic.run(name, ctx.index, user, subscribe, ctx.now);
    return ok(this.topicView(this.st.getTopic.get(name) as TopicRow));
  }

  private deleteTopic(name: string, ctx: Ctx): Result {
    const user = this.requireActor(ctx);
    const t = this.visibleTopic(name, user);
    this.requireOwner(t.owner, user, `delete topic '${name}'`);
    for (const s of this.st.listSubscriptions.all(name) as { channel_id: number }[]) this.dropChannel(s.channel_id);
    this.st.deleteSubscriptions.run(name);
    this.st.deleteDedup.run(-t.id);
    this.st.deleteTopic.run(name);
    this.st.deleteGrants.run('topic', name);
    return ok(null);
  }

  private publish(name: string, messages: readonly MessageInput[], ctx: Ctx): Result<{ items: (SentMessage & { subscriptions: number })[] }> {
    const user = this.requireActor(ctx);
    const t = this.visibleTopic(name, user);
    if (t.owner !== user && !this.grantActions('topic', name, user).includes('publish')) {
      return fail(ErrorCode.Forbidden, `no 'publish' right on topic '${name}'`);
    }
    if (messages.length === 0) return fail(ErrorCode.ValidationFailed, 'no messages');
    const subs = this.st.listSubscriptionChannels.all(name) as (ChannelRow & { filter: string | null })[];
    const items = messages.map((m, i) => {
      if (m.deduplicationId !== undefined) {
        const d = this.st.getDedup.get(-t.id, m.deduplicationId, ctx.now) as { message_id: string; seq: number } | undefined;
        if (d !== undefined) return { messageId: d.message_id, sequence: d.seq, subscriptions: 0 };
      }
      const messageId = `${this.partition}-${ctx.index}-${i}`;
      const sequence = (this.st.nextTopicSeq.get(name) as { seq: number }).seq;
      let delivered = 0;
      for (const s of subs) {
        if (!matchesFilter(s.filter, m.attributes)) continue;
        this.enqueue(s, { body: m.body, attributes: m.attributes }, messageId, ctx, 0, sequence);
        delivered++;
      }
      if (m.deduplicationId !== undefined) this.st.putDedup.run(-t.id, m.deduplicationId, messageId, sequence, ctx.now + DEDUP_WINDOW_MS);
      return { messageId, sequence, subscriptions: delivered };
    });
    return ok({ items });
  }

  private createSubscription(c: Extract<Command, { type: 'subscription.create' }>, ctx: Ctx): Result {
    const user = this.requireActor(ctx);
    const t = this.visibleTopic(c.topic, user);
    const may = t.owner === user || t.subscribe_policy === 'anyone' || this.grantActions('topic', c.topic, user).includes('subscribe');
    if (!may) return fail(ErrorCode.Forbidden, `no 'subscribe' right on topic '${c.topic}'`);
    if (this.st.getSubscription.get(c.topic, c.name) !== undefined) return fail(ErrorCode.Conflict, `subscription '${c.name}' exists`);
    this.st.insertChannel.run(
      ctx.index,
      'subscription',
      user,
      c.visibilityTimeoutSeconds * 1000,
      c.maxDeliveries,
      c.deadLetterQueue,
      0,
      4 * 24 * 3600 * 1000,
      ctx.now,
    );
    this.st.insertSubscription.run(c.topic, c.name, ctx.index, c.filter === null ? null : JSON.stringify(c.filter));
    return ok(this.subscriptionView(c.topic, c.name, ctx.now));
  }

  private deleteSubscription(topic: string, name: string, ctx: Ctx): Result {
    const user = this.requireActor(ctx);
    const s = this.st.getSubscription.get(topic, name) as (ChannelRow & { topic_owner: string }) | undefined;
    if (s === undefined || (s.owner !== user && s.topic_owner !== user)) {
      return fail(ErrorCode.NotFound, `subscription '${name}' of topic '${topic}' not found`);
    }
    this.dropChannel(s.id);
    this.st.deleteSubscription.run(topic, name);
    return ok(null);
  }

  // ---- dead letters across partitions ----

  private deliverDeadLetters(c: Extract<Command, { type: 'deadletter.deliver' }>, ctx: Ctx): Result {
    if (ctx.actor !== null) return fail(ErrorCode.Forbidden, 'only the system delivers dead letters');
    const q = this.st.getQueue.get(c.queue) as (ChannelRow & { name: string }) | undefined;
    // The dead-letter queue must still be the owner's: one deleted and recreated by someone else
    // must not receive another user's messages.
    if (q === undefined || q.owner !== c.expectedOwner) return ok({ delivered: 0, dropped: c.messages.length });
    for (const m of c.messages) {
      this.enqueue(q, { body: m.body, attributes: m.attributes, deduplicationId: `dl:${m.messageId}` }, m.messageId, ctx, DEADLETTER_DEDUP_MS);
    }
    return ok({ delivered: c.messages.length, dropped: 0 });
  }

  private outboxDone(ids: readonly number[], ctx: Ctx): Result {
    if (ctx.actor !== null) return fail(ErrorCode.Forbidden, 'only the system clears the outbox');
    for (const id of ids) this.st.deleteOutbox.run(id);
    return ok(null);
  }

  /** Whether a sweep would do anything now: cheap index probes, for the leader to decide to propose one. */
  needsSweep(now: number): boolean {
    const at = Math.max(now, this.clock());
    for (const ch of this.st.allChannels.all() as ChannelRow[]) {
      if (this.st.anyExpired.get(ch.id, at) !== undefined) return true;
      if (ch.max_deliveries !== null && this.st.dueDead.get(ch.id, at, ch.max_deliveries, 1) !== undefined) return true;
    }
    return false;
  }

  /** Dead letters waiting for delivery, oldest first (read by the leader's forwarder). */
  outbox(limit: number): { id: number; targetQueue: string; expectedOwner: string; messageId: string; body: string; attributes: Record<string, string> }[] {
    const rows = this.st.listOutbox.all(limit) as { id: number; target_queue: string; expected_owner: string; message_id: string; body: string; attributes: string }[];
    return rows.map((r) => ({
      id: r.id,
      targetQueue: r.target_queue,
      expectedOwner: r.expected_owner,
      messageId: r.message_id,
      body: r.body,
      attributes: JSON.parse(r.attributes) as Record<string, string>,
    }));
  }

  // ---- reads (not entries: `now` is the caller's best clock, never below the partition's) ----

  private read<T>(f: () => T): Result<T> {
    try {
      return ok(f());
    } catch (err) {
      if (err instanceof Refusal) return err.failure;
      throw err;
    }
  }

  private stats(ch: ChannelRow, now: number): QueueView['stats'] {
    const expired = new Map<number, number>();
    for (const r of this.st.expiredByState.all(ch.id, now) as { state: number; n: number }[]) expired.set(r.state, r.n);
    const due = this.st.dueCounts.get(ch.max_deliveries ?? Number.MAX_SAFE_INTEGER, ch.id, now, now) as {
      leased: number | null;
      leased_alive: number | null;
      delayed: number | null;
    };
    const ready = ch.n_ready - (expired.get(MessageState.Ready) ?? 0);
    const leased = ch.n_leased - (expired.get(MessageState.Leased) ?? 0);
    const delayed = ch.n_delayed - (expired.get(MessageState.Delayed) ?? 0);
    const oldest = this.st.oldest.get({ channel: ch.id, now, max: ch.max_deliveries ?? Number.MAX_SAFE_INTEGER }) as { sent_at: number } | undefined;
    return {
      visible: ready + (due.leased_alive ?? 0) + (due.delayed ?? 0),
      inFlight: leased - (due.leased ?? 0),
      delayed: delayed - (due.delayed ?? 0),
      // A message whose last allowed lease expired is gone from the consumer's view at once: dropped
      // (no dead-letter queue) or on its way to the dead-letter queue, which the next sweep completes.
      dropped: ch.n_dropped + (ch.dead_letter_queue === null ? (due.leased ?? 0) - (due.leased_alive ?? 0) : 0),
      oldestMessageAgeSeconds: oldest === undefined ? 0 : Math.max(0, Math.floor((now - oldest.sent_at) / 1000)),
    };
  }

  private queueView(q: ChannelRow & { name: string }, now: number): QueueView {
    return {
      name: q.name,
      owner: q.owner,
      visibilityTimeoutSeconds: seconds(q.visibility_timeout_ms),
      maxDeliveries: q.max_deliveries,
      deadLetterQueue: q.dead_letter_queue,
      delaySeconds: seconds(q.delay_ms),
      retentionSeconds: seconds(q.retention_ms),
      createdAt: iso(q.created_at),
      stats: this.stats(q, now),
    };
  }

  getQueue(name: string, user: string, now: number): Result<QueueView> {
    return this.read(() => this.queueView(this.visibleQueue(name, user), Math.max(now, this.clock())));
  }

  /** Names of the queues `user` owns or has a grant on, after `after`, in name order. */
  listQueues(user: string, after: string, limit: number): string[] {
    return (this.st.listQueues.all(user, user, after, limit) as { name: string }[]).map((r) => r.name);
  }

  private topicView(t: TopicRow): TopicView {
    const n = (this.st.countSubscriptions.get(t.name) as { n: number }).n;
    return { name: t.name, owner: t.owner, subscribe: t.subscribe_policy, createdAt: iso(t.created_at), stats: { subscriptions: n, published: t.published } };
  }

  getTopic(name: string, user: string): Result<TopicView> {
    return this.read(() => this.topicView(this.visibleTopic(name, user)));
  }

  listTopics(user: string, after: string, limit: number): string[] {
    return (this.st.listTopics.all(user, user, after, limit) as { name: string }[]).map((r) => r.name);
  }

  private subscriptionView(topic: string, name: string, now: number): SubscriptionView {
    const s = this.st.getSubscription.get(topic, name) as ChannelRow & { filter: string | null; name: string };
    return {
      topic,
      name,
      owner: s.owner,
      visibilityTimeoutSeconds: seconds(s.visibility_timeout_ms),
      maxDeliveries: s.max_deliveries,
      deadLetterQueue: s.dead_letter_queue,
      filter: s.filter === null ? null : (JSON.parse(s.filter) as Record<string, string>),
      createdAt: iso(s.created_at),
      stats: this.stats(s, now),
    };
  }

  getSubscription(topic: string, name: string, user: string, now: number): Result<SubscriptionView> {
    return this.read(() => {
      const s = this.st.getSubscription.get(topic, name) as (ChannelRow & { topic_owner: string }) | undefined;
      if (s === undefined || (s.owner !== user && s.topic_owner !== user)) {
        throw new Refusal(fail(ErrorCode.NotFound, `subscription '${name}' of topic '${topic}' not found`));
      }
      return this.subscriptionView(topic, name, Math.max(now, this.clock()));
    });
  }

  /** All subscriptions for the topic's owner; one's own for anybody else. */
  listSubscriptions(topic: string, user: string, now: number): Result<SubscriptionView[]> {
    return this.read(() => {
      const t = this.visibleTopic(topic, user);
      const rows = this.st.listSubscriptions.all(topic) as { name: string; owner: string }[];
      const at = Math.max(now, this.clock());
      return rows.filter((r) => t.owner === user || r.owner === user).map((r) => this.subscriptionView(topic, r.name, at));
    });
  }

  /** Whether a channel has a message ready now (for long polls to decide whether to propose). */
  hasVisible(channelId: number, now: number): boolean {
    const ch = this.st.getChannel.get(channelId) as ChannelRow | undefined;
    if (ch === undefined) return false;
    return this.stats(ch, Math.max(now, this.clock())).visible > 0;
  }

  /**
   * When the oldest live message of any queue or subscription of the partition was sent (ms), or null
   * when there is none: for the oldest-message-age metric and its alert.
   */
  oldestSentAt(now: number): number | null {
    const r = this.st.oldestOfAll.get({ now: Math.max(now, this.clock()) }) as { at: number | null };
    return r.at;
  }

  /** The fullest queues' message counters (as of the last apply; time-based changes not counted). */
  queueDepths(limit: number): { queue: string; ready: number; leased: number; delayed: number }[] {
    return this.st.queueDepths.all(limit) as { queue: string; ready: number; leased: number; delayed: number }[];
  }

  /** Messages of every queue and subscription of the partition, by state (counters, for metrics). */
  messageTotals(): { ready: number; leased: number; delayed: number } {
    const r = this.st.messageTotals.get() as { ready: number | null; leased: number | null; delayed: number | null };
    return { ready: r.ready ?? 0, leased: r.leased ?? 0, delayed: r.delayed ?? 0 };
  }

  /** The channel id of a queue or subscription, or null when there is none (for long polls). */
  channelIdOf(ref: ChannelRef): number | null {
    const row = ('queue' in ref ? this.st.getQueue.get(ref.queue) : this.st.getSubscription.get(ref.topic, ref.subscription)) as ChannelRow | undefined;
    return row === undefined ? null : row.id;
  }

  /**
   * When the next leased or delayed message of a channel becomes visible (ms), or null: time alone
   * makes those visible, with no entry to wake a long poll, so it sets a timer for this.
   */
  nextVisibleAt(channelId: number): number | null {
    const r = this.st.nextDue.get({ channel: channelId }) as { at: number };
    return r.at === Number.MAX_SAFE_INTEGER ? null : r.at;
  }

  // ---- snapshots ----

  /**
   * Makes every transaction committed so far durable, without copying anything: what it answers is
   * on disk when the promise resolves. The state commits with synchronous=NORMAL, so a commit is
   * written to the -wal file and not synced; a checkpoint syncs the WAL before it copies pages into
   * the database and syncs the database after, and only then may the WAL be restarted. Syncing the
   * -wal file therefore covers every commit it still holds, and the database file every commit
   * checkpointed out of it. The syncs run on the thread pool; the caller reads `applied()` first.
   */
  async durable(): Promise<void> {
    if (this.path === ':memory:') return;
    await fsyncPathAsync(`${this.path}-wal`, { missingOk: true });
    await fsyncPathAsync(this.path);
  }

  /**
   * A consistent copy of this partition's state, for a follower, and the applied position it holds. SQLite's online backup copies a few pages per event-loop turn, so the node goes on serving
   * and applying meanwhile; what this connection applies during the copy is carried into it, so the
   * image is the state as of the copy's last step, and its own meta table says which index that is.
   * Durable when it returns: written under a temporary name, fsynced, renamed, and the folder
   * fsynced, so a crash never leaves a partial image under the final name. Rejects if the state is
   * closed meanwhile (a snapshot from the leader replaced it).
   */
  async snapshotTo(path: string): Promise<{ index: number; term: number }> {
    const tmp = `${path}.tmp`;
    await rm(tmp, { force: true });
    await this.sqlite.backup(tmp, { progress: () => SNAPSHOT_PAGES_PER_STEP });
    const image = new Database(tmp, { fileMustExist: true });
    let at: { index: number; term: number };
    try {
      // The copy carries the write-ahead-log mode in its header; an image is one self-contained file.
      image.pragma('journal_mode = DELETE');
      at = appliedOf(image);
    } finally {
      image.close();
    }
    await fsyncPathAsync(tmp);
    await rename(tmp, path);
    await fsyncPathAsync(dirname(path));
    return at;
  }

  /** The entry an image's state holds everything up to (read from the closed image file). */
  static imageApplied(path: string): { index: number; term: number } {
    const image = new Database(path, { readonly: true, fileMustExist: true });
    try {
      return appliedOf(image);
    } finally {
      image.close();
    }
  }

  /**
   * Replaces the state database at `dbPath` with a snapshot image (closed state machine; the caller
   * reopens it). The image is moved, not copied (an image can be gigabytes): it is synced, the old
   * database's -wal and -shm are removed and the folder synced (so the old WAL is never applied to
   * the new file), then the image is renamed into place and the folder synced again. A power cut
   * leaves either the image still in place, which the next open installs again, or the new database.
   */
  static async installSnapshot(dbPath: string, snapshotPath: string): Promise<void> {
    await fsyncPathAsync(snapshotPath);
    for (const suffix of ['-wal', '-shm']) await rm(dbPath + suffix, { force: true });
    await fsyncPathAsync(dirname(dbPath));
    await rename(snapshotPath, dbPath);
    await fsyncPathAsync(dirname(dbPath));
    if (dirname(snapshotPath) !== dirname(dbPath)) await fsyncPathAsync(dirname(snapshotPath));
  }
}

/** The applied position an image's meta table records. */
function appliedOf(image: Sqlite): { index: number; term: number } {
  const get = image.prepare('select value from meta where key = ?');
  return { index: (get.get('applied_index') as { value: number }).value, term: (get.get('applied_term') as { value: number }).value };
}

/** Milliseconds before a message becomes visible: its own delay, or its channel's. */
function delayOf(ch: ChannelRow, m: MessageInput): number {
  return m.delaySeconds !== undefined ? m.delaySeconds * 1000 : ch.delay_ms;
}

/** A command broke an assumption of the code while applied without a savepoint (apply()). */
class MalformedCommand extends Error {
  override name = 'MalformedCommand';
  constructor(cause: unknown) {
    super('a command failed while applied in bulk', { cause });
  }
}

function isStorageFailure(err: unknown): boolean {
  const code = (err as { code?: unknown }).code;
  return typeof code === 'string' && /^SQLITE_(IOERR|FULL|CORRUPT|NOTADB|CANTOPEN|READONLY|NOMEM|BUSY|LOCKED)/.test(code);
}

/** Decodes an entry's envelope, or null when it is not one (never trusts the bytes' shape). */
function parseEnvelope(data: Uint8Array): Envelope | null {
  let v: unknown;
  try {
    v = decodeEnvelope(data);
  } catch {
    return null;
  }
  if (typeof v !== 'object' || v === null) return null;
  const e = v as Record<string, unknown>;
  if (typeof e.time !== 'number' || !Number.isFinite(e.time)) return null;
  if (e.actor !== null && typeof e.actor !== 'string') return null;
  if (e.idempotencyKey !== undefined && typeof e.idempotencyKey !== 'string') return null;
  const c = e.command as Record<string, unknown> | null;
  if (typeof c !== 'object' || c === null || typeof c.type !== 'string') return null;
  return v as Envelope;
}

/** Sends gathered for storeSends(): to one queue, each with its place in the batch's results. */
interface PendingSends {
  readonly ch: ChannelRow & { name: string };
  readonly sends: { readonly at: number; readonly ctx: Ctx; readonly messages: readonly MessageInput[] }[];
}

/** A refusal raised deep in a check; apply turns it into the command's result. */
class Refusal extends Error {
  constructor(readonly failure: Failure) {
    super(failure.detail);
  }
}

function prepare(db: Sqlite) {
  const s = (sql: string): Statement => db.prepare(sql);
  const channelCols =
    'c.id, c.kind, c.owner, c.visibility_timeout_ms, c.max_deliveries, c.dead_letter_queue, c.delay_ms, c.retention_ms, c.next_seq, c.n_ready, c.n_leased, c.n_delayed, c.n_dropped, c.created_at';
  const bump = (col: string): Statement => s(`update channels set ${col} = ${col} + ? where id = ?`);
  return {
    getMeta: s('select value from meta where key = ?'),
    setMeta: s('update meta set value = ? where key = ?'),
    getUser: s('select username, password_hash, created_at from users where username = ?'),
    insertUser: s('insert into users (username, password_hash, created_at) values (?, ?, ?)'),
    getGrant: s('select actions from grants where resource_kind = ? and resource_name = ? and username = ?'),
    putGrant: s(
      'insert into grants (resource_kind, resource_name, username, actions) values (?, ?, ?, ?) on conflict (resource_kind, resource_name, username) do update set actions = excluded.actions',
    ),
    deleteGrant: s('delete from grants where resource_kind = ? and resource_name = ? and username = ?'),
    deleteGrants: s('delete from grants where resource_kind = ? and resource_name = ?'),
    listGrants: s('select username, actions from grants where resource_kind = ? and resource_name = ? order by username'),
    getQueue: s(`select q.name, ${channelCols} from queues q join channels c on c.id = q.channel_id where q.name = ?`),
    insertQueue: s('insert into queues (name, channel_id) values (?, ?)'),
    deleteQueue: s('delete from queues where name = ?'),
    listQueues: s(
      `select q.name from queues q join channels c on c.id = q.channel_id
       where (c.owner = ? or exists (select 1 from grants g where g.resource_kind = 'queue' and g.resource_name = q.name and g.username = ?))
         and q.name > ? order by q.name limit ?`,
    ),
    getChannel: s(`select ${channelCols} from channels c where c.id = ?`),
    allChannels: s(`select ${channelCols} from channels c order by c.id`),
    dueDead: s(
      `select seq from messages indexed by messages_due
       where channel_id = ? and state = ${MessageState.Leased} and visible_at <= ? and delivery_count >= ? order by seq limit ?`,
    ),
    insertChannel: s(
      `insert into channels (id, kind, owner, visibility_timeout_ms, max_deliveries, dead_letter_queue, delay_ms, retention_ms, next_seq, n_ready, n_leased, n_delayed, n_dropped, created_at)
       values (?, ?, ?, ?, ?, ?, ?, ?, 1, 0, 0, 0, 0, ?)`,
    ),
    deleteChannel: s('delete from channels where id = ?'),
    /** Takes n sequence numbers (returns the first) and counts ready and delayed messages: (n, ready, delayed, id, n). */
    takeSeqs: s('update channels set next_seq = next_seq + ?, n_ready = n_ready + ?, n_delayed = n_delayed + ? where id = ? returning next_seq - ? as first'),
    nextSeqCounting: {
      ready: s('update channels set next_seq = next_seq + 1, n_ready = n_ready + 1 where id = ? returning next_seq - 1 as seq'),
      delayed: s('update channels set next_seq = next_seq + 1, n_delayed = n_delayed + 1 where id = ? returning next_seq - 1 as seq'),
    },
    setCounts: s('update channels set n_ready = ?, n_leased = ?, n_delayed = ? where id = ?'),
    bumpCount: { [MessageState.Ready]: bump('n_ready'), [MessageState.Leased]: bump('n_leased'), [MessageState.Delayed]: bump('n_delayed') } as Record<
      MessageState,
      Statement
    >,
    bumpDropped: s('update channels set n_dropped = n_dropped + 1 where id = ?'),
    insertMessage: s(
      `insert into messages (channel_id, seq, message_id, body, attributes, sent_at, state, visible_at, delivery_count, lease_id, expires_at)
       values (?, ?, ?, ?, ?, ?, ?, ?, 0, 0, ?)`,
    ),
    getMessage: s('select * from messages where channel_id = ? and seq = ?'),
    deleteMessage: s('delete from messages where channel_id = ? and seq = ?'),
    deleteMessages: s('delete from messages where channel_id = ?'),
    ready: s(`select * from messages where channel_id = ? and state = ${MessageState.Ready} order by seq limit ?`),
    due: s(
      `select seq, state, delivery_count from messages indexed by messages_due
       where channel_id = ? and state in (${MessageState.Leased}, ${MessageState.Delayed}) and visible_at <= ? order by seq`,
    ),
    messageTotals: s('select sum(n_ready) as ready, sum(n_leased) as leased, sum(n_delayed) as delayed from channels'),
    queueDepths: s(
      `select q.name as queue, c.n_ready as ready, c.n_leased as leased, c.n_delayed as delayed
       from queues q join channels c on c.id = q.channel_id order by c.n_ready + c.n_leased + c.n_delayed desc, q.name limit ?`,
    ),
    nextDue: s(
      // Two indexed min() lookups rather than one scan over every message in flight.
      `select min(
         coalesce((select min(visible_at) from messages indexed by messages_due where channel_id = @channel and state = ${MessageState.Leased}), ${Number.MAX_SAFE_INTEGER}),
         coalesce((select min(visible_at) from messages indexed by messages_due where channel_id = @channel and state = ${MessageState.Delayed}), ${Number.MAX_SAFE_INTEGER})
       ) as at`,
    ),
    dueCounts: s(
      `select sum(state = ${MessageState.Leased}) as leased,
              sum(state = ${MessageState.Leased} and delivery_count < ?) as leased_alive,
              sum(state = ${MessageState.Delayed}) as delayed
       from messages indexed by messages_due
       where channel_id = ? and state in (${MessageState.Leased}, ${MessageState.Delayed}) and visible_at <= ? and expires_at > ?`,
    ),
    setState: s('update messages set state = ?, visible_at = ? where seq = ? and channel_id = ?'),
    release: s('update messages set state = ?, visible_at = ?, lease_id = 0 where seq = ? and channel_id = ?'),
    lease: s(
      `update messages set state = ${MessageState.Leased}, visible_at = ?, delivery_count = delivery_count + 1, lease_id = ? where channel_id = ? and seq = ?`,
    ),
    expiredByState: s('select state, count(*) as n from messages indexed by messages_expiry where channel_id = ? and expires_at <= ? group by state'),
    deleteExpired: s('delete from messages where channel_id = ? and expires_at <= ?'),
    anyExpired: s('select 1 from messages indexed by messages_expiry where channel_id = ? and expires_at <= ? limit 1'),
    // expires_at = sent_at + retention grows with seq, so the expiry index finds the oldest live message.
    // Messages whose last lease expired (about to be dead-lettered) are skipped: they are gone for consumers.
    oldest: s(
      `select sent_at from messages indexed by messages_expiry
       where channel_id = @channel and expires_at > @now and not (state = ${MessageState.Leased} and visible_at <= @now and delivery_count >= @max)
       order by expires_at limit 1`,
    ),
    // One index probe per channel (see `oldest`).
    oldestOfAll: s(
      `select min((select sent_at from messages indexed by messages_expiry where channel_id = c.id and expires_at > @now order by expires_at limit 1)) as at
       from channels c`,
    ),
    getDedup: s('select message_id, seq from dedup where channel_id = ? and dedup_id = ? and expires_at > ?'),
    putDedup: s(
      'insert into dedup (channel_id, dedup_id, message_id, seq, expires_at) values (?, ?, ?, ?, ?) on conflict (channel_id, dedup_id) do update set message_id = excluded.message_id, seq = excluded.seq, expires_at = excluded.expires_at',
    ),
    pruneAllDedup: s('delete from dedup where expires_at <= ?'),
    deleteDedup: s('delete from dedup where channel_id = ?'),
    getIdempotency: s('select fingerprint, result from idempotency where username = ? and key = ? and expires_at > ?'),
    // An expired record not yet pruned is replaced.
    putIdempotency: s(
      'insert into idempotency (username, key, fingerprint, result, expires_at) values (?, ?, ?, ?, ?) on conflict (username, key) do update set fingerprint = excluded.fingerprint, result = excluded.result, expires_at = excluded.expires_at',
    ),
    pruneIdempotency: s('delete from idempotency where expires_at <= ?'),
    getTopic: s('select * from topics where name = ?'),
    insertTopic: s('insert into topics (name, id, owner, subscribe_policy, next_seq, published, created_at) values (?, ?, ?, ?, 1, 0, ?)'),
    deleteTopic: s('delete from topics where name = ?'),
    nextTopicSeq: s('update topics set next_seq = next_seq + 1, published = published + 1 where name = ? returning next_seq - 1 as seq'),
    listTopics: s(
      `select t.name from topics t
       where (t.owner = ? or exists (select 1 from grants g where g.resource_kind = 'topic' and g.resource_name = t.name and g.username = ?))
         and t.name > ? order by t.name limit ?`,
    ),
    getSubscription: s(
      `select s.name, s.filter, t.owner as topic_owner, ${channelCols} from subscriptions s join channels c on c.id = s.channel_id join topics t on t.name = s.topic
       where s.topic = ? and s.name = ?`,
    ),
    insertSubscription: s('insert into subscriptions (topic, name, channel_id, filter) values (?, ?, ?, ?)'),
    deleteSubscription: s('delete from subscriptions where topic = ? and name = ?'),
    deleteSubscriptions: s('delete from subscriptions where topic = ?'),
    listSubscriptions: s('select s.name, s.channel_id, c.owner from subscriptions s join channels c on c.id = s.channel_id where s.topic = ? order by s.name'),
    listSubscriptionChannels: s(`select s.filter, ${channelCols} from subscriptions s join channels c on c.id = s.channel_id where s.topic = ? order by s.name`),
    countSubscriptions: s('select count(*) as n from subscriptions where topic = ?'),
    nextOutbox: s(`update meta set value = value + 1 where key = 'outbox_seq' returning value`),
    insertOutbox: s(
      'insert into outbox (id, target_queue, expected_owner, message_id, body, attributes, created_at) values (?, ?, ?, ?, ?, ?, ?)',
    ),
    deleteOutbox: s('delete from outbox where id = ?'),
    listOutbox: s('select * from outbox order by id limit ?'),
  };
}
