//! Atomic field operations (`POST /v1/{store}/{key}/ops`): [`FieldOp`] builds each op exactly
//! as the contract spells it.

use serde::Serialize;
use serde_json::{Map, Number, Value};

use crate::error::{Error, Result};

/// Which end of a list an op works on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    Front,
    Back,
}

impl End {
    fn as_str(self) -> &'static str {
        match self {
            End::Front => "front",
            End::Back => "back",
        }
    }
}

/// One field operation; serializes to the contract's object, e.g.
/// `{"op": "increment", "field": "count", "by": 1}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct FieldOp(Map<String, Value>);

impl FieldOp {
    /// Adds `by` to a numeric field, creating it at `by`. Result: the new number.
    pub fn increment(field: impl Into<String>, by: impl Into<Number>) -> FieldOp {
        FieldOp::new("increment", field).with("by", Value::Number(by.into()))
    }

    /// Appends (`End::Back`, OCP `append`) or prepends (`End::Front`, OCP `unshift`) `values`.
    /// Result: the new length.
    pub fn list_push<V: Into<Value>>(
        field: impl Into<String>,
        values: impl IntoIterator<Item = V>,
        end: End,
    ) -> FieldOp {
        FieldOp::new("list_push", field)
            .with("values", to_array(values))
            .with("end", end.as_str().into())
    }

    /// Removes and returns up to `count` elements from `end` (`End::Front` is OCP `shift`).
    /// Result: the removed elements.
    pub fn list_pop(field: impl Into<String>, count: u64, end: End) -> FieldOp {
        FieldOp::new("list_pop", field)
            .with("count", count.into())
            .with("end", end.as_str().into())
    }

    /// Reads the first `count` elements without removing them. Result: the elements.
    pub fn list_peek(field: impl Into<String>, count: u64) -> FieldOp {
        FieldOp::new("list_peek", field).with("count", count.into())
    }

    /// Adds strings or numbers to a set (a sorted array without duplicates). Result: how many
    /// were added.
    pub fn set_add<V: Into<Value>>(
        field: impl Into<String>,
        members: impl IntoIterator<Item = V>,
    ) -> FieldOp {
        FieldOp::new("set_add", field).with("members", to_array(members))
    }

    /// Removes members from a set. Result: how many were removed.
    pub fn set_remove<V: Into<Value>>(
        field: impl Into<String>,
        members: impl IntoIterator<Item = V>,
    ) -> FieldOp {
        FieldOp::new("set_remove", field).with("members", to_array(members))
    }

    /// Tests membership. Result: one boolean per member.
    pub fn set_contains<V: Into<Value>>(
        field: impl Into<String>,
        members: impl IntoIterator<Item = V>,
    ) -> FieldOp {
        FieldOp::new("set_contains", field).with("members", to_array(members))
    }

    /// An op given as JSON (e.g. from the command line), passed on as it is; the server
    /// validates it. It must be an object with a string `op`.
    pub fn from_json(op: Value) -> Result<FieldOp> {
        match op {
            Value::Object(map) if map.get("op").is_some_and(Value::is_string) => Ok(FieldOp(map)),
            _ => Err(Error::InvalidArgument(
                "a field op must be a JSON object with a string \"op\"".to_owned(),
            )),
        }
    }

    /// The op's name (`increment`, `list_push`, …).
    pub fn name(&self) -> &str {
        self.0.get("op").and_then(Value::as_str).unwrap_or_default()
    }

    /// The op as JSON.
    pub fn as_json(&self) -> &Map<String, Value> {
        &self.0
    }

    fn new(op: &str, field: impl Into<String>) -> FieldOp {
        let mut map = Map::new();
        map.insert("op".to_owned(), op.into());
        map.insert("field".to_owned(), Value::String(field.into()));
        FieldOp(map)
    }

    fn with(mut self, name: &str, value: Value) -> FieldOp {
        self.0.insert(name.to_owned(), value);
        self
    }
}

fn to_array<V: Into<Value>>(values: impl IntoIterator<Item = V>) -> Value {
    Value::Array(values.into_iter().map(Into::into).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn text(op: &FieldOp) -> String {
        serde_json::to_string(op).unwrap()
    }

    #[test]
    fn field_ops_serialize_as_the_contract_says() {
        let table = [
            (
                FieldOp::increment("count", 1),
                r#"{"op":"increment","field":"count","by":1}"#,
            ),
            (
                FieldOp::increment("cost", Number::from_f64(-2.5).unwrap()),
                r#"{"op":"increment","field":"cost","by":-2.5}"#,
            ),
            (
                FieldOp::list_push("q", [json!(1), json!({"a": "b"})], End::Back),
                r#"{"op":"list_push","field":"q","values":[1,{"a":"b"}],"end":"back"}"#,
            ),
            (
                FieldOp::list_push("q", ["x"], End::Front),
                r#"{"op":"list_push","field":"q","values":["x"],"end":"front"}"#,
            ),
            (
                FieldOp::list_pop("q", 2, End::Front),
                r#"{"op":"list_pop","field":"q","count":2,"end":"front"}"#,
            ),
            (
                FieldOp::list_peek("q", 3),
                r#"{"op":"list_peek","field":"q","count":3}"#,
            ),
            (
                FieldOp::set_add("tags", [json!("a"), json!(2)]),
                r#"{"op":"set_add","field":"tags","members":["a",2]}"#,
            ),
            (
                FieldOp::set_remove("tags", ["a"]),
                r#"{"op":"set_remove","field":"tags","members":["a"]}"#,
            ),
            (
                FieldOp::set_contains("tags", [1, 2]),
                r#"{"op":"set_contains","field":"tags","members":[1,2]}"#,
            ),
        ];
        for (op, expected) in table {
            assert_eq!(text(&op), expected);
        }
    }

    #[test]
    fn big_increments_keep_their_digits() {
        let n: Number = serde_json::from_str("123456789012345678901234567890").unwrap();
        assert_eq!(
            text(&FieldOp::increment("n", n)),
            r#"{"op":"increment","field":"n","by":123456789012345678901234567890}"#
        );
    }

    #[test]
    fn raw_ops_pass_through() {
        let op = FieldOp::from_json(json!({"op": "future_op", "field": "f", "x": 1})).unwrap();
        assert_eq!(op.name(), "future_op");
        assert_eq!(text(&op), r#"{"op":"future_op","field":"f","x":1}"#);
        assert!(FieldOp::from_json(json!([1])).is_err());
        assert!(FieldOp::from_json(json!({"field": "f"})).is_err());
    }
}
