// The log format in force (src/store/broker/format.ts): a format.raise entry puts a newer format in
// force on every replica that reads it, and stops a replica of an older build at the entry before,
// its state untouched, instead of letting it apply on differently.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import t from 'tap';
import { BrokerStateMachine, FORMAT, FormatTooNewError, encodeEnvelope, stateHash, type ApplyEntry, type Command } from '../../../src/store/broker/index.js';
import { queue } from './helpers.js';

const dir = mkdtempSync(join(tmpdir(), 'mom-format-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

let n = 0;
const open = (readable: number): Promise<BrokerStateMachine> => BrokerStateMachine.open(join(dir, `s${++n}.db`), 0, { readable });
/** A log entry; `format` is the partition's format its leader encodes for (1 unless given). */
const entry = (index: number, command: Command, actor: string | null = 'alice', format = 1): ApplyEntry => ({
  index,
  term: 1,
  kind: 0,
  data: encodeEnvelope({ time: 1_700_000_000_000 + index, actor, command }, format),
});
const send = (body: string): Command => ({ type: 'queue.send', name: 'q', messages: [{ body, attributes: {} }] });
const raise = (format: number): Command => ({ type: 'format.raise', format });
/** Closes `sm` and opens its database again, as a restart of the node would. */
async function reopen(sm: BrokerStateMachine, readable: number): Promise<BrokerStateMachine> {
  await sm.close();
  return BrokerStateMachine.open(sm.path, 0, { readable });
}

t.test('a new partition is in format 1, and this build reads it', async (t) => {
  const sm = await open(FORMAT);
  t.equal(sm.format(), 1);
  t.ok(FORMAT >= 1);
  await sm.close();
});

t.test('format.raise puts the format in force on every replica that reads it, alike and durably', async (t) => {
  const a = await open(2);
  const b = await open(2);
  const log = [entry(1, queue('q')), entry(2, send('before')), entry(3, raise(2), null), entry(4, send('after'))];
  // One replica applies the log in one batch, the other entry by entry: the same state either way.
  const ra = a.apply(log);
  for (const e of log) b.apply([e]);
  t.same(ra[2]!.result, { ok: true, value: { format: 2 } });
  t.equal(a.format(), 2);
  t.equal(b.format(), 2);
  t.equal(stateHash(a.sqlite), stateHash(b.sqlite), 'byte-identical states');

  // A lower or equal raise changes nothing; a raise is idempotent.
  const again = a.apply([entry(5, raise(1), null), entry(6, raise(2), null)]);
  t.same(again.map((x) => x.result), [{ ok: true, value: { format: 2 } }, { ok: true, value: { format: 2 } }]);
  t.same(a.apply([entry(7, raise(0), null)])[0]!.result.ok, false, 'a format must be a positive integer');

  const reopened = await reopen(a, 2);
  t.equal(reopened.format(), 2, 'kept across a restart');
  await reopened.close();
  await b.close();
});

t.test('a replica of an older build stops at a raise past what it reads, its state untouched', async (t) => {
  const old = await open(1);
  old.apply([entry(1, queue('q')), entry(2, send('one'))]);
  const before = stateHash(old.sqlite);
  // The raise comes in a batch with a send before it: the whole batch rolls back.
  t.throws(() => old.apply([entry(3, send('two')), entry(4, raise(2), null), entry(5, send('three'))]), FormatTooNewError);
  t.equal(old.applied().index, 2, 'applied index where it was');
  t.equal(old.format(), 1);
  t.equal(stateHash(old.sqlite), before, 'nothing of the batch stayed');
  // It stops there every time it is asked again, alone or not.
  t.throws(() => old.apply([entry(3, send('two'))].concat([entry(4, raise(2), null)])), FormatTooNewError);
  t.equal(old.applied().index, 2);
  await old.close();
});

t.test('a state already in a newer format is not applied by an older build', async (t) => {
  const newer = await open(2);
  newer.apply([entry(1, queue('q')), entry(2, raise(2), null)]);
  // An image from a newer leader, or a database a newer build applied, opened by an older build.
  const old = await reopen(newer, 1);
  t.equal(old.format(), 2);
  const err = t.throws(() => old.apply([entry(3, send('x'))]), FormatTooNewError) as FormatTooNewError;
  t.match(err, { format: 2, readable: 1 });
  t.equal(old.applied().index, 2);
  await old.close();
});

t.test('a state in a newer format opens without its tables: halted, untouched, whatever that format made of them', async (t) => {
  const newer = await open(FORMAT);
  newer.apply([entry(1, queue('q')), entry(2, send('kept'))]);
  const path = newer.path;
  await newer.close();
  // What a later format could do to the tables (a table rebuilt under another name, an index made
  // partial, a migration this build does not have), with the format raised past this build's.
  const db = new Database(path);
  const future = (): void => {
    db.exec('alter table messages rename to messages_next');
    db.exec("insert into kysely_migration (name, timestamp) values ('999_after_this_build', '2027-01-01T00:00:00.000Z')");
    db.prepare("insert into meta (key, value) values ('format', ?) on conflict (key) do update set value = excluded.value").run(FORMAT + 1);
  };
  const schema = (): unknown[] => [db.prepare('select type, name, sql from sqlite_master order by name').all(), db.prepare('select * from kysely_migration order by name').all(), db.prepare('select * from meta order by key').all()];
  future();
  const before = schema();

  const old = await BrokerStateMachine.open(path, 0, { readable: FORMAT });
  t.equal(old.format(), FORMAT + 1, 'its format, read before anything else');
  t.same(old.applied(), { index: 2, term: 1 }, 'and where it was applied to');
  t.notOk(old.isOpen(), 'it cannot be read');
  t.throws(() => old.apply([entry(3, send('x'))]), FormatTooNewError, 'nor applied to');
  t.throws(() => old.getQueue('q', 'alice', 1_700_000_000_000), FormatTooNewError, 'a read throws what halts the partition, not what a missing table would');
  t.throws(() => old.referencedEntries(1, 2), FormatTooNewError);
  t.same(old.applied(), { index: 2, term: 1 });
  await old.close();
  t.same(schema(), before, 'no migration ran, no index was made, nothing was written');

  // The newer build's change undone (as if it were this build's own): the state applies on.
  db.exec('alter table messages_next rename to messages');
  db.exec("delete from kysely_migration where name = '999_after_this_build'");
  db.prepare("update meta set value = ? where key = 'format'").run(FORMAT);
  db.close();
  const again = await BrokerStateMachine.open(path, 0, { readable: FORMAT });
  t.ok(again.isOpen());
  t.same(again.apply([entry(3, send('after'))])[0]!.result.ok, true);
  t.equal((again.getQueue('q', 'alice', 1_700_000_000_000) as { ok: true; value: { stats: { visible: number } } }).value.stats.visible, 2, 'both messages there');
  await again.close();
});

t.test('a raise rolled back with its batch is not in force (the batch redone command by command)', async (t) => {
  const sm = await open(2);
  sm.apply([entry(1, queue('q'))]);
  // A malformed command after the raise makes the batch roll back and go again, one command at a
  // time in savepoints: the raise must end up written, once.
  const bad = { type: 'queue.send', name: 'q', messages: null } as unknown as Command;
  const twin = await open(2);
  twin.apply([entry(1, queue('q'))]);
  sm.apply([entry(2, raise(2), null), entry(3, bad)]);
  twin.apply([entry(2, raise(2), null)]);
  twin.apply([entry(3, bad)]);
  t.equal(sm.format(), 2);
  t.equal(stateHash(sm.sqlite), stateHash(twin.sqlite), 'the same state as a replica that applied them apart');
  const reopened = await reopen(sm, 2);
  t.equal(reopened.format(), 2, 'the raise was written, not just remembered');
  await reopened.close();
  await twin.close();
});

t.test('a raise that fails as a malformed command leaves nothing of itself in memory either', async (t) => {
  // A raise from 1 to 14 moves the bodies mark (format 4) before it makes format 14's index; here a
  // table holds that index's name, so the raise fails, alone, in its savepoint. A replica that keeps
  // running must go on as one that restarts from the same tables.
  const [sm, twin] = [await open(FORMAT), await open(FORMAT)];
  for (const s of [sm, twin]) {
    s.apply([entry(1, queue('q'))]);
    s.sqlite.exec('create table idempotency_key (taken integer)');
    t.match(s.apply([entry(2, raise(14), null)])[0]!.result, { ok: false, code: 'validation_failed', detail: 'malformed command' });
  }
  const restarted = await reopen(twin, FORMAT);
  for (const s of [sm, restarted]) {
    t.equal(s.format(), 1);
    s.apply([entry(3, send('after the failed raise'))]);
  }
  t.equal(stateHash(sm.sqlite), stateHash(restarted.sqlite), 'the same state: the row holds its body in both');
  await sm.close();
  await restarted.close();
});

// ---- format 2: message bodies as bytes ----

const receiveAll = (): Command => ({ type: 'receive', channel: { queue: 'q' }, maxMessages: 10, visibilityTimeoutSeconds: null });
const bodiesOf = (r: { result: { ok: boolean; value?: unknown } }): unknown => (r.result.value as { messages: { body: string; attributes: unknown }[] }).messages.map((m) => [m.body, m.attributes]);

t.test('format 2: a body goes into the entry and its row as bytes, and comes back as the same text', async (t) => {
  const sm = await open(2);
  sm.apply([entry(1, queue('q')), entry(2, send('text row, from format 1')), entry(3, raise(2), null)]);
  const bodies = ['héllo ✓ 😀', '', 'x'.repeat(70_000)];
  const command: Command = { type: 'queue.send', name: 'q', messages: bodies.map((body, i) => ({ body, attributes: { n: String(i) } })) };
  const e = entry(4, command, 'alice', 2);
  t.equal(e.data[0], 2, 'not JSON: the encoding with bodies');
  t.ok(Buffer.from(e.data).includes(Buffer.from(bodies[0]!, 'utf8')), 'the body is in the entry as its UTF-8, not escaped');
  t.ok(sm.apply([e])[0]!.result.ok);
  t.same(
    sm.sqlite.prepare('select typeof(body) as t from messages order by seq').all().map((r) => (r as { t: string }).t),
    ['text', 'blob', 'blob', 'blob'],
    'rows written before the raise keep their text; after it, bytes',
  );
  t.same(bodiesOf(sm.apply([entry(5, receiveAll())])[0]!), [['text row, from format 1', {}], ...bodies.map((b, i) => [b, { n: String(i) }])]);
  await sm.close();
});

t.test('format 2: a replica applying it in bulk and one applying entry by entry end byte-identical', async (t) => {
  const [a, b] = [await open(2), await open(2)];
  const log = [entry(1, queue('q')), entry(2, raise(2), null)];
  for (let i = 3; i < 40; i++) log.push(entry(i, i % 7 === 0 ? receiveAll() : send(`m${i} ✓`), 'alice', 2));
  a.apply(log);
  for (const e of log) b.apply([e]);
  t.equal(stateHash(a.sqlite), stateHash(b.sqlite));
  await a.close();
  await b.close();
});

t.test('a format 2 entry in a partition still in format 1 is refused alike by both builds', async (t) => {
  const [old, upgraded] = [await open(1), await open(2)];
  // A leader must not write it before the raise; if one did, neither build may apply it.
  const log = [entry(1, queue('q')), entry(2, send('bytes too early'), 'alice', 2), entry(3, send('json'))];
  const [ro, ru] = [old.apply(log), upgraded.apply(log)];
  t.match(ro[1]!.result, { ok: false, code: 'validation_failed' });
  t.match(ru[1]!.result, { ok: false, code: 'validation_failed' });
  t.ok(ru[2]!.result.ok, 'the entries after it apply');
  t.equal(stateHash(old.sqlite), stateHash(upgraded.sqlite));
  await old.close();
  await upgraded.close();
});

t.test('format 2: a body that is neither text nor bytes (a peer’s malformed command) goes as JSON and is refused', async (t) => {
  const sm = await open(2);
  sm.apply([entry(1, queue('q')), entry(2, raise(2), null)]);
  const bad = { type: 'queue.send', name: 'q', messages: [{ body: { byteLength: 64 }, attributes: {} }] } as unknown as Command;
  const e = entry(3, bad, 'alice', 2);
  t.equal(e.data[0], 0x7b, 'JSON, not 64 bytes of whatever memory held');
  t.match(sm.apply([e])[0]!.result, { ok: false });
  t.same(bodiesOf(sm.apply([entry(4, receiveAll())])[0]!), []);
  await sm.close();
});

t.test('format 2: bytes that are not an envelope fail alone, and change nothing', async (t) => {
  const sm = await open(2);
  sm.apply([entry(1, queue('q')), entry(2, raise(2), null)]);
  const good = Buffer.from(entry(0, send('abc'), 'alice', 2).data);
  const bad = [
    good.subarray(0, good.length - 1), // a body cut short
    Buffer.concat([good, Buffer.from([0])]), // bytes after the last body
    Buffer.from([2, 0xff, 0xff, 0xff, 0xff]), // a head past the end
    Buffer.from([2, 1, 0, 0, 0, 0x31]), // a head that is not an envelope
    (() => {
      const b = Buffer.from(good);
      b.writeUInt32LE(0xffffffff, b.length - 7); // a body length past the end
      return b;
    })(),
  ];
  const out = sm.apply(bad.map((data, i) => ({ index: 3 + i, term: 1, kind: 0, data })));
  for (const r of out) t.match(r.result, { ok: false, code: 'validation_failed' });
  t.same(bodiesOf(sm.apply([entry(3 + bad.length, receiveAll())])[0]!), [], 'nothing was stored');
  t.ok(sm.apply([{ index: 4 + bad.length, term: 1, kind: 0, data: good }])[0]!.result.ok, 'a good one after them applies');
  await sm.close();
});
