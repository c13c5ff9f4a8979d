// The Chromium cookie case of the fidelity suite: headless Debian chromium (playwright-core from
// tests/e2e) sets two cookies for each TLS origin given, loads ORIGIN/cookies?fid=..., and prints
// one JSON line per origin: the protocol Chromium used (from the DevTools protocol, expected
// "h2"), the status and the page text (the werkzeug app's JSON).
//
//   node tests/fidelity/chromium_cookies.mjs COOKIES_JSON ORIGIN...
import { createRequire } from 'node:module';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
// tests/e2e owns the Node packages; resolve playwright-core from there.
const require = createRequire(path.join(here, '../e2e/package.json'));
const { chromium } = require('playwright-core');

const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
// tests/e2e/lib/browser.mjs's arguments, and a self-signed certificate accepted.
const ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
  '--ignore-certificate-errors'];

const [cookiesJson, ...origins] = process.argv.slice(2);
const cookies = JSON.parse(cookiesJson);
const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'eam-fidelity-chromium-'));
const context = await chromium.launchPersistentContext(userDataDir, {
  executablePath: CHROMIUM, headless: true, args: ARGS, ignoreHTTPSErrors: true, timeout: 30000,
});
try {
  const page = context.pages()[0] ?? await context.newPage();
  const cdp = await context.newCDPSession(page);
  await cdp.send('Network.enable');
  const protocols = new Map();
  cdp.on('Network.responseReceived', (e) => protocols.set(e.response.url, e.response.protocol));
  for (const origin of origins) {
    await context.clearCookies();
    await context.addCookies(cookies.map((c) => ({ ...c, url: origin })));
    const url = `${origin}/cookies?fid=chromium-${encodeURIComponent(origin)}`;
    const response = await page.goto(url, { timeout: 20000 });
    const text = await page.evaluate(() => document.body.innerText);
    console.log(JSON.stringify({ origin, status: response.status(), protocol: protocols.get(url) ?? null, text }));
  }
} finally {
  await context.close();
  fs.rmSync(userDataDir, { recursive: true, force: true });
}
