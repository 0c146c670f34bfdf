// A restarted node's readiness (src/cluster/catch-up.ts): behind on each partition until its replica
// applied the highest commit index its peers gave after the start, then caught up for good; peers that
// do not answer leave it behind, peers of an older build that do not tell leave it nothing to wait for.
import t from 'tap';
import { CatchUp, type LocalReplica, type PeerCommits } from '../../src/cluster/catch-up.js';

/** A node of three partitions whose replicas and peers' answers the test sets. */
function node(answers: PeerCommits[][]) {
  const replicas: LocalReplica[] = [0, 1, 2].map((partition) => ({ partition, applied: 0, leader: false, halted: false }));
  let asked = 0;
  const catchUp = new CatchUp({
    peerCommits: () => Promise.resolve(answers[Math.min(asked++, answers.length - 1)]!),
    local: () => replicas,
    waitMs: 0,
  });
  const set = (p: number, r: Partial<LocalReplica>): void => {
    replicas[p] = { ...replicas[p]!, ...r };
  };
  return { catchUp, set, asked: () => asked };
}

t.test('behind until each replica applied the highest commit index a peer gave, then caught up for good', async (t) => {
  const n = node([[[10, 20, 0], [12, 5, 0]]]);
  t.same(await n.catchUp.behind(), [0, 1], 'partitions 0 and 1 wait for 12 and 20; 2 has nothing to wait for');
  n.set(0, { applied: 11 });
  n.set(1, { applied: 20 });
  t.same(await n.catchUp.behind(), [0], 'the highest of the peers counts, not the first');
  n.set(0, { applied: 12 });
  t.same(await n.catchUp.behind(), [], 'every partition caught up');
  n.set(1, { applied: 0, leader: false });
  t.same(await n.catchUp.behind(), [], 'a lag later is no unreadiness');
  t.equal(n.asked(), 1, 'the peers were asked once');
});

t.test('a partition led here, or halted, is not waited for; one whose state is closed is', async (t) => {
  const n = node([[[50, 50, 50], 'silent']]);
  n.set(0, { leader: true });
  n.set(1, { halted: true });
  n.set(2, { applied: null });
  t.same(await n.catchUp.behind(), [2], 'an image being installed is not caught up');
  n.set(2, { applied: 50 });
  t.same(await n.catchUp.behind(), []);
});

t.test('no peer answered: behind on everything, and asked again at the next look', async (t) => {
  const n = node([['silent', 'silent'], ['silent', [3, 0, 0]]]);
  t.same(await n.catchUp.behind(), [0, 1, 2], 'nothing known: not caught up');
  t.same(await n.catchUp.behind(), [0], 'one peer answered the second time');
  t.equal(n.asked(), 2);
});

t.test('peers of an older build that do not give their commit indexes: nothing to wait for, as before', async (t) => {
  const n = node([['unsaid', 'unsaid']]);
  t.same(await n.catchUp.behind(), []);
  const oneSilent = node([['unsaid', 'silent'], ['unsaid', [0, 7, 0]]]);
  t.same(await oneSilent.catchUp.behind(), [0, 1, 2], 'one older peer and one silent: the silent one may be the one that tells');
  t.same(await oneSilent.catchUp.behind(), [1], 'asked again, it told');
  const mixed = node([['unsaid', [0, 7, 0]]]);
  t.same(await mixed.catchUp.behind(), [1], 'a peer that tells is waited for');
});

t.test('looks at once share one question to the peers', async (t) => {
  let asked = 0;
  let answer = (_: PeerCommits[]): void => {};
  const catchUp = new CatchUp({
    peerCommits: () => {
      asked++;
      return new Promise((r) => (answer = r));
    },
    local: () => [{ partition: 0, applied: 4, leader: false, halted: false }],
    waitMs: 0,
  });
  const looks = [catchUp.behind(), catchUp.behind(), catchUp.behind()];
  answer([[4]]);
  t.same(await Promise.all(looks), [[], [], []]);
  t.equal(asked, 1);
});

t.test('a replica a few entries short when the peers answered is waited for a moment, not reported behind', async (t) => {
  let applied = 8;
  const catchUp = new CatchUp({
    peerCommits: () => Promise.resolve([[10]]),
    local: () => [{ partition: 0, applied, leader: false, halted: false }],
    waitMs: 10_000,
  });
  setTimeout(() => (applied = 10), 50);
  t.same(await catchUp.behind(), [], 'it applied its target within the wait');
});
