// A digest of a partition's whole logical state: every table, rows in primary-key order. Replicas that
// applied the same log must give the same digest (the determinism tests compare them).
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
];

export function stateHash(db: Sqlite): string {
  const h = createHash('sha256');
  for (const [table, order] of TABLES) {
    h.update(`\u0000${table}\u0000`);
    for (const row of db.prepare(`select * from ${table} order by ${order}`).iterate()) h.update(JSON.stringify(row));
  }
  return h.digest('hex');
}
