//! A JSON value for `--json` output, written by serde_json. Object keys keep their insertion
//! order (the field order of every report is part of its contract); u64 values above
//! i64::MAX stay exact integers (a hand-built writer once printed them as floats).

use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};

/// A JSON value. Object keys keep their insertion order.
#[derive(Debug, Clone)]
pub enum Json {
    Null,
    Bool(bool),
    /// NaN and infinities become `null`; whole values below 2^53 are written as integers.
    Num(f64),
    UInt(u64),
    Str(String),
    Arr(Vec<Json>),
    Obj(Vec<(String, Json)>),
}

/// Integers up to this magnitude are exact in an f64.
const F64_EXACT_INT: f64 = 9_007_199_254_740_992.0;

impl Json {
    /// An object from `(key, value)` pairs.
    pub fn obj<const N: usize>(fields: [(&str, Json); N]) -> Json {
        Json::Obj(
            fields
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
        )
    }

    /// The compact JSON text.
    pub fn render(&self) -> String {
        // Writing to a String fails only for a map key that is not a string; ours all are.
        serde_json::to_string(self).unwrap_or_else(|e| unreachable!("JSON of a Json: {e}"))
    }
}

impl Serialize for Json {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Json::Null => s.serialize_unit(),
            Json::Bool(b) => s.serialize_bool(*b),
            // `3`, not `3.0`, for a whole number: as the hand-built writer printed it.
            Json::Num(x) if x.is_finite() && x.fract() == 0.0 && x.abs() < F64_EXACT_INT => {
                s.serialize_i64(*x as i64)
            }
            Json::Num(x) if x.is_finite() => s.serialize_f64(*x),
            Json::Num(_) => s.serialize_unit(),
            Json::UInt(u) => s.serialize_u64(*u),
            Json::Str(v) => s.serialize_str(v),
            Json::Arr(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            Json::Obj(fields) => {
                let mut map = s.serialize_map(Some(fields.len()))?;
                for (k, v) in fields {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
        }
    }
}

impl From<bool> for Json {
    fn from(b: bool) -> Json {
        Json::Bool(b)
    }
}

impl From<f64> for Json {
    fn from(x: f64) -> Json {
        Json::Num(x)
    }
}

impl From<u64> for Json {
    fn from(x: u64) -> Json {
        Json::UInt(x)
    }
}

impl From<usize> for Json {
    fn from(x: usize) -> Json {
        Json::from(x as u64)
    }
}

impl From<&str> for Json {
    fn from(s: &str) -> Json {
        Json::Str(s.to_string())
    }
}

impl From<String> for Json {
    fn from(s: String) -> Json {
        Json::Str(s)
    }
}

impl<T: Into<Json>> From<Option<T>> for Json {
    fn from(v: Option<T>) -> Json {
        v.map_or(Json::Null, Into::into)
    }
}

impl<T: Into<Json>> From<Vec<T>> for Json {
    fn from(v: Vec<T>) -> Json {
        Json::Arr(v.into_iter().map(Into::into).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::Json;

    #[test]
    fn renders_nested_values_and_escapes() {
        let j = Json::obj([
            ("a", Json::from(1.5)),
            ("b", Json::from("x\"y\n\u{1}")),
            ("c", Json::from(vec![Json::Null, Json::from(true)])),
            ("d", Json::from(f64::NAN)),
            ("e", Json::from(u64::MAX)),
            ("f", Json::from(3u64)),
            ("g", Json::from(2.0)),
            ("h", Json::from(-4.0)),
        ]);
        assert_eq!(
            j.render(),
            r#"{"a":1.5,"b":"x\"y\n\u0001","c":[null,true],"d":null,"e":18446744073709551615,"f":3,"g":2,"h":-4}"#
        );
        let back: serde_json::Value = serde_json::from_str(&j.render()).unwrap();
        assert_eq!(back["e"].as_u64(), Some(u64::MAX));
    }
}
