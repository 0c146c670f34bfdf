// A node short of disk space (src/cluster/disk-space.ts): a full disk stopped a node at its next
// failed write, and the three nodes, holding the same data, filled and stopped together. Now, while
// any node has less free space than its limit, every node refuses sends, publishes and creations
// with 507, and receives and acks go on, which free space.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { MomServer } from '../../src/server.js';
import { loadConfig } from '../../src/cluster/index.js';
import { DiskSpace, PEER_SHORT_FRESH_MS, keyDecision, type DiskEvent } from '../../src/cluster/disk-space.js';
import type { Command } from '../../src/store/broker/index.js';
import { partitionOf } from '../../src/partition/routing.js';
import { threeNodeConfigs, until } from './net-helpers.js';
import { describeNodes } from './node-view.js';
import { captureLogs } from './log-capture.js';

const root = mkdtempSync(join(tmpdir(), 'mom-disk-'));
t.teardown(() => rmSync(root, { recursive: true, force: true }));

const MB = 1_000_000;

t.test('DiskSpace: short under its limit, told to the peers, a peer short for as long as it says so', async (t) => {
  let free = 900 * MB;
  let clock = 0;
  const told: DiskEvent[] = [];
  const disk = new DiskSpace({ self: 'n1', peers: ['n2', 'n3'], dataDir: root, limitBytes: 500 * MB, publish: (e) => told.push(e), now: () => clock, freeBytes: async () => free });
  t.same(disk.shortNodes(), [], 'nothing known yet: nothing short');
  await disk.check();
  t.same(disk.shortNodes(), []);
  t.same(told, [], 'a node with room tells nothing');
  t.same(disk.stats(), { freeBytes: 900 * MB, limitBytes: 500 * MB });

  free = 400 * MB;
  await disk.check();
  await disk.check();
  t.same(disk.shortNodes(), ['n1'], 'under the limit: short');
  t.same(told, [{ kind: 'disk', node: 'n1', short: true, freeBytes: 400 * MB }, { kind: 'disk', node: 'n1', short: true, freeBytes: 400 * MB }], 'told at every look while short');
  free = 600 * MB;
  await disk.check();
  t.same(disk.shortNodes(), [], 'room again');
  t.same(told.at(-1), { kind: 'disk', node: 'n1', short: false, freeBytes: 600 * MB }, 'told once when it ends');
  told.length = 0;
  await disk.check();
  t.same(told, [], 'and then nothing');

  disk.receive({ kind: 'disk', node: 'n3', short: true, freeBytes: 1 });
  t.same(disk.shortNodes(), ['n3'], 'a peer that says it is short');
  clock += PEER_SHORT_FRESH_MS - 1;
  t.same(disk.shortNodes(), ['n3']);
  clock += 1;
  t.same(disk.shortNodes(), [], 'counts no more once it stopped saying so for a while (down, cut off)');
  disk.receive({ kind: 'disk', node: 'n3', short: true, freeBytes: 1 });
  disk.receive({ kind: 'disk', node: 'n3', short: false, freeBytes: 2 });
  t.same(disk.shortNodes(), [], 'nor once it says it has room');

  for (const junk of [null, 'x', { kind: 'disk', node: 'n9', short: true }, { kind: 'disk', node: 'n1', short: true }, { kind: 'disk', node: 'n2', short: 'yes' }, { kind: 'register', address: '1.2.3.4' }]) disk.receive(junk);
  t.same(disk.shortNodes(), [], 'events of unknown nodes, of itself, malformed, or of another kind are ignored');

  // statfs failing while short: the node still counts itself short, so it keeps telling its peers
  // (they stopped counting it after 15 s, and sends through them went on onto its disk).
  free = 100 * MB;
  await disk.check();
  told.length = 0;
  const failing = new DiskSpace({ self: 'n1', peers: ['n2'], dataDir: root, limitBytes: 500 * MB, publish: (e) => told.push(e), freeBytes: async () => free });
  await failing.check();
  free = Number.NaN;
  (failing as unknown as { freeBytesOf: () => Promise<number> }).freeBytesOf = () => Promise.reject(new Error('EIO'));
  await failing.check();
  t.same(told.map((e) => e.short), [true, true], 'a failed look while short still tells the peers it is short');
  t.same(failing.shortNodes(), ['n1']);

  const off = new DiskSpace({ self: 'n1', peers: [], dataDir: root, limitBytes: 0, publish: () => t.fail('nothing to tell'), freeBytes: async () => 0 });
  await off.check();
  t.same(off.shortNodes(), [], 'a limit of 0: 0 bytes free is not short');
  t.same(off.stats(), { freeBytes: 0, limitBytes: 0 }, 'and the free space is still read, for the metric');
});

t.test('DiskSpace reads the real free space of the folder (statfs)', async (t) => {
  const disk = new DiskSpace({ self: 'n1', peers: [], dataDir: root, limitBytes: 1, publish: () => undefined });
  await disk.check();
  t.ok((disk.stats().freeBytes ?? 0) > 0, `${disk.stats().freeBytes} bytes free`);
});

t.test('keyDecision: while short, a new Idempotency-Key is kept by no command; a receive with one is refused, others go without it', (t) => {
  const channel = { queue: 'q' };
  const send: Command = { type: 'queue.send', name: 'q', messages: [{ body: 'x', attributes: {} }] };
  const receive: Command = { type: 'receive', channel, maxMessages: 1, visibilityTimeoutSeconds: null };
  const ack: Command = { type: 'ack', channel, receiptHandles: ['h'] };
  const purge: Command = { type: 'queue.purge', name: 'q' };
  t.equal(keyDecision(send, false, false), 'refuse', 'a send is refused');
  t.equal(keyDecision(send, true, false), 'refuse', 'with a new key too');
  t.equal(keyDecision(send, true, true), 'take', 'but a retry of one that went through is answered from its record');
  for (const c of [receive, ack, purge]) {
    t.equal(keyDecision(c, false, false), 'take', `a ${c.type} without a key goes on`);
    t.equal(keyDecision(c, true, true), 'take', `a ${c.type} whose key has its record replays it`);
  }
  t.equal(keyDecision(receive, true, false), 'refuse', 'a receive with a new key is refused: its record is what makes a retry a replay');
  t.equal(keyDecision(ack, true, false), 'without the key', 'an ack with a new key goes on without it');
  t.equal(keyDecision(purge, true, false), 'without the key', 'and so does a purge');
  t.end();
});

t.test('--disk-free-limit takes bytes and units', async (t) => {
  const base = ['--node-id', 'n1', '--listen', '127.0.0.1:1', '--peers', 'n1=http://a:1,n2=http://b:1,n3=http://c:1', '--data-dir', root, '--cluster-secret', 's'.repeat(24), '--jwt-secret', 'j'.repeat(32)];
  const limit = (v?: string): number => loadConfig(v === undefined ? base : [...base, '--disk-free-limit', v], {}).diskFreeLimit;
  t.equal(limit(), 512 * 2 ** 20, '512 MiB by default');
  t.equal(limit('0'), 0);
  t.equal(limit('2GB'), 2e9);
  t.equal(limit('1.5 GiB'), 1.5 * 2 ** 30);
  t.equal(limit('100000'), 100000);
  for (const bad of ['lots', '-1', '5 furlongs', '1e3']) t.throws(() => limit(bad), { name: 'ConfigError', message: /diskFreeLimit must be a size/ }, bad);
});

t.test('a node short of disk space: the whole cluster refuses sends and creations with 507, receives and acks go on, and sends come back with the space', async (t) => {
  const free = [10_000 * MB, 10_000 * MB, 10_000 * MB];
  const cfgs = (await threeNodeConfigs(join(root, 'cluster'), 2)).map((c) => ({ ...c, diskFreeLimit: 1000 * MB }));
  const logs = cfgs.map(() => captureLogs());
  const nodes = await Promise.all(cfgs.map((c, i) => MomServer.start(c, { tickMs: 20, diskFree: async () => free[i]!, logger: logs[i]!.logger })));
  t.teardown(() => Promise.all(nodes.map((n) => n.close())));
  await until(() => nodes.every((n) => n.status().every((s) => s.leader !== null)), 'leaders everywhere', 3000, () => describeNodes(nodes));
  const call = async (n: MomServer, method: string, path: string, body?: unknown, token?: string, key?: string) => {
    const res = await fetch(`http://127.0.0.1:${n.cfg.port}${path}`, {
      method,
      headers: {
        ...(body === undefined ? {} : { 'content-type': 'application/json' }),
        ...(token === undefined ? {} : { authorization: `Bearer ${token}` }),
        ...(key === undefined ? {} : { 'idempotency-key': key }),
      },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    });
    return { status: res.status, retryAfter: res.headers.get('retry-after'), json: (await res.json()) as Record<string, unknown> };
  };
  const alice = { username: 'alice', password: 'alice-password-1' };
  t.equal((await call(nodes[0]!, 'POST', '/v1/auth/register', alice)).status, 201);
  const token = (await call(nodes[0]!, 'POST', '/v1/auth/login', alice)).json.accessToken as string;
  t.equal((await call(nodes[0]!, 'POST', '/v1/queues', { name: 'jobs' }, token)).status, 201);
  for (let i = 0; i < 3; i++) t.equal((await call(nodes[i]!, 'POST', '/v1/queues/jobs/messages', { body: `before ${i}` }, token)).status, 201);
  const keyed = await call(nodes[0]!, 'POST', '/v1/queues/jobs/messages', { body: 'keyed' }, token, 'key-before');
  t.equal(keyed.status, 201);

  // n3's disk fills: every node learns it (n3 at its next look, the others from n3).
  free[2] = 900 * MB;
  await nodes[2]!.node.disk.check();
  await until(() => nodes.every((n) => n.node.disk.shortNodes().includes('n3')), 'every node counts n3 short', 3000);
  for (const n of nodes) {
    const sent = await call(n, 'POST', '/v1/queues/jobs/messages', { body: 'refused' }, token);
    // Not 503: the nginx of deploy/ counts a 503 as a failed node, and all three refusing sends took
    // every node out of its upstream, receives and acks with them.
    t.equal(sent.status, 507, `${n.cfg.nodeId} refuses a send with 507`);
    t.equal(sent.retryAfter, '10', 'retry in 10 s');
    t.match(sent.json, { code: 'insufficient_storage', title: 'Insufficient Storage', detail: /short of disk space/ }, 'and says why');
    t.notMatch(JSON.stringify(sent.json), /n3/, 'naming no node');
  }
  t.equal((await call(nodes[0]!, 'POST', '/v1/queues', { name: 'more' }, token)).status, 507, 'a creation too');
  // A client whose first answer was lost retries with its key: answered from the record (nothing
  // added), not told that nothing was written. A new key is refused.
  for (const n of nodes) t.same(await call(n, 'POST', '/v1/queues/jobs/messages', { body: 'keyed' }, token, 'key-before'), { status: 201, retryAfter: null, json: keyed.json }, `${n.cfg.nodeId}: a keyed retry of a send that went through gets its answer`);
  t.equal((await call(nodes[0]!, 'POST', '/v1/queues/jobs/messages', { body: 'keyed' }, token, 'key-new')).status, 507, 'a new key is refused');
  t.equal((await call(nodes[1]!, 'POST', '/v1/auth/register', { username: 'bob', password: 'bob-password-1' })).status, 507, 'and a registration');
  const got = await call(nodes[1]!, 'POST', '/v1/queues/jobs/receive', { maxMessages: 10 }, token);
  t.equal(got.status, 200, 'a receive goes on');
  const messages = got.json.messages as { body: string; receiptHandle: string }[];
  t.same(messages.map((m) => m.body).sort(), ['before 0', 'before 1', 'before 2', 'keyed'], 'with every message, once, and no refused one');
  const acked = await call(nodes[2]!, 'POST', '/v1/queues/jobs/ack', { receiptHandles: messages.map((m) => m.receiptHandle) }, token);
  t.match(acked, { status: 200, json: { failed: [] } }, 'an ack goes on, on the short node too');
  t.ok(logs[2]!.lines.some((l) => l.includes('the data folder is short of space')), 'n3 says once that it is short');
  t.same(logs.flatMap((l) => l.lines.filter((x) => x.includes('request not served'))), [], 'and no node logs a line per refused write (at info and above): they would fill the disk');
  const metrics = await (await fetch(`http://127.0.0.1:${nodes[0]!.cfg.port}/metrics`)).text();
  t.match(metrics, /^mom_disk_short_nodes 1$/m, 'the metric counts the short node');
  t.match(metrics, /^mom_disk_free_limit_bytes 1000000000$/m);

  free[2] = 5000 * MB;
  await nodes[2]!.node.disk.check();
  await until(() => nodes.every((n) => n.node.disk.shortNodes().length === 0), 'every node knows n3 has room again', 3000);
  for (const n of nodes) t.equal((await call(n, 'POST', '/v1/queues/jobs/messages', { body: 'after' }, token)).status, 201, `${n.cfg.nodeId} takes sends again`);

  // A node that does not check (an older build in a rolling upgrade; here one told nobody is short)
  // forwards the send: the leader refuses it when it is short itself.
  const leaderOf = (p: number): number => nodes.findIndex((n) => n.status().find((s) => s.partition === p)?.role === 'leader');
  const jobsPartition = partitionOf('jobs', 2);
  // Where leaders are is up to the elections: the leader is read when there is one, and the send
  // counts only if it led throughout (else, on a loaded machine, it went to another leader).
  let forwarded: Awaited<ReturnType<typeof call>> | null = null;
  for (let attempt = 0; attempt < 5 && forwarded === null; attempt++) {
    await until(() => leaderOf(jobsPartition) >= 0, 'a leader of the jobs partition', 3000, () => describeNodes(nodes));
    const leader = leaderOf(jobsPartition);
    const other = nodes.findIndex((_, i) => i !== leader);
    free[leader] = 900 * MB;
    await nodes[leader]!.node.disk.check();
    nodes[other]!.node.router.refuseWhenShort(() => []);
    const answer = await call(nodes[other]!, 'POST', '/v1/queues/jobs/messages', { body: 'forwarded' }, token);
    if (leaderOf(jobsPartition) === leader) forwarded = answer;
  }
  t.match(forwarded, { status: 507, json: { code: 'insufficient_storage' } }, 'a send forwarded to a short leader is refused there');
});
