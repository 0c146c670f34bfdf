// Review of format 15 (UNDELIVERED_RELEASED): a node releases (takes back, uncounted) what it leased
// for a poll whose client left before the answer. A receive with an Idempotency-Key that was answered
// once is answered again on a retry with the same key (a replay: the same deliveries, the same
// receipt handles, messages.ts replayReceive). If the client leaves the retry, the node released the
// replayed deliveries too: the delivery the first answer showed the client was taken back, counted
// as never made, and on its last allowed delivery the message came round again instead of going to
// its dead-letter queue. A client that saw a message and retried twice could read it for ever.
import t from 'tap';
import { call, userToken } from './api-helpers.js';
import { buildApp } from '../../src/api/index.js';
import { FORMAT, runQuery, type Command, type Result } from '../../src/store/broker/index.js';
import { TestStore } from '../store/broker/helpers.js';
import { TEST_JWT_SECRET } from './api-helpers.js';
import { appDeps } from './app-deps.js';

/** lifecycle-release.test.ts's app: one partition, applied at once, a long poll's watch never woken. */
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
    // The receive is applied (here: replayed); the client leaves before the answer.
    if (command.type === 'receive' && abort !== null) {
      abort.abort();
      abort = null;
      await new Promise((res) => setTimeout(res, 200));
    }
    return r;
  },
});
t.teardown(() => local.close());
const token = await userToken(local.url, 'replay-owner');

const keyedReceive = (signal?: AbortSignal) =>
  fetch(`${local.url}/v1/queues/once/receive`, {
    method: 'POST',
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', 'idempotency-key': 'retry-1', connection: 'close' },
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
