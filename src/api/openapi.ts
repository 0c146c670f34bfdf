// The OpenAPI document as a generated SDK should meet it. @fastify/swagger writes each route's
// schemas inline; this pass, run on every build of the document, gives it what a hand-written
// contract has:
// - every schema named with `named()` (src/api/schemas/) becomes one component, referenced
//   wherever it appears, so a client has one `Queue` type, not one per route;
// - the headers every answer carries (X-Request-Id; Retry-After on 429, 503 and 504; X-Stale and
//   X-Applied-Index on the reads that take ?consistency), declared once under components.headers;
// - the statuses any route can answer whatever its schema says: 400 (a malformed URL), 413 (a
//   body over the route's limit) and 429 (bodies in flight: bodies-in-flight.ts) on routes that take
//   one, 500 (a masked internal error).
import { SCHEMA_NAME } from './schemas/common.js';

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
type JsonObject = { [key: string]: Json };

interface Document {
  paths?: Record<string, Record<string, JsonObject>>;
  components?: { schemas?: Record<string, Json>; headers?: Record<string, Json>; parameters?: Record<string, Json> } & JsonObject;
  [key: string]: unknown;
}

/** Keywords that may differ where a named schema is used: they stay beside its $ref. */
const ANNOTATIONS = new Set(['description', 'default', 'examples', 'example', 'deprecated', 'readOnly', 'writeOnly']);

const isObject = (v: Json | undefined): v is JsonObject => typeof v === 'object' && v !== null && !Array.isArray(v);

/** `v` with object keys sorted, as text: two schemas are the same component when these are equal. */
function canonical(v: Json): string {
  if (Array.isArray(v)) return `[${v.map(canonical).join(',')}]`;
  if (isObject(v)) return `{${Object.keys(v).sort().map((k) => `${JSON.stringify(k)}:${canonical(v[k]!)}`).join(',')}}`;
  return JSON.stringify(v);
}

function withoutAnnotations(o: JsonObject): JsonObject {
  return Object.fromEntries(Object.entries(o).filter(([k]) => !ANNOTATIONS.has(k)));
}

/** Replaces every named schema under `node` with a $ref to its component, adding the component. */
function hoist(node: Json, schemas: Record<string, Json>): Json {
  if (Array.isArray(node)) return node.map((n) => hoist(n, schemas));
  if (!isObject(node)) return node;
  const out: JsonObject = {};
  for (const [k, v] of Object.entries(node)) out[k] = hoist(v, schemas);
  const name = out[SCHEMA_NAME];
  if (typeof name !== 'string') return out;
  delete out[SCHEMA_NAME];
  const existing = schemas[name];
  if (existing === undefined) {
    schemas[name] = out;
  } else if (!isObject(existing) || canonical(withoutAnnotations(existing)) !== canonical(withoutAnnotations(out))) {
    throw new Error(`two different schemas are named ${name} in the OpenAPI document`);
  }
  const component = schemas[name] as JsonObject;
  const ref: JsonObject = { $ref: `#/components/schemas/${name}` };
  for (const k of ANNOTATIONS) {
    if (out[k] !== undefined && canonical(out[k]) !== canonical(component[k] ?? null)) ref[k] = out[k];
  }
  return ref;
}

const HEADERS: Record<string, JsonObject> = {
  'X-Request-Id': {
    description: 'The request\'s id: the caller\'s own X-Request-Id when it is 1 to 128 of A-Z, a-z, 0-9, ".", "_", ":" and "-", else a new UUID. Every node the request passed through logs it.',
    schema: { type: 'string' },
  },
  'Retry-After': { description: 'Seconds to wait before retrying.', schema: { type: 'integer', minimum: 0 } },
  'X-Stale': {
    description: 'Present, and "true", on an answer with consistency=stale: read from this node\'s replica, which may be behind the leader.',
    schema: { type: 'string', enum: ['true'] },
  },
  'X-Applied-Index': {
    description: 'With consistency=stale: the replica\'s applied log index the answer reflects.',
    schema: { type: 'integer', minimum: 0 },
  },
};
const headerRef = (name: string): JsonObject => ({ $ref: `#/components/headers/${name}` });

const REQUEST_ID_PARAMETER: JsonObject = {
  in: 'header',
  name: 'X-Request-Id',
  required: false,
  description: 'An id for this request, kept when it is 1 to 128 of A-Z, a-z, 0-9, ".", "_", ":" and "-"; it follows the request to the leader and comes back in the answer.',
  schema: { type: 'string', pattern: '^[A-Za-z0-9._:-]{1,128}$' },
};

const COMMON_STATUSES: Record<string, string> = {
  '400': 'validation_failed: malformed JSON, a wrong type, an unknown field, a value out of its limits, or a malformed URL.',
  '413': 'payload_too_large: a message body, a batch or the request is larger than its limit.',
  '429': 'rate_limited: the request bodies this client has in flight on this node would pass 64 MiB; retry after Retry-After seconds.',
  '500': 'internal: an unexpected error; the detail names no internals, and X-Request-Id finds the request in the logs.',
};
const problemResponse = (description: string): JsonObject => ({
  description,
  content: { 'application/problem+json': { schema: { $ref: '#/components/schemas/Problem' } } },
});

/** `idempotency-key` as clients write it: Fastify's header schemas want lower case, HTTP does not mind. */
const headerName = (name: string): string => name.replace(/(^|-)([a-z])/g, (_m, dash: string, c: string) => `${dash}${c.toUpperCase()}`);

/** A success's description when its route gave none: its status and what it holds. */
function successDescription(status: string, response: JsonObject): string {
  const media = isObject(response.content) ? Object.values(response.content)[0] : undefined;
  const schema = isObject(media) && isObject(media.schema) ? media.schema : undefined;
  const ref = typeof schema?.$ref === 'string' ? schema.$ref.split('/').pop() : undefined;
  const what = status === '201' ? 'Created' : status === '204' ? 'Done; no body' : 'OK';
  return ref === undefined ? `${what}.` : `${what}: a ${ref}.`;
}

/** The statuses and headers every operation of this API may answer, added where a route omits them. */
/**
 * A route schema's key (an OpenAPI extension, copied to its operation) for a body a client may leave
 * out: the route takes none as {} (a receive).
 */
export const BODY_OPTIONAL = 'x-body-optional';

function completeOperation(method: string, op: JsonObject): void {
  // A route that takes no body as {} says so (BODY_OPTIONAL); @fastify/swagger marks every body required.
  if (op[BODY_OPTIONAL] === true && isObject(op.requestBody)) op.requestBody.required = false;
  delete op[BODY_OPTIONAL];
  const responses = (isObject(op.responses) ? op.responses : (op.responses = {})) as JsonObject;
  const statuses = ['400', '500'];
  if (method === 'post' || method === 'put' || method === 'delete') statuses.push('413', '429');
  for (const s of statuses) if (responses[s] === undefined) responses[s] = problemResponse(COMMON_STATUSES[s]!);
  const ordered: JsonObject = {};
  for (const s of Object.keys(responses).sort()) ordered[s] = responses[s]!;
  op.responses = ordered;

  const parameters = (Array.isArray(op.parameters) ? op.parameters : []).map((p) =>
    isObject(p) && p.in === 'header' && typeof p.name === 'string' ? { ...p, name: headerName(p.name) } : p,
  );
  const takesConsistency = parameters.some((p) => isObject(p) && p.name === 'consistency');

  op.parameters = [...parameters, { $ref: '#/components/parameters/RequestId' }];
  for (const [status, response] of Object.entries(ordered)) {
    if (!isObject(response)) continue;
    if (response.description === 'Default Response') response.description = successDescription(status, response);
    const headers: JsonObject = isObject(response.headers) ? response.headers : {};
    headers['X-Request-Id'] = headerRef('X-Request-Id');
    if (status === '429' || status === '503' || status === '504') headers['Retry-After'] = headerRef('Retry-After');
    if (takesConsistency && status === '200') {
      headers['X-Stale'] = headerRef('X-Stale');
      headers['X-Applied-Index'] = headerRef('X-Applied-Index');
    }
    response.headers = headers;
  }
}

/** The document of @fastify/swagger, finished as described at the top of this file. */
export function finishDocument<T extends Document>(doc: T): T {
  const schemas: Record<string, Json> = {};
  // Fastify's shared schemas (Problem) are components already; what they name inside becomes one too.
  for (const [name, schema] of Object.entries(doc.components?.schemas ?? {})) schemas[name] = hoist(schema, schemas);
  const paths = hoist((doc.paths ?? {}) as Json, schemas) as Record<string, Record<string, JsonObject>>;
  for (const item of Object.values(paths)) {
    for (const [method, op] of Object.entries(item)) completeOperation(method, op);
  }
  const sorted: Record<string, Json> = {};
  for (const name of Object.keys(schemas).sort()) sorted[name] = schemas[name]!;
  return {
    ...doc,
    paths,
    components: { ...doc.components, schemas: sorted, headers: HEADERS, parameters: { RequestId: REQUEST_ID_PARAMETER } },
  };
}
