// A user owns at most MAX_OWNED queues, topics and subscriptions in one partition (format 15,
// BOUNDED_OWNERSHIP): each is a row of the state, and a review made 40,000 empty queues in one
// partition. Subscriptions count: a topic's owner may make 1,000 on each of its topics.
import t, { type Test } from 'tap';
import { BOUNDED_OWNERSHIP, MAX_OWNED } from '../../../src/store/broker/index.js';
import { TestStore, queue } from './helpers.js';
import { subscription, topic } from './unit-kit.js';

async function open(t: Test, format = BOUNDED_OWNERSHIP): Promise<TestStore> {
  const s = await TestStore.open(0, undefined, format);
  t.teardown(() => s.close());
  return s;
}

t.test('a user who owns MAX_OWNED queues, topics and subscriptions in a partition is refused one more there, of each kind', async (t) => {
  const s = await open(t);
  s.must('bob', topic('open'));
  // One topic, one subscription (of another user's topic), the rest queues.
  s.must('alice', topic('mine'));
  s.must('alice', subscription('open', 'alice-sub'));
  for (let i = 0; i < MAX_OWNED - 2; i++) s.must('alice', queue(`q${i}`));
  for (const [what, c] of [
    ['queue', queue('one-more')],
    ['topic', topic('one-more')],
    ['subscription', subscription('open', 'one-more')],
    ['subscription of its own topic', subscription('mine', 'one-more')],
  ] as const) {
    const r = s.run('alice', c);
    t.match(r, { ok: false, code: 'conflict', detail: /you own 2000 queues, topics and subscriptions in the partition of .*one user owns in one partition/ }, `a ${what}: 409`);
  }
  t.equal(s.sm.listQueues('alice', '', 2 * MAX_OWNED).length, MAX_OWNED - 2, 'nothing made');
  t.ok(s.run('bob', queue('bobs')).ok, 'another user is not limited by it');
  t.ok(s.run('bob', subscription('mine', 'bobs')).ok, "nor is a subscription of alice's topic by another user");
  // A refusal over an existing name says so first.
  t.match(s.run('alice', queue('q0')), { ok: false, code: 'conflict', detail: "queue 'q0' exists" });
  s.must('alice', { type: 'queue.delete', name: 'q0' });
  t.ok(s.run('alice', topic('after-delete')).ok, 'a delete makes room for one');
  t.match(s.run('alice', queue('q0')), { ok: false, code: 'conflict' }, 'and only one');
  s.must('alice', { type: 'subscription.delete', topic: 'open', name: 'alice-sub' });
  t.ok(s.run('alice', queue('q0')).ok, "a subscription's delete makes room too");
});

t.test('before format 15 a user makes any number, as older builds apply it', async (t) => {
  const s = await open(t, BOUNDED_OWNERSHIP - 1);
  for (let i = 0; i < MAX_OWNED; i++) s.must('alice', queue(`q${i}`));
  t.ok(s.run('alice', queue('one-more')).ok);
  t.ok(s.run('alice', topic('one-more')).ok);
  // Raised: what is made stays, and nothing more is made.
  s.must(null, { type: 'format.raise', format: BOUNDED_OWNERSHIP });
  t.match(s.run('alice', queue('past')), { ok: false, code: 'conflict' });
  t.equal(s.sm.listQueues('alice', '', 2 * MAX_OWNED).length, MAX_OWNED + 1, 'the queues made before stay');
});

t.test('a creation counts what its user owns in indexes, not by reading every queue and topic', async (t) => {
  const s = await open(t);
  const plan = (s.sm.sqlite.prepare('explain query plan select (select count(*) from channels where owner = ?), (select count(*) from topics where owner = ?)').all('a', 'a') as { detail: string }[])
    .map((r) => r.detail)
    .join('; ');
  t.match(plan, /channels USING COVERING INDEX channels_owner/);
  t.match(plan, /topics USING COVERING INDEX topics_owner/);
});
