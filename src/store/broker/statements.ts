// The prepared statements of a partition's state machine. Their SQL is compiled by Kysely from the
// typed BrokerDatabase (schema.ts), as src/store/raft-log does, so that a renamed column fails `tsc`,
// not production; it is compiled and prepared once, when the state machine opens, and the apply path
// runs it synchronously on better-sqlite3 (sqlite.ts says why).
//
// What must hold: every replica touches the same rows in the same order and writes the same values,
// or replicas stop being byte-identical. So the SQL says everything that decides this (orderings,
// conflict targets, the index a scan must use), and the constants a statement always uses (a message
// state, a resource kind, a new counter's start) are SQL literals, not parameters.
//
// Parameters bind positionally, in the order the builder mentions them (set, where, returning,
// limit); the comment on each statement lists them, and `prepare` checks their count, so that a
// reordered builder fails when the state machine opens rather than in the middle of an apply.
import { Kysely, SqliteDialect, sql, type CompiledQuery, type ExpressionBuilder, type RawBuilder } from 'kysely';
import type { Statement } from 'better-sqlite3';
import { DUE_STATES } from './message-table.js';
import { MessageState, type BrokerDatabase, type ChannelsTable, type MessagesTable, type WaitersTable } from './schema.js';
import type { Sqlite } from './sqlite.js';

type Db = Kysely<BrokerDatabase>;

/** Message rows one multi-row insert carries (9 parameters each; SQLite allows 32,766). */
export const INSERT_ROWS = 100;

function prepare(db: Sqlite, q: CompiledQuery, arity: number): Statement {
  if (q.parameters.length !== arity) throw new Error(`statement has ${q.parameters.length} parameters, expected ${arity}: ${q.sql}`);
  return db.prepare(q.sql);
}

/** A constant written into the SQL text (a parameter's placeholder value is only a type witness). */
const lit = <V extends string | number>(v: V): RawBuilder<V> => sql.lit(v);

/**
 * `messages` scanned through one index (SQLite's INDEXED BY). Kysely has no INDEXED BY, so the clause
 * rides in the table's raw alias: `"messages" as "messages" indexed by "<index>"`.
 */
function messagesBy(index: 'messages_ready' | 'messages_due' | 'messages_expiry') {
  return sql<MessagesTable>`${sql.table('messages')}`.as<'messages'>(sql`${sql.table('messages')} indexed by ${sql.id(index)}`);
}

/**
 * `waiters` through one of its partial indexes (made at open): the polls still waiting, by channel,
 * as serving reads them, or by deadline, as housekeeping prunes them; the served ones (format 16),
 * by deadline. So neither reads the served polls kept for their looks, which may be many.
 */
function waitersBy(index: 'waiters_waiting' | 'waiters_waiting_deadline' | 'waiters_served') {
  return sql<WaitersTable>`${sql.table('waiters')}`.as<'waiters'>(sql`${sql.table('waiters')} indexed by ${sql.id(index)}`);
}

/** `channels` scanned through one of its partial indexes (INDEXED_BY_OPEN), as messagesBy does `messages`. */
function channelsBy(index: 'channels_dead_letters' | 'channels_leased' | 'channels_holding') {
  return sql<ChannelsTable>`${sql.table('channels')}`.as<'channels'>(sql`${sql.table('channels')} indexed by ${sql.id(index)}`);
}

/**
 * The conditions of the partial indexes on `channels`, as each is made (INDEXED_BY_OPEN) and as each
 * scan of it writes it: SQLite uses a partial index only for a WHERE that holds its very terms, with
 * the constants written out (a bound parameter does not do), and a statement naming the index
 * without them fails to prepare. `channels_dead_letters`: the channels that dead-letter (they have a
 * maxDeliveries); `channels_leased`: those of them with leased messages, the only ones in which a
 * sweep may find a dead letter (its counters are exact: messages.ts); `channels_holding`: the
 * channels that hold messages, the only ones in which a sweep may find one past its retention.
 */
const DEAD_LETTERS = 'max_deliveries is not null';
const LEASED = `${DEAD_LETTERS} and n_leased > 0`;
const HOLDING = 'n_ready + n_leased + n_delayed > 0';

/**
 * The indexes a state gets when it opens, not from a migration: snapshot images carry the migration
 * table, and a node of the previous build must still open an image made by this one during a
 * rolling upgrade (an extra index is harmless to it). They change no row, so no result: only what a
 * statement reads to find its rows. With them a sweep, and the leader's look for one, read the
 * messages and channels that have work, not every channel (a user's 40,000 empty queues in one
 * partition held each look 0.2 s), and a creation counts what its owner owns without a scan.
 */
export const INDEXED_BY_OPEN: readonly string[] = [
  // The channels holding messages. Not an index of every message by expiry, which found the expired
  // ones at once but cost each send and ack a third index write: 4-5% more apply per message in
  // bench:replica-apply (10.9 against 10.4 µs answering, 9.2 against 8.8 not). This one changes with
  // a channel's counters, once per entry, and only when it empties or fills.
  `create index if not exists channels_holding on channels (id) where ${HOLDING}`,
  `create index if not exists channels_dead_letters on channels (id) where ${DEAD_LETTERS}`,
  `create index if not exists channels_leased on channels (id) where ${LEASED}`,
  // What a user owns in the partition, counted at each creation from format 15 (access.ts, requireRoom).
  'create index if not exists channels_owner on channels (owner)',
  'create index if not exists topics_owner on topics (owner)',
  // The queue or subscription of a channel, by its id: where a parked poll waits, for a node that
  // takes out polls nobody will answer (waitingTagged). Without them SQLite built a temporary index
  // over every queue and subscription of the partition at each such read: 27 ms with 100,000 queues
  // (review of stop 61).
  'create index if not exists queues_channel on queues (channel_id)',
  'create index if not exists subscriptions_channel on subscriptions (channel_id)',
  // A topic's subscriptions as a publish lists them (listSubscriptionChannels), without their rows: a
  // row with a filter of 4 KiB fills a page of 2 KiB, and reading 1,000 of them cost each publish
  // 4 ms more (review of stop 62).
  'create index if not exists subscriptions_listed on subscriptions (topic, name, channel_id)',
];

/** (now): the channels holding messages past their retention, without their select. */
function expiringChannels(k: Db) {
  return k
    .selectFrom(channelsBy('channels_holding'))
    .where(sql<boolean>`${sql.raw(HOLDING)}`)
    .where((eb) =>
      eb.exists(
        eb
          .selectFrom(messagesBy('messages_expiry'))
          .select((e) => e.lit(1).as('one'))
          .whereRef('messages.channel_id', '=', 'channels.id')
          .where('messages.expires_at', '<=', 0),
      ),
    );
}

/**
 * The messages a statement reads, counted by state (messages.ts, StateSums): sums, not a GROUP BY,
 * which sorts every row read in a temporary B-tree (in memory).
 */
const sumsByState = (eb: ExpressionBuilder<{ messages: MessagesTable }, 'messages'>) => [
  eb.fn.sum<number | null>(eb('state', '=', lit(MessageState.Ready))).as('ready'),
  eb.fn.sum<number | null>(eb('state', '=', lit(MessageState.Leased))).as('leased'),
  eb.fn.sum<number | null>(eb('state', '=', lit(MessageState.Delayed))).as('delayed'),
];

/** Every column of a channel row, read through the alias `c`. */
const CHANNEL = [
  'c.id',
  'c.kind',
  'c.owner',
  'c.visibility_timeout_ms',
  'c.max_deliveries',
  'c.dead_letter_queue',
  'c.delay_ms',
  'c.retention_ms',
  'c.next_seq',
  'c.n_ready',
  'c.n_leased',
  'c.n_delayed',
  'c.n_dropped',
  'c.created_at',
] as const;

/** The columns a receive reads of the messages it leases (statement `ready`), in this order. */
export const READY_COLUMNS = ['seq', 'message_id', 'body', 'attributes', 'sent_at', 'delivery_count'] as const;

/** A message row as inserted: never delivered, never leased. */
function newMessage() {
  return {
    channel_id: 0,
    seq: 0,
    message_id: '',
    body: '',
    attributes: '',
    sent_at: 0,
    state: MessageState.Ready,
    visible_at: 0,
    delivery_count: lit(0),
    lease_id: lit(0),
    expires_at: 0,
  };
}

/** The statement reading one meta value: (key). */
const metaValue = (k: Db) => k.selectFrom('meta').select('value').where('key', '=', '');

export function prepareStatements(db: Sqlite, k: Db) {
  const s = (q: { compile(): CompiledQuery }, arity: number): Statement => prepare(db, q.compile(), arity);
  /** Ended leases and passed delays of a channel: (channel_id, now). */
  const dueRows = () =>
    k.selectFrom(messagesBy('messages_due')).select(['seq', 'state', 'delivery_count', 'lease_id']).where('channel_id', '=', 0).where(DUE_STATES).where('visible_at', '<=', 0);
  /** (delta, id) */
  const bump = (col: 'n_ready' | 'n_leased' | 'n_delayed'): Statement =>
    s(k.updateTable('channels').set(col, (eb) => eb(col, '+', 0)).where('id', '=', 0), 2);
  /** When the next message of a channel in `state` becomes visible, null if none: (channel). */
  const firstDue = (state: MessageState) =>
    k.selectFrom(messagesBy('messages_due')).select((eb) => eb.fn.min('visible_at').as('at')).where('channel_id', '=', 0).where('state', '=', lit(state)).where(DUE_STATES);
  const inserts = new Map<number, Statement>();
  return {
    /** (key) */
    getMeta: s(metaValue(k), 1),
    /** (value, key) */
    setMeta: s(k.updateTable('meta').set({ value: 0 }).where('key', '=', ''), 2),
    /** (key, value): for keys later versions added, absent from older databases and images. */
    putMeta: s(k.insertInto('meta').values({ key: '', value: 0 }).onConflict((oc) => oc.column('key').doUpdateSet((eb) => ({ value: eb.ref('excluded.value') }))), 2),
    /** (username) */
    getUser: s(k.selectFrom('users').select(['username', 'password_hash', 'created_at']).where('username', '=', ''), 1),
    /** (username, password_hash, created_at) */
    insertUser: s(k.insertInto('users').values({ username: '', password_hash: '', created_at: 0 }), 3),
    /** (password_hash, username) */
    setPassword: s(k.updateTable('users').set({ password_hash: '' }).where('username', '=', ''), 2),
    /** (username) */
    deleteUser: s(k.deleteFrom('users').where('username', '=', ''), 1),
    /** (username) */
    getUserTokens: s(k.selectFrom('user_tokens').select(['epoch', 'deleted_at']).where('username', '=', ''), 1),
    /** (username, epoch, deleted_at) */
    putUserTokens: s(
      k
        .insertInto('user_tokens')
        .values({ username: '', epoch: 0, deleted_at: 0 })
        .onConflict((oc) => oc.column('username').doUpdateSet((eb) => ({ epoch: eb.ref('excluded.epoch'), deleted_at: eb.ref('excluded.deleted_at') }))),
      3,
    ),
    /**
     * (owner, owner): the channels (queues and subscriptions) and topics `owner` owns in this
     * partition, each counted in its index (channels_owner, topics_owner: INDEXED_BY_OPEN).
     */
    countHeld: s(
      k.selectNoFrom((eb) => [
        eb.selectFrom('channels').select((e) => e.fn.countAll<number>().as('n')).where('channels.owner', '=', '').as('channels'),
        eb.selectFrom('topics').select((e) => e.fn.countAll<number>().as('n')).where('topics.owner', '=', '').as('topics'),
      ]),
      2,
    ),
    /** (owner): the queues and topics `owner` owns in this partition. */
    countOwned: s(
      k
        .selectNoFrom((eb) => [
          eb.selectFrom('queues').innerJoin('channels', 'channels.id', 'queues.channel_id').select((e) => e.fn.countAll<number>().as('n')).where('channels.owner', '=', '').as('queues'),
          eb.selectFrom('topics').select((e) => e.fn.countAll<number>().as('n')).where('topics.owner', '=', '').as('topics'),
        ]),
      2,
    ),
    /** (resource_kind, resource_name, username) */
    getGrant: s(
      k.selectFrom('grants').select('actions').where('resource_kind', '=', 'queue').where('resource_name', '=', '').where('username', '=', ''),
      3,
    ),
    /** (resource_kind, resource_name, username, actions) */
    putGrant: s(
      k
        .insertInto('grants')
        .values({ resource_kind: 'queue', resource_name: '', username: '', actions: '' })
        .onConflict((oc) => oc.columns(['resource_kind', 'resource_name', 'username']).doUpdateSet((eb) => ({ actions: eb.ref('excluded.actions') }))),
      4,
    ),
    /** (resource_kind, resource_name, username) */
    deleteGrant: s(
      k.deleteFrom('grants').where('resource_kind', '=', 'queue').where('resource_name', '=', '').where('username', '=', ''),
      3,
    ),
    /** (resource_kind, resource_name): counted in the primary key's index, at a grant for a new user from format 16. */
    countGrants: s(
      k.selectFrom('grants').select((e) => e.fn.countAll<number>().as('n')).where('resource_kind', '=', 'queue').where('resource_name', '=', ''),
      2,
    ),
    /** (resource_kind, resource_name) */
    deleteGrants: s(k.deleteFrom('grants').where('resource_kind', '=', 'queue').where('resource_name', '=', ''), 2),
    /** (resource_kind, resource_name) */
    listGrants: s(
      k.selectFrom('grants').select(['username', 'actions']).where('resource_kind', '=', 'queue').where('resource_name', '=', '').orderBy('username'),
      2,
    ),
    /** (name) */
    getQueue: s(k.selectFrom('queues as q').innerJoin('channels as c', 'c.id', 'q.channel_id').select(['q.name', ...CHANNEL]).where('q.name', '=', ''), 1),
    /** (name, channel_id) */
    insertQueue: s(k.insertInto('queues').values({ name: '', channel_id: 0 }), 2),
    /** (name) */
    deleteQueue: s(k.deleteFrom('queues').where('name', '=', ''), 1),
    /** (owner, username, after, limit) */
    listQueues: s(
      k
        .selectFrom('queues as q')
        .innerJoin('channels as c', 'c.id', 'q.channel_id')
        .select('q.name')
        .where((eb) =>
          eb.or([
            eb('c.owner', '=', ''),
            eb.exists(
              eb
                .selectFrom('grants as g')
                .select(eb.lit(1).as('one'))
                .where('g.resource_kind', '=', lit('queue'))
                .whereRef('g.resource_name', '=', 'q.name')
                .where('g.username', '=', ''),
            ),
          ]),
        )
        .where('q.name', '>', '')
        .orderBy('q.name')
        .limit(0),
      4,
    ),
    /** (id) */
    getChannel: s(k.selectFrom('channels as c').select(CHANNEL).where('c.id', '=', 0), 1),
    allChannels: s(k.selectFrom('channels as c').select(CHANNEL).orderBy('c.id'), 0),
    /**
     * (channel_id, from, to): the lowest sequence from..to of the channel's rows that point at an
     * entry for their body (bodies.ts), if any, as a number (plucked): one seek of the primary key.
     */
    firstLogSeq: s(
      k
        .selectFrom('messages')
        .select('seq')
        .where('channel_id', '=', 0)
        .where('seq', '>=', 0)
        .where('seq', '<=', 0)
        // A row installed from an image holds its body (a blob): it points at no entry.
        .where(sql<string>`typeof(${sql.ref('body')})`, '=', lit('text'))
        .orderBy('seq')
        .limit(lit(1)),
      3,
    ).pluck(true),
    /** (): the highest sequence any channel or topic has given, or null (format 4's raise checks it). */
    highestSeq: s(
      k
        .selectFrom((eb) => eb.selectFrom('channels').select((e) => e.fn.max('next_seq').as('next')).unionAll(eb.selectFrom('topics').select((e) => e.fn.max('next_seq').as('next'))).as('n'))
        .select((eb) => sql<number | null>`${eb.fn.max('n.next')} - 1`.as('top')),
      0,
    ),
    /** (channel_id, now, max_deliveries, limit): ended leases (leases.ts: visible_at <= now) of messages out of deliveries. */
    dueDead: s(
      k
        .selectFrom(messagesBy('messages_due'))
        .select('seq')
        .where('channel_id', '=', 0)
        .where('state', '=', lit(MessageState.Leased))
        .where(DUE_STATES)
        .where('visible_at', '<=', 0)
        .where('delivery_count', '>=', 0)
        .orderBy('seq')
        .limit(0),
      4,
    ),
    /**
     * (channel_id, now, max_deliveries): messages out of deliveries whose retention ended after their
     * last lease did: dead letters, not expired (messages.ts, expire; format 15).
     */
    dueDeadExpired: s(
      k
        .selectFrom(messagesBy('messages_expiry'))
        .select('seq')
        .where('channel_id', '=', 0)
        .where('expires_at', '<=', 0)
        .where('state', '=', lit(MessageState.Leased))
        .where('delivery_count', '>=', 0)
        .whereRef('visible_at', '<=', 'expires_at')
        .orderBy('seq'),
      3,
    ),
    /** (id, kind, owner, visibility_timeout_ms, max_deliveries, dead_letter_queue, delay_ms, retention_ms, created_at) */
    insertChannel: s(
      k.insertInto('channels').values({
        id: 0,
        kind: 'queue',
        owner: '',
        visibility_timeout_ms: 0,
        max_deliveries: 0,
        dead_letter_queue: '',
        delay_ms: 0,
        retention_ms: 0,
        next_seq: lit(1),
        n_ready: lit(0),
        n_leased: lit(0),
        n_delayed: lit(0),
        n_dropped: lit(0),
        created_at: 0,
      }),
      9,
    ),
    /** (id) */
    deleteChannel: s(k.deleteFrom('channels').where('id', '=', 0), 1),
    /** Takes n sequence numbers (returns the first) and counts ready and delayed messages: (n, ready, delayed, id, n). */
    takeSeqs: s(
      k
        .updateTable('channels')
        .set((eb) => ({ next_seq: eb('next_seq', '+', 0), n_ready: eb('n_ready', '+', 0), n_delayed: eb('n_delayed', '+', 0) }))
        .where('id', '=', 0)
        .returning((eb) => eb('next_seq', '-', 0).as('first')),
      5,
    ),
    /** Takes the next sequence number and counts the message: (id). */
    nextSeqCounting: {
      ready: s(
        k
          .updateTable('channels')
          .set((eb) => ({ next_seq: eb('next_seq', '+', lit(1)), n_ready: eb('n_ready', '+', lit(1)) }))
          .where('id', '=', 0)
          .returning((eb) => eb('next_seq', '-', lit(1)).as('seq')),
        1,
      ),
      delayed: s(
        k
          .updateTable('channels')
          .set((eb) => ({ next_seq: eb('next_seq', '+', lit(1)), n_delayed: eb('n_delayed', '+', lit(1)) }))
          .where('id', '=', 0)
          .returning((eb) => eb('next_seq', '-', lit(1)).as('seq')),
        1,
      ),
    },
    /** (n_ready, n_leased, n_delayed, id) */
    setCounts: s(k.updateTable('channels').set({ n_ready: 0, n_leased: 0, n_delayed: 0 }).where('id', '=', 0), 4),
    /** By the state counted: (delta, id). */
    bumpCount: { [MessageState.Ready]: bump('n_ready'), [MessageState.Leased]: bump('n_leased'), [MessageState.Delayed]: bump('n_delayed') } as Record<
      MessageState,
      Statement
    >,
    /** (id) */
    bumpDropped: s(k.updateTable('channels').set((eb) => ({ n_dropped: eb('n_dropped', '+', lit(1)) })).where('id', '=', 0), 1),
    /** (channel_id, seq, message_id, body, attributes, sent_at, state, visible_at, expires_at) */
    insertMessage: s(k.insertInto('messages').values(newMessage()), 9),
    /**
     * The insert of `n` message rows, 9 parameters each as insertMessage, compiled and prepared once
     * per row count (at most INSERT_ROWS of them).
     */
    insertMessages(n: number): Statement {
      let st = inserts.get(n);
      if (st === undefined) {
        st = s(k.insertInto('messages').values(Array.from({ length: n }, newMessage)), 9 * n);
        inserts.set(n, st);
      }
      return st;
    },
    /** (channel_id, seq) */
    getMessage: s(k.selectFrom('messages').selectAll().where('channel_id', '=', 0).where('seq', '=', 0), 2),
    /** (channel_id, seq): what a receipt handle is checked against, without the body. */
    getLease: s(k.selectFrom('messages').select(['seq', 'state', 'lease_id', 'delivery_count', 'visible_at']).where('channel_id', '=', 0).where('seq', '=', 0), 2),
    /**
     * (channel_id, seq, lease_id): an ack, deleting the message only under the lease its handle
     * names; returns its state, or nothing (gone, or delivered again). One lookup where a read of the
     * lease and a delete took two.
     */
    ackMessage: s(k.deleteFrom('messages').where('channel_id', '=', 0).where('seq', '=', 0).where('lease_id', '=', 0).returning('state'), 3),
    /**
     * (channel_id, first seq, last seq, lease_id): the acks of handles naming consecutive sequences
     * under one lease, in one statement (leases.ts, ack): the rows it deleted, each [seq, state]. One
     * range scan of the primary key where a delete per handle looked each row up: in process, 5.6-6.8
     * against 3.8-4.5 µs a message for runs of 100 (a delete per handle, then this).
     */
    ackRun: s(
      k.deleteFrom('messages').where('channel_id', '=', 0).where('seq', '>=', 0).where('seq', '<=', 0).where('lease_id', '=', 0).returning(['seq', 'state']),
      4,
    ).raw(true),
    /** (channel_id, seq) */
    deleteMessage: s(k.deleteFrom('messages').where('channel_id', '=', 0).where('seq', '=', 0), 2),
    /** (channel_id) */
    deleteMessages: s(k.deleteFrom('messages').where('channel_id', '=', 0), 1),
    /**
     * (channel_id, below_seq, offset): the sequence of the channel's row `offset` places after its first,
     * among those below `below_seq`; none when fewer are there (messages.ts, clearRows).
     */
    clearBoundary: s(k.selectFrom('messages').select('seq').where('channel_id', '=', 0).where('seq', '<', 0).orderBy('seq').limit(lit(1)).offset(0), 3),
    /** (channel_id, to): the channel's rows up to sequence `to`, by state. */
    clearedByState: s(
      k
        .selectFrom('messages')
        .select(sumsByState)
        .where('channel_id', '=', 0)
        .where('seq', '<=', 0),
      2,
    ),
    /** (channel_id, to) */
    deleteUpTo: s(k.deleteFrom('messages').where('channel_id', '=', 0).where('seq', '<=', 0), 2),
    /** (channel_id, below_seq): a clearing left to housekeeping; one already pending reaches the higher bound. */
    putClearing: s(
      k
        .insertInto('clearing')
        .values({ channel_id: 0, below_seq: 0 })
        .onConflict((oc) => oc.column('channel_id').doUpdateSet((eb) => ({ below_seq: sql<number>`max(${eb.ref('clearing.below_seq')}, ${eb.ref('excluded.below_seq')})` }))),
      2,
    ),
    /** (): the clearings pending, in channel order. */
    listClearing: s(k.selectFrom('clearing').select(['channel_id', 'below_seq']).orderBy('channel_id'), 0),
    /** (channel_id) */
    deleteClearing: s(k.deleteFrom('clearing').where('channel_id', '=', 0), 1),
    /** (): whether any clearing is pending. */
    anyClearing: s(k.selectFrom('clearing').select('channel_id').limit(lit(1)), 0),
    /** (): the channels whose rows the log must keep bodies for: every channel, and those a delete left rows of (ascending). */
    channelsWithRows: s(
      k
        .selectFrom('channels')
        .select('id')
        .union(k.selectFrom('clearing').select('channel_id as id'))
        .orderBy('id'),
      0,
    ),
    /**
     * (channel_id, limit): the oldest ready messages, each an array of READY_COLUMNS' values in that
     * order (raw rows: better-sqlite3 makes an object of a row's columns at 2.3 µs a row of all
     * eleven, an array of these six at 0.9, in process).
     */
    ready: s(
      // Named: in the clustered layout, without statistics, SQLite would rather walk the primary key
      // (already in sequence order) past every leased message in front of the ready ones.
      k.selectFrom(messagesBy('messages_ready')).select(READY_COLUMNS).where('channel_id', '=', 0).where('state', '=', lit(MessageState.Ready)).orderBy('seq').limit(0),
      2,
    ).raw(true),
    /** (channel_id, now): ended leases and passed delays (leases.ts: visible_at <= now), for promoteDue. */
    due: s(dueRows().orderBy('seq'), 2),
    /**
     * (channel_id, now, limit): `due` from format 17 (BOUNDED_PROMOTION), at most `limit`, the
     * earliest due first: in the index's order, so that SQLite stops at the limit.
     */
    dueFirst: s(dueRows().orderBy('state').orderBy('visible_at').orderBy('seq').limit(0), 3),
    messageTotals: s(
      k
        .selectFrom('channels')
        .select((eb) => [eb.fn.sum<number | null>('n_ready').as('ready'), eb.fn.sum<number | null>('n_leased').as('leased'), eb.fn.sum<number | null>('n_delayed').as('delayed')]),
      0,
    ),
    /** (limit) */
    queueDepths: s(
      k
        .selectFrom('queues as q')
        .innerJoin('channels as c', 'c.id', 'q.channel_id')
        .select(['q.name as queue', 'c.n_ready as ready', 'c.n_leased as leased', 'c.n_delayed as delayed'])
        .orderBy((eb) => eb(eb('c.n_ready', '+', eb.ref('c.n_leased')), '+', eb.ref('c.n_delayed')), 'desc')
        .orderBy('q.name')
        .limit(0),
      1,
    ),
    // Two indexed min() lookups rather than one scan over every message in flight: (channel, channel).
    nextDue: s(
      k.selectNoFrom((eb) =>
        eb
          .fn<number>('min', [
            eb.fn.coalesce(firstDue(MessageState.Leased), lit(Number.MAX_SAFE_INTEGER)),
            eb.fn.coalesce(firstDue(MessageState.Delayed), lit(Number.MAX_SAFE_INTEGER)),
          ])
          .as('at'),
      ),
      2,
    ),
    /** (max_deliveries, channel_id, now, now): the due rows (leases.ts) by state, for the stats. */
    dueCounts: s(
      k
        .selectFrom(messagesBy('messages_due'))
        .select((eb) => [
          eb.fn.sum<number | null>(eb('state', '=', lit(MessageState.Leased))).as('leased'),
          eb.fn.sum<number | null>(eb.and([eb('state', '=', lit(MessageState.Leased)), eb('delivery_count', '<', 0)])).as('leased_alive'),
          eb.fn.sum<number | null>(eb('state', '=', lit(MessageState.Delayed))).as('delayed'),
        ])
        .where('channel_id', '=', 0)
        .where(DUE_STATES)
        .where('visible_at', '<=', 0)
        .where('expires_at', '>', 0),
      4,
    ),
    /** (state, visible_at, seq, channel_id) */
    setState: s(k.updateTable('messages').set({ state: MessageState.Ready, visible_at: 0 }).where('seq', '=', 0).where('channel_id', '=', 0), 4),
    /** (state, visible_at, seq, channel_id) */
    release: s(
      k.updateTable('messages').set({ state: MessageState.Ready, visible_at: 0, lease_id: lit(0) }).where('seq', '=', 0).where('channel_id', '=', 0),
      4,
    ),
    /** (visible_at, seq, channel_id): a delivery taken back, as if its lease had never been (leases.ts, nack's release). */
    giveBack: s(
      k
        .updateTable('messages')
        .set((eb) => ({ state: lit(MessageState.Ready), visible_at: 0, lease_id: lit(0), delivery_count: eb('delivery_count', '-', lit(1)) }))
        .where('seq', '=', 0)
        .where('channel_id', '=', 0),
      3,
    ),
    /**
     * (visible_at, lease_id, channel_id, seq): leases every ready message of the channel up to `seq`,
     * which are exactly the ones `ready` just read when `seq` is the last of them.
     */
    leaseReadyUpTo: s(
      k
        // Named, as `ready` (above) is.
        .updateTable(messagesBy('messages_ready'))
        .set((eb) => ({ state: lit(MessageState.Leased), visible_at: 0, delivery_count: eb('delivery_count', '+', lit(1)), lease_id: 0 }))
        .where('channel_id', '=', 0)
        .where('state', '=', lit(MessageState.Ready))
        .where('seq', '<=', 0),
      4,
    ),
    /** (channel_id, now) */
    expiredByState: s(
      k
        .selectFrom(messagesBy('messages_expiry'))
        .select(sumsByState)
        .where('channel_id', '=', 0)
        .where('expires_at', '<=', 0),
      2,
    ),
    /**
     * (now): the channels holding messages past their retention, in id order (a sweep's order), as
     * numbers (plucked): one seek of `messages_expiry` per channel that holds messages
     * (`channels_holding`), none for an empty one.
     */
    expiringChannels: s(expiringChannels(k).select('channels.id').orderBy('channels.id'), 1).pluck(true),
    /** (now): whether any message of the partition is past its retention. */
    anyExpiredAtAll: s(expiringChannels(k).select((eb) => eb.lit(1).as('one')).limit(lit(1)), 1),
    /**
     * (): the channels that dead-letter and hold leased messages, in id order, each
     * {id, max_deliveries}: the only ones in which a sweep may find a message out of deliveries.
     */
    leasedDeadLetterChannels: s(
      k.selectFrom(channelsBy('channels_leased')).select(['id', 'max_deliveries']).where(sql<boolean>`${sql.raw(LEASED)}`).orderBy('id'),
      0,
    ),
    /** (after): the first channel after `after` that dead-letters, by id, or nothing (plucked). */
    nextDeadLetterChannel: s(
      k.selectFrom(channelsBy('channels_dead_letters')).select('id').where(sql<boolean>`${sql.raw(DEAD_LETTERS)}`).where('id', '>', 0).orderBy('id').limit(lit(1)),
      1,
    ).pluck(true),
    /** (channel_id, now) */
    deleteExpired: s(k.deleteFrom('messages').where('channel_id', '=', 0).where('expires_at', '<=', 0), 2),
    // expires_at = sent_at + retention grows with seq, so the expiry index finds the oldest live message.
    // Messages whose last lease expired (about to be dead-lettered) are skipped: they are gone for consumers.
    /** (channel, now, now, max): skips ended leases out of deliveries (leases.ts). */
    oldest: s(
      k
        .selectFrom(messagesBy('messages_expiry'))
        .select('sent_at')
        .where('channel_id', '=', 0)
        .where('expires_at', '>', 0)
        .where((eb) => eb.not(eb.and([eb('state', '=', lit(MessageState.Leased)), eb('visible_at', '<=', 0), eb('delivery_count', '>=', 0)])))
        .orderBy('expires_at')
        .limit(lit(1)),
      4,
    ),
    // One index probe per channel (see `oldest`): (now).
    oldestOfAll: s(
      k.selectFrom('channels as c').select((eb) =>
        eb.fn
          .min<number | null>(
            eb
              .selectFrom(messagesBy('messages_expiry'))
              .select('sent_at')
              .whereRef('channel_id', '=', 'c.id')
              .where('expires_at', '>', 0)
              .orderBy('expires_at')
              .limit(lit(1)),
          )
          .as('at'),
      ),
      1,
    ),
    /** (channel_id, dedup_id, now) */
    getDedup: s(k.selectFrom('dedup').select(['message_id', 'seq']).where('channel_id', '=', 0).where('dedup_id', '=', '').where('expires_at', '>', 0), 3),
    /** (channel_id, dedup_id, message_id, seq, expires_at) */
    putDedup: s(
      k
        .insertInto('dedup')
        .values({ channel_id: 0, dedup_id: '', message_id: '', seq: 0, expires_at: 0 })
        .onConflict((oc) =>
          oc.columns(['channel_id', 'dedup_id']).doUpdateSet((eb) => ({
            message_id: eb.ref('excluded.message_id'),
            seq: eb.ref('excluded.seq'),
            expires_at: eb.ref('excluded.expires_at'),
          })),
        ),
      5,
    ),
    // ---- parked long polls (schema.ts, WaitersTable) ----
    /** (channel_id, id, tag, actor, max_messages, vt_ms, deadline) */
    parkWaiter: s(k.insertInto('waiters').values({ channel_id: 0, id: 0, tag: '', actor: '', max_messages: 0, vt_ms: 0, deadline: 0 }), 7),
    /** (channel_id, actor): the polls of a user who lost the right to receive. */
    dropWaitersOf: s(k.deleteFrom('waiters').where('channel_id', '=', 0).where('actor', '=', ''), 2),
    /** (tag): the waiter a poll parked, if still there. */
    waiterByTag: s(k.selectFrom('waiters').select(['channel_id', 'id', 'served']).where('tag', '=', ''), 1),
    /**
     * (from, below, now, limit): the polls still waiting whose tags sort in [from, below), with the
     * queue or subscription they wait on; a node's previous process's polls (Router.leaveOrphanedPolls).
     * Read by a node, never by an apply.
     */
    waitingTagged: s(
      k
        .selectFrom('waiters as w')
        .leftJoin('queues as q', 'q.channel_id', 'w.channel_id')
        .leftJoin('subscriptions as sb', 'sb.channel_id', 'w.channel_id')
        .select(['w.tag', 'w.actor', 'w.max_messages', 'q.name as queue', 'sb.topic as topic', 'sb.name as subscription'])
        .where('w.tag', '>=', '')
        .where('w.tag', '<', '')
        .where('w.served', 'is', null)
        .where('w.deadline', '>', 0)
        .orderBy('w.tag')
        .limit(0),
      4,
    ),
    /** (channel_id): whether any poll waits on the channel. */
    anyWaiter: s(k.selectFrom(waitersBy('waiters_waiting')).select('id').where('channel_id', '=', 0).where('served', 'is', null).limit(lit(1)), 1),
    /** (channel_id): in the order they parked. */
    waitersOf: s(k.selectFrom(waitersBy('waiters_waiting')).selectAll().where('channel_id', '=', 0).where('served', 'is', null).orderBy('id'), 1),
    /** (served, channel_id, id): a poll served (format 16), left for its next look. */
    serveWaiter: s(k.updateTable('waiters').set({ served: '' }).where('channel_id', '=', 0).where('id', '=', 0), 3),
    /** (channel_id, id) */
    unparkWaiter: s(k.deleteFrom('waiters').where('channel_id', '=', 0).where('id', '=', 0), 2),
    /** (channel_id) */
    deleteWaiters: s(k.deleteFrom('waiters').where('channel_id', '=', 0), 1),
    /** (now) */
    pruneWaiters: s(k.deleteFrom(waitersBy('waiters_waiting_deadline')).where('served', 'is', null).where('deadline', '<=', 0), 1),
    /** (now): served polls (format 16) whose poll had its last look long since. */
    pruneServed: s(k.deleteFrom(waitersBy('waiters_served')).where('served', 'is not', null).where('deadline', '<=', 0), 1),
    /** (now) */
    pruneAllDedup: s(k.deleteFrom('dedup').where('expires_at', '<=', 0), 1),
    /** (channel_id) */
    deleteDedup: s(k.deleteFrom('dedup').where('channel_id', '=', 0), 1),
    /** (username, key, now) */
    getIdempotency: s(
      k.selectFrom('idempotency').select(['fingerprint', 'result']).where('username', '=', '').where('key', '=', '').where('expires_at', '>', 0),
      3,
    ),
    // An expired record not yet pruned is replaced: (username, key, fingerprint, result, expires_at).
    putIdempotency: s(
      k
        .insertInto('idempotency')
        .values({ username: '', key: '', fingerprint: '', result: '', expires_at: 0 })
        .onConflict((oc) =>
          oc.columns(['username', 'key']).doUpdateSet((eb) => ({
            fingerprint: eb.ref('excluded.fingerprint'),
            result: eb.ref('excluded.result'),
            expires_at: eb.ref('excluded.expires_at'),
          })),
        ),
      5,
    ),
    /**
     * (from, to): the records whose keys fall in [from, to), those of one queue or topic (format 14,
     * forgetKeysOf), found by the index idempotency_key that the raise to format 14 makes.
     */
    deleteIdempotencyIn: s(k.deleteFrom('idempotency').where('key', '>=', '').where('key', '<', ''), 2),
    /** (now) */
    pruneIdempotency: s(k.deleteFrom('idempotency').where('expires_at', '<=', 0), 1),
    /** (name) */
    getTopic: s(k.selectFrom('topics').selectAll().where('name', '=', ''), 1),
    /** (name, id, owner, subscribe_policy, created_at) */
    insertTopic: s(
      k.insertInto('topics').values({ name: '', id: 0, owner: '', subscribe_policy: 'anyone', next_seq: lit(1), published: lit(0), created_at: 0 }),
      5,
    ),
    /** (name) */
    deleteTopic: s(k.deleteFrom('topics').where('name', '=', ''), 1),
    /** (name) */
    nextTopicSeq: s(
      k
        .updateTable('topics')
        .set((eb) => ({ next_seq: eb('next_seq', '+', lit(1)), published: eb('published', '+', lit(1)) }))
        .where('name', '=', '')
        .returning((eb) => eb('next_seq', '-', lit(1)).as('seq')),
      1,
    ),
    /** (owner, username, after, limit) */
    listTopics: s(
      k
        .selectFrom('topics as t')
        .select('t.name')
        .where((eb) =>
          eb.or([
            eb('t.owner', '=', ''),
            eb.exists(
              eb
                .selectFrom('grants as g')
                .select(eb.lit(1).as('one'))
                .where('g.resource_kind', '=', lit('topic'))
                .whereRef('g.resource_name', '=', 't.name')
                .where('g.username', '=', ''),
            ),
          ]),
        )
        .where('t.name', '>', '')
        .orderBy('t.name')
        .limit(0),
      4,
    ),
    /** (topic, name) */
    getSubscription: s(
      k
        .selectFrom('subscriptions as s')
        .innerJoin('channels as c', 'c.id', 's.channel_id')
        .innerJoin('topics as t', 't.name', 's.topic')
        .select(['s.name', 's.filter', 't.owner as topic_owner', ...CHANNEL])
        .where('s.topic', '=', '')
        .where('s.name', '=', ''),
      2,
    ),
    /** (topic, name, channel_id, filter) */
    insertSubscription: s(k.insertInto('subscriptions').values({ topic: '', name: '', channel_id: 0, filter: '' }), 4),
    /** (topic, name) */
    deleteSubscription: s(k.deleteFrom('subscriptions').where('topic', '=', '').where('name', '=', ''), 2),
    /** (topic) */
    deleteSubscriptions: s(k.deleteFrom('subscriptions').where('topic', '=', ''), 1),
    /** (topic) */
    listSubscriptions: s(
      k
        .selectFrom('subscriptions as s')
        .innerJoin('channels as c', 'c.id', 's.channel_id')
        .select(['s.name', 's.channel_id', 'c.owner'])
        .where('s.topic', '=', '')
        .orderBy('s.name'),
      1,
    ),
    /**
     * (topic): the channels, not the filters: a publish parses a filter once (filters.ts) and reads
     * one through subscriptionFilter only when it is not cached. Through subscriptions_listed, so that
     * it reads no row of `subscriptions` either: with filters, those are large (review of stop 62).
     */
    listSubscriptionChannels: s(
      k
        .selectFrom('subscriptions as s')
        .innerJoin('channels as c', 'c.id', 's.channel_id')
        .select(CHANNEL)
        .where('s.topic', '=', '')
        .orderBy('s.name'),
      1,
    ),
    /** (channel_id): through subscriptions_channel. */
    subscriptionFilter: s(k.selectFrom('subscriptions').select('filter').where('channel_id', '=', 0), 1),
    /** (topic) */
    countSubscriptions: s(k.selectFrom('subscriptions').select((eb) => eb.fn.countAll<number>().as('n')).where('topic', '=', ''), 1),
    nextOutbox: s(
      k
        .updateTable('meta')
        .set((eb) => ({ value: eb('value', '+', lit(1)) }))
        .where('key', '=', lit('outbox_seq'))
        .returning('value'),
      0,
    ),
    /** (id, target_queue, expected_owner, message_id, body, attributes, created_at) */
    insertOutbox: s(
      k.insertInto('outbox').values({ id: 0, target_queue: '', expected_owner: '', message_id: '', body: '', attributes: '', created_at: 0 }),
      7,
    ),
    /** (id) */
    deleteOutbox: s(k.deleteFrom('outbox').where('id', '=', 0), 1),
    /** (limit) */
    listOutbox: s(k.selectFrom('outbox').selectAll().orderBy('id').limit(0), 1),
    /** (after, limit): where each letter goes, without its body (the forwarder's pages). */
    listOutboxHeads: s(k.selectFrom('outbox').select(['id', 'target_queue', 'expected_owner']).where('id', '>', 0).orderBy('id').limit(0), 2),
    /** (id) */
    getOutbox: s(k.selectFrom('outbox').selectAll().where('id', '=', 0), 1),
  };
}

export type Statements = ReturnType<typeof prepareStatements>;

/**
 * The statement reading one meta value (key) of a snapshot image, which is a connection of its own.
 * The Kysely over it only compiles (nothing runs through it), so it needs no destroy().
 */
export function prepareImageMeta(image: Sqlite): Statement {
  return prepare(image, metaValue(imageKysely(image)).compile(), 1);
}

/**
 * The statement moving a state's dead-letter outbox sequence on (restore.ts: a cluster restored from
 * one copy): (by). Returns the sequence after.
 */
export function prepareOutboxAdvance(state: Sqlite): Statement {
  const k = imageKysely(state);
  const q = k
    .updateTable('meta')
    .set((eb) => ({ value: eb('value', '+', 0) }))
    .where('key', '=', lit('outbox_seq'))
    .returning('value');
  return prepare(state, q.compile(), 1);
}

const imageKysely = (image: Sqlite): Db => new Kysely<BrokerDatabase>({ dialect: new SqliteDialect({ database: image }) });

/**
 * What filling an image's rows with their bodies needs (format 4; images.ts fillBodies): the
 * next rows that leave theirs in the log, and an update that puts a body in a row.
 */
export function prepareImageBodies(image: Sqlite): { next: Statement; fill: Statement } {
  const k = imageKysely(image);
  return {
    /**
     * (channel_id, seq, from, limit): rows after (channel_id, seq) with bodies in the log, in key
     * order. A row value, so that SQLite seeks to it in the primary key: an OR of the two columns
     * scanned from the start for every page (review).
     */
    next: prepare(
      image,
      k
        .selectFrom('messages')
        .select(['channel_id', 'seq'])
        .where(sql<boolean>`(${sql.ref('channel_id')}, ${sql.ref('seq')}) > (${0}, ${0})`)
        .where('seq', '>=', 0)
        .where(sql<string>`typeof(${sql.ref('body')})`, '=', lit('text'))
        .orderBy('channel_id')
        .orderBy('seq')
        .limit(0)
        .compile(),
      4,
    ),
    /** (body, channel_id, seq) */
    fill: prepare(image, k.updateTable('messages').set({ body: '' }).where('channel_id', '=', 0).where('seq', '=', 0).compile(), 3),
  };
}
