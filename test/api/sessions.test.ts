// Logout, password change and deleting oneself (format 9), through the API of two "nodes" (apps with
// their own caches) over one replicated state, with an injected clock: a revocation holds at once on
// the node that made it and within USER_RECHECK_MS on the others.
import t from 'tap';
import type { FastifyInstance } from 'fastify';
import { buildApp, type ApiDeps } from '../../src/api/index.js';
import { appDeps } from './app-deps.js';
import { USER_RECHECK_MS } from '../../src/api/auth.js';
import { LOGIN_LIMITS } from '../../src/api/routes/auth.js';
import { FORMAT, USER_LIFECYCLE, runQuery } from '../../src/store/broker/index.js';
import { TestStore } from '../store/broker/helpers.js';

interface World {
  store: TestStore;
  /** Two nodes' APIs over the same state. */
  nodes: [FastifyInstance, FastifyInstance];
  /** The nodes' clock (ms), which the test moves. */
  clock: { now: number };
}

async function world(t: { teardown(fn: () => unknown): void }, format = FORMAT): Promise<World> {
  const store = await TestStore.open(0, undefined, format);
  const clock = { now: Date.now() };
  const deps = (): ApiDeps =>
    appDeps(
      {
        partitions: 1,
        propose: async (_p, actor, command) => store.run(actor, command),
        query: async (_p, q) => runQuery(store.sm, q, clock.now),
        staleQuery: (_p, q) => ({ result: runQuery(store.sm, q, clock.now), appliedIndex: store.index }),
        format: () => store.sm.format(),
      },
      { now: () => clock.now },
    );
  const nodes: [FastifyInstance, FastifyInstance] = [await buildApp(deps()), await buildApp(deps())];
  t.teardown(async () => {
    await Promise.all(nodes.map((n) => n.close()));
    await store.close();
  });
  return { store, nodes, clock };
}

const json = async (node: FastifyInstance, method: 'GET' | 'POST' | 'PUT' | 'DELETE', url: string, opts: { token?: string; body?: unknown } = {}) => {
  const res = await node.inject({
    method,
    url,
    ...(opts.token === undefined ? {} : { headers: { authorization: `Bearer ${opts.token}` } }),
    ...(opts.body === undefined ? {} : { payload: opts.body as object }),
  });
  return { status: res.statusCode, type: res.headers['content-type'], body: res.body === '' ? null : (JSON.parse(res.body) as Record<string, unknown>) };
};

async function login(node: FastifyInstance, username: string, password = `password-${username}`): Promise<string> {
  const r = await json(node, 'POST', '/v1/auth/login', { body: { username, password } });
  if (r.status !== 200) throw new Error(`login ${username}: ${r.status} ${JSON.stringify(r.body)}`);
  return r.body!.accessToken as string;
}

async function registered(w: World, username: string): Promise<string> {
  const r = await json(w.nodes[0], 'POST', '/v1/auth/register', { body: { username, password: `password-${username}` } });
  if (r.status !== 201) throw new Error(`register ${username}: ${r.status}`);
  return login(w.nodes[0], username);
}

const me = async (node: FastifyInstance, token: string) => (await json(node, 'GET', '/v1/auth/me', { token })).status;

t.test('logout revokes every token of the user: at once on its node, within a minute on the others; a new login works', async (t) => {
  const w = await world(t);
  const [a, b] = w.nodes;
  const first = await registered(w, 'alice');
  const second = await login(b, 'alice');
  const bobs = await registered(w, 'bob');
  for (const node of w.nodes) for (const token of [first, second]) t.equal(await me(node, token), 200, 'both tokens work on both nodes');

  const out = await json(a, 'POST', '/v1/auth/logout', { token: first });
  t.equal(out.status, 204);
  for (const token of [first, second]) {
    const r = await json(a, 'GET', '/v1/auth/me', { token });
    t.equal(r.status, 401, 'refused at once by the node that logged out');
    t.match(r, { type: /^application\/problem\+json/, body: { code: 'unauthorized', detail: /revoked/ } });
  }
  t.equal(await me(b, second), 200, 'the other node trusts what it looked up, for a while');
  w.clock.now += USER_RECHECK_MS - 1;
  t.equal(await me(b, second), 200);
  w.clock.now += 1;
  t.equal(await me(b, second), 401, 'and looks again after USER_RECHECK_MS');
  t.equal(await me(b, first), 401);
  t.equal(await me(a, bobs), 200, "another user's tokens stand");

  const fresh = await login(b, 'alice');
  for (const node of w.nodes) t.equal(await me(node, fresh), 200, 'a token signed after the logout works everywhere');
});

t.test('a password change needs the current password, revokes the old tokens and answers a new one', async (t) => {
  const w = await world(t);
  const [a, b] = w.nodes;
  const old = await registered(w, 'alice');
  t.equal(await me(b, old), 200);

  const wrong = await json(a, 'PUT', '/v1/auth/password', { token: old, body: { password: 'not-the-password', newPassword: 'password-2' } });
  t.match(wrong, { status: 403, type: /^application\/problem\+json/, body: { code: 'forbidden', detail: 'the password is wrong' } });
  t.equal(await me(a, old), 200, 'a refused change revokes nothing');
  t.equal((await json(a, 'PUT', '/v1/auth/password', { token: old, body: { password: 'password-alice', newPassword: 'short' } })).status, 400, 'the new password follows the rules of registration');

  const changed = await json(a, 'PUT', '/v1/auth/password', { token: old, body: { password: 'password-alice', newPassword: 'password-2' } });
  t.equal(changed.status, 200);
  const fresh = changed.body!.accessToken as string;
  t.equal(await me(a, old), 401, 'the old token is revoked');
  t.equal(await me(a, fresh), 200);
  t.equal(await me(b, fresh), 200, 'the new token works on a node that has not looked again yet');
  w.clock.now += USER_RECHECK_MS;
  t.equal(await me(b, old), 401);
  t.equal(await me(b, fresh), 200);
  t.equal((await json(b, 'POST', '/v1/auth/login', { body: { username: 'alice', password: 'password-alice' } })).status, 401, 'the old password no longer logs in');
  t.equal(await me(b, await login(b, 'alice', 'password-2')), 200, 'the new one does');
});

t.test('wrong current passwords count as failed logins of the user from that address', async (t) => {
  const w = await world(t);
  const token = await registered(w, 'alice');
  const statuses: number[] = [];
  for (let i = 0; i <= LOGIN_LIMITS.free; i++) {
    statuses.push((await json(w.nodes[0], 'PUT', '/v1/auth/password', { token, body: { password: `guess-${i}-x`, newPassword: 'password-2' } })).status);
  }
  t.strictSame(statuses, [...Array<number>(LOGIN_LIMITS.free).fill(403), 429], 'a stolen token does not buy unlimited guesses');
  t.equal((await json(w.nodes[0], 'POST', '/v1/auth/login', { body: { username: 'alice', password: 'password-alice' } })).status, 429, 'the same budget as logins');
});

t.test('a user deletes itself once it owns nothing: its tokens fail and its name is never registered again', async (t) => {
  const w = await world(t);
  const [a, b] = w.nodes;
  const token = await registered(w, 'alice');
  t.equal(await me(b, token), 200);
  t.equal((await json(a, 'POST', '/v1/queues', { token, body: { name: 'orders' } })).status, 201);
  t.equal((await json(a, 'POST', '/v1/topics', { token, body: { name: 'news' } })).status, 201);

  t.match(await json(a, 'DELETE', '/v1/auth/me', { token, body: { password: 'not-the-password' } }), { status: 403, body: { code: 'forbidden' } }, 'a stolen token alone deletes nothing');
  t.equal((await json(a, 'DELETE', '/v1/auth/me', { token })).status, 400, 'the password is required');
  const refused = await json(a, 'DELETE', '/v1/auth/me', { token, body: { password: 'password-alice' } });
  t.match(refused, { status: 409, type: /^application\/problem\+json/, body: { code: 'conflict', detail: 'the user owns 1 queue(s) and 1 topic(s): delete them first' } });
  t.equal(await me(a, token), 200, 'a refused deletion changes nothing');

  t.equal((await json(a, 'DELETE', '/v1/queues/orders', { token })).status, 204);
  t.equal((await json(a, 'DELETE', '/v1/topics/news', { token })).status, 204);
  t.equal((await json(a, 'DELETE', '/v1/auth/me', { token, body: { password: 'password-alice' } })).status, 204);
  t.match(await json(a, 'GET', '/v1/auth/me', { token }), { status: 401, body: { detail: /names no existing user/ } }, 'at once on its node');
  w.clock.now += USER_RECHECK_MS;
  t.equal(await me(b, token), 401, 'within a minute on the others');
  t.equal((await json(b, 'POST', '/v1/auth/login', { body: { username: 'alice', password: 'password-alice' } })).status, 401);
  const again = await json(b, 'POST', '/v1/auth/register', { body: { username: 'alice', password: 'password-new' } });
  t.match(again, { status: 409, body: { code: 'conflict', detail: /was deleted/ } }, "no one inherits alice's grants by taking her name");
});

t.test('before the cluster reads format 9, logout, password change and deletion answer 503 and change nothing', async (t) => {
  const w = await world(t, USER_LIFECYCLE - 1);
  const token = await registered(w, 'alice');
  const calls = [
    json(w.nodes[0], 'POST', '/v1/auth/logout', { token }),
    json(w.nodes[0], 'PUT', '/v1/auth/password', { token, body: { password: 'password-alice', newPassword: 'password-2' } }),
    json(w.nodes[0], 'DELETE', '/v1/auth/me', { token, body: { password: 'password-alice' } }),
  ];
  for (const r of await Promise.all(calls)) {
    t.match(r, { status: 503, type: /^application\/problem\+json/, body: { code: 'unavailable', detail: /being upgraded/ } });
  }
  t.equal(await me(w.nodes[1], token), 200);
  t.equal(await me(w.nodes[1], await login(w.nodes[1], 'alice')), 200, 'the password is unchanged');
});

t.test('a revoked token that another node still accepts can neither log out, nor change the password, nor delete the user', async (t) => {
  const w = await world(t);
  const [a, b] = w.nodes;
  const stolen = await registered(w, 'alice');
  t.equal(await me(b, stolen), 200, 'node b has looked alice up');
  // The victim changes its password on node a: the stolen token is revoked, but b trusts its lookup for a minute.
  const changed = await json(a, 'PUT', '/v1/auth/password', { token: stolen, body: { password: 'password-alice', newPassword: 'password-victim' } });
  const fresh = changed.body!.accessToken as string;
  t.equal(await me(b, stolen), 200, 'b still accepts the stolen token for reads');
  for (const [method, url, body] of [
    ['POST', '/v1/auth/logout', undefined],
    ['PUT', '/v1/auth/password', { password: 'password-victim', newPassword: 'password-thief' }],
    ['DELETE', '/v1/auth/me', { password: 'password-victim' }],
  ] as const) {
    t.match(await json(b, method, url, { token: stolen, ...(body === undefined ? {} : { body }) }), { status: 401, body: { code: 'unauthorized', detail: /revoked/ } }, `${method} ${url}: refused where the change is applied`);
  }
  for (const node of w.nodes) t.equal(await me(node, fresh), 200, "the victim's session stands");
  t.equal(await me(a, await login(a, 'alice', 'password-victim')), 200, 'and its password');
});

t.test('a user deleted through one node is a 401 on another that has not looked again, for every route', async (t) => {
  const w = await world(t);
  const [a, b] = w.nodes;
  const token = await registered(w, 'alice');
  t.equal(await me(b, token), 200);
  t.equal((await json(a, 'DELETE', '/v1/auth/me', { token, body: { password: 'password-alice' } })).status, 204);
  for (const [method, url, body] of [
    ['POST', '/v1/auth/logout', undefined],
    ['DELETE', '/v1/auth/me', { password: 'password-alice' }],
    ['PUT', '/v1/auth/password', { password: 'password-alice', newPassword: 'password-2' }],
  ] as const) {
    t.match(await json(b, method, url, { token, ...(body === undefined ? {} : { body }) }), { status: 401, body: { code: 'unauthorized' } }, `${method} ${url}`);
  }
  t.equal(await me(b, token), 401, 'from then on, b knows');
});
