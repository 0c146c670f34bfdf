// A command forwarded by a follower and answered from the follower's own apply
// (PartitionReplica.append on the leader, awaitEntry on the follower): three in-process node hosts.
// What the forwarding node's client depends on: the same result the leader computes, whole (a
// receive's messages with their bodies), and an honest "unknown" when the follower cannot tell.
import t, { type Test } from 'tap';
import { NotCommittedError, OutcomeUnknownError, ReplicaClosedError } from '../../src/partition/errors.js';
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
  // Both followers wait for entries the old leader named but never sent (its word came, its entries not).
  const followers = [...c.hosts.values()].filter((h) => h !== leader);
  const first = Math.max(...followers.map((h) => h.replica(0).raw.position().lastIndex)) + 1;
  const stale = followers.flatMap((h) => [0, 1, 2].map((k) => h.replica(0).awaitEntry(first + k, oldTerm).then(() => 'applied', (err: Error) => err.name)));
  // The leader is cut off; the other two elect one of themselves, which fills those indexes: its
  // no-op, and forwarded writes of the new term that the other follower waits for at the same
  // indexes, beside the old term's waiters.
  c.down.add(leader.opts.self);
  await c.until(() => c.leaderOf(0) !== null, 'a new leader');
  const now = c.leaderOf(0)!;
  const other = followers.find((h) => h !== now)!;
  const fresh: Promise<Result>[] = [];
  for (let i = 0; i < 4; i++) {
    const ticket = now.replica(0).append('alice', { type: 'queue.send', name: 'q', messages: [{ body: `n${i}`, attributes: {} }] });
    fresh.push(other.replica(0).awaitEntry(ticket.firstIndex, ticket.term));
  }
  t.same(await Promise.all(stale), Array(6).fill('NotCommittedError'), 'the old term’s words: never applied, on the follower and on the new leader');
  const results = await Promise.all(fresh);
  t.ok(results.every((r) => r.ok), 'the new term’s writes at the same indexes apply and are answered');
});

t.test('a former leader’s word for an index where this node, now leading, proposed its own: each decided by the entry there', async (t) => {
  const { c, leader } = await led(t);
  const oldTerm = leader.replica(0).raw.softState().term;
  c.down.add(leader.opts.self);
  await c.until(() => c.leaderOf(0) !== null, 'a new leader');
  const now = c.leaderOf(0)!;
  const index = now.replica(0).raw.position().lastIndex + 1;
  const settled = t.rejects(now.replica(0).awaitEntry(index, oldTerm), NotCommittedError, 'its own entry is there: the forwarded write never applies');
  const own = now.replica(0).propose('alice', { type: 'queue.send', name: 'q', messages: [{ body: 'own', attributes: {} }] });
  t.ok((await own).ok, 'and the node’s own write applies and is answered');
  await settled;
});
