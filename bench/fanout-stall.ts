// `npm run bench:fanout-stall [-- --subscriptions 1000 --connections 60,300 --seconds 15]`: how long
// each node stops answering while publishers load a topic of many subscriptions. Each publish stores
// one copy per subscription on every replica (at most 1,000 per publish, docs/api.md), and a node's
// partitions and its clients share one event loop, so a heavy apply is felt by every client of the
// node, whatever they use.
//
// One cluster (bench/cluster.ts), one topic with --subscriptions subscriptions; for each count of
// --connections, wrk publishes single 1 KiB messages over the three nodes (a third of the connections
// each, bench/wrk/send.lua) for --seconds, while this process GETs /healthz on each node every 25 ms
// (each on time, answered or not) and times the answers: what a request arriving at any moment
// waits. Prints a table; writes bench/results/fanout-stall.json.
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { numberArg } from './args.js';
import { benchUser, json, startNodes, stopNodes, type BenchNode } from './cluster.js';
import { requireWrk, runWrk } from './wrk.js';

const root = join(import.meta.dirname, '..');
const SUBSCRIPTIONS = numberArg('subscriptions', 1000);
const SECONDS = numberArg('seconds', 15);
const CONNECTIONS = (() => {
  const i = process.argv.indexOf('--connections');
  return (i < 0 ? '60,300' : process.argv[i + 1]!).split(',').map(Number);
})();
const TOPIC = 'fan';
const PROBE_EVERY_MS = 25;

interface Probe {
  node: string;
  probes: number;
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
}

interface Row {
  connections: number;
  publishesPerSecond: number;
  copiesPerSecond: number;
  non2xx: number;
  /** Answers by HTTP status, the three wrk processes together. */
  statuses: Record<string, number>;
  healthz: Probe[];
}

/**
 * /healthz on each node every PROBE_EVERY_MS until stop() is called, each sent on time whether or not
 * the one before was answered (open loop: a probe that waited for its predecessor would land in a
 * long stall once and in the free time between stalls many times); then the answers' times.
 */
function probe(nodes: BenchNode[]): { stop(): Promise<Probe[]> } {
  const times = nodes.map(() => [] as number[]);
  const pending: Promise<void>[] = [];
  const timer = setInterval(() => {
    nodes.forEach((n, i) => {
      const t0 = performance.now();
      pending.push(
        fetch(`${n.url}/healthz`)
          .then((r) => r.arrayBuffer())
          .then(() => void times[i]!.push(performance.now() - t0)),
      );
    });
  }, PROBE_EVERY_MS);
  return {
    async stop() {
      clearInterval(timer);
      await Promise.all(pending);
      return nodes.map((n, i) => {
        const s = [...times[i]!].sort((a, b) => a - b);
        const at = (q: number): number => Number((s[Math.min(s.length - 1, Math.floor(s.length * q))] ?? 0).toFixed(1));
        return { node: n.id, probes: s.length, p50Ms: at(0.5), p99Ms: at(0.99), maxMs: Number((s.at(-1) ?? 0).toFixed(1)) };
      });
    },
  };
}

async function main(): Promise<void> {
  const wrk = requireWrk();
  const dir = mkdtempSync(join(tmpdir(), 'mom-bench-fanout-stall-'));
  const nodes = await startNodes(dir, {}, (u) => fetch(`${u}/readyz`).then((r) => r.status === 200, () => false));
  const rows: Row[] = [];
  try {
    const u = nodes[0]!.url;
    const token = await benchUser(u);
    if ((await json('POST', `${u}/v1/topics`, { name: TOPIC }, token)).status !== 201) throw new Error('could not create the topic');
    for (let i = 0; i < SUBSCRIPTIONS; i++) {
      const r = await json('POST', `${u}/v1/topics/${TOPIC}/subscriptions`, { name: `s${i}` }, token);
      if (r.status !== 201) throw new Error(`subscription ${i}: ${r.status} ${JSON.stringify(r.body)}`);
    }
    // leaders settle on their preferred nodes (the balancer)
    await new Promise((r) => setTimeout(r, 3_000));
    console.log(`\nPublishes of one 1 KiB message to a topic of ${SUBSCRIPTIONS.toLocaleString('en')} subscriptions (wrk over the three nodes, ${SECONDS} s per row); /healthz timed on each node every ${PROBE_EVERY_MS} ms\n`);
    console.log('| connections | publishes/s | copies/s | non-2xx | /healthz p50 / p99 / max ms, per node |');
    console.log('|---:|---:|---:|---:|---|');
    for (const connections of CONNECTIONS) {
      const p = probe(nodes);
      const jobs = nodes.map((n) => ({ url: `${n.url}/v1/topics/${TOPIC}/messages`, script: 'send' as const, args: [1], connections: Math.max(1, Math.round(connections / nodes.length)) }));
      const results = await runWrk(jobs, SECONDS, token);
      const healthz = await p.stop();
      const messages = results.reduce((a, r) => a + r.messages, 0);
      const seconds = Math.max(...results.map((r) => r.durationUs)) / 1e6;
      const statuses: Record<string, number> = {};
      for (const r of results) for (const [s, n] of Object.entries(r.statuses)) statuses[s] = (statuses[s] ?? 0) + n;
      const non2xx = Object.entries(statuses).reduce((a, [s, n]) => a + (s.startsWith('2') ? 0 : n), 0);
      const row: Row = { connections, publishesPerSecond: Math.round(messages / seconds), copiesPerSecond: Math.round((messages * SUBSCRIPTIONS) / seconds), non2xx, statuses, healthz };
      rows.push(row);
      const refused = Object.entries(statuses).filter(([s]) => !s.startsWith('2')).map(([s, n]) => `${n} × ${s}`).join(', ');
      console.log(
        `| ${connections} | ${row.publishesPerSecond.toLocaleString('en')} | ${row.copiesPerSecond.toLocaleString('en')} | ${non2xx}${refused === '' ? '' : ` (${refused})`} | ${healthz.map((h) => `${h.node} ${h.p50Ms} / ${h.p99Ms} / ${h.maxMs}`).join('; ')} |`,
      );
    }
  } finally {
    await stopNodes(nodes);
    rmSync(dir, { recursive: true, force: true });
  }
  const out = join(root, 'bench', 'results', 'fanout-stall.json');
  mkdirSync(join(root, 'bench', 'results'), { recursive: true });
  writeFileSync(
    out,
    JSON.stringify(
      {
        benchmark: 'fanout-stall',
        command: `npm run bench:fanout-stall${process.argv.length > 2 ? ` -- ${process.argv.slice(2).join(' ')}` : ''}`,
        date: new Date().toISOString(),
        machine: `${cpus().length} × ${cpus()[0]?.model ?? 'cpu'}`,
        node: process.version,
        wrk,
        subscriptions: SUBSCRIPTIONS,
        seconds: SECONDS,
        rows,
      },
      null,
      2,
    ) + '\n',
  );
  console.log(`\nwrote ${out}`);
  process.exit(0);
}

await main();
