// The frames of a Raft stream (src/cluster/frames.ts): a byte stream cut at any points, down to one
// byte per chunk, gives back the frames and words that were written, whole and in order.
import t from 'tap';
import { ChunkReader, FRAME_HEAD_BYTES, FrameError, REFUSED, ackWord, sealFrame } from '../../src/cluster/frames.js';
import { Rng } from '../chaos/rng.js';

function frameOf(payload: Buffer): Buffer {
  const buf = Buffer.alloc(FRAME_HEAD_BYTES + payload.byteLength);
  payload.copy(buf, FRAME_HEAD_BYTES);
  return sealFrame(buf);
}

/** `bytes` cut at random points: empty chunks, single bytes and long runs. */
function cut(rng: Rng, bytes: Buffer): Buffer[] {
  const chunks: Buffer[] = [];
  let at = 0;
  while (at < bytes.byteLength) {
    const n = rng.pick([0, 1, 1, 2, 3, 5, rng.int(1, 64), rng.int(1, 4096)]);
    chunks.push(bytes.subarray(at, at + n));
    at += n;
  }
  return chunks;
}

t.test('frames come back whole and in order, however the stream is cut', async (t) => {
  const rng = new Rng(2026);
  for (let trial = 0; trial < 300; trial++) {
    const payloads = Array.from({ length: rng.int(1, 12) }, () => Buffer.from(Array.from({ length: rng.pick([1, 3, 4, 5, rng.int(1, 3000)]) }, () => rng.int(0, 255))));
    const reader = new ChunkReader();
    const got: Buffer[] = [];
    for (const chunk of cut(rng, Buffer.concat(payloads.map(frameOf)))) {
      reader.push(chunk);
      for (let f = reader.nextFrame(4096); f !== null; f = reader.nextFrame(4096)) got.push(Buffer.from(f));
    }
    if (got.length !== payloads.length || got.some((g, i) => !g.equals(payloads[i]!))) {
      t.fail(`trial ${trial}: ${got.length} frames back of ${payloads.length}, or one differs`);
      return;
    }
    if (reader.pending !== 0) {
      t.fail(`trial ${trial}: ${reader.pending} bytes left`);
      return;
    }
  }
  t.pass('300 streams of up to 12 frames, cut at random points, came back intact with nothing left');
});

t.test('a partial frame is pending, not returned', async (t) => {
  const reader = new ChunkReader();
  const frame = frameOf(Buffer.from('hello, peer'));
  reader.push(frame.subarray(0, 2));
  t.equal(reader.nextFrame(100), null, 'half a length prefix');
  reader.push(frame.subarray(2, 9));
  t.equal(reader.nextFrame(100), null, 'a prefix and part of the frame');
  t.equal(reader.pending, 9);
  reader.push(frame.subarray(9));
  t.equal(reader.nextFrame(100)?.toString(), 'hello, peer');
  t.equal(reader.pending, 0);
});

t.test('a length of 0 or past the limit is refused', async (t) => {
  for (const [n, limit] of [
    [0, 100],
    [101, 100],
    [0xffff_ffff, 64 * 1024 * 1024],
  ] as const) {
    const reader = new ChunkReader();
    const head = Buffer.alloc(4);
    head.writeUInt32BE(n, 0);
    reader.push(head);
    t.throws(() => reader.nextFrame(limit), FrameError, `${n} bytes with a limit of ${limit}`);
  }
  const reader = new ChunkReader();
  reader.push(frameOf(Buffer.alloc(100)));
  t.equal(reader.nextFrame(100)?.byteLength, 100, 'exactly the limit is taken');
});

t.test('acknowledgement words, and a refusal with its text', async (t) => {
  const reader = new ChunkReader();
  const stream = Buffer.concat([ackWord(1), ackWord(2), ackWord(REFUSED), Buffer.from('this is node n2, not n3')]);
  const words: number[] = [];
  let refused = false;
  for (let i = 0; i < stream.byteLength; i++) {
    reader.push(stream.subarray(i, i + 1));
    // After REFUSED the rest is text: no more words are read.
    while (!refused) {
      const w = reader.nextWord();
      if (w === null) break;
      words.push(w);
      refused = w === REFUSED;
    }
  }
  t.strictSame(words, [1, 2, REFUSED]);
  t.equal(reader.rest().toString('utf8'), 'this is node n2, not n3');
});
