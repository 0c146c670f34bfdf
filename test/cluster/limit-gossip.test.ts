// Rate-limit events shared between nodes (limit-gossip.ts): batched to every peer, never retried, bounded.
import t from 'tap';
import type { NodeId } from '../../src/raft/index.js';
import { LimitGossip, MAX_BATCH_EVENTS, MAX_QUEUED_EVENTS } from '../../src/cluster/limit-gossip.js';
import { until } from './net-helpers.js';

/** A gossip to peers b and c whose deliveries the test holds and settles. */
function gossip() {
  const sent: { peer: string; events: readonly unknown[]; settle: (ok: boolean) => void }[] = [];
  const g = new LimitGossip(['b', 'c'] as NodeId[], (peer, events) => new Promise<void>((resolve, reject) => sent.push({ peer, events, settle: (ok) => (ok ? resolve() : reject(new Error('refused'))) })), 0);
  t.teardown(() => g.close());
  return { g, sent };
}

const turn = () => new Promise((r) => setTimeout(r, 5));
/** Waits (bounded) until `n` batches left: not a timing assertion, the machine may be slow. */
const batches = (sent: unknown[], n: number) => until(() => sent.length >= n, `${n} batches sent`);

t.test('every event goes to every peer, in batches, one batch in flight per peer', async (t) => {
  const { g, sent } = gossip();
  g.publish({ n: 1 });
  g.publish({ n: 2 });
  await batches(sent, 2);
  t.strictSame(sent.map((s) => [s.peer, s.events]), [['b', [{ n: 1 }, { n: 2 }]], ['c', [{ n: 1 }, { n: 2 }]]]);
  g.publish({ n: 3 });
  await turn();
  t.equal(sent.length, 2, 'the next batch waits for the one in flight');
  sent[0]!.settle(true);
  sent[1]!.settle(false);
  await batches(sent, 4);
  t.strictSame(sent.slice(2).map((s) => [s.peer, s.events]), [['b', [{ n: 3 }]], ['c', [{ n: 3 }]]], 'then leaves; the refused batch is not sent again');
  sent[2]!.settle(true);
  sent[3]!.settle(true);
  await until(() => g.stats.sent === 4, 'both taken');
  t.strictSame(g.stats, { sent: 4, received: 0, dropped: 2 });
});

t.test('a peer that takes nothing holds at most MAX_QUEUED_EVENTS; a batch holds at most MAX_BATCH_EVENTS', async (t) => {
  const { g, sent } = gossip();
  g.publish(0);
  await batches(sent, 2);
  for (let i = 1; i <= MAX_QUEUED_EVENTS + 5; i++) g.publish(i);
  t.equal(g.stats.dropped, 2 * 5, 'past the bound, new events are dropped for each peer');
  sent[0]!.settle(true);
  await batches(sent, 3);
  t.equal(sent[2]!.events.length, MAX_BATCH_EVENTS);
});

t.test("a peer's events reach every listener; nothing is sent once closed", async (t) => {
  const { g, sent } = gossip();
  const heard: unknown[] = [];
  g.subscribe((e) => heard.push(e));
  g.receive([{ kind: 'register', address: '10.0.0.1' }, 'junk']);
  t.strictSame(heard, [{ kind: 'register', address: '10.0.0.1' }, 'junk'], 'the listener checks what it gets');
  t.equal(g.stats.received, 2);
  g.close();
  g.publish(1);
  await turn();
  t.equal(sent.length, 0);
});
