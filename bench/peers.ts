// What the peers' comparisons share (bench/nats.ts, bench/rabbitmq.ts). The peers' harnesses live
// outside this repository, one folder each (nats/, rabbitmq/) in the folder --peers DIR (or
// MOM_PEERS_DIR) names. Each is run as its README says: copied (the folder may be read-only), `npm ci`
// in the copy, then `./bench.sh`, which prints one JSON line last. They run after the broker's own
// run, on the same machine, once its nodes are gone.
import { spawn } from 'node:child_process';
import { cpSync, existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** One phase of a peer's run, as its bench.mjs reports it (the fields both peers have). */
export interface PeerPhase {
  msgs_per_s: number;
  /** CPU of the peer's three servers over the phase, in cores (their /proc stat). */
  servers_cpu_cores?: number;
  loadgen_cpu_cores?: number;
}

/** Our figures a comparison needs (bench/broker.ts rows). */
export interface Ours {
  workload: string;
  messagesPerSecond: number;
  p99Ms: number;
  /** The three nodes' CPU per acknowledged message, µs. */
  cpuUsPerMessage?: { total: number };
}

export interface Comparison {
  workload: string;
  peer: string;
  mode: string;
  ours: number;
  theirs: number;
  ratio: number;
  oursP99Ms?: number;
  theirsP99Ms?: number;
  /** Server CPU per message, µs: ours the three nodes', theirs the three servers'. */
  oursCpuUsPerMessage?: number;
  theirsCpuUsPerMessage?: number;
  /** Ours over theirs: below 1, we spend less CPU per message. */
  cpuRatio?: number;
}

/** A peer's workload that measures what one of ours does. */
export interface Pairing {
  workload: string;
  peerWorkload: string;
  phase: PeerPhase | undefined;
  p99Ms: number | undefined;
}

const round1 = (x: number): number => Number(x.toFixed(1));
const cpuPerMessage = (p: PeerPhase): number | undefined => (p.servers_cpu_cores === undefined || p.msgs_per_s === 0 ? undefined : Math.round((p.servers_cpu_cores * 1e6) / p.msgs_per_s));

/** Our rows against one run (mode) of a peer: one comparison per pairing both sides measured. */
export function pairUp(ours: Ours[], mode: string, pairings: Pairing[]): Comparison[] {
  const mine = new Map(ours.map((r) => [r.workload, r]));
  const out: Comparison[] = [];
  for (const { workload, peerWorkload, phase, p99Ms } of pairings) {
    const m = mine.get(workload);
    if (m === undefined || phase === undefined || phase.msgs_per_s === 0) continue;
    const theirsCpu = cpuPerMessage(phase);
    const oursCpu = m.cpuUsPerMessage?.total;
    out.push({
      workload,
      peer: peerWorkload,
      mode,
      ours: m.messagesPerSecond,
      theirs: phase.msgs_per_s,
      ratio: Number((m.messagesPerSecond / phase.msgs_per_s).toFixed(2)),
      oursP99Ms: m.p99Ms,
      ...(p99Ms === undefined ? {} : { theirsP99Ms: round1(p99Ms) }),
      ...(oursCpu === undefined ? {} : { oursCpuUsPerMessage: oursCpu }),
      ...(theirsCpu === undefined ? {} : { theirsCpuUsPerMessage: theirsCpu }),
      ...(oursCpu === undefined || theirsCpu === undefined || theirsCpu === 0 ? {} : { cpuRatio: Number((oursCpu / theirsCpu).toFixed(2)) }),
    });
  }
  return out;
}

/** The comparisons as a markdown table; `name` is the peer's short name (NATS, RabbitMQ). */
export function comparisonTable(name: string, c: Comparison[]): string {
  return [
    `| our workload | ${name} workload | ${name} mode | ours msg/s | ${name} msg/s | ratio | ours p99 ms | ${name} p99 ms | ours server CPU µs/msg | ${name} server CPU µs/msg | CPU ratio |`,
    '|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|',
    ...c.map(
      (x) =>
        `| ${x.workload} | ${x.peer} | ${x.mode} | ${x.ours.toLocaleString('en')} | ${x.theirs.toLocaleString('en')} | ${x.ratio} | ${x.oursP99Ms ?? ''} | ${x.theirsP99Ms ?? ''} | ${x.oursCpuUsPerMessage ?? ''} | ${x.theirsCpuUsPerMessage ?? ''} | ${x.cpuRatio ?? ''} |`,
    ),
  ].join('\n');
}

function run(cmd: string, args: string[], cwd: string, capture: boolean): Promise<string> {
  return new Promise((resolve, reject) => {
    // the harness's progress (and npm's) goes to stderr, so that our stdout stays the bench's
    const child = spawn(cmd, args, { cwd, stdio: ['ignore', capture ? 'pipe' : 2, 'inherit'] });
    let text = '';
    child.stdout?.on('data', (d: Buffer) => (text += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => (code === 0 ? resolve(text) : reject(new Error(`${cmd} ${args.join(' ')} in ${cwd} exited with ${code}`))));
  });
}

/**
 * Runs the harness in `peersDir/name` from a copy (`cp -r`, made writable, `npm ci`, `./bench.sh`);
 * answers the JSON line it prints last.
 */
export async function runPeerHarness(peersDir: string, name: string): Promise<unknown> {
  const dir = join(peersDir, name);
  if (!existsSync(join(dir, 'bench.sh'))) throw new Error(`no ${name} peer at ${dir} (expected bench.sh there)`);
  const copy = mkdtempSync(join(tmpdir(), `mom-${name}-peer-`));
  try {
    cpSync(dir, copy, { recursive: true, filter: (src) => !src.includes('node_modules') });
    await run('chmod', ['-R', 'u+w', copy], copy, false);
    await run('npm', ['ci', '--no-audit', '--no-fund'], copy, false);
    const out = await run('bash', [join(copy, 'bench.sh')], copy, true);
    return JSON.parse(out.trim().split('\n').at(-1) ?? '');
  } finally {
    rmSync(copy, { recursive: true, force: true });
  }
}

/** The folder of the peers' harnesses: --peers DIR, or MOM_PEERS_DIR. */
export function peersDir(argv: string[]): string {
  const i = argv.indexOf('--peers');
  const dir = i < 0 ? process.env.MOM_PEERS_DIR : argv[i + 1];
  if (dir === undefined || dir === '') throw new Error("--vs needs the peers' harnesses: pass --peers DIR (or set MOM_PEERS_DIR), the folder that holds nats/ and rabbitmq/, each with its bench.sh");
  return dir;
}
