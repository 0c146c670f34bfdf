// A leader decides whether a partition needs a sweep at the time its sweep would be stamped with: the
// nodes' median (cluster-clock.ts), not its own wall clock. A leader whose clock runs an hour ahead,
// which the median outvotes, would otherwise see every message that expires within the hour as
// expired and propose a sweep on every pass, each an entry (fsynced on two nodes) that does nothing.
import t from 'tap';
import type { NodeHost } from '../../src/partition/host.js';
import { Housekeeping } from '../../src/partition/housekeeping.js';
import { FORMAT, type Command } from '../../src/store/broker/index.js';

const HOUR = 3_600_000;

/** A pass of a leader whose own wall clock reads `own` and the nodes' median `median`, over a partition whose first message expires at `expires`: the sweeps it proposed. */
function sweepsOf(own: number, median: number, expires: number): number {
  let sweeps = 0;
  let pass: () => void = () => {};
  const replica = {
    partition: 0,
    isLeader: () => true,
    propose: (_actor: string | null, c: Command) => {
      if (c.type === 'sweep') sweeps++;
      return Promise.resolve({ ok: true, value: null });
    },
    // As views.needsSweep: due at the later of the time asked and the partition's clock.
    state: { needsSweep: (now: number) => Math.max(now, median) >= expires, format: () => FORMAT, clock: () => median, outboxHeads: () => [], outboxLetter: () => null },
  };
  const host = {
    onPass: (fn: () => void) => (pass = fn),
    onTick: () => {},
    // The node's own wall clock, which a node without `now` reads as Date.now.
    opts: { now: () => own, self: 'n1', voters: ['n1'], partitions: 1 },
    replicas: [replica],
    clock: { now: () => median },
    readable: FORMAT,
    peerFormat: () => FORMAT,
  } as unknown as NodeHost;
  new Housekeeping(host);
  pass();
  return sweeps;
}

t.test('a leader an hour ahead proposes no sweep for a message that expires in half an hour', async (t) => {
  const median = 1_700_000_000_000;
  t.equal(sweepsOf(median + HOUR, median, median + HOUR / 2), 0);
  t.equal(sweepsOf(median + HOUR, median + HOUR / 2, median + HOUR / 2), 1, 'once the cluster’s clock reaches it, one sweep');
  t.equal(sweepsOf(median - HOUR, median, median - 1), 1, 'a leader behind still sweeps what is due by the cluster’s clock');
});
