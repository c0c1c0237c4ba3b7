//! The database schema as append-only, numbered refinery migrations (recorded in
//! `tresor_schema_history`), and the migration lock that lets several servers start at once.
//!
//! A migration, once released, is never edited: a change is a new entry at the end of
//! [`MIGRATIONS`]. A database that has applied a migration this build does not know is refused
//! with `Unavailable`, so an older release never writes into a schema it does not understand.
//!
//! Concurrent starts: no advisory lock (CockroachDB and YugabyteDB have none). Every migrating
//! server first makes sure the one-row table `tresor_migration_lock` exists, then holds a
//! `SELECT … FOR UPDATE` on its row in an open transaction on one connection while refinery
//! applies what is pending on a second connection (refinery runs its own transactions). A
//! second server waits on the row lock and then finds nothing left to apply. If the holder
//! dies, its session ends and the lock with it.
//!
//! The SQL stays inside what CockroachDB and YugabyteDB also run: plain tables, B-tree and
//! partial indexes, no sequences, triggers, extensions or stored procedures. Keys and
//! ciphertexts are `BYTEA`, which compares as bytes; JSON is kept as `TEXT`; times are
//! milliseconds since the epoch as `BIGINT`, stamped from the database's clock.

use deadpool_postgres::Pool;
use refinery::{Migration, Runner};
use tresor_core::CoreError;

use crate::error::PgResultExt;

/// The table in which refinery records the applied migrations.
pub(crate) const HISTORY_TABLE: &str = "tresor_schema_history";

/// The migrations, in order: (refinery name `V<n>__<what>`, SQL). Entry `i` is version `i + 1`.
pub(crate) const MIGRATIONS: &[(&str, &str)] = &[
    ("V1__initial", MIGRATION_1),
    ("V2__rekey_fences", MIGRATION_2),
];

/// The schema version this build writes.
pub(crate) const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Makes sure the lock table and its one row exist. `CREATE TABLE IF NOT EXISTS` can itself race
/// between two sessions in PostgreSQL (one fails with a duplicate catalog entry), so a failure
/// is retried a few times before it counts.
const LOCK_SETUP: &str = "CREATE TABLE IF NOT EXISTS tresor_migration_lock (id INT PRIMARY KEY); \
     INSERT INTO tresor_migration_lock (id) VALUES (1) ON CONFLICT (id) DO NOTHING;";

/// Applies the pending migrations under the migration lock; see the module documentation.
pub(crate) async fn migrate(pool: &Pool) -> Result<Vec<i64>, CoreError> {
    let mut lock_client = pool.get().await.db()?;
    let mut attempt = 0;
    loop {
        match lock_client.batch_execute(LOCK_SETUP).await {
            Ok(()) => break,
            Err(e) if attempt < 5 && e.code().is_some() => {
                attempt += 1;
                tracing::debug!(error = %e, "retrying the migration lock setup");
                tokio::time::sleep(std::time::Duration::from_millis(20 * attempt)).await;
            }
            Err(e) => return Err(e).db(),
        }
    }
    let lock = lock_client.transaction().await.db()?;
    lock.query_one(
        "SELECT id FROM tresor_migration_lock WHERE id = 1 FOR UPDATE",
        &[],
    )
    .await
    .db()?;

    let mut client = pool.get().await.db()?;
    let runner = runner()?;
    // refinery creates its history table on the first run; before that nothing is applied.
    let newest = newest_applied(&client).await?;
    if newest > SCHEMA_VERSION {
        return Err(CoreError::Unavailable(format!(
            "the database schema is version {newest}, newer than the {SCHEMA_VERSION} this \
             release knows; run the newer tresor release that wrote it"
        )));
    }
    let report = runner
        .run_async(&mut **client)
        .await
        .map_err(|e| refinery_error("apply the migrations", &e))?;
    let mut applied = Vec::new();
    for m in report.applied_migrations() {
        tracing::info!(
            migration = m.version(),
            name = m.name(),
            "applied postgres schema migration"
        );
        applied.push(i64::from(m.version()));
    }
    lock.commit().await.db()?;
    Ok(applied)
}

/// The newest migration the database has applied (0 for none, or when nothing was migrated yet).
pub(crate) async fn stored_version(pool: &Pool) -> Result<i64, CoreError> {
    let client = pool.get().await.db()?;
    newest_applied(&client).await
}

async fn newest_applied(client: &tokio_postgres::Client) -> Result<i64, CoreError> {
    let exists = client
        .query_one("SELECT to_regclass($1) IS NOT NULL", &[&HISTORY_TABLE])
        .await
        .db()?;
    if !exists.try_get::<_, bool>(0).db()? {
        return Ok(0);
    }
    let row = client
        .query_one(
            &format!("SELECT COALESCE(MAX(version), 0)::BIGINT FROM {HISTORY_TABLE}"),
            &[],
        )
        .await
        .db()?;
    row.try_get(0).db()
}

fn runner() -> Result<Runner, CoreError> {
    let migrations = MIGRATIONS
        .iter()
        .map(|(name, sql)| {
            Migration::unapplied(name, sql)
                .map_err(|e| CoreError::internal(format!("migration {name}: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    // All pending migrations in one transaction: a crash leaves the old or the new schema.
    let mut runner = Runner::new(&migrations)
        .set_grouped(true)
        .set_abort_divergent(true)
        .set_abort_missing(true);
    runner.set_migration_table_name(HISTORY_TABLE);
    Ok(runner)
}

fn refinery_error(what: &str, e: &refinery::Error) -> CoreError {
    CoreError::Unavailable(format!("cannot {what}: {e}"))
}

/// The first schema. The namespace id leads every tenant table's primary key, so one
/// installation's rows are one key range. Text keys (ids and names) are `COLLATE "C"`, so they
/// too sort as bytes, as in the embedded store, whatever the database's default collation. Record and credential keys are `BYTEA`, so ranges
/// and `ORDER BY key` follow byte order, the contract's key order, whatever the collation.
///
/// `version_floors` remembers the last version of a deleted key for as long as the clock-based
/// version of a new write could still be at or below it (see `tx.rs`); `store` 0 stands for
/// the credentials.
///
/// Audit ids come from the database clock (microseconds, plus the event's position in its
/// transaction), not from a sequence, so there is no hot counter; see `apply::insert_audit`.
///
/// `nodes` lists the server processes using the database and the root key version ids each
/// holds (a JSON array; ids only, never key material).
const MIGRATION_1: &str = r#"
CREATE TABLE meta (
    name  TEXT COLLATE "C" PRIMARY KEY,
    value BYTEA NOT NULL
);

CREATE TABLE namespaces (
    ns          BIGINT PRIMARY KEY,
    kind        TEXT NOT NULL,
    owner_id    TEXT NOT NULL,
    wrapped_key BYTEA NOT NULL,
    created_at  BIGINT NOT NULL
);

CREATE TABLE apps (
    app_id     TEXT COLLATE "C" PRIMARY KEY,
    scopes     TEXT NOT NULL,
    ns         BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE accounts (
    account_id TEXT COLLATE "C" PRIMARY KEY,
    ns         BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE installations (
    installation_id TEXT COLLATE "C" PRIMARY KEY,
    app_id          TEXT COLLATE "C" NOT NULL,
    account_id      TEXT COLLATE "C" NOT NULL,
    ns              BIGINT NOT NULL UNIQUE,
    created_at      BIGINT NOT NULL,
    UNIQUE (app_id, account_id)
);
CREATE INDEX installations_by_account ON installations (account_id);

CREATE TABLE tokens (
    token_id        TEXT COLLATE "C" PRIMARY KEY,
    mac             BYTEA NOT NULL,
    kind            TEXT NOT NULL,
    installation_id TEXT,
    ns              BIGINT,
    scopes          TEXT,
    expires_at      BIGINT,
    created_at      BIGINT NOT NULL
);
CREATE INDEX tokens_by_installation ON tokens (installation_id);
CREATE INDEX tokens_by_ns ON tokens (ns);
CREATE INDEX tokens_by_kind ON tokens (kind);

CREATE TABLE records (
    ns          BIGINT NOT NULL,
    store       SMALLINT NOT NULL,
    key         BYTEA NOT NULL,
    version     BIGINT NOT NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL,
    expires_at  BIGINT,
    value       BYTEA NOT NULL,
    description BYTEA,
    PRIMARY KEY (ns, store, key)
);
CREATE INDEX records_by_expiry ON records (expires_at) WHERE expires_at IS NOT NULL;

CREATE TABLE version_floors (
    ns      BIGINT NOT NULL,
    store   SMALLINT NOT NULL,
    key     BYTEA NOT NULL,
    version BIGINT NOT NULL,
    PRIMARY KEY (ns, store, key)
);
CREATE INDEX version_floors_by_version ON version_floors (version);

CREATE TABLE audit (
    id              BIGINT PRIMARY KEY,
    time            BIGINT NOT NULL,
    request_id      TEXT NOT NULL,
    token_id        TEXT,
    app_id          TEXT,
    account_id      TEXT,
    installation_id TEXT,
    operation       TEXT NOT NULL,
    store           TEXT,
    key             TEXT,
    status          INTEGER NOT NULL,
    remote_addr     TEXT
);
CREATE INDEX audit_by_time ON audit (time);
CREATE INDEX audit_by_installation ON audit (installation_id, id);
CREATE INDEX audit_by_account ON audit (account_id, id);

CREATE TABLE credentials (
    ns               BIGINT NOT NULL,
    key              BYTEA NOT NULL,
    owner            TEXT NOT NULL,
    app_id           TEXT NOT NULL,
    provider         TEXT NOT NULL,
    kind             TEXT NOT NULL,
    version          BIGINT NOT NULL,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL,
    expires_at       BIGINT,
    token_expires_at BIGINT,
    scopes           TEXT NOT NULL,
    needs_reconsent  BOOLEAN NOT NULL,
    metadata         BYTEA NOT NULL,
    secret           BYTEA NOT NULL,
    lease_until      BIGINT,
    lease_id         TEXT,
    PRIMARY KEY (ns, key)
);
CREATE INDEX credentials_by_expiry ON credentials (expires_at) WHERE expires_at IS NOT NULL;

CREATE TABLE providers (
    name          TEXT COLLATE "C" PRIMARY KEY,
    document      BYTEA NOT NULL,
    client_secret BYTEA,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL
);

CREATE TABLE oauth_flows (
    flow_id         TEXT COLLATE "C" PRIMARY KEY,
    ns              BIGINT NOT NULL,
    installation_id TEXT NOT NULL,
    provider        TEXT NOT NULL,
    store_key       BYTEA NOT NULL,
    store_owner     TEXT NOT NULL,
    scopes          TEXT NOT NULL,
    return_to       TEXT,
    state_mac       BYTEA NOT NULL UNIQUE,
    verifier        BYTEA NOT NULL,
    status          TEXT NOT NULL,
    error           TEXT,
    access_token    BYTEA,
    taken           BOOLEAN NOT NULL,
    expires_at      BIGINT NOT NULL,
    created_at      BIGINT NOT NULL
);
CREATE INDEX oauth_flows_by_ns ON oauth_flows (ns);
CREATE INDEX oauth_flows_by_expiry ON oauth_flows (expires_at);

CREATE TABLE nodes (
    node_id      TEXT COLLATE "C" PRIMARY KEY,
    key_versions TEXT NOT NULL,
    started_at   BIGINT NOT NULL,
    last_seen    BIGINT NOT NULL
);
"#;

/// The fences of installation key rotations (`tresor_core::sealed_rows`): while a namespace
/// has a row here whose `lease_until` has not passed on the database's clock, its commits wait.
/// Transient: not exported.
const MIGRATION_2: &str = r#"
CREATE TABLE rekey_fences (
    ns          BIGINT PRIMARY KEY,
    lease_id    TEXT NOT NULL,
    lease_until BIGINT NOT NULL
);
"#;
