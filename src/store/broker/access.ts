// Who may do what: users, grants, and the checks every command makes against the replicated state
// (ownership, rights, what a user may see). A check that fails throws a Refusal, which apply turns
// into the command's result; a hidden resource answers 404, like one that does not exist.
import { ErrorCode, fail, ok, type ChannelRef, type Result } from './commands.js';
import { Refusal, iso, read, type Ctx, type QueueRow, type Store } from './context.js';
import type { ChannelRow, TopicRow } from './schema.js';

function parseActions(json: string): string[] {
  return JSON.parse(json) as string[];
}

export function requireActor(ctx: Ctx): string {
  if (ctx.actor === null) throw new Refusal(fail(ErrorCode.Forbidden, 'this command needs a user'));
  return ctx.actor;
}

// ---- users ----

export function register(s: Store, username: string, passwordHash: string, ctx: Ctx): Result {
  if (s.st.getUser.get(username) !== undefined) return fail(ErrorCode.Conflict, `user '${username}' exists`);
  // A deleted user's name is never given again: grants and subscriptions may still name it.
  if (tokensOf(s, username).deletedAt !== null) return fail(ErrorCode.Conflict, `user '${username}' existed and was deleted; the name is not given again`);
  s.st.insertUser.run(username, passwordHash, ctx.now);
  return ok({ username, createdAt: iso(ctx.now) });
}

/** A user as login and token checks read it; `epoch`: tokens signed with a lower one are refused (format 9). */
export interface UserRecord {
  username: string;
  passwordHash: string;
  createdAt: string;
  epoch: number;
}

export function getUser(s: Store, username: string): UserRecord | null {
  const u = s.st.getUser.get(username) as { username: string; password_hash: string; created_at: number } | undefined;
  return u === undefined ? null : { username: u.username, passwordHash: u.password_hash, createdAt: iso(u.created_at), epoch: tokensOf(s, username).epoch };
}

function tokensOf(s: Store, username: string): { epoch: number; deletedAt: number | null } {
  const r = s.st.getUserTokens.get(username) as { epoch: number; deleted_at: number | null } | undefined;
  return r === undefined ? { epoch: 0, deletedAt: null } : { epoch: r.epoch, deletedAt: r.deleted_at };
}

/**
 * The calling user and its epoch, once checked: the user exists in this partition (its own: the API
 * routes it there), and the caller's token was signed in its current epoch, so a revoked token that
 * a node still accepts changes nothing.
 */
function self(s: Store, tokenEpoch: number, ctx: Ctx): { user: string; epoch: number } {
  const user = requireActor(ctx);
  if (s.st.getUser.get(user) === undefined) throw new Refusal(fail(ErrorCode.NotFound, `user '${user}' not found`));
  const { epoch } = tokensOf(s, user);
  if (tokenEpoch !== epoch) throw new Refusal(fail(ErrorCode.Unauthorized, 'the token was revoked (logout or password change); log in again'));
  return { user, epoch };
}

/** Revokes every token the caller holds (logout; format 9): answers the new epoch, for the tokens signed from now on. */
export function revokeTokens(s: Store, tokenEpoch: number, ctx: Ctx): Result<{ epoch: number }> {
  const { user, epoch } = self(s, tokenEpoch, ctx);
  s.st.putUserTokens.run(user, epoch + 1, null);
  return ok({ epoch: epoch + 1 });
}

/** Sets the caller's password hash and revokes every token it holds (format 9). */
export function setPassword(s: Store, passwordHash: string, tokenEpoch: number, ctx: Ctx): Result<{ epoch: number }> {
  const { user, epoch } = self(s, tokenEpoch, ctx);
  s.st.setPassword.run(passwordHash, user);
  s.st.putUserTokens.run(user, epoch + 1, null);
  return ok({ epoch: epoch + 1 });
}

/** Deletes the caller (format 9): its tokens name no user from then on, and its name is not given again. */
export function deleteUser(s: Store, tokenEpoch: number, ctx: Ctx): Result {
  const { user, epoch } = self(s, tokenEpoch, ctx);
  s.st.deleteUser.run(user);
  s.st.putUserTokens.run(user, epoch + 1, ctx.now);
  return ok(null);
}

/** The queues and topics `user` owns in this partition: a user who owns any is not deleted. */
export function owned(s: Store, user: string): { queues: number; topics: number } {
  const r = s.st.countOwned.get(user, user) as { queues: number; topics: number };
  return { queues: r.queues, topics: r.topics };
}

/**
 * Queues, topics and subscriptions one user owns at most in one partition (format 15,
 * BOUNDED_OWNERSHIP). Names fall in partitions by their hash, so a count across the cluster is not
 * known to one partition's apply; this bound is, alike on every replica. Room for a topic's owner to
 * fill one topic of its own (MAX_SUBSCRIPTIONS, 1,000, in the topic's partition) and as many queues
 * beside it. With the default 16 partitions a user's names spread to about 32,000 in all (a name
 * that falls in a full partition is refused; another name may fall elsewhere). The sweep no longer
 * reads them (messages.ts, sweep), but each is a row of the state, its images and every listing.
 */
export const MAX_OWNED = 2000;

/**
 * Refuses a creation by `user` that would make it own more than MAX_OWNED queues, topics and
 * subscriptions in this partition (format 15): subscriptions count, each a channel the sweep may
 * read, which a topic's owner may make 1,000 of on each of its topics. Counted in indexes
 * (channels_owner, topics_owner), not by a scan.
 */
export function requireRoom(s: Store, user: string, what: string): void {
  const r = s.st.countHeld.get(user, user) as { channels: number; topics: number };
  if (r.channels + r.topics < MAX_OWNED) return;
  throw new Refusal(
    fail(
      ErrorCode.Conflict,
      `you own ${MAX_OWNED} queues, topics and subscriptions in the partition of ${what}, the most one user owns in one partition: delete some, or choose another name`,
    ),
  );
}

// ---- checks ----

export function grantActions(s: Store, kind: 'queue' | 'topic', name: string, user: string): string[] {
  const g = s.st.getGrant.get(kind, name, user) as { actions: string } | undefined;
  return g === undefined ? [] : parseActions(g.actions);
}

/** The queue and its channel, if `user` may see it (owner or any grant); otherwise a 404. */
export function visibleQueue(s: Store, name: string, user: string): QueueRow {
  const q = s.st.getQueue.get(name) as QueueRow | undefined;
  if (q === undefined) throw new Refusal(fail(ErrorCode.NotFound, `queue '${name}' not found`));
  if (q.owner !== user && grantActions(s, 'queue', name, user).length === 0) {
    throw new Refusal(fail(ErrorCode.NotFound, `queue '${name}' not found`));
  }
  return q;
}

export function requireQueueRight(s: Store, q: QueueRow, user: string, action: 'send' | 'receive'): void {
  if (q.owner === user) return;
  if (!grantActions(s, 'queue', q.name, user).includes(action)) {
    throw new Refusal(fail(ErrorCode.Forbidden, `no '${action}' right on queue '${q.name}'`));
  }
}

export function requireOwner(owner: string, user: string, what: string): void {
  if (owner !== user) throw new Refusal(fail(ErrorCode.Forbidden, `only the owner may ${what}`));
}

/** A topic is visible to its owner, to grantees, and to everyone when anyone may subscribe. */
export function visibleTopic(s: Store, name: string, user: string): TopicRow {
  const t = s.st.getTopic.get(name) as TopicRow | undefined;
  const hidden = (): never => {
    throw new Refusal(fail(ErrorCode.NotFound, `topic '${name}' not found`));
  };
  if (t === undefined) return hidden();
  if (t.owner !== user && t.subscribe_policy !== 'anyone' && grantActions(s, 'topic', name, user).length === 0) hidden();
  return t;
}

/** Resolves a receive/ack/nack/lease target and checks the caller may consume from it. */
export function consumable(s: Store, ref: ChannelRef, user: string): ChannelRow {
  if ('queue' in ref) {
    const q = visibleQueue(s, ref.queue, user);
    requireQueueRight(s, q, user, 'receive');
    return q;
  }
  const sub = s.st.getSubscription.get(ref.topic, ref.subscription) as (ChannelRow & { topic_owner: string }) | undefined;
  if (sub === undefined || (sub.owner !== user && sub.topic_owner !== user)) {
    throw new Refusal(fail(ErrorCode.NotFound, `subscription '${ref.subscription}' of topic '${ref.topic}' not found`));
  }
  // The topic's owner may see and delete a subscription, but only its owner consumes from it.
  if (sub.owner !== user) throw new Refusal(fail(ErrorCode.Forbidden, 'only the subscription owner may consume from it'));
  return sub;
}

// ---- grants ----

/**
 * Users one queue or topic holds grants for at most (format 16, BOUNDED_GRANTS). Each is a row that
 * a listing of the resource's grants reads and answers in one page, and that the resource's delete
 * deletes in its entry. A demanding user who shares a queue with more principals than this would
 * share it with a group; the broker has none, so the bound is far above a team's size.
 */
export const MAX_GRANTS = 1000;

/**
 * `bounded` (format 16): a grant for a user who holds none on the resource is refused once it holds
 * MAX_GRANTS; replacing a grant's actions never is.
 */
export function putGrant(s: Store, kind: 'queue' | 'topic', name: string, username: string, actions: readonly string[], ctx: Ctx, bounded: boolean): Result {
  const user = requireActor(ctx);
  const queue = kind === 'queue' ? visibleQueue(s, name, user) : null;
  const owner = queue !== null ? queue.owner : visibleTopic(s, name, user).owner;
  requireOwner(owner, user, `grant rights on ${kind} '${name}'`);
  const allowed = kind === 'queue' ? ['send', 'receive'] : ['publish', 'subscribe'];
  if (actions.length === 0 || !actions.every((a) => allowed.includes(a))) {
    return fail(ErrorCode.ValidationFailed, `actions must be a non-empty subset of ${allowed.join(', ')}`);
  }
  if (username === owner) return fail(ErrorCode.ValidationFailed, 'the owner already has every right');
  const sorted = [...new Set(actions)].sort();
  if (bounded && s.st.getGrant.get(kind, name, username) === undefined && (s.st.countGrants.get(kind, name) as { n: number }).n >= MAX_GRANTS) {
    return fail(ErrorCode.Conflict, `${kind} '${name}' holds grants for ${MAX_GRANTS} users, the most a ${kind} holds: revoke one first`);
  }
  s.st.putGrant.run(kind, name, username, JSON.stringify(sorted));
  // Without the right to receive, the user's parked polls are served no more (deleteGrant too).
  if (queue !== null && !sorted.includes('receive')) s.st.dropWaitersOf.run(queue.id, username);
  return ok({ username, actions: sorted });
}

export function deleteGrant(s: Store, kind: 'queue' | 'topic', name: string, username: string, ctx: Ctx): Result {
  const user = requireActor(ctx);
  const queue = kind === 'queue' ? visibleQueue(s, name, user) : null;
  const owner = queue !== null ? queue.owner : visibleTopic(s, name, user).owner;
  requireOwner(owner, user, `revoke rights on ${kind} '${name}'`);
  const r = s.st.deleteGrant.run(kind, name, username);
  if (r.changes === 0) return fail(ErrorCode.NotFound, `no grant for '${username}'`);
  // A parked poll must not be served after its right is gone (its node's next look is refused).
  if (queue !== null) s.st.dropWaitersOf.run(queue.id, username);
  return ok(null);
}

export function listGrants(s: Store, kind: 'queue' | 'topic', name: string, user: string): Result<{ username: string; actions: string[] }[]> {
  return read(() => {
    const owner = kind === 'queue' ? visibleQueue(s, name, user).owner : visibleTopic(s, name, user).owner;
    requireOwner(owner, user, `list the grants of ${kind} '${name}'`);
    const rows = s.st.listGrants.all(kind, name) as { username: string; actions: string }[];
    return rows.map((r) => ({ username: r.username, actions: parseActions(r.actions) }));
  });
}
