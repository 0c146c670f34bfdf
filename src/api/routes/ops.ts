// Operations: liveness, readiness, the cluster's state and Prometheus metrics. No token needed: they
// reveal no user data, and load balancers and scrapers must reach them.
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { FastifyInstance } from 'fastify';
import { Type } from 'typebox';
import { secretsEqual } from '../../cluster/secret.js';
import type { ApiDeps } from '../deps.js';
import { ApiError } from '../errors.js';
import { SCHEMA_NAME, StringEnum } from '../schemas/common.js';
import { problems } from './common.js';

const PartitionState = Type.Object(
  {
    partition: Type.Integer(),
    role: StringEnum(['leader', 'follower', 'candidate', 'pre-candidate'], { [SCHEMA_NAME]: 'RaftRole', description: 'This node\'s role in the partition\'s Raft group.' }),
    leader: Type.Union([Type.String(), Type.Null()], { description: 'The leader this node knows of; null during an election.' }),
    term: Type.Integer(),
    commitIndex: Type.Integer(),
    appliedIndex: Type.Integer(),
    lastIndex: Type.Integer(),
    match: Type.Unsafe<Record<string, number>>({ type: 'object', additionalProperties: { type: 'integer' }, description: 'On the leader: each replica\'s match index. Empty elsewhere.' }),
    format: Type.Integer({ minimum: 1, description: 'The log format in force in the partition: raised by its leader once every node reads the next one (docs/operations.md, rolling upgrades).' }),
    halted: Type.Union([Type.String(), Type.Null()], { description: 'Why this node stopped applying the partition, or null: its log is in a format this build cannot read (upgrade the node), or its state points at log entries its log let go (rebuild the node from its peers).' }),
  },
  { [SCHEMA_NAME]: 'PartitionState' },
);
const ClusterState = Type.Object(
  {
    node: Type.String({ description: 'The node that answered.' }),
    partitionCount: Type.Integer(),
    nodes: Type.Array(Type.Object({ id: Type.String(), url: Type.String() }, { [SCHEMA_NAME]: 'ClusterNode' })),
    partitions: Type.Array(PartitionState),
  },
  { [SCHEMA_NAME]: 'ClusterState' },
);
const Health = Type.Object({ status: StringEnum(['ok']) }, { [SCHEMA_NAME]: 'Health' });
const Ready = Type.Object({ status: StringEnum(['ready']) }, { [SCHEMA_NAME]: 'Ready' });
const NotReady = Type.Object(
  {
    status: StringEnum(['not ready']),
    partitionsWithoutLeader: Type.Array(Type.Integer()),
    cutOff: Type.Optional(Type.Boolean({ description: 'True when this node has heard from no other node for two election timeouts.' })),
    catchingUp: Type.Optional(
      Type.Array(Type.Integer(), {
        description: 'Partitions whose replica on this node has not yet applied what its peers had committed when it first asked them after its start (a restarted node catching up). Since 1.5.0.',
      }),
    ),
    halted: Type.Optional(
      Type.Array(Type.Integer(), {
        description:
          'Partitions this node stopped applying (`halted` in GET /v1/cluster says why: a log format its build cannot read, or entries its log lost). Each runs on the other two replicas, and one more node stopped would stop its writes. Since 1.7.0: before, they were listed in partitionsWithoutLeader.',
      }),
    ),
  },
  {
    [SCHEMA_NAME]: 'NotReady',
    description: 'Some partition has no known leader, this node is cut off from its peers, it is still catching up after its start, or it halted a partition; Retry-After says when to look again.',
  },
);

/** How long a partition may be without a known leader before the node reports unready. */
export const READY_GRACE_MS = 2_000;

export async function opsRoutes(fastify: FastifyInstance, opts: { deps: ApiDeps }): Promise<void> {
  const app = fastify.withTypeProvider<TypeBoxTypeProvider>();
  const { deps } = opts;
  const tags = ['operations'];

  app.get(
    '/healthz',
    { logLevel: 'warn', schema: { operationId: 'getHealth', tags, security: [], summary: 'Liveness: 200 while the process serves', response: { 200: Health } } },
    async () => ({ status: 'ok' as const }),
  );

  app.get(
    '/readyz',
    {
      logLevel: 'warn',
      schema: {
        operationId: 'getReadiness',
        tags,
        security: [],
        summary: 'Readiness: 200 when every partition has a known leader, this node hears its peers, it caught up after its start, and it applies every partition',
        description:
          'A partition counts as led through a leadership transfer or a quick election: it is missing only after 2 s without a known leader, so that probes do not flap while leaders are balanced. A node that has heard from no other node for two election timeouts is not ready either: it can reach no leader. After its start, a node is ready only once each of its replicas has applied what the peers had committed when it first asked them (a partition it leads counts at once); once caught up, a partition stays so, so that a follower lagging under load is not taken out of its load balancer. A rolling restart that waits for 200 before stopping the next node never leaves a partition with a replica still catching up among its two. Nor with a halted replica among them: a node that stopped applying a partition (a log format its build cannot read, entries its log lost; GET /v1/cluster says which and why) is not ready until it applies it again (upgraded, or rebuilt from its peers), though its requests are still served through the other nodes.',
        response: { 200: Ready, 503: NotReady },
      },
    },
    async (_request, reply) => {
      // A halted replica applies nothing and follows no leader: its partition runs on two replicas,
      // and one more node stopped (the next of a rolling restart) would stop its writes. Said as
      // such, not as a partition without a leader.
      const halted = deps.cluster
        .status()
        .filter((p) => p.halted !== null)
        .map((p) => p.partition);
      const also = halted.length > 0 ? { halted } : {};
      const cutOff = deps.cluster.cutOffFor() > 0;
      const missing = deps.cluster.leaderless(cutOff ? 0 : READY_GRACE_MS).filter((p) => !halted.includes(p));
      if (cutOff) return reply.code(503).header('retry-after', '1').send({ status: 'not ready' as const, partitionsWithoutLeader: missing, cutOff: true, ...also });
      if (missing.length > 0 || halted.length > 0) return reply.code(503).header('retry-after', '1').send({ status: 'not ready' as const, partitionsWithoutLeader: missing, ...also });
      const behind = await deps.cluster.catchingUp();
      if (behind.length > 0) return reply.code(503).header('retry-after', '1').send({ status: 'not ready' as const, partitionsWithoutLeader: [], catchingUp: behind });
      return { status: 'ready' as const };
    },
  );

  app.get(
    '/v1/cluster',
    {
      schema: {
        operationId: 'getCluster',
        tags,
        security: [],
        summary: 'The cluster as this node sees it',
        description: 'The nodes, and per partition its leader, term, commit and applied index and, on the leader, each replica\'s match index. A smart client or load balancer may send a partition\'s requests to its leader directly (partition = SHA-1 of the name, first 4 bytes big-endian, modulo the partition count).',
        response: { 200: ClusterState },
      },
    },
    async () => {
      const partitions = deps.cluster.status();
      return { node: deps.cluster.nodeId, partitionCount: partitions.length, nodes: deps.cluster.nodes.map((n) => ({ id: n.id, url: n.url })), partitions };
    },
  );

  app.get(
    '/metrics',
    {
      logLevel: 'warn',
      schema: {
        operationId: 'getMetrics',
        tags,
        // Open, or with the node's metrics token when it has one.
        security: [{}, { metricsToken: [] }],
        summary: 'Prometheus metrics',
        description:
          'Requests and latencies by route and status; Raft term, commit and applied index and lags per partition; message counts per partition led here; waiting long polls. A node started with a metrics token requires it as a bearer token here, and adds depths per queue (mom_queue_messages); without one, no queue name is shown.',
        produces: ['text/plain'],
        response: { 200: { description: 'Prometheus text format 0.0.4.', content: { 'text/plain': { schema: { type: 'string' } } } }, ...problems(401) },
      },
    },
    async (request, reply) => {
      const token = deps.metricsToken;
      if (typeof token === 'string') {
        const given = /^Bearer (.+)$/.exec(request.headers.authorization ?? '')?.[1];
        if (given === undefined || !secretsEqual(given, token)) throw new ApiError('unauthorized', 'this node\'s /metrics needs its metrics token (Authorization: Bearer <token>)');
      }
      return reply.type(app.metrics.contentType).send(await app.metrics.metrics());
    },
  );
}
