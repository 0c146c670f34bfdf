// The entries one partition keeps below its compacted Raft log, because its state still points at the
// message bodies they carry (docs/design/bodies-in-log.md): index -> (segment, offset, bytes), sorted
// by index, in typed arrays (20 bytes an entry: 20 MiB for a backlog of 1,000,000 single sends, 200
// KiB for the same messages sent in batches of 100). The Raft core never sees them; Locations keeps
// the places of the Raft log's own entries. Segment 0 marks an entry whose place is not known yet
// (replay fills it from a copy further on, or the log is damaged). How many entries each segment
// holds, and their bytes, are counted as they change, so that weighing a purge costs the number of
// segments, not the number of entries kept (a backlog of 200,000 took 26-36 ms a weighing).
import type { Index } from '../../raft/index.js';

export class KeptBodies {
  private idx = new Float64Array(16);
  private segs = new Uint32Array(16);
  private offs = new Uint32Array(16);
  private lens = new Uint32Array(16);
  private count = 0;
  /** Entries kept per segment (segment 0: place not known), only segments holding some. */
  private perSegment = new Map<number, number>();
  private totalBytes = 0;

  get size(): number {
    return this.count;
  }

  /** The highest index kept, or 0. */
  get last(): Index {
    return this.count === 0 ? 0 : this.idx[this.count - 1]!;
  }

  /** The indexes kept, ascending. */
  indexes(): Index[] {
    return Array.from(this.idx.subarray(0, this.count));
  }

  /** Keeps `index`, above every index kept so far. */
  push(index: Index, segment: number, offset: number, bytes: number): void {
    if (this.count === this.idx.length) this.grow(this.count * 2);
    this.idx[this.count] = index;
    this.segs[this.count] = segment;
    this.offs[this.count] = offset;
    this.lens[this.count] = bytes;
    this.count++;
    this.counted(segment, bytes, 1);
  }

  has(index: Index): boolean {
    return this.find(index) >= 0;
  }

  /** The place of a kept entry, or null. */
  place(index: Index): { segment: number; offset: number; bytes: number } | null {
    const k = this.find(index);
    return k < 0 ? null : { segment: this.segs[k]!, offset: this.offs[k]!, bytes: this.lens[k]! };
  }

  /** Moves a kept entry (a copy written forward); false when it is not kept. */
  set(index: Index, segment: number, offset: number, bytes: number): boolean {
    const k = this.find(index);
    if (k < 0) return false;
    this.counted(this.segs[k]!, this.lens[k]!, -1);
    this.counted(segment, bytes, 1);
    this.segs[k] = segment;
    this.offs[k] = offset;
    this.lens[k] = bytes;
    return true;
  }

  /** Stops keeping `indexes` (ascending); the caller has checked that each is kept. */
  remove(indexes: readonly Index[]): void {
    let w = 0;
    let d = 0;
    for (let r = 0; r < this.count; r++) {
      const i = this.idx[r]!;
      while (d < indexes.length && indexes[d]! < i) d++;
      if (d < indexes.length && indexes[d] === i) {
        this.counted(this.segs[r]!, this.lens[r]!, -1);
        continue;
      }
      this.idx[w] = i;
      this.segs[w] = this.segs[r]!;
      this.offs[w] = this.offs[r]!;
      this.lens[w] = this.lens[r]!;
      w++;
    }
    this.count = w;
    if (this.idx.length > 64 && this.count * 4 < this.idx.length) this.grow(Math.max(16, this.count * 2));
  }

  clear(): void {
    this.count = 0;
    this.perSegment.clear();
    this.totalBytes = 0;
    if (this.idx.length > 64) this.grow(16);
  }

  /** The first kept index whose place is not known, or null. */
  firstUnknown(): Index | null {
    if (!this.perSegment.has(0)) return null;
    for (let k = 0; k < this.count; k++) if (this.segs[k] === 0) return this.idx[k]!;
    return null;
  }

  /** Whether any kept entry lies in a segment at or before `segment`. */
  holds(segment: number): boolean {
    for (const s of this.perSegment.keys()) if (s <= segment) return true;
    return false;
  }

  /** The kept indexes whose entries lie in `segment`, ascending. */
  indexesIn(segment: number): Index[] {
    const out: Index[] = [];
    if (!this.perSegment.has(segment)) return out;
    for (let k = 0; k < this.count; k++) if (this.segs[k] === segment) out.push(this.idx[k]!);
    return out;
  }

  /** Bytes of the records kept. */
  bytes(): number {
    return this.totalBytes;
  }

  private counted(segment: number, bytes: number, sign: 1 | -1): void {
    const n = (this.perSegment.get(segment) ?? 0) + sign;
    if (n === 0) this.perSegment.delete(segment);
    else this.perSegment.set(segment, n);
    this.totalBytes += sign * bytes;
  }

  private find(index: Index): number {
    let lo = 0;
    let hi = this.count - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      const v = this.idx[mid]!;
      if (v === index) return mid;
      if (v < index) lo = mid + 1;
      else hi = mid - 1;
    }
    return -1;
  }

  private grow(size: number): void {
    const idx = new Float64Array(size);
    const segs = new Uint32Array(size);
    const offs = new Uint32Array(size);
    const lens = new Uint32Array(size);
    idx.set(this.idx.subarray(0, this.count));
    segs.set(this.segs.subarray(0, this.count));
    offs.set(this.offs.subarray(0, this.count));
    lens.set(this.lens.subarray(0, this.count));
    this.idx = idx;
    this.segs = segs;
    this.offs = offs;
    this.lens = lens;
  }
}

/**
 * Ascending indexes as runs, [first, count, first, count, ...]: the form records and checkpoints
 * store them in (a backlog sent in order is one run).
 */
export function toRuns(indexes: readonly Index[]): number[] {
  const out: number[] = [];
  for (const i of indexes) {
    const n = out.length;
    if (n > 0 && out[n - 2]! + out[n - 1]! === i) out[n - 1] = out[n - 1]! + 1;
    else out.push(i, 1);
  }
  return out;
}

/** The indexes of runs written by toRuns(); null when `runs` is not such a list. */
export function fromRuns(runs: unknown): Index[] | null {
  if (!Array.isArray(runs) || runs.length % 2 !== 0) return null;
  const out: Index[] = [];
  for (let k = 0; k < runs.length; k += 2) {
    const first: unknown = runs[k];
    const n: unknown = runs[k + 1];
    if (!Number.isSafeInteger(first) || !Number.isSafeInteger(n) || (n as number) < 1 || (first as number) < 1) return null;
    if (out.length > 0 && (first as number) <= out[out.length - 1]!) return null;
    for (let i = 0; i < (n as number); i++) out.push((first as number) + i);
  }
  return out;
}
