//! Entra-shaped `id_token_hint`s signed by the fixture keys, and the key sets that verify them.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

use crate::{fixture, AUDIENCE, NAME, OID, OTHER_TENANT_ID, PREFERRED_USERNAME, SUB, TENANT_ID};

/// Microsoft's issuer template as its JWKS carries it on each key.
pub const KEY_ISSUER_TEMPLATE: &str = "https://login.microsoftonline.com/{tenantid}/v2.0";

/// The fixture private keys. `Signer` plays Microsoft's key; `Foreign` is an attacker's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SigningKey {
    Signer,
    Foreign,
}

impl SigningKey {
    fn pem_path(self) -> std::path::PathBuf {
        fixture(match self {
            SigningKey::Signer => "keys/signer.pem",
            SigningKey::Foreign => "keys/foreign.pem",
        })
    }
}

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// The global cloud's issuer for a tenant.
pub fn issuer(tid: &str) -> String {
    format!("https://login.microsoftonline.com/{tid}/v2.0")
}

/// Claims shaped like Microsoft's sample hint, issued now and, like the real ones, already
/// expired (`exp = iat - 1`).
pub fn microsoft_claims() -> Value {
    let now = now();
    json!({
        "ver": "2.0",
        "iss": issuer(TENANT_ID),
        "sub": SUB,
        "aud": AUDIENCE,
        "exp": now - 1,
        "iat": now,
        "nbf": now,
        "name": NAME,
        "preferred_username": PREFERRED_USERNAME,
        "oid": OID,
        "tid": TENANT_ID,
    })
}

/// RS256 with header `{"typ":"JWT","alg":"RS256","kid":kid}`, Entra's exact header shape.
pub fn sign(key: SigningKey, kid: &str, claims: &Value) -> String {
    let path = key.pem_path();
    let pem =
        std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let key = EncodingKey::from_rsa_pem(&pem)
        .unwrap_or_else(|e| panic!("{} is not an RSA key: {e}", path.display()));
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(kid.to_string());
    encode(&header, claims, &key).expect("sign the hint")
}

/// A hint the proxy must accept: signed by `Signer` under its own kid.
pub fn sign_hint(claims: &Value) -> String {
    sign(SigningKey::Signer, "signer", claims)
}

/// HS256 keyed with `secret`: the algorithm-confusion attack when `secret` is public key material.
pub fn sign_hs256(secret: &[u8], kid: &str, claims: &Value) -> String {
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(kid.to_string());
    encode(&header, claims, &EncodingKey::from_secret(secret)).expect("sign the hint")
}

/// `alg: none` with an empty signature.
pub fn unsigned(kid: &str, claims: &Value) -> String {
    let header = json!({"typ": "JWT", "alg": "none", "kid": kid});
    format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    )
}

/// The public JWK of a fixture key, as in `fixtures/keys/public.jwks.json` (no `alg`, like
/// Microsoft's).
pub fn public_jwk(kid: &str) -> Value {
    let path = fixture("keys/public.jwks.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let jwks: Value = serde_json::from_str(&text).expect("public.jwks.json is JSON");
    jwks["keys"]
        .as_array()
        .and_then(|keys| keys.iter().find(|k| k["kid"] == kid))
        .cloned()
        .unwrap_or_else(|| panic!("no key {kid:?} in {}", path.display()))
}

/// A public JWK carrying an `issuer` (template or fixed).
pub fn jwk_with_issuer(kid: &str, issuer: &str) -> Value {
    let mut jwk = public_jwk(kid);
    jwk["issuer"] = Value::String(issuer.to_string());
    jwk
}

/// The key set of most tests: `signer` with Microsoft's `{tenantid}` template, and `foreign`
/// pinned to [`OTHER_TENANT_ID`], so that a hint it signs for another tenant fails the key's
/// issuer check.
pub fn default_jwks() -> Value {
    json!({
        "keys": [
            jwk_with_issuer("signer", KEY_ISSUER_TEMPLATE),
            jwk_with_issuer("foreign", &issuer(OTHER_TENANT_ID)),
        ]
    })
}

/// A self-signed certificate for the `signer` fixture key with subject and issuer `CN=<cn>`, as
/// `eam-proxy cert` makes it for an OP key: written to `dir` as PEM; returns the file and DER.
pub fn signer_certificate(
    dir: &crate::tempdir::TempDir,
    cn: &str,
) -> (std::path::PathBuf, Vec<u8>) {
    let pem = std::fs::read_to_string(crate::fixture("keys/signer.pem")).unwrap();
    let key = rcgen::KeyPair::from_pem(&pem).unwrap();
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
