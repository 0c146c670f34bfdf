// Series for `promtool test rules` taken from what real nodes exported: a node's /metrics scraped in
// each phase of a situation (healthy, a node cut off, two nodes down, ...), then laid out as one
// sample a minute, so that the rules' `for:` durations and ranges see the situation last.
//
// A phase is either one scrape a minute (real scrapes, seconds apart, stand for minutes), or a
// situation that lasts: then a gauge holds its last scraped value, and a counter goes on growing each
// minute by what it grew between the phase's two scrapes. A node whose scrape failed has `up` 0 and
// its series end with a stale marker, as Prometheus records a dead target.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { request, type Dispatcher } from 'undici';
import { parse, stringify } from 'yaml';

export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
  /** counter or gauge (histograms and summaries are left out). */
  type: string;
}

/** One node's scrape: its samples, or null when it answered nothing. */
export type Scrape = Sample[] | null;

/** Parses Prometheus text format 0.0.4 (counters and gauges only). */
export function parseMetrics(text: string): Sample[] {
  const types = new Map<string, string>();
  const out: Sample[] = [];
  for (const line of text.split('\n')) {
    const type = /^# TYPE (\S+) (\S+)$/.exec(line);
    if (type !== null) types.set(type[1]!, type[2]!);
    if (line === '' || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (m === null) continue;
    const t = types.get(m[1]!);
    if (t !== 'counter' && t !== 'gauge') continue;
    const value = Number(m[3]);
    if (!Number.isFinite(value)) continue;
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]!] = l[2]!;
    out.push({ name: m[1]!, labels, value, type: t });
  }
  return out;
}

/** GET url/metrics (through `dispatcher`, for HTTPS); null when the node does not answer within 5 s. */
export async function scrape(url: string, dispatcher?: Dispatcher): Promise<Scrape> {
  try {
    const res = await request(`${url}/metrics`, { signal: AbortSignal.timeout(5_000), ...(dispatcher === undefined ? {} : { dispatcher }) });
    const text = await res.body.text();
    return res.statusCode === 200 ? parseMetrics(text) : null;
  } catch {
    return null;
  }
}

/** What keeps growing while a situation lasts: counters. */
const grows = (s: Sample): boolean => s.type === 'counter';

export interface Phase {
  minutes: number;
  /** Per node (instance n1, n2, n3): the scrape at the phase's start, and one a little later. */
  from: Scrape[];
  to: Scrape[];
}

/** Real scrapes, seconds apart, laid out one a minute. */
export const minuteByMinute = (scrapes: Scrape[][]): Phase[] => scrapes.map((s) => ({ minutes: 1, from: s, to: s }));

/**
 * Whether the nodes `nodes` report the same commit and applied index for every partition (but
 * `except`): a scrape taken between a leader's commit and a follower's apply would otherwise hold the
 * follower a few entries behind for as long as a situation lasts.
 */
export function agree(scrapes: Scrape[], nodes: number[], except: string[] = []): boolean {
  const seen = new Map<string, number>();
  for (const i of nodes) {
    const s = scrapes[i];
    if (s === null || s === undefined) return false;
    for (const x of s) {
      if (x.name !== 'mom_raft_commit_index' && x.name !== 'mom_raft_applied_index') continue;
      const p = x.labels.partition!;
      if (except.includes(p)) continue;
      const k = `${x.name}/${p}`;
      if (seen.has(k) && seen.get(k) !== x.value) return false;
      seen.set(k, x.value);
    }
  }
  return true;
}

/** Scrapes every url until `nodes` agree (at most 50 tries, 100 ms apart); the last scrape. */
export async function steadyScrape(urls: string[], nodes: number[], except: string[] = []): Promise<Scrape[]> {
  let last: Scrape[] = [];
  for (let i = 0; i < 50; i++) {
    last = await Promise.all(urls.map((u) => scrape(u)));
    if (agree(last, nodes, except)) return last;
    await new Promise((r) => setTimeout(r, 100));
  }
  return last;
}

const key = (instance: string, s: Sample): string => {
  const labels = { ...s.labels, job: 'mom', instance };
  return `${s.name}{${Object.keys(labels)
    .sort()
    // Values as the text format escaped them, which PromQL's string syntax reads alike.
    .map((k) => `${k}="${labels[k as keyof typeof labels]}"`)
    .join(',')}}`;
};

/** promtool's input_series for the phases, one sample a minute, of nodes n1, n2, n3. */
export function inputSeries(phases: Phase[]): { series: string; values: string }[] {
  const total = phases.reduce((n, p) => n + p.minutes, 0);
  const series = new Map<string, string[]>();
  const at = (k: string): string[] => {
    let v = series.get(k);
    if (v === undefined) series.set(k, (v = Array<string>(total).fill('_')));
    return v;
  };
  let minute = 0;
  for (const phase of phases) {
    phase.to.forEach((to, i) => {
      const instance = `n${i + 1}`;
      const up = at(`up{instance="${instance}",job="mom"}`);
      for (let k = 0; k < phase.minutes; k++) up[minute + k] = to === null ? '0' : '1';
      if (to === null) return;
      const before = new Map((phase.from[i] ?? []).map((s) => [key(instance, s), s.value]));
      for (const s of to) {
        const values = at(key(instance, s));
        // A counter first seen in the later scrape (a status not answered before) grew from 0.
        const step = grows(s) ? s.value - (before.get(key(instance, s)) ?? 0) : 0;
        for (let k = 0; k < phase.minutes; k++) values[minute + k] = String(s.value + Math.max(0, step) * k);
      }
    });
    minute += phase.minutes;
  }
  // A series that stops (its node down, its partition led elsewhere) ends with a stale marker.
  for (const values of series.values()) for (let m = 1; m < total; m++) if (values[m] === '_' && values[m - 1] !== '_' && values[m - 1] !== 'stale') values[m] = 'stale';
  return [...series].map(([s, v]) => ({ series: s, values: v.join(' ') }));
}

/** Runs `promtool test rules` on these tests of `rules`: its exit code and what it printed. */
export function promtoolTest(bin: string, rules: string, tests: unknown[]): { code: number; out: string } {
  const dir = mkdtempSync(join(tmpdir(), 'mom-alert-series-'));
  try {
    const file = join(dir, 'test.yml');
    writeFileSync(file, stringify({ rule_files: [rules], evaluation_interval: '1m', tests }));
    const r = spawnSync(bin, ['test', 'rules', file], { encoding: 'utf8' });
    if (r.error !== undefined) throw r.error;
    return { code: r.status ?? -1, out: `${r.stdout}${r.stderr}`.slice(0, 4000) };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

interface Rule {
  alert: string;
  annotations: Record<string, string>;
}

/**
 * An alert promtool should find firing: its labels and its annotations rendered as Prometheus renders
 * them (the rule's labels are not added: pass them in `labels`).
 */
export function firing(rulesText: string, alert: string, labels: Record<string, string>, value = ''): { exp_labels: Record<string, string>; exp_annotations: Record<string, string> } {
  const rules = (parse(rulesText) as { groups: { rules: Rule[] }[] }).groups.flatMap((g) => g.rules);
  const rule = rules.find((r) => r.alert === alert);
  const exp_annotations: Record<string, string> = {};
  // A rule that is missing fires nothing: promtool then reports the alert expected and not found.
  for (const [k, v] of Object.entries(rule?.annotations ?? {})) {
    exp_annotations[k] = v.replace(/\{\{ \$labels\.(\w+) \}\}/g, (_, name: string) => labels[name] ?? '').replace(/\{\{ \$value \}\}/g, value);
  }
  return { exp_labels: labels, exp_annotations };
}
