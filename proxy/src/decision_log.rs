//! The decision log line (README "Operations"): one JSON line per authorize decision, the proxy's audit
//! trail.
//!
//! In JSON mode the line is serialised here (a `Serialize` derive, into a reused per-thread
//! buffer) rather than by `tracing-subscriber`'s generic JSON formatter, whose cost is in
//! docs/BENCHMARKS.md. The line has the exact shape of every
//! other JSON log line and honours the same filter (`log.level` or `RUST_LOG`, target
//! `eam_proxy::authorize`). Text mode keeps `tracing`.
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
#[derive(Serialize)]
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
    #[serde(skip_serializing_if = "Option::is_none")]
    preferred_username: Option<&'a str>,
    target: &'static str,
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
        let stamp = rfc3339(time::OffsetDateTime::now_utc());
        let line = Line {
            timestamp: &stamp,
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
            // Serialising into a Vec cannot fail.
            let _ = serde_json::to_writer(&mut *buf, &line);
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
fn rfc3339(t: time::OffsetDateTime) -> String {
    const FORMAT: &[time::format_description::BorrowedFormatItem<'_>] = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z"
    );
    // Years outside 0..=9999 cannot come from the system clock.
    t.format(FORMAT).unwrap_or_default()
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
    fn timestamps_are_utc_with_microseconds() {
        let t = time::OffsetDateTime::from_unix_timestamp_nanos(1_795_447_569_554_058_999).unwrap();
        assert_eq!(rfc3339(t), "2026-11-23T15:26:09.554058Z");
        let t = time::OffsetDateTime::from_unix_timestamp(951_782_400).unwrap();
        assert_eq!(rfc3339(t), "2000-02-29T00:00:00.000000Z");
        // Against a `format!` of the same fields, over a spread of instants up to 9999.
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
            assert_eq!(rfc3339(t), reference);
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
        assert_eq!(
            serde_json::to_string(&line).unwrap(),
            r#"{"timestamp":"2026-11-23T15:26:09.554058Z","level":"INFO","message":"authorize decision","client_request_id":"a\"b\n<c>","client_id":"app","tid":"","oid":"","outcome":"rejected","reason":"bad_signature","entra":true,"stripped":0,"latency_ms":0.25,"target":"eam_proxy::authorize"}"#
        );
    }
}
