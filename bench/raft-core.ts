// `npm run bench:raft`: entries per second committed (and applied on every replica) through an
// in-memory three-node Raft group, driven the way a node's loop drives it: ready, persist, send,
// apply, advance. Measures the core alone: no I/O, no serialization, storage in memory.
// Prints a table and writes bench/results/raft-core.json.
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { MemoryStorage, RawNode, nodeId, type Message, type NodeId } from '../src/raft/index.js';

const ids: NodeId[] = [nodeId('a'), nodeId('b'), nodeId('c')];
const PAYLOAD = new Uint8Array(1024).fill(7);

class Cluster {
  readonly nodes = new Map<NodeId, RawNode>();
  readonly stores = new Map<NodeId, MemoryStorage>();
  readonly applied = new Map<NodeId, number>();
  private inbox: Message[] = [];
  turns = 0;

  constructor() {
    let seed = 42;
    const random = (n: number): number => {
      seed = (seed * 1103515245 + 12345) % 2147483648;
      return seed % n;
    };
    for (const id of ids) {
      const s = new MemoryStorage(ids);
      this.stores.set(id, s);
      this.nodes.set(id, new RawNode({ id, voters: ids, electionTick: 10, heartbeatTick: 1, random, maxSizePerMsg: 1 << 20, maxInflightMsgs: 256 }, s));
      this.applied.set(id, 0);
    }
    this.nodes.get(ids[0]!)!.campaign();
    for (let i = 0; i < 20; i++) this.turn();
  }

  leader(): RawNode {
    return this.nodes.get(ids[0]!)!;
  }

  /** One loop turn on every node, then every message delivered. */
  turn(): void {
    this.turns++;
    for (const [id, n] of this.nodes) {
      while (n.hasReady()) {
        const rd = n.ready();
        const s = this.stores.get(id)!;
        if (rd.snapshot !== null) s.applySnapshot(rd.snapshot);
        s.append(rd.entries);
        if (rd.hardState !== null) s.setHardState(rd.hardState);
        for (const m of rd.messages) this.inbox.push(m);
        this.applied.set(id, this.applied.get(id)! + rd.committedEntries.length);
        n.advance(rd);
      }
    }
    const msgs = this.inbox;
    this.inbox = [];
    for (const m of msgs) this.nodes.get(m.to)!.step(m);
  }

  /** Keeps memory flat over long runs: drop applied entries from every log. */
  compact(): void {
    for (const [id, n] of this.nodes) {
      const applied = n.status().applied;
      const s = this.stores.get(id)!;
      if (applied - s.firstIndex() > 10_000) s.createSnapshot(applied - 100, new Uint8Array(0));
    }
  }

  minApplied(): number {
    return Math.min(...this.applied.values());
  }
}

interface Row {
  workload: string;
  entries: number;
  seconds: number;
  entriesPerSecond: number;
  loopTurns: number;
  entriesPerAppend: number;
}

function run(workload: string, total: number, perTurn: number, perCall: number): Row {
  const c = new Cluster();
  const start0 = c.minApplied();
  const datas = Array.from({ length: perCall }, () => PAYLOAD);
  const t0 = process.hrtime.bigint();
  const turns0 = c.turns;
  let proposed = 0;
  while (c.minApplied() - start0 < total) {
    for (let i = 0; i < perTurn && proposed < total; i += perCall) {
      c.leader().propose(datas);
      proposed += perCall;
    }
    c.turn();
    if (c.turns % 1000 === 0) c.compact();
  }
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  const entries = c.minApplied() - start0;
  const turns = c.turns - turns0;
  return {
    workload,
    entries,
    seconds: Number(seconds.toFixed(3)),
    entriesPerSecond: Math.round(entries / seconds),
    loopTurns: turns,
    entriesPerAppend: Number((entries / turns).toFixed(1)),
  };
}

const quick = process.argv.includes('--quick');
const n = quick ? 20_000 : 200_000;
// Warm the JIT so the first workload is not penalised.
run('warm-up', 20_000, 100, 1);
const rows = [
  run('proposals of 1, one per loop turn', n / 4, 1, 1),
  run('proposals of 1, 100 per loop turn (batched by the core)', n, 100, 1),
  run('batches of 100 entries per proposal', n, 100, 100),
];

console.log('| workload | entries | seconds | entries/s | loop turns | entries per turn |');
console.log('|---|---|---|---|---|---|');
for (const r of rows) {
  console.log(`| ${r.workload} | ${r.entries} | ${r.seconds} | ${r.entriesPerSecond} | ${r.loopTurns} | ${r.entriesPerAppend} |`);
}
const out = join(dirname(fileURLToPath(import.meta.url)), 'results', 'raft-core.json');
mkdirSync(dirname(out), { recursive: true });
writeFileSync(
  out,
  JSON.stringify({ benchmark: 'raft-core', node: process.version, payloadBytes: PAYLOAD.byteLength, replicas: 3, date: new Date().toISOString(), rows }, null, 2) + '\n',
);
console.log(`\nwrote ${out}`);
