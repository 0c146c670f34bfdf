// Listing queues or topics: they are spread over every partition, so a page gathers the next names
// after the cursor from each partition (in parallel) and keeps the first `limit` in name order. The
// cursor is the last name of the page: names are unique and ordered, so a page never repeats or
// skips a name that exists throughout, whatever is created or deleted meanwhile.
import type { FastifyRequest } from 'fastify';
import { actorOf, ctxOf, type ApiDeps } from './deps.js';
import type { ListQuery } from './schemas/common.js';
import { ApiError, fromFailure } from './errors.js';

const NAME = /^[A-Za-z0-9_-]{1,128}$/;

export function encodeCursor(lastName: string): string {
  return Buffer.from(JSON.stringify({ after: lastName })).toString('base64url');
}

export function decodeCursor(cursor: string | undefined): string {
  if (cursor === undefined || cursor === '') return '';
  let after: unknown;
  try {
    after = (JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8')) as { after?: unknown }).after;
  } catch {
    after = undefined;
  }
  if (typeof after !== 'string' || !NAME.test(after)) throw new ApiError('validation_failed', 'cursor is not a nextCursor this API returned');
  return after;
}

export async function listAcross<T extends { name: string }>(
  deps: ApiDeps,
  request: FastifyRequest,
  type: 'queue.list' | 'topic.list',
  query: ListQuery,
): Promise<{ items: T[]; nextCursor: string | null }> {
  const { limit } = query;
  const after = decodeCursor(query.cursor);
  const user = actorOf(request);
  const parts = await Promise.all(
    Array.from({ length: deps.broker.partitions }, async (_, p) => {
      const r = await deps.broker.query(p, { type, user, after, limit }, ctxOf(request));
      if (!r.ok) throw fromFailure(r);
      return r.value as T[];
    }),
  );
  const all = parts.flat().sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  const items = all.slice(0, limit);
  // More exist when the merge overflowed, or when one partition filled a page on its own (it may
  // hold more than it was asked for).
  const more = all.length > limit || parts.some((p) => p.length >= limit);
  return { items, nextCursor: more && items.length > 0 ? encodeCursor(items[items.length - 1]!.name) : null };
}
