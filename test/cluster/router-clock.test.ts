// A long poll's timers on a node whose wall clock is off. Leases and delays end on the partition's
// clock (the stamps of the nodes' median, cluster-clock.ts), so the poll looks again when the next
// one ends by the median, not by this node's own clock: a node an hour ahead (which the median
// outvotes) would otherwise find every lease already ended and propose a receive every pollMs for
// the whole wait, each a replicated entry that leases nothing.
import t from 'tap';
import type { PeerCaller } from '../../src/cluster/answer.js';
import { Router } from '../../src/cluster/router.js';
import type { NodeHost } from '../../src/partition/host.js';
import type { NodeId } from '../../src/raft/index.js';
import { delaysOf } from './timer-delays.js';

const HOUR = 3_600_000;
const QUIET = { onWake: () => () => undefined, onDeliver: () => () => undefined, onHalt: () => () => undefined };
const noPeers: PeerCaller = { call: () => Promise.reject(new Error('no HTTP here')) };

t.test('a node an hour ahead waits for a lease to end by the cluster’s clock, not by its own', async (t) => {
  const median = 1_700_000_000_000;
  // The channel's next lease ends 3 s from now on the partition's clock.
  const replica = { ...QUIET, halted: null, state: { isOpen: () => true, channelIdOf: () => 7, nextVisibleAt: () => median + 3_000, hasVisible: () => false } };
  const host = { replica: () => replica, leadership: { cutOffFor: () => 0 }, clock: { now: () => median } } as unknown as NodeHost;
  const router = new Router(host, noPeers, { self: 'n1' as NodeId, partitions: 1, pollMs: 5, now: () => median + HOUR });
  let watch;
  const delays = delaysOf(() => (watch = router.watch(0, { queue: 'q' }, Number.MAX_SAFE_INTEGER)));
  t.same(delays, [3_000], 'looks again when the lease ends, not every pollMs');
  watch!.cancel();
});
