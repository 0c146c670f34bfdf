// Nodes given the same peers in different orders (each listing itself first, say) must agree on which
// node each partition prefers as its leader. Each node took voters[p mod 3] in its own order, and
// their balancers handed partitions to one another on every pass, for ever: writes refused for each
// transfer, terms climbing, MomLeaderFlapping (review of 2026-12-07).
import { join } from 'node:path';
import t from 'tap';
import { NodeHost } from '../../src/partition/host.js';
import { Housekeeping } from '../../src/partition/housekeeping.js';
import type { NodeId } from '../../src/raft/index.js';
import { IDS, LocalCluster } from './host-helpers.js';

const [n1, n2, n3] = IDS as [NodeId, NodeId, NodeId];
const PARTITIONS = 3;

t.test('nodes given the same peers in different orders agree on a leader per partition (no ping-pong)', async (t) => {
  const c = new LocalCluster(PARTITIONS);
  t.teardown(() => c.close());
  // The same three members; each node lists itself first.
  const orders: [NodeId, NodeId[]][] = [
    [n1, [n1, n2, n3]],
    [n2, [n2, n3, n1]],
    [n3, [n3, n1, n2]],
  ];
  for (const [id, voters] of orders) {
    const host = await NodeHost.open({ self: id, voters, partitions: PARTITIONS, dataDir: join(c.root, id), outbox: c.outbox(id), tickMs: 25 });
    new Housekeeping(host);
    c.hosts.set(id, host);
    host.start();
  }
  const partitions = [...Array(PARTITIONS).keys()];
  // Every node names the same preferred leader for every partition.
  for (const p of partitions) {
    const named = IDS.map((id) => c.hosts.get(id)!.leadership.preferredLeader(p));
    t.same(new Set(named).size, 1, `partition ${p}: every node prefers ${named.join(' / ')}`);
  }
  // And the balancers settle there: each partition led by it. (Each node's own choice kept them
  // moving for ever, so this never held.)
  await c.until(() => partitions.every((p) => c.leaderOf(p)?.opts.self === c.hosts.get(n1)!.leadership.preferredLeader(p)), 'every partition led by its preferred leader', 12_000);
  t.pass('balanced');
});
