//! The one place where JSON meets the host's protobuf values.
//!
//! * JSON ↔ `google.protobuf.Struct`/`Value`. Protobuf has a single number type, a double, so
//!   every JSON number is sent as an `f64` (integers beyond ±2^53 lose precision) and the host
//!   returns every number as a double. Going back to JSON, a double that is an exact integer
//!   within ±2^53 becomes a JSON integer again (`42.0` → `42`), so Python sees the `int` it
//!   wrote; any other finite double stays a float, and NaN or an infinity (which JSON cannot
//!   hold) becomes `null`. The price: a float written as `3.0` also reads back as `3`.
//! * An `Attestation` → the dict handed to Python, shaped like the host's own attestation JSON
//!   (protocol §4.5): `{id, subjects, predicates, contexts, actors, timestamp, source,
//!   attributes, created_at}`, with `timestamp` and `created_at` as RFC 3339 strings in UTC
//!   (`Z`), plus `timestamp_ms` and `created_at_ms` holding the raw Unix milliseconds. Lists are
//!   always lists and `attributes` always an object (`{}` when unset).

use prost_types::value::Kind;
use prost_types::{ListValue, Struct, Value as ProtoValue};
use serde_json::{Map, Number, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::proto::Attestation;

/// Largest magnitude at which every integer is exactly representable as an `f64`.
const EXACT_INTEGER_LIMIT: f64 = 9_007_199_254_740_992.0; // 2^53

/// A JSON object as a protobuf `Struct`.
pub fn to_struct(object: &Map<String, Value>) -> Struct {
    Struct {
        fields: object
            .iter()
            .map(|(key, value)| (key.clone(), to_proto(value)))
            .collect(),
    }
}

/// A JSON value as a protobuf `Value` (numbers as doubles).
pub fn to_proto(value: &Value) -> ProtoValue {
    let kind = match value {
        Value::Null => Kind::NullValue(0),
        Value::Bool(flag) => Kind::BoolValue(*flag),
        Value::Number(number) => Kind::NumberValue(number.as_f64().unwrap_or(f64::NAN)),
        Value::String(text) => Kind::StringValue(text.clone()),
        Value::Array(items) => Kind::ListValue(ListValue {
            values: items.iter().map(to_proto).collect(),
        }),
        Value::Object(object) => Kind::StructValue(to_struct(object)),
    };
    ProtoValue { kind: Some(kind) }
}

/// A protobuf `Struct` as a JSON object.
pub fn from_struct(fields: &Struct) -> Map<String, Value> {
    fields
        .fields
        .iter()
        .map(|(key, value)| (key.clone(), from_proto(value)))
        .collect()
}

/// A protobuf `Value` as JSON; exact integral doubles become integers (see the module notes).
pub fn from_proto(value: &ProtoValue) -> Value {
    match &value.kind {
        None | Some(Kind::NullValue(_)) => Value::Null,
        Some(Kind::BoolValue(flag)) => Value::Bool(*flag),
        Some(Kind::NumberValue(number)) => from_double(*number),
        Some(Kind::StringValue(text)) => Value::String(text.clone()),
        Some(Kind::ListValue(list)) => Value::Array(list.values.iter().map(from_proto).collect()),
        Some(Kind::StructValue(object)) => Value::Object(from_struct(object)),
    }
}

fn from_double(number: f64) -> Value {
    if number.fract() == 0.0 && number.abs() <= EXACT_INTEGER_LIMIT {
        // In range and integral, so the cast is exact.
        return Value::Number(Number::from(number as i64));
    }
    Number::from_f64(number).map_or(Value::Null, Value::Number)
}

/// An attestation as the dict Python code receives (see the module notes for the shape).
pub fn attestation_to_json(attestation: &Attestation) -> Value {
    let strings = |list: &[String]| Value::from(list.to_vec());
    let attributes = attestation
        .attributes
        .as_ref()
        .map(from_struct)
        .unwrap_or_default();
    let mut dict = Map::new();
    dict.insert("id".into(), Value::from(attestation.id.clone()));
    dict.insert("subjects".into(), strings(&attestation.subjects));
    dict.insert("predicates".into(), strings(&attestation.predicates));
    dict.insert("contexts".into(), strings(&attestation.contexts));
    dict.insert("actors".into(), strings(&attestation.actors));
    dict.insert("timestamp".into(), rfc3339_from_ms(attestation.timestamp));
    dict.insert("timestamp_ms".into(), Value::from(attestation.timestamp));
    dict.insert("source".into(), Value::from(attestation.source.clone()));
    dict.insert("attributes".into(), Value::Object(attributes));
    dict.insert("created_at".into(), rfc3339_from_ms(attestation.created_at));
    dict.insert("created_at_ms".into(), Value::from(attestation.created_at));
    Value::Object(dict)
}

/// Unix milliseconds as RFC 3339 in UTC (`2026-05-02T06:41:09.204Z`; no fraction when it is
/// zero), or `null` for an instant RFC 3339 cannot express.
pub fn rfc3339_from_ms(ms: i64) -> Value {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|at| at.format(&Rfc3339).ok())
        .map_or(Value::Null, Value::String)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn round_trip(value: Value) -> Value {
        from_proto(&to_proto(&value))
    }

    #[test]
    fn nested_values_survive_the_round_trip() {
        let value = json!({
            "name": "pump", "ok": true, "none": null, "ratio": 3.25,
            "list": [1, "two", [false], {"deep": {"x": -7}}],
        });
        assert_eq!(round_trip(value.clone()), value);
    }

    #[test]
    fn numbers_travel_as_doubles() {
        let proto = to_proto(&json!(42));
        assert_eq!(proto.kind, Some(Kind::NumberValue(42.0)));
    }

    #[test]
    fn integral_doubles_come_back_as_integers_within_2_pow_53() {
        let double = |x: f64| ProtoValue {
            kind: Some(Kind::NumberValue(x)),
        };
        assert_eq!(from_proto(&double(42.0)), json!(42));
        assert!(from_proto(&double(42.0)).is_i64());
        assert_eq!(from_proto(&double(-0.0)), json!(0));
        assert_eq!(
            from_proto(&double(EXACT_INTEGER_LIMIT)),
            json!(9_007_199_254_740_992_i64)
        );
        let beyond = from_proto(&double(EXACT_INTEGER_LIMIT * 4.0));
        assert!(beyond.is_f64(), "{beyond}");
        assert_eq!(from_proto(&double(2.5)), json!(2.5));
        assert_eq!(from_proto(&double(f64::NAN)), Value::Null);
        assert_eq!(from_proto(&double(f64::INFINITY)), Value::Null);
    }

    #[test]
    fn an_unset_kind_reads_as_null() {
        assert_eq!(from_proto(&ProtoValue { kind: None }), Value::Null);
    }

    #[test]
    fn structs_convert_both_ways() {
        let object = json!({"a": 1, "b": {"c": [1.5, "d"]}});
        let Value::Object(map) = object.clone() else {
            unreachable!()
        };
        assert_eq!(Value::Object(from_struct(&to_struct(&map))), object);
    }

    #[test]
    fn timestamps_are_rfc3339_utc_with_trimmed_fractions() {
        assert_eq!(rfc3339_from_ms(0), json!("1970-01-01T00:00:00Z"));
        assert_eq!(
            rfc3339_from_ms(1_777_707_669_204),
            json!("2026-05-02T07:41:09.204Z")
        );
        assert_eq!(
            rfc3339_from_ms(1_777_707_669_200),
            json!("2026-05-02T07:41:09.2Z")
        );
        assert_eq!(rfc3339_from_ms(i64::MAX), Value::Null);
    }

    #[test]
    fn attestations_become_python_dicts() {
        let Value::Object(attributes) = json!({"bar": 3.25, "count": 42}) else {
            unreachable!()
        };
        let attestation = Attestation {
            id: "AS1".into(),
            subjects: vec!["pump-12".into()],
            predicates: vec!["pressure".into()],
            contexts: vec!["plant-north".into()],
            actors: vec!["AS1".into()],
            timestamp: 1_777_707_669_204,
            source: "python".into(),
            attributes: Some(to_struct(&attributes)),
            created_at: 1_777_707_669_000,
            ..Attestation::default()
        };
        assert_eq!(
            attestation_to_json(&attestation),
            json!({
                "id": "AS1", "subjects": ["pump-12"], "predicates": ["pressure"],
                "contexts": ["plant-north"], "actors": ["AS1"],
                "timestamp": "2026-05-02T07:41:09.204Z", "timestamp_ms": 1_777_707_669_204_i64,
                "source": "python", "attributes": {"bar": 3.25, "count": 42},
                "created_at": "2026-05-02T07:41:09Z", "created_at_ms": 1_777_707_669_000_i64,
            })
        );
    }

    #[test]
    fn empty_attestations_still_have_every_key() {
        let dict = attestation_to_json(&Attestation::default());
        assert_eq!(dict["subjects"], json!([]));
        assert_eq!(dict["attributes"], json!({}));
        assert_eq!(dict["timestamp"], json!("1970-01-01T00:00:00Z"));
    }
}
