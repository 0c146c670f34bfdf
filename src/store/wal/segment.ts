// Segment files of the write-ahead log: `<seq>.wal`, 16 hex digits, preallocated to their nominal
// size (ftruncate: the rest reads as zeros), a 16-byte header, then records (record.ts).
//
// Opening a segment tells three endings apart (etcd's wal/repair.go, made stricter):
// - a clean end: nothing but zeros after the last record that holds;
// - a torn tail: bytes after it that are not a valid record, or records after the last one that
//   ends a write, and no later record says the log had been synced past them: a write that a crash
//   cut short, never acknowledged. It is cut off whole (zeroed), and everything before it kept;
// - damage: a later valid record whose durable frontier lies past the bad bytes, so they had been
//   synced, and acknowledged. That is corruption: StorageCorruptError, never a silent cut.
// Only the newest segment can have a torn tail: an older one was synced whole before the next began.
import { closeSync, fdatasyncSync, ftruncateSync, openSync, readdirSync, rmSync, writeSync, writevSync } from 'node:fs';
import { join } from 'node:path';
import { renameSyncedDurably } from '../durable.js';
import { StorageCorruptError } from '../storage-errors.js';
import { decodeRecord, type DecodedRecord } from './record.js';

export const SEGMENT_HEADER_BYTES = 16;
const MAGIC = Buffer.from('MOMWAL\u0000\u0001', 'latin1');

export const segmentName = (seq: number): string => `${seq.toString(16).padStart(16, '0')}.wal`;

/** The sequence numbers of the segments in `dir`, oldest first. */
export function listSegments(dir: string): number[] {
  return readdirSync(dir)
    .filter((f) => /^[0-9a-f]{16}\.wal$/.test(f))
    .map((f) => Number.parseInt(f.slice(0, 16), 16))
    .sort((a, b) => a - b);
}

function header(seq: number): Buffer {
  const h = Buffer.alloc(SEGMENT_HEADER_BYTES);
  MAGIC.copy(h, 0);
  h.writeUInt32LE(seq >>> 0, 8);
  h.writeUInt32LE(Math.floor(seq / 2 ** 32), 12);
  return h;
}

/**
 * A new segment, whole and durable before it is used: its header and `initial` records (the
 * checkpoints) written under a temporary name, the file sized to `bytes`, synced, renamed to its
 * name and the folder synced. A crash or a failed write leaves only the temporary file (deleted on
 * open), never a segment without its checkpoints. Returns its descriptor, open for reading and
 * writing.
 */
export function createSegment(dir: string, seq: number, bytes: number, initial: readonly Uint8Array[]): number {
  const tmp = join(dir, `${segmentName(seq)}.tmp`);
  const path = join(dir, segmentName(seq));
  try {
    const fd = openSync(tmp, 'w+', 0o600);
    try {
      writeAll(fd, [header(seq), ...initial], 0);
      const written = initial.reduce((n, b) => n + b.byteLength, SEGMENT_HEADER_BYTES);
      ftruncateSync(fd, Math.max(bytes, written));
      fdatasyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSyncedDurably(tmp, path);
  } catch (err) {
    rmSync(tmp, { force: true });
    throw err;
  }
  // Opened again by its name rather than kept open across the rename: whatever watches the file by
  // the name it was opened under (the chaos runs' storage fault layer) sees the segment's writes.
  return openSync(path, 'r+');
}

/** Writes every byte of `buffers` at `position` (writev may write less than asked). */
export function writeAll(fd: number, buffers: readonly Uint8Array[], position: number): void {
  let pending = buffers.slice();
  let at = position;
  while (pending.length > 0) {
    // IOV_MAX is 1024 on Linux: libuv writes at most that many buffers a call.
    const chunk = pending.slice(0, 1024);
    let n = writevSync(fd, chunk, at);
    at += n;
    let k = 0;
    while (k < chunk.length && n >= chunk[k]!.byteLength) n -= chunk[k++]!.byteLength;
    pending = pending.slice(k);
    if (n > 0) pending[0] = pending[0]!.subarray(n);
  }
}

export interface ScannedSegment {
  readonly records: DecodedRecord[];
  /** Where the next record goes: the end of the last record that holds. */
  readonly end: number;
  /** Bytes past `end` that are not zero (a torn tail, when nonzero), up to this offset. */
  readonly dirtyTo: number;
}

/** Offset just past the last nonzero byte of `b`. */
function lastNonZero(b: Buffer): number {
  const step = 4096;
  for (let hi = b.byteLength; hi > 0; hi -= step) {
    const lo = Math.max(0, hi - step);
    for (let i = hi - 1; i >= lo; i--) if (b[i] !== 0) return i + 1;
  }
  return 0;
}

/**
 * The records of a segment's bytes, checked as the header comment says. `newest`: whether it is the
 * log's newest segment (the only one that may have a torn tail).
 */
export function scanSegment(b: Buffer, seq: number, path: string, newest: boolean): ScannedSegment {
  const corrupt = (detail: string): StorageCorruptError => new StorageCorruptError({ path, partition: null, index: null }, detail);
  if (b.byteLength < SEGMENT_HEADER_BYTES || !b.subarray(0, SEGMENT_HEADER_BYTES).equals(header(seq))) throw corrupt('the segment header is not this segment\'s');
  const records: DecodedRecord[] = [];
  let pos = SEGMENT_HEADER_BYTES;
  for (;;) {
    const r = decodeRecord(b, pos, seq);
    if (r === null) break;
    records.push(r);
    pos += r.size;
  }
  // Records after the last one that ends a write belong to a write cut short.
  let whole = records.length;
  while (whole > 0 && !records[whole - 1]!.end) whole--;
  const cut = whole === 0 ? SEGMENT_HEADER_BYTES : records[whole - 1]!.offset + records[whole - 1]!.size;
  const dirtyTo = Math.max(lastNonZero(b), pos);
  if (dirtyTo <= cut) return { records, end: cut, dirtyTo: cut };
  if (!newest) throw corrupt(`bytes at offset ${cut} are not a whole write, in a segment that was synced whole`);
  // A torn tail is all unsynced: no record after the cut may say it had been synced.
  for (let q = cut; q < dirtyTo; q += 8) {
    const later = decodeRecord(b, q, seq);
    if (later !== null && later.frontier > cut) {
      throw corrupt(`the write at offset ${cut} is not whole, but the record at ${q} says the segment was synced through ${later.frontier}`);
    }
  }
  return { records: records.slice(0, whole), end: cut, dirtyTo };
}

/** Zeroes [from, to) of a segment and syncs it: a torn tail is cut before anything is appended there. */
export function zeroRange(fd: number, from: number, to: number): void {
  const zeros = Buffer.alloc(Math.min(1 << 20, Math.max(0, to - from)));
  for (let at = from; at < to; at += zeros.byteLength) writeSync(fd, zeros, 0, Math.min(zeros.byteLength, to - at), at);
  fdatasyncSync(fd);
}
