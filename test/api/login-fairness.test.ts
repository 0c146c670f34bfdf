// Each login is a bcrypt check on the node's one password worker. Successful logins count nowhere
// but the 4 checks of one username at once (PASSWORD_CHECKS_PER_USER), and the worker refused every
// check past 16 waiting: four accounts, registered from one address in a second, each looping on 4
// good logins at once, kept it full, and another user's logins answered 503, 3 of 27 succeeding in
// 10 s (review of stop 62). Now the worker takes checks in turn across usernames, and a username
// without one waiting is refused only past a larger bound (password-hasher.ts).
import t from 'tap';
import { call, userToken } from './api-helpers.js';
import { localApp } from './local-app.js';

t.setTimeout(120_000);
const local = await localApp();
t.teardown(() => local.close());

const login = async (username: string): Promise<number> =>
  (await call(local.url, 'POST', '/v1/auth/login', { body: { username, password: `password-${username}` } })).status;

t.test("four accounts looping on their own good logins do not keep another user's logins out", async (t) => {
  const victim = 'fair-victim';
  const hostile = ['fair-hog-a', 'fair-hog-b', 'fair-hog-c', 'fair-hog-d'];
  for (const u of [victim, ...hostile]) await userToken(local.url, u);
  let stop = false;
  const hogs: Record<number, number> = {};
  let started!: () => void;
  const running = new Promise<void>((resolve) => (started = resolve));
  const loop = async (u: string): Promise<void> => {
    while (!stop) {
      const s = await login(u);
      hogs[s] = (hogs[s] ?? 0) + 1;
      // The worker has been full of their checks for a while once they logged in this often.
      if ((hogs[200] ?? 0) >= 16) started();
    }
  };
  const loops = hostile.flatMap((u) => [loop(u), loop(u), loop(u), loop(u)]);
  await running;
  const before = hogs[200] ?? 0;
  const victims: Record<number, number> = {};
  for (let i = 0; i < 12; i++) {
    const s = await login(victim);
    victims[s] = (victims[s] ?? 0) + 1;
  }
  const hogsDuring = (hogs[200] ?? 0) - before;
  stop = true;
  await Promise.all(loops);
  t.comment(`the victim's 12 logins: ${JSON.stringify(victims)}; the four accounts' logins: ${JSON.stringify(hogs)}`);
  // Counted, not timed: each of the victim's checks waits its turn behind one of each account's at
  // most, and none finds the worker closed to it.
  t.equal(victims[200] ?? 0, 12, 'every login of the victim succeeds');
  t.ok(hogsDuring > 0, `the four accounts kept logging in meanwhile (${hogsDuring} times)`);
});
