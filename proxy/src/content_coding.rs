//! The content codings browsers ask for (gzip, deflate, br, zstd), read and written with the
//! same libraries Pingora's own compression uses. The response guard reads the login page the
//! OP compressed, and the browser still gets it compressed (README "Response guard").

use std::borrow::Cow;
use std::io::{Read, Write};

use http::header;
use pingora::http::ResponseHeader;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    Identity,
    Gzip,
    Deflate,
    Brotli,
    Zstd,
}

/// zstd frames may ask for a window of up to 2 GiB; browsers accept 8 MiB (2^23), so do we.
const ZSTD_WINDOW_LOG_MAX: u32 = 23;

impl Coding {
    /// The coding of a response body; `None` for one not read here, or several stacked.
    pub fn of(resp: &ResponseHeader) -> Option<Coding> {
        let mut codings = resp
            .headers
            .get_all(header::CONTENT_ENCODING)
            .iter()
            .map(|v| v.to_str().ok())
            .flat_map(|v| v.unwrap_or("\u{0}").split(','))
            .map(str::trim)
            .filter(|c| !c.is_empty() && !c.eq_ignore_ascii_case("identity"));
        let Some(coding) = codings.next() else {
            return Some(Coding::Identity);
        };
        if codings.next().is_some() {
            return None;
        }
        match coding.to_ascii_lowercase().as_str() {
            "gzip" | "x-gzip" => Some(Coding::Gzip),
            "deflate" => Some(Coding::Deflate),
            "br" => Some(Coding::Brotli),
            "zstd" => Some(Coding::Zstd),
            _ => None,
        }
    }

    /// The decoded body, if it is valid in this coding and decodes to at most `limit` bytes
    /// (a small compressed body may expand enormously: decoding stops past the limit).
    pub fn decode(self, body: &[u8], limit: usize) -> Option<Cow<'_, [u8]>> {
        if self == Coding::Identity {
            return (body.len() <= limit).then_some(Cow::Borrowed(body));
        }
        let cap = limit as u64 + 1;
        let mut out = Vec::new();
        let read = match self {
            Coding::Identity => unreachable!("returned above"),
            Coding::Gzip => flate2::read::MultiGzDecoder::new(body)
                .take(cap)
                .read_to_end(&mut out),
            // HTTP's "deflate" is the zlib format, but some servers send raw deflate.
            Coding::Deflate => flate2::read::ZlibDecoder::new(body)
                .take(cap)
                .read_to_end(&mut out)
                .or_else(|_| {
                    out.clear();
                    flate2::read::DeflateDecoder::new(body)
                        .take(cap)
                        .read_to_end(&mut out)
                }),
            Coding::Brotli => brotli::Decompressor::new(body, 4096)
                .take(cap)
                .read_to_end(&mut out),
            Coding::Zstd => zstd::stream::read::Decoder::new(body).and_then(|mut decoder| {
                decoder.window_log_max(ZSTD_WINDOW_LOG_MAX)?;
                decoder.take(cap).read_to_end(&mut out)
            }),
        };
        (read.is_ok() && out.len() <= limit).then_some(Cow::Owned(out))
    }

    /// `body` in this coding (the guard's replacement page, a few KiB).
    pub fn encode(self, body: &[u8]) -> Vec<u8> {
        fn written<W: Write>(
            mut w: W,
            body: &[u8],
            finish: impl FnOnce(W) -> std::io::Result<Vec<u8>>,
        ) -> Vec<u8> {
            // Writing to a Vec cannot fail.
            w.write_all(body).expect("in-memory write");
            finish(w).expect("in-memory write")
        }
        let level = flate2::Compression::default();
        match self {
            Coding::Identity => body.to_vec(),
            Coding::Gzip => written(
                flate2::write::GzEncoder::new(Vec::new(), level),
                body,
                |w| w.finish(),
            ),
            Coding::Deflate => written(
                flate2::write::ZlibEncoder::new(Vec::new(), level),
                body,
                |w| w.finish(),
            ),
            Coding::Brotli => written(
                brotli::CompressorWriter::new(Vec::new(), 4096, 5, 22),
                body,
                |w| Ok(w.into_inner()),
            ),
            Coding::Zstd => zstd::stream::encode_all(body, 3).expect("in-memory write"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Coding; 5] = [
        Coding::Identity,
        Coding::Gzip,
        Coding::Deflate,
        Coding::Brotli,
        Coding::Zstd,
    ];

    fn resp(encodings: &[&str]) -> ResponseHeader {
        let mut resp = ResponseHeader::build(200, None).unwrap();
        for e in encodings {
            resp.append_header("content-encoding", *e).unwrap();
        }
        resp
    }

    #[test]
    fn codings_are_read_from_content_encoding() {
        assert_eq!(Coding::of(&resp(&[])), Some(Coding::Identity));
        assert_eq!(Coding::of(&resp(&["identity"])), Some(Coding::Identity));
        assert_eq!(Coding::of(&resp(&["GZIP"])), Some(Coding::Gzip));
        assert_eq!(Coding::of(&resp(&["br"])), Some(Coding::Brotli));
        assert_eq!(Coding::of(&resp(&["zstd"])), Some(Coding::Zstd));
        assert_eq!(Coding::of(&resp(&["deflate"])), Some(Coding::Deflate));
        assert_eq!(Coding::of(&resp(&["gzip, br"])), None, "stacked");
        assert_eq!(Coding::of(&resp(&["gzip", "br"])), None, "stacked");
        assert_eq!(Coding::of(&resp(&["compress"])), None);
    }

    #[test]
    fn every_coding_round_trips() {
        let page = b"<html><body><form method=post>hello</form></body></html>".repeat(20);
        for coding in ALL {
            let encoded = coding.encode(&page);
            let decoded = coding.decode(&encoded, page.len()).unwrap();
            assert_eq!(&decoded[..], &page[..], "{coding:?}");
            assert!(
                coding.decode(&encoded, page.len() - 1).is_none(),
                "{coding:?} over the limit"
            );
        }
    }

    #[test]
    fn raw_deflate_is_read_too() {
        let mut raw =
            flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        raw.write_all(b"<html>raw</html>").unwrap();
        let raw = raw.finish().unwrap();
        assert_eq!(
            &Coding::Deflate.decode(&raw, 100).unwrap()[..],
            b"<html>raw</html>"
        );
    }

    #[test]
    fn garbage_and_bombs_are_not_read() {
        for coding in &ALL[1..] {
            assert!(
                coding.decode(b"\x1f\x8bnot really", 1000).is_none(),
                "{coding:?}"
            );
        }
        // 10 MiB of zeros compress to a few KiB; decoding stops at the limit.
        let bomb = vec![0u8; 10 << 20];
        for coding in &ALL[1..] {
            let small = coding.encode(&bomb);
            assert!(small.len() < 64 << 10, "{coding:?}");
            assert!(coding.decode(&small, 64 << 10).is_none(), "{coding:?}");
        }
    }
}
