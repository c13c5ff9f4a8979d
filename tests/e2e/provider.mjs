// The upstream: a real OpenID provider (npm oidc-provider) configured as an Entra EAM provider.
//
// - authorization endpoint /auth accepts POST (enableHttpPostMethods; that needs the long-lived
//   session cookie SameSite=None);
// - response types id_token (Entra's implicit form_post flow) and code (ordinary clients);
// - the claims parameter, acr values possessionorinherence / knowledgeorpossession /
//   knowledgeorinherence, extraParams for entra_id_token_hint and every entra_* the proxy adds;
// - a login interaction that authenticates the user as entra_sub with the requested acr and an
//   amr (fido), then a consent of openid only;
// - two clients: Entra (implicit, id_token, form_post to the simulator's redirect_uri) and an
//   ordinary confidential code-flow client (as Entra External ID / Azure AD B2C / Okta
//   federation would use).
//
// The issuer is the proxy's URL: browsers and Entra reach the provider through eam-proxy.
//
// - optionally a misconfigured login (`tamper`): the Entra login result (accountId, acr, amr)
//   passed through a function, as an OP with a wrong subject mapping or acr/amr settings would
//   issue it; the login prompt's essential-acr checks are then dropped, so the OP issues what
//   the tampered login says instead of asking again.
//
// Module:      const op = await start({ issuer, entraClient: { clientId, redirectUris },
//                                      codeClient: { clientId, clientSecret, redirectUris },
//                                      tamper: (login) => login,
//                                      signingKey: a private JWK (default: a new one) });
//              op.url (direct), op.issuer, op.received (authorization requests as received),
//              op.requests (every request), op.logins, op.close()
// Standalone:  node provider.mjs --port 8081 --issuer http://127.0.0.1:8080 \
//                --entra-client-id <id> --entra-redirect-uri http://127.0.0.1:8400/common/federation/externalauthprovider
import http from 'node:http';
import { randomBytes } from 'node:crypto';
import * as jose from 'jose';
import Provider, { interactionPolicy } from 'oidc-provider';
import {
  closeServer, esc, formPairs, listen, page, readBody, short, standalone, table,
} from './lib/util.mjs';

export const ACR_VALUES = ['possessionorinherence', 'knowledgeorpossession', 'knowledgeorinherence'];
export const ENTRA_PARAMS = [
  'entra_id_token_hint', 'entra_iss', 'entra_tid', 'entra_oid', 'entra_preferred_username', 'entra_sub',
];
export const AUTHORIZATION_PATH = '/auth';
/** oidc-provider's key set (its discovery document's jwks_uri): no x5c of its own. */
export const JWKS_PATH = '/jwks';
/** The amr this provider reports for its second factor (one of Microsoft's allowed values). */
export const EAM_AMR = 'fido';

const LOOPBACK = new Set(['127.0.0.1', 'localhost', '[::1]']);

/** A private RS256 JWK for the provider's id_tokens (the setup makes its certificate from it). */
export async function newSigningKey() {
  const { privateKey } = await jose.generateKeyPair('RS256', { modulusLength: 2048, extractable: true });
  return { ...(await jose.exportJWK(privateKey)), kid: `op-${randomBytes(6).toString('hex')}`, alg: 'RS256', use: 'sig' };
}

export async function start(options = {}) {
  const opts = {
    host: '127.0.0.1',
    port: 0,
    issuer: undefined, // default: the provider's own URL (no proxy in front)
    signingKey: undefined, // private JWK; default: a new one (see newSigningKey)
    entraClient: undefined, // { clientId, redirectUris }
    codeClient: undefined, // { clientId, clientSecret, redirectUris }
    tamper: undefined, // (login) => login, for the Entra client's logins
    log: () => {},
    ...options,
  };

  const received = []; // every request to the authorization endpoint, as the provider got it
  const requests = []; // every request: method, path, the X-Forwarded-* the proxy added
  const logins = []; // every completed login interaction

  const signingKey = opts.signingKey ?? await newSigningKey();

  const clients = [];
  if (opts.entraClient) {
    clients.push({
      client_id: opts.entraClient.clientId,
      client_name: 'Microsoft Entra ID (external authentication method)',
      redirect_uris: opts.entraClient.redirectUris,
      response_types: ['id_token'],
      grant_types: ['implicit'],
      token_endpoint_auth_method: 'none',
      id_token_signed_response_alg: 'RS256',
    });
  }
  if (opts.codeClient) {
    clients.push({
      client_id: opts.codeClient.clientId,
      client_secret: opts.codeClient.clientSecret,
      client_name: 'Federated app (code flow)',
      redirect_uris: opts.codeClient.redirectUris,
      response_types: ['code'],
      grant_types: ['authorization_code'],
      token_endpoint_auth_method: 'client_secret_basic',
    });
  }
  const isEntraClient = (clientId) => opts.entraClient && clientId === opts.entraClient.clientId;

  const configuration = {
    clients,
    jwks: { keys: [signingKey] },
    findAccount: async (ctx, sub) => ({ accountId: sub, claims: async () => ({ sub }) }),
    scopes: ['openid'],
    // acr comes with acrValues; amr must be listed to be released in the id_token.
    claims: { openid: ['sub'], acr: null, amr: null },
    acrValues: ACR_VALUES,
    responseTypes: ['id_token', 'code'],
    enableHttpPostMethods: true,
    extraParams: [...ENTRA_PARAMS, 'client-request-id'],
    features: {
      devInteractions: { enabled: false },
      claimsParameter: { enabled: true },
    },
    cookies: {
      keys: [randomBytes(32).toString('base64url')],
      // Entra's POST is a cross-site navigation: the session cookie must be SameSite=None
      // (oidc-provider refuses enableHttpPostMethods otherwise), hence Secure (see below).
      long: { httpOnly: true, sameSite: 'none' },
      short: { httpOnly: true, sameSite: 'lax' },
    },
    interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}`, policy: loginPolicy(opts.tamper) },
    renderError: async (ctx, out) => {
      ctx.type = 'html';
      ctx.body = page('Provider error', `<header style="background:#7c2d12"><b>Demo OpenID provider</b></header><main>
<h1 id="error">${esc(out.error)}</h1>${table(Object.entries(out))}</main>`);
    },
    ttl: {
      AccessToken: 600, AuthorizationCode: 60, IdToken: 600, Interaction: 600, Session: 3600, Grant: 3600,
    },
  };

  function loginPolicy(tamper) {
    const policy = interactionPolicy.base();
    if (tamper) {
      const { checks } = policy.get('login');
      checks.remove('essential_acrs');
      checks.remove('essential_acr');
    }
    return policy;
  }

  const server = http.createServer();
  const port = await listen(server, opts.port, opts.host);
  const url = `http://${opts.host}:${port}`;
  const issuer = opts.issuer ?? url;
  const provider = new Provider(issuer, configuration);

  // Behind eam-proxy: believe its X-Forwarded-For/-Proto/-Host (koa's proxy mode).
  provider.proxy = true;

  // The loopback stack has no TLS. SameSite=None cookies must be Secure, and browsers keep
  // Secure cookies from http://127.0.0.1 (a potentially trustworthy origin), but oidc-provider
  // (koa's cookies module) refuses to set them over plain http. For a loopback http issuer only,
  // cookies are treated as secure; URLs keep the http scheme.
  const issuerUrl = new URL(issuer);
  if (issuerUrl.protocol === 'http:' && LOOPBACK.has(issuerUrl.hostname)) {
    Object.defineProperty(provider.request, 'secure', { get: () => true, configurable: true });
  }

  // Entra's redirect_uri is https in production; the simulator's is http on loopback.
  // oidc-provider's documented switch for implicit-flow web clients on http / localhost:
  const { invalidate } = provider.Client.Schema.prototype;
  provider.Client.Schema.prototype.invalidate = function allowLoopbackImplicit(message, code) {
    if (code === 'implicit-force-https' || code === 'implicit-forbid-localhost') return;
    invalidate.call(this, message, code);
  };

  provider.on('authorization.error', (ctx, err) => {
    opts.log(`authorization error: ${err.error} (${err.error_description})`);
    const last = received.at(-1);
    if (last && !last.error) last.error = { error: err.error, error_description: err.error_description };
  });
  provider.on('server_error', (ctx, err) => opts.log(`server_error: ${err.stack || err}`));

  const callback = provider.callback();

  // ---- interactions: login (as entra_sub for Entra, a user name otherwise) then consent ----
  const chrome = '<header style="background:#065f46"><b>Demo OpenID provider</b> &middot; external authentication method</header>';

  function requestedAcr(params) {
    try {
      const claims = JSON.parse(params.claims ?? '{}');
      const values = claims?.id_token?.acr?.values ?? (claims?.id_token?.acr?.value ? [claims.id_token.acr.value] : []);
      const found = values.find((v) => ACR_VALUES.includes(v));
      if (found) return found;
    } catch { /* not JSON: ignored */ }
    return (params.acr_values ?? '').split(' ').find((v) => ACR_VALUES.includes(v));
  }

  function requestedAmr(params) {
    try {
      const values = JSON.parse(params.claims ?? '{}')?.id_token?.amr?.values;
      if (Array.isArray(values) && values.length) return values.includes(EAM_AMR) ? EAM_AMR : values[0];
    } catch { /* ignored */ }
    return EAM_AMR;
  }

  function loginPage(uid, details) {
    const { params } = details;
    if (isEntraClient(params.client_id)) {
      const rows = ENTRA_PARAMS.filter((k) => params[k] !== undefined)
        .map((k) => [k, k === 'entra_id_token_hint' ? short(params[k], 90) : params[k]]);
      return page('Verify your identity', `${chrome}<main>
<h1>Verify it's you, ${esc(params.entra_preferred_username ?? params.entra_sub)}</h1>
<p>Microsoft Entra ID asked for a second factor (acr <b>${esc(requestedAcr(params) ?? 'none')}</b>).
The identity below comes from the id_token_hint that eam-proxy validated.</p>
${table([...rows, ['prompt', params.prompt ?? '(none)'], ['client-request-id', params['client-request-id'] ?? '(none)']])}
<form method="post" action="/interaction/${esc(uid)}/login">
<input type="hidden" name="mode" value="entra">
<button class="btn" id="approve" type="submit">Approve with security key (${esc(requestedAmr(params))})</button>
</form>
<form method="post" action="/interaction/${esc(uid)}/abort"><button class="btn alt" id="deny" type="submit">Deny</button></form>
</main>`);
    }
    return page('Sign in', `${chrome}<main>
<h1>Sign in</h1>
<p>Client <b>${esc(params.client_id)}</b> asks you to sign in.</p>
<form method="post" action="/interaction/${esc(uid)}/login">
<input type="hidden" name="mode" value="password">
<p><label>User name <input type="text" id="login" name="login" value="alice"></label></p>
<button class="btn" id="signin" type="submit">Sign in</button>
</form>
</main>`);
  }

  function consentPage(uid, details) {
    return page('Consent', `${chrome}<main>
<h1>Allow ${esc(details.params.client_id)} to know it's you?</h1>
<p>Requested scope: <b>openid</b> (your user identifier only).</p>
<form method="post" action="/interaction/${esc(uid)}/confirm">
<button class="btn" id="allow" type="submit">Allow</button>
</form>
</main>`);
  }

  async function interaction(req, res, uid, action) {
    const details = await provider.interactionDetails(req, res);
    if (details.uid !== uid) throw new Error('interaction mismatch');
    const { prompt, params } = details;
    const html = (body) => { res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' }); res.end(body); };

    if (req.method === 'GET' && action === undefined) {
      if (prompt.name === 'login') {
        if (isEntraClient(params.client_id) && !params.entra_sub) {
          // Not validated by eam-proxy: nothing identifies the user Entra asked about.
          return provider.interactionFinished(req, res, {
            error: 'access_denied', error_description: 'no entra_sub: the request did not pass through eam-proxy',
          }, { mergeWithLastSubmission: false });
        }
        return html(loginPage(uid, details));
      }
      if (prompt.name === 'consent') return html(consentPage(uid, details));
      throw new Error(`unexpected prompt ${prompt.name}`);
    }
    if (req.method !== 'POST') throw new Error('method not allowed');
    const form = Object.fromEntries(formPairs(await readBody(req)));
    if (action === 'abort') {
      return provider.interactionFinished(req, res, {
        error: 'access_denied', error_description: 'the user denied the request',
      }, { mergeWithLastSubmission: false });
    }
    if (action === 'login' && prompt.name === 'login') {
      let login;
      if (isEntraClient(params.client_id)) {
        if (!params.entra_sub) throw new Error('no entra_sub');
        login = { accountId: params.entra_sub, acr: requestedAcr(params), amr: [requestedAmr(params)] };
        if (opts.tamper) login = opts.tamper(login);
      } else {
        const name = String(form.login ?? '').trim();
        if (!name) return html(loginPage(uid, details));
        login = { accountId: name, amr: ['pwd'] };
      }
      logins.push({ uid, clientId: params.client_id, ...login });
      opts.log(`login ${login.accountId} (acr ${login.acr ?? '-'}, amr ${login.amr.join(' ')})`);
      return provider.interactionFinished(req, res, { login }, { mergeWithLastSubmission: false });
    }
    if (action === 'confirm' && prompt.name === 'consent') {
      const grant = details.grantId
        ? await provider.Grant.find(details.grantId)
        : new provider.Grant({ accountId: details.session.accountId, clientId: params.client_id });
      grant.addOIDCScope('openid');
      const grantId = await grant.save();
      return provider.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
    }
    throw new Error(`unexpected ${action} during ${prompt.name}`);
  }

  server.on('request', async (req, res) => {
    try {
      const path = req.url.split('?')[0];
      requests.push({
        at: Date.now(),
        method: req.method,
        path,
        forwardedHost: req.headers['x-forwarded-host'],
        forwardedProto: req.headers['x-forwarded-proto'],
        forwardedFor: req.headers['x-forwarded-for'],
      });
      const m = /^\/interaction\/([^/]+)(?:\/(login|confirm|abort))?$/.exec(path);
      if (m) return await interaction(req, res, m[1], m[2]);
      if (path === AUTHORIZATION_PATH) {
        // Record the authorization request exactly as it arrived (headers, query, body), then
        // hand the already-read body to oidc-provider (it accepts a pre-read req.body).
        const entry = {
          at: Date.now(),
          method: req.method,
          query: req.url.includes('?') ? req.url.slice(req.url.indexOf('?') + 1) : '',
          headers: { ...req.headers },
        };
        if (req.method === 'POST') {
          entry.body = await readBody(req, 64 * 1024);
          req.body = entry.body;
        }
        entry.params = formPairs(req.method === 'POST' ? entry.body : entry.query);
        received.push(entry);
      }
      return callback(req, res);
    } catch (e) {
      opts.log(`error: ${e.stack || e}`);
      if (!res.headersSent) {
        res.writeHead(400, { 'content-type': 'text/plain' });
        res.end(`provider: ${e.message}\n`);
      } else res.destroy();
    }
  });

  return {
    url,
    issuer,
    provider,
    received,
    requests,
    logins,
    close: () => closeServer(server),
  };
}

// ---- standalone ----------------------------------------------------------------------------
await standalone(import.meta.url, 'provider', {
  issuer: { type: 'string' },
  'entra-client-id': { type: 'string' },
  'entra-redirect-uri': { type: 'string', multiple: true },
  'code-client-id': { type: 'string' },
  'code-client-secret': { type: 'string' },
  'code-redirect-uri': { type: 'string', multiple: true },
}, (values, common) => start({
  ...common,
  issuer: values.issuer,
  entraClient: values['entra-client-id'] ? { clientId: values['entra-client-id'], redirectUris: values['entra-redirect-uri'] ?? [] } : undefined,
  codeClient: values['code-client-id'] ? {
    clientId: values['code-client-id'], clientSecret: values['code-client-secret'], redirectUris: values['code-redirect-uri'] ?? [],
  } : undefined,
}), (op) => ({ url: op.url, issuer: op.issuer }));
