// --log-segment-bytes sizes the Raft log's segment files on a real node, and the segments a node's
// snapshots free are deleted (on the thread pool since stop 50: WalStore.deleteSoon) while the node
// keeps serving.
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { call, drain, pollUntil, startCluster, userToken } from './api-helpers.js';

const segments = (dataDir: string): string[] =>
  readdirSync(join(dataDir, 'wal'))
    .filter((f) => f.endsWith('.wal'))
    .sort();

t.test('segments of the configured size roll over, and those no partition needs any more are deleted', async (t) => {
  const c = await startCluster({ partitions: 1, args: ['--log-segment-bytes', '64KiB', '--snapshot-every', '100', '--keep-behind-snapshot', '0'] });
  t.teardown(() => c.close());
  const token = await userToken(c.urls[0]!, 'alice');
  t.equal((await call(c.urls[0]!, 'POST', '/v1/queues', { token, body: { name: 'rolled' } })).status, 201);
  const body = 'x'.repeat(1024);
  // About 400 KiB of bodies: several segments of 64 KiB on every node (of 64 MiB, one).
  for (let i = 0; i < 40; i++) {
    const sent = await call(c.urls[i % 3]!, 'POST', '/v1/queues/rolled/messages/batch', { token, body: { messages: Array.from({ length: 10 }, () => ({ body })) } });
    t.equal(sent.status, 201, `batch ${i} sent`);
  }
  const first = c.configs.map((cfg) => segments(cfg.dataDir)[0]!);
  for (const [i, cfg] of c.configs.entries()) t.ok(segments(cfg.dataDir).length >= 4, `n${i + 1}: the log rolled over (${segments(cfg.dataDir).length} segments)`);

  // Drained, the bodies need no entry; single sends then make entries until snapshots compact the
  // log past the first segments, and the nodes delete them.
  let received = 0;
  for (let round = 0; round < 20 && received < 400; round++) received += (await drain(c.urls[round % 3]!, '/v1/queues/rolled', token)).length;
  t.equal(received, 400, 'every message received once');
  const firstGone = (): boolean => c.configs.every((cfg, i) => !segments(cfg.dataDir).includes(first[i]!));
  let n = 0;
  const gone = await pollUntil(
    async () => {
      await call(c.urls[n++ % 3]!, 'POST', '/v1/queues/rolled/messages', { token, body: { body: 'tick' } });
      return firstGone();
    },
    (done) => done,
    120_000,
  );
  t.ok(gone, `every node deleted its first segment (after ${n} more sends; now ${c.configs.map((cfg) => segments(cfg.dataDir).length).join(' / ')} segments)`);
});
