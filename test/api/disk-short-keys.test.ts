// While the cluster is short of disk space (src/cluster/disk-space.ts) it refuses sends, publishes
// and creations with 507, and lets receives, acks, nacks, leases and deletes go on, which free space
// or write little. With an Idempotency-Key, each of those stored a record kept 24 hours
// (state-machine.ts, applyEnvelope): a keyed lease of 100 handles keeps about 1.8 KB, so one user
// with distinct keys went on filling every node's disk past the alarm (review of 2026-12-07, the
// reproducer of branch repro/stop57-lifecycle). Now a leader takes such a command with a new key
// without its key, keeping nothing, refuses a keyed receive with a new key (its record is what makes
// a retry a replay), and still answers a retry whose key it holds a record of from that record.
import t from 'tap';
import { FORMAT, type Command, type Result } from '../../src/store/broker/index.js';
import { partitionOf } from '../../src/partition/routing.js';
import { until } from '../cluster/net-helpers.js';
import { call, leaderOf, startCluster, userToken, type TestCluster } from './api-helpers.js';

t.setTimeout(120_000);
const MB = 1_000_000;
let free = 5000 * MB;
const cluster = await startCluster({ args: ['--disk-free-limit', '1GB'], diskFree: async () => free });
t.teardown(() => cluster.close());
await until(() => cluster.servers.every((s) => s.status().every((p) => p.format === FORMAT)), `every partition in format ${FORMAT}`);
const [url0, url1, url2] = cluster.urls as [string, string, string];

type Server = TestCluster['servers'][number];
interface Kept {
  n: number;
  bytes: number;
}
const q = 'disk-keys-q';
const p = partitionOf(q, cluster.configs[0]!.partitions);
const sqlite = (s: Server) => (s.host.replica(p).state as unknown as { sqlite: { prepare(q: string): { get(): Kept } } }).sqlite;
/** Each replica's idempotency records, once every replica has applied what the leader had. */
async function kept(): Promise<Kept[]> {
  const applied = (s: Server) => s.host.replica(p).state.applied().index;
  const last = Math.max(...cluster.servers.map(applied));
  await until(() => cluster.servers.every((s) => applied(s) >= last), `every replica of partition ${p} at ${last}`);
  return cluster.servers.map((s) => sqlite(s).prepare('select count(*) as n, coalesce(sum(length(key) + length(fingerprint) + length(result)), 0) as bytes from idempotency').get());
}
/** Sets every node's free space and waits until every node counts `short` nodes short. */
async function setFree(bytes: number, short: number): Promise<void> {
  free = bytes;
  for (const s of cluster.servers) await s.node.disk.check();
  await until(() => cluster.servers.every((s) => s.node.disk.shortNodes().length === short), `every node counts ${short} short`);
}
const keyed = (key: string) => ({ 'idempotency-key': key });

t.test('while short of disk, keyed commands with new keys add no 24-hour records, and known keys still replay', async (t) => {
  const mallory = await userToken(url0, 'mallory-d');
  t.equal((await call(url0, 'POST', '/v1/queues', { token: mallory, body: { name: q } })).status, 201);
  const messages = Array.from({ length: 100 }, (_, i) => ({ body: `m${i}` }));
  t.equal((await call(url1, 'POST', `/v1/queues/${q}/messages/batch`, { token: mallory, body: { messages } })).status, 201);
  const got = await call(url2, 'POST', `/v1/queues/${q}/receive`, { token: mallory, body: { maxMessages: 100, visibilityTimeoutSeconds: 43_200 } });
  const handles = (got.body as { messages: { receiptHandle: string }[] }).messages.map((m) => m.receiptHandle);
  t.equal(handles.length, 100);
  const lease = { receiptHandles: handles.slice(0, 99), visibilityTimeoutSeconds: 43_200 };
  // A keyed ack that went through before the alarm (applied again, it would find its delivery over:
  // receipt_stale), and two messages for a receive while short.
  const ack = { receiptHandles: handles.slice(99) };
  const ackedBefore = await call(url0, 'POST', `/v1/queues/${q}/ack`, { token: mallory, body: ack, headers: keyed('ack-before') });
  t.match(ackedBefore, { status: 200, body: { acked: ack.receiptHandles, failed: [] } });
  t.equal((await call(url1, 'POST', `/v1/queues/${q}/messages/batch`, { token: mallory, body: { messages: [{ body: 'late 1' }, { body: 'late 2' }] } })).status, 201);

  // Every node's disk is under the limit now.
  await setFree(900 * MB, 3);
  t.equal((await call(url0, 'POST', `/v1/queues/${q}/messages`, { token: mallory, body: { body: 'refused' } })).status, 507, 'a send is refused');

  const before = await kept();
  const N = 200;
  for (let i = 0; i < N; i++) {
    const r = await call(cluster.urls[i % 3]!, 'POST', `/v1/queues/${q}/lease`, { token: mallory, body: lease, headers: keyed(`k-${i}-`.padEnd(255, 'x')) });
    if (r.status !== 200) throw new Error(`lease ${i}: ${r.status} ${JSON.stringify(r.body)}`);
  }
  const after = await kept();
  const grown = after.map((a, i) => a.bytes - before[i]!.bytes);
  t.same(
    after.map((a) => a.n),
    before.map((b) => b.n),
    `while every node is short of disk, ${N} keyed leases (each answered 200) added no record: each node's records grew by ${grown.join(', ')} bytes`,
  );

  // A retry whose key has its record is answered from it, on any node.
  for (const url of cluster.urls) t.same((await call(url, 'POST', `/v1/queues/${q}/ack`, { token: mallory, body: ack, headers: keyed('ack-before') })).body, ackedBefore.body, 'a keyed retry of an ack that went through gets its answer');

  // A keyed receive with a new key is refused (a retry of it would lease other messages); without a key it goes on.
  const refused = await call(url1, 'POST', `/v1/queues/${q}/receive`, { token: mallory, body: { maxMessages: 10 }, headers: keyed('receive-new') });
  t.equal(refused.status, 507, 'a keyed receive with a new key is refused');
  t.equal(refused.headers['retry-after'], '10');
  t.match(refused.body, { code: 'insufficient_storage', detail: /Idempotency-Key/ }, 'and told why');
  const late = await call(url2, 'POST', `/v1/queues/${q}/receive`, { token: mallory, body: { maxMessages: 10 } });
  t.equal(late.status, 200, 'a receive without a key goes on');
  const lateHandles = (late.body as { messages: { body: string; receiptHandle: string }[] }).messages;
  t.same(lateHandles.map((m) => m.body).sort(), ['late 1', 'late 2'], 'with the messages the refused one did not take');

  // A keyed ack with a new key frees space as a keyless one: applied, on every replica alike.
  const acked = await call(url0, 'POST', `/v1/queues/${q}/ack`, { token: mallory, body: { receiptHandles: lateHandles.map((m) => m.receiptHandle) }, headers: keyed('ack-new') });
  t.match(acked, { status: 200, body: { failed: [] } }, 'a keyed ack with a new key goes on');
  t.same((await kept()).map((a) => a.n), before.map((b) => b.n), 'keeping no record either');

  // With room again, a new key is kept as before.
  await setFree(5000 * MB, 0);
  t.equal((await call(url0, 'POST', `/v1/queues/${q}/lease`, { token: mallory, body: lease, headers: keyed('lease-after') })).status, 200);
  t.same((await kept()).map((a) => a.n), before.map((b) => b.n + 1), 'with room again, a keyed lease keeps its record');
});

// A key whose first attempt is in the leader's log and not applied yet has no record either, but is
// not new: the retry of a write whose answer was lost (a proposal timed out on a slow disk, a leader
// lost while waiting) comes then. The retry of a receive was refused with 507 ("nothing was
// written") while its first attempt went on to lease messages, which a client told by the 507 to
// receive without a key never learnt of (a review of format 15).
const pendingQ = 'disk-pending-q';
const subOf = (token: string): string => (JSON.parse(Buffer.from(token.split('.')[1]!, 'base64url').toString()) as { sub: string }).sub;

t.test('a keyed retry whose first attempt is in the leader log and not applied yet is a replay, not a new request', async (t) => {
  const token = await userToken(url0, 'pending-d');
  const actor = subOf(token);
  t.equal((await call(url0, 'POST', '/v1/queues', { token, body: { name: pendingQ } })).status, 201);
  const messages = Array.from({ length: 4 }, (_, i) => ({ body: `m${i}` }));
  t.equal((await call(url0, 'POST', `/v1/queues/${pendingQ}/messages/batch`, { token, body: { messages } })).status, 201);

  await setFree(900 * MB, 3);
  t.teardown(() => setFree(5000 * MB, 0));
  const pendingP = partitionOf(pendingQ, cluster.configs[0]!.partitions);
  const leader = cluster.servers[await leaderOf(cluster, pendingQ)]!;
  const replica = leader.host.replica(pendingP);
  /** The first attempt appended (before the alarm), its retry proposed before it applied. */
  const attemptTwice = async (command: Command, key: string): Promise<[Result, Result]> => {
    const first = replica.propose(actor, command, key);
    const retry = leader.node.router.proposeHere(pendingP, actor, command, key);
    const [a, b] = [await first, await retry];
    if (b.kind !== 'ok') throw new Error(`retry: ${JSON.stringify(b)}`);
    return [a, b.result];
  };

  const receive: Command = { type: 'receive', channel: { queue: pendingQ }, maxMessages: 1, visibilityTimeoutSeconds: 600 };
  const [received, receivedAgain] = await attemptTwice(receive, 'pending-receive');
  t.match(received, { ok: true, value: { messages: [{}] } });
  t.match(receivedAgain, { ok: true }, 'the retry of a receive is not refused while its first attempt leases');
  t.same(
    (receivedAgain as { value?: { messages: { receiptHandle: string }[] } }).value?.messages.map((m) => m.receiptHandle),
    (received as { value: { messages: { receiptHandle: string }[] } }).value.messages.map((m) => m.receiptHandle),
    'and answers the messages the first leased',
  );
});
