// The demo: one full Entra EAM sign-in on loopback, without a browser. Starts the Entra
// simulator, oidc-provider and the eam-proxy binary, plays the browser with a small HTTP client
// (follows Entra's auto-POST, the login and consent pages with cookies, the form_post back) and
// prints what happened at each hop. Exit status 0 when Entra accepts the result.
//
//   node tests/e2e/demo.mjs [--keep]     (tests/demo.sh builds the proxy and runs this)
//
// --keep leaves the stack running afterwards and prints the simulator's URL, to try the flow
// in a browser; Ctrl-C stops everything.
import fs from 'node:fs';
import path from 'node:path';
import { decodeJwt, decodeProtectedHeader } from 'jose';

const argv = process.argv.slice(2);
const keep = argv.includes('--keep');
const verbose = argv.includes('--verbose');
for (const a of argv) {
  if (!['--keep', '--verbose'].includes(a)) {
    console.error(`usage: demo.mjs [--keep] [--verbose]  (unknown argument ${a})`);
    process.exit(2);
  }
}

// oidc-provider's start-up notices (in-memory adapter, Node 20 runtime, pre-read body) are
// expected here: collected and shown at the end with --verbose, not in the middle of the hops.
const providerWarnings = [];
const warn = console.warn;
console.warn = (...args) => {
  if (typeof args[0] === 'string' && args[0].startsWith('oidc-provider WARNING')) providerWarnings.push(args.join(' '));
  else warn(...args);
};

const { startStack } = await import('./lib/stack.mjs');
const { Agent } = await import('./lib/agent.mjs');
const { short } = await import('./lib/util.mjs');

const color = process.stdout.isTTY && !process.env.NO_COLOR;
const paint = (code) => (s) => (color ? `\x1b[${code}m${s}\x1b[0m` : String(s));
const bold = paint('1');
const dim = paint('2');
const green = paint('32;1');
const red = paint('31;1');
const cyan = paint('36');

const out = (s = '') => process.stdout.write(`${s}\n`);
const step = (n, title) => out(`\n${bold(`[${n}] ${title}`)}`);
const kv = (k, v, indent = 6) => out(`${' '.repeat(indent)}${cyan(k.padEnd(26))} ${v}`);
const json = (v) => JSON.stringify(v);

let stack;
let stopping = false;
async function stop(code) {
  if (stopping) return;
  stopping = true;
  if (stack) await stack.close().catch(() => {});
  process.exit(code);
}
process.on('SIGINT', () => stop(130));
process.on('SIGTERM', () => stop(143));

try {
  out(bold('eam-proxy demo: one Microsoft Entra ID external-authentication-method sign-in, on loopback, no browser'));
  stack = await startStack({ log: verbose ? (l) => out(dim(`      · ${l}`)) : () => {} });
  const { sim, op, proxy } = stack;
  if (process.env.EAM_DEMO_PIDFILE) fs.writeFileSync(process.env.EAM_DEMO_PIDFILE, `${proxy.pid}\n`);
  kv('Entra ID simulator', `${sim.url}   (JWKS ${sim.jwksUrl})`, 2);
  kv('eam-proxy', `${proxy.url}   (admin ${proxy.adminUrl}, config ${path.basename(proxy.configPath)})`, 2);
  kv('oidc-provider (upstream)', `${op.url}   issuer ${op.issuer}`, 2);

  const hops = [];
  const agent = new Agent({
    onHop: (h) => {
      hops.push(h);
      const where = h.location ? ` -> ${h.location}` : '';
      out(dim(`      ${h.method.padEnd(4)} ${h.url}  ${h.status}${where}`));
    },
  });

  // [1] Entra reads the provider's discovery document and renders the auto-submitting POST form
  // to its authorization_endpoint.
  step(1, 'Entra sends the browser to the EAM with an auto-submitting POST form');
  const entraPage = await agent.navigate('GET', `${sim.url}/start`);
  const attempt = [...sim.attempts.values()].at(-1);
  if (!attempt.action) {
    const { verdict } = attempt;
    throw new Error(`Entra could not read the provider's metadata: ${verdict.reason} (${verdict.entra_error})`);
  }
  kv('discovery', `${attempt.discovery.url}  (Content-Length ${attempt.discovery.contentLength})`);
  kv('authorization_endpoint', attempt.action);
  out(`      POST ${attempt.action}`);
  for (const [k, v] of attempt.params) kv(k, k === 'id_token_hint' ? short(v, 70) : v);
  const hint = attempt.params.find(([k]) => k === 'id_token_hint')[1];
  kv('  hint header', json(decodeProtectedHeader(hint)));
  const hintClaims = decodeJwt(hint);
  kv('  hint claims', json(hintClaims));
  kv('  hint lifetime', `exp - iat = ${hintClaims.exp - hintClaims.iat} s (issued already expired, like Microsoft's)`);

  // [2] The browser posts it to the proxy; the proxy validates and rewrites it.
  step(2, 'Browser -> eam-proxy: the proxy validates the hint and forwards a rewritten request');
  const loginPage = await agent.submit(entraPage);
  const decision = proxy.decisions().find((d) => d.client_request_id === attempt.clientRequestId);
  if (decision) {
    kv('proxy decision', `outcome=${decision.outcome}${decision.reason ? ` reason=${decision.reason}` : ''} tid=${decision.tid} oid=${decision.oid} latency_ms=${Number(decision.latency_ms).toFixed(2)}`);
  }
  const received = op.received.filter((r) => r.method === 'POST').at(-1);
  if (!received) throw new Error('the provider received no authorization request');
  out('      the provider received (POST body, in order):');
  const sent = new Map(attempt.params);
  for (const [k, v] of received.params) {
    let note = '';
    if (k === 'entra_id_token_hint') note = v === hint ? '   <- id_token_hint, renamed' : '   <- CHANGED';
    else if (k === 'prompt') note = '   <- set by the proxy';
    else if (k.startsWith('entra_')) note = '   <- from the validated hint';
    else if (sent.get(k) !== v) note = '   <- CHANGED';
    kv(k, `${k.endsWith('id_token_hint') ? short(v, 70) : v}${note}`);
  }
  kv('X-Forwarded-For/Proto/Host', `${received.headers['x-forwarded-for']} / ${received.headers['x-forwarded-proto']} / ${received.headers['x-forwarded-host']}`);

  // [3] The provider's login interaction (reads entra_*), then consent.
  step(3, 'Provider login page (reads entra_*), second factor approved, consent of openid');
  if (!/Verify it's you/.test(loginPage.text)) throw new Error(`expected the provider's login page, got ${loginPage.status} at ${loginPage.url}`);
  const consentPage = await agent.submit(loginPage);
  const login = op.logins.at(-1);
  kv('authenticated', `sub=${login.accountId} acr=${login.acr} amr=${json(login.amr)}`);
  const formPost = await agent.submit(consentPage);

  // [4] The provider answers Entra with a form_post id_token.
  step(4, "Provider -> browser -> Entra's redirect_uri: form_post with the id_token");
  const resultPage = await agent.submit(formPost);
  const verdict = sim.verdicts.find((v) => v.state === attempt.state);
  if (!verdict) throw new Error(`Entra received no answer (last page ${resultPage.status} ${resultPage.url})`);
  if (verdict.received.id_token) {
    kv('id_token header', json(decodeProtectedHeader(verdict.received.id_token)));
    kv('id_token claims', json(decodeJwt(verdict.received.id_token)));
  } else {
    kv('answer', json(verdict.received));
  }

  // [5] Entra's verdict.
  step(5, "Entra validates the id_token (keys from the provider's discovery jwks_uri, with a Content-Length)");
  for (const c of verdict.checks) kv(c.name, `${c.ok ? green('ok') : red('FAILED')}  ${c.detail}`);
  out(`\n      verdict: ${verdict.accepted ? green('accepted') : red(`rejected: ${verdict.reason}`)}  (${verdict.elapsedMs} ms after Entra's redirect, ${hops.length} HTTP hops)`);
  if (verdict.entra_error) out(`      Entra would show: ${red(verdict.entra_error)}`);
  if (verbose && providerWarnings.length) {
    out(dim('\n      oidc-provider warnings (expected in this demo):'));
    for (const w of new Set(providerWarnings)) out(dim(`        ${w}`));
  }

  if (keep) {
    out(`\n${bold('The stack keeps running. Try it in a browser:')} ${sim.url}/   (Ctrl-C to stop)`);
    await new Promise(() => {});
  }
  await stop(verdict.accepted ? 0 : 1);
} catch (e) {
  out(`\n${red('demo failed:')} ${e.stack || e}`);
  if (stack?.proxy) out(dim(stack.proxy.lines.slice(-10).join('\n')));
  await stop(1);
}
