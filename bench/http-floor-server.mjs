// One process of `npm run bench:http-floor`: fastify with nothing behind it. POST /send parses a JSON
// body and answers 201 with a small JSON. With FORWARD_TO set, requests that do not carry
// `x-forwarded: 1` are passed on to that URL with undici (as a node passes a write to the partition's
// leader) and its answer is relayed. No storage, no Raft: the floor of what HTTP costs here.
import Fastify from 'fastify';
import { Agent, request } from 'undici';

const port = Number(process.env.PORT);
const forwardTo = process.env.FORWARD_TO ?? '';
const dispatcher = new Agent({ connections: 16, pipelining: 1 });
const app = Fastify({ logger: false, bodyLimit: 1024 * 1024 });
let seq = 0;

app.post('/send', async (req, reply) => {
  if (forwardTo !== '' && req.headers['x-forwarded'] !== '1') {
    const res = await request(`${forwardTo}/send`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-forwarded': '1' },
      body: JSON.stringify(req.body),
      dispatcher,
    });
    const answer = await res.body.json();
    return reply.code(res.statusCode).send(answer);
  }
  const body = req.body;
  if (typeof body?.body !== 'string') return reply.code(400).send({ title: 'body required' });
  return reply.code(201).send({ messageId: `m-${++seq}`, sequence: seq });
});

await app.listen({ host: '127.0.0.1', port });
process.send?.('ready');
