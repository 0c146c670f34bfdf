// Dead letters forwarded while their queue's partition catches its clock up after an outage (an entry
// moves it at most MAX_CLOCK_STEP_MS; housekeeping's sweeps bring it up an hour per batch). Stored
// then, a letter was stamped with the old clock: its retention in the dead-letter queue counted from
// hours ago, and it expired unseen as the clock caught up. A client's send at that moment waits
// (Router.holdWhileClockBehind); so do dead letters now (NodeHost.proposeSystem). From the review
// of dead letters of stop 61.
import t from 'tap';
import { Housekeeping } from '../../src/partition/housekeeping.js';
import { FORMAT } from '../../src/store/broker/index.js';
import { queue, untickedCluster } from './host-helpers.js';

const HOUR = 3_600_000;

t.test("a dead letter for a partition whose clock is behind waits, and survives the catch-up", async (t) => {
  let offset = 0;
  const wall = (): number => Date.now() + offset;
  // No ticks yet: no pass and no sweep runs until the test says so.
  const { c, leader } = await untickedCluster(t, { wallClock: wall });
  t.ok((await leader.replica(0).propose(null, { type: 'format.raise', format: FORMAT })).ok, 'the newest format, as a leader raises it');
  t.ok((await c.submit(0, 'alice', { ...queue('dlq'), retentionSeconds: 600 })).ok, 'a dead-letter queue keeping messages 10 minutes');
  t.ok((await c.submit(0, 'alice', { ...queue('jobs'), maxDeliveries: 1, deadLetterQueue: 'dlq' })).ok);
  t.ok((await c.submit(0, 'alice', { type: 'queue.send', name: 'jobs', messages: [{ body: 'poison', attributes: {} }] })).ok);
  const r = await c.submit(0, 'alice', { type: 'receive', channel: { queue: 'jobs' }, maxMessages: 1, visibilityTimeoutSeconds: null });
  const handle = r.ok ? (r.value as { messages: { receiptHandle: string }[] }).messages[0]!.receiptHandle : '';
  t.ok((await c.submit(0, 'alice', { type: 'nack', channel: { queue: 'jobs' }, receiptHandles: [handle], delaySeconds: 0 })).ok);
  t.equal(leader.replica(0).state.outbox(10).length, 1, 'dead-lettered: one letter in the outbox');

  // The cluster was down three hours: a pass before the sweeps have brought the clock up.
  offset = 3 * HOUR;
  const housekeeping = new Housekeeping(leader);
  housekeeping.pass();
  await c.quiet();
  t.equal(leader.replica(0).state.outbox(10).length, 1, 'the letter waits in the outbox');
  t.match(leader.replica(0).state.getQueue('dlq', 'alice', wall()), { ok: true, value: { stats: { visible: 0 } } }, 'nothing in the dead-letter queue yet');

  // The nodes tick: the sweeps bring the clock up, then a pass delivers the letter.
  for (const h of c.hosts.values()) h.start();
  await c.until(() => wall() - (c.leaderOf(0)?.replica(0).state.clock() ?? 0) < 60_000, 'the clock caught up', 6000);
  await c.until(() => c.leaderOf(0)!.replica(0).state.outbox(10).length === 0, 'the letter delivered', 6000);
  const now = c.leaderOf(0)!.replica(0).state;
  const dlq = now.getQueue('dlq', 'alice', now.clock());
  t.match(dlq, { ok: true, value: { stats: { visible: 1 } } }, 'the letter is in the dead-letter queue');
  // Ten minutes of retention from its arrival, not from three hours ago.
  const letters = await c.submit(0, 'alice', { type: 'receive', channel: { queue: 'dlq' }, maxMessages: 1, visibilityTimeoutSeconds: null });
  const sentAt = letters.ok ? Date.parse((letters.value as { messages: { sentAt: string }[] }).messages[0]!.sentAt) : 0;
  t.ok(Math.abs(wall() - sentAt) < 10 * 60_000, 'stamped with the caught-up clock');
});
