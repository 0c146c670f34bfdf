// What one user with an account can do to others and to the cluster (issue #16), through three real
// nodes: each case is a way in that a review found, and the test fails on the code before its fix.
import t from 'tap';
import { FORMAT, MAX_FANOUT, MAX_SUBSCRIPTIONS } from '../../src/store/broker/index.js';
import { until } from '../cluster/net-helpers.js';
import { partitionOf } from '../../src/partition/routing.js';
import { call, pollUntil, startCluster, userToken } from './api-helpers.js';

// Three nodes in this process share the machine with the other test files.
t.setTimeout(300_000);

// A node trusts what it looked up of a user for userRecheckMs (a minute by default): short here, so
// that a revocation reaches every node while the test waits (test/api/sessions.test.ts times it).
const cluster = await startCluster({ userRecheckMs: 200 });
t.teardown(() => cluster.close());
const [url0, url1, url2] = cluster.urls as [string, string, string];
const partitions = cluster.configs[0]!.partitions;
// The rules below are this build's log format's: a new cluster raises its partitions to it within
// moments of start.
await until(() => cluster.servers.every((s) => s.status().every((p) => p.format === FORMAT)), `every partition in format ${FORMAT}`);

const alice = await userToken(url0, 'alice-h');
const mallory = await userToken(url1, 'mallory-h');

const problem = (status: number, code: string) => ({ status, headers: { 'content-type': /^application\/problem\+json/ }, body: { status, code } });

/** Runs `f` over `items`, `width` at a time. */
async function inWaves<T>(items: readonly T[], width: number, f: (x: T) => Promise<void>): Promise<void> {
  for (let i = 0; i < items.length; i += width) await Promise.all(items.slice(i, i + width).map(f));
}

t.test(`fan-out: ${MAX_SUBSCRIPTIONS} subscriptions a topic, ${MAX_FANOUT} copies a publish; other partitions write meanwhile`, async (t) => {
  const topic = 'fan-bomb';
  // A queue of another partition, written while the largest allowed publish is applied.
  let other = 'fan-other';
  for (let i = 0; partitionOf(other, partitions) === partitionOf(topic, partitions); i++) other = `fan-other-${i}`;
  t.equal((await call(url0, 'POST', '/v1/topics', { token: mallory, body: { name: topic } })).status, 201);
  t.equal((await call(url1, 'POST', '/v1/queues', { token: alice, body: { name: other } })).status, 201);

  const names = Array.from({ length: MAX_SUBSCRIPTIONS }, (_, i) => `s${i}`);
  await inWaves(names, 50, async (name) => {
    const r = await call(cluster.urls[Number(name.slice(1)) % 3]!, 'POST', `/v1/topics/${topic}/subscriptions`, { token: mallory, body: { name } });
    if (r.status !== 201) throw new Error(`subscription ${name}: ${r.status} ${JSON.stringify(r.body)}`);
  });
  t.match(await call(url2, 'POST', `/v1/topics/${topic}/subscriptions`, { token: mallory, body: { name: 'one-more' } }), problem(409, 'conflict'), 'one more subscription');

  // The bomb: a batch of 100 to every subscription.
  const bomb = await call(url0, 'POST', `/v1/topics/${topic}/messages/batch`, {
    token: mallory,
    body: { messages: Array.from({ length: 100 }, (_, i) => ({ body: `${i}`.padEnd(2048, 'x') })) },
  });
  t.match(bomb, problem(413, 'payload_too_large'), 'the batch is refused whole');
  t.match((bomb.body as { detail: string }).detail, `would be ${100 * MAX_SUBSCRIPTIONS} copies; one publish stores at most ${MAX_FANOUT}`);
  t.match((await call(url1, 'GET', `/v1/topics/${topic}`, { token: mallory })).body, { stats: { subscriptions: MAX_SUBSCRIPTIONS, published: 0 } }, 'nothing published');

  // The largest allowed publish, with another partition's sends on the other nodes meanwhile.
  const [published, ...sends] = await Promise.all([
    call(url0, 'POST', `/v1/topics/${topic}/messages`, { token: mallory, body: { body: 'to everyone' } }),
    ...Array.from({ length: 30 }, (_, i) => call(i % 2 === 0 ? url1 : url2, 'POST', `/v1/queues/${other}/messages`, { token: alice, body: { body: `m${i}` } })),
  ]);
  t.match(published, { status: 201, body: { subscriptions: MAX_SUBSCRIPTIONS } });
  t.ok(sends.every((r) => r.status === 201), 'every send to the other partition succeeded');
  t.match((await call(url2, 'GET', `/v1/queues/${other}`, { token: alice })).body, { stats: { visible: 30 } });
  const got = await call(url2, 'POST', `/v1/topics/${topic}/subscriptions/s${MAX_SUBSCRIPTIONS - 1}/receive`, { token: mallory, body: {} });
  t.match(got, { status: 200, body: { messages: [{ body: 'to everyone' }] } }, 'the last subscription got its copy');
});

t.test("receipt handles cannot be forged: a grantee cannot ack another consumer's delivery by its fields", async (t) => {
  const q = 'receipts-q';
  const other = 'receipts-other';
  t.equal((await call(url0, 'POST', '/v1/queues', { token: alice, body: { name: q } })).status, 201);
  t.equal((await call(url0, 'POST', '/v1/queues', { token: alice, body: { name: other } })).status, 201);
  t.equal((await call(url1, 'PUT', `/v1/queues/${q}/grants/mallory-h`, { token: alice, body: { actions: ['receive'] } })).status, 200);
  for (const body of ['for alice', 'for mallory']) t.equal((await call(url2, 'POST', `/v1/queues/${q}/messages`, { token: alice, body: { body } })).status, 201);
  type Got = { messages: { body: string; receiptHandle: string }[] };
  const mine = ((await call(url0, 'POST', `/v1/queues/${q}/receive`, { token: alice, body: {} })).body as Got).messages[0]!;
  const theirs = ((await call(url1, 'POST', `/v1/queues/${q}/receive`, { token: mallory, body: {} })).body as Got).messages[0]!;
  const innerOf = (h: string): string => h.slice(0, h.lastIndexOf('.'));
  const macOf = (h: string): string => h.slice(h.lastIndexOf('.') + 1);
  // What a guesser builds: the fields of alice's delivery (channel, sequence, lease), as handles were
  // before they carried a MAC, or under the MAC of mallory's own handle.
  const forged = [innerOf(mine.receiptHandle), `${innerOf(mine.receiptHandle)}.${macOf(theirs.receiptHandle)}`];
  for (const op of ['ack', 'nack', 'lease'] as const) {
    const r = await call(cluster.urls[forged.length % 3]!, 'POST', `/v1/queues/${q}/${op}`, { token: mallory, body: { receiptHandles: forged, ...(op === 'lease' ? { visibilityTimeoutSeconds: 600 } : {}) } });
    t.match(r, { status: 200, body: { failed: forged.map((receiptHandle) => ({ receiptHandle, code: 'receipt_invalid' })) } }, op);
  }
  // A real handle on another queue is not a handle there.
  t.match(await call(url2, 'POST', `/v1/queues/${other}/ack`, { token: alice, body: { receiptHandles: [mine.receiptHandle] } }), {
    status: 200,
    body: { acked: [], failed: [{ receiptHandle: mine.receiptHandle, code: 'receipt_invalid' }] },
  });
  // Alice's lease held through all of it; a mix answers each handle in the order sent.
  const both = [forged[0]!, mine.receiptHandle, theirs.receiptHandle];
  t.match(await call(url1, 'POST', `/v1/queues/${q}/ack`, { token: alice, body: { receiptHandles: both } }), {
    status: 200,
    body: { acked: [mine.receiptHandle, theirs.receiptHandle], failed: [{ receiptHandle: forged[0], code: 'receipt_invalid' }] },
  });
  t.match((await call(url0, 'GET', `/v1/queues/${q}`, { token: alice })).body, { stats: { visible: 0, inFlight: 0 } });
});

t.test("revoking 'subscribe' stops every delivery to that user's subscriptions: they are deleted", async (t) => {
  const topic = 'revoke-t';
  t.equal((await call(url0, 'POST', '/v1/topics', { token: alice, body: { name: topic, subscribe: 'granted' } })).status, 201);
  t.equal((await call(url1, 'PUT', `/v1/topics/${topic}/grants/mallory-h`, { token: alice, body: { actions: ['subscribe'] } })).status, 200);
  t.equal((await call(url2, 'POST', `/v1/topics/${topic}/subscriptions`, { token: mallory, body: { name: 'm' } })).status, 201);
  t.match(await call(url0, 'POST', `/v1/topics/${topic}/messages`, { token: alice, body: { body: 'granted' } }), { status: 201, body: { subscriptions: 1 } });
  t.equal((await call(url1, 'DELETE', `/v1/topics/${topic}/grants/mallory-h`, { token: alice })).status, 204);
  t.match(await call(url2, 'POST', `/v1/topics/${topic}/messages`, { token: alice, body: { body: 'revoked' } }), { status: 201, body: { subscriptions: 0 } });
  t.match(await call(url0, 'POST', `/v1/topics/${topic}/subscriptions/m/receive`, { token: mallory, body: { maxMessages: 10 } }), problem(404, 'not_found'), 'nothing more to receive');
  t.match(await call(url1, 'GET', `/v1/topics/${topic}/subscriptions/m`, { token: alice }), problem(404, 'not_found'), 'the topic owner sees it gone');
});

t.test("a grant tells only the resource's owner whether a username exists", async (t) => {
  const q = 'enum-q';
  const closed = 'enum-t';
  t.equal((await call(url0, 'POST', '/v1/queues', { token: alice, body: { name: q } })).status, 201);
  t.equal((await call(url0, 'POST', '/v1/topics', { token: alice, body: { name: closed, subscribe: 'granted' } })).status, 201);
  t.equal((await call(url0, 'PUT', `/v1/queues/${q}/grants/mallory-h`, { token: alice, body: { actions: ['send'] } })).status, 200);
  const put = (path: string, user: string, actions: string[]) => call(cluster.urls[user.length % 3]!, 'PUT', `${path}/grants/${user}`, { token: mallory, body: { actions } });
  for (const [path, actions, status] of [
    [`/v1/queues/${q}`, ['send'], 403], // visible to mallory (a grantee), not hers
    [`/v1/topics/${closed}`, ['publish'], 404], // not visible to her at all
    ['/v1/queues/enum-nowhere', ['send'], 404],
  ] as const) {
    const known = await put(path, 'alice-h', [...actions]);
    const unknown = await put(path, 'nobody-at-all', [...actions]);
    t.match(known, problem(status, status === 403 ? 'forbidden' : 'not_found'), `${path}: a user who exists`);
    t.same({ status: unknown.status, body: unknown.body }, { status: known.status, body: known.body }, `${path}: the same answer for one who does not`);
  }
  // The owner is told.
  t.match(await call(url1, 'PUT', `/v1/queues/${q}/grants/nobody-at-all`, { token: alice, body: { actions: ['send'] } }), problem(404, 'not_found'));
});

t.test("a keyed receive's replay holds no body once the delivery is over", async (t) => {
  const q = 'keyed-q';
  t.equal((await call(url0, 'POST', '/v1/queues', { token: alice, body: { name: q } })).status, 201);
  t.equal((await call(url1, 'POST', `/v1/queues/${q}/messages`, { token: alice, body: { body: 'private' } })).status, 201);
  const key = { 'idempotency-key': 'keyed-receive-1' };
  const first = await call(url2, 'POST', `/v1/queues/${q}/receive`, { token: alice, body: {}, headers: key });
  t.match(first, { status: 200, body: { messages: [{ body: 'private' }] } });
  t.same((await call(url0, 'POST', `/v1/queues/${q}/receive`, { token: alice, body: {}, headers: key })).body, first.body, 'replayed while leased');
  const handle = (first.body as { messages: { receiptHandle: string }[] }).messages[0]!.receiptHandle;
  t.match(await call(url1, 'POST', `/v1/queues/${q}/ack`, { token: alice, body: { receiptHandles: [handle] } }), { status: 200, body: { acked: [handle] } });
  const after = await call(url2, 'POST', `/v1/queues/${q}/receive`, { token: alice, body: {}, headers: key });
  t.same({ status: after.status, body: after.body }, { status: 200, body: { messages: [] } }, 'acked: nothing to replay, and no body');
});

t.test('a logout, a password change and a deletion revoke tokens on every node', async (t) => {
  const statuses = (token: string) => Promise.all(cluster.urls.map(async (u) => (await call(u, 'GET', '/v1/auth/me', { token })).status));
  const revokedEverywhere = (token: string) => pollUntil(() => statuses(token), (s) => s.every((x) => x === 401));

  const stolen = await userToken(url0, 'victim-h');
  t.strictSame(await statuses(stolen), [200, 200, 200]);
  t.equal((await call(url1, 'POST', '/v1/auth/logout', { token: stolen })).status, 204);
  t.equal((await call(url1, 'GET', '/v1/auth/me', { token: stolen })).status, 401, 'at once on the node that answered');
  t.strictSame(await revokedEverywhere(stolen), [401, 401, 401], 'logout');

  const before = await userToken(url2, 'victim-h');
  const changed = await call(url2, 'PUT', '/v1/auth/password', { token: before, body: { password: 'password-victim-h', newPassword: 'a new password' } });
  t.equal(changed.status, 200);
  t.strictSame(await revokedEverywhere(before), [401, 401, 401], 'password change');
  const after = (changed.body as { accessToken: string }).accessToken;
  t.strictSame(await statuses(after), [200, 200, 200], 'the new token works on every node');

  t.equal((await call(url0, 'DELETE', '/v1/auth/me', { token: after, body: { password: 'a new password' } })).status, 204);
  t.strictSame(await revokedEverywhere(after), [401, 401, 401], 'deletion');
  t.match(await call(url1, 'POST', '/v1/auth/register', { body: { username: 'victim-h', password: 'password-victim-h' } }), problem(409, 'conflict'), 'the name is not given again');
});

t.test('an ack, nack or lease whose handles are all invalid is refused as with valid ones where the caller may not consume', async (t) => {
  // Such a call goes to no partition (it writes nothing), and answered 200, every handle
  // receipt_invalid, on queues that do not exist or that the caller may not consume from (review of
  // 2026-12-07).
  const q = 'no-consume-q';
  const hidden = 'no-consume-hidden';
  const topic = 'no-consume-t';
  for (const name of [q, hidden]) t.equal((await call(url0, 'POST', '/v1/queues', { token: alice, body: { name } })).status, 201);
  t.equal((await call(url1, 'PUT', `/v1/queues/${q}/grants/mallory-h`, { token: alice, body: { actions: ['send'] } })).status, 200);
  t.equal((await call(url2, 'POST', '/v1/topics', { token: mallory, body: { name: topic } })).status, 201);
  t.equal((await call(url0, 'POST', `/v1/topics/${topic}/subscriptions`, { token: alice, body: { name: 'alices' } })).status, 201);
  const cases: [string, string, string, ReturnType<typeof problem>][] = [
    ['a send right only', mallory, `/v1/queues/${q}`, problem(403, 'forbidden')],
    ['a queue not visible to the caller', mallory, `/v1/queues/${hidden}`, problem(404, 'not_found')],
    ['a queue that does not exist', mallory, '/v1/queues/no-consume-none', problem(404, 'not_found')],
    ["the topic owner on another user's subscription", mallory, `/v1/topics/${topic}/subscriptions/alices`, problem(403, 'forbidden')],
    ['a subscription that does not exist', alice, `/v1/topics/${topic}/subscriptions/none`, problem(404, 'not_found')],
  ];
  for (const [i, [what, token, path, expected]] of cases.entries()) {
    for (const op of ['ack', 'nack', 'lease'] as const) {
      const r = await call(cluster.urls[i % 3]!, 'POST', `${path}/${op}`, { token, body: { receiptHandles: ['x'], ...(op === 'lease' ? { visibilityTimeoutSeconds: 60 } : {}) } });
      t.match(r, expected, `${op}: ${what}`);
    }
  }
  // Where the caller may consume, such handles are receipt_invalid, as before.
  t.match(await call(url1, 'POST', `/v1/queues/${q}/ack`, { token: alice, body: { receiptHandles: ['x'] } }), { status: 200, body: { acked: [], failed: [{ receiptHandle: 'x', code: 'receipt_invalid' }] } });
  t.match(await call(url2, 'POST', `/v1/topics/${topic}/subscriptions/alices/nack`, { token: alice, body: { receiptHandles: ['x'] } }), { status: 200, body: { acked: [], failed: [{ receiptHandle: 'x', code: 'receipt_invalid' }] } });
});
