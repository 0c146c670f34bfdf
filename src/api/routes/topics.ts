// /v1/topics: topics, their grants, publishing, and subscriptions with their own leases and acks.
// A topic's subscriptions live in the topic's partition, so a publish reaches all of them in one
// entry.
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { FastifyInstance } from 'fastify';
import { Type } from 'typebox';
import { MAX_SUBSCRIPTIONS, type SubscriptionView, type TopicView } from '../../store/broker/index.js';
import { actorOf, read, write, type ApiDeps } from '../deps.js';
import { listAcross } from '../listing.js';
import { ApiError } from '../errors.js';
import { checkUnicode } from '../messaging.js';
import { ConsistencyQuery, IdempotencyHeaders, LIMITS, ListQuery, SubscriptionParams, TopicParams } from '../schemas/common.js';
import { Subscription, SubscriptionCreate, Subscriptions, Topic, TopicCreate, TopicPage } from '../schemas/topics.js';
import { bearer, problems } from './common.js';
import { grantRoutes } from './grants.js';
import { consumeRoutes, sendRoutes } from './messages.js';
import { checkDeadLetterQueue } from './queues.js';

/** A subscription as the API shows it: its filter in the shape it was created with. */
const subscriptionOut = (s: SubscriptionView) => ({ ...s, filter: s.filter === null ? null : { attributes: s.filter } });

/**
 * 400 unless a filter is text UTF-8 can hold and its JSON, as the state stores it, holds at most
 * LIMITS.filterBytes: the attributes' own limits let it reach ~110 KB, which each publish to the
 * topic read and parsed on every node (review of stop 62). The state machine takes any size: a
 * subscription made before the limit keeps its filter.
 */
function checkFilter(attributes: Record<string, string>): void {
  checkUnicode(attributes, 'filter.attributes');
  const bytes = Buffer.byteLength(JSON.stringify(attributes), 'utf8');
  if (bytes > LIMITS.filterBytes) {
    throw new ApiError('validation_failed', `filter.attributes is ${bytes} bytes as JSON; the limit is ${LIMITS.filterBytes}`);
  }
}

export async function topicRoutes(fastify: FastifyInstance, opts: { deps: ApiDeps }): Promise<void> {
  const app = fastify.withTypeProvider<TypeBoxTypeProvider>();
  const { deps } = opts;
  app.addHook('onRequest', app.authenticate);
  const tags = ['topics'];
  const security = bearer;

  app.post(
    '/v1/topics',
    {
      schema: {
        operationId: 'createTopic',
        tags,
        security,
        summary: 'Create a topic',
        description: 'The caller owns the new topic. Names are global: 409 if any user has a topic of this name.',
        headers: IdempotencyHeaders,
        body: TopicCreate,
        response: { 201: Topic, ...problems(400, 401, 409, 503, 504, 507) },
      },
    },
    async (request, reply) => {
      const { name, subscribe } = request.body as TopicCreate;
      return reply.code(201).send(await write<TopicView>(deps, request, name, { type: 'topic.create', name, subscribe }));
    },
  );

  app.get(
    '/v1/topics',
    {
      schema: {
        operationId: 'listTopics',
        tags,
        security,
        summary: 'List topics',
        description: 'The topics the caller owns or has a grant on, in name order, a page at a time.',
        querystring: ListQuery,
        response: { 200: TopicPage, ...problems(400, 401, 503) },
      },
    },
    async (request) => listAcross<TopicView>(deps, request, 'topic.list', request.query as ListQuery),
  );

  app.get(
    '/v1/topics/:topic',
    {
      schema: {
        operationId: 'getTopic',
        tags,
        security,
        summary: 'Get a topic with its stats',
        params: TopicParams,
        querystring: ConsistencyQuery,
        response: { 200: Topic, ...problems(400, 401, 404, 503) },
      },
    },
    async (request, reply) => read<TopicView>(deps, request, reply, request.params.topic, { type: 'topic.get', name: request.params.topic, user: actorOf(request) }),
  );

  app.delete(
    '/v1/topics/:topic',
    {
      schema: {
        operationId: 'deleteTopic',
        tags,
        security,
        summary: 'Delete a topic and its subscriptions (owner only)',
        headers: IdempotencyHeaders,
        params: TopicParams,
        response: { 204: Type.Null({ description: 'Deleted.' }), ...problems(400, 401, 403, 404, 409, 503, 504) },
      },
    },
    async (request, reply) => {
      await write(deps, request, request.params.topic, { type: 'topic.delete', name: request.params.topic });
      return reply.code(204).send(null);
    },
  );

  grantRoutes(fastify, deps, 'topic');

  sendRoutes(fastify, deps, 'topic');

  app.post(
    '/v1/topics/:topic/subscriptions',
    {
      // A filter within the attributes' limits (16 pairs of 128 + 1024 characters) can pass 64 KiB as
      // escaped JSON: read whole, so that one over LIMITS.filterBytes is answered why (400), not 413.
      bodyLimit: 256 * 1024,
      schema: {
        operationId: 'createSubscription',
        tags,
        security,
        summary: 'Subscribe: create a subscription owned by the caller',
        description: `Needs ownership of the topic, a subscribe grant, or a topic created with subscribe: anyone. A topic holds at most ${MAX_SUBSCRIPTIONS} subscriptions; 409 beyond. A filter's attributes hold at most ${LIMITS.filterBytes} bytes as compact JSON; 400 beyond.`,
        headers: IdempotencyHeaders,
        params: TopicParams,
        body: SubscriptionCreate,
        response: { 201: Subscription, ...problems(400, 401, 403, 404, 409, 503, 504, 507) },
      },
    },
    async (request, reply) => {
      const b = request.body as SubscriptionCreate;
      if (b.filter !== undefined) checkFilter(b.filter.attributes);
      await checkDeadLetterQueue(deps, request, b.deadLetterQueue, b.maxDeliveries);
      const s = await write<SubscriptionView>(deps, request, request.params.topic, {
        type: 'subscription.create',
        topic: request.params.topic,
        name: b.name,
        visibilityTimeoutSeconds: b.visibilityTimeoutSeconds,
        maxDeliveries: b.maxDeliveries ?? null,
        deadLetterQueue: b.deadLetterQueue ?? null,
        filter: b.filter?.attributes ?? null,
      });
      return reply.code(201).send(subscriptionOut(s));
    },
  );

  app.get(
    '/v1/topics/:topic/subscriptions',
    {
      schema: {
        operationId: 'listSubscriptions',
        tags,
        security,
        summary: 'List subscriptions',
        description: 'All of them for the topic\'s owner; one\'s own for anybody else.',
        params: TopicParams,
        querystring: ConsistencyQuery,
        response: { 200: Subscriptions, ...problems(400, 401, 404, 503) },
      },
    },
    async (request, reply) => ({
      items: (await read<SubscriptionView[]>(deps, request, reply, request.params.topic, { type: 'subscription.list', topic: request.params.topic, user: actorOf(request) })).map(subscriptionOut),
    }),
  );

  app.get(
    '/v1/topics/:topic/subscriptions/:subscription',
    {
      schema: {
        operationId: 'getSubscription',
        tags,
        security,
        summary: 'Get a subscription with its stats',
        params: SubscriptionParams,
        querystring: ConsistencyQuery,
        response: { 200: Subscription, ...problems(400, 401, 404, 503) },
      },
    },
    async (request, reply) =>
      subscriptionOut(
        await read<SubscriptionView>(deps, request, reply, request.params.topic, {
          type: 'subscription.get',
          topic: request.params.topic,
          name: request.params.subscription,
          user: actorOf(request),
        }),
      ),
  );

  app.delete(
    '/v1/topics/:topic/subscriptions/:subscription',
    {
      schema: {
        operationId: 'deleteSubscription',
        tags,
        security,
        summary: 'Delete a subscription (its owner or the topic\'s owner)',
        headers: IdempotencyHeaders,
        params: SubscriptionParams,
        response: { 204: Type.Null({ description: 'Deleted.' }), ...problems(400, 401, 403, 404, 409, 503, 504) },
      },
    },
    async (request, reply) => {
      await write(deps, request, request.params.topic, { type: 'subscription.delete', topic: request.params.topic, name: request.params.subscription });
      return reply.code(204).send(null);
    },
  );

  consumeRoutes(fastify, deps, 'topic');
}
