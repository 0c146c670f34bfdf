// `mom logout` ends the session it holds on the cluster, not only here: it only forgot the token, and
// a copy of session.json (or of the token) worked for up to an hour (review of 2026-12-07). The API's
// logout revokes every token of the user; `--local` only forgets the token, as before.
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t, { type Test } from 'tap';
// @ts-expect-error: a plain .mjs script without types
import { buildCli } from '../../scripts/build.mjs';
import { localApp } from '../api/local-app.js';

t.setTimeout(120_000);

const BIN = join(import.meta.dirname, '..', '..', 'bin', 'mom.mjs');
// bin/mom.mjs runs dist/cli.js when it exists: built from the current sources (cli.test.ts does too).
await (buildCli as () => Promise<string>)();
const home = mkdtempSync(join(tmpdir(), 'mom-cli-logout-'));
const app = await localApp();
t.teardown(async () => {
  await app.close();
  rmSync(home, { recursive: true, force: true });
});
const config = join(home, 'config');

function mom(args: string[], input = ''): Promise<{ code: number; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, [BIN, ...args], { env: { ...process.env, MOM_CONFIG_DIR: config, MOM_URL: '', MOM_TOKEN: '' }, stdio: ['pipe', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  child.stdin.end(input);
  return new Promise((resolve) => child.on('close', (code) => resolve({ code: code ?? -1, stdout, stderr })));
}

/** Logs `username` in through the CLI; the token it kept. */
async function login(t: Test, username: string): Promise<string> {
  const login = await mom(['--url', app.url, 'login', '--username', username, '--password-stdin'], `${username}-password\n`);
  t.equal(login.code, 0, login.stderr);
  return (JSON.parse(readFileSync(join(config, 'session.json'), 'utf8')) as { token: string }).token;
}

const me = async (token: string): Promise<number> => (await fetch(`${app.url}/v1/auth/me`, { headers: { authorization: `Bearer ${token}` } })).status;

for (const username of ['cli-out', 'cli-local']) {
  const reg = await fetch(`${app.url}/v1/auth/register`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ username, password: `${username}-password` }) });
  if (reg.status !== 201) throw new Error(`register ${username}: ${reg.status}`);
}

t.test('mom logout revokes the token it held, and forgets it', async (t) => {
  const token = await login(t, 'cli-out');
  t.equal(await me(token), 200, 'the session works');
  const out = await mom(['logout']);
  t.equal(out.code, 0, out.stderr);
  t.match(out.stdout, /every token of cli-out is revoked/);
  t.equal(await me(token), 401, 'the token of a session logged out of is refused');
  t.notOk(existsSync(join(config, 'session.json')) && readFileSync(join(config, 'session.json'), 'utf8').includes(token), 'and forgotten here');
});

t.test('a token revoked already (401) is a logout done', async (t) => {
  const token = await login(t, 'cli-out');
  t.equal((await fetch(`${app.url}/v1/auth/logout`, { method: 'POST', headers: { authorization: `Bearer ${token}` } })).status, 204, 'revoked elsewhere');
  const out = await mom(['logout']);
  t.equal(out.code, 0, out.stderr);
});

t.test('mom logout --local only forgets the token', async (t) => {
  const token = await login(t, 'cli-local');
  const out = await mom(['logout', '--local']);
  t.equal(out.code, 0, out.stderr);
  t.match(out.stdout, /logged out here/);
  t.equal(await me(token), 200, 'the token itself stays valid until it expires');
  t.equal((await mom(['queues', 'list'])).code, 2, 'the CLI holds no session any more');
});
