// Three node hosts in one process, joined by an in-memory outbox that delivers asynchronously and can
// cut nodes off: the partition layer tested without HTTP.
import type { Test } from 'tap';
import { copyFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { nodeId, type Message, type NodeId } from '../../src/raft/index.js';
import { NodeHost, type HostOptions, type Outbox } from '../../src/partition/host.js';
import { Housekeeping } from '../../src/partition/housekeeping.js';
import { NotLeaderError } from '../../src/partition/errors.js';
import { FORMAT, type BrokerStateMachine, type Command, type Result } from '../../src/store/broker/index.js';
import type { WalOptions } from '../../src/store/wal/index.js';

/** Proposes at the current leader of `p` among `hosts`, retrying (bounded) while there is none. */
export async function submit(hosts: readonly NodeHost[], p: number, actor: string, command: Command): Promise<Result> {
  return (await proposeWhereLed(hosts, [p], actor, command)).result;
}

/**
 * Proposes `command` on the first of `partitions` that one of `hosts` leads, retrying (bounded) while
 * none does or the leadership moved before the proposal was appended (NotLeaderError: nothing was
 * written). For a test that needs a write where some nodes lead, whichever partition that is: a
 * leader chosen first and proposed at later may have lost the partition meanwhile.
 */
export async function proposeWhereLed(hosts: readonly NodeHost[], partitions: readonly number[], actor: string | null, command: Command): Promise<{ partition: number; host: NodeHost; result: Result }> {
  for (let attempt = 0; attempt < 500; attempt++) {
    for (const partition of partitions) {
      const host = hosts.find((h) => h.replica(partition).isLeader());
      if (host === undefined) continue;
      try {
        return { partition, host, result: await host.replica(partition).propose(actor, command) };
      } catch (err) {
        if (!(err instanceof NotLeaderError)) throw err;
      }
    }
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error(`none of partitions ${partitions.join(', ')} was led by the given hosts long enough to take the write`);
}

/**
 * The index a replica's state has applied, or -1 while it installs a snapshot (the state database is
 * closed between the old state and the installed image, a copy that spans event-loop turns).
 */
export function appliedIndex(r: { state: BrokerStateMachine }): number {
  return r.state.isOpen() ? r.state.applied().index : -1;
}

export const IDS: NodeId[] = ['n1', 'n2', 'n3'].map(nodeId);

/** Alice's queue `name` as a command: 30 s leases, no dead letters, an hour of retention. */
export const queue = (name: string) => ({
  type: 'queue.create' as const,
  name,
  visibilityTimeoutSeconds: 30,
  maxDeliveries: null,
  deadLetterQueue: null,
  delaySeconds: 0,
  retentionSeconds: 3600,
});

export class LocalCluster {
  readonly hosts = new Map<NodeId, NodeHost>();
  readonly down = new Set<NodeId>();
  /** Called when a node has fetched a snapshot image, before its core sees the snapshot. */
  afterFetch: ((self: NodeId) => void) | null = null;
  readonly root = mkdtempSync(join(tmpdir(), 'mom-host-'));
  /** Messages sent and not yet delivered (or dropped). */
  private inFlight = 0;

  constructor(
    readonly partitions: number,
    readonly extra: {
      snapshotEvery?: number;
      keepBehindSnapshot?: number;
      balanceLeaders?: boolean;
      format?: number;
      log?: WalOptions;
      now?: () => number;
      monotonic?: () => number;
      wallClock?: () => number;
      random?: () => number;
      logger?: HostOptions['logger'];
    } = {},
  ) {}

  /** Proposes at whichever node leads `p`, retrying while leadership moves: what a client does. */
  async submit(p: number, actor: string, command: Command): Promise<Result> {
    return submit([...this.hosts.values()].filter((h) => !this.down.has(h.opts.self)), p, actor, command);
  }

  outbox(self: NodeId): Outbox {
    return {
      send: (items) => {
        const byPeer = new Map<NodeId, { partition: number; message: Message }[]>();
        for (const it of items) {
          const list = byPeer.get(it.message.to) ?? [];
          list.push(it);
          byPeer.set(it.message.to, list);
        }
        for (const [peer, list] of byPeer) {
          this.inFlight++;
          setImmediate(() => {
            this.inFlight--;
            if (this.down.has(peer) || this.down.has(self)) return;
            // Each Raft request says which log format its sender reads, as the HTTP transport's do.
            this.hosts.get(peer)?.receive(self, list, this.hosts.get(self)?.opts.format ?? FORMAT);
          });
        }
      },
      forward: async (peer, partition, command) => {
        const h = this.hosts.get(peer);
        if (h === undefined || this.down.has(peer) || this.down.has(self)) throw new Error('unreachable');
        return h.proposeForwarded(partition, command);
      },
      fetchSnapshot: async (peer, partition, ref, dest) => {
        const src = await this.hosts.get(peer)?.snapshots.imageFor(partition, ref);
        if (src === null || src === undefined || this.down.has(peer)) throw new Error('no such snapshot');
        copyFileSync(src, dest);
        this.afterFetch?.(self);
      },
    };
  }

  /** Node `who`'s snapshot fetches from now on go through `wrap`, given the fetch they would make. */
  wrapFetch(who: NodeId, wrap: (fetch: Outbox['fetchSnapshot']) => Outbox['fetchSnapshot']): void {
    const outboxOf = this.outbox.bind(this);
    this.outbox = (self) => {
      const o = outboxOf(self);
      return self === who ? { ...o, fetchSnapshot: wrap(o.fetchSnapshot) } : o;
    };
  }

  /**
   * Opens node `id`; with `ticking` false its clock never ticks (no heartbeats, no elections by time).
   * `format` plays a build that reads formats up to it (the cluster's `format` otherwise).
   */
  async start(id: NodeId, ticking = true, format = this.extra.format): Promise<NodeHost> {
    const host = await NodeHost.open({
      self: id,
      voters: IDS,
      partitions: this.partitions,
      dataDir: join(this.root, id),
      outbox: this.outbox(id),
      // Elections after 250-500 ms of silence: short for a test, long enough for a loaded CI machine.
      tickMs: 25,
      ...this.extra,
      format,
    });
    new Housekeeping(host);
    this.hosts.set(id, host);
    if (ticking) host.start();
    return host;
  }

  async startAll(): Promise<void> {
    for (const id of IDS) await this.start(id);
  }

  async stop(id: NodeId): Promise<void> {
    await this.hosts.get(id)?.close();
    this.hosts.delete(id);
  }

  leaderOf(p: number): NodeHost | null {
    for (const h of this.hosts.values()) if (!this.down.has(h.opts.self) && h.replica(p).isLeader()) return h;
    return null;
  }

  /** Waits (bounded by iterations, not a wall-clock assertion) until `pred` holds. */
  async until(pred: () => boolean, what: string, rounds = 3000): Promise<void> {
    for (let i = 0; i < rounds; i++) {
      if (pred()) return;
      await new Promise((r) => setTimeout(r, 5));
    }
    throw new Error(`gave up waiting for: ${what}`);
  }

  /**
   * Waits until nothing is under way: no message in flight, no loop turn scheduled or running, no
   * Ready waiting. Without ticks (start(id, false)), only a proposal, a read or tick() starts more.
   * A snapshot's fetch or a compaction is not counted: a test of those waits for their own outcome.
   */
  async quiet(): Promise<void> {
    const settled = (): boolean => this.inFlight === 0 && [...this.hosts.values()].every((h) => h.idle && h.replicas.every((r) => r.halted !== null || !r.raw.hasReady()));
    await this.until(settled, 'nothing under way');
  }

  async close(): Promise<void> {
    for (const id of [...this.hosts.keys()]) await this.stop(id);
    rmSync(this.root, { recursive: true, force: true });
  }
}

/**
 * One partition on three nodes that never tick on their own (a test gives each tick itself), n1
 * elected by hand; closed when `t` ends.
 */
export async function untickedCluster(t: { teardown(fn: () => unknown): void }, extra: LocalCluster['extra'] = {}): Promise<{ c: LocalCluster; leader: NodeHost }> {
  const c = new LocalCluster(1, { balanceLeaders: false, ...extra });
  t.teardown(() => c.close());
  for (const id of IDS) await c.start(id, false);
  c.hosts.get(IDS[0]!)!.replica(0).raw.campaign();
  c.hosts.get(IDS[0]!)!.schedule();
  await c.until(() => c.leaderOf(0) !== null, 'a leader');
  return { c, leader: c.leaderOf(0)! };
}

/**
 * A cluster whose nodes never tick (no election, no snapshot sent again on a slow machine; lost
 * appends are reported by hand), a local snapshot every 20 entries and 5 kept behind, n1 leading,
 * and n2 (`behind`) stopped while 60 sends went in: it needs an image to come back.
 */
export async function stillClusterLeftBehind(
  t: Test,
  monotonic?: () => number,
): Promise<{ c: LocalCluster; leader: NodeHost; send: (n: number) => Promise<void>; behind: NodeId }> {
  const c = new LocalCluster(1, { snapshotEvery: 20, keepBehindSnapshot: 5, balanceLeaders: false, ...(monotonic === undefined ? {} : { monotonic }) });
  t.teardown(() => c.close());
  for (const id of IDS) await c.start(id, false);
  c.hosts.get(IDS[0]!)!.replica(0).raw.campaign();
  c.hosts.get(IDS[0]!)!.schedule();
  await c.until(() => c.leaderOf(0) !== null, 'a leader');
  const leader = c.leaderOf(0)!;
  const send = async (n: number): Promise<void> => {
    for (let i = 0; i < n; i++) t.ok((await c.submit(0, 'alice', { type: 'queue.send', name: 'q', messages: [{ body: `m${i}`, attributes: {} }] })).ok);
  };
  t.ok((await c.submit(0, 'alice', queue('q'))).ok);
  const behind = IDS[1]!;
  c.down.add(behind);
  await c.stop(behind);
  await send(60);
  return { c, leader, send, behind };
}
