use rcgen::{CertificateParams, DistinguishedName, DnType, Issuer, KeyPair};
use serde_json::json;
use testkit::{FOREIGN, SIGNER};

use super::*;

const DAY: u64 = 86_400;
/// 2030-01-01T00:00:00Z: the start of every generated certificate.
const START: i64 = 1_893_456_000;

fn key_pair(pem: &str) -> KeyPair {
    KeyPair::from_pem(pem).unwrap()
}

fn params(cn: &str, days: u64) -> CertificateParams {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    params.distinguished_name = dn;
    params.not_before = time::OffsetDateTime::from_unix_timestamp(START).unwrap();
    params.not_after =
        time::OffsetDateTime::from_unix_timestamp(START + (days * DAY) as i64).unwrap();
    params
}

/// A self-signed certificate for `pem`'s key, valid `days` from [`START`].
fn self_signed(pem: &str, days: u64) -> Certificate {
    let cert = params("idp.example.com", days)
        .self_signed(&key_pair(pem))
        .unwrap();
    Certificate::from_der(cert.der()).unwrap()
}

fn jwk(kid: &str, n: &str, e: &str) -> Map<String, Value> {
    json!({"kty": "RSA", "use": "sig", "kid": kid, "n": n, "e": e})
        .as_object()
        .unwrap()
        .clone()
}

fn signer_jwk() -> Map<String, Value> {
    jwk("op-1", &SIGNER.n(), &SIGNER.e())
}

#[test]
fn the_certificate_of_a_jwk_matches_it_and_no_other() {
    let cert = self_signed(SIGNER.pem, 365);
    assert_eq!(cert.matches(&signer_jwk()), Ok(true));
    assert_eq!(
        cert.matches(&jwk("x", &FOREIGN.n(), &FOREIGN.e())),
        Ok(false)
    );
    // Same modulus, another exponent: not the same key.
    assert_eq!(cert.matches(&jwk("x", &SIGNER.n(), "Aw")), Ok(false));
    assert_eq!(cert.public_key().bits(), 2048);
}

#[test]
fn integers_are_compared_not_encodings() {
    let cert = self_signed(SIGNER.pem, 365);
    // A leading zero byte in n (some encoders add the DER sign byte) and in e.
    let mut n = vec![0u8];
    n.extend(URL_SAFE_NO_PAD.decode(SIGNER.n()).unwrap());
    let padded_n = URL_SAFE_NO_PAD.encode(&n);
    let padded_e = URL_SAFE_NO_PAD.encode([0u8, 1, 0, 1]);
    assert_eq!(cert.matches(&jwk("x", &padded_n, &padded_e)), Ok(true));
}

#[test]
fn malformed_jwks_and_certificates_have_stable_reasons() {
    let cert = self_signed(SIGNER.pem, 365);
    let mut ec = signer_jwk();
    ec.insert("kty".into(), json!("EC"));
    assert_eq!(cert.matches(&ec), Err(X5cError::JwkNotRsa));
    let mut no_n = signer_jwk();
    no_n.remove("n");
    assert_eq!(cert.matches(&no_n), Err(X5cError::MalformedJwk));
    let bad_e = jwk("x", &SIGNER.n(), "not base64!");
    assert_eq!(cert.matches(&bad_e), Err(X5cError::MalformedJwk));
    assert_eq!(
        Certificate::from_der(b"\x30\x03\x02\x01\x01")
            .unwrap_err()
            .reason(),
        "malformed_certificate"
    );
    assert_eq!(
        Certificate::from_pem(b"").unwrap_err(),
        X5cError::NoCertificate
    );
    assert_eq!(
        Certificate::from_pem(b"no pem here").unwrap_err(),
        X5cError::NoCertificate
    );
    let not_der = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
    assert_eq!(
        Certificate::from_pem(not_der).unwrap_err(),
        X5cError::MalformedCertificate
    );
    let mut broken = cert.der().to_vec();
    broken.truncate(broken.len() - 10);
    assert_eq!(
        Certificate::from_der(&broken).unwrap_err(),
        X5cError::MalformedCertificate
    );
}

#[test]
fn an_ec_certificate_is_not_rsa() {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let cert = params("ec", 30).self_signed(&key).unwrap();
    assert_eq!(
        Certificate::from_der(cert.der()).unwrap_err(),
        X5cError::CertificateNotRsa
    );
}

#[test]
fn pem_files_give_every_certificate_in_order() {
    let leaf = params("idp.example.com", 365)
        .self_signed(&key_pair(SIGNER.pem))
        .unwrap();
    let other = params("other", 365)
        .self_signed(&key_pair(FOREIGN.pem))
        .unwrap();
    let pem = format!("{}{}", leaf.pem(), other.pem());
    let chain = Certificate::from_pem(pem.as_bytes()).unwrap();
    assert_eq!(chain.len(), 2);
    assert_eq!(chain[0].der(), leaf.der().as_ref());
    assert_eq!(chain[1].der(), other.der().as_ref());
    assert_eq!(chain[0].subject(), "CN=idp.example.com");
}

#[test]
fn self_issued_means_issuer_dn_equals_subject_dn() {
    assert!(self_signed(SIGNER.pem, 365).is_self_issued());
    let ca_key = key_pair(FOREIGN.pem);
    let ca = Issuer::new(params("Some CA", 3650), ca_key);
    let leaf = params("idp.example.com", 365)
        .signed_by(&key_pair(SIGNER.pem), &ca)
        .unwrap();
    let leaf = Certificate::from_der(leaf.der()).unwrap();
    assert!(!leaf.is_self_issued());
    // Still the signer's key: the match is about the key, the DN rule is a separate check.
    assert_eq!(leaf.matches(&signer_jwk()), Ok(true));
}

#[test]
fn validity_is_judged_against_now() {
    let cert = self_signed(SIGNER.pem, 100);
    let start = START as u64;
    assert_eq!(cert.not_before(), start);
    assert_eq!(cert.not_after(), start + 100 * DAY);
    assert_eq!(cert.validity_at(start - 1), Validity::NotYetValid);
    assert_eq!(cert.validity_at(start), Validity::Valid);
    assert_eq!(cert.validity_at(start + 70 * DAY), Validity::Valid);
    assert_eq!(
        cert.validity_at(start + 71 * DAY),
        Validity::EndsSoon { days_left: 29 }
    );
    assert_eq!(
        cert.validity_at(start + 100 * DAY),
        Validity::EndsSoon { days_left: 0 }
    );
    assert_eq!(cert.validity_at(start + 100 * DAY + 1), Validity::Expired);
}

#[test]
fn attach_adds_standard_base64_chain_and_s256_thumbprint() {
    let cert = self_signed(SIGNER.pem, 365);
    let mut key = signer_jwk();
    attach(&mut key, std::slice::from_ref(&cert));
    let x5c = key["x5c"].as_array().unwrap();
    assert_eq!(x5c.len(), 1);
    assert_eq!(
        STANDARD.decode(x5c[0].as_str().unwrap()).unwrap(),
        cert.der()
    );
    let expected = URL_SAFE_NO_PAD.encode(Sha256::digest(cert.der()));
    assert_eq!(key["x5t#S256"], json!(expected));
    assert_eq!(key["kid"], json!("op-1"), "other members are kept");
}

#[test]
fn inject_adds_x5c_to_matching_keys_only() {
    let signer = self_signed(SIGNER.pem, 365);
    let doc = json!({"keys": [
        signer_jwk(),
        jwk("other", &FOREIGN.n(), &FOREIGN.e()),
        {"kty": "RSA", "use": "enc", "kid": "enc", "n": SIGNER.n(), "e": SIGNER.e()},
        {"kty": "EC", "kid": "ec", "crv": "P-256", "x": "AA", "y": "AA"},
    ], "extra": true});
    let result = inject(doc.to_string().as_bytes(), &[vec![signer.clone()]]).unwrap();
    assert_eq!(
        result.keys,
        vec![
            ("op-1".to_string(), KeyOutcome::Injected),
            ("other".to_string(), KeyOutcome::NoMatch),
        ]
    );
    let out: Value = serde_json::from_slice(&result.body.unwrap()).unwrap();
    let keys = out["keys"].as_array().unwrap();
    assert_eq!(keys[0]["x5c"][0], json!(STANDARD.encode(signer.der())));
    assert_eq!(keys[0]["x5t#S256"], json!(signer.thumbprint_s256()));
    assert!(keys[1].get("x5c").is_none(), "no certificate for this key");
    assert!(
        keys[2].get("x5c").is_none(),
        "encryption keys are left alone"
    );
    assert_eq!(keys[3], doc["keys"][3]);
    assert_eq!(out["extra"], json!(true));
}

#[test]
fn inject_leaves_an_unchanged_document_byte_for_byte() {
    let foreign = self_signed(FOREIGN.pem, 365);
    let body = json!({"keys": [signer_jwk()]}).to_string();
    let result = inject(body.as_bytes(), &[vec![foreign]]).unwrap();
    assert_eq!(result.body, None);
    assert_eq!(result.keys, vec![("op-1".to_string(), KeyOutcome::NoMatch)]);
}

#[test]
fn inject_keeps_the_ops_own_x5c() {
    let signer = self_signed(SIGNER.pem, 365);
    let mut key = signer_jwk();
    key.insert("x5c".into(), json!(["MIIB"]));
    let body = json!({"keys": [key]}).to_string();
    let result = inject(body.as_bytes(), &[vec![signer]]).unwrap();
    assert_eq!(result.body, None);
    assert_eq!(result.keys, vec![("op-1".to_string(), KeyOutcome::Present)]);
}

#[test]
fn inject_refuses_what_is_not_a_key_set() {
    let certs = [vec![self_signed(SIGNER.pem, 365)]];
    for body in [&b"not json"[..], b"[]", b"{\"keys\": {}}", b"{}"] {
        assert_eq!(inject(body, &certs).unwrap_err(), X5cError::InvalidBody);
    }
}

mod hostile_input {
    use proptest::collection::vec;
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// Certificate bytes from a key set (doctor) or a file never panic the parser.
        #[test]
        fn any_bytes_are_a_certificate_or_an_error(der in vec(any::<u8>(), 0..512)) {
            let _ = Certificate::from_der(&der);
        }

        /// Whatever the upstream sends on a key-set path, injection never panics, and a new
        /// body, when there is one, is JSON.
        #[test]
        fn any_key_set_body_is_rewritten_or_left_alone(
            body in prop_oneof![
                vec(any::<u8>(), 0..256),
                "[{}\\[\\]\",:a-z0-9 ]{0,200}".prop_map(String::into_bytes),
            ]
        ) {
            let certs = [vec![self_signed(SIGNER.pem, 365)]];
            if let Ok(result) = inject(&body, &certs) {
                if let Some(new) = result.body {
                    prop_assert!(serde_json::from_slice::<Value>(&new).is_ok());
                }
            }
        }
    }
}
