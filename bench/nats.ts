// `npm run bench -- --vs nats`: the peer of issue #7, NATS JetStream (three nodes, R3 file storage),
// measured by the peer's own harness (<peers>/nats/bench.sh, see bench/broker.ts --peers) in the same invocation, after the broker's own run, so
// both see the same machine. The peer's folder may be read-only: it is copied to a temporary folder,
// where its own script installs what it needs (Debian's nats-server, its npm dependencies).
//
// Its modes: `default` (nats-server 2.9 as shipped: no fsync before the ack) and `sync_mount` (each
// node's store on a filesystem mounted -o sync, the nearest 2.9 comes to fsync before the ack; needs
// root and a loop device, skipped otherwise). The broker fsyncs on a majority before every 2xx.
import { spawn } from 'node:child_process';
import { cpSync, existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface PeerRun {
  mode: string;
  fsync?: string;
  skipped?: string;
  error?: string;
  sync_publish?: { publishers: number; msgs_per_s: number; ack_p50_ms: number; ack_p99_ms: number };
  async_publish?: { publishers: number; in_flight_max: number; msgs_per_s: number; ack_p50_ms: number; ack_p99_ms: number };
  consume?: { fetch_batch: number; msgs_per_s: number };
}

export interface PeerResult {
  peer: string;
  nats_server: string;
  runs: PeerRun[];
}

/** Runs the peer's bench.sh from a copy of `peerDir`; its progress goes to stderr. */
export async function runNatsPeer(peerDir: string): Promise<PeerResult> {
  if (!existsSync(join(peerDir, 'bench.sh'))) throw new Error(`no NATS peer at ${peerDir} (expected bench.sh there)`);
  const copy = mkdtempSync(join(tmpdir(), 'mom-nats-peer-'));
  try {
    cpSync(peerDir, copy, { recursive: true, filter: (src) => !src.includes('node_modules') });
    const out = await new Promise<string>((resolve, reject) => {
      const child = spawn('bash', [join(copy, 'bench.sh')], { cwd: copy, stdio: ['ignore', 'pipe', 'inherit'] });
      let text = '';
      child.stdout.on('data', (d: Buffer) => (text += d.toString()));
      child.on('error', reject);
      child.on('close', (code) => (code === 0 ? resolve(text) : reject(new Error(`the NATS peer's bench.sh exited with ${code}`))));
    });
    const line = out.trim().split('\n').at(-1) ?? '';
    return JSON.parse(line) as PeerResult;
  } finally {
    rmSync(copy, { recursive: true, force: true });
  }
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
}

/**
 * Pairs the workloads that measure the same thing: single-message sends from 64 clients each awaiting
 * its answer against 64 publishers each awaiting its ack; batched sends against 400 publishes in
 * flight (the peer's client has no batch publish); receive+ack of 100 against a pull consumer
 * fetching 100 and acking each.
 */
export function compare(ours: { workload: string; messagesPerSecond: number; p99Ms: number }[], peer: PeerResult): Comparison[] {
  const mine = new Map(ours.map((r) => [r.workload, r]));
  const out: Comparison[] = [];
  for (const run of peer.runs) {
    if (run.skipped !== undefined || run.error !== undefined) continue;
    const pairs: [string, string, number | undefined, number | undefined][] = [
      ['send-1', `${run.sync_publish?.publishers ?? 64} publishers awaiting each ack`, run.sync_publish?.msgs_per_s, run.sync_publish?.ack_p99_ms],
      ['send-100', `${run.async_publish?.in_flight_max ?? 400} publishes in flight`, run.async_publish?.msgs_per_s, run.async_publish?.ack_p99_ms],
      ['receive-ack-100', `pull consumer, batches of ${run.consume?.fetch_batch ?? 100}, ack each`, run.consume?.msgs_per_s, undefined],
    ];
    for (const [workload, peerWorkload, theirs, theirsP99] of pairs) {
      const m = mine.get(workload);
      if (m === undefined || theirs === undefined || theirs === 0) continue;
      out.push({
        workload,
        peer: peerWorkload,
        mode: run.mode,
        ours: m.messagesPerSecond,
        theirs,
        ratio: Number((m.messagesPerSecond / theirs).toFixed(2)),
        oursP99Ms: m.p99Ms,
        ...(theirsP99 === undefined ? {} : { theirsP99Ms: Number(theirsP99.toFixed(1)) }),
      });
    }
  }
  return out;
}

export function comparisonMarkdown(c: Comparison[], peer: PeerResult): string {
  if (c.length === 0) return `NATS JetStream ${peer.nats_server}: no comparable run (${peer.runs.map((r) => `${r.mode}: ${r.skipped ?? r.error ?? 'no figures'}`).join('; ')}).\n`;
  return [
    `Against NATS JetStream ${peer.nats_server} in the same invocation (three nodes, R3 file storage, 1 KiB; \`default\` does not fsync before its ack, \`sync_mount\` writes every block synchronously):`,
    '',
    '| our workload | NATS workload | NATS mode | ours msg/s | NATS msg/s | ratio | ours p99 ms | NATS p99 ms |',
    '|---|---|---|---:|---:|---:|---:|---:|',
    ...c.map((x) => `| ${x.workload} | ${x.peer} | ${x.mode} | ${x.ours.toLocaleString('en')} | ${x.theirs.toLocaleString('en')} | ${x.ratio} | ${x.oursP99Ms ?? ''} | ${x.theirsP99Ms ?? ''} |`),
  ].join('\n') + '\n';
}
