// pino options that keep a node's messages (info and up) instead of printing them, for tests that
// wait for what a node says (late-start.test.ts, lost-log.test.ts).
import type { LoggerOptions } from 'pino';

export function captureLogs(): { logger: LoggerOptions; lines: string[] } {
  const lines: string[] = [];
  return {
    lines,
    logger: {
      level: 'info',
      hooks: {
        logMethod(args) {
          lines.push(args.map((a) => (typeof a === 'string' ? a : '')).join(' '));
        },
      },
    },
  };
}
