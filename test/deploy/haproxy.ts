// deploy/haproxy/haproxy.cfg run for a test: Debian's haproxy (.ci/run installs it; a test without it
// is skipped: needTool in test/tools.ts) on loopback, the file's bind port and server addresses
// rewritten, nothing else.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { freePort } from '../cluster/net-helpers.js';
import { answersWithin } from '../chaos/nginx.js';

export const HAPROXY_CONF = join(import.meta.dirname, '..', '..', 'deploy', 'haproxy', 'haproxy.cfg');

/**
 * The deployed file for `upstreams` (host:port) and a bind on 127.0.0.1:`port`: both backends' three
 * server lines (`nN` in `mom`, `aN` in `mom-alive`) become one per upstream. `checks: false` drops
 * the health checks, so that a stand-in answering 503 still gets requests (the retry tests). Throws
 * when the file no longer has the lines this rewrites.
 */
export function deployedHaproxy(o: { port: number; upstreams: string[]; checks?: boolean }): string {
  let text = readFileSync(HAPROXY_CONF, 'utf8');
  if (!/^\s*bind :8000$/m.test(text)) throw new Error(`${HAPROXY_CONF}: expected 'bind :8000'`);
  for (const name of ['n', 'a']) {
    const servers = [...text.matchAll(new RegExp(`^(\\s*)server ${name}\\d 127\\.0\\.0\\.1:\\d+ check$`, 'gm'))];
    if (servers.length !== 3) throw new Error(`${HAPROXY_CONF}: expected 3 'server ${name}N 127.0.0.1:P check' lines`);
    const indent = servers[0]![1]!;
    const lines = o.upstreams.map((u, i) => `${indent}server ${name}${i + 1} ${u}${o.checks === false ? '' : ' check'}`).join('\n');
    text = text.slice(0, servers[0]!.index) + lines + text.slice(servers[2]!.index! + servers[2]![0].length);
  }
  return text.replace(/^(\s*)bind :8000$/m, `$1bind 127.0.0.1:${o.port}`);
}

export class Haproxy {
  private constructor(
    private readonly proc: ChildProcess,
    readonly url: string,
  ) {}

  /** Starts haproxy (the binary `bin`) in front of `upstreams`, its file in `dir`; resolves once it answers. */
  static async start(bin: string, dir: string, upstreams: string[], checks = true): Promise<Haproxy> {
    const port = await freePort();
    const conf = join(dir, 'haproxy.cfg');
    writeFileSync(conf, deployedHaproxy({ port, upstreams, checks }));
    execFileSync(bin, ['-c', '-q', '-f', conf], { stdio: ['ignore', 'ignore', 'pipe'] });
    const proc = spawn(bin, ['-db', '-f', conf], { stdio: 'ignore' });
    const lb = new Haproxy(proc, `http://127.0.0.1:${port}`);
    const kill = (): void => void proc.kill('SIGKILL');
    process.once('exit', kill);
    proc.once('exit', () => process.removeListener('exit', kill));
    if (await answersWithin(`${lb.url}/healthz`, proc, 10_000)) return lb;
    await lb.close();
    throw new Error(`haproxy did not answer on ${lb.url} within 10 s`);
  }

  async close(): Promise<void> {
    if (this.proc.exitCode !== null || this.proc.signalCode !== null) return;
    const exited = new Promise((r) => this.proc.once('exit', r));
    this.proc.kill('SIGTERM');
    await exited;
  }
}
