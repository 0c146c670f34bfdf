// Login limits count failures only, and each login is a bcrypt check on the node's one password
// worker, 16 at once at most (503 beyond). One client looping on its own successful logins, 24 at a
// time, kept that worker full, and every other user's login on the node answered 503 (review of
// 2026-12-07). Now one username has at most 4 checks under way on a node (429 beyond), which leaves
// the worker to the others.
import t from 'tap';
import { Agent, request } from 'undici';
import { PASSWORD_CHECKS_PER_USER } from '../../src/api/routes/auth.js';
import { userToken } from './api-helpers.js';
import { localApp } from './local-app.js';

t.setTimeout(120_000);
const local = await localApp();
t.teardown(() => local.close());

t.test("one user's own successful logins do not keep other users from logging in", async (t) => {
  await userToken(local.url, 'mallory-l');
  await userToken(local.url, 'alice-l');
  const agent = new Agent({ connections: null });
  t.teardown(() => agent.close());
  const login = (username: string) =>
    request(`${local.url}/v1/auth/login`, { method: 'POST', dispatcher: agent, headers: { 'content-type': 'application/json' }, body: JSON.stringify({ username, password: `password-${username}` }) }).then(async (r) => {
      await r.body.text();
      return r.statusCode;
    });
  let stop = false;
  const mallory: Record<number, number> = {};
  const flood = Array.from({ length: 24 }, async () => {
    while (!stop) {
      const s = await login('mallory-l');
      mallory[s] = (mallory[s] ?? 0) + 1;
    }
  });
  const alice: Record<number, number> = {};
  for (let i = 0; i < 20; i++) {
    const s = await login('alice-l');
    alice[s] = (alice[s] ?? 0) + 1;
  }
  stop = true;
  await Promise.all(flood);
  t.equal(alice[200] ?? 0, 20, `alice's 20 logins while mallory logs in 24 at a time with her own password: ${JSON.stringify(alice)}`);
  t.ok((mallory[429] ?? 0) > 0, `mallory's checks past ${PASSWORD_CHECKS_PER_USER} at once are refused 429: ${JSON.stringify(mallory)}`);
  t.equal(mallory[503] ?? 0, 0, 'and none found the worker full');
});
