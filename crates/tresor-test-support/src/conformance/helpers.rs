//! Builders and shortcuts shared by the cases, so each case reads as a few lines of intent.

use std::time::Duration;

use tresor_core::CoreError;
use tresor_core::audit::{AuditEvent, AuditQuery};
use tresor_core::backend::{
    Applied, Backend, Commit, DescriptionChange, Expiry, InstallOutcome, InstallationRow,
    ListQuery, Mutation, NamespaceRow, NewInstallation, Precondition, StoredRecord, TokenKind,
    TokenRow,
};
use tresor_core::model::{Millis, Ns, StoreKind, now_millis};

pub(super) const MAX_VERSION: u64 = (1 << 53) - 1;
/// Tolerance between the test's clock and the backend's (the same machine here).
pub(super) const CLOCK_SLACK: Millis = 1_000;
pub(super) const APP_NS: Ns = 1_000_001;
pub(super) const ACCOUNT_NS: Ns = 2_000_001;
pub(super) const INST_NS: Ns = 3_000_001;

pub(super) fn ns_row(ns: Ns) -> NamespaceRow {
    NamespaceRow {
        ns,
        wrapped_key: wrapped(ns),
    }
}

pub(super) fn wrapped(ns: Ns) -> Vec<u8> {
    format!("wrapped-key-of-{ns}").into_bytes()
}

pub(super) fn mac(token_id: &str) -> Vec<u8> {
    format!("mac-of-{token_id}").into_bytes()
}

pub(super) fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

pub(super) fn keys(items: &[&str]) -> Vec<Vec<u8>> {
    items.iter().map(|s| s.as_bytes().to_vec()).collect()
}

pub(super) fn event(operation: &str) -> AuditEvent {
    AuditEvent {
        id: 0,
        time: now_millis(),
        request_id: format!("req-{operation}"),
        token_id: Some("tok-id".into()),
        app_id: None,
        account_id: None,
        installation_id: None,
        operation: operation.to_owned(),
        store: None,
        key: None,
        status: 200,
        remote_addr: Some("127.0.0.1".into()),
    }
}

pub(super) fn audit_all() -> AuditQuery {
    AuditQuery {
        limit: 1_000,
        ..AuditQuery::default()
    }
}

pub(super) fn list_all() -> ListQuery {
    ListQuery {
        prefix: Vec::new(),
        after: None,
        limit: 1_000,
    }
}

/// A live namespace for record cases (an account's), numbered `n`.
pub(super) async fn namespace<B: Backend>(b: &B, n: i64) -> Ns {
    let ns = ACCOUNT_NS + 100 + n;
    b.put_account(
        &format!("record-acct-{n}"),
        ns_row(ns),
        event("put_account"),
    )
    .await
    .expect("put_account");
    ns
}

pub(super) async fn app<B: Backend>(b: &B, app_id: &str, ns: Ns) {
    b.put_app(
        app_id,
        &strings(&["kv:read", "kv:write"]),
        ns_row(ns),
        event("put_app"),
    )
    .await
    .expect("put_app");
}

pub(super) async fn account<B: Backend>(b: &B, account_id: &str, ns: Ns) {
    b.put_account(account_id, ns_row(ns), event("put_account"))
        .await
        .expect("put_account");
}

pub(super) fn installation_token(token_id: &str, installation_id: &str, ns: Ns) -> TokenRow {
    TokenRow {
        token_id: token_id.to_owned(),
        mac: mac(token_id),
        kind: TokenKind::Installation,
        installation_id: Some(installation_id.to_owned()),
        ns: Some(ns),
        scopes: None,
        expires_at: None,
        created_at: now_millis(),
    }
}

pub(super) async fn install<B: Backend>(
    b: &B,
    installation_id: &str,
    app_id: &str,
    account_id: &str,
    ns: Ns,
    token_id: &str,
) -> InstallOutcome {
    let new = NewInstallation {
        installation_id: installation_id.to_owned(),
        app_id: app_id.to_owned(),
        account_id: account_id.to_owned(),
        namespace: ns_row(ns),
        token: installation_token(token_id, installation_id, ns),
    };
    b.install(new, event("install")).await.expect("install")
}

pub(super) fn created(outcome: InstallOutcome) -> InstallationRow {
    match outcome {
        InstallOutcome::Created(row) => row,
        other => panic!("expected a new installation, got {other:?}"),
    }
}

/// app1 (ns APP_NS) installed as i1 (ns INST_NS, token t1) in acct1 (ns ACCOUNT_NS).
pub(super) async fn tenant<B: Backend>(b: &B) -> InstallationRow {
    app(b, "app1", APP_NS).await;
    account(b, "acct1", ACCOUNT_NS).await;
    created(install(b, "i1", "app1", "acct1", INST_NS, "t1").await)
}

pub(super) fn put_with(
    ns: Ns,
    key: &str,
    expect: Precondition,
    description: DescriptionChange,
    expiry: Expiry,
) -> Mutation {
    Mutation::Put {
        ns,
        store: StoreKind::Kv,
        key: key.as_bytes().to_vec(),
        expect,
        value: format!("value-of-{key}").into_bytes(),
        description,
        expiry,
    }
}

pub(super) fn put_in(ns: Ns, store: StoreKind, key: &str, value: &[u8]) -> Mutation {
    Mutation::Put {
        ns,
        store,
        key: key.as_bytes().to_vec(),
        expect: Precondition::Any,
        value: value.to_vec(),
        description: DescriptionChange::Set(None),
        expiry: Expiry::Clear,
    }
}

pub(super) fn put(ns: Ns, key: &str, value: &[u8]) -> Mutation {
    put_in(ns, StoreKind::Kv, key, value)
}

pub(super) fn put_expect(ns: Ns, key: &str, expect: Precondition) -> Mutation {
    put_with(ns, key, expect, DescriptionChange::Set(None), Expiry::Clear)
}

pub(super) fn delete(ns: Ns, key: &str, expect: Precondition) -> Mutation {
    Mutation::Delete {
        ns,
        store: StoreKind::Kv,
        key: key.as_bytes().to_vec(),
        expect,
    }
}

pub(super) fn check(ns: Ns, key: &str, expect: Precondition) -> Mutation {
    Mutation::Check {
        ns,
        store: StoreKind::Kv,
        key: key.as_bytes().to_vec(),
        expect,
    }
}

pub(super) async fn commit<B: Backend>(
    b: &B,
    guards: &[Ns],
    mutations: Vec<Mutation>,
) -> Result<Vec<Applied>, CoreError> {
    let mut ev = event("commit");
    ev.status = 200;
    b.commit(Commit {
        guards: guards.to_vec(),
        keys: Vec::new(),
        mutations,
        audit: vec![ev],
    })
    .await
}

pub(super) async fn commit_ok<B: Backend>(
    b: &B,
    guards: &[Ns],
    mutations: Vec<Mutation>,
) -> Vec<Applied> {
    let n = mutations.len();
    let applied = commit(b, guards, mutations)
        .await
        .expect("the commit applies");
    assert_eq!(applied.len(), n, "one Applied per mutation");
    applied
}

pub(super) async fn put_ok<B: Backend>(b: &B, ns: Ns, key: &str, value: &[u8]) -> Applied {
    commit_ok(b, &[ns], vec![put(ns, key, value)]).await[0]
}

pub(super) async fn read<B: Backend>(b: &B, ns: Ns, key: &str) -> Option<StoredRecord> {
    b.read_record(ns, StoreKind::Kv, key.as_bytes())
        .await
        .expect("read_record")
}

pub(super) async fn list_keys<B: Backend>(
    b: &B,
    ns: Ns,
    prefix: &str,
    after: Option<&str>,
    limit: usize,
) -> Vec<Vec<u8>> {
    let query = ListQuery {
        prefix: prefix.as_bytes().to_vec(),
        after: after.map(|a| a.as_bytes().to_vec()),
        limit,
    };
    b.list_records(ns, StoreKind::Kv, &query)
        .await
        .expect("list_records")
        .into_iter()
        .map(|r| r.key)
        .collect()
}

pub(super) fn version_of(applied: Applied) -> u64 {
    match applied {
        Applied::Put { version, .. } => version,
        other => panic!("expected Applied::Put, got {other:?}"),
    }
}

pub(super) fn expires_of(applied: Applied) -> Option<Millis> {
    match applied {
        Applied::Put { expires_at, .. } => expires_at,
        other => panic!("expected Applied::Put, got {other:?}"),
    }
}

/// Sleeps until the wall clock is safely past `t`.
pub(super) async fn sleep_past(t: Millis) {
    let wait = (t - now_millis()).max(0) + 150;
    tokio::time::sleep(Duration::from_millis(wait.unsigned_abs())).await;
}
