// Three nodes on loopback with real HTTP between them and real SQLite in temporary folders: every
// partition elects a leader, writes replicate, a stopped leader is replaced, the stopped node comes
// back, is not ready until it caught up by snapshot, with identical state, and a wrong cluster secret
// is refused.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import type { LoggerOptions } from 'pino';
import { request } from 'undici';
import { MomServer as ClusterNode } from '../../src/server.js';
import { loadConfig, type NodeConfig } from '../../src/cluster/index.js';
import { stateHash } from '../../src/store/broker/index.js';
import { pollUntil } from '../api/api-helpers.js';
import { appliedIndex, submit } from '../partition/host-helpers.js';
import { freePort, until } from './net-helpers.js';
import { captureLogs } from './log-capture.js';
import { describeNodes } from './node-view.js';

const root = mkdtempSync(join(tmpdir(), 'mom-cluster-'));
t.teardown(() => rmSync(root, { recursive: true, force: true }));


async function configs(partitions: number, secret = 's'.repeat(24)): Promise<NodeConfig[]> {
  const ports = [await freePort(), await freePort(), await freePort()];
  const peers = ports.map((p, i) => `n${i + 1}=http://127.0.0.1:${p}`).join(',');
  return ports.map((p, i) =>
    loadConfig(
      ['--node-id', `n${i + 1}`, '--listen', `127.0.0.1:${p}`, '--peers', peers, '--data-dir', join(root, `${partitions}-${p}`), '--cluster-secret', secret, '--jwt-secret', 'j'.repeat(32), '--partitions', String(partitions)],
      {},
    ),
  );
}


/** A node's /readyz: its status, and `catchingUp` from a 503's body. */
async function readyz(port: number): Promise<{ status: number; body: { catchingUp?: number[] } }> {
  const r = await request(`http://127.0.0.1:${port}/readyz`);
  return { status: r.statusCode, body: (await r.body.json()) as { catchingUp?: number[] } };
}

const leaderOf = (nodes: ClusterNode[], p: number): ClusterNode | undefined => nodes.find((n) => n.host.replica(p).isLeader());
const queue = (name: string) => ({ type: 'queue.create' as const, name, visibilityTimeoutSeconds: 30, maxDeliveries: null, deadLetterQueue: null, delaySeconds: 0, retentionSeconds: 3600 });
const send = (name: string, body: string) => ({ type: 'queue.send' as const, name, messages: [{ body, attributes: {} }] });

t.test('three nodes over HTTP: election, replication, failover, catch-up by snapshot', async (t) => {
  const cfgs = await configs(4);
  const opts = { tickMs: 20, snapshotEvery: 40, keepBehindSnapshot: 5 };
  const nodes = await Promise.all(cfgs.map((c) => ClusterNode.start(c, opts)));
  t.teardown(() => Promise.all(nodes.map((n) => n.close())));
  await until(() => nodes.every((n) => n.status().every((s) => s.leader !== null)), 'every node knows a leader for every partition', 2000, () => describeNodes(nodes));
  // Ready once each node also applied what its peers had committed when it asked (a moment after its
  // first look, on a machine slow to apply the first entries).
  const ready = await pollUntil(
    () => Promise.all(cfgs.map(async (c) => (await readyz(c.port)).status)),
    (statuses) => statuses.every((s) => s === 200),
  );
  t.same(ready, [200, 200, 200], '/readyz on every node');

  const p = 1;
  t.ok((await submit(nodes.map((n) => n.host), p, 'alice', queue('orders'))).ok);
  const first = leaderOf(nodes, p)!;
  const stopped = first;
  await stopped.close();
  const live = nodes.filter((n) => n !== stopped);
  await until(() => leaderOf(live, p) !== undefined, 'a new leader among the two others', 2000, () => describeNodes(nodes));
  for (let i = 0; i < 100; i++) t.ok((await submit(live.map((n) => n.host), p, 'alice', send('orders', `m${i}`))).ok, `write ${i} through the new leader`);
  const second = leaderOf(live, p)!;
  t.ok(second.host.replica(p).log.firstIndex() > 10, 'the survivors compacted their log');

  // The snapshot route tells the node serving an image as its chunks leave, which keeps the image in use.
  // Its images are held back until `release`: the restarted node cannot catch up on p before.
  const reads: number[] = [];
  let release = (): void => {};
  const held = new Promise<void>((r) => (release = r));
  for (const n of live) {
    const reading = n.host.snapshots.reading.bind(n.host.snapshots);
    n.host.snapshots.reading = (partition, path) => {
      reads.push(partition);
      reading(partition, path);
    };
    const imageFor = n.host.snapshots.imageFor.bind(n.host.snapshots);
    n.host.snapshots.imageFor = async (partition, ref) => {
      await held;
      return imageFor(partition, ref);
    };
  }
  const back = await ClusterNode.start(stopped.cfg, opts);
  t.teardown(() => back.close());
  const target = second.host.replica(p).state.applied().index;
  // Every partition led, the node hears its peers, but p is behind what they had committed: not ready,
  // so that a rolling restart does not stop the next node while p has only one replica up to date.
  await until(() => back.status().every((s) => s.leader !== null), 'the restarted node knows every leader', 2000, () => describeNodes([...live, back]));
  const waiting = await readyz(back.cfg.port);
  t.equal(waiting.status, 503, '/readyz of the node catching up');
  t.ok(waiting.body.catchingUp?.includes(p), `partition ${p} is catching up: ${JSON.stringify(waiting.body)}`);
  t.ok(appliedIndex(back.host.replica(p)) < target, 'it has not caught up');
  release();
  // Ready only once caught up: what it applied when it first answers 200 reaches what was committed
  // before it asked.
  const caughtUp = await pollUntil(() => readyz(back.cfg.port), (r) => r.status === 200);
  t.equal(caughtUp.status, 200, '/readyz once caught up');
  t.ok(appliedIndex(back.host.replica(p)) >= target, `ready with partition ${p} applied to ${appliedIndex(back.host.replica(p))}, at least ${target}`);
  // Caught up, and in step with the leader when the hashes are read (it may take its preferred
  // partition back meanwhile, whose first entry one of them applies before the other).
  await until(
    () => appliedIndex(back.host.replica(p)) >= target && appliedIndex(back.host.replica(p)) === appliedIndex(second.host.replica(p)),
    'the restarted node caught up',
    2000,
    () => describeNodes([...live, back]),
  );
  t.equal(stateHash(back.host.replica(p).state.sqlite), stateHash(second.host.replica(p).state.sqlite), 'identical state');
  t.ok(reads.includes(p), `the image's download was told to its node as it went (partitions told: ${[...new Set(reads)].join(', ')})`);
  nodes.splice(nodes.indexOf(stopped), 1, back);
});

/**
 * Two good nodes and `bad`, the third with something of its own: the good two elect a leader and
 * commit a write, then the bad one is looked at once the good ones were refused by it a few more
 * times since the commit (counted by their transports), rather than after a fixed pause that a slow
 * machine could fill with nothing. Its replica of partition 0 has applied nothing.
 */
async function refusedThird(t: Test, good: NodeConfig[], bad: NodeConfig, what: string, opts: { logger?: LoggerOptions } = {}): Promise<void> {
  // The three good nodes form the cluster first (a new cluster's first start waits for all three);
  // then the third is replaced by the bad one, on a folder of its own.
  const first = await Promise.all(good.map((c) => ClusterNode.start(c, { tickMs: 20 })));
  await until(() => first.every((n) => n.status()[0]!.leader !== null), 'the three good nodes elect a leader');
  await first[2]!.close();
  const nodes = [first[0]!, first[1]!, await ClusterNode.start({ ...bad, dataDir: `${bad.dataDir}-bad` }, { tickMs: 20, ...opts })];
  t.teardown(() => Promise.all(nodes.map((n) => n.close())));
  await until(() => leaderOf(nodes.slice(0, 2), 0) !== undefined, 'the two good nodes elect a leader');
  t.ok((await submit(nodes.slice(0, 2).map((n) => n.host), 0, 'alice', queue('q'))).ok, 'the good majority commits');
  const refused = (): number => nodes.slice(0, 2).reduce((n, node) => n + node.transport.stats().failed, 0);
  const atCommit = refused();
  await until(() => refused() >= atCommit + 3, 'the good nodes were refused by the bad one since the commit');
  t.equal(nodes[2]!.host.replica(0).state.applied().index, 0, `nothing reached the node with ${what}`);
}

t.test('a node with the wrong cluster secret is refused and cannot join', async (t) => {
  const good = await configs(1);
  // The bad node never gets the entry: its messages are refused and it refuses the others'.
  await refusedThird(t, good, { ...good[2]!, clusterSecret: 'x'.repeat(24) }, 'the wrong secret');
  const r = await request(`http://127.0.0.1:${good[0]!.port}/internal/raft`, { method: 'POST', body: Buffer.from('x'), headers: { authorization: 'Bearer wrong-secret-wrong', 'content-type': 'application/octet-stream' } });
  t.equal(r.statusCode, 401);
  await r.body.dump();
});

// A node given another MOM_JWT_SECRET than its peers joined them and served: a client's token worked
// on some nodes and not on others (401 "invalid or expired; log in again"), and no log said why. It
// is refused as a node with the wrong cluster secret is, and both sides say why.
t.test('a node with another JWT secret is refused and cannot join, and says why', async (t) => {
  const good = await configs(1);
  const log = captureLogs();
  await refusedThird(t, good, { ...good[2]!, jwtSecret: 'k'.repeat(32) }, 'the other JWT secret', { logger: log.logger });
  t.ok(log.lines.some((l) => /another JWT secret/.test(l)), 'the refusal says why');
});

/**
 * Three nodes of one partition, led by n1, its preferred leader, as all know: balancing moves nothing
 * during the test.
 */
async function ledByFirst(t: Test): Promise<{ leader: ClusterNode; follower: ClusterNode }> {
  const cfgs = await configs(1);
  const nodes = await Promise.all(cfgs.map((c) => ClusterNode.start(c, { tickMs: 20 })));
  t.teardown(() => Promise.all(nodes.map((n) => n.close())));
  await until(() => nodes.every((n) => n.status()[0]!.leader === 'n1'), 'n1 leads partition 0, as all know');
  return { leader: nodes[0]!, follower: nodes[1]! };
}

t.test('a system command goes to its leader as client commands do: in the Raft stream, never with an actor', async (t) => {
  const { leader, follower } = await ledByFirst(t);
  // The leader says in its stream's answer that it takes system commands: the follower's stream to it is open.
  await until(() => follower.transport.takesSystemCommands(leader.cfg.nodeId), 'the leader announced it in its stream');
  const carried = follower.transport.stats().carriedCommands;
  const r = await follower.node.router.proposeSystemAt(leader.cfg.nodeId, 0, { type: 'sweep' });
  t.same(r, { ok: true, value: { expired: 0, deadLettered: 0 } }, 'the leader applied it');
  t.equal(follower.transport.stats().carriedCommands, carried + 1, 'carried in the Raft stream, not posted');
  // The same command posted as a forwarded one: taken without an actor, refused with one.
  const post = async (body: unknown): Promise<unknown> => {
    const res = await request(`http://127.0.0.1:${leader.cfg.port}/internal/command`, {
      method: 'POST',
      body: JSON.stringify(body),
      headers: { authorization: `Bearer ${leader.cfg.clusterSecret}`, 'content-type': 'application/json' },
    });
    return res.body.json();
  };
  t.match(await post({ partition: 0, actor: null, command: { type: 'sweep' } }), { kind: 'ok', result: { ok: true } }, 'a system command without an actor is proposed');
  t.match(await post({ partition: 0, actor: 'mallory', command: { type: 'sweep' } }), { kind: 'ok', result: { ok: false, code: 'validation_failed' } }, 'with an actor it is refused');
  t.match(await post({ partition: 0, actor: 'mallory', command: { type: 7 } }), { kind: 'ok', result: { ok: false, code: 'validation_failed' } }, 'what is no command is refused');
  // A follower of partition 0 is not its leader: the answer says so, and proposeSystemAt rejects.
  await t.rejects(leader.node.router.proposeSystemAt(follower.cfg.nodeId, 0, { type: 'sweep' }), /not the leader/, 'a follower sends it back');
});

t.test("an older build's path for system commands (/internal/propose): only to the leader, only system work, only with the secret", async (t) => {
  const { leader, follower } = await ledByFirst(t);
  const post = async (node: ClusterNode, body: unknown, secret = node.cfg.clusterSecret): Promise<{ status: number; json: unknown }> => {
    const r = await request(`http://127.0.0.1:${node.cfg.port}/internal/propose`, {
      method: 'POST',
      body: JSON.stringify(body),
      headers: { authorization: `Bearer ${secret}`, 'content-type': 'application/json' },
    });
    return { status: r.statusCode, json: await r.body.json() };
  };
  const sweep = { partition: 0, command: { type: 'sweep' } };
  const ok = await post(leader, sweep);
  t.equal(ok.status, 200);
  t.same(ok.json, { result: { ok: true, value: { expired: 0, deadLettered: 0 } } }, 'the leader applied it');
  t.equal((await post(follower, sweep)).status, 421, 'a follower says it is not the leader');
  t.equal((await post(leader, { partition: 0, command: queue('sneaky') })).status, 400, 'user commands cannot be forwarded this way');
  t.equal((await post(leader, sweep, 'w'.repeat(24))).status, 401, 'a wrong secret is refused');
  t.equal((await post(leader, { partition: 0 })).status, 400, 'a malformed body is refused');
});
