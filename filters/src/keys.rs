//! Parsed signing-key sets (JWKS). Parsing only: fetching and refreshing belong to `proxy`.

use std::collections::HashMap;
use std::sync::Arc;

use aws_lc_rs::signature::{ParsedPublicKey, RSA_PKCS1_2048_8192_SHA256};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use pkcs1::der::Encode;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::policy::fills_template;

/// RSA moduli below this are refused: Microsoft uses 2048-bit keys and aws-lc rejects less anyway.
const MIN_MODULUS_BITS: usize = 2048;

/// One usable verification key, parsed once when the set is loaded rather than (with its
/// Montgomery context) per verification (docs/BENCHMARKS.md).
#[derive(Clone)]
pub struct VerifyingKey {
    /// Bound to RS256 (PKCS#1 v1.5, SHA-256, 2048..8192-bit moduli): the only algorithm a key
    /// can verify, whatever a token's header says.
    pub(crate) key: ParsedPublicKey,
    /// Microsoft's per-key issuer template, e.g. `https://login.microsoftonline.com/{tenantid}/v2.0`.
    pub issuer: Option<String>,
}

impl std::fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyingKey")
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

impl VerifyingKey {
    /// The issuer this key is allowed to sign for, given the token's tenant.
    /// `None` when the key names no issuer, else whether `iss` is its template with the
    /// tenant in place of `{tenantid}` (or `{tid}`).
    pub fn signs_for(&self, tid: &str, iss: &str) -> Option<bool> {
        let template = self.issuer.as_deref()?;
        Some(fills_template(template, &["{tenantid}", "{tid}"], tid, iss))
    }
}

/// The keys of one cloud, indexed by `kid`, with the time they were last obtained.
#[derive(Debug, Clone)]
pub struct KeySet {
    keys: HashMap<String, VerifyingKey>,
    /// Unix seconds of the last successful load; the basis of staleness.
    pub loaded_at: u64,
    /// Entries that were present but not kept (wrong type, use, size or shape).
    pub skipped: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySetError {
    /// Not JSON, or no `keys` array.
    NotAJwks(String),
    /// A well-formed set with no usable RSA signing key: refusing it keeps the last good set.
    NoUsableKeys { skipped: usize },
}

impl std::fmt::Display for KeySetError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeySetError::NotAJwks(why) => write!(f, "not a JWKS document: {why}"),
            KeySetError::NoUsableKeys { skipped } => {
                write!(f, "no usable RSA signing key ({skipped} entries skipped)")
            }
        }
    }
}

impl std::error::Error for KeySetError {}

#[derive(Deserialize)]
struct Jwks {
    keys: Vec<Value>,
}

/// The members of a JWK the proxy reads, read one way for Microsoft's keys and for the OP's
/// (x5c injection); everything else in a JWK is ignored.
#[derive(Debug, Clone, Copy, Default)]
pub struct Jwk<'a> {
    pub kty: Option<&'a str>,
    pub use_: Option<&'a str>,
    pub alg: Option<&'a str>,
    pub kid: Option<&'a str>,
    pub n: Option<&'a str>,
    pub e: Option<&'a str>,
    /// Microsoft's per-key issuer template.
    pub issuer: Option<&'a str>,
}

impl<'a> Jwk<'a> {
    /// `None` when a member it reads is there but not a string: such a key is not used.
    pub fn read(jwk: &'a Map<String, Value>) -> Option<Jwk<'a>> {
        let member = |name: &str| match jwk.get(name) {
            None => Some(None),
            Some(Value::String(s)) => Some(Some(s.as_str())),
            Some(_) => None,
        };
        Some(Jwk {
            kty: member("kty")?,
            use_: member("use")?,
            alg: member("alg")?,
            kid: member("kid")?,
            n: member("n")?,
            e: member("e")?,
            issuer: member("issuer")?,
        })
    }

    pub fn is_rsa(&self) -> bool {
        self.kty == Some("RSA")
    }

    /// A key for RS256 signatures: `use` absent or `sig`, and `alg` (optional in Microsoft's
    /// sets) absent or `RS256`.
    pub fn is_rs256_signing_key(&self) -> bool {
        self.is_rsa()
            && self.use_.is_none_or(|u| u == "sig")
            && self.alg.is_none_or(|a| a == "RS256")
    }

    /// `n` and `e` as big-endian integers without leading zero bytes; `None` when either is
    /// missing, not base64url (padding tolerated) or zero.
    pub fn rsa_numbers(&self) -> Option<(Vec<u8>, Vec<u8>)> {
        let number = |b64: Option<&str>| {
            let bytes = URL_SAFE_NO_PAD.decode(b64?.trim_end_matches('=')).ok()?;
            let first = bytes.iter().position(|&b| b != 0)?;
            Some(bytes[first..].to_vec())
        };
        Some((number(self.n)?, number(self.e)?))
    }
}

impl KeySet {
    /// Parses a JWKS document, keeping RSA keys whose `use` is absent or `sig`.
    /// The first key of a repeated `kid` wins.
    pub fn from_jwks(json: &[u8], loaded_at: u64) -> Result<KeySet, KeySetError> {
        let jwks: Jwks =
            serde_json::from_slice(json).map_err(|e| KeySetError::NotAJwks(e.to_string()))?;
        let total = jwks.keys.len();
        let mut keys = HashMap::with_capacity(total);
        for value in &jwks.keys {
            let Some((kid, key)) = value
                .as_object()
                .and_then(Jwk::read)
                .and_then(|jwk| usable_rsa_key(&jwk))
            else {
                continue;
            };
            keys.entry(kid).or_insert(key);
        }
        let skipped = total - keys.len();
        if keys.is_empty() {
            return Err(KeySetError::NoUsableKeys { skipped });
        }
        Ok(KeySet {
            keys,
            loaded_at,
            skipped,
        })
    }

    pub fn get(&self, kid: &str) -> Option<&VerifyingKey> {
        self.keys.get(kid)
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn kids(&self) -> impl Iterator<Item = &str> {
        self.keys.keys().map(String::as_str)
    }

    /// README "How a request is handled", step 8, and README `[jwks]`: a set older than `max_stale_seconds` must not be used.
    pub fn is_usable(&self, now: u64, max_stale_seconds: u64) -> bool {
        now.saturating_sub(self.loaded_at) <= max_stale_seconds
    }

    pub fn age(&self, now: u64) -> u64 {
        now.saturating_sub(self.loaded_at)
    }
}

fn usable_rsa_key(jwk: &Jwk<'_>) -> Option<(String, VerifyingKey)> {
    if !jwk.is_rs256_signing_key() {
        return None;
    }
    let kid = jwk.kid.filter(|k| !k.is_empty())?.to_string();
    let (n, e) = jwk.rsa_numbers()?;
    // Whole bytes: aws-lc refuses a modulus still below 2048 bits when it parses the key.
    if n.len() * 8 < MIN_MODULUS_BITS {
        return None;
    }
    let der = pkcs1::RsaPublicKey {
        modulus: pkcs1::UintRef::new(&n).ok()?,
        public_exponent: pkcs1::UintRef::new(&e).ok()?,
    }
    .to_der()
    .ok()?;
    let key = ParsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, der).ok()?;
    Some((
        kid,
        VerifyingKey {
            key,
            issuer: jwk.issuer.map(str::to_string),
        },
    ))
}

/// Where the request logic finds the key set of a cloud. Implementations never do I/O:
/// `None` means "no set loaded", and the caller answers `temporarily_unavailable`.
pub trait KeyLookup {
    fn key_set(&self, cloud: &str) -> Option<Arc<KeySet>>;
}

impl KeyLookup for HashMap<String, Arc<KeySet>> {
    fn key_set(&self, cloud: &str) -> Option<Arc<KeySet>> {
        self.get(cloud).cloned()
    }
}

#[cfg(test)]
mod tests {
    use testkit::jwk::signer_jwks;
    use testkit::{FOREIGN, SIGNER};

    use super::*;

    #[test]
    fn keeps_rsa_signing_keys_only() {
        let n = SIGNER.n();
        let e = SIGNER.e();
        let doc = serde_json::json!({"keys": [
            {"kty":"RSA","kid":"plain","n":n,"e":e},
            {"kty":"RSA","kid":"sig","use":"sig","n":n,"e":e,"issuer":"https://login.microsoftonline.com/{tenantid}/v2.0"},
            {"kty":"RSA","kid":"enc","use":"enc","n":n,"e":e},
            {"kty":"RSA","kid":"ps","alg":"PS256","n":n,"e":e},
            {"kty":"EC","kid":"ec","crv":"P-256","x":"AA","y":"AA"},
            {"kty":"RSA","kid":"small","n":"AQAB","e":e},
            {"kty":"RSA","kid":"badb64","n":"!!!","e":e},
            {"kty":"RSA","n":n,"e":e},
            {"kty":"RSA","kid":"","n":n,"e":e},
            {"kty":"RSA","kid":"plain","n":FOREIGN.n(),"e":e},
            "not an object"
        ]});
        let set = KeySet::from_jwks(doc.to_string().as_bytes(), 7).unwrap();
        let mut kids: Vec<_> = set.kids().collect();
        kids.sort();
        assert_eq!(kids, ["plain", "sig"]);
        assert_eq!(set.skipped, 9);
        assert_eq!(set.loaded_at, 7);
        let sig = set.get("sig").unwrap();
        assert_eq!(
            sig.signs_for("abc", "https://login.microsoftonline.com/abc/v2.0"),
            Some(true)
        );
        assert_eq!(
            sig.signs_for("abc", "https://login.microsoftonline.com/xyz/v2.0"),
            Some(false)
        );
        assert_eq!(set.get("plain").unwrap().signs_for("abc", "any"), None);
    }

    #[test]
    fn refuses_documents_without_usable_keys() {
        assert!(matches!(
            KeySet::from_jwks(b"<html>", 0),
            Err(KeySetError::NotAJwks(_))
        ));
        assert!(matches!(
            KeySet::from_jwks(b"{\"keys\":{}}", 0),
            Err(KeySetError::NotAJwks(_))
        ));
        assert_eq!(
            KeySet::from_jwks(b"{\"keys\":[]}", 0).unwrap_err(),
            KeySetError::NoUsableKeys { skipped: 0 }
        );
        assert_eq!(
            KeySet::from_jwks(b"{\"keys\":[{\"kty\":\"oct\",\"k\":\"AA\"}]}", 0).unwrap_err(),
            KeySetError::NoUsableKeys { skipped: 1 }
        );
    }

    #[test]
    fn staleness_boundary() {
        let set = KeySet::from_jwks(signer_jwks().as_bytes(), 1_000).unwrap();
        assert!(set.is_usable(1_000, 0));
        assert!(set.is_usable(1_600, 600));
        assert!(!set.is_usable(1_601, 600));
        assert!(
            set.is_usable(900, 0),
            "a clock step back does not make keys stale"
        );
    }
}
