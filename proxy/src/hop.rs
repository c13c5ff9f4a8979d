//! What a proxy changes between the client's hop and the upstream's, on every path, so that
//! each side reads what it would read without the proxy (README "Pass-through"): HTTP/2 cookie
//! fields joined for HTTP/1.1, hop-by-hop response headers dropped, and no chunked framing for
//! an HTTP/1.0 client. Pingora 0.9.1 does none of the three (docs/PINGORA.md).

use http::header::{self, HeaderName};
use http::Version;
use pingora::http::{RequestHeader, ResponseHeader};

const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// An HTTP/2 client sends each cookie as its own `cookie` field; an HTTP/1.1 server expects one
/// line, and a second `Cookie` line makes frameworks such as werkzeug read a wrong value and lose
/// the rest. RFC 9113 §8.2.3: join them with `"; "` before they go to an HTTP/1.1 hop.
pub fn join_cookies(req: &mut RequestHeader) -> pingora::Result<()> {
    let fields: Vec<&[u8]> = req
        .headers
        .get_all(header::COOKIE)
        .iter()
        .map(|v| v.as_bytes())
        .collect();
    if fields.len() < 2 {
        return Ok(());
    }
    let joined = fields.join(&b"; "[..]);
    req.insert_header(header::COOKIE, joined)
}

/// Whether a client request header may go to the upstream on a request the proxy builds itself:
/// not one of the connection's own (RFC 9110 §7.6.1), nor a body's framing (the proxy's requests
/// have no body).
pub fn is_end_to_end_request_header(name: &HeaderName) -> bool {
    ![
        header::CONNECTION,
        KEEP_ALIVE,
        PROXY_CONNECTION,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
        header::CONTENT_LENGTH,
        header::EXPECT,
    ]
    .contains(name)
}

/// Removes the response headers that concern only the upstream's connection (RFC 9110 §7.6.1):
/// those its `Connection` names, `Keep-Alive`, `Proxy-Connection`, and `Upgrade` outside a 101.
/// Pingora writes the client's own `Connection` and frames the body itself, so `Connection`,
/// `Transfer-Encoding` and `Content-Length` stay. (Pingora's HTTP/2 server already drops them.)
pub fn remove_hop_by_hop(resp: &mut ResponseHeader) {
    if resp.status == http::StatusCode::SWITCHING_PROTOCOLS {
        return;
    }
    for name in [&KEEP_ALIVE, &PROXY_CONNECTION, &header::UPGRADE] {
        if resp.headers.contains_key(name) {
            resp.remove_header(name);
        }
    }
    if !resp.headers.contains_key(header::CONNECTION) {
        return;
    }
    let named: Vec<HeaderName> = resp
        .headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|token| HeaderName::from_bytes(token.trim().as_bytes()).ok())
        .filter(|name| {
            ![
                header::CONNECTION,
                header::TRANSFER_ENCODING,
                header::CONTENT_LENGTH,
            ]
            .contains(name)
        })
        .collect();
    for name in &named {
        resp.remove_header(name);
    }
}

/// An HTTP/1.0 client cannot read chunked framing (RFC 9112 §6.1), which Pingora applies to every
/// answer without a length. Such an answer goes to it close-delimited instead: true when the
/// caller must close the connection after it.
pub fn frame_for_http10(client: Version, resp: &mut ResponseHeader) -> bool {
    if client >= Version::HTTP_11 || resp.status.is_informational() {
        return false;
    }
    resp.remove_header(&header::TRANSFER_ENCODING).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookie_fields_are_joined_in_order() {
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        req.append_header("cookie", "a=1").unwrap();
        req.append_header("x-other", "y").unwrap();
        req.append_header("cookie", "b=2; c=3").unwrap();
        join_cookies(&mut req).unwrap();
        let values: Vec<_> = req.headers.get_all("cookie").iter().collect();
        assert_eq!(values, ["a=1; b=2; c=3"]);
        assert_eq!(req.headers["x-other"], "y");
    }

    #[test]
    fn one_cookie_field_is_left_alone() {
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        req.append_header("Cookie", "a=1").unwrap();
        join_cookies(&mut req).unwrap();
        assert_eq!(req.headers["cookie"], "a=1");
    }

    #[test]
    fn hop_by_hop_headers_and_those_named_by_connection_are_removed() {
        let mut resp = ResponseHeader::build(200, None).unwrap();
        for (name, value) in [
            ("connection", "keep-alive, X-Hop, transfer-encoding"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("upgrade", "h2c"),
            ("x-hop", "1"),
            ("transfer-encoding", "chunked"),
            ("x-end-to-end", "kept"),
        ] {
            resp.append_header(name, value).unwrap();
        }
        remove_hop_by_hop(&mut resp);
        let mut left: Vec<&str> = resp.headers.keys().map(|n| n.as_str()).collect();
        left.sort_unstable();
        assert_eq!(left, ["connection", "transfer-encoding", "x-end-to-end"]);
    }

    #[test]
    fn a_101_keeps_its_upgrade() {
        let mut resp = ResponseHeader::build(101, None).unwrap();
        resp.append_header("connection", "upgrade").unwrap();
        resp.append_header("upgrade", "websocket").unwrap();
        remove_hop_by_hop(&mut resp);
        assert_eq!(resp.headers["upgrade"], "websocket");
    }

    #[test]
    fn http10_gets_no_chunked_framing() {
        let mut resp = ResponseHeader::build(200, None).unwrap();
        resp.append_header("transfer-encoding", "chunked").unwrap();
        assert!(!frame_for_http10(Version::HTTP_11, &mut resp));
        assert!(resp.headers.contains_key("transfer-encoding"));
        assert!(frame_for_http10(Version::HTTP_10, &mut resp));
        assert!(!resp.headers.contains_key("transfer-encoding"));
        let mut sized = ResponseHeader::build(200, None).unwrap();
        sized.append_header("content-length", "3").unwrap();
        assert!(!frame_for_http10(Version::HTTP_10, &mut sized));
        let mut info = ResponseHeader::build(103, None).unwrap();
        assert!(!frame_for_http10(Version::HTTP_10, &mut info));
    }
}
