// deploy/systemd/mom.service passes `systemd-analyze verify` without a warning (an unknown key or a
// bad value is only warned about, so any output fails the test), runs as an unprivileged user, stops
// the way the node expects, and deploy/systemd/mom.env.example is a configuration the node accepts.
// systemd-analyze comes with Debian's systemd package (.ci/run installs it); without it the test that
// runs it is skipped (test/tools.ts).
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { loadConfig } from '../../src/cluster/index.js';
import { needTool } from '../tools.js';

const dir = join(import.meta.dirname, '..', '..', 'deploy', 'systemd');
const unit = readFileSync(join(dir, 'mom.service'), 'utf8');

/** systemd-analyze (`bin`) verify's complaints about `text` as a unit file (ExecStart's node made to exist here). */
function verify(bin: string, text: string): string {
  const tmp = mkdtempSync(join(tmpdir(), 'mom-systemd-'));
  try {
    const file = join(tmp, 'mom.service');
    writeFileSync(file, existsSync('/usr/bin/node') ? text : text.replace('/usr/bin/node', process.execPath));
    const r = spawnSync(bin, ['verify', file], { encoding: 'utf8' });
    if (r.error !== undefined) throw r.error;
    return `${r.stdout}${r.stderr}`.trim();
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}

t.test('systemd-analyze verify finds nothing to say about the unit', async (t) => {
  const bin = needTool(t, 'systemd-analyze');
  if (bin === null) return;
  t.equal(verify(bin, unit), '');
  t.match(verify(bin, unit.replace('TimeoutStopSec=30', 'TimeoutStopSec=thirty').replace('Restart=on-failure', 'Restrt=on-failure')), /Restrt|thirty/, 'a typo or a bad value is reported');
});

t.test('the unit runs the bundle unprivileged, with its secrets from a file, and stops as the node expects', async (t) => {
  const keys = new Map<string, string>();
  for (const line of unit.split('\n')) {
    const m = /^([A-Za-z]+)=(.*)$/.exec(line);
    if (m !== null) keys.set(m[1]!, m[2]!);
  }
  t.match(keys.get('ExecStart'), /\/dist\/main\.js$/);
  t.ok(keys.get('User') !== undefined && keys.get('User') !== 'root');
  t.equal(keys.get('KillSignal'), 'SIGTERM', 'SIGTERM hands leadership over');
  t.ok(Number(keys.get('TimeoutStopSec')) > 15, 'longer than the node’s own 15 s shutdown deadline');
  t.equal(keys.get('RestartPreventExitStatus'), '2', 'a bad configuration (exit 2) is not restarted in a loop');
  t.match(keys.get('EnvironmentFile'), /^\/etc\/mom\/mom\.env$/);
  t.notMatch(unit, /MOM_(CLUSTER|JWT)_SECRET=/, 'no secret in the unit');
});

t.test('the example environment file is a configuration the node accepts, once its secrets are filled in', async (t) => {
  const env: Record<string, string> = {};
  for (const line of readFileSync(join(dir, 'mom.env.example'), 'utf8').split('\n')) {
    const m = /^(MOM_[A-Z_]+)=(.*)$/.exec(line);
    if (m !== null) env[m[1]!] = m[2]!;
  }
  t.equal(env.MOM_CLUSTER_SECRET, '', 'the example carries no secret');
  t.throws(() => loadConfig([], env), /clusterSecret/, 'as shipped, the node refuses to start without its secrets');
  const cfg = loadConfig([], { ...env, MOM_CLUSTER_SECRET: 'c'.repeat(32), MOM_JWT_SECRET: 'j'.repeat(48), MOM_DATA_DIR: '/var/lib/mom' });
  t.equal(cfg.peers.length, 3);
  t.equal(cfg.nodeId, 'n1');
});
