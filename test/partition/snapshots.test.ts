// Snapshots.receive against a stand-in for the replica's Raft core: which snapshot message it steps
// once an image is here. The rest of Snapshots runs in a cluster (host.test.ts, host-bodies.test.ts).
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { MessageType, nodeId, type Message, type NodeId } from '../../src/raft/index.js';
import type { PartitionReplica } from '../../src/partition/replica.js';
import { Snapshots, snapshotPath } from '../../src/partition/snapshots.js';
import { BrokerStateMachine, FORMAT } from '../../src/store/broker/index.js';
import type { WalStore } from '../../src/store/wal/index.js';
import { TestStore, queue } from '../store/broker/helpers.js';

const [n1, n2, n3] = ['n1', 'n2', 'n3'].map(nodeId) as [NodeId, NodeId, NodeId];
type SnapMessage = Extract<Message, { type: 'snap' }>;

t.test("the same snapshot from a new leader while the old leader's image downloads: the new leader's message is stepped once the image is here, and nothing is fetched twice", async (t) => {
  // Before, the download stepped its own message, from the old leader, which the core drops (an
  // older term); the new leader asked again, and the image, already renamed to its own index, was
  // fetched again.
  const dir = mkdtempSync(join(tmpdir(), 'mom-snapshots-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  mkdirSync(join(dir, 'snapshots'));
  // A leader's image, made when the follower asked: it holds entries 1 and 2, past the snapshot at 1
  // that the messages name, so the follower takes the snapshot at the image's own index.
  const leaderState = await TestStore.open(0);
  t.teardown(() => leaderState.close());
  leaderState.must('alice', queue('q'));
  const image = join(dir, 'image.db');
  await leaderState.sm.snapshotTo(image);
  t.strictSame(BrokerStateMachine.imageApplied(image), { index: 2, term: 1 }, 'the image holds entries 1 and 2');

  const fetched: NodeId[] = [];
  let release = (): void => undefined;
  const held = new Promise<void>((resolve) => (release = resolve));
  const snapshots = new Snapshots(
    { replicas: [], logStore: {} as WalStore, readable: () => FORMAT, elapsed: () => 0, isClosed: () => false, schedule: () => undefined },
    {
      dataDir: dir,
      voters: [n1, n2, n3],
      fetch: async (peer, _partition, _ref, dest) => {
        fetched.push(peer);
        copyFileSync(image, dest);
        await held;
      },
    },
  );
  const stepped: SnapMessage[] = [];
  // What receive() reads of a replica: its core's commit index, and whether its state is open.
  const replica = {
    partition: 0,
    raw: { step: (m: SnapMessage) => void stepped.push(m), position: () => ({ committed: -1 }) },
    state: { isOpen: () => false },
  } as unknown as PartitionReplica;
  const snap = (from: NodeId, term: number): SnapMessage => ({
    type: MessageType.Snap,
    from,
    to: n2,
    term,
    snapshot: { meta: { index: 1, term: 1, voters: [n1, n2, n3] }, data: new TextEncoder().encode('p0-1-1') },
  });

  snapshots.receive(n1, replica, snap(n1, 3));
  snapshots.receive(n3, replica, snap(n3, 4));
  snapshots.receive(n1, replica, snap(n1, 3));
  t.strictSame(fetched, [n1], 'one download, from the first leader to ask');
  t.equal(stepped.length, 0, 'nothing stepped while it downloads');
  release();
  while (stepped.length === 0) await new Promise((resolve) => setImmediate(resolve));
  t.strictSame(
    stepped.map((m) => `${m.from} ${m.term}`),
    [`${n3} 4`],
    "once it is here, the new leader's message is stepped (the core would drop the old leader's)",
  );
  const { meta, data } = stepped[0]!.snapshot;
  t.strictSame({ index: meta.index, term: meta.term, ref: new TextDecoder().decode(data) }, { index: 2, term: 1, ref: 'p0-2-1' }, "at the image's own index");
  t.ok(existsSync(snapshotPath(dir, 'p0-2-1')) && !existsSync(snapshotPath(dir, 'p0-1-1')), 'under whose name the image waits for its install');
});
