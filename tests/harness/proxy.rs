//! The `eam-proxy` binary under test: its configuration, its process, its logs.

use std::fs::File;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Once;
use std::time::{Duration, Instant};

use eam_proxy::config::{App, Cloud, Config, Jwks, LogFormat, X5cInjection};
use serde_json::Value;

use crate::command::{run_bounded, COMMAND_TIMEOUT};
use crate::hints::default_jwks;
use crate::http::{try_get, Request, Response};
use crate::ports::closed_port;
use crate::tempdir::TempDir;
use crate::upstream::{Recorded, Upstream};
use crate::{APP_REGISTRATION, CLIENT_ID};

/// How long a proxy may take to start before the test fails.
pub const START_TIMEOUT: Duration = Duration::from_secs(20);

/// The binary: `EAM_PROXY_BIN`, else the workspace's debug build.
pub fn binary() -> PathBuf {
    let path = std::env::var_os("EAM_PROXY_BIN").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/debug/eam-proxy"),
        PathBuf::from,
    );
    assert!(
        path.is_file(),
        "{} not found: run cargo build -p eam-proxy first (or set EAM_PROXY_BIN)",
        path.display()
    );
    path
}

/// Where the global cloud's keys come from.
#[derive(Debug, Clone)]
pub enum Keys {
    /// Written to a `jwks_file` in the test's directory.
    Jwks(Value),
    /// A `jwks_url`.
    Url(String),
}

/// A configuration file, held as the proxy's own schema so that a test cannot write a key the
/// proxy does not know; rendered to TOML when written.
#[derive(Debug)]
pub struct ProxyConfig {
    config: Config,
    keys: Keys,
}

impl ProxyConfig {
    /// The tests' base configuration (the minimal one of the test plan) in front of `upstream`,
    /// with [`default_jwks`] as the key file.
    pub fn new(upstream: &Upstream) -> ProxyConfig {
        ProxyConfig::with_upstreams(&[upstream.addr()])
    }

    /// The base configuration, its listeners on ports of their own (never handed out again, see
    /// [`closed_port`]).
    pub fn with_upstreams(addresses: &[SocketAddr]) -> ProxyConfig {
        let mut config = Config::default();
        config.server.listen = vec![closed_port().to_string()];
        config.server.admin_listen = closed_port().to_string();
        config.server.threads = 1;
        config.server.max_body_bytes = 32_768;
        config.server.grace_period_seconds = 0;
        config.upstream.addresses = addresses.iter().map(ToString::to_string).collect();
        config.upstream.connect_timeout_ms = 500;
        config.upstream.read_timeout_ms = 2000;
        config.authorize.paths = vec!["/authorize".into()];
        // The test upstreams are not OPs: no discovery reads in their recordings
        // (tests/tests/end_to_end/spoofing.rs turns it on).
        config.authorize.discovery_path = String::new();
        config.log.format = LogFormat::Json;
        // Many suites send floods of refused Entra requests from one address; the abuse limits
        // are tested on their own (tests/tests/end_to_end/limits.rs).
        config.limits.enabled = false;
        config.apps = vec![App {
            audiences: vec![APP_REGISTRATION.into()],
            ..app(CLIENT_ID, "global")
        }];
        config.clouds.insert("global".into(), Cloud::default());
        ProxyConfig {
            config,
            keys: Keys::Jwks(default_jwks()),
        }
    }

    /// Edits the configuration, e.g. `with(|c| c.upstream.read_timeout_ms = 1000)`.
    pub fn with(mut self, edit: impl FnOnce(&mut Config)) -> ProxyConfig {
        edit(&mut self.config);
        self
    }

    pub fn keys(mut self, keys: Keys) -> ProxyConfig {
        self.keys = keys;
        self
    }

    pub fn render(&self) -> String {
        toml::to_string(&self.config).expect("the configuration renders as TOML")
    }

    /// Writes the key file and the configuration into `dir`. Returns the configuration's path.
    pub fn write_to(mut self, dir: &TempDir) -> (PathBuf, ProxyConfig) {
        let global = self.config.clouds.entry("global".into()).or_default();
        match &self.keys {
            Keys::Jwks(jwks) => global.jwks_file = Some(dir.write("jwks.json", &jwks.to_string())),
            Keys::Url(url) => global.jwks_url = Some(url.clone()),
        }
        (dir.write("eam-proxy.toml", &self.render()), self)
    }

    fn listen_addr(raw: &str) -> SocketAddr {
        raw.parse()
            .unwrap_or_else(|e| panic!("listener {raw:?}: {e}"))
    }
}

/// An `[[apps]]` entry on `cloud` with every optional key at its default.
pub fn app(client_id: &str, cloud: &str) -> App {
    App {
        client_id: client_id.into(),
        audiences: Vec::new(),
        cloud: cloud.into(),
        allowed_tenants: Vec::new(),
        allow_msa_tenant: false,
    }
}

/// A recording upstream answering [`Reply::ok`](crate::Reply::ok), and a proxy in front of it
/// with the base configuration: where most tests start.
pub fn upstream_and_proxy() -> (Upstream, ProxyProcess) {
    let upstream = Upstream::start();
    let proxy = ProxyProcess::start(ProxyConfig::new(&upstream));
    (upstream, proxy)
}

/// What to wait for before handing the proxy to the test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wait {
    Ready,
    Alive,
}

/// A running `eam-proxy`, killed on drop. Its stderr goes to `stderr.log` in its directory.
pub struct ProxyProcess {
    child: Child,
    /// The proxy listener.
    pub addr: SocketAddr,
    /// The admin listener.
    pub admin: SocketAddr,
    log_path: PathBuf,
    dir: TempDir,
}

impl ProxyProcess {
    /// Starts the proxy and waits until `/readyz` answers 200.
    pub fn start(config: ProxyConfig) -> ProxyProcess {
        ProxyProcess::spawn(config, Wait::Ready)
    }

    /// Starts the proxy and waits only until `/healthz` answers 200 and the proxy port accepts
    /// connections: for tests of a proxy that cannot become ready.
    pub fn start_unready(config: ProxyConfig) -> ProxyProcess {
        ProxyProcess::spawn(config, Wait::Alive)
    }

    fn spawn(config: ProxyConfig, wait: Wait) -> ProxyProcess {
        static RAISED: Once = Once::new();
        RAISED.call_once(raise_descriptor_limit);
        let binary = binary();
        let dir = TempDir::new();
        let (config_path, config) = config.write_to(&dir);
        let log_path = dir.path().join("stderr.log");
        let stderr = File::create(&log_path).expect("create stderr.log");
        let stdout = File::create(dir.path().join("stdout.log")).expect("create stdout.log");
        let child = Command::new(&binary)
            .arg("--config")
            .arg(&config_path)
            .env_remove("RUST_LOG")
            .env_remove("EAM_PROXY_CONFIG")
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        let mut proxy = ProxyProcess {
            child,
            addr: ProxyConfig::listen_addr(&config.config.server.listen[0]),
            admin: ProxyConfig::listen_addr(&config.config.server.admin_listen),
            log_path,
            dir,
        };
        proxy.wait(wait);
        proxy
    }

    fn wait(&mut self, wait: Wait) {
        let deadline = Instant::now() + START_TIMEOUT;
        let probe = Duration::from_millis(500);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "eam-proxy exited during start-up ({status}); stderr:\n{}",
                    self.log()
                );
            }
            let admin_path = match wait {
                Wait::Ready => "/readyz",
                Wait::Alive => "/healthz",
            };
            let last = match try_get(self.admin, admin_path, probe) {
                Ok(r) if r.status == 200 => {
                    if TcpStream::connect_timeout(&self.addr, probe).is_ok() {
                        return;
                    }
                    format!("{admin_path} is 200 but {} refuses", self.addr)
                }
                Ok(r) => format!("{admin_path}: {}", r.describe()),
                Err(e) => format!("{admin_path}: {e}"),
            };
            if Instant::now() > deadline {
                panic!(
                    "eam-proxy not {} after {START_TIMEOUT:?} ({last}); stderr:\n{}",
                    match wait {
                        Wait::Ready => "ready",
                        Wait::Alive => "up",
                    },
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Sends a request to the proxy listener on a new connection.
    pub fn send(&self, request: &Request) -> Response {
        request.send(self.addr)
    }

    /// Sends `request`, asserts that the upstream answered it
    /// ([`Response::assert_upstream_ok`]) and received it once, and returns it as received.
    pub fn forward(&self, upstream: &Upstream, request: &Request) -> Recorded {
        let before = upstream.count();
        self.send(request).assert_upstream_ok();
        let received = upstream.wait_for(before + 1, Duration::from_secs(5));
        assert_eq!(
            received.len(),
            before + 1,
            "the upstream must receive the request once: {received:#?}"
        );
        received[before].clone()
    }

    /// `GET path` on the admin listener.
    pub fn admin_get(&self, path: &str) -> Response {
        try_get(self.admin, path, Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("admin {path}: {e}"))
    }

    /// One series of `/metrics`, named exactly as the proxy writes it (`name{label="value",…}`,
    /// labels in its order); `None` when it writes no such series.
    pub fn metric(&self, series: &str) -> Option<f64> {
        self.admin_get("/metrics").text().lines().find_map(|line| {
            let value = line.strip_prefix(series)?.strip_prefix(' ')?;
            value.split_whitespace().next()?.parse().ok()
        })
    }

    /// Everything the proxy wrote to stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// The JSON log lines that carry an authorize decision (an `outcome` field).
    pub fn decisions(&self) -> Vec<Value> {
        self.log()
            .lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter(|v| v.get("outcome").is_some())
            .collect()
    }

    /// The decision line of one request, found by its `client-request-id`; waits up to 5 s for
    /// the line to be written.
    pub fn decision(&self, client_request_id: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(line) = self
                .decisions()
                .into_iter()
                .find(|d| d["client_request_id"] == client_request_id)
            {
                return line;
            }
            if Instant::now() > deadline {
                panic!(
                    "no decision log line with client_request_id {client_request_id}; stderr:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn dir(&self) -> &TempDir {
        &self.dir
    }

    /// The configuration file the proxy was started with.
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("eam-proxy.toml")
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal by name (`TERM`, `QUIT`, `HUP`).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} {} failed", self.pid());
    }

    /// Waits for the process to exit; `None` if it is still running after `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("eam-proxy stderr:\n{}", self.log());
        }
    }
}

/// Raises this process's limit of open descriptors to its hard limit: every end-to-end test
/// runs in this one process, and a few of them hold hundreds of connections at once (floods,
/// concurrent clients, the recording upstream's side of each), more together than the usual
/// soft limit of 1024. Linux only, like `/proc`, through the C library (no `libc` dependency).
fn raise_descriptor_limit() {
    #[repr(C)]
    struct Rlimit {
        current: u64,
        max: u64,
    }
    extern "C" {
        fn getrlimit(resource: i32, limit: *mut Rlimit) -> i32;
        fn setrlimit(resource: i32, limit: *const Rlimit) -> i32;
    }
    const RLIMIT_NOFILE: i32 = 7;
    let mut limit = Rlimit { current: 0, max: 0 };
    // SAFETY: a pointer to a live `struct rlimit` (two 64-bit `rlim_t` on 64-bit Linux).
    if unsafe { getrlimit(RLIMIT_NOFILE, &mut limit) } != 0 || limit.current >= limit.max {
        return;
    }
    limit.current = limit.max;
    // SAFETY: as above. A refusal leaves the limit as it was, which is no worse than before.
    unsafe { setrlimit(RLIMIT_NOFILE, &limit) };
}

/// The result of `eam-proxy --check`.
#[derive(Debug)]
pub struct CheckOutcome {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl CheckOutcome {
    pub fn assert_accepted(&self) {
        assert!(
            self.status.success(),
            "the configuration was refused ({}): {}{}",
            self.status,
            self.stderr,
            self.stdout
        );
    }

    /// Asserts a refusal whose message on stderr names every one of `words`; `how` says which
    /// run it was.
    pub fn assert_refused(&self, how: &str, words: &[&str]) {
        assert!(
            !self.status.success(),
            "{how} must fail; it exited {} with {}{}",
            self.status,
            self.stderr,
            self.stdout
        );
        for word in words {
            assert!(
                self.stderr.contains(word),
                "{how}: stderr must name {word:?}: {:?}",
                self.stderr
            );
        }
    }
}

/// Runs `eam-proxy --check --config FILE` on `config`; fails the test after 20 s.
pub fn check_config(config: ProxyConfig) -> CheckOutcome {
    let dir = TempDir::new();
    let (config_path, _) = config.write_to(&dir);
    run_on_file(&config_path, &["--check"], COMMAND_TIMEOUT)
}

/// Runs `eam-proxy <args> --config <config>` until it exits by itself, which must be within
/// `timeout`.
pub fn run_on_file(config: &Path, args: &[&str], timeout: Duration) -> CheckOutcome {
    let output = run_bounded(
        Command::new(binary())
            .args(args)
            .arg("--config")
            .arg(config)
            .env_remove("EAM_PROXY_CONFIG")
            .env_remove("RUST_LOG"),
        timeout,
    );
    CheckOutcome {
        status: output.status,
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Several apps, several clouds, key-set timings: the configurations of the key lifecycle tests.
impl ProxyConfig {
    /// Appends one `[[upstream.x5c]]` entry: `path` gets `x5c` from these PEM files.
    pub fn add_x5c(self, path: &str, certificates: &[PathBuf]) -> ProxyConfig {
        self.with(|c| {
            c.upstream.x5c.push(X5cInjection {
                path: path.into(),
                certificates: certificates.to_vec(),
            })
        })
    }

    /// Appends one more `[[apps]]` entry (the first one stays the tests' default app), e.g.
    /// [`app`]`(CLIENT_B, "global")`.
    pub fn add_app(self, app: App) -> ProxyConfig {
        self.with(|c| c.apps.push(app))
    }

    /// The four `[jwks]` timings at once.
    pub fn jwks_timings(
        self,
        refresh_seconds: u64,
        min_refetch_seconds: u64,
        max_stale_seconds: u64,
        fetch_timeout_ms: u64,
    ) -> ProxyConfig {
        self.with(|c| {
            c.jwks = Jwks {
                refresh_seconds,
                min_refetch_seconds,
                max_stale_seconds,
                fetch_timeout_ms,
            }
        })
    }
}

/// Waiting on the proxy's own state: readiness, log lines.
impl ProxyProcess {
    /// Polls `/readyz` until it answers `status`; panics with the last answer after `timeout`.
    pub fn wait_readyz(&self, status: u16, timeout: Duration) -> Response {
        let deadline = Instant::now() + timeout;
        loop {
            let last = try_get(self.admin, "/readyz", Duration::from_secs(2));
            if let Ok(response) = &last {
                if response.status == status {
                    return response.clone();
                }
            }
            if Instant::now() > deadline {
                panic!(
                    "/readyz did not answer {status} within {timeout:?}; last: {}",
                    match last {
                        Ok(r) => r.describe(),
                        Err(e) => e.to_string(),
                    }
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The log lines (JSON or not) that contain `needle`.
    pub fn log_lines(&self, needle: &str) -> Vec<String> {
        self.log()
            .lines()
            .filter(|line| line.contains(needle))
            .map(str::to_string)
            .collect()
    }

    /// Waits until at least `count` log lines contain `needle`; panics after `timeout`.
    pub fn wait_for_log(&self, needle: &str, count: usize, timeout: Duration) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let lines = self.log_lines(needle);
            if lines.len() >= count {
                return lines;
            }
            if Instant::now() > deadline {
                panic!(
                    "{} log line(s) with {needle:?} within {timeout:?}, expected {count}; stderr:\n{}",
                    lines.len(),
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
