// The broker's state in one partition's SQLite database, as Kysely sees it. Times are milliseconds
// of the partition's own clock (the largest leader stamp applied so far), never the local clock.
import type { Selectable } from 'kysely';

export interface MetaTable {
  key: string;
  value: number;
}

export interface UsersTable {
  username: string;
  password_hash: string;
  created_at: number;
}

/** A channel is what holds messages: a queue, or one subscription of a topic. */
export interface ChannelsTable {
  /** The log index of the entry that created it: unique, and the same on every replica. */
  id: number;
  kind: 'queue' | 'subscription';
  owner: string;
  visibility_timeout_ms: number;
  /** Deliveries after which a message is dead-lettered; null for no limit. */
  max_deliveries: number | null;
  dead_letter_queue: string | null;
  delay_ms: number;
  retention_ms: number;
  /** The next message's sequence: grows strictly, never reused. */
  next_seq: number;
  /** Row counts by state (exact stats without scanning). */
  n_ready: number;
  n_leased: number;
  n_delayed: number;
  /** Messages dropped after maxDeliveries with no dead-letter queue. */
  n_dropped: number;
  created_at: number;
}

export interface QueuesTable {
  name: string;
  channel_id: number;
}

export interface TopicsTable {
  name: string;
  /** The log index of the entry that created it (scopes its deduplication ids). */
  id: number;
  owner: string;
  subscribe_policy: 'anyone' | 'granted';
  next_seq: number;
  published: number;
  created_at: number;
}

export interface SubscriptionsTable {
  topic: string;
  name: string;
  channel_id: number;
  /** JSON object of attribute equalities, or null to receive everything. */
  filter: string | null;
}

export interface GrantsTable {
  resource_kind: 'queue' | 'topic';
  resource_name: string;
  username: string;
  /** JSON array of actions. */
  actions: string;
}

/**
 * Message states. A message is visible when state is Ready, or when its `visible_at` has passed
 * (an ended lease or an elapsed delay): leases need no timers, only comparisons with the clock
 * (leases.ts, leaseLive, says when a lease ends).
 */
export const MessageState = { Ready: 0, Leased: 1, Delayed: 2 } as const;
export type MessageState = (typeof MessageState)[keyof typeof MessageState];

export interface MessagesTable {
  channel_id: number;
  seq: number;
  message_id: string;
  /** TEXT from format 1 entries, a BLOB of its UTF-8 from format 2 ones (envelope.ts). */
  body: string | Uint8Array;
  /** JSON object of string pairs. */
  attributes: string;
  sent_at: number;
  state: MessageState;
  /** For Leased and Delayed: when the message becomes visible again. */
  visible_at: number;
  delivery_count: number;
  /** The log index of the receive that leased it: receipt handles name it. */
  lease_id: number;
  expires_at: number;
}

export interface DedupTable {
  channel_id: number;
  dedup_id: string;
  message_id: string;
  seq: number;
  expires_at: number;
}

export interface IdempotencyTable {
  username: string;
  key: string;
  /** SHA-256 of the command: a key reused for a different request is refused, not replayed. */
  fingerprint: string;
  /** JSON of the command's result, replayed for a repeated key. */
  result: string;
  expires_at: number;
}

/** Dead-lettered messages waiting to be delivered to their dead-letter queue's partition. */
export interface OutboxTable {
  id: number;
  target_queue: string;
  expected_owner: string;
  message_id: string;
  /** TEXT from format 1 entries, a BLOB of its UTF-8 from format 2 ones (envelope.ts). */
  body: string | Uint8Array;
  attributes: string;
  created_at: number;
}

/**
 * Long polls parked in the state (format 3): a receive that found nothing waits here, and the apply
 * that makes messages visible leases them to the polls that waited longest, in the same entry. The
 * node holding the poll's request answers from its own apply. Created at open, not by a migration:
 * a node of the previous version must still open an image made by this one.
 */
export interface WaitersTable {
  channel_id: number;
  /** The index of the receive that parked it: waiters are served in this order. */
  id: number;
  /** Chosen by the node holding the request: `<node>.<process nonce>.<counter>`. */
  tag: string;
  /** Who polls: a revoked receive right drops the user's parked polls. */
  actor: string;
  max_messages: number;
  /** The receive's visibility timeout, or null for the channel's. */
  vt_ms: number | null;
  /** In the state's clock: a waiter past it is gone (its node answered empty by then). */
  deadline: number;
  /**
   * Once served (format 16, SERVED_POLLS_KEPT): `<lease>:<seq>,<seq>...`, the entry whose lease it
   * was given and the messages', for its poll's next look; null while it waits.
   */
  served: string | null;
}

/**
 * What a user's tokens and name have been through (format 9): how many times the user revoked every
 * token it held (logout, password change), and whether the user was deleted, whose name is then never
 * registered again. A row exists only for a user that did one of these. Created at open, not by a
 * migration, like waiters.
 */
export interface UserTokensTable {
  username: string;
  /** Tokens signed while this was lower are refused: the count of the user's revocations. */
  epoch: number;
  /** In the state's clock, when the user was deleted; null while it exists. */
  deleted_at: number | null;
}

/**
 * Messages a purge or a delete left to housekeeping (format 15, BOUNDED_DELETES): the rows of channel
 * `channel_id` with a sequence below `below_seq` go, a bounded number per sweep (messages.ts,
 * clearSome). The channel of a delete is gone already: its rows only wait for deletion. Created at
 * open, not by a migration, like waiters.
 */
export interface ClearingTable {
  channel_id: number;
  below_seq: number;
}

export interface BrokerDatabase {
  meta: MetaTable;
  users: UsersTable;
  channels: ChannelsTable;
  queues: QueuesTable;
  topics: TopicsTable;
  subscriptions: SubscriptionsTable;
  grants: GrantsTable;
  messages: MessagesTable;
  dedup: DedupTable;
  idempotency: IdempotencyTable;
  outbox: OutboxTable;
  waiters: WaitersTable;
  user_tokens: UserTokensTable;
  clearing: ClearingTable;
}

export type ChannelRow = Selectable<ChannelsTable>;
export type WaiterRow = Selectable<WaitersTable>;
export type MessageRow = Selectable<MessagesTable>;
export type TopicRow = Selectable<TopicsTable>;
