// The response guard across replicas (issue 20): two or three eam-proxy processes behind Debian's
// nginx with no session affinity, the browser flow, and an OP that answers with an id_token for
// the wrong user (provider.mjs's `tamper`). The replica that accepts Entra's POST seals what the
// guard needs into a `__Host-eam-g-…` cookie; whichever replica carries the OP's final page opens
// it with the key file they share, and in `enforce` replaces the bad answer with access_denied.
// Which replica did what is read from each one's /metrics before and after every sign-in.
//  1. pinned (Entra's POST to replica 0, all else to replica 1), shared key: caught by replica 1;
//     a well-behaved OP's answer passes through the same cluster;
//  2. round-robin over three replicas, shared key: every bad answer is caught, wherever it lands;
//  3. pinned, shared key, both replicas restarted one by one between Entra's POST and the login:
//     still caught;
//  4. pinned, no key file (a random key per process): the serving replica cannot read the cookie,
//     checks statelessly, and the bad id_token reaches Entra, which refuses it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { launch } from './lib/browser.mjs';
import { clusterForTest, metric, newGuardKey } from './lib/cluster.mjs';
import { approveAndConsent, atProviderLogin } from './lib/flow.mjs';
import { waitFor } from './lib/util.mjs';

const GUARD_COOKIE = /^__Host-eam-g-/;

/** The provider's login, wrong (another user's sub) while `op.wrongSub` is set. */
function switchableOp() {
  const op = { wrongSub: true };
  op.tamper = (login) => (op.wrongSub ? { ...login, accountId: 'someone-else' } : login);
  return op;
}

/** What one replica counted, from two /metrics samples. */
function counted(before, after) {
  const d = (name, labels) => metric(after, name, labels) - metric(before, name, labels);
  const unsealed = (result) => d('eam_response_guard_unsealed_total', { result });
  return {
    accepted: d('eam_requests_total', { route: 'authorize', outcome: 'accepted' }),
    sealed: d('eam_response_guard_sealed_total', { result: 'sealed' }),
    violation: d('eam_response_guard_total', { result: 'violation', reason: 'sub_mismatch' }),
    okFull: d('eam_response_guard_total', { result: 'ok', reason: 'full' }),
    okStateless: d('eam_response_guard_total', { result: 'ok', reason: 'stateless' }),
    opened: unsealed('opened'),
    missing: unsealed('missing'),
    unreadable: unsealed('unreadable'),
    expired: unsealed('expired'),
  };
}
const verdicts = (c) => c.violation + c.okFull + c.okStateless;

/** The last guard line of a replica's current process: where its expectation came from, and the verdict. */
function lastGuardLine(replica) {
  const lines = replica.proxy.lines.filter((l) => l.includes('"response guard"')).map((l) => JSON.parse(l));
  assert.ok(lines.length > 0, `replica ${replica.index} logged a guard verdict`);
  const { expectation, scope, result, action } = lines.at(-1);
  return { expectation, scope, result, action };
}

/**
 * One sign-in in a fresh chromium: Entra's page, the POST through nginx, the provider's login
 * (`atLogin` runs there, after Entra's POST was accepted), consent, Entra's redirect_uri.
 * Returns Entra's verdict, the guard cookies the browser held at the login, and per replica what
 * it counted during the sign-in (`accepted` Entra's POST; a guard verdict for the final page).
 */
async function signIn(t, cluster, label, { atLogin } = {}) {
  const { sim } = cluster;
  const browser = await launch({ outDir: path.join(cluster.outDir, label) });
  t.after(() => browser.close());
  const { page, context } = browser;
  const known = new Set(sim.attempts.keys());
  const before = await cluster.metrics();
  await page.goto(sim.url);
  await page.click('#start');
  await atProviderLogin(page);
  const guardCookies = (await context.cookies(cluster.url)).filter((c) => GUARD_COOKIE.test(c.name));
  const beforeFinal = atLogin ? await atLogin(before) : before;
  await approveAndConsent(page);
  await page.waitForURL((url) => url.href.startsWith(sim.redirectUri));
  const verdictText = (await page.textContent('#verdict')).trim();
  await browser.shot('entra-verdict');
  const attempt = [...sim.attempts.values()].find((a) => !known.has(a.state));
  assert.ok(attempt, 'the simulator started an attempt');
  const verdict = sim.verdicts.find((v) => v.state === attempt.state);
  // The guard counts before the page leaves; the wait only covers a slow /metrics.
  let replicas;
  await waitFor(async () => {
    const after = await cluster.metrics();
    replicas = after.map((m, i) => counted(beforeFinal[i], m));
    return replicas.reduce((n, c) => n + verdicts(c), 0) >= 1;
  }, 5000, 'a guard verdict on some replica');
  const acceptedBy = replicas.findIndex((c) => c.accepted === 1);
  const finalBy = replicas.findIndex((c) => verdicts(c) === 1);
  t.diagnostic(`${label}: Entra's POST accepted by replica ${acceptedBy}, final page judged by replica ${finalBy}: ${verdictText}`);
  return { verdict, verdictText, attempt, guardCookies, replicas, acceptedBy, finalBy };
}

/** Entra got access_denied with its state, naming sub, and never the wrong user's id_token. */
function assertCaught(run) {
  const { verdict, attempt, verdictText } = run;
  assert.ok(verdict, 'Entra received an answer with its state');
  assert.equal(verdict.received.state, attempt.state);
  assert.equal(verdict.error, 'access_denied', verdictText);
  assert.match(verdict.error_description, /\bsub\b/);
  assert.equal(verdict.received.id_token, undefined, 'the wrong user\'s id_token never reached Entra');
}

test('pinned, shared key: the replica that did not see Entra\'s POST catches a wrong sub, and passes a right one', { timeout: 120_000 }, async (t) => {
  const op = switchableOp();
  const cluster = await clusterForTest(t, 'replicas-pinned', { layout: 'pinned', guardKey: newGuardKey(), tamper: op.tamper });

  const bad = await signIn(t, cluster, 'wrong-sub');
  assert.equal(bad.guardCookies.length, 1, 'replica 0 set one sealed guard cookie on its answer to Entra\'s POST');
  const [cookie] = bad.guardCookies;
  assert.deepEqual([cookie.secure, cookie.httpOnly, cookie.sameSite, cookie.path], [true, true, 'None', '/']);
  assertCaught(bad);
  const [r0, r1] = bad.replicas;
  assert.equal(r0.accepted, 1, 'replica 0 accepted Entra\'s POST');
  assert.equal(r0.sealed, 1, 'replica 0 sealed it');
  assert.equal(verdicts(r0), 0, 'replica 0 judged no final page');
  assert.equal(r1.accepted, 0);
  assert.equal(r1.opened, 1, 'replica 1 opened the sealed cookie');
  assert.equal(r1.violation, 1, 'replica 1 counted the sub_mismatch');
  assert.deepEqual(lastGuardLine(cluster.replicas[1]),
    { expectation: 'cookie', scope: 'full', result: 'violation', action: 'replaced' });
  // nginx is a trusted proxy: its X-Forwarded-* are extended, not replaced.
  const host = new URL(cluster.url).host;
  const logins = cluster.op.requests.filter((r) => r.path.startsWith('/interaction/'));
  assert.ok(logins.length > 0);
  for (const r of logins) {
    assert.deepEqual([r.forwardedFor, r.forwardedHost, r.forwardedProto], ['127.0.0.1, 127.0.0.1', host, 'http']);
  }

  op.wrongSub = false;
  const good = await signIn(t, cluster, 'right-sub');
  assert.equal(good.verdictText, 'accepted');
  assert.equal(good.verdict.accepted, true, good.verdict.reason);
  assert.equal(good.replicas[0].accepted, 1);
  assert.equal(good.replicas[1].opened, 1);
  assert.equal(good.replicas[1].okFull, 1, 'replica 1 checked the answer against the sealed request');
  assert.equal(good.replicas[1].violation, 0);
});

test('round-robin over three replicas, shared key: every wrong sub is caught, whichever replica serves it', { timeout: 150_000 }, async (t) => {
  const op = switchableOp();
  const cluster = await clusterForTest(t, 'replicas-round-robin', { replicas: 3, guardKey: newGuardKey(), tamper: op.tamper });
  const runs = [];
  for (let i = 0; i < 3; i += 1) {
    // i more requests through nginx between Entra's POST and the final page: each sign-in meets
    // the rotation at another offset, so the three cover same- and cross-replica answers.
    const atLogin = async (before) => {
      for (let k = 0; k < i; k += 1) await (await fetch(cluster.discoveryUrl)).text();
      return before;
    };
    const run = await signIn(t, cluster, `wrong-sub-${i + 1}`, { atLogin });
    assertCaught(run);
    assert.equal(run.replicas.filter((c) => c.accepted === 1).length, 1, 'one replica accepted Entra\'s POST');
    assert.equal(run.replicas.filter((c) => verdicts(c) === 1).length, 1, 'one replica judged the final page');
    assert.equal(run.replicas[run.finalBy].violation, 1);
    const cross = run.finalBy !== run.acceptedBy;
    if (cross) assert.equal(run.replicas[run.finalBy].opened, 1);
    // The replica that accepted the POST still has it in memory; any other one opens the cookie.
    assert.equal(lastGuardLine(cluster.replicas[run.finalBy]).expectation, cross ? 'cookie' : 'memory');
    runs.push(run);
  }
  const pairs = runs.map((r) => `${r.acceptedBy}->${r.finalBy}`);
  t.diagnostic(`accepted->judged: ${pairs.join(', ')}`);
  assert.ok(runs.some((r) => r.acceptedBy !== r.finalBy), `some final page went to another replica (${pairs})`);
});

test('pinned, shared key: both replicas restarted between Entra\'s POST and the login, the wrong sub is still caught', { timeout: 120_000 }, async (t) => {
  const op = switchableOp();
  const cluster = await clusterForTest(t, 'replicas-restart', { layout: 'pinned', guardKey: newGuardKey(), tamper: op.tamper });
  let acceptedBefore;
  const run = await signIn(t, cluster, 'wrong-sub', {
    atLogin: async (before) => {
      acceptedBefore = metric((await cluster.metrics())[0], 'eam_requests_total', { route: 'authorize', outcome: 'accepted' })
        - metric(before[0], 'eam_requests_total', { route: 'authorize', outcome: 'accepted' });
      // A rolling restart: the sealing replica, then the one that will serve the final page.
      for (const r of cluster.replicas) await r.restart();
      return cluster.metrics();
    },
  });
  assert.equal(acceptedBefore, 1, 'replica 0 accepted Entra\'s POST before the restarts');
  assert.equal(cluster.replicas[1].history.length, 2, 'replica 1 runs in a new process');
  assertCaught(run);
  const [, r1] = run.replicas;
  assert.equal(r1.opened, 1, 'the restarted replica 1 opened the cookie sealed before it started');
  assert.equal(r1.violation, 1);
  assert.equal(lastGuardLine(cluster.replicas[1]).expectation, 'cookie');
});

test('pinned, no key file: the serving replica cannot read the cookie, and the wrong sub reaches Entra', { timeout: 120_000 }, async (t) => {
  const op = switchableOp();
  const cluster = await clusterForTest(t, 'replicas-no-key', { layout: 'pinned', tamper: op.tamper });
  const run = await signIn(t, cluster, 'wrong-sub');
  const { verdict } = run;
  assert.ok(verdict, 'Entra received an answer with its state');
  assert.ok(verdict.received.id_token, 'the wrong user\'s id_token passed the stateless checks');
  assert.equal(verdict.accepted, false);
  assert.equal(verdict.checks.find((c) => !c.ok).name, 'sub', verdict.reason);
  const [r0, r1] = run.replicas;
  assert.equal(r0.accepted, 1);
  assert.equal(r1.unreadable, 1, 'replica 1 counted the cookie sealed with replica 0\'s own key as unreadable');
  assert.equal(r1.okStateless, 1);
  assert.equal(r1.violation, 0);
  assert.deepEqual(lastGuardLine(cluster.replicas[1]),
    { expectation: 'none', scope: 'stateless', result: 'ok', action: 'unchanged' });
});
