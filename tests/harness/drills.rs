//! Tools of the fault drills and the soak test: a client that reports failures instead of
//! panicking, a latency probe, and the proxy's resource usage read from `/proc` (the upstream
//! that misbehaves on purpose is the recording [`Upstream`](crate::Upstream) with its
//! [`Action`](crate::upstream::Action)s).
//!
//! Linux only: `/proc`, and `SO_LINGER` set through the C library (no `libc` dependency).

use std::io::{self, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::http::{read_head, read_response_rest, Request, Response};
use crate::upstream::pause;

// ---------------------------------------------------------------------------------------------
// Sockets
// ---------------------------------------------------------------------------------------------

/// Closes `stream` with a TCP reset (`SO_LINGER` with a zero timeout) instead of a FIN: what a
/// crashed process or a middlebox dropping state looks like to the peer.
pub fn reset(stream: TcpStream) {
    #[repr(C)]
    struct Linger {
        l_onoff: i32,
        l_linger: i32,
    }
    extern "C" {
        fn setsockopt(fd: i32, level: i32, name: i32, value: *const Linger, len: u32) -> i32;
    }
    const SOL_SOCKET: i32 = 1;
    const SO_LINGER: i32 = 13;
    let linger = Linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a valid open descriptor, a pointer to a live `struct linger` and its exact size.
    let rc = unsafe {
        setsockopt(
            stream.as_raw_fd(),
            SOL_SOCKET,
            SO_LINGER,
            &linger,
            std::mem::size_of::<Linger>() as u32,
        )
    };
    assert_eq!(rc, 0, "setsockopt(SO_LINGER) failed");
    drop(stream);
}

// ---------------------------------------------------------------------------------------------
// A client that reports instead of panicking
// ---------------------------------------------------------------------------------------------

/// A keep-alive client connection that returns errors (the drills count them) and reconnects
/// when the proxy closed the previous connection.
pub struct Client {
    addr: SocketAddr,
    timeout: Duration,
    conn: Option<(TcpStream, BufReader<TcpStream>)>,
    /// Requests resent once on a new connection because a reused one was found closed.
    pub retries: usize,
    /// Connections opened.
    pub connects: usize,
}

impl Client {
    pub fn new(addr: SocketAddr, timeout: Duration) -> Client {
        Client {
            addr,
            timeout,
            conn: None,
            retries: 0,
            connects: 0,
        }
    }

    fn connect(&mut self) -> io::Result<()> {
        let stream = TcpStream::connect_timeout(&self.addr, self.timeout)?;
        stream.set_read_timeout(Some(self.timeout))?;
        stream.set_write_timeout(Some(self.timeout))?;
        stream.set_nodelay(true)?;
        let reader = BufReader::new(stream.try_clone()?);
        self.conn = Some((stream, reader));
        self.connects += 1;
        Ok(())
    }

    /// Sends `request` and reads its final response. A reused connection that turns out to
    /// be closed before a byte of answer (the proxy's keep-alive ended) is retried once.
    pub fn send(&mut self, request: &Request) -> io::Result<Response> {
        let reused = self.conn.is_some();
        match self.exchange(request) {
            Err(e) if reused && is_stale(&e) => {
                self.retries += 1;
                self.conn = None;
                self.exchange(request)
            }
            other => other,
        }
    }

    fn exchange(&mut self, request: &Request) -> io::Result<Response> {
        if self.conn.is_none() {
            self.connect()?;
        }
        let result = self.try_exchange(request, request.to_bytes().as_slice());
        match &result {
            Ok(response) if !closes(response) => {}
            _ => self.conn = None,
        }
        result
    }

    fn try_exchange(&mut self, request: &Request, bytes: &[u8]) -> io::Result<Response> {
        let (stream, reader) = self.conn.as_mut().expect("connected");
        if let Err(e) = stream.write_all(bytes) {
            // Nothing of an answer can have come: a reused connection was already closed.
            return Err(io::Error::new(e.kind(), format!("{e}: {STALE_MARK}")));
        }
        let head_request = request.head_bytes().starts_with(b"HEAD ");
        loop {
            let response = read_response(reader, head_request)?;
            if !(100..200).contains(&response.status) {
                return Ok(response);
            }
        }
    }
}

fn is_stale(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionAborted
    ) && e.to_string().contains(STALE_MARK)
}

/// Marks an end of stream before the first byte of a response.
const STALE_MARK: &str = "closed before any response byte";

fn closes(response: &Response) -> bool {
    response
        .header("connection")
        .is_some_and(|v| v.eq_ignore_ascii_case("close"))
}

/// Reads one response (interim or final) from `reader`.
pub fn read_response<R: io::BufRead>(reader: &mut R, head_request: bool) -> io::Result<Response> {
    let mut raw = Vec::new();
    let head = match read_head(reader, &mut raw) {
        Ok(Some(head)) => head,
        Ok(None) => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, STALE_MARK)),
        Err(e) if raw.is_empty() && e.kind() != io::ErrorKind::WouldBlock => {
            return Err(io::Error::new(e.kind(), format!("{e}: {STALE_MARK}")))
        }
        Err(e) => return Err(e),
    };
    read_response_rest(reader, head, raw, head_request)
}

/// One request on a new connection, closed afterwards; errors are returned.
pub fn try_send(addr: SocketAddr, request: &Request, timeout: Duration) -> io::Result<Response> {
    let mut client = Client::new(addr, timeout);
    let result = client.exchange(request);
    if let Some((stream, _)) = client.conn.take() {
        let _ = stream.shutdown(Shutdown::Both);
    }
    result
}

/// Asserts that a load met no failure (`what` names its requests); shows the first ten.
pub fn assert_none_failed(failures: &[String], what: &str) {
    assert!(
        failures.is_empty(),
        "{} {what} failed: {:#?}",
        failures.len(),
        &failures[..failures.len().min(10)]
    );
}

// ---------------------------------------------------------------------------------------------
// Latency probe
// ---------------------------------------------------------------------------------------------

/// What a [`Probe`] saw.
#[derive(Debug, Clone, Default)]
pub struct ProbeReport {
    /// Latency of each successful check.
    pub latencies: Vec<Duration>,
    /// Every failed check, described.
    pub failures: Vec<String>,
}

impl ProbeReport {
    pub fn ok(&self) -> usize {
        self.latencies.len()
    }

    /// The `q` quantile (0.0–1.0) of the latencies; zero when there are none.
    pub fn quantile(&self, q: f64) -> Duration {
        let mut sorted = self.latencies.clone();
        sorted.sort();
        if sorted.is_empty() {
            return Duration::ZERO;
        }
        let index = ((sorted.len() - 1) as f64 * q).round() as usize;
        sorted[index.min(sorted.len() - 1)]
    }

    pub fn max(&self) -> Duration {
        self.latencies.iter().copied().max().unwrap_or_default()
    }

    pub fn summary(&self) -> String {
        format!(
            "{} ok, {} failed, p50 {:?}, p95 {:?}, max {:?}",
            self.ok(),
            self.failures.len(),
            self.quantile(0.5),
            self.quantile(0.95),
            self.max()
        )
    }
}

/// A thread running `check` every `interval` until finished: the "other clients" of a drill,
/// whose latency must stay low while the drill's fault goes on.
pub struct Probe {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<ProbeReport>,
}

impl Probe {
    pub fn start(
        interval: Duration,
        check: impl Fn() -> Result<(), String> + Send + 'static,
    ) -> Probe {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let mut report = ProbeReport::default();
            while !flag.load(Ordering::SeqCst) {
                let started = Instant::now();
                match check() {
                    Ok(()) => report.latencies.push(started.elapsed()),
                    Err(e) => report.failures.push(e),
                }
                pause(&flag, interval.saturating_sub(started.elapsed()));
            }
            report
        });
        Probe { stop, handle }
    }

    /// A probe that GETs `path` through the proxy and expects `200` from the upstream.
    pub fn get(addr: SocketAddr, path: &str, interval: Duration) -> Probe {
        let request = Request::get(path);
        let path = path.to_string();
        Probe::start(interval, move || {
            match try_send(addr, &request, Duration::from_secs(5)) {
                Ok(r) if r.status == 200 => Ok(()),
                Ok(r) => Err(format!("GET {path}: {}", r.describe())),
                Err(e) => Err(format!("GET {path}: {e}")),
            }
        })
    }

    pub fn finish(self) -> ProbeReport {
        self.stop.store(true, Ordering::SeqCst);
        self.handle.join().expect("the probe thread panicked")
    }
}

// ---------------------------------------------------------------------------------------------
// Resource usage
// ---------------------------------------------------------------------------------------------

/// A process's resident memory and open descriptors, from `/proc`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStats {
    pub rss_kib: u64,
    pub fds: usize,
    pub threads: u64,
}

impl ProcStats {
    pub fn of(pid: u32) -> ProcStats {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap_or_else(|e| panic!("/proc/{pid}/status: {e}"));
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"))
        };
        let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap_or_else(|e| panic!("/proc/{pid}/fd: {e}"))
            .count();
        ProcStats {
            rss_kib: field("VmRSS:"),
            fds,
            threads: field("Threads:"),
        }
    }

    /// Polls until `settled(stats)` holds; returns the last stats and whether it held before
    /// `timeout`.
    pub fn settle(
        pid: u32,
        timeout: Duration,
        settled: impl Fn(&ProcStats) -> bool,
    ) -> (ProcStats, bool) {
        let deadline = Instant::now() + timeout;
        loop {
            let stats = ProcStats::of(pid);
            if settled(&stats) {
                return (stats, true);
            }
            if Instant::now() > deadline {
                return (stats, false);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// A connection that a drill holds open and feeds slowly; tells whether the proxy ended it.
pub struct SlowSender {
    stream: Option<TcpStream>,
    /// When the proxy was seen closing the connection (or answering it), if it did.
    pub closed_at: Option<Instant>,
    /// What the proxy sent before closing, if anything.
    pub answer: Vec<u8>,
    pub sent: usize,
}

impl SlowSender {
    pub fn open(addr: SocketAddr) -> io::Result<SlowSender> {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        stream.set_nodelay(true)?;
        stream.set_write_timeout(Some(Duration::from_secs(2)))?;
        Ok(SlowSender {
            stream: Some(stream),
            closed_at: None,
            answer: Vec::new(),
            sent: 0,
        })
    }

    pub fn is_closed(&self) -> bool {
        self.closed_at.is_some()
    }

    /// Writes `bytes` unless the proxy already ended the connection; then checks whether it
    /// has (an answer, an end of stream or a reset).
    pub fn feed(&mut self, bytes: &[u8]) {
        if self.is_closed() {
            return;
        }
        if let Some(stream) = self.stream.as_mut() {
            if stream.write_all(bytes).is_ok() {
                self.sent += bytes.len();
            } else {
                self.mark_closed();
                return;
            }
        }
        self.poll();
    }

    /// Checks, without blocking, whether the proxy answered or closed the connection.
    pub fn poll(&mut self) {
        if self.is_closed() {
            return;
        }
        let Some(stream) = self.stream.as_mut() else {
            return;
        };
        if stream.set_nonblocking(true).is_err() {
            return;
        }
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf) {
                Ok(0) => {
                    self.mark_closed();
                    break;
                }
                Ok(n) => self.answer.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    self.mark_closed();
                    break;
                }
            }
        }
        if let Some(stream) = self.stream.as_mut() {
            let _ = stream.set_nonblocking(false);
        }
    }

    fn mark_closed(&mut self) {
        self.closed_at.get_or_insert_with(Instant::now);
        self.stream = None;
    }

    /// The status line of the proxy's answer, if it sent one.
    pub fn answer_status(&self) -> Option<String> {
        let text = String::from_utf8_lossy(&self.answer);
        text.lines().next().map(str::to_string)
    }
}
