// Fixed-window counters for the login and registration limits. Per node: behind a load balancer a
// client meets up to three such limits, so the limits are set with that in mind. The clock is
// injected; the table forgets keys whose window ended, so it cannot grow without bound.

export class RateLimiter {
  private readonly windows = new Map<string, { start: number; count: number }>();

  constructor(
    /** Requests allowed per key and window. */
    readonly limit: number,
    readonly windowMs: number,
    private readonly now: () => number,
    /** Keys tracked at most; past it, stale windows are dropped first, then the oldest. */
    private readonly maxKeys = 100_000,
  ) {}

  /** Counts one request for `key`; answers 0 when allowed, else the seconds until the window ends. */
  hit(key: string): number {
    const now = this.now();
    let w = this.windows.get(key);
    if (w === undefined || now - w.start >= this.windowMs) {
      if (w === undefined && this.windows.size >= this.maxKeys) this.prune(now);
      w = { start: now, count: 0 };
      this.windows.set(key, w);
    }
    w.count++;
    if (w.count <= this.limit) return 0;
    return Math.max(1, Math.ceil((w.start + this.windowMs - now) / 1000));
  }

  private prune(now: number): void {
    for (const [k, w] of this.windows) if (now - w.start >= this.windowMs) this.windows.delete(k);
    // Still full: every key is in a live window. Drop the oldest half rather than grow.
    if (this.windows.size >= this.maxKeys) {
      let n = Math.floor(this.maxKeys / 2);
      for (const k of this.windows.keys()) {
        if (n-- <= 0) break;
        this.windows.delete(k);
      }
    }
  }
}
