//! The decision log line (README "Operations"): one JSON line per authorize decision, the proxy's audit
//! trail.
//!
//! In JSON mode the line is serialised here, into a reused per-thread buffer, rather than by
//! `tracing-subscriber`'s generic JSON formatter, which cost a twentieth of an Entra request's
//! CPU time (docs/BENCHMARKS.md). The line has the exact shape of every other JSON log line and
//! honours the same filter (`log.level` or `RUST_LOG`, target `eam_proxy::authorize`). Text
//! mode keeps `tracing`.
//!
//! Lines go to stderr through a [`BatchSink`]: a line is written at once unless another was
//! written less than a millisecond before; then it waits, at most [`BATCH_WINDOW`], for the
//! lines that follow, and they share one `write`. At a few sign-ins a second nothing changes;
//! under load the write system call, the largest single cost of the line, is paid once per
//! batch. Lines are never reordered or split, a full batch is written at once, and what is
//! pending is written when the process exits (SIGKILL or a crash can lose the last 5 ms, as
//! with Envoy's or nginx's buffered access logs).

use std::cell::RefCell;
use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use filters::Summary;
use serde::Serialize;

pub const TARGET: &str = "eam_proxy::authorize";
const MESSAGE: &str = "authorize decision";

/// The fields, in the order `tracing-subscriber` writes them.
#[cfg_attr(test, derive(Serialize))]
struct Line<'a> {
    timestamp: &'a str,
    level: &'static str,
    message: &'static str,
    client_request_id: &'a str,
    client_id: &'a str,
    tid: &'a str,
    oid: &'a str,
    outcome: &'static str,
    reason: &'static str,
    entra: bool,
    stripped: usize,
    latency_ms: f64,
    #[cfg_attr(test, serde(skip_serializing_if = "Option::is_none"))]
    preferred_username: Option<&'a str>,
    target: &'static str,
}

impl Line<'_> {
    /// What `serde_json` makes of the struct, with the keys (which never need escaping) as
    /// constant bytes and the values escaped only when they must be: the generic serializer
    /// took a third of the line's cost escaping its fourteen keys.
    fn write_json(&self, buf: &mut Vec<u8>) {
        fn string(buf: &mut Vec<u8>, s: &str) {
            // serde_json escapes `"`, `\` and the control characters, nothing else.
            if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
                buf.push(b'"');
                buf.extend_from_slice(s.as_bytes());
                buf.push(b'"');
            } else {
                json(buf, s);
            }
        }
        fn json(buf: &mut Vec<u8>, value: &(impl Serialize + ?Sized)) {
            // Serialising into a Vec cannot fail.
            let _ = serde_json::to_writer(&mut *buf, value);
        }
        fn key(buf: &mut Vec<u8>, name: &str) {
            buf.extend_from_slice(b",\"");
            buf.extend_from_slice(name.as_bytes());
            buf.extend_from_slice(b"\":");
        }
        buf.extend_from_slice(b"{\"timestamp\":");
        string(buf, self.timestamp);
        for (name, value) in [
            ("level", self.level),
            ("message", self.message),
            ("client_request_id", self.client_request_id),
            ("client_id", self.client_id),
            ("tid", self.tid),
            ("oid", self.oid),
            ("outcome", self.outcome),
            ("reason", self.reason),
        ] {
            key(buf, name);
            string(buf, value);
        }
        key(buf, "entra");
        json(buf, &self.entra);
        key(buf, "stripped");
        json(buf, &self.stripped);
        key(buf, "latency_ms");
        json(buf, &self.latency_ms);
        if let Some(username) = self.preferred_username {
            key(buf, "preferred_username");
            string(buf, username);
        }
        key(buf, "target");
        string(buf, self.target);
        buf.push(b'}');
    }
}

pub struct DecisionLog {
    pub json: bool,
    pub include_username: bool,
    pub sink: Arc<BatchSink>,
}

thread_local! {
    static BUFFER: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(512));
}

impl DecisionLog {
    pub fn write(&self, summary: &Summary, latency_ms: f64) {
        fn field(v: &Option<String>) -> &str {
            v.as_deref().unwrap_or_default()
        }
        let (client_request_id, client_id) =
            (field(&summary.client_request_id), field(&summary.client_id));
        let (tid, oid) = (field(&summary.tid), field(&summary.oid));
        let outcome = summary.outcome.as_str();
        let reason = summary.reason().unwrap_or("");
        let username = self
            .include_username
            .then(|| field(&summary.preferred_username));
        if !self.json {
            let (entra, stripped) = (summary.entra, summary.stripped);
            match username {
                Some(preferred_username) => tracing::info!(target: TARGET, client_request_id,
                    client_id, tid, oid, outcome, reason, entra, stripped, latency_ms,
                    preferred_username, "authorize decision"),
                None => tracing::info!(target: TARGET, client_request_id, client_id, tid, oid,
                    outcome, reason, entra, stripped, latency_ms, "authorize decision"),
            }
            return;
        }
        if !tracing::enabled!(target: TARGET, tracing::Level::INFO) {
            return;
        }
        let stamp = rfc3339_now();
        let line = Line {
            timestamp: std::str::from_utf8(&stamp).unwrap_or_default(),
            level: "INFO",
            message: MESSAGE,
            client_request_id,
            client_id,
            tid,
            oid,
            outcome,
            reason,
            entra: summary.entra,
            stripped: summary.stripped,
            latency_ms,
            preferred_username: username,
            target: TARGET,
        };
        BUFFER.with_borrow_mut(|buf| {
            buf.clear();
            line.write_json(buf);
            buf.push(b'\n');
            self.sink.push(buf, Instant::now());
        });
    }
}

/// A line written less than this after the previous one waits for company.
const QUIET: Duration = Duration::from_millis(1);
/// How long a waiting line waits at most.
pub const BATCH_WINDOW: Duration = Duration::from_millis(5);
/// A batch this large is written at once.
const MAX_BATCH: usize = 64 * 1024;

/// Groups log lines into fewer writes under load (module documentation).
pub struct BatchSink {
    state: Mutex<Batch>,
    out: Output,
}

/// Where batches go: stderr, or a test's capture.
type Output = Box<dyn Fn(&[u8]) + Send + Sync>;

struct Batch {
    pending: Vec<u8>,
    last_write: Option<Instant>,
    flush_scheduled: bool,
}

impl BatchSink {
    /// The process's stderr; what is pending is written at exit.
    pub fn stderr() -> Arc<BatchSink> {
        static SINK: OnceLock<Arc<BatchSink>> = OnceLock::new();
        SINK.get_or_init(|| {
            extern "C" fn flush_at_exit() {
                if let Some(sink) = SINK.get() {
                    sink.flush();
                }
            }
            // SAFETY: registers a plain function; it only takes the sink's lock and writes.
            unsafe {
                libc::atexit(flush_at_exit);
            }
            // Like tracing's writer: a line that cannot be written is dropped.
            BatchSink::new(Box::new(|bytes| {
                drop(std::io::stderr().lock().write_all(bytes))
            }))
        })
        .clone()
    }

    fn new(out: Output) -> Arc<BatchSink> {
        Arc::new(BatchSink {
            state: Mutex::new(Batch {
                pending: Vec::new(),
                last_write: None,
                flush_scheduled: false,
            }),
            out,
        })
    }

    /// Writes `line` now, or adds it to the batch and makes sure the batch is written within
    /// [`BATCH_WINDOW`]. Writes happen under the lock, so lines keep their order.
    fn push(self: &Arc<Self>, line: &[u8], now: Instant) {
        let mut batch = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let quiet = batch
            .last_write
            .is_none_or(|last| now.saturating_duration_since(last) >= QUIET);
        // Outside a runtime nothing could write the batch later.
        let runtime = tokio::runtime::Handle::try_current().ok();
        if batch.pending.is_empty() && (quiet || runtime.is_none()) {
            (self.out)(line);
            batch.last_write = Some(now);
            return;
        }
        batch.pending.extend_from_slice(line);
        match runtime {
            Some(runtime) if batch.pending.len() < MAX_BATCH => {
                if !batch.flush_scheduled {
                    batch.flush_scheduled = true;
                    let sink = self.clone();
                    runtime.spawn(async move {
                        tokio::time::sleep(BATCH_WINDOW).await;
                        sink.flush();
                    });
                }
            }
            _ => self.write_batch(&mut batch, now),
        }
    }

    /// Writes whatever is pending.
    pub fn flush(&self) {
        let mut batch = self.state.lock().unwrap_or_else(|e| e.into_inner());
        batch.flush_scheduled = false;
        self.write_batch(&mut batch, Instant::now());
    }

    fn write_batch(&self, batch: &mut Batch, now: Instant) {
        if !batch.pending.is_empty() {
            (self.out)(&batch.pending);
            batch.pending.clear();
            batch.last_write = Some(now);
        }
    }
}

/// `2026-11-23T15:46:09.554058Z`: UTC with microseconds, as `tracing-subscriber` writes it.
fn rfc3339_now() -> [u8; 27] {
    rfc3339(time::OffsetDateTime::now_utc())
}

/// `YYYY-MM-DDTHH:MM:SS.ffffffZ`, as `tracing-subscriber` writes it, digit by digit: `format!`
/// cost as much as serialising the rest of the line.
fn rfc3339(t: time::OffsetDateTime) -> [u8; 27] {
    let mut out = *b"0000-00-00T00:00:00.000000Z";
    let mut put = |end: usize, mut value: u32, width: usize| {
        for digit in out[end - width..end].iter_mut().rev() {
            *digit = b'0' + (value % 10) as u8;
            value /= 10;
        }
    };
    // Years outside 0..=9999 cannot come from the system clock.
    put(4, t.year().clamp(0, 9999).unsigned_abs(), 4);
    put(7, u8::from(t.month()).into(), 2);
    put(10, t.day().into(), 2);
    put(13, t.hour().into(), 2);
    put(16, t.minute().into(), 2);
    put(19, t.second().into(), 2);
    put(26, t.microsecond(), 6);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use filters::{AuthorizeError, Outcome};

    type Writes = Arc<Mutex<Vec<Vec<u8>>>>;

    fn capturing_sink() -> (Arc<BatchSink>, Writes) {
        let writes: Writes = Arc::default();
        let seen = writes.clone();
        let sink = BatchSink::new(Box::new(move |bytes| {
            seen.lock().unwrap().push(bytes.to_vec())
        }));
        (sink, writes)
    }

    fn taken(writes: &Writes) -> Vec<String> {
        std::mem::take(&mut *writes.lock().unwrap())
            .into_iter()
            .map(|w| String::from_utf8(w).unwrap())
            .collect()
    }

    #[test]
    fn outside_a_runtime_every_line_is_written_at_once() {
        let (sink, writes) = capturing_sink();
        let now = Instant::now();
        sink.push(b"a\n", now);
        sink.push(b"b\n", now);
        assert_eq!(taken(&writes), ["a\n", "b\n"]);
    }

    #[tokio::test]
    async fn lines_close_together_share_one_write_in_order() {
        let (sink, writes) = capturing_sink();
        let start = Instant::now();
        sink.push(b"1\n", start);
        assert_eq!(
            taken(&writes),
            ["1\n"],
            "a line after a quiet spell goes out at once"
        );
        sink.push(b"2\n", start + Duration::from_micros(100));
        sink.push(b"3\n", start + Duration::from_micros(200));
        assert!(taken(&writes).is_empty(), "lines in quick succession wait");
        tokio::time::sleep(BATCH_WINDOW * 4).await;
        assert_eq!(taken(&writes), ["2\n3\n"]);
        // A quiet millisecond later, lines go out at once again.
        sink.push(b"4\n", Instant::now() + QUIET);
        assert_eq!(taken(&writes), ["4\n"]);
    }

    #[tokio::test]
    async fn a_full_batch_and_an_explicit_flush_write_at_once() {
        let (sink, writes) = capturing_sink();
        let now = Instant::now();
        sink.push(b"first\n", now);
        let line = vec![b'x'; MAX_BATCH / 2];
        sink.push(&line, now);
        sink.push(&line, now);
        let written = taken(&writes);
        assert_eq!(written.len(), 2);
        assert_eq!(written[1].len(), MAX_BATCH);
        sink.push(b"last\n", now);
        sink.flush();
        assert_eq!(taken(&writes), ["last\n"]);
    }

    #[test]
    fn the_written_line_is_what_serde_json_writes() {
        let values = [
            "",
            "plain",
            "a\"b",
            "back\\slash",
            "tab\there",
            "nul\u{0}",
            "del\u{7f}",
            "é<>&'",
            "\u{1f}\u{20}",
            "line\nbreak",
            "\u{2028}",
        ];
        let numbers = [0.0, 0.25, 1e-7, 123_456.789, f64::NAN, f64::INFINITY, -0.0];
        for (i, value) in values.iter().enumerate() {
            for (j, latency_ms) in numbers.into_iter().enumerate() {
                let line = Line {
                    timestamp: value,
                    level: "INFO",
                    message: MESSAGE,
                    client_request_id: value,
                    client_id: values[(i + 1) % values.len()],
                    tid: value,
                    oid: values[(i + j) % values.len()],
                    outcome: "accepted",
                    reason: "",
                    entra: j % 2 == 0,
                    stripped: i * 1_000 + j,
                    latency_ms,
                    preferred_username: (j % 3 != 0).then_some(*value),
                    target: TARGET,
                };
                let mut ours = Vec::new();
                line.write_json(&mut ours);
                assert_eq!(
                    String::from_utf8(ours).unwrap(),
                    serde_json::to_string(&line).unwrap()
                );
            }
        }
    }

    #[test]
    fn timestamps_are_utc_with_microseconds() {
        let t = time::OffsetDateTime::from_unix_timestamp_nanos(1_795_447_569_554_058_999).unwrap();
        assert_eq!(&rfc3339(t), b"2026-11-23T15:26:09.554058Z");
        let t = time::OffsetDateTime::from_unix_timestamp(951_782_400).unwrap();
        assert_eq!(&rfc3339(t), b"2000-02-29T00:00:00.000000Z");
        // Against the `format!` it replaced, over a spread of instants up to 9999.
        for step in 0..5_000i128 {
            let nanos = step * 48_611_111_111_111_111 + step * step * 7_919;
            let t = time::OffsetDateTime::from_unix_timestamp_nanos(nanos).unwrap();
            let reference = format!(
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
                t.year(),
                u8::from(t.month()),
                t.day(),
                t.hour(),
                t.minute(),
                t.second(),
                t.microsecond()
            );
            assert_eq!(rfc3339(t), reference.as_bytes());
        }
    }

    #[test]
    fn the_line_has_tracing_s_shape_and_escapes_hostile_values() {
        let summary = Summary {
            outcome: Outcome::Rejected,
            error: Some(AuthorizeError::BadSignature),
            entra: true,
            client_request_id: Some("a\"b\n<c>".into()),
            client_id: Some("app".into()),
            preferred_username: Some("user@example.com".into()),
            ..Summary::default()
        };
        let line = Line {
            timestamp: "2026-11-23T15:26:09.554058Z",
            level: "INFO",
            message: MESSAGE,
            client_request_id: summary.client_request_id.as_deref().unwrap(),
            client_id: "app",
            tid: "",
            oid: "",
            outcome: summary.outcome.as_str(),
            reason: summary.reason().unwrap(),
            entra: true,
            stripped: 0,
            latency_ms: 0.25,
            preferred_username: None,
            target: TARGET,
        };
        let mut ours = Vec::new();
        line.write_json(&mut ours);
        assert_eq!(ours, serde_json::to_vec(&line).unwrap());
        assert_eq!(
            serde_json::to_string(&line).unwrap(),
            r#"{"timestamp":"2026-11-23T15:26:09.554058Z","level":"INFO","message":"authorize decision","client_request_id":"a\"b\n<c>","client_id":"app","tid":"","oid":"","outcome":"rejected","reason":"bad_signature","entra":true,"stripped":0,"latency_ms":0.25,"target":"eam_proxy::authorize"}"#
        );
    }
}
