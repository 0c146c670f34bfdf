// Queue definitions: creating and deleting queues. What happens to their messages is messages.ts.
import { ErrorCode, fail, ok, type Command, type Result } from './commands.js';
import { requireActor, requireOwner, requireRoom, visibleQueue } from './access.js';
import type { Ctx, QueueRow, Store } from './context.js';
import { dropChannel } from './messages.js';
import { queueView } from './views.js';

/** `bounded`: from format 15 a user owns at most MAX_OWNED queues, topics and subscriptions in the partition (access.ts). */
export function createQueue(s: Store, c: Extract<Command, { type: 'queue.create' }>, ctx: Ctx, bounded: boolean): Result {
  const user = requireActor(ctx);
  if (s.st.getQueue.get(c.name) !== undefined) return fail(ErrorCode.Conflict, `queue '${c.name}' exists`);
  if (c.deadLetterQueue === c.name) return fail(ErrorCode.ValidationFailed, 'a queue cannot be its own dead-letter queue');
  if (bounded) requireRoom(s, user, `queue '${c.name}'`);
  s.st.insertChannel.run(
    ctx.index,
    'queue',
    user,
    c.visibilityTimeoutSeconds * 1000,
    c.maxDeliveries,
    c.deadLetterQueue,
    c.delaySeconds * 1000,
    c.retentionSeconds * 1000,
    ctx.now,
  );
  s.st.insertQueue.run(c.name, ctx.index);
  return ok(queueView(s, s.st.getQueue.get(c.name) as QueueRow, ctx.now, user));
}

export function deleteQueue(s: Store, name: string, ctx: Ctx): Result {
  const user = requireActor(ctx);
  const q = visibleQueue(s, name, user);
  requireOwner(q.owner, user, `delete queue '${name}'`);
  dropChannel(s, q.id, ctx, true);
  s.st.deleteQueue.run(name);
  s.st.deleteGrants.run('queue', name);
  return ok(null);
}
