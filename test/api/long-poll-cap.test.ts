// Long polls one user may have waiting at once on a node: LONG_POLLS_PER_USER, then 429 with
// Retry-After. Each holds a socket, its request and a watch for up to 20 s, and nothing else bounded
// them but the node's descriptors (the hostile-user review of 2026-12-07). Other users' polls, and the
// user's own once some end, go on.
import t from 'tap';
import { Agent } from 'undici';
import { LONG_POLLS_PER_USER } from '../../src/api/messaging.js';
import { call, userToken } from './api-helpers.js';
import { until } from '../cluster/net-helpers.js';
import { localApp } from './local-app.js';

t.setTimeout(60_000);

// Nothing is ever sent to the queue polled: a poll waits its whole wait (local-app.ts, quietWatch).
const local = await localApp();
const { url } = local;
const applied = (): number => local.state.applied().index;
const agent = new Agent({ connections: LONG_POLLS_PER_USER + 10 });
t.teardown(async () => {
  await agent.close();
  await local.close();
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
  const before = applied();
  const waiting = Array.from({ length: LONG_POLLS_PER_USER }, () => poll(alice, 15));
  // Each waits once its receive, which found nothing, is applied.
  await until(() => applied() >= before + LONG_POLLS_PER_USER, `${LONG_POLLS_PER_USER} polls waiting`);
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
