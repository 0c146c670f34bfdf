// The host of every partition replica of one node, and the loop that drives them:
//
//   tick timer ──► tick every replica
//   any input  ──► schedule one loop turn:
//     1. collect the Ready of every replica that has one
//     2. write every Ready's log writes in ONE write of the write-ahead log (not one per group), send
//        the leaders' appends and heartbeats, and start ONE fdatasync on the thread pool; while it
//        runs, apply the committed entries (each partition's state database) and settle waiting
//        requests, then await it (a Ready with a snapshot, or whose write cuts the log, is applied
//        after the sync, at step 5)
//     3. install received snapshots into the state databases
//     4. send every other message, grouped by peer by the transport
//     5. apply what step 2 did not
//     6. advance
//
// Many client requests proposed between two turns share the turn's one write and one fsync (group
// commit), and while a sync is in flight the event loop goes on: requests arrive and the next turn's
// batch grows. Acknowledgements and votes leave only after step 2's sync, and a leader counts itself
// toward a commit only at advance (pipelined persistence, Raft thesis §10.2.1), so nothing depends
// on a write that is not durable.
import { existsSync, mkdirSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { EntryUnavailableError, sendableBeforePersist, type Message, type NodeId, type Ready, type Role } from '../raft/index.js';
import { BodyMissingError, BrokerStateMachine, FORMAT, FormatTooNewError, type Command, type Result } from '../store/broker/index.js';
import { renameSyncedDurably } from '../store/durable.js';
import { openNodeLog, type PartitionLog, type PersistItem, type WalOptions, type WalStore } from '../store/wal/index.js';
import { ClusterClock, type ClockSample } from './cluster-clock.js';
import { CommandRefusedError, NotLeaderError } from './errors.js';
import { PartitionReplica, type HaltReason } from './replica.js';

/**
 * The system's own commands: a peer may forward only these to this node as a partition's leader
 * (proposeForwarded), and a client's forwarded command may never be one.
 */
export const SYSTEM_COMMANDS: readonly string[] = ['deadletter.deliver', 'outbox.done', 'sweep', 'format.raise'];

/**
 * The one guard of both forwarding paths: 'system' for a command only the system proposes (a peer
 * forwards it to a leader: proposeForwarded), 'client' for one a client's request may carry
 * (ClusterNode's forwarded commands), null for what is no command at all.
 */
export function commandOrigin(command: unknown): 'system' | 'client' | null {
  const type = (command as { type?: unknown } | null)?.type;
  if (typeof type !== 'string') return null;
  return SYSTEM_COMMANDS.includes(type) ? 'system' : 'client';
}

/** What the host needs from the network (the cluster's HTTP transport implements it). */
export interface Outbox {
  send(items: { partition: number; message: Message }[]): void;
  /** Asks `peer`, the leader of `partition`, to propose a system command; resolves with its result. */
  forward(peer: NodeId, partition: number, command: Command): Promise<unknown>;
  /** Copies the snapshot image `ref` of `partition` from `peer` to `dest` (durably). */
  fetchSnapshot(peer: NodeId, partition: number, ref: string, dest: string): Promise<void>;
}

export interface HostOptions {
  readonly self: NodeId;
  readonly voters: readonly NodeId[];
  readonly partitions: number;
  readonly dataDir: string;
  readonly outbox: Outbox;
  /** Milliseconds per Raft tick; an election timeout is electionTick ticks (randomized up to twice). */
  readonly tickMs?: number;
  readonly electionTick?: number;
  readonly heartbeatTick?: number;
  /** Applied entries between two local snapshots (log compaction). */
  readonly snapshotEvery?: number;
  /** Entries kept in the log behind a snapshot, so a briefly slow follower needs no snapshot. */
  readonly keepBehindSnapshot?: number;
  readonly proposalTimeoutMs?: number;
  /** Hand partitions to their preferred leaders (default true; tests of one leader turn it off). */
  readonly balanceLeaders?: boolean;
  /** The clock a partition's state commits by (STATE_COMMIT_MS) and sweeps are judged at; default Date.now. */
  readonly now?: () => number;
  /**
   * The clock of timeouts and liveness (ms; default performance.now): when a peer or a leader was
   * last heard, how long an image served waits, a hand-over's bound. Monotonic: the wall clock, which
   * an operator or NTP may step, would call a node cut off, or never, after a step.
   */
  readonly monotonic?: () => number;
  /**
   * This node's wall clock, which its entries' stamps start from (cluster-clock.ts). Default: `now`,
   * else Date.now; a test gives a wrong one to play a node whose clock is off.
   */
  readonly wallClock?: () => number;
  readonly random?: () => number;
  readonly logger?: { warn(obj: object, msg: string): void; error(obj: object, msg: string): void };
  /**
   * The newest log format this node reads (src/store/broker/format.ts). Default: the build's FORMAT;
   * tests give an older or newer one to play a node of another version.
   */
  readonly format?: number;
  /** The write-ahead log's options (segment size, cache): defaults in src/store/wal. */
  readonly log?: WalOptions;
}

export interface PartitionStatus {
  partition: number;
  role: Role;
  leader: NodeId | null;
  term: number;
  commitIndex: number;
  appliedIndex: number;
  lastIndex: number;
  match: Record<string, number>;
  /** The partition's log format in force (src/store/broker/format.ts). */
  format: number;
  /** Why this node stopped applying the partition (a format its build cannot read, bodies its log lost), or null. */
  halted: string | null;
}

/** An image of a partition's state made for followers. */
interface ServedImage {
  readonly path: string;
  /** The state's applied index when the copy began: the image holds at least that. */
  readonly from: number;
  /** When a fetch last asked for it (ms). */
  usedAt: number;
  readonly ready: Promise<string>;
}

/** Kept entries asked about per turn when looking for ones to release (NodeHost.deadAmong). */
export const RELEASE_CHUNK = 1000;

/**
 * A partition's state commits what it applied at most this long after (BrokerStateMachine.apply,
 * `defer`): a commit writes every page it changed, and under load each turn's apply changes the same
 * few. Applies are answered before their commit: the Raft log holds them, and replays what a crash
 * took from the state. With single sends, committing every 100 ms instead of every turn wrote
 * a seventh of the bytes (bench/README.md).
 */
export const STATE_COMMIT_MS = 100;

/** An image nobody asked for this long is deleted, and the log no longer kept for it. */
const SERVED_IDLE_MS = 5 * 60_000;
/** A retired image stays this long for a fetch that got its path just before. */
const SERVED_GRACE_MS = 60_000;

export class NodeHost {
  readonly replicas: PartitionReplica[] = [];
  /** The time this node stamps its entries with: the median of its wall clock and its peers' (cluster-clock.ts). */
  readonly clock: ClusterClock;
  /** HostOptions.monotonic. */
  private readonly elapsed: () => number;
  private tickTimer: NodeJS.Timeout | null = null;
  /** When each partition's state was first seen holding applies uncommitted (commitDueStates). */
  private readonly uncommittedSince = new Map<number, number>();
  private turnScheduled = false;
  private turnRunning = false;
  /**
   * The newest log format each peer said it reads, in its latest Raft request; a peer missing here
   * has sent this process no Raft message at all (logPositions).
   */
  private readonly peerFormats = new Map<NodeId, number>();
  /** What runs on each pass (onPass). */
  private readonly passes: (() => void)[] = [];
  /** Whether every partition's log and term were empty when this process opened them. */
  private startedEmpty = false;
  private turnAgain = false;
  private closed = false;
  /** Snapshot images fetched from leaders, by partition: waiting for the Ready that installs them. */
  private readonly fetching = new Set<string>();
  /** When each peer was last heard from (any message of any partition). */
  private readonly lastHeard = new Map<NodeId, number>();
  /** When any peer was last heard from, or the loop started (ms; null before start). */
  private lastHeardAny: number | null = null;
  /** Set by a planned stop: refuse leadership handed to this node. */
  private leaving = false;
  /**
   * Set while some partition's voting is suspended (Raft.suspendVoting: an empty or restored disk),
   * until every partition has caught up and a turn has persisted that; then onCaughtUp is called.
   */
  private catchingUp: { onCaughtUp: () => void } | null = null;
  /**
   * Set while such a node has not yet learned each partition's highest term from every peer: peers'
   * messages are dropped, so it acknowledges nothing to a leader of a term older than one it may have
   * taken part in before its state was lost.
   */
  private awaitingTerms = false;
  /** When each partition last had a known leader here (ms), sampled every tick. */
  private readonly leaderSeenAt: number[] = [];
  /** Partitions whose state is being made durable for a local snapshot. */
  private readonly compacting = new Set<number>();
  /** A pass of releaseBodies() is running. */
  private releasing = false;
  /**
   * Images being made, per partition (snapshotFile). Meanwhile the partition is neither compacted nor
   * released of kept entries: the image takes the bodies of its rows from the log (format 4), and its
   * rows are those of the state when the copy ended, which may be gone from the state since.
   */
  private readonly imaging = new Map<number, number>();
  /** The image of each partition's state made for followers (snapshotFile), while in use. */
  private readonly served = new Map<number, ServedImage>();
  private servedSeq = 0;
  /** Loop turns that persisted something, and the entries they persisted: group commit at a glance. */
  readonly counters = { persists: 0, entries: 0 };

  private constructor(
    readonly opts: HostOptions,
    readonly logStore: WalStore,
  ) {
    this.elapsed = opts.monotonic ?? (() => performance.now());
    this.clock = new ClusterClock(opts.wallClock ?? opts.now ?? Date.now, this.elapsed);
  }

  static async open(opts: HostOptions): Promise<NodeHost> {
    mkdirSync(join(opts.dataDir, 'state'), { recursive: true });
    mkdirSync(join(opts.dataDir, 'snapshots'), { recursive: true });
    // Images made for followers by an earlier run: nobody is fetching them now.
    for (const f of readdirSync(join(opts.dataDir, 'snapshots'))) if (/^p\d+-serve-/.test(f)) rmSync(join(opts.dataDir, 'snapshots', f), { force: true });
    const logStore = await openNodeLog(opts.dataDir, opts.partitions, opts.voters, opts.log);
    const host = new NodeHost(opts, logStore);
    const random = opts.random ?? Math.random;
    for (let p = 0; p < opts.partitions; p++) {
      const log = logStore.partition(p, opts.voters);
      log.verify();
      const statePath = host.statePath(p);
      // The log is compacted only behind a point the state database had made durable (compact()),
      // or behind an image fetched from the leader, durable before the log recorded it. A state
      // behind the compacted log is an install that a crash cut short: its image is still there.
      // So is one whose state was ahead (a power cut had left it past its log): the install is done
      // again all the same, since the log restarted at the image and keeps nothing the old state's
      // rows point at (format 4). An image is moved away only by a completed install.
      const ref = log.snapshotRef();
      const readable = host.readable;
      let state = readsBodiesFrom(log, await BrokerStateMachine.open(statePath, p, { readable }));
      const applied = state.applied().index;
      const image = ref === null ? null : host.snapshotPath(ref);
      if (image !== null && (applied < log.firstIndex() - 1 || existsSync(image))) {
        await state.close();
        if (!existsSync(image)) {
          throw new Error(`partition ${p}: the state database holds entries up to ${applied}, the log starts after ${log.firstIndex() - 1}, and the image ${ref} is gone: this disk lost writes it had synced`);
        }
        await BrokerStateMachine.installSnapshot(statePath, image);
        state = readsBodiesFrom(log, await BrokerStateMachine.open(statePath, p, { readable }));
      }
      const replica = new PartitionReplica(
        {
          partition: p,
          self: opts.self,
          voters: opts.voters,
          electionTick: opts.electionTick ?? 10,
          heartbeatTick: opts.heartbeatTick ?? 1,
          random: (n) => Math.floor(random() * n),
          now: () => host.clock.now(),
          proposalTimeoutMs: opts.proposalTimeoutMs ?? 10_000,
          schedule: () => host.schedule(),
        },
        log,
        state,
      );
      host.replicas.push(replica);
      if (state.format() > readable) host.halt(replica, new FormatTooNewError(state.format(), readable));
      else {
        const lost = bodiesLost(log, state);
        if (lost !== null) host.halt(replica, lost);
      }
    }
    host.startedEmpty = host.replicas.every((r) => r.log.lastIndex() === 0 && r.raw.term() === 0);
    return host;
  }

  /** The newest log format this node reads (format.ts). */
  /** Calls `f` on every pass of the loop's timer (every two election timeouts): Housekeeping's. */
  onPass(f: () => void): void {
    this.passes.push(f);
  }

  /** The newest log format `peer` said it reads, in its latest Raft request; undefined before any. */
  peerFormat(peer: NodeId): number | undefined {
    return this.peerFormats.get(peer);
  }

  /** The newest log format this node reads (format.ts). */
  get readable(): number {
    return this.opts.format ?? FORMAT;
  }

  statePath(p: number): string {
    return join(this.opts.dataDir, 'state', `p${p}.db`);
  }

  snapshotPath(ref: string): string {
    return join(this.opts.dataDir, 'snapshots', `${ref}.db`);
  }

  /**
   * An image for a follower that asked for snapshot `ref` of `partition`; null if this node never
   * recorded that far. Snapshots are points the state was durable at, not copies: the image is made
   * on demand, from the state as it is now (SQLite's online backup, a few pages per event-loop turn),
   * so it holds every entry up to `ref` and maybe more, all committed. The follower restarts its log
   * at the image's own index (receiveSnapshot), and while the image is in use this node keeps the log
   * after it (compact()), so the follower can go on from there. One image per partition serves every
   * fetch whose ref it covers; a fetch for a newer ref gets a newer image.
   */
  async snapshotFile(partition: number, ref: string): Promise<string | null> {
    const r = this.replicas[partition];
    if (!isImageRef(partition, ref) || r === undefined) return null;
    const kept = this.snapshotPath(ref);
    if (existsSync(kept)) return kept;
    const wanted = Number(ref.split('-')[1]);
    if (wanted > r.log.snapshot().meta.index) return null;
    let s = this.served.get(partition);
    if (s === undefined || s.from < wanted) {
      if (s !== undefined) this.retireServed(partition);
      const path = join(this.opts.dataDir, 'snapshots', `p${partition}-serve-${++this.servedSeq}.db`);
      const from = r.state.applied().index;
      this.imaging.set(partition, (this.imaging.get(partition) ?? 0) + 1);
      const made: ServedImage = {
        path,
        from,
        usedAt: this.elapsed(),
        ready: r.state
          .snapshotTo(path)
          .finally(() => this.imaging.set(partition, this.imaging.get(partition)! - 1))
          .then(
            () => path,
            (err: unknown) => {
              if (this.served.get(partition) === made) this.served.delete(partition);
              rmSync(path, { force: true });
              throw err;
            },
          ),
      };
      this.served.set(partition, made);
      s = made;
    }
    s.usedAt = this.elapsed();
    return s.ready;
  }

  /**
   * Stops using the image of `partition`. A fetch that got its path a moment ago has yet to open it,
   * so the file goes a minute later (a download in progress reads on from its open file).
   */
  private retireServed(partition: number): void {
    const s = this.served.get(partition);
    if (s === undefined) return;
    this.served.delete(partition);
    void s.ready.then(
      (path) => setTimeout(() => rmSync(path, { force: true }), SERVED_GRACE_MS).unref(),
      () => undefined,
    );
  }

  start(): void {
    if (this.tickTimer !== null) return;
    this.lastHeardAny = this.elapsed();
    let ticks = 0;
    let lastTick = this.elapsed();
    this.tickTimer = setInterval(() => {
      const now = this.elapsed();
      // This node was stopped or its loop blocked for an election timeout or more: the peers' silence
      // is its own. Count from now, so that it does not call itself cut off before it reads their mail.
      if (now - lastTick > (this.opts.tickMs ?? 100) * (this.opts.electionTick ?? 10)) this.lastHeardAny = now;
      lastTick = now;
      for (const r of this.replicas) {
        if (r.halted !== null) continue;
        if (r.leader() !== null) this.leaderSeenAt[r.partition] = now;
        r.raw.tick();
      }
      // Every two election timeouts, a pass: hand partitions back to their preferred leaders, and
      // housekeeping (housekeeping.ts) proposes what no request does.
      if (++ticks % ((this.opts.electionTick ?? 10) * 2) === 0) {
        if (this.opts.balanceLeaders !== false) this.balanceLeaders();
        for (const f of this.passes) f();
      }
      this.schedule();
    }, this.opts.tickMs ?? 100);
  }

  /**
   * Stops driving partition r here (PartitionReplica.halt): its log needs a newer build, or its state
   * points at entries its log lost.
   */
  private halt(r: PartitionReplica, err: HaltReason): void {
    r.halt(err);
    const detail = err instanceof FormatTooNewError ? { format: err.format, readable: err.readable } : { index: err.index };
    this.opts.logger?.error({ partition: r.partition, ...detail }, `partition ${r.partition} halted on this node: ${err.message}`);
  }

  /** Proposes a system command on partition p, here if this node leads it, else at its leader. */
  async proposeSystem(p: number, command: Command): Promise<unknown> {
    const r = this.replica(p);
    if (r.isLeader()) return r.propose(null, command);
    const leader = r.leader();
    if (leader === null || leader === this.opts.self) throw new NotLeaderError(p, null);
    return this.opts.outbox.forward(leader, p, command);
  }

  /** A system command forwarded by a peer to this node as leader of `p` (see SYSTEM_COMMANDS). */
  async proposeForwarded(p: number, command: unknown): Promise<Result> {
    if (commandOrigin(command) !== 'system') throw new CommandRefusedError(`a peer may not forward '${String((command as { type?: unknown } | null)?.type)}'`);
    return this.replica(p).propose(null, command as Command);
  }

  /** Partition p prefers voter p mod 3 as leader, so that the three nodes share the writes evenly. */
  preferredLeader(p: number): NodeId {
    return this.opts.voters[p % this.opts.voters.length]!;
  }

  /**
   * Leaders spread over the nodes (thesis §3.10 leadership transfer): a partition led here but
   * preferring another node is handed to it once that node holds the whole log. A restarted node
   * thus takes its share back as soon as it has caught up.
   */
  balanceLeaders(): void {
    if (this.leaving) return;
    for (const r of this.replicas) {
      if (!r.isLeader() || r.raw.isTransferring()) continue;
      const preferred = this.preferredLeader(r.partition);
      if (preferred === this.opts.self || !this.recentlyHeard(preferred)) continue;
      const s = r.raw.status();
      // Nearly caught up is enough: the transfer itself waits for the last entries (§3.10).
      if (s.lastIndex - (s.match.get(preferred) ?? 0) > 64) continue;
      r.raw.transferLeadership(preferred);
    }
    this.schedule();
  }

  /**
   * How long this node has heard from no peer at all (ms), once that is longer than two election
   * timeouts; else 0. A node cut off from every other can lead nothing and reach no leader: its
   * router answers 503 at once, so that clients try another node instead of waiting.
   */
  cutOffFor(): number {
    if (this.lastHeardAny === null) return 0;
    const silent = this.elapsed() - this.lastHeardAny;
    return silent > 2 * (this.opts.tickMs ?? 100) * (this.opts.electionTick ?? 10) ? silent : 0;
  }

  /** Whether `peer` sent us anything within an election timeout: do not hand leadership to the dead. */
  private recentlyHeard(peer: NodeId): boolean {
    const at = this.lastHeard.get(peer);
    return at !== undefined && this.elapsed() - at < (this.opts.tickMs ?? 100) * (this.opts.electionTick ?? 10);
  }

  /**
   * Before a planned stop: hand every partition led here to a caught-up peer, and wait (bounded) for
   * the transfers, so that clients see no election timeout.
   */
  async handOverLeadership(maxWaitMs = 3000): Promise<void> {
    // From now on this node takes no leadership back (TimeoutNow is dropped, no balancing).
    this.leaving = true;
    const deadline = this.elapsed() + maxWaitMs;
    while (this.elapsed() < deadline) {
      const led = this.replicas.filter((r) => r.isLeader());
      if (led.length === 0) return;
      for (const r of led) {
        if (r.raw.isTransferring()) continue;
        const s = r.raw.status();
        const target = [...s.match]
          .filter(([id]) => id !== this.opts.self && this.recentlyHeard(id))
          .sort((a, b) => b[1] - a[1])[0];
        if (target !== undefined) r.raw.transferLeadership(target[0]);
      }
      this.schedule();
      await new Promise((res) => setTimeout(res, this.opts.tickMs ?? 100));
    }
  }

  replica(p: number): PartitionReplica {
    const r = this.replicas[p];
    if (r === undefined) throw new RangeError(`no partition ${p}`);
    return r;
  }

  /**
   * Messages from a peer, which reads log formats up to `format`. A snapshot's image is fetched before
   * its message reaches the core.
   */
  receive(from: NodeId, items: { partition: number; message: Message }[], format = 1, clock?: ClockSample): void {
    this.peerFormats.set(from, format);
    if (clock !== undefined) this.clock.heard(from, clock);
    if (this.closed || this.awaitingTerms) return;
    const now = this.elapsed();
    this.lastHeard.set(from, now);
    this.lastHeardAny = now;
    for (const { partition, message } of items) {
      const r = this.replicas[partition];
      if (r === undefined || r.halted !== null) continue;
      if (message.type === 'snap') {
        this.receiveSnapshot(from, r, message);
        continue;
      }
      if (message.type === 'timeout-now' && this.leaving) continue;
      r.raw.step(message);
    }
    this.schedule();
  }

  private receiveSnapshot(from: NodeId, r: PartitionReplica, m: Extract<Message, { type: 'snap' }>): void {
    const ref = new TextDecoder().decode(m.snapshot.data);
    if (!isImageRef(r.partition, ref)) return;
    const path = this.snapshotPath(ref);
    const key = `${r.partition}/${ref}`;
    // Being fetched: the fetch steps it. Its file may already be in place, and is then renamed to
    // the image's own index: a repeat stepped meanwhile had the core hand out a snapshot whose file
    // was gone when the turn installed it (chaos seed 3315).
    if (this.fetching.has(key)) return;
    // Already covered (a repeated message, or the log caught up meanwhile): the core answers with
    // its commit index, and nothing is fetched.
    if (existsSync(path) || m.snapshot.meta.index <= r.raw.position().committed) {
      r.raw.step(m);
      return;
    }
    this.fetching.add(key);
    this.opts.outbox
      .fetchSnapshot(from, r.partition, ref, path)
      .then(() => {
        if (this.closed) return;
        r.raw.step(this.snapshotAsImaged(r.partition, m, path));
        this.schedule();
      })
      .catch((err: unknown) => this.opts.logger?.warn({ err, partition: r.partition, ref }, 'snapshot fetch failed'))
      .finally(() => this.fetching.delete(key));
  }

  /**
   * The leader makes an image when asked, from its state as it is then: it may hold entries past the
   * snapshot its message named (all committed: the leader had applied them). The snapshot is taken
   * at the image's own index and term, under a ref that names them, so the log restarts where the
   * state is, and the leader, which keeps its log after the image while it is in use, goes on from
   * there. An image behind the message's snapshot is refused (and the fetch tried again later).
   */
  private snapshotAsImaged(partition: number, m: Extract<Message, { type: 'snap' }>, path: string): Extract<Message, { type: 'snap' }> {
    let at: { index: number; term: number };
    try {
      at = BrokerStateMachine.imageApplied(path);
      if (at.index < m.snapshot.meta.index) throw new Error(`the image holds entries up to ${at.index}, behind the snapshot at ${m.snapshot.meta.index}`);
    } catch (err) {
      // Not an image to install: gone, so the next snapshot message fetches again.
      rmSync(path, { force: true });
      throw err;
    }
    if (at.index === m.snapshot.meta.index) return m;
    const ref = imageRef(partition, at.index, at.term);
    renameSyncedDurably(path, this.snapshotPath(ref));
    return { ...m, snapshot: { meta: { ...m.snapshot.meta, index: at.index, term: at.term }, data: new TextEncoder().encode(ref) } };
  }

  /** Runs a loop turn soon: after the current I/O callbacks, so a burst of requests shares it. */
  schedule(): void {
    if (this.turnScheduled || this.closed) return;
    this.turnScheduled = true;
    setImmediate(() => {
      this.turnScheduled = false;
      void this.turn();
    });
  }

  private async turn(): Promise<void> {
    if (this.closed) return;
    if (this.turnRunning) {
      // A turn awaiting a snapshot install: run again when it ends, without spinning meanwhile.
      this.turnAgain = true;
      return;
    }
    this.turnRunning = true;
    /** The turn's fdatasync while it is in flight: a failing turn waits for it before closing the log. */
    let syncing: Promise<void> | null = null;
    try {
      this.commitDueStates();
      const readies: [PartitionReplica, Ready][] = [];
      for (const r of this.replicas) if (r.halted === null && r.raw.hasReady()) readies.push([r, r.raw.ready()]);
      if (readies.length === 0) return;
      const batch: PersistItem[] = [];
      for (const [r, rd] of readies) {
        if (rd.hardState === null && rd.entries.length === 0 && rd.snapshot === null) continue;
        const snapshot = rd.snapshot === null ? null : { meta: rd.snapshot.meta, ref: new TextDecoder().decode(rd.snapshot.data) };
        batch.push({ partition: r.partition, hardState: rd.hardState, entries: rd.entries, snapshot });
      }
      const early = new Set<Message>();
      // The replicas whose Ready may be applied while the turn's write is being synced: not one with a
      // snapshot (its image is installed after the sync, before its entries), nor one whose write cuts
      // the log (a follower replacing entries of an older term). If such a write were lost after its
      // entries were applied, the replaced entries would be back in the log on restart, below a state
      // that holds the new ones, and the core would take them for the committed prefix the state applied.
      const whileSyncing = new Set<PartitionReplica>();
      for (const [r, rd] of readies) if (rd.snapshot === null && !(rd.entries.length > 0 && rd.entries[0]!.index <= r.log.lastIndex())) whileSyncing.add(r);
      let appliedWhileSyncing = false;
      if (batch.length > 0) {
        this.logStore.append(batch);
        this.counters.persists++;
        for (const b of batch) this.counters.entries += b.entries.length;
        if (readies.some(([, rd]) => rd.mustSync)) {
          // Pipelined persistence (Raft thesis §10.2.1): a leader's appends and heartbeats leave
          // while its own write is synced on the thread pool; it counts itself toward a commit only
          // at advance(), after the sync. Acknowledgements and votes wait for the sync.
          const out: { partition: number; message: Message }[] = [];
          for (const [r, rd] of readies) {
            for (const message of rd.messages) {
              if (!sendableBeforePersist(rd, message)) continue;
              early.add(message);
              out.push({ partition: r.partition, message });
            }
          }
          if (out.length > 0) this.opts.outbox.send(out);
          syncing = this.logStore.sync();
          // Awaited below; a failure while the applies run must not count as unhandled meanwhile.
          syncing.catch(() => undefined);
          // Committed entries are durable on a majority already: apply them while this node's own
          // write is on its way to the disk, instead of after (the apply and the fdatasync overlap).
          // A follower may apply entries its own log has not synced yet; after a crash its state is
          // then ahead of its log: on restart the core starts from the log's end and the state machine
          // skips the entries it holds, as after an image installed ahead of the log.
          for (const [r, rd] of readies) if (whileSyncing.has(r)) this.applyOrHalt(r, rd);
          appliedWhileSyncing = true;
          await syncing;
          syncing = null;
        }
      }
      // The image is durable (fetched and fsynced) before the log is cut to it, so a crash right here
      // is mended on open: a state database behind the compacted log is replaced by the image.
      for (const [r, rd] of readies) if (rd.snapshot !== null) await this.installSnapshot(r, rd);
      const out: { partition: number; message: Message }[] = [];
      for (const [r, rd] of readies) for (const message of rd.messages) if (!early.has(message)) out.push({ partition: r.partition, message });
      if (out.length > 0) this.opts.outbox.send(out);
      for (const [r, rd] of readies) {
        if (!appliedWhileSyncing || !whileSyncing.has(r)) this.applyOrHalt(r, rd);
        if (r.halted !== null) continue;
        r.raw.advance(rd);
        if (rd.snapshot !== null) r.snapshotInstalled(rd.snapshot.meta.index);
        this.maybeCompact(r);
      }
      // A suspension ended while stepping messages before this turn: what ended it is persisted now.
      if (this.catchingUp !== null) this.checkCaughtUp();
      this.schedule();
    } catch (err) {
      // A storage failure leaves the core and the disk out of step: stop rather than go on wrongly.
      this.opts.logger?.error({ err }, 'loop turn failed; stopping the node host');
      // An apply failed while the write was being synced: the log's files close once it is done.
      if (syncing !== null) await syncing.catch(() => undefined);
      this.turnRunning = false;
      await this.close().catch((closing: unknown) => this.opts.logger?.error({ err: closing }, 'closing the node host after a failed turn failed'));
      throw err;
    } finally {
      this.turnRunning = false;
      if (this.turnAgain) {
        this.turnAgain = false;
        this.schedule();
      }
    }
  }

  /**
   * Commits the applies each partition's state has held uncommitted for STATE_COMMIT_MS or more
   * (BrokerStateMachine.apply, `defer`). Every turn looks, and the tick schedules one.
   */
  private commitDueStates(): void {
    // A monotonic clock unless a test drives one: a wall clock set back would hold groups open.
    const now = this.opts.now?.() ?? performance.now();
    for (const r of this.replicas) {
      // A commit failed (in a local snapshot's sync): the state lost applies already answered. The
      // turn fails and the host stops; the next start replays them from the log.
      if (r.state.failure !== null) throw r.state.failure;
      if (!r.state.uncommitted()) {
        this.uncommittedSince.delete(r.partition);
        continue;
      }
      const since = this.uncommittedSince.get(r.partition);
      if (since === undefined) this.uncommittedSince.set(r.partition, now);
      else if (now - since >= STATE_COMMIT_MS) {
        r.state.commit();
        this.uncommittedSince.delete(r.partition);
      }
    }
  }

  /**
   * Applies a Ready's committed entries and reads, or halts the partition when its log holds a format
   * this build cannot read: persisted, not applied, a newer build applies it from the state's applied
   * index.
   */
  private applyOrHalt(r: PartitionReplica, rd: Ready): void {
    try {
      r.applyReady(rd);
    } catch (err) {
      if (!(err instanceof FormatTooNewError)) throw err;
      this.halt(r, err);
    }
  }

  /** Replaces a partition's state with a snapshot image received from its leader. */
  private async installSnapshot(r: PartitionReplica, rd: Ready): Promise<void> {
    const ref = new TextDecoder().decode(rd.snapshot!.data);
    await r.state.close();
    await BrokerStateMachine.installSnapshot(this.statePath(r.partition), this.snapshotPath(ref));
    r.state = readsBodiesFrom(r.log, await BrokerStateMachine.open(this.statePath(r.partition), r.partition, { readable: this.readable }));
    this.retireServed(r.partition);
  }

  /**
   * Local compaction, when due: make the state database durable up to its applied index (an
   * fdatasync of its files on the thread pool; nothing is copied, however large the state), then
   * record that point as the partition's snapshot and drop the log behind it, less the entries kept
   * for slow followers. One at a time per partition.
   */
  private maybeCompact(r: PartitionReplica): void {
    const p = r.partition;
    if (this.compacting.has(p) || this.isImaging(p) || this.closed) return;
    const every = this.opts.snapshotEvery ?? 10_000;
    // Measured from the last snapshot, not the log's length: the kept tail must not retrigger it.
    // The core's applied index (no query) decides.
    if (r.raw.position().applied - r.log.snapshot().meta.index < every) return;
    this.compacting.add(p);
    void this.compact(r)
      .catch((err: unknown) => {
        // The sync failed (an I/O error): the log keeps everything, and the next due turn tries again.
        // If the state's commit failed, that turn stops the host (commitDueStates): run it now.
        if (!this.closed) this.opts.logger?.warn({ err, partition: p }, 'local snapshot failed; the log is kept');
        this.schedule();
      })
      .finally(() => this.compacting.delete(p));
  }

  private async compact(r: PartitionReplica): Promise<void> {
    const p = r.partition;
    const state = r.state;
    // Read before the sync: the sync covers every commit made before it started. The core's applied
    // index, which its log holds: an image installed from the leader may be ahead of the log (see
    // snapshotFile), and the state holds every entry up to either.
    const index = Math.min(r.raw.position().applied, state.applied().index);
    const at = { index, term: r.log.term(index) };
    // The entries about to be compacted that rows point at for their bodies (format 4): the log keeps
    // them. Read before the state is made durable, so that a row gone from the state read here is
    // gone from the state on disk too: rows point only at the entry that made them, so none comes
    // back, and a replay after a crash finds every body its rows need (docs/design/bodies-in-log.md).
    const referenced = state.referencedEntries(r.log.firstIndex(), index);
    await state.durable();
    // Meanwhile a snapshot from the leader may have replaced the state (a newer one recorded, or the
    // state reopened), or the node stopped: then this point is of no use.
    if (this.closed || r.state !== state || at.index <= r.log.snapshot().meta.index || this.isImaging(p)) return;
    let upTo = at.index - (this.opts.keepBehindSnapshot ?? 1000);
    // A follower installing the image made for it goes on from the image's index: keep the log after
    // it while the image is in use (asked for within SERVED_IDLE_MS).
    const served = this.served.get(p);
    if (served !== undefined && this.elapsed() - served.usedAt > SERVED_IDLE_MS) this.retireServed(p);
    else if (served !== undefined) upTo = Math.min(upTo, served.from);
    const compactTo = Math.max(r.log.firstIndex() - 1, upTo);
    const bodies = referenced.filter((i) => i >= r.log.firstIndex() && i <= compactTo);
    this.logStore.recordSnapshot(p, { index: at.index, term: at.term, voters: this.opts.voters }, imageRef(p, at.index, at.term), compactTo, bodies);
    this.removeOldImages(p, at.index);
    await this.releaseBodies();
  }

  private isImaging(p: number): boolean {
    return (this.imaging.get(p) ?? 0) > 0;
  }

  /**
   * Lets go of the entries kept for their bodies that hold the log's oldest segment back and that no
   * row points at any more, so that the segment can be deleted: for each partition holding some, its
   * state names those still pointed at, is made durable (the same order as compact()'s), and the log
   * releases the others. Segment after segment, while that frees one. One pass at a time per node.
   */
  private async releaseBodies(): Promise<void> {
    if (this.releasing) return;
    this.releasing = true;
    try {
      for (let freed = true; freed && !this.closed; ) {
        freed = false;
        for (const [p, held] of this.logStore.keptInOldestSegment()) {
          const r = this.replicas[p]!;
          const state = r.state;
          // Closed between the old state and an installed image: the next pass asks the new one.
          if (!state.isOpen() || this.isImaging(p)) continue;
          const dead = await this.deadAmong(r, state, held);
          if (dead === null || dead.length === 0) continue;
          await state.durable();
          // Meanwhile an image from the leader may have replaced the state (and what the log kept),
          // or an image began here, which may hold rows gone from the state since.
          if (this.closed || r.state !== state || this.isImaging(p)) continue;
          const still = this.logStore.stillKept(p, dead);
          if (still.length === 0) continue;
          this.logStore.releaseBodies(p, still);
          freed = true;
        }
      }
    } finally {
      this.releasing = false;
    }
  }

  /**
   * Those of `held` (ascending) that no row of `state` points at, asked RELEASE_CHUNK entries at a
   * time, oldest first, with a turn of the event loop between two asks; null when the state was
   * replaced meanwhile. It stops after the first chunk with an entry still pointed at: the segment
   * cannot be freed then, and asking about every entry of a segment of unacknowledged messages (50,000
   * of them) after each compaction held the event loop 100-250 ms (send-1 on a queue with a backlog).
   */
  private async deadAmong(r: PartitionReplica, state: BrokerStateMachine, held: readonly number[]): Promise<number[] | null> {
    const dead: number[] = [];
    for (let k = 0; k < held.length; k += RELEASE_CHUNK) {
      if (k > 0) await new Promise((res) => setImmediate(res));
      if (this.closed || r.state !== state || !state.isOpen() || this.isImaging(r.partition)) return null;
      const chunk = held.slice(k, k + RELEASE_CHUNK);
      const live = new Set(state.referencedAmong(chunk));
      for (const i of chunk) if (!live.has(i)) dead.push(i);
      if (live.size > 0) break;
    }
    return dead;
  }

  /**
   * Deletes images of `partition` older than the one just recorded. Never a download in progress, nor
   * an image fetched from the leader and not yet installed: the log may be about to record it.
   */
  private removeOldImages(partition: number, recorded: number): void {
    const dir = join(this.opts.dataDir, 'snapshots');
    for (const f of readdirSync(dir)) {
      const m = /^p(\d+)-(\d+)-(\d+)\.db$/.exec(f);
      if (m === null || Number(m[1]) !== partition || Number(m[2]) >= recorded) continue;
      if (this.fetching.has(`${partition}/${f.slice(0, -3)}`)) continue;
      rmSync(join(dir, f), { force: true });
    }
  }

  /**
   * For a data folder that may be older than the cluster (new, emptied, or restored from a backup):
   * every partition's voting is suspended until it holds what its leader committed. `onCaughtUp`
   * runs once all have, after a turn persisted the entries that got them there.
   */
  suspendVotingUntilCaughtUp(onCaughtUp: () => void): void {
    for (const r of this.replicas) r.raw.suspendVoting();
    this.catchingUp = { onCaughtUp };
    this.awaitingTerms = true;
  }

  /** Whether peers' messages are dropped until applyTermFloors. */
  get holdingForTerms(): boolean {
    return this.awaitingTerms;
  }

  /**
   * Raises each partition's term to floors[p] (the highest term any peer holds), durably, then takes
   * peers' messages again.
   */
  applyTermFloors(floors: readonly number[]): void {
    const batch: PersistItem[] = [];
    for (const r of this.replicas) {
      const floor = floors[r.partition] ?? 0;
      if (floor <= r.raw.term()) continue;
      batch.push({ partition: r.partition, hardState: r.raw.raiseTerm(floor), entries: [], snapshot: null });
    }
    if (batch.length > 0) this.logStore.persist(batch, true);
    this.awaitingTerms = false;
  }

  /** Ends every suspension at once: only when every member of the cluster is new (nothing to catch up on). */
  resumeVoting(): void {
    for (const r of this.replicas) r.raw.resumeVoting();
    this.checkCaughtUp();
  }

  private checkCaughtUp(): void {
    if (this.catchingUp === null) return;
    // Caught up, and durably: the stored log reaches what is committed (entries stepped in while a
    // turn awaited a snapshot install are not stored yet; a later turn's end looks again).
    const pending = (r: PartitionReplica): boolean => {
      const at = r.raw.position();
      // Nothing unstable (entries stepped in during a snapshot install's await, a truncated tail not
      // yet rewritten), and the stored log reaches what is committed.
      return r.raw.votingIsSuspended() || at.stableLastIndex !== at.lastIndex || r.log.lastIndex() < at.committed;
    };
    if (this.replicas.some(pending)) return;
    const { onCaughtUp } = this.catchingUp;
    this.catchingUp = null;
    onCaughtUp();
  }

  /**
   * Each partition's stored term and last log index, and the nodes this process has had no Raft
   * message from since it started on an empty log (a peer deciding whether the cluster is new, or
   * whether it may vote at once: see ClusterNode.learnTerms).
   */
  logPositions(): { terms: number[]; lastIndexes: number[]; untouchedBy: NodeId[] } {
    const untouchedBy = this.startedEmpty ? this.opts.voters.filter((v) => v !== this.opts.self && !this.peerFormats.has(v)) : [];
    return { terms: this.replicas.map((r) => r.raw.term()), lastIndexes: this.replicas.map((r) => r.raw.position().lastIndex), untouchedBy };
  }

  status(): PartitionStatus[] {
    return this.replicas.map((r) => {
      const s = r.raw.status();
      return {
        partition: r.partition,
        // A halted replica follows nobody: its core's last view is stale.
        role: r.halted === null ? s.soft.role : 'follower',
        leader: r.leader(),
        term: s.hard.term,
        commitIndex: s.hard.commit,
        // The core's applied index: the state database may be closed for a snapshot install.
        appliedIndex: s.applied,
        lastIndex: s.lastIndex,
        match: Object.fromEntries(s.match),
        format: r.state.format(),
        halted: r.halted?.message ?? null,
      };
    });
  }

  /**
   * Partitions with no known leader for longer than `graceMs` (for readiness). A leadership transfer
   * or a quick election leaves a partition leaderless for a moment; that is not unreadiness.
   */
  leaderless(graceMs: number): number[] {
    const now = this.elapsed();
    // A partition never led since this process started has been leaderless for ever.
    return this.replicas.filter((r) => r.leader() === null && now - (this.leaderSeenAt[r.partition] ?? -Infinity) > graceMs).map((r) => r.partition);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.tickTimer !== null) clearInterval(this.tickTimer);
    // A turn in progress finishes its Ready first: closing the databases under it would fail it.
    while (this.turnRunning) await new Promise((r) => setImmediate(r));
    for (const r of this.replicas) r.close();
    // Every database and the log close, whatever one of them throws (a state whose last commit
    // fails); the first error is thrown after.
    let failed: unknown = null;
    for (const r of this.replicas) {
      try {
        await r.state.close();
      } catch (err) {
        failed ??= err;
      }
    }
    this.logStore.close();
    if (failed !== null) throw failed;
  }
}

/** The name of a snapshot (and of its image file): p<partition>-<index>-<term>. */
function imageRef(partition: number, index: number, term: number): string {
  return `p${partition}-${index}-${term}`;
}

/** Whether `ref` names a snapshot of `partition` (imageRef). A peer's ref is checked before any file use. */
function isImageRef(partition: number, ref: string): boolean {
  return /^p\d+-\d+-\d+$/.test(ref) && ref.startsWith(`p${partition}-`);
}

/**
 * Whether every entry below the Raft log that the state's rows point at for their bodies (format 4) is
 * kept by the log; if not, the error to halt the partition with. Entries from the log's first index
 * on are the Raft log's own. A node that ran an older build on this disk (rolled back past format 4)
 * let such entries go: its state would fail at the first receive of those messages, so the partition
 * stops at start instead, and the node is rebuilt from its peers (docs/operations.md). One range scan
 * of the primary key per channel: a start with a backlog of 1,000,000 rows reads them once.
 */
function bodiesLost(log: PartitionLog, state: BrokerStateMachine): BodyMissingError | null {
  const below = log.firstIndex() - 1;
  if (below < 1) return null;
  const referenced = state.referencedEntries(1, below);
  if (referenced.length === 0) return null;
  const kept = log.keptBodies();
  const missing: number[] = [];
  let k = 0;
  for (const i of referenced) {
    while (k < kept.length && kept[k]! < i) k++;
    if (k >= kept.length || kept[k] !== i) missing.push(i);
  }
  if (missing.length === 0) return null;
  const more = missing.length === 1 ? '' : ` (and ${missing.length - 1} more entries rows point at)`;
  return new BodyMissingError(
    state.partition,
    missing[0]!,
    `is gone from the log${more}: the log let go of entries the state's rows still point at (a node rolled back past format 4 ran on this disk, or the disk lost writes). Rebuild this node from its peers (docs/operations.md)`,
  );
}

/**
 * Gives a partition's state its log to read bodies from (format 4; src/store/broker/bodies.ts): the
 * Raft log, or the entries kept below it. An index past the log's end is an entry the log lost.
 */
function readsBodiesFrom(log: PartitionLog, state: BrokerStateMachine): BrokerStateMachine {
  state.attachBodies({
    entry: (i) => {
      try {
        return log.body(i)?.data ?? null;
      } catch (err) {
        if (err instanceof EntryUnavailableError) return null;
        throw err;
      }
    },
  });
  return state;
}
