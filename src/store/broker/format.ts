// The log's format: what a leader may write into a partition's log, and so what every replica must
// read alike. Replicas apply the same entries to byte-identical states only if they read them the
// same way, and during a rolling upgrade two builds share a group. So a new encoding is never written
// before every voter can read it:
//
//   - a build reads every format up to its own FORMAT;
//   - each node says which format it reads in every Raft request it sends (transport);
//   - a partition's state records the format in force (1 until raised, the JSON envelopes of every
//     build before formats existed), and its leader raises it with a `format.raise` entry once every
//     voter has said it reads the new one (partition host);
//   - a leader writes the new encoding only once that entry has applied, so it never precedes the
//     entry in the log;
//   - a replica whose build is older than a format it meets (a node downgraded after the raise, or
//     restored onto an older build) stops applying that partition instead of applying the entries
//     differently: FormatTooNewError, which the host turns into a halted partition.

/**
 * The newest log format this build reads (envelope.ts). Format 1: commands as JSON envelopes.
 * Format 2: commands that carry message bodies hold them as bytes after a JSON head, and rows store
 * them as BLOBs. Format 3: a long poll parks in the state (a receive's `wait`), and the apply that
 * makes messages visible leases them to it (messages.ts, serveWaiters). Format 4 (BODIES_IN_LOG): new
 * rows leave their bodies in the Raft log, and their sequences say where (bodies.ts). Format 5
 * (BOUNDED_FANOUT): a topic holds at most MAX_SUBSCRIPTIONS subscriptions and one publish stores at
 * most MAX_FANOUT copies (topics.ts), so that no entry's apply holds a node's loop for long. Format 6
 * (REVOKE_UNSUBSCRIBES): revoking a user's right to subscribe to a topic deletes the subscriptions
 * that user holds on it (topics.ts, dropUnsubscribed). Format 7 (KEYED_RECEIVE_WITHOUT_BODIES): a
 * receive's Idempotency-Key keeps its result without message bodies, and a replay reads them again
 * while the leases live (messages.ts, replayReceive). Format 8 (BOUNDED_CLOCK_STEP): an entry's stamp
 * moves the partition's clock at most MAX_CLOCK_STEP_MS past where it was (state-machine.ts). Format 9
 * (USER_LIFECYCLE): a user may revoke its tokens, change its password and delete itself (access.ts).
 * Format 10 (MESSAGE_TABLE): a replica may keep its message table in the clustered layout
 * (message-table.ts), which no build before this one can open; the entries read as in format 9.
 * Format 11 (SHARED_PUBLISHES): a publish may carry `split`, the publishes it holds (a leader's
 * publishes of one turn sharing an entry), each checked and answered alone (topics.ts, publishEach).
 * Format 12 (DEAD_LETTER_SOURCES): a dead letter names its outbox row (`source`, partition/id), and
 * its dead-letter queue deduplicates the forwarder's retries by that row instead of by the message's
 * id, which two subscriptions' copies of one publish share and which a message that goes around a
 * cycle of dead-letter queues keeps: before, the second of those was dropped (messages.ts,
 * deliverDeadLetters). Older builds ignore `source`. And (OWN_LEASES_HELD) a lease an entry makes
 * stays leased through that entry however short it is: a receive with a visibility timeout of 0 that
 * woke parked polls gave its message to one of them too, under the same lease and so the same
 * receipt handle (leases.ts, promoteDue). Format 13 (DEAD_LETTER_KEYS_APART): a dead letter's
 * deduplication key in its dead-letter queue starts with a space, which no client's deduplicationId
 * holds (the API takes \x21-\x7e), so that a client's send cannot swallow a dead letter nor a
 * dead letter hold a client's id for a day (messages.ts, deliverDeadLetters). Format 14
 * (KEYS_GO_WITH_RESOURCE): deleting a queue or topic deletes the Idempotency-Keys used on it, as its
 * deduplication ids: before, a key used on it replayed its old answer on a queue or topic of the same
 * name made since (by anyone), and what was asked was never done there (state-machine.ts). Format 15
 * (UNDELIVERED_RELEASED): a nack with `release` (a node's own, for a client that left before its
 * messages reached it) takes back the delivery it names, which counted no client's look, and so never
 * dead-letters (leases.ts, nack). And (DEAD_LETTERS_FIRST) a message whose last allowed lease ended is
 * on its way to its dead-letter queue: a purge, a delete of its queue or subscription, or its retention
 * ending later than its lease dead-letters it first, where before each deleted it (messages.ts,
 * deadLetterDue). And (BOUNDED_OWNERSHIP) a user owns at most MAX_OWNED queues, topics and
 * subscriptions in one partition; one more is refused (access.ts, requireRoom). Before, a user made
 * any number, and each was a row every partition's sweep read (a review: 40,000 empty queues, 0.2 s
 * of a node's loop). And (BOUNDED_DELETES) a purge or a delete deletes at most CLEAR_BUDGET messages
 * in its own entry and leaves the rest to the sweeps, CLEAR_BUDGET per entry (messages.ts,
 * clearRows): before, one entry deleted them all, 0.7 s of every node's loop at 640,000. Format 16
 * (BOUNDED_GRANTS): a queue or topic holds grants for at most MAX_GRANTS users; a grant for one more
 * is refused (access.ts, putGrant). Before, an owner granted rights to any number of users, each a
 * row that every listing of its grants read and answered at once. And (SERVED_POLLS_KEPT) a parked
 * poll that is served stays in the state, with where its messages are, until its poll looks again or
 * housekeeping prunes it, and that look answers them (messages.ts, receive): before, the poll's node
 * learnt of them only from its own apply of the entry that served it, and a node that caught up
 * through a snapshot past that entry never did, so they stayed leased to nobody, counted as a
 * delivery (dead-lettered, with maxDeliveries 1, unseen). Format 17 (BOUNDED_RECEIVES): a receive,
 * or a parked poll's serving, leases messages only until their bodies and attributes reach
 * RECEIVE_BYTES (at least one message): before, up to 100 messages of 256 KiB, escaped in JSON,
 * made one answer of 168 MB that held its node's loop for seconds (a review). And
 * (BOUNDED_PROMOTION) one entry makes at most PROMOTE_BUDGET ended leases and passed delays ready
 * again or dead-letters them, the earliest due first; the entries after it that look at the channel
 * take the rest (leases.ts, promoteDue): before, a receive after 100,000 leases ended together
 * promoted them all, 0.75 s of every replica's loop (a review).
 */
export const FORMAT = 17;

/** From this format on, commands that carry bodies hold them as bytes (envelope.ts). */
export const BODIES_AS_BYTES = 2;
/** From this format on, long polls park in the partition's state (messages.ts, serveWaiters). */
export const PARKED_POLLS = 3;
/** From this format on, new rows leave their message bodies in the Raft log (bodies.ts). */
export const BODIES_IN_LOG = 4;
/** From this format on, apply refuses a subscription or a publish past the fan-out limits (topics.ts). */
export const BOUNDED_FANOUT = 5;
/** From this format on, a revoked right to subscribe takes the user's subscriptions with it (topics.ts). */
export const REVOKE_UNSUBSCRIBES = 6;
/** From this format on, a keyed receive's kept result holds no message bodies (messages.ts, withoutBodies). */
export const KEYED_RECEIVE_WITHOUT_BODIES = 7;
/** From this format on, one entry moves the partition's clock at most MAX_CLOCK_STEP_MS (state-machine.ts). */
export const BOUNDED_CLOCK_STEP = 8;
/** From this format on, user.logout, user.password and user.delete apply (access.ts); before, they are unknown commands. */
export const USER_LIFECYCLE = 9;
/**
 * From this format on, a replica's message table may be in the clustered layout (message-table.ts):
 * rebuilt at the raise when small, or when its node next starts.
 */
export const MESSAGE_TABLE = 10;
/** From this format on, a publish's `split` makes it several publishes, each checked and answered alone (topics.ts). */
export const SHARED_PUBLISHES = 11;
/** From this format on, a dead letter's `source` (its outbox row), not its message id, keys its deduplication (messages.ts). */
export const DEAD_LETTER_SOURCES = 12;
/** From this format on, a lease is not ended by time in the entry that made it (leases.ts, promoteDue). */
export const OWN_LEASES_HELD = 12;
/** From this format on, dead letters' deduplication keys are apart from clients' deduplication ids (messages.ts). */
export const DEAD_LETTER_KEYS_APART = 13;
/** From this format on, a queue's or topic's delete takes the Idempotency-Keys used on it (state-machine.ts). */
export const KEYS_GO_WITH_RESOURCE = 14;
/** From this format on, a nack's `release` gives its delivery back uncounted, never dead-lettered (leases.ts). */
export const UNDELIVERED_RELEASED = 15;
/** From this format on, a message whose last lease ended is dead-lettered before a purge, a delete or its retention takes it (messages.ts). */
export const DEAD_LETTERS_FIRST = 15;
/** From this format on, a purge or a delete deletes at most CLEAR_BUDGET messages per entry, the sweeps the rest (messages.ts). */
export const BOUNDED_DELETES = 15;
/** From this format on, a user owns at most MAX_OWNED queues, topics and subscriptions in a partition (access.ts). */
export const BOUNDED_OWNERSHIP = 15;
/** From this format on, a queue or topic holds grants for at most MAX_GRANTS users (access.ts). */
export const BOUNDED_GRANTS = 16;
/** From this format on, a served parked poll stays in the state until its look takes its messages (messages.ts). */
export const SERVED_POLLS_KEPT = 16;
/** From this format on, a receive leases messages up to RECEIVE_BYTES of bodies and attributes (leases.ts, leaseReady). */
export const BOUNDED_RECEIVES = 17;
/** From this format on, an entry promotes or dead-letters at most PROMOTE_BUDGET due messages (leases.ts, promoteDue). */
export const BOUNDED_PROMOTION = 17;
/**
 * How far one entry's stamp may move a partition's clock past its value (format 8). A leader whose
 * wall clock is wrong stamps the median of the nodes' clocks (src/partition/cluster-clock.ts); were
 * its stamps still far ahead, each of its entries would freeze the partition's leases, delays and
 * retention for at most this long once a correct leader takes over. A leader keeps an idle
 * partition's clock within half of it (housekeeping.ts, keepClocks).
 */
export const MAX_CLOCK_STEP_MS = 60_000;

/** Applying needs a newer build: the partition's format (or an entry raising it) is past what this one reads. */
export class FormatTooNewError extends Error {
  override name = 'FormatTooNewError';
  constructor(
    readonly format: number,
    readonly readable: number,
  ) {
    super(`the partition's log is in format ${format}; this build reads up to format ${readable}: upgrade this node`);
  }
}

/** Whether `n` can be a format: a positive safe integer. */
export function isFormat(n: unknown): n is number {
  return typeof n === 'number' && Number.isSafeInteger(n) && n >= 1;
}
