// The delays of the timers a synchronous call sets, seen as they are set: what a long poll's watch
// arms (router-forward.test.ts, router-clock.test.ts).

/** The delay (ms) of each setTimeout `fn` calls, in order; the timers themselves run as usual. */
export function delaysOf(fn: () => void): number[] {
  const delays: number[] = [];
  const real = globalThis.setTimeout;
  globalThis.setTimeout = ((f: () => void, ms?: number) => {
    delays.push(ms ?? 0);
    return real(f, ms);
  }) as typeof setTimeout;
  try {
    fn();
  } finally {
    globalThis.setTimeout = real;
  }
  return delays;
}
