// Stand-in nodes for the load balancers' rule tests: an HTTP server that answers every request with
// one status and counts what reached it.
import { createServer, type Server } from 'node:http';
import type { Test } from 'tap';
import { request } from 'undici';
import { freePort } from '../cluster/net-helpers.js';

export interface Stand {
  server: Server;
  port: number;
  /** "METHOD url idempotency-key" of every request that reached it. */
  hits: string[];
  /** The X-Forwarded-For of each of those requests ('-' when absent). */
  forwardedFor: string[];
  /** One entry per /readyz asked (a balancer's health check), not counted in `hits`. */
  readyChecks: number[];
  close(): void;
}

/** A stand-in node on loopback; `readyz` answers its /readyz (default: `status`). */
export async function stand(status: number, readyz = status): Promise<Stand> {
  const hits: string[] = [];
  const forwardedFor: string[] = [];
  const readyChecks: number[] = [];
  const server = createServer((req, res) => {
    req.resume();
    req.on('end', () => {
      if (req.url === '/readyz') {
        readyChecks.push(readyChecks.length);
        return void res.writeHead(readyz).end();
      }
      hits.push(`${req.method} ${req.url} ${req.headers['idempotency-key'] ?? '-'}`);
      forwardedFor.push(String(req.headers['x-forwarded-for'] ?? '-'));
      res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify({ from: status, requestId: req.headers['x-request-id'] ?? null }));
    });
  });
  const port = await freePort();
  await new Promise<void>((r) => server.listen(port, '127.0.0.1', r));
  return {
    server,
    port,
    hits,
    forwardedFor,
    readyChecks,
    close: () => {
      server.closeAllConnections();
      server.close();
    },
  };
}

/** One request through the balancer; its status. */
export async function send(url: string, method: 'GET' | 'POST' | 'PUT' | 'DELETE', key?: string): Promise<number> {
  const body = method === 'POST' || method === 'PUT';
  const res = await request(url, { method, headers: { ...(body ? { 'content-type': 'application/json' } : {}), ...(key === undefined ? {} : { 'idempotency-key': key }) }, ...(body ? { body: '{}' } : {}) });
  await res.body.dump();
  return res.statusCode;
}

/**
 * Sends each write six times through the balancer at `url`, in front of `timedOut` (answers 504) and
 * `fine`, and checks that the 504 reached the client and that each request reached exactly one node:
 * none was repeated on the other.
 */
export async function checkNotRepeated(t: Test, url: string, timedOut: Stand, fine: Stand, writes: readonly (readonly ['POST' | 'PUT' | 'DELETE', string, string | undefined])[]): Promise<void> {
  for (const [method, path, key] of writes) {
    timedOut.hits.length = 0;
    fine.hits.length = 0;
    const got: number[] = [];
    for (let i = 0; i < 6; i++) got.push(await send(`${url}${path}`, method, key));
    const what = `${method} ${path} ${key ?? '(no key)'}`;
    t.ok(got.includes(504), `${what}: the 504 reached the client`);
    t.equal(timedOut.hits.length + fine.hits.length, 6, `${what}: each reached exactly one node (${[...timedOut.hits, ...fine.hits].join(' | ')})`);
  }
}
