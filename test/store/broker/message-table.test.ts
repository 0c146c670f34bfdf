// The message table's two layouts (src/store/broker/message-table.ts): the raise to format 10 rebuilds
// a small table in its apply and leaves a large one to its node's next start; a table rebuilt in the
// middle of a log goes on exactly as one that never was, and as one rebuilt at the raise; every
// statement over `messages` scans the same index in both layouts; and a build that reads only format 9
// opens a rebuilt state halted instead of failing on its tables.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import t from 'tap';
import { BrokerStateMachine, FORMAT, FormatTooNewError, MESSAGE_TABLE, PARKED_POLLS, stateHash, type ApplyEntry, type Applied } from '../../../src/store/broker/index.js';
import { REBUILD_IN_APPLY, type RebuildLimits } from '../../../src/store/broker/message-table.js';
import { bodiesOf } from './helpers.js';
import { CommandStream, QUEUES } from './command-stream.js';

const dir = mkdtempSync(join(tmpdir(), 'mom-message-table-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));
let n = 0;
const open = (log: readonly ApplyEntry[], rebuildInApply: RebuildLimits = REBUILD_IN_APPLY): Promise<BrokerStateMachine> =>
  BrokerStateMachine.open(join(dir, `s${n++}.db`), 0, { bodies: bodiesOf(log), rebuildInApply });

/** A seeded log of `length` commands after the stream's set-up (which raises to this build's format). */
function streamLog(seed: number, length: number, format = FORMAT): { log: ApplyEntry[]; feed: (sm: BrokerStateMachine) => Applied[] } {
  const stream = new CommandStream(seed, format);
  const log: ApplyEntry[] = [];
  const envs = stream.setup();
  // The stream makes each command from the answers before it: a first replica answers them all.
  const feed = (sm: BrokerStateMachine): Applied[] => {
    const out: Applied[] = [];
    for (let i = 0; i < envs.length + length; i++) {
      const env = i < envs.length ? envs[i]! : stream.next();
      const [entry] = stream.entries([env]);
      log.push(entry!);
      const [applied] = sm.apply([entry!]);
      stream.observe(env, applied!);
      out.push(applied!);
    }
    return out;
  };
  return { log, feed };
}

/** The entry at `index` raising the partition to `format` (10 unless given). */
const raiseAt = (index: number, format = MESSAGE_TABLE): ApplyEntry[] =>
  new CommandStream(1, MESSAGE_TABLE).entries([{ time: 1_800_000_000_000, actor: null, command: { type: 'format.raise', format } }]).map((e) => ({ ...e, index }));

const messages = (sm: BrokerStateMachine): number => (sm.sqlite.prepare('select count(*) as n from messages').get() as { n: number }).n;

/** What reads of the state answer (views, long polls' timers, housekeeping, metrics), at `now`. */
function reads(sm: BrokerStateMachine, now: number): string {
  const channels = (sm.sqlite.prepare('select id from channels order by id').all() as { id: number }[]).map((c) => c.id);
  return JSON.stringify({
    queues: QUEUES.map((q) => sm.getQueue(q, 'alice', now)),
    subscriptions: sm.listSubscriptions('t1', 'alice', now),
    nextVisible: channels.map((c) => sm.nextVisibleAt(c)),
    sweep: sm.needsSweep(now),
    oldest: sm.oldestSentAt(now),
    depths: sm.queueDepths(10),
    totals: sm.messageTotals(),
  });
}

t.test('the raise to format 10 rebuilds a small table in its apply, and leaves a larger one as it is', async (t) => {
  // In format 3 rows hold their bodies (before format 4), as rows installed from an image do.
  const { log, feed } = streamLog(7, 400, PARKED_POLLS);
  const before = await open(log);
  feed(before);
  t.ok(messages(before) > 20, `a log that leaves messages in the table (${messages(before)})`);
  t.equal(before.messageTable(), 'rowid', 'before format 10 the table is a rowid table');
  const at = log.length + 1;
  const rows = messages(before);

  const small = await open(log, { rows, bodyBytes: REBUILD_IN_APPLY!.bodyBytes });
  const large = await open(log, { rows: rows - 1, bodyBytes: REBUILD_IN_APPLY!.bodyBytes });
  const heavy = await open(log, { rows, bodyBytes: 100 });
  for (const sm of [small, large, heavy]) {
    sm.apply(log);
    t.same(sm.apply(raiseAt(at))[0]!.result, { ok: true, value: { format: MESSAGE_TABLE } });
  }
  t.equal(small.messageTable(), 'clustered', `${rows} rows, within ${rows}: rebuilt in the apply`);
  t.equal(large.messageTable(), 'rowid', `${rows} rows, past ${rows - 1}: left for the next start`);
  t.equal(heavy.messageTable(), 'rowid', 'bodies held in rows count too');
  t.equal(stateHash(small.sqlite), stateHash(large.sqlite), 'the same state either way');
  t.equal(large.rebuildMessageTable(), rows, 'a start rebuilds it, every row moved');
  t.equal(large.messageTable(), 'clustered');
  t.equal(stateHash(large.sqlite), stateHash(small.sqlite));
  t.equal(large.rebuildMessageTable(), null, 'once');
  for (const sm of [before, small, large, heavy]) await sm.close();
});

t.test('a table rebuilt in the middle of a log goes on as one rebuilt at the raise and one never rebuilt', async (t) => {
  for (const seed of [11, 12, 13]) {
    const { log, feed } = streamLog(seed, 600);
    const first = await open(log);
    const results = feed(first);
    const atRaise = await open(log);
    const never = await open(log, null);
    const midway = await open(log, null);
    const cut = Math.floor(log.length / 2);
    const same = (sm: BrokerStateMachine, entries: ApplyEntry[], what: string): void => {
      const got = sm.apply(entries);
      const want = results.filter((r) => r.index >= entries[0]!.index && r.index <= entries[entries.length - 1]!.index);
      if (JSON.stringify(got) !== JSON.stringify(want)) t.fail(`seed ${seed}: ${what} answered otherwise`);
    };
    // Reads at the partition's clock, and later, when leases and delays have ended.
    const sameReads = (what: string): void => {
      for (const later of [0, 7_000, 3_600_000]) {
        const now = first.clock() + later;
        if (new Set([atRaise, never, midway].map((sm) => reads(sm, now))).size !== 1) t.fail(`seed ${seed}: reads ${what}, ${later} ms on, differ`);
      }
    };
    for (const sm of [atRaise, never, midway]) same(sm, log.slice(0, cut), 'the first half');
    sameReads('after the first half');
    t.ok(midway.rebuildMessageTable()! > 0, `seed ${seed}: rebuilt after entry ${cut}, with messages in it`);
    sameReads('after the rebuild');
    for (const sm of [atRaise, never, midway]) same(sm, log.slice(cut), 'the second half');
    sameReads('at the end');
    t.same([atRaise, never, midway].map((sm) => sm.messageTable()), ['clustered', 'rowid', 'clustered']);
    t.same(new Set([first, atRaise, never, midway].map((sm) => stateHash(sm.sqlite))).size, 1, `seed ${seed}: one state, every result the same`);
    for (const sm of [first, atRaise, never, midway]) await sm.close();
  }
});

t.test('a rebuild in a deferred batch, with entries after it, and again when its group is redone', async (t) => {
  const { log, feed } = streamLog(31, 300, PARKED_POLLS);
  const first = await open(log);
  feed(first);
  const stream = new CommandStream(31, MESSAGE_TABLE);
  const more = stream.entries([
    { time: 1_800_000_000_000, actor: null, command: { type: 'format.raise', format: MESSAGE_TABLE } },
    { time: 1_800_000_000_001, actor: 'alice', command: { type: 'queue.send', name: 'q1', messages: [{ body: 'after the raise', attributes: {} }] } },
    { time: 1_800_000_000_002, actor: 'alice', command: { type: 'receive', channel: { queue: 'q1' }, maxMessages: 10, visibilityTimeoutSeconds: 30 } },
  ]).map((e, i) => ({ ...e, index: log.length + 1 + i }));
  log.push(...more);
  const never = await open(log, null);
  const batched = await open(log);
  const redone = await open(log);
  const want = never.apply(log);
  t.equal(never.messageTable(), 'rowid');
  t.same(batched.apply(log, { defer: true }), want, 'the log, raise and all, in one deferred batch: the same results');
  t.equal(batched.messageTable(), 'clustered', 'rebuilt in the group');
  t.ok(messages(batched) > 10, `with messages in it (${messages(batched)})`);
  // The group holding the raise fails on a later batch (a raise past this build): rolled back and
  // applied again, entry by entry, the rebuild with it.
  redone.apply(log, { defer: true });
  const tooNew = raiseAt(log.length + 1, FORMAT + 1);
  t.throws(() => redone.apply(tooNew, { defer: true }), FormatTooNewError);
  redone.commit();
  t.equal(redone.applied().index, log.length);
  t.equal(redone.messageTable(), 'clustered', 'the group redone, the table rebuilt again');
  t.same(new Set([never, batched, redone].map((sm) => stateHash(sm.sqlite))).size, 1, 'one state');
  for (const sm of [first, never, batched, redone]) await sm.close();
});

t.test('a rebuild that fails in the raise is undone alone: the raise applies, the table stays as it was', async (t) => {
  const { log, feed } = streamLog(41, 100, PARKED_POLLS);
  const first = await open(log);
  feed(first);
  const raise = raiseAt(log.length + 1);
  const blocked = await open(log);
  const fine = await open(log);
  for (const sm of [blocked, fine]) sm.apply(log);
  // The name the rebuild builds its new table under is taken: its CREATE TABLE fails.
  blocked.sqlite.exec('create table messages_clustered (taken integer)');
  t.same(blocked.apply(raise)[0]!.result, { ok: true, value: { format: MESSAGE_TABLE } }, 'the raise applies');
  t.same(fine.apply(raise)[0]!.result, { ok: true, value: { format: MESSAGE_TABLE } });
  t.same([blocked.messageTable(), fine.messageTable()], ['rowid', 'clustered']);
  t.equal(stateHash(blocked.sqlite), stateHash(fine.sqlite), 'the same state');
  t.throws(() => blocked.rebuildMessageTable(), /already exists/, 'a start tries again, and says why it cannot');
  t.equal(blocked.messageTable(), 'rowid', 'nothing of it stayed');
  for (const sm of [first, blocked, fine]) await sm.close();
});

t.test('a state of 4 KiB pages keeps the rowid layout: rows holding their bodies would spill', async (t) => {
  const path = join(dir, 'pages-4k.db');
  const made = new Database(path);
  made.pragma('page_size = 4096');
  made.pragma('journal_mode = WAL');
  made.close();
  const { log, feed } = streamLog(51, 50);
  const sm = await BrokerStateMachine.open(path, 0, { bodies: bodiesOf(log) });
  t.equal(sm.sqlite.pragma('page_size', { simple: true }), 4096, 'a database made before pages were 2 KiB');
  feed(sm);
  t.equal(sm.format(), FORMAT);
  t.equal(sm.messageTable(), 'rowid', 'not rebuilt at the raise');
  t.equal(sm.rebuildMessageTable(), null, 'nor at a start');
  await sm.close();
});

t.test('every statement over messages scans the same index in both layouts', async (t) => {
  const sm = await open([], null);
  const statements = Object.entries((sm as unknown as { st: Record<string, unknown> }).st).flatMap(([name, v]) =>
    typeof v === 'object' && v !== null && 'source' in v ? [[name, v]] : Object.entries(v as object).filter(([, w]) => typeof w === 'object' && w !== null && 'source' in w).map(([k, w]) => [`${name}.${k}`, w]),
  ) as [string, { source: string }][];
  const overMessages = statements.filter(([, s]) => /\bmessages\b/.test(s.source));
  const plans = (): Map<string, string> =>
    new Map(
      overMessages.map(([name, s]) => {
        const params = Array((s.source.match(/\?/g) ?? []).length).fill(1);
        // The primary key is an index of its own in a rowid table, the table itself in a clustered one
        // (so always covering there, which SQLite does not say).
        const plan = (sm.sqlite.prepare(`explain query plan ${s.source}`).all(...params) as { detail: string }[]).map((r) => r.detail).join(' | ');
        return [name, plan.replaceAll('INDEX sqlite_autoindex_messages_1', 'PRIMARY KEY').replaceAll('COVERING PRIMARY KEY', 'PRIMARY KEY')];
      }),
    );
  const rowid = plans();
  t.ok(rowid.size >= 20, `${rowid.size} statements over messages`);
  sm.rebuildMessageTable();
  t.equal(sm.messageTable(), 'rowid', 'not before format 10');
  sm.apply(raiseAt(1));
  t.ok(sm.rebuildMessageTable() === 0 && sm.messageTable() === 'clustered');
  const clustered = plans();
  // A queue's delete takes every row of the channel, by whichever index starts with it.
  const anyIndex = new Set(['deleteMessages']);
  // The earliest due first (format 17): the same index; a rowid table's sorts the ties of a time by
  // sequence, which a clustered one's entries hold in order.
  const sortsTies = new Set(['dueFirst']);
  for (const [name, plan] of rowid) {
    if (anyIndex.has(name)) t.match(clustered.get(name), /^SEARCH messages USING .*\(channel_id=\?\)$/, name);
    else if (sortsTies.has(name)) t.equal(`${clustered.get(name)} | USE TEMP B-TREE FOR LAST TERM OF ORDER BY`, plan, name);
    else t.equal(clustered.get(name), plan, name);
  }
  // The ones that must not walk the table: a receive's and the due messages' scans.
  for (const name of ['ready', 'leaseReadyUpTo']) t.match(clustered.get(name), /USING INDEX messages_ready/, `${name} scans the ready messages only`);
  for (const name of ['due', 'dueFirst', 'dueDead', 'dueCounts', 'nextDue']) t.match(clustered.get(name), /USING (COVERING )?INDEX messages_due/, `${name} scans the leased and delayed ones only`);
  await sm.close();
});

t.test('a build that reads only format 9 opens a rebuilt state halted, not failing on its tables', async (t) => {
  const { log, feed } = streamLog(21, 100, MESSAGE_TABLE);
  const sm = await open(log);
  feed(sm);
  t.equal(sm.messageTable(), 'clustered');
  const at = sm.applied();
  await sm.close();
  const old = await BrokerStateMachine.open(sm.path, 0, { readable: MESSAGE_TABLE - 1 });
  t.equal(old.format(), MESSAGE_TABLE);
  t.notOk(old.isOpen());
  t.same(old.applied(), at);
  await old.close();
});

t.test('a rebuild whose failure took the whole transaction with it fails the apply as a storage failure', async (t) => {
  // SQLite rolls a whole transaction back on some errors (a full disk, an I/O error, no memory): the
  // rebuild's savepoint is then gone, and so is what the batch applied before it.
  const mocked = await t.mockImport<typeof import('../../../src/store/broker/state-machine.js')>('../../../src/store/broker/state-machine.ts', {
    '../../../src/store/broker/message-table.ts': {
      ...(await import('../../../src/store/broker/message-table.js')),
      rebuildMessageTable: (db: Database.Database) => {
        db.exec('ROLLBACK');
        throw Object.assign(new Error('database or disk is full'), { code: 'SQLITE_FULL' });
      },
    },
  });
  const { log, feed } = streamLog(43, 50, PARKED_POLLS);
  feed(await open(log));
  const sm = await mocked.BrokerStateMachine.open(join(dir, `s${n++}.db`), 0, { bodies: bodiesOf(log) });
  sm.apply(log);
  const before = stateHash(sm.sqlite);
  // With a send before it in the batch: rolled back with the transaction, it must not be answered.
  const send = new CommandStream(1, PARKED_POLLS)
    .entries([{ time: 1_800_000_000_000, actor: 'alice', command: { type: 'queue.send', name: QUEUES[0]!, messages: [{ body: 'lost with the transaction', attributes: {} }] } }])
    .map((e) => ({ ...e, index: log.length + 1 }));
  t.throws(() => sm.apply([...send, ...raiseAt(log.length + 2)]), { code: 'SQLITE_FULL' }, 'the storage failure, not a result for either entry');
  t.equal(sm.applied().index, log.length, 'nothing applied: the node replays both from its log');
  t.equal(stateHash(sm.sqlite), before);
  await sm.close();
});
