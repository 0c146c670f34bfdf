// The login limit across three real nodes: failures on two of them hold the user's pair on the third,
// which heard of them through the inter-node route (src/cluster/limit-gossip.ts). The nodes' clocks
// stand still, so that a wait, once begun, lasts for the whole test however slow the machine.
import t from 'tap';
import { request } from 'undici';
import { LOGIN_LIMITS } from '../../src/api/routes/auth.js';
import { LIMITS_PATH } from '../../src/cluster/internal-routes.js';
import { MAX_BATCH_EVENTS } from '../../src/cluster/limit-gossip.js';
import { call, pollUntil, startCluster } from './api-helpers.js';

t.setTimeout(180_000);
const still = Date.now();
const cluster = await startCluster({ wallClock: () => still });
t.teardown(() => cluster.close());
const [url0, url1, url2] = cluster.urls as [string, string, string];

/** The rate-limit events of other nodes that `url`'s node counted, from its /metrics. */
async function received(url: string): Promise<number> {
  const text = await (await request(`${url}/metrics`)).body.text();
  return Number(/^mom_rate_limit_events_total\{outcome="received"\} (\d+)/m.exec(text)?.[1] ?? 0);
}

t.test('failed logins on two nodes hold the pair on the third', async (t) => {
  t.equal((await call(url0, 'POST', '/v1/auth/register', { body: { username: 'limited', password: 'right-password' } })).status, 201);
  const base = await received(url2);
  for (let i = 0; i < LOGIN_LIMITS.free; i++) {
    const r = await call(i % 2 === 0 ? url0 : url1, 'POST', '/v1/auth/login', { body: { username: 'limited', password: `wrong-guess-${i}` } });
    t.equal(r.status, 401, `failure ${i + 1}`);
  }
  t.ok((await pollUntil(() => received(url2), (n) => n >= base + LOGIN_LIMITS.free)) >= base + LOGIN_LIMITS.free, 'the third node heard of every failure');
  const held = await call(url2, 'POST', '/v1/auth/login', { body: { username: 'limited', password: 'right-password' } });
  t.match(held, { status: 429, body: { code: 'rate_limited' } }, 'and holds the pair, which never failed there');
  t.ok(Number(held.headers['retry-after']) >= 1);
});

t.test('a peer takes a full batch of the largest events; a client without the cluster secret is refused', async (t) => {
  const events = Array.from({ length: MAX_BATCH_EVENTS }, (_, i) => ({ kind: 'login.failed', username: `${i}`.padEnd(64, 'u'), address: `ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.${i % 256}` }));
  const to = cluster.configs[1]!.nodeId;
  t.equal((await cluster.servers[0]!.node.transport.call(to, LIMITS_PATH, { events }, { timeoutMs: 10_000 })).status, 204);
  const outsider = await request(`${url1}${LIMITS_PATH}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ events }) });
  await outsider.body.dump();
  t.equal(outsider.statusCode, 401);
});
