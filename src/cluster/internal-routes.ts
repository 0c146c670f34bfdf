// The inter-node routes: Raft message batches in (a Raft stream of frames, frames.ts, or one batch per
// POST from builds without streams), forwarded commands and reads, snapshot files out.
//
// Not part of the public API: hidden from the OpenAPI document and refused (401) to any caller without
// the cluster secret. The secret is checked in onRequest, before a body is read, so a caller without
// it cannot make the node buffer 64 MiB. Register with `app.register(internalRoutes, opts)`: the
// octet-stream parser, the auth hook and the error handler then stay inside this plugin's context.
import { open, type FileHandle } from 'node:fs/promises';
import type { FastifyBaseLogger, FastifyError, FastifyInstance, FastifyRequest } from 'fastify';
import type { Static } from 'typebox';
import type { NodeId } from '../raft/index.js';
import type { ClockSample } from '../partition/cluster-clock.js';
import { ClockBehindError, CommandRefusedError, NotLeaderError } from '../partition/errors.js';
import type { TLSSocket } from 'node:tls';
import { Transform, pipeline, type Readable } from 'node:stream';
import type { ServerResponse } from 'node:http';
import { ACK_DELAY_MS, BODIES_HEADER, CARRIES_HEADER, ChunkReader, FRAMES_TYPE, FrameError, MAX_STREAM_FRAMES, REFUSED, SYSTEM_HEADER, TRACKS_HEADER, WINDOW_HEADER, ackEvery, ackWord, streamWindow } from './frames.js';
import { assertUsableSecret, bearerToken, secretMatcher, secretTag } from './secret.js';
import { MAX_BATCH_EVENTS } from './limit-gossip.js';
import { CommandsBody, ForwardedCommand, LimitsBody, ProposeBody, QueryBody, SnapshotParams, type Forwarded } from './internal-schemas.js';
import { clientErrorCode, sendProblem } from './problems.js';
import { IMAGE_DIGEST_HEADER, fileDigest } from './snapshot-fetch.js';
import { WireFormatError, decodeBatch, type Batch, type BatchItem, type Carried, type CarriedAnswer } from './wire.js';

declare module 'fastify' {
  interface FastifySchema {
    /** Leaves the route out of the OpenAPI document (the flag @fastify/swagger reads). */
    hide?: boolean;
  }
}

export const RAFT_PATH = '/internal/raft';
/** One long-lived POST per peer carrying frames of Raft batches (frames.ts); RAFT_PATH takes one batch. */
export const RAFT_STREAM_PATH = '/internal/raft-stream';
export const SNAPSHOT_PATH = '/internal/snapshot';
/** Set on a Raft stream's IncomingMessage once its caller passed every check: its body has no deadline (app.ts). */
export const UNBOUNDED_BODY: unique symbol = Symbol('mom.unboundedBody');
export const PROPOSE_PATH = '/internal/propose';
export const COMMAND_PATH = '/internal/command';
export const COMMANDS_PATH = '/internal/commands';
export const POSITIONS_PATH = '/internal/positions';
export const QUERY_PATH = '/internal/query';
/** Rate-limit events of a peer (limit-gossip.ts). */
export const LIMITS_PATH = '/internal/limits';
export const DEFAULT_BODY_LIMIT = 64 * 1024 * 1024;
/** Digests of served images kept (a partition's newest image and a few older ones still downloading). */
const MAX_KEPT_DIGESTS = 32;
/**
 * On Raft requests: the newest log format the sender reads (src/store/broker/format.ts). Builds
 * before formats send none, and read format 1.
 */
export const FORMAT_HEADER = 'x-mom-format';
/** The sender's wall clock (ms since the epoch) when it started the request (src/partition/cluster-clock.ts). */
export const CLOCK_HEADER = 'x-mom-clock';
/**
 * Which key the sender signs access tokens with (tokenKeyOf): nodes of one cluster must share it, or
 * a client's token works on some nodes only. Builds before it send none, and are not checked.
 */
export const TOKEN_KEY_HEADER = 'x-mom-token-key';

/** Which key a node signs access tokens with: a tag of its JWT secret. */
export function tokenKeyOf(jwtSecret: string): string {
  return secretTag(jwtSecret, 'mom access tokens');
}

/** Where a forwarded command's lines go: the leader's log, under the client request's id. */
export type CommandLog = Pick<FastifyBaseLogger, 'debug' | 'error'>;

/**
 * The request's logger, with the forwarding node's request id for the command when it sent one. The
 * child logger is made at the first line logged: most commands log none, and a pino child per
 * command of a forwarded batch took about 1% of a leader's busy time under single sends.
 */
function commandLog(log: FastifyBaseLogger, requestId: string | undefined): CommandLog {
  if (requestId === undefined) return log;
  let child: FastifyBaseLogger | null = null;
  const get = (): FastifyBaseLogger => (child ??= log.child({ forwardedRequestId: requestId }));
  return {
    debug: ((...args: Parameters<FastifyBaseLogger['debug']>) => {
      if (log.level === 'debug' || log.level === 'trace') get().debug(...args);
    }) as FastifyBaseLogger['debug'],
    error: ((...args: Parameters<FastifyBaseLogger['error']>) => get().error(...args)) as FastifyBaseLogger['error'],
  };
}

export interface InternalRoutesOptions {
  readonly clusterSecret: string;
  /** Monotonic milliseconds, for how often refusals are logged (REFUSAL_LOG_MS); performance.now by default. */
  readonly now?: () => number;
  /** This node's tokenKeyOf(jwtSecret): a peer that says another one is refused. Unset: not checked. */
  readonly tokenKey?: string;
  /**
   * Every batch that passed the secret and validation. The answer (204, or a stream's
   * acknowledgement) waits for a returned promise, so a slow receiver slows its sender, which keeps
   * one POST, or a window of stream frames, in flight per peer.
   */
  onMessages(from: NodeId, items: BatchItem[], format: number, clock?: ClockSample): void | Promise<void>;
  /**
   * The file holding the snapshot `ref` of `partition`, or null when there is none. `ref` is whatever
   * an authenticated peer asked for: look it up among known snapshots, never join it into a path.
   */
  snapshotFile(partition: number, ref: string): string | null | Promise<string | null>;
  /** Called as each chunk of the file `path` that snapshotFile gave for `partition` leaves. */
  snapshotRead?(partition: number, path: string): void;
  /**
   * This node's id. When set, a batch holding a message for another node is refused with 421: the
   * sender's peer table points this node's URL at the wrong id, and feeding those messages to the
   * local groups would be worse than losing them.
   */
  readonly self?: NodeId;
  /**
   * With TLS: refuse a peer that did not present a certificate signed by the cluster's CA (mutual
   * TLS). The server asks every client for a certificate but lets API clients without one through;
   * only these routes require it.
   */
  readonly requireClientCert?: boolean;
  /**
   * A system command (dead-letter delivery and the like) forwarded by a peer to this node as the
   * partition's leader. Answers the command's result, or throws the partition layer's NotLeaderError.
   */
  onPropose?(partition: number, command: unknown): Promise<unknown>;
  /**
   * A client's command forwarded by the node that received it, to this node as the partition's
   * leader, under the client's identity. Answers a router Answer (see router.ts).
   */
  onCommand?(partition: number, actor: string | null, command: unknown, idempotencyKey: string | undefined, log: CommandLog): Promise<unknown>;
  /**
   * A command carried with `track` (wire.ts) by `from`: appended here as the partition's leader,
   * answered at once with where (answer.ts's Proposed), or with an Answer (or its promise) when it
   * was not appended or `from` is to have the result. When set, with
   * `carried`, a stream's answer says so (TRACKS_HEADER); without it such a command runs as onCommand.
   */
  onTracked?(from: NodeId, partition: number, actor: string | null, command: unknown, idempotencyKey: string | undefined, log: CommandLog): unknown;
  /**
   * Forwarded commands and answers riding in Raft stream frames (wire.ts's Carried). When set, with
   * onCommand, a stream's answer says that this node reads them (CARRIES_HEADER). Each carried
   * command runs as onCommand, and its Answer goes to `answer`, to leave in a frame of this node's
   * own stream to the sender; answers to this node's commands go to `answered`.
   */
  readonly carried?: {
    answer(to: NodeId, id: string, answer: unknown): void;
    answered(from: NodeId, answers: readonly CarriedAnswer[]): void;
  };
  /** Each partition's term and last log index here (a new node deciding whether the cluster is new). */
  positions?(): { terms: number[]; lastIndexes: number[]; untouchedBy: string[] };
  /** Rate-limit events a peer counted (limit-gossip.ts): the API validates each before counting it. */
  onLimitEvents?(events: readonly unknown[]): void;
  /** A client's read forwarded likewise; runs with a ReadIndex here. */
  onQuery?(partition: number, query: unknown): Promise<unknown>;
  /** Largest batch accepted, in bytes; DEFAULT_BODY_LIMIT by default. */
  readonly bodyLimit?: number;
  /**
   * A Raft stream that carries nothing for this long is cut (ms; default STREAM_IDLE_MS). A sender
   * replaces its streams every minute while it sends, so this frees the streams of senders that went
   * away without a word (a cut network, a frozen host).
   */
  readonly streamIdleMs?: number;
}

export const STREAM_IDLE_MS = 120_000;
/** A closing node waits this long at most for the answers of carried commands before it ends its streams. */
export const CLOSE_SETTLE_MS = 10_000;

/**
 * A refused caller's URL as its warning logs it: the path, at most 200 characters. Anyone can send a
 * refused request, at warn; the whole URL (16 KiB of query string) made each a 15 KB log line.
 */
const loggedUrl = (url: string): string => {
  const path = url.split('?', 1)[0]!;
  return path.length <= 200 ? path : `${path.slice(0, 200)}…`;
};

/** A refusal of one reason from one address is logged at most once in this long. */
export const REFUSAL_LOG_MS = 10_000;
/** Reasons and addresses remembered for that (an attacker's many addresses cannot grow it past this). */
const MAX_REFUSAL_KEYS = 1024;
/** Refusal lines in one REFUSAL_LOG_MS, whatever their addresses: the rest are counted in one line after. */
export const MAX_REFUSAL_LINES = 10;

/**
 * Logs refused inter-node requests at warn, each reason from each address at most once every
 * REFUSAL_LOG_MS, with how many were left out since, and at most MAX_REFUSAL_LINES lines in all
 * every REFUSAL_LOG_MS, then one line counting the others: a peer with another secret retries its
 * stream about once a second, and anyone who can reach the port can send refused requests as fast as
 * it likes, from as many addresses as it has (an IPv6 client has a /64), so a line per request would
 * fill the node's disk with the same words.
 */
function refusalLog(now: () => number): (request: FastifyRequest, reason: string, fields: object, msg: string) => void {
  const last = new Map<string, { at: number; left: number }>();
  let windowFrom = -Infinity;
  let lines = 0;
  let overBudget = 0;
  return (request, reason, fields, msg) => {
    const t = now();
    if (t - windowFrom >= REFUSAL_LOG_MS) {
      if (overBudget > 0) request.log.warn({ notLogged: overBudget }, `inter-node requests refused: ${overBudget} more were not logged in ${REFUSAL_LOG_MS / 1000} s (too many addresses)`);
      windowFrom = t;
      lines = 0;
      overBudget = 0;
    }
    const key = `${reason} ${request.ip}`;
    const seen = last.get(key);
    if (seen !== undefined && t - seen.at < REFUSAL_LOG_MS) {
      seen.left++;
      return;
    }
    if (lines >= MAX_REFUSAL_LINES) {
      overBudget++;
      return;
    }
    lines++;
    request.log.warn(seen !== undefined && seen.left > 0 ? { ...fields, notLogged: seen.left } : fields, msg);
    last.delete(key);
    last.set(key, { at: t, left: 0 });
    if (last.size > MAX_REFUSAL_KEYS) last.delete(last.keys().next().value!);
  };
}

export async function internalRoutes(app: FastifyInstance, opts: InternalRoutesOptions): Promise<void> {
  assertUsableSecret(opts.clusterSecret);
  const refused = refusalLog(opts.now ?? (() => performance.now()));
  const isClusterSecret = secretMatcher(opts.clusterSecret);
  const bodyLimit = opts.bodyLimit ?? DEFAULT_BODY_LIMIT;

  // Replace, inside this context only, whatever octet-stream parser an outer context may have.
  if (app.hasContentTypeParser('application/octet-stream')) app.removeContentTypeParser('application/octet-stream');
  app.addContentTypeParser('application/octet-stream', { parseAs: 'buffer', bodyLimit }, (_req, body, done) => {
    done(null, body);
  });

  /** A message of `batch` for another node than this one, if any (see `self`). */
  const misdirectedIn = (batch: Batch): BatchItem | undefined => (opts.self === undefined ? undefined : batch.items.find((it) => it.message.to !== opts.self));

  // A Raft stream's body is read as it comes, frame by frame: no parser buffers it.
  app.addContentTypeParser(FRAMES_TYPE, (_req, payload, done) => {
    done(null, payload);
  });
  // Streams stay open until their sender ends them: a closing node ends the ones it serves, or its
  // close would wait for its peers. It ends them once it owes no answer to a carried command (within
  // CLOSE_SETTLE_MS), and cleanly: every frame taken acknowledged, then the end, so that a sender
  // knows the frames after them were not taken. (A node that forwards its own commands in streams
  // waits for their answers before it closes at all: HttpTransport.settle.)
  const streams = new Map<Readable, () => void>();
  let closing = false;
  /** Carried commands taken and not yet answered; `idle` is called when that falls to 0. */
  let inProgress = 0;
  let idle: (() => void) | null = null;
  app.addHook('preClose', async () => {
    closing = true;
    const until = performance.now() + CLOSE_SETTLE_MS;
    // Commands may still come in the streams while the ones taken are being answered.
    while (inProgress > 0 && performance.now() < until) {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([new Promise<void>((resolve) => (idle = resolve)), new Promise((resolve) => (timer = setTimeout(resolve, until - performance.now())))]);
      clearTimeout(timer);
    }
    for (const stop of streams.values()) stop();
  });

  app.addHook('onRequest', async (request, reply) => {
    if (opts.requireClientCert === true && (request.raw.socket as TLSSocket).authorized !== true) {
      refused(request, 'certificate', { remoteAddress: request.ip, method: request.method, url: loggedUrl(request.url) }, 'inter-node request refused: no peer certificate signed by the cluster CA');
      return sendProblem(reply, 'unauthorized', 'a peer certificate signed by the cluster CA is required');
    }
    const token = bearerToken(request.headers.authorization);
    if (token !== null && isClusterSecret(token)) {
      const theirs = request.headers[TOKEN_KEY_HEADER];
      if (opts.tokenKey === undefined || theirs === undefined || theirs === opts.tokenKey) return;
      refused(request, 'token key', { remoteAddress: request.ip, url: loggedUrl(request.url) }, 'inter-node request refused: the peer signs access tokens with another JWT secret (MOM_JWT_SECRET must be the same on every node)');
      return sendProblem(reply, 'unauthorized', 'this node signs access tokens with another JWT secret: MOM_JWT_SECRET must be the same on every node');
    }
    // Never log the token: a wrong one may be a typo of the real secret.
    const credentials = token === null ? 'missing' : 'wrong';
    refused(request, `secret ${credentials}`, { remoteAddress: request.ip, method: request.method, url: loggedUrl(request.url), credentials }, 'inter-node request refused: no valid cluster secret');
    return sendProblem(reply, 'unauthorized', 'a valid cluster secret is required');
  });

  app.setErrorHandler((err: FastifyError, request, reply) => {
    const status = err.statusCode ?? 500;
    if (status >= 500) {
      request.log.error({ err }, 'inter-node request failed');
      return sendProblem(reply, 'internal', 'internal error');
    }
    return sendProblem(reply, clientErrorCode(status), err.message);
  });

  app.post(
    RAFT_PATH,
    // Every peer posts here several times per loop turn: keep per-request info logs off.
    { schema: { hide: true }, bodyLimit, logLevel: 'warn' },
    async (request, reply) => {
      // When the request began, not when its body had arrived: the sender's clock is from its start.
      const heardAt = performance.now() - reply.elapsedTime;
      const body = request.body;
      if (!Buffer.isBuffer(body)) {
        return sendProblem(reply, 'validation_failed', 'expected an application/octet-stream batch');
      }
      let batch;
      try {
        batch = decodeBatch(body);
      } catch (err) {
        if (!(err instanceof WireFormatError)) throw err;
        request.log.warn({ remoteAddress: request.ip, err: err.message }, 'inter-node batch refused: malformed');
        return sendProblem(reply, 'validation_failed', err.message);
      }
      if (batch.carried !== undefined) return sendProblem(reply, 'validation_failed', 'forwarded commands travel in Raft streams only');
      const misdirected = misdirectedIn(batch);
      if (misdirected !== undefined) {
        request.log.warn({ from: batch.from, to: misdirected.message.to }, 'inter-node batch refused: addressed to another node');
        return sendProblem(reply, 'misdirected', `this is node ${opts.self}, not ${misdirected.message.to}`);
      }
      await opts.onMessages(batch.from, batch.items, readableFormat(request.headers[FORMAT_HEADER]), clockOf(request.headers[CLOCK_HEADER], heardAt));
      return reply.code(204).send();
    },
  );

  /**
   * Runs a command a peer forwarded (in a POST or a stream's frame) under its request id: its Answer.
   * One command's failure is that command's unknown outcome, as a 500 is for a single one.
   */
  const runForwarded = (c: Forwarded & { readonly track?: true }, base: FastifyBaseLogger, from?: NodeId): Promise<unknown> => {
    const log = commandLog(base, c.requestId);
    const { onTracked, onCommand } = opts;
    let run: () => unknown;
    if (c.track === true && onTracked !== undefined && from !== undefined) run = () => onTracked(from, c.partition, c.actor, c.command, c.idempotencyKey, log);
    else if (onCommand !== undefined) run = () => onCommand(c.partition, c.actor, c.command, c.idempotencyKey, log);
    else return Promise.resolve({ kind: 'retry', detail: 'this node takes no forwarded commands' });
    return new Promise<unknown>((resolve) => resolve(run())).catch((err: unknown) => {
      log.error({ err }, 'forwarded command failed');
      return { kind: 'unknown', detail: 'the leader failed while proposing it', timedOut: false };
    });
  };

  /**
   * Answers carried by a peer go to their waiting callers; each carried command is proposed at once,
   * not awaited (the stream goes on), and its Answer leaves in a frame to the peer. Commands log on
   * the node's logger, at its level: the stream's own requests log at warn only.
   */
  const takeCarried = (from: NodeId, carried: Carried): void => {
    const sink = opts.carried;
    if (sink === undefined) return;
    if (carried.answers.length > 0) sink.answered(from, carried.answers);
    for (const c of carried.commands) {
      inProgress++;
      void runForwarded(c, app.log, from).then((answer) => {
        sink.answer(from, c.id, answer);
        if (--inProgress === 0) idle?.();
      });
    }
  };

  app.post(RAFT_STREAM_PATH, { schema: { hide: true }, logLevel: 'warn', config: { longLived: true } }, async (request, reply) => {
    if (request.headers['content-type'] !== FRAMES_TYPE) {
      return sendProblem(reply, 'unsupported_media_type', `expected ${FRAMES_TYPE}`);
    }
    // A stream that reached its handler after preClose ran would hold the close up.
    if (closing) return sendProblem(reply, 'unavailable', 'this node is closing');
    const body = request.body as Readable;
    const format = readableFormat(request.headers[FORMAT_HEADER]);
    // The sender's clock as the stream began: each frame passes the same sample on.
    const clock = clockOf(request.headers[CLOCK_HEADER], performance.now());
    (request.raw as { [UNBOUNDED_BODY]?: true })[UNBOUNDED_BODY] = true;
    reply.hijack();
    const res = reply.raw;
    const carries = opts.carried !== undefined && opts.onCommand !== undefined;
    const said = { [CARRIES_HEADER]: '1', [SYSTEM_HEADER]: '1', [BODIES_HEADER]: '1', ...(opts.onTracked === undefined ? {} : { [TRACKS_HEADER]: '1' }) };
    res.writeHead(200, carries ? { 'content-type': FRAMES_TYPE, ...said } : { 'content-type': FRAMES_TYPE });
    // The headers now, not with the first acknowledgement: the sender carries commands once it knows.
    res.flushHeaders();
    res.setTimeout(opts.streamIdleMs ?? STREAM_IDLE_MS, () => res.destroy());
    const reader = new ChunkReader();
    const every = ackEvery(streamWindow(request.headers[WINDOW_HEADER]));
    let taken = 0;
    let acked = 0;
    /** Set while a frame taken waits for its acknowledgement (ACK_DELAY_MS at most). */
    let ackTimer: NodeJS.Timeout | null = null;
    /** The count of frames taken, unless already said; false when the answer should drain first. */
    const acknowledge = (): boolean => {
      if (ackTimer !== null) clearTimeout(ackTimer);
      ackTimer = null;
      if (acked === taken || res.destroyed || res.writableEnded) return true;
      acked = taken;
      return res.write(ackWord(taken));
    };
    /** Answers REFUSED and why; the connection goes once the answer is out. */
    const refuse = (detail: string, log: object): void => {
      request.log.warn({ remoteAddress: request.ip, ...log }, `inter-node stream refused: ${detail}`);
      acknowledge();
      res.end(Buffer.concat([ackWord(REFUSED), Buffer.from(detail, 'utf8')]), () => body.destroy());
    };
    /** Set by the node's close: no frame is taken after it, and the answer ends after the last one taken. */
    let stopped = false;
    let busy = false;
    const end = (): void => {
      acknowledge();
      if (!res.writableEnded && !res.destroyed) res.end(() => body.destroy());
    };
    streams.set(body, () => {
      stopped = true;
      if (!busy) end();
    });
    try {
      // Leaving the loop early must not destroy the body before a refusal is out: refuse() does.
      for await (const chunk of body.iterator({ destroyOnReturn: false }) as AsyncIterable<Buffer>) {
        if (stopped) return;
        reader.push(chunk);
        for (let frame = reader.nextFrame(bodyLimit); frame !== null; frame = reader.nextFrame(bodyLimit)) {
          // Stopped while waiting for the answer to drain: this frame is not taken (end() said so).
          if (stopped) {
            end();
            return;
          }
          if (taken >= MAX_STREAM_FRAMES) {
            refuse(`more than ${MAX_STREAM_FRAMES} frames in one stream`, {});
            return;
          }
          const batch = decodeBatch(frame);
          const misdirected = misdirectedIn(batch);
          if (misdirected !== undefined) {
            refuse(`this is node ${opts.self}, not ${misdirected.message.to}`, { from: batch.from, to: misdirected.message.to });
            return;
          }
          if (batch.carried !== undefined) {
            if (!carries) {
              refuse('this node takes no forwarded commands in a stream', { from: batch.from });
              return;
            }
            // As a build from before TRACKS_HEADER would: it refuses the field.
            if (opts.onTracked === undefined && batch.carried.commands.some((c) => c.track === true)) {
              refuse('this node takes no tracked commands', { from: batch.from });
              return;
            }
            takeCarried(batch.from, batch.carried);
          }
          busy = true;
          await opts.onMessages(batch.from, batch.items, format, clock);
          busy = false;
          taken++;
          if (stopped) {
            end();
            return;
          }
          if (taken - acked >= every) {
            // A sender that does not read its acknowledgements is not read either.
            if (!acknowledge()) await drained(res);
          } else {
            ackTimer ??= setTimeout(acknowledge, ACK_DELAY_MS).unref();
          }
          if (res.destroyed) return;
        }
      }
      if (reader.pending > 0) request.log.warn({ remoteAddress: request.ip, bytes: reader.pending }, 'inter-node stream ended inside a frame');
      acknowledge();
      res.end();
    } catch (err) {
      if (err instanceof WireFormatError || err instanceof FrameError) {
        refuse(err.message, {});
        return;
      }
      // The sender went away (its node closed, the connection broke) or this node is closing.
      if (!body.destroyed && !res.destroyed && !stopped) request.log.error({ err }, 'inter-node stream failed');
      body.destroy();
      res.destroy();
    } finally {
      if (ackTimer !== null) clearTimeout(ackTimer);
      streams.delete(body);
    }
  });

  app.post<{ Body: Static<typeof ProposeBody> }>(
    PROPOSE_PATH,
    { bodyLimit, schema: { hide: true, body: ProposeBody } },
    async (request, reply) => {
      if (opts.onPropose === undefined) return sendProblem(reply, 'not_found', 'this node takes no forwarded commands');
      try {
        return { result: await opts.onPropose(request.body.partition, request.body.command) };
      } catch (err) {
        if (err instanceof NotLeaderError) return sendProblem(reply, 'not_leader', `not the leader; leader: ${String(err.leader ?? 'unknown')}`);
        if (err instanceof CommandRefusedError) return sendProblem(reply, 'validation_failed', err.message);
        // Dead letters held while the partition's clock catches up: the sender's next pass asks again.
        if (err instanceof ClockBehindError) {
          request.log.debug({ err }, 'dead letters forwarded by a peer wait for the partition clock');
          return sendProblem(reply, 'unavailable', err.message);
        }
        request.log.warn({ err }, 'a system command forwarded by a peer was not applied');
        return sendProblem(reply, 'unavailable', 'the command was not applied here; retry');
      }
    },
  );

  app.post<{ Body: Forwarded }>(
    COMMAND_PATH,
    // A forwarded command carries a whole batch of messages: the public route's limit, and more.
    { bodyLimit, schema: { hide: true, body: ForwardedCommand } },
    async (request, reply) => {
      if (opts.onCommand === undefined) return sendProblem(reply, 'not_found', 'this node takes no forwarded commands');
      const { partition, actor, command, idempotencyKey, requestId } = request.body;
      return opts.onCommand(partition, actor, command, idempotencyKey, commandLog(request.log, requestId));
    },
  );

  // The commands a node forwarded to this leader in one loop turn, in one request: each is proposed
  // at once, and the answer (one Answer per command, in order) waits for all of them.
  app.post<{ Body: Static<typeof CommandsBody> }>(
    COMMANDS_PATH,
    { bodyLimit, schema: { hide: true, body: CommandsBody } },
    async (request, reply) => {
      if (opts.onCommand === undefined) return sendProblem(reply, 'not_found', 'this node takes no forwarded commands');
      return { answers: await Promise.all(request.body.items.map((item) => runForwarded(item, request.log))) };
    },
  );

  app.post<{ Body: Static<typeof LimitsBody> }>(
    LIMITS_PATH,
    {
      // A full batch of the largest events (a 64-character username, a 45-character address) is
      // about 150 KB: the API routes' 64 KiB would refuse it whole.
      bodyLimit: MAX_BATCH_EVENTS * 1024,
      schema: { hide: true, body: LimitsBody },
    },
    async (request, reply) => {
      if (opts.onLimitEvents === undefined) return sendProblem(reply, 'not_found', 'this node takes no rate-limit events');
      opts.onLimitEvents(request.body.events);
      return reply.code(204).send();
    },
  );

  app.post(POSITIONS_PATH, { schema: { hide: true } }, async (_request, reply) => {
    if (opts.positions === undefined) return sendProblem(reply, 'not_found', 'this node does not tell its log positions');
    return opts.positions();
  });

  app.post<{ Body: Static<typeof QueryBody> }>(
    QUERY_PATH,
    { schema: { hide: true, body: QueryBody } },
    async (request, reply) => {
      if (opts.onQuery === undefined) return sendProblem(reply, 'not_found', 'this node takes no forwarded reads');
      return opts.onQuery(request.body.partition, request.body.query);
    },
  );

  // The digests of images served lately, by path and the file's identity: one image serves each
  // follower that asks while it is the newest, and its digest reads the whole file.
  const digests = new Map<string, { id: string; digest: Promise<string> }>();
  const digestOf = (path: string, id: string, file: FileHandle, size: number): Promise<string> => {
    const known = digests.get(path);
    if (known !== undefined && known.id === id) return known.digest;
    const digest = fileDigest(file, size);
    digests.delete(path);
    digests.set(path, { id, digest });
    if (digests.size > MAX_KEPT_DIGESTS) digests.delete(digests.keys().next().value!);
    digest.catch(() => {
      if (digests.get(path)?.digest === digest) digests.delete(path);
    });
    return digest;
  };

  app.get<{ Params: Static<typeof SnapshotParams> }>(
    `${SNAPSHOT_PATH}/:partition/:ref`,
    // A HEAD twin would open the file for nothing.
    { exposeHeadRoute: false, schema: { hide: true, params: SnapshotParams } },
    async (request, reply) => {
      const { partition, ref } = request.params;
      const path = await opts.snapshotFile(partition, ref);
      const file = path === null ? null : await openIfExists(path);
      if (path === null || file === null) return sendProblem(reply, 'not_found', `no snapshot ${ref} for partition ${partition}`);
      let size: number;
      let digest: string;
      try {
        const stat = await file.stat();
        size = stat.size;
        digest = await digestOf(path, `${stat.dev}:${stat.ino}:${stat.size}:${stat.mtimeMs}`, file, size);
      } catch (err) {
        await file.close();
        throw err;
      }
      // content-length lets the receiver tell a complete file from one cut short, the digest a damaged one.
      reply.header('content-length', size).header(IMAGE_DIGEST_HEADER, digest).type('application/octet-stream');
      const read = opts.snapshotRead;
      if (read === undefined) return reply.send(file.createReadStream());
      // Through a transform, not a 'data' listener: that would start the flow before the reply pipes it.
      const told = new Transform({
        transform(chunk: Buffer, _encoding, done) {
          read(partition, path);
          done(null, chunk);
        },
      });
      pipeline(file.createReadStream(), told, () => undefined);
      return reply.send(told);
    },
  );
}

/** Resolves once `res` can take more, or is gone. */
function drained(res: ServerResponse): Promise<void> {
  return new Promise((resolve) => {
    const done = (): void => {
      res.off('drain', done);
      res.off('close', done);
      resolve();
    };
    res.on('drain', done);
    res.on('close', done);
  });
}

async function openIfExists(path: string): Promise<FileHandle | null> {
  try {
    return await open(path, 'r');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  }
}

/** A peer's wall clock (CLOCK_HEADER) heard at monotonic time `mono`; undefined when it said nothing usable. */
function clockOf(header: string | string[] | undefined, mono: number): ClockSample | undefined {
  if (typeof header !== 'string' || !/^\d{1,16}$/.test(header)) return undefined;
  return { wall: Number(header), mono };
}

/** The format a peer said it reads (FORMAT_HEADER): 1 when it said nothing, or nothing usable. */
function readableFormat(header: string | string[] | undefined): number {
  return typeof header === 'string' && /^[1-9][0-9]{0,8}$/.test(header) ? Number(header) : 1;
}
