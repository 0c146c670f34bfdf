// Only an flock answer that says the file system has none lets the LOCK file decide alone. Every
// errno but EWOULDBLOCK was taken so: one that says nothing of the file system (ENOMEM: the kernel's
// lock record, allocated before any conflict is checked) let a second process take a log whose folder
// another process held, where the LOCK's pid is no help (two containers on one volume, each node its
// namespace's process 1; review of 2026-12-07).
import { spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { constants } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { native } from '../../../src/native/native.js';
import { openStore, tempDir } from './wal-helpers.js';

type Wal = typeof import('../../../src/store/wal/index.js');
const FIXTURE = join(import.meta.dirname, 'fixtures', 'hold-log.ts');
const notBuilt = native?.lockFile === undefined ? 'the native addon is not built' : false;

t.test('an flock that fails with ENOMEM while another process holds the folder does not let the log be opened', { skip: notBuilt }, async (t) => {
  const dir = tempDir(t);
  (await openStore(t, dir)).close();
  const child = spawn(process.execPath, ['--import', 'tsx', FIXTURE, dir], { stdio: ['pipe', 'pipe', 'inherit'] });
  t.teardown(() => void child.kill('SIGKILL'));
  await new Promise<void>((resolve) => child.stdout!.on('data', (d: Buffer) => String(d).includes('ready') && resolve()));
  // The namespace case: the LOCK names a pid that is this process's here.
  writeFileSync(join(dir, 'LOCK'), `${process.pid}\n`);
  const wal = await t.mockImport<Wal>('../../../src/store/wal/index.js', {
    '../../../src/native/native.ts': { native: { ...native!, lockFile: () => constants.errno.ENOMEM }, nativeMissing: null },
  });
  let opened: { close(): void } | null = null;
  try {
    opened = await wal.WalStore.open(dir);
  } catch (err) {
    t.pass(`refused: ${(err as Error).message}`);
  }
  t.equal(opened, null, 'the log, held by another process, was not opened a second time');
  opened?.close();
});

t.test('a file system without flock (ENOLCK) leaves the LOCK to decide alone', { skip: notBuilt }, async (t) => {
  const dir = tempDir(t);
  const wal = await t.mockImport<Wal>('../../../src/store/wal/index.js', {
    '../../../src/native/native.ts': { native: { ...native!, lockFile: () => constants.errno.ENOLCK }, nativeMissing: null },
  });
  const first = await wal.WalStore.open(dir);
  t.teardown(() => first.close());
  t.equal(first.folderLocked, false, 'opened with the LOCK alone, and it says so (the node warns)');
  // The LOCK still refuses a second holder: this process's own store here.
  await t.rejects(wal.WalStore.open(dir), /already open in this process/);
});

t.test('a log opened with the addon holds its folder', { skip: notBuilt }, async (t) => {
  const dir = tempDir(t);
  const store = await openStore(t, dir);
  t.equal(store.folderLocked, true);
});
