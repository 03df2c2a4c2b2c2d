//! Strict JSON reading for bundle encodings: a `serde_json::Value` that rejects duplicate
//! object members at every level.
//!
//! serde_json keeps the last of two equal keys without a word. The bundle map spec says
//! consumers MUST reject duplicate trust domains when they can detect them (checklist item 40),
//! and inside a JWK a second `kid` or `use` could make two readers see different keys, so every
//! bundle encoding is read through this visitor. serde_json's recursion limit (128) still applies,
//! because the visitor is driven by its `deserialize_any`.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// A JSON value read with duplicate object members rejected.
pub(crate) struct StrictValue(pub(crate) Value);

/// Parses JSON text, rejecting duplicate members; the message names the duplicate.
pub(crate) fn parse(bytes: &[u8]) -> Result<Value, serde_json::Error> {
    serde_json::from_slice::<StrictValue>(bytes).map(|v| v.0)
}

impl<'de> Deserialize<'de> for StrictValue {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(StrictVisitor)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = StrictValue;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<StrictValue, E> {
        Ok(StrictValue(Value::Bool(v)))
    }

    fn visit_i64<E>(self, v: i64) -> Result<StrictValue, E> {
        Ok(StrictValue(Value::Number(v.into())))
    }

    fn visit_u64<E>(self, v: u64) -> Result<StrictValue, E> {
        Ok(StrictValue(Value::Number(v.into())))
    }

    fn visit_f64<E>(self, v: f64) -> Result<StrictValue, E> {
        // JSON text cannot hold NaN or infinity, so `from_f64` only fails on input serde_json
        // never produces; null is a harmless stand-in that no member accepts as a number.
        Ok(StrictValue(
            Number::from_f64(v).map_or(Value::Null, Value::Number),
        ))
    }

    fn visit_str<E>(self, v: &str) -> Result<StrictValue, E> {
        Ok(StrictValue(Value::String(v.to_owned())))
    }

    fn visit_string<E>(self, v: String) -> Result<StrictValue, E> {
        Ok(StrictValue(Value::String(v)))
    }

    fn visit_unit<E>(self) -> Result<StrictValue, E> {
        Ok(StrictValue(Value::Null))
    }

    fn visit_none<E>(self) -> Result<StrictValue, E> {
        Ok(StrictValue(Value::Null))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<StrictValue, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
        while let Some(StrictValue(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(StrictValue(Value::Array(items)))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<StrictValue, A::Error> {
        let mut map = Map::new();
        while let Some(key) = access.next_key::<String>()? {
            if map.contains_key(&key) {
                return Err(de::Error::custom(format_args!("duplicate member {key:?}")));
            }
            let StrictValue(value) = access.next_value()?;
            map.insert(key, value);
        }
        Ok(StrictValue(Value::Object(map)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_values_as_serde_json_without_duplicates() {
        let text = br#"{"a":[1,-2,3.5,"x",null,true,{"b":{}}],"c":18446744073709551615}"#;
        let expected: Value = serde_json::from_slice(text).unwrap();
        assert_eq!(parse(text).unwrap(), expected);
    }

    #[test]
    fn duplicates_are_rejected_at_any_depth() {
        let err = parse(br#"{"a":1,"a":2}"#).unwrap_err().to_string();
        assert!(err.starts_with("duplicate member \"a\""), "{err}");
        let err = parse(br#"{"x":[{"kid":"1","kid":"2"}]}"#)
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("duplicate member \"kid\""), "{err}");
        // serde_json alone keeps the last value: the reason this module exists.
        let lax: Value = serde_json::from_slice(br#"{"a":1,"a":2}"#).unwrap();
        assert_eq!(lax["a"], 2);
    }

    #[test]
    fn deep_nesting_hits_the_recursion_limit_instead_of_the_stack() {
        let deep = "[".repeat(100_000);
        assert!(parse(deep.as_bytes()).is_err());
    }
}
