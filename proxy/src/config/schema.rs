//! The TOML file's tables as serde structs, with their defaults.
//!
//! Each default is written once: here, or in `filters` where the request logic owns the value
//! (`AuthorizeSettings::default()`, the routing-header list, the discovery suffix). The
//! structs also serialize, so that a test can hold `config/eam-proxy.toml` to these defaults.

use std::collections::BTreeMap;
use std::path::PathBuf;

use filters::{AuthorizeSettings, DetectMode, ErrorDelivery, ExtraClaim};
use serde::{Deserialize, Serialize};

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: Server,
    #[serde(default)]
    pub upstream: Upstream,
    #[serde(default)]
    pub authorize: Authorize,
    #[serde(default)]
    pub jwks: Jwks,
    #[serde(default)]
    pub log: Log,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub apps: Vec<App>,
    #[serde(default)]
    pub clouds: BTreeMap<String, Cloud>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Server {
    pub listen: Vec<String>,
    pub tls_listen: Vec<String>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub admin_listen: String,
    pub threads: usize,
    pub max_body_bytes: usize,
    /// A whole authorize body (408 after it).
    pub client_read_timeout_ms: u64,
    /// A whole request head on a new connection (nginx's `client_header_timeout`).
    pub client_header_timeout_ms: u64,
    /// The longest pause between two reads of a streamed upload (nginx's `client_body_timeout`).
    pub client_body_timeout_ms: u64,
    /// Idle wait for the next request on a kept-alive connection (nginx's `keepalive_timeout`).
    pub keepalive_timeout_ms: u64,
    pub grace_period_seconds: u64,
    pub pid_file: PathBuf,
    pub upgrade_sock: PathBuf,
    /// Addresses (IP or CIDR) of load balancers whose `X-Forwarded-*` headers are believed.
    pub trusted_proxies: Vec<String>,
    /// Client headers that frameworks route on or take the client's identity from, removed
    /// unless the peer is a trusted proxy (`filters::headers`).
    pub routing_headers: Vec<String>,
    /// Keep client headers whose names hold `_` (dropped by default, as nginx does).
    pub underscores_in_headers: bool,
}

impl Default for Server {
    fn default() -> Self {
        Server {
            listen: vec!["0.0.0.0:8080".into()],
            tls_listen: Vec::new(),
            tls_cert: None,
            tls_key: None,
            admin_listen: "127.0.0.1:9090".into(),
            threads: 2,
            // The body limit is the request logic's (`Policy::authorize.max_body_bytes`).
            max_body_bytes: AuthorizeSettings::default().max_body_bytes,
            client_read_timeout_ms: 10_000,
            client_header_timeout_ms: 60_000,
            client_body_timeout_ms: 60_000,
            keepalive_timeout_ms: 75_000,
            grace_period_seconds: 10,
            pid_file: "/tmp/eam-proxy.pid".into(),
            upgrade_sock: "/tmp/eam-proxy-upgrade.sock".into(),
            trusted_proxies: Vec::new(),
            routing_headers: filters::headers::ROUTING_HEADERS
                .iter()
                .map(|h| h.to_string())
                .collect(),
            underscores_in_headers: false,
        }
    }
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Upstream {
    pub addresses: Vec<String>,
    pub tls: bool,
    pub sni: Option<String>,
    pub ca_file: Option<PathBuf>,
    pub verify: bool,
    pub host_header: Option<String>,
    pub connect_timeout_ms: u64,
    /// The upstream's time to answer, and to send each next piece of an ordinary response
    /// (nginx's `proxy_read_timeout`).
    pub read_timeout_ms: u64,
    /// Each write to the upstream (nginx's `proxy_send_timeout`).
    pub send_timeout_ms: u64,
    /// Idle time between reads of a tunnel (WebSocket) or an event stream, either side.
    pub stream_idle_timeout_ms: u64,
    pub health_check_interval_ms: u64,
    /// Empty: a TCP (or TLS) connect check. A path: an HTTP GET that must answer 2xx.
    pub health_check_path: String,
    /// Key-set paths whose responses get `x5c` from these certificate files.
    pub x5c: Vec<X5cInjection>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct X5cInjection {
    /// Exact path of the OP's key set (the path of its `jwks_uri`).
    pub path: String,
    /// PEM files, one per signing key: its certificate first, then any chain.
    pub certificates: Vec<PathBuf>,
}

impl Default for Upstream {
    fn default() -> Self {
        Upstream {
            addresses: vec!["127.0.0.1:8081".into()],
            tls: false,
            sni: None,
            ca_file: None,
            verify: true,
            host_header: None,
            connect_timeout_ms: 2000,
            read_timeout_ms: 60_000,
            send_timeout_ms: 60_000,
            stream_idle_timeout_ms: 300_000,
            health_check_interval_ms: 5000,
            health_check_path: String::new(),
            x5c: Vec::new(),
        }
    }
}

/// `authorize.response_guard`: what the proxy does with the OP's answers to Entra.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum GuardMode {
    /// Answers are not inspected.
    Off,
    /// Answers are inspected as they stream by; violations are logged and counted.
    Monitor,
    /// Also replaces a violating answer with an `access_denied` form_post.
    Enforce,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Authorize {
    pub paths: Vec<String>,
    /// Path of the OP's discovery document on the upstream; its authorization (and PAR)
    /// endpoint's path is filtered as well. Empty: only `paths`.
    pub discovery_path: String,
    pub detect: DetectMode,
    pub param_prefix: String,
    pub hint_param: String,
    pub force_prompt_login: bool,
    pub leeway_seconds: u64,
    /// A hint that is not pre-expired is accepted until `exp + leeway` (before issue 18).
    pub accept_hints_until_exp: bool,
    pub error_delivery: ErrorDelivery,
    pub extra_claims: Vec<ExtraClaim>,
    pub response_guard: GuardMode,
    /// Accepted Entra requests remembered for the guard, at most.
    pub response_guard_max_entries: usize,
    /// How long an accepted request is remembered.
    pub response_guard_ttl_seconds: u64,
    /// Largest HTML answer inspected; larger ones pass unchanged (and are counted).
    pub response_guard_max_body_bytes: usize,
    /// Secrets that seal the guard's cookie, shared by every replica; none: a random key of this
    /// process (one replica only).
    pub response_guard_key_file: Option<PathBuf>,
}

impl Default for Authorize {
    fn default() -> Self {
        let AuthorizeSettings {
            paths,
            detect,
            param_prefix,
            hint_param,
            force_prompt_login,
            leeway_seconds,
            accept_hints_until_exp,
            error_delivery,
            extra_claims,
            max_body_bytes: _,
        } = AuthorizeSettings::default();
        Authorize {
            paths,
            discovery_path: filters::doctor::DISCOVERY_SUFFIX.into(),
            detect,
            param_prefix,
            hint_param,
            force_prompt_login,
            leeway_seconds,
            accept_hints_until_exp,
            error_delivery,
            extra_claims,
            response_guard: GuardMode::Monitor,
            response_guard_max_entries: 20_000,
            response_guard_ttl_seconds: 600,
            response_guard_max_body_bytes: 65_536,
            response_guard_key_file: None,
        }
    }
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Jwks {
    pub refresh_seconds: u64,
    pub min_refetch_seconds: u64,
    pub max_stale_seconds: u64,
    pub fetch_timeout_ms: u64,
}

impl Default for Jwks {
    fn default() -> Self {
        Jwks {
            refresh_seconds: 3600,
            min_refetch_seconds: 60,
            max_stale_seconds: 604_800,
            fetch_timeout_ms: 5000,
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    Json,
    Text,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Log {
    pub format: LogFormat,
    pub include_username: bool,
    /// A `tracing` filter (`info`, `warn,eam_proxy=debug`…); `RUST_LOG` overrides it.
    pub level: String,
}

impl Default for Log {
    fn default() -> Self {
        Log {
            format: LogFormat::Json,
            include_username: false,
            level: "info".into(),
        }
    }
}

/// `[limits]`: per-client abuse limits on Entra's authorize requests (README "Abuse limits").
/// Counted per replica.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    pub enabled: bool,
    /// The counting window; `Retry-After` is the time left in it.
    pub window_seconds: u64,
    /// Entra requests refused for what the client sent, per client and window.
    pub failed_validations: u32,
    /// Key fetches set off by unknown `kid`s, per client and window.
    pub key_refetches: u32,
    /// IPv6 clients are counted by this prefix: one host holds a whole /64.
    pub ipv6_prefix: u8,
    /// Addresses (IP or CIDR) never limited.
    pub exempt: Vec<String>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            enabled: true,
            window_seconds: 60,
            failed_validations: 30,
            key_refetches: 5,
            ipv6_prefix: 64,
            exempt: Vec::new(),
        }
    }
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct App {
    pub client_id: String,
    #[serde(default)]
    pub audiences: Vec<String>,
    #[serde(default = "default_cloud")]
    pub cloud: String,
    #[serde(default)]
    pub allowed_tenants: Vec<String>,
    #[serde(default)]
    pub allow_msa_tenant: bool,
}

fn default_cloud() -> String {
    "global".into()
}

/// `[clouds.NAME]`: every key overrides a built-in cloud's (`filters::CloudPolicy::builtin`).
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Cloud {
    pub jwks_url: Option<String>,
    pub jwks_file: Option<PathBuf>,
    pub issuer_template: Option<String>,
    pub redirect_uris: Option<Vec<String>>,
}
