#!/usr/bin/env node
// `npm run node -- n3`: one node of the `npm start` cluster, alone, in the foreground: the port, peers,
// secrets and data folder npm start gives it (MOM_LOCAL_PORT and MOM_LOCAL_DATA as there;
// scripts/local-cluster.mjs). For a node that exited while npm start runs the other two: started again
// on its data, it catches up from the leaders. Ctrl-C (or SIGTERM) stops it gracefully; the script
// exits with the node's exit code.
import { connect } from 'node:net';
import { fetch } from 'undici';
import { NODE_IDS, buildMain, describeExit, fail, isRunning, localCluster, localSecrets, notStartedHint, onStopSignal, spawnNode, stopNode } from './local-cluster.mjs';

const id = process.argv[2];
if (process.argv.length !== 3 || !NODE_IDS.includes(id)) fail(`usage: npm run node -- <${NODE_IDS.join('|')}>   (one node of the npm start cluster, on its data)`);

const cluster = localCluster();
const node = cluster.nodes.find((n) => n.id === id);
// Else a node still running would answer our readiness checks, and this one stop on its locked data.
if (await answers(node)) fail(`${node.listen} already answers: is ${id} still running (under npm start, or another npm run node)? Stop it first.`);
const secrets = localSecrets(cluster);
let child = null;
let stopping = false;
/** Whether /readyz answered 200 once: a node that exits before that most likely could not start. */
let ready = false;
onStopSignal(() => {
  stopping = true;
  if (child === null) process.exit(0); // still building
  console.error(`\nmom: stopping ${id} (it hands its leaderships over first)`);
  stopNode(child);
});

const main = await buildMain();
if (!stopping) {
  child = spawnNode(cluster, id, main, secrets);
  console.log(`mom: ${id} on ${node.url} (pid ${child.pid}), data in ${node.dataDir}; Ctrl-C stops it.`);
  child.on('exit', (code, signal) => {
    if (stopping && code === 0) process.exit(0);
    console.error(`mom: node ${id} ${describeExit(code, signal)}${ready ? '' : ` before it was ready (${notStartedHint(node)})`}.`);
    process.exit(code ?? 1);
  });
  await waitReady();
}

/** Says when the node knows a leader for every partition: it has found the others and catches up. */
async function waitReady() {
  while (!stopping && isRunning(child)) {
    if (await fetch(`${node.url}/readyz`).then((r) => r.ok, () => false)) {
      ready = true;
      console.log(`mom: ${id} is ready`);
      return;
    }
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** Whether something accepts connections on the node's address. */
function answers(node) {
  const [host, port] = node.listen.split(':');
  return new Promise((resolve) => {
    const socket = connect(Number(port), host);
    const settle = (yes) => {
      socket.destroy();
      resolve(yes);
    };
    socket.once('connect', () => settle(true));
    socket.once('error', () => settle(false));
  });
}
