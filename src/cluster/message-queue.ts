// The per-peer queue of Raft messages waiting to leave (transport.ts): bounded, dropping its oldest.
import { MessageType, type Message } from '../raft/index.js';
import type { BatchItem } from './wire.js';

/**
 * A FIFO of at most `capacity` messages that makes room by dropping its oldest. Amortised O(1) per
 * message: dropping and taking move `head`, and the array is compacted only when `head` is past half.
 */
export class MessageQueue {
  private items: BatchItem[] = [];
  /** Index of the oldest message; items before it are dead. head <= items.length. */
  private head = 0;

  constructor(private readonly capacity: number) {}

  get length(): number {
    return this.items.length - this.head;
  }

  /** Appends `item`; returns how many old messages were dropped to make room (0 or 1). */
  push(item: BatchItem): number {
    this.items.push(item);
    if (this.length <= this.capacity) return 0;
    this.head++;
    this.compact();
    return 1;
  }

  /** Removes and returns the oldest messages whose payloads fit in `maxBytes`, at least one. */
  take(maxBytes: number): BatchItem[] {
    let end = this.head;
    let bytes = 0;
    while (end < this.items.length) {
      bytes += approximateBytes((this.items[end] as BatchItem).message);
      if (bytes > maxBytes && end > this.head) break;
      end++;
    }
    const out = this.items.slice(this.head, end);
    this.head = end;
    this.compact();
    return out;
  }

  /**
   * Puts `items`, taken earlier, back before everything queued, in their order; returns how many of
   * the oldest were dropped to stay within the capacity.
   */
  requeue(items: readonly BatchItem[]): number {
    if (items.length === 0) return 0;
    this.items = [...items, ...this.items.slice(this.head)];
    const over = Math.max(0, this.items.length - this.capacity);
    this.head = over;
    this.compact();
    return over;
  }

  /** Empties the queue; returns how many messages it held. */
  clear(): number {
    const n = this.length;
    this.items = [];
    this.head = 0;
    return n;
  }

  private compact(): void {
    if (this.head === this.items.length) {
      this.items = [];
      this.head = 0;
    } else if (this.head > 1024 && this.head * 2 > this.items.length) {
      this.items = this.items.slice(this.head);
      this.head = 0;
    }
  }
}

/** Rough header cost of a message, so that a batch of empty messages is bounded too. */
const MESSAGE_OVERHEAD_BYTES = 64;

function approximateBytes(m: Message): number {
  let n = MESSAGE_OVERHEAD_BYTES;
  if (m.type === MessageType.App) for (const e of m.entries) n += e.data.byteLength + 16;
  else if (m.type === MessageType.Snap) n += m.snapshot.data.byteLength;
  return n;
}
