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
 * A poll that parked while the node applied the partition, whose replica then halts: `served` says
 * whether the leader had already leased it messages when it looked again.
 */
async function haltedWhileParked(served: boolean): Promise<{ body: unknown; commands: Command[]; abandoned: number; done: number }> {
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
        const wait = (command as { wait?: { again?: boolean; leave?: boolean } }).wait;
        // The first receive parks; the replica here halts right after.
        if (commands.length === 1) {
          applies = false;
          return { ok: true, value: { messages: [], parked: 'parked' } } as never;
        }
        if (wait?.leave === true) return { ok: true, value: { messages: [], parked: served ? 'gone' : undefined } } as never;
        if (wait?.again === true) return { ok: true, value: { messages: [], parked: served ? 'gone' : 'parked' } } as never;
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
    // The look that takes the poll out of the state runs behind the answer.
    await Promise.all(behind);
    return { body: res.json(), commands, abandoned, done };
  } finally {
    await app.close();
  }
}

t.test('a poll parked before its replica halts leaves the state and receives through the leader', async (t) => {
  const got = await haltedWhileParked(false);
  t.match(got.body, { messages: [{ messageId: 'm-1', body: 'late' }] }, 'it gets the message a plain receive finds, well within its wait');
  const waits = got.commands.map((c) => (c as { wait?: { leave?: boolean } }).wait);
  t.ok(waits[0] !== undefined && waits[0].leave !== true, 'it parked first');
  t.ok(
    waits.some((w) => w?.leave === true),
    'then took itself out of the state',
  );
  t.equal(waits.filter((w) => w === undefined).length, 1, 'and received once more without parking');
  t.equal(got.done, 1, 'its parking ended (nothing was leased to it)');
});

t.test('a parked poll served just as its replica halted does not wait here for a delivery that never comes', async (t) => {
  const got = await haltedWhileParked(true);
  t.match(got.body, { messages: [{ messageId: 'm-1' }] }, 'it goes on receiving through the leader');
  t.equal(got.abandoned, 1, 'the delivery this replica will not apply is left to its lease');
});
