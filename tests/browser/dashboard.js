// The dashboard in a real browser, as a new user meets it: Debian's Chromium (headless, never a
// downloaded browser) driven by playwright-core, against the live demo (scripts/browser-test.sh
// runs it from scripts/demo.sh with the demo's data). Screenshots go to $ARTIFACTS.
//
// Env: DASHBOARD_URL, DEVELOPER_TOKEN (a ServiceAccount with a Role in DEMO_NAMESPACE only),
// NOBODY_TOKEN (a user without any rights), DEMO_NAMESPACE, ARTIFACTS.
'use strict';
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { chromium } = require('playwright-core');

const url = process.env.DASHBOARD_URL.replace(/\/$/, '');
const origin = new URL(url).origin;
const ns = process.env.DEMO_NAMESPACE;
const artifacts = process.env.ARTIFACTS || fs.mkdtempSync(path.join(os.tmpdir(), 'dashboard-shots-'));
fs.mkdirSync(artifacts, { recursive: true });

const step = (name) => console.log(`-- ${name}`);
const shot = (page, name) => page.screenshot({ path: path.join(artifacts, `${name}.png`), fullPage: true });

async function login(page, token) {
  await page.goto(`${url}/endpoints`);
  assert.match(page.url(), /\/ui\/login$/, 'without a session the dashboard sends you to the login page');
  await page.getByLabel('Bearer token').fill(token);
  await page.getByRole('button', { name: 'Log in' }).click();
  await page.waitForURL(/\/ui\/endpoints$/);
}

async function logout(page) {
  await page.getByRole('button', { name: 'Log out' }).click();
  await page.waitForURL(/\/ui\/login$/);
}

async function main() {
  const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'dashboard-chromium-'));
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: '/usr/bin/chromium',
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking',
      '--disable-component-update', '--no-first-run'],
    viewport: { width: 1280, height: 900 },
  });
  const page = context.pages()[0] || await context.newPage();
  const consoleErrors = [];
  // The 401 and 404 pages this test asks for on purpose are logged as failed loads; anything
  // else (script errors, CSP refusals: "Refused to …") fails the test.
  page.on('console', (m) => {
    if (m.type() === 'error' && !m.text().startsWith('Failed to load resource')) consoleErrors.push(m.text());
  });
  page.on('pageerror', (e) => consoleErrors.push(e.message));
  // Nothing may be fetched from anywhere but the dashboard itself.
  const foreign = [];
  page.on('request', (r) => { if (!r.url().startsWith(origin) && !r.url().startsWith('data:')) foreign.push(r.url()); });
  try {
    step('a wrong token is refused with a clear message');
    await page.goto(`${url}/login`);
    await page.getByLabel('Bearer token').fill('not-a-token');
    await page.getByRole('button', { name: 'Log in' }).click();
    await page.getByRole('alert').getByText('did not accept this token').waitFor();

    step('login as the namespace developer; the session cookie is HttpOnly and SameSite=Strict');
    await login(page, process.env.DEVELOPER_TOKEN);
    const cookies = await context.cookies();
    const session = cookies.find((c) => c.name === 'webhook_dashboard_session');
    assert.ok(session, 'a session cookie is set');
    assert.equal(session.httpOnly, true);
    assert.equal(session.sameSite, 'Strict');
    assert.ok(!session.value.includes(process.env.DEVELOPER_TOKEN.slice(0, 20)), 'the cookie is not the token');
    assert.equal(await page.evaluate(() => document.cookie), '', 'scripts cannot read the cookie');
    assert.equal(await page.evaluate(() => window.localStorage.length), 0, 'nothing in local storage');

    step('the endpoint list: this namespace only, and it refreshes by itself');
    const rows = page.locator('#endpoint-rows tr');
    await page.locator('#endpoint-rows a', { hasText: 'local-receiver' }).waitFor();
    const namespaces = await page.locator('#endpoint-rows tr td:first-child').allTextContents();
    assert.ok(namespaces.length >= 3, `the demo's endpoints are listed (${namespaces})`);
    assert.deepEqual([...new Set(namespaces)], [ns], 'only the namespace the user may read');
    const refreshed = page.waitForResponse((r) => r.url().endsWith('/ui/endpoints/rows') && r.status() === 200, { timeout: 15000 });
    await refreshed;
    assert.ok(await rows.count() >= 3);
    await shot(page, '01-endpoints');

    step('an endpoint: a real delivery with its payload and headers, signatures redacted');
    await page.locator('#endpoint-rows a', { hasText: 'local-receiver' }).click();
    await page.waitForURL(/\/endpoints\/local-receiver/);
    const firstAttempt = page.locator('#attempts tbody tr').first();
    await firstAttempt.getByText('Request and response').click();
    const payload = firstAttempt.locator('pre.payload');
    await payload.waitFor();
    const body = JSON.parse(await payload.textContent());
    assert.match(body.event_id, /^evt_/);
    assert.equal(body.webhook.id, `${ns}/local-receiver`);
    const headers = await firstAttempt.locator('pre').first().textContent();
    assert.match(headers, /x-webhook-signature: \[redacted\]/);
    assert.ok(await page.locator('#charts svg').count() === 4, 'four charts');
    assert.ok(await page.locator('#k8s-events tbody tr').count() >= 1, 'the endpoint\'s Events');
    await shot(page, '02-endpoint');

    step('send a test delivery and see it succeed');
    await page.getByRole('button', { name: 'Send test delivery' }).click();
    const result = page.locator('#test-result');
    await result.waitFor();
    assert.match(await result.textContent(), /Test delivered: HTTP 200/);
    await shot(page, '03-test-delivery');

    step('replay a dead letter and see the WebhookReplay complete');
    await page.goto(`${url}/namespaces/${ns}/endpoints/unreachable-crm`);
    await page.locator('#dead-letters tbody tr', { hasText: 'payment.succeeded' }).first().waitFor();
    await page.getByLabel('Replay dead letters of the last').selectOption('24h');
    await page.getByRole('button', { name: 'Replay', exact: true }).click();
    await page.getByText('Created WebhookReplay').waitFor();
    const progress = page.locator('#replay-progress');
    await progress.waitFor();
    await page.locator('#replay-progress[data-phase="Complete"]').waitFor({ timeout: 60000 });
    assert.match(await progress.textContent(), /Matched\s*[1-9]/);
    await shot(page, '04-replay-complete');

    step('the security log shows the refused destination');
    await page.goto(`${url}/security`);
    const refused = page.locator('#security-events tbody tr', { hasText: 'refused-destination' });
    await refused.first().waitFor();
    assert.match(await refused.first().textContent(), /destination_refused/);
    assert.match(await refused.first().textContent(), /127\.0\.0\.66/);
    await shot(page, '05-security-log');

    step('crafted requests: another namespace, no CSRF token, another origin');
    const other = await page.request.get(`${url}/namespaces/pitchey/endpoints/billing`);
    assert.equal(other.status(), 404, 'an endpoint of another namespace is not found');
    assert.ok(!(await other.text()).includes('billing.example.com'));
    const noCsrf = await page.request.post(`${url}/namespaces/${ns}/endpoints/local-receiver/suspend`);
    assert.equal(noCsrf.status(), 403, 'a POST without the CSRF token is refused');
    const csrf = JSON.parse(await page.locator('body').getAttribute('hx-headers'))['X-CSRF-Token'];
    const crossSite = await page.request.post(`${url}/namespaces/${ns}/endpoints/local-receiver/suspend`,
      { headers: { 'X-CSRF-Token': csrf, Origin: 'http://evil.example' } });
    assert.equal(crossSite.status(), 403, 'a POST from another origin is refused');
    const otherNs = await page.request.post(`${url}/namespaces/pitchey/endpoints/billing/suspend`,
      { headers: { 'X-CSRF-Token': csrf } });
    assert.equal(otherNs.status(), 404, 'an action on another namespace is refused as not found');

    step('a narrow screen');
    await page.setViewportSize({ width: 390, height: 844 });
    await page.goto(`${url}/endpoints`);
    await shot(page, '06-endpoints-narrow');
    await page.setViewportSize({ width: 1280, height: 900 });

    step('logout ends the session');
    await logout(page);
    const after = await page.request.get(`${url}/endpoints`, { maxRedirects: 0 });
    assert.equal(after.status(), 303, 'the old session is gone');

    step('a user without rights sees nothing of the namespace');
    await login(page, process.env.NOBODY_TOKEN);
    assert.equal(await page.locator('#endpoint-rows a').count(), 0);
    assert.ok(!(await page.content()).includes(ns), 'the namespace is not named anywhere');
    const direct = await page.goto(`${url}/namespaces/${ns}/endpoints/local-receiver`);
    assert.equal(direct.status(), 404);
    await page.goto(`${url}/subscriptions`);
    assert.ok(!(await page.content()).includes(ns));
    await page.goto(`${url}/security`);
    assert.ok(!(await page.content()).includes('refused-destination'));
    await page.goto(`${url}/endpoints`);
    await shot(page, '07-no-rights');

    assert.deepEqual(foreign, [], 'no request left the dashboard\'s origin');
    assert.deepEqual(consoleErrors, [], 'no script errors (CSP violations included)');
    console.log(`browser test passed; screenshots in ${artifacts}`);
  } catch (error) {
    await shot(page, 'failure').catch(() => {});
    fs.writeFileSync(path.join(artifacts, 'failure.html'), await page.content().catch(() => ''));
    throw error;
  } finally {
    await context.close();
    fs.rmSync(userDataDir, { recursive: true, force: true });
  }
}

main().catch((error) => { console.error(error); process.exit(1); });
