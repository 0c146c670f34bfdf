// The API's schemas (TypeBox): the one source of request validation, TypeScript types and the OpenAPI
// document. Every limit of ../shared/API.md is here, in the field's description too, so that the
// document a client generates from says what the server enforces.
import { Type, type Static, type TSchema } from 'typebox';

export const LIMITS = {
  bodyBytes: 256 * 1024,
  attributes: 16,
  attributeKeyChars: 128,
  attributeValueChars: 1024,
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

/**
 * A string map in a response. Not Type.Record: its `^.*$` pattern does not match keys holding a line
 * terminator, which the serializer would then drop silently.
 */
const StringMap = (description?: string) =>
  Type.Unsafe<Record<string, string>>({ type: 'object', additionalProperties: { type: 'string' }, ...(description === undefined ? {} : { description }) });

const nullable = <T extends TSchema>(s: T, description: string) => Type.Union([s, Type.Null()], { description });

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

export const Attributes = Type.Unsafe<Record<string, string>>({
  type: 'object',
  description: `Up to ${LIMITS.attributes} string attributes; keys of 1 to ${LIMITS.attributeKeyChars} characters, values up to ${LIMITS.attributeValueChars} characters.`,
  maxProperties: LIMITS.attributes,
  propertyNames: { minLength: 1, maxLength: LIMITS.attributeKeyChars },
  additionalProperties: { type: 'string', maxLength: LIMITS.attributeValueChars },
});

const MessageBody = Type.String({
  description: `The message: a UTF-8 string of at most ${LIMITS.bodyBytes} bytes (262,144; larger answers 413).`,
});
const DeduplicationId = Type.String({
  pattern: '^[\\x21-\\x7e]{1,128}$',
  description: 'A second send with the same id within 5 minutes returns the first messageId and stores nothing. 1 to 128 printable ASCII characters.',
});

export const QueueMessageInput = Type.Object(
  {
    body: MessageBody,
    attributes: Type.Optional(Attributes),
    delaySeconds: Type.Optional(
      Type.Integer({ minimum: 0, maximum: LIMITS.delayMaxSeconds, description: `Seconds before the message becomes visible (0 to ${LIMITS.delayMaxSeconds}); the queue's delay by default.` }),
    ),
    deduplicationId: Type.Optional(DeduplicationId),
  },
  { additionalProperties: false },
);
export const TopicMessageInput = Type.Object(
  { body: MessageBody, attributes: Type.Optional(Attributes), deduplicationId: Type.Optional(DeduplicationId) },
  { additionalProperties: false },
);
export const batchOf = <T extends TSchema>(item: T) =>
  Type.Object(
    {
      messages: Type.Array(item, {
        minItems: 1,
        maxItems: LIMITS.batchMessages,
        description: `1 to ${LIMITS.batchMessages} messages, at most 1 MiB of bodies and attributes in all (413 beyond). Stored all or none.`,
      }),
    },
    { additionalProperties: false },
  );

export const Sent = Type.Object({
  messageId: Type.String({ description: 'Unique in the cluster.' }),
  sequence: Type.Integer({ description: 'Grows strictly within the queue (or topic).' }),
});
export const Published = Type.Object({
  messageId: Type.String(),
  sequence: Type.Integer(),
  subscriptions: Type.Integer({ description: 'How many subscriptions got the message (after their filters).' }),
});

export const ChannelStats = Type.Object({
  visible: Type.Integer({ description: 'Messages a receive would get now.' }),
  inFlight: Type.Integer({ description: 'Leased messages whose lease has not expired.' }),
  delayed: Type.Integer({ description: 'Messages waiting for their delay or nack delay.' }),
  dropped: Type.Integer({ description: 'Messages dropped after maxDeliveries with no dead-letter queue.' }),
  oldestMessageAgeSeconds: Type.Integer({ description: 'Age of the oldest message still to be consumed; 0 when none.' }),
});

const VisibilityTimeout = Type.Integer({
  minimum: 0,
  maximum: LIMITS.visibilityTimeoutMaxSeconds,
  description: `Seconds a received message stays leased (0 to ${LIMITS.visibilityTimeoutMaxSeconds}).`,
});
const MaxDeliveries = Type.Integer({
  minimum: 1,
  maximum: LIMITS.maxDeliveriesMax,
  description: `Deliveries without an ack before the message goes to deadLetterQueue, or is dropped and counted when none is set (1 to ${LIMITS.maxDeliveriesMax}). Unlimited when absent.`,
});
const DeadLetterQueue = Type.String({
  pattern: '^[A-Za-z0-9_-]{1,128}$',
  description: 'An existing queue of the same owner that receives messages past maxDeliveries (needs maxDeliveries).',
});

export const QueueCreate = Type.Object(
  {
    name: Name,
    visibilityTimeoutSeconds: Type.Optional({ ...VisibilityTimeout, default: 30 }),
    maxDeliveries: Type.Optional(MaxDeliveries),
    deadLetterQueue: Type.Optional(DeadLetterQueue),
    delaySeconds: Type.Optional(
      Type.Integer({ minimum: 0, maximum: LIMITS.delayMaxSeconds, default: 0, description: `Default delay of new messages (0 to ${LIMITS.delayMaxSeconds} s).` }),
    ),
    retentionSeconds: Type.Optional(
      Type.Integer({
        minimum: LIMITS.retentionMinSeconds,
        maximum: LIMITS.retentionMaxSeconds,
        default: 345600,
        description: `Seconds a message is kept before it is deleted unconsumed (${LIMITS.retentionMinSeconds} to ${LIMITS.retentionMaxSeconds}; 4 days by default).`,
      }),
    ),
  },
  { additionalProperties: false },
);
export type QueueCreate = Static<typeof QueueCreate>;

export const Queue = Type.Object({
  name: Type.String(),
  owner: Type.String(),
  visibilityTimeoutSeconds: Type.Integer(),
  maxDeliveries: nullable(Type.Integer(), 'null: unlimited.'),
  deadLetterQueue: nullable(Type.String(), 'null: none.'),
  delaySeconds: Type.Integer(),
  retentionSeconds: Type.Integer(),
  createdAt: Type.String({ format: 'date-time' }),
  stats: ChannelStats,
});

export const ListQuery = Type.Object(
  {
    limit: Type.Optional(Type.Integer({ minimum: 1, maximum: LIMITS.listLimitMax, default: 50, description: `Items per page (1 to ${LIMITS.listLimitMax}).` })),
    cursor: Type.Optional(Type.String({ maxLength: 400, description: 'nextCursor of the previous page.' })),
  },
  { additionalProperties: false },
);
export const pageOf = <T extends TSchema>(item: T) =>
  Type.Object({
    items: Type.Array(item),
    nextCursor: nullable(Type.String(), 'Pass as cursor for the next page; null on the last page. Stable: items created or deleted meanwhile never make a page repeat or skip another item.'),
  });

export const ConsistencyQuery = Type.Object(
  {
    consistency: Type.Optional(
      Type.Union([Type.Literal('strong'), Type.Literal('stale')], {
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
export const QueueGrantParams = Type.Object({ queue: Name, username: Username });
export const TopicGrantParams = Type.Object({ topic: Name, username: Username });

export const Grant = Type.Object({ username: Type.String(), actions: Type.Array(Type.String()) });
export const QueueGrantPut = Type.Object(
  {
    actions: Type.Array(Type.Union([Type.Literal('send'), Type.Literal('receive')]), {
      minItems: 1,
      maxItems: 2,
      uniqueItems: true,
      description: 'send, and/or receive (which covers ack, nack and lease).',
    }),
  },
  { additionalProperties: false },
);
export const TopicGrantPut = Type.Object(
  {
    actions: Type.Array(Type.Union([Type.Literal('publish'), Type.Literal('subscribe')]), { minItems: 1, maxItems: 2, uniqueItems: true, description: 'publish, and/or subscribe.' }),
  },
  { additionalProperties: false },
);
export const Grants = Type.Object({ items: Type.Array(Grant) });

export const ReceiveRequest = Type.Object(
  {
    maxMessages: Type.Optional(Type.Integer({ minimum: 1, maximum: LIMITS.receiveMax, default: 1, description: `1 to ${LIMITS.receiveMax}.` })),
    visibilityTimeoutSeconds: Type.Optional({ ...VisibilityTimeout, description: 'Lease length for these messages; the queue\'s by default.' }),
    waitSeconds: Type.Optional(
      Type.Integer({
        minimum: 0,
        maximum: LIMITS.waitSecondsMax,
        default: 0,
        description: `Long polling (0 to ${LIMITS.waitSecondsMax}): hold the request until a message is available or the wait ends. A client that disconnects while waiting leaves nothing leased.`,
      }),
    ),
  },
  { additionalProperties: false },
);
export const ReceivedMessage = Type.Object({
  messageId: Type.String(),
  sequence: Type.Integer(),
  body: Type.String(),
  attributes: StringMap(),
  receiptHandle: Type.String({ description: 'Names this delivery: ack, nack and lease take it. Stale once the lease expired and the message was delivered again.' }),
  deliveryCount: Type.Integer({ description: '1 on the first delivery.' }),
  sentAt: Type.String({ format: 'date-time' }),
});
export const Received = Type.Object({ messages: Type.Array(ReceivedMessage) });

const ReceiptHandles = Type.Array(Type.String({ minLength: 1, maxLength: 200 }), { minItems: 1, maxItems: LIMITS.handlesMax, description: `1 to ${LIMITS.handlesMax} receipt handles.` });
export const AckRequest = Type.Object({ receiptHandles: ReceiptHandles }, { additionalProperties: false });
export const NackRequest = Type.Object(
  {
    receiptHandles: ReceiptHandles,
    delaySeconds: Type.Optional(Type.Integer({ minimum: 0, maximum: LIMITS.delayMaxSeconds, default: 0, description: 'Seconds before the messages become visible again.' })),
  },
  { additionalProperties: false },
);
export const LeaseRequest = Type.Object(
  { receiptHandles: ReceiptHandles, visibilityTimeoutSeconds: { ...VisibilityTimeout, description: 'The new lease, counted from now.' } },
  { additionalProperties: false },
);
export const HandleOutcome = Type.Object({
  acked: Type.Array(Type.String(), { description: 'The handles that took effect.' }),
  failed: Type.Array(
    Type.Object({
      receiptHandle: Type.String(),
      code: Type.String({ description: 'receipt_invalid (not a handle of this queue) or receipt_stale (the message was acked, or delivered again).' }),
    }),
  ),
});
export const Purged = Type.Object({ purged: Type.Integer() });

export const TopicCreate = Type.Object(
  {
    name: Name,
    subscribe: Type.Optional(
      Type.Union([Type.Literal('anyone'), Type.Literal('granted')], { default: 'anyone', description: 'anyone: every user may see the topic and subscribe; granted: only the owner and users with a subscribe grant.' }),
    ),
  },
  { additionalProperties: false },
);
export const Topic = Type.Object({
  name: Type.String(),
  owner: Type.String(),
  subscribe: Type.String(),
  createdAt: Type.String({ format: 'date-time' }),
  stats: Type.Object({ subscriptions: Type.Integer(), published: Type.Integer() }),
});
export const SubscriptionCreate = Type.Object(
  {
    name: Name,
    visibilityTimeoutSeconds: Type.Optional({ ...VisibilityTimeout, default: 30 }),
    maxDeliveries: Type.Optional(MaxDeliveries),
    deadLetterQueue: Type.Optional(DeadLetterQueue),
    filter: Type.Optional(
      Type.Object(
        { attributes: Attributes },
        { additionalProperties: false, description: 'Deliver only messages whose attributes hold every one of these pairs.' },
      ),
    ),
  },
  { additionalProperties: false },
);
export const Subscription = Type.Object({
  topic: Type.String(),
  name: Type.String(),
  owner: Type.String(),
  visibilityTimeoutSeconds: Type.Integer(),
  maxDeliveries: nullable(Type.Integer(), 'null: unlimited.'),
  deadLetterQueue: nullable(Type.String(), 'null: none.'),
  filter: nullable(StringMap(), 'null: every message.'),
  createdAt: Type.String({ format: 'date-time' }),
  stats: ChannelStats,
});
export const Subscriptions = Type.Object({ items: Type.Array(Subscription) });

export const Credentials = Type.Object({ username: Username, password: Password }, { additionalProperties: false });
export const Registered = Type.Object({ username: Type.String(), createdAt: Type.String({ format: 'date-time' }) });
export const Token = Type.Object({
  accessToken: Type.String({ description: 'A JWT (HS256); send it as Authorization: Bearer <token> to any node.' }),
  tokenType: Type.Literal('Bearer'),
  expiresIn: Type.Integer({ description: 'Seconds until the token expires.' }),
});
export const Me = Type.Object({ username: Type.String() });

export const Problem = Type.Object(
  {
    type: Type.String(),
    title: Type.String(),
    status: Type.Integer(),
    code: Type.String({ description: 'validation_failed, unauthorized, forbidden, not_found, conflict, payload_too_large, rate_limited, unavailable, timeout or internal.' }),
    detail: Type.String(),
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
