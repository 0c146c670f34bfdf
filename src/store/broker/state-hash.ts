// A digest of a partition's whole logical state: every table, rows in primary-key order. Replicas that
// applied the same log must give the same digest (the determinism tests compare them). A row of format 4
// counts without its body (bodies.ts): the body is the log's, and a row installed from an image holds a
// copy of it (images.ts fillBodies), which is the same message.
import { createHash } from 'node:crypto';
import type { Sqlite } from './sqlite.js';

const TABLES: readonly [string, string][] = [
  ['meta', 'key'],
  ['users', 'username'],
  ['channels', 'id'],
  ['queues', 'name'],
  ['topics', 'name'],
  ['subscriptions', 'topic, name'],
  ['grants', 'resource_kind, resource_name, username'],
  ['messages', 'channel_id, seq'],
  ['dedup', 'channel_id, dedup_id'],
  ['idempotency', 'username, key'],
  ['outbox', 'id'],
  ['waiters', 'channel_id, id'],
  ['user_tokens', 'username'],
  ['clearing', 'channel_id'],
];

export function stateHash(db: Sqlite): string {
  const h = createHash('sha256');
  const from = (db.prepare(`select value from meta where key = 'bodies_from'`).get() as { value: number } | undefined)?.value ?? Infinity;
  for (const [table, order] of TABLES) {
    h.update(`\u0000${table}\u0000`);
    for (const row of db.prepare(`select * from ${table} order by ${order}`).iterate() as Iterable<Record<string, unknown>>) {
      h.update(JSON.stringify(table === 'messages' && (row.seq as number) >= from ? { ...row, body: '' } : row));
    }
  }
  return h.digest('hex');
}
