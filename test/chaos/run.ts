// npm run chaos -- --minutes 10 --seed N [--cover kind,kind,...] [--via nginx]
// (--cover: fault kinds that come first, once each, default all of them; the rest are drawn. --via nginx: the workload goes
// through nginx in front of the three nodes, installed from Debian's packages when missing.)
// Runs the chaos scenario (scenario.ts) and writes history.json, report.json and summary.txt into
// data/chaos/<timestamp>-seed<N>/. Prints the seed and the summary; on failure, the relevant history.
// Exit code 1 on any failure.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { FAULT_KINDS, type FaultKind } from './history.js';
import { runChaos } from './scenario.js';

function arg(name: string): string | undefined {
  const i = process.argv.indexOf(`--${name}`);
  if (i >= 0) return process.argv[i + 1];
  const eq = process.argv.find((a) => a.startsWith(`--${name}=`));
  return eq?.slice(name.length + 3);
}

const minutes = Number(arg('minutes') ?? '2');
const seed = Number(arg('seed') ?? String(Date.now() % 100_000));
// By default every kind comes once first (in an order drawn from the seed), so each run has them all.
const cover = (arg('cover') ?? FAULT_KINDS.join(',')).split(',').filter((k) => k !== '') as FaultKind[];
const via = arg('via') ?? 'nodes';
if (via !== 'nodes' && via !== 'nginx') {
  console.error('--via must be nodes or nginx');
  process.exit(2);
}
if (!Number.isFinite(minutes) || minutes <= 0 || !Number.isInteger(seed) || seed < 0 || cover.some((k) => !FAULT_KINDS.includes(k))) {
  console.error(`usage: npm run chaos -- [--minutes M] [--seed N] [--cover kind,...]; kinds: ${FAULT_KINDS.join(', ')}`);
  process.exit(2);
}
const stamp = new Date().toISOString().replace(/[:.]/g, '-');
const runDir = arg('out') ?? join(import.meta.dirname, '..', '..', 'data', 'chaos', `${stamp}-seed${seed}`);
console.log(`chaos: seed ${seed}, ${minutes} min, via ${via}, folder ${runDir}`);
try {
  const res = await runChaos({ seed, durationMs: Math.round(minutes * 60_000), runDir, via, schedule: { cover } });
  console.log('');
  console.log(res.summary);
  if (!res.ok) {
    console.log(`seed ${seed} FAILED. Relevant history:`);
    console.log(readFileSync(join(runDir, 'relevant-history.json'), 'utf8').slice(0, 50_000));
    if (res.nodeErrors.length > 0) console.log(`node errors:\n${res.nodeErrors.slice(0, 20).join('\n')}`);
  }
  console.log(`seed ${seed}: ${res.ok ? 'passed' : 'FAILED'}`);
  process.exitCode = res.ok ? 0 : 1;
} catch (err) {
  console.error(`seed ${seed}: the run itself failed:`, err);
  process.exitCode = 1;
}
