// Regressions found by the chaos runs' power-loss fault, reproduced at the lowest level: a child
// process runs the node's own code under the storage fault layer (disk-faults.ts), is SIGKILLed, and
// everything it had not fsynced is lost. The layer is built with the machine's C compiler: without
// one each test is skipped (test/tools.ts).
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import { checkClusterIdentity, type NodeConfig } from '../../src/cluster/config.js';
import { needTool } from '../tools.js';
import { loseUnsynced, runUntilReadyThenKill } from './disk-faults.js';

/** A data folder for the child and an undo folder for the fault layer, removed after the test. */
function folders(t: Test): { dataDir: string; undo: string } {
  const base = mkdtempSync(join(tmpdir(), 'mom-powercut-'));
  t.teardown(() => rmSync(base, { recursive: true, force: true }));
  return { dataDir: join(base, 'data'), undo: join(base, 'undo') };
}

t.test('the cluster identity file written at a first start survives a power cut (it was written without fsync: the node then refused to start)', async (t) => {
  if (needTool(t, 'cc') === null) return;
  const { dataDir, undo } = folders(t);
  const cfg = { dataDir, partitions: 4, nodeId: 'n1', peers: [{ id: 'n1' }, { id: 'n2' }, { id: 'n3' }], clusterSecret: 'c'.repeat(16) } as unknown as NodeConfig;
  await runUntilReadyThenKill(
    `import { checkClusterIdentity } from './src/cluster/config.ts';
     checkClusterIdentity(${JSON.stringify(cfg)});
     console.log('ready'); setInterval(() => {}, 1000);`,
    dataDir,
    undo,
  );
  loseUnsynced(dataDir, undo);
  t.doesNotThrow(() => checkClusterIdentity(cfg), 'the restarted node reads its identity');
  t.throws(() => checkClusterIdentity({ ...cfg, partitions: 8 }), /4 partitions/, 'and still guards it');
});

t.test('Raft log: a turn that only moves the commit index is not synced; a power cut may take it back, never an entry or a vote', async (t) => {
  if (needTool(t, 'cc') === null) return;
  const { dataDir, undo } = folders(t);
  const file = join(dataDir, 'wal');
  await runUntilReadyThenKill(
    `import { mkdirSync } from 'node:fs';
     import { WalStore } from './src/store/wal/index.ts';
     mkdirSync(${JSON.stringify(dataDir)}, { recursive: true });
     const store = await WalStore.open(${JSON.stringify(file)});
     store.partition(0, ['a', 'b', 'c']);
     const e = (i) => ({ index: i, term: 2, kind: 0, data: new TextEncoder().encode('entry ' + i) });
     store.persist([{ partition: 0, hardState: { term: 2, vote: 'a', commit: 1 }, entries: [e(1), e(2), e(3)], snapshot: null }], true);
     store.persist([{ partition: 0, hardState: { term: 2, vote: 'a', commit: 3 }, entries: [], snapshot: null }], false);
     console.log(store.partition(0, ['a', 'b', 'c']).hardState().commit === 3 ? 'ready' : 'not written');
     setInterval(() => {}, 1000);`,
    dataDir,
    undo,
  );
  const lost = loseUnsynced(dataDir, undo);
  t.ok(lost.records > 0, 'the commit-only turn was written without an fsync, and lost');
  const { WalStore } = await import('../../src/store/wal/index.js');
  const store = await WalStore.open(file);
  t.teardown(() => store.close());
  const log = store.partition(0, ['a', 'b', 'c'] as never);
  t.same(log.hardState(), { term: 2, vote: 'a', commit: 1 }, 'the synced hard state: term and vote kept, commit back to 1');
  t.equal(log.lastIndex(), 3, 'every synced entry is there');
  t.same(new TextDecoder().decode(log.entries(3, 4, Infinity)[0]!.data), 'entry 3');
});

t.test('state database: what durable() answered survives a power cut (local snapshots copy nothing and cut the log behind that point)', async (t) => {
  if (needTool(t, 'cc') === null) return;
  const { dataDir, undo } = folders(t);
  const path = join(dataDir, 'p0.db');
  await runUntilReadyThenKill(
    `import { BrokerStateMachine, encodeEnvelope } from './src/store/broker/index.ts';
     const state = await BrokerStateMachine.open(${JSON.stringify(path)}, 0);
     const e = (i) => ({ index: i, term: 1, kind: 0, data: encodeEnvelope({ time: i, actor: null, command: { type: 'user.register', username: 'user' + i, passwordHash: 'h' } }) });
     for (let i = 1; i <= 50; i++) state.apply([e(i)]);
     await state.durable();
     for (let i = 51; i <= 100; i++) state.apply([e(i)]);
     console.log(state.applied().index === 100 ? 'ready' : 'not applied');
     setInterval(() => {}, 1000);`,
    dataDir,
    undo,
  );
  const lost = loseUnsynced(dataDir, undo);
  t.ok(lost.records > 0, 'the commits after durable() were not synced, and are lost');
  const { BrokerStateMachine } = await import('../../src/store/broker/index.js');
  const state = await BrokerStateMachine.open(path, 0);
  t.teardown(() => state.close());
  t.equal(state.applied().index, 50, 'the state is back exactly at the point durable() made durable');
  t.equal(state.sqlite.pragma('integrity_check', { simple: true }), 'ok');
});
