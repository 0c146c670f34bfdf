// The rules of §5 of the Raft paper ("In Search of an Understandable Consensus Algorithm", Ongaro and
// Ousterhout, https://raft.github.io/raft.pdf), one test per rule, in the manner of etcd-io/raft's
// raft_paper_test.go. Each test sets up a state by hand, drives the core with step()/tick(), and checks
// the messages that come out and the state left behind.
//
// Where the paper's text describes plain Raft, the node runs with `preVote: false` (and, where leases
// would get in the way, `checkQuorum: false`); the PreVote variant of the same rule is tested next to it.
import t from 'tap';
import {
  EntryKind,
  MemoryStorage,
  MessageType,
  Role,
  type AppendRequest,
  type AppendResponse,
  type Entry,
  type HardState,
  type Heartbeat,
  type HeartbeatResponse,
  type Message,
  type NodeId,
  type Raft,
  type VoteRequest,
  type VoteResponse,
} from '../../src/raft/index.js';
import {
  entry,
  idsBySize,
  n1,
  n2,
  n3,
  n4,
  n5,
  newTestRaft,
  persistAll,
  readMessages,
  seededRandom,
  text,
  type TestRaftOptions,
} from './helpers.js';

// ---- local helpers ----

const plain: TestRaftOptions = { preVote: false, checkQuorum: false };
const ET = 10; // election ticks used throughout (the helpers' default)

/** Entries with the given terms, from index `first` on (Figure 7 style: terms(1, 1, 4) = 1@1 1@2 4@3). */
function terms(first: number, ...ts: number[]): Entry[] {
  return ts.map((term, i) => entry(first + i, term));
}

/** A raft whose storage already holds `log` and `hard` (as after a restart). */
function raftWith(
  id: NodeId,
  voters: NodeId[],
  log: Entry[],
  hard: Partial<HardState> = {},
  opts: TestRaftOptions = {},
): { raft: Raft; storage: MemoryStorage } {
  const storage = new MemoryStorage(voters);
  storage.append(log);
  storage.setHardState({ term: 0, vote: null, commit: 0, ...hard });
  return newTestRaft(id, voters, { ...opts, storage });
}

function app(from: NodeId, to: NodeId, term: number, prevIndex: number, prevTerm: number, entries: Entry[] = [], commit = 0): AppendRequest {
  return { type: MessageType.App, from, to, term, prevIndex, prevTerm, entries, commit };
}

function appResp(from: NodeId, to: NodeId, term: number, index: number): AppendResponse {
  return { type: MessageType.AppResp, from, to, term, index, reject: false, hintIndex: 0, hintTerm: 0 };
}

function heartbeat(from: NodeId, to: NodeId, term: number, commit = 0): Heartbeat {
  return { type: MessageType.Heartbeat, from, to, term, commit, readRound: 0 };
}

function heartbeatResp(from: NodeId, to: NodeId, term: number): HeartbeatResponse {
  return { type: MessageType.HeartbeatResp, from, to, term, readRound: 0 };
}

function vote(
  from: NodeId,
  to: NodeId,
  term: number,
  lastLogIndex: number,
  lastLogTerm: number,
  type: VoteRequest['type'] = MessageType.Vote,
): VoteRequest {
  return { type, from, to, term, lastLogIndex, lastLogTerm, transfer: false };
}

function voteResp(from: NodeId, to: NodeId, term: number, reject: boolean, type: VoteResponse['type'] = MessageType.VoteResp): VoteResponse {
  return { type, from, to, term, reject };
}

/** What a follower that accepted `m` in full would answer (etcd's acceptAndReply). */
function acceptAndReply(m: Message): AppendResponse {
  if (m.type !== MessageType.App) throw new Error(`expected an append, got ${m.type}`);
  return appResp(m.to, m.from, m.term, m.prevIndex + m.entries.length);
}

/**
 * Makes `r` leader of the next term: it campaigns (through PreVote if enabled) and the other voters,
 * in id order, grant until it wins. The campaign's own requests are dropped; the leader's first
 * appends (with its no-op) come out of the next flush.
 */
function elect(r: Raft): void {
  r.campaignNow();
  for (const v of r.voters) {
    if (r.role !== Role.PreCandidate) break;
    if (v !== r.id) r.step(voteResp(v, r.id, r.term + 1, false, MessageType.PreVoteResp));
  }
  for (const v of r.voters) {
    if (r.role !== Role.Candidate) break;
    if (v !== r.id) r.step(voteResp(v, r.id, r.term, false));
  }
  if (r.role !== Role.Leader) throw new Error(`${r.id} failed to become leader`);
  r.msgs = r.msgs.filter((m) => m.type !== MessageType.Vote && m.type !== MessageType.PreVote);
}

/**
 * Commits the new leader's no-op: every follower accepts the first append, the leader persists its log,
 * and the resulting commit announcements are dropped. Afterwards every follower is in Replicate with
 * match = lastIndex, and the leader has applied everything.
 */
function commitNoop(r: Raft, s: MemoryStorage): void {
  for (const m of readMessages(r)) r.step(acceptAndReply(m));
  persistAll(r, s);
  readMessages(r);
  if (r.log.committed !== r.log.lastIndex()) throw new Error('the no-op did not commit');
  r.log.appliedTo(r.log.committed);
}

function allEntries(r: Raft): Entry[] {
  return r.log.slice(r.log.firstIndex(), r.log.lastIndex() + 1, Number.MAX_SAFE_INTEGER);
}

/** [index, term] of each entry: what log equality means for Raft (§5.3 Log Matching). */
function ids(ents: readonly Entry[]): [number, number][] {
  return ents.map((e) => [e.index, e.term]);
}

function byTo(msgs: Message[]): Message[] {
  return [...msgs].sort((a, b) => (a.to < b.to ? -1 : a.to > b.to ? 1 : 0));
}

const enc = (s: string): Uint8Array => new TextEncoder().encode(s);

/**
 * Runs the message loop between the given rafts until nothing more moves: each round every node
 * persists what it has (before anything it sends can depend on it), then its messages are delivered.
 * Messages to a node not in `nodes` are dropped. Returns every message sent.
 */
function exchange(nodes: { raft: Raft; storage: MemoryStorage }[], maxRounds = 200): Message[] {
  const byId = new Map(nodes.map((n) => [n.raft.id, n.raft]));
  const sent: Message[] = [];
  for (let i = 0; i < maxRounds; i++) {
    const out: Message[] = [];
    for (const n of nodes) {
      persistAll(n.raft, n.storage);
      out.push(...readMessages(n.raft));
    }
    if (out.length === 0) return sent;
    sent.push(...out);
    for (const m of out) byId.get(m.to)?.step(m);
  }
  throw new Error('the message exchange did not settle');
}

// ---- §5.1 Raft basics ----

// §5.1: "If one server's current term is smaller than the other's, then it updates its current term to
// the larger value. If a candidate or leader discovers that its term is out of date, it immediately
// reverts to follower state."
t.test('§5.1 follower updates its term from a message of higher term', async (t) => {
  const { raft: r } = newTestRaft(n1, [n1, n2, n3]);
  r.becomeFollower(1, n2);
  r.step(app(n3, n1, 2, 0, 0));
  t.equal(r.term, 2);
  t.equal(r.role, Role.Follower);
  t.equal(r.lead, n3, 'the sender of an append of the new term is its leader');
  t.equal(r.vote, null, 'a new term starts without a vote');
});

t.test('§5.1 candidate updates its term from a message of higher term and reverts to follower', async (t) => {
  for (const opts of [plain, {}]) {
    const { raft: r } = newTestRaft(n1, [n1, n2, n3], opts);
    r.campaignNow();
    t.equal(r.role, opts.preVote === false ? Role.Candidate : Role.PreCandidate);
    r.step(app(n2, n1, 2, 0, 0));
    t.equal(r.term, 2);
    t.equal(r.role, Role.Follower);
    t.equal(r.lead, n2);
  }
});

t.test('§5.1 leader updates its term from any message of higher term and reverts to follower', async (t) => {
  const cases: { m: Message; lead: NodeId | null }[] = [
    { m: app(n2, n1, 2, 0, 0), lead: n2 },
    { m: heartbeat(n2, n1, 2), lead: n2 },
    { m: vote(n2, n1, 2, 0, 0), lead: null },
    { m: voteResp(n2, n1, 2, true), lead: null },
    { m: { ...appResp(n2, n1, 2, 0), reject: true }, lead: null },
    { m: heartbeatResp(n2, n1, 2), lead: null },
  ];
  for (const { m, lead } of cases) {
    const { raft: r } = newTestRaft(n1, [n1, n2, n3], plain);
    elect(r);
    t.equal(r.term, 1);
    r.step(m);
    t.equal(r.term, 2, m.type);
    t.equal(r.role, Role.Follower, m.type);
    t.equal(r.lead, lead, m.type);
  }
});

// Contrast (thesis §9.6): a PreVote request asks about a term nobody has entered yet, so it does not
// move the receiver's term; only real traffic of that term does.
t.test('§5.1 (PreVote) a pre-vote request of higher term does not update the term', async (t) => {
  const { raft: r } = raftWith(n1, [n1, n2, n3], [], { term: 1 });
  r.step(vote(n2, n1, 2, 0, 0, MessageType.PreVote));
  t.equal(r.term, 1);
  t.equal(r.vote, null);
  t.same(r.msgs, [voteResp(n1, n2, 2, false, MessageType.PreVoteResp)], 'granted, echoing the campaign term');
});

// §5.1: "If a server receives a request with a stale term number, it rejects the request." With
// CheckQuorum/PreVote the rejection carries the receiver's term, so the stale leader learns of it.
t.test('§5.1 stale-term append is rejected with the current term', async (t) => {
  const { raft: r } = raftWith(n1, [n1, n2, n3], [], { term: 2 });
  t.ok(r.checkQuorum);
  r.step(app(n2, n1, 1, 0, 0, terms(1, 1), 1));
  t.same(r.msgs, [{ type: MessageType.AppResp, from: n1, to: n2, term: 2, index: 0, reject: true, hintIndex: 0, hintTerm: 0 }]);
  t.equal(r.term, 2);
  t.equal(r.role, Role.Follower);
  t.equal(r.lead, null, 'a stale leader is not recognised');
  t.equal(r.log.lastIndex(), 0, 'its entries are not appended');
  t.equal(r.log.committed, 0);

  // The same for a stale heartbeat.
  r.msgs = [];
  r.step(heartbeat(n3, n1, 1));
  t.same(r.msgs, [{ type: MessageType.AppResp, from: n1, to: n3, term: 2, index: 0, reject: true, hintIndex: 0, hintTerm: 0 }]);

  // And the stale leader, on that answer, learns the newer term and steps down.
  const { raft: old } = newTestRaft(n2, [n1, n2, n3], plain);
  elect(old);
  old.step({ type: MessageType.AppResp, from: n1, to: n2, term: 2, index: 0, reject: true, hintIndex: 0, hintTerm: 0 });
  t.equal(old.role, Role.Follower);
  t.equal(old.term, 2);
});

// §5.1, as etcd implements it without CheckQuorum/PreVote: a stale-term request is simply ignored.
t.test('§5.1 stale-term messages are ignored without CheckQuorum and PreVote', async (t) => {
  const { raft: r } = raftWith(n1, [n1, n2, n3], [], { term: 2 }, plain);
  for (const m of [app(n2, n1, 1, 0, 0, terms(1, 1), 1), heartbeat(n2, n1, 1, 1), vote(n2, n1, 1, 5, 1)]) {
    r.step(m);
    t.same(r.msgs, [], `${m.type} produces no answer`);
    t.equal(r.term, 2);
    t.equal(r.role, Role.Follower);
    t.equal(r.lead, null);
    t.equal(r.vote, null, 'no vote is granted');
    t.equal(r.log.lastIndex(), 0);
    t.equal(r.log.committed, 0);
  }
});

// ---- §5.2 Leader election ----

// §5.2: "When servers start up, they begin as followers."
t.test('§5.2 servers start as followers', async (t) => {
  const { raft: r } = newTestRaft(n1, [n1, n2, n3]);
  t.equal(r.role, Role.Follower);
  t.equal(r.term, 0);
  t.equal(r.vote, null);
  t.equal(r.lead, null);
  // Restarting with a hard state keeps term and vote, still as a follower.
  const { raft: r2 } = raftWith(n1, [n1, n2, n3], terms(1, 1, 2), { term: 3, vote: n2, commit: 1 });
  t.equal(r2.role, Role.Follower);
  t.equal(r2.term, 3);
  t.equal(r2.vote, n2);
  t.equal(r2.log.committed, 1);
});

// §5.2: "Leaders send periodic heartbeats (AppendEntries RPCs that carry no log entries) to all
// followers in order to maintain their authority." A heartbeat's commit never claims more than the
// follower is known to hold: min(match, commit).
t.test('§5.2 leader broadcasts heartbeats on its heartbeat tick', async (t) => {
  const { raft: r, storage: s } = newTestRaft(n1, [n1, n2, n3], { ...plain, heartbeatTick: 1 });
  elect(r);
  readMessages(r); // the no-op appends
  persistAll(r, s);
  r.step(appResp(n2, n1, 1, 1)); // only 2 acknowledges the no-op
  t.equal(r.log.committed, 1);
  r.propose([enc('a'), enc('b')]);
  readMessages(r);
  t.same(readMessages(r), [], 'nothing more to send before the tick');

  r.tick();
  t.same(byTo(readMessages(r)), [
    { type: MessageType.Heartbeat, from: n1, to: n2, term: 1, commit: 1, readRound: 0 },
    { type: MessageType.Heartbeat, from: n1, to: n3, term: 1, commit: 0, readRound: 0 },
  ]);

  // With heartbeatTick 3, only every third tick beats.
  const { raft: r3 } = newTestRaft(n1, [n1, n2, n3], { ...plain, heartbeatTick: 3 });
  elect(r3);
  readMessages(r3);
  const beats: number[] = [];
  for (let i = 1; i <= 9; i++) {
    r3.tick();
    if (readMessages(r3).some((m) => m.type === MessageType.Heartbeat)) beats.push(i);
  }
  t.same(beats, [3, 6, 9]);
});

// §5.2: "If a follower receives no communication over a period of time called the election timeout,
// then it assumes there is no viable leader and begins an election to choose a new leader. To begin an
// election, a follower increments its current term and transitions to candidate state. It then votes
// for itself and issues RequestVote RPCs in parallel to each of the other servers in the cluster."
t.test('§5.2 follower starts an election after the election timeout', async (t) => {
  const { raft: r } = raftWith(n1, [n1, n2, n3], terms(1, 1, 1), { term: 1 }, plain);
  r.becomeFollower(1, n2);
  for (let i = 1; i < 2 * ET; i++) r.tick();
  t.equal(r.term, 2);
  t.equal(r.role, Role.Candidate);
  t.equal(r.vote, n1, 'it votes for itself');
  t.same(r.hardState(), { term: 2, vote: n1, commit: 0 });
  t.same(byTo(readMessages(r)), [
    { type: MessageType.Vote, from: n1, to: n2, term: 2, lastLogIndex: 2, lastLogTerm: 1, transfer: false },
    { type: MessageType.Vote, from: n1, to: n3, term: 2, lastLogIndex: 2, lastLogTerm: 1, transfer: false },
  ]);
});

// §5.2: "[if] a candidate neither wins nor loses the election ... each candidate will time out and start
// a new election by incrementing its term and initiating another round of RequestVote RPCs."
t.test('§5.2 candidate starts a new election after the election timeout', async (t) => {
  const { raft: r } = newTestRaft(n1, [n1, n2, n3], plain);
  r.campaignNow();
  t.equal(r.term, 1);
  t.equal(r.role, Role.Candidate);
  readMessages(r);
  for (let i = 1; i < 2 * ET; i++) r.tick();
  t.equal(r.term, 2);
  t.equal(r.role, Role.Candidate);
  t.equal(r.vote, n1);
  t.same(byTo(readMessages(r)), [
    { type: MessageType.Vote, from: n1, to: n2, term: 2, lastLogIndex: 0, lastLogTerm: 0, transfer: false },
    { type: MessageType.Vote, from: n1, to: n3, term: 2, lastLogIndex: 0, lastLogTerm: 0, transfer: false },
  ]);
});

// §5.2 with PreVote (thesis §9.6): on the timeout the follower first asks whether it could win, for the
// term it would campaign in, without incrementing its own term; only once a majority says yes does it
// start the real election of §5.2.
t.test('§5.2 (PreVote) a pre-vote round precedes the election and does not move the term', async (t) => {
  const { raft: r } = raftWith(n1, [n1, n2, n3], terms(1, 1, 1), { term: 1 });
  t.ok(r.preVote);
  r.becomeFollower(1, n2);
  for (let i = 1; i < 2 * ET; i++) r.tick();
  t.equal(r.role, Role.PreCandidate);
  t.equal(r.term, 1, 'the term is unchanged');
  t.equal(r.vote, null, 'no vote is cast');
  t.same(byTo(readMessages(r)), [
    { type: MessageType.PreVote, from: n1, to: n2, term: 2, lastLogIndex: 2, lastLogTerm: 1, transfer: false },
    { type: MessageType.PreVote, from: n1, to: n3, term: 2, lastLogIndex: 2, lastLogTerm: 1, transfer: false },
  ]);

  // One grant makes a majority with its own: now the real election, in term 2.
  r.step(voteResp(n2, n1, 2, false, MessageType.PreVoteResp));
  t.equal(r.role, Role.Candidate);
  t.equal(r.term, 2);
  t.equal(r.vote, n1);
  t.same(byTo(readMessages(r)), [
    { type: MessageType.Vote, from: n1, to: n2, term: 2, lastLogIndex: 2, lastLogTerm: 1, transfer: false },
    { type: MessageType.Vote, from: n1, to: n3, term: 2, lastLogIndex: 2, lastLogTerm: 1, transfer: false },
  ]);

  // A pre-vote rejected by a majority ends as a follower of the same term.
  const { raft: q } = raftWith(n1, [n1, n2, n3], [], { term: 1 });
  q.campaignNow();
  q.step(voteResp(n2, n1, 1, true, MessageType.PreVoteResp));
  t.equal(q.role, Role.PreCandidate);
  q.step(voteResp(n3, n1, 1, true, MessageType.PreVoteResp));
  t.equal(q.role, Role.Follower);
  t.equal(q.term, 1);
  t.equal(q.vote, null);
});

// §5.2: the election timer is reset by "AppendEntries RPC from current leader or granting vote to
// candidate": a follower that keeps hearing from its leader never campaigns.
t.test('§5.2 follower that hears from the leader, or grants a vote, does not time out', async (t) => {
  // The timeout is fixed at exactly ET ticks (random() = 0); a heartbeat comes every ET - 1 ticks.
  const { raft: r } = raftWith(n1, [n1, n2, n3], [], { term: 1 }, { ...plain, random: () => 0 });
  for (let i = 0; i < 10 * ET; i++) {
    r.tick();
    if (i % (ET - 1) === 0) r.step(heartbeat(n2, n1, 1));
  }
  t.equal(r.role, Role.Follower);
  t.equal(r.term, 1);
  t.equal(readMessages(r).filter((m) => m.type === MessageType.Vote).length, 0);

  // A vote in the follower's own term (so no term change resets anything); the timeout is fixed at
  // exactly ET ticks (random() = 0) to make the timing exact.
  const { raft: v } = raftWith(n1, [n1, n2, n3], [], { term: 2 }, { ...plain, random: () => 0 });
  for (let i = 0; i < ET - 1; i++) v.tick();
  v.step(vote(n2, n1, 2, 0, 0));
  t.equal(v.vote, n2);
  for (let i = 0; i < ET - 1; i++) v.tick();
  t.equal(v.role, Role.Follower, 'the grant restarted the timer');
  t.equal(v.term, 2);
  v.tick();
  t.equal(v.role, Role.Candidate, 'and ET ticks after the grant it campaigns');
  t.equal(v.term, 3);
});

// §5.2: "A candidate wins an election if it receives votes from a majority of the servers in the full
// cluster for the same term." ... "(b) another server establishes itself as leader, or (c) a period of
// time goes by with no winner." Here a majority of rejections returns the candidate to follower.
t.test('§5.2 election in one round of RequestVote: win, lose or undecided', async (t) => {
  const cases: { size: number; votes: [NodeId, boolean][]; role: Role }[] = [
    // wins with a majority of the full cluster, its own vote included
    { size: 1, votes: [], role: Role.Leader },
    { size: 3, votes: [[n2, true], [n3, true]], role: Role.Leader },
    { size: 3, votes: [[n2, true]], role: Role.Leader },
    { size: 5, votes: [[n2, true], [n3, true], [n4, true], [n5, true]], role: Role.Leader },
    { size: 5, votes: [[n2, true], [n3, true], [n4, true]], role: Role.Leader },
    { size: 5, votes: [[n2, true], [n3, true]], role: Role.Leader },
    // loses when a majority rejects
    { size: 3, votes: [[n2, false], [n3, false]], role: Role.Follower },
    { size: 5, votes: [[n2, false], [n3, false], [n4, false], [n5, false]], role: Role.Follower },
    { size: 5, votes: [[n2, true], [n3, false], [n4, false], [n5, false]], role: Role.Follower },
    // undecided
    { size: 3, votes: [], role: Role.Candidate },
    { size: 3, votes: [[n2, false]], role: Role.Candidate },
    { size: 5, votes: [[n2, true]], role: Role.Candidate },
    { size: 5, votes: [[n2, false], [n3, false]], role: Role.Candidate },
    { size: 5, votes: [[n2, true], [n3, false]], role: Role.Candidate },
    { size: 5, votes: [], role: Role.Candidate },
  ];
  for (const [i, c] of cases.entries()) {
    const { raft: r } = newTestRaft(n1, idsBySize(c.size), plain);
    r.campaignNow();
    for (const [from, granted] of c.votes) r.step(voteResp(from, n1, r.term, !granted));
    t.equal(r.role, c.role, `#${i}`);
    t.equal(r.term, 1, `#${i}`);
  }
});

// The same table for the PreVote round (thesis §9.6): winning it only leads to the real election.
t.test('§5.2 (PreVote) pre-vote round: win, lose or undecided', async (t) => {
  const cases: { size: number; votes: [NodeId, boolean][]; role: Role; term: number }[] = [
    { size: 1, votes: [], role: Role.Leader, term: 1 },
    { size: 3, votes: [[n2, true]], role: Role.Candidate, term: 1 },
    { size: 5, votes: [[n2, true], [n3, true]], role: Role.Candidate, term: 1 },
    { size: 3, votes: [[n2, false], [n3, false]], role: Role.Follower, term: 0 },
    { size: 5, votes: [[n2, true], [n3, false], [n4, false], [n5, false]], role: Role.Follower, term: 0 },
    { size: 3, votes: [], role: Role.PreCandidate, term: 0 },
    { size: 5, votes: [[n2, true], [n3, false]], role: Role.PreCandidate, term: 0 },
  ];
  for (const [i, c] of cases.entries()) {
    const { raft: r } = newTestRaft(n1, idsBySize(c.size));
    r.campaignNow();
    for (const [from, granted] of c.votes) {
      r.step(voteResp(from, n1, granted ? 1 : 0, !granted, MessageType.PreVoteResp));
    }
    t.equal(r.role, c.role, `#${i}`);
    t.equal(r.term, c.term, `#${i}`);
  }
});

// §5.2: "Each server will vote for at most one candidate in a given term, on a first-come-first-served
// basis."
t.test('§5.2 follower votes for at most one candidate per term, first come first served', async (t) => {
  const cases: { voted: NodeId | null; candidate: NodeId; reject: boolean }[] = [
    { voted: null, candidate: n2, reject: false },
    { voted: null, candidate: n3, reject: false },
    { voted: n2, candidate: n2, reject: false }, // a retried request is granted again
    { voted: n3, candidate: n3, reject: false },
    { voted: n2, candidate: n3, reject: true },
    { voted: n3, candidate: n2, reject: true },
  ];
  for (const [i, c] of cases.entries()) {
    const { raft: r } = raftWith(n1, [n1, n2, n3], [], { term: 1, vote: c.voted }, plain);
    r.step(vote(c.candidate, n1, 1, 0, 0));
    t.same(r.msgs, [voteResp(n1, c.candidate, 1, c.reject)], `#${i}`);
    t.equal(r.vote, c.voted ?? c.candidate, `#${i}`);
  }

  // In sequence: the first request of the term wins the vote, a second candidate is refused.
  const { raft: r } = raftWith(n1, [n1, n2, n3], [], { term: 1 }, plain);
  r.step(vote(n3, n1, 2, 0, 0));
  r.step(vote(n2, n1, 2, 0, 0));
  t.same(r.msgs, [voteResp(n1, n3, 2, false), voteResp(n1, n2, 2, true)]);
  t.equal(r.hardState().vote, n3);
  t.equal(r.term, 2);
});

// §5.2: "While waiting for votes, a candidate may receive an AppendEntries RPC from another server
// claiming to be leader. If the leader's term ... is at least as large as the candidate's current term,
// then the candidate recognizes the leader as legitimate and returns to follower state."
t.test('§5.2 candidate falls back to follower on an append of equal or higher term', async (t) => {
  for (const term of [1, 2]) {
    const { raft: r } = newTestRaft(n1, [n1, n2, n3], plain);
    r.campaignNow();
    t.equal(r.role, Role.Candidate);
    readMessages(r);
    r.step(app(n2, n1, term, 0, 0, terms(1, term), 1));
    t.equal(r.role, Role.Follower, `term ${term}`);
    t.equal(r.term, term, `term ${term}`);
    t.equal(r.lead, n2, `term ${term}`);
    t.same(readMessages(r), [appResp(n1, n2, term, 1)], 'and the append itself is accepted');
    t.equal(r.log.committed, 1);
  }
  // A pre-candidate, still in its old term, does the same for an append of that term.
  const { raft: p } = raftWith(n1, [n1, n2, n3], [], { term: 1 });
  p.campaignNow();
  t.equal(p.role, Role.PreCandidate);
  p.step(app(n2, n1, 1, 0, 0));
  t.equal(p.role, Role.Follower);
  t.equal(p.term, 1);
  t.equal(p.lead, n2);
});

// §5.2: "Raft uses randomized election timeouts ... election timeouts are chosen randomly from a fixed
// interval (e.g., 150–300ms)." Here the interval is [electionTick, 2 * electionTick).
t.test('§5.2 election timeout is randomized in [et, 2et)', async (t) => {
  for (const role of [Role.Follower, Role.Candidate]) {
    const { raft: r } = newTestRaft(n1, [n1, n2, n3], plain);
    const seen = new Set<number>();
    for (let round = 0; round < 50 * ET; round++) {
      if (role === Role.Follower) r.becomeFollower(r.term + 1, n2);
      else r.campaignNow();
      readMessages(r);
      let time = 0;
      while (readMessages(r).length === 0) {
        r.tick();
        time++;
        if (time > 3 * ET) break;
      }
      seen.add(time);
    }
    t.same(
      [...seen].sort((a, b) => a - b),
      Array.from({ length: ET }, (_, i) => ET + i),
      `${role}: every timeout in [${ET}, ${2 * ET}) occurs, and no other`,
    );
  }
});

// §5.2: "[randomized timeouts] spread out the servers so that in most cases only a single server will
// time out; it wins the election and sends heartbeats before any other servers time out."
t.test('§5.2 election timeouts rarely coincide', async (t) => {
  for (const role of [Role.Follower, Role.Candidate]) {
    const voters = idsBySize(5);
    const rs = voters.map((id, k) => newTestRaft(id, voters, { ...plain, random: seededRandom(1000 + k) }).raft);
    let conflicts = 0;
    for (let round = 0; round < 1000; round++) {
      for (const r of rs) {
        if (role === Role.Follower) r.becomeFollower(r.term + 1, null);
        else r.campaignNow();
        readMessages(r);
      }
      let timedOut = 0;
      while (timedOut === 0) {
        for (const r of rs) {
          r.tick();
          if (readMessages(r).length > 0) timedOut++;
        }
      }
      if (timedOut > 1) conflicts++;
    }
    t.ok(conflicts / 1000 <= 0.3, `${role}: ${conflicts} of 1000 rounds had simultaneous timeouts`);
    t.ok(conflicts > 0, `${role}: the count is real (some collisions do happen with 5 nodes)`);
  }
});

// ---- §5.3 Log replication ----

// §5.3: "The leader appends the command to its log as a new entry, then issues AppendEntries RPCs in
// parallel to each of the other servers to replicate the entry." ... "When sending an AppendEntries
// RPC, the leader includes the index and term of the entry in its log that immediately precedes the new
// entries." The new entry is handed to the caller to be written to stable storage.
t.test('§5.3 leader starts replication of a proposal', async (t) => {
  const { raft: r, storage: s } = newTestRaft(n1, [n1, n2, n3], plain);
  elect(r);
  commitNoop(r, s);
  const li = r.log.lastIndex();
  t.equal(li, 1);

  const ticket = r.propose([enc('some data')]);
  t.same(ticket, { term: 1, firstIndex: li + 1, lastIndex: li + 1 });
  t.equal(r.log.lastIndex(), li + 1);
  t.equal(r.log.committed, li, 'not committed yet');
  const want = { index: li + 1, term: 1, kind: EntryKind.Normal, data: enc('some data') };
  t.same(byTo(readMessages(r)), [
    { type: MessageType.App, from: n1, to: n2, term: 1, prevIndex: li, prevTerm: 1, entries: [want], commit: li },
    { type: MessageType.App, from: n1, to: n3, term: 1, prevIndex: li, prevTerm: 1, entries: [want], commit: li },
  ]);
  t.same(r.log.unstable.pending(), [want], 'the entry waits to be persisted');
});

// §5.3: "When the entry has been safely replicated ... the leader applies the entry to its state machine
// and returns the result of that execution to the client." ... "The leader keeps track of the highest
// index it knows to be committed, and it includes that index in future AppendEntries RPCs (including
// heartbeats) so that the other servers eventually find out."
t.test('§5.3 leader commits a replicated entry and announces the commit index', async (t) => {
  const { raft: r, storage: s } = newTestRaft(n1, [n1, n2, n3], plain);
  elect(r);
  commitNoop(r, s);
  const li = r.log.lastIndex();
  r.propose([enc('some data')]);
  for (const m of readMessages(r)) r.step(acceptAndReply(m));

  t.equal(r.log.committed, li + 1);
  persistAll(r, s);
  t.same(
    r.log.nextCommitted(Number.MAX_SAFE_INTEGER).map((e) => [e.index, e.term, text(e)]),
    [[li + 1, 1, 'some data']],
    'handed out to be applied',
  );
  const msgs = byTo(readMessages(r));
  t.same(
    msgs.map((m) => [m.type, m.to, m.type === MessageType.App ? m.commit : -1]),
    [
      [MessageType.App, n2, li + 1],
      [MessageType.App, n3, li + 1],
    ],
  );
  r.tick(); // heartbeatTick is 1: heartbeats carry it too
  t.same(
    byTo(readMessages(r)).map((m) => [m.type, m.to, m.type === MessageType.Heartbeat ? m.commit : -1]),
    [
      [MessageType.Heartbeat, n2, li + 1],
      [MessageType.Heartbeat, n3, li + 1],
    ],
  );
});

// §5.3: "A log entry is committed once the leader that created the entry has replicated it on a
// majority of the servers."
t.test('§5.3 leader commits once a majority holds the entry', async (t) => {
  const cases: { size: number; acceptors: NodeId[]; committed: boolean }[] = [
    { size: 1, acceptors: [], committed: true },
    { size: 3, acceptors: [], committed: false },
    { size: 3, acceptors: [n2], committed: true },
    { size: 3, acceptors: [n2, n3], committed: true },
    { size: 5, acceptors: [], committed: false },
    { size: 5, acceptors: [n2], committed: false },
    { size: 5, acceptors: [n2, n3], committed: true },
    { size: 5, acceptors: [n2, n3, n4], committed: true },
    { size: 5, acceptors: [n2, n3, n4, n5], committed: true },
  ];
  for (const [i, c] of cases.entries()) {
    const { raft: r, storage: s } = newTestRaft(n1, idsBySize(c.size), plain);
    elect(r);
    commitNoop(r, s);
    const li = r.log.lastIndex();
    r.propose([enc('some data')]);
    persistAll(r, s); // the leader's own copy is durable
    for (const m of readMessages(r)) if (c.acceptors.includes(m.to)) r.step(acceptAndReply(m));
    t.equal(r.log.committed, c.committed ? li + 1 : li, `#${i}`);
  }
});

// §5.3 with the leader's own write in parallel (§10.2.1 of the thesis): the leader counts towards the
// majority only the entries it has itself made durable.
t.test('§5.3 leader does not count its own unpersisted entries', async (t) => {
  // 3 nodes: one follower's ack + the leader's appended-but-not-durable copy is not a majority.
  {
    const { raft: r, storage: s } = newTestRaft(n1, [n1, n2, n3], plain);
    elect(r);
    commitNoop(r, s);
    r.propose([enc('x')]);
    for (const m of readMessages(r)) if (m.to === n2) r.step(acceptAndReply(m));
    t.equal(r.progress.get(n1)!.match, 1, "the leader's own match is its durable index");
    t.equal(r.log.committed, 1, 'n2 alone holds index 2 durably: 1 of 3');
    t.same(readMessages(r), [], 'no commit to announce');

    persistAll(r, s);
    t.equal(r.progress.get(n1)!.match, 2);
    t.equal(r.log.committed, 2, 'with its own durable copy: 2 of 3');
    const msgs = byTo(readMessages(r));
    t.same(
      msgs.map((m) => [m.to, m.type === MessageType.App ? m.commit : -1]),
      [
        [n2, 2],
        [n3, 2],
      ],
      'and the new commit index is announced',
    );
  }
  // 5 nodes: two follower acks + the unpersisted leader copy = 2 of 5; after persisting, 3 of 5.
  {
    const { raft: r, storage: s } = newTestRaft(n1, idsBySize(5), plain);
    elect(r);
    commitNoop(r, s);
    r.propose([enc('x')]);
    for (const m of readMessages(r)) if (m.to === n2 || m.to === n3) r.step(acceptAndReply(m));
    t.equal(r.log.committed, 1);
    persistAll(r, s);
    t.equal(r.log.committed, 2);
  }
  // 3 nodes: both followers' acks are a majority without the leader's copy.
  {
    const { raft: r, storage: s } = newTestRaft(n1, [n1, n2, n3], plain);
    elect(r);
    commitNoop(r, s);
    r.propose([enc('x')]);
    for (const m of readMessages(r)) r.step(acceptAndReply(m));
    t.equal(r.progress.get(n1)!.match, 1);
    t.equal(r.log.committed, 2);
  }
  // 1 node: nothing commits until the leader's own write is durable.
  {
    const { raft: r, storage: s } = newTestRaft(n1, [n1], plain);
    elect(r);
    commitNoop(r, s);
    r.propose([enc('x')]);
    t.equal(r.log.committed, 1);
    persistAll(r, s);
    t.equal(r.log.committed, 2);
  }
});

// §5.3: "This also commits all preceding entries in the leader's log, including entries created by
// previous leaders." ... "Once a follower learns that a log entry is committed, it applies the entry to
// its local state machine (in log order)."
t.test("§5.3 leader commits preceding entries, including previous leaders'", async (t) => {
  const logs: Entry[][] = [[], terms(1, 2), terms(1, 1, 2), terms(1, 1)];
  for (const [i, log] of logs.entries()) {
    const { raft: r, storage: s } = raftWith(n1, [n1, n2, n3], log, { term: 2 }, plain);
    elect(r);
    t.equal(r.term, 3);
    r.propose([enc('some data')]);
    for (const m of readMessages(r)) r.step(acceptAndReply(m));
    persistAll(r, s);
    const li = log.length;
    t.same(
      r.log.nextCommitted(Number.MAX_SAFE_INTEGER).map((e) => [e.index, e.term, e.kind, text(e)]),
      [
        ...log.map((e) => [e.index, e.term, EntryKind.Normal, '']),
        [li + 1, 3, EntryKind.Noop, ''],
        [li + 2, 3, EntryKind.Normal, 'some data'],
      ],
      `#${i}`,
    );
  }
});

// §5.3: "Once a follower learns that a log entry is committed, it applies the entry to its local state
// machine (in log order)." Figure 2: "If leaderCommit > commitIndex, set commitIndex =
// min(leaderCommit, index of last new entry)".
t.test('§5.3 follower commits up to the leader commit index', async (t) => {
  const data = (i: number, term: number, d: string): Entry => ({ index: i, term, kind: EntryKind.Normal, data: enc(d) });
  const cases: { ents: Entry[]; commit: number; want: number }[] = [
    { ents: [data(1, 1, 'some data')], commit: 1, want: 1 },
    { ents: [data(1, 1, 'some data'), data(2, 1, 'some data2')], commit: 2, want: 2 },
    { ents: [data(1, 1, 'some data2'), data(2, 1, 'some data')], commit: 2, want: 2 },
    { ents: [data(1, 1, 'some data'), data(2, 1, 'some data2')], commit: 1, want: 1 },
    // The leader's commit is past what this append carries: only up to the last new entry.
    { ents: [data(1, 1, 'some data')], commit: 3, want: 1 },
  ];
  for (const [i, c] of cases.entries()) {
    const { raft: r, storage: s } = newTestRaft(n1, [n1, n2, n3], plain);
    r.becomeFollower(1, n2);
    r.step(app(n2, n1, 1, 0, 0, c.ents, c.commit));
    t.equal(r.log.committed, c.want, `#${i}`);
    t.same(readMessages(r), [appResp(n1, n2, 1, c.ents.length)], `#${i}`);
    persistAll(r, s);
    t.same(r.log.nextCommitted(Number.MAX_SAFE_INTEGER), c.ents.slice(0, c.want), `#${i}: applied in log order`);
  }

  // Entries past the last new one may be a stale leader's (2@2 3@2 here, while the leader of term 3
  // only vouches for index 1): they must not be committed even though the follower holds an index 3.
  {
    const { raft: r } = raftWith(n1, [n1, n2, n3], terms(1, 1, 2, 2), { term: 2 }, plain);
    r.step(app(n2, n1, 3, 0, 0, terms(1, 1), 3));
    t.equal(r.log.committed, 1, 'min(leaderCommit, index of last new entry)');
    t.same(ids(allEntries(r)), [[1, 1], [2, 2], [3, 2]], 'nothing conflicted, nothing was truncated');
  }

  // A heartbeat carries the commit index too, up to what an append of this leader matched.
  const { raft: r } = raftWith(n1, [n1, n2, n3], terms(1, 1, 1, 1), { term: 1 }, plain);
  r.step(app(n2, n1, 1, 2, 1));
  readMessages(r);
  r.step(heartbeat(n2, n1, 1, 2));
  t.equal(r.log.committed, 2);
  t.same(readMessages(r), [heartbeatResp(n1, n2, 1)]);
  // Past it (index 3 here, which no append of this leader matched: the leader's match for this node
  // may be of a log it no longer holds), nothing is committed, and the answer says how far this node
  // can vouch, so that the leader checks its log from there.
  r.step(heartbeat(n2, n1, 1, 3));
  t.equal(r.log.committed, 2);
  t.same(readMessages(r), [{ ...heartbeatResp(n1, n2, 1), lastIndex: 2 }]);
});

// §5.3: "If the follower does not find an entry in its log with the same index and term [as prevIndex,
// prevTerm], then it refuses the new entries." With the optimisation at the end of §5.3 the refusal
// carries a hint: the follower's last index at or below prevIndex whose term is at most prevTerm.
t.test('§5.3 follower consistency check rejects a mismatching append with a hint', async (t) => {
  const log = terms(1, 1, 2); // 1@1 2@2, commit 1
  const cases: { prevTerm: number; prevIndex: number; index: number; reject: boolean; hintIndex: number; hintTerm: number }[] = [
    // matches the committed prefix
    { prevTerm: 0, prevIndex: 0, index: 1, reject: false, hintIndex: 0, hintTerm: 0 },
    { prevTerm: 1, prevIndex: 1, index: 1, reject: false, hintIndex: 0, hintTerm: 0 },
    // matches an uncommitted entry
    { prevTerm: 2, prevIndex: 2, index: 2, reject: false, hintIndex: 0, hintTerm: 0 },
    // the entry exists with another term
    { prevTerm: 1, prevIndex: 2, index: 2, reject: true, hintIndex: 1, hintTerm: 1 },
    // the entry does not exist
    { prevTerm: 3, prevIndex: 3, index: 3, reject: true, hintIndex: 2, hintTerm: 2 },
    { prevTerm: 2, prevIndex: 5, index: 5, reject: true, hintIndex: 2, hintTerm: 2 },
  ];
  for (const [i, c] of cases.entries()) {
    const { raft: r } = raftWith(n1, [n1, n2, n3], log, { term: 2, commit: 1 }, plain);
    r.step(app(n2, n1, 2, c.prevIndex, c.prevTerm));
    t.same(
      r.msgs,
      [{ type: MessageType.AppResp, from: n1, to: n2, term: 2, index: c.index, reject: c.reject, hintIndex: c.hintIndex, hintTerm: c.hintTerm }],
      `#${i}`,
    );
    t.same(ids(allEntries(r)), [[1, 1], [2, 2]], `#${i}: the log is untouched`);
  }
});

// §5.3: "If an existing entry conflicts with a new one (same index but different terms), delete the
// existing entry and all that follow it; append any new entries not already in the log." The new
// entries are handed to the caller to be written to stable storage.
t.test('§5.3 follower appends: truncates conflicts, keeps matches, adds new entries', async (t) => {
  const cases: { prevIndex: number; prevTerm: number; ents: Entry[]; want: Entry[]; unstable: Entry[] }[] = [
    // plain append after a match
    { prevIndex: 2, prevTerm: 2, ents: terms(3, 3), want: terms(1, 1, 2, 3), unstable: terms(3, 3) },
    // conflict at 2: 2@2 goes, 2@3 3@4 come
    { prevIndex: 1, prevTerm: 1, ents: terms(2, 3, 4), want: terms(1, 1, 3, 4), unstable: terms(2, 3, 4) },
    // an entry already held: nothing changes, in particular 2@2 after it is kept
    { prevIndex: 0, prevTerm: 0, ents: terms(1, 1), want: terms(1, 1, 2), unstable: [] },
    // held entries followed by new ones: only the new ones are written
    { prevIndex: 0, prevTerm: 0, ents: terms(1, 1, 2, 2), want: terms(1, 1, 2, 2), unstable: terms(3, 2) },
    // conflict at the very first entry replaces the whole log
    { prevIndex: 0, prevTerm: 0, ents: terms(1, 3), want: terms(1, 3), unstable: terms(1, 3) },
  ];
  for (const [i, c] of cases.entries()) {
    const { raft: r } = raftWith(n1, [n1, n2, n3], terms(1, 1, 2), { term: 2 }, plain);
    r.step(app(n2, n1, 2, c.prevIndex, c.prevTerm, c.ents));
    t.same(ids(allEntries(r)), ids(c.want), `#${i}: log`);
    t.same(ids(r.log.unstable.pending()), ids(c.unstable), `#${i}: to persist`);
    t.same(readMessages(r), [appResp(n1, n2, 2, c.prevIndex + c.ents.length)], `#${i}: accepted`);
  }
});

// §5.3, Figure 7: "the leader handles inconsistencies by forcing the followers' logs to duplicate its
// own." ... "After a rejection, the leader decrements nextIndex and retries the AppendEntries RPC.
// Eventually nextIndex will reach a point where the leader and follower logs match." The leader here is
// elected for term 8 with the log of the figure; (a)-(f) are the figure's followers.
// With the optimisation at the end of §5.3, "one AppendEntries RPC will be required for each term with
// conflicting entries, rather than one RPC per entry": `maxRejects` is that bound ((a) and (b) lack
// entries rather than conflict, which costs one rejection; (f) conflicts in terms 2 and 3).
t.test('§5.3 Figure 7: leader brings each follower log into agreement with its own', async (t) => {
  const leaderLog = terms(1, 1, 1, 1, 4, 4, 5, 5, 6, 6, 6);
  const followers: [string, Entry[], number][] = [
    ['a', terms(1, 1, 1, 1, 4, 4, 5, 5, 6, 6), 1],
    ['b', terms(1, 1, 1, 1, 4), 1],
    ['c', terms(1, 1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 6), 0],
    ['d', terms(1, 1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 7, 7), 0],
    ['e', terms(1, 1, 1, 1, 4, 4, 4, 4), 1],
    ['f', terms(1, 1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3), 2],
  ];
  for (const [name, log, maxRejects] of followers) {
    const voters = [n1, n2, n3];
    const lead = raftWith(n1, voters, leaderLog, { term: 7, commit: 3 }, { preVote: false });
    const follower = raftWith(n2, voters, log, { term: 7, commit: 3 }, { preVote: false });
    lead.raft.campaignNow();
    t.equal(lead.raft.term, 8, name);
    // Node 3 (not simulated) votes for the leader: (c) and (d) would not, their logs being longer or
    // newer than the leader's, and it does not need them.
    lead.raft.step(voteResp(n3, n1, 8, false));
    t.equal(lead.raft.role, Role.Leader, name);
    const sent = exchange([lead, follower]);
    const rejects = sent.filter((m) => m.type === MessageType.AppResp && m.reject).length;
    t.ok(rejects <= maxRejects, `${name}: ${rejects} rejected appends, at most ${maxRejects}`);
    lead.raft.propose([enc('after the sync')]);
    exchange([lead, follower]);

    const want = [...ids(leaderLog), [11, 8], [12, 8]];
    t.same(ids(allEntries(lead.raft)), want, `${name}: leader`);
    t.same(ids(allEntries(follower.raft)), want, `${name}: follower's log duplicates the leader's`);
    t.same(allEntries(follower.raft).map(text), allEntries(lead.raft).map(text), `${name}: same contents`);
    t.same(ids(follower.storage.entries(1, 13, Number.MAX_SAFE_INTEGER)), want, `${name}: and so does its storage`);
    t.equal(follower.storage.lastIndex(), 12, name);
    t.equal(lead.raft.log.committed, 12, name);
    t.equal(follower.raft.log.committed, 12, name);
    t.equal(follower.raft.term, 8, name);
    t.equal(follower.raft.lead, n1, name);
  }
});

// ---- §5.4 Safety ----

// §5.4.1: "The RequestVote RPC implements this restriction: the RPC includes information about the
// candidate's log" (lastLogIndex, lastLogTerm), and it goes to all the other servers.
t.test('§5.4.1 vote requests carry the last log index and term', async (t) => {
  const cases: { ents: Entry[]; term: number }[] = [
    { ents: terms(1, 1), term: 2 },
    { ents: terms(1, 1, 2), term: 3 },
    { ents: terms(1, 1, 1, 3, 3, 3), term: 4 },
  ];
  for (const preVote of [false, true]) {
    for (const [i, c] of cases.entries()) {
      const { raft: r } = newTestRaft(n1, [n1, n2, n3], { preVote, checkQuorum: false });
      r.step(app(n2, n1, c.term - 1, 0, 0, c.ents));
      readMessages(r);
      for (let k = 1; k < 2 * ET; k++) r.tick();
      const last = c.ents[c.ents.length - 1]!;
      const type = preVote ? MessageType.PreVote : MessageType.Vote;
      t.same(
        byTo(readMessages(r)),
        [n2, n3].map((to) => ({ type, from: n1, to, term: c.term, lastLogIndex: last.index, lastLogTerm: last.term, transfer: false })),
        `${type} #${i}`,
      );
    }
  }
});

// §5.4.1: "The voter denies its vote if its own log is more up-to-date than that of the candidate."
// "If the logs have last entries with different terms, then the log with the later term is more
// up-to-date. If the logs end with the same term, then whichever log is longer is more up-to-date."
t.test('§5.4.1 voter rejects a candidate whose log is less up-to-date', async (t) => {
  const cases: { ents: Entry[]; lastLogTerm: number; lastLogIndex: number; reject: boolean }[] = [
    // same last term: the longer log wins, equal length is up-to-date
    { ents: terms(1, 1), lastLogTerm: 1, lastLogIndex: 1, reject: false },
    { ents: terms(1, 1), lastLogTerm: 1, lastLogIndex: 2, reject: false },
    { ents: terms(1, 1, 1), lastLogTerm: 1, lastLogIndex: 1, reject: true },
    // candidate's last term is later: up-to-date whatever the length
    { ents: terms(1, 1), lastLogTerm: 2, lastLogIndex: 1, reject: false },
    { ents: terms(1, 1), lastLogTerm: 2, lastLogIndex: 2, reject: false },
    { ents: terms(1, 1, 1), lastLogTerm: 2, lastLogIndex: 1, reject: false },
    // voter's last term is later: rejected whatever the length
    { ents: terms(1, 2), lastLogTerm: 1, lastLogIndex: 1, reject: true },
    { ents: terms(1, 2), lastLogTerm: 1, lastLogIndex: 2, reject: true },
    { ents: terms(1, 2, 2), lastLogTerm: 1, lastLogIndex: 1, reject: true },
    { ents: terms(1, 1, 2), lastLogTerm: 1, lastLogIndex: 5, reject: true },
    // an empty log votes for anyone
    { ents: [], lastLogTerm: 0, lastLogIndex: 0, reject: false },
  ];
  for (const type of [MessageType.Vote, MessageType.PreVote] as const) {
    for (const [i, c] of cases.entries()) {
      const { raft: r } = raftWith(n1, [n1, n2], c.ents, {}, plain);
      r.step(vote(n2, n1, 3, c.lastLogIndex, c.lastLogTerm, type));
      const msgs = readMessages(r);
      t.equal(msgs.length, 1, `${type} #${i}`);
      const m = msgs[0]!;
      t.equal(m.type, type === MessageType.Vote ? MessageType.VoteResp : MessageType.PreVoteResp, `${type} #${i}`);
      t.equal(m.type === MessageType.VoteResp || m.type === MessageType.PreVoteResp ? m.reject : undefined, c.reject, `${type} #${i}`);
      if (type === MessageType.Vote) t.equal(r.vote, c.reject ? null : n2, `${type} #${i}: vote recorded only when granted`);
    }
  }
});

// §5.4.2: "Raft never commits log entries from previous terms by counting replicas. Only log entries
// from the leader's current term are committed by counting replicas."
t.test("§5.4.2 leader commits by counting replicas only entries of its own term", async (t) => {
  const cases: { ack: number; commit: number }[] = [
    // entries of previous terms are not committed however many hold them
    { ack: 1, commit: 0 },
    { ack: 2, commit: 0 },
    // the current term's no-op commits, and with it everything before
    { ack: 3, commit: 3 },
    { ack: 4, commit: 4 },
  ];
  for (const [i, c] of cases.entries()) {
    const { raft: r, storage: s } = raftWith(n1, [n1, n2], terms(1, 1, 2), { term: 2 }, plain);
    elect(r); // term 3, no-op at 3
    readMessages(r);
    r.propose([enc('x')]); // 4@3
    persistAll(r, s);
    t.equal(r.log.committed, 0, `#${i}`);
    r.step(appResp(n2, n1, 3, c.ack));
    t.equal(r.log.committed, c.commit, `#${i}`);
  }
});

// §5.4.2, Figure 8: S1, leader of term 4, finishes replicating its term-2 entry at index 2 to S2 and S3 —
// a majority of five. That entry is still not committed: S5 (log ending in term 3) could yet be elected
// with the votes of S2, S3, S4 and overwrite it (Figure 8(d)). Only once an entry of term 4 is on a
// majority are it and index 2 committed (Figure 8(e)), and then S5 can no longer win.
t.test('§5.4.2 Figure 8: an old-term entry on a majority is not committed until a current-term one is', async (t) => {
  const voters = idsBySize(5);
  const { raft: s1, storage } = raftWith(n1, voters, terms(1, 1, 2), { term: 3, commit: 1 }, plain);
  elect(s1);
  t.equal(s1.term, 4);
  readMessages(s1);
  persistAll(s1, storage); // S1 holds 1@1 2@2 3@4 durably

  s1.step(appResp(n2, n1, 4, 2));
  s1.step(appResp(n3, n1, 4, 2));
  t.equal(s1.log.committed, 1, 'index 2 (term 2) is on S1, S2, S3 but is not committed');

  // Why it must not be: S2 with that log would vote for S5 (last entry 2@3), as would S3 and S4.
  const s2 = raftWith(n2, voters, terms(1, 1, 2), { term: 4 }, plain).raft;
  s2.step(vote(n5, n2, 5, 2, 3));
  t.same(s2.msgs, [voteResp(n2, n5, 5, false)], 'S2 grants S5 its vote in Figure 8(d)');

  s1.step(appResp(n2, n1, 4, 3));
  t.equal(s1.log.committed, 1, 'the term-4 entry on S1 and S2 only: 2 of 5');
  s1.step(appResp(n3, n1, 4, 3));
  t.equal(s1.log.committed, 3, 'the term-4 entry on a majority commits it and index 2 with it');

  // Now a majority (S1, S2, S3) holds 3@4 and refuses S5.
  const s2e = raftWith(n2, voters, terms(1, 1, 2, 4), { term: 4 }, plain).raft;
  s2e.step(vote(n5, n2, 5, 2, 3));
  t.same(s2e.msgs, [voteResp(n2, n5, 5, true)], 'S2 refuses S5 in Figure 8(e)');
});

// §5.4.2 / §8: "a leader must have the latest information on which entries are committed ... Raft
// handles this by having each leader commit a blank no-op entry into the log at the start of its term."
t.test('§5.4.2 a new leader appends a no-op of its term', async (t) => {
  const { raft: r } = raftWith(n1, [n1, n2, n3], terms(1, 1, 2), { term: 2, commit: 1 }, plain);
  elect(r);
  t.equal(r.term, 3);
  t.same(r.log.lastIndex(), 3);
  const noop = { index: 3, term: 3, kind: EntryKind.Noop, data: new Uint8Array(0) };
  t.same(r.log.unstable.pending(), [noop]);
  t.same(byTo(readMessages(r)).filter((m) => m.type === MessageType.App), [
    { type: MessageType.App, from: n1, to: n2, term: 3, prevIndex: 2, prevTerm: 2, entries: [noop], commit: 1 },
    { type: MessageType.App, from: n1, to: n3, term: 3, prevIndex: 2, prevTerm: 2, entries: [noop], commit: 1 },
  ]);

  // A single-node group commits its no-op (and the term-2 entry before it) as soon as it is durable.
  const one = raftWith(n1, [n1], terms(1, 1, 2), { term: 2 }, plain);
  elect(one.raft);
  t.equal(one.raft.log.committed, 0);
  persistAll(one.raft, one.storage);
  t.equal(one.raft.log.committed, 3);
});
