// src/cli/client.ts against a stand-in server: what the CLI retries, with which key, and what it says
// when it gives up. A load balancer in front of the nodes (deploy/) turns a connection a node dropped
// after taking a write into a 502: its outcome is unknown, as after a 504, and is retried likewise.
import { createServer, type IncomingMessage } from 'node:http';
import t, { type Test } from 'tap';
import { Api, CliError } from '../../src/cli/client.js';
import { freePort } from '../cluster/net-helpers.js';

interface Scripted {
  url: string;
  /** method, path and Idempotency-Key of each request that reached it */
  seen: string[];
}

/** A server answering each request with the next of `answers` (the last one again once they run out). */
async function scripted(t: Test, answers: { status: number; type?: string; body: string }[]): Promise<Scripted> {
  const seen: string[] = [];
  const server = createServer((req: IncomingMessage, res) => {
    req.resume();
    req.on('end', () => {
      seen.push(`${req.method} ${req.url} ${req.headers['idempotency-key'] ?? '-'}`);
      const a = answers[Math.min(seen.length, answers.length) - 1]!;
      res.writeHead(a.status, { 'content-type': a.type ?? 'application/json' }).end(a.body);
    });
  });
  const port = await freePort();
  await new Promise<void>((r) => server.listen(port, '127.0.0.1', r));
  t.teardown(() => {
    server.closeAllConnections();
    server.close();
  });
  return { url: `http://127.0.0.1:${port}`, seen };
}

// nginx's own answer when the node it passed a write to dropped the connection
const NGINX_502 = { status: 502, type: 'text/html', body: '<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx/1.22.1</center>\r\n</body>\r\n</html>\r\n' };

t.test('a write answered 502 by a load balancer is retried with the same key', async (t) => {
  const s = await scripted(t, [NGINX_502, { status: 201, body: '{"messageId":"m1","sequence":1}' }]);
  const api = new Api(s.url, 'token', { retryForMs: 5_000 });
  const r = await api.call('POST', '/v1/queues/q/messages', { body: 'x' });
  t.same(r, { messageId: 'm1', sequence: 1 }, 'the retry answered');
  t.equal(s.seen.length, 2, s.seen.join(' | '));
  t.equal(new Set(s.seen).size, 1, 'both attempts carried one Idempotency-Key');
});

t.test('a write whose outcome stays unknown names its Idempotency-Key', async (t) => {
  const unknown = { status: 504, type: 'application/problem+json', body: JSON.stringify({ type: 'https://mom.invalid/problems/timeout', title: 'Gateway Timeout', status: 504, code: 'timeout', detail: "the write's outcome is unknown: it may still be applied; retry with the same Idempotency-Key" }) };
  const s = await scripted(t, [unknown]);
  const api = new Api(s.url, 'token', { retryForMs: 300 });
  const err = await api.call('POST', '/v1/queues/q/messages', { body: 'x' }).then(
    () => null,
    (e: unknown) => e,
  );
  t.ok(err instanceof CliError, String(err));
  const key = s.seen[0]!.split(' ')[2]!;
  t.match((err as CliError).message, /outcome is unknown/, "the server's words");
  t.ok((err as CliError).message.includes(key), `the key to retry with is told (${key}): ${(err as CliError).message}`);
});

t.test('a refusal is not retried', async (t) => {
  const s = await scripted(t, [{ status: 409, type: 'application/problem+json', body: '{"status":409,"code":"conflict","detail":"queue \'q\' exists"}' }]);
  const err = await new Api(s.url, 'token').call('POST', '/v1/queues', { name: 'q' }).catch((e: unknown) => e);
  t.equal(s.seen.length, 1);
  t.equal((err as CliError).exitCode, 1);
  t.equal((err as CliError).message, "queue 'q' exists (409 conflict)");
});

t.test('a write of /v1/auth, which takes no key, is repeated only when it certainly changed nothing', async (t) => {
  // A registration that went through and answered 504 would answer 409 when repeated.
  const timedOut = { status: 504, type: 'application/problem+json', body: JSON.stringify({ status: 504, code: 'timeout', detail: 'outcome unknown' }) };
  const s = await scripted(t, [timedOut, { status: 201, body: '{}' }]);
  const api = new Api(s.url, null, { retryForMs: 2_000 });
  const err = await api.call('POST', '/v1/auth/register', { username: 'u', password: 'p' }).then(
    () => null,
    (e: unknown) => e,
  );
  t.ok(err instanceof CliError, 'the 504 is the answer');
  t.same(s.seen, ['POST /v1/auth/register -'], 'sent once, without a key');
  t.notMatch((err as CliError).message, /Idempotency-Key/, 'and no key is named');
  const busy = { status: 503, type: 'application/problem+json', body: JSON.stringify({ status: 503, code: 'unavailable', detail: 'no leader' }) };
  const s2 = await scripted(t, [busy, { status: 200, body: '{"accessToken":"x"}' }]);
  t.same(await new Api(s2.url, null, { retryForMs: 2_000 }).call('POST', '/v1/auth/login', { username: 'u', password: 'p' }), { accessToken: 'x' }, 'a 503 (not applied) is repeated');
});

t.test('a receive refused for its new key while the disk is short is asked again without one, once', async (t) => {
  const short = {
    status: 507,
    type: 'application/problem+json',
    body: JSON.stringify({ type: 'https://mom.invalid/problems/insufficient_storage', title: 'Insufficient Storage', status: 507, code: 'insufficient_storage', detail: 'a receive with a new Idempotency-Key is refused' }),
  };
  const s = await scripted(t, [short, { status: 200, body: '{"messages":[]}' }]);
  const api = new Api(s.url, 'token', { retryForMs: 5_000 });
  t.same(await api.call('POST', '/v1/queues/q/receive', {}), { messages: [] }, 'answered');
  t.equal(s.seen.length, 2, s.seen.join(' | '));
  t.notOk(s.seen[0]!.endsWith(' -'), 'the first carried a key');
  t.ok(s.seen[1]!.endsWith(' -'), 'the second none');

  // After an attempt of unknown outcome, a 507 does not say nothing was leased: no second try without the key.
  const late = await scripted(t, [NGINX_502, short]);
  const lateErr = await new Api(late.url, 'token', { retryForMs: 5_000 }).call('POST', '/v1/queues/q/receive', {}).then(
    () => null,
    (e: unknown) => e,
  );
  t.ok(lateErr instanceof CliError && lateErr.status === 507, 'a 507 after a 502 is the answer');
  t.equal(late.seen.length, 2, late.seen.join(' | '));
  t.equal(new Set(late.seen).size, 1, 'both attempts carried the one key');

  const sends = await scripted(t, [short]);
  const err = await new Api(sends.url, 'token', { retryForMs: 300 }).call('POST', '/v1/queues/q/messages', { body: 'x' }).then(
    () => null,
    (e: unknown) => e,
  );
  t.ok(err instanceof CliError && err.status === 507, 'a send refused for the disk is not asked again');
  t.equal(sends.seen.length, 1, sends.seen.join(' | '));
});
