// deploy/docker: no Docker engine runs here, so the files are checked for what matters to an
// operator: a multi-stage build that copies only files that exist, a non-root user, a HEALTHCHECK on
// /healthz, the data folder on a volume, and a compose file of three nodes (each its own volume and
// node id, the secrets from the environment) behind nginx with the project's configuration.
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { parse } from 'yaml';
import { loadConfig } from '../../src/cluster/index.js';

const root = join(import.meta.dirname, '..', '..');
const dir = join(root, 'deploy', 'docker');
const dockerfile = readFileSync(join(dir, 'Dockerfile'), 'utf8');
/** Instructions, continuation lines joined, comments dropped. */
const instructions = dockerfile
  .replace(/\\\n\s*/g, ' ')
  .split('\n')
  .map((l) => l.trim())
  .filter((l) => l !== '' && !l.startsWith('#'))
  .map((l) => {
    const sp = l.indexOf(' ');
    return { op: l.slice(0, sp).toUpperCase(), arg: l.slice(sp + 1).trim() };
  });

t.test('the Dockerfile: two stages, only existing files copied, non-root, health check, volume', async (t) => {
  const froms = instructions.filter((i) => i.op === 'FROM');
  t.equal(froms.length, 2, 'a build stage and a run stage');
  t.match(froms[0]!.arg, /^node:20[-\w.]* AS build$/);
  t.match(froms[1]!.arg, /^node:20[-\w.]*$/);
  const runStage = instructions.slice(instructions.indexOf(froms[1]!));
  for (const c of instructions.filter((i) => i.op === 'COPY' && !i.arg.startsWith('--from'))) {
    const sources = c.arg.split(/\s+/).slice(0, -1);
    for (const s of sources) t.ok(existsSync(join(root, s)), `COPY ${s}: exists in the repository`);
  }
  t.ok(runStage.some((i) => i.op === 'COPY' && /^--from=build \/app\/dist /.test(i.arg)), 'the run stage takes the bundle from the build stage');
  const npmCi = instructions.findIndex((i) => i.op === 'RUN' && /npm ci/.test(i.arg));
  const copiedBefore = instructions.slice(0, npmCi).filter((i) => i.op === 'COPY').flatMap((i) => i.arg.split(/\s+/).slice(0, -1));
  t.ok(copiedBefore.includes('binding.gyp') && copiedBefore.includes('src/native'), 'the native addon\'s sources are there when npm ci builds it');
  t.ok(runStage.some((i) => i.op === 'COPY' && /^--from=build \/app\/build\/Release\/mom_native\.node /.test(i.arg)), 'the run stage takes the addon from the build stage');
  t.ok(instructions.some((i) => i.op === 'RUN' && /npm ci/.test(i.arg)) && instructions.some((i) => i.op === 'RUN' && /npm run build/.test(i.arg) && /npm prune --omit=dev/.test(i.arg)), 'built from the lock file, dev dependencies pruned');
  const users = runStage.filter((i) => i.op === 'USER');
  t.ok(users.length === 1 && users[0]!.arg !== 'root' && users[0]!.arg !== '0', `runs as ${users[0]?.arg}`);
  const health = runStage.find((i) => i.op === 'HEALTHCHECK');
  t.match(health?.arg, /\/healthz/);
  const dataDir = /MOM_DATA_DIR=(\S+)/.exec(runStage.filter((i) => i.op === 'ENV').map((i) => i.arg).join(' '))?.[1];
  t.equal(dataDir, '/var/lib/mom');
  t.match(runStage.find((i) => i.op === 'VOLUME')?.arg, /"\/var\/lib\/mom"/, 'the data folder is a volume');
  t.match(runStage.find((i) => i.op === 'ENTRYPOINT')?.arg, /dist\/main\.js/);
  t.notMatch(dockerfile, /MOM_(CLUSTER|JWT)_SECRET=/, 'no secret in the image');
  const built = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { scripts: Record<string, string> };
  t.ok(built.scripts.build !== undefined, 'npm run build exists');
});

t.test('the compose file: three nodes with their own volumes and ids, nginx with deploy/nginx/mom.conf', async (t) => {
  // merge: compose files use YAML merge keys (<<: *node)
  const compose = parse(readFileSync(join(dir, 'docker-compose.yml'), 'utf8'), { merge: true }) as {
    services: Record<string, { environment?: Record<string, string>; volumes?: string[]; build?: { context: string; dockerfile: string }; command?: string[]; stop_grace_period?: string }>;
    volumes: Record<string, unknown>;
  };
  const nodes = ['n1', 'n2', 'n3'];
  t.same(Object.keys(compose.services).sort(), ['lb', ...nodes]);
  const volumes = new Set<string>();
  for (const n of nodes) {
    const s = compose.services[n]!;
    t.equal(s.environment?.MOM_NODE_ID, n);
    t.equal(join(dir, s.build!.context, s.build!.dockerfile), join(dir, 'Dockerfile'), `${n} builds deploy/docker/Dockerfile from the repository root`);
    const vol = s.volumes![0]!.split(':');
    t.equal(vol[1], '/var/lib/mom');
    volumes.add(vol[0]!);
    t.ok(Object.hasOwn(compose.volumes, vol[0]!), `${vol[0]} is a named volume`);
    t.match(s.environment?.MOM_CLUSTER_SECRET, /^\$\{MOM_CLUSTER_SECRET:\?/, 'the secret comes from the environment, required');
    t.match(s.stop_grace_period, /^30s$/);
    // The node accepts these settings (secrets filled in).
    const env = { ...s.environment, MOM_CLUSTER_SECRET: 'c'.repeat(32), MOM_JWT_SECRET: 'j'.repeat(48), MOM_METRICS_TOKEN: '', MOM_LISTEN: '0.0.0.0:8080', MOM_DATA_DIR: '/var/lib/mom' };
    const cfg = loadConfig([], env);
    t.same(cfg.peers.map((p) => p.url), nodes.map((m) => `http://${m}:8080`), 'peers are the compose services');
  }
  t.equal(volumes.size, 3, 'each node its own volume');
  const lb = compose.services.lb!;
  const mounted = lb.volumes![0]!.split(':')[0]!;
  t.equal(join(dir, mounted), join(root, 'deploy', 'nginx', 'mom.conf'), 'nginx runs the project’s configuration');
  const conf = readFileSync(join(root, 'deploy', 'nginx', 'mom.conf'), 'utf8');
  // nginx resolves an upstream's name once, at its start: each node has a fixed address, and nginx
  // is given those, so that a node's container made anew is found again.
  const fixed = parse(readFileSync(join(dir, 'docker-compose.yml'), 'utf8'), { merge: true }) as { services: Record<string, { networks?: { default?: { ipv4_address?: string } } }> };
  for (const [i, n] of nodes.entries()) {
    const address = fixed.services[n]!.networks?.default?.ipv4_address;
    t.match(address, /^\d+\.\d+\.\d+\.\d+$/, `${n} has a fixed address`);
    t.ok(conf.includes(`127.0.0.1:${8080 + i}`), `mom.conf has the address the compose command rewrites for ${n}`);
    t.ok(lb.command!.join(' ').includes(`s/127.0.0.1:${8080 + i}/${address}:8080/`), `nginx is given ${n}'s address, not its name`);
  }
  // The nodes believe X-Forwarded-For from nginx's own address only, fixed on a subnet of the compose
  // file's: a range (172.16.0.0/12) took in Docker's gateway too, through which clients of
  // docker-proxy come (review of 2026-12-07).
  const raw = parse(readFileSync(join(dir, 'docker-compose.yml'), 'utf8'), { merge: true }) as {
    services: Record<string, { environment?: Record<string, string>; networks?: { default?: { ipv4_address?: string } } }>;
    networks?: { default?: { ipam?: { config?: { subnet?: string }[] } } };
  };
  const lbAddress = raw.services.lb!.networks?.default?.ipv4_address;
  t.match(lbAddress, /^\d+\.\d+\.\d+\.\d+$/, 'nginx has a fixed address');
  for (const n of nodes) t.equal(raw.services[n]!.environment?.MOM_TRUST_PROXY, lbAddress, `${n} trusts nginx's address alone`);
  const subnet = raw.networks?.default?.ipam?.config?.[0]?.subnet ?? '';
  t.match(subnet, /^\d+\.\d+\.\d+\.0\/24$/, 'the network has a subnet of its own');
  t.ok(lbAddress !== undefined && lbAddress.startsWith(subnet.replace(/0\/24$/, '')), `nginx's address ${lbAddress} is in it`);
  const example = readFileSync(join(dir, '.env.example'), 'utf8');
  t.match(example, /^MOM_CLUSTER_SECRET=$/m, 'the example names the secrets and holds none');
  t.match(example, /^MOM_JWT_SECRET=$/m);
});
