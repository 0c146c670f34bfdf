// The free space of each node's data folder, watched so that the cluster refuses writes that add
// data before a disk fills, as RabbitMQ's disk alarm blocks publishers (docs/operations.md, "Disk
// space"). A full disk stops a node at its next failed write, and the three nodes hold the same data,
// so with disks of one size they fill together: every partition would stop at once, and stay stopped
// until space is freed by hand. Refusing sends, publishes and creations a margin before that keeps
// the cluster serving what frees space: receives, acks, deletes and purges (their log entries are
// small, and compaction then drops whole segments).
//
// Each node checks its own folder every few seconds (statfs, on the thread pool) and tells its peers
// through the rate-limit gossip while it is short (limit-gossip.ts: best effort; an older build
// ignores the event). A node refuses those writes while it or a peer heard lately is short: a
// follower's disk fills as fast as its leader's. A partition's leader refuses forwarded ones too (a
// forwarding node of an older build does not check), but for a retry whose Idempotency-Key its state
// holds a record of: the apply answers that from the record, adding nothing. A peer that stops telling
// (down, cut off) counts no more after PEER_SHORT_FRESH_MS. The refusal is 507 insufficient_storage,
// not 503: a load balancer takes a 503 for a failed node, and with every node refusing sends it would
// leave them all out, receives and acks too. Nothing here is replicated state: the check runs before
// a command is proposed, so replicas stay identical.
//
// An Idempotency-Key adds data too: its record, kept 24 hours (a keyed lease of 100 handles keeps
// about 1.8 KB), so a user sending distinct keys went on filling the disks past the alarm with the
// commands it lets through (review of 2026-12-07). Refusing every keyed command would stop what frees
// space for the clients that key every write (the CLI does): their acks, deletes and purges. So while
// short, the leader proposes such a command whose key its state has no record of without the key
// (keyDecision): its entry carries none, so every replica, of any build, applies it as a keyless one
// and keeps nothing, and no log format is needed. A retry after a lost answer is then applied again,
// as without a key, which is harmless for an ack or nack (its receipt handles find that delivery over:
// receipt_stale), a lease (extended again, from a moment later), a delete (404) or a purge (what came
// since is purged too, as a purge a moment later would). Not for a receive, whose record is what makes
// a retry a replay: applied again, it would lease other messages and leave those of the first leased
// to nobody until their visibility timeout (dropped on maxDeliveries 1). A keyed receive with a new
// key is refused instead, and told that one without a key goes on.
import { statfs } from 'node:fs/promises';
import { ErrorCode, fail, type Command, type Failure } from '../store/broker/index.js';

/** How often a node looks at its free space (ms). */
export const DISK_CHECK_MS = 5_000;
/** A peer said short counts for this long after it last said so (it repeats it every check). */
export const PEER_SHORT_FRESH_MS = 3 * DISK_CHECK_MS;

/** Retry-After of a write refused for disk space: consumers or an operator free it, not a second. */
export const DISK_SHORT_RETRY_SECONDS = 10;

/**
 * Commands that add data, refused while a node is short (diskShort). Receives, acks, nacks, deletes,
 * purges, revokes, logouts and password changes go on: they free space, or write little.
 */
const ADDS_DATA: ReadonlySet<Command['type']> = new Set(['user.register', 'queue.create', 'topic.create', 'subscription.create', 'grant.put', 'queue.send', 'topic.publish']);

/** Whether `command` adds data (ADDS_DATA). */
export function addsData(command: Command): boolean {
  return ADDS_DATA.has(command.type);
}

/**
 * What the leader of a partition does with a client's command while the cluster is short of disk
 * space: 'take' it as it is, take it 'without the key' (proposed with no Idempotency-Key, so that no
 * record is kept), or 'refuse' it (diskShort). `recorded`: the partition's state holds a live record
 * of the command's key, so the apply answers from it, adding nothing.
 */
export type KeyDecision = 'take' | 'without the key' | 'refuse';

/**
 * The decision for `command` while short (the header above says why). `keyed`: it carries an
 * Idempotency-Key whose record its apply would keep (a user's command: the system's keep none).
 */
export function keyDecision(command: Command, keyed: boolean, recorded: boolean): KeyDecision {
  if (keyed && recorded) return 'take';
  if (addsData(command)) return 'refuse';
  if (!keyed) return 'take';
  return command.type === 'receive' ? 'refuse' : 'without the key';
}

/**
 * The refusal of `command` while a node is short of disk space, before it is proposed: a result like
 * an apply's refusal (507 insufficient_storage to the client), so a leader answers a peer's forwarded
 * command with it as with any other result. Nothing was written.
 */
export function diskShort(command: Command): Failure {
  if (!addsData(command)) {
    return fail(
      ErrorCode.InsufficientStorage,
      'the cluster is short of disk space: a receive with a new Idempotency-Key is refused until space is freed, as its record would be kept 24 hours (a receive without one goes on); nothing was written',
    );
  }
  return fail(
    ErrorCode.InsufficientStorage,
    'the cluster is short of disk space: sends, publishes and creations are refused until space is freed (receives, acks and deletes go on); nothing was written',
  );
}

/** What a node tells its peers about its disk. */
export interface DiskEvent {
  readonly kind: 'disk';
  readonly node: string;
  readonly short: boolean;
  readonly freeBytes: number;
}

export interface DiskSpaceOptions {
  readonly self: string;
  readonly peers: readonly string[];
  readonly dataDir: string;
  /** Free bytes under which the node is short; 0: never. */
  readonly limitBytes: number;
  /** Tells the peers (the gossip). */
  publish(event: DiskEvent): void;
  /** Monotonic ms (default performance.now). */
  readonly now?: () => number;
  /** Free bytes of the file system holding `path` for this user (default statfs). */
  readonly freeBytes?: (path: string) => Promise<number>;
  readonly logger?: { warn(obj: object, msg: string): void; info(obj: object, msg: string): void };
}

const NONE: readonly string[] = Object.freeze([]);

export class DiskSpace {
  private free: number | null = null;
  private short = false;
  /** Peers said short, and until when that counts. */
  private readonly peersShort = new Map<string, number>();
  private timer: NodeJS.Timeout | null = null;
  private checking: Promise<void> | null = null;
  private readonly now: () => number;
  private readonly freeBytesOf: (path: string) => Promise<number>;

  constructor(private readonly opts: DiskSpaceOptions) {
    this.now = opts.now ?? (() => performance.now());
    this.freeBytesOf = opts.freeBytes ?? (async (path) => {
      const s = await statfs(path);
      return s.bavail * s.bsize;
    });
  }

  /** Checks now, then every DISK_CHECK_MS until close() (also with a limit of 0: the free space is a metric). */
  start(): void {
    if (this.timer !== null) return;
    void this.check();
    this.timer = setInterval(() => void this.check(), DISK_CHECK_MS);
    this.timer.unref();
  }

  close(): void {
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
  }

  /** Looks at the free space once (start() does it every DISK_CHECK_MS); one look at a time. */
  check(): Promise<void> {
    this.checking ??= this.look().finally(() => (this.checking = null));
    return this.checking;
  }

  private async look(): Promise<void> {
    let free: number;
    try {
      free = await this.freeBytesOf(this.opts.dataDir);
    } catch (err) {
      // Not known: keep what was known, and keep saying it while short, or the peers would stop
      // counting this node while it still refuses (the cluster split on it). The node's writes tell
      // a real failure soon enough.
      this.opts.logger?.warn({ err: (err as Error).message }, 'cannot read the free space of the data folder');
      if (this.short && this.free !== null) this.opts.publish({ kind: 'disk', node: this.opts.self, short: true, freeBytes: this.free });
      return;
    }
    this.free = free;
    const short = this.opts.limitBytes > 0 && free < this.opts.limitBytes;
    if (short !== this.short) {
      const fields = { freeBytes: free, limitBytes: this.opts.limitBytes };
      if (short) this.opts.logger?.warn(fields, 'the data folder is short of space: the cluster refuses sends, publishes and creations until space is freed');
      else this.opts.logger?.info(fields, 'the data folder has room again');
    }
    // Said every time while short (a peer that restarted learns it), and once when it ends.
    if (short || this.short) this.opts.publish({ kind: 'disk', node: this.opts.self, short, freeBytes: free });
    this.short = short;
  }

  /** An event a peer sent through the gossip: anything else is ignored. */
  receive(event: unknown): void {
    if (typeof event !== 'object' || event === null) return;
    const { kind, node, short } = event as Record<string, unknown>;
    if (kind !== 'disk' || typeof node !== 'string' || node === this.opts.self || !this.opts.peers.includes(node) || typeof short !== 'boolean') return;
    if (short) this.peersShort.set(node, this.now() + PEER_SHORT_FRESH_MS);
    else this.peersShort.delete(node);
  }

  /** The nodes short of disk space now (this one first), by what this node knows. */
  shortNodes(): readonly string[] {
    // Every send asks: nothing allocated while no node is short.
    if (!this.short && this.peersShort.size === 0) return NONE;
    const now = this.now();
    const nodes = this.short ? [this.opts.self] : [];
    for (const [node, until] of this.peersShort) {
      if (until > now) nodes.push(node);
      else this.peersShort.delete(node);
    }
    return nodes;
  }

  /** This node's free bytes as last seen (null before the first look), and its limit. */
  stats(): { freeBytes: number | null; limitBytes: number } {
    return { freeBytes: this.free, limitBytes: this.opts.limitBytes };
  }
}
