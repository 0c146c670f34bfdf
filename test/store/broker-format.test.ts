// The log format in force (src/store/broker/format.ts): a format.raise entry puts a newer format in
// force on every replica that reads it, and stops a replica of an older build at the entry before,
// its state untouched, instead of letting it apply on differently.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { BrokerStateMachine, FORMAT, FormatTooNewError, encodeEnvelope, stateHash, type ApplyEntry, type Command } from '../../src/store/broker/index.js';
import { queue } from './broker-helpers.js';

const dir = mkdtempSync(join(tmpdir(), 'mom-format-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

let n = 0;
const open = (readable: number): Promise<BrokerStateMachine> => BrokerStateMachine.open(join(dir, `s${++n}.db`), 0, { readable });
const entry = (index: number, command: Command, actor: string | null = 'alice'): ApplyEntry => ({ index, term: 1, kind: 0, data: encodeEnvelope({ time: 1_700_000_000_000 + index, actor, command }) });
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
