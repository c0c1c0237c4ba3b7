//! The database schema as append-only, numbered migrations (tracked in `PRAGMA user_version`),
//! and how the write and read connections are opened and configured.
//!
//! A migration, once released, is never edited: a change is a new entry at the end of
//! [`MIGRATIONS`]. A database whose version is newer than this list is refused, so an older
//! release never writes into a schema it does not understand.

use std::path::Path;
use std::time::Duration;

use rusqlite::config::DbConfig;
use rusqlite::{Connection, OpenFlags};
use tresor_core::CoreError;

use crate::error::SqlResultExt;

/// The schema version this release writes.
pub(crate) const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// The name of the global record-version counter in `counters`.
pub(crate) const VERSION_COUNTER: &str = "record_version";

/// How long a connection waits for a lock before it answers "busy". Only checkpoints and a
/// second process opening the same file can hold one, so this is rarely reached.
pub(crate) const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Opens (creating if needed) the database for the single writer: WAL, `synchronous=FULL`,
/// `secure_delete=ON`, and migrates it to [`SCHEMA_VERSION`].
pub(crate) fn open_writer(path: &Path) -> Result<Connection, CoreError> {
    let fresh = !path.exists();
    let mut conn = Connection::open(path).db()?;
    if fresh {
        restrict_permissions(path)?;
    }
    conn.busy_timeout(BUSY_TIMEOUT).db()?;
    // Refuse a newer schema before changing anything in the file.
    check_version(&conn)?;
    let mode: String = conn
        .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
        .db()?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(CoreError::Unavailable(format!(
            "the database could not be switched to WAL mode (it stays in `{mode}`)"
        )));
    }
    // FULL: in WAL mode every commit fsyncs the WAL, so an acknowledged write survives power
    // loss (NORMAL would only protect against a crash of the process).
    conn.pragma_update(None, "synchronous", "FULL").db()?;
    // Deleted records and destroyed keys are overwritten with zeros, not left in free pages.
    conn.pragma_update(None, "secure_delete", "ON").db()?;
    // After a checkpoint, shrink the WAL file back instead of keeping its high-water mark.
    conn.pragma_update(None, "journal_size_limit", 64 * 1024 * 1024)
        .db()?;
    keep_plans(&conn)?;
    migrate(&mut conn)?;
    Ok(conn)
}

/// Cached statements keep their query plans. rusqlite clears a statement's bindings when it
/// returns to the cache, and without the query planner stability guarantee SQLite then
/// re-plans statements whose plan may depend on bound values (the authentication join among
/// them) on every run: about a quarter of the server's CPU per request (BENCHMARKS.md). With
/// QPSG the plan is made once, without looking at the values, which is what every statement
/// here wants: they are all primary-key or index lookups.
fn keep_plans(conn: &Connection) -> Result<(), CoreError> {
    conn.set_prepared_statement_cache_capacity(64);
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)
        .db()?;
    Ok(())
}

/// The database holds wrapped keys and token MACs: only the server's user may read it. SQLite
/// creates the `-wal` and `-shm` files with the database file's permissions.
#[cfg(unix)]
fn restrict_permissions(path: &Path) -> Result<(), CoreError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(|e| {
        CoreError::Unavailable(format!(
            "cannot restrict the database file's permissions: {e}"
        ))
    })
}

#[cfg(not(unix))]
fn restrict_permissions(_path: &Path) -> Result<(), CoreError> {
    Ok(())
}

/// Opens a read-only connection for the read pool. The writer has created the file and put it
/// in WAL mode already; WAL is a property of the file, so readers inherit it.
pub(crate) fn open_reader(path: &Path) -> Result<Connection, CoreError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY
        | OpenFlags::SQLITE_OPEN_NO_MUTEX
        | OpenFlags::SQLITE_OPEN_URI;
    let conn = Connection::open_with_flags(path, flags).db()?;
    conn.busy_timeout(BUSY_TIMEOUT).db()?;
    keep_plans(&conn)?;
    Ok(conn)
}

fn stored_version(conn: &Connection) -> Result<i64, CoreError> {
    conn.query_row("PRAGMA user_version", [], |r| r.get(0)).db()
}

pub(crate) fn check_version(conn: &Connection) -> Result<i64, CoreError> {
    let version = stored_version(conn)?;
    if version > SCHEMA_VERSION {
        return Err(CoreError::Unavailable(format!(
            "the database schema is version {version}, newer than the {SCHEMA_VERSION} this \
             release knows; run the newer tresor release that wrote it"
        )));
    }
    Ok(version)
}

/// Applies the missing migrations in one transaction, so a crash leaves either the old or the
/// new schema, never half of one.
fn migrate(conn: &mut Connection) -> Result<(), CoreError> {
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .db()?;
    // Checked again inside the write lock: another process may have migrated meanwhile.
    let current = check_version(&tx)?;
    for (index, sql) in MIGRATIONS.iter().enumerate() {
        let number = index as i64 + 1;
        if number <= current {
            continue;
        }
        tx.execute_batch(sql).db()?;
        tracing::info!(migration = number, "applied sqlite schema migration");
    }
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)
        .db()?;
    tx.commit().db()
}

/// The migrations, in order; entry `i` brings the schema to version `i + 1`.
const MIGRATIONS: &[&str] = &[
    MIGRATION_1,
    MIGRATION_2,
    MIGRATION_3,
    MIGRATION_4,
    MIGRATION_5,
    MIGRATION_6,
];

/// The first schema. Keys are BLOBs so that they compare as bytes (memcmp), which is the
/// contract's key order. Namespace ids are random, so a reinstall never meets old rows.
const MIGRATION_1: &str = "
CREATE TABLE meta (
    name  TEXT PRIMARY KEY,
    value BLOB NOT NULL
);

-- Counters the backend keeps for itself (the global record version), out of `meta`, which
-- belongs to the service.
CREATE TABLE counters (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
INSERT INTO counters (name, value) VALUES ('record_version', 0);

CREATE TABLE namespaces (
    ns          INTEGER PRIMARY KEY,
    kind        TEXT NOT NULL,
    owner_id    TEXT NOT NULL,
    wrapped_key BLOB NOT NULL,
    created_at  INTEGER NOT NULL
);

CREATE TABLE apps (
    app_id     TEXT PRIMARY KEY,
    scopes     TEXT NOT NULL,
    ns         INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);

CREATE TABLE accounts (
    account_id TEXT PRIMARY KEY,
    ns         INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);

CREATE TABLE installations (
    installation_id TEXT PRIMARY KEY,
    app_id          TEXT NOT NULL,
    account_id      TEXT NOT NULL,
    ns              INTEGER NOT NULL UNIQUE,
    created_at      INTEGER NOT NULL,
    UNIQUE (app_id, account_id)
);
CREATE INDEX installations_by_account ON installations (account_id);

CREATE TABLE tokens (
    token_id        TEXT PRIMARY KEY,
    mac             BLOB NOT NULL,
    kind            TEXT NOT NULL,
    installation_id TEXT,
    ns              INTEGER,
    scopes          TEXT,
    expires_at      INTEGER,
    created_at      INTEGER NOT NULL
);
CREATE INDEX tokens_by_installation ON tokens (installation_id);
CREATE INDEX tokens_by_kind ON tokens (kind);

CREATE TABLE records (
    ns          INTEGER NOT NULL,
    store       INTEGER NOT NULL,
    key         BLOB NOT NULL,
    version     INTEGER NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    expires_at  INTEGER,
    value       BLOB NOT NULL,
    description BLOB,
    PRIMARY KEY (ns, store, key)
) WITHOUT ROWID;
CREATE INDEX records_by_expiry ON records (expires_at) WHERE expires_at IS NOT NULL;

CREATE TABLE audit (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    time            INTEGER NOT NULL,
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
";

/// Write-only credentials and OAuth providers. A credential lives in the namespace of its owner
/// (an installation's or an account's); `owner` and `app_id` say who stored it, `scopes` is a
/// JSON array like `apps.scopes`, `metadata` and `secret` are sealed. `lease_*` is the refresh
/// lease of single-flight token refreshes. A provider's document is operator configuration in
/// the clear; its client secret is sealed beside it.
const MIGRATION_2: &str = "
CREATE TABLE credentials (
    ns               INTEGER NOT NULL,
    key              BLOB NOT NULL,
    owner            TEXT NOT NULL,
    app_id           TEXT NOT NULL,
    provider         TEXT NOT NULL,
    kind             TEXT NOT NULL,
    version          INTEGER NOT NULL,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    expires_at       INTEGER,
    token_expires_at INTEGER,
    scopes           TEXT NOT NULL,
    needs_reconsent  INTEGER NOT NULL,
    metadata         BLOB NOT NULL,
    secret           BLOB NOT NULL,
    lease_until      INTEGER,
    lease_id         TEXT,
    PRIMARY KEY (ns, key)
) WITHOUT ROWID;
CREATE INDEX credentials_by_expiry ON credentials (expires_at) WHERE expires_at IS NOT NULL;

CREATE TABLE providers (
    name          TEXT PRIMARY KEY,
    document      BLOB NOT NULL,
    client_secret BLOB,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL
);
";

/// OAuth authorization-code flows. A flow belongs to the installation incarnation (`ns`) that
/// started it and dies with it. `state_mac` is the MAC of the single-use `state` (the state
/// itself is never stored), unique so a callback finds exactly one flow; `verifier` and
/// `access_token` are sealed, and the token is set to NULL once it was handed out (`taken`).
/// `status` is `pending`, `completed` or `failed`; `scopes` is a JSON array like
/// `credentials.scopes`. Flows are purged a day after `expires_at`, so that a late `complete`
/// still finds its flow and answers that it expired.
const MIGRATION_3: &str = "
CREATE TABLE oauth_flows (
    flow_id         TEXT PRIMARY KEY,
    ns              INTEGER NOT NULL,
    installation_id TEXT NOT NULL,
    provider        TEXT NOT NULL,
    store_key       BLOB NOT NULL,
    store_owner     TEXT NOT NULL,
    scopes          TEXT NOT NULL,
    return_to       TEXT,
    state_mac       BLOB NOT NULL UNIQUE,
    verifier        BLOB NOT NULL,
    status          TEXT NOT NULL,
    error           TEXT,
    access_token    BLOB,
    taken           INTEGER NOT NULL,
    expires_at      INTEGER NOT NULL,
    created_at      INTEGER NOT NULL
);
CREATE INDEX oauth_flows_by_ns ON oauth_flows (ns);
CREATE INDEX oauth_flows_by_expiry ON oauth_flows (expires_at);
";

/// The registry of server processes and the root key versions each holds (ids only, never key
/// material; `key_versions` is a JSON array of strings), so that a key rotation activates only a
/// version every live server holds. Per-process state: not exported.
const MIGRATION_4: &str = "
CREATE TABLE nodes (
    node_id      TEXT PRIMARY KEY,
    key_versions TEXT NOT NULL,
    started_at   INTEGER NOT NULL,
    last_seen    INTEGER NOT NULL
);
";

/// Records and credentials become ordinary rowid tables with their primary key in its own
/// index, and the sealed value (or secret) moves to the last column.
///
/// As `WITHOUT ROWID` tables their whole rows lived in the primary key's b-tree, and a row with
/// a 1 KiB value does not fit in an index cell: SQLite then reads every overflowing cell in
/// full (its overflow pages too, through `pread`, into a fresh allocation) for each key
/// comparison of a lookup's binary search. SQLite's own guidance keeps `WITHOUT ROWID` for rows
/// under about a twentieth of a page. Now a lookup compares small index cells and reads the
/// row once; metadata listings stop before the value, so its overflow pages are never read.
const MIGRATION_5: &str = "
CREATE TABLE records_v5 (
    ns          INTEGER NOT NULL,
    store       INTEGER NOT NULL,
    key         BLOB NOT NULL,
    version     INTEGER NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    expires_at  INTEGER,
    description BLOB,
    value       BLOB NOT NULL,
    PRIMARY KEY (ns, store, key)
);
INSERT INTO records_v5 (ns, store, key, version, created_at, updated_at, expires_at,
                        description, value)
    SELECT ns, store, key, version, created_at, updated_at, expires_at, description, value
    FROM records;
DROP TABLE records;
ALTER TABLE records_v5 RENAME TO records;
CREATE INDEX records_by_expiry ON records (expires_at) WHERE expires_at IS NOT NULL;

CREATE TABLE credentials_v5 (
    ns               INTEGER NOT NULL,
    key              BLOB NOT NULL,
    owner            TEXT NOT NULL,
    app_id           TEXT NOT NULL,
    provider         TEXT NOT NULL,
    kind             TEXT NOT NULL,
    version          INTEGER NOT NULL,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    expires_at       INTEGER,
    token_expires_at INTEGER,
    scopes           TEXT NOT NULL,
    needs_reconsent  INTEGER NOT NULL,
    lease_until      INTEGER,
    lease_id         TEXT,
    metadata         BLOB NOT NULL,
    secret           BLOB NOT NULL,
    PRIMARY KEY (ns, key)
);
INSERT INTO credentials_v5 (ns, key, owner, app_id, provider, kind, version, created_at,
                            updated_at, expires_at, token_expires_at, scopes, needs_reconsent,
                            lease_until, lease_id, metadata, secret)
    SELECT ns, key, owner, app_id, provider, kind, version, created_at, updated_at, expires_at,
           token_expires_at, scopes, needs_reconsent, lease_until, lease_id, metadata, secret
    FROM credentials;
DROP TABLE credentials;
ALTER TABLE credentials_v5 RENAME TO credentials;
CREATE INDEX credentials_by_expiry ON credentials (expires_at) WHERE expires_at IS NOT NULL;
";

/// The fences of installation key rotations (`tresor_core::sealed_rows`): while a namespace
/// has a row here whose `lease_until` has not passed, its commits wait. Transient: not exported.
const MIGRATION_6: &str = "
CREATE TABLE rekey_fences (
    ns          INTEGER PRIMARY KEY,
    lease_id    TEXT NOT NULL,
    lease_until INTEGER NOT NULL
);
";

/// Creates a database as an earlier release left it: the first `version` migrations, nothing
/// else.
#[cfg(test)]
pub(crate) fn create_version(path: &Path, version: usize) -> Result<Connection, CoreError> {
    let conn = Connection::open(path).db()?;
    for sql in &MIGRATIONS[..version] {
        conn.execute_batch(sql).db()?;
    }
    conn.pragma_update(None, "user_version", version as i64)
        .db()?;
    Ok(conn)
}

/// Sets `user_version` past what this release knows, to test the refusal.
#[cfg(test)]
pub(crate) fn force_version(path: &Path, version: i64) -> Result<(), CoreError> {
    let conn = Connection::open(path).db()?;
    conn.pragma_update(None, "user_version", version).db()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fresh_database_is_migrated_to_the_current_version() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let conn = open_writer(&path).unwrap();
        assert_eq!(stored_version(&conn).unwrap(), SCHEMA_VERSION);
        drop(conn);
        // Opening again applies nothing and keeps the version.
        let conn = open_writer(&path).unwrap();
        assert_eq!(stored_version(&conn).unwrap(), SCHEMA_VERSION);
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    fn table_names(conn: &Connection) -> Vec<String> {
        let mut stmt = conn
            .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
            .unwrap();
        let names = stmt.query_map([], |r| r.get(0)).unwrap();
        names.collect::<rusqlite::Result<_>>().unwrap()
    }

    #[test]
    fn a_version_1_database_is_migrated_and_keeps_its_data() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        {
            let conn = create_version(&path, 1).unwrap();
            conn.execute(
                "INSERT INTO records (ns, store, key, version, created_at, updated_at, value) \
                 VALUES (1, 1, x'6b', 7, 1, 1, x'00')",
                [],
            )
            .unwrap();
            conn.execute(
                "UPDATE counters SET value = 7 WHERE name = 'record_version'",
                [],
            )
            .unwrap();
            let tables = table_names(&conn);
            assert!(!tables.contains(&"credentials".to_owned()), "{tables:?}");
        }
        let conn = open_writer(&path).unwrap();
        assert_eq!(stored_version(&conn).unwrap(), SCHEMA_VERSION);
        let tables = table_names(&conn);
        for table in [
            "credentials",
            "providers",
            "oauth_flows",
            "records",
            "counters",
        ] {
            assert!(tables.contains(&table.to_owned()), "{table}: {tables:?}");
        }
        let index: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM sqlite_master \
                 WHERE type = 'index' AND name = 'credentials_by_expiry'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(index, 1);
        let kept: (i64, i64) = conn
            .query_row(
                "SELECT (SELECT version FROM records WHERE key = x'6b'), \
                        (SELECT value FROM counters WHERE name = 'record_version')",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!(kept, (7, 7), "the migration keeps records and the counter");
        conn.execute(
            "INSERT INTO credentials (ns, key, owner, app_id, provider, kind, version, \
             created_at, updated_at, scopes, needs_reconsent, metadata, secret) \
             VALUES (1, x'6b', 'installation', 'app', 'p', 'api_key', 8, 1, 1, '[]', 0, x'', x'')",
            [],
        )
        .unwrap();
        drop(conn);
        // Opening again applies nothing more.
        let conn = open_writer(&path).unwrap();
        assert_eq!(stored_version(&conn).unwrap(), SCHEMA_VERSION);
        let n: i64 = conn
            .query_row("SELECT COUNT(*) FROM credentials", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 1);
    }

    fn index_exists(conn: &Connection, name: &str) -> bool {
        conn.query_row(
            "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'index' AND name = ?1)",
            [name],
            |r| r.get(0),
        )
        .unwrap()
    }

    #[test]
    fn a_version_2_database_is_migrated_and_keeps_its_data() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        {
            let conn = create_version(&path, 2).unwrap();
            conn.execute(
                "INSERT INTO credentials (ns, key, owner, app_id, provider, kind, version, \
                 created_at, updated_at, scopes, needs_reconsent, metadata, secret, lease_until, \
                 lease_id) VALUES (1, x'6b', 'installation', 'app', 'p', 'oauth2', 9, 1, 1, '[]', \
                 0, x'', x'01', 5, 'lease')",
                [],
            )
            .unwrap();
            conn.execute(
                "UPDATE counters SET value = 9 WHERE name = 'record_version'",
                [],
            )
            .unwrap();
            let tables = table_names(&conn);
            assert!(!tables.contains(&"oauth_flows".to_owned()), "{tables:?}");
        }
        let conn = open_writer(&path).unwrap();
        assert_eq!(stored_version(&conn).unwrap(), SCHEMA_VERSION);
        let tables = table_names(&conn);
        for table in ["oauth_flows", "credentials", "providers", "records"] {
            assert!(tables.contains(&table.to_owned()), "{table}: {tables:?}");
        }
        for index in ["oauth_flows_by_ns", "oauth_flows_by_expiry"] {
            assert!(index_exists(&conn, index), "{index}");
        }
        let kept: (i64, i64, String, i64) = conn
            .query_row(
                "SELECT (SELECT version FROM credentials WHERE key = x'6b'), \
                        (SELECT lease_until FROM credentials WHERE key = x'6b'), \
                        (SELECT lease_id FROM credentials WHERE key = x'6b'), \
                        (SELECT value FROM counters WHERE name = 'record_version')",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .unwrap();
        assert_eq!(
            kept,
            (9, 5, "lease".to_owned(), 9),
            "the migration keeps credentials, their leases and the counter"
        );
        let insert_flow = |flow_id: &str, state_mac: &str| {
            conn.execute(
                "INSERT INTO oauth_flows (flow_id, ns, installation_id, provider, store_key, \
                 store_owner, scopes, state_mac, verifier, status, taken, expires_at, \
                 created_at) VALUES (?1, 1, 'i', 'p', x'6b', 'installation', '[]', \
                 CAST(?2 AS BLOB), x'02', 'pending', 0, 10, 1)",
                [flow_id, state_mac],
            )
        };
        insert_flow("f1", "s1").unwrap();
        assert!(
            insert_flow("f2", "s1").is_err(),
            "a state MAC belongs to one flow"
        );
        assert!(insert_flow("f1", "s2").is_err(), "a flow id is unique");
        drop(conn);
        // Opening again applies nothing more.
        let conn = open_writer(&path).unwrap();
        assert_eq!(stored_version(&conn).unwrap(), SCHEMA_VERSION);
        let n: i64 = conn
            .query_row("SELECT COUNT(*) FROM oauth_flows", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 1);
    }

    #[test]
    fn a_version_3_database_is_migrated_and_keeps_its_data() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        {
            let conn = create_version(&path, 3).unwrap();
            conn.execute_batch(
                "INSERT INTO records (ns, store, key, version, created_at, updated_at, value) \
                 VALUES (1, 1, x'6b', 11, 1, 1, x'00'); \
                 INSERT INTO oauth_flows (flow_id, ns, installation_id, provider, store_key, \
                 store_owner, scopes, state_mac, verifier, status, taken, expires_at, \
                 created_at) VALUES ('f1', 1, 'i', 'p', x'6b', 'installation', '[]', x'01', \
                 x'02', 'pending', 0, 10, 1); \
                 UPDATE counters SET value = 11 WHERE name = 'record_version';",
            )
            .unwrap();
            assert!(!table_names(&conn).contains(&"nodes".to_owned()));
        }
        let conn = open_writer(&path).unwrap();
        assert_eq!(stored_version(&conn).unwrap(), SCHEMA_VERSION);
        assert_eq!(SCHEMA_VERSION, 6);
        assert!(table_names(&conn).contains(&"nodes".to_owned()));
        let kept: (i64, i64, i64) = conn
            .query_row(
                "SELECT (SELECT version FROM records WHERE key = x'6b'), \
                        (SELECT COUNT(*) FROM oauth_flows), \
                        (SELECT value FROM counters WHERE name = 'record_version')",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap();
        assert_eq!(
            kept,
            (11, 1, 11),
            "the migration keeps records, flows and the counter"
        );
        conn.execute(
            "INSERT INTO nodes (node_id, key_versions, started_at, last_seen) \
             VALUES ('n1', '[\"v1\"]', 1, 1)",
            [],
        )
        .unwrap();
        assert!(
            conn.execute(
                "INSERT INTO nodes (node_id, key_versions, started_at, last_seen) \
                 VALUES ('n1', '[]', 2, 2)",
                [],
            )
            .is_err(),
            "a node id is unique"
        );
        drop(conn);
        let conn = open_writer(&path).unwrap();
        assert_eq!(stored_version(&conn).unwrap(), SCHEMA_VERSION);
        let n: i64 = conn
            .query_row("SELECT COUNT(*) FROM nodes", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 1);
    }

    /// Every released schema (1 to the current one) migrates: version 4 is the last before the
    /// rowid tables of version 5, which copy every record and credential column.
    #[test]
    fn a_version_4_database_is_migrated_and_keeps_its_data() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        {
            let conn = create_version(&path, 4).unwrap();
            conn.execute_batch(
                "INSERT INTO records (ns, store, key, version, created_at, updated_at, \
                 expires_at, description, value) VALUES (1, 2, x'6b', 7, 3, 4, 99, x'0d', x'0a0b'); \
                 INSERT INTO credentials (ns, key, owner, app_id, provider, kind, version, \
                 created_at, updated_at, expires_at, token_expires_at, scopes, needs_reconsent, \
                 lease_until, lease_id, metadata, secret) VALUES (1, x'63', 'installation', 'a', \
                 'p', 'oauth2', 8, 5, 6, NULL, 77, '[\"r\"]', 1, 12, 'l', x'0e', x'0f'); \
                 UPDATE counters SET value = 8 WHERE name = 'record_version';",
            )
            .unwrap();
        }
        let conn = open_writer(&path).unwrap();
        assert_eq!(stored_version(&conn).unwrap(), SCHEMA_VERSION);
        let record: (i64, i64, i64, i64, i64, Vec<u8>, Vec<u8>) = conn
            .query_row(
                "SELECT store, version, created_at, updated_at, expires_at, description, value \
                 FROM records WHERE ns = 1 AND key = x'6b'",
                [],
                |r| {
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        r.get(5)?,
                        r.get(6)?,
                    ))
                },
            )
            .unwrap();
        assert_eq!(record, (2, 7, 3, 4, 99, vec![0x0d], vec![0x0a, 0x0b]));
        let credential: (String, i64, i64, String, i64, i64, String, Vec<u8>, Vec<u8>) = conn
            .query_row(
                "SELECT kind, version, token_expires_at, scopes, needs_reconsent, lease_until, \
                 lease_id, metadata, secret FROM credentials WHERE ns = 1 AND key = x'63'",
                [],
                |r| {
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        r.get(5)?,
                        r.get(6)?,
                        r.get(7)?,
                        r.get(8)?,
                    ))
                },
            )
            .unwrap();
        assert_eq!(
            credential,
            (
                "oauth2".into(),
                8,
                77,
                "[\"r\"]".into(),
                1,
                12,
                "l".into(),
                vec![0x0e],
                vec![0x0f]
            )
        );
        let counter: i64 = conn
            .query_row(
                "SELECT value FROM counters WHERE name = 'record_version'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(counter, 8);
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        drop(open_writer(&path).unwrap());
        force_version(&path, SCHEMA_VERSION + 1).unwrap();
        let err = open_writer(&path).err().unwrap();
        assert_eq!(err.code(), tresor_core::ErrorCode::Unavailable);
        assert!(err.to_string().contains("newer"), "{err}");
    }
}
