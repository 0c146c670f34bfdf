// Files an image leaves in snapshots/ once it is of no use (review of 2026-12-07): a copy whose making
// failed, an image served and then unused on a partition gone quiet, an image fetched and never installed.
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { BODIES_IN_LOG } from '../../src/store/broker/index.js';
import type { NodeHost } from '../../src/partition/host.js';
import { LocalCluster, appliedIndex, queue, stillClusterLeftBehind } from './host-helpers.js';

const images = (c: LocalCluster, h: NodeHost): string[] => readdirSync(join(c.root, h.opts.self, 'snapshots')).sort();

t.test('an image whose making fails (a body unreadable) leaves no copy of the state behind', async (t) => {
  const c = new LocalCluster(1, { balanceLeaders: false, format: BODIES_IN_LOG });
  t.teardown(() => c.close());
  await c.startAll();
  await c.until(() => c.leaderOf(0) !== null, 'leader');
  await c.until(() => [...c.hosts.values()].every((h) => h.replica(0).state.format() === BODIES_IN_LOG), 'format 4 raised on every replica');
  t.ok((await c.submit(0, 'alice', queue('q'))).ok);
  for (let i = 0; i < 3; i++) t.ok((await c.submit(0, 'alice', { type: 'queue.send', name: 'q', messages: [{ body: `m${i}`, attributes: {} }] })).ok);
  const leader = c.leaderOf(0)!;
  // The leader's log answers no body (EIO on a segment, say) while it fills the image's rows.
  leader.replica(0).state.attachBodies({
    entry: () => {
      throw new Error('EIO (injected)');
    },
  });
  const snap = leader.replica(0).log.snapshot().meta;
  // The follower asks again, and again: each ask makes a new copy.
  for (let ask = 1; ask <= 3; ask++) await t.rejects(leader.snapshots.imageFor(0, `p0-${snap.index}-${snap.term}`), `the image fails (ask ${ask})`);
  t.strictSame(images(c, leader), [], 'nothing of the failed images is left in snapshots/');
});

t.test('an image served to a follower that caught up is deleted once unused, also on a partition that goes quiet', async (t) => {
  let skew = 0;
  const { c, leader, behind } = await stillClusterLeftBehind(t, () => performance.now() + skew);

  c.down.delete(behind);
  const back = await c.start(behind, false);
  const raw = leader.replica(0).raw;
  leader.reportLost(behind, [0]);
  await c.until(() => back.replica(0).log.snapshot().meta.index > 0 && (raw.status().match.get(behind) ?? 0) >= back.replica(0).log.snapshot().meta.index, `${behind} installed an image`);
  leader.reportLost(behind, [0]);
  await c.until(() => (raw.status().match.get(behind) ?? 0) >= raw.position().lastIndex && appliedIndex(back.replica(0)) >= appliedIndex(leader.replica(0)), `${behind} caught up`);
  t.ok(images(c, leader).some((f) => f.startsWith('p0-serve-')), 'the leader made an image for it');

  // The partition goes quiet (no write reaches a local snapshot's interval), ten minutes on.
  skew += 10 * 60_000;
  for (let i = 0; i < 5; i++) leader.tick();
  await c.quiet();
  // A retired image's file goes SERVED_GRACE_MS (a minute of the timers) after it is let go: what is
  // asked here is whether it was let go at all.
  const served = (leader.snapshots as unknown as { served: Map<number, { path: string }[]> }).served;
  t.comment(`images served still in use: ${JSON.stringify(served.get(0)?.map((s) => s.path.split('/').pop()) ?? [])}; in snapshots/: ${JSON.stringify(images(c, leader))}`);
  t.notOk(served.has(0), 'the image, unused for ten minutes by a follower that holds the whole log, is let go (docs/storage.md: "an image went unused for 5 minutes, that image is deleted")');
});

t.test('an image fetched whole but never installed (the node stopped before its snapshot reached the log) is not left in snapshots/ once a newer image is installed', async (t) => {
  const { c, leader, send, behind } = await stillClusterLeftBehind(t);

  // Its first download completes (the image durable under its ref), then the node stops before the
  // snapshot message reaches its core: a crash right after the download.
  let first = true;
  let stopped = false;
  c.wrapFetch(behind, (fetch) => async (peer, partition, ref, dest) => {
    await fetch(peer, partition, ref, dest);
    if (!first) return;
    first = false;
    c.down.add(behind);
    await c.stop(behind);
    stopped = true;
  });
  c.down.delete(behind);
  await c.start(behind, false);
  leader.reportLost(behind, [0]);
  await c.until(() => stopped, `${behind} downloaded an image and stopped`);
  const left = readdirSync(join(c.root, behind, 'snapshots'));
  t.comment(`left by the download: ${JSON.stringify(left)}`);

  // The leader goes on and compacts; the node comes back and installs a newer image.
  await send(60);
  c.down.delete(behind);
  const back = await c.start(behind, false);
  const raw = leader.replica(0).raw;
  // Nobody ticks: the leader's snapshot to the node that stopped is given up by hand.
  raw.reportSnapshotFailed(behind);
  leader.reportLost(behind, [0]);
  await c.until(() => back.replica(0).log.snapshot().meta.index > 0 && (raw.status().match.get(behind) ?? 0) >= back.replica(0).log.snapshot().meta.index, `${behind} installed an image`);
  t.comment(`installed ${back.replica(0).log.snapshotRef()}`);
  await c.quiet();
  t.strictSame(readdirSync(join(c.root, behind, 'snapshots')), [], 'no image is left in snapshots/');
});
