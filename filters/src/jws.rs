//! The parts of a compact JWS that hint validation reads: its three segments, two header
//! members and the claims the checks use.
//!
//! Members are decoded into typed fields, borrowing from the decoded bytes, rather than into a
//! `serde_json::Value` tree of every claim (measured in docs/BENCHMARKS.md). The rules that keep refusals precise:
//! a member of an unexpected type is kept as [`Member::Other`], so the check that reads it
//! refuses it exactly as before; a member that appears twice makes the object malformed, since
//! the OP's parser might keep the other copy; members nobody reads are checked for JSON syntax
//! only.

use std::borrow::Cow;
use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::de::{self, Deserializer, IgnoredAny, SeqAccess, Visitor};
use serde::Deserialize;

use crate::error::AuthorizeError;

/// The three segments of a compact JWS, before any check of their content.
pub(crate) struct CompactJws<'t> {
    pub signing_input: &'t str,
    pub header: &'t str,
    pub payload: &'t str,
    pub signature: &'t str,
}

impl<'t> CompactJws<'t> {
    pub fn split(token: &'t str) -> Result<Self, AuthorizeError> {
        let mut dots = memchr::memchr_iter(b'.', token.as_bytes());
        let (Some(first), Some(second), None) = (dots.next(), dots.next(), dots.next()) else {
            return Err(AuthorizeError::MalformedToken);
        };
        let (header, payload, signature) = (
            &token[..first],
            &token[first + 1..second],
            &token[second + 1..],
        );
        if header.is_empty() || payload.is_empty() || signature.is_empty() {
            return Err(AuthorizeError::MalformedToken);
        }
        Ok(CompactJws {
            signing_input: &token[..header.len() + 1 + payload.len()],
            header,
            payload,
            signature,
        })
    }
}

/// Room for a base64url segment's bytes, which the typed views below borrow from: `N` bytes on
/// the stack, the heap for a larger segment. An Entra hint's three segments fit, which saves
/// three allocations per request.
pub(crate) struct SegmentBuf<const N: usize> {
    stack: [u8; N],
    heap: Vec<u8>,
}

impl<const N: usize> SegmentBuf<N> {
    pub fn new() -> Self {
        SegmentBuf {
            stack: [0; N],
            heap: Vec::new(),
        }
    }

    /// The decoded segment, `None` when it is not base64url without padding.
    pub fn decode(&mut self, segment: &str) -> Option<&[u8]> {
        // The same engine either way, so both accept and refuse exactly the same inputs.
        if base64::decoded_len_estimate(segment.len()) <= N {
            let len = URL_SAFE_NO_PAD
                .decode_slice(segment, &mut self.stack)
                .ok()?;
            Some(&self.stack[..len])
        } else {
            // `decode_vec` appends.
            self.heap.clear();
            URL_SAFE_NO_PAD.decode_vec(segment, &mut self.heap).ok()?;
            Some(&self.heap)
        }
    }
}

/// The JOSE header members the validator reads.
#[derive(Deserialize, Default)]
#[serde(default)]
pub(crate) struct Header<'a> {
    #[serde(borrow)]
    pub alg: Member<'a>,
    #[serde(borrow)]
    pub kid: Member<'a>,
    /// Present with any value, even `null` (RFC 7515 §4.1.11).
    #[serde(deserialize_with = "present")]
    pub crit: bool,
}

/// The claims the validator reads (README "How a request is handled", step 6).
#[derive(Deserialize, Default)]
#[serde(default)]
pub(crate) struct Claims<'a> {
    #[serde(borrow)]
    pub iss: Member<'a>,
    #[serde(borrow)]
    pub aud: Member<'a>,
    #[serde(borrow)]
    pub tid: Member<'a>,
    #[serde(borrow)]
    pub oid: Member<'a>,
    #[serde(borrow)]
    pub sub: Member<'a>,
    #[serde(borrow)]
    pub preferred_username: Member<'a>,
    #[serde(borrow)]
    pub iat: Member<'a>,
    #[serde(borrow)]
    pub exp: Member<'a>,
    #[serde(borrow)]
    pub nbf: Member<'a>,
}

/// A [`Header`] or [`Claims`] from decoded bytes. A derived struct would also accept a JSON
/// array of its fields in order; a JOSE header and a claims set are objects (RFC 7515 §4,
/// RFC 7519 §7.2).
pub(crate) fn parse_object<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Option<T> {
    let first = bytes
        .iter()
        .find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'));
    if first != Some(&b'{') {
        return None;
    }
    serde_json::from_slice(bytes).ok()
}

/// One member's value, as far as the checks care.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) enum Member<'a> {
    /// Not in the object (serde's default); a `null` member is [`Member::Other`].
    #[default]
    Absent,
    Str(Cow<'a, str>),
    Int(i64),
    /// A fraction, or an integer beyond `i64`.
    Float(f64),
    /// An array; only its string elements are kept (the shape of `aud`).
    Strings(Vec<Cow<'a, str>>),
    /// `null`, a boolean, an object.
    Other,
}

impl<'a> Member<'a> {
    /// The string, if the member is one: absent and mistyped read alike.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Member::Str(s) => Some(s),
            _ => None,
        }
    }
}

fn present<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    IgnoredAny::deserialize(d).map(|_| true)
}

impl<'de: 'a, 'a> Deserialize<'de> for Member<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(MemberVisitor)
    }
}

struct MemberVisitor;

impl<'de> Visitor<'de> for MemberVisitor {
    type Value = Member<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Member::Str(Cow::Borrowed(v)))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Member::Str(Cow::Owned(v.to_owned())))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Member::Str(Cow::Owned(v)))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Member::Int(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(i64::try_from(v).map_or(Member::Float(v as f64), Member::Int))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Ok(Member::Float(v))
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Member::Other)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Member::Other)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut strings = Vec::new();
        while let Some(element) = seq.next_element::<Member<'de>>()? {
            if let Member::Str(s) = element {
                strings.push(s);
            }
        }
        Ok(Member::Strings(strings))
    }
    fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Member::Other)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_decode_alike_on_the_stack_and_on_the_heap() {
        for segment in [
            "",
            "YQ",
            "YWI",
            "YWJj",
            "eyJhIjoxfQ",
            "_-8",
            "YQ=",
            "Y",
            "YQ==",
            "a+b/",
        ] {
            let mut small = SegmentBuf::<1>::new();
            let mut large = SegmentBuf::<64>::new();
            let expected = URL_SAFE_NO_PAD.decode(segment).ok();
            assert_eq!(small.decode(segment), expected.as_deref(), "{segment:?}");
            assert_eq!(large.decode(segment), expected.as_deref(), "{segment:?}");
        }
        // A buffer used twice holds only the second segment.
        let mut reused = SegmentBuf::<1>::new();
        reused.decode("YWJj");
        assert_eq!(reused.decode("eHl6"), Some(&b"xyz"[..]));
    }

    #[test]
    fn members_keep_their_shape_and_borrow_when_unescaped() {
        let c: Claims = parse_object(
            br#"{"iss":"a","aud":["x",1,"y",null],"tid":7,"oid":null,"sub":{"k":1},
                "preferred_username":"J\u00fcrgen","iat":1.5,"exp":18446744073709551615,"nbf":-3,
                "other":1e400}"#,
        )
        .unwrap();
        assert!(matches!(c.iss, Member::Str(Cow::Borrowed("a"))));
        assert_eq!(c.aud, Member::Strings(vec!["x".into(), "y".into()]));
        assert_eq!(c.tid, Member::Int(7));
        assert_eq!(c.oid, Member::Other);
        assert_eq!(c.sub, Member::Other);
        assert_eq!(c.preferred_username.as_str(), Some("Jürgen"));
        assert_eq!(c.iat, Member::Float(1.5));
        assert_eq!(c.exp, Member::Float(u64::MAX as f64));
        assert_eq!(c.nbf, Member::Int(-3));
    }

    #[test]
    fn absent_is_not_null_and_crit_counts_whatever_its_value() {
        let h: Header = parse_object(br#"{"alg":"RS256","kid":null,"crit":null}"#).unwrap();
        assert_eq!(h.alg.as_str(), Some("RS256"));
        assert_eq!(h.kid, Member::Other);
        assert!(h.crit);
        let empty: Header = parse_object(b"{}").unwrap();
        assert_eq!(empty.kid, Member::Absent);
        assert!(!empty.crit);
    }

    #[test]
    fn repeated_members_and_non_objects_are_refused() {
        assert!(parse_object::<Claims>(br#"{"sub":"a","sub":"b"}"#).is_none());
        assert!(parse_object::<Header>(br#"{"alg":"none","alg":"RS256"}"#).is_none());
        assert!(parse_object::<Claims>(br#"[{"sub":"a"}]"#).is_none());
        assert!(parse_object::<Header>(br#" ["RS256","signer"]"#).is_none());
        assert!(parse_object::<Claims>(br#"{"iat":1e400}"#).is_none());
        assert!(parse_object::<Claims>(b"{\"sub\":\"a\"").is_none());
    }
}
