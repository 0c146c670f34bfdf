// Released segments kept as spares and made into later segments (WalStore's MAX_SPARES): the next
// segment is a spare renamed, whose former records never read as records, neither while it is the
// newest nor across a reopen; once it is no longer the newest, only zeros follow its records, as in a
// segment made with a hole, which every build reads; no more than MAX_SPARES are kept; a spare
// that is gone when its turn comes leaves that segment made anew; a node short of disk space
// keeps none; records written into a spare cost the disk their own pages, whatever wrote it
// before; and a node without the native addon, which drops a spare's pages, keeps none.
import { spawn } from 'node:child_process';
import { readFileSync, readdirSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import { native } from '../../../src/native/native.js';
import type { SnapshotMeta } from '../../../src/raft/index.js';
import { MAX_SPARES, type WalStore } from '../../../src/store/wal/wal-store.js';
import { RecordKind } from '../../../src/store/wal/record.js';
import { scanSegment } from '../../../src/store/wal/segment.js';
import { entry, hs, item, openStore, segments, show, tempDir } from './wal-helpers.js';
import { voters } from '../fixtures/raft-log-writer.js';

const SEGMENT_BYTES = 8192;
const meta = (index: number): SnapshotMeta => ({ index, term: 1, voters });
const big = (index: number): string => `${index}`.padEnd(1500, '.');
const spares = (dir: string): string[] => readdirSync(dir).filter((f) => f.startsWith('spare-')).sort((a, b) => Number.parseInt(a.slice(6), 10) - Number.parseInt(b.slice(6), 10));
const seqOf = (name: string): number => Number.parseInt(name.slice(0, 16), 16);
const noAddon = native === null ? 'the native addon is not built (`npm rebuild`); without it no spares are kept' : false;

/** Writes entries from..to of term 1 and 1.5 KiB, one synced write each. */
function write(store: WalStore, from: number, to: number): void {
  for (let i = from; i <= to; i++) store.persist([item(0, [entry(i, 1, big(i))], hs(1, i))], true);
}

/** The segment's records and what follows them, read as the open of a log reads it. */
function scan(dir: string, name: string, newest: boolean): ReturnType<typeof scanSegment> {
  const path = join(dir, name);
  return scanSegment(readFileSync(path), seqOf(name), path, newest);
}

/** A store whose first 30 entries were written and compacted away: its released segments are spares. */
async function withSpares(t: Test, dir: string): Promise<WalStore> {
  const store = await openStore(t, dir, SEGMENT_BYTES);
  store.partition(0, voters);
  write(store, 1, 30);
  store.recordSnapshot(0, meta(30), 'image-30');
  await store.settled();
  return store;
}

/** Writes entries from `next` on until the newest segment is another; the next index to write. */
function rollOver(store: WalStore, dir: string, next: number): number {
  const newest = segments(dir).at(-1);
  while (segments(dir).at(-1) === newest) write(store, next, next++);
  return next;
}

t.test('a released segment is kept as a spare, and the next segment is made of it', { skip: noAddon }, async (t) => {
  const dir = tempDir(t);
  let store = await openStore(t, dir, SEGMENT_BYTES);
  store.partition(0, voters);
  write(store, 1, 30);
  const made = segments(dir);
  store.recordSnapshot(0, meta(30), 'image-30');
  await store.settled();
  const kept = spares(dir);
  t.equal(kept.length, Math.min(MAX_SPARES, made.length - 1), `every released segment but the newest is kept as a spare, up to ${MAX_SPARES} (${made.length} were made)`);
  t.notOk(segments(dir).some((f) => made.slice(0, -1).includes(f)), `the released segments are gone by their names (${segments(dir).join(', ')} now)`);
  const spareInode = statSync(join(dir, kept[0]!)).ino;

  let next = rollOver(store, dir, 31);
  const reused = segments(dir).at(-1)!;
  t.equal(statSync(join(dir, reused)).ino, spareInode, 'the next segment is the oldest spare, renamed');
  t.equal(spares(dir).length, kept.length - 1, 'and is a spare no more');
  const newest = scan(dir, reused, true);
  t.ok(newest.dirtyTo > newest.end, 'its former life still follows its records');
  t.same(
    newest.records.filter((r) => r.kind === RecordKind.Entry).map((r) => r.index),
    [next - 1],
    'but only its own records read as records: the entry that started it',
  );

  // Written on until it is no longer the newest.
  const last = next;
  next = rollOver(store, dir, next);
  const closed = scan(dir, reused, false);
  t.equal(closed.dirtyTo, closed.end, 'once it is not the newest, only zeros follow its records: it reads as a segment made with a hole does');
  t.ok(closed.records.some((r) => r.index === last - 1), 'its records are all there');

  store.close();
  store = await openStore(t, dir, SEGMENT_BYTES);
  const log = store.partition(0, voters);
  t.same(show(log.entries(31, next, Infinity)).map((s) => s.slice(0, 8)), Array.from({ length: next - 31 }, (_, k) => `${31 + k}/1:${31 + k}.`.slice(0, 8)), 'a reopen reads every entry written since the snapshot');
});

t.test('a reused segment that is still the newest opens like one with a torn tail: its entries kept, its former life cut and zeroed', { skip: noAddon }, async (t) => {
  const dir = tempDir(t);
  let store = await withSpares(t, dir);
  const next = rollOver(store, dir, 31);
  const reused = segments(dir).at(-1)!;
  t.ok(scan(dir, reused, true).dirtyTo > scan(dir, reused, true).end, 'the newest segment is a reused one, its former life after its records');
  // A crash leaves it as it is: the store is dropped without anything more written.
  store.close();

  store = await openStore(t, dir, SEGMENT_BYTES);
  const log = store.partition(0, voters);
  t.equal(log.lastIndex(), next - 1, 'every entry written is there');
  t.same(show([log.entries(next - 1, next, Infinity)[0]!]), [`${next - 1}/1:${big(next - 1)}`]);
  const opened = scan(dir, reused, true);
  t.equal(opened.dirtyTo, opened.end, 'the former life after its records is zeroed at the open');
  write(store, next, next + 20);
  store.close();
  store = await openStore(t, dir, SEGMENT_BYTES);
  t.equal(store.partition(0, voters).lastIndex(), next + 20, 'and the log goes on across rollovers and a reopen');
});

t.test('a spare that is gone when its turn comes leaves that segment made anew, and the log goes on', { skip: noAddon }, async (t) => {
  const dir = tempDir(t);
  const store = await withSpares(t, dir);
  const kept = spares(dir);
  t.ok(kept.length > 0, 'spares are kept');
  for (const f of kept) rmSync(join(dir, f));
  const next = rollOver(store, dir, 31);
  write(store, next, next + 10);
  t.equal(store.partition(0, voters).lastIndex(), next + 10, 'every write went in');
  t.equal(scan(dir, segments(dir).at(-1)!, true).records.filter((r) => r.kind === RecordKind.Entry).at(-1)?.index, next + 10, 'into segments made anew');
});

t.test('a node short of disk space keeps no spares: those kept are deleted, later releases too, until it has room', { skip: noAddon }, async (t) => {
  const dir = tempDir(t);
  const store = await withSpares(t, dir);
  t.ok(spares(dir).length > 0, 'spares are kept');
  store.keepSpares(false);
  await store.settled();
  t.same(spares(dir), [], 'short: the spares are deleted');
  let next = rollOver(store, dir, 31);
  next = rollOver(store, dir, next);
  store.recordSnapshot(0, meta(next - 1), `image-${next - 1}`);
  await store.settled();
  t.same(spares(dir), [], 'and segments released while short are deleted');
  t.equal(segments(dir).length, 1, 'all of them');
  store.keepSpares(true);
  next = rollOver(store, dir, next);
  next = rollOver(store, dir, next);
  store.recordSnapshot(0, meta(next - 1), `image-${next - 1}`);
  await store.settled();
  t.ok(spares(dir).length > 0, 'with room again, released segments are kept as spares again');
});

/** Bytes this process has had written to storage so far: dirtied page-cache folios, counted whole. */
const writtenBytes = (): number => Number(/^write_bytes: (\d+)/m.exec(readFileSync('/proc/self/io', 'utf8'))?.[1] ?? 0);

t.test('records written into a spare whose former life was written in large writes cost the disk their own pages only', { skip: noAddon }, async (t) => {
  // A folio of the page cache is as large as the write that made it (Linux 6.x), and a record that
  // dirties a byte of one has all of it written back. A spare's pages are dropped and read again in
  // small folios before it is used; kept as its former life left them, each small synced record
  // here wrote back a MiB or more (bench/README.md, "The log's blocks").
  const segmentBytes = 4 * 1024 * 1024;
  const dir = tempDir(t);
  const store = await openStore(t, dir, segmentBytes);
  store.partition(0, voters);
  // Former lives: batches of about 2 MiB, one write each.
  let next = 1;
  while (segments(dir).length < 4) {
    const batch = Array.from({ length: 1300 }, (_, k) => entry(next + k, 1, big(next + k)));
    next += batch.length;
    store.persist([item(0, batch, hs(1, next - 1))], true);
  }
  store.recordSnapshot(0, meta(next - 1), `image-${next - 1}`);
  await store.settled();
  t.ok(spares(dir).length > 0, `the released segments are spares (${spares(dir).join(', ')})`);
  const sparesBefore = spares(dir).length;
  next = rollOver(store, dir, next);
  const reused = segments(dir).at(-1);
  t.equal(spares(dir).length, sparesBefore - 1, 'the newest segment is made of a spare');
  // Past the segment's first MiB, where its former life's folios were largest (a folio is aligned
  // to its size, so those at the start of a file are small whatever the write).
  const filler = Array.from({ length: 800 }, (_, k) => entry(next + k, 1, big(next + k)));
  next += filler.length;
  store.persist([item(0, filler, hs(1, next - 1))], true);
  const before = writtenBytes();
  const appends = 100;
  for (let i = 0; i < appends; i++) store.persist([item(0, [entry(next, 1, 'x'.repeat(300))], hs(1, next++))], true);
  const perAppend = (writtenBytes() - before) / appends;
  t.equal(segments(dir).at(-1), reused, 'all of them written into that segment');
  t.ok(perAppend <= 16 * 1024, `each small synced record in the reused segment cost ${Math.round(perAppend)} bytes of disk writes (at most 16 KiB: its own pages)`);
});

t.test('without the native addon released segments are deleted, not kept, and the log goes on', async (t) => {
  // MOM_NO_NATIVE=1 is a node whose addon is missing (installed with --ignore-scripts, say).
  const dir = tempDir(t);
  const code = `
    import { WalStore } from './src/store/wal/index.js';
    import { native } from './src/native/native.js';
    import { EntryKind } from './src/raft/index.js';
    import { readdirSync } from 'node:fs';
    const voters = ${JSON.stringify(voters)};
    const store = await WalStore.open(process.env.DIR, { segmentBytes: ${SEGMENT_BYTES} });
    store.partition(0, voters);
    const data = (i) => new TextEncoder().encode(String(i).padEnd(1500, '.'));
    for (let i = 1; i <= 30; i++) store.persist([{ partition: 0, hardState: { term: 1, vote: null, commit: i }, entries: [{ index: i, term: 1, kind: EntryKind.Normal, data: data(i) }], snapshot: null }], true);
    const made = readdirSync(process.env.DIR).filter((f) => f.endsWith('.wal')).length;
    store.recordSnapshot(0, { index: 30, term: 1, voters }, 'image-30');
    await store.settled();
    for (let i = 31; i <= 40; i++) store.persist([{ partition: 0, hardState: { term: 1, vote: null, commit: i }, entries: [{ index: i, term: 1, kind: EntryKind.Normal, data: data(i) }], snapshot: null }], true);
    console.log(JSON.stringify({ addon: native !== null, made, files: readdirSync(process.env.DIR).sort(), last: store.partition(0, voters).lastIndex() }));
    store.close();
  `;
  const out = await new Promise<string>((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', code], {
      cwd: join(import.meta.dirname, '..', '..', '..'),
      env: { ...process.env, MOM_NO_NATIVE: '1', DIR: dir },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let text = '';
    child.stdout.on('data', (d: Buffer) => (text += d.toString()));
    child.once('exit', (c) => (c === 0 ? resolve(text) : reject(new Error(`exited ${c}: ${text}`))));
  });
  const got = JSON.parse(out.trim().split('\n').at(-1)!) as { addon: boolean; made: number; files: string[]; last: number };
  t.equal(got.addon, false, 'the addon is not loaded');
  t.ok(got.made > 2, `the log made ${got.made} segments before the snapshot`);
  t.same(got.files.filter((f) => f.startsWith('spare-')), [], 'no spare is kept');
  t.ok(got.files.filter((f) => f.endsWith('.wal')).length < got.made, `released segments are deleted (${got.files.join(', ')})`);
  t.equal(got.last, 40, 'and the log goes on');
});
