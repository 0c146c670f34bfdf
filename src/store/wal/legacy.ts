// Opening a node's log where an older version kept it in SQLite (`raft-log.db`): the log is copied
// into a write-ahead log built beside it (`wal.importing`), which becomes `wal` by one rename once
// synced, so a crash during the copy leaves the old log in charge and the copy is simply made again.
// The old file is then kept as `raft-log.db.imported`, for the operator to delete.
import { existsSync, renameSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import type { NodeId } from '../../raft/index.js';
import { fsyncPath } from '../durable.js';
import { RaftLogStore } from '../raft-log/index.js';
import { LogInUseError } from '../storage-errors.js';
import { WalStore, logHolder, type WalOptions } from './wal-store.js';

export const WAL_FOLDER = 'wal';
const LEGACY_FILE = 'raft-log.db';

/** The node's log in `dataDir`, imported first from an older version's SQLite log if there is one. */
export async function openNodeLog(dataDir: string, partitions: number, voters: readonly NodeId[], opts: WalOptions = {}): Promise<WalStore> {
  const walDir = join(dataDir, WAL_FOLDER);
  const legacy = join(dataDir, LEGACY_FILE);
  if (!existsSync(walDir) && existsSync(legacy)) {
    const importing = `${walDir}.importing`;
    // A copy another process is making (two nodes started on one folder) is not removed under it:
    // the second is refused as it would be by the log itself (review of 2026-12-07).
    const holder = existsSync(importing) ? logHolder(importing) : null;
    if (holder !== null) throw new LogInUseError(`the log in ${dataDir} is being imported by ${holder}`);
    rmSync(importing, { recursive: true, force: true });
    const old = await RaftLogStore.open(legacy);
    const wal = await WalStore.open(importing, opts);
    try {
      for (let p = 0; p < partitions; p++) {
        const log = old.partition(p, voters);
        log.verify();
        if (log.lastIndex() > 0 || log.hardState().term > 0) wal.adopt(p, log);
      }
    } finally {
      wal.close();
      old.close();
    }
    renameSync(importing, walDir);
    fsyncPath(dataDir);
  }
  if (existsSync(legacy)) {
    // SQLite removed its -wal and -shm files on close; the database itself is kept, renamed.
    renameSync(legacy, `${legacy}.imported`);
    fsyncPath(dataDir);
  }
  return WalStore.open(walDir, opts);
}
