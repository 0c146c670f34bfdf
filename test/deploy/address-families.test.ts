// A node starts under the address families deploy/systemd/mom.service allows (RestrictAddressFamilies=),
// listening on every interface as deploy/systemd/mom.env.example has it: Fastify lists the host's
// interfaces (os.networkInterfaces, which reads them over netlink) when it listens on 0.0.0.0, and
// without AF_NETLINK the node died at its start with "uv_interface_addresses returned Unknown system
// error 97". systemd itself cannot run here, so restrict-families.c puts the same seccomp refusal
// (EAFNOSUPPORT for a socket of any other family) on a node process. It is built with the machine's C
// compiler `cc`; without one the tests are skipped (test/tools.ts).
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import { needTool } from '../tools.js';

const root = join(import.meta.dirname, '..', '..');
const unit = readFileSync(join(root, 'deploy', 'systemd', 'mom.service'), 'utf8');
/** The families a unit may name, by their numbers on Linux. */
const FAMILY = { AF_UNIX: 1, AF_INET: 2, AF_INET6: 10, AF_NETLINK: 16, AF_PACKET: 17 } as Record<string, number>;

/** The unit's RestrictAddressFamilies=, as numbers. */
function unitFamilies(): number[] {
  const names = /^RestrictAddressFamilies=(.*)$/m.exec(unit)?.[1]?.trim().split(/\s+/) ?? [];
  return names.map((name) => {
    const n = FAMILY[name];
    if (n === undefined) throw new Error(`the unit names ${name}, which this test does not know`);
    return n;
  });
}

/** restrict-families.c built into a temporary folder (gone when `t` ends), or null after a skip. */
function build(t: Test): string | null {
  const cc = needTool(t, 'cc');
  if (cc === null) return null;
  const dir = mkdtempSync(join(tmpdir(), 'mom-families-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const bin = join(dir, 'restrict-families');
  execFileSync(cc, ['-O2', '-Wall', '-Werror', '-o', bin, join(import.meta.dirname, 'restrict-families.c')]);
  return bin;
}

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

t.test('the unit names the families it allows, and the wrapper refuses the others', async (t) => {
  const bin = build(t);
  if (bin === null) return;
  const families = unitFamilies();
  t.ok(families.includes(FAMILY.AF_INET!) && families.includes(FAMILY.AF_INET6!), 'IPv4 and IPv6');
  const list = (fs: number[]) => fs.join(',');
  const interfaces = (fs: number[]) =>
    execFileSync(bin, [list(fs), process.execPath, '-e', "try { require('os').networkInterfaces(); console.log('listed') } catch { console.log('refused') }"], { encoding: 'utf8' }).trim();
  t.equal(interfaces(families.filter((f) => f !== FAMILY.AF_NETLINK)), 'refused', 'without AF_NETLINK the interfaces cannot be listed: the wrapper works');
  t.equal(interfaces([...families, FAMILY.AF_NETLINK!]), 'listed');
});

t.test('a node listening on 0.0.0.0 starts and answers under the unit’s address families', async (t) => {
  const bin = build(t);
  if (bin === null) return;
  const dataDir = mkdtempSync(join(tmpdir(), 'mom-families-data-'));
  t.teardown(() => rmSync(dataDir, { recursive: true, force: true }));
  const [port, p2, p3] = [await freePort(), await freePort(), await freePort()];
  const child = spawn(bin, [unitFamilies().join(','), process.execPath, '--import', 'tsx', join(root, 'src', 'main.ts')], {
    cwd: root,
    env: {
      ...process.env,
      MOM_NODE_ID: 'n1',
      MOM_LISTEN: `0.0.0.0:${port}`,
      MOM_PEERS: `n1=http://127.0.0.1:${port},n2=http://127.0.0.1:${p2},n3=http://127.0.0.1:${p3}`,
      MOM_CLUSTER_SECRET: 'c'.repeat(32),
      MOM_JWT_SECRET: 'j'.repeat(48),
      MOM_DATA_DIR: dataDir,
      MOM_LOG_LEVEL: 'warn',
    },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  let exit: number | string | null = null;
  const exited = new Promise<void>((resolve) => child.once('exit', (code, signal) => ((exit = code ?? signal), resolve())));
  t.teardown(async () => {
    if (exit === null) {
      child.kill('SIGKILL');
      await exited;
    }
  });
  // Until it answers /healthz, or exits (its peers never come: it is not ready, but it is alive).
  let status = 0;
  while (exit === null && status !== 200) {
    status = await fetch(`http://127.0.0.1:${port}/healthz`).then(
      (r) => r.status,
      () => 0,
    );
    if (status !== 200) await new Promise((resolve) => setTimeout(resolve, 100));
  }
  t.equal(exit, null, `the node is still running${exit === null ? '' : ` (it exited with ${String(exit)}: ${stderr.slice(-600)})`}`);
  t.equal(status, 200, 'and answers on the address it listens on');
});
