// Debian's nginx with deploy/nginx/mom.conf on loopback in front of a local three-node cluster (real
// node processes): the use cases run through it, then one node is killed and they run again. The
// client does what the docs ask of one behind a load balancer: every write carries an
// Idempotency-Key, and a 503/504 is retried with the same key until a deadline. Nothing may fail
// for good, and no keyed write may take effect twice. Without nginx the test is skipped
// (test/tools.ts; .ci/run installs it).
import { join } from 'node:path';
import t, { type Test } from 'tap';
import { request } from 'undici';
import { Cluster, sleep } from '../chaos/cluster.js';
import { LoadBalancer } from '../chaos/nginx.js';
import { needTool } from '../tools.js';
import { threeNodes } from './real-nodes.js';

// Real node processes: starting, stopping and catching up take tens of seconds on a loaded machine.
t.setTimeout(300_000);

interface Reply {
  status: number;
  body: Record<string, unknown>;
}

class Client {
  private keys = 0;
  token = '';
  /** Requests answered 503/504 or not at all, then retried: the price of the fault. */
  retries = 0;

  constructor(readonly base: string) {}

  async call(method: 'GET' | 'POST' | 'PUT' | 'DELETE', path: string, body?: unknown): Promise<Reply> {
    const key = method === 'GET' ? undefined : `e2e-${process.pid}-${++this.keys}`;
    const deadline = Date.now() + 30_000;
    for (;;) {
      try {
        const res = await request(`${this.base}${path}`, {
          method,
          headers: {
            ...(body === undefined ? {} : { 'content-type': 'application/json' }),
            ...(this.token === '' ? {} : { authorization: `Bearer ${this.token}` }),
            ...(key === undefined ? {} : { 'idempotency-key': key }),
          },
          ...(body === undefined ? {} : { body: JSON.stringify(body) }),
          signal: AbortSignal.timeout(30_000),
        });
        const text = await res.body.text();
        if ((res.statusCode === 503 || res.statusCode === 504) && Date.now() < deadline) {
          this.retries++;
          await sleep(200);
          continue;
        }
        return { status: res.statusCode, body: text === '' ? {} : (JSON.parse(text) as Record<string, unknown>) };
      } catch (err) {
        if (Date.now() >= deadline) throw err;
        this.retries++;
        await sleep(200);
      }
    }
  }
}

/** The use cases, under names with `tag`: each step's status (and the facts it checks). */
async function useCases(t: Test, c: Client, tag: string): Promise<void> {
  const expect = async (what: string, p: Promise<Reply>, status: number): Promise<Reply> => {
    const r = await p;
    t.equal(r.status, status, `${tag}: ${what}`);
    return r;
  };
  c.token = '';
  await expect('register', c.call('POST', '/v1/auth/register', { username: `owner-${tag}`, password: 'owner-password' }), 201);
  const login = await expect('login', c.call('POST', '/v1/auth/login', { username: `owner-${tag}`, password: 'owner-password' }), 200);
  c.token = login.body.accessToken as string;
  const q = `orders-${tag}`;
  await expect('create a queue', c.call('POST', '/v1/queues', { name: q }), 201);
  await expect('send', c.call('POST', `/v1/queues/${q}/messages`, { body: 'one', attributes: { n: '1' } }), 201);
  await expect('send a batch', c.call('POST', `/v1/queues/${q}/messages/batch`, { messages: [{ body: 'two' }, { body: 'three' }] }), 201);
  const got = await expect('receive', c.call('POST', `/v1/queues/${q}/receive`, { maxMessages: 10, waitSeconds: 2, visibilityTimeoutSeconds: 60 }), 200);
  const messages = got.body.messages as { body: string; receiptHandle: string }[];
  t.same(messages.map((m) => m.body).sort(), ['one', 'three', 'two'], `${tag}: each message once, retries or not`);
  const acked = await expect('ack', c.call('POST', `/v1/queues/${q}/ack`, { receiptHandles: messages.map((m) => m.receiptHandle) }), 200);
  t.equal((acked.body.acked as string[]).length, 3, `${tag}: all acked`);
  const stats = await expect('queue stats', c.call('GET', `/v1/queues/${q}`), 200);
  t.match(stats.body.stats, { visible: 0, inFlight: 0 }, `${tag}: the queue is empty`);

  const topic = `events-${tag}`;
  await expect('create a topic', c.call('POST', '/v1/topics', { name: topic }), 201);
  await expect('subscribe', c.call('POST', `/v1/topics/${topic}/subscriptions`, { name: 'audit' }), 201);
  const pub = await expect('publish', c.call('POST', `/v1/topics/${topic}/messages`, { body: 'event' }), 201);
  t.equal(pub.body.subscriptions, 1, `${tag}: delivered to the subscription`);
  const sub = await expect('receive from the subscription', c.call('POST', `/v1/topics/${topic}/subscriptions/audit/receive`, { maxMessages: 10, waitSeconds: 2 }), 200);
  t.same((sub.body.messages as { body: string }[]).map((m) => m.body), ['event'], `${tag}: the event, once`);

  // Rights: another user sees nothing until granted.
  const other = new Client(c.base);
  await expect('register a second user', other.call('POST', '/v1/auth/register', { username: `other-${tag}`, password: 'other-password' }), 201);
  other.token = (await other.call('POST', '/v1/auth/login', { username: `other-${tag}`, password: 'other-password' })).body.accessToken as string;
  await expect('another user cannot send', other.call('POST', `/v1/queues/${q}/messages`, { body: 'intruder' }), 404);
  await expect('grant send', c.call('PUT', `/v1/queues/${q}/grants/other-${tag}`, { actions: ['send'] }), 200);
  await expect('the granted user sends', other.call('POST', `/v1/queues/${q}/messages`, { body: 'granted' }), 201);
  await expect('delete the queue', c.call('DELETE', `/v1/queues/${q}`), 204);
  await expect('the queue is gone', c.call('GET', `/v1/queues/${q}`), 404);
  c.retries += other.retries;
}

t.test('the use cases through nginx, with all three nodes and with one killed', async (t) => {
  const nginx = needTool(t, 'nginx');
  if (nginx === null) return;
  const cluster = await threeNodes(t, 'nginx-e2e');
  const lb = await LoadBalancer.start(nginx, join(cluster.runDir, 'nginx'), cluster.ports.map((p) => `127.0.0.1:${p}`));
  t.teardown(() => lb.close());
  t.ok(await Cluster.until(() => cluster.led(), 60_000), 'every partition has a leader');
  const c = new Client(lb.url);
  await useCases(t, c, 'all-up');
  // Reported, not asserted: even with every node up, a loaded machine can delay heartbeats into an
  // election, and a request that meets it is answered 503 and retried. The statuses above are what
  // must hold.
  t.comment(`with every node up, ${c.retries} requests needed a retry by the client`);

  await cluster.kill(0);
  await useCases(t, c, 'one-down');
  t.comment(`with n1 killed, ${c.retries} requests needed a retry by the client`);
});
