//! The embedded default backend of tresor: one SQLite file in WAL mode with
//! `synchronous=FULL` and `secure_delete=ON`, written by a single group-commit writer thread
//! ([`GroupCommitStats`] counts its batches) and read through a pool of read-only connections on
//! blocking threads.
//!
//! Only this crate knows its SQL. Every rule lives in the service; this crate stores
//! ciphertext, MACs and metadata, and checks preconditions and namespace guards inside the
//! transaction.

mod apply;
mod backup;
mod checkpoint;
mod counts;
mod dump;
mod error;
mod key_check;
mod queries;
mod readers;
mod rekey;
mod reserve;
mod schema;
mod stats;
#[cfg(test)]
mod tests;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use tresor_core::CoreError;
use tresor_core::audit::{AuditEvent, AuditQuery};
use tresor_core::backend::{
    AccountRow, AppRow, Applied, AuthRecord, Backend, Commit, CredentialRow, FlowRow,
    InstallOutcome, InstallationRow, ListQuery, NamespaceRow, NewInstallation, NodeRow,
    ProviderRow, StoredRecord, TokenRow,
};
use tresor_core::dump::{Cell, DumpRow, DumpTable};
use tresor_core::model::{Ns, StoreKind, now_millis};

use crate::apply::{Op, Outcome};
use crate::readers::ReadPool;
use crate::writer::GroupCommitWriter;

pub use crate::backup::{SourceState, StoreSummary, backup_online, inspect_file};
pub use crate::key_check::ReadOnlyKeys;
pub use crate::reserve::RESERVE_FILE;
pub use crate::stats::{BATCH_SIZE_BUCKETS, GroupCommitSnapshot, GroupCommitStats};

type Result<T> = std::result::Result<T, CoreError>;

/// The file name of the database inside the data directory.
pub const DATABASE_FILE: &str = "tresor.db";

/// Tuning of the embedded backend.
#[derive(Debug, Clone)]
pub struct SqliteOptions {
    /// Read-only connections in the read pool (at least 1).
    pub read_connections: usize,
    /// Audit events of reads that may wait for the writer before `audit_enqueue` refuses.
    pub audit_queue_bound: usize,
    /// Bytes set aside in `audit.reserve` for the audit events of reads once the disk is full
    /// (`reserve.rs`); 0 for none.
    pub audit_reserve_bytes: u64,
    /// Storage quotas per namespace, checked inside each commit (off by default).
    pub quota: tresor_core::backend::Quota,
}

/// The default audit reserve: room for tens of thousands of read events.
pub const DEFAULT_AUDIT_RESERVE_BYTES: u64 = 8 << 20;

impl Default for SqliteOptions {
    fn default() -> Self {
        SqliteOptions {
            read_connections: 4,
            audit_queue_bound: 65_536,
            audit_reserve_bytes: DEFAULT_AUDIT_RESERVE_BYTES,
            quota: tresor_core::backend::Quota::default(),
        }
    }
}

/// The SQLite backend. Cheap to open; share it behind an `Arc`.
pub struct SqliteBackend {
    path: PathBuf,
    writer: GroupCommitWriter,
    readers: ReadPool,
}

impl SqliteBackend {
    /// Opens (creating when missing) `dir/tresor.db`, migrates its schema and starts the writer
    /// thread. Refuses a database written by a newer release. Synchronous and quick: callable
    /// from async code.
    pub fn open(dir: &Path, options: SqliteOptions) -> Result<SqliteBackend> {
        std::fs::create_dir_all(dir).map_err(|e| {
            CoreError::Unavailable(format!("cannot create the data directory: {e}"))
        })?;
        let path = dir.join(DATABASE_FILE);
        let conn = schema::open_writer(&path)?;
        // Readers open after the writer, which created the file and switched it to WAL.
        let readers = ReadPool::open(&path, options.read_connections)?;
        let reserve = reserve::DiskReserve::open(dir, options.audit_reserve_bytes);
        let writer = GroupCommitWriter::start(
            conn,
            &path,
            options.audit_queue_bound,
            reserve,
            options.quota,
        )?;
        tracing::info!(path = %path.display(), "opened sqlite storage");
        Ok(SqliteBackend {
            path,
            writer,
            readers,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The live group-commit counters, for the metrics endpoint.
    pub fn group_commit_stats(&self) -> Arc<GroupCommitStats> {
        self.writer.stats().clone()
    }

    /// A copy of the group-commit counters now.
    pub fn batch_sizes(&self) -> GroupCommitSnapshot {
        self.writer.stats().snapshot()
    }

    /// Audit events enqueued and not yet committed.
    pub fn audit_queue_len(&self) -> usize {
        self.writer.audit_queue_len()
    }

    /// Stops taking requests, commits everything already queued (audit events included) and
    /// joins every thread: the readers first (queued reads still run), then the writer, then the
    /// checkpoint thread. A last connection then folds the whole log into the database file and
    /// removes it, so a stopped store is one file. Later calls answer `Unavailable`. Idempotent.
    pub async fn shutdown(&self) {
        let readers = self.readers.close();
        let writer = self.writer.begin_shutdown();
        let checkpointer = self.writer.take_checkpointer();
        let path = self.path.clone();
        let joined = tokio::task::spawn_blocking(move || {
            if join_all(readers, writer, checkpointer) {
                final_checkpoint(&path);
            }
        });
        if joined.await.is_err() {
            tracing::error!("joining the sqlite threads failed");
        }
    }

    async fn write(&self, op: Op) -> Result<Outcome> {
        self.writer.call(op).await
    }
}

impl Drop for SqliteBackend {
    /// Without an explicit [`SqliteBackend::shutdown`], dropping still commits what is queued
    /// and waits for the writer (briefly blocking the dropping thread).
    fn drop(&mut self) {
        let readers = self.readers.close();
        let joined = join_all(
            readers,
            self.writer.begin_shutdown(),
            self.writer.take_checkpointer(),
        );
        if joined {
            final_checkpoint(&self.path);
        }
    }
}

/// Checkpoints the whole log into the database file and truncates it; closing this connection,
/// the only one left, then removes the log. Only a tidy-up: the log is durable either way.
fn final_checkpoint(path: &Path) {
    let done = rusqlite::Connection::open(path).and_then(|conn| {
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        conn.close().map_err(|(_, e)| e)
    });
    if let Err(e) = done {
        tracing::warn!(error = %e, "the final checkpoint failed; the log stays beside the database");
    }
}

/// Joins the threads in the order [`SqliteBackend::shutdown`] gives; logs the ones that
/// panicked. Whether the writer was among them (false: an earlier call already stopped it).
fn join_all(
    readers: Vec<std::thread::JoinHandle<()>>,
    writer: Option<std::thread::JoinHandle<()>>,
    checkpointer: Option<std::thread::JoinHandle<()>>,
) -> bool {
    let had_writer = writer.is_some();
    let named = readers
        .into_iter()
        .map(|t| ("read", t))
        .chain(writer.map(|t| ("writer", t)))
        .chain(checkpointer.map(|t| ("checkpoint", t)));
    for (name, thread) in named {
        if thread.join().is_err() {
            tracing::error!(thread = name, "a sqlite thread ended with a panic");
        }
    }
    had_writer
}

/// The writer answered an op with an outcome of another kind: a bug in this crate.
fn mismatch() -> CoreError {
    CoreError::internal("the sqlite writer answered with an unexpected outcome")
}

#[async_trait]
impl Backend for SqliteBackend {
    fn name(&self) -> &'static str {
        "sqlite"
    }

    async fn ready(&self) -> Result<()> {
        self.writer.check_alive()?;
        self.readers
            .run(|conn| {
                conn.query_row("SELECT 1", [], |_| Ok(()))
                    .map_err(|e| error::from_sqlite(&e))
            })
            .await
    }

    async fn meta_get_or_insert(&self, name: &str, value: &[u8]) -> Result<Vec<u8>> {
        let op = Op::MetaGetOrInsert {
            name: name.to_owned(),
            value: value.to_vec(),
        };
        match self.write(op).await? {
            Outcome::Meta(v) => Ok(v),
            _ => Err(mismatch()),
        }
    }

    fn serves_alone(&self) -> bool {
        // The data directory's lock admits one serving process.
        true
    }

    async fn meta_replace(&self, name: &str, old: &[u8], new: &[u8]) -> Result<bool> {
        let op = Op::MetaReplace {
            name: name.to_owned(),
            old: old.to_vec(),
            new: new.to_vec(),
        };
        match self.write(op).await? {
            Outcome::Replaced(done) => Ok(done),
            _ => Err(mismatch()),
        }
    }

    async fn namespace_key_replace(&self, ns: Ns, old: &[u8], new: &[u8]) -> Result<bool> {
        let op = Op::NamespaceKeyReplace {
            ns,
            old: old.to_vec(),
            new: new.to_vec(),
        };
        match self.write(op).await? {
            Outcome::Replaced(done) => Ok(done),
            _ => Err(mismatch()),
        }
    }

    async fn fence_namespace(&self, ns: Ns, lease_id: &str, lease_ms: i64) -> Result<bool> {
        let op = rekey::RekeyOp::Fence {
            ns,
            lease_id: lease_id.to_owned(),
            lease_ms,
        };
        match self.write(Op::Rekey(op)).await? {
            Outcome::Rekey(rekey::RekeyOutcome::Done(done)) => Ok(done),
            _ => Err(mismatch()),
        }
    }

    async fn unfence_namespace(&self, ns: Ns, lease_id: &str) -> Result<bool> {
        let op = rekey::RekeyOp::Unfence {
            ns,
            lease_id: lease_id.to_owned(),
        };
        match self.write(Op::Rekey(op)).await? {
            Outcome::Rekey(rekey::RekeyOutcome::Done(done)) => Ok(done),
            _ => Err(mismatch()),
        }
    }

    async fn namespace_sealed_rows(&self, ns: Ns) -> Result<tresor_core::sealed_rows::SealedRows> {
        self.readers
            .run(move |conn| rekey::sealed_rows(conn, ns))
            .await
    }

    async fn rekey_namespace(
        &self,
        rekey: tresor_core::sealed_rows::Rekey,
    ) -> Result<tresor_core::sealed_rows::RekeyCounts> {
        match self
            .write(Op::Rekey(rekey::RekeyOp::Swap(Box::new(rekey))))
            .await?
        {
            Outcome::Rekey(rekey::RekeyOutcome::Swapped(counts)) => Ok(counts),
            _ => Err(mismatch()),
        }
    }

    async fn namespace_keys_not_under(
        &self,
        prefix: &[u8],
        after: Ns,
        limit: usize,
    ) -> Result<Vec<NamespaceRow>> {
        let prefix = prefix.to_vec();
        self.readers
            .run(move |conn| queries::namespace_keys_not_under(conn, &prefix, after, limit))
            .await
    }

    async fn store_counts(&self) -> Result<tresor_core::backend::StoreCounts> {
        self.readers.run(counts::store_counts).await
    }

    async fn count_namespace_keys(&self, prefixes: &[Vec<u8>]) -> Result<(Vec<u64>, u64)> {
        let prefixes = prefixes.to_vec();
        self.readers
            .run(move |conn| queries::count_namespace_keys(conn, &prefixes))
            .await
    }

    async fn meta_get(&self, name: &str) -> Result<Option<Vec<u8>>> {
        let name = name.to_owned();
        self.readers
            .run(move |conn| queries::meta_get(conn, &name))
            .await
    }

    async fn authenticate(&self, token_id: &str) -> Result<Option<AuthRecord>> {
        let token_id = token_id.to_owned();
        self.readers
            .run(move |conn| queries::authenticate(conn, &token_id))
            .await
    }

    fn auth_epoch(&self) -> Option<u64> {
        // One process owns the embedded store (the data directory's lock), and every write
        // goes through this writer.
        Some(self.writer.auth_epoch())
    }

    async fn namespace_key(&self, ns: Ns) -> Result<Option<Vec<u8>>> {
        self.readers
            .run(move |conn| queries::namespace_key(conn, ns))
            .await
    }

    async fn read_record(
        &self,
        ns: Ns,
        store: StoreKind,
        key: &[u8],
    ) -> Result<Option<StoredRecord>> {
        let key = key.to_vec();
        self.readers
            .run(move |conn| queries::read_record(conn, ns, store, &key, now_millis()))
            .await
    }

    async fn list_records(
        &self,
        ns: Ns,
        store: StoreKind,
        query: &ListQuery,
    ) -> Result<Vec<StoredRecord>> {
        let query = query.clone();
        self.readers
            .run(move |conn| queries::list_records(conn, ns, store, &query, now_millis()))
            .await
    }

    async fn commit(&self, commit: Commit) -> Result<Vec<Applied>> {
        match self.write(Op::Commit(commit)).await? {
            Outcome::Applied(applied) => Ok(applied),
            _ => Err(mismatch()),
        }
    }

    fn audit_enqueue(&self, events: Vec<AuditEvent>) -> Result<()> {
        self.writer.enqueue_audit(events)
    }

    async fn audit_query(&self, query: &AuditQuery) -> Result<Vec<AuditEvent>> {
        // Events of reads wait in the writer's queue for a few milliseconds; whoever reads the
        // log sees every event queued before the query.
        self.write(Op::FlushAudit).await?;
        let query = query.clone();
        self.readers
            .run(move |conn| queries::audit_query(conn, &query))
            .await
    }

    async fn purge_expired(&self, limit: usize) -> Result<usize> {
        match self.write(Op::PurgeExpired { limit }).await? {
            Outcome::Purged(n) => Ok(n),
            _ => Err(mismatch()),
        }
    }

    async fn read_credential(
        &self,
        namespaces: &[Ns],
        key: &[u8],
    ) -> Result<Option<CredentialRow>> {
        let (namespaces, key) = (namespaces.to_vec(), key.to_vec());
        self.readers
            .run(move |conn| queries::read_credential(conn, &namespaces, &key, now_millis()))
            .await
    }

    async fn list_credentials(
        &self,
        namespaces: &[Ns],
        query: &ListQuery,
    ) -> Result<Vec<CredentialRow>> {
        let (namespaces, query) = (namespaces.to_vec(), query.clone());
        self.readers
            .run(move |conn| queries::list_credentials(conn, &namespaces, &query, now_millis()))
            .await
    }

    async fn flow_by_id(&self, flow_id: &str) -> Result<Option<FlowRow>> {
        let flow_id = flow_id.to_owned();
        self.readers
            .run(move |conn| queries::flow_by_id(conn, &flow_id))
            .await
    }

    async fn flow_by_state(&self, state_mac: &[u8]) -> Result<Option<FlowRow>> {
        let state_mac = state_mac.to_vec();
        self.readers
            .run(move |conn| queries::flow_by_state(conn, &state_mac))
            .await
    }

    async fn put_provider(
        &self,
        row: ProviderRow,
        keep_secret: bool,
        audit: AuditEvent,
    ) -> Result<(ProviderRow, bool)> {
        let op = Op::PutProvider {
            row,
            keep_secret,
            audit,
        };
        match self.write(op).await? {
            Outcome::Provider(row, created) => Ok((row, created)),
            _ => Err(mismatch()),
        }
    }

    async fn get_provider(&self, name: &str) -> Result<Option<ProviderRow>> {
        let name = name.to_owned();
        self.readers
            .run(move |conn| queries::get_provider(conn, &name))
            .await
    }

    async fn list_providers(&self) -> Result<Vec<ProviderRow>> {
        self.readers.run(queries::list_providers).await
    }

    async fn delete_provider(&self, name: &str, audit: AuditEvent) -> Result<bool> {
        let op = Op::DeleteProvider {
            name: name.to_owned(),
            audit,
        };
        match self.write(op).await? {
            Outcome::Deleted(existed) => Ok(existed),
            _ => Err(mismatch()),
        }
    }

    async fn purge_audit(&self, before: tresor_core::model::Millis, limit: usize) -> Result<usize> {
        match self.write(Op::PurgeAudit { before, limit }).await? {
            Outcome::Purged(n) => Ok(n),
            _ => Err(mismatch()),
        }
    }

    async fn put_app(
        &self,
        app_id: &str,
        scopes: &[String],
        namespace: NamespaceRow,
        audit: AuditEvent,
    ) -> Result<(AppRow, bool)> {
        let op = Op::PutApp {
            app_id: app_id.to_owned(),
            scopes: scopes.to_vec(),
            namespace,
            audit,
        };
        match self.write(op).await? {
            Outcome::App(row, created) => Ok((row, created)),
            _ => Err(mismatch()),
        }
    }

    async fn get_app(&self, app_id: &str) -> Result<Option<AppRow>> {
        let app_id = app_id.to_owned();
        self.readers
            .run(move |conn| queries::get_app(conn, &app_id))
            .await
    }

    async fn list_apps(&self) -> Result<Vec<AppRow>> {
        self.readers.run(queries::list_apps).await
    }

    async fn delete_app(&self, app_id: &str, audit: AuditEvent) -> Result<bool> {
        let op = Op::DeleteApp {
            app_id: app_id.to_owned(),
            audit,
        };
        match self.write(op).await? {
            Outcome::Deleted(existed) => Ok(existed),
            _ => Err(mismatch()),
        }
    }

    async fn put_account(
        &self,
        account_id: &str,
        namespace: NamespaceRow,
        audit: AuditEvent,
    ) -> Result<(AccountRow, bool)> {
        let op = Op::PutAccount {
            account_id: account_id.to_owned(),
            namespace,
            audit,
        };
        match self.write(op).await? {
            Outcome::Account(row, created) => Ok((row, created)),
            _ => Err(mismatch()),
        }
    }

    async fn get_account(&self, account_id: &str) -> Result<Option<AccountRow>> {
        let account_id = account_id.to_owned();
        self.readers
            .run(move |conn| queries::get_account(conn, &account_id))
            .await
    }

    async fn list_accounts(&self) -> Result<Vec<AccountRow>> {
        self.readers.run(queries::list_accounts).await
    }

    async fn delete_account(&self, account_id: &str, audit: AuditEvent) -> Result<bool> {
        let op = Op::DeleteAccount {
            account_id: account_id.to_owned(),
            audit,
        };
        match self.write(op).await? {
            Outcome::Deleted(existed) => Ok(existed),
            _ => Err(mismatch()),
        }
    }

    async fn install(&self, new: NewInstallation, audit: AuditEvent) -> Result<InstallOutcome> {
        match self.write(Op::Install { new, audit }).await? {
            Outcome::Install(outcome) => Ok(outcome),
            _ => Err(mismatch()),
        }
    }

    async fn get_installation(&self, installation_id: &str) -> Result<Option<InstallationRow>> {
        let installation_id = installation_id.to_owned();
        self.readers
            .run(move |conn| queries::get_installation(conn, &installation_id))
            .await
    }

    async fn list_installations(&self) -> Result<Vec<InstallationRow>> {
        self.readers.run(queries::list_installations).await
    }

    async fn uninstall(&self, installation_id: &str, audit: AuditEvent) -> Result<bool> {
        let op = Op::Uninstall {
            installation_id: installation_id.to_owned(),
            audit,
        };
        match self.write(op).await? {
            Outcome::Deleted(existed) => Ok(existed),
            _ => Err(mismatch()),
        }
    }

    async fn create_token(&self, token: TokenRow, audit: AuditEvent) -> Result<()> {
        match self.write(Op::CreateToken { token, audit }).await? {
            Outcome::Unit => Ok(()),
            _ => Err(mismatch()),
        }
    }

    async fn revoke_token(&self, token_id: &str, audit: AuditEvent) -> Result<bool> {
        let op = Op::RevokeToken {
            token_id: token_id.to_owned(),
            audit,
        };
        match self.write(op).await? {
            Outcome::Deleted(existed) => Ok(existed),
            _ => Err(mismatch()),
        }
    }

    async fn has_admin_token(&self) -> Result<bool> {
        self.readers.run(queries::has_admin_token).await
    }

    async fn register_node(&self, node: &NodeRow) -> Result<()> {
        let op = Op::RegisterNode {
            node_id: node.node_id.clone(),
            key_versions: node.key_versions.clone(),
        };
        match self.write(op).await? {
            Outcome::Unit => Ok(()),
            _ => Err(mismatch()),
        }
    }

    async fn list_nodes(&self) -> Result<Vec<NodeRow>> {
        self.readers.run(queries::list_nodes).await
    }

    async fn unregister_node(&self, node_id: &str) -> Result<bool> {
        let op = Op::UnregisterNode {
            node_id: node_id.to_owned(),
        };
        match self.write(op).await? {
            Outcome::Deleted(existed) => Ok(existed),
            _ => Err(mismatch()),
        }
    }

    async fn export_rows(
        &self,
        table: DumpTable,
        after: Option<&[Cell]>,
        limit: usize,
    ) -> Result<Vec<DumpRow>> {
        let after = after.map(<[Cell]>::to_vec);
        self.readers
            .run(move |conn| dump::export_rows(conn, table, after.as_deref(), limit))
            .await
    }

    async fn import_rows(&self, table: DumpTable, rows: Vec<DumpRow>) -> Result<()> {
        match self.write(Op::ImportRows { table, rows }).await? {
            Outcome::Unit => Ok(()),
            _ => Err(mismatch()),
        }
    }
}
