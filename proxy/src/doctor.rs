//! `eam-proxy doctor`: fetches what Entra will fetch and runs `filters::doctor`'s checks on it.
//!
//! With `--issuer`, the discovery document and key set are fetched from their public URLs, as
//! Entra does. Without it, they are fetched through the configured upstream (the OP itself),
//! and the public discovery URL is taken from the document's own issuer (a warning says so).
//! Either way the key set is judged as Entra will see it through this proxy: when `jwks_uri`
//! is on the issuer's origin and its path is an `[[upstream.x5c]]` path, the configured
//! certificates are applied with the same function the proxy uses (keys that already carry
//! `x5c`, for instance because a running proxy added it, are judged as they are).

use std::time::Duration;

use filters::doctor::{self, Check, Fetched, Rules, Status, DISCOVERY_SUFFIX};
use filters::x5c::{inject, KeyOutcome};

use crate::config::{KeySource, Validated};
use crate::inject::X5cRoute;
use crate::unix_now;

/// Larger answers are not metadata; reading stops there.
const MAX_BODY: usize = 1024 * 1024;
const TIMEOUT: Duration = Duration::from_secs(10);

pub struct Options {
    pub issuer: Option<String>,
    pub json: bool,
    pub allow_http: bool,
}

/// Where the OP is reached when no `--issuer` is given.
struct Upstream {
    base: String,
    host_header: Option<String>,
}

/// Runs every check; returns the report text and whether any check failed.
pub fn run(validated: &Validated, options: &Options) -> Result<(String, bool), String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let checks = runtime.block_on(checks(validated, options))?;
    let failed = checks.iter().any(|c| c.status == Status::Fail);
    let text = if options.json {
        let (passed, warnings, failures) = doctor::summary(&checks);
        let report = serde_json::json!({
            "checks": checks,
            "summary": {"passed": passed, "warnings": warnings, "failed": failures},
        });
        format!("{report:#}\n")
    } else {
        doctor::render_table(&checks)
    };
    Ok((text, failed))
}

async fn checks(validated: &Validated, options: &Options) -> Result<Vec<Check>, String> {
    let rules = Rules {
        allow_http: options.allow_http,
    };
    let upstream = &validated.config.upstream;
    let mut builder = reqwest::Client::builder()
        .user_agent(concat!("eam-proxy-doctor/", env!("CARGO_PKG_VERSION")))
        .redirect(reqwest::redirect::Policy::none())
        .timeout(TIMEOUT);
    let via_upstream = if options.issuer.is_none() {
        let address = upstream.addresses.first().ok_or("no upstream address")?;
        let (scheme, host) = if upstream.tls {
            let name = upstream.sni.clone().unwrap_or_else(|| host_of(address));
            let resolved = tokio::net::lookup_host(address.as_str())
                .await
                .map_err(|e| format!("upstream {address}: {e}"))?
                .next()
                .ok_or_else(|| format!("upstream {address}: no address"))?;
            builder = builder.resolve(&name, resolved);
            if !upstream.verify {
                builder = builder.tls_danger_accept_invalid_certs(true);
            }
            ("https", format!("{name}:{}", resolved.port()))
        } else {
            ("http", address.clone())
        };
        if let Some(ca) = &upstream.ca_file {
            let pem = std::fs::read(ca).map_err(|e| format!("{}: {e}", ca.display()))?;
            // As for the proxy: the CA file replaces the system roots.
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| e.to_string())?;
            builder = builder.tls_certs_only(certs);
        }
        Some(Upstream {
            base: format!("{scheme}://{host}"),
            host_header: upstream.host_header.clone(),
        })
    } else {
        None
    };
    let client = builder.build().map_err(|e| e.to_string())?;

    let mut checks = Vec::new();
    let (discovery_url, fetched) = match (&options.issuer, &via_upstream) {
        (Some(issuer), _) => {
            let url = format!("{}{DISCOVERY_SUFFIX}", issuer.trim_end_matches('/'));
            let fetched = fetch(&client, &url, None).await;
            (url, fetched)
        }
        (None, Some(up)) => {
            let fetched = fetch(
                &client,
                &format!("{}{DISCOVERY_SUFFIX}", up.base),
                up.host_header.as_deref(),
            )
            .await;
            let issuer = fetched
                .as_ref()
                .ok()
                .and_then(|f| serde_json::from_slice::<serde_json::Value>(&f.body).ok())
                .and_then(|d| d.get("issuer").and_then(|i| i.as_str()).map(String::from))
                .unwrap_or_else(|| up.base.clone());
            checks.push(Check {
                id: "doctor.mode",
                status: Status::Warn,
                detail: format!("fetched through upstream {}; the public discovery URL was taken from the issuer", up.base),
                entra_error: None,
                fix: Some("run with --issuer <public issuer URL> to check what Entra itself fetches".into()),
            });
            (format!("{issuer}{DISCOVERY_SUFFIX}"), fetched)
        }
        (None, None) => unreachable!("either --issuer or the upstream"),
    };
    let jwks_uri = match fetched {
        Ok(fetched) => {
            let (found, jwks_uri) = doctor::discovery(
                &discovery_url,
                &fetched,
                rules,
                &validated.policy.authorize.paths,
            );
            checks.extend(found);
            jwks_uri
        }
        Err(e) => {
            checks.push(unreachable_check("discovery.fetch", &discovery_url, &e));
            None
        }
    };
    if let Some(jwks_uri) = jwks_uri {
        checks.extend(
            key_set_checks(
                &client,
                &discovery_url,
                &jwks_uri,
                via_upstream.as_ref(),
                &validated.x5c,
            )
            .await,
        );
    }
    checks.extend(doctor::config(&validated.policy, rules));
    for (cloud, source) in &validated.key_sources {
        let body = match source {
            KeySource::File(path) => std::fs::read(path).map_err(|e| e.to_string()),
            KeySource::Url(url) => match fetch(&client, url, None).await {
                Ok(f) if f.status == 200 => Ok(f.body),
                Ok(f) => Err(format!("answered {}", f.status)),
                Err(e) => Err(e),
            },
        };
        checks.push(doctor::microsoft_keys(
            cloud,
            &source.to_string(),
            body.as_deref().map_err(String::clone),
        ));
    }
    Ok(checks)
}

/// The key set, fetched through the upstream when the OP serves it on the issuer's origin,
/// with the proxy's x5c injection applied.
async fn key_set_checks(
    client: &reqwest::Client,
    discovery_url: &str,
    jwks_uri: &str,
    via_upstream: Option<&Upstream>,
    routes: &[X5cRoute],
) -> Vec<Check> {
    let Ok(parsed) = url::Url::parse(jwks_uri) else {
        return Vec::new();
    };
    let same_origin = url::Url::parse(discovery_url).is_ok_and(|d| d.origin() == parsed.origin());
    let fetched = match via_upstream.filter(|_| same_origin) {
        Some(up) => {
            fetch(
                client,
                &format!("{}{}", up.base, parsed.path()),
                up.host_header.as_deref(),
            )
            .await
        }
        None => fetch(client, jwks_uri, None).await,
    };
    let mut fetched = match fetched {
        Ok(f) => f,
        Err(e) => return vec![unreachable_check("jwks.fetch", jwks_uri, &e)],
    };
    let mut checks = Vec::new();
    let route = routes
        .iter()
        .find(|r| r.path == parsed.path())
        .filter(|_| same_origin);
    if let (Some(route), 200) = (route, fetched.status) {
        if let Ok(result) = inject(&fetched.body, &route.chains) {
            let injected = result
                .keys
                .iter()
                .filter(|(_, o)| *o == KeyOutcome::Injected)
                .count();
            checks.push(Check::pass(
                "jwks.injection",
                format!(
                    "[[upstream.x5c]] path {}: x5c added to {injected} key(s), as the proxy does",
                    route.path
                ),
            ));
            if let Some(body) = result.body {
                fetched.body = body;
            }
        }
    }
    checks.extend(doctor::key_set(jwks_uri, &fetched, unix_now()));
    checks
}

fn unreachable_check(id: &'static str, url: &str, error: &str) -> Check {
    Check::fail(
        id,
        format!("{url}: {error}"),
        "Entra cannot read the provider's metadata: the sign-in fails before the redirect to the provider",
        "make it reachable over https from the internet",
    )
}

fn host_of(address: &str) -> String {
    address
        .rsplit_once(':')
        .map_or(address, |(h, _)| h)
        .to_string()
}

/// GET `url`, bounded; `Err` when no HTTP answer came.
async fn fetch(client: &reqwest::Client, url: &str, host: Option<&str>) -> Result<Fetched, String> {
    let mut request = client.get(url);
    if let Some(host) = host {
        request = request.header(http::header::HOST, host);
    }
    let mut response = request.send().await.map_err(|e| error_chain(&e))?;
    let status = response.status().as_u16();
    let content_length = response
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| error_chain(&e))? {
        if body.len() + chunk.len() > MAX_BODY {
            return Err("answer larger than 1 MiB".into());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Fetched {
        status,
        content_length,
        body,
    })
}

/// reqwest's error with its causes: "error sending request" alone says nothing.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}
