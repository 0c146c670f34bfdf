// The sweep and the leader's look for one read the channels that have work, through indexes, not
// every channel of the partition (a review: one user's 40,000 empty queues held each look 0.2 s of
// a node's event loop). What a sweep does must stay what the scan of every channel did, row for row
// and in the same order, since replicas of older builds apply the same sweep entries: the replay
// below runs that scan, as this build had it before (058df70), beside the sweep on the same state,
// and compares the states' hashes.
import t, { type Test } from 'tap';
import type { Statement } from 'better-sqlite3';
import { MessageState, stateHash, type Command } from '../../../src/store/broker/index.js';
import { SWEEP_BUDGET, expire } from '../../../src/store/broker/messages.js';
import { deadLetter } from '../../../src/store/broker/leases.js';
import type { Ctx, Store } from '../../../src/store/broker/context.js';
import type { ChannelRow } from '../../../src/store/broker/schema.js';
import { TestStore, queue, receive, send } from './helpers.js';

const storeOf = (s: TestStore): Store => (s.sm as unknown as { tables: { store: Store } }).tables.store;

/** The sweep as this build applied it before: every channel in id order. */
function scanSweep(s: TestStore): { expired: number; deadLettered: number } {
  const store = storeOf(s);
  const ctx: Ctx = { index: s.index, now: s.sm.clock(), actor: null, woke: new Map(), retimed: new Set(), delivered: [], answers: true, holdsOwnLeases: true, deadLettersFirst: true, boundedDeletes: true, clearBudget: 0, keepsServed: true, receiveBytes: null, promoteBudget: null };
  let expired = 0;
  let deadLettered = 0;
  for (const ch of store.st.allChannels.all() as ChannelRow[]) {
    expired += expire(store, ch, ctx);
    if (ch.max_deliveries === null) continue;
    const budget = SWEEP_BUDGET - deadLettered;
    if (budget <= 0) break;
    const dead = store.st.dueDead.all(ch.id, ctx.now, ch.max_deliveries, budget) as { seq: number }[];
    for (const m of dead) deadLetter(store, ch, m.seq, MessageState.Leased, ctx);
    deadLettered += dead.length;
  }
  return { expired, deadLettered };
}

/** The leader's look for work as this build made it before: two probes of every channel. */
function scanNeedsSweep(s: TestStore, now: number): boolean {
  const store = storeOf(s);
  const at = Math.max(now, s.sm.clock());
  const anyExpired = s.sm.sqlite.prepare('select 1 from messages where channel_id = ? and expires_at <= ? limit 1');
  for (const ch of store.st.allChannels.all() as ChannelRow[]) {
    if (anyExpired.get(ch.id, at) !== undefined) return true;
    if (ch.max_deliveries !== null && store.st.dueDead.get(ch.id, at, ch.max_deliveries, 1) !== undefined) return true;
  }
  return false;
}

/** Two replicas of one partition, given the same entries. */
class Pair {
  private constructor(
    readonly a: TestStore,
    readonly b: TestStore,
  ) {}

  static async open(t: Test): Promise<Pair> {
    const p = new Pair(await TestStore.open(), await TestStore.open());
    t.teardown(async () => {
      await p.a.close();
      await p.b.close();
    });
    return p;
  }

  run(actor: string | null, c: Command): void {
    this.a.run(actor, c);
    this.b.run(actor, c);
  }

  advance(seconds: number): void {
    this.a.advance(seconds);
    this.b.advance(seconds);
  }

  /**
   * One sweep entry: the sweep on `a`, and on `b` an entry at the same index and time that changes
   * nothing (a user's sweep, refused) followed by the old scan. Answers both results.
   */
  sweep(): { indexed: unknown; scanned: unknown } {
    const indexed = this.a.must(null, { type: 'sweep' });
    const r = this.b.run('clock-tick', { type: 'sweep' });
    if (r.ok) throw new Error('a user swept');
    return { indexed, scanned: scanSweep(this.b) };
  }

  same(t: Test, what: string): void {
    t.equal(stateHash(this.a.sm.sqlite), stateHash(this.b.sm.sqlite), what);
  }
}

/** A seeded generator (mulberry32): the same states on every run and machine. */
function random(seed: number): () => number {
  let x = seed >>> 0;
  return () => {
    x = (x + 0x6d2b79f5) >>> 0;
    let z = x;
    z = Math.imul(z ^ (z >>> 15), z | 1);
    z ^= z + Math.imul(z ^ (z >>> 7), z | 61);
    return ((z ^ (z >>> 14)) >>> 0) / 4294967296;
  };
}

const bodies = (n: number, tag: string): string[] => Array.from({ length: n }, (_, i) => `${tag}-${i}`);

t.test('a sweep whose dead-letter budget runs out stops where the scan of every channel stopped, and does what it did', async (t) => {
  const p = await Pair.open(t);
  // In id order: the budget (1,000) runs out in q3, the scan went on expiring up to q5, the next
  // channel that dead-letters (it holds no lease), expired it too, and stopped: q6 and q7 wait for
  // the next sweep.
  p.run('alice', queue('q1', { maxDeliveries: 1, deadLetterQueue: 'dlq', visibilityTimeoutSeconds: 1 }));
  p.run('alice', queue('q2', { retentionSeconds: 60 }));
  p.run('alice', queue('q3', { maxDeliveries: 1, deadLetterQueue: 'dlq', visibilityTimeoutSeconds: 1 }));
  p.run('alice', queue('q4', { retentionSeconds: 60 }));
  p.run('alice', queue('q5', { maxDeliveries: 2, retentionSeconds: 60 }));
  p.run('alice', queue('q6', { retentionSeconds: 60 }));
  p.run('alice', queue('q7', { maxDeliveries: 1, visibilityTimeoutSeconds: 1 }));
  for (const q of ['q2', 'q4', 'q5', 'q6']) p.run('alice', send(q, ...bodies(3, q)));
  for (const q of ['q1', 'q3']) for (let i = 0; i < 6; i++) p.run('alice', send(q, ...bodies(100, `${q}.${i}`)));
  p.run('alice', send('q7', ...bodies(5, 'q7')));
  for (const q of ['q1', 'q3']) for (let i = 0; i < 6; i++) p.run('alice', receive(q, 100, 1));
  p.run('alice', receive('q7', 100, 1));
  p.advance(61);
  t.equal(scanNeedsSweep(p.b, p.b.time), true);
  t.equal(p.a.sm.needsSweep(p.a.time), true, 'the look finds work as the scan did');
  const first = p.sweep();
  t.same(first.scanned, { expired: 9, deadLettered: SWEEP_BUDGET }, 'the old scan: q2, q4 and q5 expired');
  t.same(first.indexed, first.scanned, 'the same answer');
  p.same(t, 'the same state: rows, counters, outbox ids');
  const left = p.a.sm.sqlite.prepare('select count(*) as n from messages where channel_id = (select channel_id from queues where name = ?)');
  t.equal((left.get('q6') as { n: number }).n, 3, "q6's expired messages wait, as they did");
  const second = p.sweep();
  t.same(second.indexed, second.scanned);
  t.same(second.scanned, { expired: 3, deadLettered: 205 });
  p.same(t, 'the same state after the second sweep');
  t.equal(p.a.sm.needsSweep(p.a.time), false);
  t.equal(scanNeedsSweep(p.b, p.b.time), false);
});

t.test('on random states, each sweep does what the scan of every channel did, and the look agrees with it', async (t) => {
  let expired = 0;
  let deadLettered = 0;
  for (const seed of [1, 2, 3, 4, 5, 6]) {
    const p = await Pair.open(t);
    const r = random(seed);
    const pick = <T>(xs: readonly T[]): T => xs[Math.floor(r() * xs.length)]!;
    const names: string[] = [];
    for (let i = 0; i < 30; i++) {
      const name = `q${i}`;
      names.push(name);
      const dead = r() < 0.5;
      p.run(pick(['alice', 'bob']), queue(name, {
        retentionSeconds: pick([60, 120, 345600]),
        visibilityTimeoutSeconds: pick([1, 5, 30]),
        ...(dead ? { maxDeliveries: pick([1, 2, 3]), ...(r() < 0.5 ? { deadLetterQueue: 'q0' } : {}) } : {}),
      }));
    }
    // Subscriptions are channels too: a topic's, some that dead-letter.
    p.run('alice', { type: 'topic.create', name: 'news', subscribe: 'anyone' });
    for (let i = 0; i < 4; i++) {
      p.run(pick(['alice', 'bob']), { type: 'subscription.create', topic: 'news', name: `s${i}`, visibilityTimeoutSeconds: 1, maxDeliveries: i % 2 === 0 ? 1 : null, deadLetterQueue: null, filter: null });
    }
    let sweeps = 0;
    for (let step = 0; step < 120; step++) {
      const x = r();
      const owner = (q: string): string => (p.a.sm.getQueue(q, 'alice', p.a.time).ok ? 'alice' : 'bob');
      if (x < 0.35) {
        const q = pick(names);
        p.run(owner(q), send(q, ...bodies(1 + Math.floor(r() * 40), `${seed}.${step}`)));
      } else if (x < 0.45) {
        p.run('alice', { type: 'topic.publish', name: 'news', messages: bodies(1 + Math.floor(r() * 5), `${seed}.${step}`).map((body) => ({ body, attributes: {} })) });
      } else if (x < 0.7) {
        const q = pick(names);
        p.run(owner(q), receive(q, 1 + Math.floor(r() * 50), pick([null, 1, 2])));
      } else if (x < 0.75) {
        p.run(pick(['alice', 'bob']), { type: 'receive', channel: { topic: 'news', subscription: `s${Math.floor(r() * 4)}` }, maxMessages: 20, visibilityTimeoutSeconds: 1 });
      } else if (x < 0.9) {
        p.advance(pick([1, 2, 5, 30, 61, 130]));
      } else {
        t.equal(p.a.sm.needsSweep(p.a.time), scanNeedsSweep(p.b, p.b.time), `seed ${seed}, step ${step}: the look agrees`);
        const { indexed, scanned } = p.sweep();
        t.same(indexed, scanned, `seed ${seed}, step ${step}: the same answer`);
        const done = scanned as { expired: number; deadLettered: number };
        expired += done.expired;
        deadLettered += done.deadLettered;
        sweeps++;
      }
    }
    p.advance(130);
    t.equal(p.a.sm.needsSweep(p.a.time), scanNeedsSweep(p.b, p.b.time), `seed ${seed}: the look agrees at the end`);
    const { indexed, scanned } = p.sweep();
    t.same(indexed, scanned, `seed ${seed}: the same last answer`);
    p.same(t, `seed ${seed}: the same state after ${sweeps + 1} sweeps`);
  }
  t.ok(expired > 0 && deadLettered > 0, `the sweeps had work: ${expired} messages expired, ${deadLettered} dead-lettered`);
});

/**
 * Counts what the sweep's statements read while `f` runs: how many times one ran, and the rows they
 * gave. The statements of the store's concerns (sweep, needsSweep) are counted; time is not.
 */
function reads(s: TestStore, f: () => void): { runs: number; rows: number } {
  const store = storeOf(s) as { st: Record<string, unknown> };
  const counted = { runs: 0, rows: 0 };
  const wrap = (st: Statement): Statement =>
    new Proxy(st, {
      get(target, prop, receiver) {
        const v = Reflect.get(target, prop, receiver) as unknown;
        if (typeof v !== 'function' || !['get', 'all', 'run', 'iterate'].includes(prop as string)) return v;
        return (...args: unknown[]) => {
          counted.runs++;
          const out = (v as (...a: unknown[]) => unknown).apply(target, args);
          if (prop === 'all') counted.rows += (out as unknown[]).length;
          else if (prop === 'get' && out !== undefined) counted.rows++;
          return out;
        };
      },
    });
  const real = store.st;
  const proxied = Object.fromEntries(Object.entries(real).map(([k, v]) => [k, typeof (v as Statement)?.all === 'function' ? wrap(v as Statement) : v]));
  Object.assign(store, { st: proxied });
  try {
    f();
  } finally {
    Object.assign(store, { st: real });
  }
  return counted;
}

t.test("a partition's many idle channels cost its sweep and the leader's look nothing: they read the channels with work", async (t) => {
  const s = await TestStore.open();
  t.teardown(() => s.close());
  // 1,200 channels that need nothing: empty queues, queues whose messages are live, queues that
  // dead-letter with messages never received, and a topic's subscriptions with copies.
  for (let i = 0; i < 400; i++) s.must(`u${i % 4}`, queue(`empty${i}`));
  for (let i = 0; i < 300; i++) {
    s.must(`u${i % 4}`, queue(`live${i}`, { maxDeliveries: i % 2 === 0 ? 3 : null }));
    s.must(`u${i % 4}`, send(`live${i}`, 'm'));
  }
  s.must('u0', { type: 'topic.create', name: 'news', subscribe: 'anyone' });
  for (let i = 0; i < 200; i++) s.must(`u${i % 4}`, { type: 'subscription.create', topic: 'news', name: `s${i}`, visibilityTimeoutSeconds: 30, maxDeliveries: 2, deadLetterQueue: null, filter: null });
  s.must('u0', { type: 'topic.publish', name: 'news', messages: [{ body: 'p', attributes: {} }] });
  s.advance(10);
  let needs = true;
  const look = reads(s, () => (needs = s.sm.needsSweep(s.time)));
  t.equal(needs, false, 'nothing to sweep');
  // A few statements, whatever the channels: the scan of every channel ran over a thousand here.
  t.ok(look.runs <= 10 && look.rows <= 10, `the look ran ${look.runs} statements and read ${look.rows} rows, of 1,200 channels`);
  const idle = reads(s, () => t.same(s.must(null, { type: 'sweep' }), { expired: 0, deadLettered: 0 }));
  t.ok(idle.runs <= 10 && idle.rows <= 10, `the sweep ran ${idle.runs} statements and read ${idle.rows} rows, of 1,200 channels`);

  // Work in two channels: the look and the sweep read those, not the others.
  s.must('u0', queue('short', { retentionSeconds: 60 }));
  s.must('u0', send('short', 'a', 'b'));
  s.must('u1', queue('poison', { maxDeliveries: 1, visibilityTimeoutSeconds: 1 }));
  s.must('u1', send('poison', 'x'));
  s.must('u1', receive('poison', 1, 1));
  s.advance(61);
  const busy = reads(s, () => t.same(s.must(null, { type: 'sweep' }), { expired: 2, deadLettered: 1 }));
  t.ok(busy.runs <= 30 && busy.rows <= 30, `the sweep of two channels' work ran ${busy.runs} statements and read ${busy.rows} rows`);
});
