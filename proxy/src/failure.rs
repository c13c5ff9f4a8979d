//! What a client gets when its request could not be proxied: a status chosen by who failed and
//! how (as nginx answers), and a short fixed body. One table, read by `fail_to_proxy`.

use pingora::{Error, ErrorSource, ErrorType};

/// Why a request could not be proxied, as far as the answer and the log line differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// A tunnel or event stream, its answer under way, fell silent for
    /// `stream_idle_timeout_ms`: nothing to answer, its end is the answer.
    StreamIdle,
    /// The upstream's read timeout ran out while the client had not finished its upload.
    ClientStalled,
    /// Anything else, answered with this status (0: nothing, the client is gone).
    Status(u16),
}

/// What the proxy knew of the request when it failed.
#[derive(Debug, Clone, Copy)]
pub struct Circumstances {
    /// A tunnel or event stream.
    pub stream: bool,
    /// Its answer's head has left.
    pub answering: bool,
    /// A body streamed to the upstream as it arrives.
    pub uploads: bool,
    pub body_done: bool,
}

impl Failure {
    pub fn of(error: &Error, at: Circumstances) -> Failure {
        let read_timeout = error.etype() == &ErrorType::ReadTimedout;
        // Pingora's upstream read timeout runs while the upload streams, restarted by every
        // chunk: when it runs out before the body has ended, the client stopped sending.
        if at.stream && read_timeout && at.answering {
            Failure::StreamIdle
        } else if error.esource() == &ErrorSource::Upstream
            && read_timeout
            && at.uploads
            && !at.body_done
        {
            Failure::ClientStalled
        } else {
            Failure::Status(status(error.esource(), error.etype()))
        }
    }

    pub fn status(self) -> u16 {
        match self {
            Failure::StreamIdle => 0,
            Failure::ClientStalled => 408,
            Failure::Status(code) => code,
        }
    }
}

/// Status by source and error type; the first matching row wins, `None` matches any type.
/// Status 0: nothing is answered (the client is gone).
const STATUS: &[(ErrorSource, Option<&[ErrorType]>, u16)] = &[
    (
        ErrorSource::Upstream,
        Some(&[
            ErrorType::ConnectTimedout,
            ErrorType::ReadTimedout,
            ErrorType::WriteTimedout,
        ]),
        504,
    ),
    (ErrorSource::Upstream, None, 502),
    (
        ErrorSource::Downstream,
        Some(&[
            ErrorType::WriteError,
            ErrorType::ReadError,
            ErrorType::ConnectionClosed,
        ]),
        0,
    ),
    (
        ErrorSource::Downstream,
        Some(&[ErrorType::ReadTimedout]),
        408,
    ),
    (ErrorSource::Downstream, None, 400),
];

/// Bodies by status; any other status gets [`INTERNAL`].
const BODIES: &[(u16, &str)] = &[
    (502, "upstream unavailable\n"),
    (504, "upstream timed out\n"),
    (408, "request timeout\n"),
    (400, "bad request\n"),
];
const INTERNAL: &str = "internal error\n";

/// The status for an error: an explicit HTTP status as it is, else the table's, else 500
/// (internal or unknown source).
pub fn status(source: &ErrorSource, etype: &ErrorType) -> u16 {
    if let ErrorType::HTTPStatus(code) = etype {
        return *code;
    }
    STATUS
        .iter()
        .find(|(s, types, _)| s == source && types.is_none_or(|t| t.contains(etype)))
        .map_or(500, |(_, _, status)| *status)
}

pub fn body(status: u16) -> &'static str {
    BODIES
        .iter()
        .find(|(s, _)| *s == status)
        .map_or(INTERNAL, |(_, body)| body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_follow_who_failed_and_how() {
        use ErrorSource::*;
        use ErrorType::*;
        for (source, etype, expected) in [
            (Upstream, ConnectTimedout, 504),
            (Upstream, ReadTimedout, 504),
            (Upstream, WriteTimedout, 504),
            (Upstream, ConnectRefused, 502),
            (Upstream, ConnectionClosed, 502),
            (Downstream, ConnectionClosed, 0),
            (Downstream, ReadError, 0),
            (Downstream, WriteError, 0),
            (Downstream, ReadTimedout, 408),
            (Downstream, InvalidHTTPHeader, 400),
            (Internal, ReadTimedout, 500),
            (Unset, ConnectRefused, 500),
            (Upstream, HTTPStatus(413), 413),
        ] {
            assert_eq!(status(&source, &etype), expected, "{source:?} {etype:?}");
        }
    }

    #[test]
    fn a_silent_stream_and_a_stalled_upload_are_told_apart() {
        let timeout = Error::new_up(ErrorType::ReadTimedout);
        // (stream, answering, uploads, body_done) → failure
        for ((stream, answering, uploads, body_done), expected) in [
            ((false, false, true, false), Failure::ClientStalled),
            ((false, false, true, true), Failure::Status(504)),
            ((true, true, false, false), Failure::StreamIdle),
            ((true, false, false, false), Failure::Status(504)),
        ] {
            let at = Circumstances {
                stream,
                answering,
                uploads,
                body_done,
            };
            assert_eq!(Failure::of(&timeout, at), expected, "{at:?}");
        }
        assert_eq!(
            (
                Failure::StreamIdle.status(),
                Failure::ClientStalled.status()
            ),
            (0, 408)
        );
    }

    #[test]
    fn every_status_has_a_body() {
        assert_eq!(body(502), "upstream unavailable\n");
        assert_eq!(body(504), "upstream timed out\n");
        assert_eq!(body(408), "request timeout\n");
        assert_eq!(body(400), "bad request\n");
        assert_eq!(body(500), "internal error\n");
        assert_eq!(body(413), "internal error\n");
    }
}
