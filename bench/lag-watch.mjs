// `NODE_OPTIONS="--import ./bench/lag-watch.mjs" npm run bench -- --only send-1`: every 5 s each node
// writes to stderr its event-loop delay (p50, p99, max; measured at 5 ms resolution, so about 5 ms is
// no delay) and its garbage-collection pauses by kind. Loaded by every Node process the variable
// reaches; only the nodes (dist/main.js) report. For finding what stalls the nodes, not a figure of
// the table.
import { PerformanceObserver, constants, monitorEventLoopDelay } from 'node:perf_hooks';

if (process.argv.some((a) => a.endsWith('main.js'))) {
  const h = monitorEventLoopDelay({ resolution: 5 });
  h.enable();
  let gcs = [];
  new PerformanceObserver((list) => {
    for (const e of list.getEntries()) gcs.push([e.detail ? e.detail.kind : e.kind, e.duration]);
  }).observe({ entryTypes: ['gc'] });
  const name = {
    [constants.NODE_PERFORMANCE_GC_MAJOR]: 'major',
    [constants.NODE_PERFORMANCE_GC_MINOR]: 'minor',
    [constants.NODE_PERFORMANCE_GC_INCREMENTAL]: 'incremental',
    [constants.NODE_PERFORMANCE_GC_WEAKCB]: 'weak callbacks',
  };
  const id = process.argv[process.argv.indexOf('--node-id') + 1];
  globalThis
    .setInterval(() => {
      const by = {};
      for (const [k, d] of gcs) {
        const n = name[k] ?? String(k);
        by[n] ??= { n: 0, sum: 0, max: 0 };
        by[n].n++;
        by[n].sum += d;
        by[n].max = Math.max(by[n].max, d);
      }
      const g = Object.entries(by)
        .map(([n, v]) => `${n} ${v.n}x sum ${v.sum.toFixed(0)} max ${v.max.toFixed(1)}`)
        .join(', ');
      process.stderr.write(`[lag ${id}] loop p50 ${(h.percentile(50) / 1e6).toFixed(1)} p99 ${(h.percentile(99) / 1e6).toFixed(1)} max ${(h.max / 1e6).toFixed(1)} ms; gc ms: ${g}\n`);
      h.reset();
      gcs = [];
    }, 5000)
    .unref();
}
