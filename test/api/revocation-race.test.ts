// A logout (or a deletion) must hold at once on the node that answered it (docs/api.md, "Tokens";
// docs/guarantees.md). A token check that began before it, and whose look at the user's partition
// answers after it, must not put back what that look read: it did, and the revoked token (or the
// deleted user's token) worked again on that very node for up to USER_RECHECK_MS (review of
// 2026-12-07).
import t from 'tap';
import { buildApp } from '../../src/api/index.js';
import { USER_RECHECK_MS } from '../../src/api/auth.js';
import { FORMAT, runQuery, type Result } from '../../src/store/broker/index.js';
import { TestStore } from '../store/broker/helpers.js';
import { appDeps } from './app-deps.js';

async function world(t: { teardown(fn: () => unknown): void }) {
  const store = await TestStore.open(0, undefined, FORMAT);
  const clock = { now: Date.now() };
  // When set, the next user.get read through the leader is read at once and answered only once `hold` resolves.
  const gate: { hold: Promise<void> | null } = { hold: null };
  const node = await buildApp(
    appDeps(
      {
        partitions: 1,
        propose: async (_p, actor, command) => store.run(actor, command),
        query: async (_p, q): Promise<Result> => {
          const r = runQuery(store.sm, q, clock.now);
          const h = q.type === 'user.get' ? gate.hold : null;
          if (h !== null) {
            gate.hold = null;
            await h;
          }
          return r;
        },
        staleQuery: (_p, q) => ({ result: runQuery(store.sm, q, clock.now), appliedIndex: store.index }),
        format: () => store.sm.format(),
      },
      { now: () => clock.now },
    ),
  );
  t.teardown(async () => {
    await node.close();
    await store.close();
  });
  const json = async (method: 'GET' | 'POST' | 'DELETE', url: string, opts: { token?: string; body?: unknown } = {}) => {
    const res = await node.inject({
      method,
      url,
      ...(opts.token === undefined ? {} : { headers: { authorization: `Bearer ${opts.token}` } }),
      ...(opts.body === undefined ? {} : { payload: opts.body as object }),
    });
    return res.statusCode;
  };
  const register = async (username: string): Promise<string> => {
    await node.inject({ method: 'POST', url: '/v1/auth/register', payload: { username, password: `password-${username}` } });
    const r = await node.inject({ method: 'POST', url: '/v1/auth/login', payload: { username, password: `password-${username}` } });
    return (JSON.parse(r.body) as { accessToken: string }).accessToken;
  };
  /** Starts GET /v1/auth/me whose look at the user is read now and answered when the returned release is called. */
  const slowCheck = async (token: string) => {
    let release!: () => void;
    gate.hold = new Promise<void>((resolve) => (release = resolve));
    const answer = json('GET', '/v1/auth/me', { token });
    while (gate.hold !== null) await new Promise((resolve) => setImmediate(resolve));
    return { answer, release };
  };
  return { clock, json, register, slowCheck };
}

for (const [what, revoke] of [
  ['logout', (w: Awaited<ReturnType<typeof world>>, token: string) => w.json('POST', '/v1/auth/logout', { token })],
  ['deletion', (w: Awaited<ReturnType<typeof world>>, token: string) => w.json('DELETE', '/v1/auth/me', { token, body: { password: 'password-alice' } })],
] as const) {
  t.test(`a ${what} holds on its node even when a token check that began before it answers after it`, async (t) => {
    const w = await world(t);
    const token = await w.register('alice');
    t.equal(await w.json('GET', '/v1/auth/me', { token }), 200, 'looked alice up');
    // The node's lookup is over: the next check asks the leader again.
    w.clock.now += USER_RECHECK_MS;
    const inFlight = await w.slowCheck(token);
    t.equal(await revoke(w, token), 204, what);
    t.equal(await w.json('GET', '/v1/auth/me', { token }), 401, 'refused at once on the node that answered');
    inFlight.release();
    // Begun before the revocation, it may pass; answered after it, this node refuses it already.
    t.ok([200, 401].includes(await inFlight.answer), 'the check that began before it passes or is refused');
    t.equal(await w.json('GET', '/v1/auth/me', { token }), 401, `still refused on the node that answered the ${what}`);
    t.equal(await w.json('POST', '/v1/queues', { token, body: { name: `after-${what}` } }), 401, 'and it writes nothing');
  });
}
