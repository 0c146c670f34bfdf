// The node's durable Raft log: one SQLite database for the logs of all its partitions.
export { StorageCorruptError, type CorruptionSite } from '../storage-errors.js';
export type { SnapshotRecord } from '../wal/log-state.js';
export {
  RaftLogStore,
  entryCrc,
  type PartitionLog,
  type PersistItem,
  type VerifyReport,
} from './raft-log-store.js';
export type { RaftLogDatabase } from './schema.js';
export { raftLogMigrations, raftLogMigrationProvider } from './migrations.js';
