// The message table's two layouts (format 10, MESSAGE_TABLE; design and measurements in
// docs/design/message-table.md). Migration 001 made `messages` a rowid table with a unique key on
// (channel_id, seq) and three full indexes: five B-trees to write per message. The clustered layout
// keeps each row in its key's B-tree (`WITHOUT ROWID`), indexes only the ready messages in
// `messages_ready` and only the leased and delayed ones in `messages_due` (partial indexes), and
// keeps `messages_expiry` whole: a receive and its ack touch two or three B-trees instead of five.
//
// A layout is physical, like a page size: the rows, and so the state hash, are the same in both, and
// every statement (statements.ts) gives the same rows in the same order in both, its ordering total
// and the condition of each partial index it uses written out, since SQLite uses a partial index only
// for a query whose WHERE holds that very term. So replicas of one partition may be in different
// layouts: each rebuilds its table when it can (rebuildMessageTable's callers), and an image carries
// the layout of the replica that made it. What the format guards is that no build that knows only
// the rowid layout ever meets the other: a leader raises a partition to format 10 only once every
// voter reads it, and a state in a format newer than its build is opened without its tables.
import { sql, type Kysely } from 'kysely';
import { MessageState, type BrokerDatabase } from './schema.js';
import type { Sqlite } from './sqlite.js';

export type MessageTable = 'rowid' | 'clustered';

/** The condition of the partial index `messages_ready`. */
const READY_ONLY = MessageState.Ready;

/**
 * The condition of the partial index `messages_due`, as the index is made with it and as every scan
 * of that index writes it (statements.ts): SQLite uses a partial index only for a WHERE that holds
 * its very term (`state = 1` alone does not do), and a statement naming the index without it fails
 * to prepare. One expression, so that the two cannot drift apart.
 */
export const DUE_STATES = sql<boolean>`${sql.ref('state')} in (${sql.join([MessageState.Leased, MessageState.Delayed].map((s) => sql.lit(s)))})`;

/**
 * How large a table the apply of the raise to format 10 rebuilds there and then: a pause of the
 * node's loop of at most about 25 ms, once (in process: 5,000 rows without bodies 12 ms, 1,000 rows
 * of 1 KiB bodies 22 ms; a node's partitions may all be raised in one pass of its leaders). A larger
 * one is rebuilt when its node next starts, before it serves (NodeHost.open). Bytes as well as rows:
 * rows installed from an image, or written before format 4, hold their bodies (up to 256 KiB each).
 * The decision is each replica's own: the layout is not part of the state.
 */
export const REBUILD_IN_APPLY: RebuildLimits = { rows: 5_000, bodyBytes: 1024 * 1024 };

/**
 * The largest page size whose databases are rebuilt. A clustered row lives in a B-tree of keys,
 * whose cells hold about a quarter of a page before the rest spills into an overflow page of its
 * own: a row that holds a 1 KiB body (above) took 3.4 times the space on 4 KiB pages (1.14 on 2 KiB
 * ones, review). States made before pages were 2 KiB (STATE_PAGE_BYTES), and images made from them,
 * keep the rowid layout.
 */
export const REBUILT_PAGE_BYTES = 2048;

/** How large a table an apply rebuilds (REBUILD_IN_APPLY); null: none, all wait for a start. */
export type RebuildLimits = { readonly rows: number; readonly bodyBytes: number } | null;

/** Which layout the state's message table has. */
export function messageTableOf(db: Sqlite): MessageTable {
  const row = db.prepare("select sql from sqlite_master where type = 'table' and name = 'messages'").get() as { sql: string } | undefined;
  if (row === undefined) throw new Error('the state has no messages table');
  return /without\s+rowid\s*$/i.test(row.sql) ? 'clustered' : 'rowid';
}

/** Whether the state's pages are small enough for the clustered layout (REBUILT_PAGE_BYTES). */
export function rebuildable(db: Sqlite): boolean {
  return (db.pragma('page_size', { simple: true }) as number) <= REBUILT_PAGE_BYTES;
}

/**
 * Whether the table is within `limits` to be rebuilt in an apply, found without reading past that
 * many rows; `octet_length()` reads a body's size, not the body.
 */
export function rebuildsInApply(db: Sqlite, limits: RebuildLimits): boolean {
  if (limits === null) return false;
  const { rows, bytes } = db
    .prepare('select count(*) as rows, coalesce(sum(octet_length(body)), 0) as bytes from (select body from messages limit ?)')
    .get(limits.rows + 1) as { rows: number; bytes: number };
  return rows <= limits.rows && bytes <= limits.bodyBytes;
}

/**
 * Rebuilds the rowid table into the clustered layout, rows and all, in whatever transaction the
 * caller holds (or one of its own): a crash leaves the table as it was. Statements prepared before
 * are prepared again by SQLite on their next run. Returns the rows moved.
 */
export function rebuildMessageTable(db: Sqlite, k: Kysely<BrokerDatabase>): number {
  const run = (q: { compile(): { sql: string } }): void => void db.prepare(q.compile().sql).run();
  const own = !db.inTransaction;
  if (own) db.prepare('BEGIN').run();
  try {
    // Migration 001's columns, in its order: `select *` (the state hash, image fills) reads them so.
    run(
      k.schema
        .createTable('messages_clustered')
        .addColumn('channel_id', 'integer', (c) => c.notNull())
        .addColumn('seq', 'integer', (c) => c.notNull())
        .addColumn('message_id', 'text', (c) => c.notNull())
        .addColumn('body', 'text', (c) => c.notNull())
        .addColumn('attributes', 'text', (c) => c.notNull())
        .addColumn('sent_at', 'integer', (c) => c.notNull())
        .addColumn('state', 'integer', (c) => c.notNull())
        .addColumn('visible_at', 'integer', (c) => c.notNull())
        .addColumn('delivery_count', 'integer', (c) => c.notNull())
        .addColumn('lease_id', 'integer', (c) => c.notNull())
        .addColumn('expires_at', 'integer', (c) => c.notNull())
        .addPrimaryKeyConstraint('messages_pk', ['channel_id', 'seq'])
        .modifyEnd(sql`without rowid`),
    );
    // In key order: each row goes at the end of the new B-tree.
    const moved = db
      .prepare(
        'insert into messages_clustered (channel_id, seq, message_id, body, attributes, sent_at, state, visible_at, delivery_count, lease_id, expires_at) ' +
          'select channel_id, seq, message_id, body, attributes, sent_at, state, visible_at, delivery_count, lease_id, expires_at from messages order by channel_id, seq',
      )
      .run().changes;
    run(k.schema.dropTable('messages'));
    run(k.schema.alterTable('messages_clustered').renameTo('messages'));
    run(k.schema.createIndex('messages_ready').on('messages').columns(['channel_id', 'state', 'seq']).where(sql.ref('state'), '=', sql.lit(READY_ONLY)));
    run(k.schema.createIndex('messages_due').on('messages').columns(['channel_id', 'state', 'visible_at']).where(DUE_STATES));
    run(k.schema.createIndex('messages_expiry').on('messages').columns(['channel_id', 'expires_at']));
    if (own) db.prepare('COMMIT').run();
    return moved;
  } catch (err) {
    if (own && db.inTransaction) db.prepare('ROLLBACK').run();
    throw err;
  }
}
