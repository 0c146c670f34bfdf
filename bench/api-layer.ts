// `npm run bench:api-layer [-- --seconds 5 --rounds 3]`: what the REST API itself costs per request,
// apart from Raft, the log and the apply: the stage "HTTP in and answer" of a send, measured alone.
// This process builds the app (buildApp, as a node does) over a broker that answers every write with
// the result a real apply gave the same request once (one partition's state machine in process,
// test/api/local-app.ts), and listens on loopback; wrk (C) drives it with 16 connections, one request each in flight. Its own CPU
// over each run (process.cpuUsage: the server's, wrk is another process) per request is the figure.
// So a request pays for Node's HTTP, fastify, the token check, the body's parse and validation, the
// command built, the partition found, and the answer serialized, as on a node, and nothing else.
// Rows alternate within each round, so that drift shows; `--only WORD` keeps the rows that name it. Prints a table; writes
// bench/results/api-layer.json.
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Command, Result } from '../src/store/broker/index.js';
import { localApp } from '../test/api/local-app.js';
import { numberArg } from './args.js';

const root = join(import.meta.dirname, '..');
const SECONDS = numberArg('seconds', 5);
const ROUNDS = numberArg('rounds', 3);
const CONNECTIONS = 16;

if (spawnSync('wrk', ['--version']).error !== undefined) {
  console.error('bench:api-layer needs wrk on the PATH: apt-get install -y wrk');
  process.exit(1);
}

// During set-up every write is applied, and the last result kept; then writes of the kinds in
// `canned` are answered with the result a real apply of the same request gave.
const canned = new Map<Command['type'], Result>();
let last: Result | null = null;
const local = await localApp({
  propose: async (command, apply) => {
    const kept = canned.get(command.type);
    if (kept !== undefined) return kept;
    last = await apply();
    return last;
  },
});
const { app, url: base } = local;

async function must(method: 'GET' | 'POST', path: string, body: unknown, token: string | null, status: number): Promise<Record<string, unknown>> {
  const res = await app.inject({ method, url: path, headers: { ...(token === null ? {} : { authorization: `Bearer ${token}` }) }, ...(body === undefined ? {} : { payload: body as object }) });
  if (res.statusCode !== status) throw new Error(`${method} ${path}: ${res.statusCode} ${res.body.slice(0, 300)}`);
  return res.body.length === 0 ? {} : (res.json() as Record<string, unknown>);
}

const credentials = { username: 'bench-api', password: 'password-bench-api' };
await must('POST', '/v1/auth/register', credentials, null, 201);
const token = (await must('POST', '/v1/auth/login', credentials, null, 200)).accessToken as string;
await must('POST', '/v1/queues', { name: 'bench-api' }, token, 201);
const one = { body: 'x'.repeat(1024) };
const hundred = { messages: Array.from({ length: 100 }, () => one) };
/** The result the broker gave `body`'s request: it must have reached the broker. */
const answerOf = async (method: 'POST', path: string, body: unknown, status: number): Promise<Result> => {
  last = null;
  await must(method, path, body, token, status);
  if (last === null) throw new Error(`${path}: the request did not reach the broker`);
  return last;
};
const singleAnswer = await answerOf('POST', '/v1/queues/bench-api/messages', one, 201);
const batchAnswer = await answerOf('POST', '/v1/queues/bench-api/messages/batch', hundred, 201);
// The receive's answer: 10 messages of 1 KiB (their handles are sealed per request, as a node does).
last = null;
const receivedBody = await must('POST', '/v1/queues/bench-api/receive', { maxMessages: 10, waitSeconds: 0 }, token, 200);
const received = last as Result | null;
if (received === null) throw new Error('the receive did not reach the broker');
if (!received.ok || (received.value as { messages: unknown[] }).messages.length !== 10) throw new Error('the receive took fewer than 10 messages');
// The ack's: those 10 acked (each handle's MAC is checked per request, as a node does).
const ack = { receiptHandles: (receivedBody.messages as { receiptHandle: string }[]).map((m) => m.receiptHandle) };
const acked = await answerOf('POST', '/v1/queues/bench-api/ack', ack, 200);
if (!acked.ok || (acked.value as { acked: unknown[] }).acked.length !== 10) throw new Error('the ack did not ack the 10 messages');
canned.set('receive', received);
canned.set('ack', acked);

const dir = mkdtempSync(join(tmpdir(), 'mom-bench-api-'));
/** A wrk script sending `body`; an answer that is not 2xx, or lacks `expect`, aborts wrk (exit code 1). */
const script = (name: string, method: string, body?: unknown, expect?: string): string => {
  const path = join(dir, `${name}.lua`);
  const lines = [`wrk.method = "${method}"`, `wrk.headers["authorization"] = "Bearer ${token}"`];
  if (body !== undefined) lines.push('wrk.headers["content-type"] = "application/json"', `wrk.body = [==[${JSON.stringify(body)}]==]`);
  // Any answer but the one expected aborts wrk, so a wrong row cannot pass as fast.
  const check = expect === undefined ? '' : ` or not string.find(body, [==[${expect}]==], 1, true)`;
  lines.push(`response = function(status, headers, body) if status >= 300${check} then error("status " .. status) end end`);
  writeFileSync(path, lines.join('\n') + '\n');
  return path;
};

interface Case {
  row: string;
  method: string;
  path: string;
  script: string;
}
const cases: Case[] = [
  { row: 'GET /v1/auth/me (token checked)', method: 'GET', path: '/v1/auth/me', script: script('me', 'GET') },
  { row: 'send 1 KiB (answer of a real apply)', method: 'POST', path: '/v1/queues/bench-api/messages', script: script('send', 'POST', one) },
  { row: 'send a batch of 100 × 1 KiB (the same)', method: 'POST', path: '/v1/queues/bench-api/messages/batch', script: script('batch', 'POST', hundred) },
  { row: 'receive 10 × 1 KiB (the same)', method: 'POST', path: '/v1/queues/bench-api/receive', script: script('receive', 'POST', { maxMessages: 10, waitSeconds: 0 }) },
  { row: 'ack 10 (the same)', method: 'POST', path: '/v1/queues/bench-api/ack', script: script('ack', 'POST', ack, '"failed":[]') },
];
/** One wrk run; `errors` when it failed (a script's error aborts it with exit code 1) or saw socket errors. */
function wrk(c: Case): Promise<{ requests: number; errors: boolean }> {
  return new Promise((resolve, reject) => {
    const p = spawn('wrk', ['-t1', `-c${CONNECTIONS}`, `-d${SECONDS}s`, '-s', c.script, `${base}${c.path}`], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    p.stdout.on('data', (d: Buffer) => (out += d.toString()));
    p.on('error', reject);
    p.on('close', (code) => {
      const requests = Number(/(\d+) requests in/.exec(out)?.[1] ?? 0);
      resolve({ requests, errors: code !== 0 || /Non-2xx|Socket errors/.test(out) });
    });
  });
}

const onlyAt = process.argv.indexOf('--only');
const only = onlyAt < 0 ? null : process.argv[onlyAt + 1]!;
if (only !== null) cases.splice(0, cases.length, ...cases.filter((c) => c.row.includes(only)));

interface Row {
  row: string;
  requestsPerSecond: number[];
  cpuUsPerRequest: number[];
}
const rows: Row[] = cases.map((c) => ({ row: c.row, requestsPerSecond: [], cpuUsPerRequest: [] }));
for (let round = 0; round < ROUNDS; round++) {
  for (const [i, c] of cases.entries()) {
    canned.set('queue.send', c.path.endsWith('/batch') ? batchAnswer : singleAnswer);
    const cpu0 = process.cpuUsage();
    const r = await wrk(c);
    const cpu = process.cpuUsage(cpu0);
    if (r.errors || r.requests === 0) throw new Error(`${c.row}: wrk saw errors or no answers`);
    rows[i]!.requestsPerSecond.push(Math.round(r.requests / SECONDS));
    rows[i]!.cpuUsPerRequest.push(Math.round((cpu.user + cpu.system) / r.requests));
    console.log(`round ${round + 1}: ${c.row}: ${Math.round(r.requests / SECONDS)} req/s, ${Math.round((cpu.user + cpu.system) / r.requests)} µs CPU per request`);
  }
}
await local.close();
rmSync(dir, { recursive: true, force: true });

const table = [
  `\`npm run bench:api-layer${process.argv.length > 2 ? ` -- ${process.argv.slice(2).join(' ')}` : ''}\` on ${cpus().length} × ${cpus()[0]?.model ?? 'cpu'}, ${new Date().toISOString()}: the API over an answering broker, one process, wrk -t1 -c${CONNECTIONS}, ${SECONDS} s a run, ${ROUNDS} rounds`,
  '',
  '| request | req/s per round | server CPU µs per request per round |',
  '|---|---|---|',
  ...rows.map((r) => `| ${r.row} | ${r.requestsPerSecond.map((x) => x.toLocaleString('en')).join(' / ')} | ${r.cpuUsPerRequest.join(' / ')} |`),
].join('\n');
console.log(`\n${table}`);
writeFileSync(
  join(root, 'bench', 'results', 'api-layer.json'),
  JSON.stringify({ benchmark: 'api-layer', command: `npm run bench:api-layer${process.argv.length > 2 ? ` -- ${process.argv.slice(2).join(' ')}` : ''}`, date: new Date().toISOString(), machine: `${cpus().length} × ${cpus()[0]?.model ?? 'cpu'}`, node: process.version, connections: CONNECTIONS, seconds: SECONDS, rows }, null, 2) + '\n',
);
