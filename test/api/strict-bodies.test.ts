// Bodies the contract refuses that the API took (found by a fuzzing review):
// - a route that takes no body (delete, purge, logout) answered as if the body were absent, so a
//   client's condition in it ({"ifEmpty": true} on a delete) was dropped and the write done anyway,
//   where docs/api.md says routes without a body take none and unknown fields are 400, never dropped;
// - a password holding a lone UTF-16 surrogate was registered as another text (UTF-8 has no form
//   for it, so it was hashed as U+FFFD), and every password differing from it only there logged in.
// The API runs over one partition in this process (local-app.ts).
import t from 'tap';
import { call, userToken } from './api-helpers.js';
import { localApp } from './local-app.js';

const local = await localApp();
t.teardown(() => local.close());
const base = local.url;

/** A request with `payload` sent as is under application/json. */
async function raw(method: string, path: string, token: string, payload: string): Promise<{ status: number; contentType: string; body: string }> {
  const res = await fetch(`${base}${path}`, { method, headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: payload });
  return { status: res.status, contentType: res.headers.get('content-type') ?? '', body: await res.text() };
}

t.test('a route that takes no body refuses one with anything in it (400 problem+json) and does nothing', async (t) => {
  const token = await userToken(base, 'sb-owner');
  t.equal((await call(base, 'POST', '/v1/queues', { token, body: { name: 'sb-q' } })).status, 201);
  t.equal((await call(base, 'POST', '/v1/queues/sb-q/messages', { token, body: { body: 'keep me' } })).status, 201);
  const cases: [string, string, string][] = [
    ['DELETE', '/v1/queues/sb-q', '{"ifEmpty":true}'],
    ['POST', '/v1/queues/sb-q/purge', '{"olderThanSeconds":60}'],
    ['POST', '/v1/queues/sb-q/purge', 'null'],
    ['POST', '/v1/queues/sb-q/purge', '[]'],
    ['POST', '/v1/queues/sb-q/purge', '5'],
    ['POST', '/v1/auth/logout', '{"everywhere":false}'],
  ];
  for (const [method, path, payload] of cases) {
    const res = await raw(method, path, token, payload);
    t.ok(res.status === 400 && res.contentType.startsWith('application/problem+json'), `${method} ${path} ${payload}: 400 problem+json`, { found: res });
  }
  const q = await call(base, 'GET', '/v1/queues/sb-q', { token });
  t.equal(q.status, 200, 'the queue is still there');
  t.equal((q.body as { stats: { visible: number } }).stats.visible, 1, 'with its message');
  t.equal((await call(base, 'GET', '/v1/auth/me', { token })).status, 200, 'the token still works');
  // The controls: no body, or an empty object, is taken as none.
  t.equal((await raw('POST', '/v1/queues/sb-q/purge', token, '{}')).status, 200, 'purge with {}');
  t.equal((await call(base, 'DELETE', '/v1/queues/sb-q', { token })).status, 204, 'delete without a body');
});

t.test('an empty body of another type (fetch with body "": text/plain, 0 bytes) is no body either', async (t) => {
  const token = await userToken(base, 'sb-empty');
  t.equal((await call(base, 'POST', '/v1/queues', { token, body: { name: 'sb-empty-q' } })).status, 201);
  const purge = await fetch(`${base}/v1/queues/sb-empty-q/purge`, { method: 'POST', headers: { authorization: `Bearer ${token}` }, body: '' });
  t.equal(purge.status, 200, `purge: ${await purge.text()}`);
  const del = await fetch(`${base}/v1/queues/sb-empty-q`, { method: 'DELETE', headers: { authorization: `Bearer ${token}` }, body: '' });
  t.equal(del.status, 204, `delete: ${await del.text()}`);
  const text = await fetch(`${base}/v1/auth/logout`, { method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'text/plain' }, body: 'everywhere' });
  t.equal(text.status, 400, 'a text body with something in it is refused');
});

t.test('an empty body under application/json is no body too: taken where a route takes none, refused (400) where it needs one', async (t) => {
  // It was refused everywhere, "the JSON body is empty", where the same request without a type passed
  // (review of 2026-12-07).
  const token = await userToken(base, 'sb-empty-json');
  t.equal((await call(base, 'POST', '/v1/queues', { token, body: { name: 'sb-ej-q' } })).status, 201);
  const receive = await raw('POST', '/v1/queues/sb-ej-q/receive', token, '');
  t.equal(receive.status, 200, `receive: ${receive.body}`);
  t.same(JSON.parse(receive.body), { messages: [] });
  const text = await fetch(`${base}/v1/queues/sb-ej-q/receive`, { method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'text/plain' }, body: '' });
  t.equal(text.status, 200, `receive with an empty text/plain body: ${await text.text()}`);
  const send = await raw('POST', '/v1/queues/sb-ej-q/messages', token, '');
  t.ok(send.status === 400 && send.contentType.startsWith('application/problem+json'), `a send without a body: 400 problem+json (${send.status} ${send.body})`);
  t.equal((await raw('POST', '/v1/queues/sb-ej-q/purge', token, '')).status, 200, 'purge');
  t.equal((await raw('DELETE', '/v1/queues/sb-ej-q', token, '')).status, 204, 'delete');
  t.equal((await raw('POST', '/v1/auth/logout', token, '')).status, 204, 'logout');
});

t.test('a JSON body declared in another charset than UTF-8 is refused, not read as UTF-8', async (t) => {
  const token = await userToken(base, 'sb-charset');
  t.equal((await call(base, 'POST', '/v1/queues', { token, body: { name: 'sb-cs-q' } })).status, 201);
  // The bytes c3 a9: "é" in UTF-8, "Ã©" in ISO-8859-1.
  const bytes = Buffer.concat([Buffer.from('{"body":"'), Buffer.from([0xc3, 0xa9]), Buffer.from('"}')]);
  const latin = await fetch(`${base}/v1/queues/sb-cs-q/messages`, { method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json; charset=iso-8859-1' }, body: bytes });
  t.equal(latin.status, 400, 'charset=iso-8859-1: 400');
  t.match(latin.headers.get('content-type'), /^application\/problem\+json/);
  t.match(await latin.text(), /charset=iso-8859-1 is refused/);
  for (const type of ['application/json; charset=utf-8', 'application/json;charset="UTF-8"', 'application/json; Charset=utf8']) {
    const r = await fetch(`${base}/v1/queues/sb-cs-q/messages`, { method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': type }, body: bytes });
    t.equal(r.status, 201, type);
  }
  const got = await call(base, 'POST', '/v1/queues/sb-cs-q/receive', { token, body: { maxMessages: 10 } });
  t.same((got.body as { messages: { body: string }[] }).messages.map((m) => m.body), ['é', 'é', 'é'], 'only the UTF-8 ones were stored');
});

t.test('a password holding a lone surrogate is refused at registration and as a new password', async (t) => {
  const reg = await call(base, 'POST', '/v1/auth/register', { body: { username: 'sb-lone', password: 'password\ud800' } });
  t.equal(reg.status, 400, 'registration: 400');
  t.equal((reg.body as { code?: string } | null)?.code, 'validation_failed');
  // Had it been registered, another lone surrogate (or U+FFFD) in its place would log in.
  t.equal((await call(base, 'POST', '/v1/auth/login', { body: { username: 'sb-lone', password: 'password\udc00' } })).status, 401, 'no such user');

  const token = await userToken(base, 'sb-pw');
  const change = await call(base, 'PUT', '/v1/auth/password', { token, body: { password: 'password-sb-pw', newPassword: 'new-password\udfff' } });
  t.equal(change.status, 400, 'password change: 400');
  t.equal((await call(base, 'POST', '/v1/auth/login', { body: { username: 'sb-pw', password: 'password-sb-pw' } })).status, 200, 'the old password still logs in');
  // Well-formed text of any script is a password like any other.
  t.equal((await call(base, 'POST', '/v1/auth/register', { body: { username: 'sb-astral', password: 'pässwörd😀' } })).status, 201);
  t.equal((await call(base, 'POST', '/v1/auth/login', { body: { username: 'sb-astral', password: 'pässwörd😀' } })).status, 200);
});

t.test("the prototype's names in a body get the 400 docs/api.md names, not a generic one", async (t) => {
  const token = await userToken(base, 'sb-proto');
  for (const payload of ['{"name":"sb-p","__proto__":{"admin":true}}', '{"name":"sb-p","constructor":{"prototype":{"admin":true}}}']) {
    const res = await raw('POST', '/v1/queues', token, payload);
    t.equal(res.status, 400, payload);
    t.match(JSON.parse(res.body), { detail: /__proto__ and constructor\.prototype are refused/ }, `${payload}: says why (it said "not valid JSON")`);
  }
  const bad = await raw('POST', '/v1/queues', token, '{"name":');
  t.notMatch(JSON.parse(bad.body), { detail: /__proto__/ }, 'JSON that is malformed is not said to be about the prototype');
  t.equal((await call(base, 'GET', '/v1/queues/sb-p', { token })).status, 404, 'nothing was created');
});
