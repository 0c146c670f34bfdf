// A LOCK names the process that holds the log by its pid. After a power cut or a reboot the LOCK is
// still there, and the pid it names may by then belong to another program (pids start over at each
// boot, and a boot starts much the same services in much the same order): the node took it for
// another node on its folder and refused to start ("held by process N"), and each restart met the
// same LOCK: the node stayed down after the power came back. The LOCK says which boot wrote it
// (LOCK.boot, beside it: a LOCK of more than a pid reads as no pid to the previous build), and one of
// an earlier boot is stale whatever pid it names.
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { WalStore } from '../../../src/store/wal/index.js';
import { openStore, tempDir } from './wal-helpers.js';

const BOOT_ID = '/proc/sys/kernel/random/boot_id';

t.test('a LOCK left in an earlier boot does not hold the log, whatever live process its pid names now', async (t) => {
  if (!existsSync(BOOT_ID)) {
    t.comment('no boot id on this system (not Linux): a LOCK is judged by its pid alone');
    return;
  }
  const dir = tempDir(t);
  (await openStore(t, dir)).close();
  // A live process that is not a node (this test's parent), named by a LOCK of another boot.
  writeFileSync(join(dir, 'LOCK'), `${process.ppid}\n`);
  writeFileSync(join(dir, 'LOCK.boot'), '00000000-0000-0000-0000-000000000000\n');
  const s = await openStore(t, dir);
  t.equal(readFileSync(join(dir, 'LOCK.boot'), 'utf8').trim(), readFileSync(BOOT_ID, 'utf8').trim(), 'the LOCK taken says this boot');
  s.close();
  t.notOk(existsSync(join(dir, 'LOCK.boot')), 'released with the LOCK');
  // A LOCK of this boot naming a live process still holds the log, as does one without LOCK.boot
  // (the previous build's).
  writeFileSync(join(dir, 'LOCK'), `${process.ppid}\n`);
  await t.rejects(WalStore.open(dir), /held by process/);
  writeFileSync(join(dir, 'LOCK.boot'), readFileSync(BOOT_ID, 'utf8'));
  await t.rejects(WalStore.open(dir), /held by process/);
});
