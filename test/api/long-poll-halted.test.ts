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
    const token = app.jwt.sign({ sub: 'alice', ep: 0 });
    const res = await app.inject({
      method: 'POST',
      url: '/v1/queues/jobs/receive',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      payload: '{"waitSeconds":20}',
    });
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
