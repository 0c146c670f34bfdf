// Single sends that arrive together, on every node, share entries in the queue's partition
// (PartitionReplica.propose), and so do acks: over HTTP each client still gets its own message, or
// its own handles' outcomes, by whichever node it asked.
import t from 'tap';
import { call, drain, startCluster, userToken, type ReceivedMessage } from './api-helpers.js';

t.test('concurrent sends through every node: each answer names its own message, and every body arrives once', async (t) => {
  const c = await startCluster();
  t.teardown(() => c.close());
  const token = await userToken(c.urls[0]!, 'alice');
  t.equal((await call(c.urls[1]!, 'POST', '/v1/queues', { token, body: { name: 'together' } })).status, 201);
  const bodies = Array.from({ length: 60 }, (_, i) => `message ${i}`);
  const answers = await Promise.all(bodies.map((body, i) => call(c.urls[i % 3]!, 'POST', '/v1/queues/together/messages', { token, body: { body } })));
  t.same(
    answers.map((a) => a.status),
    bodies.map(() => 201),
  );
  const sent = answers.map((a) => a.body as { messageId: string; sequence: number });
  t.equal(new Set(sent.map((s) => s.messageId)).size, bodies.length, 'every message id distinct');
  t.equal(new Set(sent.map((s) => s.sequence)).size, bodies.length, 'every sequence distinct');
  const received: ReceivedMessage[] = [];
  for (let round = 0; round < 10 && received.length < bodies.length; round++) received.push(...(await drain(c.urls[round % 3]!, '/v1/queues/together', token)));
  const bodyOf = new Map(received.map((m) => [m.messageId, m.body]));
  t.equal(received.length, bodies.length, 'each message once');
  t.same(
    sent.map((s) => bodyOf.get(s.messageId)),
    bodies,
    "each answer's message id names the body that request sent",
  );
});

t.test('concurrent acks, nacks and lease extensions through every node: each answer names its own handles; a handle acked twice at once is acked once', async (t) => {
  const c = await startCluster();
  t.teardown(() => c.close());
  const token = await userToken(c.urls[0]!, 'alice');
  t.equal((await call(c.urls[1]!, 'POST', '/v1/queues', { token, body: { name: 'acked' } })).status, 201);
  const batch = Array.from({ length: 60 }, (_, i) => ({ body: `message ${i}` }));
  t.equal((await call(c.urls[2]!, 'POST', '/v1/queues/acked/messages/batch', { token, body: { messages: batch } })).status, 201);
  const got = await call(c.urls[0]!, 'POST', '/v1/queues/acked/receive', { token, body: { maxMessages: 60, visibilityTimeoutSeconds: 300 } });
  const h = (got.body as { messages: ReceivedMessage[] }).messages.map((m) => m.receiptHandle);
  t.equal(h.length, 60);
  const post = (node: number, op: string, body: object) => call(c.urls[node]!, 'POST', `/v1/queues/acked/${op}`, { token, body });
  type Outcome = { acked: string[]; failed: { receiptHandle: string; code: string }[] };
  // Twenty-eight acks of two handles, spread over the three nodes; the last four handles: acked
  // twice at once through two nodes, extended twice through two nodes, and nacked.
  const [pairs, twice, extended, nacked] = await Promise.all([
    Promise.all(Array.from({ length: 28 }, (_, i) => post(i % 3, 'ack', { receiptHandles: h.slice(2 * i, 2 * i + 2) }))),
    Promise.all([post(1, 'ack', { receiptHandles: [h[56]] }), post(2, 'ack', { receiptHandles: [h[56]] })]),
    Promise.all([post(0, 'lease', { receiptHandles: [h[57]], visibilityTimeoutSeconds: 600 }), post(2, 'lease', { receiptHandles: [h[57]], visibilityTimeoutSeconds: 600 })]),
    Promise.all([post(1, 'nack', { receiptHandles: [h[58], h[59]] })]),
  ]);
  t.same(
    [...pairs, ...twice, ...extended, ...nacked].map((a) => a.status),
    Array.from({ length: 33 }, () => 200),
  );
  pairs.forEach((a, i) => t.strictSame(a.body, { acked: h.slice(2 * i, 2 * i + 2), failed: [] }, `ack ${i}: its own two handles`));
  const [first, second] = twice.map((a) => a.body as Outcome);
  // Which of the two came first is up to the network: exactly one acked it, and it is stale for the other.
  t.same([first!.acked.length + second!.acked.length, [...first!.failed, ...second!.failed]], [1, [{ receiptHandle: h[56], code: 'receipt_stale' }]], 'a handle acked twice at once: acked once');
  for (const a of extended) t.match(a.body, { extended: [h[57]], failed: [] }, 'a live lease extended, by each request');
  t.match(nacked[0]!.body, { nacked: [h[58], h[59]], failed: [] });
  const queue = await call(c.urls[1]!, 'GET', '/v1/queues/acked', { token });
  t.match(queue.body, { stats: { visible: 2, inFlight: 1, delayed: 0 } }, 'the two nacked visible again, the extended one in flight, the rest acked');
});
