// Long polls one user may have waiting at once on a node: LONG_POLLS_PER_USER, then 429 with
// Retry-After. Each holds a socket, its request and a watch for up to 20 s, and nothing else bounded
// them but the node's descriptors (the hostile-user review of 2026-12-07). Other users' polls, and the
// user's own once some end, go on.
import t from 'tap';
import { Agent } from 'undici';
import { buildApp } from '../../src/api/index.js';
import { LONG_POLLS_PER_USER } from '../../src/api/messaging.js';
import { FORMAT, runQuery } from '../../src/store/broker/index.js';
import { TestStore } from '../store/broker/helpers.js';
import { TEST_JWT_SECRET, call, userToken } from './api-helpers.js';
import { appDeps } from './app-deps.js';
import { until } from '../cluster/net-helpers.js';

t.setTimeout(60_000);

const now = (): number => Date.now();
const store = await TestStore.open(0, undefined, FORMAT, FORMAT, now());
const app = await buildApp(
  appDeps(
    {
      partitions: 1,
      propose: async (_p, actor, command, idempotencyKey) => {
        store.time = Math.max(store.time, now());
        return store.run(actor, command, idempotencyKey);
      },
      query: async (_p, q) => runQuery(store.sm, q, now()),
      staleQuery: (_p, q) => ({ result: runQuery(store.sm, q, now()), appliedIndex: store.index }),
      format: () => store.sm.format(),
      // Nothing is ever sent: a poll waits its whole wait (`until`, on the monotonic clock), then looks once more.
      watch: (_p, _ref, until) => {
        let timer: NodeJS.Timeout | undefined;
        const woken = new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), Math.max(0, until - performance.now()))));
        return { woken, cancel: () => clearTimeout(timer), passOn: () => undefined };
      },
      afterAnswer: (work) => void work.catch(() => undefined),
    },
    { jwtSecret: TEST_JWT_SECRET, now },
  ),
);
await app.listen({ host: '127.0.0.1', port: 0 });
const url = `http://127.0.0.1:${(app.server.address() as { port: number }).port}`;
const agent = new Agent({ connections: LONG_POLLS_PER_USER + 10 });
t.teardown(async () => {
  await agent.close();
  await app.close();
  await store.close();
});

const alice = await userToken(url, 'poll-alice');
const bob = await userToken(url, 'poll-bob');

/** A long poll of `token` on the quiet queue (each its own Idempotency-Key, so that it waits on this node). */
let n = 0;
async function poll(token: string, waitSeconds: number): Promise<{ status: number; retryAfter: string | null; code?: string }> {
  const res = await fetch(`${url}/v1/queues/quiet/receive`, {
    method: 'POST',
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', 'idempotency-key': `poll-${n++}` },
    body: JSON.stringify({ waitSeconds }),
    dispatcher: agent,
  } as unknown as RequestInit);
  const body = (await res.json()) as { code?: string };
  return { status: res.status, retryAfter: res.headers.get('retry-after'), code: body.code };
}

t.test(`one user's long polls past ${LONG_POLLS_PER_USER} on a node get 429; another user's wait`, async (t) => {
  t.equal((await call(url, 'POST', '/v1/queues', { token: alice, body: { name: 'quiet' } })).status, 201);
  t.match(String((await call(url, 'PUT', '/v1/queues/quiet/grants/poll-bob', { token: alice, body: { actions: ['receive'] } })).status), /^20[01]$/);
  const before = store.index;
  const waiting = Array.from({ length: LONG_POLLS_PER_USER }, () => poll(alice, 15));
  // Each waits once its receive, which found nothing, is applied.
  await until(() => store.index >= before + LONG_POLLS_PER_USER, `${LONG_POLLS_PER_USER} polls waiting`);
  const over = await poll(alice, 1);
  t.match(over, { status: 429, retryAfter: '1', code: 'rate_limited' }, 'one more is refused');
  const other = poll(bob, 1);
  t.match(await other, { status: 200 }, "another user's poll waits and answers");
  const done = await Promise.all(waiting);
  t.ok(
    done.every((r) => r.status === 200),
    `the ${LONG_POLLS_PER_USER} waiting ones answer 200 at the end of their wait`,
  );
  t.match(await poll(alice, 1), { status: 200 }, 'and then the user polls again');
});
