// Housekeeping: the proposals no client request makes, which a node makes for the partitions it
// leads, once a pass (every two election timeouts, NodeHost.onPass): retention and dead-lettering by
// sweeps, an idle partition's clock kept up to date, dead letters carried to their queue's
// partition, and the log format raised once every voter reads a newer one. Above the host: it drives
// the host through what the host offers (replicas, proposals, the peers' formats), and the host
// knows nothing of it.
import type { Command, OutboxRow } from '../store/broker/index.js';
import { BOUNDED_CLOCK_STEP, MAX_CLOCK_STEP_MS, leavingLook } from '../store/broker/index.js';
import { ClockBehindError, NotCommittedError, NotLeaderError, OutcomeUnknownError, ReplicaClosedError } from './errors.js';
import type { NodeHost } from './host.js';
import type { PartitionReplica } from './replica.js';
import { partitionOf } from './routing.js';

/**
 * Whether a proposal failed only because leadership moved (an election, a transfer, the node
 * stopping), or waits for a partition's clock to catch up after an outage: the next pass proposes
 * it again, as every start of a cluster sees while its first elections settle. Anything else (a
 * wait that ran out, a refusal) is worth a warning.
 */
function leadershipMoved(err: unknown): boolean {
  return err instanceof ClockBehindError || err instanceof NotLeaderError || err instanceof NotCommittedError || err instanceof ReplicaClosedError || (err instanceof OutcomeUnknownError && !err.timedOut);
}

/**
 * Sweeps a leader proposes at once to bring a partition's clock up to date, each a step: an hour's
 * worth, and the next hour's once they are applied, at the next tick. Clients' commands wait
 * meanwhile (Router.holdWhileClockBehind), so a cluster down for a day catches up in seconds.
 */
const CLOCK_CATCH_UP = 60;

/** Outbox rows read per page, and letters one delivery carries at most. */
const OUTBOX_PAGE = 100;
/** A pass reads where at most this many letters of a partition's outbox go. */
const OUTBOX_ROWS_PER_PASS = 10_000;
/** Bytes of dead letters' bodies a node's deliveries in flight hold at most: in all, and to one partition. */
const OUTBOX_BYTES_IN_FLIGHT = 16 * 1024 * 1024;
const TARGET_BYTES_IN_FLIGHT = 4 * 1024 * 1024;
/** Bytes of bodies one delivery carries at most (one letter always). */
const DELIVERY_BYTES = 1024 * 1024;
/** How long (ms) the letters for a partition whose delivery failed are left for the others. */
const TARGET_BACKOFF_MS = 5_000;

/** Parked polls of nodes that do not answer taken out per partition and pass. */
const UNHEARD_POLLS_PER_PASS = 100;

export class Housekeeping {
  /** Partitions whose format.raise is proposed and not yet applied. */
  private readonly raisingFormat = new Set<number>();
  /** Partitions whose last format.raise applied as a refusal: tried again on passes only, not every tick. */
  private readonly raiseRefused = new Set<number>();
  /** Partitions whose clock-keeping sweeps (keepClocks) are in flight. */
  private readonly keepingClock = new Set<number>();
  /** Outbox rows being delivered, as "partition/id": not sent twice at once. */
  private readonly forwarding = new Set<string>();
  /**
   * Partitions of dead-letter queues whose last delivery failed, until when (the cluster clock) their
   * letters are left for the others (deadLettersToSend).
   */
  private readonly backOff = new Map<number, number>();
  /** Where each partition's next pass reads its outbox from (deadLettersToSend): the last letter it read, 0 for the start. */
  private readonly outboxCursor = new Map<number, number>();
  /** Bytes of dead letters' bodies in deliveries not yet answered: in all, and by the partition they go to. */
  private bytesInFlight = 0;
  private readonly targetBytes = new Map<number, number>();
  /** Parked polls of nodes that do not answer, whose look is in flight, as "partition/tag". */
  private readonly lookingAt = new Set<string>();

  /** Starts keeping `host`'s partitions: on each of its passes from now on. */
  constructor(private readonly host: NodeHost) {
    host.onPass(() => this.pass());
    // A raise waits for no pass: a new cluster's partitions (format 1) would take writes under format
    // 1's rules until then (no fan-out limits, no bounded clock step), 2 s in production. Nor does a
    // clock behind: clients' writes wait for it.
    host.onTick(() => {
      this.raiseFormats(false);
      this.keepClocks();
    });
  }

  pass(): void {
    this.sweep();
    this.forwardDeadLetters();
    this.raiseFormats(true);
    this.takeOutUnheardPolls();
  }

  /**
   * Long polls parked by a node whose replica does not answer this leader (leadership's
   * notAnswering: down, cut off, stalled) are taken out of the state: it applies no delivery
   * meanwhile, so each would take the next messages sent to its channel, before any poll that can
   * answer, and keep them leased to nobody until their visibility timeout, counted as a delivery.
   * Each gets the look its poll takes when its client leaves (ms 0, leave), proposed as its user. A
   * poll served before its look keeps what it was given under its lease: its node may yet apply that
   * delivery and answer it (docs/api.md, "Long polling"). A poll of a node that was only slow, or cut
   * off, finds itself gone at its next look, and answers empty.
   */
  private takeOutUnheardPolls(): void {
    const now = this.host.clock.now();
    for (const r of this.host.replicas) {
      if (r.halted !== null || !r.state.isOpen()) continue;
      for (const peer of this.host.leadership.notAnswering(r.partition)) {
        for (const poll of r.state.waitingTagged(`${peer}.`, `${peer}/`, now, UNHEARD_POLLS_PER_PASS)) {
          const key = `${r.partition}/${poll.tag}`;
          if (this.lookingAt.has(key)) continue;
          this.lookingAt.add(key);
          r.propose(poll.actor, leavingLook(poll))
            .catch((err: unknown) => this.retry(err, { partition: r.partition, peer }, "a long poll of a node that does not answer was not taken out; will retry"))
            .finally(() => this.lookingAt.delete(key));
        }
      }
    }
  }

  /** A proposal of this pass failed; a later pass tries again: logged at debug when only leadership moved. */
  private retry(err: unknown, fields: object, msg: string): void {
    const logger = this.host.opts.logger;
    if (leadershipMoved(err)) logger?.debug?.({ err: String(err), ...fields }, msg);
    else logger?.warn({ err: String(err), ...fields }, msg);
  }

  /**
   * Retention and dead-lettering must happen even when nobody receives: a leader whose partition has
   * expired messages or exhausted leases proposes a sweep (a replicated command like any other).
   * Judged at the time the sweep would be stamped with (the nodes' median), not this node's own wall
   * clock: one an hour ahead would propose a sweep that does nothing on every pass.
   */
  private sweep(): void {
    const now = this.host.clock.now();
    for (const r of this.host.replicas) {
      if (!r.isLeader() || !r.state.needsSweep(now)) continue;
      r.propose(null, { type: 'sweep' }).catch((err: unknown) => this.retry(err, { partition: r.partition }, 'sweep not applied'));
    }
  }

  /**
   * From format 8 an entry moves a partition's clock at most MAX_CLOCK_STEP_MS, so a partition that
   * nothing was written to for longer would fall behind: its next lease would be counted from a
   * clock in the past and end early. So a leader whose partition's clock is half a step behind its
   * own (the nodes' median) proposes sweeps, up to CLOCK_CATCH_UP of them at a time, each moving the
   * clock one step (after a whole cluster was down for hours). Looked at every tick.
   */
  private keepClocks(): void {
    const now = this.host.clock.now();
    for (const r of this.host.replicas) {
      // Not again while the last pass's sweeps are in flight.
      if (!r.isLeader() || r.state.format() < BOUNDED_CLOCK_STEP || this.keepingClock.has(r.partition)) continue;
      const behind = now - r.state.clock();
      if (behind <= MAX_CLOCK_STEP_MS / 2) continue;
      const sweeps: Promise<unknown>[] = [];
      for (let i = Math.min(CLOCK_CATCH_UP, Math.ceil(behind / MAX_CLOCK_STEP_MS)); i > 0; i--) sweeps.push(r.propose(null, { type: 'sweep' }));
      this.keepingClock.add(r.partition);
      void Promise.allSettled(sweeps).then((done) => {
        this.keepingClock.delete(r.partition);
        const failed = done.find((d) => d.status === 'rejected');
        if (failed !== undefined) this.retry(failed.reason, { partition: r.partition }, "the partition's clock did not move yet; will retry");
      });
    }
  }

  /**
   * Moves dead letters from each led partition's outbox to their dead-letter queue's partition, then
   * clears them. At least once: a retry after a lost answer is deduplicated by the outbox row it
   * names (`source`; by the original message id before format 12, which a build before it keys by).
   */
  private forwardDeadLetters(): void {
    const now = this.host.clock.now();
    for (const r of this.host.replicas) {
      if (!r.isLeader()) continue;
      for (const batch of this.deadLettersToSend(r, now)) this.deliverDeadLetters(r, batch);
    }
  }

  /**
   * The dead letters of `r`'s outbox to send now, in batches of one queue each. Where they go is read
   * page by page from where the last pass stopped (`outboxCursor`), round and round, past the letters
   * in flight and those for a partition whose last delivery failed within TARGET_BACKOFF_MS, so that
   * neither holds back the letters behind them: at most OUTBOX_ROWS_PER_PASS of them a pass. Bodies
   * are read only for the letters taken, while the node's deliveries in flight hold less than
   * OUTBOX_BYTES_IN_FLIGHT of them, and those to one partition less than TARGET_BYTES_IN_FLIGHT (a
   * partition that does not answer holds its deliveries for the forward's timeout).
   */
  private deadLettersToSend(r: PartitionReplica, now: number): OutboxRow[][] {
    const partitions = this.host.opts.partitions;
    const batches = new Map<string, { rows: OutboxRow[]; bytes: number }[]>();
    const taking = new Map<number, number>();
    let bytes = this.bytesInFlight;
    let after = this.outboxCursor.get(r.partition) ?? 0;
    let read = 0;
    while (read < OUTBOX_ROWS_PER_PASS && bytes < OUTBOX_BYTES_IN_FLIGHT) {
      const page = r.state.outboxHeads(OUTBOX_PAGE, after);
      for (const head of page) {
        if (bytes >= OUTBOX_BYTES_IN_FLIGHT) break;
        after = head.id;
        read++;
        const target = partitionOf(head.targetQueue, partitions);
        if (this.forwarding.has(`${r.partition}/${head.id}`) || (this.backOff.get(target) ?? -Infinity) > now) continue;
        const toTarget = (this.targetBytes.get(target) ?? 0) + (taking.get(target) ?? 0);
        if (toTarget >= TARGET_BYTES_IN_FLIGHT) continue;
        const row = r.state.outboxLetter(head.id);
        if (row === null) continue;
        const key = JSON.stringify([row.targetQueue, row.expectedOwner]);
        let queue = batches.get(key);
        if (queue === undefined) batches.set(key, (queue = []));
        let batch = queue[queue.length - 1];
        // One delivery carries at most a page of letters and DELIVERY_BYTES of bodies (one letter
        // always): as a command forwarded in JSON, a hundred bodies of 256 KiB of escaped control
        // characters would pass the internal routes' limit, and fail on every pass.
        if (batch === undefined || batch.rows.length >= OUTBOX_PAGE || (batch.rows.length > 0 && batch.bytes + row.body.length > DELIVERY_BYTES)) queue.push((batch = { rows: [], bytes: 0 }));
        batch.rows.push(row);
        batch.bytes += row.body.length;
        bytes += row.body.length;
        taking.set(target, (taking.get(target) ?? 0) + row.body.length);
      }
      // The end of the outbox: the next pass starts again from its oldest letter.
      if (page.length < OUTBOX_PAGE) {
        after = 0;
        break;
      }
    }
    this.outboxCursor.set(r.partition, after);
    return [...batches.values()].flat().map((b) => b.rows);
  }

  /** Delivers `group` (letters to one queue) to its queue's partition, then clears them from `r`'s outbox. */
  private deliverDeadLetters(r: PartitionReplica, group: OutboxRow[]): void {
    const first = group[0]!;
    const target = partitionOf(first.targetQueue, this.host.opts.partitions);
    const ids = group.map((g) => g.id);
    const bytes = group.reduce((n, g) => n + g.body.length, 0);
    for (const id of ids) this.forwarding.add(`${r.partition}/${id}`);
    this.bytesInFlight += bytes;
    this.targetBytes.set(target, (this.targetBytes.get(target) ?? 0) + bytes);
    const deliver: Command = {
      type: 'deadletter.deliver',
      queue: first.targetQueue,
      expectedOwner: first.expectedOwner,
      messages: group.map((g) => ({ messageId: g.messageId, body: g.body, attributes: g.attributes, source: `${r.partition}/${g.id}` })),
    };
    this.host
      .proposeSystem(target, deliver)
      .then(
        (res) => {
          // Refused (not applied as a delivery): the letters stay for the next pass. Cleared
          // whatever the answer, they were lost unseen (review of 2026-12-07). A dead-letter queue
          // that is gone answers ok, with the letters counted as dropped.
          const refused = res as { ok?: unknown; code?: unknown; detail?: unknown } | null;
          if (refused?.ok === false) throw new Error(`dead letters refused by queue '${first.targetQueue}': ${String(refused.code)}: ${String(refused.detail)}`);
          this.backOff.delete(target);
        },
        (err: unknown) => {
          // The letters for that partition wait; the others go on (deadLettersToSend).
          this.backOff.set(target, this.host.clock.now() + TARGET_BACKOFF_MS);
          throw err;
        },
      )
      .then(() => r.propose(null, { type: 'outbox.done', ids }))
      .catch((err: unknown) => this.retry(err, { partition: r.partition }, 'dead letters not delivered yet; will retry'))
      .finally(() => {
        for (const id of ids) this.forwarding.delete(`${r.partition}/${id}`);
        this.bytesInFlight -= bytes;
        const left = (this.targetBytes.get(target) ?? 0) - bytes;
        if (left > 0) this.targetBytes.set(target, left);
        else this.targetBytes.delete(target);
      });
  }

  /**
   * Raises each partition led here to the newest log format every voter reads (format.ts), known from
   * their Raft requests. A voter not heard from since this node started holds every raise back. On
   * every tick (a partition is raised a tick after its first leader heard every voter), and on passes
   * (`pass`), which alone try again a raise its apply refused.
   */
  private raiseFormats(pass: boolean): void {
    let target = this.host.readable;
    for (const v of this.host.opts.voters) {
      if (v === this.host.opts.self) continue;
      const f = this.host.peerFormat(v);
      if (f === undefined) return;
      target = Math.min(target, f);
    }
    for (const r of this.host.replicas) {
      if (r.state.format() >= target || this.raisingFormat.has(r.partition) || (!pass && this.raiseRefused.has(r.partition)) || !r.isLeader()) continue;
      this.raisingFormat.add(r.partition);
      r.propose(null, { type: 'format.raise', format: target })
        .then((res) => {
          if (res.ok) return void this.raiseRefused.delete(r.partition);
          this.raiseRefused.add(r.partition);
          this.host.opts.logger?.warn({ partition: r.partition, format: target, code: res.code, detail: res.detail }, 'log format raise refused; will retry');
        })
        .catch((err: unknown) => this.retry(err, { partition: r.partition, format: target }, 'log format not raised yet; will retry'))
        .finally(() => this.raisingFormat.delete(r.partition));
    }
  }
}
