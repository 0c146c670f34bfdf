// A process manager for a chaos run: three src/main.ts node processes on loopback, each with its own
// temporary data folder, 4 partitions; start, SIGKILL, SIGSTOP/SIGCONT, restart; who leads a
// partition. Every node's stdout and stderr go to files in the run's folder. Every child is killed
// (SIGKILL) on teardown, on this process's exit and on SIGINT/SIGTERM/SIGHUP.
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { request } from 'undici';
import { freePort } from '../cluster/net-helpers.js';

const MAIN = join(import.meta.dirname, '..', '..', 'src', 'main.ts');

export interface PartitionView {
  partition: number;
  role: string;
  leader: string | null;
  term: number;
  commitIndex: number;
  appliedIndex: number;
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Every live cluster of this process, for the exit hooks. */
const live = new Set<Cluster>();
let hooked = false;
function hookExit(): void {
  if (hooked) return;
  hooked = true;
  process.once('exit', () => {
    for (const c of live) c.killAllNow();
  });
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.once(sig, () => {
      for (const c of live) c.killAllNow();
      process.kill(process.pid, sig);
    });
  }
}

export class Cluster {
  readonly ids = ['n1', 'n2', 'n3'];
  readonly urls: string[];
  private readonly procs: (ChildProcess | null)[] = [null, null, null];
  private readonly paused = [false, false, false];
  private readonly dataRoot: string;

  private constructor(
    readonly ports: number[],
    /** Where node logs go (n1.log, ...). */
    readonly runDir: string,
    readonly partitions: number,
  ) {
    this.urls = ports.map((p) => `http://127.0.0.1:${p}`);
    this.dataRoot = mkdtempSync(join(tmpdir(), 'mom-chaos-'));
  }

  static async create(runDir: string, partitions = 4): Promise<Cluster> {
    const ports = [await freePort(), await freePort(), await freePort()];
    const c = new Cluster(ports, runDir, partitions);
    live.add(c);
    hookExit();
    return c;
  }

  get dataDir(): string {
    return this.dataRoot;
  }

  isUp(i: number): boolean {
    return this.procs[i] !== null && !this.paused[i];
  }

  /** Starts node i (its data folder is kept across restarts). */
  start(i: number): void {
    if (this.procs[i] !== null) throw new Error(`${this.ids[i]} is running`);
    const peers = this.ports.map((p, k) => `${this.ids[k]}=http://127.0.0.1:${p}`).join(',');
    const env = { ...process.env, MOM_CLUSTER_SECRET: 'c'.repeat(32), MOM_JWT_SECRET: 'j'.repeat(48), MOM_LOG_LEVEL: 'warn', MOM_PARTITIONS: String(this.partitions) };
    const log = openSync(join(this.runDir, `${this.ids[i]}.log`), 'a');
    const child = spawn(process.execPath, ['--import', 'tsx', MAIN, '--node-id', this.ids[i]!, '--listen', `127.0.0.1:${this.ports[i]}`, '--peers', peers, '--data-dir', join(this.dataRoot, this.ids[i]!)], {
      env,
      stdio: ['ignore', log, log],
    });
    closeSync(log);
    this.procs[i] = child;
    this.paused[i] = false;
  }

  /** SIGKILL, and waits for the exit. */
  async kill(i: number): Promise<void> {
    const p = this.procs[i];
    if (p === null || p === undefined) return;
    this.procs[i] = null;
    this.paused[i] = false;
    if (p.exitCode !== null || p.signalCode !== null) return;
    const exited = new Promise((r) => p.once('exit', r));
    p.kill('SIGKILL');
    await exited;
  }

  async restart(i: number): Promise<void> {
    await this.kill(i);
    this.start(i);
  }

  pause(i: number): void {
    const p = this.procs[i];
    if (p === null || p === undefined) throw new Error(`${this.ids[i]} is not running`);
    p.kill('SIGSTOP');
    this.paused[i] = true;
  }

  resume(i: number): void {
    const p = this.procs[i];
    if (p === null || p === undefined) return;
    p.kill('SIGCONT');
    this.paused[i] = false;
  }

  /** Node i's /v1/cluster partitions, or null. */
  async view(i: number, timeoutMs = 2_000): Promise<PartitionView[] | null> {
    try {
      const res = await request(`${this.urls[i]}/v1/cluster`, { signal: AbortSignal.timeout(timeoutMs) });
      const text = await res.body.text();
      return res.statusCode === 200 ? (JSON.parse(text) as { partitions: PartitionView[] }).partitions : null;
    } catch {
      return null;
    }
  }

  /** The node index leading partition p, as the running nodes agree, or -1. */
  async leaderOf(p: number): Promise<number> {
    const views = await Promise.all([0, 1, 2].filter((i) => this.isUp(i)).map((i) => this.view(i)));
    const leaders = new Set(views.map((v) => v?.[p]?.leader ?? null));
    const [only] = [...leaders];
    if (leaders.size !== 1 || only === null || only === undefined) return -1;
    const i = this.ids.indexOf(only);
    return i >= 0 && this.isUp(i) ? i : -1;
  }

  /** Every running node knows a running leader for every partition. */
  async led(): Promise<boolean> {
    for (const i of [0, 1, 2].filter((k) => this.isUp(k))) {
      const v = await this.view(i);
      if (v === null || v.some((p) => p.leader === null || !this.isUp(this.ids.indexOf(p.leader)))) return false;
    }
    return true;
  }

  /** Every node is up and, per partition, all three have applied the same index (= commit). */
  async quiescent(): Promise<boolean> {
    if (![0, 1, 2].every((i) => this.isUp(i))) return false;
    const views = await Promise.all([0, 1, 2].map((i) => this.view(i)));
    if (views.some((v) => v === null)) return false;
    for (let p = 0; p < this.partitions; p++) {
      const applied = new Set(views.map((v) => v![p]!.appliedIndex));
      const commit = new Set(views.map((v) => v![p]!.commitIndex));
      if (applied.size !== 1 || commit.size !== 1 || [...applied][0] !== [...commit][0]) return false;
    }
    return true;
  }

  /** Polls `pred` every 100 ms for at most `ms`; answers whether it came true. */
  static async until(pred: () => Promise<boolean>, ms: number): Promise<boolean> {
    const deadline = Date.now() + ms;
    while (Date.now() < deadline) {
      if (await pred()) return true;
      await sleep(100);
    }
    return false;
  }

  /** Resumes paused nodes and starts stopped ones. */
  heal(): void {
    for (const i of [0, 1, 2]) {
      if (this.paused[i]) this.resume(i);
      if (this.procs[i] === null) this.start(i);
    }
  }

  /** SIGKILL every child right now, synchronously (for exit hooks), and remove the data. */
  killAllNow(): void {
    for (const p of this.procs) {
      if (p !== null && p.exitCode === null && p.signalCode === null) {
        p.kill('SIGCONT');
        p.kill('SIGKILL');
      }
    }
    this.procs.fill(null);
    rmSync(this.dataRoot, { recursive: true, force: true });
  }

  /** Kills every node, waits for the exits and removes the data folders. */
  async close(): Promise<void> {
    for (const i of [0, 1, 2]) if (this.paused[i]) this.resume(i);
    await Promise.all([0, 1, 2].map((i) => this.kill(i)));
    rmSync(this.dataRoot, { recursive: true, force: true });
    live.delete(this);
  }
}
