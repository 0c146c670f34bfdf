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
  t.ok(tracker.holds(5), 'an index is held whatever the term');
  t.notOk(tracker.holds(7));
  const e = (index: number, term: number): Entry => ({ index, term, kind: EntryKind.Normal, data: enc('x') });
  tracker.settle([e(5, 2)], () => undefined);
  t.notOk(tracker.awaits(5, 2), 'settled');
  t.notOk(tracker.holds(5), 'settled');
  t.ok(tracker.awaits(6, 2));  t.same(tracker.track({ firstIndex: 6, lastIndex: 7, term: 3 }, ['c', 'd']), ['b'], 'a newer term’s proposal at 6 displaces the older one, handed back');
  t.ok(tracker.awaits(6, 3));
  t.same(tracker.track({ firstIndex: 9, lastIndex: 9, term: 3 }, ['e']), [], 'nothing there');  t.same(tracker.drainWhere((w) => w === 'c' || w === 'e'), ['c', 'e'], 'drained as picked');
  t.ok(tracker.awaits(7, 3), 'the others wait on');
  t.notOk(tracker.holds(6));
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
