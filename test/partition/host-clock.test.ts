// A leader keeps an idle partition's clock up to date (format 8, where one entry moves it at most a
// step): without it, the first lease after a quiet spell would be counted from a clock in the past.
import t from 'tap';
import { FORMAT, MAX_CLOCK_STEP_MS } from '../../src/store/broker/index.js';
import { IDS, LocalCluster, queue } from './host-helpers.js';

t.test("a leader brings an idle partition's clock up to its own, a step per sweep", async (t) => {
  let now = 1_700_000_000_000;
  const c = new LocalCluster(1, { balanceLeaders: false, now: () => now });
  t.teardown(() => c.close());
  await c.startAll();
  await c.until(() => c.leaderOf(0) !== null && c.leaderOf(0)!.replica(0).state.format() === FORMAT, `a leader, in format ${FORMAT}`);
  t.ok((await c.submit(0, 'alice', queue('orders'))).ok);
  // The partition's clock as its leader holds it: whichever node leads (an election on a loaded
  // machine may move the leadership), once one does.
  const clock = (): number | null => c.leaderOf(0)?.replica(0).state.clock() ?? null;
  const leaderClock = async (): Promise<number> => {
    await c.until(() => clock() !== null, 'a leader');
    return clock()!;
  };
  t.ok(Math.abs((await leaderClock()) - now) < MAX_CLOCK_STEP_MS / 2, 'in step');
  // Two hours pass with nothing written.
  now += 2 * 3600_000;
  await c.until(() => (clock() ?? -Infinity) >= now - MAX_CLOCK_STEP_MS / 2, 'the clock caught up', 20_000);
  t.ok((await leaderClock()) <= now, 'never past the leader’s own');
});

t.test('silence is measured on the monotonic clock: a wall clock stepped forward cuts no node off', async (t) => {
  let mono = 1_000;
  let wall = 1_700_000_000_000;
  const c = new LocalCluster(1, { balanceLeaders: false, monotonic: () => mono, wallClock: () => wall, now: () => wall });
  t.teardown(() => c.close());
  const host = await c.start(IDS[0]!, false);
  const timeout = 25 * 10; // the helpers' tickMs, times the default electionTick
  host.receive(IDS[1]!, [], FORMAT);
  wall += 3_600_000;
  t.equal(host.leadership.cutOffFor(), 0, 'an hour of wall clock is no silence');
  mono += 2 * timeout + 1;
  t.ok(host.leadership.cutOffFor() > 2 * timeout, 'two election timeouts of the monotonic clock without a word are');
  host.receive(IDS[2]!, [], FORMAT);
  t.equal(host.leadership.cutOffFor(), 0, 'until a peer is heard again');
});
