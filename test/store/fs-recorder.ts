// What a module does to the file system, in order, for tests of crash order that a power-cut layer
// cannot see: test/chaos/lose-unsynced.c treats making, renaming and removing files and folders as
// durable at once, so whether a folder is fsynced after such a change is checked here instead. Pass
// `mocks` to t.mockImport: every module the import loads then goes through these `node:fs` and
// `node:fs/promises`, which do the real work and log each change of a folder's entries ("mkdir P",
// "rm P", "rename A -> B") and each fsync or fdatasync ("fsync P"), sync or async, by path.
import * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';
import { resolve } from 'node:path';

export interface FsRecorder {
  readonly events: string[];
  readonly mocks: { 'node:fs': typeof fs; 'node:fs/promises': typeof fsp };
  /** The events from the first one that `first` matches on. */
  after(first: string): string[];
}

export function fsRecorder(): FsRecorder {
  const events: string[] = [];
  const paths = new Map<number, string>();
  const at = (p: fs.PathLike): string => resolve(String(p));
  const syncFd = (fd: number): void => void events.push(`fsync ${paths.get(fd) ?? `fd ${fd}`}`);
  const mockFs = {
    ...fs,
    openSync: (p: fs.PathLike, ...rest: unknown[]): number => {
      const fd = (fs.openSync as (p: fs.PathLike, ...rest: unknown[]) => number)(p, ...rest);
      paths.set(fd, at(p));
      return fd;
    },
    fsyncSync: (fd: number): void => {
      syncFd(fd);
      fs.fsyncSync(fd);
    },
    fdatasyncSync: (fd: number): void => {
      syncFd(fd);
      fs.fdatasyncSync(fd);
    },
    fdatasync: (fd: number, cb: fs.NoParamCallback): void => {
      syncFd(fd);
      fs.fdatasync(fd, cb);
    },
    mkdirSync: (p: fs.PathLike, opts?: fs.MakeDirectoryOptions): string | undefined => {
      const there = fs.existsSync(p);
      const made = fs.mkdirSync(p, opts);
      if (!there) events.push(`mkdir ${at(p)}`);
      return made;
    },
    rmSync: (p: fs.PathLike, opts?: fs.RmOptions): void => {
      const there = fs.existsSync(p);
      fs.rmSync(p, opts);
      if (there) events.push(`rm ${at(p)}`);
    },
    unlinkSync: (p: fs.PathLike): void => {
      fs.unlinkSync(p);
      events.push(`rm ${at(p)}`);
    },
    renameSync: (from: fs.PathLike, to: fs.PathLike): void => {
      fs.renameSync(from, to);
      events.push(`rename ${at(from)} -> ${at(to)}`);
    },
  } as typeof fs;
  const mockFsp = {
    ...fsp,
    open: async (p: fs.PathLike, ...rest: unknown[]): Promise<fsp.FileHandle> => {
      const handle = await (fsp.open as (p: fs.PathLike, ...rest: unknown[]) => Promise<fsp.FileHandle>)(p, ...rest);
      const sync = handle.sync.bind(handle);
      const datasync = handle.datasync.bind(handle);
      handle.sync = async () => {
        events.push(`fsync ${at(p)}`);
        await sync();
      };
      handle.datasync = async () => {
        events.push(`fsync ${at(p)}`);
        await datasync();
      };
      return handle;
    },
    rename: async (from: fs.PathLike, to: fs.PathLike): Promise<void> => {
      await fsp.rename(from, to);
      events.push(`rename ${at(from)} -> ${at(to)}`);
    },
  } as typeof fsp;
  return {
    events,
    mocks: { 'node:fs': mockFs, 'node:fs/promises': mockFsp },
    after(first: string): string[] {
      const i = events.indexOf(first);
      return i < 0 ? [] : events.slice(i);
    },
  };
}
