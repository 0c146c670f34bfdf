// Long polls parked in the partition's state (format 3): a receive that finds nothing waits in the
// state, and the apply that makes messages visible leases them to the polls that waited longest, in
// the same entry, alike on every replica. The node holding a poll answers it from its own apply.
import t from 'tap';
import { OWN_LEASES_HELD, stateHash, type Applied, type Command, type Delivery, type Envelope } from '../../../src/store/broker/index.js';
import { Rng } from '../../raft/sim/rng.js';
import { TestStore, queue, send } from './helpers.js';

const park = (name: string, tag: string, opts: { max?: number; ms?: number; again?: boolean; vt?: number | null } = {}): Command => ({
  type: 'receive',
  channel: { queue: name },
  maxMessages: opts.max ?? 1,
  visibilityTimeoutSeconds: opts.vt ?? null,
  wait: { tag, ms: opts.ms ?? 20_000, again: opts.again ?? false },
});
const bodies = (d: Delivery): [string, string[]] => [d.tag, d.messages.map((m) => m.body)];
/** Polls still waiting: from format 16 a served one stays in the table, for its poll's next look. */
const waiting = (s: TestStore): number => (s.sm.sqlite.prepare('select count(*) as n from waiters where served is null').get() as { n: number }).n;
const stats = (s: TestStore, name: string) => (s.sm.getQueue(name, 'alice', s.time) as { ok: true; value: { stats: { visible: number; inFlight: number } } }).value.stats;

async function store(t: { teardown(fn: () => unknown): void }, format?: number): Promise<TestStore> {
  const s = await TestStore.open(0, undefined, format);
  t.teardown(() => s.close());
  s.must('alice', { type: 'user.register', username: 'alice', passwordHash: 'x' });
  s.must('alice', queue('q'));
  return s;
}

t.test('a receive that finds nothing parks; the send that follows leases its message to it in its own entry', async (t) => {
  const s = await store(t);
  t.same(s.must('alice', park('q', 'n1.a.1')), { messages: [], parked: 'parked' });
  const a = s.apply('alice', send('q', 'hello'));
  t.ok(a.result.ok);
  t.same(a.delivered.map(bodies), [['n1.a.1', ['hello']]]);
  t.same(a.woke, [], 'nothing left to wake polls waiting on nodes');
  t.match(stats(s, 'q'), { visible: 0, inFlight: 1 }, 'leased, as a receive leases');
  // Acknowledged like any received message.
  t.match(s.must('alice', { type: 'ack', channel: { queue: 'q' }, receiptHandles: [a.delivered[0]!.messages[0]!.receiptHandle] }), { acked: [a.delivered[0]!.messages[0]!.receiptHandle] });
  t.same(s.apply('alice', send('q', 'again')).delivered, [], 'a served poll waits no more');
});

t.test('a receive with a visibility timeout of 0 that wakes a parked poll does not give that poll the message it just leased (format 12): one lease, one receipt handle', async (t) => {
  // The receive's own look promotes the delayed message and leases it for 0 s; the poll it woke, in
  // the same entry, found that lease already ended and leased the message again, under the same
  // lease id: two consumers held one receipt handle, and the first one's late ack deleted the
  // message the poll held for 30 s.
  const heldTwice = async (format: number): Promise<boolean> => {
    const s = await store(t, format);
    s.must('alice', park('q', 'w', { vt: 30 }));
    s.must('alice', { type: 'queue.send', name: 'q', messages: [{ body: 'x', attributes: {}, delaySeconds: 1 }] });
    s.advance(1);
    const a = s.apply('alice', { type: 'receive', channel: { queue: 'q' }, maxMessages: 1, visibilityTimeoutSeconds: 0 });
    const own = (a.result as { ok: true; value: { messages: { receiptHandle: string }[] } }).value.messages;
    t.equal(own.length, 1, `format ${format}: the receive leases the message`);
    const poll = a.delivered.flatMap((d) => d.messages);
    if (format >= OWN_LEASES_HELD) {
      t.ok(a.retimed.length > 0, "the lease is reported retimed: the poll's node looks again");
      // Its look, the next entry: the 0-second lease has ended, and the poll takes the message.
      const look = s.run('alice', park('q', 'w', { vt: 30, again: true })) as { ok: true; value: { messages: { receiptHandle: string }[] } };
      t.equal(look.value.messages.length, 1, 'the poll gets it at its next look');
      t.not(look.value.messages[0]!.receiptHandle, own[0]!.receiptHandle, 'under a lease of its own');
    }
    return poll.some((m) => m.receiptHandle === own[0]!.receiptHandle);
  };
  t.notOk(await heldTwice(OWN_LEASES_HELD), 'the poll is not given it in the same entry');
  t.ok(await heldTwice(OWN_LEASES_HELD - 1), 'before format 12 it was, as older builds still do');
});

t.test('the polls that waited longest are served first, each up to its maxMessages', async (t) => {
  const s = await store(t);
  s.must('alice', park('q', 'first', { max: 2 }));
  s.must('alice', park('q', 'second', { max: 2 }));
  s.must('alice', park('q', 'third', { max: 10 }));
  s.must('alice', park('q', 'fourth'));
  const a = s.apply('alice', send('q', 'a', 'b', 'c', 'd', 'e'));
  t.same(a.delivered.map(bodies), [
    ['first', ['a', 'b']],
    ['second', ['c', 'd']],
    ['third', ['e']],
  ]);
  t.same(s.apply('alice', send('q', 'f')).delivered.map(bodies), [['fourth', ['f']]]);
});

t.test('messages made visible by a nack or a publish serve parked polls too', async (t) => {
  const s = await store(t);
  const [m] = (s.must('alice', send('q', 'x')) as { items: unknown[] }).items;
  t.ok(m);
  const got = s.must('alice', park('q', 'taker')) as { messages: { receiptHandle: string }[] };
  t.equal(got.messages.length, 1, 'a message was visible: no park');
  s.must('alice', park('q', 'waiter'));
  const nack = s.apply('alice', { type: 'nack', channel: { queue: 'q' }, receiptHandles: [got.messages[0]!.receiptHandle], delaySeconds: 0 });
  t.same(nack.delivered.map(bodies), [['waiter', ['x']]]);

  s.must('alice', { type: 'topic.create', name: 'news', subscribe: 'anyone' });
  s.must('alice', { type: 'subscription.create', topic: 'news', name: 'mine', visibilityTimeoutSeconds: 30, maxDeliveries: null, deadLetterQueue: null, filter: null });
  const sub = { topic: 'news', subscription: 'mine' };
  t.same(s.must('alice', { type: 'receive', channel: sub, maxMessages: 5, visibilityTimeoutSeconds: null, wait: { tag: 'reader', ms: 5000, again: false } }), { messages: [], parked: 'parked' });
  t.same(s.apply('alice', { type: 'topic.publish', name: 'news', messages: [{ body: 'extra', attributes: {} }] }).delivered.map(bodies), [['reader', ['extra']]]);
});

t.test('a poll past its deadline takes nothing, and stays until its last look: "gone" means served', async (t) => {
  const s = await store(t);
  s.must('alice', park('q', 'late', { ms: 1000 }));
  s.advance(2);
  const a = s.apply('alice', send('q', 'kept'));
  t.same(a.delivered, []);
  t.equal(a.woke.length, 1, 'it wakes polls waiting on nodes instead');
  t.match(stats(s, 'q'), { visible: 1, inFlight: 0 });
  // Its node's clock ran behind the state's: the poll looks again, finds its row, and takes the message.
  t.same(s.must('alice', park('q', 'late', { ms: 0, again: true })).messages.map((m: { body: string }) => m.body), ['kept']);
  t.equal(waiting(s), 0);
});

t.test('a leaving look takes the poll out and leases nothing, even what is visible', async (t) => {
  const s = await store(t);
  s.must('alice', park('q', 'p'));
  s.must('alice', { type: 'queue.send', name: 'q', messages: [{ body: 'later', attributes: {}, delaySeconds: 1 }] });
  s.advance(2);
  t.same(s.must('alice', { ...park('q', 'p', { ms: 0, again: true }), wait: { tag: 'p', ms: 0, again: true, leave: true } } as Command), { messages: [] });
  t.equal(waiting(s), 0);
  t.match(stats(s, 'q'), { visible: 1, inFlight: 0 }, 'the message that became visible by time is nobody’s');
});

t.test('a lease of 0 seconds given to one parked poll is not given to the next in the same entry', async (t) => {
  const s = await store(t);
  s.must('alice', park('q', 'a', { vt: 0 }));
  s.must('alice', park('q', 'b', { vt: 0 }));
  t.same(s.apply('alice', send('q', 'once')).delivered.map(bodies), [['a', ['once']]]);
  t.equal(waiting(s), 1, 'b waits on');
});

t.test('a send retried with its Idempotency-Key across the raise to format 2 replays, not 409', async (t) => {
  const s = await store(t, 1);
  const command = send('q', 'same request');
  const first = s.run('alice', command, 'k1');
  s.must(null, { type: 'format.raise', format: 2 });
  t.same(s.run('alice', command, 'k1'), first, 'the same result: bodies as text in the fingerprint');
});

t.test('looking again replaces the parked poll; once it was served, the look answers what it was given, and takes nothing more', async (t) => {
  const s = await store(t);
  s.must('alice', park('q', 'p'));
  // Looked again (a lease or delay ended, as the node's timer said): still nothing, parked anew.
  t.same(s.must('alice', park('q', 'p', { again: true })), { messages: [], parked: 'parked' });
  t.equal(waiting(s), 1, 'one waiter, not two');
  const a = s.apply('alice', send('q', 'one', 'two'));
  t.same(a.delivered.map(bodies), [['p', ['one']]]);
  // Its node looks again without applying that send (it caught up through a snapshot past it): the
  // look answers the message the poll was given, under the same receipt handle, and takes no other.
  const look = s.must('alice', park('q', 'p', { again: true }));
  t.same(look, { messages: a.delivered[0]!.messages, parked: 'gone' });
  t.match(stats(s, 'q'), { visible: 1, inFlight: 1 });
  t.equal((s.sm.sqlite.prepare('select count(*) as n from waiters').get() as { n: number }).n, 0, 'the look took the served poll out of the state');
  t.same(s.must('alice', park('q', 'p', { again: true })), { messages: [], parked: 'gone' }, 'a second look finds nothing of it');
});

t.test('a served poll looked at after its message was acked, or given back, answers without it', async (t) => {
  const s = await store(t);
  s.must('alice', park('q', 'acked', { max: 2 }));
  const a = s.apply('alice', send('q', 'one', 'two'));
  const [one] = a.delivered[0]!.messages;
  s.must('alice', { type: 'ack', channel: { queue: 'q' }, receiptHandles: [one!.receiptHandle] });
  t.same(s.must('alice', park('q', 'acked', { again: true })), { messages: [a.delivered[0]!.messages[1]], parked: 'gone' });
});

t.test('before format 16 a served poll leaves the state: its look takes nothing, and its node learns of the messages from its apply alone', async (t) => {
  const s = await store(t, 15);
  s.must('alice', park('q', 'p'));
  t.same(s.apply('alice', send('q', 'one')).delivered.map(bodies), [['p', ['one']]]);
  t.equal((s.sm.sqlite.prepare('select count(*) as n from waiters').get() as { n: number }).n, 0);
  t.same(s.must('alice', park('q', 'p', { again: true })), { messages: [], parked: 'gone' });
});

t.test('served polls are pruned a minute after their deadline; waiting ones five minutes after', async (t) => {
  const s = await store(t);
  s.must('alice', park('q', 'served', { ms: 1_000 }));
  s.apply('alice', send('q', 'one'));
  s.must('alice', park('q', 'waiting', { ms: 1_000 }));
  const rows = (): string[] => (s.sm.sqlite.prepare('select tag from waiters order by tag').all() as { tag: string }[]).map((r) => r.tag);
  t.same(rows(), ['served', 'waiting']);
  // Housekeeping runs at fixed log positions: enough entries, two minutes on.
  s.time += 2 * 60_000;
  for (let i = 0; i < 2 * 64; i++) s.must('alice', { type: 'queue.purge', name: 'q' });
  t.same(rows(), ['waiting'], 'the served poll is pruned');
});

t.test("a poll's last look (ms 0) takes it out of the state, with what is visible", async (t) => {
  const s = await store(t);
  s.must('alice', park('q', 'p'));
  t.same(s.must('alice', park('q', 'p', { ms: 0, again: true })), { messages: [] }, 'not parked again');
  t.same(s.apply('alice', send('q', 'for others')).delivered, []);
  t.same(s.must('alice', park('q', 'p2', { ms: 0 })).messages.map((m: { body: string }) => m.body), ['for others']);
});

t.test("a user who loses the right to receive is served no more: their parked polls are dropped", async (t) => {
  const s = await store(t);
  s.must('alice', { type: 'user.register', username: 'bob', passwordHash: 'x' });
  const bobPark = (tag: string): Command => park('q', tag);
  s.must('alice', { type: 'grant.put', kind: 'queue', name: 'q', username: 'bob', actions: ['receive', 'send'] });
  t.same(s.must('bob', bobPark('bob-1')), { messages: [], parked: 'parked' });
  s.must('alice', { type: 'grant.put', kind: 'queue', name: 'q', username: 'bob', actions: ['send'] });
  t.same(s.apply('alice', send('q', 'not for bob')).delivered, [], 'narrowed to send: dropped');
  s.must('alice', { type: 'grant.put', kind: 'queue', name: 'q', username: 'bob', actions: ['receive'] });
  s.must('alice', { type: 'ack', channel: { queue: 'q' }, receiptHandles: (s.must('alice', park('q', 'drain', { ms: 0 })) as { messages: { receiptHandle: string }[] }).messages.map((m) => m.receiptHandle) });
  t.same(s.must('bob', bobPark('bob-2')), { messages: [], parked: 'parked' });
  s.must('alice', { type: 'grant.delete', kind: 'queue', name: 'q', username: 'bob' });
  t.same(s.apply('alice', send('q', 'still not')).delivered, [], 'revoked: dropped');
  t.equal(waiting(s), 0);
});

t.test('deleting a queue drops the polls parked on it', async (t) => {
  const s = await store(t);
  s.must('alice', park('q', 'p'));
  s.must('alice', { type: 'queue.delete', name: 'q' });
  s.must('alice', queue('q'));
  t.same(s.apply('alice', send('q', 'new queue')).delivered, []);
});

t.test('a bad wait is refused; in a partition of format 2 the wait is ignored, as that build ignores it', async (t) => {
  const s = await store(t);
  t.match(s.run('alice', { ...park('q', ''), wait: { tag: '', ms: 10, again: false } } as Command), { ok: false, code: 'validation_failed' });
  t.match(s.run('alice', park('q', 'x', { ms: 3_600_000 })), { ok: false, code: 'validation_failed' });
  t.match(s.run('alice', park('q', 'x', { ms: 1.5 })), { ok: false, code: 'validation_failed' });

  const old = await store(t, 2);
  t.same(old.must('alice', park('q', 'p')), { messages: [] }, 'not parked');
  t.same(old.apply('alice', send('q', 'm')).delivered, []);
  t.equal(waiting(old), 0);
});

t.test('replicas applying parked polls in different batches end byte-identical, with the same deliveries', async (t) => {
  for (const seed of [1, 2, 3, 4, 5]) {
    const rng = new Rng(seed);
    const [a, b] = [await store(t), await store(t)];
    const envs: Envelope[] = [];
    let time = a.time;
    for (let i = 0; i < 400; i++) {
      time += rng.chance(0.1) ? 3000 : rng.int(200);
      // Receivers outnumber messages, so that polls often find nothing and park.
      const k = rng.int(10);
      const command: Command =
        k < 6
          ? park('q', `t${rng.int(6)}`, { max: rng.range(1, 3), ms: rng.chance(0.1) ? 0 : rng.range(500, 5000), again: rng.chance(0.3), vt: rng.chance(0.5) ? 1 : null })
          : k < 9
            ? send('q', ...Array.from({ length: rng.range(1, 2) }, (_, j) => `${i}.${j}`))
            : { type: 'sweep' };
      envs.push({ time, actor: command.type === 'sweep' ? null : 'alice', command });
    }
    const entries = envs.map((e, i) => ({ index: a.index + 1 + i, term: 1, kind: 0, data: a.encode(e) }));
    // Both replicas' logs hold them: bodies are read from there (format 4).
    for (const s of [a, b]) for (const e of entries) s.entries.set(e.index, e.data);
    const one: Applied[] = entries.flatMap((e) => a.sm.apply([e]));
    const batched: Applied[] = [];
    for (let at = 0; at < entries.length; ) {
      const n = rng.range(1, 40);
      batched.push(...b.sm.apply(entries.slice(at, at + n)));
      at += n;
    }
    t.equal(stateHash(a.sm.sqlite), stateHash(b.sm.sqlite), `seed ${seed}: the same state`);
    t.same(
      batched.map((x) => x.delivered),
      one.map((x) => x.delivered),
      `seed ${seed}: the same deliveries`,
    );
    t.ok(
      one.some((x) => x.delivered.length > 0),
      `seed ${seed}: polls were served`,
    );
  }
});
