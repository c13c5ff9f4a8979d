//! The validated, ready-to-use form of the configuration that the request logic needs.
//!
//! `proxy` builds a `Policy` from its TOML; everything here is already checked, so the request
//! path never has to handle a configuration error. The enums and `ExtraClaim` are also the
//! TOML's own values (serde), and `AuthorizeSettings::default()` is the one source of the
//! `[authorize]` defaults, so that the two cannot disagree.

use serde::{Deserialize, Serialize};

/// Microsoft-account (consumer) tenant: never an Entra workforce user.
pub const MSA_TENANT: &str = "9188040d-6c67-4c5b-b112-36a304b66dad";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DetectMode {
    /// `client_id` is one of the configured apps.
    ClientId,
    /// A `client-request-id` parameter is present.
    ClientRequestId,
    Either,
    Both,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorDelivery {
    /// Auto-submitting form to Entra's redirect_uri, so the attempt ends at once.
    FormPost,
    /// Plain HTTP status with a JSON body.
    Status,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ExtraClaim {
    pub claim: String,
    pub param: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloudPolicy {
    pub name: String,
    /// Expected `iss`, with `{tid}` standing for the token's own tenant.
    pub issuer_template: String,
    /// Entra's redirect URIs for this cloud: the only targets of a form_post error.
    pub redirect_uris: Vec<String>,
}

impl CloudPolicy {
    pub fn expected_issuer(&self, tid: &str) -> String {
        self.issuer_template.replace("{tid}", tid)
    }

    /// `iss == expected_issuer(tid)`, without building the issuer.
    pub fn issued_by_cloud(&self, tid: &str, iss: &str) -> bool {
        fills_template(&self.issuer_template, &["{tid}"], tid, iss)
    }

    /// The built-in clouds (README `[clouds.NAME]`).
    pub fn builtin(name: &str) -> Option<CloudPolicy> {
        let host = match name {
            "global" => "login.microsoftonline.com",
            "usgov" => "login.microsoftonline.us",
            "china" => "login.partner.microsoftonline.cn",
            _ => return None,
        };
        Some(CloudPolicy {
            name: name.to_string(),
            issuer_template: format!("https://{host}/{{tid}}/v2.0"),
            redirect_uris: vec![format!(
                "https://{host}/common/federation/externalauthprovider"
            )],
        })
    }

    pub fn builtin_jwks_url(name: &str) -> Option<String> {
        Self::builtin(name).map(|c| {
            let host = c.issuer_template.trim_start_matches("https://");
            let host = host.split('/').next().unwrap_or_default();
            format!("https://{host}/common/discovery/v2.0/keys")
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppPolicy {
    pub client_id: String,
    /// Accepted hint `aud` values; never empty (defaults to `[client_id]`).
    pub audiences: Vec<String>,
    /// Index into `Policy::clouds`.
    pub cloud: usize,
    /// Lower-case tenant GUIDs; empty means any tenant.
    pub allowed_tenants: Vec<String>,
    pub allow_msa_tenant: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorizeSettings {
    pub paths: Vec<String>,
    pub detect: DetectMode,
    pub param_prefix: String,
    pub hint_param: String,
    pub force_prompt_login: bool,
    pub leeway_seconds: u64,
    /// Accept a hint that is not pre-expired until `exp + leeway` (before issue 18) instead of
    /// `iat + leeway`, the window of Microsoft's own, pre-expired hints.
    pub accept_hints_until_exp: bool,
    pub error_delivery: ErrorDelivery,
    pub extra_claims: Vec<ExtraClaim>,
    pub max_body_bytes: usize,
}

impl Default for AuthorizeSettings {
    fn default() -> Self {
        AuthorizeSettings {
            paths: vec!["/authorize".into()],
            detect: DetectMode::ClientId,
            param_prefix: "entra_".into(),
            hint_param: "entra_id_token_hint".into(),
            force_prompt_login: true,
            leeway_seconds: 300,
            accept_hints_until_exp: false,
            error_delivery: ErrorDelivery::FormPost,
            extra_claims: Vec::new(),
            max_body_bytes: 32 * 1024,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub authorize: AuthorizeSettings,
    pub apps: Vec<AppPolicy>,
    /// Every known cloud (built-in and configured), whether or not an app uses it.
    pub clouds: Vec<CloudPolicy>,
    /// A key set last refreshed longer ago than this is no longer used (`jwks.max_stale_seconds`).
    pub max_stale_seconds: u64,
}

impl Policy {
    /// Whether `path` is, or may be routed by the upstream as, a configured authorize path.
    ///
    /// Servers differ in what they treat as the same path (Tomcat drops `;jsessionid=…`, most
    /// decode `%61`, some fold case, collapse `//` or ignore a trailing `/`, Rails' `(.:format)`
    /// and Spring's suffix matching route `/authorize.json` alike), and a variant the
    /// proxy let through as "other traffic" would carry spoofed `entra_*` parameters to the
    /// authorize endpoint. So every such variant counts as an authorize path: the cost of
    /// checking one request too many is nothing, one too few is an identity bypass.
    pub fn is_authorize_path(&self, path: &str) -> bool {
        path_is_one_of(&self.authorize.paths, path)
    }

    pub fn app(&self, client_id: &str) -> Option<&AppPolicy> {
        self.apps.iter().find(|a| a.client_id == client_id)
    }

    pub fn cloud_of(&self, app: &AppPolicy) -> &CloudPolicy {
        &self.clouds[app.cloud]
    }

    /// Names of the clouds at least one app uses: the key sets that must be loaded.
    pub fn clouds_in_use(&self) -> Vec<&str> {
        let mut names: Vec<&str> = Vec::new();
        for app in &self.apps {
            let name = self.clouds[app.cloud].name.as_str();
            if !names.contains(&name) {
                names.push(name);
            }
        }
        names
    }

    /// A parameter the upstream must be able to trust, so no client may send it.
    pub fn is_reserved_param(&self, name: &str) -> bool {
        let prefix = self.authorize.param_prefix.as_bytes();
        let spoofs_prefix = name.len() >= prefix.len()
            && name.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix);
        spoofs_prefix || name.eq_ignore_ascii_case(&self.authorize.hint_param)
    }
}

/// Whether `candidate` is `template` with each placeholder replaced by `value` (the result of
/// `str::replace` for each, since a placeholder cannot straddle another), compared as it is
/// read rather than built: issuers are checked on every hint.
pub fn fills_template(template: &str, placeholders: &[&str], value: &str, candidate: &str) -> bool {
    let (mut rest, mut candidate) = (template.as_bytes(), candidate.as_bytes());
    loop {
        // The nearest placeholder; on a tie the first listed, as a scan from the left finds.
        let next = placeholders
            .iter()
            .filter_map(|p| find(rest, p.as_bytes()).map(|at| (at, p.len())))
            .min_by_key(|&(at, _)| at);
        let Some((at, len)) = next else {
            return candidate == rest;
        };
        let Some(tail) = candidate
            .strip_prefix(&rest[..at])
            .and_then(|c| c.strip_prefix(value.as_bytes()))
        else {
            return false;
        };
        candidate = tail;
        rest = &rest[at + len..];
    }
}

/// Where `needle` first occurs: templates are short, so memchr for its first byte, then a
/// comparison, beats building a `memmem` searcher. An empty needle is never found.
fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    let &first = needle.first()?;
    memchr::memchr_iter(first, haystack).find(|&at| haystack[at..].starts_with(needle))
}

/// The one loopback rule, wherever plain `http://` is tolerated (a key-set URL in the
/// configuration, the doctor's `--allow-http`, a redirect URI in an error page's CSP):
/// `localhost`, 127.0.0.0/8 and `::1`.
pub fn is_loopback_url(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// Whether `path` reaches one of `paths` in some server's reading (`Policy::is_authorize_path`).
pub fn path_is_one_of(paths: &[String], path: &str) -> bool {
    if paths.iter().any(|p| p == path) {
        return true;
    }
    let plain = |b: &u8| !matches!(b, b'%' | b';' | b'.' | b'A'..=b'Z');
    if path.bytes().all(|b| plain(&b)) && !path.contains("//") && !path.ends_with('/') {
        return false;
    }
    let key = path_key(path);
    paths.iter().any(|p| {
        let configured = path_key(p);
        key.strip_prefix(configured.as_slice())
            .is_some_and(|rest| rest.is_empty() || is_format_suffix(rest))
    })
}

/// `.json`, `.html`, `.`: what follows a path that a format suffix extends (no `/` in it).
fn is_format_suffix(rest: &[u8]) -> bool {
    rest.first() == Some(&b'.') && !rest.contains(&b'/')
}

/// `8-4-4-4-12` hexadecimal digits.
pub fn is_guid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// The form of a path that every common server would route the same way: percent-decoded
/// (also `%2F`), path parameters (`;…`) and empty or `.` segments dropped, `..` applied,
/// ASCII case folded.
fn path_key(path: &str) -> Vec<u8> {
    let decoded: Vec<u8> = percent_encoding::percent_decode_str(path).collect();
    let mut segments: Vec<&[u8]> = Vec::new();
    for segment in decoded.split(|b| *b == b'/') {
        let segment = segment.split(|b| *b == b';').next().unwrap_or_default();
        match segment {
            b"" | b"." => {}
            b".." => drop(segments.pop()),
            s => segments.push(s),
        }
    }
    let mut key = Vec::with_capacity(decoded.len());
    for segment in segments {
        key.push(b'/');
        key.extend(segment.iter().map(u8::to_ascii_lowercase));
    }
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_clouds_match_spec() {
        let global = CloudPolicy::builtin("global").unwrap();
        assert_eq!(
            global.expected_issuer("t"),
            "https://login.microsoftonline.com/t/v2.0"
        );
        assert_eq!(
            global.redirect_uris,
            ["https://login.microsoftonline.com/common/federation/externalauthprovider"]
        );
        assert_eq!(
            CloudPolicy::builtin_jwks_url("usgov").unwrap(),
            "https://login.microsoftonline.us/common/discovery/v2.0/keys"
        );
        assert_eq!(
            CloudPolicy::builtin("china").unwrap().expected_issuer("t"),
            "https://login.partner.microsoftonline.cn/t/v2.0"
        );
        assert!(CloudPolicy::builtin("mars").is_none());
    }

    #[test]
    fn every_routable_variant_of_an_authorize_path_is_one() {
        let policy = Policy {
            authorize: AuthorizeSettings {
                paths: vec!["/oauth2/authorize".into()],
                ..AuthorizeSettings::default()
            },
            apps: Vec::new(),
            clouds: Vec::new(),
            max_stale_seconds: 0,
        };
        for path in [
            "/oauth2/authorize",
            "/oauth2/authorize/",
            "/oauth2//authorize",
            "//oauth2/authorize",
            "/oauth2/authorize;jsessionid=0123",
            "/oauth2;x=y/authorize",
            "/oauth2/%61uthorize",
            "/oauth2%2Fauthorize",
            "/OAuth2/Authorize",
            "/oauth2/./authorize",
            "/other/../oauth2/authorize",
            "/oauth2/authorize/.",
            "/oauth2/authorize.json",
            "/oauth2/authorize.html/",
            "/oauth2/Authorize.do;x=y",
            "/oauth2/authorize%2Ejson",
        ] {
            assert!(policy.is_authorize_path(path), "{path}");
        }
        for path in [
            "/oauth2/authorizex",
            "/oauth2/authorize/x",
            "/oauth2/token",
            "/authorize",
            "/oauth2/authorize/..",
            "/oauth2/authorize.json/x",
            "/oauth2/authorizejson",
            "/",
            "",
        ] {
            assert!(!policy.is_authorize_path(path), "{path}");
        }
    }

    #[test]
    fn guid_shape() {
        assert!(is_guid(MSA_TENANT));
        assert!(is_guid("9122040D-6C67-4C5B-B112-36A304B66DAD"));
        assert!(!is_guid("9122040d6c674c5bb11236a304b66dad"));
        assert!(!is_guid("9122040d-6c67-4c5b-b112-36a304b66da"));
        assert!(!is_guid("9122040d-6c67-4c5b-b112-36a304b66dag"));
        assert!(!is_guid("common"));
    }

    #[test]
    fn filling_a_template_agrees_with_replace() {
        let tid = "9122040d-6c67-4c5b-b112-36a304b66dad";
        let templates = [
            "https://login.microsoftonline.com/{tid}/v2.0",
            "https://login.microsoftonline.com/{tenantid}/v2.0",
            "{tid}{tenantid}",
            "https://sts.example/{tid}/{tid}",
            "https://no-placeholder/",
            "{ti{tid}d}",
            "",
        ];
        for template in templates {
            let built = template.replace("{tenantid}", tid).replace("{tid}", tid);
            let placeholders = ["{tenantid}", "{tid}"];
            assert!(
                fills_template(template, &placeholders, tid, &built),
                "{template}"
            );
            for wrong in [
                format!("{built}x"),
                built.chars().skip(1).collect::<String>(),
                built.replace(tid, &tid.to_uppercase()),
                template.to_string(),
            ] {
                if wrong != built {
                    assert!(
                        !fills_template(template, &placeholders, tid, &wrong),
                        "{template} / {wrong}"
                    );
                }
            }
        }
    }

    #[test]
    fn reserved_params_are_matched_case_insensitively() {
        let policy = Policy {
            authorize: AuthorizeSettings {
                hint_param: "upstream_hint".into(),
                ..Default::default()
            },
            apps: vec![],
            clouds: vec![],
            max_stale_seconds: 0,
        };
        for name in [
            "entra_sub",
            "ENTRA_oid",
            "Entra_",
            "upstream_hint",
            "UPSTREAM_HINT",
        ] {
            assert!(policy.is_reserved_param(name), "{name}");
        }
        for name in ["entra", "xentra_sub", "id_token_hint", "", "éntra_"] {
            assert!(!policy.is_reserved_param(name), "{name}");
        }
    }
}
