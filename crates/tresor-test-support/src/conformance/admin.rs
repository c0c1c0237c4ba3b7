//! Cases on administration: apps, accounts, installations, tokens, authentication, and what
//! uninstalling or deleting removes.

use tresor_core::CoreError;
use tresor_core::backend::{Backend, InstallOutcome, TokenKind, TokenRow};
use tresor_core::model::{StoreKind, now_millis};

use super::helpers::*;

pub async fn put_app_creates_then_updates<B: Backend>(b: &B) {
    let scopes = strings(&["kv:read", "kv:write"]);
    let (row, created) = b
        .put_app("app1", &scopes, ns_row(APP_NS), event("put_app"))
        .await
        .expect("put_app");
    assert!(created);
    assert_eq!(
        (row.app_id.as_str(), row.ns, &row.scopes),
        ("app1", APP_NS, &scopes)
    );
    assert_eq!(
        b.namespace_key(APP_NS).await.expect("key"),
        Some(wrapped(APP_NS))
    );
    let fewer = strings(&["kv:read"]);
    let (updated, created) = b
        .put_app("app1", &fewer, ns_row(APP_NS + 1), event("put_app"))
        .await
        .expect("put_app");
    assert!(!created);
    assert_eq!(updated.ns, APP_NS, "an update keeps the app's namespace");
    assert_eq!(updated.scopes, fewer);
    assert_eq!(updated.created_at, row.created_at);
    assert!(updated.updated_at >= row.updated_at);
    assert_eq!(
        b.namespace_key(APP_NS + 1).await.expect("key"),
        None,
        "the unused key is not stored"
    );
    assert_eq!(b.get_app("app1").await.expect("get"), Some(updated.clone()));
    assert_eq!(b.get_app("app2").await.expect("get"), None);
    assert_eq!(b.list_apps().await.expect("list"), vec![updated]);
}

pub async fn put_account_creates_then_updates<B: Backend>(b: &B) {
    let (row, created) = b
        .put_account("acct1", ns_row(ACCOUNT_NS), event("put_account"))
        .await
        .expect("put_account");
    assert!(created);
    assert_eq!((row.account_id.as_str(), row.ns), ("acct1", ACCOUNT_NS));
    let (again, created) = b
        .put_account("acct1", ns_row(ACCOUNT_NS + 1), event("put_account"))
        .await
        .expect("put_account");
    assert!(!created);
    assert_eq!(again.ns, ACCOUNT_NS);
    assert_eq!(again.created_at, row.created_at);
    assert_eq!(
        b.namespace_key(ACCOUNT_NS).await.expect("key"),
        Some(wrapped(ACCOUNT_NS))
    );
    assert_eq!(b.namespace_key(ACCOUNT_NS + 1).await.expect("key"), None);
    assert_eq!(
        b.get_account("acct1").await.expect("get"),
        Some(again.clone())
    );
    assert_eq!(b.get_account("nope").await.expect("get"), None);
    assert_eq!(b.list_accounts().await.expect("list"), vec![again]);
}

pub async fn install_outcomes<B: Backend>(b: &B) {
    app(b, "app1", APP_NS).await;
    app(b, "app2", APP_NS + 1).await;
    account(b, "acct1", ACCOUNT_NS).await;
    account(b, "acct2", ACCOUNT_NS + 1).await;

    let missing_app = install(b, "i1", "nope", "acct1", INST_NS, "t1").await;
    assert!(
        matches!(missing_app, InstallOutcome::AppMissing),
        "{missing_app:?}"
    );
    let missing_account = install(b, "i1", "app1", "nope", INST_NS, "t1").await;
    assert!(
        matches!(missing_account, InstallOutcome::AccountMissing),
        "{missing_account:?}"
    );
    assert_eq!(
        b.namespace_key(INST_NS).await.expect("key"),
        None,
        "a refused install stores nothing"
    );

    let InstallOutcome::Created(row) = install(b, "i1", "app1", "acct1", INST_NS, "t1").await
    else {
        panic!("a new installation is created");
    };
    assert_eq!(
        (
            row.installation_id.as_str(),
            row.app_id.as_str(),
            row.account_id.as_str(),
            row.ns
        ),
        ("i1", "app1", "acct1", INST_NS)
    );
    assert_eq!(
        b.get_installation("i1").await.expect("get"),
        Some(row.clone())
    );
    assert_eq!(
        b.namespace_key(INST_NS).await.expect("key"),
        Some(wrapped(INST_NS))
    );
    assert!(
        b.authenticate("t1").await.expect("auth").is_some(),
        "the first token is stored"
    );

    let existing = install(b, "i1", "app1", "acct1", INST_NS + 1, "t2").await;
    assert!(
        matches!(&existing, InstallOutcome::Existing(r) if *r == row),
        "{existing:?}"
    );
    let taken = install(b, "i1", "app2", "acct1", INST_NS + 2, "t3").await;
    assert!(
        matches!(&taken, InstallOutcome::Taken(r) if *r == row),
        "{taken:?}"
    );
    let pair_taken = install(b, "i2", "app1", "acct1", INST_NS + 3, "t4").await;
    assert!(
        matches!(&pair_taken, InstallOutcome::Taken(r) if *r == row),
        "one installation per (app, account): {pair_taken:?}"
    );
    for (ns, token) in [
        (INST_NS + 1, "t2"),
        (INST_NS + 2, "t3"),
        (INST_NS + 3, "t4"),
    ] {
        assert_eq!(
            b.namespace_key(ns).await.expect("key"),
            None,
            "nothing stored for {token}"
        );
        assert!(
            b.authenticate(token).await.expect("auth").is_none(),
            "{token} not stored"
        );
    }
    assert_eq!(b.get_installation("i2").await.expect("get"), None);

    let InstallOutcome::Created(other) = install(b, "i2", "app2", "acct1", INST_NS + 4, "t5").await
    else {
        panic!("another app in the same account installs");
    };
    let mut all = b.list_installations().await.expect("list");
    all.sort_by(|x, y| x.installation_id.cmp(&y.installation_id));
    assert_eq!(all, vec![row, other]);
}

pub async fn authenticate_joins_installation_and_app<B: Backend>(b: &B) {
    let scopes = strings(&["kv:read", "secrets:write"]);
    b.put_app("app1", &scopes, ns_row(APP_NS), event("put_app"))
        .await
        .expect("put_app");
    account(b, "acct1", ACCOUNT_NS).await;
    let InstallOutcome::Created(row) = install(b, "i1", "app1", "acct1", INST_NS, "t1").await
    else {
        panic!("installed");
    };
    let auth = b
        .authenticate("t1")
        .await
        .expect("auth")
        .expect("the token exists");
    assert_eq!(auth.token.token_id, "t1");
    assert_eq!(auth.token.kind, TokenKind::Installation);
    assert_eq!(auth.token.mac, mac("t1"));
    assert_eq!(auth.token.ns, Some(INST_NS));
    assert_eq!(auth.token.scopes, None);
    assert_eq!(auth.installation, Some(row));
    assert_eq!(auth.app_scopes, scopes);
    assert_eq!(auth.app_ns, Some(APP_NS));
    assert!(b.authenticate("unknown").await.expect("auth").is_none());

    // Re-registering the app with fewer scopes narrows what authentication reports at once.
    let fewer = strings(&["kv:read"]);
    b.put_app("app1", &fewer, ns_row(APP_NS + 1), event("put_app"))
        .await
        .expect("put_app");
    let auth = b
        .authenticate("t1")
        .await
        .expect("auth")
        .expect("still valid");
    assert_eq!(auth.app_scopes, fewer);

    // A narrower token keeps its own scopes and expiry.
    let mut narrow = installation_token("t2", "i1", INST_NS);
    narrow.scopes = Some(strings(&["kv:read"]));
    narrow.expires_at = Some(now_millis() + 60_000);
    b.create_token(narrow.clone(), event("create_token"))
        .await
        .expect("create");
    let auth = b.authenticate("t2").await.expect("auth").expect("exists");
    assert_eq!(auth.token.scopes, narrow.scopes);
    assert_eq!(auth.token.expires_at, narrow.expires_at);
    assert_eq!(auth.token.created_at, narrow.created_at);
}

pub async fn uninstall_removes_records_tokens_and_key<B: Backend>(b: &B) {
    let row = tenant(b).await;
    b.create_token(
        installation_token("t2", "i1", row.ns),
        event("create_token"),
    )
    .await
    .expect("create");
    commit_ok(
        b,
        &[row.ns],
        vec![
            put_in(row.ns, StoreKind::Kv, "k", b"v"),
            put_in(row.ns, StoreKind::Secrets, "s", b"v"),
            put_in(row.ns, StoreKind::Settings, "x", b"v"),
        ],
    )
    .await;
    commit_ok(
        b,
        &[APP_NS],
        vec![put_in(APP_NS, StoreKind::Shared, "shared", b"v")],
    )
    .await;

    assert!(
        b.uninstall("i1", event("uninstall"))
            .await
            .expect("uninstall")
    );
    assert!(
        !b.uninstall("i1", event("uninstall"))
            .await
            .expect("uninstall"),
        "only once"
    );
    assert_eq!(b.get_installation("i1").await.expect("get"), None);
    assert!(
        b.authenticate("t1").await.expect("auth").is_none(),
        "tokens are revoked"
    );
    assert!(
        b.authenticate("t2").await.expect("auth").is_none(),
        "every token"
    );
    assert_eq!(
        b.namespace_key(row.ns).await.expect("key"),
        None,
        "the key is destroyed"
    );
    for store in [StoreKind::Kv, StoreKind::Secrets, StoreKind::Settings] {
        let listed = b
            .list_records(row.ns, store, &list_all())
            .await
            .expect("list");
        assert!(listed.is_empty(), "{store} records are deleted");
    }
    assert!(
        b.read_record(row.ns, StoreKind::Kv, b"k")
            .await
            .expect("read")
            .is_none()
    );
    let late = commit(b, &[row.ns], vec![put(row.ns, "late", b"v")]).await;
    assert!(
        matches!(late, Err(CoreError::Unauthenticated)),
        "a write for the old incarnation fails: {late:?}"
    );
    assert!(read(b, row.ns, "late").await.is_none());
    // The app's shared store and the account survive one uninstall.
    assert!(
        b.read_record(APP_NS, StoreKind::Shared, b"shared")
            .await
            .expect("read")
            .is_some()
    );
    assert!(b.get_account("acct1").await.expect("get").is_some());
    assert!(b.get_app("app1").await.expect("get").is_some());
}

pub async fn reinstall_starts_empty<B: Backend>(b: &B) {
    let row = tenant(b).await;
    let old = version_of(put_ok(b, row.ns, "k", b"old").await);
    assert!(
        b.uninstall("i1", event("uninstall"))
            .await
            .expect("uninstall")
    );
    let InstallOutcome::Created(again) = install(b, "i1", "app1", "acct1", INST_NS + 1, "t9").await
    else {
        panic!("a reinstall under the same id is created");
    };
    assert_eq!(again.ns, INST_NS + 1, "a reinstall gets a fresh namespace");
    assert!(read(b, again.ns, "k").await.is_none(), "and an empty store");
    assert!(list_keys(b, again.ns, "", None, 10).await.is_empty());
    assert!(
        b.authenticate("t1").await.expect("auth").is_none(),
        "old tokens stay revoked"
    );
    let auth = b
        .authenticate("t9")
        .await
        .expect("auth")
        .expect("new token");
    assert_eq!(auth.installation.map(|i| i.ns), Some(INST_NS + 1));
    let new = version_of(put_ok(b, again.ns, "k", b"new").await);
    assert!(
        new > old,
        "versions are never reused, even across a reinstall"
    );
}

pub async fn delete_app_removes_installations_and_shared_store<B: Backend>(b: &B) {
    app(b, "app1", APP_NS).await;
    app(b, "app2", APP_NS + 1).await;
    account(b, "acct1", ACCOUNT_NS).await;
    account(b, "acct2", ACCOUNT_NS + 1).await;
    let i1 = created(install(b, "i1", "app1", "acct1", INST_NS, "t1").await);
    let i2 = created(install(b, "i2", "app1", "acct2", INST_NS + 1, "t2").await);
    let keep = created(install(b, "i3", "app2", "acct1", INST_NS + 2, "t3").await);
    commit_ok(
        b,
        &[APP_NS],
        vec![put_in(APP_NS, StoreKind::Shared, "s", b"v")],
    )
    .await;
    commit_ok(b, &[i1.ns], vec![put(i1.ns, "k", b"v")]).await;
    commit_ok(b, &[keep.ns], vec![put(keep.ns, "k", b"v")]).await;

    assert!(
        b.delete_app("app1", event("delete_app"))
            .await
            .expect("delete")
    );
    assert!(
        !b.delete_app("app1", event("delete_app"))
            .await
            .expect("delete"),
        "only once"
    );
    assert_eq!(b.get_app("app1").await.expect("get"), None);
    for (inst, token) in [(&i1, "t1"), (&i2, "t2")] {
        assert_eq!(
            b.get_installation(&inst.installation_id)
                .await
                .expect("get"),
            None
        );
        assert_eq!(b.namespace_key(inst.ns).await.expect("key"), None);
        assert!(b.authenticate(token).await.expect("auth").is_none());
    }
    assert!(read(b, i1.ns, "k").await.is_none());
    assert_eq!(
        b.namespace_key(APP_NS).await.expect("key"),
        None,
        "the shared key is destroyed"
    );
    assert!(
        b.read_record(APP_NS, StoreKind::Shared, b"s")
            .await
            .expect("read")
            .is_none()
    );
    // Other apps, their installations and the accounts stay.
    assert_eq!(
        b.get_installation("i3").await.expect("get"),
        Some(keep.clone())
    );
    assert!(read(b, keep.ns, "k").await.is_some());
    assert!(b.authenticate("t3").await.expect("auth").is_some());
    assert_eq!(b.list_accounts().await.expect("list").len(), 2);
    assert_eq!(b.list_installations().await.expect("list"), vec![keep]);
}

pub async fn delete_account_removes_its_installations<B: Backend>(b: &B) {
    app(b, "app1", APP_NS).await;
    app(b, "app2", APP_NS + 1).await;
    account(b, "acct1", ACCOUNT_NS).await;
    account(b, "acct2", ACCOUNT_NS + 1).await;
    let i1 = created(install(b, "i1", "app1", "acct1", INST_NS, "t1").await);
    let i2 = created(install(b, "i2", "app2", "acct1", INST_NS + 1, "t2").await);
    let keep = created(install(b, "i3", "app1", "acct2", INST_NS + 2, "t3").await);
    commit_ok(
        b,
        &[ACCOUNT_NS],
        vec![put_in(ACCOUNT_NS, StoreKind::Secrets, "cred", b"v")],
    )
    .await;
    commit_ok(b, &[i2.ns], vec![put(i2.ns, "k", b"v")]).await;

    assert!(
        b.delete_account("acct1", event("delete_account"))
            .await
            .expect("delete")
    );
    assert!(
        !b.delete_account("acct1", event("delete_account"))
            .await
            .expect("delete")
    );
    assert_eq!(b.get_account("acct1").await.expect("get"), None);
    for (inst, token) in [(&i1, "t1"), (&i2, "t2")] {
        assert_eq!(
            b.get_installation(&inst.installation_id)
                .await
                .expect("get"),
            None
        );
        assert_eq!(b.namespace_key(inst.ns).await.expect("key"), None);
        assert!(b.authenticate(token).await.expect("auth").is_none());
    }
    assert!(read(b, i2.ns, "k").await.is_none());
    assert_eq!(b.namespace_key(ACCOUNT_NS).await.expect("key"), None);
    assert!(
        b.read_record(ACCOUNT_NS, StoreKind::Secrets, b"cred")
            .await
            .expect("read")
            .is_none()
    );
    assert_eq!(b.list_installations().await.expect("list"), vec![keep]);
    assert_eq!(b.list_apps().await.expect("list").len(), 2, "apps stay");
    assert!(b.authenticate("t3").await.expect("auth").is_some());
}

pub async fn tokens_create_and_revoke<B: Backend>(b: &B) {
    let row = tenant(b).await;
    let stale = b
        .create_token(
            installation_token("t2", "i1", row.ns + 1),
            event("create_token"),
        )
        .await;
    assert!(
        matches!(stale, Err(CoreError::NotFound(_))),
        "a token for another incarnation is refused: {stale:?}"
    );
    let missing = b
        .create_token(
            installation_token("t3", "nope", row.ns),
            event("create_token"),
        )
        .await;
    assert!(
        matches!(missing, Err(CoreError::NotFound(_))),
        "{missing:?}"
    );
    assert!(b.authenticate("t2").await.expect("auth").is_none());

    b.create_token(
        installation_token("t4", "i1", row.ns),
        event("create_token"),
    )
    .await
    .expect("create");
    assert!(b.authenticate("t4").await.expect("auth").is_some());
    assert!(
        b.revoke_token("t4", event("revoke_token"))
            .await
            .expect("revoke")
    );
    assert!(
        !b.revoke_token("t4", event("revoke_token"))
            .await
            .expect("revoke")
    );
    assert!(b.authenticate("t4").await.expect("auth").is_none());
    assert!(
        b.authenticate("t1").await.expect("auth").is_some(),
        "other tokens stay"
    );

    assert!(!b.has_admin_token().await.expect("has_admin_token"));
    let admin = TokenRow {
        token_id: "admin1".into(),
        mac: mac("admin1"),
        kind: TokenKind::Admin,
        installation_id: None,
        ns: None,
        scopes: None,
        expires_at: None,
        created_at: now_millis(),
    };
    b.create_token(admin, event("create_token"))
        .await
        .expect("create admin");
    assert!(b.has_admin_token().await.expect("has_admin_token"));
    let auth = b
        .authenticate("admin1")
        .await
        .expect("auth")
        .expect("exists");
    assert_eq!(auth.token.kind, TokenKind::Admin);
    assert_eq!(auth.token.mac, mac("admin1"));
    assert!(auth.installation.is_none());
    assert!(
        b.revoke_token("admin1", event("revoke_token"))
            .await
            .expect("revoke")
    );
    assert!(!b.has_admin_token().await.expect("has_admin_token"));
}
