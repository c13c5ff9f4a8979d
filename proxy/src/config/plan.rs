//! A validated configuration as the server's parts, in the units they take (`Duration`s,
//! Pingora's `ServerConf`, a built load balancer). `main` assembles services from a `Plan` and
//! reads no configuration key itself, so each key is interpreted in one place: here.

use std::path::PathBuf;
use std::time::Duration;

use filters::sealed::SealKeys;
use filters::{HeaderPolicy, Policy};
use pingora::server::configuration::{Opt, ServerConf};

use super::error::PlanError;
use super::schema::{Authorize, Config, GuardMode, LogFormat, Server};
use super::upstream::{self, UpstreamPlan};
use super::validated::{KeySource, Validated};
use crate::inject::X5cRoute;
use crate::keystore::KeyStoreSettings;

/// The command line's say in Pingora's settings.
#[derive(Debug, Clone, Copy, Default)]
pub struct Launch {
    /// Take the listening sockets over from a running instance.
    pub upgrade: bool,
    pub daemon: bool,
}

pub struct Plan {
    pub opt: Opt,
    pub server_conf: ServerConf,
    pub listeners: Listeners,
    pub upstream: UpstreamPlan,
    pub key_sets: KeySets,
    /// `None` when `authorize.discovery_path` is empty.
    pub discovery: Option<DiscoveryPlan>,
    /// `None` when `authorize.response_guard = "off"`.
    pub guard: Option<GuardPlan>,
    pub proxy: ProxyPlan,
}

pub struct Listeners {
    pub client: Vec<String>,
    /// Only when `tls_listen` has addresses (validation then requires both files).
    pub tls: Option<TlsListeners>,
    pub admin: String,
    /// A whole request head on a new connection.
    pub header_timeout: Duration,
    /// Idle wait for the next request on a kept-alive connection.
    pub keepalive_timeout: Duration,
}

pub struct TlsListeners {
    pub addresses: Vec<String>,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// One key store per cloud in use.
pub struct KeySets {
    /// In `Policy::clouds_in_use()` order.
    pub sources: Vec<(String, KeySource)>,
    pub settings: KeyStoreSettings,
}

pub struct DiscoveryPlan {
    pub path: String,
    pub host: String,
    /// `authorize.paths`: filtered whatever the document says.
    pub configured: Vec<String>,
    pub refresh: Duration,
    pub fetch_timeout: Duration,
}

pub struct GuardPlan {
    pub mode: GuardMode,
    pub max_body_bytes: usize,
    pub max_entries: usize,
    pub ttl: Duration,
    /// `None`: no key file, a random key of this process.
    pub keys: Option<SealKeys>,
}

/// What the proxy service itself holds.
pub struct ProxyPlan {
    pub policy: Policy,
    pub x5c: Vec<X5cRoute>,
    /// A whole authorize body.
    pub client_read_timeout: Duration,
    /// The longest pause in a streamed upload.
    pub client_body_timeout: Duration,
    pub trusted_proxies: Vec<ipnet::IpNet>,
    pub headers: HeaderPolicy,
    /// `[limits]`; `None` when off.
    pub limits: Option<crate::limits::LimitSettings>,
    pub json_log: bool,
    pub include_username: bool,
}

impl Validated {
    pub fn plan(self, launch: Launch) -> Result<Plan, PlanError> {
        let Validated {
            config,
            policy,
            key_sources,
            x5c,
            trusted_proxies,
            headers,
            guard_keys,
            limits,
        } = self;
        let (opt, server_conf) = pingora_settings(&config.server, launch);
        Ok(Plan {
            opt,
            server_conf,
            listeners: listeners(&config.server),
            upstream: upstream::plan(&config.upstream)?,
            key_sets: KeySets {
                sources: key_sources,
                settings: KeyStoreSettings {
                    refresh: Duration::from_secs(config.jwks.refresh_seconds),
                    min_refetch: Duration::from_secs(config.jwks.min_refetch_seconds),
                    fetch_timeout: Duration::from_millis(config.jwks.fetch_timeout_ms),
                    max_stale_seconds: config.jwks.max_stale_seconds,
                },
            },
            discovery: discovery(&config),
            guard: guard(&config.authorize, guard_keys),
            proxy: ProxyPlan {
                policy,
                x5c,
                client_read_timeout: Duration::from_millis(config.server.client_read_timeout_ms),
                client_body_timeout: Duration::from_millis(config.server.client_body_timeout_ms),
                trusted_proxies,
                headers,
                limits,
                json_log: config.log.format == LogFormat::Json,
                include_username: config.log.include_username,
            },
        })
    }
}

fn pingora_settings(server: &Server, launch: Launch) -> (Opt, ServerConf) {
    let opt = Opt {
        upgrade: launch.upgrade,
        daemon: launch.daemon,
        ..Opt::default()
    };
    let conf = ServerConf {
        threads: server.threads,
        // One single-threaded runtime per thread, like nginx's workers: a sign-in request is
        // short and CPU-bound, so stealing it to another thread costs more than it saves.
        work_stealing: false,
        daemon: launch.daemon,
        grace_period_seconds: Some(server.grace_period_seconds),
        // In-flight requests drain during the grace period; runtimes then get one more second.
        graceful_shutdown_timeout_seconds: Some(1),
        pid_file: server.pid_file.display().to_string(),
        upgrade_sock: server.upgrade_sock.display().to_string(),
        ..ServerConf::default()
    };
    (opt, conf)
}

fn listeners(server: &Server) -> Listeners {
    let tls = match (&server.tls_cert, &server.tls_key) {
        (Some(cert), Some(key)) if !server.tls_listen.is_empty() => Some(TlsListeners {
            addresses: server.tls_listen.clone(),
            cert: cert.clone(),
            key: key.clone(),
        }),
        _ => None,
    };
    Listeners {
        client: server.listen.clone(),
        tls,
        admin: server.admin_listen.clone(),
        header_timeout: Duration::from_millis(server.client_header_timeout_ms),
        keepalive_timeout: Duration::from_millis(server.keepalive_timeout_ms),
    }
}

fn discovery(config: &Config) -> Option<DiscoveryPlan> {
    let authorize = &config.authorize;
    (!authorize.discovery_path.is_empty()).then(|| DiscoveryPlan {
        path: authorize.discovery_path.clone(),
        host: upstream::discovery_host(&config.upstream),
        configured: authorize.paths.clone(),
        // README "[authorize]": read on the key sets' schedule, with their fetch timeout.
        refresh: Duration::from_secs(config.jwks.refresh_seconds),
        fetch_timeout: Duration::from_millis(config.jwks.fetch_timeout_ms),
    })
}

fn guard(authorize: &Authorize, keys: Option<SealKeys>) -> Option<GuardPlan> {
    (authorize.response_guard != GuardMode::Off).then(|| GuardPlan {
        mode: authorize.response_guard,
        max_body_bytes: authorize.response_guard_max_body_bytes,
        max_entries: authorize.response_guard_max_entries,
        ttl: Duration::from_secs(authorize.response_guard_ttl_seconds),
        keys,
    })
}
