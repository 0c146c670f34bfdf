// The dead-letter forwarder (Housekeeping) reads a partition's outbox page by page. It read the first
// 100 rows only, those in flight among them: a partition drained at most 100 letters a pass (about 50
// a second) while one sweep dead-letters up to 1,000 and a purge any number, and 100 letters for a
// queue whose partition could not take them (halted, leaderless) held back every letter behind them.
// And in flight: a pass then sent 16 MiB more behind the deliveries that hung, each pass. From the
// reviews of stop 61. Over a fake host: what the forwarder asks is checked.
import t from 'tap';
import type { NodeHost } from '../../src/partition/host.js';
import { Housekeeping } from '../../src/partition/housekeeping.js';
import { NotLeaderError } from '../../src/partition/errors.js';
import { partitionOf } from '../../src/partition/routing.js';
import { FORMAT, type Command, type OutboxRow } from '../../src/store/broker/index.js';

type Deliver = Extract<Command, { type: 'deadletter.deliver' }>;
/** The cluster clock the forwarder's back-off counts by: a test moves it as passes go by. */
const clock = { now: Date.now() };

/** A leader of partition 0 whose outbox is `rows`, and whose deliveries `deliver` answers; its pass. */
function forwarder(rows: OutboxRow[], deliver: (p: number, c: Deliver) => Promise<unknown>): () => void {
  let pass: () => void = () => undefined;
  const replica = {
    partition: 0,
    isLeader: () => true,
    halted: null,
    propose: (_actor: string | null, c: Command) => {
      if (c.type === 'outbox.done') for (const id of c.ids) rows.splice(rows.findIndex((r) => r.id === id), 1);
      return Promise.resolve({ ok: true, value: null });
    },
    state: {
      isOpen: () => true,
      needsSweep: () => false,
      format: () => FORMAT,
      clock: () => clock.now,
      waitingTagged: () => [],
      outboxHeads: (limit: number, after: number) => rows.filter((r) => r.id > after).slice(0, limit),
      outboxLetter: (id: number) => rows.find((r) => r.id === id) ?? null,
    },
  };
  const host = {
    onPass: (f: () => void) => (pass = f),
    onTick: () => undefined,
    opts: { self: 'n1', voters: ['n1'], partitions: 8 },
    replicas: [replica],
    clock: { now: () => clock.now },
    leadership: { notAnswering: () => [] },
    peerFormat: () => FORMAT,
    proposeSystem: (p: number, c: Command) => deliver(p, c as Deliver),
  } as unknown as NodeHost;
  new Housekeeping(host);
  return () => pass();
}

const settle = (): Promise<void> => new Promise((r) => setTimeout(r, 20));
const letter = (id: number, queue: string, body = `b${id}`): OutboxRow => ({ id, targetQueue: queue, expectedOwner: 'alice', messageId: `m${id}`, body, attributes: {} });
const taken = (c: Deliver) => ({ ok: true, value: { delivered: c.messages.length, dropped: 0 } });

t.test('one pass forwards what one sweep can dead-letter, in deliveries of 100 letters at most', async (t) => {
  const rows = Array.from({ length: 1000 }, (_, i) => letter(i + 1, 'dlq'));
  const sizes: number[] = [];
  const pass = forwarder(rows, async (_p, c) => (sizes.push(c.messages.length), taken(c)));
  pass();
  await settle();
  t.equal(sizes.reduce((a, b) => a + b, 0), 1000, 'every letter delivered in one pass');
  t.ok(sizes.every((n) => n <= 100), 'no delivery over 100 letters');
  t.equal(rows.length, 0, 'the outbox is empty');
});

t.test('letters for a partition that cannot take them hold back none of the others', async (t) => {
  const down = 'down';
  let up = 'up';
  for (let i = 0; partitionOf(up, 8) === partitionOf(down, 8); i++) up = `up${i}`;
  const rows = [...Array.from({ length: 100 }, (_, i) => letter(i + 1, down)), ...Array.from({ length: 5 }, (_, i) => letter(101 + i, up))];
  const asked: string[] = [];
  const got = new Map<string, number>();
  const pass = forwarder(rows, async (p, c) => {
    asked.push(c.queue);
    if (p === partitionOf(down, 8)) throw new NotLeaderError(p, null);
    got.set(c.queue, (got.get(c.queue) ?? 0) + c.messages.length);
    return taken(c);
  });
  pass();
  await settle();
  t.equal(got.get(up), 5, 'the healthy queue has its letters after one pass');
  t.equal(rows.length, 100, 'those for the other wait in the outbox');
  const before = asked.length;
  pass();
  await settle();
  t.equal(asked.length, before, 'a partition whose delivery failed is not asked again at once');
});

t.test('a delivery carries at most 1 MiB of bodies, and one letter always', async (t) => {
  const big = 'x'.repeat(300 * 1024);
  const rows = [...Array.from({ length: 10 }, (_, i) => letter(i + 1, 'dlq', big)), letter(11, 'dlq', 'y'.repeat(2 * 1024 * 1024))];
  const bytes: number[] = [];
  const pass = forwarder(rows, async (_p, c) => (bytes.push(c.messages.reduce((n, m) => n + m.body.length, 0)), taken(c)));
  pass();
  await settle();
  t.equal(rows.length, 0, 'every letter delivered');
  t.ok(bytes.slice(0, -1).every((n) => n <= 1024 * 1024), `deliveries of ${bytes.map((n) => Math.round(n / 1024)).join(', ')} KiB`);
  t.equal(bytes.at(-1), 2 * 1024 * 1024, 'a letter over the limit goes alone');
});

t.test('letters behind 10,000 for a partition that cannot take them are delivered in the end', async (t) => {
  const down = 'down';
  let up = 'up';
  for (let i = 0; partitionOf(up, 8) === partitionOf(down, 8); i++) up = `up${i}`;
  const rows = [...Array.from({ length: 10_000 }, (_, i) => letter(i + 1, down)), ...Array.from({ length: 5 }, (_, i) => letter(10_001 + i, up))];
  let got = 0;
  const pass = forwarder(rows, async (p, c) => {
    if (p === partitionOf(down, 8)) throw new NotLeaderError(p, null);
    got += c.messages.length;
    return taken(c);
  });
  // A pass every two election timeouts: each reads on from where the last one stopped.
  for (let i = 0; i < 10 && got < 5; i++) {
    pass();
    await settle();
    clock.now += 2_000;
  }
  t.equal(got, 5, "the healthy queue's letters delivered");
});

t.test('deliveries in flight are bounded while a partition does not answer', async (t) => {
  const body = 'x'.repeat(256 * 1024);
  const rows = Array.from({ length: 400 }, (_, i) => letter(i + 1, 'dlq', body));
  let inFlight = 0;
  const pass = forwarder(rows, (_p, c) => {
    inFlight += c.messages.reduce((n, m) => n + m.body.length, 0);
    // The leader asked does not answer (yet): a forward waits up to its timeout.
    return new Promise(() => undefined);
  });
  for (let i = 0; i < 5; i++) {
    pass();
    await settle();
    clock.now += 2_000;
  }
  t.ok(inFlight <= 4 * 1024 * 1024, `bodies in flight toward it after 5 passes: ${Math.round(inFlight / 1024)} KiB`);
});
