// `NODE_OPTIONS="--import ./bench/sync-watch.mjs" npm run bench -- --only receive-ack-100`: each node
// writes to stderr every synchronous `node:fs` call that held its event loop more than 4 ms, with the
// time since it started and the call's stack (the bundle's source map names our files). Loaded by
// every Node process the variable reaches; only the nodes (dist/main.js) report. With
// bench/lag-watch.mjs, it found stop 50's stall: a snapshot's segment deletions, each `rmSync` 15-41
// ms (bench/README.md, "What changed"). For finding what stalls the nodes, not a figure of the table.
import fs from 'node:fs';
import { syncBuiltinESMExports } from 'node:module';
import { performance } from 'node:perf_hooks';

const CALLS = ['fdatasyncSync', 'fsyncSync', 'rmSync', 'unlinkSync', 'renameSync', 'writevSync', 'writeSync', 'readSync', 'readFileSync', 'openSync', 'closeSync', 'ftruncateSync'];

if (process.argv.some((a) => a.endsWith('main.js'))) {
  const id = process.argv[process.argv.indexOf('--node-id') + 1];
  const start = performance.now();
  for (const name of CALLS) {
    const call = fs[name];
    fs[name] = function (...args) {
      const at = performance.now();
      try {
        return call.apply(this, args);
      } finally {
        const ms = performance.now() - at;
        if (ms > 4) {
          const stack = (new Error().stack ?? '')
            .split('\n')
            .slice(2, 7)
            .map((l) => l.trim().replace(/^at /, ''))
            .join(' < ');
          process.stderr.write(`[sync ${id}] ${((at - start) / 1000).toFixed(2)} s ${name} ${ms.toFixed(1)} ms: ${stack}\n`);
        }
      }
    };
  }
  // The nodes import these functions by name: the bindings follow the module object only after this.
  syncBuiltinESMExports();
}
