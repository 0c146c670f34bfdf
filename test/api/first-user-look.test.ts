// A node's first look at a user (auth.ts, userOf) read its local replica and trusted it for
// USER_RECHECK_MS. On a node whose replica lags (restarted and catching up, a slow follower), a token
// revoked long before (a logout, a password change, the user deleted) passed again for a minute, and
// its writes went through the leader as that user; docs/api.md promises a revocation holds within a
// minute on the other nodes. Every look asks the leader now. From the authorization review of stop 61.
import t from 'tap';
import type { FastifyInstance } from 'fastify';
import { buildApp } from '../../src/api/index.js';
import { appDeps } from './app-deps.js';
import { USER_RECHECK_MS } from '../../src/api/auth.js';
import { runQuery, type Command } from '../../src/store/broker/index.js';
import { TestStore } from '../store/broker/helpers.js';

const clock = { now: Date.now() };

async function node(leader: TestStore, replica: TestStore): Promise<FastifyInstance> {
  return buildApp(
    appDeps(
      {
        partitions: 1,
        propose: async (_p, actor, command) => {
          leader.time = Math.max(leader.time, clock.now);
          return leader.run(actor, command);
        },
        query: async (_p, q) => runQuery(leader.sm, q, clock.now),
        // This node's own replica: it has not applied the leader's latest entries yet.
        staleQuery: (_p, q) => ({ result: runQuery(replica.sm, q, clock.now), appliedIndex: replica.index }),
        format: () => leader.sm.format(),
      },
      { now: () => clock.now },
    ),
  );
}

const json = async (app: FastifyInstance, method: 'GET' | 'POST' | 'PUT' | 'DELETE', url: string, token?: string, body?: unknown) => {
  const r = await app.inject({ method, url, ...(token === undefined ? {} : { headers: { authorization: `Bearer ${token}` } }), ...(body === undefined ? {} : { payload: body as object }) });
  return { status: r.statusCode, body: r.body === '' ? null : (JSON.parse(r.body) as Record<string, unknown>) };
};

for (const how of ['logout', 'delete'] as const) {
  t.test(`a token revoked by ${how} minutes ago is refused by a node whose replica lags, and writes nothing`, async (t) => {
    clock.now = Date.now();
    const leader = await TestStore.open(0, undefined, undefined, undefined, clock.now);
    const lagging = await TestStore.open(0, undefined, undefined, undefined, clock.now);
    const a = await node(leader, leader);
    const b = await node(leader, lagging);
    t.teardown(async () => {
      await a.close();
      await b.close();
      await leader.close();
      await lagging.close();
    });
    // The user as both replicas have it (the lagging one stops here).
    t.equal((await json(a, 'POST', '/v1/auth/register', undefined, { username: 'victim', password: 'password-victim' })).status, 201);
    const reg = leader.sm.getUser('victim')!;
    lagging.time = leader.time;
    lagging.must(null, { type: 'user.register', username: 'victim', passwordHash: reg.passwordHash } as Command);
    const login = await json(a, 'POST', '/v1/auth/login', undefined, { username: 'victim', password: 'password-victim' });
    const token = login.body!.accessToken as string;
    // Revoked through node a.
    if (how === 'logout') t.equal((await json(a, 'POST', '/v1/auth/logout', token)).status, 204);
    else t.equal((await json(a, 'DELETE', '/v1/auth/me', token, { password: 'password-victim' })).status, 204);
    // Well past the minute the contract allows, node b looks at the user for the first time.
    clock.now += 2 * USER_RECHECK_MS;
    t.equal((await json(a, 'GET', '/v1/auth/me', token)).status, 401, 'node a refuses it');
    const me = await json(b, 'GET', '/v1/auth/me', token);
    t.equal(me.status, 401, `node b refuses a token revoked ${2 * USER_RECHECK_MS / 1000} s ago (got ${me.status})`);
    const made = await json(b, 'POST', '/v1/queues', token, { name: `made-after-${how}` });
    t.equal(made.status, 401, `and makes nothing with it (got ${made.status} ${JSON.stringify(made.body)})`);
  });
}
