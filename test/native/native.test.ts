// The native addon (src/native): built by `npm ci`, it gives a node's free heap memory back to the
// kernel (malloc_trim, on the thread pool or not) and drops a file's pages from the page cache
// (posix_fadvise); and a node without it (MOM_NO_NATIVE=1 stands for an install without its build)
// loads and runs without those.
import { spawn, type SpawnOptions } from 'node:child_process';
import { closeSync, fdatasyncSync, mkdtempSync, openSync, rmSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import t from 'tap';
import { MallocTrimmer } from '../../src/native/malloc-trimmer.js';
import { Advice, native } from '../../src/native/native.js';
import { needTool } from '../tools.js';

const root = join(import.meta.dirname, '..', '..');
const notBuilt = native === null ? 'the native addon is not built: npm rebuild (npm ci builds it)' : false;

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;
const rss = (): number => process.memoryUsage.rss();

/** Frees every other one of `n` malloc'd 64 KiB buffers: free memory inside malloc's heap, not at its top. */
function holes(n: number): Buffer[] {
  const bufs = Array.from({ length: n }, () => Buffer.allocUnsafeSlow(64 * 1024).fill(1));
  const kept = bufs.filter((_, i) => i % 2 === 1);
  bufs.length = 0;
  gc();
  return kept;
}

for (const how of ['on the event loop', 'on the thread pool'] as const) {
  t.test(`malloc_trim ${how} gives the free memory inside malloc's heap back to the kernel`, { skip: notBuilt }, async (t) => {
    const kept = holes(3000);
    await new Promise((r) => setTimeout(r, 50));
    const before = rss();
    const result = how === 'on the event loop' ? native!.trimMalloc() : await native!.trimMallocAsync!();
    const after = rss();
    t.equal(result, 1, 'malloc_trim says memory went back');
    t.ok(before - after >= 40e6, `the resident set fell by ${((before - after) / 1e6).toFixed(0)} MB (about 96 MB was freed)`);
    t.equal(kept.filter((b) => b[65535] === 1).length, 1500, 'the buffers still in use are intact');
  });
}

t.test('the trimmer trims once per interval, one at a time, and stops', { skip: notBuilt }, async (t) => {
  const trimmer = new MallocTrimmer(20).start();
  // Rounds, not a time: a loaded machine's timers and thread pool are late.
  for (let round = 0; round < 500 && trimmer.trims < 3; round++) await new Promise((r) => setTimeout(r, 10));
  trimmer.stop();
  const done = trimmer.trims;
  t.ok(done >= 3, `${done} trims at one per 20 ms`);
  await new Promise((r) => setTimeout(r, 100));
  t.ok(trimmer.trims <= done + 1, 'none after stop but one in flight');
});

t.test("posix_fadvise(DONTNEED) drops a file's clean pages from the page cache", { skip: notBuilt }, async (t) => {
  const fincore = needTool(t, 'fincore');
  if (fincore === null) return;
  const dir = mkdtempSync(join(tmpdir(), 'mom-native-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const path = join(dir, 'f');
  const fd = openSync(path, 'w+');
  try {
    writeSync(fd, Buffer.alloc(4 * 1024 * 1024, 7));
    fdatasyncSync(fd);
    t.equal(await cachedPages(fincore, path), 1024, 'written and synced: all 1,024 pages are cached');
    t.equal(native!.advise(fd, 0, 0, Advice.DontNeed), 0);
    t.equal(await cachedPages(fincore, path), 0, 'dropped: none is');
  } finally {
    closeSync(fd);
  }
  t.throws(() => native!.advise(0, 0, 0, 2 as Advice), /advice is 1, 3 or 4/, 'an advice it does not know is refused');
});

t.test('without the addon a process finds it missing, and the trimmer does nothing', async (t) => {
  const code = `
    import { native, nativeMissing } from './src/native/native.js';
    import { MallocTrimmer } from './src/native/malloc-trimmer.js';
    const trimmer = new MallocTrimmer(5).start();
    await new Promise((r) => setTimeout(r, 50));
    trimmer.stop();
    console.log(JSON.stringify({ loaded: native !== null, why: nativeMissing, available: MallocTrimmer.available(), trims: trimmer.trims }));
  `;
  const out = await stdoutOf(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', code], { cwd: root, env: { ...process.env, MOM_NO_NATIVE: '1' } });
  t.same(JSON.parse(out.trim()), { loaded: false, why: 'MOM_NO_NATIVE=1', available: false, trims: 0 });
});

/** Pages of `path` in the page cache, by util-linux's fincore. */
async function cachedPages(fincore: string, path: string): Promise<number> {
  return Number((await stdoutOf(fincore, ['--bytes', '--noheadings', '--output', 'PAGES', path])).trim());
}

/** What `command` printed, once it exited 0. */
function stdoutOf(command: string, args: string[], options: SpawnOptions = {}): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { ...options, stdio: ['ignore', 'pipe', 'inherit'] });
    let text = '';
    child.stdout!.on('data', (d: Buffer) => (text += d.toString()));
    child.once('exit', (c) => (c === 0 ? resolve(text) : reject(new Error(`${command} exited ${c}: ${text}`))));
  });
}
