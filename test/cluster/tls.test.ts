// The cluster over TLS: a CA made with openssl signs each node's certificate (for 127.0.0.1); nodes
// serve HTTPS to peers and verify each other's certificates; a peer whose certificate another CA
// signed cannot join. Without openssl the test is skipped (test/tools.ts).
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { MomServer as ClusterNode } from '../../src/server.js';
import { loadConfig } from '../../src/cluster/index.js';
import { POSITIONS_PATH } from '../../src/cluster/internal-routes.js';
import { submit } from '../partition/host-helpers.js';
import { needTool } from '../tools.js';
import { freePort, until } from './net-helpers.js';

const dir = mkdtempSync(join(tmpdir(), 'mom-tls-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

/** Runs openssl (the binary `bin`) quietly; throws if it fails. */
const openssl = (bin: string, ...args: string[]): void => {
  execFileSync(bin, args, { stdio: 'ignore' });
};

function makeCa(bin: string, name: string): { key: string; cert: string } {
  const key = join(dir, `${name}.key`);
  const cert = join(dir, `${name}.pem`);
  openssl(bin, 'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', cert, '-days', '2', '-subj', `/CN=${name}`);
  return { key, cert };
}

function makeCert(bin: string, ca: { key: string; cert: string }, name: string): { key: string; cert: string } {
  const key = join(dir, `${name}.key`);
  const csr = join(dir, `${name}.csr`);
  const cert = join(dir, `${name}.pem`);
  const ext = join(dir, `${name}.ext`);
  writeFileSync(ext, 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n');
  openssl(bin, 'req', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', csr, '-subj', `/CN=${name}`);
  openssl(bin, 'x509', '-req', '-in', csr, '-CA', ca.cert, '-CAkey', ca.key, '-CAcreateserial', '-out', cert, '-days', '2', '-extfile', ext);
  return { key, cert };
}



t.test('three nodes over HTTPS elect, replicate, and refuse a peer of another CA', async (t) => {
  const bin = needTool(t, 'openssl');
  if (bin === null) return;
  const ca = makeCa(bin, 'ca');
  const rogueCa = makeCa(bin, 'rogue-ca');
  const certs = [makeCert(bin, ca, 'n1'), makeCert(bin, ca, 'n2'), makeCert(bin, ca, 'n3')];
  const rogueCert = makeCert(bin, rogueCa, 'rogue');
  const ports = [await freePort(), await freePort(), await freePort()];
  const peers = ports.map((p, i) => `n${i + 1}=https://127.0.0.1:${p}`).join(',');
  const cfg = (i: number, cert = certs[i]!, folder = `n${i + 1}`) =>
    loadConfig(
      [
        '--node-id', `n${i + 1}`, '--listen', `127.0.0.1:${ports[i]}`, '--peers', peers, '--data-dir', join(dir, folder),
        '--cluster-secret', 's'.repeat(24), '--jwt-secret', 'j'.repeat(32), '--partitions', '2',
        '--tls-cert', cert.cert, '--tls-key', cert.key, '--tls-ca', ca.cert,
      ],
      {},
    );
  // The three form the cluster (a new cluster's first start waits for all three); then n3 is
  // replaced by a node with a certificate of another CA, on a folder of its own.
  const first = await Promise.all([0, 1, 2].map((i) => ClusterNode.start(cfg(i), { tickMs: 20 })));
  await until(() => first.every((n) => n.status().every((s) => s.leader !== null)), 'the three elect leaders over TLS');
  await first[2]!.close();
  const nodes = [first[0]!, first[1]!, await ClusterNode.start(cfg(2, rogueCert, 'rogue'), { tickMs: 20 })];
  t.teardown(() => Promise.all(nodes.map((n) => n.close())));
  const [a, b, rogue] = nodes as [ClusterNode, ClusterNode, ClusterNode];
  await until(() => [0, 1].every((p) => a.host.replica(p).isLeader() || b.host.replica(p).isLeader()), 'n1 and n2 lead both partitions');
  const r = await submit([a.host, b.host], 0, 'alice', { type: 'queue.create', name: 'q', visibilityTimeoutSeconds: 30, maxDeliveries: null, deadLetterQueue: null, delaySeconds: 0, retentionSeconds: 60 });
  t.ok(r.ok, 'a write commits over TLS');
  const leader = a.host.replica(0).isLeader() ? a : b;
  const follower = leader === a ? b : a;
  await until(() => follower.host.replica(0).state.applied().index >= leader.host.replica(0).state.applied().index, 'the other good node applied it');
  t.equal(rogue.host.replica(0).state.applied().index, 0, 'the node with a certificate of another CA got nothing');
  // A new node waits to catch up before it campaigns, so the rogue sends no Raft messages of its own:
  // ask a peer directly instead.
  const refused = await rogue.transport.call(leader.cfg.nodeId, POSITIONS_PATH, {}, { timeoutMs: 5_000 }).then(
    (r) => `answered ${r.status}`,
    (err: Error) => `refused (${err.message})`,
  );
  t.match(refused, /^(refused|answered 401)/, 'its requests are refused: its certificate is not the cluster CA’s');
  t.equal(rogue.host.replica(0).raw.status().hard.term <= leader.host.replica(0).raw.status().hard.term, true, 'it disturbed no one');
});
