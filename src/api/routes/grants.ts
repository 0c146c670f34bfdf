// The grant routes, the same for queues and topics: PUT, GET and DELETE under /v1/<kind>s/{name}/grants.
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { Type } from 'typebox';
import { partitionOf, userPartition } from '../../partition/routing.js';
import { ErrorCode, MAX_GRANTS } from '../../store/broker/index.js';
import { actorOf, ctxOf, read, write, type ApiDeps } from '../deps.js';
import { ApiError, fromFailure } from '../errors.js';
import { ConsistencyQuery, IdempotencyHeaders, QueueParams, TopicParams } from '../schemas/common.js';
import { Grant, Grants, QueueGrantParams, QueueGrantPut, TopicGrantParams, TopicGrantPut } from '../schemas/grants.js';
import { bearer, problems } from './common.js';

const SCHEMAS = {
  queue: { params: QueueParams, grantParams: QueueGrantParams, put: QueueGrantPut },
  topic: { params: TopicParams, grantParams: TopicGrantParams, put: TopicGrantPut },
} as const;

export function grantRoutes(app: FastifyInstance, deps: ApiDeps, kind: 'queue' | 'topic'): void {
  const tags = [`${kind}s`];
  const security = bearer;
  const path = `/v1/${kind}s/:${kind}/grants`;
  const s = SCHEMAS[kind];
  const Kind = kind === 'queue' ? 'Queue' : 'Topic';
  const nameOf = (request: FastifyRequest): string => (request.params as Record<string, string>)[kind]!;
  const userOf = (request: FastifyRequest): string => (request.params as { username: string }).username;

  app.put(
    `${path}/:username`,
    {
      schema: {
        operationId: `set${Kind}Grant`,
        tags,
        security,
        summary: `Grant a user rights on a ${kind} (owner only)`,
        description: `Replaces the user's rights on the ${kind}. 404 when the user does not exist, answered to the ${kind}'s owner only: anyone else gets the same 403 or 404 whether the user exists or not. A ${kind} holds grants for at most ${MAX_GRANTS} users: 409 for one more (from log format 16; since 1.6.0).`,
        headers: IdempotencyHeaders,
        params: s.grantParams,
        body: s.put,
        response: { 200: Grant, ...problems(400, 401, 403, 404, 409, 503, 504, 507) },
      },
    },
    async (request) => {
      // Only the owner learns whether the user exists: anyone else is refused first, the same either way.
      await requireOwner(deps, request, kind, nameOf(request));
      await requireUser(deps, request, userOf(request));
      const actions = (request.body as { actions: string[] }).actions;
      return write(deps, request, nameOf(request), { type: 'grant.put', kind, name: nameOf(request), username: userOf(request), actions });
    },
  );

  app.get(
    path,
    {
      schema: {
        operationId: `list${Kind}Grants`,
        tags,
        security,
        summary: `List the grants of a ${kind} (owner only)`,
        params: s.params,
        querystring: ConsistencyQuery,
        response: { 200: Grants, ...problems(400, 401, 403, 404, 503) },
      },
    },
    async (request, reply) => ({
      items: await read<{ username: string; actions: string[] }[]>(deps, request, reply, nameOf(request), { type: 'grant.list', kind, name: nameOf(request), user: actorOf(request) }),
    }),
  );

  app.delete(
    `${path}/:username`,
    {
      schema: {
        operationId: `delete${Kind}Grant`,
        tags,
        security,
        summary: `Revoke a user's rights on a ${kind} (owner only)`,
        headers: IdempotencyHeaders,
        params: s.grantParams,
        response: { 204: Type.Null({ description: 'Revoked.' }), ...problems(400, 401, 403, 404, 409, 503, 504) },
      },
    },
    async (request, reply) => {
      await write(deps, request, nameOf(request), { type: 'grant.delete', kind, name: nameOf(request), username: userOf(request) });
      return reply.code(204).send(null);
    },
  );
}

/** The refusal a grant's write would answer the caller (404 unseen, 403 not the owner), before anything else is looked up. */
async function requireOwner(deps: ApiDeps, request: FastifyRequest, kind: 'queue' | 'topic', name: string): Promise<void> {
  const r = await deps.broker.query(partitionOf(name, deps.broker.partitions), { type: 'grant.list', kind, name, user: actorOf(request) }, ctxOf(request));
  if (r.ok) return;
  // The look is the grants' list, whose refusal names listing: a grant is what was refused here.
  if (r.code === ErrorCode.Forbidden) throw fromFailure({ ...r, detail: `only the owner may grant rights on ${kind} '${name}'` });
  throw fromFailure(r);
}

/** 404 unless `username` exists (grants name real users). */
async function requireUser(deps: ApiDeps, request: FastifyRequest, username: string): Promise<void> {
  const r = await deps.broker.query(userPartition(username, deps.broker.partitions), { type: 'user.get', username }, ctxOf(request));
  if (!r.ok) throw new ApiError('not_found', `user '${username}' not found`);
}
