// `npm run bench [-- --quick] [-- --seconds S --backlog N]`: the broker's throughput and latency, as a
// user sees them. It starts a local three-node cluster (three `src/main.ts` processes, fresh data
// folders, default settings: every 2xx means fsynced on a majority and applied) and drives it over
// HTTP from this process, 1 KiB bodies, requests spread round-robin over the three nodes:
//
//   send-1          one message per request, 64 clients each keeping one request in flight
//   send-100        batches of 100, 16 clients
//   receive-ack-10  receive up to 10, then ack them in one request; 16 consumers drain what send-1 sent
//   receive-ack-100 the same with 100, 8 consumers, draining what send-100 sent
//   publish-3       topic publish (one per request, 64 clients), 3 subscriptions
//   drain-3         the 3 subscriptions drained with receive+ack of 100, 8 consumers each
//   wake-up         8 long polls wait on a queue; one sender sends a message every 10 ms; the time
//                   from the send's 2xx to a waiting receiver having it
//   send-1-backlog  send-1 again, on a queue already holding --backlog messages (default 1,000,000)
//
// For each: messages per second, latency p50/p99/p999 (per request; wake-up: per message), CPU (% of
// one core) and peak RSS of each node, and fsyncs per second (the nodes' Raft log syncs, from
// /metrics). The machine's two cores are shared by the nodes and this load generator. Writes
// bench/results/bench.{json,md,svg}; --quick (short phases, 50,000 backlog) ends within two minutes.
// --only a,b runs only those workloads (no files written); --profile runs the nodes with --cpu-prof and
// prints where their time went (bench/profile.ts), profiles kept under data/profiles/. --vs nats then
// runs the NATS JetStream peer (bench/nats.ts) and prints the ratios. The peers' harnesses are not
// part of this repository: --peers DIR (or MOM_PEERS_DIR) names the folder that holds nats/.
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { Agent, request } from 'undici';
import { startNodes, stopNodes, type BenchNode as Node } from './cluster.js';
import { compare, comparisonMarkdown, runNatsPeer, type Comparison, type PeerResult } from './nats.js';
import { analyze } from './profile.js';

const root = join(import.meta.dirname, '..');
const has = (flag: string): boolean => process.argv.includes(`--${flag}`);

/** The folder of the peers' harnesses (nats/, rabbitmq/), which live outside this repository. */
function peersDir(): string {
  const i = process.argv.indexOf('--peers');
  const dir = i < 0 ? process.env.MOM_PEERS_DIR : process.argv[i + 1];
  if (dir === undefined || dir === '') throw new Error('--vs needs the peers\' harnesses: pass --peers DIR (or set MOM_PEERS_DIR), the folder that holds nats/bench.sh');
  return dir;
}
const arg = (name: string, fallback: number): number => {
  const i = process.argv.indexOf(`--${name}`);
  return i < 0 ? fallback : Number(process.argv[i + 1]);
};
const QUICK = has('quick');
const VS_NATS = (() => {
  const i = process.argv.indexOf('--vs');
  if (i < 0) return false;
  if (process.argv[i + 1] !== 'nats') throw new Error(`--vs: the only peer is nats, got '${process.argv[i + 1] ?? ''}'`);
  return true;
})();
const PROFILE = has('profile');
const ONLY = (() => {
  const i = process.argv.indexOf('--only');
  return i < 0 ? null : new Set(process.argv[i + 1]!.split(','));
})();
const runs = (w: string): boolean => ONLY === null || ONLY.has(w);
const SECONDS = arg('seconds', QUICK ? 5 : 20);
const BACKLOG = arg('backlog', QUICK ? 50_000 : 1_000_000);
const BODY = 'x'.repeat(1024);
const CLK_TCK = 100; // Linux USER_HZ

const dispatcher = new Agent({ connections: 128, pipelining: 1, keepAliveTimeout: 30_000 });

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

// ---- the nodes, and what they use ----

interface Usage {
  /** Per node: % of one core over the phase. */
  cpuPct: number[];
  /** Per node: the largest resident set seen (sampled every 100 ms), MB. */
  peakRssMb: number[];
  /** All nodes' Raft log syncs per second. */
  fsyncsPerSecond: number;
  /** Bytes all nodes had written to storage (/proc/<pid>/io write_bytes), MB per second. */
  diskMbPerSecond: number;
}

function writeBytes(pid: number): number {
  const m = /^write_bytes: (\d+)/m.exec(readFileSync(`/proc/${pid}/io`, 'utf8'));
  return m === null ? 0 : Number(m[1]);
}

function cpuTicks(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return Number(f[11]) + Number(f[12]); // utime, stime
}

function rssMb(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m === null ? 0 : Number(m[1]) / 1024;
}

async function syncs(nodes: Node[]): Promise<number> {
  let n = 0;
  for (const node of nodes) {
    const r = await call('GET', `${node.url}/metrics`);
    const m = /^mom_raft_log_syncs_total (\d+)/m.exec(String(r.body));
    n += m === null ? 0 : Number(m[1]);
  }
  return n;
}

/** Runs `work` while sampling the nodes; answers its result and the nodes' usage over it. */
async function measured<T>(nodes: Node[], work: () => Promise<T>): Promise<{ result: T; usage: Usage; seconds: number }> {
  const pids = nodes.map((n) => n.proc.pid!);
  const peak = pids.map(rssMb);
  const timer = setInterval(() => pids.forEach((p, i) => (peak[i] = Math.max(peak[i]!, rssMb(p)))), 100);
  const ticks0 = pids.map(cpuTicks);
  const written0 = pids.map(writeBytes);
  const syncs0 = await syncs(nodes);
  const t0 = performance.now();
  try {
    const result = await work();
    const seconds = (performance.now() - t0) / 1000;
    const cpuPct = pids.map((p, i) => Math.round(((cpuTicks(p) - ticks0[i]!) / CLK_TCK / seconds) * 100));
    const fsyncsPerSecond = Math.round(((await syncs(nodes)) - syncs0) / seconds);
    const written = pids.reduce((sum, p, i) => sum + writeBytes(p) - written0[i]!, 0);
    const diskMbPerSecond = Math.round(written / 1e6 / seconds);
    return { result, usage: { cpuPct, peakRssMb: peak.map((x) => Math.round(x)), fsyncsPerSecond, diskMbPerSecond }, seconds };
  } finally {
    clearInterval(timer);
  }
}

// ---- closed-loop load ----

interface Load {
  messages: number;
  requests: number;
  failed: number;
  latencies: number[];
}

/**
 * `clients` loops, each with one request in flight, until `until()` says stop. `step(client, i)`
 * sends one request and answers the messages it moved (0 ends that client: nothing left to do).
 */
async function closedLoop(clients: number, until: () => boolean, step: (c: number, i: number) => Promise<number | null>): Promise<Load> {
  const load: Load = { messages: 0, requests: 0, failed: 0, latencies: [] };
  await Promise.all(
    Array.from({ length: clients }, async (_, c) => {
      for (let i = 0; !until(); i++) {
        const t0 = performance.now();
        let n: number | null;
        try {
          n = await step(c, i);
        } catch {
          n = null;
        }
        load.requests++;
        if (n === null) {
          load.failed++;
          continue;
        }
        load.latencies.push(performance.now() - t0);
        load.messages += n;
        if (n === 0) return;
      }
    }),
  );
  return load;
}

const pct = (sorted: number[], q: number): number => Number((sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? 0).toFixed(1));

interface Row {
  workload: string;
  what: string;
  messages: number;
  seconds: number;
  messagesPerSecond: number;
  requests: number;
  failed: number;
  p50Ms: number;
  p99Ms: number;
  p999Ms: number;
  cpuPct: number[];
  peakRssMb: number[];
  fsyncsPerSecond: number;
  diskMbPerSecond: number;
}

function row(workload: string, what: string, m: { result: Load; usage: Usage; seconds: number }): Row {
  const sorted = [...m.result.latencies].sort((a, b) => a - b);
  return {
    workload,
    what,
    messages: m.result.messages,
    seconds: Number(m.seconds.toFixed(1)),
    messagesPerSecond: Math.round(m.result.messages / m.seconds),
    requests: m.result.requests,
    failed: m.result.failed,
    p50Ms: pct(sorted, 0.5),
    p99Ms: pct(sorted, 0.99),
    p999Ms: pct(sorted, 0.999),
    ...m.usage,
  };
}

// ---- the workloads ----

class Bench {
  rows: Row[] = [];
  private rr = 0;

  constructor(
    readonly nodes: Node[],
    readonly token: string,
  ) {}

  /** The next node, round-robin. */
  url(): string {
    return this.nodes[this.rr++ % this.nodes.length]!.url;
  }

  private add(r: Row): void {
    this.rows.push(r);
    console.log(`${r.workload.padEnd(16)} ${String(r.messagesPerSecond).padStart(7)} msg/s  p50 ${r.p50Ms} ms  p99 ${r.p99Ms} ms  p999 ${r.p999Ms} ms  cpu ${r.cpuPct.join('/')}%  rss ${r.peakRssMb.join('/')} MB  fsync/s ${r.fsyncsPerSecond}  disk ${r.diskMbPerSecond} MB/s${r.failed > 0 ? `  FAILED ${r.failed}` : ''}`);
  }

  async send(workload: string, queue: string, clients: number, batch: number, seconds: number, what: string): Promise<void> {
    const end = Date.now() + seconds * 1000;
    const m = await measured(this.nodes, () =>
      closedLoop(clients, () => Date.now() >= end, async () => {
        const r =
          batch === 1
            ? await call('POST', `${this.url()}/v1/queues/${queue}/messages`, { body: BODY }, this.token)
            : await call('POST', `${this.url()}/v1/queues/${queue}/messages/batch`, { messages: Array.from({ length: batch }, () => ({ body: BODY })) }, this.token);
        return r.status === 201 ? batch : null;
      }),
    );
    this.add(row(workload, what, m));
  }

  /** Receive up to `max` and ack them, until the channel is empty. */
  async drain(workload: string, paths: string[], consumers: number, max: number, what: string): Promise<void> {
    const m = await measured(this.nodes, () =>
      Promise.all(paths.map((path) => closedLoop(consumers, () => false, async () => this.receiveAck(path, max)))).then((loads) => ({
        messages: loads.reduce((n, l) => n + l.messages, 0),
        requests: loads.reduce((n, l) => n + l.requests, 0),
        failed: loads.reduce((n, l) => n + l.failed, 0),
        latencies: loads.flatMap((l) => l.latencies),
      })),
    );
    this.add(row(workload, what, m));
  }

  private async receiveAck(path: string, max: number): Promise<number | null> {
    const got = await call('POST', `${this.url()}${path}/receive`, { maxMessages: max, visibilityTimeoutSeconds: 60 }, this.token);
    if (got.status !== 200) return null;
    const handles = (got.body as { messages: { receiptHandle: string }[] }).messages.map((x) => x.receiptHandle);
    if (handles.length === 0) return 0;
    const acked = await call('POST', `${this.url()}${path}/ack`, { receiptHandles: handles }, this.token);
    return acked.status === 200 ? handles.length : null;
  }

  async publish(topic: string, clients: number, seconds: number): Promise<void> {
    const end = Date.now() + seconds * 1000;
    const m = await measured(this.nodes, () =>
      closedLoop(clients, () => Date.now() >= end, async () => {
        const r = await call('POST', `${this.url()}/v1/topics/${topic}/messages`, { body: BODY }, this.token);
        return r.status === 201 ? 1 : null;
      }),
    );
    this.add(row('publish-3', 'topic publish, 1 per request, 64 clients, 3 subscriptions (messages published)', m));
  }

  /** Long polls waiting; one sender; per message: from the send's 2xx to a receiver holding it. */
  async wakeUp(queue: string, receivers: number, seconds: number): Promise<void> {
    const acked = new Map<string, number>();
    const got = new Map<string, number>();
    let stop = false;
    const end = Date.now() + seconds * 1000;
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
      let failed = 0;
      while (Date.now() < end) {
        const body = `wake-${n++}`;
        const r = await call('POST', `${this.url()}/v1/queues/${queue}/messages`, { body }, this.token).catch(() => null);
        if (r?.status === 201) acked.set(body, performance.now());
        else failed++;
        await new Promise((res) => setTimeout(res, 10));
      }
      await new Promise((r) => setTimeout(r, 1_000));
      stop = true;
      await Promise.all(waiting);
      const latencies = [...acked].map(([b, t]) => (got.has(b) ? Math.max(0, got.get(b)! - t) : Number.POSITIVE_INFINITY));
      return { messages: acked.size, requests: n, failed: failed + latencies.filter((x) => !Number.isFinite(x)).length, latencies: latencies.filter(Number.isFinite) };
    });
    this.add(row('wake-up', `${receivers} long polls waiting, one send every 10 ms; latency from the send's 2xx to the receiver having it`, m));
  }

  /** Fills `queue` with `n` messages (batches of 100, 16 clients); answers the phase's usage row. */
  async fill(queue: string, n: number): Promise<void> {
    let sent = 0;
    const m = await measured(this.nodes, () =>
      closedLoop(16, () => sent >= n, async () => {
        const k = Math.min(100, n - sent);
        if (k <= 0) return 0;
        sent += k;
        const r = await call('POST', `${this.url()}/v1/queues/${queue}/messages/batch`, { messages: Array.from({ length: k }, () => ({ body: BODY })) }, this.token);
        if (r.status !== 201) sent -= k;
        return r.status === 201 ? k : null;
      }),
    );
    this.add(row('backlog-fill', `filling the backlog queue with ${n.toLocaleString('en')} messages (batches of 100, 16 clients)`, m));
  }
}

// ---- output ----

function markdown(rows: Row[], meta: Record<string, unknown>): string {
  const lines = [
    `Measured ${String(meta.when)} with \`${String(meta.command)}\`: three nodes and the load generator on one machine (${String(meta.cpus)}), 1 KiB bodies, requests round-robin over the nodes, every 2xx fsynced on a majority and applied.`,
    '',
    '| workload | msg/s | p50 ms | p99 ms | p999 ms | CPU % per node | peak RSS MB per node | fsyncs/s | disk MB/s | failed |',
    '|---|---:|---:|---:|---:|---|---|---:|---:|---:|',
    ...rows.map((r) => `| ${r.workload} | ${r.messagesPerSecond.toLocaleString('en')} | ${r.p50Ms} | ${r.p99Ms} | ${r.p999Ms} | ${r.cpuPct.join(' / ')} | ${r.peakRssMb.join(' / ')} | ${r.fsyncsPerSecond} | ${r.diskMbPerSecond} | ${r.failed} |`),
    '',
    ...rows.map((r) => `- **${r.workload}**: ${r.what}.`),
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

// ---- main ----

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'mom-bench-'));
  const started = Date.now();
  let rows: Row[] = [];
  const profDir = join(root, 'data', 'profiles', new Date().toISOString().replace(/[:.]/g, '-'));
  const nodes = await startNodes(dir, {}, (u) => call('GET', `${u}/readyz`).then((r) => r.status === 200, () => false), PROFILE ? ['--cpu-prof', '--cpu-prof-dir', profDir] : []);
  try {
    const u = nodes[0]!.url;
    await must('POST', `${u}/v1/auth/register`, { username: 'bench', password: 'bench-password' }, undefined, 201);
    const token = ((await must('POST', `${u}/v1/auth/login`, { username: 'bench', password: 'bench-password' }, undefined, 200)).body as { accessToken: string }).accessToken;
    for (const q of ['b-warm', 'b-send1', 'b-send100', 'b-wake', 'b-backlog']) await must('POST', `${u}/v1/queues`, { name: q }, token, 201);
    await must('POST', `${u}/v1/topics`, { name: 'b-topic' }, token, 201);
    for (const s of ['s1', 's2', 's3']) await must('POST', `${u}/v1/topics/b-topic/subscriptions`, { name: s }, token, 201);
    // leaders settle on their preferred nodes (the balancer), connections and JIT warm up
    await new Promise((r) => setTimeout(r, 2_000));
    const b = new Bench(nodes, token);
    await b.send('warm-up', 'b-warm', 16, 1, 2, 'warm-up');
    b.rows.length = 0;

    if (runs('send-1') || runs('receive-ack-10')) await b.send('send-1', 'b-send1', 64, 1, SECONDS, 'send, one message per request, 64 clients');
    if (runs('send-100') || runs('receive-ack-100')) await b.send('send-100', 'b-send100', 16, 100, SECONDS, 'send, batches of 100, 16 clients');
    if (runs('receive-ack-10')) await b.drain('receive-ack-10', ['/v1/queues/b-send1'], 16, 10, 'receive up to 10 then ack them, 16 consumers, draining what send-1 sent');
    if (runs('receive-ack-100')) await b.drain('receive-ack-100', ['/v1/queues/b-send100'], 8, 100, 'receive up to 100 then ack them, 8 consumers, draining what send-100 sent');
    if (runs('publish-3') || runs('drain-3')) await b.publish('b-topic', 64, SECONDS);
    if (runs('drain-3')) await b.drain('drain-3', ['s1', 's2', 's3'].map((s) => `/v1/topics/b-topic/subscriptions/${s}`), 8, 100, 'the 3 subscriptions drained together, receive+ack of 100, 8 consumers each (deliveries)');
    if (runs('wake-up')) await b.wakeUp('b-wake', 8, SECONDS);
    if (runs('send-1-backlog')) {
      await b.fill('b-backlog', BACKLOG);
      await b.send('send-1-backlog', 'b-backlog', 64, 1, SECONDS, `send-1 on a queue holding ${BACKLOG.toLocaleString('en')} messages`);
    }
    if (PROFILE) {
      await stopNodes(nodes);
      for (const f of readdirSync(profDir).filter((x) => x.endsWith('.cpuprofile'))) {
        const a = analyze(JSON.parse(readFileSync(join(profDir, f), 'utf8')));
        console.log(`\n== ${join(profDir, f)}: ${(a.totalMs / 1000).toFixed(1)} s sampled, ${(a.busyMs / 1000).toFixed(1)} s busy; self time by area, shares of the busy time:`);
        for (const [k, ms] of a.byArea.slice(0, 20)) console.log(`${((ms / a.busyMs) * 100).toFixed(1).padStart(5)}%  ${k}`);
      }
      console.log('(details: npx tsx bench/profile.ts <file>)');
    }
    rows = b.rows;
  } finally {
    for (const n of nodes) n.proc.kill('SIGKILL');
    await dispatcher.close();
    rmSync(dir, { recursive: true, force: true });
  }
  // The peer runs once the broker's nodes are gone, on the same machine.
  let peer: { result: PeerResult; comparisons: Comparison[] } | null = null;
  if (VS_NATS) {
    const result = await runNatsPeer(join(peersDir(), 'nats'));
    peer = { result, comparisons: compare(rows, result) };
  }
  const meta = {
    when: new Date().toISOString(),
    command: `npm run bench${process.argv.length > 2 ? ` -- ${process.argv.slice(2).join(' ')}` : ''}`,
    cpus: `${cpus().length} × ${cpus()[0]?.model ?? 'cpu'}`,
    seconds: SECONDS,
    backlog: BACKLOG,
    bodyBytes: BODY.length,
    node: process.version,
    totalSeconds: Math.round((Date.now() - started) / 1000),
  };
  const md = markdown(rows, meta) + (peer === null ? '' : '\n' + comparisonMarkdown(peer.comparisons, peer.result));
  console.log('');
  console.log(md);
  if (ONLY !== null) return;
  const out = join(root, 'bench', 'results');
  writeFileSync(join(out, 'bench.json'), JSON.stringify({ ...meta, rows, ...(peer === null ? {} : { nats: peer.result, vsNats: peer.comparisons }) }, null, 2) + '\n');
  writeFileSync(join(out, 'bench.md'), md);
  writeFileSync(join(out, 'bench.svg'), svg(rows, `mom, 3 nodes on ${cpus().length} cores, 1 KiB, fsync before every ack (${meta.when.slice(0, 10)})`));
  console.log(`bench/results/bench.{json,md,svg} written; ${meta.totalSeconds} s in all`);
}

await main();
