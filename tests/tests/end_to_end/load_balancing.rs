//! README "Pass-through" / issue 6: several upstream addresses are balanced round-robin with active health
//! checks; an instance that dies is skipped within one health-check interval and brought back
//! when it returns.
//!
//! The backends here can be killed for real: the listener closes and every open connection
//! (including the ones the proxy keeps alive in its pool) is shut down, as when a pod dies.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use eam_tests::upstream::Action;
use eam_tests::{ProxyConfig, ProxyProcess, Recorded, Reply, Request, Response, Upstream};

/// The proxies under test check their upstreams this often.
const INTERVAL: Duration = Duration::from_millis(500);
/// Scheduling margin on top of one interval, for a loaded CI machine.
const SLACK: Duration = Duration::from_millis(700);
/// How long a test waits for something that should take about one interval.
const DEADLINE: Duration = Duration::from_secs(10);

/// A recording upstream answering `200 <name>` with `X-Backend: <name>`, and `/healthz` with
/// 200 or 503.
struct Backend {
    upstream: Upstream,
    /// What `GET /healthz` answers: 200 or 503.
    healthy: Arc<AtomicBool>,
}

impl Backend {
    fn start(name: &'static str) -> Backend {
        let healthy = Arc::new(AtomicBool::new(true));
        let upstream = Upstream::with_actions(answers(name, healthy.clone()));
        Backend { upstream, healthy }
    }

    /// Starts again on the address of a killed backend.
    fn restart_on(name: &'static str, addr: SocketAddr) -> Backend {
        let healthy = Arc::new(AtomicBool::new(true));
        let upstream = Upstream::start_on(addr, answers(name, healthy.clone()));
        Backend { upstream, healthy }
    }

    fn addr(&self) -> SocketAddr {
        self.upstream.addr()
    }

    /// Requests other than `/healthz`.
    fn hits(&self) -> usize {
        self.count(|path| path != "/healthz")
    }

    fn health_checks(&self) -> usize {
        self.count(|path| path == "/healthz")
    }

    fn count(&self, matches: impl Fn(&str) -> bool) -> usize {
        let requests = self.upstream.requests();
        requests.iter().filter(|r| matches(r.path())).count()
    }

    fn set_healthy(&self, healthy: bool) {
        self.healthy.store(healthy, Ordering::SeqCst);
    }

    /// Closes the listener and every connection, then returns the address it had.
    fn kill(self) -> SocketAddr {
        self.upstream.kill()
    }
}

fn answers(name: &'static str, healthy: Arc<AtomicBool>) -> impl Fn(&Recorded) -> Action {
    move |request| {
        let reply = if request.path() != "/healthz" {
            Reply::ok(name)
        } else if healthy.load(Ordering::SeqCst) {
            Reply::ok("ok")
        } else {
            Reply::ok("draining").status(503)
        };
        Action::Reply(reply.header("X-Backend", name))
    }
}

fn start_proxy(backends: &[&Backend], health_check_path: &str) -> ProxyProcess {
    let addresses: Vec<SocketAddr> = backends.iter().map(|b| b.addr()).collect();
    let config = ProxyConfig::with_upstreams(&addresses).with(|c| {
        c.upstream.health_check_interval_ms = INTERVAL.as_millis().try_into().unwrap();
        c.upstream.health_check_path = health_check_path.into();
    });
    ProxyProcess::start(config)
}

/// Which backend answered, or `None` for an answer made by the proxy.
fn backend_of(response: &Response) -> Option<String> {
    (response.status == 200)
        .then(|| response.header("x-backend").map(str::to_string))
        .flatten()
}

/// Sends `count` GETs one after the other; every one must be answered by a backend.
fn answered_by(proxy: &ProxyProcess, count: usize, context: &str) -> Vec<String> {
    (0..count)
        .map(|i| {
            let response = proxy.send(&Request::get(&format!("/page/{i}")));
            backend_of(&response)
                .unwrap_or_else(|| panic!("{context}, request {i}: {}", response.describe()))
        })
        .collect()
}

/// Round-robin over two healthy backends: strictly alternating.
fn assert_alternating(sequence: &[String], context: &str) {
    assert!(
        sequence.windows(2).all(|w| w[0] != w[1]),
        "{context}: requests must alternate between the backends: {sequence:?}"
    );
    let names: std::collections::BTreeSet<&String> = sequence.iter().collect();
    assert_eq!(
        names.len(),
        2,
        "{context}: both backends must answer: {sequence:?}"
    );
}

/// One request every 50 ms for `duration`: `(time since start, backend or the proxy's answer)`.
fn traffic_for(
    proxy: &ProxyProcess,
    duration: Duration,
) -> Vec<(Duration, Result<String, String>)> {
    let started = Instant::now();
    let mut seen = Vec::new();
    while started.elapsed() < duration {
        let sent = started.elapsed();
        let response = proxy.send(&Request::get("/during"));
        let outcome = backend_of(&response)
            .ok_or_else(|| format!("{} {}", response.status, response.text().trim()));
        seen.push((sent, outcome));
        std::thread::sleep(Duration::from_millis(50));
    }
    seen
}

/// Polls until `name` answers a request; returns how long that took. Every answer on the way
/// must come from a backend unless `failures_allowed` (when no backend was up).
fn wait_until_answered_by(proxy: &ProxyProcess, name: &str, failures_allowed: bool) -> Duration {
    let started = Instant::now();
    loop {
        let response = proxy.send(&Request::get("/comeback"));
        assert!(
            response.status == 200 || (failures_allowed && response.status == 502),
            "while waiting for {name} to come back: {}",
            response.describe()
        );
        if backend_of(&response).as_deref() == Some(name) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < DEADLINE,
            "{name} got no request within {DEADLINE:?} of coming back"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn round_robin_skips_a_killed_upstream_and_brings_it_back() {
    let a = Backend::start("a");
    let b = Backend::start("b");
    let proxy = start_proxy(&[&a, &b], "");

    let before = answered_by(&proxy, 8, "both up");
    assert_alternating(&before, "both up");
    assert_eq!((a.hits(), b.hits()), (4, 4), "{before:?}");

    // Killed: listener and pooled connections gone.
    let b_addr = b.kill();
    let seen = traffic_for(&proxy, INTERVAL + SLACK + Duration::from_secs(1));
    let failures: Vec<_> = seen.iter().filter(|(_, r)| r.is_err()).collect();
    eprintln!(
        "after the kill: {} requests, {} failed {:?}",
        seen.len(),
        failures.len(),
        failures
    );
    let late: Vec<_> = failures
        .iter()
        .filter(|(at, _)| *at > INTERVAL + SLACK)
        .collect();
    assert!(
        late.is_empty(),
        "requests must succeed again within one health-check interval ({INTERVAL:?} + \
         {SLACK:?} slack) of the kill: {seen:?}"
    );
    let settled = answered_by(&proxy, 10, "b killed");
    assert!(settled.iter().all(|n| n == "a"), "{settled:?}");

    // Back on the same address.
    let b = Backend::restart_on("b", b_addr);
    let took = wait_until_answered_by(&proxy, "b", false);
    eprintln!("b answered again {took:?} after its restart");
    assert!(
        took < INTERVAL + SLACK,
        "b must get traffic within one health-check interval of its restart, took {took:?}"
    );
    let after = answered_by(&proxy, 8, "b back");
    assert_alternating(&after, "b back");
    assert!(b.hits() >= 4, "b answered {} requests", b.hits());
}

#[test]
fn http_health_check_path_takes_a_failing_upstream_out() {
    let a = Backend::start("a");
    let b = Backend::start("b");
    let proxy = start_proxy(&[&a, &b], "/healthz");
    assert_alternating(&answered_by(&proxy, 6, "both healthy"), "both healthy");
    assert!(
        a.health_checks() > 0 && b.health_checks() > 0,
        "the health check must GET health_check_path on each backend"
    );

    // Still accepting connections, but its health endpoint says 503: out of the rotation.
    b.set_healthy(false);
    std::thread::sleep(INTERVAL + SLACK);
    let hits = b.hits();
    let sequence = answered_by(&proxy, 10, "b unhealthy");
    assert!(sequence.iter().all(|n| n == "a"), "{sequence:?}");
    assert_eq!(b.hits(), hits, "an unhealthy backend must get no traffic");

    b.set_healthy(true);
    let took = wait_until_answered_by(&proxy, "b", false);
    eprintln!("b answered again {took:?} after turning healthy");
    assert!(took < INTERVAL + SLACK, "took {took:?}");
    assert_alternating(
        &answered_by(&proxy, 6, "b healthy again"),
        "b healthy again",
    );
}

#[test]
fn every_upstream_down_is_a_502_then_recovers() {
    let a = Backend::start("a");
    let b = Backend::start("b");
    let proxy = start_proxy(&[&a, &b], "");
    assert_alternating(&answered_by(&proxy, 4, "both up"), "both up");

    let (a_addr, _b_addr) = (a.kill(), b.kill());
    std::thread::sleep(INTERVAL + SLACK);
    for i in 0..3 {
        let started = Instant::now();
        let response = proxy.send(&Request::get("/nobody-home"));
        assert_eq!(response.status, 502, "request {i}: {}", response.describe());
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "a refused connection must fail fast, took {:?}",
            started.elapsed()
        );
    }
    proxy.wait_readyz(503, DEADLINE);

    let a = Backend::restart_on("a", a_addr);
    let took = wait_until_answered_by(&proxy, "a", true);
    eprintln!("a answered {took:?} after its restart");
    proxy.wait_readyz(200, DEADLINE);
    let sequence = answered_by(&proxy, 4, "a back alone");
    assert!(sequence.iter().all(|n| n == "a"), "{sequence:?}");
    assert!(a.hits() > 0);
}
