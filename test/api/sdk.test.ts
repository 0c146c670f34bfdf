// The SDK a user gets from a second generator: @hey-api/openapi-ts (fetch client) generates one from the
// committed openapi/openapi.json at test time. Its names are pinned, so that a change to the document
// cannot rename what users call (one function per operationId, one type per component schema, plain
// string unions for enums, nothing named after a path), and the README's walk-through runs through it
// against three real node processes, each step through another node: any node answers any request.
//
// The SDK is written into test/api/.sdk-tmp-*/ (git-ignored; tsc's globs skip dot-folders), inside the
// repo so that tsx loads it like any other source, and removed when the test ends.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { createClient as generateSdk } from '@hey-api/openapi-ts';
import t, { type Test } from 'tap';
import { OPENAPI_FILE } from '../../scripts/openapi.js';
import { Cluster } from '../chaos/cluster.js';
import { threeNodes } from '../deploy/real-nodes.js';

// Real node processes on a loaded 2-core machine: a deadline against hanging, not a timing assertion.
t.setTimeout(180_000);

interface OpenApiDocument {
  paths: Record<string, Record<string, { operationId?: string }>>;
  components: { schemas: Record<string, { enum?: string[] }>; parameters?: Record<string, unknown> };
}
const DOCUMENT = JSON.parse(readFileSync(OPENAPI_FILE, 'utf8')) as OpenApiDocument;
const METHODS = new Set(['get', 'put', 'post', 'delete', 'patch', 'head', 'options', 'trace']);
const OPERATION_IDS = Object.values(DOCUMENT.paths)
  .flatMap((item) => Object.entries(item).filter(([method]) => METHODS.has(method)))
  .map(([, op]) => op.operationId ?? '(none)')
  .sort();

/** What an SDK call answers (throwOnError off): data on a 2xx, error (the parsed body) otherwise. */
interface Result {
  data?: unknown;
  error?: unknown;
  /** Undefined when the request never got an answer. */
  response?: Response;
}
type Operation = (options: Record<string, unknown>) => Promise<Result>;
type Module = Record<string, unknown>;
interface FetchClientModule {
  createClient(config: { baseUrl: string; auth?: string }): unknown;
}
interface Generated {
  /** sdk.gen.ts: one function per operation. */
  sdk: Module;
  /** index.ts, what a user imports. */
  entry: Module;
  /** client/index.ts, the bundled fetch client. */
  fetchClient: FetchClientModule;
  /** The text of types.gen.ts. */
  types: string;
}

/** Generates the SDK into `dir`, and loads it. */
async function generate(dir: string): Promise<Generated> {
  await generateSdk({
    input: OPENAPI_FILE,
    output: {
      path: dir,
      // tsx maps .js to .ts, as in the repo's own imports; lint has no say in generated code.
      module: { extension: '.js' },
      header: (ctx) => ['/* eslint-disable */', ...ctx.defaultValue],
    },
    plugins: ['@hey-api/client-fetch', '@hey-api/typescript', '@hey-api/sdk'],
    logs: { level: 'silent', file: false },
  });
  const load = async (file: string): Promise<Module> => (await import(pathToFileURL(join(dir, file)).href)) as Module;
  return {
    sdk: await load('sdk.gen.ts'),
    entry: await load('index.ts'),
    fetchClient: (await load('client/index.ts')) as unknown as FetchClientModule,
    types: readFileSync(join(dir, 'types.gen.ts'), 'utf8'),
  };
}

const out = mkdtempSync(join(import.meta.dirname, '.sdk-tmp-'));
t.teardown(() => rmSync(out, { recursive: true, force: true }));
const { sdk, entry, fetchClient, types: TYPES } = await generate(out).catch((err: unknown) => {
  // A failure here ends the file before tap runs its teardowns.
  rmSync(out, { recursive: true, force: true });
  throw err;
});
const cluster = await threeNodes(t, 'sdk');

function operation(name: string): Operation {
  const f = sdk[name];
  if (typeof f !== 'function') throw new Error(`the SDK has no function ${name}`);
  return f as Operation;
}

const pascal = (s: string): string => s.charAt(0).toUpperCase() + s.slice(1);
/** The types hey-api derives from each operationId (request, errors and responses). */
const OPERATION_TYPES = new Set(OPERATION_IDS.flatMap((id) => ['Data', 'Errors', 'Error', 'Responses', 'Response'].map((s) => `${pascal(id)}${s}`)));

t.test('the names a user gets', async (t) => {
  const USED = ['registerUser', 'login', 'createQueue', 'getQueue', 'sendMessage', 'receiveMessages', 'ackMessages', 'nackMessages', 'createTopic', 'publishMessage', 'createSubscription', 'receiveSubscriptionMessages'];
  for (const name of USED) {
    t.equal(typeof sdk[name], 'function', `sdk.${name}`);
    t.equal(entry[name], sdk[name], `${name} from the entry file too`);
  }
  const functions = Object.keys(sdk).filter((k) => typeof sdk[k] === 'function').sort();
  t.same(functions, OPERATION_IDS, 'one function per operation, named by its operationId');

  const types = [...TYPES.matchAll(/^export type (\w+)\b/gm)].map((m) => m[1]!);
  for (const model of ['Queue', 'QueueStats', 'Message', 'ReceivedMessage', 'AckResult', 'Topic', 'Subscription', 'Problem', 'Token']) {
    t.match(TYPES, new RegExp(`^export type ${model} = \\{`, 'm'), `the model ${model}`);
  }
  const components = new Set([...Object.keys(DOCUMENT.components.schemas), ...Object.keys(DOCUMENT.components.parameters ?? {})]);
  const models = types.filter((n) => !OPERATION_TYPES.has(n) && n !== 'ClientOptions');
  t.same(models.filter((n) => !components.has(n)), [], 'every other type is a component of the document, under its name');
  t.same(Object.keys(DOCUMENT.components.schemas).filter((n) => !types.includes(n)), [], 'every component schema has its type, not renamed');
  t.same(types.filter((n) => /V1|Healthz|Readyz|OpenapiJson|By(Queue|Topic|Subscription|Username)\b|^(Get|Post|Put|Delete)[A-Z].*(Queues|Topics|Auth)/.test(n)), [], 'no type named after a path');

  t.notMatch(TYPES, /^export (enum|const)\b/m, 'no TypeScript enum, no enum object');
  t.match(TYPES, /^export type SubscribePolicy = 'anyone' \| 'granted';$/m, 'SubscribePolicy is a plain union');
  for (const [name, schema] of Object.entries(DOCUMENT.components.schemas)) {
    if (schema.enum === undefined) continue;
    t.ok(TYPES.includes(`export type ${name} = ${schema.enum.map((v) => `'${v}'`).join(' | ')};`), `${name} is the union of its values`);
  }
});

t.test("the README's walk-through, through the SDK", async (t) => {
  t.ok(await Cluster.until(() => cluster.led(), 120_000), 'every partition has a leader');
  const [n1, n2] = cluster.urls.map((baseUrl) => fetchClient.createClient({ baseUrl }));

  /** The data of a 2xx answer with `status`; anything else fails here, with the problem in the message. */
  const ok = async (t: Test, what: string, status: number, call: Promise<Result>): Promise<Record<string, unknown>> => {
    const r = await call;
    t.equal(r.response?.status, status, `${what}: ${status}`);
    if (r.data === undefined) throw new Error(`${what}: ${r.response?.status} ${JSON.stringify(r.error)}`);
    return r.data as Record<string, unknown>;
  };

  const credentials = { username: 'alice', password: 'correct-horse' };
  t.match(await ok(t, 'registerUser', 201, operation('registerUser')({ client: n1, body: credentials })), { username: 'alice' });
  const token = await ok(t, 'login', 200, operation('login')({ client: n2, body: credentials }));
  t.match(token, { accessToken: String, tokenType: 'Bearer', expiresIn: Number });
  // One token, good on every node.
  const [a1, a2, a3] = cluster.urls.map((baseUrl) => fetchClient.createClient({ baseUrl, auth: token.accessToken as string }));

  const queue = { queue: 'orders' };
  t.match(await ok(t, 'createQueue', 201, operation('createQueue')({ client: a2, body: { name: 'orders' } })), { name: 'orders', owner: 'alice' });
  const order = { body: 'order 1', attributes: { priority: 'high' } };
  const sent = await ok(t, 'sendMessage', 201, operation('sendMessage')({ client: a3, path: queue, body: order }));
  t.match(sent, { messageId: String });

  const received = await ok(t, 'receiveMessages', 200, operation('receiveMessages')({ client: a1, path: queue, body: { maxMessages: 10, waitSeconds: 5 } }));
  const messages = received.messages as Record<string, unknown>[];
  t.equal(messages.length, 1, 'the message sent');
  const [m] = messages as [Record<string, unknown>];
  t.match(m, { messageId: sent.messageId, body: order.body, receiptHandle: String });
  t.same(m.attributes, order.attributes, 'its attributes');

  const acked = await ok(t, 'ackMessages', 200, operation('ackMessages')({ client: a2, path: queue, body: { receiptHandles: [m.receiptHandle] } }));
  t.same(acked, { acked: [m.receiptHandle], failed: [] });
  const got = await ok(t, 'getQueue', 200, operation('getQueue')({ client: a3, path: queue }));
  t.match(got.stats, { visible: 0, inFlight: 0 }, 'nothing left in the queue');

  // A topic, a subscription that filters on an attribute, and what reaches it.
  const topic = { topic: 'shipments' };
  t.match(await ok(t, 'createTopic', 201, operation('createTopic')({ client: a1, body: { name: 'shipments' } })), { name: 'shipments', owner: 'alice' });
  const filter = { attributes: { priority: 'high' } };
  const sub = await ok(t, 'createSubscription', 201, operation('createSubscription')({ client: a2, path: topic, body: { name: 'urgent', filter } }));
  t.match(sub, { topic: 'shipments', name: 'urgent' });
  t.same(sub.filter, filter, 'the filter as given');
  const routine = await ok(t, 'publishMessage (low)', 201, operation('publishMessage')({ client: a3, path: topic, body: { body: 'routine', attributes: { priority: 'low' } } }));
  t.match(routine, { messageId: String, subscriptions: 0 }, 'filtered out');
  const urgent = await ok(t, 'publishMessage (high)', 201, operation('publishMessage')({ client: a1, path: topic, body: { body: 'rush', attributes: { priority: 'high' } } }));
  t.match(urgent, { messageId: String, subscriptions: 1 }, 'reaches the subscription');
  const delivered = await ok(t, 'receiveSubscriptionMessages', 200, operation('receiveSubscriptionMessages')({ client: a2, path: { ...topic, subscription: 'urgent' }, body: { maxMessages: 10, waitSeconds: 5 } }));
  t.same((delivered.messages as Record<string, unknown>[]).map((x) => [x.messageId, x.body, x.attributes]), [[urgent.messageId, 'rush', filter.attributes]], 'only the message the filter lets through');

  // An error comes back as the SDK's error result: the problem body, parsed.
  const missing = await operation('getQueue')({ client: a1, path: { queue: 'no-such-queue' } });
  t.equal(missing.response?.status, 404, 'a missing queue: 404');
  t.equal(missing.data, undefined, 'no data');
  t.match(missing.error, { status: 404, code: 'not_found', title: String }, 'the problem, with its code');
  t.match(missing.response?.headers.get('content-type'), /^application\/problem\+json/);
});
