// The node's durable Raft log: one write-ahead stream of records for the logs of all its partitions.
export { WalStore, logHolder, DEFAULT_SEGMENT_BYTES, MAX_SEGMENT_BYTES, type PersistItem, type WalOptions } from './wal-store.js';
export type { PartitionLog, VerifyReport } from './partition-view.js';
export type { SnapshotRecord } from './log-state.js';
export { LogInUseError, StorageCorruptError, type CorruptionSite } from '../storage-errors.js';
export { openNodeLog, WAL_FOLDER } from './legacy.js';
