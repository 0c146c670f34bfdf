// `npm run bench -- --vs nats`: the peer of issue #7, NATS JetStream (three nodes, R3 file storage),
// measured by the peer's own harness (nats/bench.sh in the peers' folder, bench/peers.ts) in the same
// invocation, after the broker's run. Its script installs what it needs (Debian's nats-server).
//
// Its modes: `default` (nats-server 2.9 as shipped: no fsync before the ack) and `sync_mount` (each
// node's store on a filesystem mounted -o sync, the nearest 2.9 comes to fsync before the ack; needs
// root and a loop device, skipped otherwise). The broker fsyncs on a majority before every 2xx.
import { comparisonTable, pairUp, runPeerHarness, type Comparison, type Ours, type PeerPhase } from './peers.js';

export type { Comparison } from './peers.js';

interface NatsPhase extends PeerPhase {
  publishers?: number;
  in_flight_max?: number;
  ack_p50_ms?: number;
  ack_p99_ms?: number;
  fetch_batch?: number;
}

export interface PeerRun {
  mode: string;
  fsync?: string;
  skipped?: string;
  error?: string;
  sync_publish?: NatsPhase;
  async_publish?: NatsPhase;
  consume?: NatsPhase;
}

export interface PeerResult {
  peer: string;
  nats_server: string;
  runs: PeerRun[];
}

export async function runNatsPeer(peersDir: string): Promise<PeerResult> {
  return (await runPeerHarness(peersDir, 'nats')) as PeerResult;
}

/**
 * Pairs the workloads that measure the same thing: single-message sends from 63 connections each
 * awaiting its answer against 64 publishers each awaiting its ack; batched sends against 400 publishes
 * in flight (the peer's client has no batch publish); receive+ack of 100 against a pull consumer
 * fetching 100 and acking each. In every mode the peer ran; skipped or failed modes are left out.
 */
export function compare(ours: Ours[], peer: PeerResult): Comparison[] {
  return peer.runs
    .filter((run) => run.skipped === undefined && run.error === undefined)
    .flatMap((run) =>
      pairUp(ours, run.mode, [
        { workload: 'send-1', peerWorkload: `${run.sync_publish?.publishers ?? 64} publishers awaiting each ack`, phase: run.sync_publish, p99Ms: run.sync_publish?.ack_p99_ms },
        { workload: 'send-100', peerWorkload: `${run.async_publish?.in_flight_max ?? 400} publishes in flight`, phase: run.async_publish, p99Ms: run.async_publish?.ack_p99_ms },
        { workload: 'receive-ack-100', peerWorkload: `pull consumer, batches of ${run.consume?.fetch_batch ?? 100}, ack each`, phase: run.consume, p99Ms: undefined },
      ]),
    );
}

export function comparisonMarkdown(c: Comparison[], peer: PeerResult): string {
  if (c.length === 0) return `NATS JetStream ${peer.nats_server}: no comparable run (${peer.runs.map((r) => `${r.mode}: ${r.skipped ?? r.error ?? 'no figures'}`).join('; ')}).\n`;
  return [
    `Against NATS JetStream ${peer.nats_server} in the same invocation (three nodes, R3 file storage, 1 KiB; \`default\` does not fsync before its ack, \`sync_mount\` writes every block synchronously; server CPU: its three servers' over each phase, per message; in \`sync_mount\` the kernel's work for the synchronous filesystem is not in it, the harness reports it as other_cpu_cores):`,
    '',
    comparisonTable('NATS', c),
  ].join('\n') + '\n';
}
