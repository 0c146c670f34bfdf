// A node's process that crashed left its long polls parked in the state: their clients' sockets went
// with it. Each stayed until its deadline (20 s at most) and was served before any live poll on its
// channel, so the messages sent meanwhile were leased to nobody for their visibility timeout, each
// counted as a delivery. The node's next process takes them out (Router.leaveOrphanedPolls): the
// look a poll takes when its client leaves, for each tag of this node with another process's nonce.
// From stop 60's review of forwarding.
import t, { type Test } from 'tap';
import type { CarriedOutcome, PeerCaller } from '../../src/cluster/answer.js';
import { ORPHANED_POLLS_MS, Router } from '../../src/cluster/router.js';
import type { NodeHost } from '../../src/partition/host.js';
import { FORMAT, type Command } from '../../src/store/broker/index.js';
import { LocalCluster, queue } from '../partition/host-helpers.js';

/** Peers that take a forwarded command by proposing it at that host: the cluster without HTTP. */
function peersOf(c: LocalCluster): PeerCaller {
  return {
    call: () => Promise.reject(new Error('no HTTP here')),
    carry: (peer, carried): Promise<CarriedOutcome> =>
      c.hosts
        .get(peer)!
        .replica(carried.partition)
        .propose(carried.actor, carried.command as unknown as Command)
        .then(
          (result): CarriedOutcome => ({ kind: 'ok', result }),
          (err: unknown): CarriedOutcome => ({ kind: 'retry', detail: String(err) }),
        ),
  };
}

const park = (tag: string, name = 'q'): Command => ({ type: 'receive', channel: { queue: name }, maxMessages: 5, visibilityTimeoutSeconds: 30, wait: { tag, ms: 20_000, again: false } });
const send = (body: string, name = 'q'): Command => ({ type: 'queue.send', name, messages: [{ body, attributes: {} }] });

/** A cluster of one partition in the newest format, with alice's queues q and q2, and the node `f` whose process restarts. */
async function cluster(t: Test): Promise<{ c: LocalCluster; f: NodeHost }> {
  const c = new LocalCluster(1, { balanceLeaders: false });
  t.teardown(() => c.close());
  await c.startAll();
  await c.until(() => c.leaderOf(0) !== null, 'a leader');
  t.ok((await c.submit(0, 'alice', queue('q'))).ok);
  t.ok((await c.submit(0, 'alice', queue('q2'))).ok);
  await c.until(() => [...c.hosts.values()].every((h) => h.replica(0).state.format() === FORMAT), 'the newest format');
  // A follower, so that its looks are forwarded, as most are.
  const leader = c.leaderOf(0);
  return { c, f: [...c.hosts.values()].find((h) => h !== leader)! };
}

/** The router of f's new process, past its first minute: its passes do not look, the test does. */
function restarted(c: LocalCluster, f: NodeHost): Router {
  let clock = 0;
  const router = new Router(f, peersOf(c), { self: f.opts.self, partitions: 1, pollMs: 5, now: () => clock });
  clock = ORPHANED_POLLS_MS;
  return router;
}

/** Every poll waiting in `host`'s replica, by tag. */
const waiting = (host: NodeHost): string[] => host.replica(0).state.waitingTagged('', '\u{10ffff}', 0, 1000).map((w) => w.tag);

async function appliedEverywhere(c: LocalCluster): Promise<void> {
  const target = Math.max(...[...c.hosts.values()].map((h) => h.replica(0).state.applied().index));
  await c.until(() => [...c.hosts.values()].every((h) => h.replica(0).state.applied().index >= target), 'every replica applied');
}

const stats = async (c: LocalCluster, name = 'q') => {
  const r = c.leaderOf(0)!.replica(0).state.getQueue(name, 'alice', Date.now());
  return r.ok ? r.value.stats : null;
};

t.test("a previous process's waiting polls are taken out, and a message sent after goes to nobody's lease", async (t) => {
  const { c, f } = await cluster(t);
  const self = f.opts.self;
  const other = [...c.hosts.keys()].find((id) => id !== self)!;
  // The previous process of f parked two polls; another node parked one.
  const orphans = [`${self}.0ldNonce.1`, `${self}.0ldNonce.2`];
  for (const tag of orphans) t.same(await c.submit(0, 'alice', park(tag)), { ok: true, value: { messages: [], parked: 'parked' } });
  t.same(await c.submit(0, 'alice', park(`${other}.itsNonce.1`, 'q2')), { ok: true, value: { messages: [], parked: 'parked' } });
  const router = restarted(c, f);
  const own = router.park();
  t.same(await c.submit(0, 'alice', park(own.tag, 'q2')), { ok: true, value: { messages: [], parked: 'parked' } });
  await appliedEverywhere(c);

  t.equal(await router.leaveOrphanedPolls(), 2, 'both of the previous process’s polls are taken out');
  await appliedEverywhere(c);
  t.same(waiting(f).sort(), [`${other}.itsNonce.1`, own.tag].sort(), "another node's poll and this process's own still wait");
  t.equal(await router.leaveOrphanedPolls(), 0, 'each once');

  t.ok((await c.submit(0, 'alice', send('after the restart'))).ok);
  t.match(await stats(c), { visible: 1, inFlight: 0 }, 'the message waits for a live poll, leased to none');
  own.done();
});

t.test('a poll served before its look keeps what it was given under its lease', async (t) => {
  const { c, f } = await cluster(t);
  const tag = `${f.opts.self}.0ldNonce.1`;
  t.same(await c.submit(0, 'alice', park(tag)), { ok: true, value: { messages: [], parked: 'parked' } });
  t.ok((await c.submit(0, 'alice', send('to the poll before the crash'))).ok);
  await appliedEverywhere(c);
  t.match(await stats(c), { visible: 0, inFlight: 1 }, 'served');
  const router = restarted(c, f);
  t.equal(await router.leaveOrphanedPolls(), 0, 'nothing waits');
  // Its process may have answered its client before it died: the delivery may have been seen.
  t.match(await stats(c), { visible: 0, inFlight: 1 }, 'still leased');
});

t.test("the passes of a router's first minute take them out by themselves, and later ones do not look", async (t) => {
  const { c, f } = await cluster(t);
  const self = f.opts.self;
  let clock = 0;
  const passes = (): Promise<void> => {
    let n = 0;
    return new Promise((resolve) =>
      f.onPass(() => {
        if (++n === 3) resolve();
      }),
    );
  };
  t.same(await c.submit(0, 'alice', park(`${self}.0ldNonce.1`)), { ok: true, value: { messages: [], parked: 'parked' } });
  await appliedEverywhere(c);
  const router = new Router(f, peersOf(c), { self, partitions: 1, pollMs: 5, now: () => clock });
  f.onPass(() => router.pass());
  clock = ORPHANED_POLLS_MS - 1;
  await c.until(() => waiting(f).length === 0, 'the poll taken out on a pass');
  t.pass('taken out without a call');

  t.same(await c.submit(0, 'alice', park(`${self}.0ldNonce.2`)), { ok: true, value: { messages: [], parked: 'parked' } });
  await appliedEverywhere(c);
  clock = ORPHANED_POLLS_MS;
  await passes();
  t.same(waiting(f), [`${self}.0ldNonce.2`], 'past the first minute the passes leave it');
});


t.test("a leader takes out the waiting polls of a node whose replica does not answer it, not those of one that does", async (t) => {
  const { c, f } = await cluster(t);
  const leader = c.leaderOf(0)!;
  const down = f.opts.self;
  const live = [...c.hosts.keys()].find((id) => id !== down && id !== leader.opts.self)!;
  t.same(await c.submit(0, 'alice', park(`${down}.itsNonce.1`)), { ok: true, value: { messages: [], parked: 'parked' } });
  t.same(await c.submit(0, 'alice', park(`${live}.itsNonce.1`, 'q2')), { ok: true, value: { messages: [], parked: 'parked' } });
  await appliedEverywhere(c);
  c.down.add(down);
  await c.until(() => !waiting(leader).includes(`${down}.itsNonce.1`), "the poll of the node that does not answer taken out");
  t.same(waiting(leader), [`${live}.itsNonce.1`], "the live node's poll still waits");
  t.ok((await c.submit(0, 'alice', send('while it is down'))).ok);
  t.match(await stats(c), { visible: 1, inFlight: 0 }, 'the message waits for a poll that can answer, leased to none');
  c.down.delete(down);
});
