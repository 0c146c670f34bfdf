// Bugs the simulator found, each reproduced at the lowest level that shows it.
import t from 'tap';
import { MemoryStorage, MessageType, type Message } from '../../src/raft/index.js';
import { entry, n1, n2, n3, newTestRaft, readMessages } from './helpers.js';

// Simulator seed 136: with PreVote off, two candidates whose logs were behind kept raising the term;
// each raise restarted the election timer of the one node that could win, so it never campaigned.
// Figure 2 restarts the timer only on hearing from the leader or granting a vote.
t.test('a rejected vote request of a higher term does not restart the election timer', async (t) => {
  const storage = new MemoryStorage([n1, n2, n3]);
  storage.append([entry(1, 1), entry(2, 1)]);
  storage.setHardState({ term: 1, vote: null, commit: 0 });
  const { raft: fresh } = newTestRaft(n1, [n1, n2, n3], { preVote: false, checkQuorum: false, random: () => 0, storage });
  for (let i = 0; i < 9; i++) fresh.tick();
  const behind: Message = { type: MessageType.Vote, from: n2, to: n1, term: 5, lastLogIndex: 0, lastLogTerm: 0, transfer: false };
  fresh.step(behind);
  t.equal(fresh.term, 5, 'the higher term is adopted');
  t.same(readMessages(fresh).map((m) => (m.type === MessageType.VoteResp ? m.reject : null)), [true], 'the vote is refused');
  fresh.tick();
  t.equal(fresh.role, 'candidate', 'the timer kept running: the up-to-date node campaigns on its 10th tick');
  t.equal(fresh.term, 6);
});

t.test('granting a vote does restart the election timer', async (t) => {
  const { raft } = newTestRaft(n1, [n1, n2, n3], { preVote: false, checkQuorum: false, random: () => 0 });
  for (let i = 0; i < 9; i++) raft.tick();
  raft.step({ type: MessageType.Vote, from: n2, to: n1, term: 5, lastLogIndex: 0, lastLogTerm: 0, transfer: false });
  t.equal(raft.vote, n2);
  raft.tick();
  t.equal(raft.role, 'follower', 'one tick after voting, no campaign');
});
