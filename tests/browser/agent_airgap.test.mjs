// Air-gapped updates on the appliance updates page (docs/agent/web.md "Air-gapped updates on the
// page") in Chromium: a bad validity refused next to the field, a download key made by the daemon
// (text and QR code on the page), the key taken to the updater's public portal, the bundle
// downloaded, uploaded on the appliance page with its progress bar, the import job followed to
// the end, the installed versions, the installation report downloaded. Run by
// agent_airgap_test.sh, which starts the stack and the cut-off appliance's daemon.
//   UPKEEP_SETUP_TOKEN_FILE   the one-time setup token (from the daemon's log; never printed)
//   UPKEEP_PORTAL_URL         the portal page (http://127.0.0.1:PORT/portal)
//   UPKEEP_DOWNLOAD_DIR       where the bundle and the report are saved
//   UPKEEP_EXPECT_UPDATES     the portal's offers, "name version,..."
//   UPKEEP_EXPECT_INSTALLED   the page's installed versions after the import, "name version,..."
import path from 'node:path';
import fs from 'node:fs';
import { runBrowserTest } from './lib/harness.mjs';
import { setupAndSignIn } from './lib/agent_session.mjs';

const kValidity = 'Valid for (hours, 1 to 2160)';
const kJobWaitMs = 150_000;

await runBrowserTest('agent_airgap', async (t) => {
  const { page } = t;
  const dir = process.env.UPKEEP_DOWNLOAD_DIR;
  t.check(dir && fs.existsSync(dir), 'UPKEEP_DOWNLOAD_DIR is missing');
  await setupAndSignIn(t);

  t.step('the updates page: the air-gapped section');
  const section = page.locator('#airgap');
  t.check((await section.locator('h2').textContent()) === 'Air-gapped updates', 'no "Air-gapped updates" section');
  t.check(await page.locator('#airgap-upload').isVisible(), 'the upload form is not shown (airgap.js did not run?)');

  t.step('a validity of 0 hours: refused next to the field');
  await t.fill({ [kValidity]: '0' });
  let code = await t.submit('Make a download key');
  let m = await t.fieldMessage(kValidity);
  t.check(code === 200, `bad validity: expected the form again (200), got ${code}`);
  t.check(m.text !== '' && m.invalidAttr, 'bad validity: no message next to the field');
  t.note(`${code}: "${m.text}" (${m.via})`);

  t.step('a download key valid 24 h: made by the daemon, shown with its QR code');
  await t.fill({ [kValidity]: '24' });
  code = await t.submit('Make a download key');
  t.check(code === 200 && new URL(page.url()).pathname === '/download-key', `the key form ended at ${page.url()} (${code})`);
  // The page waits for the job (airgap.js reloads it when the key is ready).
  await page.locator('#download-key-text').waitFor({ state: 'visible', timeout: 60_000 });
  const key = ((await page.locator('#download-key-text').textContent()) || '').trim();
  t.check(key.startsWith('UPK1-'), `the page shows no download key: "${key.slice(0, 40)}"`);
  const qr = page.locator('.qr svg');
  t.check(await qr.isVisible(), 'no QR code on the key page');
  const box = await qr.boundingBox();
  t.check(box && box.width > 100 && Math.abs(box.width - box.height) < 2, `the QR code is not a visible square: ${JSON.stringify(box)}`);
  t.check((await page.locator('.qr svg path').count()) === 1, 'the QR code has no module path');
  t.note(`key ${key.slice(0, 12)}... (${key.length} characters), QR ${Math.round(box.width)} px, valid until ${await page.locator('#download-key-expires').textContent()}`);
  await page.getByRole('button', { name: 'Copy', exact: true }).click();
  await page.waitForFunction(() => document.getElementById('download-key-copy').textContent !== 'Copy', null,
    { timeout: 5000 }).catch(() => t.fail('the Copy button did nothing'));
  t.note(`Copy: "${await page.locator('#download-key-copy').textContent()}"`);

  t.step('the portal: the key, the ordered updates, the bundle');
  code = await t.goto(process.env.UPKEEP_PORTAL_URL);
  t.check(code === 200, `GET the portal answered ${code}`);
  await t.fill({ 'Download key': key });
  code = await t.submit('Check the key');
  m = await t.fieldMessage('Download key');
  t.check(code === 200 && m.text === '', `the portal refused the page's key: ${code} "${m.text}"`);
  const rows = await page.locator('table tbody tr').evaluateAll((trs) =>
    trs.map((tr) => [...tr.querySelectorAll('td')].map((td) => td.textContent.trim())));
  const listed = rows.map((r) => `${r[1]} ${r[2]}`).join(',');
  t.note(`offers: ${listed}`);
  if (process.env.UPKEEP_EXPECT_UPDATES) {
    t.check(listed === process.env.UPKEEP_EXPECT_UPDATES, `offers "${listed}", expected "${process.env.UPKEEP_EXPECT_UPDATES}"`);
  }
  t.expectAbortedNavigationTo('/portal/bundle');
  const bundle = await t.download('3. Download the bundle', dir);
  t.check(/\.upkb$/.test(bundle.name) && fs.statSync(bundle.file).size > 0, `not a bundle: ${bundle.name}`);
  t.note(`${bundle.name}: ${fs.statSync(bundle.file).size} bytes`);

  t.step('the appliance page: upload the bundle, with the progress bar');
  code = await t.goto('/');
  t.check(code === 200, `GET / answered ${code}`);
  const seen = [];
  await page.exposeFunction('upkeepProgress', (v) => { seen.push(Number(v)); });
  await page.evaluate(() => {
    const bar = document.getElementById('airgap-progress');
    new MutationObserver(() => window.upkeepProgress(bar.getAttribute('value')))
      .observe(bar, { attributes: true, attributeFilter: ['value'] });
  });
  await page.locator('#bundle').setInputFiles(bundle.file);
  const toJob = page.waitForURL(/\/jobs\/\d+$/, { timeout: 60_000 });
  await page.getByRole('button', { name: 'Upload and install', exact: true }).click();
  await toJob;
  t.note(`progress values seen: ${seen.join(', ')}`);
  t.check(seen.length > 0 && Math.max(...seen) === 100, `the progress bar did not reach 100%: ${seen.join(', ')}`);

  t.step('the import job: verify, then each install, to the end');
  const phases = new Set();
  const deadline = Date.now() + kJobWaitMs;
  let state = '';
  while (Date.now() < deadline) {
    state = ((await page.locator('#job-state').textContent()) || '').trim();
    const phase = ((await page.locator('#job-phase').textContent()) || '').trim();
    if (phase) phases.add(phase);
    if (state === 'succeeded' || state === 'failed') break;
    await page.waitForTimeout(250);
  }
  const result = ((await page.locator('#job-result').textContent()) || '').trim();
  const lines = ((await page.locator('#job-lines').textContent()) || '').trim();
  t.note(`phases seen: ${[...phases].join(', ')}`);
  t.note(`result: ${result}`);
  t.check(state === 'succeeded', `the import job ended "${state}": ${result}\n${lines}`);
  t.check(/verified/.test(result) && /installed/.test(result), `unexpected result: ${result}`);
  t.check(/verifying the bundle/.test(lines), 'the job log does not show the verification');
  t.check((await page.locator('#job-progress').getAttribute('value')) === '100' ||
    (await page.locator('#job-progress').evaluate((b) => b.value)) === 100, 'the job\'s bar is not full');

  t.step('the updates page: the bundle\'s versions, the installation report');
  code = await t.goto('/');
  t.check(code === 200, `GET / answered ${code}`);
  const installed = await page.locator('#installed tr').evaluateAll((trs) =>
    trs.slice(1).map((tr) => [...tr.querySelectorAll('td')].map((td) => td.textContent.trim())));
  const versions = installed.map((r) => `${r[0]} ${r[2]}`).join(',');
  t.note(`installed: ${versions}`);
  t.check(versions === process.env.UPKEEP_EXPECT_INSTALLED, `installed "${versions}", expected "${process.env.UPKEEP_EXPECT_INSTALLED}"`);
  t.expectAbortedNavigationTo('/airgap/report');
  const started = page.waitForEvent('download');
  await page.getByRole('link', { name: 'Download the installation report', exact: true }).click();
  const d = await started;
  const failure = await d.failure();
  t.check(!failure, `the report download failed: ${failure}`);
  const reportFile = path.join(dir, d.suggestedFilename());
  await d.saveAs(reportFile);
  const report = fs.readFileSync(reportFile, 'utf8');
  t.check(/\.json$/.test(d.suggestedFilename()) && report.length > 0, `not a report: ${d.suggestedFilename()}`);
  t.note(`report ${d.suggestedFilename()}: ${report.length} bytes`);
  // The final state for the screenshot: the updates page after the import.
  await page.locator('#airgap').scrollIntoViewIfNeeded();
});
