// The checker of a chaos run, in the spirit of Jepsen's total-queue checker: a pure function over a
// history (history.ts) that answers what went wrong.
//
//   lost        an acknowledged send (publish) whose message was never delivered from its queue (from
//               each subscription its filter matched). A write that failed (503 "not applied", 4xx)
//               or whose outcome is unknown need not be delivered.
//   unexpected  a delivery of a message that was never attempted on that channel, or delivered under
//               another messageId than the one its 201 answered.
//   duplicates  a message delivered more than once. Counted; each redelivery must be explained by the
//               end of the previous delivery's lease: its lease expired (no ack, or an ack that failed or
//               whose outcome is unknown) or it was nacked. A delivery after a successful ack of an
//               earlier one, two deliveries with the same deliveryCount, two copies (messageIds) of one
//               message, or a redelivery seen before the previous lease could have ended are unexplained.
//   ordering    per channel, first deliveries (deliveryCount 1) follow sequence order across receives
//               that do not overlap in time (see checkOrdering for why this holds).
//   replicas    after quiescence, each node's own replica (?consistency=stale) shows the same stats
//               for every channel.
//   server      answers a correct client must never get (a 500, a 409 on its own Idempotency-Key...).
import type { ChannelId, ChannelStats, ClientOp, Delivery, History, ReceiveOp, SettleOp } from './history.js';

/** A delivery seen by the client, with the receive that returned it. */
interface Seen {
  d: Delivery;
  op: ReceiveOp;
}

export interface Report {
  ok: boolean;
  counts: {
    ops: number;
    sends: Record<'ok' | 'fail' | 'unknown', number>;
    publishes: Record<'ok' | 'fail' | 'unknown', number>;
    receives: Record<'ok' | 'fail' | 'unknown', number>;
    settles: Record<'ok' | 'fail' | 'unknown', number>;
    deliveries: number;
    distinctDelivered: number;
    faults: number;
    /** Writes of unknown (or failed) outcome that were delivered all the same. */
    unknownWritesDelivered: number;
  };
  lost: { channel: ChannelId; body: string; opId: number }[];
  unexpected: { channel: ChannelId; body: string; receiveOpId: number; why: string }[];
  duplicates: {
    /** Deliveries beyond the first, over all channels and messages. */
    total: number;
    explained: number;
    byReason: Record<string, number>;
    unexplained: { channel: ChannelId; body: string; why: string; deliveries: { opId: number; deliveryCount: number; start: number; end: number; messageId: string }[] }[];
  };
  ordering: { channelsChecked: number; violations: { channel: ChannelId; earlierOpId: number; earlierSeq: number; laterOpId: number; laterSeq: number; body: string }[] };
  replicas: { compared: number; divergent: { phase: string; channel: ChannelId; views: (ChannelStats | null)[] }[] };
  serverErrors: { opId: number; type: string; status: number; error?: string }[];
  /** One line per failed check. */
  failures: string[];
}

/** Slack for comparing times of the test process with the leader's lease clock (same machine). */
export const LEASE_SLACK_MS = 250;

const tally = (): Record<'ok' | 'fail' | 'unknown', number> => ({ ok: 0, fail: 0, unknown: 0 });

export function check(h: History): Report {
  const sends = h.ops.filter((o) => o.type === 'send');
  const publishes = h.ops.filter((o) => o.type === 'publish');
  const receives = h.ops.filter((o): o is ReceiveOp => o.type === 'receive');
  const settles = h.ops.filter((o): o is SettleOp => o.type === 'ack' || o.type === 'nack');

  const counts: Report['counts'] = {
    ops: h.ops.length,
    sends: tally(),
    publishes: tally(),
    receives: tally(),
    settles: tally(),
    deliveries: 0,
    distinctDelivered: 0,
    faults: h.faults.length,
    unknownWritesDelivered: 0,
  };
  for (const o of sends) counts.sends[o.outcome]++;
  for (const o of publishes) counts.publishes[o.outcome]++;
  for (const o of receives) counts.receives[o.outcome]++;
  for (const o of settles) counts.settles[o.outcome]++;

  // What was attempted on each channel: body -> the write op.
  const attempted = new Map<ChannelId, Map<string, ClientOp & { type: 'send' | 'publish' }>>();
  const attemptedOn = (ch: ChannelId): Map<string, ClientOp & { type: 'send' | 'publish' }> => {
    let m = attempted.get(ch);
    if (m === undefined) attempted.set(ch, (m = new Map()));
    return m;
  };
  for (const o of sends) attemptedOn(o.channel).set(o.body, o);
  for (const o of publishes) for (const ch of o.expected) attemptedOn(ch).set(o.body, o);

  // What was delivered on each channel: body -> deliveries (from receives that answered).
  const delivered = new Map<ChannelId, Map<string, Seen[]>>();
  for (const op of receives) {
    if (op.outcome !== 'ok') continue;
    let m = delivered.get(op.channel);
    if (m === undefined) delivered.set(op.channel, (m = new Map()));
    for (const d of op.messages) {
      counts.deliveries++;
      const list = m.get(d.body) ?? [];
      list.push({ d, op });
      m.set(d.body, list);
    }
  }
  for (const m of delivered.values()) counts.distinctDelivered += m.size;

  // lost
  const lost: Report['lost'] = [];
  for (const [ch, m] of attempted) {
    const got = delivered.get(ch);
    for (const [body, op] of m) {
      const n = got?.get(body)?.length ?? 0;
      if (op.outcome === 'ok' && n === 0) lost.push({ channel: ch, body, opId: op.id });
      if (op.outcome !== 'ok' && n > 0) counts.unknownWritesDelivered++;
    }
  }

  // unexpected
  const unexpected: Report['unexpected'] = [];
  for (const [ch, m] of delivered) {
    for (const [body, seen] of m) {
      const w = attempted.get(ch)?.get(body);
      if (w === undefined) {
        for (const s of seen) unexpected.push({ channel: ch, body, receiveOpId: s.op.id, why: 'never sent to this channel' });
        continue;
      }
      if (w.outcome === 'ok' && w.messageId !== undefined) {
        for (const s of seen) {
          if (s.d.messageId !== w.messageId) unexpected.push({ channel: ch, body, receiveOpId: s.op.id, why: `delivered as ${s.d.messageId}, acknowledged as ${w.messageId}` });
        }
      }
    }
  }

  // duplicates
  // Receipt handles are unique within a channel only (two partitions may issue the same one).
  const handleKey = (ch: ChannelId, rh: string): string => `${ch}\u0000${rh}`;
  const settlesOf = new Map<string, SettleOp[]>();
  for (const s of settles) {
    for (const rh of s.receiptHandles) {
      const list = settlesOf.get(handleKey(s.channel, rh)) ?? [];
      list.push(s);
      settlesOf.set(handleKey(s.channel, rh), list);
    }
  }
  const duplicates: Report['duplicates'] = { total: 0, explained: 0, byReason: {}, unexplained: [] };
  for (const [ch, m] of delivered) {
    for (const [body, seen] of m) {
      if (seen.length < 2) continue;
      duplicates.total += seen.length - 1;
      const sorted = [...seen].sort((a, b) => a.d.deliveryCount - b.d.deliveryCount || a.op.start - b.op.start);
      const fail = (why: string): void => {
        duplicates.unexplained.push({
          channel: ch,
          body,
          why,
          deliveries: sorted.map((s) => ({ opId: s.op.id, deliveryCount: s.d.deliveryCount, start: s.op.start, end: s.op.end, messageId: s.d.messageId })),
        });
      };
      const ids = new Set(sorted.map((s) => s.d.messageId));
      if (ids.size > 1) {
        fail(`stored more than once: messageIds ${[...ids].join(', ')}`);
        continue;
      }
      for (let i = 0; i + 1 < sorted.length; i++) {
        const prev = sorted[i]!;
        const next = sorted[i + 1]!;
        const why = explainRedelivery(prev, next, settlesOf.get(handleKey(ch, prev.d.receiptHandle)) ?? []);
        if (why.ok) {
          duplicates.explained++;
          duplicates.byReason[why.reason] = (duplicates.byReason[why.reason] ?? 0) + 1;
        } else {
          fail(why.reason);
          break;
        }
      }
    }
  }

  const ordering = checkOrdering(h, receives);

  // replicas: the last round of each (phase, channel)
  const lastRound = new Map<string, (typeof h.finalReads)[number]>();
  for (const r of h.finalReads) lastRound.set(`${r.phase}\u0000${r.channel}`, r);
  const replicas: Report['replicas'] = { compared: lastRound.size, divergent: [] };
  for (const r of lastRound.values()) {
    const key = (s: ChannelStats | null): string => (s === null ? 'none' : `${s.visible}/${s.inFlight}/${s.delayed}/${s.dropped}`);
    const keys = new Set(r.views.map(key));
    if (keys.size !== 1 || keys.has('none')) replicas.divergent.push({ phase: r.phase, channel: r.channel, views: r.views });
  }

  // answers a well-behaved client must never get
  const serverErrors: Report['serverErrors'] = [];
  for (const o of h.ops) {
    const bad = o.attempts.filter(([, , , st]) => st >= 500 && st !== 503 && st !== 504);
    const badFinal = o.outcome === 'fail' && o.status >= 400 && o.status < 500;
    if (bad.length > 0 || badFinal) serverErrors.push({ opId: o.id, type: o.type, status: bad[0]?.[3] ?? o.status, ...(o.error === undefined ? {} : { error: o.error }) });
  }

  const failures: string[] = [];
  if (lost.length > 0) failures.push(`lost: ${lost.length} acknowledged message(s) never delivered`);
  if (unexpected.length > 0) failures.push(`unexpected: ${unexpected.length} delivery(ies) of messages never sent (or under another messageId)`);
  if (duplicates.unexplained.length > 0) failures.push(`duplicates: ${duplicates.unexplained.length} message(s) redelivered without a lease expiry or nack to explain it`);
  if (ordering.violations.length > 0) failures.push(`ordering: ${ordering.violations.length} first delivery(ies) out of sequence order`);
  if (replicas.divergent.length > 0) failures.push(`replicas: ${replicas.divergent.length} channel read(s) where the nodes' replicas disagree`);
  if (serverErrors.length > 0) failures.push(`server: ${serverErrors.length} op(s) got an answer a correct client must not get (5xx other than 503/504, or a 4xx)`);
  return { ok: failures.length === 0, counts, lost, unexpected, duplicates, ordering, replicas, serverErrors, failures };
}

/**
 * Why `next` (a later delivery of the same message) may happen after `prev`: the lease of `prev` must
 * have ended first, by a nack or by expiry; a successful ack of `prev` ends the message for good.
 * Times: a lease starts when its receive applies (after the receive op started) and runs for the
 * visibility timeout; `next` could only be returned once that lease ended, so `next`'s receive must
 * end after that (with LEASE_SLACK_MS for the leader's clock vs ours).
 */
function explainRedelivery(prev: Seen, next: Seen, settles: SettleOp[]): { ok: boolean; reason: string } {
  if (next.d.deliveryCount <= prev.d.deliveryCount) {
    return { ok: false, reason: `delivered twice with deliveryCount ${prev.d.deliveryCount} (ops ${prev.op.id} and ${next.op.id})` };
  }
  const acked = settles.find((s) => s.type === 'ack' && s.outcome === 'ok' && s.acked.includes(prev.d.receiptHandle));
  if (acked !== undefined) {
    return { ok: false, reason: `delivered again (op ${next.op.id}, deliveryCount ${next.d.deliveryCount}) after a successful ack (op ${acked.id}) of delivery ${prev.d.deliveryCount} (op ${prev.op.id})` };
  }
  const expiry = prev.op.start + prev.op.visibilityTimeoutSeconds * 1000;
  const nack = settles.filter((s) => s.type === 'nack' && s.outcome !== 'fail' && (s.outcome === 'unknown' || s.acked.includes(prev.d.receiptHandle)));
  const nackAt = nack.length === 0 ? Infinity : Math.min(...nack.map((s) => s.start));
  const releasedBy = Math.min(expiry, nackAt);
  if (next.op.end + LEASE_SLACK_MS < releasedBy) {
    return { ok: false, reason: `redelivered (op ${next.op.id}, ended ${next.op.end}) before the lease of op ${prev.op.id} could have ended (${releasedBy})` };
  }
  if (nackAt <= expiry) return { ok: true, reason: 'nack' };
  const ackTried = settles.some((s) => s.type === 'ack');
  return { ok: true, reason: ackTried ? 'lease-expiry (ack failed or unknown)' : 'lease-expiry' };
}

/**
 * Per channel: if receive A ended before receive B started, every first delivery (deliveryCount 1)
 * in B has a higher sequence than every first delivery in A.
 *
 * Why this holds (for channels without delays and without dead-lettering, which is what fifoCheck
 * marks): sequences are assigned when a send applies, in log order, so a message m with a sequence
 * lower than some message A returned had already been applied when A applied. A first delivery of m
 * in B means m had never been leased before B, and with no delay m was visible all that time; so
 * when A applied (before B: A ended before B started, and the partition's log is linear) m was
 * visible and older than a message A took. Visible messages go oldest sequence first, so A should
 * have taken m. Redeliveries (deliveryCount > 1) are excluded: an expired lease makes an old message
 * visible again behind newer ones. Receives of unknown outcome need not be known: they can only raise
 * deliveryCounts, which only removes deliveries from the check. Delays would make an old message
 * invisible while newer ones go out, and dead-lettering moves messages to another queue with new
 * sequences; both break the premise.
 */
function checkOrdering(h: History, receives: ReceiveOp[]): Report['ordering'] {
  const out: Report['ordering'] = { channelsChecked: 0, violations: [] };
  for (const ch of h.channels) {
    if (!ch.fifoCheck) continue;
    out.channelsChecked++;
    const ops = receives
      .filter((o) => o.channel === ch.id && o.outcome === 'ok')
      .map((o) => ({ op: o, firsts: o.messages.filter((m) => m.deliveryCount === 1) }))
      .filter((x) => x.firsts.length > 0);
    const byEnd = [...ops].sort((a, b) => a.op.end - b.op.end);
    const byStart = [...ops].sort((a, b) => a.op.start - b.op.start);
    let j = 0;
    let maxSeq = -Infinity;
    let maxOp: ReceiveOp | null = null;
    for (const b of byStart) {
      while (j < byEnd.length && byEnd[j]!.op.end < b.op.start) {
        for (const m of byEnd[j]!.firsts) {
          if (m.sequence > maxSeq) {
            maxSeq = m.sequence;
            maxOp = byEnd[j]!.op;
          }
        }
        j++;
      }
      for (const m of b.firsts) {
        if (m.sequence <= maxSeq && maxOp !== null) {
          out.violations.push({ channel: ch.id, earlierOpId: maxOp.id, earlierSeq: maxSeq, laterOpId: b.op.id, laterSeq: m.sequence, body: m.body });
        }
      }
    }
  }
  return out;
}
