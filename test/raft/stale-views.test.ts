// What one node believes of another after it stopped being so (review of 2026-12-07):
// - a leader's match for a follower describes the log that follower held when it last answered an
//   append. A folder restored from a backup may hold other entries past its commit index (a deposed
//   leader's, never committed): a heartbeat's commit, min(match, commit), committed them there, and
//   the follower applied a write that was never made in place of an acknowledged one, then never
//   caught up (each probe below that index met the "already committed" answer).
// - a granted pre-vote echoes the term asked for: one from an earlier pre-campaign, arriving late, was
//   counted in the next, and a node that could not win a pre-vote raised its term anyway.
import t from 'tap';
import { MessageType, RawNode, type Message } from '../../src/raft/index.js';
import { Network, ids, n1, n2, n3, newTestRaft, readMessages, seededRandom, text } from './helpers.js';

const enc = (s: string): Uint8Array => new TextEncoder().encode(s);

t.test('a follower restored from a backup never applies an entry that was not committed', async (t) => {
  const voters = ids('1', '2', '3');
  const net = new Network(voters, { maxSizePerMsg: 1, maxInflightMsgs: 1 });
  net.elect(n2);
  t.equal(net.leader(), n2);
  net.node(n2).propose([enc('a')]);
  net.stabilize();
  const t1 = net.node(n2).raft.term;

  // n2, still leader, appends 'x' while cut off: it never leaves n2, so it is never committed.
  net.isolate(n2);
  net.node(n2).propose([enc('x')]);
  net.stabilize();
  const xIndex = net.node(n2).raft.log.lastIndex();
  t.equal(text(net.storages.get(n2)!.entries(xIndex, xIndex + 1, Infinity)[0]!), 'x');
  // The operator's backup of n2's folder, taken now.
  const backup = net.storages.get(n2)!.clone();
  const backupHard = backup.hardState();
  t.ok(backupHard.commit < xIndex, 'x is not committed in the backup');

  // n1 or n3 is elected without n2, commits 'y' at x's index and more; n2 comes back and 'x' is overwritten.
  for (let i = 0; i < 60 && (net.leader() === null || net.leader() === n2); i++) net.tickAll(1);
  const L = net.leader()!;
  t.ok(L === n1 || L === n3, `a new leader without n2: ${L}`);
  for (const y of ['y1', 'y2', 'y3']) net.node(L).propose([enc(y)]);
  net.stabilize();
  net.heal();
  net.tickAll(3);
  const t2 = net.node(L).raft.term;
  t.ok(t2 > t1);
  t.equal(net.node(L).raft.progress.get(n2)!.match, net.node(L).raft.log.lastIndex(), 'n2 caught up');
  t.not(net.storages.get(n2)!.term(xIndex), backup.term(xIndex), "n2's 'x' was overwritten by the new leader's entry");

  // n2 is restored from the backup and rejoins as the host makes it (ClusterNode.learnTerms):
  // voting suspended, its term raised to the highest its peers hold. The same leader still leads, same term.
  const restored = new RawNode(
    { electionTick: 10, heartbeatTick: 1, random: seededRandom(9), id: n2, voters, maxSizePerMsg: 1, maxInflightMsgs: 1, applied: backupHard.commit },
    backup,
  );
  restored.suspendVoting();
  restored.raiseTerm(t2);
  net.nodes.set(n2, restored);
  net.storages.set(n2, backup);
  net.applied.set(n2, []);

  // The next heartbeat round, and the appends it leads to.
  net.node(L).tick();
  net.stabilize(50);
  net.tickAll(30);
  const appliedOnN2 = net.applied.get(n2)!.filter((e) => e.kind === 0).map(text);
  t.notOk(appliedOnN2.includes('x'), `n2 applied ${JSON.stringify(appliedOnN2)}: 'x' was never committed`);
  t.same(appliedOnN2, ['y1', 'y2', 'y3'], 'n2 applied what the leader committed since its backup');
  const lead = net.node(L).raft;
  t.equal(restored.raft.log.term(xIndex), lead.log.term(xIndex), "n2's log holds the leader's entry at x's index");
  t.equal(lead.progress.get(n2)!.match, lead.log.lastIndex(), 'n2 caught up');
  t.notOk(restored.votingIsSuspended(), 'and votes again');
});

t.test('a granted pre-vote of an earlier pre-campaign is not counted in a later one', async (t) => {
  const { raft: r } = newTestRaft(n2, [n1, n2, n3], { random: () => 0 });
  t.equal(r.term, 0);
  // First pre-campaign at term 0 (asks for term 1). n3 grants, but its answer is delayed.
  r.campaignNow();
  t.equal(r.role, 'pre-candidate');
  const preVotes = readMessages(r).filter((m) => m.type === MessageType.PreVote);
  t.equal(preVotes.length, 2);
  const staleGrant: Message = { type: MessageType.PreVoteResp, from: n3, to: n2, term: 1, reject: false };
  // Meanwhile n1 wins term 1 and n2 follows it.
  r.step({ type: MessageType.Heartbeat, from: n1, to: n2, term: 1, commit: 0, readRound: 0 });
  readMessages(r);
  t.equal(r.term, 1);
  t.equal(r.role, 'follower');
  // n2 stops hearing n1 (a one-way fault) and pre-campaigns at term 1 (asks for term 2).
  for (let i = 0; i < 20 && r.role === 'follower'; i++) r.tick();
  t.equal(r.role, 'pre-candidate');
  readMessages(r);
  // Nobody grants this pre-vote (n1 and n3 still hear the leader). The old grant arrives.
  r.step(staleGrant);
  t.equal(r.term, 1, `the term stays 1 without a pre-vote quorum (role ${r.role}, term ${r.term})`);
  t.equal(r.role, 'pre-candidate');
});
