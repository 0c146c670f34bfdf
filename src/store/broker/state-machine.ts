// The broker's replicated state machine for one partition: applies committed log entries to SQLite.
//
// What must hold:
// - Deterministic: time comes from the entries (the clock is the largest stamp applied), ids from the
//   log position; no local clock, no randomness, no environment. The same log gives the same state.
// - Exactly once: the applied index is written in the same transaction as the changes it covers.
// - Permissions are checked here, against the replicated state, so no forwarded or replayed command
//   can bypass them.
//
// This file owns the connection and the apply loop (batches, savepoints, bulk sends, idempotency),
// and hands each command to its concern: access.ts (users, grants, permission checks), queues.ts,
// messages.ts (send, receive, retention, dead letters), leases.ts (when a lease ends; ack, nack,
// extend), topics.ts (topics, subscriptions, fan-out), views.ts (the reads). images.ts has the files
// of snapshots, statements.ts the SQL, context.ts what they share.
import { createHash } from 'node:crypto';
import type { Kysely } from 'kysely';
import Database from 'better-sqlite3';
import { ErrorCode, fail, ok, type ChannelRef, type Command, type Delivery, type Envelope, type MessageInput, type Received, type Result } from './commands.js';
import * as access from './access.js';
import { BodyMissingError, SLOTS, bodyPlace, logSeq, type BodySource } from './bodies.js';
import { PROMOTE_BUDGET, RECEIVE_BYTES, ack, extendLeases, nack } from './leases.js';
import { IDEMPOTENCY_WINDOW_MS, Refusal, bodiesFrom, clock, format, meta, type Ctx, type QueueRow, type Store } from './context.js';
import {
  SWEEP_BUDGET,
  WAITER_PRUNE_MS,
  SERVED_PRUNE_MS,
  delayOf,
  deliverDeadLetters,
  enqueueMany,
  inLog,
  unplaceable,
  outboxDone,
  purgeQueue,
  receive,
  replayReceive,
  sendToQueue,
  serveWaiters,
  sweep,
  CLEAR_BUDGET,
  withoutBodies,
} from './messages.js';
import { bodyText, decodeEnvelope } from './envelope.js';
import {
  BODIES_IN_LOG,
  BOUNDED_CLOCK_STEP,
  BOUNDED_FANOUT,
  FORMAT,
  MAX_CLOCK_STEP_MS,
  MESSAGE_TABLE,
  SHARED_PUBLISHES,
  OWN_LEASES_HELD,
  DEAD_LETTERS_FIRST,
  UNDELIVERED_RELEASED,
  FormatTooNewError,
  KEYED_RECEIVE_WITHOUT_BODIES,
  PARKED_POLLS,
  REVOKE_UNSUBSCRIBES,
  KEYS_GO_WITH_RESOURCE,
  BOUNDED_OWNERSHIP,
  BOUNDED_GRANTS,
  SERVED_POLLS_KEPT,
  BOUNDED_DELETES,
  BOUNDED_PROMOTION,
  BOUNDED_RECEIVES,
  USER_LIFECYCLE,
  isFormat,
} from './format.js';
import { FilterCache } from './filters.js';
import { advanceOutbox, copyState, finishImage, imageApplied, installImage, removeImageFiles, syncStateFiles } from './images.js';
import { REBUILD_IN_APPLY, messageTableOf, rebuildMessageTable, rebuildable, rebuildsInApply, type MessageTable, type RebuildLimits } from './message-table.js';
import { brokerMigrations } from './migrations.js';
import { createQueue, deleteQueue } from './queues.js';
import type { BrokerDatabase } from './schema.js';
import { migrate, openSqlite, type Sqlite } from './sqlite.js';
import { INDEXED_BY_OPEN, prepareImageMeta, prepareStatements, type Statements } from './statements.js';
import { createSubscription, createTopic, deleteSubscription, deleteTopic, dropUnsubscribed, publish, publishEach } from './topics.js';
import * as views from './views.js';

export { DEDUP_WINDOW_MS, IDEMPOTENCY_WINDOW_MS } from './context.js';
export { encodeReceipt } from './leases.js';
export type { OutboxRow, QueueView, SubscriptionView, TopicView } from './views.js';

/** Expired idempotency records and deduplication ids are deleted at every entry index divisible by this. */
export const HOUSEKEEPING_EVERY = 64;
export interface ApplyEntry {
  readonly index: number;
  readonly term: number;
  /** 0: a command; 1: a Raft no-op (advances the applied index only). */
  readonly kind: number;
  readonly data: Uint8Array;
}

/** Whether this replica answers the command of the entry at (index, term): apply()'s `answered`. */
export type Answered = (index: number, term: number) => boolean;

export interface Applied {
  readonly index: number;
  readonly result: Result;
  /**
   * Channels that gained visible messages, with how many: that many long polls' worth waiting on
   * them should wake (a poll takes up to its maxMessages).
   */
  readonly woke: readonly (readonly [channelId: number, visible: number])[];
  /**
   * Channels that gained a message that becomes visible later by time alone (a delay, a lease): long
   * polls waiting on them should look again at when that is.
   */
  readonly retimed: readonly number[];
  /** Messages leased to parked long polls (format 3): the node holding each poll answers it. */
  readonly delivered: readonly Delivery[];
}

/** The queue or topic a command acts on, which scopes its Idempotency-Key. */
function resourceOf(c: Command): string {
  switch (c.type) {
    case 'queue.create':
    case 'queue.delete':
    case 'queue.purge':
    case 'queue.send':
      return `queue:${c.name}`;
    case 'topic.create':
    case 'topic.delete':
    case 'topic.publish':
      return `topic:${c.name}`;
    case 'grant.put':
    case 'grant.delete':
      return `${c.kind}:${c.name}`;
    case 'subscription.create':
    case 'subscription.delete':
      return `topic:${c.topic}`;
    case 'receive':
    case 'ack':
    case 'nack':
    case 'lease':
      return 'queue' in c.channel ? `queue:${c.channel.queue}` : `topic:${c.channel.topic}`;
    default:
      return c.type;
  }
}

/**
 * A group of deferred batches (apply()) is committed once it holds this many entries or bytes of
 * entries, whatever the host's schedule: it keeps them to apply again should a batch fail.
 */
const GROUP_MAX_ENTRIES = 4096;
const GROUP_MAX_BYTES = 4 * 1024 * 1024;

/** The page cache of a partition's state database (KiB). */
export const STATE_CACHE_KIB = 512;

/**
 * The page size of a new state database. Format 4's rows are small (no body), and every commit writes
 * each page it changed to SQLite's WAL whole: 2 KiB pages wrote 21-23% fewer bytes per message than
 * SQLite's 4 KiB in send-1 and receive+ack of 100 (alternated pairs on three nodes), for about 3% more
 * CPU (bench/README.md, "State databases"). A database made before keeps its 4 KiB; an image carries
 * its leader's.
 */
export const STATE_PAGE_BYTES = 2048;

export class BrokerStateMachine {
  /** At most this many messages are dead-lettered by one sweep, to bound the entry's apply time. */
  static readonly SWEEP_BUDGET = SWEEP_BUDGET;

  /**
   * The statements over the state's tables, and what the concerns work on (the statements, the
   * partition, the send-target cache); null for a state in a format newer than `readable`, whose
   * tables this build may not know (open()).
   */
  private readonly tables: { readonly st: Statements; readonly store: Store } | null;
  /** apply()'s `answered`, while it runs. */
  private answered: Answered | null = null;
  /** The statements of a group's transaction (apply()). */
  private readonly tx: { begin: Database.Statement; commit: Database.Statement; rollback: Database.Statement };
  /**
   * The batches apply() applied in the open transaction, not committed yet, and the caches as they
   * were when it began; null when none is open.
   */
  private group: { entries: ApplyEntry[]; bytes: number; formatInForce: number; bodiesFrom: number } | null = null;
  /** snapshotTo() calls copying this state: while one runs, every apply() commits. */
  private copying = 0;
  /** Why a commit failed (commit()); null while every commit went in. */
  private failed: Error | null = null;

  private constructor(
    readonly sqlite: Sqlite,
    private readonly kysely: Kysely<BrokerDatabase>,
    readonly partition: number,
    readonly path: string,
    /** The newest log format this replica reads (format.ts): the build's, or an older one in tests. */
    readonly readable: number,
    /** What a state in a format newer than `readable` says of itself (open()); null for any other. */
    private readonly newer: StoredPosition | null,
  ) {
    this.tx = { begin: sqlite.prepare('BEGIN'), commit: sqlite.prepare('COMMIT'), rollback: sqlite.prepare('ROLLBACK') };
    if (newer !== null) {
      this.tables = null;
      this.formatInForce = newer.format;
      return;
    }
    const st = prepareStatements(sqlite, kysely);
    const store: Store = { st, partition, sendTargets: new Map(), filters: new FilterCache(), bodies: null, bodiesFrom: Infinity, lastBodyEntry: null };
    this.tables = { st, store };
    this.formatInForce = format(store);
    store.bodiesFrom = bodiesFrom(store);
  }

  /** The partition's format, as applied (format.ts); set by format.raise. */
  private formatInForce: number;

  /** How large a message table the raise to format 10 rebuilds in its apply (message-table.ts). */
  private rebuildInApply: RebuildLimits = REBUILD_IN_APPLY;

  /** The state's statements; a state in a newer format has none, and anything that needs them throws. */
  private get st(): Statements {
    return this.readTables().st;
  }

  private get store(): Store {
    return this.readTables().store;
  }

  private readTables(): { readonly st: Statements; readonly store: Store } {
    if (this.tables === null) throw new FormatTooNewError(this.formatInForce, this.readable);
    return this.tables;
  }

  /**
   * Opens (creating and migrating if needed) the state database of one partition. `readable` is the
   * newest log format this replica reads: the build's FORMAT unless a test plays another version.
   */
  static async open(
    path: string,
    partition: number,
    opts: { synchronous?: 'FULL' | 'NORMAL'; readable?: number; bodies?: BodySource; rebuildInApply?: RebuildLimits } = {},
  ): Promise<BrokerStateMachine> {
    const synchronous = opts.synchronous ?? 'NORMAL';
    const readable = opts.readable ?? FORMAT;
    const { sqlite, kysely } = openSqlite<BrokerDatabase>(path, { synchronous, pageSize: STATE_PAGE_BYTES });
    // A state in a newer format is opened without touching its tables: a later format may change
    // them (a table rebuilt, an index made partial), so that this build's migrations or statements
    // would fail on them and the node would not open. It opens halted instead (its host halts the
    // partition on its format), and a newer build applies on from its applied index.
    const stored = storedPosition(sqlite);
    if (stored !== null && stored.format > readable) return new BrokerStateMachine(sqlite, kysely, partition, path, readable, stored);
    await migrate(kysely, brokerMigrations);
    // Housekeeping prunes expired deduplication ids of every channel at once. An index, not a
    // migration: snapshot images carry the migration table, and a node of the previous version must
    // still open an image made by this one during a rolling upgrade (an extra index is harmless).
    sqlite.exec('create index if not exists dedup_expires_at on dedup (expires_at)');
    // Parked long polls (format 3; schema.ts): a table the previous version's images lack and ignore.
    sqlite.exec(
      'create table if not exists waiters (channel_id integer not null, id integer not null, tag text not null, actor text not null, max_messages integer not null, ' +
        'vt_ms integer, deadline integer not null, served text, primary key (channel_id, id)) without rowid',
    );
    // Where a served poll's messages are (format 16): a column the previous version's images lack.
    if (!(sqlite.prepare('select name from pragma_table_info(?)').all('waiters') as { name: string }[]).some((c) => c.name === 'served')) {
      sqlite.exec('alter table waiters add column served text');
    }
    sqlite.exec('create unique index if not exists waiters_tag on waiters (tag)');
    // The polls still waiting, as serving reads them: not the served ones kept for a look (format 16).
    sqlite.exec('create index if not exists waiters_waiting on waiters (channel_id, id) where served is null');
    // Both by deadline, as housekeeping prunes them: the served ones may be many under long polls.
    sqlite.exec('create index if not exists waiters_waiting_deadline on waiters (deadline) where served is null');
    sqlite.exec('create index if not exists waiters_served on waiters (deadline) where served is not null');
    // What sweeps and creations read by (statements.ts says why at open): on a state of an older
    // build, made once, at its first open by this one (indexes of channels and topics, not messages).
    for (const ddl of INDEXED_BY_OPEN) sqlite.exec(ddl);
    // Revoked tokens and deleted users (format 9; schema.ts): also absent from older images.
    sqlite.exec('create table if not exists user_tokens (username text primary key, epoch integer not null, deleted_at integer) without rowid');
    // Rows a large purge or delete left to housekeeping (format 15; schema.ts): absent from older images too.
    sqlite.exec('create table if not exists clearing (channel_id integer primary key, below_seq integer not null) without rowid');
    // A node holds one connection per partition: SQLite's default page cache (2 MiB each) would let
    // 16 partitions take 32 MiB. 512 KiB applied sends and receive+ack as fast, also over a
    // 300,000-message backlog (pages missed come from the OS page cache), so that is the bound.
    // WAL checkpoints (every 1,000 pages, on the applying connection) stay SQLite's default: a node
    // without automatic checkpoints was slower (bench/README.md, "State databases"). Pages are 2 KiB
    // (STATE_PAGE_BYTES).
    sqlite.pragma(`cache_size = -${STATE_CACHE_KIB}`);
    const sm = new BrokerStateMachine(sqlite, kysely, partition, path, readable, null);
    if (opts.bodies !== undefined) sm.attachBodies(opts.bodies);
    if (opts.rebuildInApply !== undefined) sm.rebuildInApply = opts.rebuildInApply;
    return sm;
  }

  /** Commits what apply() deferred, and closes the database. */
  async close(): Promise<void> {
    try {
      if (this.failed === null) this.commit();
    } finally {
      await this.kysely.destroy();
    }
  }

  /**
   * Whether the state can be read and applied to: false once closed, as while the host installs a
   * snapshot image in its place (a new state machine then takes over), and for a state in a format
   * newer than this build reads (open()).
   */
  isOpen(): boolean {
    return this.tables !== null && this.sqlite.open;
  }

  applied(): { index: number; term: number } {
    // A state this build cannot read is never applied to: it stays where it was opened.
    if (this.newer !== null) return { index: this.newer.index, term: this.newer.term };
    return { index: meta(this.store, 'applied_index'), term: meta(this.store, 'applied_term') };
  }

  /** The partition's log format in force (format.ts): what a leader may write into its log now. */
  format(): number {
    return this.formatInForce;
  }

  /** Where rows of format 4 read their bodies (bodies.ts): the partition's log. */
  attachBodies(source: BodySource): void {
    // A state this build cannot read has no rows to read bodies for.
    if (this.tables === null) return;
    this.store.bodies = source;
    this.store.lastBodyEntry = null;
  }

  /**
   * The entries from `lo` to `hi` that rows point at for their bodies (format 4; bodies.ts), ascending:
   * what the log must keep when it compacts them. Per channel, one seek of the primary key per entry
   * found, not a visit of every row: a scan of the rows a backlog left held each node's event loop
   * 53-120 ms at each local snapshot (bench/README.md, "What changed").
   */
  referencedEntries(lo: number, hi: number): number[] {
    return this.referencedIn([[lo, hi]]);
  }

  /**
   * Those of `indexes` (ascending) that rows point at: ranges of the primary key over each run of
   * consecutive indexes, so that entries kept far apart do not make it scan every row between them.
   */
  referencedAmong(indexes: readonly number[]): number[] {
    const runs: [number, number][] = [];
    for (const i of indexes) {
      const last = runs[runs.length - 1];
      if (last !== undefined && last[1] + 1 === i) last[1] = i;
      else runs.push([i, i]);
    }
    return this.referencedIn(runs);
  }

  private referencedIn(ranges: readonly (readonly [number, number])[]): number[] {
    // Before format 4 no row points at an entry: nothing to ask, not even the channels.
    if (!inLog(this.store)) return [];
    // With the rows a large delete left to the sweeps (format 15): an image made meanwhile reads
    // their bodies too (images.ts, fillBodies).
    const channels = this.st.channelsWithRows.all() as { id: number }[];
    const out = new Set<number>();
    for (const [lo, hi] of ranges) {
      const from = Math.max(logSeq(lo, 0), this.store.bodiesFrom);
      const to = logSeq(hi, SLOTS - 1);
      if (from > to) continue;
      for (const ch of channels) {
        // The channel's first row at or after `at`; then on from the entry after that row's.
        for (let at = from; at <= to; ) {
          const seq = this.st.firstLogSeq.get(ch.id, at, to) as number | undefined;
          if (seq === undefined) break;
          const { index } = bodyPlace(seq);
          out.add(index);
          at = logSeq(index + 1, 0);
        }
      }
    }
    return [...out].sort((a, b) => a - b);
  }

  /** The layout of the state's message table (message-table.ts). */
  messageTable(): MessageTable {
    this.readTables();
    return messageTableOf(this.sqlite);
  }

  /**
   * Rebuilds the message table into the clustered layout once the partition's format allows it and
   * if it is not in it yet (message-table.ts): what a node does to each state as it starts, before it
   * serves, since a large table takes seconds (4.5 s a million rows in process). Returns the rows
   * moved, or null when there was nothing to do.
   */
  rebuildMessageTable(): number | null {
    if (this.formatInForce < MESSAGE_TABLE || !this.toRebuild()) return null;
    this.commit();
    // The new indexes are sorted in a temporary file rather than in memory, whatever the table's size.
    this.sqlite.pragma('temp_store = FILE');
    let moved: number;
    try {
      moved = rebuildMessageTable(this.sqlite, this.kysely);
    } finally {
      this.sqlite.pragma('temp_store = MEMORY');
    }
    // The rebuild wrote the whole table into SQLite's -wal file, which keeps its largest size until
    // the connection closes: hand it back now (123 MB for a million messages, in process).
    this.sqlite.pragma('wal_checkpoint(TRUNCATE)');
    return moved;
  }

  /** Whether the message table is still in the rowid layout, on pages small enough for the other. */
  private toRebuild(): boolean {
    return this.messageTable() === 'rowid' && rebuildable(this.sqlite);
  }

  /**
   * The raise's rebuild of a small table, in a savepoint of its own: the layout is no part of the
   * state, so a rebuild that fails (whatever the cause) is undone alone and the table stays as it
   * was, rather than failing the raise on this replica only. Its node's next start tries again.
   * Unless the failure took the whole transaction with it, as SQLite may on a full disk, an I/O error
   * or no memory: then the savepoint, and what the batch applied before it, are gone, and the error
   * is the apply's (a storage failure, which stops it: the node replays the batch from its log).
   */
  private rebuildInThisApply(): void {
    if (!this.toRebuild() || !rebuildsInApply(this.sqlite, this.rebuildInApply)) return;
    this.sqlite.exec('SAVEPOINT message_table');
    try {
      rebuildMessageTable(this.sqlite, this.kysely);
    } catch (err) {
      if (!this.sqlite.inTransaction) throw err;
      this.sqlite.exec('ROLLBACK TO message_table');
    }
    this.sqlite.exec('RELEASE message_table');
  }

  /** The partition's clock: the largest leader stamp applied. */
  clock(): number {
    return clock(this.store);
  }

  // ---- apply ----

  /**
   * Applies committed entries in one transaction, with the applied index. Entries at or below the
   * applied index were applied before (a replay after a crash) and are skipped; a gap is a bug.
   *
   * Commands check before they write, so a refused one writes nothing and needs no savepoint. One
   * that breaks an assumption of the code (a malformed field that slipped through, a constraint)
   * throws: the batch is rolled back and applied again one command at a time, each in a savepoint,
   * so that it fails alone, the same way on every replica, instead of halting the partition there.
   * A savepoint for every command cost about a tenth of a node's busy time under single sends.
   *
   * With `defer`, the transaction stays open after the batch, and later deferred batches join it
   * until commit() (a node host commits every STATE_COMMIT_MS). Every commit writes each page it
   * changed to SQLite's WAL whole, and the same few pages (the end of each index) change in every
   * batch. What an open group holds is applied as far as every read here is concerned, and is lost
   * only with the process, as a commit at synchronous=NORMAL is with the machine: the Raft log
   * replays it on the next start, since the log is compacted only behind durable(), which commits
   * first. The group's batches have no savepoints (a savepoint keeps every page its batch changes):
   * a batch that throws rolls the whole group back, and the group's earlier entries are applied
   * again (the same results, from the same state) before the failing batch goes the way above. A
   * storage failure rolls the group back and is thrown (the host stops; the next start replays).
   * While snapshotTo() copies the state, every batch commits.
   *
   * `answered(index, term)`: whether this replica answers the entry's command (a proposal of its
   * own waits for it). Results of the others are whole only where they must be: a receive nobody
   * here answers gives only how many it leased (Received.unanswered). Without it, every result is.
   */
  apply(entries: readonly ApplyEntry[], opts: { defer?: boolean; answered?: Answered } = {}): Applied[] {
    this.answered = opts.answered ?? null;
    try {
      return this.applyAll(entries, opts.defer === true);
    } finally {
      this.answered = null;
    }
  }

  private applyAll(entries: readonly ApplyEntry[], deferred: boolean): Applied[] {
    // A commit failed: the state went back to before entries already answered (commit()).
    if (this.failed !== null) throw this.failed;
    // A state in a format this build cannot read: an image from a newer leader, or a database a newer
    // build applied. Applying on would part this replica from the others.
    if (this.formatInForce > this.readable) throw new FormatTooNewError(this.formatInForce, this.readable);
    const defer = deferred && this.copying === 0;
    if (!defer) this.commit();
    else if (this.group === null) {
      this.tx.begin.run();
      this.group = { entries: [], bytes: 0, formatInForce: this.formatInForce, bodiesFrom: this.store.bodiesFrom };
    }
    const formatBefore = this.formatInForce;
    const bodiesFromBefore = this.store.bodiesFrom;
    try {
      const out = this.applyBatch(entries, false, defer);
      const group = this.group;
      if (group !== null) {
        for (const e of entries) {
          group.entries.push(e);
          group.bytes += e.data.byteLength;
        }
        if (group.entries.length >= GROUP_MAX_ENTRIES || group.bytes >= GROUP_MAX_BYTES) this.commit();
      }
      return out;
    } catch (err) {
      // Rolled back: so is a format.raise of the batch, and what the batch cached.
      this.rewind(formatBefore, bodiesFromBefore);
      // A batch the code cannot apply, or one in a format this build cannot read: the group's
      // earlier entries go in again without it (the partition halts after them, at the latter). A
      // storage failure: nothing more is written, and the state is back behind entries already
      // answered, as after a failed commit(): failed, so that durable() lets no log go and every
      // later apply throws (review of 2026-12-07). So too when their redo fails.
      if (defer) {
        const answered = this.group !== null && this.group.entries.length > 0;
        const reapply = err instanceof MalformedCommand || err instanceof FormatTooNewError;
        try {
          this.rollBackGroup(reapply);
        } catch (redo) {
          if (answered) this.failed ??= redo as Error;
          throw redo;
        }
        if (answered && !reapply) this.failed ??= err as Error;
      }
      if (!(err instanceof MalformedCommand)) throw err;
      // A savepoint keeps every page its command changes, to undo it: in a temporary file here, not
      // in memory as statement journals are (sqlite.ts), or the delete of a queue of a million
      // messages in such a batch would hold the whole queue in memory, on every replica at once.
      this.sqlite.pragma('temp_store = FILE');
      try {
        return this.applyBatch(entries, true, false);
      } catch (retried) {
        // Rolled back as well (a format this build cannot read, a storage failure).
        this.rewind(formatBefore, bodiesFromBefore);
        throw retried;
      } finally {
        this.sqlite.pragma('temp_store = MEMORY');
      }
    }
  }

  /**
   * Commits the batches apply() deferred, if any. A commit that fails (an I/O error, a full disk)
   * leaves the state without them, though they were answered: every later apply() throws that
   * error, so that the node stops and replays them from its log on the next start.
   */
  commit(): void {
    if (this.group === null) return;
    try {
      this.tx.commit.run();
      this.group = null;
    } catch (err) {
      this.failed = err as Error;
      this.rollBackGroup(false);
      throw err;
    }
  }

  /** The error of a failed commit (commit()), or null. */
  get failure(): Error | null {
    return this.failed;
  }

  /** Whether apply() left batches uncommitted (see apply()). */
  uncommitted(): boolean {
    return this.group !== null;
  }

  /**
   * Rolls the open group back, and puts the state where it was before it. With `reapply`, its
   * entries are then applied again in one transaction of their own: every one of them applied
   * before, from the same state, so they apply the same way again.
   */
  private rollBackGroup(reapply: boolean): void {
    const group = this.group;
    if (group === null) return;
    this.group = null;
    try {
      // A failed statement or commit may have ended the transaction already (SQLite rolls some
      // back by itself).
      if (this.sqlite.inTransaction) this.tx.rollback.run();
    } catch (err) {
      // After a storage failure the caller throws that one; closing the connection rolls back.
      if (reapply) throw err;
    }
    this.rewind(group.formatInForce, group.bodiesFrom);
    if (reapply && group.entries.length > 0) {
      try {
        this.applyBatch(group.entries, false, false);
      } catch (err) {
        // Rolled back: the state is where the group began (a storage failure; the host stops).
        this.rewind(group.formatInForce, group.bodiesFrom);
        throw err;
      }
    }
  }

  /**
   * What every rollback puts back in memory: the format in force and the bodies mark as they were
   * before what was rolled back (a format.raise among it), and no send target (it may have cached
   * rows that are gone).
   */
  private rewind(formatInForce: number, bodiesFrom: number): void {
    this.formatInForce = formatInForce;
    this.store.bodiesFrom = bodiesFrom;
    this.store.sendTargets.clear();
  }

  private applyBatch(entries: readonly ApplyEntry[], guarded: boolean, inGroup: boolean): Applied[] {
    const out: Applied[] = [];
    const run = (): void => {
      let applied = meta(this.store, 'applied_index');
      let clock = meta(this.store, 'clock');
      let term: number | null = null;
      // Single sends to one queue by its owner, one entry after another: stored together (storeSends()).
      let sends: PendingSends | null = null;
      const flush = (): void => {
        const pending = sends;
        if (pending !== null) this.unguarded(() => this.storeSends(pending, out));
        sends = null;
      };
      for (const e of entries) {
        if (e.index <= applied) continue;
        if (e.index !== applied + 1) throw new Error(`apply of ${e.index} after ${applied}: a gap in the log`);
        applied = e.index;
        term = e.term;
        // Housekeeping at fixed log positions (not per apply call, whose batches differ between
        // replicas), so that every replica holds the same rows at the same index. Lookups check
        // expiry themselves: pruning only frees space.
        if (e.index % HOUSEKEEPING_EVERY === 0) {
          flush();
          this.st.pruneIdempotency.run(clock);
          this.st.pruneAllDedup.run(clock);
          this.st.pruneWaiters.run(clock - WAITER_PRUNE_MS);
          this.st.pruneServed.run(clock - SERVED_PRUNE_MS);
        }
        const env = e.kind === 0 ? parseEnvelope(e.data, this.formatInForce) : null;
        // The clock is the largest stamp applied; from format 8 one entry moves it a bounded step.
        if (env !== null && env.time > clock) clock = this.formatInForce >= BOUNDED_CLOCK_STEP ? Math.min(env.time, clock + MAX_CLOCK_STEP_MS) : env.time;
        const ch = guarded || env === null ? undefined : this.unguarded(() => this.bulkSendTarget(env));
        if (ch === undefined || (sends !== null && sends.ch.id !== ch.id)) flush();
        if (e.kind !== 0) {
          out.push({ index: e.index, result: ok(null), woke: [], retimed: [], delivered: [] });
          continue;
        }
        if (env === null) {
          out.push({ index: e.index, result: fail(ErrorCode.ValidationFailed, 'undecodable command'), woke: [], retimed: [], delivered: [] });
          continue;
        }
        const answers = this.answered === null || env.idempotencyKey !== undefined || this.answered(e.index, e.term);
        const ctx: Ctx = {
          index: e.index,
          now: clock,
          actor: env.actor,
          woke: new Map(),
          retimed: new Set(),
          delivered: [],
          answers,
          holdsOwnLeases: this.formatInForce >= OWN_LEASES_HELD,
          deadLettersFirst: this.formatInForce >= DEAD_LETTERS_FIRST,
          boundedDeletes: this.formatInForce >= BOUNDED_DELETES,
          clearBudget: CLEAR_BUDGET,
          keepsServed: this.formatInForce >= SERVED_POLLS_KEPT,
          receiveBytes: this.formatInForce >= BOUNDED_RECEIVES ? RECEIVE_BYTES : null,
          promoteBudget: this.formatInForce >= BOUNDED_PROMOTION ? PROMOTE_BUDGET : null,
        };
        if (ch !== undefined) {
          sends ??= { ch, sends: [] };
          sends.sends.push({ at: out.length, ctx, messages: (env.command as Extract<Command, { type: 'queue.send' }>).messages });
          out.push({ index: e.index, result: ok(null), woke: [], retimed: [], delivered: [] });
          continue;
        }
        out.push({ index: e.index, result: guarded ? this.applyGuarded(env, ctx) : this.applyUnguarded(env, ctx), woke: [...ctx.woke], retimed: [...ctx.retimed], delivered: ctx.delivered });
      }
      flush();
      this.st.setMeta.run(applied, 'applied_index');
      if (term !== null) this.st.setMeta.run(term, 'applied_term');
      this.st.setMeta.run(clock, 'clock');
    };
    // In a group, the group's transaction holds the batch (see apply()).
    if (inGroup) run();
    else this.sqlite.transaction(run)();
    return out;
  }

  /** Applies one command in the batch's transaction; an error of the code aborts the batch (apply()). */
  private applyUnguarded(env: Envelope, ctx: Ctx): Result {
    return this.unguarded(() => this.applyEnvelope(env, ctx));
  }

  /**
   * Runs what the batch does without savepoints: the apply of a command, the check for sends that
   * can be stored in bulk, their bulk store. An error of the code (a malformed command: a message
   * that is null, say) becomes MalformedCommand, and the batch is redone one command at a time, so
   * that the command fails alone; an error of storage stops the apply.
   */
  private unguarded<T>(fn: () => T): T {
    try {
      return fn();
    } catch (err) {
      if (isStorageFailure(err) || err instanceof FormatTooNewError) throw err;
      throw new MalformedCommand(err);
    }
  }

  /**
   * Applies one command inside a savepoint. A command that breaks an assumption of the code (a
   * malformed field that slipped through, a constraint) fails alone, the same way on every replica,
   * instead of halting the partition at that index forever. Storage failures (I/O, full disk,
   * corruption) are not the command's fault and stop the apply.
   */
  private applyGuarded(env: Envelope, ctx: Ctx): Result {
    const formatBefore = this.formatInForce;
    const bodiesFromBefore = this.store.bodiesFrom;
    try {
      return this.sqlite.transaction(() => this.applyEnvelope(env, ctx))();
    } catch (err) {
      if (isStorageFailure(err) || err instanceof FormatTooNewError) throw err;
      // Undone with its savepoint: a format.raise that failed midway, after it moved the bodies mark.
      this.rewind(formatBefore, bodiesFromBefore);
      ctx.woke.clear();
      ctx.retimed.clear();
      ctx.delivered.length = 0;
      return fail(ErrorCode.ValidationFailed, 'malformed command');
    }
  }

  private applyEnvelope(env: Envelope, ctx: Ctx): Result {
    // Keys are scoped per user and resource: the same key on another queue or topic is another
    // request, wherever its partition is (a partition cannot see the keys of the others).
    const key = env.idempotencyKey === undefined ? undefined : `${resourceOf(env.command)}\u0000${env.idempotencyKey}`;
    const fingerprint = key === undefined ? '' : createHash('sha256').update(commandText(env.command)).digest('hex');
    if (key !== undefined && env.actor !== null) {
      const prior = this.st.getIdempotency.get(env.actor, key, ctx.now) as { fingerprint: string; result: string } | undefined;
      if (prior !== undefined) {
        if (prior.fingerprint !== fingerprint) return fail(ErrorCode.Conflict, 'this Idempotency-Key was used for a different request');
        const kept = JSON.parse(prior.result) as Result;
        if (env.command.type !== 'receive') return kept;
        // From format 7 a receive's replay is answered again (replayReceive); before, as kept. Either
        // way marked: its deliveries may have reached the client, so none is released (Received.replayed).
        const replay = this.formatInForce >= KEYED_RECEIVE_WITHOUT_BODIES ? replayReceive(this.store, env.command.channel, kept, ctx) : kept;
        return replay.ok ? ok({ ...(replay.value as Received), replayed: true }) : replay;
      }
    }
    let result: Result;
    try {
      result = this.dispatch(env.command, ctx);
    } catch (err) {
      if (err instanceof Refusal) result = err.failure;
      else throw err;
    }
    if (this.formatInForce >= PARKED_POLLS && ctx.woke.size > 0) this.serveWaiters(ctx);
    // A receive that leased nothing changed nothing: its key stays free, so that a long poll may
    // propose again under the same Idempotency-Key and bind it to the receive that finds messages.
    const emptyReceive = env.command.type === 'receive' && result.ok && (result.value as { messages: unknown[] }).messages.length === 0;
    if (key !== undefined && env.actor !== null && !emptyReceive) {
      // From format 7 a receive's bodies are not kept: its replay reads them again (replayReceive).
      const kept = env.command.type === 'receive' && result.ok && this.formatInForce >= KEYED_RECEIVE_WITHOUT_BODIES ? ok(withoutBodies(result.value as Received)) : result;
      this.st.putIdempotency.run(env.actor, key, fingerprint, JSON.stringify(kept), ctx.now + IDEMPOTENCY_WINDOW_MS);
    }
    return result;
  }

  /** The commands that change no queue definition and no grant: the send-target cache survives them. */
  private static readonly KEEPS_SEND_TARGETS: ReadonlySet<Command['type']> = new Set<Command['type']>([
    'queue.send',
    'receive',
    'ack',
    'nack',
    'lease',
    'topic.publish',
    'sweep',
    'outbox.done',
    'deadletter.deliver',
    'queue.purge',
    'format.raise',
    'user.register',
    'user.logout',
    'user.password',
    'user.delete',
  ]);

  /**
   * After a queue's or topic's delete (format 14): the Idempotency-Keys used on it go with it, as its
   * deduplication ids do, so that none replays on one of the same name made later (by anyone). The
   * delete's own key is kept after this (applyEnvelope): its retry answers as it did.
   */
  private forgetKeysOf(r: Result, resource: string): Result {
    // (The index idempotency_key, made at the raise to format 14, finds them.)
    if (r.ok && this.formatInForce >= KEYS_GO_WITH_RESOURCE) this.st.deleteIdempotencyIn.run(`${resource}\u0000`, `${resource}\u0001`);
    return r;
  }

  private dispatch(c: Command, ctx: Ctx): Result {
    const s = this.store;
    if (!BrokerStateMachine.KEEPS_SEND_TARGETS.has(c.type)) s.sendTargets.clear();
    switch (c.type) {
      case 'user.register':
        return access.register(s, c.username, c.passwordHash, ctx);
      // Before format 9, an older build's answer: it knows no such command.
      case 'user.logout':
        return this.formatInForce >= USER_LIFECYCLE ? access.revokeTokens(s, c.epoch, ctx) : unknownCommand(c);
      case 'user.password':
        return this.formatInForce >= USER_LIFECYCLE ? access.setPassword(s, c.passwordHash, c.epoch, ctx) : unknownCommand(c);
      case 'user.delete':
        return this.formatInForce >= USER_LIFECYCLE ? access.deleteUser(s, c.epoch, ctx) : unknownCommand(c);
      case 'queue.create':
        return createQueue(s, c, ctx, this.formatInForce >= BOUNDED_OWNERSHIP);
      case 'queue.delete':
        return this.forgetKeysOf(deleteQueue(s, c.name, ctx), `queue:${c.name}`);
      case 'queue.purge':
        return purgeQueue(s, c.name, ctx);
      case 'grant.put':
      case 'grant.delete': {
        const r = c.type === 'grant.put' ? access.putGrant(s, c.kind, c.name, c.username, c.actions, ctx, this.formatInForce >= BOUNDED_GRANTS) : access.deleteGrant(s, c.kind, c.name, c.username, ctx);
        // From format 6, a user who may no longer subscribe keeps no subscription of the topic.
        if (r.ok && c.kind === 'topic' && this.formatInForce >= REVOKE_UNSUBSCRIBES) dropUnsubscribed(s, c.name, c.username, ctx);
        return r;
      }
      case 'queue.send':
        return sendToQueue(s, c.name, c.messages, ctx);
      case 'receive':
        // A parked wait is a format 3 command: before, it is ignored, as a build of format 2 ignores it.
        return receive(s, c.channel, c.maxMessages, c.visibilityTimeoutSeconds, ctx, this.formatInForce >= PARKED_POLLS ? c.wait : undefined);
      case 'ack':
        return ack(s, c.channel, c.receiptHandles, ctx);
      case 'nack':
        // A release holds from format 15 on: before, it is a client's nack, as older builds take it.
        return nack(s, c.channel, c.receiptHandles, c.delaySeconds, ctx, c.release === true && this.formatInForce >= UNDELIVERED_RELEASED);
      case 'lease':
        return extendLeases(s, c.channel, c.receiptHandles, c.visibilityTimeoutSeconds, ctx);
      case 'topic.create':
        return createTopic(s, c.name, c.subscribe, ctx, this.formatInForce >= BOUNDED_OWNERSHIP);
      case 'topic.delete':
        return this.forgetKeysOf(deleteTopic(s, c.name, ctx), `topic:${c.name}`);
      // The fan-out limits hold from format 5 on: before, every build stores what it was asked to.
      // A publish's split holds from format 11 on: before, it is ignored, as older builds ignore it.
      case 'topic.publish':
        if (c.split !== undefined && this.formatInForce >= SHARED_PUBLISHES) return publishEach(s, c.name, c.messages, c.split, ctx);
        return publish(s, c.name, c.messages, ctx, this.formatInForce >= BOUNDED_FANOUT);
      case 'subscription.create':
        return createSubscription(s, c, ctx, this.formatInForce >= BOUNDED_FANOUT, this.formatInForce >= BOUNDED_OWNERSHIP);
      case 'subscription.delete':
        return deleteSubscription(s, c.topic, c.name, ctx);
      case 'deadletter.deliver':
        return deliverDeadLetters(s, c, ctx, this.formatInForce);
      case 'outbox.done':
        return outboxDone(s, c.ids, ctx);
      case 'sweep':
        return sweep(s, ctx);
      case 'format.raise':
        return this.raiseFormat(c.format, ctx);
      default:
        return unknownCommand(c);
    }
  }

  /**
   * Puts `to` in force from the next entry on (format.ts). A format this replica cannot read stops the
   * apply here (FormatTooNewError): the batch rolls back and the partition halts at the entry before.
   */
  private raiseFormat(to: number, ctx: Ctx): Result {
    if (!isFormat(to)) return fail(ErrorCode.ValidationFailed, 'format.raise needs a format, a positive integer');
    if (to > this.readable) throw new FormatTooNewError(to, this.readable);
    if (to > this.formatInForce) {
      if (to >= BODIES_IN_LOG && this.formatInForce < BODIES_IN_LOG) {
        // Rows from the next entry on leave their bodies in the log, under sequences above every
        // one given so far, so that sequences keep growing along each channel (bodies.ts).
        const from = logSeq(ctx.index + 1, 0);
        const top = (this.st.highestSeq.get() as { top: number | null }).top ?? 0;
        if (top >= from) return fail(ErrorCode.ValidationFailed, `sequences already reach ${top}, past the first one of format ${BODIES_IN_LOG} (${from})`);
        this.st.putMeta.run('bodies_from', from);
        this.store.bodiesFrom = from;
      }
      // The clustered layout is allowed from here on: a small table is rebuilt now, in this entry's
      // transaction; a larger one when its node next starts (message-table.ts).
      if (to >= MESSAGE_TABLE && this.formatInForce < MESSAGE_TABLE) this.rebuildInThisApply();
      // A delete takes the keys of its queue or topic (forgetKeysOf), by key whatever the user: an
      // index on the key, so that it reads those, not the table (a user's keys alone may be many).
      if (to >= KEYS_GO_WITH_RESOURCE && this.formatInForce < KEYS_GO_WITH_RESOURCE) this.sqlite.exec('CREATE INDEX IF NOT EXISTS idempotency_key ON idempotency (key)');
      this.st.putMeta.run('format', to);
      this.formatInForce = to;
    }
    return ok({ format: this.formatInForce });
  }

  /**
   * Leases what the command made visible to the long polls parked on those channels (format 3), in
   * the same entry; what they do not take still wakes the polls that wait on nodes.
   */
  private serveWaiters(ctx: Ctx): void {
    const woke = [...ctx.woke];
    const left = new Map<number, number>();
    for (const [channelId, visible] of woke) {
      const n = serveWaiters(this.store, channelId, visible, ctx);
      if (n > 0) left.set(channelId, n);
    }
    ctx.woke = left;
  }

  // ---- bulk sends ----

  /**
   * The queue of a send that can be stored in bulk with the sends around it: by the queue's owner
   * (read from the send-target cache, so visible and allowed), no Idempotency-Key, messages without
   * deduplication ids. Anything else is applied on its own.
   */
  private bulkSendTarget(env: Envelope): QueueRow | undefined {
    const c = env.command;
    if (c.type !== 'queue.send' || env.idempotencyKey !== undefined || env.actor === null) return undefined;
    if (!Array.isArray(c.messages) || c.messages.length === 0 || c.messages.some((m) => m.deduplicationId !== undefined)) return undefined;
    // One that sendToQueue would refuse is applied on its own, to be refused there.
    if (unplaceable(this.store, c.messages) !== null) return undefined;
    const q = this.store.sendTargets.get(c.name);
    // A poll parked on the queue is served by the send's own entry, which bulk storing would blur.
    if (q === undefined || q.owner !== env.actor || this.st.anyWaiter.get(q.id) !== undefined) return undefined;
    return q;
  }

  /**
   * Stores sends gathered by applyBatch, in their order: one update takes all their sequence numbers
   * and counts, multi-row inserts store them; each send's result is what sendToQueue would answer.
   */
  private storeSends(p: PendingSends, out: Applied[]): void {
    // Loops, not flatMap: this runs for every message a replica stores.
    const messages: MessageInput[] = [];
    const ids: string[] = [];
    const nows: number[] = [];
    const seqs: number[] | null = inLog(this.store) ? [] : null;
    for (const s of p.sends) {
      s.messages.forEach((m, i) => {
        messages.push(m);
        ids.push(`${this.partition}-${s.ctx.index}-${i}`);
        nows.push(s.ctx.now);
        seqs?.push(logSeq(s.ctx.index, i));
      });
    }
    const items = enqueueMany(this.store, p.ch, messages, ids, nows, seqs);
    let k = 0;
    for (const s of p.sends) {
      const mine = items.slice(k, k + s.messages.length);
      k += s.messages.length;
      const visible = s.messages.filter((m) => delayOf(p.ch, m) === 0).length;
      const retimed = visible < s.messages.length;
      out[s.at] = { index: s.ctx.index, result: ok({ items: mine }), woke: visible > 0 ? [[p.ch.id, visible]] : [], retimed: retimed ? [p.ch.id] : [], delivered: [] };
    }
  }

  // ---- reads (views.ts; users and grants in access.ts) ----

  getUser(username: string): access.UserRecord | null {
    return access.getUser(this.store, username);
  }

  /** The queues and topics `user` owns in this partition. */
  owned(user: string): { queues: number; topics: number } {
    return access.owned(this.store, user);
  }

  listGrants(kind: 'queue' | 'topic', name: string, user: string): Result<{ username: string; actions: string[] }[]> {
    return access.listGrants(this.store, kind, name, user);
  }

  getQueue(name: string, user: string, now: number): Result<views.QueueView> {
    return views.getQueue(this.store, name, user, now);
  }

  /** Names of the queues `user` owns or has a grant on, after `after`, in name order. */
  listQueues(user: string, after: string, limit: number): string[] {
    return views.listQueues(this.store, user, after, limit);
  }

  getTopic(name: string, user: string): Result<views.TopicView> {
    return views.getTopic(this.store, name, user);
  }

  listTopics(user: string, after: string, limit: number): string[] {
    return views.listTopics(this.store, user, after, limit);
  }

  getSubscription(topic: string, name: string, user: string, now: number): Result<views.SubscriptionView> {
    return views.getSubscription(this.store, topic, name, user, now);
  }

  /** Null when `user` may consume from `ref`; else what a receive, ack, nack or lease would answer. */
  consumable(ref: ChannelRef, user: string): Result<null> {
    return views.checkConsumable(this.store, ref, user);
  }

  /** All subscriptions for the topic's owner; one's own for anybody else. */
  listSubscriptions(topic: string, user: string, now: number): Result<views.SubscriptionView[]> {
    return views.listSubscriptions(this.store, topic, user, now);
  }

  /** How many subscriptions topic `name` has (0 when there is no such topic): what one message of a publish is copied to, at most. */
  subscriptionCount(name: string): number {
    return (this.store.st.countSubscriptions.get(name) as { n: number }).n;
  }

  /** Whether a channel has a message ready now (for long polls to decide whether to propose). */
  hasVisible(channelId: number, now: number): boolean {
    return views.hasVisible(this.store, channelId, now);
  }

  /**
   * When the oldest live message of any queue or subscription of the partition was sent (ms), or null
   * when there is none: for the oldest-message-age metric and its alert.
   */
  oldestSentAt(now: number): number | null {
    return views.oldestSentAt(this.store, now);
  }

  /**
   * Whether `actor` has a live record of `idempotencyKey` for `command`'s resource (at `now`, the
   * state's clock): its retry would be answered from the record and add nothing. Read between
   * applies, for a refusal decided before proposing (src/cluster/disk-space.ts), never by an apply.
   */
  hasIdempotencyRecord(actor: string, command: Command, idempotencyKey: string, now: number): boolean {
    return this.st.getIdempotency.get(actor, `${resourceOf(command)}\u0000${idempotencyKey}`, now) !== undefined;
  }

  /**
   * Whether a log entry's `data` carries `actor`'s `idempotencyKey` for `command`'s resource: one
   * appended and not applied yet, whose apply keeps the record a retry is answered from (read by the
   * leader before proposing, as hasIdempotencyRecord, never by an apply).
   */
  entryCarriesKey(data: Uint8Array, actor: string, command: Command, idempotencyKey: string): boolean {
    // Most entries are told apart without decoding them: the key as the envelope's JSON spells it.
    if (Buffer.from(data.buffer, data.byteOffset, data.byteLength).indexOf(`"idempotencyKey":${JSON.stringify(idempotencyKey)}`) < 0) return false;
    const env = parseEnvelope(data, this.formatInForce);
    return env !== null && env.actor === actor && env.idempotencyKey === idempotencyKey && resourceOf(env.command) === resourceOf(command);
  }

  /** The fullest queues' message counters (as of the last apply; time-based changes not counted). */
  queueDepths(limit: number): { queue: string; ready: number; leased: number; delayed: number }[] {
    return views.queueDepths(this.store, limit);
  }

  /** Messages of every queue and subscription of the partition, by state (counters, for metrics). */
  messageTotals(): { ready: number; leased: number; delayed: number } {
    return views.messageTotals(this.store);
  }

  /** The channel id of a queue or subscription, or null when there is none (for long polls). */
  channelIdOf(ref: ChannelRef): number | null {
    return views.channelIdOf(this.store, ref);
  }

  /**
   * Up to `limit` long polls still waiting at `now` whose tags sort in [from, below): a node finds
   * those its previous process parked (Router.leaveOrphanedPolls).
   */
  waitingTagged(from: string, below: string, now: number, limit: number): views.WaitingPoll[] {
    return views.waitingTagged(this.store, from, below, Math.max(now, this.clock()), limit);
  }

  /**
   * When the next leased or delayed message of a channel becomes visible (ms), or null: time alone
   * makes those visible, with no entry to wake a long poll, so it sets a timer for this.
   */
  nextVisibleAt(channelId: number): number | null {
    return views.nextVisibleAt(this.store, channelId);
  }

  /** Whether a sweep would do anything now: cheap index probes, for the leader to decide to propose one. */
  needsSweep(now: number): boolean {
    return views.needsSweep(this.store, now);
  }

  /** Dead letters waiting for delivery, oldest first. */
  outbox(limit: number): views.OutboxRow[] {
    return views.outbox(this.store, limit);
  }

  /** Where up to `limit` dead letters after outbox row `after` go, oldest first, without their bodies (the forwarder's pages). */
  outboxHeads(limit: number, after: number): Pick<views.OutboxRow, 'id' | 'targetQueue' | 'expectedOwner'>[] {
    return views.outboxHeads(this.store, limit, after);
  }

  /** Outbox row `id`, or null once it is gone. */
  outboxLetter(id: number): views.OutboxRow | null {
    return views.outboxLetter(this.store, id);
  }

  // ---- snapshots ----

  /**
   * Makes every transaction committed so far durable, without copying anything (syncStateFiles):
   * what it answers is on disk when the promise resolves. The caller reads `applied()` first.
   */
  async durable(): Promise<void> {
    // After a failed commit the state went back to before entries already answered: nothing read
    // from it may let the log go of anything (the host stops at its next turn and replays them).
    if (this.failed !== null) throw this.failed;
    // Synchronously, before the first await: what the caller read is committed.
    this.commit();
    if (this.path === ':memory:') return;
    await syncStateFiles(this.path);
  }

  /**
   * A consistent copy of this partition's state, for a follower, and the applied position it holds
   * (images.ts). The node goes on serving and applying meanwhile; what this connection applies
   * during the copy is carried into it. Durable when it returns. Rejects if the state is closed
   * meanwhile (a snapshot from the leader replaced it).
   */
  async snapshotTo(path: string): Promise<{ index: number; term: number }> {
    const tmp = `${path}.tmp`;
    // The copy reads committed pages: nothing may wait in a group meanwhile (apply()). Before the
    // first await, so that it holds what the caller applied.
    this.commit();
    this.copying++;
    try {
      try {
        await copyState(this.sqlite, tmp);
      } finally {
        this.copying--;
      }
      return await finishImage(tmp, path, this.store);
    } catch (err) {
      // A failed copy (a full disk, a body unreadable, the state closed by an install) was left
      // behind, one more at each ask of the follower's: on a full disk, space never freed (review of
      // 2026-12-07).
      await removeImageFiles(tmp);
      throw err;
    }
  }

  /** The entry an image's state holds everything up to (read from the closed image file). */
  static imageApplied(path: string): { index: number; term: number } {
    return imageApplied(path);
  }

  /** Moves the dead-letter outbox sequence of a closed state or image on by `by` (images.ts; restore.ts). */
  static advanceOutbox(path: string, by: number): number {
    return advanceOutbox(path, by);
  }

  /** Replaces the state database at `dbPath` with a snapshot image, moved, not copied (images.ts). */
  static async installSnapshot(dbPath: string, snapshotPath: string): Promise<void> {
    await installImage(dbPath, snapshotPath);
  }
}

/** A state's format and applied position as its `meta` table records them. */
interface StoredPosition {
  readonly format: number;
  readonly index: number;
  readonly term: number;
}

/**
 * What a state database says of itself before any statement is prepared over its tables or any
 * migration runs: its format and applied position, from `meta`, a table no format changes; null
 * for a database without it (new).
 */
function storedPosition(sqlite: Sqlite): StoredPosition | null {
  if (sqlite.prepare("select 1 from sqlite_master where type = 'table' and name = 'meta'").get() === undefined) return null;
  const get = prepareImageMeta(sqlite);
  const value = (key: string): number | undefined => (get.get(key) as { value: number } | undefined)?.value;
  return { format: value('format') ?? 1, index: value('applied_index') ?? 0, term: value('applied_term') ?? 0 };
}

/** What a build answers a command it does not know: also the answer of a command before its format. */
function unknownCommand(c: Command): Result {
  return fail(ErrorCode.ValidationFailed, `unknown command ${(c as { type: string }).type}`);
}

/** A command broke an assumption of the code while applied without a savepoint (apply()). */
class MalformedCommand extends Error {
  override name = 'MalformedCommand';
  constructor(cause: unknown) {
    super('a command failed while applied in bulk', { cause });
  }
}

function isStorageFailure(err: unknown): boolean {
  if (err instanceof BodyMissingError) return true;
  const code = (err as { code?: unknown }).code;
  return typeof code === 'string' && /^SQLITE_(IOERR|FULL|CORRUPT|NOTADB|CANTOPEN|READONLY|NOMEM|BUSY|LOCKED)/.test(code);
}

/**
 * A command as the Idempotency-Key's fingerprint reads it: its JSON, bodies as text, so that a retry
 * is the same request whether its entry carried the bodies as JSON (format 1) or as bytes.
 */
function commandText(c: Command): string {
  if ((c.type === 'queue.send' || c.type === 'topic.publish') && Array.isArray(c.messages) && c.messages.some((m) => typeof m?.body !== 'string')) {
    return JSON.stringify({ ...c, messages: c.messages.map((m) => (m?.body instanceof Uint8Array ? { ...m, body: bodyText(m.body) } : m)) });
  }
  return JSON.stringify(c);
}

/** Decodes an entry's envelope, or null when it is not one (never trusts the bytes' shape). */
function parseEnvelope(data: Uint8Array, format: number): Envelope | null {
  let v: unknown;
  try {
    v = decodeEnvelope(data, format);
  } catch {
    return null;
  }
  if (typeof v !== 'object' || v === null) return null;
  const e = v as Record<string, unknown>;
  if (typeof e.time !== 'number' || !Number.isFinite(e.time)) return null;
  if (e.actor !== null && typeof e.actor !== 'string') return null;
  if (e.idempotencyKey !== undefined && typeof e.idempotencyKey !== 'string') return null;
  const c = e.command as Record<string, unknown> | null;
  if (typeof c !== 'object' || c === null || typeof c.type !== 'string') return null;
  return v as Envelope;
}

/** Sends gathered for storeSends(): to one queue, each with its place in the batch's results. */
interface PendingSends {
  readonly ch: QueueRow;
  readonly sends: { readonly at: number; readonly ctx: Ctx; readonly messages: readonly MessageInput[] }[];
}
