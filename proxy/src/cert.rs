//! `eam-proxy cert`: the self-signed certificate Entra wants in `x5c` for an OP signing key.
//!
//! As Connect2id's EAM guide describes it: issuer = subject = `CN=<IdP domain>`, RS256, for the
//! RSA key of a private JWK. The JWK's private parameters become a PKCS#8 key (openssl, which
//! Pingora already builds) that rcgen signs with; nothing secret is printed or logged.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use filters::x5c::Certificate;
use openssl::bn::BigNum;
use openssl::pkey::PKey;
use openssl::rsa::Rsa;
use rcgen::{
    CertificateParams, DistinguishedName, DnType, KeyPair, KeyUsagePurpose, SerialNumber,
    PKCS_RSA_SHA256,
};
use serde_json::{Map, Value};

/// Validity starts this long before `now`, so that a verifier whose clock lags accepts it.
const BACKDATE_SECONDS: u64 = 3600;

#[derive(Debug)]
pub struct CertError(String);

impl std::fmt::Display for CertError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CertError {}

fn fail(reason: impl Into<String>) -> CertError {
    CertError(reason.into())
}

/// The one JWK of a file holding a JWK, or a JWKS with exactly one key.
pub fn read_jwk(text: &str) -> Result<Map<String, Value>, CertError> {
    let doc: Value = serde_json::from_str(text).map_err(|e| fail(format!("not JSON: {e}")))?;
    let jwk = match doc.get("keys").and_then(Value::as_array) {
        Some(keys) if keys.len() == 1 => keys[0].clone(),
        Some(keys) => {
            return Err(fail(format!(
                "a key set with {} keys: give the one signing key as a JWK",
                keys.len()
            )))
        }
        None => doc,
    };
    jwk.as_object()
        .cloned()
        .ok_or_else(|| fail("not a JSON object"))
}

/// The RSA private key of `jwk` as PKCS#8 DER, after openssl's consistency check.
fn pkcs8_of(jwk: &Map<String, Value>) -> Result<Vec<u8>, CertError> {
    if jwk.get("kty").and_then(Value::as_str) != Some("RSA") {
        return Err(fail("the JWK is not an RSA key (kty must be RSA)"));
    }
    let member = |name: &str| -> Result<BigNum, CertError> {
        let raw = jwk.get(name).and_then(Value::as_str).ok_or_else(|| {
            fail(format!(
                "the JWK has no \"{name}\": a private RSA JWK (n, e, d, p, q, dp, dq, qi) is required"
            ))
        })?;
        let bytes = URL_SAFE_NO_PAD
            .decode(raw.trim_end_matches('='))
            .map_err(|_| fail(format!("the JWK's \"{name}\" is not base64url")))?;
        BigNum::from_slice(&bytes).map_err(|e| fail(format!("\"{name}\": {e}")))
    };
    let rsa = Rsa::from_private_components(
        member("n")?,
        member("e")?,
        member("d")?,
        member("p")?,
        member("q")?,
        member("dp")?,
        member("dq")?,
        member("qi")?,
    )
    .map_err(|e| fail(format!("not a usable RSA key: {e}")))?;
    if !rsa.check_key().unwrap_or(false) {
        return Err(fail(
            "the JWK's private parameters do not form a valid RSA key",
        ));
    }
    if rsa.size() < 256 {
        return Err(fail("the RSA key is shorter than 2048 bits"));
    }
    PKey::from_rsa(rsa)
        .and_then(|k| k.private_key_to_pkcs8())
        .map_err(|e| fail(format!("cannot encode the key: {e}")))
}

/// A self-signed certificate (PEM) for `jwk`'s key: subject = issuer = `CN=<cn>`, valid from
/// an hour before `now` for `days` days.
pub fn self_signed(
    jwk: &Map<String, Value>,
    cn: &str,
    days: u32,
    now: u64,
) -> Result<String, CertError> {
    if cn.trim().is_empty() {
        return Err(fail("--cn must not be empty"));
    }
    if days == 0 {
        return Err(fail("--days must be at least 1"));
    }
    let pkcs8 = pkcs8_of(jwk)?;
    let key = KeyPair::from_pkcs8_der_and_sign_algo(&pkcs8.as_slice().into(), &PKCS_RSA_SHA256)
        .map_err(|e| fail(format!("cannot load the key: {e}")))?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    params.distinguished_name = dn;
    let at = |secs: u64| {
        time::OffsetDateTime::from_unix_timestamp(secs as i64)
            .map_err(|_| fail("the validity window is out of range"))
    };
    params.not_before = at(now.saturating_sub(BACKDATE_SECONDS))?;
    params.not_after = at(now + u64::from(days) * 86_400)?;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    // A random serial: a renewed certificate for the same key must not reuse the old one.
    let mut serial: [u8; 16] = rand::random();
    serial[0] &= 0x7f;
    params.serial_number = Some(SerialNumber::from_slice(&serial));
    let cert = params
        .self_signed(&key)
        .map_err(|e| fail(format!("cannot make the certificate: {e}")))?;
    // What was made must be what the proxy and Entra will accept for this JWK.
    let parsed = Certificate::from_der(cert.der()).map_err(|e| fail(e.to_string()))?;
    if parsed.matches(jwk) != Ok(true) {
        return Err(fail("the certificate's key does not match the JWK"));
    }
    Ok(cert.pem())
}

#[cfg(test)]
mod tests {
    use super::*;
    use filters::x5c::Validity;

    fn private_jwk() -> Map<String, Value> {
        let rsa = Rsa::generate(2048).unwrap();
        let b64 = |n: &openssl::bn::BigNumRef| URL_SAFE_NO_PAD.encode(n.to_vec());
        let mut jwk = Map::new();
        jwk.insert("kty".into(), "RSA".into());
        jwk.insert("kid".into(), "op-1".into());
        for (name, value) in [
            ("n", b64(rsa.n())),
            ("e", b64(rsa.e())),
            ("d", b64(rsa.d())),
            ("p", b64(rsa.p().unwrap())),
            ("q", b64(rsa.q().unwrap())),
            ("dp", b64(rsa.dmp1().unwrap())),
            ("dq", b64(rsa.dmq1().unwrap())),
            ("qi", b64(rsa.iqmp().unwrap())),
        ] {
            jwk.insert(name.into(), value.into());
        }
        jwk
    }

    fn public_of(jwk: &Map<String, Value>) -> Map<String, Value> {
        jwk.iter()
            .filter(|(k, _)| ["kty", "kid", "n", "e"].contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    #[test]
    fn the_certificate_carries_the_public_jwk_and_is_self_issued() {
        let jwk = private_jwk();
        let now = 1_900_000_000;
        let pem = self_signed(&jwk, "idp.example.com", 365, now).unwrap();
        let certs = Certificate::from_pem(pem.as_bytes()).unwrap();
        assert_eq!(certs.len(), 1);
        let cert = &certs[0];
        assert_eq!(cert.matches(&public_of(&jwk)), Ok(true));
        assert!(cert.is_self_issued());
        assert_eq!(cert.subject(), "CN=idp.example.com");
        assert_eq!(cert.not_before(), now - BACKDATE_SECONDS);
        assert_eq!(cert.not_after(), now + 365 * 86_400);
        assert_eq!(cert.validity_at(now), Validity::Valid);
        // Serials are random: two certificates for one key differ.
        let again = self_signed(&jwk, "idp.example.com", 365, now).unwrap();
        assert_ne!(pem, again);
    }

    #[test]
    fn a_public_or_inconsistent_jwk_is_refused_without_echoing_it() {
        let jwk = private_jwk();
        let err = self_signed(&public_of(&jwk), "idp", 30, 0).unwrap_err();
        assert!(err.to_string().contains("no \"d\""), "{err}");
        let mut wrong = jwk.clone();
        wrong.insert("d".into(), private_jwk()["d"].clone());
        let err = self_signed(&wrong, "idp", 30, 0).unwrap_err().to_string();
        assert!(err.contains("valid RSA key"), "{err}");
        assert!(!err.contains(jwk["d"].as_str().unwrap()));
        let mut ec = jwk.clone();
        ec.insert("kty".into(), "EC".into());
        assert!(self_signed(&ec, "idp", 30, 0).is_err());
        assert!(self_signed(&jwk, " ", 30, 0).is_err());
        assert!(self_signed(&jwk, "idp", 0, 0).is_err());
    }

    #[test]
    fn a_jwk_file_may_hold_one_key_or_a_set_of_one() {
        let jwk = Value::Object(private_jwk());
        let one = read_jwk(&jwk.to_string()).unwrap();
        let set = read_jwk(&serde_json::json!({ "keys": [jwk.clone()] }).to_string()).unwrap();
        assert_eq!(one, set);
        let two = serde_json::json!({ "keys": [jwk.clone(), jwk] }).to_string();
        assert!(read_jwk(&two).unwrap_err().to_string().contains("2 keys"));
        assert!(read_jwk("[]").is_err());
    }
}
