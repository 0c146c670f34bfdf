// Migrations of the Raft log database. Frozen in time: a migration describes the schema as it was
// when written, so it never imports app code (not even ./schema.ts) and is never edited once shipped;
// a change is a new, higher-numbered migration. Kysely's Migrator runs them in name order inside a
// transaction and refuses a database that knows migrations this code does not (a newer binary's).
import type { Kysely, Migration, MigrationProvider } from 'kysely';

// Kysely<unknown>: the schema builder does not depend on the database type, and a frozen migration
// must not depend on today's `RaftLogDatabase`.
type Db = Kysely<unknown>;

const m0001: Migration = {
  async up(db: Db): Promise<void> {
    await db.schema
      .createTable('raft_log_entry')
      .addColumn('partition', 'integer', (c) => c.notNull())
      .addColumn('idx', 'integer', (c) => c.notNull())
      .addColumn('term', 'integer', (c) => c.notNull())
      .addColumn('kind', 'integer', (c) => c.notNull())
      .addColumn('data', 'blob', (c) => c.notNull())
      .addColumn('crc', 'integer', (c) => c.notNull())
      // A rowid table (the key is a separate unique index), NOT `WITHOUT ROWID`: a WITHOUT ROWID row
      // lives in an index b-tree, whose pages keep only ~1/4 of a page inline, so entries of 1 KiB
      // on 4 KiB pages each took an overflow page (measured: 4.5x the payload on disk, 2x slower
      // writes). SQLite advises WITHOUT ROWID only for rows under ~1/20 of a page; broker messages
      // are bigger. As a rowid table the same log took 1.06-1.35x its payload from 300 B to 64 KiB.
      .addPrimaryKeyConstraint('raft_log_entry_pk', ['partition', 'idx'])
      .execute();
    await db.schema
      .createTable('raft_hard_state')
      .addColumn('partition', 'integer', (c) => c.primaryKey())
      .addColumn('term', 'integer', (c) => c.notNull())
      .addColumn('vote', 'text')
      .addColumn('commit_idx', 'integer', (c) => c.notNull())
      .addColumn('crc', 'integer', (c) => c.notNull())
      .execute();
    await db.schema
      .createTable('raft_snapshot')
      .addColumn('partition', 'integer', (c) => c.primaryKey())
      .addColumn('idx', 'integer', (c) => c.notNull())
      .addColumn('term', 'integer', (c) => c.notNull())
      .addColumn('voters', 'text', (c) => c.notNull())
      .addColumn('ref', 'text', (c) => c.notNull())
      .addColumn('crc', 'integer', (c) => c.notNull())
      .execute();
    await db.schema
      .createTable('raft_log_truncated')
      .addColumn('partition', 'integer', (c) => c.primaryKey())
      .addColumn('idx', 'integer', (c) => c.notNull())
      .addColumn('term', 'integer', (c) => c.notNull())
      .addColumn('crc', 'integer', (c) => c.notNull())
      .execute();
  },
  async down(db: Db): Promise<void> {
    await db.schema.dropTable('raft_log_truncated').execute();
    await db.schema.dropTable('raft_snapshot').execute();
    await db.schema.dropTable('raft_hard_state').execute();
    await db.schema.dropTable('raft_log_entry').execute();
  },
};

/** Every migration by name; names sort in the order they must run. */
export const raftLogMigrations: Readonly<Record<string, Migration>> = {
  '0001_create_raft_log': m0001,
};

/** A static provider: migrations are compiled in, not discovered on disk (no FileMigrationProvider). */
export const raftLogMigrationProvider: MigrationProvider = {
  getMigrations: async () => ({ ...raftLogMigrations }),
};

/** Own bookkeeping table names, so the Raft log never mistakes another store's migrations for its own. */
export const RAFT_LOG_MIGRATION_TABLE = 'raft_log_migration';
export const RAFT_LOG_MIGRATION_LOCK_TABLE = 'raft_log_migration_lock';
