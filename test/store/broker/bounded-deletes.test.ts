// A purge or a delete of a large backlog deleted every message in its one entry, on every replica: a
// purge of 640,000 held each node's event loop 0.7 s, and a larger one past the election timeout (a
// review of 2026-12-07). From format 15 (BOUNDED_DELETES) an entry deletes at most CLEAR_BUDGET of
// them and the sweeps the leader proposes delete the rest, CLEAR_BUDGET per sweep.
import t, { type Test } from 'tap';
import { BOUNDED_DELETES, stateHash, type ReceivedMessage } from '../../../src/store/broker/index.js';
import { CLEAR_BUDGET } from '../../../src/store/broker/messages.js';
import { TestStore, queue, receive } from './helpers.js';
import { msg, publish, sendMsgs, subscription, topic } from './unit-kit.js';

const EXTRA = 3_000;

async function filled(t: Test, format?: number): Promise<TestStore> {
  const s = await TestStore.open(0, undefined, format);
  t.teardown(() => s.close());
  s.must(null, { type: 'user.register', username: 'alice', passwordHash: 'h' });
  s.must('alice', queue('big'));
  for (let i = 0; i < (CLEAR_BUDGET + EXTRA) / 100; i++) s.must('alice', sendMsgs('big', ...Array.from({ length: 100 }, (_, k) => msg(`m${i * 100 + k}`))));
  return s;
}

const rows = (s: TestStore): number => (s.sm.sqlite.prepare('select count(*) as n from messages').get() as { n: number }).n;
const stats = (s: TestStore) => {
  const q = s.sm.getQueue('big', 'alice', s.time);
  return q.ok ? q.value.stats : null;
};

t.test('a purge deletes CLEAR_BUDGET messages in its entry, the sweeps the rest, and keeps what was sent after it', async (t) => {
  const s = await filled(t);
  t.equal(s.must('alice', { type: 'queue.purge', name: 'big' }).purged, CLEAR_BUDGET + EXTRA, 'counts every message it takes');
  t.equal(rows(s), EXTRA, 'the entry deleted CLEAR_BUDGET');
  t.match(stats(s), { visible: EXTRA }, 'the counts follow the rows');
  s.must('alice', sendMsgs('big', msg('after')));
  t.ok(s.sm.needsSweep(s.time), 'the leader is told to sweep');
  s.must(null, { type: 'sweep' });
  t.equal(rows(s), 1, 'the sweep deleted the rest');
  t.match(stats(s), { visible: 1, inFlight: 0, delayed: 0 });
  t.strictSame((s.must('alice', receive('big')).messages as ReceivedMessage[]).map((m) => m.body), ['after'], 'what was sent after the purge stays');
  t.notOk(s.sm.needsSweep(s.time), 'nothing left to sweep');
});

t.test("a queue's delete leaves the rest of its messages to the sweeps; a queue of the same name starts empty", async (t) => {
  const s = await filled(t);
  s.must('alice', { type: 'queue.delete', name: 'big' });
  t.equal(rows(s), EXTRA, 'the entry deleted CLEAR_BUDGET');
  s.must('alice', queue('big'));
  t.match(stats(s), { visible: 0, inFlight: 0, delayed: 0 }, 'a new queue of the same name is empty');
  t.strictSame(s.must('alice', receive('big')).messages, [], 'and gives nothing of the old one');
  const before = s.index;
  const kept = s.sm.referencedEntries(1, before);
  t.ok(kept.length > 0, `the log keeps the entries of the rows left (${kept.length}), which an image made meanwhile reads`);
  t.ok(s.sm.needsSweep(s.time));
  s.must(null, { type: 'sweep' });
  t.equal(rows(s), 0, 'the sweep deleted the rest');
  t.strictSame(s.sm.referencedEntries(1, before), [], 'and the log keeps none of them');
  t.notOk(s.sm.needsSweep(s.time));
});

t.test('replicas applying a bounded purge and delete reach the same state', async (t) => {
  const a = await filled(t);
  const b = await filled(t);
  for (const s of [a, b]) {
    s.must('alice', { type: 'queue.purge', name: 'big' });
    s.must('alice', { type: 'queue.delete', name: 'big' });
  }
  t.equal(stateHash(a.sm.sqlite), stateHash(b.sm.sqlite), 'mid-way');
  for (const s of [a, b]) s.must(null, { type: 'sweep' });
  t.equal(rows(a), 0);
  t.equal(stateHash(a.sm.sqlite), stateHash(b.sm.sqlite), 'done');
});

t.test('before format 15 a purge deletes every message in its entry, as older builds do', async (t) => {
  const s = await filled(t, BOUNDED_DELETES - 1);
  s.must('alice', { type: 'queue.purge', name: 'big' });
  t.equal(rows(s), 0);
  t.notOk(s.sm.needsSweep(s.time));
});

t.test("a topic's delete deletes at most CLEAR_BUDGET messages in all, over its subscriptions", async (t) => {
  const s = await TestStore.open();
  t.teardown(() => s.close());
  s.must(null, { type: 'user.register', username: 'alice', passwordHash: 'h' });
  s.must('alice', topic('news'));
  for (const n of ['a', 'b']) s.must('alice', subscription('news', n));
  const per = CLEAR_BUDGET / 2 + EXTRA;
  for (let i = 0; i < per / 100; i++) s.must('alice', publish('news', ...Array.from({ length: 100 }, (_, k) => msg(`m${i * 100 + k}`))));
  s.must('alice', { type: 'topic.delete', name: 'news' });
  t.equal(rows(s), 2 * per - CLEAR_BUDGET, 'CLEAR_BUDGET deleted by the entry');
  s.must(null, { type: 'sweep' });
  t.equal(rows(s), 0, 'the rest by the sweep');
  t.notOk(s.sm.needsSweep(s.time));
});
