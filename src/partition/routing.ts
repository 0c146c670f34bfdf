// Which partition holds a queue, a topic or a user: SHA-1 of the name, its first four bytes as an
// unsigned big-endian integer, modulo the partition count. P is fixed when the cluster is created:
// changing it would move names between partitions.
import { createHash } from 'node:crypto';

export const DEFAULT_PARTITIONS = 16;
export const MAX_PARTITIONS = 1024;

/** Names seen lately, by partition count: a SHA-1 for every request was a visible share of a node's time. */
const recent = new Map<number, Map<string, number>>();
const RECENT_NAMES = 10_000;

export function partitionOf(name: string, partitions: number): number {
  if (!Number.isInteger(partitions) || partitions < 1 || partitions > MAX_PARTITIONS) {
    throw new RangeError(`partition count must be 1 to ${MAX_PARTITIONS}, got ${partitions}`);
  }
  let names = recent.get(partitions);
  if (names === undefined) recent.set(partitions, (names = new Map()));
  const known = names.get(name);
  if (known !== undefined) return known;
  const p = createHash('sha1').update(name, 'utf8').digest().readUInt32BE(0) % partitions;
  if (names.size >= RECENT_NAMES) names.clear();
  names.set(name, p);
  return p;
}

/** Users live in the partition of their name, in a namespace apart from queues and topics. */
export function userPartition(username: string, partitions: number): number {
  return partitionOf(`user:${username}`, partitions);
}
