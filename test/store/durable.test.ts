// The durable file moves every image and identity file goes through (src/store/durable.ts): what a
// reader finds after them. Their crash order (fsync, rename, folder fsync) is what the power-cut
// tests and the chaos runs exercise.
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { renameDurably, renameSyncedDurably, writeFileDurably } from '../../src/store/durable.js';
import { fsRecorder } from './fs-recorder.js';

const dir = mkdtempSync(join(tmpdir(), 'mom-durable-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

t.test('renameDurably replaces the target whole, in one folder or across two', async (t) => {
  const other = join(dir, 'other');
  mkdirSync(other);
  writeFileSync(join(dir, 'a.part'), 'new');
  writeFileSync(join(dir, 'a'), 'old');
  await renameDurably(join(dir, 'a.part'), join(dir, 'a'));
  t.equal(readFileSync(join(dir, 'a'), 'utf8'), 'new');
  t.notOk(existsSync(join(dir, 'a.part')));
  writeFileSync(join(other, 'b'), 'moved');
  await renameDurably(join(other, 'b'), join(dir, 'b'), { synced: true });
  t.equal(readFileSync(join(dir, 'b'), 'utf8'), 'moved');
  t.strictSame(readdirSync(other), []);
  renameSyncedDurably(join(dir, 'b'), join(other, 'c'));
  t.equal(readFileSync(join(other, 'c'), 'utf8'), 'moved');
  await t.rejects(renameDurably(join(dir, 'missing'), join(dir, 'x')), { code: 'ENOENT' }, 'nothing to move is an error, not an empty file');
  t.notOk(existsSync(join(dir, 'x')));
});

t.test('writeFileDurably leaves the content and no temporary file', async (t) => {
  writeFileDurably(join(dir, 'id.json'), '{"a":1}');
  writeFileDurably(join(dir, 'id.json'), new Uint8Array(Buffer.from('{"a":2}')));
  t.equal(readFileSync(join(dir, 'id.json'), 'utf8'), '{"a":2}');
  t.notOk(existsSync(join(dir, 'id.json.tmp')));
});

t.test('mkdirDurably records each folder it makes in its parent, the deepest first, and a folder already there costs nothing', async (t) => {
  const rec = fsRecorder();
  const { mkdirDurably } = await t.mockImport<typeof import('../../src/store/durable.js')>('../../src/store/durable.js', rec.mocks);
  const base = join(dir, 'made');
  mkdirSync(base);
  mkdirDurably(join(base, 'a', 'b', 'c'));
  t.ok(existsSync(join(base, 'a', 'b', 'c')));
  t.strictSame(
    rec.events.filter((e) => e.startsWith('fsync')),
    [`fsync ${join(base, 'a', 'b')}`, `fsync ${join(base, 'a')}`, `fsync ${base}`],
    'c is recorded in b, b in a, a in the folder that was there',
  );
  rec.events.length = 0;
  mkdirDurably(join(base, 'a', 'b', 'c'));
  t.strictSame(rec.events, []);
  // A path that goes through a folder not there and back out of it (a data folder given so).
  mkdirDurably(join(base, 'x', '..', 'y', 'z'));
  t.ok(existsSync(join(base, 'y', 'z')));
  t.strictSame(rec.events.filter((e) => e.startsWith('fsync')), [`fsync ${join(base, 'y')}`, `fsync ${base}`], 'z in y, y in the folder that was there');
});
