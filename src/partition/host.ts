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
import { existsSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { sendableBeforePersist, type Message, type NodeId, type Ready, type Role } from '../raft/index.js';
import { BOUNDED_CLOCK_STEP, BrokerStateMachine, FORMAT, FormatTooNewError, MAX_CLOCK_STEP_MS, type Command, type Result } from '../store/broker/index.js';
import { mkdirDurably } from '../store/durable.js';
import { native } from '../native/native.js';
import { openNodeLog, type PersistItem, type WalOptions, type WalStore } from '../store/wal/index.js';
import { ClusterClock, type ClockSample } from './cluster-clock.js';
import { ClockBehindError, CommandRefusedError, NotLeaderError } from './errors.js';
import { Leadership } from './leadership.js';
import { Rejoin } from './rejoin.js';
import { PartitionReplica, type HaltReason } from './replica.js';
import { Snapshots, bodiesLost, readsBodiesFrom, snapshotPath, statePath } from './snapshots.js';

/**
 * The system's own commands: proposed with no actor, by a leader's housekeeping or forwarded by a
 * peer's (Router.proposeSystemAt); never one of a client's requests.
 */
export const SYSTEM_COMMANDS: readonly string[] = ['deadletter.deliver', 'outbox.done', 'sweep', 'format.raise'];

/**
 * The one guard of what a peer forwards and what a client's request proposes: 'system' for a command
 * only the system proposes (a peer's forwarded command with no actor, or an older build's at
 * /internal/propose: proposeForwarded), 'client' for one a client's request may carry (Router.propose
 * takes only these), null for what is no command at all.
 */
export function commandOrigin(command: unknown): 'system' | 'client' | null {
  const type = (command as { type?: unknown } | null)?.type;
  if (typeof type !== 'string') return null;
  return SYSTEM_COMMANDS.includes(type) ? 'system' : 'client';
}

/**
 * How far (ms) replica `r`'s partition clock is behind `now`, the nodes' clock, where `r` leads, its
 * state is open and in a format whose entries move the clock by a bounded step (BOUNDED_CLOCK_STEP);
 * null where none of that holds. More than MAX_CLOCK_STEP_MS is a clock still catching up after an
 * outage (NodeHost.clockBehind, Router.holdWhileClockBehind).
 */
export function clockLag(r: Pick<PartitionReplica, 'isLeader' | 'state'>, now: number): number | null {
  if (!r.isLeader() || !r.state.isOpen() || r.state.format() < BOUNDED_CLOCK_STEP) return null;
  return now - r.state.clock();
}

/** What the host needs from the network (ClusterNode gives it the transport's, and the router's forward). */
export interface Outbox {
  send(items: { partition: number; message: Message }[]): void;
  /**
   * Asks `peer`, the leader of `partition`, to propose a system command (Router.proposeSystemAt:
   * forwarded as a client's command is); resolves with its result.
   */
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
  /** The clock a partition's state commits by (STATE_COMMIT_MS; default performance.now), and the wall clock without `wallClock`. */
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
  readonly logger?: { debug?(obj: object, msg: string): void; info?(obj: object, msg: string): void; warn(obj: object, msg: string): void; error(obj: object, msg: string): void };
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

/**
 * A partition's state commits what it applied at most this long after (BrokerStateMachine.apply,
 * `defer`): a commit writes every page it changed, and under load each turn's apply changes the same
 * few. Applies are answered before their commit: the Raft log holds them, and replays what a crash
 * took from the state. With single sends, committing every 100 ms instead of every turn wrote
 * a seventh of the bytes (bench/README.md).
 */
export const STATE_COMMIT_MS = 100;

export class NodeHost {
  readonly replicas: PartitionReplica[] = [];
  /** The time this node stamps its entries with: the median of its wall clock and its peers' (cluster-clock.ts). */
  readonly clock: ClusterClock;
  /** HostOptions.monotonic. */
  private readonly elapsed: () => number;
  private tickTimer: NodeJS.Timeout | null = null;
  /** Ticks so far (tick()), and when the last one ran (monotonic ms; null before the first). */
  private ticks = 0;
  private lastTick: number | null = null;
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
  /** What runs on every tick (onTick). */
  private readonly everyTick: (() => void)[] = [];
  /** Whether every partition's log and term were empty when this process opened them. */
  private emptyAtOpen = false;
  private turnAgain = false;
  private closed = false;
  /** Local compaction, and the images served to followers and fetched from leaders (snapshots.ts). */
  readonly snapshots: Snapshots;
  /** Leaders spread and handed over, and the peers' liveness (leadership.ts). */
  readonly leadership: Leadership;
  /** Voting suspended while a node whose disk may be older than the cluster catches up (rejoin.ts). */
  readonly rejoin: Rejoin;
  /** Loop turns that persisted something, and the entries they persisted: group commit at a glance. */
  readonly counters = { persists: 0, entries: 0 };

  private constructor(
    readonly opts: HostOptions,
    readonly logStore: WalStore,
  ) {
    this.elapsed = opts.monotonic ?? (() => performance.now());
    this.clock = new ClusterClock(opts.wallClock ?? opts.now ?? Date.now, this.elapsed);
    const host = { replicas: this.replicas, logStore, readable: () => this.readable, elapsed: this.elapsed, isClosed: () => this.closed, schedule: () => this.schedule() };
    this.snapshots = new Snapshots(host, {
      dataDir: opts.dataDir,
      voters: opts.voters,
      snapshotEvery: opts.snapshotEvery,
      keepBehindSnapshot: opts.keepBehindSnapshot,
      fetch: (peer, partition, ref, dest) => opts.outbox.fetchSnapshot(peer, partition, ref, dest),
      logger: opts.logger,
    });
    this.leadership = new Leadership(host, { self: opts.self, voters: opts.voters, tickMs: this.tickMs, electionTick: this.electionTick });
    this.rejoin = new Rejoin(this.replicas, logStore);
  }

  private get tickMs(): number {
    return this.opts.tickMs ?? 100;
  }

  private get electionTick(): number {
    return this.opts.electionTick ?? 10;
  }

  /** Whether every partition's log and term were empty when this process opened them. */
  get startedEmpty(): boolean {
    return this.emptyAtOpen;
  }

  static async open(opts: HostOptions): Promise<NodeHost> {
    mkdirDurably(join(opts.dataDir, 'state'));
    mkdirDurably(join(opts.dataDir, 'snapshots'));
    // The log's LOCK first: a second process on a folder in use stops here, before it touches anything.
    const logStore = await openNodeLog(opts.dataDir, opts.partitions, opts.voters, {
      onDeleteFailed: (path, err) => opts.logger?.warn({ err, path }, `a log segment no partition needs could not be deleted; it stays until the next start`),
      ...opts.log,
    });
    if (native?.lockFile !== undefined && !logStore.folderLocked) {
      opts.logger?.warn({ dir: logStore.dir }, 'the file system of the log gives no flock: the log is held by its LOCK file alone, which two containers on one volume (both process 1) can each take for their own');
    }
    // Images made for followers by an earlier run, and images it was fetching (`.part`, a crash in
    // the middle of a download): nobody is fetching either now, and each can be a whole state's size.
    // Images it fetched whole are kept aside by partition, for its log to say which one it names.
    const leftovers = new Map<number, string[]>();
    for (const f of readdirSync(join(opts.dataDir, 'snapshots'))) {
      if (/^p\d+-serve-/.test(f) || f.endsWith('.part')) rmSync(join(opts.dataDir, 'snapshots', f), { force: true });
      const m = /^p(\d+)-\d+-\d+\.db$/.exec(f);
      if (m !== null) leftovers.set(Number(m[1]), [...(leftovers.get(Number(m[1])) ?? []), f]);
    }
    const host = new NodeHost(opts, logStore);
    const random = opts.random ?? Math.random;
    for (let p = 0; p < opts.partitions; p++) {
      const log = logStore.partition(p, opts.voters);
      log.verify();
      const path = statePath(opts.dataDir, p);
      // The log is compacted only behind a point the state database had made durable (Snapshots.compact),
      // or behind an image fetched from the leader, durable before the log recorded it. A state
      // behind the compacted log is an install that a crash cut short: its image is still there.
      // So is one whose state was ahead (a power cut had left it past its log): the install is done
      // again all the same, since the log restarted at the image and keeps nothing the old state's
      // rows point at (format 4). An image is moved away only by a completed install.
      const ref = log.snapshotRef();
      const readable = host.readable;
      let state = readsBodiesFrom(log, await BrokerStateMachine.open(path, p, { readable }));
      const applied = state.applied().index;
      const image = ref === null ? null : snapshotPath(opts.dataDir, ref);
      if (image !== null && (applied < log.firstIndex() - 1 || existsSync(image))) {
        await state.close();
        if (!existsSync(image)) {
          throw new Error(`partition ${p}: the state database holds entries up to ${applied}, the log starts after ${log.firstIndex() - 1}, and the image ${ref} is gone: this disk lost writes it had synced`);
        }
        await BrokerStateMachine.installSnapshot(path, image);
        state = readsBodiesFrom(log, await BrokerStateMachine.open(path, p, { readable }));
      }
      // Images fetched by an earlier run and never installed (it stopped between the download and
      // the log's record of it, or the core refused them) are of no use: none is being fetched now,
      // and the leader sends its snapshot again where one is needed (review of 2026-12-07).
      for (const f of leftovers.get(p) ?? []) if (f !== `${ref}.db`) rmSync(join(opts.dataDir, 'snapshots', f), { force: true });
      const replica = new PartitionReplica(
        {
          partition: p,
          self: opts.self,
          voters: opts.voters,
          electionTick: host.electionTick,
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
      if (host.haltIfTooNew(replica)) continue;
      const lost = bodiesLost(log, state);
      if (lost !== null) host.halt(replica, lost);
      else host.rebuildMessageTable(state);
    }
    host.emptyAtOpen = host.replicas.every((r) => r.log.lastIndex() === 0 && r.raw.term() === 0);
    return host;
  }

  /**
   * Rebuilds a state's message table into the clustered layout if its format allows it and the raise
   * left it as it was, too large to rebuild within an apply (message-table.ts): at start, before the
   * partition runs, since it takes seconds on a large table.
   */
  private rebuildMessageTable(state: BrokerStateMachine): void {
    const started = performance.now();
    let moved: number | null;
    try {
      moved = state.rebuildMessageTable();
    } catch (err) {
      // The layout is no part of the state: a rebuild that fails (a full disk, say) leaves the table
      // as it was, and the node serves it so; the next start tries again.
      this.opts.logger?.warn({ err, partition: state.partition }, `partition ${state.partition}: the message table could not be rebuilt; it stays in the rowid layout`);
      return;
    }
    if (moved === null) return;
    const ms = Math.round(performance.now() - started);
    this.opts.logger?.info?.({ partition: state.partition, messages: moved, ms }, `partition ${state.partition}: message table rebuilt in the clustered layout`);
  }

  /** Calls `f` on every pass of the loop's timer (every two election timeouts): Housekeeping's. */
  onPass(f: () => void): void {
    this.passes.push(f);
  }

  /** Calls `f` on every tick, after the pass's work when there is one: Housekeeping's format raises and clocks. */
  onTick(f: () => void): void {
    this.everyTick.push(f);
  }

  /** The newest log format `peer` said it reads, in its latest Raft request; undefined before any. */
  peerFormat(peer: NodeId): number | undefined {
    return this.peerFormats.get(peer);
  }

  /** The newest log format this node reads (format.ts). */
  get readable(): number {
    return this.opts.format ?? FORMAT;
  }

  /** Ticks every tickMs from now on (a test that drives time itself calls tick() instead). */
  start(): void {
    if (this.tickTimer !== null) return;
    this.leadership.listening();
    this.lastTick = this.elapsed();
    this.tickTimer = setInterval(() => this.tick(), this.tickMs);
  }

  /**
   * One Raft tick of every partition, then a loop turn: the timer's work every tickMs. Every two
   * election timeouts, a pass: partitions handed back to their preferred leaders, and housekeeping
   * (housekeeping.ts) proposes what no request does.
   */
  tick(): void {
    if (this.closed) return;
    const now = this.elapsed();
    // This node was stopped or its loop blocked for an election timeout or more: the peers' silence
    // is its own. Count from now, so that it does not call itself cut off before it reads their mail.
    if (this.lastTick !== null && now - this.lastTick > this.tickMs * this.electionTick) this.leadership.listening();
    this.lastTick = now;
    this.leadership.sampleLeaders();
    // A leaving node ticks only what it still leads (heartbeats, the transfer's timeout): its
    // followers' election timers stop, so that it does not win an election during its close and
    // stop as a leader, costing a second election (review of 2026-12-07). It still votes.
    const leaving = this.leadership.leaving;
    for (const r of this.replicas) if (r.halted === null && (!leaving || r.isLeader())) r.raw.tick();
    if (++this.ticks % (this.electionTick * 2) === 0) {
      if (this.opts.balanceLeaders !== false) this.leadership.balance();
      for (const f of this.passes) f();
    }
    for (const f of this.everyTick) f();
    this.schedule();
  }

  /** Whether no loop turn is scheduled or running (a snapshot's fetch or a compaction may still be under way). */
  get idle(): boolean {
    return !this.turnScheduled && !this.turnRunning;
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
    if (r.isLeader()) {
      this.holdWhileClockBehind(p, command);
      return r.propose(null, command);
    }
    // A halted replica follows nobody (a build older than the partition's format): the other voters
    // are asked in turn, and the leader among them proposes it. Asking the next after an unknown
    // outcome is safe for the one caller, housekeeping's dead letters: deduplicated by their outbox row
    // (by message id before format 12).
    if (r.halted !== null) {
      let last: unknown = new NotLeaderError(p, null);
      for (const peer of this.opts.voters) {
        if (peer === this.opts.self) continue;
        try {
          return await this.opts.outbox.forward(peer, p, command);
        } catch (err) {
          last = err;
        }
      }
      throw last;
    }
    const leader = r.leader();
    if (leader === null || leader === this.opts.self) throw new NotLeaderError(p, null);
    return this.opts.outbox.forward(leader, p, command);
  }

  /** A system command forwarded by a peer to this node as leader of `p` (see SYSTEM_COMMANDS). */
  async proposeForwarded(p: number, command: unknown): Promise<Result> {
    if (commandOrigin(command) !== 'system') throw new CommandRefusedError(`a peer may not forward '${String((command as { type?: unknown } | null)?.type)}'`);
    this.holdWhileClockBehind(p, command as Command);
    return this.replica(p).propose(null, command as Command);
  }

  /**
   * How far (ms) partition p's clock is behind the nodes' where this node leads it, when that is more
   * than one step (MAX_CLOCK_STEP_MS: an entry moves it no further, so an outage leaves it behind
   * until housekeeping's sweeps have brought it up); else 0.
   */
  clockBehind(p: number): number {
    const lag = clockLag(this.replica(p), this.clock.now());
    return lag !== null && lag > MAX_CLOCK_STEP_MS ? lag : 0;
  }

  /**
   * Dead letters wait while their partition's clock catches up, as a client's send does
   * (Router.holdWhileClockBehind): stored now, each would be stamped with the old clock, its
   * retention counted from then, and expire unseen as the clock caught up (review of stop 61).
   */
  private holdWhileClockBehind(p: number, command: Command): void {
    if (command.type !== 'deadletter.deliver') return;
    const behind = this.clockBehind(p);
    if (behind > 0) throw new ClockBehindError(p, behind);
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
    if (this.closed || this.rejoin.holdingForTerms) return;
    this.leadership.heard(from, items);
    for (const { partition, message } of items) {
      const r = this.replicas[partition];
      if (r === undefined || r.halted !== null) continue;
      if (message.type === 'snap') {
        this.snapshots.receive(from, r, message);
        continue;
      }
      if (message.type === 'timeout-now') {
        if (this.leadership.leaving) continue;
        this.leadership.handedOver(partition, from);
      }
      r.raw.step(message);
    }
    this.schedule();
  }

  /**
   * The transport lost messages to `peer` undelivered, appends of `partitions` among them: the groups
   * this node leads there send again from the peer's match at the next turn (RawNode.reportUnreachable),
   * not at the next heartbeat, which a window of one append in flight would otherwise wait for.
   */
  reportLost(peer: NodeId, partitions: readonly number[]): void {
    if (this.closed) return;
    for (const p of partitions) {
      const r = this.replicas[p];
      if (r !== undefined && r.halted === null) r.raw.reportUnreachable(peer);
    }
    this.schedule();
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
      // Sends and acks held since the last turn go in now, each group's as one entry (PartitionReplica.propose).
      for (const r of this.replicas) if (r.halted === null) r.proposeHeld();
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
      for (const [r, rd] of readies) if (rd.snapshot !== null) await this.snapshots.install(r, rd);
      const out: { partition: number; message: Message }[] = [];
      for (const [r, rd] of readies) for (const message of rd.messages) if (!early.has(message)) out.push({ partition: r.partition, message });
      if (out.length > 0) this.opts.outbox.send(out);
      for (const [r, rd] of readies) {
        if (!appliedWhileSyncing || !whileSyncing.has(r)) this.applyOrHalt(r, rd);
        if (r.halted !== null) continue;
        r.raw.advance(rd);
        if (rd.snapshot !== null) r.snapshotInstalled(rd.snapshot.meta.index);
        this.snapshots.maybeCompact(r);
      }
      // A suspension ended while stepping messages before this turn: what ended it is persisted now.
      this.rejoin.checkCaughtUp();
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

  /** Halts partition r here if its state is in a format this build cannot read; says whether it did. */
  private haltIfTooNew(r: PartitionReplica): boolean {
    if (r.state.format() <= this.readable) return false;
    this.halt(r, new FormatTooNewError(r.state.format(), this.readable));
    return true;
  }

  /**
   * Applies a Ready's committed entries and reads, or halts the partition when its log holds a format
   * this build cannot read: persisted, not applied, a newer build applies it from the state's applied
   * index.
   */
  private applyOrHalt(r: PartitionReplica, rd: Ready): void {
    // An image just installed may be in a format this build cannot read (its leader's build is
    // newer): halt before anything reads it, as on open, even with no entry to apply after it.
    if (this.haltIfTooNew(r)) return;
    try {
      r.applyReady(rd);
    } catch (err) {
      if (!(err instanceof FormatTooNewError)) throw err;
      this.halt(r, err);
    }
  }

  /**
   * Each partition's stored term and last log index, and the nodes this process has had no Raft
   * message from since it started on an empty log (a peer deciding whether the cluster is new, or
   * whether it may vote at once: see ClusterNode.learnTerms).
   */
  logPositions(): { terms: number[]; lastIndexes: number[]; commits: number[]; untouchedBy: NodeId[] } {
    const untouchedBy = this.emptyAtOpen ? this.opts.voters.filter((v) => v !== this.opts.self && !this.peerFormats.has(v)) : [];
    const positions = this.replicas.map((r) => r.raw.position());
    return {
      terms: this.replicas.map((r) => r.raw.term()),
      lastIndexes: positions.map((x) => x.lastIndex),
      // What a restarted peer's readiness waits for (catch-up.ts): each an index committed in the cluster.
      commits: positions.map((x) => x.committed),
      untouchedBy,
    };
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
    // Segments being deleted go first: a node started again on this folder finds them gone.
    await this.logStore.settled();
    this.logStore.close();
    if (failed !== null) throw failed;
  }
}
