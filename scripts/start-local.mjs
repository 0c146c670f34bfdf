#!/usr/bin/env node
// `npm start`: a local three-node cluster on 127.0.0.1:8080, 8081 and 8082, data under ./data.
// Secrets are generated on the first start and kept in ./data/secrets.json (never printed).
// Ctrl-C stops all three nodes gracefully.
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { fetch } from 'undici';
import { buildMain } from './build.mjs';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const dataDir = resolve(process.env.MOM_LOCAL_DATA ?? join(root, 'data'));
const basePort = Number(process.env.MOM_LOCAL_PORT ?? 8080);
const ids = ['n1', 'n2', 'n3'];
const urls = ids.map((_, i) => `http://127.0.0.1:${basePort + i}`);

mkdirSync(dataDir, { recursive: true });
const secretsFile = join(dataDir, 'secrets.json');
if (!existsSync(secretsFile)) {
  const secrets = { clusterSecret: randomBytes(32).toString('base64url'), jwtSecret: randomBytes(48).toString('base64url') };
  writeFileSync(secretsFile, JSON.stringify(secrets, null, 2) + '\n', { mode: 0o600 });
}
const secrets = JSON.parse(readFileSync(secretsFile, 'utf8'));

// The nodes run the bundle of src/main.ts (scripts/build.mjs), rebuilt on every start (under a second).
const main = await buildMain();
const children = ids.map((id, i) => {
  const child = spawn(
    process.execPath,
    ['--enable-source-maps', main, '--node-id', id, '--listen', `127.0.0.1:${basePort + i}`, '--peers', ids.map((n, k) => `${n}=${urls[k]}`).join(','), '--data-dir', join(dataDir, id)],
    {
      cwd: root,
      // Secrets go by environment, not argv: argv is visible to every user in `ps`.
      env: { ...process.env, MOM_CLUSTER_SECRET: secrets.clusterSecret, MOM_JWT_SECRET: secrets.jwtSecret, MOM_LOG_LEVEL: process.env.MOM_LOG_LEVEL ?? 'warn' },
      stdio: ['ignore', 'inherit', 'inherit'],
    },
  );
  child.on('exit', (code, signal) => {
    if (!stopping) {
      console.error(`node ${id} exited (${signal ?? code}); stopping the others`);
      failed = true;
    } else if (code !== 0 && signal !== 'SIGTERM') {
      failed = true;
    }
    stopAll();
    if (children.every((c) => c.exitCode !== null || c.signalCode !== null)) process.exit(failed ? 1 : 0);
  });
  return child;
});

let stopping = false;
let failed = false;
function stopAll() {
  if (stopping) return;
  stopping = true;
  for (const c of children) if (c.exitCode === null) c.kill('SIGTERM');
  // Nodes hand leadership over and close within seconds; one that does not is killed.
  setTimeout(() => {
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  }, 20_000).unref();
}
process.on('SIGINT', stopAll);
process.on('SIGTERM', stopAll);

async function waitReady() {
  for (let i = 0; i < 300 && !stopping; i++) {
    const ok = await Promise.all(urls.map((u) => fetch(`${u}/readyz`).then((r) => r.ok, () => false)));
    if (ok.every(Boolean)) return true;
    await new Promise((r) => setTimeout(r, 200));
  }
  return false;
}

if (await waitReady()) {
  const u = urls[0];
  console.log(`mom: three nodes ready, data under ${dataDir}`);
  for (const [i, url] of urls.entries()) console.log(`  ${ids[i]}  ${url}`);
  console.log(`  Swagger UI:      ${u}/docs   (any node; OpenAPI at ${u}/openapi.json)`);
  console.log(`  cluster status:  curl ${u}/v1/cluster`);
  console.log('Try it (any node answers any request):');
  console.log(`  curl -s -XPOST ${u}/v1/auth/register -H 'content-type: application/json' -d '{"username":"alice","password":"correct-horse"}'`);
  console.log(`  TOKEN=$(curl -s -XPOST ${u}/v1/auth/login -H 'content-type: application/json' -d '{"username":"alice","password":"correct-horse"}' | sed -E 's/.*"accessToken":"([^"]+)".*/\\1/')`);
  console.log(`  curl -s -XPOST ${urls[1]}/v1/queues -H "authorization: Bearer $TOKEN" -H 'content-type: application/json' -d '{"name":"orders"}'`);
  console.log('  (README.md goes on: send, receive, ack.)');
  console.log('Ctrl-C stops all three.');
}
