// Swagger UI in a real browser: headless Chromium (Debian's chromium package, driven by
// playwright-core) opens /docs on a live 3-node cluster, authorizes with a bearer token, runs
// GET /v1/auth/me and POST /v1/queues through "Try it out" and sees their 2xx; the queue it
// created is then read back through the API. .ci/run installs chromium when it is missing.
import { existsSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium, type Browser, type Locator, type Page } from 'playwright-core';
import t from 'tap';
import { call, startCluster, userToken } from './api-helpers.js';

const CHROMIUM = '/usr/bin/chromium';
const CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'];
/** Bound of every single wait (locator action, navigation, response). */
const STEP_MS = 15_000;

// The whole file (about 20 s on an idle 2-core machine): tap's own default is 30 s when the file is
// run directly, too tight on a loaded machine; .taprc's 600 s is far more than this needs.
t.setTimeout(120_000);

/** Expands an operation, switches it to "Try it out" (uiConfig has tryItOutEnabled: false). */
async function tryItOut(page: Page, opblockId: string): Promise<Locator> {
  const op = page.locator(`#${opblockId}`);
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
  if (!existsSync(CHROMIUM)) {
    t.fail(`${CHROMIUM} is missing: install Debian's chromium package (apt-get install chromium); .ci/run does so in CI`);
    return;
  }
  // Cluster and browser start side by side; whichever started is stopped at the end, even if the
  // other failed.
  const [started, launched] = await Promise.allSettled([
    startCluster(),
    chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS, timeout: 30_000 }),
  ]);
  if (launched.status === 'fulfilled') t.teardown(() => launched.value.close());
  if (started.status === 'fulfilled') t.teardown(() => started.value.close());
  if (started.status === 'rejected') throw started.reason;
  if (launched.status === 'rejected') throw launched.reason;
  const cluster = started.value;
  const browser: Browser = launched.value;
  const base = cluster.urls[0]!;
  const username = 'docs-user';
  const token = await userToken(base, username);

  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  page.setDefaultTimeout(STEP_MS);
  page.setDefaultNavigationTimeout(STEP_MS);
  const pageErrors: string[] = [];
  page.on('pageerror', (e) => pageErrors.push(e.message));

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
    const me = await tryItOut(page, 'operations-auth-get_v1_auth_me');
    const meSent = await execute(page, me, 'GET', '/v1/auth/me');
    t.equal(meSent.authorization, `Bearer ${token}`, 'the browser sends the authorized token');
    t.equal(meSent.status, 200, 'GET /v1/auth/me answers 200 to the browser');
    const meShown = await liveResponse(me);
    t.equal(meShown.status, '200', 'Swagger UI shows status 200');
    t.same(JSON.parse(meShown.body), { username }, 'Swagger UI shows the username');

    // POST /v1/queues: 201 with the new queue, which the API then has.
    const queue = 'docs-queue';
    const create = await tryItOut(page, 'operations-queues-post_v1_queues');
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
    const shot = join(mkdtempSync(join(tmpdir(), 'mom-docs-')), 'failure.png');
    await page.screenshot({ path: shot, fullPage: true }).then(
      () => t.comment(`screenshot of the page at the failure: ${shot}`),
      () => undefined,
    );
    throw err;
  }
});
