// Leases: what a receive gives a consumer, and everything that acts on one. The rules, in one place:
//
//   - A receive leases the channel's oldest ready messages (leaseReady): each becomes Leased, with
//     `visible_at` = now + the visibility timeout, `lease_id` = the index of the receive's entry, and
//     its delivery count one higher. Its receipt handle names channel, sequence and lease
//     (encodeReceipt; the API seals it: src/api/receipts.ts).
//   - **A lease is live while its message is Leased and `visible_at` > now** (leaseLive); at
//     `visible_at` <= now it has ended, on the partition's clock (every replica's the same). Nothing
//     is written when it ends: the next receive, long poll or sweep of the channel finds it due
//     (promoteDue, over the statement `due`) and makes the message ready again, or, delivered
//     maxDeliveries times, dead-letters it (deadLetter; a sweep also finds those through `dueDead`,
//     and retention's `oldest` skips them). A delayed message becomes ready the same way. From
//     format 12 a lease is not found due in the entry that made it (a 0-second one): leased again
//     there, it would carry the same lease id, so the same receipt handle, twice.
//   - A handle acts only on the lease it names (handles): once its message was delivered again (a
//     newer lease id) or is gone, the handle is stale. Ack deletes the message, live lease or not;
//     nack gives a live or ended lease up (ready at once, or delayed), or dead-letters it; a node's
//     release (format 15) takes an undelivered lease back and never dead-letters; a lease is
//     extended only while it lives.
//
// Every change keeps the channel's counters (n_ready, n_leased, n_delayed) equal to its rows by state.
import { ok, type Body, type ChannelRef, type HandleOutcome, type ReceivedMessage, type Result } from './commands.js';
import { consumable, requireActor } from './access.js';
import { rowBody } from './bodies.js';
import { iso, wokeUp, type Ctx, type Store } from './context.js';
import { bodyText } from './envelope.js';
import { MessageState, type ChannelRow, type MessageRow } from './schema.js';
import type { READY_COLUMNS } from './statements.js';

/** Whether the lease on `m` is live at `now`: Leased, and its visibility timeout not yet over. */
export function leaseLive(m: Pick<MessageRow, 'state' | 'visible_at'>, now: number): boolean {
  return m.state === MessageState.Leased && m.visible_at > now;
}

/**
 * The bytes of bodies (UTF-8) and attributes (their stored JSON) one receive leases at most, past its
 * first message (format 17, BOUNDED_RECEIVES). 100 messages of 256 KiB, each character a control
 * character that JSON escapes in six bytes, made an answer of 168 MB; at most about 12 MiB now (and
 * one message). SQS answers at most 10 messages of 256 KiB.
 */
export const RECEIVE_BYTES = 2 * 1024 * 1024;

/**
 * Due messages (ended leases, passed delays) one entry makes ready again or dead-letters at most
 * (format 17, BOUNDED_PROMOTION): about 7 µs each on a replica, a dead letter more (its body read,
 * an outbox row). 100,000 leases that ended together held every replica's loop 0.75 s in one receive.
 */
export const PROMOTE_BUDGET = 1000;

/** Receipt handles name one delivery: channel, message sequence and the lease (receive entry index). */
export function encodeReceipt(channelId: number, seq: number, leaseId: number): string {
  return Buffer.from(`${channelId}.${seq}.${leaseId}`).toString('base64url');
}

/**
 * A handle's text: three numbers of 1 to 16 digits (format 4's sequences, entry index x 65,536, pass
 * 15 digits after about 15e9 entries). Decoded as latin1: a byte past ASCII fails the pattern as its
 * UTF-8 reading would.
 */
const RECEIPT = /^(\d{1,16})\.(\d{1,16})\.(\d{1,16})$/;

export function decodeReceipt(h: string): { channelId: number; seq: number; leaseId: number } | null {
  if (h.length === 0 || h.length > 200) return null;
  const parts = RECEIPT.exec(Buffer.from(h, 'base64url').toString('latin1'));
  if (parts === null) return null;
  const channelId = Number(parts[1]);
  const seq = Number(parts[2]);
  const leaseId = Number(parts[3]);
  if (!Number.isSafeInteger(seq) || !Number.isSafeInteger(channelId) || !Number.isSafeInteger(leaseId)) return null;
  // Lease ids are log indexes of receives, so never 0: a message never leased has no valid handle.
  if (leaseId === 0) return null;
  return { channelId, seq, leaseId };
}

/** What a receive reads of a message it leases (the statement `ready`). */
export type ReadyRow = Pick<MessageRow, (typeof READY_COLUMNS)[number]>;

/** Messages one receive leased, as read before the lease, with their bodies (leaseReady()). */
export interface Leased {
  readonly channelId: number;
  /** The lease id: the receive's entry index. */
  readonly lease: number;
  readonly rows: readonly ReadyRow[];
  readonly bodies: readonly Body[];
}

/**
 * Leases up to `max` of the channel's oldest visible messages for `vt` ms, as one receive (the
 * caller expired and promoted what time made due). Each body is found here on every replica, so a
 * body the log lost stops every replica alike (bodies.ts), whether it answers the receive or not;
 * received() makes the answer's messages.
 */
export function leaseReady(s: Store, ch: ChannelRow, max: number, vt: number, ctx: Ctx): Leased {
  const read = (s.st.ready.all(ch.id, max) as ReadyValues[]).map(readyRow);
  // From format 17, up to RECEIVE_BYTES of bodies and attributes, past the first message: the
  // answer's JSON is up to six times those bytes (control characters escaped).
  const rows: ReadyRow[] = [];
  const bodies: Body[] = [];
  let bytes = 0;
  for (const m of read) {
    const body = rowBody(s, m);
    if (ctx.receiveBytes !== null) {
      bytes += (typeof body === 'string' ? Buffer.byteLength(body, 'utf8') : body.byteLength) + m.attributes.length;
      if (rows.length > 0 && bytes > ctx.receiveBytes) break;
    }
    rows.push(m);
    bodies.push(body);
  }
  // What received() could throw on, checked here on every replica: a receive must fail alike on
  // the replicas that answer it and on the others (before format 8 a leader's stamp set the clock as
  // it came, so a sending time may be past what a Date holds).
  for (const m of rows) if (!(Math.abs(m.sent_at) <= MAX_TIME_MS)) throw new RangeError(`message ${m.seq} was sent at ${m.sent_at}, past what a time can be`);
  // One update for them all: the rows read are every ready message up to the last one's sequence.
  if (rows.length > 0) s.st.leaseReadyUpTo.run(ctx.now + vt, ctx.index, ch.id, rows[rows.length - 1]!.seq);
  if (rows.length > 0) {
    s.st.bumpCount[MessageState.Ready].run(-rows.length, ch.id);
    s.st.bumpCount[MessageState.Leased].run(rows.length, ch.id);
    ctx.retimed.add(ch.id);
  }
  return { channelId: ch.id, lease: ctx.index, rows, bodies };
}

/** A row of the statement `ready`: READY_COLUMNS' values, in that order. */
type ReadyValues = [number, string, MessageRow['body'], string, number, number];

const readyRow = ([seq, message_id, body, attributes, sent_at, delivery_count]: ReadyValues): ReadyRow => ({ seq, message_id, body, attributes, sent_at, delivery_count });

/** The largest time a Date holds, in ms either side of 1970. */
const MAX_TIME_MS = 8.64e15;

/**
 * The messages of a lease as a receive answers them: text bodies, attributes, receipt handles and
 * times. Only where the answer is made: on a replica that does not answer the receive, these texts
 * (about 6% of its receive + ack's apply, in process) would be made for nothing. So it must not
 * throw where another replica would not run it: leaseReady() checked the times, and attributes are
 * stored as JSON.stringify wrote them.
 */
export function received(leased: Leased): ReceivedMessage[] {
  return leased.rows.map((m, i) => ({
    messageId: m.message_id,
    sequence: m.seq,
    body: bodyText(leased.bodies[i]!),
    attributes: JSON.parse(m.attributes) as Record<string, string>,
    receiptHandle: encodeReceipt(leased.channelId, m.seq, leased.lease),
    deliveryCount: m.delivery_count + 1,
    sentAt: iso(m.sent_at),
  }));
}

/**
 * Leased and delayed messages whose time has come become ready again; one that has been delivered
 * maxDeliveries times is dead-lettered instead. From format 17 at most what is left of the entry's
 * PROMOTE_BUDGET, the earliest due first; the rest stay due, and the receives and parked polls'
 * looks after it take them (the channel's next visible time is past, so its polls look at once).
 */
export function promoteDue(s: Store, ch: ChannelRow, ctx: Ctx): void {
  if (ctx.promoteBudget !== null && ctx.promoteBudget <= 0) return;
  const due = (ctx.promoteBudget === null ? s.st.due.all(ch.id, ctx.now) : s.st.dueFirst.all(ch.id, ctx.now, ctx.promoteBudget)) as Pick<MessageRow, 'seq' | 'state' | 'delivery_count' | 'lease_id'>[];
  if (ctx.promoteBudget !== null) ctx.promoteBudget -= due.length;
  for (const m of due) {
    // A lease this very entry made (a visibility timeout of 0) ends at the next entry: leased again
    // here, the message would carry the same lease id, so the same receipt handle, twice.
    if (ctx.holdsOwnLeases && m.state === MessageState.Leased && m.lease_id === ctx.index) continue;
    if (m.state === MessageState.Leased && ch.max_deliveries !== null && m.delivery_count >= ch.max_deliveries) {
      deadLetter(s, ch, m.seq, m.state, ctx);
      continue;
    }
    s.st.setState.run(MessageState.Ready, ctx.now, m.seq, ch.id);
    s.st.bumpCount[m.state].run(-1, ch.id);
    s.st.bumpCount[MessageState.Ready].run(1, ch.id);
    wokeUp(ctx, ch.id, 1);
  }
}

export function deadLetter(s: Store, ch: ChannelRow, seq: number, state: MessageState, ctx: Ctx): void {
  const m = s.st.getMessage.get(ch.id, seq) as MessageRow;
  s.st.deleteMessage.run(ch.id, seq);
  s.st.bumpCount[state].run(-1, ch.id);
  if (ch.dead_letter_queue === null) {
    s.st.bumpDropped.run(ch.id);
    return;
  }
  const id = (s.st.nextOutbox.get() as { value: number }).value;
  // As bytes for a row of format 4, whether its body came from the log (as text from a JSON entry,
  // or bytes) or with an image (bytes): replicas keep the same outbox either way.
  const body = rowBody(s, m);
  const stored = m.seq >= s.bodiesFrom && typeof body === 'string' ? Buffer.from(body, 'utf8') : body;
  s.st.insertOutbox.run(id, ch.dead_letter_queue, ch.owner, m.message_id, stored, m.attributes, ctx.now);
}

/** Takes `byState[state]` messages off the channel's count of each state: one update per state. */
export function takeCounts(s: Store, channelId: number, byState: readonly number[]): void {
  byState.forEach((n, state) => {
    if (n > 0) s.st.bumpCount[state as MessageState].run(-n, channelId);
  });
}

/** The columns of a message a receipt handle is checked and acted on with. */
type LeaseRow = Pick<MessageRow, 'seq' | 'state' | 'lease_id' | 'delivery_count' | 'visible_at'>;

/** What a receipt handle names: a message (its sequence) under one lease. */
type Target = Omit<NonNullable<ReturnType<typeof decodeReceipt>>, 'channelId'>;

/** What each handle names in channel `ch`; null where it names no message of it (receipt_invalid). */
function targetsIn(ch: ChannelRow, receiptHandles: readonly string[]): (Target | null)[] {
  return receiptHandles.map((h) => {
    const r = decodeReceipt(h);
    return r === null || r.channelId !== ch.id ? null : r;
  });
}

/**
 * Sorts the handles by what was done to their messages, in their order: invalid where a handle names
 * no message of the channel, else acked where `done(target, i)` says so (called once per such handle,
 * in order), else stale: its message is gone or was delivered again (a newer lease), or its lease was
 * in no state to act on.
 */
function outcomeOf(receiptHandles: readonly string[], targets: readonly (Target | null)[], done: (t: Target, i: number) => boolean): HandleOutcome {
  const out: HandleOutcome = { acked: [], failed: [] };
  receiptHandles.forEach((h, i) => {
    const t = targets[i] ?? null;
    if (t === null) out.failed.push({ receiptHandle: h, code: 'receipt_invalid' });
    else if (!done(t, i)) out.failed.push({ receiptHandle: h, code: 'receipt_stale' });
    else out.acked.push(h);
  });
  return out;
}

/** Acts on each receipt handle's message in turn (`act`, given its sequence and the lease the handle names). */
function handles(ch: ChannelRow, receiptHandles: readonly string[], act: (seq: number, leaseId: number) => boolean): HandleOutcome {
  return outcomeOf(receiptHandles, targetsIn(ch, receiptHandles), (t) => act(t.seq, t.leaseId));
}

/** The message at `seq` while it is still under the lease `leaseId`, else undefined. */
function underLease(s: Store, ch: ChannelRow, seq: number, leaseId: number): LeaseRow | undefined {
  const m = s.st.getLease.get(ch.id, seq) as LeaseRow | undefined;
  return m?.lease_id === leaseId ? m : undefined;
}

/**
 * Deletes each target's message while it is under the lease the target names, as one delete per
 * handle in the handles' order would; returns the state each deleted message was in, undefined where
 * nothing was deleted. Targets that follow each other and name consecutive sequences under one lease
 * (a receive's messages, acked as received) are a run, deleted by one statement: a run names no
 * sequence twice, its range holds no other, and nothing comes between its handles, so each finds
 * what it would have found alone.
 */
function deleteUnderLeases(s: Store, channelId: number, targets: readonly (Target | null)[]): (MessageState | undefined)[] {
  const states = new Array<MessageState | undefined>(targets.length);
  for (let i = 0; i < targets.length; ) {
    const first = targets[i] ?? null;
    if (first === null) {
      i++;
      continue;
    }
    let end = i + 1;
    while (end < targets.length && targets[end]?.leaseId === first.leaseId && targets[end]!.seq === targets[end - 1]!.seq + 1) end++;
    if (end - i === 1) {
      // Deleted only while under the lease the handle names: one statement, where a read and a delete took two lookups.
      // A run of one through ackRun cost a fifth more (a range, and rows as arrays): 6.9-7.3 against 5.6-5.9 µs in process.
      states[i] = (s.st.ackMessage.get(channelId, first.seq, first.leaseId) as Pick<MessageRow, 'state'> | undefined)?.state;
    } else {
      for (const [seq, state] of s.st.ackRun.all(channelId, first.seq, targets[end - 1]!.seq, first.leaseId) as [number, MessageState][]) states[i + seq - first.seq] = state;
    }
    i = end;
  }
  return states;
}

export function ack(s: Store, ref: ChannelRef, receiptHandles: readonly string[], ctx: Ctx): Result<HandleOutcome> {
  const ch = consumable(s, ref, requireActor(ctx));
  const targets = targetsIn(ch, receiptHandles);
  const states = deleteUnderLeases(s, ch.id, targets);
  // The channel's counts change once per state, after the deletes.
  const gone = [0, 0, 0];
  const out = outcomeOf(receiptHandles, targets, (_, i) => {
    const state = states[i];
    if (state === undefined) return false;
    gone[state]!++;
    return true;
  });
  takeCounts(s, ch.id, gone);
  return ok(out);
}

/**
 * Gives each handle's lease up. A `release` (format 15) is a node's own, for a client that left before
 * its messages reached it: the delivery never happened, so it is taken back (the count one lower,
 * ready at once) and never dead-letters, even on a message's last allowed delivery.
 */
export function nack(s: Store, ref: ChannelRef, receiptHandles: readonly string[], delaySeconds: number, ctx: Ctx, release = false): Result<HandleOutcome> {
  const ch = consumable(s, ref, requireActor(ctx));
  return ok(
    handles(ch, receiptHandles, (seq, leaseId) => {
      const m = underLease(s, ch, seq, leaseId);
      if (m?.state !== MessageState.Leased) return false;
      if (release) {
        s.st.giveBack.run(ctx.now, m.seq, ch.id);
        s.st.bumpCount[MessageState.Leased].run(-1, ch.id);
        s.st.bumpCount[MessageState.Ready].run(1, ch.id);
        wokeUp(ctx, ch.id, 1);
        return true;
      }
      if (ch.max_deliveries !== null && m.delivery_count >= ch.max_deliveries) {
        deadLetter(s, ch, m.seq, m.state, ctx);
        return true;
      }
      // Giving the lease up makes the handle stale: the next delivery gets a new one.
      const state = delaySeconds > 0 ? MessageState.Delayed : MessageState.Ready;
      s.st.release.run(state, ctx.now + delaySeconds * 1000, m.seq, ch.id);
      s.st.bumpCount[m.state].run(-1, ch.id);
      s.st.bumpCount[state].run(1, ch.id);
      if (state === MessageState.Ready) wokeUp(ctx, ch.id, 1);
      else ctx.retimed.add(ch.id);
      return true;
    }),
  );
}

export function extendLeases(s: Store, ref: ChannelRef, receiptHandles: readonly string[], vtSeconds: number, ctx: Ctx): Result<HandleOutcome> {
  const ch = consumable(s, ref, requireActor(ctx));
  return ok(
    handles(ch, receiptHandles, (seq, leaseId) => {
      const m = underLease(s, ch, seq, leaseId);
      // An expired lease can no longer be extended: the message is visible to others already.
      if (m === undefined || !leaseLive(m, ctx.now)) return false;
      s.st.setState.run(MessageState.Leased, ctx.now + vtSeconds * 1000, m.seq, ch.id);
      // Long polls on the channel look again: at once for a lease ended now (0 s, SQS's way to let
      // a message go), else when it ends. They kept the old end, up to their 5 s guard late
      // (review of 2026-12-07).
      if (vtSeconds === 0) wokeUp(ctx, ch.id, 1);
      else ctx.retimed.add(ch.id);
      return true;
    }),
  );
}
