// A cluster restored from one copy must not drop new dead letters as duplicates of old ones
// (src/cluster/restore.ts, OUTBOX_PAST_COPY). A dead-letter queue deduplicates each letter for a day by
// its outbox row, `<partition>/<id>`, and one node's replicas lag apart: the copy's replica of the
// dead-letter queue's partition can remember a letter whose source partition's replica never gave
// its id (the two other nodes committed it without this one). Restored, the source partition would
// give that id again, to another message, and its dead-letter queue would drop it unseen.
//
// The lagging replicas are made by hand here: the dead-letter queue's state in the copy is given the
// deduplication row such a letter leaves (` dls:<source partition>/1`, the key of formats 13 on),
// while the source partition's replica has given no id.
import { cpSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import t from 'tap';
import { MomServer } from '../../src/server.js';
import type { NodeConfig } from '../../src/cluster/index.js';
import { OUTBOX_PAST_COPY, restoreCluster } from '../../src/cluster/restore.js';
import { statePath } from '../../src/partition/snapshots.js';
import { partitionOf } from '../../src/partition/routing.js';
import { FORMAT } from '../../src/store/broker/format.js';
import { threeNodeConfigs, until } from './net-helpers.js';
import { describeNodes } from './node-view.js';

const root = mkdtempSync(join(tmpdir(), 'mom-restore-outbox-'));
t.teardown(() => rmSync(root, { recursive: true, force: true }));

const PARTITIONS = 2;
const opts = { tickMs: 20 };

async function must(n: MomServer, method: string, path: string, body: unknown, status: number, token?: string): Promise<Record<string, unknown>> {
  const res = await fetch(`http://127.0.0.1:${n.cfg.port}${path}`, {
    method,
    headers: { ...(body === undefined ? {} : { 'content-type': 'application/json' }), ...(token === undefined ? {} : { authorization: `Bearer ${token}` }) },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  if (res.status !== status) throw new Error(`${method} ${path} on ${n.cfg.nodeId}: ${res.status} ${text}`);
  return text === '' ? {} : (JSON.parse(text) as Record<string, unknown>);
}

const settled = (nodes: MomServer[]): Promise<void> =>
  until(() => nodes.every((n) => n.status().every((s) => s.leader !== null && s.format === FORMAT)), `leaders everywhere, in format ${FORMAT}`, 5000, () => describeNodes(nodes));

/** The first name of `prefix-<i>` in partition `p`. */
function nameIn(prefix: string, p: number): string {
  for (let i = 0; ; i++) if (partitionOf(`${prefix}-${i}`, PARTITIONS) === p) return `${prefix}-${i}`;
}

t.test('restored from one copy: a new dead letter is not taken for one the copy\'s lagging replicas knew', async (t) => {
  const cfgs = await threeNodeConfigs(join(root, 'old'), PARTITIONS);
  let nodes = await Promise.all(cfgs.map((c) => MomServer.start(c, opts)));
  await settled(nodes);
  const source = 0;
  const target = 1;
  const dlq = nameIn('dead', target);
  const queue = nameIn('work', source);
  const alice = { username: 'alice', password: 'alice-password-1' };
  await must(nodes[0]!, 'POST', '/v1/auth/register', alice, 201);
  const token = (await must(nodes[0]!, 'POST', '/v1/auth/login', alice, 200)).accessToken as string;
  await must(nodes[0]!, 'POST', '/v1/queues', { name: dlq }, 201, token);
  await must(nodes[0]!, 'POST', '/v1/queues', { name: queue, maxDeliveries: 1, deadLetterQueue: dlq }, 201, token);
  await Promise.all(nodes.map((n) => n.close()));

  // n3's copy, its dead-letter queue's replica holding the key of a letter its source's never gave.
  const copy = join(root, 'copy-of-n3');
  cpSync(cfgs[2]!.dataDir, copy, { recursive: true });
  const state = new Database(statePath(copy, target));
  try {
    const { channel_id: channel } = state.prepare('select channel_id from queues where name = ?').get(dlq) as { channel_id: number };
    if (process.env.NO_ROW === undefined) state.prepare('insert into dedup (channel_id, dedup_id, message_id, seq, expires_at) values (?, ?, ?, 0, ?)').run(channel, ` dls:${source}/1`, 'a-letter-before-the-disaster', 2 ** 50);
  } finally {
    state.close();
  }
  const sourceSeq = (): number => {
    const db = new Database(statePath(copy, source), { readonly: true });
    try {
      return (db.prepare("select value from meta where key = 'outbox_seq'").get() as { value: number }).value;
    } finally {
      db.close();
    }
  };
  t.equal(sourceSeq(), 0, 'the copy\'s source partition has given no outbox id');

  const restored: NodeConfig[] = cfgs.map((c) => ({ ...c, clusterSecret: 'restored-cluster-secret', dataDir: `${c.dataDir}-restored` }));
  const done = await Promise.all(restored.map((c) => restoreCluster(c, copy)));
  t.same(new Set(done.map((d) => d.fingerprint)).size, 1, 'the three restored alike');
  t.same(
    done[0]!.positions.map((p) => p.outbox),
    [OUTBOX_PAST_COPY, OUTBOX_PAST_COPY],
    'every partition\'s outbox moved on past what the lost nodes could have given',
  );
  t.equal(sourceSeq(), 0, 'the copy itself is left as it was');

  nodes = await Promise.all(restored.map((c) => MomServer.start(c, opts)));
  t.teardown(() => Promise.all(nodes.map((n) => n.close())));
  await settled(nodes);
  const sent = await must(nodes[1]!, 'POST', `/v1/queues/${queue}/messages`, { body: 'poison after the restore' }, 201, token);
  const got = await must(nodes[2]!, 'POST', `/v1/queues/${queue}/receive`, { maxMessages: 1, visibilityTimeoutSeconds: 0 }, 200, token);
  t.equal((got.messages as unknown[]).length, 1, 'received once: its one delivery');
  // Dead-lettered: gone from its queue and from its partition's outbox on every replica, which its
  // forwarder clears only once the dead-letter queue's partition applied the letter (or dropped it).
  const left = (n: MomServer): boolean => {
    const state = n.host.replica(source).state;
    const depth = state.queueDepths(100).find((d) => d.queue === queue);
    return depth !== undefined && depth.ready + depth.leased + depth.delayed === 0 && state.outbox(10).length === 0;
  };
  await until(() => nodes.every(left), 'the letter out of its queue and its outbox on every replica', 6000, () => describeNodes(nodes));
  const dead = await must(nodes[0]!, 'POST', `/v1/queues/${dlq}/receive`, { maxMessages: 10 }, 200, token);
  t.match(dead.messages, [{ messageId: sent.messageId, body: 'poison after the restore' }], 'the new dead letter reached its queue');
});
