// The nodes' logs: JSON lines (pino), a client's X-Request-Id follows its write to the partition's
// leader when another node forwards it, and no line holds a password, a token or a secret. Three
// real node processes at debug level (the most they ever log), driven with a known password and
// token, then every line of every log is searched for them.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { partitionOf } from '../../src/partition/routing.js';
import { Cluster } from '../chaos/cluster.js';
import { call, threeNodes } from './real-nodes.js';

// Real node processes: starting, stopping and catching up take tens of seconds on a loaded machine.
t.setTimeout(300_000);

const PARTITIONS = 4;
const PASSWORD = 'pw-Zq8-never-in-a-log';


t.test('request ids follow forwarded writes; no password, token or secret is logged', async (t) => {
  const cluster = await threeNodes(t, 'logs', 'debug');
  t.ok(await Cluster.until(() => cluster.led(), 60_000), 'every partition has a leader');
  const [u0, u1, u2] = cluster.urls as [string, string, string];

  t.equal((await call(u0, 'POST', '/v1/auth/register', { username: 'logged', password: PASSWORD })).status, 201);
  t.equal((await call(u1, 'POST', '/v1/auth/login', { username: 'logged', password: 'a-wrong-password-1' })).status, 401, 'a failed login (a password in the body) is logged too');
  const token = (await call(u2, 'POST', '/v1/auth/login', { username: 'logged', password: PASSWORD })).body.accessToken as string;
  const auth = { authorization: `Bearer ${token}` };
  t.equal((await call(u0, 'GET', '/v1/queues/none', undefined, { authorization: `Bearer ${token}x` })).status, 401, 'a bad token is refused (and logged)');

  const queue = 'traced';
  t.equal((await call(u0, 'POST', '/v1/queues', { name: queue }, auth)).status, 201);
  // The leader of the queue's partition as the running nodes agree on it (-1 if they never do).
  const p = partitionOf(queue, PARTITIONS);
  const agreedLeader = async (): Promise<number> => {
    let l = -1;
    await Cluster.until(async () => (l = await cluster.leaderOf(p)) >= 0, 30_000);
    return l;
  };
  // Send through a node that does not lead the partition, so that it forwards. The same leader
  // before and after the send means the write was forwarded to it; if leadership moved meanwhile
  // (an election on a loaded machine), send again under a new id. Bounded: a cluster that never
  // settles fails here instead of hanging.
  let leader = -1;
  let via = -1;
  let traceId = '';
  for (let attempt = 1; attempt <= 10; attempt++) {
    leader = await agreedLeader();
    if (leader < 0) break;
    via = [0, 1, 2].find((i) => i !== leader)!;
    traceId = `trace-${process.pid}-${attempt}`;
    const sent = await call(cluster.urls[via]!, 'POST', `/v1/queues/${queue}/messages`, { body: 'hello' }, { ...auth, 'x-request-id': traceId, 'idempotency-key': `log-test-${attempt}` });
    t.equal(sent.status, 201, `sent through n${via + 1}, which forwards to the leader`);
    if ((await agreedLeader()) === leader) break;
    t.comment(`the partition's leadership moved during attempt ${attempt}: sending again`);
  }
  t.ok(leader >= 0, `the queue's partition is led by n${leader + 1}`);

  // A planned stop flushes each node's log; once a process has exited, its log file is complete.
  for (const i of [0, 1, 2]) cluster.terminate(i);
  t.ok(await Cluster.until(async () => [0, 1, 2].every((i) => !cluster.running(i)), 30_000), 'the nodes stopped');

  const lines = [0, 1, 2].flatMap((i) =>
    readFileSync(join(cluster.runDir, `n${i + 1}.log`), 'utf8')
      .split('\n')
      .filter((l) => l !== '')
      .map((text) => ({ node: i, text })),
  );
  t.ok(lines.length > 20, `${lines.length} lines logged`);
  const notJson = lines.filter((l) => {
    try {
      return typeof JSON.parse(l.text) !== 'object';
    } catch {
      return true;
    }
  });
  t.same(notJson.map((l) => l.text.slice(0, 120)), [], 'every line is a JSON object');

  const atLeader = lines.filter((l) => l.node === leader && l.text.includes(traceId)).map((l) => JSON.parse(l.text) as { msg?: string; forwardedRequestId?: string; reqId?: string });
  t.ok(
    atLeader.some((l) => l.forwardedRequestId === traceId && l.msg === 'forwarded command'),
    `the leader logged the forwarded command under the client's request id (${atLeader.length} lines)`,
  );
  t.ok(
    lines.some((l) => l.node === via && l.text.includes(traceId)),
    'the node that took the request logged it under the same id',
  );

  const secrets: [string, string][] = [
    ['the password', PASSWORD],
    ['the wrong password', 'a-wrong-password-1'],
    ['the token', token],
    ["the token's signature", token.split('.')[2]!],
    ['the cluster secret', 'c'.repeat(32)],
    ['the JWT secret', 'j'.repeat(48)],
  ];
  for (const [what, secret] of secrets) {
    t.same(
      lines.filter((l) => l.text.includes(secret)).map((l) => l.text.slice(0, 160)),
      [],
      `no line holds ${what}`,
    );
  }
  t.same(
    lines.filter((l) => /authorization|bearer /i.test(l.text)).map((l) => l.text.slice(0, 160)),
    [],
    'no line holds an Authorization header',
  );
});
