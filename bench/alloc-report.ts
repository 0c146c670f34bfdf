// `npx tsx bench/alloc-report.ts [--map FILE] [--top N] <file.heapprofile>...`: where the bytes of
// sampled heap profiles (bench/alloc-watch.mjs) were allocated. For each file: the bytes allocated in
// its window (V8's estimate from its samples), then by stage (each allocation charged to the nearest
// frame of ours on its stack, as bench/profile.ts charges CPU) and the top allocating functions with
// the frame of ours they ran for. Frames of the bundle are mapped back to their source files through
// its source map: --map FILE, else the bundle's own dist/main.js.map (right only while the bundle is
// the one that ran).
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { numberArg } from './args.js';
import { label, resolver, stageOf, type CallFrame, type Resolve } from './profile.js';

interface HeapNode {
  callFrame: CallFrame;
  selfSize: number;
  children: HeapNode[];
}

const top = numberArg('top', 25);
const mapAt = process.argv.indexOf('--map');
const resolve: Resolve = resolver(mapAt > 0 ? process.argv[mapAt + 1]! : join(import.meta.dirname, '..', 'dist', 'main.js.map'));
const files = process.argv.slice(2).filter((a, i, all) => !a.startsWith('--') && !(all[i - 1] === '--map' || all[i - 1] === '--top'));

const mb = (n: number): string => `${(n / 1048576).toFixed(1)} MB`;
const add = (m: Map<string, number>, k: string, v: number): void => void m.set(k, (m.get(k) ?? 0) + v);

for (const file of files) {
  const { head } = JSON.parse(readFileSync(file, 'utf8')) as { head: HeapNode };
  const byStage = new Map<string, number>();
  const bySite = new Map<string, number>();
  let total = 0;
  const walk = (n: HeapNode, ours: string | null): void => {
    const source = resolve(n.callFrame);
    const here = source.startsWith('src/') ? label(n.callFrame, source) : ours;
    if (n.selfSize > 0) {
      total += n.selfSize;
      add(byStage, here === null ? '(no frame of ours)' : (stageOf(here.split(' ').pop()!) ?? here), n.selfSize);
      const self = label(n.callFrame, source);
      add(bySite, self === here || here === null ? self : `${self}  <- ${here}`, n.selfSize);
    }
    for (const c of n.children) walk(c, here);
  };
  walk(head, null);
  const sorted = (m: Map<string, number>): [string, number][] => [...m].sort((a, b) => b[1] - a[1]);
  console.log(`== ${file}: ${mb(total)} allocated`);
  console.log('-- by stage');
  for (const [k, v] of sorted(byStage)) console.log(`${((100 * v) / total).toFixed(1).padStart(5)}%  ${k}`);
  console.log(`-- top ${top} allocating functions (<- the frame of ours they ran for)`);
  for (const [k, v] of sorted(bySite).slice(0, top)) console.log(`${((100 * v) / total).toFixed(1).padStart(5)}%  ${k}`);
}
