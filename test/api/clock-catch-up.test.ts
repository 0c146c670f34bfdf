// A partition's clock moves at most a minute per entry (format 8), so after an outage (the whole
// cluster down, or two nodes) it is behind the nodes' until housekeeping's sweeps bring it up. A send
// applied meanwhile was stamped with the old time: its retention counted from minutes ago, so the
// message answered 201 expired as the clock caught up, never received; its deduplication window and
// delay were cut short the same way (review of 2026-12-07). Now a leader holds clients' commands
// until its partition's clock is within a step of the nodes'.
import t from 'tap';
import { MomServer } from '../../src/server.js';
import { until } from '../cluster/net-helpers.js';
import { call, startCluster, userToken, type JsonResponse } from './api-helpers.js';

t.setTimeout(300_000);

t.test('a message sent just after a ten-minute outage is kept for its whole retention, and deduplicated', async (t) => {
  // Every node reads this wall clock: the outage is ten minutes of it.
  let wall = Date.now();
  const cluster = await startCluster({ partitions: 1, wallClock: () => wall });
  let servers = cluster.servers;
  t.teardown(async () => {
    await Promise.allSettled(servers.map((s) => s.close()));
    await cluster.close();
  });
  const url = cluster.urls[0]!;
  const token = await userToken(url, 'cc-user');
  t.equal((await call(url, 'POST', '/v1/queues', { token, body: { name: 'cc-q', retentionSeconds: 60 } })).status, 201);

  await Promise.all(servers.map((s) => s.close()));
  wall += 10 * 60_000;
  servers = await Promise.all(cluster.configs.map((c) => MomServer.start(c, { tickMs: 20, wallClock: () => wall })));
  await until(() => servers.every((s) => s.status().every((p) => p.leader !== null)), 'a leader again');

  // Sent at once (a 503 while the clock catches up is a retry, which the deduplication id makes safe).
  const send = async (): Promise<JsonResponse> => {
    for (;;) {
      const r = await call(url, 'POST', '/v1/queues/cc-q/messages', { token, body: { body: 'after the outage', deduplicationId: 'cc-1' } });
      if (r.status !== 503) return r;
    }
  };
  const sent = await send();
  t.equal(sent.status, 201);
  const id = (sent.body as { messageId: string }).messageId;

  // Two seconds later, well within its minute of retention and its five minutes of deduplication.
  wall += 2_000;
  await until(() => servers.every((s) => Math.abs(s.host.replica(0).state.clock() - wall) < 60_000), 'the clock caught up everywhere');
  t.match((await call(url, 'GET', '/v1/queues/cc-q', { token })).body, { stats: { visible: 1, dropped: 0 } }, 'still there');
  const again = await send();
  t.equal(again.status, 201);
  t.equal((again.body as { messageId: string }).messageId, id, 'the retry is the same message');
  const got = await call(url, 'POST', '/v1/queues/cc-q/receive', { token, body: { maxMessages: 10 } });
  t.same((got.body as { messages: { body: string }[] }).messages.map((m) => m.body), ['after the outage'], 'received once, not expired');
});
