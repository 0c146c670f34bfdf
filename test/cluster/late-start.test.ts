// A node of a new cluster that starts after the other two have elected leaders: its data folder is
// new, so it first learns every partition's term from its peers (ClusterNode.learnTerms). Both peers
// have run since their logs were empty and have had no message from it, so it may vote at once;
// it used to wait until it had caught up, and a leader that failed before then left its partition
// without a quorum. A node that did take part, and lost its folder, still waits.
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
const CATCHES_UP_FIRST = /catching up before voting/;

t.test('a late starter of a new cluster votes at once; a leader failing before it caught up is replaced', async (t) => {
  const cfgs = await configs();
  const nodes: MomServer[] = await Promise.all(cfgs.slice(1).map((c) => MomServer.start(c, opts)));
  t.teardown(() => Promise.all(nodes.map((n) => n.close())));
  await until(() => nodes.every((n) => n.status().every((s) => s.leader !== null)), 'n2 and n3 elect leaders', 2000, () => describeNodes(nodes));
  for (let p = 0; p < PARTITIONS; p++) t.ok((await submit(nodes.map((n) => n.host), p, 'alice', queue(`q${p}`))).ok, `a write to partition ${p}`);

  const log = captureLogs();
  const late = await MomServer.start(cfgs[0]!, { ...opts, logger: log.logger });
  nodes.push(late);
  await until(() => log.lines.some((l) => VOTES_AT_ONCE.test(l) || CATCHES_UP_FIRST.test(l)), 'n1 decides how it joins', 2000, () => describeNodes(nodes));
  t.ok(log.lines.some((l) => VOTES_AT_ONCE.test(l)), 'it votes at once');
  t.notOk(log.lines.some((l) => CATCHES_UP_FIRST.test(l)), 'it does not wait to catch up first');

  // The leader of a partition fails: the two others elect one.
  const p = 1;
  const leader = nodes.find((n) => n.host.replica(p).isLeader()) ?? nodes[0]!;
  await leader.close();
  const live = nodes.filter((n) => n !== leader);
  await until(() => live.some((n) => n.host.replica(p).isLeader()), 'a new leader among the two others', 2000, () => describeNodes(nodes));
  t.ok((await submit(live.map((n) => n.host), p, 'alice', queue('after'))).ok, 'and it takes writes');
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
