// The updater's public download portal (docs/updater-api.md, "The portal page") in Chromium:
// the form, bad input refused with a message next to the download key field, and, when
// UPKEEP_DOWNLOAD_KEY_FILE names a real key of an enrolled appliance, its ordered updates
// (UPKEEP_EXPECT_UPDATES: "name version,name version,...") and the bundle download.
// Run by portal_test.sh, which starts the stack; see docs/browser-tests.md.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { runBrowserTest } from './lib/harness.mjs';

const kField = 'Download key';
const kCheck = 'Check the key';

await runBrowserTest('portal', async (t) => {
  const { page } = t;
  // The portal answers bad input with the form again (200) and the message next to the field;
  // a 4xx page would be a failed load in the browser's console, which fails the test.

  t.step('GET /portal: the form');
  const status = await t.goto('/portal');
  t.check(status === 200, `GET /portal answered ${status}`);
  t.check((await page.title()) === 'Upkeep download portal', `unexpected title "${await page.title()}"`);
  await t.field(kField).waitFor({ state: 'visible' });
  t.check((await t.fieldMessage(kField)).text === '', 'the fresh form already shows an error');

  t.step('submit empty: refused, with the page\'s message next to the field');
  let code = await t.submit(kCheck);
  let m = await t.fieldMessage(kField);
  t.check(code === 200, `empty: expected the form again (200), got ${code}`);
  t.check(m.text !== '', 'empty: no message next to the download key field');
  t.note(`${code}: "${m.text}" (${m.via})`);

  t.step('submit blanks only: the page\'s message next to the field');
  await t.fill({ [kField]: '   \n  ' });
  code = await t.submit(kCheck);
  m = await t.fieldMessage(kField);
  t.check(code === 200, `blanks: expected the form again (200), got ${code}`);
  t.check(m.text !== '', 'blanks: no message next to the download key field');
  t.note(`${code}: "${m.text}" (${m.via})`);

  t.step('submit garbage: a clear message next to the field, the input kept and escaped');
  const garbage = 'UPK1-this-is-not-a-key <b>bold</b> <script>alert(1)</script>';
  await t.fill({ [kField]: garbage });
  code = await t.submit(kCheck);
  m = await t.fieldMessage(kField);
  t.check(code === 200, `garbage: expected the form again (200), got ${code}`);
  t.check(m.text !== '', 'garbage: no message next to the download key field');
  t.check(/download key|key/i.test(m.text), `garbage: the message does not say what is wrong with the key: "${m.text}"`);
  t.check((await t.field(kField).inputValue()) === garbage, 'garbage: the field lost what was typed');
  t.check((await page.locator('b').count()) === 0 && (await page.locator('body script').count()) === 0,
    'garbage: the typed markup became part of the page');
  t.note(`${code}: "${m.text}" (${m.via})`);

  const keyFile = process.env.UPKEEP_DOWNLOAD_KEY_FILE;
  if (!keyFile) {
    t.note('no UPKEEP_DOWNLOAD_KEY_FILE: the offers page is not exercised');
    return;
  }
  t.step('a real download key (pasted with line breaks, as from a mail): the offers page');
  const key = fs.readFileSync(keyFile, 'utf8').trim();
  await t.fill({ [kField]: key.replace(/(.{37})/g, '$1\n') });
  code = await t.submit(kCheck);
  m = await t.fieldMessage(kField);
  t.check(code === 200, `real key: expected 200, got ${code}; message: "${m.text}"`);
  t.check(m.text === '', `real key: an error next to the field: "${m.text}"`);
  const heading = (await page.locator('h2', { hasText: 'Updates for' }).first().textContent()) || '';
  t.check(/apl-/.test(heading), `real key: no "Updates for apl-..." heading: "${heading}"`);
  const rows = await page.locator('table tbody tr').evaluateAll((trs) =>
    trs.map((tr) => [...tr.querySelectorAll('td')].map((td) => td.textContent.trim())));
  const listed = rows.map((r) => `${r[1]} ${r[2]}`).join(',');
  t.note(`${heading.trim()}: ${listed}`);
  if (process.env.UPKEEP_EXPECT_UPDATES) {
    t.check(listed === process.env.UPKEEP_EXPECT_UPDATES,
      `real key: updates "${listed}", expected "${process.env.UPKEEP_EXPECT_UPDATES}"`);
  } else {
    t.check(rows.length > 0, 'real key: the offers page lists no update');
  }

  t.step('download the bundle');
  t.expectAbortedNavigationTo('/portal/bundle');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'upkeep-portal-dl-'));
  try {
    const got = await t.download('3. Download the bundle', dir);
    const bytes = fs.statSync(got.file).size;
    t.check(/\.upkb$/.test(got.name), `the download is not a .upkb file: ${got.name}`);
    t.check(bytes > 0, 'the bundle is empty');
    t.note(`${got.name}: ${bytes} bytes`);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
  // The final state for the screenshot: the offers page (the download left it in place).
});
