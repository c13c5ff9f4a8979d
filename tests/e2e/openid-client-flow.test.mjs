// A real relying-party library through eam-proxy: openid-client (panva, v6) runs a full
// authorization code flow with PKCE (S256) and a pushed authorization request (PAR, RFC 9126)
// against oidc-provider, every request via the proxy's listener. This client is not Entra, so
// the proxy must be invisible to it:
//
//   discovery -> PAR (client_secret_basic, code_challenge, state, nonce) -> /auth?client_id&
//   request_uri -> login and consent (an HTTP agent plays the browser) -> redirect to a local
//   callback with code, state and iss (RFC 9207) -> code grant with the PKCE verifier (openid-client
//   checks iss, aud, nonce, and with non-repudiation checks on, the ID token's signature against
//   the key set it fetched through the proxy) -> userinfo.
//
// Then what the provider and the proxy saw: the same requests, in the same order, with no
// entra_* parameter anywhere; two authorize decisions `passed` (the PAR endpoint is filtered like
// the authorization endpoint: the proxy reads both from discovery, since pushed parameters are
// the authorization request's), everything else route "other" `proxied`; nothing rejected,
// failed or stripped. The two things a relying party can see the
// proxy do are pinned: the key set gains x5c and x5t#S256 on the signing key (its purpose), and
// discovery names the proxy's origin (the provider builds endpoint URLs from X-Forwarded-Host).
//
// Not covered, because the provider does not offer them to this client: the refresh-token grant
// (the code client has only the authorization_code grant and the provider knows only the openid
// scope, no offline_access), token introspection and revocation (oidc-provider's features are off
// in provider.mjs, so discovery publishes no such endpoints). Each would be one more POST on
// route "other", as /token and /request are here.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { createHash } from 'node:crypto';
import * as oidc from 'openid-client';
import { decodeProtectedHeader } from 'jose';
import { CODE_CLIENT, stackForTest } from './lib/stack.mjs';
import { Agent } from './lib/agent.mjs';
import { AUTHORIZATION_PATH, JWKS_PATH } from './provider.mjs';
import { closeServer, listen, waitFor } from './lib/util.mjs';

const PAR_URN = 'urn:ietf:params:oauth:request_uri:';

/** The relying party's redirect_uri: a local server that records what reached it. */
async function startCallback() {
  const server = http.createServer();
  const port = await listen(server, 0, '127.0.0.1');
  const base = `http://127.0.0.1:${port}`;
  const hits = [];
  server.on('request', (req, res) => {
    hits.push(new URL(req.url, base));
    res.writeHead(200, { 'content-type': 'text/plain; charset=utf-8' });
    res.end('callback received\n');
  });
  return { redirectUri: `${base}/cb`, hits, close: () => closeServer(server) };
}

/** The proxy's Prometheus text as { 'name{k="v",…}': value } with labels sorted by name. */
async function scrape(proxy) {
  const text = await (await fetch(`${proxy.adminUrl}/metrics`)).text();
  const out = {};
  for (const line of text.split('\n')) {
    const m = /^(eam_[a-z0-9_]+)(?:\{([^}]*)\})? (\S+)$/.exec(line);
    if (!m) continue;
    const labels = [...(m[2] ?? '').matchAll(/(\w+)="([^"]*)"/g)].map(([, k, v]) => `${k}="${v}"`).sort();
    out[`${m[1]}${labels.length ? `{${labels.join(',')}}` : ''}`] = Number(m[3]);
  }
  return out;
}

const series = (name, labels = {}) => {
  const l = Object.entries(labels).map(([k, v]) => `${k}="${v}"`).sort();
  return `${name}${l.length ? `{${l.join(',')}}` : ''}`;
};

/** after - before for every series of a metric family (missing series count as an error). */
function delta(before, after, name) {
  const out = {};
  for (const key of Object.keys(after)) {
    if (key === name || key.startsWith(`${name}{`)) out[key] = after[key] - (before[key] ?? NaN);
  }
  return out;
}

test('openid-client: code flow with PKCE and PAR through eam-proxy, untouched', { timeout: 90_000 }, async (t) => {
  const callback = await startCallback();
  t.after(() => callback.close());
  const stack = await stackForTest(t, 'openid-client-flow', { codeRedirectUris: [callback.redirectUri] });
  const { op, proxy, signing } = stack;
  const proxyOrigin = proxy.url;
  assert.equal(stack.issuer, proxyOrigin, "the provider's issuer is the proxy's URL");

  // What the provider got, from its own events (PAR passes the proxy's authorize filter).
  const pushed = [];
  op.provider.on('pushed_authorization_request.success', (ctx) => pushed.push({
    body: { ...ctx.oidc.body },
    params: Object.fromEntries(Object.entries(ctx.oidc.params).filter(([, v]) => v !== undefined)),
  }));
  const grants = [];
  op.provider.on('grant.success', (ctx) => grants.push({
    grantType: ctx.oidc.params.grant_type,
    body: { ...ctx.oidc.body },
  }));

  // Every request anyone sends to the proxy's listener during the flow, in order.
  const sent = [];
  const track = (method, url, status) => {
    if (new URL(url).origin === proxyOrigin) sent.push({ method, url: new URL(url), status });
  };
  const rpFetch = async (url, options) => {
    const res = await fetch(url, options);
    track(options.method, String(url), res.status);
    return res;
  };

  const before = await scrape(proxy);
  const opRequestsBefore = op.requests.length;
  const started = Date.now();

  // ---- 1. discovery through the proxy --------------------------------------------------------
  const config = await oidc.discovery(
    new URL(proxyOrigin),
    CODE_CLIENT.clientId,
    undefined,
    oidc.ClientSecretBasic(CODE_CLIENT.clientSecret), // the client's token_endpoint_auth_method
    {
      [oidc.customFetch]: rpFetch,
      // plain http on loopback; and verify the ID token's signature against the jwks_uri
      execute: [oidc.allowInsecureRequests, oidc.enableNonRepudiationChecks],
    },
  );
  const meta = config.serverMetadata();
  assert.equal(meta.issuer, proxyOrigin);
  assert.equal(meta.authorization_endpoint, `${proxyOrigin}${AUTHORIZATION_PATH}`);
  assert.equal(meta.jwks_uri, `${proxyOrigin}${JWKS_PATH}`);
  for (const key of ['token_endpoint', 'userinfo_endpoint', 'pushed_authorization_request_endpoint']) {
    assert.equal(new URL(meta[key]).origin, proxyOrigin, `${key} ${meta[key]} is on the proxy`);
  }
  assert.ok(meta.code_challenge_methods_supported.includes('S256'));
  assert.equal(meta.authorization_response_iss_parameter_supported, true);
  assert.equal(meta.supportsPKCE('S256'), true);

  // ---- 2. PAR with PKCE S256, state and nonce ------------------------------------------------
  const codeVerifier = oidc.randomPKCECodeVerifier();
  const codeChallenge = await oidc.calculatePKCECodeChallenge(codeVerifier);
  const state = oidc.randomState();
  const nonce = oidc.randomNonce();
  const authorizationParams = {
    redirect_uri: callback.redirectUri,
    scope: 'openid',
    code_challenge: codeChallenge,
    code_challenge_method: 'S256',
    state,
    nonce,
  };
  const authUrl = await oidc.buildAuthorizationUrlWithPAR(config, authorizationParams);
  assert.equal(`${authUrl.origin}${authUrl.pathname}`, meta.authorization_endpoint);
  assert.deepEqual([...authUrl.searchParams.keys()].sort(), ['client_id', 'request_uri']);
  assert.equal(authUrl.searchParams.get('client_id'), CODE_CLIENT.clientId);
  assert.ok(authUrl.searchParams.get('request_uri').startsWith(PAR_URN), authUrl.href);
  const parCall = sent.find((s) => s.method === 'POST' && s.url.href === meta.pushed_authorization_request_endpoint);
  assert.equal(parCall?.status, 201, 'PAR answered 201 Created through the proxy');

  // The provider received the pushed parameters exactly as the library sent them.
  assert.equal(pushed.length, 1);
  assert.deepEqual(pushed[0].body, { ...authorizationParams, client_id: CODE_CLIENT.clientId, response_type: 'code' });
  assert.deepEqual(Object.keys(pushed[0].params).filter((k) => k.startsWith('entra_')), []);

  // ---- 3. the browser: authorization endpoint, login, consent, redirect to the callback ----
  const agent = new Agent({ onHop: (hop) => track(hop.method, hop.url, hop.status) });
  let hop = await agent.navigate('GET', authUrl.href);
  assert.equal(hop.status, 200);
  assert.equal(new URL(hop.url).origin, proxyOrigin);
  assert.match(new URL(hop.url).pathname, /^\/interaction\/[^/]+$/);
  assert.match(hop.text, /<h1>Sign in<\/h1>/);
  assert.match(hop.text, new RegExp(`Client <b>${CODE_CLIENT.clientId}</b>`));
  hop = await agent.submit(hop); // user name "alice"
  assert.equal(hop.status, 200);
  assert.match(hop.text, new RegExp(`Allow ${CODE_CLIENT.clientId} to know it`));
  hop = await agent.submit(hop); // Allow
  assert.equal(hop.status, 200);
  assert.ok(hop.url.startsWith(`${callback.redirectUri}?`), hop.url);
  assert.equal(hop.text, 'callback received\n');
  assert.equal(callback.hits.length, 1);
  const callbackUrl = new URL(hop.url);
  assert.deepEqual([...callbackUrl.searchParams.keys()].sort(), ['code', 'iss', 'state']);
  assert.equal(callbackUrl.searchParams.get('state'), state);
  assert.equal(callbackUrl.searchParams.get('iss'), proxyOrigin);

  // ---- 4. code grant: PKCE verifier, expected state and nonce, ID token validated --------------
  const tokens = await oidc.authorizationCodeGrant(config, callbackUrl, {
    pkceCodeVerifier: codeVerifier,
    expectedState: state,
    expectedNonce: nonce,
    idTokenExpected: true,
  });
  assert.equal(tokens.token_type, 'bearer');
  assert.equal(typeof tokens.access_token, 'string');
  assert.ok(tokens.access_token.length >= 43, 'an opaque access token');
  assert.equal(tokens.scope, 'openid');
  assert.ok(tokens.expires_in > 0 && tokens.expires_in <= 600, `expires_in ${tokens.expires_in}`);
  assert.equal(tokens.refresh_token, undefined, 'no offline access for this client (see the header)');
  const claims = tokens.claims();
  assert.equal(claims.sub, 'alice');
  assert.equal(claims.iss, proxyOrigin);
  assert.deepEqual([claims.aud].flat(), [CODE_CLIENT.clientId]);
  assert.equal(claims.nonce, nonce);
  assert.ok(claims.exp > claims.iat && Math.abs(claims.iat - Date.now() / 1000) < 60);
  const header = decodeProtectedHeader(tokens.id_token);
  assert.equal(header.alg, 'RS256');
  assert.equal(header.kid, signing.jwk.kid, "signed with the provider's key, checked via the proxy's jwks_uri");
  assert.ok(sent.some((s) => s.method === 'GET' && s.url.href === meta.jwks_uri && s.status === 200),
    'openid-client fetched the key set through the proxy');
  assert.equal(grants.length, 1);
  assert.equal(grants[0].grantType, 'authorization_code');
  assert.equal(grants[0].body.code_verifier, codeVerifier, 'the PKCE verifier reached the provider');
  assert.equal(grants[0].body.redirect_uri, callback.redirectUri);

  // ---- 5. userinfo with the access token ----------------------------------------------------
  const userinfo = await oidc.fetchUserInfo(config, tokens.access_token, claims.sub);
  assert.deepEqual(userinfo, { sub: 'alice' });

  const elapsed = Date.now() - started;
  t.diagnostic(`flow: ${sent.length} requests through the proxy in ${elapsed} ms: ${sent
    .map((s) => `${s.method} ${s.url.pathname} ${s.status}`).join(', ')}`);

  // ---- what the provider saw -----------------------------------------------------------------
  // Exactly the requests sent to the proxy, in the same order, each forwarded with the proxy's
  // host in X-Forwarded-Host (nothing added, nothing lost, nothing answered by the proxy itself).
  const seen = op.requests.slice(opRequestsBefore);
  assert.deepEqual(seen.map((r) => `${r.method} ${r.path}`), sent.map((s) => `${s.method} ${s.url.pathname}`));
  for (const r of seen) {
    assert.equal(r.forwardedHost, new URL(proxyOrigin).host, `${r.method} ${r.path}`);
    assert.equal(r.forwardedProto, 'http', `${r.method} ${r.path}`);
  }
  // The authorization request (client_id + request_uri) arrived byte for byte, and no entra_*
  // parameter reached the authorization endpoint.
  assert.equal(op.received.length, 1);
  assert.equal(op.received[0].method, 'GET');
  assert.equal(op.received[0].query, authUrl.search.slice(1));
  assert.deepEqual(op.received[0].params.filter(([k]) => k.startsWith('entra_')), []);
  assert.equal(op.logins.length, 1);
  assert.equal(op.logins[0].accountId, 'alice');

  // ---- what the proxy said -------------------------------------------------------------------
  // The authorize paths: the authorization endpoint and, read from discovery, the PAR endpoint.
  const parPath = new URL(meta.pushed_authorization_request_endpoint).pathname;
  const authorizeCalls = sent.filter((s) => [AUTHORIZATION_PATH, parPath].includes(s.url.pathname));
  assert.deepEqual(authorizeCalls.map((s) => `${s.method} ${s.url.pathname}`),
    [`POST ${parPath}`, `GET ${AUTHORIZATION_PATH}`], 'PAR, then /auth (the resumes are /auth/<uid>)');
  const decisions = proxy.decisions();
  assert.equal(decisions.length, 2, JSON.stringify(decisions));
  for (const decision of decisions) {
    assert.equal(decision.outcome, 'passed');
    assert.equal(decision.entra, false);
    assert.equal(decision.stripped, 0);
    assert.equal(decision.client_id, CODE_CLIENT.clientId);
    assert.equal(decision.reason, '');
  }

  const others = sent.length - authorizeCalls.length;
  const jwksFetches = sent.filter((s) => s.url.pathname === JWKS_PATH).length;
  const classOf = (status) => `${String(status)[0]}xx`;
  const byClass = {};
  for (const s of sent) byClass[classOf(s.status)] = (byClass[classOf(s.status)] ?? 0) + 1;
  const outcomes = ['accepted', 'failed', 'passed', 'proxied', 'rejected'];
  const expected = {
    ...Object.fromEntries(outcomes.flatMap((outcome) => ['authorize', 'other']
      .map((route) => [series('eam_requests_total', { outcome, route }), 0]))),
    [series('eam_requests_total', { outcome: 'passed', route: 'authorize' })]: authorizeCalls.length,
    [series('eam_requests_total', { outcome: 'proxied', route: 'other' })]: others,
  };
  const expectedUpstream = Object.fromEntries(['1xx', '2xx', '3xx', '4xx', '5xx', 'error']
    .map((c) => [series('eam_upstream_responses_total', { class: c }), byClass[c] ?? 0]));
  // A request may be counted just after its response reached the client: wait for the last one.
  let after;
  await waitFor(async () => {
    after = await scrape(proxy);
    return after[series('eam_requests_total', { outcome: 'proxied', route: 'other' })]
      - before[series('eam_requests_total', { outcome: 'proxied', route: 'other' })] >= others;
  }, 5000, 'the proxy to count every request');
  assert.deepEqual(delta(before, after, 'eam_requests_total'), expected);
  assert.deepEqual(delta(before, after, 'eam_upstream_responses_total'), expectedUpstream);
  assert.deepEqual(delta(before, after, 'eam_spoofed_params_removed_total'), { eam_spoofed_params_removed_total: 0 });
  for (const [key, value] of Object.entries(delta(before, after, 'eam_hint_rejections_total'))) {
    assert.equal(value, 0, key);
  }
  assert.equal(after[series('eam_request_duration_seconds_count', { route: 'other' })]
    - before[series('eam_request_duration_seconds_count', { route: 'other' })], others);
  assert.equal(after[series('eam_request_duration_seconds_count', { route: 'authorize' })]
    - before[series('eam_request_duration_seconds_count', { route: 'authorize' })], authorizeCalls.length);
  // One RSA key in the provider's set: one injection per key-set response.
  assert.equal(after[series('eam_x5c_injections_total', { result: 'injected' })]
    - before[series('eam_x5c_injections_total', { result: 'injected' })], jwksFetches);

  // ---- the two differences a relying party can see, compared with the provider direct ----------
  // (after the metrics, so these requests are not counted above)
  // Discovery: the same document, except that the provider names the origin it was reached at
  // (koa proxy mode reads X-Forwarded-Host/-Proto): the proxy's, the same as the issuer's.
  const wellKnown = '/.well-known/openid-configuration';
  const viaProxy = await fetch(`${proxyOrigin}${wellKnown}`);
  const direct = await fetch(`${op.url}${wellKnown}`);
  const viaProxyText = await viaProxy.text();
  assert.equal(viaProxyText, (await direct.text()).replaceAll(op.url, proxyOrigin));
  assert.equal(viaProxy.headers.get('content-type'), direct.headers.get('content-type'));
  assert.equal(Number(viaProxy.headers.get('content-length')), Buffer.byteLength(viaProxyText));
  // Key set: the same keys, with the certificate (x5c) and its thumbprint (x5t#S256) added to the
  // signing key ([[upstream.x5c]]); the body is re-serialized, so it is longer, and sent with its
  // own Content-Length (Entra reads the key set too).
  const jwksProxy = await fetch(`${proxyOrigin}${JWKS_PATH}`);
  const jwksDirect = await fetch(`${op.url}${JWKS_PATH}`);
  const jwksProxyText = await jwksProxy.text();
  const jwksProxyBody = JSON.parse(jwksProxyText);
  const jwksDirectBody = await jwksDirect.json();
  assert.equal(jwksDirectBody.keys.length, 1);
  assert.equal(jwksDirectBody.keys[0].x5c, undefined);
  const [injected] = jwksProxyBody.keys;
  assert.equal(jwksProxyBody.keys.length, 1);
  assert.equal(injected.kid, signing.jwk.kid);
  assert.equal(injected.x5c.length, 1);
  const certDer = Buffer.from(injected.x5c[0], 'base64');
  assert.equal(injected['x5t#S256'], createHash('sha256').update(certDer).digest('base64url'));
  const { x5c, 'x5t#S256': x5t, ...rest } = injected;
  assert.deepEqual({ ...jwksProxyBody, keys: [rest] }, jwksDirectBody);
  assert.equal(jwksProxy.headers.get('content-type'), jwksDirect.headers.get('content-type'));
  assert.equal(jwksProxy.headers.get('content-length'), String(Buffer.byteLength(jwksProxyText)));
  const length = (res) => res.headers.get('content-length') ?? `none (${res.headers.get('transfer-encoding')})`;
  t.diagnostic(`jwks Content-Length: direct ${length(jwksDirect)}, via the proxy ${length(jwksProxy)}`);
});
