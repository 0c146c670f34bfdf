// Seeded fuzzing of every operation of the live OpenAPI document on three real nodes (the core of a
// review's harness, which found the two bugs test/api/strict-bodies.test.ts pins). Valid bodies are
// mutated, and so are path parameters, query strings, headers and receipt handles; the requests take
// the operations in turn and go round-robin to the three nodes. What must hold of every answer:
// - no 5xx, but for the 503 and 504 docs/api.md allows an operation that declares them ("unavailable":
//   no reachable leader, as in an election a loaded machine may see; "timeout": a write's wait ran
//   out), each as problem+json with Retry-After; and /readyz's 503, which has its own body;
// - every other non-2xx is problem+json whose `status` is the HTTP status, one the operation declares
//   (or the router's 404 "no route" when a path parameter was mangled out of its route);
// - a 2xx never took a body on an operation declaring none (unless {}), nor text with a lone UTF-16
//   surrogate (UTF-8 has no form for it: what was stored would be other text).
// And at the end: every /healthz answers 200, a second user's data reads back unchanged, and every
// partition's state hashes alike on the three replicas at the same applied index.
// The run is one seed (MOM_FUZZ_SEED, MOM_FUZZ_N to try others); a failure names the seed and the
// request, and the random draws never depend on the answers, so the same seed sends the same requests.
import t from 'tap';
import { request } from 'undici';
import * as internal from '../../src/cluster/internal-routes.js';
import { stateHash } from '../../src/store/broker/index.js';
import { call, pollUntil, startCluster, userToken } from './api-helpers.js';

const SEED = Number(process.env.MOM_FUZZ_SEED ?? 1);
const N = Number(process.env.MOM_FUZZ_N ?? 800);
t.comment(`fuzz seed ${SEED}, ${N} requests; run another with MOM_FUZZ_SEED=<n> MOM_FUZZ_N=<n>`);

/** mulberry32: a small deterministic PRNG, [0, 1). */
let state = SEED >>> 0;
function rnd(): number {
  state = (state + 0x6d2b79f5) >>> 0;
  let x = Math.imul(state ^ (state >>> 15), state | 1);
  x ^= x + Math.imul(x ^ (x >>> 7), x | 61);
  return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
}
const pick = <T>(a: readonly T[]): T => a[Math.floor(rnd() * a.length)]!;
const chance = (p: number): boolean => rnd() < p;

const cluster = await startCluster({ bcryptCost: 4 });
t.teardown(() => cluster.close());
const urls = cluster.urls;

// The owner fuzzes its own resources (and fails on the keeper's); "fz-anchor", never named by the
// fuzz, keeps it from being deleted. The keeper's data must come through unchanged: its grants go to
// fz-reader, whom the fuzz never acts as.
const sessions = {
  owner: { username: 'fz-owner', password: 'password-fz-owner', token: await userToken(urls[0]!, 'fz-owner') },
  other: { username: 'fz-other', password: 'password-fz-other', token: await userToken(urls[1]!, 'fz-other') },
};
const keeper = await userToken(urls[2]!, 'fz-keeper');
await userToken(urls[2]!, 'fz-reader');
async function must(token: string, method: string, path: string, body: unknown): Promise<unknown> {
  const res = await call(urls[0]!, method, path, { token, body });
  if (res.status >= 300) throw new Error(`setup ${method} ${path}: ${res.status} ${JSON.stringify(res.body)}`);
  return res.body;
}
const owner = sessions.owner.token;
for (const name of ['fz-anchor', 'fq', 'fdlq']) await must(owner, 'POST', '/v1/queues', { name });
await must(owner, 'POST', '/v1/topics', { name: 'ft' });
await must(owner, 'POST', '/v1/topics/ft/subscriptions', { name: 'fs' });
await must(owner, 'PUT', '/v1/queues/fq/grants/fz-other', { actions: ['send', 'receive'] });
await must(keeper, 'POST', '/v1/queues', { name: 'keep-q', maxDeliveries: 3 });
await must(keeper, 'POST', '/v1/queues/keep-q/messages', { body: 'k1', attributes: { a: 'b' } });
await must(keeper, 'PUT', '/v1/queues/keep-q/grants/fz-reader', { actions: ['send'] });
await must(keeper, 'POST', '/v1/topics', { name: 'keep-t', subscribe: 'granted' });
await must(keeper, 'PUT', '/v1/topics/keep-t/grants/fz-reader', { actions: ['subscribe'] });
await must(keeper, 'POST', '/v1/topics/keep-t/subscriptions', { name: 'keep-s' });
await must(keeper, 'POST', '/v1/topics/keep-t/messages', { body: 'kt' });
/** A receipt handle of a message of `queue`, leased for 12 h. */
async function handle(queue: string): Promise<string> {
  await must(owner, 'POST', `/v1/queues/${queue}/messages`, { body: 'h' });
  const got = (await must(owner, 'POST', `/v1/queues/${queue}/receive`, { visibilityTimeoutSeconds: 43_200 })) as { messages: { receiptHandle: string }[] };
  return got.messages[0]!.receiptHandle;
}
const hq = await handle('fq');
const hd = await handle('fdlq');

const KEPT = ['/v1/queues/keep-q', '/v1/queues/keep-q/grants', '/v1/topics/keep-t', '/v1/topics/keep-t/grants', '/v1/topics/keep-t/subscriptions/keep-s'];
const kept = async (): Promise<unknown[]> =>
  Promise.all(KEPT.map(async (p) => JSON.parse(JSON.stringify((await call(urls[0]!, 'GET', p, { token: keeper })).body, (k, v: unknown) => (k === 'oldestMessageAgeSeconds' ? undefined : v))) as unknown));
const keptBefore = await kept();

interface Op { method: string; path: string; statuses: number[]; takesBody: boolean }
const doc = (await call(urls[0]!, 'GET', '/openapi.json')).body as { paths: Record<string, Record<string, { responses: object; requestBody?: unknown }>> };
const ops: Op[] = Object.entries(doc.paths).flatMap(([path, o]) =>
  Object.entries(o).map(([m, x]) => ({ method: m.toUpperCase(), path, statuses: Object.keys(x.responses).map(Number), takesBody: x.requestBody !== undefined })),
);

const STRINGS = ['', 'a', 'x'.repeat(129), 'x'.repeat(1025), '😀'.repeat(65), '\u0000', 'a\u0000b', '\ufeff\u2028', '\ud800', 'password\udc00', 'pass\udc00\ud800word', '__proto__', 'constructor', '../..', 'a/b', 'NaN', "'; DROP TABLE queues;--", 'x'.repeat(256 * 1024 + 1)];
const deep = (depth: number, wrap: (v: unknown) => unknown): unknown => Array.from({ length: depth }).reduce<unknown>(wrap, 'x');
const VALUES: unknown[] = [null, true, 0, -0, -1, 1.5, 1e308, 2 ** 53 + 1, 43_201, 101, 1_209_601, [], [1], {}, { a: 1 }, '5', ...STRINGS, deep(200, (a) => ({ a })), deep(2000, (v) => [v])];
const HANDLES = [hq, hd, hq.slice(0, -1), hq + 'A', hq.replace(/.$/, 'B'), `${hd.split('.')[0]}.${hq.split('.')[1]}`, 'x'.repeat(201), '\ud800'.repeat(30), '.'.repeat(23), hq.toUpperCase()];
const NAMES = ['fq', 'fq', 'fdlq', 'ft', 'fs', 'keep-q', 'keep-t', 'keep-s', 'nope', 'fz-other', 'fz-keeper', 'x'.repeat(129)];
const MANGLED = ['%00', '%2F', '%2e%2e', '..', '%ED%A0%80', '%FF', '%', 'a%20b', '%41'.repeat(257), '__proto__', 'a%0Ab', 'a%3Fb', 'a%23b', 'a;b', '~'];
const QUERIES = ['?limit=1', '?limit=101', '?limit=1e308', '?limit=1&limit=2', '?cursor=' + 'A'.repeat(401), '?cursor=%ED%A0%80', '?consistency=stale', '?consistency=STALE', '?consistency[]=stale', '?__proto__[x]=1', '?' + 'a=1&'.repeat(2000)];
const CONTENT_TYPES = ['application/json; charset=utf-8', 'text/plain', 'application/x-www-form-urlencoded', 'application/json; charset=latin1', 'APPLICATION/JSON', 'application/octet-stream', 'multipart/form-data'];
const TOKENS = ['owner', 'owner', 'owner', 'owner', 'owner', 'owner', 'other', 'other', null, 'a.b.c', 'owner-x', 'x'.repeat(9000)] as const;
const number = (): number => Math.floor(rnd() * 1e9);

/** A valid body of each operation that takes one: what the mutations start from. */
const VALID: Record<string, () => Record<string, unknown>> = {
  'POST /v1/auth/register': () => ({ username: `fzr${number()}`, password: 'passwordpass' }),
  'POST /v1/auth/login': () => ({ username: 'fz-owner', password: sessions.owner.password }),
  'PUT /v1/auth/password': () => ({ password: sessions.owner.password, newPassword: `new-password-${number()}` }),
  'DELETE /v1/auth/me': () => ({ password: sessions.owner.password }),
  'POST /v1/queues': () => ({ name: `fzq${number()}`, visibilityTimeoutSeconds: 10, maxDeliveries: 2, deadLetterQueue: 'fdlq', delaySeconds: 0, retentionSeconds: 60 }),
  'PUT /v1/queues/{queue}/grants/{username}': () => ({ actions: ['send'] }),
  'POST /v1/queues/{queue}/messages': () => ({ body: 'hello', attributes: { a: 'b' }, delaySeconds: 0, deduplicationId: `d${number()}` }),
  'POST /v1/queues/{queue}/messages/batch': () => ({ messages: [{ body: 'a' }, { body: 'b', attributes: { k: 'v' } }] }),
  // No waitSeconds: a long poll would only make the run slow.
  'POST /v1/queues/{queue}/receive': () => ({ maxMessages: 1, visibilityTimeoutSeconds: 0 }),
  'POST /v1/queues/{queue}/ack': () => ({ receiptHandles: [hq] }),
  'POST /v1/queues/{queue}/nack': () => ({ receiptHandles: [hd], delaySeconds: 0 }),
  'POST /v1/queues/{queue}/lease': () => ({ receiptHandles: [hq], visibilityTimeoutSeconds: 43_200 }),
  'POST /v1/topics': () => ({ name: `fzt${number()}`, subscribe: 'granted' }),
  'PUT /v1/topics/{topic}/grants/{username}': () => ({ actions: ['publish'] }),
  'POST /v1/topics/{topic}/messages': () => ({ body: 'hi', attributes: { a: 'b' } }),
  'POST /v1/topics/{topic}/messages/batch': () => ({ messages: [{ body: 'a' }] }),
  'POST /v1/topics/{topic}/subscriptions': () => ({ name: `fzs${number()}`, visibilityTimeoutSeconds: 5, filter: { attributes: { a: 'b' } } }),
  'POST /v1/topics/{topic}/subscriptions/{subscription}/receive': () => ({ maxMessages: 2, visibilityTimeoutSeconds: 0 }),
  'POST /v1/topics/{topic}/subscriptions/{subscription}/ack': () => ({ receiptHandles: [hq] }),
  'POST /v1/topics/{topic}/subscriptions/{subscription}/nack': () => ({ receiptHandles: [hq] }),
  'POST /v1/topics/{topic}/subscriptions/{subscription}/lease': () => ({ receiptHandles: [hq], visibilityTimeoutSeconds: 1 }),
};

/** `v` with one thing changed: a field replaced, dropped or added, a lone surrogate in a text, attributes or handles made hostile. */
function mutate(v: unknown, depth = 0): unknown {
  if (typeof v !== 'object' || v === null || depth > 3) return pick(VALUES);
  const c = rnd();
  if (Array.isArray(v)) {
    if (c < 0.4 && v.length > 0) return v.map((x, i) => (i === 0 ? mutate(x, depth + 1) : x));
    if (c < 0.6) return Array.from({ length: pick([0, 101, 1000]) }, () => v[0] ?? 'x');
    return [...v, pick(VALUES)];
  }
  const o = { ...(v as Record<string, unknown>) };
  const key = pick(Object.keys(o).length > 0 ? Object.keys(o) : ['extra']);
  if (c < 0.4) o[key] = mutate(o[key], depth + 1);
  else if (c < 0.5) delete o[key];
  else if (c < 0.6) o[pick(['extra', 'constructor', '', '\ud800', 'a\u0000'])] = 1;
  else if (c < 0.7) o[key] = pick(STRINGS);
  else if (c < 0.85 && typeof o[key] === 'string') o[key] = `${o[key] as string}\udc00`;
  else if ('attributes' in o) o.attributes = pick([{ [pick(STRINGS)]: 'v' }, { k: pick(STRINGS) }, Object.fromEntries(Array.from({ length: 17 }, (_, i) => [`k${i}`, 'v']))]);
  else if ('receiptHandles' in o) o.receiptHandles = [pick(HANDLES)];
  return o;
}

/** The text of `v`, sometimes broken: a prototype key, a repeated key, bytes that are not UTF-8, cut short, empty. */
function serialize(v: unknown): string | Buffer {
  const text = JSON.stringify(v) ?? 'null';
  const c = rnd();
  if (c < 0.04) return text.replace(/^\{/, '{"__proto__":{"x":1},');
  if (c < 0.08) return text.replace(/^\{("[^"]*":[^,}]*)/, '{$1,$1');
  if (c < 0.11) return Buffer.concat([Buffer.from(text.slice(0, text.length >> 1)), Buffer.from([0xff, 0xc0, 0xed, 0xa0, 0x80]), Buffer.from(text.slice(text.length >> 1))]);
  if (c < 0.14) return text.slice(0, Math.floor(rnd() * text.length));
  if (c < 0.16) return '';
  return text;
}

interface Sent { op: Op; node: number; path: string; tokenKind: (typeof TOKENS)[number]; headers: Record<string, string>; body?: string | Buffer; mangled: boolean }

/** The i-th request: operations in turn, nodes round-robin (each operation meets each node). Its draws
 * never depend on an answer; tokens are resolved when it is sent. */
function generate(i: number): Sent {
  const op = ops[i % ops.length]!;
  let mangled = false;
  const path =
    op.path.replace(/\{[^}]+\}/g, () => {
      if (chance(0.75)) return pick(NAMES);
      mangled = true;
      return pick(MANGLED);
    }) + (chance(0.2) ? pick(QUERIES) : '');
  const headers: Record<string, string> = {};
  const tokenKind = pick(TOKENS);
  if (chance(0.1)) headers.authorization = pick(['Bearer', 'Basic eDp5', 'bearer  x']);
  if (chance(0.15)) headers['idempotency-key'] = pick(['k1', 'k1', '', 'a'.repeat(256), 'é', `k${number()}`]);
  if (chance(0.1)) headers['x-request-id'] = pick(['a'.repeat(129), 'é', 'ok-id', '..']);
  const valid = VALID[`${op.method} ${op.path}`];
  const sent: Sent = { op, node: (i + Math.floor(i / ops.length)) % urls.length, path, tokenKind, headers, mangled };
  if (valid !== undefined || (op.method !== 'GET' ? chance(0.5) : chance(0.1))) {
    headers['content-type'] = chance(0.85) ? 'application/json' : pick(CONTENT_TYPES);
    sent.body = serialize(valid === undefined ? pick(VALUES) : chance(0.15) ? valid() : mutate(valid()));
  }
  return sent;
}

const tokenOf = (kind: Sent['tokenKind']): string | null => (kind === 'owner' || kind === 'other' ? sessions[kind].token : kind === 'owner-x' ? `${sessions.owner.token}x` : kind);

const describe = (s: Sent): string =>
  `${s.op.method} ${urls[s.node]}${s.path.slice(0, 200)} token=${String(s.tokenKind).slice(0, 20)} headers=${JSON.stringify(s.headers).slice(0, 200)} body=${JSON.stringify(String(s.body ?? '<none>').slice(0, 300))}`;

interface Answer { status: number; headers: Record<string, string | string[] | undefined>; text: string }

/** One request as is; no answer at all (a crash, a reset) is status 0. */
async function send(node: number, method: string, path: string, headers: Record<string, string>, body?: string | Buffer): Promise<Answer> {
  try {
    const res = await request(`${urls[node]}${path}`, { method: method as 'GET', headers, body });
    return { status: res.statusCode, headers: res.headers, text: await res.body.text() };
  } catch (e) {
    return { status: 0, headers: {}, text: String(e) };
  }
}

/** The JSON of `text`, or undefined; `lone` says whether any key or string in it holds a lone surrogate. */
function parse(text: string | Buffer | undefined): { value?: unknown; lone: boolean } {
  let lone = false;
  try {
    const value: unknown = JSON.parse(String(text), (k, v: unknown) => {
      if (/\p{Cs}/u.test(k) || (typeof v === 'string' && /\p{Cs}/u.test(v))) lone = true;
      return v;
    });
    return { value, lone };
  } catch {
    return { lone };
  }
}

/** Operations whose text is only compared (handles, passwords to check), never stored. */
const COMPARED_ONLY = /\/(ack|nack|lease|login|me)$/;

/** Why `res` breaks a rule for `s` (header comment), or null. */
function fault(s: Sent, res: Answer): string | null {
  const { status } = res;
  if (status === 0) return `no answer: ${res.text}`;
  const seen = `${status} ${String(res.headers['content-type'])} ${res.text.slice(0, 300)}`;
  if (status >= 200 && status < 300) {
    if (!s.op.statuses.includes(status)) return `an undeclared ${status}`;
    // Fastify reads no body of a GET: one sent there is never seen, so it cannot be taken.
    if (s.op.method === 'GET' || s.body === undefined) return null;
    const { value, lone } = parse(s.body);
    const empty = typeof value === 'object' && value !== null && !Array.isArray(value) && Object.keys(value).length === 0;
    if (!s.op.takesBody && s.body.length > 0 && !empty) return `${status}: took a body on an operation that declares none`;
    if (lone && !COMPARED_ONLY.test(s.op.path)) return `${status}: took text with a lone surrogate`;
    return null;
  }
  if (s.op.path === '/readyz' && status === 503) return null;
  if (!String(res.headers['content-type']).startsWith('application/problem+json')) return `not problem+json: ${seen}`;
  const problem = parse(res.text).value as { status?: unknown; code?: unknown; detail?: unknown } | undefined;
  if (problem?.status !== status) return `problem.status is not ${status}: ${seen}`;
  // Answers before any route (docs/api.md): headers too large, or a path that routes nowhere.
  if (status === 431) return null;
  if (status === 404 && s.mangled && String(problem.detail).startsWith('no route')) return null;
  if (!s.op.statuses.includes(status)) return `${status} is not among the declared ${s.op.statuses.join(', ')}: ${seen}`;
  if (status >= 500 && !((status === 503 && problem.code === 'unavailable') || (status === 504 && problem.code === 'timeout'))) return `a 5xx: ${seen}`;
  if (status >= 500 && res.headers['retry-after'] === undefined) return `a ${status} without Retry-After: ${seen}`;
  return null;
}

/** After a request that succeeded: a session whose tokens it revoked takes the new one, or logs in again. */
async function follow(s: Sent, res: Answer): Promise<void> {
  if (s.tokenKind !== 'owner' && s.tokenKind !== 'other') return;
  const session = sessions[s.tokenKind];
  if (s.op.path === '/v1/auth/password' && res.status === 200) {
    session.password = (parse(s.body).value as { newPassword: string }).newPassword;
    session.token = (JSON.parse(res.text) as { accessToken: string }).accessToken;
  }
  if (s.op.path === '/v1/auth/logout' && res.status === 204) {
    const body = { username: session.username, password: session.password };
    // Only a login guard's wait (429) is waited out: this is setup, not an assertion on timing.
    const login = await pollUntil(() => call(urls[0]!, 'POST', '/v1/auth/login', { body }), (r) => r.status !== 429);
    if (login.status !== 200) throw new Error(`login again after a logout: ${login.status} ${JSON.stringify(login.body)}`);
    session.token = (login.body as { accessToken: string }).accessToken;
  }
}

t.test(`${N} random requests over the ${ops.length} operations of /openapi.json (seed ${SEED})`, async (t) => {
  const tally = new Map<number, number>();
  let faults = 0;
  for (let i = 0; i < N && faults < 5; i++) {
    const s = generate(i);
    const token = tokenOf(s.tokenKind);
    const headers = token === null || s.headers.authorization !== undefined ? s.headers : { ...s.headers, authorization: `Bearer ${token}` };
    const res = await send(s.node, s.op.method, s.path, headers, s.body);
    tally.set(res.status, (tally.get(res.status) ?? 0) + 1);
    const why = fault(s, res);
    if (why !== null) {
      faults++;
      t.fail(`request #${i} of seed ${SEED}: ${why}`, { request: describe(s), replay: `MOM_FUZZ_SEED=${SEED} MOM_FUZZ_N=${i + 1} npx tap test/api/fuzz.test.ts` });
    }
    await follow(s, res);
  }
  t.comment(`answers: ${[...tally].sort(([a], [b]) => a - b).map(([k, n]) => `${n}x${k}`).join(' ')}`);
  t.equal(faults, 0, 'every answer kept the rules');
});

t.test('the internal routes answer 401 problem+json to anyone without the cluster secret', async (t) => {
  const secrets = [undefined, 'Bearer ' + 's'.repeat(31), 'Bearer ' + 's'.repeat(33), 'Basic ' + Buffer.from(`x:${'s'.repeat(32)}`).toString('base64'), 'bearer ' + 'S'.repeat(32)];
  const bodies: [string, string | Buffer][] = [['application/octet-stream', Buffer.from([0xff, 0, 1, 2])], ['application/json', '{'], ['application/json', '{"partition":0,"command":{"type":"queue.create"}}'], ['text/plain', 'x']];
  const paths = Object.values(internal as Record<string, unknown>).filter((v): v is string => typeof v === 'string' && v.startsWith('/internal/'));
  t.ok(paths.length >= 9, `${paths.length} internal paths`);
  let n = 0;
  for (const path of paths) {
    for (const [i, authorization] of secrets.entries()) {
      const [type, body] = bodies[i % bodies.length]!;
      const get = path.startsWith('/internal/snapshot');
      const headers = { 'content-type': type, ...(authorization === undefined ? {} : { authorization }) };
      const res = await send(n++ % urls.length, get ? 'GET' : 'POST', get ? `${path}/0/x` : path, headers, get ? undefined : body);
      const problem = parse(res.text).value as { status?: number } | undefined;
      t.ok(res.status === 401 && String(res.headers['content-type']).startsWith('application/problem+json') && problem?.status === 401, `${path} with ${authorization?.slice(0, 12) ?? 'no secret'}: 401`, { found: `${res.status} ${res.text.slice(0, 200)}` });
    }
  }
});

t.test('afterwards: every node healthy, the keeper untouched, the replicas alike', async (t) => {
  for (const u of urls) t.equal((await call(u, 'GET', '/healthz')).status, 200, `${u}/healthz`);
  t.same(await kept(), keptBefore, "the keeper's queue, topic, subscription and grants read back unchanged");
  for (const p of cluster.servers[0]!.status().map((x) => x.partition)) {
    // Read in one synchronous step: no entry can be applied between the indexes and the hashes.
    const snapshot = (): { applied: number[]; hashes: string[] } => ({
      applied: cluster.servers.map((sv) => sv.status().find((x) => x.partition === p)!.appliedIndex),
      hashes: cluster.servers.map((sv) => stateHash(sv.host.replica(p).state.sqlite)),
    });
    const at = await pollUntil(async () => snapshot(), (x) => new Set(x.applied).size === 1);
    t.equal(new Set(at.applied).size, 1, `partition ${p}: the replicas reach the same applied index`, { applied: at.applied });
    t.equal(new Set(at.hashes).size, 1, `partition ${p}: the same state hash at index ${at.applied[0]}`);
  }
});
