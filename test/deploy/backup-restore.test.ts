// The backup and restore procedure of docs/operations.md, on three real node processes:
//   back up:  stop the node (SIGTERM), copy its data folder, start it again;
//   restore:  stop it, put the copy in place of its data folder, start it once with --rejoin
//             (MOM_REJOIN=true).
// The restored node is older than the cluster: it may have voted and acknowledged entries since the
// copy. It grants no vote until it caught up from the leaders, then holds everything written after
// the backup as well as before, and later starts need no --rejoin.
import { cpSync, existsSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { Cluster } from '../chaos/cluster.js';
import { call, threeNodes } from './real-nodes.js';

// Real node processes: starting, stopping and catching up take tens of seconds on a loaded machine.
t.setTimeout(300_000);


const identity = (dir: string): { catchingUp?: boolean } => JSON.parse(readFileSync(join(dir, 'cluster.json'), 'utf8')) as { catchingUp?: boolean };

t.test('a node backed up, then restored from its backup with --rejoin, catches up and keeps everything', async (t) => {
  const cluster = await threeNodes(t, 'backup');
  t.ok(await Cluster.until(() => cluster.led(), 60_000), 'every partition has a leader');
  const u = cluster.urls[0]!;
  t.equal((await call(u, 'POST', '/v1/auth/register', { username: 'ops', password: 'ops-password' })).status, 201);
  const auth = { authorization: `Bearer ${(await call(u, 'POST', '/v1/auth/login', { username: 'ops', password: 'ops-password' })).body.accessToken as string}` };
  const queues = ['before-1', 'before-2', 'before-3', 'before-4'];
  const send = async (q: string, body: string): Promise<number> => (await call(cluster.urls[1]!, 'POST', `/v1/queues/${q}/messages`, { body }, { ...auth, 'idempotency-key': `${q}-${body}` })).status;
  for (const q of queues) {
    t.equal((await call(u, 'POST', '/v1/queues', { name: q }, auth)).status, 201);
    t.equal(await send(q, 'a'), 201);
  }
  t.ok(await Cluster.until(() => cluster.quiescent(), 30_000));

  // Back up n3: a planned stop, a copy of the folder, a start.
  const backup = join(cluster.runDir, 'n3-backup');
  cluster.terminate(2);
  t.ok(await Cluster.until(async () => !cluster.running(2), 30_000), 'n3 stopped cleanly');
  cpSync(cluster.nodeDir(2), backup, { recursive: true });
  cluster.start(2);
  t.ok(await Cluster.until(() => cluster.quiescent(), 60_000), 'n3 is back');

  // The cluster moves on: more writes, and new terms (n1 stops and comes back, so leaderships move).
  for (const q of queues) t.equal(await send(q, 'b'), 201);
  cluster.terminate(0);
  t.ok(await Cluster.until(async () => !cluster.running(0), 30_000));
  for (const q of queues) t.equal((await call(cluster.urls[1]!, 'POST', `/v1/queues/${q}/messages`, { body: 'c' }, { ...auth, 'idempotency-key': `${q}-c` })).status, 201, `${q}: written by n2 and n3`);
  cluster.start(0);
  t.ok(await Cluster.until(() => cluster.quiescent(), 60_000));

  // Restore n3 from the backup, older than the cluster now, and start it once with --rejoin.
  await cluster.kill(2);
  rmSync(cluster.nodeDir(2), { recursive: true, force: true });
  cpSync(backup, cluster.nodeDir(2), { recursive: true });
  t.notOk(identity(cluster.nodeDir(2)).catchingUp, 'the backup itself is of a member that had caught up');
  cluster.start(2, { MOM_REJOIN: 'true' });
  t.ok(await Cluster.until(async () => existsSync(join(cluster.nodeDir(2), 'cluster.json')) && identity(cluster.nodeDir(2)).catchingUp === true, 30_000), 'with --rejoin, n3 waits to catch up before voting');
  t.ok(await Cluster.until(() => cluster.quiescent(), 60_000), 'n3 caught up with every partition');
  t.ok(await Cluster.until(async () => identity(cluster.nodeDir(2)).catchingUp !== true, 30_000), 'and recorded it');
  for (const q of queues) {
    const r = await call(cluster.urls[2]!, 'GET', `/v1/queues/${q}?consistency=stale`, undefined, auth);
    t.equal((r.body.stats as { visible: number }).visible, 3, `${q}: n3's replica has the messages from before and after its backup`);
  }
  // Later starts, without --rejoin, vote at once.
  await cluster.restart(2);
  t.ok(await Cluster.until(() => cluster.quiescent(), 60_000));
  t.notOk(identity(cluster.nodeDir(2)).catchingUp);
});
