// Forwarded client commands carried in the Raft streams (HttpTransport.carry, wire.ts's Carried): two
// nodes, each with the inter-node routes and a transport to the other, wired as src/cluster/node.ts
// wires them. What a forwarding node's client depends on: the leader's answer comes back, nothing
// goes over the HTTP command routes, and when the answer cannot come, the command is answered at
// once with what is known of its fate (retry: it never left; unknown: it may apply).
import type { AddressInfo, Socket } from 'node:net';
import Fastify, { type FastifyInstance } from 'fastify';
import t, { type Test } from 'tap';
import type { Answer, CarriedOutcome } from '../../src/cluster/answer.js';
import { internalRoutes, RAFT_STREAM_PATH } from '../../src/cluster/internal-routes.js';
import { HttpTransport } from '../../src/cluster/transport.js';
import { MessageType, nodeId, type NodeId } from '../../src/raft/index.js';

const SECRET = 'cluster-secret-7d2e4b';
const a = nodeId('node-a');
const b = nodeId('node-b');

async function until(what: string, predicate: () => boolean, tries = 1000): Promise<void> {
  for (let i = 0; i < tries; i++) {
    if (predicate()) return;
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  throw new Error(`gave up waiting for ${what}`);
}

interface Side {
  readonly id: NodeId;
  app: FastifyInstance;
  port: number;
  tr: HttpTransport;
  /** Frames (or POSTs) whose Raft messages reached this node, one element each. */
  frames: number;
  /** Paths of every inter-node request that reached this node. */
  readonly requests: string[];
  /** Commands carried to this node, in the order they came. */
  readonly commands: { partition: number; actor: string | null; command: unknown; idempotencyKey: string | undefined }[];
  /** What this node answers a carried command with; default: an `ok` echoing the command. */
  onCommand: (command: unknown) => Promise<unknown>;
  /** Commands carried to this node with `track` and taken as such (it said it tracks), in order. */
  readonly tracked: unknown[];
  /** When set, the Raft messages of a frame wait for it: the stream takes no next frame meanwhile. */
  gate: Promise<void> | null;
  /** The Raft streams that reached this node, oldest first: the connection each came on, and its answer's end held while `holdEnds` is set. */
  readonly streams: { socket: Socket; end: (() => void) | null }[];
  holdEnds: boolean;
}

async function listen(t: Test, side: Side, opts: { carries: boolean; tracks?: boolean; port?: number }): Promise<void> {
  const app = Fastify({ logger: false });
  app.addHook('onRequest', async (request, reply) => {
    side.requests.push(request.url);
    if (request.url !== RAFT_STREAM_PATH) return;
    const stream: Side['streams'][number] = { socket: request.raw.socket, end: null };
    side.streams.push(stream);
    const res = reply.raw;
    const end = res.end.bind(res) as (...args: unknown[]) => void;
    res.end = ((...args: unknown[]) => {
      if (side.holdEnds) stream.end = () => end(...args);
      else end(...args);
      return res;
    }) as typeof res.end;
  });
  await app.register(internalRoutes, {
    clusterSecret: SECRET,
    self: side.id,
    onMessages: async () => {
      side.frames++;
      await side.gate;
    },
    snapshotFile: () => null,
    onCommand: async (partition, actor, command, idempotencyKey) => {
      side.commands.push({ partition, actor, command, idempotencyKey });
      return side.onCommand(command);
    },
    // A build that appends a tracked command and answers where: index 100 + n, term 7.
    ...(opts.tracks === true
      ? {
          onTracked: (_from: NodeId, _partition: number, _actor: string | null, command: unknown) => {
            side.tracked.push(command);
            return { kind: 'proposed', index: 100 + (command as { n: number }).n, term: 7 };
          },
        }
      : {}),
    // An older build: no `carried`, so its streams do not say that it reads commands.
    ...(opts.carries
      ? {
          carried: {
            answer: (to: NodeId, id: string, answer: unknown) => side.tr.answer(to, id, answer as Answer),
            answered: (from: NodeId, answers: Parameters<HttpTransport['answered']>[1]) => side.tr.answered(from, answers),
          },
        }
      : {}),
  });
  await app.listen({ host: '127.0.0.1', port: opts.port ?? 0 });
  side.app = app;
  side.port = (app.server.address() as AddressInfo).port;
  t.teardown(() => app.close());
}

/** Nodes A and B with their streams open both ways (heartbeats sent and acknowledged). */
async function pair(t: Test, opts: { bCarries?: boolean; bTracks?: boolean; timeoutMs?: number; streamMaxAgeMs?: number } = {}): Promise<{ A: Side; B: Side }> {
  const side = (id: NodeId): Side => ({
    id,
    app: null as unknown as FastifyInstance,
    port: 0,
    tr: null as unknown as HttpTransport,
    frames: 0,
    requests: [],
    commands: [],
    onCommand: async (command) => ({ kind: 'ok', result: { ok: true, value: { echo: command } } }),
    tracked: [],
    gate: null,
    streams: [],
    holdEnds: false,
  });
  const A = side(a);
  const B = side(b);
  await listen(t, A, { carries: true });
  await listen(t, B, { carries: opts.bCarries ?? true, tracks: opts.bTracks ?? false });
  const transport = (self: NodeId, to: Side) =>
    new HttpTransport({
      self,
      peers: [{ id: to.id, url: `http://127.0.0.1:${to.port}` }],
      clusterSecret: SECRET,
      logger: { warn: () => undefined },
      requestTimeoutMs: opts.timeoutMs ?? 2_000,
      ...(opts.streamMaxAgeMs === undefined ? {} : { streamMaxAgeMs: opts.streamMaxAgeMs }),
    });
  A.tr = transport(a, B);
  B.tr = transport(b, A);
  t.teardown(() => Promise.all([A.tr.close(), B.tr.close()]));
  A.tr.send([{ partition: 0, message: { type: MessageType.Heartbeat, from: a, to: b, term: 1, commit: 0, readRound: 0 } }]);
  B.tr.send([{ partition: 0, message: { type: MessageType.Heartbeat, from: b, to: a, term: 1, commit: 0, readRound: 0 } }]);
  await until('both streams acknowledged a frame', () => A.tr.stats().batches > 0 && B.tr.stats().batches > 0);
  return { A, B };
}

const carry = (from: Side, n: number, timeoutMs = 60_000, track = false): Promise<CarriedOutcome> => {
  const answer = from.tr.carry(b, { partition: 2, actor: 'alice', command: { type: 'send', queue: 'q', n }, idempotencyKey: `key-${n}` }, timeoutMs, track);
  if (answer === null) throw new Error('the peer does not read carried commands');
  return answer;
};

t.test('forwarded commands ride in the Raft streams both ways, those of one turn in one frame', async (t) => {
  const { A, B } = await pair(t);
  t.ok(A.tr.peerStates()[0]!.carries, 'B said that it reads carried commands');
  const framesBefore = B.frames;
  const answers = await Promise.all(Array.from({ length: 20 }, (_, n) => carry(A, n)));
  t.same(
    answers,
    Array.from({ length: 20 }, (_, n) => ({ kind: 'ok', result: { ok: true, value: { echo: { type: 'send', queue: 'q', n } } } })),
    'each caller has the answer to its own command',
  );
  t.same(B.commands[7], { partition: 2, actor: 'alice', command: { type: 'send', queue: 'q', n: 7 }, idempotencyKey: 'key-7' });
  t.equal(B.frames - framesBefore, 1, 'the twenty commands of one turn went in one frame');
  t.same(
    B.requests.filter((r) => r !== '/internal/raft-stream'),
    [],
    'no HTTP request of their own',
  );
  t.same(A.requests.filter((r) => r !== '/internal/raft-stream'), []);
  t.match(A.tr.stats(), { carriedCommands: 20, carriedAnswers: 0 });
  t.match(B.tr.stats(), { carriedCommands: 0, carriedAnswers: 20 });
  t.equal(A.tr.peerStates()[0]!.awaiting, 0, 'nothing left waiting');
});

t.test('a leader’s answers leave as soon as the callback that settled them is done', async (t) => {
  const { B } = await pair(t);
  const before = B.tr.stats().carriedAnswers;
  const written = await new Promise<number>((resolve) => {
    // As in the partition loop's turn (a setImmediate), one apply settles several commands' answers.
    setImmediate(() => {
      for (let n = 0; n < 3; n++) B.tr.answer(a, `gone.${n}`, { kind: 'ok', result: { ok: true, value: n } });
      // Once this callback's ticks have run: before the event loop's next round (its I/O, its
      // setImmediate callbacks), where the answers used to wait.
      process.nextTick(() => resolve(B.tr.stats().carriedAnswers));
    });
  });
  t.equal(written - before, 3, 'the three answers written');
});

t.test('a send’s bodies reach the leader as they were sent (apart from the frame’s JSON)', async (t) => {
  const { A, B } = await pair(t);
  const messages = ['héllo "wörld"\n', 'y'.repeat(40_000), '🦊'].map((body) => ({ body, attributes: { k: 'v' } }));
  const answer = A.tr.carry(b, { partition: 1, actor: 'alice', command: { type: 'queue.send', name: 'q', messages } }, 60_000);
  t.ok(answer !== null);
  await answer;
  t.same(B.commands[0]!.command, { type: 'queue.send', name: 'q', messages });
});

t.test('a command carried with track to a leader that tracks is answered with where it was appended', async (t) => {
  const { A, B } = await pair(t, { bTracks: true });
  const answers = await Promise.all([carry(A, 1, 60_000, true), carry(A, 2)]);
  t.same(answers[0], { kind: 'proposed', index: 101, term: 7 }, 'where, not what: the forwarder answers from its own apply');
  t.same(answers[1], { kind: 'ok', result: { ok: true, value: { echo: { type: 'send', queue: 'q', n: 2 } } } }, 'without track, the result');
  t.same(B.tracked, [{ type: 'send', queue: 'q', n: 1 }]);
  t.same(B.commands.map((c) => c.command), [{ type: 'send', queue: 'q', n: 2 }]);
  t.match(B.tr.stats(), { carriedAnswers: 2, carriedProposed: 1 });
});

t.test('a leader that does not say it tracks (an older build) takes a tracked command as any other', async (t) => {
  const { A, B } = await pair(t, { bTracks: false });
  t.same(await carry(A, 3, 60_000, true), { kind: 'ok', result: { ok: true, value: { echo: { type: 'send', queue: 'q', n: 3 } } } });
  t.same(B.tracked, []);
  t.equal(B.commands.length, 1);
  t.match(B.tr.stats(), { carriedAnswers: 1, carriedProposed: 0 });
});

t.test('a leader that does not read carried commands (an older build) gets none', async (t) => {
  const { A, B } = await pair(t, { bCarries: false });
  t.notOk(A.tr.peerStates()[0]!.carries);
  t.equal(A.tr.carry(b, { partition: 0, actor: null, command: { type: 'x' } }, 1_000), null, 'the caller is told to use HTTP');
  t.same(B.commands, []);
});

t.test('a leader that goes away while a command awaits its answer: unknown at once, not at the deadline', async (t) => {
  const { A, B } = await pair(t);
  let proposed = (): void => undefined;
  const reached = new Promise<void>((resolve) => (proposed = resolve));
  let finish = (): void => undefined;
  B.onCommand = () => {
    proposed();
    return new Promise((resolve) => (finish = () => resolve({ kind: 'ok', result: { ok: true, value: {} } })));
  };
  const answer = carry(A, 1, 600_000);
  await reached;
  // A crash, as the peer sees it: every connection of B's cut at once.
  B.app.server.closeAllConnections();
  const got = await answer;
  t.match(got, { kind: 'unknown', timedOut: false }, 'it may have applied: the client hears 503, or retries with its key');
  finish();
});

/** B takes commands and answers each `{ done: command }` once `release` is called. */
function holdAnswers(B: Side): () => void {
  let release = (): void => undefined;
  const gate = new Promise<void>((resolve) => (release = resolve));
  B.onCommand = async (command) => {
    await gate;
    return { kind: 'ok', result: { ok: true, value: { done: command } } };
  };
  return release;
}

t.test('a leader that closes answers the commands it took before it ends its streams', async (t) => {
  const { A, B } = await pair(t);
  const release = holdAnswers(B);
  const answer = carry(A, 3, 600_000);
  await until('B took the command', () => B.commands.length === 1);
  const closed = B.app.close();
  // Later than the close's start, though nothing waits for it: without the wait, the answer is lost.
  setTimeout(release, 50);
  t.same(await answer, { kind: 'ok', result: { ok: true, value: { done: { type: 'send', queue: 'q', n: 3 } } } });
  await closed;
});

t.test('a forwarding node that closes carries no new command, and keeps its streams until its answers came', async (t) => {
  const { A, B } = await pair(t);
  const release = holdAnswers(B);
  const answer = carry(A, 4, 600_000);
  await until('B took the command', () => B.commands.length === 1);
  // As MomServer.close does it: the transport settles, then the app closes.
  const closed = A.tr.settle(600_000).then(() => A.app.close());
  t.equal(A.tr.carry(b, { partition: 0, actor: null, command: { type: 'x' } }, 1_000), null, 'a new command goes by HTTP');
  release();
  t.same(await answer, { kind: 'ok', result: { ok: true, value: { done: { type: 'send', queue: 'q', n: 4 } } } }, 'the answer came through the stream A serves');
  await closed;
});

t.test('no answer within the deadline: unknown, timed out', async (t) => {
  const { A, B } = await pair(t);
  let finish = (): void => undefined;
  B.onCommand = () => new Promise((resolve) => (finish = () => resolve({ kind: 'ok', result: { ok: true, value: {} } })));
  t.match(await carry(A, 1, 200), { kind: 'unknown', timedOut: true });
  t.equal(A.tr.peerStates()[0]!.awaiting, 0);
  // the late answer is ignored
  finish();
  await until('B sent the late answer', () => B.tr.stats().carriedAnswers === 1);
});

t.test('a command whose stream never connected is answered retry: it never left', async (t) => {
  const { A, B } = await pair(t);
  await B.app.close();
  await until('the stream to B ended', () => !A.tr.peerStates()[0]!.streaming);
  t.match(await carry(A, 1), { kind: 'retry' });
  t.same(B.commands, []);
  // While the stream backs off (set by the same failure, before the loop's next timers run), a
  // command goes by HTTP rather than wait in the queue.
  await new Promise((resolve) => setImmediate(resolve));
  t.ok(A.tr.peerStates()[0]!.backingOff);
  t.equal(A.tr.carry(b, { partition: 0, actor: null, command: { type: 'x' } }, 1_000), null);
});

t.test('an answer lost with its stream is sent again on the next one', async (t) => {
  const { A, B } = await pair(t);
  let release = (): void => undefined;
  const gate = new Promise<void>((resolve) => (release = resolve));
  B.onCommand = async (command) => {
    await gate;
    return { kind: 'ok', result: { ok: true, value: { late: command } } };
  };
  const answer = carry(A, 5);
  await until('B took the command', () => B.commands.length === 1);
  // A's server goes away as in a crash, though A's transport lives on: B's answer cannot reach A
  // until A listens again on the same port.
  const port = A.port;
  A.app.server.close();
  A.app.server.closeAllConnections();
  release();
  // Backing off, not re-sending the answer in a loop of failed streams.
  await until('B failed to send the answer and backs off', () => B.tr.peerStates()[0]!.failures > 0);
  await listen(t, A, { carries: true, port });
  t.same(await answer, { kind: 'ok', result: { ok: true, value: { late: { type: 'send', queue: 'q', n: 5 } } } });
});

t.test('a leader that ends its streams answers retry only for the commands it did not take', async (t) => {
  const { A, B } = await pair(t);
  // B holds a frame of Raft messages; the frame carrying the command comes behind it.
  let release = (): void => undefined;
  B.gate = new Promise<void>((resolve) => (release = resolve));
  const framesBefore = B.frames;
  A.tr.send([{ partition: 0, message: { type: MessageType.Heartbeat, from: a, to: b, term: 1, commit: 0, readRound: 0 } }]);
  await until('B holds the frame', () => B.frames > framesBefore);
  const answer = carry(A, 6, 600_000);
  await until('the command left in a frame', () => A.tr.stats().carriedCommands === 1);
  // B closes: it ends the stream once the held frame is taken, with that frame acknowledged and
  // the one behind it not taken.
  const closed = B.app.close();
  setTimeout(release, 50);
  t.match(await answer, { kind: 'retry' }, 'answered retry: the router may send it again');
  t.same(B.commands, [], 'and B never took it: retried, it is not proposed twice');
  await closed;
});

t.test('a command answered retry while its frame waited for the old stream to be let go never reaches the leader', async (t) => {
  // Streams are replaced once 300 ms old; a frame's acknowledgement may take 5 s.
  const { A, B } = await pair(t, { timeoutMs: 5_000, streamMaxAgeMs: 300 });
  // B holds a frame of Raft messages unacknowledged: the old stream cannot be let go meanwhile.
  let release = (): void => undefined;
  B.gate = new Promise<void>((resolve) => (release = resolve));
  const framesBefore = B.frames;
  A.tr.send([{ partition: 0, message: { type: MessageType.Heartbeat, from: a, to: b, term: 1, commit: 0, readRound: 0 } }]);
  await until('B holds the frame', () => B.frames > framesBefore);
  await new Promise((resolve) => setTimeout(resolve, 350));
  // The stream is too old: the command's frame waits for the old one's acknowledgements, past the
  // command's deadline, and it was never written meanwhile.
  const answer = carry(A, 8, 400);
  t.match(await answer, { kind: 'retry' }, 'never written: the router may send it again');
  release();
  await new Promise((resolve) => setTimeout(resolve, 300));
  t.same(B.commands, [], 'so the leader must never take it (the retry would apply it twice)');
});

t.test('a retired stream that breaks leaves the commands of the stream that replaced it awaiting their answers', async (t) => {
  // Streams are replaced once 300 ms old.
  const { A, B } = await pair(t, { timeoutMs: 5_000, streamMaxAgeMs: 300 });
  const release = holdAnswers(B);
  // The old stream's answer does not end when A ends its body (as when B is slow to see that end).
  B.holdEnds = true;
  await new Promise((resolve) => setTimeout(resolve, 350));
  const answer = carry(A, 9, 600_000);
  await until('B took the command, in a frame of the new stream', () => B.commands.length === 1);
  t.equal(B.streams.length, 2, 'the command came on the second stream');
  await until('the old stream\'s body ended', () => B.streams[0]!.end !== null);
  // The retired stream's connection breaks; the new one, which carried the command, is healthy.
  B.streams[0]!.socket.destroy();
  // A sees the break within a few turns of the loop (before the fix, the command was answered
  // unknown then); a slower machine only makes the test pass without looking.
  await new Promise((resolve) => setTimeout(resolve, 200));
  t.ok(A.tr.peerStates()[0]!.streaming, 'the new stream is still open');
  release();
  t.same(await answer, { kind: 'ok', result: { ok: true, value: { done: { type: 'send', queue: 'q', n: 9 } } } }, 'the answer, not unknown: the client would hear 503 for a send that applied');
});

t.test('a peer that crashes settles at once the commands of a stream it had ended cleanly, once retired', async (t) => {
  // Streams are replaced once 300 ms old.
  const { A, B } = await pair(t, { timeoutMs: 5_000, streamMaxAgeMs: 300 });
  const release = holdAnswers(B);
  t.teardown(release);
  const answer = carry(A, 10, 600_000);
  let settled: unknown = null;
  void answer.then((a) => (settled = a));
  await until('B took the command on the first stream', () => B.commands.length === 1);
  t.equal(B.streams.length, 1);
  // The first stream is retired (its body ended, B ended its answer) and a second one opened.
  await new Promise((resolve) => setTimeout(resolve, 350));
  A.tr.send([{ partition: 0, message: { type: MessageType.Heartbeat, from: a, to: b, term: 1, commit: 0, readRound: 0 } }]);
  await until('a second stream', () => B.streams.length === 2);
  // B crashes: every connection of its cut.
  B.app.server.closeAllConnections();
  await until('the command was answered', () => settled !== null);
  t.match(settled, { kind: 'unknown', timedOut: false }, 'unknown at once, not at its deadline');
});
