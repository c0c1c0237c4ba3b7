//! The write operations the group-commit writer runs, one [`Op`] at a time, each inside its own
//! savepoint of the batch transaction. They are plain data (not closures) so the writer's code
//! and its tests read as a list of what can be written.

use rusqlite::{Connection, params};
use tresor_core::CoreError;
use tresor_core::audit::AuditEvent;
use tresor_core::backend::columns::{decode_owner, encode_list};
use tresor_core::backend::{
    AccountRow, AppRow, Applied, Commit, DescriptionChange, Expiry, FlowRow, FlowStatus,
    InstallOutcome, InstallationRow, Mutation, NamespaceRow, NewInstallation, Precondition,
    ProviderRow, Quota, TokenKind, TokenRow, Usage, grown_namespaces,
};
use tresor_core::dump::{DumpRow, DumpTable};
use tresor_core::model::{Millis, Ns, StoreKind};

use crate::error::SqlResultExt;

/// `Statement::execute` for statements that write: the one way this module writes, so that the
/// fail point `sqlite::write` sits in front of every write step of every operation.
pub(crate) trait WriteStatement {
    fn write<P: rusqlite::Params>(&mut self, params: P) -> rusqlite::Result<usize>;
}

impl WriteStatement for rusqlite::Statement<'_> {
    fn write<P: rusqlite::Params>(&mut self, params: P) -> rusqlite::Result<usize> {
        tresor_core::fault_point!(
            "sqlite::write",
            Err(crate::error::injected(rusqlite::ffi::SQLITE_IOERR_WRITE))
        );
        self.execute(params)
    }
}
use crate::queries;
use crate::schema::VERSION_COUNTER;

type Result<T> = std::result::Result<T, CoreError>;

/// One request to the writer.
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
        node_id: String,
        key_versions: Vec<String>,
    },
    UnregisterNode {
        node_id: String,
    },
    ImportRows {
        table: DumpTable,
        rows: Vec<DumpRow>,
    },
    /// Writes nothing itself: its batch commits the queued audit events, so they are visible
    /// once it is answered.
    FlushAudit,
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

impl Op {
    /// Audit events this op writes, for the writer's counters.
    pub(crate) fn audit_count(&self) -> usize {
        match self {
            Op::Commit(c) => c.audit.len(),
            Op::Rekey(op) => op.audit_count(),
            Op::MetaGetOrInsert { .. }
            | Op::MetaReplace { .. }
            | Op::NamespaceKeyReplace { .. }
            | Op::PurgeExpired { .. }
            | Op::PurgeAudit { .. }
            | Op::RegisterNode { .. }
            | Op::UnregisterNode { .. }
            | Op::ImportRows { .. }
            | Op::FlushAudit => 0,
            _ => 1,
        }
    }

    /// May this op change what authentication reads (tokens, installations, apps, accounts)?
    /// Listed by what it cannot change, so a new op is counted as changing it until someone
    /// decides otherwise.
    pub(crate) fn changes_auth(&self) -> bool {
        !matches!(
            self,
            Op::Commit(_)
                | Op::MetaGetOrInsert { .. }
                | Op::MetaReplace { .. }
                | Op::NamespaceKeyReplace { .. }
                | Op::PutProvider { .. }
                | Op::DeleteProvider { .. }
                | Op::PurgeExpired { .. }
                | Op::PurgeAudit { .. }
                | Op::RegisterNode { .. }
                | Op::UnregisterNode { .. }
                | Op::FlushAudit
                | Op::Rekey(_)
        )
    }
}

/// How long a flow is kept after it expired before the purge deletes it (a day).
pub(crate) const FLOW_RETENTION: Millis = 24 * 60 * 60 * 1000;

/// The largest version the contract allows (JavaScript's safe integers).
pub(crate) const MAX_VERSION: u64 = (1 << 53) - 1;

/// The global record-version counter. The writer owns the only copy; every version it hands out
/// is greater than every version ever issued, so no key ever sees a version twice, across
/// deletes, reinstalls and restarts. Versions burnt by a rolled-back request are simply skipped.
#[derive(Debug)]
pub(crate) struct VersionCounter {
    last_issued: u64,
    persisted: u64,
}

impl VersionCounter {
    pub(crate) fn load(conn: &Connection) -> Result<VersionCounter> {
        let last = stored_counter(conn)?;
        Ok(VersionCounter {
            last_issued: last,
            persisted: last,
        })
    }

    /// Catches up with the stored counter at the start of a batch, under the write lock. Only
    /// another process writing the same file (which should not happen) could have moved it,
    /// but then this still keeps every version unique, for one indexed read per batch.
    pub(crate) fn sync(&mut self, conn: &Connection) -> Result<()> {
        let stored = stored_counter(conn)?;
        if stored > self.last_issued {
            tracing::warn!("the record version counter was advanced by another writer");
            self.last_issued = stored;
        }
        self.persisted = stored;
        Ok(())
    }

    fn next(&mut self) -> Result<u64> {
        if self.last_issued >= MAX_VERSION {
            return Err(CoreError::internal(
                "the record version counter is exhausted",
            ));
        }
        self.last_issued += 1;
        Ok(self.last_issued)
    }

    /// Makes sure no version at or below `version` is handed out any more (after an import of
    /// rows that carry their versions).
    pub(crate) fn raise_to(&mut self, version: u64) {
        self.last_issued = self.last_issued.max(version);
    }

    /// Writes the counter into the current transaction when it moved.
    pub(crate) fn save(&self, conn: &Connection) -> Result<()> {
        if self.last_issued == self.persisted {
            return Ok(());
        }
        conn.prepare_cached("UPDATE counters SET value = ?1 WHERE name = ?2")
            .db()?
            .write(params![as_i64(self.last_issued)?, VERSION_COUNTER])
            .db()?;
        Ok(())
    }

    /// Called once the transaction that saved the counter has committed.
    pub(crate) fn mark_persisted(&mut self) {
        self.persisted = self.last_issued;
    }
}

fn stored_counter(conn: &Connection) -> Result<u64> {
    let value: i64 = conn
        .prepare_cached("SELECT value FROM counters WHERE name = ?1")
        .db()?
        .query_row([VERSION_COUNTER], |r| r.get(0))
        .db()?;
    u64::try_from(value).map_err(|_| CoreError::internal("the stored version counter is negative"))
}

/// Runs one op inside its own savepoint: on error, everything it wrote is undone and the rest
/// of the batch goes on. When the savepoint itself cannot be undone, the whole transaction is
/// rolled back, and the writer, seeing no open transaction, fails the batch.
pub(crate) fn apply_in_savepoint(
    conn: &Connection,
    versions: &mut VersionCounter,
    quota: &Quota,
    op: Op,
) -> Result<Outcome> {
    conn.execute_batch("SAVEPOINT request").db()?;
    let result = apply(conn, versions, quota, op);
    // SQLite may already have rolled back the whole transaction (full disk, I/O error).
    if conn.is_autocommit() {
        return result;
    }
    let undone = match &result {
        Ok(_) => conn.execute_batch("RELEASE request"),
        Err(_) => conn.execute_batch("ROLLBACK TO request; RELEASE request"),
    };
    if let Err(e) = undone {
        // Leave no half-applied request behind: drop the whole transaction.
        let _ = conn.execute_batch("ROLLBACK");
        return Err(crate::error::from_sqlite(&e));
    }
    result
}

/// Runs one op; see [`apply_in_savepoint`].
fn apply(
    conn: &Connection,
    versions: &mut VersionCounter,
    quota: &Quota,
    op: Op,
) -> Result<Outcome> {
    let now = tresor_core::model::now_millis();
    match op {
        Op::Commit(commit) => {
            apply_commit(conn, versions, quota, commit, now).map(Outcome::Applied)
        }
        Op::Rekey(op) => crate::rekey::apply(conn, op, now).map(Outcome::Rekey),
        Op::MetaGetOrInsert { name, value } => meta_get_or_insert(conn, &name, &value),
        Op::MetaReplace { name, old, new } => conn
            .prepare_cached("UPDATE meta SET value = ?1 WHERE name = ?2 AND value = ?3")
            .db()?
            .write(params![new, name, old])
            .db()
            .map(|n| Outcome::Replaced(n == 1)),
        Op::NamespaceKeyReplace { ns, old, new } => conn
            .prepare_cached(
                "UPDATE namespaces SET wrapped_key = ?1 WHERE ns = ?2 AND wrapped_key = ?3",
            )
            .db()?
            .write(params![new, ns, old])
            .db()
            .map(|n| Outcome::Replaced(n == 1)),
        Op::PutApp {
            app_id,
            scopes,
            namespace,
            audit,
        } => {
            let out = put_app(conn, &app_id, &scopes, &namespace, now)?;
            insert_audit(conn, &audit)?;
            Ok(out)
        }
        Op::DeleteApp { app_id, audit } => {
            let out = delete_app(conn, &app_id)?;
            insert_audit(conn, &audit)?;
            Ok(Outcome::Deleted(out))
        }
        Op::PutAccount {
            account_id,
            namespace,
            audit,
        } => {
            let out = put_account(conn, &account_id, &namespace, now)?;
            insert_audit(conn, &audit)?;
            Ok(out)
        }
        Op::DeleteAccount { account_id, audit } => {
            let out = delete_account(conn, &account_id)?;
            insert_audit(conn, &audit)?;
            Ok(Outcome::Deleted(out))
        }
        Op::Install { new, audit } => {
            let out = install(conn, new, now)?;
            insert_audit(conn, &audit)?;
            Ok(Outcome::Install(out))
        }
        Op::Uninstall {
            installation_id,
            audit,
        } => {
            let existed = match queries::get_installation(conn, &installation_id)? {
                Some(inst) => {
                    uninstall(conn, &inst)?;
                    true
                }
                None => false,
            };
            insert_audit(conn, &audit)?;
            Ok(Outcome::Deleted(existed))
        }
        Op::CreateToken { token, audit } => {
            create_token(conn, &token)?;
            insert_audit(conn, &audit)?;
            Ok(Outcome::Unit)
        }
        Op::RevokeToken { token_id, audit } => {
            let n = conn
                .prepare_cached("DELETE FROM tokens WHERE token_id = ?1")
                .db()?
                .write([&token_id])
                .db()?;
            insert_audit(conn, &audit)?;
            Ok(Outcome::Deleted(n > 0))
        }
        Op::PutProvider {
            row,
            keep_secret,
            audit,
        } => {
            let out = put_provider(conn, row, keep_secret, now)?;
            insert_audit(conn, &audit)?;
            Ok(out)
        }
        Op::DeleteProvider { name, audit } => {
            let n = conn
                .prepare_cached("DELETE FROM providers WHERE name = ?1")
                .db()?
                .write([&name])
                .db()?;
            insert_audit(conn, &audit)?;
            Ok(Outcome::Deleted(n > 0))
        }
        Op::PurgeExpired { limit } => {
            // Records first, then credentials, then flows, with what is left of the one budget.
            let records = conn
                .prepare_cached(
                    "DELETE FROM records WHERE (ns, store, key) IN \
                     (SELECT ns, store, key FROM records WHERE expires_at <= ?1 LIMIT ?2)",
                )
                .db()?
                .write(params![now, i64::try_from(limit).unwrap_or(i64::MAX)])
                .db()?;
            let rest = limit.saturating_sub(records);
            let credentials = if rest == 0 {
                0
            } else {
                conn.prepare_cached(
                    "DELETE FROM credentials WHERE (ns, key) IN \
                     (SELECT ns, key FROM credentials WHERE expires_at <= ?1 LIMIT ?2)",
                )
                .db()?
                .write(params![now, i64::try_from(rest).unwrap_or(i64::MAX)])
                .db()?
            };
            // Flows last, a day after their expiry: until then a late `complete` still finds
            // its flow and answers that it expired rather than that it never existed.
            let rest = rest.saturating_sub(credentials);
            let flows = if rest == 0 {
                0
            } else {
                conn.prepare_cached(
                    "DELETE FROM oauth_flows WHERE flow_id IN \
                     (SELECT flow_id FROM oauth_flows WHERE expires_at < ?1 LIMIT ?2)",
                )
                .db()?
                .write(params![
                    now.saturating_sub(FLOW_RETENTION),
                    i64::try_from(rest).unwrap_or(i64::MAX)
                ])
                .db()?
            };
            Ok(Outcome::Purged(records + credentials + flows))
        }
        Op::PurgeAudit { before, limit } => {
            let n = conn
                .prepare_cached(
                    "DELETE FROM audit WHERE id IN \
                     (SELECT id FROM audit WHERE time < ?1 ORDER BY id LIMIT ?2)",
                )
                .db()?
                .write(params![before, i64::try_from(limit).unwrap_or(i64::MAX)])
                .db()?;
            Ok(Outcome::Purged(n))
        }
        Op::RegisterNode {
            node_id,
            key_versions,
        } => {
            register_node(conn, &node_id, &key_versions, now)?;
            Ok(Outcome::Unit)
        }
        Op::FlushAudit => Ok(Outcome::Unit),
        Op::UnregisterNode { node_id } => {
            let n = conn
                .prepare_cached("DELETE FROM nodes WHERE node_id = ?1")
                .db()?
                .write([&node_id])
                .db()?;
            Ok(Outcome::Deleted(n > 0))
        }
        Op::ImportRows { table, rows } => {
            crate::dump::import_rows(conn, versions, table, &rows)?;
            Ok(Outcome::Unit)
        }
    }
}

/// Records a server process, or refreshes its key versions and heartbeat; `started_at` is
/// stamped on the first registration only, and `last_seen` never moves back.
fn register_node(
    conn: &Connection,
    node_id: &str,
    key_versions: &[String],
    now: Millis,
) -> Result<()> {
    let versions = encode_list(key_versions)?;
    conn.prepare_cached(
        "INSERT INTO nodes (node_id, key_versions, started_at, last_seen) VALUES (?1, ?2, ?3, ?3) \
         ON CONFLICT (node_id) DO UPDATE SET key_versions = excluded.key_versions, \
         last_seen = MAX(nodes.last_seen, excluded.last_seen)",
    )
    .db()?
    .write(params![node_id, versions, now])
    .db()?;
    Ok(())
}

/// Writes one audit event. Also used by the writer for events from the audit queue.
pub(crate) fn insert_audit(conn: &Connection, ev: &AuditEvent) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO audit (time, request_id, token_id, app_id, account_id, installation_id, \
         operation, store, key, status, remote_addr) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
    )
    .db()?
    .write(params![
        ev.time,
        ev.request_id,
        ev.token_id,
        ev.app_id,
        ev.account_id,
        ev.installation_id,
        ev.operation,
        ev.store,
        ev.key,
        ev.status,
        ev.remote_addr,
    ])
    .db()?;
    Ok(())
}

fn apply_commit(
    conn: &Connection,
    versions: &mut VersionCounter,
    quota: &Quota,
    commit: Commit,
    now: Millis,
) -> Result<Vec<Applied>> {
    // The incarnation check of invariant 7: inside the transaction, so a racing uninstall either
    // committed before (and this fails) or commits after (and deletes what this wrote). It also
    // holds the commit off a namespace whose key is being rotated, or was since it sealed.
    crate::rekey::check_guards(conn, &commit, now)?;
    // Storage quotas: each namespace the commit puts into, before and after, inside the
    // transaction (the savepoint undoes a refused commit).
    let grown = if quota.is_off() {
        Vec::new()
    } else {
        grown_namespaces(&commit)
    };
    let before = grown
        .iter()
        .map(|ns| usage(conn, *ns, now))
        .collect::<Result<Vec<Usage>>>()?;
    let mut applied = Vec::with_capacity(commit.mutations.len());
    for mutation in commit.mutations {
        applied.push(apply_mutation(conn, versions, mutation, now)?);
    }
    for (ns, before) in grown.iter().zip(before) {
        if quota.refuses(before, usage(conn, *ns, now)?) {
            return Err(CoreError::QuotaExceeded);
        }
    }
    for ev in &commit.audit {
        insert_audit(conn, ev)?;
    }
    Ok(applied)
}

/// A namespace's live records and their stored bytes, for the quotas.
fn usage(conn: &Connection, ns: Ns, now: Millis) -> Result<Usage> {
    let (records, bytes): (i64, i64) = conn
        .prepare_cached(
            "SELECT count(*), coalesce(sum(length(key) + length(value) \
             + coalesce(length(description), 0)), 0) FROM records \
             WHERE ns = ?1 AND (expires_at IS NULL OR expires_at > ?2)",
        )
        .db()?
        .query_row(params![ns, now], |r| Ok((r.get(0)?, r.get(1)?)))
        .db()?;
    Ok(Usage {
        records: u64::try_from(records).unwrap_or(0),
        bytes: u64::try_from(bytes).unwrap_or(0),
    })
}

/// The parts of a live record that a write may keep.
struct Current {
    version: u64,
    created_at: Millis,
    expires_at: Option<Millis>,
    description: Option<Vec<u8>>,
}

fn current(
    conn: &Connection,
    ns: Ns,
    store: StoreKind,
    key: &[u8],
    now: Millis,
) -> Result<Option<Current>> {
    // The value is not needed to decide a write, so it is not read.
    let row = conn
        .prepare_cached(
            "SELECT version, created_at, expires_at, description FROM records \
             WHERE ns = ?1 AND store = ?2 AND key = ?3 AND (expires_at IS NULL OR expires_at > ?4)",
        )
        .db()?
        .query_row(params![ns, store.code(), key, now], |r| {
            Ok((r.get::<_, i64>(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        });
    match row {
        Ok((version, created_at, expires_at, description)) => Ok(Some(Current {
            version: u64::try_from(version)
                .map_err(|_| CoreError::internal("a stored version is negative"))?,
            created_at,
            expires_at,
            description,
        })),
        Err(rusqlite::Error::QueryReturnedNoRows) => Ok(None),
        Err(e) => Err(crate::error::from_sqlite(&e)),
    }
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
        Err(CoreError::WriteConflict)
    }
}

fn apply_mutation(
    conn: &Connection,
    versions: &mut VersionCounter,
    mutation: Mutation,
    now: Millis,
) -> Result<Applied> {
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
            let current = current(conn, ns, store, &key, now)?;
            check(expect, current.as_ref().map(|c| c.version))?;
            let version = versions.next()?;
            let (created, created_at) = match &current {
                Some(c) => (false, c.created_at),
                None => (true, now),
            };
            let expires_at = match expiry {
                Expiry::Keep => current.as_ref().and_then(|c| c.expires_at),
                Expiry::Clear => None,
                Expiry::In(secs) => Some(now.saturating_add(secs.saturating_mul(1000))),
            };
            let description = match description {
                DescriptionChange::Keep => current.and_then(|c| c.description),
                DescriptionChange::Set(d) => d,
            };
            conn.prepare_cached(
                "INSERT INTO records (ns, store, key, version, created_at, updated_at, expires_at, \
                 value, description) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) \
                 ON CONFLICT (ns, store, key) DO UPDATE SET version = excluded.version, \
                 created_at = excluded.created_at, updated_at = excluded.updated_at, \
                 expires_at = excluded.expires_at, value = excluded.value, \
                 description = excluded.description",
            )
            .db()?
            .write(params![
                ns,
                store.code(),
                key,
                as_i64(version)?,
                created_at,
                now,
                expires_at,
                value,
                description,
            ])
            .db()?;
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
            let current = current(conn, ns, store, &key, now)?;
            check(expect, current.as_ref().map(|c| c.version))?;
            // Removes an expired row too: it is absent already, and this saves the purge a visit.
            conn.prepare_cached("DELETE FROM records WHERE ns = ?1 AND store = ?2 AND key = ?3")
                .db()?
                .write(params![ns, store.code(), key])
                .db()?;
            Ok(Applied::Deleted)
        }
        Mutation::Check {
            ns,
            store,
            key,
            expect,
        } => {
            check(
                expect,
                current(conn, ns, store, &key, now)?.map(|c| c.version),
            )?;
            Ok(Applied::Checked)
        }
        Mutation::PutCredential {
            ns,
            other_ns,
            expect,
            credential,
            expiry,
        } => {
            // The precondition in `ns` first, then the shared key space: a live credential
            // under the same key in `other_ns` refuses the write.
            let current = current_credential(conn, ns, &credential.key, now)?;
            check(expect, current.as_ref().map(|c| c.version))?;
            // A namespace never shares its key space with itself.
            if let Some(other) = other_ns.filter(|other| *other != ns)
                && let Some(owner) = live_credential_owner(conn, other, &credential.key, now)?
            {
                let owner = decode_owner(&owner)?;
                return Err(CoreError::Conflict(format!(
                    "the key is held by the {}'s credentials",
                    owner.as_str()
                )));
            }
            let version = versions.next()?;
            let (created, created_at) = match &current {
                Some(c) => (false, c.created_at),
                None => (true, now),
            };
            let expires_at = match expiry {
                Expiry::Keep => current.as_ref().and_then(|c| c.expires_at),
                Expiry::Clear => None,
                Expiry::In(secs) => Some(now.saturating_add(secs.saturating_mul(1000))),
            };
            let scopes = encode_list(&credential.scopes)?;
            conn.prepare_cached(
                "INSERT INTO credentials (ns, key, owner, app_id, provider, kind, version, \
                 created_at, updated_at, expires_at, token_expires_at, scopes, needs_reconsent, \
                 metadata, secret, lease_until, lease_id) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, \
                 NULL, NULL) \
                 ON CONFLICT (ns, key) DO UPDATE SET owner = excluded.owner, \
                 app_id = excluded.app_id, provider = excluded.provider, kind = excluded.kind, \
                 version = excluded.version, \
                 created_at = excluded.created_at, updated_at = excluded.updated_at, \
                 expires_at = excluded.expires_at, token_expires_at = excluded.token_expires_at, \
                 scopes = excluded.scopes, needs_reconsent = excluded.needs_reconsent, \
                 metadata = excluded.metadata, secret = excluded.secret, lease_until = NULL, \
                 lease_id = NULL",
            )
            .db()?
            .write(params![
                ns,
                credential.key,
                credential.owner.as_str(),
                credential.app_id,
                credential.provider,
                credential.kind,
                as_i64(version)?,
                created_at,
                now,
                expires_at,
                credential.token_expires_at,
                scopes,
                credential.needs_reconsent,
                credential.metadata,
                credential.secret,
            ])
            .db()?;
            Ok(Applied::Put {
                version,
                created,
                created_at,
                updated_at: now,
                expires_at,
            })
        }
        Mutation::DeleteCredential { ns, key, expect } => {
            let current = current_credential(conn, ns, &key, now)?;
            check(expect, current.as_ref().map(|c| c.version))?;
            // Removes an expired row too, as a record delete does.
            conn.prepare_cached("DELETE FROM credentials WHERE ns = ?1 AND key = ?2")
                .db()?
                .write(params![ns, key])
                .db()?;
            Ok(Applied::Deleted)
        }
        Mutation::AcquireCredentialLease {
            ns,
            key,
            expect_version,
            lease_id,
            lease_until,
        } => {
            // One compare-and-set: the live credential at this version with a free lease. The
            // version and `updated_at` stay, so readers waiting for the refresh see no change
            // until the refreshed token set is put.
            let taken = conn
                .prepare_cached(
                    "UPDATE credentials SET lease_until = ?1, lease_id = ?2 \
                     WHERE ns = ?3 AND key = ?4 AND version = ?5 \
                     AND (expires_at IS NULL OR expires_at > ?6) \
                     AND (lease_until IS NULL OR lease_until <= ?6)",
                )
                .db()?
                .write(params![
                    lease_until,
                    lease_id,
                    ns,
                    key,
                    as_i64(expect_version)?,
                    now
                ])
                .db()?;
            if taken == 0 {
                return Err(CoreError::WriteConflict);
            }
            Ok(Applied::Checked)
        }
        Mutation::PutFlow { flow } => {
            put_flow(conn, &flow)?;
            Ok(Applied::Checked)
        }
        Mutation::FinishFlow {
            flow_id,
            status,
            error,
            access_token,
        } => {
            if status == FlowStatus::Pending {
                return Err(CoreError::internal(
                    "a flow can only finish completed or failed",
                ));
            }
            let finished = conn
                .prepare_cached(
                    "UPDATE oauth_flows SET status = ?1, error = ?2, access_token = ?3 \
                     WHERE flow_id = ?4 AND status = 'pending' AND expires_at > ?5",
                )
                .db()?
                .write(params![status.as_str(), error, access_token, flow_id, now])
                .db()?;
            if finished == 0 {
                return Err(CoreError::WriteConflict);
            }
            Ok(Applied::Checked)
        }
        Mutation::TakeFlowToken { flow_id } => {
            // With `secure_delete`, the token's bytes are overwritten, not left in a free page.
            let handed_out = conn
                .prepare_cached(
                    "UPDATE oauth_flows SET taken = 1, access_token = NULL \
                     WHERE flow_id = ?1 AND status = 'completed' AND taken = 0 \
                     AND expires_at > ?2",
                )
                .db()?
                .write(params![flow_id, now])
                .db()?;
            if handed_out == 0 {
                return Err(CoreError::WriteConflict);
            }
            Ok(Applied::Checked)
        }
    }
}

/// Records a new flow; its id and its state MAC must both be new.
fn put_flow(conn: &Connection, flow: &FlowRow) -> Result<()> {
    if queries::flow_exists(conn, &flow.flow_id)? {
        return Err(CoreError::Conflict("a flow with this id exists".into()));
    }
    if queries::flow_state_exists(conn, &flow.state_mac)? {
        return Err(CoreError::Conflict("a flow with this state exists".into()));
    }
    let scopes = encode_list(&flow.scopes)?;
    conn.prepare_cached(
        "INSERT INTO oauth_flows (flow_id, ns, installation_id, provider, store_key, \
         store_owner, scopes, return_to, state_mac, verifier, status, error, access_token, \
         taken, expires_at, created_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
    )
    .db()?
    .write(params![
        flow.flow_id,
        flow.ns,
        flow.installation_id,
        flow.provider,
        flow.store_key,
        flow.store_owner.as_str(),
        scopes,
        flow.return_to,
        flow.state_mac,
        flow.verifier,
        flow.status.as_str(),
        flow.error,
        flow.access_token,
        flow.taken,
        flow.expires_at,
        flow.created_at,
    ])
    .db()?;
    Ok(())
}

/// The parts of a live credential that a write checks or keeps.
struct CurrentCredential {
    version: u64,
    created_at: Millis,
    expires_at: Option<Millis>,
}

fn current_credential(
    conn: &Connection,
    ns: Ns,
    key: &[u8],
    now: Millis,
) -> Result<Option<CurrentCredential>> {
    let row = conn
        .prepare_cached(
            "SELECT version, created_at, expires_at FROM credentials \
             WHERE ns = ?1 AND key = ?2 AND (expires_at IS NULL OR expires_at > ?3)",
        )
        .db()?
        .query_row(params![ns, key, now], |r| {
            Ok((r.get::<_, i64>(0)?, r.get(1)?, r.get(2)?))
        });
    match row {
        Ok((version, created_at, expires_at)) => Ok(Some(CurrentCredential {
            version: u64::try_from(version)
                .map_err(|_| CoreError::internal("a stored version is negative"))?,
            created_at,
            expires_at,
        })),
        Err(rusqlite::Error::QueryReturnedNoRows) => Ok(None),
        Err(e) => Err(crate::error::from_sqlite(&e)),
    }
}

/// The owner of a live credential under `key` in `ns`, if any.
fn live_credential_owner(
    conn: &Connection,
    ns: Ns,
    key: &[u8],
    now: Millis,
) -> Result<Option<String>> {
    let row = conn
        .prepare_cached(
            "SELECT owner FROM credentials \
             WHERE ns = ?1 AND key = ?2 AND (expires_at IS NULL OR expires_at > ?3)",
        )
        .db()?
        .query_row(params![ns, key, now], |r| r.get(0));
    match row {
        Ok(owner) => Ok(Some(owner)),
        Err(rusqlite::Error::QueryReturnedNoRows) => Ok(None),
        Err(e) => Err(crate::error::from_sqlite(&e)),
    }
}

fn meta_get_or_insert(conn: &Connection, name: &str, value: &[u8]) -> Result<Outcome> {
    conn.prepare_cached(
        "INSERT INTO meta (name, value) VALUES (?1, ?2) ON CONFLICT (name) DO NOTHING",
    )
    .db()?
    .write(params![name, value])
    .db()?;
    let stored = queries::meta_get(conn, name)?
        .ok_or_else(|| CoreError::internal("a meta value vanished inside its transaction"))?;
    Ok(Outcome::Meta(stored))
}

fn insert_namespace(
    conn: &Connection,
    namespace: &NamespaceRow,
    kind: &str,
    owner_id: &str,
    now: Millis,
) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO namespaces (ns, kind, owner_id, wrapped_key, created_at) \
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )
    .db()?
    .write(params![
        namespace.ns,
        kind,
        owner_id,
        namespace.wrapped_key,
        now
    ])
    .db()?;
    Ok(())
}

/// Deletes every record, credential and OAuth flow of a namespace and then the namespace row
/// itself: its wrapped key is destroyed, so stray copies of its ciphertexts can no longer be
/// opened (crypto-shredding).
fn destroy_namespace(conn: &Connection, ns: Ns) -> Result<()> {
    conn.prepare_cached("DELETE FROM records WHERE ns = ?1")
        .db()?
        .write([ns])
        .db()?;
    conn.prepare_cached("DELETE FROM credentials WHERE ns = ?1")
        .db()?
        .write([ns])
        .db()?;
    conn.prepare_cached("DELETE FROM oauth_flows WHERE ns = ?1")
        .db()?
        .write([ns])
        .db()?;
    conn.prepare_cached("DELETE FROM namespaces WHERE ns = ?1")
        .db()?
        .write([ns])
        .db()?;
    Ok(())
}

fn put_app(
    conn: &Connection,
    app_id: &str,
    scopes: &[String],
    namespace: &NamespaceRow,
    now: Millis,
) -> Result<Outcome> {
    let encoded = encode_list(scopes)?;
    if let Some(mut row) = queries::get_app(conn, app_id)? {
        // An existing app keeps its shared namespace; the one passed in is not needed.
        conn.prepare_cached("UPDATE apps SET scopes = ?1, updated_at = ?2 WHERE app_id = ?3")
            .db()?
            .write(params![encoded, now, app_id])
            .db()?;
        row.scopes = scopes.to_vec();
        row.updated_at = now;
        return Ok(Outcome::App(row, false));
    }
    insert_namespace(conn, namespace, "app", app_id, now)?;
    conn.prepare_cached(
        "INSERT INTO apps (app_id, scopes, ns, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?4)",
    )
    .db()?
    .write(params![app_id, encoded, namespace.ns, now])
    .db()?;
    let row = AppRow {
        app_id: app_id.to_owned(),
        scopes: scopes.to_vec(),
        ns: namespace.ns,
        created_at: now,
        updated_at: now,
    };
    Ok(Outcome::App(row, true))
}

/// Deletes an app with its installations and shared store. Account credentials its
/// installations stored belong to the accounts and stay.
fn delete_app(conn: &Connection, app_id: &str) -> Result<bool> {
    let Some(app) = queries::get_app(conn, app_id)? else {
        return Ok(false);
    };
    for inst in queries::installations_of_app(conn, app_id)? {
        uninstall(conn, &inst)?;
    }
    destroy_namespace(conn, app.ns)?;
    conn.prepare_cached("DELETE FROM apps WHERE app_id = ?1")
        .db()?
        .write([app_id])
        .db()?;
    Ok(true)
}

fn put_account(
    conn: &Connection,
    account_id: &str,
    namespace: &NamespaceRow,
    now: Millis,
) -> Result<Outcome> {
    if let Some(mut row) = queries::get_account(conn, account_id)? {
        conn.prepare_cached("UPDATE accounts SET updated_at = ?1 WHERE account_id = ?2")
            .db()?
            .write(params![now, account_id])
            .db()?;
        row.updated_at = now;
        return Ok(Outcome::Account(row, false));
    }
    insert_namespace(conn, namespace, "account", account_id, now)?;
    conn.prepare_cached(
        "INSERT INTO accounts (account_id, ns, created_at, updated_at) VALUES (?1, ?2, ?3, ?3)",
    )
    .db()?
    .write(params![account_id, namespace.ns, now])
    .db()?;
    let row = AccountRow {
        account_id: account_id.to_owned(),
        ns: namespace.ns,
        created_at: now,
        updated_at: now,
    };
    Ok(Outcome::Account(row, true))
}

fn delete_account(conn: &Connection, account_id: &str) -> Result<bool> {
    let Some(account) = queries::get_account(conn, account_id)? else {
        return Ok(false);
    };
    for inst in queries::installations_of_account(conn, account_id)? {
        uninstall(conn, &inst)?;
    }
    destroy_namespace(conn, account.ns)?;
    conn.prepare_cached("DELETE FROM accounts WHERE account_id = ?1")
        .db()?
        .write([account_id])
        .db()?;
    Ok(true)
}

/// Creates or updates a provider by name: an update keeps `created_at`, and with `keep_secret`
/// a missing client secret keeps the stored one.
fn put_provider(
    conn: &Connection,
    row: ProviderRow,
    keep_secret: bool,
    now: Millis,
) -> Result<Outcome> {
    let existing = queries::get_provider(conn, &row.name)?;
    let created = existing.is_none();
    let (created_at, stored_secret) = match existing {
        Some(old) => (old.created_at, old.client_secret),
        None => (now, None),
    };
    let client_secret = match row.client_secret {
        None if keep_secret => stored_secret,
        given => given,
    };
    conn.prepare_cached(
        "INSERT INTO providers (name, document, client_secret, created_at, updated_at) \
         VALUES (?1, ?2, ?3, ?4, ?5) \
         ON CONFLICT (name) DO UPDATE SET document = excluded.document, \
         client_secret = excluded.client_secret, updated_at = excluded.updated_at",
    )
    .db()?
    .write(params![
        row.name,
        row.document,
        client_secret,
        created_at,
        now
    ])
    .db()?;
    let stored = ProviderRow {
        name: row.name,
        document: row.document,
        client_secret,
        created_at,
        updated_at: now,
    };
    Ok(Outcome::Provider(stored, created))
}

fn install(conn: &Connection, new: NewInstallation, now: Millis) -> Result<InstallOutcome> {
    if let Some(existing) = queries::get_installation(conn, &new.installation_id)? {
        let same = existing.app_id == new.app_id && existing.account_id == new.account_id;
        return Ok(if same {
            InstallOutcome::Existing(existing)
        } else {
            InstallOutcome::Taken(existing)
        });
    }
    if queries::get_app(conn, &new.app_id)?.is_none() {
        return Ok(InstallOutcome::AppMissing);
    }
    if queries::get_account(conn, &new.account_id)?.is_none() {
        return Ok(InstallOutcome::AccountMissing);
    }
    // At most one installation per (app, account), under whatever id.
    if let Some(other) = queries::installation_of_pair(conn, &new.app_id, &new.account_id)? {
        return Ok(InstallOutcome::Taken(other));
    }
    debug_assert_eq!(new.token.ns, Some(new.namespace.ns));
    insert_namespace(
        conn,
        &new.namespace,
        "installation",
        &new.installation_id,
        now,
    )?;
    conn.prepare_cached(
        "INSERT INTO installations (installation_id, app_id, account_id, ns, created_at) \
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )
    .db()?
    .write(params![
        new.installation_id,
        new.app_id,
        new.account_id,
        new.namespace.ns,
        now
    ])
    .db()?;
    insert_token(conn, &new.token)?;
    Ok(InstallOutcome::Created(InstallationRow {
        installation_id: new.installation_id,
        app_id: new.app_id,
        account_id: new.account_id,
        ns: new.namespace.ns,
        created_at: now,
    }))
}

/// Removes an installation incarnation: its records (every store), credentials, OAuth flows,
/// tokens, namespace key and row. Also the step of deleting its app or account. Its account's
/// credentials live in the account's namespace and stay.
fn uninstall(conn: &Connection, inst: &InstallationRow) -> Result<()> {
    conn.prepare_cached("DELETE FROM tokens WHERE installation_id = ?1 OR ns = ?2")
        .db()?
        .write(params![inst.installation_id, inst.ns])
        .db()?;
    destroy_namespace(conn, inst.ns)?;
    conn.prepare_cached("DELETE FROM installations WHERE installation_id = ?1")
        .db()?
        .write([&inst.installation_id])
        .db()?;
    Ok(())
}

fn create_token(conn: &Connection, token: &TokenRow) -> Result<()> {
    if token.kind == TokenKind::Installation {
        let live = match (&token.installation_id, token.ns) {
            (Some(id), Some(ns)) => conn
                .prepare_cached(
                    "SELECT EXISTS (SELECT 1 FROM installations \
                     WHERE installation_id = ?1 AND ns = ?2)",
                )
                .db()?
                .query_row(params![id, ns], |r| r.get::<_, bool>(0))
                .db()?,
            _ => false,
        };
        if !live {
            return Err(CoreError::NotFound("no such installation".into()));
        }
    }
    if queries::token_exists(conn, &token.token_id)? {
        return Err(CoreError::Conflict("a token with this id exists".into()));
    }
    insert_token(conn, token)
}

fn insert_token(conn: &Connection, token: &TokenRow) -> Result<()> {
    let scopes = token.scopes.as_deref().map(encode_list).transpose()?;
    conn.prepare_cached(
        "INSERT INTO tokens (token_id, mac, kind, installation_id, ns, scopes, expires_at, \
         created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )
    .db()?
    .write(params![
        token.token_id,
        token.mac,
        token.kind.as_str(),
        token.installation_id,
        token.ns,
        scopes,
        token.expires_at,
        token.created_at,
    ])
    .db()?;
    Ok(())
}

fn as_i64(v: u64) -> Result<i64> {
    i64::try_from(v).map_err(|_| CoreError::internal("a version does not fit in i64"))
}
