//! Micro-benchmarks of what the service does to a value between opening and sealing it: the
//! strict JSON parser, merge patch, the limit checks and the encoding, and field ops, on a
//! 1 KiB object like the load generator's.
//!
//! `cargo bench -p tresor-core --bench values`; BENCHMARKS.md has the figures.

use divan::{Bencher, black_box};
use serde_json::{Map, Value, json};
use tresor_core::field_ops::{FieldOp, apply_ops};
use tresor_core::json::{compact_len, depth, parse_strict};
use tresor_core::merge_patch::merge_patch;
use tresor_core::model::{Limits, StoreKind};

fn main() {
    divan::main();
}

/// The parser's depth bound when the service reads a stored value (4 × the default limit).
const STORED_MAX_DEPTH: usize = 256;

/// A 1 KiB object (compact JSON): a counter, a list and fourteen small nested objects.
fn object_1k() -> Value {
    let mut members = Map::new();
    members.insert("n".into(), json!(41));
    members.insert("events".into(), json!(["created", "renewed", 3, 1.5e3]));
    for i in 0..14 {
        let field = json!({
            "name": format!("the value of field {i}"),
            "enabled": i % 2 == 0,
            "weight": i * 7,
        });
        members.insert(format!("field_{i:02}"), field);
    }
    let value = Value::Object(members);
    let len = compact_len(&value);
    assert!((1000..=1100).contains(&len), "object_1k is {len} bytes");
    value
}

fn bytes_1k() -> Vec<u8> {
    serde_json::to_vec(&object_1k()).expect("encode a fixed value")
}

/// Sixteen nested objects, each with a sibling member, and a patch that walks down all of them
/// to change one leaf and delete one member.
fn deep_target_and_patch() -> (Value, Value) {
    const LEVELS: usize = 16;
    let mut target = json!({ "leaf": 1, "gone": "soon" });
    let mut patch = json!({ "leaf": 2, "gone": null });
    for level in (0..LEVELS).rev() {
        let name = format!("level_{level:02}");
        target = json!({ "sibling": format!("kept at level {level}"), name.clone(): target });
        patch = json!({ name: patch });
    }
    (target, patch)
}

mod parse {
    use super::*;

    #[divan::bench]
    fn strict_1k(bencher: Bencher) {
        let bytes = bytes_1k();
        bencher.bench(|| parse_strict(black_box(&bytes), STORED_MAX_DEPTH));
    }

    /// serde_json on the same input, for comparison (the service cannot use it; see json.rs).
    #[divan::bench]
    fn serde_json_1k(bencher: Bencher) {
        let bytes = bytes_1k();
        bencher.bench(|| serde_json::from_slice::<Value>(black_box(&bytes)));
    }
}

mod encode {
    use super::*;

    #[divan::bench]
    fn to_vec_1k(bencher: Bencher) {
        let value = object_1k();
        bencher.bench(|| serde_json::to_vec(black_box(&value)));
    }

    /// The size and depth checks every written value goes through.
    #[divan::bench]
    fn check_value_1k(bencher: Bencher) {
        let value = object_1k();
        let limits = Limits::default();
        bencher.bench(|| limits.check_value(StoreKind::Secrets, black_box(&value)));
    }

    #[divan::bench]
    fn compact_len_1k(bencher: Bencher) {
        let value = object_1k();
        bencher.bench(|| compact_len(black_box(&value)));
    }

    #[divan::bench]
    fn depth_1k(bencher: Bencher) {
        let value = object_1k();
        bencher.bench(|| depth(black_box(&value)));
    }
}

mod patch {
    use super::*;

    /// The load generator's PATCH: `{"n": seq}` onto the 1 KiB object.
    #[divan::bench]
    fn small_onto_1k(bencher: Bencher) {
        let target = object_1k();
        let patch = json!({ "n": 42 });
        bencher
            .with_inputs(|| target.clone())
            .bench_local_refs(|value| merge_patch(value, black_box(&patch)));
    }

    #[divan::bench]
    fn deep_16_levels(bencher: Bencher) {
        let (target, patch) = deep_target_and_patch();
        bencher
            .with_inputs(|| target.clone())
            .bench_local_refs(|value| merge_patch(value, black_box(&patch)));
    }

    /// The value work of one PATCH in the service: parse the opened value, merge, check the
    /// limits, encode for sealing.
    #[divan::bench]
    fn service_path_1k(bencher: Bencher) {
        let stored = bytes_1k();
        let patch = json!({ "n": 42 });
        let limits = Limits::default();
        bencher.bench(|| {
            let mut value = parse_strict(black_box(&stored), STORED_MAX_DEPTH)?;
            merge_patch(&mut value, black_box(&patch));
            limits.check_value(StoreKind::Secrets, &value)?;
            serde_json::to_vec(&value).map_err(|e| tresor_core::CoreError::internal(e.to_string()))
        });
    }
}

mod field_ops {
    use super::*;

    fn object_map() -> Map<String, Value> {
        match object_1k() {
            Value::Object(members) => members,
            _ => unreachable!("object_1k builds an object"),
        }
    }

    #[divan::bench]
    fn increment(bencher: Bencher) {
        let target = object_map();
        let ops = [FieldOp::Increment {
            field: "n".into(),
            by: None,
        }];
        bencher
            .with_inputs(|| target.clone())
            .bench_local_refs(|members| apply_ops(members, black_box(&ops)));
    }

    #[divan::bench]
    fn list_push(bencher: Bencher) {
        let target = object_map();
        let ops = [FieldOp::ListPush {
            field: "events".into(),
            values: vec![json!("rotated")],
            end: None,
        }];
        bencher
            .with_inputs(|| target.clone())
            .bench_local_refs(|members| apply_ops(members, black_box(&ops)));
    }
}
