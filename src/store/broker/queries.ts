// The reads a partition answers, as data: a query built on the node that received the request runs on
// the partition's leader after a ReadIndex (linearizable), or on the local replica for a stale read.
// Being plain data, a query travels to another node's leader as easily as a command does.
import { ErrorCode, fail, ok, type ChannelRef, type Result } from './commands.js';
import type { BrokerStateMachine } from './state-machine.js';

export type Query =
  /** For login and token checks only: the answer holds the password hash, never sent to clients. */
  | { readonly type: 'user.get'; readonly username: string }
  /** How many queues and topics `user` owns in the partition (format 9: an older build knows no such query). */
  | { readonly type: 'user.owned'; readonly user: string }
  | { readonly type: 'queue.get'; readonly name: string; readonly user: string }
  | { readonly type: 'queue.list'; readonly user: string; readonly after: string; readonly limit: number }
  | { readonly type: 'grant.list'; readonly kind: 'queue' | 'topic'; readonly name: string; readonly user: string }
  | { readonly type: 'topic.get'; readonly name: string; readonly user: string }
  | { readonly type: 'topic.list'; readonly user: string; readonly after: string; readonly limit: number }
  | { readonly type: 'subscription.get'; readonly topic: string; readonly name: string; readonly user: string }
  | { readonly type: 'subscription.list'; readonly topic: string; readonly user: string }
  /**
   * Whether `user` may consume from `channel` (receive, ack, nack, lease): null, or the failure the
   * apply of such a command would answer (404, 403). An older build knows no such query.
   */
  | { readonly type: 'channel.consumable'; readonly channel: ChannelRef; readonly user: string };

/** Most items one list query returns. */
export const MAX_LIST_LIMIT = 100;

/** Runs a query on a replica's state. `now` is the time the reading node stamps entries with (ClusterClock; never below the partition's). */
export function runQuery(sm: BrokerStateMachine, q: Query, now: number): Result {
  switch (q.type) {
    case 'user.get': {
      const u = sm.getUser(q.username);
      return u === null ? fail(ErrorCode.NotFound, `user '${q.username}' not found`) : ok(u);
    }
    case 'user.owned':
      return ok(sm.owned(q.user));
    case 'queue.get':
      return sm.getQueue(q.name, q.user, now);
    case 'queue.list':
      return ok(listed(sm.listQueues(q.user, q.after, clampLimit(q.limit)), (name) => sm.getQueue(name, q.user, now)));
    case 'grant.list':
      return sm.listGrants(q.kind, q.name, q.user);
    case 'topic.get':
      return sm.getTopic(q.name, q.user);
    case 'topic.list':
      return ok(listed(sm.listTopics(q.user, q.after, clampLimit(q.limit)), (name) => sm.getTopic(name, q.user)));
    case 'subscription.get':
      return sm.getSubscription(q.topic, q.name, q.user, now);
    case 'subscription.list':
      return sm.listSubscriptions(q.topic, q.user, now);
    case 'channel.consumable':
      return sm.consumable(q.channel, q.user);
    default:
      return fail(ErrorCode.ValidationFailed, `unknown query ${(q as { type: string }).type}`);
  }
}

function clampLimit(limit: number): number {
  return Number.isInteger(limit) ? Math.min(Math.max(limit, 1), MAX_LIST_LIMIT) : MAX_LIST_LIMIT;
}

/** The views of listed names; a name listed is visible to its lister, so every lookup succeeds. */
function listed<T>(names: readonly string[], view: (name: string) => Result<T>): T[] {
  const out: T[] = [];
  for (const name of names) {
    const r = view(name);
    if (r.ok) out.push(r.value);
  }
  return out;
}
