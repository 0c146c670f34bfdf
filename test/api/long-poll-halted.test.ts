// A long poll through a node whose replica of the partition is halted (a build older than the
// partition's format: docs/operations.md). Its peers serve the receives (Router.route), but the poll
// must not park in the state: a parked poll gets its messages from this node's apply of their lease,
// which a halted replica never makes, so they would stay leased, undelivered, until their lease ends.
import t from 'tap';
import { buildApp } from '../../src/api/index.js';
import type { Watch } from '../../src/cluster/router.js';
import type { Command } from '../../src/store/broker/index.js';
import { appDeps } from './app-deps.js';

const message = { messageId: 'm-1', sequence: 1, body: 'late', attributes: {}, receiptHandle: 'h.1', deliveryCount: 1, sentAt: '2026-12-05T06:00:00.000Z' };

/** Alice's receive with a wait of 20 s on queue jobs. */
async function receiveWithWait(app: Awaited<ReturnType<typeof buildApp>>) {
  const token = app.jwt.sign({ sub: 'alice', ep: 0 });
  return app.inject({
    method: 'POST',
    url: '/v1/queues/jobs/receive',
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    payload: '{"waitSeconds":20}',
  });
}

/** A receive with a wait through an app whose broker says whether it applies the partition here. */
async function longPoll(appliesHere: boolean): Promise<{ status: number; body: unknown; commands: Command[]; parked: number }> {
  const commands: Command[] = [];
  let parked = 0;
  // The first receive finds nothing; the watch wakes the poll at once, and the next finds a message.
  const watch = (): Watch => ({ woken: Promise.resolve(false), cancel: () => undefined, passOn: () => undefined });
  const app = await buildApp(
    appDeps({
      propose: async (_p, _actor, command) => {
        commands.push(command);
        return { ok: true, value: { messages: commands.length === 1 ? [] : [{ ...message }] } } as never;
      },
      // The token's user, as the token checks read it.
      query: async () => ({ ok: true, value: { createdAt: new Date(0).toISOString(), epoch: 0 } }) as never,
      format: () => Number.MAX_SAFE_INTEGER,
      appliesHere: () => appliesHere,
      watch,
      park: () => {
        parked++;
        // Delivers nothing: the poll finds its message by receiving again.
        return { tag: 'n1.x.1', delivered: new Promise(() => undefined), abandon: () => undefined, done: () => undefined };
      },
    }),
  );
  try {
    const res = await receiveWithWait(app);
    return { status: res.statusCode, body: res.json(), commands, parked };
  } finally {
    await app.close();
  }
}

t.test('a long poll through a halted replica receives again without parking', async (t) => {
  const got = await longPoll(false);
  t.equal(got.status, 200);
  t.match(got.body, { messages: [{ messageId: 'm-1', body: 'late' }] });
  t.equal(got.parked, 0, 'no parking tag taken');
  t.equal(got.commands.length, 2, 'received twice');
  t.ok(
    got.commands.every((c) => c.type === 'receive' && !('wait' in c)),
    'neither receive asks the leader to park it',
  );
});

t.test('where the node applies the partition, the same poll parks (format 3 and later)', async (t) => {
  const got = await longPoll(true);
  t.equal(got.status, 200);
  t.equal(got.parked, 1);
  t.ok(got.commands.every((c) => c.type === 'receive' && 'wait' in c), 'each receive carries its wait');
});

/**
 * A poll that parked while the node applied the partition, whose replica then halts: right after it
 * parked (`'parked'`), or while its next look was on its way to the leader, which had served it
 * meanwhile (`'served'`: its delivery is leased, but this replica will never apply it).
 */
async function haltedWhileParked(when: 'parked' | 'served'): Promise<{ body: unknown; commands: Command[]; abandoned: number; done: number }> {
  const commands: Command[] = [];
  let applies = true;
  let abandoned = 0;
  let done = 0;
  const behind: Promise<unknown>[] = [];
  const watch = (): Watch => ({ woken: Promise.resolve(false), cancel: () => undefined, passOn: () => undefined });
  const app = await buildApp(
    appDeps({
      propose: async (_p, _actor, command) => {
        commands.push(command);
        const wait = (command as { wait?: { again?: boolean } }).wait;
        if (commands.length === 1) {
          if (when === 'parked') applies = false;
          return { ok: true, value: { messages: [], parked: 'parked' } } as never;
        }
        if (wait?.again === true && when === 'served') {
          applies = false;
          return { ok: true, value: { messages: [], parked: 'gone' } } as never;
        }
        // Out of the state (ms 0) or a plain receive: the leader leases what is ready.
        return { ok: true, value: { messages: [{ ...message }] } } as never;
      },
      query: async () => ({ ok: true, value: { createdAt: new Date(0).toISOString(), epoch: 0 } }) as never,
      format: () => Number.MAX_SAFE_INTEGER,
      appliesHere: () => applies,
      watch,
      park: () => ({
        tag: 'n1.x.1',
        // A halted replica applies no delivery.
        delivered: new Promise(() => undefined),
        abandon: () => void abandoned++,
        done: () => void done++,
      }),
      afterAnswer: (work) => void behind.push(work),
    }),
  );
  try {
    const res = await receiveWithWait(app);
    await Promise.all(behind);
    return { body: res.json(), commands, abandoned, done };
  } finally {
    await app.close();
  }
}

const waitOf = (c: Command): { ms?: number; again?: boolean; leave?: boolean } | undefined => (c as { wait?: { ms?: number; again?: boolean; leave?: boolean } }).wait;

t.test('a poll parked before its replica halts leaves the state and takes what is ready in one receive', async (t) => {
  const got = await haltedWhileParked('parked');
  t.match(got.body, { messages: [{ messageId: 'm-1', body: 'late' }] });
  t.equal(got.commands.length, 2, 'it parked, then received once more');
  t.match(waitOf(got.commands[1]!), { ms: 0, again: true }, 'that receive takes it out of the state (ms 0) and leases what is ready');
  t.notOk(got.commands.some((c) => waitOf(c)?.leave === true), 'no separate look to leave, which could race with it');
  t.equal(got.done, 1, 'its parking ended, nothing left to catch');
});

t.test('a parked poll served just as its replica halted does not wait here for a delivery that never comes', async (t) => {
  const got = await haltedWhileParked('served');
  t.match(got.body, { messages: [{ messageId: 'm-1' }] }, 'it goes on receiving through the leader');
  t.equal(got.commands.length, 3);
  t.equal(waitOf(got.commands[2]!), undefined, 'the next receive does not park');
  t.equal(got.abandoned, 1, 'the delivery this replica will not apply is left to its lease');
});
