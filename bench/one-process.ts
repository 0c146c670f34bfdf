// `npm run bench:one-process [-- --seconds 10 --rounds 2]`: what a request costs and what a message
// costs, with the three nodes in ONE process (MomServer each, on loopback ports, as the API tests run
// them) and wrk against the three ports, 21 connections each, as `npm run bench` loads them.
//
// One process has one clock for all three nodes' CPU, no switching between node processes, and no
// drift between them; it is a tool for finding where a cost is, not a figure to quote against the
// peers (that is `npm run bench`). It found that a single send costs as much here as over three
// processes (bench/README.md, "Per entry, not per process").
//
// After --warmup seconds (default 15: the JIT settles slowly) of single sends, single sends and
// batches of 10 alternate, each round; from the two, with c1 and c10 the CPU per
// message of each:  c1 = R + M  and  10 c10 = R + 10 M,  so  M = (10 c10 - c1) / 9  (per message)
// and  R = c1 - M  (per request, with its entry and its share of loop turns).
// Prints a table; writes bench/results/one-process.json.
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { join } from 'node:path';
import { call, startCluster, userToken } from '../test/api/api-helpers.js';
import { numberArg } from './args.js';
import { requireWrk, runWrk, sumWrk } from './wrk.js';

const SECONDS = numberArg('seconds', 10);
const ROUNDS = numberArg('rounds', 2);
const WARMUP = numberArg('warmup', 15);
const CONNECTIONS = 21;
const QUEUE = 'one-process';

interface Phase {
  round: number;
  perRequest: 1 | 10;
  messagesPerSecond: number;
  cpuUsPerMessage: number;
}

async function main(): Promise<void> {
  requireWrk();
  const cluster = await startCluster({ partitions: 16, tickMs: 100 });
  try {
    const token = await userToken(cluster.urls[0]!, 'bench');
    const created = await call(cluster.urls[1]!, 'POST', '/v1/queues', { token, body: { name: QUEUE } });
    if (created.status !== 201) throw new Error(`create the queue: ${created.status} ${JSON.stringify(created.body)}`);
    const jobs = (per: 1 | 10) =>
      cluster.urls.map((u) => ({ url: `${u}/v1/queues/${QUEUE}/messages${per === 1 ? '' : '/batch'}`, script: 'send' as const, args: [per], connections: CONNECTIONS }));
    await runWrk(jobs(1), WARMUP, token);
    const phases: Phase[] = [];
    for (let round = 1; round <= ROUNDS; round++) {
      for (const perRequest of [1, 10] as const) {
        const before = process.cpuUsage();
        const runs = await runWrk(jobs(perRequest), SECONDS, token);
        const cpu = process.cpuUsage(before);
        const sum = sumWrk(runs);
        if (sum.non2xx > 0 || sum.socketErrors > 0) throw new Error(`round ${round}, ${perRequest} per request: ${sum.non2xx} non-2xx, ${sum.socketErrors} socket errors`);
        const phase = { round, perRequest, messagesPerSecond: Math.round(sum.messages / sum.seconds), cpuUsPerMessage: Math.round(((cpu.user + cpu.system) / sum.messages) * 10) / 10 };
        phases.push(phase);
        console.error(`round ${round}: ${perRequest} per request, ${phase.messagesPerSecond} msg/s, ${phase.cpuUsPerMessage} µs per message`);
      }
    }
    const rounds = Array.from({ length: ROUNDS }, (_, i) => {
      const c1 = phases.find((p) => p.round === i + 1 && p.perRequest === 1)!.cpuUsPerMessage;
      const c10 = phases.find((p) => p.round === i + 1 && p.perRequest === 10)!.cpuUsPerMessage;
      const perMessage = (10 * c10 - c1) / 9;
      return { round: i + 1, c1, c10, perMessageUs: Math.round(perMessage), perRequestUs: Math.round(c1 - perMessage) };
    });
    const lines = [
      `Three nodes in one process, wrk with ${CONNECTIONS} connections per node, ${SECONDS} s phases, 1 KiB bodies; CPU of the whole process (every thread).`,
      '',
      '| round | single sends: msg/s, CPU µs per message | batches of 10: msg/s, CPU µs per message | per request (with its entry) µs | per message µs |',
      '|---|---|---|---:|---:|',
      ...rounds.map((r) => {
        const one = phases.find((p) => p.round === r.round && p.perRequest === 1)!;
        const ten = phases.find((p) => p.round === r.round && p.perRequest === 10)!;
        return `| ${r.round} | ${one.messagesPerSecond.toLocaleString('en')}, ${one.cpuUsPerMessage} | ${ten.messagesPerSecond.toLocaleString('en')}, ${ten.cpuUsPerMessage} | ${r.perRequestUs} | ${r.perMessageUs} |`;
      }),
    ];
    console.log(lines.join('\n'));
    const out = join(import.meta.dirname, 'results');
    mkdirSync(out, { recursive: true });
    const meta = { measuredAt: new Date().toISOString(), command: 'npm run bench:one-process', machine: `${cpus().length} × ${cpus()[0]?.model ?? 'cpu'}`, seconds: SECONDS, connectionsPerNode: CONNECTIONS };
    writeFileSync(join(out, 'one-process.json'), JSON.stringify({ ...meta, phases, rounds }, null, 2) + '\n');
  } finally {
    await cluster.close();
  }
}

await main();
process.exit(0);
