// `npm start` (and the benchmarks) run the esbuild bundle of src/main.ts, not the TypeScript sources:
// the bundle of this checkout is built, three nodes run it, and a message goes through.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { request } from 'undici';
import { startNodes, stopNodes } from '../../bench/cluster.js';

async function call(url: string, method: 'GET' | 'POST', body?: unknown, token?: string): Promise<{ status: number; body: unknown }> {
  const headers: Record<string, string> = {};
  if (body !== undefined) headers['content-type'] = 'application/json';
  if (token !== undefined) headers.authorization = `Bearer ${token}`;
  const res = await request(url, { method, headers, ...(body === undefined ? {} : { body: JSON.stringify(body) }) });
  const text = await res.body.text();
  return { status: res.statusCode, body: text === '' ? null : JSON.parse(text) };
}

t.test('three nodes from dist/main.js take a message and give it back', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'mom-bundle-'));
  const nodes = await startNodes(dir, { partitions: 4 }, (u) => call(`${u}/readyz`, 'GET').then((r) => r.status === 200, () => false));
  t.teardown(async () => {
    await stopNodes(nodes);
    rmSync(dir, { recursive: true, force: true });
  });
  t.ok(nodes.every((n) => n.proc.spawnargs.some((a) => a.endsWith(join('dist', 'main.js')))), 'the nodes run the bundle');
  const [a, b, c] = nodes.map((n) => n.url) as [string, string, string];
  t.equal((await call(`${a}/v1/auth/register`, 'POST', { username: 'bundle', password: 'bundle-password' })).status, 201);
  const token = ((await call(`${b}/v1/auth/login`, 'POST', { username: 'bundle', password: 'bundle-password' })).body as { accessToken: string }).accessToken;
  t.equal((await call(`${c}/v1/queues`, 'POST', { name: 'q' }, token)).status, 201);
  t.equal((await call(`${a}/v1/queues/q/messages`, 'POST', { body: 'through the bundle' }, token)).status, 201);
  const got = await call(`${b}/v1/queues/q/receive`, 'POST', { maxMessages: 1 }, token);
  t.match(got.body, { messages: [{ body: 'through the bundle' }] });
  await stopNodes(nodes);
  t.ok(nodes.every((n) => n.proc.exitCode === 0), 'SIGTERM stops each node cleanly (exit 0)');
});
