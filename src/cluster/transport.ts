// HttpTransport: carries Raft messages of every partition to the peers over HTTP, and fetches
// snapshot files from them. Its parts: message-queue.ts (each peer's queue of messages waiting),
// raft-stream.ts (one stream: its window of frames and their acknowledgements), snapshot-fetch.ts
// (an image's durable download). This file keeps the pipeline per peer and the calls between nodes.
//
// Per peer: a bounded FIFO of messages. What one loop turn queues for a peer leaves in one batch at
// the end of the turn, the messages of all partitions together. A batch travels as a frame of a Raft
// stream (frames.ts): one long-lived POST per peer whose body carries the batches and whose answer
// acknowledges them as the peer takes them, so a batch costs a write and no HTTP request. Up to
// STREAM_WINDOW frames may be unacknowledged; what is queued while the window is full leaves in the
// next batch, so a slow peer gets fewer, larger batches instead of a growing backlog of small ones.
// The peer acknowledges once per half a window or within a few milliseconds, not per frame: on
// loopback each acknowledgement was a write and a wake-up of the other process, per frame and peer,
// both ways. Nothing is retried: Raft repairs loss (a heartbeat or append is re-sent on its own
// schedule), and a full queue drops its oldest messages, which are the stalest. A frame not
// acknowledged within the request timeout ends its stream, and what the stream had not had
// acknowledged counts as lost. After a failure the next batch waits a little (doubling from 20 ms
// up to 1 s while failures go on), so a dead peer that refuses connections at once costs a
// connection attempt per backoff, not one per loop turn. A stream is replaced after a minute, once
// the peer acknowledged everything it holds, so that batches never overtake each other. A
// peer without the stream route (an older build, answering 404) gets one POST per batch instead
// (RAFT_PATH), one at a time, and the stream is tried again after STREAM_RETRY_MS.
//
// Forwarded client commands ride in the same frames (carry(), wire.ts's Carried) once the peer said
// in a stream's answer that it reads them (CARRIES_HEADER): no HTTP request and answer of their own
// per forwarded batch. The leader answers them in frames of its own stream to the sender (answer()):
// with the result, or, for a command carried with `track` to a leader that said it takes that
// (TRACKS_HEADER), with where it appended it (the sender answers from its own apply: router.ts).
// What a command's answer depends on, and what a lost frame means for it, is told at carry().
import { randomBytes } from 'node:crypto';
import { Pool } from 'undici';
import { MAX_PARTITIONS } from '../partition/routing.js';
import { MessageType, type NodeId } from '../raft/index.js';
import { FORMAT } from '../store/broker/format.js';
import { decodeCarried, type Answer, type CarriedOutcome } from './answer.js';
import { errorText } from './errors.js';
import { FRAMES_TYPE, FRAME_HEAD_BYTES, MAX_STREAM_WINDOW, WINDOW_HEADER, sealFrame } from './frames.js';
import { CLOCK_HEADER, FORMAT_HEADER, RAFT_PATH, RAFT_STREAM_PATH, SNAPSHOT_PATH, TOKEN_KEY_HEADER } from './internal-routes.js';
import { assertUsableSecret, bearer } from './secret.js';
import { MessageQueue } from './message-queue.js';
import { RaftStream, carriedFate, type PendingFrame, type StreamFailure } from './raft-stream.js';
import { SnapshotFetchError, downloadSnapshot } from './snapshot-fetch.js';
import { encodeBatch, type BatchItem, type Carried, type CarriedAnswer, type CarriedCommand } from './wire.js';

export interface TransportLogger {
  warn(obj: object, msg: string): void;
}

export interface TransportOptions {
  readonly self: NodeId;
  /** Every other node. An entry for `self` is ignored, so the whole member list may be passed. */
  readonly peers: readonly { readonly id: NodeId; readonly url: string }[];
  readonly clusterSecret: string;
  /** tokenKeyOf(this node's JWT secret), said in every Raft request and call (TOKEN_KEY_HEADER); unset: not said. */
  readonly tokenKey?: string;
  /** Messages queued per peer before the oldest are dropped. Default 10,000. */
  readonly maxQueuedPerPeer?: number;
  /**
   * Deadline of one batch, in ms: its stream frame's acknowledgement, or the connect, headers and
   * body of its POST. Default 2,000.
   */
  readonly requestTimeoutMs?: number;
  /** Idle deadline of a snapshot download (headers, and each gap in the body), in ms. Default 60,000. */
  readonly snapshotTimeoutMs?: number;
  /**
   * Payload bytes (entry and snapshot data) per batch; what does not fit waits for the next one.
   * Default 16 MiB, well under the receiver's 64 MiB body limit. A single larger message still goes.
   */
  readonly maxBatchBytes?: number;
  /** For https peer URLs signed by a private CA. */
  readonly tls?: { readonly ca: string | Buffer; readonly cert?: string | Buffer; readonly key?: string | Buffer };
  /** Default: console.warn. */
  readonly logger?: TransportLogger;
  /**
   * The newest log format this node reads (src/store/broker/format.ts), said in every Raft request
   * (FORMAT_HEADER) so that leaders know when they may raise a partition's format. Default: the build's.
   */
  readonly format?: number;
  /** This node's wall clock, said in every Raft request (CLOCK_HEADER). Default Date.now. */
  readonly now?: () => number;
  /** Batches as frames of a Raft stream (default), or false: one POST per batch, as older builds. */
  readonly streams?: boolean;
  /** A Raft stream is replaced by a new one this long after it opened. Default STREAM_MAX_AGE_MS. */
  readonly streamMaxAgeMs?: number;
  /** An answer to a peer's carried command not delivered within this long is dropped. Default ANSWER_TTL_MS. */
  readonly answerTtlMs?: number;
  /** Frames of a Raft stream that may be unacknowledged (frames.ts). Default STREAM_WINDOW. */
  readonly streamWindow?: number;
  /**
   * Called when messages to `peer` were lost undelivered (a failed batch, or a stream that ended with
   * their frame unacknowledged), with the partitions of the appends among them, so that those Raft
   * groups send again at once (RawNode.reportUnreachable) instead of at the next heartbeat. Only for
   * the first failure since a delivered batch: a peer that stays down is not sent them again and again.
   */
  readonly onLost?: (peer: NodeId, partitions: readonly number[]) => void;
}

/** Counters in messages, since the transport was created. */
export interface TransportStats {
  /** Delivered: the peer answered 2xx to the POST carrying them, or acknowledged their frame. */
  readonly sent: number;
  /** Never sent: pushed out of a full queue, addressed to an unknown node, or queued at close(). */
  readonly dropped: number;
  /**
   * Lost with a request that failed (refused connection, timeout, non-2xx answer), or in a stream
   * that ended before the peer acknowledged their frame (the peer may have taken some of those).
   */
  readonly failed: number;
  /** Waiting in the queues now (not counting those in flight). */
  readonly queued: number;
  /** Batches delivered: frames of Raft streams and POSTs. */
  readonly batches: number;
  /** Forwarded commands sent in stream frames (carry()), and answers to a peer's (answer()). */
  readonly carriedCommands: number;
  readonly carriedAnswers: number;
  /** Of carriedAnswers, those that said where a command was proposed: its sender answers from its own apply. */
  readonly carriedProposed: number;
}

export const DEFAULT_MAX_QUEUED_PER_PEER = 10_000;
export const DEFAULT_REQUEST_TIMEOUT_MS = 2_000;
export const DEFAULT_SNAPSHOT_TIMEOUT_MS = 60_000;
export const DEFAULT_MAX_BATCH_BYTES = 16 * 1024 * 1024;
/** Connections per peer for forwarded requests: each holds one request until its write applies. */
export const RPC_CONNECTIONS = 64;
/** A failing peer is reported at most once per this interval. */
export const WARN_INTERVAL_MS = 10_000;
/** A Raft stream is replaced by a new one this long after it opened. */
export const STREAM_MAX_AGE_MS = 60_000;
/**
 * Frames of a Raft stream that may be unacknowledged. The peer acknowledges once per half of it or
 * within ACK_DELAY_MS, so that a busy stream costs an acknowledgement per many frames.
 */
export const STREAM_WINDOW = 32;
/** After a peer answered a stream with 404 (a build without the route), POSTs until this has passed. */
export const STREAM_RETRY_MS = 30_000;
/** Carried commands and answers per frame, in approximate bytes; the rest waits for the next frame. */
export const MAX_CARRIED_BYTES = 8 * 1024 * 1024;
/**
 * An answer not delivered within this long is dropped: the peer that forwarded its command has
 * given up on it (its callers wait 15 s), or is gone. Whether or not a stream to that peer ever
 * opened: a timer per peer with answers held makes sure of it (HttpTransport.pruneLater).
 */
export const ANSWER_TTL_MS = 30_000;
/** How long close() waits for the answers it owes to be acknowledged. */
const ANSWERS_AT_CLOSE_MS = 1_000;
/** How often commands awaiting an answer are checked against their deadlines. */
const AWAIT_SWEEP_MS = 250;
const BACKOFF_FIRST_MS = 20;
const BACKOFF_MAX_MS = 1_000;
const consoleLogger: TransportLogger = { warn: (obj, msg) => console.warn(msg, obj) };

/** An answer to a peer's carried command, with when it was queued (performance.now()). */
interface QueuedAnswer extends CarriedAnswer {
  readonly at: number;
}

/** A carried command's caller, until its answer comes or its fate is known without one. */
interface Awaiting {
  readonly resolve: (answer: CarriedOutcome) => void;
  /** performance.now() after which it is answered `unknown`, timed out. */
  readonly deadline: number;
  /** The stream whose frame carried it: from then on that stream's loss leaves its fate unknown. */
  on: RaftStream | null;
}

interface Peer {
  readonly id: NodeId;
  readonly url: string;
  /** Path prefix of the peer's URL, without a trailing slash. */
  readonly basePath: string;
  readonly pool: Pool;
  /** Created on the first fetch: a long download must not hold up the Raft traffic. */
  snapshotPool: Pool | null;
  /** Forwarded commands and reads (call()); opened on first use. */
  rpcPool: Pool | null;
  /** Raft streams; opened on first use. Its answers have no body deadline: a stream may idle. */
  streamPool: Pool | null;
  /** The stream batches go into; null until the first, and after one fails. */
  stream: RaftStream | null;
  /** Batches go as POSTs until then (performance.now()): the peer had no stream route. */
  postsUntil: number;
  readonly queue: MessageQueue;
  /** True while a batch waits: for room in the stream's window, or for its POST's answer. */
  inFlight: boolean;
  /** True while a flush is scheduled for the end of the current turn. */
  scheduled: boolean;
  /** Failed batches in a row; 0 after a success. */
  failures: number;
  /** The peer said in its last stream's answer that it reads carried commands (CARRIES_HEADER). */
  carries: boolean;
  /**
   * The peer said in its current stream's answer that it takes system commands as commands
   * (SYSTEM_HEADER); false from the moment that stream ends until the next one says so again.
   */
  takesSystem: boolean;
  /** Likewise for commands carried with `track` (TRACKS_HEADER): without it they leave without. */
  tracks: boolean;
  /** Likewise for carried commands' bodies sent apart (BODIES_HEADER): without it, in the JSON. */
  bodiesApart: boolean;
  /** Commands and answers waiting for the next frame, and their approximate bytes. */
  commands: CarriedCommand[];
  answers: QueuedAnswer[];
  carriedBytes: number;
  /** Set while answers are held: drops those past the TTL then (pruneLater). */
  answersPrune: NodeJS.Timeout | null;
  /** Set while a flush of carried items alone is scheduled (setImmediate). */
  carryScheduled: boolean;
  /** Set while a flush for answers is scheduled (process.nextTick: answerSoon). */
  answerScheduled: boolean;
  /** Commands sent to the peer (or waiting to be) whose answers have not come, by id. */
  readonly awaiting: Map<string, Awaiting>;
  /** Set while waiting out the backoff after a failure; no batch leaves meanwhile. */
  backoff: NodeJS.Timeout | null;
}

export class HttpTransport {
  private readonly self: NodeId;
  private readonly peers = new Map<NodeId, Peer>();
  private readonly authorization: string;
  /** The TOKEN_KEY_HEADER of Raft requests and calls, or nothing. */
  private readonly tokenKey: Record<string, string>;
  private readonly format: string;
  private readonly wallClock: () => number;
  private readonly requestTimeoutMs: number;
  private readonly snapshotTimeoutMs: number;
  private readonly maxBatchBytes: number;
  private readonly streams: boolean;
  private readonly streamMaxAgeMs: number;
  private readonly answerTtlMs: number;
  private readonly streamWindow: number;
  private readonly onLost: ((peer: NodeId, partitions: readonly number[]) => void) | undefined;
  private readonly tls: { readonly ca: string | Buffer; readonly cert?: string | Buffer; readonly key?: string | Buffer } | undefined;
  private readonly warnings: RateLimitedWarnings;
  private closed = false;
  private sent = 0;
  private dropped = 0;
  private failed = 0;
  private batches = 0;
  /** Set by settle(): no new command is carried (answers still are). */
  private settling = false;
  /**
   * Carried commands' ids are this process's random nonce and a counter: an answer a peer held for
   * this node's previous process matches no command of this one.
   */
  private readonly nonce = randomBytes(12).toString('base64url');
  private commandCount = 0;
  private carriedCommands = 0;
  private carriedAnswers = 0;
  private carriedProposed = 0;
  /** Checks deadlines of carried commands while any await an answer. */
  private sweeper: NodeJS.Timeout | null = null;

  constructor(opts: TransportOptions) {
    assertUsableSecret(opts.clusterSecret);
    const maxQueued = opts.maxQueuedPerPeer ?? DEFAULT_MAX_QUEUED_PER_PEER;
    if (!Number.isSafeInteger(maxQueued) || maxQueued < 1) throw new RangeError(`maxQueuedPerPeer must be a positive integer, got ${maxQueued}`);
    this.self = opts.self;
    this.authorization = bearer(opts.clusterSecret);
    this.tokenKey = opts.tokenKey === undefined ? {} : { [TOKEN_KEY_HEADER]: opts.tokenKey };
    this.format = String(opts.format ?? FORMAT);
    this.wallClock = opts.now ?? Date.now;
    this.requestTimeoutMs = opts.requestTimeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS;
    this.snapshotTimeoutMs = opts.snapshotTimeoutMs ?? DEFAULT_SNAPSHOT_TIMEOUT_MS;
    this.maxBatchBytes = opts.maxBatchBytes ?? DEFAULT_MAX_BATCH_BYTES;
    this.streams = opts.streams ?? true;
    this.streamMaxAgeMs = opts.streamMaxAgeMs ?? STREAM_MAX_AGE_MS;
    this.answerTtlMs = opts.answerTtlMs ?? ANSWER_TTL_MS;
    if (!Number.isSafeInteger(this.answerTtlMs) || this.answerTtlMs < 1 || this.answerTtlMs > 2 ** 31 - 1) {
      throw new RangeError(`answerTtlMs must be an integer from 1 to ${2 ** 31 - 1}, got ${this.answerTtlMs}`);
    }
    this.streamWindow = opts.streamWindow ?? STREAM_WINDOW;
    this.onLost = opts.onLost;
    if (!Number.isSafeInteger(this.streamWindow) || this.streamWindow < 1 || this.streamWindow > MAX_STREAM_WINDOW) {
      throw new RangeError(`streamWindow must be an integer from 1 to ${MAX_STREAM_WINDOW}, got ${this.streamWindow}`);
    }
    this.tls = opts.tls;
    this.warnings = new RateLimitedWarnings(opts.logger ?? consoleLogger, WARN_INTERVAL_MS);

    for (const { id, url } of opts.peers) {
      if (id === opts.self) continue;
      if (this.peers.has(id)) throw new TypeError(`peer ${id} is listed twice`);
      const parsed = new URL(url);
      if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') throw new TypeError(`peer ${id}: ${url} is not an http(s) URL`);
      this.peers.set(id, {
        id,
        url,
        basePath: parsed.pathname.replace(/\/+$/, ''),
        pool: this.newPool(parsed.origin, 2, this.requestTimeoutMs),
        snapshotPool: null,
        rpcPool: null,
        streamPool: null,
        stream: null,
        postsUntil: 0,
        queue: new MessageQueue(maxQueued),
        inFlight: false,
        scheduled: false,
        failures: 0,
        backoff: null,
        carries: false,
        takesSystem: false,
        tracks: false,
        bodiesApart: false,
        commands: [],
        answers: [],
        carriedBytes: 0,
        answersPrune: null,
        carryScheduled: false,
        answerScheduled: false,
        awaiting: new Map(),
      });
    }
  }

  /**
   * Queues messages for their destinations (`message.to`); never waits and never fails on a peer's
   * account. The batches leave at the end of the current turn, so several calls in one turn still make
   * one batch per peer. Throws only on a caller's bug: a partition out of range, or a message that
   * is not from this node.
   */
  send(items: readonly BatchItem[]): void {
    for (const item of items) {
      const { partition, message } = item;
      if (!Number.isInteger(partition) || partition < 0 || partition >= MAX_PARTITIONS) {
        throw new RangeError(`partition ${partition} is out of range 0 to ${MAX_PARTITIONS - 1}`);
      }
      if (message.from !== this.self) throw new TypeError(`a ${message.type} from ${message.from} is not this node's (${this.self})`);
    }
    if (this.closed) {
      this.dropped += items.length;
      return;
    }
    for (const item of items) {
      const peer = this.peers.get(item.message.to);
      if (peer === undefined) {
        this.dropped++;
        this.warnings.warn(`unknown:${item.message.to}`, { to: item.message.to }, 'message for an unknown node dropped');
        continue;
      }
      this.dropped += peer.queue.push(item);
      this.schedule(peer);
    }
  }

  /** Whether `peerId` said in its current Raft stream's answer that it takes system commands as commands (SYSTEM_HEADER). */
  takesSystemCommands(peerId: NodeId): boolean {
    return this.peers.get(peerId)?.takesSystem === true;
  }

  /**
   * Sends a client command forwarded to `peerId`, its partition's leader, in the next frame of the
   * Raft stream to it, and resolves with the leader's answer. Returns null when the peer does not
   * read carried commands (not yet said, or an older build), or while batches to it back off after
   * a failure: the caller sends it by HTTP instead. With `track` (the caller holds a replica of the
   * partition), a leader that said it takes it (TRACKS_HEADER) when the frame leaves may answer
   * where it appended the command (Proposed) instead of its result.
   *
   * The answer comes in a frame of the leader's own stream to this node. Without one, the command is:
   * - `retry` when the peer certainly did not take it: its frame was never written, the stream never
   *   connected or was answered another status than 200, or the peer ended or refused the stream
   *   after acknowledging every frame it took, and not this one;
   * - `unknown` when its frame was written and the connection then broke (the leader may have
   *   proposed it: a broken stream is also how a leader's crash shows here), or when no answer came
   *   within `timeoutMs`. A stream cut by this node's own deadline (a slow peer) leaves the command
   *   waiting for its answer: the leader answers it on its own stream.
   */
  carry(peerId: NodeId, command: Omit<CarriedCommand, 'id' | 'track'>, timeoutMs: number, track = false): Promise<CarriedOutcome> | null {
    const peer = this.peers.get(peerId);
    // Not into a stream that is failing: the command would wait out its backoff.
    if (peer === undefined || this.settling || peer.backoff !== null || !this.carrying(peer)) return null;
    const id = `${this.nonce}.${(this.commandCount++).toString(36)}`;
    const carried: CarriedCommand = track ? { id, ...command, track } : { id, ...command };
    return new Promise<CarriedOutcome>((resolve) => {
      peer.awaiting.set(carried.id, { resolve, deadline: performance.now() + timeoutMs, on: null });
      this.sweeper ??= setInterval(() => this.sweep(), AWAIT_SWEEP_MS).unref();
      peer.commands.push(carried);
      peer.carriedBytes += approximateCarriedBytes(carried.command);
      this.carrySoon(peer);
    });
  }

  /**
   * For a node that starts to close: carries no new command from now on (carry() answers null, and
   * the caller forwards by HTTP), and resolves once no carried command awaits its answer (each has
   * its deadline). Answers to the peers' commands still go.
   */
  async settle(maxMs: number): Promise<void> {
    this.settling = true;
    const until = performance.now() + maxMs;
    const awaiting = (): number => [...this.peers.values()].reduce((n, p) => n + p.awaiting.size, 0);
    while (awaiting() > 0 && !this.closed && performance.now() < until) await new Promise((resolve) => setTimeout(resolve, 10));
    for (const peer of this.peers.values()) this.settleAwaiting(peer, () => true, { kind: 'unknown', detail: 'this node is closing', timedOut: false });
  }

  /** Queues the answer to command `id` that `peerId` carried to this node; it leaves in a frame of the stream to it. */
  answer(peerId: NodeId, id: string, answer: CarriedOutcome): void {
    const peer = this.peers.get(peerId);
    if (peer === undefined || this.closed) return;
    peer.answers.push({ id, answer, at: performance.now() });
    peer.carriedBytes += approximateCarriedBytes(answer);
    this.answerSoon(peer);
    this.pruneLater(peer);
  }

  /**
   * Drops `peer`'s held answers once they pass the TTL, if no frame took them first. A frame drops
   * them too (takeCarried), but frames leave only while the peer carries: answers owed to a peer
   * whose stream never opened, or that went away before it did, would otherwise be held for as
   * long as that lasts (review of 2026-12-07).
   */
  private pruneLater(peer: Peer): void {
    if (peer.answersPrune !== null || this.closed || peer.answers.length === 0) return;
    // When the oldest passes the TTL (a millisecond later: a timer may fire a little early).
    const wait = Math.min(2 ** 31 - 1, Math.max(1, Math.ceil(peer.answers[0]!.at + this.answerTtlMs - performance.now()) + 1));
    peer.answersPrune = setTimeout(() => {
      peer.answersPrune = null;
      this.dropStale(peer);
      this.pruneLater(peer);
    }, wait);
    // The transport alone must not keep the process alive.
    peer.answersPrune.unref();
  }

  /**
   * Drops the answers past the TTL (the forwarder gave up on them, or is gone) and the commands whose
   * callers were answered meanwhile, and takes their bytes off the count, which decides whether a
   * frame must split what is held (takeCarried).
   */
  private dropStale(peer: Peer): void {
    const stale = performance.now() - this.answerTtlMs;
    // Oldest first, so the first one says whether any is stale.
    if (peer.answers.length > 0 && peer.answers[0]!.at < stale) {
      peer.answers = peer.answers.filter((a) => {
        if (a.at >= stale) return true;
        peer.carriedBytes -= approximateCarriedBytes(a.answer);
        return false;
      });
    }
    if (peer.commands.some((c) => !peer.awaiting.has(c.id))) {
      peer.commands = peer.commands.filter((c) => {
        if (peer.awaiting.has(c.id)) return true;
        peer.carriedBytes -= approximateCarriedBytes(c.command);
        return false;
      });
    }
    if (peer.carriedBytes < 0 || (peer.answers.length === 0 && peer.commands.length === 0)) peer.carriedBytes = 0;
  }

  /** Answers that `peerId` sent to commands this node carried to it; unknown ids (answered already, timed out) are ignored. */
  answered(peerId: NodeId, answers: readonly CarriedAnswer[]): void {
    const peer = this.peers.get(peerId);
    if (peer === undefined) return;
    for (const { id, answer } of answers) {
      const waiting = peer.awaiting.get(id);
      if (waiting === undefined) continue;
      peer.awaiting.delete(id);
      waiting.resolve(decodeCarried(answer));
    }
  }

  /**
   * One JSON request to an inter-node route of `peerId` (forwarded commands and reads), on a pool of
   * its own so that a slow call never holds up Raft messages. Resolves with any HTTP answer; rejects
   * with undici's error when no answer came (refused, reset, timed out). `requestId` travels along so
   * that the leader's log lines carry the client's request id.
   */
  async call(peerId: NodeId, path: string, body: unknown, opts: { timeoutMs: number; requestId?: string }): Promise<{ status: number; body: unknown }> {
    const peer = this.peers.get(peerId);
    if (peer === undefined) throw new Error(`unknown peer ${peerId}`);
    if (this.closed) throw new Error('the transport is closed');
    // The pool's own deadlines are loose; each call's signal is the real bound.
    peer.rpcPool ??= this.newPool(new URL(peer.url).origin, RPC_CONNECTIONS, 60_000);
    const headers: Record<string, string> = { authorization: this.authorization, 'content-type': 'application/json', ...this.tokenKey };
    if (opts.requestId !== undefined) headers['x-request-id'] = opts.requestId;
    // A timer cleared when the call ends: AbortSignal.timeout's would fire later anyway, and build a
    // DOMException for nobody (about 1% of a node's time under single sends).
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(new DOMException(`no answer within ${opts.timeoutMs} ms`, 'TimeoutError')), opts.timeoutMs);
    let text: string;
    let res;
    try {
      res = await peer.rpcPool.request({
        method: 'POST',
        path: `${peer.basePath}${path}`,
        headers,
        body: JSON.stringify(body),
        signal: abort.signal,
      });
      text = await res.body.text();
    } finally {
      clearTimeout(timer);
    }
    let parsed: unknown = null;
    try {
      parsed = text.length === 0 ? null : JSON.parse(text);
    } catch {
      parsed = { detail: text.slice(0, 200) };
    }
    return { status: res.statusCode, body: parsed };
  }

  /**
   * Downloads snapshot `ref` of `partition` from `peer` into `destPath`: written to `destPath.part`,
   * fsynced, renamed, and the directory fsynced, so `destPath` is either absent or complete. Rejects
   * with SnapshotFetchError on a non-200 answer, a cut-short body, a timeout or an unknown peer.
   */
  async fetchSnapshot(peerId: NodeId, partition: number, ref: string, destPath: string): Promise<void> {
    const peer = this.peers.get(peerId);
    if (peer === undefined) throw new SnapshotFetchError(`unknown peer ${peerId}`);
    if (this.closed) throw new SnapshotFetchError('the transport is closed');
    peer.snapshotPool ??= this.newPool(new URL(peer.url).origin, 2, this.snapshotTimeoutMs);
    const from = { pool: peer.snapshotPool, path: `${peer.basePath}${SNAPSHOT_PATH}/${partition}/${encodeURIComponent(ref)}`, headers: { authorization: this.authorization, ...this.tokenKey } };
    await downloadSnapshot(from, `snapshot ${ref} of partition ${partition} from ${peerId}`, destPath);
  }

  stats(): TransportStats {
    let queued = 0;
    for (const peer of this.peers.values()) queued += peer.queue.length;
    return {
      sent: this.sent,
      dropped: this.dropped,
      failed: this.failed,
      queued,
      batches: this.batches,
      carriedCommands: this.carriedCommands,
      carriedAnswers: this.carriedAnswers,
      carriedProposed: this.carriedProposed,
    };
  }

  /** Each peer's queue and request state, for an operator or a test that gave up waiting. */
  peerStates(): {
    peer: NodeId;
    queued: number;
    inFlight: boolean;
    failures: number;
    backingOff: boolean;
    streaming: boolean;
    carries: boolean;
    awaiting: number;
    /** Answers to the peer's carried commands waiting for a frame, and theirs and held commands' approximate bytes. */
    answersHeld: number;
    carriedBytes: number;
  }[] {
    return [...this.peers.values()].map((p) => ({
      peer: p.id,
      queued: p.queue.length,
      inFlight: p.inFlight,
      failures: p.failures,
      backingOff: p.backoff !== null,
      streaming: p.stream !== null,
      carries: p.carries,
      awaiting: p.awaiting.size,
      answersHeld: p.answers.length,
      carriedBytes: p.carriedBytes,
    }));
  }

  /**
   * Drops what is queued, aborts what is in flight (downloads included) and closes the connections.
   * Later sends are dropped; later fetches reject.
   */
  async close(): Promise<void> {
    if (this.closed) return;
    // Answers to the peers' carried commands are let go first (within a second): their callers wait.
    const owed = (): boolean => [...this.peers.values()].some((p) => (p.answers.length > 0 && p.carries) || p.stream?.holdsAnswers() === true);
    for (const until = performance.now() + ANSWERS_AT_CLOSE_MS; owed() && performance.now() < until; ) await new Promise((resolve) => setTimeout(resolve, 10));
    if (this.closed) return;
    this.closed = true;
    const pools: Pool[] = [];
    for (const peer of this.peers.values()) {
      this.dropped += peer.queue.clear();
      if (peer.backoff !== null) clearTimeout(peer.backoff);
      peer.backoff = null;
      if (peer.answersPrune !== null) clearTimeout(peer.answersPrune);
      peer.answersPrune = null;
      peer.stream?.close('the transport is closed', 'closed');
      peer.stream = null;
      this.settleAwaiting(peer, () => true, { kind: 'unknown', detail: 'this node is closing', timedOut: false });
      peer.commands = [];
      peer.answers = [];
      peer.carriedBytes = 0;
      pools.push(peer.pool);
      if (peer.streamPool !== null) pools.push(peer.streamPool);
      if (peer.snapshotPool !== null) pools.push(peer.snapshotPool);
      if (peer.rpcPool !== null) pools.push(peer.rpcPool);
    }
    if (this.sweeper !== null) clearInterval(this.sweeper);
    this.sweeper = null;
    await Promise.all(pools.map((p) => p.destroy()));
  }

  private newPool(origin: string, connections: number, timeoutMs: number, bodyTimeoutMs = timeoutMs): Pool {
    return new Pool(origin, {
      connections,
      pipelining: 1,
      headersTimeout: timeoutMs,
      bodyTimeout: bodyTimeoutMs,
      connect: { timeout: Math.min(timeoutMs, this.requestTimeoutMs), ...(this.tls === undefined ? {} : { ...this.tls }) },
    });
  }

  /** Flushes `peer` once the current turn's synchronous sends are done. */
  private schedule(peer: Peer): void {
    if (peer.inFlight || peer.scheduled || peer.backoff !== null) return;
    peer.scheduled = true;
    queueMicrotask(() => {
      peer.scheduled = false;
      this.flush(peer);
    });
  }

  private flush(peer: Peer): void {
    if (this.closed || peer.inFlight || peer.backoff !== null) return;
    const carrying = this.carrying(peer) && (peer.commands.length > 0 || peer.answers.length > 0);
    if (peer.queue.length === 0 && !carrying) return;
    const batch = peer.queue.take(this.maxBatchBytes);
    const carried = carrying ? this.takeCarried(peer) : null;
    peer.inFlight = true;
    void this.deliver(peer, batch, carried).then((ok) => {
      peer.inFlight = false;
      if (ok) {
        this.flush(peer);
        return;
      }
      if (this.closed) return;
      peer.failures++;
      this.backOff(peer);
    });
  }

  /** No batch leaves for a while, doubling with the failures in a row. */
  private backOff(peer: Peer): void {
    const delay = Math.min(BACKOFF_FIRST_MS * 2 ** (peer.failures - 1), BACKOFF_MAX_MS);
    // Commands waiting for a frame do not wait out the backoff: they never left, and their callers
    // try again at once (by HTTP while this lasts, see carry(), or at another leader).
    if (peer.commands.length > 0) {
      const unsent = peer.commands;
      peer.commands = [];
      for (const c of unsent) peer.carriedBytes -= approximateCarriedBytes(c.command);
      this.carriedLost(peer, { commands: unsent, answers: [] }, 'retry', `the stream to ${peer.id} is failing`);
    }
    peer.backoff = setTimeout(() => {
      peer.backoff = null;
      this.flush(peer);
    }, delay);
    // The transport alone must not keep the process alive.
    peer.backoff.unref();
  }

  /**
   * Whether the peer took the batch: as a frame of its Raft stream, or as a POST to a peer without
   * streams (which carries nothing: `carried` is taken only while the peer reads it in its stream).
   * Never rejects: a failure is counted and reported.
   */
  private deliver(peer: Peer, batch: BatchItem[], carried: Carried | null): Promise<boolean> {
    return this.streams && performance.now() >= peer.postsUntil ? this.stream(peer, batch, carried) : this.post(peer, batch);
  }

  /** Whether commands may ride in frames to `peer` now: it said it reads them, and batches go by stream. */
  private carrying(peer: Peer): boolean {
    return this.streams && !this.closed && peer.carries && performance.now() >= peer.postsUntil;
  }

  /**
   * Flushes `peer` after the current I/O callbacks rather than at the end of this one: the commands
   * of every request that arrived together leave in one frame (with the turn's Raft messages, when
   * those leave then too).
   */
  private carrySoon(peer: Peer): void {
    if (peer.carryScheduled) return;
    peer.carryScheduled = true;
    setImmediate(() => {
      peer.carryScheduled = false;
      this.flush(peer);
    });
  }

  /**
   * Flushes `peer` once the current callback's promises have settled: the answers of every command
   * one apply settled leave in one frame, without waiting for the event loop's next round. An apply
   * runs in the loop's turn, itself a setImmediate, so carrySoon's flush would wait for the I/O of
   * the next round: a forwarded send's answer waited 1.3 ms at the median under send-1, 0.4 now
   * (bench/README.md, "What changed").
   */
  private answerSoon(peer: Peer): void {
    if (peer.answerScheduled) return;
    peer.answerScheduled = true;
    process.nextTick(() => {
      peer.answerScheduled = false;
      this.flush(peer);
    });
  }

  /** The oldest carried commands and answers within MAX_CARRIED_BYTES (at least one). */
  private takeCarried(peer: Peer): Carried {
    // Answers the forwarder gave up on, and commands whose callers were answered meanwhile, stay.
    this.dropStale(peer);
    let commands = peer.commands;
    let answers = peer.answers;
    if (peer.carriedBytes <= MAX_CARRIED_BYTES) {
      peer.commands = [];
      peer.answers = [];
      peer.carriedBytes = 0;
    } else {
      // Where a command was appended goes first: its commit may follow in the next Raft messages,
      // and a word that came after the apply leaves the command's outcome unknown to its sender.
      // (Those few bytes all fit, so what stays queued is still oldest first, as the check above
      // of answers the forwarder gave up on assumes.)
      if (answers.some((a) => (a.answer as CarriedOutcome).kind === 'proposed')) {
        answers = [...answers.filter((a) => (a.answer as CarriedOutcome).kind === 'proposed'), ...answers.filter((a) => (a.answer as CarriedOutcome).kind !== 'proposed')];
      }
      let bytes = 0;
      const fits = (item: unknown): boolean => {
        const n = approximateCarriedBytes(item);
        if (bytes > 0 && bytes + n > MAX_CARRIED_BYTES) return false;
        bytes += n;
        return true;
      };
      let a = 0;
      while (a < answers.length && fits(answers[a]!.answer)) a++;
      let c = 0;
      if (a === answers.length) while (c < commands.length && fits(commands[c]!.command)) c++;
      peer.answers = answers.slice(a);
      peer.commands = commands.slice(c);
      answers = answers.slice(0, a);
      commands = commands.slice(0, c);
      peer.carriedBytes = Math.max(0, peer.carriedBytes - bytes);
    }
    // Asked for by the caller, kept from a peer that did not say it takes it (an older build refuses it).
    if (!peer.tracks && commands.some((c) => c.track === true)) commands = commands.map(({ track: _, ...c }) => c);
    return { commands, answers };
  }

  /**
   * Carried items that may not have reached the peer: answers go back to the queue, to leave in a
   * later frame (the sender ignores one it had already); commands are answered `retry` when the peer
   * certainly did not take them, `unknown` when it may have, or left `waiting` for their answers
   * (which the peer sends on its own stream if it took them) or their deadline.
   */
  private carriedLost(peer: Peer, carried: Carried, fate: 'retry' | 'unknown' | 'waiting', detail: string): void {
    if (carried.answers.length > 0 && !this.closed && peer.carries) {
      peer.answers = [...(carried.answers as QueuedAnswer[]), ...peer.answers];
      for (const a of carried.answers) peer.carriedBytes += approximateCarriedBytes(a.answer);
      this.pruneLater(peer);
      this.carrySoon(peer);
    }
    if (fate === 'waiting' || carried.commands.length === 0) return;
    const ids = new Set(carried.commands.map((c) => c.id));
    this.settleAwaiting(peer, (id) => ids.has(id), fate === 'retry' ? { kind: 'retry', detail } : { kind: 'unknown', detail, timedOut: false });
  }

  /** Answers the awaiting commands of `peer` that `which` picks with `answer`. */
  private settleAwaiting(peer: Peer, which: (id: string, waiting: Awaiting) => boolean, answer: Answer): void {
    for (const [id, waiting] of peer.awaiting) {
      if (!which(id, waiting)) continue;
      peer.awaiting.delete(id);
      waiting.resolve(answer);
    }
  }

  /** Answers `unknown` the carried commands whose deadline passed; stops once none await. */
  private sweep(): void {
    const now = performance.now();
    let left = 0;
    for (const peer of this.peers.values()) {
      // Never written into a frame (no room in the stream all that time): it never left.
      this.settleAwaiting(peer, (_, w) => w.deadline <= now && w.on === null, { kind: 'retry', detail: `no room in the stream to ${peer.id}` });
      this.settleAwaiting(peer, (_, w) => w.deadline <= now, { kind: 'unknown', detail: `${peer.id} did not answer in time`, timedOut: true });
      left += peer.awaiting.size;
    }
    if (left === 0 && this.sweeper !== null) {
      clearInterval(this.sweeper);
      this.sweeper = null;
    }
  }

  /** What a stream's answer said about carried commands; a peer that stopped reading them gets none. */
  private setCarries(peer: Peer, carries: boolean): void {
    const was = peer.carries;
    peer.carries = carries;
    // Answers held while no stream said so leave now.
    if (carries && (peer.answers.length > 0 || peer.commands.length > 0)) this.carrySoon(peer);
    if (!was || carries) return;
    // An older build now answers there (a rolling downgrade): what waits for a frame goes by HTTP.
    const unsent = peer.commands;
    peer.commands = [];
    peer.answers = [];
    peer.carriedBytes = 0;
    this.carriedLost(peer, { commands: unsent, answers: [] }, 'retry', `${peer.id} no longer reads forwarded commands in its Raft stream`);
  }

  /**
   * Writes the batch as a frame of the peer's stream. Resolves with true once another batch may
   * follow (the stream's window has room), false when the stream ended first: its events count
   * what it lost and hand a peer without streams its batches back. Never rejects, as post().
   */
  private async stream(peer: Peer, batch: BatchItem[], carried: Carried | null): Promise<boolean> {
    let stream = peer.stream;
    if (stream === null || !stream.fresh(performance.now(), this.streamMaxAgeMs)) {
      // Frames of the old stream would race the new one's; Raft takes reordered messages, but as
      // rejections that send replication back to probing. So the old one is let go once the peer
      // acknowledged all it holds (within ACK_DELAY_MS of its last frame), or once it failed.
      if (stream !== null) await stream.room(true);
      stream?.retire(this.requestTimeoutMs);
      stream = peer.stream = this.openStream(peer);
      // Commands answered meanwhile (their deadline passed unsent: `retry`) must not leave after all.
      if (carried !== null && carried.commands.some((c) => !peer.awaiting.has(c.id))) {
        carried = { commands: carried.commands.filter((c) => peer.awaiting.has(c.id)), answers: carried.answers };
      }
    }
    let frame: Buffer;
    try {
      frame = sealFrame(encodeBatch(this.self, batch, FRAME_HEAD_BYTES, carried ?? undefined, peer.bodiesApart));
    } catch (err) {
      this.fail(peer, batch, errorText(err));
      if (carried !== null) this.carriedLost(peer, carried, 'retry', 'the frame could not be encoded');
      return false;
    }
    if (!stream.send(frame, batch, carried)) {
      this.fail(peer, batch, 'the stream ended');
      if (carried !== null) this.carriedLost(peer, carried, 'retry', 'the stream ended before the frame was written');
      return false;
    }
    if (carried !== null) {
      for (const c of carried.commands) {
        const waiting = peer.awaiting.get(c.id);
        if (waiting !== undefined) waiting.on = stream;
      }
      this.carriedCommands += carried.commands.length;
      this.carriedAnswers += carried.answers.length;
      for (const a of carried.answers) if ((a.answer as CarriedOutcome).kind === 'proposed') this.carriedProposed++;
    }
    const outcome = await stream.room();
    // A peer without the stream route: the batches go back to the queue, as POSTs (streamOver).
    return outcome === null || outcome.status === 404;
  }

  private openStream(peer: Peer): RaftStream {
    // Until the new stream's answer says again what the peer reads (it may have restarted as
    // another build), frames go as any build reads them.
    peer.takesSystem = false;
    peer.tracks = false;
    peer.bodiesApart = false;
    peer.streamPool ??= this.newPool(new URL(peer.url).origin, 2, this.requestTimeoutMs, 0);
    const headers = {
      authorization: this.authorization,
      ...this.tokenKey,
      'content-type': FRAMES_TYPE,
      [FORMAT_HEADER]: this.format,
      [WINDOW_HEADER]: String(this.streamWindow),
      [CLOCK_HEADER]: String(this.wallClock()),
    };
    const limits = { window: this.streamWindow, maxBytes: this.maxBatchBytes, timeoutMs: this.requestTimeoutMs };
    const opened: RaftStream = new RaftStream(peer.streamPool, `${peer.basePath}${RAFT_STREAM_PATH}`, headers, performance.now(), limits, {
      opened: (said) => {
        if (peer.stream !== opened) return;
        peer.takesSystem = said.carries && said.system;
        peer.tracks = said.carries && said.tracks;
        peer.bodiesApart = said.carries && said.bodies;
        this.setCarries(peer, said.carries);
      },
      acked: (frames, messages) => {
        this.sent += messages;
        this.batches += frames;
        peer.failures = 0;
      },
      over: (failure, unacknowledged) => {
        if (peer.stream === opened) {
          peer.stream = null;
          // The next stream's answer says again whether the peer (restarted, maybe as another build) takes them.
          peer.takesSystem = false;
          peer.tracks = false;
          peer.bodiesApart = false;
        }
        this.streamOver(peer, failure, unacknowledged);
      },
    });
    return opened;
  }

  /**
   * Counts what an ended stream lost, settles or requeues the commands and answers it carried, and
   * has the next batches wait out a failure.
   */
  private streamOver(peer: Peer, failure: StreamFailure, unacknowledged: PendingFrame[]): void {
    let lost = 0;
    let lostCarried = 0;
    const fate = carriedFate(failure);
    for (const f of unacknowledged) {
      lost += f.batch.length;
      if (f.carried === null) continue;
      lostCarried += f.carried.commands.length + f.carried.answers.length;
      this.carriedLost(peer, f.carried, fate, `the stream to ${peer.id} ${failure.reason}`);
    }
    // A broken connection is how a peer's crash shows: the answers it owed for what this stream
    // carried may never come, nor for what streams over before it carried (a retired stream ends
    // cleanly once this node ends its body, whatever the peer still owes): every stream over, this
    // one included. (A peer that closes ends its streams cleanly, after answering what it took.)
    // Not those of a stream still open: a retired one can break alone while its successor is
    // healthy, and a crash breaks the successor too.
    if (failure.how === 'broken') {
      this.settleAwaiting(peer, (_, w) => w.on?.over === true, { kind: 'unknown', detail: `the stream to ${peer.id} ${failure.reason}`, timedOut: false });
    }
    if (this.closed) {
      this.failed += lost;
      return;
    }
    if (failure.status === 404) {
      // A build without streams took none of them: this batch and the next ones as POSTs, for a while.
      peer.postsUntil = performance.now() + STREAM_RETRY_MS;
      this.setCarries(peer, false);
      this.dropped += peer.queue.requeue(unacknowledged.flatMap((f) => f.batch));
      this.schedule(peer);
      return;
    }
    // A stream that ended with everything acknowledged lost nothing: retired, cut while idle by the
    // peer, or the peer closing. The next batch opens another, and if that fails, it backs off.
    if (lost === 0 && lostCarried === 0) return;
    if (lost > 0) this.fail(peer, unacknowledged.flatMap((f) => f.batch), failure.reason);
    // A failure while a batch waits for room is that batch's: flush() backs off. Otherwise here.
    if (peer.inFlight || peer.backoff !== null) return;
    peer.failures++;
    this.backOff(peer);
  }

  /** Whether the peer took the batch. Never rejects: a failure is counted and reported. */
  private async post(peer: Peer, batch: BatchItem[]): Promise<boolean> {
    try {
      const res = await peer.pool.request({
        method: 'POST',
        path: `${peer.basePath}${RAFT_PATH}`,
        headers: { authorization: this.authorization, ...this.tokenKey, 'content-type': 'application/octet-stream', [FORMAT_HEADER]: this.format, [CLOCK_HEADER]: String(this.wallClock()) },
        body: encodeBatch(this.self, batch),
        // No signal: this pool's own deadlines (connect, headers, body: requestTimeoutMs each) bound
        // the request, and it never waits for a connection (one POST in flight per peer, two
        // connections).
      });
      if (res.statusCode >= 200 && res.statusCode < 300) {
        await res.body.dump();
        this.sent += batch.length;
        this.batches++;
        peer.failures = 0;
        return true;
      }
      const detail = await res.body.text().then((t) => t.slice(0, 300), () => '');
      this.fail(peer, batch, `answered ${res.statusCode} ${detail}`);
    } catch (err) {
      this.fail(peer, batch, errorText(err));
    }
    return false;
  }

  private fail(peer: Peer, lost: readonly BatchItem[], reason: string): void {
    this.failed += lost.length;
    if (this.closed) return;
    this.warnings.warn(`peer:${peer.id}`, { peer: peer.id, url: peer.url, reason, messages: lost.length }, 'inter-node request failed; its messages are dropped');
    // Only the first failure since a success: a peer that stays down would otherwise be sent every
    // lost group's append again after each backoff, for as long as it is down. Its heartbeats'
    // answers resume replication once it is back, as before.
    if (this.onLost === undefined || peer.failures > 0) return;
    const partitions = new Set<number>();
    for (const { partition, message } of lost) if (message.type === MessageType.App) partitions.add(partition);
    if (partitions.size === 0) return;
    try {
      this.onLost(peer.id, [...partitions]);
    } catch (err) {
      this.warnings.warn(`lost:${peer.id}`, { peer: peer.id, err: errorText(err) }, 'reporting lost appends failed');
    }
  }
}

/** An upper bound of a carried command's or answer's JSON: every character of its strings as a 6-byte escape. */
function approximateCarriedBytes(v: unknown): number {
  if (typeof v === 'string') return 6 * v.length + 2;
  if (typeof v !== 'object' || v === null) return 24;
  let n = 16;
  if (Array.isArray(v)) for (const x of v) n += approximateCarriedBytes(x) + 1;
  else for (const k in v) n += 6 * k.length + 4 + approximateCarriedBytes((v as Record<string, unknown>)[k]);
  return n;
}

/** One warning per key per interval; the next one says how many were held back. */
class RateLimitedWarnings {
  private readonly last = new Map<string, { at: number; suppressed: number }>();

  constructor(
    private readonly logger: TransportLogger,
    private readonly intervalMs: number,
  ) {}

  warn(key: string, obj: object, msg: string): void {
    const now = Date.now();
    const prev = this.last.get(key);
    if (prev !== undefined && now - prev.at < this.intervalMs) {
      prev.suppressed++;
      return;
    }
    this.last.set(key, { at: now, suppressed: 0 });
    this.logger.warn({ ...obj, suppressedSinceLastWarning: prev?.suppressed ?? 0 }, msg);
  }
}

