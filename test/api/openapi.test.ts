// The published OpenAPI document: the committed file and the client types generated from it are what
// the route schemas produce now, and the document says what ../shared/API.md says about security,
// summaries and errors.
import { readFileSync } from 'node:fs';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { isDeepStrictEqual } from 'node:util';
import openapiTS, { astToString, COMMENT_HEADER } from 'openapi-typescript';
import t from 'tap';
import { OPENAPI_FILE, openapiDocument } from '../../scripts/openapi.js';

const GENERATED_FILE = fileURLToPath(new URL('./generated/openapi.d.ts', import.meta.url));

interface Operation {
  summary?: string;
  security?: Record<string, string[]>[];
  parameters?: { in: string; name: string }[];
  requestBody?: unknown;
  responses: Record<string, { content?: Record<string, { schema?: unknown }> }>;
}
interface Document {
  openapi: string;
  paths: Record<string, Record<string, Operation>>;
  components: { schemas: Record<string, { required?: string[] }>; securitySchemes: Record<string, unknown> };
}

const METHODS = new Set(['get', 'put', 'post', 'delete', 'patch', 'head', 'options', 'trace']);

function operations(document: Document): { id: string; path: string; op: Operation }[] {
  return Object.entries(document.paths).flatMap(([path, item]) =>
    Object.entries(item)
      .filter(([method]) => METHODS.has(method))
      .map(([method, op]) => ({ id: `${method.toUpperCase()} ${path}`, path, op })),
  );
}

const errorStatuses = (op: Operation): string[] => Object.keys(op.responses).filter((s) => Number(s) >= 400);
const needsToken = (op: Operation): boolean => (op.security ?? []).some((s) => 'bearerAuth' in s);
const takesIdempotencyKey = (op: Operation): boolean => (op.parameters ?? []).some((p) => p.in === 'header' && p.name === 'idempotency-key');

// The checks below read the document the routes produce now (what a node serves), so that they hold
// even while the committed file is out of date; the first test catches that.
const live = await openapiDocument();
const doc = JSON.parse(live) as Document;
const ops = operations(doc);

t.test('openapi/openapi.json is what the route schemas produce now', async (t) => {
  // Compared as text: the file is what `npm run openapi` writes, byte for byte.
  t.equal(readFileSync(OPENAPI_FILE, 'utf8'), live, 'openapi/openapi.json is out of date: run `npm run openapi`');
});

t.test('test/api/generated/openapi.d.ts is what openapi-typescript generates from openapi/openapi.json', async (t) => {
  // The CLI (`npm run openapi:client`) writes COMMENT_HEADER + astToString(openapiTS(file)) with every
  // option at its default, so the same calls give the same bytes: compared exactly, nothing normalized.
  const ast = await openapiTS(pathToFileURL(OPENAPI_FILE), { silent: true });
  const generated = `${COMMENT_HEADER}${astToString(ast)}`;
  t.equal(readFileSync(GENERATED_FILE, 'utf8'), generated, 'test/api/generated/openapi.d.ts is out of date: run `npm run openapi:client`');
});

t.test('the document is OpenAPI 3.1 with the bearer scheme and the Problem schema', async (t) => {
  t.equal(doc.openapi, '3.1.0', 'OpenAPI 3.1, as API.md says');
  t.match(doc.components.securitySchemes.bearerAuth, { type: 'http', scheme: 'bearer' }, 'bearerAuth is an HTTP bearer scheme');
  t.same([...(doc.components.schemas.Problem?.required ?? [])].sort(), ['code', 'detail', 'status', 'title', 'type'], 'a problem has every RFC 9457 member API.md names, and code');
});

t.test('no inter-node route is public', async (t) => {
  t.same(Object.keys(doc.paths).filter((p) => p.includes('/internal')), [], 'no /internal path');
});

// Each rule is one assertion listing the operations that break it, so that a failure names them all.

t.test('every /v1 route but register, login and cluster needs a bearer token; the others need none', async (t) => {
  const open = new Set(['POST /v1/auth/register', 'POST /v1/auth/login', 'GET /v1/cluster']);
  const mustAuth = ({ id, path }: { id: string; path: string }): boolean => path.startsWith('/v1/') && !open.has(id);
  t.same(ops.filter((o) => mustAuth(o) && !needsToken(o.op)).map((o) => o.id), [], 'bearerAuth declared');
  t.same(ops.filter((o) => !mustAuth(o) && needsToken(o.op)).map((o) => o.id), [], 'public routes need no token');
});

t.test('every operation has a summary', async (t) => {
  t.same(ops.filter(({ op }) => typeof op.summary !== 'string' || op.summary.trim() === '').map((o) => o.id), [], 'none without');
});

t.test('every error response is application/problem+json with the Problem schema', async (t) => {
  // /readyz answers its 503 in the body a load balancer reads ({status, partitionsWithoutLeader}):
  // it is the probe's negative answer, not a failed request, and the document says so.
  const exempt = new Set(['GET /readyz 503']);
  const problem = { 'application/problem+json': { schema: { $ref: '#/components/schemas/Problem' } } };
  const wrong = ops.flatMap(({ id, op }) =>
    errorStatuses(op)
      .filter((status) => !exempt.has(`${id} ${status}`) && !isDeepStrictEqual(op.responses[status]?.content, problem))
      .map((status) => `${id} ${status}`),
  );
  t.same(wrong, [], 'no other content type, no other schema');
  t.ok(ops.some(({ op }) => errorStatuses(op).length > 0), 'there are error responses to check');
});

t.test('operations declare the errors they can answer', async (t) => {
  const lacking = (status: string, applies: (op: Operation) => boolean): string[] =>
    ops.filter(({ op }) => applies(op) && !errorStatuses(op).includes(status)).map((o) => o.id);
  t.same(lacking('401', needsToken), [], '401 on every route that takes a token');
  // The token's user is looked up in its partition, which may have no leader.
  t.same(lacking('503', needsToken), [], '503 on every route that takes a token');
  t.same(lacking('400', (op) => op.requestBody !== undefined || (op.parameters ?? []).some((p) => p.in !== 'header')), [], '400 on every route that takes input');
  t.same(lacking('404', (op) => (op.parameters ?? []).some((p) => p.in === 'path')), [], '404 on every route that names a resource');
  // API.md and the header's own description: a key reused for a different request answers 409.
  t.same(lacking('409', takesIdempotencyKey), [], '409 on every route that takes an Idempotency-Key');
});

t.test('the document holds every route of API.md, and no other', async (t) => {
  // API.md's tables, one operation a line. "as for queues" for topic grants: PUT and DELETE name a
  // user, GET lists them all. The operations table says its routes are in the document too.
  const contract = [
    'POST /v1/auth/register',
    'POST /v1/auth/login',
    'GET /v1/auth/me',
    'POST /v1/queues',
    'GET /v1/queues',
    'GET /v1/queues/{queue}',
    'DELETE /v1/queues/{queue}',
    'PUT /v1/queues/{queue}/grants/{username}',
    'GET /v1/queues/{queue}/grants',
    'DELETE /v1/queues/{queue}/grants/{username}',
    'POST /v1/queues/{queue}/messages',
    'POST /v1/queues/{queue}/messages/batch',
    'POST /v1/queues/{queue}/receive',
    'POST /v1/queues/{queue}/ack',
    'POST /v1/queues/{queue}/nack',
    'POST /v1/queues/{queue}/lease',
    'POST /v1/queues/{queue}/purge',
    'POST /v1/topics',
    'GET /v1/topics',
    'GET /v1/topics/{topic}',
    'DELETE /v1/topics/{topic}',
    'PUT /v1/topics/{topic}/grants/{username}',
    'GET /v1/topics/{topic}/grants',
    'DELETE /v1/topics/{topic}/grants/{username}',
    'POST /v1/topics/{topic}/messages',
    'POST /v1/topics/{topic}/messages/batch',
    'POST /v1/topics/{topic}/subscriptions',
    'GET /v1/topics/{topic}/subscriptions',
    'GET /v1/topics/{topic}/subscriptions/{subscription}',
    'DELETE /v1/topics/{topic}/subscriptions/{subscription}',
    'POST /v1/topics/{topic}/subscriptions/{subscription}/receive',
    'POST /v1/topics/{topic}/subscriptions/{subscription}/ack',
    'POST /v1/topics/{topic}/subscriptions/{subscription}/nack',
    'POST /v1/topics/{topic}/subscriptions/{subscription}/lease',
    'GET /v1/cluster',
    'GET /healthz',
    'GET /readyz',
    'GET /metrics',
    'GET /docs',
    'GET /openapi.json',
  ].sort();
  const documented = ops.map((o) => o.id).sort();
  t.same(contract.filter((id) => !documented.includes(id)), [], 'every route of API.md is documented');
  t.same(documented.filter((id) => !contract.includes(id)), [], 'every documented route is in API.md');
});
