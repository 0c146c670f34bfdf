// `npx tsx bench/store-log.ts [--dir <folder>]`: the node's Raft log, the write-ahead log of
// src/store/wal (WalStore) against the SQLite log it replaced (RaftLogStore: WAL mode,
// synchronous=FULL), with 1 KiB entries: persist() calls per second, CPU microseconds and bytes
// written to disk per entry (this process's /proc/self/io), and what one node-wide write per loop turn
// saves over one per partition (DESIGN.md, Persistence). Each persist() blocks the event loop for its
// fsync: the latency columns are that blocking time. The first row is the floor: a bare append +
// fsync of 1 KiB to a plain file on the same file system.
// Prints a table and writes bench/results/store-log.json. The database goes to a fresh folder under
// --dir (default: the OS temp folder); fsync cost depends entirely on that file system and device.
import { closeSync, fsyncSync, mkdirSync, mkdtempSync, openSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { EntryKind, nodeId, type Entry } from '../src/raft/index.js';
import { RaftLogStore } from '../src/store/raft-log/index.js';
import { WalStore, type PersistItem } from '../src/store/wal/index.js';
import { writtenBytes } from './proc.js';

type Kind = 'wal' | 'sqlite';

const PAYLOAD = new Uint8Array(1024).fill(7);
const voters = [nodeId('a'), nodeId('b'), nodeId('c')];

interface Row {
  workload: string;
  store: Kind | 'file';
  transactions: number;
  entries: number;
  seconds: number;
  transactionsPerSecond: number;
  entriesPerSecond: number;
  mibPerSecond: number;
  p50Ms: number;
  p99Ms: number;
  cpuUsPerEntry: number;
  diskBytesPerEntry: number;
}

/** CPU microseconds and disk bytes that `f` costs. */
async function measured<T>(f: () => Promise<T>): Promise<{ value: T; cpuUs: number; bytes: number }> {
  const cpu0 = process.cpuUsage();
  const bytes0 = writtenBytes();
  const value = await f();
  const cpu = process.cpuUsage(cpu0);
  return { value, cpuUs: cpu.user + cpu.system, bytes: writtenBytes() - bytes0 };
}

function row(workload: string, store: Row['store'], latencies: number[], entries: number): Row {
  const seconds = latencies.reduce((a, b) => a + b, 0) / 1000;
  const sorted = latencies.slice().sort((a, b) => a - b);
  const pct = (q: number): number => Number(sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!.toFixed(3));
  return {
    workload,
    store,
    transactions: latencies.length,
    entries,
    seconds: Number(seconds.toFixed(3)),
    transactionsPerSecond: Math.round(latencies.length / seconds),
    entriesPerSecond: Math.round(entries / seconds),
    mibPerSecond: Number(((entries * PAYLOAD.byteLength) / seconds / 2 ** 20).toFixed(2)),
    p50Ms: pct(0.5),
    p99Ms: pct(0.99),
    cpuUsPerEntry: 0,
    diskBytesPerEntry: 0,
  };
}

function time(f: () => void): number {
  const t0 = process.hrtime.bigint();
  f();
  return Number(process.hrtime.bigint() - t0) / 1e6;
}

function bareFsync(dir: string, n: number): Row {
  const fd = openSync(join(dir, 'bare.bin'), 'a');
  try {
    const latencies = Array.from({ length: n }, () =>
      time(() => {
        writeSync(fd, PAYLOAD);
        fsyncSync(fd);
      }),
    );
    return row('floor: append 1 KiB + fsync, plain file', 'file', latencies, n);
  } finally {
    closeSync(fd);
  }
}

/**
 * `turns` loop turns, each appending `perPartition` entries to each of `partitions` partitions, in
 * one persist() per turn (node-wide) or one per partition (`perPartitionTx`).
 */
async function persistRate(
  dir: string,
  kind: Kind,
  workload: string,
  o: { turns: number; partitions: number; perPartition: number; perPartitionTx?: boolean },
): Promise<Row> {
  const { value, cpuUs, bytes } = await measured(() => persistRun(dir, kind, workload, o));
  value.cpuUsPerEntry = Math.round(cpuUs / value.entries);
  value.diskBytesPerEntry = Math.round(bytes / value.entries);
  return value;
}

async function persistRun(dir: string, kind: Kind, workload: string, o: { turns: number; partitions: number; perPartition: number; perPartitionTx?: boolean }): Promise<Row> {
  const path = join(dir, `${kind}-${workload.replace(/\W+/g, '-')}`);
  const store = kind === 'wal' ? await WalStore.open(path) : await RaftLogStore.open(`${path}.db`);
  try {
    const next: number[] = [];
    for (let p = 0; p < o.partitions; p++) next.push(store.partition(p, voters).lastIndex() + 1);
    const batchOf = (p: number): PersistItem => {
      const entries: Entry[] = [];
      for (let k = 0; k < o.perPartition; k++) entries.push({ index: next[p]! + k, term: 1, kind: EntryKind.Normal, data: PAYLOAD });
      next[p]! += o.perPartition;
      return { partition: p, hardState: null, entries, snapshot: null };
    };
    const latencies: number[] = [];
    for (let turn = 0; turn < o.turns; turn++) {
      const items = Array.from({ length: o.partitions }, (_, p) => batchOf(p));
      if (o.perPartitionTx === true) {
        // The per-turn latency is what the loop waits before it may send: all the fsyncs.
        latencies.push(items.reduce((sum, it) => sum + time(() => store.persist([it], true)), 0));
      } else {
        latencies.push(time(() => store.persist(items, true)));
      }
    }
    const r = row(workload, kind, latencies, o.turns * o.partitions * o.perPartition);
    if (o.perPartitionTx === true) r.transactions *= o.partitions;
    r.transactionsPerSecond = Math.round(r.transactions / r.seconds);
    return r;
  } finally {
    store.close();
  }
}

function argValue(name: string): string | undefined {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : undefined;
}

const base = argValue('--dir') ?? tmpdir();
mkdirSync(base, { recursive: true });
const dir = mkdtempSync(join(base, 'mom-bench-store-log-'));
let rows: Row[];
try {
  rows = [bareFsync(dir, 1000)];
  for (const kind of ['wal', 'sqlite'] as const) {
    // Warm up the store, the JIT and the file system.
    await persistRate(dir, kind, 'warm-up', { turns: 100, partitions: 1, perPartition: 1 });
    rows.push(
      await persistRate(dir, kind, '1 entry per persist', { turns: 2000, partitions: 1, perPartition: 1 }),
      await persistRate(dir, kind, '100 entries per persist', { turns: 200, partitions: 1, perPartition: 100 }),
      await persistRate(dir, kind, '16 partitions x 1 entry, one persist per turn', { turns: 500, partitions: 16, perPartition: 1 }),
      await persistRate(dir, kind, '16 partitions x 1 entry, one persist per partition', { turns: 125, partitions: 16, perPartition: 1, perPartitionTx: true }),
    );
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}

console.log(`folder: under ${base}; entries of ${PAYLOAD.byteLength} bytes; wal: src/store/wal; sqlite: WAL mode, synchronous=FULL\n`);
console.log('| store | workload | persists | entries | seconds | persists/s | entries/s | MiB/s | p50 ms | p99 ms | CPU µs/entry | disk B/entry |');
console.log('|---|---|---|---|---|---|---|---|---|---|---|---|');
for (const r of rows) {
  console.log(
    `| ${r.store} | ${r.workload} | ${r.transactions} | ${r.entries} | ${r.seconds} | ${r.transactionsPerSecond} | ${r.entriesPerSecond} | ${r.mibPerSecond} | ${r.p50Ms} | ${r.p99Ms} | ${r.cpuUsPerEntry || ''} | ${r.diskBytesPerEntry || ''} |`,
  );
}
const out = join(dirname(fileURLToPath(import.meta.url)), 'results', 'store-log.json');
mkdirSync(dirname(out), { recursive: true });
writeFileSync(
  out,
  JSON.stringify(
    {
      benchmark: 'store-log',
      node: process.version,
      payloadBytes: PAYLOAD.byteLength,
      wal: 'src/store/wal: one writev + fdatasync per persist, 64 MiB segments',
      sqlite: 'WAL, synchronous=FULL, locking_mode=EXCLUSIVE',
      folder: base,
      date: new Date().toISOString(),
      note: 'p50/p99 are per loop turn: the time persist() blocks the event loop (per-partition rows: the sum of a turn\'s 16 calls); CPU and disk bytes per entry include opening the store',
      rows,
    },
    null,
    2,
  ) + '\n',
);
console.log(`\nwrote ${out}`);
