//! `application/x-www-form-urlencoded` codec for authorize bodies and queries.
//!
//! Unlike `form_urlencoded::parse`, decoding is strict: a `%` not followed by two hex digits, or
//! a decoded name or value that is not UTF-8, is an error rather than a silent replacement,
//! because the proxy and the upstream must never disagree on what a parameter says.
//! Each pair keeps its raw bytes so that untouched pairs are forwarded exactly as they came,
//! unless those bytes hold structure that some framework reads and the proxy does not
//! ([`Param::push_forwarded`]).

use std::borrow::Cow;

use memchr::{memchr, memchr2, memchr3, memchr_iter};

use crate::error::AuthorizeError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Param<'a> {
    /// The pair as it appeared on the wire, without the separating `&`.
    pub raw: &'a str,
    /// The raw (still encoded) value, after the first `=`.
    pub raw_value: &'a str,
    pub name: Cow<'a, str>,
    pub value: Cow<'a, str>,
}

impl Param<'_> {
    /// Appends the pair as the upstream should receive it: its raw bytes, or, when they hold
    /// a byte of [`has_structure_bytes`], the decoded name and value form-encoded, which every
    /// framework reads as the proxy did.
    pub fn push_forwarded(&self, out: &mut String) {
        if has_structure_bytes(self.raw) {
            push_encoded(out, &self.name, &self.value);
        } else {
            push_raw(out, self.raw);
        }
    }
}

/// Whether raw form bytes hold a byte that some framework reads as structure where the strict
/// codec reads data: `;` separates pairs for Rack 2 (in a query) and makes Go 1.17+ drop the
/// pair; `[` and `]` nest names in PHP, Rack and qs, and qs ends a name at `]=` even inside
/// what the others read as the value. Encoded (`%3B`, `%5B`, `%5D`) they are data everywhere.
pub fn has_structure_bytes(raw: &str) -> bool {
    memchr3(b';', b'[', b']', raw.as_bytes()).is_some()
}

/// Whether every framework reads `name` (decoded) as this same name: ASCII letters, digits, `_`
/// and `-`, and not empty. PHP turns `.`, ` ` and `[` into `_` and drops leading spaces; PHP,
/// Rack and qs read brackets as nesting; no OAuth or OpenID parameter needs anything else.
pub fn is_plain_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Parameters in their original order; duplicates are kept so callers can see them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params<'a> {
    pairs: Vec<Param<'a>>,
    /// Some pair's raw bytes have a structure byte: forwarding re-encodes it.
    structured: bool,
}

impl<'a> Params<'a> {
    /// Parses a form body or a query string. Empty segments (`a=1&&b=2`) are skipped.
    pub fn parse(input: &'a [u8]) -> Result<Self, AuthorizeError> {
        let text = std::str::from_utf8(input).map_err(|_| AuthorizeError::MalformedEncoding)?;
        let mut pairs = Vec::with_capacity(16);
        let mut from = 0;
        // memchr rather than `str::split`, whose byte-at-a-time search showed in profiles.
        for end in memchr_iter(b'&', input).chain([input.len()]) {
            let segment = &text[from..end];
            if !segment.is_empty() {
                pairs.push(parse_pair(segment)?);
            }
            from = end + 1;
        }
        Ok(Params {
            pairs,
            structured: has_structure_bytes(text),
        })
    }

    /// Whether [`Params::to_forwarded_string`] differs from the input apart from removals.
    pub fn has_structure_bytes(&self) -> bool {
        self.structured
    }

    pub fn iter(&self) -> impl Iterator<Item = &Param<'a>> {
        self.pairs.iter()
    }

    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    pub fn count(&self, name: &str) -> usize {
        self.pairs.iter().filter(|p| p.name == name).count()
    }

    pub fn contains(&self, name: &str) -> bool {
        self.pairs.iter().any(|p| p.name == name)
    }

    /// The first value of `name`; callers that care about duplicates check `count` first.
    pub fn first(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|p| p.name == name)
            .map(|p| p.value.as_ref())
    }

    /// The value of `name` when it appears exactly once: a repeated parameter names nothing.
    pub fn only(&self, name: &str) -> Option<&str> {
        let mut values = self.pairs.iter().filter(|p| p.name == name);
        let value = values.next()?;
        values.next().is_none().then_some(value.value.as_ref())
    }

    /// Every value of `name`, in order.
    pub fn all<'s>(&'s self, name: &'s str) -> impl Iterator<Item = &'s str> + 's {
        self.pairs
            .iter()
            .filter(move |p| p.name == name)
            .map(|p| p.value.as_ref())
    }

    /// Removes every pair for which `predicate(name)` holds; returns how many were removed.
    pub fn remove_where(&mut self, mut predicate: impl FnMut(&str) -> bool) -> usize {
        let before = self.pairs.len();
        self.pairs.retain(|p| !predicate(&p.name));
        before - self.pairs.len()
    }

    /// The remaining pairs joined with `&`, each as [`Param::push_forwarded`] writes it.
    pub fn to_forwarded_string(&self) -> String {
        let mut out = String::with_capacity(self.pairs.iter().map(|p| p.raw.len() + 1).sum());
        for pair in &self.pairs {
            pair.push_forwarded(&mut out);
        }
        out
    }
}

fn parse_pair(segment: &str) -> Result<Param<'_>, AuthorizeError> {
    let (raw_name, raw_value) = match memchr(b'=', segment.as_bytes()) {
        Some(at) => (&segment[..at], &segment[at + 1..]),
        None => (segment, ""),
    };
    Ok(Param {
        raw: segment,
        raw_value,
        name: decode_component(raw_name)?,
        value: decode_component(raw_value)?,
    })
}

/// Strict form decoding of one name or value: `+` is a space, `%XX` a byte, nothing else special.
///
/// One pass that checks and decodes together: `percent_encoding` would need a separate check
/// (it passes a stray `%` through) and a copy for `+`. Most components (the hint above all, a
/// kilobyte of base64url) have nothing to decode and are settled by one vectorised scan; the
/// others (Entra's `claims` above all) are decoded byte by byte.
pub fn decode_component(raw: &str) -> Result<Cow<'_, str>, AuthorizeError> {
    let bytes = raw.as_bytes();
    let Some(first) = memchr2(b'%', b'+', bytes) else {
        return Ok(Cow::Borrowed(raw));
    };
    // Written by index into a buffer of the input's size (decoding never lengthens), without
    // a capacity check per byte (docs/BENCHMARKS.md).
    let mut out = vec![0; bytes.len()];
    out[..first].copy_from_slice(&bytes[..first]);
    let (mut i, mut len) = (first, first);
    while let Some(&byte) = bytes.get(i) {
        out[len] = match byte {
            b'+' => b' ',
            b'%' => {
                let hex = |at: usize| {
                    bytes
                        .get(at)
                        .map_or(NOT_HEX, |&b| HEX_VALUE[usize::from(b)])
                };
                let (high, low) = (hex(i + 1), hex(i + 2));
                if high == NOT_HEX || low == NOT_HEX {
                    return Err(AuthorizeError::MalformedEncoding);
                }
                i += 2;
                high << 4 | low
            }
            other => other,
        };
        len += 1;
        i += 1;
    }
    out.truncate(len);
    String::from_utf8(out)
        .map(Cow::Owned)
        .map_err(|_| AuthorizeError::MalformedEncoding)
}

const NOT_HEX: u8 = 0xff;

/// The value of each hexadecimal digit, either case; `NOT_HEX` for every other byte.
const HEX_VALUE: [u8; 256] = {
    let mut value = [NOT_HEX; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        value[b] = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            b'A'..=b'F' => c - b'A' + 10,
            _ => NOT_HEX,
        };
        b += 1;
    }
    value
};

/// Appends `name=value` form-encoded, after a `&` when `out` is not empty.
pub fn push_encoded(out: &mut String, name: &str, value: &str) {
    push_separator(out);
    push_form_encoded(out, name);
    out.push('=');
    push_form_encoded(out, value);
}

/// Appends `name=<raw value>`, reusing a value that is already encoded.
pub fn push_renamed(out: &mut String, name: &str, raw_value: &str) {
    push_separator(out);
    push_form_encoded(out, name);
    out.push('=');
    out.push_str(raw_value);
}

/// `*-._` and alphanumerics as they are, space as `+`, every other byte as `%XX`.
fn push_form_encoded(out: &mut String, value: &str) {
    out.extend(form_urlencoded::byte_serialize(value.as_bytes()));
}

fn push_raw(out: &mut String, raw: &str) {
    push_separator(out);
    out.push_str(raw);
}

fn push_separator(out: &mut String) {
    if !out.is_empty() {
        out.push('&');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names_values(input: &str) -> Vec<(String, String)> {
        Params::parse(input.as_bytes())
            .unwrap()
            .iter()
            .map(|p| (p.name.to_string(), p.value.to_string()))
            .collect()
    }

    #[test]
    fn only_names_a_value_that_appears_once() {
        let params = Params::parse(b"a=1&b=2&b=3&c=").unwrap();
        assert_eq!(params.only("a"), Some("1"));
        assert_eq!(params.only("b"), None, "repeated");
        assert_eq!(params.only("c"), Some(""));
        assert_eq!(params.only("d"), None, "absent");
    }

    #[test]
    fn decodes_plus_percent_and_keeps_order_and_duplicates() {
        assert_eq!(
            names_values("b=2&a=x+y%2B%26&b=3&flag&=v"),
            vec![
                ("b".into(), "2".into()),
                ("a".into(), "x y+&".into()),
                ("b".into(), "3".into()),
                ("flag".into(), "".into()),
                ("".into(), "v".into()),
            ]
        );
    }

    #[test]
    fn names_are_decoded_so_encoded_spoofs_are_visible() {
        let params = Params::parse(b"%65ntra_sub=evil&entra%5Foid=x").unwrap();
        let names: Vec<_> = params.iter().map(|p| p.name.as_ref()).collect();
        assert_eq!(names, ["entra_sub", "entra_oid"]);
    }

    #[test]
    fn utf8_values_decode() {
        assert_eq!(
            names_values("n=J%C3%BCrgen"),
            vec![("n".into(), "Jürgen".into())]
        );
        assert_eq!(
            names_values("n=Jürgen"),
            vec![("n".into(), "Jürgen".into())]
        );
    }

    #[test]
    fn malformed_input_is_an_error() {
        for bad in [
            &b"a=%"[..],
            b"a=%4",
            b"a=%zz",
            b"a=%G0",
            b"%=1",
            b"a=%C3%28",    // invalid UTF-8 after decoding
            b"a=\xff",      // raw non-UTF-8
            b"a=%ED%A0%80", // UTF-16 surrogate, invalid in UTF-8
        ] {
            assert_eq!(
                Params::parse(bad),
                Err(AuthorizeError::MalformedEncoding),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn empty_segments_are_skipped_and_raw_is_kept() {
        let params = Params::parse(b"&a=%41&&b=c+d&").unwrap();
        assert_eq!(params.len(), 2);
        assert!(!params.has_structure_bytes());
        assert_eq!(params.to_forwarded_string(), "a=%41&b=c+d");
    }

    #[test]
    fn remove_where_counts_removals() {
        let mut params = Params::parse(b"a=1&entra_x=2&b=3&entra_y=4").unwrap();
        assert_eq!(params.remove_where(|n| n.starts_with("entra_")), 2);
        assert_eq!(params.to_forwarded_string(), "a=1&b=3");
    }

    #[test]
    fn structure_bytes_are_forwarded_encoded_and_the_rest_raw() {
        let params = Params::parse(b"a=1;entra_sub=x&b=%2F/&c=x]=y&d[=%5B").unwrap();
        assert!(params.has_structure_bytes());
        assert_eq!(
            params.to_forwarded_string(),
            "a=1%3Bentra_sub%3Dx&b=%2F/&c=x%5D%3Dy&d%5B=%5B"
        );
        let names: Vec<_> = params.iter().map(|p| p.name.as_ref()).collect();
        assert_eq!(names, ["a", "b", "c", "d["]);
    }

    #[test]
    fn plain_names() {
        for name in ["client_id", "client-request-id", "A9_-", "x"] {
            assert!(is_plain_name(name), "{name}");
        }
        for name in [
            "", "a.b", "a b", " a", "a[", "a[]", "[a]", "]a", "a;b", "é", "a\0", "a+b",
        ] {
            assert!(!is_plain_name(name), "{name:?}");
        }
    }

    /// The decoder before it was made one pass: a strict check, then `percent_encoding`.
    fn reference(raw: &str) -> Result<String, AuthorizeError> {
        let b = raw.as_bytes();
        for (i, _) in b.iter().enumerate().filter(|(_, &c)| c == b'%') {
            let hex = b
                .get(i + 1..i + 3)
                .ok_or(AuthorizeError::MalformedEncoding)?;
            if !hex.iter().all(u8::is_ascii_hexdigit) {
                return Err(AuthorizeError::MalformedEncoding);
            }
        }
        let spaced: Vec<u8> = b
            .iter()
            .map(|&c| if c == b'+' { b' ' } else { c })
            .collect();
        percent_encoding::percent_decode(&spaced)
            .decode_utf8()
            .map(|s| s.into_owned())
            .map_err(|_| AuthorizeError::MalformedEncoding)
    }

    proptest::proptest! {
        #[test]
        fn decoding_agrees_with_percent_encoding(raw in "([a-zA-Z0-9+%._~-]|%[0-9a-fA-FgG]{0,2}|%[c-fC-F][0-9a-f]%[89ab][0-9a-f]|é)*") {
            proptest::prop_assert_eq!(decode_component(&raw).map(Cow::into_owned), reference(&raw));
        }
    }

    #[test]
    fn encoding_covers_every_byte_class() {
        let mut out = String::new();
        push_form_encoded(&mut out, "aZ09*-._ ~/:%&=+é\u{7f}\n");
        assert_eq!(out, "aZ09*-._+%7E%2F%3A%25%26%3D%2B%C3%A9%7F%0A");
    }

    #[test]
    fn encoding_round_trips() {
        let mut out = String::new();
        push_encoded(&mut out, "entra_preferred_username", "a b+c&d=é<");
        push_renamed(&mut out, "entra_id_token_hint", "abc.def.ghi");
        let back = names_values(&out);
        assert_eq!(
            back,
            vec![
                ("entra_preferred_username".into(), "a b+c&d=é<".into()),
                ("entra_id_token_hint".into(), "abc.def.ghi".into()),
            ]
        );
    }
}
