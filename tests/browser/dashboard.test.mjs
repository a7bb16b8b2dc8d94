// The updater's support dashboard (docs/dashboard.md) in Chromium: the first-start setup with the
// one-time token the updater logged (a wrong token first: refused next to its field), finding the
// appliance, reading its upgrade path (an intermediate step before the last), pausing the rollout
// on the fleet page (its inline SVG charts present) and re-enabling a withheld download.
// Run by dashboard_test.sh, which starts the stack; see docs/browser-tests.md.
import fs from 'node:fs';
import { runBrowserTest } from './lib/harness.mjs';

const token = fs.readFileSync(process.env.UPKEEP_SETUP_TOKEN_FILE, 'utf8').trim();
const applianceId = process.env.UPKEEP_APPLIANCE_ID;
const password = 'a long dashboard password';

await runBrowserTest('dashboard', async (t) => {
  const { page } = t;
  // Clicks the first button named `name` and waits for the next page; its HTTP status.
  const clickFirst = async (name) => {
    const loaded = page.waitForEvent('load', { timeout: 30000 });
    await page.getByRole('button', { name, exact: true }).first().click({ timeout: 10000 });
    await loaded;
    return t.lastStatus;
  };
  const text = async (selector) => ((await page.locator(selector).first().textContent()) || '').trim();

  t.step('first start: a wrong token is refused next to its field');
  t.check((await t.goto('/dashboard/setup')) === 200, 'GET /dashboard/setup failed');
  await t.fill({ 'Setup token': '0'.repeat(32), 'Account name': 'admin',
    'Password (at least 12 bytes)': password, 'Password again': password });
  let code = await t.submit('Create the administrator');
  t.check(code === 200, `wrong token: expected the form again (200), got ${code}`);
  const m = await t.fieldMessage('Setup token');
  t.check(m.text !== '', 'wrong token: no message next to the token field');
  t.note(`wrong token: "${m.text}"`);

  t.step('first start: the token from the updater\'s log creates the admin and signs it in');
  await t.fill({ 'Setup token': token, 'Account name': 'admin',
    'Password (at least 12 bytes)': password, 'Password again': password });
  code = await t.submit('Create the administrator');
  t.check(code === 200, `setup: expected the dashboard (200) after the redirect, got ${code}`);
  t.check(/signed in as admin \(admin\)/.test(await text('nav')), 'setup: not signed in as admin');

  t.step('find the appliance by customer');
  await t.fill({ 'Appliance id, customer or licence reference': 'acme' });
  code = await t.submit('Find');
  t.check(code === 200, `search answered ${code}`);
  const link = page.locator(`#results a[href="/dashboard/appliances/${applianceId}"]`);
  t.check((await link.count()) === 1, `the results do not list ${applianceId}`);
  const loaded = page.waitForEvent('load', { timeout: 30000 });
  await link.click();
  await loaded;
  t.check((await page.title()).startsWith(`Appliance ${applianceId}`), `not the appliance page: ${await page.title()}`);

  t.step('its upgrade path: an intermediate step before the last one');
  const steps = await page.locator('#plan tr').evaluateAll((trs) =>
    trs.slice(1).map((tr) => [...tr.querySelectorAll('td')].map((td) => td.textContent.trim())));
  const path = steps.map((r) => `${r[1]} ${r[2]}`);
  t.note(`upgrade path: ${path.join(', ')}`);
  const mid = path.indexOf('software 7.1.0');
  const last = path.indexOf('software 8.0.0');
  t.check(mid >= 0 && last > mid, `expected software 7.1.0 before software 8.0.0 in "${path.join(', ')}"`);
  t.check(steps.every((r) => r[4] && r[4].length > 0), 'a step without its reason');
  const licence = await text('#licence');
  t.check(/^[0-9a-f]{16}$/.test(licence), `no licence reference recorded at enrolment: "${licence}"`);
  t.note(`licence reference ${licence}`);

  t.step('the fleet page: versions chart, the rollout, Pause');
  t.check((await t.goto('/dashboard/fleet')) === 200, 'GET /dashboard/fleet failed');
  t.check((await page.locator('svg#versions-chart rect').count()) > 0, 'no bars in the versions chart');
  const section = page.locator('section[id^="rollout-"]').first();
  const rolloutId = ((await section.getAttribute('id')) || '').replace('rollout-', '');
  t.check(/^\d+$/.test(rolloutId), 'no rollout on the fleet page');
  t.check((await text(`#rollout-${rolloutId}-state`)) === 'active', 'the rollout is not active');
  await page.getByLabel('Reason (optional)').first().fill('customer asked to wait');
  code = await clickFirst('Pause');
  t.check(code === 200, `pause answered ${code}`);
  t.check((await text(`#rollout-${rolloutId}-state`)) === 'paused', 'the rollout is not paused');
  t.note(await text('#message'));

  t.step('accounts: a short password refused next to its field, then a support account created');
  t.check((await t.goto('/dashboard/accounts')) === 200, 'GET /dashboard/accounts failed');
  await t.fill({ 'Account name': 'helpdesk', 'Initial password (at least 12 bytes)': 'short' });
  code = await t.submit('Create the account');
  t.check(code === 200, `a short password answered ${code}`);
  const short = await t.fieldMessage('Initial password (at least 12 bytes)');
  t.check(short.text !== '', 'a short password: no message next to the field');
  t.note(`a short password: "${short.text}"`);
  await t.fill({ 'Account name': 'helpdesk', 'Initial password (at least 12 bytes)': 'a long helpdesk password' });
  await page.locator('#role').selectOption('support');
  code = await t.submit('Create the account');
  t.check(code === 200, `creating the account answered ${code}`);
  const listed = ((await page.locator('#accounts').textContent()) || '').replace(/\s+/g, ' ');
  t.check(listed.includes('helpdesk'), `the new account is not listed: "${listed}"`);

  t.step('your password: a wrong current password refused next to its field');
  t.check((await t.goto('/dashboard/password')) === 200, 'GET /dashboard/password failed');
  await t.fill({ 'Current password': 'not my password at all', 'New password (at least 12 bytes)': 'another long password',
    'New password again': 'another long password' });
  code = await t.submit('Change the password');
  t.check(code === 200, `a wrong current password answered ${code}`);
  const wrong = await t.fieldMessage('Current password');
  t.check(wrong.text !== '', 'a wrong current password: no message next to the field');
  t.note(`a wrong current password: "${wrong.text}"`);

  t.step('re-enable a withheld download on the appliance page');
  t.check((await t.goto(`/dashboard/appliances/${applianceId}`)) === 200, 'appliance page failed');
  const before = await page.locator('#downloads tr').count();
  t.check(before > 1, 'no withheld download listed');
  code = await clickFirst('Re-enable download');
  t.check(code === 200, `re-enable answered ${code}`);
  const msg = await text('#message');
  t.check(/^Re-enabled the download of /.test(msg), `no confirmation: "${msg}"`);
  t.note(msg);
  const after = await page.locator('#downloads tr').count();
  t.check(after === before - 1 || (before === 2 && after === 0), `the download is still listed (${before} -> ${after} rows)`);
});
