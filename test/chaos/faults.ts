// Faults on a seeded schedule, one at a time (never more than one node down, paused or cut off, so a
// majority can always talk), each healed before the next:
//   kill-leader     SIGKILL of the leader of a partition, restart after 1-4 s;
//   kill-node       SIGKILL of a random node, restart after 1-4 s;
//   pause           SIGSTOP of a node for longer than the election timeout (100 ms ticks x 10 -> 1-2 s;
//                   the pause is 3-5 s), then SIGCONT;
//   isolate-node    a random node can neither send to nor be sent to by the others for 3-6 s;
//   isolate-leader  the same for the leader of a partition;
//   cut-one-way     one node cannot send to one other for 3-6 s (which can still send to it);
//   power-loss      SIGKILL of a random node, and every write it had not fsynced is lost (its files
//                   go back to their last fsync: disk-faults.ts); restart after 1-4 s;
//   snapshot-install  a random node is cut off for 8-12 s, so the leaders compact their logs past it;
//                   once healed, as soon as it starts fetching a snapshot image, a power cut hits it
//                   0-200 ms later (mid-fetch or mid-install); restart after 1-3 s;
//   transfer-kill   SIGTERM of the leader of a partition (a planned stop: it hands its leaderships
//                   over), then 0-400 ms later, mid-hand-over, a power cut; restart after 1-4 s.
// The network cuts are made by the fault layer every node preloads (net-faults.ts, driven through
// Cluster.cut/isolate/healNet). Each fault is recorded in the history. Also: availability figures
// computed from a history.
import { Cluster, sleep } from './cluster.js';
import { describeLost } from './disk-faults.js';
import { FAULT_KINDS, NETWORK_FAULTS, type FaultKind, type History, type Recorder } from './history.js';
import type { NetState } from './net-faults.js';
import { Rng } from './rng.js';

export interface PlannedFault {
  /** When to begin, in ms after the previous fault healed (or after the start). */
  gapMs: number;
  kind: FaultKind;
  /** kill-leader and isolate-leader: the partition; the others: the node index (cut-one-way: the sender). */
  target: number;
  /** cut-one-way: the node index the sender cannot reach. */
  to?: number;
  /** How long the node stays down, paused or cut off. */
  downMs: number;
  /** snapshot-install: how long the node is cut off first. */
  isolateMs?: number;
  /** snapshot-install: from the fetch seen to the power cut; transfer-kill: from SIGTERM to the power cut. */
  delayMs?: number;
}

const LEADER_KINDS: readonly FaultKind[] = ['kill-leader', 'isolate-leader', 'transfer-kill'];

export interface ScheduleOptions {
  /** Kinds that come first, once each, in an order drawn from the seed (the short variant covers kinds this way). */
  cover?: readonly FaultKind[];
  /** The gap before each fault, drawn in [lo, hi] ms. Default [2000, 5000]. */
  gapMs?: readonly [number, number];
  /** Time budgeted after each fault for the cluster to settle, when fitting faults into the duration. Default 5000. */
  settleMs?: number;
}

/** Draw weights of the kinds after the covered ones. */
const WEIGHTS: readonly [FaultKind, number][] = [
  ['kill-leader', 0.15],
  ['kill-node', 0.1],
  ['pause', 0.1],
  ['isolate-node', 0.1],
  ['isolate-leader', 0.1],
  ['cut-one-way', 0.1],
  ['power-loss', 0.15],
  ['snapshot-install', 0.1],
  ['transfer-kill', 0.1],
];

function drawKind(rng: Rng): FaultKind {
  let r = rng.next();
  for (const [k, w] of WEIGHTS) {
    if (r < w) return k;
    r -= w;
  }
  return 'kill-leader';
}

/** The schedule: a pure function of the seed (no Math.random), as many faults as fit in `durationMs`. */
export function schedule(seed: number, durationMs: number, partitions: number, opts: ScheduleOptions = {}): PlannedFault[] {
  const rng = new Rng(seed ^ 0x5eed);
  const [gapLo, gapHi] = opts.gapMs ?? [2_000, 5_000];
  const settle = opts.settleMs ?? 5_000;
  const cover = [...(opts.cover ?? [])];
  for (let i = cover.length - 1; i > 0; i--) {
    const j = rng.int(0, i);
    [cover[i], cover[j]] = [cover[j]!, cover[i]!];
  }
  const out: PlannedFault[] = [];
  let t = 0;
  // Every covered kind is planned, even past the duration; drawn kinds only while they fit.
  while (t < durationMs || cover.length > 0) {
    const covered = cover.length > 0;
    const kind: FaultKind = cover.shift() ?? drawKind(rng);
    const target = LEADER_KINDS.includes(kind) ? rng.int(0, partitions - 1) : rng.int(0, 2);
    const gapMs = rng.int(gapLo, gapHi);
    let f: PlannedFault;
    if (kind === 'snapshot-install') f = { gapMs, kind, target, isolateMs: rng.int(8_000, 12_000), delayMs: rng.int(0, 200), downMs: rng.int(1_000, 3_000) };
    else if (kind === 'transfer-kill') f = { gapMs, kind, target, delayMs: rng.int(0, 400), downMs: rng.int(1_000, 4_000) };
    else if (kind === 'cut-one-way') f = { gapMs, kind, target, to: (target + rng.int(1, 2)) % 3, downMs: rng.int(3_000, 6_000) };
    else f = { gapMs, kind, target, downMs: kind === 'pause' ? rng.int(3_000, 5_000) : NETWORK_FAULTS.includes(kind) ? rng.int(3_000, 6_000) : rng.int(1_000, 4_000) };
    // the fault, then time for the cluster to settle
    t += f.gapMs + (f.isolateMs ?? 0) + f.downMs + settle;
    if (t > durationMs && !covered) break;
    out.push(f);
  }
  return out;
}

type Counters = NetState['counters'];

/** The network fault layers' counters summed over the running nodes. */
function netCounters(cluster: Cluster): Counters {
  const sum: Counters = { deliver: { calls: 0, blocked: 0 }, call: { calls: 0, blocked: 0 }, fetchSnapshot: { calls: 0, blocked: 0 } };
  for (const i of [0, 1, 2]) {
    const s = cluster.netState(i);
    if (s === null) continue;
    for (const m of Object.keys(sum) as (keyof Counters)[]) {
      sum[m].calls += s.counters[m]?.calls ?? 0;
      sum[m].blocked += s.counters[m]?.blocked ?? 0;
    }
  }
  return sum;
}

function refusedText(before: Counters, after: Counters): string {
  const d = (m: keyof Counters): number => after[m].blocked - before[m].blocked;
  return `the fault layer refused ${d('deliver')} Raft batch(es), ${d('call')} forwarded request(s), ${d('fetchSnapshot')} snapshot fetch(es)`;
}

/**
 * Runs the schedule until it ends or `stop(k)` answers true before fault k; heals after each fault.
 * The caller decides whether a fault may be skipped (the covered kinds must all happen, however slow
 * the machine).
 */
export async function runFaults(cluster: Cluster, rec: Recorder, plan: PlannedFault[], stop: (k: number) => boolean, log: (s: string) => void = () => {}): Promise<void> {
  for (const [k, f] of plan.entries()) {
    await sleepUnless(f.gapMs, () => stop(k));
    if (stop(k)) return;
    let node = f.target;
    let partition: number | undefined;
    if (LEADER_KINDS.includes(f.kind)) {
      partition = f.target;
      const p = partition;
      let leader = -1;
      await Cluster.until(async () => (leader = await cluster.leaderOf(p)) >= 0, 10_000);
      if (leader < 0) {
        log(`fault skipped: no agreed leader of partition ${p}`);
        continue;
      }
      node = leader;
    }
    const to = f.to;
    const id = rec.id();
    const what = `${f.kind} ${cluster.ids[node]}${to === undefined ? '' : ` -> ${cluster.ids[to]}`}${partition === undefined ? '' : ` (leader of partition ${partition})`}`;
    const before = netCounters(cluster);
    const start = rec.now();
    log(`${(start / 1000).toFixed(1)} s: ${what}`);
    let detail = await inflict(cluster, f, node, log);
    const end = rec.now();
    const healed = await Cluster.until(() => cluster.led(), 30_000);
    // (the layers' counters are written once a second: the figure may miss the last second)
    if (NETWORK_FAULTS.includes(f.kind)) detail += `; ${refusedText(before, netCounters(cluster))}; ${netCounters(cluster).fetchSnapshot.calls - before.fetchSnapshot.calls} snapshot fetch(es) from the cut until every node knew a leader again`;
    rec.fault({
      type: 'fault',
      id,
      kind: f.kind,
      node: cluster.ids[node]!,
      ...(to === undefined ? {} : { to: cluster.ids[to]! }),
      ...(partition === undefined ? {} : { partition }),
      start,
      end,
      healedAt: healed ? rec.now() : null,
      detail,
    });
  }
}

/** Makes fault `f` happen to node `node` and ends it (restart, SIGCONT, heal); answers what happened. */
async function inflict(cluster: Cluster, f: PlannedFault, node: number, log: (s: string) => void): Promise<string> {
  const ids = cluster.ids;
  switch (f.kind) {
    case 'kill-leader':
    case 'kill-node':
      await cluster.kill(node);
      await sleep(f.downMs);
      cluster.start(node);
      return `SIGKILL, restarted after ${f.downMs} ms`;
    case 'pause':
      cluster.pause(node);
      await sleep(f.downMs);
      cluster.resume(node);
      return `SIGSTOP for ${f.downMs} ms, then SIGCONT`;
    case 'power-loss': {
      const lost = await cluster.powerCut(node);
      await sleep(f.downMs);
      cluster.start(node);
      return `power cut (SIGKILL; ${describeLost(lost)}), restarted after ${f.downMs} ms`;
    }
    case 'transfer-kill': {
      cluster.terminate(node);
      await sleep(f.delayMs ?? 0);
      const stoppedAlready = !cluster.running(node);
      const lost = await cluster.powerCut(node);
      await sleep(f.downMs);
      cluster.start(node);
      return `SIGTERM (hand leadership over, then stop), power cut ${f.delayMs} ms later (${stoppedAlready ? 'it had already exited cleanly' : 'mid-stop'}; ${describeLost(lost)}), restarted after ${f.downMs} ms`;
    }
    case 'snapshot-install': {
      // What this node's snapshot fetches have been, before the cut (its layer's counters).
      const fetched = (): number => {
        const c = cluster.netState(node)?.counters.fetchSnapshot;
        return c === undefined ? 0 : c.calls - c.blocked;
      };
      const fetchedBefore = fetched();
      const t0 = Date.now();
      const applied = await cluster.isolate(node);
      await sleep(Math.max(0, (f.isolateMs ?? 0) - (Date.now() - t0)));
      const healedNet = await cluster.healNet();
      const t1 = Date.now();
      const seen = await Cluster.until(async () => fetched() > fetchedBefore, 8_000, 10);
      const seenAfterMs = Date.now() - t1;
      if (seen) await sleep(f.delayMs ?? 0);
      const lost = await cluster.powerCut(node);
      await sleep(f.downMs);
      cluster.start(node);
      if (!seen) log(`  (no snapshot fetch by ${ids[node]} within 8 s of the heal; power cut anyway)`);
      return (
        `${ids[node]} cut off for ${f.isolateMs} ms (cut confirmed: ${applied ? 'yes' : 'NO'}; heal confirmed: ${healedNet ? 'yes' : 'NO'}); ` +
        (seen ? `a snapshot fetch began ${seenAfterMs} ms after the heal; power cut ${f.delayMs} ms later` : 'no snapshot fetch within 8 s of the heal; power cut then') +
        ` (${describeLost(lost)}); restarted after ${f.downMs} ms`
      );
    }
    default: {
      const to = f.to;
      const applied = f.kind === 'cut-one-way' ? await cluster.cut(node, [to!]) : await cluster.isolate(node);
      await sleep(f.downMs);
      const healed = await cluster.healNet();
      const how = f.kind === 'cut-one-way' ? `${ids[node]} cannot send to ${ids[to!]} (the other way works)` : `${ids[node]} cut off from both others, both ways`;
      return `${how} for ${f.downMs} ms (cut confirmed by every node: ${applied ? 'yes' : 'NO'}; heal confirmed: ${healed ? 'yes' : 'NO'})`;
    }
  }
}

async function sleepUnless(ms: number, stop: () => boolean): Promise<void> {
  const until = Date.now() + ms;
  while (!stop() && Date.now() < until) await sleep(Math.min(200, until - Date.now()));
}

export interface LeaderFault {
  faultId: number;
  node: string;
  partition: number;
  /** ms from the fault to the first acknowledged write on that partition started after it (null: none). */
  recoveryMs: number | null;
}

export interface KindFigures {
  faults: number;
  /** HTTP attempts started inside the windows of the faults of this kind, and those that failed (not 2xx). */
  attempts: number;
  failed: number;
  failedShare: number;
  /** The worst single fault's share. */
  maxFailedShare: number;
  /** Median and max of the windows (fault start to healedAt). */
  windowMedianMs: number | null;
  windowMaxMs: number | null;
}

export interface Availability {
  /** For each leader kill: ms from the kill to the first acknowledged write on that partition started after it (null: none). */
  leaderKills: LeaderFault[];
  recoveryMedianMs: number | null;
  recoveryMaxMs: number | null;
  /** The same for each leader isolated by a network cut. */
  leaderIsolations: LeaderFault[];
  isolationRecoveryMedianMs: number | null;
  isolationRecoveryMaxMs: number | null;
  /** The same for each leader stopped with SIGTERM (and cut mid-hand-over: transfer-kill). */
  leaderStops: LeaderFault[];
  stopRecoveryMedianMs: number | null;
  stopRecoveryMaxMs: number | null;
  /** Per fault: HTTP attempts made while it lasted (start to healedAt) and the share that failed (not 2xx). */
  perFault: { faultId: number; kind: FaultKind; node: string; to?: string; partition?: number; durationMs: number; attempts: number; failed: number; failedShare: number }[];
  /** Per kind (every kind, faults 0 when none happened). */
  byKind: Record<FaultKind, KindFigures>;
  /** Outside every fault. */
  baseline: { attempts: number; failed: number; failedShare: number };
}

const median = (xs: number[]): number | null => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length === 0 ? null : s.length % 2 === 1 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};

export function availability(h: History): Availability {
  const writes = h.ops.filter((o) => (o.type === 'send' || o.type === 'publish') && o.outcome === 'ok').sort((a, b) => a.end - b.end);
  const leaderFaults = (kind: FaultKind): LeaderFault[] =>
    h.faults
      .filter((f) => f.kind === kind && f.partition !== undefined)
      .map((f) => {
        const next = writes.find((o) => o.partition === f.partition && o.start >= f.start);
        return { faultId: f.id, node: f.node, partition: f.partition!, recoveryMs: next === undefined ? null : next.end - f.start };
      });
  const recovered = (xs: LeaderFault[]): number[] => xs.map((k) => k.recoveryMs).filter((x): x is number => x !== null);
  const leaderKills = leaderFaults('kill-leader');
  const leaderIsolations = leaderFaults('isolate-leader');
  const leaderStops = leaderFaults('transfer-kill');
  const attempts = h.ops.flatMap((o) => o.attempts);
  const failed = (st: number): boolean => st < 200 || st >= 300;
  const windows = h.faults.map((f) => [f.start, f.healedAt ?? f.end] as const);
  const perFault = h.faults.map((f, k) => {
    const [a, b] = windows[k]!;
    const inside = attempts.filter(([s]) => s >= a && s <= b);
    const nFailed = inside.filter(([, , , st]) => failed(st)).length;
    return {
      faultId: f.id,
      kind: f.kind,
      node: f.node,
      ...(f.to === undefined ? {} : { to: f.to }),
      ...(f.partition === undefined ? {} : { partition: f.partition }),
      durationMs: b - a,
      attempts: inside.length,
      failed: nFailed,
      failedShare: inside.length === 0 ? 0 : nFailed / inside.length,
    };
  });
  const byKind = Object.fromEntries(
    FAULT_KINDS.map((kind) => {
      const mine = perFault.filter((f) => f.kind === kind);
      const att = mine.reduce((n, f) => n + f.attempts, 0);
      const fl = mine.reduce((n, f) => n + f.failed, 0);
      const durations = mine.map((f) => f.durationMs);
      const figures: KindFigures = {
        faults: mine.length,
        attempts: att,
        failed: fl,
        failedShare: att === 0 ? 0 : fl / att,
        maxFailedShare: Math.max(0, ...mine.map((f) => f.failedShare)),
        windowMedianMs: median(durations),
        windowMaxMs: durations.length === 0 ? null : Math.max(...durations),
      };
      return [kind, figures];
    }),
  ) as Record<FaultKind, KindFigures>;
  const outside = attempts.filter(([s]) => !windows.some(([a, b]) => s >= a && s <= b));
  const outFailed = outside.filter(([, , , st]) => failed(st)).length;
  const killRec = recovered(leaderKills);
  const isoRec = recovered(leaderIsolations);
  const stopRec = recovered(leaderStops);
  return {
    leaderKills,
    recoveryMedianMs: median(killRec),
    recoveryMaxMs: killRec.length === 0 ? null : Math.max(...killRec),
    leaderIsolations,
    isolationRecoveryMedianMs: median(isoRec),
    isolationRecoveryMaxMs: isoRec.length === 0 ? null : Math.max(...isoRec),
    leaderStops,
    stopRecoveryMedianMs: median(stopRec),
    stopRecoveryMaxMs: stopRec.length === 0 ? null : Math.max(...stopRec),
    perFault,
    byKind,
    baseline: { attempts: outside.length, failed: outFailed, failedShare: outside.length === 0 ? 0 : outFailed / outside.length },
  };
}
