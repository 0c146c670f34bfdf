// The network fault layer (net-faults.ts) in one process: a request to a blocked peer fails as a
// refused connection would (Raft batches counted failed through the transport's own fail(), call
// rejects with code ECONNREFUSED, fetchSnapshot with SnapshotFetchError caused by one), the
// control file is re-read when it changes, and the state file reports the counters.
import { mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { SnapshotFetchError } from '../../src/cluster/snapshot-fetch.js';
import { HttpTransport } from '../../src/cluster/transport.js';
import { MessageType, type NodeId } from '../../src/raft/index.js';
import { freePort } from '../cluster/net-helpers.js';
import { sleep } from './cluster.js';
import type { NetState } from './net-faults.js';

const dir = mkdtempSync(join(tmpdir(), 'mom-net-faults-'));
const control = join(dir, 'net-n1.json');
const writeControl = (version: number, blocked: string[]): void => {
  writeFileSync(`${control}.tmp`, JSON.stringify({ version, blocked }));
  renameSync(`${control}.tmp`, control);
};
const codeOf = (e: unknown): unknown => (e as { code?: unknown } | null)?.code;
const state = (): NetState => JSON.parse(readFileSync(`${control}.state.json`, 'utf8')) as NetState;
writeControl(1, ['n2']);
process.env.MOM_CHAOS_NET = control;
await import('./net-faults.js');
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

/** Polls `pred` until it holds or 30 s pass (a guard against hanging; the caller asserts after). */
async function eventually(pred: () => boolean): Promise<void> {
  const deadline = Date.now() + 30_000;
  while (!pred() && Date.now() < deadline) await sleep(20);
}

const n1 = 'n1' as NodeId;
const n2 = 'n2' as NodeId;
// Nobody listens on these ports: an unblocked request is refused by the kernel.
const peers = [
  { id: n1, url: `http://127.0.0.1:${await freePort()}` },
  { id: n2, url: `http://127.0.0.1:${await freePort()}` },
];
const warnings: string[] = [];
const tr = new HttpTransport({ self: n1, peers, clusterSecret: 's'.repeat(32), logger: { warn: (obj) => warnings.push(String((obj as { reason?: unknown }).reason)) } });
t.teardown(() => tr.close());

t.test('blocked: every kind of request fails as refused, without a connection', async (t) => {
  t.equal(state().version, 1, 'the layer applied the control file at load');
  tr.send([{ partition: 0, message: { type: MessageType.Heartbeat, from: n1, to: n2, term: 1, commit: 0, readRound: 0 } }]);
  // send() is fire-and-forget: wait for its outcome (bounded), not for a fixed while.
  await eventually(() => tr.stats().failed >= 1);
  t.equal(tr.stats().failed, 1, 'the Raft batch counted as failed');
  t.match(warnings[0], /^ECONNREFUSED: .*chaos net-faults: .* -> n2 cut/, 'reported as a refused connection');
  const callErr = await tr.call(n2, '/internal/query', {}, { timeoutMs: 1_000 }).then(() => null, (e: unknown) => e);
  t.equal(codeOf(callErr), 'ECONNREFUSED', 'call rejects with ECONNREFUSED');
  const snapErr = await tr.fetchSnapshot(n2, 0, 'p0-1-1', join(dir, 'x.db')).then(() => null, (e: unknown) => e);
  t.ok(snapErr instanceof SnapshotFetchError, 'fetchSnapshot rejects with SnapshotFetchError');
  t.equal(codeOf((snapErr as { cause?: unknown }).cause), 'ECONNREFUSED', 'caused by ECONNREFUSED');
  // The layer writes its state file about once a second after its counters move: wait until it has.
  const counted = (): number[] => {
    const c = state().counters;
    return [c.deliver.blocked, c.call.blocked, c.fetchSnapshot.blocked];
  };
  await eventually(() => counted().every((n) => n >= 1));
  t.same(counted(), [1, 1, 1], 'the state file counts them');
});

t.test('healed: the control file is re-read, and requests go out again', async (t) => {
  writeControl(2, []);
  await eventually(() => state().version === 2);
  t.equal(state().version, 2, 'the change was picked up');
  const err = await tr.call(n2, '/internal/query', {}, { timeoutMs: 1_000 }).then(() => null, (e: unknown) => e);
  t.equal(codeOf(err), 'ECONNREFUSED', 'refused by the kernel now');
  t.notMatch(String((err as Error).message), /chaos/, 'not by the layer');
});
