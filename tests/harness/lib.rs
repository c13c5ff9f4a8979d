//! Harness of the end-to-end tests: every test starts the real `eam-proxy` binary between a raw
//! socket client and a recording upstream, with Entra-shaped hints signed by fixture keys.
//!
//! Everything is std threads and std sockets on loopback: the tests need byte-level control of
//! what goes on the wire (chunked bodies, `Expect: 100-continue`, spoofed percent-encoded names),
//! which an HTTP client library would normalise away.

pub mod command;
pub mod drills;
pub mod entra;
pub mod hints;
pub mod html;
pub mod http;
pub mod keyserver;
pub mod ports;
pub mod proxy;
pub mod tempdir;
pub mod tls;
pub mod upstream;
pub mod verdict;

pub use entra::{
    assert_entra_rewrite, assert_forwarded, assert_sent_and_forwarded, parse_form, EntraRequest,
};
pub use hints::{default_jwks, microsoft_claims, now, sign, sign_hint, SigningKey};
pub use html::{parse_html_form, HtmlForm};
pub use http::{Request, Response};
pub use keyserver::KeyServer;
pub use ports::closed_port;
pub use proxy::{check_config, upstream_and_proxy, Keys, ProxyConfig, ProxyProcess};
pub use upstream::{Recorded, Reply, Upstream};
pub use verdict::Verdict;

/// The client_id the OP issued to Entra: the one `[[apps]]` of every test configuration.
pub const CLIENT_ID: &str = "56c2b5e3-c41d-4c14-abcf-72d407f57650";
/// The hint audience: the EAM app registration's Application ID, distinct from `CLIENT_ID`
/// as it often is in practice (README `[[apps]]`, `audiences`).
pub const AUDIENCE: &str = "600b719b-3766-4dc5-95a6-3c4a8dc31885";
/// Entra's redirect_uri in the global cloud: the only form_post target of the tests' apps.
pub const REDIRECT_URI: &str =
    "https://login.microsoftonline.com/common/federation/externalauthprovider";
/// The user's tenant (Microsoft's sample).
pub const TENANT_ID: &str = "14c2f153-90a7-4689-9db7-9543bf084dad";
/// A second tenant, pinned as the issuer of the `foreign` key in [`default_jwks`].
pub const OTHER_TENANT_ID: &str = "3b1c9e2a-5d4f-4e8a-9c7b-2f6e1d0a8b4c";
/// Microsoft-account tenant: never an Entra workforce user.
pub const MSA_TENANT_ID: &str = "9188040d-6c67-4c5b-b112-36a304b66dad";
pub const OID: &str = "951ddb04-b16d-45f3-bbf7-b0fa18fa7aee";
pub const SUB: &str = "mBfcvuhSHkDWVgV72x2ruIYdSsPSvcj2R0qfc6mGEAA";
pub const PREFERRED_USERNAME: &str = "testuser2@contoso.com";
pub const NAME: &str = "Test User 2";
/// Host header the raw client sends unless a test chooses another.
pub const DEFAULT_HOST: &str = "idp.example.test";

/// `tests/fixtures/...`
pub fn fixture(relative: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(relative)
}
