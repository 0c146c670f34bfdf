// The time a leader stamps its entries with (docs/guarantees.md, "Clocks"). A partition's clock is
// the largest stamp its log applied, so one leader whose wall clock runs a day ahead would hold
// every lease, delay and retention of its partitions until real time caught up, even after the
// leadership moved. So a node stamps with the median of its own wall clock and its peers', as last
// heard from them (each carried forward by this node's monotonic clock, which a wall-clock jump
// does not move): with three nodes, one wrong clock, ahead or behind, is outvoted by the two others.
// A peer's wall clock comes with each of its inter-node requests (CLOCK_HEADER, sent by the transport
// when a stream or a POST starts); one not heard for PEER_CLOCK_FRESH_MS counts no more.

/** A peer's wall clock as it said it, and this node's monotonic time when it was heard. */
export interface ClockSample {
  readonly wall: number;
  readonly mono: number;
}

/** A peer's wall clock counts for this long after it was last heard (streams are renewed every minute). */
export const PEER_CLOCK_FRESH_MS = 5 * 60_000;

export class ClusterClock {
  private readonly peers = new Map<string, ClockSample>();

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
    if (known === undefined || sample.mono > known.mono) this.peers.set(peer, sample);
  }

  /** The peers' wall clocks now, as last heard and carried forward, for those heard recently. */
  peerClocks(): Map<string, number> {
    const mono = this.mono();
    const out = new Map<string, number>();
    for (const [peer, s] of this.peers) if (mono - s.mono <= PEER_CLOCK_FRESH_MS) out.set(peer, s.wall + (mono - s.mono));
    return out;
  }

  /**
   * The median of this node's wall clock and its peers' (the lower of the middle two for an even
   * count): its own alone when no peer was heard recently.
   */
  now(): number {
    const own = this.wall();
    if (this.peers.size === 0) return own;
    const all = [own, ...this.peerClocks().values()].sort((a, b) => a - b);
    return all[Math.floor((all.length - 1) / 2)]!;
  }

  /** How far each recently heard peer's clock is from this node's (ms; positive: the peer's is ahead). */
  offsets(): Map<string, number> {
    const own = this.wall();
    return new Map([...this.peerClocks()].map(([peer, at]) => [peer, at - own]));
  }
}
