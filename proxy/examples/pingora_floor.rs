//! The benchmark's floor (bench/run, docs/BENCHMARKS.md): the smallest Pingora 0.9 proxy, with
//! eam-proxy's server settings (one thread, no work stealing) and nothing of
//! its logic. What eam-proxy costs above this is ours; what this costs above nginx is Pingora's.
//!
//! usage: pingora_floor LISTEN_ADDR UPSTREAM_ADDR

use async_trait::async_trait;
use pingora::prelude::*;
use pingora::server::configuration::ServerConf;

struct Floor {
    upstream: String,
}

#[async_trait]
impl ProxyHttp for Floor {
    type CTX = ();

    fn new_ctx(&self) {}

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(
            self.upstream.as_str(),
            false,
            String::new(),
        )))
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(listen), Some(upstream)) = (args.next(), args.next()) else {
        eprintln!("usage: pingora_floor LISTEN_ADDR UPSTREAM_ADDR");
        std::process::exit(2);
    };
    let conf = ServerConf {
        threads: 1,
        work_stealing: false,
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut service = http_proxy_service(&server.configuration, Floor { upstream });
    service.add_tcp(&listen);
    server.add_service(service);
    server.run_forever();
}
