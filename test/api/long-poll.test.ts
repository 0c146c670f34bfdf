// Long polling across nodes: a receive waiting on one node is woken by a send through another (by
// the local replica's apply, not by asking again), a delayed message wakes it when its delay ends,
// and a client that leaves while waiting leaves nothing leased. The idle guard of the router is set
// to ten minutes here, so that only the wake-ups under test can end a wait early.
//
// The cluster runs this build's log format, where a poll also parks in the partition's state and a
// send's own entry leases its message to the poll; long-poll-format2.test.ts runs the same tests in
// format 2, as during a rolling upgrade from a build before that, where each woken poll receives again.
import t from 'tap';
import { FORMAT } from '../../src/store/broker/index.js';
import { request } from 'undici';
import { partitionOf } from '../../src/partition/routing.js';
import { until } from '../cluster/net-helpers.js';
import { call, startCluster, userToken } from './api-helpers.js';

const format = Number(process.env.MOM_LONG_POLL_FORMAT ?? FORMAT);
const cluster = await startCluster({ maxIdleMs: 600_000, format });
t.teardown(() => cluster.close());
await until(() => cluster.servers.every((s) => s.status().every((p) => p.format === format)), `every partition in format ${format}`);
const [a, b] = cluster.urls as [string, string, string];
const token = await userToken(a, 'poller');

/** The index of a node that does not lead the queue's partition: it waits on its own replica. */
function followerOf(name: string): number {
  const p = partitionOf(name, cluster.configs[0]!.partitions);
  return cluster.servers.findIndex((s) => !s.host.replica(p).isLeader());
}

/** Polls parked in the state of each replica of the queue's partition (format 3). */
function parkedOn(name: string): number[] {
  const p = partitionOf(name, cluster.configs[0]!.partitions);
  return cluster.servers.map((s) => {
    const state = s.host.replica(p).state;
    // A stopped node's state is closed: nothing parked there counts. Nor does a served poll, which
    // stays (from format 16) for its poll's next look.
    return state.isOpen() ? (state.sqlite.prepare('select count(*) as n from waiters where served is null').get() as { n: number }).n : 0;
  });
}

async function waitingOn(node: number, n: number): Promise<void> {
  await until(() => cluster.servers[node]!.node.router.waiting() === n, `${n} long poll(s) waiting on node ${node}`);
}

t.test('a send through another node wakes a long poll at once', async (t) => {
  const name = 'wake';
  t.equal((await call(a, 'POST', '/v1/queues', { token, body: { name } })).status, 201);
  const node = followerOf(name);
  const url = cluster.urls[node]!;
  const poll = call(url, 'POST', `/v1/queues/${name}/receive`, { token, body: { waitSeconds: 20 } });
  await waitingOn(node, 1);
  const other = cluster.urls[(node + 1) % 3]!;
  t.equal((await call(other, 'POST', `/v1/queues/${name}/messages`, { token, body: { body: 'hi' } })).status, 201);
  const res = await poll;
  t.equal(res.status, 200);
  // Only a wake-up can deliver it: without one, the wait would end empty after 20 s.
  t.same((res.body as { messages: { body: string }[] }).messages.map((m) => m.body), ['hi']);
  t.equal(cluster.servers[node]!.node.router.waiting(), 0, 'nothing left waiting');
});

t.test('a delayed message wakes a long poll when its delay ends', async (t) => {
  const name = 'delayed';
  t.equal((await call(a, 'POST', '/v1/queues', { token, body: { name } })).status, 201);
  // Two seconds: a receive stamped more than the delay after the send (a loaded machine) would see it.
  t.equal((await call(b, 'POST', `/v1/queues/${name}/messages`, { token, body: { body: 'later', delaySeconds: 2 } })).status, 201);
  const now = await call(a, 'POST', `/v1/queues/${name}/receive`, { token, body: {} });
  t.same((now.body as { messages: unknown[] }).messages, [], 'not visible before its delay');
  const res = await call(cluster.urls[followerOf(name)]!, 'POST', `/v1/queues/${name}/receive`, { token, body: { waitSeconds: 20 } });
  t.equal(res.status, 200, JSON.stringify(res.body));
  t.same((res.body as { messages: { body: string }[] }).messages.map((m) => m.body), ['later']);
});

t.test('a wait that ends with nothing answers an empty list', async (t) => {
  const name = 'quiet';
  t.equal((await call(a, 'POST', '/v1/queues', { token, body: { name } })).status, 201);
  const res = await call(b, 'POST', `/v1/queues/${name}/receive`, { token, body: { waitSeconds: 1 } });
  t.equal(res.status, 200);
  t.same(res.body, { messages: [] });
  // Its last look took it out of the partition's state: a message sent now is nobody's.
  await until(() => parkedOn(name).every((n) => n === 0), 'no poll parked on any replica');
  t.equal((await call(a, 'POST', `/v1/queues/${name}/messages`, { token, body: { body: 'for the next' } })).status, 201);
  t.match((await call(a, 'POST', `/v1/queues/${name}/receive`, { token, body: {} })).body, { messages: [{ body: 'for the next' }] });
});

t.test('a client that leaves while waiting leaves nothing leased', async (t) => {
  const name = 'leaver';
  t.equal((await call(a, 'POST', '/v1/queues', { token, body: { name } })).status, 201);
  const node = followerOf(name);
  const url = cluster.urls[node]!;
  const abort = new AbortController();
  const poll = request(`${url}/v1/queues/${name}/receive`, {
    method: 'POST',
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    body: JSON.stringify({ waitSeconds: 20 }),
    signal: abort.signal,
  }).catch((err: unknown) => err);
  await waitingOn(node, 1);
  if (format >= 3) await until(() => parkedOn(name)[node] === 1, 'the poll parked in the state');
  abort.abort();
  await poll;
  await waitingOn(node, 0);
  // The node takes a parked poll whose client left out of the state (its last look).
  await until(() => parkedOn(name).every((n) => n === 0), 'no poll parked on any replica');
  t.equal((await call(b, 'POST', `/v1/queues/${name}/messages`, { token, body: { body: 'kept' } })).status, 201);
  const q = await call(a, 'GET', `/v1/queues/${name}`, { token });
  t.match(q.body, { stats: { visible: 1, inFlight: 0 } }, 'the message is visible, leased to nobody');
  const got = await call(a, 'POST', `/v1/queues/${name}/receive`, { token, body: {} });
  t.match(got.body, { messages: [{ body: 'kept', deliveryCount: 1 }] }, 'its first delivery is to a client that is there');
});

t.test('an empty receive does not bind its Idempotency-Key; the one that finds messages does', async (t) => {
  const name = 'idem-receive';
  t.equal((await call(a, 'POST', '/v1/queues', { token, body: { name } })).status, 201);
  const headers = { 'idempotency-key': 'receive-1' };
  const empty = await call(a, 'POST', `/v1/queues/${name}/receive`, { token, body: {}, headers });
  t.same(empty.body, { messages: [] });
  await call(b, 'POST', `/v1/queues/${name}/messages`, { token, body: { body: 'one' } });
  const first = await call(b, 'POST', `/v1/queues/${name}/receive`, { token, body: {}, headers });
  t.match(first.body, { messages: [{ body: 'one' }] });
  const replay = await call(a, 'POST', `/v1/queues/${name}/receive`, { token, body: {}, headers });
  t.same(replay.body, first.body, 'a retry replays the same delivery, with the same receipt handle');
  const q = await call(a, 'GET', `/v1/queues/${name}`, { token });
  t.match(q.body, { stats: { inFlight: 1, visible: 0 } }, 'leased once');
});

t.test('a long poll with an Idempotency-Key binds it to the delivery that woke it: a retry replays it', async (t) => {
  const name = 'idem-poll';
  t.equal((await call(a, 'POST', '/v1/queues', { token, body: { name } })).status, 201);
  const node = followerOf(name);
  const headers = { 'idempotency-key': 'poll-1' };
  const poll = call(cluster.urls[node]!, 'POST', `/v1/queues/${name}/receive`, { token, body: { waitSeconds: 20 }, headers });
  await waitingOn(node, 1);
  t.same(parkedOn(name), [0, 0, 0], 'it waits on its node, not parked in the state');
  t.equal((await call(b, 'POST', `/v1/queues/${name}/messages`, { token, body: { body: 'once' } })).status, 201);
  const first = await poll;
  t.match(first.body, { messages: [{ body: 'once' }] });
  const replay = await call(a, 'POST', `/v1/queues/${name}/receive`, { token, body: { waitSeconds: 20 }, headers });
  t.same(replay.body, first.body, 'the retry answers the same delivery, at once');
});

// Parking is format 3's (long-poll-format2.test.ts runs this file without it).
if (format >= 3) {
  t.test('a delivery that came while nobody waited for it goes back when its poll gives up', async (t) => {
    const name = 'unclaimed';
    t.equal((await call(a, 'POST', '/v1/queues', { token, body: { name } })).status, 201);
    const node = followerOf(name);
    const router = cluster.servers[node]!.node.router;
    const p = partitionOf(name, cluster.configs[0]!.partitions);
    // A poll parked, as the receive handler parks it, with a visibility timeout of ten minutes.
    const parking = router.park();
    const wait = { tag: parking.tag, ms: 20_000, again: false };
    t.match(await router.propose(p, 'poller', { type: 'receive', channel: { queue: name }, maxMessages: 1, visibilityTimeoutSeconds: 600, wait }, undefined), { ok: true, value: { parked: 'parked' } });
    t.equal((await call(b, 'POST', `/v1/queues/${name}/messages`, { token, body: { body: 'x' } })).status, 201);
    // Applied here, while the poll was busy elsewhere (its last look in flight, say): nobody took it.
    t.same((await parking.delivered).map((m) => m.body), ['x']);
    let released: string[] = [];
    parking.abandon((messages) => (released = messages.map((m) => m.body)), 1000);
    t.same(released, ['x'], 'given back at once, not left leased for ten minutes');
  });
}

t.test('a delay that starts after the poll began still wakes it when it ends', async (t) => {
  const name = 'delayed-later';
  t.equal((await call(a, 'POST', '/v1/queues', { token, body: { name } })).status, 201);
  const node = followerOf(name);
  const poll = call(cluster.urls[node]!, 'POST', `/v1/queues/${name}/receive`, { token, body: { waitSeconds: 20 } });
  await waitingOn(node, 1);
  t.equal((await call(b, 'POST', `/v1/queues/${name}/messages`, { token, body: { body: 'soon', delaySeconds: 1 } })).status, 201);
  // With the idle guard at ten minutes, only the delay's own wake-up can deliver it within the wait.
  t.match((await poll).body, { messages: [{ body: 'soon' }] });
});

t.test('a nack with a delay, by another consumer, wakes a poll when the delay ends', async (t) => {
  const name = 'nacked-later';
  t.equal((await call(a, 'POST', '/v1/queues', { token, body: { name } })).status, 201);
  t.equal((await call(a, 'POST', `/v1/queues/${name}/messages`, { token, body: { body: 'retry me' } })).status, 201);
  const held = await call(b, 'POST', `/v1/queues/${name}/receive`, { token, body: { visibilityTimeoutSeconds: 600 } });
  const handle = (held.body as { messages: { receiptHandle: string }[] }).messages[0]!.receiptHandle;
  const node = followerOf(name);
  // The poll registers while the lease has ten minutes to go: it would sleep past its wait.
  const poll = call(cluster.urls[node]!, 'POST', `/v1/queues/${name}/receive`, { token, body: { waitSeconds: 20 } });
  await waitingOn(node, 1);
  t.match((await call(a, 'POST', `/v1/queues/${name}/nack`, { token, body: { receiptHandles: [handle], delaySeconds: 1 } })).body, { acked: [handle] });
  t.match((await poll).body, { messages: [{ body: 'retry me', deliveryCount: 2 }] });
});

t.test('a message wakes one long poll, not every poll waiting on the channel', async (t) => {
  const name = 'herd';
  t.equal((await call(a, 'POST', '/v1/queues', { token, body: { name } })).status, 201);
  const node = followerOf(name);
  const p = partitionOf(name, cluster.configs[0]!.partitions);
  // A poll on a node that has not applied the queue yet looks again shortly instead of waiting.
  await until(() => cluster.servers[node]!.host.replica(p).state.channelIdOf({ queue: name }) !== null, 'the node applied the queue');
  const router = cluster.servers[node]!.node.router;
  // Count the receives the node proposes: each woken poll proposes one.
  let receives = 0;
  const propose = router.propose.bind(router);
  router.propose = (partition, actor, command, key, ctx) => {
    if (command.type === 'receive') receives++;
    return propose(partition, actor, command, key, ctx);
  };
  t.teardown(() => {
    delete (router as { propose?: unknown }).propose;
  });
  const answers: { body: string }[][] = [];
  const polls = [0, 1, 2].map(() =>
    call(cluster.urls[node]!, 'POST', `/v1/queues/${name}/receive`, { token, body: { waitSeconds: 20 } }).then((r) => {
      answers.push((r.body as { messages: { body: string }[] }).messages);
    }),
  );
  await waitingOn(node, 3);
  t.equal(receives, 3, 'each poll received once, found nothing, and waits');
  const other = cluster.urls[(node + 1) % 3]!;
  for (const [i, body] of ['one', 'two', 'three'].entries()) {
    t.equal((await call(other, 'POST', `/v1/queues/${name}/messages`, { token, body: { body } })).status, 201);
    await until(() => answers.length === i + 1, `poll ${i + 1} answered`);
  }
  await Promise.all(polls);
  t.same(answers.map((m) => m.map((x) => x.body)).sort(), [['one'], ['three'], ['two']], 'each poll got one message');
  if (format >= 3) {
    // Parked in the partition's state: each send's own entry leased its message to the poll that
    // waited longest, and the node answered it from its apply, with no receive of its own.
    t.equal(receives, 3, 'no receive after the first: the sends served the polls');
  } else {
    t.equal(receives, 6, 'one receive per message: only the poll that waited longest was woken each time');
  }
});

t.test('a poll that answers with other messages passes on a wake-up it took while receiving', async (t) => {
  const name = 'taken-meanwhile';
  t.equal((await call(a, 'POST', '/v1/queues', { token, body: { name } })).status, 201);
  const node = followerOf(name);
  const url = cluster.urls[node]!;
  const other = cluster.urls[(node + 1) % 3]!;
  t.equal((await call(other, 'POST', `/v1/queues/${name}/messages`, { token, body: { body: 'first' } })).status, 201);
  const p = partitionOf(name, cluster.configs[0]!.partitions);
  const replica = cluster.servers[node]!.host.replica(p);
  await until(() => {
    const id = replica.state.channelIdOf({ queue: name });
    return id !== null && replica.state.hasVisible(id, Date.now());
  }, 'the node applied the first message');
  // Hold the answer of poll A's receive (it takes "first") until a second message has been applied
  // here: A's next wait, registered before that receive, is then the one waiting longest.
  const router = cluster.servers[node]!.node.router;
  const propose = router.propose.bind(router);
  let held = false;
  let open = (): void => undefined;
  const gate = new Promise<void>((r) => (open = r));
  router.propose = (partition, actor, command, key, ctx) => {
    const res = propose(partition, actor, command, key, ctx);
    if (command.type !== 'receive' || held) return res;
    held = true;
    return res.then(async (v) => {
      await gate;
      return v;
    });
  };
  t.teardown(() => {
    delete (router as { propose?: unknown }).propose;
  });
  const pollA = call(url, 'POST', `/v1/queues/${name}/receive`, { token, body: { waitSeconds: 20 } });
  await until(() => held && router.waiting() === 1, 'poll A is receiving, its next wait registered');
  const pollB = call(url, 'POST', `/v1/queues/${name}/receive`, { token, body: { waitSeconds: 20 } });
  await waitingOn(node, 2);
  t.equal((await call(other, 'POST', `/v1/queues/${name}/messages`, { token, body: { body: 'second' } })).status, 201);
  await waitingOn(node, 1);
  open();
  t.match((await pollA).body, { messages: [{ body: 'first' }] }, 'A answers with the message its receive took');
  // The wake-up for "second" went to A's wait; A did not use it, so B gets it now, not after 20 s.
  t.match((await pollB).body, { messages: [{ body: 'second' }] }, 'B is woken in A’s place');
});

t.test('a wake-up that a poll does not act on goes to the next poll', async (t) => {
  const name = 'pass-on';
  t.equal((await call(a, 'POST', '/v1/queues', { token, body: { name } })).status, 201);
  const node = followerOf(name);
  const p = partitionOf(name, cluster.configs[0]!.partitions);
  const replica = cluster.servers[node]!.host.replica(p);
  await until(() => replica.state.channelIdOf({ queue: name }) !== null, 'the node applied the queue');
  const router = cluster.servers[node]!.node.router;
  const deadline = performance.now() + 20_000;
  const first = router.watch(p, { queue: name }, deadline, 1);
  const second = router.watch(p, { queue: name }, deadline, 1);
  let secondWoken = false;
  void second.woken.then(() => {
    secondWoken = true;
  });
  t.equal((await call(b, 'POST', `/v1/queues/${name}/messages`, { token, body: { body: 'once' } })).status, 201);
  t.equal(await first.woken, false, 'the poll that waited longest is woken');
  // A wake-up is delivered synchronously to every watcher it picks: one turn later, all have it.
  await new Promise((r) => setImmediate(r));
  t.notOk(secondWoken, 'the other still waits: one message wakes one poll');
  first.passOn();
  t.equal(await second.woken, false, 'the first did not receive, so the second is woken in its place');
  second.cancel();
});

// Last: it stops a node.
t.test('a node shutting down ends its long polls with an empty answer instead of holding the shutdown', async (t) => {
  const name = 'shutdown';
  t.equal((await call(a, 'POST', '/v1/queues', { token, body: { name } })).status, 201);
  const node = followerOf(name);
  const poll = call(cluster.urls[node]!, 'POST', `/v1/queues/${name}/receive`, { token, body: { waitSeconds: 20 } });
  await waitingOn(node, 1);
  if (format >= 3) await until(() => parkedOn(name)[node] === 1, 'the poll parked in the state');
  const closed = cluster.servers[node]!.close();
  const res = await poll;
  t.equal(res.status, 200);
  t.same(res.body, { messages: [] }, 'answered, with nothing leased');
  await closed;
  // Before it stopped, the node took its poll out of the state: a message sent now is not leased to it.
  const others = [0, 1, 2].filter((i) => i !== node);
  await until(() => others.every((i) => parkedOn(name)[i] === 0), 'no poll parked on the other replicas');
  const other = cluster.urls[others[0]!]!;
  t.equal((await call(other, 'POST', `/v1/queues/${name}/messages`, { token, body: { body: 'after' } })).status, 201);
  const q = await call(other, 'GET', `/v1/queues/${name}`, { token });
  t.match(q.body, { stats: { inFlight: 0, visible: 1 } });
});
