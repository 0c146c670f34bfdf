// What the API reads from a replica besides the views: queries as data (runQuery), the channel
// lookups and next-visibility time long polls wait on, queue depths for metrics, the rule that an
// empty receive leaves its Idempotency-Key free, and a keyed receive's replay (no bodies kept).
import t from 'tap';
import { KEYED_RECEIVE_WITHOUT_BODIES, REVOKE_UNSUBSCRIBES, runQuery, STATE_CACHE_KIB, type ReceivedMessage, type Result } from '../../../src/store/broker/index.js';
import { TestStore, queue, send } from './helpers.js';
import { grant, msg, openStore, q, sendMsgs, take } from './unit-kit.js';

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

/** A keyed receive's first answer as its replay gives it: marked, so that the API never releases it (messaging.ts, releasable). */
const replayOf = (r: Result): Result => (r.ok ? { ok: true, value: { ...(r.value as object), replayed: true } } : r);

t.test('an empty receive leaves its Idempotency-Key free; a receive that leased binds it', async (t) => {
  const s = await openStore(t, 'alice');
  s.must('alice', queue('orders'));
  const receive = { type: 'receive' as const, channel: { queue: 'orders' }, maxMessages: 1, visibilityTimeoutSeconds: null };
  t.match(s.run('alice', receive, 'k1'), { ok: true, value: { messages: [] } });
  s.must('alice', send('orders', 'm'));
  const first = s.run('alice', receive, 'k1');
  t.match(first, { ok: true, value: { messages: [{ body: 'm' }] } }, 'the same key proposes again and finds the message');
  t.strictSame(s.run('alice', receive, 'k1'), replayOf(first), 'and now replays it');
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
  const again = s.apply('alice', { type: 'receive', channel: { queue: 'orders' }, maxMessages: 2, visibilityTimeoutSeconds: 10 });
  const [h3, h4] = (again.result as { value: { messages: { receiptHandle: string }[] } }).value.messages.map((m) => m.receiptHandle);
  t.strictSame(wakes(s.apply('alice', { type: 'lease', channel: { queue: 'orders' }, receiptHandles: [h3!], visibilityTimeoutSeconds: 60 })), { woke: [], retimed: [id] }, 'a lease extended: visible again when it ends now');
  t.strictSame(wakes(s.apply('alice', { type: 'lease', channel: { queue: 'orders' }, receiptHandles: [h4!], visibilityTimeoutSeconds: 0 })), { woke: [[id, 1]], retimed: [] }, 'a lease cut to 0 s: visible again now');
  t.strictSame(wakes(s.apply('alice', { type: 'receive', channel: { queue: 'nowhere' }, maxMessages: 1, visibilityTimeoutSeconds: null })), { woke: [], retimed: [] }, 'a refusal reports nothing');
});

t.test('a partition state database bounds its page cache, since a node holds one per partition', async (t) => {
  const s = await openStore(t, 'alice');
  t.equal(s.sm.sqlite.pragma('cache_size', { simple: true }), -STATE_CACHE_KIB, `${STATE_CACHE_KIB} KiB, not SQLite's default 2 MiB`);
  t.ok(STATE_CACHE_KIB <= 1024, 'at most 1 MiB: 16 partitions take at most 16 MiB');
});

// ---- a keyed receive keeps no bodies (format 7, KEYED_RECEIVE_WITHOUT_BODIES) ----

/** A store in `format` (reading `readable`) with users alice and bob, alice's queue 'orders' and bob's grant to receive from it. */
async function keyedStore(t: { teardown(fn: () => unknown): void }, format: number, readable?: number): Promise<TestStore> {
  const s = await TestStore.open(0, undefined, format, readable);
  t.teardown(() => s.close());
  for (const u of ['alice', 'bob']) s.must(null, { type: 'user.register', username: u, passwordHash: 'h' });
  s.must('alice', queue('orders'));
  s.must('alice', grant('queue', 'orders', 'bob', 'receive'));
  return s;
}
const receiveOne = { type: 'receive' as const, channel: { queue: 'orders' }, maxMessages: 1, visibilityTimeoutSeconds: null };

t.test('a keyed receive keeps its result without bodies; its replay reads them again while the leases live', async (t) => {
  const s = await TestStore.open(0, undefined, KEYED_RECEIVE_WITHOUT_BODIES);
  t.teardown(() => s.close());
  for (const u of ['alice', 'bob']) s.must(null, { type: 'user.register', username: u, passwordHash: 'h' });
  s.must('alice', queue('orders', { visibilityTimeoutSeconds: 30 }));
  const body = 'secret '.repeat(2000);
  s.must('alice', { type: 'queue.send', name: 'orders', messages: [{ body, attributes: { kind: 'a' } }, { body: 'two', attributes: {} }] });
  const receive = { type: 'receive' as const, channel: { queue: 'orders' }, maxMessages: 10, visibilityTimeoutSeconds: null };
  const first = s.run('alice', receive, 'rk');
  t.match(first, { ok: true, value: { messages: [{ body, attributes: { kind: 'a' } }, { body: 'two' }] } });
  const kept = s.sm.sqlite.prepare('select result from idempotency').all() as { result: string }[];
  t.equal(kept.length, 1);
  t.notOk(kept[0]!.result.includes('secret'), 'no body in the idempotency table');
  t.notOk(kept[0]!.result.includes('kind'), 'nor attributes');
  s.advance(10);
  t.strictSame(s.run('alice', receive, 'rk'), replayOf(first), 'replayed whole while both leases live');
  // One acked: the replay answers the other.
  const [h1, h2] = (first as { value: { messages: ReceivedMessage[] } }).value.messages.map((m) => m.receiptHandle);
  s.must('alice', { type: 'ack', channel: { queue: 'orders' }, receiptHandles: [h1!] });
  t.match(s.run('alice', receive, 'rk'), { ok: true, value: { messages: [{ body: 'two', receiptHandle: h2 }] } });
  t.equal((s.run('alice', receive, 'rk') as { value: { messages: unknown[] } }).value.messages.length, 1);
  // Its lease ends: nothing is left to replay, an empty answer as a receive that found nothing.
  s.advance(30);
  t.strictSame(s.run('alice', receive, 'rk'), { ok: true, value: { messages: [], replayed: true } });
  // Delivered again to someone else, under a new lease: still not the key's.
  s.must('alice', grant('queue', 'orders', 'bob', 'receive'));
  t.match(s.must('bob', receive), { messages: [{ body: 'two' }] });
  t.strictSame(s.run('alice', receive, 'rk'), { ok: true, value: { messages: [], replayed: true } });
});

t.test("a keyed receive's replay checks the right to receive again, and a purge leaves nothing to replay", async (t) => {
  const s = await keyedStore(t, KEYED_RECEIVE_WITHOUT_BODIES);
  s.must('alice', send('orders', 'a'));
  const receive = receiveOne;
  t.match(s.run('bob', receive, 'rk'), { ok: true, value: { messages: [{ body: 'a' }] } });
  s.must('alice', { type: 'grant.delete', kind: 'queue', name: 'orders', username: 'bob' });
  t.match(s.run('bob', receive, 'rk'), { ok: false, code: 'not_found' }, 'revoked: no replay');
  s.must('alice', send('orders', 'b'));
  const mine = s.run('alice', receive, 'ak');
  t.match(mine, { ok: true, value: { messages: [{ body: 'b' }] } });
  s.must('alice', { type: 'queue.purge', name: 'orders' });
  t.strictSame(s.run('alice', receive, 'ak'), { ok: true, value: { messages: [], replayed: true } }, 'purged: nothing to replay');
});

t.test('before format 7 a keyed receive keeps its bodies, as an older build does', async (t) => {
  const s = await TestStore.open(0, undefined, REVOKE_UNSUBSCRIBES);
  t.teardown(() => s.close());
  s.must(null, { type: 'user.register', username: 'alice', passwordHash: 'h' });
  s.must('alice', queue('orders'));
  s.must('alice', send('orders', 'kept'));
  const receive = { type: 'receive' as const, channel: { queue: 'orders' }, maxMessages: 1, visibilityTimeoutSeconds: null };
  const first = s.run('alice', receive, 'rk');
  t.ok((s.sm.sqlite.prepare('select result from idempotency').get() as { result: string }).result.includes('kept'));
  s.advance(60);
  t.strictSame(s.run('alice', receive, 'rk'), replayOf(first), 'replayed as kept, lease or not');
});

t.test('a keyed receive kept whole before format 7 is refused on replay, after the raise, once the right is gone', async (t) => {
  const s = await keyedStore(t, REVOKE_UNSUBSCRIBES, KEYED_RECEIVE_WITHOUT_BODIES);
  s.must('alice', send('orders', 'kept whole'));
  const receive = receiveOne;
  const first = s.run('bob', receive, 'rk');
  t.match(first, { ok: true, value: { messages: [{ body: 'kept whole' }] } });
  s.must(null, { type: 'format.raise', format: KEYED_RECEIVE_WITHOUT_BODIES });
  t.strictSame(s.run('bob', receive, 'rk'), replayOf(first), 'replayed as kept while bob may receive');
  s.must('alice', { type: 'grant.delete', kind: 'queue', name: 'orders', username: 'bob' });
  t.match(s.run('bob', receive, 'rk'), { ok: false, code: 'not_found' }, 'refused once he may not');
});
