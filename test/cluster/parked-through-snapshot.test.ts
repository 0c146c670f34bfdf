// A long poll parked through node F is served while F is cut off, and F catches up through a snapshot
// past the entry that served it: F never applies that entry, so its router never hears of the
// delivery. The poll's next look (at its deadline, or its client's leaving) answers the messages it
// was given, from the state (format 16): before, it answered 'gone' with nothing, and they stayed
// leased to nobody for their visibility timeout, counted as a delivery (with maxDeliveries 1,
// dead-lettered unseen). From a review of 2026-12-07.
import t from 'tap';
import type { PeerCaller } from '../../src/cluster/answer.js';
import { Router } from '../../src/cluster/router.js';
import { FORMAT, type Received } from '../../src/store/broker/index.js';
import { LocalCluster, queue } from '../partition/host-helpers.js';

const peers: PeerCaller = { call: () => Promise.reject(new Error('no HTTP here')) };

t.test("a poll's next look answers what it was given, though its node caught up through a snapshot past the delivery", async (t) => {
  const c = new LocalCluster(1, { snapshotEvery: 20, keepBehindSnapshot: 5, balanceLeaders: false });
  t.teardown(() => c.close());
  await c.startAll();
  await c.until(() => c.leaderOf(0) !== null, 'a leader');
  t.ok((await c.submit(0, 'alice', queue('q'))).ok);
  const leader = c.leaderOf(0)!;
  await c.until(() => [...c.hosts.values()].every((h) => h.replica(0).state.format() === FORMAT), 'the newest format');
  const f = [...c.hosts.values()].find((h) => h !== leader)!;
  const router = new Router(f, peers, { self: f.opts.self, partitions: 1, pollMs: 5 });
  const parking = router.park();
  const look = (again: boolean, ms: number) =>
    leader.replica(0).propose('alice', { type: 'receive', channel: { queue: 'q' }, maxMessages: 1, visibilityTimeoutSeconds: 30, wait: { tag: parking.tag, ms, again } });
  t.same(await look(false, 20_000), { ok: true, value: { messages: [], parked: 'parked' } });
  await c.until(() => f.replica(0).state.applied().index >= leader.replica(0).state.applied().index, 'F applied the park');
  c.down.add(f.opts.self);
  t.ok((await c.submit(0, 'alice', { type: 'queue.send', name: 'q', messages: [{ body: 'for the poll', attributes: {} }] })).ok);
  for (let i = 0; i < 60; i++) await c.submit(0, 'alice', { type: 'queue.send', name: 'other', messages: [{ body: `x${i}`, attributes: {} }] });
  const target = leader.replica(0).state.applied().index;
  c.down.delete(f.opts.self);
  leader.reportLost(f.opts.self, [0]);
  await c.until(() => f.replica(0).state.isOpen() && f.replica(0).state.applied().index >= target, 'F caught up');
  t.ok(f.replica(0).log.snapshot().meta.index > 0, 'through a snapshot');
  let heard = false;
  void parking.delivered.then(() => (heard = true));
  await new Promise((resolve) => setImmediate(resolve));
  t.notOk(heard, "F's router never heard of the delivery");
  const again = (await look(true, 0)) as { ok: true; value: Received };
  t.equal(again.value.parked, 'gone');
  t.same(
    again.value.messages.map((m) => [m.body, m.deliveryCount]),
    [['for the poll', 1]],
    'the look answers the message the poll was given',
  );
  t.match(leader.replica(0).state.getQueue('q', 'alice', Date.now()), { ok: true, value: { stats: { inFlight: 1, visible: 0 } } }, 'under the lease it was given');
  parking.done();
});
