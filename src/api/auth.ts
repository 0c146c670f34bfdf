// Authentication: access tokens (JWT, HS256, with expiry) signed with the cluster's JWT secret, so a
// token from one node is good on all. A token is accepted only for a user that exists and was not
// created after the token was issued (a name registered again after the cluster's data was wiped does
// not inherit old tokens). Users are never deleted through the API, so a user seen once stays known:
// the check costs a lookup in the user's partition the first time, and a map lookup after.
import fastifyJwt from '@fastify/jwt';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import fp from 'fastify-plugin';
import { userPartition } from '../partition/routing.js';
import type { ApiDeps } from './deps.js';
import { ctxOf } from './deps.js';
import { ApiError } from './errors.js';
import type { Result } from '../store/broker/index.js';

declare module '@fastify/jwt' {
  interface FastifyJWT {
    payload: { sub: string };
    user: { sub: string; iat: number; exp: number };
  }
}

declare module 'fastify' {
  interface FastifyInstance {
    /** A preHandler: 401 unless the request carries a valid token of an existing user. */
    authenticate(request: FastifyRequest, reply: FastifyReply): Promise<void>;
  }
}

/** Clocks of the node that signed a token and of the partition that registered its user may differ. */
const CLOCK_SKEW_MS = 60_000;
const MAX_KNOWN_USERS = 100_000;
const MAX_VERIFIED_TOKENS = 10_000;
const VERIFIED_TTL_MS = 60_000;

async function auth(app: FastifyInstance, opts: { deps: ApiDeps }): Promise<void> {
  const { deps } = opts;
  const ttl = deps.tokenTtlSeconds ?? 3600;
  await app.register(fastifyJwt, {
    secret: deps.jwtSecret,
    sign: { algorithm: 'HS256', expiresIn: ttl },
    verify: { algorithms: ['HS256'] },
  });
  /** createdAt (ms) of users known to exist. */
  const known = new Map<string, number>();

  const createdAt = async (request: FastifyRequest, username: string): Promise<number | null> => {
    const cached = known.get(username);
    if (cached !== undefined) return cached;
    const p = userPartition(username, deps.broker.partitions);
    const query = { type: 'user.get', username } as const;
    // A user on the local replica is committed; only a miss needs the leader.
    let r = localUser(p, query);
    if (!r.ok) r = await deps.broker.query(p, query, ctxOf(request));
    if (!r.ok) return null;
    const at = Date.parse((r.value as { createdAt: string }).createdAt);
    if (known.size >= MAX_KNOWN_USERS) known.clear();
    known.set(username, at);
    return at;
  };

  /** The user on this node's replica; a miss when there is none, or no readable replica right now. */
  const localUser = (p: number, query: { type: 'user.get'; username: string }): Result => {
    try {
      return deps.broker.staleQuery(p, query).result;
    } catch {
      return { ok: false, code: 'not_found', detail: 'not on this replica' };
    }
  };

  /**
   * Tokens verified lately, by Authorization header: the signature check (HMAC, base64, JSON), about
   * 7% of a node's busy time under single-message sends, is done once per token and minute. An entry
   * never outlives its token's expiry.
   */
  const verified = new Map<string, { sub: string; iat: number; exp: number; until: number }>();

  app.decorate('authenticate', async (request: FastifyRequest) => {
    const header = request.headers.authorization;
    if (header === undefined) throw new ApiError('unauthorized', 'a bearer token is required (Authorization: Bearer <token>)');
    const now = Date.now();
    const hit = verified.get(header);
    if (hit !== undefined && now < hit.until) {
      request.user = { sub: hit.sub, iat: hit.iat, exp: hit.exp };
    } else {
      if (hit !== undefined) verified.delete(header);
      try {
        await request.jwtVerify();
      } catch {
        throw new ApiError('unauthorized', 'the bearer token is invalid or expired; log in again');
      }
      const { sub, iat, exp } = request.user;
      if (verified.size >= MAX_VERIFIED_TOKENS) verified.clear();
      verified.set(header, { sub, iat, exp, until: Math.min(now + VERIFIED_TTL_MS, exp * 1000) });
    }
    const { sub, iat } = request.user;
    const at = typeof sub === 'string' ? await createdAt(request, sub) : null;
    if (at === null || iat * 1000 + CLOCK_SKEW_MS < at) throw new ApiError('unauthorized', 'the token names no existing user; log in again');
  });
}

export const authPlugin = fp(auth, { name: 'mom-auth', fastify: '5.x' });
