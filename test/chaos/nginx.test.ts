// deploy/nginx/mom.conf, which the chaos runs use as their load balancer, repeats a request on another node only when that is safe: a GET, or a
// write with an Idempotency-Key. A write without one is passed on only when it never reached a node.
// nginx (Debian's package; .ci/run installs it; without it each test is skipped: test/tools.ts) in
// front of two stand-in nodes: one answers 503, the other 200, and each counts what reached it.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import { createServer } from 'node:http';
import { request } from 'undici';
import { MESSAGES_BODY_LIMIT } from '../../src/api/messaging.js';
import { freePort } from '../cluster/net-helpers.js';
import { checkNotRepeated, send, stand, type Stand } from '../deploy/stand-ins.js';
import { needTool } from '../tools.js';
import { LoadBalancer } from './nginx.js';

/** A stand-in node answering `status`, closed when `t` ends. */
async function standIn(t: Test, status: number): Promise<Stand> {
  const s = await stand(status);
  t.teardown(() => s.close());
  return s;
}

/**
 * nginx (`bin`) in front of `upstreams`, never leaving a node out (the retry rules are under test), in
 * a temporary folder; stopped and removed when `t` ends. Each teardown is registered as soon as its
 * resource exists, so that a balancer that fails to start leaves nothing running.
 */
async function balancer(t: Test, bin: string, upstreams: string[]): Promise<LoadBalancer> {
  const dir = mkdtempSync(join(tmpdir(), 'mom-nginx-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const lb = await LoadBalancer.start(bin, dir, upstreams, { maxFails: 0 });
  t.teardown(() => lb.close());
  return lb;
}

/** nginx in front of a node answering 503 and one answering 200, their start's hits forgotten. */
async function busyAndFine(t: Test, bin: string): Promise<{ busy: Stand; fine: Stand; lb: LoadBalancer }> {
  const busy = await standIn(t, 503);
  const fine = await standIn(t, 200);
  const lb = await balancer(t, bin, [`127.0.0.1:${busy.port}`, `127.0.0.1:${fine.port}`]);
  // /healthz probes of the start went through too
  busy.hits.length = 0;
  fine.hits.length = 0;
  return { busy, fine, lb };
}

t.test('nginx retries GETs and keyed writes on a 503, never a write without a key that reached a node', async (t) => {
  const bin = needTool(t, 'nginx');
  if (bin === null) return;
  const { busy, fine, lb } = await busyAndFine(t, bin);
  const gets: number[] = [];
  for (let i = 0; i < 6; i++) gets.push(await send(`${lb.url}/v1/queues/q`, 'GET'));
  t.same(gets, [200, 200, 200, 200, 200, 200], 'every GET answered 200 (those that met the 503 were repeated)');
  const keyed: number[] = [];
  for (let i = 0; i < 6; i++) keyed.push(await send(`${lb.url}/v1/queues/q/messages`, 'POST', `k${i}`));
  t.same(keyed, [200, 200, 200, 200, 200, 200], 'every keyed write answered 200');
  const keyedHits = [...busy.hits, ...fine.hits].filter((h) => /^POST \S+ k\d$/.test(h));
  t.ok(busy.hits.some((h) => /^POST \S+ k\d$/.test(h)) && keyedHits.length > 6, 'keyed writes that met the 503 were repeated on the other node');
  const before = busy.hits.length + fine.hits.length;
  const unkeyed: number[] = [];
  for (let i = 0; i < 6; i++) unkeyed.push(await send(`${lb.url}/v1/queues/q/messages`, 'POST'));
  t.ok(unkeyed.includes(503), 'a write without a key that met the 503 got the 503');
  t.equal(busy.hits.length + fine.hits.length - before, 6, 'each write without a key reached exactly one node');
});

t.test('nginx passes a write without a key on when the node refused the connection (it never reached it)', async (t) => {
  const bin = needTool(t, 'nginx');
  if (bin === null) return;
  const fine = await standIn(t, 200);
  const closedPort = await freePort();
  const lb = await balancer(t, bin, [`127.0.0.1:${closedPort}`, `127.0.0.1:${fine.port}`]);
  const got: number[] = [];
  for (let i = 0; i < 4; i++) got.push(await send(`${lb.url}/v1/queues/q/messages`, 'POST'));
  t.same(got, [200, 200, 200, 200]);
});

t.test('nginx gives a PUT or DELETE without a key its own, the same on the repeat, so the repeat is answered from the record', async (t) => {
  const bin = needTool(t, 'nginx');
  if (bin === null) return;
  const { busy, fine, lb } = await busyAndFine(t, bin);
  for (const method of ['PUT', 'DELETE'] as const) {
    const got: number[] = [];
    for (let i = 0; i < 6; i++) got.push(await send(`${lb.url}/v1/queues/q-${method}-${i}`, method));
    t.same(got, [200, 200, 200, 200, 200, 200], `${method}: every one answered 200`);
    for (let i = 0; i < 6; i++) {
      const hits = [...busy.hits, ...fine.hits].filter((h) => h.startsWith(`${method} /v1/queues/q-${method}-${i} `));
      const keys = new Set(hits.map((h) => h.split(' ')[2]));
      t.ok(hits.length >= 1 && keys.size === 1 && !keys.has('-'), `${method} ${i}: every attempt carried one key nginx gave it (${hits.join(' | ')})`);
    }
    t.ok(busy.hits.some((h) => h.startsWith(`${method} `)), `${method}: some met the 503 and were repeated`);
  }
  const keys = [...busy.hits, ...fine.hits].map((h) => h.split(' ')[2]);
  t.ok(new Set(keys).size >= 12, 'each request its own key');
  // A client's own key is kept; GETs and POSTs without one get none.
  busy.hits.length = 0;
  fine.hits.length = 0;
  t.equal(await send(`${lb.url}/v1/queues/mine`, 'DELETE', 'client-key'), 200);
  t.equal(await send(`${lb.url}/v1/queues/mine`, 'GET'), 200);
  t.ok([...busy.hits, ...fine.hits].every((h) => h === 'DELETE /v1/queues/mine client-key' || h === 'GET /v1/queues/mine -'), [...busy.hits, ...fine.hits].join(' | '));
  const before = busy.hits.length + fine.hits.length;
  const unkeyed: number[] = [];
  for (let i = 0; i < 6; i++) unkeyed.push(await send(`${lb.url}/v1/queues/q/messages`, 'POST'));
  t.ok(unkeyed.includes(503), 'a POST without a key that met the 503 got the 503');
  t.equal(busy.hits.length + fine.hits.length - before, 6, 'and reached exactly one node, without a key');
  t.same([...busy.hits, ...fine.hits].filter((h) => h.startsWith('POST ')), Array(6).fill('POST /v1/queues/q/messages -'), 'no key was added to a POST');
});

t.test('nginx never repeats a write of /v1/auth that reached a node: the server takes no Idempotency-Key there', async (t) => {
  // A password change, a logout, a deletion or a registration that went through and answered 504 would
  // be answered 401, 403 or 409 on the repeat: a refusal for a change that was made.
  const bin = needTool(t, 'nginx');
  if (bin === null) return;
  const timedOut = await standIn(t, 504);
  const fine = await standIn(t, 200);
  const lb = await balancer(t, bin, [`127.0.0.1:${timedOut.port}`, `127.0.0.1:${fine.port}`]);
  const writes = [
    ['PUT', '/v1/auth/password', undefined],
    ['DELETE', '/v1/auth/me', undefined],
    ['POST', '/v1/auth/logout', 'k-logout'],
    ['POST', '/v1/auth/register', 'k-register'],
    ['PUT', '/v1/auth/password', 'k-password'],
  ] as const;
  await checkNotRepeated(t, lb.url, timedOut, fine, writes);
  // a refused connection is still passed on: it never reached a node
  const closedPort = await freePort();
  const lb2 = await balancer(t, bin, [`127.0.0.1:${closedPort}`, `127.0.0.1:${fine.port}`]);
  const passed: number[] = [];
  for (let i = 0; i < 4; i++) passed.push(await send(`${lb2.url}/v1/auth/logout`, 'POST'));
  t.same(passed, [200, 200, 200, 200], 'a logout whose node refused the connection went to the other');
});

t.test('nginx passes on a request body as large as the API takes (8 MiB for a batch of sends)', async (t) => {
  const bin = needTool(t, 'nginx');
  if (bin === null) return;
  const fine = await standIn(t, 200);
  const lb = await balancer(t, bin, [`127.0.0.1:${fine.port}`]);
  fine.hits.length = 0;
  // A full batch (1 MiB of bodies) as JSON that escapes every character (\uXXXX) nears the API's limit.
  const body = `{"messages":[{"body":"${'x'.repeat(MESSAGES_BODY_LIMIT - 30)}"}]}`;
  t.equal(Buffer.byteLength(body) <= MESSAGES_BODY_LIMIT, true);
  const res = await request(`${lb.url}/v1/queues/q/messages/batch`, { method: 'POST', headers: { 'content-type': 'application/json' }, body });
  await res.body.dump();
  t.equal(res.statusCode, 200, 'not refused by nginx (413)');
  t.equal(fine.hits.length, 1, 'it reached the node, which judges its size');
});

// The disk alarm (src/cluster/disk-space.ts) refuses every send on every node at once. As a 503 it
// made nginx (max_fails=1, proxy_next_upstream http_503) mark each node failed in turn, until it had
// no node left and answered everything, receives and acks too, with its own 502: consumers could not
// drain the queues that would free the space. A 507 is no node failure to nginx.
t.test('with every node refusing sends for disk space (507), nginx as deployed keeps passing receives and reads, and the 507 itself', async (t) => {
  const bin = needTool(t, 'nginx');
  if (bin === null) return;
  const nodes = await Promise.all(
    [0, 1, 2].map(async () => {
      const server = createServer((req, res) => {
        req.resume();
        req.on('end', () => {
          if (req.method === 'POST' && req.url?.endsWith('/messages') === true) {
            res.writeHead(507, { 'content-type': 'application/problem+json', 'retry-after': '10' }).end(JSON.stringify({ code: 'insufficient_storage' }));
          } else res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
        });
      });
      const port = await freePort();
      await new Promise<void>((r) => server.listen(port, '127.0.0.1', r));
      t.teardown(() => {
        server.closeAllConnections();
        server.close();
      });
      return port;
    }),
  );
  const dir = mkdtempSync(join(tmpdir(), 'mom-nginx-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const lb = await LoadBalancer.start(bin, dir, nodes.map((p) => `127.0.0.1:${p}`));
  t.teardown(() => lb.close());
  const statuses = { send: [] as number[], receive: [] as number[], get: [] as number[] };
  let retryAfter: string | string[] | undefined;
  for (let i = 0; i < 30; i++) {
    const sent = await request(`${lb.url}/v1/queues/q/messages`, { method: 'POST', headers: { 'content-type': 'application/json', 'idempotency-key': `k${i}` }, body: '{}' });
    await sent.body.dump();
    statuses.send.push(sent.statusCode);
    retryAfter = sent.headers['retry-after'];
    statuses.receive.push(await send(`${lb.url}/v1/queues/q/receive`, 'POST'));
    statuses.get.push(await send(`${lb.url}/v1/queues/q`, 'GET'));
  }
  t.same(new Set(statuses.send), new Set([507]), 'every send answered by a node: 507');
  t.equal(retryAfter, '10', 'with its Retry-After');
  t.same(new Set(statuses.receive), new Set([200]), 'every receive reached a node');
  t.same(new Set(statuses.get), new Set([200]), 'every read too');
});
