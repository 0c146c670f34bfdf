// Every problem+json a node answers, on the public API and on the routes between nodes alike, from
// one registry: a code, its HTTP status and its title (RFC 9457). The public codes are the API's
// contract (docs/api.md#errors, the OpenAPI schema ProblemCode); the internal ones only peers see.
import type { FastifyReply } from 'fastify';

export const Problems = {
  validation_failed: { status: 400, title: 'Bad Request' },
  unauthorized: { status: 401, title: 'Unauthorized' },
  forbidden: { status: 403, title: 'Forbidden' },
  not_found: { status: 404, title: 'Not Found' },
  conflict: { status: 409, title: 'Conflict' },
  payload_too_large: { status: 413, title: 'Content Too Large' },
  rate_limited: { status: 429, title: 'Too Many Requests' },
  internal: { status: 500, title: 'Internal Server Error' },
  unavailable: { status: 503, title: 'Service Unavailable' },
  timeout: { status: 504, title: 'Gateway Timeout' },
  /** A send, publish or creation while a node is short of disk space (src/cluster/disk-space.ts). */
  insufficient_storage: { status: 507, title: 'Insufficient Storage' },
} as const;
export type ProblemCode = keyof typeof Problems;

/** Codes only the routes between nodes answer (internal-routes.ts), never a client. */
export const InternalProblems = {
  unsupported_media_type: { status: 415, title: 'Unsupported Media Type' },
  /** A Raft batch addressed to another node. */
  misdirected: { status: 421, title: 'Misdirected Request' },
  /** A system command forwarded to a node that does not lead the partition. */
  not_leader: { status: 421, title: 'Misdirected Request' },
} as const;
export type InternalProblemCode = keyof typeof InternalProblems;

export const PROBLEM_TYPE_BASE = 'https://mom.invalid/problems/';

/**
 * The registry's code for a client error raised with `status` (a body too large, a bad media type,
 * ...): the first code of that status; any other 4xx is validation_failed, and answered 400.
 */
export function clientErrorCode(status: number): ProblemCode | InternalProblemCode {
  for (const [code, p] of Object.entries({ ...Problems, ...InternalProblems })) if (p.status === status && status < 500) return code as ProblemCode | InternalProblemCode;
  return 'validation_failed';
}

/** A status the HTTP parser answers before any route runs, as validation_failed (docs/api.md#errors). */
export const HEADERS_TOO_LARGE = { status: 431, title: 'Request Header Fields Too Large' } as const;

/**
 * The body of a problem+json answer of `code`, `detail` for people: its status and title from the
 * registry, or `as` (HEADERS_TOO_LARGE) for what the HTTP parser refuses.
 */
export function problemBody(code: ProblemCode | InternalProblemCode, detail: string, as?: { status: number; title: string }): { type: string; title: string; status: number; code: string; detail: string } {
  const { status, title } = as ?? (code in Problems ? Problems[code as ProblemCode] : InternalProblems[code as InternalProblemCode]);
  return { type: `${PROBLEM_TYPE_BASE}${code}`, title, status, code, detail };
}

/** Answers `code` as problem+json (problemBody). */
export function sendProblem(reply: FastifyReply, code: ProblemCode | InternalProblemCode, detail: string, retryAfterSeconds?: number): FastifyReply {
  const body = problemBody(code, detail);
  if (retryAfterSeconds !== undefined) reply.header('retry-after', String(retryAfterSeconds));
  return reply.code(body.status).type('application/problem+json').send(body);
}
