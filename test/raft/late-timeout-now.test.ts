// A TimeoutNow that arrives after its transfer was abandoned (thesis §3.10: the leader gives a
// transfer an election timeout, then takes writes again). The target, still in the leader's term,
// campaigned at once with the transfer flag, which makes every node, the leader included, set its
// lease aside. Meanwhile the leader had committed entries the target lacks: the target could not
// win, yet the leader stepped down, and the partition had no leader for an election timeout (review
// of 2026-12-07). The target now asks a pre-vote first, carrying the transfer: one it cannot win
// moves no term.
import t from 'tap';
import { MessageType, Role, type Message } from '../../src/raft/index.js';
import { Network, ids, n1, n2, n3 } from './helpers.js';

const enc = (s: string) => new TextEncoder().encode(s);

t.test('a TimeoutNow delivered after its transfer was abandoned leaves the leader leading', async (t) => {
  const net = new Network(ids('1', '2', '3'));
  net.elect(n1);
  t.equal(net.leader(), n1);
  const T = net.node(n1).raft.term;

  // The transfer to n2: n2 is up to date, so TimeoutNow leaves at once; it is held up on the way.
  const held: Message[] = [];
  net.node(n1).transferLeadership(n2);
  net.stabilize(100, (m) => {
    if (m.type === MessageType.TimeoutNow) {
      held.push(m);
      return null;
    }
    return m;
  });
  t.equal(held.length, 1, 'one TimeoutNow, held up');

  // An election timeout later the leader abandons the transfer and takes writes again.
  net.tickAll(10);
  t.equal(net.node(n1).raft.leadTransferee, null, 'the transfer was abandoned');
  // n2 misses what the leader writes now (a slow link); n1 and n3 commit it.
  net.isolate(n2);
  for (const d of ['x', 'y']) net.node(n1).propose([enc(d)]);
  net.stabilize();
  t.same(net.appliedData(n3), ['x', 'y'], 'committed by n1 and n3');
  net.heal();

  // The old TimeoutNow finally arrives, still in the leader's term.
  t.equal(net.node(n2).raft.term, T);
  net.node(n2).step(held[0]!);
  net.stabilize();
  const roles = [n1, n2, n3].map((id) => `${id}:${net.node(id).raft.role}@${net.node(id).raft.term}`).join(' ');
  t.equal(net.leader(), n1, `n1 still leads: a stale hand-over deposes nobody (${roles})`);
  t.not(net.node(n1).raft.role, Role.Follower, 'the leader did not step down for a candidate that cannot win');
  let ticks = 0;
  while (net.leader() === null && ticks < 100) {
    net.tickAll(1);
    ticks++;
  }
  t.comment(`a leader (${String(net.leader())}) again after ${ticks} ticks (election timeout: 10)`);
});

t.test('a transfer completes through its pre-vote, which carries the transfer past the leases', async (t) => {
  const net = new Network(ids('1', '2', '3'));
  net.elect(n1);
  net.node(n1).propose([enc('before')]);
  net.stabilize();
  const T = net.node(n1).raft.term;
  const seen: Message[] = [];
  net.node(n1).transferLeadership(n2);
  net.stabilize(100, (m) => {
    if (m.type === MessageType.PreVote || m.type === MessageType.Vote) seen.push(m);
    return m;
  });
  const first = seen.filter((m) => m.from === n2)[0];
  t.match(first, { type: MessageType.PreVote, term: T + 1, transfer: true }, 'a pre-vote first, carrying the transfer');
  t.ok(seen.some((m) => m.from === n2 && m.type === MessageType.Vote && m.transfer), 'then the vote');
  t.equal(net.leader(), n2, 'n2 leads');
  t.equal(net.node(n2).raft.term, T + 1, 'in the next term');
  net.node(n2).propose([enc('after')]);
  net.stabilize();
  t.same(net.appliedData(n3), ['before', 'after'], 'and writes go on');
});

t.test('a transfer completes with the leader heartbeating while the pre-vote is out', async (t) => {
  const net = new Network(ids('1', '2', '3'));
  net.elect(n1);
  const T = net.node(n1).raft.term;
  // The leader's answers to the pre-vote are held until it has heartbeaten the target meanwhile.
  const held: Message[] = [];
  net.node(n1).transferLeadership(n2);
  net.stabilize(100, (m) => {
    if (m.type === MessageType.PreVoteResp || (m.type === MessageType.PreVote && m.to === n3)) {
      held.push(m);
      return null;
    }
    return m;
  });
  t.ok(held.some((m) => m.type === MessageType.PreVoteResp && m.from === n1 && !m.reject), 'the leader granted the pre-vote');
  let beats = 0;
  for (let i = 0; i < 5; i++) net.node(n1).tick();
  net.stabilize(100, (m) => {
    if (m.type === MessageType.Heartbeat && m.to === n2) beats++;
    return m;
  });
  t.ok(beats > 0, `${beats} heartbeats reached n2 meanwhile`);
  net.deliver(held.filter((m) => m.type === MessageType.PreVoteResp));
  net.stabilize();
  t.equal(net.leader(), n2, 'n2 leads: the heartbeats did not end its pre-vote');
  t.equal(net.node(n2).raft.term, T + 1);
});
