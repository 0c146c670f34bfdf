// Topics and subscriptions in the broker's state machine: create, visibility, publish rights, fan-out
// with independent leases, filters, subscription rights and ownership, deletes, deduplication, stats.
import t from 'tap';
import { BODIES_IN_LOG, BOUNDED_FANOUT, KEYS_GO_WITH_RESOURCE, MAX_FANOUT, MAX_SUBSCRIPTIONS, MAX_SUBSCRIPTIONS_PER_USER, REVOKE_UNSUBSCRIBES, type ReceivedMessage } from '../../../src/store/broker/index.js';
import { TestStore, queue } from './helpers.js';
import {
  ack,
  code,
  grant,
  handles,
  lease,
  msg,
  nack,
  openStore,
  publish,
  recv,
  seqs,
  seqsInLog,
  stats,
  sub,
  subStats,
  subscription,
  take,
  topic,
} from './unit-kit.js';

const T0 = new Date(1_700_000_000_000).toISOString();

type Sent = { items: { messageId: string; sequence: number; subscriptions: number }[] };

const topicStats = (s: Awaited<ReturnType<typeof openStore>>, name: string, user = 'alice') => {
  const r = s.sm.getTopic(name, user);
  if (!r.ok) throw new Error(`getTopic ${name}: ${r.code}`);
  return r.value.stats;
};

// ---- create and visibility ----

t.test("topic.create answers the topic with its owner, policy (default 'anyone') and empty stats", async (t) => {
  const s = await openStore(t, 'alice');
  const expected = { name: 'news', owner: 'alice', subscribe: 'anyone', createdAt: T0, stats: { subscriptions: 0, published: 0 } };
  t.strictSame(s.must('alice', topic('news')), expected);
  t.strictSame(s.sm.getTopic('news', 'alice'), { ok: true, value: expected });
  t.match(s.must('alice', topic('private', 'granted')), { name: 'private', subscribe: 'granted' });
});

t.test('topic.create of an existing name is a conflict, for anyone, and keeps the first topic', async (t) => {
  const s = await openStore(t, 'alice', 'bob');
  s.must('alice', topic('news', 'granted'));
  t.equal(code(s.run('alice', topic('news'))), 'conflict');
  t.equal(code(s.run('bob', topic('news'))), 'conflict');
  t.match(s.sm.getTopic('news', 'alice'), { ok: true, value: { owner: 'alice', subscribe: 'granted' } });
});

t.test('topic.create needs a user: the system actor is forbidden', async (t) => {
  const s = await openStore(t, 'alice');
  t.equal(code(s.run(null, topic('news'))), 'forbidden');
  t.equal(code(s.sm.getTopic('news', 'alice')), 'not_found');
});

t.test("getTopic: an 'anyone' topic is visible to all; a 'granted' topic only to its owner and grantees", async (t) => {
  const s = await openStore(t, 'alice', 'bob', 'carol');
  s.must('alice', topic('open'));
  s.must('alice', topic('closed', 'granted'));
  s.must('alice', grant('topic', 'closed', 'bob', 'publish'));
  t.match(s.sm.getTopic('open', 'carol'), { ok: true, value: { name: 'open', owner: 'alice' } });
  t.match(s.sm.getTopic('closed', 'alice'), { ok: true, value: { name: 'closed' } });
  t.match(s.sm.getTopic('closed', 'bob'), { ok: true, value: { name: 'closed' } });
  const hidden = s.sm.getTopic('closed', 'carol');
  const missing = s.sm.getTopic('nope', 'carol');
  t.equal(code(hidden), 'not_found');
  if (!hidden.ok && !missing.ok) t.equal(hidden.detail, missing.detail.replace('nope', 'closed'), 'worded as for a missing topic');
});

t.test('listTopics lists owned and granted topics in name order, with after and limit', async (t) => {
  const s = await openStore(t, 'alice', 'bob');
  s.must('alice', topic('c'));
  s.must('alice', topic('a'));
  s.must('bob', topic('b', 'granted'));
  s.must('bob', topic('d', 'granted'));
  s.must('bob', grant('topic', 'd', 'alice', 'subscribe'));
  t.strictSame(s.sm.listTopics('alice', '', 10), ['a', 'c', 'd']);
  t.strictSame(s.sm.listTopics('alice', 'a', 1), ['c']);
  t.strictSame(s.sm.listTopics('bob', '', 10), ['b', 'd']);
});

// ---- publish ----

t.test('publish by the owner answers {messageId, sequence, subscriptions} and counts as published', async (t) => {
  const s = await openStore(t, 'alice');
  s.must('alice', topic('news'));
  s.must('alice', subscription('news', 's1'));
  const r = s.must<Sent>('alice', publish('news', msg('a'), msg('b')));
  t.equal(r.items.length, 2);
  const [a, b] = seqs(s, s.index, 2, 1);
  t.match(r.items, [
    { sequence: a, subscriptions: 1 },
    { sequence: b, subscriptions: 1 },
  ]);
  t.not(r.items[0]!.messageId, r.items[1]!.messageId);
  const c = s.must<Sent>('alice', publish('news', msg('c'))).items[0]!.sequence;
  t.equal(c, seqs(s, s.index, 1, 3)[0]);
  t.ok(c > b!, 'sequences grow strictly');
  t.strictSame(topicStats(s, 'news'), { subscriptions: 1, published: 3 });
});

t.test('publish with no subscriptions is accepted and reaches nobody', async (t) => {
  const s = await openStore(t, 'alice');
  s.must('alice', topic('news'));
  t.match(s.must('alice', publish('news', msg('a'))), { items: [{ sequence: seqs(s, s.index, 1, 1)[0], subscriptions: 0 }] });
  t.strictSame(topicStats(s, 'news'), { subscriptions: 0, published: 1 });
});

t.test("a 'publish' grantee may publish", async (t) => {
  const s = await openStore(t, 'alice', 'bob');
  s.must('alice', topic('news', 'granted'));
  s.must('alice', subscription('news', 's1'));
  s.must('alice', grant('topic', 'news', 'bob', 'publish'));
  t.match(s.must('bob', publish('news', msg('from bob'))), { items: [{ sequence: seqs(s, s.index, 1, 1)[0], subscriptions: 1 }] });
  t.match(take(s, 'alice', sub('news', 's1')), [{ body: 'from bob' }]);
});

t.test('publish without the right: forbidden when the topic is visible, not_found when it is not; nothing stored', async (t) => {
  const s = await openStore(t, 'alice', 'bob', 'carol');
  s.must('alice', topic('open'));
  s.must('alice', topic('closed', 'granted'));
  s.must('alice', subscription('open', 's1'));
  s.must('alice', subscription('closed', 's1'));
  s.must('alice', grant('topic', 'closed', 'bob', 'subscribe'));
  t.equal(code(s.run('carol', publish('open', msg('x')))), 'forbidden', "stranger on an 'anyone' topic");
  t.equal(code(s.run('bob', publish('closed', msg('x')))), 'forbidden', "'subscribe' grantee");
  t.equal(code(s.run('carol', publish('closed', msg('x')))), 'not_found', "stranger on a 'granted' topic");
  t.equal(code(s.run('carol', publish('missing', msg('x')))), 'not_found', 'missing topic');
  t.equal(code(s.run(null, publish('open', msg('x')))), 'forbidden', 'the system actor');
  t.strictSame(topicStats(s, 'open'), { subscriptions: 1, published: 0 });
  t.strictSame(topicStats(s, 'closed'), { subscriptions: 1, published: 0 });
  t.strictSame(subStats(s, 'open', 's1'), stats(0, 0, 0, 0, 0));
  t.strictSame(subStats(s, 'closed', 's1'), stats(0, 0, 0, 0, 0));
});

t.test('publishing an empty batch is validation_failed', async (t) => {
  const s = await openStore(t, 'alice');
  s.must('alice', topic('news'));
  t.equal(code(s.run('alice', publish('news'))), 'validation_failed');
  t.strictSame(topicStats(s, 'news'), { subscriptions: 0, published: 0 });
});

// ---- fan-out ----

t.test('every subscription gets its own copy, with its own leases and acks', async (t) => {
  const s = await openStore(t, 'alice', 'bob');
  s.must('alice', topic('news'));
  s.must('alice', subscription('news', 'a-sub'));
  s.must('bob', subscription('news', 'b-sub'));
  const sent = s.must<Sent>('alice', publish('news', msg('hello', { attributes: { k: 'v' } })));
  t.equal(sent.items[0]!.subscriptions, 2);
  const [ma] = take(s, 'alice', sub('news', 'a-sub'));
  t.match(ma, { messageId: sent.items[0]!.messageId, body: 'hello', attributes: { k: 'v' }, deliveryCount: 1 });
  t.strictSame(subStats(s, 'news', 'b-sub', 'bob'), stats(1, 0, 0, 0, 0), "a lease in a-sub does not hide b-sub's copy");
  t.strictSame(handles(s, 'alice', ack(sub('news', 'a-sub'), ma!.receiptHandle)), { acked: [ma!.receiptHandle], failed: [] });
  t.strictSame(subStats(s, 'news', 'a-sub'), stats(0, 0, 0, 0, 0));
  const [mb] = take(s, 'bob', sub('news', 'b-sub'));
  t.match(mb, { messageId: sent.items[0]!.messageId, body: 'hello', deliveryCount: 1 }, 'the ack in a-sub left b-sub its copy');
  t.strictSame(handles(s, 'bob', ack(sub('news', 'b-sub'), ma!.receiptHandle)).failed, [{ receiptHandle: ma!.receiptHandle, code: 'receipt_invalid' }], "a-sub's handle means nothing in b-sub");
});

t.test('a subscriber sees a message under the messageId and sequence that publish answered', async (t) => {
  const s = await openStore(t, 'alice');
  s.must('alice', topic('news'));
  s.must('alice', publish('news', msg('before')));
  s.must('alice', subscription('news', 's1'));
  const sent = s.must<Sent>('alice', publish('news', msg('after')));
  t.match(take(s, 'alice', sub('news', 's1')), [{ messageId: sent.items[0]!.messageId, sequence: sent.items[0]!.sequence, body: 'after' }]);
});

t.test('a subscription created after a publish does not get the earlier messages', async (t) => {
  const s = await openStore(t, 'alice');
  s.must('alice', topic('news'));
  s.must('alice', subscription('news', 'early'));
  s.must('alice', publish('news', msg('one')));
  s.must('alice', subscription('news', 'late'));
  t.strictSame(subStats(s, 'news', 'late'), stats(0, 0, 0, 0, 0));
  t.match(s.must('alice', publish('news', msg('two'))), { items: [{ subscriptions: 2 }] });
  t.strictSame(
    take(s, 'alice', sub('news', 'late')).map((m) => m.body),
    ['two'],
  );
  t.strictSame(
    take(s, 'alice', sub('news', 'early')).map((m) => m.body),
    ['one', 'two'],
  );
});

t.test('attribute filters: only matching subscriptions get the message, and subscriptions counts them', async (t) => {
  const s = await openStore(t, 'alice');
  s.must('alice', topic('news'));
  s.must('alice', subscription('news', 'all'));
  s.must('alice', subscription('news', 'red', { filter: { color: 'red' } }));
  s.must('alice', subscription('news', 'red-big', { filter: { color: 'red', size: 'big' } }));
  const r = s.must<Sent>(
    'alice',
    publish(
      'news',
      msg('red', { attributes: { color: 'red' } }),
      msg('blue', { attributes: { color: 'blue' } }),
      msg('red big', { attributes: { color: 'red', size: 'big', extra: 'x' } }),
      msg('plain'),
    ),
  );
  t.strictSame(
    r.items.map((i) => i.subscriptions),
    [2, 1, 3, 1],
  );
  const bodies = (name: string) => take(s, 'alice', sub('news', name)).map((m) => m.body);
  t.strictSame(bodies('all'), ['red', 'blue', 'red big', 'plain']);
  t.strictSame(bodies('red'), ['red', 'red big']);
  t.strictSame(bodies('red-big'), ['red big']);
});

// ---- subscriptions ----

t.test('subscription.create answers the subscription, owned by the caller, with its settings and empty stats', async (t) => {
  const s = await openStore(t, 'alice', 'bob');
  s.must('alice', topic('news'));
  const v = s.must('bob', subscription('news', 'mine', { visibilityTimeoutSeconds: 12, maxDeliveries: 4, deadLetterQueue: 'bob-dlq', filter: { k: 'v' } }));
  const expected = {
    topic: 'news',
    name: 'mine',
    owner: 'bob',
    visibilityTimeoutSeconds: 12,
    maxDeliveries: 4,
    deadLetterQueue: 'bob-dlq',
    filter: { k: 'v' },
    createdAt: T0,
    stats: stats(0, 0, 0, 0, 0),
  };
  t.strictSame(v, expected);
  t.strictSame(s.sm.getSubscription('news', 'mine', 'bob', s.time), { ok: true, value: expected });
  t.strictSame(topicStats(s, 'news'), { subscriptions: 1, published: 0 });
});

t.test("subscribing needs ownership, a 'subscribe' grant or an 'anyone' topic", async (t) => {
  const s = await openStore(t, 'alice', 'bob', 'carol', 'dave');
  s.must('alice', topic('open'));
  s.must('alice', topic('closed', 'granted'));
  s.must('alice', grant('topic', 'closed', 'bob', 'subscribe'));
  s.must('alice', grant('topic', 'closed', 'carol', 'publish'));
  t.match(s.run('alice', subscription('closed', 'owner-sub')), { ok: true }, 'owner');
  t.match(s.run('bob', subscription('closed', 'bob-sub')), { ok: true }, "'subscribe' grantee");
  t.match(s.run('dave', subscription('open', 'dave-sub')), { ok: true }, "anyone on an 'anyone' topic");
  t.equal(code(s.run('carol', subscription('closed', 'carol-sub'))), 'forbidden', "'publish' grantee");
  t.equal(code(s.run('dave', subscription('closed', 'dave-sub'))), 'not_found', "stranger on a 'granted' topic");
  t.equal(code(s.run('dave', subscription('missing', 'dave-sub'))), 'not_found', 'missing topic');
  t.strictSame(topicStats(s, 'closed'), { subscriptions: 2, published: 0 });
});

t.test('a subscription name taken on the topic is a conflict; names are per topic', async (t) => {
  const s = await openStore(t, 'alice', 'bob');
  s.must('alice', topic('news'));
  s.must('alice', topic('sport'));
  s.must('alice', subscription('news', 's1', { visibilityTimeoutSeconds: 10 }));
  t.equal(code(s.run('alice', subscription('news', 's1'))), 'conflict');
  t.equal(code(s.run('bob', subscription('news', 's1'))), 'conflict');
  t.match(s.sm.getSubscription('news', 's1', 'alice', s.time), { ok: true, value: { owner: 'alice', visibilityTimeoutSeconds: 10 } });
  t.match(s.run('bob', subscription('sport', 's1')), { ok: true, value: { topic: 'sport', name: 's1', owner: 'bob' } });
});

t.test("only the subscription's owner consumes: the topic owner sees it but is forbidden, a stranger gets not_found", async (t) => {
  const s = await openStore(t, 'alice', 'bob', 'carol');
  s.must('alice', topic('news'));
  s.must('bob', subscription('news', 'bob-sub'));
  s.must('alice', publish('news', msg('a')));
  const [m] = take(s, 'bob', sub('news', 'bob-sub'));
  const ref = sub('news', 'bob-sub');
  t.match(s.sm.getSubscription('news', 'bob-sub', 'alice', s.time), { ok: true, value: { owner: 'bob', stats: { inFlight: 1 } } }, 'the topic owner sees it');
  for (const c of [recv(ref), ack(ref, m!.receiptHandle), nack(ref, 0, m!.receiptHandle), lease(ref, 60, m!.receiptHandle)]) {
    t.equal(code(s.run('alice', c)), 'forbidden', `topic owner: ${c.type}`);
    t.equal(code(s.run('carol', c)), 'not_found', `stranger: ${c.type}`);
  }
  t.equal(code(s.sm.getSubscription('news', 'bob-sub', 'carol', s.time)), 'not_found');
  t.strictSame(subStats(s, 'news', 'bob-sub', 'bob'), stats(0, 1, 0, 0, 0), 'the lease is untouched');
  t.strictSame(handles(s, 'bob', ack(ref, m!.receiptHandle)), { acked: [m!.receiptHandle], failed: [] });
});

t.test("a subscription's own visibility timeout governs its leases and redeliveries", async (t) => {
  const s = await openStore(t, 'alice');
  s.must('alice', topic('news'));
  s.must('alice', subscription('news', 's1', { visibilityTimeoutSeconds: 10 }));
  s.must('alice', publish('news', msg('a')));
  const [m1] = take(s, 'alice', sub('news', 's1'));
  s.advance(9);
  t.strictSame(take(s, 'alice', sub('news', 's1')), []);
  s.advance(1);
  const [m2] = take(s, 'alice', sub('news', 's1'));
  t.match(m2, { messageId: m1!.messageId, deliveryCount: 2 });
  t.strictSame(handles(s, 'alice', ack(sub('news', 's1'), m1!.receiptHandle)).failed, [{ receiptHandle: m1!.receiptHandle, code: 'receipt_stale' }]);
});

t.test("a subscription's maxDeliveries dead-letters to its dead-letter queue under the subscription owner's name", async (t) => {
  const s = await openStore(t, 'alice', 'bob');
  s.must('alice', topic('news'));
  s.must('bob', subscription('news', 'bob-sub', { maxDeliveries: 1, deadLetterQueue: 'bob-dlq' }));
  const sent = s.must<Sent>('alice', publish('news', msg('poison', { attributes: { a: '1' } })));
  const [m] = take(s, 'bob', sub('news', 'bob-sub'));
  s.must('bob', nack(sub('news', 'bob-sub'), 0, m!.receiptHandle));
  t.strictSame(s.sm.outbox(10), [{ id: 1, targetQueue: 'bob-dlq', expectedOwner: 'bob', messageId: sent.items[0]!.messageId, body: 'poison', attributes: { a: '1' } }]);
  t.strictSame(subStats(s, 'news', 'bob-sub', 'bob'), stats(0, 0, 0, 0, 0));
});

t.test('listSubscriptions: all of them for the topic owner, only their own for others', async (t) => {
  const s = await openStore(t, 'alice', 'bob', 'carol', 'dave');
  s.must('alice', topic('news'));
  s.must('carol', subscription('news', 'c1'));
  s.must('bob', subscription('news', 'b2'));
  s.must('alice', subscription('news', 'a1'));
  s.must('bob', subscription('news', 'b1'));
  const names = (user: string) => {
    const r = s.sm.listSubscriptions('news', user, s.time);
    return r.ok ? r.value.map((v) => `${v.name}:${v.owner}`) : r.code;
  };
  t.strictSame(names('alice'), ['a1:alice', 'b1:bob', 'b2:bob', 'c1:carol']);
  t.strictSame(names('bob'), ['b1:bob', 'b2:bob']);
  t.strictSame(names('dave'), []);
  s.must('alice', topic('closed', 'granted'));
  t.equal(code(s.sm.listSubscriptions('closed', 'dave', s.time)), 'not_found', "a 'granted' topic is hidden from a stranger");
});

t.test("subscription.delete by the subscription's owner removes it and its messages", async (t) => {
  const s = await openStore(t, 'alice', 'bob');
  s.must('alice', topic('news'));
  s.must('bob', subscription('news', 'bob-sub'));
  s.must('alice', publish('news', msg('a'), msg('b')));
  const [m] = take(s, 'bob', sub('news', 'bob-sub'), 1);
  t.strictSame(s.run('bob', { type: 'subscription.delete', topic: 'news', name: 'bob-sub' }), { ok: true, value: null });
  t.equal(code(s.sm.getSubscription('news', 'bob-sub', 'bob', s.time)), 'not_found');
  t.equal(code(s.run('bob', ack(sub('news', 'bob-sub'), m!.receiptHandle))), 'not_found');
  t.strictSame(topicStats(s, 'news'), { subscriptions: 0, published: 2 });
  t.equal((s.sm.sqlite.prepare('select count(*) as n from messages').get() as { n: number }).n, 0, 'its messages are gone');
  s.must('bob', subscription('news', 'bob-sub'));
  t.strictSame(take(s, 'bob', sub('news', 'bob-sub')), [], 'a new subscription of the same name starts empty');
});

t.test('subscription.delete by the topic owner is allowed; by anyone else it is not_found', async (t) => {
  const s = await openStore(t, 'alice', 'bob', 'carol');
  s.must('alice', topic('news'));
  s.must('bob', subscription('news', 'bob-sub'));
  s.must('carol', subscription('news', 'carol-sub'));
  t.equal(code(s.run('carol', { type: 'subscription.delete', topic: 'news', name: 'bob-sub' })), 'not_found');
  t.equal(code(s.run('alice', { type: 'subscription.delete', topic: 'news', name: 'missing' })), 'not_found');
  t.match(s.sm.getSubscription('news', 'bob-sub', 'bob', s.time), { ok: true });
  t.strictSame(s.run('alice', { type: 'subscription.delete', topic: 'news', name: 'bob-sub' }), { ok: true, value: null });
  t.equal(code(s.sm.getSubscription('news', 'bob-sub', 'bob', s.time)), 'not_found');
  t.strictSame(topicStats(s, 'news'), { subscriptions: 1, published: 0 });
});

// ---- topic delete ----

t.test('topic.delete by the owner removes the topic, every subscription and their messages', async (t) => {
  const s = await openStore(t, 'alice', 'bob');
  s.must('alice', topic('news'));
  s.must('alice', subscription('news', 'a-sub'));
  s.must('bob', subscription('news', 'b-sub'));
  s.must('alice', publish('news', msg('a')));
  const [old] = take(s, 'bob', sub('news', 'b-sub'));
  t.strictSame(s.run('alice', { type: 'topic.delete', name: 'news' }), { ok: true, value: null });
  t.equal(code(s.sm.getTopic('news', 'alice')), 'not_found');
  t.equal(code(s.sm.getSubscription('news', 'b-sub', 'bob', s.time)), 'not_found');
  t.equal(code(s.run('bob', recv(sub('news', 'b-sub')))), 'not_found');
  t.equal((s.sm.sqlite.prepare('select count(*) as n from messages').get() as { n: number }).n, 0, 'no messages outlive it');
  t.equal((s.sm.sqlite.prepare('select count(*) as n from subscriptions').get() as { n: number }).n, 0, 'no subscriptions outlive it');
  s.must('alice', topic('news'));
  t.strictSame(topicStats(s, 'news'), { subscriptions: 0, published: 0 }, 'a new topic of the same name starts empty');
  s.must('bob', subscription('news', 'b-sub'));
  t.match(s.must('alice', publish('news', msg('b'))), { items: [{ sequence: seqs(s, s.index, 1, 1)[0], subscriptions: 1 }] });
  const out = handles(s, 'bob', ack(sub('news', 'b-sub'), old!.receiptHandle));
  t.equal(out.acked.length, 0, 'an old handle does not ack in the new subscription');
});

t.test('topic.delete by a non-owner: forbidden when the topic is visible, not_found when not', async (t) => {
  const s = await openStore(t, 'alice', 'bob', 'carol');
  s.must('alice', topic('open'));
  s.must('alice', topic('closed', 'granted'));
  s.must('alice', grant('topic', 'closed', 'bob', 'publish', 'subscribe'));
  t.equal(code(s.run('carol', { type: 'topic.delete', name: 'open' })), 'forbidden');
  t.equal(code(s.run('bob', { type: 'topic.delete', name: 'closed' })), 'forbidden');
  t.equal(code(s.run('carol', { type: 'topic.delete', name: 'closed' })), 'not_found');
  t.equal(code(s.run('alice', { type: 'topic.delete', name: 'missing' })), 'not_found');
  t.match(s.sm.getTopic('open', 'alice'), { ok: true });
  t.match(s.sm.getTopic('closed', 'alice'), { ok: true });
});

t.test('topic.delete removes its grants: a recreated topic is not shared', async (t) => {
  const s = await openStore(t, 'alice', 'bob');
  s.must('alice', topic('news', 'granted'));
  s.must('alice', grant('topic', 'news', 'bob', 'publish'));
  s.must('alice', { type: 'topic.delete', name: 'news' });
  s.must('alice', topic('news', 'granted'));
  t.equal(code(s.sm.getTopic('news', 'bob')), 'not_found');
  t.equal(code(s.run('bob', publish('news', msg('x')))), 'not_found');
});

// ---- topic grants ----

t.test('topic grants: put (sorted, deduplicated), list (owner only), delete; queue actions are invalid', async (t) => {
  const s = await openStore(t, 'alice', 'bob', 'carol');
  s.must('alice', topic('news', 'granted'));
  t.strictSame(s.run('alice', grant('topic', 'news', 'bob', 'subscribe', 'publish', 'subscribe')), { ok: true, value: { username: 'bob', actions: ['publish', 'subscribe'] } });
  t.equal(code(s.run('alice', grant('topic', 'news', 'carol', 'send'))), 'validation_failed');
  t.equal(code(s.run('alice', grant('topic', 'news', 'carol'))), 'validation_failed');
  t.equal(code(s.run('alice', grant('topic', 'news', 'alice', 'publish'))), 'validation_failed', 'the owner');
  t.equal(code(s.run('bob', grant('topic', 'news', 'carol', 'publish'))), 'forbidden', 'a grantee may not grant');
  t.equal(code(s.run('carol', grant('topic', 'news', 'carol', 'publish'))), 'not_found', 'a stranger does not see the topic');
  t.strictSame(s.sm.listGrants('topic', 'news', 'alice'), { ok: true, value: [{ username: 'bob', actions: ['publish', 'subscribe'] }] });
  t.equal(code(s.sm.listGrants('topic', 'news', 'bob')), 'forbidden');
  t.equal(code(s.sm.listGrants('topic', 'news', 'carol')), 'not_found');
  t.strictSame(s.run('alice', { type: 'grant.delete', kind: 'topic', name: 'news', username: 'bob' }), { ok: true, value: null });
  t.equal(code(s.run('alice', { type: 'grant.delete', kind: 'topic', name: 'news', username: 'bob' })), 'not_found');
  t.equal(code(s.sm.getTopic('news', 'bob')), 'not_found');
});

// ---- deduplication ----

t.test('a topic deduplicationId within 5 minutes answers the first messageId and sequence and delivers no second copy', async (t) => {
  const s = await openStore(t, 'alice');
  s.must('alice', topic('news'));
  s.must('alice', subscription('news', 's1'));
  const first = s.must<Sent>('alice', publish('news', msg('a', { deduplicationId: 'd1' })));
  s.advance(299);
  const again = s.must<Sent>('alice', publish('news', msg('a', { deduplicationId: 'd1' })));
  t.equal(again.items[0]!.messageId, first.items[0]!.messageId);
  t.equal(again.items[0]!.sequence, first.items[0]!.sequence);
  t.strictSame(topicStats(s, 'news'), { subscriptions: 1, published: 1 });
  t.strictSame(subStats(s, 'news', 's1'), stats(1, 0, 0, 0, 299));
  s.advance(1);
  const later = s.must<Sent>('alice', publish('news', msg('a', { deduplicationId: 'd1' })));
  t.not(later.items[0]!.messageId, first.items[0]!.messageId, 'after 5 minutes it is a new message');
  t.match(later.items[0], { sequence: seqs(s, s.index, 1, 2)[0], subscriptions: 1 });
  t.strictSame(topicStats(s, 'news'), { subscriptions: 1, published: 2 });
});

t.test('duplicates inside one publish batch are delivered once', async (t) => {
  const s = await openStore(t, 'alice');
  s.must('alice', topic('news'));
  s.must('alice', subscription('news', 's1'));
  const r = s.must<Sent>('alice', publish('news', msg('a', { deduplicationId: 'd1' }), msg('b', { deduplicationId: 'd1' }), msg('c')));
  t.equal(r.items[1]!.messageId, r.items[0]!.messageId);
  t.strictSame(
    r.items.map((i) => i.sequence),
    seqsInLog(s) ? [0, 0, 2].map((k) => seqs(s, s.index, 3, 0)[k]) : [1, 1, 2],
  );
  t.strictSame(
    take(s, 'alice', sub('news', 's1')).map((m: ReceivedMessage) => m.body),
    ['a', 'c'],
  );
});

t.test('deduplication ids of a deleted topic do not suppress publishes to a recreated one', async (t) => {
  const s = await openStore(t, 'alice');
  s.must('alice', topic('news'));
  const first = s.must<Sent>('alice', publish('news', msg('a', { deduplicationId: 'd1' })));
  s.must('alice', { type: 'topic.delete', name: 'news' });
  s.must('alice', topic('news'));
  s.must('alice', subscription('news', 's1'));
  const second = s.must<Sent>('alice', publish('news', msg('b', { deduplicationId: 'd1' })));
  t.not(second.items[0]!.messageId, first.items[0]!.messageId);
  t.match(second.items[0], { sequence: seqs(s, s.index, 1, 1)[0], subscriptions: 1 });
});

t.test("Idempotency-Keys used on a deleted topic do not replay on a recreated one (another owner's): the publish and the subscription are made", async (t) => {
  // bob published and subscribed to alice's topic under keys; alice deletes it, carol makes one of
  // the same name and lets bob in. bob's same requests under the same keys are new ones there: a
  // replay answered 201 (subscriptions: 1, a subscription made) while nothing was stored.
  const s = await storeIn(t, KEYS_GO_WITH_RESOURCE, 'alice', 'bob', 'carol');
  s.must('alice', topic('news'));
  s.must('alice', subscription('news', 'a-sub'));
  s.must('alice', grant('topic', 'news', 'bob', 'publish'));
  t.ok(s.run('bob', subscription('news', 'b-sub'), 'sub-key').ok);
  const first = s.run('bob', publish('news', msg('a')), 'pub-key');
  t.match(first, { ok: true, value: { items: [{ subscriptions: 2 }] } });
  s.must('alice', { type: 'topic.delete', name: 'news' });
  s.must('carol', topic('news'));
  s.must('carol', subscription('news', 'c-sub'));
  s.must('carol', grant('topic', 'news', 'bob', 'publish'));
  t.match(s.run('bob', subscription('news', 'b-sub'), 'sub-key'), { ok: true });
  t.equal(code(s.sm.getSubscription('news', 'b-sub', 'bob', s.time)), 'ok', "bob's subscription exists in carol's topic");
  const again = s.run('bob', publish('news', msg('a')), 'pub-key');
  t.ok(again.ok);
  if (again.ok) t.not((again.value as Sent).items[0]!.messageId, (first as { value: Sent }).value.items[0]!.messageId, 'a new message, not the old answer');
  t.strictSame(topicStats(s, 'news', 'carol'), { subscriptions: 2, published: 1 });
  t.strictSame(subStats(s, 'news', 'c-sub', 'carol'), stats(1, 0, 0, 0, 0), "carol's subscription has the message");
});

t.test("a topic's delete keeps its own key and those of other topics, names that begin alike included; before format 14 a key replays as older builds replay it", async (t) => {
  const s = await storeIn(t, KEYS_GO_WITH_RESOURCE, 'alice');
  s.must('alice', topic('news'));
  s.must('alice', topic('news2'));
  s.must('alice', subscription('news2', 's'));
  const other = s.run('alice', publish('news2', msg('a')), 'k');
  t.ok(s.run('alice', { type: 'topic.delete', name: 'news' }, 'del').ok);
  t.strictSame(s.run('alice', publish('news2', msg('a')), 'k'), other, "news2's key still replays");
  t.strictSame(subStats(s, 'news2', 's'), stats(1, 0, 0, 0, 0), 'and stores nothing twice');
  t.strictSame(s.run('alice', { type: 'topic.delete', name: 'news' }, 'del'), { ok: true, value: null }, "the delete's retry replays its answer");

  const old = await TestStore.open(0, undefined, KEYS_GO_WITH_RESOURCE - 1);
  t.teardown(() => old.close());
  old.must(null, { type: 'user.register', username: 'alice', passwordHash: 'h' });
  old.must('alice', topic('news'));
  const first = old.run('alice', publish('news', msg('a')), 'k');
  old.must('alice', { type: 'topic.delete', name: 'news' });
  old.must('alice', topic('news'));
  t.strictSame(old.run('alice', publish('news', msg('a')), 'k'), first, 'format 13: the old answer, as an older build applies it');
});

t.test("the raise to format 14 indexes the keys, so that a delete finds its own without reading the table", async (t) => {
  const old = await TestStore.open(0, undefined, KEYS_GO_WITH_RESOURCE - 1);
  t.teardown(() => old.close());
  const plan = (): string =>
    (old.sm.sqlite.prepare('explain query plan delete from idempotency where key >= ? and key < ?').all('topic:a\u0000', 'topic:a\u0001') as { detail: string }[]).map((r) => r.detail).join('; ');
  t.notMatch(plan(), /idempotency_key/, 'format 13: no such index');
  old.must(null, { type: 'format.raise', format: KEYS_GO_WITH_RESOURCE });
  t.match(plan(), /USING (COVERING )?INDEX idempotency_key/, 'from format 14 the delete searches the index');
});

t.test('topic and queue deduplication ids are independent', async (t) => {
  const s = await openStore(t, 'alice');
  s.must('alice', topic('news'));
  s.must('alice', queue('news'));
  s.must('alice', { type: 'queue.send', name: 'news', messages: [msg('q', { deduplicationId: 'd1' })] });
  t.match(s.must('alice', publish('news', msg('t', { deduplicationId: 'd1' }))), { items: [{ sequence: seqs(s, s.index, 1, 1)[0] }] });
  t.strictSame(topicStats(s, 'news'), { subscriptions: 0, published: 1 });
});

// ---- stats ----

t.test('topic stats count subscriptions and published messages (filtered out or not)', async (t) => {
  const s = await openStore(t, 'alice', 'bob');
  s.must('alice', topic('news'));
  s.must('alice', subscription('news', 's1', { filter: { k: 'v' } }));
  s.must('bob', subscription('news', 's2', { filter: { k: 'v' } }));
  t.strictSame(topicStats(s, 'news'), { subscriptions: 2, published: 0 });
  s.must('alice', publish('news', msg('match', { attributes: { k: 'v' } }), msg('nomatch')));
  t.strictSame(topicStats(s, 'news'), { subscriptions: 2, published: 2 });
  t.strictSame(topicStats(s, 'news', 'bob'), { subscriptions: 2, published: 2 }, 'the same for anyone who sees the topic');
  s.must('bob', { type: 'subscription.delete', topic: 'news', name: 's2' });
  t.strictSame(topicStats(s, 'news'), { subscriptions: 1, published: 2 });
  t.strictSame(subStats(s, 'news', 's1'), stats(1, 0, 0, 0, 0));
});

// ---- fan-out limits (format 5, BOUNDED_FANOUT): no entry's apply holds a node for long ----

/** A store in `format` with the given users, whatever format the rest of this file runs in. */
async function storeIn(t: { teardown(fn: () => unknown): void }, format: number, ...users: string[]): Promise<TestStore> {
  const s = await TestStore.open(0, undefined, format);
  t.teardown(() => s.close());
  for (const u of users) s.must(null, { type: 'user.register', username: u, passwordHash: `hash-of-${u}` });
  return s;
}

t.test(`a topic holds at most ${MAX_SUBSCRIPTIONS} subscriptions, ${MAX_SUBSCRIPTIONS_PER_USER} of one user but its owner: the next is a conflict, and a delete makes room`, async (t) => {
  const s = await storeIn(t, BOUNDED_FANOUT, 'alice', 'bob');
  s.must('alice', topic('news'));
  // bob, who does not own the topic, holds at most MAX_SUBSCRIPTIONS_PER_USER of them.
  for (let i = 0; i < MAX_SUBSCRIPTIONS_PER_USER; i++) s.must('bob', subscription('news', `b${i}`));
  t.match(s.run('bob', subscription('news', 'b-more')), {
    ok: false,
    code: 'conflict',
    detail: `you hold ${MAX_SUBSCRIPTIONS_PER_USER} subscriptions of topic 'news', the most a user other than its owner holds`,
  });
  for (let i = MAX_SUBSCRIPTIONS_PER_USER; i < MAX_SUBSCRIPTIONS; i++) s.must('alice', subscription('news', `s${i}`));
  const r = s.run('bob', subscription('news', 'one-more'));
  t.match(r, { ok: false, code: 'conflict', detail: `topic 'news' has ${MAX_SUBSCRIPTIONS} subscriptions, the most a topic holds` });
  t.equal(code(s.sm.getSubscription('news', 'one-more', 'bob', s.time)), 'not_found', 'not created');
  t.equal(topicStats(s, 'news').subscriptions, MAX_SUBSCRIPTIONS);
  // An existing name is still answered as such, not as the limit.
  t.match(s.run('alice', subscription('news', 'b1')), { ok: false, code: 'conflict', detail: "subscription 'b1' exists" });
  s.must('alice', { type: 'subscription.delete', topic: 'news', name: 'b0' });
  t.match(s.must('bob', subscription('news', 'one-more')), { name: 'one-more' }, "the owner deleted one of bob's: room for bob again");
});

t.test(`one publish stores at most ${MAX_FANOUT} copies (messages × subscriptions): past it, nothing is stored`, async (t) => {
  const s = await storeIn(t, BOUNDED_FANOUT, 'alice');
  s.must('alice', topic('news'));
  const subs = 20;
  // A filter that matches nothing still counts: the limit is known to the publisher beforehand.
  for (let i = 0; i < subs; i++) s.must('alice', subscription('news', `s${i}`, i === 0 ? { filter: { kind: 'never' } } : {}));
  const most = MAX_FANOUT / subs;
  const over = s.run('alice', publish('news', ...Array.from({ length: most + 1 }, (_, i) => msg(`m${i}`))));
  t.match(over, { ok: false, code: 'payload_too_large' });
  t.match((over as { detail: string }).detail, `would be ${(most + 1) * subs} copies; one publish stores at most ${MAX_FANOUT}: publish at most ${most} messages per request`);
  t.equal(topicStats(s, 'news').published, 0, 'nothing published');
  t.equal(subStats(s, 'news', 's1').visible, 0, 'nothing stored');
  // At the limit, every copy is stored.
  const sent = s.must<Sent>('alice', publish('news', ...Array.from({ length: most }, (_, i) => msg(`m${i}`))));
  t.equal(sent.items.length, most);
  t.ok(sent.items.every((it) => it.subscriptions === subs - 1), 'each message reached every subscription its filter lets through');
  t.equal(subStats(s, 'news', 's1').visible, most);
  t.equal(subStats(s, 'news', 's0').visible, 0);
  const got = s.must<{ messages: ReceivedMessage[] }>('alice', recv(sub('news', 's19'), 100));
  t.strictSame(
    got.messages.map((m) => m.body),
    Array.from({ length: most }, (_, i) => `m${i}`),
    'in order, with their bodies',
  );
});

t.test('before format 5 the fan-out limits do not apply: a replica of an older build stores the same', async (t) => {
  const s = await storeIn(t, BODIES_IN_LOG, 'alice');
  s.must('alice', topic('news'));
  for (let i = 0; i < 11; i++) s.must('alice', subscription('news', `s${i}`));
  const sent = s.must<Sent>('alice', publish('news', ...Array.from({ length: 100 }, (_, i) => msg(`m${i}`))));
  t.equal(sent.items.length, 100, `1,100 copies, past ${MAX_FANOUT}, stored in format ${BODIES_IN_LOG}`);
  t.equal(subStats(s, 'news', 's10').visible, 100);
});

// ---- revoking the right to subscribe (format 6, REVOKE_UNSUBSCRIBES) ----

t.test("revoking 'subscribe' deletes the user's subscriptions of the topic: nothing more reaches them", async (t) => {
  for (const revoke of ['delete the grant', 'a grant without subscribe'] as const) {
    const s = await storeIn(t, REVOKE_UNSUBSCRIBES, 'alice', 'bob', 'carol');
    s.must('alice', topic('closed', 'granted'));
    s.must('alice', grant('topic', 'closed', 'bob', 'subscribe'));
    s.must('alice', grant('topic', 'closed', 'carol', 'subscribe'));
    s.must('bob', subscription('closed', 'bob-1'));
    s.must('bob', subscription('closed', 'bob-2'));
    s.must('carol', subscription('closed', 'carol-1'));
    s.must('alice', subscription('closed', 'alice-1'));
    s.must('alice', publish('closed', msg('before')));
    if (revoke === 'delete the grant') s.must('alice', { type: 'grant.delete', kind: 'topic', name: 'closed', username: 'bob' });
    else s.must('alice', grant('topic', 'closed', 'bob', 'publish'));
    for (const name of ['bob-1', 'bob-2']) {
      t.equal(code(s.sm.getSubscription('closed', name, 'alice', s.time)), 'not_found', `${revoke}: ${name} is gone`);
      t.equal(code(s.run('bob', recv(sub('closed', name)))), 'not_found', `${revoke}: bob receives nothing from ${name}`);
    }
    const sent = s.must<Sent>('alice', publish('closed', msg('after')));
    t.equal(sent.items[0]!.subscriptions, 2, `${revoke}: published to carol's and alice's only`);
    t.equal(subStats(s, 'closed', 'carol-1', 'carol').visible, 2, "others' subscriptions keep everything");
    t.equal(topicStats(s, 'closed').subscriptions, 2);
    // A new grant lets bob subscribe again, from then on.
    s.must('alice', grant('topic', 'closed', 'bob', 'subscribe'));
    s.must('bob', subscription('closed', 'bob-1'));
    t.equal(subStats(s, 'closed', 'bob-1', 'bob').visible, 0);
  }
});

t.test("on an 'anyone' topic a grant adds nothing to subscribe, so its revoke takes no subscription", async (t) => {
  const s = await storeIn(t, REVOKE_UNSUBSCRIBES, 'alice', 'bob');
  s.must('alice', topic('open'));
  s.must('alice', grant('topic', 'open', 'bob', 'subscribe'));
  s.must('bob', subscription('open', 'bob-1'));
  s.must('alice', { type: 'grant.delete', kind: 'topic', name: 'open', username: 'bob' });
  t.equal(s.must<Sent>('alice', publish('open', msg('x'))).items[0]!.subscriptions, 1);
  t.equal(subStats(s, 'open', 'bob-1', 'bob').visible, 1);
});

t.test('before format 6 a revoke leaves the subscriptions, as an older build applies it', async (t) => {
  const s = await storeIn(t, BOUNDED_FANOUT, 'alice', 'bob');
  s.must('alice', topic('closed', 'granted'));
  s.must('alice', grant('topic', 'closed', 'bob', 'subscribe'));
  s.must('bob', subscription('closed', 'bob-1'));
  s.must('alice', { type: 'grant.delete', kind: 'topic', name: 'closed', username: 'bob' });
  t.equal(s.must<Sent>('alice', publish('closed', msg('x'))).items[0]!.subscriptions, 1);
});
