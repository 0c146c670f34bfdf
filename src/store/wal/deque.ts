// A queue with O(1) removal at the front, for the entries a partition keeps in memory. An Array's
// shift() moves every element once the array is large (V8 cannot trim a backing store in its large
// object space): a cache of 40,000 small entries cost a 320 KB move per entry appended.

export class Deque<T> {
  private items: (T | undefined)[] = [];
  private head = 0;

  get length(): number {
    return this.items.length - this.head;
  }

  /** The k-th item from the front; undefined outside 0..length-1. */
  at(k: number): T | undefined {
    return k >= 0 && k < this.length ? this.items[this.head + k] : undefined;
  }

  push(item: T): void {
    this.items.push(item);
  }

  shift(): T | undefined {
    if (this.length === 0) return undefined;
    const item = this.items[this.head];
    this.items[this.head++] = undefined;
    // Give the front's slots back once they are half of the array: amortized O(1) a shift.
    if (this.head >= 1024 && this.head * 2 >= this.items.length) {
      this.items = this.items.slice(this.head);
      this.head = 0;
    }
    return item;
  }

  /** Removes the items from the k-th on and returns them, front first. */
  truncate(k: number): T[] {
    return this.items.splice(this.head + Math.max(0, k)) as T[];
  }

  clear(): void {
    this.items = [];
    this.head = 0;
  }
}
