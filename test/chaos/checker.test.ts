// The checker on hand-made histories: clean ones pass, and each kind of wrong history fails the
// check meant for it (and only that one).
import t from 'tap';
import { check } from './checker.js';
import type { ChannelStats, ClientOp, Delivery, FinalRead, History, PublishOp, ReceiveOp, SendOp, SettleOp } from './history.js';

const Q = 'queue:q1';
const S = 'sub:t1/all';
let nextId = 1;

function base(start: number, end: number, outcome: 'ok' | 'fail' | 'unknown' = 'ok', status = 200) {
  return { id: nextId++, process: 'p', node: 'n1', start, end, outcome, status, attempts: [[start, end, 0, status]] as [number, number, number, number][], partition: 0 };
}
const send = (body: string, start: number, outcome: 'ok' | 'fail' | 'unknown' = 'ok', status = outcome === 'ok' ? 201 : 503): SendOp => ({
  ...base(start, start + 5, outcome, status),
  type: 'send',
  channel: Q,
  body,
  ...(outcome === 'ok' ? { messageId: `id-${body}`, sequence: Number(body.replace(/\D/g, '')) } : {}),
});
const publish = (body: string, start: number, expected = [S]): PublishOp => ({
  ...base(start, start + 5, 'ok', 201),
  type: 'publish',
  topic: 't1',
  body,
  attributes: {},
  expected,
  messageId: `id-${body}`,
  sequence: Number(body.replace(/\D/g, '')),
});
const dlv = (body: string, deliveryCount = 1, handle = `${body}#${deliveryCount}`): Delivery => ({ body, messageId: `id-${body}`, sequence: Number(body.replace(/\D/g, '')), deliveryCount, receiptHandle: handle });
const receive = (messages: Delivery[], start: number, end = start + 10, channel = Q, vt = 2): ReceiveOp => ({
  ...base(start, end),
  type: 'receive',
  channel,
  maxMessages: 10,
  waitSeconds: 0,
  visibilityTimeoutSeconds: vt,
  messages,
});
const settle = (type: 'ack' | 'nack', handles: string[], start: number, outcome: 'ok' | 'unknown' = 'ok', channel = Q): SettleOp => ({
  ...base(start, start + 5, outcome),
  type,
  channel,
  receiptHandles: handles,
  acked: outcome === 'ok' ? handles : [],
  failed: [],
});
const stats = (visible = 0): ChannelStats => ({ visible, inFlight: 0, delayed: 0, dropped: 0 });
const read = (channel: string, views: (ChannelStats | null)[]): FinalRead => ({ type: 'final-read', phase: 'drained', channel, at: 99_000, views });

function history(ops: ClientOp[], finalReads: FinalRead[] = [read(Q, [stats(), stats(), stats()]), read(S, [stats(), stats(), stats()])]): History {
  return {
    seed: 1,
    startedAt: '',
    nodes: ['n1', 'n2', 'n3'],
    partitions: 4,
    channels: [
      { id: Q, partition: 0, fifoCheck: true },
      { id: S, partition: 1, fifoCheck: true },
    ],
    ops,
    faults: [],
    finalReads,
  };
}

/** A clean history: sends (one failed, one unknown and delivered), a publish, receives, a nack and a lease expiry. */
function clean(): ClientOp[] {
  return [
    send('m1', 0),
    send('m2', 10),
    send('m3', 20, 'fail'),
    send('m4', 30, 'unknown', 0),
    publish('p1', 40),
    receive([dlv('m1'), dlv('m2')], 100),
    settle('ack', ['m1#1'], 120),
    settle('nack', ['m2#1'], 130),
    receive([dlv('m2', 2), dlv('m4')], 200),
    settle('ack', ['m2#2'], 220),
    // m4's lease (2 s) expires, it comes back with deliveryCount 2
    receive([dlv('m4', 3)], 2_400),
    settle('ack', ['m4#3'], 2_450, 'unknown'),
    receive([dlv('p1')], 150, 160, S),
    settle('ack', ['p1#1'], 170, 'ok', S),
  ];
}

t.test('a clean history passes', async (t) => {
  const r = check(history(clean()));
  t.same(r.failures, [], 'no failure');
  t.ok(r.ok);
  t.equal(r.duplicates.total, 2, 'two redeliveries are counted');
  t.equal(r.duplicates.explained, 2, 'and explained');
  t.same(r.duplicates.byReason, { nack: 1, 'lease-expiry': 1 });
  t.equal(r.counts.unknownWritesDelivered, 1, 'a write of unknown outcome may be delivered');
  t.equal(r.lost.length, 0);
  t.equal(r.ordering.channelsChecked, 2);
});

t.test('lost: an acknowledged send never delivered; an acknowledged publish missing from a subscription', async (t) => {
  const ops = clean();
  ops.push(send('m9', 500));
  ops.push(publish('p2', 600, [S, 'sub:t1/filtered']));
  ops.push(receive([dlv('p2')], 700, 710, S));
  const r = check(history(ops));
  t.notOk(r.ok);
  t.same(
    r.lost.map((l) => `${l.channel} ${l.body}`),
    [`${Q} m9`, 'sub:t1/filtered p2'],
  );
  t.same(r.failures.length, 1, 'only the lost check fails');
});

t.test('a failed or unknown write that is never delivered is not lost', async (t) => {
  const ops = clean().filter((o) => !(o.type === 'receive' && o.messages.some((m) => m.body === 'm4')));
  const r = check(history(ops));
  t.same(r.lost, []);
});

t.test('unexpected: a delivery of a message never sent, or under another messageId', async (t) => {
  const ops = clean();
  ops.push(send('m8', 3_000));
  ops.push(receive([{ ...dlv('m8'), messageId: 'other' }], 3_100));
  ops.push(receive([dlv('m77')], 3_200));
  const r = check(history(ops));
  t.notOk(r.ok);
  t.same(r.unexpected.map((u) => u.body).sort(), ['m77', 'm8']);
  t.same(r.failures.length, 1);
});

t.test('unexplained duplicates', async (t) => {
  const cases: [string, ClientOp[]][] = [
    ['delivered again after a successful ack', [send('m1', 0), receive([dlv('m1')], 100), settle('ack', ['m1#1'], 120), receive([dlv('m1', 2)], 5_000)]],
    ['the same deliveryCount twice', [send('m1', 0), receive([dlv('m1')], 100), receive([dlv('m1', 1, 'other-handle')], 5_000)]],
    ['redelivered before the lease could expire (no nack)', [send('m1', 0), receive([dlv('m1')], 100), receive([dlv('m1', 2)], 300)]],
    ['stored twice (two messageIds)', [send('m1', 0), receive([dlv('m1')], 100), receive([{ ...dlv('m1', 1), messageId: 'id-m1-again' }], 5_000)]],
  ];
  for (const [what, ops] of cases) {
    const r = check(history(ops));
    t.notOk(r.ok, what);
    t.equal(r.duplicates.unexplained.length, 1, `${what}: one unexplained duplicate`);
    // "stored twice" also shows a delivery under a messageId other than the acknowledged one
    t.ok(r.failures.some((f) => f.startsWith('duplicates')), `${what}: the duplicates check fails`);
  }
  // a successful ack of the same receipt handle on ANOTHER channel explains nothing and forbids nothing
  const other = check(history([send('m1', 0), receive([dlv('m1')], 100), settle('ack', ['m1#1'], 120, 'ok', S), receive([dlv('m1', 2)], 2_200)]));
  t.ok(other.ok, 'receipt handles are scoped to their channel');
  // and the explained ones: an ack of unknown outcome, then the lease expired
  const r = check(history([send('m1', 0), receive([dlv('m1')], 100), settle('ack', ['m1#1'], 120, 'unknown'), receive([dlv('m1', 2)], 2_200)]));
  t.ok(r.ok, 'a redelivery after an ack of unknown outcome and a lease expiry is explained');
  t.same(r.duplicates.byReason, { 'lease-expiry (ack failed or unknown)': 1 });
});

t.test('ordering: a first delivery with a lower sequence after a receive that took a higher one', async (t) => {
  const ops: ClientOp[] = [send('m1', 0), send('m2', 10), receive([dlv('m2')], 100, 110), receive([dlv('m1')], 200, 210)];
  const r = check(history(ops));
  t.notOk(r.ok);
  t.equal(r.ordering.violations.length, 1);
  t.match(r.ordering.violations[0], { earlierSeq: 2, laterSeq: 1, body: 'm1' });
  t.same(r.failures.length, 1);

  const overlapping = check(history([send('m1', 0), send('m2', 10), receive([dlv('m2')], 100, 300), receive([dlv('m1')], 200, 210)]));
  t.ok(overlapping.ok, 'receives that overlap in time may go either way');
  const redelivery = check(history([send('m1', 0), send('m2', 10), receive([dlv('m1')], 100, 110), receive([dlv('m2')], 120, 130), receive([dlv('m1', 2)], 3_000, 3_010)]));
  t.ok(redelivery.ok, 'redeliveries are not held to the order');
  const noFifo = history(ops);
  noFifo.channels[0]!.fifoCheck = false;
  t.ok(check(noFifo).ok, 'channels with delays or dead-lettering are not checked');
});

t.test('replicas: a node whose replica disagrees, or that does not answer', async (t) => {
  const r = check(history(clean(), [read(Q, [stats(), stats(1), stats()]), read(S, [stats(), stats(), null])]));
  t.notOk(r.ok);
  t.same(r.replicas.divergent.map((d) => d.channel), [Q, S]);
  t.same(r.failures.length, 1);
  const retried = check(history(clean(), [read(Q, [stats(), stats(1), stats()]), read(Q, [stats(), stats(), stats()]), read(S, [stats(), stats(), stats()])]));
  t.ok(retried.ok, 'only the last round of reads counts');
});

t.test('server errors: a 500 among the attempts', async (t) => {
  const ops = clean();
  const s = send('m5', 3_000);
  s.attempts.unshift([2_990, 2_995, 1, 500]);
  ops.push(s, receive([dlv('m5')], 3_100));
  const r = check(history(ops));
  t.notOk(r.ok);
  t.equal(r.serverErrors.length, 1);
});
