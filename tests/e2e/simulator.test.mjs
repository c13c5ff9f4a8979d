// The Entra simulator on its own, against a stub provider whose metadata framing and id_tokens
// the test controls: what the simulator reads and refuses as Entra would, with no browser and no
// proxy in between (the certificate is still made with `eam-proxy cert`).
//  - it posts to the authorization_endpoint of the discovery document, wherever that is;
//  - a discovery document without Content-Length ends the sign-in before the redirect;
//  - a key set without Content-Length fails the id_token like AADSTS50012;
//  - amr must be an array of exactly one allowed value;
//  - hints: pre-expired, minted now or N seconds before, for a member or a guest.
import { test, before, after, beforeEach } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import * as jose from 'jose';
import * as simulator from './simulator.mjs';
import { opSigningKey } from './lib/stack.mjs';
import { closeServer, listen, parseForm } from './lib/util.mjs';

const DISCOVERY_PATH = '/.well-known/openid-configuration';
const KEYS_PATH = '/keys';

/**
 * A provider reduced to its metadata: discovery and a key set whose one key carries an x5c
 * certificate, each sent with a Content-Length unless its path is in `chunked`. idToken()
 * signs what the provider would post back for an attempt.
 */
async function startStubProvider({ jwk, certPem, clientId }) {
  const server = http.createServer();
  const port = await listen(server, 0, '127.0.0.1');
  const base = `http://127.0.0.1:${port}`;
  const x5c = [certPem.replace(/-----[^-]+-----|\s/g, '')];
  const { kty, n, e, kid } = jwk;
  const documents = {
    [DISCOVERY_PATH]: {
      issuer: base,
      // Neither oidc-provider's /auth nor the proxy's default /authorize: only discovery names it.
      authorization_endpoint: `${base}/oauth2/v1/eam-authorize`,
      jwks_uri: `${base}${KEYS_PATH}`,
      response_types_supported: ['id_token'],
      response_modes_supported: ['form_post'],
      id_token_signing_alg_values_supported: ['RS256'],
    },
    [KEYS_PATH]: { keys: [{ kty, use: 'sig', kid, n, e, x5c }] },
  };
  const op = { url: base, discoveryUrl: `${base}${DISCOVERY_PATH}`, documents, chunked: new Set() };
  server.on('request', (req, res) => {
    const value = documents[new URL(req.url, base).pathname];
    if (!value) {
      res.writeHead(404, { 'content-length': 0 });
      return res.end();
    }
    const body = JSON.stringify(value);
    if (op.chunked.has(new URL(req.url, base).pathname)) {
      // Node sends a response chunked when its head leaves without a length.
      res.writeHead(200, { 'content-type': 'application/json' });
      res.write(body.slice(0, 10));
      return res.end(body.slice(10));
    }
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
    return res.end(body);
  });
  const key = await jose.importJWK(jwk, 'RS256');
  op.idToken = (attempt, claims = {}) => new jose.SignJWT({
    sub: attempt.hint.payload.sub,
    nonce: attempt.nonce,
    acr: 'possessionorinherence',
    amr: ['fido'],
    ...claims,
  }).setProtectedHeader({ alg: 'RS256', kid }).setIssuer(base).setAudience(clientId)
    .setIssuedAt().setExpirationTime('10m').sign(key);
  op.close = () => closeServer(server);
  return op;
}

let sim;
let op;
let runDir;

before(async () => {
  runDir = fs.mkdtempSync(path.join(os.tmpdir(), 'eam-e2e-sim-'));
  const { jwk, certPath } = await opSigningKey(runDir);
  sim = await simulator.start();
  op = await startStubProvider({ jwk, certPem: fs.readFileSync(certPath, 'utf8'), clientId: sim.settings.clientId });
  sim.configure({ discoveryUrl: op.discoveryUrl });
});

after(async () => {
  await sim?.close();
  await op?.close();
  if (runDir) fs.rmSync(runDir, { recursive: true, force: true });
});

beforeEach(() => {
  op.chunked.clear();
  sim.configure({ guest: null, mintedSecondsAgo: 0 });
});

/** GET /start as the browser would; the page and the attempt it started. */
async function startAttempt(query = '') {
  const res = await fetch(`${sim.url}/start?auto=0${query}`);
  const html = await res.text();
  const attempt = [...sim.attempts.values()].at(-1);
  return { res, html, attempt };
}

/** The provider's form_post to Entra's redirect_uri; resolves with Entra's verdict. */
async function answer(attempt, fields) {
  const res = await fetch(sim.redirectUri, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ state: attempt.state, ...fields }),
  });
  await res.text();
  return sim.waitForVerdict(attempt.state);
}

test('posts to the authorization_endpoint read from the discovery document', async () => {
  const { html, attempt } = await startAttempt();
  const form = parseForm(html, sim.url);
  const discovered = op.documents[DISCOVERY_PATH].authorization_endpoint;
  assert.equal(form.method, 'POST');
  assert.equal(form.action, discovered);
  assert.equal(attempt.action, discovered);
  assert.equal(attempt.discovery.url, op.discoveryUrl);
  assert.equal(attempt.discovery.jwks_uri, `${op.url}${KEYS_PATH}`);
  assert.ok(attempt.discovery.contentLength > 0);
  assert.deepEqual(form.fields.map(([k]) => k), ['scope', 'response_type', 'response_mode', 'client_id',
    'redirect_uri', 'nonce', 'state', 'claims', 'client-request-id', 'id_token_hint']);

  const verdict = await answer(attempt, { id_token: await op.idToken(attempt) });
  assert.equal(verdict.accepted, true, verdict.reason);
  assert.equal(verdict.entra_error, undefined);
});

test('a discovery document without Content-Length fails the sign-in before the redirect', async () => {
  op.chunked.add(DISCOVERY_PATH);
  const { res, html, attempt } = await startAttempt();
  assert.equal(res.status, 200, "Entra's own error page");
  assert.equal(parseForm(html, sim.url), undefined, 'no form: the browser is not sent to the provider');
  assert.equal(attempt.action, null);
  const { verdict } = attempt;
  assert.equal(verdict.accepted, false);
  assert.equal(verdict.beforeRedirect, true);
  assert.deepEqual(verdict.checks.map((c) => [c.name, c.ok]), [['discovery', false]]);
  assert.equal(verdict.reason,
    `discovery: discovery document ${op.discoveryUrl} came without Content-Length (Transfer-Encoding: chunked)`);
  assert.match(verdict.entra_error, /cannot read the provider's metadata/);
  assert.match(html, /id="verdict"[^>]*>rejected: discovery: discovery document .* came without Content-Length/);
  assert.equal(sim.verdicts.at(-1), verdict, 'recorded like any verdict');

  const json = await fetch(`${sim.url}/start?format=json`);
  assert.equal(json.status, 502);
  assert.equal((await json.json()).action, null);
});

test('a key set without Content-Length fails the id_token as AADSTS50012 would', async () => {
  const { attempt } = await startAttempt();
  op.chunked.add(KEYS_PATH);
  const idToken = await op.idToken(attempt);
  const verdict = await answer(attempt, { id_token: idToken });
  assert.equal(verdict.accepted, false);
  assert.deepEqual(verdict.checks.map((c) => [c.name, c.ok]), [['state', true], ['id_token', true], ['jwks', false]]);
  assert.equal(verdict.reason, `jwks: key set ${op.url}${KEYS_PATH} came without Content-Length (Transfer-Encoding: chunked)`);
  const { kid } = jose.decodeProtectedHeader(idToken);
  assert.equal(verdict.entra_error, 'AADSTS70002: Error validating credentials. AADSTS50012: External ID token '
    + `from issuer '${op.url}' failed signature verification. KeyID of token is '${kid}'`);
});

test('amr must be an array of exactly one allowed value', async () => {
  const cases = [
    [['fido'], true],
    [['fido', 'pwd'], false], // one allowed value among others: the gentle simulator took it
    [['fido', 'otp'], false],
    [['pwd'], false],
    [[], false],
    ['fido', false],
    [undefined, false],
  ];
  for (const [amr, accepted] of cases) {
    const { attempt } = await startAttempt();
    const verdict = await answer(attempt, { id_token: await op.idToken(attempt, { amr }) });
    assert.equal(verdict.accepted, accepted, `amr ${JSON.stringify(amr)}: ${verdict.reason}`);
    if (!accepted) {
      assert.equal(verdict.checks.at(-1).name, 'amr', verdict.reason);
      assert.match(verdict.reason, /wanted an array of exactly one of face fido/);
      assert.match(verdict.entra_error, /^AADSTS5001257:/);
    }
  }
});

test('hints are pre-expired and minted now, or mintedSecondsAgo before', async () => {
  const now = () => Math.floor(Date.now() / 1000);
  const fresh = (await startAttempt()).attempt.hint.payload;
  assert.ok(Math.abs(now() - fresh.iat) <= 1);
  assert.equal(fresh.exp, fresh.iat - 1);
  assert.equal(fresh.nbf, fresh.iat);

  const old = (await startAttempt('&minted=30')).attempt;
  assert.equal(old.hint.mintedSecondsAgo, 30);
  const { iat, exp, nbf } = old.hint.payload;
  assert.ok(Math.abs(now() - 30 - iat) <= 1, `iat ${iat}`);
  assert.equal(exp, iat - 1);
  assert.equal(nbf, iat);

  sim.configure({ mintedSecondsAgo: 400 });
  const configured = (await startAttempt()).attempt.hint.payload;
  assert.ok(Math.abs(now() - 400 - configured.iat) <= 1);

  assert.equal((await fetch(`${sim.url}/start?minted=soon`)).status, 400);
});

test('guest hints: the resource tenant\'s guest object, the home account, idp of the home tenant', async () => {
  const { DEFAULTS, MSA_TENANT, issuerFor, idpFor } = simulator;
  const member = (await startAttempt()).attempt.hint.payload;
  assert.equal(member.idp, undefined, 'a member\'s hint has no idp');
  assert.equal(member.sub, DEFAULTS.user.sub);

  for (const [query, profile] of [['&guest=1', DEFAULTS.guest], ['&guest=msa', DEFAULTS.msaGuest]]) {
    const { attempt } = await startAttempt(query);
    const hint = attempt.hint.payload;
    assert.equal(attempt.hint.guest, true);
    assert.equal(hint.tid, DEFAULTS.tenantId, `${query}: tid is the resource tenant`);
    assert.equal(hint.iss, issuerFor(DEFAULTS.tenantId));
    assert.equal(hint.aud, DEFAULTS.audience);
    assert.equal(hint.idp, idpFor(profile.homeTenantId));
    assert.equal(hint.sub, profile.user.sub);
    assert.equal(hint.oid, profile.user.oid);
    assert.equal(hint.preferred_username, profile.user.preferred_username);
    assert.notEqual(hint.oid, DEFAULTS.user.oid);
    assert.equal(hint.exp, hint.iat - 1);
    // And Entra accepts the provider's answer for the guest object's sub.
    const verdict = await answer(attempt, { id_token: await op.idToken(attempt) });
    assert.equal(verdict.accepted, true, verdict.reason);
  }
  assert.equal(idpFor(MSA_TENANT), 'https://sts.windows.net/9188040d-6c67-4c5b-b112-36a304b66dad/');

  sim.configure({ guest: true, mintedSecondsAgo: 30 });
  const page = await (await fetch(sim.url)).text();
  assert.match(page, new RegExp(`${DEFAULTS.guest.user.preferred_username.replace(/\./g, '\\.')}&gt; \\(guest\\)`));
});

test('the simulator\'s own metadata carries Content-Length, as Microsoft\'s does', async () => {
  const keys = await simulator.readMetadata(sim.jwksUrl, 'key set');
  assert.ok(keys.contentLength > 0);
  assert.equal(keys.value.keys.length, 2);
  const discovery = await simulator.readMetadata(`${sim.url}/common/v2.0/.well-known/openid-configuration`, 'discovery document');
  assert.equal(discovery.value.jwks_uri, sim.jwksUrl);
});
