// The login limit across three real nodes: failures on two of them hold the user's pair on the third,
// which heard of them through the inter-node route (src/cluster/limit-gossip.ts). The nodes' clocks
// stand still, so that a wait, once begun, lasts for the whole test however slow the machine.
import t from 'tap';
import { request } from 'undici';
import { LOGIN_LIMITS } from '../../src/api/routes/auth.js';
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
