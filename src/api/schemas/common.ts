// The API's schemas (TypeBox), one file per resource beside this one: the one source of request
// validation, TypeScript types and the OpenAPI document. Every limit of docs/api.md is here, in the
// field's description too, so that the document a client generates from says what the server
// enforces. A schema given a name (`named`) becomes a component of the document (src/api/openapi.ts),
// so a generated SDK has one `Queue` type wherever a queue appears.
//
// This file: limits, names, pages, path parameters, headers, the problem shape, and the parts queues
// and subscriptions share.
import { Type, type Static, type TSchema } from 'typebox';
import { Problems, type ProblemCode } from '../../cluster/problems.js';
import { MAX_FILTER_BYTES } from '../../store/broker/index.js';

export const LIMITS = {
  bodyBytes: 256 * 1024,
  attributes: 16,
  attributeKeyChars: 128,
  attributeValueChars: 1024,
  /** A subscription filter's attributes as compact JSON, in UTF-8 bytes (store/broker/filters.ts says why). */
  filterBytes: MAX_FILTER_BYTES,
  batchMessages: 100,
  batchBytes: 1024 * 1024,
  receiveMax: 100,
  waitSecondsMax: 20,
  handlesMax: 100,
  visibilityTimeoutMaxSeconds: 12 * 3600,
  delayMaxSeconds: 900,
  retentionMinSeconds: 60,
  retentionMaxSeconds: 14 * 24 * 3600,
  maxDeliveriesMax: 1000,
  listLimitMax: 100,
} as const;

/** The annotation that names a schema in the OpenAPI document; src/api/openapi.ts reads and removes it. */
export const SCHEMA_NAME = 'x-schema-name';

/** `schema` as the component `name` of the OpenAPI document. */
export const named = <T extends TSchema>(name: string, schema: T): T => ({ ...schema, [SCHEMA_NAME]: name });

/** A plain `enum` of strings (a union of literals would reach generators as anyOf of one-value enums). */
export const StringEnum = <const T extends readonly string[]>(values: T, options: Record<string, unknown> = {}) =>
  Type.Unsafe<T[number]>({ type: 'string', enum: [...values], ...options });

/**
 * True when A and B are one shape. A response's schema and the state machine's view it is sent from
 * are written in two layers; `true satisfies SameShape<Static<typeof X>, XView>` beside the schema
 * fails to compile when a field is added to one and not the other.
 */
export type SameShape<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;

/**
 * A request's type once validated: the properties K, which the schema gives a `default`, are present
 * (Ajv's useDefaults fills them in: app.ts). A schema is the one place a default is written; a
 * handler reads the value, never writes it again.
 */
export type Defaulted<T, K extends keyof T> = Omit<T, K> & { [P in K]-?: Exclude<T[P], undefined> };

export const nullable = <T extends TSchema>(s: T, description: string) => Type.Union([s, Type.Null()], { description });

export const Username = Type.String({
  pattern: '^[A-Za-z0-9_.-]{3,64}$',
  description: 'A username: 3 to 64 of A-Z, a-z, 0-9, "_", "." and "-".',
  examples: ['alice'],
});

export const Password = Type.String({ minLength: 8, maxLength: 256, description: 'A password of 8 to 256 characters.' });

export const Name = Type.String({
  pattern: '^[A-Za-z0-9_-]{1,128}$',
  description: 'A queue, topic or subscription name: 1 to 128 of A-Z, a-z, 0-9, "_" and "-". Names are global: one queue of a name in the cluster.',
  examples: ['orders'],
});

/**
 * Not Type.Record: its `^.*$` key pattern does not match keys holding a line terminator, which the
 * response serializer would then drop silently.
 */
export const Attributes = Type.Unsafe<Record<string, string>>({
  [SCHEMA_NAME]: 'Attributes',
  type: 'object',
  description: `Up to ${LIMITS.attributes} string attributes; keys of 1 to ${LIMITS.attributeKeyChars} characters, values up to ${LIMITS.attributeValueChars} characters.`,
  maxProperties: LIMITS.attributes,
  propertyNames: { minLength: 1, maxLength: LIMITS.attributeKeyChars },
  additionalProperties: { type: 'string', maxLength: LIMITS.attributeValueChars },
});

export const batchOf = <T extends TSchema>(name: string, item: T) =>
  Type.Object(
    {
      messages: Type.Array(item, {
        minItems: 1,
        maxItems: LIMITS.batchMessages,
        description: `1 to ${LIMITS.batchMessages} messages, at most 1 MiB of bodies and attributes in all (413 beyond). Stored all or none.`,
      }),
    },
    { additionalProperties: false, [SCHEMA_NAME]: name },
  );

export const ChannelStats = Type.Object(
  {
    visible: Type.Integer({ description: 'Messages a receive would get now.' }),
    inFlight: Type.Integer({ description: 'Leased messages whose lease has not expired.' }),
    delayed: Type.Integer({ description: 'Messages waiting for their delay or nack delay.' }),
    dropped: Type.Integer({ description: 'Messages dropped after maxDeliveries with no dead-letter queue.' }),
    oldestMessageAgeSeconds: Type.Integer({ description: 'Age of the oldest message still to be consumed; 0 when none.' }),
  },
  { [SCHEMA_NAME]: 'QueueStats', description: 'Exact message counts of a queue or a subscription.' },
);

export const VisibilityTimeout = Type.Integer({
  minimum: 0,
  maximum: LIMITS.visibilityTimeoutMaxSeconds,
  description: `Seconds a received message stays leased (0 to ${LIMITS.visibilityTimeoutMaxSeconds}).`,
});

export const MaxDeliveries = Type.Integer({
  minimum: 1,
  maximum: LIMITS.maxDeliveriesMax,
  description: `Deliveries without an ack before the message goes to deadLetterQueue, or is dropped and counted when none is set (1 to ${LIMITS.maxDeliveriesMax}). Unlimited when absent.`,
});

export const DeadLetterQueue = Type.String({
  pattern: '^[A-Za-z0-9_-]{1,128}$',
  description: 'An existing queue of the same owner that receives messages past maxDeliveries (needs maxDeliveries).',
});

export const ListQuery = Type.Object(
  {
    limit: Type.Optional(Type.Integer({ minimum: 1, maximum: LIMITS.listLimitMax, default: 50, description: `Items per page (1 to ${LIMITS.listLimitMax}).` })),
    cursor: Type.Optional(Type.String({ maxLength: 400, description: 'nextCursor of the previous page.' })),
  },
  { additionalProperties: false },
);
export type ListQuery = Defaulted<Static<typeof ListQuery>, 'limit'>;

export const pageOf = <T extends TSchema>(name: string, item: T) =>
  Type.Object(
    {
      items: Type.Array(item),
      nextCursor: nullable(Type.String(), 'Pass as cursor for the next page; null on the last page. Stable: items created or deleted meanwhile never make a page repeat or skip another item.'),
    },
    { [SCHEMA_NAME]: name },
  );

export const ConsistencyQuery = Type.Object(
  {
    consistency: Type.Optional(
      StringEnum(['strong', 'stale'], {
        [SCHEMA_NAME]: 'Consistency',
        default: 'strong',
        description: 'strong (default): linearizable, through the partition leader. stale: from this node\'s replica, even when the leader cannot be reached; the answer carries X-Stale: true and X-Applied-Index.',
      }),
    ),
  },
  { additionalProperties: false },
);

export const QueueParams = Type.Object({ queue: Name });

export const TopicParams = Type.Object({ topic: Name });

export const SubscriptionParams = Type.Object({ topic: Name, subscription: Name });

export const Problem = Type.Object(
  {
    type: Type.String({ description: 'A URI naming the problem\'s kind; ends with the code.' }),
    title: Type.String(),
    status: Type.Integer(),
    code: StringEnum(Object.keys(Problems) as ProblemCode[], {
      [SCHEMA_NAME]: 'ProblemCode',
      description: 'What went wrong, for programs: each code has one status (docs/api.md#errors).',
    }),
    detail: Type.String({ description: 'What went wrong, for people. A 5xx never carries internal messages.' }),
  },
  { $id: 'Problem', description: 'An RFC 9457 problem (application/problem+json).' },
);

export const IdempotencyHeaders = Type.Object({
  'idempotency-key': Type.Optional(
    Type.String({
      pattern: '^[\\x21-\\x7e]{1,255}$',
      description: 'The same key from the same user on the same queue or topic within 24 hours replays the first response (status and body) without applying the write again; reused there for a different request it answers 409. Keys are scoped per user and resource: the same key on another queue or topic is another request. An empty receive does not use up its key. 1 to 255 printable ASCII characters.',
    }),
  ),
});
