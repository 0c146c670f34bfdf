// The record codec of the write-ahead log: one record per entry, hard state, snapshot, compaction or
// checkpoint, each checked on its own, in the manner of etcd's wal/encoder.go and decoder.go.
//
// A record, little-endian, padded to 8 bytes so that a scan for valid records can step by 8:
//
//   0  u32  body length (bytes 8 .. 8+length: the fields below and the payload, not the padding)
//   4  u32  CRC-32 of the body, seeded with the segment's sequence number
//   8  u8   kind               9  u8  entry kind (ENTRY, COPY)     10 u16 flags (1: ends a write)
//   12 u32  partition
//   16 u32  this record's offset in its segment
//   20 u32  the durable frontier: the offset below which the segment was fsynced when this was written
//   24 f64  term                32 f64 index (safe integers, exact in a double)
//   40 ...  payload
//
// Seeding the CRC with the segment's number and holding the record's own offset make a stale record
// (one from another segment, or left at another place) fail its check. The frontier tells a torn tail
// from damage (segment.ts): a tail is torn only where nothing later says it had been synced. The last
// record of each write says so (END): a write is kept whole or not at all, since a crash can cut a
// write short (a process killed in the middle of writev, pages lost in a power cut).
//
// CRC-32 rather than CRC-32C: Node's zlib.crc32 is native; a CRC-32C in JavaScript costs several times
// the CPU per byte, and both detect every burst of up to 32 bits and the torn writes this log meets.
import { crc32 } from 'node:zlib';

export const RecordKind = {
  /** A log entry, appended after cutting any conflicting suffix at its index. */
  Entry: 1,
  /** The hard state (term, vote, commit). */
  HardState: 2,
  /** A snapshot received from the leader: the log restarts after it. */
  InstalledSnapshot: 3,
  /** A snapshot taken here, and the compaction that follows it. */
  LocalSnapshot: 4,
  /** The log's front dropped through an index. */
  Compaction: 5,
  /** A partition's whole picture but its entries, at the start of every segment. */
  Checkpoint: 6,
  /** An entry written again, forward, so that its old segment can be deleted: relocates, never truncates. */
  Copy: 7,
} as const;
export type RecordKind = (typeof RecordKind)[keyof typeof RecordKind];

export const HEADER_BYTES = 40;
/** Bytes after the length and CRC that every body has: the body of a record with no payload. */
export const FIXED_BODY_BYTES = HEADER_BYTES - 8;
/** A body longer than this is taken as garbage: a torn write, not a record. */
export const MAX_BODY_BYTES = 512 * 1024 * 1024;

export interface RecordFields {
  readonly kind: RecordKind;
  readonly entryKind: number;
  readonly partition: number;
  readonly term: number;
  readonly index: number;
}

/** Flag of the last record of a write: the records since the previous one are one batch. */
export const END = 1;

export interface DecodedRecord extends RecordFields {
  /** Whether this record ends its write. */
  readonly end: boolean;
  /** Offset of the record in its segment. */
  readonly offset: number;
  /** Bytes the record takes, padding included: the next record starts at offset + size. */
  readonly size: number;
  readonly frontier: number;
  readonly payload: Uint8Array;
}

export const padded = (n: number): number => (n + 7) & ~7;

/** Bytes a record with `payloadBytes` of payload takes in a segment. */
export const recordSize = (payloadBytes: number): number => padded(HEADER_BYTES + payloadBytes);

const ZEROS = new Uint8Array(8);

/**
 * The buffers of one record, for writev: its header, then the payload as given (never copied), then
 * padding. `seed` is the segment's sequence number.
 */
export function encodeRecord(fields: RecordFields, payload: Uint8Array, offset: number, frontier: number, seed: number, end: boolean): Uint8Array[] {
  const header = Buffer.allocUnsafe(HEADER_BYTES);
  header.writeUInt32LE(FIXED_BODY_BYTES + payload.byteLength, 0);
  header.writeUInt8(fields.kind, 8);
  header.writeUInt8(fields.entryKind, 9);
  header.writeUInt16LE(end ? END : 0, 10);
  header.writeUInt32LE(fields.partition, 12);
  header.writeUInt32LE(offset, 16);
  header.writeUInt32LE(frontier, 20);
  header.writeDoubleLE(fields.term, 24);
  header.writeDoubleLE(fields.index, 32);
  // Never crc32(empty, value): on Node 20, once optimized, it answered 0 for some values instead of
  // `value` (seen here: a no-op entry's record written with CRC 0, and refused on open).
  const headerCrc = crc32(header.subarray(8), seed >>> 0);
  const crc = payload.byteLength === 0 ? headerCrc : crc32(payload, headerCrc);
  header.writeUInt32LE(crc, 4);
  const pad = recordSize(payload.byteLength) - HEADER_BYTES - payload.byteLength;
  return pad === 0 ? [header, payload] : [header, payload, ZEROS.subarray(0, pad)];
}

/**
 * The record at `at` of `b`, bytes of a segment from its offset `position` on, or null when there is
 * none that holds there: zeros (the unwritten rest of a preallocated segment), a torn write, a stale
 * record, or garbage. The payload is a view into `b`.
 */
export function decodeRecord(b: Buffer, at: number, seed: number, position = 0): DecodedRecord | null {
  if (at + HEADER_BYTES > b.byteLength) return null;
  const bodyLen = b.readUInt32LE(at);
  if (bodyLen < FIXED_BODY_BYTES || bodyLen > MAX_BODY_BYTES || at + 8 + bodyLen > b.byteLength) return null;
  const offset = position + at;
  if (b.readUInt32LE(at + 16) !== offset) return null;
  const kind = b.readUInt8(at + 8);
  if (kind < RecordKind.Entry || kind > RecordKind.Copy) return null;
  const body = b.subarray(at + 8, at + 8 + bodyLen);
  if (crc32(body, seed >>> 0) !== b.readUInt32LE(at + 4)) return null;
  const payload = body.subarray(FIXED_BODY_BYTES);
  return {
    kind: kind as RecordKind,
    entryKind: b.readUInt8(at + 9),
    end: (b.readUInt16LE(at + 10) & END) !== 0,
    partition: b.readUInt32LE(at + 12),
    offset,
    size: padded(8 + bodyLen),
    frontier: b.readUInt32LE(at + 20),
    term: b.readDoubleLE(at + 24),
    index: b.readDoubleLE(at + 32),
    payload: new Uint8Array(payload.buffer, payload.byteOffset, payload.byteLength),
  };
}

const utf8 = new TextEncoder();
const fromUtf8 = new TextDecoder('utf-8', { fatal: true });

/** A small record's payload as JSON: hard states, snapshots and checkpoints are rare and tiny. */
export const jsonPayload = (value: unknown): Uint8Array => utf8.encode(JSON.stringify(value));
export const parseJsonPayload = (payload: Uint8Array): unknown => JSON.parse(fromUtf8.decode(payload));
