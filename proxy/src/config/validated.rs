//! From text to a `Validated` configuration: parsing with key paths in every error, each
//! table's own rules, then the rules that join tables (apps and clouds, x5c paths and
//! authorize paths) while `filters::Policy` is built.

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};

use filters::render::is_csp_safe_uri;
use filters::sealed::{parse_key_file, SealKeys};
use filters::x5c::Certificate;
use filters::{AppPolicy, AuthorizeSettings, CloudPolicy, HeaderPolicy, Policy};

use super::error::ConfigError;
use super::schema::Config;
use super::validate::Validate;
use crate::inject::X5cRoute;

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

/// The configuration after every check: what `doctor` reads and `plan` turns into the server.
#[derive(Debug)]
pub struct Validated {
    pub config: Config,
    pub policy: Policy,
    /// Key source of each cloud in use, in `policy.clouds_in_use()` order.
    pub key_sources: Vec<(String, KeySource)>,
    /// `[[upstream.x5c]]` with the certificates read.
    pub x5c: Vec<X5cRoute>,
    /// `server.trusted_proxies`, parsed.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// `server.routing_headers` and `server.underscores_in_headers`.
    pub headers: HeaderPolicy,
    /// `authorize.response_guard_key_file`, read and derived.
    pub guard_keys: Option<SealKeys>,
    /// `[limits]`, parsed; `None` when off.
    pub limits: Option<crate::limits::LimitSettings>,
}

fn err(key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::invalid(key, reason)
}

impl Config {
    pub fn load(path: &Path) -> Result<Validated, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            file: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text)?.validate()
    }

    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let de = toml::Deserializer::parse(text).map_err(ConfigError::Syntax)?;
        serde_path_to_error::deserialize(de).map_err(|e| {
            let key = e.path().to_string();
            let key = if key == "." { String::new() } else { key };
            // toml's message carries a line/column excerpt; keep its first line only.
            let reason = e
                .inner()
                .message()
                .lines()
                .next()
                .unwrap_or_default()
                .to_string();
            ConfigError::Schema { key, reason }
        })
    }

    pub fn validate(self) -> Result<Validated, ConfigError> {
        self.server.validate()?;
        self.upstream.validate()?;
        self.authorize.validate()?;
        self.jwks.validate()?;
        self.log.validate()?;
        let limits = self.limits.settings()?;
        let x5c = self.x5c_routes()?;
        let clouds = self.clouds()?;
        let apps = self.apps(&clouds)?;
        let policy = Policy {
            authorize: self.authorize_settings(),
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
            guard_keys: self.guard_keys()?,
            trusted_proxies: self.server.trusted_proxies()?,
            headers: self.server.header_policy()?,
            limits,
            config: self,
            policy,
            key_sources,
            x5c,
        })
    }

    /// `authorize.response_guard_key_file`: readable, with one or two secrets of 32 bytes or more.
    fn guard_keys(&self) -> Result<Option<SealKeys>, ConfigError> {
        let Some(file) = &self.authorize.response_guard_key_file else {
            return Ok(None);
        };
        let key = "authorize.response_guard_key_file";
        let text = std::fs::read_to_string(file)
            .map_err(|e| err(key, format!("cannot read {}: {e}", file.display())))?;
        let secrets = parse_key_file(&text).map_err(|e| err(key, e.to_string()))?;
        SealKeys::derive(&secrets)
            .map(Some)
            .map_err(|e| err(key, e.to_string()))
    }

    fn authorize_settings(&self) -> AuthorizeSettings {
        let a = &self.authorize;
        AuthorizeSettings {
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
        }
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
                    .map(|(c, file)| read_certificate(&format!("{key}.certificates[{c}]"), file))
                    .collect::<Result<_, _>>()?;
                Ok(X5cRoute {
                    path: entry.path.clone(),
                    chains,
                })
            })
            .collect()
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
            let mut merged = match existing {
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

fn read_certificate(key: &str, file: &Path) -> Result<Vec<Certificate>, ConfigError> {
    let pem = std::fs::read(file)
        .map_err(|e| err(key, format!("cannot read {}: {e}", file.display())))?;
    Certificate::from_pem(&pem).map_err(|e| err(key, format!("{}: {e}", file.display())))
}

/// HTTPS, or plain HTTP to a loopback host only (tests, local mirrors).
fn check_jwks_url(key: &str, raw: &str) -> Result<(), ConfigError> {
    let url = url::Url::parse(raw).map_err(|e| err(key, format!("not a URL: {e}")))?;
    match url.scheme() {
        "https" => Ok(()),
        "http" if filters::policy::is_loopback_url(&url) => Ok(()),
        "http" => Err(err(
            key,
            "http:// is only allowed for a loopback host; use https://",
        )),
        other => Err(err(key, format!("unsupported scheme \"{other}\""))),
    }
}
