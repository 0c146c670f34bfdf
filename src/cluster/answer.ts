// What a leader answers a command or query forwarded to it, and how the router reads the answer of a
// peer (router.ts, forward-batch.ts).
import type { NodeId } from '../raft/index.js';
import type { Result } from '../store/broker/index.js';
import type { CarriedCommand } from './wire.js';

/** What a leader answers a forwarded command or query; the router's own calls answer the same. */
export type Answer =
  | { readonly kind: 'ok'; readonly result: Result }
  /** Nothing was done here: this node does not lead; `leader` is its hint. */
  | { readonly kind: 'not_leader'; readonly leader: NodeId | null }
  /** Nothing was applied and nothing will be: safe to retry anywhere. */
  | { readonly kind: 'retry'; readonly detail: string }
  /** The write may or may not apply (timedOut: the wait for it ran out). */
  | { readonly kind: 'unknown'; readonly detail: string; readonly timedOut: boolean };

/**
 * A leader's answer to a command carried with `track` (wire.ts's CarriedCommand): it appended the
 * command's entry at (index, term) and leaves the answer to the node that forwarded it, which waits
 * for its own replica to apply that entry (PartitionReplica.awaitEntry).
 */
export interface Proposed {
  readonly kind: 'proposed';
  readonly index: number;
  readonly term: number;
}

/** What a carried command is answered: an Answer, or where it was proposed when it asked so. */
export type CarriedOutcome = Answer | Proposed;

/** The inter-node calls the router needs (HttpTransport's). */
export interface PeerCaller {
  call(peer: NodeId, path: string, body: unknown, opts: { timeoutMs: number; requestId?: string }): Promise<{ status: number; body: unknown }>;
  /**
   * Sends a forwarded command in the Raft stream to `peer` and resolves with its answer, or returns
   * null when the peer does not read commands there (HttpTransport.carry). With `track`, a peer that
   * can may answer where it proposed the command instead of its result (Proposed).
   */
  carry?(peer: NodeId, command: Omit<CarriedCommand, 'id' | 'track'>, timeoutMs: number, track?: boolean): Promise<CarriedOutcome> | null;
  /** Whether `peer` said in its current Raft stream's answer that it takes system commands as commands (SYSTEM_HEADER). */
  takesSystemCommands?(peer: NodeId): boolean;
}

/** An answer carried in a Raft stream's frame (HttpTransport.answered): decodeAnswer's, or a Proposed. */
export function decodeCarried(body: unknown): CarriedOutcome {
  const b = (body ?? {}) as { kind?: unknown; index?: unknown; term?: unknown };
  if (b.kind !== 'proposed') return decodeAnswer(200, body);
  if (isPositiveInteger(b.index) && isPositiveInteger(b.term)) return { kind: 'proposed', index: b.index, term: b.term };
  return { kind: 'unknown', detail: 'the peer answered where it proposed the write, unreadably', timedOut: false };
}

const isPositiveInteger = (v: unknown): v is number => Number.isSafeInteger(v) && (v as number) > 0;

/**
 * undici's codes for a connection that never opened: what was to go over it was certainly not sent.
 * EHOSTUNREACH and ENETUNREACH can also end an established connection, but Linux reports an ICMP
 * unreachable on one only as a soft error, made the socket's error when retransmissions give up
 * (tcp_retries2, about 15 minutes), long after a frame's or a forward's own timeout ended the wait.
 */
export const NOT_SENT_CODES: ReadonlySet<string> = new Set(['ECONNREFUSED', 'UND_ERR_CONNECT_TIMEOUT', 'ENOTFOUND', 'EHOSTUNREACH', 'ENETUNREACH', 'EAI_AGAIN']);

/** A peer's HTTP answer as an Answer; anything unexpected counts as a peer that could not serve. */
export function decodeAnswer(status: number, body: unknown): Answer {
  const b = (body ?? {}) as { kind?: unknown; result?: unknown; leader?: unknown; detail?: unknown; timedOut?: unknown };
  if (status === 200 && b.kind === 'ok' && typeof b.result === 'object' && b.result !== null) return { kind: 'ok', result: b.result as Result };
  if (status === 200 && b.kind === 'not_leader') return { kind: 'not_leader', leader: typeof b.leader === 'string' ? (b.leader as NodeId) : null };
  if (status === 200 && b.kind === 'unknown') return { kind: 'unknown', detail: String(b.detail), timedOut: b.timedOut === true };
  if (status === 200 && b.kind === 'retry') return { kind: 'retry', detail: String(b.detail) };
  return { kind: 'unknown', detail: `the peer answered ${status}`, timedOut: false };
}
