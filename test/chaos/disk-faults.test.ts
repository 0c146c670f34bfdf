// The storage fault layer loses exactly what a power cut loses: a child process writes through the
// preloaded library, is SIGKILLed, and loseUnsynced() must leave each file as it was at its last
// fsync. SQLite in WAL mode with synchronous=NORMAL (the brokers' state databases) loses its commits
// since the last checkpoint; with synchronous=FULL (the Raft log) it loses nothing. The library is
// built with the machine's C compiler: without one each test is skipped (test/tools.ts).
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import t, { type Test } from 'tap';
import { needTool } from '../tools.js';
import { loseUnsynced, runUntilReadyThenKill } from './disk-faults.js';

function folders(t: Test): { root: string; undo: string } {
  const base = mkdtempSync(join(tmpdir(), 'mom-disk-'));
  t.teardown(() => rmSync(base, { recursive: true, force: true }));
  return { root: join(base, 'data'), undo: join(base, 'undo') };
}

t.test('a plain file goes back to its content at its last fsync', async (t) => {
  if (needTool(t, 'cc') === null) return;
  const { root, undo } = folders(t);
  await runUntilReadyThenKill(
    `import { mkdirSync, openSync, writeSync, fsyncSync } from 'node:fs';
     const root = process.env.ROOT; mkdirSync(root, { recursive: true });
     const fd = openSync(root + '/a.bin', 'w');
     writeSync(fd, 'synced part');
     fsyncSync(fd);
     writeSync(fd, Buffer.from('X'), 0, 1, 0);       // overwrites synced bytes
     writeSync(fd, ' and more, never synced', null);   // appends
     const never = openSync(root + '/b.bin', 'w');
     writeSync(never, 'nothing of this was synced');
     const outside = openSync(process.env.ROOT + '/../outside.bin', 'w');
     writeSync(outside, 'not under the root');
     console.log('ready'); setInterval(() => {}, 1000);`,
    root,
    undo,
  );
  t.equal(readFileSync(join(root, 'a.bin'), 'utf8'), 'Xynced part and more, never synced', 'before the cut the page cache has everything');
  const lost = loseUnsynced(root, undo);
  t.equal(readFileSync(join(root, 'a.bin'), 'utf8'), 'synced part');
  t.equal(statSync(join(root, 'b.bin')).size, 0, 'a file never synced keeps its name but loses its content');
  t.equal(readFileSync(join(root, '..', 'outside.bin'), 'utf8'), 'not under the root', 'files outside the root are untouched');
  t.equal(lost.records, 3);
  t.same(lost.files.map((f) => f.file).sort(), ['a.bin', 'b.bin']);
});

const sqliteChild = (sync: 'NORMAL' | 'FULL'): string => `
  import Database from 'better-sqlite3';
  import { mkdirSync } from 'node:fs';
  mkdirSync(process.env.ROOT, { recursive: true });
  const db = new Database(process.env.ROOT + '/s.db');
  db.pragma('journal_mode = WAL');
  db.pragma('synchronous = ${sync}');
  db.exec('CREATE TABLE m (id INTEGER PRIMARY KEY, body TEXT)');
  db.prepare('INSERT INTO m (body) VALUES (?)').run('checkpointed');
  db.pragma('wal_checkpoint(TRUNCATE)');
  const ins = db.prepare('INSERT INTO m (body) VALUES (?)');
  for (let i = 0; i < 100; i++) ins.run('commit ' + i);
  console.log('ready'); setInterval(() => {}, 1000);`;

function rows(root: string): { count: number; integrity: string } {
  const db = new Database(join(root, 's.db'));
  try {
    const count = (db.prepare('SELECT count(*) AS n FROM m').get() as { n: number }).n;
    const integrity = db.pragma('integrity_check', { simple: true }) as string;
    return { count, integrity };
  } finally {
    db.close();
  }
}

t.test('SQLite WAL with synchronous=NORMAL loses the commits since the last checkpoint, and opens intact', async (t) => {
  if (needTool(t, 'cc') === null) return;
  const { root, undo } = folders(t);
  await runUntilReadyThenKill(sqliteChild('NORMAL'), root, undo);
  const lost = loseUnsynced(root, undo);
  t.ok(lost.records > 0, 'the unsynced write-ahead log frames were undone');
  t.same(rows(root), { count: 1, integrity: 'ok' });
});

t.test('SQLite WAL with synchronous=FULL loses nothing that committed', async (t) => {
  if (needTool(t, 'cc') === null) return;
  const { root, undo } = folders(t);
  await runUntilReadyThenKill(sqliteChild('FULL'), root, undo);
  const lost = loseUnsynced(root, undo);
  t.equal(lost.records, 0, 'every commit was synced');
  t.same(rows(root), { count: 101, integrity: 'ok' });
});
