// What a node adds around the routes: forwarding to leaders with the caller's request id, the
// operational routes and metrics, login limits, and reads when the leader is out of reach (stale
// reads answer, linearizable reads and writes get 503 with Retry-After, nothing hangs).
// Which node leads which partition is up to the elections: every test asks GET /v1/cluster, and
// waits (bounded) for what it checks rather than assuming where leaders are or how fast things go.
import t from 'tap';
import { request } from 'undici';
import { partitionOf } from '../../src/partition/routing.js';
import { LOGIN_LIMITS } from '../../src/api/routes/auth.js';
import { until } from '../cluster/net-helpers.js';
import { call, leaderOf, pollUntil, startCluster, userToken } from './api-helpers.js';

const METRICS_TOKEN = 'm'.repeat(24);
const cluster = await startCluster({ leaderWaitMs: 1500, metricsToken: METRICS_TOKEN });
t.teardown(() => cluster.close());
const urls = cluster.urls;
const token = await userToken(urls[0]!, 'operator');
const P = cluster.configs[0]!.partitions;

/** A node's /metrics, with the metrics token: its content type and text. */
async function scrape(url: string): Promise<{ contentType: string | string[] | undefined; text: string }> {
  const res = await request(`${url}/metrics`, { headers: { authorization: `Bearer ${METRICS_TOKEN}` } });
  return { contentType: res.headers['content-type'], text: await res.body.text() };
}

t.test('a request through a follower is served by the leader, under the caller’s request id', async (t) => {
  const name = 'forwarded';
  t.equal((await call(urls[0]!, 'POST', '/v1/queues', { token, body: { name } })).status, 201);
  // Should leadership move to this node meanwhile, it serves the request itself: the assertions hold.
  const follower = urls[((await leaderOf(cluster, name)) + 1) % 3]!;
  const commandPosts = async (): Promise<number> => {
    const texts = await Promise.all(urls.map(async (u) => (await scrape(u)).text));
    let n = 0;
    for (const m of texts.join('\n').matchAll(/mom_http_requests_total\{[^}]*route="\/internal\/commands?"[^}]*\} (\d+)/g)) n += Number(m[1]);
    return n;
  };
  /** Carried-command counters summed over the nodes: what the leaders answered with. */
  const carriedTotals = async (): Promise<{ command: number; answer: number; proposed: number }> => {
    const texts = await Promise.all(urls.map(async (u) => (await scrape(u)).text));
    const sum = (kind: string): number =>
      texts.map((text) => Number(new RegExp(`mom_peer_carried_total\\{kind="${kind}"\\} (\\d+)`).exec(text)?.[1] ?? 0)).reduce((a, b) => a + b);
    return { command: sum('command'), answer: sum('answer'), proposed: sum('proposed') };
  };
  const postsBefore = await commandPosts();
  const carriedBefore = await carriedTotals();
  const res = await call(follower, 'POST', `/v1/queues/${name}/messages`, { token, body: { body: 'x' }, headers: { 'x-request-id': 'req-abc.123' } });
  t.equal(res.status, 201);
  t.equal(res.headers['x-request-id'], 'req-abc.123', 'the id comes back');
  // A send with an Idempotency-Key has an entry of its own (a plain one may share it with others).
  const keyed = await call(follower, 'POST', `/v1/queues/${name}/messages`, { token, body: { body: 'y' }, headers: { 'idempotency-key': 'node-api-keyed-1' } });
  t.equal(keyed.status, 201);
  const q = await call(follower, 'GET', `/v1/queues/${name}`, { token });
  t.match(q.body, { owner: 'operator', stats: { visible: 2 } }, 'written as the caller, read back linearizably through the follower');
  // The commands rode in the follower's Raft stream to the leader, with no HTTP request of their
  // own: unless leadership moved to the follower meanwhile, and it served them itself.
  if (urls[await leaderOf(cluster, name)] !== follower) {
    const carried = await carriedTotals();
    t.ok(carried.command - carriedBefore.command >= 2, 'carried in the Raft stream');
    // The plain send came back with its result; for the keyed one the leader said where it appended
    // it, and the follower answered from its own apply.
    t.ok(carried.answer - carriedBefore.answer >= 1, 'the plain send answered with its result');
    t.ok(carried.proposed - carriedBefore.proposed >= 1, 'the keyed send answered from the forwarding node’s own apply');
  }
  t.equal(await commandPosts(), postsBefore, 'no node served a forwarded command over HTTP meanwhile');
  const odd = await call(follower, 'GET', '/healthz', { headers: { 'x-request-id': 'no spaces or\tcontrol' } });
  t.not(odd.headers['x-request-id'], 'no spaces or\tcontrol', 'an unusable id is replaced');
});

t.test('operational routes: healthz, readyz, cluster, metrics, and 404 as a problem', async (t) => {
  t.same((await call(urls[1]!, 'GET', '/healthz')).body, { status: 'ok' });
  // Ready once every partition has had a known leader for the last 2 s: an election on a loaded
  // machine may make it wait, never fail.
  const ready = await pollUntil(() => call(urls[1]!, 'GET', '/readyz'), (r) => r.status === 200);
  t.same(ready.body, { status: 'ready' });
  type ClusterView = { partitions: { leader: string | null; match: Record<string, number> }[] };
  const c = await pollUntil(
    () => call(urls[2]!, 'GET', '/v1/cluster'),
    (r) => r.status === 200 && (r.body as ClusterView).partitions.every((p) => p.leader !== null),
  );
  t.match(c.body, { node: 'n3', partitionCount: P, nodes: [{ id: 'n1' }, { id: 'n2' }, { id: 'n3' }] });
  const parts = (c.body as ClusterView).partitions;
  t.equal(parts.length, P);
  t.ok(parts.every((p) => p.leader !== null), 'every partition has a leader');

  const name = 'measured';
  t.equal((await call(urls[0]!, 'POST', '/v1/queues', { token, body: { name } })).status, 201);
  t.equal((await call(urls[0]!, 'POST', `/v1/queues/${name}/messages`, { token, body: { body: 'x' } })).status, 201);
  const refused = await call(urls[0]!, 'GET', '/metrics');
  t.equal(refused.status, 401, 'a node with a metrics token wants it');
  t.match(refused.body, { code: 'unauthorized' });
  // Request metrics are counted by the node that answered the client (n1 here), whoever leads;
  // Raft's gauges are on every node.
  const n1 = await scrape(urls[0]!);
  t.match(n1.contentType, /text\/plain/);
  t.match(n1.text, /mom_http_requests_total\{method="POST",route="\/v1\/queues\/:queue\/messages",status="201"\} \d+/);
  t.match(n1.text, /mom_http_request_duration_seconds_bucket\{/);
  t.match(n1.text, /mom_raft_term\{partition="0"\} \d+/);
  t.match(n1.text, /mom_raft_commit_index\{partition="\d+"\} \d+/);
  t.match(n1.text, /mom_raft_apply_lag\{partition="\d+"\} \d+/);
  // Heartbeats at least have gone to the peers, in batches they took.
  t.match(n1.text, /mom_peer_messages_total\{outcome="sent"\} [1-9]\d*/);
  t.match(n1.text, /mom_peer_batches_total [1-9]\d*/);
  t.match(n1.text, /mom_peer_messages_queued \d+/);
  t.match(n1.text, /mom_peer_carried_total\{kind="command"\} \d+/);

  // Depths and ages are reported by a partition's leader only. Scrape the node /v1/cluster names as
  // the queue's leader; should leadership move before the scrape (or the new leader not have applied
  // the send yet), ask again.
  const depth = new RegExp(`mom_queue_messages\\{queue="${name}",state="ready"\\} 1`);
  const age = new RegExp(`mom_partition_oldest_message_age_seconds\\{partition="${partitionOf(name, P)}"\\} ([0-9.e-]+)`, 'g');
  const led = await pollUntil(
    async () => (await scrape(urls[await leaderOf(cluster, name)]!)).text,
    (text) => depth.test(text) && [...text.matchAll(age)].length > 0,
  );
  t.match(led, depth, 'the depth of a queue led here');
  t.match(led, /mom_partition_messages\{partition="\d+",state="ready"\} \d+/);
  // The message just sent is the oldest of its partition: a small age, never 0 while it waits.
  const ages = [...led.matchAll(age)].map((m) => Number(m[1]));
  t.equal(ages.length, 1, 'the age of the oldest message of the queue’s partition, on its leader');
  t.ok(ages[0]! > 0 && ages[0]! < 600, `age ${ages[0]} s`);

  const missing = await call(urls[0]!, 'GET', '/v1/nothing-here');
  t.equal(missing.status, 404);
  t.match(missing.headers['content-type'], /application\/problem\+json/);
  t.match(missing.body, { code: 'not_found', status: 404 });
});

t.test('listing pages through a partition that fills a page on its own', async (t) => {
  // Two queues of one partition, so that with limit=1 the page is full before any merging.
  const names = Array.from({ length: 100 }, (_, i) => `page-${i}`);
  const p0 = partitionOf(names[0]!, P);
  const same = names.filter((n) => partitionOf(n, P) === p0).slice(0, 2);
  const lister = await userToken(urls[0]!, 'lister');
  for (const name of same) t.equal((await call(urls[1]!, 'POST', '/v1/queues', { token: lister, body: { name } })).status, 201);
  const seen: string[] = [];
  let cursor: string | null = null;
  for (let page = 0; page < 5; page++) {
    const res = await call(urls[page % 3]!, 'GET', `/v1/queues?limit=1${cursor === null ? '' : `&cursor=${cursor}`}`, { token: lister });
    const body = res.body as { items: { name: string }[]; nextCursor: string | null };
    seen.push(...body.items.map((i) => i.name));
    cursor = body.nextCursor;
    if (cursor === null) break;
  }
  t.strictSame(seen, [...same].sort(), 'every queue, once, in name order');
});

t.test('failed logins of one user from one address back off: 429 with Retry-After', async (t) => {
  t.equal((await call(urls[0]!, 'POST', '/v1/auth/register', { body: { username: 'guessed', password: 'password-guessed' } })).status, 201);
  let last = null as Awaited<ReturnType<typeof call>> | null;
  for (let i = 0; i <= LOGIN_LIMITS.free; i++) {
    last = await call(urls[0]!, 'POST', '/v1/auth/login', { body: { username: 'guessed', password: i < LOGIN_LIMITS.free ? 'wrong-password' : 'password-guessed' } });
    if (i < LOGIN_LIMITS.free) t.equal(last.status, 401, `attempt ${i + 1}: wrong password`);
  }
  t.equal(last!.status, 429, 'then even the right password waits, from that address');
  t.match(last!.body, { code: 'rate_limited' });
  t.ok(Number(last!.headers['retry-after']) >= 1, 'Retry-After in seconds');
  // Not per node (test/api/cluster-limits.test.ts shows the pair held on the others); per pair.
  t.equal((await call(urls[1]!, 'POST', '/v1/auth/register', { body: { username: 'not-guessed', password: 'password-not-guessed' } })).status, 201);
  const other = await call(urls[0]!, 'POST', '/v1/auth/login', { body: { username: 'not-guessed', password: 'password-not-guessed' } });
  t.equal(other.status, 200, 'another user from the same address is not held');
});

t.test('with the leader out of reach: stale reads answer, strong reads and writes get 503', async (t) => {
  const name = 'isolated';
  t.equal((await call(urls[0]!, 'POST', '/v1/queues', { token, body: { name } })).status, 201);
  t.equal((await call(urls[0]!, 'POST', `/v1/queues/${name}/messages`, { token, body: { body: 'x' } })).status, 201);
  // Keep one node that is not the queue's leader; stop the two others (a majority).
  const keep = ((await leaderOf(cluster, name)) + 1) % 3;
  const survivor = cluster.servers[keep]!;
  const applied = Math.max(...cluster.servers.map((s) => s.host.replica(partitionOf(name, P)).state.applied().index));
  await until(() => survivor.host.replica(partitionOf(name, P)).state.applied().index >= applied, 'the survivor applied the send');
  await Promise.all(cluster.servers.filter((_, i) => i !== keep).map((s) => s.close()));
  const url = urls[keep]!;

  const stale = await call(url, 'GET', `/v1/queues/${name}?consistency=stale`, { token });
  t.equal(stale.status, 200);
  t.equal(stale.headers['x-stale'], 'true');
  t.ok(Number(stale.headers['x-applied-index']) >= applied, 'X-Applied-Index says how fresh it is');
  t.match(stale.body, { name, stats: { visible: 1 } });

  const strong = await call(url, 'GET', `/v1/queues/${name}`, { token });
  t.equal(strong.status, 503);
  t.match(strong.body, { code: 'unavailable' });
  t.ok(strong.headers['retry-after'] !== undefined, 'Retry-After');

  const send = await call(url, 'POST', `/v1/queues/${name}/messages`, { token, body: { body: 'lost?' } });
  t.ok(send.status === 503 || send.status === 504, `a write without a majority is refused (${send.status})`);
  t.equal(survivor.host.replica(partitionOf(name, P)).state.getQueue(name, 'operator', Date.now()).ok, true);
});
