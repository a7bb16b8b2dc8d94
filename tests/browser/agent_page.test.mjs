// The appliance updates page (docs/agent/web.md) in Chromium: the first-start setup with bad
// input refused next to the right field, sign-in, the status (installed versions, agent version,
// system time), "Check for updates" and the available updates in install order with their
// reasons, sign-out, a wrong password, the account pages (own password: a wrong current password
// and new passwords that differ, each next to its field; accounts: a bad name next to its field,
// then a read-only account added). Run by agent_page_test.sh, which starts the stack and the
// daemon; see docs/browser-tests.md.
//   UPKEEP_SETUP_TOKEN_FILE   the one-time setup token (from the daemon's log; never printed)
//   UPKEEP_EXPECT_PLAN_FILE   `appliance-agent --json check` output: the plan the page must show
import fs from 'node:fs';
import { kAdmin, kPassword, signIn } from './lib/agent_session.mjs';
import { runBrowserTest } from './lib/harness.mjs';

const kCheckWaitMs = 30_000;

await runBrowserTest('agent_page', async (t) => {
  const { page } = t;
  const token = fs.readFileSync(process.env.UPKEEP_SETUP_TOKEN_FILE, 'utf8').trim();
  const expected = JSON.parse(fs.readFileSync(process.env.UPKEEP_EXPECT_PLAN_FILE, 'utf8')).plan;
  t.check(/^[0-9a-f]{32}$/.test(token), 'UPKEEP_SETUP_TOKEN_FILE holds no setup token');
  // Refused forms come back as the form again (200: no failed load in the console) with the
  // message next to the field.

  // Submits the setup form with `values` and expects it back with `status` and a message next
  // to `label` (and no message next to the other fields).
  const setupRefused = async (what, values, status, label) => {
    t.step(`setup: ${what}`);
    await t.fill(values);
    const code = await t.submit('Create the administrator');
    t.check(code === status, `${what}: expected ${status}, got ${code}`);
    t.check(new URL(page.url()).pathname === '/setup', `${what}: left the setup page (${page.url()})`);
    for (const l of ['Setup token', 'Administrator name', 'Password', 'Password again']) {
      const m = await t.fieldMessage(l);
      if (l === label) {
        t.check(m.text !== '', `${what}: no message next to "${l}"`);
        t.check(m.invalidAttr, `${what}: "${l}" is not marked aria-invalid`);
        t.note(`${code}: "${m.text}" next to "${l}" (${m.via})`);
      } else {
        t.check(m.text === '', `${what}: a message next to "${l}" too: "${m.text}"`);
      }
    }
    t.check(!(await page.content()).includes(token), `${what}: the page shows the setup token`);
  };

  t.step('GET /: before setup, sent to /setup');
  let code = await t.goto('/');
  t.check(code === 200 && new URL(page.url()).pathname === '/setup', `GET / ended at ${page.url()} (${code})`);
  t.check((await page.title()) === 'Setup - Upkeep appliance', `unexpected title "${await page.title()}"`);
  t.check((await t.fieldMessage('Setup token')).text === '', 'the fresh setup form already shows an error');

  await setupRefused('a short password', {
    'Setup token': token, 'Administrator name': kAdmin, Password: 'short', 'Password again': 'short',
  }, 200, 'Password');
  await setupRefused('passwords that differ', {
    'Setup token': token, 'Administrator name': kAdmin, Password: kPassword, 'Password again': `${kPassword}x`,
  }, 200, 'Password again');
  await setupRefused('a wrong setup token', {
    'Setup token': '0123456789abcdef0123456789abcdef', 'Administrator name': kAdmin, Password: kPassword,
    'Password again': kPassword,
  }, 200, 'Setup token');

  t.step('setup: the real token');
  await t.fill({ 'Setup token': token, 'Administrator name': kAdmin, Password: kPassword, 'Password again': kPassword });
  code = await t.submit('Create the administrator');
  t.check(code === 200 && new URL(page.url()).pathname === '/login', `setup ended at ${page.url()} (${code})`);
  const created = (await page.locator('p.ok').first().textContent()) || '';
  t.check(/administrator was created/i.test(created), `no "administrator was created" note: "${created}"`);

  t.step('GET /setup after setup: sent to /login');
  code = await t.goto('/setup');
  t.check(new URL(page.url()).pathname === '/login', `GET /setup after setup ended at ${page.url()} (${code})`);

  t.step('sign in: the updates page');
  await signIn(t);
  t.check((await page.title()) === 'Updates - Upkeep appliance', `unexpected title "${await page.title()}"`);
  const header = (await page.locator('header').textContent()) || '';
  t.check(header.includes(`Signed in as ${kAdmin}`), `the header does not name the account: "${header.trim()}"`);

  const installed = await page.locator('#installed tr').evaluateAll((trs) =>
    trs.slice(1).map((tr) => [...tr.querySelectorAll('td')].map((td) => td.textContent.trim()).join(' ')));
  t.note(`installed: ${installed.join(', ')}`);
  t.check(installed.join(',') === 'base base 1.0.0,software software 7.0.0',
    `installed versions: "${installed.join(',')}", expected base 1.0.0 and software 7.0.0`);
  const agentVersion = ((await page.locator('#agent-version').textContent()) || '').trim();
  t.check(/^\d+\.\d+\.\d+/.test(agentVersion), `no agent version: "${agentVersion}"`);
  const time = ((await page.locator('#system-time').textContent()) || '').trim();
  t.check(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d.*Z \((synchronised|NOT synchronised|unknown)\)$/.test(time),
    `the system time line is "${time}"`);
  const shown = Date.parse(time.split(' ')[0]);
  t.check(Math.abs(shown - Date.now()) < 120_000, `the system time ${time} is far from the test's clock`);
  t.note(`agent ${agentVersion}; system time ${time}`);
  const lastBefore = ((await page.locator('#last-check').textContent()) || '').trim();
  t.note(`last check: ${lastBefore}`);

  // The last check's time has whole seconds: press the button in a later second than it.
  const before = Date.parse(lastBefore.split(' ')[0]);
  if (!Number.isNaN(before)) await page.waitForTimeout(Math.max(0, Math.min(2000, before + 1100 - Date.now())));

  t.step('Check for updates: wait until the reloaded page shows a new check');
  code = await t.submit('Check for updates');
  t.check(code === 200 && new URL(page.url()).pathname === '/', `the check ended at ${page.url()} (${code})`);
  const asked = ((await page.locator('p[role=status]').textContent()) || '').trim();
  t.check(/asked to check/i.test(asked), `no note that a check was asked for: "${asked}"`);
  const deadline = Date.now() + kCheckWaitMs;
  let lastAfter = lastBefore;
  for (;;) {
    lastAfter = ((await page.locator('#last-check').textContent()) || '').trim();
    if (lastAfter !== lastBefore) break;
    t.check(Date.now() < deadline, `the page still shows the old check after ${kCheckWaitMs / 1000} s: "${lastAfter}"`);
    await page.waitForTimeout(500);
    code = await t.goto('/');
    t.check(code === 200, `reloading / answered ${code}`);
  }
  t.note(`last check: ${lastAfter}`);
  t.check(/ ok, \d+ update\(s\) to install$/.test(lastAfter), `the check did not succeed: "${lastAfter}"`);

  t.step('the available updates, in install order, as `appliance-agent check` has them');
  const rows = await page.locator('#plan table tr').evaluateAll((trs) =>
    trs.slice(1).map((tr) => [...tr.querySelectorAll('td')].map((td) => td.textContent.trim())));
  const listed = rows.map((r) => `${r[1]} ${r[2]} ${r[3]} ${r[4]}: ${r[5]}`);
  const want = expected.map((p) => `${p.name} ${p.kind} ${p.version} ${p.state}: ${p.reason || ''}`);
  for (const l of listed) t.note(l);
  t.check(JSON.stringify(listed) === JSON.stringify(want),
    `the page's plan differs from appliance-agent check:\n  page:  ${listed.join(' | ')}\n  check: ${want.join(' | ')}`);
  t.check(rows.every((r, i) => r[0] === String(i + 1)), 'the plan rows are not numbered 1..n');
  const order = rows.filter((r) => r[4] !== 'installed').map((r) => `${r[1]} ${r[3]}`).join(',');
  t.check(order === 'base 2.0.0,software 7.1.0,software 8.0.0', `the updates to install: ${order}`);
  t.check(rows.filter((r) => r[4] === 'next').length === 1, 'not exactly one step is "next"');
  t.check(rows.filter((r) => r[4] === 'waiting' || r[4] === 'blocked').every((r) => r[5] !== ''),
    'a step that cannot be installed yet does not say why');
  const lastCheckLine = lastAfter;

  t.step('the status JSON agrees (same session)');
  const api = await page.evaluate(async () => {
    const r = await fetch('/api/v1/status', { credentials: 'same-origin' });
    return { status: r.status, body: await r.json() };
  });
  t.check(api.status === 200, `/api/v1/status answered ${api.status}`);
  t.check(api.body.plan.map((p) => `${p.name} ${p.version}`).join(',') === expected.map((p) => `${p.name} ${p.version}`).join(','),
    'the status JSON plan differs from the page');

  t.step('sign out: back at /login; / sends there again');
  code = await t.submit('Sign out');
  t.check(new URL(page.url()).pathname === '/login', `sign-out ended at ${page.url()} (${code})`);
  code = await t.goto('/');
  t.check(new URL(page.url()).pathname === '/login', `GET / after sign-out ended at ${page.url()} (${code})`);

  t.step('sign in with a wrong password: the message next to the password field');
  await t.fill({ 'Account name': kAdmin, Password: `${kPassword}-wrong` });
  code = await t.submit('Sign in');
  t.check(code === 200, `a wrong password: expected the form again (200), got ${code}`);
  const m = await t.fieldMessage('Password');
  t.check(m.text !== '', 'a wrong password: no message next to the password field');
  t.check((await t.field('Account name').inputValue()) === kAdmin, 'a wrong password: the name was not kept');
  t.check((await t.field('Password').inputValue()) === '', 'a wrong password: the password was sent back');
  t.note(`${code}: "${m.text}" (${m.via})`);

  // The final state, for the harness's screenshot: the updates page after the check.
  t.step('sign in again: the updates page after the check');
  await signIn(t);
  t.note(`last check: ${((await page.locator('#last-check').textContent()) || '').trim()} (after the check: ${lastCheckLine})`);

  // The account pages: refused input next to its field, then a change that works.
  const refusedAt = async (what, button, label) => {
    const status = await t.submit(button);
    t.check(status === 200, `${what}: answered ${status}`);
    const m = await t.fieldMessage(label);
    t.check(m.text !== '', `${what}: no message next to "${label}"`);
    t.note(`${what}: "${m.text}" next to "${label}"`);
  };
  t.step('your account: a wrong current password, then new passwords that differ');
  code = await t.goto('/account');
  t.check(code === 200 && (await page.title()) === 'Your account - Upkeep appliance', `GET /account: ${code}, "${await page.title()}"`);
  await t.fill({ 'Current password': 'not the password 1', 'New password': 'another long password 8',
    'New password again': 'another long password 8' });
  await refusedAt('a wrong current password', 'Change the password', 'Current password');
  await t.fill({ 'Current password': kPassword, 'New password': 'another long password 8',
    'New password again': 'another long password 9' });
  await refusedAt('new passwords that differ', 'Change the password', 'New password again');

  t.step('accounts: a bad name refused next to the field, then a read-only account added');
  code = await t.goto('/accounts');
  t.check(code === 200 && (await page.title()) === 'Accounts - Upkeep appliance', `GET /accounts: ${code}`);
  await t.fill({ Name: 'Bad Name', 'Initial password': 'viewer password 123', 'Initial password again': 'viewer password 123' });
  await refusedAt('a bad account name', 'Add the account', 'Name');
  await t.fill({ Name: 'viewer', 'Initial password': 'viewer password 123', 'Initial password again': 'viewer password 123' });
  code = await t.submit('Add the account');
  t.check(code === 200 && new URL(page.url()).pathname === '/accounts', `adding an account ended at ${page.url()} (${code})`);
  const accounts = ((await page.locator('#accounts').textContent()) || '').replace(/\s+/g, ' ');
  t.check(/viewer\s*read-only/.test(accounts), `the new account is not listed: "${accounts}"`);

  // The final state, for the screenshot: the updates page.
  code = await t.goto('/');
  t.check(code === 200, `GET / answered ${code}`);
});
