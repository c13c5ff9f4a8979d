// What the browser tests share: the stack and a chromium for one test, and the steps of an EAM
// sign-in that several tests take the same way. Split where tests photograph or assert between
// steps.
import { launch } from './browser.mjs';
import { stackForTest } from './stack.mjs';

/** stackForTest plus a fresh chromium, closed after t, its screenshots beside the stack's logs. */
export async function browserForTest(t, name, options = {}) {
  const stack = await stackForTest(t, name, options);
  const browser = await launch({ outDir: stack.outDir });
  t.after(() => browser.close());
  return { stack, browser, page: browser.page, sim: stack.sim, op: stack.op, proxy: stack.proxy };
}

/** Entra's POST has reached the provider: its login page is shown. */
export async function atProviderLogin(page) {
  await page.waitForURL((url) => url.pathname.startsWith('/interaction/'));
  await page.getByText("Verify it's you").waitFor();
}

/** The user approves the sign-in on the login page and allows openid on the consent page. */
export async function approveAndConsent(page) {
  await page.click('#approve');
  await page.getByText('know it').waitFor();
  await page.click('#allow');
}

/**
 * The browser lands on Entra's redirect_uri: the verdict page's text (photographed as
 * entra-verdict), Date.now() at the landing, the attempt (each test makes one) and Entra's
 * verdict on it (undefined when no answer carried its state).
 */
export async function entraVerdict(browser, sim) {
  const { page } = browser;
  await page.waitForURL((url) => url.href.startsWith(sim.redirectUri));
  const landedAt = Date.now();
  const verdictText = (await page.textContent('#verdict')).trim();
  await browser.shot('entra-verdict');
  const [attempt] = [...sim.attempts.values()];
  const verdict = sim.verdicts.find((v) => v.state === attempt.state);
  return { verdictText, landedAt, attempt, verdict };
}
