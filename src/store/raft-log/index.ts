// The node's durable Raft log: one SQLite database for the logs of all its partitions.
export {
  RaftLogStore,
  StorageCorruptError,
  entryCrc,
  type CorruptionSite,
  type PartitionLog,
  type PersistItem,
  type SnapshotRecord,
  type VerifyReport,
} from './raft-log-store.js';
export type { RaftLogDatabase } from './schema.js';
export { raftLogMigrations, raftLogMigrationProvider } from './migrations.js';
