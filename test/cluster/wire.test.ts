// The wire format of Raft message batches: round trips of every message type, strict rejection of
// anything malformed, and properties over random batches and random corruptions.
import { isDeepStrictEqual } from 'node:util';
import fc from 'fast-check';
import t from 'tap';
import {
  MAX_NODE_ID_LENGTH,
  MAX_SNAPSHOT_REF_BYTES,
  MAX_VOTERS,
  WIRE_VERSION,
  WireFormatError,
  decodeBatch,
  encodeBatch,
  type BatchItem,
} from '../../src/cluster/wire.js';
import { EntryKind, MessageType, nodeId, type Entry, type Message, type NodeId } from '../../src/raft/index.js';

const a = nodeId('node-a');
const b = nodeId('node-b');
const bytes = (...xs: number[]) => new Uint8Array(xs);
const utf8 = (s: string) => new TextEncoder().encode(s);
const entry = (index: number, term: number, data: Uint8Array, kind: EntryKind = EntryKind.Normal): Entry => ({ index, term, kind, data });

/** One message of every type (and both variants where a type has two), all from `a` to `b`. */
const everyType: Message[] = [
  { type: MessageType.Vote, from: a, to: b, term: 7, lastLogIndex: 41, lastLogTerm: 6, transfer: false },
  { type: MessageType.PreVote, from: a, to: b, term: 8, lastLogIndex: 0, lastLogTerm: 0, transfer: true },
  { type: MessageType.VoteResp, from: a, to: b, term: 7, reject: true },
  { type: MessageType.PreVoteResp, from: a, to: b, term: 8, reject: false },
  {
    type: MessageType.App,
    from: a,
    to: b,
    term: 3,
    prevIndex: 10,
    prevTerm: 2,
    commit: 9,
    entries: [
      entry(11, 3, new Uint8Array(0), EntryKind.Noop),
      entry(12, 3, bytes(0, 0, 0, 1, 0, 255, 0)),
      entry(13, 3, bytes(0)),
      entry(14, 3, utf8('{"op":"send","body":"héllo \u0000 wörld"}')),
      entry(15, 3, new Uint8Array(70_000).map((_, i) => i % 251)),
    ],
  },
  { type: MessageType.App, from: a, to: b, term: 3, prevIndex: 15, prevTerm: 3, commit: 15, entries: [] },
  { type: MessageType.AppResp, from: a, to: b, term: 3, index: 15, reject: false, hintIndex: 0, hintTerm: 0 },
  { type: MessageType.AppResp, from: a, to: b, term: 3, index: 20, reject: true, hintIndex: 12, hintTerm: 2 },
  { type: MessageType.Heartbeat, from: a, to: b, term: 3, commit: 15, readRound: 4 },
  { type: MessageType.HeartbeatResp, from: a, to: b, term: 3, readRound: 4 },
  // from a follower that lost its log
  { type: MessageType.HeartbeatResp, from: a, to: b, term: 3, readRound: 0, lastIndex: 0 },
  {
    type: MessageType.Snap,
    from: a,
    to: b,
    term: 4,
    snapshot: { meta: { index: 100, term: 4, voters: [a, b, nodeId('node-c')] }, data: utf8('p7-i100-t4-3f2a.snap') },
  },
  { type: MessageType.Snap, from: a, to: b, term: 4, snapshot: { meta: { index: 0, term: 0, voters: [] }, data: new Uint8Array(0) } },
  { type: MessageType.TimeoutNow, from: a, to: b, term: 9 },
];

function roundTrip(from: NodeId, items: BatchItem[]) {
  return decodeBatch(encodeBatch(from, items));
}

/** Byte payloads as arrays, so that a comparison cannot be fooled by typed-array views. */
function plain(items: readonly BatchItem[]): unknown {
  return items.map(({ partition, message: m }) => {
    if (m.type === MessageType.App) return { partition, message: { ...m, entries: m.entries.map((e) => ({ ...e, data: [...e.data] })) } };
    if (m.type === MessageType.Snap) return { partition, message: { ...m, snapshot: { ...m.snapshot, data: [...m.snapshot.data] } } };
    return { partition, message: m };
  });
}

/** A frame around an arbitrary header (a value to stringify, or raw text) and payload. */
function frame(header: unknown, payload: Uint8Array = new Uint8Array(0), version = WIRE_VERSION): Buffer {
  const text = Buffer.from(typeof header === 'string' ? header : JSON.stringify(header), 'utf8');
  const prefix = Buffer.alloc(5);
  prefix.writeUInt8(version, 0);
  prefix.writeUInt32BE(text.length, 1);
  return Buffer.concat([prefix, text, payload]);
}

/** The header form of a heartbeat, to be spoiled by a test. */
const heartbeat = () => ({ type: 'heartbeat', to: 'node-b', term: 1, commit: 0, readRound: 0 });
const batchOf = (...messages: unknown[]) => ({ from: 'node-a', items: messages.map((m, i) => [i, m]) });

t.test('round trip', async (t) => {
  t.test('every message type, each in its own partition', async (t) => {
    const items = everyType.map((message, i) => ({ partition: i * 77, message }));
    const got = roundTrip(a, items);
    t.equal(got.from, a);
    t.same(plain(got.items), plain(items));
    t.strictSame(
      got.items.map((it) => it.message.type),
      everyType.map((m) => m.type),
      'in order',
    );
  });

  t.test('payloads come back as independent plain Uint8Arrays', async (t) => {
    const items = [{ partition: 0, message: everyType[4] as Message }];
    const buf = encodeBatch(a, items);
    const got = decodeBatch(buf);
    buf.fill(0xee);
    const app = got.items[0]?.message;
    if (app?.type !== MessageType.App) throw new Error('expected an append');
    t.equal(Object.getPrototypeOf(app.entries[1]?.data), Uint8Array.prototype);
    t.same([...(app.entries[1]?.data ?? [])], [0, 0, 0, 1, 0, 255, 0], 'unaffected by reuse of the request buffer');
    t.equal(app.entries[4]?.data.byteLength, 70_000);
  });

  t.test('an empty batch, partitions 0 and 1023, the largest safe numbers', async (t) => {
    t.same(roundTrip(a, []), { from: a, items: [] });
    const max = Number.MAX_SAFE_INTEGER;
    const items: BatchItem[] = [
      { partition: 0, message: { type: MessageType.Heartbeat, from: a, to: b, term: max, commit: max, readRound: max } },
      { partition: 1023, message: { type: MessageType.TimeoutNow, from: a, to: b, term: 0 } },
    ];
    t.same(plain(roundTrip(a, items).items), plain(items));
  });

  t.test('node ids with any characters, up to the longest allowed', async (t) => {
    for (const raw of ['\u0000', 'ñ-ß-日本-🦀', '"quoted"\\', '\ud800 lone surrogate', 'x'.repeat(MAX_NODE_ID_LENGTH)]) {
      const from = nodeId(raw);
      const items = [{ partition: 5, message: { type: MessageType.TimeoutNow, from, to: from, term: 1 } as Message }];
      t.same(roundTrip(from, items), { from, items }, JSON.stringify(raw).slice(0, 30));
    }
  });

  t.test('a snapshot ref of the largest allowed size', async (t) => {
    const ref = utf8('r'.repeat(MAX_SNAPSHOT_REF_BYTES));
    const message: Message = { type: MessageType.Snap, from: a, to: b, term: 1, snapshot: { meta: { index: 1, term: 1, voters: [a] }, data: ref } };
    t.same(plain(roundTrip(a, [{ partition: 1, message }]).items), plain([{ partition: 1, message }]));
  });

  t.test('fields the types do not declare are not sent', async (t) => {
    const message: Message = Object.assign({ secret: 'x' }, everyType[9] as Message);
    t.notMatch(encodeBatch(a, [{ partition: 0, message }]).toString('latin1'), /secret/);
  });
});

t.test('encoding refuses what could never be decoded', async (t) => {
  const m = everyType[9] as Message;
  for (const partition of [-1, 1024, 1.5, NaN]) {
    t.throws(() => encodeBatch(a, [{ partition, message: m }]), WireFormatError, `partition ${partition}`);
  }
  t.throws(() => encodeBatch(b, [{ partition: 0, message: m }]), WireFormatError, 'a message from another node');
});

t.test('decoding rejects malformed input with WireFormatError', async (t) => {
  const good = encodeBatch(a, everyType.map((message, i) => ({ partition: i, message })));
  const max = Number.MAX_SAFE_INTEGER;
  const cases: [string, Uint8Array][] = [
    ['empty', new Uint8Array(0)],
    ['shorter than the prefix', bytes(1, 0, 0)],
    ['unknown version', frame(batchOf(), undefined, 2)],
    ['version 0', frame(batchOf(), undefined, 0)],
    ['header length past the end', good.subarray(0, 20)],
    ['header length 2^32 - 1', Buffer.concat([bytes(1, 255, 255, 255, 255), Buffer.from('{}')])],
    ['not JSON', frame('this is not json')],
    ['JSON cut short', frame('{"from":"node-a","items":[')],
    ['header not UTF-8', frame(Buffer.from([0x7b, 0xff, 0xfe, 0x7d]).toString('latin1'))],
    ['header an array', frame([])],
    ['header null', frame('null')],
    ['header a number', frame('42')],
    ['header with an extra field', frame({ ...batchOf(), extra: 1 })],
    ['missing from', frame({ items: [], x: 1 })],
    ['from a number', frame({ from: 7, items: [] })],
    ['from empty', frame({ from: '', items: [] })],
    ['from too long', frame({ from: 'x'.repeat(MAX_NODE_ID_LENGTH + 1), items: [] })],
    ['items an object', frame({ from: 'node-a', items: {} })],
    ['items null', frame({ from: 'node-a', items: null })],
    ['an item not a pair', frame({ from: 'node-a', items: [[0]] })],
    ['an item of three', frame({ from: 'node-a', items: [[0, heartbeat(), 1]] })],
    ['an item an object', frame({ from: 'node-a', items: [{ partition: 0, message: heartbeat() }] })],
    ['partition -1', frame({ from: 'node-a', items: [[-1, heartbeat()]] })],
    ['partition 1024', frame({ from: 'node-a', items: [[1024, heartbeat()]] })],
    ['partition 1.5', frame({ from: 'node-a', items: [[1.5, heartbeat()]] })],
    ['partition a string', frame({ from: 'node-a', items: [['1', heartbeat()]] })],
    ['partition 1e400', frame(`{"from":"node-a","items":[[1e400,${JSON.stringify(heartbeat())}]]}`)],
    ['message null', frame(batchOf(null))],
    ['message an array', frame(batchOf([]))],
    ['unknown message type', frame(batchOf({ ...heartbeat(), type: 'gossip' }))],
    ['message type a number', frame(batchOf({ ...heartbeat(), type: 3 }))],
    ['message type missing', frame(batchOf({ to: 'node-b', term: 1, commit: 0, readRound: 0, x: 0 }))],
    ['to missing', frame(batchOf({ type: 'heartbeat', term: 1, commit: 0, readRound: 0, x: 0 }))],
    ['to empty', frame(batchOf({ ...heartbeat(), to: '' }))],
    ['term negative', frame(batchOf({ ...heartbeat(), term: -1 }))],
    ['term a float', frame(batchOf({ ...heartbeat(), term: 1.25 }))],
    ['term a string', frame(batchOf({ ...heartbeat(), term: '1' }))],
    ['term null', frame(batchOf({ ...heartbeat(), term: null }))],
    ['term 2^53', frame(batchOf({ ...heartbeat(), term: max + 1 }))],
    ['term 1e400', frame(`{"from":"node-a","items":[[0,{"type":"heartbeat","to":"node-b","term":1e400,"commit":0,"readRound":0}]]}`)],
    ['commit 99999999999999999999', frame(`{"from":"node-a","items":[[0,{"type":"heartbeat","to":"node-b","term":1,"commit":99999999999999999999,"readRound":0}]]}`)],
    ['a missing field', frame(batchOf({ type: 'heartbeat', to: 'node-b', term: 1, commit: 0 }))],
    ['a missing field replaced by an unknown one', frame(batchOf({ type: 'heartbeat', to: 'node-b', term: 1, commit: 0, readroun: 0 }))],
    ['an extra field', frame(batchOf({ ...heartbeat(), extra: true }))],
    ['a __proto__ field', frame(`{"from":"node-a","items":[[0,{"type":"timeout-now","to":"node-b","term":1,"__proto__":{}}]]}`)],
    ['vote transfer a string', frame(batchOf({ type: 'vote', to: 'node-b', term: 1, lastLogIndex: 0, lastLogTerm: 0, transfer: 'false' }))],
    ['vote-resp reject a number', frame(batchOf({ type: 'vote-resp', to: 'node-b', term: 1, reject: 0 }))],
    ['app-resp hintTerm missing', frame(batchOf({ type: 'app-resp', to: 'node-b', term: 1, index: 1, reject: true, hintIndex: 0 }))],
    ['entries missing', frame(batchOf({ type: 'app', to: 'node-b', term: 1, prevIndex: 0, prevTerm: 0, commit: 0, x: [] }))],
    ['entries an object', frame(batchOf({ type: 'app', to: 'node-b', term: 1, prevIndex: 0, prevTerm: 0, commit: 0, entries: {} }))],
    ['an entry an object', frame(batchOf(app([{ term: 1, index: 1, kind: 0, data: 0 }])))],
    ['an entry of three', frame(batchOf(app([[1, 1, 0]])))],
    ['entry kind 2', frame(batchOf(app([[1, 1, 2, 0]])))],
    ['entry kind "0"', frame(batchOf(app([[1, 1, '0', 0]])))],
    ['entry index negative', frame(batchOf(app([[1, -1, 0, 0]])))],
    ['entry term a float', frame(batchOf(app([[0.5, 1, 0, 0]])))],
    ['entry size negative', frame(batchOf(app([[1, 1, 0, -1]])))],
    ['entry size past the end', frame(batchOf(app([[1, 1, 0, 4]])), bytes(1, 2, 3))],
    ['entry size huge', frame(batchOf(app([[1, 1, 0, max]])), bytes(1, 2, 3))],
    ['entry sizes past the end together', frame(batchOf(app([[1, 1, 0, 2], [1, 2, 0, 2]])), bytes(1, 2, 3))],
    ['bytes after the last payload', frame(batchOf(app([[1, 1, 0, 2]])), bytes(1, 2, 3))],
    ['bytes where no payload is expected', frame(batchOf(heartbeat()), bytes(0))],
    ['snapshot meta missing', frame(batchOf({ type: 'snap', to: 'node-b', term: 1, data: 0, x: 0 }))],
    ['snapshot meta with an extra field', frame(batchOf(snap({ index: 1, term: 1, voters: [], x: 1 }, 0)))],
    ['snapshot voters not an array', frame(batchOf(snap({ index: 1, term: 1, voters: 'node-a' }, 0)))],
    ['snapshot voter empty', frame(batchOf(snap({ index: 1, term: 1, voters: [''] }, 0)))],
    ['snapshot voter a number', frame(batchOf(snap({ index: 1, term: 1, voters: [1] }, 0)))],
    ['too many voters', frame(batchOf(snap({ index: 1, term: 1, voters: Array.from({ length: MAX_VOTERS + 1 }, (_, i) => `n${i}`) }, 0)))],
    ['snapshot data size a string', frame(batchOf(snap({ index: 1, term: 1, voters: [] }, '0')))],
    [
      'snapshot ref too long',
      frame(batchOf(snap({ index: 1, term: 1, voters: [] }, MAX_SNAPSHOT_REF_BYTES + 1)), new Uint8Array(MAX_SNAPSHOT_REF_BYTES + 1)),
    ],
    ['a valid batch cut short', good.subarray(0, good.length - 1)],
    ['a valid batch with a byte more', Buffer.concat([good, bytes(0)])],
  ];
  for (const [name, input] of cases) {
    t.throws(() => decodeBatch(input), WireFormatError, name);
  }
  t.ok(decodeBatch(frame(batchOf(heartbeat()))), 'while the unspoiled heartbeat frame decodes');
  t.ok(decodeBatch(frame(batchOf(app([[1, 1, 0, 3]])), bytes(1, 2, 3))), 'and so does the unspoiled append');
  t.ok(decodeBatch(frame(batchOf(snap({ index: 1, term: 1, voters: [] }, 0)))), 'and the unspoiled snapshot');
});

function app(entries: unknown[]) {
  return { type: 'app', to: 'node-b', term: 1, prevIndex: 0, prevTerm: 0, commit: 0, entries };
}

function snap(meta: unknown, data: unknown) {
  return { type: 'snap', to: 'node-b', term: 1, meta, data };
}

t.test('errors name the place of the fault', async (t) => {
  t.throws(() => decodeBatch(frame(batchOf(heartbeat(), { ...heartbeat(), term: -1 }))), { message: /^items\[1\]\[1\]\.term: / });
  t.throws(() => decodeBatch(frame(batchOf(heartbeat(), heartbeat(), app([[1, 1, 7, 0]])))), { message: /^items\[2\]\[1\]\.entries\[0\]\[2\]: / });
  t.throws(() => decodeBatch(frame('{')), { name: 'WireFormatError', cause: SyntaxError });
});

// ---------------------------------------------------------------------------------------------
// Properties

/** Records with Object.prototype: decoded messages have it, and the comparison checks prototypes. */
const record = <T>(shape: { [K in keyof T]: fc.Arbitrary<T[K]> }) => fc.record(shape, { noNullPrototype: true });
const uint = fc.maxSafeNat();
const id = fc.string({ unit: 'binary', minLength: 1, maxLength: 12 }).map((s) => nodeId(s));
const data = fc.uint8Array({ maxLength: 48 });
const entryArb = record({ term: uint, index: uint, kind: fc.constantFrom(EntryKind.Normal, EntryKind.Noop), data });

/** A message without its `from`, which is the batch's. */
const messageArb: fc.Arbitrary<Omit<Message, 'from'>> = fc.oneof(
  record({
    type: fc.constantFrom(MessageType.Vote, MessageType.PreVote),
    to: id,
    term: uint,
    lastLogIndex: uint,
    lastLogTerm: uint,
    transfer: fc.boolean(),
  }),
  record({ type: fc.constantFrom(MessageType.VoteResp, MessageType.PreVoteResp), to: id, term: uint, reject: fc.boolean() }),
  record({
    type: fc.constant(MessageType.App),
    to: id,
    term: uint,
    prevIndex: uint,
    prevTerm: uint,
    commit: uint,
    entries: fc.array(entryArb, { maxLength: 6 }),
  }),
  record({
    type: fc.constant(MessageType.AppResp),
    to: id,
    term: uint,
    index: uint,
    reject: fc.boolean(),
    hintIndex: uint,
    hintTerm: uint,
  }),
  record({ type: fc.constant(MessageType.Heartbeat), to: id, term: uint, commit: uint, readRound: uint }),
  record({ type: fc.constant(MessageType.HeartbeatResp), to: id, term: uint, readRound: uint }),
  record({ type: fc.constant(MessageType.HeartbeatResp), to: id, term: uint, readRound: uint, lastIndex: uint }),
  record({
    type: fc.constant(MessageType.Snap),
    to: id,
    term: uint,
    snapshot: record({
      meta: record({ index: uint, term: uint, voters: fc.array(id, { maxLength: 5 }) }),
      data: fc.string({ unit: 'binary', maxLength: 40 }).map(utf8),
    }),
  }),
  record({ type: fc.constant(MessageType.TimeoutNow), to: id, term: uint }),
);

const batchArb = fc.tuple(
  id,
  fc.array(fc.tuple(fc.integer({ min: 0, max: 1023 }), messageArb), { maxLength: 20 }),
).map(([from, pairs]) => ({ from, items: pairs.map(([partition, m]) => ({ partition, message: { ...m, from } as Message })) }));

t.test('property: any batch round-trips', async (t) => {
  fc.assert(
    fc.property(batchArb, ({ from, items }) => {
      const got = roundTrip(from, items);
      return got.from === from && isDeepStrictEqual(plain(got.items), plain(items));
    }),
    { numRuns: 300 },
  );
  t.pass();
});

/** Decodes, or throws WireFormatError; anything else (TypeError, RangeError, a crash) is a bug. */
function decodesOrRefuses(buf: Uint8Array): boolean {
  try {
    decodeBatch(buf);
    return true;
  } catch (err) {
    if (err instanceof WireFormatError) return true;
    throw err;
  }
}

t.test('property: random bytes are decoded or refused, never crash', async (t) => {
  fc.assert(fc.property(fc.uint8Array({ maxLength: 200 }), decodesOrRefuses), { numRuns: 500 });
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 200 }), (tail) => decodesOrRefuses(Buffer.concat([bytes(1, 0, 0, 0, tail.length), tail]))),
    { numRuns: 500 },
  );
  t.pass();
});

t.test('property: a corrupted valid batch is decoded or refused, never crashes', async (t) => {
  fc.assert(
    fc.property(batchArb, fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 4 }), ({ from, items }, flips) => {
      const buf = encodeBatch(from, items);
      for (const [at, value] of flips) buf[at % buf.length] = value;
      return decodesOrRefuses(buf);
    }),
    { numRuns: 500 },
  );
  t.pass();
});

t.test('property: a corrupted header is decoded or refused, never crashes', async (t) => {
  // Edits the JSON text (where corruption of the binary framing above rarely lands) and reframes it.
  const jsonChar = fc.constantFrom(...'{}[]",:0123456789-.eE truefalsn'.split(''));
  fc.assert(
    fc.property(batchArb, fc.nat(), fc.nat({ max: 5 }), fc.array(jsonChar, { maxLength: 4 }), ({ from, items }, at, cut, insert) => {
      const buf = encodeBatch(from, items);
      const headerLength = buf.readUInt32BE(1);
      const text = buf.subarray(5, 5 + headerLength).toString('utf8');
      const i = at % (text.length + 1);
      const spoiled = text.slice(0, i) + insert.join('') + text.slice(i + cut);
      return decodesOrRefuses(frame(spoiled, buf.subarray(5 + headerLength)));
    }),
    { numRuns: 1000 },
  );
  t.pass();
});

// Forwarded commands and answers riding in a Raft stream's frame (Carried).
const command = <I,>(id: I, extra: Record<string, unknown> = {}) => ({
  id,
  partition: 3,
  actor: 'alice',
  command: { type: 'send', queue: 'orders', messages: [{ body: 'héllo "wörld"\n' }] },
  ...extra,
});

t.test('carried commands and answers round-trip, and a batch without them has none', async (t) => {
  const commands = [command('Xy_9-ab.1'), command('Xy_9-ab.zz3', { actor: null, idempotencyKey: 'k-1', requestId: 'req.7:a_b-c', track: true })];
  const answers = [
    { id: 'Qq.9', answer: { kind: 'ok', result: { ok: true, value: { sequence: 4 } } } },
    { id: 'Qq.a', answer: { kind: 'not_leader', leader: 'node-c' } },
    { id: 'Qq.b', answer: { kind: 'proposed', index: 12, term: 3 } },
  ];
  const items = [{ partition: 1, message: everyType[0]! }];
  const decoded = decodeBatch(encodeBatch(a, items, 0, { commands, answers }));
  t.same(plain(decoded.items), plain(items));
  t.same(decoded.carried, { commands, answers });
  // commands alone, with no Raft message in the frame
  t.same(decodeBatch(encodeBatch(a, [], 0, { commands, answers: [] })).carried, { commands, answers: [] });
  t.equal(decodeBatch(encodeBatch(a, items, 0, { commands: [], answers: [] })).carried, undefined, 'empty lists are left out');
  t.equal(decodeBatch(encodeBatch(a, items)).carried, undefined);
  // and an older reader, which knows {from, items} only, is never sent the fields (see CARRIES_HEADER)
  t.notMatch(encodeBatch(a, items, 0, { commands: [], answers: [] }).toString('latin1'), /commands|answers/);
});

t.test('malformed carried commands and answers are refused', async (t) => {
  const base = batchOf(heartbeat());
  const cases: [string, unknown][] = [
    ['commands an object', { ...base, commands: {} }],
    ['a command not an object', { ...base, commands: [7] }],
    ['id a number', { ...base, commands: [command(1)] }],
    ['id without its nonce', { ...base, commands: [command('.1')] }],
    ['id with a space', { ...base, commands: [command('ab .1')] }],
    ['id counter in capitals', { ...base, commands: [command('ab.1A')] }],
    ['partition out of range', { ...base, commands: [command('n.1', { partition: 1_000_000 })] }],
    ['actor empty', { ...base, commands: [command('n.1', { actor: '' })] }],
    ['actor too long', { ...base, commands: [command('n.1', { actor: 'x'.repeat(65) })] }],
    ['actor a number', { ...base, commands: [command('n.1', { actor: 5 })] }],
    ['command an array', { ...base, commands: [command('n.1', { command: [] })] }],
    ['command missing', { ...base, commands: [{ id: 'n.1', partition: 0, actor: null }] }],
    ['idempotency key empty', { ...base, commands: [command('n.1', { idempotencyKey: '' })] }],
    ['idempotency key too long', { ...base, commands: [command('n.1', { idempotencyKey: 'k'.repeat(256) })] }],
    ['request id with a space', { ...base, commands: [command('n.1', { requestId: 'a b' })] }],
    ['track false', { ...base, commands: [command('n.1', { track: false })] }],
    ['track a string', { ...base, commands: [command('n.1', { track: 'yes' })] }],
    ['an unknown field', { ...base, commands: [command('n.1', { extra: true })] }],
    ['answers an object', { ...base, answers: {} }],
    ['an answer not a pair', { ...base, answers: [[1]] }],
    ['an answer id a number', { ...base, answers: [[1, { kind: 'ok' }]] }],
    ['an answer not an object', { ...base, answers: [['n.1', 'ok']] }],
    ['another unknown header field', { ...base, commands: [], other: 1 }],
  ];
  for (const [what, header] of cases) t.throws(() => decodeBatch(frame(header)), WireFormatError, what);
});

t.test('carried commands’ bodies sent apart: the same commands at the peer, the bodies out of the header', async (t) => {
  // A body may begin with U+FEFF: its own character, not a byte order mark to drop.
  const bodies = ['héllo "wörld"\n', 'x'.repeat(40_000), '🦊 ünïcödé', '', '\uFEFF', '\uFEFFbom'];
  const send = command('Ab.1', { command: { type: 'queue.send', name: 'orders', messages: bodies.map((body, i) => ({ body, attributes: { n: String(i) } })) } });
  const publish = command('Ab.2', { command: { type: 'topic.publish', name: 't', messages: [{ body: 'p', attributes: {} }] }, track: true });
  const ack = command('Ab.3', { command: { type: 'ack', channel: { queue: 'orders' }, receiptHandles: ['h1'] } });
  const commands = [send, publish, ack];
  const items = [{ partition: 1, message: everyType.find((m) => m.type === MessageType.App)! }];
  const apart = encodeBatch(a, items, 0, { commands, answers: [] }, true);
  const decoded = decodeBatch(apart);
  t.same(decoded.carried, { commands, answers: [] }, 'the commands as they were, entries’ payloads unharmed');
  t.same(plain(decoded.items), plain(items));
  const header = apart.subarray(5, 5 + apart.readUInt32BE(1)).toString('utf8');
  t.notMatch(header, /xxxxxxxx|wörld/, 'no body in the header');
  t.match(header, /"bodiesApart":true/);
  t.match(encodeBatch(a, items, 0, { commands, answers: [] }).toString('utf8'), /xxxxxxxx/, 'inline unless asked: an older peer reads those only');
  t.notMatch(encodeBatch(a, items, 0, { commands, answers: [] }).toString('utf8'), /bodiesApart/);
  const small = [command('Ab.4', { command: { type: 'queue.send', name: 'orders', messages: [{ body: 'y'.repeat(1024), attributes: {} }] } })];
  t.notMatch(encodeBatch(a, [], 0, { commands: small, answers: [] }, true).toString('utf8'), /bodiesApart/, 'a frame of few bodies keeps them in its JSON, which decodes at full speed');
  t.same(decodeBatch(encodeBatch(a, [], 0, { commands: small, answers: [] }, true)).carried!.commands, small);
});

t.test('malformed bodies sent apart are refused', async (t) => {
  const base = batchOf(heartbeat());
  const sendApart = (extra: Record<string, unknown>, messages: unknown): Record<string, unknown> => command('n.1', { command: { type: 'queue.send', name: 'q', messages }, bodiesApart: true, ...extra });
  const cases: [string, unknown, Uint8Array][] = [
    ['bodiesApart false', { ...base, commands: [sendApart({ bodiesApart: false }, [{ body: 1 }])] }, Buffer.from('x')],
    ['no messages', { ...base, commands: [command('n.1', { bodiesApart: true })] }, new Uint8Array(0)],
    ['a body length past the end', { ...base, commands: [sendApart({}, [{ body: 5 }])] }, Buffer.from('abc')],
    ['a body length not a number', { ...base, commands: [sendApart({}, [{ body: 'abc' }])] }, Buffer.from('abc')],
    ['bytes left over', { ...base, commands: [sendApart({}, [{ body: 2 }])] }, Buffer.from('abc')],
    ['a body not UTF-8', { ...base, commands: [sendApart({}, [{ body: 2 }])] }, Buffer.from([0xc3, 0x28])],
    ['a message not an object', { ...base, commands: [sendApart({}, [7])] }, new Uint8Array(0)],
  ];
  for (const [what, header, payload] of cases) t.throws(() => decodeBatch(frame(header, payload)), WireFormatError, what);
  t.same(decodeBatch(frame({ ...base, commands: [sendApart({}, [{ body: 3 }])] }, Buffer.from('abc'))).carried!.commands[0]!.command, { type: 'queue.send', name: 'q', messages: [{ body: 'abc' }] }, 'and the well-formed one reads');
});
