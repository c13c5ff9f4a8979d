// The negative flows, in the same setup as the browser flow (real chromium, real provider,
// real eam-proxy binary):
//  (a) without the proxy, the provider rejects Entra's request (invalid_request: it cannot
//      validate the foreign, pre-expired hint) — the proxy is what makes the sign-in work;
//  (b) a forged hint through the proxy ends at Entra as error=invalid_request with the state
//      intact, at once (no timeout), and nothing reaches the provider;
//  (c) an ordinary code-flow client of the same provider (Entra External ID / Azure AD B2C /
//      Okta federation style) signs in through the proxy untouched;
//  (d) without x5c injection the provider's key set has no certificate (oidc-provider cannot
//      publish one): Entra refuses the id_token of a sign-in that otherwise succeeds;
//  (e) a hint minted 400 s before the POST (past the proxy's default 300 s leeway) ends at Entra
//      as error=invalid_request naming the expiry, with the state, and nothing reaches the provider.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import * as jose from 'jose';
import { CODE_CLIENT } from './lib/stack.mjs';
import { approveAndConsent, atProviderLogin, browserForTest, entraVerdict } from './lib/flow.mjs';
import { closeServer, esc, listen, page as htmlPage, table } from './lib/util.mjs';

test('(a) without eam-proxy the provider rejects the Entra request with invalid_request', { timeout: 90_000 }, async (t) => {
  const { stack, browser, page, sim, op } = await browserForTest(t, 'negative-a-no-proxy', { withProxy: false });

  await page.goto(sim.url);
  await browser.shot('entra-simulator');
  await page.click('#start');
  // oidc-provider answers the error to Entra's (registered) redirect_uri with form_post.
  const { verdictText, attempt, verdict } = await entraVerdict(browser, sim);

  assert.equal(attempt.action, stack.authorizeUrl, "posted to the provider's own discovered endpoint");
  assert.ok(verdict, 'Entra received an answer for its attempt');
  assert.equal(verdict.accepted, false);
  assert.equal(verdict.error, 'invalid_request');
  assert.match(verdict.error_description, /id_token_hint/);
  assert.match(verdictText, /^rejected: error: invalid_request/);

  // The provider saw Entra's request as sent (hint not renamed, no entra_*) and refused it
  // before any login.
  assert.equal(op.received.length, 1);
  const got = new Map(op.received[0].params);
  assert.equal(got.get('id_token_hint'), attempt.params.find(([k]) => k === 'id_token_hint')[1]);
  assert.equal([...got.keys()].some((k) => k.startsWith('entra_')), false);
  assert.equal(op.received[0].error.error, 'invalid_request');
  assert.equal(op.logins.length, 0);
});

test('(b) a forged hint through eam-proxy ends at Entra as error=invalid_request with state, at once', { timeout: 90_000 }, async (t) => {
  const { stack, browser, page, sim, op, proxy } = await browserForTest(t, 'negative-b-forged-hint');

  await page.goto(sim.url);
  await browser.shot('entra-simulator');
  const proxyAnswer = page.waitForResponse((res) => res.url() === stack.authorizeUrl && res.request().method() === 'POST');
  const started = Date.now();
  await page.click('#forge');
  const answer = await proxyAnswer;
  const { verdictText, landedAt, attempt, verdict } = await entraVerdict(browser, sim);
  const elapsed = landedAt - started;

  // The proxy's answer: an auto-submitting form_post to Entra's redirect_uri (README "How a request is handled", step 8).
  assert.equal(answer.status(), 200);
  const headers = answer.headers();
  assert.match(headers['content-type'], /^text\/html/);
  assert.match(headers['cache-control'], /no-store/);
  assert.equal(headers['x-frame-options'], 'DENY');
  assert.match(headers['content-security-policy'], /form-action/);

  assert.equal(attempt.hint.forged, true);
  assert.ok(verdict, 'the error came back with the state Entra sent');
  assert.equal(verdict.received.state, attempt.state);
  assert.equal(verdict.accepted, false);
  assert.equal(verdict.error, 'invalid_request');
  assert.ok(verdict.error_description, 'error_description names the failed check');
  assert.doesNotMatch(verdict.error_description, /eyJ/, 'no token contents echoed');
  assert.match(verdictText, /^rejected: error: invalid_request/);
  // Immediately: Entra would otherwise wait ~5 minutes for the attempt to time out.
  assert.ok(verdict.elapsedMs < 5000, `took ${verdict.elapsedMs} ms`);
  assert.ok(elapsed < 10000, `browser flow took ${elapsed} ms`);

  // Nothing reached the provider's authorization endpoint; the proxy logged the rejection.
  assert.equal(op.received.length, 0);
  const decision = proxy.decisions().find((d) => d.client_request_id === attempt.clientRequestId);
  assert.ok(decision, JSON.stringify(proxy.decisions()));
  assert.equal(decision.outcome, 'rejected');
  assert.ok(decision.reason, 'a reason is logged');
});

/** A relying party using the code flow through the proxy: /login starts it, /cb finishes it. */
async function startRelyingParty() {
  const server = http.createServer();
  const port = await listen(server, 0, '127.0.0.1');
  const url = `http://127.0.0.1:${port}`;
  const rp = {
    url, redirectUri: `${url}/cb`, sessions: new Map(), results: [], issuer: undefined, extraParams: [],
    close: () => closeServer(server),
  };
  server.on('request', async (req, res) => {
    const u = new URL(req.url, url);
    const html = (status, title, body) => { res.writeHead(status, { 'content-type': 'text/html; charset=utf-8' }); res.end(htmlPage(title, body)); };
    try {
      const discovery = await (await fetch(`${rp.issuer}/.well-known/openid-configuration`)).json();
      if (u.pathname === '/login') {
        const state = randomBytes(16).toString('base64url');
        const verifier = randomBytes(32).toString('base64url');
        const nonce = randomUUID();
        rp.sessions.set(state, { verifier, nonce });
        const params = new URLSearchParams([
          ['response_type', 'code'],
          ['client_id', CODE_CLIENT.clientId],
          ['redirect_uri', rp.redirectUri],
          ['scope', 'openid'],
          ['state', state],
          ['nonce', nonce],
          ['code_challenge', createHash('sha256').update(verifier).digest('base64url')],
          ['code_challenge_method', 'S256'],
          ...rp.extraParams,
        ]);
        rp.authorizationRequest = params.toString();
        res.writeHead(302, { location: `${discovery.authorization_endpoint}?${params}` });
        return res.end();
      }
      if (u.pathname === '/cb') {
        const session = rp.sessions.get(u.searchParams.get('state'));
        if (!session) throw new Error('unknown state');
        if (u.searchParams.get('error')) throw new Error(`${u.searchParams.get('error')}: ${u.searchParams.get('error_description')}`);
        const tokenRes = await fetch(discovery.token_endpoint, {
          method: 'POST',
          headers: {
            'content-type': 'application/x-www-form-urlencoded',
            authorization: `Basic ${Buffer.from(`${CODE_CLIENT.clientId}:${CODE_CLIENT.clientSecret}`).toString('base64')}`,
          },
          body: new URLSearchParams({
            grant_type: 'authorization_code', code: u.searchParams.get('code'), redirect_uri: rp.redirectUri, code_verifier: session.verifier,
          }),
        });
        const tokens = await tokenRes.json();
        if (!tokenRes.ok) throw new Error(`token endpoint ${tokenRes.status}: ${JSON.stringify(tokens)}`);
        const { payload } = await jose.jwtVerify(tokens.id_token, jose.createRemoteJWKSet(new URL(discovery.jwks_uri)), {
          issuer: discovery.issuer, audience: CODE_CLIENT.clientId, algorithms: ['RS256'],
        });
        if (payload.nonce !== session.nonce) throw new Error('nonce mismatch');
        rp.results.push({ ok: true, tokenEndpoint: discovery.token_endpoint, claims: payload, tokenType: tokens.token_type });
        return html(200, 'Signed in', `<header style="background:#5b21b6"><b>Federated app</b> (code flow)</header><main>
<h1 id="result">signed in as ${esc(payload.sub)}</h1>${table(Object.entries(payload).map(([k, v]) => [k, typeof v === 'string' ? v : JSON.stringify(v)]))}</main>`);
      }
      res.writeHead(404); return res.end();
    } catch (e) {
      rp.results.push({ ok: false, error: e.message });
      return html(500, 'Failed', `<main><h1 id="result">failed: ${esc(e.message)}</h1></main>`);
    }
  });
  return rp;
}

test('(c) an ordinary code-flow client signs in through eam-proxy untouched', { timeout: 90_000 }, async (t) => {
  const rp = await startRelyingParty();
  t.after(() => rp.close());
  const { stack, browser, page, op, proxy } = await browserForTest(t, 'negative-c-code-flow', {
    codeRedirectUris: [rp.redirectUri],
  });
  rp.issuer = stack.issuer;
  // Federation flows may carry client-request-id too (detect = client_id leaves them alone);
  // a spoofed entra_* parameter must be stripped (README "How a request is handled", step 2) and nothing else changed.
  const clientRequestId = randomUUID();
  rp.extraParams = [['client-request-id', clientRequestId], ['entra_sub', 'attacker']];

  await page.goto(`${rp.url}/login`);
  await page.waitForURL((url) => url.pathname.startsWith('/interaction/'));
  assert.equal(new URL(page.url()).origin, proxy.url);
  await page.getByRole('heading', { name: 'Sign in' }).waitFor();
  await browser.shot('provider-login');
  await page.fill('#login', 'alice');
  await page.click('#signin');
  await page.getByText('know it').waitFor();
  await browser.shot('provider-consent');
  await page.click('#allow');
  await page.waitForURL((url) => url.href.startsWith(rp.redirectUri));
  const resultText = (await page.textContent('#result')).trim();
  await browser.shot('relying-party-signed-in');

  assert.equal(resultText, 'signed in as alice');
  const [result] = rp.results;
  assert.equal(result.ok, true, result.error);
  assert.equal(result.claims.sub, 'alice');
  assert.equal(result.claims.iss, proxy.url);
  assert.equal(new URL(result.tokenEndpoint).origin, proxy.url, 'the code was exchanged through the proxy');

  // The provider got the authorization request unchanged apart from the spoofed entra_sub.
  assert.equal(op.received.length, 1);
  const sent = rp.authorizationRequest.split('&');
  const expected = sent.filter((pair) => !pair.startsWith('entra_')).join('&');
  assert.equal(op.received[0].method, 'GET');
  assert.equal(op.received[0].query, expected);
  // The token request reached the provider through the proxy.
  const token = op.requests.find((r) => r.method === 'POST' && r.path === '/token');
  assert.ok(token, 'token request seen by the provider');
  assert.equal(token.forwardedHost, new URL(proxy.url).host);

  // The proxy passed it through and said so: one decision line (one authorize request), passed.
  const decisions = proxy.decisions();
  assert.equal(decisions.length, 1, JSON.stringify(decisions));
  assert.equal(decisions[0].outcome, 'passed');
});

test('(d) without x5c injection Entra refuses the id_token: the signing key has no certificate', { timeout: 90_000 }, async (t) => {
  const { browser, page, sim, op, proxy } = await browserForTest(t, 'negative-d-no-x5c', { x5c: false });

  await page.goto(sim.url);
  await page.click('#start');
  await atProviderLogin(page);
  await approveAndConsent(page);
  const { verdictText, attempt, verdict } = await entraVerdict(browser, sim);

  // Everything else held: the hint was accepted, the user signed in, a signed id_token came back.
  assert.equal(proxy.decisions().find((d) => d.client_request_id === attempt.clientRequestId)?.outcome, 'accepted');
  assert.equal(op.logins.length, 1);
  assert.equal(verdict.accepted, false);
  assert.deepEqual(verdict.checks.map((c) => [c.name, c.ok]),
    [['state', true], ['id_token', true], ['jwks', true], ['signature', true], ['x5c', false]]);
  assert.match(verdict.entra_error, /AADSTS50012: External ID token from issuer '.*' failed signature verification/);
  assert.match(verdict.reason, /^x5c: signing key op-[0-9a-f]+ has no x5c certificate \(Entra requires one/);
  assert.match(verdictText, /^rejected: x5c: signing key .* has no x5c certificate/);
});

test('(e) a hint minted 400 s before the POST ends at Entra as expired, with state, at once', { timeout: 90_000 }, async (t) => {
  const { browser, page, sim, op, proxy } = await browserForTest(t, 'negative-e-stale-hint');

  await page.goto(sim.url);
  await page.click('#stale'); // Entra's page, posted 400 s after the hint was minted
  const { verdictText, attempt, verdict } = await entraVerdict(browser, sim);

  // A genuine Microsoft-shaped hint, only too old: the proxy's window ends at iat + 300 s.
  assert.equal(attempt.hint.forged, false);
  assert.equal(attempt.hint.mintedSecondsAgo, 400);
  assert.equal(attempt.hint.payload.exp, attempt.hint.payload.iat - 1);
  assert.ok(Math.floor(attempt.startedAt / 1000) - attempt.hint.payload.iat >= 400);

  const decision = proxy.decisions().find((d) => d.client_request_id === attempt.clientRequestId);
  assert.ok(decision, JSON.stringify(proxy.decisions()));
  assert.equal(decision.outcome, 'rejected');
  assert.equal(decision.reason, 'expired');

  // The proxy's form_post error reached Entra with its state, naming the expiry.
  assert.ok(verdict, 'the error came back with the state Entra sent');
  assert.equal(verdict.accepted, false);
  assert.equal(verdict.error, 'invalid_request');
  assert.match(verdict.error_description, /expired/);
  assert.match(verdictText, /^rejected: error: invalid_request/);
  assert.ok(verdict.elapsedMs < 5000, `took ${verdict.elapsedMs} ms`);
  assert.equal(op.received.length, 0, 'nothing reached the provider');
});
