//! Harness of the end-to-end tests: every test starts the real `eam-proxy` binary between a raw
//! socket client and a recording upstream, with Entra-shaped hints signed by fixture keys.
//!
//! Everything is std threads and std sockets on loopback: the tests need byte-level control of
//! what goes on the wire (chunked bodies, `Expect: 100-continue`, spoofed percent-encoded names),
//! which an HTTP client library would normalise away.

pub mod command;
pub mod drills;
pub mod entra;
pub mod exclusive;
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
pub use hints::{default_jwks, microsoft_claims, now, sign_hint};
pub use html::{parse_html_form, HtmlForm};
pub use http::{Request, Response};
pub use keyserver::KeyServer;
pub use ports::closed_port;
pub use proxy::{check_config, upstream_and_proxy, Keys, ProxyConfig, ProxyProcess};
pub use testkit::claims::{APP_REGISTRATION, NAME, OID, SUB, USERNAME};
pub use testkit::entra::{CLIENT_ID, GLOBAL_REDIRECT};
pub use testkit::{TestKey, FOREIGN, SIGNER};
pub use upstream::{Recorded, Reply, Upstream};
pub use verdict::Verdict;

/// The user's tenant: the `tid` Microsoft's published sample names, which the kit keeps apart
/// from the tenant of the sample's `iss` so that a mismatch can be tested.
pub const TENANT_ID: &str = testkit::claims::OTHER_TID;
/// A second tenant, pinned as the issuer of the `foreign` key in [`default_jwks`].
pub const OTHER_TENANT_ID: &str = "3b1c9e2a-5d4f-4e8a-9c7b-2f6e1d0a8b4c";
/// Microsoft-account tenant: never an Entra workforce user.
pub const MSA_TENANT_ID: &str = "9188040d-6c67-4c5b-b112-36a304b66dad";
/// Host header the raw client sends unless a test chooses another.
pub const DEFAULT_HOST: &str = "idp.example.test";
