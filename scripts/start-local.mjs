#!/usr/bin/env node
// `npm start`: a local three-node cluster on 127.0.0.1:8080, 8081 and 8082, data under ./data
// (MOM_LOCAL_PORT and MOM_LOCAL_DATA move them; scripts/local-cluster.mjs). Secrets are generated on the
// first start and kept in ./data/secrets.json (never printed).
//
// A node that exits (kill -9 is the first thing to try) leaves the other two serving: two of three are
// a majority. The script says how it ended and how to start it again alone on its data
// (`npm run node -- n3`, scripts/node-local.mjs), where it catches up from the leaders. Ctrl-C, SIGTERM
// or SIGHUP stops the nodes still running here, each handing its leaderships over. The script exits
// once none is left: 0 when it was asked to stop and each of them stopped cleanly, 1 otherwise (all
// three died on their own, or one did not stop cleanly).
import { fetch } from 'undici';
import { buildMain, describeExit, fail, isRunning, localCluster, localSecrets, notStartedHint, onStopSignal, restartCommand, spawnNode, stopNode, takenAddresses } from './local-cluster.mjs';

const cluster = localCluster();
// Before anything is made or started: a node on a taken port would open its data, then fail.
const taken = await takenAddresses(cluster.nodes);
if (taken.length > 0) {
  fail(`${list(taken)} ${taken.length === 1 ? 'is' : 'are'} already in use (another npm start, or another program). Stop it, or move the cluster with MOM_LOCAL_PORT (the first of three ports).`);
}
const secrets = localSecrets(cluster);

/** Set by the first stop signal: from then on an exit is expected, and only its cleanliness counts. */
let stopping = false;
/** Whether some node asked to stop did not stop cleanly; decides the exit code. */
let unclean = false;
/** Whether the banner was printed: a node that exits before that most likely could not start. */
let ready = false;
/** id -> child process, filled once the bundle is built. */
const children = new Map();

onStopSignal(() => {
  stopping = true;
  const running = runningIds();
  if (running.length === 0) process.exit(0); // still building: nothing runs yet
  console.error(`\nmom: stopping ${list(running)} (each hands its leaderships over first)`);
  for (const c of children.values()) stopNode(c);
});

// The nodes run the bundle of src/main.ts (scripts/build.mjs), rebuilt on every start (under a second).
const main = await buildMain();
if (!stopping) {
  for (const { id } of cluster.nodes) {
    const child = spawnNode(cluster, id, main, secrets);
    children.set(id, child);
    child.on('exit', (code, signal) => onExit(id, code, signal));
  }
  console.log(`mom: starting ${list([...children].map(([id, c]) => `${id} (pid ${c.pid})`))}`);
}

function runningIds() {
  return [...children].filter(([, c]) => isRunning(c)).map(([id]) => id);
}

function onExit(id, code, signal) {
  const running = runningIds();
  if (stopping) {
    if (code !== 0 && signal !== 'SIGTERM') unclean = true; // SIGTERM itself: it had not set up its handler yet
  } else {
    reportExit(id, code, signal, running);
  }
  if (running.length > 0) return;
  if (!stopping) console.error('mom: no node is left running here; exiting. npm start starts all three again on the same data.');
  process.exit(stopping && !unclean ? 0 : 1);
}

function reportExit(id, code, signal, running) {
  const node = cluster.nodes.find((n) => n.id === id);
  if (!ready) {
    console.error(`mom: node ${id} ${describeExit(code, signal)} before the cluster was ready (${notStartedHint(node)} MOM_LOCAL_PORT moves all three).`);
    if (running.length === 0) return;
    // On data that ran before, two nodes elect leaders on their own; on new data the first election
    // waits for all three (ClusterNode.learnTerms: two new folders cannot tell a new cluster from two
    // lost disks). One node alone cannot serve.
    console.error(`     ${list(running)} keep running${running.length === 2 ? ': two of the three nodes are a majority and serve once they have leaders (on new data, once the third has started too)' : ', and a node alone cannot serve'}.`);
  } else {
    console.error(`mom: node ${id} ${describeExit(code, signal)}.`);
    if (running.length === 0) return;
    if (running.length === 2) console.error(`     ${list(running)} go on serving: two of the three nodes are a majority.`);
    else console.error(`     ${running[0]} is the last node running here, and a node alone cannot serve: every write needs two of the three.`);
  }
  console.error(`     To start ${id} again on its data (it catches up from the others), in another terminal:`);
  console.error(`       ${restartCommand(cluster, id)}`);
}

function list(ids) {
  return ids.length === 1 ? ids[0] : `${ids.slice(0, -1).join(', ')} and ${ids.at(-1)}`;
}

/** Until every node still running answers /readyz (there is a leader for every partition). */
async function waitReady() {
  for (;;) {
    const running = cluster.nodes.filter((n) => isRunning(children.get(n.id)));
    if (stopping || running.length === 0) return false;
    const ok = await Promise.all(running.map((n) => fetch(`${n.url}/readyz`).then((r) => r.ok, () => false)));
    if (ok.every(Boolean)) return true;
    await new Promise((r) => setTimeout(r, 200));
  }
}

if (await waitReady()) {
  ready = true;
  const u = cluster.nodes[0].url;
  const all = [...children.values()].every(isRunning);
  console.log(`mom: ${all ? 'three nodes' : 'the cluster is'} ready, data under ${cluster.dataDir}`);
  for (const n of cluster.nodes) {
    const c = children.get(n.id);
    console.log(`  ${n.id}  ${n.url}  ${isRunning(c) ? `pid ${c.pid}` : 'down'}`);
  }
  console.log(`  Swagger UI:      ${u}/docs   (any node; OpenAPI at ${u}/openapi.json)`);
  console.log(`  cluster status:  curl ${u}/v1/cluster`);
  console.log('Try it (any node answers any request):');
  console.log(`  curl -s -XPOST ${u}/v1/auth/register -H 'content-type: application/json' -d '{"username":"alice","password":"correct-horse"}'`);
  console.log(`  TOKEN=$(curl -s -XPOST ${u}/v1/auth/login -H 'content-type: application/json' -d '{"username":"alice","password":"correct-horse"}' | sed -E 's/.*"accessToken":"([^"]+)".*/\\1/')`);
  console.log(`  curl -s -XPOST ${cluster.nodes[1].url}/v1/queues -H "authorization: Bearer $TOKEN" -H 'content-type: application/json' -d '{"name":"orders"}'`);
  console.log('  (README.md goes on: send, receive, ack.)');
  if (all) console.log('Stop one node (kill -9 <pid>) and the other two go on serving. Ctrl-C stops all three.');
  else console.log('Ctrl-C stops the nodes running here.');
}
