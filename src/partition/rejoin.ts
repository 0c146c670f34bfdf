// A node whose data folder may be older than the cluster (new, emptied, or restored from a backup)
// rejoins without voting on what it no longer holds: every partition's voting is suspended until it
// holds what its leader committed, and peers' messages are dropped until it has learned each
// partition's highest term from them (ClusterNode.learnTerms), so that it acknowledges nothing to a
// leader of a term older than one it may have taken part in before its state was lost.
import type { PersistItem, WalStore } from '../store/wal/index.js';
import type { PartitionReplica } from './replica.js';

export class Rejoin {
  /**
   * Set while some partition's voting is suspended (Raft.suspendVoting), until every partition has
   * caught up and a turn has persisted that; then onCaughtUp is called.
   */
  private catchingUp: { onCaughtUp: () => void } | null = null;
  /** Set while peers' messages are dropped, until applyTermFloors. */
  private awaitingTerms = false;

  constructor(
    private readonly replicas: readonly PartitionReplica[],
    private readonly logStore: WalStore,
  ) {}

  /**
   * Suspends every partition's voting until it holds what its leader committed. `onCaughtUp` runs
   * once all have, after a turn persisted the entries that got them there.
   */
  suspendUntilCaughtUp(onCaughtUp: () => void): void {
    for (const r of this.replicas) r.raw.suspendVoting();
    this.catchingUp = { onCaughtUp };
    this.awaitingTerms = true;
  }

  /** Whether peers' messages are dropped until applyTermFloors. */
  get holdingForTerms(): boolean {
    return this.awaitingTerms;
  }

  /**
   * Raises each partition's term to floors[p] (the highest term any peer holds), durably, then takes
   * peers' messages again.
   */
  applyTermFloors(floors: readonly number[]): void {
    const batch: PersistItem[] = [];
    for (const r of this.replicas) {
      const floor = floors[r.partition] ?? 0;
      if (floor <= r.raw.term()) continue;
      batch.push({ partition: r.partition, hardState: r.raw.raiseTerm(floor), entries: [], snapshot: null });
    }
    if (batch.length > 0) this.logStore.persist(batch, true);
    this.awaitingTerms = false;
  }

  /** Ends every suspension at once: only when every member of the cluster is new (nothing to catch up on). */
  resumeVoting(): void {
    for (const r of this.replicas) r.raw.resumeVoting();
    this.checkCaughtUp();
  }

  /**
   * At the end of a loop turn: a suspension that ended while stepping messages is persisted now, and
   * once every partition has caught up, onCaughtUp runs.
   */
  checkCaughtUp(): void {
    if (this.catchingUp === null) return;
    // Caught up, and durably: the stored log reaches what is committed (entries stepped in while a
    // turn awaited a snapshot install are not stored yet; a later turn's end looks again).
    const pending = (r: PartitionReplica): boolean => {
      const at = r.raw.position();
      // Nothing unstable (entries stepped in during a snapshot install's await, a truncated tail not
      // yet rewritten), and the stored log reaches what is committed.
      return r.raw.votingIsSuspended() || at.stableLastIndex !== at.lastIndex || r.log.lastIndex() < at.committed;
    };
    if (this.replicas.some(pending)) return;
    const { onCaughtUp } = this.catchingUp;
    this.catchingUp = null;
    onCaughtUp();
  }
}
