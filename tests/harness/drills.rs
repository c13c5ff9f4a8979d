//! Tools of the fault drills and the soak test: an upstream that misbehaves on purpose, a
//! client that reports failures instead of panicking, a latency probe, and the proxy's resource
//! usage read from `/proc`.
//!
//! Linux only: `/proc`, and `SO_LINGER` set through the C library (no `libc` dependency).

use std::io::{self, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::http::{read_head, read_response_rest, Request, Response};
use crate::upstream::{read_request, Recorded, Reply};

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

/// Sleeps `delay` in small steps, giving up early when `stop` is set.
fn pause(stop: &AtomicBool, delay: Duration) {
    let until = Instant::now() + delay;
    while !stop.load(Ordering::SeqCst) && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(10).min(until - Instant::now()));
    }
}

// ---------------------------------------------------------------------------------------------
// A misbehaving upstream
// ---------------------------------------------------------------------------------------------

/// What [`FaultyUpstream`] does with one request (chosen per request by the test's closure).
#[derive(Debug, Clone)]
pub enum Action {
    /// Answers at once.
    Reply(Reply),
    /// Answers after this delay.
    Delay(Duration, Reply),
    /// Sends the head at once, then the body in `pieces` parts, `gap` apart: slow, but never
    /// silent for longer than `gap`.
    Trickle {
        reply: Reply,
        pieces: usize,
        gap: Duration,
    },
    /// Reads the request and never answers (the connection is held until the upstream stops).
    Hang,
    /// Sends the head (`Content-Length` of the whole body) and half the body, then closes
    /// (FIN).
    HalfThenClose(Reply),
    /// The same, then a TCP reset.
    HalfThenReset(Reply),
    /// A chunked head and one chunk of half the body, then a TCP reset.
    HalfChunkedThenReset(Reply),
    /// Reads the request, then a TCP reset without a byte of answer.
    ResetBeforeReply,
}

type Behaviour = dyn Fn(&Recorded) -> Action + Send + Sync;

struct FaultyShared {
    stop: AtomicBool,
    log_cap: usize,
    count: AtomicUsize,
    /// The first `log_cap` requests (a soak must not keep them all).
    log: Mutex<Vec<Recorded>>,
    arrived: Condvar,
    /// Open connections by id (shut when the upstream is killed); a connection removes itself
    /// when it ends, so that a reset really is the last close of its socket.
    connections: Mutex<Vec<(u64, TcpStream)>>,
    next_id: AtomicUsize,
}

impl FaultyShared {
    fn forget(&self, id: u64) {
        self.connections.lock().unwrap().retain(|(i, _)| *i != id);
    }
}

/// A recording HTTP/1.1 upstream whose every answer is an [`Action`]; keep-alive honoured for
/// the actions that complete a response.
pub struct FaultyUpstream {
    addr: SocketAddr,
    shared: Arc<FaultyShared>,
    acceptor: Option<JoinHandle<()>>,
}

impl FaultyUpstream {
    pub const LOG_CAP: usize = 10_000;

    pub fn start(behaviour: impl Fn(&Recorded) -> Action + Send + Sync + 'static) -> Self {
        FaultyUpstream::start_with_log_cap(FaultyUpstream::LOG_CAP, behaviour)
    }

    /// Keeps only the first `log_cap` requests (0 for a soak: the behaviour closure counts).
    pub fn start_with_log_cap(
        log_cap: usize,
        behaviour: impl Fn(&Recorded) -> Action + Send + Sync + 'static,
    ) -> Self {
        let listener = crate::ports::listen();
        FaultyUpstream::serve(listener, log_cap, Arc::new(behaviour))
    }

    /// Starts on a given address (an upstream that comes back); retries while the port is
    /// still held (TIME_WAIT, or a late close).
    pub fn start_on(
        addr: SocketAddr,
        behaviour: impl Fn(&Recorded) -> Action + Send + Sync + 'static,
    ) -> Self {
        let listener = crate::ports::rebind(addr, Duration::from_secs(10));
        FaultyUpstream::serve(listener, FaultyUpstream::LOG_CAP, Arc::new(behaviour))
    }

    fn serve(listener: TcpListener, log_cap: usize, behaviour: Arc<Behaviour>) -> Self {
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(FaultyShared {
            stop: AtomicBool::new(false),
            log_cap,
            count: AtomicUsize::new(0),
            log: Mutex::new(Vec::new()),
            arrived: Condvar::new(),
            connections: Mutex::new(Vec::new()),
            next_id: AtomicUsize::new(0),
        });
        let accept_shared = shared.clone();
        let acceptor = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if accept_shared.stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let Ok(clone) = stream.try_clone() else {
                    continue;
                };
                let id = accept_shared.next_id.fetch_add(1, Ordering::SeqCst) as u64;
                accept_shared.connections.lock().unwrap().push((id, clone));
                let shared = accept_shared.clone();
                let behaviour = behaviour.clone();
                std::thread::spawn(move || {
                    serve_faulty(stream, id, &shared, &*behaviour);
                    shared.forget(id);
                });
            }
        });
        FaultyUpstream {
            addr,
            shared,
            acceptor: Some(acceptor),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Requests received so far (complete heads and bodies).
    pub fn count(&self) -> usize {
        self.shared.count.load(Ordering::SeqCst)
    }

    /// The first requests (up to the log cap), in arrival order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.log.lock().unwrap().clone()
    }

    /// Waits until `count` requests have arrived; panics after `timeout`.
    pub fn wait_for(&self, count: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let mut log = self.shared.log.lock().unwrap();
        while self.count() < count {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                panic!(
                    "upstream received {} request(s) within {timeout:?}, expected {count}",
                    self.count()
                );
            }
            log = self.shared.arrived.wait_timeout(log, left).unwrap().0;
        }
    }

    /// Stops accepting and shuts every open connection (a killed upstream).
    pub fn kill(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        for (_, connection) in self.shared.connections.lock().unwrap().drain(..) {
            let _ = connection.shutdown(Shutdown::Both);
        }
    }
}

impl Drop for FaultyUpstream {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `Reply` on the wire, with `Content-Length` (or chunked framing, sent by the caller).
fn head_bytes(reply: &Reply, framing: &str) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 {} Status\r\n", reply.status);
    for (name, value) in &reply.headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str(framing);
    out.push_str("\r\n");
    out.into_bytes()
}

fn length_head(reply: &Reply) -> Vec<u8> {
    head_bytes(reply, &format!("Content-Length: {}\r\n", reply.body.len()))
}

fn serve_faulty(stream: TcpStream, id: u64, shared: &FaultyShared, behaviour: &Behaviour) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(60)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(15)));
    let Ok(read_half) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(read_half);
    let mut writer = stream;
    while !shared.stop.load(Ordering::SeqCst) {
        let Some(request) = read_request(&mut reader, None) else {
            return;
        };
        let action = behaviour(&request);
        {
            let mut log = shared.log.lock().unwrap();
            if log.len() < shared.log_cap {
                log.push(request);
            }
            shared.count.fetch_add(1, Ordering::SeqCst);
            shared.arrived.notify_all();
        }
        let keep_going = match action {
            Action::Reply(reply) => {
                let mut bytes = length_head(&reply);
                bytes.extend_from_slice(&reply.body);
                writer.write_all(&bytes).is_ok()
            }
            Action::Delay(delay, reply) => {
                pause(&shared.stop, delay);
                let mut bytes = length_head(&reply);
                bytes.extend_from_slice(&reply.body);
                writer.write_all(&bytes).is_ok()
            }
            Action::Trickle { reply, pieces, gap } => {
                let mut ok = writer.write_all(&length_head(&reply)).is_ok();
                let size = reply.body.len().div_ceil(pieces.max(1)).max(1);
                for piece in reply.body.chunks(size) {
                    if !ok {
                        break;
                    }
                    pause(&shared.stop, gap);
                    ok = writer
                        .write_all(piece)
                        .and_then(|()| writer.flush())
                        .is_ok();
                }
                ok
            }
            Action::Hang => {
                pause(&shared.stop, Duration::from_secs(60));
                false
            }
            Action::HalfThenClose(reply) => {
                let mut bytes = length_head(&reply);
                bytes.extend_from_slice(&reply.body[..reply.body.len() / 2]);
                let _ = writer.write_all(&bytes).and_then(|()| writer.flush());
                let _ = writer.shutdown(Shutdown::Both);
                false
            }
            Action::HalfThenReset(reply) => {
                let mut bytes = length_head(&reply);
                bytes.extend_from_slice(&reply.body[..reply.body.len() / 2]);
                let _ = writer.write_all(&bytes).and_then(|()| writer.flush());
                // Let the bytes leave before the reset discards the send buffer.
                std::thread::sleep(Duration::from_millis(50));
                shared.forget(id);
                drop(reader);
                reset(writer);
                return;
            }
            Action::HalfChunkedThenReset(reply) => {
                let mut bytes = head_bytes(&reply, "Transfer-Encoding: chunked\r\n");
                let half = &reply.body[..reply.body.len() / 2];
                bytes.extend_from_slice(format!("{:x}\r\n", half.len()).as_bytes());
                bytes.extend_from_slice(half);
                bytes.extend_from_slice(b"\r\n");
                let _ = writer.write_all(&bytes).and_then(|()| writer.flush());
                std::thread::sleep(Duration::from_millis(50));
                shared.forget(id);
                drop(reader);
                reset(writer);
                return;
            }
            Action::ResetBeforeReply => {
                shared.forget(id);
                drop(reader);
                reset(writer);
                return;
            }
        };
        if !keep_going {
            let _ = writer.shutdown(Shutdown::Both);
            return;
        }
    }
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
