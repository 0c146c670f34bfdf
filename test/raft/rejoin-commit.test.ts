// A node whose disk was lost votes again once it holds "what the leader committed" (Raft.suspendVoting).
// A leader's commit index is a lower bound only: a new leader does not know how far its predecessor
// committed until an entry of its own term commits (§5.4.2, thesis §6.4). A rejoining node that takes
// a new leader's stale commit index for everything committed votes again without an entry that only
// it (before its loss) and the new leader held; with the third node behind, the two then elect a
// leader without that entry, and an acknowledged write is lost.
import t from 'tap';
import { MemoryStorage, MessageType, RawNode, Role, type Message } from '../../src/raft/index.js';
import { Network, ids, n1, n2, n3, seededRandom, text } from './helpers.js';

const enc = (s: string) => new TextEncoder().encode(s);
const voters3 = () => ids('1', '2', '3');
// One entry per append and one append in flight per follower, as the host sends them (replica.ts).
const OPTS = { maxSizePerMsg: 1, maxInflightMsgs: 1 };

/** Ready cycles and deliveries until quiet; `drop` is asked for each message as it is delivered. */
const settle = (net: Network, drop: (m: Message) => boolean = () => false): void => net.stabilize(500, (m) => (drop(m) ? null : m));

t.test('a rejoining node does not take a new leader’s stale commit index for all that was committed', async (t) => {
  const net = new Network(voters3(), OPTS);
  net.node(n3).campaign();
  settle(net);
  t.equal(net.leader(), n3);
  net.node(n3).propose([enc('a')]);
  settle(net);

  // n3 appends x1..x3; n2 hears nothing. n1 acknowledges each, and n3 commits them all, but dies
  // before telling n1 that x3 is committed: n1 knows a commit index one short of it.
  for (const x of ['x1', 'x2', 'x3']) net.node(n3).propose([enc(x)]);
  const leader3 = net.node(n3).raft;
  settle(net, (m) => m.to === n2 || m.from === n2 || (m.from === n3 && leader3.log.committed === 5));
  t.equal(leader3.log.committed, 5, 'x3 (index 5) is committed: on n3 and n1');
  t.equal(text(net.storages.get(n1)!.entries(5, 6, Infinity)[0]!), 'x3');
  t.equal(net.node(n1).raft.log.committed, 4, 'n1 was last told commit 4');
  t.equal(net.storages.get(n2)!.lastIndex(), 2, 'n2 is behind: it lacks x1..x3');

  // n3 loses its disk and rejoins as the host makes it: empty, voting suspended, its term raised to
  // the highest its peers hold (ClusterNode.learnTerms).
  const disk = new MemoryStorage(voters3());
  const fresh = new RawNode({ electionTick: 10, heartbeatTick: 1, random: seededRandom(7), id: n3, voters: voters3(), ...OPTS }, disk);
  net.nodes.set(n3, fresh);
  net.storages.set(n3, disk);
  net.applied.set(n3, []);
  fresh.suspendVoting();
  fresh.raiseTerm(Math.max(net.node(n1).raft.term, net.node(n2).raft.term));

  // n1 is elected with n2's vote (n3 grants none). Its appends to n2 are slow (never arrive here);
  // it catches n3 up, one entry per append, and crashes as soon as n3 votes again.
  let n1Crashed = false;
  const slowN2 = (m: Message): boolean => {
    if (m.from === n1 && !fresh.votingIsSuspended()) n1Crashed = true;
    if (n1Crashed && (m.from === n1 || m.to === n1)) return true;
    return m.from === n1 && m.to === n2 && m.type === MessageType.App;
  };
  // n3's silence ends n1's and n2's leases; n2 cannot win (n1's log is ahead), n1 can.
  for (let i = 0; i < 100 && net.node(n1).raft.role !== Role.Leader; i++) {
    net.node(n1).tick();
    net.node(n2).tick();
    settle(net, slowN2);
  }
  t.equal(net.node(n1).raft.role, Role.Leader, 'n1 led term ' + net.node(n1).raft.term);
  if (!fresh.votingIsSuspended()) {
    t.ok(net.storages.get(n3)!.lastIndex() >= 5, `n3 votes again only holding x3 (it holds up to ${net.storages.get(n3)!.lastIndex()}, n1's commit was ${net.node(n1).raft.log.committed})`);
  }

  // n1 is gone. n2 and n3 go on; whoever they elect must hold x3 at index 5.
  const drop = (m: Message): boolean => m.from === n1 || m.to === n1;
  for (let i = 0; i < 100 && ![n2, n3].some((id) => net.node(id).raft.role === Role.Leader); i++) {
    net.node(n2).tick();
    net.node(n3).tick();
    settle(net, drop);
  }
  const elected = [n2, n3].find((id) => net.node(id).raft.role === Role.Leader);
  if (elected !== undefined) {
    net.node(elected).propose([enc('after')]);
    settle(net, drop);
    const at5 = net.storages.get(elected)!.entries(5, 6, Infinity)[0];
    t.equal(at5 === undefined ? undefined : text(at5), 'x3', `${elected}, elected by n2 and n3, holds the committed x3 at index 5`);
    t.ok(net.appliedData(elected).includes('x3'), 'and applies it');
  } else {
    t.pass('no leader without n1: n3 still waits to catch up (no committed entry lost)');
  }
});
