// Rebuilding a lost node from its peers (docs/operations.md): a node whose data folder is gone starts
// empty and must not vote as if it remembered its old terms and votes. It grants no vote and never
// campaigns until every partition has caught up from a leader that the other two elected; then it is
// a full member again, with every acknowledged message, and says so in its cluster.json.
// Three real node processes; n3's folder is deleted while n2 is down too, so that for a while only
// n1 and the empty n3 run: partitions n1 does not lead stay leaderless rather than trust n3's empty
// log, and come back when n2 does.
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { Cluster, sleep, type PartitionView } from '../chaos/cluster.js';
import { call, threeNodes } from './real-nodes.js';

// Real node processes: starting, stopping and catching up take tens of seconds on a loaded machine.
t.setTimeout(300_000);

const PARTITIONS = 4;


const catchingUp = (dir: string): boolean => {
  const file = join(dir, 'cluster.json');
  return existsSync(file) && (JSON.parse(readFileSync(file, 'utf8')) as { catchingUp?: boolean }).catchingUp === true;
};

t.test('a node rebuilt from its peers after losing its disk votes only once caught up, and has every message', async (t) => {
  const cluster = await threeNodes(t, 'rebuild');
  t.ok(await Cluster.until(() => cluster.led(), 60_000), 'every partition has a leader');
  t.ok(await Cluster.until(async () => ![0, 1, 2].some((i) => catchingUp(cluster.nodeDir(i))), 30_000), 'a new cluster votes at once: every member was empty');
  const [u1] = cluster.urls as [string];
  t.equal((await call(u1, 'POST', '/v1/auth/register', { username: 'keeper', password: 'keeper-password' })).status, 201);
  const token = (await call(u1, 'POST', '/v1/auth/login', { username: 'keeper', password: 'keeper-password' })).body.accessToken as string;
  const auth = { authorization: `Bearer ${token}` };
  const queues = ['alpha', 'beta', 'gamma', 'delta', 'epsilon', 'zeta'];
  for (const q of queues) {
    t.equal((await call(u1, 'POST', '/v1/queues', { name: q }, auth)).status, 201);
    for (let k = 0; k < 5; k++) t.equal((await call(cluster.urls[k % 3]!, 'POST', `/v1/queues/${q}/messages`, { body: `${q}-${k}` }, auth)).status, 201);
  }
  t.ok(await Cluster.until(() => cluster.quiescent(), 30_000), 'all three applied everything');

  // n3 loses its disk; n2 is down too.
  await cluster.kill(2);
  rmSync(cluster.nodeDir(2), { recursive: true, force: true });
  await cluster.kill(1);
  cluster.start(2);
  const views = async (): Promise<(PartitionView[] | null)[]> => Promise.all([cluster.view(0), cluster.view(2)]);
  t.ok(await Cluster.until(async () => (await views()).every((v) => v !== null), 30_000), 'n1 and the empty n3 answer');
  t.ok(catchingUp(cluster.nodeDir(2)), 'n3 knows its folder is new: it waits to catch up before voting');
  // n1 alone cannot win a partition without n3's vote, and n3 may not campaign. What is checked is
  // that something never happens, so it takes a window: give elections time to happen if they
  // could (4 s, many election timeouts), looking all along, not only at its end. A slow machine
  // fits fewer elections into it: the test then checks less, it never fails wrongly.
  const ledByN3: string[] = [];
  const windowEnd = Date.now() + 4_000;
  while (Date.now() < windowEnd) {
    const seen = await views();
    seen.forEach((v, k) => v?.forEach((p) => p.leader === 'n3' && ledByN3.push(`${k === 0 ? 'n1' : 'n3'} saw n3 lead partition ${p.partition}`)));
    await sleep(100);
  }
  t.same(ledByN3, [], 'n3 led nothing at any moment of the window');
  const [v1, v3] = await views();
  for (let p = 0; p < PARTITIONS; p++) {
    t.not(v1![p]!.leader, 'n3', `partition ${p}: n3 never leads while catching up`);
    t.not(v3![p]!.leader, 'n3');
    if (v1![p]!.leader === null) t.equal(v1![p]!.role === 'leader', false);
  }
  const led = v1!.filter((p) => p.leader === 'n1').length;
  t.comment(`with n2 down and n3 empty: n1 leads ${led} of ${PARTITIONS} partitions; the others wait for n2`);

  cluster.start(1);
  t.ok(await Cluster.until(() => cluster.led(), 60_000), 'with n2 back, every partition has a leader');
  t.ok(await Cluster.until(() => cluster.quiescent(), 60_000), 'n3 caught up with every partition');
  t.ok(await Cluster.until(async () => !catchingUp(cluster.nodeDir(2)), 30_000), 'n3 recorded that it caught up: it votes again');
  for (const q of queues) {
    const r = await call(cluster.urls[2]!, 'GET', `/v1/queues/${q}?consistency=stale`, undefined, auth);
    t.equal((r.body.stats as { visible: number }).visible, 5, `n3's own replica has the 5 messages of ${q}`);
  }

  // A full member again: it may lead. Stop n1; n2 and n3 carry on.
  await cluster.kill(0);
  t.ok(await Cluster.until(() => cluster.led(), 60_000), 'n2 and the rebuilt n3 elect leaders for every partition');
  const sent = await call(cluster.urls[2]!, 'POST', `/v1/queues/alpha/messages`, { body: 'after' }, { ...auth, 'idempotency-key': 'rebuild-after' });
  t.equal(sent.status, 201, 'writes commit on n2 and the rebuilt n3');
});
