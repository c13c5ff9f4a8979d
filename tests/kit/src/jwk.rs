//! The test keys' public halves as JWKs, and JWKS documents of them.

use serde_json::{json, Value};

use crate::keys::{TestKey, SIGNER};

/// The issuer template Microsoft publishes on each of its keys.
pub const KEY_ISSUER: &str = "https://login.microsoftonline.com/{tenantid}/v2.0";

impl TestKey {
    /// The public key under `kid`, as `public.jwks.json` holds it: no `alg` and no `issuer`.
    pub fn public_jwk(&self, kid: &str) -> Value {
        json!({"kty": "RSA", "use": "sig", "kid": kid, "n": self.n(), "e": self.e()})
    }

    /// The public key under `kid` with Microsoft's issuer template, as Microsoft publishes it.
    pub fn jwk(&self, kid: &str) -> Value {
        self.jwk_with_issuer(kid, KEY_ISSUER)
    }

    /// The public key under `kid` with `issuer`, a template or a fixed issuer.
    pub fn jwk_with_issuer(&self, kid: &str, issuer: &str) -> Value {
        let mut jwk = self.public_jwk(kid);
        jwk["issuer"] = issuer.into();
        jwk
    }
}

/// A JWKS document holding `keys`.
pub fn jwks(keys: impl IntoIterator<Item = Value>) -> Value {
    json!({ "keys": keys.into_iter().collect::<Vec<_>>() })
}

/// The smallest Microsoft-shaped key set: [`SIGNER`] under its own `kid` with the issuer
/// template.
pub fn signer_jwks() -> String {
    jwks([SIGNER.jwk(SIGNER.kid)]).to_string()
}
