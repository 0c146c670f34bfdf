// A command forwarded by a follower and answered from the follower's own apply
// (PartitionReplica.append on the leader, awaitEntry on the follower): three in-process node hosts.
// What the forwarding node's client depends on: the same result the leader computes, whole (a
// receive's messages with their bodies), and an honest "unknown" when the follower cannot tell.
import t, { type Test } from 'tap';
import { OutcomeUnknownError, ReplicaClosedError } from '../../src/partition/errors.js';
import type { NodeHost } from '../../src/partition/host.js';
import type { Received, Result } from '../../src/store/broker/index.js';
import { LocalCluster, queue } from './host-helpers.js';

async function led(t: Test): Promise<{ c: LocalCluster; leader: NodeHost; follower: NodeHost }> {
  const c = new LocalCluster(1, { balanceLeaders: false });
  t.teardown(() => c.close());
  await c.startAll();
  await c.until(() => c.leaderOf(0) !== null, 'leader');
  await c.submit(0, 'alice', queue('q'));
  const leader = c.leaderOf(0)!;
  return { c, leader, follower: [...c.hosts.values()].find((h) => h !== leader)! };
}

const value = <T>(r: Result): T => {
  if (!r.ok) throw new Error(`${r.code}: ${r.detail}`);
  return r.value as T;
};

t.test('a follower answers what the leader appended from its own apply, receives whole', async (t) => {
  const { leader, follower } = await led(t);
  const sent = leader.replica(0).append('alice', { type: 'queue.send', name: 'q', messages: [{ body: 'hello', attributes: { k: 'v' } }] });
  const sendResult = await follower.replica(0).awaitEntry(sent.firstIndex, sent.term);
  t.ok(sendResult.ok, 'the send applied on the follower');
  const received = leader.replica(0).append('alice', { type: 'receive', channel: { queue: 'q' }, maxMessages: 10, visibilityTimeoutSeconds: 30 });
  const got = value<Received>(await follower.replica(0).awaitEntry(received.firstIndex, received.term));
  t.equal(got.unanswered, undefined, 'the follower made the messages: it answers the receive');
  t.equal(got.messages.length, 1);
  t.match(got.messages[0], { body: 'hello', attributes: { k: 'v' } });
  // The leader leased the same message: nothing is left to receive, wherever one asks.
  const again = value<Received>(await leader.replica(0).propose('alice', { type: 'receive', channel: { queue: 'q' }, maxMessages: 10, visibilityTimeoutSeconds: 30 }));
  t.equal(again.messages.length, 0, 'one lease, on every replica');
});

t.test('an entry the follower applied before the leader said it was the write: unknown, at once', async (t) => {
  const { leader, follower } = await led(t);
  const sent = leader.replica(0).append('alice', { type: 'queue.send', name: 'q', messages: [{ body: 'x', attributes: {} }] });
  await follower.replica(0).awaitEntry(sent.firstIndex, sent.term);
  await t.rejects(follower.replica(0).awaitEntry(sent.firstIndex, sent.term), { name: 'OutcomeUnknownError', timedOut: false, message: /applied here before/ });
});

t.test('a follower that closes while it waits: unknown, since the write may still apply', async (t) => {
  const { c, leader, follower } = await led(t);
  c.down.add(leader.opts.self);
  const r = follower.replica(0);
  const waiting = r.awaitEntry(r.state.applied().index + 5, 1);
  r.close();
  await t.rejects(waiting, { name: 'OutcomeUnknownError', timedOut: false });
  await t.rejects(r.awaitEntry(r.state.applied().index + 6, 1), OutcomeUnknownError, 'and so is one asked for after');
  t.throws(() => r.append('alice', queue('late')), ReplicaClosedError, 'a closed replica appends nothing');
});

t.test('a forwarded write waits across a change of leader: another entry at its index means never applied (retry)', async (t) => {
  const { c, leader } = await led(t);
  const oldTerm = leader.replica(0).raw.softState().term;
  // Both followers wait for an entry the old leader named but never sent (its word came, its entry not).
  const followers = [...c.hosts.values()].filter((h) => h !== leader);
  const index = Math.max(...followers.map((h) => h.replica(0).state.applied().index)) + 3;
  const outcomes = followers.map((h) =>
    h
      .replica(0)
      .awaitEntry(index, oldTerm)
      .then(
        () => 'applied',
        (err: Error) => err.name,
      ),
  );
  // The leader is cut off; the other two elect one of themselves and fill the index.
  c.down.add(leader.opts.self);
  await c.until(() => c.leaderOf(0) !== null, 'a new leader');
  for (let i = 0; i < 5; i++) await c.submit(0, 'alice', { type: 'queue.send', name: 'q', messages: [{ body: `n${i}`, attributes: {} }] });
  const now = c.leaderOf(0)!;
  const other = followers.findIndex((h) => h !== now);
  t.equal(await outcomes[other]!, 'NotCommittedError', 'the node still following: the new leader’s entry is there, the write can never apply');
  // The new leader proposed at that index itself: unknown to it (the index was taken), or never applied.
  t.match(await outcomes[1 - other]!, /^(NotCommittedError|OutcomeUnknownError)$/);
});

t.test('where a former leader said, a proposal of this node as the new leader: unknown for the forwarded write', async (t) => {
  const { c, leader } = await led(t);
  const oldTerm = leader.replica(0).raw.softState().term;
  c.down.add(leader.opts.self);
  await c.until(() => c.leaderOf(0) !== null, 'a new leader');
  const now = c.leaderOf(0)!;
  const index = now.replica(0).raw.position().lastIndex + 1;
  const waiting = now.replica(0).awaitEntry(index, oldTerm);
  const own = now.replica(0).propose('alice', { type: 'queue.send', name: 'q', messages: [{ body: 'own', attributes: {} }] });
  await t.rejects(waiting, { name: 'OutcomeUnknownError', timedOut: false }, 'displaced, not left to time out');
  t.ok((await own).ok, 'and the node’s own write applies and is answered');
});
