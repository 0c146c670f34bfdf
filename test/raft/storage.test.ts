// MemoryStorage: the reference implementation of Storage (append with truncation, compaction,
// snapshots, byte-limited reads and the Compacted/Unavailable errors).
import t from 'tap';
import {
  CompactedError,
  InvariantError,
  MemoryStorage,
  EntryUnavailableError,
  emptyHardState,
  type Entry,
} from '../../src/raft/index.js';
import { entry, ids, n1, text } from './helpers.js';

const voters = ids('1', '2', '3');

function run(first: number, terms: number[], data = ''): Entry[] {
  return terms.map((term, i) => entry(first + i, term, data === '' ? `e${first + i}` : data));
}
const idx = (es: readonly Entry[]) => es.map((e) => e.index);
const pairs = (s: MemoryStorage) => {
  const out: [number, number][] = [];
  for (let i = s.firstIndex(); i <= s.lastIndex(); i++) out.push([i, s.term(i)]);
  return out;
};

/** Storage holding entries 3..5 (terms 3,4,5) after a snapshot at index 2, term 2. */
function compacted(): MemoryStorage {
  const s = new MemoryStorage(voters);
  s.append(run(1, [1, 2, 3, 4, 5]));
  s.compact(2);
  return s;
}

t.test('a new storage', async (t) => {
  const s = new MemoryStorage(voters);
  t.same(s.initialState(), { hardState: emptyHardState, voters });
  t.equal(s.firstIndex(), 1);
  t.equal(s.lastIndex(), 0);
  t.equal(s.term(0), 0, 'term of the dummy entry');
  t.same(s.entries(1, 1, Infinity), []);
  t.equal(s.snapshot().meta.index, 0);
  t.same(s.snapshot().meta.voters, voters);
});

t.test('hard state', async (t) => {
  const s = new MemoryStorage(voters);
  const hs = { term: 3, vote: n1, commit: 2 };
  s.setHardState(hs);
  t.same(s.hardState(), hs);
  t.same(s.initialState().hardState, hs);
});

t.test('append', async (t) => {
  t.test('to the end', async (t) => {
    const s = new MemoryStorage(voters);
    s.append(run(1, [1, 1]));
    s.append(run(3, [2]));
    t.same(pairs(s), [[1, 1], [2, 1], [3, 2]]);
    s.append([]);
    t.equal(s.lastIndex(), 3, 'an empty append changes nothing');
  });

  t.test('truncates a conflicting suffix', async (t) => {
    const s = compacted();
    s.append(run(4, [6, 6]));
    t.same(pairs(s), [[3, 3], [4, 6], [5, 6]]);
    s.append(run(4, [7]));
    t.same(pairs(s), [[3, 3], [4, 7]], 'a shorter append at 4 drops everything after it');
    s.append(run(3, [8, 8, 8, 8]));
    t.same(pairs(s), [[3, 8], [4, 8], [5, 8], [6, 8]], 'rewrites from the first entry');
  });

  t.test('refuses gaps and writes below the snapshot', async (t) => {
    const s = compacted();
    t.throws(() => s.append(run(7, [6])), InvariantError, 'gap after the last index');
    t.throws(() => s.append(run(2, [6, 6])), InvariantError, 'at the snapshot index');
    t.throws(() => s.append(run(1, [6])), InvariantError, 'below the snapshot');
    t.same(pairs(s), [[3, 3], [4, 4], [5, 5]], 'unchanged');
  });
});

t.test('term', async (t) => {
  const s = compacted();
  t.equal(s.term(2), 2, 'the snapshot point (firstIndex - 1) is answerable');
  t.equal(s.term(3), 3);
  t.equal(s.term(5), 5);
  t.throws(() => s.term(1), CompactedError);
  t.throws(() => s.term(0), CompactedError);
  t.throws(() => s.term(6), EntryUnavailableError);
  const err = t.throws(() => s.term(1)) as unknown;
  t.ok(err instanceof CompactedError && err.index === 1, 'the error names the index');
});

t.test('entries', async (t) => {
  const s = new MemoryStorage(voters);
  s.append(run(1, [1, 1, 1, 1, 1], 'x'.repeat(10))); // 10 bytes each
  s.compact(1); // entries 2..5 remain
  const cases: [number, number, number, number[], string][] = [
    [2, 6, Infinity, [2, 3, 4, 5], 'all'],
    [3, 5, Infinity, [3, 4], 'a middle range'],
    [2, 2, Infinity, [], 'empty range'],
    [2, 6, 10, [2], 'exactly one entry fits'],
    [2, 6, 25, [2, 3], 'limit between entries'],
    [2, 6, 30, [2, 3, 4], 'limit exactly at three entries'],
    [2, 6, 0, [2], 'at least one entry'],
    [4, 6, 5, [4], 'at least one entry, later start'],
  ];
  for (const [lo, hi, max, want, what] of cases) t.same(idx(s.entries(lo, hi, max)), want, `entries(${lo}, ${hi}, ${max}): ${what}`);
  t.throws(() => s.entries(1, 3, Infinity), CompactedError, 'lo at the snapshot index');
  t.throws(() => s.entries(0, 3, Infinity), CompactedError, 'lo below it');
  t.throws(() => s.entries(2, 7, Infinity), EntryUnavailableError, 'hi past lastIndex + 1');
  const err = t.throws(() => s.entries(3, 8, Infinity)) as unknown;
  t.ok(err instanceof EntryUnavailableError && err.index === 7, 'EntryUnavailableError names the last index asked for');
});

t.test('compact', async (t) => {
  const s = new MemoryStorage(voters);
  s.append(run(1, [1, 2, 3, 4, 5]));
  s.compact(3);
  t.equal(s.firstIndex(), 4);
  t.equal(s.lastIndex(), 5);
  t.equal(s.term(3), 3, 'the compaction point keeps its term');
  t.throws(() => s.term(2), CompactedError);
  t.throws(() => s.entries(3, 5, Infinity), CompactedError);
  t.same(s.entries(4, 6, Infinity).map(text), ['e4', 'e5']);
  s.compact(2);
  t.equal(s.firstIndex(), 4, 'compacting below the current point is a no-op');
  t.throws(() => s.compact(6), InvariantError, 'compacting past the last index');
  s.compact(5);
  t.equal(s.firstIndex(), 6);
  t.equal(s.lastIndex(), 5, 'everything compacted: an empty log after index 5');
  t.equal(s.term(5), 5);
  s.append(run(6, [6]));
  t.same(pairs(s), [[6, 6]]);
  t.equal(s.snapshot().meta.index, 0, 'compact alone does not make a snapshot');
});

t.test('createSnapshot', async (t) => {
  const s = new MemoryStorage(voters);
  s.append(run(1, [1, 1, 2, 2, 3]));
  const data = new TextEncoder().encode('state@4');
  const snap = s.createSnapshot(4, data);
  t.same(snap.meta, { index: 4, term: 2, voters });
  t.equal(snap.data, data);
  t.equal(s.snapshot(), snap);
  t.equal(s.firstIndex(), 5, 'entries up to the snapshot are dropped');
  t.equal(s.lastIndex(), 5);
  t.equal(s.term(4), 2);
  t.throws(() => s.createSnapshot(4, data), InvariantError, 'not newer than the current one');
  t.throws(() => s.createSnapshot(3, data), InvariantError, 'older');
  t.throws(() => s.createSnapshot(6, data), InvariantError, 'past the last index');
  const snap2 = s.createSnapshot(5, data);
  t.equal(snap2.meta.term, 3);
  t.equal(s.firstIndex(), 6);
});

t.test('applySnapshot replaces the whole log', async (t) => {
  const s = new MemoryStorage(voters);
  s.append(run(1, [1, 1, 1, 1, 1, 1, 1, 1]));
  const snap = { meta: { index: 5, term: 3, voters }, data: new Uint8Array([1]) };
  s.applySnapshot(snap);
  t.equal(s.firstIndex(), 6);
  t.equal(s.lastIndex(), 5, 'the entries after the snapshot are dropped too (they may conflict)');
  t.equal(s.term(5), 3);
  t.equal(s.snapshot(), snap);
  t.same(s.initialState().voters, voters);
  t.throws(
    () => s.applySnapshot({ meta: { index: 4, term: 3, voters }, data: new Uint8Array() }),
    InvariantError,
    'an older snapshot',
  );
  s.append(run(6, [3]));
  t.same(pairs(s), [[6, 3]]);
});

t.test('clone is independent', async (t) => {
  const s = new MemoryStorage(voters);
  s.append(run(1, [1, 1, 1]));
  s.setHardState({ term: 1, vote: n1, commit: 2 });
  const c = s.clone();
  s.append(run(3, [2, 2]));
  s.setHardState({ term: 2, vote: null, commit: 3 });
  t.same(pairs(c), [[1, 1], [2, 1], [3, 1]]);
  t.same(c.hardState(), { term: 1, vote: n1, commit: 2 });
  c.compact(2);
  t.equal(s.firstIndex(), 1);
});
