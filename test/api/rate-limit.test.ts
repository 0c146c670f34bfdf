// The login and registration limits: fixed windows per key with an injected clock, and the client
// address they count, which is the load balancer's unless the balancer is trusted (--trust-proxy).
import t from 'tap';
import { Receipts, buildApp, type ApiDeps } from '../../src/api/index.js';
import { REGISTER_LIMITS } from '../../src/api/routes/auth.js';
import { RateLimiter } from '../../src/api/rate-limit.js';
import { ok, type Command } from '../../src/store/broker/index.js';

t.test('RateLimiter: a window allows `limit` hits per key, then says how long to wait', async (t) => {
  let now = 1_000_000;
  const rl = new RateLimiter(3, 60_000, () => now);
  t.strictSame([rl.hit('a'), rl.hit('a'), rl.hit('a')], [0, 0, 0]);
  t.equal(rl.hit('a'), 60, 'the fourth waits for the window to end');
  t.equal(rl.hit('b'), 0, 'keys are apart');
  now += 30_000;
  t.equal(rl.hit('a'), 30);
  now += 30_000;
  t.equal(rl.hit('a'), 0, 'a new window');
});

t.test('RateLimiter: the table stays bounded', async (t) => {
  let now = 0;
  const rl = new RateLimiter(1, 1000, () => now, 100);
  for (let i = 0; i < 1000; i++) rl.hit(`k${i}`);
  t.ok((rl as unknown as { windows: Map<string, unknown> }).windows.size <= 100);
  now += 1000;
  t.equal(rl.hit('k999'), 0);
});

/** An app whose broker registers anybody (the limit is decided before anything is proposed). */
async function app(trustProxy?: string[]) {
  const proposed: Command[] = [];
  const never = (): never => {
    throw new Error('not used by registration');
  };
  const deps: ApiDeps = {
    broker: {
      partitions: 4,
      propose: async (_p, _actor, command) => {
        proposed.push(command);
        return ok({ username: (command as { username: string }).username, createdAt: new Date(0).toISOString() });
      },
      query: never,
      staleQuery: never,
      watch: never,
      format: never,
      park: never,
      afterAnswer: never,
      waiting: () => 0,
    },
    cluster: { nodeId: 'n1', nodes: [], status: () => [], leaderless: () => [], queueDepths: () => [], partitionDepths: () => [], logSyncs: () => 0, peerTraffic: () => ({ sent: 0, dropped: 0, failed: 0, queued: 0, batches: 0, carriedCommands: 0, carriedAnswers: 0 }), cutOffFor: () => 0 },
    jwtSecret: 'x'.repeat(32),
    receipts: new Receipts('r'.repeat(32)),
    ...(trustProxy === undefined ? {} : { trustProxy }),
  };
  return { app: await buildApp(deps), proposed };
}

const register = (a: Awaited<ReturnType<typeof app>>['app'], i: number, forwardedFor: string) =>
  a.inject({
    method: 'POST',
    url: '/v1/auth/register',
    remoteAddress: '127.0.0.1',
    headers: { 'x-forwarded-for': forwardedFor },
    payload: { username: `user${i}`, password: 'password-1' },
  });

t.test('behind an untrusted proxy, every client shares the proxy’s budget', async (t) => {
  const { app: a, proposed } = await app();
  t.teardown(() => a.close());
  for (let i = 0; i < REGISTER_LIMITS.perAddress; i++) t.equal((await register(a, i, `10.0.0.${i}`)).statusCode, 201);
  const over = await register(a, 99, '10.0.0.99');
  t.equal(over.statusCode, 429, 'X-Forwarded-For is not believed');
  t.equal(over.headers['content-type'], 'application/problem+json; charset=utf-8');
  t.equal(proposed.length, REGISTER_LIMITS.perAddress, 'the refused registration proposed nothing');
});

t.test('behind a trusted proxy, each client address has its own budget', async (t) => {
  const { app: a } = await app(['127.0.0.1']);
  t.teardown(() => a.close());
  for (let i = 0; i < REGISTER_LIMITS.perAddress; i++) t.equal((await register(a, i, '10.0.0.1')).statusCode, 201);
  t.equal((await register(a, 98, '10.0.0.1')).statusCode, 429, 'one client over its budget');
  t.equal((await register(a, 99, '10.0.0.2')).statusCode, 201, 'another client is not');
});
