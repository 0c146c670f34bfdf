// Real node processes on loopback, started as an operator would (src/main.ts): the leader's process
// killed with SIGKILL is replaced by an election among the other two; restarted, it rejoins and takes
// its share of leaders back; a SIGTERM hands leadership over and exits cleanly; a node without its
// native addon starts and says why; bad configuration
// stops a node with a clear message and exit code 2; a setup error with one line, and a status systemd restarts.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { request } from 'undici';
import { freePort } from './net-helpers.js';

const root = mkdtempSync(join(tmpdir(), 'mom-procs-'));
t.teardown(() => rmSync(root, { recursive: true, force: true }));
const MAIN = join(import.meta.dirname, '..', '..', 'src', 'main.ts');
const UNIT = join(import.meta.dirname, '..', '..', 'deploy', 'systemd', 'mom.service');


interface PartitionView {
  partition: number;
  role: string;
  leader: string | null;
  term: number;
  appliedIndex: number;
}

async function cluster(port: number): Promise<PartitionView[] | null> {
  try {
    const r = await request(`http://127.0.0.1:${port}/v1/cluster`);
    if (r.statusCode !== 200) {
      await r.body.dump();
      return null;
    }
    return ((await r.body.json()) as { partitions: PartitionView[] }).partitions;
  } catch {
    return null;
  }
}

/** What each node says of its partitions (or that it does not answer), for a failure's message. */
let describeNodes = async (): Promise<string> => '';

async function until(pred: () => Promise<boolean>, what: string): Promise<void> {
  for (let i = 0; i < 600; i++) {
    if (await pred()) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`gave up waiting for: ${what}\n${await describeNodes()}`);
}

t.test('SIGKILL of a leader, restart, and a graceful SIGTERM', async (t) => {
  const ports = [await freePort(), await freePort(), await freePort()];
  const peers = ports.map((p, i) => `n${i + 1}=http://127.0.0.1:${p}`).join(',');
  const env = { ...process.env, MOM_CLUSTER_SECRET: 'c'.repeat(32), MOM_JWT_SECRET: 'j'.repeat(48), MOM_LOG_LEVEL: 'error', MOM_PARTITIONS: '3' };
  const procs: (ChildProcess | null)[] = [null, null, null];
  const start = (i: number): ChildProcess => {
    const child = spawn(process.execPath, ['--import', 'tsx', MAIN, '--node-id', `n${i + 1}`, '--listen', `127.0.0.1:${ports[i]}`, '--peers', peers, '--data-dir', join(root, `n${i + 1}`)], {
      env,
      stdio: ['ignore', 'ignore', 'inherit'],
    });
    procs[i] = child;
    return child;
  };
  t.teardown(() => {
    for (const p of procs) if (p !== null && p.exitCode === null) p.kill('SIGKILL');
  });
  describeNodes = async () => {
    const lines = await Promise.all(
      [0, 1, 2].map(async (i) => {
        const p = procs[i] ?? null;
        const state = p === null ? 'not started' : p.exitCode !== null || p.signalCode !== null ? `exited (${p.exitCode ?? p.signalCode})` : `pid ${p.pid}`;
        const v = await cluster(ports[i]!);
        const parts = v === null ? 'no answer from /v1/cluster' : v.map((x) => `p${x.partition} ${x.role} leader=${x.leader} term=${x.term} applied=${x.appliedIndex}`).join('; ');
        return `  n${i + 1} on port ${ports[i]}: ${state}; ${parts}`;
      }),
    );
    return lines.join('\n');
  };
  [0, 1, 2].forEach(start);
  const allLed = async (idx: number[]): Promise<boolean> => {
    for (const i of idx) {
      const v = await cluster(ports[i]!);
      if (v === null || v.some((p) => p.leader === null)) return false;
    }
    return true;
  };
  await until(() => allLed([0, 1, 2]), 'every node knows a leader for every partition');

  // Read again until it names one: a leader handed over to its preferred node meanwhile leaves a moment
  // with none (the balancer), and the check above may have seen the one before.
  let before: NonNullable<Awaited<ReturnType<typeof cluster>>> = [];
  await until(async () => {
    before = (await cluster(ports[0]!)) ?? [];
    return (before[0]?.leader ?? null) !== null;
  }, 'node 1 names the leader of partition 0');
  const victimId = before[0]!.leader!;
  const victim = Number(victimId.slice(1)) - 1;
  const exited = new Promise((r) => procs[victim]!.once('exit', r));
  procs[victim]!.kill('SIGKILL');
  await exited;
  const others = [0, 1, 2].filter((i) => i !== victim);
  await until(async () => {
    const v = await cluster(ports[others[0]!]!);
    return v !== null && v[0]!.leader !== null && v[0]!.leader !== victimId && v[0]!.term > before[0]!.term;
  }, 'a new leader of partition 0 in a later term');
  t.pass(`after SIGKILL of ${victimId}, partition 0 has a new leader`);

  start(victim);
  // Partition p prefers node p mod 3: the restarted node leads its partition again once caught up.
  await until(async () => {
    const v = await cluster(ports[victim]!);
    return v !== null && v[victim]!.role === 'leader';
  }, 'the restarted node takes its partition back');
  t.pass(`${victimId} restarted and leads partition ${victim} again`);

  // A planned stop: SIGTERM hands leadership over, and the process exits 0.
  const leaving = others[0]!;
  const code = await new Promise<number | null>((resolve) => {
    procs[leaving]!.once('exit', (c) => resolve(c));
    procs[leaving]!.kill('SIGTERM');
  });
  t.equal(code, 0, 'exit code 0 after SIGTERM');
  const staying = [0, 1, 2].filter((i) => i !== leaving);
  await until(async () => {
    const v = await cluster(ports[staying[0]!]!);
    return v !== null && v.every((p) => p.leader !== null && p.leader !== `n${leaving + 1}`);
  }, 'the two remaining nodes lead every partition');
  t.pass('the remaining two lead every partition');
});

t.test('a node whose native addon is not loaded starts, and says why in its log', async (t) => {
  const port = await freePort();
  const peers = `n1=http://127.0.0.1:${port},n2=http://127.0.0.1:${await freePort()},n3=http://127.0.0.1:${await freePort()}`;
  const env = { ...process.env, MOM_CLUSTER_SECRET: 'c'.repeat(32), MOM_JWT_SECRET: 'j'.repeat(48), MOM_LOG_LEVEL: 'warn', MOM_PARTITIONS: '1', MOM_NO_NATIVE: '1' };
  const child = spawn(process.execPath, ['--import', 'tsx', MAIN, '--node-id', 'n1', '--listen', `127.0.0.1:${port}`, '--peers', peers, '--data-dir', join(root, 'no-addon')], { env, stdio: ['ignore', 'pipe', 'inherit'] });
  t.teardown(() => {
    if (child.exitCode === null) child.kill('SIGKILL');
  });
  const line = await new Promise<string>((resolve, reject) => {
    let out = '';
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      const found = out.split('\n').find((l) => l.includes('native addon'));
      if (found !== undefined) resolve(found);
    });
    child.once('exit', (c) => reject(new Error(`the node exited (${c}) before it logged about the addon: ${out}`)));
  });
  const entry = JSON.parse(line) as { level: number; why: string; msg: string };
  t.equal(entry.level, 40, 'a warning');
  t.equal(entry.why, 'MOM_NO_NATIVE=1', 'with the reason');
  t.match(entry.msg, /npm rebuild/, 'and what builds it');
  const health = await request(`http://127.0.0.1:${port}/healthz`);
  await health.body.dump();
  t.equal(health.statusCode, 200, 'the node serves');
});

t.test('bad configuration stops the node with a message and exit code 2', async (t) => {
  const r = await new Promise<{ code: number | null; err: string }>((resolve) => {
    const child = spawn(process.execPath, ['--import', 'tsx', MAIN, '--node-id', 'n1', '--listen', 'nowhere'], { env: { ...process.env, MOM_CLUSTER_SECRET: '', MOM_JWT_SECRET: '' } });
    let err = '';
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    child.on('exit', (code) => resolve({ code, err }));
  });
  t.equal(r.code, 2);
  t.match(r.err, /bad configuration: missing peers/);
});

// What an operator's mistake or the machine's state looks like: a port another program holds, a data
// folder another process holds, a full disk. Each is one line that says what to fix, not a stack
// trace (which reads as a bug of the node's), and an exit status systemd restarts: 2, a bad
// configuration, is one it never restarts (deploy/systemd/mom.service), and each of these is mended
// outside the node, which must then come back by itself.
t.test('a port in use, a data folder in use or a full disk stops the node with one line, and systemd starts it again', async (t) => {
  const run = (args: string[]): Promise<{ code: number | null; err: string }> =>
    new Promise((resolve) => {
      const child = spawn(process.execPath, ['--import', 'tsx', MAIN, ...args], { env: { ...process.env, MOM_CLUSTER_SECRET: 'c'.repeat(32), MOM_JWT_SECRET: 'j'.repeat(48), MOM_LOG_LEVEL: 'error' } });
      let err = '';
      child.stderr.on('data', (d: Buffer) => (err += d.toString()));
      // A node that hangs instead of exiting (it did on a data folder under /proc) fails here, not at tap's timeout.
      const hung = setTimeout(() => child.kill('SIGKILL'), 60_000);
      child.on('exit', (code) => {
        clearTimeout(hung);
        resolve({ code, err });
      });
    });
  const holder = createServer();
  await new Promise<void>((resolve) => holder.listen(0, '127.0.0.1', resolve));
  t.teardown(() => new Promise((resolve) => holder.close(resolve)));
  const port = (holder.address() as { port: number }).port;
  const peers = `n1=http://127.0.0.1:${port},n2=http://127.0.0.1:1,n3=http://127.0.0.1:2`;
  const args = (dir: string, listen: string): string[] => ['--node-id', 'n1', '--listen', listen, '--peers', peers, '--data-dir', join(root, dir)];

  const prevented = (/^RestartPreventExitStatus=(.*)$/m.exec(readFileSync(UNIT, 'utf8'))?.[1] ?? '').split(/\s+/).filter(Boolean).map(Number);
  t.ok(prevented.includes(2), 'the unit does not restart a bad configuration');
  const restarted = (what: string, code: number | null): void => {
    t.ok(code !== null && code !== 0 && !prevented.includes(code), `exit status ${code} for ${what}: one systemd restarts`);
  };

  const taken = await run(args('port-taken', `127.0.0.1:${port}`));
  restarted('a port in use', taken.code);
  t.match(taken.err, `mom: cannot start: listen EADDRINUSE: address already in use 127.0.0.1:${port}`);
  t.notMatch(taken.err, /\n\s+at /, 'no stack trace');

  // A LOCK naming a live process (this test's): another node holds the folder.
  mkdirSync(join(root, 'held', 'wal'), { recursive: true });
  writeFileSync(join(root, 'held', 'wal', 'LOCK'), `${process.pid}\n`);
  const held = await run(args('held', '127.0.0.1:0'));
  restarted('a folder in use', held.code);
  t.match(held.err, `mom: cannot start: the write-ahead log in ${join(root, 'held', 'wal')} is held by process ${process.pid}`);
  t.notMatch(held.err, /\n\s+at /, 'no stack trace');

  // The folder's first write (cluster.json, through cluster.json.tmp) lands on /dev/full: ENOSPC.
  mkdirSync(join(root, 'full'), { recursive: true });
  symlinkSync('/dev/full', join(root, 'full', 'cluster.json.tmp'));
  const full = await run(args('full', '127.0.0.1:0'));
  restarted('a full disk', full.code);
  t.match(full.err, /mom: cannot start: .*ENOSPC/);
  t.notMatch(full.err, /\n\s+at /, 'no stack trace');

  // A data folder where none can be made: Node's recursive mkdir looped there for ever, at full CPU, without a word.
  const nowhere = await run([...args('unused', '127.0.0.1:0').slice(0, -2), '--data-dir', '/proc/mom-nowhere/n1']);
  restarted('a data folder that cannot be made', nowhere.code);
  t.match(nowhere.err, "mom: cannot start: ENOENT: no such file or directory, mkdir '/proc/mom-nowhere'");
  t.notMatch(nowhere.err, /\n\s+at /, 'no stack trace');
});
