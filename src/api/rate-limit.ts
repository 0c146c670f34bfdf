// Fixed-window counters for the registration limit and failed logins, and the login guard. Each node
// counts what it saw and what the other nodes told it they saw (LimitEvent, shared through
// src/cluster/limit-gossip.ts), so a limit holds across the cluster: a client spreading its attempts
// over the nodes meets one budget, not three. The clock is injected; the tables forget keys whose
// window ended, so they cannot grow without bound.

import { isIPv4, isIPv6 } from 'node:net';

/**
 * The key a client address counts under in the address limits: an IPv4 address as it is (an
 * IPv4-mapped IPv6 one too), an IPv6 address by its /64 prefix. One subscriber, one host even, is
 * given a whole /64 and may pick any address in it: counted one by one, each of its 2^64 addresses
 * would have a budget of its own. Anything else (not an address) as it is.
 */
export function addressKey(ip: string): string {
  const bare = ip.split('%', 1)[0]!;
  if (!isIPv6(bare)) return ip;
  const groups = ipv6Groups(bare);
  const mapped = groups.slice(0, 5).every((g) => g === 0) && groups[5] === 0xffff;
  if (mapped) return [groups[6]! >> 8, groups[6]! & 0xff, groups[7]! >> 8, groups[7]! & 0xff].join('.');
  return `${groups
    .slice(0, 4)
    .map((g) => g.toString(16))
    .join(':')}::/64`;
}

/** The eight 16-bit groups of a valid IPv6 address (isIPv6), '::' and a trailing dotted IPv4 part expanded. */
function ipv6Groups(ip: string): number[] {
  const parse = (part: string): number[] => {
    if (part === '') return [];
    return part.split(':').flatMap((g) => {
      if (!isIPv4(g)) return [parseInt(g, 16)];
      const [a, b, c, d] = g.split('.').map(Number) as [number, number, number, number];
      return [(a << 8) | b, (c << 8) | d];
    });
  };
  const [head, tail] = ip.split('::') as [string, string | undefined];
  if (tail === undefined) return parse(head);
  const left = parse(head);
  const right = parse(tail);
  return [...left, ...new Array<number>(8 - left.length - right.length).fill(0), ...right];
}

export class RateLimiter {
  private readonly windows = new Map<string, { start: number; count: number }>();

  constructor(
    /** Requests allowed per key and window. */
    readonly limit: number,
    readonly windowMs: number,
    private readonly now: () => number,
    /** Keys tracked at most; past it, stale windows are dropped first, then the oldest. */
    private readonly maxKeys = 100_000,
  ) {}

  /** Counts one request for `key`; answers 0 when allowed, else the seconds until the window ends. */
  hit(key: string): number {
    const now = this.now();
    let w = this.windows.get(key);
    if (w === undefined || now - w.start >= this.windowMs) {
      if (w === undefined && this.windows.size >= this.maxKeys) this.prune(now);
      w = { start: now, count: 0 };
      this.windows.set(key, w);
    }
    w.count++;
    if (w.count <= this.limit) return 0;
    return Math.max(1, Math.ceil((w.start + this.windowMs - now) / 1000));
  }

  /** Takes back one count of `key` in its current window (an attempt counted up front that turned out fine). */
  refund(key: string): void {
    const w = this.windows.get(key);
    if (w !== undefined && w.count > 0) w.count--;
  }

  /** Seconds until `key` may be counted again without passing the limit: 0 when it may now. Counts nothing. */
  peek(key: string): number {
    const now = this.now();
    const w = this.windows.get(key);
    if (w === undefined || now - w.start >= this.windowMs || w.count < this.limit) return 0;
    return Math.max(1, Math.ceil((w.start + this.windowMs - now) / 1000));
  }

  private prune(now: number): void {
    for (const [k, w] of this.windows) if (now - w.start >= this.windowMs) this.windows.delete(k);
    // Still full: every key is in a live window. Drop the oldest half rather than grow.
    if (this.windows.size >= this.maxKeys) {
      let n = Math.floor(this.maxKeys / 2);
      for (const k of this.windows.keys()) {
        if (n-- <= 0) break;
        this.windows.delete(k);
      }
    }
  }
}

/**
 * Failed logins, counted per client address and per (username, address) pair; successful logins
 * count nowhere. A pair that failed `free` times waits 1 s before its next attempt, then twice as
 * long after each further failure, up to `maxBackoffMs`; a success, or `forgetMs` without a failure,
 * clears it. An address that failed `perAddress` times in a window waits for the window's end. So a
 * guesser slows down on its own address only: the user it targets still logs in from any other
 * address, where an attempt-count per username (before) let anyone keep a user out.
 */
export class LoginGuard {
  private readonly pairs = new Map<string, { failures: number; until: number; last: number }>();
  private readonly byAddress: RateLimiter;

  constructor(
    private readonly limits: { readonly free: number; readonly maxBackoffMs: number; readonly forgetMs: number; readonly perAddress: number; readonly windowMs: number },
    private readonly now: () => number,
    private readonly maxKeys = 100_000,
  ) {
    this.byAddress = new RateLimiter(limits.perAddress, limits.windowMs, now, maxKeys);
  }

  /** Seconds before `username` may try again from `address`: 0 when it may now. */
  wait(username: string, address: string): number {
    const now = this.now();
    const byAddress = this.byAddress.peek(address);
    const p = this.pair(username, address, now);
    const byPair = p === undefined || p.until <= now ? 0 : Math.max(1, Math.ceil((p.until - now) / 1000));
    return Math.max(byAddress, byPair);
  }

  /**
   * Starts an attempt: 0 when it may go on, counted as a failure until it succeeds (so attempts sent
   * at once count at once, not after their bcrypt), else the seconds to wait (nothing counted).
   */
  begin(username: string, address: string): number {
    const wait = this.wait(username, address);
    if (wait === 0) this.failed(username, address);
    return wait;
  }

  failed(username: string, address: string): void {
    const now = this.now();
    this.byAddress.hit(address);
    const key = pairKey(username, address);
    let p = this.pair(username, address, now);
    if (p === undefined) {
      if (this.pairs.size >= this.maxKeys) this.prune(now);
      p = { failures: 0, until: 0, last: now };
      this.pairs.set(key, p);
    }
    p.failures++;
    p.last = now;
    if (p.failures >= this.limits.free) p.until = now + Math.min(this.limits.maxBackoffMs, 1000 * 2 ** Math.min(30, p.failures - this.limits.free));
  }

  /** The attempt begun could not be decided (the user's partition was unreachable): it counts for nothing. */
  cancel(username: string, address: string): void {
    const p = this.pairs.get(pairKey(username, address));
    if (p !== undefined && p.failures > 0) {
      p.failures--;
      if (p.failures < this.limits.free) p.until = 0;
    }
    this.byAddress.refund(address);
  }

  /** Another node cleared the pair (a login succeeded there): its failures are forgotten here too. */
  cleared(username: string, address: string): void {
    this.pairs.delete(pairKey(username, address));
  }

  /** The attempt begun succeeded: its pair's failures are cleared, and the address's count gives it back. */
  succeeded(username: string, address: string): void {
    this.pairs.delete(pairKey(username, address));
    this.byAddress.refund(address);
  }

  private pair(username: string, address: string, now: number): { failures: number; until: number; last: number } | undefined {
    const key = pairKey(username, address);
    const p = this.pairs.get(key);
    if (p !== undefined && now - p.last >= this.limits.forgetMs && p.until <= now) {
      this.pairs.delete(key);
      return undefined;
    }
    return p;
  }

  /**
   * Makes room: forgotten pairs first, then those not waiting now, then those whose wait ends first.
   * A guesser cannot clear its own wait by filling the table with new addresses.
   */
  private prune(now: number): void {
    for (const [k, p] of this.pairs) if (now - p.last >= this.limits.forgetMs && p.until <= now) this.pairs.delete(k);
    if (this.pairs.size < this.maxKeys) return;
    for (const [k, p] of this.pairs) if (p.until <= now) this.pairs.delete(k);
    if (this.pairs.size < this.maxKeys) return;
    const soonest = [...this.pairs].sort((a, b) => a[1].until - b[1].until).slice(0, Math.floor(this.maxKeys / 2));
    for (const [k] of soonest) this.pairs.delete(k);
  }
}

const pairKey = (username: string, address: string): string => `${username}\u0000${address}`;

/**
 * What a node counted, told to the others so that each counts it too: a failed login (or password
 * check) of a username from an address, one that succeeded (which clears that pair), a registration
 * from an address.
 */
export type LimitEvent =
  | { readonly kind: 'login.failed'; readonly username: string; readonly address: string }
  | { readonly kind: 'login.cleared'; readonly username: string; readonly address: string }
  | { readonly kind: 'register'; readonly address: string };

/** How the API shares its limit events with the other nodes (src/cluster/limit-gossip.ts); absent: per node. */
export interface SharedLimits {
  publish(event: LimitEvent): void;
  /** Each event another node sent, as it came: unchecked JSON (parseLimitEvent). */
  subscribe(listener: (event: unknown) => void): void;
  /** Events the other nodes took, events of theirs counted here, events dropped (a full queue, a peer down). */
  readonly stats: { readonly sent: number; readonly received: number; readonly dropped: number };
}

const MAX_EVENT_FIELD = 256;
const field = (v: unknown): v is string => typeof v === 'string' && v.length > 0 && v.length <= MAX_EVENT_FIELD;

/** An event from another node, or null for anything else (a peer is trusted, but a bug there must not throw here). */
export function parseLimitEvent(e: unknown): LimitEvent | null {
  if (typeof e !== 'object' || e === null) return null;
  const { kind, username, address } = e as Record<string, unknown>;
  if (!field(address)) return null;
  if (kind === 'register') return { kind, address };
  if ((kind === 'login.failed' || kind === 'login.cleared') && field(username)) return { kind, username, address };
  return null;
}
