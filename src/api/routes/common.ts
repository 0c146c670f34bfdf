// What the routes share: error responses in the OpenAPI document, and the security requirement.
import type { FastifyInstance } from 'fastify';

const WHEN: Record<number, string> = {
  400: 'validation_failed: malformed JSON, a wrong type, an unknown field or a value out of its limits.',
  401: 'unauthorized: no token, or an invalid or expired one.',
  403: 'forbidden: the resource is visible to the caller but the action is not theirs to take.',
  404: 'not_found: no such resource, or one the caller may not see.',
  409: 'conflict: the name exists, or the Idempotency-Key was used for another request.',
  413: 'payload_too_large: a message body, a batch or the request is larger than its limit.',
  429: 'rate_limited: retry after Retry-After seconds.',
  503: 'unavailable: the partition has no reachable leader, or the write\'s outcome is unknown; retry after Retry-After seconds (with the same Idempotency-Key for a write).',
  504: 'timeout: the write did not apply in time; its outcome is unknown: retry with the same Idempotency-Key.',
  507: 'insufficient_storage: a node of the cluster is short of disk space, and sends, publishes, creations and receives with a new Idempotency-Key are refused until space is freed; nothing was written (a retry with the Idempotency-Key of a write that went through is answered from its record). Retry after Retry-After seconds.',
};

/** Response entries of the given error statuses, as problem+json. */
export function problems(...statuses: (keyof typeof WHEN)[]): Record<number, unknown> {
  const out: Record<number, unknown> = {};
  for (const s of statuses) {
    out[s] = { description: WHEN[s], content: { 'application/problem+json': { schema: { $ref: 'Problem#' } } } };
  }
  return out;
}

/** Errors every authenticated route may answer. */
export const AUTHED = [400, 401, 503] as const;

export const bearer = [{ bearerAuth: [] }];

export type App = FastifyInstance;
