// A long poll does not outlive its user's logout on the node that holds it: logout revokes every
// token of the user at once on the node that answered it (docs/api.md), and a poll begun with one of
// them before is a request of that token. Before, the poll went on (up to its waitSeconds, 20 s):
// it stayed parked in the state and took the next message sent, or kept proposing receives.
import t from 'tap';
import { FORMAT } from '../../src/store/broker/index.js';
import { partitionOf } from '../../src/partition/routing.js';
import { until } from '../cluster/net-helpers.js';
import { call, startCluster, userToken } from './api-helpers.js';

const cluster = await startCluster({ maxIdleMs: 600_000, format: FORMAT });
t.teardown(() => cluster.close());
await until(() => cluster.servers.every((s) => s.status().every((p) => p.format === FORMAT)), `every partition in format ${FORMAT}`);
const [a] = cluster.urls as [string, string, string];
const alice = await userToken(a, 'alice');

function followerOf(name: string): number {
  const p = partitionOf(name, cluster.configs[0]!.partitions);
  return cluster.servers.findIndex((s) => !s.host.replica(p).isLeader());
}

t.test("a poll held when its user logs out on that node takes no message sent after", async (t) => {
  const name = 'after-logout';
  t.equal((await call(a, 'POST', '/v1/queues', { token: alice, body: { name } })).status, 201);
  const node = followerOf(name);
  const url = cluster.urls[node]!;
  const bob = await userToken(url, 'bob');
  t.equal((await call(a, 'PUT', `/v1/queues/${name}/grants/bob`, { token: alice, body: { actions: ['receive'] } })).status, 200);
  const poll = call(url, 'POST', `/v1/queues/${name}/receive`, { token: bob, body: { waitSeconds: 10 } });
  await until(() => cluster.servers[node]!.node.router.waiting() === 1, 'the poll waits');
  t.equal((await call(url, 'POST', '/v1/auth/logout', { token: bob })).status, 204);
  t.equal((await call(url, 'GET', '/v1/auth/me', { token: bob })).status, 401, 'the token is revoked on this node at once');
  t.equal((await call(a, 'POST', `/v1/queues/${name}/messages`, { token: alice, body: { body: 'after bob left' } })).status, 201);
  const res = await poll;
  t.not(res.status, 200, `the poll is not answered with messages: ${JSON.stringify(res.body)}`);
  const got = await call(a, 'POST', `/v1/queues/${name}/receive`, { token: alice, body: { waitSeconds: 5 } });
  t.same((got.body as { messages: { body: string }[] }).messages.map((m) => m.body), ['after bob left'], 'the message is still there for alice');
});
