// The `mom` command against a running three-node cluster: run as a user would (bin/mom.mjs, running
// the freshly built dist/cli.js, in a child process with its own config folder), readable output and --json, the token kept between commands in a
// file only its owner can read, clear errors and exit statuses.
import { spawn } from 'node:child_process';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { startCluster } from '../api/api-helpers.js';
import { until } from '../cluster/net-helpers.js';
// @ts-expect-error: a plain .mjs script without types
import { buildCli } from '../../scripts/build.mjs';

// Real node processes: starting, stopping and catching up take tens of seconds on a loaded machine.
t.setTimeout(300_000);

const BIN = join(import.meta.dirname, '..', '..', 'bin', 'mom.mjs');
// bin/mom.mjs runs dist/cli.js when it exists: build it from the current sources, as `npm run build`
// does (each run then starts in a fraction of a second, without transpiling).
await (buildCli as () => Promise<string>)();
const cluster = await startCluster({ leaderWaitMs: 1500 });
const home = mkdtempSync(join(tmpdir(), 'mom-cli-'));
t.teardown(async () => {
  await cluster.close();
  rmSync(home, { recursive: true, force: true });
});
const url = cluster.urls[1]!;

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs `mom args`, with `input` on standard input; resolves when it exits (or after killAfterMs, with SIGINT). */
function mom(args: string[], opts: { input?: string; configDir?: string; onLine?: (line: string) => void } = {}): Promise<Run> & { child: ReturnType<typeof spawn> } {
  const child = spawn(process.execPath, [BIN, ...args], {
    env: { ...process.env, MOM_CONFIG_DIR: opts.configDir ?? join(home, 'config'), MOM_URL: '', MOM_TOKEN: '' },
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (d: Buffer) => {
    const text = d.toString();
    stdout += text;
    if (opts.onLine !== undefined) for (const l of text.split('\n')) if (l !== '') opts.onLine(l);
  });
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  child.stdin!.end(opts.input ?? '');
  const done = new Promise<Run>((resolve) => child.on('close', (code) => resolve({ code: code ?? -1, stdout, stderr }))) as Promise<Run> & { child: typeof child };
  done.child = child;
  return done;
}

t.test('register, login, and the session file', async (t) => {
  const reg = await mom(['--url', url, 'register', '--username', 'cli-user', '--password-stdin'], { input: 'cli-password-1\n' });
  t.equal(reg.code, 0, reg.stderr);
  t.match(reg.stdout, /user cli-user created/);
  const bad = await mom(['--url', url, 'login', '--username', 'cli-user', '--password-stdin'], { input: 'wrong-password\n' });
  t.equal(bad.code, 1, 'a refused login exits 1');
  t.match(bad.stderr, /^mom: .*\(401 unauthorized\)/m, 'with the server’s words');
  const none = await mom(['queues', 'list']);
  t.equal(none.code, 2);
  t.match(none.stderr, /not logged in: run mom login/);
  // MOM_URL is set empty by mom() and no session names a URL: a usage error at once, not 10 s of
  // retries against the URL '' and exit 3.
  const noUrl = await mom(['register', '--username', 'cli-nobody', '--password-stdin'], { input: 'cli-password-1\n', configDir: join(home, 'no-url') });
  t.equal(noUrl.code, 2, noUrl.stderr);
  t.match(noUrl.stderr, /no cluster URL/);
  const ok = await mom(['--url', url, 'login', '--username', 'cli-user', '--password-stdin'], { input: 'cli-password-1\n' });
  t.equal(ok.code, 0, ok.stderr);
  t.match(ok.stdout, new RegExp(`logged in to ${url.replace(/[.]/g, '\\.')}/? as cli-user`));
  const file = join(home, 'config', 'session.json');
  t.equal(statSync(file).mode & 0o777, 0o600, 'the token file is readable by its owner only');
  t.notMatch(ok.stdout + ok.stderr, /eyJ/, 'the token is never printed');
});

t.test('queues: create, list, show with stats, send, receive with --ack, delete', async (t) => {
  t.equal((await mom(['queues', 'create', 'cli-orders', '--visibility-timeout', '60'])).code, 0);
  const dup = await mom(['queues', 'create', 'cli-orders']);
  t.equal(dup.code, 1);
  t.match(dup.stderr, /exists.*\(409 conflict\)/);
  const list = await mom(['queues', 'list']);
  t.match(list.stdout, /^NAME\s+OWNER\ncli-orders\s+cli-user$/m);
  const sent = await mom(['send', 'cli-orders', 'order one', '--attr', 'priority=high']);
  t.equal(sent.code, 0, sent.stderr);
  t.match(sent.stdout, /\(sequence \d+\)/);
  t.equal((await mom(['send', 'cli-orders', 'order two'])).code, 0);
  const show = await mom(['queues', 'show', 'cli-orders']);
  t.match(show.stdout, /stats\.visible\s+2/);
  t.match(show.stdout, /visibilityTimeoutSeconds\s+60/);
  const json = JSON.parse((await mom(['--json', 'queues', 'show', 'cli-orders'])).stdout) as { name: string; stats: { visible: number } };
  t.match(json, { name: 'cli-orders', stats: { visible: 2 } }, '--json gives the API’s object');

  const got = await mom(['--json', 'receive', 'cli-orders', '--max', '10', '--ack']);
  t.equal(got.code, 0, got.stderr);
  const received = JSON.parse(got.stdout) as { messages: { body: string; attributes: Record<string, string> }[] };
  t.same(received.messages.map((m) => m.body), ['order one', 'order two']);
  t.same(received.messages[0]!.attributes, { priority: 'high' });
  t.match((await mom(['queues', 'show', 'cli-orders'])).stdout, /stats\.visible\s+0\nstats\.inFlight\s+0/, 'acknowledged: gone');
  t.match((await mom(['receive', 'cli-orders'])).stdout, /no message/);
  const missing = await mom(['send', 'no-such-queue', 'x']);
  t.equal(missing.code, 1);
  t.match(missing.stderr, /not found \(404 not_found\)/);
  t.equal((await mom(['queues', 'delete', 'cli-orders'])).code, 0);
  t.equal((await mom(['queues', 'show', 'cli-orders'])).code, 1);
});

t.test('send --idempotency-key: the key an unknown outcome named stores the message once', async (t) => {
  t.equal((await mom(['queues', 'create', 'cli-keyed'])).code, 0);
  const first = await mom(['--json', 'send', 'cli-keyed', 'once', '--idempotency-key', 'cli-key-1']);
  t.equal(first.code, 0, first.stderr);
  const again = await mom(['--json', 'send', 'cli-keyed', 'once', '--idempotency-key', 'cli-key-1']);
  t.equal(again.code, 0, again.stderr);
  t.equal((JSON.parse(again.stdout) as { messageId: string }).messageId, (JSON.parse(first.stdout) as { messageId: string }).messageId, 'the repeat answered the first send');
  t.match((await mom(['queues', 'show', 'cli-keyed'])).stdout, /stats\.visible\s+1\n/, 'stored once');
});

t.test('receive --wait and --follow get what is sent while they wait', async (t) => {
  t.equal((await mom(['queues', 'create', 'cli-live'])).code, 0);
  const waiting = mom(['receive', 'cli-live', '--wait', '20']);
  // Send once the long poll waits on the node (its router counts it), not after a fixed pause that a
  // slow start of the command could outlast.
  const node = cluster.servers[1]!.node.router;
  await until(() => node.waiting() >= 1, 'the receive waits on the node', 6000);
  t.equal((await mom(['send', 'cli-live', 'awaited'])).code, 0);
  const w = await waiting;
  t.match(w.stdout, /awaited/, 'the long poll got it');

  const lines: string[] = [];
  let seen = (): void => undefined;
  const three = new Promise<void>((r) => (seen = r));
  const follow = mom(['receive', 'cli-live', '--follow', '--ack'], { onLine: (l) => (lines.push(l), lines.length >= 3 && seen()) });
  for (const b of ['f1', 'f2', 'f3']) t.equal((await mom(['send', 'cli-live', b])).code, 0);
  await three;
  follow.child.kill('SIGINT');
  const f = await follow;
  // 'awaited' is still leased by the first receive (no --ack), so only the three new ones come.
  t.same(lines.map((l) => l.split('\t')[2]).sort(), ['f1', 'f2', 'f3'], 'one line per message: sequence, id, body');
  t.equal(f.code, 0, 'Ctrl-C ends the follow quietly');
});

t.test('topics: grant, subscribe, publish, receive from topic/subscription', async (t) => {
  t.equal((await mom(['topics', 'create', 'cli-events'])).code, 0);
  t.equal((await mom(['subscribe', 'cli-events', 'audit'])).code, 0);
  const pub = await mom(['publish', 'cli-events', 'event one']);
  t.equal(pub.code, 0, pub.stderr);
  const got = await mom(['receive', 'cli-events/audit', '--ack']);
  t.match(got.stdout, /event one/);
  // another user, granted
  const other = join(home, 'other');
  t.equal((await mom(['--url', url, 'register', '--username', 'cli-other', '--password-stdin'], { input: 'other-password-1', configDir: other })).code, 0);
  t.equal((await mom(['--url', url, 'login', '--username', 'cli-other', '--password-stdin'], { input: 'other-password-1', configDir: other })).code, 0);
  const refused = await mom(['publish', 'cli-events', 'x'], { configDir: other });
  t.equal(refused.code, 1, 'not granted: refused');
  const grant = await mom(['topics', 'grant', 'cli-events', 'cli-other', '--actions', 'publish']);
  t.equal(grant.code, 0, grant.stderr);
  t.equal((await mom(['publish', 'cli-events', 'from other'], { configDir: other })).code, 0, 'granted: published');
});

t.test('cluster status: a readable table, and --json', async (t) => {
  const s = await mom(['--url', url, 'cluster', 'status']);
  t.equal(s.code, 0, s.stderr);
  t.match(s.stdout, /^PARTITION\s+LEADER\s+TERM\s+COMMIT\s+APPLIED\s+FORMAT\s+LAG n1\s+LAG n2\s+LAG n3$/m);
  t.match(s.stdout, /every partition has a leader/);
  const j = JSON.parse((await mom(['--json', '--url', url, 'cluster', 'status'])).stdout) as { partitions: unknown[] };
  t.equal(j.partitions.length, cluster.configs[0]!.partitions);
});

t.test('usage errors and an unreachable cluster', async (t) => {
  const bad = await mom(['receive', 'cli-live', '--max', '500']);
  t.equal(bad.code, 2);
  t.match(bad.stderr, /--max must be an integer from 1 to 100/);
  // The saved token goes only to the cluster it was got from: nothing reaches another host.
  let reached = 0;
  const elsewhere = createServer((req, res) => {
    reached++;
    res.writeHead(200, { 'content-type': 'application/json' }).end('{"items":[],"nextCursor":null}');
  });
  await new Promise<void>((r) => elsewhere.listen(0, '127.0.0.1', r));
  t.teardown(() => elsewhere.close());
  const other = `http://127.0.0.1:${(elsewhere.address() as AddressInfo).port}`;
  for (const args of [['queues', 'list'], ['logout']]) {
    const r = await mom(['--url', other, ...args]);
    t.equal(r.code, 2, `${args.join(' ')} with --url elsewhere: a usage error (${r.stderr.trim()})`);
    t.match(r.stderr, /not logged in to http:\/\/127\.0\.0\.1:\d+: the saved token is for/);
  }
  t.equal(reached, 0, 'the other host was sent nothing');
  t.equal((await mom(['queues', 'list'])).code, 0, 'and the session is still there');
  const down = await mom(['--url', 'http://127.0.0.1:9', 'cluster', 'status'], {});
  t.equal(down.code, 3, 'exit 3: the cluster could not be reached');
  t.match(down.stderr, /cannot reach http:\/\/127\.0\.0\.1:9/);
});
