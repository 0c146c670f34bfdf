// A body that cannot be read back from the log during an apply (a record that fails its check: bit
// rot, a bad sector; or EIO) is the node's storage failing, never the command's fault: the node stops,
// as for a body the log lost. It was taken for a malformed command: that one replica refused the
// receive alone while the others leased the message, and went on serving a state no longer the
// others' (review of 2026-12-07).
import { closeSync, openSync, readSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import type { NodeHost } from '../../src/partition/host.js';
import { FORMAT, stateHash, type Result } from '../../src/store/broker/index.js';
import { bodyPlace } from '../../src/store/broker/bodies.js';
import type { PartitionView } from '../../src/store/wal/partition-view.js';
import { segmentName } from '../../src/store/wal/segment.js';
import { LocalCluster, appliedIndex, queue } from './host-helpers.js';

/**
 * Three nodes reading bodies back from their segments (nothing cached), one message sent: its entry,
 * and the loop turns that failed (a failed turn stops its host and rethrows from its setImmediate;
 * the process then ends, and a restart finds the damage when it checks the log).
 */
async function cluster(t: Test): Promise<{ c: LocalCluster; entry: number; failures: unknown[] }> {
  const failures: unknown[] = [];
  const onRejection = (err: unknown): void => void failures.push(err);
  process.on('unhandledRejection', onRejection);
  t.teardown(() => void process.off('unhandledRejection', onRejection));
  const c = new LocalCluster(1, { balanceLeaders: false, log: { cacheBytes: 0 } });
  t.teardown(() => c.close());
  await c.startAll();
  await c.until(() => c.leaderOf(0) !== null, 'a leader');
  await c.until(() => [...c.hosts.values()].every((h) => h.replica(0).state.format() === FORMAT), 'the format raised everywhere');
  t.ok((await c.submit(0, 'alice', queue('q'))).ok);
  const sent = await c.submit(0, 'alice', { type: 'queue.send', name: 'q', messages: [{ body: 'hello', attributes: {} }] });
  t.ok(sent.ok);
  const entry = bodyPlace((sent as { value: { items: { sequence: number }[] } }).value.items[0]!.sequence).index;
  await c.until(() => [...c.hosts.values()].every((h) => appliedIndex(h.replica(0)) >= entry), 'every node applied the send');
  return { c, entry, failures };
}

/** Flips one byte of the payload of entry `index`'s record in `host`'s segment file. */
function damage(c: LocalCluster, host: NodeHost, index: number): void {
  const view = host.replica(0).log as unknown as PartitionView;
  const fd = openSync(join(c.root, host.opts.self, 'wal', segmentName(view.locations.segment(index))), 'r+');
  try {
    const at = view.locations.offset(index) + 42;
    const b = Buffer.alloc(1);
    readSync(fd, b, 0, 1, at);
    b[0] = b[0]! ^ 0xff;
    writeSync(fd, b, 0, 1, at);
  } finally {
    closeSync(fd);
  }
}

const receive = { type: 'receive', channel: { queue: 'q' }, maxMessages: 10, visibilityTimeoutSeconds: 30 } as const;

t.test('a follower that cannot read a body back stops; the others lease the message', async (t) => {
  const { c, entry, failures } = await cluster(t);
  const leader = c.leaderOf(0)!;
  const [f, other] = [...c.hosts.values()].filter((h) => h !== leader) as [NodeHost, NodeHost];
  damage(c, f, entry);
  const got = await c.submit(0, 'alice', receive);
  t.ok(got.ok && (got as { value: { messages: unknown[] } }).value.messages.length === 1, 'the leader leased the message');
  await c.until(() => failures.length > 0, "the damaged follower's loop to stop");
  t.match(String(failures[0]), `BodyMissingError: partition 0: the body at entry ${entry} cannot be read from the log: raft log storage corrupt`);
  t.equal(failures.length, 1, 'on that node only');
  await c.until(() => appliedIndex(other.replica(0)) === appliedIndex(leader.replica(0)), 'the other follower in step');
  t.equal(stateHash(other.replica(0).state.sqlite), stateHash(leader.replica(0).state.sqlite), 'the two left hold the same state');
});

t.test('a leader that cannot read a body back stops rather than answer the receive as malformed', async (t) => {
  const { c, entry, failures } = await cluster(t);
  const leader = c.leaderOf(0)!;
  damage(c, leader, entry);
  const got = await leader
    .replica(0)
    .propose('alice', receive)
    .catch((err: unknown): Result | Error => err as Error);
  t.notMatch(JSON.stringify(got), /malformed command/, `not answered as a malformed command: ${JSON.stringify(got)}`);
  await c.until(() => failures.length > 0, "the damaged leader's loop to stop");
  t.match(String(failures[0]), `BodyMissingError: partition 0: the body at entry ${entry} cannot be read from the log`);
  const [a, b] = [...c.hosts.values()].filter((h) => h !== leader) as [NodeHost, NodeHost];
  await c.until(() => appliedIndex(a.replica(0)) === appliedIndex(b.replica(0)) && appliedIndex(a.replica(0)) > entry, 'the other two in step');
  t.equal(stateHash(a.replica(0).state.sqlite), stateHash(b.replica(0).state.sqlite), 'the two left hold the same state');
});
