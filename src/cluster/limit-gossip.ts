// Rate-limit events shared between the nodes, so that a limit holds across the cluster rather than
// per node: each node counts what it saw and what its peers told it. The events are the API's
// (api/rate-limit.ts, LimitEvent); here they are opaque JSON, sent to every peer in batches over the
// authenticated inter-node routes (LIMITS_PATH). Best effort by design: a batch a peer does not take
// is dropped and counted, never retried, so a peer that is down costs nothing and a limit is at worst
// the per-node one again. Nothing here is replicated state, and nothing is read back from a peer.
import type { NodeId } from '../raft/index.js';

/** Events waiting for one peer, at most: past it, new ones are dropped (and counted). */
export const MAX_QUEUED_EVENTS = 10_000;
/** Events in one batch to a peer, at most (the internal route's schema refuses more). */
export const MAX_BATCH_EVENTS = 1000;
/** How long an event waits for the next batch (ms): the time a limit may lag behind another node. */
export const FLUSH_MS = 50;

export interface LimitGossipStats {
  /** Events a peer took. */
  sent: number;
  /** Events of peers applied here. */
  received: number;
  /** Events dropped: a full queue, or a batch a peer did not take. */
  dropped: number;
}

export class LimitGossip {
  private readonly peers: Map<NodeId, { queue: unknown[]; busy: boolean }>;
  private readonly listeners: ((event: unknown) => void)[] = [];
  private timer: NodeJS.Timeout | null = null;
  private closed = false;
  readonly stats: LimitGossipStats = { sent: 0, received: 0, dropped: 0 };

  constructor(
    peers: readonly NodeId[],
    /** Delivers a batch to a peer; rejects when the peer did not take it. */
    private readonly send: (peer: NodeId, events: readonly unknown[]) => Promise<void>,
    private readonly flushMs = FLUSH_MS,
  ) {
    this.peers = new Map(peers.map((p) => [p, { queue: [], busy: false }]));
  }

  /** An event this node counted: its peers count it too, within moments. */
  publish(event: unknown): void {
    if (this.closed) return;
    for (const peer of this.peers.values()) {
      if (peer.queue.length >= MAX_QUEUED_EVENTS) this.stats.dropped++;
      else peer.queue.push(event);
    }
    this.schedule();
  }

  /** Calls `listener` with each event a peer sent (for the API to validate and count). */
  subscribe(listener: (event: unknown) => void): void {
    this.listeners.push(listener);
  }

  /** A batch from a peer (the internal route). */
  receive(events: readonly unknown[]): void {
    this.stats.received += events.length;
    for (const e of events) for (const l of this.listeners) l(e);
  }

  close(): void {
    this.closed = true;
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
  }

  private schedule(): void {
    if (this.timer !== null || this.closed) return;
    this.timer = setTimeout(() => {
      this.timer = null;
      this.flush();
    }, this.flushMs);
    this.timer.unref();
  }

  private flush(): void {
    for (const [id, peer] of this.peers) {
      if (peer.busy || peer.queue.length === 0) continue;
      const batch = peer.queue.splice(0, MAX_BATCH_EVENTS);
      peer.busy = true;
      this.send(id, batch).then(
        () => {
          this.stats.sent += batch.length;
        },
        () => {
          this.stats.dropped += batch.length;
        },
      ).finally(() => {
        peer.busy = false;
        if (peer.queue.length > 0) this.schedule();
      });
    }
  }
}
