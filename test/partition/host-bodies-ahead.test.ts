// Bodies in the log (format 4) after a power cut: a follower whose state database ran ahead of its log (a
// power cut took a turn's log write whose committed entries had been applied while it was synced:
// host.ts, "apply them while this node's own write is on its way to the disk") is sent a snapshot
// that its state has applied past but its log and its core have not. It must install an image (its
// log restarts there and keeps nothing for the old state's rows), not drop the image it fetched.
import { cpSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { BODIES_IN_LOG } from '../../src/store/broker/index.js';
import { EntryBodies, bodyPlace } from '../../src/store/broker/bodies.js';
import { bodyText } from '../../src/store/broker/envelope.js';
import { WalStore } from '../../src/store/wal/index.js';
import { IDS, LocalCluster, appliedIndex, queue } from './host-helpers.js';

const closed = (h: unknown): boolean => (h as { closed: boolean }).closed;

t.test('format 4: a follower whose state is ahead of its log installs the snapshot it is sent, and keeps every body', async (t) => {
  // A loop turn that fails rethrows from its setImmediate (the server then stops): noted here.
  const failures: unknown[] = [];
  const onRejection = (err: unknown): void => void failures.push(err);
  process.on('unhandledRejection', onRejection);
  t.teardown(() => void process.off('unhandledRejection', onRejection));

  const c = new LocalCluster(1, { snapshotEvery: 20, keepBehindSnapshot: 0, balanceLeaders: false, format: BODIES_IN_LOG });
  t.teardown(() => c.close());
  await c.startAll();
  await c.until(() => c.leaderOf(0) !== null, 'leader');
  await c.until(() => [...c.hosts.values()].every((h) => h.replica(0).state.format() === BODIES_IN_LOG), 'format 4 raised on every replica');
  const everyReplicaApplied = async (): Promise<void> => {
    const last = c.leaderOf(0)!.replica(0).raw.position().lastIndex;
    await c.until(() => [...c.hosts.values()].every((h) => appliedIndex(h.replica(0)) >= last), `every replica applied entry ${last}`);
  };
  t.ok((await c.submit(0, 'alice', queue('q'))).ok);
  const sent: string[] = [];
  const send = async (i: number): Promise<void> => {
    const b = `m-${i}-`.padEnd(300, '.');
    if ((await c.submit(0, 'alice', { type: 'queue.send', name: 'q', messages: [{ body: b, attributes: {} }] })).ok) sent.push(b);
  };
  for (let i = 0; i < 10; i++) await send(i);
  await everyReplicaApplied();
  const f = c.leaderOf(0)!.opts.self === IDS[0] ? IDS[1]! : IDS[0]!;
  const wal = join(c.root, f, 'wal');

  // The follower's log as it is now...
  c.down.add(f);
  await c.stop(f);
  cpSync(wal, `${wal}.then`, { recursive: true });
  c.down.delete(f);
  await c.start(f);
  // ...then 40 more sends, which it applies; the leader compacts past what that log holds.
  for (let i = 10; i < 50; i++) await send(i);
  await everyReplicaApplied();
  const leader = c.leaderOf(0)!;
  c.down.add(f);
  await c.stop(f);
  // The power cut: the log writes since are gone, the state database holds what they carried.
  rmSync(wal, { recursive: true, force: true });
  cpSync(`${wal}.then`, wal, { recursive: true });
  const probe = await WalStore.open(wal);
  const logLast = probe.partition(0, IDS).lastIndex();
  probe.close();
  t.comment(`${f}: log up to ${logLast}; the leader's snapshot at ${leader.replica(0).log.snapshot().meta.index}, applied ${leader.replica(0).state.applied().index}`);
  t.ok(leader.replica(0).log.firstIndex() > logLast + 1, 'the leader compacted past the follower\'s log: it sends a snapshot');

  c.down.delete(f);
  let back = await c.start(f);
  t.ok(back.replica(0).state.applied().index > logLast, `${f}'s state (${back.replica(0).state.applied().index}) is ahead of its log (${logLast})`);
  const target = leader.replica(0).state.applied().index;
  // Caught up, or stopped (a failed loop turn closes its host).
  await c.until(() => closed(back) || (back.replica(0).log.snapshot().meta.index > logLast && back.replica(0).state.isOpen() && back.replica(0).state.applied().index >= target), `${f} caught up or stopped`);
  // The log records the snapshot before the image is moved into place (the same turn): let it end.
  if (!closed(back)) await c.quiet();
  t.notOk(closed(back), `${f}'s node host keeps running`);
  t.same(failures.map(String), [], 'no loop turn failed');
  if (closed(back)) {
    // What a supervisor does with a node that stopped: start it again.
    c.hosts.delete(f);
    back = await c.start(f);
  }
  t.equal(back.replica(0).halted, null, `${f}: partition 0 is not halted (${String(back.replica(0).halted)})`);
  if (back.replica(0).halted !== null) return;
  await c.until(() => back.replica(0).state.isOpen() && back.replica(0).state.applied().index >= target, `${f} applied ${target}`);
  // Every message's body reads back on this replica, byte for byte: from its row (installed from an
  // image) or from the entry its sequence names.
  const st = back.replica(0).state;
  const log = back.replica(0).log;
  t.comment(`${f}: snapshot at ${log.snapshot().meta.index}, log ${log.firstIndex()}..${log.lastIndex()}, kept ${log.keptBodies().length}, applied ${st.applied().index}`);
  const rows = st.sqlite.prepare('select seq, body from messages order by seq').all() as { seq: number; body: string | Buffer }[];
  const got = rows.map((row) => {
    if (typeof row.body !== 'string') return row.body.toString('utf8');
    const { index, slot } = bodyPlace(row.seq);
    const data = log.body(index)?.data;
    return data === undefined ? `<entry ${index} gone>` : bodyText(new EntryBodies(0, index, data).body(slot));
  });
  t.same(got, sent, 'the bodies sent');
});
