// Topics and their subscriptions: creating and deleting them, and publishing, which fans a message
// out to every subscription whose filter it matches (each subscription is a channel of its own).
import { ErrorCode, fail, ok, type Command, type MessageInput, type Result, type SentMessage } from './commands.js';
import { grantActions, requireActor, requireOwner, requireRoom, visibleTopic } from './access.js';
import { DEDUP_WINDOW_MS, type Ctx, type Store } from './context.js';
import { logSeq } from './bodies.js';
import type { Filter } from './filters.js';
import { dropChannel, enqueue, enqueueCopies, inLog, unplaceable, type Copy } from './messages.js';
import type { ChannelRow, TopicRow } from './schema.js';
import { subscriptionView, topicView } from './views.js';

/** Subscriptions a topic holds at most (format 5, BOUNDED_FANOUT); one more is refused. */
export const MAX_SUBSCRIPTIONS = 1000;
/**
 * Subscriptions of one topic one user other than its owner holds at most (format 5), so that nobody
 * takes a whole open topic's room alone; the topic's owner may delete any of them.
 */
export const MAX_SUBSCRIPTIONS_PER_USER = 100;
/**
 * Copies one publish stores at most: its messages times the topic's subscriptions, filters or not
 * (format 5). 4-11 ms of apply on each replica at the limit on a 2-core VM (`npm run bench:fanout`).
 */
export const MAX_FANOUT = 1000;

function matchesFilter(filter: Filter | null, attributes: Readonly<Record<string, string>>): boolean {
  if (filter === null) return true;
  for (const [k, v] of Object.entries(filter)) if (attributes[k] !== v) return false;
  return true;
}

/** `bounded`: from format 15 a user owns at most MAX_OWNED queues, topics and subscriptions in the partition (access.ts). */
export function createTopic(s: Store, name: string, subscribe: 'anyone' | 'granted', ctx: Ctx, bounded: boolean): Result {
  const user = requireActor(ctx);
  if (s.st.getTopic.get(name) !== undefined) return fail(ErrorCode.Conflict, `topic '${name}' exists`);
  if (bounded) requireRoom(s, user, `topic '${name}'`);
  s.st.insertTopic.run(name, ctx.index, user, subscribe, ctx.now);
  return ok(topicView(s, s.st.getTopic.get(name) as TopicRow));
}

export function deleteTopic(s: Store, name: string, ctx: Ctx): Result {
  const user = requireActor(ctx);
  const t = visibleTopic(s, name, user);
  requireOwner(t.owner, user, `delete topic '${name}'`);
  for (const sub of s.st.listSubscriptions.all(name) as { channel_id: number }[]) dropChannel(s, sub.channel_id, ctx, true);
  s.st.deleteSubscriptions.run(name);
  s.st.deleteDedup.run(-t.id);
  s.st.deleteTopic.run(name);
  s.st.deleteGrants.run('topic', name);
  return ok(null);
}

/** A subscription as a publish fans out to it, with the copies gathered for it. */
interface Fanned {
  readonly ch: ChannelRow;
  readonly filter: Filter | null;
  readonly copies: Copy[];
}

type Published = SentMessage & { subscriptions: number };

/** The topic `name` as `ctx`'s actor may publish to it, or why not. */
function publishable(s: Store, name: string, ctx: Ctx): Result<TopicRow> {
  const user = requireActor(ctx);
  const t = visibleTopic(s, name, user);
  if (t.owner !== user && !grantActions(s, 'topic', name, user).includes('publish')) {
    return fail(ErrorCode.Forbidden, `no 'publish' right on topic '${name}'`);
  }
  return ok(t);
}

/**
 * The topic's subscriptions in name order, each filter read and parsed only when not cached
 * (filters.ts): every publish read and parsed every filter of its topic, on every replica. A publish
 * that 1,000 filters of 4 KiB turn down applied in 19 ms, 4 ms with them cached (one replica, review of stop 62).
 */
function subscriptionsOf(s: Store, name: string): Fanned[] {
  return (s.st.listSubscriptionChannels.all(name) as ChannelRow[]).map((ch) => ({
    ch,
    filter: s.filters.of(ch.id, () => (s.st.subscriptionFilter.get(ch.id) as { filter: string | null }).filter),
    copies: [],
  }));
}

/** The refusal of a publish of `count` messages past MAX_FANOUT copies, or null within it. */
function pastFanout(name: string, count: number, subs: readonly Fanned[]): Result<never> | null {
  if (count * subs.length <= MAX_FANOUT) return null;
  const most = Math.floor(MAX_FANOUT / subs.length);
  return fail(
    ErrorCode.PayloadTooLarge,
    `${count} messages to the ${subs.length} subscriptions of topic '${name}' would be ${count * subs.length} copies; one publish stores at most ${MAX_FANOUT}: ` +
      (most > 0 ? `publish at most ${most} messages per request` : `the topic has more subscriptions than that (made before the limit): delete some`),
  );
}

/**
 * Publishes `messages`, the command's messages from place `first` on: each is counted, deduplicated,
 * and copied to the subscriptions its attributes match, gathered in `subs` (bounded: stored by
 * the caller, all at once) or stored at once, message by message, as builds before format 5 do.
 */
function fanOut(s: Store, t: TopicRow, subs: readonly Fanned[], messages: readonly MessageInput[], first: number, ctx: Ctx, bounded: boolean): Published[] {
  return messages.map((m, k) => {
    const i = first + k;
    if (m.deduplicationId !== undefined) {
      const d = s.st.getDedup.get(-t.id, m.deduplicationId, ctx.now) as { message_id: string; seq: number } | undefined;
      if (d !== undefined) return { messageId: d.message_id, sequence: d.seq, subscriptions: 0 };
    }
    const messageId = `${s.partition}-${ctx.index}-${i}`;
    // Counts the publication; in format 4 the sequence says where the body is (bodies.ts).
    const next = (s.st.nextTopicSeq.get(t.name) as { seq: number }).seq;
    const sequence = inLog(s) ? logSeq(ctx.index, i) : next;
    const attributes = JSON.stringify(m.attributes);
    let delivered = 0;
    for (const sub of subs) {
      if (!matchesFilter(sub.filter, m.attributes)) continue;
      // Before format 5 each copy is stored at once, message by message, as older builds do: the
      // order of the channels woken, and so of the polls served, must be theirs.
      if (bounded) sub.copies.push({ m: { body: m.body, attributes: m.attributes }, messageId, seq: sequence, attributes });
      else enqueue(s, sub.ch, { body: m.body, attributes: m.attributes }, messageId, ctx, 0, sequence);
      delivered++;
    }
    if (m.deduplicationId !== undefined) s.st.putDedup.run(-t.id, m.deduplicationId, messageId, sequence, ctx.now + DEDUP_WINDOW_MS);
    return { messageId, sequence, subscriptions: delivered };
  });
}

export function publish(s: Store, name: string, messages: readonly MessageInput[], ctx: Ctx, bounded: boolean): Result<{ items: Published[] }> {
  const t = publishable(s, name, ctx);
  if (!t.ok) return t;
  if (messages.length === 0) return fail(ErrorCode.ValidationFailed, 'no messages');
  const refused = unplaceable(s, messages);
  if (refused !== null) return refused;
  const subs = subscriptionsOf(s, name);
  const past = bounded ? pastFanout(name, messages.length, subs) : null;
  if (past !== null) return past;
  const items = fanOut(s, t.value, subs, messages, 0, ctx, bounded);
  for (const sub of subs) if (sub.copies.length > 0) enqueueCopies(s, sub.ch, sub.copies, ctx);
  return ok({ items });
}

/** The most publishes one command holds (format 11): a few turns' worth of single publishes. */
export const MAX_SPLIT = 1000;

/**
 * Format 11: the publishes one command holds (`split`, their counts of messages in order: publishes
 * of one user to one topic sharing an entry), each as if applied alone, so that one past MAX_FANOUT
 * fails alone; what would refuse each (the topic, the right, the messages) refuses the command.
 * Answers each publish's own result, in order. The copies of them all are stored at once.
 */
export function publishEach(s: Store, name: string, messages: readonly MessageInput[], split: unknown, ctx: Ctx): Result<{ publishes: Result[] }> {
  if (!Array.isArray(split) || split.length === 0 || split.length > MAX_SPLIT || !split.every((n) => Number.isSafeInteger(n) && n > 0)) {
    return fail(ErrorCode.ValidationFailed, `split must list 1 to ${MAX_SPLIT} counts of messages, each at least 1`);
  }
  const counts = split as number[];
  const counted = counts.reduce((a, n) => a + n, 0);
  if (counted !== messages.length) return fail(ErrorCode.ValidationFailed, `split counts ${counted} messages, not the ${messages.length} sent`);
  const t = publishable(s, name, ctx);
  if (!t.ok) return t;
  const refused = unplaceable(s, messages);
  if (refused !== null) return refused;
  const subs = subscriptionsOf(s, name);
  const publishes: Result[] = [];
  let first = 0;
  for (const n of counts) {
    const past = pastFanout(name, n, subs);
    publishes.push(past ?? ok({ items: fanOut(s, t.value, subs, messages.slice(first, first + n), first, ctx, true) }));
    first += n;
  }
  for (const sub of subs) if (sub.copies.length > 0) enqueueCopies(s, sub.ch, sub.copies, ctx);
  return ok({ publishes });
}

/**
 * `bounded`: the fan-out limits of format 5; `owned`: from format 15 the subscriber owns at most
 * MAX_OWNED queues, topics and subscriptions in the topic's partition, subscriptions counted (access.ts).
 */
export function createSubscription(s: Store, c: Extract<Command, { type: 'subscription.create' }>, ctx: Ctx, bounded: boolean, owned: boolean): Result {
  const user = requireActor(ctx);
  const t = visibleTopic(s, c.topic, user);
  const may = t.owner === user || t.subscribe_policy === 'anyone' || grantActions(s, 'topic', c.topic, user).includes('subscribe');
  if (!may) return fail(ErrorCode.Forbidden, `no 'subscribe' right on topic '${c.topic}'`);
  if (s.st.getSubscription.get(c.topic, c.name) !== undefined) return fail(ErrorCode.Conflict, `subscription '${c.name}' exists`);
  if (bounded && (s.st.countSubscriptions.get(c.topic) as { n: number }).n >= MAX_SUBSCRIPTIONS) {
    return fail(ErrorCode.Conflict, `topic '${c.topic}' has ${MAX_SUBSCRIPTIONS} subscriptions, the most a topic holds`);
  }
  if (bounded && user !== t.owner) {
    const mine = (s.st.listSubscriptions.all(c.topic) as { owner: string }[]).filter((x) => x.owner === user).length;
    if (mine >= MAX_SUBSCRIPTIONS_PER_USER) {
      return fail(ErrorCode.Conflict, `you hold ${MAX_SUBSCRIPTIONS_PER_USER} subscriptions of topic '${c.topic}', the most a user other than its owner holds`);
    }
  }
  if (owned) requireRoom(s, user, `a subscription of topic '${c.topic}'`);
  s.st.insertChannel.run(
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
  s.st.insertSubscription.run(c.topic, c.name, ctx.index, c.filter === null ? null : JSON.stringify(c.filter));
  return ok(subscriptionView(s, c.topic, c.name, ctx.now, user));
}

/**
 * After a change of `username`'s grant on topic `name`: when that user may no longer subscribe (a
 * topic of subscribe policy 'granted', no 'subscribe' right left), the subscriptions the user holds
 * on it go, with their messages and parked polls (format 6). The topic's owner controls who reads
 * its messages: a revoke stops every delivery to that user, as deleting each subscription would.
 */
export function dropUnsubscribed(s: Store, name: string, username: string, ctx: Ctx): void {
  const t = s.st.getTopic.get(name) as TopicRow | undefined;
  if (t === undefined || t.subscribe_policy === 'anyone' || t.owner === username) return;
  if (grantActions(s, 'topic', name, username).includes('subscribe')) return;
  for (const sub of s.st.listSubscriptions.all(name) as { name: string; channel_id: number; owner: string }[]) {
    if (sub.owner !== username) continue;
    dropChannel(s, sub.channel_id, ctx, false);
    s.st.deleteSubscription.run(name, sub.name);
  }
}

export function deleteSubscription(s: Store, topic: string, name: string, ctx: Ctx): Result {
  const user = requireActor(ctx);
  const sub = s.st.getSubscription.get(topic, name) as (ChannelRow & { topic_owner: string }) | undefined;
  if (sub === undefined || (sub.owner !== user && sub.topic_owner !== user)) {
    return fail(ErrorCode.NotFound, `subscription '${name}' of topic '${topic}' not found`);
  }
  dropChannel(s, sub.id, ctx, true);
  s.st.deleteSubscription.run(topic, name);
  return ok(null);
}
