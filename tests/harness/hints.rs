//! Entra-shaped `id_token_hint`s signed by the kit's keys, and the key sets that verify them.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use testkit::claims::{sample, set_tenant, GLOBAL_HOST};
use testkit::jwk::jwks;
use testkit::sign::{hs256, signing_input};
use testkit::{FOREIGN, SIGNER};

use crate::{APP_REGISTRATION, OTHER_TENANT_ID, TENANT_ID};

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// The global cloud's issuer for a tenant.
pub fn issuer(tid: &str) -> String {
    testkit::claims::issuer(GLOBAL_HOST, tid)
}

/// Microsoft's sample hint claims for the tests' user ([`TENANT_ID`]), issued now: the proxy
/// under test checks them against the real clock, not the kit's fixed one.
pub fn microsoft_claims() -> Value {
    let mut claims = sample(APP_REGISTRATION, now());
    set_tenant(&mut claims, TENANT_ID);
    Value::Object(claims)
}

/// A hint the proxy must accept: signed by [`SIGNER`] under its own kid.
pub fn sign_hint(claims: &Value) -> String {
    SIGNER.sign(SIGNER.kid, claims)
}

/// HS256 keyed with `secret`: the algorithm-confusion attack when `secret` is public key material.
pub fn sign_hs256(secret: &[u8], kid: &str, claims: &Value) -> String {
    let header = json!({"typ": "JWT", "alg": "HS256", "kid": kid});
    let input = signing_input(&header, &claims.to_string());
    format!("{input}.{}", hs256(&input, secret))
}

/// `alg: none` with an empty signature.
pub fn unsigned(kid: &str, claims: &Value) -> String {
    let header = json!({"typ": "JWT", "alg": "none", "kid": kid});
    format!("{}.", signing_input(&header, &claims.to_string()))
}

/// The key set of most tests: `signer` with Microsoft's `{tenantid}` template, and `foreign`
/// pinned to [`OTHER_TENANT_ID`], so that a hint it signs for another tenant fails the key's
/// issuer check.
pub fn default_jwks() -> Value {
    jwks([
        SIGNER.jwk(SIGNER.kid),
        FOREIGN.jwk_with_issuer(FOREIGN.kid, &issuer(OTHER_TENANT_ID)),
    ])
}

/// A self-signed certificate for [`SIGNER`] with subject and issuer `CN=<cn>`, as
/// `eam-proxy cert` makes it for an OP key: written to `dir` as PEM; returns the file and DER.
pub fn signer_certificate(
    dir: &crate::tempdir::TempDir,
    cn: &str,
) -> (std::path::PathBuf, Vec<u8>) {
    let key = rcgen::KeyPair::from_pem(SIGNER.pem).unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, cn);
    let cert = params.self_signed(&key).unwrap();
    (
        dir.write("op-signing.pem", &cert.pem()),
        cert.der().to_vec(),
    )
}
