//! Issue 8: fault drills. The real binary against an upstream that refuses, resets, hangs or
//! crawls, against clients that disconnect, trickle or flood, against a failing key server, and
//! against broken configuration files.
//!
//! Every drill checks, besides its own fault, that the proxy keeps serving other requests
//! meanwhile and afterwards, and where it means something that its descriptors and memory come
//! back to their baseline. Every wait polls a condition under a deadline (the machine is shared
//! with a fuzzer and benchmarks); every drill sends a bounded number of requests, on loopback.
//!
//! The soak test (`soak`, ignored here) lives at the end: `bench/soak` runs it.

use std::io::Write;
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread;
use std::time::{Duration, Instant};

use eam_tests::drills::{
    assert_none_failed, reset, try_send, Client, Probe, ProbeReport, ProcStats, SlowSender,
};
use eam_tests::entra::AUTHORIZE_PATH;
use eam_tests::hints::{issuer, sign_hs256, unsigned};
use eam_tests::keyserver::KeyMode;
use eam_tests::proxy::{app, binary, run_on_file};
use eam_tests::tempdir::TempDir;
use eam_tests::upstream::Action;
use eam_tests::{
    closed_port, microsoft_claims, parse_form, parse_html_form, sign_hint, EntraRequest, KeyServer,
    Keys, ProxyConfig, ProxyProcess, Recorded, Reply, Request, Response, Upstream, Verdict,
    CLIENT_ID, FOREIGN, MSA_TENANT_ID, SIGNER, SUB,
};
use filters::ExtraClaim;
use serde_json::{json, Value};

/// Client-side bound of one exchange in a drill.
const EXCHANGE: Duration = Duration::from_secs(5);
/// Generous bound of anything that should take about one timeout on an idle machine.
const DEADLINE: Duration = Duration::from_secs(10);
/// `server.client_read_timeout_ms` (whole authorize body) and `client_header_timeout_ms` (whole
/// head) of the slow-client drills.
const CLIENT_READ_TIMEOUT_MS: u64 = 1000;
/// A normal request's latency while a drill's fault goes on must stay below this (p95).
const PROBE_P95: Duration = Duration::from_millis(1000);
/// Descriptors and memory must come back within these margins of their baseline.
const FD_SLACK: usize = 20;
const RSS_SLACK_KIB: u64 = 10 * 1024;

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

fn ok(body: &str) -> Reply {
    Reply::ok(body)
}

/// A body long enough that "half of it" is unmistakable.
fn long_body() -> String {
    (0..2000)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect()
}

/// A valid Entra POST, its `state` chosen by the test.
fn entra_post(hint: &str, state: &str) -> (EntraRequest, Request) {
    let request = EntraRequest::new(hint).with("state", state);
    let post = request.post();
    (request, post)
}

/// A hint signed by the attacker's key under Microsoft's kid.
fn forged_hint() -> String {
    FOREIGN.sign("signer", &microsoft_claims())
}

/// The proxy forwarded the request and the upstream answered.
fn is_forwarded(response: &Response) -> bool {
    response.status == 200 && response.verdict() == Verdict::Forwarded
}

/// A form_post `invalid_request` to Entra's redirect_uri, decided by the proxy.
fn is_form_post_rejection(response: &Response) -> bool {
    response.header("x-upstream").is_none() && response.verdict() == Verdict::refused()
}

/// Asserts the proxy still forwards a pass-through GET and a valid Entra POST.
fn assert_still_serving(proxy: &ProxyProcess, what: &str) {
    let response = try_send(proxy.addr, &Request::get("/still-serving"), EXCHANGE)
        .unwrap_or_else(|e| panic!("{what}: the proxy stopped serving: {e}"));
    assert!(
        is_forwarded(&response),
        "{what}: a pass-through GET must still work: {}",
        response.describe()
    );
    let (_, post) = entra_post(&sign_hint(&microsoft_claims()), "still-serving");
    let response = try_send(proxy.addr, &post, EXCHANGE)
        .unwrap_or_else(|e| panic!("{what}: the proxy stopped serving Entra: {e}"));
    assert!(
        is_forwarded(&response),
        "{what}: a valid Entra POST must still be forwarded: {}",
        response.describe()
    );
}

/// Waits for descriptors and memory to come back near `baseline`; panics with both figures.
fn assert_back_to_baseline(proxy: &ProxyProcess, baseline: ProcStats, what: &str) -> ProcStats {
    let (stats, settled) = ProcStats::settle(proxy.pid(), DEADLINE, |s| {
        s.fds <= baseline.fds + FD_SLACK && s.rss_kib <= baseline.rss_kib + RSS_SLACK_KIB
    });
    assert!(
        settled,
        "{what}: resources did not come back near the baseline within {DEADLINE:?}: \
         baseline {baseline:?}, now {stats:?} (slack {FD_SLACK} fds, {RSS_SLACK_KIB} KiB)"
    );
    eprintln!("{what}: baseline {baseline:?}, after {stats:?}");
    stats
}

/// A warmed-up baseline: a few requests first, so that pools and allocator arenas exist.
fn warm_baseline(proxy: &ProxyProcess) -> ProcStats {
    for _ in 0..3 {
        assert_still_serving(proxy, "warm-up");
    }
    ProcStats::of(proxy.pid())
}

fn assert_probe(report: &ProbeReport, min_ok: usize, what: &str) {
    eprintln!("{what}: probe {}", report.summary());
    assert!(
        report.failures.is_empty(),
        "{what}: other clients must be unaffected, probe failures: {:#?}",
        report.failures
    );
    assert!(
        report.ok() >= min_ok,
        "{what}: the probe completed only {} requests (expected at least {min_ok}): {}",
        report.ok(),
        report.summary()
    );
    assert!(
        report.quantile(0.95) < PROBE_P95,
        "{what}: p95 latency of other clients {:?} (limit {PROBE_P95:?}): {}",
        report.quantile(0.95),
        report.summary()
    );
}

/// Answers `/hang`-ish or faulty paths as the drill says, everything else with 200.
fn by_path(faults: impl Fn(&Recorded) -> Option<Action> + Send + Sync + 'static) -> Upstream {
    Upstream::with_actions(move |request| {
        faults(request).unwrap_or_else(|| Action::Reply(ok("ok")))
    })
}

/// The `state` of an authorize request as the upstream received it.
fn state_of(request: &Recorded) -> String {
    let params = if request.method == "POST" {
        parse_form(&request.body)
    } else {
        parse_form(request.query().unwrap_or("").as_bytes())
    };
    params
        .into_iter()
        .find(|(n, _)| n == "state")
        .map(|(_, v)| v)
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// Upstream faults
// ---------------------------------------------------------------------------------------------

#[test]
fn upstream_refusing_is_a_fast_502_and_the_proxy_recovers_when_it_returns() {
    let port = closed_port();
    let proxy = ProxyProcess::start_unready(
        ProxyConfig::with_upstreams(&[port]).with(|c| c.upstream.health_check_interval_ms = 200),
    );
    let baseline = ProcStats::of(proxy.pid());
    let hint = sign_hint(&microsoft_claims());

    for round in 0..10 {
        let started = Instant::now();
        let response = try_send(proxy.addr, &Request::get("/token"), EXCHANGE)
            .unwrap_or_else(|e| panic!("round {round}: no answer while refused: {e}"));
        assert_eq!(response.status, 502, "{}", response.describe());
        assert!(!response.body.is_empty(), "502 with a short body");
        let (_, post) = entra_post(&hint, &format!("refused-{round}"));
        let response = try_send(proxy.addr, &post, EXCHANGE).expect("an answer");
        assert_eq!(response.status, 502, "{}", response.describe());
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "a refused connection must fail fast, round {round} took {:?}",
            started.elapsed()
        );
        // What the proxy decides alone keeps working: a forged hint is refused as usual.
        let (_, post) = entra_post(&forged_hint(), &format!("forged-{round}"));
        let response = try_send(proxy.addr, &post, EXCHANGE).expect("an answer");
        assert!(
            is_form_post_rejection(&response),
            "a forged hint is refused whatever the upstream: {}",
            response.describe()
        );
        assert_eq!(proxy.admin_get("/healthz").status, 200);
    }

    // The upstream comes back on the same address: served again within a few health checks.
    let upstream = Upstream::start_on(port, |_| Action::Reply(ok("back")));
    let deadline = Instant::now() + DEADLINE;
    loop {
        match try_send(proxy.addr, &Request::get("/token"), EXCHANGE) {
            Ok(r) if is_forwarded(&r) => break,
            last if Instant::now() > deadline => {
                panic!("not served again within {DEADLINE:?} of the upstream's return: {last:?}")
            }
            _ => thread::sleep(Duration::from_millis(100)),
        }
    }
    assert_still_serving(&proxy, "after the upstream returned");
    let forged_arrived = upstream
        .requests()
        .iter()
        .filter(|r| state_of(r).starts_with("forged-"))
        .count();
    assert_eq!(
        forged_arrived, 0,
        "a forged hint never reaches the upstream"
    );
    assert_back_to_baseline(&proxy, baseline, "upstream refusing");
}

#[test]
fn upstream_reset_mid_response_is_a_clean_error_and_the_next_request_succeeds() {
    let body = long_body();
    let reply_body = body.clone();
    let upstream = by_path(move |request| {
        let reply = ok(&reply_body);
        match request.path() {
            "/half-close" => Some(Action::HalfThenClose(reply)),
            "/half-reset" => Some(Action::HalfThenReset(reply)),
            "/half-chunked" => Some(Action::HalfChunkedThenReset(reply)),
            "/reset" => Some(Action::ResetBeforeReply),
            AUTHORIZE_PATH if state_of(request).starts_with("reset-") => {
                Some(Action::HalfThenReset(reply))
            }
            _ => Some(Action::Reply(ok(&reply_body))),
        }
    });
    let proxy = ProxyProcess::start(ProxyConfig::new(&upstream));
    let baseline = warm_baseline(&proxy);
    let hint = sign_hint(&microsoft_claims());

    for round in 0..3 {
        for path in [
            "/half-close",
            "/half-reset",
            "/half-chunked",
            "/reset",
            "entra",
        ] {
            let request = if path == "entra" {
                entra_post(&hint, &format!("reset-{round}")).1
            } else {
                Request::get(path)
            };
            let started = Instant::now();
            let result = try_send(proxy.addr, &request, EXCHANGE);
            let took = started.elapsed();
            match &result {
                // Before any byte of answer: the proxy can still say so.
                Ok(r) if path == "/reset" => {
                    assert_eq!(r.status, 502, "{path}: {}", r.describe())
                }
                // Mid-response: the head is gone, only closing the connection tells the
                // client; a "complete" response here would hide the truncation.
                Ok(r) => panic!(
                    "{path}: the client must see the response cut, not a complete one \
                     ({} of {} body bytes): {}",
                    r.body.len(),
                    body.len(),
                    r.describe()
                ),
                Err(e) => assert!(
                    !matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ),
                    "{path}: the proxy must close the client's connection, not leave it \
                     hanging: {e}"
                ),
            }
            assert!(took < Duration::from_secs(4), "{path} took {took:?}");
            // The next request, on a new connection, is served whole.
            let next = try_send(proxy.addr, &Request::get("/next"), EXCHANGE)
                .unwrap_or_else(|e| panic!("after {path}: {e}"));
            assert!(is_forwarded(&next), "after {path}: {}", next.describe());
            assert_eq!(next.text(), body, "after {path}: a whole body");
        }
    }
    // A response that had started is never replayed: each mid-response fault arrived once per
    // request sent (a reset before any answer may be retried once on a new connection).
    let requests = upstream.requests();
    for path in ["/half-close", "/half-reset", "/half-chunked"] {
        let arrived = requests.iter().filter(|r| r.path() == path).count();
        assert_eq!(arrived, 3, "{path} arrived {arrived} times for 3 requests");
    }
    let resets = requests.iter().filter(|r| r.path() == "/reset").count();
    assert!((3..=6).contains(&resets), "/reset arrived {resets} times");
    assert_still_serving(&proxy, "after resets");
    assert_back_to_baseline(&proxy, baseline, "upstream resets");
}

#[test]
fn upstream_hang_is_a_504_after_the_read_timeout_while_other_paths_are_served() {
    let upstream = by_path(|request| {
        let hang = request.path() == "/hang"
            || (request.path() == AUTHORIZE_PATH && state_of(request).starts_with("hang-"));
        hang.then_some(Action::Hang)
    });
    let proxy = ProxyProcess::start(
        ProxyConfig::new(&upstream).with(|c| c.upstream.read_timeout_ms = 1000),
    );
    let baseline = warm_baseline(&proxy);
    let addr = proxy.addr;
    let hint = sign_hint(&microsoft_claims());

    let probe = Probe::get(addr, "/healthy", Duration::from_millis(50));
    let hangs: Vec<_> = (0..4)
        .map(|i| {
            let request = if i % 2 == 0 {
                Request::get("/hang")
            } else {
                entra_post(&hint, &format!("hang-{i}")).1
            };
            thread::spawn(move || {
                let started = Instant::now();
                let result = try_send(addr, &request, DEADLINE);
                (result, started.elapsed())
            })
        })
        .collect();
    for hang in hangs {
        let (result, took) = hang.join().unwrap();
        let response = result.unwrap_or_else(|e| panic!("a hung upstream must give 504: {e}"));
        assert_eq!(response.status, 504, "{}", response.describe());
        assert!(
            took >= Duration::from_millis(900) && took < Duration::from_secs(6),
            "504 after {took:?}, read_timeout_ms is 1000"
        );
    }
    let report = probe.finish();
    assert_probe(&report, 5, "upstream hang");

    // A timed-out request is not sent again.
    let requests = upstream.requests();
    let hung = requests
        .iter()
        .filter(|r| r.path() == "/hang" || state_of(r).starts_with("hang-"))
        .count();
    assert_eq!(hung, 4, "each hung request must reach the upstream once");
    assert_still_serving(&proxy, "after hangs");
    drop(upstream); // ends the held connections
    assert_back_to_baseline(&proxy, baseline, "upstream hang");
}

#[test]
fn slow_upstream_within_the_timeout_is_served_whole() {
    let body = long_body();
    let reply_body = body.clone();
    let upstream = by_path(move |request| match request.path() {
        "/slow" => Some(Action::Delay(Duration::from_millis(800), ok(&reply_body))),
        // Silent for at most 500 ms at a time, 2.5 s in all: longer than the timeout, which
        // bounds silence, not a whole transfer.
        "/trickle" => Some(Action::Trickle {
            reply: ok(&reply_body),
            pieces: 5,
            gap: Duration::from_millis(500),
        }),
        AUTHORIZE_PATH => Some(Action::Delay(Duration::from_millis(800), ok(&reply_body))),
        _ => None,
    });
    let proxy = ProxyProcess::start(
        ProxyConfig::new(&upstream).with(|c| c.upstream.read_timeout_ms = 2000),
    );
    let addr = proxy.addr;
    let hint = sign_hint(&microsoft_claims());
    let probe = Probe::get(addr, "/fast", Duration::from_millis(100));
    let slow: Vec<_> = ["/slow", "/trickle", "entra"]
        .into_iter()
        .map(|path| {
            let request = if path == "entra" {
                entra_post(&hint, "slow").1
            } else {
                Request::get(path)
            };
            thread::spawn(move || {
                let started = Instant::now();
                (path, try_send(addr, &request, DEADLINE), started.elapsed())
            })
        })
        .collect();
    for handle in slow {
        let (path, result, took) = handle.join().unwrap();
        let response = result.unwrap_or_else(|e| panic!("{path}: {e}"));
        assert!(is_forwarded(&response), "{path}: {}", response.describe());
        assert_eq!(response.text(), body, "{path}: the whole body");
        assert!(took >= Duration::from_millis(750), "{path} took {took:?}");
    }
    assert_probe(&probe.finish(), 5, "slow upstream");
    assert_still_serving(&proxy, "after slow answers");
}

// ---------------------------------------------------------------------------------------------
// Client faults
// ---------------------------------------------------------------------------------------------

#[test]
fn client_disconnecting_mid_body_forwards_nothing() {
    let upstream = Upstream::with_responder(|_| ok("ok"));
    let proxy = ProxyProcess::start(
        ProxyConfig::new(&upstream).with(|c| c.server.client_read_timeout_ms = 5000),
    );
    let baseline = ProcStats::of(proxy.pid());
    let hint = sign_hint(&microsoft_claims());
    let body = EntraRequest::new(&hint)
        .with("state", "cut-short")
        .encoded()
        .into_bytes();
    assert!(body.len() > 100);

    for i in 0..40 {
        let mut stream = TcpStream::connect(proxy.addr).expect("connect");
        let head = format!(
            "POST {AUTHORIZE_PATH} HTTP/1.1\r\nHost: idp.example.test\r\n\
             Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 5000\r\n\r\n"
        );
        stream.write_all(head.as_bytes()).unwrap();
        stream.write_all(&body[..100]).unwrap();
        thread::sleep(Duration::from_millis(5));
        if i % 2 == 0 {
            drop(stream);
        } else {
            reset(stream);
        }
    }
    // The proxy has seen every disconnect once its descriptors are back at the baseline.
    let (stats, settled) = ProcStats::settle(proxy.pid(), DEADLINE, |s| s.fds <= baseline.fds + 2);
    assert!(settled, "connections still open: {stats:?} vs {baseline:?}");
    assert_eq!(
        upstream.count(),
        0,
        "a body cut short must forward nothing: {:#?}",
        upstream.requests()
    );
    let accepted = proxy
        .decisions()
        .into_iter()
        .filter(|d| d["outcome"] == "accepted")
        .count();
    assert_eq!(accepted, 0, "no decision on a body never received");

    // The next client is served, and is the only request the upstream ever saw.
    let (_, post) = entra_post(&hint, "next-client");
    let response = try_send(proxy.addr, &post, EXCHANGE).expect("next client");
    assert!(is_forwarded(&response), "{}", response.describe());
    upstream.wait_for(1, EXCHANGE);
    let requests = upstream.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(state_of(&requests[0]), "next-client");
    assert_back_to_baseline(&proxy, baseline, "client disconnects");
}

/// Opens `count` connections to `proxy` and sends `opening` on each, then every `step` one more
/// byte of `trickle` (nothing when it is empty: a stall), until the proxy has ended them all or
/// `limit` has passed; meanwhile a probe measures another client. Returns how long each
/// connection lived (`None`: still open at the limit), the probe's report and the status lines
/// the proxy sent on them.
fn slow_attack(
    proxy: &ProxyProcess,
    count: usize,
    opening: &[u8],
    trickle: &[u8],
    step: Duration,
    limit: Duration,
) -> (Vec<Option<Duration>>, ProbeReport, Vec<String>) {
    let probe = Probe::get(proxy.addr, "/other-client", Duration::from_millis(100));
    let started = Instant::now();
    let mut senders: Vec<SlowSender> = (0..count)
        .map(|_| {
            let mut sender = SlowSender::open(proxy.addr).expect("connect");
            sender.feed(opening);
            sender
        })
        .collect();
    let mut next = 0;
    while Instant::now() < started + limit && !senders.iter().all(SlowSender::is_closed) {
        thread::sleep(step);
        if trickle.is_empty() {
            senders.iter_mut().for_each(SlowSender::poll);
        } else {
            let byte = [trickle[next % trickle.len()]];
            next += 1;
            senders.iter_mut().for_each(|s| s.feed(&byte));
        }
    }
    senders.iter_mut().for_each(SlowSender::poll);
    let report = probe.finish();
    let lived = senders
        .iter()
        .map(|s| s.closed_at.map(|at| at - started))
        .collect();
    let answers = senders
        .iter()
        .filter_map(SlowSender::answer_status)
        .collect();
    (lived, report, answers)
}

fn slow_client_proxy(upstream: &Upstream) -> ProxyProcess {
    ProxyProcess::start(ProxyConfig::new(upstream).with(|c| {
        c.server.client_read_timeout_ms = CLIENT_READ_TIMEOUT_MS;
        c.server.client_header_timeout_ms = CLIENT_READ_TIMEOUT_MS;
    }))
}

/// Asserts every slow connection was ended by the proxy within `bound`.
fn assert_all_ended(lived: &[Option<Duration>], answers: &[String], bound: Duration, what: &str) {
    eprintln!("{what}: connections lived {lived:?}; answers {answers:?}");
    let open = lived.iter().filter(|l| l.is_none()).count();
    assert_eq!(
        open,
        0,
        "{what}: {open} of {} slow connections still open; the proxy must close them \
         (client_read_timeout_ms = {CLIENT_READ_TIMEOUT_MS})",
        lived.len()
    );
    let slowest = lived.iter().flatten().max().copied().unwrap_or_default();
    assert!(
        slowest <= bound,
        "{what}: the slowest connection was ended after {slowest:?} (bound {bound:?})"
    );
}

/// The request head of an authorize POST announcing a 2,000-byte body, and its first bytes.
fn slow_post_head(state: &str) -> Vec<u8> {
    format!(
        "POST {AUTHORIZE_PATH} HTTP/1.1\r\nHost: idp.example.test\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 2000\r\n\r\nstate={state}"
    )
    .into_bytes()
}

/// A slowloris head: a request line and a header, then one header byte at a time.
const SLOWLORIS_HEAD: &[u8] = b"GET /authorize?client_id=x HTTP/1.1\r\nHost: idp.example.test\r\n";
const SLOWLORIS_TRICKLE: &[u8] =
    b"X-Slowloris: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n";
const BODY_TRICKLE: &[u8] = b"&padding=aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

#[test]
fn stalled_authorize_body_is_ended_after_the_client_read_timeout() {
    let upstream = Upstream::with_responder(|_| ok("ok"));
    let proxy = slow_client_proxy(&upstream);
    let baseline = warm_baseline(&proxy);
    let (lived, report, answers) = slow_attack(
        &proxy,
        10,
        &slow_post_head("stall"),
        b"",
        Duration::from_millis(100),
        Duration::from_secs(8),
    );
    assert_all_ended(&lived, &answers, Duration::from_secs(5), "stalled body");
    assert!(
        answers.len() == lived.len() && answers.iter().all(|a| a.contains(" 408 ")),
        "a client that stops sending its body is told 408 Request Timeout, not a server \
         error: {answers:?}"
    );
    let earliest = lived.iter().flatten().min().copied().unwrap_or_default();
    assert!(
        earliest >= Duration::from_millis(CLIENT_READ_TIMEOUT_MS - 100),
        "ended after {earliest:?}, before client_read_timeout_ms"
    );
    assert_probe(&report, 5, "stalled body");
    let stalled = upstream
        .requests()
        .iter()
        .filter(|r| state_of(r).starts_with("stall"))
        .count();
    assert_eq!(stalled, 0, "nothing forwarded for a stalled body");
    assert_still_serving(&proxy, "after stalled bodies");
    assert_back_to_baseline(&proxy, baseline, "stalled bodies");
}

#[test]
fn slow_clients_leave_other_clients_unaffected() {
    let _heavy = eam_tests::exclusive::heavy();
    let upstream = Upstream::with_responder(|_| ok("ok"));
    let proxy = slow_client_proxy(&upstream);
    let baseline = warm_baseline(&proxy);
    let probe = Probe::get(proxy.addr, "/other-client", Duration::from_millis(100));
    // 10 slowloris heads, 10 stalled heads, 10 trickled authorize bodies at once, one byte
    // per 500 ms each, for 4 s (eight times past client_read_timeout_ms).
    let mut senders: Vec<(SlowSender, &[u8])> = Vec::new();
    for i in 0..30 {
        let mut sender = SlowSender::open(proxy.addr).expect("connect");
        let trickle: &[u8] = match i % 3 {
            0 => {
                sender.feed(SLOWLORIS_HEAD);
                SLOWLORIS_TRICKLE
            }
            1 => {
                sender.feed(b"GET /authorize?client_id=");
                b""
            }
            _ => {
                sender.feed(&slow_post_head("trickle"));
                BODY_TRICKLE
            }
        };
        senders.push((sender, trickle));
    }
    let started = Instant::now();
    let mut step = 0;
    while started.elapsed() < Duration::from_secs(4) {
        thread::sleep(Duration::from_millis(500));
        for (sender, trickle) in &mut senders {
            if trickle.is_empty() {
                sender.poll();
            } else {
                sender.feed(&[trickle[step % trickle.len()]]);
            }
        }
        step += 1;
    }
    let report = probe.finish();
    assert_probe(&report, 20, "slow clients");
    drop(senders);
    assert_eq!(
        upstream
            .requests()
            .iter()
            .filter(|r| state_of(r).starts_with("trickle"))
            .count(),
        0,
        "an incomplete authorize body is never forwarded"
    );
    assert_still_serving(&proxy, "after slow clients");
    assert_back_to_baseline(&proxy, baseline, "slow clients");
}

/// What [`slow_attack`] does, once, on a proxy of its own: the drill of one kind of slow
/// client.
struct SlowClients {
    what: &'static str,
    count: usize,
    opening: Vec<u8>,
    trickle: &'static [u8],
    step: Duration,
    /// Every connection must be ended by then.
    ended_within: Duration,
}

impl SlowClients {
    /// Other clients are served meanwhile, and the proxy ends every slow connection in time.
    fn assert_ended(self) {
        let upstream = Upstream::with_responder(|_| ok("ok"));
        let proxy = slow_client_proxy(&upstream);
        let limit = Duration::from_secs(8);
        let (lived, report, answers) = slow_attack(
            &proxy,
            self.count,
            &self.opening,
            self.trickle,
            self.step,
            limit,
        );
        assert_probe(&report, 5, self.what);
        assert_all_ended(&lived, &answers, self.ended_within, self.what);
    }
}

#[test]
fn trickled_authorize_body_is_ended_by_the_proxy() {
    SlowClients {
        what: "trickled body",
        count: 10,
        opening: slow_post_head("trickle"),
        trickle: BODY_TRICKLE,
        step: Duration::from_millis(500),
        ended_within: Duration::from_secs(6),
    }
    .assert_ended();
}

#[test]
fn stalled_request_head_is_ended_after_the_client_header_timeout() {
    SlowClients {
        what: "stalled head",
        count: 10,
        opening: b"GET /authorize?client_id=".to_vec(),
        trickle: b"",
        step: Duration::from_millis(100),
        ended_within: Duration::from_secs(5),
    }
    .assert_ended();
}

#[test]
fn slowloris_headers_are_ended_by_the_proxy() {
    let _heavy = eam_tests::exclusive::heavy();
    SlowClients {
        what: "slowloris headers",
        count: 20,
        opening: SLOWLORIS_HEAD.to_vec(),
        trickle: SLOWLORIS_TRICKLE,
        step: Duration::from_millis(500),
        ended_within: Duration::from_secs(6),
    }
    .assert_ended();
}

/// Opens `total` connections to the proxy, `batch` at a time, and drops them: one in two
/// after the start of a request, half with a FIN and half with a reset. A request between
/// batches must be served; the next batch starts once the proxy has closed its side of the
/// previous one (at most `batch` connections at a time, as the drill says).
fn connection_flood(
    proxy: &ProxyProcess,
    baseline: ProcStats,
    total: usize,
    batch: usize,
) -> Duration {
    let partials: [&[u8]; 3] = [
        b"GET /authorize?client_id=",
        b"POST /authorize HTTP/1.1\r\nHost: x\r\nContent-Length: 300\r\n\r\nclient_id=",
        b"GET /token HTTP/1.1\r\nHo",
    ];
    let mut slowest = Duration::ZERO;
    for round in 0..total / batch {
        let mut open = Vec::with_capacity(batch);
        for i in 0..batch {
            let mut stream = TcpStream::connect_timeout(&proxy.addr, EXCHANGE)
                .unwrap_or_else(|e| panic!("batch {round}, connection {i}: {e}"));
            if i % 2 == 1 {
                let _ = stream.write_all(partials[i % 3]);
            }
            open.push(stream);
        }
        for (i, stream) in open.into_iter().enumerate() {
            // A reset leaves no TIME_WAIT behind on this side.
            if i % 2 == 0 {
                reset(stream);
            } else {
                drop(stream);
            }
        }
        let t = Instant::now();
        let response = try_send(proxy.addr, &Request::get("/between-batches"), EXCHANGE)
            .unwrap_or_else(|e| panic!("after batch {round}: {e}"));
        assert!(is_forwarded(&response), "{}", response.describe());
        slowest = slowest.max(t.elapsed());
        let (stats, drained) =
            ProcStats::settle(proxy.pid(), DEADLINE, |s| s.fds <= baseline.fds + FD_SLACK);
        assert!(
            drained,
            "batch {round}: the proxy still holds {} descriptors after {DEADLINE:?} \
             (baseline {})",
            stats.fds, baseline.fds
        );
    }
    slowest
}

/// Waits until the proxy has closed every dropped connection and its RSS has stopped moving.
fn settled_after_flood(proxy: &ProxyProcess, baseline: ProcStats, what: &str) -> ProcStats {
    let (stats, settled) =
        ProcStats::settle(proxy.pid(), DEADLINE, |s| s.fds <= baseline.fds + FD_SLACK);
    assert!(
        settled,
        "{what}: descriptors not back near the baseline within {DEADLINE:?}: baseline \
         {baseline:?}, now {stats:?}"
    );
    let mut last = stats;
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        thread::sleep(Duration::from_millis(300));
        let now = ProcStats::of(proxy.pid());
        if now.rss_kib.abs_diff(last.rss_kib) < 256 {
            return now;
        }
        last = now;
    }
    last
}

#[test]
fn ten_thousand_connections_opened_and_dropped() {
    let _heavy = eam_tests::exclusive::heavy();
    let upstream = Upstream::with_responder(|_| ok("ok"));
    let proxy = ProxyProcess::start(ProxyConfig::new(&upstream));
    let baseline = warm_baseline(&proxy);
    let started = Instant::now();
    let first_slowest = connection_flood(&proxy, baseline, 5_000, 500);
    let half = settled_after_flood(&proxy, baseline, "after 5,000 connections");
    let second_slowest = connection_flood(&proxy, baseline, 5_000, 500);
    let full = settled_after_flood(&proxy, baseline, "after 10,000 connections");
    eprintln!(
        "10,000 connections in {:?}; slowest request between batches {:?}; baseline \
         {baseline:?}, after 5,000 {half:?}, after 10,000 {full:?}",
        started.elapsed(),
        first_slowest.max(second_slowest)
    );
    // Memory stays bounded (a leak of 7 KiB a connection would cross this line); returning
    // to the baseline itself is `memory_returns_to_baseline_after_a_connection_flood`, which
    // fails: the allocator keeps a high-water mark of 30-45 MiB that levels off over
    // repeated floods.
    assert!(
        full.rss_kib <= baseline.rss_kib + 64 * 1024,
        "RSS {} KiB after 10,000 connections, baseline {} KiB",
        full.rss_kib,
        baseline.rss_kib
    );
    assert_still_serving(&proxy, "after 10,000 connections");
    assert_eq!(
        upstream.count(),
        3 * 2 + 2 * 5_000 / 500 + 2,
        "only complete requests reach the upstream"
    );
}

#[test]
fn memory_returns_to_baseline_after_a_connection_flood() {
    let _heavy = eam_tests::exclusive::heavy();
    let upstream = Upstream::with_responder(|_| ok("ok"));
    let proxy = ProxyProcess::start(ProxyConfig::new(&upstream));
    let baseline = warm_baseline(&proxy);
    connection_flood(&proxy, baseline, 10_000, 500);
    settled_after_flood(&proxy, baseline, "after 10,000 connections");
    assert_back_to_baseline(&proxy, baseline, "10,000 connections");
}

// ---------------------------------------------------------------------------------------------
// Key server faults
// ---------------------------------------------------------------------------------------------

#[test]
fn key_server_faults_under_load_fail_no_request() {
    let _heavy = eam_tests::exclusive::heavy();
    const REFRESH_FAILED: &str = "key set refresh failed";
    const LOADED: &str = "key set loaded";
    let keys = KeyServer::start(eam_tests::default_jwks());
    let upstream = Upstream::start();
    let proxy = ProxyProcess::start(
        ProxyConfig::new(&upstream)
            .keys(Keys::Url(keys.url()))
            .jwks_timings(1, 3600, 604_800, 700),
    );
    let addr = proxy.addr;
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let load = {
        let (stop, sent, failures) = (stop.clone(), sent.clone(), failures.clone());
        thread::spawn(move || {
            let hint = sign_hint(&microsoft_claims());
            let mut client = Client::new(addr, EXCHANGE);
            // Bounded: at most 5,000 requests, paced a little.
            while !stop.load(Ordering::SeqCst) && sent.load(Ordering::SeqCst) < 5000 {
                let n = sent.fetch_add(1, Ordering::SeqCst);
                let (_, post) = entra_post(&hint, &format!("load-{n}"));
                match client.send(&post) {
                    Ok(r) if is_forwarded(&r) => {}
                    Ok(r) => failures
                        .lock()
                        .unwrap()
                        .push(format!("#{n}: {}", r.describe())),
                    Err(e) => failures.lock().unwrap().push(format!("#{n}: {e}")),
                }
                thread::sleep(Duration::from_millis(2));
            }
        })
    };

    let mut phases = Vec::new();
    for mode in [
        KeyMode::Down,
        KeyMode::Serve,
        KeyMode::Garbage,
        KeyMode::Status(503),
        KeyMode::Oversized { chunked: true },
        KeyMode::SlowBody(Duration::from_secs(3)),
        KeyMode::Serve,
    ] {
        let started = Instant::now();
        let (needle, before) = if mode == KeyMode::Serve {
            (LOADED, proxy.log_lines(LOADED).len())
        } else {
            (REFRESH_FAILED, proxy.log_lines(REFRESH_FAILED).len())
        };
        let sent_before = sent.load(Ordering::SeqCst);
        keys.set_mode(mode);
        // The proxy tried the key server in this mode at least once, under load.
        proxy.wait_for_log(needle, before + 1, DEADLINE);
        assert_eq!(proxy.admin_get("/readyz").status, 200, "ready in {mode:?}");
        phases.push(format!(
            "{}: {:?}, {} requests",
            mode.label(),
            started.elapsed(),
            sent.load(Ordering::SeqCst) - sent_before
        ));
    }
    stop.store(true, Ordering::SeqCst);
    load.join().unwrap();
    let sent = sent.load(Ordering::SeqCst);
    eprintln!("key server faults: {sent} requests; phases {phases:#?}");
    let what = format!("of {sent} valid Entra requests during key server faults");
    assert_none_failed(&failures.lock().unwrap(), &what);
    assert!(sent >= 50, "only {sent} requests under load");
    upstream.wait_for(sent, EXCHANGE);
    let fetch_modes: Vec<&str> = keys.fetch_log().iter().map(|f| f.mode).collect();
    for label in ["garbage", "status", "oversized-chunked", "slow-body"] {
        assert!(
            fetch_modes.contains(&label),
            "the key server was fetched in mode {label}: {fetch_modes:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Configuration errors
// ---------------------------------------------------------------------------------------------

/// A broken configuration and the words its message must contain (key path, reason).
struct BrokenConfig {
    name: &'static str,
    bytes: Vec<u8>,
    words: Vec<&'static str>,
}

/// Runs the binary on `bytes` (with `--check` or as a start), expecting it to exit by itself.
fn run_on_config(dir: &TempDir, name: &str, bytes: &[u8], check: bool) -> (Option<i32>, String) {
    let path = dir.path().join(format!("{name}.toml"));
    std::fs::write(&path, bytes).unwrap();
    run_binary(&path, check)
}

/// Its exit code and everything it wrote (stderr, then stdout).
fn run_binary(config: &std::path::Path, check: bool) -> (Option<i32>, String) {
    let args: &[&str] = if check { &["--check"] } else { &[] };
    let outcome = run_on_file(config, args, DEADLINE);
    (
        outcome.status.code(),
        format!("{}{}", outcome.stderr, outcome.stdout),
    )
}

/// The tests' configuration text, with every listener on a closed loopback port.
fn config_text(config: ProxyConfig, dir: &TempDir) -> Vec<u8> {
    let (path, _) = config.write_to(dir);
    std::fs::read(path).unwrap()
}

/// Broken configurations that set one key of the tests' configuration to a bad value, a line
/// each: `name | table.key = value | the words its message must contain`.
const ONE_BAD_KEY: &str = r#"
# Unknown keys.
unknown_key              | server.bogus = 1                                         | server, bogus
unknown_app_key          | apps.colour = "blue"                                     | apps[0], colour
unknown_cloud_key        | clouds.global.jwks_uri = "https://x.test/k"              | clouds.global, jwks_uri
# Wrong types.
string_for_integer       | server.threads = "two"                                   | server.threads, invalid type
string_for_list          | upstream.addresses = "127.0.0.1:1"                       | upstream.addresses, invalid type
negative_size            | server.max_body_bytes = -1                               | server.max_body_bytes
float_for_integer        | upstream.read_timeout_ms = 1.5                           | upstream.read_timeout_ms, invalid type
unknown_variant          | authorize.detect = "sometimes"                           | authorize.detect, sometimes
unknown_log_format       | log.format = "xml"                                       | log.format, xml
bool_as_string           | upstream.tls = "yes"                                     | upstream.tls, invalid type
# Semantic errors (proxy/src/config.rs).
no_listener              | server.listen = []                                       | server.listen, no listener
bad_listen               | server.listen = ["nonsense"]                             | server.listen[0], nonsense
bad_admin_listen         | server.admin_listen = "localhost"                        | server.admin_listen
tls_without_cert         | server.tls_listen = ["127.0.0.1:1"]                      | server.tls_cert, required
bad_trusted_proxy        | server.trusted_proxies = ["10.0.0.0/33"]                 | server.trusted_proxies[0], 10.0.0.0/33
zero_threads             | server.threads = 0                                       | server.threads
body_limit_too_large     | server.max_body_bytes = 65536                            | server.max_body_bytes, 64 KiB
zero_client_read_timeout | server.client_read_timeout_ms = 0                        | server.client_read_timeout_ms, positive
no_upstream              | upstream.addresses = []                                  | upstream.addresses, at least one
bad_upstream             | upstream.addresses = ["no-port"]                         | upstream.addresses[0], no-port
tls_without_sni          | upstream.tls = true                                      | upstream.sni, required
missing_ca_file          | upstream.ca_file = "/nonexistent/ca.pem"                 | upstream.ca_file, /nonexistent/ca.pem
zero_read_timeout        | upstream.read_timeout_ms = 0                             | upstream.read_timeout_ms, positive
relative_health_path     | upstream.health_check_path = "health"                    | upstream.health_check_path
no_authorize_path        | authorize.paths = []                                     | authorize.paths, at least one
relative_authorize_path  | authorize.paths = ["authorize?x=1"]                      | authorize.paths[0]
empty_prefix             | authorize.param_prefix = ""                              | authorize.param_prefix
hint_param_not_renamed   | authorize.hint_param = "id_token_hint"                   | authorize.hint_param
leeway_too_long          | authorize.leeway_seconds = 3601                          | authorize.leeway_seconds, 3600
zero_refresh             | jwks.refresh_seconds = 0                                 | jwks.refresh_seconds, positive
bad_log_level            | log.level = "info,=["                                    | log.level
empty_client_id          | apps.client_id = ""                                      | apps[0].client_id
unknown_cloud            | apps.cloud = "mars"                                      | apps[0].cloud, mars
empty_audience           | apps.audiences = [""]                                    | apps[0].audiences
tenant_not_a_guid        | apps.allowed_tenants = ["contoso.com"]                   | apps[0].allowed_tenants[0], GUID
url_and_file             | clouds.global.jwks_url = "https://keys.example.com/keys" | clouds.global, not both
http_issuer_template     | clouds.global.issuer_template = "http://x.test/{tid}"    | clouds.global.issuer_template, https://
no_redirect_uris         | clouds.global.redirect_uris = []                         | clouds.global.redirect_uris, empty
script_redirect_uri      | clouds.global.redirect_uris = ["javascript:alert(1)"]    | clouds.global.redirect_uris[0]
"#;

fn one_bad_key(dir: &TempDir) -> Vec<BrokenConfig> {
    let rows = ONE_BAD_KEY.lines().map(str::trim);
    rows.filter(|row| !row.is_empty() && !row.starts_with('#'))
        .map(|row| {
            let columns: Vec<&'static str> = row.split('|').map(str::trim).collect();
            let [name, setting, words] = columns[..] else {
                panic!("not `name | setting | words`: {row}")
            };
            let (path, value) = setting.split_once(" = ").expect("table.key = value");
            let config = ProxyConfig::with_upstreams(&[closed_port()]);
            BrokenConfig {
                name,
                bytes: with_raw_key(&config_text(config, dir), path, value),
                words: words.split(", ").collect(),
            }
        })
        .collect()
}

/// `text` with `path` (`table.key`; in `apps`, the first app's) set to `value`, a TOML literal.
/// Text rather than the typed configuration, whose types would refuse most of these values.
fn with_raw_key(text: &[u8], path: &str, value: &str) -> Vec<u8> {
    let mut document: toml::Table = std::str::from_utf8(text).unwrap().parse().unwrap();
    let mut value: toml::Table = format!("value = {value}").parse().unwrap();
    let (tables, key) = path.rsplit_once('.').expect("table.key");
    let mut table = &mut document;
    for name in tables.split('.') {
        table = match table
            .entry(name)
            .or_insert_with(|| toml::Table::new().into())
        {
            toml::Value::Table(table) => table,
            toml::Value::Array(array) => array[0].as_table_mut().expect("an array of tables"),
            other => panic!("{name} is not a table: {other}"),
        };
    }
    table.insert(key.into(), value.remove("value").unwrap());
    toml::to_string(&document).unwrap().into_bytes()
}

/// `[[authorize.extra_claims]]`: the `name` claim as `param`.
fn extra_claim(param: &str) -> ExtraClaim {
    ExtraClaim {
        claim: "name".into(),
        param: param.into(),
    }
}

fn broken_configs(dir: &TempDir) -> Vec<BrokenConfig> {
    let base = || ProxyConfig::with_upstreams(&[closed_port()]);
    let text = |c: ProxyConfig| config_text(c, dir);
    let appended = |extra: &str| {
        let mut bytes = text(base());
        bytes.extend_from_slice(extra.as_bytes());
        bytes
    };
    let case = |name, bytes, words: &[&'static str]| BrokenConfig {
        name,
        bytes,
        words: words.to_vec(),
    };
    let mut non_utf8 = text(base());
    non_utf8.extend_from_slice(b"\n# caf\xe9 \xff\xfe\n");
    let listeners = format!(
        "[server]\nlisten = [\"{}\"]\nadmin_listen = \"{}\"\n",
        closed_port(),
        closed_port()
    );
    let mut cases = vec![
        // Bytes and syntax.
        case("non_utf8", non_utf8, &["UTF-8"]),
        case("empty", Vec::new(), &["apps", "at least one"]),
        case(
            "unclosed_table",
            b"[server\nthreads = 1\n".to_vec(),
            &["line 1"],
        ),
        case(
            "unterminated_string",
            appended("[log2]\nlevel = \"info\n"),
            &["line", "string"],
        ),
        case(
            "duplicate_key",
            format!("{listeners}threads = 1\nthreads = 2\n").into_bytes(),
            &["duplicate", "threads"],
        ),
        case(
            "integer_overflow",
            format!("{listeners}client_read_timeout_ms = 99999999999999999999999\n").into_bytes(),
            &["server.client_read_timeout_ms", "expected u64"],
        ),
        case("nul_byte", appended("# \0\n"), &["line"]),
        // Unknown keys.
        case("unknown_table", appended("[bogus]\nx = 1\n"), &["bogus"]),
        // Wrong types.
        case(
            "apps_not_an_array",
            format!("{listeners}[apps]\nclient_id = \"x\"\n").into_bytes(),
            &["apps", "invalid type"],
        ),
        // Semantic errors (proxy/src/config.rs).
        case(
            "no_apps",
            text(base().with(|c| c.apps.clear())),
            &["apps", "at least one"],
        ),
        case(
            "extra_claim_without_prefix",
            text(base().with(|c| c.authorize.extra_claims = vec![extra_claim("name")])),
            &["authorize.extra_claims[0].param", "entra_"],
        ),
        case(
            "extra_claim_shadows_builtin",
            text(base().with(|c| c.authorize.extra_claims = vec![extra_claim("entra_sub")])),
            &["authorize.extra_claims[0].param", "entra_sub"],
        ),
        case(
            "duplicate_client_id",
            text(base().add_app(app(CLIENT_ID, "global"))),
            &["apps[1].client_id", "duplicate"],
        ),
        case(
            "plain_http_keys",
            text(base().keys(Keys::Url("http://keys.example.com/keys".into()))),
            &["clouds.global.jwks_url", "loopback"],
        ),
        case(
            "ftp_keys",
            text(base().keys(Keys::Url("ftp://keys.example.com/keys".into()))),
            &["clouds.global.jwks_url", "ftp"],
        ),
        case(
            "incomplete_new_cloud",
            text(base().with(|c| {
                let mars = c.clouds.entry("mars".into()).or_default();
                mars.jwks_url = Some("https://keys.mars.test/keys".into());
            })),
            &["clouds.mars", "issuer_template"],
        ),
    ];
    cases.extend(one_bad_key(dir));
    cases
}

#[test]
fn broken_configuration_files_are_refused_with_a_precise_message_never_a_panic() {
    let dir = TempDir::new();
    let mut cases = broken_configs(&dir);
    let missing = dir.path().join("does-not-exist.toml");
    let mut failures = Vec::new();
    let mut check_outcome =
        |name: &str, check: bool, code: Option<i32>, output: &str, words: &[&str]| {
            let mode = if check { "--check" } else { "start-up" };
            if check {
                eprintln!("{name}: {}", output.trim_end());
            }
            if code != Some(2) {
                failures.push(format!(
                    "{name} ({mode}): exit code {code:?}, expected 2: {output}"
                ));
            }
            if output.contains("panicked") || output.contains("RUST_BACKTRACE") {
                failures.push(format!("{name} ({mode}): panicked: {output}"));
            }
            for word in words {
                if !output.contains(word) {
                    failures.push(format!("{name} ({mode}): message lacks {word:?}: {output}"));
                }
            }
        };
    let started = Instant::now();
    for check in [true, false] {
        for (name, path, words) in [
            (
                "missing_file",
                missing.clone(),
                vec!["cannot read", "does-not-exist.toml"],
            ),
            ("directory", dir.path().to_path_buf(), vec!["cannot read"]),
        ] {
            let (code, output) = run_binary(&path, check);
            check_outcome(name, check, code, &output, &words);
        }
    }
    for case in cases.drain(..) {
        for check in [true, false] {
            let (code, output) = run_on_config(&dir, case.name, &case.bytes, check);
            check_outcome(case.name, check, code, &output, &case.words);
        }
    }
    eprintln!("configuration cases run in {:?}", started.elapsed());
    assert!(
        failures.is_empty(),
        "{} problem(s):\n{}",
        failures.len(),
        failures.join("\n")
    );
}

// ---------------------------------------------------------------------------------------------
// Soak (bench/soak)
// ---------------------------------------------------------------------------------------------

/// The kinds of the soak's mixed load, by slot: 40 % valid Entra, 30 % invalid Entra, 20 %
/// pass-through GETs, 10 % non-Entra authorize requests carrying spoofed `entra_*` parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Valid,
    Invalid,
    PassThrough,
    Spoofed,
}

impl Kind {
    const ALL: [Kind; 4] = [Kind::Valid, Kind::Invalid, Kind::PassThrough, Kind::Spoofed];

    fn of(slot: u64) -> Kind {
        match slot % 20 {
            0..=7 => Kind::Valid,
            8..=13 => Kind::Invalid,
            14..=17 => Kind::PassThrough,
            _ => Kind::Spoofed,
        }
    }

    fn index(self) -> usize {
        self as usize
    }

    fn label(self) -> &'static str {
        match self {
            Kind::Valid => "valid_entra",
            Kind::Invalid => "invalid_entra",
            Kind::PassThrough => "pass_through",
            Kind::Spoofed => "spoofed_non_entra",
        }
    }
}

/// Ways an Entra hint is invalid, cycled through by the soak.
const INVALID_VARIANTS: [&str; 10] = [
    "foreign_signature",
    "alg_none",
    "hs256",
    "expired",
    "wrong_audience",
    "msa_tenant",
    "tampered_payload",
    "unknown_kid",
    "garbage",
    "unlisted_redirect_uri",
];

/// Hints minted by the soak's main thread and re-minted every minute (a valid hint lives
/// `leeway_seconds` = 300 s after issuance).
struct Hints {
    valid: Vec<String>,
    invalid: Vec<String>,
}

fn mint_hints() -> Hints {
    let valid = (0..4).map(|_| sign_hint(&microsoft_claims())).collect();
    let base = microsoft_claims();
    let with = |changes: Value| {
        let mut claims = base.clone();
        for (k, v) in changes.as_object().unwrap() {
            claims[k] = v.clone();
        }
        claims
    };
    let now = eam_tests::now();
    let good = sign_hint(&base);
    let mut parts: Vec<&str> = good.split('.').collect();
    let other_payload = sign_hint(&with(json!({"sub": "someone-else"})));
    let tampered_payload = other_payload.split('.').nth(1).unwrap().to_string();
    parts[1] = &tampered_payload;
    let invalid = vec![
        FOREIGN.sign("signer", &base),
        unsigned("signer", &base),
        sign_hs256(b"public-key-material", "signer", &base),
        sign_hint(&with(
            json!({"iat": now - 4000, "nbf": now - 4000, "exp": now - 4001}),
        )),
        sign_hint(&with(
            json!({"aud": "00000000-0000-0000-0000-000000000000"}),
        )),
        sign_hint(&with(
            json!({"tid": MSA_TENANT_ID, "iss": issuer(MSA_TENANT_ID)}),
        )),
        parts.join("."),
        SIGNER.sign("rotated-away", &base),
        "not-a-jwt".to_string(),
        FOREIGN.sign("signer", &base),
    ];
    assert_eq!(invalid.len(), INVALID_VARIANTS.len());
    Hints { valid, invalid }
}

/// What the upstream stand-in saw.
#[derive(Default)]
struct UpstreamTally {
    by_kind: [AtomicUsize; 4],
    /// An invalid Entra request reached the upstream.
    invalid_forwarded: AtomicUsize,
    /// An `entra_*` parameter arrived without a validated hint, or a hint arrived unrenamed.
    unvalidated_identity: AtomicUsize,
    unknown: AtomicUsize,
    examples: Mutex<Vec<String>>,
}

impl UpstreamTally {
    fn violation(&self, counter: &AtomicUsize, what: String) {
        counter.fetch_add(1, Ordering::SeqCst);
        let mut examples = self.examples.lock().unwrap();
        if examples.len() < 20 {
            examples.push(what);
        }
    }

    fn record(&self, request: &Recorded) {
        if request.path() != AUTHORIZE_PATH {
            self.by_kind[Kind::PassThrough.index()].fetch_add(1, Ordering::SeqCst);
            return;
        }
        let params = if request.method == "POST" {
            parse_form(&request.body)
        } else {
            parse_form(request.query().unwrap_or("").as_bytes())
        };
        let get = |name: &str| params.iter().find(|(n, _)| n == name).map(|(_, v)| v);
        let state = get("state").cloned().unwrap_or_default();
        let entra: Vec<&String> = params
            .iter()
            .map(|(n, _)| n)
            .filter(|n| n.starts_with("entra_"))
            .collect();
        if state.starts_with("soak-invalid-") {
            self.by_kind[Kind::Invalid.index()].fetch_add(1, Ordering::SeqCst);
            self.violation(
                &self.invalid_forwarded,
                format!("invalid request forwarded: state {state}, params {entra:?}"),
            );
        } else if state.starts_with("soak-valid-") {
            let rewritten = get("entra_id_token_hint").is_some()
                && get("entra_sub").map(String::as_str) == Some(SUB)
                && get("id_token_hint").is_none()
                && get("prompt").map(String::as_str) == Some("login");
            if rewritten {
                self.by_kind[Kind::Valid.index()].fetch_add(1, Ordering::SeqCst);
            } else {
                self.violation(
                    &self.unvalidated_identity,
                    format!("valid request not rewritten: {params:?}"),
                );
            }
        } else if state.starts_with("soak-spoof-") {
            if entra.is_empty() {
                self.by_kind[Kind::Spoofed.index()].fetch_add(1, Ordering::SeqCst);
            } else {
                self.violation(
                    &self.unvalidated_identity,
                    format!("spoofed parameters reached the upstream: {entra:?}"),
                );
            }
        } else {
            self.violation(
                &self.unknown,
                format!("unexpected request: {}", request.target),
            );
        }
    }
}

/// What the soak's clients saw, per kind.
#[derive(Default)]
struct ClientTally {
    sent: [AtomicUsize; 4],
    expected: [AtomicUsize; 4],
    unexpected: [AtomicUsize; 4],
    statuses: Mutex<std::collections::BTreeMap<String, usize>>,
    examples: Mutex<Vec<String>>,
    latencies_us: Mutex<Vec<u64>>,
    late_over_1s: AtomicUsize,
    retries: AtomicUsize,
    connects: AtomicUsize,
}

impl ClientTally {
    fn record(
        &self,
        kind: Kind,
        outcome: Result<&Response, String>,
        expected: bool,
        late: Duration,
    ) {
        let i = kind.index();
        self.sent[i].fetch_add(1, Ordering::SeqCst);
        if late > Duration::from_secs(1) {
            self.late_over_1s.fetch_add(1, Ordering::SeqCst);
        }
        let status = match &outcome {
            Ok(r) => r.status.to_string(),
            Err(_) => "error".to_string(),
        };
        *self
            .statuses
            .lock()
            .unwrap()
            .entry(format!("{}:{status}", kind.label()))
            .or_default() += 1;
        if expected {
            self.expected[i].fetch_add(1, Ordering::SeqCst);
        } else {
            self.unexpected[i].fetch_add(1, Ordering::SeqCst);
            let mut examples = self.examples.lock().unwrap();
            if examples.len() < 20 {
                examples.push(match outcome {
                    Ok(r) => format!("{}: {}", kind.label(), r.describe()),
                    Err(e) => format!("{}: {e}", kind.label()),
                });
            }
        }
    }
}

/// Builds the request of `slot` and says whether `response` is what it must get.
fn soak_request(slot: u64, hints: &Hints) -> (Kind, Request, String) {
    let kind = Kind::of(slot);
    match kind {
        Kind::Valid => {
            let hint = &hints.valid[slot as usize % hints.valid.len()];
            let state = format!("soak-valid-{slot}");
            (
                kind,
                EntraRequest::new(hint).with("state", &state).post(),
                state,
            )
        }
        Kind::Invalid => {
            let variant = (slot / 20) as usize % INVALID_VARIANTS.len();
            let state = format!("soak-invalid-{slot}-{}", INVALID_VARIANTS[variant]);
            let mut request = EntraRequest::new(&hints.invalid[variant]).with("state", &state);
            if INVALID_VARIANTS[variant] == "unlisted_redirect_uri" {
                request = request.with("redirect_uri", "https://attacker.example/cb");
            }
            let request = if slot % 2 == 0 {
                request.post()
            } else {
                request.get_request()
            };
            (kind, request, state)
        }
        Kind::PassThrough => {
            let path = [
                "/.well-known/openid-configuration",
                "/jwks",
                "/token?x=1",
                "/login.css",
            ][slot as usize % 4];
            (kind, Request::get(path), String::new())
        }
        Kind::Spoofed => {
            let state = format!("soak-spoof-{slot}");
            let target = format!(
                "{AUTHORIZE_PATH}?client_id=another-client&response_type=code&state={state}\
                 &entra_sub=evil&entra_oid=evil&ENTRA_tid=evil&entra%5Fiss=evil"
            );
            (kind, Request::get(&target), state)
        }
    }
}

fn soak_expected(kind: Kind, state: &str, response: &Response) -> bool {
    match kind {
        Kind::Valid | Kind::PassThrough | Kind::Spoofed => is_forwarded(response),
        Kind::Invalid if state.ends_with("unlisted_redirect_uri") => {
            response.header("x-upstream").is_none()
                && response.verdict() == Verdict::status(400, "invalid_request")
        }
        Kind::Invalid => {
            is_form_post_rejection(response)
                && parse_html_form(&response.text())
                    .is_some_and(|form| form.field("state") == Some(state))
        }
    }
}

fn env_number(name: &str, default: f64) -> f64 {
    std::env::var(name)
        .ok()
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name}={v:?} is not a number"))
        })
        .unwrap_or(default)
}

#[derive(Debug, Clone, Copy)]
struct Sample {
    at: f64,
    rss_kib: u64,
    fds: usize,
}

fn window_stats(samples: &[Sample], from: f64, to: f64) -> (u64, f64, usize) {
    let window: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.at >= from && s.at <= to)
        .collect();
    assert!(
        !window.is_empty(),
        "no RSS sample between {from} s and {to} s"
    );
    let max = window.iter().map(|s| s.rss_kib).max().unwrap();
    let mean = window.iter().map(|s| s.rss_kib as f64).sum::<f64>() / window.len() as f64;
    (max, mean, window.len())
}

#[test]
#[ignore = "soak: run by bench/soak (EAM_SOAK_SECONDS, EAM_SOAK_RATE, EAM_SOAK_REPORT)"]
fn soak() {
    let seconds = env_number("EAM_SOAK_SECONDS", 30.0);
    let rate = env_number("EAM_SOAK_RATE", 200.0);
    let workers = env_number("EAM_SOAK_WORKERS", 16.0) as u64;
    assert!(seconds >= 20.0, "a soak lasts at least 20 s");
    let window = if seconds >= 120.0 { 60.0 } else { 10.0 };
    // The rate is held from the start, but memory is compared from the end of a ramp-up (the
    // allocator's arenas grow for the first tens of seconds of a concurrent load, then stay).
    let ramp_up = env_number("EAM_SOAK_RAMP_UP", 10.0);
    let total = ((ramp_up + seconds) * rate).round() as u64;

    let tally = Arc::new(UpstreamTally::default());
    let upstream = {
        let tally = tally.clone();
        Upstream::start_with_log_cap(0, move |request| {
            tally.record(request);
            Action::Reply(ok("ok"))
        })
    };
    let proxy = ProxyProcess::start(ProxyConfig::new(&upstream).with(|c| {
        c.server.threads = 2;
        c.upstream.read_timeout_ms = 10_000;
        c.log.level = "info".into();
        // The response guard remembers each accepted Entra request up to a bound (20,000
        // by default: reached after about 4 minutes of this load, +12 MiB). A small bound
        // is reached within the ramp-up, so the memory compared is steady state with
        // eviction running all along, and any growth is a leak.
        c.authorize.response_guard_max_entries = 500;
    }));
    let pid = proxy.pid();
    let addr = proxy.addr;
    let hints = Arc::new(RwLock::new(mint_hints()));
    let clients = Arc::new(ClientTally::default());

    // Pre-check, not counted: every kind and variant once or more, on one connection.
    let mut warm = Client::new(addr, EXCHANGE);
    let warm_up = 400;
    for slot in 0..warm_up {
        let (kind, request, state) = soak_request(slot, &hints.read().unwrap());
        let response = warm
            .send(&request)
            .unwrap_or_else(|e| panic!("pre-check {}: {e}", kind.label()));
        assert!(
            soak_expected(kind, &state, &response),
            "pre-check {} ({state}): {}",
            kind.label(),
            response.describe()
        );
    }
    let warm_upstream: Vec<usize> = tally
        .by_kind
        .iter()
        .map(|c| c.load(Ordering::SeqCst))
        .collect();

    eprintln!(
        "soak: {ramp_up} s ramp-up + {seconds} s at {rate} req/s ({total} requests, {workers} \
         workers), proxy {}",
        binary().display()
    );
    let started = Instant::now();
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let done = done.clone();
        thread::spawn(move || {
            let mut samples = Vec::new();
            let mut next = 0.0;
            while !done.load(Ordering::SeqCst) {
                let stats = ProcStats::of(pid);
                samples.push(Sample {
                    at: started.elapsed().as_secs_f64(),
                    rss_kib: stats.rss_kib,
                    fds: stats.fds,
                });
                next += 1.0;
                let wake = started + Duration::from_secs_f64(next);
                while Instant::now() < wake && !done.load(Ordering::SeqCst) {
                    thread::sleep(Duration::from_millis(20));
                }
            }
            samples
        })
    };
    let handles: Vec<_> = (0..workers)
        .map(|w| {
            let (hints, clients) = (hints.clone(), clients.clone());
            thread::spawn(move || {
                let mut client = Client::new(addr, DEADLINE);
                let mut slot = w;
                let mut sent = 0u64;
                while slot < total {
                    let due = started + Duration::from_secs_f64(slot as f64 / rate);
                    let now = Instant::now();
                    if due > now {
                        thread::sleep(due - now);
                    }
                    let late = Instant::now().saturating_duration_since(due);
                    let (kind, mut request, state) =
                        soak_request(warm_up + slot, &hints.read().unwrap());
                    sent += 1;
                    // Browsers come and go: every 25th request of a worker closes its
                    // connection.
                    if sent % 25 == 0 {
                        request = request.header("Connection", "close");
                    }
                    let t = Instant::now();
                    let result = client.send(&request);
                    clients
                        .latencies_us
                        .lock()
                        .unwrap()
                        .push(t.elapsed().as_micros() as u64);
                    match &result {
                        Ok(response) => clients.record(
                            kind,
                            Ok(response),
                            soak_expected(kind, &state, response),
                            late,
                        ),
                        Err(e) => clients.record(kind, Err(e.to_string()), false, late),
                    }
                    slot += workers;
                }
                clients.retries.fetch_add(client.retries, Ordering::SeqCst);
                clients
                    .connects
                    .fetch_add(client.connects, Ordering::SeqCst);
            })
        })
        .collect();
    // Re-mint hints every minute while the workers run.
    let mut minted = Instant::now();
    while !handles.iter().all(|h| h.is_finished()) {
        thread::sleep(Duration::from_millis(200));
        if minted.elapsed() > Duration::from_secs(60) {
            *hints.write().unwrap() = mint_hints();
            minted = Instant::now();
        }
    }
    for handle in handles {
        handle.join().expect("a soak worker panicked");
    }
    let elapsed = started.elapsed().as_secs_f64();
    done.store(true, Ordering::SeqCst);
    let samples = sampler.join().unwrap();

    // The upstream's counts settle once the last forwarded requests land.
    let expected_upstream = |kind: Kind| {
        warm_upstream[kind.index()] + clients.expected[kind.index()].load(Ordering::SeqCst)
    };
    let deadline = Instant::now() + DEADLINE;
    while Kind::ALL
        .iter()
        .filter(|k| **k != Kind::Invalid)
        .any(|k| tally.by_kind[k.index()].load(Ordering::SeqCst) < expected_upstream(*k))
        && Instant::now() < deadline
    {
        thread::sleep(Duration::from_millis(50));
    }

    let end = samples.last().map_or(elapsed, |s| s.at);
    let (first_max, first_mean, first_n) = window_stats(&samples, ramp_up, ramp_up + window);
    let (last_max, last_mean, last_n) = window_stats(&samples, end - window, end);
    let growth = (last_max as f64 - first_max as f64) / first_max as f64 * 100.0;
    let mean_growth = (last_mean - first_mean) / first_mean * 100.0;
    let completed: usize = clients.sent.iter().map(|c| c.load(Ordering::SeqCst)).sum();
    let achieved = completed as f64 / elapsed;
    let mut latencies = clients.latencies_us.lock().unwrap().clone();
    latencies.sort_unstable();
    let pct = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize] as f64 / 1000.0;
    let unexpected: usize = clients
        .unexpected
        .iter()
        .map(|c| c.load(Ordering::SeqCst))
        .sum();
    let by_kind: serde_json::Map<String, Value> = Kind::ALL
        .iter()
        .map(|k| {
            let i = k.index();
            (
                k.label().to_string(),
                json!({
                    "sent": clients.sent[i].load(Ordering::SeqCst),
                    "expected_answer": clients.expected[i].load(Ordering::SeqCst),
                    "unexpected_answer": clients.unexpected[i].load(Ordering::SeqCst),
                    "upstream_received": tally.by_kind[i].load(Ordering::SeqCst)
                        - warm_upstream[i],
                }),
            )
        })
        .collect();
    let fds_first = samples.first().map_or(0, |s| s.fds);
    let fds_last = samples.last().map_or(0, |s| s.fds);
    let report = json!({
        "seconds": seconds,
        "ramp_up_seconds": ramp_up,
        "target_rate": rate,
        "workers": workers,
        "binary": binary().display().to_string(),
        "pre_check_requests": warm_up,
        "requests": completed,
        "elapsed_seconds": elapsed,
        "achieved_rate": achieved,
        "late_over_1s": clients.late_over_1s.load(Ordering::SeqCst),
        "by_kind": by_kind,
        "statuses": *clients.statuses.lock().unwrap(),
        "unexpected": unexpected,
        "unexpected_examples": *clients.examples.lock().unwrap(),
        "upstream_invalid_forwarded": tally.invalid_forwarded.load(Ordering::SeqCst),
        "upstream_unvalidated_identity": tally.unvalidated_identity.load(Ordering::SeqCst),
        "upstream_unknown": tally.unknown.load(Ordering::SeqCst),
        "upstream_examples": *tally.examples.lock().unwrap(),
        "latency_ms": {"p50": pct(0.5), "p99": pct(0.99), "max": pct(1.0)},
        "client_connections": clients.connects.load(Ordering::SeqCst),
        "client_retries": clients.retries.load(Ordering::SeqCst),
        "rss_window_seconds": window,
        "rss_first_window_kib": {"max": first_max, "mean": first_mean, "samples": first_n},
        "rss_last_window_kib": {"max": last_max, "mean": last_mean, "samples": last_n},
        "rss_growth_percent": growth,
        "rss_mean_growth_percent": mean_growth,
        "fds_first": fds_first,
        "fds_last": fds_last,
    });
    let pretty = serde_json::to_string_pretty(&report).unwrap();
    eprintln!("soak report:\n{pretty}");
    if let Ok(path) = std::env::var("EAM_SOAK_REPORT") {
        std::fs::write(&path, &pretty).unwrap_or_else(|e| panic!("write {path}: {e}"));
    }

    let log = proxy.log();
    assert!(
        !log.contains("panicked"),
        "the proxy panicked during the soak"
    );
    assert_eq!(unexpected, 0, "unexpected answers: {pretty}");
    assert_eq!(
        tally.invalid_forwarded.load(Ordering::SeqCst)
            + tally.unvalidated_identity.load(Ordering::SeqCst)
            + tally.unknown.load(Ordering::SeqCst),
        0,
        "the upstream received what it must not: {pretty}"
    );
    for kind in [Kind::Valid, Kind::PassThrough, Kind::Spoofed] {
        assert_eq!(
            tally.by_kind[kind.index()].load(Ordering::SeqCst),
            expected_upstream(kind),
            "{}: every answered request reached the upstream exactly once: {pretty}",
            kind.label()
        );
    }
    assert!(
        growth < 5.0,
        "RSS grew {growth:.2} % between the first and the last {window} s: {pretty}"
    );
    assert!(
        achieved >= rate * 0.9,
        "achieved {achieved:.1} req/s of {rate}: the machine could not hold the rate: {pretty}"
    );
}
