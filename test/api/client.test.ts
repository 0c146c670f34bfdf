// The use cases of the REST contract (docs/api.md), run by a client generated from the OpenAPI
// document (openapi-fetch over ./generated/openapi.d.ts) against three real nodes. Every use case runs
// once through each node, with its own queue and topic names, and most steps hop to another node on
// the way: any node must serve any request, whichever node leads the name's partition.
import { readFileSync } from 'node:fs';
import createClient, { type Client } from 'openapi-fetch';
import t, { type Test } from 'tap';
import { OPENAPI_FILE } from '../../scripts/openapi.js';
import { partitionOf } from '../../src/partition/routing.js';
import { until } from '../cluster/net-helpers.js';
import { startCluster } from './api-helpers.js';
import type { components, paths } from './generated/openapi.js';

// The document's named schemas, as a client generated from it names them.
type Api = Client<paths>;
type QueueCreate = components['schemas']['CreateQueueRequest'];
type MessageInput = components['schemas']['Message'];
type ReceiveInput = components['schemas']['ReceiveRequest'];
type Received = components['schemas']['ReceivedMessage'];

// Three nodes on a loaded 2-core machine: more than tap's default 30 s when run alone through tsx.
t.setTimeout(120_000);

const PARTITIONS = 4;
const cluster = await startCluster({ partitions: PARTITIONS });
t.teardown(() => cluster.close());

const COMMITTED_DOCUMENT: unknown = JSON.parse(readFileSync(OPENAPI_FILE, 'utf8'));
const NODES = cluster.urls.map((_, i) => i);
/** The node `k` steps after node `i`, so that a use case's steps visit every node. */
const hop = (i: number, k = 1): number => (i + k) % NODES.length;
const nodeName = (i: number): string => `n${i + 1}`;

const USERS = ['alice', 'bob', 'carol'] as const;
type User = (typeof USERS)[number];
const password = (u: string): string => `password-of-${u}`;

const anonymous = NODES.map((i) => createClient<paths>({ baseUrl: cluster.urls[i]! }));
/** One access token a user, issued by one node and used on all: a token from one node is good on all. */
const tokens = new Map<User, string>();
const clients = new Map<string, Api>();

function as(user: User, node: number): Api {
  const key = `${user}@${node}`;
  let c = clients.get(key);
  if (c === undefined) {
    const token = tokens.get(user);
    if (token === undefined) throw new Error(`no token for ${user}: the registration test did not pass`);
    c = createClient<paths>({ baseUrl: cluster.urls[node]!, headers: { authorization: `Bearer ${token}` } });
    clients.set(key, c);
  }
  return c;
}

interface Answer<D> {
  data?: D;
  error?: unknown;
  response: Response;
}

/** The body of a JSON success with `status`; anything else fails here, with the problem in the message. */
function ok<D>(t: Test, r: Answer<D>, status: number, what: string): D {
  t.equal(r.response.status, status, `${what}: ${status}`);
  if (r.data === undefined) throw new Error(`${what}: ${r.response.status} ${JSON.stringify(r.error)}`);
  t.match(r.response.headers.get('content-type'), /^application\/json/, `${what}: JSON`);
  return r.data;
}

function noContent(t: Test, r: Answer<unknown>, what: string): void {
  t.equal(r.response.status, 204, `${what}: 204`);
}

/** An RFC 9457 problem with the status and code docs/api.md assigns. */
function problem(t: Test, r: Answer<unknown>, status: number, code: string, what: string): void {
  t.equal(r.response.status, status, `${what}: ${status}`);
  t.match(r.response.headers.get('content-type'), /^application\/problem\+json/, `${what}: problem+json`);
  t.match(r.error, { type: String, title: String, status, code, detail: String }, `${what}: ${code}`);
}

/** Retries `attempt` until it answers non-null, a bounded number of rounds (no timing assertion). */
async function eventually<T>(what: string, attempt: () => Promise<T | null>, rounds = 100, pauseMs = 50): Promise<T> {
  for (let i = 0; i < rounds; i++) {
    const v = await attempt();
    if (v !== null) return v;
    await new Promise((r) => setTimeout(r, pauseMs));
  }
  throw new Error(`gave up waiting for: ${what}`);
}

async function eachNode(t: Test, run: (t: Test, node: number) => Promise<void>): Promise<void> {
  for (const node of NODES) await t.test(`through ${nodeName(node)}`, (t) => run(t, node));
}

const ISO = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$/;
const EMPTY_STATS = { visible: 0, inFlight: 0, delayed: 0, dropped: 0, oldestMessageAgeSeconds: 0 };

async function createQueue(t: Test, node: number, body: QueueCreate, owner: User = 'alice') {
  return ok(t, await as(owner, node).POST('/v1/queues', { body }), 201, `create queue ${body.name}`);
}

async function send(t: Test, api: Api, queue: string, body: MessageInput) {
  return ok(t, await api.POST('/v1/queues/{queue}/messages', { params: { path: { queue } }, body }), 201, `send to ${queue}`);
}

async function receive(t: Test, api: Api, queue: string, body: ReceiveInput = {}): Promise<Received[]> {
  return ok(t, await api.POST('/v1/queues/{queue}/receive', { params: { path: { queue } }, body }), 200, `receive from ${queue}`).messages;
}

async function ack(t: Test, api: Api, queue: string, receiptHandles: string[]) {
  return ok(t, await api.POST('/v1/queues/{queue}/ack', { params: { path: { queue } }, body: { receiptHandles } }), 200, `ack on ${queue}`);
}

async function stats(t: Test, api: Api, queue: string) {
  return ok(t, await api.GET('/v1/queues/{queue}', { params: { path: { queue } } }), 200, `get ${queue}`).stats;
}

t.test('register, log in and who am I, through every node', async (t) => {
  await eachNode(t, async (t, i) => {
    const user = USERS[i]!;
    const reg = ok(t, await anonymous[i]!.POST('/v1/auth/register', { body: { username: user, password: password(user) } }), 201, `register ${user}`);
    t.match(reg, { username: user, createdAt: ISO });
    t.same(Object.keys(reg).sort(), ['createdAt', 'username'], 'the password hash is not echoed');
    problem(t, await anonymous[i]!.POST('/v1/auth/register', { body: { username: 'x', password: 'short' } }), 400, 'validation_failed', 'a name and password out of limits');
  });
  problem(t, await anonymous[1]!.POST('/v1/auth/register', { body: { username: 'alice', password: 'another-password' } }), 409, 'conflict', 'a name taken on another node');

  // Each user logs in through a node other than the one that registered them (bcrypt is slow: once each).
  await eachNode(t, async (t, i) => {
    const user = USERS[hop(i)]!;
    const login = ok(t, await anonymous[i]!.POST('/v1/auth/login', { body: { username: user, password: password(user) } }), 200, `log in ${user}`);
    t.match(login, { accessToken: String, tokenType: 'Bearer', expiresIn: Number });
    t.ok(login.expiresIn > 0, 'the token expires in the future');
    tokens.set(user, login.accessToken);
  });
  const wrong = await anonymous[2]!.POST('/v1/auth/login', { body: { username: 'alice', password: 'not-her-password' } });
  const unknown = await anonymous[2]!.POST('/v1/auth/login', { body: { username: 'nobody', password: 'whatever-it-is' } });
  problem(t, wrong, 401, 'unauthorized', 'a wrong password');
  problem(t, unknown, 401, 'unauthorized', 'an unknown user');
  t.same(unknown.error, wrong.error, 'both failures read alike: no user enumeration');

  await eachNode(t, async (t, i) => {
    for (const user of USERS) t.same(ok(t, await as(user, i).GET('/v1/auth/me'), 200, `me as ${user}`), { username: user });
    problem(t, await anonymous[i]!.GET('/v1/auth/me'), 401, 'unauthorized', 'no token');
    const forged = createClient<paths>({ baseUrl: cluster.urls[i]!, headers: { authorization: 'Bearer not.a.token' } });
    problem(t, await forged.GET('/v1/queues'), 401, 'unauthorized', 'a bad token');
  });
});

t.test('health, readiness, cluster state and metrics, on every node', async (t) => {
  await eachNode(t, async (t, i) => {
    const api = anonymous[i]!;
    t.same(ok(t, await api.GET('/healthz'), 200, 'healthz'), { status: 'ok' });
    // A leadership hand-over for balance may leave a partition briefly without a known leader.
    await eventually('ready', async () => ((await api.GET('/readyz')).response.status === 200 ? true : null));
    const c = ok(t, await api.GET('/v1/cluster'), 200, 'cluster');
    t.equal(c.node, nodeName(i), 'the answering node says who it is');
    t.equal(c.partitionCount, PARTITIONS);
    t.same(c.nodes.map((n) => n.id).sort(), ['n1', 'n2', 'n3']);
    t.same(c.partitions.map((p) => p.partition), [0, 1, 2, 3]);
    for (const p of c.partitions) t.ok(p.term >= 1 && p.appliedIndex <= p.commitIndex && p.commitIndex <= p.lastIndex, `partition ${p.partition} indexes are ordered`);
    const m = await api.GET('/metrics', { parseAs: 'text' });
    t.equal(m.response.status, 200, 'metrics');
    t.match(m.response.headers.get('content-type'), /^text\/plain/);
    t.match(m.data, /mom_http_requests_total/, 'Prometheus text with the request counter');
    t.notMatch(m.data, /mom_queue_messages/, 'without a metrics token, no queue name is shown');
    // The document this node serves is the committed one.
    const served = await fetch(`${cluster.urls[i]}/openapi.json`);
    t.same(await served.json(), COMMITTED_DOCUMENT, '/openapi.json is openapi/openapi.json');
    const docs = await fetch(`${cluster.urls[i]}/docs`);
    t.equal(docs.status, 200, 'Swagger UI at /docs');
    await docs.arrayBuffer();
  });
});

t.test('queues: create, get, grant another user, list', async (t) => {
  await eachNode(t, async (t, i) => {
    const name = `orders-${nodeName(i)}`;
    const q = await createQueue(t, i, { name });
    t.same(q, {
      name,
      owner: 'alice',
      visibilityTimeoutSeconds: 30,
      maxDeliveries: null,
      deadLetterQueue: null,
      delaySeconds: 0,
      retentionSeconds: 345600,
      createdAt: q.createdAt,
      stats: EMPTY_STATS,
    }, 'the defaults of docs/api.md');
    t.match(q.createdAt, ISO);
    problem(t, await as('alice', hop(i)).POST('/v1/queues', { body: { name } }), 409, 'conflict', 'the same name again');
    problem(t, await as('bob', hop(i, 2)).POST('/v1/queues', { body: { name } }), 409, 'conflict', 'names are global: another user cannot take it');
    problem(t, await as('alice', i).POST('/v1/queues', { body: { name: 'bad name!' } }), 400, 'validation_failed', 'a name out of its pattern');
    problem(t, await as('alice', i).POST('/v1/queues', { body: { name: `x-${name}`, retentionSeconds: 1 } }), 400, 'validation_failed', 'a retention below its limit');
    t.same(ok(t, await as('alice', hop(i)).GET('/v1/queues/{queue}', { params: { path: { queue: name } } }), 200, 'get through another node'), q);

    problem(t, await as('bob', i).GET('/v1/queues/{queue}', { params: { path: { queue: name } } }), 404, 'not_found', 'invisible to bob before a grant');
    const grant = await as('alice', i).PUT('/v1/queues/{queue}/grants/{username}', { params: { path: { queue: name, username: 'bob' } }, body: { actions: ['send', 'receive'] } });
    t.same(ok(t, grant, 200, 'grant bob'), { username: 'bob', actions: ['receive', 'send'] });
    problem(
      t,
      await as('alice', i).PUT('/v1/queues/{queue}/grants/{username}', { params: { path: { queue: name, username: 'nobody' } }, body: { actions: ['send'] } }),
      404,
      'not_found',
      'a grant to a user who does not exist',
    );
    const byGrantee = await as('bob', i).PUT('/v1/queues/{queue}/grants/{username}', { params: { path: { queue: name, username: 'carol' } }, body: { actions: ['send'] } });
    problem(t, byGrantee, 403, 'forbidden', 'a grantee may not grant');
    // It said "only the owner may list the grants": the look the route makes first.
    t.match(byGrantee.error, { detail: `only the owner may grant rights on queue '${name}'` }, 'the refusal names the grant');
    t.same(ok(t, await as('alice', hop(i)).GET('/v1/queues/{queue}/grants', { params: { path: { queue: name } } }), 200, 'list grants'), { items: [{ username: 'bob', actions: ['receive', 'send'] }] });
    problem(t, await as('bob', hop(i)).GET('/v1/queues/{queue}/grants', { params: { path: { queue: name } } }), 403, 'forbidden', 'a grantee may not list grants');
    t.equal(ok(t, await as('bob', hop(i, 2)).GET('/v1/queues/{queue}', { params: { path: { queue: name } } }), 200, 'bob sees it now').name, name);

    // The grant is worth something: bob sends and receives on alice's queue.
    const sent = await send(t, as('bob', hop(i)), name, { body: 'from bob' });
    const [m] = await receive(t, as('bob', hop(i, 2)), name);
    t.match(m, { messageId: sent.messageId, body: 'from bob' });
    t.same(await ack(t, as('bob', i), name, [m!.receiptHandle]), { acked: [m!.receiptHandle], failed: [] });

    // A send-only grant sends and receives nothing; revoked, the queue is hidden again.
    const carol = (node: number) => as('carol', node);
    ok(t, await as('alice', hop(i)).PUT('/v1/queues/{queue}/grants/{username}', { params: { path: { queue: name, username: 'carol' } }, body: { actions: ['send'] } }), 200, 'grant carol send');
    await send(t, carol(i), name, { body: 'from carol' });
    problem(t, await carol(hop(i)).POST('/v1/queues/{queue}/receive', { params: { path: { queue: name } }, body: {} }), 403, 'forbidden', 'a send grant does not receive');
    noContent(t, await as('alice', hop(i, 2)).DELETE('/v1/queues/{queue}/grants/{username}', { params: { path: { queue: name, username: 'carol' } } }), 'revoke carol');
    problem(t, await carol(i).GET('/v1/queues/{queue}', { params: { path: { queue: name } } }), 404, 'not_found', 'hidden from carol again');
    problem(t, await as('alice', i).DELETE('/v1/queues/{queue}/grants/{username}', { params: { path: { queue: name, username: 'carol' } } }), 404, 'not_found', 'revoked twice');
  });

  // Page by page, as each node answers: every queue alice owns appears once, in name order.
  const names: string[] = [];
  let cursor: string | undefined;
  for (let page = 0; page < 20; page++) {
    const api = as('alice', page % NODES.length);
    const r = ok(t, await api.GET('/v1/queues', { params: { query: { limit: 2, ...(cursor === undefined ? {} : { cursor }) } } }), 200, `page ${page}`);
    t.ok(r.items.length <= 2, 'no more than the limit');
    names.push(...r.items.map((q) => q.name));
    if (r.nextCursor === null) break;
    cursor = r.nextCursor;
  }
  t.same(names, [...new Set(names)].sort(), 'in name order, none twice');
  for (const i of NODES) t.ok(names.includes(`orders-${nodeName(i)}`), `orders-${nodeName(i)} listed`);
  const bobs = ok(t, await as('bob', 0).GET('/v1/queues'), 200, 'bob lists');
  t.same(bobs.items.map((q) => q.name), NODES.map((i) => `orders-${nodeName(i)}`), 'bob lists the queues he has a grant on');
  t.same(ok(t, await as('carol', 1).GET('/v1/queues'), 200, 'carol lists'), { items: [], nextCursor: null }, 'carol sees none');
});

t.test('send, receive and ack', async (t) => {
  await eachNode(t, async (t, i) => {
    const name = `basic-${nodeName(i)}`;
    await createQueue(t, i, { name });
    const a = await send(t, as('alice', i), name, { body: 'first', attributes: { kind: 'greeting', lang: 'en' } });
    const b = await send(t, as('alice', i), name, { body: 'second' });
    t.ok(b.sequence > a.sequence, 'sequence grows within the queue');
    t.not(a.messageId, b.messageId);
    t.match(await stats(t, as('alice', hop(i, 2)), name), { visible: 2, inFlight: 0, delayed: 0 });

    const got = await receive(t, as('alice', hop(i)), name, { maxMessages: 10 });
    t.equal(got.length, 2, 'both messages');
    const [m1, m2] = got as [Received, Received];
    t.same({ ...m1, receiptHandle: '', sentAt: '' }, { messageId: a.messageId, sequence: a.sequence, body: 'first', attributes: { kind: 'greeting', lang: 'en' }, receiptHandle: '', deliveryCount: 1, sentAt: '' }, 'the first as sent');
    t.match(m1.sentAt, ISO);
    t.match(m2, { messageId: b.messageId, sequence: b.sequence, body: 'second', attributes: {}, deliveryCount: 1 }, 'then the second: oldest first');
    t.match(await stats(t, as('alice', hop(i, 2)), name), { visible: 0, inFlight: 2 });
    t.same(await receive(t, as('alice', i), name), [], 'leased messages are not delivered again');

    const handles = [m1.receiptHandle, m2.receiptHandle];
    t.same(await ack(t, as('alice', hop(i, 2)), name, handles), { acked: handles, failed: [] });
    t.same(await ack(t, as('alice', i), name, handles), { acked: [], failed: handles.map((h) => ({ receiptHandle: h, code: 'receipt_stale' })) }, 'acked twice: stale');
    t.same(await ack(t, as('alice', i), name, ['bogus']), { acked: [], failed: [{ receiptHandle: 'bogus', code: 'receipt_invalid' }] });
    t.same(await stats(t, as('alice', hop(i)), name), EMPTY_STATS, 'ack deleted them');

    problem(t, await as('alice', i).POST('/v1/queues/{queue}/messages', { params: { path: { queue: name } }, body: { body: 'x', priority: 1 } as MessageInput }), 400, 'validation_failed', 'an unknown field');
    problem(t, await as('alice', i).POST('/v1/queues/{queue}/messages', { params: { path: { queue: 'no-such-queue' } }, body: { body: 'x' } }), 404, 'not_found', 'a queue that does not exist');
    problem(t, await as('carol', i).POST('/v1/queues/{queue}/messages', { params: { path: { queue: name } }, body: { body: 'x' } }), 404, 'not_found', 'a queue carol may not see');
    problem(t, await anonymous[i]!.POST('/v1/queues/{queue}/messages', { params: { path: { queue: name } }, body: { body: 'x' } }), 401, 'unauthorized', 'no token');
    problem(t, await as('alice', i).POST('/v1/queues/{queue}/receive', { params: { path: { queue: name } }, body: { maxMessages: 101 } }), 400, 'validation_failed', 'maxMessages over 100');
  });
});

t.test('nack and redelivery', async (t) => {
  await eachNode(t, async (t, i) => {
    const name = `retry-${nodeName(i)}`;
    await createQueue(t, i, { name });
    const sent = await send(t, as('alice', i), name, { body: 'try again' });
    const [first] = await receive(t, as('alice', hop(i)), name);
    t.match(first, { messageId: sent.messageId, deliveryCount: 1 });
    const nacked = ok(t, await as('alice', hop(i, 2)).POST('/v1/queues/{queue}/nack', { params: { path: { queue: name } }, body: { receiptHandles: [first!.receiptHandle] } }), 200, 'nack');
    // nacked is the list's name; acked, its old name, stays until API 2.0.0.
    t.same(nacked, { nacked: [first!.receiptHandle], failed: [], acked: [first!.receiptHandle] });
    const [second] = await receive(t, as('alice', i), name);
    t.match(second, { messageId: sent.messageId, body: 'try again', deliveryCount: 2 }, 'delivered again, counted');
    t.not(second!.receiptHandle, first!.receiptHandle, 'a new delivery, a new handle');
    t.same(await ack(t, as('alice', hop(i)), name, [first!.receiptHandle]), { acked: [], failed: [{ receiptHandle: first!.receiptHandle, code: 'receipt_stale' }] }, 'the nacked handle is stale');
    t.same(await ack(t, as('alice', hop(i)), name, [second!.receiptHandle]), { acked: [second!.receiptHandle], failed: [] });
  });
});

t.test('an expired lease redelivers, and the old receipt is stale', async (t) => {
  await eachNode(t, async (t, i) => {
    const name = `lease-${nodeName(i)}`;
    await createQueue(t, i, { name });
    const sent = await send(t, as('alice', i), name, { body: 'slow work' });
    // A lease of 0 s has expired by the next entry: no sleeping needed.
    const [first] = await receive(t, as('alice', hop(i)), name, { visibilityTimeoutSeconds: 0 });
    const [second] = await receive(t, as('alice', hop(i, 2)), name);
    t.match(second, { messageId: sent.messageId, deliveryCount: 2 }, 'redelivered after the lease expired');
    const lease = (handle: string) =>
      as('alice', i).POST('/v1/queues/{queue}/lease', { params: { path: { queue: name } }, body: { receiptHandles: [handle], visibilityTimeoutSeconds: 60 } });
    t.same(ok(t, await lease(first!.receiptHandle), 200, 'extend the old lease'), { extended: [], failed: [{ receiptHandle: first!.receiptHandle, code: 'receipt_stale' }], acked: [] });
    t.same(ok(t, await lease(second!.receiptHandle), 200, 'extend the new lease'), { extended: [second!.receiptHandle], failed: [], acked: [second!.receiptHandle] });
    t.same(
      await ack(t, as('alice', hop(i)), name, [first!.receiptHandle, second!.receiptHandle]),
      { acked: [second!.receiptHandle], failed: [{ receiptHandle: first!.receiptHandle, code: 'receipt_stale' }] },
      'each handle on its own: the old one stale, the new one acked',
    );
  });
});

t.test('dead-lettering after maxDeliveries', async (t) => {
  await eachNode(t, async (t, i) => {
    const dlq = `dead-${nodeName(i)}`;
    const name = `fragile-${nodeName(i)}`;
    await createQueue(t, i, { name: dlq });
    problem(t, await as('alice', i).POST('/v1/queues', { body: { name, deadLetterQueue: dlq } }), 400, 'validation_failed', 'a dead-letter queue needs maxDeliveries');
    problem(t, await as('bob', i).POST('/v1/queues', { body: { name, maxDeliveries: 1, deadLetterQueue: dlq } }), 400, 'validation_failed', 'a dead-letter queue of another user');
    const q = await createQueue(t, hop(i), { name, maxDeliveries: 1, deadLetterQueue: dlq });
    t.match(q, { maxDeliveries: 1, deadLetterQueue: dlq });

    const sent = await send(t, as('alice', i), name, { body: 'poison', attributes: { reason: 'test' } });
    const [m] = await receive(t, as('alice', hop(i)), name, { visibilityTimeoutSeconds: 0 });
    t.match(m, { messageId: sent.messageId, deliveryCount: 1 });
    // The dead-letter queue may live in another partition: the message crosses over asynchronously.
    // Polled without waitSeconds, so that this case does not hang on long polling working.
    const dead = await eventually('the message in the dead-letter queue', async () => (await receive(t, as('alice', hop(i, 2)), dlq))[0] ?? null, 200, 50);
    t.match(dead, { messageId: sent.messageId, body: 'poison', attributes: { reason: 'test' }, deliveryCount: 1 }, 'the same message, fresh in the dead-letter queue');
    t.same(await receive(t, as('alice', i), name), [], 'gone from its queue');
    t.same(await ack(t, as('alice', i), name, [m!.receiptHandle]), { acked: [], failed: [{ receiptHandle: m!.receiptHandle, code: 'receipt_stale' }] });
    t.same(await stats(t, as('alice', i), name), EMPTY_STATS, 'dead-lettered, not dropped');
  });
});

t.test('a delayed message is not visible at once, then a long poll gets it', async (t) => {
  await eachNode(t, async (t, i) => {
    const name = `later-${nodeName(i)}`;
    await createQueue(t, i, { name });
    // Two seconds: a receive stamped more than the delay after the send (a loaded machine) would see it.
    const sent = await send(t, as('alice', hop(i)), name, { body: 'in two seconds', delaySeconds: 2 });
    t.same(await receive(t, as('alice', i), name), [], 'not yet');
    const got = await receive(t, as('alice', i), name, { waitSeconds: 10 });
    t.match(got, [{ messageId: sent.messageId, body: 'in two seconds', deliveryCount: 1 }], 'the long poll got it once the delay ended');
  });
});

t.test('deduplication: the same deduplicationId twice stores one message', async (t) => {
  await eachNode(t, async (t, i) => {
    const name = `dedup-${nodeName(i)}`;
    await createQueue(t, i, { name });
    const first = await send(t, as('alice', i), name, { body: 'pay 10 EUR', deduplicationId: 'payment-42' });
    const again = await send(t, as('alice', hop(i)), name, { body: 'pay 10 EUR', deduplicationId: 'payment-42' });
    t.same(again, first, 'the first messageId and sequence');
    const other = await send(t, as('alice', hop(i, 2)), name, { body: 'pay 20 EUR', deduplicationId: 'payment-43' });
    t.not(other.messageId, first.messageId);
    const got = await receive(t, as('alice', i), name, { maxMessages: 10 });
    t.same(got.map((m) => m.messageId), [first.messageId, other.messageId], 'one stored per deduplicationId');
  });
});

t.test('batches: all or none', async (t) => {
  await eachNode(t, async (t, i) => {
    const name = `batch-${nodeName(i)}`;
    await createQueue(t, i, { name });
    const post = (messages: MessageInput[], node: number) => as('alice', node).POST('/v1/queues/{queue}/messages/batch', { params: { path: { queue: name } }, body: { messages } });
    const good = ok(t, await post([{ body: 'a' }, { body: 'b', attributes: { k: 'v' } }, { body: 'c' }], i), 201, 'a valid batch');
    t.equal(good.items.length, 3);
    t.ok(good.items.every((m, k) => k === 0 || m.sequence > good.items[k - 1]!.sequence), 'sequences grow in batch order');
    t.equal(new Set(good.items.map((m) => m.messageId)).size, 3, 'distinct messageIds');

    problem(t, await post([{ body: 'd' }, { body: 'e', delaySeconds: 901 }], hop(i)), 400, 'validation_failed', 'one message out of limits');
    problem(t, await post([{ body: 'f' }, { body: 'x'.repeat(256 * 1024 + 1) }], hop(i, 2)), 413, 'payload_too_large', 'one body too large');
    problem(t, await post([], i), 400, 'validation_failed', 'an empty batch');
    const got = await receive(t, as('alice', hop(i)), name, { maxMessages: 10 });
    t.same(got.map((m) => m.body), ['a', 'b', 'c'], 'the refused batches stored nothing');
  });
});

t.test('long polling: a receive waiting on one node gets a message sent through another', async (t) => {
  await eachNode(t, async (t, i) => {
    const name = `poll-${nodeName(i)}`;
    await createQueue(t, hop(i), { name });
    // The poll listens on its node's replica: let that replica know the queue first.
    await eventually('the queue on the local replica', async () =>
      (await as('alice', i).GET('/v1/queues/{queue}', { params: { path: { queue: name }, query: { consistency: 'stale' } } })).response.status === 200 ? true : null,
    );
    // Not awaited yet, so it must not reject: openapi-fetch answers HTTP errors, and the checks
    // come once it is awaited.
    let settled = false;
    const polling = as('alice', i)
      .POST('/v1/queues/{queue}/receive', { params: { path: { queue: name } }, body: { waitSeconds: 10 } })
      .finally(() => {
        settled = true;
      });
    const router = cluster.servers[i]!.node.router;
    await until(() => settled || router.waiting() > 0, 'the receive is waiting');
    const sent = await send(t, as('alice', hop(i)), name, { body: 'wake up' });
    const got = ok(t, await polling, 200, 'the long poll');
    t.match(got.messages, [{ messageId: sent.messageId, body: 'wake up' }], 'the waiting receive got the message');
  });
});

t.test('topics: publish to two subscribers, one with a filter', async (t) => {
  await eachNode(t, async (t, i) => {
    const topic = `news-${nodeName(i)}`;
    const all = `all-${nodeName(i)}`;
    const red = `red-${nodeName(i)}`;
    const created = ok(t, await as('alice', i).POST('/v1/topics', { body: { name: topic } }), 201, 'create topic');
    t.same(created, { name: topic, owner: 'alice', subscribe: 'anyone', createdAt: created.createdAt, stats: { subscriptions: 0, published: 0 } });
    problem(t, await as('bob', hop(i)).POST('/v1/topics', { body: { name: topic } }), 409, 'conflict', 'a topic name taken');

    const subscribe = (user: User, node: number, body: paths['/v1/topics/{topic}/subscriptions']['post']['requestBody']['content']['application/json']) =>
      as(user, node).POST('/v1/topics/{topic}/subscriptions', { params: { path: { topic } }, body });
    const s1 = ok(t, await subscribe('alice', hop(i), { name: all }), 201, 'alice subscribes');
    t.match(s1, { topic, name: all, owner: 'alice', filter: null, stats: EMPTY_STATS });
    const s2 = ok(t, await subscribe('bob', hop(i, 2), { name: red, filter: { attributes: { color: 'red' } } }), 201, 'bob subscribes to red only (subscribe: anyone)');
    t.match(s2, { topic, name: red, owner: 'bob' });
    t.same(s2.filter, { attributes: { color: 'red' } }, 'the filter comes back in the shape it was sent');

    const publish = (node: number, body: MessageInput) => as('alice', node).POST('/v1/topics/{topic}/messages', { params: { path: { topic } }, body });
    const p1 = ok(t, await publish(i, { body: 'red alert', attributes: { color: 'red' } }), 201, 'publish red');
    const p2 = ok(t, await publish(hop(i), { body: 'blue moon', attributes: { color: 'blue' } }), 201, 'publish blue');
    const p3 = ok(t, await publish(hop(i, 2), { body: 'plain' }), 201, 'publish plain');
    t.match([p1, p2, p3], [{ subscriptions: 2 }, { subscriptions: 1 }, { subscriptions: 1 }], 'subscriptions counts who got each');
    t.ok(p1.sequence < p2.sequence && p2.sequence < p3.sequence, 'sequence grows within the topic');
    problem(t, await as('bob', i).POST('/v1/topics/{topic}/messages', { params: { path: { topic } }, body: { body: 'x' } }), 403, 'forbidden', 'a subscriber may not publish without a grant');
    t.match(ok(t, await as('carol', hop(i)).GET('/v1/topics/{topic}', { params: { path: { topic } } }), 200, 'anyone sees it'), { stats: { subscriptions: 2, published: 3 } });

    const receiveSub = (user: User, node: number, subscription: string) =>
      as(user, node).POST('/v1/topics/{topic}/subscriptions/{subscription}/receive', { params: { path: { topic, subscription } }, body: { maxMessages: 10 } });
    const alices = ok(t, await receiveSub('alice', hop(i, 2), all), 200, 'alice receives').messages;
    t.match(alices, [{ messageId: p1.messageId, sequence: p1.sequence, body: 'red alert' }, { messageId: p2.messageId, body: 'blue moon' }, { messageId: p3.messageId, body: 'plain' }]);
    t.equal(alices.length, 3, 'every message');
    const bobs = ok(t, await receiveSub('bob', i, red), 200, 'bob receives').messages;
    t.match(bobs, [{ messageId: p1.messageId, sequence: p1.sequence, body: 'red alert', attributes: { color: 'red' }, deliveryCount: 1 }]);
    t.equal(bobs.length, 1, 'only the red one');
    problem(t, await receiveSub('bob', i, all), 404, 'not_found', "bob may not see alice's subscription");
    problem(t, await receiveSub('alice', i, red), 403, 'forbidden', "the topic's owner sees bob's subscription but may not consume from it");

    const ackSub = (user: User, node: number, subscription: string, receiptHandles: string[]) =>
      as(user, node).POST('/v1/topics/{topic}/subscriptions/{subscription}/ack', { params: { path: { topic, subscription } }, body: { receiptHandles } });
    t.same(ok(t, await ackSub('bob', hop(i), red, [bobs[0]!.receiptHandle]), 200, 'bob acks'), { acked: [bobs[0]!.receiptHandle], failed: [] });
    const handles = alices.map((m) => m.receiptHandle);
    t.same(ok(t, await ackSub('alice', hop(i), all, handles), 200, 'alice acks'), { acked: handles, failed: [] }, 'each subscription acks on its own');

    const list = (user: User) => as(user, hop(i)).GET('/v1/topics/{topic}/subscriptions', { params: { path: { topic } } });
    t.same(ok(t, await list('alice'), 200, 'the owner lists').items.map((s) => s.name).sort(), [all, red].sort(), "the topic's owner sees all");
    t.same(ok(t, await list('bob'), 200, 'bob lists').items.map((s) => s.name), [red], 'others see their own');
    t.match(ok(t, await as('bob', i).GET('/v1/topics/{topic}/subscriptions/{subscription}', { params: { path: { topic, subscription: red } } }), 200, 'get a subscription'), {
      name: red,
      stats: EMPTY_STATS,
    });

    noContent(t, await as('alice', i).DELETE('/v1/topics/{topic}/subscriptions/{subscription}', { params: { path: { topic, subscription: red } } }), "the topic's owner deletes bob's subscription");
    problem(t, await as('bob', hop(i)).DELETE('/v1/topics/{topic}', { params: { path: { topic } } }), 403, 'forbidden', 'a visible topic, not his to delete');
    noContent(t, await as('alice', hop(i, 2)).DELETE('/v1/topics/{topic}', { params: { path: { topic } } }), 'the owner deletes the topic');
    problem(t, await as('alice', i).GET('/v1/topics/{topic}', { params: { path: { topic } } }), 404, 'not_found', 'the topic is gone');
  });
});

t.test('topics open to granted users only: visibility, grants, batch publish', async (t) => {
  await eachNode(t, async (t, i) => {
    const topic = `private-${nodeName(i)}`;
    const sub = `carols-${nodeName(i)}`;
    ok(t, await as('alice', i).POST('/v1/topics', { body: { name: topic, subscribe: 'granted' } }), 201, 'create a granted-only topic');
    const carol = (node: number) => as('carol', node);
    const subscribe = (node: number) => carol(node).POST('/v1/topics/{topic}/subscriptions', { params: { path: { topic } }, body: { name: sub } });
    problem(t, await carol(hop(i)).GET('/v1/topics/{topic}', { params: { path: { topic } } }), 404, 'not_found', 'hidden from carol');
    problem(t, await subscribe(hop(i, 2)), 404, 'not_found', 'carol cannot subscribe to what she cannot see');
    problem(t, await carol(i).DELETE('/v1/topics/{topic}', { params: { path: { topic } } }), 404, 'not_found', 'an invisible topic is not found, not forbidden');

    const grant = await as('alice', hop(i)).PUT('/v1/topics/{topic}/grants/{username}', { params: { path: { topic, username: 'carol' } }, body: { actions: ['subscribe'] } });
    t.same(ok(t, grant, 200, 'grant carol subscribe'), { username: 'carol', actions: ['subscribe'] });
    t.same(ok(t, await as('alice', hop(i, 2)).GET('/v1/topics/{topic}/grants', { params: { path: { topic } } }), 200, 'list topic grants'), { items: [{ username: 'carol', actions: ['subscribe'] }] });
    ok(t, await subscribe(i), 201, 'carol subscribes');
    problem(t, await carol(hop(i)).POST('/v1/topics/{topic}/messages', { params: { path: { topic } }, body: { body: 'x' } }), 403, 'forbidden', 'subscribe does not publish');
    problem(t, await carol(hop(i)).DELETE('/v1/topics/{topic}', { params: { path: { topic } } }), 403, 'forbidden', 'a visible topic, not hers to delete');
    t.same(ok(t, await carol(i).GET('/v1/topics'), 200, 'carol lists topics').items.map((x) => x.name), [topic], 'carol lists the topic she has a grant on');

    const batch = (node: number, messages: MessageInput[]) => as('alice', node).POST('/v1/topics/{topic}/messages/batch', { params: { path: { topic } }, body: { messages } });
    const published = ok(t, await batch(i, [{ body: 'x' }, { body: 'y', attributes: { n: '2' } }]), 201, 'publish a batch');
    t.match(published.items, [{ subscriptions: 1 }, { subscriptions: 1 }]);
    problem(t, await batch(hop(i), [{ body: 'z' }, { body: 'w', attributes: { ['k'.repeat(129)]: 'v' } }]), 400, 'validation_failed', 'one attribute key too long');
    const got = ok(t, await carol(hop(i, 2)).POST('/v1/topics/{topic}/subscriptions/{subscription}/receive', { params: { path: { topic, subscription: sub } }, body: { maxMessages: 10 } }), 200, 'carol receives');
    t.same(got.messages.map((m) => [m.messageId, m.body]), published.items.map((p, k) => [p.messageId, ['x', 'y'][k]]), 'the batch, and nothing of the refused one');

    noContent(t, await as('alice', i).DELETE('/v1/topics/{topic}/grants/{username}', { params: { path: { topic, username: 'carol' } } }), 'revoke carol');
    problem(t, await carol(hop(i)).GET('/v1/topics/{topic}', { params: { path: { topic } } }), 404, 'not_found', 'hidden from carol again');
  });
});

t.test('deleting a queue: refused to others, done by the owner', async (t) => {
  await eachNode(t, async (t, i) => {
    const name = `doomed-${nodeName(i)}`;
    await createQueue(t, i, { name });
    ok(t, await as('alice', i).PUT('/v1/queues/{queue}/grants/{username}', { params: { path: { queue: name, username: 'bob' } }, body: { actions: ['receive'] } }), 200, 'grant bob');
    await send(t, as('alice', i), name, { body: 'goes with the queue' });
    const del = (user: User, node: number) => as(user, node).DELETE('/v1/queues/{queue}', { params: { path: { queue: name } } });
    problem(t, await del('bob', hop(i)), 403, 'forbidden', 'a grantee sees the queue but may not delete it');
    problem(t, await del('carol', hop(i, 2)), 404, 'not_found', 'a stranger is told it does not exist');
    problem(t, await as('bob', i).POST('/v1/queues/{queue}/purge', { params: { path: { queue: name } } }), 403, 'forbidden', 'a grantee may not purge');
    problem(t, await as('bob', i).POST('/v1/queues/{queue}/messages', { params: { path: { queue: name } }, body: { body: 'x' } }), 403, 'forbidden', 'a receive grant does not send');
    noContent(t, await del('alice', hop(i)), 'the owner deletes it');
    problem(t, await as('alice', hop(i, 2)).GET('/v1/queues/{queue}', { params: { path: { queue: name } } }), 404, 'not_found', 'gone');
    problem(t, await del('alice', i), 404, 'not_found', 'deleted twice');
    problem(t, await del('bob', i), 404, 'not_found', 'its grants went with it');
    const again = await createQueue(t, hop(i), { name });
    t.same(again.stats, EMPTY_STATS, 'a queue of the same name starts empty: the messages went with the old one');
  });
});

t.test('purge deletes every message', async (t) => {
  await eachNode(t, async (t, i) => {
    const name = `purged-${nodeName(i)}`;
    await createQueue(t, i, { name });
    for (const body of ['a', 'b']) await send(t, as('alice', hop(i)), name, { body });
    t.same(ok(t, await as('alice', hop(i, 2)).POST('/v1/queues/{queue}/purge', { params: { path: { queue: name } } }), 200, 'purge'), { purged: 2 });
    t.same(await stats(t, as('alice', i), name), EMPTY_STATS);
  });
});

t.test('Idempotency-Key: the same request replays, another request is refused', async (t) => {
  await eachNode(t, async (t, i) => {
    const name = `once-${nodeName(i)}`;
    await createQueue(t, i, { name });
    const key = { 'Idempotency-Key': `send-once-${nodeName(i)}` };
    const post = (node: number, body: MessageInput) => as('alice', node).POST('/v1/queues/{queue}/messages', { params: { path: { queue: name }, header: key }, body });
    const first = ok(t, await post(i, { body: 'charge card' }), 201, 'first');
    const replay = ok(t, await post(hop(i), { body: 'charge card' }), 201, 'the same request again, through another node');
    t.same(replay, first, 'the first response replayed');
    t.match(await stats(t, as('alice', i), name), { visible: 1 }, 'one message stored');
    problem(t, await post(hop(i, 2), { body: 'charge card twice' }), 409, 'conflict', 'the key with another body');
    problem(
      t,
      await as('alice', i).POST('/v1/queues/{queue}/purge', { params: { path: { queue: name }, header: key } }),
      409,
      'conflict',
      'the key on another route',
    );
    t.match(await stats(t, as('alice', i), name), { visible: 1 }, 'the refused requests were not applied');
    // Keys are the user's own: bob's same key is a new request.
    ok(t, await as('alice', i).PUT('/v1/queues/{queue}/grants/{username}', { params: { path: { queue: name, username: 'bob' } }, body: { actions: ['send'] } }), 200, 'grant bob');
    const bobs = ok(t, await as('bob', i).POST('/v1/queues/{queue}/messages', { params: { path: { queue: name }, header: key }, body: { body: 'charge card' } }), 201, 'bob, same key');
    t.not(bobs.messageId, first.messageId);
  });
});

t.test('Idempotency-Key: keys are scoped per user and resource, wherever the partition is', async (t) => {
  await eachNode(t, async (t, i) => {
    const a = `key-a-${nodeName(i)}`;
    // A name in another partition than `a`, and one in the same: the answer must not depend on it.
    const names = Array.from({ length: 200 }, (_, k) => `key-b${k}-${nodeName(i)}`);
    const far = names.find((n) => partitionOf(n, PARTITIONS) !== partitionOf(a, PARTITIONS))!;
    const near = names.find((n) => partitionOf(n, PARTITIONS) === partitionOf(a, PARTITIONS))!;
    await createQueue(t, i, { name: a });
    await createQueue(t, i, { name: far });
    await createQueue(t, i, { name: near });
    const key = { 'Idempotency-Key': `scoped-${nodeName(i)}` };
    ok(t, await as('alice', i).POST('/v1/queues/{queue}/messages', { params: { path: { queue: a }, header: key }, body: { body: 'once' } }), 201, `send to ${a}`);
    for (const other of [far, near]) {
      ok(t, await as('alice', hop(i)).POST('/v1/queues/{queue}/messages', { params: { path: { queue: other }, header: key }, body: { body: 'once' } }), 201, `the same key on ${other}`);
      t.match(await stats(t, as('alice', i), other), { visible: 1 }, 'is another request, stored');
    }
    t.match(await stats(t, as('alice', i), a), { visible: 1 }, 'and the first queue holds one');
  });
});

t.test('?consistency=stale answers from the local replica, marked', async (t) => {
  const queue = 'stale-reads';
  await createQueue(t, 0, { name: queue });
  ok(t, await as('alice', 0).POST('/v1/topics', { body: { name: queue } }), 201, 'a topic too');
  await eachNode(t, async (t, i) => {
    const api = as('alice', i);
    // A follower's replica may lag a moment behind the write that created the queue.
    const r = await eventually('the queue on this replica', async () => {
      const r = await api.GET('/v1/queues/{queue}', { params: { path: { queue }, query: { consistency: 'stale' } } });
      return r.response.status === 200 ? r : null;
    });
    t.equal(ok(t, r, 200, 'a stale read').name, queue);
    t.equal(r.response.headers.get('x-stale'), 'true');
    t.match(r.response.headers.get('x-applied-index'), /^[1-9]\d*$/, 'the replica applied index');
    const topic = await eventually('the topic on this replica', async () => {
      const r = await api.GET('/v1/topics/{topic}', { params: { path: { topic: queue }, query: { consistency: 'stale' } } });
      return r.response.status === 200 ? r : null;
    });
    t.equal(topic.response.headers.get('x-stale'), 'true', 'topics too');
    t.match(topic.response.headers.get('x-applied-index'), /^[1-9]\d*$/, 'with its applied index');
    const strong = await api.GET('/v1/queues/{queue}', { params: { path: { queue } } });
    t.equal(ok(t, strong, 200, 'a linearizable read').name, queue);
    t.equal(strong.response.headers.get('x-stale'), null, 'a linearizable read is not marked');
    problem(t, await api.GET('/v1/queues/{queue}', { params: { path: { queue }, query: { consistency: 'eventual' as 'stale' } } }), 400, 'validation_failed', 'an unknown consistency');
  });
});
