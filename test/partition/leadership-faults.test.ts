// Leadership under faults. A one-way fault (a firewall that lets n1 open connections to n2 but not n2 to n1:
// each node's messages to a peer travel in the streams it opens, so n2's messages to n1 are lost and
// n1's reach n2). n2 leads partition 0 with n3, a healthy majority; n1, partition 0's preferred
// leader, hears no leader and pre-votes every election timeout, which n2 and n3 ignore (leader
// lease). Those pre-votes reached n2's Leadership as if n1's replica had answered, and the
// balancing handed partition 0 to n1: a TimeoutNow that can never arrive, and an election timeout of
// refused writes on every pass that found a pre-vote fresh, for as long as the fault lasted.
// Only an answer to this leader (an append's or a heartbeat's) shows that a replica hears it.
import t, { type Test } from 'tap';
import { NotLeaderError } from '../../src/partition/errors.js';
import type { NodeHost } from '../../src/partition/host.js';
import { IDS, LocalCluster, queue } from './host-helpers.js';

const [n1, n2] = IDS as [(typeof IDS)[0], (typeof IDS)[0]];
const TICK_MS = 25; // LocalCluster's tickMs

interface Driven {
  c: LocalCluster;
  leader: NodeHost;
  /** One tick of every node, the clock moved on by a tick, then everything it started settled. */
  tickAll: () => Promise<void>;
  /** Moves the monotonic clock on without a tick. */
  advance: (ms: number) => void;
}

/** One partition on three nodes whose ticks and monotonic clock the test drives; n2 elected by hand. */
async function n2Leads(t: Test, balanceLeaders = true): Promise<Driven> {
  let clock = 0;
  // random 0.5: every randomized election timeout is 15 ticks, so n1 pre-votes at ticks 15, 30, 45...
  const c = new LocalCluster(1, { monotonic: () => clock, random: () => 0.5, balanceLeaders });
  t.teardown(() => c.close());
  for (const id of IDS) await c.start(id, false);
  const leader = c.hosts.get(n2)!;
  leader.replica(0).raw.campaign();
  leader.schedule();
  await c.until(() => leader.replica(0).isLeader(), 'n2 leads partition 0');
  t.ok((await leader.replica(0).propose('alice', queue('q0'))).ok);
  await c.quiet();
  const tickAll = async (): Promise<void> => {
    clock += TICK_MS;
    for (const id of IDS) c.hosts.get(id)!.tick();
    await c.quiet();
  };
  return { c, leader, tickAll, advance: (ms) => (clock += ms) };
}

/** From now on n2's messages to n1 are lost; n1's reach n2. */
function cutN2ToN1(c: LocalCluster): void {
  const preferred = c.hosts.get(n1)!;
  const receive = preferred.receive.bind(preferred);
  preferred.receive = (from, items, ...rest) => {
    if (from !== n2) receive(from, items, ...rest);
  };
}

t.test('a leader does not hand a partition to a preferred node that cannot hear it (one-way fault): writes go on', async (t) => {
  const { c, tickAll, leader } = await n2Leads(t);
  t.equal(leader.leadership.preferredLeader(0), n1, 'n1 is partition 0’s preferred leader');

  cutN2ToN1(c);

  // A lightly written partition (a write every 4 ticks): n1 stays within the 64 entries of the log's
  // end that the balancing asks of a preferred node.
  let transferring = 0;
  const refused: number[] = [];
  for (let tick = 1; tick <= 200; tick++) {
    await tickAll();
    if (leader.replica(0).raw.isTransferring()) transferring++;
    if (tick % 4 !== 0) continue;
    try {
      await leader.replica(0).propose('alice', queue(`w${tick}`));
    } catch (err) {
      if (!(err instanceof NotLeaderError)) throw err;
      refused.push(tick);
    }
  }
  t.ok(leader.replica(0).isLeader(), 'n2 still leads partition 0 (n3 answers it)');
  t.equal(transferring, 0, 'n2 never hands partition 0 to n1, whose replica never answered it (ticks spent transferring)');
  t.same(refused, [], 'no write to partition 0 is refused while n2 and n3 are a healthy majority');
});

t.test('a hand-over before a stop picks a peer whose replica answers, not one the leaving node cannot reach', async (t) => {
  const { c, leader, tickAll, advance } = await n2Leads(t, false);
  // A few ticks first: the format raises of a new cluster are appended and reach every replica.
  for (let i = 0; i < 25; i++) await tickAll();
  const match = leader.replica(0).raw.status().match;
  const last = leader.replica(0).raw.status().lastIndex;
  t.same([match.get(n1), match.get(IDS[2]!)], [last, last], 'both followers hold the whole log: by match alone, n1 and n3 tie');

  cutN2ToN1(c);
  // An election timeout later (no tick: nothing else moves), n1 pre-votes, as a replica that hears
  // no leader does, and n3 answers a heartbeat round (a read): both are heard now; only n3 answers.
  advance(2 * 10 * TICK_MS);
  c.hosts.get(n1)!.replica(0).raw.campaign();
  c.hosts.get(n1)!.schedule();
  await leader.replica(0).read(() => null);
  await c.quiet();
  t.ok(leader.replica(0).isLeader(), 'n2 still leads partition 0');

  // handOver waits in real time (setTimeout) but bounds itself by the host's clock, which stands
  // still here; no tick abandons a transfer. The test gives it 2,000 rounds of 5 ms or more (a loaded
  // machine's timers are late, and a bound in wall-clock time would fail there).
  const handing = leader.leadership.handOver(60_000);
  let handedTo: string | null = null;
  for (let round = 0; round < 2000; round++) {
    await new Promise((r) => setTimeout(r, 5));
    const now = c.leaderOf(0);
    if (now !== null && now !== leader) {
      handedTo = now.opts.self;
      break;
    }
  }
  t.equal(handedTo, 'n3', 'n3, which answers n2, takes partition 0 over');
  // handOver returns once n2 knows the new leader; a stuck one ends at its deadline, now past.
  advance(120_000);
  await handing;
});

// A planned stop hands over what the node leads, and from then on its host drops every TimeoutNow
// (Leadership.leaving) while the close runs, seconds during which it still answers its leaders. A
// partition it prefers but did not lead was not handed over by it, so nothing held its leader back:
// each pass (two election timeouts) offered the partition to the leaving node again, and each offer
// refused writes for an election timeout.
t.test('a partition the target drops is offered to it once, not on every pass (a node that is leaving)', async (t) => {
  const { c, leader, tickAll } = await n2Leads(t);
  const leaving = c.hosts.get(n1)!;
  await leaving.leadership.handOver(); // it leads nothing: this returns at once, and it takes no leadership from now on
  t.ok(leaving.leadership.leaving);

  let offers = 0;
  let transferring = false;
  const refused: number[] = [];
  for (let tick = 1; tick <= 120; tick++) {
    await tickAll();
    const now = leader.replica(0).raw.isTransferring();
    if (now && !transferring) offers++;
    transferring = now;
    try {
      await leader.replica(0).propose('alice', queue(`w${tick}`));
    } catch (err) {
      if (!(err instanceof NotLeaderError)) throw err;
      refused.push(tick);
    }
  }
  t.ok(leader.replica(0).isLeader(), 'n2 still leads partition 0');
  t.ok(offers <= 1, `partition 0 was offered to the leaving node ${offers} times in 6 passes`);
  t.ok(refused.length <= 10, `writes were refused for ${refused.length} ticks of 120 (one election timeout is 10)`);
});
