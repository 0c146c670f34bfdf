// Subscription filters as publishes match them (filters.ts): each parsed once per subscription, not
// at every publish (review of stop 62), and the cache changes no answer: a replica that opens anew
// before every entry (nothing cached) answers each publish the same and ends byte-identical, a
// subscription made again under its old name matches by its new filter, and a batch rolled back and
// applied again one command at a time answers as one applied entry by entry.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { FilterCache } from '../../../src/store/broker/filters.js';
import { BrokerStateMachine, MAX_FILTER_BYTES, stateHash, type ApplyEntry, type Command, type Result } from '../../../src/store/broker/index.js';
import { TestStore, bodiesOf } from './helpers.js';
import { msg, openStore, publish, sub, subscription, take, topic } from './unit-kit.js';

type Sent = { items: { subscriptions: number }[] };

/** A filter of `pairs` pairs whose JSON is about `bytes` long: values of control characters, 6 bytes each. */
function bigFilter(tag: string, pairs: number, bytes: number): Record<string, string> {
  const f: Record<string, string> = { tag };
  const per = Math.min(1023, Math.floor(bytes / pairs / 6));
  for (let p = 1; p < pairs; p++) f[`k${p}`] = '\u0001'.repeat(per) + tag;
  return f;
}

/** The attributes a message needs to match bigFilter(tag, ...). */
const matching = (f: Record<string, string>): Record<string, string> => ({ ...f, extra: 'x' });

t.test('FilterCache: a filter is read and parsed once, null ones too; the least recently used go past the budget', async (t) => {
  // Room for three of the four below (each costs its JSON's characters and 64), not for all four.
  const cache = new FilterCache(250);
  const reads: number[] = [];
  const text = (id: number, json: string | null) => () => {
    reads.push(id);
    return json;
  };
  const a = cache.of(1, text(1, '{"color":"red"}'));
  t.strictSame(a, { color: 'red' });
  t.strictSame(cache.of(1, text(1, 'unused')), a, 'the same object from the cache');
  t.ok(Object.isFrozen(a), 'shared by every publish: frozen');
  t.equal(cache.of(2, text(2, null)), null);
  t.equal(cache.of(2, text(2, 'unused')), null, 'no filter is cached too');
  cache.of(3, text(3, '{"k":"v"}'));
  cache.of(1, text(1, 'unused'));
  cache.of(4, text(4, '{"k":"w"}'));
  t.strictSame(reads, [1, 2, 3, 4], 'each read once while it fits');
  t.equal(cache.held.filters, 3, 'one went past the budget');
  cache.of(2, text(2, null));
  t.strictSame(reads, [1, 2, 3, 4, 2], 'the least recently used (2, not 1, used since) went first');
});

t.test('FilterCache: a filter over MAX_FILTER_BYTES (made before the limit) is parsed at each look and never cached', async (t) => {
  const cache = new FilterCache();
  const json = JSON.stringify(bigFilter('old', 16, 110_000));
  t.ok(json.length > MAX_FILTER_BYTES);
  let reads = 0;
  for (let i = 0; i < 3; i++) {
    t.strictSame(
      cache.of(7, () => (reads++, json)),
      JSON.parse(json),
    );
  }
  t.equal(reads, 3);
  t.strictSame(cache.held, { filters: 0, chars: 0 });
});

/** The entries `s` applied, as its log holds them. */
const logOf = (s: TestStore): ApplyEntry[] => [...s.entries].sort(([a], [b]) => a - b).map(([index, data]) => ({ index, term: 1, kind: 0, data }));

t.test('a topic of many filtered subscriptions: each publish reaches those whose filter matches, as a replica with nothing cached answers', async (t) => {
  const s = await openStore(t, 'alice', 'bob');
  s.must('alice', topic('news'));
  const filters = new Map<string, Record<string, string> | null>();
  for (let i = 0; i < 120; i++) {
    // Up to the API's limit, some past it (made before it), some without a filter or with an empty one.
    const f = i % 10 === 9 ? null : i % 10 === 8 ? {} : bigFilter(`t${i % 7}`, 1 + (i % 16), i % 5 === 0 ? 20_000 : MAX_FILTER_BYTES - 200);
    filters.set(`s${String(i).padStart(3, '0')}`, f);
    s.must(i % 2 === 0 ? 'alice' : 'bob', subscription('news', `s${String(i).padStart(3, '0')}`, { filter: f }));
  }
  /** Each publish's answer, by its entry's index. */
  const answers = new Map<number, Result>();
  const pub = (...attributes: Record<string, string>[]): Sent => {
    const a = s.apply('alice', publish('news', ...attributes.map((at, k) => msg(`m${answers.size}.${k}`, { attributes: at }))));
    answers.set(a.index, a.result);
    if (!a.result.ok) throw new Error(`publish refused: ${a.result.code} ${a.result.detail}`);
    return a.result.value as Sent;
  };
  /** How many subscriptions a message of `attributes` reaches, by the filters as made. */
  const expected = (attributes: Record<string, string>): number =>
    [...filters.values()].filter((f) => f === null || Object.entries(f).every(([k, v]) => attributes[k] === v)).length;

  const t3 = filters.get('s003')!;
  const t5 = filters.get('s005')!;
  const first = pub(matching(t3), { tag: 't3' }, {});
  t.strictSame(
    first.items.map((i) => i.subscriptions),
    [expected(matching(t3)), expected({ tag: 't3' }), expected({})],
  );
  t.ok(first.items[0]!.subscriptions > 12, 'some filtered subscriptions matched');
  t.strictSame(pub(matching(t5)).items[0]!.subscriptions, expected(matching(t5)), 'again, from the cache');
  // Made again under its name, a subscription has another channel: its new filter holds.
  s.must('alice', { type: 'subscription.delete', topic: 'news', name: 's003' });
  s.must('alice', subscription('news', 's003', { filter: { tag: 'only-this' } }));
  filters.set('s003', { tag: 'only-this' });
  t.strictSame(pub(matching(t3)).items[0]!.subscriptions, expected(matching(t3)), 's003 no longer matches');
  t.strictSame(pub({ tag: 'only-this' }).items[0]!.subscriptions, expected({ tag: 'only-this' }));
  // Publishes sharing an entry (format 11) read the same filters.
  const split = s.apply('alice', { type: 'topic.publish', name: 'news', messages: [msg('a', { attributes: matching(t5) }), msg('b', { attributes: { tag: 'none' } })], split: [1, 1] });
  answers.set(split.index, split.result);
  if (!split.result.ok) throw new Error(`publishes refused: ${split.result.detail}`);
  t.strictSame(
    (split.result.value as { publishes: Result<Sent>[] }).publishes.map((p) => (p.ok ? p.value.items[0]!.subscriptions : -1)),
    [expected(matching(t5)), expected({ tag: 'none' })],
  );
  const got = take(s, 'alice', sub('news', 's003'), 100).map((m) => m.body);
  t.strictSame(got, ['m3.0'], "the new s003 got only the message of its own filter's pair");
  t.ok(
    take(s, 'bob', sub('news', 's005'), 100).some((m) => m.body === 'm1.0'),
    's005 got the message its filter matches',
  );

  // A replica opened anew before every entry, so that nothing is ever cached, applies the same log.
  const dir = mkdtempSync(join(tmpdir(), 'mom-filters-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const log = logOf(s);
  const fresh = new Map<number, Result>();
  let hash = '';
  for (const e of log) {
    const sm = await BrokerStateMachine.open(join(dir, 'state.db'), 0, { bodies: bodiesOf(log) });
    fresh.set(e.index, sm.apply([e])[0]!.result);
    hash = stateHash(sm.sqlite);
    await sm.close();
  }
  t.strictSame(
    [...answers.keys()].map((i) => fresh.get(i)),
    [...answers.values()],
    "every publish answered as the fresh replica's",
  );
  t.equal(hash, stateHash(s.sm.sqlite), 'byte-identical state');
});

/** The next `commands` as log entries of `s`, one each, from `actor`. */
function next(s: TestStore, actor: string, ...commands: Command[]): ApplyEntry[] {
  return commands.map((command) => ({ index: ++s.index, term: 1, kind: 0, data: s.encode({ time: s.time, actor, command }) }));
}

t.test('a batch rolled back and applied again one command at a time answers as a replica that applied it entry by entry', async (t) => {
  const stores = [await openStore(t, 'alice'), await openStore(t, 'alice')];
  for (const s of stores) {
    s.must('alice', topic('news'));
    for (let i = 0; i < 20; i++) s.must('alice', subscription('news', `s${i}`, { filter: { n: String(i % 4) } }));
    // Fills the cache with the topic's filters.
    s.must('alice', publish('news', msg('warm', { attributes: { n: '1' } })));
  }
  // Passes the envelope's shape check, then breaks apply (no messages array): the batch rolls back.
  const broken = { type: 'topic.publish', name: 'news', messages: null } as unknown as Command;
  const batch = (s: TestStore): ApplyEntry[] =>
    next(
      s,
      'alice',
      publish('news', msg('a', { attributes: { n: '2' } })),
      { type: 'subscription.delete', topic: 'news', name: 's2' },
      subscription('news', 's2', { filter: { n: '3' } }),
      publish('news', msg('b', { attributes: { n: '2' } }), msg('c', { attributes: { n: '3' } })),
      broken,
      publish('news', msg('d', { attributes: { n: '3' } })),
    );
  const [a, b] = stores as [TestStore, TestStore];
  const grouped = a.sm.apply(batch(a), { defer: true });
  a.sm.commit();
  const single = batch(b).map((e) => b.sm.apply([e])[0]!);
  t.strictSame(grouped, single, 'the same answers');
  /** What each publish reached, message by message (other answers left out). */
  const reached = (r: Result): number[][] => (r.ok && (r.value as Sent | null)?.items !== undefined ? [(r.value as Sent).items.map((i) => i.subscriptions)] : []);
  t.strictSame(
    grouped.flatMap((x) => reached(x.result)),
    [[5], [4, 6], [6]],
    "s2's new filter holds from its creation on",
  );
  t.match(grouped[4], { result: { ok: false, detail: 'malformed command' } });
  t.equal(stateHash(a.sm.sqlite), stateHash(b.sm.sqlite), 'byte-identical state');
});
