// Memory that malloc holds free, given back to the kernel once a second. A node's request and
// response buffers, the log's frames and SQLite's pages come from malloc and go back to it between
// collections; glibc keeps what it got and gives back only the top of its heap, so a node's resident
// set grew by what its busiest moment needed and stayed there. malloc_trim(0) also returns the free
// pages inside the heap. Measured (bench/README.md, "Memory: malloc's free pages given back"): peaks
// 30-40 MB lower under batched sends and 50-130 MB lower under receive + ack of 100, an idle node
// back to 120-145 MB within 30 s of a load's end (195-212 without), CPU and p99 within the drift.
// It runs on libuv's thread pool (2-3 ms each under load when it ran on the event loop); an
// allocation from the arena being trimmed still waits for it. Without the native addon it does
// nothing.
import { native } from './native.js';

export class MallocTrimmer {
  private timer: NodeJS.Timeout | null = null;
  private running = false;
  /** Trims done so far. */
  trims = 0;

  constructor(private readonly intervalMs = 1_000) {}

  /** Whether trims can run here: the addon is loaded (native.ts says why not) and has trimMallocAsync. */
  static available(): boolean {
    return typeof native?.trimMallocAsync === 'function';
  }

  /** Starts the trims (none without the addon, or with one older than them); the timer does not keep the process alive. */
  start(): this {
    const trim = native?.trimMallocAsync?.bind(native);
    if (trim === undefined || this.timer !== null) return this;
    this.timer = setInterval(() => {
      // One at a time: a trim slower than the interval is not queued again behind itself.
      if (this.running) return;
      this.running = true;
      let done: Promise<number>;
      try {
        done = trim();
      } catch {
        // Out of memory for the job: tried again at the next interval, never thrown out of the timer.
        this.running = false;
        return;
      }
      done
        .then((r) => {
          if (r >= 0) this.trims++;
        })
        .finally(() => {
          this.running = false;
        });
    }, this.intervalMs);
    this.timer.unref();
    return this;
  }

  stop(): void {
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
  }
}
