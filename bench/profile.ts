// `npx tsx bench/profile.ts [--from S] [--to S] [--map FILE] <file.cpuprofile>...`: where a node's CPU time went,
// from V8 profiles (`node --cpu-prof`; `npm run bench -- --profile` writes one per node, with a copy of
// the bundle's source map next to them). Prints self time by area (our layers, each dependency, Node
// internals, garbage collection, idle), time by stage (below), then the top functions by self time and
// by inclusive time, and writes <file>.folded (folded stacks, for flame graph tools).
//
// The nodes run the esbuild bundle (dist/main.js); its frames are mapped back to their source files
// through the bundle's source map: --map FILE, else main.js.map next to the profile, else the bundle's
// own dist/main.js.map (right only while the bundle is the one profiled).
//
// Stages: each sample is charged to the nearest frame of ours on its stack (the innermost frame whose
// source is under src/), by that frame's file: src/api is HTTP in and the answer, src/cluster/router,
// forward-batch and answer forwarding, src/cluster/transport, raft-stream, frames, message-queue, wire,
// snapshot-fetch and internal-* the inter-node calls (replication), src/raft the Raft core, src/partition the loop that proposes, persists, sends and
// applies, src/store/wal and raft-log the log write, src/store/broker the apply. So a library, SQLite or
// Node's own code runs on the account of the code of ours that called it. Samples with no frame of
// ours on the stack are the HTTP client between nodes (undici: answers to appends and forwarded
// requests) or the HTTP server (Node's http and net, fastify) when such frames are on it, else garbage
// collection, V8 and native work, or other. HTTP in and the answer are one stage: both are src/api.
// It is a classification of stacks by file, not a trace of requests: work a stage causes later (a
// timer, a callback from the thread pool, a socket's answer) is charged to whatever runs that callback.
// A second table puts the samples inside a system call apart (SYSTEM_CALLS): what is left of each
// stage is its work in user space, which the process's user CPU time (`npm run bench` prints it
// apart from the kernel's) measures without the profiler's weighting.
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { SourceMap } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
  columnNumber: number;
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

/**
 * Where a frame's code comes from: `src/...` for our code (through the source map for the bundle's
 * frames, or from the path when the nodes ran the TypeScript sources), else the frame's URL.
 */
export type Resolve = (f: CallFrame) => string;

export function resolver(mapFile: string | null): Resolve {
  const map = mapFile !== null && existsSync(mapFile) ? new SourceMap(JSON.parse(readFileSync(mapFile, 'utf8')) as ConstructorParameters<typeof SourceMap>[0]) : null;
  const cache = new Map<string, string>();
  return (f) => {
    if (f.url.includes('node_modules')) return f.url;
    if (!f.url.endsWith('/dist/main.js')) return /\/(src\/.*)$/.exec(f.url)?.[1] ?? f.url;
    if (map === null) return f.url;
    const key = `${f.lineNumber}:${f.columnNumber}`;
    let src = cache.get(key);
    if (src === undefined) {
      const e = map.findEntry(f.lineNumber, f.columnNumber) as { originalSource?: string };
      src = /(?:^|\/)(src\/.*)$/.exec(e.originalSource ?? '')?.[1] ?? f.url;
      cache.set(key, src);
    }
    return src;
  };
}

/** The area a frame belongs to: a folder of src/, a dependency, Node itself, or V8's own entries. */
export function area(f: CallFrame, source: string): string {
  const name = f.functionName;
  if (f.url === '') {
    if (name === '(idle)' || name === '(program)' || name === '(garbage collector)' || name === '(root)') return name;
    return '(native)';
  }
  if (source.startsWith('src/')) return source.split('/').slice(0, 2).join('/');
  if (f.url.endsWith('/dist/main.js')) return 'dist/main.js (our code, bundled, no source map)';
  const dep = /node_modules\/((?:@[^/]+\/)?[^/]+)/g;
  let last: string | null = null;
  for (let m = dep.exec(f.url); m !== null; m = dep.exec(f.url)) last = m[1]!;
  if (last !== null) return last;
  if (f.url.startsWith('node:')) return 'node:' + f.url.slice(5).split('/')[0];
  return f.url;
}

/** The stage of our code a source file belongs to (see the top of this file), or null when it is not ours. */
export function stageOf(source: string): string | null {
  if (!source.startsWith('src/')) return null;
  if (source.startsWith('src/api/')) return 'HTTP in and answer (src/api)';
  if (/^src\/cluster\/(router|forward|answer)/.test(source)) return 'forwarding to the leader (src/cluster/router, forward-batch, answer)';
  if (/^src\/cluster\/(transport|wire|frames|raft-stream|message-queue|snapshot-fetch|internal-)/.test(source)) {
    return 'replication and inter-node calls (src/cluster/transport, raft-stream, frames, message-queue, wire, snapshot-fetch, internal-*)';
  }
  if (source.startsWith('src/raft/')) return 'Raft core (src/raft)';
  if (source.startsWith('src/partition/')) return 'partition loop: propose, persist, send, apply (src/partition)';
  if (/^src\/store\/(wal|raft-log)\//.test(source)) return 'log write (src/store/wal, raft-log)';
  if (source.startsWith('src/store/broker/')) return 'apply: the state machine (src/store/broker)';
  return `other code of ours (${source.split('/').slice(0, 2).join('/')})`;
}

const HTTP_CLIENT = /node_modules\/undici\//;
const HTTP_SERVER = /^node:(_http_|net$|internal\/(http|net|stream|streams\/|js_stream)|stream$)|node_modules\/(fastify|@fastify|find-my-way|avvio|light-my-request|fast-json-stringify|secure-json-parse|pino)/;

/** A frame as the tables print it: its function and its source file (ours) or file and line (anyone's). */
export const label = (f: CallFrame, source: string): string =>
  `${f.functionName || '(anonymous)'} ${source.startsWith('src/') ? source : `${f.url.replace(/^.*\/(node_modules)\//, '$1/')}:${f.lineNumber + 1}`}`;

/**
 * Native frames that are system calls (sockets' and files' writes, the log's syncs). The profiler
 * weighs a sample by the time since the one before, so a thread preempted inside one (the write
 * woke the process it writes to) is charged there too: on these two cores a leader's `writev` took
 * 30% of its samples while the whole process spent a quarter of its CPU in the kernel.
 */
const SYSTEM_CALLS = new Set(['writev', 'writeBuffer', 'writeBuffers', 'writeUtf8String', 'writeLatin1String', 'writeAsciiString', 'writeUcs2String', 'fdatasync', 'fsync', 'read', 'open', 'close', 'ftruncate', 'rename', 'unlink']);
export const SYSTEM_CALL_STAGE = 'system calls: the kernel, and waits of a thread preempted inside one';

export interface Analysis {
  totalMs: number;
  busyMs: number;
  byArea: [string, number][];
  byStage: [string, number][];
  /** byStage with the samples inside a system call apart (SYSTEM_CALL_STAGE): what each stage spends in user space. */
  byStageSystemCallsApart: [string, number][];
  selfTop: [string, number][];
  inclusiveTop: [string, number][];
  folded: string;
}

export function analyze(p: Profile, fromMs = 0, resolve: Resolve = resolver(null), toMs = Infinity): Analysis {
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const sourceOf = new Map(p.nodes.map((n) => [n.id, resolve(n.callFrame)]));
  const selfUs = new Map<number, number>();
  // samples from `fromMs` to `toMs` into the profile only (skip start-up, or keep one phase)
  let at = 0;
  p.samples.forEach((id, k) => {
    at += p.timeDeltas[k] ?? 0;
    if (at >= fromMs * 1000 && at < toMs * 1000) selfUs.set(id, (selfUs.get(id) ?? 0) + (p.timeDeltas[k] ?? 0));
  });
  const total = [...selfUs.values()].reduce((a, b) => a + b, 0);
  const idleIds = p.nodes.filter((n) => n.callFrame.functionName === '(idle)').map((n) => n.id);
  const busy = total - idleIds.reduce((a, id) => a + (selfUs.get(id) ?? 0), 0);
  const add = (m: Map<string, number>, k: string, us: number): void => void m.set(k, (m.get(k) ?? 0) + us);
  const areas = new Map<string, number>();
  const stages = new Map<string, number>();
  const userStages = new Map<string, number>();
  const selfBy = new Map<string, number>();
  const inclBy = new Map<string, number>();
  const folded = new Map<string, number>();
  for (const [id, us] of selfUs) {
    const n = byId.get(id)!;
    const name = n.callFrame.functionName;
    add(areas, area(n.callFrame, sourceOf.get(id)!), us);
    add(selfBy, label(n.callFrame, sourceOf.get(id)!), us);
    const stack: string[] = [];
    const seen = new Set<string>();
    let stage: string | null = null;
    let client = false;
    let server = false;
    for (let cur: number | undefined = id; cur !== undefined; cur = parent.get(cur)) {
      const f = byId.get(cur)!.callFrame;
      const source = sourceOf.get(cur)!;
      stage ??= stageOf(source);
      client ||= HTTP_CLIENT.test(f.url);
      server ||= HTTP_SERVER.test(f.url);
      const l = label(f, source);
      stack.push(l);
      if (!seen.has(l)) inclBy.set(l, (inclBy.get(l) ?? 0) + us);
      seen.add(l);
    }
    if (name !== '(idle)') {
      let k: string;
      if (stage !== null) k = stage;
      else if (client) k = 'HTTP client between nodes, no frame of ours on the stack (undici)';
      else if (server) k = 'HTTP server and sockets, no frame of ours on the stack (Node http/net, fastify)';
      else if (name === '(garbage collector)') k = '(garbage collector)';
      else if (name === '(program)') k = '(program): V8 and native work outside JavaScript';
      else k = 'other, no frame of ours on the stack';
      add(stages, k, us);
      add(userStages, n.callFrame.url === '' && SYSTEM_CALLS.has(name) ? SYSTEM_CALL_STAGE : k, us);
    }
    const key = stack.reverse().join(';');
    folded.set(key, (folded.get(key) ?? 0) + us);
  }
  const top = (m: Map<string, number>, n: number): [string, number][] => [...m].sort((a, b) => b[1] - a[1]).slice(0, n).map(([k, v]) => [k, v / 1000]);
  return {
    totalMs: total / 1000,
    busyMs: busy / 1000,
    byArea: top(areas, 40),
    byStage: top(stages, 40),
    byStageSystemCallsApart: top(userStages, 40),
    selfTop: top(selfBy, 40),
    inclusiveTop: top(inclBy, 60),
    folded: [...folded].map(([k, v]) => `${k} ${Math.round(v)}`).join('\n') + '\n',
  };
}

/** The source map for a profile: `explicit`, else main.js.map next to it, else the bundle's own. */
export function mapFor(profileFile: string, explicit: string | null): string | null {
  if (explicit !== null) return explicit;
  const beside = join(dirname(profileFile), 'main.js.map');
  if (existsSync(beside)) return beside;
  const bundled = join(dirname(fileURLToPath(import.meta.url)), '..', 'dist', 'main.js.map');
  return existsSync(bundled) ? bundled : null;
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const opt = (name: string): string | null => {
    const i = process.argv.indexOf(name);
    return i < 0 ? null : process.argv[i + 1]!;
  };
  const fromMs = Number(opt('--from') ?? 0) * 1000;
  const toMs = Number(opt('--to') ?? Infinity) * 1000;
  const files = process.argv.slice(2).filter((a, k, all) => !a.startsWith('--') && !['--from', '--to', '--map'].includes(all[k - 1]!));
  for (const file of files) {
    const a = analyze(JSON.parse(readFileSync(file, 'utf8')) as Profile, fromMs, resolver(mapFor(file, opt('--map'))), toMs);
    // shares of the busy time (everything but idle)
    const pct = (ms: number): string => `${((ms / a.busyMs) * 100).toFixed(1).padStart(5)}%`;
    console.log(`\n== ${file}: ${(a.totalMs / 1000).toFixed(1)} s sampled${fromMs > 0 ? ` after the first ${fromMs / 1000} s` : ''}${toMs < Infinity ? ` up to ${toMs / 1000} s` : ''}, ${(a.busyMs / 1000).toFixed(1)} s busy; shares of the busy time`);
    console.log('\n-- self time by area');
    for (const [k, ms] of a.byArea) console.log(`${pct(ms)}  ${k}`);
    console.log('\n-- by stage (each sample charged to the nearest frame of ours on its stack, by its file)');
    for (const [k, ms] of a.byStage) console.log(`${pct(ms)}  ${k}`);
    console.log('\n-- by stage, system calls apart (what each stage spends in user space)');
    for (const [k, ms] of a.byStageSystemCallsApart) console.log(`${pct(ms)}  ${k}`);
    console.log('\n-- top functions, self time');
    for (const [k, ms] of a.selfTop) console.log(`${pct(ms)}  ${k}`);
    console.log('\n-- top functions, inclusive time');
    for (const [k, ms] of a.inclusiveTop) console.log(`${pct(ms)}  ${k}`);
    writeFileSync(`${file}.folded`, a.folded);
  }
}
