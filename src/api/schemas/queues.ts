// Queues: creating one, and a queue as the API shows it.
import { Type, type Static } from 'typebox';
import type { QueueView } from '../../store/broker/index.js';
import { ChannelStats, DeadLetterQueue, LIMITS, type Defaulted, MaxDeliveries, Name, SCHEMA_NAME, VisibilityTimeout, nullable, pageOf, type SameShape } from './common.js';

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

export type QueueCreate = Defaulted<Static<typeof QueueCreate>, 'visibilityTimeoutSeconds' | 'delaySeconds' | 'retentionSeconds'>;

export const Queue = Type.Object(
  {
    name: Type.String(),
    owner: Type.String(),
    visibilityTimeoutSeconds: Type.Integer(),
    maxDeliveries: nullable(Type.Integer(), 'null: unlimited.'),
    deadLetterQueue: nullable(Type.String(), 'null: none, or the caller is not the queue’s owner (the dead-letter queue is named to its owner only; since 1.7.0).'),
    delaySeconds: Type.Integer(),
    retentionSeconds: Type.Integer(),
    createdAt: Type.String({ format: 'date-time' }),
    stats: ChannelStats,
  },
  { [SCHEMA_NAME]: 'Queue' },
);

export const QueuePage = pageOf('QueuePage', Queue);

export const Purged = Type.Object({ purged: Type.Integer({ description: 'How many messages were deleted.' }) }, { [SCHEMA_NAME]: 'PurgeResult' });

// The state machine's view (src/store/broker/views.ts) is what the API sends as a Queue.
true satisfies SameShape<Static<typeof Queue>, QueueView>;
