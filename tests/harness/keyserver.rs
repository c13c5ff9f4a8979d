//! A loopback key server standing in for `login.microsoftonline.com/.../discovery/v2.0/keys`.

use std::sync::{Arc, Mutex};

use serde_json::Value;

use crate::upstream::{Reply, Upstream};

pub const KEYS_PATH: &str = "/keys";

/// Serves a JWKS at [`KEYS_PATH`]; the set can be swapped while the proxy runs (key rotation).
pub struct KeyServer {
    server: Upstream,
    jwks: Arc<Mutex<Value>>,
}

impl KeyServer {
    pub fn start(jwks: Value) -> KeyServer {
        let jwks = Arc::new(Mutex::new(jwks));
        let served = jwks.clone();
        let server = Upstream::with_responder(move |request| {
            if request.method == "GET" && request.path() == KEYS_PATH {
                let body = served.lock().unwrap().to_string();
                Reply {
                    status: 200,
                    headers: vec![("Content-Type".into(), "application/json".into())],
                    body: body.into_bytes(),
                }
            } else {
                Reply::ok("not found").status(404)
            }
        });
        KeyServer { server, jwks }
    }

    /// `http://127.0.0.1:PORT/keys`: plain HTTP, which the proxy allows for loopback only.
    pub fn url(&self) -> String {
        format!("http://{}{KEYS_PATH}", self.server.addr())
    }

    pub fn set_jwks(&self, jwks: Value) {
        *self.jwks.lock().unwrap() = jwks;
    }

    /// How many times the key set was fetched.
    pub fn fetches(&self) -> usize {
        self.server
            .requests()
            .iter()
            .filter(|r| r.path() == KEYS_PATH)
            .count()
    }
}
