// Entra ID simulator: the Microsoft side of an External Authentication Method (EAM) sign-in.
//
// - generates an RSA key and serves it at /common/discovery/v2.0/keys the way Microsoft does
//   (kid, x5t, no alg, issuer template https://login.microsoftonline.com/{tenantid}/v2.0);
// - signs id_token_hints shaped like Microsoft's sample (SPEC §2): RS256, pre-expired
//   (exp = iat - 1), aud = the configured audience, iss = https://login.microsoftonline.com/<tid>/v2.0;
//   it can also forge one (same claims and kid, signed by a key Microsoft never published);
// - renders the auto-submitting POST form Entra sends the browser to the provider's
//   authorization endpoint (scope, response_type=id_token, response_mode=form_post, client_id,
//   redirect_uri, nonce, state, claims with acr possessionorinherence and amr values,
//   client-request-id, id_token_hint);
// - receives the form_post on /common/federation/externalauthprovider and validates the id_token
//   as Entra does: signature against the provider's discovery jwks_uri keys, an x5c certificate
//   on that key that carries it (self-issued, valid now), iss = discovery
//   issuer, aud = client_id, nonce echoed, sub = hint sub, exactly one requested acr, amr an
//   array with one allowed value. The verdict is shown ("accepted" / "rejected: why") and
//   recorded: GET /api/verdicts (JSON), GET /api/verdicts/<state>, GET /api/attempts/<state>.
//
// Module:      const sim = await start({ clientId, audience, authorizeUrl, discoveryUrl });
//              sim.url, sim.redirectUri, sim.jwksUrl, sim.configure({...}), sim.verdicts, sim.close()
// Standalone:  node simulator.mjs --port 8400 --client-id <id> --audience <guid> \
//                --authorize-url http://127.0.0.1:8080/auth \
//                --discovery-url http://127.0.0.1:8080/.well-known/openid-configuration
import http from 'node:http';
import { createHash, X509Certificate } from 'node:crypto';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import * as jose from 'jose';
import {
  closeServer, esc, formPairs, guid, listen, opaque, page, readBody, short, table,
} from './lib/util.mjs';

export const DEFAULTS = Object.freeze({
  // The client_id the provider issued to Entra (SPEC §6 example value).
  clientId: '56c2b5e3-c41d-4c14-abcf-72d407f57650',
  // The Entra app registration's Application ID: what real hints carry in aud (SPEC §2).
  audience: '600b719b-3766-4dc5-95a6-3c4a8dc31885',
  // Microsoft's sample member user.
  tenantId: '14c2f153-90a7-4689-9db7-9543bf084dad',
  user: {
    sub: 'mBfcvuhSHkDWVgV72x2ruIYdSsPSvcj2R0qfc6mGEAA',
    oid: '951ddb04-b16d-45f3-bbf7-b0fa18fa7aee',
    name: 'Test User 2',
    preferred_username: 'testuser2@contoso.com',
  },
  acrValues: ['possessionorinherence'],
  // Microsoft's list of amr values an EAM may answer with.
  amrValues: ['face', 'fido', 'fpt', 'hwk', 'iris', 'otp', 'pop', 'retina', 'sc', 'sms', 'swk', 'tel', 'vbm'],
});

export const REDIRECT_PATH = '/common/federation/externalauthprovider';
export const JWKS_PATH = '/common/discovery/v2.0/keys';
export const issuerFor = (tid) => `https://login.microsoftonline.com/${tid}/v2.0`;
const ISSUER_TEMPLATE = 'https://login.microsoftonline.com/{tenantid}/v2.0';

async function rsaKey() {
  const { privateKey, publicKey } = await jose.generateKeyPair('RS256', { modulusLength: 2048, extractable: true });
  const jwk = await jose.exportJWK(publicKey);
  // Microsoft's kid is the certificate's SHA-1 thumbprint and x5t the same value. Without a
  // certificate, the thumbprint of the public key (SPKI DER) stands in for both.
  const spki = Buffer.from((await jose.exportSPKI(publicKey)).replace(/-----[^-]+-----|\s/g, ''), 'base64');
  const kid = createHash('sha1').update(spki).digest('base64url');
  return { privateKey, publicKey, kid, jwk };
}

const bigint = (b64url) => BigInt(`0x${Buffer.from(b64url ?? '', 'base64url').toString('hex') || '0'}`);

/**
 * Entra's demand on the OP's signing key: an x5c certificate carrying exactly the JWK's key,
 * self-issued (issuer DN = subject DN), valid now. Returns null when satisfied, else why not.
 */
export function x5cProblem(jwk, now = Date.now()) {
  if (!jwk) return 'the id_token\'s kid is not in the provider\'s key set';
  if (!Array.isArray(jwk.x5c) || jwk.x5c.length === 0) {
    return `signing key ${jwk.kid} has no x5c certificate (Entra requires one on every signing key)`;
  }
  let cert;
  try {
    cert = new X509Certificate(Buffer.from(jwk.x5c[0], 'base64'));
  } catch {
    return `x5c[0] of key ${jwk.kid} is not a DER certificate`;
  }
  const certKey = cert.publicKey.export({ format: 'jwk' });
  if (certKey.kty !== 'RSA' || bigint(certKey.n) !== bigint(jwk.n) || bigint(certKey.e) !== bigint(jwk.e)) {
    return `the x5c certificate of key ${jwk.kid} carries another public key`;
  }
  if (cert.issuer !== cert.subject) return `the x5c certificate of key ${jwk.kid} is not self-issued`;
  if (now < Date.parse(cert.validFrom) || now > Date.parse(cert.validTo)) {
    return `the x5c certificate of key ${jwk.kid} is outside its validity (${cert.validFrom} - ${cert.validTo})`;
  }
  return null;
}

/** Starts the simulator. Every option can be changed later with configure(). */
export async function start(options = {}) {
  const settings = {
    host: '127.0.0.1',
    port: 0,
    clientId: DEFAULTS.clientId,
    audience: DEFAULTS.audience,
    tenantId: DEFAULTS.tenantId,
    user: { ...DEFAULTS.user },
    acrValues: [...DEFAULTS.acrValues],
    amrValues: [...DEFAULTS.amrValues],
    authorizeUrl: undefined, // the provider's authorization endpoint (through the proxy)
    discoveryUrl: undefined, // the provider's discovery document (Entra's "discovery URL")
    log: () => {},
    ...options,
  };

  const signing = await rsaKey();
  const decoy = await rsaKey(); // a second published key, as Microsoft publishes several
  const forger = await rsaKey(); // never published: signs forged hints under the trusted kid
  const jwks = {
    keys: [signing, decoy].map(({ kid, jwk }) => ({
      kty: 'RSA',
      use: 'sig',
      kid,
      x5t: kid,
      n: jwk.n,
      e: jwk.e,
      cloud_instance_name: 'microsoftonline.com',
      issuer: ISSUER_TEMPLATE,
    })),
  };

  const attempts = new Map(); // state -> attempt
  const verdicts = []; // in arrival order
  const waiters = new Set();

  /** Claims shaped like Microsoft's sample hint (SPEC §2), issued already expired. */
  function hintClaims(overrides = {}) {
    const now = Math.floor(Date.now() / 1000);
    const { tenantId: tid, user } = settings;
    return {
      ver: '2.0',
      iss: issuerFor(tid),
      sub: user.sub,
      aud: settings.audience,
      exp: now - 1,
      iat: now,
      nbf: now,
      name: user.name,
      preferred_username: user.preferred_username,
      oid: user.oid,
      tid,
      ...overrides,
    };
  }

  async function signHint({ claims = {}, forge = false } = {}) {
    const payload = hintClaims(claims);
    const header = { typ: 'JWT', alg: 'RS256', kid: signing.kid };
    const key = forge ? forger.privateKey : signing.privateKey;
    const token = await new jose.SignJWT(payload).setProtectedHeader(header).sign(key);
    return { token, header, payload };
  }

  /** A new sign-in attempt: the parameters Entra posts to the provider's authorization endpoint. */
  async function newAttempt({ forge = false } = {}) {
    if (!settings.authorizeUrl) throw new Error('simulator: authorizeUrl is not configured');
    const hint = await signHint({ forge });
    const claims = {
      id_token: {
        acr: { essential: true, values: settings.acrValues },
        amr: { essential: true, values: settings.amrValues },
      },
    };
    const params = [
      ['scope', 'openid'],
      ['response_type', 'id_token'],
      ['response_mode', 'form_post'],
      ['client_id', settings.clientId],
      ['redirect_uri', redirectUri],
      ['nonce', guid()],
      ['state', opaque(32)],
      ['claims', JSON.stringify(claims)],
      ['client-request-id', guid()],
      ['id_token_hint', hint.token],
    ];
    const get = (name) => params.find(([k]) => k === name)[1];
    const attempt = {
      state: get('state'),
      nonce: get('nonce'),
      clientRequestId: get('client-request-id'),
      action: settings.authorizeUrl,
      method: 'POST',
      params,
      hint: { header: hint.header, payload: hint.payload, forged: forge },
      startedAt: Date.now(),
    };
    attempts.set(attempt.state, attempt);
    settings.log(`attempt ${attempt.clientRequestId} -> ${attempt.action}${forge ? ' (forged hint)' : ''}`);
    return attempt;
  }

  async function providerKeys() {
    if (!settings.discoveryUrl) throw new Error('discoveryUrl is not configured');
    const res = await fetch(settings.discoveryUrl, { signal: AbortSignal.timeout(5000) });
    if (!res.ok) throw new Error(`discovery ${settings.discoveryUrl} answered ${res.status}`);
    const discovery = await res.json();
    const keys = await fetch(discovery.jwks_uri, { signal: AbortSignal.timeout(5000) });
    if (!keys.ok) throw new Error(`jwks_uri ${discovery.jwks_uri} answered ${keys.status}`);
    return { discovery, jwks: await keys.json() };
  }

  /** Entra's checks of the id_token the provider sends back. Returns the verdict. */
  async function judge(fields) {
    const get = (name) => fields.find(([k]) => k === name)?.[1];
    const state = get('state');
    const attempt = state !== undefined ? attempts.get(state) : undefined;
    const verdict = {
      state: state ?? null,
      client_request_id: attempt?.clientRequestId ?? null,
      received: Object.fromEntries(fields),
      receivedAt: Date.now(),
      elapsedMs: attempt ? Date.now() - attempt.startedAt : null,
      checks: [],
    };
    // Each check records what was compared; the first failure ends the judgement.
    const check = (name, ok, detail) => {
      verdict.checks.push({ name, ok: Boolean(ok), detail });
      if (!ok) throw Object.assign(new Error(`${name}: ${detail}`), { verdictReason: true });
    };
    try {
      check('state', attempt, state === undefined ? 'no state returned'
        : attempt ? 'matches the attempt' : 'state unknown to Entra');
      if (get('error') !== undefined) {
        verdict.error = get('error');
        verdict.error_description = get('error_description') ?? null;
        check('error', false, `${verdict.error}${verdict.error_description ? ` (${verdict.error_description})` : ''}`);
      }
      const idToken = get('id_token');
      check('id_token', idToken, idToken ? 'present' : 'no id_token in the response');
      const { discovery, jwks } = await providerKeys();
      let result;
      try {
        result = await jose.jwtVerify(idToken, jose.createLocalJWKSet(jwks), {
          algorithms: ['RS256'],
          clockTolerance: 300,
        });
      } catch (e) {
        check('signature', false, `not verified with the provider's jwks_uri keys (${e.code || e.message})`);
      }
      const { payload, protectedHeader } = result;
      verdict.claims = payload;
      verdict.header = protectedHeader;
      check('signature', true, `${protectedHeader.alg}, kid ${protectedHeader.kid} from ${discovery.jwks_uri}`);
      const signingJwk = (jwks.keys ?? []).find((k) => k.kid === protectedHeader.kid);
      const x5c = x5cProblem(signingJwk);
      check('x5c', x5c === null, x5c ?? `certificate of key ${protectedHeader.kid} matches it`);
      check('iss', payload.iss === discovery.issuer, `iss ${payload.iss}, discovery issuer ${discovery.issuer}`);
      const aud = [].concat(payload.aud);
      check('aud', aud.includes(settings.clientId), `aud ${JSON.stringify(payload.aud)}, client_id ${settings.clientId}`);
      check('nonce', payload.nonce === attempt.nonce, `nonce ${payload.nonce ?? '(missing)'}, sent ${attempt.nonce}`);
      check('sub', payload.sub === attempt.hint.payload.sub, `sub ${payload.sub}, hint sub ${attempt.hint.payload.sub}`);
      check('acr', typeof payload.acr === 'string' && settings.acrValues.includes(payload.acr),
        `acr ${JSON.stringify(payload.acr)}, requested ${settings.acrValues.join(' | ')}`);
      const allowed = Array.isArray(payload.amr) ? payload.amr.filter((v) => settings.amrValues.includes(v)) : [];
      check('amr', Array.isArray(payload.amr) && allowed.length === 1,
        `amr ${JSON.stringify(payload.amr)}, wanted an array with one of ${settings.amrValues.join(' ')}`);
      verdict.accepted = true;
      verdict.reason = null;
    } catch (e) {
      verdict.accepted = false;
      verdict.reason = e.verdictReason ? e.message : `internal: ${e.message}`;
    }
    verdicts.push(verdict);
    settings.log(`verdict ${verdict.client_request_id}: ${verdict.accepted ? 'accepted' : `rejected: ${verdict.reason}`}`);
    for (const w of waiters) w();
    return verdict;
  }

  // ---- pages ----------------------------------------------------------------------------
  const header = '<header style="background:#0f6cbd"><b>Microsoft Entra ID</b> &middot; simulator</header>';

  function landing() {
    const { user, tenantId } = settings;
    const recent = verdicts.slice(-5).reverse().map((v) => [
      new Date(v.receivedAt).toISOString(), v.accepted ? 'accepted' : `rejected: ${v.reason}`]);
    return page('Entra ID simulator', `${header}<main>
<h1>Sign in: another factor is required</h1>
<p>A Conditional Access policy asks <b>${esc(user.preferred_username)}</b> for multifactor authentication.
Choose the external authentication method.</p>
${table([
    ['user', `${user.name} <${user.preferred_username}>`],
    ['tenant (tid)', tenantId],
    ['object id (oid)', user.oid],
    ['EAM client_id', settings.clientId],
    ['hint aud (app registration)', settings.audience],
    ['authorization endpoint', settings.authorizeUrl ?? '(not configured)'],
    ['discovery', settings.discoveryUrl ?? '(not configured)'],
  ])}
<p><a class="btn" id="start" href="/start">Approve with the external method</a>
<a class="btn alt" id="forge" href="/start?forge=1">Same, with a forged hint</a></p>
${recent.length ? `<h2>Recent verdicts</h2>${table(recent)}` : ''}
</main>`);
  }

  function autoPost(attempt, auto) {
    const inputs = attempt.params
      .map(([k, v]) => `<input type="hidden" name="${esc(k)}" value="${esc(v)}">`).join('\n');
    const shown = attempt.params.map(([k, v]) => [k, k === 'id_token_hint' ? short(v, 90) : v]);
    return page('Redirecting to your external authentication method', `${header}<main>
<h1>Redirecting to your external authentication method…</h1>
<p>POST ${esc(attempt.action)}${attempt.hint.forged ? ' <b class="bad">(forged hint)</b>' : ''}</p>
<form id="eam" method="POST" action="${esc(attempt.action)}">
${inputs}
<noscript><button class="btn" type="submit">Continue</button></noscript>
${auto ? '' : '<button class="btn" id="continue" type="submit">Continue</button>'}
</form>
${table(shown)}
</main>${auto ? '<script>document.getElementById("eam").submit();</script>' : ''}`);
  }

  function verdictPage(v) {
    const claims = v.claims ? Object.entries(v.claims).map(([k, val]) => [k, typeof val === 'string' ? val : JSON.stringify(val)]) : [];
    return page(v.accepted ? 'accepted' : 'rejected', `${header}<main>
<h1>External authentication method result</h1>
<div id="verdict" class="verdict ${v.accepted ? 'ok' : 'bad'}">${v.accepted ? 'accepted' : `rejected: ${esc(v.reason)}`}</div>
${table([
    ['client-request-id', v.client_request_id ?? '(unknown attempt)'],
    ['state', v.state ?? '(none)'],
    ['elapsed since redirect', v.elapsedMs === null ? '-' : `${v.elapsedMs} ms`],
    ...v.checks.map((c) => [`check ${c.name}`, `${c.ok ? 'ok' : 'FAILED'}: ${c.detail}`]),
  ])}
${claims.length ? `<h2>id_token claims</h2>${table(claims)}` : ''}
${v.error ? `<h2>error response</h2>${table(Object.entries(v.received))}` : ''}
<p><a class="btn alt" href="/">Back</a></p>
</main>`);
  }

  const send = (res, status, type, body, extra = {}) => {
    res.writeHead(status, { 'content-type': type, 'cache-control': 'no-store', ...extra });
    res.end(body);
  };
  const json = (res, status, value) => send(res, status, 'application/json', `${JSON.stringify(value, null, 2)}\n`);

  const server = http.createServer(async (req, res) => {
    try {
      const url = new URL(req.url, 'http://simulator');
      const path = url.pathname;
      if (req.method === 'GET' && path === '/') return send(res, 200, 'text/html; charset=utf-8', landing());
      if (req.method === 'GET' && path === '/start') {
        const attempt = await newAttempt({ forge: url.searchParams.get('forge') === '1' });
        if (url.searchParams.get('format') === 'json') return json(res, 200, attempt);
        return send(res, 200, 'text/html; charset=utf-8', autoPost(attempt, url.searchParams.get('auto') !== '0'));
      }
      if (req.method === 'GET' && path === JWKS_PATH) return json(res, 200, jwks);
      const disco = /^\/([^/]+)\/v2\.0\/\.well-known\/openid-configuration$/.exec(path);
      if (req.method === 'GET' && disco) {
        const tid = disco[1] === 'common' ? '{tenantid}' : disco[1];
        return json(res, 200, { issuer: issuerFor(tid), jwks_uri: `${base}${JWKS_PATH}`, id_token_signing_alg_values_supported: ['RS256'] });
      }
      if (path === REDIRECT_PATH) {
        if (req.method !== 'POST') return send(res, 405, 'text/plain', 'form_post only\n', { allow: 'POST' });
        const verdict = await judge(formPairs(await readBody(req)));
        return send(res, 200, 'text/html; charset=utf-8', verdictPage(verdict));
      }
      if (req.method === 'GET' && path === '/api/verdicts') return json(res, 200, verdicts);
      const one = /^\/api\/(verdicts|attempts)\/(.+)$/.exec(path);
      if (req.method === 'GET' && one) {
        const state = decodeURIComponent(one[2]);
        const found = one[1] === 'verdicts' ? verdicts.find((v) => v.state === state) : attempts.get(state);
        return found ? json(res, 200, found) : json(res, 404, { error: 'not_found' });
      }
      return send(res, 404, 'text/plain', 'not found\n');
    } catch (e) {
      settings.log(`error: ${e.stack || e}`);
      if (!res.headersSent) send(res, 500, 'text/plain', `simulator error: ${e.message}\n`);
      else res.destroy();
    }
  });

  const port = await listen(server, settings.port, settings.host);
  const base = `http://${settings.host}:${port}`;
  const redirectUri = `${base}${REDIRECT_PATH}`;

  return {
    url: base,
    redirectUri,
    jwksUrl: `${base}${JWKS_PATH}`,
    issuerTemplate: 'https://login.microsoftonline.com/{tid}/v2.0',
    jwks,
    settings,
    attempts,
    verdicts,
    configure(changes) { Object.assign(settings, changes); },
    newAttempt,
    signHint,
    hintClaims,
    /** Resolves with the verdict for this state, or rejects after timeoutMs. */
    waitForVerdict(state, timeoutMs = 10000) {
      return new Promise((resolve, reject) => {
        const look = () => {
          const v = verdicts.find((x) => x.state === state);
          if (v) { cleanup(); resolve(v); }
        };
        const timer = setTimeout(() => { cleanup(); reject(new Error(`no verdict for state within ${timeoutMs} ms`)); }, timeoutMs);
        const cleanup = () => { clearTimeout(timer); waiters.delete(look); };
        waiters.add(look);
        look();
      });
    },
    close: () => closeServer(server),
  };
}

// ---- standalone ----------------------------------------------------------------------------
if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const { values } = parseArgs({
    options: {
      host: { type: 'string', default: '127.0.0.1' },
      port: { type: 'string', default: '0' },
      'client-id': { type: 'string', default: DEFAULTS.clientId },
      audience: { type: 'string', default: DEFAULTS.audience },
      'tenant-id': { type: 'string', default: DEFAULTS.tenantId },
      'authorize-url': { type: 'string' },
      'discovery-url': { type: 'string' },
    },
  });
  const sim = await start({
    host: values.host,
    port: Number(values.port),
    clientId: values['client-id'],
    audience: values.audience,
    tenantId: values['tenant-id'],
    authorizeUrl: values['authorize-url'],
    discoveryUrl: values['discovery-url'],
    log: (line) => console.error(`simulator: ${line}`),
  });
  console.log(JSON.stringify({ url: sim.url, redirect_uri: sim.redirectUri, jwks_url: sim.jwksUrl }));
  const stop = () => sim.close().then(() => process.exit(0));
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
}
