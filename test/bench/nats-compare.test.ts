// The --vs nats comparison pairs each of our workloads with the peer's workload that measures the same
// thing, in every mode the peer ran, and leaves out modes it skipped or that failed.
import t from 'tap';
import { compare, comparisonMarkdown, type PeerResult } from '../../bench/nats.js';

const peer: PeerResult = {
  peer: 'nats-jetstream',
  nats_server: 'v2.9.10',
  runs: [
    {
      mode: 'default',
      sync_publish: { publishers: 64, msgs_per_s: 9500, ack_p50_ms: 5.7, ack_p99_ms: 22.35 },
      async_publish: { publishers: 4, in_flight_max: 400, msgs_per_s: 10600, ack_p50_ms: 31, ack_p99_ms: 76 },
      consume: { fetch_batch: 100, msgs_per_s: 16900 },
    },
    { mode: 'sync_mount', skipped: 'needs root and a free loop device' },
    { mode: 'other', error: 'load generator exit 1' },
  ],
};

t.test('pairs send-1, send-100 and receive-ack-100 with the peer, ratio ours over theirs', async (t) => {
  const ours = [
    { workload: 'send-1', messagesPerSecond: 1900, p99Ms: 40 },
    { workload: 'send-100', messagesPerSecond: 21200, p99Ms: 300 },
    { workload: 'receive-ack-100', messagesPerSecond: 8450, p99Ms: 200 },
    { workload: 'wake-up', messagesPerSecond: 34, p99Ms: 18 },
  ];
  const c = compare(ours, peer);
  t.same(
    c.map((x) => [x.workload, x.mode, x.ours, x.theirs, x.ratio]),
    [
      ['send-1', 'default', 1900, 9500, 0.2],
      ['send-100', 'default', 21200, 10600, 2],
      ['receive-ack-100', 'default', 8450, 16900, 0.5],
    ],
  );
  t.equal(c[0]!.theirsP99Ms, 22.4, 'the peer p99 is rounded as ours is');
  t.match(comparisonMarkdown(c, peer), /\| send-1 \| 64 publishers awaiting each ack \| default \| 1,900 \| 9,500 \| 0\.2 \|/);
});

t.test('a workload we did not run is left out; no comparable run says why', async (t) => {
  t.same(compare([{ workload: 'send-1', messagesPerSecond: 100, p99Ms: 1 }], peer).map((x) => x.workload), ['send-1']);
  const none = compare([], peer);
  t.same(none, []);
  t.match(comparisonMarkdown(none, peer), /sync_mount: needs root and a free loop device; other: load generator exit 1/);
});
