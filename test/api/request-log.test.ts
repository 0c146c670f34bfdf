// Request lines: one per request at debug (method, URL, status, time, reqId), none at info, where a
// line per request would cost a fifth to a third more CPU per single send (docs/operations.md).
import { Writable } from 'node:stream';
import pino from 'pino';
import t from 'tap';
import { buildApp, type ApiDeps } from '../../src/api/index.js';
import { appDeps } from './app-deps.js';
import { UNAVAILABLE, UnavailableError } from '../../src/cluster/errors.js';

/** An app whose logger writes JSON lines into `lines`, at `level`. */
async function appLoggingAt(level: string, lines: Record<string, unknown>[], propose?: ApiDeps['broker']['propose']) {
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const l of chunk.toString().split('\n')) if (l !== '') lines.push(JSON.parse(l) as Record<string, unknown>);
      done();
    },
  });
  const deps = appDeps(propose === undefined ? {} : { propose }, { logger: pino({ level }, sink) });
  const app = await buildApp(deps);
  t.teardown(() => app.close());
  return app;
}

t.test('at debug, every request is one line with its id, method, URL and status', async (t) => {
  const lines: Record<string, unknown>[] = [];
  const app = await appLoggingAt('debug', lines);
  const res = await app.inject({ method: 'GET', url: '/v1/queues', headers: { 'x-request-id': 'trace-42' } });
  t.equal(res.statusCode, 401);
  const done = lines.filter((l) => l.msg === 'request completed');
  t.equal(done.length, 1);
  t.match(done[0], { reqId: 'trace-42', req: { method: 'GET', url: '/v1/queues' }, res: { statusCode: 401 } });
  t.type(done[0]!.responseTime, 'number');
});

t.test('at info, requests log no line of their own', async (t) => {
  const lines: Record<string, unknown>[] = [];
  const app = await appLoggingAt('info', lines);
  for (let i = 0; i < 3; i++) t.equal((await app.inject({ method: 'GET', url: '/v1/queues' })).statusCode, 401);
  t.strictSame(lines.filter((l) => typeof l.reqId === 'string'), [], 'no line per request');
});

t.test('a 503 tells the client a stable reason; the node ids and error codes behind it go to the log', async (t) => {
  const lines: Record<string, unknown>[] = [];
  const inside = 'partition 2 has no reachable leader (n2 could not be reached (ECONNRESET))';
  const app = await appLoggingAt('info', lines, () => Promise.reject(new UnavailableError('no_leader', inside)));
  const res = await app.inject({
    method: 'POST',
    url: '/v1/auth/register',
    headers: { 'x-request-id': 'trace-503', 'content-type': 'application/json' },
    payload: JSON.stringify({ username: 'someone', password: 'long enough' }),
  });
  t.equal(res.statusCode, 503);
  t.match(res.json(), { code: 'unavailable', detail: UNAVAILABLE.no_leader });
  t.notMatch(res.body, /n2|ECONNRESET|partition/, 'nothing of the inside');
  t.match(
    lines.filter((l) => l.msg === 'request not served'),
    [{ reqId: 'trace-503', detail: inside }],
    'the log has it, under the request id',
  );
});
