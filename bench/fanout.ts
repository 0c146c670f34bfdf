// `npm run bench:fanout`: what one publish costs the replica that applies it, by how many copies it
// stores (messages × subscriptions), in one partition's state machine (1 KiB bodies, this build's log
// format, commits as a node makes them). The fan-out limits of format 5 (src/store/broker/topics.ts:
// MAX_SUBSCRIPTIONS, MAX_FANOUT) are chosen from it: a node applies one entry at a time, so the
// largest allowed publish is how long every partition of that node may wait for one request.
// Prints a table and writes bench/results/fanout.json.
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { BrokerStateMachine, FORMAT, MAX_FANOUT, encodeEnvelope, type Command } from '../src/store/broker/index.js';

const CASES: readonly [subscriptions: number, messages: number][] = [
  [10, 100],
  [100, 10],
  [1000, 1],
  [100, 100],
  [1000, 100],
];
const ROUNDS = 5;
const BODY = 'x'.repeat(1024);

const rows: { subscriptions: number; messages: number; copies: number; allowed: boolean; medianMs: number; usPerCopy: number }[] = [];
for (const [subscriptions, messages] of CASES) {
  const dir = mkdtempSync(join(tmpdir(), 'mom-bench-fanout-'));
  // The limits are not what is measured: build the state in format 4, which applies any publish.
  const sm = await BrokerStateMachine.open(join(dir, 'state.db'), 0, { readable: FORMAT });
  const entries = new Map<number, Uint8Array>();
  sm.attachBodies({ entry: (i) => entries.get(i) ?? null });
  let index = 0;
  const apply = (actor: string | null, command: Command): void => {
    const data = encodeEnvelope({ time: 1_700_000_000_000, actor, command }, sm.format());
    entries.set(++index, data);
    const [a] = sm.apply([{ index, term: 1, kind: 0, data }]);
    if (!a!.result.ok) throw new Error(`${command.type}: ${a!.result.code} ${a!.result.detail}`);
  };
  apply(null, { type: 'format.raise', format: 4 });
  apply(null, { type: 'user.register', username: 'bench', passwordHash: 'h' });
  apply('bench', { type: 'topic.create', name: 't', subscribe: 'anyone' });
  for (let i = 0; i < subscriptions; i++) {
    apply('bench', { type: 'subscription.create', topic: 't', name: `s${i}`, visibilityTimeoutSeconds: 30, maxDeliveries: null, deadLetterQueue: null, filter: null });
  }
  const times: number[] = [];
  for (let r = 0; r < ROUNDS; r++) {
    const t0 = performance.now();
    apply('bench', { type: 'topic.publish', name: 't', messages: Array.from({ length: messages }, () => ({ body: BODY, attributes: {} })) });
    times.push(performance.now() - t0);
  }
  await sm.close();
  rmSync(dir, { recursive: true, force: true });
  const median = times.sort((a, b) => a - b)[Math.floor(ROUNDS / 2)]!;
  const copies = subscriptions * messages;
  rows.push({ subscriptions, messages, copies, allowed: copies <= MAX_FANOUT, medianMs: Number(median.toFixed(2)), usPerCopy: Number(((median * 1000) / copies).toFixed(2)) });
}

console.log(`one publish's apply, median of ${ROUNDS} (the limit: ${MAX_FANOUT} copies)`);
console.log('| subscriptions | messages | copies | allowed | ms | µs per copy |');
console.log('|---:|---:|---:|---|---:|---:|');
for (const r of rows) console.log(`| ${r.subscriptions} | ${r.messages} | ${r.copies} | ${r.allowed ? 'yes' : 'no'} | ${r.medianMs} | ${r.usPerCopy} |`);
const out = join(dirname(fileURLToPath(import.meta.url)), 'results', 'fanout.json');
mkdirSync(dirname(out), { recursive: true });
writeFileSync(out, `${JSON.stringify({ at: new Date().toISOString(), maxFanout: MAX_FANOUT, rows }, null, 2)}\n`);
console.log(`wrote ${out}`);
