// Restoring the whole cluster from one node's copy (src/cluster/restore.ts; docs/operations.md): with
// two disks lost no majority is left, and a backup of one node was documented as "a backup of the
// cluster" with no way to bring a cluster back from it. Each node's folder is made from the same
// copy under a new cluster secret; the restored cluster must hold every write the copy acknowledged,
// take new ones, and never meet the old cluster.
import { spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { MomServer } from '../../src/server.js';
import { ConfigError, type NodeConfig } from '../../src/cluster/index.js';
import { restoreCluster } from '../../src/cluster/restore.js';
import { threeNodeConfigs, until } from './net-helpers.js';
import { describeNodes } from './node-view.js';

const root = mkdtempSync(join(tmpdir(), 'mom-restore-'));
t.teardown(() => rmSync(root, { recursive: true, force: true }));

const PARTITIONS = 2;
const opts = { tickMs: 20 };
const NEW_SECRET = 'restored-cluster-secret';
const MAIN = join(import.meta.dirname, '..', '..', 'src', 'main.ts');
const QUEUES = ['orders', 'invoices', 'mails', 'jobs'];

async function call(n: MomServer, method: string, path: string, body: unknown, token?: string): Promise<{ status: number; json: Record<string, unknown> }> {
  const res = await fetch(`http://127.0.0.1:${n.cfg.port}${path}`, {
    method,
    headers: { 'content-type': 'application/json', ...(token === undefined ? {} : { authorization: `Bearer ${token}` }) },
    body: JSON.stringify(body),
  });
  const text = await res.text();
  return { status: res.status, json: text === '' ? {} : (JSON.parse(text) as Record<string, unknown>) };
}

async function must(n: MomServer, method: string, path: string, body: unknown, status: number, token?: string): Promise<Record<string, unknown>> {
  const res = await call(n, method, path, body, token);
  if (res.status !== status) throw new Error(`${method} ${path} on ${n.cfg.nodeId}: ${res.status} ${JSON.stringify(res.json)}`);
  return res.json;
}

const leadersEverywhere = (nodes: MomServer[]): Promise<void> =>
  until(() => nodes.every((n) => n.status().every((s) => s.leader !== null)), 'leaders everywhere', 3000, () => describeNodes(nodes));

const catchingUp = (dir: string): boolean => (JSON.parse(readFileSync(join(dir, 'cluster.json'), 'utf8')) as { catchingUp?: boolean }).catchingUp === true;

/** A node's settings in the restored cluster: the same but for its cluster secret. */
const restoredConfig = (c: NodeConfig): NodeConfig => ({ ...c, clusterSecret: NEW_SECRET });

/** `main.ts restore-cluster --from <copy>` with `c`'s settings, as an operator runs it. */
function restoreByCommand(c: NodeConfig, copy: string): { status: number | null; stdout: string; stderr: string } {
  const peers = c.peers.map((p) => `${p.id}=${p.url}`).join(',');
  const args = ['--import', 'tsx', MAIN, 'restore-cluster', '--from', copy, '--node-id', c.nodeId, '--listen', `${c.host}:${c.port}`, '--peers', peers, '--data-dir', c.dataDir, '--partitions', String(c.partitions)];
  const res = spawnSync(process.execPath, args, { encoding: 'utf8', env: { ...process.env, MOM_CLUSTER_SECRET: c.clusterSecret, MOM_JWT_SECRET: c.jwtSecret, MOM_LOG_LEVEL: 'error' } });
  return { status: res.status, stdout: res.stdout, stderr: res.stderr };
}

t.test('two of three disks lost: the cluster restored from the third node\'s copy holds every acknowledged message and takes new ones', async (t) => {
  // Snapshots every 100 entries, nothing kept behind them: the copy's logs are compacted, and the
  // bodies of older messages are entries kept below them (format 4).
  const cfgs = (await threeNodeConfigs(join(root, 'lost'), PARTITIONS)).map((c) => ({ ...c, snapshotEvery: 100, keepBehindSnapshot: 0 }));
  const nodes: (MomServer | null)[] = await Promise.all(cfgs.map((c) => MomServer.start(c, opts)));
  const live = (): MomServer[] => nodes.filter((n): n is MomServer => n !== null);
  t.teardown(() => Promise.all(live().map((n) => n.close())));
  await leadersEverywhere(live());

  const alice = { username: 'alice', password: 'alice-password-1' };
  await must(nodes[0]!, 'POST', '/v1/auth/register', alice, 201);
  const token = (await must(nodes[0]!, 'POST', '/v1/auth/login', alice, 200)).accessToken as string;
  for (const q of QUEUES) {
    await must(nodes[0]!, 'POST', '/v1/queues', { name: q }, 201, token);
    await must(nodes[0]!, 'POST', `/v1/queues/${q}/messages`, { body: `${q} 1` }, 201, token);
  }
  // A backlog across several snapshots: 300 single sends (an entry each) and a batch.
  await must(nodes[0]!, 'POST', '/v1/queues', { name: 'backlog' }, 201, token);
  const backlog = Array.from({ length: 400 }, (_, i) => `backlog ${i}`);
  for (const body of backlog.slice(0, 300)) await must(nodes[(backlog.indexOf(body) % 3)]!, 'POST', '/v1/queues/backlog/messages', { body }, 201, token);
  await must(nodes[0]!, 'POST', '/v1/queues/backlog/messages/batch', { messages: backlog.slice(300).map((body) => ({ body })) }, 201, token);
  const compacted = nodes[2]!.host.replicas.map((r) => r.log.snapshot().meta.index);
  t.ok(compacted.some((i) => i >= 100), `n3's logs are compacted (snapshots at ${compacted.join(', ')})`);
  // n1 goes down; the next sends are acknowledged by n2 and n3 alone.
  await nodes[0]!.close();
  nodes[0] = null;
  for (const q of QUEUES) await must(nodes[1]!, 'POST', `/v1/queues/${q}/messages`, { body: `${q} 2` }, 201, token);
  for (const i of [1, 2]) {
    await nodes[i]!.close();
    nodes[i] = null;
  }

  // The operator's copy of n3's folder, taken while it was stopped; then all three disks are gone.
  const copy = join(root, 'copy-of-n3');
  cpSync(cfgs[2]!.dataDir, copy, { recursive: true });
  for (const c of cfgs) rmSync(c.dataDir, { recursive: true, force: true });
  // Its log kept on another disk, archived as a link: followed.
  renameSync(join(copy, 'wal'), join(root, 'copy-of-n3-wal'));
  symlinkSync(join(root, 'copy-of-n3-wal'), join(copy, 'wal'));
  const copyFiles = readdirSync(copy, { recursive: true }).sort();

  await t.rejects(restoreCluster(cfgs[0]!, copy), { name: 'RestoreRefusedError', message: /new MOM_CLUSTER_SECRET/ }, 'the old cluster secret is refused');
  t.notOk(existsSync(cfgs[0]!.dataDir), 'and nothing was made');

  const restored = cfgs.map(restoredConfig);
  // A copy without the state of a compacted partition (a partial archive) could never start.
  const p = compacted.findIndex((i) => i >= 100);
  const partial = join(root, 'partial-copy');
  cpSync(copy, partial, { recursive: true, dereference: true });
  rmSync(join(partial, 'state', `p${p}.db`));
  await t.rejects(restoreCluster({ ...restored[0]!, dataDir: join(root, 'from-partial') }, partial), { name: 'RestoreRefusedError', message: new RegExp(`partition ${p}'s state holds entries up to 0, its log starts after \\d+, and the image .* is not in the copy`) }, 'a copy without the state of a compacted partition');
  t.same(readdirSync(join(root, 'from-partial')), [], 'leaves the data folder empty');
  const printed = restoreByCommand(restored[2]!, copy);
  t.equal(printed.status, 0, `the command restores n3 (${printed.stderr.trim()})`);
  const fingerprint = /fingerprint is ([0-9a-f]{16})/.exec(printed.stdout)?.[1];
  t.ok(fingerprint, `and prints the copy's fingerprint (${printed.stdout.trim()})`);
  for (const c of restored.slice(0, 2)) {
    const done = await restoreCluster(c, copy);
    t.equal(done.fingerprint, fingerprint, `${c.nodeId} restored from the same copy: the same fingerprint`);
  }
  t.same(readdirSync(copy, { recursive: true }).sort(), copyFiles, 'the copy is left as it was');

  // A node started with the old secret on a restored folder is refused: the old cluster cannot meet it.
  await t.rejects(MomServer.start(cfgs[0]!, opts), ConfigError, 'the old cluster secret cannot start a restored folder');

  for (let i = 0; i < 3; i++) nodes[i] = await MomServer.start(restored[i]!, opts);
  await leadersEverywhere(live());
  // The token signed before the disaster still works (the JWT secret is the same; the user is restored).
  for (const [i, q] of QUEUES.entries()) {
    const via = live()[i % 3]!;
    const got = await must(via, 'POST', `/v1/queues/${q}/receive`, { maxMessages: 10, waitSeconds: 0 }, 200, token);
    const bodies = (got.messages as { body: string }[]).map((m) => m.body).sort();
    t.same(bodies, [`${q} 1`, `${q} 2`], `${q} through ${via.cfg.nodeId}: both acknowledged messages, the second acknowledged without n1`);
  }
  const drained: string[] = [];
  for (let i = 0; i < 100 && drained.length < backlog.length; i++) {
    const got = await must(live()[i % 3]!, 'POST', '/v1/queues/backlog/receive', { maxMessages: 100, waitSeconds: 0 }, 200, token);
    const messages = got.messages as { body: string; receiptHandle: string }[];
    drained.push(...messages.map((m) => m.body));
    if (messages.length > 0) await must(live()[i % 3]!, 'POST', '/v1/queues/backlog/ack', { receiptHandles: messages.map((m) => m.receiptHandle) }, 200, token);
  }
  t.same(drained.sort(), [...backlog].sort(), 'the whole backlog, bodies and all, from logs compacted before the disaster');
  for (const [i, n] of live().entries()) {
    const q = QUEUES[i]!;
    await must(n, 'POST', `/v1/queues/${q}/messages`, { body: `${q} 3` }, 201, token);
    const got = await must(n, 'POST', `/v1/queues/${q}/receive`, { maxMessages: 10, waitSeconds: 0 }, 200, token);
    t.same((got.messages as { body: string }[]).map((m) => m.body), [`${q} 3`], `${n.cfg.nodeId} takes and serves a new message`);
  }

  // n3 is lost again once the restored cluster runs: restoring it from the copy would vote with a log
  // older than the cluster's. Refused while its peers answer; it is rebuilt from them instead.
  await nodes[2]!.close();
  nodes[2] = null;
  await t.rejects(restoreCluster({ ...restored[2]!, dataDir: join(root, 'n3-again') }, copy), { name: 'RestoreRefusedError', message: /n1 and n2 answer as nodes of this cluster/ }, 'a restore while the restored cluster runs');
  t.notOk(existsSync(join(root, 'n3-again')), 'makes nothing');
});

t.test('restore-cluster refuses what it cannot restore safely, and writes nothing then', async (t) => {
  const cfgs = await threeNodeConfigs(join(root, 'refusals'), PARTITIONS);
  const restored = cfgs.map(restoredConfig);
  const target = join(root, 'refusals-target');

  const notANode = join(root, 'not-a-node');
  mkdirSync(notANode);
  await t.rejects(restoreCluster(restored[0]!, notANode), { name: 'RestoreRefusedError', message: /no cluster\.json/ }, 'a folder that is not a node\'s');
  await t.rejects(restoreCluster(restored[0]!, join(root, 'nowhere')), { name: 'RestoreRefusedError', message: /cannot read the copy/ }, 'a copy that is not there');

  // n1 alone: a new folder that has not caught up (its peers never answered), kept running.
  const alone = await MomServer.start(cfgs[0]!, opts);
  let aloneOpen = true;
  t.teardown(() => (aloneOpen ? alone.close() : undefined));
  await t.rejects(restoreCluster(restored[1]!, cfgs[0]!.dataDir), { name: 'RestoreRefusedError', message: /in use by process/ }, 'the folder of a running node');
  await alone.close();
  aloneOpen = false;
  await t.rejects(restoreCluster(restored[1]!, cfgs[0]!.dataDir), { name: 'RestoreRefusedError', message: /had not caught up/ }, 'a folder that had not caught up');
  t.notOk(existsSync(restored[1]!.dataDir), 'nothing was made for those');

  // A folder that caught up: n2 and n3 join n1, and all three vote.
  const three = await Promise.all(cfgs.map((c) => MomServer.start(c, opts)));
  await leadersEverywhere(three);
  await until(() => cfgs.every((c) => !catchingUp(c.dataDir)), 'every node caught up', 3000, () => describeNodes(three));
  await Promise.all(three.map((n) => n.close()));
  const copy = cfgs[2]!.dataDir;
  // n3's log as it was then, and its state after the cluster ran on: a node that went down before
  // its log was synced (it applies while syncing) leaves a state ahead of its log.
  const earlyLog = join(root, 'early-wal');
  cpSync(join(copy, 'wal'), earlyLog, { recursive: true });
  const again = await Promise.all(cfgs.map((c) => MomServer.start(c, opts)));
  await leadersEverywhere(again);
  await must(again[0]!, 'POST', '/v1/auth/register', { username: 'bob', password: 'bob-password-1' }, 201);
  await Promise.all(again.map((n) => n.close()));
  const ahead = join(root, 'state-ahead');
  cpSync(copy, ahead, { recursive: true });
  rmSync(join(ahead, 'wal'), { recursive: true });
  cpSync(earlyLog, join(ahead, 'wal'), { recursive: true });
  await t.rejects(restoreCluster({ ...restored[0]!, dataDir: target }, ahead), { name: 'RestoreRefusedError', message: /state holds entry \d+ .* its log ends at \d+/ }, 'a copy whose state is ahead of its log');
  t.same(readdirSync(target), [], 'and the data folder is left empty');

  // A copy whose log was left out (kept on a disk that was not mounted when the copy was made): its
  // cluster.json says the node took part, its log holds nothing (review of stop 62).
  const noLog = join(root, 'no-log');
  cpSync(copy, noLog, { recursive: true, filter: (src) => !src.startsWith(join(copy, 'wal')) });
  mkdirSync(join(noLog, 'wal'));
  await t.rejects(restoreCluster({ ...restored[0]!, dataDir: target }, noLog), { name: 'RestoreRefusedError', message: /log is empty in every partition/ }, 'a copy whose log is missing');
  t.same(readdirSync(target), [], 'and the data folder is left empty');
  // And one without a partition's state, its log not compacted: rebuilt from the log, its dead-letter
  // outbox would give ids from 0 again (review of stop 62).
  const noState = join(root, 'no-state');
  cpSync(copy, noState, { recursive: true, filter: (src) => !src.endsWith(join('state', 'p0.db')) && !src.includes(join('state', 'p0.db-')) });
  await t.rejects(restoreCluster({ ...restored[0]!, dataDir: target }, noState), { name: 'RestoreRefusedError', message: /partition 0's state \(state\/p0\.db\) is not in the copy/ }, 'a copy without a partition\'s state');
  t.same(readdirSync(target), [], 'and the data folder is left empty');

  // A copy whose cluster.json does not say its secret (older builds; or the key removed).
  const unknownSecret = join(root, 'unknown-secret');
  cpSync(copy, unknownSecret, { recursive: true });
  const identity = JSON.parse(readFileSync(join(unknownSecret, 'cluster.json'), 'utf8')) as Record<string, unknown>;
  delete identity.cluster;
  writeFileSync(join(unknownSecret, 'cluster.json'), JSON.stringify(identity));
  await t.rejects(restoreCluster(cfgs[0]!, unknownSecret), { name: 'RestoreRefusedError', message: /does not say which cluster secret/ }, 'a copy that does not say its secret');

  await t.rejects(restoreCluster({ ...restored[0]!, partitions: PARTITIONS + 1 }, copy), { name: 'RestoreRefusedError', message: /of 2 partitions, not 3/ }, 'another partition count');
  mkdirSync(target, { recursive: true });
  writeFileSync(join(target, 'keep-me'), 'x');
  await t.rejects(restoreCluster({ ...restored[0]!, dataDir: target }, copy), { name: 'RestoreRefusedError', message: /is not empty/ }, 'a data folder that holds anything');
  t.same(readdirSync(target), ['keep-me'], 'which is left as it was');
  await t.rejects(restoreCluster(restoredConfig({ ...cfgs[2]!, dataDir: join(copy, 'inside') }), copy), { name: 'RestoreRefusedError', message: /must be apart/ }, 'a data folder inside the copy');
  await t.rejects(restoreCluster(restoredConfig({ ...cfgs[2]!, dataDir: join(copy, '..restored') }), copy), { name: 'RestoreRefusedError', message: /must be apart/ }, 'even one named ..x');
  t.notOk(existsSync(join(copy, '..restored')), 'and nothing is made in the copy');
  // A data folder that is a link into the copy: copying the copy into itself ran until the disk was full.
  mkdirSync(join(copy, 'zz'));
  symlinkSync(join(copy, 'zz'), join(root, 'link-into-copy'));
  await t.rejects(restoreCluster({ ...restored[0]!, dataDir: join(root, 'link-into-copy') }, copy), { name: 'RestoreRefusedError', message: /must be apart/ }, 'a data folder linked into the copy');
  await t.rejects(restoreCluster({ ...restored[0]!, dataDir: join(root, 'link-into-copy', 'n1') }, copy), { name: 'RestoreRefusedError', message: /must be apart/ }, 'or under such a link');
  rmSync(join(copy, 'zz'), { recursive: true });

  const byCommand = restoreByCommand({ ...restored[0]!, dataDir: target }, copy);
  t.equal(byCommand.status, 2, 'the command exits 2 on a refusal');
  t.match(byCommand.stderr, /^mom: restore refused: .* is not empty/, 'with one line saying why');
});
