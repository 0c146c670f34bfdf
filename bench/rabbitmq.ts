// `npm run bench -- --vs rabbitmq`: RabbitMQ quorum queues (three nodes, one quorum queue of three
// members, 1 KiB persistent messages), measured by the peer's own harness (rabbitmq/bench.sh in the
// peers' folder, bench/peers.ts) in the same invocation, after the broker's run. Its script installs
// Debian's rabbitmq-server if it is missing. The durability contract is the broker's: a publisher
// confirm comes once the message is fdatasync-ed on a majority (its Ra WAL).
import { comparisonTable, pairUp, runPeerHarness, type Comparison, type Ours, type PeerPhase } from './peers.js';

interface RabbitPhase extends PeerPhase {
  publishers?: number;
  in_flight_max?: number;
  confirm_p50_ms?: number;
  confirm_p99_ms?: number;
  consumers?: number;
  prefetch?: number;
}

export interface RabbitRun {
  mode: string;
  error?: string;
  sync_publish?: RabbitPhase;
  async_publish?: RabbitPhase;
  consume?: RabbitPhase;
}

export interface RabbitResult {
  peer: string;
  rabbitmq: string;
  erlang?: string;
  fsync?: string;
  runs: RabbitRun[];
}

export async function runRabbitPeer(peersDir: string): Promise<RabbitResult> {
  return (await runPeerHarness(peersDir, 'rabbitmq')) as RabbitResult;
}

/**
 * Single sends against 64 publishers each awaiting its confirm; batched sends against 400 publishes in
 * flight (AMQP has no batch publish); receive+ack of 100 against a consumer with a prefetch of 100
 * acking each message.
 */
export function compareRabbit(ours: Ours[], peer: RabbitResult): Comparison[] {
  return peer.runs
    .filter((run) => run.error === undefined)
    .flatMap((run) =>
      pairUp(ours, run.mode, [
        { workload: 'send-1', peerWorkload: `${run.sync_publish?.publishers ?? 64} publishers awaiting each confirm`, phase: run.sync_publish, p99Ms: run.sync_publish?.confirm_p99_ms },
        { workload: 'send-100', peerWorkload: `${run.async_publish?.in_flight_max ?? 400} publishes in flight`, phase: run.async_publish, p99Ms: run.async_publish?.confirm_p99_ms },
        { workload: 'receive-ack-100', peerWorkload: `${run.consume?.consumers ?? 1} consumer, prefetch ${run.consume?.prefetch ?? 100}, ack each`, phase: run.consume, p99Ms: undefined },
      ]),
    );
}

export function rabbitMarkdown(c: Comparison[], peer: RabbitResult): string {
  if (c.length === 0) return `RabbitMQ ${peer.rabbitmq}: no comparable run (${peer.runs.map((r) => `${r.mode}: ${r.error ?? 'no figures'}`).join('; ')}).\n`;
  return [
    `Against RabbitMQ ${peer.rabbitmq} quorum queues in the same invocation (three nodes, one queue of three members, 1 KiB persistent, confirm after fdatasync on a majority; server CPU: its three servers' over each phase, per message):`,
    '',
    comparisonTable('RabbitMQ', c),
  ].join('\n') + '\n';
}
