// A node cut off from every other node is not ready (/readyz) and answers 503 at once instead of holding requests for the
// leader wait (here 10 minutes, so only the cut-off rule can answer within the test), so that a
// client or a load balancer moves on to another node. Found by the chaos runs: round-robin clients
// stalled for 5 s on every request that reached an isolated node.
import t from 'tap';
import { UNAVAILABLE } from '../../src/cluster/errors.js';
import { call, leaderOf, startCluster, userToken } from './api-helpers.js';

t.test('a node that hears from no other node answers 503 at once, saying so', async (t) => {
  const cluster = await startCluster({ leaderWaitMs: 600_000 });
  t.teardown(() => cluster.close());
  const token = await userToken(cluster.urls[0]!, 'alone');
  const name = 'cut-off';
  t.equal((await call(cluster.urls[0]!, 'POST', '/v1/queues', { token, body: { name } })).status, 201);
  // Keep a node that does not lead the queue's partition (as /v1/cluster says, not as assumed: in an
  // election no node leads, and index -1 would have kept n1, perhaps the leader); stop the two others.
  const keep = ((await leaderOf(cluster, name)) + 1) % 3;
  await Promise.all(cluster.servers.filter((_, i) => i !== keep).map((s) => s.close()));

  const send = await call(cluster.urls[keep]!, 'POST', `/v1/queues/${name}/messages`, { token, body: { body: 'x' } });
  t.equal(send.status, 503);
  t.match(send.body, { code: 'unavailable', detail: UNAVAILABLE.cut_off });
  t.ok(send.headers['retry-after'] !== undefined, 'Retry-After');
  const read = await call(cluster.urls[keep]!, 'GET', `/v1/queues/${name}`, { token });
  t.equal(read.status, 503);
  t.match(read.body, { detail: UNAVAILABLE.cut_off });
  const ready = await call(cluster.urls[keep]!, 'GET', '/readyz');
  t.equal(ready.status, 503, 'and it is not ready, so a balancer sends nothing its way');
  t.match(ready.body, { status: 'not ready', cutOff: true });
});
