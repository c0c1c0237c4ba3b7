//! The write operations, as plain data ([`Op`]) applied inside one SERIALIZABLE transaction
//! attempt ([`Tx`]). An op is borrowed, not consumed, because the retry loop of `tx.rs` may run
//! it again from the start; applying it has no effect outside its transaction.
//!
//! Every timestamp an attempt writes and every expiry it judges come from the one clock reading
//! of the attempt (`Tx::now`), the database's clock.

use deadpool_postgres::GenericClient;
use tresor_core::CoreError;
use tresor_core::audit::AuditEvent;
use tresor_core::backend::{
    AccountRow, AppRow, Applied, Commit, DescriptionChange, Expiry, FlowRow, FlowStatus,
    InstallOutcome, InstallationRow, Mutation, NamespaceRow, NewInstallation, NodeRow,
    Precondition, ProviderRow, TokenKind, TokenRow, Usage, grown_namespaces,
};
use tresor_core::model::{Millis, Ns, StoreKind};

use crate::error::TxError;
use tresor_core::backend::columns::{decode_owner, encode_list};

use crate::queries::{self, store_code};
use crate::tx::{FLOOR_MARGIN_MICROS, Tx};

type Result<T> = std::result::Result<T, TxError>;

/// The `store` of credentials' rows in `version_floors` (record stores are 1 to 4).
const CREDENTIAL_FLOOR_STORE: i16 = 0;

/// How long a flow is kept after it expired before the purge deletes it (a day), so a late
/// `complete` still finds it and answers that it expired.
pub(crate) const FLOW_RETENTION: Millis = 24 * 60 * 60 * 1000;

/// One write operation.
pub(crate) enum Op {
    Commit(Commit),
    MetaGetOrInsert {
        name: String,
        value: Vec<u8>,
    },
    /// Compare-and-set of a meta value (see `Backend::meta_replace`).
    MetaReplace {
        name: String,
        old: Vec<u8>,
        new: Vec<u8>,
    },
    /// Compare-and-set of a namespace's wrapped key (see `Backend::namespace_key_replace`).
    NamespaceKeyReplace {
        ns: Ns,
        old: Vec<u8>,
        new: Vec<u8>,
    },
    PutApp {
        app_id: String,
        scopes: Vec<String>,
        namespace: NamespaceRow,
        audit: AuditEvent,
    },
    DeleteApp {
        app_id: String,
        audit: AuditEvent,
    },
    PutAccount {
        account_id: String,
        namespace: NamespaceRow,
        audit: AuditEvent,
    },
    DeleteAccount {
        account_id: String,
        audit: AuditEvent,
    },
    Install {
        new: NewInstallation,
        audit: AuditEvent,
    },
    Uninstall {
        installation_id: String,
        audit: AuditEvent,
    },
    CreateToken {
        token: TokenRow,
        audit: AuditEvent,
    },
    RevokeToken {
        token_id: String,
        audit: AuditEvent,
    },
    PutProvider {
        row: ProviderRow,
        keep_secret: bool,
        audit: AuditEvent,
    },
    DeleteProvider {
        name: String,
        audit: AuditEvent,
    },
    PurgeExpired {
        limit: usize,
    },
    PurgeAudit {
        before: Millis,
        limit: usize,
    },
    RegisterNode {
        node: NodeRow,
    },
    UnregisterNode {
        node_id: String,
    },
    /// A write of an installation key rotation (`rekey.rs`).
    Rekey(crate::rekey::RekeyOp),
}

/// What an [`Op`] produced; the caller knows which variant its op answers with.
#[derive(Debug)]
pub(crate) enum Outcome {
    Applied(Vec<Applied>),
    Meta(Vec<u8>),
    /// A compare-and-set: did it replace?
    Replaced(bool),
    App(AppRow, bool),
    Account(AccountRow, bool),
    Provider(ProviderRow, bool),
    Install(InstallOutcome),
    /// Whether something existed and was deleted.
    Deleted(bool),
    Unit,
    Purged(usize),
    Rekey(crate::rekey::RekeyOutcome),
}

/// Applies one op inside the attempt's transaction.
pub(crate) async fn apply(t: &mut Tx<'_>, op: &Op) -> Result<Outcome> {
    match op {
        Op::Commit(commit) => apply_commit(t, commit).await.map(Outcome::Applied),
        Op::Rekey(op) => crate::rekey::apply(t, op).await.map(Outcome::Rekey),
        Op::MetaGetOrInsert { name, value } => {
            t.tx.execute(
                "INSERT INTO meta (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
                &[name, value],
            )
            .await?;
            let stored = queries::meta_get(&t.tx, name).await?.ok_or_else(|| {
                CoreError::internal("a meta value vanished inside its transaction")
            })?;
            Ok(Outcome::Meta(stored))
        }
        Op::MetaReplace { name, old, new } => {
            let n =
                t.tx.execute(
                    "UPDATE meta SET value = $1 WHERE name = $2 AND value = $3",
                    &[new, name, old],
                )
                .await?;
            Ok(Outcome::Replaced(n == 1))
        }
        Op::NamespaceKeyReplace { ns, old, new } => {
            let n =
                t.tx.execute(
                    "UPDATE namespaces SET wrapped_key = $1 WHERE ns = $2 AND wrapped_key = $3",
                    &[new, ns, old],
                )
                .await?;
            Ok(Outcome::Replaced(n == 1))
        }
        Op::PutApp {
            app_id,
            scopes,
            namespace,
            audit,
        } => {
            let out = put_app(t, app_id, scopes, namespace).await?;
            insert_audit(t, std::slice::from_ref(audit)).await?;
            Ok(out)
        }
        Op::DeleteApp { app_id, audit } => {
            let out = delete_app(t, app_id).await?;
            insert_audit(t, std::slice::from_ref(audit)).await?;
            Ok(Outcome::Deleted(out))
        }
        Op::PutAccount {
            account_id,
            namespace,
            audit,
        } => {
            let out = put_account(t, account_id, namespace).await?;
            insert_audit(t, std::slice::from_ref(audit)).await?;
            Ok(out)
        }
        Op::DeleteAccount { account_id, audit } => {
            let out = delete_account(t, account_id).await?;
            insert_audit(t, std::slice::from_ref(audit)).await?;
            Ok(Outcome::Deleted(out))
        }
        Op::Install { new, audit } => {
            let out = install(t, new).await?;
            insert_audit(t, std::slice::from_ref(audit)).await?;
            Ok(Outcome::Install(out))
        }
        Op::Uninstall {
            installation_id,
            audit,
        } => {
            let existed = match queries::get_installation(&t.tx, installation_id).await? {
                Some(inst) => {
                    uninstall(t, &inst).await?;
                    true
                }
                None => false,
            };
            insert_audit(t, std::slice::from_ref(audit)).await?;
            Ok(Outcome::Deleted(existed))
        }
        Op::CreateToken { token, audit } => {
            create_token(t, token).await?;
            insert_audit(t, std::slice::from_ref(audit)).await?;
            Ok(Outcome::Unit)
        }
        Op::RevokeToken { token_id, audit } => {
            let n =
                t.tx.execute("DELETE FROM tokens WHERE token_id = $1", &[token_id])
                    .await?;
            insert_audit(t, std::slice::from_ref(audit)).await?;
            Ok(Outcome::Deleted(n > 0))
        }
        Op::PutProvider {
            row,
            keep_secret,
            audit,
        } => {
            let out = put_provider(t, row, *keep_secret).await?;
            insert_audit(t, std::slice::from_ref(audit)).await?;
            Ok(out)
        }
        Op::DeleteProvider { name, audit } => {
            let n =
                t.tx.execute("DELETE FROM providers WHERE name = $1", &[name])
                    .await?;
            insert_audit(t, std::slice::from_ref(audit)).await?;
            Ok(Outcome::Deleted(n > 0))
        }
        Op::PurgeExpired { limit } => purge_expired(t, *limit).await.map(Outcome::Purged),
        Op::PurgeAudit { before, limit } => {
            let n =
                t.tx.execute(
                    "DELETE FROM audit WHERE id IN \
                     (SELECT id FROM audit WHERE time < $1 ORDER BY id LIMIT $2)",
                    &[before, &sql_limit(*limit)],
                )
                .await?;
            Ok(Outcome::Purged(to_usize(n)))
        }
        Op::RegisterNode { node } => {
            let versions = encode_list(&node.key_versions)?;
            t.tx.execute(
                "INSERT INTO nodes (node_id, key_versions, started_at, last_seen) \
                 VALUES ($1, $2, $3, $3) ON CONFLICT (node_id) DO UPDATE \
                 SET key_versions = excluded.key_versions, last_seen = excluded.last_seen",
                &[&node.node_id, &versions, &t.now],
            )
            .await?;
            Ok(Outcome::Unit)
        }
        Op::UnregisterNode { node_id } => {
            let n =
                t.tx.execute("DELETE FROM nodes WHERE node_id = $1", &[node_id])
                    .await?;
            Ok(Outcome::Deleted(n > 0))
        }
    }
}

/// Writes audit events with ids from the attempt's clock (see `Tx::next_audit_id`). An id
/// taken by a concurrent transaction in the same microseconds is a unique violation, which the
/// retry loop answers by running the attempt again with a later clock.
pub(crate) async fn insert_audit(t: &mut Tx<'_>, events: &[AuditEvent]) -> Result<()> {
    if events.is_empty() {
        return Ok(());
    }
    let stmt =
        t.tx.prepare_cached(
            "INSERT INTO audit (id, time, request_id, token_id, app_id, account_id, \
             installation_id, operation, store, key, status, remote_addr) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        )
        .await?;
    for ev in events {
        let id = t.next_audit_id();
        t.tx.execute(
            &stmt,
            &[
                &id,
                &ev.time,
                &ev.request_id,
                &ev.token_id,
                &ev.app_id,
                &ev.account_id,
                &ev.installation_id,
                &ev.operation,
                &ev.store,
                &ev.key,
                &i32::from(ev.status),
                &ev.remote_addr,
            ],
        )
        .await?;
    }
    Ok(())
}

async fn apply_commit(t: &mut Tx<'_>, commit: &Commit) -> Result<Vec<Applied>> {
    // The incarnation check of invariant 7, inside the transaction: a racing uninstall on any
    // server either committed before (and this fails) or conflicts with this transaction under
    // SERIALIZABLE (and one of the two is retried, then sees the other).
    // The attempt counted the guards with its clock reading (`tx::attempt_once`).
    if !commit.guards.is_empty() {
        let expected = crate::tx::sorted_guards(&commit.guards).len();
        let found = t
            .guards_found
            .ok_or_else(|| CoreError::internal("the commit's guards were not counted"))?;
        if usize::try_from(found).ok() != Some(expected) {
            return Err(CoreError::Unauthenticated.into());
        }
    }
    // A guard fenced by a key rotation, or a key the commit sealed under that has been
    // replaced since: the service waits and runs the operation again (`sealed_rows`).
    if t.guards_held > 0 {
        return Err(CoreError::Rekeying.into());
    }
    // Storage quotas: each namespace the commit puts into, before and after, inside the
    // transaction (SERIALIZABLE: two servers racing to fill one namespace conflict, and the
    // retry sees the other's records).
    let grown = if t.quota.is_off() {
        Vec::new()
    } else {
        grown_namespaces(commit)
    };
    let mut before = Vec::with_capacity(grown.len());
    for ns in &grown {
        before.push(usage(t, *ns).await?);
    }
    let mut applied = Vec::with_capacity(commit.mutations.len());
    for mutation in &commit.mutations {
        applied.push(apply_mutation(t, mutation).await?);
    }
    for (ns, before) in grown.iter().zip(before) {
        if t.quota.refuses(before, usage(t, *ns).await?) {
            return Err(CoreError::QuotaExceeded.into());
        }
    }
    insert_audit(t, &commit.audit).await?;
    Ok(applied)
}

/// A namespace's live records and their stored bytes, for the quotas (expiry on the
/// attempt's clock).
async fn usage(t: &Tx<'_>, ns: Ns) -> Result<Usage> {
    let stmt =
        t.tx.prepare_cached(
            "SELECT count(*), coalesce(sum(octet_length(key) + octet_length(value) \
             + coalesce(octet_length(description), 0)), 0)::BIGINT FROM records \
             WHERE ns = $1 AND (expires_at IS NULL OR expires_at > $2)",
        )
        .await?;
    let row = t.tx.query_one(&stmt, &[&ns, &t.now]).await?;
    let (records, bytes): (i64, i64) = (row.try_get(0)?, row.try_get(1)?);
    Ok(Usage {
        records: u64::try_from(records).unwrap_or(0),
        bytes: u64::try_from(bytes).unwrap_or(0),
    })
}

/// A key's row, locked for this transaction, whether live or expired.
struct Current {
    version: u64,
    created_at: Millis,
    expires_at: Option<Millis>,
    description: Option<Vec<u8>>,
    live: bool,
}

async fn current_record(
    t: &Tx<'_>,
    ns: Ns,
    store: StoreKind,
    key: &[u8],
) -> Result<Option<Current>> {
    let stmt =
        t.tx.prepare_cached(
            "SELECT version, created_at, expires_at, description FROM records \
             WHERE ns = $1 AND store = $2 AND key = $3 FOR UPDATE",
        )
        .await?;
    let row =
        t.tx.query_opt(&stmt, &[&ns, &store_code(store), &key])
            .await?;
    row.map(|r| {
        let expires_at: Option<Millis> = r.try_get(2)?;
        Ok(Current {
            version: queries::version(&r, 0)?,
            created_at: r.try_get(1)?,
            expires_at,
            description: r.try_get(3)?,
            live: expires_at.is_none_or(|e| e > t.now),
        })
    })
    .transpose()
}

/// The last version a deleted key had, if it is still remembered.
async fn floor_version(t: &Tx<'_>, ns: Ns, store: i16, key: &[u8]) -> Result<Option<u64>> {
    let stmt =
        t.tx.prepare_cached(
            "SELECT version FROM version_floors WHERE ns = $1 AND store = $2 AND key = $3",
        )
        .await?;
    let row = t.tx.query_opt(&stmt, &[&ns, &store, &key]).await?;
    row.map(|r| queries::version(&r, 0)).transpose()
}

/// Remembers the last version of a key being deleted, when the clock alone might not keep its
/// next version above it (see `tx.rs`).
async fn remember_floor(t: &Tx<'_>, ns: Ns, store: i16, key: &[u8], version: u64) -> Result<()> {
    let version = as_i64(version)?;
    if !t.needs_floor(version) {
        return Ok(());
    }
    let stmt =
        t.tx.prepare_cached(
            "INSERT INTO version_floors (ns, store, key, version) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (ns, store, key) DO UPDATE \
             SET version = GREATEST(version_floors.version, excluded.version)",
        )
        .await?;
    t.tx.execute(&stmt, &[&ns, &store, &key, &version]).await?;
    Ok(())
}

/// Does `expect` hold of a key whose live version is `current` (None: missing or expired)?
fn check(expect: Precondition, current: Option<u64>) -> Result<()> {
    let holds = match expect {
        Precondition::Absent => current.is_none(),
        Precondition::Version(v) => current == Some(v),
        Precondition::Any => true,
    };
    if holds {
        Ok(())
    } else {
        Err(CoreError::WriteConflict.into())
    }
}

fn expiry_at(expiry: Expiry, kept: Option<Millis>, now: Millis) -> Option<Millis> {
    match expiry {
        Expiry::Keep => kept,
        Expiry::Clear => None,
        Expiry::In(secs) => Some(now.saturating_add(secs.saturating_mul(1000))),
    }
}

async fn apply_mutation(t: &mut Tx<'_>, mutation: &Mutation) -> Result<Applied> {
    let now = t.now;
    match mutation {
        Mutation::Put {
            ns,
            store,
            key,
            expect,
            value,
            description,
            expiry,
        } => {
            let row = current_record(t, *ns, *store, key).await?;
            let live = row.as_ref().filter(|c| c.live);
            check(*expect, live.map(|c| c.version))?;
            let previous = match &row {
                Some(c) => Some(c.version),
                None => floor_version(t, *ns, store_code(*store), key).await?,
            };
            let version = t.next_version(previous)?;
            let (created, created_at) = match live {
                Some(c) => (false, c.created_at),
                None => (true, now),
            };
            let expires_at = expiry_at(*expiry, live.and_then(|c| c.expires_at), now);
            let description = match description {
                DescriptionChange::Keep => live.and_then(|c| c.description.clone()),
                DescriptionChange::Set(d) => d.clone(),
            };
            let stmt =
                t.tx.prepare_cached(
                    "INSERT INTO records (ns, store, key, version, created_at, updated_at, \
                     expires_at, value, description) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
                     ON CONFLICT (ns, store, key) DO UPDATE SET version = excluded.version, \
                     created_at = excluded.created_at, updated_at = excluded.updated_at, \
                     expires_at = excluded.expires_at, value = excluded.value, \
                     description = excluded.description",
                )
                .await?;
            t.tx.execute(
                &stmt,
                &[
                    ns,
                    &store_code(*store),
                    key,
                    &as_i64(version)?,
                    &created_at,
                    &now,
                    &expires_at,
                    value,
                    &description,
                ],
            )
            .await?;
            Ok(Applied::Put {
                version,
                created,
                created_at,
                updated_at: now,
                expires_at,
            })
        }
        Mutation::Delete {
            ns,
            store,
            key,
            expect,
        } => {
            let row = current_record(t, *ns, *store, key).await?;
            check(*expect, row.as_ref().filter(|c| c.live).map(|c| c.version))?;
            if let Some(row) = row {
                // Removes an expired row too: it is absent already.
                let stmt = t
                    .tx
                    .prepare_cached("DELETE FROM records WHERE ns = $1 AND store = $2 AND key = $3")
                    .await?;
                t.tx.execute(&stmt, &[ns, &store_code(*store), key]).await?;
                remember_floor(t, *ns, store_code(*store), key, row.version).await?;
            }
            Ok(Applied::Deleted)
        }
        Mutation::Check {
            ns,
            store,
            key,
            expect,
        } => {
            // A plain read: SERIALIZABLE turns a concurrent change of what was checked into a
            // serialization failure of one of the two transactions.
            let live = queries::read_record(&t.tx, *ns, *store, key).await?;
            check(*expect, live.map(|r| r.version))?;
            Ok(Applied::Checked)
        }
        Mutation::PutCredential {
            ns,
            other_ns,
            expect,
            credential,
            expiry,
        } => {
            let row = current_credential(t, *ns, &credential.key).await?;
            let live = row.as_ref().filter(|c| c.live);
            check(*expect, live.map(|c| c.version))?;
            // The shared key space: a live credential under the same key in `other_ns` refuses
            // the write (a namespace never shares its key space with itself).
            if let Some(other) = other_ns.filter(|other| other != ns)
                && let Some(owner) = live_credential_owner(t, other, &credential.key).await?
            {
                let owner = decode_owner(&owner)?;
                return Err(CoreError::Conflict(format!(
                    "the key is held by the {}'s credentials",
                    owner.as_str()
                ))
                .into());
            }
            let previous = match &row {
                Some(c) => Some(c.version),
                None => floor_version(t, *ns, CREDENTIAL_FLOOR_STORE, &credential.key).await?,
            };
            let version = t.next_version(previous)?;
            let (created, created_at) = match live {
                Some(c) => (false, c.created_at),
                None => (true, now),
            };
            let expires_at = expiry_at(*expiry, live.and_then(|c| c.expires_at), now);
            let scopes = encode_list(&credential.scopes)?;
            let stmt =
                t.tx.prepare_cached(
                    "INSERT INTO credentials (ns, key, owner, app_id, provider, kind, version, \
                     created_at, updated_at, expires_at, token_expires_at, scopes, \
                     needs_reconsent, metadata, secret, lease_until, lease_id) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, \
                     NULL, NULL) \
                     ON CONFLICT (ns, key) DO UPDATE SET owner = excluded.owner, \
                     app_id = excluded.app_id, provider = excluded.provider, \
                     kind = excluded.kind, version = excluded.version, \
                     created_at = excluded.created_at, updated_at = excluded.updated_at, \
                     expires_at = excluded.expires_at, \
                     token_expires_at = excluded.token_expires_at, scopes = excluded.scopes, \
                     needs_reconsent = excluded.needs_reconsent, metadata = excluded.metadata, \
                     secret = excluded.secret, lease_until = NULL, lease_id = NULL",
                )
                .await?;
            t.tx.execute(
                &stmt,
                &[
                    ns,
                    &credential.key,
                    &credential.owner.as_str(),
                    &credential.app_id,
                    &credential.provider,
                    &credential.kind,
                    &as_i64(version)?,
                    &created_at,
                    &now,
                    &expires_at,
                    &credential.token_expires_at,
                    &scopes,
                    &credential.needs_reconsent,
                    &credential.metadata,
                    &credential.secret,
                ],
            )
            .await?;
            Ok(Applied::Put {
                version,
                created,
                created_at,
                updated_at: now,
                expires_at,
            })
        }
        Mutation::DeleteCredential { ns, key, expect } => {
            let row = current_credential(t, *ns, key).await?;
            check(*expect, row.as_ref().filter(|c| c.live).map(|c| c.version))?;
            if let Some(row) = row {
                t.tx.execute(
                    "DELETE FROM credentials WHERE ns = $1 AND key = $2",
                    &[ns, key],
                )
                .await?;
                remember_floor(t, *ns, CREDENTIAL_FLOOR_STORE, key, row.version).await?;
            }
            Ok(Applied::Deleted)
        }
        Mutation::AcquireCredentialLease {
            ns,
            key,
            expect_version,
            lease_id,
            lease_until,
        } => {
            // One compare-and-set: the live credential at this version with a free lease. Two
            // servers racing for it serialize on the row; the loser's retry finds it held.
            let stmt =
                t.tx.prepare_cached(
                    "UPDATE credentials SET lease_until = $1, lease_id = $2 \
                     WHERE ns = $3 AND key = $4 AND version = $5 \
                     AND (expires_at IS NULL OR expires_at > $6) \
                     AND (lease_until IS NULL OR lease_until <= $6)",
                )
                .await?;
            let taken =
                t.tx.execute(
                    &stmt,
                    &[
                        lease_until,
                        lease_id,
                        ns,
                        key,
                        &as_i64(*expect_version)?,
                        &now,
                    ],
                )
                .await?;
            if taken == 0 {
                return Err(CoreError::WriteConflict.into());
            }
            Ok(Applied::Checked)
        }
        Mutation::PutFlow { flow } => {
            put_flow(t, flow).await?;
            Ok(Applied::Checked)
        }
        Mutation::FinishFlow {
            flow_id,
            status,
            error,
            access_token,
        } => {
            if *status == FlowStatus::Pending {
                return Err(
                    CoreError::internal("a flow can only finish completed or failed").into(),
                );
            }
            let finished =
                t.tx.execute(
                    "UPDATE oauth_flows SET status = $1, error = $2, access_token = $3 \
                     WHERE flow_id = $4 AND status = 'pending' AND expires_at > $5",
                    &[&status.as_str(), error, access_token, flow_id, &now],
                )
                .await?;
            if finished == 0 {
                return Err(CoreError::WriteConflict.into());
            }
            Ok(Applied::Checked)
        }
        Mutation::TakeFlowToken { flow_id } => {
            let handed_out =
                t.tx.execute(
                    "UPDATE oauth_flows SET taken = TRUE, access_token = NULL \
                     WHERE flow_id = $1 AND status = 'completed' AND NOT taken \
                     AND expires_at > $2",
                    &[flow_id, &now],
                )
                .await?;
            if handed_out == 0 {
                return Err(CoreError::WriteConflict.into());
            }
            Ok(Applied::Checked)
        }
    }
}

/// Records a new flow; its id and its state MAC must both be new.
async fn put_flow(t: &Tx<'_>, flow: &FlowRow) -> Result<()> {
    let taken: bool =
        t.tx.query_one(
            "SELECT EXISTS (SELECT 1 FROM oauth_flows WHERE flow_id = $1 OR state_mac = $2)",
            &[&flow.flow_id, &flow.state_mac],
        )
        .await?
        .try_get(0)?;
    if taken {
        return Err(CoreError::Conflict("a flow with this id or state exists".into()).into());
    }
    let scopes = encode_list(&flow.scopes)?;
    t.tx.execute(
        "INSERT INTO oauth_flows (flow_id, ns, installation_id, provider, store_key, \
         store_owner, scopes, return_to, state_mac, verifier, status, error, access_token, \
         taken, expires_at, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)",
        &[
            &flow.flow_id,
            &flow.ns,
            &flow.installation_id,
            &flow.provider,
            &flow.store_key,
            &flow.store_owner.as_str(),
            &scopes,
            &flow.return_to,
            &flow.state_mac,
            &flow.verifier,
            &flow.status.as_str(),
            &flow.error,
            &flow.access_token,
            &flow.taken,
            &flow.expires_at,
            &flow.created_at,
        ],
    )
    .await?;
    Ok(())
}

/// A credential's row, locked for this transaction, whether live or expired.
struct CurrentCredential {
    version: u64,
    created_at: Millis,
    expires_at: Option<Millis>,
    live: bool,
}

async fn current_credential(t: &Tx<'_>, ns: Ns, key: &[u8]) -> Result<Option<CurrentCredential>> {
    let stmt =
        t.tx.prepare_cached(
            "SELECT version, created_at, expires_at FROM credentials \
             WHERE ns = $1 AND key = $2 FOR UPDATE",
        )
        .await?;
    let row = t.tx.query_opt(&stmt, &[&ns, &key]).await?;
    row.map(|r| {
        let expires_at: Option<Millis> = r.try_get(2)?;
        Ok(CurrentCredential {
            version: queries::version(&r, 0)?,
            created_at: r.try_get(1)?,
            expires_at,
            live: expires_at.is_none_or(|e| e > t.now),
        })
    })
    .transpose()
}

/// The owner of a live credential under `key` in `ns`, if any.
async fn live_credential_owner(t: &Tx<'_>, ns: Ns, key: &[u8]) -> Result<Option<String>> {
    let row =
        t.tx.query_opt(
            "SELECT owner FROM credentials WHERE ns = $1 AND key = $2 \
             AND (expires_at IS NULL OR expires_at > $3)",
            &[&ns, &key, &t.now],
        )
        .await?;
    Ok(row.map(|r| r.try_get(0)).transpose()?)
}

async fn insert_namespace(
    t: &Tx<'_>,
    namespace: &NamespaceRow,
    kind: &str,
    owner_id: &str,
) -> Result<()> {
    t.tx.execute(
        "INSERT INTO namespaces (ns, kind, owner_id, wrapped_key, created_at) \
         VALUES ($1, $2, $3, $4, $5)",
        &[
            &namespace.ns,
            &kind,
            &owner_id,
            &namespace.wrapped_key,
            &t.now,
        ],
    )
    .await?;
    Ok(())
}

/// Deletes every record, credential and OAuth flow of a namespace and then the namespace row
/// with its wrapped key (crypto-shredding). Namespace ids are never reused, so the deleted
/// keys need no version floors.
async fn destroy_namespace(t: &Tx<'_>, ns: Ns) -> Result<()> {
    for sql in [
        "DELETE FROM records WHERE ns = $1",
        "DELETE FROM credentials WHERE ns = $1",
        "DELETE FROM oauth_flows WHERE ns = $1",
        "DELETE FROM version_floors WHERE ns = $1",
        "DELETE FROM namespaces WHERE ns = $1",
    ] {
        t.tx.execute(sql, &[&ns]).await?;
    }
    Ok(())
}

async fn put_app(
    t: &Tx<'_>,
    app_id: &str,
    scopes: &[String],
    namespace: &NamespaceRow,
) -> Result<Outcome> {
    let encoded = encode_list(scopes)?;
    if let Some(mut row) = queries::get_app(&t.tx, app_id).await? {
        // An existing app keeps its shared namespace; the one passed in is not needed.
        t.tx.execute(
            "UPDATE apps SET scopes = $1, updated_at = $2 WHERE app_id = $3",
            &[&encoded, &t.now, &app_id],
        )
        .await?;
        row.scopes = scopes.to_vec();
        row.updated_at = t.now;
        return Ok(Outcome::App(row, false));
    }
    insert_namespace(t, namespace, "app", app_id).await?;
    t.tx.execute(
        "INSERT INTO apps (app_id, scopes, ns, created_at, updated_at) VALUES ($1, $2, $3, $4, $4)",
        &[&app_id, &encoded, &namespace.ns, &t.now],
    )
    .await?;
    Ok(Outcome::App(
        AppRow {
            app_id: app_id.to_owned(),
            scopes: scopes.to_vec(),
            ns: namespace.ns,
            created_at: t.now,
            updated_at: t.now,
        },
        true,
    ))
}

/// Deletes an app with its installations and shared store. Account credentials its
/// installations stored belong to the accounts and stay.
async fn delete_app(t: &Tx<'_>, app_id: &str) -> Result<bool> {
    let Some(app) = queries::get_app(&t.tx, app_id).await? else {
        return Ok(false);
    };
    for inst in queries::installations_where(&t.tx, "WHERE app_id = $1", Some(app_id)).await? {
        uninstall(t, &inst).await?;
    }
    destroy_namespace(t, app.ns).await?;
    t.tx.execute("DELETE FROM apps WHERE app_id = $1", &[&app_id])
        .await?;
    Ok(true)
}

async fn put_account(t: &Tx<'_>, account_id: &str, namespace: &NamespaceRow) -> Result<Outcome> {
    if let Some(mut row) = queries::get_account(&t.tx, account_id).await? {
        t.tx.execute(
            "UPDATE accounts SET updated_at = $1 WHERE account_id = $2",
            &[&t.now, &account_id],
        )
        .await?;
        row.updated_at = t.now;
        return Ok(Outcome::Account(row, false));
    }
    insert_namespace(t, namespace, "account", account_id).await?;
    t.tx.execute(
        "INSERT INTO accounts (account_id, ns, created_at, updated_at) VALUES ($1, $2, $3, $3)",
        &[&account_id, &namespace.ns, &t.now],
    )
    .await?;
    Ok(Outcome::Account(
        AccountRow {
            account_id: account_id.to_owned(),
            ns: namespace.ns,
            created_at: t.now,
            updated_at: t.now,
        },
        true,
    ))
}

async fn delete_account(t: &Tx<'_>, account_id: &str) -> Result<bool> {
    let Some(account) = queries::get_account(&t.tx, account_id).await? else {
        return Ok(false);
    };
    for inst in
        queries::installations_where(&t.tx, "WHERE account_id = $1", Some(account_id)).await?
    {
        uninstall(t, &inst).await?;
    }
    destroy_namespace(t, account.ns).await?;
    t.tx.execute("DELETE FROM accounts WHERE account_id = $1", &[&account_id])
        .await?;
    Ok(true)
}

/// Creates or updates a provider by name: an update keeps `created_at`, and with `keep_secret`
/// a missing client secret keeps the stored one.
async fn put_provider(t: &Tx<'_>, row: &ProviderRow, keep_secret: bool) -> Result<Outcome> {
    let existing = queries::get_provider(&t.tx, &row.name).await?;
    let created = existing.is_none();
    let (created_at, stored_secret) = match existing {
        Some(old) => (old.created_at, old.client_secret),
        None => (t.now, None),
    };
    let client_secret = match &row.client_secret {
        None if keep_secret => stored_secret,
        given => given.clone(),
    };
    t.tx.execute(
        "INSERT INTO providers (name, document, client_secret, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (name) DO UPDATE SET document = excluded.document, \
         client_secret = excluded.client_secret, updated_at = excluded.updated_at",
        &[
            &row.name,
            &row.document,
            &client_secret,
            &created_at,
            &t.now,
        ],
    )
    .await?;
    Ok(Outcome::Provider(
        ProviderRow {
            name: row.name.clone(),
            document: row.document.clone(),
            client_secret,
            created_at,
            updated_at: t.now,
        },
        created,
    ))
}

async fn install(t: &Tx<'_>, new: &NewInstallation) -> Result<InstallOutcome> {
    if let Some(existing) = queries::get_installation(&t.tx, &new.installation_id).await? {
        let same = existing.app_id == new.app_id && existing.account_id == new.account_id;
        return Ok(if same {
            InstallOutcome::Existing(existing)
        } else {
            InstallOutcome::Taken(existing)
        });
    }
    if queries::get_app(&t.tx, &new.app_id).await?.is_none() {
        return Ok(InstallOutcome::AppMissing);
    }
    if queries::get_account(&t.tx, &new.account_id)
        .await?
        .is_none()
    {
        return Ok(InstallOutcome::AccountMissing);
    }
    // At most one installation per (app, account), under whatever id.
    if let Some(other) = queries::installation_of_pair(&t.tx, &new.app_id, &new.account_id).await? {
        return Ok(InstallOutcome::Taken(other));
    }
    insert_namespace(t, &new.namespace, "installation", &new.installation_id).await?;
    t.tx.execute(
        "INSERT INTO installations (installation_id, app_id, account_id, ns, created_at) \
         VALUES ($1, $2, $3, $4, $5)",
        &[
            &new.installation_id,
            &new.app_id,
            &new.account_id,
            &new.namespace.ns,
            &t.now,
        ],
    )
    .await?;
    insert_token(t, &new.token).await?;
    Ok(InstallOutcome::Created(InstallationRow {
        installation_id: new.installation_id.clone(),
        app_id: new.app_id.clone(),
        account_id: new.account_id.clone(),
        ns: new.namespace.ns,
        created_at: t.now,
    }))
}

/// Removes an installation incarnation: its records, credentials, OAuth flows, tokens,
/// namespace key and row. Its account's credentials live in the account's namespace and stay.
async fn uninstall(t: &Tx<'_>, inst: &InstallationRow) -> Result<()> {
    t.tx.execute(
        "DELETE FROM tokens WHERE installation_id = $1 OR ns = $2",
        &[&inst.installation_id, &inst.ns],
    )
    .await?;
    destroy_namespace(t, inst.ns).await?;
    t.tx.execute(
        "DELETE FROM installations WHERE installation_id = $1",
        &[&inst.installation_id],
    )
    .await?;
    Ok(())
}

async fn create_token(t: &Tx<'_>, token: &TokenRow) -> Result<()> {
    if token.kind == TokenKind::Installation {
        let live = match (&token.installation_id, token.ns) {
            (Some(id), Some(ns)) => {
                t.tx.query_one(
                    "SELECT EXISTS (SELECT 1 FROM installations \
                     WHERE installation_id = $1 AND ns = $2)",
                    &[id, &ns],
                )
                .await?
                .try_get(0)?
            }
            _ => false,
        };
        if !live {
            return Err(CoreError::NotFound("no such installation".into()).into());
        }
    }
    let exists: bool =
        t.tx.query_one(
            "SELECT EXISTS (SELECT 1 FROM tokens WHERE token_id = $1)",
            &[&token.token_id],
        )
        .await?
        .try_get(0)?;
    if exists {
        return Err(CoreError::Conflict("a token with this id exists".into()).into());
    }
    insert_token(t, token).await
}

async fn insert_token(t: &Tx<'_>, token: &TokenRow) -> Result<()> {
    let scopes = token.scopes.as_deref().map(encode_list).transpose()?;
    t.tx.execute(
        "INSERT INTO tokens (token_id, mac, kind, installation_id, ns, scopes, expires_at, \
         created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        &[
            &token.token_id,
            &token.mac,
            &token.kind.as_str(),
            &token.installation_id,
            &token.ns,
            &scopes,
            &token.expires_at,
            &token.created_at,
        ],
    )
    .await?;
    Ok(())
}

/// Deletes expired records, then credentials, then flows a day past expiry, within one budget;
/// remembers the versions of deleted keys that the clock might not yet exceed, and forgets
/// floors the clock has safely passed.
async fn purge_expired(t: &mut Tx<'_>, limit: usize) -> Result<usize> {
    let records =
        t.tx.query(
            "DELETE FROM records WHERE (ns, store, key) IN \
             (SELECT ns, store, key FROM records WHERE expires_at <= $1 LIMIT $2) \
             RETURNING ns, store, key, version",
            &[&t.now, &sql_limit(limit)],
        )
        .await?;
    for r in &records {
        let ns: Ns = r.try_get(0)?;
        let store: i16 = r.try_get(1)?;
        let key: Vec<u8> = r.try_get(2)?;
        remember_floor(t, ns, store, &key, queries::version(r, 3)?).await?;
    }
    let mut rest = limit.saturating_sub(records.len());
    let mut purged = records.len();
    if rest > 0 {
        let credentials =
            t.tx.query(
                "DELETE FROM credentials WHERE (ns, key) IN \
                 (SELECT ns, key FROM credentials WHERE expires_at <= $1 LIMIT $2) \
                 RETURNING ns, key, version",
                &[&t.now, &sql_limit(rest)],
            )
            .await?;
        for r in &credentials {
            let ns: Ns = r.try_get(0)?;
            let key: Vec<u8> = r.try_get(1)?;
            remember_floor(t, ns, CREDENTIAL_FLOOR_STORE, &key, queries::version(r, 2)?).await?;
        }
        rest = rest.saturating_sub(credentials.len());
        purged += credentials.len();
    }
    if rest > 0 {
        let flows =
            t.tx.execute(
                "DELETE FROM oauth_flows WHERE flow_id IN \
                 (SELECT flow_id FROM oauth_flows WHERE expires_at < $1 LIMIT $2)",
                &[&t.now.saturating_sub(FLOW_RETENTION), &sql_limit(rest)],
            )
            .await?;
        purged += to_usize(flows);
    }
    // Floors below the clock by more than the margin are implied by the clock itself.
    t.tx.execute(
        "DELETE FROM version_floors WHERE (ns, store, key) IN \
         (SELECT ns, store, key FROM version_floors WHERE version < $1 LIMIT $2)",
        &[
            &t.micros.saturating_sub(FLOOR_MARGIN_MICROS),
            &sql_limit(limit),
        ],
    )
    .await?;
    Ok(purged)
}

fn sql_limit(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

fn to_usize(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

fn as_i64(v: u64) -> Result<i64> {
    i64::try_from(v).map_err(|_| CoreError::internal("a version does not fit in i64").into())
}
