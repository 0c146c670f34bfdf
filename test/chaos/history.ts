// The history of a chaos run: every client operation (with the node it went through, its start and
// end, its outcome and what it returned), every fault, and the final reads from each node. The checker
// (checker.ts) is a pure function over it; run.ts writes it into the run's folder as JSON.
//
// Times are milliseconds since the run started (one clock: the test process's Date.now()).

/** ok: the server answered success; fail: it definitely did not apply (e.g. 503 "not applied", 4xx);
 *  unknown: it may or may not have applied (timeouts, dropped connections, 504, 503 "outcome unknown"). */
export type Outcome = 'ok' | 'fail' | 'unknown';

/** A channel is a queue (`queue:<name>`) or a subscription (`sub:<topic>/<name>`). */
export type ChannelId = string;

export const queueChannel = (name: string): ChannelId => `queue:${name}`;
export const subChannel = (topic: string, sub: string): ChannelId => `sub:${topic}/${sub}`;

/** One HTTP attempt of an operation: [start, end, entry index (the node, or 0 for the load balancer), status (0: connection error, -1: client timeout)]. */
export type Attempt = [number, number, number, number];

interface OpBase {
  /** Unique within the run. */
  id: number;
  /** The logical client that issued it (e.g. "producer-q1", "consumer-sub/a", "drain"). */
  process: string;
  /** The node of the last attempt (n1..n3). */
  node: string;
  start: number;
  end: number;
  outcome: Outcome;
  /** The last status seen (0: none), and the error/problem detail when it did not succeed. */
  status: number;
  error?: string;
  /** Every HTTP attempt (retries carry the same Idempotency-Key). */
  attempts: Attempt[];
  /** Partition of the resource the op targets. */
  partition: number;
}

export interface SendOp extends OpBase {
  type: 'send';
  channel: ChannelId;
  /** Unique in the run: the identity of the message. */
  body: string;
  messageId?: string;
  sequence?: number;
}

export interface PublishOp extends OpBase {
  type: 'publish';
  topic: string;
  body: string;
  attributes: Record<string, string>;
  /** The subscriptions whose filter matches, existing before any publish: each must get it once acknowledged. */
  expected: ChannelId[];
  messageId?: string;
  sequence?: number;
}

export interface Delivery {
  body: string;
  messageId: string;
  sequence: number;
  deliveryCount: number;
  receiptHandle: string;
}

export interface ReceiveOp extends OpBase {
  type: 'receive';
  channel: ChannelId;
  maxMessages: number;
  waitSeconds: number;
  visibilityTimeoutSeconds: number;
  /** What an ok receive returned (empty otherwise). */
  messages: Delivery[];
}

export interface SettleOp extends OpBase {
  type: 'ack' | 'nack';
  channel: ChannelId;
  receiptHandles: string[];
  /** For an ok op: the handles the server settled, and those it refused (with the code). */
  acked: string[];
  failed: { receiptHandle: string; code: string }[];
}

export type ClientOp = SendOp | PublishOp | ReceiveOp | SettleOp;

/** Process faults (SIGKILL, SIGSTOP), network cuts (net-faults.ts) and power cuts (disk-faults.ts). */
export type FaultKind = 'kill-leader' | 'kill-node' | 'pause' | 'isolate-node' | 'isolate-leader' | 'cut-one-way' | 'power-loss' | 'snapshot-install' | 'transfer-kill';
/** Faults on processes, on the network (the transport fault layer), and the storage and composite ones. */
export const PROCESS_FAULTS: readonly FaultKind[] = ['kill-leader', 'kill-node', 'pause'];
export const NETWORK_FAULTS: readonly FaultKind[] = ['isolate-node', 'isolate-leader', 'cut-one-way'];
/** power-loss: a crash losing every unsynced write; snapshot-install: one during an install; transfer-kill: one during a leadership hand-over. */
export const STORAGE_FAULTS: readonly FaultKind[] = ['power-loss', 'snapshot-install', 'transfer-kill'];
export const FAULT_KINDS: readonly FaultKind[] = [...PROCESS_FAULTS, ...NETWORK_FAULTS, ...STORAGE_FAULTS];

export interface FaultEvent {
  type: 'fault';
  id: number;
  kind: FaultKind;
  /** The node the fault hit (n1..n3); for cut-one-way, the node that cannot send. */
  node: string;
  /** For cut-one-way: the node it cannot send to (which can still send to it). */
  to?: string;
  /** For kill-leader, isolate-leader and transfer-kill: the partition whose leader was hit. */
  partition?: number;
  /**
   * When the fault began (SIGKILL / SIGSTOP sent; a cut applied by every running node) and ended
   * (restarted / SIGCONT sent; the cut lifted).
   */
  start: number;
  end: number;
  /** When the cluster was seen led again on every partition after the fault ended (null: not seen). */
  healedAt: number | null;
  detail: string;
}

export interface ChannelStats {
  visible: number;
  inFlight: number;
  delayed: number;
  dropped: number;
}

/** One round of reads (?consistency=stale) of one channel from every node, after quiescence. */
export interface FinalRead {
  type: 'final-read';
  /** "healed": all nodes up, workload stopped, leases expired; "drained": after draining. */
  phase: string;
  channel: ChannelId;
  at: number;
  /** Per node (index = node index): its replica's stats, or null when it did not answer. */
  views: (ChannelStats | null)[];
}

export interface History {
  seed: number;
  startedAt: string;
  nodes: string[];
  partitions: number;
  /** Channels and their partitions (and, for ordering, whether they may use delays / dead-lettering). */
  channels: { id: ChannelId; partition: number; fifoCheck: boolean }[];
  ops: ClientOp[];
  faults: FaultEvent[];
  finalReads: FinalRead[];
}

/** Collects a history as a run goes. */
export class Recorder {
  readonly t0 = Date.now();
  readonly history: History;
  private nextId = 1;

  constructor(seed: number, nodes: string[], partitions: number) {
    this.history = { seed, startedAt: new Date(this.t0).toISOString(), nodes, partitions, channels: [], ops: [], faults: [], finalReads: [] };
  }

  now(): number {
    return Date.now() - this.t0;
  }

  id(): number {
    return this.nextId++;
  }

  op(o: ClientOp): void {
    this.history.ops.push(o);
  }

  fault(f: FaultEvent): void {
    this.history.faults.push(f);
  }

  finalRead(r: FinalRead): void {
    this.history.finalReads.push(r);
  }
}
