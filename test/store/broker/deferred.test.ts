// Deferred commits (BrokerStateMachine.apply with `defer`, as a node host applies): batches join one
// open transaction until commit(). What they applied is read here at once and reaches the database
// file only at a commit; durable(), a snapshot and close() commit first; a crash loses only the open
// group, which the log replays; a command that breaks the code rolls the group back, and the group is
// applied again, to the same state and answers as a replica that committed every batch; a commit
// that fails stops every later apply.
import { spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import Database from 'better-sqlite3';
import t from 'tap';
import { BrokerStateMachine, FORMAT, FormatTooNewError, stateHash, type ApplyEntry, type Command } from '../../../src/store/broker/index.js';
import { send, TestStore } from './helpers.js';
import { ordersStore, queueStats, stats } from './unit-kit.js';

/** The next `commands` as log entries of `s`, one each. */
function next(s: TestStore, ...commands: Command[]): ApplyEntry[] {
  return commands.map((command) => ({ index: ++s.index, term: 1, kind: 0, data: s.encode({ time: s.time, actor: 'alice', command }) }));
}

/** The applied index a second connection reads from the database file: what is committed. */
function committedIndex(s: TestStore): number {
  const other = new Database(join(s.dir, 'state.db'), { readonly: true, fileMustExist: true });
  try {
    return (other.prepare("select value from meta where key = 'applied_index'").get() as { value: number }).value;
  } finally {
    other.close();
  }
}

t.test('deferred batches are read here at once, and are in the file only once committed', async (t) => {
  const s = await ordersStore(t);
  const before = s.index;
  t.equal(committedIndex(s), before);
  s.sm.apply(next(s, send('orders', 'a'), send('orders', 'b')), { defer: true });
  s.sm.apply(next(s, send('orders', 'c')), { defer: true });
  t.ok(s.sm.uncommitted());
  t.equal(s.sm.applied().index, s.index, 'this connection reads what the group applied');
  t.strictSame(queueStats(s, 'orders'), stats(3, 0, 0, 0, 0));
  t.equal(committedIndex(s), before, 'the file does not hold it yet');
  s.sm.commit();
  t.notOk(s.sm.uncommitted());
  t.equal(committedIndex(s), s.index, 'committed');

  s.sm.apply(next(s, send('orders', 'd')), { defer: true });
  await s.sm.durable();
  t.equal(committedIndex(s), s.index, 'durable() commits first');

  s.sm.apply(next(s, send('orders', 'e')), { defer: true });
  s.sm.apply(next(s, send('orders', 'f')));
  t.notOk(s.sm.uncommitted(), 'a batch without defer commits the group with it');
  t.equal(committedIndex(s), s.index);

  s.sm.apply(next(s, send('orders', 'g')), { defer: true });
  const at = s.index;
  await s.close(false);
  const reopened = await TestStore.open(0, s.dir);
  t.teardown(() => reopened.close());
  t.equal(reopened.sm.applied().index, at, 'close() commits');
});

t.test('a crash loses the open group only, and the log replays it to the same state', async (t) => {
  const s = await ordersStore(t);
  const committed = next(s, send('orders', 'a'), send('orders', 'b'));
  s.sm.apply(committed, { defer: true });
  s.sm.commit();
  const open = next(s, send('orders', 'c'), send('orders', 'd'));
  s.sm.apply(open, { defer: true });
  // What a crash leaves on disk now: the files as they are, the group's transaction never committed.
  const crashed = join(s.dir, 'crashed');
  mkdirSync(crashed);
  for (const f of ['state.db', 'state.db-wal']) if (existsSync(join(s.dir, f))) copyFileSync(join(s.dir, f), join(crashed, f));
  const after = await TestStore.open(0, crashed);
  t.teardown(() => after.close());
  t.equal(after.sm.applied().index, committed[committed.length - 1]!.index, 'the state is back at the last commit');
  for (const [i, data] of s.entries) after.entries.set(i, data);
  after.sm.apply([...committed, ...open]);
  t.equal(stateHash(after.sm.sqlite), stateHash(s.sm.sqlite), 'the replay of the log gives the state the group held');
});

t.test('a command that breaks the code in a group: the group applies again, and the state and answers are those of committing every batch', async (t) => {
  const a = await ordersStore(t);
  const b = await ordersStore(t);
  // Passes the envelope's shape check, then breaks apply (no messages array).
  const broken = { type: 'queue.send', name: 'orders', messages: null } as unknown as Command;
  const batches = (s: TestStore): ApplyEntry[][] => [next(s, send('orders', 'a'), send('orders', 'b')), next(s, send('orders', 'c')), next(s, send('orders', 'd'), broken, send('orders', 'e'))];
  const deferred = batches(a).map((batch) => a.sm.apply(batch, { defer: true }));
  const plain = batches(b).map((batch) => b.sm.apply(batch));
  t.strictSame(deferred, plain, 'the same answers');
  t.match(deferred[2], [{ result: { ok: true } }, { result: { ok: false, code: 'validation_failed', detail: 'malformed command' } }, { result: { ok: true } }]);
  t.strictSame(queueStats(a, 'orders'), stats(5, 0, 0, 0, 0), 'every other send applied once');
  t.equal(stateHash(a.sm.sqlite), stateHash(b.sm.sqlite), 'byte-identical state');
  t.equal(committedIndex(a), a.index, 'the group went in with the failing batch');
  t.notOk(a.sm.uncommitted());
});

t.test('a snapshot taken while a group is open holds the group', async (t) => {
  const s = await ordersStore(t);
  s.sm.apply(next(s, send('orders', 'a'), send('orders', 'b')), { defer: true });
  const image = join(s.dir, 'image.db');
  const copying = s.sm.snapshotTo(image);
  // Applied while the copy runs: committed at once, not deferred (the copy reads committed pages).
  s.sm.apply(next(s, send('orders', 'c')), { defer: true });
  t.notOk(s.sm.uncommitted(), 'no group while a copy runs');
  const at = await copying;
  t.ok(at.index >= s.index - 1, 'the image holds the group');
  const copy = await BrokerStateMachine.open(image, 0);
  t.teardown(() => copy.close());
  t.equal(copy.applied().index, at.index);
});

t.test('a commit that fails leaves the state at its last commit, and every later apply throws (the node stops and replays)', async (t) => {
  // A file size limit makes SQLite's commit fail with an I/O error (test/store/broker/fixtures/commit-fail.ts).
  const dir = join(mkdtempSync(join(tmpdir(), 'mom-commit-fail-')), 'state');
  t.teardown(() => rmSync(dirname(dir), { recursive: true, force: true }));
  const fixture = join(import.meta.dirname, 'fixtures', 'commit-fail.ts');
  const run = spawnSync('bash', ['-c', `ulimit -f 2048 && exec "${process.execPath}" --import tsx "${fixture}" "${dir}" 2048`], { encoding: 'utf8' });
  t.equal(run.status, 0, run.stderr);
  const out = JSON.parse(run.stdout) as Record<string, unknown>;
  t.equal(out.applied, (out.committed as number) + 20, 'the group applied 20 entries');
  t.match(out.durable, /I\/O error/, 'durable() throws the commit\'s error');
  t.match(out.durableAgain, /I\/O error/, 'and so does every later durable(): the log lets nothing go on a state that lost what it answered');
  t.match(out.failure, /I\/O error/);
  t.equal(out.after, out.committed, 'the state is back at its last commit, and says so');
  t.equal(out.uncommitted, false);
  t.match(out.next, /I\/O error/, 'the next apply throws it too: nothing is applied over the gap');
  t.equal(out.close, 'ok', 'close() does not throw again');
});

t.test('an apply that fails in a group (a storage error) leaves the state behind answered entries: durable() and every later apply throw', async (t) => {
  // The group grows until SQLite's page cache spills past a file size limit: the apply fails, not
  // the commit (test/store/broker/fixtures/apply-fail.ts). Found by a review (2026-12-07).
  const dir = join(mkdtempSync(join(tmpdir(), 'mom-apply-fail-')), 'state');
  t.teardown(() => rmSync(dirname(dir), { recursive: true, force: true }));
  const fixture = join(import.meta.dirname, 'fixtures', 'apply-fail.ts');
  const run = spawnSync('bash', ['-c', `ulimit -f 2048 && exec "${process.execPath}" --import tsx "${fixture}" "${dir}" 2048`], { encoding: 'utf8' });
  t.equal(run.status, 0, run.stderr);
  const out = JSON.parse(run.stdout) as Record<string, unknown>;
  t.match(out.apply, /I\/O error/, 'an apply in the group failed');
  t.ok((out.answered as number) > (out.committed as number), 'after entries of the group were answered');
  t.equal(out.after, out.committed, 'the state is back at its last commit');
  t.match(out.failure, /I\/O error/, 'and says it failed');
  t.match(out.durable, /I\/O error/, 'durable() throws: the log lets nothing go on a state that lost what it answered');
  t.match(out.next, /I\/O error/, 'the next apply throws too');
  t.equal(out.close, 'ok');
});

t.test('an entry in a format this build cannot read, in a group: the group\'s earlier entries are committed, and the apply throws', async (t) => {
  const s = await ordersStore(t);
  const first = next(s, send('orders', 'a'));
  s.sm.apply(first, { defer: true });
  s.sm.apply(next(s, send('orders', 'b')), { defer: true });
  const before = s.index;
  const tooNew = next(s, send('orders', 'c'), { type: 'format.raise', format: FORMAT + 1 });
  t.throws(() => s.sm.apply(tooNew, { defer: true }), FormatTooNewError);
  t.equal(s.sm.applied().index, before, 'the partition halts after the entries before the batch');
  t.equal(committedIndex(s), before, 'which are committed');
  t.strictSame(queueStats(s, 'orders'), stats(2, 0, 0, 0, 0));
});
