// /v1/auth: register, login, me. Passwords are hashed here, on the node that received the request
// (bcrypt is slow on purpose and not deterministic), and only the hash is proposed.
import { createHash } from 'node:crypto';
import bcrypt from 'bcryptjs';
import type { FastifyInstance } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import { userPartition } from '../../partition/routing.js';
import { ctxOf, type ApiDeps } from '../deps.js';
import { ApiError, fromFailure } from '../errors.js';
import { LoginGuard, RateLimiter } from '../rate-limit.js';
import { Credentials, Me, Registered, Token } from '../schemas.js';
import { problems } from './common.js';

/**
 * bcrypt reads only the first 72 bytes of a password, and passwords may be up to 256 characters: it
 * is given the SHA-256 of the password (base64, 44 bytes) instead, so every byte counts.
 */
export const prehash = (password: string): string => createHash('sha256').update(password, 'utf8').digest('base64');

/**
 * Failed logins (LoginGuard): per (username, address), 5 free, then 1 s, 2 s, 4 s ... up to 15 min
 * between attempts, cleared by a success or 15 min without a failure; per address, 30 failures a
 * minute. Successful logins count nowhere.
 */
export const LOGIN_LIMITS = { free: 5, maxBackoffMs: 15 * 60_000, forgetMs: 15 * 60_000, perAddress: 30, windowMs: 60_000 } as const;
export const REGISTER_LIMITS = { perAddress: 20, windowMs: 60_000 } as const;

export async function authRoutes(fastify: FastifyInstance, opts: { deps: ApiDeps }): Promise<void> {
  const app = fastify.withTypeProvider<TypeBoxTypeProvider>();
  const { deps } = opts;
  const now = deps.now ?? Date.now;
  const cost = Math.max(10, deps.bcryptCost ?? 10);
  const ttl = deps.tokenTtlSeconds ?? 3600;
  const logins = new LoginGuard(LOGIN_LIMITS, now);
  const registerByAddress = new RateLimiter(REGISTER_LIMITS.perAddress, REGISTER_LIMITS.windowMs, now);
  // Compared against when the user is unknown, so that both failures take as long.
  const dummyHash = bcrypt.hashSync('not a password of anyone', cost);

  const limit = (limiter: RateLimiter, key: string, what: string): void => {
    const wait = limiter.hit(key);
    if (wait > 0) throw new ApiError('rate_limited', `too many ${what}; retry in ${wait} s`, wait);
  };

  app.post(
    '/v1/auth/register',
    {
      schema: {
        operationId: 'registerUser',
        tags: ['auth'],
        security: [],
        summary: 'Register a user',
        description: `Creates a user. Limited to ${REGISTER_LIMITS.perAddress} registrations per minute per client address on each node.`,
        body: Credentials,
        response: { 201: Registered, ...problems(400, 409, 413, 429, 503, 504) },
      },
    },
    async (request, reply) => {
      limit(registerByAddress, request.ip, 'registrations from this address');
      const { username, password } = request.body;
      const passwordHash = await bcrypt.hash(prehash(password), cost);
      const r = await deps.broker.propose(userPartition(username, deps.broker.partitions), null, { type: 'user.register', username, passwordHash }, undefined, ctxOf(request));
      if (!r.ok) throw fromFailure(r);
      return reply.code(201).send(r.value as { username: string; createdAt: string });
    },
  );

  app.post(
    '/v1/auth/login',
    {
      schema: {
        operationId: 'login',
        tags: ['auth'],
        security: [],
        summary: 'Log in: get an access token',
        description: `401 alike for an unknown user and a wrong password. Failures only are counted, on each node: after ${LOGIN_LIMITS.free} failures for one username from one client address, that pair waits 1 s, then twice as long after each further failure (up to ${LOGIN_LIMITS.maxBackoffMs / 60_000} min; a success clears it), and an address waits after ${LOGIN_LIMITS.perAddress} failures in a minute: 429 with Retry-After.`,
        body: Credentials,
        response: { 200: Token, ...problems(400, 401, 413, 429, 503, 504) },
      },
    },
    async (request) => {
      const { username, password } = request.body;
      const wait = logins.begin(username, request.ip);
      if (wait > 0) throw new ApiError('rate_limited', `too many failed logins for this user from this address, or from this address; retry in ${wait} s`, wait);
      let r;
      try {
        r = await deps.broker.query(userPartition(username, deps.broker.partitions), { type: 'user.get', username }, ctxOf(request));
      } catch (err) {
        logins.cancel(username, request.ip);
        throw err;
      }
      const hash = r.ok ? (r.value as { passwordHash: string }).passwordHash : dummyHash;
      const good = await bcrypt.compare(prehash(password), hash);
      // Counted as a failure from its start (begin): a success gives the count back.
      if (!r.ok || !good) throw new ApiError('unauthorized', 'unknown user or wrong password');
      logins.succeeded(username, request.ip);
      const accessToken = app.jwt.sign({ sub: username });
      return { accessToken, tokenType: 'Bearer' as const, expiresIn: ttl };
    },
  );

  app.get(
    '/v1/auth/me',
    {
      onRequest: [app.authenticate],
      schema: { operationId: 'getCurrentUser', tags: ['auth'], summary: 'Who the token names', security: [{ bearerAuth: [] }], response: { 200: Me, ...problems(401, 503) } },
    },
    async (request) => ({ username: request.user.sub }),
  );
}
