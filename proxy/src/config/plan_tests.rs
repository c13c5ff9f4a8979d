use std::time::Duration;

use super::*;

const APP: &str = "[[apps]]\nclient_id = \"56c2b5e3-c41d-4c14-abcf-72d407f57650\"\n";

fn plan_of(text: &str, launch: Launch) -> Result<Plan, PlanError> {
    Config::parse(&format!("{text}\n{APP}"))
        .and_then(Config::validate)
        .expect("a valid configuration")
        .plan(launch)
}

/// A file of `text` in a directory of its own.
fn file(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("eam-config-plan-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn defaults_become_pingora_settings_and_durations() {
    let launch = Launch {
        upgrade: true,
        daemon: true,
    };
    let plan = plan_of("", launch).unwrap();
    assert!(plan.opt.upgrade && plan.opt.daemon && plan.server_conf.daemon);
    let conf = &plan.server_conf;
    assert_eq!(conf.threads, 2);
    assert!(!conf.work_stealing);
    assert_eq!(conf.grace_period_seconds, Some(10));
    assert_eq!(conf.graceful_shutdown_timeout_seconds, Some(1));
    assert_eq!(conf.pid_file, "/tmp/eam-proxy.pid");
    assert_eq!(conf.upgrade_sock, "/tmp/eam-proxy-upgrade.sock");

    let listeners = &plan.listeners;
    assert_eq!(listeners.client, ["0.0.0.0:8080"]);
    assert!(listeners.tls.is_none());
    assert_eq!(listeners.admin, "127.0.0.1:9090");
    assert_eq!(listeners.header_timeout, Duration::from_secs(60));
    assert_eq!(listeners.keepalive_timeout, Duration::from_secs(75));

    let upstream = &plan.upstream;
    assert_eq!(upstream.addresses, ["127.0.0.1:8081"]);
    assert_eq!(upstream.balancer.backends().get_backend().len(), 1);
    assert_eq!(
        upstream.balancer.health_check_frequency,
        Some(Duration::from_secs(5))
    );
    let settings = &upstream.settings;
    assert!(!settings.tls && settings.verify && settings.ca.is_none());
    assert_eq!(settings.connect_timeout, Duration::from_secs(2));
    assert_eq!(settings.read_timeout, Duration::from_secs(60));
    assert_eq!(settings.send_timeout, Duration::from_secs(60));
    assert_eq!(settings.stream_idle_timeout, Duration::from_secs(300));

    let keys = &plan.key_sets;
    assert_eq!(keys.sources.len(), 1);
    assert_eq!(keys.settings.refresh, Duration::from_secs(3600));
    assert_eq!(keys.settings.min_refetch, Duration::from_secs(60));
    assert_eq!(keys.settings.fetch_timeout, Duration::from_secs(5));
    assert_eq!(keys.settings.max_stale_seconds, 604_800);

    let discovery = plan.discovery.as_ref().unwrap();
    assert_eq!(discovery.path, "/.well-known/openid-configuration");
    assert_eq!(
        discovery.host, "127.0.0.1:8081",
        "the address, without a name"
    );
    assert_eq!(discovery.configured, ["/authorize"]);
    assert_eq!(discovery.refresh, Duration::from_secs(3600));

    let guard = plan.guard.as_ref().unwrap();
    assert_eq!(guard.mode, GuardMode::Monitor);
    assert_eq!(
        (guard.max_entries, guard.max_body_bytes, guard.ttl),
        (20_000, 65_536, Duration::from_secs(600))
    );

    let proxy = &plan.proxy;
    assert_eq!(proxy.client_read_timeout, Duration::from_secs(10));
    assert_eq!(proxy.client_body_timeout, Duration::from_secs(60));
    assert!(proxy.json_log && !proxy.include_username);
    assert_eq!(proxy.policy.authorize.max_body_bytes, 32_768);
}

#[test]
fn switched_off_parts_are_absent() {
    let plan = plan_of(
        "[authorize]\nresponse_guard = \"off\"\ndiscovery_path = \"\"\n",
        Launch::default(),
    )
    .unwrap();
    assert!(plan.guard.is_none());
    assert!(plan.discovery.is_none());
    assert!(!plan.opt.upgrade && !plan.server_conf.daemon);
}

#[test]
fn the_discovery_read_is_sent_with_the_name_the_op_is_known_by() {
    let plan = plan_of(
        "[upstream]\nsni = \"idp.example.com\"\nverify = false\ntls = true\n",
        Launch::default(),
    )
    .unwrap();
    assert_eq!(plan.discovery.unwrap().host, "idp.example.com");
    let plan = plan_of(
        "[upstream]\nsni = \"idp.example.com\"\nhost_header = \"op.example\"\n",
        Launch::default(),
    )
    .unwrap();
    assert_eq!(plan.discovery.unwrap().host, "op.example");
}

#[test]
fn tls_listeners_carry_their_files() {
    let cert = file("tls.crt", "");
    let key = file("tls.key", "");
    let text = format!(
        "[server]\ntls_listen = [\"127.0.0.1:8443\"]\ntls_cert = {:?}\ntls_key = {:?}\n",
        cert.display().to_string(),
        key.display().to_string()
    );
    let tls = plan_of(&text, Launch::default())
        .unwrap()
        .listeners
        .tls
        .unwrap();
    assert_eq!(tls.addresses, ["127.0.0.1:8443"]);
    assert_eq!((tls.cert, tls.key), (cert, key));
}

#[test]
fn a_ca_file_without_certificates_is_named() {
    let ca = file("empty-ca.pem", "not a certificate\n");
    let text = format!("[upstream]\nca_file = {:?}\n", ca.display().to_string());
    let Err(e) = plan_of(&text, Launch::default()) else {
        panic!("an empty CA file must not plan");
    };
    assert!(
        matches!(e, PlanError::CaFile { ref file, .. } if *file == ca),
        "{e:?}"
    );
    assert!(e.to_string().starts_with(&ca.display().to_string()), "{e}");
}
