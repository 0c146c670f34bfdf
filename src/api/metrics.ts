// Prometheus metrics (prom-client), in a registry of this app's own so that several nodes can live in
// one process (tests). Request metrics come from hooks; Raft and queue gauges are read at scrape time.
import { X509Certificate } from 'node:crypto';
import type { FastifyInstance } from 'fastify';
import fp from 'fastify-plugin';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { ApiDeps } from './deps.js';

declare module 'fastify' {
  interface FastifyInstance {
    metrics: Registry;
  }
}

/** Queues reported per scrape at most (label cardinality stays bounded). */
export const MAX_QUEUE_SERIES = 1000;

async function metrics(app: FastifyInstance, opts: { deps: ApiDeps; processMetrics: boolean }): Promise<void> {
  const { deps } = opts;
  const registry = new Registry();
  if (opts.processMetrics) collectDefaultMetrics({ register: registry, prefix: 'mom_' });
  const labelNames = ['method', 'route', 'status'] as const;
  const requests = new Counter({ name: 'mom_http_requests_total', help: 'HTTP requests answered, by route and status.', labelNames, registers: [registry] });
  const latency = new Histogram({
    name: 'mom_http_request_duration_seconds',
    help: 'Time to answer, by route and status.',
    labelNames,
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25],
    registers: [registry],
  });
  app.addHook('onResponse', async (request, reply) => {
    const labels = { method: request.method, route: request.routeOptions.url ?? 'unmatched', status: String(reply.statusCode) };
    requests.inc(labels);
    // A long-lived request (a Raft stream, open for a minute) would only fill the top bucket.
    if ((request.routeOptions.config as { longLived?: boolean } | undefined)?.longLived !== true) latency.observe(labels, reply.elapsedTime / 1000);
  });

  const partitionGauge = (name: string, help: string, value: (s: ReturnType<ApiDeps['cluster']['status']>[number]) => number): void => {
    new Gauge({
      name,
      help,
      labelNames: ['partition'],
      registers: [registry],
      collect() {
        this.reset();
        for (const s of deps.cluster.status()) this.set({ partition: String(s.partition) }, value(s));
      },
    });
  };
  partitionGauge('mom_raft_term', 'Current Raft term, per partition.', (s) => s.term);
  partitionGauge('mom_raft_is_leader', '1 where this node leads the partition.', (s) => (s.role === 'leader' ? 1 : 0));
  partitionGauge('mom_raft_last_index', 'Last log index on this node.', (s) => s.lastIndex);
  partitionGauge('mom_raft_commit_index', 'Commit index known to this node.', (s) => s.commitIndex);
  partitionGauge('mom_raft_applied_index', 'Applied index of this node\'s state.', (s) => s.appliedIndex);
  partitionGauge('mom_raft_commit_lag', 'Entries in this node\'s log not yet known committed.', (s) => s.lastIndex - s.commitIndex);
  partitionGauge('mom_raft_apply_lag', 'Committed entries not yet applied here.', (s) => s.commitIndex - s.appliedIndex);
  partitionGauge('mom_partition_format', 'The log format in force in the partition (raised once every node reads the next).', (s) => s.format);
  partitionGauge('mom_partition_halted', '1 where this node stopped applying the partition: its log is in a format this build cannot read, or its log let go of entries its state points at.', (s) => (s.halted === null ? 0 : 1));
  new Gauge({
    name: 'mom_partition_messages',
    help: 'Messages of every queue and subscription, per partition led here and state (ready, leased, delayed).',
    labelNames: ['partition', 'state'],
    registers: [registry],
    collect() {
      this.reset();
      for (const d of deps.cluster.partitionDepths()) {
        for (const state of ['ready', 'leased', 'delayed'] as const) this.set({ partition: String(d.partition), state }, d[state]);
      }
    },
  });
  new Gauge({
    name: 'mom_partition_oldest_message_age_seconds',
    help: 'Age of the oldest message not yet acknowledged (and not expired) of any queue or subscription, per partition led here; 0 when there is none.',
    labelNames: ['partition'],
    registers: [registry],
    collect() {
      this.reset();
      for (const d of deps.cluster.partitionDepths()) this.set({ partition: String(d.partition) }, d.oldestAgeMs === null ? 0 : Math.max(0, d.oldestAgeMs / 1000));
    },
  });
  const disk = deps.cluster.disk;
  if (disk !== undefined) {
    new Gauge({
      name: 'mom_disk_free_bytes',
      help: 'Free space of the file system holding this node\'s data folder, for the node\'s user (statfs, every 5 s); NaN until first read.',
      registers: [registry],
      collect() {
        // NaN until known (a gauge never set reads 0, which MomDiskShort would take for a full disk).
        this.set(disk().freeBytes ?? NaN);
      },
    });
    new Gauge({
      name: 'mom_disk_free_limit_bytes',
      help: 'Free space under which a node is short of disk: the cluster then refuses sends, publishes and creations (--disk-free-limit; 0: never).',
      registers: [registry],
      collect() {
        this.set(disk().limitBytes);
      },
    });
    new Gauge({
      name: 'mom_disk_short_nodes',
      help: 'Nodes short of disk space as this node knows (itself, and peers that said so lately): while above 0, its sends, publishes and creations answer 507, as do receives with a new Idempotency-Key, and other commands with a new key keep no record.',
      registers: [registry],
      collect() {
        this.set(disk().shortNodes.length);
      },
    });
  }
  // Queue names are user data: per-queue series only for a scraper that presents the metrics token.
  if (typeof deps.metricsToken === 'string') {
    new Gauge({
      name: 'mom_queue_messages',
      help: `Messages per queue and state (ready, leased, delayed), for queues of the partitions this node leads; at most ${MAX_QUEUE_SERIES} queues, fullest first.`,
      labelNames: ['queue', 'state'],
      registers: [registry],
      collect() {
        this.reset();
        for (const q of deps.cluster.queueDepths(MAX_QUEUE_SERIES)) {
          for (const state of ['ready', 'leased', 'delayed'] as const) this.set({ queue: q.queue, state }, q[state]);
        }
      },
    });
  }
  new Counter({
    name: 'mom_raft_log_syncs_total',
    help: 'Synced transactions of this node\'s Raft log (one fsync of its write-ahead log each): one per loop turn that persisted anything, for all partitions together, plus compactions.',
    registers: [registry],
    collect() {
      this.reset();
      this.inc(deps.cluster.logSyncs());
    },
  });
  new Counter({
    name: 'mom_peer_messages_total',
    help: 'Raft messages to the other nodes, by outcome: sent (the peer took them), dropped (a full queue, an unknown node), failed (lost with a batch the peer did not take).',
    labelNames: ['outcome'] as const,
    registers: [registry],
    collect() {
      const t = deps.cluster.peerTraffic();
      this.reset();
      this.inc({ outcome: 'sent' }, t.sent);
      this.inc({ outcome: 'dropped' }, t.dropped);
      this.inc({ outcome: 'failed' }, t.failed);
    },
  });
  new Counter({
    name: 'mom_peer_batches_total',
    help: 'Batches of Raft messages the other nodes took (each a frame of a Raft stream, or a POST to a build without streams).',
    registers: [registry],
    collect() {
      this.reset();
      this.inc(deps.cluster.peerTraffic().batches);
    },
  });
  new Counter({
    name: 'mom_peer_carried_total',
    help: 'Forwarded client commands this node sent to leaders inside Raft stream frames (kind "command"), and answers it sent back to the nodes that forwarded them: with the result (kind "answer"), or with where it appended the command, the forwarding node answering from its own apply (kind "proposed"); commands to a leader that does not read them there go by HTTP.',
    labelNames: ['kind'] as const,
    registers: [registry],
    collect() {
      const t = deps.cluster.peerTraffic();
      this.reset();
      this.inc({ kind: 'command' }, t.carriedCommands);
      this.inc({ kind: 'answer' }, t.carriedAnswers - t.carriedProposed);
      this.inc({ kind: 'proposed' }, t.carriedProposed);
    },
  });
  new Counter({
    name: 'mom_rate_limit_events_total',
    help: "Rate-limit events (failed logins, registrations) shared with the other nodes, so that limits hold across the cluster: sent (a peer took them), received (a peer's, counted here), dropped (a peer did not take them, or too many waited).",
    labelNames: ['outcome'] as const,
    registers: [registry],
    collect() {
      const s = deps.sharedLimits?.stats ?? { sent: 0, received: 0, dropped: 0 };
      this.reset();
      this.inc({ outcome: 'sent' }, s.sent);
      this.inc({ outcome: 'received' }, s.received);
      this.inc({ outcome: 'dropped' }, s.dropped);
    },
  });
  new Gauge({
    name: 'mom_peer_messages_queued',
    help: 'Raft messages waiting to leave for the other nodes.',
    registers: [registry],
    collect() {
      this.set(deps.cluster.peerTraffic().queued);
    },
  });
  new Gauge({
    name: 'mom_peer_clock_offset_seconds',
    help: "How far each other node's wall clock is from this node's, as last heard in its Raft requests (positive: the peer's is ahead). Entries are stamped with the median of the nodes' clocks.",
    labelNames: ['peer'],
    registers: [registry],
    collect() {
      this.reset();
      for (const [peer, ms] of deps.cluster.clockOffsets()) this.set({ peer }, ms / 1000);
    },
  });
  new Gauge({
    name: 'mom_long_polls_waiting',
    help: 'Receives waiting for messages on this node.',
    registers: [registry],
    collect() {
      this.set(deps.broker.waiting());
    },
  });
  // The certificate is read once, at start: a renewed file counts from the node's next restart, and an
  // expired one ends every peer's and client's connection to the node (MomCertificateExpiring).
  if (deps.https !== undefined) {
    new Gauge({
      name: 'mom_tls_certificate_expiry_timestamp_seconds',
      help: 'When the certificate this node serves and presents to its peers expires (seconds since the epoch).',
      registers: [registry],
    }).set(Date.parse(new X509Certificate(deps.https.cert).validTo) / 1000);
  }
  app.decorate('metrics', registry);
}

export const metricsPlugin = fp(metrics, { name: 'mom-metrics', fastify: '5.x' });
