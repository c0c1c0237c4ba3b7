//! The PostgreSQL backend of tresor: any number of stateless `tresor serve` processes over one
//! database (and whatever replication or HA it brings).
//!
//! Only this crate knows its SQL, which stays inside what CockroachDB and YugabyteDB also run
//! (see `schema.rs`): by construction, tested on PostgreSQL. Writes run in SERIALIZABLE
//! transactions retried on SQLSTATE 40001/40P01 (`tx.rs`); every database error is mapped once,
//! by SQLSTATE (`error.rs`). Reads run on pooled connections, one statement each, with liveness
//! judged on the database's clock. Audit events of reads are queued and written by a background
//! task within milliseconds (`audit.rs`).
//!
//! Nothing here caches state across requests: every authentication, namespace-key lookup and
//! guard reads the database, so a revocation, uninstall or app deletion committed by one server
//! is seen by every other at once.

mod apply;
mod audit;
mod counts;
mod dump;
mod error;
mod queries;
mod rekey;
mod schema;
mod tls;
mod tx;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tresor_core::CoreError;
use tresor_core::audit::{AuditEvent, AuditQuery};
use tresor_core::backend::{
    AccountRow, AppRow, Applied, AuthRecord, Backend, Commit, CredentialRow, FlowRow,
    InstallOutcome, InstallationRow, ListQuery, NamespaceRow, NewInstallation, NodeRow,
    ProviderRow, StoredKeys, StoredRecord, TokenRow,
};
use tresor_core::dump::{Cell, DumpRow, DumpTable};
use tresor_core::model::{Millis, Ns, StoreKind};

use crate::apply::{Op, Outcome};
use crate::audit::AuditQueue;
use crate::error::{PgResultExt, TxError};

type Result<T> = std::result::Result<T, CoreError>;

/// Tuning and TLS of the PostgreSQL backend.
#[derive(Debug, Clone)]
pub struct PostgresOptions {
    /// Connections in this process's pool (at least 1).
    pub max_connections: usize,
    /// PEM file of the certificate authorities that sign the database's certificate; `None`
    /// uses the system's roots. TLS itself is asked for by the URL (`sslmode=require`).
    pub ca_file: Option<PathBuf>,
    /// Audit events of reads that may wait for the background writer before `audit_enqueue`
    /// refuses (and the request answers 503 rather than run unaudited).
    pub audit_queue_bound: usize,
    /// How long to wait for a new connection (and for a free one from the pool).
    pub connect_timeout: Duration,
    /// Storage quotas per namespace, checked inside each commit (off by default). Every
    /// server over one database must be given the same.
    pub quota: tresor_core::backend::Quota,
}

impl Default for PostgresOptions {
    fn default() -> Self {
        PostgresOptions {
            max_connections: 16,
            ca_file: None,
            audit_queue_bound: 65_536,
            connect_timeout: Duration::from_secs(10),
            quota: tresor_core::backend::Quota::default(),
        }
    }
}

/// What `migrate` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationReport {
    /// The migrations applied now, in order.
    pub applied: Vec<i64>,
    /// The schema version afterwards.
    pub version: i64,
}

/// The PostgreSQL backend. Share it behind an `Arc`.
pub struct PostgresBackend {
    pool: Pool,
    audit: Arc<AuditQueue>,
    quota: tresor_core::backend::Quota,
}

impl PostgresBackend {
    /// The schema version this release writes.
    pub const SCHEMA_VERSION: i64 = schema::SCHEMA_VERSION;

    /// Connects a pool to `url` and checks that the database answers. Does not migrate.
    ///
    /// TLS: a rustls connector is always offered, and the URL's `sslmode` decides (`disable`,
    /// `prefer`, the default, or `require`); the certificate is verified against
    /// `options.ca_file` or the system's roots, and the host name is checked.
    pub async fn connect(url: &str, options: PostgresOptions) -> Result<PostgresBackend> {
        let mut config: tokio_postgres::Config = url.parse().map_err(|_| {
            CoreError::invalid("the database URL is not a valid PostgreSQL connection string")
        })?;
        config.connect_timeout(options.connect_timeout);
        if config.get_application_name().is_none() {
            config.application_name("tresor");
        }
        let tls = tls::connector(options.ca_file.as_deref())?;
        let manager = Manager::from_config(
            config,
            tls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(options.max_connections.max(1))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(options.connect_timeout))
            .create_timeout(Some(options.connect_timeout))
            .build()
            .map_err(|e| CoreError::internal(format!("cannot build the database pool: {e}")))?;
        // Fail now, with the reason, rather than at the first request.
        let client = pool.get().await.db()?;
        client.simple_query("SELECT 1").await.db()?;
        drop(client);
        let audit = AuditQueue::start(pool.clone(), options.audit_queue_bound);
        Ok(PostgresBackend {
            pool,
            audit,
            quota: options.quota,
        })
    }

    /// Applies the pending migrations under the migration row lock (safe when several servers
    /// start at once); refuses a schema newer than this release knows.
    pub async fn migrate(&self) -> Result<MigrationReport> {
        let applied = schema::migrate(&self.pool).await?;
        Ok(MigrationReport {
            applied,
            version: schema::stored_version(&self.pool).await?,
        })
    }

    /// The newest migration the database has applied (0 for an empty database).
    pub async fn schema_version(&self) -> Result<i64> {
        schema::stored_version(&self.pool).await
    }

    /// Writes the queued audit events of reads and closes the pool.
    pub async fn shutdown(&self) {
        self.audit.shutdown().await;
        self.pool.close();
    }

    /// Audit events of reads waiting for the background writer.
    pub fn audit_queue_len(&self) -> usize {
        self.audit.len()
    }

    async fn write(&self, op: Op) -> Result<Outcome> {
        tx::write(&self.pool, &op, &self.quota).await
    }

    async fn client(&self) -> Result<deadpool_postgres::Object> {
        self.pool.get().await.db()
    }
}

impl Drop for PostgresBackend {
    fn drop(&mut self) {
        self.audit.close();
    }
}

fn mismatch() -> CoreError {
    CoreError::internal("the postgres writer answered with the wrong outcome")
}

/// The read path's errors: a retryable abort cannot happen outside a write transaction, and is
/// reported as unavailable if it does.
fn read<T>(r: std::result::Result<T, TxError>) -> Result<T> {
    r.map_err(TxError::into_core)
}

/// Read through the pool, before anything is migrated: the start-up check of the root key.
#[async_trait]
impl StoredKeys for PostgresBackend {
    async fn stored_meta_key(&self, name: &str) -> Result<Option<Vec<u8>>> {
        read(queries::meta_get(&self.client().await?, name).await)
    }

    async fn namespace_keys_with_prefix(
        &self,
        prefix: &[u8],
        limit: usize,
    ) -> Result<Vec<NamespaceRow>> {
        read(queries::namespace_keys_with_prefix(&self.client().await?, prefix, limit).await)
    }

    async fn namespace_key_without_prefixes(
        &self,
        prefixes: &[Vec<u8>],
    ) -> Result<Option<NamespaceRow>> {
        read(queries::namespace_key_without_prefixes(&self.client().await?, prefixes).await)
    }
}

#[async_trait]
impl Backend for PostgresBackend {
    fn name(&self) -> &'static str {
        "postgres"
    }

    async fn ready(&self) -> Result<()> {
        let client = self.client().await?;
        client.simple_query("SELECT 1").await.db()?;
        Ok(())
    }

    async fn meta_get_or_insert(&self, name: &str, value: &[u8]) -> Result<Vec<u8>> {
        match self
            .write(Op::MetaGetOrInsert {
                name: name.to_owned(),
                value: value.to_vec(),
            })
            .await?
        {
            Outcome::Meta(v) => Ok(v),
            _ => Err(mismatch()),
        }
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
        read(rekey::sealed_rows(&self.client().await?, ns).await)
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
        read(queries::namespace_keys_not_under(&self.client().await?, prefix, after, limit).await)
    }

    async fn store_counts(&self) -> Result<tresor_core::backend::StoreCounts> {
        read(counts::store_counts(&self.client().await?).await)
    }

    async fn count_namespace_keys(&self, prefixes: &[Vec<u8>]) -> Result<(Vec<u64>, u64)> {
        read(queries::count_namespace_keys(&self.client().await?, prefixes).await)
    }

    async fn meta_get(&self, name: &str) -> Result<Option<Vec<u8>>> {
        read(queries::meta_get(&self.client().await?, name).await)
    }

    async fn authenticate(&self, token_id: &str) -> Result<Option<AuthRecord>> {
        read(queries::authenticate(&self.client().await?, token_id).await)
    }

    async fn namespace_key(&self, ns: Ns) -> Result<Option<Vec<u8>>> {
        read(queries::namespace_key(&self.client().await?, ns).await)
    }

    async fn read_record(
        &self,
        ns: Ns,
        store: StoreKind,
        key: &[u8],
    ) -> Result<Option<StoredRecord>> {
        read(queries::read_record(&self.client().await?, ns, store, key).await)
    }

    async fn list_records(
        &self,
        ns: Ns,
        store: StoreKind,
        query: &ListQuery,
    ) -> Result<Vec<StoredRecord>> {
        read(queries::list_records(&self.client().await?, ns, store, query).await)
    }

    async fn commit(&self, commit: Commit) -> Result<Vec<Applied>> {
        match self.write(Op::Commit(commit)).await? {
            Outcome::Applied(v) => Ok(v),
            _ => Err(mismatch()),
        }
    }

    fn audit_enqueue(&self, events: Vec<AuditEvent>) -> Result<()> {
        self.audit.enqueue(events)
    }

    async fn audit_query(&self, query: &AuditQuery) -> Result<Vec<AuditEvent>> {
        read(queries::audit_query(&self.client().await?, query).await)
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
        read(queries::read_credential(&self.client().await?, namespaces, key).await)
    }

    async fn list_credentials(
        &self,
        namespaces: &[Ns],
        query: &ListQuery,
    ) -> Result<Vec<CredentialRow>> {
        read(queries::list_credentials(&self.client().await?, namespaces, query).await)
    }

    async fn flow_by_id(&self, flow_id: &str) -> Result<Option<FlowRow>> {
        read(queries::flow_by_id(&self.client().await?, flow_id).await)
    }

    async fn flow_by_state(&self, state_mac: &[u8]) -> Result<Option<FlowRow>> {
        read(queries::flow_by_state(&self.client().await?, state_mac).await)
    }

    async fn put_provider(
        &self,
        row: ProviderRow,
        keep_secret: bool,
        audit: AuditEvent,
    ) -> Result<(ProviderRow, bool)> {
        match self
            .write(Op::PutProvider {
                row,
                keep_secret,
                audit,
            })
            .await?
        {
            Outcome::Provider(row, created) => Ok((row, created)),
            _ => Err(mismatch()),
        }
    }

    async fn get_provider(&self, name: &str) -> Result<Option<ProviderRow>> {
        read(queries::get_provider(&self.client().await?, name).await)
    }

    async fn list_providers(&self) -> Result<Vec<ProviderRow>> {
        read(queries::list_providers(&self.client().await?).await)
    }

    async fn delete_provider(&self, name: &str, audit: AuditEvent) -> Result<bool> {
        deleted(
            self.write(Op::DeleteProvider {
                name: name.to_owned(),
                audit,
            })
            .await?,
        )
    }

    async fn purge_audit(&self, before: Millis, limit: usize) -> Result<usize> {
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
        match self
            .write(Op::PutApp {
                app_id: app_id.to_owned(),
                scopes: scopes.to_vec(),
                namespace,
                audit,
            })
            .await?
        {
            Outcome::App(row, created) => Ok((row, created)),
            _ => Err(mismatch()),
        }
    }

    async fn get_app(&self, app_id: &str) -> Result<Option<AppRow>> {
        read(queries::get_app(&self.client().await?, app_id).await)
    }

    async fn list_apps(&self) -> Result<Vec<AppRow>> {
        read(queries::list_apps(&self.client().await?).await)
    }

    async fn delete_app(&self, app_id: &str, audit: AuditEvent) -> Result<bool> {
        deleted(
            self.write(Op::DeleteApp {
                app_id: app_id.to_owned(),
                audit,
            })
            .await?,
        )
    }

    async fn put_account(
        &self,
        account_id: &str,
        namespace: NamespaceRow,
        audit: AuditEvent,
    ) -> Result<(AccountRow, bool)> {
        match self
            .write(Op::PutAccount {
                account_id: account_id.to_owned(),
                namespace,
                audit,
            })
            .await?
        {
            Outcome::Account(row, created) => Ok((row, created)),
            _ => Err(mismatch()),
        }
    }

    async fn get_account(&self, account_id: &str) -> Result<Option<AccountRow>> {
        read(queries::get_account(&self.client().await?, account_id).await)
    }

    async fn list_accounts(&self) -> Result<Vec<AccountRow>> {
        read(queries::list_accounts(&self.client().await?).await)
    }

    async fn delete_account(&self, account_id: &str, audit: AuditEvent) -> Result<bool> {
        deleted(
            self.write(Op::DeleteAccount {
                account_id: account_id.to_owned(),
                audit,
            })
            .await?,
        )
    }

    async fn install(&self, new: NewInstallation, audit: AuditEvent) -> Result<InstallOutcome> {
        match self.write(Op::Install { new, audit }).await? {
            Outcome::Install(out) => Ok(out),
            _ => Err(mismatch()),
        }
    }

    async fn get_installation(&self, installation_id: &str) -> Result<Option<InstallationRow>> {
        read(queries::get_installation(&self.client().await?, installation_id).await)
    }

    async fn list_installations(&self) -> Result<Vec<InstallationRow>> {
        read(
            queries::installations_where(&self.client().await?, "ORDER BY installation_id", None)
                .await,
        )
    }

    async fn uninstall(&self, installation_id: &str, audit: AuditEvent) -> Result<bool> {
        deleted(
            self.write(Op::Uninstall {
                installation_id: installation_id.to_owned(),
                audit,
            })
            .await?,
        )
    }

    async fn create_token(&self, token: TokenRow, audit: AuditEvent) -> Result<()> {
        match self.write(Op::CreateToken { token, audit }).await? {
            Outcome::Unit => Ok(()),
            _ => Err(mismatch()),
        }
    }

    async fn revoke_token(&self, token_id: &str, audit: AuditEvent) -> Result<bool> {
        deleted(
            self.write(Op::RevokeToken {
                token_id: token_id.to_owned(),
                audit,
            })
            .await?,
        )
    }

    async fn has_admin_token(&self) -> Result<bool> {
        read(queries::has_admin_token(&self.client().await?).await)
    }

    async fn register_node(&self, node: &NodeRow) -> Result<()> {
        match self.write(Op::RegisterNode { node: node.clone() }).await? {
            Outcome::Unit => Ok(()),
            _ => Err(mismatch()),
        }
    }

    async fn list_nodes(&self) -> Result<Vec<NodeRow>> {
        read(queries::list_nodes(&self.client().await?).await)
    }

    async fn unregister_node(&self, node_id: &str) -> Result<bool> {
        deleted(
            self.write(Op::UnregisterNode {
                node_id: node_id.to_owned(),
            })
            .await?,
        )
    }

    async fn export_rows(
        &self,
        table: DumpTable,
        after: Option<&[Cell]>,
        limit: usize,
    ) -> Result<Vec<DumpRow>> {
        dump::export_rows(&self.pool, table, after, limit).await
    }

    async fn import_rows(&self, table: DumpTable, rows: Vec<DumpRow>) -> Result<()> {
        dump::import_rows(&self.pool, table, rows).await
    }
}

fn deleted(outcome: Outcome) -> Result<bool> {
    match outcome {
        Outcome::Deleted(d) => Ok(d),
        _ => Err(mismatch()),
    }
}
