// The fault schedule: a pure function of the seed, and every covered kind is planned however short
// the duration (the short chaos test asserts that they happened; a slow machine must not skip them).
import t from 'tap';
import { schedule } from './faults.js';
import { FAULT_KINDS } from './history.js';

t.test('a schedule is a pure function of its seed', async (t) => {
  t.same(schedule(7, 600_000, 4), schedule(7, 600_000, 4));
  t.not(JSON.stringify(schedule(7, 600_000, 4)), JSON.stringify(schedule(8, 600_000, 4)));
});

t.test('every covered kind is planned first, even past the duration; drawn kinds only while they fit', async (t) => {
  const cover = [...FAULT_KINDS];
  const short = schedule(3, 1_000, 4, { cover });
  t.same([...short.map((f) => f.kind)].sort(), [...cover].sort(), 'all nine kinds, nothing drawn');
  const long = schedule(3, 600_000, 4, { cover });
  t.same([...long.slice(0, cover.length).map((f) => f.kind)].sort(), [...cover].sort(), 'the covered kinds come first');
  t.ok(long.length > cover.length, 'then drawn ones');
});
