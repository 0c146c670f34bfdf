// What the benchmarks read about their own process from /proc (Linux).
import { readFileSync } from 'node:fs';

/** Bytes this process has had written to storage so far. */
export function writtenBytes(): number {
  const m = /write_bytes: (\d+)/.exec(readFileSync('/proc/self/io', 'utf8'));
  return m === null ? 0 : Number(m[1]);
}
