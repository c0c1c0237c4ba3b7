//! The property test: random sequences of puts, deletes, conditional writes and lists, run
//! against a backend and an in-memory model, compared after every step.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicI64, Ordering};

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use tresor_core::CoreError;
use tresor_core::backend::{
    Applied, Backend, Commit, DescriptionChange, Expiry, ListQuery, Mutation, Precondition,
};
use tresor_core::model::{Ns, StoreKind};

use super::Fixture;

/// Keys of the model test: prefixes of each other, multi-byte and maximal code points.
const MODEL_KEYS: &[&str] = &["a", "ab", "abc", "b", "é", "éa", "z", "\u{10FFFF}"];
const MODEL_PREFIXES: &[&str] = &["", "a", "ab", "é", "\u{10FFFF}", "q"];

/// One step of the model test.
#[derive(Debug, Clone)]
pub enum ModelOp {
    Put {
        key: usize,
        value: u8,
        expect: ModelExpect,
    },
    Delete {
        key: usize,
        expect: ModelExpect,
    },
    List {
        prefix: usize,
        after: Option<usize>,
        limit: usize,
    },
}

/// The precondition of a model write, resolved against the model's current state.
#[derive(Debug, Clone, Copy)]
pub enum ModelExpect {
    Any,
    Absent,
    /// The key's current version (or a version the missing key cannot have).
    Current,
    /// A version that is not the key's current one.
    Stale,
}

pub(super) fn model_ops() -> impl Strategy<Value = Vec<ModelOp>> {
    let key = 0..MODEL_KEYS.len();
    let expect = prop_oneof![
        Just(ModelExpect::Any),
        Just(ModelExpect::Absent),
        Just(ModelExpect::Current),
        Just(ModelExpect::Stale),
    ];
    let op = prop_oneof![
        4 => (key.clone(), any::<u8>(), expect.clone())
            .prop_map(|(key, value, expect)| ModelOp::Put { key, value, expect }),
        2 => (key.clone(), expect).prop_map(|(key, expect)| ModelOp::Delete { key, expect }),
        1 => (0..MODEL_PREFIXES.len(), proptest::option::of(key), 1usize..6)
            .prop_map(|(prefix, after, limit)| ModelOp::List { prefix, after, limit }),
    ];
    proptest::collection::vec(op, 1..40)
}

/// Runs 64 random operation sequences against a backend from `make` and an in-memory model,
/// comparing every answer, read and list; shrinks a failure to a minimal sequence. Synchronous:
/// it runs its own tokio runtime.
pub fn model_property<B, F, Fut>(make: F)
where
    B: Backend,
    F: Fn() -> Fut,
    Fut: Future<Output = Fixture<B>>,
{
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime for the model test");
    let fixture = runtime.block_on(make());
    let mut runner = TestRunner::new(Config {
        cases: 64,
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&model_ops(), |ops| {
        runtime
            .block_on(check_against_model(
                &fixture.backend,
                fresh_model_ns(),
                &ops,
            ))
            .map_err(TestCaseError::fail)
    });
    if let Err(e) = result {
        panic!("the backend disagrees with the model: {e}");
    }
    drop(fixture);
}

/// Each sequence runs in its own namespace of one backend, so shrinking never sees old state.
pub(super) fn fresh_model_ns() -> Ns {
    static NEXT: AtomicI64 = AtomicI64::new(7_000_000);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Applies `ops` to the backend (unguarded commits in `ns`) and to a model, comparing as it goes.
pub async fn check_against_model<B: Backend>(b: &B, ns: Ns, ops: &[ModelOp]) -> Result<(), String> {
    // key -> (version, value)
    let mut model: BTreeMap<Vec<u8>, (u64, Vec<u8>)> = BTreeMap::new();
    let mut last_version = 0;
    for (step, op) in ops.iter().enumerate() {
        match *op {
            ModelOp::Put { key, value, expect } => {
                let k = MODEL_KEYS[key].as_bytes().to_vec();
                let current = model.get(&k).map(|(v, _)| *v);
                let (precondition, holds) = resolve(expect, current);
                let mutation = Mutation::Put {
                    ns,
                    store: StoreKind::Kv,
                    key: k.clone(),
                    expect: precondition,
                    value: vec![value],
                    description: DescriptionChange::Keep,
                    expiry: Expiry::Keep,
                };
                match (holds, b.commit(unguarded(mutation)).await) {
                    (true, Ok(applied)) => {
                        let Some(Applied::Put {
                            version, created, ..
                        }) = applied.first().copied()
                        else {
                            return Err(format!("step {step}: a put answered {applied:?}"));
                        };
                        if version <= last_version {
                            return Err(format!(
                                "step {step}: version {version} after {last_version}"
                            ));
                        }
                        if created != current.is_none() {
                            return Err(format!("step {step}: created = {created}"));
                        }
                        last_version = version;
                        model.insert(k.clone(), (version, vec![value]));
                    }
                    (false, Err(CoreError::WriteConflict)) => {}
                    (holds, got) => {
                        return Err(format!(
                            "step {step} {op:?}: precondition holds = {holds}, backend said {got:?}"
                        ));
                    }
                }
                compare_key(b, ns, &model, &k, step).await?;
            }
            ModelOp::Delete { key, expect } => {
                let k = MODEL_KEYS[key].as_bytes().to_vec();
                let (precondition, holds) = resolve(expect, model.get(&k).map(|(v, _)| *v));
                let mutation = Mutation::Delete {
                    ns,
                    store: StoreKind::Kv,
                    key: k.clone(),
                    expect: precondition,
                };
                match (holds, b.commit(unguarded(mutation)).await) {
                    (true, Ok(applied)) if applied == [Applied::Deleted] => {
                        model.remove(&k);
                    }
                    (false, Err(CoreError::WriteConflict)) => {}
                    (holds, got) => {
                        return Err(format!(
                            "step {step} {op:?}: precondition holds = {holds}, backend said {got:?}"
                        ));
                    }
                }
                compare_key(b, ns, &model, &k, step).await?;
            }
            ModelOp::List {
                prefix,
                after,
                limit,
            } => {
                let prefix = MODEL_PREFIXES[prefix].as_bytes().to_vec();
                let after = after.map(|a| MODEL_KEYS[a].as_bytes().to_vec());
                let want: Vec<(Vec<u8>, u64)> = model
                    .iter()
                    .filter(|(k, _)| k.starts_with(&prefix))
                    .filter(|(k, _)| after.as_ref().is_none_or(|a| *k > a))
                    .take(limit)
                    .map(|(k, (v, _))| (k.clone(), *v))
                    .collect();
                let query = ListQuery {
                    prefix,
                    after,
                    limit,
                };
                let got: Vec<(Vec<u8>, u64)> = b
                    .list_records(ns, StoreKind::Kv, &query)
                    .await
                    .map_err(|e| format!("step {step}: list failed: {e:?}"))?
                    .into_iter()
                    .map(|r| (r.key, r.version))
                    .collect();
                if got != want {
                    return Err(format!(
                        "step {step} {op:?}: listed {got:?}, model {want:?}"
                    ));
                }
            }
        }
    }
    for k in MODEL_KEYS {
        compare_key(b, ns, &model, k.as_bytes(), ops.len()).await?;
    }
    Ok(())
}

fn resolve(expect: ModelExpect, current: Option<u64>) -> (Precondition, bool) {
    match expect {
        ModelExpect::Any => (Precondition::Any, true),
        ModelExpect::Absent => (Precondition::Absent, current.is_none()),
        ModelExpect::Current => match current {
            Some(v) => (Precondition::Version(v), true),
            None => (Precondition::Version(1), false),
        },
        ModelExpect::Stale => (Precondition::Version(current.map_or(1, |v| v + 1)), false),
    }
}

async fn compare_key<B: Backend>(
    b: &B,
    ns: Ns,
    model: &BTreeMap<Vec<u8>, (u64, Vec<u8>)>,
    key: &[u8],
    step: usize,
) -> Result<(), String> {
    let got = b
        .read_record(ns, StoreKind::Kv, key)
        .await
        .map_err(|e| format!("step {step}: read failed: {e:?}"))?
        .map(|r| (r.version, r.value));
    let want = model.get(key).cloned();
    if got != want {
        return Err(format!(
            "step {step}: key {:?} reads {got:?}, model {want:?}",
            String::from_utf8_lossy(key)
        ));
    }
    Ok(())
}

fn unguarded(mutation: Mutation) -> Commit {
    Commit {
        guards: Vec::new(),
        keys: Vec::new(),
        mutations: vec![mutation],
        audit: Vec::new(),
    }
}
