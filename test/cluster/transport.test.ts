// HttpTransport and the internal routes over real HTTP on 127.0.0.1: one batch per peer per turn,
// order, Raft streams (one request for many batches, acknowledgements, a build without streams), the
// cluster secret, a dead peer, malformed bodies, and snapshot downloads.
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer as createHttpServer, type ServerResponse } from 'node:http';
import { createServer, type AddressInfo } from 'node:net';
import { PassThrough } from 'node:stream';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Fastify, { type FastifyInstance } from 'fastify';
import t, { type Test } from 'tap';
import { request } from 'undici';
import { MAX_REFUSAL_LINES, REFUSAL_LOG_MS, TOKEN_KEY_HEADER, internalRoutes } from '../../src/cluster/internal-routes.js';
import { IMAGE_DIGEST_HEADER, SnapshotFetchError } from '../../src/cluster/snapshot-fetch.js';
import { HttpTransport, type TransportOptions } from '../../src/cluster/transport.js';
import { FRAMES_TYPE, REFUSED, WINDOW_HEADER } from '../../src/cluster/frames.js';
import { decodeBatch, encodeBatch, type BatchItem } from '../../src/cluster/wire.js';
import { EntryKind, MessageType, nodeId, type Message, type NodeId } from '../../src/raft/index.js';

const SECRET = 'cluster-secret-4f1c9a';
const WRONG = 'cluster-secret-4f1c9b';
const a = nodeId('node-a');
const b = nodeId('node-b');

const dir = mkdtempSync(join(tmpdir(), 'mom-transport-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

/** Polls `predicate` until it holds; fails after `tries` rounds of 10 ms instead of hanging. */
async function until(what: string, predicate: () => boolean, tries = 500): Promise<void> {
  for (let i = 0; i < tries; i++) {
    if (predicate()) return;
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  throw new Error(`gave up waiting for ${what}`);
}

const nextTurn = () => new Promise<void>((resolve) => setImmediate(resolve));

interface Received {
  from: NodeId;
  items: BatchItem[];
}

interface Node {
  id: NodeId;
  app: FastifyInstance;
  url: string;
  /** One element per request that reached onMessages. */
  received: Received[];
  /** Every log line the node wrote at warn and above. */
  logs: string[];
  /** Snapshot files by `${partition}/${ref}`. */
  snapshots: Map<string, string>;
  /** When set, onMessages waits for it: holds a request in flight. */
  gate: Promise<void> | null;
  /** When set, snapshotFile waits for it: holds a download before its headers. */
  snapshotGate: Promise<void> | null;
  /** Every call of snapshotRead: a chunk of a snapshot download left. */
  snapshotReads: { partition: number; path: string }[];
  /** Every route registered, with whether its schema hides it from the OpenAPI document. */
  routes: { route: string; hidden: boolean }[];
  /** The path of every request that came in. */
  requests: string[];
  /** The path of every request whose answer was sent to its end. */
  answered: string[];
}

/** A Fastify server with the internal routes on 127.0.0.1, closed at the end of the test. */
async function startNode(t: Test, id: NodeId, extra: { streamIdleMs?: number; now?: () => number } = {}): Promise<Node> {
  const logs: string[] = [];
  const app = Fastify({ logger: { level: 'warn', stream: { write: (line: string) => void logs.push(line) } } });
  const node: Node = { id, app, url: '', received: [], logs, snapshots: new Map(), gate: null, snapshotGate: null, snapshotReads: [], routes: [], requests: [], answered: [] };
  app.addHook('onRoute', (route) => {
    node.routes.push({ route: `${String(route.method)} ${route.url}`, hidden: route.schema?.hide === true });
  });
  app.addHook('onRequest', async (request, reply) => {
    node.requests.push(request.url);
    reply.raw.once('finish', () => node.answered.push(request.url));
  });
  await app.register(internalRoutes, {
    ...extra,
    clusterSecret: SECRET,
    self: id,
    onMessages: async (from, items) => {
      node.received.push({ from, items });
      await node.gate;
    },
    snapshotFile: async (partition, ref) => {
      await node.snapshotGate;
      return node.snapshots.get(`${partition}/${ref}`) ?? null;
    },
    snapshotRead: (partition, path) => void node.snapshotReads.push({ partition, path }),
  });
  await app.listen({ host: '127.0.0.1', port: 0 });
  node.url = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`;
  t.teardown(() => app.close());
  return node;
}

function transport(t: Test, self: NodeId, peers: TransportOptions['peers'], extra: Partial<TransportOptions> = {}) {
  const warnings: { obj: object; msg: string }[] = [];
  const tr = new HttpTransport({
    self,
    peers,
    clusterSecret: SECRET,
    logger: { warn: (obj, msg) => void warnings.push({ obj, msg }) },
    ...extra,
  });
  t.teardown(() => tr.close());
  return { tr, warnings };
}

const heartbeat = (from: NodeId, to: NodeId, term: number): Message => ({ type: MessageType.Heartbeat, from, to, term, commit: 0, readRound: 0 });

/** A mix of message types for `partitions` partitions, in a recognisable order. */
function turnOf(from: NodeId, to: NodeId, partitions: number, term = 1): BatchItem[] {
  const items: BatchItem[] = [];
  for (let p = 0; p < partitions; p++) {
    const data = new Uint8Array([p, 0, 255, 0]);
    items.push({
      partition: p,
      message: { type: MessageType.App, from, to, term, prevIndex: p, prevTerm: 1, commit: p, entries: [{ term, index: p + 1, kind: EntryKind.Normal, data }] },
    });
    items.push({ partition: p, message: heartbeat(from, to, term) });
  }
  return items;
}

const order = (items: readonly BatchItem[]) => items.map((it) => `${it.partition}:${it.message.type}:${it.message.term}`);

/** A port nobody listens on: bound, then released. */
async function deadPort(): Promise<number> {
  const server = createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as AddressInfo;
  server.close();
  await once(server, 'close');
  return port;
}

async function post(url: string, headers: Record<string, string>, body?: Buffer | string) {
  const res = await request(`${url}/internal/raft`, { method: 'POST', headers, body });
  const text = await res.body.text();
  return { status: res.statusCode, type: String(res.headers['content-type']), json: text === '' ? undefined : (JSON.parse(text) as Record<string, unknown>) };
}

t.test('the messages of all partitions sent in one turn travel in one request, in order', async (t) => {
  const nodeA = await startNode(t, a);
  const nodeB = await startNode(t, b);
  const { tr: trA } = transport(t, a, [nodeA, nodeB]);
  const { tr: trB } = transport(t, b, [nodeA, nodeB]);

  const items = turnOf(a, b, 16);
  trA.send(items);
  await until('the batch', () => trA.stats().sent === items.length);
  t.equal(nodeB.received.length, 1, 'one request');
  t.equal(nodeB.received[0]?.from, a);
  t.strictSame(order(nodeB.received[0]?.items ?? []), order(items), 'in order');
  t.same(nodeB.received[0]?.items, items, 'intact, binary data included');

  // Several send() calls in one synchronous turn (one per partition, say) still make one request.
  const perPartition = [0, 1, 2, 3].map((p) => turnOf(a, b, 1, 2).map((it) => ({ ...it, partition: p })));
  for (const part of perPartition) trA.send(part);
  await until('the second batch', () => trA.stats().sent === items.length + 8);
  t.equal(nodeB.received.length, 2, 'one more request');
  t.strictSame(order(nodeB.received[1]?.items ?? []), order(perPartition.flat()));

  // And the other way round.
  trB.send(turnOf(b, a, 3));
  await until('the reply', () => nodeA.received.length === 1);
  t.equal(nodeA.received[0]?.from, b);
  t.equal(nodeA.received[0]?.items.length, 6);
  t.match(trA.stats(), { sent: items.length + 8, dropped: 0, failed: 0, queued: 0 });
  t.equal(nodeB.logs.length, 0, 'nothing logged on the happy path');
});

t.test('what is queued while the stream\'s window is full leaves in the next single batch', async (t) => {
  for (const streamWindow of [1, 2]) {
    const nodeB = await startNode(t, b);
    const { tr } = transport(t, a, [nodeB], { streamWindow });
    let release = () => {};
    nodeB.gate = new Promise((resolve) => (release = resolve));

    tr.send([{ partition: 0, message: heartbeat(a, b, 1) }]);
    await until('the first batch', () => nodeB.received.length === 1);
    for (let term = 2; term <= 4; term++) {
      tr.send([
        { partition: 1, message: heartbeat(a, b, term) },
        { partition: 2, message: heartbeat(a, b, term) },
      ]);
      await nextTurn();
    }
    // The peer holds the first batch: the window's other frames left, the rest waits.
    const waiting = streamWindow === 1 ? 6 : 4;
    t.equal(tr.stats().queued, waiting, `window ${streamWindow}: queued behind the full window`);
    t.match(tr.peerStates(), [{ inFlight: true }], 'a batch waits for room');
    nodeB.gate = null;
    release();
    await until('everything', () => tr.stats().sent === 7);
    t.equal(nodeB.received.length, streamWindow + 1, 'the rest in one batch');
    t.strictSame(order(nodeB.received.at(-1)?.items ?? []), ['1:heartbeat:2', '2:heartbeat:2', '1:heartbeat:3', '2:heartbeat:3', '1:heartbeat:4', '2:heartbeat:4'].slice(-waiting));
    t.strictSame(nodeB.requests, ['/internal/raft-stream'], 'in one stream');
    t.match(tr.stats(), { sent: 7, failed: 0, dropped: 0, batches: streamWindow + 1 });
  }
});

t.test('a batch is split by payload bytes, never by partition order', async (t) => {
  const nodeB = await startNode(t, b);
  const { tr } = transport(t, a, [nodeB], { maxBatchBytes: 10_000 });
  const big = (p: number): BatchItem => ({
    partition: p,
    message: { type: MessageType.App, from: a, to: b, term: 1, prevIndex: 0, prevTerm: 0, commit: 0, entries: [{ term: 1, index: 1, kind: EntryKind.Normal, data: new Uint8Array(6_000) }] },
  });
  tr.send([big(0), big(1), big(2)]);
  await until('all three', () => tr.stats().sent === 3);
  t.strictSame(nodeB.received.map((r) => r.items.map((it) => it.partition)), [[0], [1], [2]]);
});

t.test('the cluster secret', async (t) => {
  // The node's clock for how often it logs refusals: moved past REFUSAL_LOG_MS where each is to be logged.
  const clock = { ms: 0 };
  const nodeB = await startNode(t, b, { now: () => clock.ms });
  const good = encodeBatch(a, [{ partition: 0, message: heartbeat(a, b, 1) }]);
  const octets = { 'content-type': 'application/octet-stream' };

  t.test('raw requests without it are refused with 401 problem+json', async (t) => {
    const attempts: [string, Record<string, string>][] = [
      ['no authorization', octets],
      ['an empty bearer', { ...octets, authorization: 'Bearer ' }],
      ['a wrong secret', { ...octets, authorization: `Bearer ${WRONG}` }],
      ['a prefix of the secret', { ...octets, authorization: `Bearer ${SECRET.slice(0, -1)}` }],
      ['the secret and more', { ...octets, authorization: `Bearer ${SECRET}x` }],
      ['the secret in another scheme', { ...octets, authorization: `Basic ${SECRET}` }],
      ['the bare secret', { ...octets, authorization: SECRET }],
    ];
    for (const [name, headers] of attempts) {
      clock.ms += REFUSAL_LOG_MS;
      const res = await post(nodeB.url, headers, good);
      t.equal(res.status, 401, name);
      t.match(res.type, /^application\/problem\+json/, name);
      t.match(res.json, { type: String, title: 'Unauthorized', status: 401, code: 'unauthorized', detail: String }, name);
    }
    clock.ms += REFUSAL_LOG_MS;
    const snap = await request(`${nodeB.url}/internal/snapshot/0/x`, { headers: { authorization: `Bearer ${WRONG}` } });
    await snap.body.dump();
    t.equal(snap.statusCode, 401, 'the snapshot route too');

    t.equal(nodeB.received.length, 0, 'onMessages was never called');
    const refusals = nodeB.logs.filter((l) => l.includes('inter-node request refused'));
    t.equal(refusals.length, attempts.length + 1, 'each refusal is logged');
    t.notOk(nodeB.logs.some((l) => l.includes(WRONG) || l.includes(SECRET)), 'no secret, right or wrong, in the log');

    const ok = await post(nodeB.url, { ...octets, authorization: `Bearer ${SECRET}` }, good);
    t.equal(ok.status, 204, 'while the secret is accepted');
    t.equal(nodeB.received.length, 1);
  });

  t.test('a refusal\'s log line stays short whatever the URL: anyone can send one', async (t) => {
    // Before: the whole URL went into a warn line, 15 KB for each request of anyone with a long
    // query string (2,000 such requests, 30 MB of log at the default level, in 2 s).
    clock.ms += REFUSAL_LOG_MS;
    const before = nodeB.logs.length;
    const res = await request(`${nodeB.url}/internal/raft?${'q'.repeat(15_000)}`, { method: 'POST', headers: octets, body: good });
    await res.body.dump();
    t.equal(res.statusCode, 401);
    const lines = nodeB.logs.slice(before).filter((l) => l.includes('inter-node request refused'));
    t.equal(lines.length, 1, 'logged');
    t.ok(lines.every((l) => l.length < 1024), `${lines.map((l) => l.length).join(', ')} characters`);
    t.match(lines[0], '/internal/raft', 'the path is still named');
  });

  t.test('refusals of one reason from one address are logged once in 10 s, with how many were left out', async (t) => {
    // Before: a line per request. A peer with another secret retries about once a second; anyone
    // reaching the port can send as many as it likes.
    clock.ms += REFUSAL_LOG_MS;
    const before = nodeB.logs.length;
    const refusalsNow = (): Record<string, unknown>[] =>
      nodeB.logs
        .slice(before)
        .filter((l) => l.includes('inter-node request refused'))
        .map((l) => JSON.parse(l) as Record<string, unknown>);
    for (let i = 0; i < 20; i++) t.equal((await post(nodeB.url, { ...octets, authorization: `Bearer ${WRONG}` }, good)).status, 401);
    t.equal((await post(nodeB.url, octets, good)).status, 401);
    t.match(
      refusalsNow().map((l) => l.credentials),
      ['wrong', 'missing'],
      'one line for the 20 wrong secrets, one for the missing one: another reason is logged apart',
    );
    clock.ms += REFUSAL_LOG_MS - 1;
    t.equal((await post(nodeB.url, { ...octets, authorization: `Bearer ${WRONG}` }, good)).status, 401, 'still refused');
    t.equal(refusalsNow().length, 2, 'and not logged within the 10 s');
    clock.ms += 1;
    t.equal((await post(nodeB.url, { ...octets, authorization: `Bearer ${WRONG}` }, good)).status, 401);
    t.match(refusalsNow()[2], { credentials: 'wrong', notLogged: 20 }, 'after them, a line saying how many were not logged');
  });

  t.test('refusals from many addresses are logged at most 10 times in 10 s, then counted in one line', async (t) => {
    // Before: the limit was per address, and 2,000 requests from 2,000 addresses (an IPv6 /64 holds
    // far more) logged 2,000 lines.
    clock.ms += REFUSAL_LOG_MS;
    const before = nodeB.logs.length;
    for (let i = 0; i < 30; i++) {
      const res = await nodeB.app.inject({ method: 'POST', url: '/internal/raft', remoteAddress: `2001:db8::${i + 1}`, headers: { ...octets, authorization: `Bearer ${WRONG}` }, payload: good });
      t.equal(res.statusCode, 401);
    }
    const lines = (): Record<string, unknown>[] =>
      nodeB.logs
        .slice(before)
        .filter((l) => l.includes('inter-node request'))
        .map((l) => JSON.parse(l) as Record<string, unknown>);
    t.equal(lines().length, MAX_REFUSAL_LINES, `${MAX_REFUSAL_LINES} lines for 30 addresses`);
    clock.ms += REFUSAL_LOG_MS;
    await nodeB.app.inject({ method: 'POST', url: '/internal/raft', remoteAddress: '2001:db8::99', headers: { ...octets, authorization: `Bearer ${WRONG}` }, payload: good });
    t.match(lines().slice(MAX_REFUSAL_LINES), [{ notLogged: 20, msg: /20 more were not logged/ }, { credentials: 'wrong' }], 'then one line counting the 20 left out, and the new refusal');
  });

  t.test('a transport with a wrong secret fails, counts and warns once', async (t) => {
    nodeB.received.length = 0;
    const { tr, warnings } = transport(t, a, [nodeB], { clusterSecret: WRONG });
    tr.send([{ partition: 0, message: heartbeat(a, b, 1) }]);
    await until('the first failure', () => tr.stats().failed === 1);
    tr.send([{ partition: 0, message: heartbeat(a, b, 2) }]);
    tr.send([{ partition: 1, message: heartbeat(a, b, 2) }]);
    await until('the second failure', () => tr.stats().failed === 3);
    t.match(tr.stats(), { sent: 0, dropped: 0, failed: 3, queued: 0 });
    t.equal(nodeB.received.length, 0, 'onMessages was never called');
    t.equal(warnings.length, 1, 'one warning per peer per interval');
    t.match(warnings[0]?.obj, { peer: b, reason: /^answered 401/ });
    t.notOk(JSON.stringify(warnings).includes(WRONG), 'the warning does not carry the secret');
  });

  t.test('an empty secret is refused up front', async (t) => {
    t.throws(() => new HttpTransport({ self: a, peers: [], clusterSecret: '' }), TypeError);
    t.throws(() => new HttpTransport({ self: a, peers: [], clusterSecret: 'with space' }), TypeError);
    const app = Fastify();
    t.teardown(() => app.close());
    await t.rejects(async () => {
      await app.register(internalRoutes, { clusterSecret: '', onMessages: () => {}, snapshotFile: () => null });
      await app.ready();
    }, TypeError);
  });
});

t.test('malformed bodies get 400 and the server keeps serving', async (t) => {
  const nodeB = await startNode(t, b);
  const auth = { authorization: `Bearer ${SECRET}` };
  const octets = { ...auth, 'content-type': 'application/octet-stream' };
  const bad: [string, Record<string, string>, Buffer | string | undefined][] = [
    ['garbage', octets, Buffer.from('definitely not a batch')],
    ['a JSON header of the wrong shape', octets, Buffer.concat([Buffer.from([1, 0, 0, 0, 2]), Buffer.from('{}')])],
    ['no body', octets, undefined],
    ['a JSON body', { ...auth, 'content-type': 'application/json' }, '{"from":"node-a","items":[]}'],
  ];
  for (const [name, headers, body] of bad) {
    const res = await post(nodeB.url, headers, body);
    t.equal(res.status, 400, name);
    t.match(res.type, /^application\/problem\+json/, name);
    t.match(res.json, { status: 400, code: 'validation_failed', detail: String }, name);
  }
  const text = await post(nodeB.url, { ...auth, 'content-type': 'text/html' }, '<p>');
  t.equal(text.status, 415, 'an unknown content type');
  t.match(text.json, { status: 415 });
  t.equal(nodeB.received.length, 0);

  const { tr } = transport(t, a, [nodeB]);
  tr.send(turnOf(a, b, 2));
  await until('a good batch after the bad ones', () => nodeB.received.length === 1);
  // The receiver has the batch before the sender has read the 204: wait for the sender's count too.
  await until('the sender counted it', () => tr.stats().sent === 4);
  t.equal(tr.stats().sent, 4);
});

t.test('a body over the limit gets 413', async (t) => {
  const app = Fastify();
  await app.register(internalRoutes, { clusterSecret: SECRET, bodyLimit: 1024, onMessages: () => {}, snapshotFile: () => null });
  t.teardown(() => app.close());
  const res = await app.inject({
    method: 'POST',
    url: '/internal/raft',
    headers: { authorization: `Bearer ${SECRET}`, 'content-type': 'application/octet-stream' },
    payload: Buffer.alloc(2048),
  });
  t.equal(res.statusCode, 413);
  t.match(res.json(), { status: 413, code: 'payload_too_large' });
});

t.test('a batch for another node is refused: 421 to a POST, a refusal that ends a stream', async (t) => {
  const nodeB = await startNode(t, b);
  const c = nodeId('node-c');
  // A peer table that puts node-c at node-b's address.
  for (const streams of [true, false]) {
    const { tr, warnings } = transport(t, a, [{ id: c, url: nodeB.url }], { streams });
    tr.send([{ partition: 0, message: heartbeat(a, c, 1) }]);
    await until('the failure', () => tr.stats().failed === 1);
    t.equal(nodeB.received.length, 0);
    t.match(warnings[0]?.obj, { peer: c, reason: streams ? /^refused: this is node node-b, not node-c/ : /^answered 421/ });
  }
});

t.test('Raft streams', async (t) => {
  t.test('one request carries many batches', async (t) => {
    const nodeB = await startNode(t, b);
    const { tr } = transport(t, a, [nodeB]);
    for (let term = 1; term <= 20; term++) {
      tr.send(turnOf(a, b, 3, term));
      await until(`batch ${term}`, () => tr.stats().sent === term * 6);
    }
    t.equal(nodeB.received.length, 20, 'twenty batches');
    t.strictSame(nodeB.received.map((r) => r.items[0]?.message.term), Array.from({ length: 20 }, (_, i) => i + 1), 'in order');
    t.same(nodeB.received[19]?.items, turnOf(a, b, 3, 20), 'intact');
    t.strictSame(nodeB.requests, ['/internal/raft-stream'], 'in one request');
    t.match(tr.peerStates(), [{ peer: b, streaming: true, inFlight: false, failures: 0 }]);
  });

  t.test('a stream is replaced when it is old, and nothing is lost at the change', async (t) => {
    const nodeB = await startNode(t, b);
    const { tr } = transport(t, a, [nodeB], { streamMaxAgeMs: 30 });
    for (let term = 1; term <= 4; term++) {
      tr.send(turnOf(a, b, 2, term));
      await until(`batch ${term}`, () => tr.stats().sent === term * 4);
      await new Promise((resolve) => setTimeout(resolve, 40));
    }
    t.equal(nodeB.requests.length, 4, 'a new request per batch, each older than 30 ms');
    t.equal(nodeB.received.length, 4);
    t.match(tr.stats(), { sent: 16, dropped: 0, failed: 0, queued: 0 });
    await until('the three old streams to end', () => nodeB.answered.length === 3);
    t.equal(nodeB.logs.length, 0, 'an old stream ends cleanly, not inside a frame');
  });

  t.test('a stream is replaced only once the peer acknowledged all it holds, so batches keep their order', async (t) => {
    const nodeB = await startNode(t, b);
    const { tr } = transport(t, a, [nodeB], { streamMaxAgeMs: 30 });
    let release = () => {};
    nodeB.gate = new Promise((resolve) => (release = resolve));
    tr.send(turnOf(a, b, 2, 1));
    await until('the first batch', () => nodeB.received.length === 1);
    await new Promise((resolve) => setTimeout(resolve, 40));
    tr.send(turnOf(a, b, 2, 2));
    // The peer holds the first batch, so nothing can acknowledge it: however long this waits, the
    // old stream is not replaced meanwhile.
    await new Promise((resolve) => setTimeout(resolve, 50));
    t.equal(nodeB.requests.length, 1, 'no new stream while the old one holds a frame');
    t.match(tr.peerStates(), [{ inFlight: true }], 'the second batch waits');
    nodeB.gate = null;
    release();
    await until('both batches', () => tr.stats().sent === 8);
    t.strictSame(nodeB.received.map((r) => r.items[0]?.message.term), [1, 2], 'in order');
    t.equal(nodeB.requests.length, 2, 'the second in a new stream');
    t.match(tr.stats(), { sent: 8, failed: 0, dropped: 0, batches: 2 });
    await until('the old stream to end', () => nodeB.answered.length === 1);
    t.equal(nodeB.logs.length, 0, 'the old stream ended cleanly');
  });

  t.test('a stream that fails while a batch waits for room loses what it held, backs off, and the waiting batch goes next', async (t) => {
    const nodeB = await startNode(t, b);
    const { tr, warnings } = transport(t, a, [nodeB], { streamWindow: 1, requestTimeoutMs: 200 });
    let release = () => {};
    nodeB.gate = new Promise((resolve) => (release = resolve));
    tr.send(turnOf(a, b, 1, 1));
    await until('the first batch', () => nodeB.received.length === 1);
    tr.send(turnOf(a, b, 1, 2));
    await nextTurn();
    t.equal(tr.stats().queued, 2, 'the second batch waits behind the full window');
    await until('the failure', () => tr.stats().failed === 2);
    t.match(warnings[0]?.obj, { peer: b, reason: /no acknowledgement within 200 ms/, messages: 2 });
    nodeB.gate = null;
    release();
    await until('the second batch', () => tr.stats().sent === 2);
    t.match(tr.stats(), { sent: 2, failed: 2, dropped: 0, queued: 0 });
    t.strictSame(nodeB.received.map((r) => r.items[0]?.message.term), [1, 2], 'the first was taken late, which Raft allows');
    t.equal(nodeB.requests.length, 2, 'the second in a new stream');
    t.match(tr.peerStates(), [{ failures: 0, backingOff: false, inFlight: false }]);
  });

  t.test('the receiver acknowledges once per half the sender\'s window, at the end, and within a few ms', async (t) => {
    const nodeB = await startNode(t, b);
    const base = { authorization: `Bearer ${SECRET}`, 'content-type': FRAMES_TYPE };
    const good = encodeBatch(a, [{ partition: 0, message: heartbeat(a, b, 1) }]);
    const frame = Buffer.concat([Buffer.from([0, 0, 0, good.byteLength]), good]);
    const words = async (headers: Record<string, string>, frames: number) => {
      const res = await request(`${nodeB.url}/internal/raft-stream`, { method: 'POST', headers: { ...base, ...headers }, body: Buffer.concat(Array.from({ length: frames }, () => frame)) });
      const answer = Buffer.from(await res.body.arrayBuffer());
      return Array.from({ length: answer.byteLength / 4 }, (_, i) => answer.readUInt32BE(i * 4));
    };
    t.strictSame(await words({}, 5), [1, 2, 3, 4, 5], 'no window said (an older sender): every frame');
    t.strictSame(await words({ [WINDOW_HEADER]: '1' }, 3), [1, 2, 3], 'a window of 1: every frame');
    t.strictSame(await words({ [WINDOW_HEADER]: '4' }, 9), [2, 4, 6, 8, 9], 'a window of 4: every second frame, and the last at the end');
    // (Each body is under 3 KB, written at once: the receiver reads it in one chunk and takes its
    // frames without a turn of the event loop between them, where its timer could acknowledge.)
    t.strictSame(await words({ [WINDOW_HEADER]: '32' }, 40), [16, 32, 40], 'a window of 32');
    t.strictSame(await words({ [WINDOW_HEADER]: 'lots' }, 2), [1, 2], 'a malformed window is 1');

    // A frame alone in an open stream is acknowledged without waiting for more.
    const body = new PassThrough();
    // The answer's headers leave with its first word.
    const answered = request(`${nodeB.url}/internal/raft-stream`, { method: 'POST', headers: { ...base, [WINDOW_HEADER]: '32' }, body });
    body.write(frame);
    const res = await answered;
    const [first] = (await once(res.body, 'data')) as [Buffer];
    t.equal(first.readUInt32BE(0), 1, 'acknowledged while the stream stays open');
    body.end();
    await res.body.dump();
  });

  t.test('appends lost with a stream are reported by partition, so their groups send again at once', async (t) => {
    const nodeB = await startNode(t, b);
    const lost: [NodeId, number[]][] = [];
    const { tr } = transport(t, a, [nodeB], { requestTimeoutMs: 200, onLost: (peer, partitions) => void lost.push([peer, [...partitions].sort((x, y) => x - y)]) });
    let release = () => {};
    nodeB.gate = new Promise((resolve) => (release = resolve));
    // Appends of partitions 0 to 2, and heartbeats; plus a heartbeat alone for partition 7.
    tr.send([...turnOf(a, b, 3), { partition: 7, message: heartbeat(a, b, 1) }]);
    await until('the failure', () => tr.stats().failed === 7);
    t.same(lost, [[b, [0, 1, 2]]], 'once, with the partitions whose appends were in the lost frame');
    nodeB.gate = null;
    release();
    tr.send([{ partition: 4, message: heartbeat(a, b, 1) }]);
    await until('the next batch', () => tr.stats().sent === 1);
    t.equal(lost.length, 1, 'nothing more for a batch delivered');
  });

  t.test('a frame not acknowledged in time fails its batch and the stream; the next batch opens another', async (t) => {
    const nodeB = await startNode(t, b);
    const { tr, warnings } = transport(t, a, [nodeB], { requestTimeoutMs: 200 });
    let release = () => {};
    nodeB.gate = new Promise((resolve) => (release = resolve));
    tr.send([{ partition: 0, message: heartbeat(a, b, 1) }]);
    await until('the failure', () => tr.stats().failed === 1);
    t.match(warnings[0]?.obj, { peer: b, reason: /no acknowledgement within 200 ms/ });
    nodeB.gate = null;
    release();
    tr.send([{ partition: 0, message: heartbeat(a, b, 2) }]);
    await until('the next batch', () => tr.stats().sent === 1);
    t.equal(nodeB.requests.length, 2, 'in a new stream');
    t.strictSame(nodeB.received.map((r) => r.items[0]?.message.term), [1, 2], 'the first was taken late, which Raft allows');
  });

  t.test('a peer without the stream route (an older build) gets one POST per batch', async (t) => {
    const received: BatchItem[][] = [];
    const urls: string[] = [];
    const app = Fastify();
    app.addContentTypeParser('application/octet-stream', { parseAs: 'buffer' }, (_req, body, done) => done(null, body));
    app.addHook('onRequest', async (request) => void urls.push(request.url));
    app.post('/internal/raft', async (request, reply) => {
      received.push(decodeBatch(request.body as Buffer).items);
      return reply.code(204).send();
    });
    await app.listen({ host: '127.0.0.1', port: 0 });
    t.teardown(() => app.close());
    const { tr, warnings } = transport(t, a, [{ id: b, url: `http://127.0.0.1:${(app.server.address() as AddressInfo).port}` }]);
    for (let term = 1; term <= 3; term++) {
      tr.send(turnOf(a, b, 2, term));
      await until(`batch ${term}`, () => tr.stats().sent === term * 4);
    }
    t.strictSame(urls, ['/internal/raft-stream', '/internal/raft', '/internal/raft', '/internal/raft'], 'one refused stream, then POSTs');
    t.same(received, [1, 2, 3].map((term) => turnOf(a, b, 2, term)), 'every batch, the first included');
    t.match(tr.stats(), { sent: 12, dropped: 0, failed: 0, queued: 0 });
    t.equal(warnings.length, 0, 'nothing to warn about');
  });

  t.test('a malformed stream is refused and the server keeps serving', async (t) => {
    const nodeB = await startNode(t, b);
    const headers = { authorization: `Bearer ${SECRET}`, 'content-type': FRAMES_TYPE };
    const frame = (bytes: Buffer) => Buffer.concat([Buffer.from([0, 0, 0, bytes.byteLength]), bytes]);
    const bad: [string, Buffer, RegExp][] = [
      ['garbage in a frame', frame(Buffer.from('definitely not a batch')), /.+/],
      ['an empty frame', Buffer.from([0, 0, 0, 0]), /a frame of 0 bytes/],
      ['a frame past the limit', Buffer.from([0x7f, 0, 0, 0]), /a frame of 2130706432 bytes/],
    ];
    for (const [name, body, detail] of bad) {
      const res = await request(`${nodeB.url}/internal/raft-stream`, { method: 'POST', headers, body });
      const answer = Buffer.from(await res.body.arrayBuffer());
      t.equal(res.statusCode, 200, name);
      t.equal(answer.readUInt32BE(0), REFUSED, `${name}: refused`);
      t.match(answer.subarray(4).toString('utf8'), detail, name);
    }
    const good = encodeBatch(a, [{ partition: 0, message: heartbeat(a, b, 1) }]);
    const res = await request(`${nodeB.url}/internal/raft-stream`, { method: 'POST', headers, body: Buffer.concat([frame(good).subarray(0, 4), good, frame(good).subarray(0, 4), good]) });
    t.strictSame([...Buffer.from(await res.body.arrayBuffer())], [0, 0, 0, 1, 0, 0, 0, 2], 'two good frames, two acknowledgements');
    const json = await request(`${nodeB.url}/internal/raft-stream`, { method: 'POST', headers: { ...headers, 'content-type': 'application/json' }, body: '{}' });
    t.equal(json.statusCode, 415, 'another content type');
    await json.body.dump();
    const anonymous = await request(`${nodeB.url}/internal/raft-stream`, { method: 'POST', headers: { 'content-type': FRAMES_TYPE }, body: frame(good) });
    t.equal(anonymous.statusCode, 401, 'no secret');
    await anonymous.body.dump();
    t.equal(nodeB.received.length, 2, 'only the good frames reached the node');
  });

  t.test('a stream idle past the receiver\'s limit is cut; the next batch opens another', async (t) => {
    const nodeB = await startNode(t, b, { streamIdleMs: 100 });
    const { tr } = transport(t, a, [nodeB]);
    tr.send([{ partition: 0, message: heartbeat(a, b, 1) }]);
    await until('the batch', () => tr.stats().sent === 1);
    await until('the stream to be cut', () => tr.peerStates()[0]?.streaming === false);
    t.match(tr.peerStates(), [{ failures: 0, backingOff: false }], 'a stream cut with nothing unacknowledged is no failure');
    tr.send([{ partition: 0, message: heartbeat(a, b, 2) }]);
    await until('the next batch', () => tr.stats().sent === 2);
    t.equal(nodeB.requests.length, 2, 'in a new stream');
    t.match(tr.stats(), { failed: 0, dropped: 0 });
  });

  t.test('a stream that reaches its handler after the close began is refused, and the close does not wait for it', async (t) => {
    const app = Fastify();
    let release = () => {};
    const held = new Promise<void>((resolve) => (release = resolve));
    let arrived = () => {};
    const atHook = new Promise<void>((resolve) => (arrived = resolve));
    // Holds the stream's request between its hooks and its handler while the close begins.
    app.addHook('onRequest', async () => {
      arrived();
      await held;
    });
    await app.register(internalRoutes, { clusterSecret: SECRET, self: b, onMessages: () => {}, snapshotFile: () => null });
    await app.listen({ host: '127.0.0.1', port: 0 });
    const { tr } = transport(t, a, [{ id: b, url: `http://127.0.0.1:${(app.server.address() as AddressInfo).port}` }]);
    tr.send([{ partition: 0, message: heartbeat(a, b, 1) }]);
    await atHook;
    const closed = app.close();
    // The server stops listening after every preClose hook ran: only then does the request go on.
    while (app.server.listening) await new Promise((resolve) => setTimeout(resolve, 5));
    release();
    // The sender keeps sending meanwhile; the close must not wait for its stream.
    let term = 1;
    let done = false;
    void closed.then(() => (done = true));
    while (!done) {
      tr.send([{ partition: 0, message: heartbeat(a, b, ++term) }]);
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    t.ok(done, 'closed while the sender went on sending (it hangs until the sender stops without the refusal)');
  });

  t.test('a closing node cuts the streams it serves instead of waiting for them', async (t) => {
    const nodeB = await startNode(t, b);
    const { tr } = transport(t, a, [nodeB]);
    tr.send([{ partition: 0, message: heartbeat(a, b, 1) }]);
    await until('the batch', () => tr.stats().sent === 1);
    t.match(tr.peerStates(), [{ streaming: true }]);
    await nodeB.app.close();
    await until('the stream to end', () => tr.peerStates()[0]?.streaming === false);
  });
});

t.test('a dead peer: send drops instead of throwing, and the queue stays bounded', async (t) => {
  const dead = { id: b, url: `http://127.0.0.1:${await deadPort()}` };
  const maxQueuedPerPeer = 1_000;
  const { tr, warnings } = transport(t, a, [dead], { maxQueuedPerPeer });

  let most = 0;
  for (let i = 0; i < 50_000; i++) {
    tr.send([{ partition: i % 1024, message: heartbeat(a, b, i) }]);
    most = Math.max(most, tr.stats().queued);
  }
  t.equal(most, maxQueuedPerPeer, 'never more than maxQueuedPerPeer queued');
  t.equal(tr.stats().dropped, 50_000 - maxQueuedPerPeer, 'the oldest were dropped');
  await until('the request to fail', () => tr.stats().failed === maxQueuedPerPeer);
  t.match(tr.stats(), { sent: 0, dropped: 49_000, failed: 1_000, queued: 0 });

  // One send of 50,000 at once, and again while the peer is in backoff.
  tr.send(Array.from({ length: 50_000 }, (_, i) => ({ partition: 7, message: heartbeat(a, b, i) })));
  t.equal(tr.stats().queued, maxQueuedPerPeer);
  await until('the second failure', () => tr.stats().failed === 2_000);
  tr.send(Array.from({ length: 5 }, (_, i) => ({ partition: 7, message: heartbeat(a, b, i) })));
  await until('the third failure', () => tr.stats().failed === 2_005);
  t.match(tr.stats(), { sent: 0, dropped: 98_000, failed: 2_005, queued: 0 });
  t.equal(warnings.length, 1, 'reported once in ten seconds');
  t.match(warnings[0], { obj: { peer: b, url: dead.url, reason: /ECONNREFUSED/ }, msg: String });

  tr.send([{ partition: 0, message: heartbeat(a, nodeId('nobody'), 1) }]);
  t.equal(tr.stats().dropped, 98_001, 'a message for an unknown node is dropped and counted');
});

t.test('a peer that stays down is reported lost appends once, not after every backoff', async (t) => {
  const dead = { id: b, url: `http://127.0.0.1:${await deadPort()}` };
  const lost: number[][] = [];
  const { tr } = transport(t, a, [dead], { onLost: (_peer, partitions) => void lost.push([...partitions]) });
  tr.send(turnOf(a, b, 2));
  await until('the first failure', () => tr.stats().failed === 4);
  t.same(lost, [[0, 1]], 'the first failure reports them');
  tr.send(turnOf(a, b, 2, 2));
  await until('the second failure', () => tr.stats().failed === 8);
  t.same(lost, [[0, 1]], 'the next ones do not');
});

t.test('answers owed to a peer whose stream never opened are dropped after their TTL, and their bytes with them', async (t) => {
  // The peer forwarded commands in its own stream to this node, then went away before this node's
  // stream to it opened: no frame ever takes the answers, so only their TTL lets them go.
  const dead = { id: b, url: `http://127.0.0.1:${await deadPort()}` };
  const { tr } = transport(t, a, [dead], { answerTtlMs: 200 });
  for (let i = 0; i < 1_000; i++) tr.answer(b, `AAAAAAAAAAAAAAAA.${i.toString(36)}`, { kind: 'not_leader', leader: null });
  tr.send([{ partition: 0, message: heartbeat(a, b, 1) }]);
  t.match(tr.peerStates(), [{ carries: false, answersHeld: 1_000 }], 'held while the peer never said it carries');
  t.ok(tr.peerStates()[0]!.carriedBytes > 0);
  await until('the answers to be dropped', () => tr.peerStates()[0]!.answersHeld === 0, 3_000);
  t.match(tr.peerStates(), [{ carries: false, answersHeld: 0, carriedBytes: 0 }], 'none held, no bytes counted for them');
  t.ok(tr.stats().failed > 0, 'the stream to the peer failed meanwhile');
});

t.test('the longest TTL an answer may have arms no timer past what Node takes', async (t) => {
  const warnings: string[] = [];
  const onWarning = (w: Error): void => void warnings.push(w.name);
  process.on('warning', onWarning);
  t.teardown(() => process.off('warning', onWarning));
  const dead = { id: b, url: `http://127.0.0.1:${await deadPort()}` };
  const { tr } = transport(t, a, [dead], { answerTtlMs: 2 ** 31 - 1 });
  t.throws(() => transport(t, a, [dead], { answerTtlMs: 2 ** 31 }), RangeError);
  tr.answer(b, 'AAAAAAAAAAAAAAAA.0', { kind: 'not_leader', leader: null });
  await new Promise((resolve) => setTimeout(resolve, 50));
  t.same(warnings, [], 'no TimeoutOverflowWarning');
  t.match(tr.peerStates(), [{ answersHeld: 1 }], 'the answer is held');
});

t.test('send() throws only on a caller bug', async (t) => {
  const { tr } = transport(t, a, []);
  t.throws(() => tr.send([{ partition: 1024, message: heartbeat(a, b, 1) }]), RangeError);
  t.throws(() => tr.send([{ partition: 0, message: heartbeat(b, a, 1) }]), TypeError, 'a message from another node');
  t.match(tr.stats(), { sent: 0, dropped: 0, failed: 0, queued: 0 }, 'and then queues nothing at all');
});

t.test('fetchSnapshot', async (t) => {
  const nodeB = await startNode(t, b);
  const { tr } = transport(t, a, [nodeB], { snapshotTimeoutMs: 300 });
  const content = randomBytes(3 * 1024 * 1024 + 17);
  content[0] = 0;
  const source = join(dir, 'source.snap');
  writeFileSync(source, content);
  const ref = 'p3/i100 t4+ü.snap';
  nodeB.snapshots.set(`3/${ref}`, source);

  t.test('copies the file byte for byte, through .part', async (t) => {
    const dest = join(dir, 'fetched.snap');
    await tr.fetchSnapshot(b, 3, ref, dest);
    t.ok(readFileSync(dest).equals(content), 'identical');
    t.notOk(existsSync(`${dest}.part`), 'no .part left');
  });

  t.test('the serving node is told as each chunk leaves, so that it keeps a long download\'s image in use', async (t) => {
    nodeB.snapshotReads.length = 0;
    await tr.fetchSnapshot(b, 3, ref, join(dir, 'told.snap'));
    // 3 MiB read 64 KiB at a time.
    t.ok(nodeB.snapshotReads.length >= 3, `told ${nodeB.snapshotReads.length} times`);
    t.strictSame(new Set(nodeB.snapshotReads.map((r) => `${r.partition} ${r.path}`)), new Set([`3 ${source}`]), 'of that partition and file');
  });

  t.test('an empty file', async (t) => {
    const empty = join(dir, 'empty.snap');
    writeFileSync(empty, '');
    nodeB.snapshots.set('4/empty', empty);
    const dest = join(dir, 'fetched-empty.snap');
    await tr.fetchSnapshot(b, 4, 'empty', dest);
    t.equal(readFileSync(dest).length, 0);
  });

  t.test('a missing ref rejects with 404 and leaves nothing behind', async (t) => {
    const dest = join(dir, 'missing.snap');
    await t.rejects(tr.fetchSnapshot(b, 3, 'no-such-ref', dest), { name: 'SnapshotFetchError', status: 404 });
    await t.rejects(tr.fetchSnapshot(b, 2, ref, dest), SnapshotFetchError, 'the right ref of another partition');
    nodeB.snapshots.set('5/gone', join(dir, 'deleted.snap'));
    await t.rejects(tr.fetchSnapshot(b, 5, 'gone', dest), { name: 'SnapshotFetchError', status: 404 }, 'a ref whose file is gone');
    t.notOk(existsSync(dest));
    t.notOk(existsSync(`${dest}.part`));
  });

  t.test('a destination folder that does not exist rejects, and the connection is released', async (t) => {
    await t.rejects(tr.fetchSnapshot(b, 3, ref, join(dir, 'no-such-dir', 'x.snap')), { name: 'SnapshotFetchError', message: /ENOENT/ });
    const dest = join(dir, 'after-enoent.snap');
    await tr.fetchSnapshot(b, 3, ref, dest);
    t.ok(readFileSync(dest).equals(content));
  });

  t.test('an unknown peer or a bad partition rejects', async (t) => {
    await t.rejects(tr.fetchSnapshot(nodeId('nobody'), 3, ref, join(dir, 'x')), SnapshotFetchError);
    await t.rejects(tr.fetchSnapshot(b, 5000, ref, join(dir, 'x')), { name: 'SnapshotFetchError', status: 400 });
  });

  t.test('a body cut short rejects and leaves nothing behind', async (t) => {
    // A fake peer that promises 1000 bytes, sends 10 and hangs up.
    const fake = createHttpServer((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': '1000' });
      res.write(Buffer.alloc(10), () => res.destroy());
    });
    fake.listen(0, '127.0.0.1');
    await once(fake, 'listening');
    t.teardown(() => new Promise<void>((resolve) => fake.close(() => resolve())));
    const { tr: toFake } = transport(t, a, [{ id: b, url: `http://127.0.0.1:${(fake.address() as AddressInfo).port}` }]);
    const dest = join(dir, 'cut.snap');
    await t.rejects(toFake.fetchSnapshot(b, 3, ref, dest), { name: 'SnapshotFetchError' });
    t.notOk(existsSync(dest));
    t.notOk(existsSync(`${dest}.part`));
  });

  t.test('the answer says the image\'s SHA-256, which the copy must have', async (t) => {
    const res = await request(`${nodeB.url}/internal/snapshot/3/${encodeURIComponent(ref)}`, { headers: { authorization: `Bearer ${SECRET}` } });
    await res.body.arrayBuffer();
    t.equal(res.headers[IMAGE_DIGEST_HEADER], createHash('sha256').update(content).digest('hex'), 'the SHA-256 of the whole file');
    const again = await request(`${nodeB.url}/internal/snapshot/3/${encodeURIComponent(ref)}`, { headers: { authorization: `Bearer ${SECRET}` } });
    await again.body.arrayBuffer();
    t.equal(again.headers[IMAGE_DIGEST_HEADER], res.headers[IMAGE_DIGEST_HEADER], 'the same on the next fetch');
    // The file replaced under the same path (a newer image): its own digest, not the one kept.
    const newer = join(dir, 'newer.snap');
    writeFileSync(newer, 'newer image');
    nodeB.snapshots.set('6/newer', newer);
    const first = await request(`${nodeB.url}/internal/snapshot/6/newer`, { headers: { authorization: `Bearer ${SECRET}` } });
    await first.body.arrayBuffer();
    writeFileSync(newer, 'a newer image still');
    const second = await request(`${nodeB.url}/internal/snapshot/6/newer`, { headers: { authorization: `Bearer ${SECRET}` } });
    await second.body.arrayBuffer();
    t.equal(second.headers[IMAGE_DIGEST_HEADER], createHash('sha256').update('a newer image still').digest('hex'), 'a file changed in place gets its new digest');
  });

  /** A fake peer answering every snapshot fetch with `body` and `headers`; the requests' headers are kept. */
  const fakePeer = async (t: Test, body: Buffer, headers: Record<string, string>) => {
    const asked: Record<string, string | string[] | undefined>[] = [];
    const fake = createHttpServer((req, res) => {
      asked.push(req.headers);
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(body.length), ...headers });
      res.end(body);
    });
    fake.listen(0, '127.0.0.1');
    await once(fake, 'listening');
    t.teardown(() => new Promise<void>((resolve) => fake.close(() => resolve())));
    const { tr: toFake } = transport(t, a, [{ id: b, url: `http://127.0.0.1:${(fake.address() as AddressInfo).port}` }], { tokenKey: 'token-key-of-a' });
    return { toFake, asked };
  };

  t.test('a copy whose SHA-256 is not the peer\'s is refused and leaves nothing behind', async (t) => {
    const { toFake, asked } = await fakePeer(t, content, { [IMAGE_DIGEST_HEADER]: createHash('sha256').update('another image').digest('hex') });
    const dest = join(dir, 'damaged.snap');
    await t.rejects(toFake.fetchSnapshot(b, 3, ref, dest), { name: 'SnapshotFetchError', message: /SHA-256/ });
    t.notOk(existsSync(dest));
    t.notOk(existsSync(`${dest}.part`));
    t.equal(asked[0]?.[TOKEN_KEY_HEADER], 'token-key-of-a', 'the fetch says which key this node signs tokens with, as its other requests do');
  });

  t.test('an image from a build that says no digest is taken on its length', async (t) => {
    const { toFake } = await fakePeer(t, content, {});
    const dest = join(dir, 'older-build.snap');
    await toFake.fetchSnapshot(b, 3, ref, dest);
    t.ok(readFileSync(dest).equals(content));
  });

  t.test('a peer that does not answer in time rejects', async (t) => {
    let release = () => {};
    nodeB.snapshotGate = new Promise((resolve) => (release = resolve));
    t.teardown(() => {
      nodeB.snapshotGate = null;
      release();
    });
    const dest = join(dir, 'slow.snap');
    await t.rejects(tr.fetchSnapshot(b, 3, ref, dest), { name: 'SnapshotFetchError', message: /Headers Timeout|timeout/i });
    t.notOk(existsSync(dest));
  });
});

t.test('the internal routes are hidden from the public document', async (t) => {
  const nodeB = await startNode(t, b);
  const internal = nodeB.routes.filter((r) => r.route.includes(' /internal/'));
  t.strictSame(
    internal.map((r) => r.route).sort(),
    [
      'GET /internal/snapshot/:partition/:ref',
      'POST /internal/command',
      'POST /internal/commands',
      'POST /internal/limits',
      'POST /internal/positions',
      'POST /internal/propose',
      'POST /internal/query',
      'POST /internal/raft',
      'POST /internal/raft-stream',
    ],
  );
  t.ok(internal.every((r) => r.hidden), 'every one has schema.hide');
});

t.test('close() drops what is queued and refuses further work', async (t) => {
  const dead = { id: b, url: `http://127.0.0.1:${await deadPort()}` };
  const { tr } = transport(t, a, [dead]);
  tr.send([{ partition: 0, message: heartbeat(a, b, 1) }]);
  tr.send([{ partition: 0, message: heartbeat(a, b, 2) }]);
  t.equal(tr.stats().queued, 2);
  await tr.close();
  t.equal(tr.stats().queued, 0);
  t.equal(tr.stats().dropped, 2);
  tr.send([{ partition: 0, message: heartbeat(a, b, 3) }]);
  t.equal(tr.stats().dropped, 3);
  await t.rejects(tr.fetchSnapshot(b, 0, 'x', join(dir, 'after-close')), SnapshotFetchError);
  await tr.close();
});

t.test('a call that gets no answer in time fails as a timeout (the forwarder answers 504 for it), and a prompt one answers', async (t) => {
  const held: ServerResponse[] = [];
  const server = createHttpServer((req, res) => {
    if (req.url?.endsWith('/slow') === true) return void held.push(res);
    res.setHeader('content-type', 'application/json');
    res.end('{"result":1}');
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => {
    for (const res of held) res.destroy();
    server.close();
  });
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const { tr } = transport(t, a, [{ id: b, url }]);
  t.same(await tr.call(b, '/fast', {}, { timeoutMs: 5_000 }), { status: 200, body: { result: 1 } });
  await t.rejects(tr.call(b, '/slow', {}, { timeoutMs: 200 }), { name: 'TimeoutError' });
});
