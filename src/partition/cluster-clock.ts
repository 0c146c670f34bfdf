// The time a leader stamps its entries with (docs/guarantees.md, "Clocks"). A partition's clock is
// the largest stamp its log applied, so one leader whose wall clock runs a day ahead would hold
// every lease, delay and retention of its partitions until real time caught up, even after the
// leadership moved. So a node stamps with the median of its own wall clock and its peers', as last
// heard from them (each carried forward by this node's monotonic clock, which a wall-clock jump
// does not move): with three nodes, one wrong clock, ahead or behind, is outvoted by the two others.
// A peer's wall clock comes with each of its inter-node requests (CLOCK_HEADER, sent by the transport
// when a stream or a POST starts); one not heard for PEER_CLOCK_FRESH_MS counts no more.
//
// A sample can only err late: the header was written before the request left, and this node may take
// it seconds later (it was paused, or its loop busy), which makes the peer look behind. A leader
// stamping a clock behind the partition's would freeze leases, and the next correct stamp would end
// them early. So each peer's estimate is its best recent sample (the one that puts it furthest
// ahead, as NTP keeps the sample of least delay), and a node keeps its own clock unless the median is
// more than CLOCK_TOLERANCE_MS from it: sampling noise never moves a stamp, a wrong clock does.

/** A peer's wall clock as it said it, and this node's monotonic time when it was heard. */
export interface ClockSample {
  readonly wall: number;
  readonly mono: number;
}

/** A peer's wall clock counts for this long after it was last heard (streams are renewed every minute). */
export const PEER_CLOCK_FRESH_MS = 5 * 60_000;
/** A sample is kept as a peer's best for this long at most, then the newest takes its place. */
const BEST_FOR_MS = PEER_CLOCK_FRESH_MS / 2;
/**
 * A node stamps its own clock while the median of the nodes' is within this of it. Samples err late
 * by as long as a node was paused or its loop blocked (seconds: chaos runs pause nodes 3-5 s); a
 * stamp moved by that error would freeze leases and then end them early, so only a difference
 * larger than any such delay moves a stamp. A clock off by less shifts timers by at most that, and
 * MomClockSkew warns from 1 s.
 */
export const CLOCK_TOLERANCE_MS = 10_000;

export class ClusterClock {
  /** Each peer's best recent sample, and when it was last heard (monotonic). */
  private readonly peers = new Map<string, { best: ClockSample; last: number }>();

  constructor(
    /** This node's wall clock (ms since the epoch). */
    private readonly wall: () => number,
    /** A monotonic clock (ms), which wall-clock steps do not move. */
    private readonly mono: () => number,
  ) {}

  /** `peer` said its wall clock read `sample.wall` when this node's monotonic clock read `sample.mono`. */
  heard(peer: string, sample: ClockSample): void {
    if (!Number.isFinite(sample.wall) || !Number.isFinite(sample.mono)) return;
    const known = this.peers.get(peer);
    if (known === undefined) return void this.peers.set(peer, { best: sample, last: sample.mono });
    if (sample.mono <= known.last) return;
    known.last = sample.mono;
    // The sample that puts the peer furthest ahead had the least delay; an old best gives way.
    if (sample.wall - sample.mono >= known.best.wall - known.best.mono || sample.mono - known.best.mono > BEST_FOR_MS) known.best = sample;
  }

  /** A peer's wall clock at monotonic time `mono`, as best heard and carried forward; null when not heard recently. */
  private static at({ best, last }: { best: ClockSample; last: number }, mono: number): number | null {
    return mono - last <= PEER_CLOCK_FRESH_MS ? best.wall + (mono - best.mono) : null;
  }

  /**
   * This node's wall clock, unless the median of its and its peers' (the lower of the middle two for
   * an even count) is more than CLOCK_TOLERANCE_MS from it: then the median. Every proposal asks.
   */
  now(): number {
    const own = this.wall();
    if (this.peers.size === 0) return own;
    const mono = this.mono();
    const all = [own];
    for (const p of this.peers.values()) {
      const at = ClusterClock.at(p, mono);
      if (at !== null) all.push(at);
    }
    all.sort((a, b) => a - b);
    const median = all[Math.floor((all.length - 1) / 2)]!;
    return Math.abs(median - own) <= CLOCK_TOLERANCE_MS ? own : median;
  }

  /** How far each recently heard peer's clock is from this node's (ms; positive: the peer's is ahead). */
  offsets(): Map<string, number> {
    const own = this.wall();
    const mono = this.mono();
    const out = new Map<string, number>();
    for (const [peer, p] of this.peers) {
      const at = ClusterClock.at(p, mono);
      if (at !== null) out.set(peer, at - own);
    }
    return out;
  }
}
