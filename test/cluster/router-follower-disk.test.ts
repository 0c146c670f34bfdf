// While a node is short of disk, only a partition's leader refuses a command for it: a follower that
// has not applied a keyed write yet holds no record of its key, and a retry of that write sent to it
// (a stale leader hint, or a forwarding node asking the voters in turn) was answered 507, "nothing
// was written", for a write that went through; a keyed receive's retry was then told to go on
// without its key, and its first attempt's messages stayed leased to nobody. It answers not_leader.
import t from 'tap';
import type { PeerCaller } from '../../src/cluster/answer.js';
import { Router } from '../../src/cluster/router.js';
import { LocalCluster, queue } from '../partition/host-helpers.js';

const peers: PeerCaller = { call: () => Promise.reject(new Error('no HTTP here')) };

t.test("a follower that has not applied a keyed write answers its retry not_leader, not the disk's refusal", async (t) => {
  const c = new LocalCluster(1, { balanceLeaders: false });
  t.teardown(() => c.close());
  await c.startAll();
  await c.until(() => c.leaderOf(0) !== null, 'a leader');
  t.ok((await c.submit(0, 'alice', queue('q'))).ok);
  const leader = c.leaderOf(0)!;
  const follower = [...c.hosts.values()].find((h) => h !== leader)!;
  // The follower misses the keyed send: it holds no record of its key.
  c.down.add(follower.opts.self);
  const send = { type: 'queue.send' as const, name: 'q', messages: [{ body: 'once', attributes: {} }] };
  const first = await leader.replica(0).propose('alice', send, 'key-1');
  t.ok(first.ok);
  const short = (): readonly string[] => ['n3'];
  const atLeader = new Router(leader, peers, { self: leader.opts.self, partitions: 1, pollMs: 5 });
  atLeader.refuseWhenShort(short);
  t.same(await atLeader.proposeHere(0, 'alice', send, 'key-1'), { kind: 'ok', result: first }, 'the leader replays the first answer');
  t.match(await atLeader.proposeHere(0, 'alice', { ...send, messages: [{ body: 'new', attributes: {} }] }, 'key-2'), { kind: 'ok', result: { ok: false, code: 'insufficient_storage' } }, 'and refuses a new write');
  const atFollower = new Router(follower, peers, { self: follower.opts.self, partitions: 1, pollMs: 5 });
  atFollower.refuseWhenShort(short);
  t.match(await atFollower.proposeHere(0, 'alice', send, 'key-1'), { kind: 'not_leader' }, 'the follower sends the retry on to the leader');
  t.match(await atFollower.appendHere(leader.opts.self, 0, 'alice', send, 'key-1'), { kind: 'not_leader' });
});
