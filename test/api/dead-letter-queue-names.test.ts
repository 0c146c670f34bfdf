// A queue's or a subscription's dead-letter queue is named to its owner only: a topic's owner read the
// name of a subscriber's private dead-letter queue in listSubscriptions and getSubscription, and a
// grantee that of the owner's in getQueue, though each of those queues answers them 404 ("404, not
// 403 ... so names do not leak"). From the authorization review of stop 61.
import t from 'tap';
import { call, userToken } from './api-helpers.js';
import { localApp } from './local-app.js';

const local = await localApp();
t.teardown(() => local.close());
const u = local.url;
const owner = await userToken(u, 'topic-owner');
const sub = await userToken(u, 'subscriber');

t.test("a topic's owner does not read the name of a subscriber's private dead-letter queue; the subscriber does", async (t) => {
  t.equal((await call(u, 'POST', '/v1/topics', { token: owner, body: { name: 'news' } })).status, 201);
  t.equal((await call(u, 'POST', '/v1/queues', { token: sub, body: { name: 'subscriber-private-dlq' } })).status, 201);
  const made = await call(u, 'POST', '/v1/topics/news/subscriptions', { token: sub, body: { name: 's', maxDeliveries: 3, deadLetterQueue: 'subscriber-private-dlq' } });
  t.match(made, { status: 201, body: { deadLetterQueue: 'subscriber-private-dlq' } }, 'the subscriber is answered its own');
  t.equal((await call(u, 'GET', '/v1/queues/subscriber-private-dlq', { token: owner })).status, 404, 'the queue is hidden from the topic owner');
  const list = await call(u, 'GET', '/v1/topics/news/subscriptions', { token: owner });
  t.match(list, { status: 200, body: { items: [{ name: 's', maxDeliveries: 3, deadLetterQueue: null }] } }, 'listSubscriptions does not name it to the topic owner');
  t.match(await call(u, 'GET', '/v1/topics/news/subscriptions/s', { token: owner }), { status: 200, body: { deadLetterQueue: null } }, 'nor getSubscription');
  t.match(await call(u, 'GET', '/v1/topics/news/subscriptions/s', { token: sub }), { status: 200, body: { deadLetterQueue: 'subscriber-private-dlq' } }, 'its owner reads it');
});

t.test("a grantee does not read the name of the owner's dead-letter queue; the owner does", async (t) => {
  const grantee = await userToken(u, 'grantee');
  t.equal((await call(u, 'POST', '/v1/queues', { token: owner, body: { name: 'owner-hidden-dlq' } })).status, 201);
  t.equal((await call(u, 'POST', '/v1/queues', { token: owner, body: { name: 'shared', maxDeliveries: 3, deadLetterQueue: 'owner-hidden-dlq' } })).status, 201);
  t.equal((await call(u, 'PUT', '/v1/queues/shared/grants/grantee', { token: owner, body: { actions: ['send'] } })).status, 200);
  t.equal((await call(u, 'GET', '/v1/queues/owner-hidden-dlq', { token: grantee })).status, 404, 'hidden from the grantee');
  t.match(await call(u, 'GET', '/v1/queues/shared', { token: grantee }), { status: 200, body: { maxDeliveries: 3, deadLetterQueue: null } }, 'getQueue does not name it to the grantee');
  t.match(await call(u, 'GET', '/v1/queues/shared', { token: owner }), { status: 200, body: { deadLetterQueue: 'owner-hidden-dlq' } }, 'the owner reads it');
});
