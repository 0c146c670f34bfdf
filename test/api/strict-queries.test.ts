// Query strings as strict as bodies (found by a fuzzing review, 2026-12-07): a route without query
// parameters dropped any it was given (/v1/auth/me?x=1 answered 200), and Ajv's coercion of text took
// ?limit=0x10 for 16 and ?limit=%201 for 1. The API runs over one partition in this process.
import t from 'tap';
import { call, userToken } from './api-helpers.js';
import { localApp } from './local-app.js';

const local = await localApp();
t.teardown(() => local.close());
const base = local.url;

const problem400 = { status: 400, headers: { 'content-type': /^application\/problem\+json/ }, body: { status: 400, code: 'validation_failed' } };

t.test('an integer query parameter is decimal digits', async (t) => {
  const token = await userToken(base, 'sq-int');
  t.equal((await call(base, 'POST', '/v1/queues', { token, body: { name: 'sq-q' } })).status, 201);
  for (const limit of ['0x10', '%201', '1e1', '1.0', '+1', '', 'Infinity', '1&limit=2']) {
    t.match(await call(base, 'GET', `/v1/queues?limit=${limit}`, { token }), problem400, `limit=${limit}`);
  }
  for (const limit of ['1', '10', '100']) t.match(await call(base, 'GET', `/v1/queues?limit=${limit}`, { token }), { status: 200, body: { items: [{ name: 'sq-q' }] } }, `limit=${limit}`);
  t.match(await call(base, 'GET', '/v1/queues?limit=0', { token }), problem400, 'the range still holds');
});

t.test('a route without query parameters refuses any', async (t) => {
  const token = await userToken(base, 'sq-none');
  t.equal((await call(base, 'POST', '/v1/queues', { token, body: { name: 'sq-none-q' } })).status, 201);
  t.match(await call(base, 'GET', '/v1/auth/me?anything=1', { token }), problem400, 'GET /v1/auth/me?anything=1');
  t.match(await call(base, 'POST', '/v1/queues/sq-none-q/messages?consistency=stale', { token, body: { body: 'x' } }), problem400, 'a send with a read option');
  t.match((await call(base, 'GET', '/v1/queues/sq-none-q', { token })).body, { stats: { visible: 0 } }, 'nothing was sent');
  t.equal((await call(base, 'GET', '/v1/auth/me', { token })).status, 200, 'without one: 200');
  t.equal((await call(base, 'GET', '/v1/queues/sq-none-q?consistency=stale', { token })).status, 200, 'a route that takes one still does');
});
