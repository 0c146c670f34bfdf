// RaftLogStore: the per-partition views answer exactly like MemoryStorage, partitions are independent,
// a persist() batch is one transaction, state survives a reopen, invariants are enforced, and
// corruption (a row failing its CRC, a hole, a garbage page) is reported as StorageCorruptError.
import { mkdtempSync, openSync, readFileSync, rmSync, statSync, writeSync, closeSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Kysely, Migrator, SqliteDialect } from 'kysely';
import t, { type Test } from 'tap';
import {
  CompactedError,
  EntryKind,
  InvariantError,
  MemoryStorage,
  EntryUnavailableError,
  emptyHardState,
  nodeId,
  type Entry,
  type HardState,
} from '../../../src/raft/index.js';
import {
  RaftLogStore,
  StorageCorruptError,
  raftLogMigrationProvider,
  type PersistItem,
} from '../../../src/store/raft-log/index.js';
import { seededRandom } from '../../raft/helpers.js';
import { Workload, applyOp, describe, openPartitions, voters } from '../fixtures/raft-log-writer.js';

// A raw connection for tampering with closed files (better-sqlite3 ships no types).
interface RawDb {
  prepare(sql: string): { run(...p: unknown[]): unknown; get(...p: unknown[]): unknown; all(...p: unknown[]): unknown[] };
  close(): void;
}
const RawSqlite = createRequire(import.meta.url)('better-sqlite3') as new (path: string) => RawDb;

function tempDb(t: Test, name = 'raft-log.db'): string {
  const dir = mkdtempSync(join(tmpdir(), 'mom-raft-log-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return join(dir, 'nested', name);
}

/** Opens a store that the test closes on teardown (closing twice is harmless). */
async function openStore(t: Test, path: string): Promise<RaftLogStore> {
  const s = await RaftLogStore.open(path);
  t.teardown(() => s.close());
  return s;
}

const text = (s: string): Uint8Array => new TextEncoder().encode(s);
const entry = (index: number, term: number, data = `e${index}t${term}`): Entry => ({
  index,
  term,
  kind: EntryKind.Normal,
  data: text(data),
});
const run = (first: number, terms: number[]): Entry[] => terms.map((term, i) => entry(first + i, term));
const item = (partition: number, entries: Entry[], hardState: HardState | null = null): PersistItem => ({
  partition,
  hardState,
  entries,
  snapshot: null,
});
const show = (es: Entry[]): string[] => es.map((e) => `${e.index}/${e.term}:${Buffer.from(e.data).toString()}`);
const hs = (term: number, commit: number, vote: string | null = null): HardState => ({
  term,
  vote: vote === null ? null : nodeId(vote),
  commit,
});

t.test('a new partition answers like a new MemoryStorage', async (t) => {
  const store = await openStore(t, tempDb(t));
  const log = store.partition(0, voters);
  t.same(describe(log), describe(new MemoryStorage(voters)));
  t.same(log.initialState(), { hardState: emptyHardState, voters });
  t.equal(log.snapshotRef(), null);
  t.throws(() => log.term(1), EntryUnavailableError);
  t.same(log.verify(), { partition: 0, firstIndex: 1, lastIndex: 0, entries: 0, kept: 0 });
});

t.test('the views answer like MemoryStorage over seeded random workloads, across reopens', async (t) => {
  for (const seed of [1, 2, 3, 4]) {
    const path = tempDb(t, `seed-${seed}.db`);
    const w = new Workload(seed, { partitions: 3, maxData: 48 });
    let store = await openStore(t, path);
    let logs = openPartitions(store, 3);
    let failed = false;
    for (let step = 1; step <= 200 && !failed; step++) {
      const op = w.next();
      applyOp(store, op);
      if (step % 50 === 0) {
        store.close();
        store = await openStore(t, path);
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
    t.notOk(failed, `seed ${seed}: 200 steps, every Storage answer equal after each`);
    store.close();
  }
});

t.test('entries() caps by bytes but returns at least one entry', async (t) => {
  const store = await openStore(t, tempDb(t));
  const log = store.partition(0, voters);
  store.persist([item(0, [entry(1, 1, 'aaaa'), entry(2, 1, 'bbbb'), entry(3, 1, 'cccc')])], true);
  t.same(show(log.entries(1, 4, 0)), ['1/1:aaaa']);
  t.same(show(log.entries(1, 4, 8)), ['1/1:aaaa', '2/1:bbbb']);
  t.same(show(log.entries(2, 4, Infinity)), ['2/1:bbbb', '3/1:cccc']);
  t.same(log.entries(2, 2, Infinity), []);
  t.throws(() => log.entries(0, 2, 10), CompactedError);
  t.throws(() => log.entries(1, 5, 10), EntryUnavailableError);
  t.type(log.entries(1, 2, 10)[0]!.data.constructor, Uint8Array);
});

t.test('partitions are independent', async (t) => {
  const store = await openStore(t, tempDb(t));
  const [p1, p2] = [store.partition(1, voters), store.partition(2, voters)];
  store.persist([item(1, run(1, [1, 1, 1, 1, 1]), hs(1, 2)), item(2, run(1, [1, 1, 1, 1, 1]), hs(1, 2))], true);
  // p1's new leader truncates at 3; p2 must keep all five entries.
  store.persist([item(1, run(3, [2]), hs(2, 2, 'b'))], true);
  t.same(show(p1.entries(1, 4, Infinity)), ['1/1:e1t1', '2/1:e2t1', '3/2:e3t2']);
  t.equal(p1.lastIndex(), 3);
  t.equal(p2.lastIndex(), 5);
  t.same(show(p2.entries(1, 6, Infinity)), ['1/1:e1t1', '2/1:e2t1', '3/1:e3t1', '4/1:e4t1', '5/1:e5t1']);
  t.same(p2.hardState(), hs(1, 2));
  // Snapshot and compaction of p2 leave p1 alone.
  store.recordSnapshot(2, { index: 2, term: 1, voters }, 'p2-snap');
  t.equal(p2.firstIndex(), 3);
  t.equal(p1.firstIndex(), 1);
  t.equal(p1.snapshotRef(), null);
  t.equal(p2.snapshotRef(), 'p2-snap');
  t.equal(store.verify(1).entries, 3);
  t.equal(store.verify(2).entries, 3);
});

t.test('one persist() is one transaction: a failing partition rolls back the others', async (t) => {
  const path = tempDb(t);
  const store = await openStore(t, path);
  const [p1, p2] = [store.partition(1, voters), store.partition(2, voters)];
  store.persist([item(1, run(1, [1, 1]), hs(1, 1)), item(2, run(1, [1]), hs(1, 1))], true);

  // p1's write is valid and comes first; p2's leaves a gap (index 3 after last index 1).
  const bad = [item(1, run(3, [1, 1]), hs(1, 3)), item(2, run(3, [1]))];
  t.throws(() => store.persist(bad, true), InvariantError);
  t.equal(p1.lastIndex(), 2, 'p1 cache not advanced');
  t.same(p1.hardState(), hs(1, 1));
  t.equal(p2.lastIndex(), 1);
  t.throws(() => p1.entries(3, 4, Infinity), EntryUnavailableError);

  // The same for a failing hard state after valid entries of the same partition.
  t.throws(() => store.persist([item(2, run(2, [1])), item(1, [], hs(0, 1))], true), InvariantError);
  t.equal(p2.lastIndex(), 1);

  store.close();
  const again = await openStore(t, path);
  const q1 = again.partition(1, voters);
  const q2 = again.partition(2, voters);
  t.equal(q1.lastIndex(), 2, 'nothing of the failed batches on disk');
  t.same(q1.hardState(), hs(1, 1));
  t.equal(q2.lastIndex(), 1);
  t.equal(again.verify(1).entries, 2);
});

t.test('a batch may carry the same partition twice, applied in order', async (t) => {
  const store = await openStore(t, tempDb(t));
  const log = store.partition(0, voters);
  store.persist([item(0, run(1, [1, 1, 1])), item(0, run(2, [2]), hs(2, 1, 'a'))], true);
  t.same(show(log.entries(1, 3, Infinity)), ['1/1:e1t1', '2/2:e2t2']);
  t.same(log.hardState(), hs(2, 1, 'a'));
});

t.test('reopen after close: the same hard state, entries and snapshot metadata', async (t) => {
  const path = tempDb(t);
  const store = await openStore(t, path);
  const logs = [0, 1, 7].map((p) => store.partition(p, voters));
  store.persist(
    [item(0, run(1, [1, 1, 2, 2, 3]), hs(3, 4, 'a')), item(1, run(1, [1, 1]), hs(1, 0)), item(7, [], hs(5, 0, 'c'))],
    true,
  );
  // Partition 0: a local snapshot at 3 keeping a tail from 2; partition 1: a snapshot received.
  store.recordSnapshot(0, { index: 3, term: 2, voters }, 'p0/local-3', 1);
  const received = { meta: { index: 9, term: 4, voters: [nodeId('a'), nodeId('b')] }, ref: 'p1/received-9' };
  store.persist([{ partition: 1, hardState: hs(4, 9), entries: [], snapshot: received }], true);
  store.persist([item(1, run(10, [4, 4]), hs(4, 10))], true);
  const before = logs.map((l) => ({ d: describe(l), ref: l.snapshotRef(), hard: l.hardState() }));
  t.equal(logs[0]!.firstIndex(), 2, 'the tail below the snapshot is kept');
  t.equal(logs[0]!.term(1), 1, 'the term of the last compacted entry stays answerable');
  t.same(logs[1]!.initialState().voters, ['a', 'b'], 'voters come from the snapshot once there is one');
  store.close();

  const again = await openStore(t, path);
  const after = [0, 1, 7].map((p) => again.partition(p, voters)).map((l) => ({ d: describe(l), ref: l.snapshotRef(), hard: l.hardState() }));
  t.same(after, before);
  t.same(new TextDecoder().decode(again.partition(1, voters).snapshot().data), 'p1/received-9');
});

t.test('recordSnapshot may keep a tail; compact() later never passes the snapshot', async (t) => {
  const store = await openStore(t, tempDb(t));
  const log = store.partition(0, voters);
  store.persist([item(0, run(1, [1, 1, 2, 2, 2, 3]), hs(3, 5))], true);
  t.throws(() => store.compact(0, 1), InvariantError, 'no snapshot yet: nothing may be compacted');
  store.recordSnapshot(0, { index: 4, term: 2, voters }, 'snap-4', 2);
  t.equal(log.firstIndex(), 3);
  t.equal(log.term(2), 1);
  t.throws(() => log.term(1), CompactedError);
  t.same(show(log.entries(3, 7, Infinity)), ['3/2:e3t2', '4/2:e4t2', '5/2:e5t2', '6/3:e6t3']);
  t.same(log.snapshot().meta, { index: 4, term: 2, voters });
  t.throws(() => store.compact(0, 5), InvariantError, 'past the snapshot');
  store.compact(0, 1);
  t.equal(log.firstIndex(), 3, 'below the first index: a no-op');
  store.compact(0, 4);
  t.equal(log.firstIndex(), 5);
  t.equal(log.term(4), 2);
  t.same(log.verify(), { partition: 0, firstIndex: 5, lastIndex: 6, entries: 2, kept: 0 });
});

t.test('a snapshot that keeps the whole log reopens (regression: chaos run, --snapshot-every 200 under a 1000-entry tail)', async (t) => {
  const path = tempDb(t);
  const store = await openStore(t, path);
  const log = store.partition(0, voters);
  store.persist([item(0, run(1, [1, 1, 1, 1]), hs(1, 4))], true);
  // The host keeps keepBehindSnapshot entries: a snapshot at 3 then compacts to max(0, 3 - 1000) = 0.
  store.recordSnapshot(0, { index: 3, term: 1, voters }, 'early-3', 0);
  t.equal(log.firstIndex(), 1, 'nothing compacted');
  store.close();
  const again = await openStore(t, path);
  const reopened = again.partition(0, voters);
  t.equal(reopened.snapshotRef(), 'early-3', 'the snapshot is there');
  t.equal(reopened.firstIndex(), 1);
  t.same(show(reopened.entries(1, 5, Infinity)), ['1/1:e1t1', '2/1:e2t1', '3/1:e3t1', '4/1:e4t1']);
  t.equal(again.verify(0).entries, 4);
});

t.test('writes a correct node never makes are refused, and leave everything as it was', async (t) => {
  const store = await openStore(t, tempDb(t));
  const log = store.partition(0, voters);
  store.persist([item(0, run(1, [1, 1, 2, 2]), hs(2, 3, 'a'))], true);
  store.recordSnapshot(0, { index: 2, term: 1, voters }, 'snap-2');
  const before = describe(log);
  const bad: [string, () => void][] = [
    ['a gap', () => store.persist([item(0, run(6, [2]))], true)],
    ['an append below the compacted log', () => store.persist([item(0, run(2, [2]))], true)],
    ['truncating a committed entry', () => store.persist([item(0, run(3, [3]))], true)],
    ['entries not contiguous', () => store.persist([item(0, [entry(5, 2), entry(7, 2)])], true)],
    ['a term going down along the log', () => store.persist([item(0, run(5, [1]))], true)],
    ['an unknown entry kind', () => store.persist([item(0, [{ ...entry(5, 2), kind: 9 as EntryKind }])], true)],
    ['the term going back', () => store.persist([item(0, [], hs(1, 3))], true)],
    ['a second vote in a term', () => store.persist([item(0, [], hs(2, 3, 'b'))], true)],
    ['commit going back', () => store.persist([item(0, [], hs(2, 2, 'a'))], true)],
    ['commit past the last index', () => store.persist([item(0, [], hs(2, 5, 'a'))], true)],
    ['an older snapshot received', () => store.persist([{ ...item(0, []), snapshot: { meta: { index: 1, term: 1, voters }, ref: 'x' } }], true)],
    ['a snapshot received behind commit', () => store.persist([{ ...item(0, []), snapshot: { meta: { index: 2, term: 1, voters }, ref: 'x' } }], true)],
    ['a local snapshot of uncommitted entries', () => store.recordSnapshot(0, { index: 4, term: 2, voters }, 'x')],
    ['a local snapshot not newer', () => store.recordSnapshot(0, { index: 2, term: 1, voters }, 'x')],
    ['a local snapshot with the wrong term', () => store.recordSnapshot(0, { index: 3, term: 1, voters }, 'x')],
    ['a local snapshot compacting past itself', () => store.recordSnapshot(0, { index: 3, term: 2, voters }, 'x', 4)],
    ['compacting past the snapshot', () => store.compact(0, 3)],
    ['a partition never opened', () => store.persist([item(5, run(1, [1]))], true)],
  ];
  for (const [what, write] of bad) t.throws(write, InvariantError, what);
  t.same(describe(log), before, 'cache unchanged');
  t.same(log.verify(), { partition: 0, firstIndex: 3, lastIndex: 4, entries: 2, kept: 0 }, 'disk unchanged');
});

t.test('an entry whose bytes changed under its CRC is reported, naming partition and index', async (t) => {
  const path = tempDb(t);
  const store = await openStore(t, path);
  store.partition(3, voters);
  store.persist([item(3, run(1, [1, 1, 1, 1]), hs(1, 2))], true);
  store.close();

  const raw = new RawSqlite(path);
  raw.prepare('update raft_log_entry set data = ? where partition = 3 and idx = 3').run(text('e3t9'));
  raw.close();

  const again = await openStore(t, path);
  const log = again.partition(3, voters);
  t.same(show(log.entries(1, 3, Infinity)), ['1/1:e1t1', '2/1:e2t1'], 'entries before it still read');
  const err = t.throws(() => log.entries(2, 5, Infinity), StorageCorruptError) as StorageCorruptError;
  t.equal(err.partition, 3);
  t.equal(err.index, 3);
  t.match(err.message, /partition 3, index 3/);
  t.throws(() => log.entries(3, 4, 0), StorageCorruptError);
  t.throws(() => again.verify(3), { name: 'StorageCorruptError', partition: 3, index: 3 });
});

t.test('a hole in the log or a damaged hard state refuses the partition; others still open', async (t) => {
  const path = tempDb(t);
  const store = await openStore(t, path);
  for (const p of [1, 2, 3]) store.partition(p, voters);
  store.persist([1, 2, 3].map((p) => item(p, run(1, [1, 1, 1]), hs(1, 1, 'a'))), true);
  store.close();

  const raw = new RawSqlite(path);
  raw.prepare('delete from raft_log_entry where partition = 1 and idx = 2').run();
  raw.prepare("update raft_hard_state set vote = 'b' where partition = 2").run();
  raw.close();

  const again = await openStore(t, path);
  t.throws(() => again.partition(1, voters), { name: 'StorageCorruptError', partition: 1, index: 2 });
  t.throws(() => again.partition(2, voters), { name: 'StorageCorruptError', partition: 2, message: /hard state/ });
  t.equal(again.partition(3, voters).verify().entries, 3);
});

t.test('garbage in a page of the file: open() throws StorageCorruptError', async (t) => {
  const path = tempDb(t);
  const store = await openStore(t, path);
  const ps = [0, 1, 2, 3];
  for (const p of ps) store.partition(p, voters);
  const big = (i: number): Entry => entry(i, 1, `${i}`.padEnd(1024, 'x'));
  for (let b = 0; b < 50; b++) {
    store.persist(ps.map((p) => item(p, Array.from({ length: 4 }, (_, k) => big(b * 4 + k + 1)))), true);
  }
  store.close();
  t.notOk(statSync(path, { throwIfNoEntry: false }) === undefined, 'the database file exists');
  t.equal(statSync(`${path}-wal`, { throwIfNoEntry: false }), undefined, 'close() checkpointed the WAL away');

  const pageSize = readFileSync(path).readUInt16BE(16);
  const pages = statSync(path).size / pageSize;
  t.ok(pages > 100, `${pages} pages of ${pageSize} bytes`);
  const garbage = Buffer.alloc(pageSize);
  const rnd = seededRandom(7);
  for (let i = 0; i < pageSize; i++) garbage[i] = rnd(256);
  const fd = openSync(path, 'r+');
  writeSync(fd, garbage, 0, pageSize, Math.floor(pages / 2) * pageSize);
  closeSync(fd);

  const err = await t.rejects(RaftLogStore.open(path), StorageCorruptError);
  t.match(String((err as unknown as Error).message), /corrupt/);
});

t.test('garbage in the file header: open() throws StorageCorruptError wrapping SQLITE_NOTADB', async (t) => {
  const path = tempDb(t);
  const store = await openStore(t, path);
  store.close();
  const fd = openSync(path, 'r+');
  writeSync(fd, Buffer.alloc(100, 0x5a), 0, 100, 0);
  closeSync(fd);
  try {
    await RaftLogStore.open(path);
    t.fail('open() should have failed');
  } catch (err) {
    t.type(err, StorageCorruptError);
    t.match((err as Error).cause, { code: 'SQLITE_NOTADB' });
  }
});

t.test('one writer: a second open of the same file fails while the first is open', async (t) => {
  const path = tempDb(t);
  const store = await openStore(t, path);
  store.partition(0, voters);
  store.persist([item(0, run(1, [1]))], true);
  await t.rejects(RaftLogStore.open(path), { code: 'SQLITE_BUSY' });
  store.close();
  const again = await openStore(t, path);
  t.equal(again.partition(0, voters).lastIndex(), 1);
});

t.test('migrations run down and up again through Kysely', async (t) => {
  const path = tempDb(t);
  (await RaftLogStore.open(path)).close();
  const db = new Kysely<unknown>({ dialect: new SqliteDialect({ database: new RawSqlite(path) as never }) });
  t.teardown(() => db.destroy());
  const migrator = new Migrator({
    db,
    provider: raftLogMigrationProvider,
    migrationTableName: 'raft_log_migration',
    migrationLockTableName: 'raft_log_migration_lock',
  });
  const tables = async (): Promise<string[]> =>
    (await db.introspection.getTables()).map((x) => x.name).filter((n) => !n.startsWith('raft_log_migration')).sort();
  t.same(await tables(), ['raft_hard_state', 'raft_log_entry', 'raft_log_truncated', 'raft_snapshot']);
  const down = await migrator.migrateDown();
  t.equal(down.error, undefined);
  t.same(await tables(), []);
  const up = await migrator.migrateToLatest();
  t.equal(up.error, undefined);
  t.same(await tables(), ['raft_hard_state', 'raft_log_entry', 'raft_log_truncated', 'raft_snapshot']);
});
