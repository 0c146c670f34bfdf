// Syncs of the log that meet a failure of another write or sync, found by a review (2026-12-07).
// Linux tells a writeback error once per open file, to whichever fdatasync of it asks first (errseq):
// of two syncs in flight through one descriptor, one may be told the error and the other succeed
// over the same lost pages. And a sync that succeeds after the store failed proves nothing: the note
// of the failure (SYNC-FAILED) makes the next open cut the log below what it covered. Each case
// here was a sync() that resolved (a follower's acknowledgement, a leader counting itself) whose
// entries the next start cut, or a deletion that went ahead and left the log unopenable.
import * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import { WalStore } from '../../../src/store/wal/index.js';
import { voters } from '../fixtures/raft-log-writer.js';
import { fsRecorder } from '../fs-recorder.js';
import { entry, hs, item, segments, tempDir } from './wal-helpers.js';

type Wal = typeof import('../../../src/store/wal/index.js');
const eio = (what: string): Error => Object.assign(new Error(`EIO: i/o error, ${what}`), { code: 'EIO' });
const tick = (ms = 5): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** Waits until `predicate` holds, 2,000 rounds of 5 ms at most. */
async function until(what: string, predicate: () => boolean): Promise<void> {
  for (let i = 0; i < 2_000; i++) {
    if (predicate()) return;
    await tick();
  }
  throw new Error(`gave up waiting for ${what}`);
}

/** A log in `dir` holding entry 1, synced, and closed. */
async function oneWrite(dir: string): Promise<void> {
  const first = await WalStore.open(dir);
  first.partition(0, voters);
  first.persist([item(0, [entry(1, 1)], hs(1, 1))], true);
  first.close();
}

/**
 * The log's module with `fs[name]` failing once with `error`, on the first call that `when` picks;
 * every other call goes to the real one.
 */
async function failingOnce<K extends 'openSync' | 'fsyncSync'>(t: Test, name: K, when: (...args: Parameters<(typeof fs)[K]>) => boolean, error: Error): Promise<Wal> {
  let failing = true;
  const real = fs[name] as (...args: Parameters<(typeof fs)[K]>) => unknown;
  const mocked = (...args: Parameters<(typeof fs)[K]>): unknown => {
    if (failing && when(...args)) {
      failing = false;
      throw error;
    }
    return real(...args);
  };
  return t.mockImport<Wal>('../../../src/store/wal/index.js', { 'node:fs': { ...fs, [name]: mocked } as typeof fs });
}

t.test('a sync on the thread pool that succeeds after another write failed is a failure too', async (t) => {
  let hold = false;
  let release: (() => void) | null = null;
  let failWrites = false;
  const wal = await t.mockImport<Wal>('../../../src/store/wal/index.js', {
    'node:fs': {
      ...fs,
      fdatasync: (fd: number, cb: fs.NoParamCallback): void => {
        if (!hold) return fs.fdatasync(fd, cb);
        hold = false;
        // The real fdatasync runs and succeeds; its answer comes late (a busy disk).
        fs.fdatasync(fd, (err) => void (release = () => cb(err)));
      },
      writevSync: (fd: number, buffers: NodeJS.ArrayBufferView[], position?: number): number => {
        if (failWrites) throw Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' });
        return fs.writevSync(fd, buffers, position);
      },
    } as typeof fs,
  });
  const dir = tempDir(t);
  const store = await wal.WalStore.open(dir, { segmentBytes: 1 << 20 });
  store.partition(0, voters);
  store.persist([item(0, [entry(1, 1), entry(2, 1)], hs(1, 2))], true);
  // A turn: entries 3 to 5 written, their fdatasync on the thread pool.
  store.append([item(0, [entry(3, 1), entry(4, 1), entry(5, 1)], hs(1, 2))]);
  hold = true;
  const turn = store.sync().then(
    () => 'resolved',
    (err: Error) => err.message,
  );
  // Meanwhile a local snapshot's record fails: the disk is full. The store notes where it was synced.
  failWrites = true;
  t.throws(() => store.recordSnapshot(0, { index: 2, term: 1, voters }, 'p0-2-1', 2), /ENOSPC/);
  failWrites = false;
  await until('the turn\'s fdatasync to end', () => release !== null);
  release!();
  t.match(await turn, /failed a write earlier/, 'the turn\'s sync fails: nothing of it is acknowledged');
  store.close();
  const again = await WalStore.open(dir, { segmentBytes: 1 << 20 });
  t.teardown(() => again.close());
  t.equal(again.partition(0, voters).lastIndex(), 2, 'the next open cuts where the note says, below the turn');
});

/**
 * A log of two segments whose oldest is held by entry 1, kept for its bodies past a snapshot at 5.
 * `turnAndRelease()` then writes a turn (entry 6) and starts its sync, and meanwhile lets entry 1 go,
 * which frees segment 1, whose deletion syncs the newest segment on the thread pool first: from
 * there on the pool's fdatasync goes through `pool`. It answers whether the turn's sync resolved,
 * and when the deletion ended.
 */
async function twoSegments(t: Test, pool: (fd: number, cb: fs.NoParamCallback) => void) {
  let hold = false;
  const wal = await t.mockImport<Wal>('../../../src/store/wal/index.js', {
    'node:fs': { ...fs, fdatasync: (fd: number, cb: fs.NoParamCallback): void => (hold ? pool(fd, cb) : fs.fdatasync(fd, cb)) } as typeof fs,
  });
  const dir = tempDir(t);
  const store = await wal.WalStore.open(dir, { segmentBytes: 4096 });
  store.partition(0, voters);
  for (let i = 1; i <= 5; i++) store.persist([item(0, [entry(i, 1, 'x'.repeat(900))], hs(1, i))], true);
  store.recordSnapshot(0, { index: 5, term: 1, voters }, 'p0-5-1', 5, [1]);
  await store.settled();
  t.same(segments(dir).map((f) => f.slice(-5)), ['1.wal', '2.wal'], 'two segments, the oldest held by kept entry 1');
  const turnAndRelease = (): { turn: Promise<boolean>; deleted: Promise<void> } => {
    store.append([item(0, [entry(6, 1, 'y'.repeat(100))], hs(1, 5))]);
    hold = true;
    const turn = store.sync().then(
      () => true,
      () => false,
    );
    store.releaseBodies(0, [1]);
    return { turn, deleted: store.settled() };
  };
  return { dir, store, turnAndRelease };
}

t.test('a segment\'s syncs on the thread pool go one at a time: a turn\'s and a deletion\'s are never in flight together', async (t) => {
  const answers: (() => void)[] = [];
  let inFlight = 0;
  let most = 0;
  const { dir, store, turnAndRelease } = await twoSegments(t, (fd, cb) => {
    const k = answers.length;
    inFlight++;
    most = Math.max(most, inFlight);
    // The deletion's sync (the second) is told the writeback error.
    fs.fdatasync(fd, (err) => {
      answers[k] = () => {
        inFlight--;
        cb(k === 1 ? eio('fdatasync') : err);
      };
    });
  });
  const { turn, deleted } = turnAndRelease();
  await until('the turn\'s fdatasync', () => answers[0] !== undefined);
  await tick(20);
  t.equal(answers.length, 1, 'the deletion\'s sync waits for the turn\'s');
  answers[0]!();
  t.equal(await turn, true, 'the turn\'s sync succeeds: entry 6 is acknowledged');
  await until('the deletion\'s fdatasync', () => answers[1] !== undefined);
  answers[1]!();
  await deleted;
  t.equal(most, 1, 'never two at once');
  t.same(segments(dir).map((f) => f.slice(-5)), ['1.wal', '2.wal'], 'the failed sync kept segment 1');
  store.close();
  const again = await WalStore.open(dir, { segmentBytes: 4096 });
  t.teardown(() => again.close());
  t.equal(again.partition(0, voters).lastIndex(), 6, 'entry 6, acknowledged, is there after the restart');
});

t.test('a turn\'s sync told the error: the deletion waiting behind it does not run, and the log opens', async (t) => {
  const answers: (() => void)[] = [];
  const { dir, store, turnAndRelease } = await twoSegments(t, (fd, cb) => {
    const k = answers.length;
    fs.fdatasync(fd, (err) => void (answers[k] = () => cb(k === 0 ? eio('fdatasync') : err)));
  });
  const { turn, deleted } = turnAndRelease();
  await until('the turn\'s fdatasync', () => answers[0] !== undefined);
  answers[0]!();
  t.equal(await turn, false, 'the turn\'s sync fails: nothing acknowledged');
  await deleted;
  t.equal(answers.length, 1, 'no sync for the deletion after the failure');
  t.same(segments(dir).map((f) => f.slice(-5)), ['1.wal', '2.wal'], 'segment 1 stays: the release freeing it is past the note');
  store.close();
  const again = await WalStore.open(dir, { segmentBytes: 4096 });
  t.teardown(() => again.close());
  t.equal(again.partition(0, voters).lastIndex(), 5, 'the log opens, cut below entry 6');
});

t.test('a sync on the event loop while the pool\'s sync was told a writeback error is told it too', async (t) => {
  // Linux's errseq, by inode and by open file: an error is told once to each open file that was
  // open when it happened, at its next fdatasync.
  const errors = new Map<number, number>();
  const seen = new Map<number, number>();
  const inode = (fd: number): number => fs.fstatSync(fd).ino;
  const told = (fd: number): boolean => {
    const now = errors.get(inode(fd)) ?? 0;
    if ((seen.get(fd) ?? 0) >= now) return false;
    seen.set(fd, now);
    return true;
  };
  let release: (() => void) | null = null;
  let holdPool = false;
  const wal = await t.mockImport<Wal>('../../../src/store/wal/index.js', {
    'node:fs': {
      ...fs,
      openSync: (...args: Parameters<typeof fs.openSync>): number => {
        const fd = fs.openSync(...args);
        seen.set(fd, errors.get(inode(fd)) ?? 0);
        return fd;
      },
      fdatasync: (fd: number, cb: fs.NoParamCallback): void => {
        const error = told(fd);
        if (!holdPool) return error ? cb(eio('fdatasync')) : fs.fdatasync(fd, cb);
        holdPool = false;
        // Told the error at once, answered late.
        release = () => cb(error ? eio('fdatasync') : null);
      },
      fdatasyncSync: (fd: number): void => {
        if (told(fd)) throw eio('fdatasync');
        fs.fdatasyncSync(fd);
      },
    } as typeof fs,
  });
  const dir = tempDir(t);
  const store = await wal.WalStore.open(dir, { segmentBytes: 1 << 20 });
  store.partition(0, voters);
  store.persist([item(0, [entry(1, 1)], hs(1, 1))], true);
  store.append([item(0, [entry(2, 1)], hs(1, 1))]);
  // The pages of entry 2 fail to reach the disk.
  const file = join(dir, segments(dir).at(-1)!);
  const ino = fs.statSync(file).ino;
  errors.set(ino, (errors.get(ino) ?? 0) + 1);
  holdPool = true;
  const turn = store.sync().then(
    () => true,
    () => false,
  );
  // Before the pool's answer comes, a write synced on the event loop (a snapshot's record, say).
  t.throws(() => store.persist([item(0, [entry(3, 1)], hs(1, 1))], true), /EIO/, 'the loop\'s sync is told the error as well');
  release!();
  t.equal(await turn, false);
  store.close();
  const again = await WalStore.open(dir, { segmentBytes: 1 << 20 });
  t.teardown(() => again.close());
  t.equal(again.partition(0, voters).lastIndex(), 1, 'nothing past the last good sync is kept');
});

t.test('a segment whose deletion fails holds the later ones back until it is tried again: never a gap', async (t) => {
  // Each deletion asked for tries the failed one again first: segment 2's, in the same pass, too.
  let failures = 2;
  const wal = await t.mockImport<Wal>('../../../src/store/wal/index.js', {
    'node:fs/promises': {
      ...fsp,
      rm: async (path: fs.PathLike, opts?: fs.RmOptions): Promise<void> => {
        if (String(path).endsWith('0000000000000001.wal') && failures-- > 0) throw eio('unlink');
        return fsp.rm(path, opts);
      },
    } as typeof fsp,
  });
  const dir = tempDir(t);
  const failed: string[] = [];
  const store = await wal.WalStore.open(dir, { segmentBytes: 4096, onDeleteFailed: (path) => void failed.push(path) });
  store.partition(0, voters);
  for (let i = 1; i <= 10; i++) store.persist([item(0, [entry(i, 1, 'x'.repeat(900))], hs(1, i))], true);
  const before = segments(dir);
  t.ok(before.length >= 3, `segments 1 and 2 to delete, and the newest (${before.join(', ')})`);
  store.recordSnapshot(0, { index: 10, term: 1, voters }, 'p0-10-1', 10);
  await store.settled();
  t.same(failed.map((p) => p.slice(-5)), ['1.wal', '1.wal'], 'segment 1\'s deletion failed twice, and no other was tried');
  t.same(segments(dir), before, 'every segment is still there');
  // A crash now: the next open replays them all, without a gap.
  const copy = `${dir}-copy`;
  fs.cpSync(dir, copy, { recursive: true });
  fs.rmSync(join(copy, 'LOCK'), { force: true });
  t.teardown(() => fs.rmSync(copy, { recursive: true, force: true }));
  const reopened = await WalStore.open(copy, { segmentBytes: 4096 });
  t.equal(reopened.partition(0, voters).lastIndex(), 10, 'the log opens');
  reopened.close();
  // The next deletion asked for tries the failed one again first.
  for (let i = 11; i <= 20; i++) store.persist([item(0, [entry(i, 1, 'x'.repeat(900))], hs(1, i))], true);
  store.recordSnapshot(0, { index: 20, term: 1, voters }, 'p0-20-1', 20);
  await store.settled();
  t.same(failed.length, 2, 'no other failure');
  t.notOk(segments(dir).some((f) => before.slice(0, -1).includes(f)), `the segments before the first snapshot's are gone (${segments(dir).join(', ')})`);
  store.close();
});

t.test('a LOCK is never seen without its pid: it is made whole, then linked', async (t) => {
  const dir = tempDir(t);
  const contents: string[] = [];
  const wal = await t.mockImport<Wal>('../../../src/store/wal/index.js', {
    'node:fs': {
      ...fs,
      linkSync: (from: fs.PathLike, to: fs.PathLike): void => {
        fs.linkSync(from, to);
        contents.push(fs.readFileSync(to, 'utf8'));
      },
    } as typeof fs,
  });
  const store = await wal.WalStore.open(dir);
  t.same(contents, [`${process.pid}\n`], 'the LOCK appeared holding the pid');
  t.same(
    fs.readdirSync(dir).filter((f) => f.startsWith('LOCK')),
    ['LOCK', ...(fs.existsSync(join(dir, 'LOCK.boot')) ? ['LOCK.boot'] : [])],
    'no temporary file is left',
  );
  store.close();
});

t.test('where the folder takes no hard links, the LOCK is made in place', async (t) => {
  const dir = tempDir(t);
  const wal = await t.mockImport<Wal>('../../../src/store/wal/index.js', {
    'node:fs': {
      ...fs,
      linkSync: (): void => {
        throw Object.assign(new Error('EPERM: operation not permitted, link'), { code: 'EPERM' });
      },
    } as typeof fs,
  });
  const store = await wal.WalStore.open(dir);
  t.equal(fs.readFileSync(join(dir, 'LOCK'), 'utf8'), `${process.pid}\n`);
  store.close();
  t.notOk(fs.existsSync(join(dir, 'LOCK')), 'released');
});

t.test('a log opened again syncs its folder before it writes: the newest segment\'s name may not be durable yet', async (t) => {
  const dir = tempDir(t);
  await oneWrite(dir);
  const rec = fsRecorder();
  const wal = await t.mockImport<Wal>('../../../src/store/wal/index.js', rec.mocks);
  const store = await wal.WalStore.open(dir);
  t.teardown(() => store.close());
  t.ok(rec.events.includes(`fsync ${dir}`), 'the folder is synced at open');
});

t.test('a sync that fails when the log opens makes the next start refuse it: what it read may be in the page cache only', async (t) => {
  const dir = tempDir(t);
  const first = await WalStore.open(dir);
  first.partition(0, voters);
  first.persist([item(0, [entry(1, 1)], hs(1, 1))], true);
  // Written, never synced: the process dies with it in the page cache.
  first.append([item(0, [entry(2, 1)], hs(1, 1))]);
  first.close();
  let failing = true;
  const wal = await t.mockImport<Wal>('../../../src/store/wal/index.js', {
    'node:fs': {
      ...fs,
      fdatasyncSync: (fd: number): void => {
        if (!failing) return fs.fdatasyncSync(fd);
        failing = false;
        throw Object.assign(eio('fdatasync'), { syscall: 'fdatasync' });
      },
    } as typeof fs,
  });
  await t.rejects(wal.WalStore.open(dir), /EIO/, 'the open fails');
  t.ok(fs.existsSync(join(dir, 'SYNC-FAILED')), 'and notes why');
  // The next start, in the same boot, would read entry 2 from the page cache and take it for durable.
  await t.rejects(WalStore.open(dir), { name: 'StorageCorruptError', message: /failed when the log was opened/ });
});

t.test('a write of the zeros over a torn tail that fails at open (a full disk) leaves no note: the next start tries again', async (t) => {
  const dir = tempDir(t);
  await oneWrite(dir);
  const file = join(dir, segments(dir).at(-1)!);
  // A torn tail: bytes past the last whole write.
  const end = fs.readFileSync(file).length;
  const tail = fs.readFileSync(file).lastIndexOf(Buffer.from('e1t1')) + 64;
  t.ok(tail < end);
  fs.writeFileSync(file, Buffer.concat([fs.readFileSync(file).subarray(0, tail), Buffer.from('torn tail'), fs.readFileSync(file).subarray(tail + 9)]));
  let failing = true;
  const wal = await t.mockImport<Wal>('../../../src/store/wal/index.js', {
    'node:fs': {
      ...fs,
      writeSync: (...args: Parameters<typeof fs.writeSync>): number => {
        if (!failing) return fs.writeSync(...args);
        failing = false;
        throw Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC', syscall: 'write' });
      },
    } as typeof fs,
  });
  await t.rejects(wal.WalStore.open(dir), /ENOSPC/);
  t.notOk(fs.existsSync(join(dir, 'SYNC-FAILED')), 'no note');
  const again = await WalStore.open(dir);
  t.teardown(() => again.close());
  t.equal(again.partition(0, voters).lastIndex(), 1, 'the next start cuts the torn tail and opens');
});

t.test('a new segment that cannot be opened once in place is taken away again: the log opens after the failure', async (t) => {
  let opens = 0;
  const wal = await t.mockImport<Wal>('../../../src/store/wal/index.js', {
    'node:fs': {
      ...fs,
      openSync: (...args: Parameters<typeof fs.openSync>): number => {
        // The second descriptor of segment 2, once it is in place: the process is out of descriptors.
        if (String(args[0]).endsWith('0000000000000002.wal') && args[1] === 'r+' && ++opens === 2) {
          throw Object.assign(new Error('EMFILE: too many open files, open'), { code: 'EMFILE', syscall: 'open' });
        }
        return fs.openSync(...args);
      },
    } as typeof fs,
  });
  const dir = tempDir(t);
  const store = await wal.WalStore.open(dir, { segmentBytes: 4096 });
  store.partition(0, voters);
  let written = 0;
  t.throws(() => {
    for (let i = 1; i <= 10; i++) {
      store.persist([item(0, [entry(i, 1, 'x'.repeat(900))], hs(1, i))], true);
      written = i;
    }
  }, /EMFILE/, 'the rollover fails');
  store.close();
  t.same(segments(dir).map((f) => f.slice(-5)), ['1.wal'], 'segment 2 is gone');
  const again = await WalStore.open(dir, { segmentBytes: 4096 });
  t.teardown(() => again.close());
  t.equal(again.partition(0, voters).lastIndex(), written, 'the log opens with every synced write');
});

t.test('a LOCK of a live process beside an empty LOCK.boot (being written) still holds the log', async (t) => {
  if (!fs.existsSync('/proc/sys/kernel/random/boot_id')) {
    t.comment('no boot id on this system (not Linux)');
    return;
  }
  const dir = tempDir(t);
  (await WalStore.open(dir)).close();
  fs.writeFileSync(join(dir, 'LOCK'), `${process.ppid}\n`);
  fs.writeFileSync(join(dir, 'LOCK.boot'), '');
  await t.rejects(WalStore.open(dir), { name: 'LogInUseError' });
  t.equal(fs.readFileSync(join(dir, 'LOCK'), 'utf8'), `${process.ppid}\n`, 'the LOCK is left as it was');
});

t.test('an open that fails closes what it opened', async (t) => {
  if (!fs.existsSync('/proc/self/fd')) {
    t.comment('no /proc/self/fd on this system');
    return;
  }
  const dir = tempDir(t);
  const first = await WalStore.open(dir, { segmentBytes: 4096 });
  first.partition(0, voters);
  for (let i = 1; i <= 10; i++) first.persist([item(0, [entry(i, 1, 'x'.repeat(900))], hs(1, i))], true);
  first.close();
  const wal = await t.mockImport<Wal>('../../../src/store/wal/index.js', {
    'node:fs': {
      ...fs,
      fdatasyncSync: (): void => {
        throw Object.assign(eio('fdatasync'), { syscall: 'fdatasync' });
      },
    } as typeof fs,
  });
  const before = fs.readdirSync('/proc/self/fd').length;
  await t.rejects(wal.WalStore.open(dir, { segmentBytes: 4096 }), /EIO/);
  t.equal(fs.readdirSync('/proc/self/fd').length, before, 'no descriptor left open');
});

t.test('a sync waiting behind another when the log closes rejects, and touches no descriptor', async (t) => {
  let release: (() => void) | null = null;
  let hold = false;
  let afterClose = 0;
  let closed = false;
  const wal = await t.mockImport<Wal>('../../../src/store/wal/index.js', {
    'node:fs': {
      ...fs,
      fdatasync: (fd: number, cb: fs.NoParamCallback): void => {
        if (closed) afterClose++;
        if (!hold) return fs.fdatasync(fd, cb);
        hold = false;
        fs.fdatasync(fd, (err) => void (release = () => cb(err)));
      },
    } as typeof fs,
  });
  const store = await wal.WalStore.open(tempDir(t));
  store.partition(0, voters);
  store.append([item(0, [entry(1, 1)], hs(1, 1))]);
  hold = true;
  const first = store.sync().then(
    () => 'resolved',
    (err: Error) => err.message,
  );
  store.append([item(0, [entry(2, 1)], hs(1, 1))]);
  const second = store.sync().then(
    () => 'resolved',
    (err: Error) => err.message,
  );
  await until('the first fdatasync', () => release !== null);
  store.close();
  closed = true;
  release!();
  await first;
  t.match(await second, /closed/, 'the waiting sync rejects');
  t.equal(afterClose, 0, 'no fdatasync after the close');
});

t.test('a folder sync that fails when the log opens makes the next start refuse it, as a segment\'s does', async (t) => {
  const dir = tempDir(t);
  await oneWrite(dir);
  const wal = await failingOnce(t, 'fsyncSync', (fd) => fs.fstatSync(fd).isDirectory(), Object.assign(eio('fsync'), { syscall: 'fsync' }));
  await t.rejects(wal.WalStore.open(dir), /EIO/);
  await t.rejects(WalStore.open(dir), { name: 'StorageCorruptError', message: /failed when the log was opened/ });
});

t.test('a folder that cannot be opened at start (no descriptors left) is no failed sync: no note, the next start opens', async (t) => {
  const dir = tempDir(t);
  await oneWrite(dir);
  const emfile = Object.assign(new Error('EMFILE: too many open files, open'), { code: 'EMFILE', syscall: 'open' });
  const wal = await failingOnce(t, 'openSync', (path, flags) => String(path) === dir && flags === 'r', emfile);
  await t.rejects(wal.WalStore.open(dir), /EMFILE/);
  t.notOk(fs.existsSync(join(dir, 'SYNC-FAILED')), 'no note');
  const again = await WalStore.open(dir);
  t.teardown(() => again.close());
  t.equal(again.partition(0, voters).lastIndex(), 1);
});

t.test('a close that reports an error at a rollover fails nothing, and the log closes and opens again', async (t) => {
  const opened: number[] = [];
  let failed = 0;
  const wal = await t.mockImport<Wal>('../../../src/store/wal/index.js', {
    'node:fs': {
      ...fs,
      openSync: (...args: Parameters<typeof fs.openSync>): number => {
        const fd = fs.openSync(...args);
        if (String(args[0]).endsWith('0000000000000001.wal') && args[1] === 'r+') opened.push(fd);
        return fd;
      },
      closeSync: (fd: number): void => {
        fs.closeSync(fd);
        // Segment 1's second descriptor, closed at the rollover: released, but close says EIO (NFS, FUSE).
        if (fd === opened[1] && failed === 0) {
          failed++;
          throw Object.assign(new Error('EIO: i/o error, close'), { code: 'EIO', syscall: 'close' });
        }
      },
    } as typeof fs,
  });
  const dir = tempDir(t);
  const store = await wal.WalStore.open(dir, { segmentBytes: 4096 });
  store.partition(0, voters);
  for (let i = 1; i <= 10; i++) store.persist([item(0, [entry(i, 1, 'x'.repeat(900))], hs(1, i))], true);
  t.equal(failed, 1, 'the rollover\'s close said EIO');
  t.ok(segments(dir).length > 1, 'and the log rolled over');
  store.close();
  const again = await wal.WalStore.open(dir, { segmentBytes: 4096 });
  t.teardown(() => again.close());
  t.equal(again.partition(0, voters).lastIndex(), 10, 'every write is there');
});

t.test('a deletion waiting behind a sync when the log closes is no failure', async (t) => {
  const answers: (() => void)[] = [];
  const { store, turnAndRelease } = await twoSegments(t, (fd, cb) => {
    const k = answers.length;
    fs.fdatasync(fd, (err) => void (answers[k] = () => cb(err)));
  });
  const failed: string[] = [];
  (store as unknown as { onDeleteFailed: (path: string) => void }).onDeleteFailed = (path) => void failed.push(path);
  const { turn, deleted } = turnAndRelease();
  await until('the turn\'s fdatasync', () => answers[0] !== undefined);
  store.close();
  answers[0]!();
  await turn;
  await deleted;
  t.same(failed, [], 'no deletion reported failed');
});
