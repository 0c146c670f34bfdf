// `NODE_OPTIONS="--import ./bench/alloc-watch.mjs" MOM_ALLOC_DIR=/tmp/alloc npm run bench -- --only send-1`:
// each node samples what it allocates (V8's sampling heap profiler through the inspector, every 64 KiB
// allocated, objects the collector freed since included) and writes a profile of each 10-second window
// to MOM_ALLOC_DIR as alloc-<node>-<window>.heapprofile. `npx tsx bench/alloc-report.ts <files>` says
// where the bytes were allocated. Loaded by every Node process the variable reaches; only the nodes
// (dist/main.js) sample. For finding what feeds the collector, not a figure of the table.
import { writeFileSync } from 'node:fs';
import { Session } from 'node:inspector';
import { join } from 'node:path';

if (process.argv.some((a) => a.endsWith('main.js'))) {
  const dir = process.env.MOM_ALLOC_DIR ?? '/tmp';
  const id = process.argv[process.argv.indexOf('--node-id') + 1];
  const session = new Session();
  session.connect();
  const post = (method, params) => new Promise((resolve, reject) => session.post(method, params, (e, r) => (e ? reject(e) : resolve(r))));
  const start = () => post('HeapProfiler.startSampling', { samplingInterval: 64 * 1024, includeObjectsCollectedByMajorGC: true, includeObjectsCollectedByMinorGC: true });
  await post('HeapProfiler.enable');
  await start();
  let window = 0;
  globalThis
    .setInterval(async () => {
      const { profile } = await post('HeapProfiler.stopSampling');
      writeFileSync(join(dir, `alloc-${id}-${String(window++).padStart(3, '0')}.heapprofile`), JSON.stringify(profile));
      await start();
    }, 10_000)
    .unref();
}
