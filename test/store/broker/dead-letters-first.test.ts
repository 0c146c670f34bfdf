// A message whose last allowed lease ended is a dead letter on its way to its dead-letter queue: for
// consumers it is gone at once (docs/api.md), and from format 15 (DEAD_LETTERS_FIRST) nothing that
// deletes messages takes it before it gets there: a purge, its queue's or subscription's delete, or
// its retention ending after its lease did. And (UNDELIVERED_RELEASED) a node's release of a delivery
// no client saw takes it back, so it never dead-letters. A partition in an older format keeps the
// older builds' ways, which its other replicas may still run. From the message-lifecycle review of
// 2026-12-07.
import t from 'tap';
import { DEAD_LETTERS_FIRST, UNDELIVERED_RELEASED, type Command, type ReceivedMessage } from '../../../src/store/broker/index.js';
import { TestStore, queue } from './helpers.js';
import { forwardDeadLetters, grant, msg, publish, q, recv, sendMsgs, sub, subscription, topic } from './unit-kit.js';

async function store(t: { teardown(fn: () => unknown): void }, retentionSeconds = 345600, format?: number): Promise<TestStore> {
  const s = await TestStore.open(0, undefined, format);
  t.teardown(() => s.close());
  s.must(null, { type: 'user.register', username: 'alice', passwordHash: 'h' });
  s.must(null, { type: 'user.register', username: 'bob', passwordHash: 'h' });
  s.must('alice', queue('dlq'));
  s.must('alice', queue('orders', { maxDeliveries: 1, deadLetterQueue: 'dlq', visibilityTimeoutSeconds: 30, retentionSeconds }));
  return s;
}

const bodiesIn = (s: TestStore, queueName: string): string[] => (s.must('alice', recv(q(queueName), 10)).messages as ReceivedMessage[]).map((m) => m.body);

/** Sends one message to 'orders' and takes its one delivery; its lease (30 s) then ends. */
function poisonLeaseEnds(s: TestStore): void {
  s.must('alice', sendMsgs('orders', msg('poison')));
  s.must('alice', recv(q('orders'), 1));
  s.advance(31);
}

t.test('a message whose last lease ended is dead-lettered even if the source queue is purged before the sweep', async (t) => {
  const s = await store(t);
  poisonLeaseEnds(s);
  const before = s.sm.getQueue('orders', 'alice', s.time);
  t.equal(before.ok && before.value.stats.visible + before.value.stats.inFlight + before.value.stats.delayed, 0, 'already gone for consumers (stats)');
  s.must('alice', sendMsgs('orders', msg('fine')));
  const purged = s.must('alice', { type: 'queue.purge', name: 'orders' });
  t.equal(purged.purged, 1, 'purge deletes the message a consumer could see, and counts only that one');
  s.must(null, { type: 'sweep' });
  forwardDeadLetters(s);
  t.strictSame(bodiesIn(s, 'dlq'), ['poison'], 'the dead letter reaches the dead-letter queue');
  const after = s.sm.getQueue('orders', 'alice', s.time);
  t.match(after.ok && after.value.stats, { visible: 0, inFlight: 0, delayed: 0, dropped: 0 }, 'the queue is empty, nothing dropped');
});

t.test('a message whose last lease ended is dead-lettered even if the source queue is deleted before the sweep', async (t) => {
  const s = await store(t);
  poisonLeaseEnds(s);
  s.must('alice', { type: 'queue.delete', name: 'orders' });
  s.must(null, { type: 'sweep' });
  forwardDeadLetters(s);
  t.strictSame(bodiesIn(s, 'dlq'), ['poison'], 'the dead letter reaches the dead-letter queue');
});

t.test('a message whose last lease ended is dead-lettered even if its retention ends before the sweep', async (t) => {
  const s = await store(t, 60);
  s.must('alice', sendMsgs('orders', msg('poison')));
  s.advance(29);
  s.must('alice', recv(q('orders'), 1, 30)); // lease ends at 59 s, retention at 60 s
  s.advance(30.5);
  const v = s.sm.getQueue('orders', 'alice', s.time);
  t.equal(v.ok && v.value.stats.visible + v.value.stats.inFlight, 0, 'gone for consumers at 59.5 s: on its way to the dead-letter queue');
  s.advance(1);
  s.must(null, { type: 'sweep' });
  forwardDeadLetters(s);
  t.strictSame(bodiesIn(s, 'dlq'), ['poison'], 'the dead letter reaches the dead-letter queue');
});

t.test('a message whose retention ended before its last lease did expires: it never was a dead letter', async (t) => {
  const s = await store(t, 60);
  s.must('alice', sendMsgs('orders', msg('old')));
  s.advance(45);
  s.must('alice', recv(q('orders'), 1, 30)); // retention ends at 60 s, the lease at 75 s
  s.advance(31);
  s.must(null, { type: 'sweep' });
  forwardDeadLetters(s);
  t.strictSame(bodiesIn(s, 'dlq'), [], 'nothing dead-lettered');
  const v = s.sm.getQueue('orders', 'alice', s.time);
  t.match(v.ok && v.value.stats, { visible: 0, inFlight: 0, delayed: 0, dropped: 0 }, 'expired, not dropped');
});

t.test("a subscription's delete dead-letters what was on its way; a revoked right to subscribe takes it nowhere", async (t) => {
  const s = await store(t);
  s.must('alice', topic('news', 'granted'));
  s.must('alice', grant('topic', 'news', 'bob', 'subscribe'));
  s.must('bob', queue('bob-dlq'));
  s.must('alice', subscription('news', 'a', { maxDeliveries: 1, deadLetterQueue: 'dlq', visibilityTimeoutSeconds: 30 }));
  s.must('bob', subscription('news', 'b', { maxDeliveries: 1, deadLetterQueue: 'bob-dlq', visibilityTimeoutSeconds: 30 }));
  s.must('alice', publish('news', msg('headline')));
  s.must('alice', recv(sub('news', 'a'), 1));
  s.must('bob', recv(sub('news', 'b'), 1));
  s.advance(31);
  s.must('alice', { type: 'subscription.delete', topic: 'news', name: 'a' });
  s.must('alice', { type: 'grant.delete', kind: 'topic', name: 'news', username: 'bob' });
  s.must(null, { type: 'sweep' });
  forwardDeadLetters(s);
  t.strictSame(bodiesIn(s, 'dlq'), ['headline'], "the deleted subscription's dead letter reaches its dead-letter queue");
  t.strictSame((s.must('bob', recv(q('bob-dlq'), 10)).messages as ReceivedMessage[]).length, 0, 'none reaches the user who may no longer read the topic');
});

t.test('before format 15 a purge takes a dead letter on its way, as older builds do', async (t) => {
  const s = await store(t, 345600, DEAD_LETTERS_FIRST - 1);
  poisonLeaseEnds(s);
  t.equal(s.must('alice', { type: 'queue.purge', name: 'orders' }).purged, 1, 'counted as purged');
  s.must(null, { type: 'sweep' });
  forwardDeadLetters(s);
  t.strictSame(bodiesIn(s, 'dlq'), [], 'and gone');
});

t.test("a node's release takes back a delivery no client saw: counted none, never dead-lettered", async (t) => {
  for (const format of [UNDELIVERED_RELEASED, UNDELIVERED_RELEASED - 1]) {
    const s = await store(t, 345600, format);
    s.must('alice', sendMsgs('orders', msg('live'), msg('ended')));
    const [live, ended] = s.must('alice', recv(q('orders'), 2)).messages as ReceivedMessage[];
    const release = (handle: string): Command => ({ type: 'nack', channel: q('orders'), receiptHandles: [handle], delaySeconds: 0, release: true });
    s.must('alice', release(live!.receiptHandle));
    s.advance(31); // the other lease ended: on its way to the dead-letter queue, unless taken back
    s.must('alice', release(ended!.receiptHandle));
    s.must(null, { type: 'sweep' });
    forwardDeadLetters(s);
    const again = s.must('alice', recv(q('orders'), 10)).messages as ReceivedMessage[];
    if (format >= UNDELIVERED_RELEASED) {
      t.strictSame(
        again.map((m) => [m.body, m.deliveryCount]),
        [['live', 1], ['ended', 1]],
        `format ${format}: both delivered again, as their first delivery`,
      );
      t.strictSame(bodiesIn(s, 'dlq'), [], `format ${format}: nothing dead-lettered`);
    } else {
      t.strictSame(again, [], `format ${format}: a plain nack, as older builds apply it`);
      t.strictSame(bodiesIn(s, 'dlq'), ['live', 'ended'], `format ${format}: both dead-lettered`);
    }
  }
});
