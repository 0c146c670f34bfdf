#!/usr/bin/env node
// The `mom` command (package.json "bin"): the bundle dist/cli.js when it was built (npm run build),
// otherwise src/cli/mom.ts through tsx (a checkout after npm ci).
import { existsSync } from 'node:fs';

const built = new URL('../dist/cli.js', import.meta.url);
if (existsSync(built)) {
  await import(built.href);
} else {
  const { register } = await import('tsx/esm/api');
  register();
  await import(new URL('../src/cli/mom.ts', import.meta.url).href);
}
