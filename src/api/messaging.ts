// What queues and subscriptions share: message limits, and receiving with long polling.
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { Static } from 'typebox';
import { ErrorCode, PARKED_POLLS, outcomeReader, type ChannelRef, type Command, type HandleOutcome, type MessageInput, type Received, type ReceivedMessage } from '../store/broker/index.js';
import { partitionOf } from '../partition/routing.js';
import type { Watch } from '../cluster/router.js';
import { actorOf, ctxOf, idempotencyKeyOf, write, type ApiDeps } from './deps.js';
import { ApiError, fromFailure } from './errors.js';
import { LIMITS } from './schemas/common.js';
import { AckRequest, AckResult, LeaseRequest, LeaseResult, NackRequest, NackResult, type ReceiveRequest } from './schemas/messages.js';

interface MessageFields {
  body: string;
  attributes?: Record<string, string>;
  delaySeconds?: number;
  deduplicationId?: string;
}

const utf8Bytes = (s: string): number => Buffer.byteLength(s, 'utf8');

function attributeBytes(a: Record<string, string> | undefined): number {
  let n = 0;
  if (a !== undefined) for (const [k, v] of Object.entries(a)) n += utf8Bytes(k) + utf8Bytes(v);
  return n;
}

/** A lone surrogate has no UTF-8 form: stored, it would come back as other text. */
export const LONE_SURROGATE = /\p{Cs}/u;

/** 400 unless every key and value of `map` is a string UTF-8 can hold. */
export function checkUnicode(map: Record<string, string> | undefined, where: string): void {
  if (map === undefined) return;
  for (const [k, v] of Object.entries(map)) {
    if (LONE_SURROGATE.test(k) || LONE_SURROGATE.test(v)) throw new ApiError('validation_failed', `${where}: a lone UTF-16 surrogate is not text UTF-8 can hold`);
  }
}

/** The messages as commands carry them, after the limits the schema cannot express (413, 400). */
export function toMessageInputs(messages: readonly MessageFields[]): MessageInput[] {
  let total = 0;
  const out: MessageInput[] = [];
  for (const [i, m] of messages.entries()) {
    if (LONE_SURROGATE.test(m.body)) throw new ApiError('validation_failed', `message ${i}: the body holds a lone UTF-16 surrogate, which is not text UTF-8 can hold`);
    checkUnicode(m.attributes, `message ${i}: attributes`);
    const bytes = utf8Bytes(m.body);
    if (bytes > LIMITS.bodyBytes) {
      throw new ApiError('payload_too_large', `message ${i}: the body is ${bytes} bytes; the limit is ${LIMITS.bodyBytes}`);
    }
    total += bytes + attributeBytes(m.attributes);
    const input: { -readonly [K in keyof MessageInput]: MessageInput[K] } = { body: m.body, attributes: m.attributes ?? {} };
    if (m.delaySeconds !== undefined) input.delaySeconds = m.delaySeconds;
    if (m.deduplicationId !== undefined) input.deduplicationId = m.deduplicationId;
    out.push(input);
  }
  if (total > LIMITS.batchBytes) throw new ApiError('payload_too_large', `the batch holds ${total} bytes of bodies and attributes; the limit is ${LIMITS.batchBytes}`);
  return out;
}

/** The body of an ack, nack or lease, validated (a nack's delay filled in). */
type HandleRequest = Static<typeof AckRequest> | NackRequest | LeaseRequest;
export type HandleOp = 'ack' | 'nack' | 'lease';

/** The request and answer schemas of each receipt-handle operation. */
export const HANDLE_SCHEMAS = {
  ack: { body: AckRequest, result: AckResult },
  nack: { body: NackRequest, result: NackResult },
  lease: { body: LeaseRequest, result: LeaseResult },
} as const;

/**
 * The answer of an ack, nack or lease: the handles that took effect, in a list named for the
 * operation. Nack and lease answered them as `acked` before API 1.1.0 and still do, until 2.0.0.
 */
export function handleAnswer(op: HandleOp, r: HandleOutcome): Static<(typeof HANDLE_SCHEMAS)[HandleOp]['result']> {
  if (op === 'ack') return { acked: r.acked, failed: r.failed };
  if (op === 'nack') return { nacked: r.acked, failed: r.failed, acked: r.acked };
  return { extended: r.acked, failed: r.failed, acked: r.acked };
}

/** The command of an ack, nack or lease of the state machine's `handles` on a channel. */
function handleCommand(op: HandleOp, channel: ChannelRef, handles: string[], b: HandleRequest): Command {
  if (op === 'ack') return { type: 'ack', channel, receiptHandles: handles };
  if (op === 'nack') return { type: 'nack', channel, receiptHandles: handles, delaySeconds: (b as NackRequest).delaySeconds };
  return { type: 'lease', channel, receiptHandles: handles, visibilityTimeoutSeconds: (b as LeaseRequest).visibilityTimeoutSeconds };
}

/**
 * An ack, nack or lease request: the handles this API issued for the channel go to its partition
 * as the state machine's; any other is receipt_invalid here, and a request with none writes nothing
 * (but is refused as the apply would refuse it: a channel the caller cannot see, or may not consume
 * from). The outcome names the client's handles, in the order sent.
 */
export async function handleWrite(
  deps: ApiDeps,
  request: FastifyRequest,
  partitionKey: string,
  op: HandleOp,
  channel: ChannelRef,
  b: HandleRequest,
): Promise<HandleOutcome> {
  const inner = b.receiptHandles.map((h) => deps.receipts.open(channel, h));
  const valid = inner.filter((h): h is string => h !== null);
  let r: HandleOutcome = { acked: [], failed: [] };
  if (valid.length > 0) r = await write<HandleOutcome>(deps, request, partitionKey, handleCommand(op, channel, valid, b));
  else await mayConsume(deps, request, partitionKey, channel);
  const next = outcomeReader(r);
  const out: HandleOutcome = { acked: [], failed: [] };
  b.receiptHandles.forEach((h, i) => {
    const mine = inner[i]!;
    const code = mine === null ? 'receipt_invalid' : next(mine);
    if (code === null) out.acked.push(h);
    else out.failed.push({ receiptHandle: h, code });
  });
  return out;
}

/**
 * Throws what an ack, nack or lease on `channel` would answer when the caller may not consume from
 * it (404, 403), for a call whose handles were all invalid and so go to no partition: such a call on
 * a queue that does not exist answered 200, every handle receipt_invalid (review of 2026-12-07). A
 * linearizable read; a leader of a build before the query cannot tell, and the call is answered as
 * before.
 */
async function mayConsume(deps: ApiDeps, request: FastifyRequest, partitionKey: string, channel: ChannelRef): Promise<void> {
  const p = partitionOf(partitionKey, deps.broker.partitions);
  const r = await deps.broker.query(p, { type: 'channel.consumable', channel, user: actorOf(request) }, ctxOf(request));
  if (r.ok || (r.code === ErrorCode.ValidationFailed && r.detail.startsWith('unknown query'))) return;
  throw fromFailure(r);
}

/** Received messages with their handles as this API issues them (receipts.ts). */
export function sealed(deps: ApiDeps, channel: ChannelRef, r: { messages: ReceivedMessage[] }): { messages: ReceivedMessage[] } {
  return { messages: r.messages.map((m) => ({ ...m, receiptHandle: deps.receipts.seal(channel, m.receiptHandle) })) };
}

/** Body limit of routes that take messages: escaped JSON of a full batch, with room. */
export const MESSAGES_BODY_LIMIT = 8 * LIMITS.batchBytes;

/**
 * A receive, with long polling. Each attempt is a replicated write (a lease), so an idle poll proposes
 * only when woken: by the local replica applying messages to this channel, by the next lease or
 * delay ending, or by the end of the wait. A client gone while waiting stops the loop; one gone
 * after messages were leased for it gets them released (nacked) at once, so nothing stays leased to
 * nobody for a visibility timeout.
 *
 * In a partition of format 3 the poll also parks in the partition's state (Router.park): the apply
 * that makes messages visible leases them to it in the same entry, and this node answers from its
 * own apply of that entry, with no receive of its own. Its last look, when the wait is over or the
 * client left, takes it out of the state (or learns that it was served in the meantime).
 */
export async function receive(...args: Parameters<typeof leaseMessages>): Promise<{ messages: ReceivedMessage[] }> {
  const [deps, request, reply, partitionKey, channel, body] = args;
  const r = body.waitSeconds > 0 ? await waitingAs(deps, actorOf(request), () => leaseMessages(...args)) : await leaseMessages(...args);
  // A wait may outlive its token: a logout, a password change or the user's deletion while it
  // waited revoked it (at once on this node; docs/api.md). What it got then goes back, and it
  // answers as a request with that token would now.
  if (body.waitSeconds > 0) {
    try {
      await request.server.authenticate(request, reply);
    } catch (err) {
      deps.broker.afterAnswer(release(deps, request, partitionKey, channel, releasable(request, r)));
      throw err;
    }
  }
  return sealed(deps, channel, r);
}

/**
 * Long polls one user may have waiting at once on a node. Each holds a socket, its request and a
 * watch (about 33 KB) for up to 20 s, and nothing else bounded them but the node's descriptors (the
 * hostile-user review of 2026-12-07): past this, 429 with Retry-After. A thousand consumers of one
 * user polling through one node are served; a client opening polls without end is not.
 */
export const LONG_POLLS_PER_USER = 1_000;

/** Per node (an app's deps): the long polls each user has waiting. */
const waitingPolls = new WeakMap<ApiDeps, Map<string, number>>();

/** Runs `poll` counted among `user`'s long polls on this node, refused past LONG_POLLS_PER_USER. */
async function waitingAs<T>(deps: ApiDeps, user: string, poll: () => Promise<T>): Promise<T> {
  let counts = waitingPolls.get(deps);
  if (counts === undefined) waitingPolls.set(deps, (counts = new Map()));
  const under = counts.get(user) ?? 0;
  if (under >= LONG_POLLS_PER_USER) throw new ApiError('rate_limited', `${LONG_POLLS_PER_USER} long polls of this user are waiting on this node; retry in 1 s`, 1);
  counts.set(user, under + 1);
  try {
    return await poll();
  } finally {
    const left = counts.get(user)! - 1;
    if (left === 0) counts.delete(user);
    else counts.set(user, left);
  }
}

/** receive() with the state machine's own handles, which its releases use. */
async function leaseMessages(
  deps: ApiDeps,
  request: FastifyRequest,
  reply: FastifyReply,
  partitionKey: string,
  channel: ChannelRef,
  body: ReceiveRequest,
): Promise<Received> {
  // The wait on the monotonic clock, as the broker's watch takes it: a wall clock stepped back
  // would stretch it by the step (and ask the leader to park the poll past what a wait may last).
  const now = (): number => performance.now();
  const partition = partitionOf(partitionKey, deps.broker.partitions);
  const deadline = now() + body.waitSeconds * 1000;
  let gone = false;
  let wakeGone = (): void => undefined;
  const goneP = new Promise<boolean>((resolve) => {
    wakeGone = () => resolve(true);
  });
  // While waiting nothing was written, so a close is the client leaving.
  const onClose = (): void => {
    gone = true;
    wakeGone();
  };
  reply.raw.on('close', onClose);
  const base = { type: 'receive', channel, maxMessages: body.maxMessages, visibilityTimeoutSeconds: body.visibilityTimeoutSeconds ?? null } as const;
  // A poll with an Idempotency-Key waits on this node only: the receive that finds its messages binds
  // the key, so that a retry replays that delivery (a delivery to a parked poll binds nothing).
  // A parked poll gets its messages from this node's apply of their lease: a halted replica has none.
  const appliesHere = (): boolean => deps.broker.appliesHere?.(partition) !== false;
  const parks = deadline > now() && deps.broker.format(partition) >= PARKED_POLLS && idempotencyKeyOf(request) === undefined && appliesHere();
  let parking = parks ? deps.broker.park() : null;
  const releaseLate = (messages: ReceivedMessage[]): void => deps.broker.afterAnswer(release(deps, request, partitionKey, channel, messages));
  /** Whether the poll is parked in the state now (its last receive parked it). */
  let parked = false;
  /** Takes a parked poll nobody waits for out of the state, leasing nothing; what it was given goes back. */
  const lastLook = (): void => {
    const p = parking!;
    const command: Command = { ...base, wait: { tag: p.tag, ms: 0, again: true, leave: true } };
    const look = write<Received>(deps, request, partitionKey, command).then(
      // Served before this look: its delivery goes back, as the look answers it (format 16) or as this
      // node's apply brings it. Otherwise nothing was leased, nor will be.
      (r) => {
        if (r.parked !== 'gone') return p.done();
        if (r.messages.length === 0) return p.abandon(releaseLate, PARK_GRACE_MS);
        p.done();
        releaseLate(releasable(request, r));
      },
      (err: unknown) => {
        request.log.warn({ err: String(err) }, 'a parked long poll could not leave the state; it expires at the end of its wait');
        p.abandon(releaseLate, PARK_GRACE_MS);
      },
    );
    deps.broker.afterAnswer(look);
  };
  // The wait whose wake-up the current attempt answers: if the attempt cannot take the messages, the
  // wake-up goes to the next poll waiting on this node (only as many polls as messages are woken).
  let wokenBy: Watch | null = null;
  try {
    for (;;) {
      // The replica here halted (a newer build raised the partition's format): it will apply no
      // delivery, so the poll stops parking. Parked, its next receive takes it out of the state and
      // leases what is ready in the same entry (ms 0), or finds it served; from then on it receives
      // through the leader without a wait.
      let unparking = false;
      if (parking !== null && !appliesHere()) {
        if (parked) unparking = true;
        else {
          parking.done();
          parking = null;
        }
      }
      // Registered before the receive, so that no wake-up can fall between the two.
      const watch = deadline > now() && !gone ? deps.broker.watch(partition, channel, deadline, base.maxMessages) : null;
      const command: Command =
        parking === null ? base : { ...base, wait: { tag: parking.tag, ms: watch === null || unparking ? 0 : Math.ceil(deadline - now()), again: parked } };
      let result: Received;
      try {
        result = await write<Received>(deps, request, partitionKey, command);
      } catch (err) {
        leave(watch);
        wokenBy?.passOn();
        parking?.abandon(releaseLate, PARK_GRACE_MS);
        throw err;
      }
      parked = result.parked === 'parked';
      if (unparking && result.parked !== 'gone') {
        // Out of the state, with what was ready (if anything): an unparked poll from here on.
        parking!.done();
        parking = null;
      }
      if (result.parked === 'gone') {
        leave(watch);
        if (result.messages.length > 0) {
          // Served between this node's last look and this one, and the look answers what the poll
          // was given (format 16): this node may never apply the entry that served it (it caught up
          // through a snapshot past it), and if it does, the delivery is these same messages.
          parking!.done();
          if (gone) {
            releaseLate(releasable(request, result));
            return { messages: [] };
          }
          releaseIfUndelivered(deps, request, reply, partitionKey, channel, releasable(request, result));
          return { messages: result.messages };
        }
        // Served between this node's last look and this one: the messages come with this node's
        // apply of the entry that leased them.
        if (!appliesHere()) {
          // Not here: this replica halted, so they stay leased until their lease ends (abandon
          // releases them only should they be applied here after all), and the poll goes on
          // receiving through the leader, unless its client left.
          parking!.abandon(releaseLate, PARK_GRACE_MS);
          parking = null;
          if (gone) return { messages: [] };
          continue;
        }
        const messages = await Promise.race([parking!.delivered, sleep(DELIVERY_WAIT_MS).then(() => null), goneP.then(() => null)]);
        if (messages === null || gone) {
          parking!.abandon(releaseLate, PARK_GRACE_MS);
          return { messages: [] };
        }
        parking!.done();
        releaseIfUndelivered(deps, request, reply, partitionKey, channel, messages);
        return { messages };
      }
      if (gone) {
        leave(watch);
        // Messages taken are released, which wakes the next poll; a wake-up not acted on is passed on.
        if (result.messages.length === 0) wokenBy?.passOn();
        releaseLate(releasable(request, result));
        if (parked) lastLook();
        else parking?.done();
        return { messages: [] };
      }
      if (result.messages.length > 0 || watch === null) {
        leave(watch);
        parking?.done();
        releaseIfUndelivered(deps, request, reply, partitionKey, channel, releasable(request, result));
        return result;
      }
      // Nothing yet. The wait ends with nothing when its time is up: anything that became visible
      // before then woke us, or was leased to this poll where it parked.
      const waits: Promise<{ over: boolean } | { messages: ReceivedMessage[] }>[] = [watch.woken.then((over) => ({ over })), goneP.then(() => ({ over: true }))];
      if (parking !== null) waits.push(parking.delivered.then((messages) => ({ messages })));
      const woke = await Promise.race(waits);
      watch.cancel();
      if ('messages' in woke) {
        watch.passOn();
        if (gone) {
          parking!.abandon(releaseLate, PARK_GRACE_MS);
          return { messages: [] };
        }
        parking!.done();
        releaseIfUndelivered(deps, request, reply, partitionKey, channel, woke.messages);
        return { messages: woke.messages };
      }
      if (gone) watch.passOn();
      if (woke.over || gone) {
        if (!parked) {
          parking?.done();
          return { messages: [] };
        }
        // The client left, or this node is shutting down (the wait ended early): answer now, and
        // take the poll out of the state behind the answer.
        if (gone || now() < deadline) {
          lastLook();
          return { messages: [] };
        }
        // The wait is over: one more look (ms 0) takes the poll out of the state, or finds it served.
      }
      wokenBy = woke.over ? null : watch;
    }
  } finally {
    reply.raw.off('close', onClose);
  }
}

/** How long a poll whose waiter was served waits for this node to apply the delivery. */
const DELIVERY_WAIT_MS = 5_000;
/** How long deliveries to an abandoned poll are still caught and released (a park lasts at most 20 s). */
const PARK_GRACE_MS = 30_000;
const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms).unref());

/**
 * Ends a wait that will not be waited on. It was registered before the receive, so a wake-up may
 * have picked it while the receive was in flight (for messages that receive did not take): that
 * wake-up goes to the next poll waiting on the channel.
 */
function leave(watch: Watch | null): void {
  watch?.cancel();
  watch?.passOn();
}

/**
 * What a receive's answer may give back when it does not reach its client: the deliveries its own
 * receive made, unless the receive carries an Idempotency-Key. A keyed receive's retry replays the
 * first answer, handles included, so those must stay leased: released when the first attempt's
 * client left, the retry handed out deliveries already given back, which another receive then took
 * too, each with stale handles (chaos seed 15334). And a replay hands out the first answer's
 * deliveries again, which may have reached the client: a release would take back a delivery it saw,
 * uncounted (so a message on its last allowed delivery came round again, never dead-lettered).
 * They end with their lease, as SQS keeps a receive attempt's messages for its retry.
 */
function releasable(request: FastifyRequest, r: Received): ReceivedMessage[] {
  return idempotencyKeyOf(request) !== undefined || r.replayed === true ? [] : r.messages;
}

/** When the answer does not reach the client in full, its messages go back to the queue. */
function releaseIfUndelivered(deps: ApiDeps, request: FastifyRequest, reply: FastifyReply, key: string, channel: ChannelRef, messages: ReceivedMessage[]): void {
  if (messages.length === 0) return;
  let finished = false;
  reply.raw.once('finish', () => {
    finished = true;
  });
  reply.raw.once('close', () => {
    if (!finished) deps.broker.afterAnswer(release(deps, request, key, channel, messages));
  });
}

async function release(deps: ApiDeps, request: FastifyRequest, key: string, channel: ChannelRef, messages: ReceivedMessage[]): Promise<void> {
  if (messages.length === 0) return;
  try {
    // Without the client's Idempotency-Key: this nack is the node's own, not the client's request. A
    // release (format 15) takes the delivery back: no client saw it, so it counts none and never
    // dead-letters. (A partition in an older format takes it as a plain nack, as older builds do.)
    const nack: Command = { type: 'nack', channel, receiptHandles: messages.map((m) => m.receiptHandle), delaySeconds: 0, release: true };
    await write<HandleOutcome>(deps, request, key, nack, { idempotent: false });
    request.log.info({ released: messages.length }, 'client left before its messages were delivered: released them');
  } catch (err) {
    request.log.warn({ err: String(err) }, 'could not release the messages of a client that left; they return when their lease expires');
  }
}
