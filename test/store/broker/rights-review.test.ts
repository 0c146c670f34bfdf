// Rights checked at the moment that matters (a review, stop 46): a parked poll, an
// Idempotency-Key's replay, a conflict's answer, a receipt handle and a dead letter each act only
// while the right they need still holds, and reveal nothing the caller may not see.
import t from 'tap';
import type { Command } from '../../../src/store/broker/index.js';
import { TestStore, queue, send } from './helpers.js';
import { publish, subscription } from './unit-kit.js';

const park = (channel: { queue: string } | { topic: string; subscription: string }, tag: string): Command => ({
  type: 'receive',
  channel,
  maxMessages: 10,
  visibilityTimeoutSeconds: null,
  wait: { tag, ms: 20_000, again: false },
});
async function store(t: { teardown(fn: () => unknown): void }): Promise<TestStore> {
  const s = await TestStore.open(0);
  t.teardown(() => s.close());
  for (const u of ['alice', 'bob', 'carol']) s.must(u, { type: 'user.register', username: u, passwordHash: 'x' });
  return s;
}

t.test("a poll parked by a grantee is not served from a queue deleted and recreated by someone else", async (t) => {
  const s = await store(t);
  s.must('alice', queue('q'));
  s.must('alice', { type: 'grant.put', kind: 'queue', name: 'q', username: 'bob', actions: ['receive'] });
  t.same(s.must('bob', park({ queue: 'q' }, 'bob-1')), { messages: [], parked: 'parked' });
  s.must('alice', { type: 'queue.delete', name: 'q' });
  s.must('carol', queue('q'));
  t.same(s.apply('carol', send('q', "carol's")).delivered, [], "bob's poll is gone with alice's queue");
  t.match(s.run('bob', { ...park({ queue: 'q' }, 'bob-1'), wait: { tag: 'bob-1', ms: 20_000, again: true } } as Command), { ok: false, code: 'not_found' }, "its next look is refused on carol's queue");
});

t.test("a subscriber's parked poll is not served once its right to subscribe is revoked", async (t) => {
  const s = await store(t);
  s.must('alice', { type: 'topic.create', name: 't', subscribe: 'granted' });
  s.must('alice', { type: 'grant.put', kind: 'topic', name: 't', username: 'bob', actions: ['subscribe'] });
  s.must('bob', subscription('t', 'b'));
  t.same(s.must('bob', park({ topic: 't', subscription: 'b' }, 'bob-s')), { messages: [], parked: 'parked' });
  s.must('alice', { type: 'grant.put', kind: 'topic', name: 't', username: 'bob', actions: ['publish'] });
  t.same(s.apply('alice', publish('t', { body: 'secret', attributes: {} })).delivered, []);
});

t.test("a user deleted while its poll is parked: still served (its grants stay, docs/api.md); a doubt, not a breach of ownership", async (t) => {
  const s = await store(t);
  s.must('alice', queue('q'));
  s.must('alice', { type: 'grant.put', kind: 'queue', name: 'q', username: 'bob', actions: ['receive'] });
  s.must('bob', park({ queue: 'q' }, 'bob-1'));
  s.must('bob', { type: 'user.delete', epoch: 0 });
  t.equal(s.apply('alice', send('q', 'm')).delivered.length, 1, 'served: the apply does not know users of other partitions');
});

t.test('a keyed subscription.create replayed after the right was revoked answers its first 201 and creates nothing', async (t) => {
  const s = await store(t);
  s.must('alice', { type: 'topic.create', name: 't', subscribe: 'granted' });
  s.must('alice', { type: 'grant.put', kind: 'topic', name: 't', username: 'bob', actions: ['subscribe'] });
  const first = s.run('bob', subscription('t', 'b'), 'k1');
  t.ok(first.ok);
  s.must('alice', { type: 'grant.delete', kind: 'topic', name: 't', username: 'bob' });
  const again = s.run('bob', subscription('t', 'b'), 'k1');
  t.same(again, first, 'the same answer, which held only what bob was told then');
  t.match(s.sm.getSubscription('t', 'b', 'alice', s.time), { ok: false, code: 'not_found' }, 'no subscription');
  t.match(s.run('bob', { type: 'receive', channel: { topic: 't', subscription: 'b' }, maxMessages: 1, visibilityTimeoutSeconds: null }), { ok: false, code: 'not_found' });
  t.match(s.run('bob', subscription('t', 'b'), 'k2'), { ok: false, code: 'not_found' }, 'a new key is refused: the topic is hidden from bob now');
});

t.test('a publish-only grantee learns no subscription name: refused (403) before the name is looked up', async (t) => {
  const s = await store(t);
  s.must('alice', { type: 'topic.create', name: 't', subscribe: 'granted' });
  s.must('alice', subscription('t', 'private'));
  s.must('alice', { type: 'grant.put', kind: 'topic', name: 't', username: 'bob', actions: ['publish'] });
  t.match(s.run('bob', subscription('t', 'private')), { ok: false, code: 'forbidden' });
  t.match(s.run('bob', subscription('t', 'free')), { ok: false, code: 'forbidden' }, 'the same answer for a free name');
});

t.test('a receipt handle stops working when the right goes and on a queue recreated by someone else', async (t) => {
  const s = await store(t);
  s.must('alice', queue('q'));
  s.must('alice', { type: 'grant.put', kind: 'queue', name: 'q', username: 'bob', actions: ['receive'] });
  s.must('alice', send('q', 'a'));
  const h = (s.must('bob', { type: 'receive', channel: { queue: 'q' }, maxMessages: 1, visibilityTimeoutSeconds: null }) as { messages: { receiptHandle: string }[] }).messages[0]!.receiptHandle;
  s.must('alice', { type: 'grant.put', kind: 'queue', name: 'q', username: 'bob', actions: ['send'] });
  t.match(s.run('bob', { type: 'ack', channel: { queue: 'q' }, receiptHandles: [h] }), { ok: false, code: 'forbidden' });
  t.match(s.run('bob', { type: 'lease', channel: { queue: 'q' }, receiptHandles: [h], visibilityTimeoutSeconds: 600 }), { ok: false, code: 'forbidden' });
  s.must('alice', { type: 'queue.delete', name: 'q' });
  s.must('carol', queue('q'));
  s.must('carol', send('q', 'c'));
  s.must('carol', { type: 'receive', channel: { queue: 'q' }, maxMessages: 1, visibilityTimeoutSeconds: null });
  t.match(s.must('carol', { type: 'ack', channel: { queue: 'q' }, receiptHandles: [h] }), { acked: [], failed: [{ code: 'receipt_invalid' }] }, "alice's queue's handle names no message of carol's");
});

t.test("a dead letter reaches no queue of another owner, whatever the channel's configuration names", async (t) => {
  const s = await store(t);
  s.must('carol', queue('carols'));
  // Configured past the API's check (which refuses it): the delivery checks the owner again.
  s.must('bob', queue('q', { maxDeliveries: 1, deadLetterQueue: 'carols' }));
  s.must('bob', send('q', 'x'));
  const h = (s.must('bob', { type: 'receive', channel: { queue: 'q' }, maxMessages: 1, visibilityTimeoutSeconds: null }) as { messages: { receiptHandle: string }[] }).messages[0]!.receiptHandle;
  s.must('bob', { type: 'nack', channel: { queue: 'q' }, receiptHandles: [h], delaySeconds: 0 });
  const [out] = s.sm.outbox(10);
  t.equal(out!.expectedOwner, 'bob');
  t.match(s.must(null, { type: 'deadletter.deliver', queue: 'carols', expectedOwner: out!.expectedOwner, messages: [{ messageId: out!.messageId, body: out!.body, attributes: out!.attributes }] }), { delivered: 0, dropped: 1 });
});
