// Proposals end applied or overwritten, never silently: a leader cut off before its entries commit
// sees them overwritten by the next leader's, and its callers learn it; they are never applied.
import t from 'tap';
import { DropReason, EntryKind, Outcome, ProposalDroppedError, ProposalTracker, type Entry } from '../../src/raft/index.js';
import { Network, n1, n2, n3 } from './helpers.js';

const enc = (s: string): Uint8Array => new TextEncoder().encode(s);

function settleFrom(net: Network, id: typeof n1, tracker: ProposalTracker<string>, seen: Map<string, Outcome>, from: number): number {
  const applied = net.applied.get(id)!;
  tracker.settle(applied.slice(from), (w, outcome) => seen.set(w, outcome));
  return applied.length;
}

t.test('a proposal applied at its index and term is reported applied', async (t) => {
  const net = new Network([n1, n2, n3]);
  net.elect(n1);
  const tracker = new ProposalTracker<string>();
  const seen = new Map<string, Outcome>();
  const from = net.applied.get(n1)!.length;
  tracker.track(net.node(n1).propose([enc('a'), enc('b')]), ['a', 'b']);
  net.stabilize();
  settleFrom(net, n1, tracker, seen, from);
  t.same([...seen], [['a', Outcome.Applied], ['b', Outcome.Applied]]);
  t.equal(tracker.size, 0);
});

t.test('a proposal awaits its entry at its index and term only, until settled', async (t) => {
  const tracker = new ProposalTracker<string>();
  tracker.track({ firstIndex: 5, lastIndex: 6, term: 2 }, ['a', 'b']);
  t.ok(tracker.awaits(5, 2));
  t.ok(tracker.awaits(6, 2));
  t.notOk(tracker.awaits(7, 2), 'no proposal there');
  t.notOk(tracker.awaits(5, 3), 'another leader’s entry at its index: nobody here answers it');
  const e = (index: number, term: number): Entry => ({ index, term, kind: EntryKind.Normal, data: enc('x') });
  tracker.settle([e(5, 2)], () => undefined);
  t.notOk(tracker.awaits(5, 2), 'settled');
  t.ok(tracker.awaits(6, 2));
  t.equal(tracker.size, 1);
});

t.test('proposals of two terms at one index: the entry applied there decides each by its own term', async (t) => {
  const tracker = new ProposalTracker<string>();
  // A forwarded write a leader of term 2 named at 6, and this node's own proposal there as leader of term 3.
  tracker.track({ firstIndex: 6, lastIndex: 6, term: 2 }, ['forwarded']);
  tracker.track({ firstIndex: 6, lastIndex: 7, term: 3 }, ['own', 'next']);
  t.ok(tracker.awaits(6, 2) && tracker.awaits(6, 3), 'both wait');
  t.equal(tracker.size, 3);
  const seen: [string, Outcome][] = [];
  tracker.settle([{ index: 6, term: 3, kind: EntryKind.Normal, data: enc('x') }], (w, outcome) => seen.push([w, outcome]));
  t.same(seen, [['forwarded', Outcome.Overwritten], ['own', Outcome.Applied]]);
  t.equal(tracker.size, 1);
  t.ok(tracker.forget(7, 'next'), 'a waiter given up on is forgotten');
  t.notOk(tracker.forget(7, 'next'));
  t.notOk(tracker.awaits(7, 3));
  t.equal(tracker.size, 0);
});

t.test('drainWhere gives up on the picked waiters only, and dropUpTo on those up to an index', async (t) => {
  const tracker = new ProposalTracker<string>();
  tracker.track({ firstIndex: 4, lastIndex: 6, term: 2 }, ['a', 'b', 'c']);
  tracker.track({ firstIndex: 5, lastIndex: 5, term: 1 }, ['x']);
  t.same(tracker.drainWhere((w) => w === 'b' || w === 'c'), ['b', 'c']);
  t.ok(tracker.awaits(5, 1), 'the other waiter at 5 stays');
  t.same(tracker.dropUpTo(5), ['a', 'x']);
  t.equal(tracker.size, 0);
});

t.test('an old leader’s uncommitted proposal is reported overwritten and never applied anywhere', async (t) => {
  const net = new Network([n1, n2, n3]);
  net.elect(n1);
  const tracker = new ProposalTracker<string>();
  const seen = new Map<string, Outcome>();
  const from = net.applied.get(n1)!.length;
  net.isolate(n1);
  tracker.track(net.node(n1).propose([enc('lost')]), ['lost']);
  net.stabilize();
  t.equal(seen.size, 0, 'cut off: no outcome yet');
  net.tickAll(30);
  const leader = net.leader();
  t.ok(leader !== null && leader !== n1, `the others elected ${leader}`);
  net.node(leader!).propose([enc('won')]);
  net.stabilize();
  net.heal();
  net.tickAll(3);
  settleFrom(net, n1, tracker, seen, from);
  t.equal(seen.get('lost'), Outcome.Overwritten);
  for (const id of [n1, n2, n3]) {
    const data = net.appliedData(id);
    t.notOk(data.includes('lost'), `${id} never applied it`);
    t.ok(data.includes('won'), `${id} applied the new leader's entry`);
  }
});

t.test('a proposal to a node that is not leader is refused outright and appends nothing', async (t) => {
  const net = new Network([n1, n2, n3]);
  net.elect(n1);
  const before = net.node(n2).status().lastIndex;
  let err: unknown;
  try {
    net.node(n2).propose([enc('x')]);
  } catch (e) {
    err = e;
  }
  t.ok(err instanceof ProposalDroppedError, 'refused');
  t.equal((err as ProposalDroppedError).reason, DropReason.NotLeader);
  t.equal((err as ProposalDroppedError).leader, n1, 'with the leader to go to');
  t.equal(net.node(n2).status().lastIndex, before);
});

t.test('drain and dropUpTo hand back the waiters whose outcome is unknown', async (t) => {
  const tracker = new ProposalTracker<number>();
  tracker.track({ term: 2, firstIndex: 5, lastIndex: 7 }, [5, 6, 7]);
  t.same(tracker.dropUpTo(6).sort(), [5, 6]);
  const e: Entry = { index: 7, term: 3, kind: 0, data: new Uint8Array() };
  const out: [number, Outcome][] = [];
  tracker.settle([e], (w, o) => out.push([w, o]));
  t.same(out, [[7, Outcome.Overwritten]]);
  tracker.track({ term: 4, firstIndex: 8, lastIndex: 8 }, [8]);
  t.same(tracker.drain(), [8]);
  t.equal(tracker.size, 0);
});
