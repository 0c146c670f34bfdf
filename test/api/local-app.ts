// The API over one partition's state machine in this process (TestStore: commands applied at once,
// no Raft, no peers), listening on a loopback port: for behaviour tests of the API itself, which
// need neither three nodes nor forwarding. What needs them (limits on every node, forwarding,
// failover) runs on real nodes (api-helpers.ts startCluster).
import type { FastifyInstance } from 'fastify';
import { buildApp, type ApiDeps } from '../../src/api/index.js';
import { FORMAT, runQuery, type BrokerStateMachine, type Command, type Result } from '../../src/store/broker/index.js';
import { TestStore } from '../store/broker/helpers.js';
import { TEST_JWT_SECRET } from './api-helpers.js';
import { appDeps } from './app-deps.js';

export interface LocalApp {
  readonly app: FastifyInstance;
  /** http://127.0.0.1:<port> */
  readonly url: string;
  readonly port: number;
  /** The one partition's state. */
  readonly state: BrokerStateMachine;
  close(): Promise<void>;
}

/**
 * A long poll's watch in a process where nothing wakes it: it ends at the poll's deadline (`until`,
 * on the monotonic clock), and the poll looks once more.
 */
const quietWatch: ApiDeps['broker']['watch'] = (_p, _ref, until) => {
  let timer: NodeJS.Timeout | undefined;
  const woken = new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), Math.max(0, until - performance.now()))));
  return { woken, cancel: () => clearTimeout(timer), passOn: () => undefined };
};

/**
 * With `propose`, each write goes through it: `apply` applies the command (a benchmark answers some
 * without applying, bench/api-layer.ts). With `query`, each read of the leader goes through it
 * (a test delays it: `run` answers it).
 */
export async function localApp(
  opts: { propose?: (command: Command, apply: () => Promise<Result>) => Promise<Result>; query?: (run: () => Promise<Result>) => Promise<Result>; deps?: Partial<ApiDeps> } = {},
): Promise<LocalApp> {
  const now = (): number => Date.now();
  // Entries stamped with this process's clock, as a node stamps its own (a user's registration time
  // is the entry's: token checks compare it with real tokens' times).
  const store = await TestStore.open(0, undefined, FORMAT, FORMAT, now());
  const app = await buildApp(
    appDeps(
      {
        partitions: 1,
        propose: async (_p, actor, command, idempotencyKey) => {
          const apply = async (): Promise<Result> => {
            store.time = Math.max(store.time, now());
            return store.run(actor, command, idempotencyKey);
          };
          return opts.propose === undefined ? apply() : opts.propose(command, apply);
        },
        query: async (_p, q) => {
          const run = async (): Promise<Result> => runQuery(store.sm, q, now());
          return opts.query === undefined ? run() : opts.query(run);
        },
        staleQuery: (_p, q) => ({ result: runQuery(store.sm, q, now()), appliedIndex: store.index }),
        format: () => store.sm.format(),
        watch: quietWatch,
        afterAnswer: (work) => void work.catch(() => undefined),
      },
      { jwtSecret: TEST_JWT_SECRET, now, ...opts.deps },
    ),
  );
  await app.listen({ host: '127.0.0.1', port: 0 });
  const address = app.server.address();
  const port = typeof address === 'object' && address !== null ? address.port : 0;
  return {
    app,
    url: `http://127.0.0.1:${port}`,
    port,
    state: store.sm,
    close: async () => {
      await app.close();
      await store.close();
    },
  };
}
