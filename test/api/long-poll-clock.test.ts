// A long poll's wait is measured on the monotonic clock: the node's wall clock, which NTP or an
// operator may step, must not stretch a 1 s wait by the step. Before, a step back of an hour during
// the wait made the poll's next look ask the leader to park it for an hour and a second, which the
// apply refuses (a parked wait lasts 60 s at most): a valid receive answered 400.
import t from 'tap';
import { buildApp } from '../../src/api/index.js';
import type { Watch } from '../../src/cluster/router.js';
import type { Command, Result } from '../../src/store/broker/index.js';
import { appDeps } from './app-deps.js';

const HOUR = 3_600_000;

t.test('a wall clock stepped back an hour during a long poll does not stretch its wait', async (t) => {
  let wall = Date.now();
  const waits: number[] = [];
  // Each look finds nothing; the watch wakes the poll shortly (as the router's idle guard does).
  const watch = (): Watch => ({ woken: new Promise((resolve) => setTimeout(() => resolve(false), 50)), cancel: () => undefined, passOn: () => undefined });
  const app = await buildApp(
    appDeps(
      {
        propose: async (_p, _actor, command: Command): Promise<Result> => {
          const ms = command.type === 'receive' ? (command.wait?.ms ?? 0) : 0;
          waits.push(ms);
          // The step comes while the poll is parked.
          if (waits.length === 1) wall -= HOUR;
          // As the apply (messages.ts, receive): a parked wait lasts 0 to 60 s.
          if (ms > 60_000) return { ok: false, code: 'validation_failed', detail: 'a parked wait lasts 0 to 60000 ms' };
          return { ok: true, value: ms > 0 ? { messages: [], parked: 'parked' } : { messages: [] } } as Result;
        },
        query: async () => ({ ok: true, value: { createdAt: new Date(0).toISOString(), epoch: 0 } }) as never,
        format: () => Number.MAX_SAFE_INTEGER,
        watch,
        park: () => ({ tag: 'n1.x.1', delivered: new Promise(() => undefined), abandon: () => undefined, done: () => undefined }),
        afterAnswer: (work) => void work.catch(() => undefined),
      },
      { now: () => wall },
    ),
  );
  t.teardown(() => app.close());
  const token = app.jwt.sign({ sub: 'alice', ep: 0 });
  const started = performance.now();
  const res = await app.inject({
    method: 'POST',
    url: '/v1/queues/jobs/receive',
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    payload: '{"waitSeconds":1}',
  });
  t.equal(res.statusCode, 200, res.body);
  t.same(res.json(), { messages: [] });
  t.ok(waits.every((ms) => ms <= 1_000), `no look asks to wait past the second asked for (${Math.max(...waits)} ms)`);
  t.ok(performance.now() - started < 5_000, 'the poll ended about when its wait did');
});
