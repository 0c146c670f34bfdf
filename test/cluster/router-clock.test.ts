// A long poll's timers on a node whose wall clock is off. Leases and delays end on the partition's
// clock (the stamps of the nodes' median, cluster-clock.ts), so the poll looks again when the next
// one ends by the median, not by this node's own clock: a node an hour ahead (which the median
// outvotes) would otherwise find every lease already ended and propose a receive every pollMs for
// the whole wait, each a replicated entry that leases nothing.
import t from 'tap';
import type { PeerCaller } from '../../src/cluster/answer.js';
import { Router } from '../../src/cluster/router.js';
import type { NodeHost } from '../../src/partition/host.js';
import { NotLeaderError } from '../../src/partition/errors.js';
import { FORMAT } from '../../src/store/broker/index.js';
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

t.test("a leader whose partition's clock is minutes behind holds clients' commands; a follower answers not_leader as before", async (t) => {
  // Clients' commands wait while a partition's clock catches up after an outage (review of
  // 2026-12-07); a follower's own clock says nothing of the leader's, and it points at the leader.
  const now = 1_700_000_000_000;
  let leading = true;
  let clock = now - 10 * 60_000;
  const proposed: string[] = [];
  const replica = {
    ...QUIET,
    halted: null,
    isLeader: () => leading,
    raw: { term: () => 3 },
    state: { isOpen: () => true, format: () => FORMAT, clock: () => clock },
    propose: (_actor: string | null, c: { type: string }) => {
      proposed.push(c.type);
      if (!leading) return Promise.reject(new NotLeaderError(0, 'n2' as NodeId));
      return Promise.resolve({ ok: true, value: null });
    },
  };
  const host = { replica: () => replica, leadership: { cutOffFor: () => 0 }, clock: { now: () => now } } as unknown as NodeHost;
  const router = new Router(host, noPeers, { self: 'n1' as NodeId, partitions: 1, pollMs: 5, now: () => 0 });
  const send = { type: 'queue.send', name: 'q', messages: [{ body: 'x', attributes: {} }] } as const;
  t.match(await router.proposeHere(0, 'alice', send), { kind: 'retry' }, 'held at the leader');
  t.match(await router.proposeHere(0, null, { type: 'sweep' }), { kind: 'ok' }, "housekeeping's sweeps pass");
  // Dead letters forwarded by their source partition's leader wait too (review of stop 61): stored
  // now, each would be stamped with the old clock and expire unseen as it caught up.
  const letters = { type: 'deadletter.deliver', queue: 'dlq', expectedOwner: 'alice', messages: [{ messageId: 'm', body: 'x', attributes: {}, source: '1/1' }] } as const;
  t.match(await router.proposeHere(0, null, letters), { kind: 'retry' }, 'dead letters held at the leader');
  t.strictSame(proposed, ['sweep']);
  leading = false;
  t.match(await router.proposeHere(0, 'alice', send), { kind: 'not_leader', leader: 'n2' }, 'a follower points at the leader');
  leading = true;
  clock = now - 30_000;
  t.match(await router.proposeHere(0, 'alice', send), { kind: 'ok' }, 'within a step: proposed');
});
