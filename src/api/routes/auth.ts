// /v1/auth: register, login, me, logout, password change and deleting oneself. Passwords are hashed
// here, on the node that received the request (bcrypt is slow on purpose and not deterministic), and
// only the hash is proposed. Logout, a password change and a deletion raise the user's epoch, which
// revokes every token it held (auth.ts).
import { createHash } from 'node:crypto';
import bcrypt from 'bcryptjs';
import { PasswordHasher } from '../password-hasher.js';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import { Type } from 'typebox';
import { UnavailableError } from '../../cluster/errors.js';
import { userPartition } from '../../partition/routing.js';
import { USER_LIFECYCLE, type Result, type Success } from '../../store/broker/index.js';
import { TOKEN_TTL_SECONDS } from '../auth.js';
import { actorOf, ctxOf, type ApiDeps } from '../deps.js';
import { ApiError, fromFailure } from '../errors.js';
import { LONE_SURROGATE } from '../messaging.js';
import { LoginGuard, RateLimiter, addressKey, parseLimitEvent } from '../rate-limit.js';
import { Credentials, Me, PasswordChange, PasswordConfirmation, Registered, Token } from '../schemas/auth.js';
import { problems } from './common.js';

/**
 * bcrypt reads only the first 72 bytes of a password, and passwords may be up to 256 characters: it
 * is given the SHA-256 of the password (base64, 44 bytes) instead, so every byte counts.
 */
export const prehash = (password: string): string => createHash('sha256').update(password, 'utf8').digest('base64');

/**
 * 400 unless a password to be set is text UTF-8 can hold: prehash would hash a lone surrogate as
 * U+FFFD, so any other lone surrogate (or U+FFFD) in its place would log in too. Only passwords being
 * set are checked; one given to log in is compared as it comes.
 */
function assertWellFormed(password: string, field: string): void {
  if (LONE_SURROGATE.test(password)) throw new ApiError('validation_failed', `body.${field}: a lone UTF-16 surrogate is not text UTF-8 can hold`);
}

/**
 * Failed logins (LoginGuard): per (username, address), 5 free, then 1 s, 2 s, 4 s ... up to 15 min
 * between attempts, cleared by a success or 15 min without a failure; per address, 30 failures a
 * minute. Successful logins count nowhere.
 */
export const LOGIN_LIMITS = { free: 5, maxBackoffMs: 15 * 60_000, forgetMs: 15 * 60_000, perAddress: 30, windowMs: 60_000 } as const;
export const REGISTER_LIMITS = { perAddress: 20, windowMs: 60_000 } as const;
/** Password checks (logins, password changes, deletions) of one username under way at once on a node. */
export const PASSWORD_CHECKS_PER_USER = 4;

export async function authRoutes(fastify: FastifyInstance, opts: { deps: ApiDeps }): Promise<void> {
  const app = fastify.withTypeProvider<TypeBoxTypeProvider>();
  const { deps } = opts;
  const now = deps.now ?? Date.now;
  const cost = Math.max(10, deps.bcryptCost ?? 10);
  const ttl = deps.tokenTtlSeconds ?? TOKEN_TTL_SECONDS;
  const logins = new LoginGuard(LOGIN_LIMITS, now);
  const registerByAddress = new RateLimiter(REGISTER_LIMITS.perAddress, REGISTER_LIMITS.windowMs, now);
  // Compared against when the user is unknown, so that both failures take as long.
  const dummyHash = bcrypt.hashSync('not a password of anyone', cost);
  // Every hash and check of a request, on a worker thread (password-hasher.ts), in turn across
  // usernames, so that a few accounts looping on their own logins cannot keep others' out (review of
  // stop 62). Registrations take their turns by address: they are counted per address anyway, and
  // no username holds a space.
  const hasher = new PasswordHasher();
  const registering = (request: FastifyRequest): string => `address ${addressKey(request.ip)}`;
  fastify.addHook('onClose', () => hasher.close());

  // What the other nodes counted counts here too, and what this node counts goes to them.
  const shared = deps.sharedLimits;
  shared?.subscribe((raw) => {
    const e = parseLimitEvent(raw);
    if (e === null) return;
    if (e.kind === 'register') registerByAddress.hit(e.address);
    else if (e.kind === 'login.failed') logins.failed(e.username, e.address);
    else logins.cleared(e.username, e.address);
  });
  /**
   * Begins a password attempt of `username` from the client's address (logins.begin: 429 past the
   * limit, in the words of `what`) and reads the user in partition `p`. The attempt counts as a
   * failure until attempted() says otherwise; one that could not read the user counts for nothing.
   */
  const beginAttempt = async (request: FastifyRequest, username: string, p: number, what: string): Promise<Result> => {
    const wait = logins.begin(username, addressKey(request.ip));
    if (wait > 0) throw new ApiError('rate_limited', `too many ${what} for this user from this address, or from this address; retry in ${wait} s`, wait);
    try {
      return await deps.broker.query(p, { type: 'user.get', username }, ctxOf(request));
    } catch (err) {
      logins.cancel(username, addressKey(request.ip));
      throw err;
    }
  };
  /**
   * Password checks under way per username, at most PASSWORD_CHECKS_PER_USER: successful logins count
   * nowhere else, and one client looping on its own logins, 24 at a time, kept the node's password
   * worker full (16 at once), so that other users' logins answered 503 (review of 2026-12-07). Four
   * accounts doing so at 4 each still did: the worker takes them in turn now (review of stop 62).
   */
  const checking = new Map<string, number>();
  /** Whether `password` matches `hash`; an attempt the hasher could not take (503, or 429 past the user's checks at once) counts as none. */
  const matches = async (request: FastifyRequest, username: string, password: string, hash: string): Promise<boolean> => {
    const under = checking.get(username) ?? 0;
    if (under >= PASSWORD_CHECKS_PER_USER) {
      logins.cancel(username, addressKey(request.ip));
      throw new ApiError('rate_limited', `${PASSWORD_CHECKS_PER_USER} password checks of this user are under way on this node; retry in 1 s`, 1);
    }
    checking.set(username, under + 1);
    try {
      return await hasher.compare(prehash(password), hash, username);
    } catch (err) {
      logins.cancel(username, addressKey(request.ip));
      throw err;
    } finally {
      const left = checking.get(username)! - 1;
      if (left === 0) checking.delete(username);
      else checking.set(username, left);
    }
  };
  /** Ends an attempt begun with logins.begin: a failure, or a success that clears the pair, here and on every node. */
  const attempted = (username: string, address: string, good: boolean): void => {
    if (good) logins.succeeded(username, address);
    shared?.publish({ kind: good ? 'login.cleared' : 'login.failed', username, address });
  };

  app.post(
    '/v1/auth/register',
    {
      schema: {
        operationId: 'registerUser',
        tags: ['auth'],
        security: [],
        summary: 'Register a user',
        description: `Creates a user. Limited to ${REGISTER_LIMITS.perAddress} registrations per minute per client address, across the cluster.`,
        body: Credentials,
        response: { 201: Registered, ...problems(400, 409, 413, 429, 503, 504, 507) },
      },
    },
    async (request, reply) => {
      // Refused as the schema's refusals are, before it counts as a registration.
      assertWellFormed(request.body.password, 'password');
      // A hasher at its bound answers 503 before the registration counts: the client did nothing
      // wrong, and its retry must find its budget. No await between here and the hash's start.
      hasher.assertRoom(registering(request));
      const wait = registerByAddress.hit(addressKey(request.ip));
      // A refused one is not told: it costs nothing, and would crowd out the events that count.
      if (wait === 0) shared?.publish({ kind: 'register', address: addressKey(request.ip) });
      if (wait > 0) throw new ApiError('rate_limited', `too many registrations from this address; retry in ${wait} s`, wait);
      const { username, password } = request.body;
      const passwordHash = await hasher.hash(prehash(password), cost, registering(request));
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
        description: `401 alike for an unknown user and a wrong password. Failures only are counted, across the cluster (each node tells the others within moments): after ${LOGIN_LIMITS.free} failures for one username from one client address, that pair waits 1 s, then twice as long after each further failure (up to ${LOGIN_LIMITS.maxBackoffMs / 60_000} min; a success clears it), and an address waits after ${LOGIN_LIMITS.perAddress} failures in a minute: 429 with Retry-After. At most ${PASSWORD_CHECKS_PER_USER} password checks of one username are under way at once on a node: 429 beyond.`,
        body: Credentials,
        response: { 200: Token, ...problems(400, 401, 413, 429, 503, 504) },
      },
    },
    async (request) => {
      const { username, password } = request.body;
      const r = await beginAttempt(request, username, userPartition(username, deps.broker.partitions), 'failed logins');
      const hash = r.ok ? (r.value as { passwordHash: string }).passwordHash : dummyHash;
      const good = await matches(request, username, password, hash);
      // Counted as a failure from its start (begin): a success gives the count back.
      attempted(username, addressKey(request.ip), r.ok && good);
      if (!r.ok || !good) throw new ApiError('unauthorized', 'unknown user or wrong password');
      return token(username, (r.value as { epoch?: number }).epoch ?? 0);
    },
  );

  const token = (username: string, epoch: number) => ({ accessToken: app.jwt.sign({ sub: username, ep: epoch }), tokenType: 'Bearer' as const, expiresIn: ttl });

  /**
   * 503 unless partition `p` reads format 9 here. Its leader then does too: a replica applies the
   * raise only once every voter reads the format, and a build that does not halts the partition.
   */
  const requireLifecycle = (p: number): void => {
    const f = deps.broker.format(p);
    if (f < USER_LIFECYCLE) throw new UnavailableError('upgrading', `partition ${p} is in log format ${f}, below ${USER_LIFECYCLE}`, 503, false, 30);
  };

  /** The caller's partition, once it applies format 9's commands. */
  const lifecyclePartition = (username: string): number => {
    const p = userPartition(username, deps.broker.partitions);
    requireLifecycle(p);
    return p;
  };

  /**
   * The answer of a user command of format 9. A user gone (deleted through another node, or by this
   * very request before a retry: the only not_found these commands answer) is a 401, as its token is
   * from now on.
   */
  const mustLifecycle = (r: Result, user: string): Success => {
    if (r.ok) return r;
    if (r.code === 'not_found') {
      app.userChanged(user, null);
      throw new ApiError('unauthorized', 'the token names no existing user; log in again');
    }
    throw fromFailure(r);
  };

  /** The epoch the caller's token was signed in (tokens of builds before format 9 carry none: 0). */
  const tokenEpoch = (request: FastifyRequest): number => request.user.ep ?? 0;

  /**
   * Checks the caller's password as a login would, counted alike (a stolen token buys no guesses):
   * 403 when wrong, 429 past the limit.
   */
  const checkPassword = async (request: FastifyRequest, p: number, user: string, password: string): Promise<void> => {
    const r = await beginAttempt(request, user, p, 'failed password checks');
    if (!r.ok) {
      logins.cancel(user, addressKey(request.ip));
      app.userChanged(user, null);
      throw new ApiError('unauthorized', 'the token names no existing user; log in again');
    }
    const good = await matches(request, user, password, (r.value as { passwordHash: string }).passwordHash);
    attempted(user, addressKey(request.ip), good);
    if (!good) throw new ApiError('forbidden', 'the password is wrong');
  };

  app.post(
    '/v1/auth/logout',
    {
      onRequest: [app.authenticate],
      schema: {
        operationId: 'logout',
        tags: ['auth'],
        summary: 'Log out everywhere: revoke every token of the user',
        description:
          'Every token issued to the user so far stops working: at once on the node that answered, on the others within a minute. Log in again for a new one. A token already revoked revokes nothing (401). 503 while the cluster is being upgraded to a version that has it.',
        security: [{ bearerAuth: [] }],
        response: { 204: Type.Null({ description: 'Logged out.' }), ...problems(401, 503, 504) },
      },
    },
    async (request, reply) => {
      const user = actorOf(request);
      const p = lifecyclePartition(user);
      const done = mustLifecycle(await deps.broker.propose(p, user, { type: 'user.logout', epoch: tokenEpoch(request) }, undefined, ctxOf(request)), user);
      app.userChanged(user, (done.value as { epoch: number }).epoch);
      return reply.code(204).send(null);
    },
  );

  app.put(
    '/v1/auth/password',
    {
      onRequest: [app.authenticate],
      schema: {
        operationId: 'changePassword',
        tags: ['auth'],
        summary: "Change the user's password",
        description:
          'Needs a token and the current password (403 when wrong, counted like a failed login). Revokes every token the user held, as logout does, and answers a new one. Retried after an unknown outcome, it answers 401 if the first went through (its token is revoked): log in with the new password.',
        security: [{ bearerAuth: [] }],
        body: PasswordChange,
        response: { 200: Token, ...problems(400, 401, 403, 413, 429, 503, 504) },
      },
    },
    async (request) => {
      assertWellFormed(request.body.newPassword, 'newPassword');
      const user = actorOf(request);
      const p = lifecyclePartition(user);
      await checkPassword(request, p, user, request.body.password);
      const passwordHash = await hasher.hash(prehash(request.body.newPassword), cost, user);
      const done = mustLifecycle(await deps.broker.propose(p, user, { type: 'user.password', passwordHash, epoch: tokenEpoch(request) }, undefined, ctxOf(request)), user);
      const { epoch } = done.value as { epoch: number };
      app.userChanged(user, epoch);
      return token(user, epoch);
    },
  );

  app.delete(
    '/v1/auth/me',
    {
      onRequest: [app.authenticate],
      schema: {
        operationId: 'deleteCurrentUser',
        tags: ['auth'],
        summary: 'Delete the user',
        description:
          "Deletes the user the token names, with its password (403 when wrong, counted like a failed login): a stolen token alone cannot. The user must own no queue and no topic (409: delete them first). Its tokens stop working (at once on this node, within a minute on the others) and its name is never registered again. Its grants on other users' resources and its subscriptions of their topics stay until their owners remove them.",
        security: [{ bearerAuth: [] }],
        body: PasswordConfirmation,
        response: { 204: Type.Null({ description: 'Deleted.' }), ...problems(400, 401, 403, 409, 413, 429, 503, 504) },
      },
    },
    async (request, reply) => {
      const user = actorOf(request);
      const p = lifecyclePartition(user);
      await checkPassword(request, p, user, request.body.password);
      const partitions = Array.from({ length: deps.broker.partitions }, (_, q) => q);
      partitions.forEach(requireLifecycle);
      const counts = await Promise.all(
        partitions.map(async (q) => {
          const r = await deps.broker.query(q, { type: 'user.owned', user }, ctxOf(request));
          if (!r.ok) throw fromFailure(r);
          return r.value as { queues: number; topics: number };
        }),
      );
      const queues = counts.reduce((n, c) => n + c.queues, 0);
      const topics = counts.reduce((n, c) => n + c.topics, 0);
      if (queues + topics > 0) throw new ApiError('conflict', `the user owns ${queues} queue(s) and ${topics} topic(s): delete them first`);
      mustLifecycle(await deps.broker.propose(p, user, { type: 'user.delete', epoch: tokenEpoch(request) }, undefined, ctxOf(request)), user);
      app.userChanged(user, null);
      return reply.code(204).send(null);
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
