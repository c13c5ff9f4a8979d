//! Pingora log lines that are not an operator's concern.

use std::fmt;

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

/// Pingora 0.9.1 logs "failed to acquire reusable stream" at ERROR when a pooled upstream
/// connection loses a race with the task that watches it while idle; the request then opens a
/// new connection and succeeds (docs/PINGORA.md). No hook covers it, so it is dropped here.
const POOL_RACE: &str = "failed to acquire reusable stream";

pub struct QuietPoolRace;

impl<S: Subscriber> Layer<S> for QuietPoolRace {
    fn event_enabled(&self, event: &Event<'_>, _ctx: Context<'_, S>) -> bool {
        let mut seen = Seen {
            pingora: event.metadata().target().starts_with("pingora"),
            race: false,
        };
        event.record(&mut seen);
        !(seen.pingora && seen.race)
    }
}

/// What an event says: Pingora's `log` records arrive through the `log` bridge, with their
/// target in a `log.target` field rather than in the event's metadata.
struct Seen {
    pingora: bool,
    race: bool,
}

impl Visit for Seen {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            self.race = format!("{value:?}") == POOL_RACE;
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "message" => self.race = value == POOL_RACE,
            "log.target" => self.pingora |= value.starts_with("pingora"),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::sync::{Arc, Mutex};
    use tracing_subscriber::layer::SubscriberExt;

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn only_the_pool_race_is_dropped() {
        let out = Captured::default();
        let writer = out.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .finish()
            .with(QuietPoolRace);
        tracing::subscriber::with_default(subscriber, || {
            tracing::error!(target: "pingora_core::connectors", "failed to acquire reusable stream");
            tracing::error!(target: "pingora_core::connectors", "another connector error");
            tracing::error!(target: "eam_proxy", "failed to acquire reusable stream");
            // As Pingora emits it: a `log` record, bridged as the binary's subscriber does.
            for message in [POOL_RACE, "a bridged connector error"] {
                tracing_log::format_trace(
                    &log::Record::builder()
                        .target("pingora_core::connectors")
                        .level(log::Level::Error)
                        .args(format_args!("{message}"))
                        .build(),
                )
                .unwrap();
            }
        });
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        assert!(text.contains("another connector error"), "{text}");
        assert_eq!(
            text.matches("failed to acquire reusable stream").count(),
            1,
            "{text}"
        );
        assert!(text.contains("eam_proxy"), "{text}");
        assert!(text.contains("a bridged connector error"), "{text}");
    }
}
