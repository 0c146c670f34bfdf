// How a forwarded client command reaches its partition's leader. It rides in the Raft stream to the
// leader when the leader said it reads commands there (HttpTransport.carry: no HTTP request of its
// own). Otherwise (an older leader during a rolling upgrade, or a stream not yet open) what a node
// forwards to one leader for one partition within one turn of its event loop (the requests that
// arrived together) goes in one POST to /internal/commands, instead of one request per command.
// Batches are per partition because the leader answers a batch when all of its commands are
// settled: commands of one partition share one commit pipeline anyway, while a slow partition must
// not hold up the others. The leader proposes them all at once and answers one Answer per command,
// in order. A leader that does not know the batch route (older still) answers 404, and the batch is
// sent again one command per request.
import type { NodeId } from '../raft/index.js';
import { COMMAND_PATH, COMMANDS_PATH } from './internal-routes.js';
import { MAX_FORWARDED_BATCH, type Forwarded } from './internal-schemas.js';
import { NOT_SENT_CODES, decodeAnswer, type Answer, type CarriedOutcome, type PeerCaller } from './answer.js';

interface Pending {
  readonly body: Forwarded;
  readonly bytes: number;
  readonly resolve: (a: Answer) => void;
}

/** Serialized bytes of a batch at most (the leader's limit is 64 MiB); a batch that would pass it leaves at once. */
const MAX_BATCH_BYTES = 8 * 1024 * 1024;


export class ForwardBatcher {
  /** Batches being filled, by leader and partition. */
  private readonly open = new Map<string, { items: Pending[]; bytes: number }>();
  /** Leaders that answered 404 to the batch route: commands go to them one by one. */
  private readonly single = new Set<NodeId>();

  constructor(
    private readonly peers: PeerCaller,
    private readonly timeoutMs: number,
  ) {}

  /**
   * Sends `body` to `leader` with the others of this turn; resolves with its Answer. With `track`,
   * a leader reached through its Raft stream may answer where it appended the command (Proposed).
   */
  forward(leader: NodeId, body: Forwarded, track = false): Promise<CarriedOutcome> {
    const carried = this.peers.carry?.(leader, body as Forwarded & { command: Record<string, unknown> }, this.timeoutMs, track);
    if (carried !== null && carried !== undefined) return carried;
    if (this.single.has(leader)) return this.one(leader, body);
    // The size decides when a batch is full; JSON.stringify of the command is done once more by the
    // transport, which costs less than a request per command.
    const bytes = approximateBytes(body);
    const key = `${leader}/${body.partition}`;
    return new Promise<Answer>((resolve) => {
      let batch = this.open.get(key);
      if (batch !== undefined && (batch.bytes + bytes > MAX_BATCH_BYTES || batch.items.length >= MAX_FORWARDED_BATCH)) {
        this.open.delete(key);
        void this.send(leader, batch.items);
        batch = undefined;
      }
      if (batch === undefined) {
        const fresh = { items: [] as Pending[], bytes: 0 };
        batch = fresh;
        this.open.set(key, fresh);
        // After the current I/O callbacks: every request that arrived with this one joins it.
        setImmediate(() => {
          if (this.open.get(key) !== fresh) return;
          this.open.delete(key);
          void this.send(leader, fresh.items);
        });
      }
      batch.items.push({ body, bytes, resolve });
      batch.bytes += bytes;
    });
  }

  private async send(leader: NodeId, items: Pending[]): Promise<void> {
    if (items.length === 1) {
      items[0]!.resolve(await this.one(leader, items[0]!.body));
      return;
    }
    let res: { status: number; body: unknown };
    try {
      res = await this.peers.call(leader, COMMANDS_PATH, { items: items.map((i) => i.body) }, { timeoutMs: this.timeoutMs });
    } catch (err) {
      const answer = failed(leader, err);
      for (const i of items) i.resolve(answer);
      return;
    }
    if (res.status === 404) {
      // An older leader: one request per command from now on.
      this.single.add(leader);
      await Promise.all(items.map(async (i) => i.resolve(await this.one(leader, i.body))));
      return;
    }
    const answers = (res.body as { answers?: unknown } | null)?.answers;
    if (res.status !== 200 || !Array.isArray(answers) || answers.length !== items.length) {
      const answer = decodeAnswer(res.status === 200 ? 500 : res.status, res.body);
      for (const i of items) i.resolve(answer);
      return;
    }
    items.forEach((i, k) => i.resolve(decodeAnswer(200, answers[k])));
  }

  private async one(leader: NodeId, body: Forwarded): Promise<Answer> {
    try {
      const res = await this.peers.call(leader, COMMAND_PATH, body, { timeoutMs: this.timeoutMs, ...(body.requestId === undefined ? {} : { requestId: body.requestId }) });
      return decodeAnswer(res.status, res.body);
    } catch (err) {
      return failed(leader, err);
    }
  }
}

/** A forward that failed in the transport: certainly not sent (retry), or perhaps applied (unknown). */
function failed(leader: NodeId, err: unknown): Answer {
  const code = (err as { code?: string }).code ?? '';
  const detail = `${leader} could not be reached (${code || (err as Error).name})`;
  if (NOT_SENT_CODES.has(code)) return { kind: 'retry', detail };
  return { kind: 'unknown', detail, timedOut: (err as Error).name === 'TimeoutError' };
}

/**
 * An upper bound of a command's serialized size, to bound a batch: bodies, attributes and receipt
 * handles, each character counted as the 6 bytes of a JSON escape at worst.
 */
function approximateBytes(body: Forwarded): number {
  const c = body.command as { messages?: { body?: unknown; attributes?: Record<string, unknown> }[]; receiptHandles?: unknown[] };
  const str = (v: unknown): number => (typeof v === 'string' ? 6 * v.length + 2 : 16);
  let n = 512;
  for (const h of Array.isArray(c.receiptHandles) ? c.receiptHandles : []) n += str(h) + 1;
  for (const m of Array.isArray(c.messages) ? c.messages : []) {
    n += 128 + str(m.body);
    for (const [k, v] of Object.entries(m.attributes ?? {})) n += str(k) + str(v) + 2;
  }
  return n;
}
