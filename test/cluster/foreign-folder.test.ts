// A data folder of another cluster with the same node ids and partition count (a backup of the wrong
// cluster restored, the MOM_LOCAL_DATA of another checkout, a volume attached to the wrong machine):
// cluster.json checked only ids and partitions, so the node started, mixed that cluster's log into
// this one's, and led a partition whose other replicas could not take its entries (the partition
// stopped taking writes, its replicas disagreed). It must be refused before it takes any part.
import { cpSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { MomServer } from '../../src/server.js';
import { ConfigError } from '../../src/cluster/index.js';
import { queue, submit } from '../partition/host-helpers.js';
import { threeNodeConfigs, until } from './net-helpers.js';
import { describeNodes } from './node-view.js';

const root = mkdtempSync(join(tmpdir(), 'mom-foreign-'));
t.teardown(() => rmSync(root, { recursive: true, force: true }));

const PARTITIONS = 2;
const opts = { tickMs: 20 };

t.test('a node started on the folder of another cluster is refused, and its own cluster is untouched', async (t) => {
  const mine = await threeNodeConfigs(join(root, 'mine'), PARTITIONS);
  const theirs = (await threeNodeConfigs(join(root, 'theirs'), PARTITIONS)).map((c) => ({ ...c, clusterSecret: 'another-cluster-secret' }));

  const other = await Promise.all(theirs.map((c) => MomServer.start(c, opts)));
  await until(() => other.every((n) => n.status().every((s) => s.leader !== null)), 'the other cluster elects leaders', 2000, () => describeNodes(other));
  for (let p = 0; p < PARTITIONS; p++) t.ok((await submit(other.map((n) => n.host), p, 'bob', queue(`theirs${p}`))).ok);
  await Promise.all(other.map((n) => n.close()));

  const nodes: (MomServer | null)[] = await Promise.all(mine.map((c) => MomServer.start(c, opts)));
  const live = (): MomServer[] => nodes.filter((n): n is MomServer => n !== null);
  t.teardown(() => Promise.all(live().map((n) => n.close())));
  await until(() => live().every((n) => n.status().every((s) => s.leader !== null)), 'leaders everywhere', 2000, () => describeNodes(live()));
  for (let p = 0; p < PARTITIONS; p++) t.ok((await submit(live().map((n) => n.host), p, 'alice', queue(`mine${p}`))).ok);

  // n3's folder is replaced by the other cluster's n3.
  await nodes[2]!.close();
  nodes[2] = null;
  rmSync(mine[2]!.dataDir, { recursive: true });
  cpSync(theirs[2]!.dataDir, mine[2]!.dataDir, { recursive: true });
  const before = readFileSync(join(mine[2]!.dataDir, 'cluster.json'), 'utf8');

  let refused: unknown = null;
  try {
    nodes[2] = await MomServer.start(mine[2]!, opts);
  } catch (err) {
    refused = err;
  }
  t.type(refused, ConfigError, 'the node does not start');
  t.match(String(refused), /belongs to another cluster/, 'and says why');
  t.equal(readFileSync(join(mine[2]!.dataDir, 'cluster.json'), 'utf8'), before, 'the folder is left as it was');
  for (let p = 0; p < PARTITIONS; p++) t.ok((await submit(live().map((n) => n.host), p, 'alice', queue(`after${p}`))).ok, `partition ${p} still takes writes`);
});
