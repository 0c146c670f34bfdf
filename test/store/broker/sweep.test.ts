// The sweep: dead-lettering and retention happen even when nobody receives from the queue.
import t from 'tap';
import { BrokerStateMachine } from '../../../src/store/broker/index.js';
import { TestStore, queue, receive, send } from './helpers.js';

t.test('a sweep dead-letters messages whose last lease expired, with no receive on the queue', async (t) => {
  const s = await TestStore.open();
  t.teardown(() => s.close());
  s.must('alice', queue('dlq'));
  s.must('alice', queue('jobs', { maxDeliveries: 1, deadLetterQueue: 'dlq', visibilityTimeoutSeconds: 10 }));
  s.must('alice', send('jobs', 'poison', 'fine'));
  s.must('alice', receive('jobs', 1));
  t.same(s.must(null, { type: 'sweep' }), { expired: 0, deadLettered: 0 }, 'the lease is alive: nothing to do');
  s.advance(11);
  t.same(s.must(null, { type: 'sweep' }), { expired: 0, deadLettered: 1 });
  const out = s.sm.outbox(10);
  t.equal(out.length, 1);
  t.equal(out[0]!.body, 'poison');
  t.equal(out[0]!.targetQueue, 'dlq');
  const q = s.sm.getQueue('jobs', 'alice', s.time);
  t.ok(q.ok && q.value.stats.visible === 1 && q.value.stats.inFlight === 0, 'only the fine message is left');
});

t.test('a sweep deletes messages past their retention', async (t) => {
  const s = await TestStore.open();
  t.teardown(() => s.close());
  s.must('alice', queue('short', { retentionSeconds: 60 }));
  s.must('alice', send('short', 'a', 'b'));
  s.advance(61);
  t.same(s.must(null, { type: 'sweep' }), { expired: 2, deadLettered: 0 });
  const n = s.sm.sqlite.prepare('select count(*) as n from messages').get() as { n: number };
  t.equal(n.n, 0, 'the rows are gone, not just hidden');
});

t.test('a sweep is bounded and refused for users', async (t) => {
  const s = await TestStore.open();
  t.teardown(() => s.close());
  s.must('alice', queue('many', { maxDeliveries: 1, visibilityTimeoutSeconds: 1 }));
  const total = BrokerStateMachine.SWEEP_BUDGET + 5;
  for (let i = 0; i < total; i += 100) s.must('alice', send('many', ...Array.from({ length: Math.min(100, total - i) }, (_, k) => `m${i + k}`)));
  for (let i = 0; i < total; i += 100) s.must('alice', receive('many', 100));
  s.advance(2);
  t.same(s.must(null, { type: 'sweep' }), { expired: 0, deadLettered: BrokerStateMachine.SWEEP_BUDGET });
  t.same(s.must(null, { type: 'sweep' }), { expired: 0, deadLettered: 5 }, 'the next sweep finishes the job');
  const r = s.run('alice', { type: 'sweep' });
  t.ok(!r.ok && r.code === 'forbidden');
});
