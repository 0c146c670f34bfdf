// System tools that some tests run (a load balancer, a rule checker, a C compiler, ...), and what a
// test does when one is missing: it is skipped, by name, with the command that installs the tool;
// it never fails or waits for lack of it, so that `npm ci && npm test` passes on a fresh machine.
// scripts/test.mjs lists every skip before its closing line and, under CI=true (.ci/run installs
// every tool below), counts each as a failure, so that CI cannot pass with a test left out.
//
// A tool that npm can ship is taken from npm instead (Chromium: test/api/browser.test.ts).
import { accessSync, constants, statSync } from 'node:fs';
import { delimiter, join } from 'node:path';
import type { Test } from 'tap';

/** Each tool a test runs, with the Debian command that installs it (.ci/run installs the same). */
export const TOOLS = {
  haproxy: 'apt-get install -y haproxy',
  nginx: 'apt-get install -y nginx-light',
  promtool: 'apt-get install -y prometheus',
  'systemd-analyze': 'apt-get install -y systemd',
  cc: 'apt-get install -y build-essential',
  openssl: 'apt-get install -y openssl',
  chromium: 'apt-get install -y chromium',
  fincore: 'apt-get install -y util-linux',
  unshare: 'apt-get install -y util-linux',
} as const;

export type Tool = keyof typeof TOOLS;

/**
 * Searched after PATH: Debian puts daemons such as haproxy and nginx in sbin folders, which a user's
 * PATH often lacks.
 */
const SBIN = ['/usr/local/sbin', '/usr/sbin', '/sbin'];

function isExecutableFile(path: string): boolean {
  try {
    accessSync(path, constants.X_OK);
    return statSync(path).isFile();
  } catch {
    return false;
  }
}

/** The path of `tool` on PATH or in an sbin folder, or null. A file lookup only: it runs nothing. */
export function findTool(tool: Tool): string | null {
  const dirs = [...(process.env.PATH ?? '').split(delimiter).filter((d) => d !== ''), ...SBIN];
  for (const dir of dirs) {
    const path = join(dir, tool);
    if (isExecutableFile(path)) return path;
  }
  return null;
}

/**
 * Skips `t` (a subtest, or a whole file when given the file's root test) for want of `tool`:
 * `why` says what is missing, then the command that installs it. The caller returns right after.
 */
export function skipForTool(t: Test, tool: Tool, why = `${tool} is not installed (looked on PATH and in ${SBIN.join(', ')})`): void {
  t.plan(0, `${why}; install it with: ${TOOLS[tool]}`);
}

/**
 * The path of `tool`, or null after skipping `t` with the command that installs it. Call it first in
 * a test, before anything that would need cleaning up: `const bin = needTool(t, 'haproxy'); if (bin
 * === null) return;`.
 */
export function needTool(t: Test, tool: Tool): string | null {
  const found = findTool(tool);
  if (found === null) skipForTool(t, tool);
  return found;
}
