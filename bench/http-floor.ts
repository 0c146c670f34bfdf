// `npm run bench:http-floor [-- --seconds 10]`: what HTTP alone costs on this machine, as a floor
// under the broker's figures. Three processes run fastify with nothing behind it
// (bench/http-floor-server.mjs); this process drives them as `npm run bench` drives the broker: 64
// clients, each keeping one POST of a 1 KiB JSON body in flight, round-robin over the three, with the
// same undici client. Two layouts:
//   serve     each process answers at once
//   forward   two thirds of the requests are passed on by the process that got them to the first one
//             (as a node passes a write to the partition's leader), and the answer relayed back
// No storage, no Raft, no fsync: a broker that replicates and applies every message cannot go faster
// than this. Prints a table; writes bench/results/http-floor.json.
import { fork, type ChildProcess } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { join } from 'node:path';
import { Agent, request } from 'undici';
import { freePort } from '../test/cluster/net-helpers.js';
import { numberArg } from './args.js';

const root = join(import.meta.dirname, '..');
const SECONDS = numberArg('seconds', 10);
const CLIENTS = 64;
const BODY = JSON.stringify({ body: 'x'.repeat(1024) });
const CLK_TCK = 100;

function cpuTicks(pid: number): number {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return Number(f[11]) + Number(f[12]);
}

async function start(forward: boolean): Promise<{ urls: string[]; procs: ChildProcess[] }> {
  const ports = [await freePort(), await freePort(), await freePort()];
  const urls = ports.map((p) => `http://127.0.0.1:${p}`);
  const procs = ports.map((p, i) =>
    fork(join(root, 'bench', 'http-floor-server.mjs'), [], {
      env: { ...process.env, PORT: String(p), FORWARD_TO: forward && i > 0 ? urls[0] : '' },
      execArgv: [],
      stdio: ['ignore', 'ignore', 'inherit', 'ipc'],
    }),
  );
  await Promise.all(procs.map((c) => new Promise((r) => c.once('message', r))));
  return { urls, procs };
}

async function run(layout: 'serve' | 'forward'): Promise<Record<string, unknown>> {
  const { urls, procs } = await start(layout === 'forward');
  const dispatcher = new Agent({ connections: 128, pipelining: 1 });
  const latencies: number[] = [];
  let rr = 0;
  let failed = 0;
  const loop = async (until: number, record: boolean): Promise<void> => {
    while (performance.now() < until) {
      const t0 = performance.now();
      const res = await request(`${urls[rr++ % 3]}/send`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: BODY, dispatcher });
      await res.body.text();
      if (res.statusCode !== 201) failed++;
      else if (record) latencies.push(performance.now() - t0);
    }
  };
  await Promise.all(Array.from({ length: CLIENTS }, () => loop(performance.now() + 2000, false)));
  const before = procs.map((p) => cpuTicks(p.pid!));
  const self = process.cpuUsage();
  const t0 = performance.now();
  await Promise.all(Array.from({ length: CLIENTS }, () => loop(t0 + SECONDS * 1000, true)));
  const seconds = (performance.now() - t0) / 1000;
  const cpu = procs.map((p, i) => Math.round(((cpuTicks(p.pid!) - before[i]!) / CLK_TCK / seconds) * 100));
  const used = process.cpuUsage(self);
  const loadgenCpuPct = Math.round(((used.user + used.system) / 1e6 / seconds) * 100);
  for (const p of procs) p.kill('SIGKILL');
  await dispatcher.close();
  latencies.sort((a, b) => a - b);
  const pct = (q: number): number => Number(latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))]!.toFixed(1));
  return { layout, requestsPerSecond: Math.round(latencies.length / seconds), p50Ms: pct(0.5), p99Ms: pct(0.99), cpuPct: cpu, loadgenCpuPct, failed };
}

const rows = [await run('serve'), await run('forward')];
console.log(`HTTP floor: 3 fastify processes with nothing behind them, ${CLIENTS} clients, 1 KiB JSON bodies, ${cpus().length} cores shared with this load generator`);
console.log('| layout | requests/s | p50 ms | p99 ms | CPU % per process | load generator CPU % |');
console.log('|---|---:|---:|---:|---|---:|');
for (const r of rows) console.log(`| ${String(r.layout)} | ${(r.requestsPerSecond as number).toLocaleString('en')} | ${String(r.p50Ms)} | ${String(r.p99Ms)} | ${(r.cpuPct as number[]).join(' / ')} | ${String(r.loadgenCpuPct)} |`);
writeFileSync(join(root, 'bench', 'results', 'http-floor.json'), JSON.stringify({ when: new Date().toISOString(), cpus: cpus().length, clients: CLIENTS, seconds: SECONDS, rows }, null, 2) + '\n');
