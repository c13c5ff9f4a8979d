//! Validation of Entra's `id_token_hint` (README "How a request is handled", step 6).
//!
//! The JWS structure and header are inspected here so that every refusal has its own reason;
//! the RSA signature is checked by aws-lc with the key parsed once per key set (`keys.rs`).
//! Claims are read only after the signature holds, and only those the checks need (`jws.rs`).

use serde_json::{Map, Value};

use crate::error::AuthorizeError;
use crate::jws::{parse_object, Claims, CompactJws, Header, Member, SegmentBuf};
use crate::keys::{KeySet, VerifyingKey};
use crate::policy::{is_guid, AppPolicy, CloudPolicy, MSA_TENANT};

/// The identity of a hint that passed every check.
#[derive(Debug, Clone, PartialEq)]
pub struct HintIdentity {
    iss: String,
    pub(crate) tid: String,
    pub(crate) oid: String,
    pub(crate) sub: String,
    pub(crate) preferred_username: Option<String>,
    /// Every claim, when `HintValidator::all_claims` asked for them.
    all: Option<Map<String, Value>>,
}

impl HintIdentity {
    pub fn iss(&self) -> &str {
        &self.iss
    }
    pub fn tid(&self) -> &str {
        &self.tid
    }
    pub fn oid(&self) -> &str {
        &self.oid
    }
    pub fn sub(&self) -> &str {
        &self.sub
    }
    pub fn preferred_username(&self) -> Option<&str> {
        self.preferred_username.as_deref()
    }
    /// Any claim; `None` unless the validator kept all claims (`all_claims`).
    pub fn claim(&self, name: &str) -> Option<&Value> {
        self.all.as_ref()?.get(name)
    }
}

/// Checks hints for one app: its audiences, its cloud's issuer, its tenant rules.
pub struct HintValidator<'p> {
    pub app: &'p AppPolicy,
    pub cloud: &'p CloudPolicy,
    pub leeway_seconds: u64,
    /// The window of a hint that is not pre-expired ends at `exp + leeway`, not `iat + leeway`.
    pub until_exp: bool,
    pub max_stale_seconds: u64,
    /// Keep every claim for `HintIdentity::claim` (`authorize.extra_claims`); the checks
    /// themselves read only the claims they need.
    pub all_claims: bool,
}

/// Decoded sizes that Entra's hints fit on the stack (`SegmentBuf`): Microsoft's header is
/// about 100 bytes, its claims under a kilobyte, and an RS256 signature is the modulus's size,
/// 256 bytes for Microsoft's RSA-2048 keys. Larger segments (an RSA-8192 signature's estimate is
/// 1,026 bytes) are decoded on the heap, with the same result.
const HEADER_BYTES: usize = 512;
const PAYLOAD_BYTES: usize = 2048;
const SIGNATURE_BYTES: usize = 1024;

/// The `kid` a hint names, for a caller that must fetch keys it lacks. Nothing is verified.
pub fn kid_of(token: &str) -> Option<String> {
    let jws = CompactJws::split(token).ok()?;
    let mut buf = SegmentBuf::<HEADER_BYTES>::new();
    let header: Header = parse_object(buf.decode(jws.header)?)?;
    header.kid.as_str().map(str::to_string)
}

impl HintValidator<'_> {
    pub fn validate(
        &self,
        token: &str,
        keys: Option<&KeySet>,
        now: u64,
    ) -> Result<HintIdentity, AuthorizeError> {
        let jws = CompactJws::split(token)?;
        let mut header_buf = SegmentBuf::<HEADER_BYTES>::new();
        let header: Header = header_buf
            .decode(jws.header)
            .and_then(parse_object)
            .ok_or(AuthorizeError::MalformedToken)?;
        // Pin the algorithm before anything else: `none` and `HS256` (keyed with our public
        // key) are the classic forgeries. `jku`, `x5u`, `jwk` are deliberately never read.
        if header.alg.as_str() != Some("RS256") {
            return Err(AuthorizeError::AlgorithmNotAllowed);
        }
        // RFC 7515 §4.1.11: extensions we do not understand must not be ignored.
        if header.crit {
            return Err(AuthorizeError::MalformedToken);
        }
        let kid = header
            .kid
            .as_str()
            .filter(|k| !k.is_empty())
            .ok_or(AuthorizeError::MissingKid)?;

        let keys = keys
            .filter(|k| k.is_usable(now, self.max_stale_seconds))
            .ok_or(AuthorizeError::KeysUnavailable)?;
        let key = keys.get(kid).ok_or(AuthorizeError::UnknownKid)?;
        let mut signature_buf = SegmentBuf::<SIGNATURE_BYTES>::new();
        let signature = signature_buf
            .decode(jws.signature)
            .ok_or(AuthorizeError::BadSignature)?;
        key.key
            .verify_sig(jws.signing_input.as_bytes(), signature)
            .map_err(|_| AuthorizeError::BadSignature)?;

        let mut payload_buf = SegmentBuf::<PAYLOAD_BYTES>::new();
        let payload = payload_buf
            .decode(jws.payload)
            .ok_or(AuthorizeError::MalformedClaims)?;
        let claims: Claims = parse_object(payload).ok_or(AuthorizeError::MalformedClaims)?;
        let tid = self.check_tenant(&claims)?;
        let iss = self.check_issuer(&claims, tid, key)?;
        self.check_audience(&claims)?;
        self.check_time(&claims, now)?;
        let non_empty = |member: &Member, missing| match member.as_str() {
            Some(v) if !v.is_empty() => Ok(v.to_string()),
            _ => Err(missing),
        };
        let sub = non_empty(&claims.sub, AuthorizeError::MissingSubject)?;
        let oid = non_empty(&claims.oid, AuthorizeError::MissingObjectId)?;
        let all = if self.all_claims {
            let all =
                serde_json::from_slice(payload).map_err(|_| AuthorizeError::MalformedClaims)?;
            Some(all)
        } else {
            None
        };
        Ok(HintIdentity {
            iss: iss.to_string(),
            tid: tid.to_string(),
            oid,
            sub,
            preferred_username: claims.preferred_username.as_str().map(str::to_string),
            all,
        })
    }

    fn check_tenant<'c>(&self, claims: &'c Claims<'_>) -> Result<&'c str, AuthorizeError> {
        let tid = claims
            .tid
            .as_str()
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

    fn check_issuer<'c>(
        &self,
        claims: &'c Claims<'_>,
        tid: &str,
        key: &VerifyingKey,
    ) -> Result<&'c str, AuthorizeError> {
        let iss = claims
            .iss
            .as_str()
            .filter(|iss| self.cloud.issued_by_cloud(tid, iss))
            .ok_or(AuthorizeError::IssuerMismatch)?;
        // Microsoft's sets mix clouds and the MSA tenant: a key may only sign for its own issuer.
        match key.signs_for(tid, iss) {
            Some(false) => Err(AuthorizeError::KeyIssuerMismatch),
            _ => Ok(iss),
        }
    }

    fn check_audience(&self, claims: &Claims<'_>) -> Result<(), AuthorizeError> {
        let accepted = |aud: &str| self.app.audiences.iter().any(|a| a == aud);
        let ok = match &claims.aud {
            Member::Str(aud) => accepted(aud),
            Member::Strings(auds) => auds.iter().any(|aud| accepted(aud)),
            _ => false,
        };
        if ok {
            Ok(())
        } else {
            Err(AuthorizeError::AudienceMismatch)
        }
    }

    /// `iat - L <= now`, `nbf - L <= now`, `now <= iat + L`. Microsoft issues its hints
    /// pre-expired (`exp < iat`) so that they serve for nothing else: a Microsoft-signed token
    /// with a later `exp` (an ordinary id_token for the same app) gets no longer window, unless
    /// `until_exp` restores `now <= max(exp, iat) + L`. `exp` must still be present.
    fn check_time(&self, claims: &Claims<'_>, now: u64) -> Result<(), AuthorizeError> {
        let iat = numeric_date(&claims.iat)?.ok_or(AuthorizeError::MissingTimeClaim)?;
        let exp = numeric_date(&claims.exp)?.ok_or(AuthorizeError::MissingTimeClaim)?;
        let nbf = numeric_date(&claims.nbf)?;
        let now = i128::from(now);
        let leeway = i128::from(self.leeway_seconds);
        // Fractions round against the token: up for the start of the window, down for its end.
        if iat.ceil - leeway > now || nbf.is_some_and(|nbf| nbf.ceil - leeway > now) {
            return Err(AuthorizeError::NotYetValid);
        }
        let end = if self.until_exp {
            exp.floor.max(iat.floor)
        } else {
            iat.floor
        };
        if now > end + leeway {
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
fn numeric_date(member: &Member<'_>) -> Result<Option<NumericDate>, AuthorizeError> {
    match member {
        Member::Absent => Ok(None),
        Member::Int(i) => {
            let secs = i128::from(*i);
            Ok(Some(NumericDate {
                floor: secs,
                ceil: secs,
            }))
        }
        Member::Float(f) if f.is_finite() => {
            let whole = |v: f64| v.clamp(i64::MIN as f64, i64::MAX as f64) as i128;
            Ok(Some(NumericDate {
                floor: whole(f.floor()),
                ceil: whole(f.ceil()),
            }))
        }
        _ => Err(AuthorizeError::MalformedClaims),
    }
}
