// Messages in queues: sequences, receive order, leases and receipt handles, nack and lease extension,
// maxDeliveries and dead letters, delays, deduplication, batches, retention, exact stats, idempotency
// keys; and the apply mechanics (replays, gaps, no-ops, undecodable entries, the clock).
import t, { type Test } from 'tap';
import { DEAD_LETTER_SOURCES, FORMAT, FormatTooNewError, encodeReceipt, stateHash, type HandleOutcome, type ReceivedMessage } from '../../../src/store/broker/index.js';
import { decodeReceipt } from '../../../src/store/broker/leases.js';
import { TestStore, queue, send } from './helpers.js';
import { seededRandom } from '../../raft/helpers.js';
import { ack, code, forwardDeadLetters, grant, handles, lease, msg, nack, openStore, ordersStore, publish, q, queueStats, recv, sendMsgs, seqs, seqsInLog, stats, sub, subscription, take, topic } from './unit-kit.js';

const iso = (ms: number): string => new Date(ms).toISOString();

const one = (s: TestStore, actor = 'alice', vt: number | null = null): ReceivedMessage | undefined => take(s, actor, q('orders'), 1, vt)[0];

// ---- sequences and receive order ----

t.test('sequence grows strictly within a queue across single sends and batches', async (t) => {
  const s = await ordersStore(t);
  const a = s.must('alice', send('orders', 'a'));
  const aAt = s.index;
  const bc = s.must('alice', send('orders', 'b', 'c'));
  const bcAt = s.index;
  const d = s.must('alice', send('orders', 'd'));
  const items = [...a.items, ...bc.items, ...d.items] as { messageId: string; sequence: number }[];
  t.strictSame(
    items.map((i) => i.sequence),
    [...seqs(s, aAt, 1, 1), ...seqs(s, bcAt, 2, 2), ...seqs(s, s.index, 1, 4)],
  );
  t.ok(items.every((x, k) => k === 0 || x.sequence > items[k - 1]!.sequence), 'strictly growing');
  t.equal(new Set(items.map((i) => i.messageId)).size, 4, 'message ids are distinct');
});

t.test('receive returns the oldest sequence first, up to maxMessages, with every field', async (t) => {
  const s = await ordersStore(t);
  const sent = s.must('alice', sendMsgs('orders', msg('m1', { attributes: { k: 'v' } }), msg('m2'), msg('m3')));
  s.advance(2);
  const first = take(s, 'alice', q('orders'), 2);
  t.equal(first.length, 2);
  t.match(first[0], { messageId: sent.items[0].messageId, sequence: sent.items[0].sequence, body: 'm1', attributes: { k: 'v' }, deliveryCount: 1, sentAt: iso(1_700_000_000_000) });
  t.match(first[1], { messageId: sent.items[1].messageId, sequence: sent.items[1].sequence, body: 'm2', attributes: {}, deliveryCount: 1 });
  t.type(first[0]!.receiptHandle, 'string');
  t.not(first[0]!.receiptHandle, first[1]!.receiptHandle);
  t.strictSame(
    take(s, 'alice', q('orders'), 10).map((m) => m.sequence),
    [sent.items[2].sequence],
  );
  t.strictSame(take(s, 'alice', q('orders'), 10), [], 'nothing left to receive');
});

t.test('maxMessages must be 1 to 100: 0 and 101 are validation_failed and lease nothing', async (t) => {
  const s = await ordersStore(t);
  s.must('alice', send('orders', ...Array.from({ length: 101 }, (_, i) => `m${i}`)));
  for (const n of [0, 101, -1, 1.5]) t.equal(code(s.run('alice', recv(q('orders'), n))), 'validation_failed', `maxMessages ${n}`);
  t.strictSame(queueStats(s, 'orders'), stats(101, 0, 0, 0, 0));
  t.equal(take(s, 'alice', q('orders'), 100).length, 100);
  t.equal(take(s, 'alice', q('orders'), 1).length, 1);
});

t.test('a redelivered message comes before newer ones (oldest sequence first)', async (t) => {
  const s = await ordersStore(t);
  const a = s.must('alice', send('orders', 'a')).items[0].sequence;
  one(s);
  const b = s.must('alice', send('orders', 'b')).items[0].sequence;
  s.advance(30);
  t.match(take(s, 'alice', q('orders'), 10), [
    { sequence: a, body: 'a', deliveryCount: 2 },
    { sequence: b, body: 'b', deliveryCount: 1 },
  ]);
});

// ---- leases ----

t.test("a received message is hidden for the queue's visibility timeout, then redelivered with deliveryCount+1 and a new handle", async (t) => {
  const s = await ordersStore(t);
  const sequence = s.must('alice', send('orders', 'a')).items[0].sequence;
  const first = one(s)!;
  s.advance(29);
  t.strictSame(queueStats(s, 'orders'), stats(0, 1, 0, 0, 29));
  t.equal(one(s), undefined, 'hidden before the timeout');
  s.advance(1);
  t.strictSame(queueStats(s, 'orders'), stats(1, 0, 0, 0, 30));
  const second = one(s)!;
  t.match(second, { messageId: first.messageId, sequence, body: 'a', deliveryCount: 2 });
  t.not(second.receiptHandle, first.receiptHandle);
});

t.test("a receive's visibilityTimeoutSeconds overrides the queue's", async (t) => {
  const s = await ordersStore(t, { visibilityTimeoutSeconds: 30 });
  s.must('alice', send('orders', 'a'));
  one(s, 'alice', 5);
  s.advance(4);
  t.equal(one(s), undefined, 'hidden for 4 s');
  s.advance(1);
  t.match(one(s), { body: 'a', deliveryCount: 2 }, 'visible after 5 s, not 30');
});

t.test('after a redelivery the old handle is receipt_stale and the new one acks', async (t) => {
  const s = await ordersStore(t);
  s.must('alice', send('orders', 'a'));
  const first = one(s)!;
  s.advance(30);
  const second = one(s)!;
  t.strictSame(handles(s, 'alice', ack(q('orders'), first.receiptHandle)), { acked: [], failed: [{ receiptHandle: first.receiptHandle, code: 'receipt_stale' }] });
  t.strictSame(queueStats(s, 'orders'), stats(0, 1, 0, 0, 30), 'the stale ack deleted nothing');
  t.strictSame(handles(s, 'alice', ack(q('orders'), second.receiptHandle)), { acked: [second.receiptHandle], failed: [] });
  t.strictSame(queueStats(s, 'orders'), stats(0, 0, 0, 0, 0));
});

t.test('an ack after the lease expired but before a redelivery succeeds and deletes the message', async (t) => {
  const s = await ordersStore(t);
  s.must('alice', send('orders', 'a'));
  const m = one(s)!;
  s.advance(45);
  t.strictSame(handles(s, 'alice', ack(q('orders'), m.receiptHandle)), { acked: [m.receiptHandle], failed: [] });
  t.strictSame(queueStats(s, 'orders'), stats(0, 0, 0, 0, 0));
  t.equal(one(s), undefined);
});

t.test('malformed receipt handles are receipt_invalid; good ones in the same call still ack', async (t) => {
  const s = await ordersStore(t);
  s.must('alice', send('orders', 'a'));
  const m = one(s)!;
  const channelId = Number(Buffer.from(m.receiptHandle, 'base64url').toString().split('.')[0]);
  const bad = [
    '',
    'garbage!',
    Buffer.from('1.2').toString('base64url'),
    Buffer.from('a.b.c').toString('base64url'),
    encodeReceipt(channelId, 1, 0),
    'x'.repeat(300),
  ];
  const out = handles(s, 'alice', ack(q('orders'), bad[0]!, m.receiptHandle, ...bad.slice(1)));
  t.strictSame(out.acked, [m.receiptHandle]);
  t.strictSame(
    out.failed,
    bad.map((h) => ({ receiptHandle: h, code: 'receipt_invalid' })),
  );
});

t.test('a receipt handle of another queue is receipt_invalid there and leaves both queues alone', async (t) => {
  const s = await ordersStore(t);
  s.must('alice', queue('other'));
  s.must('alice', send('orders', 'a'));
  s.must('alice', send('other', 'b'));
  const m = one(s)!;
  for (const c of [ack(q('other'), m.receiptHandle), nack(q('other'), 0, m.receiptHandle), lease(q('other'), 60, m.receiptHandle)]) {
    t.strictSame(handles(s, 'alice', c), { acked: [], failed: [{ receiptHandle: m.receiptHandle, code: 'receipt_invalid' }] }, c.type);
  }
  t.strictSame(queueStats(s, 'orders'), stats(0, 1, 0, 0, 0));
  t.strictSame(queueStats(s, 'other'), stats(1, 0, 0, 0, 0));
});

t.test('a handle naming a lease that never existed on a real message is receipt_stale', async (t) => {
  const s = await ordersStore(t);
  s.must('alice', send('orders', 'a'));
  const m = one(s)!;
  const [ch, seq, leaseId] = Buffer.from(m.receiptHandle, 'base64url').toString().split('.').map(Number);
  const forged = encodeReceipt(ch!, seq!, leaseId! + 1000);
  t.strictSame(handles(s, 'alice', ack(q('orders'), forged)).failed, [{ receiptHandle: forged, code: 'receipt_stale' }]);
  t.strictSame(queueStats(s, 'orders'), stats(0, 1, 0, 0, 0));
});

t.test('acking the same handle twice: the second is receipt_stale', async (t) => {
  const s = await ordersStore(t);
  s.must('alice', send('orders', 'a'));
  const m = one(s)!;
  t.strictSame(handles(s, 'alice', ack(q('orders'), m.receiptHandle)), { acked: [m.receiptHandle], failed: [] });
  t.strictSame(handles(s, 'alice', ack(q('orders'), m.receiptHandle)), { acked: [], failed: [{ receiptHandle: m.receiptHandle, code: 'receipt_stale' }] });
  t.strictSame(handles(s, 'alice', ack(q('orders'), m.receiptHandle, m.receiptHandle)).failed.length, 2, 'twice in one call');
});

t.test('an ack of many handles acts as if each were acked alone, in order: runs of consecutive sequences, gaps, duplicates, other leases', async (t) => {
  // The apply deletes a run of handles that name consecutive sequences under one lease in one
  // statement (leases.ts). The oracle is the rows as they are before each ack: a handle is acked when
  // its row is still there under the lease it names (and goes), stale otherwise, invalid when it names
  // no message of this queue; handles count in the order given.
  const random = seededRandom(20261205);
  const pick = <T>(xs: readonly T[]): T => xs[random(xs.length)]!;
  for (let round = 0; round < 6; round++) {
    const s = await ordersStore(t);
    s.must('alice', queue('other'));
    // Three send entries (so three runs of sequences with gaps between them), then leases, a nack
    // (its message's old handle goes stale, its next delivery has a new lease) and ended leases.
    for (let e = 0; e < 3; e++) s.must('alice', send('orders', ...Array.from({ length: 12 }, (_, i) => `m${e}.${i}`)));
    s.must('alice', send('other', 'x'));
    const got = [...take(s, 'alice', q('orders'), 7), ...take(s, 'alice', q('orders'), 10, 1), ...take(s, 'alice', q('orders'), 9)];
    const nacked = pick(got);
    s.must('alice', nack(q('orders'), 0, nacked.receiptHandle));
    s.advance(2); // the 1-second leases ended: their messages are still theirs to ack
    got.push(...take(s, 'alice', q('orders'), 5));
    const ch = s.sm.sqlite.prepare('select channel_id from queues where name = ?').pluck().get('orders') as number;
    const spelled = (m: ReceivedMessage): string => {
      const [, seq, lease] = Buffer.from(m.receiptHandle, 'base64url').toString().split('.');
      return Buffer.from(`${ch}.0${seq}.${lease}`).toString('base64url'); // the same handle, spelled with a leading zero
    };
    const pool = [
      ...got.map((m) => m.receiptHandle),
      spelled(pick(got)),
      take(s, 'alice', q('other'), 1)[0]!.receiptHandle,
      'not a handle',
      encodeReceipt(ch, got[0]!.sequence, 999_999),
      encodeReceipt(ch, got[0]!.sequence, 0),
      encodeReceipt(ch, Number.MAX_SAFE_INTEGER - 1, 7),
      encodeReceipt(ch, Number.MAX_SAFE_INTEGER, 7),
    ];
    const sorted = [...got].sort((x, y) => x.sequence - y.sequence).map((m) => m.receiptHandle);
    for (let a = 0; a < 5; a++) {
      // Mostly runs (ascending, as received), with some handles out of order, repeated or foreign.
      const start = random(sorted.length);
      const list = a === 4 && round === 0 ? [] : sorted.slice(start, start + 1 + random(15));
      for (let k = list.length === 0 ? 0 : random(6); k > 0; k--) list.splice(random(list.length + 1), 0, pick(pool));
      if (random(4) === 0) list.reverse();
      const rows = new Map(s.sm.sqlite.prepare('select seq, lease_id from messages where channel_id = ?').raw(true).all(ch) as [number, number][]);
      const expected: HandleOutcome = { acked: [], failed: [] };
      for (const h of list) {
        const r = decodeReceipt(h);
        if (r === null || r.channelId !== ch) expected.failed.push({ receiptHandle: h, code: 'receipt_invalid' });
        else if (rows.get(r.seq) === r.leaseId) {
          expected.acked.push(h);
          rows.delete(r.seq);
        } else expected.failed.push({ receiptHandle: h, code: 'receipt_stale' });
      }
      t.strictSame(handles(s, 'alice', ack(q('orders'), ...list)), expected, `round ${round}, ack ${a}: ${list.length} handles`);
      const left = s.sm.sqlite.prepare('select seq from messages where channel_id = ? order by seq').pluck().all(ch) as number[];
      t.strictSame(left, [...rows.keys()].sort((x, y) => x - y), 'the rows left are the ones not acked');
      const counts = s.sm.sqlite.prepare('select n_ready, n_leased, n_delayed from channels where id = ?').raw(true).get(ch) as number[];
      const byState = [0, 1, 2].map((state) => s.sm.sqlite.prepare('select count(*) from messages where channel_id = ? and state = ?').pluck().get(ch, state) as number);
      t.strictSame(counts, byState, 'the counts of each state follow the rows');
    }
  }
});

t.test('nack makes the message visible at once, and the nacked handle is stale afterwards', async (t) => {
  const s = await ordersStore(t);
  s.must('alice', send('orders', 'a'));
  const m = one(s)!;
  t.strictSame(handles(s, 'alice', nack(q('orders'), 0, m.receiptHandle)), { acked: [m.receiptHandle], failed: [] });
  t.strictSame(queueStats(s, 'orders'), stats(1, 0, 0, 0, 0));
  for (const c of [ack(q('orders'), m.receiptHandle), nack(q('orders'), 0, m.receiptHandle), lease(q('orders'), 60, m.receiptHandle)]) {
    t.strictSame(handles(s, 'alice', c).failed, [{ receiptHandle: m.receiptHandle, code: 'receipt_stale' }], `${c.type} with the nacked handle`);
  }
  const again = one(s)!;
  t.match(again, { messageId: m.messageId, deliveryCount: 2 });
  t.not(again.receiptHandle, m.receiptHandle);
});

t.test('nack with delaySeconds keeps the message delayed (counted as delayed) until the delay ends', async (t) => {
  const s = await ordersStore(t);
  s.must('alice', send('orders', 'a'));
  const m = one(s)!;
  t.strictSame(handles(s, 'alice', nack(q('orders'), 10, m.receiptHandle)), { acked: [m.receiptHandle], failed: [] });
  t.strictSame(queueStats(s, 'orders'), stats(0, 0, 1, 0, 0));
  s.advance(9);
  t.strictSame(queueStats(s, 'orders'), stats(0, 0, 1, 0, 9));
  t.equal(one(s), undefined);
  t.strictSame(handles(s, 'alice', ack(q('orders'), m.receiptHandle)).failed, [{ receiptHandle: m.receiptHandle, code: 'receipt_stale' }]);
  s.advance(1);
  t.strictSame(queueStats(s, 'orders'), stats(1, 0, 0, 0, 10));
  t.match(one(s), { messageId: m.messageId, deliveryCount: 2 });
});

t.test('a lease extension keeps the message hidden past its original timeout, and its handle stays valid', async (t) => {
  const s = await ordersStore(t);
  s.must('alice', send('orders', 'a'));
  const m = one(s)!;
  s.advance(20);
  t.strictSame(handles(s, 'alice', lease(q('orders'), 60, m.receiptHandle)), { acked: [m.receiptHandle], failed: [] });
  s.advance(59);
  t.strictSame(queueStats(s, 'orders'), stats(0, 1, 0, 0, 79));
  t.equal(one(s), undefined, 'still hidden 79 s after receive (original timeout: 30 s)');
  s.advance(1);
  t.strictSame(queueStats(s, 'orders'), stats(1, 0, 0, 0, 80));
  t.strictSame(handles(s, 'alice', ack(q('orders'), m.receiptHandle)), { acked: [m.receiptHandle], failed: [] }, 'not redelivered yet: the handle still acks');
});

t.test('extending a lease that already expired is receipt_stale and the message stays visible', async (t) => {
  const s = await ordersStore(t);
  s.must('alice', send('orders', 'a'));
  const m = one(s)!;
  s.advance(30);
  t.strictSame(handles(s, 'alice', lease(q('orders'), 60, m.receiptHandle)), { acked: [], failed: [{ receiptHandle: m.receiptHandle, code: 'receipt_stale' }] });
  t.strictSame(queueStats(s, 'orders'), stats(1, 0, 0, 0, 30));
  t.match(one(s), { messageId: m.messageId, deliveryCount: 2 });
});

// ---- maxDeliveries and dead letters ----

/** Receives and lets the lease run out, `n` times. */
function deliverAndExpire(s: TestStore, n: number): ReceivedMessage[] {
  const got: ReceivedMessage[] = [];
  for (let i = 0; i < n; i++) {
    got.push(...take(s, 'alice', q('orders')));
    s.advance(30);
  }
  return got;
}

t.test('after maxDeliveries deliveries without an ack the message goes to the dead-letter outbox', async (t) => {
  const s = await ordersStore(t, { maxDeliveries: 2, deadLetterQueue: 'orders-dlq' });
  const sent = s.must('alice', sendMsgs('orders', msg('poison', { attributes: { kind: 'bad' } })));
  const got = deliverAndExpire(s, 2);
  t.strictSame(
    got.map((m) => m.deliveryCount),
    [1, 2],
  );
  t.strictSame(take(s, 'alice', q('orders')), [], 'not delivered a third time');
  t.strictSame(s.sm.outbox(10), [
    { id: 1, targetQueue: 'orders-dlq', expectedOwner: 'alice', messageId: sent.items[0].messageId, body: 'poison', attributes: { kind: 'bad' } },
  ]);
  t.strictSame(queueStats(s, 'orders'), stats(0, 0, 0, 0, 0), 'dead-lettered, not dropped');
});

/** Two subscriptions of one topic, one dead-letter queue: a publish's copy dead-lettered from each (one delivery allowed). */
async function twoCopiesDeadLettered(t: Test, format: number, again = false): Promise<TestStore> {
  const s = await TestStore.open(0, undefined, format);
  t.teardown(() => s.close());
  s.must(null, { type: 'user.register', username: 'alice', passwordHash: 'hash-of-alice' });
  s.must('alice', queue('dlq'));
  s.must('alice', topic('t'));
  for (const n of ['s1', 's2']) s.must('alice', subscription('t', n, { maxDeliveries: 1, deadLetterQueue: 'dlq', visibilityTimeoutSeconds: 1 }));
  s.must('alice', publish('t', msg('m')));
  for (const n of ['s1', 's2']) {
    take(s, 'alice', sub('t', n), 1);
    s.advance(2);
    t.strictSame(take(s, 'alice', sub('t', n), 1), [], `${n}: one delivery only`);
    forwardDeadLetters(s, again);
  }
  return s;
}

t.test('two subscriptions sharing a dead-letter queue each get their copy there (format 12): the deduplication of retries is by outbox row, not by the message id the copies share', async (t) => {
  const s = await twoCopiesDeadLettered(t, DEAD_LETTER_SOURCES);
  t.match(take(s, 'alice', q('dlq'), 10), [{ body: 'm' }, { body: 'm' }]);
  const retried = await twoCopiesDeadLettered(t, DEAD_LETTER_SOURCES, true);
  t.equal(take(retried, 'alice', q('dlq'), 10).length, 2, 'a retried delivery is still stored once');
  // Before format 12 the second copy folds into the first: what builds before it do, kept alike.
  const before = await twoCopiesDeadLettered(t, DEAD_LETTER_SOURCES - 1);
  t.equal(take(before, 'alice', q('dlq'), 10).length, 1);
});

t.test('after maxDeliveries with no dead-letter queue the message is dropped and counted', async (t) => {
  const s = await ordersStore(t, { maxDeliveries: 2 });
  s.must('alice', send('orders', 'poison', 'fine'));
  const [p] = take(s, 'alice', q('orders'), 1);
  s.advance(30);
  const [p2, f] = take(s, 'alice', q('orders'), 2);
  t.match([p, p2, f], [{ body: 'poison' }, { body: 'poison', deliveryCount: 2 }, { body: 'fine', deliveryCount: 1 }]);
  s.must('alice', ack(q('orders'), f!.receiptHandle));
  s.advance(30);
  t.strictSame(take(s, 'alice', q('orders')), []);
  t.strictSame(queueStats(s, 'orders'), stats(0, 0, 0, 1, 0));
  t.strictSame(s.sm.outbox(10), []);
});

t.test('stats count a message as dropped as soon as its last lease expires, before any further receive', async (t) => {
  const s = await ordersStore(t, { maxDeliveries: 1 });
  s.must('alice', send('orders', 'poison'));
  one(s);
  s.advance(30);
  t.strictSame(queueStats(s, 'orders'), stats(0, 0, 0, 1, 0));
});

t.test('a nack on the maxDeliveries-th delivery dead-letters at once', async (t) => {
  const s = await ordersStore(t, { maxDeliveries: 2, deadLetterQueue: 'orders-dlq' });
  s.must('alice', send('orders', 'a'));
  const m1 = one(s)!;
  s.must('alice', nack(q('orders'), 0, m1.receiptHandle));
  t.strictSame(s.sm.outbox(10), [], 'the first nack only redelivers');
  const m2 = one(s)!;
  t.equal(m2.deliveryCount, 2);
  t.strictSame(handles(s, 'alice', nack(q('orders'), 0, m2.receiptHandle)), { acked: [m2.receiptHandle], failed: [] });
  t.match(s.sm.outbox(10), [{ targetQueue: 'orders-dlq', messageId: m1.messageId, body: 'a' }]);
  t.strictSame(queueStats(s, 'orders'), stats(0, 0, 0, 0, 0));
  t.equal(one(s), undefined);
});

t.test('a nack on the last delivery with no dead-letter queue drops and counts the message', async (t) => {
  const s = await ordersStore(t, { maxDeliveries: 1 });
  s.must('alice', send('orders', 'a'));
  const m = one(s)!;
  t.strictSame(handles(s, 'alice', nack(q('orders'), 5, m.receiptHandle)), { acked: [m.receiptHandle], failed: [] });
  t.strictSame(queueStats(s, 'orders'), stats(0, 0, 0, 1, 0));
  t.strictSame(s.sm.outbox(10), []);
});

const deliver = (queueName: string, expectedOwner: string, ...messages: { messageId: string; body: string; attributes: Record<string, string> }[]) =>
  ({ type: 'deadletter.deliver', queue: queueName, expectedOwner, messages }) as const;

t.test('deadletter.deliver (system) inserts the messages into the target queue with their original ids', async (t) => {
  const s = await openStore(t, 'alice');
  s.must('alice', queue('dlq'));
  const r = s.run(null, deliver('dlq', 'alice', { messageId: '3-17-0', body: 'x', attributes: { a: '1' } }, { messageId: '3-17-1', body: 'y', attributes: {} }));
  t.strictSame(r, { ok: true, value: { delivered: 2, dropped: 0 } });
  const [x, y] = seqs(s, s.index, 2, 1);
  t.match(take(s, 'alice', q('dlq')), [
    { messageId: '3-17-0', sequence: x, body: 'x', attributes: { a: '1' }, deliveryCount: 1 },
    { messageId: '3-17-1', sequence: y, body: 'y', attributes: {}, deliveryCount: 1 },
  ]);
});

t.test('a retried deadletter.deliver of the same messageId stores the message once', async (t) => {
  const s = await openStore(t, 'alice');
  s.must('alice', queue('dlq'));
  const m = { messageId: '3-17-0', body: 'x', attributes: {} };
  s.must(null, deliver('dlq', 'alice', m));
  s.advance(600);
  s.must(null, deliver('dlq', 'alice', m));
  t.strictSame(queueStats(s, 'dlq'), stats(1, 0, 0, 0, 600));
  t.equal(take(s, 'alice', q('dlq')).length, 1);
});

t.test('deadletter.deliver drops the messages when the target queue does not exist', async (t) => {
  const s = await openStore(t, 'alice');
  const r = s.run(null, deliver('dlq', 'alice', { messageId: '3-17-0', body: 'x', attributes: {} }, { messageId: '3-17-1', body: 'y', attributes: {} }));
  t.strictSame(r, { ok: true, value: { delivered: 0, dropped: 2 } });
  t.equal(code(s.sm.getQueue('dlq', 'alice', s.time)), 'not_found');
});

t.test('deadletter.deliver drops the messages when the target queue now belongs to someone else', async (t) => {
  const s = await openStore(t, 'alice', 'bob');
  s.must('bob', queue('dlq'));
  const r = s.run(null, deliver('dlq', 'alice', { messageId: '3-17-0', body: 'secret', attributes: {} }));
  t.strictSame(r, { ok: true, value: { delivered: 0, dropped: 1 } });
  t.strictSame(queueStats(s, 'dlq', 'bob'), stats(0, 0, 0, 0, 0));
});

t.test('deadletter.deliver from a user is forbidden, even from the owner of the target queue', async (t) => {
  const s = await openStore(t, 'alice');
  s.must('alice', queue('dlq'));
  t.equal(code(s.run('alice', deliver('dlq', 'alice', { messageId: '3-17-0', body: 'x', attributes: {} }))), 'forbidden');
  t.strictSame(queueStats(s, 'dlq'), stats(0, 0, 0, 0, 0));
});

t.test('outbox.done (system only) forgets the given outbox rows', async (t) => {
  const s = await ordersStore(t, { maxDeliveries: 1, deadLetterQueue: 'orders-dlq' });
  s.must('alice', send('orders', 'a', 'b'));
  for (const m of take(s, 'alice', q('orders'))) s.must('alice', nack(q('orders'), 0, m.receiptHandle));
  t.strictSame(
    s.sm.outbox(10).map((r) => [r.id, r.body]),
    [
      [1, 'a'],
      [2, 'b'],
    ],
  );
  t.equal(code(s.run('alice', { type: 'outbox.done', ids: [1, 2] })), 'forbidden');
  t.equal(s.sm.outbox(10).length, 2, 'a user cannot clear it');
  t.strictSame(s.run(null, { type: 'outbox.done', ids: [1] }), { ok: true, value: null });
  t.strictSame(
    s.sm.outbox(10).map((r) => r.id),
    [2],
  );
  t.strictSame(s.sm.outbox(1).length, 1, 'outbox(limit) reads at most limit rows');
});

// ---- delays ----

t.test("a message's delaySeconds hides it (counted as delayed) until the delay ends", async (t) => {
  const s = await ordersStore(t);
  s.must('alice', sendMsgs('orders', msg('later', { delaySeconds: 10 })));
  t.strictSame(queueStats(s, 'orders'), stats(0, 0, 1, 0, 0));
  s.advance(9);
  t.equal(one(s), undefined);
  t.strictSame(queueStats(s, 'orders'), stats(0, 0, 1, 0, 9));
  s.advance(1);
  t.strictSame(queueStats(s, 'orders'), stats(1, 0, 0, 0, 10));
  t.match(one(s), { body: 'later', deliveryCount: 1 });
});

t.test("a queue's delaySeconds applies to messages without their own; an explicit 0 overrides it", async (t) => {
  const s = await ordersStore(t, { delaySeconds: 20 });
  const [delayed] = s.must('alice', sendMsgs('orders', msg('default'), msg('now', { delaySeconds: 0 }))).items;
  t.strictSame(queueStats(s, 'orders'), stats(1, 0, 1, 0, 0));
  t.match(take(s, 'alice', q('orders')), [{ body: 'now' }]);
  s.advance(19);
  t.strictSame(take(s, 'alice', q('orders')), []);
  s.advance(1);
  t.match(take(s, 'alice', q('orders')), [{ body: 'default', sequence: delayed.sequence }]);
});

// ---- deduplication ----

t.test('a second send with the same deduplicationId within 5 minutes returns the first messageId and sequence and stores nothing', async (t) => {
  const s = await ordersStore(t);
  const first = s.must('alice', sendMsgs('orders', msg('a', { deduplicationId: 'd1' })));
  s.advance(299);
  const before = queueStats(s, 'orders');
  const again = s.must('alice', sendMsgs('orders', msg('a, again', { deduplicationId: 'd1' })));
  t.strictSame(again.items, first.items);
  t.strictSame(queueStats(s, 'orders'), before);
  t.strictSame(before, stats(1, 0, 0, 0, 299));
  t.equal(s.must('alice', send('orders', 'next')).items[0].sequence, seqs(s, s.index, 1, 2)[0], 'no sequence was used up');
  t.match(take(s, 'alice', q('orders')), [{ body: 'a' }, { body: 'next' }]);
});

t.test('a duplicate within the window is suppressed even after the first message was acked', async (t) => {
  const s = await ordersStore(t);
  const first = s.must('alice', sendMsgs('orders', msg('a', { deduplicationId: 'd1' })));
  s.must('alice', ack(q('orders'), one(s)!.receiptHandle));
  const again = s.must('alice', sendMsgs('orders', msg('a', { deduplicationId: 'd1' })));
  t.strictSame(again.items, first.items);
  t.strictSame(queueStats(s, 'orders'), stats(0, 0, 0, 0, 0));
});

t.test('after 5 minutes the same deduplicationId makes a new message', async (t) => {
  const s = await ordersStore(t);
  const first = s.must('alice', sendMsgs('orders', msg('a', { deduplicationId: 'd1' })));
  s.advance(300);
  const second = s.must('alice', sendMsgs('orders', msg('b', { deduplicationId: 'd1' })));
  t.not(second.items[0].messageId, first.items[0].messageId);
  t.equal(second.items[0].sequence, seqs(s, s.index, 1, 2)[0]);
  t.strictSame(queueStats(s, 'orders'), stats(2, 0, 0, 0, 300));
  s.advance(299);
  t.strictSame(s.must('alice', sendMsgs('orders', msg('c', { deduplicationId: 'd1' }))).items, second.items, 'the new one opens a new window');
});

t.test('duplicates inside one batch are stored once and answer the first one', async (t) => {
  const s = await ordersStore(t);
  const r = s.must('alice', sendMsgs('orders', msg('a', { deduplicationId: 'd1' }), msg('b', { deduplicationId: 'd1' }), msg('c', { deduplicationId: 'd2' }), msg('d')));
  const items = r.items as { messageId: string; sequence: number }[];
  t.equal(items.length, 4, 'one answer per message');
  t.strictSame(items[1], items[0]);
  t.strictSame(
    items.map((i) => i.sequence),
    // Format 4: each stored message at its own place in the command; before, the channel's count.
    seqsInLog(s) ? [0, 0, 2, 3].map((k) => seqs(s, s.index, 4, 0)[k]) : [1, 1, 2, 3],
  );
  t.strictSame(
    take(s, 'alice', q('orders')).map((m) => m.body),
    ['a', 'c', 'd'],
  );
});

t.test('deduplication ids are per queue', async (t) => {
  const s = await ordersStore(t);
  s.must('alice', queue('other'));
  const a = s.must('alice', sendMsgs('orders', msg('a', { deduplicationId: 'd1' })));
  const b = s.must('alice', sendMsgs('other', msg('b', { deduplicationId: 'd1' })));
  t.not(b.items[0].messageId, a.items[0].messageId);
  t.strictSame(queueStats(s, 'other'), stats(1, 0, 0, 0, 0));
});

// ---- batches ----

t.test('a batch answers one {messageId, sequence} per message, in order', async (t) => {
  const s = await ordersStore(t);
  const r = s.must('alice', send('orders', 'a', 'b', 'c'));
  t.strictSame(
    r.items.map((i: { sequence: number }) => i.sequence),
    seqs(s, s.index, 3, 1),
  );
  t.strictSame(
    take(s, 'alice', q('orders')).map((m) => [m.sequence, m.body, m.messageId]),
    (r.items as { messageId: string; sequence: number }[]).map((i, k) => [i.sequence, ['a', 'b', 'c'][k], i.messageId]),
  );
});

t.test('a batch without the right to send stores nothing (all or none)', async (t) => {
  const s = await openStore(t, 'alice', 'bob', 'carol');
  s.must('alice', queue('orders'));
  s.must('alice', grant('queue', 'orders', 'bob', 'receive'));
  t.equal(code(s.run('bob', send('orders', 'a', 'b', 'c'))), 'forbidden');
  t.equal(code(s.run('carol', send('orders', 'a', 'b', 'c'))), 'not_found');
  t.strictSame(queueStats(s, 'orders'), stats(0, 0, 0, 0, 0));
  t.equal(s.must('alice', send('orders', 'x')).items[0].sequence, seqs(s, s.index, 1, 1)[0], 'no sequence was used up');
});

t.test('a batch stored in bulk holds the same rows and counts as one stored a message at a time', async (t) => {
  // Without deduplication ids a batch takes its sequences in one update and is inserted in bulk;
  // with one it goes a message at a time. Both must leave the same messages and counts.
  const batch = (dedup: boolean) =>
    sendMsgs(
      'orders',
      ...Array.from({ length: 150 }, (_, i) =>
        msg(`m${i}`, { attributes: { i: String(i) }, ...(i % 3 === 0 ? { delaySeconds: 5 } : {}), ...(dedup && i === 149 ? { deduplicationId: 'last' } : {}) }),
      ),
    );
  const bulk = await ordersStore(t);
  const single = await ordersStore(t);
  const a = bulk.must('alice', batch(false)).items as { sequence: number }[];
  const b = single.must('alice', batch(true)).items as { sequence: number }[];
  t.strictSame(a.map((i) => i.sequence), b.map((i) => i.sequence), 'the same sequences, 1 to 150');
  t.strictSame(queueStats(bulk, 'orders'), queueStats(single, 'orders'), 'the same ready and delayed counts');
  t.strictSame(queueStats(bulk, 'orders'), stats(100, 0, 50, 0, 0));
  const rows = (s: TestStore) => s.sm.sqlite.prepare('select seq, body, attributes, state, visible_at, expires_at from messages order by seq').all();
  t.strictSame(rows(bulk), rows(single), 'the same rows');
});

t.test('an empty batch is validation_failed', async (t) => {
  const s = await ordersStore(t);
  t.equal(code(s.run('alice', sendMsgs('orders'))), 'validation_failed');
});

// ---- retention ----

t.test('messages older than retentionSeconds disappear from stats and receives', async (t) => {
  const s = await ordersStore(t, { retentionSeconds: 60 });
  s.must('alice', send('orders', 'old'));
  s.advance(30);
  const young = s.must('alice', send('orders', 'young')).items[0].sequence;
  s.advance(29);
  t.strictSame(queueStats(s, 'orders'), stats(2, 0, 0, 0, 59));
  s.advance(1);
  t.strictSame(queueStats(s, 'orders'), stats(1, 0, 0, 0, 30));
  t.match(take(s, 'alice', q('orders')), [{ body: 'young', sequence: young }]);
  s.advance(30);
  t.strictSame(queueStats(s, 'orders'), stats(0, 0, 0, 0, 0), 'a leased message past retention is gone too');
  s.advance(30);
  t.strictSame(take(s, 'alice', q('orders')), []);
});

t.test('retention removes delayed messages as well', async (t) => {
  const s = await ordersStore(t, { retentionSeconds: 60 });
  s.must('alice', sendMsgs('orders', msg('late', { delaySeconds: 120 })));
  t.strictSame(queueStats(s, 'orders'), stats(0, 0, 1, 0, 0));
  s.advance(60);
  t.strictSame(queueStats(s, 'orders'), stats(0, 0, 0, 0, 0));
  s.advance(60);
  t.strictSame(take(s, 'alice', q('orders')), []);
});

// ---- stats ----

t.test('stats are exact through a mix of ready, leased, delayed, redelivered, acked and dropped messages', async (t) => {
  const s = await ordersStore(t, { maxDeliveries: 2 });
  s.must('alice', send('orders', 'a', 'b', 'c'));
  s.advance(10);
  s.must('alice', sendMsgs('orders', msg('d', { delaySeconds: 100 })));
  t.strictSame(queueStats(s, 'orders'), stats(3, 0, 1, 0, 10), 'three ready, one delayed');
  const [a, b] = take(s, 'alice', q('orders'), 2);
  t.strictSame(queueStats(s, 'orders'), stats(1, 2, 1, 0, 10), 'two leased');
  s.must('alice', ack(q('orders'), a!.receiptHandle));
  t.strictSame(queueStats(s, 'orders'), stats(1, 1, 1, 0, 10), 'a acked: b is now the oldest (same send)');
  s.must('alice', nack(q('orders'), 50, b!.receiptHandle));
  t.strictSame(queueStats(s, 'orders'), stats(1, 0, 2, 0, 10), 'b nacked with a delay');
  const [c] = take(s, 'alice', q('orders'));
  t.equal(c!.body, 'c');
  t.strictSame(queueStats(s, 'orders'), stats(0, 1, 2, 0, 10));
  s.advance(30);
  t.strictSame(queueStats(s, 'orders'), stats(1, 0, 2, 0, 40), "c's lease expired");
  s.advance(20);
  t.strictSame(queueStats(s, 'orders'), stats(2, 0, 1, 0, 60), "b's nack delay ended");
  const got = take(s, 'alice', q('orders'));
  t.strictSame(
    got.map((m) => [m.body, m.deliveryCount]),
    [
      ['b', 2],
      ['c', 2],
    ],
  );
  t.strictSame(queueStats(s, 'orders'), stats(0, 2, 1, 0, 60));
  s.advance(30);
  t.strictSame(take(s, 'alice', q('orders')), [], 'both reached maxDeliveries');
  t.strictSame(queueStats(s, 'orders'), stats(0, 0, 1, 2, 80), 'two dropped; d (sent at 10 s) is the oldest left');
  s.advance(20);
  t.strictSame(queueStats(s, 'orders'), stats(1, 0, 0, 2, 100), "d's delay ended");
});

t.test('oldestMessageAgeSeconds is the age of the oldest message still held, in whole seconds', async (t) => {
  const s = await ordersStore(t);
  s.must('alice', send('orders', 'a'));
  s.time += 1500;
  s.must('alice', send('orders', 'b'));
  s.time += 1400;
  t.equal(queueStats(s, 'orders').oldestMessageAgeSeconds, 2, '2.9 s rounds down');
  const [a] = take(s, 'alice', q('orders'), 1);
  s.must('alice', ack(q('orders'), a!.receiptHandle));
  t.equal(queueStats(s, 'orders').oldestMessageAgeSeconds, 1, 'b is 1.4 s old');
});

// ---- idempotency keys ----

t.test('the same idempotency key from the same user replays the first result and stores nothing', async (t) => {
  const s = await ordersStore(t);
  const first = s.run('alice', send('orders', 'a'), 'key-1');
  s.advance(60);
  const again = s.run('alice', send('orders', 'a'), 'key-1');
  t.strictSame(again, first);
  t.strictSame(queueStats(s, 'orders'), stats(1, 0, 0, 0, 60));
  t.equal(s.must('alice', send('orders', 'b')).items[0].sequence, seqs(s, s.index, 1, 2)[0]);
});

t.test('the same idempotency key from another user is independent', async (t) => {
  const s = await ordersStore(t);
  s.must('alice', grant('queue', 'orders', 'bob', 'send'));
  const a = s.run('alice', send('orders', 'a'), 'key-1');
  const b = s.run('bob', send('orders', 'b'), 'key-1');
  t.ok(a.ok && b.ok);
  t.not(JSON.stringify(b), JSON.stringify(a));
  t.match(b, { ok: true, value: { items: [{ sequence: seqs(s, s.index, 1, 2)[0] }] } });
  t.strictSame(queueStats(s, 'orders'), stats(2, 0, 0, 0, 0));
});

t.test('an idempotency key is forgotten after 24 hours', async (t) => {
  const s = await ordersStore(t, { retentionSeconds: 3 * 86400 });
  const first = s.run('alice', send('orders', 'a'), 'key-1');
  s.advance(86400 - 1);
  t.strictSame(s.run('alice', send('orders', 'a'), 'key-1'), first, 'still replayed just before 24 h');
  s.advance(1);
  const later = s.run('alice', send('orders', 'a'), 'key-1');
  t.match(later, { ok: true, value: { items: [{ sequence: seqs(s, s.index, 1, 2)[0] }] } });
  t.strictSame(queueStats(s, 'orders').visible, 2);
});

t.test('a refused command replays the same refusal under its idempotency key, even once it would succeed', async (t) => {
  const s = await ordersStore(t);
  const refused = s.run('bob', send('orders', 'a'), 'key-1');
  t.equal(code(refused), 'not_found');
  s.must('alice', grant('queue', 'orders', 'bob', 'send'));
  t.strictSame(s.run('bob', send('orders', 'a'), 'key-1'), refused);
  t.strictSame(queueStats(s, 'orders'), stats(0, 0, 0, 0, 0));
  t.match(s.run('bob', send('orders', 'a'), 'key-2'), { ok: true }, 'a new key applies');
});

// ---- apply mechanics ----

const hash = (s: TestStore): string => stateHash(s.sm.sqlite);
/** Every table's rows, and the meta rows other than the applied index and term. */
function dumpState(s: TestStore): Record<string, unknown[]> {
  const out: Record<string, unknown[]> = {};
  for (const table of ['users', 'channels', 'queues', 'topics', 'subscriptions', 'grants', 'messages', 'dedup', 'idempotency', 'outbox']) {
    // The clustered message table (message-table.ts) has no rowid.
    out[table] = s.sm.sqlite.prepare(`select * from ${table} order by ${table === 'messages' ? 'channel_id, seq' : 'rowid'}`).all();
  }
  out.meta = s.sm.sqlite.prepare("select * from meta where key not in ('applied_index', 'applied_term') order by key").all();
  return out;
}
const entry = (index: number, data: Uint8Array, term = 1, kind = 0) => ({ index, term, kind, data });
const env = (s: TestStore, actor: string | null, command: Parameters<TestStore['run']>[1]) => s.encode({ time: s.time, actor, command });

t.test('an entry at or below the applied index is skipped: applying it again changes nothing', async (t) => {
  const s = await ordersStore(t);
  const e = entry(s.index + 1, env(s, 'alice', send('orders', 'a')));
  const [a] = s.sm.apply([e]);
  s.index++;
  t.match(a, { index: e.index, result: { ok: true } });
  const h = hash(s);
  t.strictSame(s.sm.apply([e]), [], 'no result for a skipped entry');
  t.equal(hash(s), h);
  const older = entry(1, env(s, 'alice', send('orders', 'b')));
  t.strictSame(s.sm.apply([older]), []);
  t.equal(hash(s), h);
  t.strictSame(queueStats(s, 'orders'), stats(1, 0, 0, 0, 0));
});

t.test('a batch overlapping the applied index applies only the new entries', async (t) => {
  const s = await ordersStore(t);
  const e1 = entry(s.index + 1, env(s, 'alice', send('orders', 'a')));
  const e2 = entry(s.index + 2, env(s, 'alice', send('orders', 'b')));
  s.sm.apply([e1]);
  const out = s.sm.apply([e1, e2]);
  s.index += 2;
  t.strictSame(
    out.map((a) => a.index),
    [e2.index],
  );
  t.strictSame(queueStats(s, 'orders'), stats(2, 0, 0, 0, 0));
  t.equal(s.sm.applied().index, e2.index);
});

t.test('a gap in the indexes throws and applies nothing of that batch', async (t) => {
  const s = await ordersStore(t);
  const h = hash(s);
  const at = s.sm.applied();
  const e1 = entry(s.index + 1, env(s, 'alice', send('orders', 'a')));
  const e3 = entry(s.index + 3, env(s, 'alice', send('orders', 'b')));
  t.throws(() => s.sm.apply([e3]), /gap/);
  t.throws(() => s.sm.apply([e1, e3]), /gap/);
  t.equal(hash(s), h);
  t.strictSame(s.sm.applied(), at);
  t.strictSame(queueStats(s, 'orders'), stats(0, 0, 0, 0, 0));
});

t.test('a Raft no-op only advances the applied index and term', async (t) => {
  const s = await ordersStore(t);
  s.must('alice', send('orders', 'a'));
  const clock = s.sm.clock();
  const before = dumpState(s);
  s.time += 100_000;
  const [a] = s.sm.apply([entry(s.index + 1, new Uint8Array(0), 2, 1)]);
  s.index++;
  t.strictSame(a, { index: s.index, result: { ok: true, value: null }, woke: [], retimed: [], delivered: [] });
  t.strictSame(s.sm.applied(), { index: s.index, term: 2 });
  t.equal(s.sm.clock(), clock, 'the clock did not move');
  t.strictSame(dumpState(s), before, 'every other row is unchanged');
});

t.test('an undecodable entry answers validation_failed and advances the applied index and term', async (t) => {
  const s = await ordersStore(t);
  const [a] = s.sm.apply([entry(s.index + 1, new TextEncoder().encode('{not json'), 3)]);
  s.index++;
  t.match(a, { index: s.index, result: { ok: false, code: 'validation_failed' }, woke: [] });
  t.strictSame(s.sm.applied(), { index: s.index, term: 3 });
  t.match(s.run('alice', send('orders', 'a')), { ok: true }, 'the next entry applies');
});

t.test('an entry that is JSON but not an envelope answers validation_failed instead of halting apply', async (t) => {
  const s = await ordersStore(t);
  for (const text of ['null', '42', '{}', '{"time":1,"actor":"alice"}']) {
    let out: ReturnType<TestStore['sm']['apply']> | undefined;
    t.doesNotThrow(() => {
      out = s.sm.apply([entry(s.index + 1, new TextEncoder().encode(text))]);
    }, text);
    if (out !== undefined) {
      s.index++;
      t.match(out, [{ index: s.index, result: { ok: false, code: 'validation_failed' } }], text);
    }
  }
});

t.test('sends after a queue is deleted, and after it is created again, in later batches: refused, then stored in the new queue (the send-target cache outlives batches)', async (t) => {
  const s = await ordersStore(t);
  s.must('alice', send('orders', 'old'));
  s.must('alice', { type: 'queue.delete', name: 'orders' });
  t.equal(code(s.run('alice', send('orders', 'lost'))), 'not_found', 'a send to the deleted queue is refused');
  s.must('alice', queue('orders'));
  s.must('alice', send('orders', 'new'));
  t.strictSame(queueStats(s, 'orders'), stats(1, 0, 0, 0, 0), 'only the send after the new create, in the new queue');
  t.strictSame(take(s, 'alice', q('orders')).map((m) => m.body), ['new']);
});

t.test('a batch redone command by command that fails again leaves nothing behind, not even in the send-target cache (review)', async (t) => {
  const s = await ordersStore(t);
  const broken = { type: 'queue.send', name: 'orders', messages: null } as unknown as Parameters<TestStore['run']>[1];
  const at = s.index;
  const batch = [
    entry(at + 1, env(s, 'alice', broken)),
    entry(at + 2, env(s, 'alice', queue('x'))),
    entry(at + 3, env(s, 'alice', send('x', 'a'))),
    entry(at + 4, env(s, null, { type: 'format.raise', format: FORMAT + 1 })),
  ];
  t.throws(() => s.sm.apply(batch), FormatTooNewError, 'the redo meets a format this build cannot read');
  t.equal(s.sm.applied().index, at, 'rolled back');
  // What a replica that never saw the batch answers: queue x does not exist.
  const [again] = s.sm.apply([entry(at + 1, env(s, 'alice', send('x', 'b')))]);
  t.match(again!.result, { ok: false, code: 'not_found' });
});

// A send whose messages are not objects (a peer's malformed command, or one a format-1 envelope
// carried as JSON) stopped the apply before its command was tried: the check for sends that can be
// stored in bulk read a field of each message, threw outside the per-command guard, and the host
// stopped, on every replica alike.
t.test('a command that breaks the code fails alone: the batch around it applies, the same on every replica', async (t) => {
  // Each passes the envelope's shape check, then breaks apply: no messages array, or messages that
  // are not objects (also where single sends are stored in bulk).
  for (const messages of [null, [null], ['text'], [42], [[]]]) {
    const a = await ordersStore(t);
    const b = await ordersStore(t);
    const broken = { type: 'queue.send', name: 'orders', messages } as unknown as Parameters<TestStore['run']>[1];
    const batch = (s: TestStore) => [
      entry(s.index + 1, env(s, 'alice', send('orders', 'before'))),
      entry(s.index + 2, env(s, 'alice', broken)),
      entry(s.index + 3, env(s, 'alice', send('orders', 'after'))),
    ];
    const out = a.sm.apply(batch(a));
    a.index += 3;
    t.match(out, [{ result: { ok: true } }, { result: { ok: false, code: 'validation_failed' } }, { result: { ok: true } }], `messages ${JSON.stringify(messages)}`);
    t.strictSame(queueStats(a, 'orders'), stats(2, 0, 0, 0, 0), 'the commands before and after it applied');
    t.equal(a.sm.applied().index, a.index);
    // Another replica applies the same entries one at a time: the same state.
    for (const e of batch(b)) b.sm.apply([e]);
    b.index += 3;
    t.equal(hash(a), hash(b), 'byte-identical state');
  }
});

t.test('single sends applied in one batch (stored in bulk) and one entry at a time answer and store the same', async (t) => {
  const a = await ordersStore(t);
  const b = await ordersStore(t);
  a.must('bob', queue('other'));
  b.must('bob', queue('other'));
  // Owner's sends (gathered), a delayed one, a send by someone else, one with a key, one with a
  // deduplication id, and a receive in between: only runs of plain sends by the owner go together.
  const commands: [string, Parameters<TestStore['run']>[1], string?][] = [];
  for (let i = 0; i < 70; i++) {
    const n = i % 10;
    if (n === 3) commands.push(['alice', sendMsgs('orders', msg(`d${i}`, { delaySeconds: 2 }))]);
    else if (n === 5) commands.push(['bob', send('other', `o${i}`)]);
    else if (n === 6) commands.push(['alice', send('orders', `k${i}`), `key-${i}`]);
    else if (n === 7) commands.push(['alice', sendMsgs('orders', msg(`x${i}`, { deduplicationId: `dd${i % 20}` }))]);
    else if (n === 9) commands.push(['alice', { type: 'receive', channel: q('orders'), maxMessages: 2, visibilityTimeoutSeconds: 30 }]);
    else commands.push(['alice', send('orders', `m${i}`, `n${i}`)]);
  }
  const entries = (s: TestStore) =>
    commands.map(([actor, command, key], k) =>
      entry(s.index + 1 + k, s.encode({ time: s.time + k, actor, command, ...(key === undefined ? {} : { idempotencyKey: key }) })),
    );
  const together = a.sm.apply(entries(a));
  const oneByOne = entries(b).flatMap((e) => b.sm.apply([e]));
  a.index += commands.length;
  b.index += commands.length;
  t.strictSame(together, oneByOne, 'the same answers, woken channels included');
  t.equal(hash(a), hash(b), 'byte-identical state');
  t.ok(together.every((o) => o.result.ok), 'every command went through');
});

t.test('within one batch, a send sees a queue deleted and made again by someone else before it', async (t) => {
  const s = await ordersStore(t);
  const out = s.sm.apply([
    entry(s.index + 1, env(s, 'alice', send('orders', 'a'))),
    entry(s.index + 2, env(s, 'alice', { type: 'queue.delete', name: 'orders' })),
    entry(s.index + 3, env(s, 'bob', queue('orders'))),
    entry(s.index + 4, env(s, 'alice', send('orders', 'b'))),
    entry(s.index + 5, env(s, 'bob', send('orders', 'c'))),
  ]);
  s.index += 5;
  t.match(
    out.map((a) => a.result),
    [{ ok: true }, { ok: true }, { ok: true }, { ok: false, code: 'not_found' }, { ok: true }],
    'alice\'s second send finds bob\'s queue, hidden from her, not hers',
  );
  t.strictSame(queueStats(s, 'orders', 'bob'), stats(1, 0, 0, 0, 0), 'only bob\'s message is in bob\'s queue');
});

t.test('the clock never goes backwards: an older leader stamp does not make later messages older', async (t) => {
  const s = await ordersStore(t);
  const t0 = s.time;
  s.advance(100);
  s.must('alice', send('orders', 'a'));
  t.equal(s.sm.clock(), t0 + 100_000);
  s.time = t0 + 40_000; // a new leader whose clock is 60 s behind
  s.must('alice', send('orders', 'b'));
  t.equal(s.sm.clock(), t0 + 100_000, 'the clock stays at its maximum');
  const got = take(s, 'alice', q('orders'), 10, 30);
  t.strictSame(
    got.map((m) => [m.body, m.sentAt]),
    [
      ['a', iso(t0 + 100_000)],
      ['b', iso(t0 + 100_000)],
    ],
  );
  // The lease runs from the partition's clock (t0+100 s), not from the stale stamp (t0+40 s).
  s.time = t0 + 129_000;
  t.strictSame(take(s, 'alice', q('orders')), [], 'still leased at t0+129 s');
  s.time = t0 + 130_000;
  t.equal(take(s, 'alice', q('orders')).length, 2, 'visible at t0+130 s');
  t.strictSame(queueStats(s, 'orders'), stats(0, 2, 0, 0, 30));
});
