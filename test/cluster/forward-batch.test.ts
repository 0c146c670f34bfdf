// Forwarded commands of one loop turn travel in one request per leader, and each caller gets its own
// command's answer; a transport failure answers every command of the batch the same way; a leader
// without the batch route (404) gets the commands one by one from then on.
import t from 'tap';
import type { PeerCaller } from '../../src/cluster/answer.js';
import { ForwardBatcher } from '../../src/cluster/forward-batch.js';
import type { Forwarded } from '../../src/cluster/internal-schemas.js';
import { COMMAND_PATH, COMMANDS_PATH } from '../../src/cluster/internal-routes.js';
import type { NodeId } from '../../src/raft/index.js';

const n2 = 'n2' as NodeId;
const n3 = 'n3' as NodeId;
const cmd = (k: number): Forwarded => ({ partition: k % 4, actor: 'alice', command: { type: 'queue.send', name: `q${k}`, messages: [{ body: `m${k}`, attributes: {} }] } });
const ok = (k: unknown) => ({ kind: 'ok', result: { ok: true, value: k } });

class FakePeers implements PeerCaller {
  calls: { peer: NodeId; path: string; body: unknown }[] = [];
  constructor(private readonly answer: (peer: NodeId, path: string, body: unknown) => Promise<{ status: number; body: unknown }>) {}
  call(peer: NodeId, path: string, body: unknown): Promise<{ status: number; body: unknown }> {
    this.calls.push({ peer, path, body });
    return this.answer(peer, path, body);
  }
}

const echo = async (_peer: NodeId, path: string, body: unknown): Promise<{ status: number; body: unknown }> => {
  if (path === COMMANDS_PATH) return { status: 200, body: { answers: (body as { items: Forwarded[] }).items.map((i) => ok((i.command as { name: string }).name)) } };
  return { status: 200, body: ok((body as Forwarded & { command: { name: string } }).command.name) };
};

t.test('commands forwarded in one turn leave in one request per leader and partition; each caller gets its own answer', async (t) => {
  const peers = new FakePeers(echo);
  const b = new ForwardBatcher(peers, 1000);
  // cmd(k) is for partition k % 4: 1, 5 and 9 share partition 1; 2 and 4 are alone on theirs
  const answers = await Promise.all([b.forward(n2, cmd(1)), b.forward(n3, cmd(2)), b.forward(n2, cmd(5)), b.forward(n2, cmd(9)), b.forward(n2, cmd(4))]);
  t.same(answers, [ok('q1'), ok('q2'), ok('q5'), ok('q9'), ok('q4')]);
  t.same(
    peers.calls.map((c) => [c.peer, c.path]),
    [
      [n2, COMMANDS_PATH],
      [n3, COMMAND_PATH],
      [n2, COMMAND_PATH],
    ],
    'one batch for n2 and partition 1 (three commands); the lone commands go on the single route',
  );
  t.same((peers.calls[0]!.body as { items: Forwarded[] }).items.map((i) => i.partition), [1, 1, 1]);
  // the next turn is a new batch
  await Promise.all([b.forward(n2, cmd(5)), b.forward(n2, cmd(9))]);
  t.equal(peers.calls.length, 4);
});

t.test('a slow partition does not hold up another one forwarded to the same leader', async (t) => {
  let release = (): void => undefined;
  const gate = new Promise<void>((r) => (release = r));
  const peers = new FakePeers(async (peer, path, body) => {
    const items = path === COMMANDS_PATH ? (body as { items: Forwarded[] }).items : [body as Forwarded];
    if (items.some((i) => i.partition === 1)) await gate;
    return echo(peer, path, body);
  });
  const b = new ForwardBatcher(peers, 1000);
  const slow = Promise.all([b.forward(n2, cmd(1)), b.forward(n2, cmd(5))]);
  const fast = await Promise.all([b.forward(n2, cmd(2)), b.forward(n2, cmd(6))]);
  t.same(fast, [ok('q2'), ok('q6')], 'partition 2 answered while partition 1 still waits');
  release();
  t.same(await slow, [ok('q1'), ok('q5')]);
});

t.test('a refused connection means not sent (retry); any other failure means unknown, for every command of the batch', async (t) => {
  const refused = new ForwardBatcher(new FakePeers(() => Promise.reject(Object.assign(new Error('refused'), { code: 'ECONNREFUSED' }))), 1000);
  const r = await Promise.all([refused.forward(n2, cmd(1)), refused.forward(n2, cmd(5))]);
  t.match(r, [{ kind: 'retry' }, { kind: 'retry' }]);
  const reset = new ForwardBatcher(new FakePeers(() => Promise.reject(Object.assign(new Error('reset'), { code: 'ECONNRESET' }))), 1000);
  const u = await Promise.all([reset.forward(n2, cmd(1)), reset.forward(n2, cmd(5))]);
  t.match(u, [{ kind: 'unknown' }, { kind: 'unknown' }]);
  const short = new ForwardBatcher(new FakePeers(async () => ({ status: 200, body: { answers: [ok(1)] } })), 1000);
  const s = await Promise.all([short.forward(n2, cmd(1)), short.forward(n2, cmd(5))]);
  t.match(s, [{ kind: 'unknown' }, { kind: 'unknown' }], 'an answer list of the wrong length decides nothing');
});

t.test('a leader without the batch route (404) gets the batch again one by one, and single requests from then on', async (t) => {
  const peers = new FakePeers(async (peer, path, body) => (path === COMMANDS_PATH ? { status: 404, body: { code: 'not_found' } } : echo(peer, path, body)));
  const b = new ForwardBatcher(peers, 1000);
  t.same(await Promise.all([b.forward(n2, cmd(1)), b.forward(n2, cmd(5))]), [ok('q1'), ok('q5')]);
  t.same(await Promise.all([b.forward(n2, cmd(3)), b.forward(n2, cmd(7))]), [ok('q3'), ok('q7')]);
  t.same(
    peers.calls.map((c) => c.path),
    [COMMANDS_PATH, COMMAND_PATH, COMMAND_PATH, COMMAND_PATH, COMMAND_PATH],
  );
});
