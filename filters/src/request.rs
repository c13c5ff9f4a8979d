//! What the proxy knows of an authorize request before its parameters are read (its method,
//! the fields that say how to read its body, how the body is framed), and the rules on those
//! facts (docs/SECURITY.md, "One reading").
//!
//! Each rule closes a way for the upstream's framework to read other parameters than the proxy
//! checked: a charset that Tomcat, Jetty or Django would decode names with, a compressed body
//! that Express inflates, a second `Content-Type` one framework takes and another ignores, a
//! body on a GET that Rack, werkzeug and Express read although the proxy looked at the query.

use crate::error::AuthorizeError;
use crate::policy::Policy;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
    /// Any other method: an OP may route it (HEAD, PUT…) to its authorize handler with
    /// parameters the proxy never read, so it is refused.
    Other,
}

/// One header field of the request, as the proxy received it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Field<'a> {
    #[default]
    Absent,
    One(&'a str),
    /// More than one field line, or a value that is not visible ASCII: which one (or what)
    /// a framework reads is its own choice.
    Ambiguous,
}

impl<'a> From<Option<&'a str>> for Field<'a> {
    fn from(value: Option<&'a str>) -> Field<'a> {
        value.map_or(Field::Absent, Field::One)
    }
}

/// How the request's body is delimited (RFC 9112 §6, RFC 9113 §8.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Framing {
    /// No body: no `Content-Length` or `Transfer-Encoding` on HTTP/1, a stream ended with its
    /// HEADERS on HTTP/2, or `Content-Length: 0`.
    #[default]
    None,
    /// `Content-Length` above zero.
    Length(u64),
    /// `Transfer-Encoding` on HTTP/1.
    Chunked,
    /// An HTTP/2 stream left open without `Content-Length`: DATA frames may follow, or not.
    Open,
}

impl Framing {
    /// The framing of a body that arrived whole and is forwarded with a `Content-Length`.
    pub fn of_body(body: &[u8]) -> Framing {
        match body.len() {
            0 => Framing::None,
            n => Framing::Length(n as u64),
        }
    }
}

/// An authorize request as the proxy received it. `body` is what was read of it: all of it,
/// or (when the client sent more than `max_body_bytes`) the part that proves it too large.
#[derive(Debug, Clone, Copy)]
pub struct AuthorizeRequest<'a> {
    pub method: Method,
    pub content_type: Field<'a>,
    pub content_encoding: Field<'a>,
    pub framing: Framing,
    /// The raw query string, without `?`.
    pub query: Option<&'a str>,
    pub body: &'a [u8],
}

impl<'a> AuthorizeRequest<'a> {
    /// A GET without a body.
    pub fn get(query: Option<&'a str>) -> AuthorizeRequest<'a> {
        AuthorizeRequest {
            method: Method::Get,
            content_type: Field::Absent,
            content_encoding: Field::Absent,
            framing: Framing::None,
            query,
            body: b"",
        }
    }

    /// A POST whose body is framed by its length.
    pub fn post(
        content_type: Option<&'a str>,
        query: Option<&'a str>,
        body: &'a [u8],
    ) -> AuthorizeRequest<'a> {
        AuthorizeRequest {
            method: Method::Post,
            content_type: content_type.into(),
            content_encoding: Field::Absent,
            framing: Framing::of_body(body),
            query,
            body,
        }
    }
}

/// The only media type an authorize POST may carry, as every authorize POST is forwarded:
/// a servlet container reads a form without a charset as ISO-8859-1, the proxy as UTF-8.
pub const FORM_CONTENT_TYPE: &str = "application/x-www-form-urlencoded; charset=UTF-8";

impl Policy {
    /// The rules on the request's head: what can be refused before its body is read (the proxy
    /// asks before reading) and is checked again with the body by `authorize`.
    pub fn admit(&self, req: &AuthorizeRequest<'_>) -> Result<(), AuthorizeError> {
        if req.method == Method::Other {
            return Err(AuthorizeError::MethodNotAllowed);
        }
        let content_type = match req.content_type {
            Field::Ambiguous => return Err(AuthorizeError::RepeatedHeader("content-type")),
            Field::One(value) => Some(value),
            Field::Absent => None,
        };
        match req.content_encoding {
            Field::Ambiguous => return Err(AuthorizeError::RepeatedHeader("content-encoding")),
            Field::One(coding) if !coding.trim().eq_ignore_ascii_case("identity") => {
                return Err(AuthorizeError::UnsupportedContentEncoding)
            }
            _ => {}
        }
        // Django decodes even a GET's query with the charset of the request's Content-Type.
        if let Some(value) = content_type {
            if !charset_is_utf8(value) {
                return Err(AuthorizeError::UnsupportedCharset);
            }
        }
        match req.method {
            Method::Get if matches!(req.framing, Framing::Length(_) | Framing::Chunked) => {
                Err(AuthorizeError::UnexpectedBody)
            }
            Method::Post if !content_type.is_some_and(is_form_content_type) => {
                Err(AuthorizeError::UnsupportedContentType)
            }
            Method::Post if matches!(req.framing, Framing::Length(n) if n > self.authorize.max_body_bytes as u64) => {
                Err(AuthorizeError::BodyTooLarge)
            }
            _ => Ok(()),
        }
    }
}

/// `application/x-www-form-urlencoded`, in any letter case, with no parameter but `charset`
/// (which `charset_is_utf8` checks): a `boundary` or another parameter means another format to
/// some framework.
pub fn is_form_content_type(content_type: &str) -> bool {
    let mut parts = content_type.split(';');
    let media_is_form = parts.next().is_some_and(|media| {
        media
            .trim()
            .eq_ignore_ascii_case("application/x-www-form-urlencoded")
    });
    media_is_form && parts.all(|p| parameter_name(p).eq_ignore_ascii_case("charset"))
}

/// Every `charset` parameter (any case) is exactly the token `utf-8`, in any letter case and
/// unquoted: quoting, a second charset or another name each leave frameworks to disagree.
fn charset_is_utf8(content_type: &str) -> bool {
    content_type
        .split(';')
        .skip(1)
        .filter(|p| parameter_name(p).eq_ignore_ascii_case("charset"))
        .all(|p| {
            p.split_once('=')
                .is_some_and(|(_, value)| value.trim().eq_ignore_ascii_case("utf-8"))
        })
}

fn parameter_name(parameter: &str) -> &str {
    parameter.split('=').next().unwrap_or_default().trim()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::AuthorizeSettings;

    fn policy() -> Policy {
        Policy {
            authorize: AuthorizeSettings {
                max_body_bytes: 100,
                ..AuthorizeSettings::default()
            },
            apps: vec![],
            clouds: vec![],
            max_stale_seconds: 0,
        }
    }

    #[test]
    fn form_content_types() {
        for ok in [
            "application/x-www-form-urlencoded",
            "Application/X-WWW-Form-Urlencoded ; charset=UTF-8",
            "application/x-www-form-urlencoded;charset=utf-8",
        ] {
            assert!(is_form_content_type(ok), "{ok}");
            assert!(charset_is_utf8(ok), "{ok}");
        }
        for not_form in [
            "text/plain",
            "multipart/form-data; boundary=x",
            "application/x-www-form-urlencoded; boundary=x",
            "application/x-www-form-urlencoded, text/plain",
            "application/x-www-form-urlencodedx",
            "",
        ] {
            assert!(!is_form_content_type(not_form), "{not_form}");
        }
        for other_charset in [
            "application/x-www-form-urlencoded; charset=iso-8859-1",
            "application/x-www-form-urlencoded; charset=\"utf-8\"",
            "application/x-www-form-urlencoded; charset=utf-8; charset=utf-16",
            "application/x-www-form-urlencoded; charset=utf-7",
            "application/x-www-form-urlencoded; charset",
            "text/plain; CHARSET=ibm037",
        ] {
            assert!(!charset_is_utf8(other_charset), "{other_charset}");
        }
    }

    #[test]
    fn head_rules() {
        let policy = policy();
        let post = |content_type| AuthorizeRequest::post(Some(content_type), None, b"a=1");
        let admit = |req: AuthorizeRequest<'_>| policy.admit(&req);
        assert_eq!(admit(post("application/x-www-form-urlencoded")), Ok(()));
        assert_eq!(
            admit(post("text/plain")),
            Err(AuthorizeError::UnsupportedContentType)
        );
        assert_eq!(
            admit(post("application/x-www-form-urlencoded; charset=utf-16")),
            Err(AuthorizeError::UnsupportedCharset)
        );
        let get_with = |content_type| AuthorizeRequest {
            content_type: Field::One(content_type),
            ..AuthorizeRequest::get(Some("a=1"))
        };
        assert_eq!(admit(get_with("text/plain; charset=utf-8")), Ok(()));
        assert_eq!(
            admit(get_with("text/plain; charset=cp037")),
            Err(AuthorizeError::UnsupportedCharset)
        );
        assert_eq!(
            admit(AuthorizeRequest {
                content_type: Field::Ambiguous,
                ..post(FORM_CONTENT_TYPE)
            }),
            Err(AuthorizeError::RepeatedHeader("content-type"))
        );
        for (coding, expected) in [
            (Field::One("identity"), Ok(())),
            (
                Field::One("deflate"),
                Err(AuthorizeError::UnsupportedContentEncoding),
            ),
            (
                Field::One("gzip, identity"),
                Err(AuthorizeError::UnsupportedContentEncoding),
            ),
            (
                Field::Ambiguous,
                Err(AuthorizeError::RepeatedHeader("content-encoding")),
            ),
        ] {
            let req = AuthorizeRequest {
                content_encoding: coding,
                ..post(FORM_CONTENT_TYPE)
            };
            assert_eq!(admit(req), expected, "{coding:?}");
        }
        for (framing, expected) in [
            (Framing::None, Ok(())),
            (Framing::Open, Ok(())),
            (Framing::Length(1), Err(AuthorizeError::UnexpectedBody)),
            (Framing::Chunked, Err(AuthorizeError::UnexpectedBody)),
        ] {
            let req = AuthorizeRequest {
                framing,
                ..AuthorizeRequest::get(None)
            };
            assert_eq!(admit(req), expected, "{framing:?}");
        }
        let announced = |n| AuthorizeRequest {
            framing: Framing::Length(n),
            ..post(FORM_CONTENT_TYPE)
        };
        assert_eq!(admit(announced(100)), Ok(()));
        assert_eq!(admit(announced(101)), Err(AuthorizeError::BodyTooLarge));
        assert_eq!(
            admit(AuthorizeRequest {
                method: Method::Other,
                ..AuthorizeRequest::get(None)
            }),
            Err(AuthorizeError::MethodNotAllowed)
        );
    }
}
