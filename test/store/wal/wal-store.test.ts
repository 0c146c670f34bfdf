// WalStore, the node's write-ahead Raft log: the partition views answer exactly like MemoryStorage
// (across reopens, segment rollovers, deletions and copies forward), a refused batch writes nothing,
// invariants are enforced, a torn tail is cut while damage to synced records is refused, and one
// process holds the log at a time.
import { existsSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import { CompactedError, InvariantError, MemoryStorage, EntryUnavailableError, emptyHardState } from '../../../src/raft/index.js';
import { MAX_SEGMENT_BYTES, StorageCorruptError, WalStore } from '../../../src/store/wal/index.js';
import { Workload, applyOp, describe, openPartitions, voters } from '../fixtures/raft-log-writer.js';
import { entry, hs, item, openStore, patch, run, segments, show, tempDir } from './wal-helpers.js';
import { fsRecorder } from '../fs-recorder.js';

/**
 * A log in `dir` of two synced writes, entry 1 (`first`) then entry 2 (`second`), closed; answers
 * the newest segment and where the second write's record starts in it.
 */
async function twoWrites(t: Test, dir: string, first: string, second: string): Promise<{ file: string; second: number }> {
  const store = await openStore(t, dir);
  store.partition(0, voters);
  store.persist([item(0, [entry(1, 1, first)], hs(1, 1))], true);
  store.persist([item(0, [entry(2, 1, second)], hs(1, 2))], true);
  store.close();
  const file = join(dir, segments(dir).at(-1)!);
  return { file, second: readFileSync(file).indexOf(second) - 40 };
}

t.test('a new partition answers like a new MemoryStorage', async (t) => {
  const store = await openStore(t, tempDir(t));
  const log = store.partition(0, voters);
  t.same(describe(log), describe(new MemoryStorage(voters)));
  t.same(log.initialState(), { hardState: emptyHardState, voters });
  t.equal(log.snapshotRef(), null);
  t.throws(() => log.term(1), EntryUnavailableError);
  t.same(log.verify(), { partition: 0, firstIndex: 1, lastIndex: 0, entries: 0, kept: 0 });
});

t.test('the views answer like MemoryStorage over seeded random workloads, across reopens, rollovers and deletions', async (t) => {
  for (const seed of [1, 2, 3, 4]) {
    const dir = tempDir(t);
    // Small segments: the workload rolls over, checkpoints, deletes and copies forward many times.
    const segmentBytes = 16 * 1024;
    const w = new Workload(seed, { partitions: 3, maxData: 400 });
    let store = await openStore(t, dir, segmentBytes);
    let logs = openPartitions(store, 3);
    let failed = false;
    let mostSegments = 0;
    let syncs = 0;
    for (let step = 1; step <= 300 && !failed; step++) {
      const op = w.next();
      applyOp(store, op);
      mostSegments = Math.max(mostSegments, segments(dir).length);
      if (step % 50 === 0) {
        syncs += store.syncs;
        store.close();
        store = await openStore(t, dir, segmentBytes);
        logs = openPartitions(store, 3);
      }
      for (let p = 0; p < 3; p++) {
        const got = describe(logs[p]!);
        const want = describe(w.models[p]!);
        if (JSON.stringify(got) !== JSON.stringify(want)) {
          t.same(got, want, `seed ${seed}, step ${step} (${op.kind}), partition ${p}`);
          failed = true;
        }
      }
    }
    for (const log of logs) log.verify();
    t.notOk(failed, `seed ${seed}: 300 steps, every Storage answer equal after each`);
    t.ok(syncs >= 300, `seed ${seed}: every write was synced (${syncs} fdatasyncs)`);
    t.ok(mostSegments >= 2, `seed ${seed}: the log rolled over (${mostSegments} segments at most)`);
    store.close();
  }
});

t.test('entries() caps by bytes but returns at least one entry, from memory and from disk alike', async (t) => {
  const dir = tempDir(t);
  let store = await openStore(t, dir);
  store.partition(0, voters);
  store.persist([item(0, [entry(1, 1, 'aaaa'), entry(2, 1, 'bbbb'), entry(3, 1, 'cccc')])], true);
  for (const where of ['memory', 'disk']) {
    if (where === 'disk') {
      store.close();
      store = await openStore(t, dir);
    }
    const log = store.partition(0, voters);
    t.same(show(log.entries(1, 4, 0)), ['1/1:aaaa'], where);
    t.same(show(log.entries(1, 4, 8)), ['1/1:aaaa', '2/1:bbbb'], where);
    t.same(show(log.entries(2, 4, Infinity)), ['2/1:bbbb', '3/1:cccc'], where);
    t.same(log.entries(2, 2, Infinity), [], where);
    t.throws(() => log.entries(0, 2, 10), CompactedError, where);
    t.throws(() => log.entries(1, 5, 10), EntryUnavailableError, where);
  }
});

t.test('partitions are independent, and one write persists them all', async (t) => {
  const store = await openStore(t, tempDir(t));
  const [a, b] = [store.partition(0, voters), store.partition(7, voters)];
  const synced = store.syncs;
  store.persist([item(0, run(1, [1, 1]), hs(1, 1)), item(7, run(1, [2, 2, 2]), hs(2, 3, 'b'))], true);
  t.equal(store.syncs, synced + 1, 'one fdatasync for both partitions');
  t.same(show(a.entries(1, 3, Infinity)), ['1/1:e1t1', '2/1:e2t1']);
  t.same(show(b.entries(1, 4, Infinity)), ['1/2:e1t2', '2/2:e2t2', '3/2:e3t2']);
  t.same(b.hardState(), hs(2, 3, 'b'));
  t.same(a.hardState(), hs(1, 1));
});

t.test('a refused item writes nothing of its batch, and the log stays usable', async (t) => {
  const dir = tempDir(t);
  const store = await openStore(t, dir);
  const [a, b] = [store.partition(0, voters), store.partition(1, voters)];
  store.persist([item(0, run(1, [1, 1]), hs(1, 2))], true);
  const before = [describe(a), describe(b)];
  const bytes = segments(dir).map((f) => readFileSync(join(dir, f)));
  // Partition 1's part is fine; partition 0's would drop a committed entry.
  t.throws(() => store.persist([item(1, run(1, [1])), item(0, run(2, [2]))], true), InvariantError);
  t.same([describe(a), describe(b)], before, 'neither partition changed');
  t.same(segments(dir).map((f) => readFileSync(join(dir, f))), bytes, 'not a byte written');
  store.persist([item(1, run(1, [1]))], true);
  t.same(show(b.entries(1, 2, Infinity)), ['1/1:e1t1'], 'the next batch goes through');
});

t.test('reopen: the same hard state, entries and snapshot point', async (t) => {
  const dir = tempDir(t);
  let store = await openStore(t, dir);
  store.partition(0, voters);
  store.persist([item(0, run(1, [1, 1, 2, 2, 3]), hs(3, 4, 'a'))], true);
  store.recordSnapshot(0, { index: 3, term: 2, voters }, 'p0-3-2', 2);
  store.persist([item(0, [], hs(3, 5, 'a'))], false);
  const before = describe(store.partition(0, voters));
  store.close();
  store = await openStore(t, dir);
  const log = store.partition(0, voters);
  t.same(describe(log), before);
  t.equal(log.snapshotRef(), 'p0-3-2');
  t.equal(log.firstIndex(), 3, 'the tail behind the snapshot is kept');
  t.same(log.hardState(), hs(3, 5, 'a'), 'an unsynced write of a process that closed is there');
});

t.test('a snapshot from the leader restarts the log; compaction never passes the snapshot', async (t) => {
  const store = await openStore(t, tempDir(t));
  const log = store.partition(0, voters);
  store.persist([item(0, run(1, [1, 1, 1]), hs(1, 3))], true);
  t.throws(() => store.compact(0, 2), InvariantError, 'no snapshot yet: nothing may go');
  store.persist([{ partition: 0, hardState: hs(4, 10), entries: run(11, [4]), snapshot: { meta: { index: 10, term: 3, voters }, ref: 'p0-10-3' } }], true);
  t.equal(log.firstIndex(), 11);
  t.equal(log.term(10), 3);
  t.same(show(log.entries(11, 12, Infinity)), ['11/4:e11t4']);
  t.throws(() => store.compact(0, 11), InvariantError, 'not past the snapshot at 10');
});

t.test('writes a correct node never makes are refused', async (t) => {
  const store = await openStore(t, tempDir(t));
  store.partition(0, voters);
  store.persist([item(0, run(1, [2, 2, 2]), hs(2, 2, 'a'))], true);
  const refused: [string, () => void][] = [
    ['a gap', () => store.persist([item(0, run(5, [2]))], true)],
    ['a term going back in the log', () => store.persist([item(0, run(4, [1]))], true)],
    ['a truncation of committed entries', () => store.persist([item(0, run(2, [3]))], true)],
    ['a term going back', () => store.persist([item(0, [], hs(1, 2))], true)],
    ['a second vote in a term', () => store.persist([item(0, [], hs(2, 2, 'b'))], true)],
    ['commit going back', () => store.persist([item(0, [], hs(2, 1, 'a'))], true)],
    ['commit past the last index', () => store.persist([item(0, [], hs(2, 9, 'a'))], true)],
    ['a snapshot of uncommitted entries', () => store.recordSnapshot(0, { index: 3, term: 2, voters }, 'x')],
    ['a snapshot with the wrong term', () => store.recordSnapshot(0, { index: 2, term: 1, voters }, 'x')],
  ];
  for (const [what, write] of refused) t.throws(write, InvariantError, what);
  t.same(store.partition(0, voters).hardState(), hs(2, 2, 'a'), 'nothing changed');
});

t.test('a torn tail is cut and the log goes on; everything synced before it is kept', async (t) => {
  const dir = tempDir(t);
  let store = await openStore(t, dir);
  store.partition(0, voters);
  store.persist([item(0, run(1, [1, 1]), hs(1, 2))], true);
  store.close();
  // A write the crash cut short: the first half of a record, after the last one.
  const file = join(dir, segments(dir).at(-1)!);
  const bytes = readFileSync(file);
  let end = bytes.length;
  while (end > 0 && bytes[end - 1] === 0) end--;
  end = (end + 7) & ~7;
  patch(file, end, bytes.subarray(16, 16 + 30));

  store = await openStore(t, dir);
  const log = store.partition(0, voters);
  t.same(show(log.entries(1, 3, Infinity)), ['1/1:e1t1', '2/1:e2t1'], 'the synced entries are there');
  t.equal(readFileSync(file).subarray(end, end + 30).every((b) => b === 0), true, 'the torn bytes are zeroed');
  store.persist([item(0, run(3, [1]), hs(1, 3))], true);
  store.close();
  store = await openStore(t, dir);
  t.same(show(store.partition(0, voters).entries(1, 4, Infinity)), ['1/1:e1t1', '2/1:e2t1', '3/1:e3t1'], 'what was written after the cut survives a reopen');
});

t.test('damage to a synced record is refused, never cut away', async (t) => {
  const dir = tempDir(t);
  const { file } = await twoWrites(t, dir, 'first entry, synced', 'second entry');
  const bytes = readFileSync(file);
  const at = bytes.indexOf('first entry, synced');
  patch(file, at, Buffer.from('F'));
  await t.rejects(WalStore.open(dir), StorageCorruptError, 'the later record says the damaged one had been synced');
  // The damage is still there for an operator to look at: nothing was cut.
  t.equal(readFileSync(file).indexOf('second entry') > 0, true, 'the later record is untouched');
  await openStore(t, tempDir(t));
});

t.test('damage in an older segment is refused', async (t) => {
  const dir = tempDir(t);
  const store = await openStore(t, dir, 4096);
  store.partition(0, voters);
  for (let i = 1; i <= 20; i++) store.persist([item(0, [entry(i, 1, `entry ${i} `.padEnd(300, '.'))], hs(1, i))], true);
  store.close();
  t.ok(segments(dir).length >= 2, 'several segments');
  const file = join(dir, segments(dir)[0]!);
  const bytes = readFileSync(file);
  const at = bytes.indexOf('entry 1 ');
  patch(file, at, Buffer.from('X'));
  await t.rejects(WalStore.open(dir), StorageCorruptError);
});

t.test('segments are deleted once compacted; a lagging partition\'s few entries are copied forward', async (t) => {
  const dir = tempDir(t);
  const segmentBytes = 8 * 1024;
  let store = await openStore(t, dir, segmentBytes);
  store.partition(0, voters);
  store.partition(1, voters);
  // Partition 1 writes one entry and then nothing: it never snapshots.
  store.persist([item(1, [entry(1, 1, 'lagging')], hs(1, 1))], true);
  let index = 0;
  for (let round = 0; round < 40; round++) {
    const entries = Array.from({ length: 4 }, () => entry(++index, 1, 'x'.repeat(500)));
    store.persist([item(0, entries, hs(1, index))], true);
    store.recordSnapshot(0, { index, term: 1, voters }, `p0-${index}-1`);
  }
  await store.settled();
  const files = segments(dir);
  t.ok(files.length <= 4, `old segments are deleted (${files.length} left of ${Number.parseInt(files.at(-1)!, 16)})`);
  t.notOk(existsSync(join(dir, '0000000000000001.wal')), 'the first segment, which held partition 1\'s entry, is gone');
  store.close();
  store = await openStore(t, dir, segmentBytes);
  const lagging = store.partition(1, voters);
  t.same(show(lagging.entries(1, 2, Infinity)), ['1/1:lagging'], 'partition 1\'s entry was copied forward and reads back');
  t.same(lagging.hardState(), hs(1, 1));
  t.equal(store.partition(0, voters).lastIndex(), index, 'partition 0 reopens whole');
  lagging.verify();
});

t.test('one process holds the log: a second open fails while the first is open', async (t) => {
  const dir = tempDir(t);
  const first = await openStore(t, dir);
  await t.rejects(WalStore.open(dir), /already open in this process/);
  first.close();
  const again = await openStore(t, dir);
  again.close();
  // A LOCK left by a process that died is taken over; one of a live process is not.
  writeFileSync(join(dir, 'LOCK'), '999999999\n');
  (await openStore(t, dir)).close();
  writeFileSync(join(dir, 'LOCK'), `${process.ppid}\n`);
  await t.rejects(WalStore.open(dir), /held by process/);
});

t.test('segment files are preallocated to their nominal size', async (t) => {
  const dir = tempDir(t);
  await openStore(t, dir, 1 << 20);
  t.equal(statSync(join(dir, segments(dir)[0]!)).size, 1 << 20);
});

t.test('append() writes a turn for the views at once; sync() makes it durable with one fdatasync off the event loop', async (t) => {
  const dir = tempDir(t);
  const store = await openStore(t, dir);
  const log = store.partition(0, voters);
  const synced = store.syncs;
  store.append([item(0, run(1, [1, 1]), hs(1, 0, 'a'))]);
  t.equal(store.syncs, synced, 'nothing synced yet');
  t.same(show(log.entries(1, 3, Infinity)), ['1/1:e1t1', '2/1:e2t1'], 'the core reads what it handed out');
  const sync = store.sync();
  t.type(sync, Promise, 'the sync is awaited, not waited for');
  await sync;
  t.equal(store.syncs, synced + 1, 'one fdatasync');
  await store.sync();
  t.equal(store.syncs, synced + 1, 'nothing new to sync: no fdatasync');
});

t.test('a write cut short keeps none of its records: a batch is whole or absent', async (t) => {
  const dir = tempDir(t);
  let store = await openStore(t, dir);
  store.partition(0, voters);
  store.persist([item(0, run(1, [1]), hs(1, 1))], true);
  // One write of three entries and a new term: a crash (a process killed inside writev, pages lost in
  // a power cut) may leave its first records without its last.
  store.persist([item(0, run(2, [2, 2, 2]), hs(2, 1))], true);
  store.close();
  const file = join(dir, segments(dir).at(-1)!);
  const bytes = readFileSync(file);
  const last = bytes.lastIndexOf(Buffer.from('{"vote":null}'));
  t.ok(last > 0, 'the write\'s last record, its hard state, is found');
  patch(file, last - 40, Buffer.alloc(64));
  store = await openStore(t, dir);
  const log = store.partition(0, voters);
  t.equal(log.lastIndex(), 1, 'none of the cut write\'s entries');
  t.same(log.hardState(), hs(1, 1), 'nor its term: the log never holds entries of a term its hard state has not reached');
  store.persist([item(0, run(2, [3]), hs(3, 2))], true);
  store.close();
  store = await openStore(t, dir);
  t.same(show(store.partition(0, voters).entries(1, 3, Infinity)), ['1/1:e1t1', '2/3:e2t3'], 'the log goes on after the cut');
});

t.test('a segment left half-created by a crash is deleted on open: segments always hold their checkpoints', async (t) => {
  const dir = tempDir(t);
  let store = await openStore(t, dir, 4096);
  store.partition(1, voters);
  store.persist([item(1, [], hs(7, 0, 'b'))], true);
  store.close();
  // A rollover cut short before its rename: the next segment exists only under its temporary name.
  writeFileSync(join(dir, '0000000000000002.wal.tmp'), Buffer.alloc(100));
  store = await openStore(t, dir, 4096);
  t.notOk(existsSync(join(dir, '0000000000000002.wal.tmp')), 'the temporary file is gone');
  t.same(store.partition(1, voters).hardState(), hs(7, 0, 'b'), 'the vote is kept');
  // Segments roll over and the old ones go; every partition's state survives, vote included.
  store.partition(0, voters);
  for (let i = 1; i <= 30; i++) {
    store.persist([item(0, [entry(i, 1, 'x'.repeat(300))], hs(1, i))], true);
    store.recordSnapshot(0, { index: i, term: 1, voters }, `p0-${i}-1`);
  }
  await store.settled();
  t.notOk(existsSync(join(dir, '0000000000000001.wal')), 'the first segment was deleted');
  store.close();
  store = await openStore(t, dir, 4096);
  t.same(store.partition(1, voters).hardState(), hs(7, 0, 'b'), 'the vote came through every checkpoint');
  t.equal(store.partition(0, voters).lastIndex(), 30);
});

t.test('after a failed sync, the next open cuts the log where it was last known synced', async (t) => {
  const dir = tempDir(t);
  const { second } = await twoWrites(t, dir, 'synced', 'after the last good sync');
  // What failed() writes when an fdatasync fails: the second write's sync, say, failed after a
  // writeback error left its pages clean in the cache.
  writeFileSync(join(dir, 'SYNC-FAILED'), JSON.stringify({ segment: 1, durable: second }));
  let store = await openStore(t, dir);
  const log = store.partition(0, voters);
  t.equal(log.lastIndex(), 1, 'only what was synced');
  t.same(log.hardState(), hs(1, 1));
  t.notOk(existsSync(join(dir, 'SYNC-FAILED')), 'the note is gone once the log is cut');
  store.persist([item(0, [entry(2, 1, 'again')], hs(1, 2))], true);
  store.close();
  store = await openStore(t, dir);
  t.same(show(store.partition(0, voters).entries(1, 3, Infinity)), ['1/1:synced', '2/1:again']);
});

t.test('the note of a failed sync goes durably: its removal is synced after the cut, so a power cut cannot bring it back to cut what was synced since', async (t) => {
  const dir = tempDir(t);
  const { file, second } = await twoWrites(t, dir, 'synced', 'after the last good sync');
  writeFileSync(join(dir, 'SYNC-FAILED'), JSON.stringify({ segment: 1, durable: second }));
  const rec = fsRecorder();
  const wal = await t.mockImport<typeof import('../../../src/store/wal/index.js')>('../../../src/store/wal/index.js', rec.mocks);
  const store = await wal.WalStore.open(dir);
  t.teardown(() => store.close());
  const removed = rec.after(`rm ${join(dir, 'SYNC-FAILED')}`);
  t.ok(removed.length > 0, 'the note is removed');
  t.ok(removed.includes(`fsync ${dir}`), 'and the folder synced after it');
  t.ok(rec.events.includes(`fsync ${file}`) && rec.events.indexOf(`fsync ${file}`) < rec.events.indexOf(`rm ${join(dir, 'SYNC-FAILED')}`), 'the cut segment is synced before the note goes');
});

t.test('a log opened in a folder not there yet records the folders it makes in their parents', async (t) => {
  const rec = fsRecorder();
  const wal = await t.mockImport<typeof import('../../../src/store/wal/index.js')>('../../../src/store/wal/index.js', rec.mocks);
  const data = tempDir(t);
  const dir = join(data, 'node', 'wal');
  const store = await wal.WalStore.open(dir);
  t.teardown(() => store.close());
  const made = rec.after(`mkdir ${dir}`);
  t.ok(made.includes(`fsync ${join(data, 'node')}`) && made.includes(`fsync ${data}`), 'node/ and wal/ are durable entries of their parents');
});

t.test('a segment size past what 32-bit offsets can address is refused when the log opens', async (t) => {
  const dir = tempDir(t);
  for (const segmentBytes of [2 ** 32, MAX_SEGMENT_BYTES + 1, 0, 1.5]) {
    await t.rejects(WalStore.open(dir, { segmentBytes }), RangeError, `segmentBytes ${segmentBytes}`);
  }
  // Not the largest allowed size itself: a segment file is allocated whole.
  const store = await openStore(t, dir, 1024 * 1024);
  store.append([item(0, run(1, [1, 1]))]);
  await store.sync();
  t.same(show(store.partition(0, voters).entries(1, 3, Infinity)), ['1/1:e1t1', '2/1:e2t1'], 'no refused open held the lock');
});

t.test('the entries kept in memory stay within the node budget, and evicted ones are read back from disk', async (t) => {
  const dir = tempDir(t);
  const budget = 64 * 1024;
  const s = await WalStore.open(dir, { cacheBytes: budget });
  t.teardown(() => s.close());
  const body = (p: number, i: number): string => `p${p}e${i}`.padEnd(4096, '.');
  for (let round = 0; round < 8; round++) {
    s.append([0, 1, 2, 3].map((p) => item(p, [entry(round + 1, 1, body(p, round + 1))])));
    await s.sync();
    t.ok(s.cachedBytes() <= budget, `round ${round}: ${s.cachedBytes()} bytes kept, budget ${budget}`);
  }
  t.ok(s.cachedBytes() > budget / 2, 'the budget is used, not emptied');
  for (const p of [0, 1, 2, 3]) {
    const got = s.partition(p, voters).entries(1, 9, Infinity);
    t.same(got.map((e) => Buffer.from(e.data).toString()), Array.from({ length: 8 }, (_, i) => body(p, i + 1)), `partition ${p}: every entry, from memory or from disk`);
  }
});
