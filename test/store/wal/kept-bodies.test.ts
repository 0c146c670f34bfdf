// Entries kept below a partition's compacted log for the message bodies they carry: they read back
// exactly through body() across reopens, rollovers, copies forward and releases; they hold their
// segment until released; a backlog kept for a long time does not hold every later segment back; and
// a kept entry that no segment holds is damage, refused on open; and a power cut loses a release only
// where no segment was deleted on the strength of it.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { InvariantError, type SnapshotMeta } from '../../../src/raft/index.js';
import { StorageCorruptError, WalStore } from '../../../src/store/wal/index.js';
import { KeptBodies } from '../../../src/store/wal/kept-bodies.js';
import { seededRandom } from '../../raft/helpers.js';
import { loseUnsynced, runUntilReadyThenKill } from '../../chaos/disk-faults.js';
import { needTool } from '../../tools.js';
import { Workload, applyOp, describe, describeKept, describeKeptModel, voters } from '../fixtures/raft-log-writer.js';
import { entry, hs, item, openStore, segments, show, tempDir } from './wal-helpers.js';

const meta = (index: number, term = 1): SnapshotMeta => ({ index, term, voters });
const big = (index: number): string => `${index}`.padEnd(1500, '.');

/** Writes entries from..to of term 1, one synced write each, committed as written. */
function write(store: WalStore, from: number, to: number, data: (i: number) => string = (i) => `e${i}t1`): void {
  for (let i = from; i <= to; i++) store.persist([item(0, [entry(i, 1, data(i))], hs(1, i))], true);
}

t.test('kept entries read back below the compacted log, across reopens, until released', async (t) => {
  const dir = tempDir(t);
  let store = await openStore(t, dir);
  let log = store.partition(0, voters);
  write(store, 1, 10);
  store.recordSnapshot(0, meta(8), 'image-8', 8, [2, 5]);
  const check = (where: string, kept: number[]): void => {
    t.equal(log.firstIndex(), 9, `${where}: the log is compacted through 8`);
    t.same(log.keptBodies(), kept, `${where}: kept ${kept.join(', ')}`);
    for (const i of [2, 5]) t.same(log.body(i) === null ? null : show([log.body(i)!]), kept.includes(i) ? [`${i}/1:e${i}t1`] : null, `${where}: entry ${i}`);
    t.equal(log.body(3), null, `${where}: an entry compacted and not kept is gone`);
    t.same(show([log.body(9)!]), ['9/1:e9t1'], `${where}: body() reads the log's own entries too`);
    t.equal(log.verify().kept, kept.length, `${where}: verify() reads every kept entry back`);
  };
  check('written', [2, 5]);
  store.close();
  store = await openStore(t, dir);
  log = store.partition(0, voters);
  check('reopened', [2, 5]);

  t.throws(() => store.recordSnapshot(0, meta(10), 'image-10', 10, [5]), InvariantError, 'only entries the compaction drops can be kept');
  t.throws(() => store.recordSnapshot(0, meta(10), 'image-10', 10, [10, 9]), InvariantError, 'kept entries are ascending');
  t.throws(() => store.releaseBodies(0, [3]), InvariantError, 'only a kept entry can be released');
  t.equal(log.snapshot().meta.index, 8, 'a refused snapshot records nothing');

  store.releaseBodies(0, [2]);
  check('released', [5]);
  store.close();
  store = await openStore(t, dir);
  log = store.partition(0, voters);
  check('released and reopened', [5]);

  // compact() keeps entries as a snapshot's compaction does.
  store.recordSnapshot(0, meta(10), 'image-10', 8);
  store.compact(0, 10, [10]);
  t.same(log.keptBodies(), [5, 10], 'compact() keeps what it is told to');
  store.close();
  store = await openStore(t, dir);
  log = store.partition(0, voters);
  t.same(show([log.body(10)!]), ['10/1:e10t1'], 'and so does its record, replayed');

  store.persist([{ partition: 0, hardState: hs(2, 20), entries: [], snapshot: { meta: meta(20, 2), ref: 'leader-20' } }], true);
  t.same(log.keptBodies(), [], 'a snapshot from the leader replaces the state, and nothing before it is kept');
  store.close();
  store = await openStore(t, dir);
  t.same(store.partition(0, voters).keptBodies(), [], 'nor after a reopen');
});

t.test('a kept entry holds its segment until it is released; then the segment goes', async (t) => {
  const dir = tempDir(t);
  const store = await openStore(t, dir, 4096);
  const log = store.partition(0, voters);
  // Entries of 1.5 KiB: a kept one is more than a quarter of a segment, too much to copy forward.
  write(store, 1, 8, big);
  store.recordSnapshot(0, meta(8), 'image-8', 8, [1]);
  const first = segments(dir)[0]!;
  t.equal(first, '0000000000000001.wal', 'the first segment stays: entry 1 is kept in it');
  t.same(show([log.body(1)!]), [`1/1:${big(1)}`]);
  const held = segments(dir).length;
  store.releaseBodies(0, [1]);
  t.ok(segments(dir).includes(first), 'released, its segment is deleted off the event loop: not yet when the call returns');
  await store.settled();
  t.notOk(segments(dir).includes(first), 'released, its segment is deleted');
  t.ok(segments(dir).length < held, `and the segments behind it (${held} before, ${segments(dir).length} now)`);
  t.equal(log.body(1), null);
});

t.test('a backlog kept for a long time does not hold the log back: past four times the live bytes it is copied forward', async (t) => {
  const dir = tempDir(t);
  let store = await openStore(t, dir, 4096);
  let log = store.partition(0, voters);
  write(store, 1, 4, big);
  store.recordSnapshot(0, meta(4), 'image-4', 4, [1, 2]);
  let most = 0;
  let snap = 4;
  for (let i = 5; i <= 600; i++) {
    write(store, i, i, (k) => `${k}`.padEnd(300, '-'));
    if (i % 10 === 0) {
      store.recordSnapshot(0, meta(i), `image-${i}`, i);
      snap = i;
    }
    await store.settled();
    most = Math.max(most, segments(dir).length);
  }
  // Live: two kept entries of 1.5 KiB and at most ten of 300 bytes, about 7 KiB: four times that, and
  // two segments more, is about nine segments of 4 KiB. Held back, the log would grow to about 50.
  t.ok(most <= 10, `at most ${most} segments while 596 entries of 300 bytes went through (${segments(dir).length} now)`);
  t.notOk(segments(dir).includes('0000000000000001.wal'), 'the segment the backlog was written to is gone');
  store.close();
  store = await openStore(t, dir, 4096);
  log = store.partition(0, voters);
  t.equal(log.firstIndex(), snap + 1);
  t.same(show([log.body(1)!, log.body(2)!]), [`1/1:${big(1)}`, `2/1:${big(2)}`], 'the kept entries read back from their copies');
  t.equal(log.verify().kept, 2);
});

t.test('checkpoints larger than a segment (a kept list in many runs) do not make a purge copy forever', async (t) => {
  // Review of 416b3c7: every copy forward rolled over into a new segment whose checkpoint outweighed
  // what the copy freed, so purge() deleted one segment and made another, without end.
  const dir = tempDir(t);
  let store = await openStore(t, dir, 4096);
  for (let i = 1; i <= 1600; i++) store.persist([item(0, [entry(i, 1, `${i % 10}`)], hs(1, i))], true);
  store.partition(0, voters);
  const keep = Array.from({ length: 800 }, (_, k) => 2 * k + 1);
  store.recordSnapshot(0, meta(1600), 'image-1600', 1600, keep);
  write(store, 1601, 1640);
  store.recordSnapshot(0, meta(1640), 'image-1640', 1640);
  t.pass('both snapshots returned');
  store.close();
  store = await openStore(t, dir, 4096);
  const log = store.partition(0, voters);
  t.equal(log.verify().kept, 800, 'every kept entry reads back');
  t.same(show([log.body(1599)!]), ['1599/1:9']);
});

t.test('a kept entry that no segment holds is damage: the log refuses to open', async (t) => {
  const dir = tempDir(t);
  const store = await openStore(t, dir, 4096);
  write(store, 1, 8, big);
  store.recordSnapshot(0, meta(8), 'image-8', 8, [1]);
  store.close();
  rmSync(join(dir, '0000000000000001.wal'));
  await t.rejects(WalStore.open(dir, { segmentBytes: 4096 }), StorageCorruptError, 'entry 1 is kept, and no segment has it');
});

t.test('kept entries read back like the model over seeded random workloads, across reopens, rollovers, copies and releases', async (t) => {
  for (const seed of [11, 12, 13]) {
    const dir = tempDir(t);
    const segmentBytes = 16 * 1024;
    const w = new Workload(seed, { partitions: 3, maxData: 400, bodies: true });
    let store = await openStore(t, dir, segmentBytes);
    const open = (): ReturnType<WalStore['partition']>[] => [0, 1, 2].map((p) => store.partition(p, voters));
    let logs = open();
    let mostKept = 0;
    let releases = 0;
    let failure: string | null = null;
    for (let step = 1; step <= 400 && failure === null; step++) {
      const op = w.next();
      if (op.kind === 'release') releases++;
      applyOp(store, op);
      if (step % 50 === 0) {
        // Half the closes wait for the segments being deleted, as a node's does; the other half
        // leave them to the next open, as a crash would (replayed again, deleted by a later purge).
        if (step % 100 === 0) await store.settled();
        store.close();
        store = await openStore(t, dir, segmentBytes);
        logs = open();
      }
      for (let p = 0; p < 3 && failure === null; p++) {
        const got = JSON.stringify([describe(logs[p]!), describeKept(logs[p]!)]);
        const want = JSON.stringify([describe(w.models[p]!), describeKeptModel(w.kept[p]!)]);
        if (got !== want) failure = `step ${step} (${op.kind}), partition ${p}: ${got} against ${want}`;
        mostKept = Math.max(mostKept, w.kept[p]!.size);
      }
    }
    t.equal(failure, null, `seed ${seed}: every answer, kept entries included, equal after each of 400 steps`);
    for (const log of logs) log.verify();
    t.ok(mostKept > 0 && releases > 0, `seed ${seed}: entries were kept (${mostKept} at most in a partition) and released (${releases} times)`);
    t.ok(Number.parseInt(segments(dir)[0]!, 16) > 1, `seed ${seed}: segments were deleted under kept entries`);
  }
});

t.test('a power cut may lose a release, never one that a segment was deleted for', async (t) => {
  if (needTool(t, 'cc') === null) return;
  const base = mkdtempSync(join(tmpdir(), 'mom-kept-'));
  t.teardown(() => rmSync(base, { recursive: true, force: true }));
  const [root, undo] = [join(base, 'data'), join(base, 'undo')];
  const dir = join(root, 'wal');
  // Entries of 1.5 KiB in segments of 4 KiB: two a segment, and a kept one too large to copy
  // forward. Releasing 1 frees the first segment, which is deleted after a sync; releasing 5 frees
  // nothing (3 holds the oldest segment), so nothing syncs it.
  await runUntilReadyThenKill(
    `import { mkdirSync } from 'node:fs';
     import { WalStore } from './src/store/wal/index.ts';
     mkdirSync(process.env.ROOT, { recursive: true });
     const store = await WalStore.open(${JSON.stringify(dir)}, { segmentBytes: 4096 });
     const voters = ['a', 'b', 'c'];
     store.partition(0, voters);
     const data = (i) => new TextEncoder().encode(String(i).padEnd(1500, '.'));
     for (let i = 1; i <= 8; i++) {
       store.persist([{ partition: 0, hardState: { term: 1, vote: 'a', commit: i }, entries: [{ index: i, term: 1, kind: 0, data: data(i) }], snapshot: null }], true);
     }
     store.recordSnapshot(0, { index: 8, term: 1, voters }, 'image-8', 8, [1, 3, 5]);
     store.releaseBodies(0, [1]);
     await store.settled();
     const synced = store.syncs;
     store.releaseBodies(0, [5]);
     console.log(store.syncs === synced ? 'ready' : 'ready, but the second release was synced');
     setInterval(() => {}, 1000);`,
    root,
    undo,
  );
  const lost = loseUnsynced(root, undo);
  t.ok(lost.records > 0, 'the second release was written without an fsync, and lost');
  t.notOk(segments(dir).includes('0000000000000001.wal'), 'the segment freed by the first release stays deleted');
  const store = await openStore(t, dir, 4096);
  const log = store.partition(0, voters);
  t.same(log.keptBodies(), [3, 5], 'the first release survived (a segment was deleted for it); the second is lost, and 5 is kept longer');
  t.same(show([log.body(3)!, log.body(5)!]).map((s) => s.slice(0, 8)), ['3/1:3...', '5/1:5...']);
  t.equal(log.body(1), null);
});

t.test('the per-segment counts answer like a scan of every kept entry, through pushes, moves, removals, shrinks and clears', async (t) => {
  for (const seed of [1, 2, 3]) {
    const rnd = seededRandom(seed);
    const kept = new KeptBodies();
    const model = new Map<number, { segment: number; bytes: number }>();
    let next = 1;
    let mismatches = 0;
    let largest = 0;
    for (let step = 0; step < 3000; step++) {
      const op = rnd(100);
      if (op < 45) {
        // Runs of pushes: the arrays grow past 64 and shrink again as removals empty them.
        for (let k = rnd(40); k >= 0; k--) {
          next += 1 + rnd(3);
          const place = { segment: rnd(6), bytes: 1 + rnd(2000) };
          kept.push(next, place.segment, 64, place.bytes);
          model.set(next, place);
        }
      } else if (op < 70) {
        // A move of a kept entry, or of one not kept (refused, nothing counted).
        const i = rnd(3) === 0 ? next + 1 + rnd(5) : ([...model.keys()][rnd(Math.max(1, model.size))] ?? next + 1);
        const place = { segment: 1 + rnd(8), bytes: 1 + rnd(2000) };
        if (kept.set(i, place.segment, 128, place.bytes) !== model.has(i)) mismatches++;
        if (model.has(i)) model.set(i, place);
      } else if (op < 98) {
        // Releases: some kept, some repeated, some never kept.
        const drop = [...model.keys()].filter(() => rnd(3) !== 0);
        for (let k = rnd(3); k > 0; k--) drop.push(next + 1 + rnd(10), drop[rnd(Math.max(1, drop.length))] ?? 1);
        drop.sort((a, b) => a - b);
        kept.remove(drop);
        for (const i of drop) model.delete(i);
      } else {
        kept.clear();
        model.clear();
      }
      largest = Math.max(largest, model.size);
      const entries = [...model.entries()].sort((a, b) => a[0] - b[0]);
      const bytes = entries.reduce((n, [, p]) => n + p.bytes, 0);
      const unknown = entries.find(([, p]) => p.segment === 0)?.[0] ?? null;
      let same = kept.size === model.size && kept.bytes() === bytes && kept.firstUnknown() === unknown && JSON.stringify(kept.indexes()) === JSON.stringify(entries.map(([i]) => i));
      for (let seg = 0; seg <= 9 && same; seg++) {
        const inSeg = entries.filter(([, p]) => p.segment === seg).map(([i]) => i);
        same = JSON.stringify(kept.indexesIn(seg)) === JSON.stringify(inSeg) && kept.holds(seg) === entries.some(([, p]) => p.segment <= seg);
      }
      if (!same) mismatches++;
    }
    t.ok(largest > 200, `seed ${seed}: up to ${largest} entries kept at once (the arrays grew and shrank)`);
    t.equal(mismatches, 0, `seed ${seed}: size, bytes, indexes, firstUnknown, indexesIn, holds and set() match the model at every step`);
  }
});
