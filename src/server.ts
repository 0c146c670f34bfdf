// A running node, wired: the cluster node (partitions, transport, router) and the HTTP server that
// carries both the REST API (src/api: buildApp only builds the app) and the inter-node routes.
// src/main.ts runs one; tests run three in a process. Above every layer, as main.ts is.
import type { FastifyInstance } from 'fastify';
import { pino, type Logger, type LoggerOptions } from 'pino';
import { ClusterNode, type NodeOptions } from './cluster/node.js';
import type { NodeConfig } from './cluster/config.js';
import { CLOSE_SETTLE_MS } from './cluster/internal-routes.js';
import { Receipts, buildApp } from './api/index.js';

export interface ServerOptions extends NodeOptions {
  /** pino options, or false for none (tests). */
  readonly logger?: false | LoggerOptions;
  /** bcrypt cost (default 10). */
  readonly bcryptCost?: number;
  readonly tokenTtlSeconds?: number;
  /** How long a node trusts what it looked up of a user (default a minute; auth.ts). */
  readonly userRecheckMs?: number;
  /** Process metrics (CPU, memory, event loop) in /metrics; on in main.ts, off in tests. */
  readonly processMetrics?: boolean;
}

export class MomServer {
  private constructor(
    readonly node: ClusterNode,
    readonly app: FastifyInstance,
    readonly log: Logger,
  ) {}

  get cfg(): NodeConfig {
    return this.node.cfg;
  }

  get host(): ClusterNode['host'] {
    return this.node.host;
  }

  get transport(): ClusterNode['transport'] {
    return this.node.transport;
  }

  status(): ReturnType<ClusterNode['status']> {
    return this.node.status();
  }

  /** Opens the node, builds the app, listens, then starts the partitions' loop. */
  static async start(cfg: NodeConfig, opts: ServerOptions = {}): Promise<MomServer> {
    const log = opts.logger === false || opts.logger === undefined ? pino({ level: 'silent' }) : pino(opts.logger);
    const node = await ClusterNode.open(cfg, log, { snapshotEvery: cfg.snapshotEvery, keepBehindSnapshot: cfg.keepBehindSnapshot, ...opts });
    let app: FastifyInstance;
    try {
      app = await buildApp(
        {
          broker: node.router,
          cluster: {
            nodeId: cfg.nodeId,
            nodes: cfg.peers,
            status: () => node.status(),
            leaderless: (graceMs) => node.host.leadership.leaderless(graceMs),
            catchingUp: () => node.catchUp.behind(),
            logSyncs: () => node.host.logStore.syncs,
            peerTraffic: () => node.transport.stats(),
            cutOffFor: () => node.host.leadership.cutOffFor(),
            disk: () => ({ ...node.disk.stats(), shortNodes: node.disk.shortNodes() }),
            clockOffsets: () => node.host.clock.offsets(),
            partitionDepths: () => {
              // Messages are stamped by the partition's clock (the nodes' median), as the API counts ages.
              const now = node.host.clock.now();
              return node.host.replicas
                .filter((r) => r.isLeader() && r.state.isOpen())
                .map((r) => {
                  const sentAt = r.state.oldestSentAt(now);
                  return { partition: r.partition, ...r.state.messageTotals(), oldestAgeMs: sentAt === null ? null : now - sentAt };
                });
            },
            queueDepths: (limit) =>
              node.host.replicas
                .filter((r) => r.isLeader() && r.state.isOpen())
                .flatMap((r) => r.state.queueDepths(limit).map((q) => ({ ...q, partition: r.partition })))
                .sort((a, b) => b.ready + b.leased + b.delayed - (a.ready + a.leased + a.delayed))
                .slice(0, limit),
          },
          jwtSecret: cfg.jwtSecret,
          receipts: new Receipts(cfg.clusterSecret),
          trustProxy: cfg.trustProxy,
          metricsToken: cfg.metricsToken,
          logger: log,
          internal: node.internalRoutes(),
          sharedLimits: node.limits,
          ...(opts.wallClock === undefined ? {} : { now: opts.wallClock }),
          ...(opts.bcryptCost === undefined ? {} : { bcryptCost: opts.bcryptCost }),
          ...(opts.tokenTtlSeconds === undefined ? {} : { tokenTtlSeconds: opts.tokenTtlSeconds }),
          ...(opts.userRecheckMs === undefined ? {} : { userRecheckMs: opts.userRecheckMs }),
          ...(node.tls === null ? {} : { https: node.tls }),
        },
        { processMetrics: opts.processMetrics ?? false },
      );
      await app.listen({ host: cfg.host, port: cfg.port });
    } catch (err) {
      await node.close();
      throw err;
    }
    node.start();
    return new MomServer(node, app, log);
  }

  /**
   * A planned stop (SIGTERM): hand leadership over so clients wait for no election, stop accepting
   * requests and finish those in flight, then close the partitions and their databases.
   */
  async shutdown(): Promise<void> {
    await this.node.host.leadership.handOver();
    await this.close();
  }

  /** Stops serving (waiting for requests in flight), then the partitions, then the transport. */
  async close(): Promise<void> {
    this.node.router.stopWaiting();
    // Commands this node forwarded inside its Raft streams get their answers in the streams it
    // serves, which the app's close ends: wait for them first (new ones go by HTTP meanwhile).
    await this.node.transport.settle(CLOSE_SETTLE_MS);
    // And those the leader appended and answered with where wait for this node's own apply.
    await this.node.router.settleApplying(CLOSE_SETTLE_MS);
    // A connection whose request was in flight when the close began stays open, idle, for the
    // keep-alive timeout (72 s) after its answer: close such connections as they fall idle.
    const idle = setInterval(() => this.app.server.closeIdleConnections(), 50);
    try {
      await this.app.close();
    } finally {
      clearInterval(idle);
    }
    // Polls answered early take themselves out of the partitions' state (their last looks), and
    // messages of clients that left go back, while this node can still reach the leaders.
    await this.node.router.settleBehind(2_000);
    await this.node.close();
  }
}
