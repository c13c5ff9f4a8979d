//! Hints and other compact JWSs signed with the test keys.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
pub use jsonwebtoken::Algorithm;
use jsonwebtoken::{EncodingKey, Header};
use serde_json::Value;

use crate::keys::TestKey;

impl TestKey {
    /// `claims` signed RS256 under Entra's header, `{"typ":"JWT","alg":"RS256","kid":kid}` in
    /// that order.
    pub fn sign(&self, kid: &str, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(kid.to_string());
        jsonwebtoken::encode(&header, claims, &self.encoding_key()).expect("sign with a test key")
    }

    /// The signature segment over `signing_input` (`header.payload`) with any RSA `alg`, for
    /// headers and payloads [`TestKey::sign`] would never write.
    pub fn signature(&self, signing_input: &str, alg: Algorithm) -> String {
        jsonwebtoken::crypto::sign(signing_input.as_bytes(), &self.encoding_key(), alg)
            .expect("sign with a test key")
    }

    /// A compact JWS over `header` and any `payload` text, signed with `alg`.
    pub fn jws(&self, alg: Algorithm, header: &Value, payload: &str) -> String {
        let input = signing_input(header, payload);
        let signature = self.signature(&input, alg);
        format!("{input}.{signature}")
    }

    fn encoding_key(&self) -> EncodingKey {
        EncodingKey::from_rsa_pem(self.pem.as_bytes()).expect("a test key is an RSA PEM")
    }
}

/// base64url without padding, the encoding of every JWS segment.
pub fn b64(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// `header.payload`, each base64url-encoded: the bytes a JWS signs.
pub fn signing_input(header: &Value, payload: &str) -> String {
    format!("{}.{}", b64(header.to_string()), b64(payload))
}

/// The HS256 signature segment over `signing_input` keyed with `secret`: the key-confusion
/// forgery when the secret is public key material.
pub fn hs256(signing_input: &str, secret: &[u8]) -> String {
    let key = EncodingKey::from_secret(secret);
    jsonwebtoken::crypto::sign(signing_input.as_bytes(), &key, Algorithm::HS256)
        .expect("HMAC accepts any secret")
}

#[cfg(test)]
mod tests {
    use jsonwebtoken::DecodingKey;
    use serde_json::json;

    use super::*;
    use crate::{FOREIGN, SIGNER};

    #[test]
    fn a_hint_has_entras_header_and_verifies_with_its_own_key_only() {
        let token = SIGNER.sign(SIGNER.kid, &json!({"sub": "x"}));
        let (input, signature) = token.rsplit_once('.').unwrap();
        let header = URL_SAFE_NO_PAD.decode(input.split('.').next().unwrap());
        assert_eq!(
            header.unwrap(),
            br#"{"typ":"JWT","alg":"RS256","kid":"signer"}"#
        );
        let verifies = |key: &TestKey| {
            let public = DecodingKey::from_rsa_components(&key.n(), &key.e()).unwrap();
            jsonwebtoken::crypto::verify(signature, input.as_bytes(), &public, Algorithm::RS256)
                .unwrap()
        };
        assert!(verifies(&SIGNER));
        assert!(!verifies(&FOREIGN));
    }
}
