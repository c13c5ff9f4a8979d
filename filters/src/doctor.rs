//! The checks of `eam-proxy doctor`, free of I/O: fetched documents and `now` go in, a list of
//! [`Check`]s comes out. Each failed check names the Entra error it will cause and the fix.
//!
//! The requirements are those of Microsoft's EAM provider reference: the discovery document,
//! the OP's key set (every RSA signing key with a matching, self-issued, valid `x5c`), and the
//! proxy's own configuration.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::keys::KeySet;
use crate::policy::{is_guid, CloudPolicy, Policy};
use crate::x5c::{is_rsa_signing_key, Certificate, Validity};

pub const DISCOVERY_SUFFIX: &str = "/.well-known/openid-configuration";

const METADATA: &str = "Entra cannot use the provider's metadata: the sign-in fails before the redirect to the provider (Microsoft documents no AADSTS code for it)";
const ISSUER: &str = "AADSTS50027 (invalid JWT: unexpected issuer)";
const SIGNATURE: &str =
    "AADSTS50012 with AADSTS70002 (external ID token failed signature verification)";
const HINT_AUDIENCE: &str =
    "eam-proxy refuses every hint (audience_mismatch) and Entra ends the sign-in with invalid_request";
const UNFILTERED: &str = "when the proxy cannot read the OP's discovery, Entra's POST reaches the OP unfiltered: the OP refuses Microsoft's id_token_hint (the sign-in fails), and spoofed entra_* parameters reach it";
const REPLY_URL: &str =
    "AADSTS50161 (the authorization endpoint is not a redirect URI of the app registration)";
const KEYS_UNAVAILABLE: &str =
    "eam-proxy answers every sign-in with temporarily_unavailable (keys_unavailable)";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pass,
    Warn,
    Fail,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Warn => "warn",
            Status::Fail => "fail",
        }
    }
}

/// One line of the report. `id` is stable (scripts match on it); `detail` says what was seen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    pub id: &'static str,
    pub status: Status,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entra_error: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Check {
    pub fn pass(id: &'static str, detail: impl Into<String>) -> Check {
        Check {
            id,
            status: Status::Pass,
            detail: detail.into(),
            entra_error: None,
            fix: None,
        }
    }

    pub fn fail(
        id: &'static str,
        detail: impl Into<String>,
        entra_error: &'static str,
        fix: impl Into<String>,
    ) -> Check {
        Check {
            id,
            status: Status::Fail,
            detail: detail.into(),
            entra_error: Some(entra_error),
            fix: Some(fix.into()),
        }
    }

    fn warn(id: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Check {
        Check {
            id,
            status: Status::Warn,
            detail: detail.into(),
            entra_error: None,
            fix: Some(fix.into()),
        }
    }
}

/// An HTTP answer as fetched: status, the raw `Content-Length` field, the body.
#[derive(Debug, Clone, Default)]
pub struct Fetched {
    pub status: u16,
    pub content_length: Option<String>,
    pub body: Vec<u8>,
}

/// How strictly URLs are judged. `allow_http` (tests on loopback only) turns an `http://`
/// loopback URL from a failure into a warning; Entra itself never accepts one.
#[derive(Debug, Clone, Copy, Default)]
pub struct Rules {
    pub allow_http: bool,
}

/// `https`, or with `allow_http` plain `http` to a loopback host (as a warning).
fn scheme_check(id: &'static str, what: &str, url: &url::Url, rules: Rules) -> Option<Check> {
    let loopback = crate::policy::is_loopback_url(url);
    match url.scheme() {
        "https" => None,
        "http" if rules.allow_http && loopback => Some(Check::warn(
            id,
            format!("{what} {url} is http (allowed on loopback by --allow-http only)"),
            "serve it over https: Entra accepts nothing else",
        )),
        _ => Some(Check::fail(
            id,
            format!("{what} {url} is not https"),
            METADATA,
            format!("publish {what} as an https:// URL"),
        )),
    }
}

/// The discovery document, fetched from `discovery_url`. Returns the checks and, when the
/// document names one, its `jwks_uri` (even a bad one: the key set is still worth judging).
pub fn discovery(
    discovery_url: &str,
    fetched: &Fetched,
    rules: Rules,
    authorize_paths: &[String],
) -> (Vec<Check>, Option<String>) {
    let mut checks = vec![discovery_url_check(discovery_url, rules)];
    if fetched.status != 200 {
        checks.push(Check::fail(
            "discovery.fetch",
            format!("{discovery_url} answered {}", fetched.status),
            METADATA,
            "serve the discovery document with 200 at exactly this URL (no redirect)",
        ));
        return (checks, None);
    }
    checks.push(content_length_check(fetched));
    let doc = match serde_json::from_slice::<Value>(&fetched.body) {
        Ok(Value::Object(doc)) => doc,
        _ => {
            checks.push(Check::fail(
                "discovery.json",
                "the discovery document is not a JSON object",
                METADATA,
                "serve the OpenID provider metadata as a JSON object",
            ));
            return (checks, None);
        }
    };
    checks.push(issuer_check(discovery_url, &doc, rules));
    let jwks_uri = doc
        .get("jwks_uri")
        .and_then(Value::as_str)
        .map(String::from);
    checks.push(jwks_uri_check(jwks_uri.as_deref(), rules));
    checks.extend(authorization_endpoint_checks(&doc, authorize_paths, rules));
    for (member, value, why) in [
        ("scopes_supported", "openid", "Entra requests scope=openid"),
        (
            "response_types_supported",
            "id_token",
            "Entra requests response_type=id_token",
        ),
        (
            "response_modes_supported",
            "form_post",
            "Entra requests response_mode=form_post",
        ),
        (
            "id_token_signing_alg_values_supported",
            "RS256",
            "Entra verifies RS256 only",
        ),
        (
            "subject_types_supported",
            "public",
            "Entra compares sub with the hint's, which is public",
        ),
    ] {
        checks.push(list_check(&doc, member, value, why, true));
    }
    checks.push(list_check(
        &doc,
        "claim_types_supported",
        "normal",
        "Entra reads normal claims",
        false,
    ));
    (checks, jwks_uri)
}

/// Where Entra posts its request: an https URL whose path the proxy filters by configuration
/// (not only while it can read discovery), and which must be a redirect URI of the app
/// registration, something only the Entra admin center can show. The PAR endpoint, if any,
/// takes the same parameters.
fn authorization_endpoint_checks(
    doc: &Map<String, Value>,
    authorize_paths: &[String],
    rules: Rules,
) -> Vec<Check> {
    const ID: &str = "discovery.authorization_endpoint";
    let url = doc.get("authorization_endpoint").and_then(Value::as_str);
    let Some(parsed) = url.and_then(|u| url::Url::parse(u).ok()) else {
        return vec![Check::fail(
            ID,
            format!("authorization_endpoint is {}", url.unwrap_or("absent")),
            METADATA,
            "publish authorization_endpoint as an https URL",
        )];
    };
    let url = url.unwrap_or_default();
    let mut checks = Vec::new();
    if let Some(scheme) = scheme_check(ID, "authorization_endpoint", &parsed, rules) {
        checks.push(scheme);
    }
    let path = parsed.path();
    checks.push(if crate::policy::path_is_one_of(authorize_paths, path) {
        Check::pass(ID, format!("{url}: {path} is in authorize.paths"))
    } else {
        Check::fail(
            ID,
            format!("{url}: {path} is not in authorize.paths {authorize_paths:?}"),
            UNFILTERED,
            format!("add \"{path}\" to authorize.paths"),
        )
    });
    checks.push(Check {
        id: "entra.reply_url",
        status: Status::Warn,
        detail: format!("{url} must be a redirect URI of the EAM's app registration; only the Entra admin center shows it"),
        entra_error: Some(REPLY_URL),
        fix: Some(format!("App registrations → the EAM's app → Authentication → Web: add {url}")),
    });
    let par = doc
        .get("pushed_authorization_request_endpoint")
        .and_then(Value::as_str);
    if let Some(par) = par {
        const PAR: &str = "discovery.pushed_authorization_request_endpoint";
        let par_path = url::Url::parse(par).map(|u| u.path().to_string());
        checks.push(match par_path {
            Ok(p) if crate::policy::path_is_one_of(authorize_paths, &p) => {
                Check::pass(PAR, format!("{par}: {p} is in authorize.paths"))
            }
            Ok(p) => Check::warn(
                PAR,
                format!("{par}: parameters pushed to {p} are filtered only while the proxy reads discovery"),
                format!("add \"{p}\" to authorize.paths"),
            ),
            Err(_) => Check::warn(PAR, format!("{par} is not a URL"), "publish it as an https URL"),
        });
    }
    checks
}

fn discovery_url_check(discovery_url: &str, rules: Rules) -> Check {
    const ID: &str = "discovery.url";
    let url = match url::Url::parse(discovery_url) {
        Ok(url) => url,
        Err(e) => {
            return Check::fail(
                ID,
                format!("{discovery_url} is not a URL ({e})"),
                METADATA,
                "give Entra the https URL of the discovery document",
            )
        }
    };
    if url.query().is_some() || url.fragment().is_some() || !url.path().ends_with(DISCOVERY_SUFFIX)
    {
        return Check::fail(
            ID,
            format!(
                "{discovery_url} does not end in {DISCOVERY_SUFFIX} or has a query or fragment"
            ),
            METADATA,
            format!("use <issuer>{DISCOVERY_SUFFIX}, without query or fragment"),
        );
    }
    scheme_check(ID, "the discovery URL", &url, rules)
        .unwrap_or_else(|| Check::pass(ID, discovery_url))
}

/// Entra needs a valid `Content-Length` on the discovery answer (a chunked one is refused).
fn content_length_check(fetched: &Fetched) -> Check {
    const ID: &str = "discovery.content_length";
    let len = fetched.body.len();
    match fetched.content_length.as_deref() {
        Some(v) if v.bytes().all(|b| b.is_ascii_digit()) && v.parse() == Ok(len) => {
            Check::pass(ID, format!("Content-Length: {v}"))
        }
        Some(v) => Check::fail(
            ID,
            format!("Content-Length {v:?} does not match the {len} bytes received"),
            METADATA,
            "send a Content-Length equal to the body length",
        ),
        None => Check::fail(
            ID,
            "no Content-Length (chunked or close-delimited answer)",
            METADATA,
            "send the discovery document with a Content-Length header, not chunked",
        ),
    }
}

fn issuer_check(discovery_url: &str, doc: &Map<String, Value>, rules: Rules) -> Check {
    const ID: &str = "discovery.issuer";
    let expected = discovery_url
        .strip_suffix(DISCOVERY_SUFFIX)
        .unwrap_or(discovery_url);
    let fix = format!("set the OP's issuer to exactly {expected} (and iss of its id_tokens)");
    let Some(issuer) = doc.get("issuer").and_then(Value::as_str) else {
        return Check::fail(ID, "no issuer", ISSUER, fix);
    };
    if issuer != expected {
        return Check::fail(
            ID,
            format!("issuer {issuer} differs from {expected}, which the discovery URL implies"),
            ISSUER,
            fix,
        );
    }
    match url::Url::parse(issuer) {
        Ok(url) => {
            scheme_check(ID, "the issuer", &url, rules).unwrap_or_else(|| Check::pass(ID, issuer))
        }
        Err(_) => Check::fail(ID, format!("issuer {issuer} is not a URL"), ISSUER, fix),
    }
}

fn jwks_uri_check(jwks_uri: Option<&str>, rules: Rules) -> Check {
    const ID: &str = "discovery.jwks_uri";
    let fix = "publish jwks_uri as an https URL without query or fragment";
    let Some(raw) = jwks_uri else {
        return Check::fail(ID, "no jwks_uri", METADATA, fix);
    };
    match url::Url::parse(raw) {
        Ok(url) if url.query().is_none() && url.fragment().is_none() => {
            scheme_check(ID, "jwks_uri", &url, rules).unwrap_or_else(|| Check::pass(ID, raw))
        }
        Ok(_) => Check::fail(
            ID,
            format!("jwks_uri {raw} has a query or fragment"),
            METADATA,
            fix,
        ),
        Err(_) => Check::fail(ID, format!("jwks_uri {raw} is not a URL"), METADATA, fix),
    }
}

/// `member` (an array of strings) contains `value`; when `required` is false, absence passes.
fn list_check(
    doc: &Map<String, Value>,
    member: &'static str,
    value: &str,
    why: &str,
    required: bool,
) -> Check {
    let id = match member {
        "scopes_supported" => "discovery.scopes_supported",
        "response_types_supported" => "discovery.response_types_supported",
        "response_modes_supported" => "discovery.response_modes_supported",
        "id_token_signing_alg_values_supported" => {
            "discovery.id_token_signing_alg_values_supported"
        }
        "subject_types_supported" => "discovery.subject_types_supported",
        _ => "discovery.claim_types_supported",
    };
    let fix = format!("list \"{value}\" in {member} ({why})");
    match doc.get(member) {
        None if !required => {
            Check::pass(id, format!("{member} absent (\"{value}\" is the default)"))
        }
        None => Check::fail(id, format!("no {member}"), METADATA, fix),
        Some(Value::Array(items)) if items.iter().any(|v| v.as_str() == Some(value)) => {
            Check::pass(id, format!("{member} has \"{value}\""))
        }
        Some(other) => Check::fail(
            id,
            format!("{member} is {other}, without \"{value}\""),
            METADATA,
            fix,
        ),
    }
}

/// Fix of every x5c failure: how the proxy can supply the certificate.
fn x5c_fix(kid: &str) -> String {
    format!(
        "publish x5c on key {kid}: make its certificate with `eam-proxy cert --jwk <private JWK> --cn <IdP domain> --days 365` and add it to [[upstream.x5c]] for the key set's path (or have the OP publish it)"
    )
}

/// The OP's key set as Entra will read it (after the proxy's x5c injection, if any), judged
/// at `now` (Unix seconds).
pub fn key_set(jwks_uri: &str, fetched: &Fetched, now: u64) -> Vec<Check> {
    if fetched.status != 200 {
        return vec![Check::fail(
            "jwks.fetch",
            format!("{jwks_uri} answered {}", fetched.status),
            SIGNATURE,
            "serve the key set with 200 at jwks_uri",
        )];
    }
    let keys = serde_json::from_slice::<Value>(&fetched.body)
        .ok()
        .and_then(|doc| doc.get("keys").and_then(Value::as_array).cloned());
    let Some(keys) = keys else {
        return vec![Check::fail(
            "jwks.json",
            format!("{jwks_uri} is not a JSON key set with a keys array"),
            SIGNATURE,
            "serve a JWKS document ({\"keys\": [...]}) at jwks_uri",
        )];
    };
    let signing: Vec<&Map<String, Value>> = keys
        .iter()
        .filter_map(Value::as_object)
        .filter(|k| is_rsa_signing_key(k))
        .collect();
    let mut checks = vec![if signing.is_empty() {
        Check::fail(
            "jwks.keys",
            format!("{jwks_uri} has no RSA signing key"),
            SIGNATURE,
            "publish the RSA key that signs id_tokens (RS256)",
        )
    } else {
        Check::pass(
            "jwks.keys",
            format!("{} RSA signing key(s) at {jwks_uri}", signing.len()),
        )
    }];
    for key in &signing {
        checks.push(kid_check(key));
        checks.extend(signing_key(key, now));
    }
    checks
}

/// Entra picks the key by the id_token header's `kid`, compared as a string with the key set's:
/// each signing key needs one, made of base64 characters as Microsoft's reference shows.
fn kid_check(key: &Map<String, Value>) -> Check {
    const ID: &str = "jwks.kid";
    let fix =
        "give every signing key a kid of base64 characters, the one its id_tokens' header names";
    match key.get("kid").and_then(Value::as_str) {
        Some(kid)
            if !kid.is_empty()
                && kid
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"+/=-_".contains(&b)) =>
        {
            Check::pass(ID, format!("kid {kid}"))
        }
        Some(kid) => Check::fail(
            ID,
            format!("kid {kid:?} is not made of base64 characters"),
            SIGNATURE,
            fix,
        ),
        None => Check::fail(ID, "a signing key has no kid", SIGNATURE, fix),
    }
}

/// `x5c` of one RSA signing key: present, carrying the key, self-issued, valid now.
fn signing_key(key: &Map<String, Value>, now: u64) -> Vec<Check> {
    let kid = key.get("kid").and_then(Value::as_str).unwrap_or("(no kid)");
    let leaf = key
        .get("x5c")
        .and_then(Value::as_array)
        .and_then(|chain| chain.first());
    let Some(leaf) = leaf else {
        return vec![Check::fail(
            "jwks.x5c",
            format!("key {kid} has no x5c certificate"),
            SIGNATURE,
            x5c_fix(kid),
        )];
    };
    let cert = leaf
        .as_str()
        .and_then(|b64| STANDARD.decode(b64).ok())
        .ok_or("not standard base64")
        .and_then(|der| Certificate::from_der(&der).map_err(|e| e.reason()));
    let cert = match cert {
        Ok(cert) => cert,
        Err(why) => {
            return vec![Check::fail(
                "jwks.x5c",
                format!("x5c[0] of key {kid} is not a certificate ({why})"),
                SIGNATURE,
                x5c_fix(kid),
            )]
        }
    };
    let mut checks = vec![match cert.matches(key) {
        Ok(true) => Check::pass(
            "jwks.x5c",
            format!("key {kid}: certificate {} carries it", cert.subject()),
        ),
        _ => Check::fail(
            "jwks.x5c",
            format!("key {kid}: the x5c certificate carries another public key"),
            SIGNATURE,
            x5c_fix(kid),
        ),
    }];
    checks.push(if cert.is_self_issued() {
        Check::pass(
            "jwks.x5c_issuer",
            format!("key {kid}: issuer = subject = {}", cert.subject()),
        )
    } else {
        Check::fail(
            "jwks.x5c_issuer",
            format!(
                "key {kid}: certificate issuer DN differs from its subject DN {}",
                cert.subject()
            ),
            SIGNATURE,
            x5c_fix(kid),
        )
    });
    let window = format!("{} to {}", cert.not_before(), cert.not_after());
    checks.push(match cert.validity_at(now) {
        Validity::Valid => Check::pass(
            "jwks.x5c_validity",
            format!("key {kid}: valid (Unix time {window})"),
        ),
        Validity::EndsSoon { days_left } => Check::warn(
            "jwks.x5c_validity",
            format!("key {kid}: certificate ends in {days_left} day(s)"),
            format!("renew it: {}", x5c_fix(kid)),
        ),
        Validity::Expired | Validity::NotYetValid => Check::fail(
            "jwks.x5c_validity",
            format!("key {kid}: certificate not valid now (Unix time {window})"),
            SIGNATURE,
            x5c_fix(kid),
        ),
    });
    checks
}

/// The proxy's own configuration: app ids Entra will send, and where errors go.
pub fn config(policy: &Policy, rules: Rules) -> Vec<Check> {
    let mut checks = Vec::new();
    for app in &policy.apps {
        let id = &app.client_id;
        checks.push(if is_guid(id) {
            Check::pass("config.client_id", format!("client_id {id} is a GUID"))
        } else {
            Check::warn(
                "config.client_id",
                format!("client_id {id} is not a GUID"),
                "check it is exactly the Client ID entered in Entra's external method",
            )
        });
        for aud in &app.audiences {
            checks.push(if is_guid(aud) {
                Check::pass("config.audiences", format!("app {id}: audience {aud} is a GUID"))
            } else {
                Check::fail(
                    "config.audiences",
                    format!("app {id}: audience {aud} is not a GUID, so no Entra hint can carry it"),
                    HINT_AUDIENCE,
                    "set audiences to the app registration's Application ID (and the Client ID, if a GUID)",
                )
            });
        }
        if let Some(cloud) = policy.clouds.get(app.cloud) {
            checks.extend(redirect_uris(id, cloud, rules));
        }
    }
    checks
}

fn redirect_uris(client_id: &str, cloud: &CloudPolicy, rules: Rules) -> Vec<Check> {
    const ID: &str = "config.redirect_uris";
    if let Some(builtin) = CloudPolicy::builtin(&cloud.name) {
        return vec![if cloud.redirect_uris == builtin.redirect_uris {
            Check::pass(
                ID,
                format!(
                    "app {client_id}: Entra's redirect URI for cloud {}",
                    cloud.name
                ),
            )
        } else {
            Check::warn(
                ID,
                format!(
                    "app {client_id}: redirect_uris of cloud {} are not Entra's {:?}",
                    cloud.name, builtin.redirect_uris
                ),
                "remove the override: error form_posts would not reach Entra",
            )
        }];
    }
    cloud
        .redirect_uris
        .iter()
        .map(|uri| {
            let entra_shaped = uri.ends_with("/common/federation/externalauthprovider");
            match url::Url::parse(uri) {
                Ok(url) if entra_shaped => scheme_check(ID, "redirect URI", &url, rules)
                    .unwrap_or_else(|| Check::pass(ID, format!("app {client_id}: {uri}"))),
                _ => Check::warn(
                    ID,
                    format!("app {client_id}: {uri} is not an Entra redirect URI (…/common/federation/externalauthprovider)"),
                    "list Entra's redirect URI of this cloud",
                ),
            }
        })
        .collect()
}

/// Microsoft's key set of `cloud` as the proxy would load it: `Err` is why it could not be had.
pub fn microsoft_keys(cloud: &str, source: &str, body: Result<&[u8], String>) -> Check {
    const ID: &str = "config.microsoft_keys";
    let fix =
        "let the proxy reach Microsoft's key endpoint (egress, HTTPS_PROXY, DNS) or set jwks_file";
    match body.map(|b| KeySet::from_jwks(b, 0)) {
        Ok(Ok(set)) => Check::pass(
            ID,
            format!("cloud {cloud}: {} key(s) from {source}", set.len()),
        ),
        Ok(Err(e)) => Check::fail(
            ID,
            format!("cloud {cloud}: {source}: {e}"),
            KEYS_UNAVAILABLE,
            fix,
        ),
        Err(e) => Check::fail(
            ID,
            format!("cloud {cloud}: {source}: {e}"),
            KEYS_UNAVAILABLE,
            fix,
        ),
    }
}

/// Counts by status.
pub fn summary(checks: &[Check]) -> (usize, usize, usize) {
    let count = |s| checks.iter().filter(|c| c.status == s).count();
    (
        count(Status::Pass),
        count(Status::Warn),
        count(Status::Fail),
    )
}

/// The human report: one line per check, then what each problem causes and its fix.
pub fn render_table(checks: &[Check]) -> String {
    let width = checks.iter().map(|c| c.id.len()).max().unwrap_or(0);
    let mut out = String::new();
    for c in checks {
        out.push_str(&format!(
            "{:<4}  {:<width$}  {}\n",
            c.status.as_str(),
            c.id,
            c.detail
        ));
        if let Some(entra) = c.entra_error {
            out.push_str(&format!("{:<4}  {:<width$}  causes: {entra}\n", "", ""));
        }
        if let Some(fix) = &c.fix {
            out.push_str(&format!("{:<4}  {:<width$}  fix: {fix}\n", "", ""));
        }
    }
    let (pass, warn, fail) = summary(checks);
    out.push_str(&format!(
        "doctor: {fail} failed, {warn} warnings, {pass} passed\n"
    ));
    out
}

#[cfg(test)]
#[path = "doctor_tests.rs"]
mod tests;
