// A subscription filter holds at most 4 KiB as JSON (review of stop 62): the attributes' limits alone
// let one reach ~110 KB with control characters, and every publish read and parsed every filter of
// its topic on every node, so that 1,000 of them held each node ~2 s per publish. A larger filter
// answers 400 in problem+json and makes nothing; publishing to a topic of many filtered
// subscriptions reaches those whose filter matches, and only those.
import t, { type Test } from 'tap';
import { call, drain, userToken } from './api-helpers.js';
import { localApp } from './local-app.js';

const LIMIT = 4096;
const local = await localApp();
t.teardown(() => local.close());
const u = local.url;
const owner = await userToken(u, 'filter-owner');
const other = await userToken(u, 'filter-other');
t.equal((await call(u, 'POST', '/v1/topics', { token: owner, body: { name: 'open-t', subscribe: 'anyone' } })).status, 201);

const utf8 = (f: Record<string, string>): number => Buffer.byteLength(JSON.stringify(f), 'utf8');

/** A filter of `tag` and ASCII pairs whose JSON is exactly `bytes` long. */
function sized(tag: string, bytes: number): Record<string, string> {
  const f: Record<string, string> = { tag, k1: '', k2: '', k3: '', k4: '' };
  let room = bytes - utf8(f);
  for (const k of ['k1', 'k2', 'k3', 'k4']) {
    f[k] = 'x'.repeat(Math.min(1024, room));
    room -= f[k].length;
  }
  if (utf8(f) !== bytes) throw new Error(`sized: ${utf8(f)} bytes, not ${bytes}`);
  return f;
}

const subscribe = (token: string, name: string, filter: Record<string, string>) =>
  call(u, 'POST', '/v1/topics/open-t/subscriptions', { token, body: { name, filter: { attributes: filter } } });

/** Answered 400 validation_failed in problem+json, and the subscription was not made. */
async function refused(t: Test, name: string, filter: Record<string, string>): Promise<void> {
  const r = await subscribe(other, name, filter);
  t.equal(r.status, 400, `${utf8(filter)} bytes of JSON: 400`);
  t.match(r.headers['content-type'], /^application\/problem\+json/);
  t.match(r.body, { code: 'validation_failed', detail: `filter.attributes is ${utf8(filter)} bytes as JSON; the limit is ${LIMIT}` });
  t.equal((await call(u, 'GET', `/v1/topics/open-t/subscriptions/${name}`, { token: other })).status, 404, 'nothing made');
}

t.test('a filter of 4,096 bytes of JSON is taken; one byte more is refused with 400', async (t) => {
  const at = sized('at-limit', LIMIT);
  t.match(await subscribe(other, 'at-limit', at), { status: 201, body: { name: 'at-limit', filter: { attributes: at } } });
  await refused(t, 'past-limit', sized('past-limit', LIMIT + 1));
});

t.test('bytes of UTF-8 count, not characters: two values of 1,024 two-byte characters are refused', async (t) => {
  const f = { a: 'é'.repeat(1024), b: 'é'.repeat(1024) };
  t.ok(JSON.stringify(f).length < LIMIT, 'fewer characters than the limit');
  await refused(t, 'accents', f);
});

t.test('a control character counts as its 6-byte escape: the largest filter the attributes allow (~110 KB) is 400, not 413', async (t) => {
  await refused(t, 'controls', { a: '\u0001'.repeat(700) });
  const largest: Record<string, string> = {};
  for (let i = 0; i < 16; i++) largest['\u0001'.repeat(127) + String.fromCharCode(65 + i)] = '\u0001'.repeat(1024);
  t.ok(utf8(largest) > 100_000);
  await refused(t, 'largest', largest);
});

t.test('a topic of many filtered subscriptions: each message reaches those whose filter it matches, and only those', async (t) => {
  // Filters near the limit, of 4 tags; every fifth subscription has none.
  const tagOf = (i: number): string | null => (i % 5 === 4 ? null : `tag-${i % 4}`);
  const made: string[] = [];
  for (let i = 0; i < 120; i++) {
    const tag = tagOf(i);
    const name = `many-${i}`;
    const body = tag === null ? { name } : { name, filter: { attributes: sized(tag, LIMIT - (i % 7)) } };
    const r = await call(u, 'POST', '/v1/topics/open-t/subscriptions', { token: i % 2 === 0 ? owner : other, body });
    t.equal(r.status, 201, name);
    made.push(name);
  }
  // (The first test's 'at-limit' subscription is there too, of a tag of its own.)
  const unfiltered = made.filter((_, i) => tagOf(i) === null).length;
  const tagged = (tag: string): number => made.filter((_, i) => tagOf(i) === tag).length;
  // sized(tag, n) is the same filter for the same tag and n: a message of i's pairs matches i's filter and its equals.
  const attrs = (tag: string, i: number) => ({ ...sized(tag, LIMIT - (i % 7)), extra: 'more' });
  const published = await call(u, 'POST', '/v1/topics/open-t/messages', { token: owner, body: { body: 'to tag-1 of many-1', attributes: attrs('tag-1', 1) } });
  t.equal(published.status, 201);
  const sameShape = made.filter((_, i) => tagOf(i) === 'tag-1' && i % 7 === 1).length;
  t.equal((published.body as { subscriptions: number }).subscriptions, sameShape + unfiltered, 'the tag-1 filters of the same pairs, and those without a filter');
  const plain = await call(u, 'POST', '/v1/topics/open-t/messages', { token: owner, body: { body: 'plain', attributes: { tag: 'tag-2' } } });
  t.equal((plain.body as { subscriptions: number }).subscriptions, unfiltered, 'a message without the pairs reaches only those without a filter');
  t.ok(tagged('tag-1') > sameShape, 'other tag-1 filters (other pairs) did not match');

  const bodiesOf = async (i: number) => (await drain(u, `/v1/topics/open-t/subscriptions/many-${i}`, i % 2 === 0 ? owner : other)).map((m) => m.body);
  t.strictSame(await bodiesOf(1), ['to tag-1 of many-1'], 'many-1: its own message');
  t.strictSame(await bodiesOf(57), ['to tag-1 of many-1'], 'many-57 (tag-1, the same pairs)');
  t.strictSame(await bodiesOf(5), [], 'many-5 (tag-1, other pairs): nothing');
  t.strictSame(await bodiesOf(2), [], 'many-2 (tag-2): nothing');
  t.strictSame(await bodiesOf(4), ['to tag-1 of many-1', 'plain'], 'many-4 (no filter): everything');
  t.strictSame(await bodiesOf(1), [], 'many-1 again: nothing more');
});
