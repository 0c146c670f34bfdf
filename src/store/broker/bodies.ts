// Message bodies kept in the Raft log instead of the state (format 4, BODIES_IN_LOG; design in
// docs/design/bodies-in-log.md). A row written in that format holds an empty body, and its sequence
// says where the body is: the entry that created the row (a send, a publish, a dead-letter delivery)
// and the message's position in that entry's command,
//
//   seq = index * SLOTS + slot.
//
// The same on every replica, so states stay byte-identical. Sequences still grow strictly along a
// channel, as the contract says: the index grows along the log, and rows of the format before keep
// their smaller sequences (the raise checks it), with their bodies inline. Rows point only at the
// entry that created them, so once none points at an entry, none ever will again.
import type { Body } from './commands.js';
import type { Store } from './context.js';
import { decodeEnvelope } from './envelope.js';
import type { MessageRow } from './schema.js';

/** Positions per entry in a sequence: far more than a command's messages (at most 1,000: sends sharing an entry, a sweep). */
export const SLOTS = 65_536;

/** The sequence of the message at `slot` of the entry at `index`. */
export const logSeq = (index: number, slot: number): number => index * SLOTS + slot;

/** Where the body of the row with sequence `seq` is (rows of format 4 only). */
export const bodyPlace = (seq: number): { index: number; slot: number } => ({ index: Math.floor(seq / SLOTS), slot: seq % SLOTS });

/** Reads entries of the partition's log: from the Raft log, or kept below it for their bodies. */
export interface BodySource {
  /** The entry's data as written, or null when the log has it no more. */
  entry(index: number): Uint8Array | null;
}

/**
 * A row points at an entry the log does not have, or cannot read back: the log lost what the state
 * relies on. Never a command's fault: the apply stops (a storage failure), rather than answer a
 * message without its body.
 */
export class BodyMissingError extends Error {
  override name = 'BodyMissingError';
  readonly code = 'MOM_BODY_MISSING';
  constructor(
    readonly partition: number,
    readonly index: number,
    detail: string,
    cause?: unknown,
  ) {
    super(`partition ${partition}: the body at entry ${index} ${detail}`, cause === undefined ? undefined : { cause });
  }
}

/**
 * The bodies of one entry's command, found by walking it once: a receive reads its messages in
 * sequence order, so many from one entry (up to TOGETHER_MAX_ITEMS of sends shared one), and
 * finding each from the start again cost a walk per body. In the bytes after the head (format 2's
 * layout, walking the lengths, without parsing the head), or in its JSON (an entry a leader wrote
 * before it applied the raise to format 2). `body` throws BodyMissingError when the entry has no
 * such body, naming the same fault a walk to that slot would meet first.
 */
export class EntryBodies {
  /** Where each body the walk found starts, and how long it is: [start0, length0, start1, ...]. */
  private readonly places: number[] = [];
  /** The messages of a JSON entry, or null. */
  private readonly messages: unknown[] | null = null;
  /** Why slots past those found have no body: the entry is no envelope, or it runs past its end. */
  private readonly fault: string | null = null;
  private readonly bytes: Buffer;

  constructor(
    private readonly partition: number,
    readonly index: number,
    data: Uint8Array,
  ) {
    this.bytes = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
    const bytes = this.bytes;
    if (bytes[0] === 0x7b) {
      try {
        const messages = (decodeEnvelope(bytes, 1) as { command?: { messages?: unknown } }).command?.messages;
        this.messages = Array.isArray(messages) ? messages : [];
      } catch {
        this.fault = 'is in an entry that is not an envelope';
      }
      return;
    }
    if (bytes.length < 5) {
      this.fault = 'is in an entry that is not an envelope';
      return;
    }
    let at = 5 + bytes.readUInt32LE(1);
    while (at + 4 <= bytes.length) {
      const n = bytes.readUInt32LE(at);
      at += 4;
      if (at + n > bytes.length) {
        this.fault = 'runs past its entry';
        return;
      }
      this.places.push(at, n);
      at += n;
    }
  }

  body(slot: number): Body {
    if (this.messages !== null) {
      const body: unknown = (this.messages[slot] as { body?: unknown } | undefined)?.body;
      if (typeof body !== 'string') throw this.missing(`has no message ${slot}`);
      return body;
    }
    if (2 * slot < this.places.length) {
      const at = this.places[2 * slot]!;
      return this.bytes.subarray(at, at + this.places[2 * slot + 1]!);
    }
    throw this.missing(this.fault ?? `has no message ${slot}`);
  }

  private missing(detail: string): BodyMissingError {
    return new BodyMissingError(this.partition, this.index, detail);
  }
}

/**
 * A row's body: inline, or (format 4) read from the entry its sequence names (above). A row of
 * format 4 installed from an image holds its body inline, as bytes (images.ts finishImage).
 */
export function rowBody(s: Store, m: Pick<MessageRow, 'seq' | 'body'>): Body {
  if (m.seq < s.bodiesFrom || typeof m.body !== 'string') return m.body;
  const { index, slot } = bodyPlace(m.seq);
  let entry = s.lastBodyEntry;
  if (entry?.index !== index) {
    if (s.bodies === null) throw new BodyMissingError(s.partition, index, 'cannot be read: no log is attached');
    let data: Uint8Array | null;
    try {
      data = s.bodies.entry(index);
    } catch (err) {
      // The log's own failure (a record that fails its check, EIO): never the command's, which every
      // other replica applies. Taken for a malformed command, one replica refused it alone and went
      // on, its state no longer the others' (review of 2026-12-07).
      throw new BodyMissingError(s.partition, index, `cannot be read from the log: ${(err as Error).message}`, err);
    }
    if (data === null) throw new BodyMissingError(s.partition, index, 'is gone from the log');
    entry = new EntryBodies(s.partition, index, data);
    s.lastBodyEntry = entry;
  }
  return entry.body(slot);
}
