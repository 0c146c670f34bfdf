// Two nodes whose disks were lost come back with empty folders (new disks; pods whose local volumes
// were lost restart by themselves) while the third, which holds every acknowledged write, is away for
// a moment. Each empty folder used to take the other, empty too, for a new cluster (one empty peer
// answering was enough): the two elected leaders over nothing and took writes, and the third,
// back, followed them, its state no longer theirs (review of stop 62). A new cluster now needs every
// member to answer empty (ClusterNode.learnTerms): the two wait, and nothing is written over the
// third's data, from which the operator restores the cluster.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { MomServer } from '../../src/server.js';
import { queue, submit } from '../partition/host-helpers.js';
import { threeNodeConfigs, until } from './net-helpers.js';
import { describeNodes } from './node-view.js';

const root = mkdtempSync(join(tmpdir(), 'mom-two-disks-'));
t.teardown(() => rmSync(root, { recursive: true, force: true }));

const PARTITIONS = 2;
const opts = { tickMs: 20 };

t.test('two nodes whose disks were lost start no new cluster, and write nothing over the third', async (t) => {
  const cfgs = await threeNodeConfigs(root, PARTITIONS);
  const nodes: (MomServer | null)[] = await Promise.all(cfgs.map((c) => MomServer.start(c, opts)));
  const live = (): MomServer[] => nodes.filter((n): n is MomServer => n !== null);
  t.teardown(() => Promise.all(live().map((n) => n.close())));
  await until(() => live().every((n) => n.status().every((s) => s.leader !== null)), 'leaders everywhere', 3000, () => describeNodes(live()));
  for (let p = 0; p < PARTITIONS; p++) t.ok((await submit(live().map((n) => n.host), p, 'alice', queue(`acked${p}`))).ok, `partition ${p}: acknowledged`);
  // n3 holds them too (acknowledged by a majority, they may not have reached it yet): it is the copy
  // of the cluster that is left.
  await until(() => [...Array(PARTITIONS).keys()].every((p) => nodes[2]!.host.replica(p).state.listQueues('alice', '', 10).length === 1), 'n3 applied the acknowledged writes', 3000, () => describeNodes(live()));
  for (let i = 0; i < 3; i++) {
    await nodes[i]!.close();
    nodes[i] = null;
  }
  for (const i of [0, 1]) rmSync(cfgs[i]!.dataDir, { recursive: true, force: true });
  for (const i of [0, 1]) nodes[i] = await MomServer.start(cfgs[i]!, opts);
  // Fifty ticks: elections many times over, had the two taken each other for a new cluster.
  await new Promise((r) => setTimeout(r, 1000));
  t.same(
    live().flatMap((n) => n.status().filter((s) => s.role === 'leader').map((s) => `${n.cfg.nodeId} leads ${s.partition}`)),
    [],
    'no leader over the two empty folders while n3 is away',
  );

  // n3 back: the two wait to catch up and grant no vote, n3 alone is no majority. No two nodes are
  // left, as docs/operations.md says: the cluster is restored from n3's folder ("Restore the cluster
  // from one copy"; test/cluster/restore-cluster.test.ts). Nothing was written over what n3 holds.
  nodes[2] = await MomServer.start(cfgs[2]!, opts);
  await until(() => live().every((n) => !n.host.rejoin.holdingForTerms), 'the three learned their terms', 3000, () => describeNodes(live()));
  await new Promise((r) => setTimeout(r, 1000));
  t.same(
    live().flatMap((n) => n.status().filter((s) => s.role === 'leader').map((s) => `${n.cfg.nodeId} leads ${s.partition}`)),
    [],
    'no leader with n3 back either: two of three lost their logs',
  );
  for (let p = 0; p < PARTITIONS; p++) t.same(nodes[2]!.host.replica(p).state.listQueues('alice', '', 10), [`acked${p}`], `partition ${p}: n3 still holds the acknowledged write`);
});
