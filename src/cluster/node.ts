// One node of the cluster without its HTTP server: its partitions (the node host), the HTTP transport
// to its peers, and the router that takes requests to their partitions' leaders. The server
// (src/server.ts) mounts the inter-node routes this node answers next to the REST API.
import { readFileSync } from 'node:fs';
import type { Logger } from 'pino';
import { NodeHost, commandOrigin, type Outbox, type PartitionStatus } from '../partition/host.js';
import { Housekeeping } from '../partition/housekeeping.js';
import type { NodeId } from '../raft/index.js';
import type { Command } from '../store/broker/index.js';
import { CatchUp, PEER_COMMITS_TIMEOUT_MS, type PeerCommits } from './catch-up.js';
import { checkClusterIdentity, markCaughtUp, recordIdentity, type NodeConfig } from './config.js';
import { LIMITS_PATH, POSITIONS_PATH, tokenKeyOf } from './internal-routes.js';
import { DiskSpace } from './disk-space.js';
import { LimitGossip } from './limit-gossip.js';
import type { CommandLog, InternalRoutesOptions } from './internal-routes.js';
import { Router } from './router.js';
import type { Answer, CarriedOutcome } from './answer.js';
import { HttpTransport } from './transport.js';

export interface NodeOptions {
  /** Milliseconds per Raft tick (default 100: elections after 1 to 2 s of silence). */
  readonly tickMs?: number;
  readonly snapshotEvery?: number;
  readonly keepBehindSnapshot?: number;
  /** This node's wall clock (default Date.now), for its entries' stamps and its API's limits and caches: a test gives a wrong one to play a node whose clock is off, or a still one. */
  readonly wallClock?: () => number;
  /** How long a request waits for a reachable leader before its 503 (default 5 s). */
  readonly leaderWaitMs?: number;
  /** Longest sleep of an idle long poll before it proposes a receive anyway (default 5 s). */
  readonly maxIdleMs?: number;
  /** The newest log format this node reads (default the build's; tests play other versions with it). */
  readonly format?: number;
  /** How the free space of the data folder is read (default statfs; a test plays a filling disk with it). */
  readonly diskFree?: (path: string) => Promise<number>;
}

export interface TlsMaterial {
  readonly cert: Buffer;
  readonly key: Buffer;
  readonly ca: Buffer;
}

/** The node's certificate, key and cluster CA, read from the files its configuration names; null without TLS. */
export function tlsMaterial(cfg: NodeConfig): TlsMaterial | null {
  return cfg.tls === null ? null : { cert: readFileSync(cfg.tls.cert), key: readFileSync(cfg.tls.key), ca: readFileSync(cfg.tls.ca) };
}

export class ClusterNode {
  private constructor(
    readonly cfg: NodeConfig,
    readonly host: NodeHost,
    readonly transport: HttpTransport,
    readonly router: Router,
    readonly tls: TlsMaterial | null,
    private readonly logger: Logger,
    /** The folder is known to have taken part before (lost log, --rejoin): learnTerms takes no empty peer for a new cluster. */
    private readonly tookPart: boolean,
    /** How the free space of the data folder is read (a test's); statfs by default. */
    diskFree?: (path: string) => Promise<number>,
  ) {
    // Rate-limit events go to every other node (limit-gossip.ts); a peer that does not take a batch
    // (down, or an older build without the route) loses it.
    const others = cfg.peers.filter((p) => p.id !== cfg.nodeId).map((p) => p.id);
    this.limits = new LimitGossip(others, async (peer, events) => {
      const r = await transport.call(peer, LIMITS_PATH, { events }, { timeoutMs: 2_000 });
      if (r.status !== 204) throw new Error(`${peer} answered ${r.status}`);
    });
    // Each node's disk space goes the same way (an event the API's limits ignore).
    this.disk = new DiskSpace({
      self: cfg.nodeId,
      peers: others,
      dataDir: cfg.dataDir,
      limitBytes: cfg.diskFreeLimit,
      publish: (event) => this.limits.publish(event),
      logger: { warn: (obj, msg) => logger.warn(obj, msg), info: (obj, msg) => logger.info(obj, msg) },
      ...(diskFree === undefined ? {} : { freeBytes: diskFree }),
    });
    this.limits.subscribe((event) => this.disk.receive(event));
    router.refuseWhenShort(() => this.disk.shortNodes());
    this.catchUp = new CatchUp({
      peerCommits: () => Promise.all(others.map((peer) => this.peerCommits(peer))),
      local: () =>
        host.replicas.map((r) => ({
          partition: r.partition,
          applied: r.state.isOpen() ? r.state.applied().index : null,
          leader: r.isLeader(),
          halted: r.halted !== null,
        })),
    });
  }

  /** `peer`'s commit index per partition (its /internal/positions), for CatchUp. */
  private async peerCommits(peer: NodeId): Promise<PeerCommits> {
    try {
      const r = await this.transport.call(peer, POSITIONS_PATH, {}, { timeoutMs: PEER_COMMITS_TIMEOUT_MS });
      // A build before the route (2026-11-28) has nothing to tell.
      if (r.status === 404) return 'unsaid';
      if (r.status !== 200) return 'silent';
      const commits = (r.body as { commits?: unknown }).commits;
      if (commits === undefined) return 'unsaid';
      const valid = Array.isArray(commits) && commits.length === this.cfg.partitions && commits.every((c) => Number.isSafeInteger(c) && (c as number) >= 0);
      return valid ? (commits as number[]) : 'silent';
    } catch {
      return 'silent';
    }
  }

  /** Rate-limit events shared with the other nodes, so that the API's limits hold across the cluster. */
  readonly limits: LimitGossip;
  /** The free space of this node's data folder, and the peers said short of it. */
  readonly disk: DiskSpace;
  /** Whether this node's replicas caught up since it started (catch-up.ts), for readiness. */
  readonly catchUp: CatchUp;

  private closed = false;

  /** Opens the partitions and the transport; nothing runs until start(). */
  static async open(cfg: NodeConfig, logger: Logger, opts: NodeOptions = {}): Promise<ClusterNode> {
    const identity = checkClusterIdentity(cfg);
    const tls = tlsMaterial(cfg);
    // Appends lost with a failed batch are sent again at once by their groups (the host is made below).
    let lostTo: ((peer: NodeId, partitions: readonly number[]) => void) | null = null;
    const transport = new HttpTransport({
      onLost: (peer, partitions) => lostTo?.(peer, partitions),
      self: cfg.nodeId,
      peers: cfg.peers,
      clusterSecret: cfg.clusterSecret,
      tokenKey: tokenKeyOf(cfg.jwtSecret),
      ...(tls === null ? {} : { tls: { ca: tls.ca, cert: tls.cert, key: tls.key } }),
      logger: { warn: (obj, msg) => logger.warn(obj, msg) },
      ...(opts.format === undefined ? {} : { format: opts.format }),
      ...(opts.wallClock === undefined ? {} : { now: opts.wallClock }),
    });
    const tickMs = opts.tickMs ?? 100;
    // The host's system commands for a partition led elsewhere go the way clients' commands go
    // (Router.proposeSystemAt); the router is made once the host is open.
    let router: Router | null = null;
    const outbox: Outbox = {
      send: (items) => transport.send(items),
      fetchSnapshot: (peer, partition, ref, dest) => transport.fetchSnapshot(peer, partition, ref, dest),
      forward: (peer, partition, command) => {
        if (router === null) return Promise.reject(new Error('the node is still opening'));
        return router.proposeSystemAt(peer, partition, command);
      },
    };
    const host = await NodeHost.open({
      self: cfg.nodeId,
      voters: cfg.peers.map((p) => p.id),
      partitions: cfg.partitions,
      dataDir: cfg.dataDir,
      outbox,
      tickMs,
      ...(opts.snapshotEvery === undefined ? {} : { snapshotEvery: opts.snapshotEvery }),
      ...(opts.keepBehindSnapshot === undefined ? {} : { keepBehindSnapshot: opts.keepBehindSnapshot }),
      ...(opts.format === undefined ? {} : { format: opts.format }),
      ...(opts.wallClock === undefined ? {} : { wallClock: opts.wallClock }),
      log: { segmentBytes: cfg.logSegmentBytes },
      logger: { info: (obj, msg) => logger.info(obj, msg), warn: (obj, msg) => logger.warn(obj, msg), error: (obj, msg) => logger.error(obj, msg) },
    });
    // The proposals no request makes (sweeps, clocks, dead letters, format raises), on the host's passes.
    new Housekeeping(host);
    lostTo = (peer, partitions) => host.reportLost(peer, partitions);
    router = new Router(host, transport, {
      self: cfg.nodeId,
      partitions: cfg.partitions,
      pollMs: Math.max(10, Math.min(tickMs, 100)),
      ...(opts.leaderWaitMs === undefined ? {} : { leaderWaitMs: opts.leaderWaitMs }),
      ...(opts.maxIdleMs === undefined ? {} : { maxIdleMs: opts.maxIdleMs }),
    });
    // The long polls a crashed previous process of this node left parked, taken out (Router.pass).
    const routes = router;
    host.onPass(() => routes.pass());
    // cluster.json says this folder caught up once, yet every log is empty with term 0: its wal/ is
    // gone (deleted with state/, or left out of a restore). It may have voted and acknowledged
    // entries it no longer holds: it catches up first, as a new folder does (a cluster whose members
    // are all empty still starts at once: learnTerms).
    if (!identity.catchingUp && host.startedEmpty) {
      logger.warn('cluster.json is kept but the log is empty: the log was lost; catching up before voting');
      identity.catchingUp = true;
      identity.tookPart = true;
    }
    // Recorded only now that the log's LOCK is this process's: a second process started on a folder
    // in use (with --rejoin) stops at the LOCK and leaves cluster.json as it was.
    if ((identity.catchingUp && identity.tookPart) || identity.recordCluster) recordIdentity(cfg, identity.catchingUp, identity.tookPart);
    if (identity.catchingUp) {
      logger.info('this data folder is new, emptied or restored: no votes until every partition caught up from its leader');
      host.rejoin.suspendUntilCaughtUp(() => {
        markCaughtUp(cfg);
        logger.info('every partition caught up from its leader; voting');
      });
    }
    return new ClusterNode(cfg, host, transport, router, tls, logger, identity.tookPart, opts.diskFree);
  }

  /**
   * For a node that may have lost its state (see Rejoin.suspendUntilCaughtUp): before it takes
   * part at all, learn each partition's highest term from every peer, so that it never acknowledges
   * a leader of a term older than one it may have voted or acknowledged in. All peers must answer: a
   * term it took part in may live on one of them only. Two exceptions, both a new cluster: when every
   * peer and this node have empty logs in every partition, there is nothing to learn and nobody to
   * catch up from, and voting starts at once; and
   * when every peer has run since its log was empty and has had no Raft message from this node (it
   * started late), nothing of this node's counts anywhere, and voting starts once the terms are
   * learned. Asked every half second until then; meanwhile peers' messages are dropped.
   */
  private async learnTerms(): Promise<void> {
    type Positions = { terms: number[]; lastIndexes: number[]; untouchedBy?: unknown };
    const others = this.cfg.peers.filter((p) => p.id !== this.cfg.nodeId);
    const empty = (p: Positions): boolean => p.terms.length === this.cfg.partitions && p.terms.every((x) => x === 0) && p.lastIndexes.every((x) => x === 0);
    let waited = 0;
    while (!this.closed && this.host.rejoin.holdingForTerms) {
      const answers = await Promise.all(
        others.map((p) =>
          this.transport.call(p.id, POSITIONS_PATH, {}, { timeoutMs: 2_000 }).then(
            (r) => (r.status === 200 ? (r.body as Positions) : null),
            () => null,
          ),
        ),
      );
      if (this.closed) return;
      const got = answers.filter((a): a is Positions => a !== null && Array.isArray(a.terms) && Array.isArray(a.lastIndexes) && a.terms.length === this.cfg.partitions);
      const mineEmpty = empty(this.host.logPositions());
      // Only when every member answered empty is there nothing left to keep. A peer as empty as this
      // folder may have lost its disk too, and the member holding the cluster's entries may be the one
      // that has not answered: two replaced disks, the third node away for a moment, elected leaders
      // over nothing, and the third followed them when it came back (review of stop 62). So a new
      // cluster's first start waits for its three nodes, whether or not this folder took part.
      if (got.length === others.length && mineEmpty && got.every(empty)) {
        this.host.rejoin.applyTermFloors([]);
        this.logger.info({ peers: got.length }, 'a new cluster: every member is empty; voting');
        this.host.rejoin.resumeVoting();
        return;
      }
      if (got.length === others.length) {
        const floors = Array.from({ length: this.cfg.partitions }, (_, p) => Math.max(0, ...got.map((a) => a.terms[p] ?? 0)));
        this.host.rejoin.applyTermFloors(floors);
        // A new cluster that started without this node: every peer has run since its own log was
        // empty and has had no Raft message from this node, so no vote or acknowledgement of this
        // node's counts anywhere, and it may vote at once (in terms past the floors). Otherwise a
        // partition whose leader failed before this node caught up would wait for that leader.
        const untouched = got.every((a) => Array.isArray(a.untouchedBy) && a.untouchedBy.includes(this.cfg.nodeId));
        if (!this.tookPart && mineEmpty && untouched) {
          this.logger.info('a new cluster that started without this node, which none of its peers has heard from: voting');
          this.host.rejoin.resumeVoting();
          return;
        }
        this.logger.info('learned every partition’s term from all peers; catching up before voting');
        return;
      }
      if (++waited % 20 === 0) {
        this.logger.warn({ answered: got.length, of: others.length }, 'this data folder is new or restored: waiting for every peer to answer before taking part');
      }
      await new Promise((r) => setTimeout(r, 500));
    }
  }


  /** The answer to a command a peer may not forward here, or null when it may (logged either way). */
  private refuseForwarded(partition: number, actor: string | null, command: unknown, log: CommandLog): Answer | null {
    const type = (command as { type?: unknown }).type;
    log.debug({ partition, command: type, actor }, 'forwarded command');
    // A system command comes from a peer's housekeeping (Router.proposeSystemAt), never with an actor.
    const origin = commandOrigin(command);
    if (origin === null || (origin === 'system' && actor !== null)) return { kind: 'ok', result: { ok: false, code: 'validation_failed', detail: 'not a command a peer may forward' } };
    if (partition >= this.cfg.partitions) return { kind: 'ok', result: { ok: false, code: 'validation_failed', detail: `no partition ${partition}` } };
    return null;
  }

  /** What the inter-node routes of this node answer with (see internal-routes.ts). */
  internalRoutes(): InternalRoutesOptions {
    return {
      clusterSecret: this.cfg.clusterSecret,
      tokenKey: tokenKeyOf(this.cfg.jwtSecret),
      self: this.cfg.nodeId,
      requireClientCert: this.tls !== null,
      onMessages: (from, items, format, clock) => this.host.receive(from, items, format, clock),
      snapshotFile: (partition, ref) => this.host.snapshots.imageFor(partition, ref),
      snapshotRead: (partition, path) => this.host.snapshots.reading(partition, path),
      onPropose: (partition, command) => this.host.proposeForwarded(partition, command),
      onCommand: async (partition, actor, command, idempotencyKey, log) => {
        return this.refuseForwarded(partition, actor, command, log) ?? this.router.proposeHere(partition, actor, command as Command, idempotencyKey);
      },
      onTracked: (from, partition, actor, command, idempotencyKey, log) => {
        return this.refuseForwarded(partition, actor, command, log) ?? this.router.appendHere(from, partition, actor, command as Command, idempotencyKey);
      },
      carried: {
        answer: (to, id, answer) => this.transport.answer(to, id, answer as CarriedOutcome),
        answered: (from, answers) => this.transport.answered(from, answers),
      },
      positions: () => this.host.logPositions(),
      onLimitEvents: (events) => this.limits.receive(events),
      onQuery: async (partition, query) => {
        if (partition >= this.cfg.partitions) return { kind: 'ok', result: { ok: false, code: 'validation_failed', detail: `no partition ${partition}` } };
        return this.router.queryHere(partition, query as Parameters<Router['queryHere']>[1]);
      },
    };
  }

  start(): void {
    this.disk.start();
    this.host.start();
    if (this.host.rejoin.holdingForTerms) void this.learnTerms();
  }

  status(): PartitionStatus[] {
    return this.host.status();
  }

  /** Closes the partitions and their databases, then the transport. */
  async close(): Promise<void> {
    this.closed = true;
    this.disk.close();
    this.limits.close();
    await this.host.close();
    await this.transport.close();
  }
}
