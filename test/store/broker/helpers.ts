// Helpers for the state machine's tests: a store in a temporary folder and a way to apply commands
// as the log would deliver them.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BOUNDED_CLOCK_STEP, BrokerStateMachine, FORMAT, MAX_CLOCK_STEP_MS, encodeEnvelope, type ApplyEntry, type Applied, type BodySource, type Command, type Envelope, type Result } from '../../../src/store/broker/index.js';

/**
 * A log's entries as the source rows of format 4 read their bodies from (bodies.ts), as a node's
 * state reads them from its write-ahead log. The log may grow after this is made.
 */
export function bodiesOf(log: readonly ApplyEntry[]): BodySource {
  return {
    entry: (i) => {
      const e = log[i - (log[0]?.index ?? 1)];
      return e?.index === i ? e.data : (log.find((x) => x.index === i)?.data ?? null);
    },
  };
}

export class TestStore {
  index = 0;
  time = 1_700_000_000_000;
  private constructor(
    readonly sm: BrokerStateMachine,
    readonly dir: string,
  ) {}

  /**
   * The log's entries as applied, by index: where rows of format 4 read their bodies (bodies.ts), as
   * a node's state machine reads them from its write-ahead log. A test deletes one to play a log that
   * lost it.
   */
  readonly entries = new Map<number, Uint8Array>();

  /**
   * Opens a store; a new one is raised to `format` (this build's, unless given) by its first entry.
   * `readable` is the newest format it reads: this build's, or one it reads but does not raise yet.
   * `time` is the stamp its first entries carry (`time` below).
   */
  static async open(partition = 0, dir = mkdtempSync(join(tmpdir(), 'mom-store-')), format = FORMAT, readable = Math.max(format, FORMAT), time?: number): Promise<TestStore> {
    const sm = await BrokerStateMachine.open(join(dir, 'state.db'), partition, { readable });
    const s = new TestStore(sm, dir);
    if (time !== undefined) s.time = time;
    sm.attachBodies({ entry: (i) => s.entries.get(i) ?? null });
    // Whatever a test applies, through apply() or straight to the state machine, is in the log, as
    // every entry a node applies is in its own; an entry the state skips (applied already) does not
    // replace what the log holds at its index, nor does one that a test removed to play a lost entry
    // come back by being applied again at an index already applied.
    const apply = sm.apply.bind(sm);
    sm.apply = (entries, opts) => {
      const applied = sm.applied().index;
      for (const e of entries) if (e.index > applied && !s.entries.has(e.index)) s.entries.set(e.index, e.data);
      return apply(entries, opts);
    };
    s.index = sm.applied().index;
    if (sm.format() < format) s.must(null, { type: 'format.raise', format });
    return s;
  }

  /** A log entry's bytes for `env`, encoded as a leader of this partition would encode them. */
  encode(env: Envelope): Uint8Array {
    return encodeEnvelope(env, this.sm.format());
  }

  /** Applies one command as the next log entry, at the current time. */
  apply(actor: string | null, command: Command, idempotencyKey?: string): Applied {
    this.index++;
    const env = idempotencyKey === undefined ? { time: this.time, actor, command } : { time: this.time, actor, command, idempotencyKey };
    const data = this.encode(env);
    this.entries.set(this.index, data);
    const [a] = this.sm.apply([{ index: this.index, term: 1, kind: 0, data }]);
    return a!;
  }

  run(actor: string | null, command: Command, idempotencyKey?: string): Result {
    return this.apply(actor, command, idempotencyKey).result;
  }

  /** Applies and returns the value, failing loudly on a refusal. */
  // eslint-disable-next-line @typescript-eslint/no-explicit-any -- tests read results by shape
  must<T = any>(actor: string | null, command: Command): T {
    const r = this.run(actor, command);
    if (!r.ok) throw new Error(`${command.type} refused: ${r.code} ${r.detail}`);
    return r.value as T;
  }

  /**
   * Time passes. From format 8 one entry moves the partition's clock at most MAX_CLOCK_STEP_MS, and a
   * leader keeps an idle partition's clock up to date (src/partition/housekeeping.ts, keepClocks): so do these ticks, entries
   * that change nothing but the clock (a user's sweep, refused), one step each.
   */
  advance(seconds: number): void {
    this.time += seconds * 1000;
    if (this.sm.format() < BOUNDED_CLOCK_STEP) return;
    while (this.sm.clock() < this.time - MAX_CLOCK_STEP_MS / 2) this.apply('clock-tick', { type: 'sweep' });
  }

  async close(remove = true): Promise<void> {
    await this.sm.close();
    if (remove) rmSync(this.dir, { recursive: true, force: true });
  }
}

export const queue = (name: string, extra: Partial<Extract<Command, { type: 'queue.create' }>> = {}): Command => ({
  type: 'queue.create',
  name,
  visibilityTimeoutSeconds: 30,
  maxDeliveries: null,
  deadLetterQueue: null,
  delaySeconds: 0,
  retentionSeconds: 345600,
  ...extra,
});

export const send = (name: string, ...bodies: string[]): Command => ({
  type: 'queue.send',
  name,
  messages: bodies.map((body) => ({ body, attributes: {} })),
});

export const receive = (name: string, maxMessages = 10, visibilityTimeoutSeconds: number | null = null): Command => ({
  type: 'receive',
  channel: { queue: name },
  maxMessages,
  visibilityTimeoutSeconds,
});
