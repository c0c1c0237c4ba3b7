//! The read queries, as plain functions over a connection: the read pool runs them on its
//! read-only connections, and the writer reuses them inside its transaction.

use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension, Row, params, params_from_iter};
use tresor_core::CoreError;
use tresor_core::audit::{AuditEvent, AuditQuery};
use tresor_core::backend::columns::{
    decode_flow_status, decode_list, decode_owner, decode_token_kind,
};
use tresor_core::backend::{
    AccountRow, AppRow, AuthRecord, CredentialRow, CredentialWrite, FlowRow, InstallationRow,
    ListQuery, NamespaceRow, NodeRow, ProviderRow, StoredRecord, TokenKind, TokenRow,
};
use tresor_core::model::{Millis, Ns, StoreKind};

use crate::error::SqlResultExt;

type Result<T> = std::result::Result<T, CoreError>;

/// The live row of one key, if any (`expires_at` null or after `now`).
pub(crate) fn read_record(
    conn: &Connection,
    ns: Ns,
    store: StoreKind,
    key: &[u8],
    now: Millis,
) -> Result<Option<StoredRecord>> {
    conn.prepare_cached(
        "SELECT version, created_at, updated_at, expires_at, value, description FROM records \
         WHERE ns = ?1 AND store = ?2 AND key = ?3 AND (expires_at IS NULL OR expires_at > ?4)",
    )
    .db()?
    .query_row(params![ns, store.code(), key, now], |r| {
        Ok(StoredRecord {
            key: key.to_vec(),
            version: get_version(r, 0)?,
            created_at: r.get(1)?,
            updated_at: r.get(2)?,
            expires_at: r.get(3)?,
            value: r.get(4)?,
            description: r.get(5)?,
        })
    })
    .optional()
    .db()
}

/// One page of live records' metadata in key byte order. The prefix becomes a key range (not a
/// `LIKE`), so the scan uses the primary key and stops at the end of the prefix.
pub(crate) fn list_records(
    conn: &Connection,
    ns: Ns,
    store: StoreKind,
    query: &ListQuery,
    now: Millis,
) -> Result<Vec<StoredRecord>> {
    if query.limit == 0 {
        return Ok(Vec::new());
    }
    let KeyRange {
        lower,
        exclusive,
        upper,
    } = KeyRange::of(query);
    let sql = match (exclusive, upper.is_some()) {
        (false, false) => LIST_FROM,
        (false, true) => LIST_FROM_TO,
        (true, false) => LIST_AFTER,
        (true, true) => LIST_AFTER_TO,
    };
    let limit = sql_limit(query.limit);
    let mut stmt = conn.prepare_cached(sql).db()?;
    let rows = match &upper {
        Some(upper) => stmt.query_map(
            params![ns, store.code(), lower, now, limit, upper],
            list_row,
        ),
        None => stmt.query_map(params![ns, store.code(), lower, now, limit], list_row),
    }
    .db()?;
    rows.collect::<rusqlite::Result<Vec<_>>>().db()
}

fn list_row(r: &Row<'_>) -> rusqlite::Result<StoredRecord> {
    Ok(StoredRecord {
        key: r.get(0)?,
        version: get_version(r, 1)?,
        created_at: r.get(2)?,
        updated_at: r.get(3)?,
        expires_at: r.get(4)?,
        // Lists carry metadata only; the value is never read.
        value: Vec::new(),
        description: r.get(5)?,
    })
}

/// Builds a list statement from its key bounds: `?3` the lower bound, `?6` the upper one.
macro_rules! list_sql {
    ($bounds:literal) => {
        concat!(
            "SELECT key, version, created_at, updated_at, expires_at, description FROM records \
             WHERE ns = ?1 AND store = ?2 AND (expires_at IS NULL OR expires_at > ?4) AND ",
            $bounds,
            " ORDER BY key LIMIT ?5"
        )
    };
}

const LIST_FROM: &str = list_sql!("key >= ?3");
const LIST_FROM_TO: &str = list_sql!("key >= ?3 AND key < ?6");
const LIST_AFTER: &str = list_sql!("key > ?3");
const LIST_AFTER_TO: &str = list_sql!("key > ?3 AND key < ?6");

/// The key bounds of a list page: a key range (not a `LIKE`), so the scan uses the primary key
/// and stops at the end of the prefix.
struct KeyRange<'q> {
    lower: &'q [u8],
    /// Whether `lower` itself is excluded (it is the cursor).
    exclusive: bool,
    /// Exclusive upper bound; `None` when the prefix has no end.
    upper: Option<Vec<u8>>,
}

impl<'q> KeyRange<'q> {
    fn of(query: &'q ListQuery) -> KeyRange<'q> {
        // Start after the cursor when it lies inside or past the prefix range, else at the prefix.
        let (lower, exclusive) = match &query.after {
            Some(after) if after.as_slice() >= query.prefix.as_slice() => (after.as_slice(), true),
            _ => (query.prefix.as_slice(), false),
        };
        KeyRange {
            lower,
            exclusive,
            upper: prefix_successor(&query.prefix),
        }
    }
}

/// A `LIMIT` argument: SQLite takes an i64.
fn sql_limit(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

/// The smallest byte string greater than every string starting with `prefix`, or `None` when
/// there is none (an empty prefix or one made only of 0xFF bytes).
pub(crate) fn prefix_successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut upper = prefix.to_vec();
    while let Some(last) = upper.pop() {
        if last < 0xFF {
            upper.push(last + 1);
            return Some(upper);
        }
    }
    None
}

/// A credential's columns but its secret (lists never read it), in [`credential_row`]'s order.
macro_rules! credential_meta_columns {
    () => {
        "ns, key, owner, app_id, provider, kind, version, created_at, updated_at, expires_at, \
         token_expires_at, scopes, needs_reconsent, metadata, lease_until, lease_id"
    };
}

/// The live credential under `key` in the first of `namespaces` that holds one: one primary-key
/// lookup per namespace, in the caller's order (an installation's own before its account's).
pub(crate) fn read_credential(
    conn: &Connection,
    namespaces: &[Ns],
    key: &[u8],
    now: Millis,
) -> Result<Option<CredentialRow>> {
    in_snapshot(conn, || {
        let mut stmt = conn
            .prepare_cached(concat!(
                "SELECT ",
                credential_meta_columns!(),
                ", secret FROM credentials \
                 WHERE ns = ?1 AND key = ?2 AND (expires_at IS NULL OR expires_at > ?3)"
            ))
            .db()?;
        for &ns in namespaces {
            let row = stmt
                .query_row(params![ns, key, now], |r| credential_row(r, true))
                .optional()
                .db()?;
            if let Some(row) = row {
                return row.map(Some);
            }
        }
        Ok(None)
    })
}

/// One page of live credentials of several namespaces, merged in key byte order (then by
/// namespace), without their secrets. Each namespace is a primary-key range scan of at most
/// `limit` rows; the merge keeps the first `limit`.
pub(crate) fn list_credentials(
    conn: &Connection,
    namespaces: &[Ns],
    query: &ListQuery,
    now: Millis,
) -> Result<Vec<CredentialRow>> {
    if query.limit == 0 {
        return Ok(Vec::new());
    }
    let KeyRange {
        lower,
        exclusive,
        upper,
    } = KeyRange::of(query);
    let sql = match (exclusive, upper.is_some()) {
        (false, false) => CREDENTIALS_FROM,
        (false, true) => CREDENTIALS_FROM_TO,
        (true, false) => CREDENTIALS_AFTER,
        (true, true) => CREDENTIALS_AFTER_TO,
    };
    let limit = sql_limit(query.limit);
    let mut merged = Vec::new();
    in_snapshot(conn, || {
        let mut stmt = conn.prepare_cached(sql).db()?;
        let mut seen: Vec<Ns> = Vec::with_capacity(namespaces.len());
        for &ns in namespaces {
            // A namespace named twice is listed once.
            if seen.contains(&ns) {
                continue;
            }
            seen.push(ns);
            let rows = match &upper {
                Some(upper) => {
                    stmt.query_map(params![ns, lower, now, limit, upper], list_credential_row)
                }
                None => stmt.query_map(params![ns, lower, now, limit], list_credential_row),
            }
            .db()?;
            for row in rows {
                merged.push(row.db()??);
            }
        }
        Ok(())
    })?;
    merged.sort_by(|a, b| a.write.key.cmp(&b.write.key).then(a.ns.cmp(&b.ns)));
    merged.truncate(query.limit);
    Ok(merged)
}

/// Builds a credential list statement from its key bounds: `?2` the lower bound, `?5` the upper
/// one. The secret is not among the columns.
macro_rules! credentials_sql {
    ($bounds:literal) => {
        concat!(
            "SELECT ",
            credential_meta_columns!(),
            " FROM credentials WHERE ns = ?1 AND (expires_at IS NULL OR expires_at > ?3) AND ",
            $bounds,
            " ORDER BY key LIMIT ?4"
        )
    };
}

const CREDENTIALS_FROM: &str = credentials_sql!("key >= ?2");
const CREDENTIALS_FROM_TO: &str = credentials_sql!("key >= ?2 AND key < ?5");
const CREDENTIALS_AFTER: &str = credentials_sql!("key > ?2");
const CREDENTIALS_AFTER_TO: &str = credentials_sql!("key > ?2 AND key < ?5");

/// Runs `read` on one snapshot of the database, so that its statements all see the same
/// commits (a key moved between two namespaces by one commit is seen once). Inside a transaction
/// already (the writer's), it simply runs there.
fn in_snapshot<T>(conn: &Connection, read: impl FnOnce() -> Result<T>) -> Result<T> {
    if !conn.is_autocommit() {
        return read();
    }
    let tx = conn.unchecked_transaction().db()?;
    let out = read()?;
    tx.commit().db()?;
    Ok(out)
}

/// A listed credential: everything but its secret, which was not even selected.
fn list_credential_row(r: &Row<'_>) -> rusqlite::Result<Result<CredentialRow>> {
    credential_row(r, false)
}

/// A credential row in the column order of `credential_meta_columns!`, followed by `secret`
/// when `with_secret`; without it the secret is left empty. The inner `Result` carries a
/// decoding failure of the stored owner or scopes.
fn credential_row(r: &Row<'_>, with_secret: bool) -> rusqlite::Result<Result<CredentialRow>> {
    let ns: Ns = r.get(0)?;
    let key: Vec<u8> = r.get(1)?;
    let owner: String = r.get(2)?;
    let app_id: String = r.get(3)?;
    let provider: String = r.get(4)?;
    let kind: String = r.get(5)?;
    let version = get_version(r, 6)?;
    let created_at: Millis = r.get(7)?;
    let updated_at: Millis = r.get(8)?;
    let expires_at: Option<Millis> = r.get(9)?;
    let token_expires_at: Option<Millis> = r.get(10)?;
    let scopes: String = r.get(11)?;
    let needs_reconsent: bool = r.get(12)?;
    let metadata: Vec<u8> = r.get(13)?;
    let lease_until: Option<Millis> = r.get(14)?;
    let lease_id: Option<String> = r.get(15)?;
    let secret: Vec<u8> = if with_secret { r.get(16)? } else { Vec::new() };
    Ok((|| {
        Ok(CredentialRow {
            ns,
            write: CredentialWrite {
                key,
                owner: decode_owner(&owner)?,
                app_id,
                provider,
                kind,
                token_expires_at,
                scopes: decode_list(&scopes)?,
                needs_reconsent,
                metadata,
                secret,
            },
            version,
            created_at,
            updated_at,
            expires_at,
            lease_until,
            lease_id,
        })
    })())
}

/// A flow's columns, in [`flow_row`]'s order.
const FLOW_COLUMNS: &str = "SELECT flow_id, ns, installation_id, provider, store_key, store_owner, \
     scopes, return_to, state_mac, verifier, status, error, access_token, taken, expires_at, \
     created_at FROM oauth_flows";

/// The flow with this id, whatever its status or expiry (the service judges).
pub(crate) fn flow_by_id(conn: &Connection, flow_id: &str) -> Result<Option<FlowRow>> {
    let row = conn
        .prepare_cached(&format!("{FLOW_COLUMNS} WHERE flow_id = ?1"))
        .db()?
        .query_row([flow_id], flow_row)
        .optional()
        .db()?;
    row.transpose()
}

/// The flow whose state MAC this is, whatever its status or expiry.
pub(crate) fn flow_by_state(conn: &Connection, state_mac: &[u8]) -> Result<Option<FlowRow>> {
    let row = conn
        .prepare_cached(&format!("{FLOW_COLUMNS} WHERE state_mac = ?1"))
        .db()?
        .query_row([state_mac], flow_row)
        .optional()
        .db()?;
    row.transpose()
}

pub(crate) fn flow_exists(conn: &Connection, flow_id: &str) -> Result<bool> {
    conn.prepare_cached("SELECT EXISTS (SELECT 1 FROM oauth_flows WHERE flow_id = ?1)")
        .db()?
        .query_row([flow_id], |r| r.get(0))
        .db()
}

pub(crate) fn flow_state_exists(conn: &Connection, state_mac: &[u8]) -> Result<bool> {
    conn.prepare_cached("SELECT EXISTS (SELECT 1 FROM oauth_flows WHERE state_mac = ?1)")
        .db()?
        .query_row([state_mac], |r| r.get(0))
        .db()
}

/// A flow row in the column order of [`FLOW_COLUMNS`]; the inner `Result` carries a decoding
/// failure of the stored owner, scopes or status.
fn flow_row(r: &Row<'_>) -> rusqlite::Result<Result<FlowRow>> {
    let flow_id: String = r.get(0)?;
    let ns: Ns = r.get(1)?;
    let installation_id: String = r.get(2)?;
    let provider: String = r.get(3)?;
    let store_key: Vec<u8> = r.get(4)?;
    let store_owner: String = r.get(5)?;
    let scopes: String = r.get(6)?;
    let return_to: Option<String> = r.get(7)?;
    let state_mac: Vec<u8> = r.get(8)?;
    let verifier: Vec<u8> = r.get(9)?;
    let status: String = r.get(10)?;
    let error: Option<String> = r.get(11)?;
    let access_token: Option<Vec<u8>> = r.get(12)?;
    let taken: bool = r.get(13)?;
    let expires_at: Millis = r.get(14)?;
    let created_at: Millis = r.get(15)?;
    Ok((|| {
        Ok(FlowRow {
            flow_id,
            ns,
            installation_id,
            provider,
            store_key,
            store_owner: decode_owner(&store_owner)?,
            scopes: decode_list(&scopes)?,
            return_to,
            state_mac,
            verifier,
            status: decode_flow_status(&status)?,
            error,
            access_token,
            taken,
            expires_at,
            created_at,
        })
    })())
}

const PROVIDER_COLUMNS: &str =
    "SELECT name, document, client_secret, created_at, updated_at FROM providers";

pub(crate) fn get_provider(conn: &Connection, name: &str) -> Result<Option<ProviderRow>> {
    conn.prepare_cached(&format!("{PROVIDER_COLUMNS} WHERE name = ?1"))
        .db()?
        .query_row([name], provider_row)
        .optional()
        .db()
}

pub(crate) fn list_providers(conn: &Connection) -> Result<Vec<ProviderRow>> {
    let mut stmt = conn
        .prepare_cached(&format!("{PROVIDER_COLUMNS} ORDER BY name"))
        .db()?;
    let rows = stmt.query_map([], provider_row).db()?;
    rows.collect::<rusqlite::Result<Vec<_>>>().db()
}

fn provider_row(r: &Row<'_>) -> rusqlite::Result<ProviderRow> {
    Ok(ProviderRow {
        name: r.get(0)?,
        document: r.get(1)?,
        client_secret: r.get(2)?,
        created_at: r.get(3)?,
        updated_at: r.get(4)?,
    })
}

pub(crate) fn meta_get(conn: &Connection, name: &str) -> Result<Option<Vec<u8>>> {
    conn.prepare_cached("SELECT value FROM meta WHERE name = ?1")
        .db()?
        .query_row([name], |r| r.get(0))
        .optional()
        .db()
}

pub(crate) fn namespace_key(conn: &Connection, ns: Ns) -> Result<Option<Vec<u8>>> {
    conn.prepare_cached("SELECT wrapped_key FROM namespaces WHERE ns = ?1")
        .db()?
        .query_row([ns], |r| r.get(0))
        .optional()
        .db()
}

/// Up to `limit` namespaces whose wrapped key starts with `prefix` (bytes: `substr` of a BLOB
/// counts bytes). For the start-up check of the root key.
pub(crate) fn namespace_keys_with_prefix(
    conn: &Connection,
    prefix: &[u8],
    limit: usize,
) -> Result<Vec<NamespaceRow>> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    conn.prepare_cached(
        "SELECT ns, wrapped_key FROM namespaces \
         WHERE substr(wrapped_key, 1, length(?1)) = ?1 LIMIT ?2",
    )
    .db()?
    .query_map(params![prefix, limit], namespace_row)
    .db()?
    .collect::<rusqlite::Result<_>>()
    .db()
}

/// One namespace whose wrapped key starts with none of `prefixes`. A scan of the namespaces
/// (small rows), once per start.
pub(crate) fn namespace_key_without_prefixes(
    conn: &Connection,
    prefixes: &[Vec<u8>],
) -> Result<Option<NamespaceRow>> {
    let mut sql = String::from("SELECT ns, wrapped_key FROM namespaces WHERE NOT (0");
    for n in 1..=prefixes.len() {
        sql.push_str(&format!(" OR substr(wrapped_key, 1, length(?{n})) = ?{n}"));
    }
    sql.push_str(") LIMIT 1");
    conn.prepare(&sql)
        .db()?
        .query_row(params_from_iter(prefixes), namespace_row)
        .optional()
        .db()
}

/// See [`tresor_core::Backend::namespace_keys_not_under`].
pub(crate) fn namespace_keys_not_under(
    conn: &Connection,
    prefix: &[u8],
    after: Ns,
    limit: usize,
) -> Result<Vec<NamespaceRow>> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    conn.prepare_cached(
        "SELECT ns, wrapped_key FROM namespaces \
         WHERE ns > ?2 AND substr(wrapped_key, 1, length(?1)) <> ?1 ORDER BY ns LIMIT ?3",
    )
    .db()?
    .query_map(params![prefix, after, limit], namespace_row)
    .db()?
    .collect::<rusqlite::Result<_>>()
    .db()
}

/// See [`tresor_core::Backend::count_namespace_keys`]: one scan of the namespaces.
pub(crate) fn count_namespace_keys(
    conn: &Connection,
    prefixes: &[Vec<u8>],
) -> Result<(Vec<u64>, u64)> {
    let mut sql = String::from("SELECT count(*)");
    for n in 1..=prefixes.len() {
        sql.push_str(&format!(
            ", coalesce(sum(substr(wrapped_key, 1, length(?{n})) = ?{n}), 0)"
        ));
    }
    sql.push_str(" FROM namespaces");
    let counts: Vec<i64> = conn
        .prepare(&sql)
        .db()?
        .query_row(params_from_iter(prefixes), |r| {
            (0..=prefixes.len()).map(|i| r.get::<_, i64>(i)).collect()
        })
        .db()?;
    let as_u64 = |n: &i64| u64::try_from(*n).unwrap_or(0);
    let total = counts.first().map_or(0, as_u64);
    Ok((counts.iter().skip(1).map(as_u64).collect(), total))
}

fn namespace_row(r: &Row<'_>) -> rusqlite::Result<NamespaceRow> {
    Ok(NamespaceRow {
        ns: r.get(0)?,
        wrapped_key: r.get(1)?,
    })
}

/// The token with its live installation, app and account, in one statement. An installation
/// token whose installation incarnation (or app, or account) is gone is no token at all.
pub(crate) fn authenticate(conn: &Connection, token_id: &str) -> Result<Option<AuthRecord>> {
    let row = conn
        .prepare_cached(
            "SELECT t.token_id, t.mac, t.kind, t.installation_id, t.ns, t.scopes, t.expires_at, \
                    t.created_at, \
                    i.installation_id, i.app_id, i.account_id, i.ns, i.created_at, \
                    a.scopes, a.ns, c.ns \
             FROM tokens t \
             LEFT JOIN installations i ON i.installation_id = t.installation_id AND i.ns = t.ns \
             LEFT JOIN apps a ON a.app_id = i.app_id \
             LEFT JOIN accounts c ON c.account_id = i.account_id \
             WHERE t.token_id = ?1",
        )
        .db()?
        .query_row([token_id], |r| {
            let token = token_row(r)?;
            let installation = match r.get::<_, Option<String>>(8)? {
                Some(installation_id) => Some(InstallationRow {
                    installation_id,
                    app_id: r.get(9)?,
                    account_id: r.get(10)?,
                    ns: r.get(11)?,
                    created_at: r.get(12)?,
                }),
                None => None,
            };
            let app_scopes: Option<String> = r.get(13)?;
            let app_ns: Option<Ns> = r.get(14)?;
            let account_ns: Option<Ns> = r.get(15)?;
            Ok((token, installation, app_scopes, app_ns, account_ns))
        })
        .optional()
        .db()?;
    let Some((token, installation, app_scopes, app_ns, account_ns)) = row else {
        return Ok(None);
    };
    let token = token?;
    if token.kind == TokenKind::Installation
        && (installation.is_none() || app_ns.is_none() || account_ns.is_none())
    {
        return Ok(None);
    }
    let app_scopes = match app_scopes {
        Some(s) => decode_list(&s)?,
        None => Vec::new(),
    };
    Ok(Some(AuthRecord {
        token,
        installation,
        app_scopes,
        app_ns,
        account_ns,
    }))
}

pub(crate) fn has_admin_token(conn: &Connection) -> Result<bool> {
    conn.prepare_cached("SELECT EXISTS (SELECT 1 FROM tokens WHERE kind = 'admin')")
        .db()?
        .query_row([], |r| r.get(0))
        .db()
}

pub(crate) fn token_exists(conn: &Connection, token_id: &str) -> Result<bool> {
    conn.prepare_cached("SELECT EXISTS (SELECT 1 FROM tokens WHERE token_id = ?1)")
        .db()?
        .query_row([token_id], |r| r.get(0))
        .db()
}

const APP_COLUMNS: &str = "SELECT app_id, scopes, ns, created_at, updated_at FROM apps";

pub(crate) fn get_app(conn: &Connection, app_id: &str) -> Result<Option<AppRow>> {
    let row = conn
        .prepare_cached(&format!("{APP_COLUMNS} WHERE app_id = ?1"))
        .db()?
        .query_row([app_id], app_row)
        .optional()
        .db()?;
    row.transpose()
}

pub(crate) fn list_apps(conn: &Connection) -> Result<Vec<AppRow>> {
    let mut stmt = conn
        .prepare_cached(&format!("{APP_COLUMNS} ORDER BY app_id"))
        .db()?;
    let rows = stmt.query_map([], app_row).db()?;
    rows.collect::<rusqlite::Result<Vec<_>>>()
        .db()?
        .into_iter()
        .collect()
}

const ACCOUNT_COLUMNS: &str = "SELECT account_id, ns, created_at, updated_at FROM accounts";

pub(crate) fn get_account(conn: &Connection, account_id: &str) -> Result<Option<AccountRow>> {
    conn.prepare_cached(&format!("{ACCOUNT_COLUMNS} WHERE account_id = ?1"))
        .db()?
        .query_row([account_id], account_row)
        .optional()
        .db()
}

pub(crate) fn list_accounts(conn: &Connection) -> Result<Vec<AccountRow>> {
    let mut stmt = conn
        .prepare_cached(&format!("{ACCOUNT_COLUMNS} ORDER BY account_id"))
        .db()?;
    let rows = stmt.query_map([], account_row).db()?;
    rows.collect::<rusqlite::Result<Vec<_>>>().db()
}

const INSTALLATION_COLUMNS: &str =
    "SELECT installation_id, app_id, account_id, ns, created_at FROM installations";

pub(crate) fn get_installation(
    conn: &Connection,
    installation_id: &str,
) -> Result<Option<InstallationRow>> {
    conn.prepare_cached(&format!(
        "{INSTALLATION_COLUMNS} WHERE installation_id = ?1"
    ))
    .db()?
    .query_row([installation_id], installation_row)
    .optional()
    .db()
}

/// The installation of an (app, account) pair: there is at most one.
pub(crate) fn installation_of_pair(
    conn: &Connection,
    app_id: &str,
    account_id: &str,
) -> Result<Option<InstallationRow>> {
    conn.prepare_cached(&format!(
        "{INSTALLATION_COLUMNS} WHERE app_id = ?1 AND account_id = ?2"
    ))
    .db()?
    .query_row([app_id, account_id], installation_row)
    .optional()
    .db()
}

pub(crate) fn list_installations(conn: &Connection) -> Result<Vec<InstallationRow>> {
    installations_where(conn, "ORDER BY installation_id", None)
}

pub(crate) fn installations_of_app(
    conn: &Connection,
    app_id: &str,
) -> Result<Vec<InstallationRow>> {
    installations_where(conn, "WHERE app_id = ?1", Some(app_id))
}

pub(crate) fn installations_of_account(
    conn: &Connection,
    account_id: &str,
) -> Result<Vec<InstallationRow>> {
    installations_where(conn, "WHERE account_id = ?1", Some(account_id))
}

fn installations_where(
    conn: &Connection,
    clause: &str,
    param: Option<&str>,
) -> Result<Vec<InstallationRow>> {
    let mut stmt = conn
        .prepare_cached(&format!("{INSTALLATION_COLUMNS} {clause}"))
        .db()?;
    let rows = match param {
        Some(p) => stmt.query_map([p], installation_row),
        None => stmt.query_map([], installation_row),
    }
    .db()?;
    rows.collect::<rusqlite::Result<Vec<_>>>().db()
}

/// Audit events matching the filters, oldest (lowest id) first. Only the filters that are set
/// appear in the SQL, so each combination gets its own cached plan that can use an index.
pub(crate) fn audit_query(conn: &Connection, query: &AuditQuery) -> Result<Vec<AuditEvent>> {
    if query.limit == 0 {
        return Ok(Vec::new());
    }
    let mut sql = String::from(
        "SELECT id, time, request_id, token_id, app_id, account_id, installation_id, operation, \
         store, key, status, remote_addr FROM audit WHERE 1 = 1",
    );
    let mut args: Vec<Value> = Vec::new();
    let mut filter = |clause: &str, value: Value| {
        args.push(value);
        sql.push_str(&format!(" AND {clause} ?{}", args.len()));
    };
    if let Some(id) = &query.installation_id {
        filter("installation_id =", Value::Text(id.clone()));
    }
    if let Some(id) = &query.account_id {
        filter("account_id =", Value::Text(id.clone()));
    }
    if let Some(since) = query.since {
        filter("time >=", Value::Integer(since));
    }
    if let Some(until) = query.until {
        filter("time <", Value::Integer(until));
    }
    if let Some(after) = query.after {
        filter("id >", Value::Integer(after));
    }
    args.push(Value::Integer(
        i64::try_from(query.limit).unwrap_or(i64::MAX),
    ));
    sql.push_str(&format!(" ORDER BY id LIMIT ?{}", args.len()));
    let mut stmt = conn.prepare_cached(&sql).db()?;
    let rows = stmt
        .query_map(params_from_iter(args), |r| {
            Ok(AuditEvent {
                id: r.get(0)?,
                time: r.get(1)?,
                request_id: r.get(2)?,
                token_id: r.get(3)?,
                app_id: r.get(4)?,
                account_id: r.get(5)?,
                installation_id: r.get(6)?,
                operation: r.get(7)?,
                store: r.get(8)?,
                key: r.get(9)?,
                status: r.get(10)?,
                remote_addr: r.get(11)?,
            })
        })
        .db()?;
    rows.collect::<rusqlite::Result<Vec<_>>>().db()
}

/// Every registered server process, in `node_id` order.
pub(crate) fn list_nodes(conn: &Connection) -> Result<Vec<NodeRow>> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT node_id, key_versions, started_at, last_seen FROM nodes ORDER BY node_id",
        )
        .db()?;
    let rows = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get(2)?,
                r.get(3)?,
            ))
        })
        .db()?;
    rows.collect::<rusqlite::Result<Vec<_>>>()
        .db()?
        .into_iter()
        .map(|(node_id, versions, started_at, last_seen)| {
            let key_versions = serde_json::from_str(&versions).map_err(|e| {
                CoreError::internal(format!("stored key versions are not a JSON array: {e}"))
            })?;
            Ok(NodeRow {
                node_id,
                key_versions,
                started_at,
                last_seen,
            })
        })
        .collect()
}

/// Versions are stored as SQLite integers (i64) and are always positive.
fn get_version(r: &Row<'_>, idx: usize) -> rusqlite::Result<u64> {
    let v: i64 = r.get(idx)?;
    u64::try_from(v).map_err(|_| rusqlite::Error::IntegralValueOutOfRange(idx, v))
}

/// A token row; the inner `Result` carries a decoding failure of stored JSON or kind.
fn token_row(r: &Row<'_>) -> rusqlite::Result<Result<TokenRow>> {
    let kind: String = r.get(2)?;
    let scopes: Option<String> = r.get(5)?;
    let token_id: String = r.get(0)?;
    let mac: Vec<u8> = r.get(1)?;
    let installation_id: Option<String> = r.get(3)?;
    let ns: Option<Ns> = r.get(4)?;
    let expires_at: Option<Millis> = r.get(6)?;
    let created_at: Millis = r.get(7)?;
    Ok((|| {
        let kind = decode_token_kind(&kind)?;
        let scopes = scopes.as_deref().map(decode_list).transpose()?;
        Ok(TokenRow {
            token_id,
            mac,
            kind,
            installation_id,
            ns,
            scopes,
            expires_at,
            created_at,
        })
    })())
}

fn app_row(r: &Row<'_>) -> rusqlite::Result<Result<AppRow>> {
    let app_id: String = r.get(0)?;
    let scopes: String = r.get(1)?;
    let ns: Ns = r.get(2)?;
    let created_at: Millis = r.get(3)?;
    let updated_at: Millis = r.get(4)?;
    Ok(decode_list(&scopes).map(|scopes| AppRow {
        app_id,
        scopes,
        ns,
        created_at,
        updated_at,
    }))
}

fn account_row(r: &Row<'_>) -> rusqlite::Result<AccountRow> {
    Ok(AccountRow {
        account_id: r.get(0)?,
        ns: r.get(1)?,
        created_at: r.get(2)?,
        updated_at: r.get(3)?,
    })
}

fn installation_row(r: &Row<'_>) -> rusqlite::Result<InstallationRow> {
    Ok(InstallationRow {
        installation_id: r.get(0)?,
        app_id: r.get(1)?,
        account_id: r.get(2)?,
        ns: r.get(3)?,
        created_at: r.get(4)?,
    })
}

#[cfg(test)]
mod tests {
    use super::prefix_successor;

    #[test]
    fn prefix_successors() {
        let check = |prefix: &[u8], want: Option<&[u8]>| {
            assert_eq!(prefix_successor(prefix).as_deref(), want, "{prefix:?}");
        };
        check(b"", None);
        check(b"a", Some(b"b"));
        check(b"ab", Some(b"ac"));
        check(&[0x61, 0xFF], Some(b"b"));
        check(&[0xFF, 0xFF], None);
        check(&[0xC3, 0xBF], Some(&[0xC3, 0xC0]));
    }
}
