// The benchmarks' cluster: three node processes on loopback with fresh data folders under `dir`, as
// `npm start` runs them: the bundle of src/main.ts (scripts/build.mjs), secrets generated for the run
// and passed by environment.
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { openSync } from 'node:fs';
import { freePort } from '../test/cluster/net-helpers.js';
// @ts-expect-error: a plain .mjs script without types
import { buildMain } from '../scripts/build.mjs';
// @ts-expect-error: a plain .mjs script without types
import { NODE_FLAGS } from '../scripts/local-cluster.mjs';

const root = join(import.meta.dirname, '..');
const buildMainTyped = buildMain as () => Promise<string>;

export interface BenchNode {
  id: string;
  url: string;
  proc: ChildProcess;
}

/**
 * Starts the three nodes (extra settings as flags, e.g. { partitions: 16 }; `nodeArgs` for Node
 * itself, e.g. --cpu-prof, after the options `npm start` gives a node, so that they can override
 * them) and resolves once `ready(url)` holds for each; they are SIGKILLed when this process exits.
 */
export async function startNodes(dir: string, flags: Record<string, string | number>, ready: (url: string) => Promise<boolean>, nodeArgs: string[] = []): Promise<BenchNode[]> {
  const main = await buildMainTyped();
  const ports = [await freePort(), await freePort(), await freePort()];
  const urls = ports.map((p) => `http://127.0.0.1:${p}`);
  const peers = urls.map((u, i) => `n${i + 1}=${u}`).join(',');
  const env = { ...process.env, MOM_CLUSTER_SECRET: randomBytes(24).toString('base64url'), MOM_JWT_SECRET: randomBytes(48).toString('base64url'), MOM_LOG_LEVEL: process.env.MOM_BENCH_LOG_LEVEL ?? 'warn' };
  const stdoutTo = process.env.MOM_BENCH_STDOUT || undefined;
  const extra = Object.entries(flags).flatMap(([k, v]) => [`--${k}`, String(v)]);
  const nodes = ports.map((p, i) => ({
    id: `n${i + 1}`,
    url: urls[i]!,
    proc: spawn(process.execPath, [...(NODE_FLAGS as string[]), ...nodeArgs, main, '--node-id', `n${i + 1}`, '--listen', `127.0.0.1:${p}`, '--peers', peers, '--data-dir', join(dir, `n${i + 1}`), ...extra], {
      cwd: root,
      env,
      // MOM_BENCH_STDOUT=/tmp/x keeps each node's output (what V8's --trace-gc prints) in /tmp/x-n1.out...
      stdio: ['ignore', stdoutTo === undefined ? 'ignore' : openSync(`${stdoutTo}-n${i + 1}.out`, 'w'), 'inherit'],
    }),
  }));
  process.on('exit', () => nodes.forEach((n) => n.proc.kill('SIGKILL')));
  for (const n of nodes) n.proc.once('exit', (code, signal) => signal !== 'SIGKILL' && signal !== 'SIGTERM' && code !== 0 && console.error(`node ${n.id} exited (${code ?? signal})`));
  for (let i = 0; i < 600; i++) {
    if ((await Promise.all(urls.map(ready))).every(Boolean)) return nodes;
    await new Promise((r) => setTimeout(r, 200));
  }
  nodes.forEach((n) => n.proc.kill('SIGKILL'));
  throw new Error('the cluster was not ready within 120 s');
}

/** SIGTERM (a clean stop: profiles get written), then SIGKILL after 20 s. */
export async function stopNodes(nodes: BenchNode[]): Promise<void> {
  await Promise.all(
    nodes.map(async (n) => {
      if (n.proc.exitCode !== null || n.proc.signalCode !== null) return;
      const exited = new Promise((r) => n.proc.once('exit', r));
      n.proc.kill('SIGTERM');
      const timer = setTimeout(() => n.proc.kill('SIGKILL'), 20_000);
      await exited;
      clearTimeout(timer);
    }),
  );
}

/** A JSON request (fetch) to a node: the status and the parsed body, null when empty. */
export async function json(method: string, url: string, body?: unknown, token?: string): Promise<{ status: number; body: unknown }> {
  const res = await fetch(url, {
    method,
    headers: { 'content-type': 'application/json', ...(token === undefined ? {} : { authorization: `Bearer ${token}` }) },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  const text = await res.text();
  return { status: res.status, body: text.length > 0 ? JSON.parse(text) : null };
}

/** Registers the benchmarks' user at the node `url` and logs it in: its bearer token. */
export async function benchUser(url: string): Promise<string> {
  await json('POST', `${url}/v1/auth/register`, { username: 'bench', password: 'bench-password' });
  return ((await json('POST', `${url}/v1/auth/login`, { username: 'bench', password: 'bench-password' })).body as { accessToken: string }).accessToken;
}
