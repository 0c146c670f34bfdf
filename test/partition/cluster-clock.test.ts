// The time a node stamps entries with: the median of its wall clock and its peers' (cluster-clock.ts).
import t from 'tap';
import { CLOCK_TOLERANCE_MS, ClusterClock, PEER_CLOCK_FRESH_MS } from '../../src/partition/cluster-clock.js';

const DAY = 86_400_000;
const T = 1_800_000_000_000;

/** A node whose wall clock reads `skew` from the true time; true time and monotonic time move together. */
function node(skew: number) {
  const c = { real: T, mono: 1_000, skew };
  const clock = new ClusterClock(() => c.real + c.skew, () => c.mono);
  return { c, clock, pass: (ms: number) => ((c.real += ms), (c.mono += ms)) };
}

t.test('a node a day ahead stamps its two peers’ time', async (t) => {
  const n = node(DAY);
  n.clock.heard('n2', { wall: T + 5, mono: n.c.mono });
  n.clock.heard('n3', { wall: T - 5, mono: n.c.mono });
  t.equal(n.clock.now(), T + 5);
  n.pass(10_000);
  t.equal(n.clock.now(), T + 10_005, 'carried forward by the monotonic clock');
  t.strictSame([...n.clock.offsets()], [['n2', 5 - DAY], ['n3', -5 - DAY]]);
});

t.test('one peer a day ahead or behind is outvoted; a node whose clock jumps after it heard its peers is too', async (t) => {
  for (const wrong of [DAY, -DAY]) {
    const n = node(0);
    n.clock.heard('n2', { wall: T + wrong, mono: n.c.mono });
    n.clock.heard('n3', { wall: T + 3, mono: n.c.mono });
    t.equal(n.clock.now(), T, `peer ${wrong > 0 ? 'ahead' : 'behind'}: its own clock, the median being within the tolerance`);
  }
  const n = node(0);
  n.clock.heard('n2', { wall: T, mono: n.c.mono });
  n.clock.heard('n3', { wall: T, mono: n.c.mono });
  n.c.skew = DAY; // this node's wall clock steps a day ahead; its monotonic clock does not
  n.pass(1_000);
  t.equal(n.clock.now(), T + 1_000);
});

t.test('with one peer heard, the earlier of the two; with none, or none recently, its own', async (t) => {
  const n = node(DAY);
  t.equal(n.clock.now(), T + DAY, 'nobody heard');
  n.clock.heard('n2', { wall: T, mono: n.c.mono });
  t.equal(n.clock.now(), T);
  n.pass(PEER_CLOCK_FRESH_MS + 1);
  t.equal(n.clock.now(), T + DAY + PEER_CLOCK_FRESH_MS + 1, 'not heard for too long: not counted');
  t.strictSame([...n.clock.offsets()], []);
});

t.test('an older sample does not replace a newer one; nonsense is ignored', async (t) => {
  const n = node(0);
  n.clock.heard('n2', { wall: T + 100, mono: n.c.mono });
  n.clock.heard('n2', { wall: T + DAY, mono: n.c.mono - 1 });
  n.clock.heard('n2', { wall: Number.NaN, mono: n.c.mono + 1 });
  t.strictSame([...n.clock.offsets()], [['n2', 100]]);
});

t.test('samples taken late (this node paused) do not make its peers look behind', async (t) => {
  const n = node(0);
  n.clock.heard('n2', { wall: T, mono: n.c.mono });
  n.clock.heard('n3', { wall: T, mono: n.c.mono });
  // Paused 5 s: both peers' new streams were written before and read after.
  n.pass(5_000);
  n.clock.heard('n2', { wall: T, mono: n.c.mono });
  n.clock.heard('n3', { wall: T + 100, mono: n.c.mono });
  t.strictSame([...n.clock.offsets()], [['n2', 0], ['n3', 0]], 'the earlier, better samples stand');
  t.equal(n.clock.now(), T + 5_000);
  // A best sample gives way to newer ones after a while (a peer whose clock was set back).
  n.pass(PEER_CLOCK_FRESH_MS / 2 + 1);
  n.clock.heard('n2', { wall: n.c.real - 2 * DAY, mono: n.c.mono });
  t.equal([...n.clock.offsets()].find(([p]) => p === 'n2')![1], -2 * DAY);
});

t.test('within the tolerance a node stamps its own clock; past it, the median', async (t) => {
  const n = node(0);
  n.clock.heard('n2', { wall: T + 300, mono: n.c.mono });
  n.clock.heard('n3', { wall: T + 400, mono: n.c.mono });
  t.equal(n.clock.now(), T, 'the median 300 ms off: its own');
  n.c.skew = -CLOCK_TOLERANCE_MS;
  t.equal(n.clock.now(), T + 300, 'its own more than the tolerance behind the median: the median');
  n.c.skew = 2 * CLOCK_TOLERANCE_MS;
  t.equal(n.clock.now(), T + 400, 'ahead: the median');
});
