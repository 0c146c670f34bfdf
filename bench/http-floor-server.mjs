// One process of `npm run bench:http-floor`: fastify answering POST /v1/queues/:name/messages (a JSON
// body with a string `body`) with as little behind it as a replicated broker can have. LAYOUT says how
// much (process 0 is the "leader", 1 and 2 the others; each pair talks over one TCP socket of its own,
// with length-prefixed binary frames gathered per loop turn, the cheapest form of the broker's Raft
// streams):
//   serve            each process answers at once
//   forward          1 and 2 pass their requests to 0 and relay its answer (as a node passes a write
//                    to the partition's leader)
//   replicate        as forward, and 0 sends each turn's bodies to 1 and 2 and answers once one of
//                    them acknowledged them (a majority of three), its own clients and the forwarders'
//   replicate-fsync  as replicate, and every process appends the bodies to a file and fdatasyncs it on
//                    libuv's thread pool (one sync at a time, covering every write before it) before
//                    it counts: 0 before it counts itself, 1 and 2 before they acknowledge
// No Raft, no log format, no state, no auth: whatever a broker that fsyncs on a majority before its
// 2xx must do at the least, so that its figures are a ceiling for the broker's (bench/README.md).
// LINK=http carries the same frames in HTTP streams instead of plain sockets, as the broker's Raft
// streams do: each of 1 and 2 POSTs to 0 with undici, its frames in the chunked request body and 0's
// in the answer's, read by 0's fastify server.
import { closeSync, fdatasync, openSync, writevSync } from 'node:fs';
import { createServer, connect } from 'node:net';
import { PassThrough } from 'node:stream';
import { setImmediate } from 'node:timers';
import Fastify from 'fastify';
import { Agent, request } from 'undici';

const PORT = Number(process.env.PORT);
const ROLE = Number(process.env.ROLE);
const LAYOUT = process.env.LAYOUT ?? 'serve';
const LINK_PORT = Number(process.env.LINK_PORT);
const LEADER_PORT = Number(process.env.LEADER_PORT);
const FILE = process.env.FILE ?? '';
const LINK = process.env.LINK ?? 'tcp';
const FWD = 1, ACK = 2, REP = 3, ANS = 4;

const forwarding = LAYOUT !== 'serve';
const replicating = LAYOUT === 'replicate' || LAYOUT === 'replicate-fsync';
const syncing = LAYOUT === 'replicate-fsync';

/** A link's outgoing frames, gathered during a turn and written together with `write`; `input` is read for the peer's. */
function link(input, write, onFrame) {
  const out = [];
  let flushing = false;
  /** Bytes of a frame not yet whole. */
  let rest = Buffer.alloc(0);
  input.on('data', (c) => {
    const buf = rest.byteLength === 0 ? c : Buffer.concat([rest, c]);
    let at = 0;
    while (buf.byteLength - at >= 4) {
      const n = buf.readUInt32BE(at);
      if (buf.byteLength - at < 4 + n) break;
      onFrame(buf[at + 4], buf.subarray(at + 5, at + 4 + n));
      at += 4 + n;
    }
    rest = buf.subarray(at);
  });
  return (type, payload) => {
    const head = Buffer.allocUnsafe(5);
    head.writeUInt32BE(payload.byteLength + 1, 0);
    head[4] = type;
    out.push(head, payload);
    if (flushing) return;
    flushing = true;
    setImmediate(() => {
      flushing = false;
      write(Buffer.concat(out.splice(0)));
    });
  };
}

/** Items as [u32 id][u32 length][bytes]... */
function encodeItems(items) {
  const parts = [];
  for (const { id, bytes } of items) {
    const h = Buffer.allocUnsafe(8);
    h.writeUInt32BE(id, 0);
    h.writeUInt32BE(bytes.byteLength, 4);
    parts.push(h, bytes);
  }
  return Buffer.concat(parts);
}

function decodeItems(p) {
  const items = [];
  for (let at = 0; at < p.byteLength; ) {
    const id = p.readUInt32BE(at);
    const n = p.readUInt32BE(at + 4);
    items.push({ id, bytes: p.subarray(at + 8, at + 8 + n) });
    at += 8 + n;
  }
  return items;
}

function u32s(values) {
  const b = Buffer.allocUnsafe(4 * values.length);
  values.forEach((v, k) => b.writeUInt32BE(v, 4 * k));
  return b;
}

function readU32s(p) {
  const out = [];
  for (let at = 0; at < p.byteLength; at += 4) out.push(p.readUInt32BE(at));
  return out;
}

/** Appends to FILE; `durable(cb)` calls cb once everything appended so far is synced (one sync at a time). */
function journal() {
  if (!syncing) return { append() {}, durable: (cb) => cb() };
  const fd = openSync(FILE, 'w');
  process.on('exit', () => closeSync(fd));
  let written = 0;
  let synced = 0;
  let inFlight = false;
  const waiting = [];
  const kick = () => {
    if (inFlight || waiting.length === 0) return;
    inFlight = true;
    const target = written;
    fdatasync(fd, (err) => {
      if (err) throw err;
      inFlight = false;
      synced = target;
      const ready = [];
      while (waiting.length > 0 && waiting[0].at <= synced) ready.push(waiting.shift().cb);
      for (const cb of ready) cb();
      kick();
    });
  };
  return {
    append(buffers) {
      written += writevSync(fd, buffers, written);
    },
    durable(cb) {
      waiting.push({ at: written, cb });
      kick();
    },
  };
}

const log = journal();
let seq = 0;
const answer = (reply) => reply.code(201).send({ messageId: `m-${++seq}`, sequence: seq });

// --- process 0: answers, or replicates a turn's bodies and answers once one peer has them ---------
const peers = [];
/** Batches sent and not yet answered, oldest first. */
const batches = [];
let current = null;
let batchSeq = 0;

function propose(bytes, done) {
  if (!replicating) return done();
  if (current === null) {
    current = { seq: ++batchSeq, items: [], done: [], acks: 0, self: !syncing };
    setImmediate(sendBatch);
  }
  current.items.push({ id: current.items.length, bytes });
  current.done.push(done);
}

function sendBatch() {
  const b = current;
  current = null;
  batches.push(b);
  const payload = Buffer.concat([u32s([b.seq]), encodeItems(b.items)]);
  for (const p of peers) p.send(REP, payload);
  if (syncing) {
    log.append(b.items.map((i) => i.bytes));
    log.durable(() => {
      b.self = true;
      settle();
    });
  }
}

function settle() {
  while (batches.length > 0 && batches[0].self && batches[0].acks >= 1) for (const done of batches.shift().done) done();
}

/** Process 0's side of a link from 1 or 2. */
function acceptLink(input, write) {
  const peer = { send: null };
  peer.send = link(input, write, (type, p) => {
    if (type === FWD) {
      const ids = [];
      const items = decodeItems(p);
      let left = items.length;
      for (const it of items) {
        // the bytes are copied out of the frame, as a broker keeps each command
        propose(Buffer.from(it.bytes), () => {
          ids.push(it.id);
          if (--left === 0) peer.send(ANS, u32s(ids));
        });
      }
    } else if (type === ACK) {
      const s = p.readUInt32BE(0);
      for (const b of batches) if (b.seq === s) b.acks++;
      settle();
    }
  });
  peers.push(peer);
}

if (ROLE === 0 && forwarding && LINK === 'tcp') {
  createServer((socket) => {
    socket.setNoDelay(true);
    acceptLink(socket, (b) => socket.write(b));
  }).listen(LINK_PORT, '127.0.0.1');
}

// --- processes 1 and 2: forward, and keep the replicated bodies ---------------------------------
let toLeader = null;
const waitingAnswers = new Map();
let forwardId = 0;

if (ROLE !== 0 && forwarding) {
  let input;
  let write;
  if (LINK === 'tcp') {
    const socket = connect(LINK_PORT, '127.0.0.1');
    socket.setNoDelay(true);
    await new Promise((r) => socket.once('connect', r));
    input = socket;
    write = (b) => socket.write(b);
  } else {
    const body = new PassThrough();
    const dispatcher = new Agent({ connections: 1, pipelining: 0 });
    // undici sends the request's headers with its body's first bytes: an empty frame (type 0, read as nothing).
    body.write(Buffer.from([0, 0, 0, 1, 0]));
    const res = await request(`http://127.0.0.1:${LEADER_PORT}/link`, { method: 'POST', headers: { 'content-type': 'application/octet-stream' }, body, dispatcher });
    input = res.body;
    write = (b) => body.write(b);
  }
  const pendingFwd = [];
  let fwdScheduled = false;
  const send = link(input, write, (type, p) => {
    if (type === ANS) {
      for (const id of readU32s(p)) {
        const done = waitingAnswers.get(id);
        waitingAnswers.delete(id);
        done?.();
      }
    } else if (type === REP) {
      const s = p.readUInt32BE(0);
      const items = decodeItems(p.subarray(4));
      log.append(items.map((i) => i.bytes));
      log.durable(() => send(ACK, u32s([s])));
    }
  });
  toLeader = (bytes, done) => {
    const id = ++forwardId >>> 0;
    waitingAnswers.set(id, done);
    pendingFwd.push({ id, bytes });
    if (fwdScheduled) return;
    fwdScheduled = true;
    setImmediate(() => {
      fwdScheduled = false;
      send(FWD, encodeItems(pendingFwd.splice(0)));
    });
  };
}

const app = Fastify({ logger: false, bodyLimit: 1024 * 1024 });
if (ROLE === 0 && forwarding && LINK === 'http') {
  // Process 0 answers at once with a chunked body of its own frames, and reads the request's as they come.
  app.addContentTypeParser('application/octet-stream', (_req, payload, done) => done(null, payload));
  app.post('/link', (req, reply) => {
    reply.hijack();
    const res = reply.raw;
    res.writeHead(200, { 'content-type': 'application/octet-stream' });
    res.flushHeaders();
    req.raw.socket.setNoDelay(true);
    acceptLink(req.body, (b) => res.write(b));
  });
}
app.post('/v1/queues/:name/messages', (req, reply) => {
  const body = req.body;
  if (typeof body?.body !== 'string') return reply.code(400).send({ title: 'body required' });
  if (!forwarding) return answer(reply);
  const bytes = Buffer.from(body.body, 'utf8');
  if (ROLE === 0) return propose(bytes, () => answer(reply));
  toLeader(bytes, () => answer(reply));
});

await app.listen({ host: '127.0.0.1', port: PORT });
process.send?.('ready');
