// Entra ID simulator: the Microsoft side of an External Authentication Method (EAM) sign-in,
// as strict as Entra is by Microsoft's EAM provider reference.
//
// - generates an RSA key and serves it at /common/discovery/v2.0/keys the way Microsoft does
//   (kid, x5t, no alg, issuer template https://login.microsoftonline.com/{tenantid}/v2.0);
// - signs id_token_hints shaped like Microsoft's (README "6. Validate the hint"): RS256, pre-expired (exp = iat - 1),
//   aud = the configured audience, iss = https://login.microsoftonline.com/<tid>/v2.0; for a
//   member of the tenant, or for a B2B guest (iss/tid of the resource tenant, sub/oid of the
//   guest object there, the home account's UPN, idp naming the home tenant); minted now or
//   `mintedSecondsAgo` earlier; or forged (same claims and kid, a key Microsoft never published);
// - reads the provider's metadata from the EAM's discovery URL at each sign-in, as Entra does:
//   a 200 JSON object with a Content-Length (Microsoft's documented rule; a chunked answer is
//   refused), from which it takes authorization_endpoint, issuer and jwks_uri. Metadata it
//   cannot read fails the sign-in before the redirect, as Entra's would;
// - renders the auto-submitting POST form Entra sends the browser to that authorization_endpoint
//   (scope, response_type=id_token, response_mode=form_post, client_id, redirect_uri, nonce,
//   state, claims with acr possessionorinherence and amr values, client-request-id,
//   id_token_hint);
// - receives the form_post on /common/federation/externalauthprovider and validates the id_token
//   as Entra does: the key set read from jwks_uri with a Content-Length (held to the discovery
//   rule), the signature against it, an x5c certificate on that key that carries it
//   (self-issued, valid now), iss = discovery issuer, aud = client_id, nonce echoed, sub = hint
//   sub, exactly one requested acr, amr an array of exactly one allowed value. The verdict is
//   shown ("accepted" / "rejected: why", with the AADSTS error Entra would show) and recorded:
//   GET /api/verdicts (JSON), GET /api/verdicts/<state>, GET /api/attempts/<state>.
//
// Module:      const sim = await start({ clientId, audience, discoveryUrl, guest, mintedSecondsAgo });
//              sim.url, sim.redirectUri, sim.jwksUrl, sim.configure({...}), sim.verdicts, sim.close()
// Standalone:  node simulator.mjs --port 8400 --client-id <id> --audience <guid> \
//                --discovery-url http://127.0.0.1:8080/.well-known/openid-configuration
// Pages:       / (landing), /start (one sign-in; ?guest=1 or ?guest=msa for a guest's hint,
//              ?minted=<seconds> for a hint minted that long before, ?forge=1 for a forged one,
//              ?format=json for the attempt as JSON, ?auto=0 to stop before the POST)
import http from 'node:http';
import { createHash, X509Certificate } from 'node:crypto';
import * as jose from 'jose';
import {
  closeServer, esc, formPairs, guid, listen, opaque, page, readBody, short, standalone, table,
} from './lib/util.mjs';

/** The Microsoft-account (MSA) tenant: the home tenant of a personal account invited as a guest. */
export const MSA_TENANT = '9188040d-6c67-4c5b-b112-36a304b66dad';

export const DEFAULTS = Object.freeze({
  // The client_id the provider issued to Entra (the example value of README "Configuration reference").
  clientId: '56c2b5e3-c41d-4c14-abcf-72d407f57650',
  // The Entra app registration's Application ID: what real hints carry in aud (README `[[apps]]`, `audiences`).
  audience: '600b719b-3766-4dc5-95a6-3c4a8dc31885',
  // The tenant the user signs in to (the resource tenant, for a guest).
  tenantId: '14c2f153-90a7-4689-9db7-9543bf084dad',
  // Microsoft's sample member user.
  user: {
    sub: 'mBfcvuhSHkDWVgV72x2ruIYdSsPSvcj2R0qfc6mGEAA',
    oid: '951ddb04-b16d-45f3-bbf7-b0fa18fa7aee',
    name: 'Test User 2',
    preferred_username: 'testuser2@contoso.com',
  },
  // A B2B guest of that tenant, whose account lives in another Entra tenant (Fabrikam): the
  // hint names the guest object the resource tenant holds (its own sub and oid), the home
  // account's UPN, and the home tenant's STS as idp.
  guest: {
    homeTenantId: '55809263-c8f2-41f3-bf1f-232cad27d2ca',
    user: {
      sub: '942dsfb5hdjQ9dcxdRQYv1_OyA1reUIesT4ouMaybn4',
      oid: 'b2c2bad7-0a6b-4c31-a146-dd1dae88183d',
      name: 'Adele Vance (Fabrikam)',
      preferred_username: 'adele.vance@fabrikam.example',
    },
  },
  // A personal Microsoft account invited as a guest (Microsoft's "External Test User (Hotmail)"):
  // its home tenant is the MSA tenant, but iss and tid remain the resource tenant's.
  msaGuest: {
    homeTenantId: MSA_TENANT,
    user: {
      sub: 'vOt7ejL97LOCjcCW9C5ijyE8wyOJZFXOtP8ZFaGwrBI',
      oid: 'd19a8631-ecfd-441a-af1c-eee1c1142251',
      name: 'External Test User (Hotmail)',
      preferred_username: 'externaltestuser@hotmail.com',
    },
  },
  acrValues: ['possessionorinherence'],
  // Microsoft's list of amr values an EAM may answer with.
  amrValues: ['face', 'fido', 'fpt', 'hwk', 'iris', 'otp', 'pop', 'retina', 'sc', 'sms', 'swk', 'tel', 'vbm'],
});

export const REDIRECT_PATH = '/common/federation/externalauthprovider';
export const JWKS_PATH = '/common/discovery/v2.0/keys';
export const issuerFor = (tid) => `https://login.microsoftonline.com/${tid}/v2.0`;
/** A guest's idp claim: the STS of the tenant that authenticated the account (v1 form, as Entra writes it). */
export const idpFor = (homeTid) => `https://sts.windows.net/${homeTid}/`;
const ISSUER_TEMPLATE = 'https://login.microsoftonline.com/{tenantid}/v2.0';

/** The guest profile for a `guest` option: falsy = a member; true = B2B; 'msa'; or an object. */
function guestProfile(guest) {
  if (!guest) return null;
  if (guest === true) return DEFAULTS.guest;
  if (guest === 'msa') return DEFAULTS.msaGuest;
  return { ...DEFAULTS.guest, ...guest, user: { ...DEFAULTS.guest.user, ...guest.user } };
}

/**
 * GETs provider metadata (the discovery document or the key set) as Entra reads it: `200`, no
 * redirect, a JSON object, and a `Content-Length` equal to the length of the body. Microsoft
 * documents the Content-Length rule for discovery ("The endpoint must also return the valid
 * content-length header"); nothing says Entra reads the key set more leniently, so it is held
 * to the same rule (issue 18). fetch() (undici) reports the header as it came on the wire: a
 * chunked or close-delimited answer has none. Resolves { value, contentLength }; rejects with
 * the reason.
 */
export async function readMetadata(url, what) {
  let res;
  let body;
  try {
    res = await fetch(url, {
      redirect: 'manual',
      // Uncompressed, so that Content-Length counts the bytes read here.
      headers: { accept: 'application/json', 'accept-encoding': 'identity' },
      signal: AbortSignal.timeout(5000),
    });
    body = Buffer.from(await res.arrayBuffer());
  } catch (e) {
    throw new Error(`${what} ${url} could not be read (${e.cause?.code ?? e.cause?.message ?? e.message})`);
  }
  if (res.status !== 200) throw new Error(`${what} ${url} answered ${res.status}, not 200`);
  const length = res.headers.get('content-length');
  if (length === null) {
    const framing = res.headers.get('transfer-encoding');
    throw new Error(`${what} ${url} came without Content-Length (${framing ? `Transfer-Encoding: ${framing}` : 'delimited by closing the connection'})`);
  }
  const coding = res.headers.get('content-encoding');
  if (coding && coding.toLowerCase() !== 'identity') {
    throw new Error(`${what} ${url} came with Content-Encoding: ${coding} although identity was asked for`);
  }
  if (!/^\d+$/.test(length) || Number(length) !== body.length) {
    throw new Error(`${what} ${url} has Content-Length ${length} but ${body.length} bytes`);
  }
  let value;
  try { value = JSON.parse(body.toString('utf8')); } catch { /* refused below */ }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    throw new Error(`${what} ${url} is not a JSON object`);
  }
  return { value, contentLength: Number(length) };
}

/**
 * The error Entra shows for a failed check: the AADSTS codes as README.md's troubleshooting
 * table maps them. null where Entra shows no code of its own (an error the provider sent).
 */
function entraError(check, { iss, kid } = {}) {
  switch (check) {
    case 'discovery':
      return "Entra cannot read the provider's metadata: the sign-in fails before the redirect to the provider";
    case 'jwks': case 'signature': case 'x5c':
      return `AADSTS70002: Error validating credentials. AADSTS50012: External ID token from issuer '${iss ?? '?'}' failed signature verification. KeyID of token is '${kid ?? '?'}'`;
    case 'iss': case 'aud': case 'nonce': case 'sub':
      return `AADSTS50027: Invalid JWT token (${check})`;
    case 'acr':
      return 'AADSTS5001258: Failed to validate external id_token: acr claim has unexpected value';
    case 'amr':
      return 'AADSTS5001257: Failed to validate external id_token: amr claim has unexpected value';
    default:
      return null;
  }
}

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
    // The EAM's "Discovery Endpoint": the only provider URL Entra is given. The authorization
    // endpoint and the key set are read from it, so no test can point Entra elsewhere.
    discoveryUrl: undefined,
    // Whose hint /start mints: falsy for settings.user, true for a B2B guest, 'msa' for a
    // personal account invited as a guest, or a guest profile ({ homeTenantId, user }).
    guest: null,
    // How long before /start the hint was minted (Entra's page may wait before it posts).
    mintedSecondsAgo: 0,
    // More claims in every hint, as optional claims of the app registration add (e.g. acct).
    extraClaims: {},
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

  /**
   * Claims shaped like Microsoft's hints, pre-expired (exp = iat - 1) and minted
   * `mintedSecondsAgo` before now. A member's hint names the user in the tenant. A guest's names
   * the guest object the resource tenant holds: iss and tid of that tenant, sub and oid of the
   * guest object, the home account's UPN as preferred_username, and idp naming the home
   * tenant's STS (the MSA tenant for a personal account).
   */
  function hintClaims({ guest = settings.guest, mintedSecondsAgo = settings.mintedSecondsAgo, claims = {} } = {}) {
    const iat = Math.floor(Date.now() / 1000) - mintedSecondsAgo;
    const tid = settings.tenantId;
    const profile = guestProfile(guest);
    const user = profile?.user ?? settings.user;
    return {
      ver: '2.0',
      iss: issuerFor(tid),
      sub: user.sub,
      aud: settings.audience,
      exp: iat - 1,
      iat,
      nbf: iat,
      name: user.name,
      preferred_username: user.preferred_username,
      oid: user.oid,
      tid,
      ...(profile ? { idp: idpFor(profile.homeTenantId) } : {}),
      ...settings.extraClaims,
      ...claims,
    };
  }

  async function signHint({ forge = false, ...shape } = {}) {
    const payload = hintClaims(shape);
    const header = { typ: 'JWT', alg: 'RS256', kid: signing.kid };
    const key = forge ? forger.privateKey : signing.privateKey;
    const token = await new jose.SignJWT(payload).setProtectedHeader(header).sign(key);
    return { token, header, payload };
  }

  /** The provider's discovery document, read as Entra reads it; rejects with the reason. */
  async function readDiscovery() {
    const url = settings.discoveryUrl;
    if (!url) throw new Error('no discovery URL is configured for the EAM');
    const { value, contentLength } = await readMetadata(url, 'discovery document');
    for (const member of ['issuer', 'authorization_endpoint', 'jwks_uri']) {
      if (typeof value[member] !== 'string' || !URL.canParse(value[member])) {
        throw new Error(`discovery document ${url} has no usable ${member}`);
      }
    }
    return {
      url, contentLength, issuer: value.issuer, authorization_endpoint: value.authorization_endpoint, jwks_uri: value.jwks_uri,
    };
  }

  function record(verdict) {
    verdicts.push(verdict);
    settings.log(`verdict ${verdict.client_request_id}: ${verdict.accepted ? 'accepted' : `rejected: ${verdict.reason}`}`);
    for (const w of waiters) w();
    return verdict;
  }

  /**
   * A new sign-in attempt: Entra reads the provider's discovery document (Entra caches it for
   * 24 hours; read at every attempt here, so each test sees the provider as it is now), mints
   * the hint and posts the parameters to the discovered authorization_endpoint. When the
   * metadata cannot be read, the browser never reaches the provider: the attempt ends at once
   * with its verdict (attempt.action is null, attempt.verdict says why).
   */
  async function newAttempt({
    forge = false, guest = settings.guest, mintedSecondsAgo = settings.mintedSecondsAgo,
  } = {}) {
    let discovery = null;
    let problem = null;
    try {
      discovery = await readDiscovery();
    } catch (e) {
      problem = e.message;
    }
    const hint = await signHint({ forge, guest, mintedSecondsAgo });
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
      action: discovery?.authorization_endpoint ?? null,
      method: 'POST',
      params,
      discovery,
      hint: {
        header: hint.header, payload: hint.payload, forged: forge, guest: Boolean(guestProfile(guest)), mintedSecondsAgo,
      },
      startedAt: Date.now(),
    };
    attempts.set(attempt.state, attempt);
    if (problem) {
      attempt.verdict = record({
        state: attempt.state,
        client_request_id: attempt.clientRequestId,
        received: {},
        receivedAt: Date.now(),
        elapsedMs: 0,
        beforeRedirect: true,
        checks: [{ name: 'discovery', ok: false, detail: problem }],
        accepted: false,
        reason: `discovery: ${problem}`,
        entra_error: entraError('discovery'),
      });
      return attempt;
    }
    const shape = [forge && 'forged hint', attempt.hint.guest && 'guest', mintedSecondsAgo && `minted ${mintedSecondsAgo} s before`]
      .filter(Boolean).join(', ');
    settings.log(`attempt ${attempt.clientRequestId} -> ${attempt.action}${shape ? ` (${shape})` : ''}`);
    return attempt;
  }

  /** Entra's checks of the answer the provider posts back. Returns the verdict. */
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
    // What Entra's error names: the token's issuer and kid, read without trusting them.
    const seen = {};
    // Each check records what was compared; the first failure ends the judgement.
    const check = (name, ok, detail) => {
      verdict.checks.push({ name, ok: Boolean(ok), detail });
      if (!ok) {
        verdict.entra_error = entraError(name, seen);
        throw Object.assign(new Error(`${name}: ${detail}`), { verdictReason: true });
      }
    };
    try {
      check('state', attempt?.discovery, state === undefined ? 'no state returned'
        : !attempt ? 'state unknown to Entra' : attempt.discovery ? 'matches the attempt'
          : 'that attempt ended before the redirect');
      if (get('error') !== undefined) {
        verdict.error = get('error');
        verdict.error_description = get('error_description') ?? null;
        check('error', false, `${verdict.error}${verdict.error_description ? ` (${verdict.error_description})` : ''}`);
      }
      const idToken = get('id_token');
      check('id_token', idToken, idToken ? 'present' : 'no id_token in the response');
      try {
        seen.iss = jose.decodeJwt(idToken).iss;
        seen.kid = jose.decodeProtectedHeader(idToken).kid;
      } catch { /* the signature check names it */ }
      const { discovery } = attempt;
      const keySet = await readMetadata(discovery.jwks_uri, 'key set').catch((e) => ({ problem: e.message }));
      if (!keySet.problem && !Array.isArray(keySet.value.keys)) keySet.problem = `key set ${discovery.jwks_uri} has no keys array`;
      check('jwks', !keySet.problem, keySet.problem ?? `${discovery.jwks_uri}, Content-Length ${keySet.contentLength}`);
      const keys = keySet.value;
      let result;
      try {
        result = await jose.jwtVerify(idToken, jose.createLocalJWKSet(keys), {
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
      const signingJwk = keys.keys.find((k) => k.kid === protectedHeader.kid);
      const x5c = x5cProblem(signingJwk);
      check('x5c', x5c === null, x5c ?? `certificate of key ${protectedHeader.kid} matches it`);
      check('iss', payload.iss === discovery.issuer, `iss ${payload.iss}, discovery issuer ${discovery.issuer}`);
      const aud = [].concat(payload.aud);
      check('aud', aud.includes(settings.clientId), `aud ${JSON.stringify(payload.aud)}, client_id ${settings.clientId}`);
      check('nonce', payload.nonce === attempt.nonce, `nonce ${payload.nonce ?? '(missing)'}, sent ${attempt.nonce}`);
      check('sub', payload.sub === attempt.hint.payload.sub, `sub ${payload.sub}, hint sub ${attempt.hint.payload.sub}`);
      check('acr', typeof payload.acr === 'string' && settings.acrValues.includes(payload.acr),
        `acr ${JSON.stringify(payload.acr)}, requested ${settings.acrValues.join(' | ')}`);
      // Exactly one value, and an allowed one: Microsoft's "only one method claim should be
      // returned". An array that adds another value (even one outside the list) is refused.
      const { amr } = payload;
      check('amr', Array.isArray(amr) && amr.length === 1 && settings.amrValues.includes(amr[0]),
        `amr ${JSON.stringify(amr)}, wanted an array of exactly one of ${settings.amrValues.join(' ')}`);
      verdict.accepted = true;
      verdict.reason = null;
    } catch (e) {
      verdict.accepted = false;
      verdict.reason = e.verdictReason ? e.message : `internal: ${e.message}`;
    }
    return record(verdict);
  }

  // ---- pages ----------------------------------------------------------------------------
  const header = '<header style="background:#0f6cbd"><b>Microsoft Entra ID</b> &middot; simulator</header>';

  function landing() {
    const { tenantId } = settings;
    const profile = guestProfile(settings.guest);
    const user = profile?.user ?? settings.user;
    const recent = verdicts.slice(-5).reverse().map((v) => [
      new Date(v.receivedAt).toISOString(), v.accepted ? 'accepted' : `rejected: ${v.reason}`]);
    return page('Entra ID simulator', `${header}<main>
<h1>Sign in: another factor is required</h1>
<p>A Conditional Access policy asks <b>${esc(user.preferred_username)}</b> for multifactor authentication.
Choose the external authentication method.</p>
${table([
    ['user', `${user.name} <${user.preferred_username}>${profile ? ' (guest)' : ''}`],
    ['tenant (tid)', tenantId],
    ...(profile ? [['home tenant (idp)', idpFor(profile.homeTenantId)]] : []),
    ['object id (oid)', user.oid],
    ['EAM client_id', settings.clientId],
    ['hint aud (app registration)', settings.audience],
    ['hint minted', settings.mintedSecondsAgo ? `${settings.mintedSecondsAgo} s before the redirect` : 'at the redirect'],
    ['discovery URL', settings.discoveryUrl ?? '(not configured)'],
    ['authorization endpoint', 'read from discovery at each sign-in'],
  ])}
<p><a class="btn" id="start" href="/start">Approve with the external method</a>
<a class="btn alt" id="guest" href="/start?guest=1">As a guest user</a>
<a class="btn alt" id="stale" href="/start?minted=400">With a hint minted 400 s ago</a>
<a class="btn alt" id="forge" href="/start?forge=1">With a forged hint</a></p>
${recent.length ? `<h2>Recent verdicts</h2>${table(recent)}` : ''}
</main>`);
  }

  function autoPost(attempt, auto) {
    const inputs = attempt.params
      .map(([k, v]) => `<input type="hidden" name="${esc(k)}" value="${esc(v)}">`).join('\n');
    const shown = attempt.params.map(([k, v]) => [k, k === 'id_token_hint' ? short(v, 90) : v]);
    return page('Redirecting to your external authentication method', `${header}<main>
<h1>Redirecting to your external authentication method…</h1>
<p>POST ${esc(attempt.action)} (the authorization_endpoint of ${esc(attempt.discovery.url)})${attempt.hint.forged ? ' <b class="bad">(forged hint)</b>' : ''}</p>
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
${v.entra_error ? `<p id="entra-error">${esc(v.entra_error)}</p>` : ''}
${v.beforeRedirect ? '<p>The browser was not sent to the provider.</p>' : ''}
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

  // With a Content-Length, as Microsoft's endpoints answer (writeHead without one would chunk).
  const send = (res, status, type, body, extra = {}) => {
    res.writeHead(status, {
      'content-type': type, 'content-length': Buffer.byteLength(body), 'cache-control': 'no-store', ...extra,
    });
    res.end(body);
  };
  const json = (res, status, value) => send(res, status, 'application/json', `${JSON.stringify(value, null, 2)}\n`);

  const server = http.createServer(async (req, res) => {
    try {
      const url = new URL(req.url, 'http://simulator');
      const path = url.pathname;
      if (req.method === 'GET' && path === '/') return send(res, 200, 'text/html; charset=utf-8', landing());
      if (req.method === 'GET' && path === '/start') {
        const q = url.searchParams;
        const minted = q.get('minted');
        if (minted !== null && !/^\d{1,6}$/.test(minted)) return send(res, 400, 'text/plain', 'minted: seconds, a whole number\n');
        const attempt = await newAttempt({
          forge: q.get('forge') === '1',
          guest: q.has('guest') ? (q.get('guest') === 'msa' ? 'msa' : q.get('guest') !== '0') : settings.guest,
          mintedSecondsAgo: minted !== null ? Number(minted) : settings.mintedSecondsAgo,
        });
        if (q.get('format') === 'json') return json(res, attempt.action ? 200 : 502, attempt);
        // Metadata Entra cannot read ends the sign-in here, on Entra's own error page.
        if (!attempt.action) return send(res, 200, 'text/html; charset=utf-8', verdictPage(attempt.verdict));
        return send(res, 200, 'text/html; charset=utf-8', autoPost(attempt, q.get('auto') !== '0'));
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
await standalone(import.meta.url, 'simulator', {
  'client-id': { type: 'string', default: DEFAULTS.clientId },
  audience: { type: 'string', default: DEFAULTS.audience },
  'tenant-id': { type: 'string', default: DEFAULTS.tenantId },
  'discovery-url': { type: 'string' },
}, (values, common) => start({
  ...common,
  clientId: values['client-id'],
  audience: values.audience,
  tenantId: values['tenant-id'],
  discoveryUrl: values['discovery-url'],
}), (sim) => ({ url: sim.url, redirect_uri: sim.redirectUri, jwks_url: sim.jwksUrl }));
