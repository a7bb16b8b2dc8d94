// "Install this update" on the appliance updates page (docs/agent/web.md) in Chromium, in two
// runs that agent_install_test.sh starts (UPKEEP_PART):
//   install   first-start setup, sign-in, "Install now" on the plan's last step; the job page's
//             progress is watched to the end (the phases seen and the highest percent are
//             recorded; every step's phases are in the job's log), then the installed versions
//             on the updates page. Screenshot agent_install.png.
//   rollback  sign-in, "Check for updates" until the plan names UPKEEP_FAIL_STEP (a release the
//             script published whose health check fails), "Install now" on it: the job fails, its
//             result names the health check and the rollback, the history shows the rollback and
//             the installed version is unchanged. Screenshot agent_rollback.png.
//   UPKEEP_SETUP_TOKEN_FILE   the one-time setup token (install run)
//   UPKEEP_EXPECT_INSTALLED   "name version,name version" the page must show after the run
//   UPKEEP_FAIL_STEP          "name version" of the failing release (rollback run)
import { runBrowserTest } from './lib/harness.mjs';
import { setupAndSignIn, signIn } from './lib/agent_session.mjs';

const part = process.env.UPKEEP_PART;
const kJobWaitMs = 120_000;
const kCheckWaitMs = 45_000;

async function installed(page) {
  return page.locator('#installed tr').evaluateAll((trs) =>
    trs.slice(1).map((tr) => [...tr.querySelectorAll('td')].map((td) => td.textContent.trim())));
}

function expectInstalled(t, rows) {
  for (const want of (process.env.UPKEEP_EXPECT_INSTALLED || '').split(',').filter(Boolean)) {
    const [name, version] = want.split(' ');
    const row = rows.find((r) => r[0] === name);
    t.check(row && row[2] === version, `the page shows ${name} ${row ? row[2] : '(absent)'}, not ${version}`);
  }
}

// On a job page: polls what job.js shows until the job has finished. Returns what was seen.
async function watchJob(t) {
  const { page } = t;
  const seen = { phases: [], maxPercent: 0, state: '' };
  const deadline = Date.now() + kJobWaitMs;
  while (Date.now() < deadline) {
    const s = await page.evaluate(() => ({
      state: document.getElementById('job-state').textContent.trim(),
      phase: document.getElementById('job-phase').textContent.trim(),
      value: Number(document.getElementById('job-progress').value || 0),
    }));
    if (s.phase && seen.phases[seen.phases.length - 1] !== s.phase) seen.phases.push(s.phase);
    seen.maxPercent = Math.max(seen.maxPercent, s.value);
    seen.state = s.state;
    if (s.state === 'succeeded' || s.state === 'failed') return seen;
    await page.waitForTimeout(150);
  }
  t.fail(`the job did not finish within ${kJobWaitMs / 1000} s (state ${seen.state})`);
  return seen;
}

async function installNow(t, label) {
  const { page } = t;
  const row = page.locator('#plan tr', { hasText: label }).first();
  t.check((await row.count()) === 1, `the plan has no row for ${label}`);
  const loaded = page.waitForEvent('load');
  await row.getByRole('button', { name: 'Install now', exact: true }).click();
  await loaded;
  t.check(/^\/jobs\/\d+$/.test(new URL(page.url()).pathname), `"Install now" ended at ${page.url()}`);
  t.note(`job page ${new URL(page.url()).pathname}: ${(await page.locator('h1').textContent()).trim()}`);
}

if (part === 'install') {
  await runBrowserTest('agent_install', async (t) => {
    const { page } = t;
    await setupAndSignIn(t);
    t.step('the plan: an "Install now" per step not installed');
    const steps = await page.locator('#plan tr').evaluateAll((trs) =>
      trs.slice(1).map((tr) => [...tr.querySelectorAll('td')].map((td) => td.textContent.trim())));
    const pending = steps.filter((r) => r[4] !== 'installed');
    t.check(pending.length >= 2, `the plan has ${pending.length} step(s) to install: ${JSON.stringify(steps)}`);
    const last = pending[pending.length - 1];
    const label = `${last[1]} ${last[3]}`;
    t.note(`plan: ${pending.map((r) => `${r[1]} ${r[3]} (${r[4]})`).join(', ')}`);
    t.check(last[6].includes(`installs the ${pending.length - 1} step`), `the last step does not say it installs the ones before it: "${last[6]}"`);

    t.step(`"Install now" on the last step, ${label}`);
    await installNow(t, `${last[1]}${last[2]}${last[3]}`);
    const seen = await watchJob(t);
    t.note(`phases seen: ${seen.phases.join(' -> ')}; highest percent ${seen.maxPercent}`);
    t.check(seen.state === 'succeeded', `the job ${seen.state}: ${await page.locator('#job-result').textContent()}`);
    const result = (await page.locator('#job-result').textContent()).trim();
    t.note(`result: ${result}`);
    t.check(result.endsWith(`${label} installed`), `unexpected result "${result}"`);
    t.check(seen.maxPercent === 100, `the progress bar ended at ${seen.maxPercent}%`);
    const log = await page.locator('#job-lines').textContent();
    for (const r of pending) {
      for (const phase of ['download', 'verify', 'stage', 'activate', 'health_check', 'commit']) {
        t.check(log.includes(`${r[1]} ${r[3]}: phase ${phase}`), `the job's log lacks "${r[1]} ${r[3]}: phase ${phase}"`);
      }
    }
    t.step('the updates page: the installed versions');
    await t.goto('/');
    expectInstalled(t, await installed(page));
    const jobs = (await page.locator('#jobs').textContent()) || '';
    t.check(jobs.includes(`Install ${label}`) && jobs.includes('succeeded'), `"Recent actions" lacks the job: ${jobs}`);
    t.check((await page.locator('#plan').textContent()).includes('Up to date'), 'the plan still lists steps');
  });
} else if (part === 'rollback') {
  await runBrowserTest('agent_rollback', async (t) => {
    const { page } = t;
    const failStep = process.env.UPKEEP_FAIL_STEP;
    const [failName, failVersion] = failStep.split(' ');
    t.step('sign in');
    await t.goto('/login');
    await signIn(t);
    const before = await installed(page);
    const running = (before.find((r) => r[0] === failName) || [])[2];
    t.note(`${failName} ${running} is installed`);

    t.step(`"Check for updates" until the plan names ${failStep}`);
    const code = await t.submit('Check for updates');
    t.check(code === 200, `the check answered ${code}`);
    const deadline = Date.now() + kCheckWaitMs;
    let found = false;
    while (!found && Date.now() < deadline) {
      await page.waitForTimeout(1000);
      await t.goto('/');
      found = (await page.locator('#plan tr', { hasText: `${failName}software${failVersion}` }).count()) > 0;
    }
    t.check(found, `the plan does not name ${failStep} within ${kCheckWaitMs / 1000} s`);

    t.step(`"Install now" on ${failStep}: its health check fails`);
    await installNow(t, `${failName}software${failVersion}`);
    const seen = await watchJob(t);
    t.note(`phases seen: ${seen.phases.join(' -> ')}`);
    t.check(seen.state === 'failed', `the job ${seen.state}, not failed`);
    const result = (await page.locator('#job-result').textContent()).trim();
    t.note(`result: ${result}`);
    t.check(result.includes(`${failStep}: health check exited`), `the result does not name the health check: "${result}"`);
    t.check(result.includes(`rolled back to ${running}`), `the result does not name the rollback to ${running}: "${result}"`);
    t.check((await page.locator('#job-result').getAttribute('class')) === 'error', 'the result is not shown as an error');
    const log = await page.locator('#job-lines').textContent();
    t.check(log.includes(`${failStep}: phase rollback`), 'the job\'s log lacks the rollback phase');

    t.step('the updates page: history and installed versions');
    await t.goto('/');
    const row = page.locator('#history tr.history-rollback').first();
    t.check((await row.count()) === 1, 'the history has no rollback row');
    const text = (await row.textContent()).trim();
    t.note(`history: ${text.replace(/\s+/g, ' ').slice(0, 200)}`);
    t.check(text.includes(`${failStep} failed`) && text.includes(`rolled back to ${running}`), `the rollback row says "${text}"`);
    t.check((await row.locator('details').count()) === 1, 'the rollback row has no log tail');
    await row.locator('summary').click();
    t.check((await row.locator('pre').textContent()).includes('did not come up'), 'the log tail lacks the health check\'s output');
    const after = await installed(page);
    t.check((after.find((r) => r[0] === failName) || [])[2] === running, `${failName} is not on ${running} any more`);
    const plan = await page.locator('#plan').textContent();
    t.check(plan.includes('Not installable: its install failed and was rolled back'), 'the plan does not mark the failed step');
  });
} else {
  console.error('FAIL: UPKEEP_PART must be install or rollback');
  process.exit(1);
}
