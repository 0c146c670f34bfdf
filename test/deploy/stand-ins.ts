// Stand-in nodes for the load balancers' rule tests: an HTTP server that answers every request with
// one status and counts what reached it.
import { createServer, type Server } from 'node:http';
import { request } from 'undici';
import { freePort } from '../cluster/net-helpers.js';

export interface Stand {
  server: Server;
  port: number;
  /** "METHOD url idempotency-key" of every request that reached it. */
  hits: string[];
  close(): void;
}

/** A stand-in node on loopback; `readyz` answers its /readyz (default: `status`). */
export async function stand(status: number, readyz = status): Promise<Stand> {
  const hits: string[] = [];
  const server = createServer((req, res) => {
    req.resume();
    req.on('end', () => {
      if (req.url === '/readyz') return void res.writeHead(readyz).end();
      hits.push(`${req.method} ${req.url} ${req.headers['idempotency-key'] ?? '-'}`);
      res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify({ from: status, requestId: req.headers['x-request-id'] ?? null }));
    });
  });
  const port = await freePort();
  await new Promise<void>((r) => server.listen(port, '127.0.0.1', r));
  return {
    server,
    port,
    hits,
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
