// A follower that installs an image the node host fetched from one node, under the snapshot message of
// another (Snapshots.receive: "the same snapshot from a newer term waits for the download of its
// image, which then steps the newest message received for it", at the image's own index and term:
// test/partition/snapshots.test.ts). With five voters the image can hold entries committed in a term
// newer than that message's, past the end of its sender's log; the follower's acknowledgement then
// reaches a stale leader whose log is shorter: the core threw InvariantError ("acknowledged 6 past
// the leader's last index") out of the stale leader's step. With three voters (all a cluster may
// have: config.ts) it cannot happen: the newer term's quorum would need the follower or that leader.
import t from 'tap';
import { MessageType, type Message } from '../../src/raft/index.js';
import { Network, idsBySize, n1, n2, n3, n4, n5 } from './helpers.js';

const enc = (s: string) => new TextEncoder().encode(s);

t.test("five voters: a follower's acknowledgement of an image from a newer term, stepped under a stale leader's snapshot message, does not break the stale leader", async (t) => {
  const voters = idsBySize(5);
  // PreVote and CheckQuorum decide nothing here (the message at issue is an append response); off,
  // the elections below are one call each.
  const net = new Network(voters, { preVote: false, checkQuorum: false });

  // Term 1: n1 leads; 1 (no-op) and 2 everywhere, then n3 falls behind and 3 commits without it.
  net.elect(n1);
  net.node(n1).propose([enc('a')]);
  net.stabilize();
  net.isolate(n3);
  net.node(n1).propose([enc('b')]);
  net.stabilize();
  t.equal(net.node(n1).status().hard.commit, 3);

  // Term 2: n1 cut off; n2 is elected by n4 and n5, and its no-op (4) commits on n2, n4, n5.
  net.isolate(n1);
  net.elect(n2);
  t.equal(net.node(n2).softState().role, 'leader');
  t.equal(net.node(n2).term(), 2);
  t.equal(net.node(n2).status().lastIndex, 4);

  // n2 and n3 are cut from n1, n4, n5 (n3 hears n2 only). Term 3: n4 is elected by n1 and n5, and
  // commits 5 (its no-op) and 6 on them; n1 applies them. n2 still leads term 2, its log ending at 4.
  net.heal();
  for (const a of [n2, n3]) for (const b of [n1, n4, n5]) net.cut(a, b);
  net.elect(n4);
  net.node(n4).propose([enc('c')]);
  net.stabilize();
  t.equal(net.node(n4).term(), 3);
  t.equal(net.node(n1).status().applied, 6, "n1's state holds entries up to 6, committed in term 3");
  t.equal(net.node(n2).softState().role, 'leader', 'n2 still leads term 2 as far as it knows');

  // n2 compacted at 4 and sends n3 a snapshot. n3's host had been fetching the image of that same
  // snapshot from n1 (n1's message of term 1, sent before n2 was elected); n1 made the image from its
  // state as it was by then, at 6. The download steps n2's message (the newest term) at the image's
  // own index and term, as Snapshots.asImaged does.
  net.storages.get(n2)!.createSnapshot(4, enc('p0-4-2'));
  const imaged = (m: Message): Message =>
    m.type === MessageType.Snap && m.to === n3
      ? { ...m, snapshot: { meta: { ...m.snapshot.meta, index: 6, term: 3 }, data: enc('p0-6-3') } }
      : m;
  // A heartbeat round: n3 answers, n2 probes it and, its log compacted, sends the snapshot.
  net.node(n2).tick();
  t.doesNotThrow(() => net.stabilize(50, imaged), "n3's acknowledgement of 6 reaches n2, whose log ends at 4");
  t.equal(net.node(n3).status().lastIndex, 6, 'n3 installed the image at 6');
  t.ok(net.node(n2).raft.progress.get(n3)!.match <= net.node(n2).status().lastIndex, "n2 counts n3 as holding no more than n2's own log");
  t.equal(net.node(n2).status().hard.commit, 4, 'and the stale leader commits nothing more');
});
