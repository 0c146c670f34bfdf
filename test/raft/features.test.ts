// Behaviour the broker depends on: PreVote, CheckQuorum, leader lease, proposal dropping, batching,
// flow control, fast backtracking, the leader's own durability, ReadIndex, leadership transfer,
// snapshots and restart. Each test asserts concrete outcomes on a small group.
import t from 'tap';
import {
  DropReason,
  MemoryStorage,
  MessageType,
  ProposalDroppedError,
  ProgressState,
  Raft,
  RawNode,
  Role,
  type Entry,
  type HardState,
  type Message,
  type NodeId,
  type Ready,
  type VoteRequest,
} from '../../src/raft/index.js';
import { Network, catchDropped, entry, ids, n1, n2, n3, newTestRaft, persistAll, readMessages, seededRandom, text } from './helpers.js';

// ---------------------------------------------------------------------------------------------------
// Local helpers (helpers.ts is shared and not ours to change).

const enc = (s: string) => new TextEncoder().encode(s);
const voters3 = () => ids('1', '2', '3');
const ELECTION = 10; // electionTick used by helpers.Network and newTestRaft

/** Everything that happened while pumping a Network by hand. */
interface Trace {
  readys: { id: NodeId; rd: Ready }[];
  /** Messages produced by Readys, in order, whether or not they were delivered. */
  sent: Message[];
}
const newTrace = (): Trace => ({ readys: [], sent: [] });

/** Runs Ready cycles on one node (persist, record applied, advance) and returns its messages. */
function drain(net: Network, id: NodeId, trace?: Trace): Message[] {
  const n = net.node(id);
  const s = net.storages.get(id)!;
  const out: Message[] = [];
  while (n.hasReady()) {
    const rd = n.ready();
    if (rd.snapshot !== null) s.applySnapshot(rd.snapshot);
    s.append(rd.entries);
    if (rd.hardState !== null) s.setHardState(rd.hardState);
    out.push(...rd.messages);
    net.applied.get(id)!.push(...rd.committedEntries);
    trace?.readys.push({ id, rd });
    n.advance(rd);
  }
  return out;
}

/** Like Network.stabilize, but records every Ready and can drop chosen messages. */
function settle(net: Network, trace?: Trace, drop?: (m: Message) => boolean, maxRounds = 200): void {
  for (let i = 0; i < maxRounds; i++) {
    const msgs: Message[] = [];
    for (const id of net.nodes.keys()) msgs.push(...drain(net, id, trace));
    if (msgs.length === 0) return;
    trace?.sent.push(...msgs);
    net.deliver(drop === undefined ? msgs : msgs.filter((m) => !drop(m)));
  }
}

function tickAll(net: Network, n: number, trace?: Trace, drop?: (m: Message) => boolean): void {
  for (let i = 0; i < n; i++) {
    for (const node of net.nodes.values()) node.tick();
    settle(net, trace, drop);
  }
}

const role = (net: Network, id: NodeId) => net.node(id).raft.role;
const term = (net: Network, id: NodeId) => net.node(id).raft.term;

const isApp = (m: Message): m is Extract<Message, { type: 'app' }> => m.type === MessageType.App;
const appsTo = (msgs: readonly Message[], to: NodeId) => msgs.filter(isApp).filter((m) => m.to === to);

function electedNetwork(opts: ConstructorParameters<typeof Network>[1] = {}): Network {
  const net = new Network(voters3(), opts);
  net.elect(n1);
  return net;
}

/** Replaces (or restarts) one node of a Network with a RawNode over `storage`. */
function restartNode(net: Network, id: NodeId, storage: MemoryStorage, applied = 0): RawNode {
  const node = new RawNode(
    { electionTick: ELECTION, heartbeatTick: 1, random: seededRandom(99), id, voters: net.voters, applied },
    storage,
  );
  net.nodes.set(id, node);
  net.storages.set(id, storage);
  net.applied.set(id, []);
  return node;
}

/** A group of bare Rafts driven by hand: persist everything, then deliver, until quiet. */
class RaftGroup {
  readonly rafts = new Map<NodeId, Raft>();
  readonly storages = new Map<NodeId, MemoryStorage>();
  readonly sent: Message[] = [];

  add(id: NodeId, storage: MemoryStorage, opts: { preVote?: boolean } = {}): Raft {
    const { raft } = newTestRaft(id, voters3(), { storage, ...opts });
    this.rafts.set(id, raft);
    this.storages.set(id, storage);
    return raft;
  }

  settle(drop?: (m: Message) => boolean): void {
    for (let round = 0; round < 500; round++) {
      const out: Message[] = [];
      for (const [id, r] of this.rafts) {
        persistAll(r, this.storages.get(id)!);
        out.push(...readMessages(r));
      }
      if (out.length === 0) return;
      for (const m of out) {
        this.sent.push(m);
        if (drop?.(m) === true) continue;
        this.rafts.get(m.to)!.step(m);
      }
    }
  }
}

function storageWith(entries: Entry[], hs: HardState): MemoryStorage {
  const s = new MemoryStorage(voters3());
  s.append(entries);
  s.setHardState(hs);
  return s;
}

function entriesOfTerm(first: number, last: number, term: number, prefix = ''): Entry[] {
  const out: Entry[] = [];
  for (let i = first; i <= last; i++) out.push(entry(i, term, `${prefix}${i}`));
  return out;
}

// ---------------------------------------------------------------------------------------------------

t.test('PreVote: a partitioned node does not raise its term and does not disrupt on rejoin', async (t) => {
  const net = electedNetwork();
  const leaderTerm = term(net, n1);
  net.isolate(n3);
  let campaigned = false;
  for (let i = 0; i < 10 * ELECTION; i++) {
    net.tickAll(1);
    if (role(net, n3) === Role.PreCandidate) campaigned = true;
  }
  t.ok(campaigned, 'the isolated node did try to campaign (as a pre-candidate)');
  t.equal(term(net, n3), leaderTerm, 'its term did not move during 10 election timeouts');
  t.equal(role(net, n1), Role.Leader, 'the leader kept its majority meanwhile');

  net.heal();
  net.tickAll(3);
  t.equal(net.leader(), n1, 'the same leader after heal');
  for (const id of voters3()) t.equal(term(net, id), leaderTerm, `node ${id} still in the leader's term`);
  t.equal(net.node(n3).raft.lead, n1, 'the rejoined node follows the leader');
  t.equal(role(net, n3), Role.Follower);

  net.node(n1).propose([enc('after-heal')]);
  net.stabilize();
  for (const id of voters3()) t.same(net.appliedData(id), ['after-heal'], `node ${id} applied the next proposal`);
});

t.test('without PreVote the same partition raises the isolated term (contrast)', async (t) => {
  const net = electedNetwork({ preVote: false });
  const leaderTerm = term(net, n1);
  net.isolate(n3);
  net.tickAll(10 * ELECTION);
  t.ok(term(net, n3) > leaderTerm, 'a plain candidate bumps its term on every timeout');
});

t.test('CheckQuorum: an isolated leader steps down and the majority elects a new one', async (t) => {
  const net = electedNetwork();
  const oldTerm = term(net, n1);
  net.isolate(n1);
  let steppedDownAt = -1;
  for (let i = 1; i <= 2 * ELECTION; i++) {
    net.tickAll(1);
    if (steppedDownAt < 0 && role(net, n1) !== Role.Leader) steppedDownAt = i;
  }
  t.ok(steppedDownAt > 0 && steppedDownAt <= 2 * ELECTION, `stepped down within 2 election timeouts (at tick ${steppedDownAt})`);
  t.equal(role(net, n1), Role.Follower);
  t.equal(net.node(n1).raft.lead, null, 'it knows of no leader');

  let newLeader: NodeId | null = null;
  for (let i = 0; i < 5 * ELECTION && newLeader === null; i++) {
    net.tickAll(1);
    for (const id of [n2, n3]) if (role(net, id) === Role.Leader) newLeader = id;
  }
  t.not(newLeader, null, 'nodes 2 and 3 elected a leader');
  if (newLeader === null) return;
  t.ok(term(net, newLeader) > oldTerm, 'in a higher term');
  t.equal(term(net, n1), oldTerm, 'the isolated node (PreVote) did not raise its term');

  const err = catchDropped(() => net.node(n1).propose([enc('x')]));
  t.ok(err instanceof ProposalDroppedError, 'a proposal on the old leader is dropped');
  t.equal(err?.reason, DropReason.NotLeader);
  t.equal(net.node(n1).raft.log.lastIndex(), net.storages.get(n1)!.lastIndex(), 'nothing was appended');

  net.heal();
  net.tickAll(3);
  t.equal(net.node(n1).raft.lead, newLeader, 'after heal the old leader follows the new one');
  t.equal(term(net, n1), term(net, newLeader));
});

t.test('without CheckQuorum an isolated leader stays leader (contrast)', async (t) => {
  const net = electedNetwork({ checkQuorum: false });
  net.isolate(n1);
  net.tickAll(5 * ELECTION);
  t.equal(role(net, n1), Role.Leader);
});

t.test('leader lease: a follower in contact with the leader ignores a higher-term vote', async (t) => {
  const net = electedNetwork();
  net.tickAll(1); // a fresh heartbeat
  const T = term(net, n2);
  const vote = (type: VoteRequest['type'], transfer: boolean): VoteRequest => ({
    type,
    from: n3,
    to: n2,
    term: T + 5,
    lastLogIndex: 100,
    lastLogTerm: T + 5,
    transfer,
  });

  net.node(n2).step(vote(MessageType.Vote, false));
  t.equal(term(net, n2), T, 'term unchanged');
  t.equal(net.node(n2).raft.vote, n1, 'vote unchanged');
  t.equal(net.node(n2).raft.lead, n1, 'still follows the leader');
  t.same(drain(net, n2), [], 'no response at all');

  net.node(n2).step(vote(MessageType.PreVote, false));
  t.same(drain(net, n2), [], 'a pre-vote is ignored as well');

  net.node(n2).step(vote(MessageType.Vote, true));
  t.equal(term(net, n2), T + 5, 'a transfer campaign (TimeoutNow) bypasses the lease');
  t.equal(net.node(n2).raft.vote, n3);
  const out = drain(net, n2);
  t.same(
    out.map((m) => ({ type: m.type, to: m.to, term: m.term, reject: 'reject' in m ? m.reject : undefined })),
    [{ type: MessageType.VoteResp, to: n3, term: T + 5, reject: false }],
    'and is granted',
  );
});

t.test('leader lease: a follower that lost the leader grants a higher-term vote', async (t) => {
  const net = electedNetwork();
  const T = term(net, n2);
  net.cut(n1, n2);
  for (let i = 0; i < ELECTION; i++) net.node(n2).tick(); // no heartbeat for an election timeout
  net.node(n2).step({ type: MessageType.Vote, from: n3, to: n2, term: T + 1, lastLogIndex: 100, lastLogTerm: T, transfer: false });
  t.equal(term(net, n2), T + 1);
  t.ok(
    drain(net, n2).some((m) => m.type === MessageType.VoteResp && m.to === n3 && !m.reject),
    'vote granted',
  );
});

t.test('proposal dropping', async (t) => {
  t.test('on a follower: not-leader with the leader as hint, nothing appended', async (t) => {
    const net = electedNetwork();
    const before = net.node(n2).raft.log.lastIndex();
    const err = catchDropped(() => net.node(n2).propose([enc('x')]));
    t.ok(err instanceof ProposalDroppedError);
    t.equal(err?.reason, DropReason.NotLeader);
    t.equal(err?.leader, n1, 'the leader hint');
    t.equal(net.node(n2).raft.log.lastIndex(), before, 'nothing appended');
    t.equal(net.node(n2).hasReady(), false, 'nothing to persist or send');
  });

  t.test('during a leadership transfer: transferring', async (t) => {
    const net = electedNetwork();
    const before = net.node(n1).raft.log.lastIndex();
    net.node(n1).transferLeadership(n2);
    const err = catchDropped(() => net.node(n1).propose([enc('x')]));
    t.equal(err?.reason, DropReason.Transferring);
    t.equal(net.node(n1).raft.log.lastIndex(), before, 'nothing appended');
    net.stabilize();
    t.equal(net.leader(), n2);
    const after = catchDropped(() => net.node(n1).propose([enc('x')]));
    t.equal(after?.reason, DropReason.NotLeader, 'once over, the old leader redirects');
    t.equal(after?.leader, n2);
  });

  t.test('maxUncommittedBytes: overloaded until commit and apply', async (t) => {
    const net = electedNetwork({ maxUncommittedBytes: 100 });
    const leader = net.node(n1);
    leader.propose([enc('a'.repeat(60))]);
    const last = leader.raft.log.lastIndex();
    const err = catchDropped(() => leader.propose([enc('b'.repeat(60))]));
    t.equal(err?.reason, DropReason.Overloaded, '60 + 60 > 100');
    t.equal(err?.leader, n1);
    t.equal(leader.raft.log.lastIndex(), last, 'nothing appended');
    leader.propose([enc('c'.repeat(40))]); // 60 + 40 = 100: at the limit is fine
    t.equal(catchDropped(() => leader.propose([enc('d')]))?.reason, DropReason.Overloaded, 'one byte over');
    net.stabilize(); // commit and apply
    t.same(net.appliedData(n1).map((s) => s.length), [60, 40]);
    t.doesNotThrow(() => leader.propose([enc('e'.repeat(60))]), 'accepted again after apply');
    t.doesNotThrow(() => leader.propose([enc('f'.repeat(40))]));
    net.stabilize();
    t.same(net.appliedData(n3).map((s) => s[0]), ['a', 'c', 'e', 'f']);
  });
});

t.test('batching: 100 proposals between two Readys make one append per follower and one write', async (t) => {
  const net = electedNetwork();
  const first = net.node(n1).raft.log.lastIndex() + 1;
  for (let i = 0; i < 100; i++) net.node(n1).propose([enc(`p${i}`)]);
  const trace = newTrace();
  const msgs = drain(net, n1, trace);
  const withEntries = trace.readys.filter((r) => r.rd.entries.length > 0);
  t.equal(withEntries.length, 1, 'one Ready carries entries');
  t.equal(withEntries[0]?.rd.entries.length, 100, 'all 100 to persist in one write');
  t.equal(withEntries[0]?.rd.entries[0]?.index, first);
  for (const f of [n2, n3]) {
    const apps = appsTo(msgs, f);
    t.equal(apps.length, 1, `one append to ${f}`);
    t.equal(apps[0]?.entries.length, 100, `carrying all 100 entries to ${f}`);
    t.equal(apps[0]?.prevIndex, first - 1);
  }
  net.deliver(msgs);
  settle(net);
  for (const id of voters3()) t.equal(net.appliedData(id).length, 100, `node ${id} applied them all`);
});

t.test('flow control', async (t) => {
  t.test('maxInflightMsgs bounds unanswered appends; acknowledgements release more', async (t) => {
    const net = electedNetwork({ maxInflightMsgs: 2, maxSizePerMsg: 10 });
    for (let i = 0; i < 6; i++) net.node(n1).propose([enc(`entry-${i}`.padEnd(10, '.'))]); // 10 bytes each
    const first = drain(net, n1);
    for (const f of [n2, n3]) {
      const apps = appsTo(first, f);
      t.equal(apps.length, 2, `2 appends to ${f} while it has not answered`);
      t.same(apps.map((m) => m.entries.length), [1, 1], 'each capped at one 10-byte entry');
    }
    // Time passes, followers still silent: heartbeats only, no more appends.
    const later: Message[] = [];
    for (let i = 0; i < 3; i++) {
      net.node(n1).tick();
      later.push(...drain(net, n1));
    }
    t.equal(later.filter(isApp).length, 0, 'no further appends without acknowledgements');

    // Now deliver the first appends and let the acknowledgements back.
    net.deliver(first);
    const acks = [...drain(net, n2), ...drain(net, n3)];
    t.equal(acks.filter((m) => m.type === MessageType.AppResp).length, 4);
    net.deliver(acks);
    const second = drain(net, n1);
    for (const f of [n2, n3]) {
      const apps = appsTo(second, f).filter((m) => m.entries.length > 0);
      t.equal(apps.length, 2, `acknowledgements released 2 more appends to ${f}`);
      t.same(apps.flatMap((m) => m.entries.map(text)), ['entry-2...', 'entry-3...']);
    }

    // Run to completion, checking the window on every round.
    net.deliver(second);
    let worst = 0;
    for (let round = 0; round < 50; round++) {
      const msgs = [...drain(net, n1), ...drain(net, n2), ...drain(net, n3)];
      if (msgs.length === 0) break;
      for (const f of [n2, n3]) worst = Math.max(worst, appsTo(msgs, f).filter((m) => m.entries.length > 0).length);
      net.deliver(msgs);
    }
    t.ok(worst <= 2, `never more than 2 appends per follower per round (saw ${worst})`);
    for (const id of voters3()) t.equal(net.appliedData(id).length, 6, `node ${id} applied all 6`);
  });

  t.test('with one append in flight, a follower that acknowledges after the commit is sent the commit at once, not at the next heartbeat', async (t) => {
    const net = electedNetwork({ maxInflightMsgs: 1 });
    net.node(n1).propose([enc('a')]);
    const first = drain(net, n1);
    net.deliver(first.filter((m) => m.to === n2 || m.to === n3));
    const [fromN2, fromN3] = [drain(net, n2), drain(net, n3)];
    // n2's acknowledgement commits the entry; n3's append is still unanswered, so its window is full.
    net.deliver(fromN2);
    const afterN2 = drain(net, n1);
    t.equal(appsTo(afterN2, n3).length, 0, 'nothing to n3 while its append is unanswered');
    // n3 answers: its window opens, and the commit it was never told goes to it.
    net.deliver(fromN3);
    const afterN3 = drain(net, n1);
    const toN3 = appsTo(afterN3, n3);
    t.equal(toN3.length, 1, 'one append to n3');
    t.equal(toN3[0]?.entries.length, 0, 'with no entries');
    t.equal(toN3[0]?.commit, net.node(n1).status().hard.commit, "carrying the leader's commit index");
    t.equal(appsTo(drain(net, n1), n3).length, 0, 'and nothing more while the commit stays');
    net.deliver(afterN3.filter((m) => m.to === n3));
    drain(net, n3);
    t.same(net.appliedData(n3), ['a'], 'n3 applies the entry without a tick');
  });

  t.test('with one append in flight, one the transport reports lost is sent again at once, not at the next heartbeat', async (t) => {
    const net = electedNetwork({ maxInflightMsgs: 1 });
    net.node(n1).propose([enc('a')]);
    const first = drain(net, n1);
    // n3's append is lost; n2's commits the entry.
    net.deliver(first.filter((m) => m.to === n2));
    net.deliver(drain(net, n2));
    net.node(n1).propose([enc('b')]);
    t.equal(appsTo(drain(net, n1), n3).length, 0, "n3's window is full: nothing goes to it");
    net.node(n1).reportUnreachable(n3);
    const again = appsTo(drain(net, n1), n3);
    t.equal(again.length, 1, 'one append to n3 as soon as the loss is reported');
    t.same(again[0]?.entries.map(text), ['a', 'b'], 'from its match on: what was lost and what came since');
    net.deliver(again);
    net.deliver(drain(net, n3));
    net.deliver(drain(net, n1).filter((m) => m.to === n3));
    drain(net, n3);
    t.same(net.appliedData(n3), ['a', 'b'], 'n3 applies both without a tick');
    // Reported again with nothing in flight and nothing to send: nothing goes.
    net.node(n1).reportUnreachable(n3);
    t.equal(appsTo(drain(net, n1), n3).length, 0, 'nothing to resend');
    net.node(n2).reportUnreachable(n1);
    t.equal(drain(net, n2).length, 0, 'a follower ignores the report');
  });

  t.test('maxInflightBytes bounds unanswered bytes per follower', async (t) => {
    const net = electedNetwork({ maxInflightBytes: 20, maxSizePerMsg: 10 });
    for (let i = 0; i < 6; i++) net.node(n1).propose([enc('x'.repeat(10))]);
    const msgs = drain(net, n1);
    t.same(appsTo(msgs, n2).map((m) => m.entries.length), [1, 1], 'two 10-byte appends fill a 20-byte window');
    net.deliver(msgs);
    settle(net);
    for (const id of voters3()) t.equal(net.appliedData(id).length, 6, `node ${id} applied all 6 in the end`);
  });

  t.test('maxSizePerMsg caps the bytes per append, but at least one entry goes', async (t) => {
    const net = electedNetwork({ maxSizePerMsg: 10 });
    for (let i = 0; i < 5; i++) net.node(n1).propose([enc(`e${i}..`)]); // 4 bytes each
    const msgs = drain(net, n1);
    const apps = appsTo(msgs, n2);
    t.same(apps.map((m) => m.entries.length), [2, 2, 1], 'two 4-byte entries fit in 10 bytes, three do not');
    for (const m of apps) t.ok(m.entries.reduce((s, e) => s + e.data.byteLength, 0) <= 10, 'each at most 10 bytes');
    net.deliver(msgs);
    settle(net);

    net.node(n1).propose([enc('x'.repeat(25))]);
    const big = appsTo(drain(net, n1), n2);
    t.equal(big.length, 1);
    t.equal(big[0]?.entries.length, 1, 'a 25-byte entry still goes, alone');
    t.equal(big[0]?.entries[0]?.data.byteLength, 25);
  });
});

t.test('a follower whose appends were lost catches up after heal without new proposals', async (t) => {
  // Minimal form of the case behind the lagging-transfer and snapshot-after-heal tests: the leader's
  // progress for node 2 stays in Replicate with `next` past everything it sent (and lost).
  const net = electedNetwork();
  net.cut(n1, n2);
  for (const d of ['a', 'b', 'c']) {
    net.node(n1).propose([enc(d)]);
    net.stabilize();
  }
  net.heal();
  net.tickAll(3 * ELECTION); // heartbeats flow both ways again
  t.equal(net.node(n2).raft.log.lastIndex(), net.node(n1).raft.log.lastIndex(), "node 2's log caught up");
  t.same(net.appliedData(n2), ['a', 'b', 'c'], 'node 2 applied the entries committed while it was cut off');
});

t.test('fast backtracking: a long conflicting tail is repaired in O(terms) round trips', async (t) => {
  // Common prefix 1..5 (term 1). Leader and node 3: 6..60 of term 3. Node 2 (an old leader of term 2
  // that was cut off): 6..55 of term 2.
  const leaderLog = [...entriesOfTerm(1, 5, 1), ...entriesOfTerm(6, 60, 3, 'new')];
  const g = new RaftGroup();
  const r1 = g.add(n1, storageWith(leaderLog, { term: 3, vote: null, commit: 5 }));
  const r2 = g.add(n2, storageWith([...entriesOfTerm(1, 5, 1), ...entriesOfTerm(6, 55, 2, 'old')], { term: 3, vote: null, commit: 5 }));
  g.add(n3, storageWith(leaderLog, { term: 3, vote: null, commit: 5 }));
  r1.campaignNow();
  g.settle();
  t.equal(r1.role, Role.Leader);
  t.equal(r1.term, 4);

  const rejects = g.sent.filter((m) => m.type === MessageType.AppResp && m.from === n2 && m.reject);
  t.ok(rejects.length >= 1, 'node 2 did reject at first');
  t.ok(rejects.length <= 3, `few rejections (${rejects.length}), not one per conflicting entry`);
  t.equal(r2.log.lastIndex(), r1.log.lastIndex(), 'node 2 caught up');
  for (let i = 1; i <= r1.log.lastIndex(); i++) {
    if (r2.log.term(i) !== r1.log.term(i)) {
      t.fail(`entry ${i} differs: term ${r2.log.term(i)} vs ${r1.log.term(i)}`);
      break;
    }
  }
  t.equal(r2.log.committed, r1.log.lastIndex(), 'and committed everything');
  t.same(
    g.storages.get(n2)!.entries(6, 8, Infinity).map(text),
    ['new6', 'new7'],
    'the stale tail was replaced in storage too',
  );
});

t.test('fast backtracking across several stale terms', async (t) => {
  const leaderLog = [...entriesOfTerm(1, 5, 1), ...entriesOfTerm(6, 60, 4)];
  const g = new RaftGroup();
  const r1 = g.add(n1, storageWith(leaderLog, { term: 4, vote: null, commit: 5 }));
  const r2 = g.add(
    n2,
    storageWith([...entriesOfTerm(1, 5, 1), ...entriesOfTerm(6, 30, 2), ...entriesOfTerm(31, 70, 3)], { term: 4, vote: null, commit: 5 }),
  );
  g.add(n3, storageWith(leaderLog, { term: 4, vote: null, commit: 5 }));
  r1.campaignNow();
  g.settle();
  t.equal(r1.role, Role.Leader);
  const rejects = g.sent.filter((m) => m.type === MessageType.AppResp && m.from === n2 && m.reject).length;
  t.ok(rejects <= 3, `${rejects} rejections for a 65-entry conflicting tail of two terms`);
  t.equal(r2.log.lastIndex(), r1.log.lastIndex(), 'the longer stale log was cut back to the leader');
  t.equal(r2.log.lastTerm(), r1.term);
});

t.test("leader's own durability: its entry counts towards commit only once persisted", async (t) => {
  const g = new RaftGroup();
  const ss = voters3().map(() => new MemoryStorage(voters3()));
  const r1 = g.add(n1, ss[0]!);
  const r2 = g.add(n2, ss[1]!);
  g.add(n3, ss[2]!);
  r1.campaignNow();
  g.settle();
  t.equal(r1.role, Role.Leader);
  const committed = r1.log.committed;
  t.equal(committed, 1, 'the no-op committed');

  const ticket = r1.propose([enc('x')]);
  t.equal(ticket.lastIndex, 2);
  const apps = readMessages(r1);
  const toN2 = apps.find((m) => m.to === n2 && isApp(m));
  t.ok(toN2 !== undefined && isApp(toN2) && toN2.entries.length === 1, 'an append to node 2');
  r2.step(toN2!);
  persistAll(r2, ss[1]!); // the follower persists before it answers
  const ack = readMessages(r2).find((m) => m.type === MessageType.AppResp);
  t.ok(ack !== undefined && ack.type === MessageType.AppResp && !ack.reject && ack.index === 2, 'node 2 acknowledges 2');
  r1.step(ack!);
  t.equal(r1.progress.get(n2)!.match, 2, 'the ack is recorded');
  t.equal(r1.progress.get(n1)!.match, 1, "the leader's own entry 2 is not durable yet");
  t.equal(r1.log.committed, committed, 'not committed: 1 durable follower + a volatile leader is not 2 of 3');

  persistAll(r1, ss[0]!);
  t.equal(r1.progress.get(n1)!.match, 2);
  t.equal(r1.log.committed, 2, 'committed once the leader persisted its own copy');
  const announce = readMessages(r1).filter(isApp);
  t.ok(announce.some((m) => m.to === n2 && m.commit === 2), 'and the new commit index goes out');
});

t.test("leader's own durability through RawNode: commit waits for advance()", async (t) => {
  const net = electedNetwork();
  const leader = net.node(n1);
  leader.propose([enc('x')]);
  const rd = leader.ready(); // not persisted, not advanced yet
  const idx = rd.entries[0]!.index;
  net.deliver(rd.messages.filter((m) => m.to === n2));
  const acks = drain(net, n2);
  net.deliver(acks);
  t.equal(leader.raft.log.committed, idx - 1, 'an ack from node 2 alone does not commit');
  const s = net.storages.get(n1)!;
  s.append(rd.entries);
  if (rd.hardState !== null) s.setHardState(rd.hardState);
  leader.advance(rd);
  t.equal(leader.raft.log.committed, idx, 'advance() after persisting lets it commit');
});

t.test('ReadIndex', async (t) => {
  t.test('on the leader: released only after a majority acknowledges a heartbeat round', async (t) => {
    const net = electedNetwork();
    const leader = net.node(n1);
    // A heartbeat round that started before the read must not confirm it.
    leader.tick();
    const oldBeats = drain(net, n1).filter((m) => m.type === MessageType.Heartbeat);
    t.equal(oldBeats.length, 2);

    leader.readIndex('ctx-1');
    t.same(leader.raft.readStates, [], 'not released at once');
    const trace = newTrace();
    const beats = drain(net, n1, trace).filter((m) => m.type === MessageType.Heartbeat);
    t.equal(beats.length, 2, 'the read starts a heartbeat round');
    t.same(trace.readys.flatMap((r) => r.rd.readStates), [], 'no ReadState before acknowledgements');

    net.deliver(oldBeats);
    net.deliver([...drain(net, n2), ...drain(net, n3)]);
    t.same(drain(net, n1, trace), [], 'nothing to send');
    t.same(trace.readys.flatMap((r) => r.rd.readStates), [], 'acks of an older round do not count');

    net.deliver(beats.filter((m) => m.to === n2)); // one follower is enough with the leader
    net.deliver(drain(net, n2));
    drain(net, n1, trace);
    t.same(
      trace.readys.flatMap((r) => r.rd.readStates),
      [{ index: leader.raft.log.committed, context: 'ctx-1' }],
      'released with the commit index at the time of the request',
    );
  });

  t.test('the ReadState index is the commit index when the read was asked', async (t) => {
    const net = electedNetwork();
    const leader = net.node(n1);
    leader.propose([enc('a')]);
    net.stabilize();
    const commitAtRead = leader.raft.log.committed;
    leader.readIndex('r');
    leader.propose([enc('b')]); // commits later; the read need not wait for it
    const trace = newTrace();
    settle(net, trace);
    const rs = trace.readys.filter((r) => r.id === n1).flatMap((r) => r.rd.readStates);
    t.same(rs, [{ index: commitAtRead, context: 'r' }]);
  });

  t.test('on an isolated leader: never released, aborted when it steps down', async (t) => {
    const net = electedNetwork();
    net.isolate(n1);
    net.node(n1).readIndex('lost');
    const trace = newTrace();
    for (let i = 0; i < 3 * ELECTION && role(net, n1) === Role.Leader; i++) tickAll(net, 1, trace);
    settle(net, trace);
    t.equal(role(net, n1), Role.Follower, 'stepped down (CheckQuorum)');
    const mine = trace.readys.filter((r) => r.id === n1);
    t.same(mine.flatMap((r) => r.rd.readStates), [], 'never released');
    t.same(mine.flatMap((r) => r.rd.abortedReads), ['lost'], 'reported as aborted');
  });

  t.test('on a follower: dropped', async (t) => {
    const net = electedNetwork();
    const err = catchDropped(() => net.node(n2).readIndex('x'));
    t.ok(err instanceof ProposalDroppedError);
    t.equal(err?.reason, DropReason.NotLeader);
    t.equal(err?.leader, n1);
  });

  t.test('a new leader holds reads until its no-op commits', async (t) => {
    const net = electedNetwork();
    for (const d of ['a', 'b', 'c']) net.node(n1).propose([enc(d)]);
    net.stabilize();
    net.node(n1).transferLeadership(n2);
    // Step the network round by round until node 2 has just become leader.
    for (let round = 0; round < 20 && role(net, n2) !== Role.Leader; round++) {
      const msgs: Message[] = [];
      for (const id of net.nodes.keys()) msgs.push(...drain(net, id));
      net.deliver(msgs);
    }
    const leader = net.node(n2);
    t.equal(leader.raft.role, Role.Leader);
    const noopIndex = leader.raft.log.lastIndex();
    const committedBefore = leader.raft.log.committed;
    t.ok(committedBefore < noopIndex, `the no-op (${noopIndex}) is not committed yet (commit ${committedBefore})`);
    leader.readIndex('early');
    const trace = newTrace();
    settle(net, trace);
    const released = trace.readys.filter((r) => r.id === n2).flatMap((r) => r.rd.readStates);
    t.same(released, [{ index: noopIndex, context: 'early' }], 'released at the no-op, not at the older commit index');
  });
});

t.test('leadership transfer', async (t) => {
  t.test('to an up-to-date follower', async (t) => {
    const net = electedNetwork();
    const T = term(net, n1);
    net.node(n1).transferLeadership(n2);
    net.stabilize();
    t.equal(net.leader(), n2);
    t.equal(term(net, n2), T + 1);
    t.equal(net.node(n1).raft.lead, n2);
    t.equal(net.node(n3).raft.lead, n2);
    net.node(n2).propose([enc('x')]);
    net.stabilize();
    for (const id of voters3()) t.same(net.appliedData(id), ['x']);
  });

  t.test('to a follower that has not yet received the latest entries', async (t) => {
    const net = electedNetwork();
    const T = term(net, n1);
    for (const d of ['a', 'b', 'c']) net.node(n1).propose([enc(d)]);
    const last = net.node(n1).raft.log.lastIndex();
    net.node(n1).transferLeadership(n2);
    const trace = newTrace();
    settle(net, trace);
    t.equal(net.leader(), n2);
    t.equal(term(net, n2), T + 1);
    const iTimeout = trace.sent.findIndex((m) => m.type === MessageType.TimeoutNow);
    const iAck = trace.sent.findIndex((m) => m.type === MessageType.AppResp && m.from === n2 && !m.reject && m.index === last);
    t.ok(iAck >= 0 && iTimeout > iAck, 'TimeoutNow went out only after node 2 acknowledged the last entry');
    t.same(net.appliedData(n2), ['a', 'b', 'c']);
  });

  t.test('to a follower that was cut off while entries were committed: caught up, then transferred', async (t) => {
    const net = electedNetwork();
    const T = term(net, n1);
    net.cut(n1, n2);
    for (const d of ['a', 'b', 'c', 'd', 'e']) {
      net.node(n1).propose([enc(d)]);
      net.stabilize();
    }
    t.same(net.appliedData(n3), ['a', 'b', 'c', 'd', 'e'], 'committed by nodes 1 and 3');
    t.ok(net.node(n2).raft.log.lastIndex() < net.node(n1).raft.log.lastIndex(), 'node 2 lags');
    net.heal();
    net.node(n1).transferLeadership(n2);
    // The transfer has an election timeout to complete; heartbeats keep flowing meanwhile.
    for (let i = 0; i < ELECTION - 1 && net.leader() !== n2; i++) net.tickAll(1);
    t.equal(net.leader(), n2, 'node 2 became leader within the transfer window');
    t.equal(term(net, n2), T + 1, 'in term + 1');
    t.same(net.appliedData(n2), ['a', 'b', 'c', 'd', 'e'], 'with every committed entry');
  });

  t.test('to an unreachable node: abandoned after an election timeout', async (t) => {
    const net = electedNetwork();
    const T = term(net, n1);
    net.isolate(n2);
    net.node(n1).transferLeadership(n2);
    t.equal(catchDropped(() => net.node(n1).propose([enc('x')]))?.reason, DropReason.Transferring);
    net.tickAll(ELECTION - 1);
    t.equal(
      catchDropped(() => net.node(n1).propose([enc('x')]))?.reason,
      DropReason.Transferring,
      'still transferring just before the timeout',
    );
    net.tickAll(1);
    t.equal(catchDropped(() => net.node(n1).propose([enc('y')])), undefined, 'proposals accepted again');
    t.equal(net.leader(), n1);
    t.equal(term(net, n1), T, 'no term change');
    net.stabilize();
    t.same(net.appliedData(n3), ['y']);
  });
});

/**
 * Nodes 1..3 with 1 leading; 'a'..'c' everywhere; node 3 isolated while 'd'..'h' commit; then the
 * leader snapshots at its applied index (compacting its storage) and commits 'i'.
 */
function snapshotScenario(): { net: Network; snapIndex: number } {
  const net = electedNetwork();
  for (const d of ['a', 'b', 'c']) net.node(n1).propose([enc(d)]);
  net.stabilize();
  net.isolate(n3);
  for (const d of ['d', 'e', 'f', 'g', 'h']) {
    net.node(n1).propose([enc(d)]);
    net.stabilize();
  }
  const snapIndex = net.node(n1).status().applied;
  net.storages.get(n1)!.createSnapshot(snapIndex, enc(`state@${snapIndex}`));
  net.node(n1).propose([enc('i')]);
  net.stabilize();
  return { net, snapIndex };
}

const after = (net: Network, id: NodeId, index: number) =>
  net.applied
    .get(id)!
    .filter((e) => e.index > index && e.kind === 0)
    .map(text);

t.test('snapshots', async (t) => {
  t.test('setup sanity', async (t) => {
    const { net, snapIndex } = snapshotScenario();
    t.equal(net.storages.get(n1)!.firstIndex(), snapIndex + 1, "the leader's log is compacted");
    t.ok(net.node(n3).raft.log.lastIndex() < snapIndex, 'node 3 is behind the compaction point');
  });

  t.test('after heal, the lagging follower gets a snapshot without waiting for new proposals', async (t) => {
    const { net, snapIndex } = snapshotScenario();
    net.heal();
    const trace = newTrace();
    tickAll(net, 3 * ELECTION, trace);
    const snaps = trace.sent.filter((m) => m.type === MessageType.Snap && m.to === n3);
    t.ok(snaps.length >= 1, `a Snap message was sent to node 3 (sent ${snaps.length})`);
    t.ok(
      trace.readys.some((r) => r.id === n3 && r.rd.snapshot?.meta.index === snapIndex),
      "node 3's Ready carried the snapshot",
    );
    t.equal(net.node(n3).raft.log.lastIndex(), net.node(n1).raft.log.lastIndex(), 'node 3 caught up');
  });

  t.test('after heal and another proposal: snapshot installed, all apply the same later entries', async (t) => {
    const { net, snapIndex } = snapshotScenario();
    net.heal();
    const trace = newTrace();
    net.node(n1).propose([enc('j')]);
    settle(net, trace);
    const snaps = trace.sent.filter((m) => m.type === MessageType.Snap);
    t.equal(snaps.length, 1, 'one Snap message');
    t.equal(snaps[0]?.to, n3);
    const withSnap = trace.readys.filter((r) => r.rd.snapshot !== null);
    t.equal(withSnap.length, 1);
    t.equal(withSnap[0]?.id, n3, "node 3's Ready carries the snapshot");
    t.equal(withSnap[0]?.rd.snapshot?.meta.index, snapIndex);
    t.equal(text({ data: withSnap[0]!.rd.snapshot!.data } as Entry), `state@${snapIndex}`, 'with the leader state machine image');
    t.equal(net.storages.get(n3)!.firstIndex(), snapIndex + 1, "node 3's storage starts after the snapshot");
    t.equal(net.node(n3).status().applied >= snapIndex, true, 'applied moved to the snapshot');

    for (const d of ['k', 'l']) net.node(n1).propose([enc(d)]);
    net.stabilize();
    for (const id of voters3()) t.same(after(net, id, snapIndex), ['i', 'j', 'k', 'l'], `node ${id} applied the same later entries`);
    t.same(net.appliedData(n3), ['a', 'b', 'c', 'i', 'j', 'k', 'l'], 'node 3 never applied the compacted entries one by one');
    t.equal(net.node(n1).raft.progress.get(n3)!.state, ProgressState.Replicate, 'node 3 is replicating normally again');
  });

  t.test('a lost snapshot message is retried', async (t) => {
    const { net, snapIndex } = snapshotScenario();
    net.heal();
    const trace = newTrace();
    let dropped = 0;
    const dropFirstSnap = (m: Message) => {
      if (m.type === MessageType.Snap && dropped === 0) {
        dropped++;
        return true;
      }
      return false;
    };
    net.node(n1).propose([enc('j')]);
    settle(net, trace, dropFirstSnap);
    t.equal(dropped, 1, 'the first Snap was lost');
    t.equal(net.node(n1).raft.progress.get(n3)!.state, ProgressState.Snapshot, 'the leader waits for it');
    for (let i = 0; i < 5 * ELECTION && net.node(n3).raft.log.lastIndex() < snapIndex; i++) tickAll(net, 1, trace, dropFirstSnap);
    const snaps = trace.sent.filter((m) => m.type === MessageType.Snap && m.to === n3);
    t.ok(snaps.length >= 2, `sent again (${snaps.length} Snap messages)`);
    t.ok(trace.readys.some((r) => r.id === n3 && r.rd.snapshot?.meta.index === snapIndex), 'and installed');
    net.node(n1).propose([enc('k')]);
    net.stabilize();
    for (const id of voters3()) t.same(after(net, id, snapIndex), ['i', 'j', 'k'], `node ${id} converged`);
  });
});

t.test('restart', async (t) => {
  t.test('from a storage with log and hard state', async (t) => {
    const log = [entry(1, 1, 'a'), entry(2, 1, 'b'), entry(3, 2, 'c'), entry(4, 2, 'd'), entry(5, 3, 'e'), entry(6, 3, 'f')];
    const storage = storageWith(log, { term: 4, vote: n2, commit: 5 });
    const node = new RawNode({ id: n1, electionTick: ELECTION, heartbeatTick: 1, random: seededRandom(5), applied: 2 }, storage);
    const st = node.status();
    t.equal(st.soft.term, 4, 'same term');
    t.equal(st.hard.vote, n2, 'same vote');
    t.equal(st.hard.commit, 5);
    t.equal(st.soft.role, Role.Follower);
    t.equal(st.lastIndex, 6);
    t.ok(node.hasReady());
    const rd = node.ready();
    t.same(rd.committedEntries.map(text), ['c', 'd', 'e'], 're-applies after the given applied, up to commit');
    t.same(rd.entries, [], 'nothing new to persist');
    t.equal(rd.hardState, null, 'the hard state is already durable');
    t.equal(rd.mustSync, false);
    node.advance(rd);
    t.equal(node.status().applied, 5);
    t.equal(node.hasReady(), false);

    // The restored vote binds: no second vote in term 4.
    node.step({ type: MessageType.Vote, from: n3, to: n1, term: 4, lastLogIndex: 10, lastLogTerm: 4, transfer: false });
    const out = node.ready();
    t.same(
      out.messages.map((m) => [m.type, m.to, 'reject' in m ? m.reject : undefined]),
      [[MessageType.VoteResp, n3, true]],
      'a different candidate of the same term is refused',
    );
    node.advance(out);
  });

  t.test('applied beyond the lazily persisted commit counts as committed', async (t) => {
    const storage = storageWith(entriesOfTerm(1, 6, 1), { term: 1, vote: null, commit: 2 });
    const node = new RawNode({ id: n1, voters: voters3(), electionTick: ELECTION, heartbeatTick: 1, random: seededRandom(5), applied: 4 }, storage);
    t.equal(node.status().hard.commit, 4);
    const rd = node.ready();
    t.same(rd.committedEntries, [], 'nothing before applied is handed out again');
    node.advance(rd);
  });

  t.test('a node of a live group restarts and catches up', async (t) => {
    const net = electedNetwork();
    for (const d of ['a', 'b', 'c', 'd']) net.node(n1).propose([enc(d)]);
    net.stabilize();
    const before = net.node(n2).raft.hardState();
    const crashed = net.storages.get(n2)!.clone();
    t.same(crashed.hardState(), before, 'the storage holds the hard state');
    const appliedIdx = 3; // the state machine had applied the no-op, 'a' and 'b'
    const node = restartNode(net, n2, crashed, appliedIdx);
    t.equal(node.raft.term, before.term, 'same term');
    t.equal(node.raft.vote, before.vote, 'same vote');
    t.equal(node.raft.log.committed, before.commit, 'same commit');
    net.stabilize();
    t.same(net.appliedData(n2), ['c', 'd'], 're-applied exactly the entries after applied');
    net.node(n1).propose([enc('e')]);
    net.stabilize();
    t.same(net.appliedData(n2), ['c', 'd', 'e'], 'and keeps following the leader');
    t.equal(net.leader(), n1);
  });
});

t.test('a single-voter group commits and serves reads on its own', async (t) => {
  const net = new Network(ids('1'));
  net.elect(n1);
  t.equal(net.leader(), n1);
  net.node(n1).propose([enc('a')]);
  net.stabilize();
  t.same(net.appliedData(n1), ['a']);
  net.node(n1).readIndex('solo');
  const trace = newTrace();
  settle(net, trace);
  t.same(trace.readys.flatMap((r) => r.rd.readStates), [{ index: net.node(n1).raft.log.committed, context: 'solo' }]);
});

t.test('suspended voting: a node that lost its disk grants no vote and never campaigns until it holds what the leader committed', async (t) => {
  const net = new Network(voters3());
  net.elect(n1);
  t.equal(net.leader(), n1);
  for (let i = 0; i < 5; i++) net.node(n1).propose([enc(`e${i}`)]);
  net.stabilize();
  const committed = net.node(n1).raft.log.committed;

  // n3 comes back with an empty disk, votes suspended.
  const fresh = newTestRaft(n3, voters3());
  const r3 = fresh.raft;
  r3.suspendVoting();
  t.notOk(r3.promotable(), 'it does not campaign');
  for (let i = 0; i < 50; i++) r3.tick();
  t.equal(r3.role, Role.Follower, 'no election however long it hears nothing');
  t.equal(readMessages(r3).length, 0);
  const leaderTerm = net.node(n1).raft.term;
  r3.step({ type: MessageType.Vote, from: n2, to: n3, term: leaderTerm, lastLogIndex: 0, lastLogTerm: 0, transfer: false } as VoteRequest);
  t.match(readMessages(r3)[0], { type: MessageType.VoteResp, to: n2, reject: true }, 'a vote request is refused, though its log is as up to date');
  t.equal(r3.vote, null);

  // An append that leaves it short of the leader's commit index does not end it.
  const all = net.storages.get(n1)!.entries(1, committed + 1, Infinity);
  r3.step({ type: MessageType.App, from: n1, to: n3, term: leaderTerm, prevIndex: 0, prevTerm: 0, entries: all.slice(0, 2), commit: committed } as Message);
  t.ok(r3.votingIsSuspended, 'two entries of ' + committed + ': still suspended');
  r3.step({ type: MessageType.App, from: n1, to: n3, term: leaderTerm, prevIndex: 2, prevTerm: all[1]!.term, entries: all.slice(2), commit: committed } as Message);
  t.notOk(r3.votingIsSuspended, 'holding everything the leader committed: it may vote again');
  t.ok(r3.promotable());
  t.equal(r3.vote, n1, "this term's vote is the leader's: it may have voted in this term before its disk was lost");
  r3.step({ type: MessageType.Vote, from: n2, to: n3, term: leaderTerm, lastLogIndex: 99, lastLogTerm: leaderTerm, transfer: false } as VoteRequest);
  t.match(readMessages(r3).find((m) => m.type === MessageType.VoteResp), { reject: true }, 'no second vote in the leader’s term');
});

t.test('a follower that lost its log is found by the next heartbeat and caught up, on an idle group', async (t) => {
  const net = new Network(voters3());
  net.elect(n1);
  for (let i = 0; i < 4; i++) net.node(n1).propose([enc(`e${i}`)]);
  net.stabilize();
  const leader = net.node(n1).raft;
  const last = leader.log.lastIndex();
  t.equal(leader.progress.get(n3)!.match, last, 'n3 had acknowledged everything');

  // n3's disk is lost: it restarts empty, votes suspended. No new entry will come (an idle group).
  const n3node = restartNode(net, n3, new MemoryStorage(voters3()));
  n3node.raft.suspendVoting();
  for (let i = 0; i < 3; i++) {
    net.tickAll();
    net.stabilize();
  }
  t.equal(net.storages.get(n3)!.lastIndex(), last, 'the heartbeat answer told the leader; it replicated everything again');
  t.notOk(n3node.raft.votingIsSuspended, 'holding what the leader committed, n3 may vote again');
  t.equal(leader.progress.get(n3)!.match, last);
  t.equal(leader.role, Role.Leader, 'the leader never stepped down');
});

t.test('a leader knows how far behind its log each follower is; a follower knows nothing of it', async (t) => {
  const net = new Network([n1, n2, n3]);
  net.elect(n1);
  net.stabilize();
  t.equal(net.node(n1).lagOf(n2), 0, 'in step');
  t.equal(net.node(n1).lagOf(n3), 0);
  net.isolate(n3);
  for (let i = 0; i < 5; i++) net.node(n1).propose([enc(`m${i}`)]);
  net.stabilize();
  t.equal(net.node(n1).lagOf(n2), 0, 'n2 holds every entry');
  t.equal(net.node(n1).lagOf(n3), 5, 'n3, cut off, holds none of the five');
  t.equal(net.node(n2).lagOf(n1), null, 'a follower does not know');
  t.equal(net.node(n1).lagOf('n9' as typeof n1), null, 'nor does a leader, of a node outside the group');
  net.heal();
  net.tickAll(3);
  net.stabilize();
  t.equal(net.node(n1).lagOf(n3), 0, 'caught up');
});
