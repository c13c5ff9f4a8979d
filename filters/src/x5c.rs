//! Certificates for the OP's signing keys (`x5c`), free of I/O.
//!
//! Entra refuses an OP key set whose RSA keys carry no `x5c`, and most OPs cannot publish one.
//! This module decides whether a certificate belongs to a JWK (same RSA modulus and exponent,
//! compared as integers so that a leading zero byte in either encoding does not matter), adds
//! `x5c` and `x5t#S256` to matching keys of a JWKS document, and judges a certificate the way
//! the doctor reports it (self-issued, validity window against a given `now`).

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use x509_cert::der::asn1::ObjectIdentifier;
use x509_cert::der::{Decode, Encode};

use crate::keys::Jwk;

/// A certificate ending within this many seconds of `now` is reported as a warning.
pub const EXPIRY_WARNING_SECONDS: u64 = 30 * 24 * 3600;

/// rsaEncryption (RFC 8017).
const RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");

/// Why a certificate, a JWK or a key-set document could not be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum X5cError {
    /// Not a DER X.509 certificate (or bad PEM / base64 around it).
    MalformedCertificate,
    /// A PEM input without any certificate.
    NoCertificate,
    /// The certificate's public key is not RSA.
    CertificateNotRsa,
    /// The JWK is not `kty = RSA`.
    JwkNotRsa,
    /// The JWK's `n` or `e` is missing or not base64url.
    MalformedJwk,
    /// The key-set document is not a JSON object with a `keys` array.
    InvalidBody,
}

impl X5cError {
    /// Stable name for logs and metrics.
    pub fn reason(self) -> &'static str {
        match self {
            X5cError::MalformedCertificate => "malformed_certificate",
            X5cError::NoCertificate => "no_certificate",
            X5cError::CertificateNotRsa => "certificate_not_rsa",
            X5cError::JwkNotRsa => "jwk_not_rsa",
            X5cError::MalformedJwk => "malformed_jwk",
            X5cError::InvalidBody => "invalid_body",
        }
    }
}

impl std::fmt::Display for X5cError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            X5cError::MalformedCertificate => "not a valid X.509 certificate",
            X5cError::NoCertificate => "no certificate found",
            X5cError::CertificateNotRsa => "the certificate's public key is not RSA",
            X5cError::JwkNotRsa => "the JWK is not an RSA key",
            X5cError::MalformedJwk => "the JWK's n or e is missing or not base64url",
            X5cError::InvalidBody => "not a JSON key set with a keys array",
        })
    }
}

impl std::error::Error for X5cError {}

/// An RSA public key as two big-endian integers without leading zero bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RsaPublic {
    n: Vec<u8>,
    e: Vec<u8>,
}

impl RsaPublic {
    fn new(n: &[u8], e: &[u8]) -> RsaPublic {
        let strip = |b: &[u8]| {
            let first = b.iter().position(|&x| x != 0).unwrap_or(b.len());
            b[first..].to_vec()
        };
        RsaPublic {
            n: strip(n),
            e: strip(e),
        }
    }

    /// `n` and `e` of an RSA JWK (`keys::Jwk`). The signing-key rule is not applied: a
    /// certificate whose key it is decides that the key gets `x5c`.
    pub fn from_jwk(jwk: &Map<String, Value>) -> Result<RsaPublic, X5cError> {
        let jwk = Jwk::read(jwk).ok_or(X5cError::MalformedJwk)?;
        if !jwk.is_rsa() {
            return Err(X5cError::JwkNotRsa);
        }
        let (n, e) = jwk.rsa_numbers().ok_or(X5cError::MalformedJwk)?;
        Ok(RsaPublic::new(&n, &e))
    }

    /// Modulus size in bits.
    pub fn bits(&self) -> usize {
        self.n
            .first()
            .map_or(0, |b| self.n.len() * 8 - b.leading_zeros() as usize)
    }
}

/// One parsed certificate: what the checks need, and its DER for `x5c`.
#[derive(Debug, Clone)]
pub struct Certificate {
    der: Vec<u8>,
    key: RsaPublic,
    issuer: Vec<u8>,
    subject: Vec<u8>,
    subject_text: String,
    not_before: u64,
    not_after: u64,
}

impl Certificate {
    pub fn from_der(der: &[u8]) -> Result<Certificate, X5cError> {
        let cert =
            x509_cert::Certificate::from_der(der).map_err(|_| X5cError::MalformedCertificate)?;
        Certificate::from_parsed(&cert, der.to_vec())
    }

    /// Every certificate of a PEM file, in file order (leaf first for a chain). Other PEM
    /// blocks (a stray key) and text between blocks are ignored.
    pub fn from_pem(pem: &[u8]) -> Result<Vec<Certificate>, X5cError> {
        let blocks = pem::parse_many(pem).map_err(|_| X5cError::MalformedCertificate)?;
        let certs: Vec<Certificate> = blocks
            .iter()
            .filter(|b| b.tag() == "CERTIFICATE")
            .map(|b| Certificate::from_der(b.contents()))
            .collect::<Result<_, _>>()?;
        if certs.is_empty() {
            return Err(X5cError::NoCertificate);
        }
        Ok(certs)
    }

    fn from_parsed(cert: &x509_cert::Certificate, der: Vec<u8>) -> Result<Certificate, X5cError> {
        let tbs = &cert.tbs_certificate;
        let spki = &tbs.subject_public_key_info;
        if spki.algorithm.oid != RSA_ENCRYPTION {
            return Err(X5cError::CertificateNotRsa);
        }
        let bits = spki
            .subject_public_key
            .as_bytes()
            .ok_or(X5cError::MalformedCertificate)?;
        let rsa =
            pkcs1::RsaPublicKey::from_der(bits).map_err(|_| X5cError::MalformedCertificate)?;
        let name =
            |n: &x509_cert::name::Name| n.to_der().map_err(|_| X5cError::MalformedCertificate);
        Ok(Certificate {
            key: RsaPublic::new(rsa.modulus.as_bytes(), rsa.public_exponent.as_bytes()),
            issuer: name(&tbs.issuer)?,
            subject: name(&tbs.subject)?,
            subject_text: tbs.subject.to_string(),
            not_before: tbs.validity.not_before.to_unix_duration().as_secs(),
            not_after: tbs.validity.not_after.to_unix_duration().as_secs(),
            der,
        })
    }

    pub fn der(&self) -> &[u8] {
        &self.der
    }

    pub fn public_key(&self) -> &RsaPublic {
        &self.key
    }

    /// The subject DN, RFC 4514 style (for messages).
    pub fn subject(&self) -> &str {
        &self.subject_text
    }

    /// Issuer DN = subject DN, compared as encoded (what Entra's guide asks of the OP's cert).
    pub fn is_self_issued(&self) -> bool {
        self.issuer == self.subject
    }

    pub fn not_before(&self) -> u64 {
        self.not_before
    }

    pub fn not_after(&self) -> u64 {
        self.not_after
    }

    /// `x5t#S256`: base64url SHA-256 of the DER.
    pub fn thumbprint_s256(&self) -> String {
        URL_SAFE_NO_PAD.encode(Sha256::digest(&self.der))
    }

    /// Whether the certificate carries exactly the JWK's key.
    pub fn matches(&self, jwk: &Map<String, Value>) -> Result<bool, X5cError> {
        Ok(RsaPublic::from_jwk(jwk)? == self.key)
    }

    /// The validity window judged at `now`.
    pub fn validity_at(&self, now: u64) -> Validity {
        if now < self.not_before {
            Validity::NotYetValid
        } else if now > self.not_after {
            Validity::Expired
        } else if self.not_after - now < EXPIRY_WARNING_SECONDS {
            Validity::EndsSoon {
                days_left: (self.not_after - now) / 86_400,
            }
        } else {
            Validity::Valid
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Validity {
    Valid,
    /// Valid now, but not for the next 30 days.
    EndsSoon {
        days_left: u64,
    },
    NotYetValid,
    Expired,
}

/// A key-set member the injection looks at: RSA, meant for signatures (`use` absent or `sig`).
pub fn is_rsa_signing_key(jwk: &Map<String, Value>) -> bool {
    jwk.get("kty").and_then(Value::as_str) == Some("RSA")
        && jwk
            .get("use")
            .is_none_or(|u| u.as_str().is_some_and(|u| u == "sig"))
}

/// Adds `x5c` (standard base64 DER, leaf first) and `x5t#S256` (of the leaf) to `jwk`.
pub fn attach(jwk: &mut Map<String, Value>, chain: &[Certificate]) {
    let Some(leaf) = chain.first() else { return };
    let x5c = chain
        .iter()
        .map(|c| Value::String(STANDARD.encode(&c.der)))
        .collect();
    jwk.insert("x5c".into(), Value::Array(x5c));
    jwk.insert("x5t#S256".into(), Value::String(leaf.thumbprint_s256()));
}

/// What happened to one RSA signing key of the document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyOutcome {
    /// A configured certificate matched: `x5c` and `x5t#S256` were added.
    Injected,
    /// The key already had `x5c`: the OP's own certificate is left alone.
    Present,
    /// No configured certificate carries this key (or its `n`/`e` are unreadable).
    NoMatch,
}

impl KeyOutcome {
    pub fn as_str(&self) -> &'static str {
        match self {
            KeyOutcome::Injected => "injected",
            KeyOutcome::Present => "present",
            KeyOutcome::NoMatch => "no_match",
        }
    }
}

/// The result of [`inject`]: the new body (`None` when nothing changed, so the original bytes
/// go out untouched) and one `(kid, outcome)` per RSA signing key.
#[derive(Debug)]
pub struct Injection {
    pub body: Option<Vec<u8>>,
    pub keys: Vec<(String, KeyOutcome)>,
}

/// Adds `x5c` to every RSA signing key of `body` (a JWKS document) that one of `chains`
/// (each leaf first) carries. Other members and other keys are kept as they are.
pub fn inject(body: &[u8], chains: &[Vec<Certificate>]) -> Result<Injection, X5cError> {
    let mut doc: Value = serde_json::from_slice(body).map_err(|_| X5cError::InvalidBody)?;
    let keys = doc
        .get_mut("keys")
        .and_then(Value::as_array_mut)
        .ok_or(X5cError::InvalidBody)?;
    let mut outcomes = Vec::new();
    for key in keys.iter_mut().filter_map(Value::as_object_mut) {
        if !is_rsa_signing_key(key) {
            continue;
        }
        let kid = key
            .get("kid")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let outcome = if key.contains_key("x5c") {
            KeyOutcome::Present
        } else {
            let jwk_key = RsaPublic::from_jwk(key).ok();
            let chain = chains
                .iter()
                .find(|chain| chain.first().map(Certificate::public_key) == jwk_key.as_ref());
            match chain {
                Some(chain) => {
                    attach(key, chain);
                    KeyOutcome::Injected
                }
                None => KeyOutcome::NoMatch,
            }
        };
        outcomes.push((kid, outcome));
    }
    let changed = outcomes.iter().any(|(_, o)| *o == KeyOutcome::Injected);
    let body = if changed {
        Some(serde_json::to_vec(&doc).map_err(|_| X5cError::InvalidBody)?)
    } else {
        None
    };
    Ok(Injection {
        body,
        keys: outcomes,
    })
}

#[cfg(test)]
#[path = "x5c_tests.rs"]
mod tests;
