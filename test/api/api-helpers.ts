// Three real nodes (MomServer: REST API + Raft over HTTP + SQLite in temporary folders) in this
// process, on loopback ports, for tests that talk to the API over HTTP or through inject().
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { request } from 'undici';
import { MomServer, type ServerOptions } from '../../src/server.js';
import { loadConfig, type NodeConfig } from '../../src/cluster/index.js';
import { partitionOf } from '../../src/partition/routing.js';
import { freePort, until } from '../cluster/net-helpers.js';

export interface TestCluster {
  readonly servers: MomServer[];
  readonly urls: string[];
  readonly configs: NodeConfig[];
  /** Stops every node still running and removes the data. */
  close(): Promise<void>;
}

export const TEST_JWT_SECRET = 'j'.repeat(40);

export async function startCluster(
  opts: ServerOptions & { partitions?: number; metricsToken?: string; nodeOptions?: (i: number) => ServerOptions; args?: readonly string[] } = {},
): Promise<TestCluster> {
  const root = mkdtempSync(join(tmpdir(), 'mom-api-'));
  const ports = [await freePort(), await freePort(), await freePort()];
  const peers = ports.map((p, i) => `n${i + 1}=http://127.0.0.1:${p}`).join(',');
  const configs = ports.map((p, i) =>
    loadConfig(
      [
        '--node-id', `n${i + 1}`,
        '--listen', `127.0.0.1:${p}`,
        '--peers', peers,
        '--data-dir', join(root, `n${i + 1}`),
        '--cluster-secret', 's'.repeat(32),
        '--jwt-secret', TEST_JWT_SECRET,
        '--partitions', String(opts.partitions ?? 4),
        ...(opts.metricsToken === undefined ? [] : ['--metrics-token', opts.metricsToken]),
        ...(opts.args ?? []),
      ],
      {},
    ),
  );
  const servers = await Promise.all(configs.map((c, i) => MomServer.start(c, { tickMs: 20, ...opts, ...opts.nodeOptions?.(i) })));
  await until(() => servers.every((s) => s.status().every((p) => p.leader !== null)), 'every partition has a leader on every node');
  return {
    servers,
    configs,
    urls: ports.map((p) => `http://127.0.0.1:${p}`),
    close: async () => {
      await Promise.allSettled(servers.map((s) => s.close()));
      rmSync(root, { recursive: true, force: true });
    },
  };
}

export interface JsonResponse {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: unknown;
}

/** One JSON request over HTTP (undici). */
export async function call(base: string, method: string, path: string, opts: { token?: string; body?: unknown; headers?: Record<string, string> } = {}): Promise<JsonResponse> {
  const headers: Record<string, string> = { ...opts.headers };
  if (opts.token !== undefined) headers.authorization = `Bearer ${opts.token}`;
  if (opts.body !== undefined) headers['content-type'] = 'application/json';
  const res = await request(`${base}${path}`, {
    method: method as 'GET',
    headers,
    ...(opts.body === undefined ? {} : { body: JSON.stringify(opts.body) }),
  });
  const text = await res.body.text();
  return { status: res.statusCode, headers: res.headers, body: text.length === 0 ? null : JSON.parse(text) };
}

/** A message as a receive answers it. */
export interface ReceivedMessage {
  messageId: string;
  body: string;
  attributes: Record<string, string>;
  receiptHandle: string;
}

/**
 * Receives up to 100 visible messages of the queue or subscription at `channel` (its path) and acks
 * them, as `token`'s user; throws unless both succeed. Over HTTP, not inject(): a receive whose
 * response is not finished when it closes gives its messages back (messaging.ts), and
 * light-my-request's response never reports writableFinished, so under inject() every received
 * message is nacked again a moment later and its handle goes stale.
 */
export async function drain(base: string, channel: string, token: string): Promise<ReceivedMessage[]> {
  const got = await call(base, 'POST', `${channel}/receive`, { token, body: { maxMessages: 100, visibilityTimeoutSeconds: 300 } });
  if (got.status !== 200) throw new Error(`receive ${channel}: ${got.status} ${JSON.stringify(got.body).slice(0, 300)}`);
  const messages = (got.body as { messages: ReceivedMessage[] }).messages;
  if (messages.length === 0) return messages;
  const acked = await call(base, 'POST', `${channel}/ack`, { token, body: { receiptHandles: messages.map((m) => m.receiptHandle) } });
  const failed = (acked.body as { failed?: unknown[] }).failed;
  if (acked.status !== 200 || failed === undefined || failed.length > 0) throw new Error(`ack ${channel}: ${acked.status} ${JSON.stringify(acked.body).slice(0, 300)}`);
  return messages;
}

/** Registers `username` (password `password-<username>`) and logs in; answers the access token. */
export async function userToken(base: string, username: string): Promise<string> {
  const password = `password-${username}`;
  const reg = await call(base, 'POST', '/v1/auth/register', { body: { username, password } });
  if (reg.status !== 201 && reg.status !== 409) throw new Error(`register ${username}: ${reg.status} ${JSON.stringify(reg.body)}`);
  const login = await call(base, 'POST', '/v1/auth/login', { body: { username, password } });
  if (login.status !== 200) throw new Error(`login ${username}: ${login.status} ${JSON.stringify(login.body)}`);
  return (login.body as { accessToken: string }).accessToken;
}

/**
 * Calls `get` until `done` holds of its answer or `ms` pass, and answers the last answer, for the
 * caller to assert on. The bound only keeps a broken test from hanging: it is not a timing assertion.
 */
export async function pollUntil<T>(get: () => Promise<T>, done: (v: T) => boolean, ms = 30_000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await get();
    if (done(v) || Date.now() >= deadline) return v;
    await new Promise((r) => setTimeout(r, 50));
  }
}

/**
 * The index (in `cluster.urls`) of the node leading the partition of queue or topic `name`, as
 * GET /v1/cluster tells it, once every node names the same leader: where leaders are is up to the
 * elections (and to a loaded machine's timing), never something a test may assume.
 */
export async function leaderOf(cluster: TestCluster, name: string): Promise<number> {
  const p = partitionOf(name, cluster.configs[0]!.partitions);
  const views = await pollUntil(
    () => Promise.all(cluster.urls.map(async (u) => ((await call(u, 'GET', '/v1/cluster')).body as { partitions?: { partition: number; leader: string | null }[] } | null)?.partitions?.find((x) => x.partition === p)?.leader ?? null)),
    (leaders) => leaders[0] !== null && leaders.every((l) => l === leaders[0]),
  );
  const i = cluster.configs.findIndex((c) => c.nodeId === views[0]);
  if (i < 0 || views.some((l) => l !== views[0])) throw new Error(`the nodes name no common leader of partition ${p}: ${views.join(', ')}`);
  return i;
}
