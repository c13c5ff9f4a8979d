// The whole EAM sign-in in a real browser: Entra simulator page -> auto-POST to eam-proxy ->
// oidc-provider's login and consent pages -> form_post back -> the simulator says "accepted".
// A screenshot of each step lands in tests/out/e2e/browser-flow/.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { decodeJwt } from 'jose';
import { startStack, OUT_DIR } from './lib/stack.mjs';
import { launch } from './lib/browser.mjs';

test('browser: Entra EAM sign-in through eam-proxy is accepted by Entra', { timeout: 90_000 }, async (t) => {
  const outDir = path.join(OUT_DIR, 'browser-flow');
  const stack = await startStack({ outDir });
  t.after(() => stack.close());
  const browser = await launch({ outDir });
  t.after(() => browser.close());
  {
    const { page } = browser;
    const { sim, op, proxy } = stack;

    // 1. Entra: the user must complete MFA and picks the external method.
    await page.goto(sim.url);
    await page.getByText('Sign in: another factor is required').waitFor();
    await browser.shot('entra-simulator');

    // 2. Entra's auto-submitting form: photographed while its POST to the proxy is held back.
    let release;
    const held = new Promise((resolve) => { release = resolve; });
    await page.route((url) => url.href === stack.authorizeUrl, (route) => {
      if (route.request().method() === 'POST') release(route);
      else route.continue();
    });
    await browser.prepareRawShot();
    // The navigation it starts is held below: do not wait for it here.
    await page.click('#start', { noWaitAfter: true });
    const route = await held;
    await browser.rawShot('entra-auto-post');
    await route.continue();
    const autoPostShot = true;

    // 3. The provider's login page, reached through the proxy, shows the validated identity.
    await page.waitForURL((url) => url.pathname.startsWith('/interaction/'));
    await page.getByText("Verify it's you").waitFor();
    assert.equal(new URL(page.url()).origin, proxy.url, 'the browser talks to the provider through the proxy');
    assert.match(await page.textContent('main'), /testuser2@contoso\.com/);
    await browser.shot('provider-login');
    await page.unroute((url) => url.href === stack.authorizeUrl);
    await page.click('#approve');

    // 4. Consent of openid only.
    await page.getByText('know it').waitFor();
    await browser.shot('provider-consent');
    await page.click('#allow');

    // 5. oidc-provider's form_post lands on Entra's redirect_uri: the verdict.
    await page.waitForURL((url) => url.href.startsWith(sim.redirectUri));
    const verdictText = await page.textContent('#verdict');
    await browser.shot('entra-verdict');
    assert.equal(verdictText.trim(), 'accepted');
    assert.ok(autoPostShot, 'the auto-POST page was photographed');

    // Entra's side: one attempt, accepted, every check passed, queryable as JSON.
    const [attempt] = [...sim.attempts.values()];
    const verdict = await (await fetch(`${sim.url}/api/verdicts/${encodeURIComponent(attempt.state)}`)).json();
    assert.equal(verdict.accepted, true, verdict.reason);
    assert.deepEqual(verdict.checks.map((c) => c.name),
      ['state', 'id_token', 'signature', 'x5c', 'iss', 'aud', 'nonce', 'sub', 'acr', 'amr']);
    assert.ok(verdict.checks.every((c) => c.ok));
    assert.equal(verdict.claims.iss, proxy.url);
    assert.equal(verdict.claims.sub, attempt.hint.payload.sub);
    assert.equal(verdict.claims.acr, 'possessionorinherence');
    assert.deepEqual(verdict.claims.amr, ['fido']);

    // Entra read the key set through the proxy, which added the certificate.
    const metrics = await (await fetch(`${proxy.adminUrl}/metrics`)).text();
    const injected = Number(/^eam_x5c_injections_total\{result="injected"\} (\d+)/m.exec(metrics)?.[1]);
    assert.ok(injected >= 1, `x5c injected ${injected} times`);

    // What the provider received: the renamed hint, prompt=login and the hint's identity.
    const auth = op.received.filter((r) => r.method === 'POST');
    assert.equal(auth.length, 1);
    const got = new Map(auth[0].params);
    const hint = attempt.params.find(([k]) => k === 'id_token_hint')[1];
    assert.equal(got.get('entra_id_token_hint'), hint);
    assert.equal(got.has('id_token_hint'), false);
    assert.equal(got.get('prompt'), 'login');
    const claims = decodeJwt(hint);
    assert.equal(got.get('entra_iss'), claims.iss);
    assert.equal(got.get('entra_tid'), claims.tid);
    assert.equal(got.get('entra_oid'), claims.oid);
    assert.equal(got.get('entra_preferred_username'), claims.preferred_username);
    assert.equal(got.get('entra_sub'), claims.sub);
    for (const name of ['scope', 'response_type', 'response_mode', 'client_id', 'redirect_uri', 'nonce', 'state', 'claims', 'client-request-id']) {
      assert.equal(got.get(name), attempt.params.find(([k]) => k === name)[1], `${name} forwarded unchanged`);
    }
    assert.equal(auth[0].headers['x-forwarded-proto'], 'http');
    assert.equal(auth[0].headers['x-forwarded-host'], new URL(proxy.url).host);

    // The proxy's decision line.
    const decisions = proxy.decisions().filter((d) => d.client_request_id === attempt.clientRequestId);
    assert.equal(decisions.length, 1, JSON.stringify(proxy.decisions()));
    assert.equal(decisions[0].outcome, 'accepted');
    assert.equal(decisions[0].tid, claims.tid);
    assert.equal(decisions[0].oid, claims.oid);
    assert.equal(browser.shots.length, 5);
  }
});
