// The commands a partition's log carries, and what applying one answers. A command is built and
// validated by the node that received the request (limits, names, bcrypt hashing), stamped with the
// leader's time, and applied by every replica. Apply checks permissions against the replicated state.

/**
 * A message body: text as a request gives it, or its UTF-8 bytes as a format 2 log entry carries it
 * (envelope.ts) and its row stores it. The same text either way.
 */
export type Body = string | Uint8Array;

export interface MessageInput {
  readonly body: Body;
  readonly attributes: Readonly<Record<string, string>>;
  readonly delaySeconds?: number;
  readonly deduplicationId?: string;
}

export type QueueAction = 'send' | 'receive';
export type TopicAction = 'publish' | 'subscribe';

/** A queue, or one subscription of a topic: everything that receives, acks and leases. */
export type ChannelRef = { readonly queue: string } | { readonly topic: string; readonly subscription: string };

export type Command =
  | { readonly type: 'user.register'; readonly username: string; readonly passwordHash: string }
  /**
   * The calling user's (format 9): logout revokes its tokens, password sets a new hash and revokes
   * them, delete deletes it. `epoch` is the one the caller's token was signed in: a token revoked
   * meanwhile, which a node may still accept for a minute, changes nothing.
   */
  | { readonly type: 'user.logout'; readonly epoch: number }
  | { readonly type: 'user.password'; readonly passwordHash: string; readonly epoch: number }
  | { readonly type: 'user.delete'; readonly epoch: number }
  | {
      readonly type: 'queue.create';
      readonly name: string;
      readonly visibilityTimeoutSeconds: number;
      readonly maxDeliveries: number | null;
      readonly deadLetterQueue: string | null;
      readonly delaySeconds: number;
      readonly retentionSeconds: number;
    }
  | { readonly type: 'queue.delete'; readonly name: string }
  | { readonly type: 'queue.purge'; readonly name: string }
  | { readonly type: 'grant.put'; readonly kind: 'queue' | 'topic'; readonly name: string; readonly username: string; readonly actions: readonly string[] }
  | { readonly type: 'grant.delete'; readonly kind: 'queue' | 'topic'; readonly name: string; readonly username: string }
  | { readonly type: 'queue.send'; readonly name: string; readonly messages: readonly MessageInput[] }
  | {
      readonly type: 'receive';
      readonly channel: ChannelRef;
      readonly maxMessages: number;
      readonly visibilityTimeoutSeconds: number | null;
      /** A long poll that parks in the state when nothing is visible (format 3; ParkedWait). */
      readonly wait?: ParkedWait;
    }
  | { readonly type: 'ack'; readonly channel: ChannelRef; readonly receiptHandles: readonly string[] }
  | {
      readonly type: 'nack';
      readonly channel: ChannelRef;
      readonly receiptHandles: readonly string[];
      readonly delaySeconds: number;
      /**
       * A node's own nack for a client that left before its messages reached it (format 15,
       * UNDELIVERED_RELEASED): the delivery is taken back, not counted, and never dead-letters.
       */
      readonly release?: boolean;
    }
  | { readonly type: 'lease'; readonly channel: ChannelRef; readonly receiptHandles: readonly string[]; readonly visibilityTimeoutSeconds: number }
  | { readonly type: 'topic.create'; readonly name: string; readonly subscribe: 'anyone' | 'granted' }
  | { readonly type: 'topic.delete'; readonly name: string }
  | {
      readonly type: 'topic.publish';
      readonly name: string;
      readonly messages: readonly MessageInput[];
      /**
       * Format 11: the publishes this one holds, as their counts of messages in order (publishes of
       * one user to one topic sharing an entry; shared-entries.ts). Each is checked and answered
       * alone. Ignored before format 11, as older builds ignore it.
       */
      readonly split?: readonly number[];
    }
  | {
      readonly type: 'subscription.create';
      readonly topic: string;
      readonly name: string;
      readonly visibilityTimeoutSeconds: number;
      readonly maxDeliveries: number | null;
      readonly deadLetterQueue: string | null;
      readonly filter: Readonly<Record<string, string>> | null;
    }
  | { readonly type: 'subscription.delete'; readonly topic: string; readonly name: string }
  /** From a partition's dead-letter forwarder: deliver messages into a dead-letter queue. */
  | {
      readonly type: 'deadletter.deliver';
      readonly queue: string;
      readonly expectedOwner: string;
      /** `source`: the outbox row it leaves, `<partition>/<id>` (format 12, DEAD_LETTER_SOURCES). */
      readonly messages: readonly { readonly messageId: string; readonly body: Body; readonly attributes: Readonly<Record<string, string>>; readonly source?: string }[];
    }
  /**
   * Proposed periodically by the leader: deletes messages past their retention and dead-letters
   * messages whose last allowed lease expired, so that both happen even when nobody receives.
   */
  | { readonly type: 'sweep' }
  /** The forwarder delivered these outbox rows; forget them. */
  | { readonly type: 'outbox.done'; readonly ids: readonly number[] }
  /**
   * Proposed by a leader once every voter reads `format` (format.ts): entries after this one may use
   * it. A replica of an older build stops applying the partition here.
   */
  | { readonly type: 'format.raise'; readonly format: number };

/**
 * A long poll parked in the partition's state (format 3): when its receive finds nothing, it waits
 * there, and the first apply that makes messages visible leases them to it (Delivery). In a partition
 * of an older format the field is ignored, as a build of that format ignores it.
 */
export interface ParkedWait {
  /** Names the poll, unique across the cluster; chosen by the node holding its request. */
  readonly tag: string;
  /** How long it may wait, from the entry's time; 0 parks nothing (the poll's last look). */
  readonly ms: number;
  /**
   * The poll parked before under this tag: the receive takes its place. If that waiter is gone
   * (served), the receive looks no further: its messages are on their way.
   */
  readonly again: boolean;
  /** The poll's node gives it up (its client left, the node stops): take it out, lease nothing. */
  readonly leave?: boolean;
}

/** Messages an apply leased to a parked poll: the node holding its request answers with them. */
export interface Delivery {
  readonly tag: string;
  readonly messages: ReceivedMessage[];
}

/** What a receive answers: what it leased, and, for a long poll, whether it parked. */
export interface Received {
  /** Empty where `unanswered` is set. */
  readonly messages: ReceivedMessage[];
  /**
   * Set instead of `messages` on a replica where nobody answers the receive (the state machine's
   * apply() was told so): how many messages it leased. Never leaves the node.
   */
  readonly unanswered?: number;
  /** 'parked': waiting in the state; 'gone': the waiter it was to replace had been served. */
  readonly parked?: 'parked' | 'gone';
  /**
   * Set on a keyed receive's replay (messages.ts, replayReceive): its messages are the deliveries of
   * the key's first answer, which may have reached the client. Never leaves the node.
   */
  readonly replayed?: true;
}

/** What a log entry holds: the command, who asks, and the leader's clock when it proposed it. */
export interface Envelope {
  /** Milliseconds; the state machine's clock is the maximum of the stamps it has applied. */
  readonly time: number;
  /** The authenticated user, or null for the system (forwarders). */
  readonly actor: string | null;
  /** Idempotency-Key: a repeated key of the same actor replays the first result. */
  readonly idempotencyKey?: string;
  readonly command: Command;
}

export const ErrorCode = {
  ValidationFailed: 'validation_failed',
  Forbidden: 'forbidden',
  NotFound: 'not_found',
  Conflict: 'conflict',
  PayloadTooLarge: 'payload_too_large',
  /** The caller's token was revoked (format 9's user commands name the epoch they were signed in). */
  Unauthorized: 'unauthorized',
  /** Refused before it was proposed, never by an apply: a node is short of disk space (src/cluster/disk-space.ts). */
  InsufficientStorage: 'insufficient_storage',
} as const;
export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

export interface Failure {
  readonly ok: false;
  readonly code: ErrorCode;
  readonly detail: string;
}

export interface Success<T = unknown> {
  readonly ok: true;
  readonly value: T;
}

export type Result<T = unknown> = Success<T> | Failure;

export const fail = (code: ErrorCode, detail: string): Failure => ({ ok: false, code, detail });
export const ok = <T>(value: T): Success<T> => ({ ok: true, value });

export interface SentMessage {
  readonly messageId: string;
  readonly sequence: number;
}

export interface ReceivedMessage {
  readonly messageId: string;
  readonly sequence: number;
  readonly body: string;
  readonly attributes: Record<string, string>;
  readonly receiptHandle: string;
  readonly deliveryCount: number;
  readonly sentAt: string;
}

export interface HandleOutcome {
  readonly acked: string[];
  readonly failed: { receiptHandle: string; code: HandleFailure }[];
}

export type HandleFailure = 'receipt_invalid' | 'receipt_stale';

/**
 * Reads an outcome back handle by handle, in the order the handles were given: it lists each once,
 * in order, in `acked` or in `failed`. `next(h)` takes the next handle, h, and says null if it was
 * acked, else why it failed. A handle given twice acts first where it comes first (once it failed
 * on its message it fails again), so reading in order deals each its own outcome.
 */
export function outcomeReader(r: HandleOutcome): (h: string) => HandleFailure | null {
  let a = 0;
  let f = 0;
  return (h) => {
    if (r.acked[a] === h) {
      a++;
      return null;
    }
    return r.failed[f++]?.code ?? 'receipt_stale';
  };
}
