// The whole EAM sign-in in a real browser: Entra simulator page -> auto-POST to eam-proxy ->
// oidc-provider's login and consent pages -> form_post back -> the simulator says "accepted".
// A screenshot of each step lands in tests/out/e2e/browser-flow/. The same with a B2B guest's
// hint minted 30 s before the POST (browser-flow-guest/).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { decodeJwt } from 'jose';
import { approveAndConsent, atProviderLogin, browserForTest, entraVerdict } from './lib/flow.mjs';
import { DEFAULTS, idpFor, issuerFor } from './simulator.mjs';

/** The checks of an accepted verdict, in the order Entra runs them. */
const ALL_CHECKS = ['state', 'id_token', 'jwks', 'signature', 'x5c', 'iss', 'aud', 'nonce', 'sub', 'acr', 'amr'];

test('browser: Entra EAM sign-in through eam-proxy is accepted by Entra', { timeout: 90_000 }, async (t) => {
  const { stack, browser, page, sim, op, proxy } = await browserForTest(t, 'browser-flow');
  {
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
    await atProviderLogin(page);
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
    const { verdictText, attempt } = await entraVerdict(browser, sim);
    assert.equal(verdictText, 'accepted');
    assert.ok(autoPostShot, 'the auto-POST page was photographed');

    // Entra's side: one attempt, posted to the authorization_endpoint of the provider's
    // discovery document (read through the proxy), accepted, every check passed, queryable as JSON.
    assert.equal(attempt.discovery.url, stack.discoveryUrl);
    assert.equal(attempt.action, stack.authorizeUrl);
    const verdict = await (await fetch(`${sim.url}/api/verdicts/${encodeURIComponent(attempt.state)}`)).json();
    assert.equal(verdict.accepted, true, verdict.reason);
    assert.deepEqual(verdict.checks.map((c) => c.name), ALL_CHECKS);
    assert.ok(verdict.checks.every((c) => c.ok));
    assert.equal(verdict.claims.iss, proxy.url);
    assert.equal(verdict.claims.sub, attempt.hint.payload.sub);
    assert.equal(verdict.claims.acr, 'possessionorinherence');
    assert.deepEqual(verdict.claims.amr, ['fido']);

    // Entra read the key set through the proxy, which added the certificate.
    const metrics = await (await fetch(`${proxy.adminUrl}/metrics`)).text();
    const injected = Number(/^eam_x5c_injections_total\{result="injected"\} (\d+)/m.exec(metrics)?.[1]);
    assert.ok(injected >= 1, `x5c injected ${injected} times`);
    // The proxy is configured for /authorize; the provider's /auth (and its PAR endpoint) was
    // filtered because the proxy read its discovery, and it says so.
    assert.match(metrics, /^eam_discovery_up 1$/m);
    assert.match(metrics, /^eam_authorize_paths_unlisted 2$/m);
    const readyz = await (await fetch(`${proxy.adminUrl}/readyz`)).text();
    assert.match(readyz, /NOT in authorize\.paths, filtered while discovery is read: \/auth, \/request/);

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

test('browser: a B2B guest\'s hint minted 30 s before the POST is accepted end to end', { timeout: 90_000 }, async (t) => {
  const { browser, page, sim, op, proxy } = await browserForTest(t, 'browser-flow-guest');
  const guest = DEFAULTS.guest;
  // Entra's page may wait before it posts: the hint's window runs from iat, not from the POST.
  sim.configure({ guest: true, mintedSecondsAgo: 30 });

  await page.goto(sim.url);
  await page.getByText(guest.user.preferred_username).first().waitFor();
  await browser.shot('entra-simulator');
  await page.click('#start');
  await atProviderLogin(page);
  // The provider's login page names the guest by the home account's UPN.
  assert.ok((await page.textContent('h1')).includes(guest.user.preferred_username));
  await browser.shot('provider-login');
  await approveAndConsent(page);
  const { verdictText, attempt, verdict } = await entraVerdict(browser, sim);

  // The hint: a guest's, minted 30 s before Entra's redirect, pre-expired.
  const hint = attempt.hint.payload;
  assert.equal(attempt.hint.guest, true);
  assert.ok(Math.floor(attempt.startedAt / 1000) - hint.iat >= 30, `iat ${hint.iat}, redirect at ${attempt.startedAt}`);
  assert.equal(hint.exp, hint.iat - 1);
  assert.equal(hint.nbf, hint.iat);
  assert.equal(hint.tid, DEFAULTS.tenantId, 'the resource tenant');
  assert.equal(hint.iss, issuerFor(DEFAULTS.tenantId));
  assert.equal(hint.idp, idpFor(guest.homeTenantId), 'the home tenant');
  assert.equal(hint.oid, guest.user.oid);
  assert.equal(hint.sub, guest.user.sub);
  assert.equal(hint.preferred_username, guest.user.preferred_username);

  // The proxy accepted it and handed the resource tenant's guest object to the provider.
  const decision = proxy.decisions().find((d) => d.client_request_id === attempt.clientRequestId);
  assert.equal(decision?.outcome, 'accepted', JSON.stringify(proxy.decisions()));
  assert.equal(decision.tid, DEFAULTS.tenantId);
  assert.equal(decision.oid, guest.user.oid);
  const got = new Map(op.received.find((r) => r.method === 'POST').params);
  assert.equal(got.get('entra_tid'), DEFAULTS.tenantId);
  assert.equal(got.get('entra_iss'), issuerFor(DEFAULTS.tenantId));
  assert.equal(got.get('entra_oid'), guest.user.oid);
  assert.equal(got.get('entra_sub'), guest.user.sub);
  assert.equal(got.get('entra_preferred_username'), guest.user.preferred_username);

  // Entra accepted the id_token issued for the guest object's sub.
  assert.equal(verdict.accepted, true, verdict.reason);
  assert.equal(verdictText, 'accepted');
  assert.deepEqual(verdict.checks.map((c) => c.name), ALL_CHECKS);
  assert.equal(verdict.claims.sub, guest.user.sub);
});
