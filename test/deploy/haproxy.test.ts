// deploy/haproxy/haproxy.cfg repeats a request on another node only when that is safe (a GET, or a
// write with an Idempotency-Key), passes on any request that never reached a node, leaves out a node
// whose /readyz fails, and gives every request an X-Request-Id. Stand-in nodes count what reached them.
// Each test needs Debian's haproxy and is skipped without it (test/tools.ts).
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import { request } from 'undici';
import { freePort, until } from '../cluster/net-helpers.js';
import { needTool } from '../tools.js';
import { Haproxy } from './haproxy.js';
import { checkNotRepeated, send, stand, type Stand } from './stand-ins.js';

const keyedPost = /^POST \S+ k\d$/;

/** A stand-in node answering `status` (and `ready` to /readyz), closed when `t` ends. */
async function standIn(t: Test, status: number, ready?: number): Promise<Stand> {
  const s = await stand(status, ready);
  t.teardown(() => s.close());
  return s;
}

/**
 * haproxy (`bin`) in front of `upstreams`, in a temporary folder; stopped and removed when `t` ends.
 * Each resource has its own teardown, registered as soon as it exists, so that a balancer that fails
 * to start leaves no stand-in listening (the file would never end).
 */
async function balancer(t: Test, bin: string, upstreams: string[], checks = true): Promise<Haproxy> {
  const dir = mkdtempSync(join(tmpdir(), 'mom-haproxy-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const lb = await Haproxy.start(bin, dir, upstreams, checks);
  t.teardown(() => lb.close());
  return lb;
}

t.test('haproxy retries GETs and keyed writes on a 503, never a write without a key that reached a node', async (t) => {
  const bin = needTool(t, 'haproxy');
  if (bin === null) return;
  const busy = await standIn(t, 503);
  const fine = await standIn(t, 200);
  const lb = await balancer(t, bin, [`127.0.0.1:${busy.port}`, `127.0.0.1:${fine.port}`], false);
  busy.hits.length = 0;
  fine.hits.length = 0;
  const gets: number[] = [];
  for (let i = 0; i < 6; i++) gets.push(await send(`${lb.url}/v1/queues/q`, 'GET'));
  t.same(gets, [200, 200, 200, 200, 200, 200], 'every GET answered 200 (those that met the 503 were repeated)');
  t.ok(busy.hits.some((h) => h.startsWith('GET ')), 'some GETs met the 503 first');
  const keyed: number[] = [];
  for (let i = 0; i < 6; i++) keyed.push(await send(`${lb.url}/v1/queues/q/messages`, 'POST', `k${i}`));
  t.same(keyed, [200, 200, 200, 200, 200, 200], 'every keyed write answered 200');
  t.ok(busy.hits.some((h) => keyedPost.test(h)) && [...busy.hits, ...fine.hits].filter((h) => keyedPost.test(h)).length > 6, 'keyed writes that met the 503 were repeated on the other node');
  const before = busy.hits.length + fine.hits.length;
  const unkeyed: number[] = [];
  for (let i = 0; i < 6; i++) unkeyed.push(await send(`${lb.url}/v1/queues/q/messages`, 'POST'));
  t.ok(unkeyed.includes(503), 'a write without a key that met the 503 got the 503');
  t.equal(busy.hits.length + fine.hits.length - before, 6, 'each write without a key reached exactly one node');
});

t.test('haproxy passes a write without a key on when the node refused the connection', async (t) => {
  const bin = needTool(t, 'haproxy');
  if (bin === null) return;
  const fine = await standIn(t, 200);
  const closedPort = await freePort();
  const lb = await balancer(t, bin, [`127.0.0.1:${closedPort}`, `127.0.0.1:${fine.port}`], false);
  const got: number[] = [];
  for (let i = 0; i < 4; i++) got.push(await send(`${lb.url}/v1/queues/q/messages`, 'POST'));
  t.same(got, [200, 200, 200, 200]);
});

t.test('haproxy leaves out a node whose /readyz fails and sets X-Request-Id', async (t) => {
  const bin = needTool(t, 'haproxy');
  if (bin === null) return;
  // Answers 200 to requests but is not ready: the health check must keep requests away from it.
  const unready = await standIn(t, 200, 503);
  const ready = await standIn(t, 200);
  const lb = await balancer(t, bin, [`127.0.0.1:${unready.port}`, `127.0.0.1:${ready.port}`]);
  // Two failed checks, 2 s apart, mark it down; then no request reaches it.
  const deadline = Date.now() + 30_000;
  let streak = 0;
  while (streak < 10 && Date.now() < deadline) {
    const before = unready.hits.length;
    await send(`${lb.url}/v1/queues/q`, 'GET');
    streak = unready.hits.length === before ? streak + 1 : 0;
    if (streak === 0) await new Promise((r) => setTimeout(r, 200));
  }
  t.equal(streak, 10, 'ten requests in a row went to the ready node only');
  const res = await request(`${lb.url}/v1/queues/q`);
  const body = (await res.body.json()) as { requestId: string | null };
  t.ok(typeof body.requestId === 'string' && body.requestId.length > 0, `haproxy set X-Request-Id (${body.requestId})`);
  const own = await request(`${lb.url}/v1/queues/q`, { headers: { 'x-request-id': 'client-chosen-1' } });
  t.equal(((await own.body.json()) as { requestId: string }).requestId, 'client-chosen-1', "a client's own X-Request-Id is kept");
});

t.test('with no node ready, haproxy passes requests to a node that is alive: it serves stale reads, and its own 503s', async (t) => {
  // Two nodes down and the third without a majority: its /readyz fails, yet it answers stale reads
  // from its replica (docs/guarantees.md). Before, haproxy answered every request 503 itself.
  const bin = needTool(t, 'haproxy');
  if (bin === null) return;
  const alone = await standIn(t, 200, 503);
  const dead = await freePort();
  const lb = await balancer(t, bin, [`127.0.0.1:${dead}`, `127.0.0.1:${alone.port}`]);
  // Two failed checks of /readyz mark it down in `mom` (the dead node fails its checks meanwhile).
  await until(() => alone.readyChecks.length >= 3, 'three checks of /readyz', 3_000);
  alone.hits.length = 0;
  const got: number[] = [];
  for (let i = 0; i < 4; i++) got.push(await send(`${lb.url}/v1/queues/q?consistency=stale`, 'GET'));
  t.same(got, [200, 200, 200, 200], 'every stale read answered by the node left');
  t.equal(alone.hits.filter((h) => h.startsWith('GET /v1/queues/q')).length, 4, 'each reached it');
});

t.test('haproxy never repeats a write of /v1/auth that reached a node, even with a key (the server takes none there)', async (t) => {
  // A password change, a logout, a deletion or a registration that went through and answered 504 would
  // be answered 401, 403 or 409 on the repeat: a refusal for a change that was made.
  const bin = needTool(t, 'haproxy');
  if (bin === null) return;
  const timedOut = await standIn(t, 504);
  const fine = await standIn(t, 200);
  const lb = await balancer(t, bin, [`127.0.0.1:${timedOut.port}`, `127.0.0.1:${fine.port}`], false);
  const writes = [
    ['POST', '/v1/auth/register', 'k-register'],
    ['POST', '/v1/auth/logout', 'k-logout'],
    ['PUT', '/v1/auth/password', 'k-password'],
    ['DELETE', '/v1/auth/me', 'k-me'],
  ] as const;
  await checkNotRepeated(t, lb.url, timedOut, fine, writes);
});

t.test("haproxy tells the node the client's address (X-Forwarded-For): per-address login and registration limits need it", async (t) => {
  const bin = needTool(t, 'haproxy');
  if (bin === null) return;
  const fine = await standIn(t, 200);
  const lb = await balancer(t, bin, [`127.0.0.1:${fine.port}`], false);
  fine.forwardedFor.length = 0;
  t.equal(await send(`${lb.url}/v1/auth/login`, 'POST'), 200);
  t.same(fine.forwardedFor, ['127.0.0.1'], 'the client address reached the node');
});
