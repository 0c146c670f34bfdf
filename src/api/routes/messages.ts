// The message routes, the same for queues and topics' subscriptions: send or publish (one, or a
// batch), and receive, ack, nack and lease on what consumes (a queue, or a subscription of a topic).
// What differs by kind is its paths, schemas, operation ids and texts (KINDS), and the command a
// message goes in.
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { Type } from 'typebox';
import { MAX_FANOUT, type ChannelRef } from '../../store/broker/index.js';
import { write, type ApiDeps } from '../deps.js';
import { BODY_OPTIONAL } from '../openapi.js';
import { HANDLE_SCHEMAS, MESSAGES_BODY_LIMIT, handleAnswer, handleWrite, receive, toMessageInputs, type HandleOp } from '../messaging.js';
import { receivedJson } from '../received-json.js';
import { IdempotencyHeaders, QueueParams, SubscriptionParams, TopicParams } from '../schemas/common.js';
import { MessageBatch, Published, PublishedBatch, QueueMessageInput, ReceiveRequest, Received, Sent, SentBatch, TopicMessageBatch, TopicMessageInput } from '../schemas/messages.js';
import { bearer, problems } from './common.js';

const FANOUT = `One publish stores at most ${MAX_FANOUT} copies (messages × the topic's subscriptions, filters or not)`;

const KINDS = {
  queue: {
    tags: ['queues'],
    base: '/v1/queues/:queue',
    params: QueueParams,
    command: 'queue.send',
    one: {
      operationId: 'sendMessage',
      summary: 'Send a message',
      description: 'Needs ownership or a send grant. The 201 means the message is committed on a majority of nodes, fsynced there, and applied.',
      body: QueueMessageInput,
      answer: Sent,
    },
    batch: { operationId: 'sendMessageBatch', summary: 'Send up to 100 messages, all or none', description: undefined, body: MessageBatch, answer: SentBatch },
    consumer: '/v1/queues/:queue',
    consumerParams: QueueParams,
    receive: {
      operationId: 'receiveMessages',
      summary: 'Receive messages with a lease (long polling with waitSeconds)',
      description:
        'Oldest visible messages first, up to maxMessages and 2 MiB of bodies and attributes (at least one message; since 1.8.0). Each is leased for the visibility timeout: ack deletes it; nack or an expired lease makes it visible again. A receive is a write (the lease is replicated).',
    },
    handles: {
      ack: ['ackMessages', 'Acknowledge: delete the received messages'],
      nack: ['nackMessages', 'Negative-acknowledge: make the messages visible again (after delaySeconds)'],
      lease: ['extendLeases', 'Extend the leases of received messages'],
    },
  },
  topic: {
    tags: ['topics'],
    base: '/v1/topics/:topic',
    params: TopicParams,
    command: 'topic.publish',
    one: {
      operationId: 'publishMessage',
      summary: 'Publish a message to every subscription',
      description: `Needs ownership or a publish grant. Delivered once to every subscription that exists now and whose filter matches. ${FANOUT}; 413 beyond.`,
      body: TopicMessageInput,
      answer: Published,
    },
    batch: {
      operationId: 'publishMessageBatch',
      summary: 'Publish up to 100 messages, all or none',
      description: `Needs ownership or a publish grant. ${FANOUT}; 413 beyond, and nothing is stored.`,
      body: TopicMessageBatch,
      answer: PublishedBatch,
    },
    consumer: '/v1/topics/:topic/subscriptions/:subscription',
    consumerParams: SubscriptionParams,
    receive: { operationId: 'receiveSubscriptionMessages', summary: 'Receive from a subscription (its owner only), as for queues', description: undefined },
    handles: {
      ack: ['ackSubscriptionMessages', 'Acknowledge subscription messages'],
      nack: ['nackSubscriptionMessages', 'Negative-acknowledge subscription messages'],
      lease: ['extendSubscriptionLeases', 'Extend the leases of subscription messages'],
    },
  },
} as const;

/** What a route of this kind acts on: the queue or topic (its partition, and its Idempotency-Key's scope), and what consumes. */
function targetOf(kind: 'queue' | 'topic', request: FastifyRequest): { name: string; ref: ChannelRef } {
  const p = request.params as Record<string, string>;
  if (kind === 'queue') return { name: p.queue!, ref: { queue: p.queue! } };
  return { name: p.topic!, ref: { topic: p.topic!, subscription: p.subscription! } };
}

/** POST <queue or topic>/messages and /messages/batch: send or publish. */
export function sendRoutes(app: FastifyInstance, deps: ApiDeps, kind: 'queue' | 'topic'): void {
  const k = KINDS[kind];
  const { tags } = k;
  const security = bearer;
  type Input = Parameters<typeof toMessageInputs>[0][number];

  for (const [suffix, s, many] of [
    ['/messages', k.one, false],
    ['/messages/batch', k.batch, true],
  ] as const) {
    app.post(
      `${k.base}${suffix}`,
      {
        bodyLimit: MESSAGES_BODY_LIMIT,
        schema: {
          operationId: s.operationId,
          tags,
          security,
          summary: s.summary,
          ...(s.description === undefined ? {} : { description: s.description }),
          headers: IdempotencyHeaders,
          params: k.params,
          body: s.body,
          response: { 201: s.answer, ...problems(400, 401, 403, 404, 409, 413, 503, 504, 507) },
        },
      },
      async (request, reply) => {
        const { name } = targetOf(kind, request);
        const messages = toMessageInputs(many ? (request.body as { messages: Input[] }).messages : [request.body as Input]);
        const r = await write<{ items: unknown[] }>(deps, request, name, { type: k.command, name, messages });
        return reply.code(201).send(many ? r : r.items[0]!);
      },
    );
  }
}

/** POST <queue or subscription>/receive, /ack, /nack and /lease. */
export function consumeRoutes(app: FastifyInstance, deps: ApiDeps, kind: 'queue' | 'topic'): void {
  const k = KINDS[kind];
  const { tags } = k;
  const security = bearer;

  app.post(
    `${k.consumer}/receive`,
    {
      schema: {
        operationId: k.receive.operationId,
        tags,
        security,
        summary: k.receive.summary,
        ...(k.receive.description === undefined ? {} : { description: k.receive.description }),
        headers: IdempotencyHeaders,
        params: k.consumerParams,
        body: Type.Optional(ReceiveRequest),
        [BODY_OPTIONAL]: true,
        response: { 200: Received, ...problems(400, 401, 403, 404, 409, 429, 503, 504, 507) },
      },
      // A receive may come without a body (docs/api.md): it is then {}, which Ajv validates and fills
      // with the schema's defaults like any other, as is an empty one of any type. A body of JSON
      // null is a body, and refused.
      preValidation: async (request) => {
        if (request.body === undefined || request.body === '') request.body = {};
      },
    },
    async (request, reply) => {
      const { name, ref } = targetOf(kind, request);
      // The 200's schema above is the contract; receivedJson writes it in pieces (received-json.ts).
      const answer = receivedJson(await receive(deps, request, reply, name, ref, request.body as ReceiveRequest));
      return reply.type('application/json; charset=utf-8').send(answer);
    },
  );

  for (const op of ['ack', 'nack', 'lease'] as const satisfies readonly HandleOp[]) {
    const [operationId, summary] = k.handles[op];
    app.post(
      `${k.consumer}/${op}`,
      {
        schema: {
          operationId,
          tags,
          security,
          summary,
          description: 'Each handle succeeds or fails on its own: see failed.',
          headers: IdempotencyHeaders,
          params: k.consumerParams,
          body: HANDLE_SCHEMAS[op].body,
          response: { 200: HANDLE_SCHEMAS[op].result, ...problems(400, 401, 403, 404, 409, 503, 504) },
        },
      },
      async (request) => {
        const { name, ref } = targetOf(kind, request);
        return handleAnswer(op, await handleWrite(deps, request, name, op, ref, request.body as Parameters<typeof handleWrite>[5]));
      },
    );
  }
}
