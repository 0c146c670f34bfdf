// `mom`: the broker's command-line client (commander). Log in once; the token is kept in the user's
// config folder (session.json, mode 600). Every command prints a readable table or line, or with
// --json the API's own JSON for scripts. Exit status: 0 done, 1 refused by the server (its words
// printed), 2 usage or setup, 3 the cluster could not be reached.
//
//   mom login --url http://127.0.0.1:8080 --username alice      (password from the terminal or --password-stdin)
//   mom queues create orders --visibility-timeout 60
//   mom send orders 'order 1' --attr priority=high
//   mom receive orders --max 10 --wait 20 --ack
//   mom receive orders --follow --ack                            (until Ctrl-C)
//   mom cluster status
import { Command, InvalidArgumentError, Option } from 'commander';
import { createInterface } from 'node:readline';
import { Api, CliError, Interrupted, loadSession, saveSession, type Session } from './client.js';

interface Global {
  url?: string;
  json?: boolean;
}

const out = (s: string): void => void process.stdout.write(s + '\n');

function int(name: string, min: number, max: number) {
  return (v: string): number => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < min || n > max) throw new InvalidArgumentError(`${name} must be an integer from ${min} to ${max}`);
    return n;
  };
}

function attrs(v: string, prev: Record<string, string> = {}): Record<string, string> {
  const eq = v.indexOf('=');
  if (eq <= 0) throw new InvalidArgumentError(`attributes are key=value, got '${v}'`);
  return { ...prev, [v.slice(0, eq)]: v.slice(eq + 1) };
}

/** A queue, or a topic's subscription written topic/subscription: the API path of its messages. */
function channelPath(target: string): string {
  const parts = target.split('/');
  if (parts.length === 1 && parts[0] !== '') return `/v1/queues/${encodeURIComponent(parts[0]!)}`;
  if (parts.length === 2 && parts[0] !== '' && parts[1] !== '') return `/v1/topics/${encodeURIComponent(parts[0]!)}/subscriptions/${encodeURIComponent(parts[1]!)}`;
  throw new CliError(`'${target}' is neither a queue nor topic/subscription`, 2);
}

/** Fixed-width columns, headers first. */
export function table(headers: string[], rows: (string | number)[][]): string {
  const cells = [headers, ...rows.map((r) => r.map(String))];
  const widths = headers.map((_, i) => Math.max(...cells.map((r) => (r[i] ?? '').length)));
  return cells.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!))).join('  ')).join('\n');
}

async function readPassword(fromStdin: boolean): Promise<string> {
  if (fromStdin || !process.stdin.isTTY) {
    let text = '';
    for await (const chunk of process.stdin) text += String(chunk);
    return text.replace(/\r?\n$/, '');
  }
  // Typed at the terminal, not echoed; the prompt on stderr, so that --json output stays JSON.
  process.stderr.write('password: ');
  const rl = createInterface({ input: process.stdin, output: undefined, terminal: true });
  const answer = await new Promise<string>((resolve) => rl.question('', resolve));
  rl.close();
  process.stderr.write('\n');
  return answer;
}

/** MOM_URL, unless unset or empty. */
function envUrl(): string | undefined {
  const url = process.env.MOM_URL;
  return url === undefined || url === '' ? undefined : url;
}

function session(g: Global): { api: Api; s: Session } {
  const s = loadSession();
  const token = process.env.MOM_TOKEN;
  if (token !== undefined && token !== '') {
    const url = g.url ?? envUrl() ?? s?.url;
    if (url === undefined) throw new CliError('no cluster URL: --url, MOM_URL, or mom login', 2);
    return { api: new Api(url, token), s: { url, username: '', token, expiresAt: Number.MAX_SAFE_INTEGER } };
  }
  if (s === null || s.token === undefined) throw new CliError('not logged in: run mom login --url URL --username NAME', 2);
  if (s.expiresAt <= Date.now()) throw new CliError(`the session of ${s.username} expired: run mom login again`, 2);
  return { api: new Api(sessionUrl(g, s), s.token), s };
}

/**
 * Where the saved token may go: the cluster it was got from. A `--url` elsewhere is refused, not sent
 * the token (a script passing on a URL it was given would hand the user's token to that host), as
 * `gh` and `docker` keep a credential per host. Another node of the same cluster behind its own
 * address takes `mom login --url` there, or MOM_TOKEN.
 */
function sessionUrl(g: Global, s: Session): string {
  if (g.url === undefined || origin(g.url) === origin(s.url)) return g.url ?? s.url;
  throw new CliError(`not logged in to ${origin(g.url)}: the saved token is for ${origin(s.url)}; run mom login --url ${g.url}, or set MOM_TOKEN`, 2);
}

/** A URL's origin (scheme, host and port), or the text itself when it is no URL. */
function origin(url: string): string {
  try {
    return new URL(url).origin;
  } catch {
    return url;
  }
}

function anonymous(g: Global): Api {
  const url = g.url ?? envUrl() ?? loadSession()?.url;
  if (url === undefined) throw new CliError('no cluster URL: --url or MOM_URL', 2);
  return new Api(url, null);
}

function print(g: Global, value: unknown, text: () => string): void {
  out(g.json === true ? JSON.stringify(value, null, 2) : text());
}

interface Message {
  messageId: string;
  sequence: number;
  body: string;
  attributes: Record<string, string>;
  receiptHandle: string;
  deliveryCount: number;
}

export function program(): Command {
  const p = new Command('mom')
    .description('command-line client of a mom cluster')
    .option('--url <url>', 'a node or the load balancer, e.g. http://127.0.0.1:8080 (default: the one of mom login, or MOM_URL)')
    .option('--json', 'print the API’s JSON instead of tables')
    .showHelpAfterError()
    // before the subcommands, which inherit it: errors come back to main() instead of exiting
    .exitOverride()
    .configureOutput({ outputError: (s, write) => write(s) });
  const g = (): Global => p.opts<Global>();

  p.command('register')
    .description('create a user')
    .requiredOption('--username <name>')
    .option('--password-stdin', 'read the password from standard input')
    .action(async (o: { username: string; passwordStdin?: boolean }) => {
      const password = await readPassword(o.passwordStdin === true);
      const r = await anonymous(g()).call('POST', '/v1/auth/register', { username: o.username, password });
      print(g(), r, () => `user ${o.username} created`);
    });

  p.command('login')
    .description('log in and keep the token in the config folder')
    .requiredOption('--username <name>')
    .option('--password-stdin', 'read the password from standard input')
    .action(async (o: { username: string; passwordStdin?: boolean }) => {
      const api = anonymous(g());
      const password = await readPassword(o.passwordStdin === true);
      const r = (await api.call('POST', '/v1/auth/login', { username: o.username, password })) as { accessToken: string; expiresIn: number };
      const file = saveSession({ url: api.url, username: o.username, token: r.accessToken, expiresAt: Date.now() + r.expiresIn * 1000 });
      print(g(), { username: o.username, url: api.url, expiresIn: r.expiresIn }, () => `logged in to ${api.url} as ${o.username} for ${Math.round(r.expiresIn / 60)} minutes (token in ${file})`);
    });

  p.command('logout')
    .description('revoke the token on the cluster (the API\'s logout: every token of the user), then forget it')
    .option('--local', 'only forget the token here; it stays valid until it expires')
    .action(async (o: { local?: boolean }) => {
      const s = loadSession();
      if (s === null || s.token === undefined) return print(g(), {}, () => 'not logged in');
      // Forgotten whatever the cluster says: a token the user logged out of is not used again here.
      // Before, logout only forgot it, and a copy of it worked for up to an hour (review of 2026-12-07).
      // A --url elsewhere is a usage error that changes nothing (sessionUrl).
      const url = o.local === true ? s.url : sessionUrl(g(), s);
      saveSession(null);
      if (o.local === true || s.expiresAt <= Date.now()) return print(g(), { revoked: false }, () => 'logged out here');
      try {
        await new Api(url, s.token).call('POST', '/v1/auth/logout');
      } catch (err) {
        // 401: revoked already (another logout, a password change), or the user is gone.
        if (!(err instanceof CliError) || err.status !== 401) {
          throw new CliError(`logged out here, but the token was not revoked and stays valid until ${new Date(s.expiresAt).toISOString()}: ${(err as Error).message}`, err instanceof CliError ? err.exitCode : 3);
        }
      }
      print(g(), { revoked: true }, () => `logged out: every token of ${s.username} is revoked`);
    });

  for (const kind of ['queues', 'topics'] as const) {
    const one = kind === 'queues' ? 'queue' : 'topic';
    const c = p.command(kind).description(`${kind}: create, list, show, delete, grant`);
    const create = c
      .command('create <name>')
      .description(`create a ${one}`)
      .action(async (name: string, o: Record<string, unknown>) => {
        const body: Record<string, unknown> = { name };
        if (kind === 'queues') {
          if (o.visibilityTimeout !== undefined) body.visibilityTimeoutSeconds = o.visibilityTimeout;
          if (o.maxDeliveries !== undefined) body.maxDeliveries = o.maxDeliveries;
          if (o.deadLetterQueue !== undefined) body.deadLetterQueue = o.deadLetterQueue;
          if (o.delay !== undefined) body.delaySeconds = o.delay;
          if (o.retention !== undefined) body.retentionSeconds = o.retention;
        } else if (o.subscribeAnyone === true) {
          body.subscribe = 'anyone';
        }
        const r = await session(g()).api.call('POST', `/v1/${kind}`, body);
        print(g(), r, () => `${one} ${name} created`);
      });
    if (kind === 'queues') {
      create
        .option('--visibility-timeout <s>', 'lease of a received message, seconds', int('--visibility-timeout', 0, 43_200))
        .option('--max-deliveries <n>', 'deliveries before a message goes to the dead-letter queue', int('--max-deliveries', 1, 1000))
        .option('--dead-letter-queue <queue>', 'where messages go after --max-deliveries')
        .option('--delay <s>', 'delay of every message, seconds', int('--delay', 0, 900))
        .option('--retention <s>', 'how long a message is kept, seconds', int('--retention', 60, 1_209_600));
    } else {
      create.option('--subscribe-anyone', 'any user may subscribe');
    }
    c.command('list')
      .description(`the ${kind} you own or have a grant on`)
      .action(async () => {
        const { api } = session(g());
        const items: { name: string; owner: string }[] = [];
        let cursor: string | null = null;
        do {
          const page = (await api.call('GET', `/v1/${kind}?limit=100${cursor === null ? '' : `&cursor=${encodeURIComponent(cursor)}`}`)) as { items: { name: string; owner: string }[]; nextCursor: string | null };
          items.push(...page.items);
          cursor = page.nextCursor;
        } while (cursor !== null);
        print(g(), items, () => (items.length === 0 ? `no ${kind}` : table(['NAME', 'OWNER'], items.map((i) => [i.name, i.owner]))));
      });
    c.command('show <name>')
      .description(`a ${one} and its stats`)
      .action(async (name: string) => {
        const r = (await session(g()).api.call('GET', `/v1/${kind}/${encodeURIComponent(name)}`)) as Record<string, unknown> & { stats: Record<string, number> };
        print(g(), r, () =>
          table(
            ['FIELD', 'VALUE'],
            [...Object.entries(r).filter(([k]) => k !== 'stats'), ...Object.entries(r.stats).map(([k, v]) => [`stats.${k}`, v])].map(([k, v]) => [String(k), v === null ? '-' : String(v)]),
          ),
        );
      });
    c.command('delete <name>')
      .description(`delete a ${one} (its owner only)`)
      .action(async (name: string) => {
        await session(g()).api.call('DELETE', `/v1/${kind}/${encodeURIComponent(name)}`);
        print(g(), {}, () => `${one} ${name} deleted`);
      });
    c.command('grant <name> <username>')
      .description(`give a user rights on a ${one} (its owner only)`)
      .requiredOption('--actions <list>', kind === 'queues' ? 'comma-separated: send, receive' : 'comma-separated: publish, subscribe')
      .action(async (name: string, username: string, o: { actions: string }) => {
        const actions = o.actions.split(',').map((a) => a.trim()).filter((a) => a !== '');
        const r = await session(g()).api.call('PUT', `/v1/${kind}/${encodeURIComponent(name)}/grants/${encodeURIComponent(username)}`, { actions });
        print(g(), r, () => `${username} may ${actions.join(', ')} on ${one} ${name}`);
      });
  }

  p.command('subscribe <topic> <subscription>')
    .description('create a subscription to a topic')
    .action(async (topic: string, name: string) => {
      const r = await session(g()).api.call('POST', `/v1/topics/${encodeURIComponent(topic)}/subscriptions`, { name });
      print(g(), r, () => `subscription ${topic}/${name} created`);
    });

  const sendLike = (cmd: Command, path: (target: string) => string): Command =>
    cmd
      .option('--attr <key=value>', 'an attribute (repeatable)', attrs)
      .option('--dedup-id <id>', 'deduplication id: the same id within 5 minutes is stored once')
      .option('--idempotency-key <key>', 'the key of an earlier attempt whose outcome was unknown: stored once (24 hours)')
      .action(async (target: string, body: string, o: { attr?: Record<string, string>; dedupId?: string; delay?: number; idempotencyKey?: string }) => {
        const msg: Record<string, unknown> = { body, attributes: o.attr ?? {} };
        if (o.dedupId !== undefined) msg.deduplicationId = o.dedupId;
        if (o.delay !== undefined) msg.delaySeconds = o.delay;
        const r = (await session(g()).api.call('POST', path(target), msg, o.idempotencyKey === undefined ? {} : { idempotencyKey: o.idempotencyKey })) as { messageId: string; sequence: number };
        print(g(), r, () => `${r.messageId} (sequence ${r.sequence})`);
      });
  sendLike(p.command('send <queue> <body>').description('send a message to a queue').option('--delay <s>', 'deliver after this many seconds', int('--delay', 0, 900)), (q) => `/v1/queues/${encodeURIComponent(q)}/messages`);
  sendLike(p.command('publish <topic> <body>').description('publish a message to a topic'), (tp) => `/v1/topics/${encodeURIComponent(tp)}/messages`);

  p.command('receive <target>')
    .description('receive from a queue, or a subscription written topic/subscription')
    .addOption(new Option('--max <n>', 'messages per receive').argParser(int('--max', 1, 100)).default(1))
    .addOption(new Option('--wait <s>', 'long poll: wait up to this long for a message').argParser(int('--wait', 0, 20)).default(0))
    .option('--visibility-timeout <s>', 'lease, seconds (default: the queue’s)', int('--visibility-timeout', 0, 43_200))
    .option('--ack', 'acknowledge what was received (after printing it)')
    .option('--follow', 'keep receiving (20 s long polls) until interrupted; one line per message')
    .action(async (target: string, o: { max: number; wait: number; visibilityTimeout?: number; ack?: boolean; follow?: boolean }) => {
      const { api } = session(g());
      const path = channelPath(target);
      let stopping = false;
      // Ctrl-C ends a follow at once when it is waiting in a long poll; an ack under way completes.
      const waiting = new AbortController();
      if (o.follow === true) {
        const stop = (): void => {
          stopping = true;
          waiting.abort();
        };
        process.once('SIGINT', stop).once('SIGTERM', stop);
      }
      do {
        const req: Record<string, unknown> = { maxMessages: o.max, waitSeconds: o.follow === true ? 20 : o.wait };
        if (o.visibilityTimeout !== undefined) req.visibilityTimeoutSeconds = o.visibilityTimeout;
        let r: { messages: Message[] };
        try {
          r = (await api.call('POST', `${path}/receive`, req, { timeoutMs: 40_000, signal: waiting.signal })) as { messages: Message[] };
        } catch (err) {
          if (err instanceof Interrupted) break;
          throw err;
        }
        if (o.follow === true) {
          for (const m of r.messages) out(g().json === true ? JSON.stringify(m) : `${m.sequence}\t${m.messageId}\t${m.body}`);
        } else {
          print(g(), r, () => (r.messages.length === 0 ? 'no message' : table(['SEQ', 'ID', 'DELIVERIES', 'BODY', 'RECEIPT'], r.messages.map((m) => [m.sequence, m.messageId, m.deliveryCount, m.body, m.receiptHandle]))));
        }
        if (o.ack === true && r.messages.length > 0) {
          const a = (await api.call('POST', `${path}/ack`, { receiptHandles: r.messages.map((m) => m.receiptHandle) })) as { failed: { receiptHandle: string; code: string }[] };
          if (a.failed.length > 0) throw new CliError(`${a.failed.length} of ${r.messages.length} could not be acknowledged (${a.failed[0]!.code}): their leases ended; they will be delivered again`, 1);
        }
      } while (o.follow === true && !stopping);
    });

  p.command('ack <target> <receipts...>')
    .description('acknowledge received messages by their receipt handles')
    .action(async (target: string, receipts: string[]) => {
      const r = (await session(g()).api.call('POST', `${channelPath(target)}/ack`, { receiptHandles: receipts })) as { acked: string[]; failed: { receiptHandle: string; code: string }[] };
      print(g(), r, () => `${r.acked.length} acknowledged${r.failed.length > 0 ? `, ${r.failed.length} not (${r.failed.map((f) => f.code).join(', ')})` : ''}`);
      if (r.failed.length > 0) process.exitCode = 1;
    });

  p.command('cluster')
    .description('the cluster')
    .command('status')
    .description('nodes, and per partition its leader, term, indexes and each replica’s lag')
    .action(async () => {
      const r = (await anonymous(g()).call('GET', '/v1/cluster')) as {
        node: string;
        nodes: { id: string; url: string }[];
        partitions: { partition: number; leader: string | null; term: number; commitIndex: number; appliedIndex: number; match: Record<string, number>; format?: number; halted?: string | null }[];
      };
      print(g(), r, () => {
        const ids = r.nodes.map((n) => n.id);
        const rows = r.partitions.map((pt) => [pt.partition, pt.leader ?? 'NONE', pt.term, pt.commitIndex, pt.appliedIndex, pt.format ?? 1, ...ids.map((id) => (pt.match[id] === undefined ? '-' : String(Math.max(0, pt.commitIndex - pt.match[id]!))))]);
        const leaderless = r.partitions.filter((pt) => pt.leader === null).length;
        // An older node answers without these fields.
        const halted = r.partitions.filter((pt) => typeof pt.halted === 'string');
        return [
          `answered by ${r.node}; nodes: ${r.nodes.map((n) => `${n.id} ${n.url}`).join(', ')}`,
          table(['PARTITION', 'LEADER', 'TERM', 'COMMIT', 'APPLIED', 'FORMAT', ...ids.map((id) => `LAG ${id}`)], rows),
          leaderless === 0 ? 'every partition has a leader' : `${leaderless} partition(s) without a leader`,
          ...halted.map((pt) => `partition ${pt.partition} HALTED on ${r.node}: ${pt.halted}`),
        ].join('\n');
      });
    });
  return p;
}

export async function main(argv: string[]): Promise<number> {
  try {
    await program().parseAsync(argv);
    return typeof process.exitCode === 'number' ? process.exitCode : 0;
  } catch (err) {
    if (err instanceof CliError) {
      process.stderr.write(`mom: ${err.message}\n`);
      return err.exitCode;
    }
    const code = (err as { code?: string }).code;
    if (typeof code === 'string' && code.startsWith('commander.')) {
      // commander printed it already; help and version are not errors.
      return code === 'commander.helpDisplayed' || code === 'commander.version' || code === 'commander.help' ? 0 : 2;
    }
    process.stderr.write(`mom: ${(err as Error).message}\n`);
    return 1;
  }
}

process.exitCode = await main(process.argv);
