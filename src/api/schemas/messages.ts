// Messages: what is sent or published, and what receive, ack, nack and lease take and answer.
import { Type, type Static } from 'typebox';
import { Attributes, LIMITS, SCHEMA_NAME, StringEnum, VisibilityTimeout, batchOf, type Defaulted } from './common.js';

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
export type ReceiveRequest = Defaulted<Static<typeof ReceiveRequest>, 'maxMessages' | 'waitSeconds'>;

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
export type NackRequest = Defaulted<Static<typeof NackRequest>, 'delaySeconds'>;

export const LeaseRequest = Type.Object(
  { receiptHandles: ReceiptHandles, visibilityTimeoutSeconds: { ...VisibilityTimeout, description: 'The new lease, counted from now.' } },
  { additionalProperties: false, [SCHEMA_NAME]: 'LeaseRequest' },
);
export type LeaseRequest = Static<typeof LeaseRequest>;

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
