// One node of the cluster: its partitions (the node host), the HTTP transport to its peers, and the
// HTTP server that receives their messages. The REST API mounts on the same server.
import { readFileSync } from 'node:fs';
import Fastify, { type FastifyInstance } from 'fastify';
import { NodeHost, type PartitionStatus } from '../partition/host.js';
import { checkClusterIdentity, type NodeConfig } from './config.js';
import { internalRoutes } from './internal-routes.js';
import { HttpTransport } from './transport.js';

export interface NodeOptions {
  /** Milliseconds per Raft tick (default 100: elections after 1 to 2 s of silence). */
  readonly tickMs?: number;
  readonly snapshotEvery?: number;
  readonly keepBehindSnapshot?: number;
  /** Fastify's logger setting (pino); false in tests. */
  readonly logger?: boolean | object;
}

export class ClusterNode {
  private constructor(
    readonly cfg: NodeConfig,
    readonly host: NodeHost,
    readonly transport: HttpTransport,
    readonly app: FastifyInstance,
  ) {}

  static async start(cfg: NodeConfig, opts: NodeOptions = {}): Promise<ClusterNode> {
    checkClusterIdentity(cfg);
    const tls = cfg.tls === null ? null : { cert: readFileSync(cfg.tls.cert), key: readFileSync(cfg.tls.key), ca: readFileSync(cfg.tls.ca) };
    const app = Fastify({
      logger: opts.logger ?? false,
      // Mutual TLS between nodes: every client is asked for a certificate; the inter-node routes
      // require one signed by the cluster CA, API clients need none.
      ...(tls === null ? {} : { https: { cert: tls.cert, key: tls.key, ca: tls.ca, requestCert: true, rejectUnauthorized: false } }),
    });
    const transport = new HttpTransport({
      self: cfg.nodeId,
      peers: cfg.peers,
      clusterSecret: cfg.clusterSecret,
      ...(tls === null ? {} : { tls: { ca: tls.ca, cert: tls.cert, key: tls.key } }),
      logger: { warn: (obj, msg) => app.log.warn(obj, msg) },
    });
    const host = await NodeHost.open({
      self: cfg.nodeId,
      voters: cfg.peers.map((p) => p.id),
      partitions: cfg.partitions,
      dataDir: cfg.dataDir,
      outbox: transport,
      ...(opts.tickMs === undefined ? {} : { tickMs: opts.tickMs }),
      ...(opts.snapshotEvery === undefined ? {} : { snapshotEvery: opts.snapshotEvery }),
      ...(opts.keepBehindSnapshot === undefined ? {} : { keepBehindSnapshot: opts.keepBehindSnapshot }),
      logger: { warn: (obj, msg) => app.log.warn(obj, msg), error: (obj, msg) => app.log.error(obj, msg) },
    });
    await app.register(internalRoutes, {
      clusterSecret: cfg.clusterSecret,
      self: cfg.nodeId,
      requireClientCert: tls !== null,
      onMessages: (from, items) => host.receive(from, items),
      snapshotFile: (partition, ref) => host.snapshotFile(partition, ref),
      onPropose: (partition, command) => host.proposeForwarded(partition, command),
    });
    app.get('/healthz', { schema: { hide: true } }, async () => ({ status: 'ok' }));
    app.get('/readyz', { schema: { hide: true } }, async (_req, reply) => {
      const missing = host.status().filter((s) => s.leader === null).map((s) => s.partition);
      if (missing.length > 0) return reply.code(503).header('retry-after', '1').send({ status: 'not ready', partitionsWithoutLeader: missing });
      return { status: 'ready' };
    });
    // This node's view of the cluster (API.md, Cluster and operations). The REST API will describe
    // it in the OpenAPI document; it reveals no secret and no user data.
    app.get('/v1/cluster', async () => ({
      node: cfg.nodeId,
      nodes: cfg.peers.map((p) => ({ id: p.id, url: p.url })),
      partitions: host.status(),
    }));
    await app.listen({ host: cfg.host, port: cfg.port });
    host.start();
    return new ClusterNode(cfg, host, transport, app);
  }

  status(): PartitionStatus[] {
    return this.host.status();
  }

  /**
   * A planned stop (SIGTERM): hand leadership over so clients wait for no election, stop accepting
   * requests and finish those in flight, then close the partitions and their databases.
   */
  async shutdown(): Promise<void> {
    await this.host.handOverLeadership();
    await this.close();
  }

  /** Stops serving, then the partitions, then the transport. */
  async close(): Promise<void> {
    await this.app.close();
    await this.host.close();
    await this.transport.close();
  }
}
