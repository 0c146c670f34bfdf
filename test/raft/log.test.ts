// RaftLog over MemoryStorage: terms, the up-to-date rule, conflict search, the follower's append,
// slicing across storage and the unstable tail, commit/apply bookkeeping and snapshots.
import t from 'tap';
import {
  CompactedError,
  InvariantError,
  MemoryStorage,
  RaftLog,
  type Entry,
  type Snapshot,
} from '../../src/raft/index.js';
import { entry, n1 } from './helpers.js';

const bytes = (n: number) => 'x'.repeat(n);

/** A log whose storage holds `stored` (after an optional snapshot) and whose unstable tail holds `unstable`. */
function newLog(
  stored: Entry[],
  unstable: Entry[] = [],
  snap?: { index: number; term: number },
): { log: RaftLog; storage: MemoryStorage } {
  const storage = new MemoryStorage([n1]);
  if (snap !== undefined) storage.applySnapshot(snapshot(snap.index, snap.term));
  storage.append(stored);
  const log = new RaftLog(storage, 0);
  if (unstable.length > 0) log.append(unstable);
  return { log, storage };
}

function snapshot(index: number, term: number): Snapshot {
  return { meta: { index, term, voters: [n1] }, data: new TextEncoder().encode(`snap@${index}`) };
}

/** Entries first..(first + terms.length - 1) with the given terms. */
function run(first: number, terms: number[], data = ''): Entry[] {
  return terms.map((term, i) => entry(first + i, term, data));
}

const indexes = (es: readonly Entry[]) => es.map((e) => e.index);
const terms = (es: readonly Entry[]) => es.map((e) => e.term);

t.test('term and matchTerm over snapshot, storage and unstable', async (t) => {
  // Snapshot at 3 (term 1), stored 4..6, unstable 7..8.
  const { log } = newLog(run(4, [2, 2, 3]), run(7, [3, 4]), { index: 3, term: 1 });
  t.equal(log.firstIndex(), 4);
  t.equal(log.lastIndex(), 8);
  t.equal(log.lastTerm(), 4);
  const cases: [number, number | undefined][] = [
    [0, undefined], // compacted
    [2, undefined], // compacted
    [3, 1], // the snapshot's last entry
    [4, 2],
    [5, 2],
    [6, 3],
    [7, 3], // unstable
    [8, 4],
    [9, undefined], // past the end
  ];
  for (const [i, want] of cases) t.equal(log.term(i), want, `term(${i})`);
  t.equal(log.matchTerm(3, 1), true, 'the snapshot point matches its term');
  t.equal(log.matchTerm(6, 3), true);
  t.equal(log.matchTerm(6, 2), false);
  t.equal(log.matchTerm(8, 4), true);
  t.equal(log.matchTerm(9, 4), false, 'past the end never matches');
  t.equal(log.matchTerm(2, 0), false, 'a compacted index never matches');

  const empty = newLog([]).log;
  t.equal(empty.term(0), 0, 'the empty log has term 0 at index 0');
  t.equal(empty.matchTerm(0, 0), true, 'so an append at prevIndex 0 always matches');
  t.equal(empty.lastIndex(), 0);
  t.equal(empty.lastTerm(), 0);
});

t.test('isUpToDate (§5.4.1)', async (t) => {
  const { log } = newLog(run(1, [1, 2, 2]), run(4, [3, 3])); // last (5, 3)
  const cases: [number, number, boolean][] = [
    [5, 3, true], // equal
    [6, 3, true], // same term, longer
    [4, 3, false], // same term, shorter
    [1, 4, true], // higher term wins even if much shorter
    [100, 2, false], // lower term loses even if much longer
    [0, 0, false],
  ];
  for (const [li, lt, want] of cases) t.equal(log.isUpToDate(li, lt), want, `isUpToDate(${li}, ${lt})`);
});

t.test('findConflict', async (t) => {
  const { log } = newLog(run(1, [1, 2, 3]));
  const cases: [Entry[], number, string][] = [
    [[], 0, 'nothing to compare'],
    [run(1, [1, 2, 3]), 0, 'all held'],
    [run(2, [2, 3]), 0, 'a held suffix'],
    [run(3, [3]), 0, 'the last one held'],
    [run(1, [1, 2, 3, 4, 4]), 4, 'new entries after the held ones'],
    [run(2, [2, 3, 4, 4]), 4, 'new entries after a held suffix'],
    [run(4, [4, 4]), 4, 'only new entries'],
    [run(1, [4, 4]), 1, 'conflict at the first'],
    [run(2, [1, 4, 4]), 2, 'conflict in the middle'],
    [run(3, [1, 4, 4, 4]), 3, 'conflict at the last'],
  ];
  for (const [ents, want, what] of cases) t.equal(log.findConflict(ents), want, what);
});

t.test('findConflictByTerm', async (t) => {
  // index: 1 2 3 4 5 6 7 8 9 10
  // term:  1 1 2 2 2 3 3 5 5 5
  const ts = [1, 1, 2, 2, 2, 3, 3, 5, 5, 5];
  const { log } = newLog(run(1, ts));
  const cases: [number, number, number][] = [
    [10, 5, 10],
    [10, 4, 7],
    [10, 3, 7],
    [10, 2, 5],
    [10, 1, 2],
    [10, 0, 0],
    [7, 2, 5],
    [4, 1, 2],
    [20, 4, 7], // an index past the end is clipped to it
    [20, 9, 10],
    [0, 0, 0],
  ];
  for (const [i, term, want] of cases) t.equal(log.findConflictByTerm(i, term), want, `findConflictByTerm(${i}, ${term})`);

  // Compacted: snapshot at 4 (term 2), entries 5..10. The snapshot's term is still known; below it
  // the term is unknown and the search stops there.
  const c = newLog(run(5, ts.slice(4)), [], { index: 4, term: 2 }).log;
  t.equal(c.findConflictByTerm(10, 2), 5);
  t.equal(c.findConflictByTerm(10, 1), 3, 'stops at the first unknown term below the snapshot');
  t.equal(c.findConflictByTerm(10, 3), 7);
});

t.test('maybeAppend', async (t) => {
  // Log 1t1 2t2 3t3, committed 1.
  const fresh = () => {
    const l = newLog(run(1, [1, 2, 3]));
    l.log.commitTo(1);
    return l;
  };

  t.test('prevIndex/prevTerm mismatch: rejected, nothing changes', async (t) => {
    const { log } = fresh();
    t.equal(log.maybeAppend(3, 2, 3, run(4, [4])), null, 'wrong prevTerm');
    t.equal(log.maybeAppend(4, 3, 3, run(5, [4])), null, 'prevIndex past the end');
    t.equal(log.lastIndex(), 3);
    t.equal(log.committed, 1);
    t.same(log.unstable.pending(), []);
  });

  t.test('heartbeat-like append with no entries', async (t) => {
    const { log } = fresh();
    t.equal(log.maybeAppend(3, 3, 3, []), 3);
    t.equal(log.committed, 3);
  });

  t.test('commit is capped by the last new entry', async (t) => {
    const a = fresh().log;
    t.equal(a.maybeAppend(3, 3, 10, []), 3);
    t.equal(a.committed, 3, 'capped at lastNew = 3');
    const b = fresh().log;
    t.equal(b.maybeAppend(2, 2, 3, []), 2);
    t.equal(b.committed, 2, 'lastNew is 2 although the log holds 3: 3 is not known to match');
    const c = fresh().log;
    t.equal(c.maybeAppend(3, 3, 0, []), 3);
    t.equal(c.committed, 1, 'a lower commit never moves it back');
  });

  t.test('new entries are appended', async (t) => {
    const { log } = fresh();
    t.equal(log.maybeAppend(3, 3, 4, run(4, [4, 4])), 5);
    t.equal(log.lastIndex(), 5);
    t.equal(log.committed, 4);
    t.same(indexes(log.unstable.pending()), [4, 5], 'only the new entries are to be persisted');
  });

  t.test('partly held, partly new', async (t) => {
    const { log } = fresh();
    t.equal(log.maybeAppend(1, 1, 3, run(2, [2, 3, 4])), 4);
    t.same(indexes(log.unstable.pending()), [4], 'held entries are not rewritten');
    t.equal(log.committed, 3);
  });

  t.test('a conflicting suffix is replaced', async (t) => {
    const { log } = fresh();
    t.equal(log.maybeAppend(1, 1, 1, run(2, [4])), 2);
    t.equal(log.lastIndex(), 2, 'the old entry 3 is gone');
    t.equal(log.term(2), 4);
    t.same(log.unstable.pending().map((e) => [e.index, e.term]), [[2, 4]], 'the caller persists from the conflict on');
    t.equal(log.stableLastIndex(), 1);
  });

  t.test('a duplicate, shorter append truncates nothing', async (t) => {
    const { log } = fresh();
    t.equal(log.maybeAppend(1, 1, 1, run(2, [2])), 2, 'returns the last index of the append');
    t.equal(log.lastIndex(), 3, 'entry 3 survives a delayed shorter append');
    t.equal(log.term(3), 3);
    t.same(log.unstable.pending(), []);
    t.equal(log.committed, 1);
  });

  t.test('a duplicate shorter append into the unstable tail truncates nothing', async (t) => {
    const { log } = newLog(run(1, [1]), run(2, [2, 2, 2]));
    t.equal(log.maybeAppend(1, 1, 0, run(2, [2, 2])), 3);
    t.equal(log.lastIndex(), 4);
    t.same(indexes(log.unstable.pending()), [2, 3, 4]);
  });

  t.test('a conflict with a committed entry is an InvariantError', async (t) => {
    const { log } = fresh();
    log.commitTo(2);
    t.throws(() => log.maybeAppend(1, 1, 2, run(2, [4, 4])), InvariantError);
    t.equal(log.term(2), 2, 'the committed entry is intact');
    t.equal(log.lastIndex(), 3);
    // Conflicting only after the committed prefix is fine.
    t.equal(log.maybeAppend(1, 1, 2, run(2, [2, 5])), 3);
    t.equal(log.term(3), 5);
  });
});

t.test('append guards', async (t) => {
  const { log } = newLog(run(1, [1, 1, 1]));
  log.commitTo(2);
  t.throws(() => log.append(run(2, [2])), InvariantError, 'cannot overwrite a committed entry');
  t.throws(() => log.append(run(5, [2])), InvariantError, 'cannot leave a gap');
  t.equal(log.append([]), 3, 'an empty append returns the last index');
  t.equal(log.append(run(3, [2, 2])), 4, 'overwrites the uncommitted suffix');
  t.same(terms(log.slice(1, 5, Infinity)), [1, 1, 2, 2]);
});

t.test('slice across storage and unstable, with a byte limit', async (t) => {
  // Stored 1..3, unstable 4..6, each entry 10 bytes.
  const { log } = newLog(run(1, [1, 1, 1], bytes(10)), run(4, [2, 2, 2], bytes(10)));
  t.equal(log.unstable.offset, 4);
  const cases: [number, number, number, number[], string][] = [
    [1, 7, Infinity, [1, 2, 3, 4, 5, 6], 'everything'],
    [2, 5, Infinity, [2, 3, 4], 'across the boundary'],
    [4, 7, Infinity, [4, 5, 6], 'unstable only'],
    [1, 3, Infinity, [1, 2], 'storage only'],
    [5, 5, Infinity, [], 'empty range'],
    [1, 7, 25, [1, 2], 'limit inside storage'],
    [1, 7, 30, [1, 2, 3], 'limit exactly at the boundary'],
    [3, 7, 25, [3, 4], 'limit across the boundary'],
    [2, 7, 45, [2, 3, 4, 5], 'limit inside unstable'],
    [1, 7, 0, [1], 'at least one entry from storage'],
    [4, 7, 0, [4], 'at least one entry from unstable'],
    [3, 7, 9, [3], 'at least one entry, even across the boundary'],
    [1, 7, 15, [1], 'storage stopped early: no unstable entries after the gap'],
  ];
  for (const [lo, hi, max, want, what] of cases) t.same(indexes(log.slice(lo, hi, max)), want, `slice(${lo}, ${hi}, ${max}): ${what}`);

  t.throws(() => log.slice(1, 8, Infinity), InvariantError, 'past the last index');
  t.throws(() => log.slice(5, 4, Infinity), InvariantError, 'inverted range');

  const c = newLog(run(4, [2, 2]), run(6, [3]), { index: 3, term: 1 }).log;
  t.throws(() => c.slice(3, 6, Infinity), CompactedError, 'below the first index');
  t.throws(() => c.slice(1, 6, Infinity), CompactedError);
  t.same(indexes(c.slice(4, 7, Infinity)), [4, 5, 6]);
});

t.test('commitTo and appliedTo', async (t) => {
  const { log } = newLog(run(1, [1, 1, 1]));
  log.commitTo(2);
  t.equal(log.committed, 2);
  log.commitTo(1);
  t.equal(log.committed, 2, 'commit never decreases');
  t.throws(() => log.commitTo(4), InvariantError, 'commit past the last index');
  t.equal(log.committed, 2);
  log.commitTo(3);
  t.equal(log.committed, 3);

  log.appliedTo(2);
  t.equal(log.applied, 2);
  t.throws(() => log.appliedTo(1), InvariantError, 'applied never decreases');
  t.throws(() => log.appliedTo(4), InvariantError, 'cannot apply past commit');
  log.appliedTo(0);
  t.equal(log.applied, 2, 'appliedTo(0) is a no-op');
});

t.test('a new log starts committed and applied at the snapshot', async (t) => {
  const { log } = newLog(run(6, [2, 2]), [], { index: 5, term: 2 });
  t.equal(log.committed, 5);
  t.equal(log.applied, 5);
  const storage = new MemoryStorage([n1]);
  storage.append(run(1, [1, 1, 1]));
  const withApplied = new RaftLog(storage, 2);
  t.equal(withApplied.applied, 2, 'the caller says what the state machine applied');
});

t.test('restore a snapshot', async (t) => {
  const { log, storage } = newLog(run(1, [1, 1, 2]), run(4, [2]));
  log.commitTo(2);
  const s = snapshot(10, 4);
  log.restore(s);
  t.equal(log.committed, 10, 'the snapshot is committed');
  t.equal(log.firstIndex(), 11);
  t.equal(log.lastIndex(), 10);
  t.equal(log.lastTerm(), 4);
  t.equal(log.term(10), 4);
  t.equal(log.term(3), undefined, 'the old log is gone');
  t.equal(log.snapshot(), s, 'the pending snapshot is what the log would send');
  t.equal(log.unstable.snapshot, s, 'it is pending persistence');
  t.equal(log.stableLastIndex(), 0, 'nothing durable is part of the log while the snapshot is pending');
  t.same(log.unstable.pending(), []);
  t.same(log.nextCommitted(Infinity), [], 'nothing to apply from entries: the snapshot carries the state');
  t.notOk(log.hasNextCommitted());
  t.equal(log.append(run(11, [4])), 11, 'appends continue after the snapshot');

  // The caller persists it.
  storage.applySnapshot(s);
  log.unstable.stableSnapTo(10);
  t.equal(log.unstable.snapshot, null);
  t.equal(log.firstIndex(), 11);
  t.equal(log.term(10), 4, 'the snapshot term now comes from storage');

  t.throws(() => log.restore(snapshot(10, 4)), InvariantError, 'a snapshot not ahead of commit');
  t.throws(() => log.restore(snapshot(5, 4)), InvariantError);
});

t.test('nextCommitted', async (t) => {
  t.test('only up to entries handed out for persistence', async (t) => {
    const { log } = newLog([], run(1, [1, 1, 1, 1, 1]));
    log.commitTo(5);
    t.same(log.nextCommitted(Infinity), [], 'committed but not yet handed to the caller to persist');
    t.notOk(log.hasNextCommitted(), 'so no Ready is due for them');
    log.unstable.acceptInProgress();
    t.same(indexes(log.nextCommitted(Infinity)), [1, 2, 3, 4, 5], 'being persisted: may be applied');
    t.ok(log.hasNextCommitted());
    log.append(run(6, [1, 1]));
    log.commitTo(7);
    t.same(indexes(log.nextCommitted(Infinity)), [1, 2, 3, 4, 5], 'not 6 and 7: not yet in a Ready');
    log.unstable.acceptInProgress();
    t.same(indexes(log.nextCommitted(Infinity)), [1, 2, 3, 4, 5, 6, 7]);
  });

  t.test('stored entries, applied and byte limit', async (t) => {
    const { log } = newLog(run(1, [1, 1, 1, 1], bytes(10)));
    log.commitTo(3);
    t.same(indexes(log.nextCommitted(Infinity)), [1, 2, 3], 'never past commit');
    t.same(indexes(log.nextCommitted(20)), [1, 2], 'byte limit');
    t.same(indexes(log.nextCommitted(0)), [1], 'at least one');
    log.appliedTo(2);
    t.same(indexes(log.nextCommitted(Infinity)), [3], 'after applied');
    t.ok(log.hasNextCommitted());
    log.appliedTo(3);
    t.same(log.nextCommitted(Infinity), []);
    t.notOk(log.hasNextCommitted(), 'all applied');
  });
});

t.test('unstable: stableTo ignores a stale term after truncation', async (t) => {
  const { log } = newLog(run(1, [1]), run(2, [1, 1]));
  log.unstable.acceptInProgress();
  // A conflicting append rewrites 2..3 while the old 2..3 are being persisted.
  log.append(run(2, [2]));
  log.unstable.stableTo(3, 1); // the write of the old entries completes
  t.equal(log.lastIndex(), 2);
  t.same(
    log.unstable.pending().map((e) => [e.index, e.term]),
    [[2, 2]],
    'the replacement is still pending',
  );
  t.equal(log.term(2), 2);
  log.unstable.acceptInProgress();
  log.unstable.stableTo(2, 2);
  t.same(log.unstable.entries, []);
  t.equal(log.unstable.offset, 3);
});
