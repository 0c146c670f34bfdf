// Clients that send a request's body slowly, or stop in the middle of it (slowloris). Fastify reads
// a body into memory as it arrives and, by default, waits for it without end (requestTimeout 0):
// measured before the fix, 40 connections of one user each holding 8 MiB of a batch it never finished
// kept 320 MiB on the node for as long as they liked, and 2,000 connections without any token 125 MiB
// (64 KiB each, through registration) and 2,000 file descriptors, past every other timeout (headers
// 60 s, keep-alive 72 s). A request's body now has bodyTimeoutMs from its headers to arrive: beyond,
// 408 (problem+json, validation_failed) and the connection is closed. docs/api.md, "Names and limits".
import { connect, type Socket } from 'node:net';
import t from 'tap';
import { FRAMES_TYPE } from '../../src/cluster/frames.js';
import { userToken } from './api-helpers.js';
import { localApp } from './local-app.js';

t.setTimeout(60_000);

const BODY_TIMEOUT_MS = 500;
// A send of the body 'slow to apply' takes three body deadlines to apply, as a long poll's wait would.
const local = await localApp({
  deps: { bodyTimeoutMs: BODY_TIMEOUT_MS },
  propose: async (command, apply) => {
    const slow = command.type === 'queue.send' && command.messages.some((m) => m.body === 'slow to apply');
    if (slow) await new Promise((r) => setTimeout(r, 3 * BODY_TIMEOUT_MS));
    return apply();
  },
});
t.teardown(() => local.close());
const token = await userToken(local.url, 'slow-owner');
const created = await fetch(`${local.url}/v1/queues`, {
  method: 'POST',
  headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
  body: JSON.stringify({ name: 'slow-q' }),
});
t.equal(created.status, 201);

interface Answer {
  status: number;
  body: string;
  /** ms from the first byte written to the server's close. */
  closedAfter: number;
}

/** Writes `head` and `parts` (each after the wait before it), then reads until the server closes or `giveUpMs` passes. */
function slowRequest(head: string, parts: readonly [number, string][], giveUpMs: number): Promise<Answer & { socket: Socket }> {
  return new Promise((resolve) => {
    const start = performance.now();
    let data = '';
    const socket = connect(local.port, '127.0.0.1', () => {
      socket.write(head, 'latin1');
      let at = 0;
      for (const [after, part] of parts) {
        at += after;
        setTimeout(() => socket.writable && socket.write(part, 'latin1'), at);
      }
    });
    socket.setEncoding('latin1');
    socket.on('data', (chunk: string) => (data += chunk));
    socket.on('error', () => undefined);
    const giveUp = setTimeout(() => socket.destroy(), giveUpMs);
    socket.on('close', () => {
      clearTimeout(giveUp);
      const [headers = '', body = ''] = data.split('\r\n\r\n', 2);
      resolve({ socket, status: Number(/^HTTP\/1\.[01] (\d{3})/.exec(headers)?.[1] ?? 0), body, closedAfter: performance.now() - start });
    });
  });
}

const post = (path: string, length: number, auth: boolean): string =>
  `POST ${path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: ${length}\r\n${auth ? `Authorization: Bearer ${token}\r\n` : ''}Connection: close\r\n\r\n`;

const problemCode = (body: string): unknown => {
  try {
    return (JSON.parse(body) as { code?: unknown }).code;
  } catch {
    return body.slice(0, 100);
  }
};

t.test('a body that stops halfway, without a token: 408 and closed once its time is up', async (t) => {
  const a = await slowRequest(post('/v1/auth/register', 64 * 1024, false), [[0, '{"username": "' + 'a'.repeat(1000)]], 20 * BODY_TIMEOUT_MS);
  t.ok(a.closedAfter < 10 * BODY_TIMEOUT_MS, `closed by the server (after ${a.closedAfter.toFixed(0)} ms)`);
  t.equal(a.status, 408);
  t.equal(problemCode(a.body), 'validation_failed');
});

t.test('a user\'s batch that stops after 1 MiB of its 8: 408 and closed, nothing held', async (t) => {
  const a = await slowRequest(post('/v1/queues/slow-q/messages/batch', 8 * 1024 * 1024 - 1, true), [[0, '{"messages": [' + ' '.repeat(1024 * 1024)]], 20 * BODY_TIMEOUT_MS);
  t.ok(a.closedAfter < 10 * BODY_TIMEOUT_MS, `closed by the server (after ${a.closedAfter.toFixed(0)} ms)`);
  t.equal(a.status, 408);
});

t.test('a body that stops halfway after its 401 was answered: the connection is closed at the deadline all the same', async (t) => {
  const a = await slowRequest(post('/v1/queues/slow-q/messages', 64 * 1024, false).replace('Connection: close\r\n', ''), [[0, '{"body": "' + 'x'.repeat(1000)]], 20 * BODY_TIMEOUT_MS);
  t.equal(a.status, 401);
  t.ok(a.closedAfter < 10 * BODY_TIMEOUT_MS, `closed by the server (after ${a.closedAfter.toFixed(0)} ms)`);
});

t.test('a body trickled in slowly is cut at its deadline, however often bytes arrive', async (t) => {
  // Bytes for twenty deadlines: a deadline that each byte moved on would close the connection only
  // after them, past the bound of ten that a loaded machine's late sweep stays far within.
  const trickle = Array.from({ length: 200 }, () => [BODY_TIMEOUT_MS / 10, ' '] as [number, string]);
  const a = await slowRequest(post('/v1/queues/slow-q/messages', 1000, true), [[0, '{"body": "x"'], ...trickle], 40 * BODY_TIMEOUT_MS);
  t.ok(a.closedAfter < 10 * BODY_TIMEOUT_MS, `closed by the server (after ${a.closedAfter.toFixed(0)} ms)`);
  t.equal(a.status, 408);
});

t.test('a body that arrives in time, in pieces, is served', async (t) => {
  const body = JSON.stringify({ body: 'in pieces' });
  const a = await slowRequest(post('/v1/queues/slow-q/messages', Buffer.byteLength(body), true), [[0, body.slice(0, 5)], [BODY_TIMEOUT_MS / 5, body.slice(5)]], 20 * BODY_TIMEOUT_MS);
  t.equal(a.status, 201, a.body);
});

t.test('a request that takes long after its body arrived (a long poll) is not cut: only the body has a deadline', async (t) => {
  const body = JSON.stringify({ body: 'slow to apply' });
  const a = await slowRequest(post('/v1/queues/slow-q/messages', Buffer.byteLength(body), true), [[0, body]], 20_000);
  t.equal(a.status, 201, a.body);
  t.ok(a.closedAfter >= 3 * BODY_TIMEOUT_MS, `answered after ${a.closedAfter.toFixed(0)} ms`);
});

t.test("the Raft stream's URL spares no caller without the cluster secret: its refused body has the same deadline", async (t) => {
  // The stream's own body lasts as long as the stream; a caller refused 401 is anyone, and held its
  // connection and descriptor for as long as it trickled bytes (Node reads and drops the rest).
  const internal = await localApp({ deps: { bodyTimeoutMs: BODY_TIMEOUT_MS, internal: { clusterSecret: 'cluster-secret', onMessages: () => undefined, snapshotFile: () => null } } });
  t.teardown(() => internal.close());
  for (const path of ['/internal/raft-stream', '/internal/raft']) {
    const a = await new Promise<Answer>((resolve) => {
      const start = performance.now();
      let data = '';
      const socket = connect(internal.port, '127.0.0.1', () => {
        socket.write(`POST ${path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/octet-stream\r\nContent-Length: 100000\r\n\r\nxx`);
      });
      const trickle = setInterval(() => socket.writable && socket.write('x'), BODY_TIMEOUT_MS / 5);
      socket.setEncoding('latin1');
      socket.on('data', (chunk: string) => (data += chunk));
      socket.on('error', () => undefined);
      const giveUp = setTimeout(() => socket.destroy(), 20 * BODY_TIMEOUT_MS);
      socket.on('close', () => {
        clearInterval(trickle);
        clearTimeout(giveUp);
        resolve({ status: Number(/^HTTP\/1\.[01] (\d{3})/.exec(data)?.[1] ?? 0), body: data, closedAfter: performance.now() - start });
      });
    });
    t.equal(a.status, 401, `${path}: refused`);
    t.ok(a.closedAfter < 10 * BODY_TIMEOUT_MS, `${path}: closed by the server (after ${a.closedAfter.toFixed(0)} ms)`);
  }
});

t.test('a request answered before any hook ran (a malformed URL, a path segment too long) is held to the deadline too', async (t) => {
  // Fastify answers these from its router (frameworkErrors), before the onRequest hooks; Node then
  // reads and drops the rest of the body for as long as it comes.
  for (const path of ['/v1/queues/%zz/messages', `/v1/queues/${'a'.repeat(300)}/messages`]) {
    const a = await slowRequest(post(path, 100_000, false).replace('Connection: close\r\n', ''), Array.from({ length: 100 }, () => [BODY_TIMEOUT_MS / 5, ' '] as [number, string]), 20 * BODY_TIMEOUT_MS);
    t.equal(a.status, 400, `${path.slice(0, 30)}: refused`);
    t.ok(a.closedAfter < 10 * BODY_TIMEOUT_MS, `${path.slice(0, 30)}: closed by the server (after ${a.closedAfter.toFixed(0)} ms)`);
  }
});

t.test("a peer's Raft stream outlives the body deadline: its body lasts as long as the stream", async (t) => {
  const internal = await localApp({ deps: { bodyTimeoutMs: BODY_TIMEOUT_MS, internal: { clusterSecret: 'cluster-secret', onMessages: () => undefined, snapshotFile: () => null } } });
  t.teardown(() => internal.close());
  let data = '';
  let closed = false;
  const socket = connect(internal.port, '127.0.0.1', () => {
    socket.write(`POST /internal/raft-stream HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer cluster-secret\r\nContent-Type: ${FRAMES_TYPE}\r\nTransfer-Encoding: chunked\r\n\r\n`);
  });
  socket.setEncoding('latin1');
  socket.on('data', (chunk: string) => (data += chunk));
  socket.on('error', () => undefined);
  socket.on('close', () => (closed = true));
  await new Promise((r) => setTimeout(r, 4 * BODY_TIMEOUT_MS));
  t.match(data, /^HTTP\/1\.1 200/, 'the stream was taken');
  t.notOk(closed, 'still open past the body deadline');
  socket.destroy();
});
