//! The read queries, as functions over a pooled connection or an open transaction (anything
//! that is a [`GenericClient`]), and the row decoders the write path shares.
//!
//! Liveness is judged on the database's clock ([`NOW_MILLIS_SQL`]), so servers whose clocks
//! disagree still agree on what has expired. Keys are `BYTEA`: ranges and `ORDER BY key` follow
//! byte order, and a prefix becomes a key range, never a `LIKE`.

use deadpool_postgres::GenericClient;
use tokio_postgres::Row;
use tresor_core::CoreError;
use tresor_core::audit::{AuditEvent, AuditQuery};
use tresor_core::backend::columns::{
    decode_flow_status, decode_list, decode_owner, decode_token_kind,
};
use tresor_core::backend::{
    AccountRow, AppRow, AuthRecord, CredentialRow, CredentialWrite, FlowRow, InstallationRow,
    ListQuery, NamespaceRow, NodeRow, ProviderRow, StoredRecord, TokenKind, TokenRow,
};
use tresor_core::model::{Ns, StoreKind};

use crate::error::TxError;

/// Reads run inside write transactions too, where a serialization failure must reach the retry
/// loop: so they answer [`TxError`], which the read path turns into a [`CoreError`].
type Result<T> = std::result::Result<T, TxError>;

/// "Now" on the database's clock in milliseconds, as a SQL expression.
macro_rules! now_millis {
    () => {
        "(floor(extract(epoch FROM clock_timestamp()) * 1000)::BIGINT)"
    };
}

/// A live row: no expiry, or one after the database's clock.
macro_rules! live {
    () => {
        concat!("(expires_at IS NULL OR expires_at > ", now_millis!(), ")")
    };
}

pub(crate) async fn read_record(
    c: &impl GenericClient,
    ns: Ns,
    store: StoreKind,
    key: &[u8],
) -> Result<Option<StoredRecord>> {
    let stmt = c
        .prepare_cached(concat!(
            "SELECT version, created_at, updated_at, expires_at, value, description FROM records \
             WHERE ns = $1 AND store = $2 AND key = $3 AND ",
            live!()
        ))
        .await?;
    let row = c.query_opt(&stmt, &[&ns, &store_code(store), &key]).await?;
    row.map(|r| {
        Ok(StoredRecord {
            key: key.to_vec(),
            version: version(&r, 0)?,
            created_at: r.try_get(1)?,
            updated_at: r.try_get(2)?,
            expires_at: r.try_get(3)?,
            value: r.try_get(4)?,
            description: r.try_get(5)?,
        })
    })
    .transpose()
}

/// The key bounds of a list page: start after the cursor when it lies inside or past the prefix
/// range, else at the prefix; stop before the prefix's successor.
pub(crate) struct KeyRange<'q> {
    pub(crate) lower: &'q [u8],
    pub(crate) exclusive: bool,
    pub(crate) upper: Option<Vec<u8>>,
}

impl<'q> KeyRange<'q> {
    pub(crate) fn of(query: &'q ListQuery) -> KeyRange<'q> {
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

    /// The SQL condition on `key`, with the lower bound as `$lo` and the upper one as `$hi`.
    fn condition(&self, lo: usize, hi: usize) -> String {
        let op = if self.exclusive { ">" } else { ">=" };
        match self.upper {
            Some(_) => format!("key {op} ${lo} AND key < ${hi}"),
            None => format!("key {op} ${lo}"),
        }
    }
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

fn sql_limit(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

pub(crate) async fn list_records(
    c: &impl GenericClient,
    ns: Ns,
    store: StoreKind,
    query: &ListQuery,
) -> Result<Vec<StoredRecord>> {
    if query.limit == 0 {
        return Ok(Vec::new());
    }
    let range = KeyRange::of(query);
    let sql = format!(
        "SELECT key, version, created_at, updated_at, expires_at, description FROM records \
         WHERE ns = $1 AND store = $2 AND {} AND {} ORDER BY key LIMIT $4",
        live!(),
        range.condition(3, 5)
    );
    let stmt = c.prepare_cached(&sql).await?;
    let code = store_code(store);
    let limit = sql_limit(query.limit);
    let rows = match &range.upper {
        Some(upper) => {
            c.query(&stmt, &[&ns, &code, &range.lower, &limit, upper])
                .await?
        }
        None => c.query(&stmt, &[&ns, &code, &range.lower, &limit]).await?,
    };
    rows.iter()
        .map(|r| {
            Ok(StoredRecord {
                key: r.try_get(0)?,
                version: version(r, 1)?,
                created_at: r.try_get(2)?,
                updated_at: r.try_get(3)?,
                expires_at: r.try_get(4)?,
                // Lists carry metadata only; the value is never read.
                value: Vec::new(),
                description: r.try_get(5)?,
            })
        })
        .collect()
}

/// A credential's columns but its secret, in [`credential_row`]'s order.
macro_rules! credential_meta_columns {
    () => {
        "ns, key, owner, app_id, provider, kind, version, created_at, updated_at, expires_at, \
         token_expires_at, scopes, needs_reconsent, metadata, lease_until, lease_id"
    };
}

/// The live credential under `key` in the first of `namespaces` that holds one, read in one
/// statement (one snapshot).
pub(crate) async fn read_credential(
    c: &impl GenericClient,
    namespaces: &[Ns],
    key: &[u8],
) -> Result<Option<CredentialRow>> {
    if namespaces.is_empty() {
        return Ok(None);
    }
    let stmt = c
        .prepare_cached(concat!(
            "SELECT ",
            credential_meta_columns!(),
            ", secret FROM credentials WHERE ns = ANY($1) AND key = $2 AND ",
            live!()
        ))
        .await?;
    let rows = c.query(&stmt, &[&namespaces, &key]).await?;
    let mut found: Vec<CredentialRow> = rows
        .iter()
        .map(|r| credential_row(r, true))
        .collect::<Result<_>>()?;
    // The caller's order decides: an installation's own credential before its account's.
    found.sort_by_key(|row| namespaces.iter().position(|ns| *ns == row.ns));
    Ok(found.into_iter().next())
}

/// One page of live credentials of several namespaces, merged in key byte order (then by
/// namespace), without their secrets, in one statement.
pub(crate) async fn list_credentials(
    c: &impl GenericClient,
    namespaces: &[Ns],
    query: &ListQuery,
) -> Result<Vec<CredentialRow>> {
    if query.limit == 0 || namespaces.is_empty() {
        return Ok(Vec::new());
    }
    let range = KeyRange::of(query);
    let sql = format!(
        concat!(
            "SELECT ",
            credential_meta_columns!(),
            " FROM credentials WHERE ns = ANY($1) AND {} AND {} ORDER BY key, ns LIMIT $3"
        ),
        live!(),
        range.condition(2, 4)
    );
    let stmt = c.prepare_cached(&sql).await?;
    let limit = sql_limit(query.limit);
    let rows = match &range.upper {
        Some(upper) => {
            c.query(&stmt, &[&namespaces, &range.lower, &limit, upper])
                .await?
        }
        None => c.query(&stmt, &[&namespaces, &range.lower, &limit]).await?,
    };
    rows.iter().map(|r| credential_row(r, false)).collect()
}

/// A credential row in the order of `credential_meta_columns!`, then `secret` when
/// `with_secret` (else the secret is left empty).
fn credential_row(r: &Row, with_secret: bool) -> Result<CredentialRow> {
    let owner: String = r.try_get(2)?;
    let scopes: String = r.try_get(11)?;
    Ok(CredentialRow {
        ns: r.try_get(0)?,
        write: CredentialWrite {
            key: r.try_get(1)?,
            owner: decode_owner(&owner)?,
            app_id: r.try_get(3)?,
            provider: r.try_get(4)?,
            kind: r.try_get(5)?,
            token_expires_at: r.try_get(10)?,
            scopes: decode_list(&scopes)?,
            needs_reconsent: r.try_get(12)?,
            metadata: r.try_get(13)?,
            secret: if with_secret {
                r.try_get(16)?
            } else {
                Vec::new()
            },
        },
        version: version(r, 6)?,
        created_at: r.try_get(7)?,
        updated_at: r.try_get(8)?,
        expires_at: r.try_get(9)?,
        lease_until: r.try_get(14)?,
        lease_id: r.try_get(15)?,
    })
}

const FLOW_COLUMNS: &str = "SELECT flow_id, ns, installation_id, provider, store_key, store_owner, \
     scopes, return_to, state_mac, verifier, status, error, access_token, taken, expires_at, \
     created_at FROM oauth_flows";

pub(crate) async fn flow_by_id(c: &impl GenericClient, flow_id: &str) -> Result<Option<FlowRow>> {
    let stmt = c
        .prepare_cached(&format!("{FLOW_COLUMNS} WHERE flow_id = $1"))
        .await?;
    let row = c.query_opt(&stmt, &[&flow_id]).await?;
    row.as_ref().map(flow_row).transpose()
}

pub(crate) async fn flow_by_state(
    c: &impl GenericClient,
    state_mac: &[u8],
) -> Result<Option<FlowRow>> {
    let stmt = c
        .prepare_cached(&format!("{FLOW_COLUMNS} WHERE state_mac = $1"))
        .await?;
    let row = c.query_opt(&stmt, &[&state_mac]).await?;
    row.as_ref().map(flow_row).transpose()
}

fn flow_row(r: &Row) -> Result<FlowRow> {
    let store_owner: String = r.try_get(5)?;
    let scopes: String = r.try_get(6)?;
    let status: String = r.try_get(10)?;
    Ok(FlowRow {
        flow_id: r.try_get(0)?,
        ns: r.try_get(1)?,
        installation_id: r.try_get(2)?,
        provider: r.try_get(3)?,
        store_key: r.try_get(4)?,
        store_owner: decode_owner(&store_owner)?,
        scopes: decode_list(&scopes)?,
        return_to: r.try_get(7)?,
        state_mac: r.try_get(8)?,
        verifier: r.try_get(9)?,
        status: decode_flow_status(&status)?,
        error: r.try_get(11)?,
        access_token: r.try_get(12)?,
        taken: r.try_get(13)?,
        expires_at: r.try_get(14)?,
        created_at: r.try_get(15)?,
    })
}

const PROVIDER_COLUMNS: &str =
    "SELECT name, document, client_secret, created_at, updated_at FROM providers";

pub(crate) async fn get_provider(
    c: &impl GenericClient,
    name: &str,
) -> Result<Option<ProviderRow>> {
    let stmt = c
        .prepare_cached(&format!("{PROVIDER_COLUMNS} WHERE name = $1"))
        .await?;
    let row = c.query_opt(&stmt, &[&name]).await?;
    row.as_ref().map(provider_row).transpose()
}

pub(crate) async fn list_providers(c: &impl GenericClient) -> Result<Vec<ProviderRow>> {
    let stmt = c
        .prepare_cached(&format!("{PROVIDER_COLUMNS} ORDER BY name"))
        .await?;
    c.query(&stmt, &[])
        .await?
        .iter()
        .map(provider_row)
        .collect()
}

fn provider_row(r: &Row) -> Result<ProviderRow> {
    Ok(ProviderRow {
        name: r.try_get(0)?,
        document: r.try_get(1)?,
        client_secret: r.try_get(2)?,
        created_at: r.try_get(3)?,
        updated_at: r.try_get(4)?,
    })
}

pub(crate) async fn meta_get(c: &impl GenericClient, name: &str) -> Result<Option<Vec<u8>>> {
    let stmt = c
        .prepare_cached("SELECT value FROM meta WHERE name = $1")
        .await?;
    let row = c.query_opt(&stmt, &[&name]).await?;
    Ok(row.map(|r| r.try_get(0)).transpose()?)
}

pub(crate) async fn namespace_key(c: &impl GenericClient, ns: Ns) -> Result<Option<Vec<u8>>> {
    let stmt = c
        .prepare_cached("SELECT wrapped_key FROM namespaces WHERE ns = $1")
        .await?;
    let row = c.query_opt(&stmt, &[&ns]).await?;
    Ok(row.map(|r| r.try_get(0)).transpose()?)
}

/// Up to `limit` namespaces whose wrapped key starts with `prefix`. For the start-up check of
/// the root key.
pub(crate) async fn namespace_keys_with_prefix(
    c: &impl GenericClient,
    prefix: &[u8],
    limit: usize,
) -> Result<Vec<NamespaceRow>> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let stmt = c
        .prepare_cached(
            "SELECT ns, wrapped_key FROM namespaces \
             WHERE substring(wrapped_key FROM 1 FOR length($1::BYTEA)) = $1::BYTEA LIMIT $2",
        )
        .await?;
    c.query(&stmt, &[&prefix, &limit])
        .await?
        .iter()
        .map(namespace_row)
        .collect()
}

/// One namespace whose wrapped key starts with none of `prefixes`: a scan of the namespaces
/// (small rows), once per start.
pub(crate) async fn namespace_key_without_prefixes(
    c: &impl GenericClient,
    prefixes: &[Vec<u8>],
) -> Result<Option<NamespaceRow>> {
    let mut sql = String::from("SELECT ns, wrapped_key FROM namespaces WHERE NOT (FALSE");
    for n in 1..=prefixes.len() {
        sql.push_str(&format!(
            " OR substring(wrapped_key FROM 1 FOR length(${n}::BYTEA)) = ${n}::BYTEA"
        ));
    }
    sql.push_str(") LIMIT 1");
    let params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = prefixes
        .iter()
        .map(|p| p as &(dyn tokio_postgres::types::ToSql + Sync))
        .collect();
    let row = c.query_opt(sql.as_str(), &params).await?;
    row.as_ref().map(namespace_row).transpose()
}

/// See [`tresor_core::Backend::namespace_keys_not_under`].
pub(crate) async fn namespace_keys_not_under(
    c: &impl GenericClient,
    prefix: &[u8],
    after: Ns,
    limit: usize,
) -> Result<Vec<NamespaceRow>> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let stmt = c
        .prepare_cached(
            "SELECT ns, wrapped_key FROM namespaces WHERE ns > $2 \
             AND substring(wrapped_key FROM 1 FOR length($1::BYTEA)) <> $1::BYTEA \
             ORDER BY ns LIMIT $3",
        )
        .await?;
    c.query(&stmt, &[&prefix, &after, &limit])
        .await?
        .iter()
        .map(namespace_row)
        .collect()
}

/// See [`tresor_core::Backend::count_namespace_keys`]: one scan of the namespaces.
pub(crate) async fn count_namespace_keys(
    c: &impl GenericClient,
    prefixes: &[Vec<u8>],
) -> Result<(Vec<u64>, u64)> {
    let mut sql = String::from("SELECT count(*)");
    for n in 1..=prefixes.len() {
        sql.push_str(&format!(
            ", count(*) FILTER (WHERE substring(wrapped_key FROM 1 FOR length(${n}::BYTEA)) = ${n}::BYTEA)"
        ));
    }
    sql.push_str(" FROM namespaces");
    let params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = prefixes
        .iter()
        .map(|p| p as &(dyn tokio_postgres::types::ToSql + Sync))
        .collect();
    let row = c.query_one(sql.as_str(), &params).await?;
    let mut counts = Vec::with_capacity(prefixes.len() + 1);
    for i in 0..=prefixes.len() {
        counts.push(u64::try_from(row.try_get::<_, i64>(i)?).unwrap_or(0));
    }
    let total = counts.remove(0);
    Ok((counts, total))
}

fn namespace_row(r: &Row) -> Result<NamespaceRow> {
    Ok(NamespaceRow {
        ns: r.try_get(0)?,
        wrapped_key: r.try_get(1)?,
    })
}

/// The token with its live installation, app and account, in one statement. An installation
/// token whose installation incarnation (or app, or account) is gone is no token at all, and
/// neither is a token past its expiry on the database's clock (the service checks its own
/// clock too, so the earlier of the two ends it).
pub(crate) async fn authenticate(
    c: &impl GenericClient,
    token_id: &str,
) -> Result<Option<AuthRecord>> {
    let stmt = c
        .prepare_cached(concat!(
            "SELECT t.token_id, t.mac, t.kind, t.installation_id, t.ns, t.scopes, t.expires_at, \
                    t.created_at, \
                    i.installation_id, i.app_id, i.account_id, i.ns, i.created_at, \
                    a.scopes, a.ns, c.ns \
             FROM tokens t \
             LEFT JOIN installations i ON i.installation_id = t.installation_id AND i.ns = t.ns \
             LEFT JOIN apps a ON a.app_id = i.app_id \
             LEFT JOIN accounts c ON c.account_id = i.account_id \
             WHERE t.token_id = $1 AND (t.expires_at IS NULL OR t.expires_at > ",
            now_millis!(),
            ")"
        ))
        .await?;
    let Some(r) = c.query_opt(&stmt, &[&token_id]).await? else {
        return Ok(None);
    };
    let token = token_row(&r)?;
    let installation = match r.try_get::<_, Option<String>>(8)? {
        Some(installation_id) => Some(InstallationRow {
            installation_id,
            app_id: r.try_get(9)?,
            account_id: r.try_get(10)?,
            ns: r.try_get(11)?,
            created_at: r.try_get(12)?,
        }),
        None => None,
    };
    let app_scopes: Option<String> = r.try_get(13)?;
    let app_ns: Option<Ns> = r.try_get(14)?;
    let account_ns: Option<Ns> = r.try_get(15)?;
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

fn token_row(r: &Row) -> Result<TokenRow> {
    let kind: String = r.try_get(2)?;
    let scopes: Option<String> = r.try_get(5)?;
    Ok(TokenRow {
        token_id: r.try_get(0)?,
        mac: r.try_get(1)?,
        kind: decode_token_kind(&kind)?,
        installation_id: r.try_get(3)?,
        ns: r.try_get(4)?,
        scopes: scopes.as_deref().map(decode_list).transpose()?,
        expires_at: r.try_get(6)?,
        created_at: r.try_get(7)?,
    })
}

pub(crate) async fn has_admin_token(c: &impl GenericClient) -> Result<bool> {
    let stmt = c
        .prepare_cached("SELECT EXISTS (SELECT 1 FROM tokens WHERE kind = 'admin')")
        .await?;
    Ok(c.query_one(&stmt, &[]).await?.try_get(0)?)
}

const APP_COLUMNS: &str = "SELECT app_id, scopes, ns, created_at, updated_at FROM apps";

pub(crate) async fn get_app(c: &impl GenericClient, app_id: &str) -> Result<Option<AppRow>> {
    let stmt = c
        .prepare_cached(&format!("{APP_COLUMNS} WHERE app_id = $1"))
        .await?;
    let row = c.query_opt(&stmt, &[&app_id]).await?;
    row.as_ref().map(app_row).transpose()
}

pub(crate) async fn list_apps(c: &impl GenericClient) -> Result<Vec<AppRow>> {
    let stmt = c
        .prepare_cached(&format!("{APP_COLUMNS} ORDER BY app_id"))
        .await?;
    c.query(&stmt, &[]).await?.iter().map(app_row).collect()
}

fn app_row(r: &Row) -> Result<AppRow> {
    let scopes: String = r.try_get(1)?;
    Ok(AppRow {
        app_id: r.try_get(0)?,
        scopes: decode_list(&scopes)?,
        ns: r.try_get(2)?,
        created_at: r.try_get(3)?,
        updated_at: r.try_get(4)?,
    })
}

const ACCOUNT_COLUMNS: &str = "SELECT account_id, ns, created_at, updated_at FROM accounts";

pub(crate) async fn get_account(
    c: &impl GenericClient,
    account_id: &str,
) -> Result<Option<AccountRow>> {
    let stmt = c
        .prepare_cached(&format!("{ACCOUNT_COLUMNS} WHERE account_id = $1"))
        .await?;
    let row = c.query_opt(&stmt, &[&account_id]).await?;
    row.as_ref().map(account_row).transpose()
}

pub(crate) async fn list_accounts(c: &impl GenericClient) -> Result<Vec<AccountRow>> {
    let stmt = c
        .prepare_cached(&format!("{ACCOUNT_COLUMNS} ORDER BY account_id"))
        .await?;
    c.query(&stmt, &[]).await?.iter().map(account_row).collect()
}

fn account_row(r: &Row) -> Result<AccountRow> {
    Ok(AccountRow {
        account_id: r.try_get(0)?,
        ns: r.try_get(1)?,
        created_at: r.try_get(2)?,
        updated_at: r.try_get(3)?,
    })
}

const INSTALLATION_COLUMNS: &str =
    "SELECT installation_id, app_id, account_id, ns, created_at FROM installations";

/// Installations matching `clause` (which may use `$1` for `param`).
pub(crate) async fn installations_where(
    c: &impl GenericClient,
    clause: &str,
    param: Option<&str>,
) -> Result<Vec<InstallationRow>> {
    let stmt = c
        .prepare_cached(&format!("{INSTALLATION_COLUMNS} {clause}"))
        .await?;
    let rows = match param {
        Some(p) => c.query(&stmt, &[&p]).await?,
        None => c.query(&stmt, &[]).await?,
    };
    rows.iter().map(installation_row).collect()
}

pub(crate) async fn get_installation(
    c: &impl GenericClient,
    installation_id: &str,
) -> Result<Option<InstallationRow>> {
    Ok(
        installations_where(c, "WHERE installation_id = $1", Some(installation_id))
            .await?
            .into_iter()
            .next(),
    )
}

pub(crate) async fn installation_of_pair(
    c: &impl GenericClient,
    app_id: &str,
    account_id: &str,
) -> Result<Option<InstallationRow>> {
    let stmt = c
        .prepare_cached(&format!(
            "{INSTALLATION_COLUMNS} WHERE app_id = $1 AND account_id = $2"
        ))
        .await?;
    let row = c.query_opt(&stmt, &[&app_id, &account_id]).await?;
    row.as_ref().map(installation_row).transpose()
}

fn installation_row(r: &Row) -> Result<InstallationRow> {
    Ok(InstallationRow {
        installation_id: r.try_get(0)?,
        app_id: r.try_get(1)?,
        account_id: r.try_get(2)?,
        ns: r.try_get(3)?,
        created_at: r.try_get(4)?,
    })
}

/// Audit events matching the filters, lowest id first. Only the filters that are set appear in
/// the SQL, so each combination gets its own cached plan that can use an index.
pub(crate) async fn audit_query(
    c: &impl GenericClient,
    query: &AuditQuery,
) -> Result<Vec<AuditEvent>> {
    if query.limit == 0 {
        return Ok(Vec::new());
    }
    let mut sql = String::from(
        "SELECT id, time, request_id, token_id, app_id, account_id, installation_id, operation, \
         store, key, status, remote_addr FROM audit WHERE TRUE",
    );
    let mut args: Vec<Box<dyn tokio_postgres::types::ToSql + Sync + Send>> = Vec::new();
    let mut filter = |clause: &str, value: Box<dyn tokio_postgres::types::ToSql + Sync + Send>| {
        args.push(value);
        sql.push_str(&format!(" AND {clause} ${}", args.len()));
    };
    if let Some(id) = &query.installation_id {
        filter("installation_id =", Box::new(id.clone()));
    }
    if let Some(id) = &query.account_id {
        filter("account_id =", Box::new(id.clone()));
    }
    if let Some(since) = query.since {
        filter("time >=", Box::new(since));
    }
    if let Some(until) = query.until {
        filter("time <", Box::new(until));
    }
    if let Some(after) = query.after {
        filter("id >", Box::new(after));
    }
    args.push(Box::new(sql_limit(query.limit)));
    sql.push_str(&format!(" ORDER BY id LIMIT ${}", args.len()));
    let stmt = c.prepare_cached(&sql).await?;
    let params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = args
        .iter()
        .map(|a| a.as_ref() as &(dyn tokio_postgres::types::ToSql + Sync))
        .collect();
    let rows = c.query(&stmt, &params).await?;
    rows.iter()
        .map(|r| {
            Ok(AuditEvent {
                id: r.try_get(0)?,
                time: r.try_get(1)?,
                request_id: r.try_get(2)?,
                token_id: r.try_get(3)?,
                app_id: r.try_get(4)?,
                account_id: r.try_get(5)?,
                installation_id: r.try_get(6)?,
                operation: r.try_get(7)?,
                store: r.try_get(8)?,
                key: r.try_get(9)?,
                status: u16::try_from(r.try_get::<_, i32>(10)?)
                    .map_err(|_| CoreError::internal("a stored audit status is out of range"))?,
                remote_addr: r.try_get(11)?,
            })
        })
        .collect()
}

pub(crate) async fn list_nodes(c: &impl GenericClient) -> Result<Vec<NodeRow>> {
    let stmt = c
        .prepare_cached(
            "SELECT node_id, key_versions, started_at, last_seen FROM nodes ORDER BY node_id",
        )
        .await?;
    c.query(&stmt, &[])
        .await?
        .iter()
        .map(|r| {
            let versions: String = r.try_get(1)?;
            Ok(NodeRow {
                node_id: r.try_get(0)?,
                key_versions: decode_list(&versions)?,
                started_at: r.try_get(2)?,
                last_seen: r.try_get(3)?,
            })
        })
        .collect()
}

/// The `store` column's value.
pub(crate) fn store_code(store: StoreKind) -> i16 {
    // Store codes are 1 to 4 (the credentials' version floors use 0).
    i16::try_from(store.code()).unwrap_or(i16::MAX)
}

/// A stored version: a positive BIGINT.
pub(crate) fn version(r: &Row, idx: usize) -> Result<u64> {
    let v: i64 = r.try_get(idx)?;
    u64::try_from(v).map_err(|_| CoreError::internal("a stored version is negative").into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_successors() {
        let check = |prefix: &[u8], want: Option<&[u8]>| {
            assert_eq!(prefix_successor(prefix).as_deref(), want, "{prefix:?}");
        };
        check(b"", None);
        check(b"a", Some(b"b"));
        check(&[0x61, 0xFF], Some(b"b"));
        check(&[0xFF, 0xFF], None);
    }

    #[test]
    fn key_ranges() {
        let q = |prefix: &[u8], after: Option<&[u8]>| ListQuery {
            prefix: prefix.to_vec(),
            after: after.map(<[u8]>::to_vec),
            limit: 10,
        };
        let query = q(b"ab", None);
        let r = KeyRange::of(&query);
        assert_eq!(r.condition(3, 5), "key >= $3 AND key < $5");
        assert_eq!(r.lower, b"ab");
        let query = q(b"ab", Some(b"abc"));
        let r = KeyRange::of(&query);
        assert_eq!(r.condition(3, 5), "key > $3 AND key < $5");
        // A cursor before the prefix range starts at the prefix.
        let query = q(b"b", Some(b"a"));
        let r = KeyRange::of(&query);
        assert!(!r.exclusive);
        let query = q(b"", None);
        assert_eq!(KeyRange::of(&query).condition(2, 4), "key >= $2");
    }
}
