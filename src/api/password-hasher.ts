// bcrypt off the event loop. bcryptjs is JavaScript: one hash at cost 10 takes 50-100 ms of CPU, and
// its "async" mode runs that on the event loop in slices of up to 100 ms, so every login, registration
// and password change held every request and Raft turn of its node that long (found by review: one
// user logging in ten times a second took another user's sends from p99 18 ms to 220 ms, eight at once
// to over a second). They run on one worker thread per node instead, started at the first and ended
// after a minute without any (an isolate costs resident memory), at most MAX_PENDING at a time: beyond,
// 503 with Retry-After, so that a flood of logins costs at most one core and never the event loop.
import { createRequire } from 'node:module';
import { Worker } from 'node:worker_threads';
import { ApiError } from './errors.js';

/** Hashes and checks queued or running on the worker at most; more are answered 503. */
export const MAX_PENDING = 16;
/** The worker ends after this long without a job. */
const IDLE_MS = 60_000;

// CommonJS, evaluated in the worker: bcryptjs by the path this module resolves it to (node_modules,
// from the sources under tsx as from the bundle in dist/).
const WORKER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
const bcrypt = require(workerData.bcrypt);
parentPort.on('message', (job) => {
  try {
    const value = job.op === 'hash' ? bcrypt.hashSync(job.password, job.cost) : bcrypt.compareSync(job.password, job.hash);
    parentPort.postMessage({ id: job.id, value });
  } catch (err) {
    parentPort.postMessage({ id: job.id, error: String((err && err.message) || err) });
  }
});
`;

type Job = { op: 'hash'; password: string; cost: number } | { op: 'compare'; password: string; hash: string };
interface Waiting {
  resolve(value: unknown): void;
  reject(err: Error): void;
}

export class PasswordHasher {
  private worker: Worker | null = null;
  private readonly waiting = new Map<number, Waiting>();
  private nextId = 0;
  private idle: NodeJS.Timeout | null = null;
  private closed = false;

  constructor(private readonly maxPending = MAX_PENDING) {}

  /** bcrypt's hash of `password` at `cost`. */
  hash(password: string, cost: number): Promise<string> {
    return this.run({ op: 'hash', password, cost }) as Promise<string>;
  }

  /** Whether `password` matches the bcrypt `hash`. */
  compare(password: string, hash: string): Promise<boolean> {
    return this.run({ op: 'compare', password, hash }) as Promise<boolean>;
  }

  /** Ends the worker; what waits for it fails. */
  async close(): Promise<void> {
    this.closed = true;
    await this.stop(new ApiError('unavailable', 'the node is shutting down', 1));
  }

  /**
   * Throws the 503 that the next hash or check would fail with now (closed, or at its bound): so
   * that a caller can refuse before it counts the attempt against a client, then hash in the same
   * tick.
   */
  assertRoom(): void {
    if (this.closed) throw new ApiError('unavailable', 'the node is shutting down', 1);
    if (this.waiting.size >= this.maxPending) throw new ApiError('unavailable', `too many password checks at once on this node (${this.maxPending}); retry`, 1);
  }

  private run(job: Job): Promise<unknown> {
    try {
      this.assertRoom();
    } catch (err) {
      return Promise.reject(err as Error);
    }
    const worker = this.start();
    const id = this.nextId++;
    if (this.idle !== null) clearTimeout(this.idle);
    this.idle = null;
    return new Promise((resolve, reject) => {
      this.waiting.set(id, { resolve, reject });
      worker.postMessage({ id, ...job });
    });
  }

  private start(): Worker {
    if (this.worker !== null) return this.worker;
    const worker = new Worker(WORKER_SOURCE, {
      eval: true,
      workerData: { bcrypt: createRequire(import.meta.url).resolve('bcryptjs') },
      // Neither the parent's loaders (tsx under tests) nor its flags: a plain, small isolate.
      execArgv: [],
      resourceLimits: { maxOldGenerationSizeMb: 32, maxYoungGenerationSizeMb: 8 },
    });
    worker.unref();
    worker.on('message', (m: { id: number; value?: unknown; error?: string }) => {
      const w = this.waiting.get(m.id);
      if (w === undefined) return;
      this.waiting.delete(m.id);
      if (m.error !== undefined) w.reject(new Error(`bcrypt: ${m.error}`));
      else w.resolve(m.value);
      if (this.waiting.size === 0 && this.worker === worker) {
        this.idle = setTimeout(() => void this.stop(null), IDLE_MS).unref();
      }
    });
    // A worker that fails or exits fails what it had; the next job starts another.
    const lost = (why: string): void => {
      if (this.worker !== worker) return;
      this.worker = null;
      this.failAll(new ApiError('unavailable', `the password worker ${why}; retry`, 1));
    };
    worker.on('error', (err) => lost(`failed (${err.message})`));
    worker.on('exit', (code) => lost(`exited (${code})`));
    this.worker = worker;
    return worker;
  }

  private async stop(err: Error | null): Promise<void> {
    if (this.idle !== null) clearTimeout(this.idle);
    this.idle = null;
    const worker = this.worker;
    this.worker = null;
    if (err !== null) this.failAll(err);
    if (worker !== null) await worker.terminate();
  }

  private failAll(err: Error): void {
    const all = [...this.waiting.values()];
    this.waiting.clear();
    for (const w of all) w.reject(err);
  }
}
