//! Test keys shared by the unit tests (fixtures under `tests/fixtures/keys`).

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::Value;

use crate::keys::KeySet;

pub struct TestKey {
    pub kid: &'static str,
    pem: &'static str,
}

pub const SIGNER: TestKey = TestKey {
    kid: "signer",
    pem: include_str!("../../tests/fixtures/keys/signer.pem"),
};
pub const FOREIGN: TestKey = TestKey {
    kid: "foreign",
    pem: include_str!("../../tests/fixtures/keys/foreign.pem"),
};
/// Both public keys, as a JWKS document (what an attacker can download from Microsoft).
pub const PUBLIC_JWKS: &str = include_str!("../../tests/fixtures/keys/public.jwks.json");

/// The issuer template Microsoft publishes on each key.
pub const KEY_ISSUER: &str = "https://login.microsoftonline.com/{tenantid}/v2.0";

impl TestKey {
    fn public_member(&self, member: &str) -> String {
        let jwks: Value = serde_json::from_str(PUBLIC_JWKS).unwrap();
        let key = jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["kid"] == self.kid)
            .unwrap();
        key[member].as_str().unwrap().to_string()
    }
    pub fn n(&self) -> String {
        self.public_member("n")
    }
    pub fn e(&self) -> String {
        self.public_member("e")
    }
    /// The public key as a JWK with Microsoft's `issuer` template, under `kid`.
    pub fn jwk(&self, kid: &str) -> Value {
        serde_json::json!({"kty":"RSA","use":"sig","kid":kid,"n":self.n(),"e":self.e(),"issuer":KEY_ISSUER})
    }
    /// RS256-signs `claims` with this key, under header `kid`.
    pub fn sign(&self, kid: &str, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(kid.to_string());
        header.typ = Some("JWT".into());
        jsonwebtoken::encode(&header, claims, &self.encoding_key()).unwrap()
    }
    /// The signature segment over `signing_input` (`header.payload`) with any RSA `alg`, so that
    /// tests can sign headers and payloads `sign` would never produce.
    pub fn signature(&self, signing_input: &str, alg: Algorithm) -> String {
        jsonwebtoken::crypto::sign(signing_input.as_bytes(), &self.encoding_key(), alg).unwrap()
    }
    fn encoding_key(&self) -> EncodingKey {
        EncodingKey::from_rsa_pem(self.pem.as_bytes()).unwrap()
    }
}

/// A key set holding `SIGNER` under its own kid.
pub fn key_set(loaded_at: u64) -> KeySet {
    let doc = serde_json::json!({"keys": [SIGNER.jwk(SIGNER.kid)]});
    KeySet::from_jwks(doc.to_string().as_bytes(), loaded_at).unwrap()
}
