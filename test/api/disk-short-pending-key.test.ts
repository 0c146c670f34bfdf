// While the cluster is short of disk, a leader takes a keyed command whose key has no record without
// its key (keyDecision), and refuses a keyed receive with a new key. A key whose first attempt is in
// the leader's log and not applied yet has no record either, but is not new: the retry of a write
// whose answer was lost (a proposal timed out on a slow disk, a leader lost while waiting) comes
// then. The retry of a receive was refused with 507 ("nothing was written") while its first attempt
// went on to lease messages, which a client told by the 507 to receive without a key never learnt of.
import t from 'tap';
import { FORMAT, type Command, type Result } from '../../src/store/broker/index.js';
import { partitionOf } from '../../src/partition/routing.js';
import { until } from '../cluster/net-helpers.js';
import { call, leaderOf, startCluster, userToken } from './api-helpers.js';

t.setTimeout(120_000);
const MB = 1_000_000;
let free = 5000 * MB;
const cluster = await startCluster({ args: ['--disk-free-limit', '1GB'], diskFree: async () => free });
t.teardown(() => cluster.close());
await until(() => cluster.servers.every((s) => s.status().every((p) => p.format === FORMAT)), `every partition in format ${FORMAT}`);
const url = cluster.urls[0]!;
const q = 'disk-pending-q';
const p = partitionOf(q, cluster.configs[0]!.partitions);
const subOf = (token: string): string => (JSON.parse(Buffer.from(token.split('.')[1]!, 'base64url').toString()) as { sub: string }).sub;

t.test('a keyed retry whose first attempt is in the leader log and not applied yet is a replay, not a new request', async (t) => {
  const token = await userToken(url, 'pending-d');
  const actor = subOf(token);
  t.equal((await call(url, 'POST', '/v1/queues', { token, body: { name: q } })).status, 201);
  const messages = Array.from({ length: 4 }, (_, i) => ({ body: `m${i}` }));
  t.equal((await call(url, 'POST', `/v1/queues/${q}/messages/batch`, { token, body: { messages } })).status, 201);

  free = 900 * MB;
  for (const s of cluster.servers) await s.node.disk.check();
  await until(() => cluster.servers.every((s) => s.node.disk.shortNodes().length === 3), 'every node counts 3 short');
  const leader = cluster.servers[await leaderOf(cluster, q)]!;
  const replica = leader.host.replica(p);
  /** The first attempt appended (before the alarm), its retry proposed before it applied. */
  const attemptTwice = async (command: Command, key: string): Promise<[Result, Result]> => {
    const first = replica.propose(actor, command, key);
    const retry = leader.node.router.proposeHere(p, actor, command, key);
    const [a, b] = [await first, await retry];
    if (b.kind !== 'ok') throw new Error(`retry: ${JSON.stringify(b)}`);
    return [a, b.result];
  };

  const receive: Command = { type: 'receive', channel: { queue: q }, maxMessages: 1, visibilityTimeoutSeconds: 600 };
  const [received, receivedAgain] = await attemptTwice(receive, 'pending-receive');
  t.match(received, { ok: true, value: { messages: [{}] } });
  t.match(receivedAgain, { ok: true }, 'the retry of a receive is not refused while its first attempt leases');
  t.same(
    (receivedAgain as { value?: { messages: { receiptHandle: string }[] } }).value?.messages.map((m) => m.receiptHandle),
    (received as { value: { messages: { receiptHandle: string }[] } }).value.messages.map((m) => m.receiptHandle),
    'and answers the messages the first leased',
  );
});
