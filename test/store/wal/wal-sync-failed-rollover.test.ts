// A turn's fdatasync on the thread pool that fails after a local snapshot, meanwhile, rolled the log
// over into a new segment: the note of the failure names a segment that is no longer the newest.
// The rollover's own sync of that segment goes through a descriptor of its own, which the kernel
// would tell of the same error (test/store/wal/sync-races.test.ts), but the new segment may hold
// copies of kept entries whose source is gone, so no cut is known to be honest: the next start
// refuses, as for damage, and
// the node is rebuilt from its peers (docs/storage.md). Found by review (stop 46).
import * as fs from 'node:fs';
import t from 'tap';
import { WalStore } from '../../../src/store/wal/index.js';
import { voters } from '../fixtures/raft-log-writer.js';
import { entry, hs, item, segments, tempDir } from './wal-helpers.js';

t.test('a failed turn sync overtaken by a rollover: the next start refuses the log instead of guessing a cut', async (t) => {
  let failNext = false;
  const mocks = {
    'node:fs': {
      ...fs,
      fdatasync: (fd: number, cb: fs.NoParamCallback): void => {
        if (!failNext) return fs.fdatasync(fd, cb);
        failNext = false;
        // The writeback error reaches this call; the sync the rollover makes meanwhile is told nothing.
        setTimeout(() => cb(Object.assign(new Error('EIO: i/o error, fdatasync'), { code: 'EIO' })), 20);
      },
    } as typeof fs,
  };
  const wal = await t.mockImport<typeof import('../../../src/store/wal/index.js')>('../../../src/store/wal/index.js', mocks);
  const dir = tempDir(t);
  const store = await wal.WalStore.open(dir, { segmentBytes: 4096 });
  store.partition(0, voters);
  for (let i = 1; i <= 3; i++) store.persist([item(0, [entry(i, 1, 'x'.repeat(900))], hs(1, i))], true);
  store.append([item(0, [entry(4, 1, 'y'.repeat(900))], hs(1, 3))]);
  failNext = true;
  const turn = store.sync();
  // A local snapshot recorded while the turn's sync is on the thread pool: its write rolls over.
  store.recordSnapshot(0, { index: 3, term: 1, voters }, 'p0-3-1', 1);
  t.ok(segments(dir).length >= 2, `the snapshot's write rolled over (${segments(dir).join(', ')})`);
  await t.rejects(turn, /EIO/);
  store.close();
  t.ok(fs.existsSync(`${dir}/SYNC-FAILED`), 'the failure is noted');
  // The note names segment 1, which is no longer the newest: the open refuses, naming the note.
  await t.rejects(WalStore.open(dir, { segmentBytes: 4096 }), { name: 'StorageCorruptError', message: /SYNC-FAILED.*a sync of segment 1 failed, but the newest segment is 2/ });
});
