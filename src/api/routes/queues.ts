// /v1/queues: queues, their grants, and their messages.
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { Type } from 'typebox';
import { partitionOf } from '../../partition/routing.js';
import type { QueueView, SentMessage } from '../../store/broker/index.js';
import { actorOf, ctxOf, read, write, type ApiDeps } from '../deps.js';
import { ApiError, fromFailure } from '../errors.js';
import { listAcross } from '../listing.js';
import { HANDLE_SCHEMAS, MESSAGES_BODY_LIMIT, handleAnswer, handleWrite, receive, toMessageInputs, type HandleOp } from '../messaging.js';
import {
  ConsistencyQuery,
  IdempotencyHeaders,
  ListQuery,
  MessageBatch,
  Purged,
  Queue,
  QueueCreate,
  QueueMessageInput,
  QueuePage,
  QueueParams,
  ReceiveRequest,
  Received,
  Sent,
  SentBatch,
} from '../schemas.js';
import { bearer, problems } from './common.js';
import { grantRoutes } from './grants.js';

/** A dead-letter queue must exist and be the caller's own: checked here, and again on delivery. */
export async function checkDeadLetterQueue(deps: ApiDeps, request: FastifyRequest, dlq: string | undefined, maxDeliveries: number | undefined): Promise<void> {
  if (dlq === undefined) return;
  if (maxDeliveries === undefined) throw new ApiError('validation_failed', 'deadLetterQueue needs maxDeliveries');
  const user = actorOf(request);
  const r = await deps.broker.query(partitionOf(dlq, deps.broker.partitions), { type: 'queue.get', name: dlq, user }, ctxOf(request));
  if (!r.ok && r.code !== 'not_found') throw fromFailure(r);
  if (!r.ok || (r.value as QueueView).owner !== user) throw new ApiError('validation_failed', `deadLetterQueue '${dlq}' must be an existing queue of yours`);
}

export async function queueRoutes(fastify: FastifyInstance, opts: { deps: ApiDeps }): Promise<void> {
  const app = fastify.withTypeProvider<TypeBoxTypeProvider>();
  const { deps } = opts;
  app.addHook('onRequest', app.authenticate);
  const tags = ['queues'];
  const security = bearer;

  app.post(
    '/v1/queues',
    {
      schema: {
        operationId: 'createQueue',
        tags,
        security,
        summary: 'Create a queue',
        description: 'The caller owns the new queue. Names are global in the cluster: 409 if any user has a queue of this name.',
        headers: IdempotencyHeaders,
        body: QueueCreate,
        response: { 201: Queue, ...problems(400, 401, 409, 503, 504) },
      },
    },
    async (request, reply) => {
      const b = request.body;
      await checkDeadLetterQueue(deps, request, b.deadLetterQueue, b.maxDeliveries);
      const q = await write<QueueView>(deps, request, b.name, {
        type: 'queue.create',
        name: b.name,
        visibilityTimeoutSeconds: b.visibilityTimeoutSeconds ?? 30,
        maxDeliveries: b.maxDeliveries ?? null,
        deadLetterQueue: b.deadLetterQueue ?? null,
        delaySeconds: b.delaySeconds ?? 0,
        retentionSeconds: b.retentionSeconds ?? 345600,
      });
      return reply.code(201).send(q);
    },
  );

  app.get(
    '/v1/queues',
    {
      schema: {
        operationId: 'listQueues',
        tags,
        security,
        summary: 'List queues',
        description: 'The queues the caller owns or has a grant on, in name order, a page at a time.',
        querystring: ListQuery,
        response: { 200: QueuePage, ...problems(400, 401, 503) },
      },
    },
    async (request) => listAcross<QueueView>(deps, request, 'queue.list', request.query),
  );

  app.get(
    '/v1/queues/:queue',
    {
      schema: {
        operationId: 'getQueue',
        tags,
        security,
        summary: 'Get a queue with exact stats',
        params: QueueParams,
        querystring: ConsistencyQuery,
        response: {
          200: { ...Queue, description: 'The queue. With consistency=stale, the headers X-Stale: true and X-Applied-Index (the replica\'s applied log index) come along.' },
          ...problems(400, 401, 404, 503),
        },
      },
    },
    async (request, reply) => read<QueueView>(deps, request, reply, request.params.queue, { type: 'queue.get', name: request.params.queue, user: actorOf(request) }),
  );

  app.delete(
    '/v1/queues/:queue',
    {
      schema: {
        operationId: 'deleteQueue',
        tags,
        security,
        summary: 'Delete a queue and its messages (owner only)',
        headers: IdempotencyHeaders,
        params: QueueParams,
        response: { 204: Type.Null({ description: 'Deleted.' }), ...problems(400, 401, 403, 404, 409, 503, 504) },
      },
    },
    async (request, reply) => {
      await write(deps, request, request.params.queue, { type: 'queue.delete', name: request.params.queue });
      return reply.code(204).send(null);
    },
  );

  grantRoutes(fastify, deps, 'queue');

  app.post(
    '/v1/queues/:queue/messages',
    {
      bodyLimit: MESSAGES_BODY_LIMIT,
      schema: {
        operationId: 'sendMessage',
        tags,
        security,
        summary: 'Send a message',
        description: 'Needs ownership or a send grant. The 201 means the message is committed on a majority of nodes, fsynced there, and applied.',
        headers: IdempotencyHeaders,
        params: QueueParams,
        body: QueueMessageInput,
        response: { 201: Sent, ...problems(400, 401, 403, 404, 409, 413, 503, 504) },
      },
    },
    async (request, reply) => {
      const r = await write<{ items: SentMessage[] }>(deps, request, request.params.queue, {
        type: 'queue.send',
        name: request.params.queue,
        messages: toMessageInputs([request.body]),
      });
      return reply.code(201).send(r.items[0]!);
    },
  );

  app.post(
    '/v1/queues/:queue/messages/batch',
    {
      bodyLimit: MESSAGES_BODY_LIMIT,
      schema: {
        operationId: 'sendMessageBatch',
        tags,
        security,
        summary: 'Send up to 100 messages, all or none',
        headers: IdempotencyHeaders,
        params: QueueParams,
        body: MessageBatch,
        response: { 201: SentBatch, ...problems(400, 401, 403, 404, 409, 413, 503, 504) },
      },
    },
    async (request, reply) => {
      const r = await write<{ items: SentMessage[] }>(deps, request, request.params.queue, {
        type: 'queue.send',
        name: request.params.queue,
        messages: toMessageInputs(request.body.messages),
      });
      return reply.code(201).send(r);
    },
  );

  app.post(
    '/v1/queues/:queue/receive',
    {
      schema: {
        operationId: 'receiveMessages',
        tags,
        security,
        summary: 'Receive messages with a lease (long polling with waitSeconds)',
        description:
          'Oldest visible messages first. Each is leased for the visibility timeout: ack deletes it; nack or an expired lease makes it visible again. A receive is a write (the lease is replicated).',
        headers: IdempotencyHeaders,
        params: QueueParams,
        body: Type.Optional(ReceiveRequest),
        response: { 200: Received, ...problems(400, 401, 403, 404, 409, 503, 504) },
      },
    },
    async (request, reply) => {
      const name = request.params.queue;
      return receive(deps, request, reply, name, { queue: name }, request.body ?? {});
    },
  );

  const handleRoute = (op: HandleOp, operationId: string, summary: string): void => {
    app.post(
      `/v1/queues/:queue/${op}`,
      {
        schema: {
          operationId,
          tags,
          security,
          summary,
          description: 'Each handle succeeds or fails on its own: see failed.',
          headers: IdempotencyHeaders,
          params: QueueParams,
          body: HANDLE_SCHEMAS[op].body,
          response: { 200: HANDLE_SCHEMAS[op].result, ...problems(400, 401, 403, 404, 409, 503, 504) },
        },
      },
      async (request) => {
        const name = (request.params as { queue: string }).queue;
        return handleAnswer(op, await handleWrite(deps, request, name, op, { queue: name }, request.body as Parameters<typeof handleWrite>[5]));
      },
    );
  };
  handleRoute('ack', 'ackMessages', 'Acknowledge: delete the received messages');
  handleRoute('nack', 'nackMessages', 'Negative-acknowledge: make the messages visible again (after delaySeconds)');
  handleRoute('lease', 'extendLeases', 'Extend the leases of received messages');

  app.post(
    '/v1/queues/:queue/purge',
    {
      schema: {
        operationId: 'purgeQueue',
        tags,
        security,
        summary: 'Delete every message of a queue (owner only)',
        headers: IdempotencyHeaders,
        params: QueueParams,
        response: { 200: Purged, ...problems(400, 401, 403, 404, 409, 503, 504) },
      },
    },
    async (request) => write(deps, request, request.params.queue, { type: 'queue.purge', name: request.params.queue }),
  );
}
