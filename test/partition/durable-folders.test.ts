// What a power cut must not take from a node's data folder, and what a crash leaves there: the
// folders a node makes (its log's, its state's, its images') and the state's files are entries of
// their parents, durable only once the parent is fsynced; half-made images go at the next start. test/chaos/lose-unsynced.c treats such changes as durable at once, so the
// crash order is checked here, through a recording file system (test/store/fs-recorder.ts).
import { mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import t from 'tap';
import { NodeHost, type Outbox } from '../../src/partition/host.js';
import { nodeId, type NodeId } from '../../src/raft/index.js';
import { fsRecorder } from '../store/fs-recorder.js';
import { TestStore, queue } from '../store/broker/helpers.js';

const voters = ['n1', 'n2', 'n3'].map(nodeId) as NodeId[];
const outbox: Outbox = { send: () => undefined, forward: () => Promise.reject(new Error('no peers')), fetchSnapshot: () => Promise.reject(new Error('no peers')) };

t.test('a node opened on a fresh data folder records the folders it makes in their parents', async (t) => {
  const root = mkdtempSync(join(tmpdir(), 'mom-folders-'));
  t.teardown(() => rmSync(root, { recursive: true, force: true }));
  const rec = fsRecorder();
  const mocked = await t.mockImport<typeof import('../../src/partition/host.js')>('../../src/partition/host.js', rec.mocks);
  const dataDir = join(root, 'n1');
  const host = await mocked.NodeHost.open({ self: voters[0]!, voters, partitions: 2, dataDir, outbox });
  await host.close();
  // Each folder is recorded in its parent right when it is made: the next event is that fsync.
  t.strictSame(rec.after(`mkdir ${join(dataDir, 'state')}`).slice(0, 3), [`mkdir ${join(dataDir, 'state')}`, `fsync ${dataDir}`, `fsync ${root}`], 'state/ recorded in the data folder, made with it, and the data folder in its parent');
  for (const sub of ['snapshots', 'wal']) {
    t.strictSame(rec.after(`mkdir ${join(dataDir, sub)}`).slice(0, 2), [`mkdir ${join(dataDir, sub)}`, `fsync ${dataDir}`], `${sub}/ recorded in the data folder`);
  }
});

t.test('a node starting removes the images a crash left half made: served ones and downloads', async (t) => {
  const root = mkdtempSync(join(tmpdir(), 'mom-leftovers-'));
  t.teardown(() => rmSync(root, { recursive: true, force: true }));
  const snapshots = join(root, 'snapshots');
  mkdirSync(snapshots, { recursive: true });
  for (const f of ['p0-serve-3.db', 'p0-serve-4.db.tmp', 'p1-120-2.db.part', 'p1-90-2.db']) writeFileSync(join(snapshots, f), 'x');
  const host = await NodeHost.open({ self: voters[0]!, voters, partitions: 2, dataDir: root, outbox });
  await host.close();
  // A fetched image the log does not name was never installed: the leader sends its snapshot again
  // where one is needed (review of 2026-12-07; it was kept until a local snapshot past it).
  t.strictSame(readdirSync(snapshots).sort(), [], 'nothing is left: an image fetched whole that the log does not name goes too');
});

t.test("durable() syncs the state's -wal file, then the database, then their folder (a -wal made anew at an open is an entry of it)", async (t) => {
  const rec = fsRecorder();
  const images = await t.mockImport<typeof import('../../src/store/broker/images.js')>('../../src/store/broker/images.js', rec.mocks);
  const s = await TestStore.open(0);
  t.teardown(() => s.close());
  s.must('alice', queue('q'));
  s.sm.commit();
  const path = join(s.dir, 'state.db');
  await images.syncStateFiles(path);
  t.strictSame(rec.events, [`fsync ${path}-wal`, `fsync ${path}`, `fsync ${dirname(path)}`]);
});

// Review finding: a second process started on a folder in use (a second `npm start`, `npm run node`
// for a node that runs) cleared the snapshot images of snapshots/ before it found the log's LOCK
// taken: the images the running node was serving to a follower, or fetching from its leader.
t.test('a second open of a folder in use fails on the log’s lock before it touches the running node’s images', async (t) => {
  const root = mkdtempSync(join(tmpdir(), 'mom-folders-'));
  t.teardown(() => rmSync(root, { recursive: true, force: true }));
  const dataDir = join(root, 'n1');
  const running = await NodeHost.open({ self: voters[0]!, voters, partitions: 1, dataDir, outbox });
  t.teardown(() => running.close());
  const images = ['p0-serve-5-1.db', 'p0-1-7.db.part'];
  for (const f of images) writeFileSync(join(dataDir, 'snapshots', f), 'an image in use');
  await t.rejects(NodeHost.open({ self: voters[0]!, voters, partitions: 1, dataDir, outbox }), 'the second open is refused');
  t.same(readdirSync(join(dataDir, 'snapshots')).filter((f) => images.includes(f)).sort(), [...images].sort(), 'the running node’s images are still there');
});
