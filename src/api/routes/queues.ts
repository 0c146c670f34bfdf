// /v1/queues: queues, their grants, and their messages.
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { Type } from 'typebox';
import { partitionOf } from '../../partition/routing.js';
import type { QueueView } from '../../store/broker/index.js';
import { actorOf, ctxOf, read, write, type ApiDeps } from '../deps.js';
import { ApiError, fromFailure } from '../errors.js';
import { listAcross } from '../listing.js';
import { ConsistencyQuery, IdempotencyHeaders, ListQuery, QueueParams } from '../schemas/common.js';
import { Purged, Queue, QueueCreate, QueuePage } from '../schemas/queues.js';
import { bearer, problems } from './common.js';
import { grantRoutes } from './grants.js';
import { consumeRoutes, sendRoutes } from './messages.js';

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
        response: { 201: Queue, ...problems(400, 401, 409, 503, 504, 507) },
      },
    },
    async (request, reply) => {
      const b = request.body as QueueCreate;
      await checkDeadLetterQueue(deps, request, b.deadLetterQueue, b.maxDeliveries);
      const q = await write<QueueView>(deps, request, b.name, {
        type: 'queue.create',
        name: b.name,
        visibilityTimeoutSeconds: b.visibilityTimeoutSeconds,
        maxDeliveries: b.maxDeliveries ?? null,
        deadLetterQueue: b.deadLetterQueue ?? null,
        delaySeconds: b.delaySeconds,
        retentionSeconds: b.retentionSeconds,
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
    async (request) => listAcross<QueueView>(deps, request, 'queue.list', request.query as ListQuery),
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

  sendRoutes(fastify, deps, 'queue');
  consumeRoutes(fastify, deps, 'queue');

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
