// The node host on three in-process nodes: elections in every partition, writes applied on every
// replica, linearizable reads, a leader lost and the others going on, a restarted node catching up by
// snapshot after compaction with identical state.
import { cpSync, existsSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import t, { type Test } from 'tap';
import { BrokerStateMachine, FORMAT, stateHash } from '../../src/store/broker/index.js';
import type { Message, NodeId } from '../../src/raft/index.js';
import { NotLeaderError } from '../../src/partition/errors.js';
import { STATE_COMMIT_MS, type NodeHost } from '../../src/partition/host.js';
import { partitionOf } from '../../src/partition/routing.js';
import { statePath } from '../../src/partition/snapshots.js';
import { IDS, LocalCluster, appliedIndex, queue, stillClusterLeftBehind, untickedCluster } from './host-helpers.js';

/**
 * A cluster of one partition (settings `extra`), led, with alice's queue 'q'. `send(n, label?)` sends
 * n single messages to it, each acknowledged.
 */
async function queueCluster(t: Test, extra: ConstructorParameters<typeof LocalCluster>[1]): Promise<{ c: LocalCluster; send: (n: number, label?: (i: number) => string) => Promise<void> }> {
  const c = new LocalCluster(1, extra);
  t.teardown(() => c.close());
  await c.startAll();
  await c.until(() => c.leaderOf(0) !== null, 'leader');
  await c.submit(0, 'alice', queue('q'));
  const send = async (n: number, label?: (i: number) => string): Promise<void> => {
    for (let i = 0; i < n; i++) t.ok((await c.submit(0, 'alice', { type: 'queue.send', name: 'q', messages: [{ body: `m${i}`, attributes: {} }] })).ok, ...(label === undefined ? [] : [label(i)]));
  };
  return { c, send };
}


/**
 * Whether two nodes' replicas of partition 0 applied up to the same entry. Housekeeping may append
 * an entry (a sweep, a clock step) at any time, so a state hash is compared only between replicas
 * in step: the check and the comparison after it run in one turn, with no entry applied between.
 */
const inStep = (a: NodeHost, b: NodeHost): boolean => appliedIndex(a.replica(0)) === appliedIndex(b.replica(0));

/** Waits until `back` applied what `leader` has applied now, and the two are in step (inStep). */
async function caughtUp(c: LocalCluster, back: NodeHost, leader: NodeHost, what: string): Promise<void> {
  const target = leader.replica(0).state.applied().index;
  await c.until(() => appliedIndex(back.replica(0)) >= target && inStep(back, leader), what);
}

/**
 * queueCluster with a local snapshot every 20 entries and 5 kept behind, and a follower (`lost`)
 * stopped while 60 sends went in: it needs an image to come back.
 */
async function followerLeftBehind(t: Test): Promise<{ c: LocalCluster; send: (n: number) => Promise<void>; leader: NodeHost; lost: NodeId }> {
  const { c, send } = await queueCluster(t, { snapshotEvery: 20, keepBehindSnapshot: 5, balanceLeaders: false });
  const leader = c.leaderOf(0)!;
  const lost = IDS.find((id) => id !== leader.opts.self)!;
  c.down.add(lost);
  await c.stop(lost);
  await send(60);
  return { c, send, leader, lost };
}

/** Puts a closed state's message table back in the rowid layout, as migration 001 made it. */
function toRowidLayout(path: string): void {
  const db = new Database(path);
  try {
    db.transaction(() => {
      db.exec(
        'create table messages_rowid (channel_id integer not null, seq integer not null, message_id text not null, body text not null, attributes text not null, sent_at integer not null, ' +
          'state integer not null, visible_at integer not null, delivery_count integer not null, lease_id integer not null, expires_at integer not null, constraint messages_pk primary key (channel_id, seq))',
      );
      db.exec('insert into messages_rowid select * from messages');
      db.exec('drop table messages');
      db.exec('alter table messages_rowid rename to messages');
      db.exec('create index messages_ready on messages (channel_id, state, seq)');
      db.exec('create index messages_due on messages (channel_id, state, visible_at)');
      db.exec('create index messages_expiry on messages (channel_id, expires_at)');
    })();
  } finally {
    db.close();
  }
}

t.test('every partition elects a leader and a write applies on all three replicas', async (t) => {
  const c = new LocalCluster(4, { balanceLeaders: false });
  t.teardown(() => c.close());
  await c.startAll();
  await c.until(() => [0, 1, 2, 3].every((p) => c.leaderOf(p) !== null), 'leaders everywhere');
  const r = await c.submit(2, 'alice', queue('orders'));
  t.ok(r.ok, 'created');
  const sent = await c.submit(2, 'alice', { type: 'queue.send', name: 'orders', messages: [{ body: 'hello', attributes: {} }] });
  t.ok(sent.ok);
  const leader = c.leaderOf(2)!;
  await c.until(() => [...c.hosts.values()].every((h) => h.replica(2).state.applied().index >= leader.replica(2).state.applied().index), 'followers applied');
  const hashes = new Set([...c.hosts.values()].map((h) => stateHash(h.replica(2).state.sqlite)));
  t.equal(hashes.size, 1, 'identical state on every replica');
  const stats = await leader.replica(2).read((s) => s.getQueue('orders', 'alice', Date.now()));
  t.ok(stats.ok && stats.value.stats.visible === 1, 'a linearizable read sees the write');
  const follower = [...c.hosts.values()].find((h) => h !== leader)!;
  await t.rejects(follower.replica(2).propose('alice', queue('x')), NotLeaderError, 'a follower refuses and names the leader');
});

t.test('a proposal or a read on an idle node goes out at once: it waits for no tick', async (t) => {
  // No node ticks: nothing but the proposal, the read and the peers' answers can run a loop turn.
  const c = new LocalCluster(1, { balanceLeaders: false });
  t.teardown(() => c.close());
  for (const id of IDS) await c.start(id, false);
  const first = c.hosts.get(IDS[0]!)!;
  first.replica(0).raw.campaign();
  first.schedule();
  await c.until(() => c.leaderOf(0) !== null, 'an elected leader');
  const leader = c.leaderOf(0)!;
  // The election's traffic is over: the new leader applied its first entry, and the answers to its
  // commit notice arrived.
  const last = leader.replica(0).raw.position().lastIndex;
  await c.until(() => appliedIndex(leader.replica(0)) === last, 'the first entry applied');
  await c.quiet();
  // Without a turn on its own, the entry would wait for a heartbeat that never comes, and the
  // proposal would end with an unknown outcome after its timeout.
  t.ok((await leader.replica(0).propose('alice', queue('q'))).ok, 'the proposal applied');
  const got = await leader.replica(0).read((s) => s.getQueue('q', 'alice', Date.now()));
  t.ok(got.ok, 'the read was confirmed by a round of its own');
});

t.test('an append the transport reports lost goes again at once: it waits for no heartbeat', async (t) => {
  // No node ticks: no heartbeat can free the follower's window of one append.
  const { c, leader } = await untickedCluster(t);
  const hosts = [...c.hosts.values()];
  const first = leader.replica(0).raw.position().lastIndex;
  await c.until(() => hosts.every((h) => appliedIndex(h.replica(0)) === first), 'the first entry applied everywhere');
  await c.quiet();
  const follower = hosts.find((h) => h !== leader)!;
  // The append to one follower is lost on the way; the other's acknowledgement commits the write.
  c.down.add(follower.opts.self);
  t.ok((await leader.replica(0).propose('alice', queue('q'))).ok);
  await c.quiet();
  c.down.delete(follower.opts.self);
  const last = leader.replica(0).raw.position().lastIndex;
  for (let i = 0; i < 3; i++) await c.quiet();
  t.ok(appliedIndex(follower.replica(0)) < last, 'the follower is left behind: nothing more goes to it');
  leader.reportLost(follower.opts.self, [0]);
  await c.until(() => appliedIndex(follower.replica(0)) === last, 'the follower applied the write');
  t.pass('caught up without a tick');
});

t.test("a partition's state commits what it applied once STATE_COMMIT_MS passed on the host's clock, and at close", async (t) => {
  // The test drives both the clock and the ticks: no node ticks on its own.
  let now = 1_700_000_000_000;
  const c = new LocalCluster(1, { balanceLeaders: false, now: () => now });
  t.teardown(() => c.close());
  for (const id of IDS) await c.start(id, false);
  c.hosts.get(IDS[0]!)!.replica(0).raw.campaign();
  c.hosts.get(IDS[0]!)!.schedule();
  await c.until(() => c.leaderOf(0) !== null, 'a leader');
  const hosts = [...c.hosts.values()];
  // The first ticks raise the partition's log format, an entry of its own: before the count below.
  await c.until(() => {
    for (const h of hosts) h.tick();
    return hosts.every((h) => h.replica(0).state.format() === FORMAT);
  }, 'the newest format everywhere');
  t.ok((await c.submit(0, 'alice', queue('orders'))).ok);
  const last = c.leaderOf(0)!.replica(0).raw.position().lastIndex;
  // Ticks while waiting: a follower the leader is still probing hears again only at a heartbeat.
  await c.until(() => {
    for (const h of hosts) h.tick();
    return hosts.every((h) => appliedIndex(h.replica(0)) === last);
  }, 'applied everywhere');
  // The clock stands still: ten ticks run turns (heartbeats and their answers), and none commits.
  for (let i = 0; i < 10; i++) {
    for (const h of hosts) h.tick();
    await c.quiet();
  }
  t.ok(hosts.every((h) => h.replica(0).state.uncommitted()), 'applied, not committed yet, on every replica');
  // The clock moves on: the next turn of each node commits.
  now += STATE_COMMIT_MS;
  for (const h of hosts) h.tick();
  await c.quiet();
  t.ok(hosts.every((h) => !h.replica(0).state.uncommitted()), 'committed once the time passed');
  t.ok((await c.submit(0, 'alice', { type: 'queue.send', name: 'orders', messages: [{ body: 'x', attributes: {} }] })).ok);
  const leader = c.leaderOf(0)!;
  t.ok(leader.replica(0).state.uncommitted());
  const at = leader.replica(0).state.applied().index;
  const path = leader.snapshots.statePath(0);
  await c.stop(leader.opts.self);
  const reopened = await BrokerStateMachine.open(path, 0);
  t.teardown(() => reopened.close());
  t.equal(reopened.applied().index, at, 'close committed it');
});

t.test('many concurrent writes share loop turns and all apply', async (t) => {
  // One partition, so that the counters see only these writes (another group's election would add a no-op).
  const c = new LocalCluster(1, { balanceLeaders: false });
  t.teardown(() => c.close());
  await c.startAll();
  await c.until(() => c.leaderOf(0) !== null, 'leader');
  const leader = c.leaderOf(0)!;
  await leader.replica(0).propose('alice', queue('q'));
  // The format raise (an entry of its own, at a tick once every voter was heard) is not among them.
  await c.until(() => leader.replica(0).state.format() === FORMAT, 'the newest format');
  const before = { ...leader.counters };
  // Deduplicated sends, each an entry of its own (plain sends share theirs: shared-entry.test.ts).
  const results = await Promise.all(
    Array.from({ length: 200 }, (_, i) => leader.replica(0).propose('alice', { type: 'queue.send', name: 'q', messages: [{ body: `m${i}`, attributes: {}, deduplicationId: `d${i}` }] })),
  );
  t.ok(results.every((r) => r.ok), '200 sends acknowledged');
  const persists = leader.counters.persists - before.persists;
  const entries = leader.counters.entries - before.entries;
  t.equal(entries, 200, 'one log entry per write');
  t.ok(persists <= 20, `the leader persisted 200 entries in ${persists} synced transactions (group commit)`);
});

t.test('the leader stops; the others elect a new one and go on; it comes back and catches up by snapshot', async (t) => {
  const { c, send } = await queueCluster(t, { snapshotEvery: 50, keepBehindSnapshot: 5 });
  const first = c.leaderOf(0)!;
  const lost = first.opts.self;
  c.down.add(lost);
  await c.stop(lost);
  await c.until(() => c.leaderOf(0) !== null, 'a new leader among the other two');
  t.not(c.leaderOf(0)!.opts.self, lost);
  // Enough writes for the survivors to snapshot and compact past what the stopped node has.
  await send(120, (i) => `write ${i} acknowledged by the two survivors`);
  const second = c.leaderOf(0)!;
  t.ok(second.replica(0).log.firstIndex() > 10, `the leader compacted its log (first index ${second.replica(0).log.firstIndex()})`);
  const images = (id: string): string[] => readdirSync(join(c.root, id, 'snapshots'));
  t.same(images(second.opts.self), [], 'a local snapshot copies nothing: the state database made durable is the snapshot');
  c.down.delete(lost);
  const back = await c.start(lost);
  await caughtUp(c, back, second, 'the restarted node caught up');
  t.ok(back.replica(0).log.snapshot().meta.index > 0, 'by a snapshot: an image made on demand by the leader');
  // A repeated snapshot message may have the node fetch a later image and delete it once it finds
  // its state past it: wait for that to settle. An image copied into place would stay for good.
  await c.until(() => images(lost).length === 0, 'no image left in the restarted node\'s snapshots folder');
  t.same(images(lost), [], 'moved into place, not copied');
  t.equal(stateHash(back.replica(0).state.sqlite), stateHash(second.replica(0).state.sqlite), 'identical state after the snapshot');
  const q = back.replica(0).state.getQueue('q', 'alice', Date.now());
  t.ok(q.ok && q.value.stats.visible === 120, 'all 120 messages are there');
});

t.test("a follower takes the snapshot at the image's own index; restarted right after installing it, it starts and catches up", async (t) => {
  // The leader makes an image when a follower asks, from its state as it is then: past the
  // snapshot's index. The follower restarts its log at the image's index (at the snapshot's, its state
  // was ahead of its log, and on restart the core refused it: "applied past the end of the log",
  // chaos seed 1111).
  const { c, send } = await queueCluster(t, { snapshotEvery: 50, keepBehindSnapshot: 5 });
  const lost = c.leaderOf(0)!.opts.self === IDS[0] ? IDS[1]! : IDS[0]!;
  c.down.add(lost);
  await c.stop(lost);
  await send(120);
  const leader = c.leaderOf(0)!;
  const recorded = leader.replica(0).log.snapshot().meta.index;
  t.ok(leader.replica(0).state.applied().index > recorded, 'the leader applied past its last snapshot');
  c.afterFetch = (self) => {
    if (self === lost) c.down.add(lost);
  };
  c.down.delete(lost);
  const back = await c.start(lost);
  const installed = (): boolean => {
    try {
      return back.replica(0).log.snapshot().meta.index > 0 && back.replica(0).state.applied().index === back.replica(0).log.lastIndex();
    } catch {
      return false; // the state database is closed while the image is moved into place
    }
  };
  await c.until(installed, 'the image installed');
  t.ok(back.replica(0).log.snapshot().meta.index > recorded, `the snapshot is at the image's index (${back.replica(0).log.snapshot().meta.index}), past the leader's (${recorded})`);
  t.equal(back.replica(0).log.snapshot().meta.index, back.replica(0).state.applied().index, 'the log starts where the state is');
  await c.stop(lost);
  c.afterFetch = null;
  c.down.delete(lost);
  const again = await c.start(lost);
  await caughtUp(c, again, leader, 'the restarted node caught up');
  t.equal(stateHash(again.replica(0).state.sqlite), stateHash(leader.replica(0).state.sqlite), 'identical state');
});

t.test('a node of an older build that installs an image in a newer format halts there at once, and reads nothing of it', async (t) => {
  const { c, send } = await queueCluster(t, { snapshotEvery: 50, keepBehindSnapshot: 5 });
  await c.until(() => c.leaderOf(0)?.replica(0).state.format() === FORMAT, 'the partition raised to the build\'s format');
  const lost = c.leaderOf(0)!.opts.self === IDS[0] ? IDS[1]! : IDS[0]!;
  c.down.add(lost);
  await c.stop(lost);
  await send(120);
  // The node rebuilt from nothing on an older build: its log starts behind the leader's, so it is
  // sent an image of the state, which is in a format that build cannot read.
  rmSync(join(c.root, lost), { recursive: true, force: true });
  c.down.delete(lost);
  const back = await c.start(lost, true, FORMAT - 1);
  await c.until(() => back.replica(0).halted !== null, 'the older build halts the partition');
  const r = back.replica(0);
  t.ok(r.log.snapshot().meta.index > 0, 'after installing the image');
  t.match(r.halted!.message, new RegExp(`format ${FORMAT}.*reads up to format ${FORMAT - 1}`), 'it says why');
  t.equal(r.state.format(), FORMAT);
  t.notOk(r.state.isOpen(), 'the image is not read: its tables may be a format this build does not know');
  t.equal(r.state.applied().index, r.log.snapshot().meta.index, 'nor applied to');
  t.ok((await c.submit(0, 'alice', { type: 'queue.send', name: 'q', messages: [{ body: 'after', attributes: {} }] })).ok, 'the other two take writes');
});

t.test('a node whose message table the raise left in the rowid layout rebuilds it as it starts, and goes on identical', async (t) => {
  const logged: { msg: string; obj: object }[] = [];
  const logger = { info: (obj: object, msg: string) => void logged.push({ obj, msg }), warn: () => undefined, error: () => undefined };
  const { c, send } = await queueCluster(t, { logger });
  await c.until(() => [...c.hosts.values()].every((h) => h.replica(0).state.format() === FORMAT), 'every replica raised to the build\'s format');
  await send(30);
  const lost = c.leaderOf(0)!.opts.self === IDS[0] ? IDS[1]! : IDS[0]!;
  await c.until(() => {
    const leader = c.leaderOf(0); // none for a moment while an election runs
    return leader !== null && appliedIndex(c.hosts.get(lost)!.replica(0)) === appliedIndex(leader.replica(0));
  }, 'the follower applied every write');
  t.equal(c.hosts.get(lost)!.replica(0).state.messageTable(), 'clustered', 'rebuilt at the raise, the table being small then');
  c.down.add(lost);
  await c.stop(lost);
  // As if the table had been too large to rebuild in the raise's apply.
  toRowidLayout(statePath(join(c.root, lost), 0));
  await send(5);
  c.down.delete(lost);
  const back = await c.start(lost);
  t.equal(back.replica(0).state.messageTable(), 'clustered', 'rebuilt before the partition ran');
  t.match(
    logged.filter((l) => /message table/.test(l.msg)),
    [{ msg: /partition 0: message table rebuilt in the clustered layout/, obj: { partition: 0, messages: 30 } }],
    'and said so, with the rows it moved',
  );
  await send(5);
  let leader: NodeHost | null = null;
  await c.until(() => (leader = c.leaderOf(0)) !== null && inStep(back, leader), 'the restarted node caught up');
  leader = leader!;
  t.equal(stateHash(back.replica(0).state.sqlite), stateHash(leader.replica(0).state.sqlite), 'identical state');
  const q = back.replica(0).state.getQueue('q', 'alice', Date.now());
  t.ok(q.ok && q.value.stats.visible === 40, 'all 40 messages there');
});

t.test('a follower whose state is ahead of its log after a crash starts, catches up and holds the same state', async (t) => {
  // A loop turn applies what it knows committed while its own write is being synced, so a crash can
  // leave a follower's state holding entries its log lost. Played here by giving a follower back an
  // older copy of its log, behind the state it applied.
  const { c, send } = await queueCluster(t, {});
  await send(10);
  const leader = c.leaderOf(0)!;
  const f = IDS.find((id) => id !== leader.opts.self)!;
  await c.until(() => appliedIndex(c.hosts.get(f)!.replica(0)) >= appliedIndex(leader.replica(0)), 'the follower applied the first sends');
  const wal = join(c.root, f, 'wal');
  const older = join(c.root, `${f}-wal-older`);
  const copiedLast = c.hosts.get(f)!.replica(0).log.lastIndex();
  await c.stop(f);
  cpSync(wal, older, { recursive: true });
  const back = await c.start(f);
  await send(15);
  await c.until(() => appliedIndex(back.replica(0)) >= appliedIndex(leader.replica(0)), 'the follower applied the later sends');
  await c.stop(f);
  rmSync(wal, { recursive: true });
  cpSync(older, wal, { recursive: true });
  const state = await BrokerStateMachine.open(join(c.root, f, 'state', 'p0.db'), 0);
  const stateApplied = state.applied().index;
  await state.close();
  t.ok(stateApplied > copiedLast, `the state (applied ${stateApplied}) is ahead of the log it restarts with (last ${copiedLast})`);
  const again = await c.start(f);
  await send(5);
  // Leadership may have moved meanwhile (the restarted node may be the partition's preferred leader):
  // wait until every replica applied the current leader's whole log.
  const settled = (): boolean => {
    const now = c.leaderOf(0);
    const last = now?.replica(0).raw.position().lastIndex;
    return last !== undefined && [...c.hosts.values()].every((h) => appliedIndex(h.replica(0)) === last);
  };
  await c.until(settled, 'every replica caught up');
  const hashes = new Set([...c.hosts.values()].map((h) => stateHash(h.replica(0).state.sqlite)));
  t.equal(hashes.size, 1, 'identical state on the three replicas: nothing applied twice, nothing missed');
  const q = again.replica(0).state.getQueue('q', 'alice', Date.now());
  t.equal(q.ok ? q.value.stats.visible : null, 30, 'all 30 messages are there, once');
});

/**
 * Node `who`'s image downloads from now on, by the ref each asked for; the first, once copied, is
 * held until release() (its snapshot message not yet stepped, as while a large image downloads).
 */
function holdFirstDownload(c: LocalCluster, who: NodeId): { asked: string[]; release: () => void; holding: () => boolean } {
  const asked: string[] = [];
  let holding = false;
  let release = (): void => undefined;
  const held = new Promise<void>((resolve) => (release = resolve));
  c.wrapFetch(who, (fetch) => async (peer, partition, ref, dest) => {
    const k = asked.push(ref);
    await fetch(peer, partition, ref, dest);
    if (k !== 1) return;
    holding = true;
    await held;
  });
  return { asked, release, holding: () => holding };
}


t.test('while an image made for a follower is in use, local snapshots keep the log after it and after what the follower holds; once every follower holds that far, they let it go', async (t) => {
  // Review finding: local snapshots are cheap and frequent, so a follower installing a large image
  // found the leader's log compacted past it and needed another image, and another. No node ticks
  // (no election, no re-sent snapshot on a slow machine): lost appends are reported by hand.
  const { c, leader, send, behind } = await stillClusterLeftBehind(t);
  const snap = leader.replica(0).log.snapshot().meta;
  const path = await leader.snapshots.imageFor(0, `p0-${snap.index}-${snap.term}`);
  t.ok(path !== null && existsSync(path), 'an image is made on demand');
  const imaged = BrokerStateMachine.imageApplied(path!).index;
  t.ok(imaged >= snap.index, 'it holds at least the snapshot asked for');
  await send(100);
  t.ok(leader.replica(0).log.snapshot().meta.index > imaged + 20, 'local snapshots went on meanwhile');
  t.ok(leader.replica(0).log.firstIndex() <= imaged + 1, `the log still holds every entry after the image (first ${leader.replica(0).log.firstIndex()}, image at ${imaged})`);
  t.equal(await leader.snapshots.imageFor(0, `p0-${snap.index}-${snap.term}`), path, 'the same image serves the same ref again');
  t.ok(existsSync(path!), 'and is still there');

  // The follower comes back and installs an image (a newer one: it asks for the newest snapshot).
  // Writes go on while it downloads, and nothing but the snapshot reaches it from the leader for
  // now: after the install it has entries to catch up on, and it stays where the image put it.
  const { asked, release } = holdFirstDownload(c, behind);
  const fetches = (): number => asked.length;
  let cut = true;
  const leaderSend = leader.opts.outbox.send.bind(leader.opts.outbox);
  leader.opts.outbox.send = (items) => leaderSend(cut ? items.filter((it) => it.message.to !== behind || it.message.type === 'snap') : items);
  c.down.delete(behind);
  const back = await c.start(behind, false);
  const raw = leader.replica(0).raw;
  const matchOf = (): number => raw.status().match.get(behind) ?? 0;
  leader.reportLost(behind, [0]);
  await c.until(() => fetches() === 1, `${behind} downloaded an image`);
  await send(30);
  release();
  await c.until(() => back.replica(0).log.snapshot().meta.index > 0 && matchOf() >= back.replica(0).log.snapshot().meta.index, `${behind} installed it and the leader knows`);
  // Review of ab24fce: retired at the install's acknowledgement, the image let the log go past the
  // follower, which then needed another.
  const installedAt = matchOf();
  await send(30);
  t.ok(leader.replica(0).log.snapshot().meta.index > installedAt + 20, 'the leader took local snapshots past the install');
  t.ok(leader.replica(0).log.firstIndex() <= installedAt + 1, `its log still holds every entry after what ${behind} holds (first ${leader.replica(0).log.firstIndex()}, held ${installedAt})`);
  cut = false;
  leader.reportLost(behind, [0]);
  await c.until(() => matchOf() >= raw.position().lastIndex, `${behind} holds the leader's whole log`);
  t.equal(fetches(), 1, 'it caught up from the log: one image in all');

  // Every follower holds the log past the image now: the next local snapshots compact it again.
  // Kept until the image went unused for five minutes, the log after it grew with every write.
  const caught = raw.position().lastIndex;
  await send(60);
  t.ok(leader.replica(0).log.firstIndex() > caught + 1, `local snapshots compact the log past where ${behind} caught up (first ${leader.replica(0).log.firstIndex()}, caught up at ${caught})`);
});

t.test('an image stays in use while its download goes on: after seven minutes of download, and a newer image made for another follower, the log after it is still there, and the follower catches up from it with one image', async (t) => {
  // Seen in stop 42: the leader refreshed an image's use only when a fetch asked for it, so after a
  // download of five minutes (a large state) it compacted its log past the image, and the follower
  // needed another image once it had installed that one. The monotonic clock is moved by hand.
  let skew = 0;
  const { c, leader, send, behind } = await stillClusterLeftBehind(t, () => performance.now() + skew);
  const { asked, release, holding } = holdFirstDownload(c, behind);
  c.down.delete(behind);
  const back = await c.start(behind, false);
  leader.reportLost(behind, [0]);
  await c.until(holding, `${behind} is downloading an image`);
  const images = readdirSync(join(c.root, leader.opts.self, 'snapshots')).filter((f) => f.startsWith('p0-serve-'));
  t.equal(images.length, 1, 'the leader made one image');
  const path = join(c.root, leader.opts.self, 'snapshots', images[0]!);
  const imaged = BrokerStateMachine.imageApplied(path).index;
  // A chunk leaves every minute (the snapshot route tells the host), and writes go on.
  for (let minute = 1; minute <= 6; minute++) {
    skew += 60_000;
    leader.snapshots.reading(0, path);
    await send(25);
  }
  t.ok(leader.replica(0).log.snapshot().meta.index > imaged + 100, 'local snapshots went on meanwhile');
  t.ok(leader.replica(0).log.firstIndex() <= imaged + 1, `the log still holds every entry after the image (first ${leader.replica(0).log.firstIndex()}, image at ${imaged})`);
  // Another follower (one that lost its disk, say) asks for the newest snapshot meanwhile: a newer
  // image is made for it, and the first, still downloading, stays in use (it was retired before).
  const newest = leader.replica(0).log.snapshot().meta;
  const second = await leader.snapshots.imageFor(0, `p0-${newest.index}-${newest.term}`);
  t.ok(second !== null && second !== path, 'a newer image is made for the newer snapshot');
  skew += 60_000;
  leader.snapshots.reading(0, path);
  await send(25);
  // A local snapshot taken since (compactions run apart from the writes), and the log kept by it:
  await c.until(() => leader.replica(0).log.snapshot().meta.index > newest.index, 'a local snapshot after the newer image');
  t.ok(leader.replica(0).log.firstIndex() <= imaged + 1, `the log after the first image is still kept (first ${leader.replica(0).log.firstIndex()}, image at ${imaged})`);
  release();
  const raw = leader.replica(0).raw;
  await c.until(() => back.replica(0).log.snapshot().meta.index > 0 && (raw.status().match.get(behind) ?? 0) >= back.replica(0).log.snapshot().meta.index, `${behind} installed it and the leader knows`);
  leader.reportLost(behind, [0]);
  await c.until(() => (raw.status().match.get(behind) ?? 0) >= raw.position().lastIndex, `${behind} holds the leader's whole log`);
  t.strictSame(asked.length, 1, 'it caught up from the log: one image in all');
});

t.test('an older image that no download read for two minutes is let go when a newer one is made: images do not pile up, nor does the log kept for them', async (t) => {
  // Review of 3d6c930: kept until a compaction found them unused for five minutes, an image made
  // at each newer ask of a follower whose downloads kept failing piled up (each a copy of the state).
  let skew = 0;
  const { c, leader, send, behind } = await stillClusterLeftBehind(t, () => performance.now() + skew);
  const { release, holding } = holdFirstDownload(c, behind);
  t.teardown(release);
  c.down.delete(behind);
  await c.start(behind, false);
  leader.reportLost(behind, [0]);
  await c.until(holding, `${behind} downloaded an image, its download now silent`);
  const first = BrokerStateMachine.imageApplied(join(c.root, leader.opts.self, 'snapshots', readdirSync(join(c.root, leader.opts.self, 'snapshots')).find((f) => f.startsWith('p0-serve-'))!)).index;
  skew += 3 * 60_000;
  await send(25);
  t.ok(leader.replica(0).log.firstIndex() <= first + 1, `within five minutes of its last use the log after the first image is kept (first ${leader.replica(0).log.firstIndex()}, image at ${first})`);
  const newest = leader.replica(0).log.snapshot().meta;
  t.ok((await leader.snapshots.imageFor(0, `p0-${newest.index}-${newest.term}`)) !== null, 'a newer image is made for a newer snapshot');
  await send(25);
  // Compactions run apart from the writes: the next one lets the log go.
  await c.until(() => leader.replica(0).log.firstIndex() > first + 1, `the log compacted past the first image, at ${first}`);
  t.pass('the first image, unread for three minutes, went with the log kept for it');
});

t.test('with a majority down, a write is not acknowledged', async (t) => {
  const c = new LocalCluster(1, { balanceLeaders: false });
  t.teardown(() => c.close());
  await c.startAll();
  await c.until(() => c.leaderOf(0) !== null, 'leader');
  const leader = c.leaderOf(0)!;
  for (const id of IDS) if (id !== leader.opts.self) c.down.add(id);
  const outcome = await leader
    .replica(0)
    .propose('alice', queue('never'))
    .then(
      () => 'acknowledged',
      (err: Error) => err.name,
    );
  t.not(outcome, 'acknowledged', `the write failed with ${outcome}`);
});

t.test('leaders spread over the three nodes, and a restarted node takes its share back', async (t) => {
  const c = new LocalCluster(6);
  t.teardown(() => c.close());
  await c.startAll();
  const share = (): Map<string, number> => {
    const m = new Map<string, number>();
    for (let p = 0; p < 6; p++) {
      const l = c.leaderOf(p);
      if (l !== null) m.set(l.opts.self, (m.get(l.opts.self) ?? 0) + 1);
    }
    return m;
  };
  const balanced = (): boolean => IDS.every((id) => share().get(id) === 2);
  await c.until(balanced, 'two partitions led by each node');
  t.ok(balanced(), `shares: ${JSON.stringify([...share()])}`);
  const victim = IDS[0]!;
  c.down.add(victim);
  await c.stop(victim);
  await c.until(() => [0, 1, 2, 3, 4, 5].every((p) => c.leaderOf(p) !== null), 'the others lead everything');
  t.notOk(share().has(victim));
  c.down.delete(victim);
  await c.start(victim);
  await c.until(balanced, 'the restarted node leads its two partitions again');
  t.ok(balanced());
});

t.test('a planned stop hands leadership over first', async (t) => {
  const c = new LocalCluster(3);
  t.teardown(() => c.close());
  await c.startAll();
  await c.until(() => [0, 1, 2].every((p) => c.leaderOf(p) !== null), 'leaders');
  const node = c.hosts.get(IDS[0]!)!;
  await c.until(() => node.replicas.some((r) => r.isLeader()), 'node 1 leads something');
  await node.leadership.handOver(30_000); // bounded by what the test waits for, not by a slow machine's 3 s
  t.notOk(node.replicas.some((r) => r.isLeader()), 'it leads nothing any more');
  await c.until(() => [0, 1, 2].every((p) => c.leaderOf(p) !== null && c.leaderOf(p) !== node), 'the others lead every partition');
  // Review finding: peers' balancing handed partitions straight back to the leaving node. Two
  // balancing rounds of each peer later (counted, not guessed from a pause a slow machine could fill
  // with fewer rounds), it still leads nothing.
  const peers = [...c.hosts.values()].filter((h) => h !== node);
  const rounds = new Map(peers.map((h) => [h, 0]));
  for (const h of peers) {
    const balance = h.leadership.balance.bind(h.leadership);
    h.leadership.balance = () => {
      rounds.set(h, rounds.get(h)! + 1);
      balance();
    };
  }
  await c.until(() => [...rounds.values()].every((n) => n >= 2), 'two balancing rounds on each peer');
  t.notOk(node.replicas.some((r) => r.isLeader()), 'no leadership came back while leaving');
});

t.test('the leader sweeps on its own: an exhausted lease is dead-lettered with no receive', async (t) => {
  const c = new LocalCluster(1, { balanceLeaders: false });
  t.teardown(() => c.close());
  await c.startAll();
  await c.until(() => c.leaderOf(0) !== null, 'leader');
  await c.submit(0, 'alice', { ...queue('jobs'), visibilityTimeoutSeconds: 1, maxDeliveries: 1 });
  await c.submit(0, 'alice', { type: 'queue.send', name: 'jobs', messages: [{ body: 'poison', attributes: {} }] });
  const r = await c.submit(0, 'alice', { type: 'receive', channel: { queue: 'jobs' }, maxMessages: 1, visibilityTimeoutSeconds: null });
  t.ok(r.ok);
  // Nobody receives again; the lease runs out after a second and the leader's sweep drops the message.
  const rows = (): number => (c.leaderOf(0)!.replica(0).state.sqlite.prepare('select count(*) as n from messages').get() as { n: number }).n;
  await c.until(() => c.leaderOf(0) !== null && rows() === 0, 'the sweep removed the message');
  const q = c.leaderOf(0)!.replica(0).state.getQueue('jobs', 'alice', Date.now());
  t.ok(q.ok && q.value.stats.dropped === 1, 'counted as dropped');
  t.pass('dropped and counted without any receive');
});

t.test('an acknowledged write survives the loss of any one node', async (t) => {
  const c = new LocalCluster(1, { balanceLeaders: false });
  t.teardown(() => c.close());
  await c.startAll();
  await c.until(() => c.leaderOf(0) !== null, 'leader');
  await c.submit(0, 'alice', queue('q'));
  const acked: string[] = [];
  for (let i = 0; i < 20; i++) {
    const r = await c.submit(0, 'alice', { type: 'queue.send', name: 'q', messages: [{ body: `m${i}`, attributes: {} }] });
    if (r.ok) acked.push(`m${i}`);
  }
  t.equal(acked.length, 20);
  for (const lost of IDS) {
    c.down.add(lost);
    await c.stop(lost);
    // The two others still hold every acknowledged write: a majority had each one before its 2xx.
    await c.until(() => c.leaderOf(0) !== null, `a leader without ${lost}`);
    const r = await c.submit(0, 'alice', { type: 'receive', channel: { queue: 'q' }, maxMessages: 100, visibilityTimeoutSeconds: 1 });
    const bodies = r.ok ? (r.value as { messages: { body: string }[] }).messages.map((m) => m.body) : [];
    t.same(bodies.sort(), [...acked].sort(), `without ${lost}: all ${acked.length} acknowledged messages are there`);
    c.down.delete(lost);
    await c.start(lost);
    // Before the next round: the node caught up, and the leases of 1 s ran out (every message
    // visible again, as the leader's state tells, rather than a pause assumed long enough).
    const target = c.leaderOf(0)!.replica(0).state.applied().index;
    await c.until(() => appliedIndex(c.hosts.get(lost)!.replica(0)) >= target, `${lost} caught up`);
    await c.until(() => {
      const q = c.leaderOf(0)?.replica(0).state.getQueue('q', 'alice', Date.now());
      return q !== undefined && q.ok && q.value.stats.visible === acked.length;
    }, 'every lease ran out');
  }
});

t.test('a kept tail longer than the snapshot interval neither retriggers compaction nor stops the node', async (t) => {
  // Review finding: with keepBehindSnapshot >= snapshotEvery the next Ready snapshotted again at the
  // same index, deleted the recorded image and stopped every node.
  const c = new LocalCluster(1, { snapshotEvery: 20, keepBehindSnapshot: 1000, balanceLeaders: false });
  t.teardown(() => c.close());
  await c.startAll();
  await c.until(() => c.leaderOf(0) !== null, 'leader');
  await c.submit(0, 'alice', queue('q'));
  for (let i = 0; i < 60; i++) t.ok((await c.submit(0, 'alice', { type: 'queue.send', name: 'q', messages: [{ body: `m${i}`, attributes: {} }] })).ok);
  const leader = c.leaderOf(0)!;
  t.ok(leader.replica(0).log.snapshot().meta.index >= 40, `snapshots were taken (last at ${leader.replica(0).log.snapshot().meta.index})`);
  t.equal(leader.replica(0).log.firstIndex(), 1, 'the kept tail holds the whole short log');
});

/** Four partitions with their leaders, and alice's queue 'graveyard' (its partition `pDead`) to dead-letter into. */
async function graveyardCluster(t: Test): Promise<{ c: LocalCluster; pDead: number }> {
  const c = new LocalCluster(4);
  t.teardown(() => c.close());
  await c.startAll();
  await c.until(() => [0, 1, 2, 3].every((p) => c.leaderOf(p) !== null), 'leaders');
  const pDead = partitionOf('graveyard', 4);
  t.ok((await c.submit(pDead, 'alice', queue('graveyard'))).ok);
  return { c, pDead };
}

t.test('a dead letter reaches its dead-letter queue in another partition', async (t) => {
  const { c, pDead } = await graveyardCluster(t);
  const pJobs = partitionOf('jobs', 4);
  t.not(pJobs, pDead, 'the queue and its dead-letter queue live in different partitions');
  t.ok((await c.submit(pJobs, 'alice', { ...queue('jobs'), visibilityTimeoutSeconds: 1, maxDeliveries: 1, deadLetterQueue: 'graveyard' })).ok);
  const sent = await c.submit(pJobs, 'alice', { type: 'queue.send', name: 'jobs', messages: [{ body: 'poison', attributes: { k: 'v' } }] });
  const messageId = sent.ok ? (sent.value as { items: { messageId: string }[] }).items[0]!.messageId : '';
  t.ok((await c.submit(pJobs, 'alice', { type: 'receive', channel: { queue: 'jobs' }, maxMessages: 1, visibilityTimeoutSeconds: null })).ok);
  // Nobody acks: the lease runs out, the sweep dead-letters it, the forwarder delivers it.
  const visibleInDlq = (): boolean => {
    const q = c.leaderOf(pDead)?.replica(pDead).state.getQueue('graveyard', 'alice', Date.now());
    return q !== undefined && q.ok && q.value.stats.visible === 1;
  };
  await c.until(visibleInDlq, 'the message is in the dead-letter queue');
  const r = await c.submit(pDead, 'alice', { type: 'receive', channel: { queue: 'graveyard' }, maxMessages: 10, visibilityTimeoutSeconds: null });
  const got = r.ok ? (r.value as { messages: { messageId: string; body: string; attributes: Record<string, string> }[] }).messages : [];
  t.same(got.map((m) => [m.messageId, m.body, m.attributes]), [[messageId, 'poison', { k: 'v' }]], 'same id, body and attributes');
  await c.until(() => c.leaderOf(pJobs)?.replica(pJobs).state.outbox(10).length === 0, 'the outbox is cleared');
  t.pass('delivered once, outbox empty');
});

t.test('the copies of one publish dead-lettered from two subscriptions sharing a dead-letter queue both reach it (format 12: the forwarder names each outbox row)', async (t) => {
  const { c, pDead } = await graveyardCluster(t);
  const pTopic = partitionOf('alerts', 4);
  t.ok((await c.submit(pTopic, 'alice', { type: 'topic.create', name: 'alerts', subscribe: 'anyone' })).ok);
  for (const name of ['pager', 'mail']) {
    const made = await c.submit(pTopic, 'alice', { type: 'subscription.create', topic: 'alerts', name, visibilityTimeoutSeconds: 1, maxDeliveries: 1, deadLetterQueue: 'graveyard', filter: null });
    t.ok(made.ok, `subscription ${name}`);
  }
  t.ok((await c.submit(pTopic, 'alice', { type: 'topic.publish', name: 'alerts', messages: [{ body: 'disk full', attributes: {} }] })).ok);
  for (const subscription of ['pager', 'mail']) t.ok((await c.submit(pTopic, 'alice', { type: 'receive', channel: { topic: 'alerts', subscription }, maxMessages: 1, visibilityTimeoutSeconds: null })).ok);
  // Nobody acks: both leases run out, both copies are dead-lettered, the forwarder delivers each.
  const visible = (): number => {
    const q = c.leaderOf(pDead)?.replica(pDead).state.getQueue('graveyard', 'alice', Date.now());
    return q !== undefined && q.ok ? q.value.stats.visible : 0;
  };
  await c.until(() => visible() === 2 && c.leaderOf(pTopic)?.replica(pTopic).state.outbox(10).length === 0, 'both copies in the dead-letter queue, the outbox cleared');
  const r = await c.submit(pDead, 'alice', { type: 'receive', channel: { queue: 'graveyard' }, maxMessages: 10, visibilityTimeoutSeconds: null });
  const got = r.ok ? (r.value as { messages: { messageId: string; body: string }[] }).messages : [];
  t.equal(got.length, 2);
  t.equal(new Set(got.map((m) => m.messageId)).size, 1, 'one publish: the two copies carry its message id');
});

t.test('a snapshot message repeated while its image is being fetched waits for the fetch (chaos seed 3315: the image was renamed under a pending install)', async (t) => {
  // The fetched file is in place under the message's ref before the fetch resolves and renames it to
  // the image's own index. A repeat of the message in between found the file and went to the core;
  // the install that followed looked for the file the fetch had renamed meanwhile: ENOENT, and the
  // node stopped. Played here in that order: the repeat once the file is in place, the fetch
  // resolving only once the install has begun.
  const { c, send } = await queueCluster(t, { snapshotEvery: 50, keepBehindSnapshot: 5, balanceLeaders: false });
  const lost = c.leaderOf(0)!.opts.self === IDS[0] ? IDS[1]! : IDS[0]!;
  c.down.add(lost);
  await c.stop(lost);
  await send(120);
  const leader = c.leaderOf(0)!;
  t.ok(leader.replica(0).state.applied().index > leader.replica(0).log.snapshot().meta.index, 'the leader applied past its snapshot: the fetched image will be renamed');
  let snap: Message | null = null;
  const leaderOutbox = leader.opts.outbox;
  const leaderSend = leaderOutbox.send.bind(leaderOutbox);
  leaderOutbox.send = (items) => {
    for (const it of items) if (it.message.type === 'snap' && it.message.to === lost) snap = it.message;
    leaderSend(items);
  };
  let installBegan = (): void => undefined;
  const installing = new Promise<void>((resolve) => (installBegan = resolve));
  const install = BrokerStateMachine.installSnapshot.bind(BrokerStateMachine);
  BrokerStateMachine.installSnapshot = async (db: string, image: string): Promise<void> => {
    if (db.includes(`/${lost}/`)) {
      installBegan();
      await new Promise((r) => setTimeout(r, 20)); // the fetch's own continuation runs meanwhile
    }
    return install(db, image);
  };
  t.teardown(() => {
    BrokerStateMachine.installSnapshot = install;
  });
  let repeated = false;
  c.wrapFetch(lost, (fetch) => async (peer, partition, ref, dest) => {
    await fetch(peer, partition, ref, dest);
    if (snap !== null && !repeated) {
      repeated = true;
      c.hosts.get(lost)!.receive(leader.opts.self, [{ partition, message: snap }], FORMAT);
      await Promise.race([installing, new Promise((r) => setTimeout(r, 500))]);
    }
  });
  c.down.delete(lost);
  const back = await c.start(lost);
  await caughtUp(c, back, leader, 'the restarted node caught up by the image');
  t.ok(repeated, 'the message was repeated during the fetch');
  t.equal(stateHash(back.replica(0).state.sqlite), stateHash(leader.replica(0).state.sqlite), 'and holds the same state');
});

t.test('while an image downloads, a snapshot message for a newer one starts no second download: the first is installed, and the log does the rest', async (t) => {
  // A leader asks a silent follower again after two election timeouts, with its newest snapshot:
  // under writes, a newer one than the follower is downloading. A second download made the leader
  // copy its state again and shared the link with the first, each slower, inviting a third.
  const { c, send, leader, lost } = await followerLeftBehind(t);
  const refsSent: string[] = [];
  const leaderSend = leader.opts.outbox.send.bind(leader.opts.outbox);
  leader.opts.outbox.send = (items) => {
    for (const it of items) if (it.message.type === 'snap' && it.message.to === lost) refsSent.push(new TextDecoder().decode(it.message.snapshot.data));
    leaderSend(items);
  };
  const { asked, release } = holdFirstDownload(c, lost);
  c.down.delete(lost);
  const back = await c.start(lost);
  await c.until(() => asked.length === 1, 'the first download began');
  await send(40);
  await c.until(() => refsSent.some((ref) => ref !== asked[0]), 'the leader asked again, with a newer snapshot');
  await new Promise((r) => setImmediate(r)); // the message is delivered on the next round
  t.equal(asked.length, 1, `no second download while the first runs (asked ${JSON.stringify(asked)})`);
  release();
  await caughtUp(c, back, leader, 'the restarted node caught up');
  t.equal(asked.length, 1, 'one download in all: the log after the image did the rest');
  t.equal(stateHash(back.replica(0).state.sqlite), stateHash(leader.replica(0).state.sqlite), 'the same state as the leader');
});

t.test("a snapshot message from a new leader fetches at once, while a download from the old one is held", async (t) => {
  // Review of 55c0492: ignoring every message while any download ran left the new leader's
  // snapshot waiting for the old leader's download, whose message the core then drops (an older term).
  const { c, send, leader: first, lost } = await followerLeftBehind(t);
  const { asked, release, holding } = holdFirstDownload(c, lost);
  t.teardown(release);
  c.down.delete(lost);
  const back = await c.start(lost);
  await c.until(holding, `${lost} downloaded an image from ${first.opts.self}, not yet stepped`);
  // Local snapshots go past the one being downloaded, so the next leader names a newer one.
  await send(30);
  c.down.add(first.opts.self);
  await c.stop(first.opts.self);
  await c.until(() => c.leaderOf(0) !== null, 'a new leader');
  const second = c.leaderOf(0)!;
  await send(10);
  await caughtUp(c, back, second, `${lost} caught up from the new leader, the first download still held`);
  t.equal(asked.length, 2, `a second download, from ${second.opts.self} (asked ${JSON.stringify(asked)})`);
  t.equal(stateHash(back.replica(0).state.sqlite), stateHash(second.replica(0).state.sqlite), 'the same state as the new leader');
});
