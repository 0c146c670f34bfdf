// Configuration: flags over environment over file; every mistake stops the node with a clear message.
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { ConfigError, checkClusterIdentity, loadConfig } from '../../src/cluster/config.js';

const dir = mkdtempSync(join(tmpdir(), 'mom-config-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

const base = [
  '--node-id', 'n1',
  '--listen', '127.0.0.1:8080',
  '--peers', 'n1=http://127.0.0.1:8080,n2=http://127.0.0.1:8081,n3=http://127.0.0.1:8082',
  '--data-dir', join(dir, 'n1'),
  '--cluster-secret', 'c'.repeat(16),
  '--jwt-secret', 'j'.repeat(32),
];

t.test('flags give a complete configuration with defaults', async (t) => {
  const c = loadConfig(base, {});
  t.equal(c.nodeId, 'n1');
  t.equal(c.port, 8080);
  t.equal(c.host, '127.0.0.1');
  t.equal(c.partitions, 16);
  t.equal(c.advertisedUrl, 'http://127.0.0.1:8080', 'advertised URL defaults to this node’s peer URL');
  t.equal(c.peers.length, 3);
  t.equal(c.tls, null);
  t.strictSame(c.trustProxy, [], 'no load balancer is believed unless named');
  t.equal(c.metricsToken, null, 'metrics open, without queue names, unless a token is set');
  t.equal(c.snapshotEvery, 10_000);
  t.equal(c.keepBehindSnapshot, 1000);
  t.equal(c.logSegmentBytes, 64 * 2 ** 20, 'segments of 64 MiB');
  t.equal(loadConfig([...base, '--log-segment-bytes', '256KiB'], {}).logSegmentBytes, 256 * 1024);
  t.equal(loadConfig(base, { MOM_LOG_SEGMENT_BYTES: '1MB' }).logSegmentBytes, 1e6);
  t.strictSame(loadConfig(base, { MOM_TRUST_PROXY: '10.0.0.5, 10.1.0.0/16' }).trustProxy, ['10.0.0.5', '10.1.0.0/16']);
});

t.test('flags win over environment, environment over the file', async (t) => {
  const file = join(dir, 'c.json');
  writeFileSync(file, JSON.stringify({ partitions: 8, dataDir: '/from-file' }));
  const c = loadConfig([...base.filter((_, i) => i < 6), '--cluster-secret', 'c'.repeat(16), '--jwt-secret', 'j'.repeat(32), '--config', file], { MOM_PARTITIONS: '4' });
  t.equal(c.partitions, 4, 'environment over file');
  t.equal(c.dataDir, '/from-file', 'file fills what is missing');
  const d = loadConfig([...base, '--partitions', '2'], { MOM_PARTITIONS: '4' });
  t.equal(d.partitions, 2, 'flag over environment');
});

t.test('every mistake is refused with a message that names the setting', async (t) => {
  const cases: [string[], Record<string, string>, RegExp][] = [
    [base.slice(2), {}, /missing nodeId/],
    [[...base, '--bogus', 'x'], {}, /unknown option --bogus/],
    [[...base, '--partitions', '0'], {}, /partitions must be an integer from 1 to 1024/],
    [[...base, '--partitions', 'many'], {}, /partitions/],
    [base.map((a) => (a === 'c'.repeat(16) ? 'short' : a)), {}, /clusterSecret must be at least 16/],
    [base.map((a) => (a === 'j'.repeat(32) ? 'short' : a)), {}, /jwtSecret must be at least 32/],
    [base.map((a) => (a === 'n1' ? 'n9' : a)), {}, /not among the peers/],
    [base.map((a) => (a.startsWith('n1=') ? 'n1=http://a:1,n2=http://b:2' : a)), {}, /exactly three nodes/],
    [base.map((a) => (a.startsWith('n1=') ? 'n1=ftp://a:1,n2=http://b:2,n3=http://c:3' : a)), {}, /must be http or https/],
    [base.map((a) => (a === '127.0.0.1:8080' ? 'nowhere' : a)), {}, /must be host:port/],
    [[...base, '--tls-cert', '/x.pem'], {}, /TLS needs all three/],
    [[...base, '--trust-proxy', 'everyone'], {}, /trustProxy: 'everyone' is not an IP address/],
    [[...base, '--metrics-token', 'short'], {}, /metricsToken must be at least 16/],
    [[...base, '--snapshot-every', '5'], {}, /snapshotEvery must be an integer from 100/],
    [[...base, '--keep-behind-snapshot', '-1'], {}, /keepBehindSnapshot must be an integer from 0/],
    [[...base, '--log-segment-bytes', '4KiB'], {}, /logSegmentBytes must be from 64KiB to 2GiB/],
    [[...base, '--log-segment-bytes', '3GiB'], {}, /logSegmentBytes must be from 64KiB to 2GiB/],
    [[...base, '--log-segment-bytes', 'big'], {}, /logSegmentBytes must be a size/],
    [[...base, '--config', join(dir, 'missing.json')], {}, /cannot read the configuration file/],
  ];
  for (const [argv, env, re] of cases) {
    t.throws(() => loadConfig(argv, env), ConfigError);
    try {
      loadConfig(argv, env);
    } catch (err) {
      t.match((err as Error).message, re);
    }
  }
});

t.test('the partition count and members are fixed by the first start', async (t) => {
  const c = loadConfig(base, {});
  checkClusterIdentity(c);
  checkClusterIdentity(c);
  t.pass('the same configuration starts again');
  t.throws(() => checkClusterIdentity({ ...c, partitions: 8 }), /misroute/);
  t.throws(() => checkClusterIdentity({ ...c, nodeId: c.peers[1]!.id }), /holds the data of node n1/);
});

t.test('a folder that holds a log, states or images but no cluster.json is refused, never taken for a new one', async (t) => {
  for (const held of ['wal', 'state', 'snapshots']) {
    const c = loadConfig(base, {});
    const folder = join(dir, `no-identity-${held}`);
    mkdirSync(join(folder, held), { recursive: true });
    writeFileSync(join(folder, held, 'x'), 'x');
    // Another cluster's log, or an archive without its cluster.json: taken for a new folder, it was
    // kept under this cluster's entries where their positions matched (review of stop 62).
    t.throws(() => checkClusterIdentity({ ...c, dataDir: folder }), { name: 'ConfigError', message: new RegExp(`holds ${held}/ but no cluster\\.json`) }, held);
    t.notOk(existsSync(join(folder, 'cluster.json')), 'and writes no identity there');
  }
  const empty = join(dir, 'no-identity-empty');
  mkdirSync(join(empty, 'wal'), { recursive: true });
  const c = loadConfig(base, {});
  t.same(checkClusterIdentity({ ...c, dataDir: empty }), { catchingUp: true, tookPart: false, recordCluster: false }, 'an empty folder (or one with empty subfolders) is new');
});
