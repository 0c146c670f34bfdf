// The simulator's command line: `npm run sim -- --seed N` replays one seed with its trace;
// `npm run sim -- --seeds 20000 [--from S]` runs many. Options: --mix NAME, --nodes 3|5, --duration T,
// --partial (SimOptions.partialFaults: single links cut, reads on deposed leaders).
import { parseArgs } from 'node:util';
import { MIXES, Simulation, Violation, optionsForSeed, type SimOptions, type SimResult } from './sim.js';

const { values } = parseArgs({
  options: {
    seed: { type: 'string' },
    seeds: { type: 'string' },
    from: { type: 'string', default: '1' },
    mix: { type: 'string' },
    nodes: { type: 'string' },
    duration: { type: 'string' },
    quiet: { type: 'boolean', default: false },
    partial: { type: 'boolean', default: false },
  },
});

function overrides(): Partial<SimOptions> {
  const o: { -readonly [K in keyof SimOptions]?: SimOptions[K] } = {};
  if (values.mix !== undefined) {
    const mix = MIXES[values.mix];
    if (mix === undefined) throw new Error(`unknown mix ${values.mix}; one of ${Object.keys(MIXES).join(', ')}`);
    o.mix = mix;
  }
  if (values.nodes !== undefined) o.nodes = Number(values.nodes);
  if (values.duration !== undefined) o.duration = Number(values.duration);
  if (values.partial === true) o.partialFaults = true;
  return o;
}

function replay(seed: number): never {
  const sim = new Simulation({ ...optionsForSeed(seed, overrides()), trace: true });
  try {
    const r = sim.run();
    console.log('passed on replay (the failure did not reproduce):', r);
  } catch (err) {
    console.log(sim.traceLines.slice(-300).join('\n'));
    console.log(`\n${String(err)}`);
    const extra = ['mix', 'nodes', 'duration'].flatMap((k) => (values[k as 'mix'] === undefined ? [] : [`--${k} ${values[k as 'mix']}`]));
    if (values.partial === true) extra.push('--partial');
    console.log(`replay: npm run sim -- --seed ${seed} ${extra.join(' ')}`.trimEnd());
  }
  process.exit(1);
}

if (values.seed !== undefined) {
  const seed = Number(values.seed);
  const sim = new Simulation({ ...optionsForSeed(seed, overrides()), trace: true });
  try {
    console.log(sim.run());
  } catch (err) {
    if (!(err instanceof Violation)) throw err;
    replay(seed);
  }
} else {
  const count = Number(values.seeds ?? '100');
  const from = Number(values.from);
  const byMix = new Map<string, { runs: number; proposals: number; acked: number; crashes: number; snaps: number; maxRecovery: number }>();
  const started = Date.now();
  for (let seed = from; seed < from + count; seed++) {
    let r: SimResult;
    try {
      r = new Simulation(optionsForSeed(seed, overrides())).run();
    } catch (err) {
      console.log(`seed ${seed} FAILED: ${String(err)}`);
      replay(seed);
    }
    const m = byMix.get(r.mix) ?? { runs: 0, proposals: 0, acked: 0, crashes: 0, snaps: 0, maxRecovery: 0 };
    m.runs++;
    m.proposals += r.proposals;
    m.acked += r.acked;
    m.crashes += r.crashes;
    m.snaps += r.snapshotsSent;
    m.maxRecovery = Math.max(m.maxRecovery, r.recovery ?? 0);
    byMix.set(r.mix, m);
    if (!values.quiet && (seed - from + 1) % 500 === 0) console.log(`${seed - from + 1} seeds passed (${((Date.now() - started) / 1000).toFixed(0)} s)`);
  }
  console.log('| mix | seeds | proposals | acknowledged | crashes | snapshots sent | worst recovery (ticks) |');
  console.log('|---|---|---|---|---|---|---|');
  for (const [mix, m] of byMix) {
    console.log(`| ${mix} | ${m.runs} | ${m.proposals} | ${m.acked} | ${m.crashes} | ${m.snaps} | ${m.maxRecovery / 10} |`);
  }
  console.log(`${count} seeds from ${from} passed in ${((Date.now() - started) / 1000).toFixed(1)} s`);
}
