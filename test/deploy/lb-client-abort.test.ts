// A client that leaves while its request waits on a node (a long poll given up) must reach the node as
// a close: src/api/messaging.ts then stops the poll and releases what it leased. nginx as deployed
// passes the close on; deploy/haproxy/haproxy.cfg kept the node's side open until the node answered
// (no `option abortonclose`), and a message leased meanwhile stayed leased to nobody for its
// visibility timeout (review of 2026-12-07). A stand-in node records when its side of the request
// closes.
import { createServer } from 'node:http';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import { request } from 'undici';
import { freePort } from '../cluster/net-helpers.js';
import { LoadBalancer } from '../chaos/nginx.js';
import { needTool } from '../tools.js';
import { Haproxy } from './haproxy.js';

async function slowNode(t: Test): Promise<{ port: number; closes: { ms: number; answered: boolean }[] }> {
  const closes: { ms: number; answered: boolean }[] = [];
  const server = createServer((req, res) => {
    req.resume();
    if (req.url === '/readyz' || req.url === '/healthz') return void res.end('{}');
    const t0 = Date.now();
    res.on('close', () => closes.push({ ms: Date.now() - t0, answered: res.writableFinished }));
    // a long poll: answers after 4 s (with what it leased meanwhile)
    setTimeout(() => {
      if (!res.destroyed) res.writeHead(200, { 'content-type': 'application/json' }).end('{"messages":[]}');
    }, 4_000);
  });
  const port = await freePort();
  await new Promise<void>((r) => server.listen(port, '127.0.0.1', r));
  t.teardown(() => {
    server.closeAllConnections();
    server.close();
  });
  return { port, closes };
}

async function giveUp(url: string): Promise<void> {
  const ac = new AbortController();
  setTimeout(() => ac.abort(), 500);
  await request(`${url}/v1/queues/q/receive`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"waitSeconds":20}', signal: ac.signal }).then(
    (r) => r.body.dump(),
    () => undefined,
  );
  await new Promise((r) => setTimeout(r, 4_500));
}

for (const which of ['nginx', 'haproxy'] as const) {
  t.test(`${which}: a client that gives up its long poll is seen leaving by the node`, async (t) => {
    const bin = needTool(t, which);
    if (bin === null) return;
    const node = await slowNode(t);
    const dir = mkdtempSync(join(tmpdir(), `mom-${which}-`));
    t.teardown(() => rmSync(dir, { recursive: true, force: true }));
    const lb = which === 'nginx' ? await LoadBalancer.start(bin, dir, [`127.0.0.1:${node.port}`]) : await Haproxy.start(bin, dir, [`127.0.0.1:${node.port}`]);
    t.teardown(() => lb.close());
    node.closes.length = 0;
    await giveUp(lb.url);
    t.equal(node.closes.length, 1);
    t.ok(node.closes[0] !== undefined && !node.closes[0].answered && node.closes[0].ms < 2_000, `the node saw its client leave before it answered (${JSON.stringify(node.closes)})`);
  });
}
