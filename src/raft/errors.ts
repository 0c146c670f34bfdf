import type { Index, NodeId } from './types.js';

/** Base of every error the Raft core throws. */
export class RaftError extends Error {
  override name = 'RaftError';
}

export const DropReason = {
  /** This node is not the leader; `leader` names the one it knows of, if any. */
  NotLeader: 'not-leader',
  /** The leader is handing leadership over and accepts no new proposals until that ends. */
  Transferring: 'transferring',
  /** Accepting the proposal would exceed the cap on uncommitted bytes (back-pressure). */
  Overloaded: 'overloaded',
  /** A single proposal is larger than the configured maximum. */
  TooLarge: 'too-large',
} as const;
export type DropReason = (typeof DropReason)[keyof typeof DropReason];

/**
 * A proposal or read that the core refused: nothing was appended, so it can never be applied. The
 * caller may retry it elsewhere (at `leader`) or later.
 */
export class ProposalDroppedError extends RaftError {
  override name = 'ProposalDroppedError';
  constructor(
    readonly reason: DropReason,
    readonly leader: NodeId | null,
  ) {
    super(`proposal dropped: ${reason}${leader === null ? '' : ` (leader ${leader})`}`);
  }
}

/** A broken invariant: the process must stop rather than go on with state it cannot trust. */
export class InvariantError extends RaftError {
  override name = 'InvariantError';
}

/** Storage asked for entries it compacted away; the core falls back to a snapshot. */
export class CompactedError extends RaftError {
  override name = 'CompactedError';
  constructor(readonly index: Index) {
    super(`index ${index} is compacted`);
  }
}

/** Storage asked for entries past its last index (etcd's ErrUnavailable). */
export class EntryUnavailableError extends RaftError {
  override name = 'EntryUnavailableError';
  constructor(readonly index: Index) {
    super(`index ${index} is not available`);
  }
}

export function invariant(cond: boolean, what: string): asserts cond {
  if (!cond) throw new InvariantError(`raft invariant broken: ${what}`);
}
