// The log's folder is held with an flock, beside its LOCK file. The LOCK's pid alone let two
// processes share one log, each writing its own records into it:
// - two containers on one volume, each node its container's process 1: each read the other's LOCK
//   as one this process had left before a restart, so stale, and took the log;
// - two processes that both found a LOCK stale could both remove it and create their own.
// The kernel's lock is one per folder whatever the pids say, and goes with its process.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import { native } from '../../../src/native/native.js';
import { LogInUseError, WalStore, logHolder } from '../../../src/store/wal/index.js';
import { needTool, skipForTool } from '../../tools.js';
import { openStore, tempDir } from './wal-helpers.js';

const FIXTURE = join(import.meta.dirname, 'fixtures', 'hold-log.ts');

/** What a process opening the log in `dir` came to: holding it (its pid where it runs), or its exit. */
type Held = { child: ChildProcess; pid: number } | { code: number | null; err: string };

/**
 * A process of its own opening the log in `dir` (behind `prefix`, a command that runs it), killed
 * on teardown.
 */
async function open(t: Test, dir: string, prefix: string[] = []): Promise<Held> {
  const argv = [...prefix, process.execPath, '--import', 'tsx', FIXTURE, dir];
  const child = spawn(argv[0]!, argv.slice(1), { stdio: ['pipe', 'pipe', 'pipe'] });
  t.teardown(() => {
    child.kill('SIGKILL');
  });
  let err = '';
  child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  return new Promise<Held>((resolve) => {
    child.stdout!.on('data', (d: Buffer) => {
      const m = /ready (\d+)/.exec(d.toString());
      if (m !== null) resolve({ child, pid: Number(m[1]) });
    });
    child.on('exit', (code) => resolve({ code, err }));
  });
}

/** A process holding the log in `dir`, or the test fails. */
async function holder(t: Test, dir: string, prefix: string[] = []): Promise<ChildProcess> {
  const held = await open(t, dir, prefix);
  if (!('child' in held)) throw new Error(`the holding process exited with ${held.code}: ${held.err}`);
  return held.child;
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

t.test('two containers on one volume, each node its namespace\'s process 1: the second is refused', { skip: notBuilt }, async (t) => {
  const unshare = needTool(t, 'unshare');
  if (unshare === null) return;
  // A pid namespace of its own for each (and a user namespace, for a user without root).
  const container = [unshare, '--user', '--map-root-user', '--pid', '--fork', '--kill-child'];
  const probe = spawnSync(unshare, [...container.slice(1), 'true']);
  if (probe.status !== 0) {
    skipForTool(t, 'unshare', `unshare cannot make namespaces here (${probe.stderr.toString().trim()})`);
    return;
  }
  const dir = tempDir(t);
  (await openStore(t, dir)).close();
  const first = await open(t, dir, container);
  t.ok('child' in first && first.pid === 1, 'the first holds the log as its namespace\'s process 1');
  t.equal(readFileSync(join(dir, 'LOCK'), 'utf8'), '1\n', 'its LOCK names process 1');
  const second = await open(t, dir, container);
  t.notOk('child' in second, 'the second, process 1 too, does not take the log');
  t.match('err' in second ? second.err : '', `LogInUseError: the write-ahead log in ${dir} is held by process 1 (its folder is locked)`);
});
