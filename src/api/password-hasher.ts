// bcrypt off the event loop. bcryptjs is JavaScript: one hash at cost 10 takes 50-100 ms of CPU, and
// its "async" mode runs that on the event loop in slices of up to 100 ms, so every login, registration
// and password change held every request and Raft turn of its node that long (found by review: one
// user logging in ten times a second took another user's sends from p99 18 ms to 220 ms, eight at once
// to over a second). They run on one worker thread per node instead, started at the first and ended
// after a minute without any (an isolate costs resident memory), so that a flood of logins costs at
// most one core and never the event loop.
//
// Jobs wait here, each under a key (whose check it is: a username, or a registering address), and go
// to the worker in turn across keys, the key served longest ago first: a new user's check runs after
// those on the worker (ON_WORKER) and at most one of each other key's. A key is forgotten once it has
// no job, so at most MAX_QUEUED are known. They went first come, first served, MAX_PENDING at most,
// and four accounts each looping on 4 good logins at once kept every other user's logins at 503
// (review of stop 62). A key's job is refused (503 with Retry-After) once MAX_PENDING wait while that
// key has one already, and anyone's past MAX_QUEUED: a user with none waiting still gets in while a
// few keys hold the first bound.
import { createRequire } from 'node:module';
import { Worker } from 'node:worker_threads';
import { ApiError } from './errors.js';

/** Hashes and checks waiting or running at most while their key has one already; more are answered 503. */
export const MAX_PENDING = 16;
/** Hashes and checks waiting or running at most, a key's first included; more are answered 503. */
export const MAX_QUEUED = 64;
/**
 * Jobs on the worker at once: the one it runs and the next, so that it does not wait for the event
 * loop between two; each one more there would be one more a new key's job waits behind.
 */
const ON_WORKER = 2;
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
  key: string;
  resolve(value: unknown): void;
  reject(err: Error): void;
}
/** The jobs of one key; there while it has one waiting or on the worker. */
interface Turns {
  /** Not yet on the worker, oldest first. */
  queued: { id: number; job: Job }[];
  /** Its jobs waiting or on the worker: queued.length <= pending. */
  pending: number;
  /** When its last job went to the worker (a count of jobs sent); -1 before its first. */
  served: number;
}

export class PasswordHasher {
  private worker: Worker | null = null;
  /** Every job not yet answered, queued or on the worker. */
  private readonly waiting = new Map<number, Waiting>();
  /** The keys with a job in `waiting`, in the order each arrived. */
  private readonly keys = new Map<string, Turns>();
  /** Jobs sent to the worker and not yet answered: at most ON_WORKER. */
  private onWorker = 0;
  /** Jobs sent to the worker so far: the clock that Turns.served reads. */
  private sent = 0;
  private nextId = 0;
  private idle: NodeJS.Timeout | null = null;
  private closed = false;

  constructor(
    private readonly maxPending = MAX_PENDING,
    private readonly maxQueued = MAX_QUEUED,
  ) {}

  /** bcrypt's hash of `password` at `cost`, in the turn of `key`. */
  hash(password: string, cost: number, key: string): Promise<string> {
    return this.run({ op: 'hash', password, cost }, key) as Promise<string>;
  }

  /** Whether `password` matches the bcrypt `hash`, in the turn of `key`. */
  compare(password: string, hash: string, key: string): Promise<boolean> {
    return this.run({ op: 'compare', password, hash }, key) as Promise<boolean>;
  }

  /** Ends the worker; what waits for it fails. */
  async close(): Promise<void> {
    this.closed = true;
    await this.stop(new ApiError('unavailable', 'the node is shutting down', 1));
  }

  /**
   * Throws the 503 that the next hash or check of `key` would fail with now (closed, or at a bound):
   * so that a caller can refuse before it counts the attempt against a client, then hash in the same
   * tick.
   */
  assertRoom(key: string): void {
    if (this.closed) throw new ApiError('unavailable', 'the node is shutting down', 1);
    const all = this.waiting.size;
    if (all >= this.maxQueued || (all >= this.maxPending && this.keys.has(key))) {
      throw new ApiError('unavailable', `too many password checks at once on this node (${all}); retry`, 1);
    }
  }

  private run(job: Job, key: string): Promise<unknown> {
    try {
      this.assertRoom(key);
    } catch (err) {
      return Promise.reject(err as Error);
    }
    this.start();
    const id = this.nextId++;
    if (this.idle !== null) clearTimeout(this.idle);
    this.idle = null;
    return new Promise((resolve, reject) => {
      this.waiting.set(id, { key, resolve, reject });
      const turns = this.keys.get(key) ?? { queued: [], pending: 0, served: -1 };
      turns.queued.push({ id, job });
      turns.pending++;
      this.keys.set(key, turns);
      this.send();
    });
  }

  /**
   * Fills the worker up to ON_WORKER, each time from the key with a job queued that was served
   * longest ago (one never served first, in the order keys arrived): round robin across keys.
   */
  private send(): void {
    const worker = this.worker;
    if (worker === null) return;
    while (this.onWorker < ON_WORKER) {
      let next: Turns | null = null;
      for (const turns of this.keys.values()) {
        if (turns.queued.length > 0 && (next === null || turns.served < next.served)) next = turns;
      }
      if (next === null) return;
      const { id, job } = next.queued.shift()!;
      next.served = this.sent++;
      this.onWorker++;
      worker.postMessage({ id, ...job });
    }
  }

  /** Takes job `id`'s waiting out, with its key's count; undefined if it was not waiting. */
  private settle(id: number): Waiting | undefined {
    const w = this.waiting.get(id);
    if (w === undefined) return undefined;
    this.waiting.delete(id);
    const turns = this.keys.get(w.key)!;
    if (--turns.pending === 0) this.keys.delete(w.key);
    return w;
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
      const w = this.settle(m.id);
      if (w === undefined) return;
      this.onWorker--;
      if (m.error !== undefined) w.reject(new Error(`bcrypt: ${m.error}`));
      else w.resolve(m.value);
      this.send();
      if (this.waiting.size === 0 && this.worker === worker) {
        this.idle = setTimeout(() => void this.stop(null), IDLE_MS).unref();
      }
    });
    // A worker that fails or exits fails what it had and what waited for it; the next job starts another.
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
    this.keys.clear();
    this.onWorker = 0;
    for (const w of all) w.reject(err);
  }
}
