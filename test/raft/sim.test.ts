// The deterministic simulator in `npm test`: a few hundred seeds over every fault mix, each checked
// for the safety properties after every step and for liveness once a majority is healed.
// A failure names its seed; `npm run sim -- --seed N` replays it with a trace.
import t from 'tap';
import { MIXES, Violation, runSeed } from './sim/sim.js';

const SEEDS = Number(process.env.SIM_SEEDS ?? 480);

// Seeds that once failed, each for a bug since fixed: keep them first so a regression shows at once.
const REGRESSIONS = [
  { seed: 25, why: 'a follower whose appends were lost was never sent another (heartbeat response now triggers an append)' },
  { seed: 136, why: 'candidates that could not win reset the electable node’s election timer (Figure 2 timer rule)' },
  { seed: 4702, why: 'checker: a stale leader of an older term need not hold entries committed later' },
];

t.test('regression seeds', async (t) => {
  for (const r of REGRESSIONS) {
    const res = runSeed(r.seed);
    t.ok(res.acked > 0, `seed ${r.seed} (${r.why}) acknowledged ${res.acked} proposals`);
  }
});

// Pipelined persistence is safe because acknowledgements wait for the sync. The simulator must be
// able to tell: a host that acknowledges entries before its sync loses committed entries in crashes.
t.test('a host that acknowledges before its sync is caught losing committed entries', async (t) => {
  let caught: string | null = null;
  for (let seed = 1; seed <= 200 && caught === null; seed++) {
    try {
      runSeed(seed, { mix: MIXES.crashes!, brokenEarlyAcks: true });
    } catch (err) {
      if (!(err instanceof Violation)) throw err;
      caught = err.message;
    }
  }
  // Not the contract check on the messages (its term is synced): a consequence of the lost writes.
  t.match(caught, /lacks committed entry|overwrites committed entry|committed .* but has no entry|has committed .* committed was term|lacks acknowledged|another node applied/, `the violation: ${caught}`);
});

// A torn write keeps a prefix of what was written. The node's log writes a partition's entries
// before its hard state, so a kept commit index never counts entries that were lost; a log that wrote
// them the other way round is caught on restart.
t.test('a log whose torn writes can keep a commit index without its entries is caught', async (t) => {
  let caught: string | null = null;
  for (let seed = 1; seed <= 200 && caught === null; seed++) {
    try {
      runSeed(seed, { mix: MIXES.crashes!, brokenTornOrder: true });
    } catch (err) {
      caught = String(err);
    }
  }
  t.match(caught, /past the durable log's end|lacks committed entry|committed .* but has no entry/, `the failure: ${caught}`);
});

for (const mix of Object.keys(MIXES)) {
  t.test(`simulator: ${mix}`, async (t) => {
    let acked = 0;
    let runs = 0;
    let torn = 0;
    for (let seed = 1; runs < SEEDS / Object.keys(MIXES).length; seed++) {
      const res = runSeed(seed, { mix: MIXES[mix]! });
      acked += res.acked;
      torn += res.tornWrites;
      runs++;
      t.ok(res.recovery !== null, `seed ${seed}: committed ${res.recovery} time units after healing`);
    }
    // The workload did something: a simulator that commits nothing proves nothing.
    t.ok(acked > runs, `${runs} seeds acknowledged ${acked} proposals`);
    // Where the mix keeps parts of unsynced writes in crashes, some crash did.
    if ((MIXES[mix]!.tornWrites ?? 0) > 0) t.ok(torn > 0, `${torn} crashes kept part of an unsynced write`);
  });
}

// Partial faults (SimOptions.partialFaults): single links cut one way or both, reads asked of any
// node that believes it leads (a deposed leader must never release one), and a liveness phase that
// keeps one directed link cut while it waits for a commit. Every mix, by seed.
t.test('simulator: partial faults', async (t) => {
  const seeds = Number(process.env.SIM_PARTIAL_SEEDS ?? 120);
  let acked = 0;
  let reads = 0;
  for (let seed = 1; seed <= seeds; seed++) {
    const res = runSeed(seed, { partialFaults: true });
    acked += res.acked;
    reads += res.reads;
    t.ok(res.recovery !== null, `seed ${seed} (${res.mix}): committed ${res.recovery} time units after healing`);
  }
  t.ok(acked > seeds, `${seeds} seeds acknowledged ${acked} proposals`);
  t.ok(reads > 0, `${reads} linearizable reads served`);
});
