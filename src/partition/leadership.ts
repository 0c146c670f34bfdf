// Who leads the partitions of one node, and whom it hears: leaders spread over the nodes (each
// partition's preferred leader takes it back once caught up), handed over before a planned stop,
// and the liveness a router and a readiness probe read (cut off from every peer, leaderless).
// Time is the host's monotonic clock; the loop in host.ts calls in on every tick and message.
import { MessageType, type Message, type NodeId } from '../raft/index.js';
import type { PartitionReplica } from './replica.js';

/** What leadership needs of the node's host. */
export interface LeadershipHost {
  readonly replicas: readonly PartitionReplica[];
  /** The monotonic clock (ms). */
  elapsed(): number;
  /** Runs a loop turn soon. */
  schedule(): void;
}

export interface LeadershipOptions {
  readonly self: NodeId;
  readonly voters: readonly NodeId[];
  /** Milliseconds per Raft tick, and ticks per election timeout. */
  readonly tickMs: number;
  readonly electionTick: number;
}

export class Leadership {
  /** When each peer was last heard from (any message of any partition). */
  private readonly lastHeard = new Map<NodeId, number>();
  /** When any peer was last heard from, or the loop started (ms; null before start). */
  private lastHeardAny: number | null = null;
  /** When each partition last had a known leader here (ms), sampled every tick. */
  private readonly leaderSeenAt: number[] = [];
  /** Since when this node has led each partition it leads (ms), sampled every tick; undefined where it does not. */
  private readonly ledSince: (number | undefined)[] = [];
  /** Set by a planned stop: refuse leadership handed to this node. */
  private leavingNow = false;
  /**
   * When each peer's replica of each partition last answered this node's appends or heartbeats (ms):
   * it hears this node as leader. A replica halted there answers nothing; nor does one that cannot hear
   * this node (a one-way fault), though it may still send it pre-votes.
   */
  private readonly answeredIn: Map<NodeId, number>[] = [];
  /**
   * Which peer last handed each partition to this node (TimeoutNow), or dropped this node's transfer
   * of it (balance), and when (ms): not handed to that peer again for a while.
   */
  private readonly handedBy = new Map<number, { peer: NodeId; at: number }>();
  /** The peer each partition was handed to at the last pass (balance), to see at the next whether it took it. */
  private readonly offered = new Map<number, NodeId>();

  constructor(
    private readonly host: LeadershipHost,
    private readonly opts: LeadershipOptions,
  ) {}

  private get electionTimeoutMs(): number {
    return this.opts.tickMs * this.opts.electionTick;
  }

  /** The loop started, or resumed after a stop or a blocked loop: count the peers' silence from now. */
  listening(): void {
    this.lastHeardAny = this.host.elapsed();
    this.resumedAt = this.lastHeardAny;
  }

  /** When the loop last started or resumed after a stop or a block (listening): no peer is silent from before it. */
  private resumedAt = -Infinity;

  /** Messages came from `peer`, of these partitions. */
  heard(peer: NodeId, items: readonly { partition: number; message: Pick<Message, 'type'> }[] = []): void {
    const now = this.host.elapsed();
    for (const { partition, message } of items) {
      if (message.type === MessageType.AppResp || message.type === MessageType.HeartbeatResp) (this.answeredIn[partition] ??= new Map()).set(peer, now);
    }
    // Silent for an election timeout: it stopped (and now runs again); what it handed over may go back.
    const before = this.lastHeard.get(peer);
    if (before !== undefined && now - before >= this.electionTimeoutMs) for (const [p, h] of this.handedBy) if (h.peer === peer) this.handedBy.delete(p);
    this.lastHeard.set(peer, now);
    this.lastHeardAny = now;
  }

  /** `peer` asked this node to take partition `p` over (TimeoutNow): its hand-over before a stop, or its balancing. */
  handedOver(p: number, peer: NodeId): void {
    this.handedBy.set(p, { peer, at: this.host.elapsed() });
  }

  /** Every tick: notes which partitions have a known leader here now. */
  sampleLeaders(): void {
    const now = this.host.elapsed();
    for (const r of this.host.replicas) {
      if (r.halted === null && r.leader() !== null) this.leaderSeenAt[r.partition] = now;
      if (!r.isLeader()) this.ledSince[r.partition] = undefined;
      else this.ledSince[r.partition] ??= now;
    }
  }

  /**
   * The peers whose replica of partition p has not answered this node, its leader, for three election
   * timeouts (counted from when this node took the lead, or its loop last resumed after a block, if it
   * has not heard them since: a stall of its own is not their silence, as cutOffFor counts it): down,
   * cut off, halted or stalled. They apply nothing new of p meanwhile. Empty where this node does not
   * lead.
   */
  notAnswering(p: number): NodeId[] {
    const since = this.ledSince[p];
    if (since === undefined) return [];
    const now = this.host.elapsed();
    const from = Math.max(since, this.resumedAt);
    return this.opts.voters.filter((peer) => peer !== this.opts.self && now - Math.max(from, this.answeredIn[p]?.get(peer) ?? -Infinity) >= 3 * this.electionTimeoutMs);
  }

  /** Whether a planned stop began: leadership offered to this node (TimeoutNow) is refused. */
  get leaving(): boolean {
    return this.leavingNow;
  }

  /**
   * Partition p prefers voter p mod 3 as leader, so that the three nodes share the writes evenly; in
   * the voters' sorted order, which every node agrees on whatever order its settings list them in.
   * In each node's own order, nodes given the peers in different orders preferred different leaders
   * and handed partitions to each other on every pass, forever (review of 2026-12-07).
   */
  preferredLeader(p: number): NodeId {
    return this.sortedVoters[p % this.sortedVoters.length]!;
  }

  private get sortedVoters(): readonly NodeId[] {
    return (this.sorted ??= [...this.opts.voters].sort());
  }

  private sorted: readonly NodeId[] | undefined;

  /**
   * Leaders spread over the nodes (thesis §3.10 leadership transfer): a partition led here but
   * preferring another node is handed to it once that node holds the whole log. A restarted node
   * thus takes its share back as soon as it has caught up.
   */
  balance(): void {
    if (this.leavingNow) return;
    for (const r of this.host.replicas) {
      const offeredTo = this.offered.get(r.partition);
      this.offered.delete(r.partition);
      // Handed over at the last pass and still led here: the target dropped the TimeoutNow (it is
      // leaving, or its replica cannot hear this node), and writes were refused for an election
      // timeout. Offering it again every pass would refuse them half the time: held back as below.
      if (offeredTo !== undefined && r.isLeader()) this.handedBy.set(r.partition, { peer: offeredTo, at: this.host.elapsed() });
      if (!r.isLeader() || r.raw.isTransferring()) continue;
      const preferred = this.preferredLeader(r.partition);
      if (preferred === this.opts.self || !this.recentlyHeard(preferred)) continue;
      // Its replica of this partition answers this leader (not halted there, not cut off from it one
      // way): else the TimeoutNow would not reach it, or be dropped there.
      if (!this.answeredRecently(r.partition, preferred)) continue;
      // The preferred node handed it here: it is leaving (Leadership.handOver) and would drop the
      // TimeoutNow, and this leader would refuse writes until the transfer is abandoned. Nor when it
      // dropped this node's last offer. Not until it was silent (stopped) and came back, or 20
      // election timeouts passed (a stop's close takes 15 s at most: main.ts).
      const handed = this.handedBy.get(r.partition);
      if (handed?.peer === preferred && this.host.elapsed() - handed.at < 20 * this.electionTimeoutMs) continue;
      const s = r.raw.status();
      // Nearly caught up is enough: the transfer itself waits for the last entries (§3.10).
      if (s.lastIndex - (s.match.get(preferred) ?? 0) > 64) continue;
      r.raw.transferLeadership(preferred);
      this.offered.set(r.partition, preferred);
    }
    this.host.schedule();
  }

  /**
   * How long this node has heard from no peer at all (ms), once that is longer than two election
   * timeouts; else 0. A node cut off from every other can lead nothing and reach no leader: its
   * router answers 503 at once, so that clients try another node instead of waiting.
   */
  cutOffFor(): number {
    if (this.lastHeardAny === null) return 0;
    const silent = this.host.elapsed() - this.lastHeardAny;
    return silent > 2 * this.electionTimeoutMs ? silent : 0;
  }

  /** Whether `peer`'s replica of partition p answered this node (as its leader) within an election timeout. */
  private answeredRecently(p: number, peer: NodeId): boolean {
    const at = this.answeredIn[p]?.get(peer);
    return at !== undefined && this.host.elapsed() - at < this.electionTimeoutMs;
  }

  /** Whether `peer` sent us anything within an election timeout: do not hand leadership to the dead. */
  private recentlyHeard(peer: NodeId): boolean {
    const at = this.lastHeard.get(peer);
    return at !== undefined && this.host.elapsed() - at < this.electionTimeoutMs;
  }

  /**
   * Before a planned stop: hand every partition led here to a caught-up peer, and wait (bounded) for
   * the transfers, so that clients see no election timeout. Done once this node also knows each new
   * leader: it steps down on the new leader's vote request, before that leader's first append, and the
   * close that follows stops hearing the peers, so requests in flight could not follow the leadership.
   */
  async handOver(maxWaitMs = 3000): Promise<void> {
    // From now on this node takes no leadership back (TimeoutNow is dropped, no balancing).
    this.leavingNow = true;
    const deadline = this.host.elapsed() + maxWaitMs;
    const handed = new Set<PartitionReplica>();
    while (this.host.elapsed() < deadline) {
      const led = this.host.replicas.filter((r) => r.isLeader());
      for (const r of led) handed.add(r);
      if (led.length === 0 && [...handed].every((r) => r.halted !== null || (r.leader() !== null && r.leader() !== this.opts.self))) return;
      for (const r of led) {
        if (r.raw.isTransferring()) continue;
        const s = r.raw.status();
        // The furthest along; of those as far, the one leading fewest partitions here, so that a
        // leaving node's partitions spread over the others instead of all going to the first listed.
        const leads = (id: NodeId): number => this.host.replicas.filter((x) => x.leader() === id).length;
        const target = [...s.match].filter(([id]) => id !== this.opts.self && this.answeredRecently(r.partition, id)).sort((a, b) => b[1] - a[1] || leads(a[0]) - leads(b[0]))[0];
        if (target !== undefined) r.raw.transferLeadership(target[0]);
      }
      this.host.schedule();
      await new Promise((res) => setTimeout(res, this.opts.tickMs));
    }
  }

  /**
   * Partitions with no known leader for longer than `graceMs` (for readiness). A leadership transfer
   * or a quick election leaves a partition leaderless for a moment; that is not unreadiness.
   */
  leaderless(graceMs: number): number[] {
    const now = this.host.elapsed();
    // A partition never led since this process started has been leaderless for ever.
    return this.host.replicas.filter((r) => r.leader() === null && now - (this.leaderSeenAt[r.partition] ?? -Infinity) > graceMs).map((r) => r.partition);
  }
}
