// The first start of a new cluster, and a node whose folder is new (ClusterNode.learnTerms): it first
// learns every partition's term from all its peers. A new cluster's nodes vote once all three
// answered with empty logs: two empty folders alone cannot tell a new cluster from two lost disks
// while the third holds every acknowledged write (review of stop 62). A node that did take part, and
// lost its folder, catches up before it votes.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { MomServer } from '../../src/server.js';
import type { NodeConfig } from '../../src/cluster/index.js';
import type { Command } from '../../src/store/broker/index.js';
import { submit } from '../partition/host-helpers.js';
import { threeNodeConfigs, until } from './net-helpers.js';
import { captureLogs } from './log-capture.js';
import { describeNodes } from './node-view.js';

const root = mkdtempSync(join(tmpdir(), 'mom-late-'));
t.teardown(() => rmSync(root, { recursive: true, force: true }));

const PARTITIONS = 4;
const opts = { tickMs: 20 };
const queue = (name: string): Command => ({ type: 'queue.create', name, visibilityTimeoutSeconds: 30, maxDeliveries: null, deadLetterQueue: null, delaySeconds: 0, retentionSeconds: 3600 });

const configs = (): Promise<NodeConfig[]> => threeNodeConfigs(root, PARTITIONS);


const VOTES_AT_ONCE = /a new cluster that started without this node/;
const NEW_CLUSTER = /a new cluster: every member is empty/;
const CATCHES_UP_FIRST = /catching up before voting/;

t.test("a new cluster's first two nodes wait for the third; then the three vote at once", async (t) => {
  const cfgs = await configs();
  const log = captureLogs();
  const nodes: MomServer[] = await Promise.all(cfgs.slice(1).map((c) => MomServer.start(c, { ...opts, logger: log.logger })));
  t.teardown(() => Promise.all(nodes.map((n) => n.close())));
  // Fifty ticks, elections many times over: two empty folders cannot tell a new cluster from two
  // lost disks while the third, which may hold every acknowledged write, is away (review of stop 62).
  await new Promise((r) => setTimeout(r, 1000));
  t.same(
    nodes.flatMap((n) => n.status().filter((s) => s.role === 'leader')),
    [],
    'no leader while n1 has not answered',
  );
  t.ok(
    nodes.every((n) => n.host.rejoin.holdingForTerms),
    'both still wait for every peer',
  );
  const late = await MomServer.start(cfgs[0]!, { ...opts, logger: log.logger });
  nodes.push(late);
  await until(() => nodes.every((n) => n.status().every((s) => s.leader !== null)), 'the three elect leaders', 3000, () => describeNodes(nodes));
  t.equal(log.lines.filter((l) => NEW_CLUSTER.test(l)).length, 3, 'each saw a new cluster, every member empty');
  t.notOk(log.lines.some((l) => CATCHES_UP_FIRST.test(l)), 'none waits to catch up first');
  for (let p = 0; p < PARTITIONS; p++) t.ok((await submit(nodes.map((n) => n.host), p, 'alice', queue(`q${p}`))).ok, `a write to partition ${p}`);
});

t.test('a node that took part and lost its folder still catches up before it votes', async (t) => {
  const cfgs = await configs();
  const nodes: MomServer[] = await Promise.all(cfgs.map((c) => MomServer.start(c, opts)));
  t.teardown(() => Promise.all(nodes.map((n) => n.close())));
  await until(() => nodes.every((n) => n.status().every((s) => s.leader !== null)), 'every node knows a leader for every partition', 2000, () => describeNodes(nodes));
  for (let p = 0; p < PARTITIONS; p++) t.ok((await submit(nodes.map((n) => n.host), p, 'alice', queue(`q${p}`))).ok, `a write to partition ${p}`);

  await nodes[0]!.close();
  rmSync(cfgs[0]!.dataDir, { recursive: true, force: true });
  const log = captureLogs();
  nodes[0] = await MomServer.start(cfgs[0]!, { ...opts, logger: log.logger });
  await until(() => log.lines.some((l) => VOTES_AT_ONCE.test(l) || CATCHES_UP_FIRST.test(l)), 'n1 decides how it rejoins', 2000, () => describeNodes(nodes));
  t.ok(log.lines.some((l) => CATCHES_UP_FIRST.test(l)), 'its peers heard from it before: it catches up first');
  t.notOk(log.lines.some((l) => VOTES_AT_ONCE.test(l)));
});
