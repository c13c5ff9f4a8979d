//! Microsoft's sample member-user hint (README "7. Rewrite and forward", its example) and the
//! identifiers in it.

use serde_json::{json, Map, Value};

/// The fixed clock of the tests that need one: the sample hints are issued at it.
pub const NOW: u64 = 1_750_000_000;
/// The sample's `aud`: the Entra app registration's Application ID.
pub const APP_REGISTRATION: &str = "600b719b-3766-4dc5-95a6-3c4a8dc31885";
/// The sample's tenant (its `tid`, and the tenant in its `iss`).
pub const TID: &str = "9122040d-6c67-4c5b-b112-36a304b66dad";
/// A second tenant: the one the published sample names in `tid`, apart from its `iss`.
pub const OTHER_TID: &str = "14c2f153-90a7-4689-9db7-9543bf084dad";
pub const SUB: &str = "mBfcvuhSHkDWVgV72x2ruIYdSsPSvcj2R0qfc6mGEAA";
pub const OID: &str = "951ddb04-b16d-45f3-bbf7-b0fa18fa7aee";
pub const USERNAME: &str = "testuser2@contoso.com";
pub const NAME: &str = "Test User 2";

/// The host of the global cloud's issuer.
pub const GLOBAL_HOST: &str = "login.microsoftonline.com";

/// A cloud's v2.0 issuer for tenant `tid`.
pub fn issuer(host: &str, tid: &str) -> String {
    format!("https://{host}/{tid}/v2.0")
}

/// The sample payload for audience `aud`, issued at `iat` and, like the real ones, already
/// expired (`exp = iat - 1`).
pub fn sample(aud: &str, iat: u64) -> Map<String, Value> {
    let Value::Object(claims) = json!({
        "ver": "2.0",
        "iss": issuer(GLOBAL_HOST, TID),
        "sub": SUB,
        "aud": aud,
        "exp": iat - 1,
        "iat": iat,
        "nbf": iat,
        "name": NAME,
        "preferred_username": USERNAME,
        "oid": OID,
        "tid": TID,
    }) else {
        unreachable!("a JSON object literal")
    };
    claims
}

/// Moves `claims` to tenant `tid`, with the global issuer that goes with it.
pub fn set_tenant(claims: &mut Map<String, Value>, tid: &str) {
    claims.insert("iss".into(), issuer(GLOBAL_HOST, tid).into());
    claims.insert("tid".into(), tid.into());
}
