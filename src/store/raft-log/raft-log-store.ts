// The durable Raft log of a node: one SQLite database holding the logs, hard states and snapshot
// metadata of ALL the node's partitions, so that one transaction (one fsync) persists the Readies of
// every group of a loop turn (DESIGN.md, Persistence). Each partition gets a view implementing the
// core's `Storage` interface exactly as MemoryStorage does (the reference).
//
// Why two SQLite APIs. The Raft core reads `Storage` synchronously, in the middle of step(), and the
// loop must persist a Ready before it sends that Ready's messages, so the hot paths (read entries,
// persist a batch) must be synchronous: they are better-sqlite3 prepared statements. Kysely's API is
// promise-based; it is used where that costs nothing: migrations (run once in `open()`, through
// Kysely's own SqliteDialect over the same connection) and compiling the SQL of the prepared
// statements from the typed `RaftLogDatabase`, so a renamed column fails `tsc`, not production.
//
// The durability argument.
// 1. Atomicity: persist() writes a whole batch (snapshot meta, truncation, entries, hard state, for
//    every partition in it) in one SQLite transaction. SQLite's WAL makes a transaction all-or-nothing
//    across crashes: a commit record that did not fully reach the WAL is ignored on recovery. So after
//    any crash the database holds a prefix of the persist() calls, each whole.
// 2. Durability: WAL with `synchronous=FULL` fsyncs the WAL at every commit, before the commit
//    returns. With `synchronous=NORMAL` WAL only syncs at checkpoints, so transactions that returned
//    can be lost on power loss (not on a process crash): a vote or an acknowledged append that the
//    rest of the cluster already counted would vanish, which Raft's safety argument forbids (§5.2,
//    §5.4). Hence FULL for everything but a turn that only moves commit indexes (persist()). The
//    first creation of the file is made durable by fsyncing its folder.
//    persist() returns only after the fsync, so the caller may send the Ready's messages after it.
//    If persist() throws an I/O error the node must stop and restart from disk, never retry: after a
//    failed fsync the kernel may have dropped the dirty pages, so a retry could "succeed" without
//    the data (PostgreSQL's fsyncgate).
// 3. Integrity: SQLite pages carry no checksum, so every row carries a CRC32 of its contents, checked
//    whenever it is read (entries(), opening a partition, verify()), and open() runs
//    `PRAGMA quick_check`. A mismatch throws StorageCorruptError: the node refuses to serve that
//    partition rather than vote or acknowledge with wrong data.
// 4. Invariants: every write checks what Raft guarantees of a correct caller (no gap, no truncation
//    of committed or snapshotted entries, terms and commit never going back, one vote per term,
//    commit <= last index, compaction never past a durable snapshot). A violation throws
//    InvariantError inside the transaction, which rolls the whole batch back.
//
// Other processes: the connection holds SQLite's EXCLUSIVE lock for its whole life (locking_mode), so
// a second process, or a second store in this one, cannot open the same log; two writers of one Raft
// log would break every guarantee above.
import { dirname, resolve } from 'node:path';
import { crc32 } from 'node:zlib';
import Sqlite from 'better-sqlite3';
import { Kysely, Migrator, SqliteDialect, type CompiledQuery } from 'kysely';
import {
  EntryKind,
  emptyHardState,
  invariant,
  type Entry,
  type HardState,
  type Index,
  type NodeId,
  type SnapshotMeta,
  type Term,
} from '../../raft/index.js';
import { fsyncPath, mkdirDurably } from '../durable.js';
import { StorageCorruptError } from '../storage-errors.js';
import type { PersistItem } from '../wal/wal-store.js';
import type { PartitionLog, VerifyReport } from '../wal/partition-view.js';
import { LogStateStorage, sameHard, sameVoters, termAt, type LogState, type SnapshotRecord } from '../wal/log-state.js';
import { appendEntries, compactTo, installSnapshot, localSnapshot, setHardState } from '../wal/transitions.js';
import {
  RAFT_LOG_MIGRATION_LOCK_TABLE,
  RAFT_LOG_MIGRATION_TABLE,
  raftLogMigrationProvider,
} from './migrations.js';
import type {
  RaftHardStateRow,
  RaftLogDatabase,
  RaftLogEntryRow,
  RaftLogTruncatedRow,
  RaftSnapshotRow,
} from './schema.js';

type SqliteConnection = Sqlite.Database;
type SqliteStatement = Sqlite.Statement;

// ---------------------------------------------------------------------------------------------------
// Errors

function isSqliteCorruption(err: unknown): err is Error & { code: string } {
  if (!(err instanceof Sqlite.SqliteError)) return false;
  return err.code.startsWith('SQLITE_CORRUPT') || err.code === 'SQLITE_NOTADB';
}

// ---------------------------------------------------------------------------------------------------
// CRC32 of rows. Numbers are encoded as 8-byte big-endian doubles (exact for safe integers), strings
// as UTF-8 preceded by their length (so that ("ab", "c") and ("a", "bc") differ), null as length -1.
// The partition is part of every CRC, so a row misplaced into another partition's key fails too.

const ENTRY_HEADER = Buffer.alloc(3 * 8 + 1);
const NUMBER = Buffer.alloc(8);

/** CRC32 of an entry row: (partition, index, term, kind, data). */
export function entryCrc(partition: number, e: Entry): number {
  ENTRY_HEADER.writeDoubleBE(partition, 0);
  ENTRY_HEADER.writeDoubleBE(e.index, 8);
  ENTRY_HEADER.writeDoubleBE(e.term, 16);
  ENTRY_HEADER.writeUInt8(e.kind, 24);
  const head = crc32(ENTRY_HEADER);
  // Not crc32(empty, head): an empty typed array may have no backing store, and zlib's crc32 of a
  // NULL buffer is 0 whatever the starting value (seen on Node 20), which would make the CRC of a
  // no-op entry depend on how its empty array was created.
  return e.data.byteLength === 0 ? head : crc32(e.data, head);
}

function fieldsCrc(fields: readonly (number | string | null)[]): number {
  let crc = 0;
  for (const f of fields) {
    if (typeof f === 'number') {
      NUMBER.writeDoubleBE(f);
      crc = crc32(NUMBER, crc);
      continue;
    }
    const bytes = f === null ? null : Buffer.from(f, 'utf8');
    NUMBER.writeDoubleBE(bytes === null ? -1 : bytes.byteLength);
    crc = crc32(NUMBER, crc);
    if (bytes !== null && bytes.byteLength > 0) crc = crc32(bytes, crc); // (see entryCrc on empty arrays)
  }
  return crc;
}

const hardStateCrc = (p: number, hs: HardState): number => fieldsCrc([p, hs.term, hs.vote, hs.commit]);
const snapshotCrc = (p: number, idx: Index, term: Term, voters: string, ref: string): number =>
  fieldsCrc([p, idx, term, voters, ref]);
const truncatedCrc = (p: number, idx: Index, term: Term): number => fieldsCrc([p, idx, term]);

// ---------------------------------------------------------------------------------------------------
// The in-memory picture of one partition's log. Immutable: a write builds the next LogState and the
// view adopts it only once the transaction has committed, so a rolled-back batch leaves every cache
// exactly as it was.

// ---------------------------------------------------------------------------------------------------
// Prepared statements, their SQL compiled by Kysely. Parameters bind positionally, in the order the
// builder mentions them; `prepare` checks the count so that a reordered builder fails loudly.

interface Statements {
  insertEntry: SqliteStatement; // partition, idx, term, kind, data, crc
  deleteEntriesFrom: SqliteStatement; // partition, idx (>=)
  deleteEntriesThrough: SqliteStatement; // partition, idx (<=)
  deleteAllEntries: SqliteStatement; // partition
  selectEntries: SqliteStatement; // partition, lo (>=), hi (<)
  selectRuns: SqliteStatement; // partition
  selectHard: SqliteStatement; // partition
  upsertHard: SqliteStatement; // partition, term, vote, commit_idx, crc
  selectSnapshot: SqliteStatement; // partition
  upsertSnapshot: SqliteStatement; // partition, idx, term, voters, ref, crc
  selectTruncated: SqliteStatement; // partition
  upsertTruncated: SqliteStatement; // partition, idx, term, crc
}

function prepareStatements(db: SqliteConnection, k: Kysely<RaftLogDatabase>): Statements {
  const prepare = (q: CompiledQuery, arity: number): SqliteStatement => {
    invariant(q.parameters.length === arity, `statement has ${q.parameters.length} parameters, expected ${arity}: ${q.sql}`);
    return db.prepare(q.sql);
  };
  const entry = { partition: 0, idx: 0, term: 0, kind: 0, data: new Uint8Array(0), crc: 0 };
  return {
    insertEntry: prepare(k.insertInto('raft_log_entry').values(entry).compile(), 6),
    deleteEntriesFrom: prepare(
      k.deleteFrom('raft_log_entry').where('partition', '=', 0).where('idx', '>=', 0).compile(),
      2,
    ),
    deleteEntriesThrough: prepare(
      k.deleteFrom('raft_log_entry').where('partition', '=', 0).where('idx', '<=', 0).compile(),
      2,
    ),
    deleteAllEntries: prepare(k.deleteFrom('raft_log_entry').where('partition', '=', 0).compile(), 1),
    selectEntries: prepare(
      k
        .selectFrom('raft_log_entry')
        .select(['idx', 'term', 'kind', 'data', 'crc'])
        .where('partition', '=', 0)
        .where('idx', '>=', 0)
        .where('idx', '<', 0)
        .orderBy('idx')
        .compile(),
      3,
    ),
    // One row per term: with terms non-decreasing along the log, these are the runs of LogState.
    selectRuns: prepare(
      k
        .selectFrom('raft_log_entry')
        .select((eb) => [
          'term',
          eb.fn.min<number>('idx').as('lo'),
          eb.fn.max<number>('idx').as('hi'),
          eb.fn.countAll<number>().as('n'),
        ])
        .where('partition', '=', 0)
        .groupBy('term')
        .orderBy('lo')
        .compile(),
      1,
    ),
    selectHard: prepare(k.selectFrom('raft_hard_state').selectAll().where('partition', '=', 0).compile(), 1),
    upsertHard: prepare(
      k.insertInto('raft_hard_state').orReplace().values({ partition: 0, term: 0, vote: null, commit_idx: 0, crc: 0 }).compile(),
      5,
    ),
    selectSnapshot: prepare(k.selectFrom('raft_snapshot').selectAll().where('partition', '=', 0).compile(), 1),
    upsertSnapshot: prepare(
      k.insertInto('raft_snapshot').orReplace().values({ partition: 0, idx: 0, term: 0, voters: '', ref: '', crc: 0 }).compile(),
      6,
    ),
    selectTruncated: prepare(k.selectFrom('raft_log_truncated').selectAll().where('partition', '=', 0).compile(), 1),
    upsertTruncated: prepare(
      k.insertInto('raft_log_truncated').orReplace().values({ partition: 0, idx: 0, term: 0, crc: 0 }).compile(),
      4,
    ),
  };
}

// ---------------------------------------------------------------------------------------------------
// The store


interface Site {
  readonly path: string;
  readonly stmts: Statements;
}

export class RaftLogStore {
  private readonly views = new Map<number, PartitionView>();
  private syncedTransactions = 0;
  private unsyncedTransactions = 0;
  private readonly persistTx: (batch: readonly PersistItem[], next: Map<number, LogState>) => void;
  private readonly compactTx: (p: number, s: LogState, index: Index) => LogState;
  private readonly recordSnapshotTx: (p: number, s: LogState, snap: SnapshotRecord, compactTo: Index) => LogState;

  private constructor(
    readonly path: string,
    private readonly db: SqliteConnection,
    private readonly stmts: Statements,
  ) {
    // better-sqlite3 transactions: BEGIN, the function, COMMIT; ROLLBACK and rethrow if it throws.
    this.persistTx = db.transaction((batch: readonly PersistItem[], next: Map<number, LogState>) => {
      for (const item of batch) {
        const before = next.get(item.partition) ?? this.view(item.partition).state;
        next.set(item.partition, this.writeItem(item, before));
      }
    });
    this.compactTx = db.transaction((p: number, s: LogState, index: Index) => this.writeCompaction(p, s, index));
    this.recordSnapshotTx = db.transaction((p: number, s: LogState, snap: SnapshotRecord, compactTo: Index) => this.writeLocalSnapshot(p, s, snap, compactTo));
  }

  /**
   * Opens (creating the folder and file if needed) the node's Raft log database, checks it, and
   * brings its schema to the latest migration. Throws StorageCorruptError on a damaged file.
   */
  static async open(path: string): Promise<RaftLogStore> {
    const file = resolve(path);
    mkdirDurably(dirname(file));
    // timeout 0: the only other holder of the lock can be another live process using the same log,
    // which is a configuration error to report at once, not to wait out.
    const db = new Sqlite(file, { timeout: 0 });
    try {
      configure(db);
      quickCheck(db, file);
      const k = new Kysely<RaftLogDatabase>({ dialect: new SqliteDialect({ database: db }) });
      await migrate(k);
      const stmts = prepareStatements(db, k);
      // Kysely is not destroyed: that would close the connection the statements run on.
      fsyncPath(dirname(file)); // the new file's directory entry (SQLite syncs contents, not folders)
      return new RaftLogStore(file, db, stmts);
    } catch (err) {
      db.close();
      if (isSqliteCorruption(err)) throw new StorageCorruptError({ path: file, partition: null, index: null }, err.message, { cause: err });
      throw err;
    }
  }

  /**
   * The view of partition p, loading its state from disk on first use. `voters` are the group's
   * voters before its first snapshot (MemoryStorage's constructor argument); later the snapshot's.
   * Throws StorageCorruptError if the partition's rows are inconsistent or fail their CRC.
   */
  partition(p: number, voters: readonly NodeId[]): PartitionLog {
    const existing = this.views.get(p);
    if (existing !== undefined) {
      invariant(sameVoters(existing.voters, voters), `partition ${p} reopened with other voters`);
      return existing;
    }
    invariant(Number.isSafeInteger(p) && p >= 0, `partition ${p} is not a non-negative integer`);
    const site = { path: this.path, stmts: this.stmts };
    const view = new PartitionView(site, p, voters.slice(), guarded(site, p, null, () => loadState(site, p)));
    this.views.set(p, view);
    return view;
  }

  /**
   * Persists a loop turn's Readies, of any number of partitions, in ONE transaction. Per item: install
   * the snapshot (replacing the whole log, as MemoryStorage.applySnapshot), truncate the suffix from
   * entries[0].index and append, then save the hard state.
   *
   * Synced before it returns when `mustSync` (new entries, a snapshot, a new term or vote). A turn
   * that only moves commit indexes is written without an fsync (synchronous=NORMAL for that one
   * transaction): losing it in a power cut loses only commit indexes, which Raft learns again, and the
   * core takes whatever the state machine applied as committed on restart. Any later synced commit
   * syncs the write-ahead log up to it. Measured under single-message sends these turns were a large
   * share of all fsyncs (commit-only turns on leaders after acknowledgements, on followers after
   * heartbeats).
   */
  persist(batch: readonly PersistItem[], mustSync: boolean): void {
    if (batch.every((i) => i.snapshot === null && i.entries.length === 0 && i.hardState === null)) return;
    const next = new Map<number, LogState>();
    if (mustSync) {
      guarded(this, null, null, () => this.persistTx(batch, next));
      this.syncedTransactions++;
    } else {
      this.db.pragma('synchronous = NORMAL');
      try {
        guarded(this, null, null, () => this.persistTx(batch, next));
      } finally {
        this.db.pragma('synchronous = FULL');
      }
      this.unsyncedTransactions++;
    }
    for (const [p, s] of next) this.view(p).state = s;
  }

  /** Transactions written without an fsync (commit indexes only) since open. */
  get unsynced(): number {
    return this.unsyncedTransactions;
  }

  /** Transactions committed (each one fsync of the write-ahead log) since open: persists, compactions, snapshots. */
  get syncs(): number {
    return this.syncedTransactions;
  }

  /**
   * Drops partition p's entries up to and including `index` (a no-op at or below the current first
   * index - 1). Never past the recorded snapshot: the log is the only copy of entries the snapshot
   * does not cover.
   */
  compact(p: number, index: Index): void {
    const view = this.view(p);
    view.state = guarded(this, p, null, () => this.compactTx(p, view.state, index));
    this.syncedTransactions++;
  }

  /**
   * Records a snapshot taken locally (its image already durable where `ref` says) and, in the same
   * transaction, compacts the log to `compactTo` (default: the snapshot's index; lower keeps a tail
   * for followers that are slightly behind, sparing them a snapshot).
   */
  recordSnapshot(p: number, meta: SnapshotMeta, ref: string, compactTo: Index = meta.index): void {
    const view = this.view(p);
    view.state = guarded(this, p, null, () => this.recordSnapshotTx(p, view.state, { meta, ref }, compactTo));
    this.syncedTransactions++;
  }

  /** Reads partition p's whole log back, checking every CRC and the cached picture. */
  verify(p: number): VerifyReport {
    return this.view(p).verify();
  }

  /** Runs `PRAGMA quick_check` now; throws StorageCorruptError unless it says ok. */
  quickCheck(): void {
    guarded(this, null, null, () => quickCheck(this.db, this.path));
  }

  close(): void {
    if (this.db.open) this.db.close();
    this.views.clear();
  }

  private view(p: number): PartitionView {
    const v = this.views.get(p);
    invariant(v !== undefined, `partition ${p} used before partition(${p}, voters) opened it`);
    return v;
  }

  // --- writes, inside a transaction; each returns the next state of the partition -------------------

  private writeItem(item: PersistItem, before: LogState): LogState {
    const p = item.partition;
    let s = before;
    if (item.snapshot !== null) s = this.writeInstalledSnapshot(p, s, item.snapshot);
    if (item.entries.length > 0) s = this.writeEntries(p, s, item.entries);
    if (item.hardState !== null) s = this.writeHardState(p, s, item.hardState);
    return s;
  }

  // The checks and the next state are the write-ahead log's (src/store/wal/transitions.ts); the
  // statements below only store what they decided.

  private writeInstalledSnapshot(p: number, s: LogState, snap: SnapshotRecord): LogState {
    const next = installSnapshot(p, s, snap);
    this.writeSnapshotRow(p, snap);
    this.stmts.deleteAllEntries.run(p);
    this.stmts.upsertTruncated.run(p, next.offset, next.offsetTerm, truncatedCrc(p, next.offset, next.offsetTerm));
    return next;
  }

  private writeSnapshotRow(p: number, snap: SnapshotRecord): void {
    const { index, term, voters } = snap.meta;
    const json = JSON.stringify(voters);
    this.stmts.upsertSnapshot.run(p, index, term, json, snap.ref, snapshotCrc(p, index, term, json, snap.ref));
  }

  private writeEntries(p: number, s: LogState, entries: readonly Entry[]): LogState {
    const next = appendEntries(p, s, entries);
    const first = entries[0]!.index;
    if (first <= s.last) this.stmts.deleteEntriesFrom.run(p, first);
    for (const e of entries) this.stmts.insertEntry.run(p, e.index, e.term, e.kind, e.data, entryCrc(p, e));
    return next;
  }

  private writeHardState(p: number, s: LogState, hs: HardState): LogState {
    const next = setHardState(p, s, hs);
    this.stmts.upsertHard.run(p, hs.term, hs.vote, hs.commit, hardStateCrc(p, hs));
    return next;
  }

  private writeCompaction(p: number, s: LogState, index: Index): LogState {
    const next = compactTo(p, s, index);
    if (next === s) return s;
    this.writeFront(p, next);
    return next;
  }

  /** Drops the rows through the state's offset and records it. */
  private writeFront(p: number, next: LogState): void {
    this.stmts.deleteEntriesThrough.run(p, next.offset);
    this.stmts.upsertTruncated.run(p, next.offset, next.offsetTerm, truncatedCrc(p, next.offset, next.offsetTerm));
  }

  private writeLocalSnapshot(p: number, s: LogState, snap: SnapshotRecord, to: Index): LogState {
    const next = localSnapshot(p, s, snap.meta, snap.ref, to);
    this.writeSnapshotRow(p, snap);
    if (next.offset !== s.offset) this.writeFront(p, next);
    return next;
  }
}

// ---------------------------------------------------------------------------------------------------
// The per-partition view

class PartitionView extends LogStateStorage implements PartitionLog {
  constructor(
    private readonly site: Site,
    partition: number,
    voters: readonly NodeId[],
    initial: LogState,
  ) {
    super(partition, voters);
    this.state = initial;
  }

  protected readEntries(lo: Index, hi: Index, maxBytes: number): Entry[] {
    const s = this.state;
    return guarded(this.site, this.partition, lo, () => readEntries(this.site, this.partition, s, lo, hi, maxBytes));
  }

  /** The SQLite log keeps no entries below its compacted log: it predates message bodies in the log. */
  body(index: Index): Entry | null {
    return index > this.state.offset ? this.entries(index, index + 1, Infinity)[0]! : null;
  }

  keptBodies(): Index[] {
    return [];
  }

  verify(): VerifyReport {
    const s = this.state;
    const p = this.partition;
    return guarded(this.site, p, null, () => {
      // The small rows first: the cache must be exactly what is on disk.
      const disk = loadState(this.site, p);
      const corrupt = (detail: string): StorageCorruptError =>
        new StorageCorruptError({ path: this.site.path, partition: p, index: null }, detail);
      if (!sameHard(disk.hard, s.hard)) throw corrupt('hard state on disk differs from the one persisted');
      if (disk.offset !== s.offset || disk.offsetTerm !== s.offsetTerm || disk.last !== s.last) {
        throw corrupt(`log bounds on disk (${disk.offset}, ${disk.last}] differ from (${s.offset}, ${s.last}]`);
      }
      if ((disk.snap?.meta.index ?? 0) !== (s.snap?.meta.index ?? 0) || disk.snap?.ref !== s.snap?.ref) {
        throw corrupt('snapshot metadata on disk differs from the one persisted');
      }
      const n = s.last - s.offset;
      if (n > 0) readEntries(this.site, p, s, s.offset + 1, s.last + 1, Infinity);
      return { partition: p, firstIndex: s.offset + 1, lastIndex: s.last, entries: n, kept: 0 };
    });
  }
}

// ---------------------------------------------------------------------------------------------------
// Reading

/**
 * Entries [lo, hi) from SQLite, at most maxBytes of payload but at least one. Every row is checked:
 * present (no hole), CRC, and term equal to the cached one.
 */
function readEntries(site: Site, p: number, s: LogState, lo: Index, hi: Index, maxBytes: number): Entry[] {
  const out: Entry[] = [];
  let size = 0;
  let expect = lo;
  let full = false;
  for (const raw of site.stmts.selectEntries.iterate(p, lo, hi)) {
    const row = raw as RaftLogEntryRow;
    if (row.idx !== expect) throw corruptEntry(site, p, expect, `entry missing (next stored index is ${row.idx})`);
    // A view, not a copy: the Buffer better-sqlite3 returns is this row's own.
    const data = new Uint8Array(row.data.buffer, row.data.byteOffset, row.data.byteLength);
    const e: Entry = { index: row.idx, term: row.term, kind: row.kind as EntryKind, data };
    if (entryCrc(p, e) !== row.crc) throw corruptEntry(site, p, expect, 'entry fails its CRC');
    const cached = termAt(s, e.index);
    if (e.term !== cached) throw corruptEntry(site, p, expect, `entry has term ${e.term}, the log's index says ${cached}`);
    size += data.byteLength;
    if (out.length > 0 && size > maxBytes) {
      full = true;
      break;
    }
    out.push(e);
    expect++;
  }
  if (!full && expect !== hi) throw corruptEntry(site, p, expect, 'entry missing');
  return out;
}

/** The first index in lo..hi without a row (the caller knows there is one). */
function firstMissing(site: Site, p: number, lo: Index, hi: Index): Index {
  let expect = lo;
  for (const raw of site.stmts.selectEntries.iterate(p, lo, hi + 1)) {
    if ((raw as RaftLogEntryRow).idx !== expect) break;
    expect++;
  }
  return expect;
}

function corruptEntry(site: Site, p: number, index: Index, detail: string): StorageCorruptError {
  return new StorageCorruptError({ path: site.path, partition: p, index }, detail);
}

/** Builds a partition's LogState from its rows, checking CRCs and the invariants between them. */
function loadState(site: Site, p: number): LogState {
  const corrupt = (detail: string, index: Index | null = null): StorageCorruptError =>
    new StorageCorruptError({ path: site.path, partition: p, index }, detail);

  let hard = emptyHardState;
  const hardRow = site.stmts.selectHard.get(p) as RaftHardStateRow | undefined;
  if (hardRow !== undefined) {
    hard = { term: hardRow.term, vote: hardRow.vote as NodeId | null, commit: hardRow.commit_idx };
    if (hardStateCrc(p, hard) !== hardRow.crc) throw corrupt('hard state fails its CRC');
  }

  let snap: SnapshotRecord | null = null;
  const snapRow = site.stmts.selectSnapshot.get(p) as RaftSnapshotRow | undefined;
  if (snapRow !== undefined) {
    if (snapshotCrc(p, snapRow.idx, snapRow.term, snapRow.voters, snapRow.ref) !== snapRow.crc) {
      throw corrupt('snapshot metadata fails its CRC', snapRow.idx);
    }
    const voters = JSON.parse(snapRow.voters) as NodeId[];
    snap = { meta: { index: snapRow.idx, term: snapRow.term, voters }, ref: snapRow.ref };
  }

  let offset = 0;
  let offsetTerm = 0;
  const truncRow = site.stmts.selectTruncated.get(p) as RaftLogTruncatedRow | undefined;
  if (truncRow !== undefined) {
    if (truncatedCrc(p, truncRow.idx, truncRow.term) !== truncRow.crc) throw corrupt('compaction point fails its CRC', truncRow.idx);
    offset = truncRow.idx;
    offsetTerm = truncRow.term;
  }
  const snapIndex = snap?.meta.index ?? 0;
  if (offset > snapIndex) throw corrupt(`log compacted to ${offset}, past the snapshot at ${snapIndex}`);
  // A snapshot taken while the whole log is kept (its tail reaches back to index 1) has no compaction
  // point: offset 0 is then right.
  if (snap !== null && offset === snapIndex && offsetTerm !== snap.meta.term) {
    throw corrupt(`compaction point term ${offsetTerm} differs from the snapshot's ${snap.meta.term}`, offset);
  }

  const runStarts: Index[] = [];
  const runTerms: Term[] = [];
  let last = offset;
  let lastTerm = offsetTerm;
  for (const raw of site.stmts.selectRuns.all(p)) {
    const run = raw as { term: Term; lo: Index; hi: Index; n: number };
    if (run.lo !== last + 1) throw corrupt(`log not contiguous: entry ${last + 1} missing`, last + 1);
    if (run.hi - run.lo + 1 !== run.n) {
      const missing = firstMissing(site, p, run.lo, run.hi);
      throw corrupt(`log not contiguous: entry ${missing} missing (term ${run.term} spans ${run.lo}..${run.hi})`, missing);
    }
    if (run.term < lastTerm) throw corrupt(`term ${run.term} at ${run.lo} below the previous ${lastTerm}`, run.lo);
    runStarts.push(run.lo);
    runTerms.push(run.term);
    last = run.hi;
    lastTerm = run.term;
  }
  if (last < snapIndex) throw corrupt(`log ends at ${last}, before the snapshot at ${snapIndex}`);
  if (hard.commit > last) throw corrupt(`commit ${hard.commit} past the last index ${last}`);
  return { hard, snap, offset, offsetTerm, last, runStarts, runTerms };
}

// ---------------------------------------------------------------------------------------------------
// Helpers

/** Runs fn, turning SQLite's corruption errors into StorageCorruptError. */
function guarded<T>(site: { readonly path: string }, partition: number | null, index: Index | null, fn: () => T): T {
  try {
    return fn();
  } catch (err) {
    if (isSqliteCorruption(err)) throw new StorageCorruptError({ path: site.path, partition, index }, err.message, { cause: err });
    throw err;
  }
}

function configure(db: SqliteConnection): void {
  // EXCLUSIVE before WAL: the WAL index then lives in heap memory (no -shm file) and the lock is
  // held until close (see the header).
  db.pragma('locking_mode = EXCLUSIVE');
  const mode = db.pragma('journal_mode = WAL', { simple: true });
  if (mode !== 'wal') throw new Error(`cannot put the raft log into WAL mode (journal_mode is ${String(mode)})`);
  // FULL, not NORMAL: see the header, point 2.
  db.pragma('synchronous = FULL');
  // Cheap extra checks of b-tree cells as pages are read: corruption surfaces as SQLITE_CORRUPT
  // instead of wrong answers.
  db.pragma('cell_size_check = ON');
}

function quickCheck(db: SqliteConnection, path: string): void {
  const rows = db.pragma('quick_check') as { quick_check: string }[];
  const problems = rows.map((r) => r.quick_check).filter((r) => r !== 'ok');
  if (problems.length > 0) {
    throw new StorageCorruptError({ path, partition: null, index: null }, `quick_check: ${problems.slice(0, 5).join('; ')}`);
  }
}

async function migrate(k: Kysely<RaftLogDatabase>): Promise<void> {
  const migrator = new Migrator({
    db: k,
    provider: raftLogMigrationProvider,
    migrationTableName: RAFT_LOG_MIGRATION_TABLE,
    migrationLockTableName: RAFT_LOG_MIGRATION_LOCK_TABLE,
  });
  const { error, results } = await migrator.migrateToLatest();
  if (error !== undefined) {
    const failed = results?.find((r) => r.status === 'Error')?.migrationName;
    throw new Error(`raft log migration ${failed ?? ''} failed`, { cause: error });
  }
}
