// The rolling restart of docs/operations.md, on three real node processes under load: each node in
// turn gets SIGTERM (it hands its leaderships over and finishes what is in flight), is started again,
// and the next one waits until /readyz says ready and every partition has caught up. Clients send with
// an Idempotency-Key and retry a 503/504 or a refused connection with the same key on the next node.
// No send may fail for good, and none may be stored twice.
import t from 'tap';
import { request } from 'undici';
import { Cluster, sleep } from '../chaos/cluster.js';
import { threeNodes } from './real-nodes.js';

// Real node processes: starting, stopping and catching up take tens of seconds on a loaded machine.
t.setTimeout(300_000);

interface Sent {
  ok: number;
  failed: string[];
  retries: number;
}

t.test('restarting the nodes one by one under load loses no keyed write', async (t) => {
  const cluster = await threeNodes(t, 'rolling');
  t.ok(await Cluster.until(() => cluster.led(), 60_000), 'every partition has a leader');
  const json = async (i: number, method: string, path: string, body?: unknown, headers: Record<string, string> = {}): Promise<{ status: number; body: Record<string, unknown> }> => {
    const res = await request(`${cluster.urls[i]}${path}`, {
      method: method as 'POST',
      headers: { ...(body === undefined ? {} : { 'content-type': 'application/json' }), ...headers },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
      signal: AbortSignal.timeout(15_000),
    });
    const text = await res.body.text();
    return { status: res.statusCode, body: text === '' ? {} : (JSON.parse(text) as Record<string, unknown>) };
  };
  t.equal((await json(0, 'POST', '/v1/auth/register', { username: 'roller', password: 'roller-password' })).status, 201);
  const auth = { authorization: `Bearer ${(await json(1, 'POST', '/v1/auth/login', { username: 'roller', password: 'roller-password' })).body.accessToken as string}` };
  const queues = ['roll-a', 'roll-b', 'roll-c', 'roll-d'];
  for (const q of queues) t.equal((await json(2, 'POST', '/v1/queues', { name: q }, auth)).status, 201);

  let stop = false;
  const sent: Sent = { ok: 0, failed: [], retries: 0 };
  let seq = 0;
  const sender = async (c: number): Promise<void> => {
    let node = c % 3;
    while (!stop) {
      const n = ++seq;
      const q = queues[n % queues.length]!;
      const key = `roll-${n}`;
      const deadline = Date.now() + 60_000;
      for (;;) {
        const r = await json(node, 'POST', `/v1/queues/${q}/messages`, { body: `m-${n}` }, { ...auth, 'idempotency-key': key }).catch((err: Error) => ({ status: 0, body: { detail: err.message } }));
        node = (node + 1) % 3;
        if (r.status === 201) {
          sent.ok++;
          break;
        }
        if ((r.status === 0 || r.status === 503 || r.status === 504) && Date.now() < deadline) {
          sent.retries++;
          await sleep(100);
          continue;
        }
        sent.failed.push(`${key}: ${r.status} ${JSON.stringify(r.body).slice(0, 200)}`);
        break;
      }
    }
  };
  const senders = Promise.all([0, 1, 2, 3, 4, 5].map(sender));
  // The first restart comes once the load is there (sends acknowledged), not after a fixed pause.
  t.ok(await Cluster.until(async () => sent.ok > 20, 60_000), 'sends are under way');

  const ready = async (i: number): Promise<boolean> => {
    try {
      const res = await request(`${cluster.urls[i]}/readyz`, { signal: AbortSignal.timeout(2_000) });
      await res.body.dump();
      return res.statusCode === 200;
    } catch {
      return false;
    }
  };
  for (const i of [0, 1, 2]) {
    cluster.terminate(i);
    t.ok(await Cluster.until(async () => !cluster.running(i), 30_000), `n${i + 1} stopped cleanly after SIGTERM`);
    cluster.start(i);
    t.ok(await Cluster.until(() => ready(i), 60_000), `n${i + 1} is ready again`);
    t.ok(await Cluster.until(() => cluster.led(), 60_000), 'every partition has a leader');
    const before = sent.ok;
    t.ok(await Cluster.until(async () => sent.ok > before + 20, 60_000), 'sends go on');
  }
  stop = true;
  await senders;
  t.same(sent.failed, [], 'no send failed for good');
  t.ok(sent.ok > 60, `${sent.ok} sends acknowledged, ${sent.retries} retries on the way`);
  t.same(cluster.crashes, [], 'no node crashed');

  // Exactly once: every acknowledged body is stored, none twice.
  let stored = 0;
  const bodies = new Set<string>();
  for (const q of queues) {
    for (;;) {
      const r = await json(0, 'POST', `/v1/queues/${q}/receive`, { maxMessages: 100, visibilityTimeoutSeconds: 300 }, auth);
      const got = r.body.messages as { body: string }[];
      if (got.length === 0) break;
      for (const m of got) {
        stored++;
        bodies.add(m.body);
      }
    }
  }
  t.equal(bodies.size, stored, 'no message stored twice');
  t.equal(stored, sent.ok, 'every acknowledged send is stored');
});
