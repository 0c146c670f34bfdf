// The bodies and parameters of the routes between nodes (internal-routes.ts), in TypeBox as the public
// API's are (src/api/schemas/): Fastify validates them before a handler runs, and each handler's
// types are the schema's own (Static).
import { Type, type Static } from 'typebox';
import { MAX_BATCH_EVENTS } from './limit-gossip.js';
import { MAX_PARTITIONS } from '../partition/routing.js';
import { MAX_SNAPSHOT_REF_BYTES } from './wire.js';

/** Forwarded commands one POST of /internal/commands carries at most. */
export const MAX_FORWARDED_BATCH = 1024;

const Partition = Type.Integer({ minimum: 0, maximum: MAX_PARTITIONS - 1 });
/** A command or a query: its shape is the state machine's to check, not the route's. */
const AnyObject = Type.Object({});

/** A system command a peer asks this node, the partition's leader, to propose. */
export const ProposeBody = Type.Object({ partition: Partition, command: AnyObject }, { additionalProperties: false });

/** A command a node forwards to the partition's leader, as /internal/command takes it (forward-batch.ts). */
export const ForwardedCommand = Type.Object(
  {
    partition: Partition,
    actor: Type.Union([Type.String({ minLength: 1, maxLength: 64 }), Type.Null()]),
    idempotencyKey: Type.Optional(Type.String({ minLength: 1, maxLength: 255 })),
    // the client request's id at the node that forwarded it, so one request has one id in every log
    requestId: Type.Optional(Type.String({ pattern: '^[A-Za-z0-9._:-]{1,128}$' })),
    command: AnyObject,
  },
  { additionalProperties: false },
);
export type Forwarded = Static<typeof ForwardedCommand>;

/** The commands a node forwarded to this leader in one loop turn (/internal/commands). */
export const CommandsBody = Type.Object({ items: Type.Array(ForwardedCommand, { minItems: 1, maxItems: MAX_FORWARDED_BATCH }) }, { additionalProperties: false });

/** Rate-limit events a peer counted (limit-gossip.ts); each is checked when taken (parseLimitEvent). */
export const LimitsBody = Type.Object({ events: Type.Array(AnyObject, { maxItems: MAX_BATCH_EVENTS }) }, { additionalProperties: false });

/** A linearizable read a peer forwards to this leader (/internal/query). */
export const QueryBody = Type.Object({ partition: Partition, query: AnyObject }, { additionalProperties: false });

/** The snapshot image a follower fetches. */
export const SnapshotParams = Type.Object({ partition: Partition, ref: Type.String({ minLength: 1, maxLength: MAX_SNAPSHOT_REF_BYTES }) });
