//! Validation of Entra's `id_token_hint` (SPEC §3.6).
//!
//! The JWS structure and header are inspected here so that every refusal has its own reason;
//! the RSA signature itself is checked by `jsonwebtoken`. Claims are read only after the
//! signature holds.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{Map, Value};

use crate::error::AuthorizeError;
use crate::keys::KeySet;
use crate::policy::{is_guid, AppPolicy, CloudPolicy, MSA_TENANT};

/// The claims of a hint that passed every check.
#[derive(Debug, Clone, PartialEq)]
pub struct HintIdentity {
    claims: Map<String, Value>,
}

impl HintIdentity {
    fn str_claim(&self, name: &str) -> Option<&str> {
        self.claims.get(name).and_then(Value::as_str)
    }

    // The accessors below cannot fail: `HintValidator` checked these claims are strings.
    pub fn iss(&self) -> &str {
        self.str_claim("iss").unwrap_or_default()
    }
    pub fn tid(&self) -> &str {
        self.str_claim("tid").unwrap_or_default()
    }
    pub fn oid(&self) -> &str {
        self.str_claim("oid").unwrap_or_default()
    }
    pub fn sub(&self) -> &str {
        self.str_claim("sub").unwrap_or_default()
    }
    pub fn preferred_username(&self) -> Option<&str> {
        self.str_claim("preferred_username")
    }
    pub fn claim(&self, name: &str) -> Option<&Value> {
        self.claims.get(name)
    }
}

/// Checks hints for one app: its audiences, its cloud's issuer, its tenant rules.
pub struct HintValidator<'p> {
    pub app: &'p AppPolicy,
    pub cloud: &'p CloudPolicy,
    pub leeway_seconds: u64,
    pub max_stale_seconds: u64,
}

/// The three segments of a compact JWS, before any check of their content.
struct CompactJws<'t> {
    signing_input: &'t str,
    header: &'t str,
    payload: &'t str,
    signature: &'t str,
}

impl<'t> CompactJws<'t> {
    fn split(token: &'t str) -> Result<Self, AuthorizeError> {
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(AuthorizeError::MalformedToken);
        };
        if header.is_empty() || payload.is_empty() || signature.is_empty() {
            return Err(AuthorizeError::MalformedToken);
        }
        Ok(CompactJws {
            signing_input: &token[..header.len() + 1 + payload.len()],
            header,
            payload,
            signature,
        })
    }
}

fn decode_json_object(segment: &str) -> Option<Map<String, Value>> {
    let bytes = URL_SAFE_NO_PAD.decode(segment).ok()?;
    match serde_json::from_slice(&bytes).ok()? {
        Value::Object(map) => Some(map),
        _ => None,
    }
}

/// The `kid` a hint names, for a caller that must fetch keys it lacks. Nothing is verified.
pub fn kid_of(token: &str) -> Option<String> {
    let jws = CompactJws::split(token).ok()?;
    let header = decode_json_object(jws.header)?;
    header.get("kid")?.as_str().map(str::to_string)
}

impl HintValidator<'_> {
    pub fn validate(
        &self,
        token: &str,
        keys: Option<&KeySet>,
        now: u64,
    ) -> Result<HintIdentity, AuthorizeError> {
        let jws = CompactJws::split(token)?;
        let header = decode_json_object(jws.header).ok_or(AuthorizeError::MalformedToken)?;
        // Pin the algorithm before anything else: `none` and `HS256` (keyed with our public
        // key) are the classic forgeries. `jku`, `x5u`, `jwk` are deliberately never read.
        if header.get("alg").and_then(Value::as_str) != Some("RS256") {
            return Err(AuthorizeError::AlgorithmNotAllowed);
        }
        // RFC 7515 §4.1.11: extensions we do not understand must not be ignored.
        if header.contains_key("crit") {
            return Err(AuthorizeError::MalformedToken);
        }
        let kid = header
            .get("kid")
            .and_then(Value::as_str)
            .filter(|k| !k.is_empty())
            .ok_or(AuthorizeError::MissingKid)?;

        let keys = keys
            .filter(|k| k.is_usable(now, self.max_stale_seconds))
            .ok_or(AuthorizeError::KeysUnavailable)?;
        let key = keys.get(kid).ok_or(AuthorizeError::UnknownKid)?;
        let signature = URL_SAFE_NO_PAD
            .decode(jws.signature)
            .map_err(|_| AuthorizeError::BadSignature)?;
        key.key
            .verify_sig(jws.signing_input.as_bytes(), &signature)
            .map_err(|_| AuthorizeError::BadSignature)?;

        let claims = decode_json_object(jws.payload).ok_or(AuthorizeError::MalformedClaims)?;
        let tid = self.check_tenant(&claims)?;
        self.check_issuer(&claims, tid, key.issuer_for(tid))?;
        self.check_audience(&claims)?;
        self.check_time(&claims, now)?;
        for (name, missing) in [
            ("sub", AuthorizeError::MissingSubject),
            ("oid", AuthorizeError::MissingObjectId),
        ] {
            match claims.get(name).and_then(Value::as_str) {
                Some(v) if !v.is_empty() => {}
                _ => return Err(missing),
            }
        }
        Ok(HintIdentity { claims })
    }

    fn check_tenant<'c>(&self, claims: &'c Map<String, Value>) -> Result<&'c str, AuthorizeError> {
        let tid = claims
            .get("tid")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .ok_or(AuthorizeError::MissingTenant)?;
        if !is_guid(tid) {
            return Err(AuthorizeError::InvalidTenant);
        }
        if tid.eq_ignore_ascii_case(MSA_TENANT) && !self.app.allow_msa_tenant {
            return Err(AuthorizeError::MsaTenant);
        }
        let allowed = &self.app.allowed_tenants;
        if !allowed.is_empty() && !allowed.iter().any(|t| t.eq_ignore_ascii_case(tid)) {
            return Err(AuthorizeError::TenantNotAllowed);
        }
        Ok(tid)
    }

    fn check_issuer(
        &self,
        claims: &Map<String, Value>,
        tid: &str,
        key_issuer: Option<String>,
    ) -> Result<(), AuthorizeError> {
        let iss = claims.get("iss").and_then(Value::as_str);
        if iss != Some(self.cloud.expected_issuer(tid).as_str()) {
            return Err(AuthorizeError::IssuerMismatch);
        }
        // Microsoft's sets mix clouds and the MSA tenant: a key may only sign for its own issuer.
        match key_issuer {
            Some(expected) if iss != Some(expected.as_str()) => {
                Err(AuthorizeError::KeyIssuerMismatch)
            }
            _ => Ok(()),
        }
    }

    fn check_audience(&self, claims: &Map<String, Value>) -> Result<(), AuthorizeError> {
        let accepted = |aud: &str| self.app.audiences.iter().any(|a| a == aud);
        let ok = match claims.get("aud") {
            Some(Value::String(aud)) => accepted(aud),
            Some(Value::Array(auds)) => auds.iter().filter_map(Value::as_str).any(accepted),
            _ => false,
        };
        if ok {
            Ok(())
        } else {
            Err(AuthorizeError::AudienceMismatch)
        }
    }

    /// `iat - L <= now`, `nbf - L <= now`, `now <= max(exp, iat) + L`: Microsoft issues hints
    /// with `exp < iat`, so the window is anchored on whichever of the two is later.
    fn check_time(&self, claims: &Map<String, Value>, now: u64) -> Result<(), AuthorizeError> {
        let iat = numeric_date(claims, "iat")?.ok_or(AuthorizeError::MissingTimeClaim)?;
        let exp = numeric_date(claims, "exp")?.ok_or(AuthorizeError::MissingTimeClaim)?;
        let nbf = numeric_date(claims, "nbf")?;
        let now = i128::from(now);
        let leeway = i128::from(self.leeway_seconds);
        // Fractions round against the token: up for the start of the window, down for its end.
        if iat.ceil - leeway > now || nbf.is_some_and(|nbf| nbf.ceil - leeway > now) {
            return Err(AuthorizeError::NotYetValid);
        }
        if now > exp.floor.max(iat.floor) + leeway {
            return Err(AuthorizeError::Expired);
        }
        Ok(())
    }
}

/// A NumericDate claim, which may be fractional, bracketed by whole seconds.
#[derive(Debug, Clone, Copy)]
struct NumericDate {
    floor: i128,
    ceil: i128,
}

/// `Ok(None)` when absent, an error when not a number. Values are clamped to the i64 range so
/// no signed claim can overflow the window arithmetic.
fn numeric_date(
    claims: &Map<String, Value>,
    name: &str,
) -> Result<Option<NumericDate>, AuthorizeError> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::Number(n)) => {
            if let Some(i) = n.as_i64() {
                let secs = i128::from(i);
                return Ok(Some(NumericDate {
                    floor: secs,
                    ceil: secs,
                }));
            }
            let f = n
                .as_f64()
                .filter(|f| f.is_finite())
                .ok_or(AuthorizeError::MalformedClaims)?;
            let whole = |v: f64| v.clamp(i64::MIN as f64, i64::MAX as f64) as i128;
            Ok(Some(NumericDate {
                floor: whole(f.floor()),
                ceil: whole(f.ceil()),
            }))
        }
        Some(_) => Err(AuthorizeError::MalformedClaims),
    }
}
