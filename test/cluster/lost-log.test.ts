// A node whose log is gone but whose cluster.json is kept (an operator "resets" a node by deleting
// wal/ and state/, a restore that brought back only the small files, a volume whose log directory
// was lost): cluster.json does not say catchingUp, so the node used to vote at once with an empty log
// and a term of 0. With a peer that lagged, that is a majority without the entries only the lost log
// and the third node held: acknowledged writes were lost. It must wait, as a node whose folder is
// new does (ClusterNode.learnTerms, Rejoin).
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import { MomServer } from '../../src/server.js';
import type { NodeConfig } from '../../src/cluster/index.js';
import { queue, submit } from '../partition/host-helpers.js';
import { threeNodeConfigs, until } from './net-helpers.js';
import { captureLogs } from './log-capture.js';
import { describeNodes } from './node-view.js';

const root = mkdtempSync(join(tmpdir(), 'mom-lost-log-'));
t.teardown(() => rmSync(root, { recursive: true, force: true }));

const PARTITIONS = 2;
const opts = { tickMs: 20 };

const configs = (): Promise<NodeConfig[]> => threeNodeConfigs(root, PARTITIONS);

const catchingUp = (dir: string): boolean => {
  const file = join(dir, 'cluster.json');
  return existsSync(file) && (JSON.parse(readFileSync(file, 'utf8')) as { catchingUp?: boolean }).catchingUp === true;
};

/**
 * A new cluster of three, voting at once, with queue before<p> acknowledged in every partition; a
 * node set to null is stopped (live() leaves it out).
 */
async function writtenCluster(t: Test): Promise<{ cfgs: NodeConfig[]; nodes: (MomServer | null)[]; live: () => MomServer[] }> {
  const cfgs = await configs();
  const nodes: (MomServer | null)[] = await Promise.all(cfgs.map((c) => MomServer.start(c, opts)));
  const live = (): MomServer[] => nodes.filter((n): n is MomServer => n !== null);
  t.teardown(() => Promise.all(live().map((n) => n.close())));
  await until(() => live().every((n) => n.status().every((s) => s.leader !== null)), 'leaders everywhere', 2000, () => describeNodes(live()));
  await until(() => !cfgs.some((c) => catchingUp(c.dataDir)), 'a new cluster votes at once', 2000, () => describeNodes(live()));
  for (let p = 0; p < PARTITIONS; p++) t.ok((await submit(live().map((n) => n.host), p, 'alice', queue(`before${p}`))).ok);
  return { cfgs, nodes, live };
}

for (const lost of [['wal', 'state', 'snapshots'], ['wal']]) t.test(`${lost.join('/, ')}/ deleted, cluster.json kept: the node does not vote before it caught up, and no acknowledged write is lost`, async (t) => {
  const { cfgs, nodes, live } = await writtenCluster(t);

  // n3 stops: the next writes are committed on n1 and n2 only.
  await nodes[2]!.close();
  nodes[2] = null;
  for (let p = 0; p < PARTITIONS; p++) t.ok((await submit(live().map((n) => n.host), p, 'alice', queue(`kept${p}`))).ok, `partition ${p}: acknowledged on n1 and n2`);

  // n1 loses its log (and state) but keeps cluster.json; n2 goes down.
  await nodes[0]!.close();
  for (const folder of lost) rmSync(join(cfgs[0]!.dataDir, folder), { recursive: true, force: true });
  t.ok(existsSync(join(cfgs[0]!.dataDir, 'cluster.json')), 'cluster.json kept');
  await nodes[1]!.close();
  nodes[1] = null;

  // n1 (empty) and n3 (which never had the writes) run; n2 is down.
  nodes[0] = await MomServer.start(cfgs[0]!, opts);
  nodes[2] = await MomServer.start(cfgs[2]!, opts);
  t.ok(catchingUp(cfgs[0]!.dataDir), 'n1 knows its log is gone: cluster.json says catchingUp');
  // Many election timeouts (200-400 ms each): a leader elected by n1's empty vote would lack kept<p>.
  const ledWithout: string[] = [];
  const end = Date.now() + 2000;
  while (Date.now() < end) {
    for (const n of live()) for (const s of n.status()) if (s.role === 'leader') ledWithout.push(`${n.cfg.nodeId} led partition ${s.partition} in term ${s.term}`);
    await new Promise((r) => setTimeout(r, 20));
  }
  t.same([...new Set(ledWithout)], [], 'no leader while only n1 (log lost) and n3 (behind) run');

  // n2 comes back: every acknowledged write is still there, on every node.
  nodes[1] = await MomServer.start(cfgs[1]!, opts);
  await until(() => live().every((n) => n.status().every((s) => s.leader !== null)), 'leaders everywhere', 3000, () => describeNodes(live()));
  // Wait (bounded by rounds, at least 30 s: an election and a catch-up on a loaded machine) for every
  // replica to hold both queues; a replica that cannot is checked below.
  const holds = (n: MomServer, p: number): boolean => n.host.replica(p).state.isOpen() && n.host.replica(p).state.listQueues('alice', '', 100).includes(`kept${p}`);
  for (let i = 0; i < 3000 && !live().every((n) => [...Array(PARTITIONS).keys()].every((p) => holds(n, p))); i++) await new Promise((r) => setTimeout(r, 10));
  for (const n of live()) {
    for (let p = 0; p < PARTITIONS; p++) {
      const names = n.host.replica(p).state.listQueues('alice', '', 100);
      t.ok(names.includes(`kept${p}`), `${n.cfg.nodeId}, partition ${p}: the acknowledged queue kept${p} is there (has ${names.join(', ')})`);
    }
  }
});


// Two nodes that lost their logs found each other empty and took that for a new cluster: with the
// third down they elected leaders over nothing, served a cluster without its users and queues, and
// took writes that the third, the one holding every committed entry, would contradict on its return.
t.test('two nodes lose their logs (cluster.json kept) while the third is down: they do not start a new, empty cluster', async (t) => {
  const { cfgs, nodes, live } = await writtenCluster(t);

  for (let i = 0; i < 3; i++) {
    await nodes[i]!.close();
    nodes[i] = null;
  }
  for (const i of [0, 1]) for (const folder of ['wal', 'state', 'snapshots']) rmSync(join(cfgs[i]!.dataDir, folder), { recursive: true, force: true });

  // n1 and n2 start, n3 stays down. Each either takes the other's empty log for a new cluster, or
  // keeps asking for n3 (and says so after 20 rounds).
  const logs = [captureLogs(), captureLogs()];
  for (const i of [0, 1]) nodes[i] = await MomServer.start(cfgs[i]!, { ...opts, logger: logs[i]!.logger });
  const NEW_CLUSTER = /a new cluster/;
  const WAITING = /waiting for every peer to answer/;
  await until(() => logs.every((l) => l.lines.some((x) => NEW_CLUSTER.test(x) || WAITING.test(x))), 'n1 and n2 decide whether they may vote', 6000, () => describeNodes(live()));
  t.same(logs.flatMap((l) => l.lines.filter((x) => NEW_CLUSTER.test(x))), [], 'neither takes the other for a new cluster');
  t.same(live().flatMap((n) => n.status().filter((s) => s.role === 'leader').map((s) => `${n.cfg.nodeId} leads partition ${s.partition}`)), [], 'no leader over the empty logs');
  t.ok(cfgs.slice(0, 2).every((c) => catchingUp(c.dataDir)), 'both still catching up');
});
