// The core under asymmetric and partial network faults (one-way links, a node cut from only one
// peer), and leadership transfer under them: CheckQuorum must depose a leader that lost its quorum,
// PreVote and the leader lease must keep a node that reaches only some peers from disrupting a
// healthy leader, a majority that can talk must keep a leader, ReadIndex must never answer from a
// deposed leader, and a transfer that cannot finish must give writes back.
import t, { type Test } from 'tap';
import { DropReason, ProposalDroppedError, Role, type NodeId, type Term } from '../../src/raft/index.js';
import { Network, catchDropped, ids, n1, n2, n3 } from './helpers.js';

const ELECTION = 10; // the Network's electionTick
const enc = (s: string) => new TextEncoder().encode(s);
const voters3 = () => ids('1', '2', '3');
const role = (net: Network, id: NodeId) => net.node(id).raft.role;
const term = (net: Network, id: NodeId) => net.node(id).raft.term;

function electedNetwork(seed = 1): Network {
  const net = new Network(voters3(), {}, seed);
  net.elect(n1);
  return net;
}

/** The leaders of each term seen, checked after every tick: never two in one term. */
class LeaderLog {
  readonly byTerm = new Map<Term, NodeId>();
  constructor(private readonly t: Test) {}
  look(net: Network): void {
    for (const id of net.nodes.keys()) {
      if (role(net, id) !== Role.Leader) continue;
      const other = this.byTerm.get(term(net, id));
      if (other !== undefined && other !== id) this.t.fail(`two leaders in term ${term(net, id)}: ${other} and ${id}`);
      this.byTerm.set(term(net, id), id);
    }
  }
}

/** The leader of the highest term, if any node believes it leads. */
function newestLeader(net: Network): NodeId | null {
  let best: NodeId | null = null;
  for (const id of net.nodes.keys()) if (role(net, id) === Role.Leader && (best === null || term(net, id) > term(net, best))) best = id;
  return best;
}

t.test('a leader that can send to its followers but hears neither steps down (CheckQuorum); the others elect a leader; nobody is disrupted after', async (t) => {
  const net = electedNetwork();
  const T = term(net, n1);
  net.cutOneWay(n2, n1);
  net.cutOneWay(n3, n1);
  let downAt = -1;
  let electedAt = -1;
  for (let i = 1; i <= 6 * ELECTION; i++) {
    net.tickAll(1);
    if (downAt < 0 && role(net, n1) !== Role.Leader) downAt = i;
    if (electedAt < 0 && (role(net, n2) === Role.Leader || role(net, n3) === Role.Leader)) electedAt = i;
  }
  t.ok(downAt > 0 && downAt <= 2 * ELECTION, `the leader stepped down within two election timeouts, the first CheckQuorum window without answers (tick ${downAt})`);
  t.ok(electedAt > downAt && electedAt <= downAt + 3 * ELECTION, `nodes 2 and 3 elected a leader once its heartbeats stopped (tick ${electedAt})`);
  t.equal(term(net, n1), T, 'the deposed node never raised its term (PreVote): it hears no answer');
  const leader = newestLeader(net)!;
  const leaderTerm = term(net, leader);
  for (let i = 0; i < 20 * ELECTION; i++) net.tickAll(1);
  t.equal(newestLeader(net), leader, 'the new leader keeps its leadership for 20 election timeouts');
  t.equal(term(net, leader), leaderTerm, 'in the same term');
  net.node(leader).propose([enc('x')]);
  net.stabilize();
  t.same(net.appliedData(n2), ['x']);
  t.same(net.appliedData(n3), ['x']);
});

// Every single directed link cut, and every node cut from one peer both ways, with node 1 leading:
// a majority that can talk keeps (or gets) a leader, terms settle, and writes commit.
const singleLinkFaults: [string, (net: Network) => void][] = [];
for (const a of voters3()) {
  for (const b of voters3()) {
    if (a === b) continue;
    singleLinkFaults.push([`${a}->${b} lost`, (net) => net.cutOneWay(a, b)]);
    if (a < b) singleLinkFaults.push([`${a}<->${b} cut`, (net) => net.cut(a, b)]);
  }
}
for (const a of voters3()) {
  singleLinkFaults.push([`nothing reaches ${a}`, (net) => voters3().filter((b) => b !== a).forEach((b) => net.cutOneWay(b, a))]);
  singleLinkFaults.push([`nothing leaves ${a}`, (net) => voters3().filter((b) => b !== a).forEach((b) => net.cutOneWay(a, b))]);
}

t.test('partial faults: a majority that can talk always commits, and terms stop moving', async (t) => {
  for (const [name, fault] of singleLinkFaults) {
    for (const seed of [1, 2, 3]) {
      const net = electedNetwork(seed);
      const leaders = new LeaderLog(t);
      fault(net);
      // A node that hears nobody, or reaches nobody, leaves a majority of the other two only.
      let lastCommitTick = 0;
      let longestGap = 0;
      const termsAt = new Map<number, number>();
      for (let i = 1; i <= 30 * ELECTION; i++) {
        net.tickAll(1);
        leaders.look(net);
        const leader = newestLeader(net);
        if (leader !== null && i % 5 === 0) {
          const before = net.node(leader).raft.log.committed;
          if (catchDropped(() => net.node(leader).propose([enc(`${name}-${i}`)])) === undefined) {
            net.stabilize();
            if (net.node(leader).raft.log.committed > before) {
              longestGap = Math.max(longestGap, i - lastCommitTick);
              lastCommitTick = i;
            }
          }
        }
        if (i === 10 * ELECTION || i === 30 * ELECTION) termsAt.set(i, Math.max(...voters3().map((id) => term(net, id))));
      }
      t.ok(longestGap <= 5 * ELECTION && 30 * ELECTION - lastCommitTick <= 5 * ELECTION, `${name} (seed ${seed}): commits at most ${longestGap} ticks apart, the last at ${lastCommitTick}`);
      t.equal(termsAt.get(30 * ELECTION), termsAt.get(10 * ELECTION), `${name} (seed ${seed}): no term change in the last 20 election timeouts`);
    }
  }
});

t.test('ReadIndex on a leader cut off one way (it sends, hears nothing): never released, while the others elect and commit', async (t) => {
  const net = electedNetwork();
  net.node(n1).propose([enc('before')]);
  net.stabilize();
  net.cutOneWay(n2, n1);
  net.cutOneWay(n3, n1);
  net.node(n1).readIndex('stale?');
  net.stabilize();
  let committedElsewhere = false;
  for (let i = 0; i < 6 * ELECTION; i++) {
    net.tickAll(1);
    const leader = newestLeader(net);
    if (!committedElsewhere && leader !== null && leader !== n1) {
      net.node(leader).propose([enc('after')]);
      net.stabilize();
      committedElsewhere = net.appliedData(leader).includes('after');
    }
  }
  t.ok(committedElsewhere, 'nodes 2 and 3 elected a leader and committed a write');
  t.same(net.readStates.get(n1), [], 'the deposed leader never released the read');
  t.same(net.abortedReads.get(n1), ['stale?'], 'it was aborted when the leader stepped down');
  t.throws(() => net.node(n1).readIndex('again'), ProposalDroppedError, 'a read asked of it now is refused');
});

t.test('ReadIndex on a leader that can reach one follower only one way: released only with a quorum it hears', async (t) => {
  // n1 hears n3 (n3 -> n1) but n1's messages to n3 are lost; n1 and n2 are cut both ways.
  const net = electedNetwork();
  net.cut(n1, n2);
  net.cutOneWay(n1, n3);
  net.node(n1).readIndex('r');
  for (let i = 0; i < 4 * ELECTION; i++) net.tickAll(1);
  t.same(net.readStates.get(n1), [], 'never released: no follower can answer its heartbeat round');
  t.not(role(net, n1), Role.Leader, 'and it stepped down');
});

t.test('leadership transfer', async (t) => {
  t.test('to a target the leader cannot reach (one way): writes refused for one election timeout, then taken again; no term change', async (t) => {
    const net = electedNetwork();
    const T = term(net, n1);
    net.cutOneWay(n1, n2);
    net.node(n1).transferLeadership(n2);
    net.stabilize();
    let refusedTicks = 0;
    for (let i = 0; i < 3 * ELECTION; i++) {
      if (catchDropped(() => net.node(n1).propose([enc(`w${i}`)]))?.reason === DropReason.Transferring) refusedTicks++;
      net.tickAll(1);
    }
    t.ok(refusedTicks > 0 && refusedTicks <= ELECTION, `refused for ${refusedTicks} ticks`);
    t.equal(newestLeader(net), n1);
    t.equal(term(net, n1), T);
    t.ok(net.appliedData(n3).length >= ELECTION, 'writes commit with node 3 after the transfer was abandoned');
  });

  t.test('to a target that is behind and stops mid-transfer: abandoned, writes resume', async (t) => {
    const net = electedNetwork();
    net.cut(n1, n2);
    for (const d of ['a', 'b', 'c']) {
      net.node(n1).propose([enc(d)]);
      net.stabilize();
    }
    net.heal();
    net.node(n1).transferLeadership(n2);
    net.isolate(n2); // it crashed before catching up
    t.equal(catchDropped(() => net.node(n1).propose([enc('x')]))?.reason, DropReason.Transferring);
    net.tickAll(ELECTION);
    t.equal(catchDropped(() => net.node(n1).propose([enc('y')])), undefined, 'writes taken again');
    net.stabilize();
    t.same(net.appliedData(n3), ['a', 'b', 'c', 'y']);
  });

  t.test('whose TimeoutNow arrives after the transfer was abandoned: one leader per term, the log intact', async (t) => {
    const net = electedNetwork();
    const leaders = new LeaderLog(t);
    const held: Parameters<Network['deliver']>[0] = [];
    net.node(n1).transferLeadership(n2);
    // Hold the TimeoutNow back.
    net.stabilize(100, (m) => {
      if (m.type === 'timeout-now') {
        held.push(m);
        return null;
      }
      return m;
    });
    t.equal(held.length, 1);
    net.tickAll(ELECTION);
    t.equal(catchDropped(() => net.node(n1).propose([enc('after-abandon')])), undefined, 'the transfer was abandoned');
    net.stabilize();
    leaders.look(net);
    net.deliver(held);
    net.stabilize();
    leaders.look(net);
    t.equal(newestLeader(net), n2, 'the late TimeoutNow still hands leadership over, in the next term');
    net.node(n2).propose([enc('next')]);
    net.stabilize();
    for (const id of voters3()) t.same(net.appliedData(id), ['after-abandon', 'next'], `node ${id} applied both`);
  });

  t.test('to a target whose own messages are lost (it hears, cannot send): the leader keeps writing with node 3', async (t) => {
    const net = electedNetwork();
    const leaders = new LeaderLog(t);
    net.cutOneWay(n2, n1);
    net.cutOneWay(n2, n3);
    net.node(n1).transferLeadership(n2);
    net.stabilize();
    let committed = 0;
    for (let i = 0; i < 5 * ELECTION; i++) {
      net.tickAll(1);
      leaders.look(net);
      const leader = newestLeader(net);
      if (leader !== null && catchDropped(() => net.node(leader).propose([enc(`w${i}`)])) === undefined) committed++;
      net.stabilize();
    }
    t.equal(newestLeader(net), n1, 'node 1 still leads: node 2 campaigned, but nobody heard it');
    t.ok(committed >= 3 * ELECTION, `${committed} writes taken`);
    t.ok(net.appliedData(n3).length >= 3 * ELECTION, 'and committed with node 3');
  });
});
