// The API's schemas (TypeBox): the one source of request validation, TypeScript types and the OpenAPI
// document. Every limit of docs/api.md is here, in the field's description too, so that the
// document a client generates from says what the server enforces. A schema given a name (`named`)
// becomes a component of the document (src/api/openapi.ts), so a generated SDK has one `Queue`
// type wherever a queue appears.
import { Type, type Static, type TSchema } from 'typebox';
import { Problems, type ProblemCode } from './errors.js';

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

/** The annotation that names a schema in the OpenAPI document; src/api/openapi.ts reads and removes it. */
export const SCHEMA_NAME = 'x-schema-name';

/** `schema` as the component `name` of the OpenAPI document. */
export const named = <T extends TSchema>(name: string, schema: T): T => ({ ...schema, [SCHEMA_NAME]: name });

/** A plain `enum` of strings (a union of literals would reach generators as anyOf of one-value enums). */
export const StringEnum = <const T extends readonly string[]>(values: T, options: Record<string, unknown> = {}) =>
  Type.Unsafe<T[number]>({ type: 'string', enum: [...values], ...options });

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
  { additionalProperties: false, [SCHEMA_NAME]: 'Message', description: 'A message to send to a queue.' },
);
export const TopicMessageInput = Type.Object(
  { body: MessageBody, attributes: Type.Optional(Attributes), deduplicationId: Type.Optional(DeduplicationId) },
  { additionalProperties: false, [SCHEMA_NAME]: 'TopicMessage', description: 'A message to publish to a topic.' },
);
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
export const MessageBatch = batchOf('MessageBatch', QueueMessageInput);
export const TopicMessageBatch = batchOf('TopicMessageBatch', TopicMessageInput);

export const Sent = Type.Object(
  {
    messageId: Type.String({ description: 'Unique in the cluster.' }),
    sequence: Type.Integer({ description: 'Grows strictly within the queue (or topic).' }),
  },
  { [SCHEMA_NAME]: 'SentMessage' },
);
export const SentBatch = Type.Object({ items: Type.Array(Sent, { description: 'One per message, in the order sent.' }) }, { [SCHEMA_NAME]: 'SentMessages' });
export const Published = Type.Object(
  {
    messageId: Type.String({ description: 'Unique in the cluster.' }),
    sequence: Type.Integer({ description: 'Grows strictly within the topic.' }),
    subscriptions: Type.Integer({ description: 'How many subscriptions got the message (after their filters).' }),
  },
  { [SCHEMA_NAME]: 'PublishedMessage' },
);
export const PublishedBatch = Type.Object({ items: Type.Array(Published, { description: 'One per message, in the order sent.' }) }, { [SCHEMA_NAME]: 'PublishedMessages' });

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
  { additionalProperties: false, [SCHEMA_NAME]: 'CreateQueueRequest' },
);
export type QueueCreate = Static<typeof QueueCreate>;

export const Queue = Type.Object(
  {
    name: Type.String(),
    owner: Type.String(),
    visibilityTimeoutSeconds: Type.Integer(),
    maxDeliveries: nullable(Type.Integer(), 'null: unlimited.'),
    deadLetterQueue: nullable(Type.String(), 'null: none.'),
    delaySeconds: Type.Integer(),
    retentionSeconds: Type.Integer(),
    createdAt: Type.String({ format: 'date-time' }),
    stats: ChannelStats,
  },
  { [SCHEMA_NAME]: 'Queue' },
);

export const ListQuery = Type.Object(
  {
    limit: Type.Optional(Type.Integer({ minimum: 1, maximum: LIMITS.listLimitMax, default: 50, description: `Items per page (1 to ${LIMITS.listLimitMax}).` })),
    cursor: Type.Optional(Type.String({ maxLength: 400, description: 'nextCursor of the previous page.' })),
  },
  { additionalProperties: false },
);
export const pageOf = <T extends TSchema>(name: string, item: T) =>
  Type.Object(
    {
      items: Type.Array(item),
      nextCursor: nullable(Type.String(), 'Pass as cursor for the next page; null on the last page. Stable: items created or deleted meanwhile never make a page repeat or skip another item.'),
    },
    { [SCHEMA_NAME]: name },
  );
export const QueuePage = pageOf('QueuePage', Queue);

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
export const QueueGrantParams = Type.Object({ queue: Name, username: Username });
export const TopicGrantParams = Type.Object({ topic: Name, username: Username });

export const QueueAction = StringEnum(['send', 'receive'], { [SCHEMA_NAME]: 'QueueAction', description: 'send; receive (which covers ack, nack and lease).' });
export const TopicAction = StringEnum(['publish', 'subscribe'], { [SCHEMA_NAME]: 'TopicAction', description: 'publish; subscribe.' });
export const Grant = Type.Object(
  {
    username: Type.String(),
    actions: Type.Array(Type.String(), { description: 'QueueAction values on a queue, TopicAction values on a topic.' }),
  },
  { [SCHEMA_NAME]: 'Grant', description: 'A user\'s rights on a queue or topic.' },
);
export const QueueGrantPut = Type.Object(
  { actions: Type.Array(QueueAction, { minItems: 1, maxItems: 2, uniqueItems: true, description: 'send, and/or receive (which covers ack, nack and lease).' }) },
  { additionalProperties: false, [SCHEMA_NAME]: 'QueueGrantRequest' },
);
export const TopicGrantPut = Type.Object(
  { actions: Type.Array(TopicAction, { minItems: 1, maxItems: 2, uniqueItems: true, description: 'publish, and/or subscribe.' }) },
  { additionalProperties: false, [SCHEMA_NAME]: 'TopicGrantRequest' },
);
export const Grants = Type.Object({ items: Type.Array(Grant) }, { [SCHEMA_NAME]: 'GrantList' });

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
  { additionalProperties: false, [SCHEMA_NAME]: 'ReceiveRequest' },
);
export const ReceivedMessage = Type.Object(
  {
    messageId: Type.String(),
    sequence: Type.Integer(),
    body: Type.String(),
    attributes: Attributes,
    receiptHandle: Type.String({ description: 'Names this delivery: ack, nack and lease take it. Stale once the lease expired and the message was delivered again.' }),
    deliveryCount: Type.Integer({ description: '1 on the first delivery.' }),
    sentAt: Type.String({ format: 'date-time' }),
  },
  { [SCHEMA_NAME]: 'ReceivedMessage' },
);
export const Received = Type.Object({ messages: Type.Array(ReceivedMessage, { description: 'Empty when nothing was visible before the wait ended.' }) }, { [SCHEMA_NAME]: 'ReceivedMessages' });

const ReceiptHandles = Type.Array(Type.String({ minLength: 1, maxLength: 200 }), { minItems: 1, maxItems: LIMITS.handlesMax, description: `1 to ${LIMITS.handlesMax} receipt handles.` });
export const AckRequest = Type.Object({ receiptHandles: ReceiptHandles }, { additionalProperties: false, [SCHEMA_NAME]: 'AckRequest' });
export const NackRequest = Type.Object(
  {
    receiptHandles: ReceiptHandles,
    delaySeconds: Type.Optional(Type.Integer({ minimum: 0, maximum: LIMITS.delayMaxSeconds, default: 0, description: 'Seconds before the messages become visible again.' })),
  },
  { additionalProperties: false, [SCHEMA_NAME]: 'NackRequest' },
);
export const LeaseRequest = Type.Object(
  { receiptHandles: ReceiptHandles, visibilityTimeoutSeconds: { ...VisibilityTimeout, description: 'The new lease, counted from now.' } },
  { additionalProperties: false, [SCHEMA_NAME]: 'LeaseRequest' },
);

export const ReceiptFailureCode = StringEnum(['receipt_invalid', 'receipt_stale'], {
  [SCHEMA_NAME]: 'ReceiptFailureCode',
  description: 'receipt_invalid: not a handle of this queue or subscription. receipt_stale: the message was acked, or delivered again since.',
});
const Failed = Type.Array(Type.Object({ receiptHandle: Type.String(), code: ReceiptFailureCode }, { [SCHEMA_NAME]: 'ReceiptFailure' }), {
  description: 'The handles that took no effect, each with why.',
});
const Handles = (description: string) => Type.Array(Type.String(), { description });
const DEPRECATED_ACKED = 'Deprecated: the same list under its old name; removed in API 2.0.0. Read the list named for the operation.';
export const AckResult = Type.Object({ acked: Handles('The handles whose messages were deleted.'), failed: Failed }, { [SCHEMA_NAME]: 'AckResult' });
export const NackResult = Type.Object(
  { nacked: Handles('The handles whose messages are visible again (after delaySeconds).'), failed: Failed, acked: Type.Optional({ ...Handles(DEPRECATED_ACKED), deprecated: true }) },
  { [SCHEMA_NAME]: 'NackResult' },
);
export const LeaseResult = Type.Object(
  { extended: Handles('The handles whose leases now end visibilityTimeoutSeconds from now.'), failed: Failed, acked: Type.Optional({ ...Handles(DEPRECATED_ACKED), deprecated: true }) },
  { [SCHEMA_NAME]: 'LeaseResult' },
);
export const Purged = Type.Object({ purged: Type.Integer({ description: 'How many messages were deleted.' }) }, { [SCHEMA_NAME]: 'PurgeResult' });

export const SubscribePolicy = StringEnum(['anyone', 'granted'], {
  [SCHEMA_NAME]: 'SubscribePolicy',
  description: 'anyone: every user may see the topic and subscribe; granted: only the owner and users with a subscribe grant.',
});
export const TopicCreate = Type.Object(
  { name: Name, subscribe: Type.Optional({ ...SubscribePolicy, default: 'anyone' }) },
  { additionalProperties: false, [SCHEMA_NAME]: 'CreateTopicRequest' },
);
export const Topic = Type.Object(
  {
    name: Type.String(),
    owner: Type.String(),
    subscribe: SubscribePolicy,
    createdAt: Type.String({ format: 'date-time' }),
    stats: Type.Object(
      { subscriptions: Type.Integer({ description: 'Subscriptions of the topic now.' }), published: Type.Integer({ description: 'Messages published since the topic was created.' }) },
      { [SCHEMA_NAME]: 'TopicStats' },
    ),
  },
  { [SCHEMA_NAME]: 'Topic' },
);
export const TopicPage = pageOf('TopicPage', Topic);
export const SubscriptionFilter = Type.Object(
  { attributes: Attributes },
  { additionalProperties: false, [SCHEMA_NAME]: 'SubscriptionFilter', description: 'Deliver only messages whose attributes hold every one of these pairs.' },
);
export const SubscriptionCreate = Type.Object(
  {
    name: Name,
    visibilityTimeoutSeconds: Type.Optional({ ...VisibilityTimeout, default: 30 }),
    maxDeliveries: Type.Optional(MaxDeliveries),
    deadLetterQueue: Type.Optional(DeadLetterQueue),
    filter: Type.Optional(SubscriptionFilter),
  },
  { additionalProperties: false, [SCHEMA_NAME]: 'CreateSubscriptionRequest' },
);
export const Subscription = Type.Object(
  {
    topic: Type.String(),
    name: Type.String(),
    owner: Type.String(),
    visibilityTimeoutSeconds: Type.Integer(),
    maxDeliveries: nullable(Type.Integer(), 'null: unlimited.'),
    deadLetterQueue: nullable(Type.String(), 'null: none.'),
    filter: nullable(SubscriptionFilter, 'null: every message. The same shape as in the create request.'),
    createdAt: Type.String({ format: 'date-time' }),
    stats: ChannelStats,
  },
  { [SCHEMA_NAME]: 'Subscription' },
);
export const Subscriptions = Type.Object({ items: Type.Array(Subscription) }, { [SCHEMA_NAME]: 'SubscriptionList' });

export const Credentials = Type.Object({ username: Username, password: Password }, { additionalProperties: false, [SCHEMA_NAME]: 'Credentials' });
export const PasswordChange = Type.Object(
  { password: Type.String({ maxLength: 256, description: 'The current password.' }), newPassword: Password },
  { additionalProperties: false, [SCHEMA_NAME]: 'PasswordChange' },
);
export const PasswordConfirmation = Type.Object(
  { password: Type.String({ maxLength: 256, description: 'The current password.' }) },
  { additionalProperties: false, [SCHEMA_NAME]: 'PasswordConfirmation' },
);
export const Registered = Type.Object({ username: Type.String(), createdAt: Type.String({ format: 'date-time' }) }, { [SCHEMA_NAME]: 'User' });
export const Token = Type.Object(
  {
    accessToken: Type.String({ description: 'A JWT (HS256); send it as Authorization: Bearer <token> to any node.' }),
    tokenType: StringEnum(['Bearer']),
    expiresIn: Type.Integer({ description: 'Seconds until the token expires.' }),
  },
  { [SCHEMA_NAME]: 'Token' },
);
export const Me = Type.Object({ username: Type.String() }, { [SCHEMA_NAME]: 'CurrentUser' });

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
