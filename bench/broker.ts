// `npm run bench [-- --quick] [-- --seconds S --backlog N]`: the broker's throughput, latency and cost
// per message, measured as its peers are. It starts a local three-node cluster (the bundle of
// src/main.ts, fresh data folders, default settings: every 2xx means fsynced on a majority and
// applied; bench/cluster.ts), sets it up from this process (user, queues, topic), and drives HTTP with
// wrk (bench/wrk.ts, Lua scripts in bench/wrk/): one wrk process per node, in parallel, 1 KiB bodies.
//
//   send-1          one message per request; 63 connections (21 per node)
//   send-100        batches of 100; 15 connections
//   receive-ack-10  receive up to 10, then ack them in one request; 15 connections; drains what send-1 sent
//   receive-ack-100 the same with 100; 9 connections; drains what send-100 sent
//   publish-3       topic publish, one per request, 63 connections; the topic has 3 subscriptions
//   drain-3         the 3 subscriptions drained with receive+ack of 100; 27 connections (3 per node and subscription)
//   wake-up         a measurement of its own, from this process: 8 long polls wait on a queue, one sender
//                   sends every 10 ms; the time from the send's 2xx to a waiting receiver having it
//   backlog-fill    batches of 100 until the backlog queue holds --backlog messages (default 1,000,000)
//   send-1-backlog  send-1 again, on that queue
//
// For each: messages per second (acknowledged: 2xx answers times the messages each carried), latency
// p50/p99/p999 per request (wrk's), CPU µs per message of each node and of the three (/proc/<pid>/stat
// before and after), bytes written to storage per message by each node (/proc/<pid>/io write_bytes),
// peak RSS of each node (VmRSS every 100 ms), non-2xx answers and requests with no answer, and the load
// generator's own CPU. Writes bench/results/bench.{json,md,svg}. --quick: 5 s phases, a 50,000 backlog.
// --only a,b runs only those workloads (and what they drain); no files are written. --profile runs the
// nodes with --cpu-prof and prints where their time went by area and by stage (bench/profile.ts);
// profiles kept under data/profiles/. --vs nats, --vs rabbitmq (either or both) then run the peers'
// harnesses (bench/nats.ts, bench/rabbitmq.ts) and print the ratios; their harnesses are not part of
// this repository: --peers DIR (or MOM_PEERS_DIR) names the folder that holds nats/ and rabbitmq/.
// MOM_BENCH_NODE_ARGS (environment, space-separated) are options for Node on each node's command line:
// V8's heap options, which NODE_OPTIONS refuses; after the nodes' own (NODE_FLAGS), so they override them.
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, release, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import { Agent, request } from 'undici';
import { startNodes, stopNodes, type BenchNode as Node } from './cluster.js';
import { compare, comparisonMarkdown, runNatsPeer, type PeerResult } from './nats.js';
import { peersDir, type Comparison } from './peers.js';
import { analyze, resolver } from './profile.js';
import { compareRabbit, rabbitMarkdown, runRabbitPeer, type RabbitResult } from './rabbitmq.js';
import { pooledQuantileUs, requireWrk, runWrk, sumWrk, type WrkJob } from './wrk.js';
import { numberArg } from './args.js';
import { CLK_TCK, cpuSecondsSince, cpuTicksSplit, ioCalls, rssMb, switches, switchesSince, writtenBytes } from './proc.js';

const root = join(import.meta.dirname, '..');
const argv = process.argv.slice(2);
const has = (flag: string): boolean => argv.includes(`--${flag}`);
const QUICK = has('quick');
const PEERS = ['nats', 'rabbitmq'] as const;
type Peer = (typeof PEERS)[number];
/** --vs nats --vs rabbitmq, or --vs nats,rabbitmq. */
const VS: Peer[] = argv.flatMap((a, i) => (a === '--vs' ? (argv[i + 1] ?? '').split(',') : [])).map((p) => {
  if (!(PEERS as readonly string[]).includes(p)) throw new Error(`--vs: the peers are ${PEERS.join(' and ')}, got '${p}'`);
  return p as Peer;
});
const PROFILE = has('profile');
const ONLY = (() => {
  const i = argv.indexOf('--only');
  return i < 0 ? null : new Set(argv[i + 1]!.split(','));
})();
const runs = (w: string): boolean => ONLY === null || ONLY.has(w);
const SECONDS = numberArg('seconds', QUICK ? 5 : 20);
const BACKLOG = numberArg('backlog', QUICK ? 50_000 : 1_000_000);
const BODY = 'x'.repeat(1024);

// ---- setup over HTTP from this process (not measured) ----

const dispatcher = new Agent({ connections: 32, pipelining: 1, keepAliveTimeout: 30_000 });

interface Res {
  status: number;
  body: unknown;
}

async function call(method: string, url: string, body?: unknown, token?: string): Promise<Res> {
  const headers: Record<string, string> = {};
  if (body !== undefined) headers['content-type'] = 'application/json';
  if (token !== undefined) headers.authorization = `Bearer ${token}`;
  const res = await request(url, { method: method as 'POST', headers, dispatcher, ...(body === undefined ? {} : { body: JSON.stringify(body) }) });
  const text = await res.body.text();
  let parsed: unknown = text;
  try {
    parsed = text.length > 0 ? JSON.parse(text) : null;
  } catch {
    // text
  }
  return { status: res.statusCode, body: parsed };
}

async function must(method: string, url: string, body: unknown, token: string | undefined, ok: number): Promise<Res> {
  const r = await call(method, url, body, token);
  if (r.status !== ok) throw new Error(`${method} ${url}: ${r.status} ${JSON.stringify(r.body).slice(0, 300)}`);
  return r;
}

// ---- what the nodes use over a phase ----

async function syncs(nodes: Node[]): Promise<number> {
  let n = 0;
  for (const node of nodes) {
    const r = await call('GET', `${node.url}/metrics`);
    const m = /^mom_raft_log_syncs_total (\d+)/m.exec(String(r.body));
    n += m === null ? 0 : Number(m[1]);
  }
  return n;
}

/** The machine's busy cores over a second (all processes), from /proc/stat. */
async function busyCores(): Promise<number> {
  const read = (): number[] => readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number);
  const a = read();
  await new Promise((r) => setTimeout(r, 1_000));
  const b = read();
  const d = b.map((x, i) => x - a[i]!);
  const idle = d[3]! + d[4]!; // idle, iowait
  const all = d.slice(0, 8).reduce((s, x) => s + x, 0);
  return Number(((all - idle) / CLK_TCK).toFixed(2));
}

interface Measured<T> {
  result: T;
  wallSeconds: number;
  /** Per node, CPU seconds (user + system) over the phase. */
  nodeCpuSeconds: number[];
  /** All nodes together, CPU seconds in user space and in the kernel over the phase. */
  userSeconds: number;
  kernelSeconds: number;
  /** Per node, bytes written to storage over the phase. */
  writtenBytes: number[];
  /** Per node, the largest resident set seen, MB. */
  peakRssMb: number[];
  /** Per node, read and write system calls over the phase. */
  ioCalls: number[];
  /** Per node, context switches over the phase of the threads alive at its end (those of a thread that ended during it are lost). */
  switches: number[];
  fsyncs: number;
  /** This process's own CPU seconds over the phase (the load generator of the wake-up measurement). */
  selfCpuSeconds: number;
}

/** Runs `work` while sampling the nodes; answers its result and the nodes' usage over it. */
async function measured<T>(nodes: Node[], work: () => Promise<T>): Promise<Measured<T>> {
  const pids = nodes.map((n) => n.proc.pid!);
  const peak = pids.map(rssMb);
  const timer = setInterval(() => pids.forEach((p, i) => (peak[i] = Math.max(peak[i]!, rssMb(p)))), 100);
  try {
    const syncs0 = await syncs(nodes);
    const ticks0 = pids.map(cpuTicksSplit);
    const written0 = pids.map((p) => writtenBytes(p));
    const calls0 = pids.map(ioCalls);
    const switches0 = pids.map(switches);
    const self0 = process.cpuUsage();
    const t0 = performance.now();
    const result = await work();
    const wallSeconds = (performance.now() - t0) / 1000;
    const self = process.cpuUsage(self0);
    const used = pids.map((p, i) => cpuSecondsSince(p, ticks0[i]!));
    const nodeCpuSeconds = used.map((u) => u.user + u.kernel);
    const userSeconds = used.reduce((a, u) => a + u.user, 0);
    const kernelSeconds = used.reduce((a, u) => a + u.kernel, 0);
    const written = pids.map((p, i) => writtenBytes(p) - written0[i]!);
    const calls = pids.map((p, i) => ioCalls(p) - calls0[i]!);
    const switched = pids.map((p, i) => switchesSince(p, switches0[i]!));
    const fsyncs = (await syncs(nodes)) - syncs0;
    return { result, wallSeconds, nodeCpuSeconds, userSeconds, kernelSeconds, writtenBytes: written, peakRssMb: peak.map((x) => Math.round(x)), ioCalls: calls, switches: switched, fsyncs, selfCpuSeconds: (self.user + self.system) / 1e6 };
  } finally {
    clearInterval(timer);
  }
}

// ---- rows ----

interface Row {
  workload: string;
  what: string;
  /** What drove it: wrk, or this process (the wake-up measurement). */
  driver: 'wrk' | 'node';
  connections: number;
  /** Messages acknowledged: 2xx answers times the messages each carried (acks: the messages acked). */
  messages: number;
  seconds: number;
  messagesPerSecond: number;
  requests: number;
  /** Answers with a status outside 2xx. */
  non2xx: number;
  statuses: Record<string, number>;
  /** Requests with no answer: socket errors and timeouts (15 s). */
  noAnswer: number;
  /** Receipt handles that acks answered with 2xx listed as failed. */
  ackFailed: number;
  p50Ms: number;
  p99Ms: number;
  p999Ms: number;
  /**
   * CPU (user + system) per acknowledged message, µs: each node's and the three together, and the
   * three together's split between user space and the kernel.
   */
  cpuUsPerMessage: { perNode: number[]; total: number; user: number; kernel: number };
  /** Each node's CPU over the phase, in cores. */
  nodeCpuCores: number[];
  /** Bytes each node wrote to storage per acknowledged message. */
  diskBytesPerMessage: number[];
  /** Per node and acknowledged message: read and write system calls, and context switches. Counts, which drift far less with the machine's speed than CPU time does. */
  ioCallsPerMessage: number[];
  switchesPerMessage: number[];
  peakRssMb: number[];
  fsyncsPerSecond: number;
  /** The load generator's own CPU: wrk's processes, or this process for the wake-up measurement. */
  loadGenerator: { cpuUsPerMessage: number; cores: number };
  /** Why the phase ended before its time (the backlog filled, the queue drained). */
  endedEarly?: string;
  commands: string[];
  /** Each wrk process's own figures (a node's leaderships make its latencies differ from the others'). */
  wrkProcesses?: { target: string; requests: number; messages: number; p50Ms: number; p99Ms: number; cpuTicks: number }[];
}

interface Load {
  messages: number;
  requests: number;
  non2xx: number;
  statuses: Record<string, number>;
  noAnswer: number;
  ackFailed: number;
  seconds: number;
  latencyMs: { p50: number; p99: number; p999: number };
  loadGeneratorCpuSeconds: number;
  endedEarly?: string;
}

/** µs per message: whole above 10, one decimal below (the load generator's figures are small). */
const perMessageUs = (cpuSeconds: number, messages: number): number => {
  const us = messages === 0 ? 0 : (cpuSeconds * 1e6) / messages;
  return us >= 10 ? Math.round(us) : Number(us.toFixed(1));
};
/** A count per message, to two decimals. */
const perMessage = (count: number, messages: number): number => (messages === 0 ? 0 : Number((count / messages).toFixed(2)));
const ms = (us: number): number => Number((us / 1000).toFixed(1));

function makeRow(head: Pick<Row, 'workload' | 'what' | 'driver' | 'connections' | 'commands' | 'wrkProcesses'>, load: Load, m: Measured<unknown>): Row {
  const n = load.messages;
  const perNode = m.nodeCpuSeconds.map((s) => perMessageUs(s, n));
  return {
    ...head,
    messages: n,
    seconds: Number(load.seconds.toFixed(1)),
    messagesPerSecond: load.seconds === 0 ? 0 : Math.round(n / load.seconds),
    requests: load.requests,
    non2xx: load.non2xx,
    statuses: load.statuses,
    noAnswer: load.noAnswer,
    ackFailed: load.ackFailed,
    p50Ms: load.latencyMs.p50,
    p99Ms: load.latencyMs.p99,
    p999Ms: load.latencyMs.p999,
    cpuUsPerMessage: { perNode, total: perMessageUs(m.nodeCpuSeconds.reduce((a, b) => a + b, 0), n), user: perMessageUs(m.userSeconds, n), kernel: perMessageUs(m.kernelSeconds, n) },
    nodeCpuCores: m.nodeCpuSeconds.map((s) => Number((s / m.wallSeconds).toFixed(2))),
    diskBytesPerMessage: m.writtenBytes.map((b) => (n === 0 ? 0 : Math.round(b / n))),
    ioCallsPerMessage: m.ioCalls.map((c) => perMessage(c, n)),
    switchesPerMessage: m.switches.map((c) => perMessage(c, n)),
    peakRssMb: m.peakRssMb,
    fsyncsPerSecond: Math.round(m.fsyncs / m.wallSeconds),
    loadGenerator: { cpuUsPerMessage: perMessageUs(load.loadGeneratorCpuSeconds, n), cores: Number((load.loadGeneratorCpuSeconds / m.wallSeconds).toFixed(2)) },
    ...(load.endedEarly === undefined ? {} : { endedEarly: load.endedEarly }),
  };
}

function printRow(r: Row): void {
  const lg = `${r.driver === 'wrk' ? 'wrk' : 'this process'} ${r.loadGenerator.cpuUsPerMessage} µs/msg (${r.loadGenerator.cores} cores)`;
  console.log(
    `${r.workload.padEnd(16)} ${String(r.messagesPerSecond).padStart(7)} msg/s  p50 ${r.p50Ms} p99 ${r.p99Ms} p999 ${r.p999Ms} ms  cpu ${r.cpuUsPerMessage.perNode.join('/')} = ${r.cpuUsPerMessage.total} µs/msg (user ${r.cpuUsPerMessage.user}, kernel ${r.cpuUsPerMessage.kernel})  disk ${r.diskBytesPerMessage.join('/')} B/msg  io calls ${r.ioCallsPerMessage.join('/')}  switches ${r.switchesPerMessage.join('/')} /msg  rss ${r.peakRssMb.join('/')} MB  non-2xx ${r.non2xx}  no answer ${r.noAnswer}${r.ackFailed === 0 ? '' : `  ack failed ${r.ackFailed}`}  load generator ${lg}${r.endedEarly === undefined ? '' : `  (${r.endedEarly})`}`,
  );
}

// ---- the workloads ----

class Bench {
  rows: Row[] = [];

  constructor(
    readonly nodes: Node[],
    readonly token: string,
  ) {}

  /** One wrk process per node on `path`. */
  perNode(path: string, script: WrkJob['script'], args: (string | number)[], connections: number): WrkJob[] {
    return this.nodes.map((n) => ({ url: `${n.url}${path}`, script, args, connections }));
  }

  /** Runs the wrk processes together for up to `seconds` and adds the phase's row. */
  async wrk(workload: string, what: string, jobs: WrkJob[], seconds: number, keep = true): Promise<Row> {
    // let the nodes finish what the previous phase left (answers to requests cut off, applies)
    await new Promise((r) => setTimeout(r, 1_000));
    const m = await measured(this.nodes, () => runWrk(jobs, seconds, this.token));
    const sum = sumWrk(m.result);
    const early = m.result.filter((r) => r.finishedEarly).length;
    const load: Load = {
      ...sum,
      noAnswer: sum.socketErrors,
      latencyMs: { p50: ms(pooledQuantileUs(m.result, 0.5)), p99: ms(pooledQuantileUs(m.result, 0.99)), p999: ms(pooledQuantileUs(m.result, 0.999)) },
      loadGeneratorCpuSeconds: sum.cpuTicks / CLK_TCK,
      ...(early === 0 ? {} : { endedEarly: `${early} of ${jobs.length} wrk processes were done after ${sum.seconds.toFixed(1)} s` }),
    };
    const wrkProcesses = m.result.map((r, i) => ({
      target: jobs[i]!.url,
      requests: r.requests,
      messages: r.messages,
      p50Ms: ms(pooledQuantileUs([r], 0.5)),
      p99Ms: ms(pooledQuantileUs([r], 0.99)),
      cpuTicks: r.cpuTicks,
    }));
    const row = makeRow({ workload, what, driver: 'wrk', connections: jobs.reduce((n, j) => n + j.connections, 0), commands: m.result.map((r) => r.command), wrkProcesses }, load, m);
    if (keep) {
      this.rows.push(row);
      printRow(row);
    }
    return row;
  }

  /** Long polls waiting; one sender; per message: from the send's 2xx to a receiver holding it. */
  async wakeUp(queue: string, receivers: number, seconds: number): Promise<void> {
    const acked = new Map<string, number>();
    const got = new Map<string, number>();
    const statuses: Record<string, number> = {};
    let stop = false;
    let noAnswer = 0;
    await new Promise((r) => setTimeout(r, 1_000));
    const m = await measured(this.nodes, async () => {
      const waiting = Array.from({ length: receivers }, async (_, c) => {
        const url = this.nodes[c % this.nodes.length]!.url;
        while (!stop) {
          const r = await call('POST', `${url}/v1/queues/${queue}/receive`, { maxMessages: 1, waitSeconds: 2, visibilityTimeoutSeconds: 60 }, this.token).catch(() => null);
          const msgs = r?.status === 200 ? (r.body as { messages: { body: string; receiptHandle: string }[] }).messages : [];
          const now = performance.now();
          for (const x of msgs) {
            got.set(x.body, now);
            void call('POST', `${url}/v1/queues/${queue}/ack`, { receiptHandles: [x.receiptHandle] }, this.token).catch(() => null);
          }
        }
      });
      // let the polls arrive first
      await new Promise((r) => setTimeout(r, 500));
      let n = 0;
      const t0 = performance.now();
      const end = Date.now() + seconds * 1000;
      while (Date.now() < end) {
        const body = `wake-${n}`;
        const r = await call('POST', `${this.nodes[n++ % this.nodes.length]!.url}/v1/queues/${queue}/messages`, { body }, this.token).catch(() => null);
        if (r === null) noAnswer++;
        else statuses[r.status] = (statuses[r.status] ?? 0) + 1;
        if (r?.status === 201) acked.set(body, performance.now());
        await new Promise((res) => setTimeout(res, 10));
      }
      const sendSeconds = (performance.now() - t0) / 1000;
      await new Promise((r) => setTimeout(r, 1_000));
      stop = true;
      await Promise.all(waiting);
      return { requests: n, sendSeconds };
    });
    const latencies = [...acked].flatMap(([b, t]) => (got.has(b) ? [Math.max(0, got.get(b)! - t)] : [])).sort((a, b) => a - b);
    const q = (p: number): number => Number((latencies[Math.min(latencies.length - 1, Math.floor(p * latencies.length))] ?? 0).toFixed(1));
    const missed = acked.size - latencies.length;
    const load: Load = {
      messages: acked.size,
      requests: m.result.requests,
      non2xx: Object.entries(statuses).reduce((s, [k, v]) => (k.startsWith('2') ? s : s + v), 0),
      statuses,
      noAnswer,
      ackFailed: 0,
      // messages per second over the sending; CPU, disk and the load generator over the whole phase
      seconds: m.result.sendSeconds,
      latencyMs: { p50: q(0.5), p99: q(0.99), p999: q(0.999) },
      loadGeneratorCpuSeconds: m.selfCpuSeconds,
      ...(missed === 0 ? {} : { endedEarly: `${missed} sent messages were not received within 1 s of the last send` }),
    };
    const what = `${receivers} long polls waiting (waitSeconds 2), one send every 10 ms round-robin over the nodes; latency from the send's 2xx to a receiver holding the message. Measured from this process (Node, undici), not wrk: it times two requests against each other`;
    const row = makeRow({ workload: 'wake-up', what, driver: 'node', connections: receivers + 1, commands: [] }, load, m);
    this.rows.push(row);
    printRow(row);
  }
}

// ---- output ----

const join3 = (xs: number[]): string => xs.map((x) => x.toLocaleString('en')).join(' / ');

/** The distinct command lines of a row, with the node's address left as <node>. */
const commandsOf = (r: Row): string[] => [...new Set(r.commands.map((c) => c.replace(/http:\/\/127\.0\.0\.1:\d+/, 'http://<node>')))];

function markdown(rows: Row[], meta: Meta): string {
  const lines = [
    `Measured ${meta.when} with \`${meta.command}\` on ${meta.machine.cpus} (${meta.machine.memoryGb} GB, Linux ${meta.machine.kernel}; busy ${meta.machine.busyCoresBefore} cores before the start, load average ${meta.machine.loadAverage}): three nodes and the load generator on one machine, 1 KiB bodies, ${meta.wrk}, one wrk process per node, every 2xx fsynced on a majority and applied.`,
    '',
    '| workload | msg/s | p50 ms | p99 ms | p999 ms | CPU µs/msg per node | CPU µs/msg, 3 nodes | disk bytes/msg per node | I/O calls; context switches per msg per node | peak RSS MB per node | non-2xx | no answer | load generator CPU µs/msg (cores) |',
    '|---|---:|---:|---:|---:|---|---:|---|---|---|---:|---:|---:|',
    ...rows.map(
      (r) =>
        `| ${r.workload} | ${r.messagesPerSecond.toLocaleString('en')} | ${r.p50Ms} | ${r.p99Ms} | ${r.p999Ms} | ${join3(r.cpuUsPerMessage.perNode)} | ${r.cpuUsPerMessage.total.toLocaleString('en')} | ${join3(r.diskBytesPerMessage)} | ${join3(r.ioCallsPerMessage)}; ${join3(r.switchesPerMessage)} | ${join3(r.peakRssMb)} | ${r.non2xx} | ${r.noAnswer} | ${r.loadGenerator.cpuUsPerMessage} (${r.loadGenerator.cores})${r.driver === 'node' ? ' Node' : ''} |`,
    ),
    '',
    ...rows.map((r) => `- **${r.workload}**: ${r.what}.${r.endedEarly === undefined ? '' : ` Ended early: ${r.endedEarly}.`}${r.ackFailed === 0 ? '' : ` Acks answered 2xx but listed ${r.ackFailed} handles as failed.`}${Object.keys(r.statuses).some((k) => !k.startsWith('2')) ? ` Statuses: ${JSON.stringify(r.statuses)}.` : ''}`),
    '',
    'wrk command lines (one process per node, all at once; `<node>` is each node in turn, `$TOKEN` the bench user\'s token):',
    '',
    ...rows.filter((r) => r.driver === 'wrk').flatMap((r) => commandsOf(r).map((c) => `- ${r.workload}: \`${c}\``)),
  ];
  return lines.join('\n') + '\n';
}

/** Two bar charts side by side: messages per second, and p50/p99 latency, per workload. */
function svg(rows: Row[], title: string): string {
  const rowH = 26;
  const top = 50;
  const labelW = 130;
  const barW = 300;
  const h = top + rows.length * rowH + 30;
  const w = labelW + barW * 2 + 160;
  const maxRate = Math.max(1, ...rows.map((r) => r.messagesPerSecond));
  const maxLat = Math.max(1, ...rows.map((r) => r.p99Ms));
  const esc = (s: string): string => s.replace(/&/g, '&amp;').replace(/</g, '&lt;');
  const parts = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${w}" height="${h}" font-family="sans-serif" font-size="12">`,
    `<rect width="100%" height="100%" fill="white"/>`,
    `<text x="10" y="20" font-size="14" font-weight="bold">${esc(title)}</text>`,
    `<text x="${labelW}" y="40">messages per second</text>`,
    `<text x="${labelW + barW + 60}" y="40">latency p50 (dark) and p99, ms</text>`,
  ];
  rows.forEach((r, k) => {
    const y = top + k * rowH;
    parts.push(`<text x="10" y="${y + 15}">${esc(r.workload)}</text>`);
    const rw = (r.messagesPerSecond / maxRate) * barW;
    parts.push(`<rect x="${labelW}" y="${y + 3}" width="${rw.toFixed(1)}" height="16" fill="#3b7dd8"/>`);
    parts.push(`<text x="${(labelW + rw + 4).toFixed(1)}" y="${y + 15}">${r.messagesPerSecond.toLocaleString('en')}</text>`);
    const lx = labelW + barW + 60;
    const p99 = (r.p99Ms / maxLat) * barW;
    const p50 = (r.p50Ms / maxLat) * barW;
    parts.push(`<rect x="${lx}" y="${y + 3}" width="${p99.toFixed(1)}" height="16" fill="#f0a848"/>`);
    parts.push(`<rect x="${lx}" y="${y + 3}" width="${p50.toFixed(1)}" height="16" fill="#b86a10"/>`);
    parts.push(`<text x="${(lx + p99 + 4).toFixed(1)}" y="${y + 15}">${r.p50Ms} / ${r.p99Ms}</text>`);
  });
  parts.push('</svg>');
  return parts.join('\n') + '\n';
}

interface Meta {
  when: string;
  command: string;
  machine: { cpus: string; memoryGb: number; kernel: string; busyCoresBefore: number; loadAverage: string };
  node: string;
  wrk: string;
  seconds: number;
  backlog: number;
  bodyBytes: number;
  totalSeconds: number;
}

/** Where each node's time went (bench/profile.ts), from the profiles of this run. */
function reportProfiles(profDir: string, nodes: Node[], fromMs: number): { node: string; file: string; fromSeconds: number; busySeconds: number; byStage: [string, number][]; byStageSystemCallsApart: [string, number][] }[] {
  const resolve = resolver(join(profDir, 'main.js.map'));
  const out = [];
  for (const f of readdirSync(profDir).filter((x) => x.endsWith('.cpuprofile'))) {
    const pid = Number(f.split('.')[3]); // CPU.<date>.<time>.<pid>.<thread>.<seq>.cpuprofile
    const node = nodes.find((n) => n.proc.pid === pid)?.id ?? `pid ${pid}`;
    const a = analyze(JSON.parse(readFileSync(join(profDir, f), 'utf8')), fromMs, resolve);
    const share = (x: number): number => Number(((x / a.busyMs) * 100).toFixed(1));
    const from = Number((fromMs / 1000).toFixed(1));
    console.log(`\n== ${node}: ${join(profDir, f)}: ${(a.totalMs / 1000).toFixed(1)} s sampled after its first ${from} s (start-up and set-up left out), ${(a.busyMs / 1000).toFixed(1)} s busy; shares of the busy time`);
    console.log('-- by area (self time)');
    for (const [k, x] of a.byArea.filter(([k]) => k !== '(idle)').slice(0, 15)) console.log(`${share(x).toFixed(1).padStart(5)}%  ${k}`);
    console.log('-- by stage (each sample charged to the nearest frame of ours on its stack, by its source file)');
    for (const [k, x] of a.byStage) console.log(`${share(x).toFixed(1).padStart(5)}%  ${k}`);
    console.log('-- by stage, system calls apart (what each stage spends in user space)');
    for (const [k, x] of a.byStageSystemCallsApart) console.log(`${share(x).toFixed(1).padStart(5)}%  ${k}`);
    out.push({ node, file: join(profDir, f), fromSeconds: from, busySeconds: Number((a.busyMs / 1000).toFixed(1)), byStage: a.byStage.map(([k, x]): [string, number] => [k, share(x)]), byStageSystemCallsApart: a.byStageSystemCallsApart.map(([k, x]): [string, number] => [k, share(x)]) });
  }
  console.log(`(details: npx tsx bench/profile.ts --from ${(fromMs / 1000).toFixed(1)} <file>; the bundle's source map is kept next to the profiles)`);
  return out;
}

// ---- main ----

async function main(): Promise<void> {
  const wrk = requireWrk();
  const peers = VS.length === 0 ? '' : peersDir(argv);
  for (const p of VS) if (!existsSync(join(peers, p, 'bench.sh'))) throw new Error(`--vs ${p}: no ${join(peers, p, 'bench.sh')}`);

  const busyBefore = await busyCores();
  const started = Date.now();
  const dir = mkdtempSync(join(tmpdir(), 'mom-bench-'));
  let rows: Row[] = [];
  let profiles: ReturnType<typeof reportProfiles> | null = null;
  const profDir = join(root, 'data', 'profiles', new Date().toISOString().replace(/[:.]/g, '-'));
  if (PROFILE) mkdirSync(profDir, { recursive: true });
  // the profiles start with the nodes; what comes before the first workload is left out of their summary
  const spawned = performance.now();
  let measuredFrom = spawned;
  const nodes = await startNodes(dir, {}, (u) => call('GET', `${u}/readyz`).then((r) => r.status === 200, () => false), [...(PROFILE ? ['--cpu-prof', '--cpu-prof-dir', profDir] : []), ...(process.env.MOM_BENCH_NODE_ARGS ?? '').split(' ').filter(Boolean)]);
  // the map of the bundle these nodes run, before anyone builds another
  if (PROFILE) copyFileSync(join(root, 'dist', 'main.js.map'), join(profDir, 'main.js.map'));
  try {
    const u = nodes[0]!.url;
    await must('POST', `${u}/v1/auth/register`, { username: 'bench', password: 'bench-password' }, undefined, 201);
    const token = ((await must('POST', `${u}/v1/auth/login`, { username: 'bench', password: 'bench-password' }, undefined, 200)).body as { accessToken: string }).accessToken;
    for (const q of ['b-warm', 'b-send1', 'b-send100', 'b-wake', 'b-backlog']) await must('POST', `${u}/v1/queues`, { name: q }, token, 201);
    await must('POST', `${u}/v1/topics`, { name: 'b-topic' }, token, 201);
    const subs = ['s1', 's2', 's3'];
    for (const s of subs) await must('POST', `${u}/v1/topics/b-topic/subscriptions`, { name: s }, token, 201);
    // leaders settle on their preferred nodes (the balancer), connections and JIT warm up
    await new Promise((r) => setTimeout(r, 2_000));
    const b = new Bench(nodes, token);
    measuredFrom = performance.now();
    await b.wrk('warm-up', 'warm-up', b.perNode('/v1/queues/b-warm/messages', 'send', [1], 5), 2, false);

    if (runs('send-1') || runs('receive-ack-10')) await b.wrk('send-1', 'send, one message per request, 63 connections (21 per node)', b.perNode('/v1/queues/b-send1/messages', 'send', [1], 21), SECONDS);
    if (runs('send-100') || runs('receive-ack-100')) await b.wrk('send-100', 'send, batches of 100, 15 connections (5 per node)', b.perNode('/v1/queues/b-send100/messages/batch', 'send', [100], 5), SECONDS);
    if (runs('receive-ack-10')) await b.wrk('receive-ack-10', 'receive up to 10, then ack them in one request; 15 connections (5 per node), draining what send-1 sent; latency per request, receives and acks alike', b.perNode('/v1/queues/b-send1', 'receive-ack', [10], 5), SECONDS);
    if (runs('receive-ack-100')) await b.wrk('receive-ack-100', 'receive up to 100, then ack them in one request; 9 connections (3 per node), draining what send-100 sent; latency per request, receives and acks alike', b.perNode('/v1/queues/b-send100', 'receive-ack', [100], 3), SECONDS);
    if (runs('publish-3') || runs('drain-3')) await b.wrk('publish-3', 'topic publish, one per request, 63 connections (21 per node), 3 subscriptions; messages published (each delivered 3 times)', b.perNode('/v1/topics/b-topic/messages', 'send', [1], 21), SECONDS);
    if (runs('drain-3')) await b.wrk('drain-3', 'the 3 subscriptions drained together, receive+ack of 100, 27 connections (3 per node and subscription, one wrk process each); messages are deliveries acked', subs.flatMap((s) => b.perNode(`/v1/topics/b-topic/subscriptions/${s}`, 'receive-ack', [100], 3)), SECONDS);
    if (runs('wake-up')) await b.wakeUp('b-wake', 8, SECONDS);
    if (runs('backlog') || runs('backlog-fill') || runs('send-1-backlog')) {
      // each of the three wrk processes stops once its third is acknowledged; the -d is a cap
      const third = Math.ceil(BACKLOG / 3);
      await b.wrk('backlog-fill', `batches of 100 into the backlog queue until it holds ${BACKLOG.toLocaleString('en')} messages, 15 connections (5 per node)`, b.perNode('/v1/queues/b-backlog/messages/batch', 'send', [100, third], 5), Math.max(120, Math.ceil(BACKLOG / 500)));
      await b.wrk('send-1-backlog', `send-1 on the queue holding ${BACKLOG.toLocaleString('en')} messages, 63 connections (21 per node)`, b.perNode('/v1/queues/b-backlog/messages', 'send', [1], 21), SECONDS);
    }
    if (PROFILE) {
      await stopNodes(nodes);
      profiles = reportProfiles(profDir, nodes, measuredFrom - spawned);
    }
    rows = b.rows;
  } finally {
    for (const n of nodes) n.proc.kill('SIGKILL');
    await dispatcher.close();
    rmSync(dir, { recursive: true, force: true });
  }
  // The peers run once the broker's nodes are gone, on the same machine.
  let nats: { result: PeerResult; comparisons: Comparison[] } | null = null;
  let rabbitmq: { result: RabbitResult; comparisons: Comparison[] } | null = null;
  if (VS.includes('nats')) {
    const result = await runNatsPeer(peers);
    nats = { result, comparisons: compare(rows, result) };
  }
  if (VS.includes('rabbitmq')) {
    const result = await runRabbitPeer(peers);
    rabbitmq = { result, comparisons: compareRabbit(rows, result) };
  }
  const meta: Meta = {
    when: new Date().toISOString(),
    // the peers' folder is this machine's business, not the results'
    command: `npm run bench${argv.length > 0 ? ` -- ${argv.map((a, i) => (argv[i - 1] === '--peers' ? 'DIR' : a)).join(' ')}` : ''}`,
    machine: {
      cpus: `${cpus().length} × ${cpus()[0]?.model ?? 'cpu'}`,
      memoryGb: Math.round(totalmem() / 1e9),
      kernel: release(),
      busyCoresBefore: busyBefore,
      loadAverage: loadavg()
        .map((x) => x.toFixed(2))
        .join(' '),
    },
    node: process.version,
    wrk,
    seconds: SECONDS,
    backlog: BACKLOG,
    bodyBytes: BODY.length,
    totalSeconds: Math.round((Date.now() - started) / 1000),
  };
  const md =
    markdown(rows, meta) + (nats === null ? '' : '\n' + comparisonMarkdown(nats.comparisons, nats.result)) + (rabbitmq === null ? '' : '\n' + rabbitMarkdown(rabbitmq.comparisons, rabbitmq.result));
  console.log('');
  console.log(md);
  if (ONLY !== null) return;
  const out = join(root, 'bench', 'results');
  writeFileSync(join(out, 'bench.json'), JSON.stringify({ ...meta, rows, ...(profiles === null ? {} : { profiles }), ...(nats === null ? {} : { nats }), ...(rabbitmq === null ? {} : { rabbitmq }) }, null, 2) + '\n');
  writeFileSync(join(out, 'bench.md'), md);
  writeFileSync(join(out, 'bench.svg'), svg(rows, `mom, 3 nodes on ${cpus().length} cores, 1 KiB, fsync before every ack, driven by wrk (${meta.when.slice(0, 10)})`));
  console.log(`bench/results/bench.{json,md,svg} written; ${meta.totalSeconds} s in all`);
}

await main();
