// Receipt handles as clients see them: the state machine's handle (channel id, sequence, lease id;
// src/store/broker/leases.ts) followed by a MAC over it and the queue or subscription it belongs
// to, under a key derived from the cluster secret. The fields inside are guessable (channel ids
// and sequences are dense, leases are log indexes), so without the MAC a user with a right on a
// queue could ack, nack or extend other consumers' leases by guessing. With it, a handle is good
// only as this API issued it, and only on its own queue or subscription: the handles of two
// queues in different partitions that share a channel id and a sequence differ. Every node derives
// the same key, so any node checks a handle that another issued.
import { createHmac, hkdfSync, timingSafeEqual } from 'node:crypto';
import type { ChannelRef } from '../store/broker/index.js';

/** MAC bytes kept: 128 bits, 22 base64url characters. */
const MAC_BYTES = 16;
const MAC_CHARS = Math.ceil((MAC_BYTES * 4) / 3);

export class Receipts {
  private readonly key: Buffer;

  constructor(clusterSecret: string) {
    this.key = Buffer.from(hkdfSync('sha256', clusterSecret, 'mom', 'receipt handles v1', 32));
  }

  /** The handle a client gets for the state machine's `inner` handle on `channel`. */
  seal(channel: ChannelRef, inner: string): string {
    return `${inner}.${this.mac(channel, inner).toString('base64url')}`;
  }

  /** The state machine's handle inside `handle`, or null when `handle` is not one this API issued for `channel`. */
  open(channel: ChannelRef, handle: string): string | null {
    const dot = handle.lastIndexOf('.');
    if (dot <= 0 || handle.length - dot - 1 !== MAC_CHARS) return null;
    const inner = handle.slice(0, dot);
    // Compared as text: base64url text that differs only in its unused last bits decodes alike.
    const given = Buffer.from(handle.slice(dot + 1));
    if (given.length !== MAC_CHARS) return null;
    return timingSafeEqual(given, Buffer.from(this.mac(channel, inner).toString('base64url'))) ? inner : null;
  }

  private mac(channel: ChannelRef, inner: string): Buffer {
    const where = 'queue' in channel ? `queue\u0000${channel.queue}` : `subscription\u0000${channel.topic}\u0000${channel.subscription}`;
    return createHmac('sha256', this.key).update(where).update('\u0000').update(inner).digest().subarray(0, MAC_BYTES);
  }
}
