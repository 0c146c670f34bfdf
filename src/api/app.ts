// buildApp(deps): the REST API of docs/api.md as a Fastify app, plus the inter-node routes when
// given. It never listens: src/server.ts does, and tests use inject() or listen themselves.
import { randomUUID } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { Socket } from 'node:net';
import fastifySwagger from '@fastify/swagger';
import fastifySwaggerUi from '@fastify/swagger-ui';
import Ajv, { type Options as AjvOptions } from 'ajv';
import addFormats from 'ajv-formats';
import Fastify, { LogController, type FastifyInstance, type FastifyReply, type FastifyRequest, type RouteOptions } from 'fastify';
import { pino } from 'pino';
import { UNBOUNDED_BODY, internalRoutes } from '../cluster/internal-routes.js';
import { authPlugin } from './auth.js';
import type { ApiDeps } from './deps.js';
import { HEADERS_TOO_LARGE, problemBody, sendProblem } from '../cluster/problems.js';
import { ApiError, errorHandler } from './errors.js';
import { metricsPlugin } from './metrics.js';
import { authRoutes } from './routes/auth.js';
import { opsRoutes } from './routes/ops.js';
import { queueRoutes } from './routes/queues.js';
import { topicRoutes } from './routes/topics.js';
import { bodiesInFlight } from './bodies-in-flight.js';
import { finishDocument } from './openapi.js';
import { Problem, SCHEMA_NAME } from './schemas/common.js';

/** Body limit of routes that take no messages. */
export const DEFAULT_BODY_LIMIT = 64 * 1024;
/**
 * A request's body must arrive within this long of its headers. Fastify waits for a body without end
 * (its requestTimeout is 0, and Node's own cannot spare the Raft streams, requests that last a
 * minute): one user's connections each holding most of an 8 MiB batch, or anyone's most of a 64 KiB
 * registration, kept that memory and a file descriptor for as long as they liked.
 */
export const BODY_TIMEOUT_MS = 60_000;
export const REQUEST_TIMEOUT = { status: 408, title: 'Request Timeout' } as const;
export const API_VERSION = '1.8.0';

const REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;
const strictUtf8 = new TextDecoder('utf-8', { fatal: true });

/**
 * Two validators: bodies are taken as sent (a string where an integer belongs is a 400, never
 * coerced; an unknown field is a 400, never dropped), while path, query and headers, which are text
 * by nature, are coerced to their schema's types.
 */
function validatorCompiler(): (route: { schema: object; httpPart?: string }) => (data: unknown) => boolean | { error?: Error; value?: unknown } {
  const common: AjvOptions = { strict: false, allErrors: false, useDefaults: true, removeAdditional: false };
  const body = new Ajv.default({ ...common, coerceTypes: false });
  const text = new Ajv.default({ ...common, coerceTypes: 'array' });
  addFormats.default(body);
  addFormats.default(text);
  for (const ajv of [body, text]) ajv.addSchema(Problem);
  return ({ schema, httpPart }) => (httpPart === 'body' ? body : text).compile(schema) as unknown as (data: unknown) => boolean;
}

/** One validation error as a client can act on it: where, and what is wrong ("body.bogus: unknown field"). */
function describeValidation(errors: { instancePath: string; message?: string; keyword: string; params: Record<string, unknown> }[], dataVar: string): string {
  const e = errors[0];
  if (e === undefined) return `${dataVar} is invalid`;
  const where = `${dataVar}${e.instancePath.replaceAll('/', '.')}`;
  if (e.keyword === 'additionalProperties') return `${where}.${String(e.params.additionalProperty)}: unknown field`;
  if (e.keyword === 'required') return `${where}.${String(e.params.missingProperty)}: required`;
  return `${where}: ${e.message ?? 'invalid'}`;
}

/**
 * Requests are logged one line each, at debug, not at fastify's info (a line when a request arrives
 * and one when it is answered): those two lines cost 18-31% more CPU per single send (bench/README.md).
 * Failures are logged at warn or error where they are answered (errors.ts), and a reply that errors
 * at error, as fastify does.
 */
class RequestLog extends LogController {
  constructor(
    /** Told of every answer sent: Fastify calls this controller for each, hooks or not. */
    private readonly answered: (request: FastifyRequest) => void,
  ) {
    super();
  }

  override incomingRequest(): void {}

  override requestCompleted(error: Error | null | undefined, request: FastifyRequest, reply: FastifyReply): void {
    this.answered(request);
    if (error) reply.log.error({ res: reply, err: error, responseTime: reply.elapsedTime }, 'request errored');
    else if (reply.log.level === 'debug' || reply.log.level === 'trace') reply.log.debug({ req: request, res: reply, responseTime: reply.elapsedTime }, 'request completed');
  }
}

export async function buildApp(deps: ApiDeps, opts: { processMetrics?: boolean } = {}): Promise<FastifyInstance> {
  // Request bodies in flight per client (bodies-in-flight.ts): counted by a hook, given back as answers leave.
  const bodies = bodiesInFlight(deps.bodyBytesPerClient);
  const app = Fastify({
    loggerInstance: deps.logger ?? pino({ level: 'silent' }),
    logController: new RequestLog(bodies.answered),
    bodyLimit: DEFAULT_BODY_LIMIT,
    requestIdHeader: false,
    // A caller's (or a forwarding node's) X-Request-Id is kept when it is sane, so one request has one
    // id in every node's log.
    genReqId: (req) => {
      const id = req.headers['x-request-id'];
      return typeof id === 'string' && REQUEST_ID.test(id) ? id : randomUUID();
    },
    routerOptions: { maxParamLength: 256 },
    // Per-address limits count the client, not the load balancer, when the balancer is trusted.
    ...(deps.trustProxy !== undefined && deps.trustProxy.length > 0 ? { trustProxy: [...deps.trustProxy] } : {}),
    schemaErrorFormatter: (errors, dataVar) => new Error(describeValidation(errors, dataVar)),
    // The router's own refusals (a malformed %-escape, a path segment over 256 characters) are problems too.
    frameworkErrors: (err, _request, reply) => {
      sendProblem(reply, 'validation_failed', err.code === 'FST_ERR_MAX_PARAM_LENGTH' ? 'a path segment is longer than 256 characters' : 'the URL is malformed');
    },
    // What Node's HTTP parser refuses never reaches a route: answer it as a problem on the socket.
    clientErrorHandler: (err, socket) => {
      const overflow = (err as { code?: string }).code === 'HPE_HEADER_OVERFLOW';
      const problem = problemBody('validation_failed', 'the HTTP request is malformed', overflow ? HEADERS_TOO_LARGE : undefined);
      const body = JSON.stringify(problem);
      if (socket.writable) {
        socket.end(`HTTP/1.1 ${problem.status} ${problem.title}\r\nContent-Type: application/problem+json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`);
      } else {
        socket.destroy();
      }
    },
    ...(deps.https === undefined ? {} : { https: { cert: deps.https.cert, key: deps.https.key, ca: deps.https.ca, requestCert: true, rejectUnauthorized: false } }),
  });
  app.setValidatorCompiler(validatorCompiler());
  // Before any route's hooks (the token check among them): a client without a token is held to it too.
  // Each connection's latest request with a body, and when its headers came; a sweep every few
  // seconds closes those whose body is still arriving past the deadline. A timer and listeners per
  // request cost 8-10 µs of a single send's HTTP work (bench:api-layer); this costs a Map.set.
  const bodyTimeoutMs = deps.bodyTimeoutMs ?? BODY_TIMEOUT_MS;
  const arriving = new Map<Socket, { raw: IncomingMessage; res: ServerResponse; since: number }>();
  // On the server's 'request' event, ahead of Fastify's own listener: every request, also those
  // answered before any hook runs (a malformed URL, a path segment too long: frameworkErrors).
  app.server.prependListener('request', (raw: IncomingMessage, res: ServerResponse) => {
    const h = raw.headers;
    const bodiless = h['transfer-encoding'] === undefined && (h['content-length'] === undefined || h['content-length'] === '0');
    const socket = raw.socket;
    // A Raft stream's body lasts as long as the stream: its handler marks it (UNBOUNDED_BODY) once
    // the caller is known to be a peer. Not by its URL, which anyone without the secret may ask for.
    if (bodiless || raw.complete || !(socket instanceof Socket)) return;
    if (!arriving.has(socket)) socket.once('close', () => arriving.delete(socket));
    arriving.set(socket, { raw, res, since: performance.now() });
  });
  const sweep = setInterval(
    () => {
      const now = performance.now();
      for (const [socket, r] of arriving) {
        // An answer sent before the body ended (a 401) does not end the deadline: the rest of the
        // body is still read, and still held to it.
        if (r.raw.complete || now - r.since < bodyTimeoutMs || (r.raw as { [UNBOUNDED_BODY]?: true })[UNBOUNDED_BODY] === true) continue;
        arriving.delete(socket);
        if (!socket.writable || r.res.headersSent) {
          socket.destroy();
          continue;
        }
        const body = JSON.stringify(problemBody('validation_failed', `the request body did not arrive within ${Math.round(bodyTimeoutMs / 1000)} s of its headers`, REQUEST_TIMEOUT));
        socket.end(`HTTP/1.1 ${REQUEST_TIMEOUT.status} ${REQUEST_TIMEOUT.title}\r\nContent-Type: application/problem+json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`);
        socket.destroySoon();
      }
    },
    Math.min(5_000, Math.max(10, bodyTimeoutMs / 4)),
  ).unref();
  app.addHook('onClose', () => clearInterval(sweep));
  // JSON bodies must be UTF-8: bytes that are not would be replaced by U+FFFD and stored as other text.
  const parseJson = app.getDefaultJsonParser('error', 'error');
  app.removeContentTypeParser('application/json');
  app.addContentTypeParser('application/json', { parseAs: 'buffer' }, (request, body, done) => {
    // Another charset would be read as UTF-8 all the same: bytes meaning "Ã©" in ISO-8859-1 stored as
    // "é" (review of 2026-12-07).
    const charset = charsetOf(request.headers['content-type']);
    if (charset !== null && charset !== 'utf-8' && charset !== 'utf8') {
      done(new ApiError('validation_failed', `JSON bodies are UTF-8: charset=${charset} is refused`), undefined);
      return;
    }
    // Nothing under application/json is no body, as it is under any other type: a route that takes
    // none takes it, and one that needs one says so (review of 2026-12-07).
    if ((body as Buffer).byteLength === 0) {
      done(null, undefined);
      return;
    }
    let text: string;
    try {
      text = strictUtf8.decode(body as Buffer);
    } catch {
      done(new ApiError('validation_failed', 'the body is not valid UTF-8'), undefined);
      return;
    }
    parseJson(request, text, (err, value) => {
      // Fastify's parser says only "not valid JSON" for both; text that is JSON to JSON.parse was
      // refused for the prototype's names (its message was matched here before, and never matched).
      if (err !== null && isJson(text)) {
        done(new ApiError('validation_failed', 'the names __proto__ and constructor.prototype are refused in JSON bodies'), undefined);
        return;
      }
      done(err, value);
    });
  });
  app.addSchema(Problem);
  app.setErrorHandler(errorHandler);
  // A /v1 route without a body schema (a delete, purge, logout) takes no body: one with anything in
  // it is refused, not dropped, or a client's condition in it ({"ifEmpty": true}) would be ignored
  // and the write done anyway. An empty object says nothing and passes, as no body does.
  app.addHook('onRoute', (route) => {
    if (!route.url.startsWith('/v1/') || route.schema?.body !== undefined) return;
    const refuseBody = async (request: FastifyRequest): Promise<void> => {
      const b = request.body;
      // An empty body of another type (fetch's body '' is text/plain) says nothing either.
      if (b === undefined || b === '' || (typeof b === 'object' && b !== null && !Array.isArray(b) && Object.keys(b).length === 0)) return;
      throw new ApiError('validation_failed', 'this route takes no body');
    };
    runFirst(route, refuseBody);
  });
  // Query strings are as strict as bodies (review of 2026-12-07): a /v1 route without query
  // parameters refuses any (it dropped them: /v1/auth/me?x=1 answered 200), and an integer parameter
  // is decimal digits only, where Ajv's coercion of text took ?limit=0x10 for 16 and ?limit=%201 for 1.
  app.addHook('onRoute', (route) => {
    if (!route.url.startsWith('/v1/') || route.schema === undefined) return;
    if (route.schema.querystring === undefined) route.schema = { ...route.schema, querystring: NO_QUERY };
    const properties = (route.schema.querystring as { properties?: Record<string, { type?: unknown }> }).properties ?? {};
    const integers = Object.keys(properties).filter((k) => properties[k]!.type === 'integer');
    if (integers.length === 0) return;
    const decimalOnly = async (request: FastifyRequest): Promise<void> => {
      const query = request.query as Record<string, unknown>;
      for (const k of integers) {
        const v = query[k];
        if (v !== undefined && !(typeof v === 'string' && /^-?[0-9]{1,16}$/.test(v))) throw new ApiError('validation_failed', `querystring/${k}: must be an integer in decimal digits`);
      }
    };
    runFirst(route, decimalOnly);
  });
  app.setNotFoundHandler((request, reply) => sendProblem(reply, 'not_found', `no route ${request.method} ${request.url.split('?')[0]}`));
  app.decorateRequest('bodyHeld', null);
  // On the routes, not by the URL: the router decodes a path before it matches it, so /%761/... is
  // a /v1 route too (review of stop 59).
  app.addHook('onRoute', (route) => {
    if (!route.url.startsWith('/v1/')) return;
    const own = route.preParsing;
    route.preParsing = [...(own === undefined ? [] : Array.isArray(own) ? own : [own]), bodies.preParsing];
  });
  app.addHook('onSend', async (request, reply) => {
    reply.header('x-request-id', String(request.id));
  });

  await app.register(fastifySwagger, {
    openapi: {
      openapi: '3.1.0',
      info: {
        title: 'mom: a replicated message broker',
        version: API_VERSION,
        description:
          'Queues (competing consumers) and topics (publish to many subscriptions) on a three-node Raft cluster. Any node serves any request. A 2xx on a write means the change is committed on a majority of nodes, fsynced there, and applied. Errors are application/problem+json.',
      },
      components: {
        securitySchemes: {
          bearerAuth: { type: 'http', scheme: 'bearer', bearerFormat: 'JWT', description: 'The accessToken of POST /v1/auth/login.' },
          metricsToken: { type: 'http', scheme: 'bearer', description: 'The metrics token of a node started with --metrics-token (MOM_METRICS_TOKEN); /metrics needs none otherwise.' },
        },
      },
      tags: [
        { name: 'auth', description: 'Users and access tokens' },
        { name: 'queues', description: 'Queues, grants and messages' },
        { name: 'topics', description: 'Topics, grants, publishing and subscriptions' },
        { name: 'operations', description: 'Health, readiness, cluster state and metrics' },
      ],
    },
    // Swagger UI's own routes are hidden by its plugin; the contract lists /docs, so say it here.
    transformObject: (documentObject) => {
      if (!('openapiObject' in documentObject)) return documentObject.swaggerObject;
      const doc = documentObject.openapiObject;
      const docs = {
        get: {
          operationId: 'getSwaggerUi',
          tags: ['operations'],
          security: [],
          summary: 'Swagger UI: browse this document and try the calls (Authorize with a token first)',
          responses: { 200: { description: 'The Swagger UI page.', content: { 'text/html': { schema: { type: 'string' } } } } },
        },
      };
      return finishDocument({ ...doc, paths: { ...doc.paths, '/docs': docs } } as Parameters<typeof finishDocument>[0]);
    },
    refResolver: { buildLocalReference: (json, _baseUri, _fragment, i) => (typeof json.$id === 'string' ? json.$id : `def-${i}`) },
  });
  await app.register(fastifySwaggerUi, { routePrefix: '/docs', uiConfig: { persistAuthorization: true, tryItOutEnabled: false } });
  app.get(
    '/openapi.json',
    {
      schema: {
        operationId: 'getOpenApiDocument',
        tags: ['operations'],
        security: [],
        summary: 'This OpenAPI 3.1 document',
        response: { 200: { description: 'The document.', type: 'object', additionalProperties: true, [SCHEMA_NAME]: 'OpenApiDocument' } },
      },
    },
    async () => app.swagger(),
  );

  await app.register(authPlugin, { deps });
  await app.register(metricsPlugin, { deps, processMetrics: opts.processMetrics ?? false });
  await app.register(opsRoutes, { deps });
  await app.register(authRoutes, { deps });
  await app.register(queueRoutes, { deps });
  await app.register(topicRoutes, { deps });
  if (deps.internal !== undefined) await app.register(internalRoutes, deps.internal);
  return app as unknown as FastifyInstance;
}

/** Puts `hook` before the route's own preValidation hooks. */
function runFirst(route: RouteOptions, hook: (request: FastifyRequest) => Promise<void>): void {
  const own = route.preValidation;
  route.preValidation = own === undefined ? hook : [hook, ...(Array.isArray(own) ? own : [own])];
}

/** The query of a route that takes none. */
const NO_QUERY = { type: 'object', properties: {}, additionalProperties: false } as const;

/** The charset parameter of a Content-Type, lowercased and unquoted, or null when it has none. */
export function charsetOf(contentType: string | undefined): string | null {
  const m = /;\s*charset\s*=\s*("([^"]*)"|[^;\s]*)/i.exec(contentType ?? '');
  return m === null ? null : (m[2] ?? m[1]!).toLowerCase();
}

/** Whether `text` parses as JSON, the prototype's names allowed (a failed body only). */
function isJson(text: string): boolean {
  try {
    JSON.parse(text);
    return true;
  } catch {
    return false;
  }
}
