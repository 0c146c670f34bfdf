// One chaos run, shared by run.ts (the CLI) and chaos.test.ts (the short variant): a cluster of three
// node processes, the workload and the fault schedule for the duration; then heal (all nodes up),
// final reads from each node, drain every channel through the API, final reads again, the checker,
// and a JSON report, the history and a human summary in the run's folder.
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { check, type Report } from './checker.js';
import { Cluster, sleep } from './cluster.js';
import type { LostWrites } from './disk-faults.js';
import { availability, runFaults, schedule, type Availability, type ScheduleOptions } from './faults.js';
import { FAULT_KINDS, Recorder, type ChannelStats, type History } from './history.js';
import type { NetState } from './net-faults.js';
import { LoadBalancer, ensureNginx } from './nginx.js';
import { Rng } from './rng.js';
import { Client, http, Workload, type ChannelSpec } from './workload.js';

export interface ChaosOptions {
  seed: number;
  durationMs: number;
  runDir: string;
  partitions?: number;
  /**
   * Where the workload's requests go: round-robin over the nodes (default), or nginx in front of them
   * (installed when missing, for the runner: a test that runs via nginx calls needTool(t, 'nginx')
   * first and is skipped without it). Every run needs a C compiler: needTool(t, 'cc').
   */
  via?: 'nodes' | 'nginx';
  /** How the fault schedule is drawn (faults.ts); the short variant covers given kinds first. */
  schedule?: ScheduleOptions;
  log?: (s: string) => void;
}

export interface ChaosResult {
  ok: boolean;
  report: Report;
  availability: Availability;
  /** Lines at level error or above that the nodes logged (a 500, a failed loop turn...). */
  nodeErrors: string[];
  /** Channels the drain could not empty within its bound. */
  undrained: string[];
  failures: string[];
  runDir: string;
  history: History;
  /**
   * What each node's network fault layer (net-faults.ts) reported last, before teardown: requests
   * through the hooked transport methods and those it refused; null when a node never reported
   * (the hook was not active there).
   */
  netHooks: (NetState | null)[];
  /** Every power cut and what the storage fault layer undid (writes not yet fsynced). */
  powerCuts: { node: string; lost: LostWrites }[];
  summary: string;
}

export async function runChaos(o: ChaosOptions): Promise<ChaosResult> {
  const log = o.log ?? ((s: string) => console.log(s));
  mkdirSync(o.runDir, { recursive: true });
  // Before any node starts: nginx missing and not installable ends the run at once.
  const nginx = o.via === 'nginx' ? ensureNginx(log) : null;
  const cluster = await Cluster.create(o.runDir, o.partitions ?? 4);
  let lb: LoadBalancer | null = null;
  try {
    const rec = new Recorder(o.seed, cluster.ids, cluster.partitions);
    [0, 1, 2].forEach((i) => cluster.start(i));
    if (!(await Cluster.until(() => cluster.led(), 60_000))) throw new Error('the cluster did not elect leaders within 60 s');
    if (nginx !== null) {
      lb = await LoadBalancer.start(nginx, join(o.runDir, 'nginx'), cluster.ports.map((p) => `127.0.0.1:${p}`));
      log(`load balancer: nginx on ${lb.url} in front of the three nodes`);
    }
    const client = new Client(cluster, rec, lb === null ? undefined : { urls: [lb.url], names: ['lb'] });
    const rng = new Rng(o.seed);
    const workload = new Workload(client, { rng: rng.fork(), tag: `s${o.seed}-${Date.now().toString(36)}` });
    await workload.setup();
    log(`cluster up, channels: ${workload.channels.map((c) => `${c.id} (p${c.partition})`).join(', ')}`);

    const plan = schedule(o.seed, o.durationMs, cluster.partitions, o.schedule);
    log(`fault plan: ${plan.map((f) => f.kind).join(', ') || 'none'}`);
    const endAt = Date.now() + o.durationMs;
    workload.start();
    // A node that exits on its own (it crashed: see its log) ends the run at once: healing and
    // draining would only wait out their bounds.
    const crashed = (): boolean => cluster.crashes.length > 0;
    // The covered kinds come first and all happen, even past the duration on a slow machine (a
    // check must not depend on the machine's speed); drawn faults only while time remains.
    const mustRun = o.schedule?.cover?.length ?? 0;
    await runFaults(cluster, rec, plan, (k) => crashed() || (k >= mustRun && Date.now() >= endAt), log);
    while (Date.now() < endAt && !crashed()) await sleep(200);
    await workload.stop();
    log(`workload stopped at ${(rec.now() / 1000).toFixed(1)} s: ${rec.history.ops.length} ops, ${rec.history.faults.length} faults`);

    let undrained: string[] = [];
    if (!crashed()) {
      await cluster.heal();
      if (!(await Cluster.until(() => cluster.led(), 60_000))) log('warning: after healing, not every node knows a leader for every partition within 60 s');
      // Leases of the workload (at most 3 s) run out, and every replica applies everything.
      await sleep(3_500);
      await finalReads(cluster, client, rec, workload.channels, 'healed');
      if (!crashed()) {
        undrained = await drain(workload, client);
        await finalReads(cluster, client, rec, workload.channels, 'drained');
      }
    }

    const report = check(rec.history);
    const avail = availability(rec.history);
    const nodeErrors = cluster.ids.flatMap((id) => errorLines(join(o.runDir, `${id}.log`)).map((l) => `${id}: ${l}`));
    const failures = cluster.crashes.map((c) => `crash: ${c.node} (pid ${c.pid}) exited on its own at ${c.at} (code ${c.code}, signal ${c.signal}); see ${join(o.runDir, `${c.node}.log`)}; the run stopped there (no drain, so "lost" means nothing)`);
    failures.push(...report.failures);
    if (undrained.length > 0) failures.push(`drain: ${undrained.join(', ')} not empty within the bound`);
    if (nodeErrors.length > 0) failures.push(`nodes: ${nodeErrors.length} line(s) logged at level error or above`);
    const netHooks = [0, 1, 2].map((i) => cluster.netState(i));
    if (netHooks.some((s) => s === null || s.counters.deliver.calls === 0)) failures.push('net hook: a node never reported Raft traffic through the hooked transport');
    if (cluster.powerCuts.length > 0 && cluster.powerCuts.every((c) => c.lost.records === 0)) failures.push('storage hook: no power cut found an unsynced write to lose (is the LD_PRELOAD layer active?)');
    const result: ChaosResult = { ok: failures.length === 0, report, availability: avail, nodeErrors, undrained, failures, runDir: o.runDir, history: rec.history, netHooks, powerCuts: [...cluster.powerCuts], summary: '' };
    result.summary = summarize(result, o);
    writeFileSync(join(o.runDir, 'history.json'), JSON.stringify(rec.history));
    writeFileSync(join(o.runDir, 'report.json'), JSON.stringify({ seed: o.seed, durationMs: o.durationMs, via: o.via ?? 'nodes', ok: result.ok, failures, report, availability: avail, nodeErrors, undrained, plan, netHooks, powerCuts: cluster.powerCuts }, null, 2));
    writeFileSync(join(o.runDir, 'summary.txt'), result.summary);
    if (!result.ok) writeFileSync(join(o.runDir, 'relevant-history.json'), JSON.stringify(relevantHistory(rec.history, report), null, 1));
    return result;
  } finally {
    await lb?.close();
    await cluster.close();
  }
}

/** Reads each channel from each node's own replica after quiescence; up to 5 rounds until they agree. */
async function finalReads(cluster: Cluster, client: Client, rec: Recorder, channels: ChannelSpec[], phase: string): Promise<void> {
  for (let round = 0; round < 5; round++) {
    await Cluster.until(() => cluster.quiescent(), 30_000);
    let agree = true;
    for (const ch of channels) {
      const views = await Promise.all([0, 1, 2].map((i) => staleStats(cluster.urls[i]!, ch.path, client.token)));
      rec.finalRead({ type: 'final-read', phase, channel: ch.id, at: rec.now(), views });
      const keys = new Set(views.map((v) => JSON.stringify(v)));
      if (keys.size !== 1 || keys.has('null')) agree = false;
    }
    if (agree) return;
    await sleep(1_000);
  }
}

async function staleStats(base: string, path: string, token: string): Promise<ChannelStats | null> {
  try {
    const r = await http(base, 'GET', `${path}?consistency=stale`, { token, timeoutMs: 5_000 });
    if (r.status !== 200) return null;
    const s = (r.body as { stats: ChannelStats }).stats;
    return { visible: s.visible, inFlight: s.inFlight, delayed: s.delayed, dropped: s.dropped };
  } catch {
    return null;
  }
}

/** A linearizable read of a channel's stats through any node, or null. */
async function stats(cluster: Cluster, path: string, token: string): Promise<ChannelStats | null> {
  for (const i of [0, 1, 2]) {
    try {
      const r = await http(cluster.urls[i]!, 'GET', path, { token });
      if (r.status === 200) return (r.body as { stats: ChannelStats }).stats;
    } catch {
      // the next node
    }
  }
  return null;
}

/** Receives and acks every channel through the API until a linearizable read says it is empty (bounded). */
async function drain(workload: Workload, client: Client): Promise<string[]> {
  const undrained: string[] = [];
  for (const ch of workload.channels) {
    const deadline = Date.now() + 90_000;
    let empty = false;
    while (Date.now() < deadline) {
      const got = await workload.receive(ch, 'drain', 10, 0, 10);
      if (got.length > 0) {
        await workload.settle(ch, 'drain', 'ack', got.map((m) => m.receiptHandle));
        continue;
      }
      const s = await stats(client.cluster, ch.path, client.token);
      if (s !== null && s.visible + s.inFlight + s.delayed === 0) {
        empty = true;
        break;
      }
      await sleep(500);
    }
    if (!empty) undrained.push(ch.id);
  }
  return undrained;
}

function errorLines(file: string): string[] {
  let text = '';
  try {
    text = readFileSync(file, 'utf8');
  } catch {
    return [];
  }
  return text
    .split('\n')
    .filter((l) => l.trim().length > 0)
    .filter((l) => {
      try {
        return ((JSON.parse(l) as { level?: number }).level ?? 0) >= 50;
      } catch {
        return true; // not pino's JSON: stderr (a crash, a stack trace)
      }
    })
    .map((l) => l.slice(0, 600));
}

/** The ops and faults that bear on the failures: every op that touched a failing message or receive. */
export function relevantHistory(h: History, r: Report): unknown {
  const bodies = new Set<string>([...r.lost.map((x) => x.body), ...r.unexpected.map((x) => x.body), ...r.duplicates.unexplained.map((x) => x.body), ...r.ordering.violations.map((x) => x.body)]);
  const opIds = new Set<number>([...r.ordering.violations.flatMap((v) => [v.earlierOpId, v.laterOpId]), ...r.serverErrors.map((e) => e.opId)]);
  const handles = new Set<string>();
  for (const o of h.ops) if (o.type === 'receive') for (const m of o.messages) if (bodies.has(m.body)) handles.add(m.receiptHandle);
  const ops = h.ops.filter(
    (o) =>
      opIds.has(o.id) ||
      ((o.type === 'send' || o.type === 'publish') && bodies.has(o.body)) ||
      (o.type === 'receive' && o.messages.some((m) => bodies.has(m.body))) ||
      ((o.type === 'ack' || o.type === 'nack') && o.receiptHandles.some((x) => handles.has(x))),
  );
  return { seed: h.seed, failures: r.failures, faults: h.faults, ops: ops.slice(0, 2_000), divergent: r.replicas.divergent, serverErrors: r.serverErrors };
}

const pct = (x: number): string => `${(x * 100).toFixed(1)}%`;
const ms = (x: number | null): string => (x === null ? '-' : `${(x / 1000).toFixed(2)} s`);

function table(rows: string[][]): string {
  const w = rows[0]!.map((_, c) => Math.max(...rows.map((r) => (r[c] ?? '').length)));
  return rows.map((r) => r.map((cell, c) => cell.padEnd(w[c]!)).join('  ').trimEnd()).join('\n');
}

export function summarize(res: ChaosResult, o: ChaosOptions): string {
  const r = res.report;
  const a = res.availability;
  const c = r.counts;
  const t3 = (x: Record<'ok' | 'fail' | 'unknown', number>): string[] => [String(x.ok), String(x.fail), String(x.unknown)];
  const lines = [
    `chaos run: seed ${o.seed}, ${(o.durationMs / 1000).toFixed(0)} s of workload and faults, requests ${o.via === 'nginx' ? 'through nginx in front of the nodes' : 'round-robin over the nodes'}, ${res.ok ? 'PASSED' : 'FAILED'}`,
    `folder: ${res.runDir}`,
    '',
    table([
      ['operations', 'ok', 'fail', 'unknown'],
      ['send', ...t3(c.sends)],
      ['publish', ...t3(c.publishes)],
      ['receive', ...t3(c.receives)],
      ['ack/nack', ...t3(c.settles)],
    ]),
    '',
    table([
      ['check', 'result'],
      ['deliveries (distinct messages)', `${c.deliveries} (${c.distinctDelivered})`],
      ['lost', String(r.lost.length)],
      ['unexpected', String(r.unexpected.length)],
      ['duplicates (explained)', `${r.duplicates.total} (${r.duplicates.explained}: ${Object.entries(r.duplicates.byReason).map(([k, v]) => `${k} ${v}`).join(', ') || '-'})`],
      ['unexplained duplicates', String(r.duplicates.unexplained.length)],
      ['ordering violations', `${r.ordering.violations.length} (${r.ordering.channelsChecked} channels)`],
      ['divergent replica reads', `${r.replicas.divergent.length} of ${r.replicas.compared}`],
      ['server errors (5xx but 503/504, 4xx)', String(r.serverErrors.length)],
      ['unknown/failed writes delivered anyway', String(c.unknownWritesDelivered)],
      ['node error log lines', String(res.nodeErrors.length)],
      ['undrained channels', String(res.undrained.length)],
    ]),
    '',
    `fault kinds: ${FAULT_KINDS.join(', ')} (network cuts by the transport fault layer, power cuts by the storage fault layer; test build only)`,
    `leader kills: ${a.leaderKills.length}; time from kill to next acknowledged write on the partition: median ${ms(a.recoveryMedianMs)}, max ${ms(a.recoveryMaxMs)}`,
    `leader isolations: ${a.leaderIsolations.length}; time from isolation to next acknowledged write on the partition: median ${ms(a.isolationRecoveryMedianMs)}, max ${ms(a.isolationRecoveryMaxMs)}`,
    `leader stops (SIGTERM, cut mid-hand-over): ${a.leaderStops.length}; time from SIGTERM to next acknowledged write on the partition: median ${ms(a.stopRecoveryMedianMs)}, max ${ms(a.stopRecoveryMaxMs)}`,
    `power cuts: ${res.powerCuts.length}; unsynced writes undone: ${res.powerCuts.map((c) => `${c.node} ${c.lost.records}`).join(', ') || '-'}`,
    '',
    table([
      ['kind', 'faults', 'window median', 'window max', 'attempts', 'failed', 'share', 'worst fault'],
      ...FAULT_KINDS.map((k) => {
        const f = a.byKind[k];
        return [k, String(f.faults), ms(f.windowMedianMs), ms(f.windowMaxMs), String(f.attempts), String(f.failed), pct(f.failedShare), pct(f.maxFailedShare)];
      }),
      ['none', '-', '-', '-', String(a.baseline.attempts), String(a.baseline.failed), pct(a.baseline.failedShare), '-'],
    ]),
    '',
    table([
      ['fault', 'kind', 'node', 'partition', 'window', 'attempts', 'failed', 'share'],
      ...a.perFault.map((f) => [String(f.faultId), f.kind, f.to === undefined ? f.node : `${f.node}->${f.to}`, f.partition === undefined ? '-' : String(f.partition), ms(f.durationMs), String(f.attempts), String(f.failed), pct(f.failedShare)]),
    ]),
    '',
    'faults:',
    ...res.history.faults.map((f) => `  ${f.id} ${f.kind} at ${ms(f.start)}-${ms(f.end)}, healed ${ms(f.healedAt)}: ${f.detail}`),
    '',
    'network fault layer per node (requests through the hooked transport methods / refused; last process of each node):',
    ...res.netHooks.map((h, i) =>
      h === null
        ? `  ${res.history.nodes[i]}: NO REPORT (hook not active)`
        : `  ${h.node} pid ${h.pid}: ${Object.entries(h.counters).map(([m, c]) => `${m} ${c.calls}/${c.blocked}`).join(', ')}; control version ${h.version}, blocked now [${h.blocked.join(', ')}]`,
    ),
  ];
  if (!res.ok) lines.push('', 'FAILURES:', ...res.failures.map((f) => `  ${f}`), `relevant history: ${join(res.runDir, 'relevant-history.json')}`);
  return lines.join('\n') + '\n';
}
