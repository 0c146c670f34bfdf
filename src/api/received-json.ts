// A receive's answer as bytes, built in pieces.
//
// V8 puts a string past 128 KiB in its large-object space, and making one costs 30 to 50 times as
// much per byte as a smaller one (bench/README.md, "Strings past 128 KiB"). A receive of 100
// messages of about 1.2 KiB or more is such a string when serialized whole: for 131.8 KB, Fastify's
// serializer plus the encoding took 746-799 µs, against 186-284 µs for these pieces (in process;
// 100 messages of 1 KiB with this build's ids and handles are about 122 KB). So each message is
// serialized alone, by the same schema compiler Fastify uses, and the pieces are written into one
// Buffer: byte for byte the JSON Fastify would have sent.
import fjs from 'fast-json-stringify';
import type { Static } from 'typebox';
import { ReceivedMessage, type Received } from './schemas/messages.js';

const messageJson = fjs(ReceivedMessage as unknown as Parameters<typeof fjs>[0]) as (m: Static<typeof ReceivedMessage>) => string;

const OPEN = '{"messages":[';
const CLOSE = ']}';

/** `r` as the JSON of the `Received` schema, UTF-8. */
export function receivedJson(r: Static<typeof Received>): Buffer {
  const pieces = r.messages.map(messageJson);
  let bytes = OPEN.length + CLOSE.length + Math.max(0, pieces.length - 1);
  for (const p of pieces) bytes += Buffer.byteLength(p, 'utf8');
  const out = Buffer.allocUnsafe(bytes);
  let at = out.write(OPEN, 0, 'latin1');
  for (const [i, p] of pieces.entries()) {
    if (i > 0) at += out.write(',', at, 'latin1');
    at += out.write(p, at, 'utf8');
  }
  out.write(CLOSE, at, 'latin1');
  return out;
}
