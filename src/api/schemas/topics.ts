// Topics and their subscriptions.
import { Type, type Static } from 'typebox';
import type { SubscriptionView, TopicView } from '../../store/broker/index.js';
import { Attributes, ChannelStats, DeadLetterQueue, LIMITS, MaxDeliveries, Name, SCHEMA_NAME, StringEnum, VisibilityTimeout, nullable, pageOf, type Defaulted, type SameShape } from './common.js';

export const SubscribePolicy = StringEnum(['anyone', 'granted'], {
  [SCHEMA_NAME]: 'SubscribePolicy',
  description: 'anyone: every user may see the topic and subscribe; granted: only the owner and users with a subscribe grant.',
});

export const TopicCreate = Type.Object(
  { name: Name, subscribe: Type.Optional({ ...SubscribePolicy, default: 'anyone' }) },
  { additionalProperties: false, [SCHEMA_NAME]: 'CreateTopicRequest' },
);
export type TopicCreate = Defaulted<Static<typeof TopicCreate>, 'subscribe'>;

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
  {
    additionalProperties: false,
    [SCHEMA_NAME]: 'SubscriptionFilter',
    description:
      `Deliver only messages whose attributes hold every one of these pairs. In a request, \`attributes\` as compact JSON (JSON.stringify) holds at most ${LIMITS.filterBytes} bytes of UTF-8, ` +
      'a control character counted as its 6-byte escape (400 beyond; since 1.8.0).',
  },
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
export type SubscriptionCreate = Defaulted<Static<typeof SubscriptionCreate>, 'visibilityTimeoutSeconds'>;

export const Subscription = Type.Object(
  {
    topic: Type.String(),
    name: Type.String(),
    owner: Type.String(),
    visibilityTimeoutSeconds: Type.Integer(),
    maxDeliveries: nullable(Type.Integer(), 'null: unlimited.'),
    deadLetterQueue: nullable(Type.String(), 'null: none, or the caller is not the subscription’s owner (the dead-letter queue is named to its owner only; since 1.7.0).'),
    filter: nullable(SubscriptionFilter, 'null: every message. The same shape as in the create request.'),
    createdAt: Type.String({ format: 'date-time' }),
    stats: ChannelStats,
  },
  { [SCHEMA_NAME]: 'Subscription' },
);

export const Subscriptions = Type.Object({ items: Type.Array(Subscription) }, { [SCHEMA_NAME]: 'SubscriptionList' });

// The state machine's views (src/store/broker/views.ts) are what the API sends as a Topic and, its
// filter in the shape it was created with (routes/topics.ts), as a Subscription.
true satisfies SameShape<Static<typeof Topic>, TopicView>;
true satisfies SameShape<Static<typeof Subscription>, Omit<SubscriptionView, 'filter'> & { filter: { attributes: Record<string, string> } | null }>;
