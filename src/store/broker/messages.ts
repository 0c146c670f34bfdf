// Messages in channels (a queue, or one subscription of a topic): sending, receiving (the leases a
// receive gives, and ack, nack and lease on them, are leases.ts's, with the rule of when a lease
// ends), long polls parked in the state, keyed receives' replays, retention, purges, and
// dead-letter deliveries through the outbox to another partition.
//
// Every write keeps the channel's counters (n_ready, n_leased, n_delayed) equal to its rows by state:
// the stats are computed from them without a scan.
import {
  ErrorCode,
  fail,
  ok,
  type ChannelRef,
  type Command,
  type MessageInput,
  type ParkedWait,
  type Received,
  type ReceivedMessage,
  type Result,
  type SentMessage,
} from './commands.js';
import { SLOTS, logSeq, rowBody } from './bodies.js';
import { deadLetter, decodeReceipt, encodeReceipt, leaseLive, leaseReady, promoteDue, received, takeCounts } from './leases.js';
import { bodyText } from './envelope.js';
import { consumable, requireActor, requireOwner, requireQueueRight, visibleQueue } from './access.js';
import { DEDUP_WINDOW_MS, IDEMPOTENCY_WINDOW_MS, Refusal, iso, wokeUp, type Ctx, type QueueRow, type Store } from './context.js';
import { MessageState, type ChannelRow, type MessageRow, type WaiterRow } from './schema.js';
import { DEAD_LETTER_KEYS_APART, DEAD_LETTER_SOURCES } from './format.js';
import { INSERT_ROWS } from './statements.js';

/** Dead-letter deliveries are deduplicated for a day, by their outbox row (format 12) or else their message id: forwarder retries. */
const DEADLETTER_DEDUP_MS = IDEMPOTENCY_WINDOW_MS;

/** At most this many messages are dead-lettered by one sweep, to bound the entry's apply time. */
export const SWEEP_BUDGET = 1000;

/** Milliseconds before a message becomes visible: its own delay, or its channel's. */
export function delayOf(ch: ChannelRow, m: MessageInput): number {
  return m.delaySeconds !== undefined ? m.delaySeconds * 1000 : ch.delay_ms;
}

// ---- sending ----

export function sendToQueue(s: Store, name: string, messages: readonly MessageInput[], ctx: Ctx): Result<{ items: SentMessage[] }> {
  const user = requireActor(ctx);
  let q = s.sendTargets.get(name);
  if (q === undefined || q.owner !== user) {
    q = visibleQueue(s, name, user);
    requireQueueRight(s, q, user, 'send');
    if (q.owner === user) s.sendTargets.set(name, q);
  }
  if (messages.length === 0) return fail(ErrorCode.ValidationFailed, 'no messages');
  const refused = unplaceable(s, messages);
  if (refused !== null) return refused;
  const ids = messages.map((_, i) => `${s.partition}-${ctx.index}-${i}`);
  // Deduplication ids are looked up one message at a time (a batch may repeat one); the rest go in
  // bulk: one update takes every sequence number and counts the messages, a few multi-row inserts.
  const seqs = inLog(s) ? messages.map((_, i) => logSeq(ctx.index, i)) : null;
  if (messages.some((m) => m.deduplicationId !== undefined)) {
    return ok({ items: messages.map((m, i) => enqueue(s, q, m, ids[i]!, ctx, DEDUP_WINDOW_MS, seqs?.[i])) });
  }
  return ok({ items: enqueueMany(s, q, messages, ids, messages.map(() => ctx.now), seqs, ctx) });
}

/** Whether new rows leave their bodies in the log (format 4, bodies.ts). */
export const inLog = (s: Store): boolean => s.bodiesFrom !== Infinity;

/**
 * Why a command's messages cannot leave their bodies in its entry (format 4), or null: more than an
 * entry has places for, or a body that is neither text nor bytes (a peer's malformed command),
 * which a later read would not find. Refused alike on every replica.
 */
export function unplaceable(s: Store, messages: readonly { readonly body: unknown }[]): Result<never> | null {
  if (!inLog(s)) return null;
  if (messages.length > SLOTS) return fail(ErrorCode.ValidationFailed, `at most ${SLOTS} messages in a command`);
  if (messages.some((m) => typeof m?.body !== 'string' && !(m?.body instanceof Uint8Array))) return fail(ErrorCode.ValidationFailed, 'a message body must be text');
  return null;
}

/**
 * Adds messages without deduplication ids to a channel: the same rows and counts as enqueue() one by
 * one. `seqs` are theirs in format 4 (bodies.ts); before it, the channel's next ones.
 */
export function enqueueMany(
  s: Store,
  ch: ChannelRow,
  messages: readonly MessageInput[],
  ids: readonly string[],
  nows: readonly number[],
  seqs: readonly number[] | null,
  ctx?: Ctx,
): SentMessage[] {
  const delays = messages.map((m) => delayOf(ch, m));
  const delayed = delays.filter((d) => d > 0).length;
  const first = (s.st.takeSeqs.get(messages.length, messages.length - delayed, delayed, ch.id, messages.length) as { first: number }).first;
  const seqOf = (i: number): number => seqs?.[i] ?? first + i;
  // The rows' values in one flat array, 9 a row, as the inserts bind them (an array per row, flattened
  // with Array.prototype.flat, cost 0.7 µs a row more).
  const values: unknown[] = [];
  messages.forEach((m, i) => {
    const state = delays[i]! > 0 ? MessageState.Delayed : MessageState.Ready;
    const now = nows[i]!;
    values.push(ch.id, seqOf(i), ids[i]!, seqs === null ? m.body : '', JSON.stringify(m.attributes), now, state, now + delays[i]!, now + ch.retention_ms);
  });
  for (let k = 0; k < messages.length; k += INSERT_ROWS) {
    const n = Math.min(INSERT_ROWS, messages.length - k);
    s.st.insertMessages(n).run(...(n === messages.length ? values : values.slice(k * 9, (k + n) * 9)));
  }
  if (ctx !== undefined) wokeUp(ctx, ch.id, messages.length - delayed);
  if (delayed > 0) ctx?.retimed.add(ch.id);
  return messages.map((_, i) => ({ messageId: ids[i]!, sequence: seqOf(i) }));
}

/** One copy of a published message for a subscription: the topic's sequence and message id. */
export interface Copy {
  readonly m: MessageInput;
  readonly messageId: string;
  readonly seq: number;
  /** The message's attributes as stored (JSON), encoded once for all its copies. */
  readonly attributes: string;
}

/**
 * Adds copies of published messages to one subscription's channel: the same rows and counts as
 * enqueue() of each with its given sequence, in one count update per state and multi-row inserts.
 */
export function enqueueCopies(s: Store, ch: ChannelRow, copies: readonly Copy[], ctx: Ctx): void {
  const byState = [0, 0, 0];
  const rows: unknown[] = [];
  for (const c of copies) {
    const delay = delayOf(ch, c.m);
    const state = delay > 0 ? MessageState.Delayed : MessageState.Ready;
    byState[state]!++;
    rows.push(ch.id, c.seq, c.messageId, c.seq >= s.bodiesFrom ? '' : c.m.body, c.attributes, ctx.now, state, ctx.now + delay, ctx.now + ch.retention_ms);
  }
  byState.forEach((n, state) => {
    if (n > 0) s.st.bumpCount[state as MessageState].run(n, ch.id);
  });
  for (let k = 0; k < copies.length; k += INSERT_ROWS) {
    const n = Math.min(INSERT_ROWS, copies.length - k);
    s.st.insertMessages(n).run(...rows.slice(k * 9, (k + n) * 9));
  }
  wokeUp(ctx, ch.id, byState[MessageState.Ready]!);
  if (byState[MessageState.Delayed]! > 0) ctx.retimed.add(ch.id);
}

/**
 * Adds one message to a channel, or returns the first one sent with the same deduplication id.
 * `given` is its sequence when the caller has one: a subscription's copy keeps the topic's, and in
 * format 4 a sequence says where the body is (bodies.ts); otherwise the channel's next.
 */
export function enqueue(s: Store, ch: ChannelRow, m: MessageInput, messageId: string, ctx: Ctx, dedupWindow: number, given?: number): SentMessage {
  if (m.deduplicationId !== undefined) {
    const d = s.st.getDedup.get(ch.id, m.deduplicationId, ctx.now) as { message_id: string; seq: number } | undefined;
    if (d !== undefined) return { messageId: d.message_id, sequence: d.seq };
  }
  const delay = delayOf(ch, m);
  const state = delay > 0 ? MessageState.Delayed : MessageState.Ready;
  // One update of the channel row takes the next sequence number and counts the message.
  let seq: number;
  if (given === undefined) {
    seq = (s.st.nextSeqCounting[state === MessageState.Ready ? 'ready' : 'delayed'].get(ch.id) as { seq: number }).seq;
  } else {
    seq = given;
    s.st.bumpCount[state].run(1, ch.id);
  }
  const body = seq >= s.bodiesFrom ? '' : m.body;
  s.st.insertMessage.run(ch.id, seq, messageId, body, JSON.stringify(m.attributes), ctx.now, state, ctx.now + delay, ctx.now + ch.retention_ms);
  if (state === MessageState.Ready) wokeUp(ctx, ch.id, 1);
  else ctx.retimed.add(ch.id);
  if (m.deduplicationId !== undefined) s.st.putDedup.run(ch.id, m.deduplicationId, messageId, seq, ctx.now + dedupWindow);
  return { messageId, sequence: seq };
}

// ---- time: retention, due messages, dead letters ----

/**
 * Deletes messages whose retention ended (a prefix in sequence order), keeping the counts exact. From
 * format 15 a message out of deliveries whose last lease ended before its retention did was a dead
 * letter by then, on its way to its dead-letter queue: it goes there, not away.
 */
export function expire(s: Store, ch: ChannelRow, ctx: Ctx): number {
  const now = ctx.now;
  let c = s.st.expiredByState.get(ch.id, now) as StateSums;
  // Only where leased messages expire: no second look on a receive's path otherwise.
  if (ctx.deadLettersFirst && ch.max_deliveries !== null && (c.leased ?? 0) > 0) {
    const dead = s.st.dueDeadExpired.all(ch.id, now, ch.max_deliveries) as { seq: number }[];
    for (const m of dead) deadLetter(s, ch, m.seq, MessageState.Leased, ctx);
    if (dead.length > 0) c = s.st.expiredByState.get(ch.id, now) as StateSums;
  }
  const byState = [c.ready ?? 0, c.leased ?? 0, c.delayed ?? 0];
  const n = byState[0]! + byState[1]! + byState[2]!;
  if (n === 0) return 0;
  takeCounts(s, ch.id, byState);
  s.st.deleteExpired.run(ch.id, now);
  return n;
}

/** Messages per state, as sums over rows (null where no row matched). */
export interface StateSums {
  ready: number | null;
  leased: number | null;
  delayed: number | null;
}

/**
 * Deletes the messages past their retention and dead-letters those out of deliveries (at most
 * SWEEP_BUDGET), channel by channel in id order. It reads only the channels that have such work,
 * found through indexes (statements.ts, INDEXED_BY_OPEN), where it read every channel of the
 * partition: a user's 40,000 empty queues held each sweep 0.2 s on every replica.
 *
 * What it does is what that scan of every channel did, row for row and in the same order (the same
 * outbox ids), so no log format guards it: replicas of older builds apply a sweep alike. The scan
 * expired each channel, then, for a channel that dead-letters, stopped if the budget was spent, else
 * dead-lettered the channel's due messages up to what was left of it. A channel outside both sets
 * below did nothing there: expire() found no row, and `dueDead` reads leased rows only, of which
 * the channel's exact counter n_leased says there are none. The sets are read before any channel is
 * touched, which is as good as reading each when its turn comes: one channel's expiry or dead
 * letters change no other channel's rows (a dead letter goes to the outbox, and on to its queue in
 * an entry of its own). Then, from format 15, it deletes what large purges and deletes left
 * (clearPending), which it no longer sees.
 */
export function sweep(s: Store, ctx: Ctx): Result<{ expired: number; deadLettered: number }> {
  if (ctx.actor !== null) return fail(ErrorCode.Forbidden, 'only the system sweeps');
  const expiring = s.st.expiringChannels.all(ctx.now) as number[];
  const leased = s.st.leasedDeadLetterChannels.all() as { id: number; max_deliveries: number }[];
  let expired = 0;
  let deadLettered = 0;
  // Once the budget was spent, the scan went on expiring up to the next channel that dead-letters,
  // which it expired too, and stopped there: `last`, unbounded until then.
  let last = Infinity;
  for (const id of mergeIds(expiring, leased.map((c) => c.id))) {
    if (id > last) break;
    const ch = s.st.getChannel.get(id) as ChannelRow;
    expired += expire(s, ch, ctx);
    if (ch.max_deliveries === null || deadLettered >= SWEEP_BUDGET) continue;
    const dead = s.st.dueDead.all(ch.id, ctx.now, ch.max_deliveries, SWEEP_BUDGET - deadLettered) as { seq: number }[];
    for (const m of dead) deadLetter(s, ch, m.seq, MessageState.Leased, ctx);
    deadLettered += dead.length;
    if (deadLettered >= SWEEP_BUDGET) last = (s.st.nextDeadLetterChannel.get(id) as number | undefined) ?? Infinity;
  }
  if (ctx.boundedDeletes) clearPending(s, ctx);
  return ok({ expired, deadLettered });
}

/** The ids of two ascending lists, ascending, each once. */
function mergeIds(a: readonly number[], b: readonly number[]): number[] {
  const out: number[] = [];
  let i = 0;
  let j = 0;
  while (i < a.length || j < b.length) {
    const next = j >= b.length || (i < a.length && a[i]! <= b[j]!) ? a[i]! : b[j]!;
    if (a[i] === next) i++;
    if (b[j] === next) j++;
    out.push(next);
  }
  return out;
}

// ---- consuming ----

/** The longest a parked poll may wait (the API allows 20 s; a node's clock may run a little apart). */
const MAX_PARK_MS = 60_000;

/** Parked polls past their deadline by this much are pruned at housekeeping: their node is gone. */
export const WAITER_PRUNE_MS = 5 * 60 * 1000;
/**
 * Served polls (format 16) past their deadline by this much are pruned at housekeeping: the poll's
 * node looks again at its deadline, and its client has given up long before this.
 */
export const SERVED_PRUNE_MS = 60 * 1000;

export function receive(s: Store, ref: ChannelRef, max: number, vtSeconds: number | null, ctx: Ctx, wait?: ParkedWait): Result<Received> {
  const user = requireActor(ctx);
  const ch = consumable(s, ref, user);
  if (!Number.isInteger(max) || max < 1 || max > 100) return fail(ErrorCode.ValidationFailed, 'maxMessages must be 1 to 100');
  if (wait !== undefined) {
    if (typeof wait !== 'object' || wait === null || typeof wait.tag !== 'string' || wait.tag.length === 0 || wait.tag.length > 200) {
      return fail(ErrorCode.ValidationFailed, 'a parked wait needs a tag');
    }
    if (!Number.isSafeInteger(wait.ms) || wait.ms < 0 || wait.ms > MAX_PARK_MS) return fail(ErrorCode.ValidationFailed, `a parked wait lasts 0 to ${MAX_PARK_MS} ms`);
    const before = s.st.waiterByTag.get(wait.tag) as Pick<WaiterRow, 'channel_id' | 'id' | 'served'> | undefined;
    if (before !== undefined) s.st.unparkWaiter.run(before.channel_id, before.id);
    // Served since (format 16): what it was given, still leased under that lease, with this look's
    // answer, whether or not the poll's node applied the entry that served it (one that caught up
    // through a snapshot past it did not). It looks no further.
    if (before?.served != null) return ok({ messages: before.channel_id === ch.id ? servedAgain(s, ch, before.served, ctx) : [], parked: 'gone' });
    // Served since, before format 16: what it was given is on its way to the poll, with its node's
    // apply of the entry that served it; it looks no further.
    if (before === undefined && wait.again === true) return ok({ messages: [], parked: 'gone' });
    if (wait.leave === true) return ok({ messages: [] });
  }
  const vt = vtSeconds !== null ? vtSeconds * 1000 : ch.visibility_timeout_ms;
  expire(s, ch, ctx);
  promoteDue(s, ch, ctx);
  const leased = leaseReady(s, ch, max, vt, ctx);
  if (leased.rows.length > 0 || wait === undefined || wait.ms === 0) return ok(ctx.answers ? { messages: received(leased) } : { messages: [], unanswered: leased.rows.length });
  s.st.parkWaiter.run(ch.id, ctx.index, wait.tag, user, max, vtSeconds === null ? null : vt, ctx.now + wait.ms);
  return ok({ messages: [], parked: 'parked' });
}

/**
 * Leases to parked polls the messages an apply made visible on a channel, the polls that waited
 * longest first, each up to its maxMessages; a poll served leaves the state. Answers how many
 * messages remain visible for polls that wait on nodes only (older formats, or still proposing).
 */
export function serveWaiters(s: Store, channelId: number, visible: number, ctx: Ctx): number {
  if (s.st.anyWaiter.get(channelId) === undefined) return visible;
  const ch = s.st.getChannel.get(channelId) as ChannelRow | undefined;
  if (ch === undefined) return visible;
  let left = visible;
  // Once per serving: a lease of 0 seconds ends at once, and must not make its message visible to
  // the next poll in the same entry.
  expire(s, ch, ctx);
  promoteDue(s, ch, ctx);
  // While messages are visible: more than this apply made visible may be (leases that ended by time).
  for (const w of s.st.waitersOf.all(channelId) as WaiterRow[]) {
    // Past its deadline it takes nothing, and stays until its poll's last look takes it out: then
    // 'gone' means served. (Housekeeping prunes what a crashed node left, long after.)
    if (w.deadline <= ctx.now) continue;
    const leased = leaseReady(s, ch, w.max_messages, w.vt_ms ?? ch.visibility_timeout_ms, ctx);
    if (leased.rows.length === 0) break;
    // Kept (format 16) for the poll's next look, should its node not apply this entry.
    if (ctx.keepsServed) s.st.serveWaiter.run(`${leased.lease}:${leased.rows.map((m) => m.seq).join(',')}`, w.channel_id, w.id);
    else s.st.unparkWaiter.run(w.channel_id, w.id);
    // Whole on every replica: the node holding the poll answers it from its own apply.
    ctx.delivered.push({ tag: w.tag, messages: received(leased) });
    left -= leased.rows.length;
  }
  return Math.max(0, left);
}

/**
 * What a served poll was given (`served`: `<lease>:<seq>,...`, format 16), as a receive answers it:
 * the messages still leased under that lease, their texts read again, on every replica alike (a
 * keyed look keeps its result). A delivery that is over (acked, given back, its lease ended) is left
 * out, as in a keyed receive's replay.
 */
function servedAgain(s: Store, ch: ChannelRow, served: string, ctx: Ctx): ReceivedMessage[] {
  const [leaseText, seqs] = served.split(':') as [string, string];
  const lease = Number(leaseText);
  const messages: ReceivedMessage[] = [];
  for (const seqText of seqs.split(',')) {
    const row = leasedUnder(s, ch, Number(seqText), lease, ctx);
    if (row === undefined) continue;
    messages.push({
      messageId: row.message_id,
      sequence: row.seq,
      body: bodyText(rowBody(s, row)),
      attributes: JSON.parse(row.attributes) as Record<string, string>,
      receiptHandle: encodeReceipt(ch.id, row.seq, lease),
      deliveryCount: row.delivery_count,
      sentAt: iso(row.sent_at),
    });
  }
  return messages;
}

/** Message `seq` of `ch` if it is still leased under `lease` (not acked, given back, or past its lease). */
function leasedUnder(s: Store, ch: ChannelRow, seq: number, lease: number, ctx: Ctx): MessageRow | undefined {
  const row = s.st.getMessage.get(ch.id, seq) as MessageRow | undefined;
  return row !== undefined && row.lease_id === lease && leaseLive(row, ctx.now) ? row : undefined;
}

/** A receive's result as its Idempotency-Key keeps it from format 7: the messages without bodies or attributes. */
export function withoutBodies(r: Received): Received {
  return { ...r, messages: r.messages.map(({ body: _b, attributes: _a, ...m }) => m as ReceivedMessage) };
}

/**
 * A keyed receive's replay. A result kept whole (before format 7) is answered as kept. One kept
 * without bodies (withoutBodies) is answered with the messages still leased under it, their bodies
 * and attributes read again, after the caller's right to receive is checked again: a delivery that
 * is over (acked, given back, its lease ended) is left out, down to none, as a receive that found
 * nothing (the message is delivered again: at least once; a client that retried after a lost answer
 * gets no error). So the table holds no message bodies that outlive an ack, a purge or a delete.
 */
export function replayReceive(s: Store, ref: ChannelRef, r: Result, ctx: Ctx): Result {
  if (!r.ok) return r;
  const kept = r.value as Received;
  let ch: ChannelRow;
  try {
    ch = consumable(s, ref, requireActor(ctx));
  } catch (err) {
    if (err instanceof Refusal) return err.failure;
    throw err;
  }
  // Kept whole before format 7: answered as kept, once the right to receive still holds.
  if (kept.messages.every((m) => 'body' in m)) return r;
  const messages: ReceivedMessage[] = [];
  for (const m of kept.messages) {
    const lease = decodeReceipt(m.receiptHandle);
    const row = lease === null || lease.channelId !== ch.id ? undefined : leasedUnder(s, ch, m.sequence, lease.leaseId, ctx);
    if (row === undefined) continue;
    messages.push({
      messageId: m.messageId,
      sequence: m.sequence,
      body: bodyText(rowBody(s, row)),
      attributes: JSON.parse(row.attributes) as Record<string, string>,
      receiptHandle: m.receiptHandle,
      deliveryCount: m.deliveryCount,
      sentAt: m.sentAt,
    });
  }
  return ok({ ...kept, messages });
}

// ---- whole channels ----

export function purgeQueue(s: Store, name: string, ctx: Ctx): Result {
  const user = requireActor(ctx);
  const q = visibleQueue(s, name, user);
  requireOwner(q.owner, user, `purge queue '${name}'`);
  expire(s, q, ctx);
  deadLetterDue(s, q, ctx);
  const c = s.st.getChannel.get(q.id) as ChannelRow;
  const purged = c.n_ready + c.n_leased + c.n_delayed;
  if (ctx.boundedDeletes) {
    // Every message sent before this entry: sequences are log places from format 4 on.
    clearOrLeave(s, q.id, logSeq(ctx.index, 0), true, ctx);
  } else {
    s.st.deleteMessages.run(q.id);
    s.st.setCounts.run(0, 0, 0, q.id);
  }
  return ok({ purged });
}

/**
 * Messages one entry deletes at most for purges and deletes (format 15, BOUNDED_DELETES), in all (a
 * topic's delete, over its subscriptions): about 55 ms of apply on every replica at 1.1 µs a
 * message, under the 1 s election timeout with room to spare. Before, one entry deleted them all: a
 * purge of 640,000 held every node's loop 0.7 s (a review).
 */
export const CLEAR_BUDGET = 50_000;

/**
 * Deletes up to `budget` of channel `id`'s messages with sequences below `below`, oldest first; the
 * channel's counts follow when it lives on (`live`: a purge's), as the rows of a deleted channel
 * count nowhere. Returns how many it deleted.
 */
function clearRows(s: Store, id: number, below: number, budget: number, live: boolean): number {
  if (budget <= 0) return 0;
  const last = s.st.clearBoundary.get(id, below, budget - 1) as { seq: number } | undefined;
  const to = last === undefined ? below - 1 : last.seq;
  if (live) {
    const c = s.st.clearedByState.get(id, to) as StateSums;
    takeCounts(s, id, [c.ready ?? 0, c.leased ?? 0, c.delayed ?? 0]);
  }
  return s.st.deleteUpTo.run(id, to).changes;
}

/**
 * A purge's or a delete's messages, below `below`: what is left of the entry's budget now, the rest
 * left to the sweeps (clearPending), which the leader proposes while any is left (views.ts,
 * needsSweep). Until then a purged queue's older messages may still be received, as SQS says of its
 * purge ("up to 60 seconds"); a deleted channel's are nobody's.
 */
function clearOrLeave(s: Store, id: number, below: number, live: boolean, ctx: Ctx): void {
  const budget = ctx.clearBudget;
  const n = clearRows(s, id, below, budget, live);
  ctx.clearBudget -= n;
  if (n >= budget) s.st.putClearing.run(id, below);
}

/** A sweep's share of the messages purges and deletes left (format 15): the entry's budget, in channel order. */
function clearPending(s: Store, ctx: Ctx): void {
  for (const c of s.st.listClearing.all() as { channel_id: number; below_seq: number }[]) {
    if (ctx.clearBudget <= 0) break;
    const budget = ctx.clearBudget;
    const n = clearRows(s, c.channel_id, c.below_seq, budget, s.st.getChannel.get(c.channel_id) !== undefined);
    if (n < budget) s.st.deleteClearing.run(c.channel_id);
    ctx.clearBudget -= n;
  }
}

/**
 * Deletes a channel with its messages and deduplication ids: a new one of the same name starts empty.
 * With `deadLetters`, the channel's dead letters on their way go first (deadLetterDue); a revoked
 * right to subscribe gives none, so that nothing of the topic reaches that user after it. From
 * format 15 the messages past CLEAR_BUDGET go in the sweeps that follow (clearOrLeave).
 */
export function dropChannel(s: Store, id: number, ctx: Ctx, deadLetters: boolean): void {
  if (deadLetters) deadLetterDue(s, s.st.getChannel.get(id) as ChannelRow, ctx);
  if (ctx.boundedDeletes) clearOrLeave(s, id, Number.MAX_SAFE_INTEGER, false, ctx);
  else s.st.deleteMessages.run(id);
  s.st.deleteWaiters.run(id);
  s.st.deleteDedup.run(id);
  s.st.deleteChannel.run(id);
}

/**
 * From format 15, before a purge or a delete: the channel's messages whose last allowed lease ended go
 * to its dead-letter queue (or are dropped and counted, without one), as the next receive or sweep
 * would have done. For consumers they were gone already (views.ts counts them nowhere), on their way
 * there, and a purge counts only what it deletes. Before format 15 the purge or delete took them.
 */
function deadLetterDue(s: Store, ch: ChannelRow, ctx: Ctx): void {
  if (!ctx.deadLettersFirst || ch.max_deliveries === null) return;
  // No limit (-1), as a receive's promoteDue has none: they may be many (leases ended faster than
  // sweeps dead-letter, 1,000 at a time), each a body read from the log and an outbox row. Bounded,
  // the purge or delete would take the rest, the loss this is for.
  for (const m of s.st.dueDead.all(ch.id, ctx.now, ch.max_deliveries, -1) as { seq: number }[]) deadLetter(s, ch, m.seq, MessageState.Leased, ctx);
}

// ---- dead letters across partitions ----

/**
 * Stores dead letters in their dead-letter queue. The forwarder delivers at least once, so a retry is
 * deduplicated for DEADLETTER_DEDUP_MS (deadLetterKey), as the partition's `format` in force says.
 */
export function deliverDeadLetters(s: Store, c: Extract<Command, { type: 'deadletter.deliver' }>, ctx: Ctx, format: number): Result {
  if (ctx.actor !== null) return fail(ErrorCode.Forbidden, 'only the system delivers dead letters');
  const refused = unplaceable(s, c.messages);
  if (refused !== null) return refused;
  const q = s.st.getQueue.get(c.queue) as QueueRow | undefined;
  // The dead-letter queue must still be the owner's: one deleted and recreated by someone else
  // must not receive another user's messages.
  if (q === undefined || q.owner !== c.expectedOwner) return ok({ delivered: 0, dropped: c.messages.length });
  c.messages.forEach((m, k) => {
    const seq = inLog(s) ? logSeq(ctx.index, k) : undefined;
    enqueue(s, q, { body: m.body, attributes: m.attributes, deduplicationId: deadLetterKey(m, format) }, m.messageId, ctx, DEADLETTER_DEDUP_MS, seq);
  });
  return ok({ delivered: c.messages.length, dropped: 0 });
}

/**
 * A dead letter's deduplication key: its outbox row (from format 12), else its message id, which is
 * not one letter's (two subscriptions' copies of a publish share it). From format 13 it starts with a
 * space, which no client's deduplicationId holds (printable ASCII, \x21-\x7e): before, a client's id
 * `dls:0/1` swallowed that dead letter, and a dead letter held the id a day.
 */
function deadLetterKey(m: { readonly messageId: string; readonly source?: string }, format: number): string {
  const key = format >= DEAD_LETTER_SOURCES && typeof m.source === 'string' ? `dls:${m.source}` : `dl:${m.messageId}`;
  return format >= DEAD_LETTER_KEYS_APART ? ` ${key}` : key;
}

export function outboxDone(s: Store, ids: readonly number[], ctx: Ctx): Result {
  if (ctx.actor !== null) return fail(ErrorCode.Forbidden, 'only the system clears the outbox');
  for (const id of ids) s.st.deleteOutbox.run(id);
  return ok(null);
}
