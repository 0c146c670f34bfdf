// A seeded stream of broker commands over a small world (three users, two queues, a topic), for the
// determinism, invariant and crash tests. Commands that need state (ack a receipt handle) are made
// from what earlier commands answered, so the same seed always yields the same log.
import { FORMAT, SHARED_PUBLISHES, UNDELIVERED_RELEASED, encodeEnvelope, type ApplyEntry, type Applied, type Command, type Envelope } from '../../../src/store/broker/index.js';
import { Rng } from '../../raft/sim/rng.js';

export const USERS = ['alice', 'bob', 'carol'] as const;
export const QUEUES = ['q1', 'q2', 'dlq'] as const;

/** Makes the next envelope from the answers so far. */
export class CommandStream {
  private readonly rng: Rng;
  time = 1_700_000_000_000;
  index = 0;
  private handles: { queue: string; handle: string }[] = [];
  private seq = 0;

  /** `format`: the one the stream raises the partition to first and encodes its entries in. */
  constructor(
    seed: number,
    readonly format = FORMAT,
  ) {
    this.rng = new Rng(seed);
  }

  /** The setup every stream starts with: users, queues with grants, a topic with subscriptions. */
  setup(): Envelope[] {
    const env = (actor: string, command: Command): Envelope => ({ time: this.time, actor, command });
    // The partition is raised to the stream's format first, so the stream's messages use its encoding.
    const out: Envelope[] = [{ time: this.time, actor: null, command: { type: 'format.raise', format: this.format } }];
    out.push(...USERS.map((u) => env(u, { type: 'user.register', username: u, passwordHash: `hash-${u}` })));
    out.push(env('alice', { type: 'queue.create', name: 'dlq', visibilityTimeoutSeconds: 30, maxDeliveries: null, deadLetterQueue: null, delaySeconds: 0, retentionSeconds: 3600 }));
    out.push(env('alice', { type: 'queue.create', name: 'q1', visibilityTimeoutSeconds: 5, maxDeliveries: 3, deadLetterQueue: 'dlq', delaySeconds: 0, retentionSeconds: 600 }));
    out.push(env('bob', { type: 'queue.create', name: 'q2', visibilityTimeoutSeconds: 10, maxDeliveries: 2, deadLetterQueue: null, delaySeconds: 1, retentionSeconds: 3600 }));
    out.push(env('alice', { type: 'grant.put', kind: 'queue', name: 'q1', username: 'bob', actions: ['send', 'receive'] }));
    out.push(env('alice', { type: 'topic.create', name: 't1', subscribe: 'anyone' }));
    out.push(env('bob', { type: 'subscription.create', topic: 't1', name: 's-all', visibilityTimeoutSeconds: 5, maxDeliveries: null, deadLetterQueue: null, filter: null }));
    out.push(env('carol', { type: 'subscription.create', topic: 't1', name: 's-red', visibilityTimeoutSeconds: 5, maxDeliveries: 2, deadLetterQueue: null, filter: { color: 'red' } }));
    return out;
  }

  /** Feeds the answer of an applied command back, to collect receipt handles. */
  observe(env: Envelope, applied: Applied): void {
    const c = env.command;
    // Deliveries to parked polls name no channel here; acks of them are tried on any.
    for (const d of applied.delivered) for (const m of d.messages) this.handles.push({ queue: '?', handle: m.receiptHandle });
    if (c.type !== 'receive' || !applied.result.ok) return;
    const name = 'queue' in c.channel ? c.channel.queue : `${c.channel.topic}/${c.channel.subscription}`;
    const v = applied.result.value as { messages: { receiptHandle: string }[] };
    for (const m of v.messages) this.handles.push({ queue: name, handle: m.receiptHandle });
    if (this.handles.length > 200) this.handles = this.handles.slice(-200);
  }

  private message(): { body: string; attributes: Record<string, string>; delaySeconds?: number; deduplicationId?: string } {
    const m: { body: string; attributes: Record<string, string>; delaySeconds?: number; deduplicationId?: string } = {
      body: `m${this.seq++}`,
      attributes: this.rng.chance(0.5) ? { color: this.rng.pick(['red', 'blue']) } : {},
    };
    if (this.rng.chance(0.1)) m.delaySeconds = this.rng.int(4);
    if (this.rng.chance(0.2)) m.deduplicationId = `d${this.rng.int(20)}`;
    return m;
  }

  next(): Envelope {
    // Time moves forward mostly, sometimes a lot, sometimes backwards (a new leader's slower clock).
    const r = this.rng.next();
    this.time += r < 0.05 ? -2000 : r < 0.1 ? 60_000 : this.rng.int(1500);
    const actor = this.rng.pick(USERS);
    const queue = this.rng.pick(QUEUES);
    const sub = this.rng.chance(0.5) ? { topic: 't1', subscription: 's-all' } : { topic: 't1', subscription: 's-red' };
    const channel = this.rng.chance(0.7) ? { queue } : sub;
    const pickHandles = (): string[] => {
      const hs = this.handles.filter(() => this.rng.chance(0.3)).map((h) => h.handle);
      if (this.rng.chance(0.1)) hs.push('bm9wZQ');
      return hs.length > 0 ? hs : ['MS4xLjE'];
    };
    const k = this.rng.int(100);
    let command: Command;
    if (k < 30) command = { type: 'queue.send', name: queue, messages: Array.from({ length: this.rng.range(1, 5) }, () => this.message()) };
    else if (k < 40) {
      command = { type: 'topic.publish', name: 't1', messages: [this.message()] };
      // Publishes sharing an entry (format 11): several, each of one to three messages.
      if (this.format >= SHARED_PUBLISHES && this.rng.chance(0.5)) {
        const split = Array.from({ length: this.rng.range(2, 4) }, () => this.rng.range(1, 3));
        command = { type: 'topic.publish', name: 't1', messages: split.flatMap((n) => Array.from({ length: n }, () => this.message())), split };
      }
    }
    else if (k < 60) {
      command = { type: 'receive', channel, maxMessages: this.rng.range(1, 10), visibilityTimeoutSeconds: this.rng.chance(0.3) ? this.rng.range(1, 20) : null };
      // Long polls parking in the state (format 3), some of them looking again or for the last time.
      if (this.rng.chance(0.6)) command = { ...command, wait: { tag: `w${this.rng.int(8)}`, ms: this.rng.chance(0.1) ? 0 : this.rng.int(20_000), again: this.rng.chance(0.15) } };
    }
    else if (k < 75) command = { type: 'ack', channel, receiptHandles: pickHandles() };
    else if (k < 82) {
      command = { type: 'nack', channel, receiptHandles: pickHandles(), delaySeconds: this.rng.int(3) };
      // A node's release of a delivery no client saw (format 15).
      if (this.format >= UNDELIVERED_RELEASED && this.rng.chance(0.3)) command = { ...command, delaySeconds: 0, release: true };
    }
    else if (k < 87) command = { type: 'lease', channel, receiptHandles: pickHandles(), visibilityTimeoutSeconds: this.rng.range(1, 30) };
    else if (k < 89) command = { type: 'queue.purge', name: queue };
    else if (k < 92) command = { type: 'grant.put', kind: 'queue', name: queue, username: this.rng.pick(USERS), actions: this.rng.chance(0.5) ? ['send'] : ['receive', 'send'] };
    else if (k < 94) command = { type: 'grant.delete', kind: 'queue', name: queue, username: this.rng.pick(USERS) };
    else if (k < 95) command = { type: 'outbox.done', ids: [this.rng.range(1, 10)] };
    else if (k < 96) command = { type: 'sweep' };
    else if (k < 98) {
      // Delete and recreate: a new queue of the same name must never see the old one's data.
      command = this.rng.chance(0.5)
        ? { type: 'queue.delete', name: queue }
        : { type: 'queue.create', name: queue, visibilityTimeoutSeconds: 5, maxDeliveries: 2, deadLetterQueue: queue === 'dlq' ? null : 'dlq', delaySeconds: 0, retentionSeconds: 600 };
    } else command = { type: 'deadletter.deliver', queue: 'dlq', expectedOwner: 'alice', messages: [{ messageId: `x${this.rng.int(5)}`, body: 'dead', attributes: {} }] };
    const env: Envelope = { time: this.time, actor: command.type === 'deadletter.deliver' || command.type === 'outbox.done' || command.type === 'sweep' ? null : actor, command };
    return this.rng.chance(0.1) ? { ...env, idempotencyKey: `k${this.rng.int(10)}` } : env;
  }

  /** Wraps envelopes as the next log entries. */
  entries(envs: readonly Envelope[]): ApplyEntry[] {
    return envs.map((e) => ({ index: ++this.index, term: 1, kind: 0, data: encodeEnvelope(e, this.format) }));
  }
}
