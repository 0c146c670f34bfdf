// Authentication: access tokens (JWT, HS256, with expiry) signed with the cluster's JWT secret, so a
// token from one node is good on all. A token is accepted only for a user that exists, was not
// created after the token was issued (a name registered again after the cluster's data was wiped does
// not inherit old tokens), and has not revoked it: a token carries the user's epoch when it was
// signed (`ep`), and logout, a password change or deleting the user raise the epoch (format 9). What
// a node knows of a user is looked up in the user's partition and kept for a minute (USER_RECHECK_MS),
// so a revocation holds on every node within a minute, and at once on the node that made it.
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
    /** `ep`: the user's epoch when the token was signed; absent from tokens of builds before format 9 (epoch 0). */
    payload: { sub: string; ep: number };
    user: { sub: string; iat: number; exp: number; ep?: number };
  }
}

declare module 'fastify' {
  interface FastifyInstance {
    /** A preHandler: 401 unless the request carries a valid token of an existing user. */
    authenticate(request: FastifyRequest, reply: FastifyReply): Promise<void>;
    /**
     * What a write on this node did to `username`: raised its epoch to `epoch`, or deleted it (null).
     * This node holds to it from now on, even where its replica has not applied the write yet.
     */
    userChanged(username: string, epoch: number | null): void;
  }
}

/** Clocks of the node that signed a token and of the partition that registered its user may differ. */
const CLOCK_SKEW_MS = 60_000;
const MAX_KNOWN_USERS = 100_000;
const MAX_VERIFIED_TOKENS = 10_000;
const VERIFIED_TTL_MS = 60_000;
/** How long a node trusts what it looked up of a user: a revocation elsewhere holds here within it. */
export const USER_RECHECK_MS = 60_000;
/**
 * How long a node trusts what its own replica said of a user when the leader did not answer: the
 * next request after it asks the leader again. Short, as the replica may lag; not zero, so that a
 * client's requests while the leader is unreachable (stale reads) do not each wait for the leader.
 */
const LOCAL_USER_MS = 10_000;
/** How long a look at a user waits for the leader's answer before the local replica's. */
const LEADER_LOOK_MS = 1_000;
/** Why `within` gave up. */
const LEADER_SLOW = new Error('the leader did not answer in time');

/** `promise`, or a rejection with LEADER_SLOW after `ms` (the promise goes on; its rejection is handled). */
function within<T>(promise: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(LEADER_SLOW), ms);
  });
  promise.catch(() => undefined);
  return Promise.race([promise, late]).finally(() => clearTimeout(timer));
}
/** How long a token is valid, unless the node's settings say otherwise (ApiDeps.tokenTtlSeconds). */
export const TOKEN_TTL_SECONDS = 3600;

async function auth(app: FastifyInstance, opts: { deps: ApiDeps }): Promise<void> {
  const { deps } = opts;
  const ttl = deps.tokenTtlSeconds ?? TOKEN_TTL_SECONDS;
  await app.register(fastifyJwt, {
    secret: deps.jwtSecret,
    sign: { algorithm: 'HS256', expiresIn: ttl },
    verify: { algorithms: ['HS256'] },
  });
  const now = deps.now ?? Date.now;
  const recheckMs = deps.userRecheckMs ?? USER_RECHECK_MS;
  /** What this node looked up of users, as of `until`: null for a user that does not exist. */
  const known = new Map<string, { user: { createdAt: number; epoch: number } | null; until: number }>();

  const userOf = async (request: FastifyRequest, username: string): Promise<{ createdAt: number; epoch: number } | null> => {
    const cached = known.get(username);
    if (cached !== undefined && now() < cached.until) return cached.user;
    const p = userPartition(username, deps.broker.partitions);
    const query = { type: 'user.get', username } as const;
    let r: Result;
    // Every look asks the leader, the first one too, so that a revocation holds within
    // USER_RECHECK_MS even where this replica lags. The first look used to read the local replica:
    // on a node restarted or behind, a token revoked long before (a logout, a password change, the
    // user deleted) passed for a minute, its writes included (review of stop 61). The local replica
    // answers when the leader cannot, or not within LEADER_LOOK_MS (a partition without a leader
    // holds a read for the router's whole wait for one, 5 s), and is trusted for LOCAL_USER_MS.
    let local = false;
    const asked = askLeader(request, username, p, query);
    try {
      r = await within(asked, LEADER_LOOK_MS);
    } catch (err) {
      r = localUser(p, query);
      if (r.ok) local = true;
      // Not on this replica (registered on another node a moment ago): the leader's answer it is.
      else if (err === LEADER_SLOW) r = await asked;
      else throw err;
    }
    if (!r.ok) {
      // Gone (deleted; never, for a signed token, otherwise): its tokens, good for an hour, do not
      // each ask the leader again.
      remember(username, null);
      return null;
    }
    const u = r.value as { createdAt: string; epoch?: number };
    // A replica that has not yet applied a revocation this node made does not undo it.
    const user = withChanges(username, { createdAt: Date.parse(u.createdAt), epoch: Math.max(u.epoch ?? 0, cached?.user?.epoch ?? 0) });
    remember(username, user, local ? Math.min(recheckMs, LOCAL_USER_MS) : recheckMs);
    return user;
  };
  /** The leader's answers about users in flight: requests of one user looking at once share one. */
  const asking = new Map<string, Promise<Result>>();
  const askLeader = (request: FastifyRequest, username: string, p: number, query: { type: 'user.get'; username: string }): Promise<Result> => {
    let asked = asking.get(username);
    if (asked === undefined) {
      asked = deps.broker.query(p, query, ctxOf(request));
      asking.set(username, asked);
      const done = (): void => void asking.delete(username);
      asked.then(done, done);
    }
    return asked;
  };
  const remember = (username: string, user: { createdAt: number; epoch: number } | null, forMs = recheckMs): void => {
    if (known.size >= MAX_KNOWN_USERS) known.clear();
    known.set(username, { user, until: now() + forMs });
  };
  /**
   * What writes on this node did to users (userChanged), for recheckMs: held over every look at a
   * user that answers later. A look begun before a logout or a deletion and answered after it put
   * back what it read, and the revoked token passed again on the node that answered the revocation,
   * for up to a minute (review of 2026-12-07). After recheckMs the leader has long applied the write.
   */
  const changes = new Map<string, { epoch: number | null; until: number }>();
  const withChanges = (username: string, user: { createdAt: number; epoch: number } | null): { createdAt: number; epoch: number } | null => {
    const c = changes.get(username);
    if (c === undefined) return user;
    if (now() >= c.until) {
      changes.delete(username);
      return user;
    }
    return c.epoch === null || user === null ? null : { createdAt: user.createdAt, epoch: Math.max(user.epoch, c.epoch) };
  };
  app.decorate('userChanged', (username: string, epoch: number | null) => {
    if (changes.size >= MAX_KNOWN_USERS) for (const [name, c] of changes) if (now() >= c.until) changes.delete(name);
    if (changes.size >= MAX_KNOWN_USERS) changes.delete(changes.keys().next().value!);
    const before = changes.get(username);
    const kept = before !== undefined && now() < before.until ? before.epoch : 0;
    changes.set(username, { epoch: epoch === null || kept === null ? null : Math.max(epoch, kept), until: now() + recheckMs });
    const user = known.get(username)?.user;
    if (epoch === null) remember(username, null);
    else if (user != null) remember(username, { createdAt: user.createdAt, epoch: Math.max(user.epoch, epoch) });
    else known.delete(username);
  });

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
  const verified = new Map<string, { user: FastifyRequest['user']; until: number }>();

  app.decorate('authenticate', async (request: FastifyRequest) => {
    const header = request.headers.authorization;
    if (header === undefined) throw new ApiError('unauthorized', 'a bearer token is required (Authorization: Bearer <token>)');
    const at = now();
    const hit = verified.get(header);
    if (hit !== undefined && at < hit.until) {
      request.user = hit.user;
    } else {
      if (hit !== undefined) verified.delete(header);
      try {
        await request.jwtVerify();
      } catch {
        throw new ApiError('unauthorized', 'the bearer token is invalid or expired; log in again');
      }
      const { sub, iat, exp, ep } = request.user;
      // Every token this cluster issues says when it was issued and when it ends: one without (made
      // with the secret elsewhere) never expired, and one whose iat is no number passed the check
      // against its user's creation (review of 2026-12-07).
      if (!Number.isFinite(iat) || !Number.isFinite(exp)) throw new ApiError('unauthorized', 'the bearer token is invalid or expired; log in again');
      // Full: the oldest entry goes (a Map keeps insertion order), not all of them, so that a node
      // serving more tokens than it keeps does not check every one again at once.
      if (verified.size >= MAX_VERIFIED_TOKENS) verified.delete(verified.keys().next().value!);
      verified.set(header, { user: { sub, iat, exp, ...(ep === undefined ? {} : { ep }) }, until: Math.min(at + VERIFIED_TTL_MS, exp * 1000) });
    }
    const { sub, iat, ep } = request.user;
    const user = typeof sub === 'string' ? await userOf(request, sub) : null;
    if (user === null || iat * 1000 + CLOCK_SKEW_MS < user.createdAt) throw new ApiError('unauthorized', 'the token names no existing user; log in again');
    if ((typeof ep === 'number' ? ep : 0) < user.epoch) throw new ApiError('unauthorized', 'the token was revoked (logout or password change); log in again');
  });
}

export const authPlugin = fp(auth, { name: 'mom-auth', fastify: '5.x' });
