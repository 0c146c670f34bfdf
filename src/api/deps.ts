// What the API needs from the rest of the node. buildApp(deps) takes it; src/server.ts wires the
// real cluster in, and `npm run openapi` builds the app with a broker that is never called.
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { Logger } from 'pino';
import type { InternalRoutesOptions } from '../cluster/internal-routes.js';
import type { Parking, RequestContext, Watch } from '../cluster/router.js';
import type { PartitionStatus } from '../partition/host.js';
import { partitionOf } from '../partition/routing.js';
import type { ChannelRef, Command, Query, Result } from '../store/broker/index.js';
import { ApiError, fromFailure } from './errors.js';
import type { SharedLimits } from './rate-limit.js';
import type { Receipts } from './receipts.js';

/** The router's surface (src/cluster/router.ts). */
export interface Broker {
  readonly partitions: number;
  propose(p: number, actor: string | null, command: Command, idempotencyKey: string | undefined, ctx?: RequestContext): Promise<Result>;
  query(p: number, query: Query, ctx?: RequestContext): Promise<Result>;
  staleQuery(p: number, query: Query): { result: Result; appliedIndex: number };
  /** `until`: when the wait ends, on the monotonic clock (performance.now()). */
  watch(p: number, ref: ChannelRef, until: number, want?: number): Watch;
  /** The log format partition `p` is in, as this node applied it. */
  format(p: number): number;
  /** Whether this node applies partition `p` (not while halted); absent: it does. A poll parks only where it applies. */
  appliesHere?(p: number): boolean;
  /** A long poll that parks in the partition's state (format 3). */
  park(): Parking;
  /** Work that runs after its request was answered; the node waits for it before it stops. */
  afterAnswer(work: Promise<unknown>): void;
  waiting(): number;
}

export interface ClusterView {
  readonly nodeId: string;
  readonly nodes: readonly { readonly id: string; readonly url: string }[];
  status(): PartitionStatus[];
  /** Partitions without a known leader for longer than `graceMs`. */
  leaderless(graceMs: number): number[];
  /**
   * Partitions whose replica here has not yet applied what the peers had committed when this node
   * first asked them after its start (src/cluster/catch-up.ts); empty once each has, for good.
   */
  catchingUp(): Promise<number[]>;
  /** Queue depths of the partitions led here, for /metrics (counters as of the last apply). */
  queueDepths(limit: number): { queue: string; partition: number; ready: number; leased: number; delayed: number }[];
  /**
   * Messages per partition led here, by state (counters as of the last apply), and the age of the
   * oldest (ms, by the partition's clock, which stamped it: not this node's wall clock), or null.
   */
  partitionDepths(): { partition: number; ready: number; leased: number; delayed: number; oldestAgeMs: number | null }[];
  /** Synced transactions of this node's Raft log since it started (one fsync each). */
  logSyncs(): number;
  /** Raft messages to the peers since this node started: delivered, dropped, failed, queued; batches delivered. */
  peerTraffic(): { sent: number; dropped: number; failed: number; queued: number; batches: number; carriedCommands: number; carriedAnswers: number; carriedProposed: number };
  /** How far each recently heard peer's wall clock is from this node's (ms; positive: ahead). */
  clockOffsets(): ReadonlyMap<string, number>;
  /** How long this node has heard from no peer, once past two election timeouts (ms); else 0. */
  cutOffFor(): number;
  /**
   * The free space of this node's data folder (null before its first look) and the limit under which
   * the cluster refuses writes that add data; the nodes short of space now, as this node knows. Absent: not watched.
   */
  disk?(): { freeBytes: number | null; limitBytes: number; shortNodes: readonly string[] };
}

export interface ApiDeps {
  readonly broker: Broker;
  readonly cluster: ClusterView;
  /** Signs and checks access tokens (HS256); the same on every node. */
  readonly jwtSecret: string;
  /** Seals and opens receipt handles (receipts.ts): keyed by the cluster secret, the same on every node. */
  readonly receipts: Receipts;
  /** Default TOKEN_TTL_SECONDS (auth.ts). */
  readonly tokenTtlSeconds?: number;
  /** Bytes of request bodies one client may have in flight on the node (default BODY_BYTES_PER_CLIENT). */
  readonly bodyBytesPerClient?: number;
  /** bcrypt cost; default 10 (the floor). */
  readonly bcryptCost?: number;
  /** A pino logger; silent when absent. */
  readonly logger?: Logger;
  /** Serve HTTPS (and ask clients for certificates, for the inter-node routes). */
  readonly https?: { cert: Buffer; key: Buffer; ca: Buffer };
  /** The inter-node routes, mounted on the same server; none when absent. */
  readonly internal?: InternalRoutesOptions;
  readonly now?: () => number;
  /** The other nodes' limit events, and where this node's go (rate-limit.ts); absent: limits per node. */
  readonly sharedLimits?: SharedLimits;
  /** How long a node trusts what it looked up of a user (auth.ts); default USER_RECHECK_MS, a minute. */
  readonly userRecheckMs?: number;
  /** Load balancers whose X-Forwarded-For is believed (addresses or CIDR ranges); none by default. */
  readonly trustProxy?: readonly string[];
  /** When set, /metrics needs `Authorization: Bearer <token>` and shows per-queue series. */
  readonly metricsToken?: string | null;
  /** How long a request's body may take to arrive after its headers (app.ts); default BODY_TIMEOUT_MS, a minute. */
  readonly bodyTimeoutMs?: number;
}

export const ctxOf = (request: FastifyRequest): RequestContext => ({ requestId: String(request.id) });

/** The Idempotency-Key header, validated by the route's header schema. */
export const idempotencyKeyOf = (request: FastifyRequest): string | undefined => {
  const k = request.headers['idempotency-key'];
  return typeof k === 'string' ? k : undefined;
};

export const actorOf = (request: FastifyRequest): string => {
  const sub = (request.user as { sub?: unknown } | undefined)?.sub;
  if (typeof sub !== 'string') throw new ApiError('unauthorized', 'a bearer token is required');
  return sub;
};

/** Proposes a command on the partition of `name` as the caller; answers its value or throws its failure. */
export async function write<T>(deps: ApiDeps, request: FastifyRequest, name: string, command: Command, opts: { idempotent?: boolean } = {}): Promise<T> {
  const p = partitionOf(name, deps.broker.partitions);
  const key = opts.idempotent === false ? undefined : idempotencyKeyOf(request);
  const r = await deps.broker.propose(p, actorOf(request), command, key, ctxOf(request));
  if (!r.ok) throw fromFailure(r);
  return r.value as T;
}

/**
 * Reads from the partition of `name`: linearizable by default; with ?consistency=stale from this
 * node's replica, marked with X-Stale and X-Applied-Index.
 */
export async function read<T>(deps: ApiDeps, request: FastifyRequest, reply: FastifyReply, name: string, query: Query): Promise<T> {
  const p = partitionOf(name, deps.broker.partitions);
  const stale = (request.query as { consistency?: string } | undefined)?.consistency === 'stale';
  let r: Result;
  if (stale) {
    const s = deps.broker.staleQuery(p, query);
    reply.header('x-stale', 'true').header('x-applied-index', String(s.appliedIndex));
    r = s.result;
  } else {
    r = await deps.broker.query(p, query, ctxOf(request));
  }
  if (!r.ok) throw fromFailure(r);
  return r.value as T;
}
