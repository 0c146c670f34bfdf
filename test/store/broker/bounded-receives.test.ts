// Format 17: what one receive's entry may do is bounded, however a user fills its queue (a review of
// stop 62, on hostile users).
// - BOUNDED_RECEIVES: a receive leases messages only up to RECEIVE_BYTES of bodies and attributes,
//   past its first. 100 messages of 256 KiB of control characters, escaped in JSON, made one answer
//   of 168 MB that held its node's loop for seconds, and replays of its Idempotency-Key as many.
// - BOUNDED_PROMOTION: one entry makes at most PROMOTE_BUDGET due messages ready again or
//   dead-letters them; the looks after it take the rest. 100,000 leases that ended together held
//   every replica's loop 0.75 s in the one receive after.
import t, { type Test } from 'tap';
import { BOUNDED_PROMOTION, BOUNDED_RECEIVES, PROMOTE_BUDGET, RECEIVE_BYTES, type ReceivedMessage } from '../../../src/store/broker/index.js';
import { TestStore, queue } from './helpers.js';
import { msg, q, queueStats, recv, sendMsgs } from './unit-kit.js';

async function open(t: Test, format: number): Promise<TestStore> {
  const s = await TestStore.open(0, undefined, format);
  t.teardown(() => s.close());
  s.must(null, { type: 'user.register', username: 'alice', passwordHash: 'hash-of-alice' });
  s.must('alice', queue('big'));
  return s;
}

const KIB_256 = 256 * 1024;
const big = (i: number): string => String.fromCharCode(97 + (i % 26)).repeat(KIB_256);

/** Fills queue `name` with `n` messages in batches of 100. */
function fill(s: TestStore, name: string, n: number, body: (i: number) => string = (i) => `m${i}`, attributes: Record<string, string> = {}): void {
  for (let i = 0; i < n; i += 100) s.must('alice', sendMsgs(name, ...Array.from({ length: Math.min(100, n - i) }, (_, k) => msg(body(i + k), { attributes }))));
}

const taken = (s: TestStore, max: number, vt: number | null = null): ReceivedMessage[] => s.must<{ messages: ReceivedMessage[] }>('alice', recv(q('big'), max, vt)).messages;

t.test('a receive leases messages up to RECEIVE_BYTES of bodies and attributes; the rest stay visible', async (t) => {
  const s = await open(t, BOUNDED_RECEIVES);
  const attributes = { kind: 'x'.repeat(100) };
  fill(s, 'big', 20, big, attributes);
  const each = KIB_256 + JSON.stringify(attributes).length;
  const fits = Math.floor(RECEIVE_BYTES / each);
  const got = taken(s, 100);
  t.equal(got.length, fits, `${fits} of 256 KiB with their attributes, asked for 100`);
  t.same(
    got.map((m) => m.body[0]),
    Array.from({ length: fits }, (_, i) => String.fromCharCode(97 + i)),
    'the oldest, in order',
  );
  t.match(queueStats(s, 'big'), { visible: 20 - fits, inFlight: fits }, 'the rest stay visible, not leased');
  t.equal(taken(s, 100).length, fits, 'the next receive takes the next ones');
  t.equal(taken(s, 100).length, 20 - 2 * fits, 'and the last');

  s.must('alice', queue('small'));
  fill(s, 'small', 100);
  t.equal(s.must<{ messages: ReceivedMessage[] }>('alice', recv(q('small'), 100)).messages.length, 100, 'small messages: maxMessages as before');
});

t.test('before format 17 a receive leases maxMessages whatever their size, as older builds apply it', async (t) => {
  const s = await open(t, BOUNDED_RECEIVES - 1);
  fill(s, 'big', 20, big);
  t.equal(taken(s, 100).length, 20);
});

t.test('one entry makes at most PROMOTE_BUDGET ended leases ready again; the looks after it take the rest', async (t) => {
  const s = await open(t, BOUNDED_PROMOTION);
  const n = 2 * PROMOTE_BUDGET + 500;
  fill(s, 'big', n);
  for (let i = 0; i < n; i += 100) taken(s, 100, 1);
  s.advance(2);
  t.match(queueStats(s, 'big'), { visible: n, inFlight: 0 }, 'every lease ended: all visible to a consumer');
  const first = taken(s, 1);
  t.equal(first.length, 1);
  const ready = (): number => s.sm.queueDepths(10).find((d) => d.queue === 'big')!.ready;
  t.equal(ready(), PROMOTE_BUDGET - 1, `the receive made ${PROMOTE_BUDGET} ready again and leased one`);
  t.match(queueStats(s, 'big'), { visible: n - 1, inFlight: 1 }, 'the others are still visible to a consumer');
  t.equal(taken(s, 1).length, 1);
  t.equal(ready(), 2 * PROMOTE_BUDGET - 2, 'the next receive made as many ready again');
  let total = 2;
  for (let got = taken(s, 100); got.length > 0; got = taken(s, 100)) total += got.length;
  t.equal(total, n, 'every message is received again, once');
});

t.test('one entry dead-letters at most PROMOTE_BUDGET messages out of deliveries; the receive then takes the next ready ones', async (t) => {
  const s = await open(t, BOUNDED_PROMOTION);
  s.must('alice', queue('dead'));
  s.must('alice', queue('fragile', { maxDeliveries: 1, deadLetterQueue: 'dead' }));
  const n = PROMOTE_BUDGET + 300;
  fill(s, 'fragile', n);
  for (let i = 0; i < n; i += 100) s.must('alice', recv(q('fragile'), 100, 1));
  fill(s, 'fragile', 10, (i) => `fresh ${i}`);
  s.advance(2);
  const got = s.must<{ messages: ReceivedMessage[] }>('alice', recv(q('fragile'), 10)).messages;
  t.same(
    got.map((m) => m.body),
    Array.from({ length: 10 }, (_, i) => `fresh ${i}`),
    'the fresh messages',
  );
  t.equal(s.sm.outbox(2 * n).length, PROMOTE_BUDGET, `${PROMOTE_BUDGET} dead letters in that entry`);
  s.must('alice', recv(q('fragile'), 10));
  t.equal(s.sm.outbox(2 * n).length, n, 'the rest in the next');
});

t.test('before format 17 one receive makes every ended lease ready again, as older builds apply it', async (t) => {
  const s = await open(t, BOUNDED_PROMOTION - 1);
  const n = 2 * PROMOTE_BUDGET + 500;
  fill(s, 'big', n);
  for (let i = 0; i < n; i += 100) taken(s, 100, 1);
  s.advance(2);
  t.equal(taken(s, 1).length, 1);
  t.equal(s.sm.queueDepths(10).find((d) => d.queue === 'big')!.ready, n - 1);
});
