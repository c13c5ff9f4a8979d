//! Each table's own rules (the `Validate` trait); rules that join tables are in `validated.rs`.

use std::collections::HashSet;
use std::net::IpAddr;

use super::error::ConfigError;
use super::schema::{Authorize, Jwks, Limits, Log, Server, Upstream};

/// Pingora's retry buffer holds 64 KiB; a larger body would be silently dropped.
const PINGORA_BODY_BUFFER: usize = 64 * 1024;
/// A larger leeway would make a captured hint replayable for too long.
const MAX_LEEWAY_SECONDS: u64 = 3600;

/// A table's rules that need nothing outside it. The first broken rule is the error: an
/// operator fixes one key at a time, and `--check` says which.
pub trait Validate {
    fn validate(&self) -> Result<(), ConfigError>;
}

fn err(key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::invalid(key, reason)
}

/// Timeouts and intervals: zero would fail every wait at once, or repeat work without a pause.
fn positive(values: &[(&str, u64)]) -> Result<(), ConfigError> {
    match values.iter().find(|(_, value)| *value == 0) {
        Some((key, _)) => Err(err(*key, "must be positive")),
        None => Ok(()),
    }
}

/// Entries that are each an IP address or a CIDR range.
fn networks(key: &str, entries: &[String]) -> Result<Vec<ipnet::IpNet>, ConfigError> {
    entries
        .iter()
        .enumerate()
        .map(|(i, entry)| {
            entry
                .parse::<ipnet::IpNet>()
                .or_else(|_| entry.parse::<IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| {
                    err(
                        format!("{key}[{i}]"),
                        format!("\"{entry}\" is not an IP address or CIDR range"),
                    )
                })
        })
        .collect()
}

impl Server {
    pub fn trusted_proxies(&self) -> Result<Vec<ipnet::IpNet>, ConfigError> {
        networks("server.trusted_proxies", &self.trusted_proxies)
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

impl Validate for Server {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.listen.is_empty() && self.tls_listen.is_empty() {
            return Err(err(
                "server.listen",
                "no listener: set listen or tls_listen",
            ));
        }
        for (key, addrs) in [
            ("server.listen", &self.listen),
            ("server.tls_listen", &self.tls_listen),
        ] {
            for (i, addr) in addrs.iter().enumerate() {
                check_socket_addr(&format!("{key}[{i}]"), addr)?;
            }
        }
        check_socket_addr("server.admin_listen", &self.admin_listen)?;
        if !self.tls_listen.is_empty() {
            for (key, file) in [
                ("server.tls_cert", &self.tls_cert),
                ("server.tls_key", &self.tls_key),
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
        self.trusted_proxies()?;
        self.header_policy()?;
        if self.threads == 0 {
            return Err(err("server.threads", "must be at least 1"));
        }
        if self.max_body_bytes == 0 || self.max_body_bytes >= PINGORA_BODY_BUFFER {
            return Err(err(
                "server.max_body_bytes",
                format!(
                    "must be between 1 and {} (Pingora's body buffer is 64 KiB)",
                    PINGORA_BODY_BUFFER - 1
                ),
            ));
        }
        positive(&[
            ("server.client_read_timeout_ms", self.client_read_timeout_ms),
            (
                "server.client_header_timeout_ms",
                self.client_header_timeout_ms,
            ),
            ("server.client_body_timeout_ms", self.client_body_timeout_ms),
            ("server.keepalive_timeout_ms", self.keepalive_timeout_ms),
        ])
    }
}

impl Validate for Upstream {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.addresses.is_empty() {
            return Err(err(
                "upstream.addresses",
                "at least one upstream address is required",
            ));
        }
        for (i, addr) in self.addresses.iter().enumerate() {
            check_host_port(&format!("upstream.addresses[{i}]"), addr)?;
        }
        if !self.health_check_path.is_empty() && !self.health_check_path.starts_with('/') {
            return Err(err(
                "upstream.health_check_path",
                "must be empty or start with /",
            ));
        }
        if self.tls && self.verify && self.sni.as_deref().is_none_or(str::is_empty) {
            return Err(err(
                "upstream.sni",
                "required when tls = true and verify = true: the name the certificate is checked against",
            ));
        }
        if let Some(ca) = &self.ca_file {
            if !ca.is_file() {
                return Err(err(
                    "upstream.ca_file",
                    format!("{} is not a readable file", ca.display()),
                ));
            }
        }
        positive(&[
            ("upstream.connect_timeout_ms", self.connect_timeout_ms),
            ("upstream.read_timeout_ms", self.read_timeout_ms),
            ("upstream.send_timeout_ms", self.send_timeout_ms),
            (
                "upstream.stream_idle_timeout_ms",
                self.stream_idle_timeout_ms,
            ),
            (
                "upstream.health_check_interval_ms",
                self.health_check_interval_ms,
            ),
        ])
    }
}

impl Validate for Authorize {
    fn validate(&self) -> Result<(), ConfigError> {
        if !self.discovery_path.is_empty() && !self.discovery_path.starts_with('/') {
            return Err(err(
                "authorize.discovery_path",
                "must be empty or a path starting with /",
            ));
        }
        if self.paths.is_empty() {
            return Err(err(
                "authorize.paths",
                "at least one authorize path is required",
            ));
        }
        for (i, path) in self.paths.iter().enumerate() {
            if !path.starts_with('/') || path.contains(['?', '#']) {
                return Err(err(
                    format!("authorize.paths[{i}]"),
                    "must be an absolute path without query or fragment",
                ));
            }
        }
        if self.param_prefix.is_empty() {
            return Err(err("authorize.param_prefix", "must not be empty"));
        }
        if self.hint_param.is_empty() || self.hint_param == "id_token_hint" {
            return Err(err(
                "authorize.hint_param",
                "must be a non-empty name other than id_token_hint",
            ));
        }
        if self.leeway_seconds > MAX_LEEWAY_SECONDS {
            return Err(err(
                "authorize.leeway_seconds",
                format!("must be at most {MAX_LEEWAY_SECONDS}"),
            ));
        }
        self.check_extra_claims()?;
        self.check_guard()
    }
}

impl Authorize {
    /// Each names a parameter of its own under the prefix, so the upstream can tell them apart.
    fn check_extra_claims(&self) -> Result<(), ConfigError> {
        let prefix = &self.param_prefix;
        let builtin: Vec<String> = filters::rewrite::IDENTITY_CLAIMS
            .iter()
            .map(|s| format!("{prefix}{s}"))
            .collect();
        let mut seen = HashSet::new();
        for (i, extra) in self.extra_claims.iter().enumerate() {
            let key = format!("authorize.extra_claims[{i}]");
            if extra.claim.is_empty() {
                return Err(err(format!("{key}.claim"), "must not be empty"));
            }
            if !extra.param.starts_with(prefix) || extra.param.len() == prefix.len() {
                return Err(err(
                    format!("{key}.param"),
                    format!("must start with param_prefix \"{prefix}\""),
                ));
            }
            if builtin.contains(&extra.param)
                || extra.param == self.hint_param
                || !seen.insert(&extra.param)
            {
                return Err(err(
                    format!("{key}.param"),
                    format!("\"{}\" is already used", extra.param),
                ));
            }
        }
        Ok(())
    }

    /// The guard's memory and buffer bounds: large enough for Entra's traffic, small enough
    /// that neither can grow without limit.
    fn check_guard(&self) -> Result<(), ConfigError> {
        let ranges: [(&str, u64, u64, u64); 3] = [
            (
                "authorize.response_guard_max_entries",
                self.response_guard_max_entries as u64,
                1,
                1_000_000,
            ),
            (
                "authorize.response_guard_ttl_seconds",
                self.response_guard_ttl_seconds,
                1,
                86_400,
            ),
            (
                "authorize.response_guard_max_body_bytes",
                self.response_guard_max_body_bytes as u64,
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
}

impl Validate for Jwks {
    fn validate(&self) -> Result<(), ConfigError> {
        positive(&[
            ("jwks.refresh_seconds", self.refresh_seconds),
            ("jwks.max_stale_seconds", self.max_stale_seconds),
            ("jwks.fetch_timeout_ms", self.fetch_timeout_ms),
        ])
    }
}

impl Limits {
    /// What the proxy counts with; `None` when the limits are off.
    pub fn settings(&self) -> Result<Option<crate::limits::LimitSettings>, ConfigError> {
        let exempt = networks("limits.exempt", &self.exempt)?;
        if !self.enabled {
            return Ok(None);
        }
        // pingora-limits' `Rate` assumes windows of a second or more.
        if !(1..=86_400).contains(&self.window_seconds) {
            return Err(err("limits.window_seconds", "must be between 1 and 86400"));
        }
        for (key, value) in [
            ("limits.failed_validations", self.failed_validations),
            ("limits.key_refetches", self.key_refetches),
        ] {
            if value == 0 {
                return Err(err(
                    key,
                    "must be at least 1 (set enabled = false to turn the limits off)",
                ));
            }
        }
        if !(1..=128).contains(&self.ipv6_prefix) {
            return Err(err("limits.ipv6_prefix", "must be between 1 and 128"));
        }
        Ok(Some(crate::limits::LimitSettings {
            window: std::time::Duration::from_secs(self.window_seconds),
            failed_validations: self.failed_validations,
            key_refetches: self.key_refetches,
            ipv6_prefix: self.ipv6_prefix,
            exempt,
        }))
    }
}

impl Validate for Log {
    fn validate(&self) -> Result<(), ConfigError> {
        tracing_subscriber::EnvFilter::try_new(&self.level)
            .map(|_| ())
            .map_err(|e| err("log.level", format!("not a log filter: {e}")))
    }
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
