// The appliance page's backups and endpoint clients panels (docs/agent/web.md "Backups on the
// page", "Clients on the page") in Chromium: a password-protected backup (passwords that differ
// refused next to the field first), its job to the end, the download (saved, not empty, the
// .upkbak magic), the backed-up configuration file changed on disk, a restore with a wrong password
// (the job fails, the file is unchanged) and with the right one (the file is restored), the vault
// key export (a wrong account password refused next to the field, then a downloaded file), and the
// same backup uploaded again and restored, and the clients panel (counts, a throttle refused then
// applied, the CSV export).
// Run by agent_backup_test.sh; see docs/browser-tests.md.
//   UPKEEP_SETUP_TOKEN_FILE  the one-time setup token      UPKEEP_CONF_FILE  a backed-up file
//   UPKEEP_DOWNLOAD_DIR      where downloads are saved     UPKEEP_CLIENTS    endpoint clients
import fs from 'node:fs';
import path from 'node:path';
import { runBrowserTest } from './lib/harness.mjs';
import { kPassword, setupAndSignIn } from './lib/agent_session.mjs';

const kBackupPassword = 'backup-pass-0123';
const kExportPassword = 'export-pass-0123';
const kMagic = 'UPKBAK1\n';
const kJobWaitMs = 60_000;

await runBrowserTest('agent_backup', async (t) => {
  const { page } = t;
  const conf = process.env.UPKEEP_CONF_FILE;
  const downloads = process.env.UPKEEP_DOWNLOAD_DIR;
  const clients = Number(process.env.UPKEEP_CLIENTS || 0);
  const original = fs.readFileSync(conf, 'utf8');

  // On a job's page: waits until it has finished; returns {state, result}.
  const finishedJob = async (what) => {
    t.check(/^\/jobs\/\d+$/.test(new URL(page.url()).pathname), `${what}: not on a job page (${page.url()})`);
    await page.waitForFunction(() => {
      const s = document.getElementById('job-state');
      return s && (s.textContent === 'succeeded' || s.textContent === 'failed');
    }, undefined, { timeout: kJobWaitMs });
    const state = await page.locator('#job-state').textContent();
    const result = (await page.locator('#job-result').textContent()) || '';
    t.note(`${what}: ${state}: ${result}`);
    return { state, result };
  };
  const downloadVia = async (click) => {
    const started = page.waitForEvent('download', { timeout: kJobWaitMs });
    await click();
    const d = await started;
    const failure = await d.failure();
    t.check(!failure, `download ${d.suggestedFilename()} failed: ${failure}`);
    const file = path.join(downloads, d.suggestedFilename());
    await d.saveAs(file);
    return file;
  };
  const checkMagic = (file, what) => {
    const bytes = fs.readFileSync(file);
    t.check(bytes.length > kMagic.length, `${what}: ${bytes.length} bytes`);
    t.check(bytes.subarray(0, 8).toString('latin1') === kMagic, `${what}: no .upkbak magic at the start`);
    t.note(`${what}: ${path.basename(file)}, ${bytes.length} bytes`);
  };

  // Links with a download attribute may report their request as aborted once saved.
  t.expectAbortedNavigationTo('/download');
  t.expectAbortedNavigationTo('/clients/export.csv');
  await setupAndSignIn(t);
  t.check(await page.locator('#backups h2').count() === 1, 'no Backups section on the page');
  t.check((await page.locator('#backups-none').count()) === 1, 'a fresh appliance lists backups already');

  t.step('create a backup: passwords that differ are refused next to the field');
  await t.fill({ 'Backup password (optional)': kBackupPassword, 'Backup password again': `${kBackupPassword}x` });
  await t.field('Include the vault key').check();
  let code = await t.submit('Create a backup');
  t.check(code === 200, `expected the form again (200), got ${code}`);
  let m = await t.fieldMessage('Backup password again');
  t.check(m.text.includes('the passwords differ'), `no "the passwords differ" next to the field: "${m.text}"`);
  t.check(m.invalidAttr, '"Backup password again" is not marked aria-invalid');
  t.check((await t.fieldMessage('Backup password (optional)')).text === '', 'a message next to the first password too');
  t.check(await t.field('Include the vault key').isChecked(), 'the vault key choice was not kept');

  t.step('create a backup with a password and the vault key: the job to the end');
  await t.fill({ 'Backup password (optional)': kBackupPassword, 'Backup password again': kBackupPassword });
  code = await t.submit('Create a backup');
  t.check(code === 200, `the backup post ended with ${code}`);
  let job = await finishedJob('backup');
  t.check(job.state === 'succeeded', `the backup job failed: ${job.result}`);
  t.check(job.result.includes('encrypted'), `the backup is not encrypted: ${job.result}`);

  t.step('the list and the download');
  await t.goto('/');
  const rows = page.locator('#backup-list tr[id^="backup-"]');
  t.check((await rows.count()) === 1, `expected one backup in the list, got ${await rows.count()}`);
  const row = (await rows.first().textContent()) || '';
  t.check(row.includes('yes (password)') && row.includes('vault key'), `the row does not say encrypted/vault key: ${row}`);
  const backupFile = await downloadVia(() => rows.first().getByRole('link', { name: 'Download', exact: true }).click());
  checkMagic(backupFile, 'the backup');

  t.step('the configuration changes on disk; a restore with a wrong password changes nothing');
  fs.writeFileSync(conf, 'setting=changed-by-the-test\n');
  await Promise.all([page.waitForURL(/\/restore$/, { waitUntil: 'load' }),
    rows.first().getByRole('link', { name: 'Restore…', exact: true }).click()]);
  await t.fill({ "The backup's password": 'not-the-password-1' });
  await t.field('Yes, replace the current configuration with this backup').check();
  code = await t.submit('Restore this backup');
  job = await finishedJob('restore (wrong password)');
  t.check(job.state === 'failed' && job.result.includes('wrong password'), `expected "wrong password": ${job.state} ${job.result}`);
  t.check(fs.readFileSync(conf, 'utf8') === 'setting=changed-by-the-test\n', 'a failed restore changed the file');

  t.step('restore with the right password: the file comes back');
  await t.goto('/');
  await Promise.all([page.waitForURL(/\/restore$/, { waitUntil: 'load' }),
    page.locator('#backup-list tr[id^="backup-"]').first().getByRole('link', { name: 'Restore…', exact: true }).click()]);
  await t.fill({ "The backup's password": kBackupPassword });
  await t.field('Yes, replace the current configuration with this backup').check();
  await t.submit('Restore this backup');
  job = await finishedJob('restore');
  t.check(job.state === 'succeeded', `the restore failed: ${job.result}`);
  t.check(fs.readFileSync(conf, 'utf8') === original, `the file was not restored: "${fs.readFileSync(conf, 'utf8')}"`);

  t.step('vault key export: a wrong account password is refused next to the field');
  await t.goto('/');
  await t.fill({ 'Your account password': 'not-my-password-1', 'Export password': kExportPassword,
    'Export password again': kExportPassword });
  code = await t.submit('Export the vault key');
  t.check(code === 200, `expected the form again (200), got ${code}`);
  m = await t.fieldMessage('Your account password');
  t.check(m.text.includes('wrong account name or password'), `no refusal next to the account password: "${m.text}"`);

  t.step('vault key export: the right account password gives a protected file');
  await t.fill({ 'Your account password': kPassword, 'Export password': kExportPassword,
    'Export password again': kExportPassword });
  t.expectAbortedNavigationTo('/backups/vault-key');
  const vaultFile = await downloadVia(() => page.getByRole('button', { name: 'Export the vault key', exact: true }).click());
  checkMagic(vaultFile, 'the vault key export');
  t.check(!fs.readFileSync(vaultFile).includes('vault-key-of-the-browser-test'), 'the export holds the key in the clear');

  t.step('restore from a file: the downloaded backup uploaded again');
  fs.writeFileSync(conf, 'setting=changed-again\n');
  await t.goto('/');
  await t.field('Backup file (.upkbak)').setInputFiles(backupFile);
  await Promise.all([page.waitForURL(/\/backup-uploads\/[0-9a-f]{16}$/, { waitUntil: 'load', timeout: kJobWaitMs }),
    page.getByRole('button', { name: 'Upload the backup file', exact: true }).click()]);
  await t.fill({ "The backup's password": kBackupPassword });
  await t.field('Yes, replace the current configuration with this backup').check();
  await t.submit('Restore this backup');
  job = await finishedJob('restore (uploaded file)');
  t.check(job.state === 'succeeded', `the restore of the uploaded file failed: ${job.result}`);
  t.check(fs.readFileSync(conf, 'utf8') === original, `the file was not restored: "${fs.readFileSync(conf, 'utf8')}"`);

  if (clients > 0) {
    t.step('endpoint clients: counts, throttles, export');
    await t.goto('/');
    t.check((await page.locator('#clients h2').count()) === 1, 'no Endpoint clients section');
    const total = Number(await page.locator('#clients-total').textContent());
    t.check(total === clients, `expected ${clients} clients, the page says ${total}`);
    let sum = 0;
    for (const s of ['current', 'upgrade-pending', 'upgrading', 'failed', 'offline']) {
      sum += Number(await page.locator(`#clients-${s}`).textContent());
    }
    t.check(sum === clients, `the counts by state add up to ${sum}, not ${clients}`);
    const label = 'Clients upgrading at once (1 to 100000)';
    await t.fill({ [label]: '0' });
    code = await t.submit('Apply the throttles');
    t.check(code === 200, `expected the form again (200), got ${code}`);
    m = await t.fieldMessage(label);
    t.check(m.text.includes('1..100000'), `no range message next to the field: "${m.text}"`);
    await t.fill({ [label]: '25' });
    await t.submit('Apply the throttles');
    job = await finishedJob('throttles');
    t.check(job.state === 'succeeded', `the settings job failed: ${job.result}`);
    // The daemon hands the settings to the relay at the end of the cycle that ran the job.
    let live = '';
    for (let i = 0; i < 20 && live !== '25'; ++i) {
      await t.goto('/');
      live = await t.field(label).inputValue();
      if (live !== '25') await page.waitForTimeout(500);
    }
    t.check(live === '25', `the relay did not take the new throttle: ${live}`);
    const csv = await downloadVia(() => page.locator('#export-csv').click());
    const text = fs.readFileSync(csv, 'utf8');
    t.check(text.split('\n').filter((l) => l.includes('endpoint-')).length === clients, `the CSV export: ${text.slice(0, 300)}`);
    t.note(`clients.csv: ${text.split('\n')[0]}`);
  }
  await t.goto('/');
});
