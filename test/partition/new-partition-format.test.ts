// A brand-new partition starts in format 1 (a log replayed from its first entry must read it as every
// replica did) and its leader raises it with the log's first entry it can: at its first tick once every
// voter has said which formats it reads, not at the first housekeeping pass (two election timeouts,
// 2 s in production), during which a new cluster would take writes in format 1, without the fan-out
// limits, the bounded clock step, or the user lifecycle (503 "the cluster is being upgraded").
import t from 'tap';
import { FORMAT } from '../../src/store/broker/index.js';
import { IDS, queue, untickedCluster } from './host-helpers.js';

t.test("a new partition's leader raises its format at its first tick once every voter is heard, before the first pass", async (t) => {
  // No node ticks on its own: the test gives the leader one tick, far from a pass (every 20 ticks).
  const { c, leader } = await untickedCluster(t);
  await c.quiet();
  t.ok(IDS.every((id) => id === leader.opts.self || leader.peerFormat(id) === FORMAT), 'the leader heard every voter');
  leader.tick();
  await c.quiet();
  t.same([...c.hosts.values()].map((h) => h.replica(0).state.format()), [FORMAT, FORMAT, FORMAT], 'every replica in the newest format after one tick');
  t.ok((await c.submit(0, 'alice', queue('q'))).ok, 'and a first write applies under its rules');
});
