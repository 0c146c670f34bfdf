// Commands that share one Raft entry (PartitionReplica.propose, proposeHeld): a leader holds them
// until its loop's next turn and appends those of one user to one channel, of one kind and the same
// parameters, as ONE command of all their items (messages, or receipt handles), in the order they
// came. Every entry costs each replica its own record, frame and apply, which a send of 1 KiB or an
// ack of ten handles pays several times over; and the entry would only be written and sent at that
// turn anyway.
//
// What may share: a user's plain send to a queue (no Idempotency-Key, no deduplication ids), and an
// ack, nack or lease extension without an Idempotency-Key. Each is applied as its items in order,
// and nothing in its apply depends on which command an item came in, so the merged command does
// what the requests would have done one after the other, and each request's answer is its share of
// the merged result (shareOf). A failure of the whole command (the channel gone, the right revoked)
// is everyone's, as it would have been each one's. From format 11 (SHARED_PUBLISHES), a user's plain
// publishes to a topic share too, as one publish whose `split` says where each begins: each is
// checked alone in the apply (one publish stores at most MAX_FANOUT copies, so two that pass alone
// would fail together as one publish), and answered with its own result; an entry takes publishes of
// at most MAX_FANOUT copies between them, as the leader's state counts subscriptions (replica.ts,
// copiesPerItem), so that one apply stores no more than one publish may.
import { SHARED_PUBLISHES, ok, outcomeReader, type ChannelRef, type Command, type HandleOutcome, type Result } from '../store/broker/index.js';

/** A command that may share its entry (sharesEntry). */
export type SharedCommand = Extract<Command, { type: 'queue.send' | 'topic.publish' | 'ack' | 'nack' | 'lease' }>;

/** A send or a publish: a command that carries messages. */
type WithMessages = Extract<Command, { type: 'queue.send' | 'topic.publish' }>;
type HandleCommand = Extract<Command, { type: 'ack' | 'nack' | 'lease' }>;

/**
 * The most items (messages or receipt handles), and bytes of bodies, attributes and handles, one
 * entry of commands appended together takes: a few turns' worth under load, far below what an entry
 * holds (SLOTS messages) and half a Raft message (maxSizePerMsg, 1 MiB). A request past them alone
 * goes alone, as it always did; one request's items are never split. Each command brings an item at
 * least, so an entry holds at most TOGETHER_MAX_ITEMS publishes: never more than the apply's
 * MAX_SPLIT (topics.ts), which refuses a longer split whole (a test holds them so).
 */
export const TOGETHER_MAX_ITEMS = 1_000;
export const TOGETHER_MAX_BYTES = 512 * 1024;

/**
 * Whether a command may share its entry with others, in a partition of log format `format`: one
 * holding exactly what this build's API makes (a peer's malformed one goes alone, to be refused
 * alone), from a user, without an Idempotency-Key (whose replay is per command). A send's or a
 * publish's messages have no deduplication ids (their lookups are per command too). Publishes from
 * format 11 on (SHARED_PUBLISHES).
 */
export function sharesEntry(actor: string | null, command: Command, format: number, idempotencyKey?: string): command is SharedCommand {
  if (actor === null || idempotencyKey !== undefined) return false;
  const c = command as unknown as Record<string, unknown>;
  switch (command.type) {
    case 'topic.publish':
      return format >= SHARED_PUBLISHES && isPlainSend(c);
    case 'queue.send':
      return isPlainSend(c);
    case 'ack':
      return hasKeys(c, 3) && isChannel(c.channel) && nonEmpty(c.receiptHandles) && c.receiptHandles.every(isString);
    case 'nack':
      return hasKeys(c, 4) && isChannel(c.channel) && nonEmpty(c.receiptHandles) && c.receiptHandles.every(isString) && Number.isSafeInteger(c.delaySeconds);
    case 'lease':
      return hasKeys(c, 4) && isChannel(c.channel) && nonEmpty(c.receiptHandles) && c.receiptHandles.every(isString) && Number.isSafeInteger(c.visibilityTimeoutSeconds);
    default:
      return false;
  }
}

const hasKeys = (c: object, n: number): boolean => Object.keys(c).length === n;

/** A send's or a publish's shape: a name and plain messages (isPlainMessage), nothing else. */
const isPlainSend = (c: Record<string, unknown>): boolean => hasKeys(c, 3) && typeof c.name === 'string' && nonEmpty(c.messages) && c.messages.every(isPlainMessage);
const nonEmpty = (v: unknown): v is unknown[] => Array.isArray(v) && v.length > 0;
const isString = (v: unknown): v is string => typeof v === 'string';

function isChannel(v: unknown): v is ChannelRef {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return false;
  const c = v as Record<string, unknown>;
  return Object.keys(c).length === 1 ? isString(c.queue) : hasKeys(c, 2) && isString(c.topic) && isString(c.subscription);
}

const MESSAGE_FIELDS: ReadonlySet<string> = new Set(['body', 'attributes', 'delaySeconds']);

/** A message of text with string attributes and maybe a delay: nothing else, no deduplication id. */
function isPlainMessage(m: unknown): boolean {
  if (typeof m !== 'object' || m === null || Array.isArray(m)) return false;
  const { body, attributes, delaySeconds } = m as Record<string, unknown>;
  if (!Object.keys(m).every((k) => MESSAGE_FIELDS.has(k))) return false;
  if (typeof body !== 'string' || typeof attributes !== 'object' || attributes === null || Array.isArray(attributes)) return false;
  if (!Object.values(attributes).every(isString)) return false;
  return delaySeconds === undefined || Number.isSafeInteger(delaySeconds);
}

/**
 * What must be equal for commands to share an entry: the user, the kind, the channel, and a nack's
 * delay or a lease's new timeout. JSON of a list, so that no two different tuples read alike.
 */
export function groupOf(actor: string, c: SharedCommand): string {
  switch (c.type) {
    case 'queue.send':
    case 'topic.publish':
      return JSON.stringify([actor, c.type, c.name]);
    case 'ack':
      return JSON.stringify([actor, c.type, channelKey(c.channel)]);
    case 'nack':
      return JSON.stringify([actor, c.type, channelKey(c.channel), c.delaySeconds]);
    case 'lease':
      return JSON.stringify([actor, c.type, channelKey(c.channel), c.visibilityTimeoutSeconds]);
  }
}

const channelKey = (ch: ChannelRef): string[] => ('queue' in ch ? [ch.queue] : [ch.topic, ch.subscription]);

const carriesMessages = (c: SharedCommand): c is WithMessages => c.type === 'queue.send' || c.type === 'topic.publish';

/** A command's items: a send's or a publish's messages, or the receipt handles of the others. */
export function itemsOf(c: SharedCommand): number {
  return carriesMessages(c) ? c.messages.length : c.receiptHandles.length;
}

/** The UTF-8 bytes of a send's or a publish's bodies and attributes, or of the receipt handles of the others. */
export function bytesOf(c: SharedCommand): number {
  let n = 0;
  if (!carriesMessages(c)) {
    for (const h of c.receiptHandles) n += Buffer.byteLength(h, 'utf8');
    return n;
  }
  for (const m of c.messages) {
    n += Buffer.byteLength(m.body as string, 'utf8');
    for (const k in m.attributes) n += Buffer.byteLength(k, 'utf8') + Buffer.byteLength(m.attributes[k]!, 'utf8');
  }
  return n;
}

/**
 * The commands of one group (groupOf) as one: the first's fields, with everyone's items in order; a
 * publish's `split` says how many messages each brought.
 */
export function merged(commands: readonly SharedCommand[]): SharedCommand {
  const first = commands[0]!;
  if (commands.length === 1) return first;
  if (carriesMessages(first)) {
    const messages: WithMessages['messages'][number][] = [];
    for (const c of commands) messages.push(...(c as WithMessages).messages);
    if (first.type === 'topic.publish') return { ...first, messages, split: commands.map(itemsOf) };
    return { ...first, messages };
  }
  const receiptHandles: string[] = [];
  for (const c of commands) receiptHandles.push(...(c as HandleCommand).receiptHandles);
  return { ...first, receiptHandles };
}

/**
 * Each command's answer from the result of merged(commands): a failure is everyone's; a send gets
 * its own messages' items; an ack, nack or lease its own handles, each in `acked` or `failed` as the
 * merged outcome lists it, read back in order (outcomeReader, as the API reads its own): a handle
 * given twice (by two requests) acts first where it comes first, as it would have in two entries.
 */
export function sharesOf(commands: readonly SharedCommand[], r: Result): Result[] {
  if (commands.length === 1 || !r.ok) return commands.map(() => r);
  if (commands[0]!.type === 'topic.publish') {
    const publishes = (r.value as { publishes: Result[] }).publishes;
    if (publishes.length !== commands.length) throw new Error(`${publishes.length} results for ${commands.length} publishes`);
    return publishes;
  }
  if (commands[0]!.type === 'queue.send') {
    const items = (r.value as { items: unknown[] }).items;
    let at = 0;
    return commands.map((c) => ok({ items: items.slice(at, (at += itemsOf(c))) }));
  }
  const next = outcomeReader(r.value as HandleOutcome);
  return commands.map((c) => {
    const out: HandleOutcome = { acked: [], failed: [] };
    for (const h of (c as HandleCommand).receiptHandles) {
      const code = next(h);
      if (code === null) out.acked.push(h);
      else out.failed.push({ receiptHandle: h, code });
    }
    return ok(out);
  });
}
