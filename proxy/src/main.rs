//! `eam-proxy`: the binary. Reads the command line and the configuration, and runs the
//! server assembled from the configuration's plan (proxy, admin listener, key refreshers,
//! upstream health checks and discovery): load → plan → assemble → run.

use std::convert::Infallible;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use filters::Policy;
use pingora::lb::selection::RoundRobin;
use pingora::lb::LoadBalancer;
use pingora::listeners::tls::TlsSettings;
use pingora::listeners::ListenerConfig;
use pingora::protocols::l4::stream::L4BufferSettings;
use pingora::server::Server;
use pingora::services::background::background_service;
use pingora::services::listening::Service;

use eam_proxy::config::{
    self, Config, DiscoveryPlan, GuardPlan, KeySets, Launch, Listeners, LogFormat, PlanError,
    ProxyPlan, UpstreamPlan, Validated,
};
use eam_proxy::decision_log::{self, DecisionLog};
use eam_proxy::discovery::{Discovery, DiscoveryRefresher};
use eam_proxy::keystore::{KeyRefresher, KeyStore, KeyStores};
use eam_proxy::metrics::Metrics;
use eam_proxy::response_guard::{self, GuardStage};
use eam_proxy::service::EamProxy;
use eam_proxy::upstream_client::UpstreamClient;
use eam_proxy::{admin, cert, deadline, doctor, heap, inject, logging, tls, unix_now};

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
    let config_path = cli.config.unwrap_or_default();
    let Some(validated) = load(&config_path) else {
        return ExitCode::from(2);
    };
    if cli.check {
        println!("{}: configuration is valid", config_path.display());
        return ExitCode::SUCCESS;
    }
    init_logging(&validated.config.log);
    let launch = Launch {
        upgrade: cli.upgrade,
        daemon: cli.daemon,
    };
    match run(launch, validated) {
        Ok(never) => match never {},
        Err(e) => {
            tracing::error!(error = %e, "start-up failed");
            ExitCode::FAILURE
        }
    }
}

/// The configuration, or `None` once the reason is on stderr (exit 2).
fn load(path: &std::path::Path) -> Option<Validated> {
    Config::load(path)
        .map_err(|e| eprintln!("eam-proxy: invalid configuration {}: {e}", path.display()))
        .ok()
}

/// `eam-proxy doctor`: the report on stdout; exit 1 when a check failed.
fn doctor_command(config: Option<PathBuf>, options: doctor::Options) -> ExitCode {
    let Some(path) = config else {
        eprintln!("eam-proxy doctor: --config PATH is required");
        return ExitCode::from(2);
    };
    let Some(validated) = load(&path) else {
        return ExitCode::from(2);
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

/// Pingora reads each client connection through a 64 KiB buffer, zero-filled when allocated:
/// 1,000 active keep-alive clients peaked at 66 MiB (60 MiB with 4 KiB), and every flood left a
/// higher high-water mark. A sign-in request (Entra's POST is about 2.5 KiB with its head) fits
/// one read; larger bodies take more reads, as with nginx's 1 KiB header buffer.
const CLIENT_READ_BUFFER: usize = 4 * 1024;

fn client_endpoint(addr: &str) -> ListenerConfig {
    ListenerConfig::tcp(addr).l4_buffer(L4BufferSettings::default().read(CLIENT_READ_BUFFER))
}

/// Why the server did not start, once the configuration was valid.
#[derive(Debug)]
enum StartError {
    Plan(PlanError),
    Metrics(prometheus::Error),
    HttpClient(reqwest::Error),
    TlsCertificate(String),
    TlsSettings(Box<pingora::Error>),
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::Plan(e) => e.fmt(f),
            StartError::Metrics(e) => e.fmt(f),
            StartError::HttpClient(e) => e.fmt(f),
            StartError::TlsCertificate(e) => f.write_str(e),
            StartError::TlsSettings(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for StartError {}

impl From<PlanError> for StartError {
    fn from(e: PlanError) -> Self {
        StartError::Plan(e)
    }
}

fn run(launch: Launch, validated: Validated) -> Result<Infallible, StartError> {
    let plan = validated.plan(launch)?;
    let mut server = Server::new_with_opt_and_conf(plan.opt, plan.server_conf);
    server.bootstrap();
    let (upstreams, apps) = (
        plan.upstream.addresses.clone(),
        plan.proxy.policy.apps.len(),
    );
    let shared = shared(&mut server, plan.key_sets, plan.upstream, plan.discovery)?;
    warn_about_certificates(&plan.proxy.x5c);
    let guard = plan
        .guard
        .map(|g| response_guard(g, &plan.proxy.policy, &shared));
    let proxy = new_eam_proxy(plan.proxy, &shared, guard);
    server.add_service(background_service("heap trimmer", heap::HeapTrimmer));
    add_proxy(&mut server, proxy, &plan.listeners)?;
    add_admin(&mut server, shared, &plan.listeners.admin);
    let listeners = &plan.listeners;
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        listen = ?listeners.client,
        tls_listen = ?listeners.tls.as_ref().map_or(&[][..], |t| &t.addresses),
        admin_listen = %listeners.admin,
        upstreams = ?upstreams,
        apps,
        "eam-proxy starting"
    );
    server.run_forever()
}

/// What the proxy and the admin listener share, each kept current by a background service.
struct Shared {
    metrics: Arc<Metrics>,
    keys: KeyStores,
    upstreams: Arc<LoadBalancer<RoundRobin>>,
    upstream: Arc<UpstreamClient>,
    discovery: Option<Arc<Discovery>>,
}

fn shared(
    server: &mut Server,
    key_sets: KeySets,
    upstream: UpstreamPlan,
    discovery: Option<DiscoveryPlan>,
) -> Result<Shared, StartError> {
    let clouds: Vec<String> = key_sets.sources.iter().map(|(c, _)| c.clone()).collect();
    let metrics = Arc::new(Metrics::new(&clouds).map_err(StartError::Metrics)?);
    let keys = key_stores(server, key_sets, &metrics)?;
    let health = background_service("upstream health", upstream.balancer);
    let upstreams = health.task();
    server.add_service(health);
    let client = Arc::new(UpstreamClient::new(upstreams.clone(), upstream.settings));
    let discovery = discovery.map(|d| {
        let discovery = Arc::new(Discovery::new(client.clone(), d, metrics.clone()));
        server.add_service(background_service(
            "upstream discovery",
            DiscoveryRefresher(discovery.clone()),
        ));
        discovery
    });
    Ok(Shared {
        metrics,
        keys,
        upstreams,
        upstream: client,
        discovery,
    })
}

/// One key store per cloud in use, each refreshed by a background service.
fn key_stores(
    server: &mut Server,
    key_sets: KeySets,
    metrics: &Arc<Metrics>,
) -> Result<KeyStores, StartError> {
    let http = reqwest::Client::builder()
        .user_agent(concat!("eam-proxy/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(key_sets.settings.fetch_timeout)
        // The key-set URL was checked (https, or loopback http) when the config was loaded; a
        // redirect could lead anywhere, even to plain http, so it is a failed fetch instead.
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(StartError::HttpClient)?;
    let mut stores = Vec::new();
    for (cloud, source) in key_sets.sources {
        let store = Arc::new(KeyStore::new(
            cloud.clone(),
            source,
            http.clone(),
            key_sets.settings.clone(),
            metrics.clone(),
        ));
        server.add_service(background_service(
            &format!("jwks {cloud}"),
            KeyRefresher(store.clone()),
        ));
        stores.push(store);
    }
    Ok(KeyStores(stores))
}

fn response_guard(plan: GuardPlan, policy: &Policy, shared: &Shared) -> Arc<GuardStage> {
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let seal = match plan.keys {
        Some(keys) => {
            tracing::info!(key_id = %keys.sealing_key_id(), "guard cookies sealed with the key file's first key");
            keys
        }
        None => {
            tracing::warn!(
                "no authorize.response_guard_key_file: guard cookies are sealed with a random key \
                 of this process; several replicas need one shared key file (README \
                 \"Several replicas\")"
            );
            let mut secret = vec![0u8; 32];
            aws_lc_rs::rand::SecureRandom::fill(&rng, &mut secret)
                .expect("the system's random source works");
            filters::sealed::SealKeys::derive(&[secret]).expect("32 bytes are a valid secret")
        }
    };
    Arc::new(GuardStage {
        mode: plan.mode,
        max_body_bytes: plan.max_body_bytes,
        checks: filters::ResponseGuard::new(policy),
        memory: response_guard::Memory::new(plan.max_entries, plan.ttl),
        discovery: shared.discovery.clone(),
        seal,
        rng,
    })
}

/// The proxy itself: the one place an `EamProxy` is built.
fn new_eam_proxy(plan: ProxyPlan, shared: &Shared, guard: Option<Arc<GuardStage>>) -> EamProxy {
    EamProxy {
        policy: Arc::new(plan.policy),
        keys: shared.keys.clone(),
        upstream: shared.upstream.clone(),
        client_read_timeout: plan.client_read_timeout,
        client_body_timeout: plan.client_body_timeout,
        decision_log: DecisionLog {
            json: plan.json_log,
            include_username: plan.include_username,
            sink: decision_log::BatchSink::stderr(),
        },
        trusted_proxies: plan.trusted_proxies,
        headers: plan.headers,
        metrics: shared.metrics.clone(),
        x5c: Arc::new(plan.x5c),
        guard,
        discovery: shared.discovery.clone(),
        limits: plan.limits.map(eam_proxy::limits::Limits::new),
    }
}

/// The proxy on its plain and TLS listeners, behind the request-head deadline, and the
/// watcher that reloads the TLS certificate when it is renewed.
fn add_proxy(
    server: &mut Server,
    proxy: EamProxy,
    listeners: &Listeners,
) -> Result<(), StartError> {
    let mut service = Service::new(
        "eam-proxy".to_string(),
        deadline::HeadDeadline::new(
            pingora::proxy::http_proxy(&server.configuration, proxy),
            listeners.header_timeout,
            listeners.keepalive_timeout,
        ),
    );
    for addr in &listeners.client {
        service.add_listener(client_endpoint(addr));
    }
    let mut certs = None;
    if let Some(tls_listeners) = &listeners.tls {
        let store = tls::CertStore::open(&tls_listeners.cert, &tls_listeners.key)
            .map_err(StartError::TlsCertificate)?;
        let store = Arc::new(store);
        for addr in &tls_listeners.addresses {
            let resolver = Box::new(tls::CertResolver(store.clone()));
            let mut settings =
                TlsSettings::with_callbacks(resolver).map_err(StartError::TlsSettings)?;
            settings.enable_h2();
            service.add_listener(client_endpoint(addr).tls(settings));
        }
        certs = Some(store);
    }
    server.add_service(background_service(
        "certificate watcher",
        tls::CertWatcher(certs),
    ));
    server.add_service(service);
    Ok(())
}

fn add_admin(server: &mut Server, shared: Shared, address: &str) {
    let mut admin = Service::new(
        "admin".to_string(),
        admin::Admin {
            keys: shared.keys,
            metrics: shared.metrics,
            upstreams: shared.upstreams,
            discovery: shared.discovery,
        },
    );
    admin.add_tcp(address);
    server.add_service(admin);
}
