// An ack, nack or lease whose handles are all invalid goes to no partition, so the API asks the
// partition's leader whether the caller may consume from the channel (the `channel.consumable` query,
// API 1.3.3): 404 or 403 where not. A leader of a build before the query answers "unknown query", and
// the call is then answered as before the query existed (200, every handle receipt_invalid) rather
// than failing in a rolling upgrade.
import t from 'tap';
import { buildApp } from '../../src/api/index.js';
import { ErrorCode, type Result } from '../../src/store/broker/index.js';
import { appDeps } from './app-deps.js';

/** An app whose leader answers the consumable query with `consumable`; the queries it was asked. */
async function ackThrough(consumable: Result, op: 'ack' | 'nack' | 'lease') {
  const asked: string[] = [];
  const proposed: unknown[] = [];
  const app = await buildApp(
    appDeps({
      propose: async (_p, _actor, command) => {
        proposed.push(command);
        return { ok: true, value: { acked: [], failed: [] } } as never;
      },
      query: async (_p, q) => {
        asked.push(q.type);
        // The token's user, as the token checks read it.
        if (q.type === 'user.get') return { ok: true, value: { createdAt: new Date(0).toISOString(), epoch: 0 } } as never;
        return consumable as never;
      },
      format: () => Number.MAX_SAFE_INTEGER,
    }),
  );
  try {
    const res = await app.inject({
      method: 'POST',
      url: `/v1/queues/jobs/${op}`,
      headers: { authorization: `Bearer ${app.jwt.sign({ sub: 'alice', ep: 0 })}`, 'content-type': 'application/json' },
      payload: JSON.stringify(op === 'lease' ? { receiptHandles: ['forged'], visibilityTimeoutSeconds: 5 } : { receiptHandles: ['forged'] }),
    });
    return { status: res.statusCode, body: res.json() as unknown, asked, proposed };
  } finally {
    await app.close();
  }
}

for (const op of ['ack', 'nack', 'lease'] as const) {
  t.test(`${op}: a leader without the consumable query answers as before`, async (t) => {
    const got = await ackThrough({ ok: false, code: ErrorCode.ValidationFailed, detail: 'unknown query channel.consumable' }, op);
    t.equal(got.status, 200);
    t.match(got.body, { failed: [{ receiptHandle: 'forged', code: 'receipt_invalid' }] });
    t.ok(got.asked.includes('channel.consumable'), 'the leader was asked');
    t.same(got.proposed, [], 'nothing proposed: no handle was valid');
  });

  t.test(`${op}: a leader that knows the query refuses a channel that does not exist`, async (t) => {
    const got = await ackThrough({ ok: false, code: ErrorCode.NotFound, detail: "queue 'jobs' not found" }, op);
    t.equal(got.status, 404);
    t.match(got.body, { status: 404 });
  });

  t.test(`${op}: any other validation failure of the query is not taken for an old leader`, async (t) => {
    const got = await ackThrough({ ok: false, code: ErrorCode.ValidationFailed, detail: 'channel: bad name' }, op);
    t.equal(got.status, 400);
  });
}
