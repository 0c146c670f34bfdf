// Dead letters' deduplication keys against clients' deduplication ids. Before format 13 the
// deduplication of the forwarder's retries shared its namespace with the ids clients send. A dead
// letter is deduplicated in its dead-letter queue by
// `dls:<partition>/<outbox id>` (format 12; `dl:<messageId>` before), stored in the same `dedup` rows
// as a client's `deduplicationId`, which the API accepts as any 1 to 128 printable ASCII characters
// (`dls:0/1` included). So:
//   - a client's send carrying such an id swallows the dead letter that comes within its 5 minutes:
//     the forwarder is answered "delivered", clears its outbox row, and the message is gone;
//   - a dead letter holds such an id for 24 hours, so a client's send with it is answered as a
//     duplicate and stored nowhere long after the 5 minutes the contract gives a deduplication id.
import t from 'tap';
import type { ReceivedMessage } from '../../../src/store/broker/index.js';
import { TestStore, queue } from './helpers.js';
import { forwardDeadLetters, msg, nack, q, sendMsgs, take } from './unit-kit.js';

/** alice's queue 'orders' (one delivery, then to 'orders-dlq'), bob may send to the dead-letter queue. */
async function store(t: { teardown(fn: () => unknown): void }): Promise<TestStore> {
  const s = await TestStore.open(0);
  t.teardown(() => s.close());
  for (const u of ['alice', 'bob']) s.must(null, { type: 'user.register', username: u, passwordHash: `hash-of-${u}` });
  s.must('alice', queue('orders-dlq'));
  s.must('alice', queue('orders', { maxDeliveries: 1, deadLetterQueue: 'orders-dlq' }));
  s.must('alice', { type: 'grant.put', kind: 'queue', name: 'orders-dlq', username: 'bob', actions: ['send'] });
  return s;
}

t.test("a client's deduplicationId equal to a dead letter's key swallows the dead letter: it never reaches the dead-letter queue", async (t) => {
  const s = await store(t);
  // Outbox ids count from 1 in each partition: guessable. bob (send right on the DLQ only) sends first.
  s.must('bob', sendMsgs('orders-dlq', msg('decoy', { deduplicationId: 'dls:0/1' })));
  s.must('alice', sendMsgs('orders', msg('poison')));
  const [m] = take(s, 'alice', q('orders'), 1);
  s.must('alice', nack(q('orders'), 0, m!.receiptHandle)); // its one delivery: dead-lettered
  t.equal(s.sm.outbox(10)[0]?.id, 1, 'outbox row 1');
  forwardDeadLetters(s);
  t.strictSame(s.sm.outbox(10), [], 'the forwarder cleared the row');
  const got = take(s, 'alice', q('orders-dlq'), 10) as ReceivedMessage[];
  t.strictSame(
    got.map((x) => x.body).sort(),
    ['decoy', 'poison'],
    'the dead letter is in the dead-letter queue (it is not: deduplicated against bob\'s message, and lost)',
  );
});

t.test("a dead letter's key keeps a client's deduplicationId taken for 24 hours, not the 5 minutes of the contract", async (t) => {
  const s = await store(t);
  s.must('alice', sendMsgs('orders', msg('poison')));
  const [m] = take(s, 'alice', q('orders'), 1);
  s.must('alice', nack(q('orders'), 0, m!.receiptHandle));
  forwardDeadLetters(s);
  s.advance(600); // 10 minutes: past any deduplication window a client's id has
  const r = s.must('bob', sendMsgs('orders-dlq', msg('new work', { deduplicationId: 'dls:0/1' }))) as { items: { messageId: string }[] };
  const bodies = (take(s, 'alice', q('orders-dlq'), 10) as ReceivedMessage[]).map((x) => x.body).sort();
  t.strictSame(bodies, ['new work', 'poison'], `bob's send, answered ${r.items[0]!.messageId}, is stored (it is not)`);
});

t.test('in a partition of a format before the fix, the keys stay as older builds write them (replicas of two builds apply alike)', async (t) => {
  const { DEAD_LETTER_SOURCES, FORMAT } = await import('../../../src/store/broker/index.js');
  if (FORMAT <= DEAD_LETTER_SOURCES) return t.pass('no format after 12 in this build');
  const s = await TestStore.open(0, undefined, DEAD_LETTER_SOURCES);
  t.teardown(() => s.close());
  s.must(null, { type: 'user.register', username: 'alice', passwordHash: 'h' });
  s.must('alice', queue('dlq'));
  s.must('alice', sendMsgs('dlq', msg('decoy', { deduplicationId: 'dls:0/1' })));
  s.must(null, { type: 'deadletter.deliver', queue: 'dlq', expectedOwner: 'alice', messages: [{ messageId: '0-9-0', body: 'x', attributes: {}, source: '0/1' }] });
  t.equal(take(s, 'alice', q('dlq'), 10).length, 1, 'format 12 still folds them, as a build of format 12 does');
});
