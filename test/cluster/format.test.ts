// Rolling upgrades and the log format (src/store/broker/format.ts), with three in-process nodes over
// real HTTP. A node's build reads formats up to some number; here each node is told which, to play
// builds of different versions:
//
//   - while one node reads only format 1, no partition is raised past it;
//   - a raise that node cannot read (as after a downgrade) stops that partition on it alone, at the
//     entry before; the other two go on taking writes;
//   - restarted with a build that reads the format, it applies on and catches up, and once every node
//     reads format 2 the leaders raise every partition to it, alike on every replica;
//   - a node restarted onto an older build again halts every partition whose state is newer.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import t from 'tap';
import { MomServer } from '../../src/server.js';
import { loadConfig, type NodeConfig, type UnavailableError } from '../../src/cluster/index.js';
import { statePath } from '../../src/partition/snapshots.js';
import { stateHash, type Command } from '../../src/store/broker/index.js';
import { appliedIndex, proposeWhereLed, submit } from '../partition/host-helpers.js';
import { call, pollUntil, userToken } from '../api/api-helpers.js';
import { freePort, until } from './net-helpers.js';
import { describeNodes } from './node-view.js';

const root = mkdtempSync(join(tmpdir(), 'mom-format-'));
t.teardown(() => rmSync(root, { recursive: true, force: true }));

const PARTITIONS = 4;
const opts = { tickMs: 20 };
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const queue = (name: string): Command => ({ type: 'queue.create', name, visibilityTimeoutSeconds: 30, maxDeliveries: null, deadLetterQueue: null, delaySeconds: 0, retentionSeconds: 3600 });
const send = (name: string, body: string): Command => ({ type: 'queue.send', name, messages: [{ body, attributes: {} }] });

/**
 * Changes a state's tables as a later format could (a table rebuilt under another name, a migration
 * this build lacks), or takes the change back.
 */
function laterTables(path: string, on: boolean): void {
  const db = new Database(path);
  try {
    if (on) {
      db.exec('alter table messages rename to messages_next');
      db.exec("insert into kysely_migration (name, timestamp) values ('999_after_this_build', '2027-01-01T00:00:00.000Z')");
    } else {
      db.exec('alter table messages_next rename to messages');
      db.exec("delete from kysely_migration where name = '999_after_this_build'");
    }
  } finally {
    db.close();
  }
}

t.test('formats across a rolling upgrade, a premature raise and a downgrade', async (t) => {
  const ports = [await freePort(), await freePort(), await freePort()];
  const peers = ports.map((p, i) => `n${i + 1}=http://127.0.0.1:${p}`).join(',');
  const cfgs: NodeConfig[] = ports.map((p, i) =>
    loadConfig(['--node-id', `n${i + 1}`, '--listen', `127.0.0.1:${p}`, '--peers', peers, '--data-dir', join(root, `n${i + 1}`), '--cluster-secret', 's'.repeat(24), '--jwt-secret', 'j'.repeat(32), '--partitions', String(PARTITIONS)], {}),
  );
  // n1 and n2 run a build that reads format 2; n3 one that reads format 1 only.
  const nodes = await Promise.all(cfgs.map((c, i) => MomServer.start(c, { ...opts, format: i < 2 ? 2 : 1 })));
  t.teardown(() => Promise.all(nodes.map((n) => n.close())));
  const show = (): string => describeNodes(nodes);
  const formats = (n: MomServer): number[] => n.status().map((s) => s.format);
  await until(() => nodes.every((n) => n.status().every((s) => s.leader !== null)), 'every node knows a leader for every partition', 2000, show);
  for (let p = 0; p < PARTITIONS; p++) t.ok((await submit(nodes.map((n) => n.host), p, 'alice', queue(`q${p}`))).ok, `a write to partition ${p}`);
  // Twenty ticks make a raise period: give the leaders several, with every node heard from.
  await sleep(1_500);
  t.same(nodes.map(formats), [[1, 1, 1, 1], [1, 1, 1, 1], [1, 1, 1, 1]], 'nothing raised while n3 reads format 1 only');

  // A raise n3 cannot read, on a partition led by n1 or n2 (as if n3 had been downgraded after it
  // said it reads format 2).
  const [n1, n2, n3] = nodes as [MomServer, MomServer, MomServer];
  const raised = await proposeWhereLed([n1.host, n2.host], [...Array(PARTITIONS).keys()], null, { type: 'format.raise', format: 2 });
  const p = raised.partition;
  t.same(raised.result, { ok: true, value: { format: 2 } }, `partition ${p} raised to format 2`);
  // The node that took the raise: a replica in format 2 from here on, whether it still leads or not.
  const leader = raised.host === n1.host ? n1 : n2;
  // Nothing else writes to p meanwhile: the raise is the entry the leader applied last.
  const raiseAt = leader.host.replica(p).state.applied().index;
  await until(() => n3.status()[p]!.halted !== null, `n3 halts partition ${p}`, 2000, show);
  const halted = n3.status()[p]!;
  t.match(halted.halted, /format 2.*reads up to format 1/, 'it says why');
  t.equal(halted.leader, null, 'and follows no leader there');
  // Its state halted before the raise, in format 1; the partition is in format 2 all the same, and
  // routes gated on a format (user lifecycle: 9) go by what the partition is in, served by its leader.
  t.equal(halted.format, 1, 'its state stopped before the raise');
  t.equal(n3.node.router.format(p), 2, 'n3 counts the partition in the format it halted on');
  // Its state stays open there, frozen where the apply halted: no stale read is served from it.
  t.match(t.throws(() => n3.node.router.staleQuery(p, { type: 'queue.get', name: `q${p}`, user: 'alice' })), { reason: 'halted', status: 503 }, 'a stale read there is refused');
  t.equal(n3.host.replica(p).state.format(), 1, 'its state is still in format 1');
  t.ok(appliedIndex(n3.host.replica(p)) < raiseAt, `and applied nothing from the raise (${raiseAt}) on`);
  for (let i = 0; i < 5; i++) t.ok((await submit([n1.host, n2.host], p, 'alice', send(`q${p}`, `m${i}`))).ok, `n1 and n2 take write ${i} on partition ${p}`);
  t.same(n3.status().filter((s) => s.partition !== p).map((s) => s.halted), [null, null, null], 'n3 runs its other partitions');
  // Not ready, and saying why: p runs on two replicas, and a rolling restart that waits for /readyz
  // must not stop another node now.
  const notReady = await call(`http://127.0.0.1:${ports[2]}`, 'GET', '/readyz');
  t.equal(notReady.status, 503, "n3's /readyz");
  const why = notReady.body as { status: string; partitionsWithoutLeader: number[]; halted?: number[] };
  t.same([why.status, why.halted], ['not ready', [p]], 'names the halted partition');
  t.notOk(why.partitionsWithoutLeader.includes(p), 'not as a partition without a leader');

  // n3 upgraded: it applies the raise, catches up, and the leaders raise every other partition.
  await n3.close();
  const n3b = await MomServer.start(cfgs[2]!, { ...opts, format: 2 });
  nodes[2] = n3b;
  await until(() => nodes.every((n) => formats(n).every((f) => f === 2)), 'every partition in format 2 on every node', 2000, show);
  const ready = await pollUntil(() => call(`http://127.0.0.1:${ports[2]}`, 'GET', '/readyz'), (r) => r.status === 200);
  t.equal(ready.status, 200, 'n3 ready again, upgraded');
  t.ok((await submit(nodes.map((n) => n.host), p, 'alice', send(`q${p}`, 'after'))).ok);
  const target = leader.host.replica(p).state.applied().index;
  await until(() => nodes.every((n) => appliedIndex(n.host.replica(p)) >= target), `every node applied partition ${p} to ${target}`, 2000, show);
  const hashes = nodes.map((n) => stateHash(n.host.replica(p).state.sqlite));
  t.equal(new Set(hashes).size, 1, `partition ${p} byte-identical on the three nodes`);

  // Downgraded again: every partition's state is newer than the build, so each halts at once. One
  // state's tables changed as a later format could change them (a table rebuilt under another name,
  // a migration the older build lacks): the node opens all the same, without touching them.
  await n3b.close();
  laterTables(statePath(cfgs[2]!.dataDir, p), true);
  const n3c = await MomServer.start(cfgs[2]!, { ...opts, format: 1 });
  nodes[2] = n3c;
  t.same(n3c.status().map((s) => s.halted === null), [false, false, false, false], 'an older build halts every partition in a newer format');
  t.match(n3c.status()[p]!.halted, /format 2.*reads up to format 1/, 'the changed one too, saying why');
  const stale = t.throws(() => n3c.node.router.staleQuery(p, { type: 'queue.get', name: `q${p}`, user: 'alice' })) as UnavailableError;
  t.match(stale, { reason: 'halted', status: 503 }, 'a stale read there is refused: retry on another node');
  for (let q = 0; q < PARTITIONS; q++) t.ok((await submit([n1.host, n2.host], q, 'alice', send(`q${q}`, 'still'))).ok, `n1 and n2 still take writes on partition ${q}`);
  // Requests to n3 still work: its peers serve what its halted replicas cannot, a long poll included.
  t.match(await n3c.node.router.propose(p, 'alice', send(`q${p}`, 'through n3'), undefined), { ok: true }, 'a write through n3 is served by the leader');
  t.match(await n3c.node.router.query(p, { type: 'queue.get', name: `q${p}`, user: 'alice' }), { ok: true }, 'a linearizable read through n3 too');
  // The system's own commands too (housekeeping's dead letters): before, a halted replica knew no
  // leader to forward them to, and they waited for n3's upgrade.
  t.match(await n3c.host.proposeSystem(p, { type: 'sweep' }), { ok: true }, 'a system command from n3 is served by the leader');
  const api3 = `http://127.0.0.1:${cfgs[2]!.port}`;
  const token = await userToken(api3, 'bob');
  t.equal((await call(api3, 'POST', '/v1/queues', { token, body: { name: 'through-n3' } })).status, 201, 'a queue created through n3');
  const poll = call(api3, 'POST', '/v1/queues/through-n3/receive', { token, body: { maxMessages: 1, waitSeconds: 20 } });
  await sleep(300);
  t.equal((await call(`http://127.0.0.1:${cfgs[0]!.port}`, 'POST', '/v1/queues/through-n3/messages', { token, body: { body: 'late' } })).status, 201);
  t.match((await poll).body, { messages: [{ body: 'late' }] }, 'a long poll through n3 gets a message sent during its wait');

  // Upgraded once more (the change taken back, as if this build had made it): n3 applies on.
  await n3c.close();
  laterTables(statePath(cfgs[2]!.dataDir, p), false);
  const n3d = await MomServer.start(cfgs[2]!, { ...opts, format: 2 });
  nodes[2] = n3d;
  const last = leader.host.replica(p).state.applied().index;
  await until(() => appliedIndex(n3d.host.replica(p)) >= last, `n3 applied partition ${p} to ${last} again`, 2000, show);
  t.equal(stateHash(n3d.host.replica(p).state.sqlite), stateHash(leader.host.replica(p).state.sqlite), 'byte-identical to its leader');
});
