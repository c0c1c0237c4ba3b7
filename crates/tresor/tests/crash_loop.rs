//! The crash loop (issue 7, item 1): concurrent writers run PUT, merge PATCH, field ops, DELETE
//! (of whole records and of fields) and the uninstall of an installation against the real
//! binary, which is killed with SIGKILL at a random moment of every round and restarted on the
//! same data directory. The harness keeps a log of every acknowledged outcome (the model) and,
//! after every restart, reads back every key it ever wrote: each must hold exactly its last
//! acknowledged state, or the state that a request in flight at the kill would have left (such a
//! request may or may not have happened), and nothing else. The store must come up (`/readyz`
//! 200) with no repair step, and `PRAGMA integrity_check` on the killed store must say `ok`.
//!
//! What the model checks:
//! - records with one writer (`o{w}-{i}` in every store of every installation): value,
//!   description and version exactly as acknowledged (an in-flight write: its value, with a
//!   version above every earlier one); versions grow with every acknowledged write, across
//!   deletes, crashes and reinstalls;
//! - a document that every writer merge-patches (`kv/doc`, one top-level field per writer): each
//!   field as its writer last acknowledged it (or its in-flight patch), the version at least the
//!   highest acknowledged;
//! - a tally per round (`kv/tally-r{round}`) that every writer changes with one atomic field-ops
//!   request (increment `n` by an amount, push a tag onto `l`): every acknowledged tag present
//!   once, in-flight tags at most once, no other tag, each writer's tags in order, and `n` the
//!   sum of the amounts of exactly the tags present (the two ops of a request apply together);
//! - the uninstall of `crash-u` in some rounds: once acknowledged (or found applied after the
//!   restart), its token is refused, and after the reinstall of a later round every key it held
//!   is absent; no write that started after the uninstall returned is acknowledged;
//! - the listing of every store shows exactly the keys that GET finds.
//!
//! CI runs 10 rounds; the full run is
//! `TRESOR_CRASH_ROUNDS=100 cargo test -p tresor --release --test crash_loop -- --nocapture`.
//! `TRESOR_CRASH_SEED=N` repeats the random choices of a run (not its timing).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use serde_json::{Map, Value, json};
use tresor_test_support::server::{StorageBackend, TestServer, integrity_check};

fn bin() -> &'static Path {
    env!("CARGO_BIN_EXE_tresor").as_ref()
}

const ROUNDS_ENV: &str = "TRESOR_CRASH_ROUNDS";
const SEED_ENV: &str = "TRESOR_CRASH_SEED";
const DEFAULT_ROUNDS: u32 = 10;

const APP: &str = "crash-app";
/// (installation, account). The last one is uninstalled in some rounds and reinstalled in the
/// next one.
const INSTALLATIONS: [(&str, &str); 3] = [
    ("crash-a", "acct-a"),
    ("crash-b", "acct-b"),
    ("crash-u", "acct-u"),
];
const UNINSTALLED: usize = 2;
const STORES: [&str; 3] = ["secrets", "settings", "kv"];
/// The store of the shared document and the tallies.
const KV: usize = 2;
const WRITERS: usize = 6;
const KEYS_PER_WRITER: u64 = 3;
/// Load before the kill, in milliseconds: a random moment in this range.
const LOAD_MS: (u64, u64) = (50, 400);
/// Rounds `r` with `r % UNINSTALL_EVERY == 2` uninstall `crash-u` during the load.
const UNINSTALL_EVERY: u32 = 3;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);
const READBACK_CONCURRENCY: usize = 16;

/// SplitMix64: enough randomness for choosing operations, reproducible from a seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

// ---------------------------------------------------------------------------------------------
// The model: what every key may hold.

/// A value with its description, as a record holds them.
#[derive(Clone, Debug, PartialEq)]
struct Body {
    value: Value,
    description: Option<String>,
}

/// An acknowledged state of a record.
#[derive(Clone, Debug)]
struct Rec {
    body: Body,
    /// The version: exact, or (after a field delete, which answers 204 without one) a lower
    /// bound.
    version: u64,
    exact: bool,
}

/// A record with one writer.
#[derive(Default, Debug)]
struct Owned {
    /// The last acknowledged state; `None`: absent.
    acked: Option<Rec>,
    /// The state the request in flight leaves if it applies (`Some(None)`: absent).
    inflight: Option<Option<Body>>,
    /// The highest version this key is known to have had (a lower bound), never reset: a later
    /// write must get a higher one, also after a delete, a crash or a reinstall.
    max_version: u64,
}

/// The document every writer merge-patches, one top-level field `w{writer}` each.
#[derive(Default, Debug)]
struct Doc {
    exists: bool,
    /// The acknowledged fields.
    fields: BTreeMap<usize, Value>,
    /// Per writer, the field its in-flight patch leaves (`None`: removed).
    inflight: BTreeMap<usize, Option<Value>>,
    /// The highest acknowledged version (the resolved one after a check); 0 when absent.
    acked_max: u64,
    /// The highest version known at the start of the round; every write must be above.
    floor: u64,
    /// The versions acknowledged this round: never twice the same.
    round_versions: HashSet<u64>,
}

/// A round's tally: `{"n": sum, "l": [tags]}`.
#[derive(Default, Debug)]
struct Tally {
    /// Acknowledged tags and their amounts.
    tags: BTreeMap<String, i64>,
    inflight: BTreeMap<String, i64>,
    acked_max: u64,
    round_versions: HashSet<u64>,
}

struct Inst {
    id: &'static str,
    /// `None` while uninstalled.
    token: Option<String>,
    /// The token of the last incarnation that was uninstalled (must be refused).
    old_token: Option<String>,
    /// Bumped at every uninstall: acknowledgements of an earlier incarnation count for nothing.
    generation: u64,
    uninstalled_at: Option<Instant>,
    uninstall_inflight: bool,
    /// A writer was refused (401) while the uninstall was in flight: the server acted on it, so
    /// it must be durable (found applied after the restart).
    refused_during_uninstall: bool,
    owned: BTreeMap<(usize, String), Owned>,
    doc: Doc,
    tallies: BTreeMap<u32, Tally>,
}

impl Inst {
    /// The uninstall applied: nothing of the installation remains (versions stay remembered).
    fn uninstalled(&mut self, at: Instant) {
        self.old_token = self.token.take();
        self.generation += 1;
        self.uninstalled_at = Some(at);
        self.uninstall_inflight = false;
        self.refused_during_uninstall = false;
        for o in self.owned.values_mut() {
            o.acked = None;
            o.inflight = None;
        }
        let floor = self.doc.floor.max(self.doc.acked_max);
        self.doc = Doc {
            floor,
            ..Doc::default()
        };
        for t in self.tallies.values_mut() {
            *t = Tally::default();
        }
    }
}

#[derive(Default)]
struct Figures {
    acked: u64,
    by_op: BTreeMap<&'static str, u64>,
}

struct Model {
    insts: Vec<Inst>,
    failures: Vec<String>,
    round: Figures,
}

impl Model {
    fn fail(&mut self, msg: String) {
        if self.failures.len() < 50 {
            self.failures.push(msg);
        }
    }

    fn ack(&mut self, op: &'static str) {
        self.round.acked += 1;
        *self.round.by_op.entry(op).or_default() += 1;
    }

    /// How many requests may have been in flight at the kill.
    fn inflight(&self) -> usize {
        self.insts
            .iter()
            .map(|i| {
                i.owned.values().filter(|o| o.inflight.is_some()).count()
                    + i.doc.inflight.len()
                    + i.tallies.values().map(|t| t.inflight.len()).sum::<usize>()
                    + usize::from(i.uninstall_inflight)
            })
            .sum()
    }
}

fn lock(m: &Mutex<Model>) -> MutexGuard<'_, Model> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// RFC 7396, the model's own.
fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(t) = target {
        for (k, v) in p {
            if v.is_null() {
                t.remove(k);
            } else {
                merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
    }
}

/// The field ops of the owned records: `increment n by`, `list_push l [tag]`; `None` when they
/// do not fit the value (409).
fn apply_ops(current: Option<&Value>, inc: Option<i64>, push: Option<&str>) -> Option<Value> {
    let mut v = current.cloned().unwrap_or_else(|| json!({}));
    let obj = v.as_object_mut()?;
    if let Some(by) = inc {
        let n = match obj.get("n") {
            None => by,
            Some(n) => n.as_i64()? + by,
        };
        obj.insert("n".into(), json!(n));
    }
    if let Some(tag) = push {
        match obj.get_mut("l") {
            None => {
                obj.insert("l".into(), json!([tag]));
            }
            Some(Value::Array(l)) => l.push(json!(tag)),
            Some(_) => return None,
        }
    }
    Some(v)
}

// ---------------------------------------------------------------------------------------------
// The writers.

struct Ctx {
    model: Arc<Mutex<Model>>,
    http: reqwest::Client,
    base: String,
    admin_token: String,
    /// Set just before the SIGKILL: from then on a failed request is expected. The writers run
    /// until their first failed request, so that requests are in flight at the kill.
    killed: Arc<AtomicBool>,
    round: u32,
}

/// What one request is about, to settle its answer against the model.
enum Target {
    Put {
        slot: (usize, String),
        body: Body,
        created: bool,
    },
    Patch {
        slot: (usize, String),
        body: Body,
    },
    /// `body: None` when the ops do not fit (409 expected).
    Ops {
        slot: (usize, String),
        body: Option<Body>,
    },
    Delete {
        slot: (usize, String),
    },
    /// `body: None` when nothing changes (absent key); `Err` when 409 is expected.
    DeleteFields {
        slot: (usize, String),
        body: Result<Option<Body>, ()>,
    },
    Doc {
        field: Option<Value>,
    },
    Tally {
        tag: String,
    },
}

impl Target {
    fn name(&self) -> &'static str {
        match self {
            Target::Put { .. } => "put",
            Target::Patch { .. } => "patch",
            Target::Ops { .. } => "ops",
            Target::Delete { .. } => "delete",
            Target::DeleteFields { .. } => "delete-fields",
            Target::Doc { .. } => "doc-patch",
            Target::Tally { .. } => "tally-ops",
        }
    }
}

struct Plan {
    inst: usize,
    generation: u64,
    token: String,
    method: reqwest::Method,
    path: String,
    body: Option<(&'static str, Value)>,
    target: Target,
}

/// Chooses the next request of writer `w` and registers it as in flight.
fn plan(
    m: &mut Model,
    rng: &mut Rng,
    w: usize,
    seq: u64,
    round: u32,
    skip_u: bool,
) -> Option<Plan> {
    let candidates: Vec<usize> = (0..m.insts.len())
        .filter(|&i| m.insts[i].token.is_some() && !(i == UNINSTALLED && skip_u))
        .collect();
    if candidates.is_empty() {
        return None;
    }
    let inst = candidates[rng.below(candidates.len() as u64) as usize];
    let i = &mut m.insts[inst];
    let token = i.token.clone()?;
    let generation = i.generation;
    let store = rng.below(STORES.len() as u64) as usize;
    let key = format!("o{w}-{}", rng.below(KEYS_PER_WRITER));
    let slot = (store, key.clone());
    let record_path = format!("/v1/{}/{key}", STORES[store]);
    let tag = format!("r{round}w{w}-{seq}");
    let roll = rng.below(100);
    let (method, path, body, target) = if roll < 22 {
        // PUT: an object (now and then a large one), or a string.
        let value = if rng.chance(20) {
            json!(format!("s-{tag}"))
        } else {
            let pad = if rng.chance(10) {
                rng.below(20_000)
            } else {
                rng.below(200)
            };
            json!({"w": w, "seq": seq, "pad": "x".repeat(pad as usize)})
        };
        let description = rng.chance(50).then(|| format!("d-{tag}"));
        let mut req = json!({ "value": value });
        if let Some(d) = &description {
            req["description"] = json!(d);
        }
        let o = i.owned.entry(slot.clone()).or_default();
        let created = o.acked.is_none();
        let body = Body { value, description };
        o.inflight = Some(Some(body.clone()));
        (
            reqwest::Method::PUT,
            record_path,
            Some(("application/json", req)),
            Target::Put {
                slot,
                body,
                created,
            },
        )
    } else if roll < 37 {
        // PATCH: set and remove top-level fields, or now and then replace with a string.
        let patch = if rng.chance(10) {
            json!(format!("p-{tag}"))
        } else {
            let mut p = Map::new();
            p.insert(
                format!("p{}", rng.below(4)),
                json!({"seq": seq, "r": rng.below(1000)}),
            );
            if rng.chance(40) {
                p.insert(format!("p{}", rng.below(4)), Value::Null);
            }
            Value::Object(p)
        };
        let o = i.owned.entry(slot.clone()).or_default();
        let mut value = o
            .acked
            .as_ref()
            .map_or_else(|| json!({}), |r| r.body.value.clone());
        merge_patch(&mut value, &patch);
        let body = Body {
            value,
            description: o.acked.as_ref().and_then(|r| r.body.description.clone()),
        };
        o.inflight = Some(Some(body.clone()));
        (
            reqwest::Method::PATCH,
            record_path,
            Some(("application/merge-patch+json", patch)),
            Target::Patch { slot, body },
        )
    } else if roll < 52 {
        // Field ops on a record of one writer.
        let (inc, push) = match rng.below(3) {
            0 => (Some(1 + rng.below(9) as i64), None),
            1 => (None, Some(tag.clone())),
            _ => (Some(1 + rng.below(9) as i64), Some(tag.clone())),
        };
        let mut ops = Vec::new();
        if let Some(by) = inc {
            ops.push(json!({"op": "increment", "field": "n", "by": by}));
        }
        if let Some(t) = &push {
            ops.push(json!({"op": "list_push", "field": "l", "values": [t]}));
        }
        let o = i.owned.entry(slot.clone()).or_default();
        let body = apply_ops(
            o.acked.as_ref().map(|r| &r.body.value),
            inc,
            push.as_deref(),
        )
        .map(|value| Body {
            value,
            description: o.acked.as_ref().and_then(|r| r.body.description.clone()),
        });
        if let Some(b) = &body {
            o.inflight = Some(Some(b.clone()));
        }
        (
            reqwest::Method::POST,
            format!("{record_path}/ops"),
            Some(("application/json", json!({ "ops": ops }))),
            Target::Ops { slot, body },
        )
    } else if roll < 60 {
        let o = i.owned.entry(slot.clone()).or_default();
        o.inflight = Some(None);
        (
            reqwest::Method::DELETE,
            record_path,
            None,
            Target::Delete { slot },
        )
    } else if roll < 65 {
        let fields: Vec<String> = ["p0", "p1", "p2", "p3", "n", "l"]
            .iter()
            .filter(|_| rng.chance(35))
            .map(|f| f.to_string())
            .collect();
        let fields = if fields.is_empty() {
            vec!["p0".to_owned()]
        } else {
            fields
        };
        let o = i.owned.entry(slot.clone()).or_default();
        let body = match &o.acked {
            None => Ok(None),
            Some(r) => match &r.body.value {
                Value::Object(map) => {
                    let mut map = map.clone();
                    for f in &fields {
                        map.remove(f);
                    }
                    Ok(Some(Body {
                        value: Value::Object(map),
                        description: r.body.description.clone(),
                    }))
                }
                _ => Err(()),
            },
        };
        if let Ok(Some(b)) = &body {
            o.inflight = Some(Some(b.clone()));
        }
        (
            reqwest::Method::DELETE,
            format!("{record_path}?fields={}", fields.join(",")),
            None,
            Target::DeleteFields { slot, body },
        )
    } else if roll < 80 {
        // The shared document: this writer's own field.
        let field = (!rng.chance(25)).then(|| json!({"seq": seq, "r": rng.below(1000)}));
        i.doc.inflight.insert(w, field.clone());
        let patch = json!({ format!("w{w}"): field.clone().unwrap_or(Value::Null) });
        (
            reqwest::Method::PATCH,
            "/v1/kv/doc".to_owned(),
            Some(("application/merge-patch+json", patch)),
            Target::Doc { field },
        )
    } else {
        // The round's tally: two ops that apply together or not at all.
        let by = 1 + rng.below(9) as i64;
        i.tallies
            .entry(round)
            .or_default()
            .inflight
            .insert(tag.clone(), by);
        let ops = json!({"ops": [
            {"op": "increment", "field": "n", "by": by},
            {"op": "list_push", "field": "l", "values": [tag]},
        ]});
        (
            reqwest::Method::POST,
            format!("/v1/kv/tally-r{round}/ops"),
            Some(("application/json", ops)),
            Target::Tally { tag },
        )
    };
    Some(Plan {
        inst,
        generation,
        token,
        method,
        path,
        body,
        target,
    })
}

/// Forgets the in-flight registration of a request that did not apply.
fn not_applied(i: &mut Inst, w: usize, round: u32, target: &Target) {
    match target {
        Target::Put { slot, .. }
        | Target::Patch { slot, .. }
        | Target::Ops { slot, .. }
        | Target::Delete { slot }
        | Target::DeleteFields { slot, .. } => {
            if let Some(o) = i.owned.get_mut(slot) {
                o.inflight = None;
            }
        }
        Target::Doc { .. } => {
            i.doc.inflight.remove(&w);
        }
        Target::Tally { tag } => {
            if let Some(t) = i.tallies.get_mut(&round) {
                t.inflight.remove(tag);
            }
        }
    }
}

/// Settles a 2xx answer: the write is acknowledged.
fn acknowledged(m: &mut Model, plan: &Plan, w: usize, round: u32, status: u16, body: &Value) {
    let name = plan.target.name();
    let where_ = format!(
        "{} {} {}",
        INSTALLATIONS[plan.inst].0, plan.method, plan.path
    );
    let version = match &plan.target {
        Target::Delete { .. } | Target::DeleteFields { .. } => None,
        Target::Ops { .. } | Target::Tally { .. } => body["record"]["version"].as_u64(),
        _ => body["version"].as_u64(),
    };
    let mut failures = Vec::new();
    let i = &mut m.insts[plan.inst];
    match &plan.target {
        Target::Put {
            slot,
            body: b,
            created,
        } => {
            let o = i.owned.entry(slot.clone()).or_default();
            let want = if *created { 201 } else { 200 };
            if status != want {
                failures.push(format!(
                    "{where_}: answered {status}, the model expected {want}"
                ));
            }
            settle_owned(o, Some(b.clone()), version, &where_, &mut failures);
        }
        Target::Patch { slot, body: b } => {
            let o = i.owned.entry(slot.clone()).or_default();
            if body["value"] != b.value {
                failures.push(format!(
                    "{where_}: PATCH answered the value {}, the model computed {}",
                    body["value"], b.value
                ));
            }
            settle_owned(o, Some(b.clone()), version, &where_, &mut failures);
        }
        Target::Ops { slot, body: b } => {
            let o = i.owned.entry(slot.clone()).or_default();
            match b {
                Some(b) => settle_owned(o, Some(b.clone()), version, &where_, &mut failures),
                None => failures.push(format!(
                    "{where_}: answered {status}, the model expected 409 (ops on a non-object)"
                )),
            }
        }
        Target::Delete { slot } => {
            let o = i.owned.entry(slot.clone()).or_default();
            o.acked = None;
            o.inflight = None;
        }
        Target::DeleteFields { slot, body: b } => {
            let o = i.owned.entry(slot.clone()).or_default();
            match b {
                Ok(None) => o.inflight = None,
                Ok(Some(b)) => {
                    // 204 carries no version: it is above the previous one.
                    o.max_version += 1;
                    o.acked = Some(Rec {
                        body: b.clone(),
                        version: o.max_version,
                        exact: false,
                    });
                    o.inflight = None;
                }
                Err(()) => failures.push(format!(
                    "{where_}: answered {status}, the model expected 409 (fields of a non-object)"
                )),
            }
        }
        Target::Doc { field } => {
            let d = &mut i.doc;
            d.inflight.remove(&w);
            let got = body["value"].get(format!("w{w}"));
            if got != field.as_ref() {
                failures.push(format!(
                    "{where_}: the answer's field w{w} is {got:?}, the patch set {field:?}"
                ));
            }
            match field {
                Some(f) => d.fields.insert(w, f.clone()),
                None => d.fields.remove(&w),
            };
            d.exists = true;
            match version {
                Some(v) if v > d.floor && d.round_versions.insert(v) => {
                    d.acked_max = d.acked_max.max(v);
                }
                _ => failures.push(format!(
                    "{where_}: version {version:?} not above {} or given twice this round",
                    d.floor
                )),
            }
        }
        Target::Tally { tag } => {
            let t = i.tallies.entry(round).or_default();
            let by = t.inflight.remove(tag).unwrap_or_default();
            t.tags.insert(tag.clone(), by);
            match version {
                Some(v) if t.round_versions.insert(v) => t.acked_max = t.acked_max.max(v),
                _ => failures.push(format!("{where_}: version {version:?} given twice")),
            }
        }
    }
    for f in failures {
        m.fail(f);
    }
    m.ack(name);
}

fn settle_owned(
    o: &mut Owned,
    body: Option<Body>,
    version: Option<u64>,
    where_: &str,
    failures: &mut Vec<String>,
) {
    o.inflight = None;
    let Some(v) = version else {
        failures.push(format!("{where_}: no version in the answer"));
        return;
    };
    if v <= o.max_version {
        failures.push(format!(
            "{where_}: version {v} is not above the key's earlier version {}",
            o.max_version
        ));
    }
    o.max_version = o.max_version.max(v);
    o.acked = body.map(|body| Rec {
        body,
        version: v,
        exact: true,
    });
}

async fn writer(ctx: Arc<Ctx>, w: usize, mut rng: Rng) {
    let mut skip_u = false;
    let mut seq = 0u64;
    loop {
        seq += 1;
        let plan = {
            let mut m = lock(&ctx.model);
            plan(&mut m, &mut rng, w, seq, ctx.round, skip_u)
        };
        let Some(plan) = plan else {
            if ctx.killed.load(Ordering::SeqCst) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
            continue;
        };
        let started = Instant::now();
        let mut rb = ctx
            .http
            .request(plan.method.clone(), format!("{}{}", ctx.base, plan.path))
            .bearer_auth(&plan.token)
            .timeout(REQUEST_TIMEOUT);
        if let Some((ct, body)) = &plan.body {
            rb = rb
                .header("content-type", *ct)
                .body(serde_json::to_vec(body).expect("json"));
        }
        let answer = match rb.send().await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                resp.bytes().await.map(|b| (status, b))
            }
            Err(e) => Err(e),
        };
        let mut m = lock(&ctx.model);
        let killed = ctx.killed.load(Ordering::SeqCst);
        let (status, bytes) = match answer {
            Ok(a) => a,
            Err(e) => {
                if e.is_connect() {
                    // The connection was never made: the request never reached a server.
                    let i = &mut m.insts[plan.inst];
                    if i.generation == plan.generation {
                        not_applied(i, w, ctx.round, &plan.target);
                    }
                }
                if !killed {
                    m.fail(format!(
                        "{} {}: failed while the server was up: {e}",
                        plan.method, plan.path
                    ));
                }
                // Otherwise in flight at the kill: it may or may not have applied.
                return;
            }
        };
        let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        let (id, current, uninstall_known, uninstalled_at) = {
            let i = &m.insts[plan.inst];
            let current = i.generation == plan.generation;
            (
                i.id,
                current,
                !current || i.uninstall_inflight,
                i.uninstalled_at,
            )
        };
        if (200..300).contains(&status) {
            if current {
                acknowledged(&mut m, &plan, w, ctx.round, status, &body);
            } else if uninstalled_at.is_some_and(|at| started > at) {
                m.fail(format!(
                    "{id} {} {}: acknowledged ({status}) though it started after the uninstall \
                     returned",
                    plan.method, plan.path
                ));
            }
            // Else it applied before the uninstall, which erased it.
            continue;
        }
        if status == 401 && plan.inst == UNINSTALLED && uninstall_known {
            // The uninstall won: nothing applied.
            if current {
                let i = &mut m.insts[plan.inst];
                i.refused_during_uninstall = true;
                not_applied(i, w, ctx.round, &plan.target);
            }
            skip_u = true;
            continue;
        }
        let expected_409 = matches!(
            plan.target,
            Target::Ops { body: None, .. } | Target::DeleteFields { body: Err(()), .. }
        );
        if status == 409 && expected_409 && current {
            not_applied(&mut m.insts[plan.inst], w, ctx.round, &plan.target);
            continue;
        }
        m.fail(format!(
            "{} {} {}: unexpected {status}: {}",
            INSTALLATIONS[plan.inst].0,
            plan.method,
            plan.path,
            String::from_utf8_lossy(&bytes)
        ));
        return;
    }
}

/// Uninstalls `crash-u` after `delay`, unless the round is over by then.
async fn uninstaller(ctx: Arc<Ctx>, delay: Duration) {
    tokio::time::sleep(delay).await;
    if ctx.killed.load(Ordering::SeqCst) {
        return;
    }
    {
        let mut m = lock(&ctx.model);
        if m.insts[UNINSTALLED].token.is_none() {
            return;
        }
        m.insts[UNINSTALLED].uninstall_inflight = true;
    }
    let r = ctx
        .http
        .delete(format!(
            "{}/v1/admin/installations/{}",
            ctx.base, INSTALLATIONS[UNINSTALLED].0
        ))
        .bearer_auth(&ctx.admin_token)
        .timeout(REQUEST_TIMEOUT)
        .send()
        .await;
    let mut m = lock(&ctx.model);
    let killed = ctx.killed.load(Ordering::SeqCst);
    match r {
        Ok(resp) if resp.status().as_u16() == 204 => {
            m.insts[UNINSTALLED].uninstalled(Instant::now());
            m.ack("uninstall");
        }
        Ok(resp) => {
            let status = resp.status();
            m.fail(format!("uninstall: unexpected {status}"));
        }
        Err(e) => {
            if e.is_connect() {
                m.insts[UNINSTALLED].uninstall_inflight = false;
                m.insts[UNINSTALLED].refused_during_uninstall = false;
            }
            if !killed {
                m.fail(format!("uninstall failed while the server was up: {e}"));
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Reading back and checking.

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Slot {
    Owned(usize, String),
    Doc,
    Tally(u32),
}

impl Slot {
    fn path(&self) -> String {
        match self {
            Slot::Owned(store, key) => format!("/v1/{}/{key}", STORES[*store]),
            Slot::Doc => "/v1/kv/doc".to_owned(),
            Slot::Tally(r) => format!("/v1/kv/tally-r{r}"),
        }
    }

    /// (store index, key).
    fn store_key(&self) -> (usize, String) {
        match self {
            Slot::Owned(store, key) => (*store, key.clone()),
            Slot::Doc => (KV, "doc".to_owned()),
            Slot::Tally(r) => (KV, format!("tally-r{r}")),
        }
    }
}

/// Every key of every store of the installation, through the paged listing.
async fn list_keys(s: &TestServer, token: &str) -> BTreeSet<(usize, String)> {
    let mut listed = BTreeSet::new();
    for (n, store) in STORES.iter().enumerate() {
        let mut cursor: Option<String> = None;
        loop {
            let mut path = format!("/v1/{store}?limit=1000");
            if let Some(c) = &cursor {
                let c: String = url::form_urlencoded::byte_serialize(c.as_bytes()).collect();
                path.push_str(&format!("&cursor={c}"));
            }
            let r = s.call("GET", &path, Some(token), None).await;
            assert_eq!(r.status, 200, "GET {path}: {r:?}");
            for item in r.body["items"].as_array().expect("items") {
                listed.insert((n, item["key"].as_str().expect("a key").to_owned()));
            }
            match r.body["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => break,
            }
        }
    }
    listed
}

/// A record as read back.
#[derive(Debug)]
struct Seen {
    body: Body,
    version: u64,
}

#[derive(Default)]
struct Checked {
    keys: u64,
    /// In-flight requests found applied.
    inflight_applied: u64,
}

/// Reads every key the model knows of installation `inst` and checks it; then the model takes
/// what was read as the new acknowledged state.
async fn verify(s: &TestServer, model: &Mutex<Model>, inst: usize) -> Checked {
    let (token, slots) = {
        let m = lock(model);
        let i = &m.insts[inst];
        let mut slots: Vec<Slot> = i
            .owned
            .keys()
            .map(|(s, k)| Slot::Owned(*s, k.clone()))
            .collect();
        slots.push(Slot::Doc);
        slots.extend(i.tallies.keys().map(|r| Slot::Tally(*r)));
        (
            i.token.clone().expect("verify an installed installation"),
            slots,
        )
    };
    let reads: Vec<(Slot, Result<Option<Seen>, String>)> = futures::stream::iter(slots)
        .map(|slot| {
            let (http, token) = (s.http.clone(), token.clone());
            let url = s.url(&slot.path());
            async move {
                let r = http
                    .get(&url)
                    .bearer_auth(&token)
                    .timeout(REQUEST_TIMEOUT)
                    .send()
                    .await
                    .unwrap_or_else(|e| panic!("GET {url}: {e}"));
                let status = r.status().as_u16();
                let text = r.text().await.unwrap_or_default();
                let seen = match status {
                    404 => Ok(None),
                    200 => {
                        let v: Value = serde_json::from_str(&text).expect("record JSON");
                        Ok(Some(Seen {
                            body: Body {
                                value: v["value"].clone(),
                                description: v["description"].as_str().map(str::to_owned),
                            },
                            version: v["version"].as_u64().expect("a version"),
                        }))
                    }
                    _ => Err(format!("GET answered {status}: {text}")),
                };
                (slot, seen)
            }
        })
        .buffer_unordered(READBACK_CONCURRENCY)
        .collect()
        .await;
    let listed = list_keys(s, &token).await;
    let mut m = lock(model);
    let mut out = Checked::default();
    let mut failures = Vec::new();
    let id = m.insts[inst].id;
    // The listings must show exactly the keys that GET finds.
    let present: BTreeSet<(usize, String)> = reads
        .iter()
        .filter(|(_, seen)| matches!(seen, Ok(Some(_))))
        .map(|(slot, _)| slot.store_key())
        .collect();
    for (store, key) in listed.symmetric_difference(&present) {
        let what = if present.contains(&(*store, key.clone())) {
            "GET finds it, but the listing does not show it"
        } else {
            "the listing shows it, but GET does not find it"
        };
        failures.push(format!("{id} /v1/{}/{key}: {what}", STORES[*store]));
    }
    for (slot, seen) in reads {
        out.keys += 1;
        let seen = match seen {
            Ok(seen) => seen,
            Err(e) => {
                failures.push(format!("{id} {}: {e}", slot.path()));
                continue;
            }
        };
        let where_ = format!("{id} {}", slot.path());
        let i = &mut m.insts[inst];
        let applied = match &slot {
            Slot::Owned(store, key) => {
                let o = i.owned.entry((*store, key.clone())).or_default();
                check_owned(o, seen, &where_, &mut failures)
            }
            Slot::Doc => check_doc(&mut i.doc, seen, &where_, &mut failures),
            Slot::Tally(r) => {
                let t = i.tallies.entry(*r).or_default();
                check_tally(t, seen, &where_, &mut failures)
            }
        };
        out.inflight_applied += applied;
    }
    for f in failures {
        m.fail(f);
    }
    out
}

fn describe(seen: &Option<Seen>) -> String {
    match seen {
        None => "absent".to_owned(),
        Some(s) => format!(
            "version {} value {} description {:?}",
            s.version, s.body.value, s.body.description
        ),
    }
}

/// Returns 1 when the in-flight write was found applied.
fn check_owned(o: &mut Owned, seen: Option<Seen>, where_: &str, failures: &mut Vec<String>) -> u64 {
    let acked_ok = match (&o.acked, &seen) {
        (None, None) => true,
        (Some(r), Some(s)) => {
            r.body == s.body
                && if r.exact {
                    s.version == r.version
                } else {
                    s.version >= r.version
                }
        }
        _ => false,
    };
    let inflight_ok = match (&o.inflight, &seen) {
        (Some(None), None) => true,
        (Some(Some(b)), Some(s)) => *b == s.body && s.version > o.max_version,
        _ => false,
    };
    if !acked_ok && !inflight_ok {
        failures.push(format!(
            "{where_}: LOST OR ALTERED: found {}; acknowledged {}; in flight {}",
            describe(&seen),
            match &o.acked {
                None => "absent".to_owned(),
                Some(r) => format!(
                    "version {}{} value {} description {:?}",
                    if r.exact { "" } else { ">=" },
                    r.version,
                    r.body.value,
                    r.body.description
                ),
            },
            match &o.inflight {
                None => "nothing".to_owned(),
                Some(None) => "a delete".to_owned(),
                Some(Some(b)) => format!(
                    "a write of {} description {:?} (version > {})",
                    b.value, b.description, o.max_version
                ),
            }
        ));
    }
    o.inflight = None;
    o.acked = seen.map(|s| {
        o.max_version = o.max_version.max(s.version);
        Rec {
            body: s.body,
            version: s.version,
            exact: true,
        }
    });
    u64::from(inflight_ok && !acked_ok)
}

fn check_doc(d: &mut Doc, seen: Option<Seen>, where_: &str, failures: &mut Vec<String>) -> u64 {
    let mut applied = 0;
    match &seen {
        None => {
            if d.exists {
                failures.push(format!(
                    "{where_}: LOST: absent, acknowledged version {} fields {:?}",
                    d.acked_max, d.fields
                ));
            }
        }
        Some(s) => {
            if !d.exists && d.inflight.is_empty() {
                failures.push(format!("{where_}: present, but never written: {s:?}"));
            }
            let Some(obj) = s.body.value.as_object() else {
                failures.push(format!("{where_}: not an object: {s:?}"));
                return 0;
            };
            let known: BTreeSet<String> = (0..WRITERS).map(|w| format!("w{w}")).collect();
            if let Some(k) = obj.keys().find(|k| !known.contains(*k)) {
                failures.push(format!("{where_}: a field no writer wrote: {k}"));
            }
            for w in 0..WRITERS {
                let got = obj.get(&format!("w{w}"));
                let acked = d.fields.get(&w);
                if got == acked {
                    continue;
                }
                match d.inflight.get(&w) {
                    Some(f) if got == f.as_ref() => applied += 1,
                    inflight => failures.push(format!(
                        "{where_}: LOST OR ALTERED field w{w}: found {got:?}, acknowledged \
                         {acked:?}, in flight {inflight:?}"
                    )),
                }
            }
            let version_ok = match (d.exists, d.inflight.is_empty()) {
                (true, true) => s.version == d.acked_max,
                (true, false) => s.version >= d.acked_max,
                // Only an in-flight patch could have created it: above every earlier version.
                (false, _) => s.version > d.floor,
            };
            if !version_ok {
                failures.push(format!(
                    "{where_}: version {} but acknowledged {} (floor {}, {} in flight)",
                    s.version,
                    d.acked_max,
                    d.floor,
                    d.inflight.len()
                ));
            }
        }
    }
    // The model takes what was read.
    d.inflight.clear();
    d.round_versions.clear();
    match seen {
        None => {
            d.exists = false;
            d.fields.clear();
            d.acked_max = 0;
        }
        Some(s) => {
            d.exists = true;
            d.fields = (0..WRITERS)
                .filter_map(|w| Some((w, s.body.value.get(format!("w{w}"))?.clone())))
                .collect();
            d.acked_max = s.version;
            d.floor = d.floor.max(s.version);
        }
    }
    applied
}

fn check_tally(t: &mut Tally, seen: Option<Seen>, where_: &str, failures: &mut Vec<String>) -> u64 {
    let mut applied = 0;
    let mut present = BTreeMap::new();
    match &seen {
        None => {
            if !t.tags.is_empty() {
                failures.push(format!(
                    "{where_}: LOST: absent, acknowledged {} tags",
                    t.tags.len()
                ));
            }
        }
        Some(s) => {
            if t.tags.is_empty() && t.inflight.is_empty() {
                failures.push(format!("{where_}: present, but never written: {s:?}"));
            }
            let v = &s.body.value;
            let fields: BTreeSet<&str> = v
                .as_object()
                .map(|o| o.keys().map(String::as_str).collect())
                .unwrap_or_default();
            if fields != BTreeSet::from(["l", "n"]) {
                failures.push(format!("{where_}: not {{n, l}}: {v}"));
                return 0;
            }
            let list: Vec<&str> = v["l"]
                .as_array()
                .map(|l| l.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let mut last_seq: HashMap<&str, u64> = HashMap::new();
            for tag in &list {
                let by = match (t.tags.get(*tag), t.inflight.get(*tag)) {
                    (Some(by), _) => *by,
                    (None, Some(by)) => {
                        applied += 1;
                        *by
                    }
                    (None, None) => {
                        failures.push(format!("{where_}: ALTERED: a tag never written: {tag}"));
                        continue;
                    }
                };
                if present.insert(tag.to_string(), by).is_some() {
                    failures.push(format!("{where_}: ALTERED: tag {tag} twice"));
                }
                let (writer, seq) = tag.split_once('-').expect("r{round}w{w}-{seq}");
                let seq: u64 = seq.parse().expect("seq");
                if last_seq.insert(writer, seq).is_some_and(|prev| prev >= seq) {
                    failures.push(format!("{where_}: ALTERED: {writer}'s tags out of order"));
                }
            }
            for tag in t.tags.keys() {
                if !present.contains_key(tag) {
                    failures.push(format!("{where_}: LOST: acknowledged tag {tag} missing"));
                }
            }
            let sum: i64 = present.values().sum();
            if v["n"].as_i64() != Some(sum) {
                failures.push(format!(
                    "{where_}: ALTERED: n = {} but the tags present add up to {sum}",
                    v["n"]
                ));
            }
            let version_ok = if t.inflight.is_empty() {
                s.version == t.acked_max
            } else {
                s.version >= t.acked_max
            };
            if !version_ok {
                failures.push(format!(
                    "{where_}: version {} but acknowledged {} ({} in flight)",
                    s.version,
                    t.acked_max,
                    t.inflight.len()
                ));
            }
        }
    }
    t.inflight.clear();
    t.round_versions.clear();
    t.tags = present;
    t.acked_max = seen.map_or(0, |s| s.version);
    applied
}

async fn install(s: &TestServer, inst: usize) -> String {
    let (id, account) = INSTALLATIONS[inst];
    let r = s
        .admin(
            "PUT",
            &format!("/v1/admin/installations/{id}"),
            Some(&json!({"app_id": APP, "account_id": account})),
        )
        .await;
    assert_eq!(r.status, 201, "install {id}: {r:?}");
    r.body["token"].as_str().expect("a token").to_owned()
}

/// After a restart: an uninstall in flight at the kill either applied or did not; the model
/// learns which.
async fn settle_uninstall(s: &TestServer, model: &Mutex<Model>) -> Option<bool> {
    if !lock(model).insts[UNINSTALLED].uninstall_inflight {
        return None;
    }
    let id = INSTALLATIONS[UNINSTALLED].0;
    let r = s
        .admin("GET", &format!("/v1/admin/installations/{id}"), None)
        .await;
    let mut m = lock(model);
    match r.status {
        404 => {
            m.insts[UNINSTALLED].uninstalled(Instant::now());
            Some(true)
        }
        200 => {
            let i = &mut m.insts[UNINSTALLED];
            i.uninstall_inflight = false;
            if std::mem::take(&mut i.refused_during_uninstall) {
                m.fail(format!(
                    "{id}: its token was refused (401) while the uninstall was in flight, but \
                     after the restart the installation is back: a revocation was visible \
                     before it was durable"
                ));
            }
            Some(false)
        }
        other => {
            m.fail(format!("GET installation {id} after the restart: {other}"));
            None
        }
    }
}

/// An uninstalled installation: gone from the admin API, its token refused.
async fn check_uninstalled(s: &TestServer, model: &Mutex<Model>, inst: usize) {
    let (id, old) = {
        let m = lock(model);
        (m.insts[inst].id, m.insts[inst].old_token.clone())
    };
    let r = s
        .admin("GET", &format!("/v1/admin/installations/{id}"), None)
        .await;
    let mut failures = Vec::new();
    if r.status != 404 {
        failures.push(format!(
            "{id}: uninstalled, but GET installation answers {}",
            r.status
        ));
    }
    if let Some(old) = old {
        let r = s.call("GET", "/v1/kv/doc", Some(&old), None).await;
        if r.status != 401 {
            failures.push(format!(
                "{id}: uninstalled, but its token gets {}",
                r.status
            ));
        }
    }
    let mut m = lock(model);
    for f in failures {
        m.fail(f);
    }
}

fn assert_no_failures(model: &Mutex<Model>, s: &TestServer, seed: u64, round: u32) {
    let m = lock(model);
    if !m.failures.is_empty() {
        panic!(
            "crash loop round {round} (seed {seed}, rerun with {SEED_ENV}={seed}): {} \
             problem(s):\n  {}\ndata dir {}; last log lines:\n{}",
            m.failures.len(),
            m.failures.join("\n  "),
            s.data_dir().display(),
            tail(&s.log(), 30)
        );
    }
}

fn tail(log: &str, n: usize) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    Some(
        v.trim()
            .parse()
            .unwrap_or_else(|e| panic!("{name}={v}: {e}")),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn crash_loop_loses_no_acknowledged_write() {
    let rounds = env_u64(ROUNDS_ENV).map_or(DEFAULT_ROUNDS, |r| r as u32);
    let seed = env_u64(SEED_ENV).unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    let mut rng = Rng(seed);
    let mut s = TestServer::start(bin()).await;
    let sqlite = s.backend() == StorageBackend::Sqlite;
    println!(
        "crash loop: {rounds} rounds, seed {seed}, {WRITERS} writers, data dir {}",
        s.data_dir().display()
    );
    let mut insts = Vec::new();
    for (n, (id, account)) in INSTALLATIONS.iter().enumerate() {
        let token = if n == 0 {
            s.install(APP, &["storage:app"], account, id).await
        } else {
            let r = s
                .admin("PUT", &format!("/v1/admin/accounts/{account}"), None)
                .await;
            assert_eq!(r.status, 201, "{r:?}");
            install(&s, n).await
        };
        insts.push(Inst {
            id,
            token: Some(token),
            old_token: None,
            generation: 0,
            uninstalled_at: None,
            uninstall_inflight: false,
            refused_during_uninstall: false,
            owned: BTreeMap::new(),
            doc: Doc::default(),
            tallies: BTreeMap::new(),
        });
    }
    let model = Arc::new(Mutex::new(Model {
        insts,
        failures: Vec::new(),
        round: Figures::default(),
    }));

    let (mut total_acked, mut total_inflight, mut total_applied) = (0u64, 0u64, 0u64);
    let (mut uninstalls, mut reinstalls) = (0u64, 0u64);
    // Uninstalls in flight at the kill, and how many of them had applied.
    let (mut uninstalls_inflight, mut uninstalls_inflight_applied) = (0u64, 0u64);
    let mut ready_times = Vec::new();
    let started = Instant::now();
    for round in 1..=rounds {
        // A later round reinstalls what an earlier one uninstalled: it starts empty.
        if lock(&model).insts[UNINSTALLED].token.is_none() {
            let token = install(&s, UNINSTALLED).await;
            lock(&model).insts[UNINSTALLED].token = Some(token);
            verify(&s, &model, UNINSTALLED).await;
            reinstalls += 1;
        }
        lock(&model).round = Figures::default();

        let mut load = Duration::from_millis(LOAD_MS.0 + rng.below(LOAD_MS.1 - LOAD_MS.0 + 1));
        let killed = Arc::new(AtomicBool::new(false));
        let ctx = Arc::new(Ctx {
            model: model.clone(),
            http: s.http.clone(),
            base: s.url(""),
            admin_token: s.admin_token.clone(),
            killed: killed.clone(),
            round,
        });
        let mut tasks = Vec::new();
        for w in 0..WRITERS {
            let writer_rng = Rng(rng.next());
            tasks.push(tokio::spawn(writer(ctx.clone(), w, writer_rng)));
        }
        if round % UNINSTALL_EVERY == 2 {
            let delay = load.mul_f64(rng.below(90) as f64 / 100.0);
            if rng.chance(50) {
                // The kill lands a few milliseconds after the uninstall is sent.
                load = delay + Duration::from_millis(rng.below(8));
            }
            tasks.push(tokio::spawn(uninstaller(ctx.clone(), delay)));
        }
        tokio::time::sleep(load).await;
        killed.store(true, Ordering::SeqCst);
        s.kill9();
        for t in tasks {
            t.await.expect("a writer panicked");
        }
        let (acked, by_op, inflight) = {
            let m = lock(&model);
            (m.round.acked, m.round.by_op.clone(), m.inflight())
        };
        assert_no_failures(&model, &s, seed, round);

        if sqlite && let Err(e) = integrity_check(&s.data_dir().join("tresor.db")) {
            panic!("round {round}: the killed store fails its integrity check: {e}");
        }
        let ready = s.relaunch_until_ready().await;
        ready_times.push(ready);

        let uninstall = settle_uninstall(&s, &model).await;
        let mut checked = Checked::default();
        for inst in 0..INSTALLATIONS.len() {
            if lock(&model).insts[inst].token.is_some() {
                let c = verify(&s, &model, inst).await;
                checked.keys += c.keys;
                checked.inflight_applied += c.inflight_applied;
            } else {
                check_uninstalled(&s, &model, inst).await;
            }
        }
        assert_no_failures(&model, &s, seed, round);
        let uninstalled =
            by_op.get("uninstall").copied().unwrap_or(0) > 0 || uninstall == Some(true);
        uninstalls += u64::from(uninstalled);
        uninstalls_inflight += u64::from(uninstall.is_some());
        uninstalls_inflight_applied += u64::from(uninstall == Some(true));
        total_acked += acked;
        total_inflight += inflight as u64;
        total_applied += checked.inflight_applied;
        let ops: Vec<String> = by_op.iter().map(|(k, v)| format!("{k} {v}")).collect();
        println!(
            "round {round:>3}: load {:>3} ms, acked {acked:>4} ({}), in flight at kill {inflight} \
             ({} applied){}, integrity {}, ready in {} ms, {} keys checked: ok",
            load.as_millis(),
            ops.join(", "),
            checked.inflight_applied,
            match uninstall {
                Some(true) => ", uninstall in flight: applied",
                Some(false) => ", uninstall in flight: not applied",
                None if uninstalled => ", uninstalled",
                None => "",
            },
            if sqlite { "ok" } else { "n/a" },
            ready.as_millis(),
            checked.keys,
        );
    }
    assert!(
        !s.log().contains("panicked"),
        "the server panicked; log:\n{}",
        s.log()
    );
    assert!(
        total_acked >= u64::from(rounds) * WRITERS as u64,
        "the writers made too little progress: {total_acked} acknowledged writes"
    );
    let max_ready = ready_times.iter().max().copied().unwrap_or_default();
    let mean_ready = ready_times.iter().sum::<Duration>() / rounds.max(1);
    println!(
        "crash loop summary: {rounds} rounds in {:.1} s, seed {seed}: {total_acked} acknowledged \
         writes, 0 lost or altered; {total_inflight} in flight at the kills ({total_applied} \
         found applied); {uninstalls} uninstalls ({uninstalls_inflight_applied} of them in \
         flight at the kill), {} in-flight uninstalls found not applied, {reinstalls} \
         reinstalls; store reopened \
         without repair {rounds}/{rounds} (ready in {} ms mean, {} ms max); integrity_check ok \
         {}/{rounds}",
        started.elapsed().as_secs_f64(),
        uninstalls_inflight - uninstalls_inflight_applied,
        mean_ready.as_millis(),
        max_ready.as_millis(),
        if sqlite { rounds } else { 0 },
    );
}
