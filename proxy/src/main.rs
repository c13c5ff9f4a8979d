//! `eam-proxy`: the binary, on the `eam_proxy` library. Reads the configuration, assembles the
//! Pingora server (proxy, admin listener, key refreshers, upstream health checks) and runs it.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use pingora::lb::health_check::{HealthCheck, HttpHealthCheck, TcpHealthCheck};
use pingora::lb::LoadBalancer;
use pingora::listeners::tls::TlsSettings;
use pingora::listeners::ListenerConfig;
use pingora::protocols::l4::stream::L4BufferSettings;
use pingora::protocols::tls::CaType;
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::Server;
use pingora::services::background::background_service;
use pingora::services::listening::Service;
use pingora::tls::x509::X509;

use eam_proxy::config::{self, Config, LogFormat, Validated};
use eam_proxy::decision_log::{self, DecisionLog};
use eam_proxy::keystore::{KeyRefresher, KeyStore, KeyStoreSettings, KeyStores};
use eam_proxy::service::EamProxy;
use eam_proxy::upstream_client::{self, UpstreamClient, UpstreamSettings};
use eam_proxy::{
    admin, cert, deadline, discovery, doctor, heap, inject, logging, metrics, response_guard, tls,
    unix_now,
};

/// Makes an OpenID Connect provider a Microsoft Entra ID External Authentication Method.
#[derive(Parser, Debug)]
#[command(name = "eam-proxy", version, about, subcommand_negates_reqs = true)]
struct Cli {
    /// Configuration file (TOML).
    #[arg(short, long, env = "EAM_PROXY_CONFIG", required = true)]
    config: Option<PathBuf>,
    /// Validate the configuration and exit: 0 when valid, 2 with the key and reason otherwise.
    #[arg(long)]
    check: bool,
    /// Take over the listening sockets of a running instance (zero-downtime upgrade).
    #[arg(short, long)]
    upgrade: bool,
    /// Run in the background.
    #[arg(short, long)]
    daemon: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Make the self-signed certificate Entra needs in `x5c` for an OP signing key (PEM).
    Cert {
        /// The OP's signing key as a private RSA JWK (n, e, d, p, q, dp, dq, qi), or a JWKS
        /// holding only that key.
        #[arg(long)]
        jwk: PathBuf,
        /// Common name of issuer and subject: the IdP's domain.
        #[arg(long)]
        cn: String,
        /// Validity in days.
        #[arg(long, default_value_t = 365)]
        days: u32,
        /// Write the certificate here instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Check the OP and this configuration against Entra's EAM requirements: exit 0 when
    /// nothing fails, 1 when a check fails, 2 when the configuration is invalid.
    Doctor {
        /// Configuration file (TOML); default: the global --config or EAM_PROXY_CONFIG.
        #[arg(short, long)]
        config: Option<PathBuf>,
        /// The OP's public issuer URL (what Entra is given, without
        /// /.well-known/openid-configuration). Default: fetch through the configured upstream.
        #[arg(long)]
        issuer: Option<String>,
        /// Machine-readable report.
        #[arg(long)]
        json: bool,
        /// Accept http:// on loopback hosts as a warning (local tests only; Entra never does).
        #[arg(long)]
        allow_http: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(command) = cli.command {
        return match command {
            Command::Cert { jwk, cn, days, out } => cert_command(&jwk, &cn, days, out.as_deref()),
            Command::Doctor {
                config,
                issuer,
                json,
                allow_http,
            } => doctor_command(
                config.or(cli.config),
                doctor::Options {
                    issuer,
                    json,
                    allow_http,
                },
            ),
        };
    }
    // clap requires --config when no subcommand is given.
    let config_path = cli.config.clone().unwrap_or_default();
    let validated = match Config::load(&config_path) {
        Ok(v) => v,
        Err(e) => {
            eprintln!(
                "eam-proxy: invalid configuration {}: {e}",
                config_path.display()
            );
            return ExitCode::from(2);
        }
    };
    if cli.check {
        println!("{}: configuration is valid", config_path.display());
        return ExitCode::SUCCESS;
    }
    init_logging(&validated.config.log);
    match run(cli, validated) {
        Ok(never) => match never {},
        Err(e) => {
            tracing::error!(error = %e, "start-up failed");
            ExitCode::FAILURE
        }
    }
}

/// `eam-proxy doctor`: the report on stdout; exit 1 when a check failed.
fn doctor_command(config: Option<PathBuf>, options: doctor::Options) -> ExitCode {
    let Some(path) = config else {
        eprintln!("eam-proxy doctor: --config PATH is required");
        return ExitCode::from(2);
    };
    let validated = match Config::load(&path) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("eam-proxy: invalid configuration {}: {e}", path.display());
            return ExitCode::from(2);
        }
    };
    match doctor::run(&validated, &options) {
        Ok((report, failed)) => {
            print!("{report}");
            if failed {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("eam-proxy doctor: {e}");
            ExitCode::from(2)
        }
    }
}

/// `eam-proxy cert`: exit 0 with the PEM written, 2 with the reason on stderr.
fn cert_command(
    jwk: &std::path::Path,
    cn: &str,
    days: u32,
    out: Option<&std::path::Path>,
) -> ExitCode {
    let made = std::fs::read_to_string(jwk)
        .map_err(|e| format!("cannot read {}: {e}", jwk.display()))
        .and_then(|text| cert::read_jwk(&text).map_err(|e| e.to_string()))
        .and_then(|key| cert::self_signed(&key, cn, days, unix_now()).map_err(|e| e.to_string()));
    let pem = match made {
        Ok(pem) => pem,
        Err(e) => {
            eprintln!("eam-proxy cert: {}: {e}", jwk.display());
            return ExitCode::from(2);
        }
    };
    match out {
        None => print!("{pem}"),
        Some(path) => {
            if let Err(e) = std::fs::write(path, &pem) {
                eprintln!("eam-proxy cert: cannot write {}: {e}", path.display());
                return ExitCode::from(2);
            }
            eprintln!(
                "{}: certificate for CN={cn}, valid {days} days",
                path.display()
            );
        }
    }
    ExitCode::SUCCESS
}

/// An x5c certificate that Entra will refuse is worth a line at start-up; `doctor` says more.
fn warn_about_certificates(routes: &[inject::X5cRoute]) {
    use filters::x5c::Validity;
    let now = unix_now();
    for route in routes {
        for leaf in route.chains.iter().filter_map(|c| c.first()) {
            let (path, subject) = (route.path.as_str(), leaf.subject());
            match leaf.validity_at(now) {
                Validity::Valid => {}
                Validity::EndsSoon { days_left } => tracing::warn!(
                    path,
                    subject,
                    days_left,
                    "x5c certificate expires within 30 days"
                ),
                Validity::Expired => tracing::warn!(
                    path,
                    subject,
                    "x5c certificate has expired: Entra will refuse the key"
                ),
                Validity::NotYetValid => {
                    tracing::warn!(path, subject, "x5c certificate is not yet valid")
                }
            }
        }
    }
}

fn init_logging(log: &config::Log) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&log.level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match log.format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .finish()
            .with(logging::QuietPoolRace)
            .init(),
        LogFormat::Text => builder.finish().with(logging::QuietPoolRace).init(),
    }
}

/// The certificates of `upstream.ca_file` (PEM, one or more).
fn load_ca(path: &std::path::Path) -> Result<CaType, Box<dyn std::error::Error>> {
    let pem = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let certs = X509::stack_from_pem(&pem).map_err(|e| format!("{}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no certificate", path.display()).into());
    }
    Ok(certs.into_boxed_slice())
}

/// TCP (TLS) connect, or an HTTP GET of `health_check_path` that must answer 2xx.
fn health_check(
    upstream: &config::Upstream,
    sni: &str,
    ca: Option<Arc<CaType>>,
) -> Result<Box<dyn HealthCheck + Send + Sync>, Box<dyn std::error::Error>> {
    if upstream.health_check_path.is_empty() {
        let mut check = if upstream.tls {
            TcpHealthCheck::new_tls(sni)
        } else {
            TcpHealthCheck::new()
        };
        upstream_client::trust(&mut check.peer_template.options, upstream.verify, ca);
        return Ok(check);
    }
    let host = upstream
        .host_header
        .clone()
        .or_else(|| upstream.sni.clone())
        .unwrap_or_else(|| "localhost".into());
    let mut check = HttpHealthCheck::new(&host, upstream.tls);
    check.req.set_uri(upstream.health_check_path.parse()?);
    if upstream.tls {
        check.peer_template.sni = sni.to_string();
    }
    upstream_client::trust(&mut check.peer_template.options, upstream.verify, ca);
    check.validator = Some(Box::new(|response| {
        if response.status.is_success() {
            Ok(())
        } else {
            Err(pingora::Error::explain(
                pingora::ErrorType::InternalError,
                format!("health check answered {}", response.status),
            ))
        }
    }));
    Ok(Box::new(check))
}

/// Pingora reads each client connection through a 64 KiB buffer, zero-filled when allocated:
/// 1,000 active keep-alive clients peaked at 66 MiB (60 MiB with 4 KiB), and every flood left a
/// higher high-water mark. A sign-in request (Entra's POST is about 2.5 KiB with its head) fits
/// one read; larger bodies take more reads, as with nginx's 1 KiB header buffer.
const CLIENT_READ_BUFFER: usize = 4 * 1024;

fn client_endpoint(addr: &str) -> ListenerConfig {
    ListenerConfig::tcp(addr).l4_buffer(L4BufferSettings::default().read(CLIENT_READ_BUFFER))
}

fn run(
    cli: Cli,
    validated: Validated,
) -> Result<std::convert::Infallible, Box<dyn std::error::Error>> {
    let Validated {
        config,
        policy,
        key_sources,
        x5c,
    } = validated;
    let server_conf = ServerConf {
        threads: config.server.threads,
        // One single-threaded runtime per thread, like nginx's workers: a sign-in request is
        // short and CPU-bound, so stealing it to another thread costs more than it saves.
        work_stealing: false,
        daemon: cli.daemon,
        grace_period_seconds: Some(config.server.grace_period_seconds),
        // In-flight requests drain during the grace period; runtimes then get one more second.
        graceful_shutdown_timeout_seconds: Some(1),
        pid_file: config.server.pid_file.display().to_string(),
        upgrade_sock: config.server.upgrade_sock.display().to_string(),
        ..ServerConf::default()
    };
    let opt = Opt {
        upgrade: cli.upgrade,
        daemon: cli.daemon,
        ..Opt::default()
    };
    let mut server = Server::new_with_opt_and_conf(opt, server_conf);
    server.bootstrap();

    let http = reqwest::Client::builder()
        .user_agent(concat!("eam-proxy/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_millis(config.jwks.fetch_timeout_ms))
        // The key-set URL was checked (https, or loopback http) when the config was loaded; a
        // redirect could lead anywhere, even to plain http, so it is a failed fetch instead.
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let settings = KeyStoreSettings {
        refresh: Duration::from_secs(config.jwks.refresh_seconds),
        min_refetch: Duration::from_secs(config.jwks.min_refetch_seconds),
        fetch_timeout: Duration::from_millis(config.jwks.fetch_timeout_ms),
        max_stale_seconds: config.jwks.max_stale_seconds,
    };
    let clouds: Vec<String> = key_sources.iter().map(|(c, _)| c.clone()).collect();
    let metrics = Arc::new(metrics::Metrics::new(&clouds)?);
    let mut stores = Vec::new();
    for (cloud, source) in key_sources {
        let store = Arc::new(KeyStore::new(
            cloud.clone(),
            source,
            http.clone(),
            settings.clone(),
            metrics.clone(),
        ));
        server.add_service(background_service(
            &format!("jwks {cloud}"),
            KeyRefresher(store.clone()),
        ));
        stores.push(store);
    }
    let keys = KeyStores(stores);

    let upstream = &config.upstream;
    let mut upstreams = LoadBalancer::try_from_iter(upstream.addresses.iter().map(String::as_str))?;
    let sni = upstream.sni.clone().unwrap_or_default();
    let ca = upstream
        .ca_file
        .as_deref()
        .map(load_ca)
        .transpose()?
        .map(Arc::new);
    upstreams.set_health_check(health_check(upstream, &sni, ca.clone())?);
    upstreams.health_check_frequency =
        Some(Duration::from_millis(upstream.health_check_interval_ms));
    let health = background_service("upstream health", upstreams);
    let upstreams = health.task();
    let upstreams_for_admin = upstreams.clone();
    server.add_service(health);

    warn_about_certificates(&x5c);
    let authorize = &config.authorize;
    let upstream_client = Arc::new(UpstreamClient::new(
        upstreams,
        UpstreamSettings {
            tls: upstream.tls,
            sni,
            verify: upstream.verify,
            ca,
            host_header: upstream.host_header.clone(),
            connect_timeout: Duration::from_millis(upstream.connect_timeout_ms),
            read_timeout: Duration::from_millis(upstream.read_timeout_ms),
            send_timeout: Duration::from_millis(upstream.send_timeout_ms),
            stream_idle_timeout: Duration::from_millis(upstream.stream_idle_timeout_ms),
        },
    ));
    let discovery = (!authorize.discovery_path.is_empty()).then(|| {
        let host = upstream
            .host_header
            .clone()
            .or_else(|| upstream.sni.clone())
            .or_else(|| upstream.addresses.first().map(|a| a.to_string()))
            .unwrap_or_else(|| "localhost".into());
        Arc::new(discovery::Discovery::new(
            upstream_client.clone(),
            authorize.discovery_path.clone(),
            host,
            authorize.paths.clone(),
            Duration::from_secs(config.jwks.refresh_seconds),
            Duration::from_millis(config.jwks.fetch_timeout_ms),
            metrics.clone(),
        ))
    });
    if let Some(discovery) = &discovery {
        server.add_service(background_service(
            "upstream discovery",
            discovery::DiscoveryRefresher(discovery.clone()),
        ));
    }
    let guard = (authorize.response_guard != config::GuardMode::Off).then(|| {
        Arc::new(response_guard::Guard {
            mode: authorize.response_guard,
            max_body_bytes: authorize.response_guard_max_body_bytes,
            checks: filters::ResponseGuard::new(&policy),
            memory: response_guard::Memory::new(
                authorize.response_guard_max_entries,
                Duration::from_secs(authorize.response_guard_ttl_seconds),
            ),
            discovery: discovery.clone(),
        })
    });
    let proxy = EamProxy {
        policy: Arc::new(policy),
        keys: keys.clone(),
        upstream: upstream_client,
        client_read_timeout: Duration::from_millis(config.server.client_read_timeout_ms),
        client_body_timeout: Duration::from_millis(config.server.client_body_timeout_ms),
        decision_log: DecisionLog {
            json: config.log.format == LogFormat::Json,
            include_username: config.log.include_username,
            sink: decision_log::BatchSink::stderr(),
        },
        trusted_proxies: config.server.trusted_proxies()?,
        headers: config.server.header_policy()?,
        metrics: metrics.clone(),
        x5c: Arc::new(x5c),
        guard,
        discovery: discovery.clone(),
    };
    let mut proxy_service = Service::new(
        "eam-proxy".to_string(),
        deadline::HeadDeadline::new(
            pingora::proxy::http_proxy(&server.configuration, proxy),
            Duration::from_millis(config.server.client_header_timeout_ms),
            Duration::from_millis(config.server.keepalive_timeout_ms),
        ),
    );
    for addr in &config.server.listen {
        proxy_service.add_listener(client_endpoint(addr));
    }
    let mut certs = None;
    if let (Some(cert), Some(key)) = (&config.server.tls_cert, &config.server.tls_key) {
        if !config.server.tls_listen.is_empty() {
            let store = Arc::new(tls::CertStore::open(cert, key)?);
            for addr in &config.server.tls_listen {
                let mut settings =
                    TlsSettings::with_callbacks(Box::new(tls::CertResolver(store.clone())))?;
                settings.enable_h2();
                proxy_service.add_listener(client_endpoint(addr).tls(settings));
            }
            certs = Some(store);
        }
    }
    server.add_service(background_service("heap trimmer", heap::HeapTrimmer));
    server.add_service(background_service(
        "certificate watcher",
        tls::CertWatcher(certs),
    ));
    server.add_service(proxy_service);

    let mut admin = Service::new(
        "admin".to_string(),
        admin::Admin {
            keys,
            metrics,
            upstreams: upstreams_for_admin,
            discovery,
        },
    );
    admin.add_tcp(&config.server.admin_listen);
    server.add_service(admin);

    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        listen = ?config.server.listen,
        tls_listen = ?config.server.tls_listen,
        admin_listen = %config.server.admin_listen,
        upstreams = ?config.upstream.addresses,
        apps = config.apps.len(),
        "eam-proxy starting"
    );
    server.run_forever()
}
