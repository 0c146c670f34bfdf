// Readiness after a start: a node that was down (a restart, an upgrade, a new machine) is ready only
// once each of its partitions has applied what its peers had committed when it first asked them,
// after it started. Until then it would take part in every commit of a partition it is behind on: a
// rolling restart that stopped the next node meanwhile left those partitions two replicas, one of
// them still catching up, and their writes waited for it.
//
// The peers' commit indexes come from their /internal/positions (one call each, at the first probe
// after the start, and again at later probes until one answers); any node's commit index is an index
// committed in the cluster, so the highest of those that answer is a target the node must reach. Each
// partition counts as caught up once its replica here applied that far, or leads, and stays so: later
// lags are the ordinary ones of a follower under load, and readiness that came and went with them
// would take a loaded node out of its load balancer. A halted replica (docs/operations.md) catches up
// on nothing and is left to its own alarms. Peers of an older build answer without their commit
// indexes (or have no such route): a node among only such peers does not wait, as before.

/** How long a probe waits for the peers' commit indexes (ms): under Kubernetes' 3 s probe timeout. */
export const PEER_COMMITS_TIMEOUT_MS = 1_000;
/**
 * How long a probe waits for replicas a few entries short of their targets (ms): commit indexes
 * asked for a moment ago are often a turn ahead of what a follower in step applied yet.
 */
export const CATCH_UP_WAIT_MS = 500;

/** A peer's commit index per partition; 'silent': it did not answer; 'unsaid': it answered without them, or has no such route (an older build). */
export type PeerCommits = readonly number[] | 'silent' | 'unsaid';

/** A replica of this node, as readiness sees it. */
export interface LocalReplica {
  readonly partition: number;
  /** The index its state applied, or null while the state is closed (an image being installed). */
  readonly applied: number | null;
  readonly leader: boolean;
  readonly halted: boolean;
}

export interface CatchUpDeps {
  /** Asks every peer for its commit indexes (at most PEER_COMMITS_TIMEOUT_MS). */
  peerCommits(): Promise<PeerCommits[]>;
  /** This node's replicas now. */
  local(): readonly LocalReplica[];
  /** How long a look waits for replicas still short (default CATCH_UP_WAIT_MS). */
  readonly waitMs?: number;
}

export class CatchUp {
  /** The highest commit index a peer gave for each partition; null until a peer answered. */
  private targets: readonly number[] | null = null;
  /** The partitions caught up since the start: for good. */
  private readonly caughtUp = new Set<number>();
  private asking: Promise<void> | null = null;

  constructor(private readonly deps: CatchUpDeps) {}

  /**
   * The partitions whose replica here has not caught up yet (none halted), in order; empty once
   * every one has. Asks the peers first while none has answered since the start.
   */
  async behind(): Promise<number[]> {
    if (this.look().length === 0) return [];
    if (this.targets === null) await (this.asking ??= this.ask().finally(() => (this.asking = null)));
    let behind = this.look();
    if (this.targets === null) return behind;
    const waitMs = this.deps.waitMs ?? CATCH_UP_WAIT_MS;
    for (let waited = 0; behind.length > 0 && waited < waitMs; waited += 20) {
      await new Promise((resolve) => setTimeout(resolve, 20));
      behind = this.look();
    }
    return behind;
  }

  /** The partitions not caught up (none halted), counting as caught up those that reached their targets now. */
  private look(): number[] {
    const targets = this.targets;
    const behind: number[] = [];
    for (const r of this.deps.local()) {
      if (r.halted || this.caughtUp.has(r.partition)) continue;
      if (targets !== null && (r.leader || (r.applied !== null && r.applied >= (targets[r.partition] ?? 0)))) this.caughtUp.add(r.partition);
      else behind.push(r.partition);
    }
    return behind;
  }

  private async ask(): Promise<void> {
    const answers = await this.deps.peerCommits();
    const said = answers.filter((a): a is readonly number[] => Array.isArray(a));
    if (said.length > 0) {
      const count = Math.max(...said.map((a) => a.length));
      this.targets = Array.from({ length: count }, (_, p) => Math.max(...said.map((a) => a[p] ?? 0)));
    } else if (answers.length > 0 && answers.every((a) => a === 'unsaid')) {
      // Every peer of a build that does not tell: nothing to wait for, as that build did not. With
      // one silent, it is asked again: during an upgrade, the other may be the one that tells
      // (review of stop 59: taken as nothing to wait for, a node restarted next to a slow peer and
      // an older one said ready while behind).
      this.targets = [];
    }
  }
}
