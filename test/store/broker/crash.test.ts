// Crash test of apply: a child process applies a log and is killed with SIGKILL at random moments,
// mid-transaction included. Reopened, the store must be at an applied index at least as far as the
// child last reported, hold exactly the state of that prefix, and, fed the rest of the log, end
// identical to a store that never crashed: nothing lost, nothing applied twice.
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { BrokerStateMachine, stateHash, type ApplyEntry } from '../../../src/store/broker/index.js';
import { Rng } from '../../raft/sim/rng.js';
import { bodiesOf } from './helpers.js';
import { CommandStream } from './command-stream.js';

const dir = mkdtempSync(join(tmpdir(), 'mom-crash-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

async function makeLog(length: number): Promise<{ log: ApplyEntry[]; hashes: Map<number, string> }> {
  const log: ApplyEntry[] = [];
  const ref = await BrokerStateMachine.open(join(dir, 'ref.db'), 3, { bodies: bodiesOf(log) });
  const stream = new CommandStream(99);
  const envs = stream.setup();
  for (let i = 0; i < length; i++) envs.push(stream.next());
  const hashes = new Map<number, string>();
  for (const env of envs) {
    const [e] = stream.entries([env]);
    log.push(e!);
    const [a] = ref.apply([e!]);
    stream.observe(env, a!);
    if (e!.index % 10 === 0 || e!.index === envs.length) hashes.set(e!.index, stateHash(ref.sqlite));
  }
  await ref.close();
  return { log, hashes };
}

/** Runs the writer until it has reported `after` more batches, then kills it; returns the last index it reported. */
function runAndKill(db: string, logFile: string, killAfterLines: number): Promise<{ reported: number; finished: boolean }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', join(import.meta.dirname, 'fixtures', 'apply-writer.ts'), db, logFile, '10'], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let reported = 0;
    let lines = 0;
    let buf = '';
    let finished = false;
    child.stdout.on('data', (chunk: Buffer) => {
      buf += chunk.toString();
      const parts = buf.split('\n');
      buf = parts.pop()!;
      for (const p of parts) {
        if (p === 'done') finished = true;
        else reported = Number(p);
        if (++lines === killAfterLines) child.kill('SIGKILL');
      }
    });
    child.on('error', reject);
    child.on('exit', () => resolve({ reported, finished }));
  });
}

t.test('SIGKILL during apply loses nothing and repeats nothing', async (t) => {
  const { log, hashes } = await makeLog(600);
  const logFile = join(dir, 'log.json');
  writeFileSync(logFile, JSON.stringify(log.map((e) => ({ ...e, data: Buffer.from(e.data).toString('base64') }))));
  const db = join(dir, 'crashing.db');
  const rng = new Rng(5);
  let finished = false;
  for (let round = 0; round < 6 && !finished; round++) {
    const r = await runAndKill(db, logFile, rng.range(2, 12));
    finished = r.finished;
    const sm = await BrokerStateMachine.open(db, 3, { bodies: bodiesOf(log) });
    const applied = sm.applied().index;
    t.ok(applied >= r.reported, `round ${round}: applied ${applied} >= last reported ${r.reported}`);
    t.equal(applied % 10 === 0 || applied === log.length, true, `round ${round}: a whole batch or none (applied ${applied})`);
    if (hashes.has(applied)) t.equal(stateHash(sm.sqlite), hashes.get(applied), `round ${round}: state equals the reference at ${applied}`);
    t.equal((sm.sqlite.pragma('quick_check', { simple: true }) as string), 'ok');
    await sm.close();
  }
  const sm = await BrokerStateMachine.open(db, 3, { bodies: bodiesOf(log) });
  sm.apply(log);
  t.equal(sm.applied().index, log.length);
  t.equal(stateHash(sm.sqlite), hashes.get(log.length), 'after the rest of the log: identical to the store that never crashed');
  await sm.close();
});
