// A request's defaults are written once, in its schema, and Ajv fills them in (app.ts, useDefaults):
// what reaches the broker is the same whether a client sends a default or leaves it out, and a
// receive may come without a body at all (docs/api.md).
import t from 'tap';
import { buildApp } from '../../src/api/index.js';
import type { Command } from '../../src/store/broker/index.js';
import { appDeps } from './app-deps.js';

/** An app over a broker that records each command and answers it with `value`. */
async function recording(value: unknown): Promise<{ inject: (method: 'POST', url: string, body?: unknown) => Promise<number>; commands: Command[] }> {
  const commands: Command[] = [];
  const user = { ok: true, value: { createdAt: new Date(0).toISOString(), epoch: 0 } };
  const app = await buildApp(
    appDeps({
      propose: async (_p, _actor, command) => {
        commands.push(command);
        return { ok: true, value } as never;
      },
      query: async () => user as never,
      staleQuery: () => ({ result: user, appliedIndex: 1 }) as never,
      format: () => Number.MAX_SAFE_INTEGER,
      park: () => null as never,
    }),
  );
  t.teardown(() => app.close());
  const token = app.jwt.sign({ sub: 'alice', ep: 0 });
  const inject = async (method: 'POST', url: string, body?: unknown): Promise<number> => {
    // undefined: no body at all; anything else, null too, is sent as JSON.
    const headers = { authorization: `Bearer ${token}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) };
    const r = await app.inject({ method, url, headers, ...(body === undefined ? {} : { payload: JSON.stringify(body) }) });
    return r.statusCode;
  };
  return { inject, commands };
}

t.test("a receive without a body, or with {}, asks for one message, no wait, the queue's lease", async (t) => {
  const { inject, commands } = await recording({ messages: [] });
  t.equal(await inject('POST', '/v1/queues/jobs/receive'), 200, 'no body');
  t.equal(await inject('POST', '/v1/queues/jobs/receive', {}), 200, 'an empty object');
  t.equal(await inject('POST', '/v1/queues/jobs/receive', { maxMessages: 1, waitSeconds: 0 }), 200, 'the defaults sent');
  t.equal(await inject('POST', '/v1/queues/jobs/receive', null), 400, 'a body of JSON null is a body, and refused');
  t.equal(commands.length, 3);
  for (const c of commands) t.same(c, { type: 'receive', channel: { queue: 'jobs' }, maxMessages: 1, visibilityTimeoutSeconds: null });
});

t.test("a queue created with nothing but its name gets the schema's defaults", async (t) => {
  const view = { name: 'jobs' };
  const { inject, commands } = await recording(view);
  await inject('POST', '/v1/queues', { name: 'jobs' });
  t.match(commands[0], { type: 'queue.create', name: 'jobs', visibilityTimeoutSeconds: 30, maxDeliveries: null, deadLetterQueue: null, delaySeconds: 0, retentionSeconds: 345600 });
  await inject('POST', '/v1/topics', { name: 'news' });
  t.same(commands[1], { type: 'topic.create', name: 'news', subscribe: 'anyone' });
});
