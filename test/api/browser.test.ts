// Swagger UI in a real browser: headless Chromium, driven by playwright-core, opens /docs on a live
// 3-node cluster, authorizes with a bearer token, runs GET /v1/auth/me and POST /v1/queues through
// "Try it out" and sees their 2xx; the queue it created is then read back through the API.
//
// The browser comes from npm, so that the test runs wherever `npm ci` ran: @sparticuz/chromium ships
// a headless Chromium (x86-64 Linux) that it unpacks to the temporary folder. Only if that one cannot
// start at all (another architecture, say) is Debian's chromium used; without either, the test is
// skipped with the command that installs it (test/tools.ts).
import { existsSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import npmChromium from '@sparticuz/chromium';
import { chromium, type Browser, type Locator, type Page } from 'playwright-core';
import t, { type Test } from 'tap';
import { findTool, skipForTool } from '../tools.js';
import { call, startCluster, userToken } from './api-helpers.js';

/**
 * Flags on top of Playwright's own, which already give a fresh profile (--user-data-dir), --headless,
 * --no-sandbox, --no-first-run, --disable-sync, --disable-background-networking and
 * --disable-component-update (nothing reaches for the network, which CI does not have). No GPU here:
 * --disable-gpu spares the start of a software one. @sparticuz/chromium's own `args` are for AWS
 * Lambda (--single-process, WebGL through SwiftShader, web security off): not needed here.
 */
const CHROMIUM_ARGS = ['--disable-gpu'];
/** Bound of a browser start: a binary that cannot run fails at once, one that hangs fails here. */
const LAUNCH_MS = 30_000;
/** Bound of every single wait (locator action, navigation, response). */
const STEP_MS = 15_000;

// The whole file (about 20 s on an idle 2-core machine): tap's own default is 30 s when the file is
// run directly, too tight on a loaded machine; .taprc's 600 s is far more than this needs.
t.setTimeout(120_000);

const firstLine = (err: unknown): string => (err instanceof Error ? err.message : String(err)).split('\n')[0]!;

/**
 * The npm Chromium, or Debian's when the npm one cannot start; null after skipping `t` when there is
 * neither. The npm Chromium renders with the fonts it ships (FONTCONFIG_PATH), not the machine's.
 */
async function launchChromium(t: Test): Promise<Browser | null> {
  let npmFailure: string;
  try {
    const executablePath = await npmChromium.executablePath();
    const fonts = join(tmpdir(), 'fonts');
    const env = existsSync(join(fonts, 'fonts.conf')) ? { ...process.env, FONTCONFIG_PATH: fonts } : process.env;
    const browser = await chromium.launch({ executablePath, args: CHROMIUM_ARGS, headless: true, timeout: LAUNCH_MS, env });
    t.comment(`browser: ${executablePath} (@sparticuz/chromium), Chromium ${browser.version()}`);
    return browser;
  } catch (err) {
    npmFailure = firstLine(err);
  }
  const debian = findTool('chromium');
  if (debian === null) {
    skipForTool(t, 'chromium', `the npm Chromium (@sparticuz/chromium) did not start (${npmFailure}) and there is no chromium on PATH`);
    return null;
  }
  t.comment(`the npm Chromium did not start (${npmFailure}); using ${debian}`);
  const browser = await chromium.launch({ executablePath: debian, args: CHROMIUM_ARGS, headless: true, timeout: LAUNCH_MS });
  t.comment(`browser: ${debian}, Chromium ${browser.version()}`);
  return browser;
}

/**
 * Expands the operation `method` `path`, switches it to "Try it out" (uiConfig has tryItOutEnabled:
 * false). Found by method and path, as a reader finds it, not by the element id Swagger UI derives
 * from the operationId.
 */
async function tryItOut(page: Page, method: string, path: string): Promise<Locator> {
  const op = page.locator(`.opblock.opblock-${method.toLowerCase()}`).filter({ has: page.locator(`.opblock-summary-path[data-path="${path}"]`) });
  await op.locator('.opblock-summary-control').click();
  await op.getByRole('button', { name: 'Try it out' }).click();
  await op.getByRole('button', { name: 'Execute' }).waitFor();
  return op;
}

/** Clicks Execute on an expanded operation; answers the request the browser sent, and the response. */
async function execute(page: Page, op: Locator, method: string, path: string): Promise<{ authorization: string | undefined; status: number }> {
  const [res] = await Promise.all([
    page.waitForResponse((r) => r.request().method() === method && new URL(r.url()).pathname === path),
    op.getByRole('button', { name: 'Execute' }).click(),
  ]);
  return { authorization: (await res.request().allHeaders()).authorization, status: res.status() };
}

/** The "Server response" row Swagger UI renders after Execute: its status cell and body text. */
async function liveResponse(op: Locator): Promise<{ status: string; body: string }> {
  const row = op.locator('.live-responses-table .response').first();
  const status = row.locator('.response-col_status');
  await status.waitFor();
  const body = row.locator('.response-col_description .microlight, .response-col_description pre').first();
  await body.waitFor();
  return { status: (await status.innerText()).trim(), body: await body.innerText() };
}

t.test('Swagger UI at /docs: authorize with a token, try GET /v1/auth/me and POST /v1/queues', async (t) => {
  // The browser first (a fraction of a second): without one the test is skipped before any node starts.
  const browser = await launchChromium(t);
  if (browser === null) return;
  t.teardown(() => browser.close());
  const cluster = await startCluster();
  t.teardown(() => cluster.close());
  const base = cluster.urls[0]!;
  const username = 'docs-user';
  const token = await userToken(base, username);

  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  page.setDefaultTimeout(STEP_MS);
  page.setDefaultNavigationTimeout(STEP_MS);
  const pageErrors: string[] = [];
  page.on('pageerror', (e) => pageErrors.push(e.message));
  // Where a request the page sent went, when it got no answer (a wrong server URL in the document
  // shows up here, not in the page): reported with a failure.
  const failedRequests: string[] = [];
  page.on('requestfailed', (r) => failedRequests.push(`${r.method()} ${r.url()}: ${r.failure()?.errorText ?? 'failed'}`));

  try {
    const docs = await page.goto(`${base}/docs`);
    t.equal(docs?.status(), 200, '/docs answers 200');
    await page.locator('.swagger-ui .info .title').filter({ hasText: 'mom: a replicated message broker' }).waitFor();

    // Authorize: the dialog offers bearerAuth; paste the token, authorize, close.
    await page.locator('.auth-wrapper').getByRole('button', { name: 'Authorize' }).click();
    const dialog = page.locator('.modal-ux');
    await dialog.waitFor();
    const bearer = dialog.locator('.auth-container').filter({ hasText: 'bearerAuth' });
    await bearer.getByRole('textbox', { name: 'auth-bearer-value' }).fill(token);
    await bearer.getByRole('button', { name: 'Apply credentials' }).click(); // the "Authorize" button
    await bearer.getByRole('button', { name: 'Remove authorization' }).waitFor(); // "Logout": authorized
    await dialog.getByRole('button', { name: 'Close' }).first().click();
    await dialog.waitFor({ state: 'detached' });

    // GET /v1/auth/me: 200 naming the user, sent with the token.
    const me = await tryItOut(page, 'GET', '/v1/auth/me');
    const meSent = await execute(page, me, 'GET', '/v1/auth/me');
    t.equal(meSent.authorization, `Bearer ${token}`, 'the browser sends the authorized token');
    t.equal(meSent.status, 200, 'GET /v1/auth/me answers 200 to the browser');
    const meShown = await liveResponse(me);
    t.equal(meShown.status, '200', 'Swagger UI shows status 200');
    t.same(JSON.parse(meShown.body), { username }, 'Swagger UI shows the username');

    // POST /v1/queues: 201 with the new queue, which the API then has.
    const queue = 'docs-queue';
    const create = await tryItOut(page, 'POST', '/v1/queues');
    await create.locator('textarea.body-param__text').fill(JSON.stringify({ name: queue, visibilityTimeoutSeconds: 45 }));
    const createSent = await execute(page, create, 'POST', '/v1/queues');
    t.equal(createSent.authorization, `Bearer ${token}`, 'the browser sends the authorized token');
    t.equal(createSent.status, 201, 'POST /v1/queues answers 201 to the browser');
    const createShown = await liveResponse(create);
    t.equal(createShown.status, '201', 'Swagger UI shows status 201');
    t.match(JSON.parse(createShown.body), { name: queue, owner: username, visibilityTimeoutSeconds: 45 }, 'Swagger UI shows the new queue');

    const got = await call(cluster.urls[1]!, 'GET', `/v1/queues/${queue}`, { token });
    t.equal(got.status, 200, 'the queue exists (read through another node)');
    t.match(got.body, { name: queue, owner: username, visibilityTimeoutSeconds: 45 });

    t.same(pageErrors, [], 'no uncaught errors in the page');
  } catch (err) {
    for (const f of failedRequests) t.comment(`request without an answer: ${f}`);
    const shot = join(mkdtempSync(join(tmpdir(), 'mom-docs-')), 'failure.png');
    await page.screenshot({ path: shot, fullPage: true }).then(
      () => t.comment(`screenshot of the page at the failure: ${shot}`),
      () => undefined,
    );
    throw err;
  }
});
