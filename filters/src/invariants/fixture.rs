//! Fixed policies, keys, pre-signed hints and a model of Entra-shaped requests.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{json, Map, Value};

use crate::authorize::Ruling;
use crate::keys::KeySet;
use crate::policy::{
    AppPolicy, AuthorizeSettings, CloudPolicy, DetectMode, ErrorDelivery, ExtraClaim, Policy,
    MSA_TENANT,
};
use crate::request::{AuthorizeRequest, Field, Framing, Method};

pub const NOW: u64 = 1_750_000_000;
pub const CLIENT_ID: &str = "56c2b5e3-c41d-4c14-abcf-72d407f57650";
pub const USGOV_CLIENT_ID: &str = "0f7a9c1e-2b3d-4e5f-8a9b-0c1d2e3f4a5b";
pub const CHINA_CLIENT_ID: &str = "7d6c5b4a-3f2e-4d1c-9b8a-7f6e5d4c3b2a";
/// Microsoft's sample `aud`: the Entra app registration's Application ID.
pub const APP_REGISTRATION: &str = "600b719b-3766-4dc5-95a6-3c4a8dc31885";
pub const TID: &str = "9122040d-6c67-4c5b-b112-36a304b66dad";
pub const OTHER_TID: &str = "14c2f153-90a7-4689-9db7-9543bf084dad";
pub const SUB: &str = "mBfcvuhSHkDWVgV72x2ruIYdSsPSvcj2R0qfc6mGEAA";
pub const OID: &str = "951ddb04-b16d-45f3-bbf7-b0fa18fa7aee";
pub const USERNAME: &str = "testuser2@contoso.com";
pub const GLOBAL_REDIRECT: &str =
    "https://login.microsoftonline.com/common/federation/externalauthprovider";
pub const USGOV_REDIRECT: &str =
    "https://login.microsoftonline.us/common/federation/externalauthprovider";
pub const CHINA_REDIRECT: &str =
    "https://login.partner.microsoftonline.cn/common/federation/externalauthprovider";
/// A configured cloud that no app uses: its URI is on the allow-list of unknown clients only.
pub const LAB_REDIRECT: &str = "http://127.0.0.1:9000/federation/externalauthprovider";
pub const STATE: &str = "AwABAAEAAAACAOz_BAD0_8h2Ejq7";
pub const NONCE: &str = "9f3e2c4a-1c2b-4d8e-9a7b-3c2d1e0f9a8b";
pub const CRID: &str = "1b5f7c9e-4a3d-4e2f-8b1a-0c9d8e7f6a5b";
pub const CLAIMS_PARAM: &str = r#"{"id_token":{"acr":{"essential":true,"values":["possessionorinherence"]},"amr":{"essential":true,"values":["face","fido","fpt","hwk","iris","otp","tel","pop","retina","sc","sms","swk","vbm"]}}}"#;
pub const FORM: &str = "application/x-www-form-urlencoded";
/// The issuer template Microsoft publishes on each key.
pub const KEY_ISSUER: &str = "https://login.microsoftonline.com/{tenantid}/v2.0";

const SIGNER_PEM: &str = include_str!("../../../tests/fixtures/keys/signer.pem");
const FOREIGN_PEM: &str = include_str!("../../../tests/fixtures/keys/foreign.pem");
/// Both public keys (what anyone can download from Microsoft).
pub const PUBLIC_JWKS: &str = include_str!("../../../tests/fixtures/keys/public.jwks.json");

/// A policy variant; each bit of `variant` turns one knob away from the defaults:
/// bits 0–1 `detect` (client_id, client_request_id, either, both), 2 `force_prompt_login =
/// false`, 3 `error_delivery = status`, 4 `hint_param = upstream_hint`, 5 the global app
/// allows `TID` only, 6 extra claims (`name`, `roles`), 7 `allow_msa_tenant`, 8
/// `max_body_bytes = 2048`, 9 `leeway_seconds = 0`.
///
/// Apps: `CLIENT_ID` (global, audiences itself and `APP_REGISTRATION`), `USGOV_CLIENT_ID`
/// (usgov, no key set loaded) and `CHINA_CLIENT_ID` (china, stale key set). Clouds: the
/// three built-in ones and `lab`, which no app uses.
pub fn policy(variant: u16) -> Policy {
    let bit = |n: u16| variant & (1 << n) != 0;
    let app = |client_id: &str, cloud: usize| AppPolicy {
        client_id: client_id.into(),
        audiences: vec![client_id.into()],
        cloud,
        allowed_tenants: vec![],
        allow_msa_tenant: bit(7),
    };
    let mut global = app(CLIENT_ID, 0);
    global.audiences.push(APP_REGISTRATION.into());
    if bit(5) {
        global.allowed_tenants = vec![TID.to_uppercase()];
    }
    let mut clouds: Vec<CloudPolicy> = ["global", "usgov", "china"]
        .iter()
        .filter_map(|name| CloudPolicy::builtin(name))
        .collect();
    clouds.push(CloudPolicy {
        name: "lab".into(),
        issuer_template: "http://127.0.0.1:9000/{tid}/v2.0".into(),
        redirect_uris: vec![LAB_REDIRECT.into()],
    });
    Policy {
        authorize: AuthorizeSettings {
            detect: [
                DetectMode::ClientId,
                DetectMode::ClientRequestId,
                DetectMode::Either,
                DetectMode::Both,
            ][usize::from(variant & 3)],
            force_prompt_login: !bit(2),
            error_delivery: if bit(3) {
                ErrorDelivery::Status
            } else {
                ErrorDelivery::FormPost
            },
            hint_param: if bit(4) {
                "upstream_hint".into()
            } else {
                "entra_id_token_hint".into()
            },
            extra_claims: if bit(6) {
                vec![
                    ExtraClaim {
                        claim: "name".into(),
                        param: "entra_name".into(),
                    },
                    ExtraClaim {
                        claim: "roles".into(),
                        param: "entra_roles".into(),
                    },
                ]
            } else {
                vec![]
            },
            max_body_bytes: if bit(8) { 2048 } else { 32 * 1024 },
            leeway_seconds: if bit(9) { 0 } else { 300 },
            ..AuthorizeSettings::default()
        },
        apps: vec![global, app(USGOV_CLIENT_ID, 1), app(CHINA_CLIENT_ID, 2)],
        clouds,
        max_stale_seconds: 604_800,
    }
}

/// [`policy`]`(variant)`, built once per variant (only the ten low bits matter).
pub fn shared_policy(variant: u16) -> &'static Policy {
    static POLICIES: [OnceLock<Policy>; 1024] = [const { OnceLock::new() }; 1024];
    let variant = variant & 0x3ff;
    POLICIES[usize::from(variant)].get_or_init(|| policy(variant))
}

pub type Keys = HashMap<String, Arc<KeySet>>;

fn public_member(kid: &str, member: &str) -> String {
    let jwks: Value = serde_json::from_str(PUBLIC_JWKS).expect("fixture JWKS");
    jwks["keys"]
        .as_array()
        .and_then(|keys| keys.iter().find(|k| k["kid"] == kid))
        .and_then(|k| k[member].as_str())
        .expect("fixture key member")
        .to_string()
}

/// `public.jwks.json`'s key `fixture_kid` as a JWK under `kid`, with an optional issuer.
pub fn jwk(fixture_kid: &str, kid: &str, issuer: Option<&str>) -> Value {
    let mut key = json!({
        "kty": "RSA", "use": "sig", "kid": kid,
        "n": public_member(fixture_kid, "n"), "e": public_member(fixture_kid, "e"),
    });
    if let Some(issuer) = issuer {
        key["issuer"] = issuer.into();
    }
    key
}

/// The global set: the signer key as `signer` (Microsoft's issuer template), as `plain` (no
/// template) and as `usgov-only` (the usgov template); a stale china set; no usgov set.
pub fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let set = |keys: Vec<Value>, loaded_at: u64| {
            let doc = json!({ "keys": keys }).to_string();
            Arc::new(KeySet::from_jwks(doc.as_bytes(), loaded_at).expect("fixture key set"))
        };
        HashMap::from([
            (
                "global".to_string(),
                set(
                    vec![
                        jwk("signer", "signer", Some(KEY_ISSUER)),
                        jwk("signer", "plain", None),
                        jwk(
                            "signer",
                            "usgov-only",
                            Some("https://login.microsoftonline.us/{tenantid}/v2.0"),
                        ),
                    ],
                    NOW,
                ),
            ),
            (
                "china".to_string(),
                set(vec![jwk("signer", "signer", None)], NOW - 700_000),
            ),
        ])
    })
}

fn encoding_key(pem: &str) -> EncodingKey {
    let der: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    EncodingKey::from_rsa_der(&STANDARD.decode(der).expect("fixture PEM"))
}

fn b64(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn jws(key: &EncodingKey, alg: Algorithm, header: &Value, claims: &Value) -> String {
    let input = format!("{}.{}", b64(header.to_string()), b64(claims.to_string()));
    let signature =
        jsonwebtoken::crypto::sign(input.as_bytes(), key, alg).expect("fixture signature");
    format!("{input}.{signature}")
}

fn issuer(host: &str, tid: &str) -> String {
    format!("https://{host}/{tid}/v2.0")
}

/// Microsoft's sample member-user payload (README "7. Rewrite and forward", its example), pre-expired like the real thing.
pub fn claims() -> Map<String, Value> {
    let Value::Object(claims) = json!({
        "ver": "2.0",
        "iss": issuer("login.microsoftonline.com", TID),
        "sub": SUB,
        "aud": CLIENT_ID,
        "exp": NOW - 1,
        "iat": NOW,
        "nbf": NOW,
        "name": "Test User 2",
        "preferred_username": USERNAME,
        "oid": OID,
        "tid": TID,
    }) else {
        unreachable!()
    };
    claims
}

/// A pre-signed hint and the reason the base policy (variant 0) gives it at `NOW` for the
/// global app (`None`: accepted).
#[derive(Debug, Clone)]
pub struct Hint {
    pub name: &'static str,
    pub token: String,
    pub reason: Option<&'static str>,
}

/// Every pre-signed hint, signed once (RSA signing is slow).
pub fn hints() -> &'static [Hint] {
    static HINTS: OnceLock<Vec<Hint>> = OnceLock::new();
    HINTS.get_or_init(sign_hints)
}

/// The hint called `name`.
pub fn hint(name: &str) -> &'static str {
    &hints()
        .iter()
        .find(|h| h.name == name)
        .unwrap_or_else(|| panic!("no fixture hint {name}"))
        .token
}

fn sign_hints() -> Vec<Hint> {
    let signer = encoding_key(SIGNER_PEM);
    let foreign = encoding_key(FOREIGN_PEM);
    let header = |kid: &str| json!({"typ": "JWT", "alg": "RS256", "kid": kid});
    let with = |tweak: &dyn Fn(&mut Map<String, Value>)| {
        let mut c = claims();
        tweak(&mut c);
        Value::Object(c)
    };
    let signed = |tweak: &dyn Fn(&mut Map<String, Value>)| {
        jws(&signer, Algorithm::RS256, &header("signer"), &with(tweak))
    };
    let valid = signed(&|_| {});
    let segments: Vec<String> = valid.split('.').map(str::to_string).collect();
    let tampered = format!(
        "{}.{}.{}",
        segments[0],
        b64(with(&|c| {
            c.insert("sub".into(), "attacker".into());
        })
        .to_string()),
        segments[2]
    );
    let none_header = b64(json!({"typ": "JWT", "alg": "none"}).to_string());
    let hmac_secret = URL_SAFE_NO_PAD
        .decode(public_member("signer", "n"))
        .expect("fixture modulus");
    let hs256 = jws(
        &EncodingKey::from_secret(&hmac_secret),
        Algorithm::HS256,
        &json!({"typ": "JWT", "alg": "HS256", "kid": "signer"}),
        &Value::Object(claims()),
    );
    let h = |name, token, reason| Hint {
        name,
        token,
        reason,
    };
    vec![
        h("valid", valid.clone(), None),
        h(
            "valid_app_registration_aud_array",
            signed(&|c| {
                c.insert("aud".into(), json!(["https://other", APP_REGISTRATION]));
            }),
            None,
        ),
        h(
            "valid_plain_kid",
            jws(
                &signer,
                Algorithm::RS256,
                &header("plain"),
                &Value::Object(claims()),
            ),
            None,
        ),
        h(
            "valid_other_tenant",
            signed(&|c| {
                c.insert("tid".into(), OTHER_TID.into());
                c.insert(
                    "iss".into(),
                    issuer("login.microsoftonline.com", OTHER_TID).into(),
                );
            }),
            None,
        ),
        h(
            "valid_odd_claims",
            signed(&|c| {
                c.insert("sub".into(), "s&entra_sub=evil+%41\"><b>'".into());
                c.insert("oid".into(), "o\u{e9}\u{0}\n&".into());
                c.remove("preferred_username");
                c.insert("name".into(), json!({"given": "<x>", "n": [1, 2.5]}));
                c.insert("roles".into(), json!(["a&b", "c=d"]));
            }),
            None,
        ),
        h(
            "valid_fractional_times",
            signed(&|c| {
                c.insert("iat".into(), json!(NOW as f64 - 0.5));
                c.insert("nbf".into(), json!(NOW as f64 - 0.5));
                c.insert("exp".into(), json!(NOW as f64 - 1.5));
            }),
            None,
        ),
        h(
            "valid_with_jku_x5u_jwk",
            jws(
                &signer,
                Algorithm::RS256,
                &json!({
                    "typ": "JWT", "alg": "RS256", "kid": "signer",
                    "jku": "https://attacker.example/keys",
                    "x5u": "https://attacker.example/cert",
                    "jwk": jwk("foreign", "signer", None),
                }),
                &Value::Object(claims()),
            ),
            None,
        ),
        h(
            "expired",
            signed(&|c| {
                c.insert("iat".into(), (NOW - 3_600).into());
                c.insert("nbf".into(), (NOW - 3_600).into());
                c.insert("exp".into(), (NOW - 3_601).into());
            }),
            Some("expired"),
        ),
        h(
            "not_yet_valid",
            signed(&|c| {
                c.insert("iat".into(), (NOW + 3_600).into());
                c.insert("nbf".into(), (NOW + 3_600).into());
                c.insert("exp".into(), (NOW + 3_599).into());
            }),
            Some("not_yet_valid"),
        ),
        h(
            "wrong_aud",
            signed(&|c| {
                c.insert("aud".into(), "00000000-0000-0000-0000-000000000000".into());
            }),
            Some("audience_mismatch"),
        ),
        h(
            "msa_tenant",
            signed(&|c| {
                c.insert("tid".into(), MSA_TENANT.into());
                c.insert(
                    "iss".into(),
                    issuer("login.microsoftonline.com", MSA_TENANT).into(),
                );
            }),
            Some("msa_tenant"),
        ),
        h(
            "issuer_tid_mismatch",
            signed(&|c| {
                c.insert("tid".into(), OTHER_TID.into());
            }),
            Some("issuer_mismatch"),
        ),
        h(
            "tid_not_guid",
            signed(&|c| {
                c.insert("tid".into(), "common".into());
                c.insert(
                    "iss".into(),
                    issuer("login.microsoftonline.com", "common").into(),
                );
            }),
            Some("invalid_tid"),
        ),
        h(
            "usgov_issuer",
            signed(&|c| {
                c.insert("iss".into(), issuer("login.microsoftonline.us", TID).into());
                c.insert("aud".into(), USGOV_CLIENT_ID.into());
            }),
            Some("issuer_mismatch"),
        ),
        h(
            "china_issuer",
            signed(&|c| {
                c.insert(
                    "iss".into(),
                    issuer("login.partner.microsoftonline.cn", TID).into(),
                );
                c.insert("aud".into(), CHINA_CLIENT_ID.into());
            }),
            Some("issuer_mismatch"),
        ),
        h(
            "key_issuer_mismatch",
            jws(
                &signer,
                Algorithm::RS256,
                &header("usgov-only"),
                &Value::Object(claims()),
            ),
            Some("key_issuer_mismatch"),
        ),
        h(
            "foreign_key",
            jws(
                &foreign,
                Algorithm::RS256,
                &header("signer"),
                &Value::Object(claims()),
            ),
            Some("bad_signature"),
        ),
        h(
            "unknown_kid",
            jws(
                &foreign,
                Algorithm::RS256,
                &header("foreign"),
                &Value::Object(claims()),
            ),
            Some("unknown_kid"),
        ),
        h("tampered", tampered, Some("bad_signature")),
        h(
            "alg_none",
            format!("{none_header}.{}.", segments[1]),
            Some("malformed_token"),
        ),
        h(
            "alg_none_signed",
            format!("{none_header}.{}.{}", segments[1], segments[2]),
            Some("alg_not_allowed"),
        ),
        h("hs256_public_key", hs256, Some("alg_not_allowed")),
        h(
            "rs512",
            jws(
                &signer,
                Algorithm::RS512,
                &json!({"typ": "JWT", "alg": "RS512", "kid": "signer"}),
                &Value::Object(claims()),
            ),
            Some("alg_not_allowed"),
        ),
        h(
            "missing_kid",
            jws(
                &signer,
                Algorithm::RS256,
                &json!({"typ": "JWT", "alg": "RS256"}),
                &Value::Object(claims()),
            ),
            Some("missing_kid"),
        ),
        h(
            "crit",
            jws(
                &signer,
                Algorithm::RS256,
                &json!({"typ": "JWT", "alg": "RS256", "kid": "signer", "crit": ["exp"]}),
                &Value::Object(claims()),
            ),
            Some("malformed_token"),
        ),
        h(
            "missing_oid",
            signed(&|c| {
                c.remove("oid");
            }),
            Some("missing_oid"),
        ),
        h(
            "empty_sub",
            signed(&|c| {
                c.insert("sub".into(), "".into());
            }),
            Some("missing_sub"),
        ),
        h(
            "no_exp",
            signed(&|c| {
                c.remove("exp");
            }),
            Some("missing_time_claim"),
        ),
        h(
            "string_iat",
            signed(&|c| {
                c.insert("iat".into(), NOW.to_string().into());
            }),
            Some("malformed_claims"),
        ),
        h(
            "claims_not_object",
            jws(
                &signer,
                Algorithm::RS256,
                &header("signer"),
                &json!([claims()]),
            ),
            Some("malformed_claims"),
        ),
    ]
}

// --- request model ---------------------------------------------------------------------

/// Raw (already encoded) parameter names: the ones Entra sends, spoofs of reserved names
/// in every disguise the codec must see through, and look-alikes that are not reserved.
pub const NAMES: &[&str] = &[
    "client_id",
    "redirect_uri",
    "response_type",
    "response_mode",
    "scope",
    "state",
    "nonce",
    "claims",
    "prompt",
    "id_token_hint",
    "client-request-id",
    "entra_sub",
    "ENTRA_oid",
    "%65ntra_tid",
    "entra%5Fiss",
    "Entra_Preferred_Username",
    "entra_id_token_hint",
    "entra_name",
    "entra_",
    "eNtRa%5f",
    "upstream_hint",
    "UPSTREAM_HINT",
    "UpStream%5FHint",
    "client%5Fid",
    "id%5Ftoken%5Fhint",
    "CLIENT_ID",
    "Id_Token_Hint",
    "client_request_id",
    "client%2Drequest%2Did",
    "login_hint",
    "ui_locales",
    "entra",
    "xentra_sub",
    "%C3%A9ntra_sub",
    "",
    // What PHP, Rack, qs or a case-insensitive collection would read as a reserved or
    // single-valued name.
    "entra.sub",
    "entra%2Eoid",
    "entra+sub",
    "entra[sub]",
    "client_id[]",
    "client_id%5B%5D",
    "[client_id]",
    "]client_id",
    "+client_id",
    "Client_Id",
    "REDIRECT_URI",
];

/// Decoded values: identifiers of configured and unknown apps, Entra's and attackers'
/// redirect URIs, states carrying HTML, and the other values Entra sends.
pub const VALUES: &[&str] = &[
    CLIENT_ID,
    USGOV_CLIENT_ID,
    CHINA_CLIENT_ID,
    "other-client",
    APP_REGISTRATION,
    GLOBAL_REDIRECT,
    USGOV_REDIRECT,
    CHINA_REDIRECT,
    LAB_REDIRECT,
    "https://attacker.example/cb",
    "https://login.microsoftonline.com/common/federation/externalauthprovider/",
    "HTTPS://LOGIN.MICROSOFTONLINE.COM/common/federation/externalauthprovider",
    STATE,
    "\"><script>alert(1)</script>&'",
    "</form><form action=\"https://attacker.example\"><input name='x'>",
    NONCE,
    CLAIMS_PARAM,
    "openid",
    "id_token",
    "form_post",
    "login",
    "none",
    "select_account",
    CRID,
    "",
    "attacker",
    MSA_TENANT,
    TID,
    "e30.e30.e30",
    "a&entra_sub=b",
    "a;entra_sub=b",
    "a;client_id=56c2b5e3-c41d-4c14-abcf-72d407f57650",
    "x]=y",
    "[entra_oid]=z",
    "%",
    "+ +",
];

/// Index 5 is no content type (the seeds' GETs use it); the charset shapes follow.
const CONTENT_TYPES: &[Option<&str>] = &[
    Some(FORM),
    Some("application/x-www-form-urlencoded; charset=UTF-8"),
    Some("Application/X-WWW-Form-Urlencoded ;charset=iso-8859-1"),
    Some("text/plain"),
    Some("multipart/form-data; boundary=x"),
    None,
    Some("application/x-www-form-urlencoded; charset=utf-16"),
    Some("application/x-www-form-urlencoded;charset=\"utf-8\""),
    Some("application/x-www-form-urlencoded; charset=utf-8; charset=ibm037"),
    Some("application/x-www-form-urlencoded; boundary=x"),
];

const NOWS: &[u64] = &[
    NOW,
    NOW + 1,
    NOW + 299,
    NOW + 300,
    NOW + 301,
    NOW + 3_600,
    NOW - 300,
    NOW - 301,
    NOW + 604_800,
    NOW + 700_000,
    0,
    u64::MAX,
];

/// A change to a token, applied to its bytes (the result is read back lossily as UTF-8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mutation {
    /// Overwrite the byte at `at % len`.
    SetByte { at: u16, byte: u8 },
    /// Insert a byte before `at % (len + 1)`.
    Insert { at: u16, byte: u8 },
    /// Keep the first `at % (len + 1)` bytes.
    Truncate { at: u16 },
    /// Flip bit `bit % 8` of byte `at` of the decoded segment `segment % 3`, re-encoded:
    /// the forgery stays well-formed base64url.
    FlipDecoded { segment: u8, at: u16, bit: u8 },
    /// Replace segment `segment % 3` with the same segment of another pre-signed hint.
    Splice { segment: u8, from: u8 },
    /// Drop segment `segment % 3`.
    DropSegment { segment: u8 },
    /// Append a fourth segment.
    AppendSegment,
}

impl Mutation {
    pub fn apply(self, token: &str) -> String {
        let mut bytes = token.as_bytes().to_vec();
        let len = bytes.len();
        let segments = || token.split('.').map(str::to_string).collect::<Vec<_>>();
        match self {
            Mutation::SetByte { at, byte } => {
                if len > 0 {
                    bytes[usize::from(at) % len] = byte;
                }
            }
            Mutation::Insert { at, byte } => bytes.insert(usize::from(at) % (len + 1), byte),
            Mutation::Truncate { at } => bytes.truncate(usize::from(at) % (len + 1)),
            Mutation::FlipDecoded { segment, at, bit } => {
                let mut parts = segments();
                let i = usize::from(segment) % 3;
                if let Some(Ok(mut decoded)) = parts.get(i).map(|p| URL_SAFE_NO_PAD.decode(p)) {
                    if !decoded.is_empty() {
                        let at = usize::from(at) % decoded.len();
                        decoded[at] ^= 1 << (bit % 8);
                        parts[i] = b64(decoded);
                        return parts.join(".");
                    }
                }
            }
            Mutation::Splice { segment, from } => {
                let hints = hints();
                let donor = &hints[usize::from(from) % hints.len()].token;
                let mut parts = segments();
                let i = usize::from(segment) % 3;
                if let (Some(part), Some(new)) = (parts.get_mut(i), donor.split('.').nth(i)) {
                    *part = new.to_string();
                    return parts.join(".");
                }
            }
            Mutation::DropSegment { segment } => {
                let mut parts = segments();
                let i = usize::from(segment) % 3;
                if i < parts.len() {
                    parts.remove(i);
                }
                return parts.join(".");
            }
            Mutation::AppendSegment => return format!("{token}.e30"),
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Name {
    /// `NAMES[i % len]`.
    Vocab(u8),
    /// Written as is: it may hold `&`, `=`, `%`.
    Raw(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParamValue {
    /// `VALUES[i % len]`.
    Vocab(u8),
    /// Pre-signed hint `i % len`, mutated.
    Hint {
        index: u8,
        mutations: Vec<Mutation>,
    },
    /// A JWS over any header and payload text, with the signature of pre-signed hint
    /// `signature_from % len`: reaches the header and claims parsers without a valid key.
    Jws {
        header: String,
        payload: String,
        signature_from: u8,
    },
    Text(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// `application/x-www-form-urlencoded` as browsers write it.
    Form,
    /// Every byte as `%XX`, upper- or lower-case hex.
    PercentAll { lower: bool },
    /// The decoded value written as is (it may split into several pairs or fail to parse).
    Raw,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pair {
    pub name: Name,
    pub value: ParamValue,
    pub encoding: Encoding,
    /// Inserted before pair `at % (len + 1)` of the list built so far.
    pub at: u8,
}

/// Entra's auto-submitted form for one of the apps (README "How a request is handled").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntraBase {
    /// `CLIENT_ID`, `USGOV_CLIENT_ID`, `CHINA_CLIENT_ID` or an unknown client (`% 4`), with
    /// its cloud's redirect URI (the global one for the unknown client).
    pub app: u8,
    pub hint: u8,
    pub mutations: Vec<Mutation>,
    /// Bit `i` drops the `i`-th of Entra's ten parameters.
    pub drop: u16,
}

/// An authorize request built from the vocabulary above.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestModel {
    /// See [`policy`].
    pub policy: u16,
    pub post: bool,
    /// Index into the content types (`% len`; 5 is none).
    pub content_type: u8,
    /// Index into [`HEADS`] (`% len`; 0 is the plain request).
    pub head: u8,
    pub base: Option<EntraBase>,
    /// Added to the request's parameters (the body of a POST, the query of a GET).
    pub params: Vec<Pair>,
    /// The query of a POST (ignored for a GET).
    pub post_query: Option<Vec<Pair>>,
    /// Index into a list of clocks around `NOW` (`% len`).
    pub now: u8,
}

/// An owned authorize request, with the policy and clock to decide it with.
#[derive(Debug, Clone)]
pub struct BuiltRequest {
    pub policy: &'static Policy,
    pub method: Method,
    pub content_type: Field<'static>,
    pub content_encoding: Field<'static>,
    pub framing: Framing,
    pub query: Option<String>,
    pub body: Vec<u8>,
    pub now: u64,
}

impl BuiltRequest {
    pub fn as_request(&self) -> AuthorizeRequest<'_> {
        AuthorizeRequest {
            method: self.method,
            content_type: self.content_type,
            content_encoding: self.content_encoding,
            framing: self.framing,
            query: self.query.as_deref(),
            body: &self.body,
        }
    }

    /// Decides the request against the fixed key set and checks every invariant.
    pub fn check(&self) -> Ruling {
        let req = self.as_request();
        let out = self.policy.authorize(&req, keys(), self.now);
        super::check_decision_at(self.policy, &req, &out, self.now);
        out
    }
}

fn pick<T: Copy>(list: &[T], i: impl Into<usize>) -> T {
    list[i.into() % list.len()]
}

fn percent_all(value: &str, lower: bool) -> String {
    value
        .bytes()
        .map(|b| {
            if lower {
                format!("%{b:02x}")
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn form_encode(value: &str) -> String {
    form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

/// The ten parameters Entra POSTs, in its order, raw (form-encoded).
pub fn entra_pairs(client_id: &str, redirect_uri: &str, hint: &str) -> Vec<String> {
    [
        ("scope", "openid"),
        ("response_type", "id_token"),
        ("response_mode", "form_post"),
        ("client_id", client_id),
        ("redirect_uri", redirect_uri),
        ("claims", CLAIMS_PARAM),
        ("nonce", NONCE),
        ("state", STATE),
        ("client-request-id", CRID),
        ("id_token_hint", hint),
    ]
    .iter()
    .map(|(n, v)| format!("{n}={}", form_encode(v)))
    .collect()
}

/// Entra's form body for the global app with `hint`.
pub fn entra_body(hint: &str) -> String {
    entra_pairs(CLIENT_ID, GLOBAL_REDIRECT, hint).join("&")
}

impl Pair {
    fn render(&self) -> String {
        let name = match &self.name {
            Name::Vocab(i) => pick(NAMES, *i).to_string(),
            Name::Raw(raw) => raw.clone(),
        };
        let value = match &self.value {
            ParamValue::Vocab(i) => pick(VALUES, *i).to_string(),
            ParamValue::Hint { index, mutations } => mutated_hint(*index, mutations),
            ParamValue::Jws {
                header,
                payload,
                signature_from,
            } => {
                let donor = &hints()[usize::from(*signature_from) % hints().len()].token;
                let signature = donor.rsplit('.').next().unwrap_or_default();
                format!("{}.{}.{signature}", b64(header), b64(payload))
            }
            ParamValue::Text(text) => text.clone(),
        };
        let value = match self.encoding {
            Encoding::Form => form_encode(&value),
            Encoding::PercentAll { lower } => percent_all(&value, lower),
            Encoding::Raw => value,
        };
        format!("{name}={value}")
    }
}

fn mutated_hint(index: u8, mutations: &[Mutation]) -> String {
    let mut token = hints()[usize::from(index) % hints().len()].token.clone();
    for m in mutations {
        token = m.apply(&token);
    }
    token
}

fn insert_all(list: &mut Vec<String>, pairs: &[Pair]) {
    for pair in pairs {
        let at = usize::from(pair.at) % (list.len() + 1);
        list.insert(at, pair.render());
    }
}

impl RequestModel {
    pub fn build(&self) -> BuiltRequest {
        let mut main = match &self.base {
            Some(base) => {
                let (client_id, redirect_uri) = [
                    (CLIENT_ID, GLOBAL_REDIRECT),
                    (USGOV_CLIENT_ID, USGOV_REDIRECT),
                    (CHINA_CLIENT_ID, CHINA_REDIRECT),
                    ("other-client", GLOBAL_REDIRECT),
                ][usize::from(base.app % 4)];
                let hint = mutated_hint(base.hint, &base.mutations);
                entra_pairs(client_id, redirect_uri, &hint)
                    .into_iter()
                    .enumerate()
                    .filter(|(i, _)| base.drop & (1 << i) == 0)
                    .map(|(_, p)| p)
                    .collect()
            }
            None => Vec::new(),
        };
        insert_all(&mut main, &self.params);
        let main = main.join("&");
        let (method, query, body) = if self.post {
            let query = self.post_query.as_ref().map(|pairs| {
                let mut list = Vec::new();
                insert_all(&mut list, pairs);
                list.join("&")
            });
            (Method::Post, query, main.into_bytes())
        } else {
            (Method::Get, Some(main), Vec::new())
        };
        let content_type = if self.post {
            pick(CONTENT_TYPES, self.content_type)
        } else {
            None
        };
        BuiltRequest::new(
            shared_policy(self.policy),
            method,
            content_type,
            query,
            body,
        )
        .with_head(pick(HEADS, self.head))
        .at(pick(NOWS, self.now))
    }
}

/// How a request's head may differ from the plain GET or POST its method names: the facts of
/// `AuthorizeRequest` beyond the content type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Head {
    Plain,
    Encoding(&'static str),
    /// Two `Content-Encoding` lines (or an unreadable one).
    EncodingRepeated,
    /// Two `Content-Type` lines (or an unreadable one).
    ContentTypeRepeated,
    /// The method is neither GET nor POST.
    OtherMethod,
    /// Transfer-Encoding on HTTP/1, whether bytes came or not.
    Chunked,
    /// An HTTP/2 stream left open; for a GET, `Some` bytes arrived in DATA frames.
    Open(Option<&'static [u8]>),
    /// A Content-Length the body did not match (a GET's announced body, a POST's lie).
    Length(u64),
}

pub const HEADS: &[Head] = &[
    Head::Plain,
    Head::Encoding("identity"),
    Head::Encoding("deflate"),
    Head::Encoding("gzip"),
    Head::EncodingRepeated,
    Head::ContentTypeRepeated,
    Head::OtherMethod,
    Head::Chunked,
    Head::Open(None),
    Head::Open(Some(b"entra_sub=x")),
    Head::Length(1),
    Head::Length(1 << 20),
];

impl BuiltRequest {
    /// The plain request: a GET without a body, a POST framed by its body's length.
    pub fn new(
        policy: &'static Policy,
        method: Method,
        content_type: Option<&'static str>,
        query: Option<String>,
        body: Vec<u8>,
    ) -> BuiltRequest {
        BuiltRequest {
            policy,
            method,
            content_type: content_type.into(),
            content_encoding: Field::Absent,
            framing: match method {
                Method::Post => Framing::of_body(&body),
                _ => Framing::None,
            },
            query,
            body,
            now: NOW,
        }
    }

    pub fn at(mut self, now: u64) -> BuiltRequest {
        self.now = now;
        self
    }

    pub fn with_head(mut self, head: Head) -> BuiltRequest {
        match head {
            Head::Plain => {}
            Head::Encoding(coding) => self.content_encoding = Field::One(coding),
            Head::EncodingRepeated => self.content_encoding = Field::Ambiguous,
            Head::ContentTypeRepeated => self.content_type = Field::Ambiguous,
            Head::OtherMethod => self.method = Method::Other,
            Head::Chunked => self.framing = Framing::Chunked,
            Head::Open(bytes) => {
                self.framing = Framing::Open;
                if let (Method::Get, Some(bytes)) = (self.method, bytes) {
                    self.body = bytes.to_vec();
                }
            }
            Head::Length(n) => self.framing = Framing::Length(n),
        }
        self
    }
}

/// A request given as text, the format of the `authorize` fuzz target's seeds:
/// `<GET|POST> <policy variant> <clock index> <content-type index>[ <head index>]\n<query or
/// ->\n<body>`. `None` when the first two lines do not have that shape.
pub fn parse_raw_request(input: &[u8]) -> Option<BuiltRequest> {
    let mut lines = input.splitn(3, |b| *b == b'\n');
    let head = std::str::from_utf8(lines.next()?).ok()?;
    let query = std::str::from_utf8(lines.next()?).ok()?;
    let body = lines.next().unwrap_or_default();
    let mut words = head.split(' ');
    let method = match words.next()? {
        "GET" => Method::Get,
        "POST" => Method::Post,
        _ => return None,
    };
    let variant: u16 = words.next()?.parse().ok()?;
    let now: u8 = words.next()?.parse().ok()?;
    let content_type: u8 = words.next()?.parse().ok()?;
    let head: u8 = match words.next() {
        Some(word) => word.parse().ok()?,
        None => 0,
    };
    Some(
        BuiltRequest::new(
            shared_policy(variant),
            method,
            pick(CONTENT_TYPES, content_type),
            (query != "-").then(|| query.to_string()),
            body.to_vec(),
        )
        .with_head(pick(HEADS, head))
        .at(pick(NOWS, now)),
    )
}
