// Request bodies of one client in flight on a node (src/api/bodies-in-flight.ts): one user's
// connections each holding most of a large batch filled the node's memory for as long as each body's
// deadline allowed. Past the budget, 429 before the body is read; another client is not held to it;
// a body whose connection went gives its bytes back.
import { connect, type Socket } from 'node:net';
import t from 'tap';
import { userToken } from './api-helpers.js';
import { localApp } from './local-app.js';

t.setTimeout(60_000);

const BUDGET = 1024 * 1024;
const local = await localApp({ deps: { bodyBytesPerClient: BUDGET } });
t.teardown(() => local.close());
const owner = await userToken(local.url, 'bulky-owner');
const other = await userToken(local.url, 'bulky-other');
for (const name of ['bulky-q', 'other-q']) {
  const token = name === 'bulky-q' ? owner : other;
  const created = await fetch(`${local.url}/v1/queues`, { method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` }, body: JSON.stringify({ name }) });
  if (created.status !== 201) throw new Error(`creating ${name}: ${created.status}`);
}

const head = (queue: string, token: string, length: number): string =>
  `POST /v1/queues/${queue}/messages/batch HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: ${length}\r\nAuthorization: Bearer ${token}\r\n\r\n`;

/** A request whose headers and the first bytes of a `length`-byte body are written, and nothing more; `answered` once the node said anything. */
function unfinished(queue: string, token: string, length: number): Promise<{ socket: Socket; answered: () => boolean }> {
  return new Promise((resolve, reject) => {
    let answered = false;
    const socket = connect(local.port, '127.0.0.1', () => socket.write(head(queue, token, length) + '{"messages": [', 'latin1', () => resolve({ socket, answered: () => answered })));
    socket.on('data', () => (answered = true));
    socket.on('error', reject);
  });
}

/** A batch of one message whose body is `bytes` long, as a client sends it whole. */
const batch = (queue: string, token: string, bytes: number): Promise<Response> =>
  fetch(`${local.url}/v1/queues/${queue}/messages/batch`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
    body: JSON.stringify({ messages: [{ body: 'x'.repeat(bytes) }] }),
  });

/** A batch of `bytes` that the route refuses once read (400, an unknown field), storing nothing. */
const invalid = (queue: string, token: string, bytes: number, base = local.url, v1 = '/v1'): Promise<Response> =>
  fetch(`${base}${v1}/queues/${queue}/messages/batch`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
    body: JSON.stringify({ messages: [{ body: 'x' }], padding: 'p'.repeat(bytes) }),
  });

/** Asks until the answer is not 429 (a closed connection's bytes come back when the node sees it close). */
async function untilServed(ask: () => Promise<Response>): Promise<Response> {
  for (let i = 0; ; i++) {
    const r = await ask();
    if (r.status !== 429 || i >= 500) return r;
    await r.body?.cancel();
    await new Promise((res) => setTimeout(res, 10));
  }
}

t.test('one client past its budget of bodies in flight gets 429 before its body is read; others do not', async (t) => {
  // Three quarters of the budget, declared and not sent, and a body that would be refused once read
  // (an unknown field) until it is refused before: the node counts the first once it has read its
  // headers, which the test cannot see, and refuses the first instead when the second was counted
  // before it (then it is opened again).
  let held = await unfinished('bulky-q', owner, (3 * BUDGET) / 4);
  t.teardown(() => held.socket.destroy());
  let refused = await invalid('bulky-q', owner, 400 * 1024);
  for (let i = 0; i < 500 && refused.status !== 429; i++) {
    await refused.body?.cancel();
    await new Promise((res) => setTimeout(res, 10));
    if (held.answered()) {
      held.socket.destroy();
      held = await unfinished('bulky-q', owner, (3 * BUDGET) / 4);
    }
    refused = await invalid('bulky-q', owner, 400 * 1024);
  }
  t.equal(refused.status, 429, 'the same user, past the budget');
  t.equal(refused.headers.get('retry-after'), '1');
  t.equal(refused.headers.get('content-type'), 'application/problem+json; charset=utf-8');
  t.equal(((await refused.json()) as { code: string }).code, 'rate_limited');
  t.equal((await invalid('bulky-q', owner, 400 * 1024, local.url, '/%761')).status, 429, 'a percent-encoded path is the same route, and held to the same budget');
  t.equal(await statusOf(head('bulky-q', owner, 9 * 1024 * 1024)), 413, 'a body past its route\'s limit is answered 413, as it would be alone, not 429');
  t.equal((await batch('bulky-q', owner, 1000)).status, 201, 'a small body still fits the budget');
  t.equal((await batch('other-q', other, 200 * 1024)).status, 201, 'another user has a budget of its own');

  t.notOk(held.answered(), 'the unfinished request was counted, not refused');
  held.socket.destroy();
  t.equal((await untilServed(() => batch('bulky-q', owner, 200 * 1024))).status, 201, 'the closed connection gave its bytes back');
  const stats = await fetch(`${local.url}/v1/queues/bulky-q`, { headers: { authorization: `Bearer ${owner}` } });
  t.equal(((await stats.json()) as { stats: { visible: number } }).stats.visible, 2, 'only the requests served stored anything');
});

t.test('a body larger than the budget alone is taken: one body always fits', async (t) => {
  const local2 = await localApp({ deps: { bodyBytesPerClient: 1024 } });
  t.teardown(() => local2.close());
  const token = await userToken(local2.url, 'alone');
  const created = await fetch(`${local2.url}/v1/queues`, { method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` }, body: JSON.stringify({ name: 'alone-q' }) });
  t.equal(created.status, 201);
  const r = await fetch(`${local2.url}/v1/queues/alone-q/messages`, { method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` }, body: JSON.stringify({ body: 'y'.repeat(10_000) }) });
  t.equal(r.status, 201);
});

/** The status of the answer to `head` (a request whose body is never sent): the node answers before it. */
function statusOf(head: string, port = local.port): Promise<number> {
  return new Promise((resolve, reject) => {
    let data = '';
    const socket = connect(port, '127.0.0.1', () => socket.write(head, 'latin1'));
    socket.setEncoding('latin1');
    socket.on('data', (chunk: string) => {
      data += chunk;
      const status = /^HTTP\/1\.[01] (\d{3})/.exec(data)?.[1];
      if (status !== undefined) {
        socket.destroy();
        resolve(Number(status));
      }
    });
    socket.on('error', reject);
  });
}

t.test('a client that leaves while its request is authenticated leaves nothing counted', async (t) => {
  // Each token check asks the leader about its user (USER_RECHECK_MS 0), and the leader takes 300 ms.
  const slow = await localApp({ deps: { bodyBytesPerClient: BUDGET, userRecheckMs: 0 }, query: async (run) => (await new Promise((r) => setTimeout(r, 300)), run()) });
  t.teardown(() => slow.close());
  const token = await userToken(slow.url, 'leaver');
  const created = await fetch(`${slow.url}/v1/queues`, { method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` }, body: JSON.stringify({ name: 'leaver-q' }) });
  t.equal(created.status, 201);
  const gone = await new Promise<Socket>((resolve, reject) => {
    const socket = connect(slow.port, '127.0.0.1', () => socket.write(head('leaver-q', token, (3 * BUDGET) / 4) + '{"messages": [', 'latin1', () => resolve(socket)));
    socket.on('error', reject);
  });
  await new Promise((r) => setTimeout(r, 50));
  gone.destroy();
  await new Promise((r) => setTimeout(r, 600)); // its token check ended meanwhile
  t.equal((await invalid('leaver-q', token, 400 * 1024, slow.url)).status, 400, 'the next body is not held to a budget the request that left still takes');
});
