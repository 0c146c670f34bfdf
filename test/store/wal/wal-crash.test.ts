// Crash safety of WalStore: a child process runs a deterministic workload against the store,
// printing each step number once that step's write has RETURNED; the parent SIGKILLs it at a random
// moment (after it printed a random number of lines), reopens the log and checks that it holds
// exactly the model's state after some step j >= the last step printed: nothing reported durable is
// lost (j >= k) and no batch is half-applied (the state is one of the model's states, each of which is
// a whole number of operations), the entries kept below each log for their bodies included. Then the next child resumes the workload from j on the same file,
// so recovery is followed by more writes and another kill. Its segments are small, so kills land
// around rollovers, checkpoints, deletions and copies forward too. Timing never decides the verdict: the
// parent waits on the child's output and exit, not on the clock.
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import { crc32 } from 'node:zlib';
import { WalStore } from '../../../src/store/wal/index.js';
import { seededRandom } from '../../raft/helpers.js';
import { CRASH_WORKLOAD, WRITER_SEGMENT_BYTES, Workload, describe, describeKept, describeKeptModel, summary, voters } from '../fixtures/raft-log-writer.js';

const WRITER = fileURLToPath(new URL('../fixtures/raft-log-writer.ts', import.meta.url));
const KILLS = 5;
const SEED = 20_261_127;

/**
 * Runs the writer from step `from` until it has printed `linesBeforeKill` lines, SIGKILLs it, and
 * returns the last step it printed (lines still in the pipe when the kill lands count: they were
 * printed after their write returned).
 */
function runUntilKilled(path: string, from: number, linesBeforeKill: number): Promise<number> {
  const child = spawn(process.execPath, ['--import', 'tsx', WRITER, path, String(SEED), String(from), 'wal'], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  return new Promise((resolve, reject) => {
    let pending = '';
    let stderr = '';
    let lines = 0;
    let last = from;
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (chunk: string) => {
      pending += chunk;
      for (let nl = pending.indexOf('\n'); nl >= 0; nl = pending.indexOf('\n')) {
        last = Number(pending.slice(0, nl));
        pending = pending.slice(nl + 1);
        if (++lines === linesBeforeKill) child.kill('SIGKILL');
      }
    });
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (chunk: string) => (stderr += chunk));
    child.on('error', reject);
    child.on('close', (code, signal) => {
      if (signal === 'SIGKILL') resolve(last);
      else reject(new Error(`the writer exited by itself (code ${code}, signal ${signal}):\n${stderr}`));
    });
  });
}

interface Durable {
  /** Per partition: the committed entries at step k as index -> "term/crc". */
  readonly committed: Map<number, string>[];
  readonly hard: { term: number; commit: number }[];
}

t.test(`${KILLS} SIGKILLs at random moments lose nothing reported durable and tear no batch`, async (t) => {
  t.setTimeout(300_000);
  const dir = mkdtempSync(join(tmpdir(), 'mom-wal-crash-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const path = join(dir, 'node', 'wal');
  const random = seededRandom(SEED);
  const n = CRASH_WORKLOAD.partitions;
  let from = 0;

  for (let kill = 1; kill <= KILLS; kill++) {
    const linesBeforeKill = 20 + random(400);
    const k = await runUntilKilled(path, from, linesBeforeKill);
    t.ok(k >= from + linesBeforeKill, `kill ${kill}: the writer reported steps ${from + 1}..${k} durable`);
    t.ok(existsSync(path), `kill ${kill}: the log was left behind`);

    // The model at step k: what was reported durable.
    const w = new Workload(SEED, CRASH_WORKLOAD);
    while (w.step < k) w.next();
    const durable: Durable = {
      committed: w.models.map((m) => {
        const out = new Map<number, string>();
        const commit = m.hardState().commit;
        if (commit >= m.firstIndex()) {
          for (const e of m.entries(m.firstIndex(), commit + 1, Infinity)) out.set(e.index, `${e.term}/${crc32(e.data)}`);
        }
        return out;
      }),
      hard: w.models.map((m) => ({ term: m.hardState().term, commit: m.hardState().commit })),
    };

    const store = await WalStore.open(path, { segmentBytes: WRITER_SEGMENT_BYTES });
    try {
      const logs = Array.from({ length: n }, (_, p) => store.partition(p, voters));
      let keptEntries = 0;
      for (const log of logs) keptEntries += log.verify().kept; // every CRC, contiguity, cache == disk

      // Find the step j >= k whose model state the disk holds, exactly.
      const disk = logs.map((l) => ({ sum: summary(l), full: JSON.stringify([describe(l), describeKept(l)]) }));
      let j = -1;
      for (let guard = 0; guard < 100_000; guard++) {
        const matches = w.models.every((m, p) => summary(m) === disk[p]!.sum && JSON.stringify([describe(m), describeKeptModel(w.kept[p]!)]) === disk[p]!.full);
        if (matches) {
          j = w.step;
          break;
        }
        w.next();
      }
      t.ok(j >= k, `kill ${kill}: the disk holds exactly the model's state after step ${j} (>= ${k}, last reported), with ${keptEntries} entries kept for their bodies`);
      if (j < 0) break;

      for (let p = 0; p < n; p++) {
        const log = logs[p]!;
        const hard = log.hardState();
        t.ok(hard.commit <= log.lastIndex(), `partition ${p}: commit ${hard.commit} <= last index ${log.lastIndex()}`);
        t.ok(hard.term >= durable.hard[p]!.term && hard.commit >= durable.hard[p]!.commit, `partition ${p}: hard state not older than reported`);
        // Every entry committed at step k and not compacted since is present, with its data.
        let checked = 0;
        const differing: number[] = [];
        for (const [index, want] of durable.committed[p]!) {
          if (index < log.firstIndex()) continue;
          const e = log.entries(index, index + 1, Infinity)[0]!;
          if (`${e.term}/${crc32(e.data)}` !== want) differing.push(index);
          checked++;
        }
        t.same(differing, [], `partition ${p}: the ${checked} entries committed at step ${k} (and not compacted) read back intact`);
      }
      from = j;
    } finally {
      store.close();
    }
  }
});
