#!/usr/bin/env node
// `npm test`: lint, typecheck, then every test/**/*.test.ts under tap, and a
// closing line `N passed, N failed, N skipped`. Exit code 0 only if all three
// stages pass (with CI=true, also only if nothing was skipped: see below).
//
//   node scripts/test.mjs [--skip-checks] [tap options] [files or dirs...]
//
//   npm test                               everything
//   npm test -- test/raft/log.test.ts      lint + typecheck + that file only
//   npm test -- test/raft                  ... all *.test.ts below test/raft
//   npm run test:only -- test/raft/x.test.ts   skip lint + typecheck (--skip-checks)
//   npm test -- --grep=election            other args are passed to tap
//
// What the closing line counts (unit = "top-level tests"):
//   - each test point directly inside a test file, i.e. every top-level
//     `t.test(...)` subtest and every assertion made directly on the root `t`
//     (TAP depth 1). Assertions inside a subtest are not counted separately:
//     a subtest with any failing assertion is one failure.
//   - `# SKIP` points count as skipped: a test whose system tool is missing
//     skips itself (test/tools.ts); a whole file that tap reports skipped
//     (`ok N - file # SKIP ...` at depth 0) counts as 1 skipped. Each skip is
//     listed, file, test name and reason, before the closing line.
//   - with CI=true in the environment (CI installs every tool the tests use:
//     .ci/run), each skip also counts as 1 failed, and its line says so: CI
//     cannot pass with a test left out.
//   - `# TODO` points count as none of the three.
//   - a test file that fails without any failing top-level point (crash while
//     importing, non-zero exit, timeout outside a subtest, ...) is 1 failed.
//   - a failed lint or typecheck stage is 1 failed each (passing stages add 0).
//   - if tap exits non-zero but nothing above explains it, 1 failed.
//   - every failure is listed again, file, test name and its first failing
//     assertion, just before the closing line, so a log's tail names them.
//   - tap 21 quirk: when a file hits the per-file timeout, tap emits an extra
//     top-level `not ok - timeout!` and loses the result of the run's last
//     file; that extra point counts as 1 failed (standing in for that file).
// tap's own summary (`# { total: ..., pass: ..., fail: ... }`) is printed
// before it; it counts differently and is informational only.

import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const bin = (name) => join(root, 'node_modules', '.bin', name);
const TEST_RE = /\.test\.ts$/;

/**
 * Run `node <script> ...args` in the repo root with inherited stdio, or, with
 * `onStdout`, with stdout piped: every chunk is echoed to our stdout (so long
 * runs still stream) and handed to `onStdout`.
 */
function run(script, args, onStdout) {
  return new Promise((res) => {
    const child = spawn(process.execPath, [script, ...args], {
      cwd: root,
      stdio: ['inherit', onStdout ? 'pipe' : 'inherit', 'inherit'],
    });
    if (onStdout) {
      child.stdout.setEncoding('utf8');
      child.stdout.on('data', (chunk) => {
        process.stdout.write(chunk);
        onStdout(chunk);
      });
    }
    child.on('error', (err) => {
      console.error(err);
      res(1);
    });
    // 'close' (not 'exit'): wait until stdout has been fully read.
    child.on('close', (code, signal) => res(signal ? 128 : (code ?? 1)));
  });
}

/** All *.test.ts files below `dir` (relative to the repo root), sorted. */
function findTests(dir) {
  const abs = resolve(root, dir);
  if (!existsSync(abs)) return [];
  return readdirSync(abs, { recursive: true, withFileTypes: false })
    .map(String)
    .filter((f) => TEST_RE.test(f) && !f.split(/[\\/]/).includes('node_modules'))
    .map((f) => relative(root, join(abs, f)))
    .sort();
}

/**
 * Count depth-1 test points in tap's raw TAP output (see header comment).
 * Handles both subtest encodings: `# Subtest: name` + indented body followed
 * by the test point, and buffered `ok N - name {` ... `}`. YAML diagnostic
 * blocks are skipped so that source excerpts in them cannot be miscounted.
 */
function countTap(text) {
  let passed = 0;
  let failed = 0;
  const skips = []; // { file, name, reason }; name null for a whole file
  const failures = []; // { file, name, detail }; name null for a file that failed without a failing point
  let detail = null; // the first failing assertion nested below the depth-1 point that comes next
  let yamlIndent = null; // inside a YAML block that started with `${yamlIndent}---`
  let lastPointIndent = null; // indent of the previous test point (YAML may follow it)
  let fileFailed = 0; // failing depth-1 points seen for the current file
  let openFile = null; // buffered form: { ok } of an open `ok N - file {` block
  let file = null; // the test file whose points come now

  const finishFile = (ok, name) => {
    if (!ok && fileFailed === 0) {
      failed++;
      failures.push({ file: name ?? file, name: null, detail });
    }
    fileFailed = 0;
    detail = null;
  };

  for (const line of text.split(/\r?\n/)) {
    if (yamlIndent !== null) {
      if (line === `${yamlIndent}...`) yamlIndent = null;
      continue;
    }
    const yaml = /^( *)---$/.exec(line);
    if (yaml && lastPointIndent !== null && yaml[1].length === lastPointIndent + 2) {
      yamlIndent = yaml[1];
      continue;
    }
    if (line.trim() === '') continue;

    if (/^}\s*$/.test(line) && openFile) {
      finishFile(openFile.ok, openFile.name);
      openFile = null;
      lastPointIndent = null;
      continue;
    }
    if (/^Bail out!/.test(line)) {
      failed++;
      failures.push({ file, name: line, detail: null });
      continue;
    }
    const subtest = /^# Subtest: (.*)$/.exec(line);
    if (subtest) file = subtest[1];

    const m = /^( *)(not )?ok\b(.*)$/.exec(line);
    if (!m) {
      lastPointIndent = null;
      continue;
    }
    const indent = m[1].length;
    const ok = !m[2];
    const rest = m[3];
    lastPointIndent = indent;
    const point = parsePoint(rest);
    if (indent === 0) {
      if (point.skip !== null) skips.push({ file: point.name, name: null, reason: point.skip });
      if (/\{\s*$/.test(rest)) {
        openFile = { ok, name: point.name };
        file = point.name;
      } else finishFile(ok, point.name);
    } else if (indent === 4) {
      const below = detail;
      detail = null;
      if (point.todo) continue;
      if (point.skip !== null) {
        skips.push({ file, name: point.name, reason: point.skip });
        continue;
      }
      if (ok) passed++;
      else {
        failed++;
        fileFailed++;
        failures.push({ file, name: point.name, detail: below });
      }
    } else if (indent > 4 && !ok && detail === null && !point.todo) {
      detail = point.name;
    }
  }
  if (openFile) finishFile(openFile.ok, openFile.name);
  return { passed, failed, skips, failures };
}

/**
 * The name and directive of a test point, from what follows `ok`: ` 3 - name # SKIP reason {`.
 * In the name, tap escapes `#` and `\` with a backslash; a directive starts at an unescaped `#`.
 */
function parsePoint(rest) {
  const body = rest.replace(/\s*\{\s*$/, '').replace(/^\s*\d+\s*(-\s*)?/, '');
  const hash = /(^|[^\\])#/.exec(body);
  const cut = hash === null ? body.length : hash.index + hash[1].length;
  const name = body.slice(0, cut).trim().replace(/\\([\\#])/g, '$1');
  const directive = /^#\s*(SKIP|TODO)\b\S*\s*(.*)$/i.exec(body.slice(cut));
  const kind = directive?.[1].toUpperCase();
  return { name, skip: kind === 'SKIP' ? directive[2].trim() : null, todo: kind === 'TODO' };
}

/**
 * .taprc disables tap's @tapjs/typescript plugin (tsx is the loader instead).
 * tap notices that the plugin set differs from the one its Test class was
 * built with (always the case right after `npm ci`) and rebuilds it, but that
 * first run still spawns the tests with the OLD loader list (ts-node + tsx).
 * So rebuild up front; then every run, including the first in CI, is the same.
 * If tap's internals move, this just returns false and tap rebuilds itself.
 */
function tapNeedsBuild() {
  try {
    const built = join(root, 'node_modules/@tapjs/test/test-built/dist/esm/index.js');
    return readFileSync(built, 'utf8').includes('from "@tapjs/typescript"');
  } catch {
    return false;
  }
}

async function main() {
  const argv = process.argv.slice(2);
  const skipChecks = argv.includes('--skip-checks');
  const tapOpts = [];
  const selected = [];
  const missing = [];
  let explicit = false;
  for (const a of argv) {
    if (a === '--skip-checks') continue;
    const looksLikePath = !a.startsWith('-') && (a.includes('/') || a.endsWith('.ts'));
    if (!a.startsWith('-') && existsSync(resolve(root, a))) {
      explicit = true;
      if (statSync(resolve(root, a)).isDirectory()) selected.push(...findTests(a));
      else selected.push(relative(root, resolve(root, a)));
    } else if (looksLikePath) {
      explicit = true;
      missing.push(a);
    } else {
      tapOpts.push(a); // tap option, or the value of one
    }
  }
  const files = explicit ? selected : findTests('test');

  let passed = 0;
  let failed = 0;
  const skips = [];
  const failures = [];
  for (const m of missing) {
    console.error(`test.mjs: no such test file or directory: ${m}`);
    failed++;
    failures.push({ file: m, name: 'no such test file or directory', detail: null });
  }
  const t0 = Date.now();
  let tStage = t0;
  const secs = (ms) => `${(ms / 1000).toFixed(1)} s`;
  const stage = (name) => {
    tStage = Date.now();
    console.log(`\n# ── ${name}`);
  };
  const stageDone = (name, code) => {
    console.log(`# ${name}: ${code === 0 ? 'ok' : 'FAILED'} (${secs(Date.now() - tStage)})`);
    if (code !== 0) {
      failed++;
      failures.push({ file: name, name: null, detail: null });
    }
  };

  if (!skipChecks) {
    stage('lint: eslint .');
    stageDone('lint', await run(bin('eslint'), ['.']));
    stage('typecheck: tsc --noEmit');
    stageDone('typecheck', await run(bin('tsc'), ['--noEmit', '-p', root]));
  }

  stage(`tests: tap (${files.length} file${files.length === 1 ? '' : 's'})`);
  if (files.length === 0) {
    console.log('# no test files found');
  } else {
    if (tapNeedsBuild()) {
      console.log('# rebuilding tap without @tapjs/typescript (once after npm ci)');
      if ((await run(bin('tap'), ['build'])) !== 0) failed++;
    }
    // We need tap's raw TAP stream to count. Two ways to get it:
    //  - reporter `tap` (tap's default when stdout is not a TTY, e.g. CI):
    //    pipe tap's stdout through us. (Do NOT combine reporter `tap` with
    //    --output-file: tap 21 then writes every line to stdout twice.)
    //  - any other reporter (`base` on a TTY, or `-R terse` etc.): keep it on
    //    the console and have tap also write raw TAP to --output-file.
    const userReporter = tapOpts.findIndex((o) => /^(-R|--reporter)(=|$)|^-R./.test(o));
    let reporter = null;
    if (userReporter >= 0) {
      const o = tapOpts[userReporter];
      reporter = /^(-R|--reporter)$/.test(o) ? tapOpts[userReporter + 1] : o.replace(/^(-R=?|--reporter=)/, '');
    }
    const tee = reporter === 'tap' || (reporter === null && !process.stdout.isTTY);
    let rawText = '';
    let code;
    if (tee) {
      code = await run(bin('tap'), [...(reporter ? [] : ['--reporter=tap']), ...tapOpts, ...files], (c) => {
        rawText += c;
      });
    } else {
      const dir = mkdtempSync(join(tmpdir(), 'mom-tap-'));
      const raw = join(dir, 'raw.tap');
      try {
        code = await run(bin('tap'), [...tapOpts, `--output-file=${raw}`, ...files]);
        rawText = existsSync(raw) ? readFileSync(raw, 'utf8') : '';
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    }
    const counts = countTap(rawText);
    passed += counts.passed;
    failed += counts.failed;
    skips.push(...counts.skips);
    failures.push(...counts.failures);
    if (code !== 0 && counts.failed === 0) {
      failed++;
      failures.push({ file: 'tap', name: `exited with code ${code}, no failing test named`, detail: null });
    }
    console.log(`# tests: ${code === 0 ? 'ok' : 'FAILED'} (${secs(Date.now() - tStage)})`);
  }

  console.log(`# total ${secs(Date.now() - t0)}`);
  // CI installs every tool the tests use (.ci/run): a skip there means a test silently left out.
  const ci = process.env.CI === 'true';
  skips.sort((a, b) => (a.file ?? '').localeCompare(b.file ?? ''));
  for (const s of skips) {
    const what = s.name === null ? `${s.file} (the whole file)` : `${s.file ?? '?'} > ${s.name}`;
    console.log(`SKIPPED${ci ? ' (counted as failed: CI=true)' : ''}: ${what}: ${s.reason || 'no reason given'}`);
  }
  if (ci) {
    failed += skips.length;
    for (const s of skips) failures.push({ file: s.file, name: `${s.name ?? '(the whole file)'}: skipped, counted as failed (CI=true)`, detail: null });
  }
  // The failures again, last, so that the tail of a long log names them.
  for (const f of failures) {
    const what = f.name === null ? `${f.file ?? '?'} (failed as a whole: a crash, an exit code, a timeout or a failed stage)` : `${f.file ?? '?'} > ${f.name}`;
    console.log(`FAILED: ${what}${f.detail ? ` (first failing assertion: ${f.detail})` : ''}`);
  }
  console.log(`${passed} passed, ${failed} failed, ${skips.length} skipped`);
  process.exitCode = failed > 0 ? 1 : 0;
}

await main();
