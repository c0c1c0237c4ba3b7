//! Record operations: get, exists, put, patch, delete and field ops, alone or in a batch.
//!
//! Every operation runs through one transaction engine: it reads the keys it touches, works on
//! an in-memory overlay (so a later op of a batch sees the earlier ops' writes), and commits all
//! writes at once with a precondition on each key's version as read. A concurrent writer makes
//! the commit fail with `WriteConflict`, and the whole transaction is re-run from fresh reads:
//! optimistic concurrency, so PATCH and field ops never lose an update and never fail because
//! of concurrent writers.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{Map, Value};
use zeroize::Zeroizing;

use crate::audit::{AuditEvent, RequestContext};
use crate::backend::{
    Applied, Commit, DescriptionChange, Expiry, Mutation, Precondition, StoredRecord,
};
use crate::error::{CoreError, Result};
use crate::field_ops::{self, FieldOp};
use crate::keyring::{DATA_KEY_ID, RecordPart, record_aad};
use crate::merge_patch::merge_patch;
use crate::model::{InstallationPrincipal, Millis, Ns, Principal, RecordKey, Scope, StoreKind};
use crate::sealed_rows::KeyCheck;

use super::Service;
use super::rekey::RekeyWait;

/// How many times a transaction is re-run after write conflicts before giving up. Conflicts
/// only come from concurrent writers of the same keys, so this is never reached in practice.
const MAX_ATTEMPTS: u32 = 1000;

/// A client's precondition on the current state of a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    None,
    /// `If-Match: "N"` / `if_version: N`.
    IfMatch(u64),
    /// `If-Match: *`: the key must exist.
    IfMatchAny,
    /// `If-None-Match: *` / `if_version: 0`: the key must not exist.
    IfNoneMatch,
}

/// What to do with one record.
pub enum RecordOp {
    Get {
        fields: Option<Vec<String>>,
    },
    Exists,
    Put {
        value: Value,
        description: Option<String>,
        ttl: Option<i64>,
    },
    Patch {
        patch: Value,
        ttl: Option<i64>,
    },
    Delete {
        fields: Option<Vec<String>>,
    },
    Ops {
        ops: Vec<FieldOp>,
        ttl: Option<i64>,
    },
}

impl RecordOp {
    fn name(&self) -> &'static str {
        match self {
            RecordOp::Get { .. } => "get",
            RecordOp::Exists => "exists",
            RecordOp::Put { .. } => "put",
            RecordOp::Patch { .. } => "patch",
            RecordOp::Delete { .. } => "delete",
            RecordOp::Ops { .. } => "ops",
        }
    }
}

/// One operation on one key.
pub struct OpRequest {
    pub store: StoreKind,
    pub key: RecordKey,
    pub op: RecordOp,
    pub condition: Condition,
    /// Answer with the record the write replaced (`?return=previous`).
    pub return_previous: bool,
}

/// Metadata of a record, never its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordMeta {
    pub key: String,
    pub version: u64,
    pub description: Option<String>,
    pub created_at: Millis,
    pub updated_at: Millis,
    pub expires_at: Option<Millis>,
}

/// A record with its value as compact JSON (zeroized when dropped).
pub struct RecordWithValue {
    pub meta: RecordMeta,
    pub value: Zeroizing<Vec<u8>>,
}

pub enum RecordOut {
    Meta(RecordMeta),
    Full(RecordWithValue),
}

impl RecordOut {
    pub fn meta(&self) -> &RecordMeta {
        match self {
            RecordOut::Meta(m) => m,
            RecordOut::Full(r) => &r.meta,
        }
    }
}

/// The outcome of one operation.
pub struct OpOutput {
    /// The HTTP status of the operation (404 for a get or exists of a missing key).
    pub status: u16,
    pub record: Option<RecordOut>,
    /// Present when `return_previous` was asked: the record the write replaced, if any.
    pub previous: Option<Option<RecordWithValue>>,
    /// Field ops results, one per op.
    pub results: Option<Vec<Value>>,
}

impl Service {
    /// Runs one operation in its own transaction. A get or exists of a missing key is
    /// `NotFound`.
    pub async fn record_op(
        &self,
        principal: &Principal,
        ctx: &RequestContext,
        req: OpRequest,
    ) -> Result<OpOutput> {
        let mut out = self
            .transaction(principal, ctx, std::slice::from_ref(&req))
            .await
            .map_err(|(_, e)| e)?;
        let out = out.pop().ok_or_else(|| CoreError::internal("no output"))?;
        if out.status == 404 {
            return Err(CoreError::NotFound("no such key".into()));
        }
        Ok(out)
    }

    /// Runs a batch. Atomic: one transaction, or the failing op's index and error. Not atomic:
    /// each op in its own transaction, in order.
    pub async fn batch(
        &self,
        principal: &Principal,
        ctx: &RequestContext,
        ops: Vec<OpRequest>,
        atomic: bool,
    ) -> std::result::Result<Vec<Result<OpOutput>>, (Option<usize>, CoreError)> {
        if ops.is_empty() || ops.len() > self.limits.max_batch_ops {
            return Err((
                None,
                CoreError::invalid(format!(
                    "a batch holds 1 to {} ops",
                    self.limits.max_batch_ops
                )),
            ));
        }
        if atomic {
            return self
                .transaction(principal, ctx, &ops)
                .await
                .map(|outs| outs.into_iter().map(Ok).collect());
        }
        let mut results = Vec::with_capacity(ops.len());
        for op in ops {
            let r = self
                .transaction(principal, ctx, std::slice::from_ref(&op))
                .await
                .map_err(|(_, e)| e)
                .and_then(|mut v| v.pop().ok_or_else(|| CoreError::internal("no output")));
            results.push(r);
        }
        Ok(results)
    }

    /// Checks, before the body is read, that the token could do anything at all with this
    /// store, so that a scope refusal (403) comes before request validation (400).
    pub fn precheck_store_access(
        &self,
        principal: &Principal,
        store: StoreKind,
        write: bool,
    ) -> Result<()> {
        let p = principal.installation()?;
        if write {
            p.require(Scope::Write(store))
        } else {
            p.require(Scope::Read(store))
        }
    }

    /// Runs ops as one transaction, re-running it on write conflicts.
    async fn transaction(
        &self,
        principal: &Principal,
        ctx: &RequestContext,
        ops: &[OpRequest],
    ) -> std::result::Result<Vec<OpOutput>, (Option<usize>, CoreError)> {
        let p = principal.installation().map_err(|e| (None, e))?;
        let mut attempt = 0;
        // An installation key rotation: its fence makes commits wait; a ciphertext read just
        // before it committed is read again once (see `rekey`).
        let mut rekey_wait = RekeyWait::new();
        let mut read_again = true;
        loop {
            attempt += 1;
            let mut tx = Tx::new(self, p);
            let outcome = tx.run(ops).await;
            let result = match outcome {
                Ok(pending) => tx.finish(ctx, ops, pending).await,
                Err((i, e)) => Err((Some(i), e)),
            };
            let result = match result {
                Err((i, CoreError::Rekeying)) => {
                    match rekey_wait.again(&self.keys, &[p.ns, p.app_ns]).await {
                        Ok(()) => continue,
                        Err(e) => Err((i, e)),
                    }
                }
                Err((_, CoreError::Integrity)) if read_again => {
                    read_again = false;
                    continue;
                }
                other => other,
            };
            match result {
                Err((_, CoreError::WriteConflict)) if attempt < MAX_ATTEMPTS => {
                    // Back off a little once contention is evident, so retries spread out.
                    if attempt > 3 {
                        let jitter =
                            u64::from(tresor_crypto::random_bytes::<1>().map_or(0, |b| b[0]));
                        tokio::time::sleep(Duration::from_micros(
                            100 * u64::from(attempt.min(20)) + jitter * 4,
                        ))
                        .await;
                    }
                }
                Err((i, e)) => {
                    let status = super::status_of(&e);
                    let events = ops
                        .iter()
                        .map(|op| self.record_event(p, ctx, op, status))
                        .collect();
                    self.enqueue(events).map_err(|qe| (None, qe))?;
                    return Err((i, e));
                }
                Ok(outs) => return Ok(outs),
            }
        }
    }

    fn record_event(
        &self,
        p: &InstallationPrincipal,
        ctx: &RequestContext,
        op: &OpRequest,
        status: u16,
    ) -> AuditEvent {
        let mut ev = self.event(Some(&Principal::Installation(p.clone())), ctx, op.op.name());
        ev.store = Some(op.store.as_str().to_owned());
        ev.key = Some(op.key.as_str().to_owned());
        ev.status = status;
        ev
    }
}

/// Where a record's metadata comes from: known from storage, or produced by a mutation of this
/// transaction (filled in from the backend's answer after the commit).
#[derive(Clone)]
struct MetaSource {
    key: String,
    description: Option<String>,
    known: Option<RecordMeta>,
    pending: Option<usize>,
}

impl MetaSource {
    fn resolve(self, applied: &[Applied]) -> Result<RecordMeta> {
        if let Some(m) = self.known {
            return Ok(m);
        }
        match self.pending.and_then(|i| applied.get(i)) {
            Some(Applied::Put {
                version,
                created_at,
                updated_at,
                expires_at,
                ..
            }) => Ok(RecordMeta {
                key: self.key,
                version: *version,
                description: self.description,
                created_at: *created_at,
                updated_at: *updated_at,
                expires_at: *expires_at,
            }),
            _ => Err(CoreError::internal("a pending record has no applied put")),
        }
    }
}

/// The state of one key as this transaction sees it.
struct Live {
    meta: MetaSource,
    /// Known version (None once written in this transaction).
    version: Option<u64>,
    sealed: Option<Vec<u8>>,
    plain: Option<Zeroizing<Vec<u8>>>,
}

struct Slot {
    ns: Ns,
    owner: String,
    /// The version read from storage: the precondition of the first mutation of this key.
    original: Precondition,
    mutated: bool,
    live: Option<Live>,
}

struct PendingOutput {
    status: u16,
    record: Option<(MetaSource, Option<Zeroizing<Vec<u8>>>)>,
    previous: Option<Option<(MetaSource, Zeroizing<Vec<u8>>)>>,
    results: Option<Vec<Value>>,
}

struct Tx<'a> {
    svc: &'a Service,
    p: &'a InstallationPrincipal,
    slots: HashMap<(StoreKind, String), Slot>,
    /// Keys in the order first touched, for deterministic Check mutations.
    order: Vec<(StoreKind, String)>,
    mutations: Vec<Mutation>,
    /// The keys the mutations sealed under, one per namespace.
    keys: Vec<KeyCheck>,
    touches_shared: bool,
}

impl<'a> Tx<'a> {
    fn new(svc: &'a Service, p: &'a InstallationPrincipal) -> Tx<'a> {
        Tx {
            svc,
            p,
            slots: HashMap::new(),
            order: Vec::new(),
            mutations: Vec::new(),
            keys: Vec::new(),
            touches_shared: false,
        }
    }

    async fn run(
        &mut self,
        ops: &[OpRequest],
    ) -> std::result::Result<Vec<PendingOutput>, (usize, CoreError)> {
        let mut outs = Vec::with_capacity(ops.len());
        for (i, op) in ops.iter().enumerate() {
            let out = self.apply(op).await.map_err(|e| (i, e))?;
            outs.push(out);
        }
        Ok(outs)
    }

    async fn finish(
        &mut self,
        ctx: &RequestContext,
        ops: &[OpRequest],
        pending: Vec<PendingOutput>,
    ) -> std::result::Result<Vec<OpOutput>, (Option<usize>, CoreError)> {
        let events: Vec<AuditEvent> = ops
            .iter()
            .zip(&pending)
            .map(|(op, out)| self.svc.record_event(self.p, ctx, op, out.status))
            .collect();
        let applied = if self.mutations.is_empty() {
            self.svc.enqueue(events).map_err(|e| (None, e))?;
            Vec::new()
        } else {
            for k in &self.order {
                if let Some(slot) = self.slots.get(k)
                    && !slot.mutated
                {
                    self.mutations.push(Mutation::Check {
                        ns: slot.ns,
                        store: k.0,
                        key: k.1.as_bytes().to_vec(),
                        expect: slot.original,
                    });
                }
            }
            let mut guards = vec![self.p.ns];
            if self.touches_shared {
                guards.push(self.p.app_ns);
            }
            let commit = Commit {
                guards,
                keys: std::mem::take(&mut self.keys),
                mutations: std::mem::take(&mut self.mutations),
                audit: events,
            };
            self.svc
                .backend
                .commit(commit)
                .await
                .map_err(|e| (None, e))?
        };
        pending
            .into_iter()
            .map(|o| resolve_output(o, &applied))
            .collect::<Result<Vec<_>>>()
            .map_err(|e| (None, e))
    }

    async fn slot(&mut self, store: StoreKind, key: &RecordKey) -> Result<&mut Slot> {
        let k = (store, key.as_str().to_owned());
        if !self.slots.contains_key(&k) {
            let (ns, owner) = if store == StoreKind::Shared {
                self.touches_shared = true;
                (self.p.app_ns, format!("app/{}", self.p.app_id))
            } else {
                (
                    self.p.ns,
                    format!("{}/{}", self.p.account_id, self.p.installation_id),
                )
            };
            let stored = self
                .svc
                .backend
                .read_record(ns, store, key.as_bytes())
                .await?;
            let slot = match stored {
                None => Slot {
                    ns,
                    owner,
                    original: Precondition::Absent,
                    mutated: false,
                    live: None,
                },
                Some(rec) => {
                    let live = self.live_from_stored(ns, &owner, store, key, rec).await?;
                    Slot {
                        ns,
                        owner,
                        original: Precondition::Version(live.version.unwrap_or(0)),
                        mutated: false,
                        live: Some(live),
                    }
                }
            };
            self.order.push(k.clone());
            self.slots.insert(k.clone(), slot);
        }
        self.slots
            .get_mut(&k)
            .ok_or_else(|| CoreError::internal("slot vanished"))
    }

    async fn live_from_stored(
        &self,
        ns: Ns,
        owner: &str,
        store: StoreKind,
        key: &RecordKey,
        rec: StoredRecord,
    ) -> Result<Live> {
        let description = match &rec.description {
            Some(sealed) => {
                let aad = record_aad(ns, owner, store, key.as_bytes(), RecordPart::Description);
                let plain = self
                    .svc
                    .keys
                    .open(self.svc.backend.as_ref(), ns, &aad, sealed)
                    .await?;
                Some(String::from_utf8(plain.to_vec()).map_err(|_| CoreError::Integrity)?)
            }
            None => None,
        };
        let meta = RecordMeta {
            key: key.as_str().to_owned(),
            version: rec.version,
            description: description.clone(),
            created_at: rec.created_at,
            updated_at: rec.updated_at,
            expires_at: rec.expires_at,
        };
        Ok(Live {
            meta: MetaSource {
                key: key.as_str().to_owned(),
                description,
                known: Some(meta),
                pending: None,
            },
            version: Some(rec.version),
            sealed: Some(rec.value),
            plain: None,
        })
    }

    /// The plaintext compact JSON of a live record, decrypting it on first use.
    async fn plain(&mut self, store: StoreKind, key: &RecordKey) -> Result<Zeroizing<Vec<u8>>> {
        let k = (store, key.as_str().to_owned());
        let (ns, owner, sealed) = {
            let slot = self
                .slots
                .get(&k)
                .ok_or_else(|| CoreError::internal("no slot"))?;
            let live = slot
                .live
                .as_ref()
                .ok_or_else(|| CoreError::internal("no live record"))?;
            if let Some(p) = &live.plain {
                return Ok(p.clone());
            }
            let sealed = live
                .sealed
                .clone()
                .ok_or_else(|| CoreError::internal("record without value"))?;
            (slot.ns, slot.owner.clone(), sealed)
        };
        let aad = record_aad(ns, &owner, store, key.as_bytes(), RecordPart::Value);
        let plain = self
            .svc
            .keys
            .open(self.svc.backend.as_ref(), ns, &aad, &sealed)
            .await?;
        if let Some(live) = self.slots.get_mut(&k).and_then(|s| s.live.as_mut()) {
            live.plain = Some(plain.clone());
        }
        Ok(plain)
    }

    async fn plain_value(&mut self, store: StoreKind, key: &RecordKey) -> Result<Value> {
        let bytes = self.plain(store, key).await?;
        // The strict parser keeps numbers exactly as stored (serde_json would rewrite
        // exponents); the depth bound is generous because stored values were checked on write.
        crate::json::parse_strict(&bytes, 4 * self.svc.limits.max_depth)
            .map_err(|_| CoreError::Integrity)
    }

    async fn apply(&mut self, req: &OpRequest) -> Result<PendingOutput> {
        let p = self.p;
        let store = req.store;
        let needs_read = |has: bool| -> Result<()> {
            if has {
                p.require(Scope::Read(store))
            } else {
                Ok(())
            }
        };
        // Scopes first, then validation, then the operation.
        match &req.op {
            RecordOp::Get { .. } | RecordOp::Exists => p.require(Scope::Read(store))?,
            RecordOp::Put { .. } | RecordOp::Patch { .. } | RecordOp::Delete { .. } => {
                p.require(Scope::Write(store))?;
                needs_read(req.return_previous)?;
            }
            RecordOp::Ops { ops, .. } => {
                if ops.iter().all(FieldOp::is_read_only) {
                    p.require(Scope::Read(store))?;
                } else {
                    p.require(Scope::Write(store))?;
                    needs_read(ops.iter().any(reveals_values))?;
                }
                if req.return_previous {
                    return Err(CoreError::invalid("field ops do not take return=previous"));
                }
            }
        }
        self.validate(req)?;

        let slot = self.slot(store, &req.key).await?;
        check_condition(req.condition, slot.live.as_ref())?;
        let exists = slot.live.is_some();

        let previous = if req.return_previous && !matches!(req.op, RecordOp::Get { .. }) {
            Some(self.current_full(store, &req.key).await?)
        } else {
            None
        };

        let mut out = match &req.op {
            RecordOp::Get { fields } => {
                if !exists {
                    return Ok(not_found());
                }
                let meta = self.current_meta(store, &req.key)?;
                let plain = match fields {
                    None => self.plain(store, &req.key).await?,
                    Some(fields) => {
                        let v = self.plain_value(store, &req.key).await?;
                        let Value::Object(map) = v else {
                            return Err(CoreError::Conflict(
                                "the stored value is not an object, so it has no fields".into(),
                            ));
                        };
                        let picked: Map<String, Value> = fields
                            .iter()
                            .filter_map(|f| map.get(f).map(|v| (f.clone(), v.clone())))
                            .collect();
                        to_json(&Value::Object(picked))?
                    }
                };
                ok(200, Some((meta, Some(plain))))
            }
            RecordOp::Exists => {
                if !exists {
                    return Ok(not_found());
                }
                ok(200, Some((self.current_meta(store, &req.key)?, None)))
            }
            RecordOp::Put {
                value,
                description,
                ttl,
            } => {
                let plain = to_json(value)?;
                let expiry = ttl.map_or(Expiry::Clear, Expiry::In);
                let meta = self
                    .write(
                        store,
                        &req.key,
                        plain,
                        DescriptionChange::Set(None),
                        description.clone(),
                        expiry,
                    )
                    .await?;
                ok(if exists { 200 } else { 201 }, Some((meta, None)))
            }
            RecordOp::Patch { patch, ttl } => {
                let mut v = if exists {
                    self.plain_value(store, &req.key).await?
                } else {
                    Value::Object(Map::new())
                };
                merge_patch(&mut v, patch);
                if v.is_null() {
                    return Err(CoreError::invalid("the patch would make the value null"));
                }
                self.svc.limits.check_value(store, &v)?;
                let plain = to_json(&v)?;
                let description = self.current_description(store, &req.key);
                let expiry = ttl.map_or(Expiry::Keep, Expiry::In);
                let meta = self
                    .write(
                        store,
                        &req.key,
                        plain.clone(),
                        DescriptionChange::Keep,
                        description,
                        expiry,
                    )
                    .await?;
                let value = p.has(Scope::Read(store)).then_some(plain);
                ok(200, Some((meta, value)))
            }
            RecordOp::Delete { fields } => {
                let status = if req.return_previous { 200 } else { 204 };
                if !exists {
                    ok(status, None)
                } else if let Some(fields) = fields {
                    let v = self.plain_value(store, &req.key).await?;
                    let Value::Object(mut map) = v else {
                        return Err(CoreError::Conflict(
                            "the stored value is not an object, so it has no fields".into(),
                        ));
                    };
                    for f in fields {
                        map.shift_remove(f);
                    }
                    let plain = to_json(&Value::Object(map))?;
                    let description = self.current_description(store, &req.key);
                    self.write(
                        store,
                        &req.key,
                        plain,
                        DescriptionChange::Keep,
                        description,
                        Expiry::Keep,
                    )
                    .await?;
                    ok(status, None)
                } else {
                    self.delete(store, &req.key)?;
                    ok(status, None)
                }
            }
            RecordOp::Ops { ops, ttl } => self.field_ops(store, &req.key, ops, *ttl).await?,
        };
        out.previous = previous;
        Ok(out)
    }

    fn validate(&self, req: &OpRequest) -> Result<()> {
        let limits = &self.svc.limits;
        let check_fields = |fields: &Option<Vec<String>>| -> Result<()> {
            if let Some(f) = fields
                && (f.is_empty() || f.iter().any(String::is_empty))
            {
                return Err(CoreError::invalid("fields must name at least one field"));
            }
            Ok(())
        };
        match &req.op {
            RecordOp::Get { fields } | RecordOp::Delete { fields } => check_fields(fields),
            RecordOp::Exists => Ok(()),
            RecordOp::Put {
                value,
                description,
                ttl,
            } => {
                limits.check_value(req.store, value)?;
                if let Some(d) = description {
                    limits.check_description(d)?;
                }
                if let Some(t) = ttl {
                    limits.check_ttl(*t)?;
                }
                Ok(())
            }
            RecordOp::Patch { patch, ttl } => {
                if crate::json::depth(patch) > limits.max_depth {
                    return Err(CoreError::invalid(format!(
                        "the patch is nested more than {} containers deep",
                        limits.max_depth
                    )));
                }
                if let Some(t) = ttl {
                    limits.check_ttl(*t)?;
                }
                Ok(())
            }
            RecordOp::Ops { ops, ttl } => {
                field_ops::validate_ops(ops)?;
                if ops.len() > limits.max_field_ops {
                    return Err(CoreError::invalid(format!(
                        "at most {} field ops per request",
                        limits.max_field_ops
                    )));
                }
                if let Some(t) = ttl {
                    limits.check_ttl(*t)?;
                }
                Ok(())
            }
        }
    }

    async fn field_ops(
        &mut self,
        store: StoreKind,
        key: &RecordKey,
        ops: &[FieldOp],
        ttl: Option<i64>,
    ) -> Result<PendingOutput> {
        let read_only = ops.iter().all(FieldOp::is_read_only);
        let exists = self.live(store, key).is_some();
        let creates_nothing = ops
            .iter()
            .all(|o| o.is_read_only() || matches!(o, FieldOp::ListPop { .. }));
        if !exists && creates_nothing {
            let mut empty = Map::new();
            let results = field_ops::apply_ops(&mut empty, ops)?;
            return Ok(PendingOutput {
                status: 200,
                record: None,
                previous: None,
                results: Some(results),
            });
        }
        let mut map = if exists {
            match self.plain_value(store, key).await? {
                Value::Object(m) => m,
                _ => {
                    return Err(CoreError::Conflict(
                        "the stored value is not an object, so field ops do not apply".into(),
                    ));
                }
            }
        } else {
            Map::new()
        };
        let results = field_ops::apply_ops(&mut map, ops)?;
        if read_only {
            let meta = self.current_meta(store, key)?;
            return Ok(PendingOutput {
                status: 200,
                record: Some((meta, None)),
                previous: None,
                results: Some(results),
            });
        }
        let v = Value::Object(map);
        self.svc.limits.check_value(store, &v)?;
        let plain = to_json(&v)?;
        let description = self.current_description(store, key);
        let expiry = ttl.map_or(Expiry::Keep, Expiry::In);
        let meta = self
            .write(
                store,
                key,
                plain,
                DescriptionChange::Keep,
                description,
                expiry,
            )
            .await?;
        Ok(PendingOutput {
            status: 200,
            record: Some((meta, None)),
            previous: None,
            results: Some(results),
        })
    }

    fn live(&self, store: StoreKind, key: &RecordKey) -> Option<&Live> {
        self.slots
            .get(&(store, key.as_str().to_owned()))
            .and_then(|s| s.live.as_ref())
    }

    fn current_meta(&self, store: StoreKind, key: &RecordKey) -> Result<MetaSource> {
        self.live(store, key)
            .map(|l| l.meta.clone())
            .ok_or_else(|| CoreError::internal("no live record"))
    }

    fn current_description(&self, store: StoreKind, key: &RecordKey) -> Option<String> {
        self.live(store, key)
            .and_then(|l| l.meta.description.clone())
    }

    async fn current_full(
        &mut self,
        store: StoreKind,
        key: &RecordKey,
    ) -> Result<Option<(MetaSource, Zeroizing<Vec<u8>>)>> {
        if self.live(store, key).is_none() {
            return Ok(None);
        }
        let meta = self.current_meta(store, key)?;
        let plain = self.plain(store, key).await?;
        Ok(Some((meta, plain)))
    }

    /// Records a put of `plain` in this transaction and returns where its metadata will come
    /// from. `description` is the plaintext the record will carry afterwards.
    async fn write(
        &mut self,
        store: StoreKind,
        key: &RecordKey,
        plain: Zeroizing<Vec<u8>>,
        change: DescriptionChange,
        description: Option<String>,
        expiry: Expiry,
    ) -> Result<MetaSource> {
        let k = (store, key.as_str().to_owned());
        let (ns, owner) = {
            let slot = self
                .slots
                .get(&k)
                .ok_or_else(|| CoreError::internal("no slot"))?;
            (slot.ns, slot.owner.clone())
        };
        let (dk, check) = self
            .svc
            .keys
            .sealing_key(self.svc.backend.as_ref(), ns)
            .await?;
        match self.keys.iter().find(|k| k.ns == ns) {
            None => self.keys.push(check),
            // The cached key changed since an earlier write of this transaction sealed.
            Some(earlier) if *earlier != check => return Err(CoreError::Rekeying),
            Some(_) => {}
        }
        let aad = record_aad(ns, &owner, store, key.as_bytes(), RecordPart::Value);
        let sealed = tresor_crypto::seal(&dk, DATA_KEY_ID, &aad, &plain)?;
        let change = match (change, &description) {
            (DescriptionChange::Keep, _) => DescriptionChange::Keep,
            (DescriptionChange::Set(_), None) => DescriptionChange::Set(None),
            (DescriptionChange::Set(_), Some(d)) => {
                let aad = record_aad(ns, &owner, store, key.as_bytes(), RecordPart::Description);
                DescriptionChange::Set(Some(tresor_crypto::seal(
                    &dk,
                    DATA_KEY_ID,
                    &aad,
                    d.as_bytes(),
                )?))
            }
        };
        let index = self.mutations.len();
        let slot = self
            .slots
            .get_mut(&k)
            .ok_or_else(|| CoreError::internal("no slot"))?;
        let expect = if slot.mutated {
            Precondition::Any
        } else {
            slot.original
        };
        slot.mutated = true;
        self.mutations.push(Mutation::Put {
            ns,
            store,
            key: key.as_bytes().to_vec(),
            expect,
            value: sealed,
            description: change,
            expiry,
        });
        let meta = MetaSource {
            key: key.as_str().to_owned(),
            description,
            known: None,
            pending: Some(index),
        };
        slot.live = Some(Live {
            meta: meta.clone(),
            version: None,
            sealed: None,
            plain: Some(plain),
        });
        Ok(meta)
    }

    fn delete(&mut self, store: StoreKind, key: &RecordKey) -> Result<()> {
        let slot = self
            .slots
            .get_mut(&(store, key.as_str().to_owned()))
            .ok_or_else(|| CoreError::internal("no slot"))?;
        let expect = if slot.mutated {
            Precondition::Any
        } else {
            slot.original
        };
        slot.mutated = true;
        slot.live = None;
        self.mutations.push(Mutation::Delete {
            ns: slot.ns,
            store,
            key: key.as_bytes().to_vec(),
            expect,
        });
        Ok(())
    }
}

/// Ops whose results carry stored values, so they need the read scope too.
fn reveals_values(op: &FieldOp) -> bool {
    matches!(
        op,
        FieldOp::Increment { .. }
            | FieldOp::ListPop { .. }
            | FieldOp::ListPeek { .. }
            | FieldOp::SetContains { .. }
    )
}

fn check_condition(cond: Condition, live: Option<&Live>) -> Result<()> {
    let current_version = live.and_then(|l| l.version);
    let holds = match cond {
        Condition::None => true,
        Condition::IfMatchAny => live.is_some(),
        Condition::IfNoneMatch => live.is_none(),
        Condition::IfMatch(v) => current_version == Some(v),
    };
    if holds {
        Ok(())
    } else {
        Err(CoreError::PreconditionFailed { current_version })
    }
}

fn to_json(v: &Value) -> Result<Zeroizing<Vec<u8>>> {
    serde_json::to_vec(v)
        .map(Zeroizing::new)
        .map_err(|e| CoreError::internal(format!("json encoding failed: {e}")))
}

fn ok(status: u16, record: Option<(MetaSource, Option<Zeroizing<Vec<u8>>>)>) -> PendingOutput {
    PendingOutput {
        status,
        record,
        previous: None,
        results: None,
    }
}

fn not_found() -> PendingOutput {
    ok(404, None)
}

fn resolve_output(o: PendingOutput, applied: &[Applied]) -> Result<OpOutput> {
    let record = match o.record {
        None => None,
        Some((src, None)) => Some(RecordOut::Meta(src.resolve(applied)?)),
        Some((src, Some(value))) => Some(RecordOut::Full(RecordWithValue {
            meta: src.resolve(applied)?,
            value,
        })),
    };
    let previous = match o.previous {
        None => None,
        Some(None) => Some(None),
        Some(Some((src, value))) => Some(Some(RecordWithValue {
            meta: src.resolve(applied)?,
            value,
        })),
    };
    Ok(OpOutput {
        status: o.status,
        record,
        previous,
        results: o.results,
    })
}
