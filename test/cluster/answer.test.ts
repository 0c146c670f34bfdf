// How a forwarding node reads a leader's answer carried in a Raft stream (decodeCarried): a peer's
// bytes, so anything unreadable is an outcome the router treats as unknown, never a crash.
import t from 'tap';
import { decodeCarried } from '../../src/cluster/answer.js';

t.test('where a leader appended a tracked command is read only when both numbers are positive integers', async (t) => {
  t.same(decodeCarried({ kind: 'proposed', index: 42, term: 3 }), { kind: 'proposed', index: 42, term: 3 });
  for (const bad of [{ index: 0, term: 3 }, { index: 42, term: -1 }, { index: 1.5, term: 3 }, { index: '42', term: 3 }, { term: 3 }, { index: 2 ** 53, term: 3 }]) {
    t.match(decodeCarried({ kind: 'proposed', ...bad }), { kind: 'unknown', timedOut: false }, JSON.stringify(bad));
  }
});

t.test('the other answers read as the HTTP routes’ do', async (t) => {
  t.same(decodeCarried({ kind: 'ok', result: { ok: true, value: 1 } }), { kind: 'ok', result: { ok: true, value: 1 } });
  t.same(decodeCarried({ kind: 'not_leader', leader: 'n2' }), { kind: 'not_leader', leader: 'n2' });
  t.same(decodeCarried({ kind: 'retry', detail: 'busy' }), { kind: 'retry', detail: 'busy' });
  t.match(decodeCarried({ kind: 'surprise' }), { kind: 'unknown' });
  t.match(decodeCarried(null), { kind: 'unknown' });
});
