// A transfer's target whose pre-vote neither wins nor loses (its answers lost with a broken stream,
// or the third voter down while the leader refuses) goes on acknowledging and applying the leader's
// appends, says who leads (the router forwards there), follows the leader again after an election
// timeout, and takes a later TimeoutNow. Before, it stayed a pre-candidate with no known leader for as
// long as the leader's heartbeats came, and ignored the leader's next TimeoutNow (review of
// 2026-12-07; etcd's pre-candidate follows on any append of its term).
import t from 'tap';
import { MessageType, Role, type Message } from '../../src/raft/index.js';
import { Network, ids, n1, n2, n3 } from './helpers.js';

const enc = (s: string) => new TextEncoder().encode(s);

t.test('a transfer target whose pre-vote answers were lost follows its leader again', async (t) => {
  const net = new Network(ids('1', '2', '3'));
  net.elect(n1);
  net.node(n1).propose([enc('a')]);
  net.stabilize();
  t.equal(net.leader(), n1);

  // The transfer to n2 (up to date): TimeoutNow goes at once; both pre-vote answers to n2 are lost
  // (a stream broken with them in flight).
  net.node(n1).transferLeadership(n2);
  net.stabilize(100, (m) => (m.type === MessageType.PreVoteResp && m.to === n2 ? null : m));
  t.equal(net.node(n2).raft.role, Role.PreCandidate, 'n2 runs its pre-vote');

  // Five election timeouts of a healthy group: n1 leads and heartbeats, n2 acknowledges.
  net.tickAll(50);
  t.equal(net.leader(), n1, 'n1 still leads');
  net.node(n1).propose([enc('b')]);
  net.stabilize();
  t.same(net.appliedData(n2), ['a', 'b'], 'n2 still acknowledges and applies');
  t.equal(net.node(n2).raft.role, Role.Follower, `n2 is a follower again (it is ${net.node(n2).raft.role})`);
  t.equal(net.node(n2).softState().leader, n1, `n2 knows its leader (it knows ${String(net.node(n2).softState().leader)})`);

  // Another hand-over to n2 (Leadership.balance retries one): its TimeoutNow is dropped by stepCandidate.
  net.node(n1).transferLeadership(n2);
  net.stabilize();
  net.tickAll(5);
  t.equal(net.leader(), n2, `a later transfer to n2 completes (leader: ${String(net.leader())}, n2: ${net.node(n2).raft.role})`);
});

t.test('with the third voter down, a pre-vote the leader refuses leaves the target leaderless for good', async (t) => {
  const net = new Network(ids('1', '2', '3'));
  net.elect(n1);
  net.node(n1).propose([enc('a')]);
  net.stabilize();

  // n3 is down. A TimeoutNow for n2 is held up on the way; the transfer is abandoned, and n1 takes
  // writes again: 'x' has not reached n2 when the old TimeoutNow arrives.
  net.isolate(n3);
  const held: Message[] = [];
  net.node(n1).transferLeadership(n2);
  net.stabilize(100, (m) => (m.type === MessageType.TimeoutNow ? (held.push(m), null) : m));
  net.tickAll(10);
  t.equal(net.node(n1).raft.leadTransferee, null, 'the transfer was abandoned');
  net.node(n1).propose([enc('x')]);
  // n1's append of 'x' to n2 is still on its way (not delivered yet).
  const ready = net.node(n1).ready();
  net.storages.get(n1)!.append(ready.entries);
  const inFlight = ready.messages.filter((m) => m.type === MessageType.App && m.to === n2);
  net.node(n1).advance(ready);
  t.equal(inFlight.length, 1, "n1's append of 'x' to n2 is in flight");

  net.node(n2).step(held[0]!);
  // n1 refuses the pre-vote (its log is ahead); n3's answer never comes.
  net.stabilize();
  t.equal(net.node(n2).raft.role, Role.PreCandidate, 'n2 waits for its pre-vote');
  // 'x' arrives; the group goes on (n1 and n2 commit it).
  net.deliver(inFlight);
  net.stabilize();
  net.tickAll(50);
  t.same(net.appliedData(n2), ['a', 'x'], "n2 acknowledged and applied 'x'");
  t.equal(net.leader(), n1, 'n1 leads');
  t.equal(net.node(n2).raft.role, Role.Follower, `n2 is a follower of n1 again (it is ${net.node(n2).raft.role})`);
  t.equal(net.node(n2).softState().leader, n1, `n2 knows its leader (it knows ${String(net.node(n2).softState().leader)})`);
});

t.test('a transfer target names its leader while its pre-vote is out, and does not wait twice for a leader that died meanwhile', async (t) => {
  const net = new Network(ids('1', '2', '3'));
  net.elect(n1);
  net.node(n1).propose([enc('a')]);
  net.stabilize();
  net.node(n1).transferLeadership(n2);
  net.stabilize(100, (m) => (m.type === MessageType.PreVoteResp && m.to === n2 ? null : m));
  t.equal(net.node(n2).raft.role, Role.PreCandidate);
  t.equal(net.node(n2).softState().leader, n1, 'the leader that asked for the transfer is still named');
  // n1 dies; n3 is cut off too, so that only n2's own timers act.
  net.isolate(n1);
  net.isolate(n3);
  const roles: string[] = [];
  for (let i = 0; i < 2 * 10 - 1; i++) {
    net.node(n2).tick();
    net.stabilize();
    roles.push(net.node(n2).raft.role);
  }
  const followed = roles.indexOf(Role.Follower);
  t.ok(followed >= 0, 'the pre-vote is given up after an election timeout');
  t.ok(roles.slice(followed).includes(Role.PreCandidate), `and n2 campaigns within two election timeouts of the last append (roles: ${roles.join(' ')})`);
});
