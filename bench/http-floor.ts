// `npm run bench:http-floor [-- --seconds 15] [--vs nats --peers DIR]`: the ceiling a replicated HTTP
// broker of this shape can reach on this machine. Three processes (bench/http-floor-server.mjs) run
// fastify with only the minimum behind it, in four layouts: `serve` (HTTP alone), `forward` (two
// thirds of the requests passed to process 0 over a socket and answered back, as a node forwards a
// write to its partition's leader), `replicate` (and process 0 sends each turn's bodies to the other
// two and answers once one acknowledged), `replicate-fsync` (and each process appends them to a file
// and fdatasyncs before it counts); the last two again with their links in HTTP streams (a POST
// through undici, as the broker's Raft streams are) instead of plain sockets. Driven as `npm run
// bench` drives send-1: wrk with bench/wrk/send.lua, 1 KiB bodies, 21 connections per process, one
// request per message. With `--vs nats` the NATS peer runs in the same invocation and each layout's
// rate is put against its 64 publishers awaiting their acks. The processes run on Node's defaults;
// MOM_BENCH_NODE_ARGS (environment, space-separated) gives them options, as `npm run bench` gives its
// nodes. Each run reports, as `npm run bench` does per node: CPU µs per message (and the three
// processes' split between user space and the kernel), read and write system calls and context
// switches per message, and peak RSS. Prints a table; writes bench/results/http-floor.json.
import { fork, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from '../test/cluster/net-helpers.js';
import { numberArg } from './args.js';
import { runNatsPeer, type PeerResult } from './nats.js';
import { peersDir } from './peers.js';
import { CLK_TCK, cpuSecondsSince, cpuTicksSplit, ioCalls, rssMb, switches, switchesSince } from './proc.js';
import { pooledQuantileUs, requireWrk, runWrk, sumWrk } from './wrk.js';

const root = join(import.meta.dirname, '..');
const argv = process.argv.slice(2);
const SECONDS = numberArg('seconds', 15);
const WARM_UP_SECONDS = 3;
const CONNECTIONS_PER_PROCESS = 21;
type Layout = 'serve' | 'forward' | 'replicate' | 'replicate-fsync';
/** Each layout over plain sockets, then the replicating ones over HTTP streams (LINK=http). */
const RUNS: { layout: Layout; link: 'tcp' | 'http' }[] = [
  { layout: 'serve', link: 'tcp' },
  { layout: 'forward', link: 'tcp' },
  { layout: 'replicate', link: 'tcp' },
  { layout: 'replicate-fsync', link: 'tcp' },
  { layout: 'replicate', link: 'http' },
  { layout: 'replicate-fsync', link: 'http' },
];
const VS_NATS = argv.some((a, i) => a === '--vs' && argv[i + 1] === 'nats');

interface Row {
  layout: Layout;
  link: 'tcp' | 'http';
  messagesPerSecond: number;
  p50Ms: number;
  p99Ms: number;
  /** Each process's, the three together's, and the three together's split between user space and the kernel. */
  cpuUsPerMessage: { perProcess: number[]; total: number; user: number; kernel: number };
  /** VmRSS of each process at its highest, sampled every 100 ms over the measured run. */
  peakRssMb: number[];
  /** Per process and message: read- and write-family system calls, and context switches of its threads (bench/proc.ts), as `npm run bench` counts them per node. */
  ioCallsPerMessage: number[];
  switchesPerMessage: number[];
  loadGeneratorCpuUsPerMessage: number;
  non2xx: number;
}

/** Process 0 first (the others connect to it), then 1 and 2; resolves once all three listen. */
async function start(layout: Layout, link: 'tcp' | 'http', dir: string): Promise<{ urls: string[]; procs: ChildProcess[] }> {
  const ports = [await freePort(), await freePort(), await freePort()];
  const linkPort = await freePort();
  const procs: ChildProcess[] = [];
  for (let role = 0; role < 3; role++) {
    const child = fork(join(root, 'bench', 'http-floor-server.mjs'), [], {
      env: { ...process.env, PORT: String(ports[role]), ROLE: String(role), LAYOUT: layout, LINK: link, LINK_PORT: String(linkPort), LEADER_PORT: String(ports[0]), FILE: join(dir, `p${role}.log`) },
      // Node's defaults, unless MOM_BENCH_NODE_ARGS (as for `npm run bench`) gives options, such as the nodes' own heap options.
      execArgv: (process.env.MOM_BENCH_NODE_ARGS ?? '').split(' ').filter(Boolean),
      stdio: ['ignore', 'ignore', 'inherit', 'ipc'],
    });
    procs.push(child);
    await new Promise((r) => child.once('message', r));
  }
  return { urls: ports.map((p) => `http://127.0.0.1:${p}`), procs };
}

async function run(layout: Layout, link: 'tcp' | 'http'): Promise<Row> {
  const dir = mkdtempSync(join(tmpdir(), 'mom-http-floor-'));
  const { urls, procs } = await start(layout, link, dir);
  try {
    const jobs = urls.map((u) => ({ url: `${u}/v1/queues/floor/messages`, script: 'send' as const, args: [1], connections: CONNECTIONS_PER_PROCESS }));
    await runWrk(jobs, WARM_UP_SECONDS, 'floor');
    const before = procs.map((p) => cpuTicksSplit(p.pid!));
    const calls0 = procs.map((p) => ioCalls(p.pid!));
    const switches0 = procs.map((p) => switches(p.pid!));
    const peakRssMb = procs.map(() => 0);
    const sampler = setInterval(() => procs.forEach((p, i) => (peakRssMb[i] = Math.max(peakRssMb[i]!, rssMb(p.pid!)))), 100);
    const runs = await runWrk(jobs, SECONDS, 'floor').finally(() => clearInterval(sampler));
    const used = procs.map((p, i) => cpuSecondsSince(p.pid!, before[i]!));
    const seconds = used.map((u) => u.user + u.kernel);
    const calls = procs.map((p, i) => ioCalls(p.pid!) - calls0[i]!);
    const switched = procs.map((p, i) => switchesSince(p.pid!, switches0[i]!));
    const sum = sumWrk(runs);
    const us = (cpuSeconds: number): number => Math.round((cpuSeconds * 1e6) / Math.max(1, sum.messages));
    const perMessage = (n: number): number => Number((n / Math.max(1, sum.messages)).toFixed(2));
    return {
      layout,
      link,
      messagesPerSecond: Math.round(sum.messages / sum.seconds),
      p50Ms: Number((pooledQuantileUs(runs, 0.5) / 1000).toFixed(1)),
      p99Ms: Number((pooledQuantileUs(runs, 0.99) / 1000).toFixed(1)),
      cpuUsPerMessage: { perProcess: seconds.map(us), total: us(seconds.reduce((a, b) => a + b, 0)), user: us(used.reduce((a, u) => a + u.user, 0)), kernel: us(used.reduce((a, u) => a + u.kernel, 0)) },
      peakRssMb: peakRssMb.map(Math.round),
      ioCallsPerMessage: calls.map((c) => perMessage(c)),
      switchesPerMessage: switched.map((c) => perMessage(c)),
      loadGeneratorCpuUsPerMessage: us(sum.cpuTicks / CLK_TCK),
      non2xx: sum.non2xx + sum.socketErrors,
    };
  } finally {
    for (const p of procs) p.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  }
}

requireWrk();
const peers = VS_NATS ? peersDir(argv) : '';
const rows: Row[] = [];
for (const { layout, link } of RUNS) rows.push(await run(layout, link));
let nats: { result: PeerResult; messagesPerSecond: number; cpuUsPerMessage: number | null } | null = null;
if (VS_NATS) {
  const result = await runNatsPeer(peers);
  const phase = result.runs.find((r) => r.mode === 'default')?.sync_publish;
  if (phase !== undefined && phase.msgs_per_s > 0) {
    nats = { result, messagesPerSecond: phase.msgs_per_s, cpuUsPerMessage: phase.servers_cpu_cores === undefined ? null : Math.round((phase.servers_cpu_cores * 1e6) / phase.msgs_per_s) };
  }
}

const when = new Date().toISOString();
console.log(`HTTP floor (${when}): 3 processes with only the minimum behind fastify${process.env.MOM_BENCH_NODE_ARGS ? ` (Node options: ${process.env.MOM_BENCH_NODE_ARGS})` : ''}, wrk with bench/wrk/send.lua, ${CONNECTIONS_PER_PROCESS} connections per process, 1 KiB bodies, one message per request, ${SECONDS} s after ${WARM_UP_SECONDS} s of warm-up, ${cpus().length} cores`);
console.log(`| layout | links | msg/s | p50 ms | p99 ms | CPU µs/msg per process | CPU µs/msg, 3 processes (user; kernel) | I/O calls; context switches per msg per process | peak RSS MB per process | wrk CPU µs/msg | non-2xx |${nats === null ? '' : ' vs NATS msg/s |'}`);
console.log(`|---|---|---:|---:|---:|---|---:|---|---|---:|---:|${nats === null ? '' : '---:|'}`);
for (const r of rows) {
  const ratio = nats === null ? '' : ` ${(r.messagesPerSecond / nats.messagesPerSecond).toFixed(2)}× |`;
  console.log(`| ${r.layout} | ${r.layout === 'serve' ? '' : r.link === 'tcp' ? 'plain sockets' : 'HTTP streams'} | ${r.messagesPerSecond.toLocaleString('en')} | ${r.p50Ms} | ${r.p99Ms} | ${r.cpuUsPerMessage.perProcess.join(' / ')} | ${r.cpuUsPerMessage.total} (${r.cpuUsPerMessage.user}; ${r.cpuUsPerMessage.kernel}) | ${r.ioCallsPerMessage.join(' / ')}; ${r.switchesPerMessage.join(' / ')} | ${r.peakRssMb.join(' / ')} | ${r.loadGeneratorCpuUsPerMessage} | ${r.non2xx} |${ratio}`);
}
if (nats !== null) console.log(`NATS JetStream ${nats.result.nats_server} (default mode, 64 publishers awaiting each ack), same invocation: ${nats.messagesPerSecond.toLocaleString('en')} msg/s at ${nats.cpuUsPerMessage ?? '?'} µs of server CPU per message`);
writeFileSync(
  join(root, 'bench', 'results', 'http-floor.json'),
  JSON.stringify({ when, nodeArgs: process.env.MOM_BENCH_NODE_ARGS ?? '', command: `npm run bench:http-floor${argv.length > 0 ? ` -- ${argv.map((a, i) => (argv[i - 1] === '--peers' ? 'DIR' : a)).join(' ')}` : ''}`, cpus: cpus().length, seconds: SECONDS, connectionsPerProcess: CONNECTIONS_PER_PROCESS, rows, nats: nats === null ? null : { server: nats.result.nats_server, messagesPerSecond: nats.messagesPerSecond, cpuUsPerMessage: nats.cpuUsPerMessage } }, null, 2) + '\n',
);
