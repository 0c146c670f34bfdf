// The broker's native calls (src/native/mom_native.c, built by node-gyp into build/Release at
// `npm ci`): what Node cannot do on its own. malloc_trim gives a node's free heap memory back
// (malloc-trimmer.ts); flock holds a log's folder for one process (src/store/wal/wal-store.ts);
// posix_fadvise serves `npm run bench:segment-blocks`. Loaded once; where the
// addon is missing (installed with --ignore-scripts, or a platform it does not build on), or with
// MOM_NO_NATIVE=1, `native` is null and every caller goes on without what it gives, as builds
// before it did.
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export interface Native {
  /** posix_fadvise over [offset, offset + length) (length 0: to the end of the file): 0 or an errno. */
  advise(fd: number, offset: number, length: number, advice: Advice): number;
  /** malloc_trim(0): 1 if memory went back to the kernel, 0 if none, -1 without glibc. */
  trimMalloc(): number;
  /**
   * trimMalloc on libuv's thread pool. Absent from the first addons (a bundle deployed beside an older
   * `build/Release`): a node that called it regardless stopped a second after its start.
   */
  trimMallocAsync?(): Promise<number>;
  /**
   * flock(fd, LOCK_EX | LOCK_NB): 0, or an errno (EWOULDBLOCK: another open file holds it). Absent
   * from addons built before it (a bundle deployed beside an older `build/Release`).
   */
  lockFile?(fd: number): number;
}

/** posix_fadvise's advice, by Linux's numbers. */
export const Advice = {
  /** Reads without readahead: each read brings in only its own pages. */
  Random: 1,
  WillNeed: 3,
  /** Clean pages leave the page cache. */
  DontNeed: 4,
} as const;
export type Advice = (typeof Advice)[keyof typeof Advice];

const ADDON = join('build', 'Release', 'mom_native.node');

/**
 * The addon under the nearest folder above this module that holds the package (src/ or dist/
 * alike), or why there is none.
 */
function load(): { addon: Native } | { missing: string } {
  if (process.env.MOM_NO_NATIVE === '1') return { missing: 'MOM_NO_NATIVE=1' };
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (existsSync(join(dir, 'package.json'))) {
      const path = join(dir, ADDON);
      if (!existsSync(path)) return { missing: `${path} is not there` };
      try {
        return { addon: createRequire(import.meta.url)(path) as Native };
      } catch (err) {
        // Built for another Node (a different ABI), or for another machine.
        return { missing: `${path} does not load: ${(err as Error).message.split('\n')[0]}` };
      }
    }
    const up = dirname(dir);
    if (up === dir) return { missing: 'no package folder above this module' };
    dir = up;
  }
}

const loaded = load();
export const native: Native | null = 'addon' in loaded ? loaded.addon : null;
/** Why `native` is null; null when it is loaded. */
export const nativeMissing: string | null = 'missing' in loaded ? loaded.missing : null;

/** The calls of this build that `addon`, built by an older one, lacks (none: it is up to date). */
export function olderAddon(addon: Native): string[] {
  return (['trimMallocAsync', 'lockFile'] as const).filter((name) => typeof addon[name] !== 'function');
}
