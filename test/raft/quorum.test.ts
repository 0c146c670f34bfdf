// Majority arithmetic: majority(), committedIndex(), tally() and hasQuorum() (§5.2, §5.3).
import t from 'tap';
import { VoteResult, committedIndex, hasQuorum, majority, tally, type NodeId } from '../../src/raft/index.js';
import { idsBySize, n1, n2, n3, n4, n5 } from './helpers.js';

t.test('majority', async (t) => {
  const cases: [number, number][] = [
    [1, 1],
    [2, 2],
    [3, 2],
    [4, 3],
    [5, 3],
    [6, 4],
    [7, 4],
  ];
  for (const [size, want] of cases) t.equal(majority(size), want, `majority(${size})`);
});

t.test('committedIndex', async (t) => {
  const matchOf = (m: Record<string, number>) => (id: NodeId) => m[id] ?? 0;
  const cases: { voters: NodeId[]; match: Record<string, number>; want: number; what: string }[] = [
    { voters: [], match: {}, want: 0, what: 'no voters' },
    { voters: [n1], match: { 1: 7 }, want: 7, what: 'single voter' },
    { voters: [n1], match: {}, want: 0, what: 'single voter without match' },
    { voters: idsBySize(3), match: { 1: 5, 2: 5, 3: 5 }, want: 5, what: 'all equal' },
    { voters: idsBySize(3), match: { 1: 9, 2: 4, 3: 1 }, want: 4, what: 'median of three' },
    { voters: idsBySize(3), match: { 1: 9, 2: 0, 3: 0 }, want: 0, what: 'only the leader' },
    { voters: idsBySize(3), match: { 1: 9 }, want: 0, what: 'missing voters count as 0' },
    { voters: idsBySize(3), match: { 1: 2, 2: 8, 3: 8 }, want: 8, what: 'followers ahead of the leader' },
    { voters: idsBySize(4), match: { 1: 10, 2: 9, 3: 1, 4: 1 }, want: 1, what: 'four voters need three' },
    { voters: idsBySize(4), match: { 1: 10, 2: 9, 3: 8, 4: 1 }, want: 8, what: 'four voters, third highest' },
    { voters: idsBySize(5), match: { 1: 10, 2: 9, 3: 8, 4: 2, 5: 1 }, want: 8, what: 'five voters' },
    { voters: idsBySize(5), match: { 1: 10, 2: 10, 3: 1, 4: 1, 5: 1 }, want: 1, what: 'five voters, only two ahead' },
    { voters: idsBySize(5), match: { 1: 3, 2: 7, 3: 5, 4: 9, 5: 1 }, want: 5, what: 'unsorted input' },
  ];
  for (const c of cases) t.equal(committedIndex(c.voters, matchOf(c.match)), c.want, c.what);
});

t.test('tally', async (t) => {
  const votes = (m: [NodeId, boolean][]) => new Map<NodeId, boolean>(m);
  const cases: { size: number; votes: [NodeId, boolean][]; want: VoteResult }[] = [
    // one voter
    { size: 1, votes: [], want: VoteResult.Pending },
    { size: 1, votes: [[n1, true]], want: VoteResult.Won },
    { size: 1, votes: [[n1, false]], want: VoteResult.Lost },
    // three voters
    { size: 3, votes: [], want: VoteResult.Pending },
    { size: 3, votes: [[n1, true]], want: VoteResult.Pending },
    { size: 3, votes: [[n1, true], [n2, false]], want: VoteResult.Pending },
    { size: 3, votes: [[n1, true], [n2, true]], want: VoteResult.Won },
    { size: 3, votes: [[n1, true], [n2, false], [n3, true]], want: VoteResult.Won },
    { size: 3, votes: [[n1, true], [n2, false], [n3, false]], want: VoteResult.Lost },
    { size: 3, votes: [[n2, false], [n3, false]], want: VoteResult.Lost },
    // five voters
    { size: 5, votes: [[n1, true], [n2, true]], want: VoteResult.Pending },
    { size: 5, votes: [[n1, true], [n2, true], [n3, true]], want: VoteResult.Won },
    { size: 5, votes: [[n1, true], [n2, false], [n3, false]], want: VoteResult.Pending },
    { size: 5, votes: [[n1, true], [n2, false], [n3, false], [n4, false]], want: VoteResult.Lost },
    { size: 5, votes: [[n1, true], [n2, true], [n3, false], [n4, false]], want: VoteResult.Pending },
    { size: 5, votes: [[n1, true], [n2, true], [n3, false], [n4, false], [n5, true]], want: VoteResult.Won },
  ];
  for (const c of cases) {
    const desc = `${c.size} voters: ${c.votes.map(([id, g]) => `${id}:${g ? 'y' : 'n'}`).join(' ') || 'no votes'}`;
    t.equal(tally(idsBySize(c.size), votes(c.votes)), c.want, desc);
  }
  // Votes from non-voters are not counted.
  t.equal(
    tally(idsBySize(3), votes([[n1, true], [n4, true], [n5, true]])),
    VoteResult.Pending,
    'votes from outside the voter set do not count',
  );
});

t.test('hasQuorum', async (t) => {
  const acked = (s: NodeId[]) => (id: NodeId) => s.includes(id);
  t.equal(hasQuorum([n1], acked([n1])), true);
  t.equal(hasQuorum([n1], acked([])), false);
  t.equal(hasQuorum(idsBySize(3), acked([n1])), false);
  t.equal(hasQuorum(idsBySize(3), acked([n1, n3])), true);
  t.equal(hasQuorum(idsBySize(5), acked([n1, n2])), false);
  t.equal(hasQuorum(idsBySize(5), acked([n1, n4, n5])), true);
  t.equal(hasQuorum(idsBySize(3), acked([n4, n5])), false, 'acks from non-voters do not count');
});
