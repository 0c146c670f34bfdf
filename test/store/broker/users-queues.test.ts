// Users, queues and queue grants in the broker's state machine: each command's effect and each
// refusal, with the codes of docs/api.md (403 for a visible resource, 404 so names do not leak).
import t from 'tap';
import { USER_LIFECYCLE, stateHash, type Result } from '../../../src/store/broker/index.js';
import { TestStore, queue, send } from './helpers.js';
import { ack, code, grant, handles, lease, msg, nack, openStore, q, queueStats, recv, sendMsgs, seqs, seqsInLog, stats, subscription, take, topic } from './unit-kit.js';

const T0 = new Date(1_700_000_000_000).toISOString();

// ---- users ----

t.test('register stores the user and answers {username, createdAt} at the entry time', async (t) => {
  const s = await openStore(t);
  s.advance(5);
  const r = s.run(null, { type: 'user.register', username: 'alice', passwordHash: 'h1' });
  t.strictSame(r, { ok: true, value: { username: 'alice', createdAt: new Date(1_700_000_005_000).toISOString() } });
  t.strictSame(s.sm.getUser('alice'), { username: 'alice', passwordHash: 'h1', createdAt: new Date(1_700_000_005_000).toISOString(), epoch: 0 });
});

t.test('registering a taken username is a conflict and keeps the first password hash', async (t) => {
  const s = await openStore(t);
  s.must(null, { type: 'user.register', username: 'alice', passwordHash: 'h1' });
  s.advance(10);
  const r = s.run(null, { type: 'user.register', username: 'alice', passwordHash: 'h2' });
  t.equal(code(r), 'conflict');
  t.strictSame(s.sm.getUser('alice'), { username: 'alice', passwordHash: 'h1', createdAt: T0, epoch: 0 });
});

t.test('getUser of an unknown user is null', async (t) => {
  const s = await openStore(t, 'alice');
  t.equal(s.sm.getUser('bob'), null);
  t.equal(s.sm.getUser('Alice'), null, 'usernames are case-sensitive');
});

// ---- a user's tokens, password and deletion (format 9, USER_LIFECYCLE) ----

async function lifecycleStore(t: { teardown(fn: () => unknown): void }, format = USER_LIFECYCLE): Promise<TestStore> {
  const s = await TestStore.open(0, undefined, format);
  t.teardown(() => s.close());
  for (const u of ['alice', 'bob']) s.must(null, { type: 'user.register', username: u, passwordHash: `hash-of-${u}` });
  return s;
}

t.test("user.logout raises the caller's epoch, once per logout, and no one else's", async (t) => {
  const s = await lifecycleStore(t);
  t.strictSame(s.run('alice', { type: 'user.logout', epoch: 0 }), { ok: true, value: { epoch: 1 } });
  t.strictSame(s.run('alice', { type: 'user.logout', epoch: 1 }), { ok: true, value: { epoch: 2 } });
  t.equal(s.sm.getUser('alice')?.epoch, 2);
  t.equal(s.sm.getUser('bob')?.epoch, 0, "bob's tokens stand");
  t.equal(s.sm.getUser('alice')?.passwordHash, 'hash-of-alice', 'the password stays');
});

t.test("user.password sets the caller's hash and raises its epoch", async (t) => {
  const s = await lifecycleStore(t);
  s.must('alice', { type: 'user.logout', epoch: 0 });
  t.strictSame(s.run('alice', { type: 'user.password', passwordHash: 'new-hash', epoch: 1 }), { ok: true, value: { epoch: 2 } });
  t.strictSame(s.sm.getUser('alice'), { username: 'alice', passwordHash: 'new-hash', createdAt: T0, epoch: 2 });
  t.equal(s.sm.getUser('bob')?.passwordHash, 'hash-of-bob');
});

t.test('user.delete removes the caller, whose name is never registered again', async (t) => {
  const s = await lifecycleStore(t);
  s.must('alice', { type: 'user.logout', epoch: 0 });
  s.advance(10);
  t.strictSame(s.run('alice', { type: 'user.delete', epoch: 1 }), { ok: true, value: null });
  t.equal(s.sm.getUser('alice'), null, 'its tokens name no user');
  const again = s.run(null, { type: 'user.register', username: 'alice', passwordHash: 'h2' });
  t.equal(code(again), 'conflict', 'the name is not given again: grants elsewhere may still name it');
  t.match(again, { detail: /was deleted/ });
  t.equal(s.sm.getUser('alice'), null);
  t.equal(code(s.run('alice', { type: 'user.logout', epoch: 2 })), 'not_found', 'a deleted user changes nothing more');
  t.equal(code(s.run('alice', { type: 'user.delete', epoch: 2 })), 'not_found');
  t.ok(s.sm.getUser('bob') !== null);
});

t.test('the lifecycle commands act on the calling user only: none from the system or for a user not in the partition', async (t) => {
  const s = await lifecycleStore(t);
  for (const c of [{ type: 'user.logout', epoch: 0 }, { type: 'user.password', passwordHash: 'x', epoch: 0 }, { type: 'user.delete', epoch: 0 }] as const) {
    t.equal(code(s.run(null, c)), 'forbidden', `${c.type} needs a user`);
    t.equal(code(s.run('carol', c)), 'not_found', `${c.type} of a user this partition does not hold`);
  }
  t.strictSame(s.sm.getUser('alice'), { username: 'alice', passwordHash: 'hash-of-alice', createdAt: T0, epoch: 0 });
});

t.test('a token revoked meanwhile (its epoch is past) logs out, changes and deletes nothing', async (t) => {
  const s = await lifecycleStore(t);
  s.must('alice', { type: 'user.password', passwordHash: 'victim-new-hash', epoch: 0 });
  for (const c of [{ type: 'user.logout', epoch: 0 }, { type: 'user.password', passwordHash: 'thief-hash', epoch: 0 }, { type: 'user.delete', epoch: 0 }] as const) {
    t.match(s.run('alice', c), { ok: false, code: 'unauthorized', detail: /revoked/ }, `${c.type} with the old token`);
  }
  t.strictSame(s.sm.getUser('alice'), { username: 'alice', passwordHash: 'victim-new-hash', createdAt: T0, epoch: 1 }, "the victim's change stands, and its new tokens");
});

t.test('before format 9 the lifecycle commands are unknown, as to an older build, and change nothing', async (t) => {
  const s = await lifecycleStore(t, USER_LIFECYCLE - 1);
  for (const c of [{ type: 'user.logout', epoch: 0 }, { type: 'user.password', passwordHash: 'x', epoch: 0 }, { type: 'user.delete', epoch: 0 }] as const) {
    t.strictSame(s.run('alice', c), { ok: false, code: 'validation_failed', detail: `unknown command ${c.type}` });
  }
  // The entries moved the applied index only.
  s.sm.sqlite.prepare(`update meta set value = 0 where key in ('applied_index', 'applied_term')`).run();
  const after = stateHash(s.sm.sqlite);
  const pristine = await lifecycleStore(t, USER_LIFECYCLE - 1);
  pristine.sm.sqlite.prepare(`update meta set value = 0 where key in ('applied_index', 'applied_term')`).run();
  t.equal(after, stateHash(pristine.sm.sqlite), 'the state of a store that applied none of them');
});

t.test('the queues and topics a user owns in a partition, counted for its deletion', async (t) => {
  const s = await lifecycleStore(t);
  t.strictSame(s.sm.owned('alice'), { queues: 0, topics: 0 });
  s.must('alice', queue('a1'));
  s.must('alice', queue('a2'));
  s.must('alice', topic('news'));
  s.must('bob', queue('b1'));
  s.must('bob', subscription('news', 'bobs'));
  t.strictSame(s.sm.owned('alice'), { queues: 2, topics: 1 }, "subscriptions are not counted: not even another user's of its topic");
  t.strictSame(s.sm.owned('bob'), { queues: 1, topics: 0 });
});

// ---- queue create ----

t.test('queue.create echoes the defaults, the owner and empty stats', async (t) => {
  const s = await openStore(t, 'alice');
  const v = s.must('alice', queue('orders'));
  const expected = {
    name: 'orders',
    owner: 'alice',
    visibilityTimeoutSeconds: 30,
    maxDeliveries: null,
    deadLetterQueue: null,
    delaySeconds: 0,
    retentionSeconds: 345600,
    createdAt: T0,
    stats: stats(0, 0, 0, 0, 0),
  };
  t.strictSame(v, expected);
  t.strictSame(s.sm.getQueue('orders', 'alice', s.time), { ok: true, value: expected });
});

t.test('queue.create echoes explicit settings', async (t) => {
  const s = await openStore(t, 'alice');
  const v = s.must('alice', queue('orders', { visibilityTimeoutSeconds: 5, maxDeliveries: 3, deadLetterQueue: 'orders-dlq', delaySeconds: 7, retentionSeconds: 600 }));
  t.match(v, { name: 'orders', owner: 'alice', visibilityTimeoutSeconds: 5, maxDeliveries: 3, deadLetterQueue: 'orders-dlq', delaySeconds: 7, retentionSeconds: 600 });
});

t.test('queue.create of an existing name is a conflict, for anyone, and changes nothing', async (t) => {
  const s = await openStore(t, 'alice', 'bob');
  s.must('alice', queue('orders'));
  s.must('alice', send('orders', 'a'));
  const again = s.run('alice', queue('orders', { visibilityTimeoutSeconds: 99 }));
  t.equal(code(again), 'conflict');
  t.equal(code(s.run('bob', queue('orders'))), 'conflict');
  const v = s.sm.getQueue('orders', 'alice', s.time);
  t.match(v, { ok: true, value: { owner: 'alice', visibilityTimeoutSeconds: 30, stats: { visible: 1 } } });
});

t.test('a queue as its own dead-letter queue is validation_failed and is not created', async (t) => {
  const s = await openStore(t, 'alice');
  t.equal(code(s.run('alice', queue('orders', { deadLetterQueue: 'orders', maxDeliveries: 3 }))), 'validation_failed');
  t.equal(code(s.sm.getQueue('orders', 'alice', s.time)), 'not_found');
  t.strictSame(s.sm.listQueues('alice', '', 10), []);
});

t.test('commands on queues need a user: the system actor is forbidden', async (t) => {
  const s = await openStore(t, 'alice');
  t.equal(code(s.run(null, queue('orders'))), 'forbidden');
  s.must('alice', queue('orders'));
  for (const c of [send('orders', 'a'), recv(q('orders')), { type: 'queue.purge', name: 'orders' } as const, { type: 'queue.delete', name: 'orders' } as const]) {
    t.equal(code(s.run(null, c)), 'forbidden', c.type);
  }
  t.match(s.sm.getQueue('orders', 'alice', s.time), { ok: true, value: { stats: { visible: 0 } } });
});

// ---- queue delete ----

t.test('queue.delete by the owner removes the queue and its messages', async (t) => {
  const s = await openStore(t, 'alice');
  s.must('alice', queue('orders'));
  s.must('alice', send('orders', 'a', 'b'));
  t.strictSame(s.run('alice', { type: 'queue.delete', name: 'orders' }), { ok: true, value: null });
  t.equal(code(s.sm.getQueue('orders', 'alice', s.time)), 'not_found');
  t.strictSame(s.sm.listQueues('alice', '', 10), []);
  const left = s.sm.sqlite.prepare('select count(*) as n from messages').get() as { n: number };
  t.equal(left.n, 0, 'no message rows outlive the queue');
  t.equal(code(s.run('alice', send('orders', 'c'))), 'not_found');
  t.equal(code(s.run('alice', { type: 'queue.delete', name: 'orders' })), 'not_found', 'a second delete finds nothing');
});

t.test('a queue recreated under a deleted name starts empty, its sequences anew (from 1 in format 3)', async (t) => {
  const s = await openStore(t, 'alice');
  s.must('alice', queue('orders'));
  s.must('alice', send('orders', 'a', 'b', 'c'));
  take(s, 'alice', q('orders'), 1);
  s.must('alice', { type: 'queue.delete', name: 'orders' });
  s.must('alice', queue('orders'));
  t.strictSame(queueStats(s, 'orders'), stats(0, 0, 0, 0, 0));
  t.strictSame(take(s, 'alice', q('orders')), []);
  const sent = s.must('alice', send('orders', 'new'));
  const [sequence] = seqs(s, s.index, 1, 1);
  t.equal(sent.items[0].sequence, sequence);
  t.match(take(s, 'alice', q('orders')), [{ body: 'new', sequence, deliveryCount: 1 }]);
});

t.test('receipt handles of a deleted queue do not act on a queue recreated under its name', async (t) => {
  const s = await openStore(t, 'alice');
  s.must('alice', queue('orders'));
  s.must('alice', send('orders', 'a'));
  const [old] = take(s, 'alice', q('orders'));
  s.must('alice', { type: 'queue.delete', name: 'orders' });
  s.must('alice', queue('orders'));
  s.must('alice', send('orders', 'b'));
  const [fresh] = take(s, 'alice', q('orders'));
  // In format 3 the new message even has the old one's sequence; in format 4 sequences are places in
  // the log and never repeat, and the handles must fail all the same.
  if (!seqsInLog(s)) t.equal(fresh!.sequence, old!.sequence, 'same sequence number in the new queue');
  for (const c of [ack(q('orders'), old!.receiptHandle), nack(q('orders'), 0, old!.receiptHandle), lease(q('orders'), 60, old!.receiptHandle)]) {
    const out = handles(s, 'alice', c);
    t.strictSame(out.acked, [], c.type);
    t.equal(out.failed.length, 1, c.type);
    t.match(out.failed[0]!.code, /^receipt_(invalid|stale)$/, c.type);
  }
  t.strictSame(queueStats(s, 'orders'), stats(0, 1, 0, 0, 0), 'the new message is still leased');
  t.strictSame(handles(s, 'alice', ack(q('orders'), fresh!.receiptHandle)), { acked: [fresh!.receiptHandle], failed: [] });
});

t.test('deduplication ids of a deleted queue do not suppress sends to its successor', async (t) => {
  const s = await openStore(t, 'alice');
  s.must('alice', queue('orders'));
  const first = s.must('alice', sendMsgs('orders', msg('a', { deduplicationId: 'd1' })));
  s.must('alice', { type: 'queue.delete', name: 'orders' });
  s.must('alice', queue('orders'));
  const second = s.must('alice', sendMsgs('orders', msg('b', { deduplicationId: 'd1' })));
  t.not(second.items[0].messageId, first.items[0].messageId);
  t.equal(second.items[0].sequence, seqs(s, s.index, 1, 1)[0]);
  t.match(take(s, 'alice', q('orders')), [{ body: 'b' }]);
});

t.test('deleting a queue removes its grants: a recreated queue is not shared', async (t) => {
  const s = await openStore(t, 'alice', 'bob');
  s.must('alice', queue('orders'));
  s.must('alice', grant('queue', 'orders', 'bob', 'send', 'receive'));
  s.must('alice', { type: 'queue.delete', name: 'orders' });
  s.must('alice', queue('orders'));
  t.equal(code(s.sm.getQueue('orders', 'bob', s.time)), 'not_found');
  t.equal(code(s.run('bob', send('orders', 'x'))), 'not_found');
  t.strictSame(s.sm.listGrants('queue', 'orders', 'alice'), { ok: true, value: [] });
});

// ---- owner-only commands: grantee 403, stranger 404 ----

const ownerOnly = [
  { what: 'delete', cmd: { type: 'queue.delete', name: 'orders' } as const },
  { what: 'purge', cmd: { type: 'queue.purge', name: 'orders' } as const },
  { what: 'grant.put', cmd: grant('queue', 'orders', 'carol', 'send') },
  { what: 'grant.delete', cmd: { type: 'grant.delete', kind: 'queue', name: 'orders', username: 'bob' } as const },
];

t.test('owner-only queue commands by a grantee are forbidden and change nothing', async (t) => {
  const s = await openStore(t, 'alice', 'bob', 'carol');
  s.must('alice', queue('orders'));
  s.must('alice', grant('queue', 'orders', 'bob', 'send', 'receive'));
  s.must('alice', send('orders', 'a'));
  for (const { what, cmd } of ownerOnly) t.equal(code(s.run('bob', cmd)), 'forbidden', what);
  t.equal(code(s.sm.listGrants('queue', 'orders', 'bob')), 'forbidden', 'listGrants');
  t.strictSame(queueStats(s, 'orders'), stats(1, 0, 0, 0, 0));
  t.strictSame(s.sm.listGrants('queue', 'orders', 'alice'), { ok: true, value: [{ username: 'bob', actions: ['receive', 'send'] }] });
});

t.test('owner-only queue commands by a stranger are not_found, worded as for a missing queue', async (t) => {
  const s = await openStore(t, 'alice', 'bob', 'carol');
  s.must('alice', queue('orders'));
  s.must('alice', grant('queue', 'orders', 'bob', 'send'));
  s.must('alice', send('orders', 'a'));
  const missing = s.run('alice', { type: 'queue.purge', name: 'nope' }) as Extract<Result, { ok: false }>;
  for (const { what, cmd } of ownerOnly) {
    const r = s.run('carol', cmd);
    t.equal(code(r), 'not_found', what);
    if (!r.ok) t.equal(r.detail, missing.detail.replace('nope', 'orders'), `${what}: same detail as a missing queue`);
  }
  t.equal(code(s.sm.listGrants('queue', 'orders', 'carol')), 'not_found', 'listGrants');
  t.equal(code(s.sm.getQueue('orders', 'carol', s.time)), 'not_found', 'getQueue');
  t.strictSame(queueStats(s, 'orders'), stats(1, 0, 0, 0, 0));
});

// ---- purge ----

t.test('queue.purge returns how many messages it removed (ready, leased and delayed) and empties the queue', async (t) => {
  const s = await openStore(t, 'alice');
  s.must('alice', queue('orders'));
  s.must('alice', send('orders', 'a', 'b', 'c'));
  s.must('alice', sendMsgs('orders', msg('later', { delaySeconds: 60 })));
  const [leased] = take(s, 'alice', q('orders'), 1);
  t.strictSame(queueStats(s, 'orders'), stats(2, 1, 1, 0, 0));
  t.strictSame(s.run('alice', { type: 'queue.purge', name: 'orders' }), { ok: true, value: { purged: 4 } });
  t.strictSame(queueStats(s, 'orders'), stats(0, 0, 0, 0, 0));
  t.strictSame(take(s, 'alice', q('orders')), []);
  s.advance(120);
  t.strictSame(take(s, 'alice', q('orders')), [], 'the delayed message is gone too');
  t.strictSame(handles(s, 'alice', ack(q('orders'), leased!.receiptHandle)).failed, [{ receiptHandle: leased!.receiptHandle, code: 'receipt_stale' }]);
});

t.test('sequences keep growing after a purge (the queue is the same queue)', async (t) => {
  const s = await openStore(t, 'alice');
  s.must('alice', queue('orders'));
  const [b] = s.must('alice', send('orders', 'a', 'b')).items.slice(1);
  s.must('alice', { type: 'queue.purge', name: 'orders' });
  const c = s.must('alice', send('orders', 'c')).items[0].sequence;
  t.equal(c, seqs(s, s.index, 1, 3)[0]);
  t.ok(c > b.sequence, 'past every sequence before the purge');
});

t.test('purging an empty queue purges 0', async (t) => {
  const s = await openStore(t, 'alice');
  s.must('alice', queue('orders'));
  t.strictSame(s.run('alice', { type: 'queue.purge', name: 'orders' }), { ok: true, value: { purged: 0 } });
});

t.test('purge counts only messages still in the queue, not ones past their retention', async (t) => {
  const s = await openStore(t, 'alice');
  s.must('alice', queue('orders', { retentionSeconds: 60 }));
  s.must('alice', send('orders', 'old'));
  s.advance(61);
  s.must('alice', send('orders', 'new'));
  t.strictSame(queueStats(s, 'orders'), stats(1, 0, 0, 0, 0), 'stats see one message');
  t.strictSame(s.run('alice', { type: 'queue.purge', name: 'orders' }), { ok: true, value: { purged: 1 } });
});

// ---- listQueues ----

t.test('listQueues lists owned and granted queues only, in name order, with after and limit', async (t) => {
  const s = await openStore(t, 'alice', 'bob', 'carol');
  for (const n of ['c', 'a']) s.must('alice', queue(n));
  for (const n of ['d', 'b', 'e']) s.must('bob', queue(n));
  s.must('bob', grant('queue', 'd', 'alice', 'receive'));
  t.strictSame(s.sm.listQueues('alice', '', 100), ['a', 'c', 'd']);
  t.strictSame(s.sm.listQueues('bob', '', 100), ['b', 'd', 'e']);
  t.strictSame(s.sm.listQueues('carol', '', 100), []);
  t.strictSame(s.sm.listQueues('alice', '', 2), ['a', 'c'], 'first page');
  t.strictSame(s.sm.listQueues('alice', 'c', 2), ['d'], 'next page after the cursor');
  t.strictSame(s.sm.listQueues('alice', 'b', 1), ['c'], 'a cursor that is not a queue name');
  t.strictSame(s.sm.listQueues('alice', 'd', 2), [], 'past the end');
});

// ---- grants ----

t.test('grant.put sorts and deduplicates the actions, and listGrants shows them', async (t) => {
  const s = await openStore(t, 'alice', 'bob', 'carol');
  s.must('alice', queue('orders'));
  t.strictSame(s.run('alice', grant('queue', 'orders', 'bob', 'send', 'receive', 'send')), { ok: true, value: { username: 'bob', actions: ['receive', 'send'] } });
  s.must('alice', grant('queue', 'orders', 'carol', 'send'));
  t.strictSame(s.sm.listGrants('queue', 'orders', 'alice'), {
    ok: true,
    value: [
      { username: 'bob', actions: ['receive', 'send'] },
      { username: 'carol', actions: ['send'] },
    ],
  });
});

t.test('grant.put replaces the earlier actions of that user', async (t) => {
  const s = await openStore(t, 'alice', 'bob');
  s.must('alice', queue('orders'));
  s.must('alice', grant('queue', 'orders', 'bob', 'send', 'receive'));
  s.must('alice', grant('queue', 'orders', 'bob', 'send'));
  t.strictSame(s.sm.listGrants('queue', 'orders', 'alice'), { ok: true, value: [{ username: 'bob', actions: ['send'] }] });
  s.must('alice', send('orders', 'a'));
  t.equal(code(s.run('bob', recv(q('orders')))), 'forbidden');
});

t.test('grant.put with unknown or no actions is validation_failed and stores nothing', async (t) => {
  const s = await openStore(t, 'alice', 'bob');
  s.must('alice', queue('orders'));
  for (const actions of [[], ['publish'], ['send', 'delete'], ['Send']]) {
    t.equal(code(s.run('alice', grant('queue', 'orders', 'bob', ...actions))), 'validation_failed', JSON.stringify(actions));
  }
  t.strictSame(s.sm.listGrants('queue', 'orders', 'alice'), { ok: true, value: [] });
  t.equal(code(s.sm.getQueue('orders', 'bob', s.time)), 'not_found');
});

t.test('granting the owner is validation_failed', async (t) => {
  const s = await openStore(t, 'alice');
  s.must('alice', queue('orders'));
  t.equal(code(s.run('alice', grant('queue', 'orders', 'alice', 'send'))), 'validation_failed');
  t.strictSame(s.sm.listGrants('queue', 'orders', 'alice'), { ok: true, value: [] });
});

t.test('grant.delete revokes the grant: the former grantee no longer sees the queue', async (t) => {
  const s = await openStore(t, 'alice', 'bob');
  s.must('alice', queue('orders'));
  s.must('alice', grant('queue', 'orders', 'bob', 'send'));
  s.must('bob', send('orders', 'a'));
  t.strictSame(s.run('alice', { type: 'grant.delete', kind: 'queue', name: 'orders', username: 'bob' }), { ok: true, value: null });
  t.strictSame(s.sm.listGrants('queue', 'orders', 'alice'), { ok: true, value: [] });
  t.equal(code(s.run('bob', send('orders', 'b'))), 'not_found');
  t.strictSame(s.sm.listQueues('bob', '', 10), []);
  t.strictSame(queueStats(s, 'orders'), stats(1, 0, 0, 0, 0));
});

t.test('grant.delete of a grant that does not exist is not_found', async (t) => {
  const s = await openStore(t, 'alice', 'bob');
  s.must('alice', queue('orders'));
  t.equal(code(s.run('alice', { type: 'grant.delete', kind: 'queue', name: 'orders', username: 'bob' })), 'not_found');
  t.equal(code(s.run('alice', { type: 'grant.delete', kind: 'queue', name: 'missing', username: 'bob' })), 'not_found');
});

t.test('listGrants is for the owner only: a grantee is forbidden, a stranger gets not_found', async (t) => {
  const s = await openStore(t, 'alice', 'bob', 'carol');
  s.must('alice', queue('orders'));
  s.must('alice', grant('queue', 'orders', 'bob', 'receive'));
  t.strictSame(s.sm.listGrants('queue', 'orders', 'alice'), { ok: true, value: [{ username: 'bob', actions: ['receive'] }] });
  t.equal(code(s.sm.listGrants('queue', 'orders', 'bob')), 'forbidden');
  t.equal(code(s.sm.listGrants('queue', 'orders', 'carol')), 'not_found');
  t.equal(code(s.sm.listGrants('queue', 'missing', 'alice')), 'not_found');
});

t.test("a 'send' grantee sees the queue and may send, but not receive, ack, nack or lease", async (t) => {
  const s = await openStore(t, 'alice', 'bob');
  s.must('alice', queue('orders'));
  s.must('alice', grant('queue', 'orders', 'bob', 'send'));
  t.match(s.sm.getQueue('orders', 'bob', s.time), { ok: true, value: { name: 'orders', owner: 'alice' } });
  t.strictSame(s.sm.listQueues('bob', '', 10), ['orders']);
  t.match(s.must('bob', send('orders', 'from bob')), { items: [{ sequence: seqs(s, s.index, 1, 1)[0] }] });
  t.equal(code(s.run('bob', recv(q('orders')))), 'forbidden');
  const [m] = take(s, 'alice', q('orders'));
  t.equal(m!.body, 'from bob');
  for (const c of [ack(q('orders'), m!.receiptHandle), nack(q('orders'), 0, m!.receiptHandle), lease(q('orders'), 60, m!.receiptHandle)]) {
    t.equal(code(s.run('bob', c)), 'forbidden', c.type);
  }
  t.strictSame(queueStats(s, 'orders'), stats(0, 1, 0, 0, 0), 'the lease is untouched');
});

t.test("a 'receive' grantee may receive, ack, nack and lease, but not send", async (t) => {
  const s = await openStore(t, 'alice', 'bob');
  s.must('alice', queue('orders'));
  s.must('alice', grant('queue', 'orders', 'bob', 'receive'));
  t.equal(code(s.run('bob', send('orders', 'x'))), 'forbidden');
  t.strictSame(queueStats(s, 'orders'), stats(0, 0, 0, 0, 0), 'the refused send stored nothing');
  s.must('alice', send('orders', 'a', 'b', 'c'));
  const [a, b, c] = take(s, 'bob', q('orders'), 3);
  t.strictSame([a!.body, b!.body, c!.body], ['a', 'b', 'c']);
  t.strictSame(handles(s, 'bob', ack(q('orders'), a!.receiptHandle)), { acked: [a!.receiptHandle], failed: [] });
  t.strictSame(handles(s, 'bob', nack(q('orders'), 0, b!.receiptHandle)), { acked: [b!.receiptHandle], failed: [] });
  t.strictSame(handles(s, 'bob', lease(q('orders'), 300, c!.receiptHandle)), { acked: [c!.receiptHandle], failed: [] });
  t.strictSame(queueStats(s, 'orders'), stats(1, 1, 0, 0, 0));
});

t.test('a stranger sending to or receiving from a queue gets not_found', async (t) => {
  const s = await openStore(t, 'alice', 'carol');
  s.must('alice', queue('orders'));
  s.must('alice', send('orders', 'a'));
  t.equal(code(s.run('carol', send('orders', 'x'))), 'not_found');
  t.equal(code(s.run('carol', recv(q('orders')))), 'not_found');
  t.equal(code(s.run('carol', ack(q('orders'), 'MS4xLjQ'))), 'not_found');
  t.strictSame(queueStats(s, 'orders'), stats(1, 0, 0, 0, 0));
});
