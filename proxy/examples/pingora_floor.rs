//! The benchmark's floors (bench/run, docs/BENCHMARKS.md): the smallest Pingora 0.9 proxy, with
//! eam-proxy's server settings (one thread, no work stealing) and nothing of its logic. What
//! eam-proxy costs above this is ours; what this costs above nginx is Pingora's.
//!
//! Given the hint signer's public key, it is also the floor of the Entra path: a POST to
//! `/authorize` is buffered whole, its `id_token_hint`'s RS256 signature is checked (one
//! RSA-2048 verification, the physical minimum), and the body goes upstream unchanged. No claim
//! checks, no rewrite, no log line, no metrics: what any Pingora proxy that refuses forged hints
//! must spend, and therefore the latency it cannot avoid.
//!
//! usage: pingora_floor LISTEN_ADDR UPSTREAM_ADDR [HINT_SIGNER_PKCS1_DER_FILE]

use async_trait::async_trait;
use aws_lc_rs::signature::{ParsedPublicKey, RSA_PKCS1_2048_8192_SHA256};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use bytes::{Bytes, BytesMut};
use pingora::prelude::*;
use pingora::server::configuration::ServerConf;

struct Floor {
    upstream: String,
    hint_signer: Option<ParsedPublicKey>,
}

#[async_trait]
impl ProxyHttp for Floor {
    type CTX = ();

    fn new_ctx(&self) {}

    async fn request_filter(&self, session: &mut Session, _ctx: &mut ()) -> Result<bool> {
        let Some(signer) = &self.hint_signer else {
            return Ok(false);
        };
        let header = session.req_header();
        if header.method != http::Method::POST || header.uri.path() != "/authorize" {
            return Ok(false);
        }
        // Forwarded unchanged from the retry buffer once read.
        session.enable_retry_buffering();
        let mut body = BytesMut::new();
        while let Some(chunk) = session.read_request_body().await? {
            body.extend_from_slice(&chunk);
        }
        if signature_holds(signer, &body.freeze()) {
            return Ok(false);
        }
        session.respond_error(400).await?;
        Ok(true)
    }

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(
            self.upstream.as_str(),
            false,
            String::new(),
        )))
    }
}

/// The body's `id_token_hint` (base64url and `.` only, so never percent-encoded) carries a valid
/// RS256 signature by `signer`.
fn signature_holds(signer: &ParsedPublicKey, body: &Bytes) -> bool {
    const NAME: &[u8] = b"id_token_hint=";
    let Some(at) = memchr::memmem::find(body, NAME) else {
        return false;
    };
    let rest = &body[at + NAME.len()..];
    let token = &rest[..memchr::memchr(b'&', rest).unwrap_or(rest.len())];
    let Some(dot) = memchr::memrchr(b'.', token) else {
        return false;
    };
    let Ok(signature) = URL_SAFE_NO_PAD.decode(&token[dot + 1..]) else {
        return false;
    };
    signer.verify_sig(&token[..dot], &signature).is_ok()
}

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(listen), Some(upstream)) = (args.next(), args.next()) else {
        eprintln!("usage: pingora_floor LISTEN_ADDR UPSTREAM_ADDR [HINT_SIGNER_PKCS1_DER_FILE]");
        std::process::exit(2);
    };
    let hint_signer = args.next().map(|path| {
        let der = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        ParsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, der)
            .unwrap_or_else(|e| panic!("{path}: not a PKCS#1 RSA public key: {e}"))
    });
    let conf = ServerConf {
        threads: 1,
        work_stealing: false,
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let floor = Floor {
        upstream,
        hint_signer,
    };
    let mut service = http_proxy_service(&server.configuration, floor);
    service.add_tcp(&listen);
    server.add_service(service);
    server.run_forever();
}
