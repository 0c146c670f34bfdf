// Faults on a seeded schedule, one at a time (never more than one node down or paused, so a majority
// is always up): SIGKILL of the leader of a partition then restart; SIGKILL of a random node then
// restart; SIGSTOP of a node for longer than the election timeout (100 ms ticks x 10 -> 1-2 s; the
// pause is 3-5 s) then SIGCONT. Each fault is recorded in the history. Also: availability figures
// computed from a history.
import { Cluster, sleep } from './cluster.js';
import type { FaultKind, History, Recorder } from './history.js';
import { Rng } from './rng.js';

export interface PlannedFault {
  /** When to begin, in ms after the previous fault healed (or after the start). */
  gapMs: number;
  kind: FaultKind;
  /** kill-leader: the partition; kill-node and pause: the node index. */
  target: number;
  /** How long the node stays down or paused. */
  downMs: number;
}

/** The schedule: a pure function of the seed (no Math.random), as many faults as fit in `durationMs`. */
export function schedule(seed: number, durationMs: number, partitions: number): PlannedFault[] {
  const rng = new Rng(seed ^ 0x5eed);
  const out: PlannedFault[] = [];
  let t = 0;
  while (t < durationMs) {
    const r = rng.next();
    const kind: FaultKind = r < 0.4 ? 'kill-leader' : r < 0.7 ? 'kill-node' : 'pause';
    const f: PlannedFault = {
      gapMs: rng.int(2_000, 5_000),
      kind,
      target: kind === 'kill-leader' ? rng.int(0, partitions - 1) : rng.int(0, 2),
      downMs: kind === 'pause' ? rng.int(3_000, 5_000) : rng.int(1_000, 4_000),
    };
    // the fault, then up to ~5 s for the cluster to settle
    t += f.gapMs + f.downMs + 5_000;
    if (t > durationMs) break;
    out.push(f);
  }
  return out;
}

/** Runs the schedule until it ends or `stop()` answers true; heals after each fault. */
export async function runFaults(cluster: Cluster, rec: Recorder, plan: PlannedFault[], stop: () => boolean, log: (s: string) => void = () => {}): Promise<void> {
  for (const f of plan) {
    await sleepUnless(f.gapMs, stop);
    if (stop()) return;
    let node = f.target;
    let partition: number | undefined;
    if (f.kind === 'kill-leader') {
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
    const id = rec.id();
    const start = rec.now();
    if (f.kind === 'pause') cluster.pause(node);
    else await cluster.kill(node);
    log(`${(start / 1000).toFixed(1)} s: ${f.kind} ${cluster.ids[node]}${partition === undefined ? '' : ` (leader of partition ${partition})`} for ${f.downMs} ms`);
    await sleep(f.downMs);
    if (f.kind === 'pause') cluster.resume(node);
    else cluster.start(node);
    const end = rec.now();
    const healed = await Cluster.until(() => cluster.led(), 30_000);
    rec.fault({
      type: 'fault',
      id,
      kind: f.kind,
      node: cluster.ids[node]!,
      ...(partition === undefined ? {} : { partition }),
      start,
      end,
      healedAt: healed ? rec.now() : null,
      detail: f.kind === 'pause' ? `SIGSTOP for ${f.downMs} ms, then SIGCONT` : `SIGKILL, restarted after ${f.downMs} ms`,
    });
  }
}

async function sleepUnless(ms: number, stop: () => boolean): Promise<void> {
  const until = Date.now() + ms;
  while (!stop() && Date.now() < until) await sleep(Math.min(200, until - Date.now()));
}

export interface Availability {
  /** For each leader kill: ms from the kill to the first acknowledged write on that partition started after it (null: none). */
  leaderKills: { faultId: number; node: string; partition: number; recoveryMs: number | null }[];
  recoveryMedianMs: number | null;
  recoveryMaxMs: number | null;
  /** Per fault: HTTP attempts made while it lasted (start to healedAt) and the share that failed (not 2xx). */
  perFault: { faultId: number; kind: FaultKind; node: string; durationMs: number; attempts: number; failed: number; failedShare: number }[];
  /** Outside every fault. */
  baseline: { attempts: number; failed: number; failedShare: number };
}

export function availability(h: History): Availability {
  const writes = h.ops.filter((o) => (o.type === 'send' || o.type === 'publish') && o.outcome === 'ok').sort((a, b) => a.end - b.end);
  const leaderKills = h.faults
    .filter((f) => f.kind === 'kill-leader' && f.partition !== undefined)
    .map((f) => {
      const next = writes.find((o) => o.partition === f.partition && o.start >= f.start);
      return { faultId: f.id, node: f.node, partition: f.partition!, recoveryMs: next === undefined ? null : next.end - f.start };
    });
  const rec = leaderKills.map((k) => k.recoveryMs).filter((x): x is number => x !== null).sort((a, b) => a - b);
  const median = rec.length === 0 ? null : rec.length % 2 === 1 ? rec[(rec.length - 1) / 2]! : (rec[rec.length / 2 - 1]! + rec[rec.length / 2]!) / 2;
  const attempts = h.ops.flatMap((o) => o.attempts);
  const failed = (st: number): boolean => st < 200 || st >= 300;
  const windows = h.faults.map((f) => [f.start, f.healedAt ?? f.end] as const);
  const perFault = h.faults.map((f, k) => {
    const [a, b] = windows[k]!;
    const inside = attempts.filter(([s]) => s >= a && s <= b);
    const nFailed = inside.filter(([, , , st]) => failed(st)).length;
    return { faultId: f.id, kind: f.kind, node: f.node, durationMs: b - a, attempts: inside.length, failed: nFailed, failedShare: inside.length === 0 ? 0 : nFailed / inside.length };
  });
  const outside = attempts.filter(([s]) => !windows.some(([a, b]) => s >= a && s <= b));
  const outFailed = outside.filter(([, , , st]) => failed(st)).length;
  return {
    leaderKills,
    recoveryMedianMs: median,
    recoveryMaxMs: rec.length === 0 ? null : rec[rec.length - 1]!,
    perFault,
    baseline: { attempts: outside.length, failed: outFailed, failedShare: outside.length === 0 ? 0 : outFailed / outside.length },
  };
}
