export * from './commands.js';
export { encodeEnvelope, bodyText } from './envelope.js';
export { BrokerStateMachine, DEDUP_WINDOW_MS, STATE_CACHE_KIB, STATE_PAGE_BYTES, IDEMPOTENCY_WINDOW_MS, encodeReceipt, type ApplyEntry, type Applied, type QueueView, type TopicView, type SubscriptionView } from './state-machine.js';
export { stateHash } from './state-hash.js';
export { MessageState, type BrokerDatabase } from './schema.js';
export * from './queries.js';
export { FORMAT, PARKED_POLLS, BODIES_IN_LOG, BOUNDED_FANOUT, REVOKE_UNSUBSCRIBES, KEYED_RECEIVE_WITHOUT_BODIES, BOUNDED_CLOCK_STEP, USER_LIFECYCLE, MESSAGE_TABLE, SHARED_PUBLISHES, DEAD_LETTER_SOURCES, OWN_LEASES_HELD, DEAD_LETTER_KEYS_APART, KEYS_GO_WITH_RESOURCE, UNDELIVERED_RELEASED, DEAD_LETTERS_FIRST, MAX_CLOCK_STEP_MS, FormatTooNewError } from './format.js';
export { BodyMissingError, SLOTS, type BodySource } from './bodies.js';
export { MAX_FANOUT, MAX_SPLIT, MAX_SUBSCRIPTIONS, MAX_SUBSCRIPTIONS_PER_USER } from './topics.js';
