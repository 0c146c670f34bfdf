// The login and registration limits: fixed windows per key and the failed-login guard, with an
// injected clock, and the client address they count, which is the load balancer's unless the
// balancer is trusted (--trust-proxy).
import t from 'tap';
import { buildApp, type ApiDeps } from '../../src/api/index.js';
import { appDeps } from './app-deps.js';
import bcrypt from 'bcryptjs';
import { LOGIN_LIMITS, REGISTER_LIMITS, prehash } from '../../src/api/routes/auth.js';
import { LoginGuard, RateLimiter, addressKey, type SharedLimits } from '../../src/api/rate-limit.js';
import { fail, ok, type Command } from '../../src/store/broker/index.js';

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

/** An app whose broker registers anybody (the limit is decided before anything is proposed) and answers `query`. */
async function app(trustProxy?: string[], query?: ApiDeps['broker']['query'], sharedLimits?: SharedLimits) {
  const proposed: Command[] = [];
  const deps = appDeps(
    {
      propose: async (_p, _actor, command) => {
        proposed.push(command);
        return ok({ username: (command as { username: string }).username, createdAt: new Date(0).toISOString() });
      },
      ...(query === undefined ? {} : { query }),
    },
    { ...(trustProxy === undefined ? {} : { trustProxy }), ...(sharedLimits === undefined ? {} : { sharedLimits }) },
  );
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

t.test('an IPv6 client counts by its /64: the addresses it may pick from share one budget', async (t) => {
  const { app: a } = await app(['127.0.0.1']);
  t.teardown(() => a.close());
  for (let i = 0; i < REGISTER_LIMITS.perAddress; i++) t.equal((await register(a, i, `2001:db8:1:2::${(i + 1).toString(16)}`)).statusCode, 201);
  t.equal((await register(a, 97, '2001:db8:1:2:ffff:ffff:ffff:ffff')).statusCode, 429, 'another address of the same /64');
  t.equal((await register(a, 98, '2001:db8:1:3::1')).statusCode, 201, 'the next /64 is another client');
  for (let i = 0; i < REGISTER_LIMITS.perAddress; i++) t.equal((await register(a, 200 + i, '10.9.8.7')).statusCode, 201);
  t.equal((await register(a, 99, '::ffff:10.9.8.7')).statusCode, 429, 'an IPv4-mapped address is its IPv4 address');
});

t.test('addressKey', async (t) => {
  const cases: [string, string][] = [
    ['10.0.0.1', '10.0.0.1'],
    ['::ffff:10.0.0.1', '10.0.0.1'],
    ['::ffff:a00:1', '10.0.0.1'],
    ['2001:db8::1', '2001:db8:0:0::/64'],
    ['2001:0DB8:0001:0002:0003:4:5:6', '2001:db8:1:2::/64'],
    ['2001:db8:1:2::', '2001:db8:1:2::/64'],
    ['fe80::1%eth0', 'fe80:0:0:0::/64'],
    ['64:ff9b::10.0.0.1', '64:ff9b:0:0::/64'],
    ['::1', '0:0:0:0::/64'],
    ['not an address', 'not an address'],
  ];
  for (const [ip, key] of cases) t.equal(addressKey(ip), key, ip);
});

t.test('LoginGuard: failures of one (user, address) back off, doubling; a success clears them; successes count nowhere', async (t) => {
  let now = 1_000_000;
  const g = new LoginGuard({ free: 3, maxBackoffMs: 8_000, forgetMs: 60_000, perAddress: 100, windowMs: 60_000 }, () => now);
  for (let i = 0; i < 50; i++) g.succeeded('alice', '10.0.0.1');
  t.equal(g.wait('alice', '10.0.0.1'), 0, 'successes are free');
  g.failed('alice', '10.0.0.1');
  g.failed('alice', '10.0.0.1');
  t.equal(g.wait('alice', '10.0.0.1'), 0, 'under the free failures');
  g.failed('alice', '10.0.0.1');
  t.equal(g.wait('alice', '10.0.0.1'), 1, 'then 1 s');
  t.equal(g.wait('alice', '10.0.0.2'), 0, 'the same user from another address is not held');
  t.equal(g.wait('bob', '10.0.0.1'), 0, 'another user from the same address is not held');
  const waits: number[] = [];
  for (let i = 0; i < 5; i++) {
    now += g.wait('alice', '10.0.0.1') * 1000;
    g.failed('alice', '10.0.0.1');
    waits.push(g.wait('alice', '10.0.0.1'));
  }
  t.strictSame(waits, [2, 4, 8, 8, 8], 'doubling, up to the most');
  now += 8_000;
  g.succeeded('alice', '10.0.0.1');
  g.failed('alice', '10.0.0.1');
  t.equal(g.wait('alice', '10.0.0.1'), 0, 'a success started the count again');
  now += 60_000;
  g.failed('alice', '10.0.0.1');
  g.failed('alice', '10.0.0.1');
  t.equal(g.wait('alice', '10.0.0.1'), 0, 'old failures are forgotten');
});

t.test('LoginGuard: an address that fails for many users waits for the window; the table stays bounded', async (t) => {
  let now = 0;
  const g = new LoginGuard({ free: 5, maxBackoffMs: 8_000, forgetMs: 1_000, perAddress: 10, windowMs: 60_000 }, () => now, 100);
  for (let i = 0; i < 10; i++) g.failed(`user${i}`, '10.0.0.66');
  t.equal(g.wait('someone-else', '10.0.0.66'), 60, 'spraying passwords over users');
  t.equal(g.wait('someone-else', '10.0.0.7'), 0);
  for (let i = 0; i < 1000; i++) g.failed(`u${i}`, `10.1.${i >> 8}.${i & 255}`);
  t.ok((g as unknown as { pairs: Map<string, unknown> }).pairs.size <= 100);
  now += 60_000;
  t.equal(g.wait('someone-else', '10.0.0.66'), 0, 'a new window');
});

t.test("a guesser cannot keep a user out: its failures hold its own address, not the user's", async (t) => {
  const hash = bcrypt.hashSync(prehash('right-password'), 10);
  const { app: a } = await app(['127.0.0.1'], async (_p, q) =>
    q.type === 'user.get' && q.username === 'victim' ? ok({ username: 'victim', passwordHash: hash, createdAt: 0 }) : fail('not_found', 'no such user'),
  );
  t.teardown(() => a.close());
  const login = (from: string, password: string) =>
    a.inject({ method: 'POST', url: '/v1/auth/login', remoteAddress: '127.0.0.1', headers: { 'x-forwarded-for': from }, payload: { username: 'victim', password } });
  const guesses: number[] = [];
  for (let i = 0; i < LOGIN_LIMITS.free + 6; i++) guesses.push((await login('10.0.0.66', `wrong-guess-${i}`)).statusCode);
  t.strictSame(guesses, [...Array(LOGIN_LIMITS.free).fill(401), ...Array(6).fill(429)], 'the guesser is held after its free failures');
  const held = await login('10.0.0.66', 'right-password');
  t.equal(held.statusCode, 429, 'even with the right password, from its address');
  t.ok(Number(held.headers['retry-after']) >= 1);
  for (let i = 0; i < 3; i++) t.equal((await login('10.0.0.7', 'right-password')).statusCode, 200, `the user from its own address, login ${i + 1}`);
});

t.test('LoginGuard: attempts at once count at once; a success gives its count back; a full table keeps running waits', async (t) => {
  const now = 0;
  const g = new LoginGuard({ free: 3, maxBackoffMs: 60_000, forgetMs: 600_000, perAddress: 5, windowMs: 60_000 }, () => now, 10);
  // Ten attempts begun before any is decided: only the free ones go on.
  const begun = Array.from({ length: 10 }, () => g.begin('alice', '10.0.0.66'));
  t.strictSame(begun.map((w) => w > 0), [false, false, false, true, true, true, true, true, true, true]);
  // Successes are free for the address: five in a row from another user do not fill its window.
  for (let i = 0; i < 5; i++) {
    t.equal(g.begin('bob', '10.0.0.7'), 0);
    g.succeeded('bob', '10.0.0.7');
  }
  t.equal(g.begin('bob', '10.0.0.7'), 0, 'still free');
  g.cancel('bob', '10.0.0.7');
  // Filling the table with new addresses does not clear alice's wait on 10.0.0.66.
  for (let i = 0; i < 50; i++) g.failed(`u${i}`, `10.1.0.${i}`);
  t.ok(g.wait('alice', '10.0.0.66') > 0, 'the guesser still waits');
});

/**
 * Nodes whose limit events reach each other at once, as src/cluster/limit-gossip.ts carries them
 * between real nodes within moments (test/api/cluster-limits.test.ts). `mute` stops one node's.
 */
function sharedBus(n: number) {
  const listeners: ((e: unknown) => void)[][] = Array.from({ length: n }, () => []);
  const muted = new Set<number>();
  const nodes: SharedLimits[] = listeners.map((mine, i) => ({
    publish: (e) => {
      if (!muted.has(i)) listeners.forEach((theirs, j) => j !== i && theirs.forEach((l) => l(e)));
    },
    subscribe: (l) => void mine.push(l),
    stats: { sent: 0, received: 0, dropped: 0 },
  }));
  return { nodes, mute: (i: number) => muted.add(i), listeners };
}

t.test('the limits hold across the cluster: failures spread over the nodes count as one budget', async (t) => {
  const hash = bcrypt.hashSync(prehash('right-password'), 10);
  const users: ApiDeps['broker']['query'] = async (_p, q) =>
    q.type === 'user.get' && q.username === 'victim' ? ok({ username: 'victim', passwordHash: hash, createdAt: 0 }) : fail('not_found', 'no such user');
  const bus = sharedBus(3);
  const nodes = await Promise.all(bus.nodes.map(async (shared) => (await app(['127.0.0.1'], users, shared)).app));
  t.teardown(() => Promise.all(nodes.map((a) => a.close())));
  const login = (i: number, from: string, password: string) =>
    nodes[i]!.inject({ method: 'POST', url: '/v1/auth/login', remoteAddress: '127.0.0.1', headers: { 'x-forwarded-for': from }, payload: { username: 'victim', password } });

  const guesses: number[] = [];
  for (let i = 0; i < LOGIN_LIMITS.free + 3; i++) guesses.push((await login(i % 3, '10.0.0.66', `wrong-guess-${i}`)).statusCode);
  t.strictSame(guesses, [...Array(LOGIN_LIMITS.free).fill(401), 429, 429, 429], 'round-robin over three nodes: held after the free failures of one');

  // A success on one node clears the pair on all.
  t.equal((await login(1, '10.0.0.9', 'wrong-password')).statusCode, 401);
  for (let i = 0; i < LOGIN_LIMITS.free - 2; i++) t.equal((await login(2, '10.0.0.9', 'wrong-password')).statusCode, 401);
  t.equal((await login(0, '10.0.0.9', 'right-password')).statusCode, 200);
  const after: number[] = [];
  for (let i = 0; i < LOGIN_LIMITS.free; i++) after.push((await login(1 + (i % 2), '10.0.0.9', 'wrong-password')).statusCode);
  t.strictSame(after, Array(LOGIN_LIMITS.free).fill(401), 'the other nodes start the count again too');

  // Registrations from one address, spread over the nodes.
  const regs: number[] = [];
  for (let i = 0; i <= REGISTER_LIMITS.perAddress; i++) regs.push((await register(nodes[i % 3]!, i, '10.0.0.77')).statusCode);
  t.strictSame(regs, [...Array(REGISTER_LIMITS.perAddress).fill(201), 429]);

  // A node whose events do not arrive (down, or cut off) leaves the others' counts to themselves.
  bus.mute(0);
  for (let i = 0; i < LOGIN_LIMITS.free; i++) t.equal((await login(0, '10.0.0.50', 'wrong-password')).statusCode, 401);
  t.equal((await login(1, '10.0.0.50', 'wrong-password')).statusCode, 401, 'unheard failures are not counted elsewhere');
  t.equal((await login(0, '10.0.0.50', 'wrong-password')).statusCode, 429, 'its own still are');
});

t.test("another node's events are checked before they count: junk is ignored", async (t) => {
  const bus = sharedBus(2);
  const { app: a } = await app(['127.0.0.1'], undefined, bus.nodes[0]);
  t.teardown(() => a.close());
  for (const junk of [null, 'register', { kind: 'register' }, { kind: 'register', address: 7 }, { kind: 'login.failed', address: '10.0.0.1' }, { kind: 'drop.tables', address: '10.0.0.1' }, { kind: 'register', address: 'x'.repeat(300) }]) {
    for (let i = 0; i < REGISTER_LIMITS.perAddress; i++) for (const l of bus.listeners[0]!) l(junk);
  }
  t.equal((await register(a, 1, '10.0.0.1')).statusCode, 201, 'nothing was counted');
  for (let i = 0; i < REGISTER_LIMITS.perAddress; i++) for (const l of bus.listeners[0]!) l({ kind: 'register', address: '10.0.0.2' });
  t.equal((await register(a, 2, '10.0.0.2')).statusCode, 429, 'a well-formed event is');
});
