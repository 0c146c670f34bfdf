// Bad input at the REST API. Malformed JSON, wrong types, unknown fields, out-of-range numbers,
// oversized bodies and batches, names with slashes, dots, SQL and Unicode, and missing, expired and
// forged tokens must each get a 4xx application/problem+json (never a 2xx, a 5xx, or Fastify's own
// error JSON) and must leave the broker as it was:
// - the observable state (a queue with stats, the lists, a topic, a subscription, the grants) is
//   read before the barrage and compared after each group of properties;
// - the durable state, stateHash of the partition's state, is compared around the whole barrage. A
//   refused request that still reached the state machine (a command that fails in apply is still an
//   entry) moves the applied index and so the hash; that is why nothing in the barrage may be a
//   valid write, and why no valid receive (a lease is a write) happens in it.
// Valid but hostile data (any Unicode, NUL, emoji, keys such as "constructor") must come back
// exactly as sent. That part writes, so it runs after the hash check, as another user.
//
// Random requests over every route of the OpenAPI document (method, path parameters, query, headers,
// body; fast-check) must answer a status their operation declares, refusals as problem+json, never a
// 5xx, and leave the state as it was.
// The API runs over one partition's state machine in this process (local-app.ts): validation is the
// API's own, the same on every node, and needs neither Raft nor peers. The barrage goes through
// inject(), which needs no sockets; requests the HTTP parser refuses before Fastify routes them can
// only be made over a real socket. That a limit holds on every node, leader or follower, is
// test/api/limits-every-node.test.ts, on three real nodes.
import { createHmac } from 'node:crypto';
import { connect } from 'node:net';
import fc from 'fast-check';
import type { InjectOptions, LightMyRequestResponse } from 'fastify';
import t, { type Test } from 'tap';
import { MAX_FILTER_BYTES, stateHash } from '../../src/store/broker/index.js';
import { TEST_JWT_SECRET, drain as drainChannel, userToken, type ReceivedMessage } from './api-helpers.js';
import { localApp } from './local-app.js';

// The properties take a while on a loaded machine; tap's default of 30 s per file is too tight.
t.setTimeout(300_000);

// ---------------------------------------------------------------------------------------------
// The API and the data the barrage must not change
// ---------------------------------------------------------------------------------------------

const OWNER = 'bi-owner';
const OTHER = 'bi-other';
const ROUNDTRIP_USER = 'bi-roundtrip';
const Q = 'bi-orders';
const DLQ = 'bi-dead';
const T = 'bi-events';
const S = 'bi-sub';

const local = await localApp();
t.teardown(() => local.close());

const ownerToken = await userToken(local.url, OWNER);
await userToken(local.url, OTHER);
// Registered now, not later: top-level code after the first t.test() would run during the barrage.
const rtToken = await userToken(local.url, ROUNDTRIP_USER);

type Method = 'GET' | 'POST' | 'PUT' | 'DELETE';

function inject(opts: InjectOptions): Promise<LightMyRequestResponse> {
  return local.app.inject(opts);
}

const bearer = (token: string | null): Record<string, string> => (token === null ? {} : { authorization: `Bearer ${token}` });

/** A JSON request (the payload serialized here, so that inject() adds nothing of its own). */
function send(method: Method, url: string, body?: unknown, token: string | null = ownerToken): Promise<LightMyRequestResponse> {
  if (body === undefined) return inject({ method, url, headers: bearer(token) });
  return inject({ method, url, headers: { ...bearer(token), 'content-type': 'application/json' }, payload: JSON.stringify(body) });
}

/** A setup or round-trip step that must succeed with `status`. */
async function must(status: number, method: Method, url: string, body?: unknown, token: string = ownerToken): Promise<unknown> {
  const res = await send(method, url, body, token);
  if (res.statusCode !== status) throw new Error(`${method} ${url}: expected ${status}, got ${res.statusCode} ${res.body.slice(0, 300)}`);
  return res.body.length === 0 ? null : (JSON.parse(res.body) as unknown);
}

await must(201, 'POST', '/v1/queues', { name: DLQ });
await must(201, 'POST', '/v1/queues', { name: Q, visibilityTimeoutSeconds: 45, maxDeliveries: 5, deadLetterQueue: DLQ });
await must(201, 'POST', `/v1/queues/${Q}/messages`, { body: 'first', attributes: { kind: 'seed' } });
await must(201, 'POST', `/v1/queues/${Q}/messages`, { body: 'second' });
await must(200, 'PUT', `/v1/queues/${Q}/grants/${OTHER}`, { actions: ['send'] });
await must(201, 'POST', '/v1/topics', { name: T, subscribe: 'granted' });
await must(201, 'POST', `/v1/topics/${T}/subscriptions`, { name: S, filter: { attributes: { kind: 'seed' } } });
await must(201, 'POST', `/v1/topics/${T}/messages`, { body: 'published', attributes: { kind: 'seed' } });
await must(200, 'PUT', `/v1/topics/${T}/grants/${OTHER}`, { actions: ['publish'] });

/** Drops the one field that changes with time alone. */
function scrub(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(scrub);
  if (typeof v !== 'object' || v === null) return v;
  return Object.fromEntries(Object.entries(v).filter(([k]) => k !== 'oldestMessageAgeSeconds').map(([k, x]) => [k, scrub(x)]));
}

const OBSERVED = [
  `/v1/queues/${Q}`,
  `/v1/queues/${DLQ}`,
  '/v1/queues',
  `/v1/queues/${Q}/grants`,
  '/v1/topics',
  `/v1/topics/${T}`,
  `/v1/topics/${T}/grants`,
  `/v1/topics/${T}/subscriptions`,
  `/v1/topics/${T}/subscriptions/${S}`,
];

/** What a client can see of the fixture: linearizable reads (no writes), stats included. */
async function observable(): Promise<Record<string, unknown>> {
  const out: Record<string, unknown> = {};
  for (const url of OBSERVED) out[url] = scrub(await must(200, 'GET', url));
  return out;
}

/** The durable state: the hash of every table of the partition's state (state-hash.ts). */
const durable = (): string => stateHash(local.state.sqlite);

const observedBefore = await observable();
const durableBefore = durable();

/** The fixture as a client sees it is what it was before the barrage. */
async function unchanged(t: Test): Promise<void> {
  t.same(await observable(), observedBefore, 'the queues, topic, subscription and grants are as they were');
}

// ---------------------------------------------------------------------------------------------
// What every refusal must look like
// ---------------------------------------------------------------------------------------------

const CODE_OF: Record<number, string> = {
  400: 'validation_failed',
  401: 'unauthorized',
  403: 'forbidden',
  404: 'not_found',
  409: 'conflict',
  413: 'payload_too_large',
  429: 'rate_limited',
};

/** Signs of a stack trace, a path, or an internal error reaching the client. */
const LEAK = /\n\s+at |node_modules|\/work\/|\/tmp\/|sqlite|TypeError|ReferenceError|RangeError|Cannot read|is not a function|\[object /i;

/** Why `res` is not an acceptable refusal (one of `allowed`, problem+json, no leak), or null. */
function problemFault(res: LightMyRequestResponse, allowed: readonly number[], url = ''): string | null {
  const seen = `${res.statusCode} ${String(res.headers['content-type'])} ${res.body.slice(0, 300)}`;
  if (!allowed.includes(res.statusCode)) return `status not in [${allowed.join(', ')}]: ${seen}`;
  const ct = res.headers['content-type'];
  if (typeof ct !== 'string' || ct.split(';')[0]!.trim() !== 'application/problem+json') return `not application/problem+json: ${seen}`;
  let p: unknown;
  try {
    p = JSON.parse(res.body);
  } catch {
    return `the body is not JSON: ${seen}`;
  }
  if (typeof p !== 'object' || p === null) return `the body is not an object: ${seen}`;
  const { type, title, status, code, detail } = p as Record<string, unknown>;
  if (typeof type !== 'string' || typeof title !== 'string' || typeof code !== 'string' || typeof detail !== 'string') return `type, title, code or detail missing: ${seen}`;
  if (status !== res.statusCode) return `status ${String(status)} in the body, ${res.statusCode} on the response: ${seen}`;
  if (code !== CODE_OF[res.statusCode]) return `code ${code} for status ${res.statusCode}: ${seen}`;
  if (!type.endsWith(code)) return `type ${type} does not name code ${code}`;
  // A 404 for an unknown route echoes the path, which is the caller's own input.
  if (LEAK.test(url === '' ? detail : detail.split(url.split('?')[0]!).join(''))) return `the detail leaks internals: ${detail}`;
  return null;
}

/** For properties: throws (so fast-check shrinks and reports the input) unless an acceptable refusal. */
function expectProblem(res: LightMyRequestResponse, allowed: readonly number[], what: string, url = ''): void {
  const fault = problemFault(res, allowed, url);
  if (fault !== null) throw new Error(`${what}: ${fault}`);
}

/**
 * Runs a property as one test point; a failure carries fast-check's counterexample. Properties that
 * write pass `shrinkBudgetMs`: shrinking a 30,000-character body takes hundreds of runs of several
 * replicated writes each, so it stops there and reports the smallest input found so far.
 */
async function holds<Ts extends [unknown, ...unknown[]]>(t: Test, what: string, property: fc.IAsyncPropertyWithHooks<Ts>, numRuns: number, shrinkBudgetMs?: number): Promise<void> {
  try {
    await fc.assert(property, { numRuns, ...(shrinkBudgetMs === undefined ? {} : { interruptAfterTimeLimit: shrinkBudgetMs, markInterruptAsFailure: false }) });
    t.pass(`${what} (${numRuns} runs)`);
  } catch (err) {
    t.fail(what, { diag: { counterexample: printable((err as Error).message).slice(0, 4000) } });
  }
}

/**
 * Text safe to print in TAP's YAML: every character outside printable ASCII as \u{...}. YAML
 * takes U+0085, U+2028 and U+2029 for line breaks, which JSON.stringify leaves as they are.
 */
function printable(s: string): string {
  return s.replace(/[^\x20-\x7e\n]/gu, (c) => `\\u{${c.codePointAt(0)!.toString(16)}}`);
}

// ---------------------------------------------------------------------------------------------
// Generators
// ---------------------------------------------------------------------------------------------

const NAME = /^[A-Za-z0-9_-]{1,128}$/;
const USERNAME = /^[A-Za-z0-9_.-]{3,64}$/;
const DEDUP = /^[\x21-\x7e]{1,128}$/;
const NAME_CHARS = [...'ABCXYZabcxyz0189_-'];
const USERNAME_CHARS = [...NAME_CHARS, '.'];

const validName = fc.string({ unit: fc.constantFrom(...NAME_CHARS), minLength: 1, maxLength: 24 });

/** Characters no name may hold, the classic troublemakers first. */
const badChar = fc.oneof(
  fc.constantFrom('/', '.', ' ', "'", '"', ';', '%', '\\', '?', '#', '&', '+', '*', ':', '@', '\u0000', '\n', '\r', '\t', 'é', 'ß', 'İ', '🐇', '\u200b', '\u202e', '\ufeff', 'Ａ'),
  fc.string({ unit: 'binary', minLength: 1, maxLength: 1 }).filter((c) => !/[A-Za-z0-9_.-]/.test(c)),
);

const HOSTILE_NAMES = [
  '',
  ' ',
  'a b',
  'a/b',
  '/',
  '..',
  '.',
  '.hidden',
  'a.b',
  '../../etc/passwd',
  '..%2F..%2Fetc',
  "x'; drop table queues; --",
  'x" or "1"="1',
  "' or 1=1 --",
  'queues; delete from messages',
  '%00',
  'orders\n',
  '\norders',
  'orders\u0000',
  'orders ',
  'órders',
  'очередь',
  '队列',
  '🐇',
  'ＯＲＤＥＲＳ',
  'a\u200bb',
  '<script>alert(1)</script>',
  '${jndi:ldap://x/a}',
  '{{7*7}}',
  '__proto__.x',
  'a'.repeat(129),
  '-'.repeat(129),
];

/** Strings that are not valid names, at most `maxLength` UTF-16 units. */
function badName(maxLength: number, loneSurrogates: boolean): fc.Arbitrary<string> {
  const inserted = fc
    .tuple(validName, loneSurrogates ? fc.oneof(badChar, fc.constantFrom('\ud800', '\udfff')) : badChar, fc.nat())
    .map(([n, c, i]) => n.slice(0, i % (n.length + 1)) + c + n.slice(i % (n.length + 1)));
  return fc
    .oneof(
      fc.constantFrom(...HOSTILE_NAMES),
      inserted,
      fc.string({ unit: 'binary', maxLength: 40 }),
      fc.string({ unit: fc.constantFrom(...NAME_CHARS), minLength: 129, maxLength }),
    )
    .filter((s) => !NAME.test(s) && s.length <= maxLength);
}

/** Strings that are not valid usernames. */
function badUsername(maxLength: number): fc.Arbitrary<string> {
  return fc
    .oneof(
      fc.constantFrom('', 'ab', 'a b', 'a/b', "x'; drop table users; --", 'ünïcode', 'alice\n', '🐇🐇🐇', '../../etc', 'al ice', 'a\u0000bc', 'a'.repeat(65)),
      fc.tuple(fc.string({ unit: fc.constantFrom(...USERNAME_CHARS), minLength: 3, maxLength: 20 }), badChar.filter((c) => c !== '.'), fc.nat()).map(([n, c, i]) => n.slice(0, i % (n.length + 1)) + c + n.slice(i % (n.length + 1))),
      fc.string({ unit: 'binary', maxLength: 70 }),
      fc.string({ unit: fc.constantFrom(...USERNAME_CHARS), maxLength: 2 }),
      fc.string({ unit: fc.constantFrom(...USERNAME_CHARS), minLength: 65, maxLength: Math.min(maxLength, 200) }),
    )
    .filter((s) => !USERNAME.test(s) && s.length <= maxLength);
}

const notString: fc.Arbitrary<unknown> = fc.oneof(
  fc.integer(),
  fc.double({ noNaN: true, noDefaultInfinity: true }),
  fc.boolean(),
  fc.constant(null),
  fc.array(fc.string(), { maxLength: 2 }),
  fc.dictionary(fc.string(), fc.string(), { maxKeys: 2 }),
);
const notObject: fc.Arbitrary<unknown> = fc.oneof(fc.string(), fc.integer(), fc.boolean(), fc.constant(null), fc.array(fc.jsonValue({ maxDepth: 1 }), { maxLength: 3 }));
const notArray: fc.Arbitrary<unknown> = fc.oneof(fc.string(), fc.integer(), fc.boolean(), fc.constant(null), fc.dictionary(fc.string(), fc.string(), { maxKeys: 2 }));

/**
 * Anything but an integer in [min, max]. Bodies are never coerced, so "30" is wrong; 30.0 is left
 * out because JSON has one number type and 30.0 is the integer 30.
 */
function badInteger(min: number, max: number): fc.Arbitrary<unknown> {
  return fc.oneof(
    fc.integer({ min, max }).map(String),
    fc.double({ min, max, noNaN: true }).filter((x) => !Number.isInteger(x)),
    fc.integer({ min: -1e9, max: min - 1 }),
    fc.integer({ min: max + 1, max: max + 1e9 }),
    fc.constantFrom<unknown>(2 ** 53 + 2, 1e300, -1e300, null, true, false, '', [], {}, [min], { value: min }),
  );
}

const badString = (pattern: RegExp, maxLength: number): fc.Arbitrary<unknown> =>
  fc.oneof(notString, fc.string({ unit: 'binary', maxLength }).filter((s) => !pattern.test(s)));

const badDedup = fc.oneof(fc.constantFrom<unknown>('', ' ', 'a b', 'é', 'x'.repeat(129), 'tab\there', 'nul\u0000'), badString(DEDUP, 140));

/** Attribute maps outside the limits: not a map, 17+ pairs, long keys or values, empty or non-string. */
const badAttributes: fc.Arbitrary<unknown> = fc.oneof(
  notObject,
  fc.uniqueArray(fc.string({ minLength: 1, maxLength: 8 }).filter((k) => k !== '__proto__'), { minLength: 17, maxLength: 40 }).map((keys) => Object.fromEntries(keys.map((k) => [k, 'v']))),
  fc.string({ unit: 'binary', minLength: 129, maxLength: 300 }).map((k) => ({ [k]: 'v' })),
  fc.string({ unit: 'binary', minLength: 1025, maxLength: 1600 }).map((v) => ({ key: v })),
  fc.constant({ '': 'v' }),
  notString.map((v) => ({ key: v })),
  fc.constant({ key: { nested: 'v' } }),
);

function badActions(allowed: readonly [string, string]): fc.Arbitrary<unknown> {
  const [a, b] = allowed;
  return fc.oneof(
    notArray,
    fc.constantFrom<unknown>([], [a, a], [a, b, a], [a.toUpperCase()], [`${a} `], [a, null]),
    fc.string().filter((s) => !allowed.includes(s)).map((s) => [s]),
    notString.map((v) => [v]),
  );
}

const badHandles: fc.Arbitrary<unknown> = fc.oneof(
  notArray,
  fc.constantFrom<unknown>([], [''], ['x'.repeat(201)], Array.from({ length: 101 }, (_, i) => `h${i}`)),
  notString.map((v) => [v]),
);

function badMessages(withDelay: boolean): fc.Arbitrary<unknown> {
  const badMessage = fc.oneof(
    notObject,
    fc.constant({}),
    notString.map((body) => ({ body })),
    fc.jsonValue({ maxDepth: 1 }).map((v) => ({ body: 'x', extra: v })),
    badAttributes.map((attributes) => ({ body: 'x', attributes })),
    // Topic messages have no delaySeconds: there any value is an unknown field.
    withDelay ? badInteger(0, 900).map((delaySeconds) => ({ body: 'x', delaySeconds })) : fc.constant({ body: 'x', delaySeconds: 0 }),
    badDedup.map((deduplicationId) => ({ body: 'x', deduplicationId })),
  );
  return fc.oneof(
    notArray,
    fc.constant([]),
    fc.constant(Array.from({ length: 101 }, () => ({ body: 'x' }))),
    fc.tuple(badMessage, fc.nat(3)).map(([m, i]) => [...Array.from({ length: i }, () => ({ body: 'ok' })), m]),
  );
}

const badFilter: fc.Arbitrary<unknown> = fc.oneof(
  notObject,
  fc.constant({}),
  badAttributes.map((attributes) => ({ attributes })),
  fc.constant({ attributes: {}, extra: true }),
);

const badPassword: fc.Arbitrary<unknown> = fc.oneof(notString, fc.string({ unit: 'binary', maxLength: 7 }), fc.string({ unit: 'binary', minLength: 257, maxLength: 400 }));

// ---------------------------------------------------------------------------------------------
// Every route that takes a JSON body: a valid body, and what can be wrong with each field
// ---------------------------------------------------------------------------------------------

interface BodyRoute {
  readonly method: 'POST' | 'PUT';
  readonly url: string;
  /** null: the route needs no token. */
  readonly token: string | null;
  /** A body the route accepts. Never sent during the barrage: it may be a write. */
  readonly valid: Record<string, unknown>;
  /** Every field of the schema, each with values that must be refused. */
  readonly bad: Record<string, fc.Arbitrary<unknown>>;
  readonly required: readonly string[];
  /** The body may be left out (a receive): an empty one is none, as on a route that takes none. */
  readonly optional?: true;
}

const credentials = { username: 'bi-probe-user', password: 'a-long-enough-password' };
const credentialFields = { username: badUsername(200), password: badPassword };
const queueHandleRoutes = (base: string, token: string): BodyRoute[] => [
  { method: 'POST', url: `${base}/ack`, token, valid: { receiptHandles: ['bogus'] }, bad: { receiptHandles: badHandles }, required: ['receiptHandles'] },
  {
    method: 'POST',
    url: `${base}/nack`,
    token,
    valid: { receiptHandles: ['bogus'], delaySeconds: 1 },
    bad: { receiptHandles: badHandles, delaySeconds: badInteger(0, 900) },
    required: ['receiptHandles'],
  },
  {
    method: 'POST',
    url: `${base}/lease`,
    token,
    valid: { receiptHandles: ['bogus'], visibilityTimeoutSeconds: 10 },
    bad: { receiptHandles: badHandles, visibilityTimeoutSeconds: badInteger(0, 43200) },
    required: ['receiptHandles', 'visibilityTimeoutSeconds'],
  },
  {
    method: 'POST',
    url: `${base}/receive`,
    token,
    valid: { maxMessages: 1 },
    bad: { maxMessages: badInteger(1, 100), visibilityTimeoutSeconds: badInteger(0, 43200), waitSeconds: badInteger(0, 20) },
    required: [],
    optional: true,
  },
];

function bodyRoutes(token: string, names: { q: string; t: string; s: string; grantee: string; probe: string }): BodyRoute[] {
  const { q, t: topic, s, grantee, probe } = names;
  return [
    { method: 'POST', url: '/v1/auth/register', token: null, valid: credentials, bad: credentialFields, required: ['username', 'password'] },
    { method: 'POST', url: '/v1/auth/login', token: null, valid: credentials, bad: credentialFields, required: ['username', 'password'] },
    {
      method: 'POST',
      url: '/v1/queues',
      token,
      valid: { name: `${probe}-q` },
      bad: {
        name: badName(200, true),
        visibilityTimeoutSeconds: badInteger(0, 43200),
        maxDeliveries: badInteger(1, 1000),
        deadLetterQueue: fc.oneof(notString, badName(200, true)),
        delaySeconds: badInteger(0, 900),
        retentionSeconds: badInteger(60, 1209600),
      },
      required: ['name'],
    },
    { method: 'PUT', url: `/v1/queues/${q}/grants/${grantee}`, token, valid: { actions: ['receive'] }, bad: { actions: badActions(['send', 'receive']) }, required: ['actions'] },
    {
      method: 'POST',
      url: `/v1/queues/${q}/messages`,
      token,
      valid: { body: 'probe' },
      bad: { body: notString, attributes: badAttributes, delaySeconds: badInteger(0, 900), deduplicationId: badDedup },
      required: ['body'],
    },
    { method: 'POST', url: `/v1/queues/${q}/messages/batch`, token, valid: { messages: [{ body: 'probe' }] }, bad: { messages: badMessages(true) }, required: ['messages'] },
    ...queueHandleRoutes(`/v1/queues/${q}`, token),
    {
      method: 'POST',
      url: '/v1/topics',
      token,
      valid: { name: `${probe}-t` },
      bad: { name: fc.oneof(notString, badName(200, true)), subscribe: fc.oneof(notString, fc.string().filter((x) => x !== 'anyone' && x !== 'granted'), fc.constant('Anyone')) },
      required: ['name'],
    },
    { method: 'PUT', url: `/v1/topics/${topic}/grants/${grantee}`, token, valid: { actions: ['subscribe'] }, bad: { actions: badActions(['publish', 'subscribe']) }, required: ['actions'] },
    {
      method: 'POST',
      url: `/v1/topics/${topic}/messages`,
      token,
      valid: { body: 'probe' },
      bad: { body: notString, attributes: badAttributes, deduplicationId: badDedup },
      required: ['body'],
    },
    { method: 'POST', url: `/v1/topics/${topic}/messages/batch`, token, valid: { messages: [{ body: 'probe' }] }, bad: { messages: badMessages(false) }, required: ['messages'] },
    {
      method: 'POST',
      url: `/v1/topics/${topic}/subscriptions`,
      token,
      valid: { name: `${probe}-s` },
      bad: {
        name: fc.oneof(notString, badName(200, true)),
        visibilityTimeoutSeconds: badInteger(0, 43200),
        maxDeliveries: badInteger(1, 1000),
        deadLetterQueue: fc.oneof(notString, badName(200, true)),
        filter: badFilter,
      },
      required: ['name'],
    },
    ...queueHandleRoutes(`/v1/topics/${topic}/subscriptions/${s}`, token),
  ];
}

const ROUTES = bodyRoutes(ownerToken, { q: Q, t: T, s: S, grantee: OTHER, probe: 'bi-probe' });

function omit(o: Record<string, unknown>, key: string): Record<string, unknown> {
  return Object.fromEntries(Object.entries(o).filter(([k]) => k !== key));
}

/** The route's valid body with one thing wrong: a field's value, a missing field or an unknown one. */
function wrongBodies(r: BodyRoute): fc.Arbitrary<Record<string, unknown>> {
  const fields = Object.keys(r.bad);
  const wrongValue = fc.constantFrom(...fields).chain((f) => r.bad[f]!.map((v) => ({ ...r.valid, [f]: v })));
  const unknownField = fc
    .tuple(fc.string({ minLength: 1, maxLength: 20 }).filter((k) => !fields.includes(k) && k !== '__proto__'), fc.jsonValue({ maxDepth: 2 }))
    .map(([k, v]) => ({ ...r.valid, [k]: v }));
  const missing = r.required.length === 0 ? [] : [fc.constantFrom(...r.required).map((k) => omit(r.valid, k))];
  return fc.oneof(wrongValue, unknownField, ...missing);
}

function routeInject(r: BodyRoute, payload: string | Buffer, contentType: string | null = 'application/json'): Promise<LightMyRequestResponse> {
  const headers: Record<string, string> = { ...bearer(r.token) };
  if (contentType !== null) headers['content-type'] = contentType;
  return inject({ method: r.method, url: r.url, headers, payload });
}

// ---------------------------------------------------------------------------------------------
// The barrage: nothing below may change the broker's state
// ---------------------------------------------------------------------------------------------

t.test('malformed JSON bodies: 400 on every route that takes a body', async (t) => {
  const malformed = [
    '{',
    '}',
    '[',
    '{"name":',
    '{"name":"x"',
    '{"name":"x"}}',
    '{"name":"x",}',
    "{'name':'x'}",
    '{name:"x"}',
    '{"name":"x"}{"name":"y"}',
    '{"name":"\\x41"}',
    '{"name":"a\nb"}',
    '{"name":"a\u0001b"}',
    '{"name":01}',
    '{"name":+1}',
    '{"name":.5}',
    '{"name":NaN}',
    '{"name":Infinity}',
    'nul',
    'undefined',
    '\u0000',
    ' ',
    '\n\t',
    // Prototype poisoning: refused by Fastify's parser, never merged into an object.
    '{"__proto__":{"admin":true}}',
    '{"constructor":{"prototype":{"admin":true}}}',
    '{"\\u005f_proto__":{"admin":true}}',
    // JSON, but not an object.
    'null',
    'true',
    '0',
    '-1',
    '"a string"',
    '[]',
    '[{"body":"x"}]',
    // Deep nesting: the parser and the validator must not recurse into a crash (both under 64 KiB).
    '['.repeat(20_000) + ']'.repeat(20_000),
    '{"a":'.repeat(8_000) + '1' + '}'.repeat(8_000),
  ];
  let n = 0;
  for (const r of ROUTES) {
    // An empty body is no body: refused where one is needed.
    for (const payload of [...malformed, ...(r.optional === true ? [] : [''])]) {
      const res = await routeInject(r, payload);
      const fault = problemFault(res, [400], r.url);
      if (fault !== null) t.fail(`${r.method} ${r.url} with ${JSON.stringify(payload.slice(0, 40))}: ${fault}`);
      n++;
    }
  }
  t.pass(`${n} malformed bodies refused with 400 problem+json`);
  await unchanged(t);
});

t.test('truncated JSON and trailing garbage (fast-check): 400', async (t) => {
  await holds(
    t,
    'a proper prefix of a valid body, or a valid body with garbage after it, is refused',
    fc.asyncProperty(fc.constantFrom(...ROUTES), fc.nat(), fc.string({ unit: 'binary', minLength: 1, maxLength: 20 }), fc.boolean(), async (r, cut, garbage, truncate) => {
      const text = JSON.stringify(r.valid);
      // A proper prefix of an object's text is never JSON: its closing brace is the last character.
      // The empty one is no body, which a route whose body is optional takes.
      const from = r.optional === true ? 1 : 0;
      const payload = truncate ? text.slice(0, from + (cut % (text.length - from))) : text + (garbage.trim() === '' ? 'x' : garbage);
      expectProblem(await routeInject(r, payload), [400], `${r.method} ${r.url} ${JSON.stringify(payload)}`);
    }),
    200,
  );
  await unchanged(t);
});

t.test('a valid body under the wrong content type, or none: 400, never parsed as JSON', async (t) => {
  const types = [
    'text/plain',
    'text/plain; charset=utf-8',
    'application/x-www-form-urlencoded',
    'multipart/form-data; boundary=x',
    'application/xml',
    'application/octet-stream',
    'application/jsonx',
    'application/problem+json',
    'json',
    'application',
    null,
  ];
  let n = 0;
  for (const r of ROUTES) {
    for (const ct of types) {
      // The route's own valid body: accepted under any of these types it would be a write.
      const res = await routeInject(r, JSON.stringify(r.valid), ct);
      const fault = problemFault(res, [400], r.url);
      if (fault !== null) t.fail(`${r.method} ${r.url} as ${String(ct)}: ${fault}`);
      n++;
    }
  }
  t.pass(`${n} requests with a wrong content type refused`);
  await unchanged(t);
});

t.test('wrong types, out-of-range numbers, unknown and missing fields (fast-check): 400', async (t) => {
  for (const r of ROUTES) {
    await holds(
      t,
      `${r.method} ${r.url}`,
      fc.asyncProperty(wrongBodies(r), async (body) => {
        expectProblem(await routeInject(r, JSON.stringify(body)), [400], `${r.method} ${r.url} ${JSON.stringify(body).slice(0, 300)}`);
      }),
      40,
    );
  }
  await unchanged(t);
});

t.test('query strings and headers with wrong values: 400', async (t) => {
  const urls = [
    '/v1/queues?limit=0',
    '/v1/queues?limit=101',
    '/v1/queues?limit=-1',
    '/v1/queues?limit=1.5',
    '/v1/queues?limit=abc',
    '/v1/queues?limit=',
    '/v1/queues?limit=1&limit=2',
    '/v1/queues?unknown=1',
    '/v1/queues?cursor=' + 'x'.repeat(401),
    '/v1/queues?cursor=not-a-cursor',
    `/v1/queues?cursor=${Buffer.from(JSON.stringify({ after: '../x' })).toString('base64url')}`,
    `/v1/queues?cursor=${Buffer.from(JSON.stringify({ after: 1 })).toString('base64url')}`,
    `/v1/queues?cursor=${Buffer.from('{"after":').toString('base64url')}`,
    '/v1/topics?limit=1000',
    '/v1/topics?cursor=%00',
    `/v1/queues/${Q}?consistency=weak`,
    `/v1/queues/${Q}?consistency=`,
    `/v1/queues/${Q}?consistency=stale&consistency=strong`,
    `/v1/queues/${Q}?other=1`,
    `/v1/topics/${T}?consistency=STALE`,
    `/v1/topics/${T}/subscriptions/${S}?consistency=1`,
  ];
  for (const url of urls) t.equal(problemFault(await send('GET', url), [400], url), null, `GET ${url}`);
  for (const key of ['', 'a b', 'é', 'x'.repeat(256), 'tab\tkey']) {
    // The route's valid body: only the bad Idempotency-Key stands between it and a write.
    const res = await inject({
      method: 'POST',
      url: `/v1/queues/${Q}/messages`,
      headers: { ...bearer(ownerToken), 'content-type': 'application/json', 'idempotency-key': key },
      payload: JSON.stringify({ body: 'probe' }),
    });
    t.equal(problemFault(res, [400]), null, `Idempotency-Key ${JSON.stringify(key.slice(0, 20))}`);
  }
  await unchanged(t);
});

t.test('oversized bodies, attributes and batches: 413 or 400', async (t) => {
  const limit = 256 * 1024;
  for (const base of [`/v1/queues/${Q}`, `/v1/topics/${T}`]) {
    // Fewer characters than the limit, more UTF-8 bytes: the limit is in bytes.
    const euros = '€'.repeat(Math.floor(limit / 3) + 1);
    t.ok(euros.length < limit && Buffer.byteLength(euros) > limit, 'the € body has fewer characters than the limit and more bytes');
    t.equal(problemFault(await send('POST', `${base}/messages`, { body: euros }), [413]), null, `${base}: ${Buffer.byteLength(euros)} bytes of €`);
    t.equal(problemFault(await send('POST', `${base}/messages`, { body: 'a'.repeat(limit + 1) }), [413]), null, `${base}: 256 KiB + 1 ASCII bytes`);
    const inBatch = { messages: [{ body: 'ok' }, { body: '🐇'.repeat(limit / 4 + 1) }] };
    t.equal(problemFault(await send('POST', `${base}/messages/batch`, inBatch), [413]), null, `${base}: one oversized body in a batch`);
    const many = { messages: Array.from({ length: 101 }, (_, i) => ({ body: `m${i}` })) };
    t.equal(problemFault(await send('POST', `${base}/messages/batch`, many), [400]), null, `${base}: a batch of 101 messages`);
    const heavy = { messages: Array.from({ length: 5 }, () => ({ body: 'b'.repeat(250 * 1024) })) };
    t.equal(problemFault(await send('POST', `${base}/messages/batch`, heavy), [413]), null, `${base}: a batch of 1.25 MiB of bodies`);
    // Attributes count toward the batch's MiB: 100 small bodies with 16 full-size pairs each.
    const full = Object.fromEntries(Array.from({ length: 16 }, (_, i) => [`${i}`.padStart(128, 'k'), 'v'.repeat(1024)]));
    const attrs = { messages: Array.from({ length: 100 }, () => ({ body: 'x', attributes: full })) };
    t.equal(problemFault(await send('POST', `${base}/messages/batch`, attrs), [413]), null, `${base}: a batch whose attributes exceed 1 MiB`);
    const seventeen = Object.fromEntries(Array.from({ length: 17 }, (_, i) => [`k${i}`, 'v']));
    t.equal(problemFault(await send('POST', `${base}/messages`, { body: 'x', attributes: seventeen }), [400]), null, `${base}: 17 attributes`);
    t.equal(problemFault(await send('POST', `${base}/messages`, { body: 'x', attributes: { ['k'.repeat(129)]: 'v' } }), [400]), null, `${base}: a 129-character key`);
    t.equal(problemFault(await send('POST', `${base}/messages`, { body: 'x', attributes: { k: 'v'.repeat(1025) } }), [400]), null, `${base}: a 1025-character value`);
    // Beyond the route's own request limit (8 MiB): refused by the parser, before validation.
    const huge = JSON.stringify({ body: 'h'.repeat(8 * 1024 * 1024) });
    t.equal(problemFault(await routeInject({ ...ROUTES[0]!, method: 'POST', url: `${base}/messages`, token: ownerToken }, huge), [413]), null, `${base}: an 8 MiB request`);
  }
  // Routes that take no messages accept 64 KiB.
  const over64k = (o: Record<string, unknown>): string => JSON.stringify({ ...o, pad: 'p'.repeat(65 * 1024) });
  for (const r of ROUTES.filter((x) => !x.url.includes('/messages'))) {
    // Subscription creation takes 256 KiB (a full filter can pass 64 KiB as escaped JSON): there the pad is an unknown field.
      t.equal(problemFault(await routeInject(r, over64k(r.valid)), r.url.endsWith('/subscriptions') ? [400] : [413]), null, `${r.method} ${r.url}: a 65 KiB request`);
  }
  await holds(
    t,
    'bodies of more than 256 KiB of UTF-8 (multi-byte, so fewer characters than bytes) get 413',
    fc.asyncProperty(fc.constantFrom('é', '€', '🐇', 'a€', 'ß🐇'), fc.integer({ min: 1, max: 5000 }), fc.boolean(), async (unit, extra, topic) => {
      const body = unit.repeat(Math.ceil((limit + extra) / Buffer.byteLength(unit)));
      const url = topic ? `/v1/topics/${T}/messages` : `/v1/queues/${Q}/messages`;
      expectProblem(await send('POST', url, { body }), [413], `${url} ${Buffer.byteLength(body)} bytes of ${unit}`);
    }),
    15,
  );
  await unchanged(t);
});

/** Routes with names in their path; each answers 400 or 404 to a name that cannot exist. */
function pathsWith(enc: string): [Method, string, unknown][] {
  return [
    ['GET', `/v1/queues/${enc}`, undefined],
    ['GET', `/v1/queues/${enc}?consistency=stale`, undefined],
    ['DELETE', `/v1/queues/${enc}`, undefined],
    ['POST', `/v1/queues/${enc}/messages`, { body: 'probe' }],
    ['POST', `/v1/queues/${enc}/messages/batch`, { messages: [{ body: 'probe' }] }],
    ['POST', `/v1/queues/${enc}/receive`, {}],
    ['POST', `/v1/queues/${enc}/ack`, { receiptHandles: ['bogus'] }],
    ['POST', `/v1/queues/${enc}/purge`, undefined],
    ['GET', `/v1/queues/${enc}/grants`, undefined],
    ['PUT', `/v1/queues/${enc}/grants/${OTHER}`, { actions: ['receive'] }],
    ['GET', `/v1/topics/${enc}`, undefined],
    ['DELETE', `/v1/topics/${enc}`, undefined],
    ['POST', `/v1/topics/${enc}/messages`, { body: 'probe' }],
    ['POST', `/v1/topics/${enc}/subscriptions`, { name: 'bi-probe-s' }],
    ['GET', `/v1/topics/${enc}/subscriptions`, undefined],
    ['GET', `/v1/topics/${T}/subscriptions/${enc}`, undefined],
    ['DELETE', `/v1/topics/${T}/subscriptions/${enc}`, undefined],
    ['POST', `/v1/topics/${T}/subscriptions/${enc}/receive`, {}],
    ['POST', `/v1/topics/${enc}/subscriptions/${S}/nack`, { receiptHandles: ['bogus'] }],
  ];
}

t.test('names that are not names (fast-check): 400 in bodies, 400 or 404 in paths', async (t) => {
  await holds(
    t,
    'as the name of a new queue, topic, subscription or dead-letter queue',
    fc.asyncProperty(badName(300, true), async (name) => {
      const attempts: [string, unknown][] = [
        ['/v1/queues', { name }],
        ['/v1/queues', { name: 'bi-probe-q', maxDeliveries: 1, deadLetterQueue: name }],
        ['/v1/topics', { name }],
        [`/v1/topics/${T}/subscriptions`, { name }],
        [`/v1/topics/${T}/subscriptions`, { name: 'bi-probe-s', maxDeliveries: 1, deadLetterQueue: name }],
      ];
      for (const [url, body] of attempts) expectProblem(await send('POST', url, body), [400], `POST ${url} ${JSON.stringify(body)}`);
    }),
    100,
  );
  // Longer than 256 UTF-16 units trips the router's own limit: see the framework-errors test.
  await holds(
    t,
    'URL-encoded into every path that takes a queue, topic or subscription name',
    fc.asyncProperty(badName(256, false), async (name) => {
      for (const [method, url, body] of pathsWith(encodeURIComponent(name))) expectProblem(await send(method, url, body), [400, 404], `${method} ${url}`, url);
    }),
    60,
  );
  await holds(
    t,
    'as a username: in register, login and grant paths',
    fc.asyncProperty(badUsername(256), fc.constantFrom('a-long-enough-password', 'p'), async (username, password) => {
      expectProblem(await send('POST', '/v1/auth/register', { username, password }, null), [400], `register ${JSON.stringify(username)}`);
      expectProblem(await send('POST', '/v1/auth/login', { username, password }, null), [400], `login ${JSON.stringify(username)}`);
      // No lone surrogates in badUsername's paths: encodeURIComponent cannot encode them.
      const enc = encodeURIComponent(username);
      for (const [method, url, body] of [
        ['PUT', `/v1/queues/${Q}/grants/${enc}`, { actions: ['send'] }],
        ['DELETE', `/v1/queues/${Q}/grants/${enc}`, undefined],
        ['PUT', `/v1/topics/${T}/grants/${enc}`, { actions: ['publish'] }],
        ['DELETE', `/v1/topics/${T}/grants/${enc}`, undefined],
      ] as [Method, string, unknown][]) {
        expectProblem(await send(method, url, body), [400, 404], `${method} ${url}`, url);
      }
    }),
    60,
  );
  await unchanged(t);
});

t.test('names the router itself refuses: problem+json too', async (t) => {
  // Fastify answers these before any route or error handler of ours runs, with its own
  // application/json body (FST_ERR_BAD_URL, FST_ERR_MAX_PARAM_LENGTH with status 414) unless the
  // app passes frameworkErrors.
  const cases: [string, string][] = [
    ['a malformed percent-escape', '/v1/queues/%E0%A4%A'],
    ['a lone %', '/v1/queues/%'],
    ['%ff (not UTF-8)', '/v1/topics/%ff'],
    ['an overlong UTF-8 slash', `/v1/topics/${T}/subscriptions/%C0%AF`],
    ['an encoded lone surrogate', '/v1/queues/%ED%A0%80/messages'],
    ['a 257-character name', `/v1/queues/${'a'.repeat(257)}`],
    ['a 1000-character name', `/v1/topics/${'t'.repeat(1000)}`],
    ['200 é (400 encoded bytes, 200 characters)', `/v1/queues/${encodeURIComponent('é'.repeat(200))}`],
    ['300 🐇 in a subscription path', `/v1/topics/${T}/subscriptions/${encodeURIComponent('🐇'.repeat(300))}`],
  ];
  for (const [what, url] of cases) t.equal(problemFault(await send('GET', url), [400, 404], url), null, `${what}: GET ${url.slice(0, 60)}`);
  await unchanged(t);
});

// ---------------------------------------------------------------------------------------------
// Tokens
// ---------------------------------------------------------------------------------------------

const b64url = (s: string | Buffer): string => Buffer.from(s).toString('base64url');

/** A JWT built by hand, so that every part can be wrong: HMAC-SHA with `secret`, or no signature. */
function jwt(header: Record<string, unknown>, payload: Record<string, unknown>, secret: string | null, hash = 'sha256'): string {
  const signed = `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(payload))}`;
  return `${signed}.${secret === null ? '' : createHmac(hash, secret).update(signed).digest('base64url')}`;
}
const HS256 = { alg: 'HS256', typ: 'JWT' };
const nowS = (): number => Math.floor(Date.now() / 1000);
const claims = (sub: unknown, extra: Record<string, unknown> = {}): Record<string, unknown> => ({ sub, iat: nowS(), exp: nowS() + 600, ...extra });

/** Requests that change the fixture if authentication were skipped: a wrong 2xx shows. */
const GUARDED: [Method, string, unknown][] = [
  ['GET', '/v1/auth/me', undefined],
  ['GET', `/v1/queues/${Q}`, undefined],
  ['POST', `/v1/queues/${Q}/messages`, { body: 'sent without a valid token' }],
  ['POST', `/v1/queues/${Q}/receive`, {}],
  ['POST', `/v1/queues/${Q}/purge`, undefined],
  ['PUT', `/v1/queues/${Q}/grants/${OTHER}`, { actions: ['send', 'receive'] }],
  ['DELETE', `/v1/queues/${Q}`, undefined],
  ['DELETE', `/v1/topics/${T}`, undefined],
];

async function expectUnauthorized(authorization: string | null, what: string): Promise<void> {
  for (const [method, url, body] of GUARDED) {
    const headers: Record<string, string> = authorization === null ? {} : { authorization };
    const res =
      body === undefined
        ? await inject({ method, url, headers })
        : await inject({ method, url, headers: { ...headers, 'content-type': 'application/json' }, payload: JSON.stringify(body) });
    expectProblem(res, [401], `${what}: ${method} ${url}`);
  }
}

t.test('tokens: a well-formed token works (the control for the cases below)', async (t) => {
  for (const token of [ownerToken, jwt(HS256, claims(OWNER), TEST_JWT_SECRET)]) {
    const res = await send('GET', '/v1/auth/me', undefined, token);
    t.equal(res.statusCode, 200, 'GET /v1/auth/me: 200');
    t.same(JSON.parse(res.body), { username: OWNER }, 'names the owner');
  }
});

t.test('tokens: missing, malformed, forged, expired, for nobody: 401 problem+json', async (t) => {
  const other = jwt(HS256, claims(OTHER), TEST_JWT_SECRET);
  const [oh, , os] = other.split('.') as [string, string, string];
  const fixed: [string, string | null][] = [
    ['no Authorization header', null],
    ['an empty header', ''],
    ['Bearer and nothing', 'Bearer'],
    ['Bearer and a space', 'Bearer '],
    ['Basic credentials', `Basic ${b64url(`${OWNER}:password-${OWNER}`)}`],
    ['the token without its scheme', ownerToken],
    ['two tokens', `Bearer ${ownerToken} ${ownerToken}`],
    ['three dots', 'Bearer ...'],
    ['alg none, no signature', `Bearer ${jwt({ alg: 'none', typ: 'JWT' }, claims(OWNER), null)}`],
    ['alg none, with a valid HS256 signature', `Bearer ${jwt({ alg: 'none', typ: 'JWT' }, claims(OWNER), TEST_JWT_SECRET)}`],
    ['alg None', `Bearer ${jwt({ alg: 'None' }, claims(OWNER), null)}`],
    ['HS256 with an empty signature', `Bearer ${jwt(HS256, claims(OWNER), null)}`],
    ['HS512 with the right secret (not an allowed algorithm)', `Bearer ${jwt({ alg: 'HS512', typ: 'JWT' }, claims(OWNER), TEST_JWT_SECRET, 'sha512')}`],
    ['RS256 header, HMAC signature', `Bearer ${jwt({ alg: 'RS256', typ: 'JWT' }, claims(OWNER), TEST_JWT_SECRET)}`],
    ['another secret', `Bearer ${jwt(HS256, claims(OWNER), 'not-the-cluster-secret-but-long-enough')}`],
    ['the secret with a different case', `Bearer ${jwt(HS256, claims(OWNER), TEST_JWT_SECRET.toUpperCase())}`],
    ['a payload swapped under another user’s signature', `Bearer ${oh}.${b64url(JSON.stringify(claims(OWNER)))}.${os}`],
    ['expired a second ago', `Bearer ${jwt(HS256, claims(OWNER, { iat: nowS() - 3600, exp: nowS() - 2 }), TEST_JWT_SECRET)}`],
    ['not valid before next hour', `Bearer ${jwt(HS256, claims(OWNER, { nbf: nowS() + 3600 }), TEST_JWT_SECRET)}`],
    ['a user that does not exist', `Bearer ${jwt(HS256, claims('bi-nobody'), TEST_JWT_SECRET)}`],
    ['issued a day before its user was registered', `Bearer ${jwt(HS256, claims(OWNER, { iat: nowS() - 86_400 }), TEST_JWT_SECRET)}`],
    ['sub a number', `Bearer ${jwt(HS256, claims(42), TEST_JWT_SECRET)}`],
    ['sub an array', `Bearer ${jwt(HS256, claims([OWNER]), TEST_JWT_SECRET)}`],
    ['sub an object', `Bearer ${jwt(HS256, claims({ username: OWNER }), TEST_JWT_SECRET)}`],
    ['sub null', `Bearer ${jwt(HS256, claims(null), TEST_JWT_SECRET)}`],
    ['no sub', `Bearer ${jwt(HS256, { iat: nowS(), exp: nowS() + 600 }, TEST_JWT_SECRET)}`],
    ['no exp (it would never expire)', `Bearer ${jwt(HS256, { sub: OWNER, iat: nowS() }, TEST_JWT_SECRET)}`],
    ['no iat', `Bearer ${jwt(HS256, { sub: OWNER, exp: nowS() + 600 }, TEST_JWT_SECRET)}`],
    ['iat not a number', `Bearer ${jwt(HS256, claims(OWNER, { iat: 'now' }), TEST_JWT_SECRET)}`],
    ['sub an invalid username', `Bearer ${jwt(HS256, claims("x'; drop table users; --"), TEST_JWT_SECRET)}`],
  ];
  for (const [what, authorization] of fixed) {
    try {
      await expectUnauthorized(authorization, what);
      t.pass(what);
    } catch (err) {
      t.fail((err as Error).message);
    }
  }

  const printable = fc.string({ unit: fc.integer({ min: 0x21, max: 0x7e }).map((c) => String.fromCharCode(c)), maxLength: 200 });
  await holds(
    t,
    'garbage, JWT-shaped or not',
    fc.asyncProperty(
      fc.oneof(printable, fc.tuple(fc.base64String(), fc.base64String(), fc.base64String()).map((parts) => parts.join('.').replaceAll('=', ''))),
      async (garbage) => expectUnauthorized(`Bearer ${garbage}`, `Bearer ${garbage}`),
    ),
    30,
  );
  await holds(
    t,
    'any claims signed with any other secret',
    fc.asyncProperty(
      fc.string({ minLength: 1, maxLength: 64 }).filter((s) => s !== TEST_JWT_SECRET),
      fc.constantFrom(OWNER, OTHER),
      fc.jsonValue({ maxDepth: 1 }),
      async (secret, sub, extra) => expectUnauthorized(`Bearer ${jwt(HS256, claims(sub, { extra }), secret)}`, `secret ${JSON.stringify(secret)}`),
    ),
    30,
  );
  await holds(
    t,
    'the right secret, but expired at any time in the past',
    fc.asyncProperty(fc.integer({ min: 2, max: 10 * 365 * 86_400 }), async (ago) =>
      expectUnauthorized(`Bearer ${jwt(HS256, claims(OWNER, { iat: nowS() - ago - 3600, exp: nowS() - ago }), TEST_JWT_SECRET)}`, `expired ${ago} s ago`),
    ),
    30,
  );
  await holds(
    t,
    'the right secret, for a user that does not exist',
    fc.asyncProperty(
      fc.string({ unit: fc.constantFrom(...USERNAME_CHARS), minLength: 3, maxLength: 64 }).filter((u) => ![OWNER, OTHER, ROUNDTRIP_USER].includes(u)),
      async (sub) => expectUnauthorized(`Bearer ${jwt(HS256, claims(sub), TEST_JWT_SECRET)}`, `sub ${sub}`),
    ),
    30,
  );
  await unchanged(t);
});

t.test('requests the HTTP parser refuses (a real socket): problem+json too', async (t) => {
  // Node's parser refuses these before Fastify routes them; Fastify then writes its own
  // application/json answer unless the app passes clientErrorHandler.
  const { port } = local;
  // 431 for headers too large (HTTP's own status), 400 for the rest; the code is validation_failed.
  const cases: [string, string, number][] = [
    ['a space in the path', 'GET /v1/queues/a b HTTP/1.1\r\nHost: localhost\r\n\r\n', 400],
    ['a control character in the path', 'GET /v1/queues/a\u0001b HTTP/1.1\r\nHost: localhost\r\n\r\n', 400],
    ['a Content-Length that is not a number', 'POST /v1/queues HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: abc\r\n\r\n{}', 400],
    ['Content-Length and Transfer-Encoding', 'POST /v1/queues HTTP/1.1\r\nHost: localhost\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n{}', 400],
    ['20 KiB of Authorization header', `GET /v1/auth/me HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer ${'a'.repeat(20 * 1024)}\r\n\r\n`, 431],
  ];
  for (const [what, request, status] of cases) {
    const res = await rawHttp(port, request);
    let problem: { status?: number; code?: string } = {};
    try {
      problem = JSON.parse(res.body) as typeof problem;
    } catch {
      // not JSON: the assertion below shows the body
    }
    const ok = res.status === status && (res.contentType ?? '').startsWith('application/problem+json') && problem.status === status && problem.code === 'validation_failed';
    t.ok(ok, `${what}: ${status} application/problem+json, validation_failed`, { found: { status: res.status, contentType: res.contentType, body: res.body.slice(0, 200) } });
  }
  await unchanged(t);
});

/** Writes `request` as is on a fresh connection; reads the answer until the server closes. */
function rawHttp(port: number, request: string): Promise<{ status: number; contentType: string | undefined; body: string }> {
  return new Promise((resolve) => {
    let data = '';
    const socket = connect(port, '127.0.0.1', () => socket.write(request, 'latin1'));
    socket.setEncoding('latin1');
    socket.setTimeout(10_000, () => socket.destroy());
    socket.on('data', (chunk: string) => {
      data += chunk;
      // One answer is all we want; keep-alive would hold the socket open.
      if (data.includes('\r\n\r\n')) {
        const length = /\r\ncontent-length: *(\d+)/i.exec(data);
        if (length !== null && data.length >= data.indexOf('\r\n\r\n') + 4 + Number(length[1])) socket.destroy();
      }
    });
    // A reset after the answer (the server closes a connection it could not parse) is expected.
    socket.on('error', () => undefined);
    socket.on('close', () => {
      const [head = '', body = ''] = data.split('\r\n\r\n', 2);
      resolve({ status: Number(/^HTTP\/1\.[01] (\d{3})/.exec(head)?.[1] ?? 0), contentType: /\r\ncontent-type: *([^\r\n]*)/i.exec(head)?.[1], body });
    });
  });
}

t.test('any request to any route (fast-check): a status its operation declares, problem+json, never a 5xx', async (t) => {
  // The routes as the OpenAPI document declares them, with the statuses of each.
  type Operation = { method: Method; path: string; statuses: number[]; secured: boolean; keyed: boolean };
  const doc = local.app.swagger() as unknown as { paths: Record<string, Record<string, { responses: Record<string, unknown>; security?: unknown[]; parameters?: { in: string; name: string }[] }>> };
  const operations: Operation[] = Object.entries(doc.paths).flatMap(([path, ops]) =>
    Object.entries(ops).map(([m, op]) => ({
      method: m.toUpperCase() as Method,
      path,
      statuses: Object.keys(op.responses).map(Number),
      secured: (op.security?.length ?? 0) > 0,
      keyed: (op.parameters ?? []).some((x) => x.in === 'header' && x.name.toLowerCase() === 'idempotency-key'),
    })),
  );
  t.ok(operations.length >= 30, `${operations.length} operations`);
  const forged = `Bearer ${jwt(HS256, claims(OWNER), 'not-the-cluster-secret-but-long-enough')}`;
  // A request that writes must be refused before it reaches Raft (the state is compared after the
  // barrage): by its token, its Idempotency-Key, or a path parameter that is not a name.
  const poison = fc.constantFrom('token', 'key', 'param');
  const param = fc.oneof(fc.constantFrom(Q, T, S, DLQ, OTHER, OWNER), validName, badName(300, false));
  const extraHeaders = fc.dictionary(
    fc.constantFrom('accept', 'x-request-id', 'x-forwarded-for', 'if-none-match', 'accept-encoding', 'cache-control', 'x-stale', 'origin'),
    fc.string({ unit: fc.integer({ min: 0x20, max: 0x7e }).map((c) => String.fromCharCode(c)), maxLength: 60 }),
    { maxKeys: 3 },
  );
  const body = fc.oneof(fc.constant(undefined), fc.jsonValue({ maxDepth: 3 }).map((v) => JSON.stringify(v)), fc.string({ unit: 'binary', maxLength: 200 }));
  const query = fc.oneof(fc.constant(''), fc.constantFrom('?limit=1', '?consistency=stale', '?cursor=x', '?limit=0', '?x=1', '?consistency=strong&limit=2'));
  await holds(
    t,
    'random method-path-header-body combinations over the documented routes',
    fc.asyncProperty(fc.nat(), fc.array(param, { minLength: 3, maxLength: 3 }), poison, extraHeaders, body, query, fc.constantFrom('application/json', 'text/plain', 'application/json; charset=latin1', ''), async (i, params, poisoned, headers, payload, q, ct) => {
      const op = operations[i % operations.length]!;
      // A path without parameters (logout, for one) is poisoned by its token.
      const why = poisoned === 'param' && !op.path.includes('{') ? 'token' : poisoned;
      const writes = op.method !== 'GET';
      let k = 0;
      let mangled = false;
      const url = op.path.replace(/\{[^}]+\}/g, () => {
        const v = params[k++]!;
        if (writes && why === 'param') {
          mangled = true;
          return encodeURIComponent(`${v}/x y`);
        }
        mangled ||= !NAME.test(v);
        return encodeURIComponent(v);
      }) + q;
      // Register and login take no token and no key: their poison is a body that is no credential.
      const open = op.path === '/v1/auth/register' || op.path === '/v1/auth/login';
      const h: Record<string, string> = { ...headers };
      if (ct !== '') h['content-type'] = ct;
      if (!open || op.path === '/v1/auth/login') {
        if (writes && (why === 'token' || !op.secured)) h.authorization = forged;
        else if (op.secured || op.path.startsWith('/v1/')) h.authorization = `Bearer ${ownerToken}`;
        if (writes && why === 'key' && op.keyed) h['idempotency-key'] = 'not a key';
        else if (writes && why === 'key') h.authorization = forged;
      }
      const sent = open && op.path === '/v1/auth/register' ? JSON.stringify({ username: 'x', password: payload ?? '' }) : payload;
      const res = await inject({ method: op.method, url, headers: h, ...(sent === undefined ? {} : { payload: sent }) });
      const what = `${op.method} ${url} ${JSON.stringify(h).slice(0, 200)} ${String(sent).slice(0, 200)}`;
      // /readyz answers its own 503 when a partition has no leader: the node's state, not the input.
      if (res.statusCode >= 500 && !(op.path === '/readyz' && op.statuses.includes(res.statusCode))) throw new Error(`${what}: ${res.statusCode} ${res.body.slice(0, 300)}`);
      if (res.statusCode < 400) {
        if (writes && !(op.path === '/v1/auth/login')) throw new Error(`${what}: a write was accepted (${res.statusCode}) in the barrage`);
        if (!op.statuses.includes(res.statusCode)) throw new Error(`${what}: ${res.statusCode} is not declared`);
        return;
      }
      // A path parameter that is not a name may make the path another route's, or none.
      const allowed = [...op.statuses, 400, 413, ...(mangled ? [404] : [])].filter((x) => x >= 400 && x < 500);
      expectProblem(res, allowed, what, url);
    }),
    400,
  );
  await unchanged(t);
});

t.test('durable state: the partition is as before the barrage', async (t) => {
  t.equal(durable(), durableBefore, 'stateHash unchanged');
});

// ---------------------------------------------------------------------------------------------
// Valid but hostile data: what is accepted comes back exactly. These write: after the hash check.
// ---------------------------------------------------------------------------------------------

const RTQ = 'bi-rt-queue';
const RTT = 'bi-rt-topic';
const RT_ALL = 'bi-rt-all';
const RT_FILTERED = 'bi-rt-filtered';

/** Receives everything visible and acks it, so that every run starts from an empty channel. */
const drain = (channel: string): Promise<ReceivedMessage[]> => drainChannel(local.url, channel, rtToken);

const sameAttributes = (a: Record<string, string>, b: Record<string, string>): boolean =>
  JSON.stringify(Object.entries(a).sort(([x], [y]) => (x < y ? -1 : 1))) === JSON.stringify(Object.entries(b).sort(([x], [y]) => (x < y ? -1 : 1)));

function expectSame(m: ReceivedMessage | undefined, body: string, attributes: Record<string, string>, where: string): void {
  if (m === undefined) throw new Error(`${where}: the message did not come back`);
  if (m.body !== body || !Buffer.from(m.body, 'utf8').equals(Buffer.from(body, 'utf8'))) throw new Error(`${where}: body ${JSON.stringify(m.body.slice(0, 80))} came back for ${JSON.stringify(body.slice(0, 80))}`);
  if (!sameAttributes(m.attributes, attributes)) throw new Error(`${where}: attributes ${JSON.stringify(m.attributes)} came back for ${JSON.stringify(attributes)}`);
}

/** Characters that trip up encoders, escapers, terminals and C strings. */
const TRICKY = ['\u0000', '\u0001', '\u001f', '\u007f', '\u0085', '\u00a0', '\u2028', '\u2029', '\ufeff', '\ufffd', '\uffff', '\u{10ffff}', '\u{1f407}', '👩‍👩‍👧', 'é', 'e\u0301', '"', '\\', "'", '/', '%', '\r\n', '\t', '\u202e', "'; drop table messages; --"];

/** Any Unicode text (no lone surrogates: see the not-text test), at most `max` code points. */
function text(max: number, min = 0): fc.Arbitrary<string> {
  return fc
    .oneof(
      fc.string({ unit: 'binary', minLength: min, maxLength: max }),
      fc.string({ unit: 'grapheme', minLength: min, maxLength: Math.max(min, Math.floor(max / 8)) }),
      fc.string({ unit: fc.constantFrom(...TRICKY), minLength: min, maxLength: Math.max(min, Math.floor(max / 4)) }),
    )
    .filter((s) => [...s].length <= max);
}

const hostileKey = fc.oneof(
  text(128, 1),
  fc.constantFrom('constructor', 'toString', 'hasOwnProperty', 'valueOf', 'prototype', '__defineGetter__', 'then', 'length', '0', ' ', '\u0000', 'k'.repeat(128), '🐇'.repeat(128)),
);
/** Attributes within the limits. "__proto__" is a case of its own (see below). */
const attributes = fc
  .dictionary(hostileKey, fc.oneof(text(1024), fc.string({ unit: 'binary', minLength: 1024, maxLength: 1024 })), { maxKeys: 16, noNullPrototype: true })
  .filter((a) => !Object.prototype.hasOwnProperty.call(a, '__proto__'));
const messageBody = fc.oneof({ weight: 6, arbitrary: text(300) }, { weight: 2, arbitrary: text(5000) }, { weight: 1, arbitrary: fc.string({ unit: 'binary', minLength: 20_000, maxLength: 30_000 }) });

t.test('round trip: any text in bodies and attributes comes back byte for byte', async (t) => {
  await must(201, 'POST', '/v1/queues', { name: RTQ }, rtToken);
  await must(201, 'POST', '/v1/topics', { name: RTT }, rtToken);
  await must(201, 'POST', `/v1/topics/${RTT}/subscriptions`, { name: RT_ALL }, rtToken);

  await holds(
    t,
    'queue: send, receive, ack',
    fc.asyncProperty(messageBody, attributes, async (body, attrs) => {
      const sent = (await must(201, 'POST', `/v1/queues/${RTQ}/messages`, { body, attributes: attrs }, rtToken)) as { messageId: string };
      const got = await drain(`/v1/queues/${RTQ}`);
      expectSame(got.find((m) => m.messageId === sent.messageId), body, attrs, 'queue');
    }),
    30,
    12_000,
  );
  await drain(`/v1/queues/${RTQ}`);
  await holds(
    t,
    'topic: a subscription filtered on the attributes gets the message, as does one without a filter',
    fc.asyncProperty(messageBody, attributes, async (body, attrs) => {
      // A few of the pairs, as many as a filter holds (MAX_FILTER_BYTES of JSON, since 1.8.0).
      const wanted: Record<string, string> = {};
      for (const [k, v] of Object.entries(attrs).slice(0, 4)) {
        if (Buffer.byteLength(JSON.stringify({ ...wanted, [k]: v }), 'utf8') > MAX_FILTER_BYTES) break;
        wanted[k] = v;
      }
      const filter = Object.keys(wanted).length === 0 ? undefined : { attributes: wanted };
      const sub = (await must(201, 'POST', `/v1/topics/${RTT}/subscriptions`, { name: RT_FILTERED, ...(filter === undefined ? {} : { filter }) }, rtToken)) as {
        filter: { attributes: Record<string, string> } | null;
      };
      try {
        // The filter comes back in the shape it was sent.
        if (filter !== undefined && (sub.filter === null || !sameAttributes(sub.filter.attributes, wanted))) throw new Error(`filter ${JSON.stringify(sub.filter)} stored for ${JSON.stringify(wanted)}`);
        const published = (await must(201, 'POST', `/v1/topics/${RTT}/messages`, { body, attributes: attrs }, rtToken)) as { messageId: string; subscriptions: number };
        if (published.subscriptions !== 2) throw new Error(`delivered to ${published.subscriptions} subscriptions, not 2`);
        for (const s of [RT_ALL, RT_FILTERED]) {
          const got = await drain(`/v1/topics/${RTT}/subscriptions/${s}`);
          expectSame(got.find((m) => m.messageId === published.messageId), body, attrs, s);
        }
      } finally {
        await must(204, 'DELETE', `/v1/topics/${RTT}/subscriptions/${RT_FILTERED}`, undefined, rtToken);
        await drain(`/v1/topics/${RTT}/subscriptions/${RT_ALL}`);
      }
    }),
    15,
    12_000,
  );
});

t.test('round trip: attribute keys with line breaks', async (t) => {
  // Valid keys (1 to 128 characters, nothing else is said of them) that a JavaScript "^.*$" does
  // not match, since "." stops at line terminators.
  const keys = ['\n', 'line\nbreak', 'cr\r', '\r\n', 'ls\u2028', 'ps\u2029', 'nel\u0085'];
  const attrs = Object.fromEntries(keys.map((k, i) => [k, `v${i}`]));
  const sent = (await must(201, 'POST', `/v1/queues/${RTQ}/messages`, { body: 'keys', attributes: attrs }, rtToken)) as { messageId: string };
  const got = (await drain(`/v1/queues/${RTQ}`)).find((m) => m.messageId === sent.messageId);
  // Compared as printable text: raw line breaks would break TAP's own output.
  const names = (o: Record<string, string> | null | undefined): string[] => Object.keys(o ?? {}).map(printable).sort();
  t.same(names(got?.attributes), names(attrs), 'every key comes back from receive');
  type Filtered = { filter: { attributes: Record<string, string> } | null };
  const sub = (await must(201, 'POST', `/v1/topics/${RTT}/subscriptions`, { name: 'bi-rt-breaks', filter: { attributes: attrs } }, rtToken)) as Filtered;
  t.same(names(sub.filter?.attributes), names(attrs), 'every key of the filter comes back in the 201');
  const read = (await must(200, 'GET', `/v1/topics/${RTT}/subscriptions/bi-rt-breaks`, undefined, rtToken)) as Filtered;
  t.same(names(read.filter?.attributes), names(attrs), 'and from GET');
  await must(204, 'DELETE', `/v1/topics/${RTT}/subscriptions/bi-rt-breaks`, undefined, rtToken);
});

t.test('round trip at the limits: 256 KiB bodies, 1 MiB batches, 16 full attributes', async (t) => {
  // On every node, leader or follower: test/api/limits-every-node.test.ts.
  // 87,381 € (3 bytes each) and one ASCII byte: 262,144 bytes exactly.
  const body = '€'.repeat(87_381) + 'a';
  t.equal(Buffer.byteLength(body), 256 * 1024, 'the body is exactly 256 KiB');
  const attrs = Object.fromEntries(Array.from({ length: 16 }, (_, i) => ['🐇'.repeat(128 - String(i).length) + String(i), 'ü'.repeat(1024)]));
  const headers = { ...bearer(rtToken), 'content-type': 'application/json' };
  {
    const res = await inject({ method: 'POST', url: `/v1/queues/${RTQ}/messages`, headers, payload: JSON.stringify({ body, attributes: attrs }) });
    t.equal(res.statusCode, 201, 'a 256 KiB message with 16 full attributes is accepted', { body: res.body.slice(0, 300) });
    const got = await drain(`/v1/queues/${RTQ}`);
    if (res.statusCode === 201) {
      const id = (JSON.parse(res.body) as { messageId: string }).messageId;
      t.doesNotThrow(() => expectSame(got.find((m) => m.messageId === id), body, attrs, 'queue'), 'it comes back exactly');
    }
    // Four bodies of 255 KiB: just under the batch's 1 MiB.
    const batch = Array.from({ length: 4 }, (_, j) => ({ body: String(j).repeat(255 * 1024) }));
    const res2 = await inject({ method: 'POST', url: `/v1/queues/${RTQ}/messages/batch`, headers, payload: JSON.stringify({ messages: batch }) });
    t.equal(res2.statusCode, 201, 'a batch of 1020 KiB is accepted', { body: res2.body.slice(0, 300) });
    const back = await drain(`/v1/queues/${RTQ}`);
    if (res2.statusCode === 201) t.same(back.map((m) => m.body), batch.map((m) => m.body), 'the batch comes back exactly');
  }

  const batch = Array.from({ length: 100 }, (_, i) => ({ body: `${i}:${'✓'.repeat(i)}`, attributes: { i: String(i) } }));
  const items = ((await must(201, 'POST', `/v1/queues/${RTQ}/messages/batch`, { messages: batch }, rtToken)) as { items: { messageId: string }[] }).items;
  t.equal(items.length, 100, 'a batch of 100 is stored');
  const back = await drain(`/v1/queues/${RTQ}`);
  t.same(
    back.map((m) => [m.messageId, m.body, m.attributes]),
    batch.map((m, i) => [items[i]!.messageId, m.body, m.attributes]),
    'all 100 come back, in order, exactly',
  );

  // A filter within every documented limit: 16 pairs of 4-byte characters, as long as its JSON stays
  // within MAX_FILTER_BYTES (since 1.8.0); the route once refused one the attributes' limits allowed.
  const pair = (i: number, n: number): [string, string] => ['🐇'.repeat(4) + String(i).padStart(2, '0'), '🐇'.repeat(n)];
  const wide = Object.fromEntries(Array.from({ length: 16 }, (_, i) => pair(i, 1)));
  let n = 1;
  while (Buffer.byteLength(JSON.stringify(Object.fromEntries(Array.from({ length: 16 }, (_, i) => pair(i, n + 1)))), 'utf8') <= MAX_FILTER_BYTES) n++;
  Object.assign(wide, Object.fromEntries(Array.from({ length: 16 }, (_, i) => pair(i, n))));
  const res = await send('POST', `/v1/topics/${RTT}/subscriptions`, { name: 'bi-rt-wide', filter: { attributes: wide } }, rtToken);
  t.equal(res.statusCode, 201, `a subscription filter at the documented limits is accepted (${Buffer.byteLength(JSON.stringify(wide), 'utf8')} bytes)`, { body: res.body.slice(0, 300) });
});

t.test('attribute key "__proto__": refused as a whole (400 problem+json), never half-applied', async (t) => {
  // Fastify's JSON parser refuses any "__proto__" key (prototype poisoning) before our schema sees
  // the body. The contract does not forbid the key; refusing it is the safe reading.
  const res = await inject({
    method: 'POST',
    url: `/v1/queues/${RTQ}/messages`,
    headers: { ...bearer(rtToken), 'content-type': 'application/json' },
    payload: '{"body":"x","attributes":{"__proto__":"v"}}',
  });
  t.equal(problemFault(res, [400]), null, '400 problem+json');
  t.same(await drain(`/v1/queues/${RTQ}`), [], 'nothing stored');
});

t.test('text that is not Unicode: refused with 400, or stored exactly, never silently changed', async (t) => {
  // JSON can carry a lone surrogate as an escape ("\ud800"), which JSON.parse turns into a string
  // no UTF-8 can encode. The contract says bodies are UTF-8 strings, so the server should refuse
  // it (400); what it must not do is answer 201 and deliver something else. Raw bytes that are
  // not UTF-8 cannot be stored exactly at all, so they must be refused.
  const cases: [string, Buffer | string, string, Record<string, string>][] = [
    ['a lone high surrogate in the body', JSON.stringify({ body: 'a\ud800b' }), 'a\ud800b', {}],
    ['a lone low surrogate in the body', JSON.stringify({ body: '\udc00' }), '\udc00', {}],
    ['a reversed surrogate pair in the body', JSON.stringify({ body: '\udc00\ud800' }), '\udc00\ud800', {}],
    ['a lone surrogate in an attribute value', JSON.stringify({ body: 'x', attributes: { k: '\udfff' } }), 'x', { k: '\udfff' }],
    ['a lone surrogate in an attribute key', JSON.stringify({ body: 'x', attributes: { 'k\ud83d': 'v' } }), 'x', { 'k\ud83d': 'v' }],
    ['bytes that are not UTF-8 in the body', Buffer.concat([Buffer.from('{"body":"x'), Buffer.from([0xff, 0xfe, 0xc0, 0xaf]), Buffer.from('y"}')]), '', {}],
  ];
  for (const [what, payload, body, attrs] of cases) {
    const res = await inject({ method: 'POST', url: `/v1/queues/${RTQ}/messages`, headers: { ...bearer(rtToken), 'content-type': 'application/json' }, payload });
    const got = await drain(`/v1/queues/${RTQ}`);
    if (res.statusCode === 201 && typeof payload === 'string') {
      const m = got[0];
      t.ok(got.length === 1 && m !== undefined && m.body === body && sameAttributes(m.attributes, attrs), `${what}: accepted, so it must come back exactly`, {
        found: got.map((x) => ({ body: [...x.body].map((c) => c.codePointAt(0)!.toString(16)), attributes: Object.keys(x.attributes).map((k) => [...k].map((c) => c.codePointAt(0)!.toString(16))) })),
      });
    } else {
      t.equal(problemFault(res, [400]), null, `${what}: 400 problem+json`);
      t.equal(got.length, 0, `${what}: nothing stored`);
    }
  }
});

t.test('passwords: only the password registered logs in, however long', async (t) => {
  // The contract allows 8 to 256 characters; bcrypt reads only the first 72 bytes of its input.
  const cases: [string, string, string][] = [
    ['bi-pw-ascii', `${'p'.repeat(72)}-registered`, `${'p'.repeat(72)}-other`],
    ['bi-pw-utf8', `${'é'.repeat(36)}registered`, `${'é'.repeat(36)}other`],
  ];
  for (const [username, password, wrong] of cases) {
    await must(201, 'POST', '/v1/auth/register', { username, password }, rtToken);
    t.equal((await send('POST', '/v1/auth/login', { username, password }, null)).statusCode, 200, `${username}: the registered password logs in`);
    t.equal(problemFault(await send('POST', '/v1/auth/login', { username, password: wrong }, null), [401]), null, `${username}: a different password of the same 72-byte prefix gets 401`);
  }
});

t.test('controls: the valid body of every route is accepted, so the 400s above came from what was wrong', async (t) => {
  // The same route table, on the round-trip user's own resources.
  await must(201, 'POST', '/v1/queues', { name: 'bi-ctl-q' }, rtToken);
  await must(201, 'POST', '/v1/topics', { name: 'bi-ctl-t' }, rtToken);
  await must(201, 'POST', '/v1/topics/bi-ctl-t/subscriptions', { name: 'bi-ctl-s' }, rtToken);
  const routes = bodyRoutes(rtToken, { q: 'bi-ctl-q', t: 'bi-ctl-t', s: 'bi-ctl-s', grantee: OTHER, probe: 'bi-ctl-probe' });
  for (const r of routes) {
    const res = await routeInject(r, JSON.stringify(r.valid));
    t.ok(res.statusCode >= 200 && res.statusCode < 300, `${r.method} ${r.url} ${JSON.stringify(r.valid)}: ${res.statusCode}`, { body: res.body.slice(0, 200) });
  }
});
