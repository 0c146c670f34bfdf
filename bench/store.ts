// `npm run bench:store`: how fast one partition's state machine applies commands, with 1 KiB bodies
// and every transaction synced (synchronous=FULL), on an empty queue and on one with a large backlog.
// Also measures this disk's fsync latency, which bounds every synced commit.
// Prints a table and writes bench/results/store.json. `-- --quick` uses a 100,000-message backlog;
// `-- --format N` applies entries in log format N (format.ts; default this build's, as clusters run).
import { closeSync, fsyncSync, mkdtempSync, openSync, rmSync, writeSync } from 'node:fs';
import { mkdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { BrokerStateMachine, FORMAT, encodeEnvelope, type Command } from '../src/store/broker/index.js';

const quick = process.argv.includes('--quick');
const formatArg = process.argv.indexOf('--format');
const format = formatArg > 0 ? Number(process.argv[formatArg + 1]) : FORMAT;
const BACKLOG = quick ? 100_000 : 1_000_000;
const BODY = 'x'.repeat(1024);
const dir = mkdtempSync(join(tmpdir(), 'mom-bench-store-'));

function fsyncLatency(): { medianMs: number; p99Ms: number } {
  const f = join(dir, 'fsync.bin');
  const fd = openSync(f, 'w');
  const buf = Buffer.alloc(4096, 1);
  const times: number[] = [];
  for (let i = 0; i < 1000; i++) {
    writeSync(fd, buf);
    const t0 = process.hrtime.bigint();
    fsyncSync(fd);
    times.push(Number(process.hrtime.bigint() - t0) / 1e6);
  }
  closeSync(fd);
  times.sort((a, b) => a - b);
  return { medianMs: Number(times[500]!.toFixed(3)), p99Ms: Number(times[990]!.toFixed(3)) };
}

class Driver {
  index = 0;
  time = 1_700_000_000_000;
  /** The log's entries: rows of format 4 read their bodies from them, as a node's from its log. */
  readonly log = new Map<number, Uint8Array>();
  constructor(readonly sm: BrokerStateMachine) {
    sm.attachBodies({ entry: (i) => this.log.get(i) ?? null });
  }

  /** Applies commands as consecutive entries in one transaction (one synced commit). */
  apply(commands: Command[]): unknown[] {
    this.time += 1;
    const entries = commands.map((command) => ({
      index: ++this.index,
      term: 1,
      kind: 0,
      data: encodeEnvelope({ time: this.time, actor: 'alice', command }, this.sm.format()),
    }));
    for (const e of entries) this.log.set(e.index, e.data);
    return this.sm.apply(entries).map((a) => {
      if (!a.result.ok) throw new Error(`${a.result.code}: ${a.result.detail}`);
      return a.result.value;
    });
  }
}

const sendOne = (queue: string): Command => ({ type: 'queue.send', name: queue, messages: [{ body: BODY, attributes: { k: 'v' } }] });
const sendBatch = (queue: string): Command => ({
  type: 'queue.send',
  name: queue,
  messages: Array.from({ length: 100 }, () => ({ body: BODY, attributes: { k: 'v' } })),
});

interface Row {
  workload: string;
  backlog: number;
  commandsPerSecond: number;
  messagesPerSecond: number;
  transactions: number;
  seconds: number;
}

function measure(workload: string, backlog: number, seconds: number, step: () => { commands: number; messages: number }): Row {
  let commands = 0;
  let messages = 0;
  let transactions = 0;
  const t0 = process.hrtime.bigint();
  let elapsed = 0;
  while (elapsed < seconds) {
    const r = step();
    commands += r.commands;
    messages += r.messages;
    transactions++;
    elapsed = Number(process.hrtime.bigint() - t0) / 1e9;
  }
  return {
    workload,
    backlog,
    commandsPerSecond: Math.round(commands / elapsed),
    messagesPerSecond: Math.round(messages / elapsed),
    transactions,
    seconds: Number(elapsed.toFixed(2)),
  };
}

async function workloads(backlog: number): Promise<Row[]> {
  const sm = await BrokerStateMachine.open(join(dir, `state-${backlog}.db`), 0, { synchronous: 'FULL' });
  const d = new Driver(sm);
  // Entries in this build's format, as a cluster raises every partition to it (or --format's).
  if (format > 1) d.apply([{ type: 'format.raise', format }]);
  d.apply([{ type: 'queue.create', name: 'q', visibilityTimeoutSeconds: 3600, maxDeliveries: null, deadLetterQueue: null, delaySeconds: 0, retentionSeconds: 345600 }]);
  d.apply([{ type: 'queue.create', name: 'work', visibilityTimeoutSeconds: 3600, maxDeliveries: null, deadLetterQueue: null, delaySeconds: 0, retentionSeconds: 345600 }]);
  // The backlog sits in the queue under test, ahead of everything the workloads send.
  for (let n = 0; n < backlog; n += 100 * 10) d.apply(Array.from({ length: 10 }, () => sendBatch('q')));
  const secs = quick ? 2 : 5;
  const rows = [
    measure('send, 1 message per transaction', backlog, secs, () => (d.apply([sendOne('q')]), { commands: 1, messages: 1 })),
    measure('send, 100 single sends per transaction (group commit)', backlog, secs, () => (d.apply(Array.from({ length: 100 }, () => sendOne('q'))), { commands: 100, messages: 100 })),
    measure('send, batches of 100 messages', backlog, secs, () => (d.apply([sendBatch('q')]), { commands: 1, messages: 100 })),
  ];
  // Receive+ack on the queue with the backlog: receive 10 (one transaction), ack them (another).
  rows.push(
    measure('receive 10 + ack 10, one transaction each', backlog, secs, () => {
      const [r] = d.apply([{ type: 'receive', channel: { queue: 'q' }, maxMessages: 10, visibilityTimeoutSeconds: null }]) as [{ messages: { receiptHandle: string }[] }];
      d.apply([{ type: 'ack', channel: { queue: 'q' }, receiptHandles: r.messages.map((m) => m.receiptHandle) }]);
      return { commands: 2, messages: r.messages.length };
    }),
  );
  rows.push(
    measure('receive 100 + ack 100, one transaction each', backlog, secs, () => {
      const [r] = d.apply([{ type: 'receive', channel: { queue: 'q' }, maxMessages: 100, visibilityTimeoutSeconds: null }]) as [{ messages: { receiptHandle: string }[] }];
      d.apply([{ type: 'ack', channel: { queue: 'q' }, receiptHandles: r.messages.map((m) => m.receiptHandle) }]);
      return { commands: 2, messages: r.messages.length };
    }),
  );
  const t0 = process.hrtime.bigint();
  const stats = sm.getQueue('q', 'alice', d.time);
  const statsMs = Number(process.hrtime.bigint() - t0) / 1e6;
  if (!stats.ok) throw new Error('stats failed');
  console.log(`stats of the queue with ${stats.value.stats.visible} visible messages: ${statsMs.toFixed(2)} ms`);
  await sm.close();
  return rows;
}

const fsync = fsyncLatency();
console.log(`fsync of a 4 KiB write on this disk: median ${fsync.medianMs} ms, p99 ${fsync.p99Ms} ms`);
const rows = [...(await workloads(0)), ...(await workloads(BACKLOG))];
console.log('\n| workload | backlog | commands/s | messages/s | transactions | seconds |');
console.log('|---|---|---|---|---|---|');
for (const r of rows) console.log(`| ${r.workload} | ${r.backlog} | ${r.commandsPerSecond} | ${r.messagesPerSecond} | ${r.transactions} | ${r.seconds} |`);
const out = join(dirname(fileURLToPath(import.meta.url)), 'results', 'store.json');
mkdirSync(dirname(out), { recursive: true });
writeFileSync(out, JSON.stringify({ benchmark: 'store', node: process.version, format, bodyBytes: 1024, synchronous: 'FULL', fsync, date: new Date().toISOString(), rows }, null, 2) + '\n');
console.log(`\nwrote ${out}`);
rmSync(dir, { recursive: true, force: true });
