// Commands that share an entry (PartitionReplica.propose, proposeHeld; shared-entries.ts): a user's
// sends to one queue proposed between two loop turns are appended as one send, and its acks, nacks
// and lease extensions of one channel as one of each; each request is answered with its own share.
// What a client depends on: its own message ids and sequences, its bodies stored in the order sent,
// its own handles' outcomes, a failure that is its own (not a neighbour's), and the same state on
// every replica.
import t, { type Test } from 'tap';
import { NotLeaderError, ReplicaClosedError } from '../../src/partition/errors.js';
import type { PartitionReplica } from '../../src/partition/replica.js';
import type { NodeHost } from '../../src/partition/host.js';
import { TOGETHER_MAX_ITEMS } from '../../src/partition/shared-entries.js';
import { FORMAT, MAX_FANOUT, MAX_SPLIT, SHARED_PUBLISHES, stateHash, type Command, type HandleOutcome, type Received, type Result, type SentMessage } from '../../src/store/broker/index.js';
import { bodyText, decodeEnvelope } from '../../src/store/broker/envelope.js';
import { LocalCluster, queue } from './host-helpers.js';

async function led(t: Test): Promise<{ c: LocalCluster; leader: NodeHost; follower: NodeHost }> {
  const c = new LocalCluster(1, { balanceLeaders: false });
  t.teardown(() => c.close());
  await c.startAll();
  await c.until(() => c.leaderOf(0) !== null, 'leader');
  for (const name of ['q', 'q2']) await c.submit(0, 'alice', queue(name));
  const leader = c.leaderOf(0)!;
  return { c, leader, follower: [...c.hosts.values()].find((h) => h !== leader)! };
}

const items = (r: Result): SentMessage[] => {
  if (!r.ok) throw new Error(`${r.code}: ${r.detail}`);
  return (r.value as { items: SentMessage[] }).items;
};

/** The entry a message was stored by, and its place there: message ids are `<partition>-<index>-<place>`. */
const entryOf = (m: SentMessage): { index: number; place: number } => {
  const [, index, place] = m.messageId.split('-').map(Number) as [number, number, number];
  return { index, place };
};

const send = (name: string, bodies: string[], extra: Partial<{ deduplicationId: string }> = {}): Command => ({
  type: 'queue.send',
  name,
  messages: bodies.map((body) => ({ body, attributes: {}, ...extra })),
});

t.test('sends proposed in one turn share an entry, and each is answered with its own messages', async (t) => {
  const { c, leader } = await led(t);
  const r = leader.replica(0);
  // Fifty requests of one to three messages, all proposed before the loop's next turn.
  const requests = Array.from({ length: 50 }, (_, i) => Array.from({ length: 1 + (i % 3) }, (_, k) => `m${i}.${k}`));
  const results = await Promise.all(requests.map((bodies) => r.propose('alice', send('q', bodies))));
  const answered = results.map(items);
  answered.forEach((got, i) => t.equal(got.length, requests[i]!.length, `request ${i} got one item per message it sent`));
  const all = answered.flat();
  t.equal(new Set(all.map((m) => entryOf(m).index)).size, 1, 'one entry for them all');
  t.same(
    all.map((m) => entryOf(m).place),
    all.map((_, k) => k),
    'in the order they were proposed, each request its own places',
  );
  t.ok(
    all.every((m, k) => k === 0 || m.sequence > all[k - 1]!.sequence),
    'sequences grow in that order',
  );
  // Stored as sent: receiving returns every body, in the order of the answers' sequences.
  const got = await r.propose('alice', { type: 'receive', channel: { queue: 'q' }, maxMessages: 100, visibilityTimeoutSeconds: 30 });
  const received = (got as { value: Received }).value.messages;
  t.same(
    received.map((m) => [m.messageId, m.body]),
    all.map((m, k) => [m.messageId, requests.flat()[k]]),
    'each message id names its own body',
  );
  await c.quiet();
  const hashes = [...c.hosts.values()].map((h) => stateHash(h.replica(0).state.sqlite));
  t.equal(new Set(hashes).size, 1, 'every replica holds the same state');
});

t.test('what may not share goes alone: keyed sends, deduplicated ones, another queue; a failure stays its own', async (t) => {
  const { leader } = await led(t);
  const r = leader.replica(0);
  const [a, dedup, keyed, other, bob, missing, e] = await Promise.all([
    r.propose('alice', send('q', ['a'])),
    r.propose('alice', send('q', ['d'], { deduplicationId: 'd-1' })),
    r.propose('alice', send('q', ['k']), 'key-1'),
    r.propose('alice', send('q2', ['o'])),
    r.propose('bob', send('q', ['b'])),
    r.propose('alice', send('nope', ['n'])),
    r.propose('alice', send('q', ['e'])),
  ]);
  const index = (x: Result): number => entryOf(items(x)[0]!).index;
  t.equal(index(a), index(e), 'the two plain sends to q share an entry');
  for (const [what, x] of [['deduplicated', dedup], ['keyed', keyed], ['to another queue', other]] as const) t.not(index(x!), index(a), `the ${what} send has its own`);
  t.match(bob, { ok: false, code: 'not_found' }, "bob cannot see alice's queue: his send fails alone");
  t.match(missing, { ok: false, code: 'not_found' }, 'a send to a queue that does not exist fails alone');
});

t.test('sends to a missing queue that share an entry share its failure, and only theirs', async (t) => {
  const { leader } = await led(t);
  const r = leader.replica(0);
  const results = await Promise.all([r.propose('alice', send('nope', ['1'])), r.propose('alice', send('nope', ['2', '3'])), r.propose('alice', send('q', ['4']))]);
  t.match(results[0], { ok: false, code: 'not_found' });
  t.match(results[1], { ok: false, code: 'not_found' });
  t.equal(items(results[2]!).length, 1, 'the send to q, proposed with them, is stored');
});

t.test('more messages than an entry takes go in several entries, every request answered whole', async (t) => {
  const { leader } = await led(t);
  const r = leader.replica(0);
  const per = 100;
  const requests = Math.ceil((TOGETHER_MAX_ITEMS * 1.5) / per);
  const results = await Promise.all(Array.from({ length: requests }, (_, i) => r.propose('alice', send('q', Array.from({ length: per }, (_, k) => `${i}.${k}`)))));
  const answered = results.map(items);
  t.ok(answered.every((x) => x.length === per), 'each request got its hundred');
  const entries = new Set(answered.map((x) => entryOf(x[0]!).index));
  t.ok(entries.size >= 2, `${entries.size} entries`);
  for (const x of answered) t.equal(new Set(x.map((m) => entryOf(m).index)).size, 1, "a request's messages are never split between entries");
  t.equal(new Set(answered.flat().map((m) => m.sequence)).size, per * requests, 'every sequence distinct');
});

t.test('held sends are refused as never appended when the replica closes, and a follower holds none', async (t) => {
  const { leader, follower } = await led(t);
  await t.rejects(follower.replica(0).propose('alice', send('q', ['f'])), NotLeaderError, 'a follower refuses at once: forward it');
  const held = leader.replica(0).propose('alice', send('q', ['x']));
  leader.replica(0).close();
  await t.rejects(held, ReplicaClosedError, 'never appended: safe to try again');
});

t.test("a peer's malformed send is not held with the others: it is refused alone, and the loop goes on", async (t) => {
  const { leader } = await led(t);
  const r = leader.replica(0);
  const malformed = [
    { type: 'queue.send', name: 'q', messages: [{ attributes: {} }] },
    { type: 'queue.send', name: 'q', messages: [null] },
    { type: 'queue.send', name: 'q', messages: [{ body: 42, attributes: {} }] },
    { type: 'queue.send', name: 'q', messages: [{ body: 'x', attributes: {} }], extra: true },
  ] as unknown as Command[];
  const [good, ...bad] = await Promise.all([r.propose('alice', send('q', ['good'])), ...malformed.map((c) => r.propose('alice', c))]);
  t.equal(items(good!).length, 1, 'the well-formed send proposed with them is stored');
  for (const [i, x] of bad.entries()) {
    if (x!.ok) t.not(entryOf(items(x!)[0]!).index, entryOf(items(good!)[0]!).index, `malformed send ${i}, applied as it came, in an entry of its own`);
    else t.equal(x!.code, 'validation_failed', `malformed send ${i} refused alone`);
  }
  t.equal(items(await r.propose('alice', send('q', ['after']))).length, 1, 'and the next send is stored: the loop goes on');
});

t.test('sends share entries up to 512 KiB of bodies, and a grantee shares with itself, not with the owner', async (t) => {
  const { leader } = await led(t);
  const r = leader.replica(0);
  t.ok((await r.propose('alice', { type: 'grant.put', kind: 'queue', name: 'q', username: 'bob', actions: ['send'] })).ok);
  const big = 'é'.repeat(100 * 1024);
  const [b1, b2, a1, ...large] = await Promise.all([
    r.propose('bob', send('q', ['bob 1'])),
    r.propose('bob', send('q', ['bob 2'])),
    r.propose('alice', send('q', ['alice 1'])),
    ...Array.from({ length: 5 }, () => r.propose('alice', send('q', [big]))),
  ]);
  t.equal(entryOf(items(b1!)[0]!).index, entryOf(items(b2!)[0]!).index, "bob's two sends share an entry");
  t.not(entryOf(items(b1!)[0]!).index, entryOf(items(a1!)[0]!).index, "alice's is not in it");
  // Five bodies of 200 KiB (two bytes a character): at most two to an entry.
  const entries = new Set(large.map((x) => entryOf(items(x!)[0]!).index));
  t.ok(entries.size >= 3, `five sends of 200 KiB in ${entries.size} entries`);
});

// ---- acks, nacks and lease extensions ----

const receive = (name: string, n: number): Command => ({ type: 'receive', channel: { queue: name }, maxMessages: n, visibilityTimeoutSeconds: 30 });
const ack = (name: string, receiptHandles: string[]): Command => ({ type: 'ack', channel: { queue: name }, receiptHandles });
const nack = (name: string, receiptHandles: string[], delaySeconds: number): Command => ({ type: 'nack', channel: { queue: name }, receiptHandles, delaySeconds });
const lease = (name: string, receiptHandles: string[], visibilityTimeoutSeconds: number): Command => ({ type: 'lease', channel: { queue: name }, receiptHandles, visibilityTimeoutSeconds });

const outcome = (r: Result): HandleOutcome => {
  if (!r.ok) throw new Error(`${r.code}: ${r.detail}`);
  return r.value as HandleOutcome;
};

/** `n` messages sent to `name` and received: their receipt handles, in order. */
async function leased(r: PartitionReplica, name: string, n: number): Promise<string[]> {
  items(await r.propose('alice', send(name, Array.from({ length: n }, (_, i) => `${name} ${i}`))));
  const got = await r.propose('alice', receive(name, n));
  if (!got.ok) throw new Error(got.detail);
  return (got.value as Received).messages.map((m) => m.receiptHandle);
}

/**
 * The acks, nacks and lease extensions the leader appended after `after`, by type, in log order
 * (what housekeeping may append meanwhile, a sweep say, left out).
 */
function appendedHandleCommands(r: PartitionReplica, after: number): string[] {
  return r.log
    .entries(after + 1, r.log.lastIndex() + 1, Infinity)
    .filter((e) => e.data.byteLength > 0 && e.data[0] === 0x7b)
    .map((e) => (JSON.parse(Buffer.from(e.data).toString('utf8')) as { command: { type: string } }).command.type)
    .filter((type) => type === 'ack' || type === 'nack' || type === 'lease');
}

/** Another text for the same receipt handle: a leading zero on its channel id (decodeReceipt reads the same numbers). */
const aliasOf = (h: string): string => Buffer.from(`0${Buffer.from(h, 'base64url').toString('latin1')}`).toString('base64url');

t.test('acks proposed in one turn share an entry; each is answered with its own handles, and a handle acked twice acks once', async (t) => {
  const { c, leader } = await led(t);
  const r = leader.replica(0);
  const h = await leased(r, 'q', 30);
  const before = r.log.lastIndex();
  const requests = [...Array.from({ length: 10 }, (_, i) => h.slice(3 * i, 3 * i + 3)), [h[0]!], ['not a handle'], [h[29]!, 'nor this'], [aliasOf(h[1]!)]];
  const answers = (await Promise.all(requests.map((hs) => r.propose('alice', ack('q', hs))))).map(outcome);
  t.strictSame(appendedHandleCommands(r, before), ['ack'], 'one entry for them all');
  answers.slice(0, 10).forEach((a, i) => t.strictSame(a, { acked: requests[i], failed: [] }, `request ${i}: its own three acked`));
  t.strictSame(answers[10], { acked: [], failed: [{ receiptHandle: h[0], code: 'receipt_stale' }] }, 'the second ack of a handle: stale, as in an entry after the first');
  t.strictSame(answers[11], { acked: [], failed: [{ receiptHandle: 'not a handle', code: 'receipt_invalid' }] });
  t.strictSame(answers[12], { acked: [], failed: [{ receiptHandle: h[29], code: 'receipt_stale' }, { receiptHandle: 'nor this', code: 'receipt_invalid' }] }, 'in the order sent');
  t.strictSame(answers[13], { acked: [], failed: [{ receiptHandle: aliasOf(h[1]!), code: 'receipt_stale' }] }, 'another text for a handle acked before it in the entry: stale');
  const after = await r.propose('alice', receive('q', 30));
  t.strictSame((after as { value: Received }).value.messages, [], 'every message acked: none to receive');
  await c.quiet();
  const hashes = [...c.hosts.values()].map((x) => stateHash(x.replica(0).state.sqlite));
  t.equal(new Set(hashes).size, 1, 'every replica holds the same state');
});

t.test('nacks share with nacks of the same delay, lease extensions with those of the same timeout; a failure is its group\'s', async (t) => {
  const { c, leader } = await led(t);
  const r = leader.replica(0);
  const h = await leased(r, 'q', 6);
  t.ok((await r.propose('alice', { type: 'grant.put', kind: 'queue', name: 'q', username: 'bob', actions: ['send'] })).ok);
  const before = r.log.lastIndex();
  const [l60a, l60b, l90, n0a, n0b, n10, bob1, bob2] = await Promise.all([
      r.propose('alice', lease('q', [h[0]!], 60)),
      r.propose('alice', lease('q', [h[1]!], 60)),
      r.propose('alice', lease('q', [h[2]!], 90)),
      r.propose('alice', nack('q', [h[3]!], 0)),
      r.propose('alice', nack('q', [h[4]!], 0)),
      r.propose('alice', nack('q', [h[5]!], 10)),
      // bob may send, not receive: his acks fail, both of them, and none of alice's
      r.propose('bob', ack('q', [h[0]!])),
      r.propose('bob', ack('q', [h[1]!])),
  ]);
  t.strictSame(appendedHandleCommands(r, before).sort(), ['ack', 'lease', 'lease', 'nack', 'nack'], 'one entry per kind, parameter and user');
  for (const [i, x] of [l60a, l60b, l90, n0a, n0b, n10].entries()) t.strictSame(outcome(x!), { acked: [h[i]], failed: [] }, `request ${i}`);
  t.match(bob1, { ok: false, code: 'forbidden' });
  t.match(bob2, { ok: false, code: 'forbidden' });
  const again = await r.propose('alice', receive('q', 10));
  t.strictSame(
    (again as { value: Received }).value.messages.map((m) => m.body),
    ['q 3', 'q 4'],
    'the two nacked at once are visible again; the delayed one and the extended leases are not',
  );
  await c.quiet();
  t.equal(new Set([...c.hosts.values()].map((x) => stateHash(x.replica(0).state.sqlite))).size, 1, 'every replica holds the same state');
});

t.test("a peer's malformed ack is not held with the others: it is refused alone, and the loop goes on", async (t) => {
  const { leader } = await led(t);
  const r = leader.replica(0);
  const h = await leased(r, 'q', 2);
  const malformed = [
    { type: 'ack', channel: { queue: 'q' }, receiptHandles: [42] },
    { type: 'ack', channel: { queue: 'q', topic: 't' }, receiptHandles: [h[1]] },
    { type: 'nack', channel: { queue: 'q' }, receiptHandles: [h[1]], delaySeconds: 'soon' },
    { type: 'lease', channel: { queue: 'q' }, receiptHandles: [h[1]] },
    { type: 'ack', channel: { queue: 'q' }, receiptHandles: [] },
  ] as unknown as Command[];
  const before = r.log.lastIndex();
  const [good] = await Promise.all([r.propose('alice', ack('q', [h[0]!])), ...malformed.map((x) => r.propose('alice', x))]);
  t.strictSame(outcome(good!), { acked: [h[0]], failed: [] }, 'the well-formed ack proposed with them acks');
  t.equal(appendedHandleCommands(r, before).length, 1 + malformed.length, 'each malformed command in an entry of its own, applied (or refused) as it came');
  t.equal(items(await r.propose('alice', send('q', ['after']))).length, 1, 'and the next write is applied: the loop goes on');
});

t.test('the same handle in two requests of one entry: two lease extensions both extend; of two nacks, the second is stale', async (t) => {
  const { leader } = await led(t);
  const r = leader.replica(0);
  const h = await leased(r, 'q', 2);
  const before = r.log.lastIndex();
  const [l1, l2, n1, n2] = await Promise.all([
    r.propose('alice', lease('q', [h[0]!], 120)),
    r.propose('alice', lease('q', [h[0]!], 120)),
    r.propose('alice', nack('q', [h[1]!], 0)),
    r.propose('alice', nack('q', [h[1]!], 0)),
  ]);
  t.strictSame(appendedHandleCommands(r, before), ['lease', 'nack'], 'one entry each');
  t.strictSame([outcome(l1!), outcome(l2!)], [{ acked: [h[0]], failed: [] }, { acked: [h[0]], failed: [] }], 'a live lease extended twice');
  t.strictSame(
    [outcome(n1!), outcome(n2!)],
    [{ acked: [h[1]], failed: [] }, { acked: [], failed: [{ receiptHandle: h[1], code: 'receipt_stale' }] }],
    'a lease given up once: the second nack finds it gone',
  );
});

t.test("a subscription's acks share an entry, apart from its queue namesake's", async (t) => {
  const { leader } = await led(t);
  const r = leader.replica(0);
  const must = async (c: Command): Promise<unknown> => {
    const x = await r.propose('alice', c);
    if (!x.ok) throw new Error(`${c.type}: ${x.detail}`);
    return x.value;
  };
  await must({ type: 'topic.create', name: 'news', subscribe: 'anyone' });
  await must({ type: 'subscription.create', topic: 'news', name: 'q', visibilityTimeoutSeconds: 30, maxDeliveries: null, deadLetterQueue: null, filter: null });
  await must({ type: 'topic.publish', name: 'news', messages: [1, 2, 3, 4].map((i) => ({ body: `n${i}`, attributes: {} })) });
  const got = await must({ type: 'receive', channel: { topic: 'news', subscription: 'q' }, maxMessages: 4, visibilityTimeoutSeconds: 30 });
  const hs = (got as Received).messages.map((m) => m.receiptHandle);
  const qh = await leased(r, 'q', 1);
  const before = r.log.lastIndex();
  const sub = { topic: 'news', subscription: 'q' };
  const answers = await Promise.all([
    ...hs.map((h) => r.propose('alice', { type: 'ack', channel: sub, receiptHandles: [h] })),
    r.propose('alice', ack('q', qh)),
  ]);
  t.strictSame(appendedHandleCommands(r, before), ['ack', 'ack'], "one entry for the subscription's four, one for the queue's");
  answers.slice(0, 4).forEach((x, i) => t.strictSame(outcome(x!), { acked: [hs[i]], failed: [] }, `subscription ack ${i}`));
  t.strictSame(outcome(answers[4]!), { acked: qh, failed: [] }, "the queue's own");
});

// ---- publishes (format 11) ----

const publish = (name: string, bodies: string[]): Command => ({ type: 'topic.publish', name, messages: bodies.map((body) => ({ body, attributes: {} })) });

/** Alice's topic `name` with `subscriptions` subscriptions s0, s1, …, on a cluster of builds reading `format`. */
async function withTopic(t: Test, subscriptions: number, format = FORMAT): Promise<{ c: LocalCluster; r: PartitionReplica }> {
  const c = new LocalCluster(1, { balanceLeaders: false, format });
  t.teardown(() => c.close());
  await c.startAll();
  await c.until(() => c.leaderOf(0)?.replica(0).state.format() === format, `a leader in format ${format}`);
  const r = c.leaderOf(0)!.replica(0);
  t.ok((await r.propose('alice', { type: 'topic.create', name: 'news', subscribe: 'anyone' })).ok);
  for (let i = 0; i < subscriptions; i++) {
    t.ok((await r.propose('alice', { type: 'subscription.create', topic: 'news', name: `s${i}`, visibilityTimeoutSeconds: 30, maxDeliveries: null, deadLetterQueue: null, filter: null })).ok);
  }
  return { c, r };
}

const fromSubscription = async (r: PartitionReplica, sub: string): Promise<string[]> => {
  const got = await r.propose('alice', { type: 'receive', channel: { topic: 'news', subscription: sub }, maxMessages: 100, visibilityTimeoutSeconds: 30 });
  if (!got.ok) throw new Error(got.detail);
  return (got.value as Received).messages.map((m) => bodyText(m.body));
};

t.test('publishes proposed in one turn share an entry; each is answered alone, and one past the fan-out limit fails alone', async (t) => {
  const { c, r } = await withTopic(t, 3);
  // 334 messages to 3 subscriptions are 1,002 copies: past MAX_FANOUT for one publish, and past what
  // an entry of publishes stores between them, so it goes in an entry of its own.
  const tooMany = Array.from({ length: Math.floor(MAX_FANOUT / 3) + 1 }, (_, i) => `big ${i}`);
  const before = r.log.lastIndex();
  const [a, b, big, bob] = await Promise.all([
    r.propose('alice', publish('news', ['a1', 'a2'])),
    r.propose('alice', publish('news', ['b1'])),
    r.propose('alice', publish('news', tooMany)),
    r.propose('bob', publish('news', ['bob'])),
  ]);
  const [ia, ib] = [items(a!), items(b!)];
  t.equal(ia.length, 2, 'the first publish got its two items');
  t.equal(ib.length, 1, 'the third its one');
  t.match(big, { ok: false, code: 'payload_too_large' }, 'the publish past the limit fails, alone');
  t.match(bob, { ok: false, code: 'forbidden' }, "bob has no right to publish: his publish fails, in an entry of his own");
  t.equal(entryOf(ia[0]!).index, entryOf(ib[0]!).index, "alice's publishes share an entry");
  t.same(
    [...ia, ...ib].map((m) => entryOf(m).place),
    [0, 1, 2],
    'each message keeps its place among all those the entry carries',
  );
  t.strictSame(
    appendedPublishes(r, before).map((p) => p.split ?? null),
    [[2, 1], null, null],
    "alice's two in one entry, the one past the limit in its own, bob's in his",
  );
  t.ok([...ia, ...ib].every((m) => (m as SentMessage & { subscriptions: number }).subscriptions === 3), 'each copied to the three subscriptions');
  for (const sub of ['s0', 's1', 's2']) t.same(await fromSubscription(r, sub), ['a1', 'a2', 'b1'], `${sub} holds the two publishes that passed, in order`);
  await c.quiet();
  t.equal(new Set([...c.hosts.values()].map((h) => stateHash(h.replica(0).state.sqlite))).size, 1, 'every replica holds the same state');
});

t.test('an entry of shared publishes stores no more copies between them than one publish may (MAX_FANOUT)', async (t) => {
  // Each publish is checked alone in the apply: a thousand of one message to a topic of a hundred
  // subscriptions shared one entry and stored 100,000 copies in one apply (review of 2026-12-07).
  const subscriptions = 100;
  const { r } = await withTopic(t, subscriptions);
  const before = r.log.lastIndex();
  const answers = await Promise.all(Array.from({ length: 35 }, (_, i) => r.propose('alice', publish('news', [`p${i}`]))));
  t.ok(answers.every((a) => a.ok), 'every publish stored');
  const entries = appendedPublishes(r, before);
  const perEntry = entries.map((p) => (p.split ?? [1]).reduce((n, k) => n + k, 0));
  t.equal(perEntry.reduce((n, k) => n + k, 0), 35, 'all 35 appended');
  t.ok(perEntry.every((n) => n * subscriptions <= MAX_FANOUT), `at most ${MAX_FANOUT / subscriptions} publishes an entry: ${JSON.stringify(perEntry)}`);
  t.ok(perEntry.some((n) => n > 1), 'and they still share');
});

/** The topic and split of each publish the leader appended after `after`, in log order. */
function appendedPublishes(r: PartitionReplica, after: number): { name: string; split?: number[] }[] {
  return r.log
    .entries(after + 1, r.log.lastIndex() + 1, Infinity)
    .map((e) => {
      try {
        return (decodeEnvelope(e.data, FORMAT) as { command: { type: string; name: string; split?: number[] } }).command;
      } catch {
        return null; // not an envelope (the leader's empty entry)
      }
    })
    .filter((c) => c?.type === 'topic.publish')
    .map((c) => (c!.split === undefined ? { name: c!.name } : { name: c!.name, split: c!.split }));
}

t.test('publishes to a missing topic that share an entry share its failure; a split that does not add up is refused whole', async (t) => {
  const { r } = await withTopic(t, 1);
  const before = r.log.lastIndex();
  const [m1, m2, ok1] = await Promise.all([r.propose('alice', publish('nope', ['1'])), r.propose('alice', publish('nope', ['2'])), r.propose('alice', publish('news', ['3']))]);
  t.strictSame(appendedPublishes(r, before), [{ name: 'nope', split: [1, 1] }, { name: 'news' }], 'the two to the missing topic in one entry');
  t.match(m1, { ok: false, code: 'not_found' });
  t.match(m2, { ok: false, code: 'not_found' });
  t.equal(items(ok1!).length, 1, 'the publish to news, proposed with them, is stored');
  t.ok(TOGETHER_MAX_ITEMS <= MAX_SPLIT, 'an entry never holds more publishes than the apply reads in a split');
  // A peer's command (the API never makes one): a split must count the messages exactly.
  for (const split of [[1], [2, 0], [1, 2], [0.5, 1.5], [2 ** 53, 1 - 2 ** 53], [-1, 3], 'two', null, {}, [], Array.from({ length: MAX_SPLIT + 1 }, () => 0)]) {
    const x = await r.propose('alice', { ...publish('news', ['x', 'y']), split } as unknown as Command);
    t.match(x, { ok: false, code: 'validation_failed' }, `split ${JSON.stringify(split).slice(0, 40)} refused`);
  }
  t.same(await fromSubscription(r, 's0'), ['3'], 'nothing of the refused ones stored');
});

t.test('before format 11 publishes do not share, and a split is ignored as older builds ignore it', async (t) => {
  const { c, r } = await withTopic(t, 1, SHARED_PUBLISHES - 1);
  const [a, b] = await Promise.all([r.propose('alice', publish('news', ['a'])), r.propose('alice', publish('news', ['b']))]);
  t.not(entryOf(items(a!)[0]!).index, entryOf(items(b!)[0]!).index, 'each publish in an entry of its own');
  const split = await r.propose('alice', { ...publish('news', ['x', 'y']), split: [5] } as unknown as Command);
  t.equal(items(split).length, 2, 'a split that does not add up is not even read: one publish of two');
  t.same(await fromSubscription(r, 's0'), ['a', 'b', 'x', 'y']);
  await c.quiet();
  t.equal(new Set([...c.hosts.values()].map((h) => stateHash(h.replica(0).state.sqlite))).size, 1, 'every replica holds the same state');
});
