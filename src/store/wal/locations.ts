// Where each live entry of one partition lies: (segment, offset, bytes) for the indexes
// first..first+size-1, in typed arrays (12 bytes an entry), in the manner of raft-engine's memtable.
// Segment 0 marks an entry whose place is not known yet (replay fills it, or the log is damaged).

export class Locations {
  /** The index of slot 0. */
  private base = 1;
  private start = 0;
  private count = 0;
  private segs = new Uint32Array(64);
  private offs = new Uint32Array(64);
  private lens = new Uint32Array(64);

  /** The first index held (meaningful when size > 0). */
  get first(): number {
    return this.base;
  }

  get size(): number {
    return this.count;
  }

  /** Forgets everything; the next push is index `next`. */
  reset(next: number): void {
    this.base = next;
    this.start = 0;
    this.count = 0;
  }

  /** Appends the location of index first+size (the caller keeps indexes contiguous). */
  push(segment: number, offset: number, bytes: number): void {
    if (this.start + this.count === this.segs.length) this.grow();
    this.segs[this.start + this.count] = segment;
    this.offs[this.start + this.count] = offset;
    this.lens[this.start + this.count] = bytes;
    this.count++;
  }

  /** Drops indexes from `index` on. */
  truncateFrom(index: number): void {
    this.count = Math.max(0, Math.min(this.count, index - this.base));
  }

  /** Drops indexes through `index`. */
  dropThrough(index: number): void {
    const n = Math.min(this.count, Math.max(0, index + 1 - this.base));
    this.start += n;
    this.count -= n;
    this.base += n;
    if (this.count === 0) {
      this.base = Math.max(this.base, index + 1);
      this.start = 0;
    }
  }

  has(index: number): boolean {
    return index >= this.base && index < this.base + this.count;
  }

  segment(index: number): number {
    return this.segs[this.start + index - this.base]!;
  }

  offset(index: number): number {
    return this.offs[this.start + index - this.base]!;
  }

  /** Bytes of the entry's record. */
  bytes(index: number): number {
    return this.lens[this.start + index - this.base]!;
  }

  /** Bytes of every entry's record. */
  totalBytes(): number {
    let n = 0;
    for (let k = this.start; k < this.start + this.count; k++) n += this.lens[k]!;
    return n;
  }

  /** Moves an entry (a copy written forward). */
  set(index: number, segment: number, offset: number, bytes: number): void {
    this.segs[this.start + index - this.base] = segment;
    this.offs[this.start + index - this.base] = offset;
    this.lens[this.start + index - this.base] = bytes;
  }

  /** The first index whose place is not known, or null. */
  firstUnknown(): number | null {
    for (let k = this.start; k < this.start + this.count; k++) if (this.segs[k] === 0) return this.base + k - this.start;
    return null;
  }

  /** Whether any of these entries lies in a segment at or before `segment`. */
  holds(segment: number): boolean {
    for (let k = this.start; k < this.start + this.count; k++) if (this.segs[k]! <= segment) return true;
    return false;
  }

  /** The indexes whose entries lie in `segment`, in order. */
  indexesIn(segment: number): number[] {
    const out: number[] = [];
    for (let k = this.start; k < this.start + this.count; k++) if (this.segs[k] === segment) out.push(this.base + k - this.start);
    return out;
  }

  private grow(): void {
    // Compact to the front when half the room is dropped entries; otherwise double.
    const size = this.count * 2 > this.segs.length ? this.segs.length * 2 : this.segs.length;
    const segs = new Uint32Array(size);
    const offs = new Uint32Array(size);
    const lens = new Uint32Array(size);
    segs.set(this.segs.subarray(this.start, this.start + this.count));
    offs.set(this.offs.subarray(this.start, this.start + this.count));
    lens.set(this.lens.subarray(this.start, this.start + this.count));
    this.segs = segs;
    this.offs = offs;
    this.lens = lens;
    this.start = 0;
  }
}
