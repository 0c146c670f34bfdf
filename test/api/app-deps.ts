// What an app built for inject() tests needs, over a broker of the test's own: one idle node, the
// test's secrets. A broker method the test does not give throws when called.
import { Receipts, type ApiDeps } from '../../src/api/index.js';

export function appDeps(broker: Partial<ApiDeps['broker']> = {}, extra: Partial<ApiDeps> = {}): ApiDeps {
  const never = (): never => {
    throw new Error('not used by this test');
  };
  return {
    broker: { partitions: 4, propose: never, query: never, staleQuery: never, watch: never, format: never, park: never, afterAnswer: never, waiting: () => 0, ...broker },
    cluster: {
      nodeId: 'n1',
      nodes: [],
      status: () => [],
      leaderless: () => [],
      catchingUp: () => Promise.resolve([]),
      queueDepths: () => [],
      partitionDepths: () => [],
      logSyncs: () => 0,
      peerTraffic: () => ({ sent: 0, dropped: 0, failed: 0, queued: 0, batches: 0, carriedCommands: 0, carriedAnswers: 0, carriedProposed: 0 }),
      cutOffFor: () => 0,
      clockOffsets: () => new Map(),
    },
    jwtSecret: 'x'.repeat(32),
    receipts: new Receipts('r'.repeat(32)),
    ...extra,
  };
}
