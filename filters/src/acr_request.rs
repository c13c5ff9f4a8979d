//! The acr values a request's `claims` parameter asks for (OpenID Connect Core §5.5:
//! `id_token.acr`, with `values` or `value`).
//!
//! The JSON is walked to that one member instead of being built into a `serde_json::Value`,
//! since Entra's parameter also carries the whole `amr` list (the measurement is in
//! docs/BENCHMARKS.md, "What this issue changed"). The reading is `Value`'s: a member of another shape asks for nothing,
//! and of a repeated member the last one counts.

use std::borrow::Cow;
use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use crate::jws::Member;

/// The strings of `id_token.acr.values` when it is an array, else `id_token.acr.value` when it is
/// a string. Empty when `claims` is not JSON or asks for no acr.
pub(crate) fn requested_in_claims(claims: &str) -> Vec<Cow<'_, str>> {
    let mut de = serde_json::Deserializer::from_str(claims);
    let acr = match Walk(&["id_token", "acr"]).deserialize(&mut de) {
        Ok(acr) if de.end().is_ok() => acr,
        _ => None,
    };
    match acr {
        Some(Acr {
            values: Member::Strings(values),
            ..
        }) => values,
        Some(Acr {
            value: Member::Str(value),
            ..
        }) => vec![value],
        _ => Vec::new(),
    }
}

/// The two members of the `acr` request that matter.
#[derive(Default)]
struct Acr<'a> {
    values: Member<'a>,
    value: Member<'a>,
}

/// Follows object members by name; at the end of the path, reads an [`Acr`].
struct Walk<'p>(&'p [&'p str]);

impl<'de> DeserializeSeed<'de> for Walk<'_> {
    type Value = Option<Acr<'de>>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Walk<'_> {
    type Value = Option<Acr<'de>>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let Some((next, rest)) = self.0.split_first() else {
            let mut acr = Acr::default();
            while let Some(Key(key)) = map.next_key()? {
                match key.as_ref() {
                    "values" => acr.values = map.next_value()?,
                    "value" => acr.value = map.next_value()?,
                    _ => drop(map.next_value::<IgnoredAny>()?),
                }
            }
            return Ok(Some(acr));
        };
        let mut found = None;
        while let Some(Key(key)) = map.next_key()? {
            if key == *next {
                found = map.next_value_seed(Walk(rest))?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(found)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(None)
    }
    fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
}

/// An object member's name, borrowed unless it holds escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Member::deserialize(d)? {
            Member::Str(name) => Ok(Key(name)),
            _ => Err(serde::de::Error::custom("object keys are strings")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acr(claims: &str) -> Vec<String> {
        requested_in_claims(claims)
            .into_iter()
            .map(Cow::into_owned)
            .collect()
    }

    #[test]
    fn reads_values_then_value_like_a_value_walk() {
        let entra = r#"{"id_token":{"acr":{"essential":true,"values":["possessionorinherence"]},"amr":{"essential":true,"values":["face","fido"]}}}"#;
        assert_eq!(acr(entra), ["possessionorinherence"]);
        assert_eq!(acr(r#"{"id_token":{"acr":{"value":"x"}}}"#), ["x"]);
        assert_eq!(
            acr(r#"{"id_token":{"acr":{"values":"no","value":"x"}}}"#),
            ["x"]
        );
        assert_eq!(
            acr(r#"{"id_token":{"acr":{"values":["a",1,null,"b"]}}}"#),
            ["a", "b"]
        );
        assert_eq!(acr(r#"{"\u0069d_token":{"acr":{"value":"esc"}}}"#), ["esc"]);
    }

    #[test]
    fn other_shapes_ask_for_nothing_and_the_last_repeat_counts() {
        for nothing in [
            "not json",
            "",
            r#"{"userinfo":{"acr":{"value":"x"}}}"#,
            r#"{"id_token":[{"acr":{"value":"x"}}]}"#,
            r#"{"id_token":{"acr":["x"]}}"#,
            r#"{"id_token":{"acr":{"value":"x"}},"id_token":null}"#,
            r#"{"id_token":{"acr":{"value":"x"}}} trailing"#,
            r#"["id_token"]"#,
        ] {
            assert_eq!(acr(nothing), Vec::<String>::new(), "{nothing}");
        }
        assert_eq!(
            acr(r#"{"id_token":{"acr":{"value":"a"},"acr":{"value":"b"}}}"#),
            ["b"]
        );
    }
}
