//! README "Operations": what operators rely on. Metrics parsed by a real Prometheus text-format parser,
//! SIGTERM under load, and the zero-downtime upgrade.

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use eam_tests::drills::assert_none_failed;
use eam_tests::http::{try_get, IO_TIMEOUT};
use eam_tests::tempdir::TempDir;
use eam_tests::{
    microsoft_claims, sign_hint, upstream_and_proxy, EntraRequest, ProxyConfig, ProxyProcess,
    Reply, Request, Upstream, FOREIGN,
};
use prometheus_parse::{Sample, Scrape, Value};

fn scrape(proxy: &ProxyProcess) -> Scrape {
    let response = proxy.admin_get("/metrics");
    assert_eq!(response.status, 200);
    let content_type = response.header("content-type").unwrap_or_default();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "exposition content type, got {content_type}"
    );
    let text = response.text();
    Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).expect("valid Prometheus text format")
}

/// The value of the one sample of `name` whose labels include `labels` (of a histogram, its
/// number of observations).
fn value(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    let matching: Vec<&Sample> = scrape
        .samples
        .iter()
        .filter(|s| s.metric == name)
        .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .collect();
    assert_eq!(matching.len(), 1, "{name}{labels:?}: {matching:?}");
    match &matching[0].value {
        Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
        Value::Histogram(buckets) => buckets.last().map_or(0.0, |b| b.count),
        Value::Summary(_) => panic!("{name} is a summary"),
    }
}

#[test]
fn metrics_follow_a_known_sequence_of_requests() {
    let (_upstream, proxy) = upstream_and_proxy();
    let before = scrape(&proxy);
    for metric in [
        "eam_requests_total",
        "eam_hint_rejections_total",
        "eam_spoofed_params_removed_total",
        "eam_hint_validation_seconds",
        "eam_request_duration_seconds",
        "eam_upstream_responses_total",
        "eam_jwks_refresh_total",
        "eam_jwks_keys",
        "eam_jwks_age_seconds",
        "eam_x5c_injections_total",
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_cpu_seconds_total",
    ] {
        assert!(
            before.docs.contains_key(metric),
            "{metric} has no HELP line: {:?}",
            before.docs.keys()
        );
    }
    assert_eq!(value(&before, "eam_jwks_keys", &[("cloud", "global")]), 2.0);
    assert!(
        value(
            &before,
            "eam_jwks_refresh_total",
            &[("cloud", "global"), ("result", "success")]
        ) >= 1.0
    );
    assert!(value(&before, "eam_jwks_age_seconds", &[("cloud", "global")]) >= 0.0);

    // Two accepted, one rejected (foreign signature), one non-Entra authorize request with two
    // spoofed parameters, three pass-through requests.
    let accepted: Vec<EntraRequest> = (0..2)
        .map(|_| EntraRequest::new(&sign_hint(&microsoft_claims())))
        .collect();
    for request in &accepted {
        assert_eq!(proxy.send(&request.post()).status, 200);
    }
    let forged = EntraRequest::new(&FOREIGN.sign("signer", &microsoft_claims()));
    let rejected = proxy.send(&forged.post());
    assert!(rejected.text().contains("invalid_request"));
    let spoofed = Request::post("/authorize")
        .form("client_id=other-client&entra_sub=evil&ENTRA_oid=x&state=1");
    assert_eq!(proxy.send(&spoofed).status, 200);
    for path in ["/token", "/jwks", "/.well-known/openid-configuration"] {
        assert_eq!(proxy.send(&Request::get(path)).status, 200);
    }

    // Counters of a request move in Pingora's logging phase, just after its response is sent.
    let settled = |s: &Scrape| {
        let both = |route| {
            value(s, "eam_request_duration_seconds", &[("route", route)])
                - value(&before, "eam_request_duration_seconds", &[("route", route)])
        };
        both("authorize") >= 4.0 && both("other") >= 3.0
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut after = scrape(&proxy);
    while !settled(&after) && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(50));
        after = scrape(&proxy);
    }
    let delta = |name: &str, labels: &[(&str, &str)]| {
        value(&after, name, labels) - value(&before, name, labels)
    };
    for (route, outcome, count) in [
        ("authorize", "accepted", 2.0),
        ("authorize", "rejected", 1.0),
        ("authorize", "passed", 1.0),
        ("other", "proxied", 3.0),
    ] {
        let labels = [("route", route), ("outcome", outcome)];
        assert_eq!(delta("eam_requests_total", &labels), count, "{labels:?}");
    }
    assert_eq!(
        delta("eam_hint_rejections_total", &[("reason", "bad_signature")]),
        1.0
    );
    assert_eq!(delta("eam_spoofed_params_removed_total", &[]), 2.0);
    // Histograms: the number of observations.
    assert_eq!(
        delta("eam_hint_validation_seconds", &[]),
        3.0,
        "every validation attempt, accepted or rejected"
    );
    assert_eq!(
        delta("eam_request_duration_seconds", &[("route", "authorize")]),
        4.0
    );
    assert_eq!(
        delta("eam_upstream_responses_total", &[("class", "2xx")]),
        6.0
    );

    // Labels are bounded sets: no request data ever becomes a label value.
    let user_data = [
        forged.client_request_id(),
        accepted[0].client_request_id(),
        "other-client",
        "evil",
    ];
    for sample in &after.samples {
        for value in sample.labels.values() {
            assert!(
                !user_data.contains(&value.as_str()),
                "{} has label value {value}",
                sample.metric
            );
        }
    }
}

/// A load of slow requests: each takes `delay` at the upstream.
fn slow_upstream(delay: Duration) -> Upstream {
    Upstream::with_responder(move |_| {
        thread::sleep(delay);
        Reply::ok("slow but sure")
    })
}

#[test]
fn sigterm_finishes_in_flight_requests_and_exits_zero() {
    let _heavy = eam_tests::exclusive::heavy();
    let upstream = slow_upstream(Duration::from_millis(800));
    let grace = 2;
    let mut proxy = ProxyProcess::start(
        ProxyConfig::new(&upstream).with(|c| c.server.grace_period_seconds = grace),
    );
    let addr = proxy.addr;
    let in_flight: Vec<_> = (0..20)
        .map(|i| thread::spawn(move || Request::get(&format!("/slow/{i}")).send(addr)))
        .collect();
    // Signal once every request has reached the upstream: all were accepted before SIGTERM.
    upstream.wait_for(20, Duration::from_secs(10));
    let signalled = Instant::now();
    proxy.signal("TERM");
    for request in in_flight {
        let response = request.join().expect("client thread");
        assert_eq!(response.status, 200, "{}", response.describe());
        assert_eq!(response.text(), "slow but sure");
    }
    let status = proxy
        .wait_exit(Duration::from_secs(grace + 2 + 2))
        .expect("the proxy exits after SIGTERM");
    assert!(status.success(), "exit status {status}");
    assert!(
        signalled.elapsed() <= Duration::from_secs(grace + 2) + Duration::from_millis(500),
        "exited after {:?}, grace period {grace} s",
        signalled.elapsed()
    );
}

#[test]
fn zero_downtime_upgrade_under_load() {
    let _heavy = eam_tests::exclusive::heavy();
    let upstream = Upstream::start();
    let sockets = TempDir::new();
    let upgrade_sock = sockets.path().join("upgrade.sock");
    let config = ProxyConfig::new(&upstream).with(|c| {
        c.server.grace_period_seconds = 1;
        c.server.upgrade_sock = upgrade_sock.clone();
        c.server.pid_file = sockets.path().join("pid");
    });
    let mut old = ProxyProcess::start(config);
    let addr = old.addr;

    // A bounded load: new connection per request, so every accept during the hand-over counts.
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(std::sync::Mutex::new(Vec::new()));
    let load: Vec<_> = (0..2)
        .map(|_| {
            let (stop, ok, failures) = (stop.clone(), ok.clone(), failures.clone());
            thread::spawn(move || {
                let deadline = Instant::now() + Duration::from_secs(60);
                while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
                    match try_get(addr, "/during-upgrade", IO_TIMEOUT) {
                        Ok(r) if r.status == 200 => {
                            ok.fetch_add(1, Ordering::SeqCst);
                        }
                        Ok(r) => failures.lock().unwrap().push(r.describe()),
                        Err(e) => failures.lock().unwrap().push(e.to_string()),
                    }
                }
            })
        })
        .collect();

    let log = std::fs::File::create(sockets.path().join("new.log")).unwrap();
    let mut new = Command::new(eam_tests::proxy::binary())
        .arg("--config")
        .arg(old.config_path())
        .arg("--upgrade")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start the new process");
    // The new process listens on the upgrade socket for the old one's listeners: wait for it.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !upgrade_sock.exists() {
        assert!(
            Instant::now() < deadline,
            "the new process never opened {}",
            upgrade_sock.display()
        );
        assert!(
            new.try_wait().unwrap().is_none(),
            "the new process exited early"
        );
        thread::sleep(Duration::from_millis(20));
    }
    let served_before = ok.load(Ordering::SeqCst);
    old.signal("QUIT");
    let old_status = old
        .wait_exit(Duration::from_secs(20))
        .expect("old process exits");
    assert!(old_status.success(), "old process: {old_status}");
    // Load keeps running against the new process alone for a moment.
    let after_handover = ok.load(Ordering::SeqCst);
    thread::sleep(Duration::from_secs(1));
    stop.store(true, Ordering::SeqCst);
    for thread in load {
        thread.join().unwrap();
    }
    let new_alive = new.try_wait().unwrap().is_none();
    let _ = new.kill();
    let _ = new.wait();
    assert_none_failed(&failures.lock().unwrap(), "requests during the upgrade");
    assert!(new_alive, "the new process must keep running");
    assert!(served_before > 0, "load was running before the upgrade");
    assert!(
        ok.load(Ordering::SeqCst) > after_handover,
        "the new process served after the old one left"
    );
    let counts: HashMap<&str, usize> = [
        ("before", served_before),
        ("total", ok.load(Ordering::SeqCst)),
    ]
    .into();
    eprintln!("upgrade under load: {counts:?}");
}
