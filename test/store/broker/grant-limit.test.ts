// A queue or topic holds grants for at most MAX_GRANTS users (format 16, BOUNDED_GRANTS): each is a
// row that a listing of its grants reads and answers at once, and before, an owner could add any
// number.
import t, { type Test } from 'tap';
import { BOUNDED_GRANTS, MAX_GRANTS } from '../../../src/store/broker/index.js';
import { TestStore, queue } from './helpers.js';
import { grant, topic } from './unit-kit.js';

async function open(t: Test, format = BOUNDED_GRANTS): Promise<TestStore> {
  const s = await TestStore.open(0, undefined, format);
  t.teardown(() => s.close());
  return s;
}

const granted = (s: TestStore, kind: 'queue' | 'topic', name: string): number => {
  const r = s.sm.listGrants(kind, name, 'alice');
  if (!r.ok) throw new Error(`listGrants: ${r.detail}`);
  return r.value.length;
};

t.test('a queue or topic that holds MAX_GRANTS grants refuses one for another user, and nothing else', async (t) => {
  const s = await open(t);
  s.must('alice', queue('q'));
  s.must('alice', topic('news'));
  for (let i = 0; i < MAX_GRANTS; i++) {
    s.must('alice', grant('queue', 'q', `user${i}`, 'send'));
    s.must('alice', grant('topic', 'news', `user${i}`, 'publish'));
  }
  t.match(s.run('alice', grant('queue', 'q', 'one-more', 'send')), {
    ok: false,
    code: 'conflict',
    detail: "queue 'q' holds grants for 1000 users, the most a queue holds: revoke one first",
  });
  t.match(s.run('alice', grant('topic', 'news', 'one-more', 'subscribe')), { ok: false, code: 'conflict', detail: /topic 'news' holds grants for 1000 users/ });
  t.equal(granted(s, 'queue', 'q'), MAX_GRANTS, 'nothing granted');
  t.equal(granted(s, 'topic', 'news'), MAX_GRANTS);
  t.strictSame(s.run('alice', grant('queue', 'q', 'user7', 'send', 'receive')), { ok: true, value: { username: 'user7', actions: ['receive', 'send'] } }, "a grantee's rights are still replaced");
  t.match(s.run('user5', grant('queue', 'q', 'one-more', 'send')), { ok: false, code: 'forbidden' }, 'a grantee is told it may not grant, as before');
  s.must('alice', queue('other'));
  t.ok(s.run('alice', grant('queue', 'other', 'one-more', 'send')).ok, 'another queue counts alone');
  s.must('alice', { type: 'grant.delete', kind: 'queue', name: 'q', username: 'user0' });
  t.ok(s.run('alice', grant('queue', 'q', 'one-more', 'send')).ok, 'a revoke makes room for one');
  t.match(s.run('alice', grant('queue', 'q', 'user0', 'send')), { ok: false, code: 'conflict' }, 'and only one');
});

t.test('before format 16 an owner grants rights to any number of users, as older builds apply it', async (t) => {
  const s = await open(t, BOUNDED_GRANTS - 1);
  s.must('alice', queue('q'));
  for (let i = 0; i <= MAX_GRANTS; i++) s.must('alice', grant('queue', 'q', `user${i}`, 'send'));
  t.equal(granted(s, 'queue', 'q'), MAX_GRANTS + 1);
  // Raised: what is granted stays, and no one more is granted.
  s.must(null, { type: 'format.raise', format: BOUNDED_GRANTS });
  t.match(s.run('alice', grant('queue', 'q', 'past', 'send')), { ok: false, code: 'conflict' });
  t.ok(s.run('alice', grant('queue', 'q', 'user3', 'receive')).ok, 'replacing a grant still applies');
  t.equal(granted(s, 'queue', 'q'), MAX_GRANTS + 1, 'the grants made before stay');
});

t.test("a grant counts its resource's grants in the primary key's index, not by reading the table", async (t) => {
  const s = await open(t);
  const plan = (s.sm.sqlite.prepare("explain query plan select count(*) from grants where resource_kind = 'queue' and resource_name = ?").all('q') as { detail: string }[])
    .map((r) => r.detail)
    .join('; ');
  t.match(plan, /SEARCH grants USING COVERING INDEX \w+ \(resource_kind=\? AND resource_name=\?\)/);
});
