// Determinism and invariants of the state machine under randomized command streams (fast-check):
// replicas applying the same log in different batches, with commits deferred or not, end
// byte-identical (same state hash), a replayed log changes nothing, counts always equal the rows, no
// message is handed to a second consumer while its lease is alive, and every message received has
// the body it was sent with. Both in this build's format and in format 4, where rows leave their
// bodies in the log.
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import t from 'tap';
import { BODIES_IN_LOG, BrokerStateMachine, FORMAT, MESSAGE_TABLE, PARKED_POLLS, bodyText, stateHash, type ApplyEntry, type Applied, type Envelope, type Command, type Result } from '../../../src/store/broker/index.js';
import { bodiesOf } from './helpers.js';
import { CommandStream } from './command-stream.js';

const dir = mkdtempSync(join(tmpdir(), 'mom-determinism-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));
let n = 0;
/**
 * A replica that reads `format`, and (format 4) reads its bodies from `log`. With `rowid`, the raise
 * to format 10 leaves its message table in the rowid layout, as it does a large one (message-table.ts).
 */
const open = (log: readonly ApplyEntry[], format = FORMAT, rowid = false): Promise<BrokerStateMachine> =>
  BrokerStateMachine.open(join(dir, `s${n++}.db`), 3, { readable: Math.max(format, FORMAT), bodies: bodiesOf(log), ...(rowid ? { rebuildInApply: null } : {}) });

/** Row counts by state must equal the counters the stats are computed from. */
function checkCounts(sm: BrokerStateMachine): void {
  const rows = sm.sqlite
    .prepare(
      `select c.id, c.n_ready, c.n_leased, c.n_delayed,
              (select count(*) from messages m where m.channel_id = c.id and m.state = 0) as r,
              (select count(*) from messages m where m.channel_id = c.id and m.state = 1) as l,
              (select count(*) from messages m where m.channel_id = c.id and m.state = 2) as d
       from channels c`,
    )
    .all() as { id: number; n_ready: number; n_leased: number; n_delayed: number; r: number; l: number; d: number }[];
  for (const c of rows) {
    if (c.n_ready !== c.r || c.n_leased !== c.l || c.n_delayed !== c.d) {
      throw new Error(`channel ${c.id}: counters ${c.n_ready}/${c.n_leased}/${c.n_delayed} but rows ${c.r}/${c.l}/${c.d}`);
    }
  }
  const orphans = sm.sqlite.prepare('select count(*) as n from messages where channel_id not in (select id from channels)').get() as { n: number };
  if (orphans.n !== 0) throw new Error(`${orphans.n} messages outlive their queue`);
}

/** Tracks live leases from receive answers: a message must not be handed out again while leased. */
class LeaseChecker {
  private readonly live = new Map<string, number>();

  check(sm: BrokerStateMachine, applied: Applied, type: string): void {
    if (!applied.result.ok) return;
    const now = sm.clock();
    const v = applied.result.value as { messages?: { receiptHandle: string }[]; acked?: string[] };
    // Messages leased to parked polls (by any command that made them visible) are receives too.
    const leased = [...(type === 'receive' ? (v.messages ?? []) : []), ...applied.delivered.flatMap((d) => d.messages)];
    if (leased.length > 0) {
      for (const m of leased) {
        const [channel, seq] = Buffer.from(m.receiptHandle, 'base64url').toString().split('.');
        const key = `${channel}.${seq}`;
        const until = this.live.get(key);
        if (until !== undefined && until > now) throw new Error(`message ${key} delivered again while leased until ${until} (now ${now})`);
        const row = sm.sqlite.prepare('select visible_at from messages where channel_id = ? and seq = ?').get(Number(channel), Number(seq)) as { visible_at: number };
        this.live.set(key, row.visible_at);
      }
    }
    if (type === 'ack' || type === 'nack') {
      for (const h of v.acked ?? []) {
        const [channel, seq] = Buffer.from(h, 'base64url').toString().split('.');
        this.live.delete(`${channel}.${seq}`);
      }
    } else if (type === 'lease') {
      for (const h of v.acked ?? []) {
        const [channel, seq] = Buffer.from(h, 'base64url').toString().split('.');
        const row = sm.sqlite.prepare('select visible_at from messages where channel_id = ? and seq = ?').get(Number(channel), Number(seq)) as { visible_at: number };
        this.live.set(`${channel}.${seq}`, row.visible_at);
      }
    } else if (type === 'queue.purge' || type === 'queue.delete') {
      this.live.clear();
    }
  }
}

/** Bodies by message id, as sends and publishes answered them: what every receive must hand out. */
class BodyChecker {
  private readonly sent = new Map<string, string>();

  check(env: Envelope, applied: Applied): void {
    const c = env.command;
    type Items = { items?: { messageId: string }[] };
    const v = applied.result.ok ? (applied.result.value as Items & { publishes?: Result<Items>[]; messages?: { messageId: string; body: string }[] }) : null;
    // A duplicate answers the first message's id: the first body stays.
    const sent = (items: readonly { messageId: string }[], first: number): void =>
      items.forEach((item, i) => {
        if (!this.sent.has(item.messageId)) this.sent.set(item.messageId, bodyText((c as Extract<Command, { type: 'queue.send' | 'topic.publish' }>).messages[first + i]!.body));
      });
    if ((c.type === 'queue.send' || c.type === 'topic.publish') && v?.items !== undefined) sent(v.items, 0);
    // Publishes sharing an entry (format 11): each its own result, its messages after those before it.
    if (c.type === 'topic.publish' && v?.publishes !== undefined) {
      let first = 0;
      v.publishes.forEach((r, k) => {
        if (r.ok) sent(r.value.items!, first);
        first += c.split![k]!;
      });
    }
    const received = [...(c.type === 'receive' ? (v?.messages ?? []) : []), ...applied.delivered.flatMap((d) => d.messages)];
    for (const m of received) {
      const want = this.sent.get(m.messageId);
      if (want !== undefined && m.body !== want) throw new Error(`message ${m.messageId} received with body ${JSON.stringify(m.body)}, sent with ${JSON.stringify(want)}`);
    }
  }
}

/**
 * Generates a log of `length` commands in `format` by applying them to `sm` one by one, checking
 * invariants. `log` is filled as it goes (a replica of format 4 reads its bodies from it).
 */
function generate(sm: BrokerStateMachine, seed: number, length: number, format = FORMAT, log: ApplyEntry[] = [], results?: Map<number, Applied>): ApplyEntry[] {
  const stream = new CommandStream(seed, format);
  const leases = new LeaseChecker();
  const bodies = new BodyChecker();
  // A command whose Idempotency-Key its actor used before answers the first result again (or is
  // refused): its messages are no news about leases.
  const keys = new Set<string>();
  const envs = stream.setup();
  for (let i = 0; i < length; i++) envs.push(stream.next());
  for (const env of envs) {
    const [entry] = stream.entries([env]);
    log.push(entry!);
    const [applied] = sm.apply([entry!]);
    results?.set(applied!.index, applied!);
    // The stream makes only commands this build's API or housekeeping would: none may break an
    // assumption of the apply (a publish's split whose places collided did, alike on every replica).
    const r = applied!.result;
    if (!r.ok && r.detail === 'malformed command') throw new Error(`entry ${applied!.index}: ${env.command.type} applied as a malformed command`);
    stream.observe(env, applied!);
    bodies.check(env, applied!);
    const key = env.idempotencyKey === undefined ? null : `${env.actor}/${env.idempotencyKey}`;
    if (key === null || !keys.has(key)) leases.check(sm, applied!, env.command.type);
    if (key !== null) keys.add(key);
    checkCounts(sm);
  }
  return log;
}

/**
 * Replica b's result of an entry against a's, which answered every entry: the same, except that a
 * receive b does not answer (`answers` false) gives only the count of the messages a received.
 */
function sameResult(a: Applied, b: Applied, answers: boolean): boolean {
  const value = (b.result.ok ? b.result.value : null) as { unanswered?: number; messages?: unknown[] } | null;
  if (value?.unanswered !== undefined) {
    const whole = (a.result.ok ? a.result.value : null) as { messages?: unknown[] } | null;
    if (answers) throw new Error(`entry ${b.index}: an answered receive left its messages out`);
    if (value.messages?.length !== 0 || whole?.messages?.length !== value.unanswered) throw new Error(`entry ${b.index}: ${value.unanswered} left out, ${whole?.messages?.length} received`);
    for (const k of ['delivered', 'woke', 'retimed'] as const) if (JSON.stringify(a[k]) !== JSON.stringify(b[k])) throw new Error(`entry ${b.index}: other ${k}`);
    return value.unanswered > 0;
  }
  if (JSON.stringify(a) !== JSON.stringify(b)) throw new Error(`entry ${b.index}: results differ: ${JSON.stringify(a).slice(0, 300)} against ${JSON.stringify(b).slice(0, 300)}`);
  return false;
}

for (const format of [PARKED_POLLS, BODIES_IN_LOG, FORMAT]) {
t.test(`format ${format}: replicas applying the same log in different batches reach the same state, and receive what was sent`, async (t) => {
  // Receives a replica did not answer that leased messages, and its runs (fast-check's shrinking may add some).
  let leftOut = 0;
  let runs = 0;
  await fc.assert(
    fc.asyncProperty(fc.integer({ min: 1, max: 2 ** 31 - 1 }), fc.array(fc.integer({ min: 1, max: 40 }), { minLength: 1, maxLength: 20 }), async (seed, cuts) => {
      const log: ApplyEntry[] = [];
      const a = await open(log, format);
      // From format 10 on, replica b keeps the rowid layout: the two layouts give the same results.
      const b = await open(log, format, true);
      const results = new Map<number, Applied>();
      runs++;
      try {
        generate(a, seed, 300, format, log, results);
        // Replica b gets the same entries in batches of the generated sizes, as a node host applies
        // them: deferred, committed now and then (the sizes decide which, and when). It answers
        // only some of them (as a node answers only what it proposed): the others' results may
        // leave a receive's messages out, never the state's changes.
        const answered = (index: number): boolean => (index * 7 + seed) % 3 !== 0;
        let at = 0;
        for (let i = 0; at < log.length; i++) {
          const size = cuts[i % cuts.length]!;
          for (const r of b.apply(log.slice(at, at + size), { defer: size % 4 !== 0, answered })) if (sameResult(results.get(r.index)!, r, answered(r.index))) leftOut++;
          if (size % 3 === 0) b.commit();
          at += size;
          checkCounts(b);
        }
        const ha = stateHash(a.sqlite);
        if (stateHash(b.sqlite) !== ha) throw new Error(`seed ${seed}: replicas diverged`);
        const layouts = [a.messageTable(), b.messageTable()].join(' and ');
        if (layouts !== (format >= MESSAGE_TABLE ? 'clustered and rowid' : 'rowid and rowid')) throw new Error(`message tables ${layouts} in format ${format}`);
        // Exactly once: the whole log again changes nothing.
        b.apply(log);
        if (stateHash(b.sqlite) !== ha) throw new Error(`seed ${seed}: a replayed log changed the state`);
        if (b.applied().index !== log.length) throw new Error('applied index is not the last entry');
      } finally {
        await a.close();
        await b.close();
      }
    }),
    // A failure prints fast-check's seed and path: MOM_FC_SEED=<seed> MOM_FC_PATH=<path> replays it.
    { numRuns: 25, ...(process.env.MOM_FC_SEED === undefined ? {} : { seed: Number(process.env.MOM_FC_SEED), path: process.env.MOM_FC_PATH }) },
  );
  t.pass('25 random logs of 300 commands: identical hashes, replay is a no-op, invariants held, bodies as sent');
  t.ok(leftOut > runs, `receives a replica did not answer left their messages out (${leftOut} in ${runs} logs), the state alike`);
});
}

t.test('the state hash tells different states apart', async (t) => {
  const log: ApplyEntry[] = [];
  const a = await open(log);
  const b = await open(log);
  generate(a, 7, 50, FORMAT, log);
  b.apply(log.slice(0, 49));
  t.not(stateHash(b.sqlite), stateHash(a.sqlite), 'one entry fewer gives another hash');
  b.apply(log.slice(49));
  t.equal(stateHash(b.sqlite), stateHash(a.sqlite));
  await a.close();
  await b.close();
});

t.test('a snapshot installed elsewhere gives the same state, and both go on identically', async (t) => {
  const log: ApplyEntry[] = [];
  const a = await open(log);
  generate(a, 11, 400, FORMAT, log);
  const cut = 250;
  const ref = await open(log);
  ref.apply(log.slice(0, cut));
  const snapFile = join(dir, 'snap.db');
  const at = await ref.snapshotTo(snapFile);
  t.equal(at.index, cut);
  const target = join(dir, 'installed.db');
  await BrokerStateMachine.installSnapshot(target, snapFile);
  const installed = await BrokerStateMachine.open(target, 3, { bodies: bodiesOf(log) });
  t.equal(installed.applied().index, cut, 'the applied index comes with the snapshot');
  t.equal(stateHash(installed.sqlite), stateHash(ref.sqlite));
  installed.apply(log.slice(cut));
  t.equal(stateHash(installed.sqlite), stateHash(a.sqlite), 'after the rest of the log, same as a replica that never compacted');
  await Promise.all([a.close(), ref.close(), installed.close()]);
});

t.test('a snapshot copied while entries go on applying is exactly the state at the index it names', async (t) => {
  const log: ApplyEntry[] = [];
  generate(await open(log), 23, 3000, FORMAT, log);
  const start = 1000;
  const source = await open(log);
  source.apply(log.slice(0, start));
  const snapFile = join(dir, 'snap-live.db');
  let next = start;
  let copying = true;
  // One entry per event-loop turn while the copy runs, as the node's loop would apply them.
  const pump = (): void => {
    if (!copying || next >= log.length) return;
    source.apply([log[next++]!]);
    setImmediate(pump);
  };
  const copy = source.snapshotTo(snapFile);
  setImmediate(pump);
  const at = await copy;
  copying = false;
  t.ok(next > start + 1, `entries were applied during the copy (${next - start})`);
  t.ok(at.index > log[start - 1]!.index && at.index <= log[next - 1]!.index, `the image names an index applied during the copy (${at.index})`);
  const target = join(dir, 'installed-live.db');
  await BrokerStateMachine.installSnapshot(target, snapFile);
  const installed = await BrokerStateMachine.open(target, 3, { bodies: bodiesOf(log) });
  t.equal(installed.applied().index, at.index);
  const ref = await open(log);
  ref.apply(log.filter((e) => e.index <= at.index));
  t.equal(stateHash(installed.sqlite), stateHash(ref.sqlite), 'the image is the state after exactly the entries up to that index');
  await Promise.all([source.close(), installed.close(), ref.close()]);
});

t.test('a snapshot of a state closed during the copy fails, and leaves no image', async (t) => {
  const log: ApplyEntry[] = [];
  generate(await open(log), 29, 2000, FORMAT, log);
  const source = await open(log);
  source.apply(log);
  const snapFile = join(dir, 'snap-closed.db');
  const copy = source.snapshotTo(snapFile);
  await new Promise((r) => setImmediate(r));
  await source.close();
  await t.rejects(copy, /not open/);
  t.notOk(existsSync(snapFile), 'no image under the final name');
});
