// `npx tsx bench/profile.ts [--from S] <file.cpuprofile>...`: where a node's CPU time went, from V8 profiles
// (`node --cpu-prof`; `npm run bench -- --profile` writes one per node). Prints self time by area
// (our layers, each dependency, Node internals, garbage collection, idle), then the top functions by
// self time and by inclusive time, and writes <file>.folded (folded stacks, for flame graph tools).
import { readFileSync, writeFileSync } from 'node:fs';

interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
}
interface ProfileNode {
  id: number;
  callFrame: CallFrame;
  children?: number[];
}
interface Profile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
  startTime: number;
  endTime: number;
}

/** The area a frame belongs to: a folder of src/, a dependency, Node itself, or V8's own entries. */
export function area(f: CallFrame): string {
  const name = f.functionName;
  if (f.url.endsWith('/dist/main.js')) return 'dist/main.js (our code, bundled)';
  if (f.url === '') {
    if (name === '(idle)' || name === '(program)' || name === '(garbage collector)' || name === '(root)') return name;
    return '(native)';
  }
  const src = /\/src\/([^/]+)\//.exec(f.url);
  if (src !== null && !f.url.includes('node_modules')) return `src/${src[1]}`;
  const dep = /node_modules\/((?:@[^/]+\/)?[^/]+)/g;
  let last: string | null = null;
  for (let m = dep.exec(f.url); m !== null; m = dep.exec(f.url)) last = m[1]!;
  if (last !== null) return last;
  if (f.url.startsWith('node:')) return 'node:' + f.url.slice(5).split('/')[0];
  return f.url;
}

const label = (f: CallFrame): string => `${f.functionName || '(anonymous)'} ${f.url.replace(/^.*\/(src|node_modules)\//, '$1/')}:${f.lineNumber + 1}`;

export function analyze(p: Profile, fromMs = 0): { totalMs: number; busyMs: number; byArea: [string, number][]; selfTop: [string, number][]; inclusiveTop: [string, number][]; folded: string } {
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const selfUs = new Map<number, number>();
  // samples after `fromMs` into the profile only (skip start-up)
  let at = 0;
  p.samples.forEach((id, k) => {
    at += p.timeDeltas[k] ?? 0;
    if (at >= fromMs * 1000) selfUs.set(id, (selfUs.get(id) ?? 0) + (p.timeDeltas[k] ?? 0));
  });
  const total = [...selfUs.values()].reduce((a, b) => a + b, 0);
  const idleIds = p.nodes.filter((n) => n.callFrame.functionName === '(idle)').map((n) => n.id);
  const busy = total - idleIds.reduce((a, id) => a + (selfUs.get(id) ?? 0), 0);
  const areas = new Map<string, number>();
  const selfBy = new Map<string, number>();
  const inclBy = new Map<string, number>();
  const folded = new Map<string, number>();
  for (const [id, us] of selfUs) {
    const n = byId.get(id)!;
    areas.set(area(n.callFrame), (areas.get(area(n.callFrame)) ?? 0) + us);
    selfBy.set(label(n.callFrame), (selfBy.get(label(n.callFrame)) ?? 0) + us);
    const stack: string[] = [];
    const seen = new Set<string>();
    for (let cur: number | undefined = id; cur !== undefined; cur = parent.get(cur)) {
      const l = label(byId.get(cur)!.callFrame);
      stack.push(l);
      if (!seen.has(l)) inclBy.set(l, (inclBy.get(l) ?? 0) + us);
      seen.add(l);
    }
    const key = stack.reverse().join(';');
    folded.set(key, (folded.get(key) ?? 0) + us);
  }
  const top = (m: Map<string, number>, n: number): [string, number][] => [...m].sort((a, b) => b[1] - a[1]).slice(0, n).map(([k, v]) => [k, v / 1000]);
  return {
    totalMs: total / 1000,
    busyMs: busy / 1000,
    byArea: top(areas, 40),
    selfTop: top(selfBy, 40),
    inclusiveTop: top(inclBy, 60),
    folded: [...folded].map(([k, v]) => `${k} ${Math.round(v)}`).join('\n') + '\n',
  };
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const fromAt = process.argv.indexOf('--from');
  const fromMs = fromAt < 0 ? 0 : Number(process.argv[fromAt + 1]) * 1000;
  for (const file of process.argv.slice(2).filter((a, k, all) => a !== '--from' && all[k - 1] !== '--from')) {
    const a = analyze(JSON.parse(readFileSync(file, 'utf8')) as Profile, fromMs);
    // shares of the busy time (everything but idle)
    const pct = (ms: number): string => `${((ms / a.busyMs) * 100).toFixed(1).padStart(5)}%`;
    console.log(`\n== ${file}: ${(a.totalMs / 1000).toFixed(1)} s sampled${fromMs > 0 ? ` after the first ${fromMs / 1000} s` : ''}, ${(a.busyMs / 1000).toFixed(1)} s busy; shares of the busy time`);
    console.log('\n-- self time by area');
    for (const [k, ms] of a.byArea) console.log(`${pct(ms)}  ${k}`);
    console.log('\n-- top functions, self time');
    for (const [k, ms] of a.selfTop) console.log(`${pct(ms)}  ${k}`);
    console.log('\n-- top functions, inclusive time');
    for (const [k, ms] of a.inclusiveTop) console.log(`${pct(ms)}  ${k}`);
    writeFileSync(`${file}.folded`, a.folded);
  }
}
