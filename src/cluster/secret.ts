// The cluster secret every inter-node request carries as `authorization: Bearer <secret>`.
import { createHash, createHmac, timingSafeEqual } from 'node:crypto';

/**
 * Constant-time comparison. Both sides are hashed first: timingSafeEqual wants equal lengths, and
 * comparing digests, which always have the same length, leaks neither the secret's length nor how
 * much of a guess matched.
 */
export function secretsEqual(a: string, b: string): boolean {
  return timingSafeEqual(digest(a), digest(b));
}

/**
 * secretsEqual against one secret whose digest is computed once: every inter-node request is checked
 * (the second hash was 0.5% of a node's busy time under single sends).
 */
export function secretMatcher(secret: string): (candidate: string) => boolean {
  const expected = digest(secret);
  return (candidate) => timingSafeEqual(digest(candidate), expected);
}

function digest(s: string): Buffer {
  return createHash('sha256').update(s, 'utf8').digest();
}

/**
 * 64 bits of an HMAC under `secret`, for `purpose`: tells two secrets apart (a data folder's cluster,
 * a peer's key for access tokens), and tells nothing of either.
 */
export function secretTag(secret: string, purpose: string): string {
  return createHmac('sha256', secret).update(purpose).digest('hex').slice(0, 16);
}

export function bearer(secret: string): string {
  return `Bearer ${secret}`;
}

/** The token of an `authorization: Bearer <token>` header, or null when there is none. */
export function bearerToken(header: string | undefined): string | null {
  if (header === undefined) return null;
  const match = /^Bearer +(\S+) *$/i.exec(header);
  return match?.[1] ?? null;
}

/**
 * Visible ASCII only, at least one character: a secret with a space or a control character could not
 * travel in the header, and an empty one would admit anybody.
 */
export function assertUsableSecret(secret: string): void {
  if (!/^[\x21-\x7e]+$/.test(secret)) {
    throw new TypeError('the cluster secret must be one or more visible ASCII characters (no spaces)');
  }
}
