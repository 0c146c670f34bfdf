// An addon built before trimMallocAsync existed (4fc06e6 exported only advise and trimMalloc) deployed
// beside a newer bundle: the trimmer called it regardless from its timer, and the node stopped a
// second after its start, under systemd again and again (review of 2026-12-07). Now the trimmer does
// not start, and the node says which calls its addon lacks.
import t from 'tap';

type Trimmer = typeof import('../../src/native/malloc-trimmer.js');

t.test('an addon older than trimMallocAsync: the trimmer does not throw out of its timer', async (t) => {
  // The addon as 4fc06e6 built it: advise and trimMalloc only.
  const old = { advise: () => 0, trimMalloc: () => 1 };
  const { MallocTrimmer } = await t.mockImport<Trimmer>('../../src/native/malloc-trimmer.js', {
    '../../src/native/native.ts': { native: old, nativeMissing: null },
  });
  const errors: unknown[] = [];
  // Seen before tap's own handler, which would fail the run with the same error.
  const seen = (err: unknown): void => void errors.push(err);
  process.prependListener('uncaughtException', seen);
  const trimmer = new MallocTrimmer(5).start();
  await new Promise((r) => setTimeout(r, 60));
  trimmer.stop();
  process.removeListener('uncaughtException', seen);
  t.same(errors.map((e) => String(e)), [], 'no uncaught exception from the trimmer\'s timer (in a node: the process exits)');
});

t.test('olderAddon names the calls an older addon lacks', async (t) => {
  const { olderAddon } = await import('../../src/native/native.js');
  t.same(olderAddon({ advise: () => 0, trimMalloc: () => 1 }), ['trimMallocAsync', 'lockFile']);
  t.same(olderAddon({ advise: () => 0, trimMalloc: () => 1, trimMallocAsync: async () => 1 }), ['lockFile']);
  t.same(olderAddon({ advise: () => 0, trimMalloc: () => 1, trimMallocAsync: async () => 1, lockFile: () => 0 }), []);
});
