// `npm run bench:split [-- --seconds 10 --rounds 2]`: where a single send's CPU goes, by node and by
// kind of request, with wrk against ONE node at a time (20 connections), so that each figure has a
// single cause:
//
//   GET /healthz                  HTTP alone through fastify: no token, no route work
//   GET /v1/auth/me               plus the bearer token's check
//   send to the leader            a 1 KiB single send to the node that leads the queue's partition:
//                                 the leader's column is HTTP in + propose + log + replication + apply,
//                                 each follower's is what replicating and applying costs it
//   send to a follower            the same send to a node that forwards it to the leader
//
// The two sends alternate for --rounds rounds (default 2), so that drift shows. Before them a warm-up
// of --warmup seconds (default 15) of sends to the leader, so that the JIT has settled.
//
// CPU is read from /proc (user + system) for each node before and after a phase, split into the
// main thread (JavaScript, SQLite, and the kernel work of its system calls) and the process's other
// threads (V8's garbage collector and compiler, libuv's pool: the log's fdatasync). Raft batches
// between nodes per request (frames of Raft streams, or POSTs) are counted from each node's /metrics
// (mom_peer_batches_total). Prints a table; writes bench/results/split.json.
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { partitionOf } from '../src/partition/routing.js';
import { benchUser, json, startNodes, stopNodes, type BenchNode } from './cluster.js';
import { requireWrk } from './wrk.js';
import { numberArg } from './args.js';

const root = join(import.meta.dirname, '..');
const SECONDS = numberArg('seconds', 10);
const ROUNDS = numberArg('rounds', 2);
const WARMUP = numberArg('warmup', 15);
const CONNECTIONS = 20;
const QUEUE = 'split';
const CLK_TCK = 100;

interface Cpu {
  main: number;
  others: number;
}

/** A thread's or a process's user + system CPU, in clock ticks. */
function ticks(statPath: string): number {
  const f = readFileSync(statPath, 'utf8').split(') ')[1]!.split(' ');
  return Number(f[11]) + Number(f[12]);
}

function cpuOf(pid: number): Cpu {
  const all = ticks(`/proc/${pid}/stat`);
  const main = ticks(`/proc/${pid}/task/${pid}/stat`);
  return { main, others: all - main };
}

async function raftBatches(nodes: BenchNode[]): Promise<number> {
  let n = 0;
  for (const node of nodes) {
    const text = await (await fetch(`${node.url}/metrics`)).text();
    for (const line of text.split('\n')) if (line.startsWith('mom_peer_batches_total ')) n += Number(line.split(' ').pop());
  }
  return n;
}

interface Row {
  request: string;
  node: string;
  role: 'leader' | 'follower' | '-';
  requestsPerSecond: number;
  /** Per node, in the nodes' order: main thread and other threads, µs per request. */
  cpuUsPerRequest: { node: string; main: number; others: number }[];
  totalUsPerRequest: number;
  raftBatchesPerRequest: number;
  non2xx: number;
}

async function phase(nodes: BenchNode[], token: string, label: string, target: BenchNode, role: Row['role'], path: string, send: boolean, seconds: number): Promise<Row> {
  const batches0 = await raftBatches(nodes);
  const before = nodes.map((n) => cpuOf(n.proc.pid!));
  const args = ['-t1', `-c${CONNECTIONS}`, `-d${seconds}s`, '--timeout', '15s', '-H', `Authorization: Bearer ${token}`];
  if (send) args.push('-s', join('bench', 'wrk', 'send.lua'));
  args.push(`${target.url}${path}`);
  if (send) args.push('--', '1');
  const out = execFileSync('wrk', args, { cwd: root, encoding: 'utf8', env: { ...process.env, LUA_PATH: 'bench/wrk/?.lua;;', MOM_BENCH_TOKEN: token } });
  const after = nodes.map((n) => cpuOf(n.proc.pid!));
  const batches = (await raftBatches(nodes)) - batches0;
  const requests = Number(/(\d+) requests in/.exec(out)?.[1] ?? 0);
  const non2xx = send ? Object.entries(JSON.parse(/WRK_RESULT (.*)/.exec(out)![1]!).statuses as Record<string, number>).reduce((a, [s, n]) => a + (s.startsWith('2') ? 0 : n), 0) : Number(/Non-2xx or 3xx responses: (\d+)/.exec(out)?.[1] ?? 0);
  const us = (t: number): number => Math.round((t * 1e6) / CLK_TCK / Math.max(1, requests));
  const cpu = nodes.map((n, i) => ({ node: n.id, main: us(after[i]!.main - before[i]!.main), others: us(after[i]!.others - before[i]!.others) }));
  return {
    request: label,
    node: target.id,
    role,
    requestsPerSecond: Math.round(requests / seconds),
    cpuUsPerRequest: cpu,
    totalUsPerRequest: cpu.reduce((a, c) => a + c.main + c.others, 0),
    raftBatchesPerRequest: Number((batches / Math.max(1, requests)).toFixed(3)),
    non2xx,
  };
}

function print(r: Row): void {
  const perNode = r.cpuUsPerRequest.map((c) => `${c.node} ${c.main}+${c.others}`).join(' / ');
  console.log(`| ${r.request} | ${r.node} (${r.role}) | ${r.requestsPerSecond.toLocaleString('en')} | ${perNode} | ${r.totalUsPerRequest} | ${r.raftBatchesPerRequest} | ${r.non2xx} |`);
}

async function main(): Promise<void> {
  const wrk = requireWrk();
  const dir = mkdtempSync(join(tmpdir(), 'mom-bench-split-'));
  const nodes = await startNodes(dir, {}, (u) => fetch(`${u}/readyz`).then((r) => r.status === 200, () => false));
  const rows: Row[] = [];
  try {
    const u = nodes[0]!.url;
    const token = await benchUser(u);
    if ((await json('POST', `${u}/v1/queues`, { name: QUEUE }, token)).status !== 201) throw new Error('could not create the queue');
    // leaders settle on their preferred nodes (the balancer) before the leader is looked up
    await new Promise((r) => setTimeout(r, 3_000));
    const cluster = (await json('GET', `${u}/v1/cluster`, undefined, token)).body as { partitionCount: number; partitions: { partition: number; leader: string | null }[] };
    const partition = partitionOf(QUEUE, cluster.partitionCount);
    const leaderId = cluster.partitions.find((p) => p.partition === partition)?.leader;
    const leader = nodes.find((n) => n.id === leaderId);
    const follower = nodes.find((n) => n.id !== leaderId);
    if (leader === undefined || follower === undefined) throw new Error(`partition ${partition} has no leader`);
    const send = `/v1/queues/${QUEUE}/messages`;
    await phase(nodes, token, 'warm-up', leader, 'leader', send, true, WARMUP);

    console.log(`\nCPU µs per request, each node as main thread + other threads (wrk, ${CONNECTIONS} connections to one node, ${SECONDS} s per row)\n`);
    console.log('| request | to node | req/s | CPU µs per request, per node (main + others) | CPU µs, 3 nodes | Raft batches per request | non-2xx |');
    console.log('|---|---|---:|---|---:|---:|---:|');
    for (const [label, path] of [
      ['GET /healthz', '/healthz'],
      ['GET /v1/auth/me', '/v1/auth/me'],
    ] as const) {
      const r = await phase(nodes, token, label, leader, '-', path, false, SECONDS);
      rows.push(r);
      print(r);
    }
    for (let round = 0; round < ROUNDS; round++) {
      for (const [label, target, role] of [
        ['send 1 KiB, to the leader', leader, 'leader'],
        ['send 1 KiB, to a follower', follower, 'follower'],
      ] as const) {
        const r = await phase(nodes, token, label, target, role, send, true, SECONDS);
        rows.push(r);
        print(r);
      }
    }
  } finally {
    await stopNodes(nodes);
    rmSync(dir, { recursive: true, force: true });
  }
  const out = join(root, 'bench', 'results', 'split.json');
  mkdirSync(join(root, 'bench', 'results'), { recursive: true });
  writeFileSync(
    out,
    JSON.stringify({ benchmark: 'split', command: `npm run bench:split${process.argv.length > 2 ? ` -- ${process.argv.slice(2).join(' ')}` : ''}`, date: new Date().toISOString(), machine: `${cpus().length} × ${cpus()[0]?.model ?? 'cpu'}`, node: process.version, wrk, connections: CONNECTIONS, seconds: SECONDS, rows }, null, 2) + '\n',
  );
  console.log(`\nwrote ${out}`);
  process.exit(0);
}

await main();
