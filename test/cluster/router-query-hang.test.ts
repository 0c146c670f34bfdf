// A strong read forwarded to a leader that stopped answering without closing its connection (paused,
// cut off, its power cut). It waited the whole 10 s of a forwarded query, past the router's 5 s wait
// for a leader, and was then refused though this node had known the new leader for most of that time
// (review of 2026-12-07). Now an attempt waits at most what is left of the wait (at least 2 s), and a
// leader that became known meanwhile is asked once more.
import t from 'tap';
import type { PeerCaller } from '../../src/cluster/answer.js';
import { Router } from '../../src/cluster/router.js';
import type { NodeHost } from '../../src/partition/host.js';
import type { NodeId } from '../../src/raft/index.js';

const n2 = 'n2' as NodeId;
const n3 = 'n3' as NodeId;
const QUIET = { onWake: () => () => undefined, onDeliver: () => () => undefined, onHalt: () => () => undefined };

/**
 * A read through n1 whose known leader is n2, which never answers; `electedAfterMs` into n2's silence
 * (if at all) n1 learns that n3 leads. The router's clock is fake: a silent call takes its timeout.
 */
async function readPastSilentLeader(electedAfterMs: number | null) {
  let clock = 0;
  let leader: NodeId = n2;
  const replica = { ...QUIET, isLeader: () => false, leader: () => leader, halted: null };
  const asked: { peer: NodeId; at: number; timeoutMs: number }[] = [];
  const peers: PeerCaller = {
    call: async (peer, _path, _body, opts) => {
      asked.push({ peer, at: clock, timeoutMs: opts.timeoutMs });
      if (peer === n2) {
        if (electedAfterMs !== null && electedAfterMs < opts.timeoutMs) {
          clock += electedAfterMs;
          leader = n3;
          clock += opts.timeoutMs - electedAfterMs;
        } else {
          clock += opts.timeoutMs;
        }
        throw Object.assign(new Error(`no answer within ${opts.timeoutMs} ms`), { name: 'TimeoutError' });
      }
      return { status: 200, body: { kind: 'ok', result: { ok: true, value: `from ${peer}` } } };
    },
  };
  const host = { replica: () => replica, leadership: { cutOffFor: () => 0 } } as unknown as NodeHost;
  const router = new Router(host, peers, { self: 'n1' as NodeId, partitions: 1, pollMs: 5, now: () => clock });
  let outcome: unknown;
  try {
    outcome = await router.query(0, { type: 'queue.get', name: 'q', user: 'alice' });
  } catch (err) {
    outcome = { threw: (err as Error).message };
  }
  return { outcome, asked, atMs: clock };
}

t.test('a read whose leader went silent is tried at the new leader once one is known', async (t) => {
  const got = await readPastSilentLeader(1_500);
  t.same(got.asked.map((a) => a.peer), [n2, n3], 'after the silent leader, the known new leader is asked');
  t.same(got.outcome, { ok: true, value: 'from n3' }, 'the read is answered by the new leader');
  t.ok(got.asked[0]!.timeoutMs <= 5_000, `the silent leader held the read ${got.asked[0]!.timeoutMs} ms, at most the wait for a leader`);
});

t.test('with no other leader known, the read is refused when the wait for a leader ends', async (t) => {
  const got = await readPastSilentLeader(null);
  t.match(got.outcome, { threw: /no reachable leader/ });
  t.ok(got.atMs <= 5_000 + 2_000, `refused after ${got.atMs} ms, not after the forwarded query's 10 s`);
  t.ok(got.asked.every((a) => a.peer === n2), 'only n2 was ever known');
});
