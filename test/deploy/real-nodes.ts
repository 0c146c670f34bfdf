// Shared by the tests on real node processes: three nodes of the chaos harness (test/chaos/cluster.ts)
// stopped and removed when the test ends, and a JSON call shaped for their use of it. They cut no
// power, so their nodes run without the storage fault layer, and these tests need no C compiler.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Test } from 'tap';
import { call as apiCall } from '../api/api-helpers.js';
import { Cluster } from '../chaos/cluster.js';

/** Three nodes (4 partitions) started in a fresh run folder `mom-<name>-*`; gone when `t` ends. */
export async function threeNodes(t: Test, name: string, logLevel = 'warn'): Promise<Cluster> {
  const runDir = mkdtempSync(join(tmpdir(), `mom-${name}-`));
  const cluster = await Cluster.create(runDir, 4, logLevel, { powerCuts: false });
  for (const i of [0, 1, 2]) cluster.start(i);
  t.teardown(async () => {
    await cluster.close();
    if (process.env.MOM_KEEP_RUN !== '1') rmSync(runDir, { recursive: true, force: true });
  });
  return cluster;
}

/** One JSON request (test/api's call); the body as an object ({} when empty). */
export async function call(url: string, method: string, path: string, body?: unknown, headers: Record<string, string> = {}): Promise<{ status: number; body: Record<string, unknown> }> {
  const r = await apiCall(url, method, path, { headers, ...(body === undefined ? {} : { body }) });
  return { status: r.status, body: (r.body ?? {}) as Record<string, unknown> };
}
