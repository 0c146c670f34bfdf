// Passwords are hashed and checked on a worker thread (src/api/password-hasher.ts): bcryptjs is
// JavaScript, and on the event loop each login held every request and Raft turn of its node for the
// hash's 50-100 ms (a review measured another user's sends at p99 220 ms under ten logins a second).
// They go to it in turn across keys (usernames): first come, first served, a few accounts looping on
// their own logins kept everyone else's at 503 (review of stop 62; test/api/login-fairness.test.ts).
import { performance } from 'node:perf_hooks';
import bcrypt from 'bcryptjs';
import t from 'tap';
import { ApiError } from '../../src/api/errors.js';
import { MAX_PENDING, MAX_QUEUED, PasswordHasher } from '../../src/api/password-hasher.js';
import { REGISTER_LIMITS } from '../../src/api/routes/auth.js';
import { localApp } from './local-app.js';

t.test('the worker hashes and checks as bcryptjs does, both ways', async (t) => {
  const hasher = new PasswordHasher();
  t.teardown(() => hasher.close());
  const hash = await hasher.hash('correct horse', 10, 'u');
  t.ok(bcrypt.compareSync('correct horse', hash), "bcryptjs accepts the worker's hash");
  t.equal(await hasher.compare('correct horse', bcrypt.hashSync('correct horse', 10), 'u'), true, "the worker accepts bcryptjs's hash");
  t.equal(await hasher.compare('wrong horse', hash, 'u'), false);
});

t.test('registrations and logins leave the event loop free: it is busy a fraction of the time they take', async (t) => {
  const local = await localApp();
  t.teardown(() => local.close());
  const post = (path: string, username: string): Promise<number> =>
    fetch(`${local.url}${path}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ username, password: `password-${username}` }) }).then((r) => r.status);
  const users = Array.from({ length: 6 }, (_, i) => `hasher-user-${i}`);
  const before = performance.eventLoopUtilization();
  const registered = await Promise.all(users.map((u) => post('/v1/auth/register', u)));
  const loggedIn = await Promise.all(users.map((u) => post('/v1/auth/login', u)));
  const busy = performance.eventLoopUtilization(before);
  t.same([...registered, ...loggedIn], [...Array(6).fill(201), ...Array(6).fill(200)]);
  // On the event loop (bcryptjs's async mode) the twelve hashes kept it busy nearly all the time.
  t.ok(busy.utilization < 0.5, `the event loop was busy ${(100 * busy.utilization).toFixed(0)}% of the ${(busy.active + busy.idle).toFixed(0)} ms they took`);
});

t.test('past its bound the hasher answers 503 with Retry-After at once, and takes work again after', async (t) => {
  const hasher = new PasswordHasher(2);
  t.teardown(() => hasher.close());
  const hash = bcrypt.hashSync('pw', 10);
  const all = await Promise.allSettled(Array.from({ length: 5 }, () => hasher.compare('pw', hash, 'u')));
  t.same(all.map((r) => r.status), ['fulfilled', 'fulfilled', 'rejected', 'rejected', 'rejected']);
  for (const r of all) {
    if (r.status === 'rejected') t.match(r.reason, { code: 'unavailable', status: 503, retryAfterSeconds: 1 });
  }
  t.equal(await hasher.compare('pw', hash, 'u'), true, 'room again once the first two ended');
});

t.test('past the first bound a key with no job waiting still gets in, until the second', async (t) => {
  t.ok(MAX_QUEUED > MAX_PENDING, 'the bound for a first job is the larger');
  const hasher = new PasswordHasher(2, 4);
  t.teardown(() => hasher.close());
  const hash = bcrypt.hashSync('pw', 4);
  const check = (key: string): Promise<string> => hasher.compare('pw', hash, key).then(() => 'ok', (err: ApiError) => String(err.status));
  // a fills the first bound; b and c have none waiting, d finds the second bound full.
  const all = await Promise.all(['a', 'a', 'a', 'b', 'b', 'c', 'd'].map(check));
  t.same(all, ['ok', 'ok', '503', 'ok', '503', 'ok', '503']);
});

t.test('jobs go to the worker in turn across keys: a new key waits behind one job of each other key', async (t) => {
  const hasher = new PasswordHasher(64, 64);
  t.teardown(() => hasher.close());
  const hash = bcrypt.hashSync('pw', 4);
  const done: string[] = [];
  const check = (key: string): Promise<void> => hasher.compare('pw', hash, key).then(() => void done.push(key));
  // The worker takes the first two of a at once (one to run, the next); the rest wait here.
  const all = ['a', 'a', 'a', 'a', 'b', 'b', 'b', 'c'].map(check);
  await Promise.all(all);
  // First come, first served, c ran last, behind all of a's and b's.
  t.same(done, ['a', 'a', 'b', 'c', 'a', 'b', 'a', 'b']);
  // Keys never served go first, in the order they came, then the one served longest ago.
  done.length = 0;
  await Promise.all(['b', 'b', 'b', 'a', 'a', 'c'].map(check));
  t.same(done, ['b', 'b', 'a', 'c', 'b', 'a']);
});

t.test('a closed hasher refuses, and fails what was waiting', async (t) => {
  const hasher = new PasswordHasher();
  const waiting = t.rejects(hasher.hash('pw', 12, 'u'), ApiError);
  await hasher.close();
  await waiting;
  await t.rejects(hasher.compare('pw', 'x', 'u'), { code: 'unavailable' });
});

t.test('a registration the hasher cannot take (503) does not count against its address', async (t) => {
  const local = await localApp();
  t.teardown(() => local.close());
  const register = (username: string): Promise<number> =>
    fetch(`${local.url}/v1/auth/register`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ username, password: `password-${username}` }) }).then((r) => r.status);
  // More at once, from one address, than the hasher takes (MAX_PENDING) and the limit allows together.
  const burst = await Promise.all(Array.from({ length: MAX_PENDING + REGISTER_LIMITS.perAddress }, (_, i) => register(`burst-${i}`)));
  const count = (status: number): number => burst.filter((s) => s === status).length;
  t.ok(count(503) > 0, `the burst met the hasher's bound (${count(201)} created, ${count(503)} refused with 503)`);
  t.equal(count(429), 0, 'no registration was refused for the limit while fewer than the limit were taken');
  // Each 503 cost nothing: one at a time, the address may create users up to its limit, then 429.
  let created = count(201);
  let status = 0;
  for (let i = 0; created <= REGISTER_LIMITS.perAddress; i++) {
    status = await register(`after-${i}`);
    if (status !== 201) break;
    created++;
  }
  t.equal(status, 429, 'the limit holds');
  t.equal(created, REGISTER_LIMITS.perAddress, 'every registration of the budget created a user');
});
