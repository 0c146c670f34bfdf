// Frames of a Raft stream: one long-lived inter-node POST per peer (RAFT_STREAM_PATH) carries
// batches of Raft messages in its body, and the answer's body acknowledges them as they are taken.
//
//   request body   frames: bytes 0..3 the batch's length N (unsigned big-endian, 1 to the body
//                  limit), then N bytes of one encoded batch (wire.ts), which may also carry
//                  forwarded commands and answers to them when the receiver said it reads them
//                  (CARRIES_HEADER)
//   answer body    4-byte words, unsigned big-endian: the number of frames taken so far (when, see
//                  below); or REFUSED followed by a problem text in UTF-8 to the end, when the
//                  receiver refuses the stream (a malformed frame, a batch for another node)
//
// A stream carries fewer than MAX_STREAM_FRAMES frames, so a count never reaches REFUSED.
//
// Acknowledgements are cumulative. A sender that may have several frames unacknowledged says how many
// in WINDOW_HEADER; the receiver then acknowledges once per half a window of frames taken, or within
// ACK_DELAY_MS of the first frame it has not yet acknowledged, and at the end of the stream: on a busy
// stream, one write and one wake-up of the sender per many frames instead of per frame. Without the
// header (a build from before windows) every frame is acknowledged at once, as that sender waits for
// each; and a sender reads any mix of counts, so either side may be the older build.

/** The content type of a Raft stream's request and answer. */
export const FRAMES_TYPE = 'application/x-mom-raft-frames';
/** In the answer: the receiver refused the stream; a problem text follows. */
export const REFUSED = 0xffff_ffff;
/** A sender opens a new stream before this many frames. */
export const MAX_STREAM_FRAMES = 1_000_000;

/** A request header: how many frames the sender may leave unacknowledged (1 to MAX_STREAM_WINDOW). */
export const WINDOW_HEADER = 'x-mom-stream-window';
/**
 * An answer header: '1' when the receiver reads forwarded commands and their answers in frames
 * (wire.ts's Carried). A sender puts none in a stream before a receiver said so: an older build
 * refuses a frame with fields it does not know.
 */
export const CARRIES_HEADER = 'x-mom-stream-carries';
/**
 * An answer header: '1' when the receiver also takes the system's own commands (SYSTEM_COMMANDS:
 * dead letters for a queue it leads) forwarded as commands, carried in frames or posted to
 * /internal/command(s). Builds before it take those only at /internal/propose, which stays for them.
 */
export const SYSTEM_HEADER = 'x-mom-stream-system';
/**
 * An answer header: '1' when the receiver, as a leader, may answer a command carried with `track`
 * (wire.ts) with where it appended it instead of its result (answer.ts's Proposed). A sender sets
 * `track` only in frames to a receiver that said so: an older build refuses the field.
 */
export const TRACKS_HEADER = 'x-mom-stream-tracks';
/**
 * An answer header: '1' when the receiver reads carried commands whose bodies travel apart, after
 * the batch's payloads (wire.ts, "bodiesApart"). A sender puts them in the header's JSON otherwise.
 */
export const BODIES_HEADER = 'x-mom-stream-bodies';
/** The largest window a receiver accepts; a larger one is taken as this. */
export const MAX_STREAM_WINDOW = 1024;
/** A frame taken is acknowledged within this long (ms), when its window allows the wait. */
export const ACK_DELAY_MS = 5;

/** The window a stream's sender announced: 1 (a frame at a time) when absent or malformed. */
export function streamWindow(header: string | string[] | undefined): number {
  const n = typeof header === 'string' && /^[0-9]{1,5}$/.test(header) ? Number(header) : 1;
  return Math.min(Math.max(n, 1), MAX_STREAM_WINDOW);
}

/** Frames a receiver takes before it acknowledges at once, for a sender's window. */
export function ackEvery(window: number): number {
  return Math.ceil(window / 2);
}

/** Bytes before a frame's batch: its length. */
export const FRAME_HEAD_BYTES = 4;

/** Makes `buf`, a batch encoded after FRAME_HEAD_BYTES unwritten bytes, one frame. */
export function sealFrame(buf: Buffer): Buffer {
  buf.writeUInt32BE(buf.byteLength - FRAME_HEAD_BYTES, 0);
  return buf;
}

/** One acknowledgement word: `count` frames taken since the stream began. */
export function ackWord(count: number): Buffer {
  const word = Buffer.allocUnsafe(4);
  word.writeUInt32BE(count, 0);
  return word;
}

/** A length prefix out of range: the stream cannot be read past it. */
export class FrameError extends Error {
  override name = 'FrameError';
}

/**
 * Cuts a byte stream, received in chunks of any size, into 4-byte words or length-prefixed frames.
 * Once a frame's length is known, its buffer is allocated and each chunk is copied into it as it
 * comes: one copy per byte, and no object kept per chunk, however small the chunks.
 */
export class ChunkReader {
  /** Bytes not yet taken, outside a frame being filled. */
  private chunks: Buffer[] = [];
  private bytes = 0;
  /** The frame being filled, once its length was read and its bytes had not all come. */
  private frame: Buffer | null = null;
  private filled = 0;

  push(chunk: Buffer): void {
    let rest = chunk;
    if (this.frame !== null) {
      const n = Math.min(rest.byteLength, this.frame.byteLength - this.filled);
      rest.copy(this.frame, this.filled, 0, n);
      this.filled += n;
      rest = rest.subarray(n);
    }
    if (rest.byteLength === 0) return;
    this.chunks.push(rest);
    this.bytes += rest.byteLength;
  }

  /** Bytes received and not yet taken, a partial prefix or frame included. */
  get pending(): number {
    return this.bytes + (this.frame === null ? 0 : FRAME_HEAD_BYTES + this.filled);
  }

  /** The next complete frame, or null until more bytes come. Throws FrameError for a bad prefix. */
  nextFrame(maxBytes: number): Buffer | null {
    if (this.frame !== null) {
      if (this.filled < this.frame.byteLength) return null;
      const done = this.frame;
      this.frame = null;
      // What came after it waits in `chunks`.
      return done;
    }
    if (this.bytes < FRAME_HEAD_BYTES) return null;
    const n = this.take(FRAME_HEAD_BYTES).readUInt32BE(0);
    if (n === 0 || n > maxBytes) throw new FrameError(`a frame of ${n} bytes (1 to ${maxBytes} allowed)`);
    if (this.bytes >= n) return this.take(n);
    this.frame = Buffer.allocUnsafe(n);
    this.filled = 0;
    for (const c of this.chunks) {
      c.copy(this.frame, this.filled);
      this.filled += c.byteLength;
    }
    this.chunks = [];
    this.bytes = 0;
    return null;
  }

  /** The next 4-byte word, or null until more bytes come. */
  nextWord(): number | null {
    return this.bytes < 4 ? null : this.take(4).readUInt32BE(0);
  }

  /** Everything not yet taken, as one buffer. */
  rest(): Buffer {
    const all = Buffer.concat(this.chunks, this.bytes);
    this.chunks = [];
    this.bytes = 0;
    return all;
  }

  /** The first `n` bytes of `chunks` (n <= bytes), joined only when they span chunks. */
  private take(n: number): Buffer {
    const first = this.chunks[0] as Buffer;
    let out: Buffer;
    if (first.byteLength >= n) {
      out = first.subarray(0, n);
      if (first.byteLength === n) this.chunks.shift();
      else this.chunks[0] = first.subarray(n);
    } else {
      const all = Buffer.concat(this.chunks, this.bytes);
      out = all.subarray(0, n);
      this.chunks = all.byteLength > n ? [all.subarray(n)] : [];
    }
    this.bytes -= n;
    return out;
  }
}
