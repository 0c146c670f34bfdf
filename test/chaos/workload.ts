// The chaos workload: producers send uniquely numbered messages to three queues on different
// partitions and publish to a topic with two subscriptions (one filtered); consumers receive (some
// long polls), ack, sometimes nack, sometimes let the (short) lease expire. Every request goes
// round-robin through all three nodes (a node that is down answers nothing: the client moves on), or
// in the load-balancer variant through nginx in front of them (nginx.ts), and
// every write is retried with the SAME Idempotency-Key on 503, 504 and connection errors, within a
// bounded time per request and per operation. Everything is recorded (history.ts).
import { randomUUID } from 'node:crypto';
import { request } from 'undici';
import { partitionOf } from '../../src/partition/routing.js';
import { sleep, type Cluster } from './cluster.js';
import { queueChannel, subChannel, type Attempt, type ChannelId, type Delivery, type Outcome, type Recorder } from './history.js';
import type { Rng } from './rng.js';

/** A client-side bound on one attempt (plus any long-poll wait). */
export const ATTEMPT_TIMEOUT_MS = 5_000;
/** A bound on one operation, retries included. */
export const OP_DEADLINE_MS = 30_000;

export interface Res {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: unknown;
}

/** One JSON request with a hard client-side timeout; throws on connection errors and on the timeout. */
export async function http(base: string, method: string, path: string, opts: { token?: string; body?: unknown; key?: string; timeoutMs?: number } = {}): Promise<Res> {
  const headers: Record<string, string> = {};
  if (opts.token !== undefined) headers.authorization = `Bearer ${opts.token}`;
  if (opts.key !== undefined) headers['idempotency-key'] = opts.key;
  if (opts.body !== undefined) headers['content-type'] = 'application/json';
  const res = await request(`${base}${path}`, {
    method: method as 'GET',
    headers,
    signal: AbortSignal.timeout(opts.timeoutMs ?? ATTEMPT_TIMEOUT_MS),
    ...(opts.body === undefined ? {} : { body: JSON.stringify(opts.body) }),
  });
  const text = await res.body.text();
  let body: unknown = text;
  try {
    body = text.length === 0 ? null : JSON.parse(text);
  } catch {
    // not JSON: keep the text
  }
  return { status: res.statusCode, headers: res.headers, body };
}

export const isTimeout = (err: unknown): boolean => {
  const name = (err as Error).name;
  return name === 'TimeoutError' || name === 'AbortError';
};

export interface ChannelSpec {
  id: ChannelId;
  partition: number;
  /** The API path of the channel: /v1/queues/q or /v1/topics/t/subscriptions/s. */
  path: string;
}

/** Names of n queues on n different partitions, and a topic on yet another one if there is one. */
export function pickNames(partitions: number, nQueues: number, tag: string): { queues: string[]; topic: string } {
  const used = new Set<number>();
  const queues: string[] = [];
  for (let k = 0; queues.length < nQueues && k < 10_000; k++) {
    const name = `chaos-${tag}-q${k}`;
    const p = partitionOf(name, partitions);
    if (used.has(p) && used.size < partitions) continue;
    used.add(p);
    queues.push(name);
  }
  let topic = `chaos-${tag}-t0`;
  for (let k = 0; k < 10_000; k++) {
    topic = `chaos-${tag}-t${k}`;
    if (!used.has(partitionOf(topic, partitions)) || used.size >= partitions) break;
  }
  return { queues, topic };
}

/** What Client.post answers. */
type Posted = Awaited<ReturnType<Client['post']>>;

/** Where the client's requests go: the nodes themselves, or one load balancer in front of them. */
export interface Entry {
  urls: string[];
  /** Recorded as the op's node (n1..n3, or "lb"). */
  names: string[];
}

/** The client: issues one logical operation as retried requests, and records it. */
export class Client {
  private rr = 0;
  token = '';
  readonly entry: Entry;

  constructor(
    readonly cluster: Cluster,
    readonly rec: Recorder,
    entry?: Entry,
  ) {
    this.entry = entry ?? { urls: cluster.urls, names: cluster.ids };
  }

  /** The recorded name of entry point k. */
  nameOf(k: number): string {
    return this.entry.names[k]!;
  }

  /**
   * POSTs `body` to `path` with the Idempotency-Key `key`, round-robin over the nodes, retrying on
   * 503, 504, connection errors and client timeouts until `deadlineMs`. Answers the final response (or
   * null), the outcome and the attempts.
   */
  async post(path: string, body: unknown, key: string, opts: { okStatus: number; extraTimeoutMs?: number; deadlineMs?: number; noRetry?: () => boolean }): Promise<{ res: Res | null; outcome: Outcome; attempts: Attempt[]; node: number; error?: string }> {
    const attempts: Attempt[] = [];
    const deadline = Date.now() + (opts.deadlineMs ?? OP_DEADLINE_MS);
    let ambiguous = false;
    let last: Res | null = null;
    let error: string | undefined;
    let node = 0;
    for (;;) {
      node = this.rr++ % this.entry.urls.length;
      const t = this.rec.now();
      try {
        const r = await http(this.entry.urls[node]!, 'POST', path, { token: this.token, body, key, timeoutMs: ATTEMPT_TIMEOUT_MS + (opts.extraTimeoutMs ?? 0) });
        attempts.push([t, this.rec.now(), node, r.status]);
        last = r;
        if (r.status === opts.okStatus) return { res: r, outcome: 'ok', attempts, node };
        const detail = String((r.body as { detail?: unknown } | null)?.detail ?? '');
        error = `${r.status} ${detail}`.slice(0, 300);
        if (r.status !== 503 && r.status !== 504) return { res: r, outcome: 'fail', attempts, node, error };
        if (r.status === 504 || /unknown/i.test(detail)) ambiguous = true;
      } catch (err) {
        const code = (err as { code?: string }).code ?? '';
        attempts.push([t, this.rec.now(), node, isTimeout(err) ? -1 : 0]);
        // A refused connection never reached the server; anything else may have.
        if (code !== 'ECONNREFUSED') ambiguous = true;
        error = `${(err as Error).name} ${code}`;
      }
      if (Date.now() >= deadline || (opts.noRetry?.() ?? false)) break;
      await sleep(50);
    }
    return { res: last, outcome: ambiguous ? 'unknown' : 'fail', attempts, node, ...(error === undefined ? {} : { error }) };
  }

  /** A write that must get through (setup): retried until `okStatus` (or one of `alsoOk`). */
  async setup(path: string, body: unknown, okStatus: number, alsoOk: number[] = []): Promise<Res> {
    for (let round = 0; round < 5; round++) {
      const r = await this.post(path, body, `setup-${randomUUID()}`, { okStatus, deadlineMs: 60_000 });
      if (r.res !== null && (r.outcome === 'ok' || alsoOk.includes(r.res.status))) return r.res;
      if (r.res !== null && r.outcome === 'fail' && r.res.status !== 503 && r.res.status !== 504) throw new Error(`setup ${path}: ${r.error}`);
    }
    throw new Error(`setup ${path} did not go through`);
  }
}

export interface WorkloadOptions {
  rng: Rng;
  tag: string;
  /** Pause between a producer's sends (ms, drawn in [lo, hi]). */
  producerPause?: [number, number];
  consumerPause?: [number, number];
}

export class Workload {
  readonly channels: ChannelSpec[] = [];
  queues: string[] = [];
  topic = '';
  readonly subs = { all: 'all', filtered: 'even' };
  private stopping = false;
  private loops: Promise<void>[] = [];

  constructor(
    readonly client: Client,
    readonly opts: WorkloadOptions,
  ) {}

  get rec(): Recorder {
    return this.client.rec;
  }

  /** A user, three queues (2 s lease by default, no delays, no dead-lettering), a topic and two subscriptions. */
  async setup(): Promise<void> {
    const c = this.client;
    const parts = c.cluster.partitions;
    const username = `chaos-${this.opts.tag}`;
    const password = `password-${username}`;
    await c.setup('/v1/auth/register', { username, password }, 201, [409]);
    const login = await c.setup('/v1/auth/login', { username, password }, 200);
    c.token = (login.body as { accessToken: string }).accessToken;
    const { queues, topic } = pickNames(parts, 3, this.opts.tag);
    this.queues = queues;
    this.topic = topic;
    for (const q of queues) {
      await c.setup('/v1/queues', { name: q, visibilityTimeoutSeconds: 2 }, 201);
      this.channels.push({ id: queueChannel(q), partition: partitionOf(q, parts), path: `/v1/queues/${q}` });
    }
    await c.setup('/v1/topics', { name: topic }, 201);
    await c.setup(`/v1/topics/${topic}/subscriptions`, { name: this.subs.all, visibilityTimeoutSeconds: 2 }, 201);
    await c.setup(`/v1/topics/${topic}/subscriptions`, { name: this.subs.filtered, visibilityTimeoutSeconds: 2, filter: { attributes: { kind: 'even' } } }, 201);
    for (const s of [this.subs.all, this.subs.filtered]) {
      this.channels.push({ id: subChannel(topic, s), partition: partitionOf(topic, parts), path: `/v1/topics/${topic}/subscriptions/${s}` });
    }
    this.rec.history.channels = this.channels.map((ch) => ({ id: ch.id, partition: ch.partition, fifoCheck: true }));
  }

  start(): void {
    this.stopping = false;
    for (const q of this.queues) this.loops.push(this.producer(q, this.opts.rng.fork()));
    this.loops.push(this.publisher(this.opts.rng.fork()));
    for (const ch of this.channels) this.loops.push(this.consumer(ch, this.opts.rng.fork()));
  }

  /** Stops: every loop finishes the operation in hand (bounded by OP_DEADLINE_MS). */
  async stop(): Promise<void> {
    this.stopping = true;
    await Promise.all(this.loops);
    this.loops = [];
  }

  private async producer(queue: string, rng: Rng): Promise<void> {
    const [lo, hi] = this.opts.producerPause ?? [10, 60];
    for (let n = 0; !this.stopping; n++) {
      await this.send(queue, `${queue}-${n}`);
      await sleep(rng.int(lo, hi));
    }
  }

  async send(queue: string, body: string): Promise<void> {
    const start = this.rec.now();
    const r = await this.client.post(`/v1/queues/${queue}/messages`, { body }, `send-${randomUUID()}`, { okStatus: 201 });
    const b = (r.res?.body ?? {}) as { messageId?: string; sequence?: number };
    this.rec.op({
      ...this.recorded(`producer-${queue}`, start, r, partitionOf(queue, this.client.cluster.partitions)),
      type: 'send',
      channel: queueChannel(queue),
      body,
      ...(r.outcome === 'ok' ? { messageId: b.messageId!, sequence: b.sequence! } : {}),
    });
  }

  private async publisher(rng: Rng): Promise<void> {
    const [lo, hi] = this.opts.producerPause ?? [10, 60];
    for (let n = 0; !this.stopping; n++) {
      const body = `${this.topic}-${n}`;
      const kind = n % 2 === 0 ? 'even' : 'odd';
      const expected = [subChannel(this.topic, this.subs.all), ...(kind === 'even' ? [subChannel(this.topic, this.subs.filtered)] : [])];
      const start = this.rec.now();
      const r = await this.client.post(`/v1/topics/${this.topic}/messages`, { body, attributes: { kind } }, `pub-${randomUUID()}`, { okStatus: 201 });
      const b = (r.res?.body ?? {}) as { messageId?: string; sequence?: number };
      this.rec.op({
        ...this.recorded('publisher', start, r, partitionOf(this.topic, this.client.cluster.partitions)),
        type: 'publish',
        topic: this.topic,
        body,
        attributes: { kind },
        expected,
        ...(r.outcome === 'ok' ? { messageId: b.messageId!, sequence: b.sequence! } : {}),
      });
      await sleep(rng.int(lo, hi));
    }
  }

  private async consumer(ch: ChannelSpec, rng: Rng): Promise<void> {
    const [lo, hi] = this.opts.consumerPause ?? [20, 80];
    while (!this.stopping) {
      const waitSeconds = rng.chance(0.3) ? rng.int(1, 2) : 0;
      const got = await this.receive(ch, `consumer-${ch.id}`, rng.int(1, 5), waitSeconds, rng.int(1, 3));
      const ack: string[] = [];
      const nack: string[] = [];
      for (const m of got) {
        const r = rng.next();
        if (r < 0.1) continue; // let the lease expire
        (r < 0.2 ? nack : ack).push(m.receiptHandle);
      }
      if (ack.length > 0) await this.settle(ch, `consumer-${ch.id}`, 'ack', ack);
      if (nack.length > 0) await this.settle(ch, `consumer-${ch.id}`, 'nack', nack);
      await sleep(rng.int(lo, hi));
    }
  }

  /** The fields every recorded operation has, from the client's answer. */
  private recorded(process: string, start: number, r: Posted, partition: number) {
    return { id: this.rec.id(), process, node: this.client.nameOf(r.node), start, end: this.rec.now(), outcome: r.outcome, status: r.res?.status ?? 0, ...(r.error === undefined ? {} : { error: r.error }), attempts: r.attempts, partition };
  }

  /** One receive (retried with its own Idempotency-Key), recorded; answers what it got. */
  async receive(ch: ChannelSpec, proc: string, maxMessages: number, waitSeconds: number, visibilityTimeoutSeconds: number): Promise<Delivery[]> {
    const start = this.rec.now();
    const r = await this.client.post(`${ch.path}/receive`, { maxMessages, waitSeconds, visibilityTimeoutSeconds }, `recv-${randomUUID()}`, { okStatus: 200, extraTimeoutMs: waitSeconds * 1000 });
    const messages = r.outcome === 'ok' ? ((r.res!.body as { messages: Delivery[] }).messages ?? []).map((m) => ({ body: m.body, messageId: m.messageId, sequence: m.sequence, deliveryCount: m.deliveryCount, receiptHandle: m.receiptHandle })) : [];
    this.rec.op({
      ...this.recorded(proc, start, r, ch.partition),
      type: 'receive',
      channel: ch.id,
      maxMessages,
      waitSeconds,
      visibilityTimeoutSeconds,
      messages,
    });
    return messages;
  }

  async settle(ch: ChannelSpec, proc: string, type: 'ack' | 'nack', receiptHandles: string[]): Promise<void> {
    const start = this.rec.now();
    const r = await this.client.post(`${ch.path}/${type}`, { receiptHandles }, `${type}-${randomUUID()}`, { okStatus: 200 });
    const b = (r.outcome === 'ok' ? r.res!.body : {}) as { acked?: string[]; failed?: { receiptHandle: string; code: string }[] };
    this.rec.op({
      ...this.recorded(proc, start, r, ch.partition),
      type,
      channel: ch.id,
      receiptHandles,
      acked: b.acked ?? [],
      failed: b.failed ?? [],
    });
  }
}
