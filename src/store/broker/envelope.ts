// A log entry's bytes: the envelope (format.ts says which encodings a partition may hold).
//
//   format 1  the envelope as JSON, UTF-8: `{"time":…,"actor":…,"command":{…}}`.
//   format 2  commands that carry message bodies (queue.send, topic.publish, deadletter.deliver) as a
//             JSON head and the bodies as bytes after it, so that a body goes from the request into the
//             log and from the log into its row without a JSON string round trip:
//
//               0x02 | head length (u32 LE) | head: the envelope's JSON, each message without its body
//               | for each message in order: body length (u32 LE) | body (UTF-8)
//
//             Every other command stays JSON. A decoded body is a view of the entry's bytes.
//
// The first byte tells them apart: a JSON envelope starts with `{`.
import type { Body, Envelope } from './commands.js';
import { BODIES_AS_BYTES } from './format.js';

/** The first byte of a format 2 envelope with bodies. */
const WITH_BODIES = 0x02;
const JSON_OBJECT = 0x7b;

/** The encoding a leader writes in a partition whose format in force is `format`. */
export function encodeEnvelope(e: Envelope, format: number): Buffer {
  const c = e.command;
  // Commands are proposed with bodies as text (requests; the dead-letter forwarder reads rows as
  // text). One whose bodies are not all text is malformed (a peer's): it goes as JSON, and apply
  // refuses it; it is never copied as bytes from whatever memory a non-string names.
  if (
    format >= BODIES_AS_BYTES &&
    (c.type === 'queue.send' || c.type === 'topic.publish' || c.type === 'deadletter.deliver') &&
    Array.isArray(c.messages) &&
    c.messages.every((m) => typeof m?.body === 'string')
  ) {
    return encodeWithBodies(e, c.messages as readonly { readonly body: string }[]);
  }
  // Buffer.from, not TextEncoder: the same bytes, and for a single send of 1 KiB about 4 µs less on
  // the leader (TextEncoder.encode cost as much as the stringify).
  return Buffer.from(JSON.stringify(e), 'utf8');
}

/** A body as text: bodies decoded from a format 2 entry, or read from a row it wrote, are bytes. */
export function bodyText(body: Body): string {
  return typeof body === 'string' ? body : Buffer.from(body.buffer, body.byteOffset, body.byteLength).toString('utf8');
}

function encodeWithBodies(e: Envelope, messages: readonly { readonly body: string }[]): Buffer {
  const head = Buffer.from(JSON.stringify({ ...e, command: { ...e.command, messages: messages.map(({ body: _, ...rest }) => rest) } }), 'utf8');
  let size = 5 + head.length;
  const lengths = messages.map((m) => Buffer.byteLength(m.body, 'utf8'));
  for (const n of lengths) size += 4 + n;
  const out = Buffer.allocUnsafe(size);
  out[0] = WITH_BODIES;
  out.writeUInt32LE(head.length, 1);
  head.copy(out, 5);
  let at = 5 + head.length;
  messages.forEach((m, i) => {
    out.writeUInt32LE(lengths[i]!, at);
    at += 4;
    out.write(m.body, at, 'utf8');
    at += lengths[i]!;
  });
  return out;
}

/**
 * Decodes an entry's envelope as `format` allows: a format 2 encoding in a partition still in format 1
 * is refused as a build of format 1 would refuse it, so replicas of both apply it alike. Throws on
 * bytes that are not an envelope; the caller checks the envelope's fields.
 */
export function decodeEnvelope(data: Uint8Array, format: number): unknown {
  const bytes = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  if (bytes[0] === JSON_OBJECT) return JSON.parse(bytes.toString('utf8'));
  if (bytes[0] !== WITH_BODIES || format < BODIES_AS_BYTES || bytes.length < 5) throw new Error('not an envelope');
  const headEnd = 5 + bytes.readUInt32LE(1);
  if (headEnd > bytes.length) throw new Error('envelope head past the end');
  const env = JSON.parse(bytes.toString('utf8', 5, headEnd)) as { command?: { messages?: unknown } } | null;
  const command = env?.command;
  const messages = command?.messages;
  if (command === undefined || !Array.isArray(messages)) throw new Error('an envelope with bodies has no messages');
  let at = headEnd;
  const withBodies = (messages as unknown[]).map((m) => {
    if (typeof m !== 'object' || m === null || at + 4 > bytes.length) throw new Error('envelope bodies do not match its messages');
    const n = bytes.readUInt32LE(at);
    at += 4;
    if (at + n > bytes.length) throw new Error('a body past the envelope end');
    const body = bytes.subarray(at, at + n);
    at += n;
    // The body first, as a request's message has it: the command reads the same as its JSON form
    // (the Idempotency-Key's fingerprint, state-machine.ts commandText).
    return { body, ...m };
  });
  if (at !== bytes.length) throw new Error('bytes after the last body');
  command.messages = withBodies;
  return env;
}
