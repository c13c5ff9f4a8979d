//! What the tests, benches and fuzz targets of eam-proxy share: the test keys, the public keys as
//! JWKs, Microsoft's sample hint claims, hint signing and Entra's authorize request.
//!
//! Plain values only (strings, `serde_json` values): nothing here knows the proxy's or the
//! filters' types, so every crate can use it, filters' own unit tests included.
//!
//! - [`keys`]: the RSA keys of `tests/fixtures/keys` ([`SIGNER`] plays Microsoft's hint-signing
//!   key, [`FOREIGN`] an attacker's);
//! - [`jwk`]: their public halves as JWKs and JWKS documents;
//! - [`claims`]: Microsoft's sample member-user payload and its identifiers;
//! - [`sign`]: hints and other JWSs signed with the keys;
//! - [`entra`]: Entra's authorize request (its apps, redirect URIs and form).

pub mod claims;
pub mod entra;
pub mod jwk;
pub mod keys;
pub mod sign;

pub use entra::EntraRequest;
pub use keys::{TestKey, FOREIGN, SIGNER};
pub use sign::Algorithm;
