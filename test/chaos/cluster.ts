// A process manager for a chaos run: three src/main.ts node processes on loopback, each with its own
// temporary data folder, 4 partitions; start, SIGKILL, SIGSTOP/SIGCONT, restart; who leads a
// partition. Every node's stdout and stderr go to files in the run's folder. Every child is killed
// (SIGKILL) on teardown, on this process's exit and on SIGINT/SIGTERM/SIGHUP.
//
// Power cuts: every node runs with the storage fault layer (lose-unsynced.c, LD_PRELOAD) journaling
// its unsynced writes; powerCut() kills the node and takes its files back to their last fsync. The
// layer is built with the machine's C compiler: a cluster created with `powerCuts: false` (the tests
// on real nodes that cut no power) runs without it, and so needs no compiler.
//
// Network cuts: every node runs with the fault layer net-faults.ts preloaded and a control file
// <runDir>/net-<id>.json naming the peers it may not send to; cut() and healNet() rewrite those files
// (temp + rename) and wait until each running node reports the new version applied.
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { request } from 'undici';
import { freePort } from '../cluster/net-helpers.js';
import { buildDiskShim, diskShimEnv, loseUnsynced, type LostWrites } from './disk-faults.js';
import type { NetControl, NetState } from './net-faults.js';
// @ts-expect-error: a plain .mjs script without types
import { NODE_FLAGS } from '../../scripts/local-cluster.mjs';

const MAIN = join(import.meta.dirname, '..', '..', 'src', 'main.ts');
const NET_FAULTS = join(import.meta.dirname, 'net-faults.ts');
/** Applied entries between two snapshots of a partition: often, so installs happen during faults. */
export const SNAPSHOT_EVERY = 100;
/** Log entries kept behind a snapshot (--keep-behind-snapshot; default 1000), so a follower cut off for seconds needs an install. */
export const KEEP_BEHIND_SNAPSHOT = 50;
/**
 * The Raft log's segment files (--log-segment-bytes; default 64 MiB): small, so that rollovers, copies
 * forward and segment deletions happen under the faults too (at 64 MiB a run never left its first).
 */
export const LOG_SEGMENT_BYTES = '256KiB';

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
  /** Per node: the peers (indexes) it may not send to, as last written; and the control version. */
  private readonly blocked: Set<number>[] = [new Set(), new Set(), new Set()];
  private netVersion = 0;
  /** Processes stopped on purpose with SIGTERM: their exit is not a crash if it is clean. */
  private readonly terminated = new Set<ChildProcess>();
  /** The storage fault layer every node is started with; null without power cuts. */
  private readonly diskShim: string | null;
  /** Every power cut of the run and what it undid. */
  readonly powerCuts: { node: string; lost: LostWrites }[] = [];
  /** Nodes that exited without being killed by this manager (a crash: see the node's log). */
  readonly crashes: { node: string; pid: number | undefined; code: number | null; signal: string | null; at: string }[] = [];

  private constructor(
    readonly ports: number[],
    /** Where node logs go (n1.log, ...). */
    readonly runDir: string,
    readonly partitions: number,
    private readonly logLevel: string,
    powerCuts: boolean,
  ) {
    this.urls = ports.map((p) => `http://127.0.0.1:${p}`);
    this.diskShim = powerCuts ? buildDiskShim() : null;
    this.dataRoot = mkdtempSync(join(tmpdir(), 'mom-chaos-'));
    // A reused run folder must not hold an older run's control or state files.
    for (const id of this.ids) for (const f of [`net-${id}.json`, `net-${id}.json.state.json`]) rmSync(join(runDir, f), { force: true });
  }

  /**
   * `logLevel`: the nodes' (pino) level; warn by default. `powerCuts`: start every node with the
   * storage fault layer, so that powerCut() can lose its unsynced writes (needs a C compiler); on by
   * default, as the chaos runs cut power.
   */
  static async create(runDir: string, partitions = 4, logLevel = 'warn', opts: { powerCuts?: boolean } = {}): Promise<Cluster> {
    const ports = [await freePort(), await freePort(), await freePort()];
    const c = new Cluster(ports, runDir, partitions, logLevel, opts.powerCuts ?? true);
    live.add(c);
    hookExit();
    return c;
  }

  get dataDir(): string {
    return this.dataRoot;
  }

  /** Node i's data folder. */
  nodeDir(i: number): string {
    return join(this.dataRoot, this.ids[i]!);
  }

  /** Where node i's storage fault layer keeps its undo journals (outside its data folder). */
  undoDir(i: number): string {
    return join(this.dataRoot, `undo-${this.ids[i]}`);
  }

  isUp(i: number): boolean {
    return this.procs[i] !== null && !this.paused[i];
  }

  /** Starts node i (its data folder is kept across restarts); `env`: extra settings, e.g. MOM_REJOIN. */
  start(i: number, extraEnv: Record<string, string> = {}): void {
    if (this.procs[i] !== null) throw new Error(`${this.ids[i]} is running`);
    const peers = this.ports.map((p, k) => `${this.ids[k]}=http://127.0.0.1:${p}`).join(',');
    const env = {
      ...process.env,
      MOM_CLUSTER_SECRET: 'c'.repeat(32),
      MOM_JWT_SECRET: 'j'.repeat(48),
      MOM_LOG_LEVEL: this.logLevel,
      MOM_PARTITIONS: String(this.partitions),
      MOM_CHAOS_NET: this.netControl(i),
      ...(this.diskShim === null ? {} : diskShimEnv(this.diskShim, this.nodeDir(i), this.undoDir(i))),
      ...extraEnv,
    };
    const log = openSync(join(this.runDir, `${this.ids[i]}.log`), 'a');
    // Node's options as `npm start` gives them, so that the nodes collect their garbage as deployed.
    const args = [...(NODE_FLAGS as string[]), '--import', 'tsx', '--import', NET_FAULTS, MAIN, '--node-id', this.ids[i]!, '--listen', `127.0.0.1:${this.ports[i]}`, '--peers', peers, '--data-dir', this.nodeDir(i), '--snapshot-every', String(SNAPSHOT_EVERY), '--keep-behind-snapshot', String(KEEP_BEHIND_SNAPSHOT), '--log-segment-bytes', LOG_SEGMENT_BYTES];
    const child = spawn(process.execPath, args, {
      env,
      stdio: ['ignore', log, log],
    });
    closeSync(log);
    child.once('exit', (code, signal) => {
      if (this.procs[i] !== child) return; // killed here
      this.procs[i] = null;
      this.paused[i] = false;
      if (this.terminated.delete(child) && code === 0) return; // a clean planned stop
      this.crashes.push({ node: this.ids[i]!, pid: child.pid, code, signal, at: new Date().toISOString() });
    });
    this.procs[i] = child;
    this.paused[i] = false;
  }

  /** SIGKILL, and waits for the exit. */
  async kill(i: number): Promise<void> {
    const p = this.procs[i];
    if (p === null || p === undefined) return;
    this.procs[i] = null;
    this.paused[i] = false;
    this.terminated.delete(p);
    if (p.exitCode !== null || p.signalCode !== null) return;
    const exited = new Promise((r) => p.once('exit', r));
    p.kill('SIGKILL');
    await exited;
  }

  /**
   * A power cut: SIGKILL, then every file of the node's data folder back to its content at its last
   * fsync (disk-faults.ts). Answers what was lost.
   */
  async powerCut(i: number): Promise<LostWrites> {
    if (this.diskShim === null) throw new Error('this cluster was created without power cuts (powerCuts: false)');
    await this.kill(i);
    const lost = loseUnsynced(this.nodeDir(i), this.undoDir(i));
    this.powerCuts.push({ node: this.ids[i]!, lost });
    return lost;
  }

  /** SIGTERM (a planned stop: the node hands its leaderships over, then exits 0); does not wait. */
  terminate(i: number): void {
    const p = this.procs[i];
    if (p === null || p === undefined) throw new Error(`${this.ids[i]} is not running`);
    this.terminated.add(p);
    p.kill('SIGTERM');
  }

  /** Whether node i's process is still running (also while stopping after SIGTERM). */
  running(i: number): boolean {
    const p = this.procs[i];
    return p !== null && p !== undefined && p.exitCode === null && p.signalCode === null;
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

  /** The control file of node i's network fault layer. */
  netControl(i: number): string {
    return join(this.runDir, `net-${this.ids[i]}.json`);
  }

  /** What node i's network fault layer last reported (net-faults.ts), or null. */
  netState(i: number): NetState | null {
    try {
      return JSON.parse(readFileSync(`${this.netControl(i)}.state.json`, 'utf8')) as NetState;
    } catch {
      return null;
    }
  }

  /** The peers node i may not send to now. */
  cutFrom(i: number): number[] {
    return [...this.blocked[i]!].sort();
  }

  /**
   * Node `from` can no longer send to the nodes `to` (added to what is cut already). Answers whether
   * every running node applied it within 2 s (a paused node cannot; a stopped one reads it on start).
   */
  async cut(from: number, to: number[]): Promise<boolean> {
    for (const k of to) if (k !== from) this.blocked[from]!.add(k);
    return this.writeNet();
  }

  /** Node i can no longer send to anyone, nor anyone to it. */
  async isolate(i: number): Promise<boolean> {
    for (const k of [0, 1, 2]) {
      if (k === i) continue;
      this.blocked[i]!.add(k);
      this.blocked[k]!.add(i);
    }
    return this.writeNet();
  }

  /** Every cut is lifted. */
  async healNet(): Promise<boolean> {
    for (const b of this.blocked) b.clear();
    return this.writeNet();
  }

  private async writeNet(): Promise<boolean> {
    const version = ++this.netVersion;
    for (const i of [0, 1, 2]) {
      const control: NetControl = { version, blocked: [...this.blocked[i]!].sort().map((k) => this.ids[k]!) };
      const file = this.netControl(i);
      writeFileSync(`${file}.tmp`, JSON.stringify(control));
      renameSync(`${file}.tmp`, file);
    }
    return Cluster.until(async () => [0, 1, 2].every((i) => !this.isUp(i) || (this.netState(i)?.version ?? 0) >= version), 2_000);
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

  /** Polls `pred` every `everyMs` (100) for at most `ms`; answers whether it came true. */
  static async until(pred: () => Promise<boolean>, ms: number, everyMs = 100): Promise<boolean> {
    const deadline = Date.now() + ms;
    while (Date.now() < deadline) {
      if (await pred()) return true;
      await sleep(everyMs);
    }
    return false;
  }

  /** Lifts every network cut, resumes paused nodes and starts stopped ones. */
  async heal(): Promise<void> {
    if (this.blocked.some((b) => b.size > 0)) await this.healNet();
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
