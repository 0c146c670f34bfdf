// A second process started on the data folder of a running node (`npm run node -- n1` with --rejoin
// in the wrong terminal, a unit started twice, a restore procedure run against the live node) stops
// at the folder's LOCK and changes nothing in it. --rejoin used to write cluster.json's catchingUp
// before the LOCK was taken: the running node, at its next restart, withheld its votes until it had
// caught up, and two nodes so marked leave no majority to elect a leader.
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { MomServer } from '../../src/server.js';
import { threeNodeConfigs, until } from './net-helpers.js';
import { describeNodes } from './node-view.js';

const root = mkdtempSync(join(tmpdir(), 'mom-in-use-'));
t.teardown(() => rmSync(root, { recursive: true, force: true }));
const MAIN = join(import.meta.dirname, '..', '..', 'src', 'main.ts');

t.test('a second start with --rejoin on the folder of a running node stops at the LOCK and leaves cluster.json as it was', async (t) => {
  const cfgs = await threeNodeConfigs(root, 2);
  const nodes = await Promise.all(cfgs.map((c) => MomServer.start(c, { tickMs: 20 })));
  t.teardown(() => Promise.all(nodes.map((n) => n.close())));
  await until(() => nodes.every((n) => n.status().every((s) => s.leader !== null)), 'leaders everywhere', 2000, () => describeNodes(nodes));
  const file = join(cfgs[0]!.dataDir, 'cluster.json');
  await until(() => !readFileSync(file, 'utf8').includes('catchingUp'), 'n1 to have caught up', 2000, () => describeNodes(nodes));
  const before = readFileSync(file, 'utf8');

  // The same settings as the running n1 (threeNodeConfigs' secrets), another port, and --rejoin.
  const c = cfgs[0]!;
  const peers = c.peers.map((p) => `${p.id}=${p.url}`).join(',');
  const second = await new Promise<{ code: number | null; err: string }>((resolve) => {
    const child = spawn(process.execPath, ['--import', 'tsx', MAIN, '--node-id', 'n1', '--listen', '127.0.0.1:0', '--peers', peers, '--data-dir', c.dataDir, '--partitions', '2', '--rejoin'], {
      env: { ...process.env, MOM_CLUSTER_SECRET: c.clusterSecret, MOM_JWT_SECRET: c.jwtSecret, MOM_LOG_LEVEL: 'error' },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let err = '';
    child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
    child.on('exit', (code) => resolve({ code, err }));
  });
  t.not(second.code, 0, 'the second process does not start');
  t.match(second.err, /held by process/, 'it names the process that holds the folder');
  t.equal(readFileSync(file, 'utf8'), before, 'cluster.json is as the running node left it');
  t.ok(nodes.every((n) => n.status().every((s) => !n.host.replica(s.partition).raw.votingIsSuspended())), 'the running nodes vote as before');
});
