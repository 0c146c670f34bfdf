// A leader takes out the parked polls of a node whose replica has not answered it for three election
// timeouts (Leadership.notAnswering). After this node's own loop, or the whole machine, stalled that
// long, its first pass took the peers' silence for theirs, and took out the polls of peers that
// answered it at once: notAnswering counts from the loop's resumption now (listening), as cutOffFor
// does. Here every node stalls together (one machine paused), so leadership holds and the looks would
// commit. From the review of stop 61's own changes.
import t from 'tap';
import { FORMAT, type Command } from '../../src/store/broker/index.js';
import { queue, untickedCluster } from '../partition/host-helpers.js';

const park = (tag: string): Command => ({ type: 'receive', channel: { queue: 'q' }, maxMessages: 5, visibilityTimeoutSeconds: 30, wait: { tag, ms: 20_000, again: false } });

t.test('a stall of the leader itself does not take out the polls of answering peers', async (t) => {
  let mono = 1_000_000;
  const { c, leader } = await untickedCluster(t, { monotonic: () => mono });
  t.ok((await c.submit(0, 'alice', queue('q'))).ok);
  for (let i = 0; i < 200 && leader.replica(0).state.format() < FORMAT; i++) {
    mono += 25;
    leader.tick();
    await c.quiet();
  }
  t.equal(leader.replica(0).state.format(), FORMAT, 'the newest format');
  const peer = [...c.hosts.keys()].find((id) => id !== leader.opts.self)!;
  const tag = `${peer}.itsNonce.1`;
  t.same(await c.submit(0, 'alice', park(tag)), { ok: true, value: { messages: [], parked: 'parked' } });
  await c.quiet();
  const waiting = (): string[] => leader.replica(0).state.waitingTagged('', '\u{10ffff}', 0, 1000).map((w) => w.tag);
  // Ticks with their heartbeats answered, up to the one before a pass (every 20 ticks).
  const ticksOf = (): number => (leader as unknown as { ticks: number }).ticks;
  do {
    mono += 25;
    leader.tick();
    await c.quiet();
  } while ((ticksOf() + 1) % 20 !== 0);
  t.same(waiting(), [tag], 'the poll waits; its node answers every heartbeat');
  // The machine stalls 1 s (4 election timeouts of 250 ms); the leader's first tick after is a pass.
  mono += 1000;
  leader.tick();
  t.equal(leader.leadership.cutOffFor(), 0, 'the host knows the silence was its own (listening)');
  await c.quiet();
  t.ok(leader.replica(0).isLeader(), 'still the leader');
  t.same(waiting(), [tag], `the poll of ${peer}, which answered the heartbeats before the stall, still waits`);
});
