// Headless Debian chromium driven by playwright-core (no downloaded browsers).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';

export const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
export const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

/** A fresh chromium profile and one page; shot(name) saves a numbered full-page screenshot in outDir. */
export async function launch({ outDir }) {
  if (!fs.existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} not found: apt-get install -y chromium`);
  const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'eam-e2e-chromium-'));
  fs.mkdirSync(outDir, { recursive: true });
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: CHROMIUM,
    headless: true,
    args: CHROMIUM_ARGS,
    viewport: { width: 1000, height: 760 },
    timeout: 30000,
  });
  context.setDefaultTimeout(45000);
  context.setDefaultNavigationTimeout(45000);
  const page = context.pages()[0] ?? await context.newPage();
  const consoleLines = [];
  page.on('console', (msg) => consoleLines.push(`${msg.type()}: ${msg.text()}`));
  let n = 0;
  let cdp;
  const shots = [];
  return {
    context,
    page,
    consoleLines,
    shots,
    async shot(name) {
      n += 1;
      const file = path.join(outDir, `${String(n).padStart(2, '0')}-${name}.png`);
      await page.screenshot({ path: file, fullPage: true });
      shots.push(file);
      return file;
    },
    /**
     * A screenshot straight from Chromium (CDP), for a page whose navigation is pending, which
     * playwright's page.screenshot waits out (e.g. an auto-submitted form held by page.route).
     */
    async prepareRawShot() { cdp ??= await context.newCDPSession(page); },
    async rawShot(name) {
      n += 1;
      const file = path.join(outDir, `${String(n).padStart(2, '0')}-${name}.png`);
      cdp ??= await context.newCDPSession(page);
      const { data } = await cdp.send('Page.captureScreenshot', { format: 'png' });
      fs.writeFileSync(file, Buffer.from(data, 'base64'));
      shots.push(file);
      return file;
    },
    async close() {
      try { await context.close(); } finally { fs.rmSync(userDataDir, { recursive: true, force: true }); }
    },
  };
}
