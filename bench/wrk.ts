// The bench's HTTP load generator: wrk (C, epoll), driven by the Lua scripts of bench/wrk/. One wrk
// process per target (a node, or a node and a subscription), one thread each, all in parallel; their
// figures are summed here. wrk drives one host per process, hence one process per node.
//
// Each process prints one `WRK_RESULT {json}` line (bench/wrk/common.lua): requests, answers by
// status, messages acknowledged, latency percentiles and its own CPU ticks. A process whose script says
// `wrk-thread-finished` on stderr (a backlog filled, a queue drained) gets SIGINT, which ends wrk's
// run early and still prints its report.
import { spawn, spawnSync } from 'node:child_process';
import { join } from 'node:path';

const root = join(import.meta.dirname, '..');

/** wrk's version line, or null when it is not installed. */
export function wrkVersion(): string | null {
  const r = spawnSync('wrk', ['--version'], { encoding: 'utf8' });
  if (r.error !== undefined) return null;
  return (r.stdout + r.stderr).split('\n')[0]!.replace(/\s*Copyright.*$/, '').trim();
}

export const WRK_INSTALL = 'wrk is not on the PATH; the bench drives HTTP with it. Install it (Debian or Ubuntu: sudo apt-get install -y wrk) and run the bench again.';

/** wrk's version line; without wrk, says how to install it and exits with 1. */
export function requireWrk(): string {
  const version = wrkVersion();
  if (version === null) {
    console.error(WRK_INSTALL);
    process.exit(1);
  }
  return version;
}

export interface WrkJob {
  /** The target: a node's URL with the script's path (its queue, topic or subscription). */
  url: string;
  script: 'send' | 'receive-ack';
  /** The script's arguments (after wrk's `--`). */
  args: (string | number)[];
  connections: number;
}

export interface WrkResult {
  command: string;
  durationUs: number;
  requests: number;
  /** Messages acknowledged (2xx answers times the messages each carried; acks: what they acked). */
  messages: number;
  emptyReceives: number;
  /** Receipt handles an ack's 2xx answer listed as failed (stale or invalid). */
  ackFailed: number;
  /** Answers by HTTP status. */
  statuses: Record<string, number>;
  /** Socket errors and timeouts (no answer), and answers with a status above 399, as wrk counts them. */
  errors: { connect: number; read: number; write: number; timeout: number; status: number };
  latencyUs: { min: number; max: number; mean: number; percentiles: [number, number][] };
  /** wrk's own CPU time (utime + stime), in clock ticks. */
  cpuTicks: number;
  /** The script ended the run itself (the work was done) before -d ran out. */
  finishedEarly: boolean;
}

const SCRIPT_DIR = join('bench', 'wrk');
/** Longer than the broker's own wait for a write (10 s at the leader) plus an election. */
const TIMEOUT = '15s';

function wrkArgs(job: WrkJob, seconds: number): string[] {
  return ['-t1', `-c${job.connections}`, `-d${seconds}s`, '--timeout', TIMEOUT, '-s', join(SCRIPT_DIR, `${job.script}.lua`), job.url, '--', ...job.args.map(String)];
}

/** The command line as a person would type it from the repository's root (the token left as a variable). */
export function wrkCommand(job: WrkJob, seconds: number): string {
  return `LUA_PATH='${SCRIPT_DIR}/?.lua;;' MOM_BENCH_TOKEN=$TOKEN wrk ${wrkArgs(job, seconds).join(' ')}`;
}

function runOne(job: WrkJob, seconds: number, token: string): Promise<WrkResult> {
  return new Promise((resolve, reject) => {
    const child = spawn('wrk', wrkArgs(job, seconds), {
      cwd: root,
      env: { ...process.env, LUA_PATH: `${SCRIPT_DIR}/?.lua;;`, MOM_BENCH_TOKEN: token },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    let finishedEarly = false;
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => {
      err += d.toString();
      if (!finishedEarly && err.includes('wrk-thread-finished')) {
        finishedEarly = true;
        child.kill('SIGINT');
      }
    });
    child.on('error', reject);
    child.on('close', (code, signal) => {
      const line = out.split('\n').find((l) => l.startsWith('WRK_RESULT '));
      if (line === undefined) {
        reject(new Error(`wrk exited (${code ?? signal}) without a result: ${wrkCommand(job, seconds)}\n${out}${err}`));
        return;
      }
      const stray = err.replace(/wrk-thread-finished\n/g, '').trim();
      if (stray !== '') console.error(`wrk (${job.url}): ${stray}`);
      resolve({ ...(JSON.parse(line.slice('WRK_RESULT '.length)) as Omit<WrkResult, 'command' | 'finishedEarly'>), command: wrkCommand(job, seconds), finishedEarly });
    });
  });
}

/** Runs the jobs in parallel for up to `seconds`; answers each process's result, in the jobs' order. */
export function runWrk(jobs: WrkJob[], seconds: number, token: string): Promise<WrkResult[]> {
  return Promise.all(jobs.map((j) => runOne(j, seconds, token)));
}

/**
 * The q-quantile (0..1) of all processes' requests together, in µs. Each process gives its latency at
 * fixed percentiles; each point stands for the share of that process's requests between it and the
 * previous point, so the processes are pooled by their request counts. Exact to the percentile grid
 * (0.5 up to p99, 0.01 above p99.9), not to the request.
 */
export function pooledQuantileUs(runs: WrkResult[], q: number): number {
  const points: [number, number][] = [];
  for (const r of runs) {
    let prev = 0;
    for (const [p, v] of r.latencyUs.percentiles) {
      points.push([v, (r.requests * (p - prev)) / 100]);
      prev = p;
    }
  }
  const total = points.reduce((s, [, w]) => s + w, 0);
  if (total === 0) return 0;
  points.sort((a, b) => a[0] - b[0]);
  let seen = 0;
  for (const [v, w] of points) {
    seen += w;
    if (seen >= q * total * (1 - 1e-9)) return v; // the weights' sums are not exact
  }
  return points.at(-1)![0];
}

/** The processes' results together. */
export function sumWrk(runs: WrkResult[]): { requests: number; messages: number; emptyReceives: number; ackFailed: number; statuses: Record<string, number>; non2xx: number; socketErrors: number; seconds: number; cpuTicks: number } {
  const statuses: Record<string, number> = {};
  for (const r of runs) for (const [k, v] of Object.entries(r.statuses)) statuses[k] = (statuses[k] ?? 0) + v;
  const non2xx = Object.entries(statuses).reduce((n, [k, v]) => (k.startsWith('2') ? n : n + v), 0);
  return {
    requests: runs.reduce((n, r) => n + r.requests, 0),
    messages: runs.reduce((n, r) => n + r.messages, 0),
    emptyReceives: runs.reduce((n, r) => n + r.emptyReceives, 0),
    ackFailed: runs.reduce((n, r) => n + r.ackFailed, 0),
    statuses,
    non2xx,
    socketErrors: runs.reduce((n, r) => n + r.errors.connect + r.errors.read + r.errors.write + r.errors.timeout, 0),
    // the processes run in parallel: the phase lasts as long as the longest
    seconds: Math.max(0, ...runs.map((r) => r.durationUs)) / 1e6,
    cpuTicks: runs.reduce((n, r) => n + r.cpuTicks, 0),
  };
}
