// A network fault layer for the chaos runs, loaded into each node process by the test build only:
//
//   node --import tsx --import <abs>/test/chaos/net-faults.ts src/main.ts ...   with MOM_CHAOS_NET=<file>
//
// It imports src/cluster/transport.ts, the same ESM module instance that main.ts reaches later (tsx
// resolves both specifiers to the one file: URL, and Node keeps one instance per URL), and wraps
// methods of HttpTransport.prototype so that a request to a peer the control file lists as blocked
// fails as a refused connection would:
//   deliver        a batch of Raft messages (a frame of the Raft stream, or a POST), with the forwarded
//                  commands and answers it carries: counted as failed through the transport's own
//                  fail() with an ECONNREFUSED reason (carried commands answered as never sent,
//                  carried answers kept to go again), and answers false,
//                  so the peer's queue backs off as after a real refusal. Raft responses are messages
//                  of their own, sent the other way, so blocking A -> B alone is a true one-way cut
//                  for Raft traffic. A stream already open stays open; its next frames are refused.
//   call           rejects with an Error whose code is 'ECONNREFUSED' (what undici rejects with), which
//                  the router treats as "certainly not sent" (forwarded reads, and system commands
//                  to a peer of an older build; the others ride in deliver's frames or POSTs).
//   fetchSnapshot  rejects with SnapshotFetchError whose cause has code 'ECONNREFUSED' (what the
//                  transport itself makes of a refused connection).
// A cut is per request: one already in flight (or a snapshot download under way) finishes. What a
// node receives is never blocked; blocking outbound traffic on both sides makes a symmetric cut.
//
// The control file is JSON {"version": n, "blocked": ["n2", ...]}; it is re-read when its mtime
// changes (fs.watchFile, 50 ms stat polling, unref'd). After each change, and every second while the
// counters move (and at once when a snapshot fetch starts), the layer writes <control>.state.json (temp + rename): the version it applied, what
// it blocks, its pid, and per method how many requests passed through the wrapped methods and how
// many were blocked. The harness waits for the version (cut and heal take effect before they are
// recorded), and the counters prove the hook sits in the node's own transport: only requests that go
// through the instance main.ts uses can be counted. It also makes the node kill itself once the
// harness that started it is gone.
import { readFileSync, renameSync, unwatchFile, watchFile, writeFileSync } from 'node:fs';
import { SnapshotFetchError } from '../../src/cluster/snapshot-fetch.js';
import { HttpTransport } from '../../src/cluster/transport.js';

type Method = 'deliver' | 'call' | 'fetchSnapshot';
const METHODS: readonly Method[] = ['deliver', 'call', 'fetchSnapshot'];

export interface NetControl {
  version: number;
  /** Peers this node may not send to. */
  blocked: string[];
}

export interface NetState {
  pid: number;
  node: string;
  /** The control version applied (0: no control file yet). */
  version: number;
  blocked: string[];
  /** Per method: requests through the wrapped method, and those refused by the layer. */
  counters: Record<Method, { calls: number; blocked: number }>;
  /** The URL of the transport module that was patched. */
  module: string;
}

const HOOKED = Symbol.for('mom.chaos.net-faults');

function install(controlPath: string): void {
  const proto = HttpTransport.prototype as unknown as Record<string, unknown> & { [HOOKED]?: boolean };
  if (proto[HOOKED] === true) return;
  proto[HOOKED] = true;

  const argv = process.argv;
  const at = argv.indexOf('--node-id');
  const node = (at >= 0 ? argv[at + 1] : undefined) ?? 'this node';
  const statePath = `${controlPath}.state.json`;
  let blocked = new Set<string>();
  let version = 0;
  let dirty = true;
  const counters = Object.fromEntries(METHODS.map((m) => [m, { calls: 0, blocked: 0 }])) as NetState['counters'];

  const writeState = (): void => {
    const state: NetState = { pid: process.pid, node, version, blocked: [...blocked], counters, module: import.meta.resolve('../../src/cluster/transport.js') };
    const tmp = `${statePath}.${process.pid}.tmp`;
    try {
      writeFileSync(tmp, JSON.stringify(state));
      renameSync(tmp, statePath);
      dirty = false;
    } catch {
      // the run's folder is gone (teardown): nothing to report to
    }
  };

  const load = (): void => {
    let next: NetControl = { version: 0, blocked: [] };
    try {
      next = JSON.parse(readFileSync(controlPath, 'utf8')) as NetControl;
    } catch {
      // absent (nothing blocked) or, never with the harness's atomic writes, half written
      if (version !== 0) return;
    }
    blocked = new Set(next.blocked);
    version = next.version;
    writeState();
  };

  const refused = (peer: string): Error => Object.assign(new Error(`connect ECONNREFUSED (chaos net-faults: ${node} -> ${peer} cut)`), { code: 'ECONNREFUSED', syscall: 'connect' });
  const pass = (m: Method, peer: string): boolean => {
    counters[m].calls++;
    dirty = true;
    if (!blocked.has(peer)) return true;
    counters[m].blocked++;
    return false;
  };

  type Fn = (this: unknown, ...args: unknown[]) => Promise<unknown>;
  const orig = Object.fromEntries(METHODS.map((m) => [m, proto[m] as Fn])) as Record<Method, Fn>;
  for (const m of METHODS) if (typeof orig[m] !== 'function') throw new Error(`net-faults: HttpTransport.prototype.${m} is not a method; the transport changed`);
  if (typeof proto.carriedLost !== 'function') throw new Error('net-faults: HttpTransport.prototype.carriedLost is not a method; the transport changed');

  // deliver(peer: Peer, batch: BatchItem[], carried: Carried | null): Promise<boolean>; never rejects,
  // reports through fail(); forwarded commands it carries never left (retry), answers wait to go again.
  type Transport = { fail(peer: unknown, lost: readonly unknown[], reason: string): void; carriedLost(peer: unknown, carried: unknown, fate: 'retry', detail: string): void };
  proto.deliver = async function (this: Transport, peer: { id: string }, batch: unknown[], carried: unknown): Promise<unknown> {
    if (pass('deliver', peer.id)) return orig.deliver.call(this, peer, batch, carried);
    const reason = `ECONNREFUSED: ${refused(peer.id).message}`;
    this.fail(peer, batch, reason);
    if (carried !== null && carried !== undefined) this.carriedLost(peer, carried, 'retry', reason);
    return false;
  };
  proto.call = async function (this: unknown, peerId: string, ...rest: unknown[]): Promise<unknown> {
    if (pass('call', peerId)) return orig.call.call(this, peerId, ...rest);
    throw refused(peerId);
  };
  proto.fetchSnapshot = async function (this: unknown, peerId: string, partition: number, ref: string, ...rest: unknown[]): Promise<unknown> {
    if (pass('fetchSnapshot', peerId)) {
      // at once, not within the second: the harness aims a power cut at the install that follows
      writeState();
      return orig.fetchSnapshot.call(this, peerId, partition, ref, ...rest);
    }
    const cause = refused(peerId);
    throw new SnapshotFetchError(`fetching snapshot ${ref} of partition ${partition} from ${peerId} failed: ECONNREFUSED: ${cause.message}`, undefined, { cause });
  };

  load();
  watchFile(controlPath, { interval: 50, persistent: false }, load);
  // The harness kills its nodes on teardown, but not when it is itself killed (tap's timeout sends it
  // SIGALRM): a node whose parent is gone (re-parented) kills itself rather than linger.
  const parent = process.ppid;
  const timer = setInterval(() => {
    if (!alive(parent)) process.kill(process.pid, 'SIGKILL');
    if (dirty) writeState();
  }, 1_000);
  timer.unref();
  process.once('exit', () => unwatchFile(controlPath));
  // pino's shape at level info, so the harness's scan for error lines passes over it
  process.stdout.write(`${JSON.stringify({ level: 30, time: Date.now(), pid: process.pid, msg: `chaos net-faults: HttpTransport.prototype hooked (${METHODS.join(', ')}), control ${controlPath}` })}\n`);
}

/** Whether `parent` is still this process's parent (process.ppid is fixed at startup). */
function alive(parent: number): boolean {
  try {
    // Linux: the live parent pid is the 2nd field after the command name in /proc/self/stat.
    const stat = readFileSync('/proc/self/stat', 'utf8');
    return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]) === parent;
  } catch {
    try {
      process.kill(parent, 0);
      return true;
    } catch {
      return false;
    }
  }
}

const control = process.env.MOM_CHAOS_NET;
if (control !== undefined && control !== '') install(control);
