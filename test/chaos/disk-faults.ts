// The storage fault of the chaos runs: a power cut that loses every write not yet synced.
//
// Nodes of a chaos run are started with LD_PRELOAD=lose-unsynced.so (built here from
// lose-unsynced.c with the machine's C compiler `cc`; a test that needs it calls needTool(t, 'cc')
// first and is skipped without one: test/tools.ts). The
// library keeps, per file of the node's data folder, an undo journal of every write since the file's
// last fsync. After a SIGKILL, loseUnsynced() applies the journals backwards: each file is back to its
// content at its last fsync, as after a power cut, and SQLite's -shm index files are removed (they
// live in memory and are rebuilt from the write-ahead log).
import { execFileSync, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { closeSync, existsSync, ftruncateSync, mkdirSync, openSync, readdirSync, readFileSync, renameSync, rmSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { TOOLS, findTool } from '../tools.js';

const SOURCE = join(import.meta.dirname, 'lose-unsynced.c');
const MAGIC = 0x554e444f;
const HEADER = 32;

/** Builds the library once per source version (cached in the temporary folder); answers its path. */
export function buildDiskShim(): string {
  const src = readFileSync(SOURCE);
  const hash = createHash('sha256').update(src).digest('hex').slice(0, 16);
  const dir = join(tmpdir(), 'mom-chaos-shim');
  const out = join(dir, `lose-unsynced-${hash}.so`);
  if (existsSync(out)) return out;
  const cc = findTool('cc');
  if (cc === null) throw new Error(`building the storage fault layer needs a C compiler (cc): ${TOOLS.cc}`);
  mkdirSync(dir, { recursive: true });
  const tmp = `${out}.${process.pid}.tmp`;
  try {
    execFileSync(cc, ['-shared', '-fPIC', '-O2', '-Wall', '-Werror', '-o', tmp, SOURCE, '-ldl', '-lpthread'], { stdio: ['ignore', 'ignore', 'pipe'] });
  } catch (err) {
    const stderr = (err as { stderr?: Buffer }).stderr?.toString() ?? '';
    throw new Error(`building the storage fault layer (cc ${SOURCE}) failed: ${stderr || String(err)}`);
  }
  renameSync(tmp, out);
  return out;
}

/** The environment that makes a child process journal its unsynced writes under `root`. */
export function diskShimEnv(shim: string, root: string, undoDir: string): Record<string, string> {
  mkdirSync(undoDir, { recursive: true });
  return { LD_PRELOAD: shim, MOM_CHAOS_DISK_ROOT: root, MOM_CHAOS_DISK_UNDO: undoDir };
}

/**
 * Runs `code` (an ES module, TypeScript allowed, from the repository's root) in a child process with
 * the storage fault layer journaling under `root`, and SIGKILLs it once it prints "ready". `ROOT` in
 * the child's environment is `root`. The caller then cuts the power: loseUnsynced(root, undoDir).
 */
export async function runUntilReadyThenKill(code: string, root: string, undoDir: string): Promise<void> {
  const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', code], {
    cwd: join(import.meta.dirname, '..', '..'),
    env: { ...process.env, ...diskShimEnv(buildDiskShim(), root, undoDir), ROOT: root },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  let out = '';
  await new Promise<void>((resolve, reject) => {
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.includes('ready')) resolve();
    });
    child.once('exit', (c) => reject(new Error(`child exited (${c}) before it was ready: ${out}`)));
  });
  const exited = new Promise((r) => child.once('exit', r));
  child.kill('SIGKILL');
  await exited;
}

export interface LostWrites {
  /** Files rolled back, with the writes (and truncations) undone and the bytes they had written over. */
  files: { file: string; records: number; bytesRestored: number; syncedSize: number }[];
  records: number;
  /** -shm files removed. */
  shm: number;
}

interface UndoRecord {
  kind: number;
  offset: number;
  old: Buffer;
  sizeBefore: number;
}

function parseJournal(buf: Buffer, name: string): UndoRecord[] {
  const out: UndoRecord[] = [];
  let at = 0;
  while (at < buf.length) {
    // A record cut short by the kill was never followed by its write: stop there.
    if (buf.length - at < HEADER) break;
    if (buf.readUInt32LE(at) !== MAGIC) throw new Error(`undo journal ${name}: bad record at byte ${at}`);
    const kind = buf.readUInt32LE(at + 4);
    const offset = Number(buf.readBigInt64LE(at + 8));
    const oldLen = Number(buf.readBigInt64LE(at + 16));
    const sizeBefore = Number(buf.readBigInt64LE(at + 24));
    if (buf.length - at - HEADER < oldLen) break;
    out.push({ kind, offset, old: buf.subarray(at + HEADER, at + HEADER + oldLen), sizeBefore });
    at += HEADER + oldLen;
  }
  return out;
}

/**
 * The power cut, for a node that is not running (killed): every file under `root` back to its
 * content at its last fsync. Answers what was undone.
 */
export function loseUnsynced(root: string, undoDir: string): LostWrites {
  const lost: LostWrites = { files: [], records: 0, shm: 0 };
  if (existsSync(undoDir)) {
    for (const name of readdirSync(undoDir).sort()) {
      if (!name.endsWith('.undo')) continue;
      const journal = join(undoDir, name);
      const file = name.slice(0, -'.undo'.length).replaceAll('%', '/');
      const records = parseJournal(readFileSync(journal), name);
      if (records.length > 0 && file.startsWith(`${root}/`) && existsSync(file)) {
        const fd = openSync(file, 'r+');
        try {
          let restored = 0;
          for (let k = records.length - 1; k >= 0; k--) {
            const r = records[k]!;
            if (r.old.length > 0) writeSync(fd, r.old, 0, r.old.length, r.offset);
            ftruncateSync(fd, r.sizeBefore);
            restored += r.old.length;
          }
          lost.files.push({ file: file.slice(root.length + 1), records: records.length, bytesRestored: restored, syncedSize: records[0]!.sizeBefore });
          lost.records += records.length;
        } finally {
          closeSync(fd);
        }
      }
      rmSync(journal);
    }
  }
  const walk = (dir: string): void => {
    for (const d of readdirSync(dir, { withFileTypes: true })) {
      const p = join(dir, d.name);
      if (d.isDirectory()) walk(p);
      else if (d.name.endsWith('-shm')) {
        rmSync(p);
        lost.shm++;
      }
    }
  };
  if (existsSync(root)) walk(root);
  return lost;
}

/** One line for a report: which files lost how many writes. */
export function describeLost(l: LostWrites): string {
  if (l.records === 0) return 'no unsynced write to lose';
  return `${l.records} unsynced write(s) undone in ${l.files.length} file(s): ${l.files.map((f) => `${f.file} (${f.records})`).join(', ')}`;
}
