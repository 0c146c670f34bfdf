// Node's own options for a node (scripts/local-cluster.mjs, NODE_FLAGS: source maps, V8's old
// generation allowed 128 MiB before its first full collection, which takes a sixth off a send's CPU
// and a third off its p99, and semi-spaces of 8 MiB, which take back part of the memory that costs;
// bench/README.md, "Memory: V8's old generation against CPU") are the same wherever a node is started:
// `npm start` and `npm run node` (spawnNode; test/cluster/start-local.test.ts reads the running
// nodes' command lines), the systemd unit and the Docker image (here), the bench and the chaos runs
// (which import NODE_FLAGS).
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
// @ts-expect-error: a plain .mjs script without types
import { NODE_FLAGS } from '../../scripts/local-cluster.mjs';

const root = join(import.meta.dirname, '..', '..');
const flags = NODE_FLAGS as string[];

t.test('the flags name the heap option NODE_OPTIONS refuses', async (t) => {
  t.ok(flags.includes('--initial-old-space-size=128'), 'the old generation starts at 128 MiB');
  t.ok(flags.includes('--max-semi-space-size=8'), 'the young generation\'s semi-spaces are 8 MiB');
  t.ok(flags.includes('--enable-source-maps'), 'stack traces name the sources');
});

t.test('the systemd unit starts node with them, then the bundle', async (t) => {
  const unit = readFileSync(join(root, 'deploy', 'systemd', 'mom.service'), 'utf8');
  const exec = /^ExecStart=(.*)$/m.exec(unit)?.[1];
  t.same(exec?.split(/\s+/), ['/usr/bin/node', ...flags, '/opt/mom/dist/main.js']);
});

t.test('the Docker image starts node with them, then the bundle', async (t) => {
  const dockerfile = readFileSync(join(root, 'deploy', 'docker', 'Dockerfile'), 'utf8');
  const entry = /^ENTRYPOINT\s+(\[.*\])\s*$/m.exec(dockerfile)?.[1];
  t.same(entry === undefined ? null : JSON.parse(entry), ['node', ...flags, 'dist/main.js']);
});
