// The browser test harness (docs/browser-tests.md): one test = one node process that drives
// Debian's /usr/bin/chromium through playwright-core against pages served on loopback.
//
//   import { runBrowserTest } from './lib/harness.mjs';
//   await runBrowserTest('portal', async (t) => { await t.goto('/portal'); ... });
//
// Contract:
// - Environment: UPKEEP_BASE_URL (the site, e.g. http://127.0.0.1:PORT; required),
//   UPKEEP_BUILD_DIR (screenshots and traces go to BUILD_DIR/browser/; required),
//   UPKEEP_CHROMIUM (default /usr/bin/chromium), UPKEEP_BROWSER_HEADED=1 (a visible window, slowed
//   down by UPKEEP_BROWSER_SLOWMO ms), UPKEEP_BROWSER_TRACE=1 (BUILD_DIR/browser/NAME.trace.zip),
//   UPKEEP_BROWSER_TIMEOUT (the whole test, seconds; default 120).
// - Fails the test on any console message of type error (except the status line of an error page
//   the test expects: Test.allowErrorPages), any uncaught page error, any failed request, any
//   JavaScript dialog and any request to a host other than loopback (it is aborted): they are
//   listed at the end.
// - Always saves BUILD_DIR/browser/NAME.png (full page) of the final state, also on failure, and
//   closes chromium on every path (Playwright also kills it on SIGINT/SIGTERM/SIGHUP).
// - Exit status: 0 pass, 1 fail.
// Every wait is bounded: actions 15 s, navigations 30 s, the whole test UPKEEP_BROWSER_TIMEOUT.
import fs from 'node:fs';
import path from 'node:path';
import { chromium } from 'playwright-core';

const kActionMs = 15_000;
const kNavigationMs = 30_000;

export class TestFailure extends Error {}

function isLoopback(url) {
  let u;
  try {
    u = new URL(url);
  } catch {
    return false;
  }
  if (u.protocol === 'data:' || u.protocol === 'blob:' || u.protocol === 'about:') return true;
  const h = u.hostname.replace(/^\[|\]$/g, '');
  return h === 'localhost' || h === '::1' || /^127(\.\d{1,3}){3}$/.test(h);
}

// The message shown for a form field, as a person sees it next to the field (runs in the page):
// the elements named by aria-describedby, else the first element after the field (among its
// following siblings, then its parent's) that is role=alert or has class error/field-error,
// stopping at the next form control. Also the browser's own constraint-validation state.
function readFieldMessage(field) {
  const isControl = (n) => n.matches('input,textarea,select,button') || n.querySelector('input,textarea,select,button');
  const isMessage = (n) => n.matches('[role=alert],.error,.field-error');
  const visible = (n) => !!(n.offsetWidth || n.offsetHeight || n.getClientRects().length);
  let text = '';
  let via = '';
  const described = (field.getAttribute('aria-describedby') || '').split(/\s+/).filter(Boolean);
  for (const id of described) {
    const n = document.getElementById(id);
    if (n && visible(n) && n.textContent.trim()) {
      text += (text ? ' ' : '') + n.textContent.trim();
      via = 'aria-describedby';
    }
  }
  for (let start = field, depth = 0; !text && start && depth < 3; start = start.parentElement, depth++) {
    let stop = false;
    for (let n = start.nextElementSibling; n && !stop; n = n.nextElementSibling) {
      if (isMessage(n) && visible(n) && n.textContent.trim()) {
        text = n.textContent.trim();
        via = depth === 0 ? 'sibling' : 'after the field\'s container';
        break;
      }
      stop = isControl(n);
    }
    if (stop || start.matches('form')) break;
  }
  return {
    text,
    via,
    native: field.validationMessage || '',
    valid: field.checkValidity ? field.validity.valid : true,
    invalidAttr: field.getAttribute('aria-invalid') === 'true',
  };
}

class Test {
  constructor(name, page, baseUrl, problems) {
    this.name = name;
    this.page = page;
    this.baseUrl = baseUrl.replace(/\/$/, '');
    this.problems = problems;
    this.lastStatus = 0;
    this.loads = 0;
    page.on('load', () => this.loads++);
    page.on('response', (r) => {
      if (r.request().isNavigationRequest() && r.frame() === page.mainFrame()) this.lastStatus = r.status();
    });
  }

  step(text) {
    console.log(`== ${text}`);
  }
  note(text) {
    console.log(`   ${text}`);
  }
  check(cond, message) {
    if (!cond) throw new TestFailure(message);
  }
  fail(message) {
    throw new TestFailure(message);
  }

  async goto(pathOrUrl) {
    const url = /^[a-z]+:/i.test(pathOrUrl) ? pathOrUrl : this.baseUrl + pathOrUrl;
    const r = await this.page.goto(url, { waitUntil: 'load', timeout: kNavigationMs });
    this.lastStatus = r ? r.status() : 0;
    return this.lastStatus;
  }

  // The field whose <label> reads `label` (exact text), as a Locator.
  field(label) {
    return this.page.getByLabel(label, { exact: true });
  }

  // fields: {label: value}; fills each (clears it first).
  async fill(fields) {
    for (const [label, value] of Object.entries(fields)) {
      await this.field(label).fill(value, { timeout: kActionMs });
    }
  }

  // Clicks the button named `name` and waits for the next page to load. Returns its HTTP status.
  async submit(name) {
    const loaded = this.page.waitForEvent('load', { timeout: kNavigationMs });
    await this.page.getByRole('button', { name, exact: true }).click({ timeout: kActionMs });
    await loaded;
    return this.lastStatus;
  }

  // Clicks the button named `name` when the form is expected NOT to be sent (the browser's own
  // validation stops it): true when no new page loaded within `settleMs`.
  async submitBlocked(name, settleMs = 1000) {
    const before = this.loads;
    await this.page.getByRole('button', { name, exact: true }).click({ timeout: kActionMs });
    await this.page.waitForTimeout(settleMs);
    return this.loads === before;
  }

  // Clicks the button named `name` when the answer is a file: the saved path and its name.
  async download(name, dir) {
    const started = this.page.waitForEvent('download', { timeout: kNavigationMs });
    await this.page.getByRole('button', { name, exact: true }).click({ timeout: kActionMs });
    const d = await started;
    const failure = await d.failure();
    if (failure) throw new TestFailure(`download ${d.suggestedFilename()} failed: ${failure}`);
    const file = path.join(dir, d.suggestedFilename());
    await d.saveAs(file);
    return { file, name: d.suggestedFilename(), url: d.url() };
  }

  // The message next to the field labelled `label`: {text, via, native, valid, invalidAttr}.
  async fieldMessage(label) {
    return this.field(label).evaluate(readFieldMessage, undefined, { timeout: kActionMs });
  }

  // Chromium logs "Failed to load resource: the server responded with a status of N" for every
  // page answered with an error status, even when the page is the intended answer (a form shown
  // again with its message). Forgives exactly those lines, one per such page, for these statuses;
  // UPKEEP_BROWSER_STRICT_STATUS=1 forgives none.
  allowErrorPages(...statuses) {
    if (process.env.UPKEEP_BROWSER_STRICT_STATUS === '1') return;
    for (const s of statuses) this.problems.allowStatuses.add(s);
  }

  // Downloads started by clicks navigate to an attachment; Chromium then reports the navigation
  // request as aborted. That one is expected: forget it.
  expectAbortedNavigationTo(urlPart) {
    this.problems.allowAborted.push(urlPart);
  }
}

// Runs `body(t)` in a fresh headless Chromium; never returns (exits 0 on pass, 1 on failure).
export async function runBrowserTest(name, body) {
  const baseUrl = process.env.UPKEEP_BASE_URL;
  const buildDir = process.env.UPKEEP_BUILD_DIR;
  if (!baseUrl || !buildDir) {
    console.error('FAIL: UPKEEP_BASE_URL and UPKEEP_BUILD_DIR must be set');
    process.exit(1);
  }
  const outDir = path.join(buildDir, 'browser');
  fs.mkdirSync(outDir, { recursive: true });
  const shot = path.join(outDir, `${name}.png`);
  fs.rmSync(shot, { force: true });
  const headed = process.env.UPKEEP_BROWSER_HEADED === '1';
  const trace = process.env.UPKEEP_BROWSER_TRACE === '1';
  const totalMs = Number(process.env.UPKEEP_BROWSER_TIMEOUT || 120) * 1000;

  const problems = { list: [], allowAborted: [], allowStatuses: new Set(), console: [], errorPages: [] };
  const problem = (text) => {
    problems.list.push(text);
    console.log(`   browser problem: ${text}`);
  };

  let browser;
  let context;
  let page;
  let failure = null;
  const started = Date.now();
  const watchdog = setTimeout(() => {
    failure = failure || new TestFailure(`the test did not finish within ${totalMs / 1000} s`);
    // Closing the browser makes every pending Playwright call reject, so the body unwinds.
    if (browser) browser.close().catch(() => {});
  }, totalMs);
  try {
    browser = await chromium.launch({
      executablePath: process.env.UPKEEP_CHROMIUM || '/usr/bin/chromium',
      headless: !headed,
      slowMo: headed ? Number(process.env.UPKEEP_BROWSER_SLOWMO || 250) : 0,
      // Chromium's sandbox cannot start as root; as any other user it stays on.
      chromiumSandbox: process.getuid() !== 0 && process.env.UPKEEP_BROWSER_NO_SANDBOX !== '1',
      timeout: 60_000,
      // No DNS at all: only IP-literal loopback URLs resolve (and localhost).
      args: ['--disable-dev-shm-usage', '--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1, EXCLUDE [::1]'],
    });
    // The loopback test servers use a self-signed certificate: accept it (nothing but loopback
    // is reachable, see the route below).
    context = await browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 1280, height: 900 }, acceptDownloads: true });
    context.setDefaultTimeout(kActionMs);
    context.setDefaultNavigationTimeout(kNavigationMs);
    if (trace) await context.tracing.start({ screenshots: true, snapshots: true, sources: false });
    await context.route('**/*', (route) => {
      const url = route.request().url();
      if (isLoopback(url)) return route.continue();
      problem(`request to a non-loopback address refused: ${url}`);
      return route.abort('blockedbyclient');
    });
    // Console errors are judged at the end: one that only reports the HTTP status of a page the
    // test said it expects (allowErrorPages) is not a page defect; every other one is a problem.
    context.on('console', (m) => {
      if (m.type() === 'error') problems.console.push({ text: m.text(), url: (m.location() || {}).url || '' });
    });
    context.on('response', (r) => {
      if (r.request().isNavigationRequest() && r.status() >= 400) problems.errorPages.push({ url: r.url(), status: r.status() });
    });
    context.on('weberror', (e) => problem(`uncaught page error: ${e.error().message}`));
    context.on('requestfailed', (r) => {
      const why = r.failure() ? r.failure().errorText : 'failed';
      if (why === 'net::ERR_ABORTED' && problems.allowAborted.some((p) => r.url().includes(p))) return;
      if (why.startsWith('net::ERR_BLOCKED_BY_CLIENT')) return;  // reported by the route
      problem(`request failed: ${r.method()} ${r.url()}: ${why}`);
    });
    context.on('dialog', (d) => {
      problem(`unexpected ${d.type()} dialog: ${d.message()}`);
      d.dismiss().catch(() => {});
    });
    page = await context.newPage();
    await body(new Test(name, page, baseUrl, problems));
  } catch (e) {
    failure = failure || e;
  } finally {
    clearTimeout(watchdog);
    if (page && !page.isClosed()) {
      try {
        await page.screenshot({ path: shot, fullPage: true, timeout: kActionMs });
      } catch (e) {
        console.log(`   could not save the screenshot: ${e.message}`);
      }
    }
    if (trace && context) {
      const zip = path.join(outDir, `${name}.trace.zip`);
      await context.tracing.stop({ path: zip }).catch(() => {});
      console.log(`trace: ${zip} (open with: npx playwright-core show-trace ${zip})`);
    }
    if (browser) await browser.close().catch(() => {});
  }
  for (const c of problems.console) {
    const status = Number((/^Failed to load resource: the server responded with a status of (\d+)/.exec(c.text) || [])[1]);
    const i = problems.errorPages.findIndex((p) => p.url === c.url && p.status === status);
    if (status && problems.allowStatuses.has(status) && i >= 0) {
      problems.errorPages.splice(i, 1);
      console.log(`   allowed console error (an expected ${status} page): ${c.text} (${c.url})`);
    } else {
      problem(`console error: ${c.text}${c.url ? ` (${c.url})` : ''}`);
    }
  }
  const seconds = ((Date.now() - started) / 1000).toFixed(1);
  if (fs.existsSync(shot)) console.log(`screenshot: ${shot}`);
  if (failure) {
    console.log(`FAIL: ${name}: ${failure instanceof TestFailure ? failure.message : failure.stack || failure}`);
  }
  if (problems.list.length) {
    console.log(`FAIL: ${name}: ${problems.list.length} browser problem(s):`);
    for (const p of problems.list) console.log(`  - ${p}`);
  }
  if (failure || problems.list.length) process.exit(1);
  console.log(`PASS: ${name} (${seconds} s)`);
  process.exit(0);
}
