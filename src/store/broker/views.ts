// The read-only side of the state machine: what queues, topics and subscriptions look like to a user,
// their stats, and the probes the node makes (long polls, metrics, the leader's sweep and forwarder).
// Reads are not entries: `now` is the caller's best clock, never below the partition's.
import { ErrorCode, fail, type Body, type ChannelRef, type Command, type Result } from './commands.js';
import { bodyText } from './envelope.js';
import { consumable, visibleQueue, visibleTopic } from './access.js';
import { Refusal, clock, iso, read, seconds, type QueueRow, type Store } from './context.js';
import type { StateSums } from './messages.js';
import type { ChannelRow, TopicRow } from './schema.js';

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

function stats(s: Store, ch: ChannelRow, now: number): QueueView['stats'] {
  const expired = s.st.expiredByState.get(ch.id, now) as StateSums;
  const due = s.st.dueCounts.get(ch.max_deliveries ?? Number.MAX_SAFE_INTEGER, ch.id, now, now) as {
    leased: number | null;
    leased_alive: number | null;
    delayed: number | null;
  };
  const ready = ch.n_ready - (expired.ready ?? 0);
  const leased = ch.n_leased - (expired.leased ?? 0);
  const delayed = ch.n_delayed - (expired.delayed ?? 0);
  const oldest = s.st.oldest.get(ch.id, now, now, ch.max_deliveries ?? Number.MAX_SAFE_INTEGER) as { sent_at: number } | undefined;
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

/**
 * A queue as `user` sees it: its dead-letter queue is named to its owner only, the one user who may
 * see that queue (a grantee's look at it answers 404, so that names do not leak; review of stop 61).
 */
export function queueView(s: Store, q: QueueRow, now: number, user: string): QueueView {
  return {
    name: q.name,
    owner: q.owner,
    visibilityTimeoutSeconds: seconds(q.visibility_timeout_ms),
    maxDeliveries: q.max_deliveries,
    deadLetterQueue: q.owner === user ? q.dead_letter_queue : null,
    delaySeconds: seconds(q.delay_ms),
    retentionSeconds: seconds(q.retention_ms),
    createdAt: iso(q.created_at),
    stats: stats(s, q, now),
  };
}

export function getQueue(s: Store, name: string, user: string, now: number): Result<QueueView> {
  return read(() => queueView(s, visibleQueue(s, name, user), Math.max(now, clock(s)), user));
}

/** Names of the queues `user` owns or has a grant on, after `after`, in name order. */
export function listQueues(s: Store, user: string, after: string, limit: number): string[] {
  return (s.st.listQueues.all(user, user, after, limit) as { name: string }[]).map((r) => r.name);
}

export function topicView(s: Store, t: TopicRow): TopicView {
  const n = (s.st.countSubscriptions.get(t.name) as { n: number }).n;
  return { name: t.name, owner: t.owner, subscribe: t.subscribe_policy, createdAt: iso(t.created_at), stats: { subscriptions: n, published: t.published } };
}

export function getTopic(s: Store, name: string, user: string): Result<TopicView> {
  return read(() => topicView(s, visibleTopic(s, name, user)));
}

export function listTopics(s: Store, user: string, after: string, limit: number): string[] {
  return (s.st.listTopics.all(user, user, after, limit) as { name: string }[]).map((r) => r.name);
}

/** A subscription as `user` sees it: its dead-letter queue is named to its owner only (queueView). */
export function subscriptionView(s: Store, topic: string, name: string, now: number, user: string): SubscriptionView {
  const sub = s.st.getSubscription.get(topic, name) as ChannelRow & { filter: string | null; name: string };
  return {
    topic,
    name,
    owner: sub.owner,
    visibilityTimeoutSeconds: seconds(sub.visibility_timeout_ms),
    maxDeliveries: sub.max_deliveries,
    deadLetterQueue: sub.owner === user ? sub.dead_letter_queue : null,
    filter: sub.filter === null ? null : (JSON.parse(sub.filter) as Record<string, string>),
    createdAt: iso(sub.created_at),
    stats: stats(s, sub, now),
  };
}

export function getSubscription(s: Store, topic: string, name: string, user: string, now: number): Result<SubscriptionView> {
  return read(() => {
    const sub = s.st.getSubscription.get(topic, name) as (ChannelRow & { topic_owner: string }) | undefined;
    if (sub === undefined || (sub.owner !== user && sub.topic_owner !== user)) {
      throw new Refusal(fail(ErrorCode.NotFound, `subscription '${name}' of topic '${topic}' not found`));
    }
    return subscriptionView(s, topic, name, Math.max(now, clock(s)), user);
  });
}

/** Null when `user` may consume from `ref`; else what a receive, ack, nack or lease would answer (404, 403). */
export function checkConsumable(s: Store, ref: ChannelRef, user: string): Result<null> {
  return read(() => {
    consumable(s, ref, user);
    return null;
  });
}

/** All subscriptions for the topic's owner; one's own for anybody else. */
export function listSubscriptions(s: Store, topic: string, user: string, now: number): Result<SubscriptionView[]> {
  return read(() => {
    const t = visibleTopic(s, topic, user);
    const rows = s.st.listSubscriptions.all(topic) as { name: string; owner: string }[];
    const at = Math.max(now, clock(s));
    return rows.filter((r) => t.owner === user || r.owner === user).map((r) => subscriptionView(s, topic, r.name, at, user));
  });
}

/** Whether a channel has a message ready now (for long polls to decide whether to propose). */
export function hasVisible(s: Store, channelId: number, now: number): boolean {
  const ch = s.st.getChannel.get(channelId) as ChannelRow | undefined;
  if (ch === undefined) return false;
  return stats(s, ch, Math.max(now, clock(s))).visible > 0;
}

/**
 * When the oldest live message of any queue or subscription of the partition was sent (ms), or null
 * when there is none: for the oldest-message-age metric and its alert.
 */
export function oldestSentAt(s: Store, now: number): number | null {
  const r = s.st.oldestOfAll.get(Math.max(now, clock(s))) as { at: number | null };
  return r.at;
}

/** The fullest queues' message counters (as of the last apply; time-based changes not counted). */
export function queueDepths(s: Store, limit: number): { queue: string; ready: number; leased: number; delayed: number }[] {
  return s.st.queueDepths.all(limit) as { queue: string; ready: number; leased: number; delayed: number }[];
}

/** Messages of every queue and subscription of the partition, by state (counters, for metrics). */
export function messageTotals(s: Store): { ready: number; leased: number; delayed: number } {
  const r = s.st.messageTotals.get() as { ready: number | null; leased: number | null; delayed: number | null };
  return { ready: r.ready ?? 0, leased: r.leased ?? 0, delayed: r.delayed ?? 0 };
}

/** The channel id of a queue or subscription, or null when there is none (for long polls). */
export function channelIdOf(s: Store, ref: ChannelRef): number | null {
  const row = ('queue' in ref ? s.st.getQueue.get(ref.queue) : s.st.getSubscription.get(ref.topic, ref.subscription)) as ChannelRow | undefined;
  return row === undefined ? null : row.id;
}

/** A long poll waiting in the state, as a node that did not park it can take it out (waitingTagged). */
export interface WaitingPoll {
  readonly tag: string;
  readonly actor: string;
  readonly maxMessages: number;
  readonly channel: ChannelRef;
}

/**
 * The look a poll takes when its client leaves (ms 0, leave), for `poll`: proposed as its user by a
 * node that takes out a poll nobody will answer (Router.leaveOrphanedPolls, Housekeeping). It leases
 * nothing; a poll served before it answers what it was given.
 */
export function leavingLook(poll: WaitingPoll): Command {
  return { type: 'receive', channel: poll.channel, maxMessages: poll.maxMessages, visibilityTimeoutSeconds: null, wait: { tag: poll.tag, ms: 0, again: true, leave: true } };
}

/**
 * Up to `limit` polls still waiting at `now` (the state's clock) whose tags sort in [from, below), in
 * tag order; a poll on a channel deleted since is left out (it takes nothing).
 */
export function waitingTagged(s: Store, from: string, below: string, now: number, limit: number): WaitingPoll[] {
  const rows = s.st.waitingTagged.all(from, below, now, limit) as {
    tag: string;
    actor: string;
    max_messages: number;
    queue: string | null;
    topic: string | null;
    subscription: string | null;
  }[];
  const polls: WaitingPoll[] = [];
  for (const r of rows) {
    const channel: ChannelRef | null = r.queue !== null ? { queue: r.queue } : r.topic !== null && r.subscription !== null ? { topic: r.topic, subscription: r.subscription } : null;
    if (channel !== null) polls.push({ tag: r.tag, actor: r.actor, maxMessages: r.max_messages, channel });
  }
  return polls;
}

/**
 * When the next leased or delayed message of a channel becomes visible (ms), or null: time alone
 * makes those visible, with no entry to wake a long poll, so it sets a timer for this.
 */
export function nextVisibleAt(s: Store, channelId: number): number | null {
  const r = s.st.nextDue.get(channelId, channelId) as { at: number };
  return r.at === Number.MAX_SAFE_INTEGER ? null : r.at;
}

/**
 * Whether a sweep would do anything now, for the leader to decide to propose one: one probe for an
 * expired message per channel that holds messages, then one per channel that dead-letters and holds
 * leased messages (messages.ts, sweep, says why no other channel can have work). It reads no empty
 * channel: the leader looks every couple of election timeouts, on its event loop.
 */
export function needsSweep(s: Store, now: number): boolean {
  const at = Math.max(now, clock(s));
  // Messages large purges and deletes left (format 15; messages.ts, clearPending).
  if (s.st.anyClearing.get() !== undefined) return true;
  if (s.st.anyExpiredAtAll.get(at) !== undefined) return true;
  for (const ch of s.st.leasedDeadLetterChannels.all() as { id: number; max_deliveries: number }[]) {
    if (s.st.dueDead.get(ch.id, at, ch.max_deliveries, 1) !== undefined) return true;
  }
  return false;
}

/** A dead letter waiting in the outbox for delivery to its queue. */
export interface OutboxRow {
  readonly id: number;
  readonly targetQueue: string;
  readonly expectedOwner: string;
  readonly messageId: string;
  readonly body: string;
  readonly attributes: Record<string, string>;
}

type OutboxTableRow = { id: number; target_queue: string; expected_owner: string; message_id: string; body: Body; attributes: string };

const outboxRow = (r: OutboxTableRow): OutboxRow => ({
  id: r.id,
  targetQueue: r.target_queue,
  expectedOwner: r.expected_owner,
  messageId: r.message_id,
  // As text: the forwarder's command may cross to another node as JSON.
  body: bodyText(r.body),
  attributes: JSON.parse(r.attributes) as Record<string, string>,
});

/** Dead letters waiting for delivery, oldest first. */
export function outbox(s: Store, limit: number): OutboxRow[] {
  return (s.st.listOutbox.all(limit) as OutboxTableRow[]).map(outboxRow);
}

/** Where up to `limit` dead letters after outbox row `after` go, oldest first, without their bodies. */
export function outboxHeads(s: Store, limit: number, after: number): Pick<OutboxRow, 'id' | 'targetQueue' | 'expectedOwner'>[] {
  const rows = s.st.listOutboxHeads.all(after, limit) as { id: number; target_queue: string; expected_owner: string }[];
  return rows.map((r) => ({ id: r.id, targetQueue: r.target_queue, expectedOwner: r.expected_owner }));
}

/** Outbox row `id`, or null once it is gone. */
export function outboxLetter(s: Store, id: number): OutboxRow | null {
  const row = s.st.getOutbox.get(id) as OutboxTableRow | undefined;
  return row === undefined ? null : outboxRow(row);
}
