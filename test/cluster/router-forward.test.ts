// The router's side of a forwarded write answered from this node's own apply (Router.forward): it
// asks the leader for where it appended the command when the local replica runs, waits for the local
// apply of that entry, and a closing node waits for those applies (settleApplying) before it ends
// the streams their commits come in. The host and the peers are fakes: what the router asks of them
// is what is checked.
import t from 'tap';
import type { CarriedOutcome, PeerCaller } from '../../src/cluster/answer.js';
import { Router } from '../../src/cluster/router.js';
import type { NodeHost } from '../../src/partition/host.js';
import type { NodeId } from '../../src/raft/index.js';
import type { Result } from '../../src/store/broker/index.js';
import { delaysOf } from './timer-delays.js';

const n2 = 'n2' as NodeId;

/** The replica's listener hooks, for a replica whose events no test sends. */
const QUIET = { onWake: () => () => undefined, onDeliver: () => () => undefined, onHalt: () => () => undefined };

/** A router of one partition for n1, over a fake host whose replica is `replica`. */
function routerOver(replica: object, peers: PeerCaller, opts: { now?: () => number; maxIdleMs?: number } = {}): Router {
  const host = { replica: () => replica, leadership: { cutOffFor: () => 0 } } as unknown as NodeHost;
  return new Router(host, peers, { self: 'n1' as NodeId, partitions: 1, pollMs: 5, ...opts });
}

/** One partition led by n2; its local replica's awaitEntry is held until `apply` is called. */
function setup(opts: { halted?: boolean; answer: CarriedOutcome }) {
  const asked: { index: number; term: number }[] = [];
  const tracked: boolean[] = [];
  let apply: (r: Result) => void = () => undefined;
  const replica = {
    ...QUIET,
    isLeader: () => false,
    leader: () => n2,
    halted: opts.halted === true ? new Error('halted') : null,
    awaitEntry(index: number, term: number): Promise<Result> {
      asked.push({ index, term });
      return new Promise<Result>((resolve) => (apply = resolve));
    },
  };
  const peers: PeerCaller = {
    call: () => Promise.reject(new Error('no HTTP here')),
    carry: (_peer, _command, _timeoutMs, track) => {
      tracked.push(track === true);
      return Promise.resolve(opts.answer);
    },
  };
  const router = routerOver(replica, peers);
  return { router, asked, tracked, apply: (r: Result) => apply(r) };
}

const send = { type: 'queue.send' as const, name: 'q', messages: [{ body: 'b', attributes: {} }] };

t.test('the leader names the entry: the result is the local apply’s, and a close waits for it', async (t) => {
  const s = setup({ answer: { kind: 'proposed', index: 42, term: 3 } });
  const result = s.router.propose(0, 'alice', send, undefined);
  await new Promise((r) => setTimeout(r, 20));
  t.same(s.tracked, [true], 'asked for where, since the local replica runs');
  t.same(s.asked, [{ index: 42, term: 3 }], 'waits for the local apply of the named entry');
  let settled = false;
  const closing = s.router.settleApplying(5_000).then(() => (settled = true));
  await new Promise((r) => setTimeout(r, 50));
  t.notOk(settled, 'a close waits while the entry has not applied here');
  s.apply({ ok: true, value: { messageIds: ['m-1'] } });
  t.same(await result, { ok: true, value: { messageIds: ['m-1'] } });
  await closing;
  t.ok(settled, 'and goes on once it applied');
});

t.test('a halted replica cannot answer: the command asks for the leader’s result', async (t) => {
  const s = setup({ halted: true, answer: { kind: 'ok', result: { ok: true, value: 'from the leader' } } });
  t.same(await s.router.propose(0, 'alice', send, undefined), { ok: true, value: 'from the leader' });
  t.same(s.tracked, [false]);
  t.same(s.asked, []);
});

t.test('a close waits for a forwarded apply no longer than it is told', async (t) => {
  const s = setup({ answer: { kind: 'proposed', index: 7, term: 1 } });
  let answered = false;
  const result = s.router.propose(0, 'alice', send, undefined).then((r) => ((answered = true), r));
  await new Promise((r) => setTimeout(r, 20));
  await s.router.settleApplying(50);
  t.notOk(answered, 'the close went on with the apply still pending');
  s.apply({ ok: true, value: null });
  t.same(await result, { ok: true, value: null });
});

t.test('a long poll on a halted replica looks again every second, not at the leases due in its frozen state', async (t) => {
  const now = 1_000_000;
  // Halted mid-apply: the state stays open, and a lease that ended before the halt stays due in it.
  const replica = {
    ...QUIET,
    isLeader: () => false,
    leader: () => null,
    halted: new Error('halted'),
    state: { isOpen: () => true, channelIdOf: () => 7, nextVisibleAt: () => now - 60_000, hasVisible: () => true },
  };
  const router = routerOver(replica, { call: () => Promise.reject(new Error('no HTTP here')) }, { now: () => now });
  // The delay of the timer the watch arms, seen as it is set.
  let watch;
  const delays = delaysOf(() => (watch = router.watch(0, { queue: 'q' }, now + 20_000)));
  t.same(delays, [1_000], 'one look a second, not one every pollMs');
  watch!.cancel();
});

t.test('requests through a halted replica ask first the peer that served the last one', async (t) => {
  const n3 = 'n3' as NodeId;
  // n1's replica is halted and follows nobody; n3 leads, n2 names it.
  const replica = { ...QUIET, isLeader: () => false, leader: () => null, halted: new Error('halted'), cfg: { voters: ['n1', 'n2', 'n3'] } };
  const asked: NodeId[] = [];
  const peers: PeerCaller = {
    call: () => Promise.reject(new Error('no HTTP here')),
    carry: (peer) => {
      asked.push(peer);
      return Promise.resolve(peer === n3 ? { kind: 'ok', result: { ok: true, value: 'from n3' } } : { kind: 'not_leader', leader: n3 });
    },
  };
  const router = routerOver(replica, peers);
  t.same(await router.propose(0, 'alice', send, undefined), { ok: true, value: 'from n3' });
  t.same(asked, [n2, n3], 'the first asks n2, which names n3');
  asked.length = 0;
  t.same(await router.propose(0, 'alice', send, undefined), { ok: true, value: 'from n3' });
  t.same(asked, [n3], 'the next goes to n3 at once');
});

t.test('a replica that halts wakes the long polls waiting on it at once', async (t) => {
  let halt = (): void => undefined;
  // Running, with nothing due: a watch would sleep until its deadline.
  const replica = {
    ...QUIET,
    onHalt: (fn: () => void) => {
      halt = fn;
      return () => undefined;
    },
    isLeader: () => false,
    leader: () => n2,
    halted: null as Error | null,
    state: { isOpen: () => true, channelIdOf: () => 7, nextVisibleAt: () => null, hasVisible: () => false },
  };
  const router = routerOver(replica, { call: () => Promise.reject(new Error('no HTTP here')) }, { maxIdleMs: 60_000 });
  const watch = router.watch(0, { queue: 'q' }, performance.now() + 60_000);
  let woke: boolean | null = null;
  void watch.woken.then((expired) => (woke = expired));
  await new Promise((r) => setTimeout(r, 20));
  t.equal(woke, null, 'asleep while the replica runs');
  replica.halted = new Error('halted');
  halt();
  await new Promise((r) => setTimeout(r, 0));
  t.equal(woke, false, 'woken, not expired: the poll looks again, through the leader');
  watch.cancel();
});
