// Every error the API answers, from the one registry of problems (src/cluster/problems.ts): a code,
// its HTTP status and title. The handler below turns anything thrown in a route (our ApiError,
// Fastify's validation and body errors, the router's UnavailableError, a broker Failure) into an
// RFC 9457 problem+json, and masks every 5xx.
import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify';
import { UnavailableError } from '../cluster/errors.js';
import { Problems, sendProblem, type ProblemCode } from '../cluster/problems.js';
import type { Failure } from '../store/broker/index.js';
import { DISK_SHORT_RETRY_SECONDS } from '../cluster/disk-space.js';

export class ApiError extends Error {
  override name = 'ApiError';
  constructor(
    readonly code: ProblemCode,
    detail: string,
    readonly retryAfterSeconds?: number,
  ) {
    super(detail);
  }

  get status(): number {
    return Problems[this.code].status;
  }
}

/** A broker command's refusal as the API's error (the codes are shared). */
export function fromFailure(f: Failure): ApiError {
  return new ApiError(f.code, f.detail, f.code === 'insufficient_storage' ? DISK_SHORT_RETRY_SECONDS : undefined);
}

/** Fastify's own client errors, by code, with the detail a client can act on. */
function fastifyClientError(err: FastifyError): { code: ProblemCode; detail: string } | null {
  if (err.validation !== undefined) return { code: 'validation_failed', detail: err.message };
  switch (err.code) {
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return { code: 'payload_too_large', detail: 'the request body is larger than this route accepts' };
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
      return { code: 'validation_failed', detail: 'the body must be application/json' };
    case 'FST_ERR_CTP_EMPTY_JSON_BODY':
      return { code: 'validation_failed', detail: 'the JSON body is empty' };
    case 'FST_ERR_CTP_INVALID_JSON_BODY':
      return { code: 'validation_failed', detail: 'the body is not valid JSON' };
    default:
      break;
  }
  if (err.statusCode === 401) return { code: 'unauthorized', detail: err.message };
  if (err.statusCode === 413) return { code: 'payload_too_large', detail: err.message };
  if (err.statusCode === 404) return { code: 'not_found', detail: err.message };
  if (err instanceof SyntaxError || (err.statusCode !== undefined && err.statusCode >= 400 && err.statusCode < 500)) {
    return { code: 'validation_failed', detail: err instanceof SyntaxError ? 'the body is not valid JSON' : err.message };
  }
  return null;
}

export function errorHandler(err: FastifyError | Error, request: FastifyRequest, reply: FastifyReply): FastifyReply {
  if (err instanceof ApiError) return sendProblem(reply, err.code, err.message, err.retryAfterSeconds);
  if (err instanceof UnavailableError) {
    // What happened inside the cluster (node ids, error codes) is for the log, with the request id.
    request.log.warn({ detail: err.message }, 'request not served');
    return sendProblem(reply, err.status === 504 ? 'timeout' : 'unavailable', err.publicDetail, err.retryAfterSeconds);
  }
  const client = fastifyClientError(err as FastifyError);
  if (client !== null) return sendProblem(reply, client.code, client.detail);
  request.log.error({ err }, 'request failed');
  return sendProblem(reply, 'internal', 'internal error; the request id is in the x-request-id header');
}
