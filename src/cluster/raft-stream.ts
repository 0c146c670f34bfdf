// One Raft stream to a peer (transport.ts owns one per peer): a long-lived POST whose body carries
// frames of Raft messages and carried commands (frames.ts), and whose answer acknowledges them as the
// peer takes them. It keeps the window of frames not yet acknowledged and the deadline for progress,
// and tells its owner when the stream ends and which frames went unacknowledged.
import { PassThrough } from 'node:stream';
import type { Pool } from 'undici';
import { NOT_SENT_CODES } from './answer.js';
import { errorText } from './errors.js';
import { BODIES_HEADER, CARRIES_HEADER, ChunkReader, MAX_STREAM_FRAMES, REFUSED, SYSTEM_HEADER, TRACKS_HEADER } from './frames.js';
import type { BatchItem, Carried } from './wire.js';

/**
 * Why a stream ended; `status` when the peer answered it with another one than 200. `how`: the peer
 * ended its answer (`ended`, as it does for a stream this node retired or one idle too long); the
 * peer refused the stream or answered another status (`refused`, `answered`); the connection broke
 * (`broken`) or never opened (`not-sent`); this node cut it (`timeout`: no acknowledgement in time;
 * `closed`: the transport closed).
 */
export interface StreamFailure {
  readonly reason: string;
  readonly how: 'ended' | 'refused' | 'answered' | 'broken' | 'not-sent' | 'timeout' | 'closed';
  readonly status?: number;
}

/** What a peer said in its Raft stream's answer headers (frames.ts). */
export interface StreamSaid {
  /** It reads carried commands (CARRIES_HEADER). */
  readonly carries: boolean;
  /** System commands among them too (SYSTEM_HEADER). */
  readonly system: boolean;
  /** It may answer a command carried with `track` with where it proposed it (TRACKS_HEADER). */
  readonly tracks: boolean;
  /** It reads carried commands' bodies sent apart (BODIES_HEADER). */
  readonly bodies: boolean;
}

/** What a Raft stream tells the transport that owns it. */
export interface StreamEvents {
  /** The peer answered the stream with 200, and said in its headers what it reads. */
  opened(said: StreamSaid): void;
  /** The peer acknowledged `frames` more frames, carrying `messages` messages. */
  acked(frames: number, messages: number): void;
  /**
   * The stream is over: no frame goes into it and no acknowledgement comes. `unacknowledged` are the
   * frames written that the peer did not acknowledge, oldest first (it may have taken some).
   */
  over(failure: StreamFailure, unacknowledged: PendingFrame[]): void;
}

/** A frame written and not yet acknowledged. */
export interface PendingFrame {
  readonly batch: BatchItem[];
  readonly carried: Carried | null;
  readonly bytes: number;
}

/**
 * One Raft stream to a peer: a POST whose body is written frame by frame, and whose answer counts the
 * frames taken (frames.ts). Up to `window` frames, and `maxBytes` bytes beyond the first of them, may
 * be unacknowledged; the oldest must be acknowledged within `timeoutMs`. The first failure ends it for
 * good: `events.over` tells the owner, and a new stream replaces it.
 */
export class RaftStream {
  private readonly body = new PassThrough();
  /** Ends the request and its answer, however far they got. */
  private readonly abort = new AbortController();
  private readonly answers = new ChunkReader();
  /** Frames written since the stream began. */
  private frames = 0;
  /** Frames written and not acknowledged, oldest first. */
  private pending: PendingFrame[] = [];
  private pendingBytes = 0;
  /** Armed while a frame is unacknowledged: fires at the oldest one's deadline, or later. */
  private deadline: NodeJS.Timeout | null = null;
  private refused = false;
  /** Set by retire(): no frame goes in, the ones written are still acknowledged. */
  private retired = false;
  private ended: StreamFailure | null = null;

  /** Whether the stream is over (ended, refused, broken, timed out, closed). */
  get over(): boolean {
    return this.ended !== null;
  }
  /** The sender waiting for room in the window, or for every frame to be acknowledged. */
  private waiting: ((outcome: StreamFailure | null) => void) | null = null;
  private waitingForAll = false;
  /**
   * performance.now() of the last acknowledgement that took a frame, or of the oldest frame's write
   * when none was acknowledged since: never before the oldest unacknowledged frame was written.
   */
  private progressAt = 0;

  constructor(
    pool: Pool,
    path: string,
    headers: Record<string, string>,
    private readonly openedAt: number,
    private readonly limits: { readonly window: number; readonly maxBytes: number; readonly timeoutMs: number },
    private readonly events: StreamEvents,
  ) {
    pool.request({ method: 'POST', path, headers, body: this.body, signal: this.abort.signal }).then(
      (res) => {
        if (res.statusCode !== 200) {
          void res.body.text().then(
            (text) => this.close(`answered ${res.statusCode} ${text.slice(0, 300)}`, 'answered', res.statusCode),
            () => this.close(`answered ${res.statusCode}`, 'answered', res.statusCode),
          );
          return;
        }
        this.events.opened({
          carries: res.headers[CARRIES_HEADER] === '1',
          system: res.headers[SYSTEM_HEADER] === '1',
          tracks: res.headers[TRACKS_HEADER] === '1',
          bodies: res.headers[BODIES_HEADER] === '1',
        });
        res.body.on('data', (chunk: Buffer) => this.answer(chunk));
        res.body.on('end', () =>
          this.refused ? this.close(`refused: ${this.answers.rest().toString('utf8').slice(0, 300)}`, 'refused') : this.close('the peer ended the stream', 'ended'),
        );
        res.body.on('error', (err) => this.close(errorText(err), 'broken'));
      },
      (err: unknown) => this.close(errorText(err), NOT_SENT_CODES.has((err as { code?: string }).code ?? '') ? 'not-sent' : 'broken'),
    );
  }

  /** Whether a frame written and not acknowledged carries answers to the peer's commands. */
  holdsAnswers(): boolean {
    return this.pending.some((f) => f.carried !== null && f.carried.answers.length > 0);
  }

  /** Whether a new frame may go into this stream, or a new stream should replace it. */
  fresh(now: number, maxAgeMs: number): boolean {
    return !this.retired && this.ended === null && this.frames < MAX_STREAM_FRAMES && now - this.openedAt < maxAgeMs;
  }

  /**
   * Writes `frame`, which carries `batch`; false when the stream is over and nothing was written.
   * The batch is then the stream's until the peer acknowledges it or the stream ends (`events`).
   */
  send(frame: Buffer, batch: BatchItem[], carried: Carried | null = null): boolean {
    if (this.retired || this.ended !== null) return false;
    this.frames++;
    if (this.pending.length === 0) this.progressAt = performance.now();
    this.pending.push({ batch, carried, bytes: frame.byteLength });
    this.pendingBytes += frame.byteLength;
    this.body.write(frame);
    if (this.deadline === null) this.armDeadline(this.limits.timeoutMs);
    return true;
  }

  /**
   * Resolves with null once another frame may be written (`all`: once every frame written was
   * acknowledged), or with why the stream ended first.
   */
  room(all = false): Promise<StreamFailure | null> {
    if (this.ended !== null) return Promise.resolve(this.ended);
    this.waitingForAll = all;
    if (this.roomMade()) return Promise.resolve(null);
    return new Promise((resolve) => (this.waiting = resolve));
  }

  /**
   * Ends the stream's body after the frames written, which the peer still takes and acknowledges. A
   * peer that has not ended its answer within `timeoutMs` is cut off, so that no retired stream
   * holds a connection; what it had not acknowledged is then lost.
   */
  retire(timeoutMs: number): void {
    if (this.retired || this.ended !== null) return;
    this.retired = true;
    this.body.end();
    setTimeout(() => this.close(`retired, and not ended by the peer within ${timeoutMs} ms`, 'timeout'), timeoutMs).unref();
  }

  /** Ends the stream at once; the frames not acknowledged are lost with `reason`. */
  close(reason: string, how: StreamFailure['how'], status?: number): void {
    if (this.ended !== null) return;
    const ended: StreamFailure = status === undefined ? { reason, how } : { reason, how, status };
    this.ended = ended;
    this.body.destroy();
    this.abort.abort();
    if (this.deadline !== null) clearTimeout(this.deadline);
    this.deadline = null;
    const lost = this.pending;
    this.pending = [];
    this.pendingBytes = 0;
    this.events.over(ended, lost);
    this.settle(ended);
  }

  private roomMade(): boolean {
    if (this.pending.length === 0) return true;
    return !this.waitingForAll && this.pending.length < this.limits.window && this.pendingBytes < this.limits.maxBytes;
  }

  /**
   * The peer must acknowledge a frame within `timeoutMs` of the oldest one being written or of its
   * last acknowledgement, whichever is later (`progressAt`): a deadline for progress, so that a full
   * window of large frames on a slow link is not cut while its first frames are still being taken.
   */
  private armDeadline(ms: number): void {
    this.deadline = setTimeout(() => {
      this.deadline = null;
      if (this.pending.length === 0) return;
      const left = this.progressAt + this.limits.timeoutMs - performance.now();
      if (left <= 0) this.close(`no acknowledgement within ${this.limits.timeoutMs} ms`, 'timeout');
      else this.armDeadline(left);
    }, ms);
    this.deadline.unref();
  }

  private answer(chunk: Buffer): void {
    this.answers.push(chunk);
    if (this.refused) return;
    for (let word = this.answers.nextWord(); word !== null; word = this.answers.nextWord()) {
      if (word === REFUSED) {
        this.refused = true;
        return;
      }
      // Counts are cumulative: a word may acknowledge several frames, or none it had not already.
      let frames = 0;
      let messages = 0;
      while (this.pending.length > 0 && this.frames - this.pending.length < word) {
        const taken = this.pending.shift() as PendingFrame;
        this.pendingBytes -= taken.bytes;
        frames++;
        messages += taken.batch.length;
      }
      if (frames > 0) {
        this.progressAt = performance.now();
        this.events.acked(frames, messages);
      }
    }
    if (this.waiting !== null && this.roomMade()) this.settle(null);
  }

  private settle(outcome: StreamFailure | null): void {
    const waiting = this.waiting;
    if (waiting === null) return;
    this.waiting = null;
    waiting(outcome);
  }
}

/**
 * What the commands in a stream's unacknowledged frames are answered, by how the stream ended. The
 * peer took none of them when the stream never connected or was answered another status than 200
 * (the route answers 200 before it reads a frame), or when the peer ended or refused it (it
 * acknowledges every frame it took before either). A broken connection may have lost them after the
 * peer took them. A stream this node cut for a late acknowledgement, or closed, leaves them waiting:
 * a peer that took them answers on its own stream.
 */
export function carriedFate(failure: StreamFailure): 'retry' | 'unknown' | 'waiting' {
  switch (failure.how) {
    case 'not-sent':
    case 'answered':
    case 'refused':
    case 'ended':
      return 'retry';
    case 'broken':
      return 'unknown';
    case 'timeout':
    case 'closed':
      return 'waiting';
    default:
      return unreachableHow(failure.how);
  }
}

function unreachableHow(how: never): never {
  throw new Error(`unknown stream ending ${String(how)}`);
}
