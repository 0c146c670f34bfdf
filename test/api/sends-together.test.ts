// Single sends that arrive together, on every node, share entries in the queue's partition
// (PartitionReplica.propose): over HTTP each client still gets its own message, by whichever node it asked.
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
