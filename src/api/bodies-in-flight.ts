// Request bodies one client may have arriving, or waiting for their answer, at once on a node. A
// body is held in memory until its request is answered, up to the route's limit (8 MiB for batches),
// and may take up to BODY_TIMEOUT_MS to arrive: nothing else bounded how many one user's connections
// held at once, so one user could fill a node's memory with batches trickling in (stop 57's doubt).
// A body counts for the length it declares (Content-Length), or for its route's limit when it
// declares none (chunked), from the moment its request is authenticated until its answer is sent or
// its connection closes. Past the budget, 429 with Retry-After 1, before the body is read.
import type { Socket } from 'node:net';
import type { FastifyReply, FastifyRequest, RequestPayload } from 'fastify';
import { ApiError } from './errors.js';
import { addressKey } from './rate-limit.js';

/** Bytes of bodies one client may have in flight on a node: eight full batches, or a thousand of 64 KiB. */
export const BODY_BYTES_PER_CLIENT = 64 * 1024 * 1024;

/** A body counted against its client until its answer is sent or its connection closes. */
export interface BodyHeld {
  readonly client: string;
  readonly bytes: number;
  released: boolean;
}

declare module 'fastify' {
  interface FastifyRequest {
    /** The bytes of this request's body counted against its client (bodiesInFlight), or null. */
    bodyHeld: BodyHeld | null;
  }
}

/**
 * The hook (preParsing, for each /v1 route: app.ts adds it to them as they are made, by the route
 * and not the URL, which a client may percent-encode) that holds each client to `limit` bytes of
 * bodies in flight, and `answered`, for the answer of every request. The client is the authenticated user,
 * else (registration, login) the address the login limits count. Per request it sets a field and
 * a set's entry, and adds no hook for the answer: in alternated runs of `bench:api-layer`, one
 * more hook for every answer (onResponse), or the body's stream handed back to Fastify from this
 * one (a property it then sets on the request), cost a single send's HTTP work 8-13 µs, noisy as
 * those runs are. A body's bytes come back when its answer is sent (answered: from the log
 * controller, which Fastify calls for every answer) or, for an answer that never is, when its
 * connection closes (one listener per connection).
 */
export function bodiesInFlight(limit = BODY_BYTES_PER_CLIENT): {
  preParsing(request: FastifyRequest, reply: FastifyReply, payload: RequestPayload, done: (err: Error | null, payload?: RequestPayload) => void): void;
  answered(request: FastifyRequest): void;
} {
  const held = new Map<string, number>();
  // The reservation rides on its request (bodyHeld, decorated on every request by app.ts) and in
  // its connection's set. Kept in a map by request instead, it cost each node about 25 MB more
  // resident and more CPU under single sends (`npm run bench -- --only send-1`, alternated): V8
  // gives an object used as a map's key an identity hash, stored beside its properties.
  const bySocket = new Map<Socket, Set<BodyHeld>>();
  const release = (h: BodyHeld): void => {
    if (h.released) return;
    h.released = true;
    const left = held.get(h.client)! - h.bytes;
    if (left <= 0) held.delete(h.client);
    else held.set(h.client, left);
  };
  const preParsing = (request: FastifyRequest, _reply: FastifyReply, _payload: RequestPayload, done: (err: Error | null, payload?: RequestPayload) => void): void => {
    const bytes = declaredBytes(request);
    // A client that left while its request was authenticated: its socket's close came before this
    // hook, and no answer will be sent, so nothing would give the bytes back (review of stop 59).
    const socket = request.raw.socket;
    if (bytes === 0 || socket.destroyed) {
      done(null);
      return;
    }
    const sub = (request.user as { sub?: unknown } | null)?.sub;
    const client = typeof sub === 'string' ? `user ${sub}` : `address ${addressKey(request.ip)}`;
    const before = held.get(client) ?? 0;
    // One body always fits: a route's limit is below the budget.
    if (before > 0 && before + bytes > limit) {
      done(new ApiError('rate_limited', `this client's request bodies in flight on this node would pass ${limit / (1024 * 1024)} MiB; retry in 1 s`, 1));
      return;
    }
    held.set(client, before + bytes);
    const h: BodyHeld = { client, bytes, released: false };
    request.bodyHeld = h;
    let pending = bySocket.get(socket);
    if (pending === undefined) {
      const mine = (pending = new Set());
      bySocket.set(socket, mine);
      socket.once('close', () => {
        bySocket.delete(socket);
        for (const x of mine) release(x);
      });
    }
    pending.add(h);
    done(null);
  };
  const answered = (request: FastifyRequest): void => {
    const h = request.bodyHeld;
    if (h === null) return;
    release(h);
    bySocket.get(request.raw.socket)?.delete(h);
  };
  return { preParsing, answered };
}

/** No route takes less (app.ts, DEFAULT_BODY_LIMIT): a body up to this needs no look at its route's limit. */
const ROUTE_LIMIT_FLOOR = 64 * 1024;

/**
 * The bytes `request`'s body counts for: its Content-Length, its route's limit when chunked, 0 for
 * none, and 0 for a length past its route's limit, which Fastify answers 413 without reading the
 * body (counted, it was a 429 for a request that can never pass, or held the client's budget until
 * that 413). The route's limit is read only past the smallest any route has: Fastify builds an
 * object of the route's options at each look.
 */
function declaredBytes(request: FastifyRequest): number {
  const h = request.headers;
  if (h['transfer-encoding'] !== undefined) return request.routeOptions.bodyLimit ?? 0;
  const declared = h['content-length'];
  if (declared === undefined) return 0;
  const length = Number(declared);
  if (!Number.isFinite(length) || length <= 0) return 0;
  return length <= ROUTE_LIMIT_FLOOR || length <= (request.routeOptions.bodyLimit ?? 0) ? length : 0;
}
