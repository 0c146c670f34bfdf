// A node asks the partition's leader about a user at its first look too (first-user-look.test.ts).
// While that partition has no leader, the router holds a read for its whole wait for one (5 s), and
// every first look, and every look after the local replica's answer ran out, waited that long, each
// request of the user asking on its own. Now one question per user is in flight at a time, and the
// local replica answers when the leader has not within a second. From the review of stop 61's own
// changes. Here the leader never answers: a look that waited for it would never end.
import t from 'tap';
import type { FastifyInstance } from 'fastify';
import { buildApp } from '../../src/api/index.js';
import { runQuery } from '../../src/store/broker/index.js';
import { TestStore } from '../store/broker/helpers.js';
import { appDeps } from './app-deps.js';

const clock = { now: Date.now() };

t.test('looks at a user while its partition has no leader are answered by the local replica, one question to the leader at a time', async (t) => {
  const store = await TestStore.open(0, undefined, undefined, undefined, clock.now);
  let leaderless = false;
  let questions = 0;
  const deps = appDeps(
    {
      partitions: 1,
      propose: async (_p, actor, command) => {
        store.time = Math.max(store.time, clock.now);
        return store.run(actor, command);
      },
      query: (_p, q) => {
        questions++;
        return leaderless ? new Promise(() => undefined) : Promise.resolve(runQuery(store.sm, q, clock.now));
      },
      staleQuery: (_p, q) => ({ result: runQuery(store.sm, q, clock.now), appliedIndex: store.index }),
      format: () => store.sm.format(),
    },
    { now: () => clock.now },
  );
  const a: FastifyInstance = await buildApp(deps);
  t.teardown(async () => {
    await a.close();
    await store.close();
  });
  t.equal((await a.inject({ method: 'POST', url: '/v1/auth/register', payload: { username: 'user1', password: 'password-user1' } })).statusCode, 201);
  const login = await a.inject({ method: 'POST', url: '/v1/auth/login', payload: { username: 'user1', password: 'password-user1' } });
  const token = (JSON.parse(login.body) as { accessToken: string }).accessToken;
  // Another node, which has not looked at the user yet, while the user's partition has no leader.
  const b: FastifyInstance = await buildApp(deps);
  t.teardown(() => b.close());
  leaderless = true;
  questions = 0;
  const me = () => b.inject({ method: 'GET', url: '/v1/auth/me', headers: { authorization: `Bearer ${token}` } });
  const burst = await Promise.all(Array.from({ length: 20 }, () => me()));
  t.same(
    burst.map((r) => r.statusCode),
    Array.from({ length: 20 }, () => 200),
    'twenty first requests answered from the local replica',
  );
  t.equal(questions, 1, 'one question to the leader for them all');
  // Past the local answer's trust, the leader is asked again; the first question is still in flight.
  clock.now += 11_000;
  t.equal((await me()).statusCode, 200, 'answered again from the local replica');
  t.equal(questions, 1, 'no second question while the first is in flight');
});
