// The SQLite Raft log of earlier versions: kept to import an older node's log into the write-ahead
// log (src/store/wal/legacy.ts) on its first start after an upgrade.
export { StorageCorruptError, type CorruptionSite } from '../storage-errors.js';
export type { SnapshotRecord } from '../wal/log-state.js';
export type { PartitionLog, VerifyReport } from '../wal/partition-view.js';
export type { PersistItem } from '../wal/wal-store.js';
export { RaftLogStore, entryCrc } from './raft-log-store.js';
export type { RaftLogDatabase } from './schema.js';
export { raftLogMigrations, raftLogMigrationProvider } from './migrations.js';
