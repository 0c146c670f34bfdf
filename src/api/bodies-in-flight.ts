// Request bodies one client may have arriving, or waiting for their answer, at once on a node. A
// body is held in memory until its request is answered, up to the route's limit (8 MiB for batches),
// and may take up to BODY_TIMEOUT_MS to arrive: nothing else bounded how many one user's connections
// held at once, so one user could fill a node's memory with batches trickling in (stop 57's doubt).
// A body counts for the length it declares (Content-Length), or for its route's limit when it
// declares none (chunked), from the moment its request is authenticated until its answer is sent or
// its connection closes. Past the budget, 429 with Retry-After 1, before the body is read.
import type { FastifyReply, FastifyRequest, RequestPayload } from 'fastify';
import { ApiError } from './errors.js';
import { addressKey } from './rate-limit.js';

/** Bytes of bodies one client may have in flight on a node: eight full batches, or a thousand of 64 KiB. */
export const BODY_BYTES_PER_CLIENT = 64 * 1024 * 1024;

/**
 * The preParsing hook that holds each client of the /v1 routes to `limit` bytes of bodies in flight.
 * The client is the authenticated user, else (registration, login) the address the login limits
 * count. A callback, not an async function: no promise for each of the requests without a body.
 */
export function bodiesInFlight(limit = BODY_BYTES_PER_CLIENT): (request: FastifyRequest, reply: FastifyReply, payload: RequestPayload, done: (err: Error | null, payload?: RequestPayload) => void) => void {
  const held = new Map<string, number>();
  return (request, reply, payload, done) => {
    const bytes = declaredBytes(request);
    if (bytes === 0 || !request.url.startsWith('/v1/')) {
      done(null, payload);
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
    reply.raw.once('close', () => {
      const left = held.get(client)! - bytes;
      if (left <= 0) held.delete(client);
      else held.set(client, left);
    });
    done(null, payload);
  };
}

/** The bytes `request`'s body counts for: its Content-Length up to its route's limit, that limit when chunked, 0 for none. */
function declaredBytes(request: FastifyRequest): number {
  const h = request.headers;
  const max = request.routeOptions.bodyLimit ?? 0;
  if (h['transfer-encoding'] !== undefined) return max;
  const length = Number(h['content-length'] ?? 0);
  return Number.isFinite(length) && length > 0 ? Math.min(length, max) : 0;
}
