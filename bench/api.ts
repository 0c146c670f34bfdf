// `npm run bench:api [-- --seconds 10 --clients 64]`: sends per second and latency through the REST
// API of a real three-node cluster (three `src/main.ts` processes on loopback, as `npm start` runs
// them), each send acknowledged only after a majority fsynced and applied it. Two ways in:
//   leader       every request to the node that leads the queue's partition (a smart client)
//   round-robin  requests spread over the three nodes: two thirds are forwarded to the leader
// `clients` loops each keep one request in flight (1 KiB bodies). The load generator shares the
// machine's two cores with the three nodes. Prints a table; writes bench/results/api.json.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Agent, request } from 'undici';
import { partitionOf } from '../src/partition/routing.js';
import { startNodes } from './cluster.js';
import { numberArg } from './args.js';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const SECONDS = numberArg('seconds', 10);
const CLIENTS = numberArg('clients', 64);
const PARTITIONS = 16;
const BODY = 'x'.repeat(1024);

const dispatcher = new Agent({ connections: CLIENTS, pipelining: 1 });

async function json(method: string, url: string, body?: unknown, token?: string): Promise<{ status: number; body: unknown }> {
  const headers: Record<string, string> = {};
  if (body !== undefined) headers['content-type'] = 'application/json';
  if (token !== undefined) headers.authorization = `Bearer ${token}`;
  const res = await request(url, { method: method as 'POST', headers, dispatcher, ...(body === undefined ? {} : { body: JSON.stringify(body) }) });
  const text = await res.body.text();
  return { status: res.statusCode, body: text.length > 0 ? JSON.parse(text) : null };
}

interface Row {
  way: string;
  clients: number;
  sent: number;
  failed: number;
  seconds: number;
  sendsPerSecond: number;
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
}

async function drive(way: string, urls: string[], queue: string, token: string): Promise<Row> {
  const latencies: number[] = [];
  let failed = 0;
  const end = Date.now() + SECONDS * 1000;
  const started = performance.now();
  await Promise.all(
    Array.from({ length: CLIENTS }, async (_, c) => {
      for (let i = 0; Date.now() < end; i++) {
        const url = urls[(c + i) % urls.length]!;
        const t0 = performance.now();
        const r = await json('POST', `${url}/v1/queues/${queue}/messages`, { body: BODY }, token).catch(() => ({ status: 0, body: null }));
        if (r.status === 201) latencies.push(performance.now() - t0);
        else failed++;
      }
    }),
  );
  const seconds = (performance.now() - started) / 1000;
  const sorted = latencies.sort((a, b) => a - b);
  const pct = (q: number): number => Number((sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? 0).toFixed(1));
  return {
    way,
    clients: CLIENTS,
    sent: latencies.length,
    failed,
    seconds: Number(seconds.toFixed(1)),
    sendsPerSecond: Math.round(latencies.length / seconds),
    p50Ms: pct(0.5),
    p99Ms: pct(0.99),
    maxMs: Number((sorted[sorted.length - 1] ?? 0).toFixed(1)),
  };
}

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'mom-bench-api-'));
  const nodes = await startNodes(dir, { partitions: PARTITIONS }, (u) => json('GET', `${u}/readyz`).then((r) => r.status === 200, () => false));
  const urls = nodes.map((n) => n.url);
  const stop = (): void => {
    for (const n of nodes) n.proc.kill('SIGKILL');
  };
  try {
    await json('POST', `${urls[0]}/v1/auth/register`, { username: 'bench', password: 'bench-password' });
    const login = await json('POST', `${urls[0]}/v1/auth/login`, { username: 'bench', password: 'bench-password' });
    const token = (login.body as { accessToken: string }).accessToken;
    const queue = 'bench-orders';
    await json('POST', `${urls[0]}/v1/queues`, { name: queue }, token);
    const p = partitionOf(queue, PARTITIONS);
    // Wait for the balancer to settle the partition on its preferred node, then find the leader.
    let leader = '';
    for (let i = 0; i < 100 && leader === ''; i++) {
      await new Promise((r) => setTimeout(r, 300));
      const c = await json('GET', `${urls[0]}/v1/cluster`);
      const id = (c.body as { partitions: { partition: number; leader: string | null }[] }).partitions[p]!.leader;
      if (id !== null && id === `n${(p % 3) + 1}`) leader = urls[Number(id.slice(1)) - 1]!;
    }
    if (leader === '') throw new Error('no settled leader');
    // Warm up connections and JIT.
    await drive('warm-up', urls, queue, token);
    const rows = [await drive('leader', [leader], queue, token), await drive('round-robin', urls, queue, token)];
    console.table(rows);
    writeFileSync(join(root, 'bench', 'results', 'api.json'), JSON.stringify({ when: new Date().toISOString(), seconds: SECONDS, clients: CLIENTS, bodyBytes: BODY.length, rows }, null, 2) + '\n');
  } finally {
    stop();
    await dispatcher.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();
