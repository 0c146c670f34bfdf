// The errors of the stores: a log or state file found damaged, shared by the stores that check what
// they read; a log another process holds.
import type { Index } from '../raft/index.js';

/** What is known of where corruption was found. */
export interface CorruptionSite {
  readonly path: string;
  /** Null when the damage is not tied to one partition (a broken page, a failed quick_check). */
  readonly partition: number | null;
  readonly index: Index | null;
}

/**
 * The Raft log on disk is damaged: a record or row fails its CRC, the log has a hole, a synced record
 * cannot be read. Never retry or repair silently: the partition (or node) must not start on it.
 */
export class StorageCorruptError extends Error {
  override name = 'StorageCorruptError';
  readonly path: string;
  readonly partition: number | null;
  readonly index: Index | null;

  constructor(site: CorruptionSite, detail: string, options?: ErrorOptions) {
    const where = [
      site.partition === null ? null : `partition ${site.partition}`,
      site.index === null ? null : `index ${site.index}`,
    ].filter((w) => w !== null);
    super(`raft log storage corrupt (${site.path}${where.length > 0 ? `, ${where.join(', ')}` : ''}): ${detail}`, options);
    this.path = site.path;
    this.partition = site.partition;
    this.index = site.index;
  }
}

/** Another process holds the log (its LOCK names a live process): another node runs on this folder. */
export class LogInUseError extends Error {
  override name = 'LogInUseError';
}
