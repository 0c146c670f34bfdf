// deploy/prometheus/alerts.yml against what real nodes export (test/deploy/alert-series.ts): three
// node processes are driven through situations an operator must hear of, or must not be woken by,
// their /metrics scraped in each, and promtool says which alerts those series fire:
//
//   - a healthy idle cluster and a healthy busy one fire nothing;
//   - a flood of logins that the password hasher refuses (503) is alerted on that node;
//   - a leader lost and re-elected again and again (a node stalling) is alerted per partition;
//   - a node cut off from its peers while clients write is alerted as behind (its applied index
//     stops while the others commit);
//   - two nodes down: each is alerted down, and every partition without a leader;
//   - a partition halted on one node (its log in a format the node's build cannot read) is alerted;
//   - a node whose wall clock is 30 s ahead is alerted by both others (and sees both off);
//   - a node over TLS exports when its certificate expires (MomCertificateExpiring reads it).
//
// Without openssl (apt-get install -y openssl) the last one is skipped.
//
// Without promtool (apt-get install -y prometheus) the others are skipped (test/tools.ts).
import { execFileSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import { Agent, request } from 'undici';
import { MomServer } from '../../src/server.js';
import { loadConfig, type NodeConfig } from '../../src/cluster/index.js';
import type { Command } from '../../src/store/broker/index.js';
import { proposeWhereLed, submit } from '../partition/host-helpers.js';
import { startCluster } from '../api/api-helpers.js';
import { Cluster, sleep } from '../chaos/cluster.js';
import { freePort, until } from '../cluster/net-helpers.js';
import { needTool } from '../tools.js';
import { firing, inputSeries, minuteByMinute, promtoolTest, scrape, steadyScrape, type Phase, type Scrape } from './alert-series.js';
import { call, threeNodes } from './real-nodes.js';

// Real node processes: starting them and each situation take tens of seconds on a loaded machine.
t.setTimeout(600_000);

const RULES = join(import.meta.dirname, '..', '..', 'deploy', 'prometheus', 'alerts.yml');
const rulesText = readFileSync(RULES, 'utf8');
const EVERY = [...rulesText.matchAll(/- alert: (\w+)/g)].map((m) => m[1]!);

type Alert = ReturnType<typeof firing>;

/**
 * promtool on the phases' series: at minute `at`, each alert of the rules fires exactly as `expected`
 * says (none where it says nothing).
 */
function check(t: Test, bin: string, what: string, phases: Phase[], at: number, expected: Record<string, Alert[]>): void {
  const names = [...new Set([...EVERY, ...Object.keys(expected)])];
  const test = { interval: '1m', input_series: inputSeries(phases), alert_rule_test: names.map((alertname) => ({ eval_time: `${at}m`, alertname, exp_alerts: expected[alertname] ?? [] })) };
  const r = promtoolTest(bin, RULES, [test]);
  t.equal(r.code, 0, `${what}: ${Object.keys(expected).join(', ') || 'no alert'} at ${at} min, nothing else\n${r.out}`);
}

/** The minute-by-minute values of `name` per series, as inputSeries laid them out. */
function valuesOf(phases: Phase[], name: string): Map<string, (number | null)[]> {
  const out = new Map<string, (number | null)[]>();
  for (const s of inputSeries(phases)) if (s.series.startsWith(`${name}{`)) out.set(s.series, s.values.split(' ').map((v) => (v === '_' ? null : Number(v))));
  return out;
}

const label = (series: string, name: string): string => new RegExp(`${name}="([^"]*)"`).exec(series)![1]!;

t.test('the alerts on series of three real nodes', async (t) => {
  const bin = needTool(t, 'promtool');
  if (bin === null) return;
  const cluster = await threeNodes(t, 'alerts');
  t.ok(await Cluster.until(() => cluster.led(), 60_000), 'every partition has a leader');
  const json = (i: number, method: string, path: string, body?: unknown, headers: Record<string, string> = {}) => call(cluster.urls[i]!, method, path, body, headers);
  const scrapeAll = (): Promise<Scrape[]> => Promise.all(cluster.urls.map((u) => scrape(u)));
  /** A scrape of every node once the nodes `nodes` agree on every partition's commit and applied index. */
  const steady = (nodes = [0, 1, 2]): Promise<Scrape[]> => steadyScrape(cluster.urls, nodes);
  t.equal((await json(0, 'POST', '/v1/auth/register', { username: 'watcher', password: 'watcher-password' })).status, 201);
  const auth = { authorization: `Bearer ${(await json(0, 'POST', '/v1/auth/login', { username: 'watcher', password: 'watcher-password' })).body.accessToken as string}` };
  // Eight queues: every one of the four partitions holds some.
  const queues = [...Array(8).keys()].map((i) => `watch-${i}`);
  for (const q of queues) t.equal((await json(1, 'POST', '/v1/queues', { name: q }, auth)).status, 201);

  // Healthy and idle: thirty scrapes a second apart, one a minute.
  const idle: Scrape[][] = [];
  for (let i = 0; i < 30; i++) {
    idle.push(await scrapeAll());
    await sleep(1_000);
  }
  check(t, bin, 'healthy idle', minuteByMinute(idle), 29, {});

  // Healthy and busy: sends through every node, consumers receiving and acknowledging.
  let stop = false;
  const sender = async (c: number): Promise<void> => {
    for (let n = 0; !stop; n++) await json(c % 3, 'POST', `/v1/queues/${queues[(c + n) % queues.length]!}/messages`, { body: `m-${c}-${n}` }, auth).catch(() => undefined);
  };
  const consumer = async (c: number): Promise<void> => {
    for (let n = 0; !stop; n++) {
      const q = queues[(c + n) % queues.length]!;
      const got = await json(c % 3, 'POST', `/v1/queues/${q}/receive`, { maxMessages: 10, visibilityTimeoutSeconds: 30 }, auth).catch(() => null);
      const handles = ((got?.body.messages as { receiptHandle: string }[] | undefined) ?? []).map((m) => m.receiptHandle);
      if (handles.length > 0) await json(c % 3, 'POST', `/v1/queues/${q}/ack`, { receiptHandles: handles }, auth).catch(() => undefined);
    }
  };
  const load = Promise.all([...[0, 1, 2, 3].map(sender), ...[0, 1, 2].map(consumer)]);
  await sleep(2_000);
  // Thirty scrapes 1.5 s apart, one a minute: MomApplyLag then compares with 3 s back, not two minutes.
  const busy: Scrape[][] = [];
  for (let i = 0; i < 30; i++) {
    busy.push(await scrapeAll());
    await sleep(1_500);
  }
  stop = true;
  await load;
  check(t, bin, 'healthy busy', minuteByMinute(busy), 29, {});

  // The password hasher saturated: logins beyond the 16 it holds are answered 503. They come from 48
  // addresses (127.0.1.x), as from many clients: one address gets 429 past a few attempts at once; and
  // as 12 users, since one user gets 429 past 4 checks at once on a node.
  const clients = [...Array(48).keys()].map((k) => new Agent({ localAddress: `127.0.1.${k + 1}` }));
  t.teardown(() => Promise.all(clients.map((c) => c.close())));
  const users = [...Array(12).keys()].map((k) => `flood-${k}`);
  for (const username of users) t.equal((await json(0, 'POST', '/v1/auth/register', { username, password: `${username}-password` })).status, 201);
  const login = async (dispatcher: Agent, k: number): Promise<number> => {
    const username = users[k % users.length]!;
    const res = await request(`${cluster.urls[0]}/v1/auth/login`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ username, password: `${username}-password` }),
      dispatcher,
      signal: AbortSignal.timeout(15_000),
    });
    await res.body.dump();
    return res.statusCode;
  };
  const beforeFlood = await steady();
  const statuses: number[] = [];
  for (let round = 0; round < 3; round++) statuses.push(...(await Promise.all(clients.map(login))));
  const refused = statuses.filter((s) => s === 503).length;
  t.ok(refused > 0, `${refused} logins of ${statuses.length} refused with 503 (${[...new Set(statuses)].join(', ')})`);
  const afterFlood = await steady();
  check(t, bin, 'the password hasher saturated on n1, every minute', [{ minutes: 5, from: beforeFlood, to: beforeFlood }, { minutes: 20, from: beforeFlood, to: afterFlood }], 24, {
    MomServerErrors: [firing(rulesText, 'MomServerErrors', { instance: 'n1', severity: 'warn' })],
  });

  // A rolling restart (docs/operations.md): each node stopped with SIGTERM (scraped while it is down:
  // one failed scrape), started again, and caught up, two minutes apart. Leaderships move, nothing fires.
  const rolling: Phase[] = [];
  const beforeRoll = await steady();
  rolling.push({ minutes: 5, from: beforeRoll, to: beforeRoll });
  for (const i of [0, 1, 2]) {
    cluster.terminate(i);
    t.ok(await Cluster.until(async () => !cluster.running(i), 30_000), `n${i + 1} stopped after SIGTERM`);
    const stopped = await scrapeAll();
    cluster.start(i);
    t.ok(await Cluster.until(() => cluster.quiescent(), 60_000), `n${i + 1} is back and caught up`);
    await Cluster.until(() => cluster.led(), 60_000);
    const back = await steady();
    rolling.push({ minutes: 1, from: stopped, to: stopped }, { minutes: 2, from: back, to: back });
  }
  rolling.push({ minutes: 10, from: rolling.at(-1)!.to, to: rolling.at(-1)!.to });
  check(t, bin, 'a rolling restart', rolling, 23, {});

  // A flapping leader: partition 0's leader stalls (SIGSTOP) for 3 s, eight times, a minute apart.
  const ROUNDS = 8;
  const flaps: Scrape[][] = [await steady()];
  for (let round = 0; round < ROUNDS; round++) {
    let leader = -1;
    await Cluster.until(async () => (leader = await cluster.leaderOf(0)) >= 0, 30_000);
    cluster.pause(leader);
    await sleep(3_000);
    cluster.resume(leader);
    t.ok(await Cluster.until(() => cluster.led(), 60_000), `round ${round + 1}: n${leader + 1} stalled 3 s; every partition has a leader again`);
    flaps.push(await steady());
  }
  const flapping: Phase[] = [{ minutes: 5, from: flaps[0]!, to: flaps[0]! }, ...flaps.slice(1).map((s) => ({ minutes: 1, from: s, to: s })), { minutes: 5, from: flaps[ROUNDS]!, to: flaps[ROUNDS]! }];
  // Partitions whose term moved more than six times on some node within the 15 minutes up to the last stall.
  const at = 5 + ROUNDS - 1;
  const flapped = new Set<string>();
  for (const [series, values] of valuesOf(flapping, 'mom_raft_term')) {
    const seen = values.slice(Math.max(0, at - 14), at + 1).filter((v): v is number => v !== null);
    if (seen.slice(1).filter((v, i) => v !== seen[i]).length > 6) flapped.add(label(series, 'partition'));
  }
  t.ok(flapped.has('0'), `partition 0's term moved more than six times (partitions ${[...flapped].join(', ')})`);
  check(t, bin, 'a leader stalling again and again', flapping, at, {
    MomLeaderFlapping: [...flapped].sort().map((p) => firing(rulesText, 'MomLeaderFlapping', { partition: p, severity: 'warn' })),
  });

  // n3 cut off from its peers while clients write through n1; its snapshot install waits for the cut to end.
  const beforeCut = await steady();
  t.ok(await cluster.isolate(2), 'n3 is cut off');
  let sent = 0;
  for (let round = 0; round < 40; round++) {
    const got = await Promise.all(queues.map((q, i) => json(0, 'POST', `/v1/queues/${q}/messages`, { body: `cut-${round}-${i}` }, auth).catch(() => null)));
    sent += got.filter((g) => g?.status === 201).length;
  }
  t.ok(sent > 200, `${sent} sends acknowledged while n3 is cut off`);
  const cut = [await steady([0, 1])];
  await sleep(3_000);
  cut.push(await steady([0, 1]));
  const cutOff: Phase[] = [{ minutes: 10, from: beforeCut, to: beforeCut }, { minutes: 20, from: cut[0]!, to: cut[1]! }];
  // Where n3 applied less than the others committed.
  const behind: string[] = [];
  const last = (s: Scrape, name: string, p: string): number => s?.find((x) => x.name === name && x.labels.partition === p)?.value ?? 0;
  for (const p of ['0', '1', '2', '3']) if (last(cut[1]![2]!, 'mom_raft_applied_index', p) < Math.max(last(cut[1]![0]!, 'mom_raft_commit_index', p), last(cut[1]![1]!, 'mom_raft_commit_index', p))) behind.push(p);
  t.ok(behind.length > 0, `n3 is behind on partitions ${behind.join(', ')}`);
  // What n3 says of itself: its commit index stopped with its log, so its apply lag reads 0.
  for (const p of behind) {
    const by = Math.max(last(cut[1]![0]!, 'mom_raft_commit_index', p), last(cut[1]![1]!, 'mom_raft_commit_index', p)) - last(cut[1]![2]!, 'mom_raft_applied_index', p);
    t.equal(last(cut[1]![2]!, 'mom_raft_apply_lag', p), 0, `n3's mom_raft_apply_lag{partition="${p}"} is 0 while it is ${by} entries behind`);
  }
  // How far behind, as the rule counts: the highest commit index two minutes before minute 29, less n3's applied index.
  const commits = valuesOf(cutOff, 'mom_raft_commit_index');
  const applied = valuesOf(cutOff, 'mom_raft_applied_index');
  const lag = (p: string): string => {
    const committed = Math.max(...[...commits].filter(([k]) => label(k, 'partition') === p).map(([, v]) => v[27] ?? 0));
    const n3 = [...applied].find(([k]) => label(k, 'partition') === p && label(k, 'instance') === 'n3')![1][29]!;
    return String(committed - n3);
  };
  check(t, bin, 'n3 cut off from its peers under writes', cutOff, 29, {
    MomApplyLag: behind.map((p) => firing(rulesText, 'MomApplyLag', { instance: 'n3', partition: p, severity: 'warn' }, lag(p))),
  });
  t.ok(await cluster.healNet(), 'the cut is lifted');
  t.ok(await Cluster.until(() => cluster.quiescent(), 60_000), 'n3 caught up');

  // Two nodes down: the one left sees no leader anywhere.
  const beforeDown = await steady();
  await cluster.kill(1);
  await cluster.kill(2);
  await Cluster.until(async () => (await cluster.view(0))?.every((p) => p.leader === null) ?? false, 30_000);
  const down = await scrapeAll();
  t.same(down.map((s) => s !== null), [true, false, false], 'only n1 answers');
  check(t, bin, 'two nodes down', [{ minutes: 5, from: beforeDown, to: beforeDown }, { minutes: 15, from: down, to: down }], 19, {
    MomNodeDown: ['n2', 'n3'].map((n) => firing(rulesText, 'MomNodeDown', { instance: n, job: 'mom', severity: 'page' })),
    MomPartitionWithoutLeader: ['0', '1', '2', '3'].map((p) => firing(rulesText, 'MomPartitionWithoutLeader', { partition: p, severity: 'page' })),
  });
  t.same(cluster.crashes, [], 'no node crashed');
});

t.test('a partition halted on one node is alerted', async (t) => {
  const bin = needTool(t, 'promtool');
  if (bin === null) return;
  // In-process nodes, as test/cluster/format.test.ts: n3 plays a build that reads format 1 only,
  // and the leader of a partition raises it to format 2, which n3 then halts on.
  const root = mkdtempSync(join(tmpdir(), 'mom-alerts-halted-'));
  t.teardown(() => rmSync(root, { recursive: true, force: true }));
  const ports = [await freePort(), await freePort(), await freePort()];
  const peers = ports.map((p, i) => `n${i + 1}=http://127.0.0.1:${p}`).join(',');
  const cfgs: NodeConfig[] = ports.map((p, i) =>
    loadConfig(['--node-id', `n${i + 1}`, '--listen', `127.0.0.1:${p}`, '--peers', peers, '--data-dir', join(root, `n${i + 1}`), '--cluster-secret', 's'.repeat(24), '--jwt-secret', 'j'.repeat(32), '--partitions', '4'], {}),
  );
  const nodes = await Promise.all(cfgs.map((c, i) => MomServer.start(c, { tickMs: 20, format: i < 2 ? 2 : 1 })));
  t.teardown(() => Promise.all(nodes.map((n) => n.close())));
  const [n1, n2, n3] = nodes as [MomServer, MomServer, MomServer];
  await until(() => nodes.every((n) => n.status().every((s) => s.leader !== null)), 'every node knows a leader for every partition', 2000);
  for (const q of [0, 1, 2, 3]) {
    const queue: Command = { type: 'queue.create', name: `halted-q${q}`, visibilityTimeoutSeconds: 30, maxDeliveries: null, deadLetterQueue: null, delaySeconds: 0, retentionSeconds: 3600 };
    t.ok((await submit(nodes.map((n) => n.host), q, 'alice', queue)).ok, `a write to partition ${q}`);
  }
  const urls = ports.map((port) => `http://127.0.0.1:${port}`);
  const before = await steadyScrape(urls, [0, 1, 2]);
  // A raise n3 cannot read, on a partition n1 or n2 leads when it is proposed (leaderships move with
  // 20 ms ticks on a busy machine: the scrape above takes seconds).
  const { partition: p, result } = await proposeWhereLed([n1.host, n2.host], [0, 1, 2, 3], null, { type: 'format.raise', format: 2 });
  t.same(result, { ok: true, value: { format: 2 } }, `partition ${p} raised to format 2`);
  await until(() => n3.status()[p]!.halted !== null, `n3 halts partition ${p}`, 2000);
  const halted = await steadyScrape(urls, [0, 1, 2], [String(p)]);
  check(t, bin, `partition ${p} halted on n3`, [{ minutes: 5, from: before, to: before }, { minutes: 20, from: halted, to: halted }], 24, {
    MomPartitionHalted: [firing(rulesText, 'MomPartitionHalted', { instance: 'n3', job: 'mom', partition: String(p), severity: 'page' })],
  });
});

t.test('a node whose clock is 30 s ahead is alerted by both others, and it sees both off', async (t) => {
  const bin = needTool(t, 'promtool');
  if (bin === null) return;
  const cluster = await startCluster({ nodeOptions: (i) => (i === 0 ? { wallClock: () => Date.now() + 30_000 } : {}) });
  t.teardown(() => cluster.close());
  await until(() => cluster.servers.every((s) => s.host.clock.offsets().size === 2), 'every node heard both peers’ clocks');
  const skewed = await steadyScrape(cluster.urls, [0, 1, 2]);
  // The value the rule reports: the offset each node exports, without its sign.
  const offset = (i: number, peer: string): string => String(Math.abs(skewed[i]!.find((s) => s.name === 'mom_peer_clock_offset_seconds' && s.labels.peer === peer)!.value));
  const pairs: [number, string][] = [
    [0, 'n2'],
    [0, 'n3'],
    [1, 'n1'],
    [2, 'n1'],
  ];
  check(t, bin, 'n1 30 s ahead', [{ minutes: 10, from: skewed, to: skewed }], 9, {
    MomClockSkew: pairs.map(([i, peer]) => firing(rulesText, 'MomClockSkew', { instance: `n${i + 1}`, peer, severity: 'warn' }, offset(i, peer))),
  });
});

t.test('a node over TLS says when its certificate expires', async (t) => {
  const openssl = needTool(t, 'openssl');
  if (openssl === null) return;
  const dir = mkdtempSync(join(tmpdir(), 'mom-alerts-tls-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const run = (...args: string[]): void => void execFileSync(openssl, args, { stdio: 'ignore' });
  const [key, cert] = [join(dir, 'n1.key'), join(dir, 'n1.pem')];
  run('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', cert, '-days', '10', '-subj', '/CN=n1', '-addext', 'subjectAltName=IP:127.0.0.1');
  const ports = [await freePort(), await freePort(), await freePort()];
  const peers = ports.map((p, i) => `n${i + 1}=https://127.0.0.1:${p}`).join(',');
  // n1 alone (its peers never start): it serves its API and /metrics all the same.
  const cfg = loadConfig(
    ['--node-id', 'n1', '--listen', `127.0.0.1:${ports[0]}`, '--peers', peers, '--data-dir', join(dir, 'n1'), '--cluster-secret', 's'.repeat(24), '--jwt-secret', 'j'.repeat(32), '--partitions', '2', '--tls-cert', cert, '--tls-key', key, '--tls-ca', cert],
    {},
  );
  const node = await MomServer.start(cfg, { tickMs: 20 });
  t.teardown(() => node.close());
  const agent = new Agent({ connect: { ca: readFileSync(cert) } });
  t.teardown(() => agent.close());
  const got = await scrape(`https://127.0.0.1:${ports[0]}`, agent);
  t.ok(got !== null, 'n1 answers /metrics over HTTPS');
  const expiry = got?.find((s) => s.name === 'mom_tls_certificate_expiry_timestamp_seconds')?.value;
  t.equal(expiry, Date.parse(new X509Certificate(readFileSync(cert)).validTo) / 1000, 'mom_tls_certificate_expiry_timestamp_seconds is the certificate’s notAfter');
});
