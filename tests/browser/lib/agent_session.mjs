// Shared by the browser tests of the appliance updates page: the first-start setup with the
// token the daemon logged (lib/agent_web.sh wrote it to a 0600 file) and sign-in (signIn), leaving
// the page on the updates page. `t` is runBrowserTest's test object (lib/harness.mjs).
import fs from 'node:fs';

export const kAdmin = 'admin';
export const kPassword = 'correct horse battery staple 7';

export async function setupAndSignIn(t, tokenFile = process.env.UPKEEP_SETUP_TOKEN_FILE) {
  const { page } = t;
  const token = fs.readFileSync(tokenFile, 'utf8').trim();
  t.check(/^[0-9a-f]{32}$/.test(token), 'the setup token file holds no setup token');
  t.step('first-start setup with the token from the daemon\'s log');
  let code = await t.goto('/setup');
  t.check(code === 200 && new URL(page.url()).pathname === '/setup', `GET /setup ended at ${page.url()} (${code})`);
  await t.fill({ 'Setup token': token, 'Administrator name': kAdmin, Password: kPassword, 'Password again': kPassword });
  code = await t.submit('Create the administrator');
  t.check(code === 200 && new URL(page.url()).pathname === '/login', `setup ended at ${page.url()} (${code})`);
  t.step('sign in');
  await signIn(t);
}

// Signs in as the administrator from the sign-in form the page shows now; expects the updates page.
export async function signIn(t) {
  const { page } = t;
  await t.fill({ 'Account name': kAdmin, Password: kPassword });
  const code = await t.submit('Sign in');
  t.check(code === 200 && new URL(page.url()).pathname === '/', `sign-in ended at ${page.url()} (${code})`);
}
