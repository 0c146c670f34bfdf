// A node upgraded from the SQLite log (raft-log.db) keeps its log: openNodeLog copies every partition
// into the write-ahead log, exactly, keeps the old file as raft-log.db.imported, and a copy cut short
// by a crash is made again.
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import { RaftLogStore } from '../../../src/store/raft-log/index.js';
import { openNodeLog } from '../../../src/store/wal/index.js';
import { Workload, applyOp, describe, openPartitions, voters } from '../fixtures/raft-log-writer.js';

const PARTITIONS = 3;

/** A data folder holding an older version's raft-log.db after `steps` of a seeded workload; the model too. */
async function legacyFolder(t: Test, steps: number): Promise<{ dataDir: string; want: unknown[] }> {
  const dataDir = mkdtempSync(join(tmpdir(), 'mom-legacy-'));
  t.teardown(() => rmSync(dataDir, { recursive: true, force: true }));
  const w = new Workload(7, { partitions: PARTITIONS, maxData: 200 });
  const old = await RaftLogStore.open(join(dataDir, 'raft-log.db'));
  openPartitions(old, PARTITIONS);
  for (let i = 0; i < steps; i++) applyOp(old, w.next());
  old.close();
  return { dataDir, want: w.models.map((m) => describe(m)) };
}

t.test('every partition of raft-log.db is in the write-ahead log, exactly, and stays there', async (t) => {
  const { dataDir, want } = await legacyFolder(t, 250);
  let store = await openNodeLog(dataDir, PARTITIONS, voters);
  t.same(openPartitions(store, PARTITIONS).map((l) => describe(l)), want, 'the same Storage answers as the old log');
  t.notOk(existsSync(join(dataDir, 'raft-log.db')), 'the old log is no longer in charge');
  t.ok(existsSync(join(dataDir, 'raft-log.db.imported')), 'it is kept, renamed, for the operator');
  store.close();
  store = await openNodeLog(dataDir, PARTITIONS, voters);
  t.same(openPartitions(store, PARTITIONS).map((l) => describe(l)), want, 'and after a reopen');
  for (const log of openPartitions(store, PARTITIONS)) log.verify();
  store.close();
});

t.test('a copy cut short by a crash is thrown away and made again', async (t) => {
  const { dataDir, want } = await legacyFolder(t, 120);
  // What a crash during the copy leaves: a half-built folder beside the old log.
  mkdirSync(join(dataDir, 'wal.importing'));
  writeFileSync(join(dataDir, 'wal.importing', '0000000000000001.wal'), 'half a copy');
  const store = await openNodeLog(dataDir, PARTITIONS, voters);
  t.same(openPartitions(store, PARTITIONS).map((l) => describe(l)), want);
  t.notOk(existsSync(join(dataDir, 'wal.importing')));
  store.close();
});

t.test('a new data folder starts an empty write-ahead log', async (t) => {
  const dataDir = mkdtempSync(join(tmpdir(), 'mom-legacy-'));
  t.teardown(() => rmSync(dataDir, { recursive: true, force: true }));
  const store = await openNodeLog(dataDir, PARTITIONS, voters);
  t.same(openPartitions(store, PARTITIONS).map((l) => l.lastIndex()), [0, 0, 0]);
  t.notOk(existsSync(join(dataDir, 'raft-log.db.imported')));
  store.close();
});

t.test('a copy another process is making is not removed under it: the second start is refused', async (t) => {
  const { dataDir } = await legacyFolder(t, 20);
  // Another process holds wal.importing (its copy in progress; a process of its own, as a second
  // node started on the same folder would be).
  const importing = join(dataDir, 'wal.importing');
  const child = spawn(process.execPath, ['--import', 'tsx', join(import.meta.dirname, 'fixtures', 'hold-log.ts'), importing], { stdio: ['pipe', 'pipe', 'inherit'] });
  t.teardown(() => void child.kill('SIGKILL'));
  await new Promise<void>((resolve) => child.stdout!.on('data', (d: Buffer) => String(d).includes('ready') && resolve()));
  await t.rejects(openNodeLog(dataDir, PARTITIONS, voters), /being imported by process/);
  t.ok(existsSync(join(importing, 'LOCK')), 'its copy is still there');
});
