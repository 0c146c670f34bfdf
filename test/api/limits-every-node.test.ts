// The limits of a message and a batch hold on every node, leader or follower: a follower forwards a
// send to its partition's leader (in the Raft stream, or by HTTP), and a limit must not depend on
// which node a client reached. Three real nodes; what the API refuses, and how, is bad-input.test.ts.
import t from 'tap';
import { call, drain, startCluster, userToken } from './api-helpers.js';

const cluster = await startCluster();
t.teardown(() => cluster.close());
const token = await userToken(cluster.urls[0]!, 'len-owner');
const QUEUE = 'len-queue';

t.test('256 KiB bodies with 16 full attributes, and 1 MiB batches, on each node in turn', async (t) => {
  t.equal((await call(cluster.urls[0]!, 'POST', '/v1/queues', { token, body: { name: QUEUE } })).status, 201);
  // 87,381 € (3 bytes each) and one ASCII byte: 262,144 bytes exactly.
  const body = '€'.repeat(87_381) + 'a';
  const attributes = Object.fromEntries(Array.from({ length: 16 }, (_, i) => ['🐇'.repeat(128 - String(i).length) + String(i), 'ü'.repeat(1024)]));
  // Four bodies of 255 KiB: just under the batch's 1 MiB.
  const batch = Array.from({ length: 4 }, (_, j) => ({ body: String(j).repeat(255 * 1024) }));
  for (const [i, url] of cluster.urls.entries()) {
    const sent = await call(url, 'POST', `/v1/queues/${QUEUE}/messages`, { token, body: { body, attributes } });
    t.equal(sent.status, 201, `node ${i + 1}: a 256 KiB message with 16 full attributes is accepted`);
    const got = await drain(url, `/v1/queues/${QUEUE}`, token);
    const back = got.find((m) => m.messageId === (sent.body as { messageId?: string }).messageId);
    t.same(back === undefined ? null : { body: back.body, attributes: back.attributes }, { body, attributes }, `node ${i + 1}: it comes back exactly`);
    const sentBatch = await call(url, 'POST', `/v1/queues/${QUEUE}/messages/batch`, { token, body: { messages: batch } });
    t.equal(sentBatch.status, 201, `node ${i + 1}: a batch of 1020 KiB is accepted`);
    t.same((await drain(url, `/v1/queues/${QUEUE}`, token)).map((m) => m.body), batch.map((m) => m.body), `node ${i + 1}: the batch comes back exactly`);
  }
});
