// What the benchmarks read about a process from /proc (Linux): their own, or a node's.
import { execFileSync } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';

/** Bytes the process (this one by default) has had written to storage so far. */
export function writtenBytes(pid: number | 'self' = 'self'): number {
  const m = /^write_bytes: (\d+)/m.exec(readFileSync(`/proc/${pid}/io`, 'utf8'));
  return m === null ? 0 : Number(m[1]);
}

/** Clock ticks per second, the unit of /proc's CPU times. */
export const CLK_TCK = (() => {
  try {
    return Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
  } catch {
    return 100;
  }
})();

/**
 * CPU time the process has used so far in clock ticks, in user space (its JavaScript, V8, SQLite,
 * libc) and in the kernel (system calls: sockets, the disk, wake-ups), apart.
 */
export function cpuTicksSplit(pid: number): { user: number; kernel: number } {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return { user: Number(f[11]), kernel: Number(f[12]) }; // utime, stime
}

/** CPU seconds the process has used since `before` (cpuTicksSplit), in user space and in the kernel. */
export function cpuSecondsSince(pid: number, before: { user: number; kernel: number }): { user: number; kernel: number } {
  const now = cpuTicksSplit(pid);
  return { user: (now.user - before.user) / CLK_TCK, kernel: (now.kernel - before.kernel) / CLK_TCK };
}

/** The process's resident set now, MB. */
export function rssMb(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m === null ? 0 : Number(m[1]) / 1024;
}

/** Read- and write-family system calls so far (syscr + syscw: socket and file reads and writes, not epoll or fsync). */
export function ioCalls(pid: number): number {
  const io = readFileSync(`/proc/${pid}/io`, 'utf8');
  return ['syscr', 'syscw'].reduce((sum, key) => sum + Number(new RegExp(`^${key}: (\\d+)`, 'm').exec(io)?.[1] ?? 0), 0);
}

/** Context switches of each of the process's threads so far, by thread id: each is a thread put to sleep or preempted, then woken. */
export function switches(pid: number): Map<string, number> {
  const out = new Map<string, number>();
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    try {
      const status = readFileSync(`/proc/${pid}/task/${tid}/status`, 'utf8');
      let n = 0;
      for (const m of status.matchAll(/^(?:non)?voluntary_ctxt_switches:\s+(\d+)/gm)) n += Number(m[1]);
      out.set(tid, n);
    } catch {
      // the thread ended between the listing and the read
    }
  }
  return out;
}

/** Context switches since `before` of the threads alive now (a thread started meanwhile counts from 0). */
export function switchesSince(pid: number, before: Map<string, number>): number {
  let n = 0;
  for (const [tid, count] of switches(pid)) n += count - (before.get(tid) ?? 0);
  return n;
}
