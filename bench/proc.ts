// What the benchmarks read about a process from /proc (Linux): their own, or a node's.
import { readFileSync } from 'node:fs';

/** Bytes the process (this one by default) has had written to storage so far. */
export function writtenBytes(pid: number | 'self' = 'self'): number {
  const m = /^write_bytes: (\d+)/m.exec(readFileSync(`/proc/${pid}/io`, 'utf8'));
  return m === null ? 0 : Number(m[1]);
}
