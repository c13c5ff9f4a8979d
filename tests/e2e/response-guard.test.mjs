// The response guard in the real setup (chromium, oidc-provider, the eam-proxy binary, the Entra
// simulator): the provider's login is misconfigured to issue an id_token with a wrong sub, a
// second amr value, or an acr Entra did not request.
//  - monitor: the bad id_token reaches Entra, which refuses it (the simulator is as strict as
//    Entra: amr must hold exactly one value), and the proxy counted it;
//  - enforce: Entra receives access_denied with its state instead, naming the claim, at once;
//  - enforce with a correct login: the id_token passes untouched and Entra accepts it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { approveAndConsent, atProviderLogin, browserForTest, entraVerdict } from './lib/flow.mjs';

const CASES = [
  {
    name: 'wrong-sub',
    tamper: (login) => ({ ...login, accountId: 'someone-else' }),
    reason: 'sub_mismatch',
    claim: 'sub',
  },
  {
    // The password next to the second factor (RFC 8176's pwd), as an OP that lists every method
    // of the session would: one allowed value and one outside Microsoft's list. Entra refuses
    // it because amr holds two values, not because of pwd.
    name: 'second-amr',
    tamper: (login) => ({ ...login, amr: [...login.amr, 'pwd'] }),
    reason: 'amr_not_single',
    claim: 'amr',
    entraError: /^AADSTS5001257:/,
  },
  {
    name: 'unrequested-acr',
    tamper: (login) => ({ ...login, acr: 'knowledgeorpossession' }),
    reason: 'acr_not_requested',
    claim: 'acr',
  },
];

/** `eam_response_guard_total{result,reason}` from the proxy's admin listener. */
async function guardCount(proxy, result, reason) {
  const text = await (await fetch(`${proxy.adminUrl}/metrics`)).text();
  const series = `eam_response_guard_total{reason="${reason}",result="${result}"} `;
  const line = text.split('\n').find((l) => l.startsWith(series));
  assert.ok(line, `no ${series} in /metrics`);
  return Number(line.slice(series.length));
}

/** The guard's JSON log lines. */
function guardLines(proxy) {
  return proxy.lines.filter((l) => l.includes('"response guard"')).map((l) => JSON.parse(l));
}

/** Entra page -> proxy -> login -> consent -> whatever the browser then posts to Entra. */
async function signIn(t, name, { mode, tamper }) {
  const { stack, browser, page, sim } = await browserForTest(t, name, { responseGuard: mode, tamper });
  await page.goto(sim.url);
  await page.click('#start');
  await atProviderLogin(page);
  await approveAndConsent(page);
  return { stack, ...(await entraVerdict(browser, sim)) };
}

for (const c of CASES) {
  test(`monitor: a ${c.name} id_token reaches Entra, which refuses it, and the proxy counted it`, { timeout: 90_000 }, async (t) => {
    const run = await signIn(t, `guard-monitor-${c.name}`, { mode: 'monitor', tamper: c.tamper });
    const { verdict, attempt, stack } = run;

    assert.ok(verdict, 'Entra received an answer with its state');
    assert.equal(verdict.accepted, false);
    assert.ok(verdict.received.id_token, 'the bad id_token was passed through');
    const failed = verdict.checks.find((check) => !check.ok);
    assert.equal(failed.name, c.claim, verdict.reason);
    if (c.entraError) assert.match(verdict.entra_error, c.entraError);

    assert.equal(await guardCount(stack.proxy, 'violation', c.reason), 1);
    const [line] = guardLines(stack.proxy);
    assert.equal(line.level, 'WARN');
    assert.equal(line.reason, c.reason);
    assert.equal(line.scope, 'full');
    assert.equal(line.action, 'unchanged');
    assert.equal(line.client_request_id, attempt.clientRequestId);
    const log = stack.proxy.lines.join('\n');
    assert.equal(log.includes(verdict.received.id_token), false, 'the id_token is never logged');
    assert.equal(log.includes(attempt.state), false, 'the state is logged hashed only');
  });

  test(`enforce: a ${c.name} id_token becomes access_denied with the state at Entra`, { timeout: 90_000 }, async (t) => {
    const run = await signIn(t, `guard-enforce-${c.name}`, { mode: 'enforce', tamper: c.tamper });
    const { verdict, attempt, stack, verdictText } = run;

    assert.ok(verdict, 'Entra received an answer with its state');
    assert.equal(verdict.received.state, attempt.state);
    assert.equal(verdict.accepted, false);
    assert.equal(verdict.error, 'access_denied');
    assert.match(verdict.error_description, new RegExp(`\\b${c.claim}\\b`));
    assert.equal(verdict.received.id_token, undefined, 'the bad id_token never reached Entra');
    assert.match(verdictText, /^rejected: error: access_denied/);

    assert.equal(await guardCount(stack.proxy, 'violation', c.reason), 1);
    const [line] = guardLines(stack.proxy);
    assert.equal(line.action, 'replaced');
    assert.equal(line.client_request_id, attempt.clientRequestId);
  });
}

test('enforce: a correct id_token passes untouched and Entra accepts it', { timeout: 90_000 }, async (t) => {
  const run = await signIn(t, 'guard-enforce-correct', { mode: 'enforce' });
  const { verdict, stack, verdictText } = run;

  assert.equal(verdictText, 'accepted');
  assert.equal(verdict.accepted, true, verdict.reason);
  assert.deepEqual(verdict.claims.amr, ['fido']);
  assert.equal(await guardCount(stack.proxy, 'ok', 'full'), 1);
  assert.equal(await guardCount(stack.proxy, 'violation', 'sub_mismatch'), 0);
  const [line] = guardLines(stack.proxy);
  assert.equal(line.result, 'ok');
  assert.equal(line.action, 'unchanged');
});
