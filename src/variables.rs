//! Typed process variables.
//!
//! The engine stores an untyped JSON `1` as Integer and an untyped `1.0` as Double, and its
//! queries compare types exactly, so a variable sent without `type` can silently stop matching a
//! filter. Every value this crate sends therefore carries an explicit `type`, derived here from a
//! JSON or TOML value by one rule: integers → Integer (Long beyond 32 bits), floats → Double,
//! booleans → Boolean, strings → String, null → Null, objects and arrays → Json.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Variables by name, as the REST API exchanges them. Sorted, so request bodies are stable.
pub type Variables = BTreeMap<String, TypedValue>;

/// One variable value with its engine type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TypedValue {
    /// The engine type: `Integer`, `Long`, `Double`, `Boolean`, `String`, `Null`, `Json`, ...
    #[serde(rename = "type")]
    pub value_type: String,
    /// The value; for `Json` the document serialized as a string, as the engine expects.
    pub value: Value,
    /// Type-specific details (object type name, serialization format, ...).
    #[serde(default)]
    pub value_info: Map<String, Value>,
}

impl TypedValue {
    /// An `Integer` variable.
    pub fn integer(value: i32) -> Self {
        Self::new("Integer", Value::from(value))
    }

    /// A `String` variable.
    pub fn string(value: impl Into<String>) -> Self {
        Self::new("String", Value::String(value.into()))
    }

    fn new(value_type: &str, value: Value) -> Self {
        TypedValue {
            value_type: value_type.to_owned(),
            value,
            value_info: Map::new(),
        }
    }

    /// Types a JSON value by the crate's rule (see the module docs).
    pub fn from_json(value: Value) -> Self {
        match value {
            Value::Null => Self::new("Null", Value::Null),
            Value::Bool(b) => Self::new("Boolean", Value::Bool(b)),
            Value::Number(n) => {
                if let Some(i) = n.as_i64() {
                    if i32::try_from(i).is_ok() {
                        Self::new("Integer", Value::from(i))
                    } else {
                        Self::new("Long", Value::from(i))
                    }
                } else if n.is_u64() {
                    // Above i64::MAX: the engine has no unsigned type; a Double keeps the magnitude.
                    Self::new("Double", Value::from(n.as_f64().unwrap_or(f64::MAX)))
                } else {
                    Self::new("Double", Value::Number(n))
                }
            }
            Value::String(s) => Self::new("String", Value::String(s)),
            document @ (Value::Array(_) | Value::Object(_)) => {
                Self::new("Json", Value::String(document.to_string()))
            }
        }
    }

    /// Types a TOML value (from the `[variables]` table of a config file) by the same rule.
    pub fn from_toml(value: toml::Value) -> Self {
        match value {
            toml::Value::Datetime(d) => Self::new("String", Value::String(d.to_string())),
            other => {
                // Every other TOML value has an exact JSON counterpart.
                let json = serde_json::to_value(other).unwrap_or(Value::Null);
                Self::from_json(json)
            }
        }
    }
}

/// The variables the daemon sends on complete when none are configured: `var1` = Integer 1 and
/// `var2` = String "value", as the process this worker was built for expects.
pub fn default_variables() -> Variables {
    BTreeMap::from([
        ("var1".to_owned(), TypedValue::integer(1)),
        ("var2".to_owned(), TypedValue::string("value")),
    ])
}

/// Parses one `NAME=JSON` assignment, as given to `--var`.
///
/// The value must be JSON so that its type is unambiguous: `n=1` is an Integer, `s="1"` a String.
pub fn parse_assignment(assignment: &str) -> Result<(String, TypedValue), String> {
    let (name, json) = assignment
        .split_once('=')
        .ok_or_else(|| format!("`{assignment}` is not NAME=JSON"))?;
    let name = name.trim();
    if name.is_empty() {
        return Err(format!("`{assignment}` has an empty variable name"));
    }
    let value: Value = serde_json::from_str(json).map_err(|e| {
        format!("the value of `{name}` is not JSON ({e}); quote strings, e.g. {name}='\"text\"'")
    })?;
    Ok((name.to_owned(), TypedValue::from_json(value)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn typed(json: &str) -> TypedValue {
        parse_assignment(&format!("v={json}"))
            .expect("valid assignment")
            .1
    }

    #[test]
    fn json_values_get_the_documented_engine_types() {
        assert_eq!(typed("1"), TypedValue::integer(1));
        assert_eq!(typed("-2147483648").value_type, "Integer");
        assert_eq!(typed("2147483648").value_type, "Long");
        assert_eq!(typed("2147483648").value, json!(2147483648_i64));
        assert_eq!(typed("1.5").value_type, "Double");
        assert_eq!(typed("true").value_type, "Boolean");
        assert_eq!(typed("\"x\""), TypedValue::string("x"));
        assert_eq!(typed("null").value_type, "Null");
        let doc = typed(r#"{"a":[1,2]}"#);
        assert_eq!(doc.value_type, "Json");
        assert_eq!(doc.value, json!(r#"{"a":[1,2]}"#));
        assert_eq!(typed("[1]").value_type, "Json");
    }

    #[test]
    fn assignments_that_are_not_name_equals_json_are_rejected_with_the_reason() {
        assert!(parse_assignment("novalue")
            .unwrap_err()
            .contains("NAME=JSON"));
        assert!(parse_assignment("=1")
            .unwrap_err()
            .contains("empty variable name"));
        let err = parse_assignment("s=hello").unwrap_err();
        assert!(err.contains("`s` is not JSON"), "{err}");
    }

    #[test]
    fn toml_values_follow_the_same_rule() {
        let table: toml::Table =
            toml::from_str("i = 1\nl = 5000000000\nf = 0.5\nb = false\ns = \"v\"\nt = { k = 1 }")
                .expect("valid toml");
        let types: Vec<_> = ["i", "l", "f", "b", "s", "t"]
            .iter()
            .map(|k| TypedValue::from_toml(table[*k].clone()).value_type)
            .collect();
        assert_eq!(
            types,
            ["Integer", "Long", "Double", "Boolean", "String", "Json"]
        );
    }

    #[test]
    fn defaults_are_integer_one_and_string_value() {
        let body = serde_json::to_value(default_variables()).expect("serializable");
        assert_eq!(
            body,
            json!({
                "var1": {"type": "Integer", "value": 1, "valueInfo": {}},
                "var2": {"type": "String", "value": "value", "valueInfo": {}}
            })
        );
    }
}
