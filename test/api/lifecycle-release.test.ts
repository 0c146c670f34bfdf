// A long poll whose client left after a message was leased for it "gets them released (nacked) at
// once" (docs/api.md, Long polling). The release is a client's nack: on a message's last allowed
// delivery it dead-letters it, or drops it without a dead-letter queue, though no client ever saw it.
// (The Idempotency-Key only keeps the poll from parking, which this app does not serve; the release
// is the same for a parked poll, Parking.abandon.)
import t from 'tap';
import { call, userToken } from './api-helpers.js';
import { buildApp } from '../../src/api/index.js';
import { FORMAT, runQuery, type Command, type Result } from '../../src/store/broker/index.js';
import { TestStore } from '../store/broker/helpers.js';
import { TEST_JWT_SECRET } from './api-helpers.js';
import { appDeps } from './app-deps.js';

/** local-app.ts's app, with a long poll's watch (never woken: the poll finds its message at once). */
async function localApp(opts: { propose: (command: Command, apply: () => Promise<Result>) => Promise<Result> }) {
  const now = (): number => Date.now();
  const store = await TestStore.open(0, undefined, FORMAT, FORMAT, now());
  const app = await buildApp(
    appDeps(
      {
        partitions: 1,
        propose: async (_p, actor, command, idempotencyKey) =>
          opts.propose(command, async () => {
            store.time = Math.max(store.time, now());
            return store.run(actor, command, idempotencyKey);
          }),
        query: async (_p, q) => runQuery(store.sm, q, now()),
        staleQuery: (_p, q) => ({ result: runQuery(store.sm, q, now()), appliedIndex: store.index }),
        format: () => store.sm.format(),
        watch: () => ({ woken: new Promise<boolean>(() => undefined), cancel: () => undefined, passOn: () => undefined }),
        afterAnswer: (work) => void work.catch(() => undefined),
      },
      { jwtSecret: TEST_JWT_SECRET, now },
    ),
  );
  await app.listen({ host: '127.0.0.1', port: 0 });
  const address = app.server.address();
  const port = typeof address === 'object' && address !== null ? address.port : 0;
  return { url: `http://127.0.0.1:${port}`, close: async () => { await app.close(); await store.close(); } };
}

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

t.test('a message leased to a poll whose client left is not dropped: it was never delivered', async (t) => {
  t.equal((await call(local.url, 'POST', '/v1/queues', { token, body: { name: 'rel', maxDeliveries: 1 } })).status, 201);
  t.equal((await call(local.url, 'POST', '/v1/queues/rel/messages', { token, body: { body: 'never seen' } })).status, 201);
  abort = new AbortController();
  await fetch(`${local.url}/v1/queues/rel/receive`, {
    method: 'POST',
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', 'idempotency-key': 'poll-1' },
    body: JSON.stringify({ waitSeconds: 5 }),
    signal: abort.signal,
  }).catch(() => undefined);
  await new Promise((res) => setTimeout(res, 500)); // the release (afterAnswer) is applied
  const q = await call(local.url, 'GET', '/v1/queues/rel', { token });
  t.match(q.body, { stats: { visible: 1, dropped: 0 } }, 'the message is visible again, not dropped');
  const got = await call(local.url, 'POST', '/v1/queues/rel/receive', { token, body: {} });
  t.match(got.body, { messages: [{ body: 'never seen', deliveryCount: 1 }] }, 'and delivered to a client that is there, as its first delivery');
});
