// The writes a log takes, as pure steps from one LogState to the next. Each checks what Raft
// guarantees of a correct caller (no gap, no truncation of committed or snapshotted entries, terms and
// commit never going back, one vote per term, commit <= last index, compaction never past a durable
// snapshot) and throws InvariantError otherwise, before anything is written: a refused batch leaves
// the log as it was.
import { EntryKind, invariant, type Entry, type HardState, type Index, type SnapshotMeta } from '../../raft/index.js';
import { appended, compacted, restartedAt, termAt, truncated, type LogState, type SnapshotRecord } from './log-state.js';

/** A snapshot received from the leader: the log restarts after it. */
export function installSnapshot(p: number, s: LogState, snap: SnapshotRecord): LogState {
  const { index } = snap.meta;
  invariant(index >= (s.snap?.meta.index ?? 0), `partition ${p}: snapshot at ${index} older than the one at ${s.snap?.meta.index}`);
  invariant(index >= s.hard.commit, `partition ${p}: snapshot at ${index} behind the durable commit ${s.hard.commit}`);
  return restartedAt(s, { meta: { ...snap.meta, voters: snap.meta.voters.slice() }, ref: snap.ref });
}

/** Entries appended after cutting any conflicting suffix at entries[0].index. */
export function appendEntries(p: number, s: LogState, entries: readonly Entry[]): LogState {
  if (entries.length === 0) return s;
  const first = entries[0]!.index;
  invariant(first > s.offset, `partition ${p}: append at ${first} below the compacted log at ${s.offset}`);
  invariant(first <= s.last + 1, `partition ${p}: append at ${first} leaves a gap after ${s.last}`);
  let prevTerm = termAt(s, first - 1);
  for (let k = 0; k < entries.length; k++) {
    const e = entries[k]!;
    invariant(e.index === first + k, `partition ${p}: entries not contiguous at ${e.index}`);
    invariant(e.term >= prevTerm, `partition ${p}: term ${e.term} at ${e.index} below the previous ${prevTerm}`);
    invariant(e.kind === EntryKind.Normal || e.kind === EntryKind.Noop, `partition ${p}: unknown entry kind ${e.kind}`);
    prevTerm = e.term;
  }
  let next = s;
  if (first <= s.last) {
    // Only uncommitted entries may conflict (§5.3, Log Matching; §5.4 Leader Completeness).
    const floor = Math.max(s.hard.commit, s.snap?.meta.index ?? 0);
    invariant(first > floor, `partition ${p}: truncating at ${first} would drop committed entries (through ${floor})`);
    next = truncated(s, first);
  }
  return appended(next, entries);
}

export function setHardState(p: number, s: LogState, hs: HardState): LogState {
  const old = s.hard;
  invariant(hs.term >= old.term, `partition ${p}: term going back from ${old.term} to ${hs.term}`);
  invariant(hs.term > old.term || old.vote === null || hs.vote === old.vote, `partition ${p}: second vote in term ${hs.term} (${old.vote} then ${hs.vote})`);
  invariant(hs.commit >= old.commit, `partition ${p}: commit going back from ${old.commit} to ${hs.commit}`);
  invariant(hs.commit <= s.last, `partition ${p}: commit ${hs.commit} past the last index ${s.last}`);
  return { ...s, hard: { term: hs.term, vote: hs.vote, commit: hs.commit } };
}

/** Drops entries through `index`; never past the recorded snapshot, the only other copy of them. */
export function compactTo(p: number, s: LogState, index: Index): LogState {
  if (index <= s.offset) return s;
  const snapIndex = s.snap?.meta.index ?? 0;
  invariant(index <= snapIndex, `partition ${p}: compacting to ${index} past the snapshot at ${snapIndex}`);
  invariant(index <= s.last, `partition ${p}: compacting to ${index} past the last index ${s.last}`);
  return compacted(s, index);
}

/** A snapshot taken here (MemoryStorage.createSnapshot's checks, and more), then compaction to `compactTo`. */
export function localSnapshot(p: number, s: LogState, meta: SnapshotMeta, ref: string, to: Index): LogState {
  const current = s.snap?.meta.index ?? 0;
  invariant(meta.index > current, `partition ${p}: snapshot at ${meta.index} not newer than the one at ${current}`);
  invariant(meta.index <= s.last, `partition ${p}: snapshot at ${meta.index} past the last index ${s.last}`);
  invariant(meta.index <= s.hard.commit, `partition ${p}: snapshot at ${meta.index} of uncommitted entries (commit ${s.hard.commit})`);
  invariant(meta.term === termAt(s, meta.index), `partition ${p}: snapshot term ${meta.term} but entry ${meta.index} has term ${termAt(s, meta.index)}`);
  invariant(to <= meta.index, `partition ${p}: compacting to ${to} past the new snapshot at ${meta.index}`);
  return compactTo(p, { ...s, snap: { meta: { ...meta, voters: meta.voters.slice() }, ref } }, to);
}
