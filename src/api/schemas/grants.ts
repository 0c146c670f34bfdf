// Grants on queues and topics.
import { Type } from 'typebox';
import { Name, SCHEMA_NAME, StringEnum, Username } from './common.js';

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
