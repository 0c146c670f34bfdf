// A receive's answer, written in pieces (src/api/received-json.ts): the same bytes as the `Received`
// schema's serializer gives whole, and over HTTP a complete JSON answer past V8's 128 KiB strings.
import t from 'tap';
import fjs from 'fast-json-stringify';
import { buildApp } from '../../src/api/index.js';
import { receivedJson } from '../../src/api/received-json.js';
import { Received } from '../../src/api/schemas/messages.js';
import { appDeps } from './app-deps.js';

const whole = fjs(Received as unknown as Parameters<typeof fjs>[0]);

const message = (i: number, body: string, attributes: Record<string, string> = {}) => ({
  messageId: `m-${i}`,
  sequence: 1000 + i,
  body,
  attributes,
  receiptHandle: `h.${i}`,
  deliveryCount: 1 + (i % 3),
  sentAt: '2026-12-05T06:00:00.000Z',
});

t.test('the pieces are byte for byte what the whole schema serializes, whatever the text', async (t) => {
  const bodies = ['', 'plain', 'é and ü', '🙂 astral', 'quote " backslash \\ slash /', 'controls \u0000\u0001\n\t\r', 'separators \u2028\u2029', '\uFEFFa BOM first', '{"json":"inside"}'];
  const cases = [
    { messages: [] },
    { messages: [message(0, 'one')] },
    { messages: bodies.map((b, i) => message(i, b, i % 2 === 0 ? {} : { 'clé': b, 'k"2': 'v\\2' })) },
    { messages: Array.from({ length: 100 }, (_, i) => message(i, 'é'.repeat(1024 + i))) },
  ];
  for (const c of cases) {
    const got = receivedJson(c);
    t.same(got, Buffer.from(whole(c), 'utf8'), `${c.messages.length} messages`);
    t.same(JSON.parse(got.toString('utf8')), c, 'and it reads back as sent');
  }
});

t.test('fields the schema does not name stay out, as the whole serializer leaves them', async (t) => {
  const extra = { messages: [{ ...message(1, 'b'), secret: 'not for clients' }] };
  t.notMatch(receivedJson(extra).toString(), /secret/);
  t.same(receivedJson(extra), Buffer.from(whole(extra)));
});

t.test('a receive of 100 messages of 2 KiB is answered whole over HTTP, JSON with its length', async (t) => {
  const messages = Array.from({ length: 100 }, (_, i) => message(i, `${i}:${'ü'.repeat(1024)}`));
  const app = await buildApp(
    appDeps({
      propose: async () => ({ ok: true, value: { messages: messages.map((m) => ({ ...m })) } }) as never,
      query: async () => ({ ok: true, value: { createdAt: new Date(0).toISOString(), epoch: 0 } }) as never,
      format: () => Number.MAX_SAFE_INTEGER,
      park: () => null as never,
    }),
  );
  t.teardown(() => app.close());
  const token = app.jwt.sign({ sub: 'alice', ep: 0 });
  const res = await app.inject({ method: 'POST', url: '/v1/queues/jobs/receive', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, payload: '{"maxMessages":100}' });
  t.equal(res.statusCode, 200);
  t.equal(res.headers['content-type'], 'application/json; charset=utf-8');
  t.equal(Number(res.headers['content-length']), res.rawPayload.length);
  t.ok(res.rawPayload.length > 128 * 1024, 'past the large-string size');
  const got = JSON.parse(res.body) as { messages: { body: string; messageId: string; receiptHandle: string }[] };
  t.same(
    got.messages.map((m) => [m.messageId, m.body]),
    messages.map((m) => [m.messageId, m.body]),
  );
  t.ok(got.messages.every((m, i) => m.receiptHandle !== messages[i]!.receiptHandle && m.receiptHandle.length > 0), 'handles sealed by the API, as before');
});
