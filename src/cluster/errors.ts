/**
 * Why a request could not be served now, as a client is told it: a stable text per reason, with no
 * node id, partition or error code in it (those go to the node's log, with the request id).
 */
export const UNAVAILABLE = {
  catching_up: 'this node is installing a copy of the data; retry shortly',
  leader_moving: 'the data is changing leader; retry shortly',
  cut_off: 'this node cannot reach the other nodes; retry on another node',
  no_leader: 'no leader of the data could be reached; retry shortly',
  write_unknown: "the write's outcome is unknown: it may still be applied; a retry is safe only with the same Idempotency-Key",
  read_unknown: 'the read could not be answered; retry',
  upgrading: 'the cluster is being upgraded and cannot do this yet; retry once every node runs the new version',
  halted: 'this node cannot serve this data until it is upgraded or rebuilt; retry on another node',
} as const;
export type UnavailableReason = keyof typeof UNAVAILABLE;

/**
 * The request could not be served now: no leader could be reached for the partition, the leader is
 * overloaded, or the write's outcome is unknown. `status` is 503 (retry after `retryAfterSeconds`) or
 * 504 (the wait for the write ran out). `outcomeUnknown` says whether the write may still apply: a
 * client retries with the same Idempotency-Key, which makes the retry safe either way. The message
 * says what happened inside the cluster, for the log; a client is told `publicDetail`.
 */
export class UnavailableError extends Error {
  override name = 'UnavailableError';
  constructor(
    readonly reason: UnavailableReason,
    message: string,
    readonly status: 503 | 504 = 503,
    readonly outcomeUnknown = false,
    readonly retryAfterSeconds = 1,
  ) {
    super(message);
  }

  get publicDetail(): string {
    return UNAVAILABLE[this.reason];
  }
}

/** How an error reads in a log line or a reason: its code first when it has one (ECONNREFUSED: ...). */
export function errorText(err: unknown): string {
  if (!(err instanceof Error)) return String(err);
  const code = (err as { code?: unknown }).code;
  return typeof code === 'string' ? `${code}: ${err.message}` : err.message;
}
