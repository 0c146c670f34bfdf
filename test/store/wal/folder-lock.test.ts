// The log's folder is held with an flock, beside its LOCK file. The LOCK's pid alone let two
// processes share one log, each writing its own records into it:
// - two containers on one volume, each node its container's process 1: each read the other's LOCK
//   as one this process had left before a restart, so stale, and took the log;
// - two processes that both found a LOCK stale could both remove it and create their own.
// The kernel's lock is one per folder whatever the pids say, and goes with its process.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import { native } from '../../../src/native/native.js';
import { LogInUseError, WalStore, logHolder } from '../../../src/store/wal/index.js';
import { openStore, tempDir } from './wal-helpers.js';

const FIXTURE = join(import.meta.dirname, 'fixtures', 'hold-log.ts');

/** A process of its own holding the log in `dir`, killed on teardown. */
async function holder(t: Test, dir: string): Promise<ChildProcess> {
  const child = spawn(process.execPath, ['--import', 'tsx', FIXTURE, dir], { stdio: ['pipe', 'pipe', 'inherit'] });
  t.teardown(() => {
    child.kill('SIGKILL');
  });
  await new Promise<void>((resolve, reject) => {
    child.stdout!.on('data', (d: Buffer) => {
      if (d.toString().includes('ready')) resolve();
    });
    child.on('exit', (code) => reject(new Error(`the holding process exited with ${code}`)));
  });
  return child;
}

const notBuilt = native?.lockFile === undefined ? 'the native addon is not built: npm rebuild (npm ci builds it)' : false;

t.test('a process holding the folder holds the log, whatever its LOCK says', { skip: notBuilt }, async (t) => {
  const dir = tempDir(t);
  (await openStore(t, dir)).close();
  const child = await holder(t, dir);
  t.equal(logHolder(dir), `process ${child.pid}`, 'its LOCK names it');

  // Another pid namespace: the LOCK names a process that has this process's pid there.
  writeFileSync(join(dir, 'LOCK'), `${process.pid}\n`);
  await t.rejects(WalStore.open(dir), { name: LogInUseError.name, message: `the write-ahead log in ${dir} is held by process ${process.pid} (its folder is locked)` });
  t.equal(logHolder(dir), `process ${process.pid}`, 'a restore is refused too');

  // Another process found the LOCK stale and removed it.
  rmSync(join(dir, 'LOCK'));
  await t.rejects(WalStore.open(dir), { name: LogInUseError.name, message: /is held by another process \(its folder is locked\)$/ });
  t.equal(logHolder(dir), 'another process');
  t.notOk(existsSync(join(dir, 'LOCK')), 'the refused opens left no LOCK of theirs');

  // Killed: the kernel lets the folder go with it, and its LOCK (this process's pid) is stale.
  writeFileSync(join(dir, 'LOCK'), `${process.pid}\n`);
  const gone = new Promise((resolve) => child.once('exit', resolve));
  child.kill('SIGKILL');
  await gone;
  t.equal(logHolder(dir), null, 'free once it is gone');
  const s = await openStore(t, dir);
  t.equal(logHolder(dir), `process ${process.pid}`);
  s.close();
  t.equal(logHolder(dir), null, 'and free again once closed');
});
