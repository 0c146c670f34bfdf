/**
 * The request could not be served now: no leader could be reached for the partition, the leader is
 * overloaded, or the write's outcome is unknown. `status` is 503 (retry after `retryAfterSeconds`) or
 * 504 (the wait for the write ran out). `outcomeUnknown` says whether the write may still apply: a
 * client retries with the same Idempotency-Key, which makes the retry safe either way.
 */
export class UnavailableError extends Error {
  override name = 'UnavailableError';
  constructor(
    message: string,
    readonly status: 503 | 504 = 503,
    readonly outcomeUnknown = false,
    readonly retryAfterSeconds = 1,
  ) {
    super(message);
  }
}
