// `npm start` (scripts/start-local.mjs) as a user runs it, on three consecutive free ports and a
// temporary data folder: a node killed with SIGKILL leaves the other two serving, the script says so and
// how to start it again, and that command (scripts/node-local.mjs n3) brings the node back on its data,
// where it catches up. Ctrl-C, delivered twice as a terminal and npm deliver it, stops every node
// cleanly, and every process exits.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer as createHttpServer } from 'node:http';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import t, { type Test } from 'tap';
import { call } from '../api/api-helpers.js';
import { Cluster } from '../chaos/cluster.js';
import { freePort } from './net-helpers.js';
// @ts-expect-error: a plain .mjs script without types
import { NODE_FLAGS } from '../../scripts/local-cluster.mjs';

// Real node processes, the bundle built twice: tens of seconds on a loaded machine.
t.setTimeout(300_000);

const SCRIPTS = join(import.meta.dirname, '..', '..', 'scripts');
/** Only a guard against hanging: every wait below is for a condition. */
const PATIENCE_MS = 120_000;

async function canListen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = createServer();
    s.once('error', () => resolve(false));
    s.listen(port, '127.0.0.1', () => s.close(() => resolve(true)));
  });
}

/** The first of three consecutive ports nobody listens on (MOM_LOCAL_PORT). */
async function threeFreePorts(): Promise<number> {
  for (let i = 0; i < 100; i++) {
    const p = await freePort();
    if (p <= 65533 && (await canListen(p + 1)) && (await canListen(p + 2))) return p;
  }
  throw new Error('found no three consecutive free ports');
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Node's own options on process `pid`'s command line: what comes between node and the bundle. */
function nodeOptions(pid: number): string[] {
  const argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
  return argv.slice(1, argv.findIndex((a) => a.endsWith('main.js')));
}

interface Script {
  child: ChildProcess;
  /** stdout and stderr so far, the nodes' included. */
  output(): string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/**
 * Runs scripts/<name> in its own process group, as a terminal runs a foreground job; `pids` collects
 * every process to kill if the test ends early (the nodes run in process groups of their own).
 */
function runScript(t: Test, name: string, args: string[], env: NodeJS.ProcessEnv, pids: Set<number>): Script {
  const child = spawn(process.execPath, [join(SCRIPTS, name), ...args], { env, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  pids.add(child.pid!);
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  t.teardown(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  return { child, output: () => out, exited };
}

t.test('npm start: a node killed with SIGKILL, the others serve, `npm run node -- n3` brings it back', async (t) => {
  const basePort = await threeFreePorts();
  const urls = [0, 1, 2].map((i) => `http://127.0.0.1:${basePort + i}`);
  const [u1, u2, u3] = urls as [string, string, string];
  const dataDir = mkdtempSync(join(tmpdir(), 'mom-start-local-'));
  const env = { ...process.env, MOM_LOCAL_PORT: String(basePort), MOM_LOCAL_DATA: dataDir, MOM_LOG_LEVEL: 'warn' };
  const pids = new Set<number>();
  t.teardown(() => {
    for (const pid of pids) if (alive(pid)) process.kill(pid, 'SIGKILL');
    rmSync(dataDir, { recursive: true, force: true });
  });
  const waitFor = async (what: string, pred: () => Promise<boolean> | boolean, script: Script): Promise<void> => {
    if (!(await Cluster.until(async () => pred(), PATIENCE_MS))) throw new Error(`gave up waiting for ${what}; output:\n${script.output()}`);
  };
  const readyz = (u: string): Promise<boolean> => call(u, 'GET', '/readyz').then((r) => r.status === 200, () => false);

  const start = runScript(t, 'start-local.mjs', [], env, pids);
  const nodePid = new Map<string, number>();
  await waitFor('the pids of the three nodes', () => {
    for (const m of start.output().matchAll(/\b(n[123]) \(pid (\d+)\)/g)) nodePid.set(m[1]!, Number(m[2]));
    return nodePid.size === 3;
  }, start);
  for (const pid of nodePid.values()) pids.add(pid);
  // Each node runs with Node's options for a node (the heap's among them), as deployed.
  for (const [id, pid] of nodePid) t.same(nodeOptions(pid), NODE_FLAGS, `${id} runs with ${(NODE_FLAGS as string[]).join(' ')}`);
  await waitFor('the banner of a ready cluster', () => start.output().includes('mom: three nodes ready'), start);
  t.match(start.output(), new RegExp(`^ {2}n3 {2}${u3} {2}pid ${nodePid.get('n3')}$`, 'm'), 'the banner shows each node\'s url and pid');
  for (const u of urls) t.ok(await readyz(u), `${u}/readyz answers 200`);

  process.kill(nodePid.get('n3')!, 'SIGKILL');
  await waitFor('the report of n3\'s exit', () => start.output().includes('npm run node -- n3'), start);
  // The nodes log to the same terminal: a peer's warning about the lost connection may come between.
  t.match(start.output(), /mom: node n3 was killed by SIGKILL\.\n(?:.*\n)*?.*n1 and n2 go on serving/, 'the script says which node exited and how');
  t.match(start.output(), `MOM_LOCAL_PORT=${basePort} MOM_LOCAL_DATA=${dataDir} npm run node -- n3`, 'and how to start it again, on the same ports and data');
  t.equal(start.child.exitCode, null, 'npm start goes on running');

  // Whichever node led what before, n1 and n2 elect leaders among themselves for every partition.
  const ledByTwo = async (u: string): Promise<boolean> => {
    const r = await call(u, 'GET', '/v1/cluster').catch(() => null);
    const parts = (r?.body as { partitions?: { leader: string | null }[] } | null)?.partitions;
    return parts !== undefined && parts.every((p) => p.leader === 'n1' || p.leader === 'n2');
  };
  await waitFor('n1 and n2 to lead every partition', async () => (await ledByTwo(u1)) && (await ledByTwo(u2)), start);

  const user = { username: 'survivor', password: 'survivor-password' };
  t.equal((await call(u1, 'POST', '/v1/auth/register', { body: user })).status, 201, 'register through n1');
  const login = await call(u2, 'POST', '/v1/auth/login', { body: user });
  t.equal(login.status, 200, 'log in through n2');
  const token = (login.body as { accessToken: string }).accessToken;
  t.equal((await call(u1, 'POST', '/v1/queues', { token, body: { name: 'after-kill' } })).status, 201, 'create a queue');
  for (const body of ['first', 'second']) t.equal((await call(u2, 'POST', '/v1/queues/after-kill/messages', { token, body: { body } })).status, 201, `send "${body}"`);
  const got = await call(u1, 'POST', '/v1/queues/after-kill/receive', { token, body: { maxMessages: 1, waitSeconds: 5 } });
  t.match(got, { status: 200, body: { messages: [{ body: 'first' }] } }, 'receive the first message');
  const receipt = (got.body as { messages: { receiptHandle: string }[] }).messages[0]!.receiptHandle;
  t.match(await call(u2, 'POST', '/v1/queues/after-kill/ack', { token, body: { receiptHandles: [receipt] } }), { status: 200, body: { acked: [receipt], failed: [] } }, 'ack it');

  // The command a user runs, with the same environment as npm start.
  const node = runScript(t, 'node-local.mjs', ['n3'], env, pids);
  await waitFor('node-local to say its pid', () => /\(pid (\d+)\)/.test(node.output()), node);
  const n3Again = Number(/\(pid (\d+)\)/.exec(node.output())![1]);
  pids.add(n3Again);
  t.same(nodeOptions(n3Again), NODE_FLAGS, 'npm run node starts n3 with the same options');
  const stale = async (): Promise<boolean> => {
    const r = await call(u3, 'GET', '/v1/queues/after-kill?consistency=stale', { token }).catch(() => null);
    const stats = (r?.body as { stats?: { visible: number; inFlight: number } } | null)?.stats;
    return r?.status === 200 && r.headers['x-stale'] === 'true' && stats?.visible === 1 && stats.inFlight === 0;
  };
  await waitFor('n3 to catch up: its own replica has the queue, one message visible, none in flight', stale, node);
  t.pass('the restarted n3 caught up on what was written while it was down');
  await waitFor('node-local to say n3 is ready', () => node.output().includes('mom: n3 is ready'), node);
  // Asked again rather than once: on a loaded machine an election right then answers 503 for a moment.
  await waitFor('the restarted n3\'s /readyz to answer 200', () => readyz(u3), node);
  t.pass('the restarted n3\'s /readyz answers 200');

  // Ctrl-C in a terminal reaches npm start's process group, and npm forwards it once more.
  process.kill(-start.child.pid!, 'SIGINT');
  process.kill(-start.child.pid!, 'SIGINT');
  process.kill(-node.child.pid!, 'SIGINT');
  t.same(await start.exited, { code: 0, signal: null }, 'npm start stops n1 and n2 cleanly and exits 0', { output: start.output() });
  t.same(await node.exited, { code: 0, signal: null }, 'npm run node stops n3 cleanly and exits 0', { output: node.output() });
  t.match(start.output(), 'mom: stopping n1 and n2');
  for (const [id, pid] of [...nodePid, ['n3 restarted', n3Again] as const]) t.notOk(alive(pid), `${id} (pid ${pid}) has exited`);
  const secrets = JSON.parse(readFileSync(join(dataDir, 'secrets.json'), 'utf8')) as Record<string, string>;
  t.ok(Object.values(secrets).every((s) => !start.output().includes(s) && !node.output().includes(s)), 'the secrets are never printed');
});

// A port of the three already taken: by a second `npm start` while the first runs, or by another
// program. The node on it used to open (or create) its data folder, then fail with a stack trace;
// the script's readiness checks asked whoever listened on the port, so it could print the banner of
// a ready cluster over nodes that had died; and the other two formed a cluster of their own.
/**
 * `npm start` (start-local.mjs) with `env`, until it exits or goes on to start nodes and wait for
 * them (whose pids are killed when `t` ends): how it exited (null: it did not), and its script.
 */
async function startUntilSettled(t: Test, env: NodeJS.ProcessEnv): Promise<{ exit: { code: number | null; signal: NodeJS.Signals | null } | null; start: Script }> {
  const pids = new Set<number>();
  t.teardown(() => {
    for (const pid of pids) if (alive(pid)) process.kill(pid, 'SIGKILL');
  });
  const start = runScript(t, 'start-local.mjs', [], env, pids);
  let exit: { code: number | null; signal: NodeJS.Signals | null } | null = null;
  void start.exited.then((e) => (exit = e));
  await Cluster.until(async () => {
    for (const m of start.output().matchAll(/\(pid (\d+)\)/g)) pids.add(Number(m[1]));
    return exit !== null || /\bready\b|exited|killed/.test(start.output());
  }, PATIENCE_MS);
  return { exit, start };
}

t.test('npm start with one of its ports taken: a one-line message naming the port, exit 2, no node started, no data touched', async (t) => {
  const basePort = await threeFreePorts();
  const dataDir = join(mkdtempSync(join(tmpdir(), 'mom-start-taken-')), 'data');
  const env = { ...process.env, MOM_LOCAL_PORT: String(basePort), MOM_LOCAL_DATA: dataDir, MOM_LOG_LEVEL: 'warn' };
  // Whatever listens there answers 200 to everything, as a node of the first npm start answers /readyz.
  const other = createHttpServer((_req, res) => res.end('{}'));
  await new Promise<void>((resolve) => other.listen(basePort + 1, '127.0.0.1', resolve));
  t.teardown(async () => {
    await new Promise((resolve) => other.close(resolve));
    rmSync(dirname(dataDir), { recursive: true, force: true });
  });

  const { exit, start } = await startUntilSettled(t, env);
  t.same(exit, { code: 2, signal: null }, 'npm start exits with code 2', { output: start.output() });
  t.match(start.output(), `127.0.0.1:${basePort + 1}`, 'naming the port that is taken');
  t.notMatch(start.output(), /\bready\b|\bpid\b/, 'no node started, no banner');
  t.notMatch(start.output(), /\n\s+at /, 'no stack trace');
  t.notOk(existsSync(join(dataDir, 'n1')) || existsSync(join(dataDir, 'n2')) || existsSync(join(dataDir, 'n3')), 'no node folder made');
});

// MOM_LOCAL_DATA where no folder can be made (under /proc): Node's recursive mkdir looped there for
// ever, at full CPU, and npm start hung without a word.
t.test('npm start with a data folder that cannot be made: one line naming it, exit 2', async (t) => {
  const basePort = await threeFreePorts();
  const env = { ...process.env, MOM_LOCAL_PORT: String(basePort), MOM_LOCAL_DATA: '/proc/mom-nowhere/data', MOM_LOG_LEVEL: 'warn' };
  const { exit, start } = await startUntilSettled(t, env);
  t.same(exit, { code: 2, signal: null }, 'npm start exits with code 2', { output: start.output() });
  t.match(start.output(), "mom: cannot make the data folder /proc/mom-nowhere/data: ENOENT: no such file or directory, mkdir '/proc/mom-nowhere'");
  t.notMatch(start.output(), /\n\s+at /, 'no stack trace');
});
