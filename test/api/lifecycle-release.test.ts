// A receive whose client left after a message was leased for it gets it released at once
// (docs/api.md, Long polling). The release was a client's nack: on a message's last allowed delivery
// it dead-lettered it, or dropped it without a dead-letter queue, though no client ever saw it (the
// message-lifecycle review of 2026-12-07). From format 15 it takes the delivery back, uncounted.
// (A long poll's release is the same, for a parked poll through Parking.abandon.) A receive with an
// Idempotency-Key keeps what it leased until the lease ends: its retry replays the first answer,
// handles included, so those must stay live (chaos seed 15334: released, the retry handed out a
// delivery another receive then took too); and a replay hands out the first answer's deliveries
// again, which may have reached the client (a review of format 15: released, a message on its last
// allowed delivery came round for ever).
import t from 'tap';
import { call, userToken } from './api-helpers.js';
import { localApp } from './local-app.js';

t.setTimeout(30_000);

let abort: AbortController | null = null;
const local = await localApp({
  propose: async (command, apply) => {
    const r = await apply();
    // The receive is applied (the message leased); the client leaves before the answer.
    if (command.type === 'receive' && abort !== null) {
      abort.abort();
      abort = null;
      await new Promise((res) => setTimeout(res, 200));
    }
    return r;
  },
});
t.teardown(() => local.close());
const token = await userToken(local.url, 'rel-owner');

t.test('a message leased to a receive whose client left is not dropped: it was never delivered', async (t) => {
  t.equal((await call(local.url, 'POST', '/v1/queues', { token, body: { name: 'rel', maxDeliveries: 1 } })).status, 201);
  t.equal((await call(local.url, 'POST', '/v1/queues/rel/messages', { token, body: { body: 'never seen' } })).status, 201);
  abort = new AbortController();
  await fetch(`${local.url}/v1/queues/rel/receive`, {
    method: 'POST',
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    body: JSON.stringify({}),
    signal: abort.signal,
  }).catch(() => undefined);
  await new Promise((res) => setTimeout(res, 500)); // the release (afterAnswer) is applied
  const q = await call(local.url, 'GET', '/v1/queues/rel', { token });
  t.match(q.body, { stats: { visible: 1, dropped: 0 } }, 'the message is visible again, not dropped');
  const got = await call(local.url, 'POST', '/v1/queues/rel/receive', { token, body: {} });
  t.match(got.body, { messages: [{ body: 'never seen', deliveryCount: 1 }] }, 'and delivered to a client that is there, as its first delivery');
});

const keyedReceive = (signal?: AbortSignal, queue = 'once', key = 'retry-1') =>
  fetch(`${local.url}/v1/queues/${queue}/receive`, {
    method: 'POST',
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', 'idempotency-key': key, connection: 'close' },
    body: JSON.stringify({}),
    ...(signal === undefined ? {} : { signal }),
  });

t.test('a retry of a keyed receive that its client left does not take back the delivery the first answer showed', async (t) => {
  t.equal((await call(local.url, 'POST', '/v1/queues', { token, body: { name: 'once', maxDeliveries: 1 } })).status, 201);
  t.equal((await call(local.url, 'POST', '/v1/queues/once/messages', { token, body: { body: 'seen' } })).status, 201);
  const first = (await (await keyedReceive()).json()) as { messages: { body: string; deliveryCount: number }[] };
  t.match(first, { messages: [{ body: 'seen', deliveryCount: 1 }] }, 'the client sees the message: its one allowed delivery');
  // The client retries with the same key (it did not trust the answer) and leaves before the replay's answer.
  abort = new AbortController();
  await keyedReceive(abort.signal).catch(() => undefined);
  await new Promise((res) => setTimeout(res, 500)); // the release (afterAnswer) is applied
  const again = await call(local.url, 'POST', '/v1/queues/once/receive', { token, body: {} });
  t.strictSame((again.body as { messages: unknown[] }).messages, [], 'a message delivered its maxDeliveries times is not delivered again');
});

t.test('a keyed receive whose client left before the answer keeps its lease for the retry, which replays live handles', async (t) => {
  t.equal((await call(local.url, 'POST', '/v1/queues', { token, body: { name: 'kept' } })).status, 201);
  t.equal((await call(local.url, 'POST', '/v1/queues/kept/messages', { token, body: { body: 'for the retry' } })).status, 201);
  const attempt = (signal?: AbortSignal) => keyedReceive(signal, 'kept', 'kept-1');
  abort = new AbortController();
  await attempt(abort.signal).catch(() => undefined);
  await new Promise((res) => setTimeout(res, 500)); // a release (afterAnswer) would be applied by now
  const other = await call(local.url, 'POST', '/v1/queues/kept/receive', { token, body: {} });
  t.strictSame((other.body as { messages: unknown[] }).messages, [], 'still leased to the first attempt: another receive gets nothing');
  const retry = (await (await attempt()).json()) as { messages: { body: string; deliveryCount: number; receiptHandle: string }[] };
  t.match(retry, { messages: [{ body: 'for the retry', deliveryCount: 1 }] }, 'the retry replays the first answer');
  const acked = await call(local.url, 'POST', '/v1/queues/kept/ack', { token, body: { receiptHandles: [retry.messages[0]!.receiptHandle] } });
  t.match(acked.body, { acked: [retry.messages[0]!.receiptHandle], failed: [] }, 'its handle is live: the ack takes the message');
});
