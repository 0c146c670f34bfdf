// Shared helpers for the Raft core's tests: one Raft driven by hand, or a small synchronous network of
// RawNodes that persists every Ready into MemoryStorage before delivering its messages.
import {
  MemoryStorage,
  ProposalDroppedError,
  Raft,
  RawNode,
  nodeId,
  type Config,
  type Entry,
  type Message,
  type NodeId,
  type ReadState,
} from '../../src/raft/index.js';

export const ids = (...names: string[]): NodeId[] => names.map(nodeId);

/** Calls fn and returns the ProposalDroppedError it threw, or undefined (also for any other outcome). */
export function catchDropped(fn: () => unknown): ProposalDroppedError | undefined {
  try {
    fn();
  } catch (err) {
    if (err instanceof ProposalDroppedError) return err;
    throw err;
  }
  return undefined;
}
export const n1 = nodeId('1');
export const n2 = nodeId('2');
export const n3 = nodeId('3');
export const n4 = nodeId('4');
export const n5 = nodeId('5');
export const idsBySize = (size: number): NodeId[] => Array.from({ length: size }, (_, i) => nodeId(String(i + 1)));

/** A deterministic random source (mulberry32) for tests. */
export function seededRandom(seed: number): (n: number) => number {
  let a = seed >>> 0;
  return (n: number) => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    const r = ((t ^ (t >>> 14)) >>> 0) / 4294967296;
    return Math.floor(r * n);
  };
}

export interface TestRaftOptions extends Partial<Omit<Config, 'id' | 'voters'>> {
  storage?: MemoryStorage;
}

export function newTestRaft(id: NodeId, voters: NodeId[], opts: TestRaftOptions = {}): { raft: Raft; storage: MemoryStorage } {
  const storage = opts.storage ?? new MemoryStorage(voters);
  const raft = new Raft(
    { electionTick: 10, heartbeatTick: 1, random: seededRandom(1), ...opts, id, voters },
    storage,
  );
  return { raft, storage };
}

/** Sends what flush() would and returns (and clears) the outbox of a Raft driven by hand. */
export function readMessages(r: Raft): Message[] {
  r.flush();
  const m = r.msgs;
  r.msgs = [];
  return m;
}

/**
 * Makes the Raft's unstable entries durable in its storage, as a caller persisting a Ready would, and
 * tells it so (this is what lets a leader count its own entries towards commit).
 */
export function persistAll(r: Raft, s: MemoryStorage): void {
  const u = r.log.unstable;
  if (u.snapshot !== null) s.applySnapshot(u.snapshot);
  const ents = u.entries;
  s.append(ents);
  s.setHardState(r.hardState());
  if (u.snapshot !== null) u.stableSnapTo(u.snapshot.meta.index);
  const last = ents[ents.length - 1];
  if (last !== undefined) u.stableTo(last.index, last.term);
  r.selfPersisted(r.log.stableLastIndex());
}

export function entry(index: number, term: number, data = ''): Entry {
  return { index, term, kind: 0, data: new TextEncoder().encode(data) };
}

export function text(e: Entry): string {
  return new TextDecoder().decode(e.data);
}

/**
 * A synchronous network of RawNodes: `stabilize()` runs Ready loops and delivers messages until
 * nothing moves. Links can be cut with `isolate` / `cut` and healed with `heal`.
 */
export class Network {
  readonly nodes = new Map<NodeId, RawNode>();
  readonly storages = new Map<NodeId, MemoryStorage>();
  readonly applied = new Map<NodeId, Entry[]>();
  /** The ReadStates and aborted reads each node's Readys handed out. */
  readonly readStates = new Map<NodeId, ReadState[]>();
  readonly abortedReads = new Map<NodeId, unknown[]>();
  private readonly down = new Set<string>();

  constructor(
    readonly voters: NodeId[],
    opts: Partial<Omit<Config, 'id' | 'voters'>> = {},
    seed = 1,
  ) {
    for (const [i, id] of voters.entries()) {
      const storage = new MemoryStorage(voters);
      this.storages.set(id, storage);
      this.nodes.set(
        id,
        new RawNode({ electionTick: 10, heartbeatTick: 1, random: seededRandom(seed * 31 + i), ...opts, id, voters }, storage),
      );
      this.applied.set(id, []);
      this.readStates.set(id, []);
      this.abortedReads.set(id, []);
    }
  }

  node(id: NodeId): RawNode {
    return this.nodes.get(id)!;
  }

  cut(a: NodeId, b: NodeId): void {
    this.down.add(`${a}>${b}`);
    this.down.add(`${b}>${a}`);
  }

  /** Messages from `a` to `b` are lost; those from `b` to `a` still arrive. */
  cutOneWay(a: NodeId, b: NodeId): void {
    this.down.add(`${a}>${b}`);
  }

  isolate(a: NodeId): void {
    for (const b of this.voters) if (b !== a) this.cut(a, b);
  }

  heal(): void {
    this.down.clear();
  }

  /** One Ready cycle on every node; returns the messages they produced. */
  private cycle(): Message[] {
    const out: Message[] = [];
    for (const [id, n] of this.nodes) {
      while (n.hasReady()) {
        const rd = n.ready();
        const s = this.storages.get(id)!;
        if (rd.snapshot !== null) s.applySnapshot(rd.snapshot);
        s.append(rd.entries);
        if (rd.hardState !== null) s.setHardState(rd.hardState);
        out.push(...rd.messages);
        this.applied.get(id)!.push(...rd.committedEntries);
        this.readStates.get(id)!.push(...rd.readStates);
        this.abortedReads.get(id)!.push(...rd.abortedReads);
        n.advance(rd);
      }
    }
    return out;
  }

  deliver(msgs: Message[]): void {
    for (const m of msgs) {
      if (this.down.has(`${m.from}>${m.to}`)) continue;
      this.nodes.get(m.to)?.step(m);
    }
  }

  /**
   * Ready cycles and deliveries until nothing is sent. `rewrite` stands for what happens to each
   * message on its way: changed (a host's part), or lost (null).
   */
  stabilize(maxRounds = 100, rewrite?: (m: Message) => Message | null): void {
    for (let i = 0; i < maxRounds; i++) {
      const msgs = this.cycle();
      if (msgs.length === 0) return;
      this.deliver(rewrite === undefined ? msgs : msgs.map(rewrite).filter((m): m is Message => m !== null));
    }
  }

  tickAll(n = 1): void {
    for (let i = 0; i < n; i++) {
      for (const node of this.nodes.values()) node.tick();
      this.stabilize();
    }
  }

  /** Makes `id` campaign and settles the network. */
  elect(id: NodeId): void {
    this.node(id).campaign();
    this.stabilize();
  }

  leader(): NodeId | null {
    for (const [id, n] of this.nodes) if (n.softState().role === 'leader') return id;
    return null;
  }

  appliedData(id: NodeId): string[] {
    return this.applied
      .get(id)!
      .filter((e) => e.kind === 0)
      .map(text);
  }
}
