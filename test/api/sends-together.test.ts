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

t.test('concurrent acks through every node: each answer names its own handles; a handle acked twice at once is acked once', async (t) => {
  const c = await startCluster();
  t.teardown(() => c.close());
  const token = await userToken(c.urls[0]!, 'alice');
  t.equal((await call(c.urls[1]!, 'POST', '/v1/queues', { token, body: { name: 'acked' } })).status, 201);
  const batch = Array.from({ length: 60 }, (_, i) => ({ body: `message ${i}` }));
  t.equal((await call(c.urls[2]!, 'POST', '/v1/queues/acked/messages/batch', { token, body: { messages: batch } })).status, 201);
  const got = await call(c.urls[0]!, 'POST', '/v1/queues/acked/receive', { token, body: { maxMessages: 60, visibilityTimeoutSeconds: 300 } });
  const handles = (got.body as { messages: ReceivedMessage[] }).messages.map((m) => m.receiptHandle);
  t.equal(handles.length, 60);
  // Thirty requests of two handles each, through the three nodes, and the first handle a second time.
  const requests = [...Array.from({ length: 30 }, (_, i) => handles.slice(2 * i, 2 * i + 2)), [handles[0]!]];
  const answers = await Promise.all(requests.map((receiptHandles, i) => call(c.urls[i % 3]!, 'POST', '/v1/queues/acked/ack', { token, body: { receiptHandles } })));
  t.same(
    answers.map((a) => a.status),
    requests.map(() => 200),
  );
  const outcomes = answers.map((a) => a.body as { acked: string[]; failed: { receiptHandle: string; code: string }[] });
  outcomes.slice(1, 30).forEach((o, i) => t.strictSame(o, { acked: requests[i + 1], failed: [] }, `request ${i + 1}: its own two handles acked`));
  // Which of the two acks of the first handle came first is up to the network: exactly one acked it.
  const first = [outcomes[0]!, outcomes[30]!].map((o) => o.acked.includes(handles[0]!));
  t.equal(first.filter(Boolean).length, 1, 'the handle acked twice is acked by one request');
  t.same(
    [...outcomes[0]!.failed, ...outcomes[30]!.failed],
    [{ receiptHandle: handles[0], code: 'receipt_stale' }],
    'and stale for the other',
  );
  t.ok(outcomes[0]!.acked.includes(handles[1]!), "the first request's second handle acked");
  const queue = await call(c.urls[1]!, 'GET', '/v1/queues/acked', { token });
  t.match(queue.body, { stats: { visible: 0, inFlight: 0, delayed: 0 } }, 'every message acked: none left in flight');
});
