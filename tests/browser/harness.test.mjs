// The harness itself (run by harness_test.sh against tests/browser/fixtures on a loopback static
// server): HARNESS_PAGE=good.html must pass and read the field's message through aria-describedby;
// HARNESS_PAGE=bad.html must fail, listing its console error, uncaught error, failed request and
// non-loopback request, and still save its screenshot.
import { runBrowserTest } from './lib/harness.mjs';

const name = process.env.HARNESS_PAGE === 'good.html' ? 'harness-good' : 'harness-bad';
await runBrowserTest(name, async (t) => {
  const status = await t.goto('/' + process.env.HARNESS_PAGE);
  t.check(status === 200, `status ${status}`);
  const m = await t.fieldMessage('Name');
  t.check(m.text === 'Name is required.', `field message: "${m.text}" (${m.via})`);
  t.note(`field message: "${m.text}" (${m.via})`);
  await t.page.waitForTimeout(300);  // the uncaught error fires after load
});
