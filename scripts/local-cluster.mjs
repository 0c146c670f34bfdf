// The local cluster that `npm start` (scripts/start-local.mjs) runs and `npm run node -- <id>`
// (scripts/node-local.mjs) starts one node of: nodes n1, n2 and n3 on 127.0.0.1 at three consecutive
// ports from MOM_LOCAL_PORT (8080), each with its data folder under MOM_LOCAL_DATA (./data), the secrets
// generated once into <data>/secrets.json and given to the nodes by environment (argv is visible to
// every user in `ps`), running the bundle of src/main.ts (scripts/build.mjs).
//
// Both scripts start a node from here, so a node started alone gets exactly what `npm start` gives it.
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export { buildMain } from './build.mjs';

export const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
export const NODE_IDS = ['n1', 'n2', 'n3'];

/**
 * Node's own options for a node, before the bundle on its command line; deploy/systemd/mom.service
 * and deploy/docker/Dockerfile repeat them (test/deploy/node-options.test.ts), and the bench and the
 * chaos runs use them. `--initial-old-space-size=128` lets V8's old generation reach 128 MiB before
 * its first full collection: by default a node under load marked its heap almost all the time and
 * ran a mark-compact about every second, each pausing its event loop 7-15 ms. With it, sends cost
 * about a sixth less CPU and their p99 is about a third lower, for 20-40 MB more resident per node;
 * `--max-semi-space-size=8` (young generation semi-spaces of 8 MiB, not 16) takes 10-20 MB of that
 * back at the same CPU (bench/README.md, "Memory: V8's old generation against CPU"). NODE_OPTIONS
 * refuses the first option, so they go on the command line; a later `--initial-old-space-size=0
 * --max-semi-space-size=0` gives V8's defaults back.
 */
export const NODE_FLAGS = ['--enable-source-maps', '--initial-old-space-size=128', '--max-semi-space-size=8'];

/** Settings the cluster is read from; a restart command repeats the ones that were set. */
const LOCAL_VARS = ['MOM_LOCAL_PORT', 'MOM_LOCAL_DATA'];

/** Stops the script with a one-line message and exit code 2 (a usage or configuration error). */
export function fail(message) {
  console.error(`mom: ${message}`);
  process.exit(2);
}

/**
 * The cluster as MOM_LOCAL_PORT and MOM_LOCAL_DATA say: its data folder and its nodes (id, url, listen
 * address, data folder). A relative MOM_LOCAL_DATA is taken from the current folder, which under npm is
 * the project's.
 */
export function localCluster(env = process.env) {
  const basePort = Number(env.MOM_LOCAL_PORT ?? 8080);
  if (!Number.isInteger(basePort) || basePort < 1 || basePort > 65533) fail(`MOM_LOCAL_PORT must be a port from 1 to 65533 (the first of three), not "${env.MOM_LOCAL_PORT}"`);
  const dataDir = resolve(env.MOM_LOCAL_DATA ?? join(root, 'data'));
  const nodes = NODE_IDS.map((id, i) => ({
    id,
    listen: `127.0.0.1:${basePort + i}`,
    url: `http://127.0.0.1:${basePort + i}`,
    dataDir: join(dataDir, id),
  }));
  return { dataDir, nodes };
}

/**
 * The listen addresses of `nodes` that something already holds (another npm start, another program):
 * checked before a node is started, which would open its data folder first and fail only then, while
 * the readiness checks asked whoever holds the port.
 */
export async function takenAddresses(nodes) {
  const taken = [];
  for (const node of nodes) {
    const [host, port] = node.listen.split(':');
    const free = await new Promise((resolve) => {
      const probe = createServer();
      probe.once('error', () => resolve(false));
      probe.listen(Number(port), host, () => probe.close(() => resolve(true)));
    });
    if (!free) taken.push(node.listen);
  }
  return taken;
}

/**
 * Makes folder `dir` and its missing parents, one mkdir each: mkdirSync's recursive mode loops for
 * ever, at full CPU, where mkdir answers ENOENT under a folder that exists (MOM_LOCAL_DATA=/proc/x).
 */
function makeFolder(dir) {
  const missing = [];
  for (let d = dir; !existsSync(d) && dirname(d) !== d; d = dirname(d)) missing.unshift(d);
  for (const d of missing) {
    try {
      mkdirSync(d);
    } catch (err) {
      if (err.code !== 'EEXIST') fail(`cannot make the data folder ${dir}: ${err.message}`);
    }
  }
}

/** The cluster's secrets, generated into <data>/secrets.json (mode 600) by whichever script starts first. */
export function localSecrets(cluster) {
  makeFolder(cluster.dataDir);
  const file = join(cluster.dataDir, 'secrets.json');
  const fresh = { clusterSecret: randomBytes(32).toString('base64url'), jwtSecret: randomBytes(48).toString('base64url') };
  try {
    // 'wx': never replaces the secrets of an existing cluster, even when two scripts start at once.
    writeFileSync(file, JSON.stringify(fresh, null, 2) + '\n', { mode: 0o600, flag: 'wx' });
  } catch (err) {
    if (err.code !== 'EEXIST') throw err;
  }
  return JSON.parse(readFileSync(file, 'utf8'));
}

/**
 * Starts node `id` of the cluster on the bundle `main`, its output on ours. The node gets its own
 * process group: Ctrl-C in a terminal signals the whole foreground group (and npm forwards the signal
 * once more), while a node that gets a second signal stops at once instead of handing leadership over.
 * So the script alone hears the signals and asks each node to stop exactly once (`stopNode`). A node
 * still running when the script exits for any other reason is killed.
 */
export function spawnNode(cluster, id, main, secrets) {
  const node = cluster.nodes.find((n) => n.id === id);
  const peers = cluster.nodes.map((n) => `${n.id}=${n.url}`).join(',');
  const child = spawn(process.execPath, [...NODE_FLAGS, main, '--node-id', id, '--listen', node.listen, '--peers', peers, '--data-dir', node.dataDir], {
    cwd: root,
    env: { ...process.env, MOM_CLUSTER_SECRET: secrets.clusterSecret, MOM_JWT_SECRET: secrets.jwtSecret, MOM_LOG_LEVEL: process.env.MOM_LOG_LEVEL ?? 'warn' },
    stdio: ['ignore', 'inherit', 'inherit'],
    detached: true,
  });
  process.once('exit', () => {
    if (isRunning(child)) child.kill('SIGKILL');
  });
  return child;
}

export function isRunning(child) {
  return child.exitCode === null && child.signalCode === null;
}

/**
 * SIGTERM: the node hands its leaderships over, finishes what is in flight and exits 0 within seconds;
 * one that has not exited after 20 s is killed.
 */
export function stopNode(child) {
  if (!isRunning(child)) return;
  child.kill('SIGTERM');
  const timer = setTimeout(() => {
    if (isRunning(child)) child.kill('SIGKILL');
  }, 20_000);
  timer.unref();
  child.once('exit', () => clearTimeout(timer));
}

/** Calls `stop` on the first SIGINT, SIGTERM or SIGHUP; the same signal delivered again is ignored. */
export function onStopSignal(stop) {
  let stopping = false;
  const handle = (signal) => {
    if (stopping) return;
    stopping = true;
    stop(signal);
  };
  for (const s of ['SIGINT', 'SIGTERM', 'SIGHUP']) process.on(s, handle);
}

/** "exited with code 1", "was killed by SIGKILL". */
export function describeExit(code, signal) {
  return signal === null ? `exited with code ${code}` : `was killed by ${signal}`;
}

/** Why a node that exits before it was ever ready most likely did (its port taken, its data another cluster's). */
export function notStartedHint(node) {
  return `its error, if any, is above; is ${node.listen} taken?`;
}

/** The command that starts node `id` again alone, with the MOM_LOCAL_* settings this script was given. */
export function restartCommand(cluster, id, env = process.env) {
  const vars = LOCAL_VARS.filter((v) => env[v] !== undefined).map((v) => `${v}=${shellWord(v === 'MOM_LOCAL_DATA' ? cluster.dataDir : env[v])} `);
  return `${vars.join('')}npm run node -- ${id}`;
}

function shellWord(s) {
  return /^[\w@%+=:,./-]+$/.test(s) ? s : `'${s.replaceAll("'", "'\\''")}'`;
}
