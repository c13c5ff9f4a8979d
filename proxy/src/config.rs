//! The TOML configuration (README "Configuration reference"): schema, defaults, and every semantic check.
//!
//! Errors name the key path (`apps[1].cloud`, `server.bogus`) and the reason, so that
//! `eam-proxy --check` can tell an operator exactly what to fix.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use filters::render::is_csp_safe_uri;
use filters::x5c::Certificate;
use filters::{
    AppPolicy, AuthorizeSettings, CloudPolicy, DetectMode, ErrorDelivery, ExtraClaim, Policy,
};
use serde::Deserialize;

use crate::inject::X5cRoute;

/// Pingora's retry buffer holds 64 KiB; a larger body would be silently dropped.
const PINGORA_BODY_BUFFER: usize = 64 * 1024;
/// A larger leeway would make a captured hint replayable for too long.
const MAX_LEEWAY_SECONDS: u64 = 3600;

#[derive(Debug, Deserialize)]
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
    pub apps: Vec<App>,
    #[serde(default)]
    pub clouds: BTreeMap<String, Cloud>,
}

#[derive(Debug, Deserialize)]
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

impl Server {
    pub fn trusted_proxies(&self) -> Result<Vec<ipnet::IpNet>, ConfigError> {
        self.trusted_proxies
            .iter()
            .enumerate()
            .map(|(i, entry)| {
                entry
                    .parse::<ipnet::IpNet>()
                    .or_else(|_| entry.parse::<IpAddr>().map(ipnet::IpNet::from))
                    .map_err(|_| {
                        err(
                            format!("server.trusted_proxies[{i}]"),
                            format!("\"{entry}\" is not an IP address or CIDR range"),
                        )
                    })
            })
            .collect()
    }

    pub fn header_policy(&self) -> Result<filters::HeaderPolicy, ConfigError> {
        let routing = self
            .routing_headers
            .iter()
            .enumerate()
            .map(|(i, name)| {
                http::HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                    err(
                        format!("server.routing_headers[{i}]"),
                        format!("\"{name}\" is not a header name"),
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(filters::HeaderPolicy::new(
            &routing,
            self.underscores_in_headers,
        ))
    }
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

#[derive(Debug, Deserialize)]
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

#[derive(Debug, Deserialize)]
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
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum GuardMode {
    /// Answers are not inspected.
    Off,
    /// Answers are inspected as they stream by; violations are logged and counted.
    Monitor,
    /// Also replaces a violating answer with an `access_denied` form_post.
    Enforce,
}

#[derive(Debug, Deserialize)]
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
        }
    }
}

#[derive(Debug, Deserialize)]
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

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    Json,
    Text,
}

#[derive(Debug, Deserialize)]
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

#[derive(Debug, Deserialize)]
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

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cloud {
    pub jwks_url: Option<String>,
    pub jwks_file: Option<PathBuf>,
    pub issuer_template: Option<String>,
    pub redirect_uris: Option<Vec<String>>,
}

/// Where a cloud's key set comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    Url(String),
    File(PathBuf),
}

impl fmt::Display for KeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeySource::Url(url) => f.write_str(url),
            KeySource::File(path) => write!(f, "file {}", path.display()),
        }
    }
}

/// A configuration error: the key path and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub path: String,
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.reason)
        } else {
            write!(f, "{}: {}", self.path, self.reason)
        }
    }
}

impl std::error::Error for ConfigError {}

fn err(path: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        path: path.into(),
        reason: reason.into(),
    }
}

/// The configuration after every check: what the rest of the binary uses.
#[derive(Debug)]
pub struct Validated {
    pub config: Config,
    pub policy: Policy,
    /// Key source of each cloud in use, in `policy.clouds_in_use()` order.
    pub key_sources: Vec<(String, KeySource)>,
    /// `[[upstream.x5c]]` with the certificates read.
    pub x5c: Vec<X5cRoute>,
}

impl Config {
    pub fn load(path: &Path) -> Result<Validated, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| err("", format!("cannot read {}: {e}", path.display())))?;
        Self::parse(&text)?.validate()
    }

    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let de = toml::Deserializer::parse(text).map_err(|e| err("", e.to_string()))?;
        serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let path = if path == "." { String::new() } else { path };
            // toml's message carries a line/column excerpt; keep its first line only.
            let reason = e
                .inner()
                .message()
                .lines()
                .next()
                .unwrap_or_default()
                .to_string();
            err(path, reason)
        })
    }

    pub fn validate(self) -> Result<Validated, ConfigError> {
        self.check_server()?;
        self.check_upstream()?;
        let authorize = self.authorize_settings()?;
        self.check_jwks()?;
        self.check_log()?;
        let x5c = self.x5c_routes()?;
        let clouds = self.clouds()?;
        let apps = self.apps(&clouds)?;
        let policy = Policy {
            authorize,
            apps,
            clouds,
            max_stale_seconds: self.jwks.max_stale_seconds,
        };
        let key_sources = policy
            .clouds_in_use()
            .into_iter()
            .map(|name| Ok((name.to_string(), self.key_source(name)?)))
            .collect::<Result<_, ConfigError>>()?;
        Ok(Validated {
            config: self,
            policy,
            key_sources,
            x5c,
        })
    }

    /// `[[upstream.x5c]]`: distinct absolute paths other than the authorize paths, each with
    /// readable PEM files of RSA certificates.
    fn x5c_routes(&self) -> Result<Vec<X5cRoute>, ConfigError> {
        let mut seen = HashSet::new();
        self.upstream
            .x5c
            .iter()
            .enumerate()
            .map(|(i, entry)| {
                let key = format!("upstream.x5c[{i}]");
                if !entry.path.starts_with('/') || entry.path.contains(['?', '#']) {
                    return Err(err(
                        format!("{key}.path"),
                        "must be an absolute path without query or fragment",
                    ));
                }
                if self.authorize.paths.contains(&entry.path) {
                    return Err(err(format!("{key}.path"), "is an authorize path"));
                }
                if !seen.insert(entry.path.as_str()) {
                    return Err(err(
                        format!("{key}.path"),
                        format!("duplicate path \"{}\"", entry.path),
                    ));
                }
                if entry.certificates.is_empty() {
                    return Err(err(
                        format!("{key}.certificates"),
                        "at least one certificate file is required",
                    ));
                }
                let chains = entry
                    .certificates
                    .iter()
                    .enumerate()
                    .map(|(c, file)| {
                        let at = format!("{key}.certificates[{c}]");
                        let pem = std::fs::read(file).map_err(|e| {
                            err(&at, format!("cannot read {}: {e}", file.display()))
                        })?;
                        Certificate::from_pem(&pem)
                            .map_err(|e| err(&at, format!("{}: {e}", file.display())))
                    })
                    .collect::<Result<_, _>>()?;
                Ok(X5cRoute {
                    path: entry.path.clone(),
                    chains,
                })
            })
            .collect()
    }

    fn check_server(&self) -> Result<(), ConfigError> {
        let s = &self.server;
        if s.listen.is_empty() && s.tls_listen.is_empty() {
            return Err(err(
                "server.listen",
                "no listener: set listen or tls_listen",
            ));
        }
        for (key, addrs) in [
            ("server.listen", &s.listen),
            ("server.tls_listen", &s.tls_listen),
        ] {
            for (i, addr) in addrs.iter().enumerate() {
                check_socket_addr(&format!("{key}[{i}]"), addr)?;
            }
        }
        check_socket_addr("server.admin_listen", &s.admin_listen)?;
        if !s.tls_listen.is_empty() {
            for (key, file) in [
                ("server.tls_cert", &s.tls_cert),
                ("server.tls_key", &s.tls_key),
            ] {
                match file {
                    None => return Err(err(key, "required when tls_listen is set")),
                    Some(p) if !p.is_file() => {
                        return Err(err(key, format!("{} is not a readable file", p.display())))
                    }
                    Some(_) => {}
                }
            }
        }
        s.trusted_proxies()?;
        s.header_policy()?;
        if s.threads == 0 {
            return Err(err("server.threads", "must be at least 1"));
        }
        if s.max_body_bytes == 0 || s.max_body_bytes >= PINGORA_BODY_BUFFER {
            return Err(err(
                "server.max_body_bytes",
                format!(
                    "must be between 1 and {} (Pingora's body buffer is 64 KiB)",
                    PINGORA_BODY_BUFFER - 1
                ),
            ));
        }
        for (key, value) in [
            ("server.client_read_timeout_ms", s.client_read_timeout_ms),
            (
                "server.client_header_timeout_ms",
                s.client_header_timeout_ms,
            ),
            ("server.client_body_timeout_ms", s.client_body_timeout_ms),
            ("server.keepalive_timeout_ms", s.keepalive_timeout_ms),
        ] {
            if value == 0 {
                return Err(err(key, "must be positive"));
            }
        }
        Ok(())
    }

    fn check_upstream(&self) -> Result<(), ConfigError> {
        let u = &self.upstream;
        if u.addresses.is_empty() {
            return Err(err(
                "upstream.addresses",
                "at least one upstream address is required",
            ));
        }
        for (i, addr) in u.addresses.iter().enumerate() {
            check_host_port(&format!("upstream.addresses[{i}]"), addr)?;
        }
        if !u.health_check_path.is_empty() && !u.health_check_path.starts_with('/') {
            return Err(err(
                "upstream.health_check_path",
                "must be empty or start with /",
            ));
        }
        if u.tls && u.verify && u.sni.as_deref().is_none_or(str::is_empty) {
            return Err(err(
                "upstream.sni",
                "required when tls = true and verify = true: the name the certificate is checked against",
            ));
        }
        if let Some(ca) = &u.ca_file {
            if !ca.is_file() {
                return Err(err(
                    "upstream.ca_file",
                    format!("{} is not a readable file", ca.display()),
                ));
            }
        }
        for (key, value) in [
            ("upstream.connect_timeout_ms", u.connect_timeout_ms),
            ("upstream.read_timeout_ms", u.read_timeout_ms),
            ("upstream.send_timeout_ms", u.send_timeout_ms),
            ("upstream.stream_idle_timeout_ms", u.stream_idle_timeout_ms),
            (
                "upstream.health_check_interval_ms",
                u.health_check_interval_ms,
            ),
        ] {
            if value == 0 {
                return Err(err(key, "must be positive"));
            }
        }
        Ok(())
    }

    fn authorize_settings(&self) -> Result<AuthorizeSettings, ConfigError> {
        let a = &self.authorize;
        if !a.discovery_path.is_empty() && !a.discovery_path.starts_with('/') {
            return Err(err(
                "authorize.discovery_path",
                "must be empty or a path starting with /",
            ));
        }
        if a.paths.is_empty() {
            return Err(err(
                "authorize.paths",
                "at least one authorize path is required",
            ));
        }
        for (i, path) in a.paths.iter().enumerate() {
            if !path.starts_with('/') || path.contains(['?', '#']) {
                return Err(err(
                    format!("authorize.paths[{i}]"),
                    "must be an absolute path without query or fragment",
                ));
            }
        }
        if a.param_prefix.is_empty() {
            return Err(err("authorize.param_prefix", "must not be empty"));
        }
        if a.hint_param.is_empty() || a.hint_param == "id_token_hint" {
            return Err(err(
                "authorize.hint_param",
                "must be a non-empty name other than id_token_hint",
            ));
        }
        if a.leeway_seconds > MAX_LEEWAY_SECONDS {
            return Err(err(
                "authorize.leeway_seconds",
                format!("must be at most {MAX_LEEWAY_SECONDS}"),
            ));
        }
        let builtin: Vec<String> = ["iss", "tid", "oid", "preferred_username", "sub"]
            .iter()
            .map(|s| format!("{}{s}", a.param_prefix))
            .collect();
        let mut seen = HashSet::new();
        for (i, extra) in a.extra_claims.iter().enumerate() {
            let key = format!("authorize.extra_claims[{i}]");
            if extra.claim.is_empty() {
                return Err(err(format!("{key}.claim"), "must not be empty"));
            }
            if !extra.param.starts_with(&a.param_prefix)
                || extra.param.len() == a.param_prefix.len()
            {
                return Err(err(
                    format!("{key}.param"),
                    format!("must start with param_prefix \"{}\"", a.param_prefix),
                ));
            }
            if builtin.contains(&extra.param)
                || extra.param == a.hint_param
                || !seen.insert(&extra.param)
            {
                return Err(err(
                    format!("{key}.param"),
                    format!("\"{}\" is already used", extra.param),
                ));
            }
        }
        check_guard(a)?;
        Ok(AuthorizeSettings {
            paths: a.paths.clone(),
            detect: a.detect,
            param_prefix: a.param_prefix.clone(),
            hint_param: a.hint_param.clone(),
            force_prompt_login: a.force_prompt_login,
            leeway_seconds: a.leeway_seconds,
            accept_hints_until_exp: a.accept_hints_until_exp,
            error_delivery: a.error_delivery,
            extra_claims: a.extra_claims.clone(),
            max_body_bytes: self.server.max_body_bytes,
        })
    }

    fn check_log(&self) -> Result<(), ConfigError> {
        tracing_subscriber::EnvFilter::try_new(&self.log.level)
            .map(|_| ())
            .map_err(|e| err("log.level", format!("not a log filter: {e}")))
    }

    fn check_jwks(&self) -> Result<(), ConfigError> {
        let j = &self.jwks;
        for (key, value) in [
            ("jwks.refresh_seconds", j.refresh_seconds),
            ("jwks.max_stale_seconds", j.max_stale_seconds),
            ("jwks.fetch_timeout_ms", j.fetch_timeout_ms),
        ] {
            if value == 0 {
                return Err(err(key, "must be positive"));
            }
        }
        Ok(())
    }

    /// Built-in clouds, with any `[clouds.NAME]` override applied, plus new named clouds.
    fn clouds(&self) -> Result<Vec<CloudPolicy>, ConfigError> {
        let mut clouds: Vec<CloudPolicy> = ["global", "usgov", "china"]
            .iter()
            .filter_map(|name| CloudPolicy::builtin(name))
            .collect();
        for (name, cloud) in &self.clouds {
            let key = format!("clouds.{name}");
            if cloud.jwks_url.is_some() && cloud.jwks_file.is_some() {
                return Err(err(&key, "set jwks_url or jwks_file, not both"));
            }
            if let Some(url) = &cloud.jwks_url {
                check_jwks_url(&format!("{key}.jwks_url"), url)?;
            }
            let existing = clouds.iter().position(|c| &c.name == name);
            let base = match existing {
                Some(i) => clouds[i].clone(),
                None => {
                    for (member, missing) in [
                        ("issuer_template", cloud.issuer_template.is_none()),
                        ("redirect_uris", cloud.redirect_uris.is_none()),
                        (
                            "jwks_url or jwks_file",
                            cloud.jwks_url.is_none() && cloud.jwks_file.is_none(),
                        ),
                    ] {
                        if missing {
                            return Err(err(&key, format!("a new cloud needs {member}")));
                        }
                    }
                    CloudPolicy {
                        name: name.clone(),
                        issuer_template: String::new(),
                        redirect_uris: Vec::new(),
                    }
                }
            };
            let mut merged = base;
            if let Some(template) = &cloud.issuer_template {
                if !template.starts_with("https://") || !template.contains("{tid}") {
                    return Err(err(
                        format!("{key}.issuer_template"),
                        "must be an https:// URL containing {tid}",
                    ));
                }
                merged.issuer_template = template.clone();
            }
            if let Some(uris) = &cloud.redirect_uris {
                if uris.is_empty() {
                    return Err(err(format!("{key}.redirect_uris"), "must not be empty"));
                }
                for (i, uri) in uris.iter().enumerate() {
                    if !is_csp_safe_uri(uri) {
                        return Err(err(
                            format!("{key}.redirect_uris[{i}]"),
                            "must be an https:// URL (http:// only for loopback) without spaces, quotes, ';' or ','",
                        ));
                    }
                }
                merged.redirect_uris = uris.clone();
            }
            match existing {
                Some(i) => clouds[i] = merged,
                None => clouds.push(merged),
            }
        }
        Ok(clouds)
    }

    fn apps(&self, clouds: &[CloudPolicy]) -> Result<Vec<AppPolicy>, ConfigError> {
        if self.apps.is_empty() {
            return Err(err("apps", "at least one [[apps]] entry is required"));
        }
        let mut seen = HashSet::new();
        self.apps
            .iter()
            .enumerate()
            .map(|(i, app)| {
                let key = format!("apps[{i}]");
                if app.client_id.trim().is_empty() {
                    return Err(err(format!("{key}.client_id"), "must not be empty"));
                }
                if !seen.insert(app.client_id.as_str()) {
                    return Err(err(
                        format!("{key}.client_id"),
                        format!("duplicate client_id \"{}\"", app.client_id),
                    ));
                }
                let cloud = clouds.iter().position(|c| c.name == app.cloud).ok_or_else(|| {
                    err(
                        format!("{key}.cloud"),
                        format!("unknown cloud \"{}\" (built-in: global, usgov, china; or define [clouds.{}])", app.cloud, app.cloud),
                    )
                })?;
                if app.audiences.iter().any(|a| a.is_empty()) {
                    return Err(err(format!("{key}.audiences"), "must not contain an empty string"));
                }
                for (t, tenant) in app.allowed_tenants.iter().enumerate() {
                    if !filters::policy::is_guid(tenant) {
                        return Err(err(format!("{key}.allowed_tenants[{t}]"), "must be a tenant GUID"));
                    }
                }
                Ok(AppPolicy {
                    client_id: app.client_id.clone(),
                    audiences: if app.audiences.is_empty() {
                        vec![app.client_id.clone()]
                    } else {
                        app.audiences.clone()
                    },
                    cloud,
                    allowed_tenants: app.allowed_tenants.iter().map(|t| t.to_ascii_lowercase()).collect(),
                    allow_msa_tenant: app.allow_msa_tenant,
                })
            })
            .collect()
    }

    fn key_source(&self, cloud: &str) -> Result<KeySource, ConfigError> {
        let configured = self.clouds.get(cloud);
        if let Some(file) = configured.and_then(|c| c.jwks_file.clone()) {
            return Ok(KeySource::File(file));
        }
        if let Some(url) = configured.and_then(|c| c.jwks_url.clone()) {
            return Ok(KeySource::Url(url));
        }
        CloudPolicy::builtin_jwks_url(cloud)
            .map(KeySource::Url)
            .ok_or_else(|| err(format!("clouds.{cloud}"), "no jwks_url or jwks_file"))
    }
}

/// The guard's memory and buffer bounds: large enough for Entra's traffic, small enough that
/// neither can grow without limit.
fn check_guard(a: &Authorize) -> Result<(), ConfigError> {
    let ranges: [(&str, u64, u64, u64); 3] = [
        (
            "authorize.response_guard_max_entries",
            a.response_guard_max_entries as u64,
            1,
            1_000_000,
        ),
        (
            "authorize.response_guard_ttl_seconds",
            a.response_guard_ttl_seconds,
            1,
            86_400,
        ),
        (
            "authorize.response_guard_max_body_bytes",
            a.response_guard_max_body_bytes as u64,
            1024,
            1024 * 1024,
        ),
    ];
    for (key, value, min, max) in ranges {
        if !(min..=max).contains(&value) {
            return Err(err(key, format!("must be between {min} and {max}")));
        }
    }
    Ok(())
}

fn check_socket_addr(key: &str, addr: &str) -> Result<(), ConfigError> {
    addr.parse::<std::net::SocketAddr>()
        .map(|_| ())
        .map_err(|_| err(key, format!("\"{addr}\" is not an IP:port address")))
}

fn check_host_port(key: &str, addr: &str) -> Result<(), ConfigError> {
    let valid = addr.parse::<std::net::SocketAddr>().is_ok()
        || addr.rsplit_once(':').is_some_and(|(host, port)| {
            !host.is_empty() && !host.contains(['/', ' ']) && port.parse::<u16>().is_ok()
        });
    if valid {
        Ok(())
    } else {
        Err(err(key, format!("\"{addr}\" is not a host:port address")))
    }
}

/// HTTPS, or plain HTTP to a loopback host only (tests, local mirrors).
fn check_jwks_url(key: &str, raw: &str) -> Result<(), ConfigError> {
    let url = url::Url::parse(raw).map_err(|e| err(key, format!("not a URL: {e}")))?;
    match url.scheme() {
        "https" => Ok(()),
        "http" => {
            if filters::policy::is_loopback_url(&url) {
                Ok(())
            } else {
                Err(err(
                    key,
                    "http:// is only allowed for a loopback host; use https://",
                ))
            }
        }
        other => Err(err(key, format!("unsupported scheme \"{other}\""))),
    }
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
