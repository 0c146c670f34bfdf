// The published OpenAPI document: the committed file and the client types generated from it are what
// the route schemas produce now; the document says what docs/api.md says about security, errors and
// headers; docs/api.md, the document and the app's routes list the same routes; and Redocly's linter,
// with this project's rules (openapi/redocly.yaml), passes it and fails a document an SDK would
// make clumsy.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { isDeepStrictEqual } from 'node:util';
import openapiTS, { astToString, COMMENT_HEADER } from 'openapi-typescript';
import t from 'tap';
import { OPENAPI_FILE, documentApp, openapiDocument } from '../../scripts/openapi.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const API_DOC = join(ROOT, 'docs', 'api.md');
const GENERATED_FILE = fileURLToPath(new URL('./generated/openapi.d.ts', import.meta.url));

interface Operation {
  operationId?: string;
  summary?: string;
  security?: Record<string, string[]>[];
  parameters?: { in: string; name: string }[];
  requestBody?: unknown;
  responses: Record<string, { content?: Record<string, { schema?: unknown }>; headers?: Record<string, unknown> }>;
}
interface Document {
  openapi: string;
  paths: Record<string, Record<string, Operation>>;
  components: { schemas: Record<string, { required?: string[] }>; securitySchemes: Record<string, unknown> };
}

const METHODS = new Set(['get', 'put', 'post', 'delete', 'patch', 'head', 'options', 'trace']);

function operations(document: Document): { id: string; method: string; path: string; op: Operation }[] {
  return Object.entries(document.paths).flatMap(([path, item]) =>
    Object.entries(item)
      .filter(([method]) => METHODS.has(method))
      .map(([method, op]) => ({ id: `${method.toUpperCase()} ${path}`, method, path, op })),
  );
}

const errorStatuses = (op: Operation): string[] => Object.keys(op.responses).filter((s) => Number(s) >= 400);
const needsToken = (op: Operation): boolean => (op.security ?? []).some((s) => 'bearerAuth' in s);
const takesIdempotencyKey = (op: Operation): boolean => (op.parameters ?? []).some((p) => p.in === 'header' && p.name === 'Idempotency-Key');

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
  // The CLI (`npm run openapi:client`) writes COMMENT_HEADER + astToString(openapiTS(file)) with its
  // options, so the same calls give the same bytes: compared exactly, nothing normalized. A field
  // with a default stays optional in requests (--default-non-nullable false): a client may omit it.
  const ast = await openapiTS(pathToFileURL(OPENAPI_FILE), { silent: true, defaultNonNullable: false });
  const generated = `${COMMENT_HEADER}${astToString(ast)}`;
  t.equal(readFileSync(GENERATED_FILE, 'utf8'), generated, 'test/api/generated/openapi.d.ts is out of date: run `npm run openapi:client`');
});

t.test('the document is OpenAPI 3.1 with the bearer scheme and the Problem schema', async (t) => {
  t.equal(doc.openapi, '3.1.0', 'OpenAPI 3.1, as docs/api.md says');
  t.match(doc.components.securitySchemes.bearerAuth, { type: 'http', scheme: 'bearer' }, 'bearerAuth is an HTTP bearer scheme');
  t.same([...(doc.components.schemas.Problem?.required ?? [])].sort(), ['code', 'detail', 'status', 'title', 'type'], 'a problem has every RFC 9457 member docs/api.md names, and code');
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
  // docs/api.md and the header's own description: a key reused for a different request answers 409.
  t.same(lacking('409', takesIdempotencyKey), [], '409 on every route that takes an Idempotency-Key');
  t.same(lacking('504', takesIdempotencyKey), [], '504 on every write');
  // A malformed URL is a 400 anywhere; a body over the route's limit is a 413 wherever one may be sent.
  t.same(lacking('400', () => true), [], '400 on every route');
  t.same(lacking('500', () => true), [], '500 on every route');
  t.same(
    ops.filter(({ method, op }) => ['post', 'put', 'delete'].includes(method) && !errorStatuses(op).includes('413')).map((o) => o.id),
    [],
    '413 on every route that may carry a body',
  );
});

t.test('every answer declares the headers it carries', async (t) => {
  const answers = ops.flatMap(({ id, op }) => Object.entries(op.responses).map(([status, r]) => ({ id: `${id} ${status}`, op, status, headers: r.headers ?? {} })));
  const ref = (name: string) => ({ $ref: `#/components/headers/${name}` });
  const missing = (name: string, applies: (a: (typeof answers)[number]) => boolean): string[] =>
    answers.filter((a) => applies(a) && !isDeepStrictEqual(a.headers[name], ref(name))).map((a) => a.id);
  t.same(missing('X-Request-Id', () => true), [], 'X-Request-Id on every answer');
  t.same(missing('Retry-After', (a) => ['429', '503', '504'].includes(a.status)), [], 'Retry-After on 429, 503 and 504');
  const takesConsistency = (op: Operation): boolean => (op.parameters ?? []).some((p) => p.name === 'consistency');
  t.same(missing('X-Stale', (a) => a.status === '200' && takesConsistency(a.op)), [], 'X-Stale on the reads that take ?consistency');
  t.same(missing('X-Applied-Index', (a) => a.status === '200' && takesConsistency(a.op)), [], 'X-Applied-Index there too');
  t.ok(ops.filter(({ op }) => takesConsistency(op)).length >= 3, 'the queue, topic and subscription reads take ?consistency');
});

t.test('operationIds are the names an SDK gives its functions', async (t) => {
  const ids = ops.map(({ op }) => op.operationId);
  t.same(ops.filter(({ op }) => typeof op.operationId !== 'string' || !/^[a-z][A-Za-z]*$/.test(op.operationId)).map((o) => o.id), [], 'every operation has a camelCase operationId');
  t.equal(new Set(ids).size, ids.length, 'operationIds are unique');
  const byId = Object.fromEntries(ops.map(({ id, op }) => [op.operationId, id]));
  t.match(
    byId,
    {
      registerUser: 'POST /v1/auth/register',
      login: 'POST /v1/auth/login',
      createQueue: 'POST /v1/queues',
      getQueue: 'GET /v1/queues/{queue}',
      sendMessage: 'POST /v1/queues/{queue}/messages',
      sendMessageBatch: 'POST /v1/queues/{queue}/messages/batch',
      receiveMessages: 'POST /v1/queues/{queue}/receive',
      ackMessages: 'POST /v1/queues/{queue}/ack',
      nackMessages: 'POST /v1/queues/{queue}/nack',
      extendLeases: 'POST /v1/queues/{queue}/lease',
      publishMessage: 'POST /v1/topics/{topic}/messages',
      createSubscription: 'POST /v1/topics/{topic}/subscriptions',
      receiveSubscriptionMessages: 'POST /v1/topics/{topic}/subscriptions/{subscription}/receive',
    },
    'the names users know',
  );
});

t.test('the resources are named schemas, each one component', async (t) => {
  const names = Object.keys(doc.components.schemas);
  for (const name of ['Queue', 'QueueStats', 'Message', 'ReceivedMessage', 'Topic', 'Subscription', 'Grant', 'Problem', 'AckResult', 'NackResult', 'LeaseResult']) {
    t.ok(names.includes(name), `${name} is a component`);
  }
  // A queue appears in four answers (create, get, the page of a list), all of them the one component.
  const queueAnswers = ['POST /v1/queues 201', 'GET /v1/queues/{queue} 200'].map((k) => {
    const [method, path, status] = k.split(' ') as [string, string, string];
    return (doc.paths[path]?.[method.toLowerCase()]?.responses[status]?.content?.['application/json']?.schema as { $ref?: string } | undefined)?.$ref;
  });
  t.same(queueAnswers, ['#/components/schemas/Queue', '#/components/schemas/Queue'], 'create and get answer the Queue component');
  t.notMatch(live, /x-schema-name/, 'the naming annotation does not reach the document');
  const apiDoc = readFileSync(API_DOC, 'utf8');
  t.same(names.filter((n) => !apiDoc.includes(`\`${n}\``)), [], 'docs/api.md names every component');
});

// Redocly's CLI, on a document file, with this project's configuration; its exit status and output.
function lint(file: string): { status: number | null; output: string } {
  const r = spawnSync(process.execPath, [join(ROOT, 'node_modules', '@redocly', 'cli', 'bin', 'cli.js'), 'lint', '--config', join(ROOT, 'openapi', 'redocly.yaml'), file], {
    cwd: ROOT,
    encoding: 'utf8',
    env: { ...process.env, REDOCLY_TELEMETRY: 'off', REDOCLY_SUPPRESS_UPDATE_NOTICE: 'true', NO_COLOR: '1' },
  });
  return { status: r.status, output: `${r.stdout}${r.stderr}` };
}

t.test('Redocly lints the document clean, with the operationId and named-schema rules', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'mom-lint-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const good = join(dir, 'openapi.json');
  writeFileSync(good, live);
  const clean = lint(good);
  t.equal(clean.status, 0, `the document passes:\n${clean.output}`);

  // The same rules fail a document an SDK would make clumsy: the checks can fail.
  const bad = JSON.parse(live) as Document & { paths: Record<string, Record<string, Record<string, unknown>>> };
  const create = bad.paths['/v1/queues']!.post!;
  delete create.operationId;
  (create.responses as Record<string, { content: Record<string, { schema: unknown }> }>)['201']!.content['application/json']!.schema = { type: 'object', properties: { name: { type: 'string' } } };
  const params = bad.paths['/v1/queues/{queue}']!.get!.parameters as unknown as { name: string; schema: unknown }[];
  params.find((p) => p.name === 'consistency')!.schema = { anyOf: [{ type: 'string', enum: ['strong'] }, { type: 'string', enum: ['stale'] }] };
  const clumsy = join(dir, 'clumsy.json');
  writeFileSync(clumsy, JSON.stringify(bad));
  const refused = lint(clumsy);
  t.not(refused.status, 0, 'a clumsy document fails');
  t.match(refused.output, /operation-operationId/, 'for the missing operationId');
  t.match(refused.output, /mom\/json-bodies-named/, 'for the inline body schema');
  t.match(refused.output, /mom\/no-single-value-anyof/, 'for the anyOf of one-value enums');
});

/** The routes of docs/api.md: its rows `| METHOD | `/path` | `operationId` | statuses | ... |`. */
function documentedRoutes(): { id: string; operationId: string; statuses: string[] }[] {
  const rows = readFileSync(API_DOC, 'utf8').split('\n');
  const out: { id: string; operationId: string; statuses: string[] }[] = [];
  for (const row of rows) {
    const m = /^\| (GET|POST|PUT|DELETE) \| `([^`]+)` \| `([A-Za-z]+)` \| ([0-9, ]+) \|/.exec(row);
    if (m !== null) out.push({ id: `${m[1]} ${m[2]}`, operationId: m[3]!, statuses: m[4]!.split(',').map((x) => x.trim()) });
  }
  return out;
}

/** The app's own routes, from Fastify's route tree, as `METHOD /path/{param}` (HEAD and Swagger UI's files left out). */
async function appRoutes(): Promise<string[]> {
  const app = await documentApp();
  const tree = app.printRoutes({ commonPrefix: false });
  await app.close();
  const stack: string[] = [];
  const out: string[] = [];
  for (const line of tree.split('\n')) {
    const m = /^([│ ├└─]*)(\S+) \(([A-Z, ]+)\)$/.exec(line);
    if (m === null) continue;
    const depth = m[1]!.length / 4 - 1;
    stack.length = depth;
    stack.push(m[2]!);
    const path = stack.join('').replace(/\/+/g, '/').replace(/:([A-Za-z]+)/g, '{$1}');
    if (path.startsWith('/docs/')) continue;
    for (const method of m[3]!.split(', ')) if (method !== 'HEAD') out.push(`${method} ${path}`);
  }
  return out.sort();
}

t.test('docs/api.md, the document and the app list the same routes', async (t) => {
  const contract = documentedRoutes();
  const documented = ops.map((o) => o.id).sort();
  const served = await appRoutes();
  t.ok(contract.length >= 40, `docs/api.md has its route rows (${contract.length})`);
  t.same(contract.map((r) => r.id).sort(), documented, 'docs/api.md and openapi.json: the same routes');
  t.same(served, documented, 'the app serves exactly the documented routes');
  const byRoute = new Map(ops.map((o) => [o.id, o.op]));
  const disagree = contract.filter((r) => {
    const op = byRoute.get(r.id);
    return op === undefined || op.operationId !== r.operationId || !isDeepStrictEqual(r.statuses, Object.keys(op.responses).sort());
  });
  t.same(disagree.map((r) => r.id), [], 'docs/api.md gives each route the operationId and statuses of openapi.json');
});
