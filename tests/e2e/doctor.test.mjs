// eam-proxy doctor against the real oidc-provider, read through the running proxy as Entra reads
// it: without x5c injection it fails on the key set's missing certificate and names the fix;
// with injection configured it passes.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { proxyBinary, stackForTest } from './lib/stack.mjs';

/**
 * Runs the doctor on the stack's proxy configuration; resolves with its exit code and JSON
 * report. Asynchronously: the provider and the simulator answer from this very process.
 */
async function doctor(stack) {
  // Loopback http is allowed as a warning only: the real rule (https) stays strict.
  const run = await new Promise((resolve) => {
    execFile(proxyBinary(), ['doctor', '--config', stack.proxy.configPath, '--issuer', stack.issuer, '--allow-http', '--json'],
      { encoding: 'utf8', timeout: 30_000 },
      (error, stdout, stderr) => resolve({ status: error ? error.code : 0, stdout, stderr }));
  });
  let report;
  try { report = JSON.parse(run.stdout); } catch { assert.fail(`doctor printed no JSON: ${run.stdout} ${run.stderr}`); }
  const failed = report.checks.filter((c) => c.status === 'fail');
  return { code: run.status, report, failed, check: (id) => report.checks.filter((c) => c.id === id) };
}

/** oidc-provider's authorization and PAR endpoints (the proxy's default is /authorize). */
const OP_PATHS = ['/auth', '/request'];

test('doctor: oidc-provider without x5c fails on the missing certificate and names the fix', { timeout: 60_000 }, async (t) => {
  // Configured as the doctor asks: the provider's authorization and PAR endpoints listed.
  const stack = await stackForTest(t, 'doctor-no-x5c', { x5c: false, authorizePaths: OP_PATHS });
  const { code, failed, check } = await doctor(stack);
  assert.equal(code, 1);
  assert.deepEqual(failed.map((c) => c.id), ['jwks.x5c'], JSON.stringify(failed, null, 2));
  const [x5c] = failed;
  assert.match(x5c.detail, /^key op-[0-9a-f]+ has no x5c certificate$/);
  assert.match(x5c.entra_error, /AADSTS50012/);
  assert.match(x5c.fix, /eam-proxy cert --jwk/);
  assert.match(x5c.fix, /\[\[upstream\.x5c\]\]/);
  // Everything else Entra asks of oidc-provider's discovery document holds.
  for (const id of ['discovery.content_length', 'discovery.scopes_supported', 'discovery.response_types_supported',
    'discovery.response_modes_supported', 'discovery.id_token_signing_alg_values_supported',
    'discovery.claim_types_supported', 'config.audiences', 'config.microsoft_keys']) {
    assert.ok(check(id).length > 0 && check(id).every((c) => c.status === 'pass'), `${id}: ${JSON.stringify(check(id))}`);
  }
  for (const id of ['discovery.url', 'discovery.issuer', 'discovery.jwks_uri']) {
    assert.equal(check(id)[0].status, 'warn', `${id}: http is only tolerated`);
  }
});

test('doctor: oidc-provider with x5c injection configured passes', { timeout: 60_000 }, async (t) => {
  const stack = await stackForTest(t, 'doctor-x5c', { authorizePaths: OP_PATHS });
  const { code, report, failed, check } = await doctor(stack);
  assert.equal(code, 0, JSON.stringify(failed, null, 2));
  assert.equal(report.summary.failed, 0);
  for (const id of ['jwks.x5c', 'jwks.x5c_issuer', 'jwks.x5c_validity']) {
    assert.deepEqual(check(id).map((c) => c.status), ['pass'], id);
  }
  assert.match(check('jwks.x5c')[0].detail, /certificate CN=127\.0\.0\.1 carries it/);
});

test('doctor: the proxy configured for /authorize while the provider serves /auth fails on it and names the fix', { timeout: 60_000 }, async (t) => {
  const stack = await stackForTest(t, 'doctor-paths');
  const { code, failed, check } = await doctor(stack);
  assert.equal(code, 1);
  assert.deepEqual(failed.map((c) => c.id), ['discovery.authorization_endpoint'], JSON.stringify(failed, null, 2));
  assert.equal(failed[0].fix, 'add "/auth" to authorize.paths');
  const [par] = check('discovery.pushed_authorization_request_endpoint');
  assert.equal(par.status, 'warn');
  assert.match(par.fix, /add "\/request" to authorize.paths/);
  const [reply] = check('entra.reply_url');
  assert.match(reply.entra_error, /^AADSTS50161/);
});
