// `npm run openapi`: writes the OpenAPI document of the routes' schemas to openapi/openapi.json
// (`--check` only compares, and fails when the committed file differs). The app is built with a broker
// and cluster that are never called: building the document serves no request.
import { readFileSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { FastifyInstance } from 'fastify';
import { Receipts, buildApp, type ApiDeps } from '../src/api/index.js';

const unused = (): never => {
  throw new Error('the OpenAPI build serves no request');
};

/** The public app (no inter-node routes), ready, over a broker and cluster that are never called. */
export async function documentApp(): Promise<FastifyInstance> {
  const deps: ApiDeps = {
    broker: { partitions: 16, propose: unused, query: unused, staleQuery: unused, watch: unused, format: unused, park: unused, afterAnswer: unused, waiting: () => 0 },
    cluster: { nodeId: 'n1', nodes: [], status: () => [], leaderless: () => [], catchingUp: () => Promise.resolve([]), queueDepths: () => [], partitionDepths: () => [], logSyncs: () => 0, peerTraffic: () => ({ sent: 0, dropped: 0, failed: 0, queued: 0, batches: 0, carriedCommands: 0, carriedAnswers: 0, carriedProposed: 0 }), cutOffFor: () => 0, clockOffsets: () => new Map() },
    jwtSecret: 'x'.repeat(32),
    receipts: new Receipts('r'.repeat(32)),
  };
  const app = await buildApp(deps);
  await app.ready();
  return app;
}

export async function openapiDocument(): Promise<string> {
  const app = await documentApp();
  const doc = JSON.stringify(app.swagger(), null, 2) + '\n';
  await app.close();
  return doc;
}

export const OPENAPI_FILE = join(resolve(dirname(fileURLToPath(import.meta.url)), '..'), 'openapi', 'openapi.json');

if (process.argv[1] !== undefined && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const doc = await openapiDocument();
  if (process.argv.includes('--check')) {
    const committed = readFileSync(OPENAPI_FILE, 'utf8');
    if (committed !== doc) {
      console.error('openapi/openapi.json is out of date: run npm run openapi');
      process.exit(1);
    }
  } else {
    writeFileSync(OPENAPI_FILE, doc);
    console.log(`wrote ${OPENAPI_FILE}`);
  }
}
