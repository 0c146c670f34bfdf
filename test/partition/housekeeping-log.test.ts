// Housekeeping's proposals (sweeps, clock-keeping, dead letters, format raises) are retried on the
// next pass when they fail. While a cluster's first elections settle they fail only because
// leadership moved: that is logged at debug, so a newcomer's `npm start` shows no warnings; any
// other failure (a wait that ran out, a refusal) stays a warning.
import t from 'tap';
import { NotCommittedError, NotLeaderError, OutcomeUnknownError } from '../../src/partition/errors.js';
import type { NodeHost } from '../../src/partition/host.js';
import { Housekeeping } from '../../src/partition/housekeeping.js';
import { FORMAT } from '../../src/store/broker/index.js';

/** One pass over a host whose one replica leads and proposes a format raise, which fails with `err`: what was logged, by level. */
async function logsOf(err: Error): Promise<Record<'debug' | 'warn', string[]>> {
  const logged: Record<'debug' | 'warn', string[]> = { debug: [], warn: [] };
  const now = 1_700_000_000_000;
  let pass: () => void = () => {};
  const replica = {
    partition: 0,
    isLeader: () => true,
    propose: () => Promise.reject(err),
    state: { needsSweep: () => false, format: () => FORMAT - 1, clock: () => now, outboxHeads: () => [], outboxLetter: () => null },
  };
  const host = {
    onPass: (fn: () => void) => (pass = fn),
    onTick: () => {},
    opts: {
      now: () => now,
      self: 'n1',
      voters: ['n1', 'n2'],
      partitions: 1,
      logger: { debug: (o: object, msg: string) => logged.debug.push(msg), warn: (o: object, msg: string) => logged.warn.push(msg), error: () => {} },
    },
    replicas: [replica],
    clock: { now: () => now },
    readable: FORMAT,
    peerFormat: () => FORMAT,
  } as unknown as NodeHost;
  new Housekeeping(host);
  pass();
  await new Promise((resolve) => setImmediate(resolve));
  return logged;
}

t.test('a format raise refused because leadership moved is logged at debug; any other failure warns', async (t) => {
  for (const err of [new NotLeaderError(0, null), new NotCommittedError('overwritten by the next leader'), new OutcomeUnknownError('the leader changed')]) {
    t.strictSame(await logsOf(err), { debug: ['log format not raised yet; will retry'], warn: [] }, err.name);
  }
  for (const err of [new OutcomeUnknownError('no apply within the proposal timeout', true), new Error('disk full')]) {
    t.strictSame(await logsOf(err), { debug: [], warn: ['log format not raised yet; will retry'] }, `${err.name}: ${err.message}`);
  }
});

t.test("dead letters refused by their queue's partition stay in the outbox for the next pass, with a warning", async (t) => {
  // They were cleared whatever the delivery answered: a refusal (a command that partition could not
  // apply) lost them unseen (review of 2026-12-07).
  const now = 1_700_000_000_000;
  const warned: string[] = [];
  const proposed: string[] = [];
  let pass: () => void = () => {};
  let answer: unknown = { ok: false, code: 'validation_failed', detail: 'malformed command' };
  const row = { id: 7, targetQueue: 'dlq', expectedOwner: 'alice', messageId: '0-1-0', body: 'x', attributes: {} };
  const replica = {
    partition: 0,
    isLeader: () => true,
    propose: (_actor: string | null, c: { type: string }) => {
      proposed.push(c.type);
      return Promise.resolve({ ok: true, value: null });
    },
    state: { needsSweep: () => false, format: () => FORMAT, clock: () => now, outboxHeads: (_limit: number, after: number) => (after < row.id ? [row] : []), outboxLetter: () => row },
  };
  const host = {
    onPass: (fn: () => void) => (pass = fn),
    onTick: () => {},
    opts: { now: () => now, self: 'n1', voters: ['n1'], partitions: 1, logger: { debug: () => {}, warn: (_o: object, msg: string) => warned.push(msg), error: () => {} } },
    replicas: [replica],
    clock: { now: () => now },
    readable: FORMAT,
    peerFormat: () => FORMAT,
    proposeSystem: () => Promise.resolve(answer),
  } as unknown as NodeHost;
  new Housekeeping(host);
  pass();
  await new Promise((resolve) => setImmediate(resolve));
  t.strictSame(proposed, [], 'the outbox is not cleared');
  t.strictSame(warned, ['dead letters not delivered yet; will retry']);
  // Delivered (or dropped because the queue is gone: also ok) on a later pass: cleared then.
  answer = { ok: true, value: { delivered: 0, dropped: 1 } };
  pass();
  await new Promise((resolve) => setImmediate(resolve));
  t.strictSame(proposed, ['outbox.done'], 'cleared once delivered');
});
