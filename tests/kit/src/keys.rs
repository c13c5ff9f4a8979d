//! The test-only RSA keys of `tests/fixtures/keys` (its README says how they were made), compiled
//! in so that no test depends on its working directory.

use serde_json::Value;

/// One private key of the fixtures and the `kid` it has in `public.jwks.json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TestKey {
    pub kid: &'static str,
    /// PKCS#1 PEM.
    pub pem: &'static str,
}

/// Plays Microsoft's hint-signing key.
pub const SIGNER: TestKey = TestKey {
    kid: "signer",
    pem: include_str!("../../fixtures/keys/signer.pem"),
};

/// An attacker's key: what it signs must never be accepted.
pub const FOREIGN: TestKey = TestKey {
    kid: "foreign",
    pem: include_str!("../../fixtures/keys/foreign.pem"),
};

/// Both public keys as a JWKS document, each under its own `kid` (what anyone can download
/// from Microsoft).
pub const PUBLIC_JWKS: &str = include_str!("../../fixtures/keys/public.jwks.json");

impl TestKey {
    /// The modulus, base64url as in the JWK.
    pub fn n(&self) -> String {
        self.public_member("n")
    }

    /// The public exponent, base64url as in the JWK.
    pub fn e(&self) -> String {
        self.public_member("e")
    }

    fn public_member(&self, member: &str) -> String {
        let jwks: Value = serde_json::from_str(PUBLIC_JWKS).expect("public.jwks.json is JSON");
        jwks["keys"]
            .as_array()
            .and_then(|keys| keys.iter().find(|k| k["kid"] == self.kid))
            .and_then(|key| key[member].as_str())
            .unwrap_or_else(|| panic!("public.jwks.json has no {member} for {}", self.kid))
            .to_string()
    }
}
