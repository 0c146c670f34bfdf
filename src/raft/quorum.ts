import type { Index, NodeId } from './types.js';

/** Majority arithmetic for a fixed voter set (§5.2, §5.3). */

export function majority(size: number): number {
  return Math.floor(size / 2) + 1;
}

/**
 * The largest index that a majority of voters have: sort the match indexes descending and take the
 * majority-th. A voter missing from `match` counts as 0.
 */
export function committedIndex(voters: readonly NodeId[], match: (id: NodeId) => Index): Index {
  if (voters.length === 0) return 0;
  const idx = voters.map(match).sort((a, b) => b - a);
  return idx[majority(voters.length) - 1]!;
}

export const VoteResult = { Pending: 'pending', Won: 'won', Lost: 'lost' } as const;
export type VoteResult = (typeof VoteResult)[keyof typeof VoteResult];

/** Tally of granted and rejected votes: won once a majority grants, lost once a majority rejects. */
export function tally(voters: readonly NodeId[], votes: ReadonlyMap<NodeId, boolean>): VoteResult {
  let granted = 0;
  let rejected = 0;
  for (const v of voters) {
    const g = votes.get(v);
    if (g === true) granted++;
    else if (g === false) rejected++;
  }
  const need = majority(voters.length);
  if (granted >= need) return VoteResult.Won;
  if (rejected > voters.length - need) return VoteResult.Lost;
  return VoteResult.Pending;
}

/** Whether the voters in `acked` form a majority. */
export function hasQuorum(voters: readonly NodeId[], acked: (id: NodeId) => boolean): boolean {
  let n = 0;
  for (const v of voters) if (acked(v)) n++;
  return n >= majority(voters.length);
}
