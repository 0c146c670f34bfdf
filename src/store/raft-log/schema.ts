// The tables of the node-wide Raft log database, as Kysely sees them. One SQLite file per node holds
// the logs of all its partitions (rows keyed by partition), so one transaction persists the Readies
// of every group at once (DESIGN.md, Persistence: one fsync per node per loop turn).
//
// Every row carries a CRC32 of its meaningful columns (computed in raft-log-store.ts): SQLite's page
// format has no checksums, so a torn or bit-flipped page that still parses would otherwise be read
// back as a valid entry, vote or snapshot.
//
// Indexes and terms are JavaScript `number`s (safe integers), as in src/raft/types.ts.
import type { Insertable, Selectable } from 'kysely';

/** One Raft log entry of one partition; primary key (partition, idx). */
export interface RaftLogEntryTable {
  partition: number;
  idx: number;
  term: number;
  /** An EntryKind of src/raft/types.ts. */
  kind: number;
  /** Opaque to the store; a zero-length blob for a no-op. */
  data: Uint8Array;
  /** CRC32 of (partition, idx, term, kind, data), unsigned. */
  crc: number;
}

/** The durable hard state of a partition (§5, Figure 2: currentTerm, votedFor) and its commit index. */
export interface RaftHardStateTable {
  partition: number;
  term: number;
  /** The node voted for in `term`, or null. */
  vote: string | null;
  /** `commit` is an SQL keyword; the column is named like `idx`. Invariant: commit_idx <= last log index. */
  commit_idx: number;
  /** CRC32 of (partition, term, vote, commit_idx). */
  crc: number;
}

/**
 * The metadata of the partition's latest snapshot. The image itself is not stored here: the broker
 * keeps the state machine image as a file and `ref` names it.
 */
export interface RaftSnapshotTable {
  partition: number;
  idx: number;
  term: number;
  /** JSON array of node ids: the voters when the snapshot was taken. */
  voters: string;
  ref: string;
  /** CRC32 of (partition, idx, term, voters, ref). */
  crc: number;
}

/**
 * The last entry removed from the front of the log (TiKV's RaftTruncatedState, etcd's dummy entry):
 * `term(firstIndex() - 1)` must stay answerable after that entry is gone. Absent means (0, 0).
 * Invariant: idx <= the snapshot's idx (the log is never compacted past a durable snapshot).
 */
export interface RaftLogTruncatedTable {
  partition: number;
  idx: number;
  term: number;
  /** CRC32 of (partition, idx, term). */
  crc: number;
}

export interface RaftLogDatabase {
  raft_log_entry: RaftLogEntryTable;
  raft_hard_state: RaftHardStateTable;
  raft_snapshot: RaftSnapshotTable;
  raft_log_truncated: RaftLogTruncatedTable;
}

export type RaftLogEntryRow = Selectable<RaftLogEntryTable>;
export type NewRaftLogEntryRow = Insertable<RaftLogEntryTable>;
export type RaftHardStateRow = Selectable<RaftHardStateTable>;
export type RaftSnapshotRow = Selectable<RaftSnapshotTable>;
export type RaftLogTruncatedRow = Selectable<RaftLogTruncatedTable>;
