//! JSON Merge Patch (RFC 7396), the semantics of `PATCH /v1/{store}/{key}`.
//!
//! [`merge_patch`] is the algorithm of RFC 7396 section 2, applied in place. Limits (depth, size,
//! a `null` result) are the caller's: the contract checks them on the result. Member order is
//! kept: surviving members stay where they were and new ones are appended, so a patch never
//! reorders the members it does not touch.

use serde_json::{Map, Value};

/// Apply `patch` to `target` in place exactly as RFC 7396 section 2 says (non-object patch
/// replaces the target; an object patch on a non-object target starts from {}; null members
/// delete).
///
/// Recursion follows the nesting of `patch`, which the caller has bounded by parsing it with
/// [`crate::json::parse_strict`].
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch_members) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Value::Object(target_members) = target else {
        return; // unreachable: made an object just above
    };
    for (name, patch_value) in patch_members {
        if patch_value.is_null() {
            // `shift_remove` keeps the order of the other members (`remove` would swap the last
            // member into the hole).
            target_members.shift_remove(name);
        } else if let Some(existing) = target_members.get_mut(name) {
            merge_patch(existing, patch_value);
        } else {
            // A new member is the patch value with its own null members removed, which is what
            // merging it into "no value" yields.
            let mut fresh = Value::Null;
            merge_patch(&mut fresh, patch_value);
            target_members.insert(name.clone(), fresh);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn check(target: &str, patch: &str, want: &str) {
        let mut value: Value = serde_json::from_str(target).unwrap();
        let patch_value: Value = serde_json::from_str(patch).unwrap();
        let want_value: Value = serde_json::from_str(want).unwrap();
        merge_patch(&mut value, &patch_value);
        assert_eq!(value, want_value, "target {target} patch {patch}");
    }

    /// Every example of RFC 7396 appendix A, in order.
    #[test]
    fn rfc_7396_appendix_a() {
        let cases: &[(&str, &str, &str)] = &[
            (r#"{"a":"b"}"#, r#"{"a":"c"}"#, r#"{"a":"c"}"#),
            (r#"{"a":"b"}"#, r#"{"b":"c"}"#, r#"{"a":"b","b":"c"}"#),
            (r#"{"a":"b"}"#, r#"{"a":null}"#, r#"{}"#),
            (r#"{"a":"b","b":"c"}"#, r#"{"a":null}"#, r#"{"b":"c"}"#),
            (r#"{"a":["b"]}"#, r#"{"a":"c"}"#, r#"{"a":"c"}"#),
            (r#"{"a":"c"}"#, r#"{"a":["b"]}"#, r#"{"a":["b"]}"#),
            (
                r#"{"a":{"b":"c"}}"#,
                r#"{"a":{"b":"d","c":null}}"#,
                r#"{"a":{"b":"d"}}"#,
            ),
            (r#"{"a":[{"b":"c"}]}"#, r#"{"a":[1]}"#, r#"{"a":[1]}"#),
            (r#"["a","b"]"#, r#"["c","d"]"#, r#"["c","d"]"#),
            (r#"{"a":"b"}"#, r#"["c"]"#, r#"["c"]"#),
            (r#"{"a":"foo"}"#, r#"null"#, r#"null"#),
            (r#"{"a":"foo"}"#, r#""bar""#, r#""bar""#),
            (r#"{"e":null}"#, r#"{"a":1}"#, r#"{"e":null,"a":1}"#),
            (r#"[1,2]"#, r#"{"a":"b","c":null}"#, r#"{"a":"b"}"#),
            (
                r#"{}"#,
                r#"{"a":{"bb":{"ccc":null}}}"#,
                r#"{"a":{"bb":{}}}"#,
            ),
        ];
        for (target, patch, want) in cases {
            check(target, patch, want);
        }
    }

    /// The RFC 7396 section 3 example, and other edge cases.
    #[test]
    fn more_cases() {
        let cases: &[(&str, &str, &str)] = &[
            (
                r#"{"title":"Goodbye!","author":{"givenName":"John","familyName":"Doe"},
                    "tags":["example","sample"],"content":"This will be unchanged"}"#,
                r#"{"title":"Hello!","phoneNumber":"+01-555-1234",
                    "author":{"familyName":null},"tags":["example"]}"#,
                r#"{"title":"Hello!","author":{"givenName":"John"},"tags":["example"],
                    "content":"This will be unchanged","phoneNumber":"+01-555-1234"}"#,
            ),
            // Scalars and null targets.
            ("null", r#"{"a":1}"#, r#"{"a":1}"#),
            ("1", r#"{"a":null}"#, "{}"),
            ("\"s\"", "{}", "{}"),
            ("{}", "{}", "{}"),
            (r#"{"a":1}"#, "2", "2"),
            (r#"{"a":1}"#, "[]", "[]"),
            // Deleting a missing member is a no-op.
            (r#"{"a":1}"#, r#"{"b":null}"#, r#"{"a":1}"#),
            // Nulls inside arrays are values, not deletions.
            (
                r#"{"a":1}"#,
                r#"{"a":[null,{"b":null}]}"#,
                r#"{"a":[null,{"b":null}]}"#,
            ),
            // A nested object over a scalar starts from {} and drops its nulls.
            (
                r#"{"a":5}"#,
                r#"{"a":{"b":null,"c":{"d":null}}}"#,
                r#"{"a":{"c":{}}}"#,
            ),
            // Numbers are replaced by their exact text.
            (r#"{"a":1}"#, r#"{"a":1.0}"#, r#"{"a":1.0}"#),
        ];
        for (target, patch, want) in cases {
            check(target, patch, want);
        }
    }

    #[test]
    fn keeps_member_order() {
        let mut v = json!({"a": 1, "b": 2, "c": 3, "d": 4});
        merge_patch(&mut v, &json!({"b": null, "e": 5, "c": 30}));
        assert_eq!(v.to_string(), r#"{"a":1,"c":30,"d":4,"e":5}"#);
    }

    /// RFC 7396 section 2, written as a pure function that builds a new value.
    fn model(target: &Value, patch: &Value) -> Value {
        match patch {
            Value::Object(patch_members) => {
                let mut out: Map<String, Value> = match target {
                    Value::Object(m) => m.clone(),
                    _ => Map::new(),
                };
                for (name, patch_value) in patch_members {
                    if patch_value.is_null() {
                        out.shift_remove(name);
                        continue;
                    }
                    let merged = model(out.get(name).unwrap_or(&Value::Null), patch_value);
                    match out.get_mut(name) {
                        Some(slot) => *slot = merged,
                        None => {
                            out.insert(name.clone(), merged);
                        }
                    }
                }
                Value::Object(out)
            }
            other => other.clone(),
        }
    }

    /// Values over a small alphabet of names, so targets and patches overlap.
    fn any_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i32>().prop_map(|n| json!(n)),
            "[a-c]{0,2}".prop_map(Value::String),
        ];
        leaf.prop_recursive(5, 64, 5, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map("[a-e]", inner, 0..5)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn any_object() -> impl Strategy<Value = Value> {
        prop::collection::btree_map("[a-e]", any_value(), 0..5)
            .prop_map(|m| Value::Object(m.into_iter().collect()))
    }

    /// Scalars, `null` and arrays (which may hold objects).
    fn any_non_object() -> impl Strategy<Value = Value> {
        any_value().prop_map(|v| match v {
            Value::Object(members) => Value::Array(members.into_iter().map(|(_, v)| v).collect()),
            other => other,
        })
    }

    fn patched(target: &Value, patch: &Value) -> Value {
        let mut out = target.clone();
        merge_patch(&mut out, patch);
        out
    }

    /// Every member the patch object names is as the patch says: gone when null, merged
    /// further when an object, the patch value otherwise.
    fn assert_follows_patch(result: &Value, patch: &Map<String, Value>) {
        let Value::Object(members) = result else {
            panic!("an object patch must yield an object, got {result}");
        };
        for (name, patch_value) in patch {
            match patch_value {
                Value::Null => assert!(!members.contains_key(name), "{name} not deleted"),
                Value::Object(inner) => assert_follows_patch(&members[name], inner),
                other => assert_eq!(&members[name], other),
            }
        }
    }

    proptest! {
        #[test]
        fn idempotent(target in any_value(), patch in any_value()) {
            let once = patched(&target, &patch);
            prop_assert_eq!(patched(&once, &patch), once);
        }

        #[test]
        fn empty_patch_is_identity_on_objects(target in any_object()) {
            prop_assert_eq!(patched(&target, &json!({})), target);
        }

        #[test]
        fn nulls_in_the_patch_delete(target in any_value(), patch in any_object()) {
            let result = patched(&target, &patch);
            if let Value::Object(members) = &patch {
                assert_follows_patch(&result, members);
            }
        }

        #[test]
        fn non_object_patch_replaces(target in any_value(), patch in any_non_object()) {
            prop_assert_eq!(patched(&target, &patch), patch);
        }

        #[test]
        fn matches_the_model(target in any_value(), patch in any_value()) {
            let result = patched(&target, &patch);
            let want = model(&target, &patch);
            // Same members in the same order, not just equal as maps.
            prop_assert_eq!(result.to_string(), want.to_string());
            prop_assert_eq!(result, want);
        }
    }
}
