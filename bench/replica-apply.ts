// `npm run bench:replica-apply [-- --seconds S --rounds N]`: what a replica's apply costs per message
// when it answers the commands it applies (a leader answering its proposals) and when it does not (a
// follower: apply() told that no proposal of its waits, so a receive makes no texts for its messages).
// Two state machines in this process: one produces the log (receive 100, ack 100 and a send of 100 per
// step, 1 KiB bodies, on a queue holding a backlog), the other applies the same entries as a node
// does (deferred, its state committed every 100 ms); only the second one's CPU is counted. The two
// ways alternate within each round, so the machine's drift falls on both. Prints a table and writes
// bench/results/replica-apply.json.
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { BrokerStateMachine, FORMAT, encodeEnvelope, type ApplyEntry, type Command } from '../src/store/broker/index.js';
import { numberArg } from './args.js';

const seconds = numberArg('seconds', 3);
const rounds = numberArg('rounds', 3);
const BACKLOG = 20_000;
const BODY = 'x'.repeat(1024);
const COMMIT_MS = 100;

type Way = 'answers' | 'does not answer';

/** A producer and a replica of one partition, the replica answering its entries or not. */
async function pair(dir: string, way: Way): Promise<{ step: () => number; cpuMicros: () => number; close: () => Promise<void> }> {
  const leader = await BrokerStateMachine.open(join(dir, `${way === 'answers' ? 'a' : 'n'}-leader.db`), 0);
  const replica = await BrokerStateMachine.open(join(dir, `${way === 'answers' ? 'a' : 'n'}-replica.db`), 0);
  // The log both read their bodies from, as a node's state reads them from its write-ahead log.
  const log = new Map<number, Uint8Array>();
  for (const sm of [leader, replica]) sm.attachBodies({ entry: (i) => log.get(i) ?? null });
  const opts = way === 'answers' ? { defer: true } : { defer: true, answered: () => false };
  let index = 0;
  let time = 1_700_000_000_000;
  let committedAt = performance.now();
  let cpu = 0;
  const apply = (commands: Command[]): unknown[] => {
    time += 1;
    const entries: ApplyEntry[] = commands.map((command) => ({ index: ++index, term: 1, kind: 0, data: encodeEnvelope({ time, actor: 'alice', command }, leader.format()) }));
    for (const e of entries) log.set(e.index, e.data);
    const out = leader.apply(entries, { defer: true });
    const c0 = process.cpuUsage();
    replica.apply(entries, opts);
    const c = process.cpuUsage(c0);
    cpu += c.user + c.system;
    if (performance.now() - committedAt >= COMMIT_MS) {
      leader.commit();
      replica.commit();
      committedAt = performance.now();
    }
    return out.map((a) => {
      if (!a.result.ok) throw new Error(`${a.result.code}: ${a.result.detail}`);
      return a.result.value;
    });
  };
  const send = (): Command => ({ type: 'queue.send', name: 'q', messages: Array.from({ length: 100 }, () => ({ body: BODY, attributes: { k: 'v' } })) });
  apply([{ type: 'format.raise', format: FORMAT }]);
  apply([{ type: 'queue.create', name: 'q', visibilityTimeoutSeconds: 3600, maxDeliveries: null, deadLetterQueue: null, delaySeconds: 0, retentionSeconds: 345600 }]);
  for (let n = 0; n < BACKLOG; n += 1000) apply(Array.from({ length: 10 }, send));
  return {
    step: () => {
      const [r] = apply([{ type: 'receive', channel: { queue: 'q' }, maxMessages: 100, visibilityTimeoutSeconds: null }]) as [{ messages: { receiptHandle: string }[] }];
      apply([{ type: 'ack', channel: { queue: 'q' }, receiptHandles: r.messages.map((m) => m.receiptHandle) }]);
      apply([send()]);
      // Entries no row points at any more: a node's log lets them go too.
      if (log.size > 3 * BACKLOG) for (const k of [...log.keys()].slice(0, BACKLOG)) if (k < index - 2 * BACKLOG) log.delete(k);
      return r.messages.length;
    },
    cpuMicros: () => cpu,
    close: async () => {
      await leader.close();
      await replica.close();
    },
  };
}

interface Row {
  round: number;
  way: Way;
  messages: number;
  cpuMicrosPerMessage: number;
}

const dir = mkdtempSync(join(tmpdir(), 'mom-bench-replica-'));
const rows: Row[] = [];
try {
  for (let round = 1; round <= rounds; round++) {
    const ways: Way[] = round % 2 === 1 ? ['answers', 'does not answer'] : ['does not answer', 'answers'];
    for (const way of ways) {
      const p = await pair(join(dir, `${round}`), way);
      // Warm: the JIT settles on the receive and the ack before anything is counted.
      for (let i = 0; i < 200; i++) p.step();
      const before = p.cpuMicros();
      const t0 = performance.now();
      let messages = 0;
      while (performance.now() - t0 < seconds * 1000) messages += p.step();
      rows.push({ round, way, messages, cpuMicrosPerMessage: Number(((p.cpuMicros() - before) / messages).toFixed(2)) });
      await p.close();
    }
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}

console.log('A replica applying receive 100 + ack 100 + send 100 (1 KiB bodies), per message it received, acked and was sent:\n');
console.log('| round | the replica | messages | CPU µs per message |');
console.log('|---:|---|---:|---:|');
for (const r of rows) console.log(`| ${r.round} | ${r.way} | ${r.messages} | ${r.cpuMicrosPerMessage} |`);
const out = join(dirname(fileURLToPath(import.meta.url)), 'results', 'replica-apply.json');
mkdirSync(dirname(out), { recursive: true });
writeFileSync(out, JSON.stringify({ benchmark: 'replica-apply', node: process.version, format: FORMAT, bodyBytes: 1024, seconds, date: new Date().toISOString(), rows }, null, 2) + '\n');
console.log(`\nwrote ${out}`);
