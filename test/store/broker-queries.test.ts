// What the API reads from a replica besides the views: queries as data (runQuery), the channel
// lookups and next-visibility time long polls wait on, queue depths for metrics, and the rule that an
// empty receive leaves its Idempotency-Key free.
import t from 'tap';
import { runQuery, STATE_CACHE_KIB } from '../../src/store/broker/index.js';
import { queue, send } from './broker-helpers.js';
import { msg, openStore, q, sendMsgs, take } from './broker-unit-kit.js';

t.test('runQuery answers the views, refuses what the caller may not see, and hides nothing else', async (t) => {
  const s = await openStore(t, 'alice', 'bob');
  s.must('alice', queue('a-queue'));
  s.must('alice', queue('b-queue'));
  s.must('alice', send('a-queue', 'x'));
  const now = s.time;
  const got = runQuery(s.sm, { type: 'queue.get', name: 'a-queue', user: 'alice' }, now);
  t.match(got, { ok: true, value: { name: 'a-queue', owner: 'alice', stats: { visible: 1 } } });
  t.match(runQuery(s.sm, { type: 'queue.get', name: 'a-queue', user: 'bob' }, now), { ok: false, code: 'not_found' });
  const page = runQuery(s.sm, { type: 'queue.list', user: 'alice', after: 'a-queue', limit: 10 }, now);
  t.match(page, { ok: true, value: [{ name: 'b-queue' }] }, 'after the cursor, in name order');
  t.match(runQuery(s.sm, { type: 'queue.list', user: 'alice', after: '', limit: 1 }, now), { ok: true, value: [{ name: 'a-queue' }] });
  t.match(runQuery(s.sm, { type: 'user.get', username: 'alice' }, now), { ok: true, value: { username: 'alice' } });
  t.match(runQuery(s.sm, { type: 'user.get', username: 'nobody' }, now), { ok: false, code: 'not_found' });
  t.match(runQuery(s.sm, { type: 'nonsense' } as never, now), { ok: false, code: 'validation_failed' });
});

t.test('channelIdOf and nextVisibleAt: what a long poll waits for', async (t) => {
  const s = await openStore(t, 'alice');
  s.must('alice', queue('orders'));
  const id = s.sm.channelIdOf({ queue: 'orders' });
  t.type(id, 'number');
  t.equal(s.sm.channelIdOf({ queue: 'missing' }), null);
  t.equal(s.sm.channelIdOf({ topic: 't', subscription: 's' }), null);
  t.equal(s.sm.nextVisibleAt(id!), null, 'nothing leased or delayed');
  s.must('alice', sendMsgs('orders', msg('later', { delaySeconds: 60 })));
  t.equal(s.sm.nextVisibleAt(id!), s.time + 60_000, 'a delayed message: when its delay ends');
  s.must('alice', send('orders', 'now'));
  take(s, 'alice', q('orders'), 1, 10);
  t.equal(s.sm.nextVisibleAt(id!), s.time + 10_000, 'a lease ending sooner comes first');
});

t.test('queueDepths: the fullest queues first, from the counters', async (t) => {
  const s = await openStore(t, 'alice');
  s.must('alice', queue('small'));
  s.must('alice', queue('big'));
  s.must('alice', send('small', 'a'));
  s.must('alice', send('big', 'a', 'b', 'c'));
  take(s, 'alice', q('big'), 1);
  t.strictSame(s.sm.queueDepths(10), [
    { queue: 'big', ready: 2, leased: 1, delayed: 0 },
    { queue: 'small', ready: 1, leased: 0, delayed: 0 },
  ]);
  t.equal(s.sm.queueDepths(1).length, 1, 'bounded');
});

t.test('an empty receive leaves its Idempotency-Key free; a receive that leased binds it', async (t) => {
  const s = await openStore(t, 'alice');
  s.must('alice', queue('orders'));
  const receive = { type: 'receive' as const, channel: { queue: 'orders' }, maxMessages: 1, visibilityTimeoutSeconds: null };
  t.match(s.run('alice', receive, 'k1'), { ok: true, value: { messages: [] } });
  s.must('alice', send('orders', 'm'));
  const first = s.run('alice', receive, 'k1');
  t.match(first, { ok: true, value: { messages: [{ body: 'm' }] } }, 'the same key proposes again and finds the message');
  t.strictSame(s.run('alice', receive, 'k1'), first, 'and now replays it');
});

t.test('an Idempotency-Key is scoped per user and resource: the same key on another queue is another request', async (t) => {
  const s = await openStore(t, 'alice');
  s.must('alice', queue('one'));
  s.must('alice', queue('two'));
  const first = s.run('alice', send('one', 'a'), 'k');
  t.strictSame(s.run('alice', send('one', 'a'), 'k'), first, 'replayed on the same queue');
  t.match(s.run('alice', send('one', 'b'), 'k'), { ok: false, code: 'conflict' }, 'another request under the same key: 409');
  t.match(s.run('alice', send('two', 'b'), 'k'), { ok: true }, 'the same key on another queue is applied');
  t.match(s.sm.getQueue('two', 'alice', s.time), { ok: true, value: { stats: { visible: 1 } } });
});

t.test('apply reports the channels a long poll must look at again: woke (how many visible now) and retimed (later)', async (t) => {
  const s = await openStore(t, 'alice');
  s.must('alice', queue('orders'));
  const id = s.sm.channelIdOf({ queue: 'orders' })!;
  const wakes = (a: { woke: unknown; retimed: unknown }): unknown => ({ woke: a.woke, retimed: a.retimed });
  t.strictSame(wakes(s.apply('alice', send('orders', 'now'))), { woke: [[id, 1]], retimed: [] }, 'a send: visible now');
  t.strictSame(wakes(s.apply('alice', sendMsgs('orders', msg('a'), msg('b'), msg('c', { delaySeconds: 5 })))), { woke: [[id, 2]], retimed: [id] }, 'a batch: two visible now, one later');
  t.strictSame(wakes(s.apply('alice', sendMsgs('orders', msg('d', { deduplicationId: 'd' }), msg('e', { deduplicationId: 'e' })))), { woke: [[id, 2]], retimed: [] }, 'deduplicated sends count too');
  t.strictSame(wakes(s.apply('alice', sendMsgs('orders', msg('later', { delaySeconds: 5 })))), { woke: [], retimed: [id] }, 'a delayed send: visible later');
  const leased = s.apply('alice', { type: 'receive', channel: { queue: 'orders' }, maxMessages: 2, visibilityTimeoutSeconds: 10 });
  t.strictSame(wakes(leased), { woke: [], retimed: [id] }, 'a lease: visible again when it ends');
  const [h1, h2] = (leased.result as { value: { messages: { receiptHandle: string }[] } }).value.messages.map((m) => m.receiptHandle);
  t.strictSame(wakes(s.apply('alice', { type: 'nack', channel: { queue: 'orders' }, receiptHandles: [h1!], delaySeconds: 3 })), { woke: [], retimed: [id] }, 'a delayed nack');
  t.strictSame(wakes(s.apply('alice', { type: 'nack', channel: { queue: 'orders' }, receiptHandles: [h2!], delaySeconds: 0 })), { woke: [[id, 1]], retimed: [] }, 'a nack: visible again now');
  t.strictSame(wakes(s.apply('alice', { type: 'receive', channel: { queue: 'nowhere' }, maxMessages: 1, visibilityTimeoutSeconds: null })), { woke: [], retimed: [] }, 'a refusal reports nothing');
});

t.test('a partition state database bounds its page cache, since a node holds one per partition', async (t) => {
  const s = await openStore(t, 'alice');
  t.equal(s.sm.sqlite.pragma('cache_size', { simple: true }), -STATE_CACHE_KIB, `${STATE_CACHE_KIB} KiB, not SQLite's default 2 MiB`);
  t.ok(STATE_CACHE_KIB <= 1024, 'at most 1 MiB: 16 partitions take at most 16 MiB');
});
