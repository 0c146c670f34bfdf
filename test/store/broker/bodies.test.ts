// Format 4 (bodies.ts): rows leave their message bodies in the Raft log, and their sequences say where
// (entry index and position). Sends (single, batched, bulk-applied, deduplicated), publishes, dead
// letters and deliveries read back the bodies they were sent with; sequences keep growing across the
// raise; the state can name the entries its rows point at (what the log must keep); a row whose
// entry the log lost stops the apply instead of answering without its body; and what a review found:
// sequences past 15 digits, commands of more messages than an entry has places, bodies that are not
// text, and outbox bodies alike on a replica installed from an image. New state databases have 2 KiB
// pages (rows without bodies are small); older ones keep theirs.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import t from 'tap';
import { BODIES_IN_LOG, BodyMissingError, BrokerStateMachine, PARKED_POLLS, SLOTS, STATE_PAGE_BYTES, encodeEnvelope, stateHash, type Command } from '../../../src/store/broker/index.js';
import { EntryBodies } from '../../../src/store/broker/bodies.js';
import { TestStore, queue, send } from './helpers.js';
import { ack, msg, openStore, publish, q, recv, sendMsgs, sub, subscription, take, topic } from './unit-kit.js';

/** The bodies stored in the state's rows, in channel and sequence order: empty for those left in the log. */
const rowBodies = (s: TestStore): string[] =>
  (s.sm.sqlite.prepare('select body from messages order by channel_id, seq').all() as { body: string | Buffer }[]).map((r) => String(r.body));

const seq = (index: number, slot: number): number => index * SLOTS + slot;

async function open(t: Parameters<typeof openStore>[0]): Promise<TestStore> {
  const s = await TestStore.open(0, undefined, BODIES_IN_LOG);
  t.teardown(() => s.close());
  s.must(null, { type: 'user.register', username: 'alice', passwordHash: 'h' });
  return s;
}

t.test('sends read back their bodies from the log; rows keep none, and sequences say where the bodies are', async (t) => {
  const s = await open(t);
  s.must('alice', queue('orders'));
  const a = s.must('alice', send('orders', 'a'));
  const aAt = s.index;
  const bc = s.must('alice', send('orders', 'b', 'c'));
  const bcAt = s.index;
  const d = s.must('alice', sendMsgs('orders', msg('d', { deduplicationId: 'k' }), msg('dup', { deduplicationId: 'k' })));
  const dAt = s.index;
  t.strictSame(
    [...a.items, ...bc.items, ...d.items].map((i: { sequence: number }) => i.sequence),
    [seq(aAt, 0), seq(bcAt, 0), seq(bcAt, 1), seq(dAt, 0), seq(dAt, 0)],
    'entry index and position; the duplicate answers the first',
  );
  t.strictSame(rowBodies(s), ['', '', '', ''], 'no body in any row');
  t.strictSame(
    take(s, 'alice', q('orders'), 10).map((m) => [m.sequence, m.body]),
    [
      [seq(aAt, 0), 'a'],
      [seq(bcAt, 0), 'b'],
      [seq(bcAt, 1), 'c'],
      [seq(dAt, 0), 'd'],
    ],
  );
});

t.test('sends applied in bulk and one by one store the same rows and read back the same bodies', async (t) => {
  const [bulk, single] = [await open(t), await open(t)];
  const entries: Uint8Array[] = [];
  for (const s of [bulk, single]) s.must('alice', queue('orders'));
  for (let i = 0; i < 6; i++) {
    bulk.index++;
    const data = bulk.encode({ time: bulk.time, actor: 'alice', command: send('orders', `m${i}`, `n${i}`) });
    bulk.entries.set(bulk.index, data);
    single.entries.set(bulk.index, data);
    entries.push(data);
  }
  const first = bulk.index - 5;
  bulk.sm.apply(entries.map((data, k) => ({ index: first + k, term: 1, kind: 0, data })));
  entries.forEach((data, k) => single.sm.apply([{ index: first + k, term: 1, kind: 0, data }]));
  single.index = bulk.index;
  t.equal(stateHash(bulk.sm.sqlite), stateHash(single.sm.sqlite), 'byte-identical');
  const want = Array.from({ length: 6 }, (_, i) => [`m${i}`, `n${i}`]).flat();
  t.strictSame(
    take(bulk, 'alice', q('orders'), 100).map((m) => m.body),
    want,
  );
});

t.test('rows written before the raise keep their bodies, and come first: sequences grow across it', async (t) => {
  const s = await TestStore.open(0, undefined, PARKED_POLLS, BODIES_IN_LOG);
  t.teardown(() => s.close());
  s.must(null, { type: 'user.register', username: 'alice', passwordHash: 'h' });
  s.must('alice', queue('orders'));
  s.must('alice', send('orders', 'old-1', 'old-2'));
  s.must(null, { type: 'format.raise', format: BODIES_IN_LOG });
  s.must('alice', send('orders', 'new'));
  t.strictSame(rowBodies(s), ['old-1', 'old-2', ''], 'the old rows keep theirs');
  const got = take(s, 'alice', q('orders'), 10);
  t.strictSame(
    got.map((m) => m.body),
    ['old-1', 'old-2', 'new'],
  );
  t.ok(got[1]!.sequence < got[2]!.sequence, `${got[1]!.sequence} < ${got[2]!.sequence}`);
});

t.test('a publish leaves one body in the log for every subscription; each reads it back', async (t) => {
  const s = await open(t);
  s.must('alice', topic('news'));
  s.must('alice', subscription('news', 'one'));
  s.must('alice', subscription('news', 'two'));
  const p = s.must('alice', publish('news', msg('hello'), msg('world')));
  t.strictSame(
    p.items.map((i: { sequence: number }) => i.sequence),
    [seq(s.index, 0), seq(s.index, 1)],
  );
  for (const name of ['one', 'two']) {
    t.strictSame(
      take(s, 'alice', sub('news', name), 10).map((m) => m.body),
      ['hello', 'world'],
      name,
    );
  }
  t.strictSame(rowBodies(s), ['', '', '', '']);
});

t.test('a dead letter carries its body from the log into the outbox; a delivery points at its own entry', async (t) => {
  const s = await open(t);
  s.must('alice', queue('dlq'));
  s.must('alice', queue('orders', { maxDeliveries: 1, deadLetterQueue: 'dlq' }));
  s.must('alice', send('orders', 'poison'));
  take(s, 'alice', q('orders'), 1);
  s.advance(31);
  t.strictSame(take(s, 'alice', q('orders'), 1), [], 'dead-lettered at the lease end');
  const [out] = s.sm.outbox(10);
  t.equal(out?.body, 'poison', 'the outbox holds the body as text');
  s.must(null, { type: 'deadletter.deliver', queue: 'dlq', expectedOwner: 'alice', messages: [{ messageId: out!.messageId, body: out!.body, attributes: out!.attributes }] });
  const deliveredAt = s.index;
  const [m] = take(s, 'alice', q('dlq'), 1);
  t.match(m, { messageId: out!.messageId, body: 'poison', sequence: seq(deliveredAt, 0) });
});

t.test('the state names the entries its rows point at, and forgets each once no row does', async (t) => {
  const s = await open(t);
  s.must('alice', queue('orders'));
  s.must('alice', topic('news'));
  s.must('alice', subscription('news', 'one'));
  s.must('alice', subscription('news', 'two'));
  const from = s.index + 1;
  s.must('alice', send('orders', 'a'));
  const a = s.index;
  s.must('alice', send('orders', 'b', 'c'));
  const bc = s.index;
  s.must('alice', publish('news', msg('p')));
  const p = s.index;
  t.strictSame(s.sm.referencedEntries(from, s.index), [a, bc, p]);
  t.strictSame(s.sm.referencedEntries(bc, bc), [bc], 'a range of one');
  t.strictSame(s.sm.referencedEntries(1, from - 1), [], 'none before the sends');

  const [ma, mb] = take(s, 'alice', q('orders'), 2);
  s.must('alice', ack(q('orders'), ma!.receiptHandle, mb!.receiptHandle));
  t.strictSame(s.sm.referencedEntries(from, s.index), [bc, p], "c still points at its entry, though b's row is gone");
  const [one] = take(s, 'alice', sub('news', 'one'), 1);
  s.must('alice', ack(sub('news', 'one'), one!.receiptHandle));
  t.strictSame(s.sm.referencedEntries(from, s.index), [bc, p], "subscription two's copy still points at the publish");
  s.must('alice', { type: 'subscription.delete', topic: 'news', name: 'two' });
  s.must('alice', { type: 'queue.purge', name: 'orders' });
  t.strictSame(s.sm.referencedEntries(from, s.index), [], 'acked, purged, deleted: nothing points at any entry');
});

t.test('over many entries, channels and acks, the entries named are exactly those some row points at', async (t) => {
  const s = await open(t);
  s.must('alice', queue('a'));
  s.must('alice', queue('b'));
  s.must('alice', topic('news'));
  s.must('alice', subscription('news', 'one'));
  const from = s.index + 1;
  // Sends of 1 to 7 messages into either queue, and publishes, seeded: entries of one row and of many.
  let x = 7;
  const next = (n: number): number => (x = (x * 1103515245 + 12345) % 2 ** 31) % n;
  for (let i = 0; i < 300; i++) {
    const k = next(3);
    const bodies = Array.from({ length: 1 + next(7) }, (_, j) => `m${i}.${j}`);
    if (k === 2) s.must('alice', publish('news', ...bodies.map((b) => msg(b))));
    else s.must('alice', send(k === 0 ? 'a' : 'b', ...bodies));
  }
  // Some messages of each channel acked, in runs and alone: entries half pointed at stay named.
  for (const ch of [q('a'), q('b'), sub('news', 'one')]) {
    for (let round = 0; round < 20; round++) {
      const got = take(s, 'alice', ch, 1 + next(20));
      const acked = got.filter(() => next(3) > 0).map((m) => m.receiptHandle);
      if (acked.length > 0) s.must('alice', ack(ch, ...acked));
    }
  }
  const named = (lo: number, hi: number): number[] =>
    [
      ...new Set(
        (s.sm.sqlite.prepare("select seq from messages where typeof(body) = 'text'").all() as { seq: number }[])
          .map((r) => Math.floor(r.seq / SLOTS))
          .filter((e) => e >= lo && e <= hi),
      ),
    ].sort((m, n) => m - n);
  const to = s.index;
  t.ok(named(from, to).length > 100, `rows point at ${named(from, to).length} entries`);
  for (const [lo, hi] of [[from, to], [1, to], [from + 37, from + 150], [from + 5, from + 5], [to + 1, to + 100]] as const) {
    t.strictSame(s.sm.referencedEntries(lo, hi), named(lo, hi), `entries ${lo} to ${hi}`);
  }
  const some = named(from, to).filter((_, k) => k % 3 === 0);
  t.strictSame(s.sm.referencedAmong([...some, to + 5]), some, 'and among entries named one by one');
});

t.test('a row whose entry the log lost stops the apply: never a message without its body', async (t) => {
  const s = await open(t);
  s.must('alice', queue('orders'));
  s.must('alice', send('orders', 'a'));
  s.entries.delete(s.index);
  const before = stateHash(s.sm.sqlite);
  const applied = s.sm.applied().index;
  t.throws(() => s.apply('alice', recv(q('orders'), 1)), BodyMissingError);
  t.equal(s.sm.applied().index, applied, 'the receive is not applied');
  t.equal(stateHash(s.sm.sqlite), before, 'nothing changed');
});

t.test('an entry is walked once for all its bodies: each slot reads its own, in any order; a missing or torn one names its fault', async (t) => {
  const env = (bodies: string[]): Buffer =>
    encodeEnvelope({ time: 1, actor: 'alice', command: { type: 'queue.send', name: 'orders', messages: bodies.map((body) => ({ body, attributes: {} })) } }, BODIES_IN_LOG);
  const bodies = ['', 'a', 'é'.repeat(300), ...Array.from({ length: 997 }, (_, i) => `m${i}`)];
  const text = (e: EntryBodies, slot: number): string => Buffer.from(e.body(slot)).toString('utf8');
  const e = new EntryBodies(3, 7, env(bodies));
  t.strictSame([999, 0, 2, 500].map((k) => text(e, k)), [bodies[999], '', bodies[2], bodies[500]], 'slots read out of order');
  t.strictSame(bodies.map((_, k) => text(e, k)), bodies, 'every slot, in order');
  const fault = (entry: EntryBodies, slot: number): string => {
    try {
      entry.body(slot);
    } catch (err) {
      t.ok(err instanceof BodyMissingError && err.partition === 3 && err.index === 7, 'BodyMissingError naming the entry');
      return (err as Error).message;
    }
    return 'no fault';
  };
  t.equal(fault(e, 1000), 'partition 3: the body at entry 7 has no message 1000');
  const whole = env(['abc', 'defg', 'hi']);
  // The last body's length says more bytes than the entry has: the two before it still read.
  const torn = new EntryBodies(3, 7, whole.subarray(0, whole.length - 1));
  t.strictSame([text(torn, 0), text(torn, 1)], ['abc', 'defg']);
  t.equal(fault(torn, 2), 'partition 3: the body at entry 7 runs past its entry');
  t.equal(fault(new EntryBodies(3, 7, Buffer.from([2, 0])), 0), 'partition 3: the body at entry 7 is in an entry that is not an envelope');
  // An entry in JSON (written before the raise to format 2) keeps its bodies in the command's messages.
  const json = new EntryBodies(3, 7, Buffer.from(JSON.stringify({ time: 1, actor: 'alice', command: { type: 'queue.send', name: 'orders', messages: [{ body: 'x' }, { body: 'y' }] } })));
  t.strictSame([json.body(1), json.body(0)], ['y', 'x']);
  t.equal(fault(json, 2), 'partition 3: the body at entry 7 has no message 2');
  t.equal(fault(new EntryBodies(3, 7, Buffer.from('{not json')), 0), 'partition 3: the body at entry 7 is in an entry that is not an envelope');
});

t.test('the raise to format 4 is refused while a sequence already reaches past its first', async (t) => {
  const s = await TestStore.open(0, undefined, PARKED_POLLS, BODIES_IN_LOG);
  t.teardown(() => s.close());
  s.must(null, { type: 'user.register', username: 'alice', passwordHash: 'h' });
  s.must('alice', queue('orders'));
  // Sequences given so far must stay below those of the entries after the raise (at s.index + 1):
  // here one has been given at the first of them.
  s.sm.sqlite.prepare('update channels set next_seq = ?').run(seq(s.index + 2, 0) + 1);
  const r = s.run(null, { type: 'format.raise', format: BODIES_IN_LOG });
  t.match(r, { ok: false, code: 'validation_failed' });
  t.equal(s.sm.format(), PARKED_POLLS, 'not raised');
  s.sm.sqlite.prepare('update channels set next_seq = 10').run();
  s.must(null, { type: 'format.raise', format: BODIES_IN_LOG });
  t.equal(s.sm.format(), BODIES_IN_LOG);
});

t.test('a receipt handle still acks once sequences pass 15 digits (after about 15e9 entries; review)', async (t) => {
  const s = await open(t);
  s.must('alice', queue('orders'));
  // Play a partition that has applied ~1.5e10 entries (e.g. 1,000 entries/s for 177 days).
  const far = Math.ceil(1e15 / SLOTS);
  s.sm.sqlite.prepare(`update meta set value = ? where key = 'applied_index'`).run(far);
  s.index = far;
  s.must('alice', send('orders', 'hello'));
  const [m] = take(s, 'alice', q('orders'), 1);
  t.comment(`sequence ${m!.sequence} (${String(m!.sequence).length} digits), handle ${m!.receiptHandle}`);
  const out = s.must<{ acked: string[]; failed: { code: string }[] }>('alice', ack(q('orders'), m!.receiptHandle));
  t.strictSame(out.failed, [], 'ack accepted');
});

t.test('a command of more than 65,536 messages is refused: it cannot take the next entry\'s sequences and bodies (review)', async (t) => {
  const s = await open(t);
  s.must('alice', queue('orders'));
  const many = Array.from({ length: SLOTS + 1 }, (_, i) => msg(`m${i}`));
  // Only a peer could propose this (the public API caps a batch at 100; internal routes take any command).
  const r = s.run('alice', sendMsgs('orders', ...many));
  t.match(r, { ok: false, code: 'validation_failed' }, `a send of ${many.length} is refused`);
  const next = s.run('alice', send('orders', 'NEXT'));
  t.ok(next.ok, "the next entry's send is stored");
  t.strictSame(
    take(s, 'alice', q('orders'), 100).map((m) => m.body),
    ['NEXT'],
    'and reads its own body',
  );
});

t.test('a send whose message has no text body is refused, not stored to halt every later receive (review)', async (t) => {
  const s = await open(t);
  s.must('alice', queue('orders'));
  // A JSON entry (a peer's command with a non-text body is encoded as JSON, envelope.ts).
  const bad = { type: 'queue.send', name: 'orders', messages: [{ body: 42, attributes: {} }] } as unknown as Command;
  const r = s.run('alice', bad);
  t.match(r, { ok: false, code: 'validation_failed' }, 'a send with body 42 is refused');
  let err: unknown = null;
  try {
    s.run('alice', recv(q('orders'), 1));
  } catch (e) {
    err = e;
  }
  t.comment(`receive: ${err === null ? 'applied' : `threw ${(err as Error).name}: ${(err as Error).message}`}`);
  t.notOk(err instanceof BodyMissingError, 'the receive does not throw BodyMissingError (a storage failure: the node stops, on every replica, at every restart)');
});

t.test('a replica installed from an image hashes like the leader after dead-lettering a row whose entry is JSON (review)', async (t) => {
  const s = await open(t);
  s.must('alice', queue('dlq'));
  s.must('alice', queue('orders', { maxDeliveries: 1, deadLetterQueue: 'dlq' }));
  // An entry a leader encoded before it applied the raise (JSON), applied in format 4.
  s.index++;
  const data = encodeEnvelope({ time: s.time, actor: 'alice', command: send('orders', 'json-body') }, 1);
  s.entries.set(s.index, data);
  s.sm.apply([{ index: s.index, term: 1, kind: 0, data }]);
  const image = join(s.dir, 'image.db');
  await s.sm.snapshotTo(image);
  const follower = await BrokerStateMachine.open(image, 0, { readable: BODIES_IN_LOG });
  t.teardown(() => follower.close());
  follower.attachBodies({ entry: (i) => s.entries.get(i) ?? null });
  t.equal(stateHash(follower.sqlite), stateHash(s.sm.sqlite), 'equal after the install');
  const next = (command: Command): void => {
    s.index++;
    const d = s.encode({ time: s.time, actor: command.type === 'sweep' ? null : 'alice', command });
    s.entries.set(s.index, d);
    for (const sm of [s.sm, follower]) sm.apply([{ index: s.index, term: 1, kind: 0, data: d }]);
  };
  next(recv(q('orders'), 1));
  s.advance(31);
  next({ type: 'sweep' });
  const types = (sm: BrokerStateMachine): unknown => sm.sqlite.prepare('select typeof(body) t, body from outbox').all();
  t.comment(`leader outbox ${JSON.stringify(types(s.sm))}; follower outbox ${JSON.stringify(types(follower))}`);
  t.equal(stateHash(follower.sqlite), stateHash(s.sm.sqlite), 'equal after the dead letter');
});

t.test('a new state database has 2 KiB pages; one made with 4 KiB pages opens with its pages and rows as they were', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'mom-pages-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const fresh = await BrokerStateMachine.open(join(dir, 'new.db'), 0);
  t.equal(fresh.sqlite.pragma('page_size', { simple: true }), STATE_PAGE_BYTES, 'a new database takes STATE_PAGE_BYTES');
  await fresh.close();

  // A database of the previous build: SQLite's 4 KiB pages, a queue in it.
  const old = new Database(join(dir, 'old.db'));
  old.pragma('page_size = 4096');
  old.pragma('journal_mode = WAL');
  old.close();
  let sm = await BrokerStateMachine.open(join(dir, 'old.db'), 0);
  sm.apply([{ index: 1, term: 1, kind: 0, data: encodeEnvelope({ time: 1, actor: null, command: { type: 'user.register', username: 'alice', passwordHash: 'h' } }, 1) }]);
  const before = stateHash(sm.sqlite);
  await sm.close();
  sm = await BrokerStateMachine.open(join(dir, 'old.db'), 0);
  t.teardown(() => sm.close());
  t.equal(sm.sqlite.pragma('page_size', { simple: true }), 4096, 'it keeps its 4 KiB pages');
  t.equal(stateHash(sm.sqlite), before, 'and its rows');
  t.equal(sm.applied().index, 1);
});
