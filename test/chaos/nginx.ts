// The load-balancer variant of the chaos runs: nginx (Debian's package) in front of the three nodes,
// as an operator would put it, and the workload talking only to it. Retries by nginx follow the API's
// rules: a request is passed to another node after a connection error, a timeout or a 502/503/504 only
// when it is safe to repeat: a GET, or a write that carries an Idempotency-Key. Other writes are passed
// on only when they never reached a node (nginx's default for non-idempotent methods).
//
// Tests find nginx with needTool (test/tools.ts) and are skipped without it; only the chaos runner
// (`npm run chaos -- --via nginx`, run by hand) installs it when it is missing: ensureNginx.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { request } from 'undici';
import { freePort } from '../cluster/net-helpers.js';
import { TOOLS, findTool } from '../tools.js';
import { sleep } from './cluster.js';

/**
 * The nginx binary for the chaos runner, installed from Debian's packages (apt-get, as root) when
 * there is none. Never for a test: a test skips instead of installing (and waiting for) packages.
 */
export function ensureNginx(log: (s: string) => void = () => {}): string {
  const found = findTool('nginx');
  if (found !== null) return found;
  if (process.getuid?.() !== 0) throw new Error(`nginx is not installed and this is not root: ${TOOLS.nginx}, then run again`);
  log('nginx missing: apt-get install -y nginx-light');
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  try {
    execFileSync('apt-get', ['install', '-y', '--no-install-recommends', 'nginx-light'], { env, stdio: 'ignore' });
  } catch {
    execFileSync('apt-get', ['update'], { env, stdio: 'ignore' });
    execFileSync('apt-get', ['install', '-y', '--no-install-recommends', 'nginx-light'], { env, stdio: 'ignore' });
  }
  const now = findTool('nginx');
  if (now === null) throw new Error('apt-get installed nginx-light, but no nginx binary was found');
  return now;
}

export interface NginxOptions {
  /** Where nginx keeps its pid, logs and temporary files. */
  dir: string;
  port: number;
  /** host:port of each node. */
  upstreams: string[];
  /** Failures after which a node is left out for 2 s (0: never; tests of the retry rules). Default 1. */
  maxFails?: number;
}

/** The project's nginx configuration (an http-context file), as operators deploy it. */
export const DEPLOY_CONF = join(import.meta.dirname, '..', '..', 'deploy', 'nginx', 'mom.conf');

/**
 * deploy/nginx/mom.conf for a balancer on 127.0.0.1:`port` in front of `upstreams`: its listen line,
 * upstream servers and max_fails rewritten, nothing else. Throws if the file no longer has the lines
 * this rewrites, so the tests never run a configuration other than the deployed one.
 */
export function deployedSite(o: Pick<NginxOptions, 'port' | 'upstreams' | 'maxFails'>): string {
  const text = readFileSync(DEPLOY_CONF, 'utf8');
  const servers = [...text.matchAll(/^(\s*)server 127\.0\.0\.1:\d+ max_fails=\d+ (fail_timeout=\S+;)$/gm)];
  const listens = [...text.matchAll(/^\s*listen 8000;$/gm)];
  if (servers.length !== 3 || listens.length !== 1) throw new Error(`${DEPLOY_CONF}: expected 3 upstream server lines and one 'listen 8000;'`);
  const indent = servers[0]![1]!;
  const tail = servers[0]![2]!;
  const upstream = o.upstreams.map((u) => `${indent}server ${u} max_fails=${o.maxFails ?? 1} ${tail}`).join('\n');
  let out = text.slice(0, servers[0]!.index) + upstream + text.slice(servers[2]!.index! + servers[2]![0].length);
  out = out.replace(/^(\s*)listen 8000;$/m, `$1listen 127.0.0.1:${o.port};`);
  return out;
}

/** nginx.conf for a balancer on 127.0.0.1:`port` in front of `upstreams`: the deployed site, wrapped. */
export function nginxConf(o: NginxOptions): string {
  const { dir } = o;
  const asRoot = process.getuid?.() === 0;
  return `# generated for a test or a chaos run (test/chaos/nginx.ts): deploy/nginx/mom.conf in a main file
${asRoot ? 'user root;\n' : ''}worker_processes 1;
daemon off;
pid ${join(dir, 'nginx.pid')};
error_log ${join(dir, 'nginx-error.log')} warn;
events { worker_connections 2048; }
http {
  access_log ${join(dir, 'nginx-access.log')};
  client_body_temp_path ${join(dir, 'tmp', 'body')};
  proxy_temp_path ${join(dir, 'tmp', 'proxy')};
  fastcgi_temp_path ${join(dir, 'tmp', 'fastcgi')};
  uwsgi_temp_path ${join(dir, 'tmp', 'uwsgi')};
  scgi_temp_path ${join(dir, 'tmp', 'scgi')};
${deployedSite(o)}
}
`;
}

/** Whether `url` answers (any status) within `ms`; false at once if `proc`, the balancer, exits. */
export async function answersWithin(url: string, proc: ChildProcess, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    try {
      const res = await request(url, { signal: AbortSignal.timeout(1_000) });
      await res.body.dump();
      return true;
    } catch {
      if (proc.exitCode !== null) return false;
      await sleep(100);
    }
  }
  return false;
}

export class LoadBalancer {
  private constructor(
    private readonly proc: ChildProcess,
    readonly url: string,
    readonly dir: string,
  ) {}

  /** Starts nginx (the binary `bin`) in front of `upstreams` (host:port), its files in `dir`; resolves once it answers. */
  static async start(bin: string, dir: string, upstreams: string[], extra: Pick<NginxOptions, 'maxFails'> = {}): Promise<LoadBalancer> {
    for (const d of ['body', 'proxy', 'fastcgi', 'uwsgi', 'scgi']) mkdirSync(join(dir, 'tmp', d), { recursive: true });
    const port = await freePort();
    const conf = join(dir, 'nginx.conf');
    writeFileSync(conf, nginxConf({ dir, port, upstreams, ...extra }));
    execFileSync(bin, ['-t', '-q', '-p', dir, '-c', conf], { stdio: ['ignore', 'ignore', 'pipe'] });
    // its own process group: the master and its worker are killed together
    const proc = spawn(bin, ['-p', dir, '-c', conf], { stdio: 'ignore', detached: true });
    const lb = new LoadBalancer(proc, `http://127.0.0.1:${port}`, dir);
    const killGroup = (): void => lb.killNow();
    process.once('exit', killGroup);
    proc.once('exit', () => process.removeListener('exit', killGroup));
    if (await answersWithin(`${lb.url}/healthz`, proc, 10_000)) return lb;
    await lb.close();
    throw new Error(`nginx did not answer on ${lb.url} within 10 s; see ${join(dir, 'nginx-error.log')}`);
  }

  /** SIGKILL of nginx's process group (master and worker), synchronously (exit hooks). */
  killNow(): void {
    try {
      if (this.proc.pid !== undefined) process.kill(-this.proc.pid, 'SIGKILL');
    } catch {
      // gone already
    }
  }

  async close(): Promise<void> {
    if (this.proc.exitCode !== null || this.proc.signalCode !== null) return;
    const exited = new Promise((r) => this.proc.once('exit', r));
    // TERM: fast shutdown; nginx's master ends its worker and exits
    this.proc.kill('SIGTERM');
    const quit = await Promise.race([exited.then(() => true), sleep(5_000).then(() => false)]);
    if (!quit) {
      this.killNow();
      await exited;
    }
  }
}
