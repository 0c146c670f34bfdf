import type { NodeId } from '../raft/index.js';

/**
 * Nothing was appended: this node does not lead the partition, or is handing leadership over. Forward
 * to `leader` if known, or retry shortly (an election or transfer is under way).
 */
export class NotLeaderError extends Error {
  override name = 'NotLeaderError';
  constructor(
    readonly partition: number,
    readonly leader: NodeId | null,
  ) {
    super(`not the leader of partition ${partition}${leader === null ? '' : ` (leader: ${leader})`}`);
  }
}

/** A peer forwarded a command it may not: only system commands (SYSTEM_COMMANDS) come this way. */
export class CommandRefusedError extends Error {
  override name = 'CommandRefusedError';
}

/**
 * The write's outcome is unknown: leadership moved or the wait ran out before the entry was applied
 * here. It may still apply; a client retries with its Idempotency-Key, which makes that safe.
 */
export class OutcomeUnknownError extends Error {
  override name = 'OutcomeUnknownError';
  constructor(
    message: string,
    /** True when the wait ran out (the entry may be stuck behind an unreachable majority). */
    readonly timedOut = false,
  ) {
    super(message);
  }
}

/** The proposal was overwritten by another leader's entry: it never applied and never will. */
export class NotCommittedError extends Error {
  override name = 'NotCommittedError';
}

/** The leader holds as many uncommitted bytes as it accepts: nothing was appended; retry later. */
export class OverloadedError extends Error {
  override name = 'OverloadedError';
}

/** The replica is shutting down or its storage failed. */
export class ReplicaClosedError extends Error {
  override name = 'ReplicaClosedError';
}

/**
 * Dead letters for a partition whose clock is more than one step behind the nodes' (after an outage):
 * nothing was proposed; the forwarder tries again once the clock caught up (Housekeeping).
 */
export class ClockBehindError extends Error {
  override name = 'ClockBehindError';
  constructor(
    readonly partition: number,
    readonly behindMs: number,
  ) {
    super(`partition ${partition}'s clock is ${Math.round(behindMs / 1000)} s behind the nodes' after an outage; dead letters wait until it has caught up`);
  }
}
