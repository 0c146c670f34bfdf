// Small builders shared by the state machine's unit tests (on top of
// helpers.ts).
import { BODIES_IN_LOG, FORMAT, SLOTS, type ChannelRef, type Command, type HandleOutcome, type MessageInput, type ReceivedMessage, type Result } from '../../../src/store/broker/index.js';
import { TestStore, queue } from './helpers.js';

/**
 * Opens a store in a temp dir, closed and removed when the test ends; registers the given users. At
 * this build's format (4: bodies stay in the log, and a message's sequence is its entry's index x
 * 65,536 + its place there), as clusters run; `KIT_FORMAT=3` runs a suite at the format before, where
 * a channel's sequences count 1, 2, 3, ... Expectations go through seqs() where the two differ.
 */
export async function openStore(t: { teardown(fn: () => unknown): void }, ...users: string[]): Promise<TestStore> {
  const s = await TestStore.open(0, undefined, Number(process.env.KIT_FORMAT ?? FORMAT));
  t.teardown(() => s.close());
  for (const u of users) s.must(null, { type: 'user.register', username: u, passwordHash: `hash-of-${u}` });
  return s;
}

/** A store with users alice and bob, and alice's queue 'orders' (visibility timeout 30 s unless overridden). */
export async function ordersStore(t: { teardown(fn: () => unknown): void }, extra: Parameters<typeof queue>[1] = {}): Promise<TestStore> {
  const s = await openStore(t, 'alice', 'bob');
  s.must('alice', queue('orders', extra));
  return s;
}

/**
 * Whether sequences are the log's places (format 4) rather than a count per channel: then a
 * deduplicated or refused send uses none up only in the sense that no row takes one, and gaps are
 * normal.
 */
export const seqsInLog = (s: TestStore): boolean => s.sm.format() >= BODIES_IN_LOG;

/**
 * The sequences of the messages of entry `index` (positions 0..n-1): index x 65,536 + position in
 * format 4; in format 3 `counted` (the channel's own count, which the caller knows), 1-based.
 */
export function seqs(s: TestStore, index: number, n: number, counted: number): number[] {
  return Array.from({ length: n }, (_, k) => (seqsInLog(s) ? index * SLOTS + k : counted + k));
}

export const q = (queue: string): ChannelRef => ({ queue });
export const sub = (topic: string, subscription: string): ChannelRef => ({ topic, subscription });

export const msg = (body: string, extra: Partial<MessageInput> = {}): MessageInput => ({ body, attributes: {}, ...extra });

export const sendMsgs = (name: string, ...messages: MessageInput[]): Command => ({ type: 'queue.send', name, messages });

export const recv = (channel: ChannelRef, maxMessages = 10, visibilityTimeoutSeconds: number | null = null): Command => ({
  type: 'receive',
  channel,
  maxMessages,
  visibilityTimeoutSeconds,
});

export const ack = (channel: ChannelRef, ...receiptHandles: string[]): Command => ({ type: 'ack', channel, receiptHandles });
export const nack = (channel: ChannelRef, delaySeconds: number, ...receiptHandles: string[]): Command => ({ type: 'nack', channel, receiptHandles, delaySeconds });
export const lease = (channel: ChannelRef, visibilityTimeoutSeconds: number, ...receiptHandles: string[]): Command => ({
  type: 'lease',
  channel,
  receiptHandles,
  visibilityTimeoutSeconds,
});

export const grant = (kind: 'queue' | 'topic', name: string, username: string, ...actions: string[]): Command => ({
  type: 'grant.put',
  kind,
  name,
  username,
  actions,
});

export const topic = (name: string, subscribe: 'anyone' | 'granted' = 'anyone'): Command => ({ type: 'topic.create', name, subscribe });
export const publish = (name: string, ...messages: MessageInput[]): Command => ({ type: 'topic.publish', name, messages });
export const subscription = (
  topicName: string,
  name: string,
  extra: Partial<Extract<Command, { type: 'subscription.create' }>> = {},
): Command => ({
  type: 'subscription.create',
  topic: topicName,
  name,
  visibilityTimeoutSeconds: 30,
  maxDeliveries: null,
  deadLetterQueue: null,
  filter: null,
  ...extra,
});

/** Receives and returns the messages, failing loudly on a refusal. */
export function take(s: TestStore, actor: string, channel: ChannelRef, max = 10, vt: number | null = null): ReceivedMessage[] {
  return s.must<{ messages: ReceivedMessage[] }>(actor, recv(channel, max, vt)).messages;
}

export function handles(s: TestStore, actor: string, command: Command): HandleOutcome {
  return s.must<HandleOutcome>(actor, command);
}

/** A queue's stats as read at the test's current time (not the store's last-entry clock). */
export function queueStats(s: TestStore, name: string, user = 'alice') {
  const r = s.sm.getQueue(name, user, s.time);
  if (!r.ok) throw new Error(`getQueue ${name}: ${r.code}`);
  return r.value.stats;
}

export function subStats(s: TestStore, topicName: string, name: string, user = 'alice') {
  const r = s.sm.getSubscription(topicName, name, user, s.time);
  if (!r.ok) throw new Error(`getSubscription ${topicName}/${name}: ${r.code}`);
  return r.value.stats;
}

export const stats = (visible: number, inFlight: number, delayed: number, dropped: number, oldestMessageAgeSeconds: number) => ({
  visible,
  inFlight,
  delayed,
  dropped,
  oldestMessageAgeSeconds,
});

/** The refusal code of a result, or 'ok'. */
export const code = (r: Result): string => (r.ok ? 'ok' : r.code);

/**
 * What the dead-letter forwarder does (housekeeping.ts) for a partition's outbox (partition 0, whose
 * dead-letter queues are all in it): each row delivered, then cleared; `again` delivers each twice,
 * as a retry after a lost answer would.
 */
export function forwardDeadLetters(s: TestStore, again = false): void {
  for (const r of s.sm.outbox(100)) {
    const deliver: Command = {
      type: 'deadletter.deliver',
      queue: r.targetQueue,
      expectedOwner: r.expectedOwner,
      messages: [{ messageId: r.messageId, body: r.body, attributes: r.attributes, source: `0/${r.id}` }],
    };
    s.must(null, deliver);
    if (again) s.must(null, deliver);
    s.must(null, { type: 'outbox.done', ids: [r.id] });
  }
}
