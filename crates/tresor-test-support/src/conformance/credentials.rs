//! Cases on write-only credentials and providers: round trips of every field, versions from the
//! record counter, preconditions, the key space an installation shares with its account,
//! namespace order, merged lists, expiry, delete, guards, what uninstalling or deleting removes,
//! providers and their write-only client secret, and the purge.

use tresor_core::CoreError;
use tresor_core::backend::{
    Applied, Backend, CredentialOwner, CredentialRow, CredentialWrite, DescriptionChange, Expiry,
    ListQuery, Mutation, Precondition, ProviderRow, TokenKind, TokenRow,
};
use tresor_core::model::{Millis, Ns, StoreKind, now_millis};

use super::helpers::*;

/// The owner of a credential stored in `ns` by the cases: the account's namespace holds account
/// credentials, every other one installation credentials.
fn owner_of(ns: Ns) -> CredentialOwner {
    if ns == ACCOUNT_NS || ns == ACCOUNT_NS + 1 {
        CredentialOwner::Account
    } else {
        CredentialOwner::Installation
    }
}

/// A credential with every optional part empty; secret and metadata name the key.
fn cred(ns: Ns, key: &str) -> CredentialWrite {
    CredentialWrite {
        key: key.as_bytes().to_vec(),
        owner: owner_of(ns),
        app_id: "app1".into(),
        provider: "github".into(),
        kind: "api_key".into(),
        token_expires_at: None,
        scopes: Vec::new(),
        needs_reconsent: false,
        metadata: format!("sealed-metadata-of-{key}").into_bytes(),
        secret: format!("sealed-secret-of-{key}").into_bytes(),
    }
}

fn put_cred_with(
    ns: Ns,
    other_ns: Option<Ns>,
    expect: Precondition,
    credential: CredentialWrite,
    expiry: Expiry,
) -> Mutation {
    Mutation::PutCredential {
        ns,
        other_ns,
        expect,
        credential,
        expiry,
    }
}

/// A blind put of [`cred`] without expiry and without a check of the other owner.
fn put_cred(ns: Ns, key: &str) -> Mutation {
    put_cred_with(ns, None, Precondition::Any, cred(ns, key), Expiry::Clear)
}

/// A put that checks the shared key space against `other_ns`, as the service always does.
fn put_cred_shared(ns: Ns, other_ns: Ns, key: &str, expect: Precondition) -> Mutation {
    put_cred_with(ns, Some(other_ns), expect, cred(ns, key), Expiry::Clear)
}

fn put_cred_expiring(ns: Ns, key: &str, expiry: Expiry) -> Mutation {
    put_cred_with(ns, None, Precondition::Any, cred(ns, key), expiry)
}

fn delete_cred(ns: Ns, key: &str, expect: Precondition) -> Mutation {
    Mutation::DeleteCredential {
        ns,
        key: key.as_bytes().to_vec(),
        expect,
    }
}

/// The guards the service sets for a write into `ns`: the installation, and the account when
/// the credential is the account's.
fn guards_for(ns: Ns) -> Vec<Ns> {
    if ns == ACCOUNT_NS {
        vec![INST_NS, ACCOUNT_NS]
    } else {
        vec![ns]
    }
}

async fn cred_ok<B: Backend>(b: &B, m: Mutation) -> Applied {
    let ns = match &m {
        Mutation::PutCredential { ns, .. } | Mutation::DeleteCredential { ns, .. } => *ns,
        _ => panic!("not a credential mutation"),
    };
    commit_ok(b, &guards_for(ns), vec![m]).await[0]
}

async fn read_cred<B: Backend>(b: &B, namespaces: &[Ns], key: &str) -> Option<CredentialRow> {
    b.read_credential(namespaces, key.as_bytes())
        .await
        .expect("read_credential")
}

async fn list_creds<B: Backend>(
    b: &B,
    namespaces: &[Ns],
    prefix: &str,
    after: Option<&str>,
    limit: usize,
) -> Vec<CredentialRow> {
    let query = ListQuery {
        prefix: prefix.as_bytes().to_vec(),
        after: after.map(|a| a.as_bytes().to_vec()),
        limit,
    };
    let rows = b
        .list_credentials(namespaces, &query)
        .await
        .expect("list_credentials");
    assert!(
        rows.iter().all(|r| r.write.secret.is_empty()),
        "lists never carry secrets"
    );
    rows
}

/// The listed (key, namespace) pairs.
async fn listed<B: Backend>(
    b: &B,
    namespaces: &[Ns],
    prefix: &str,
    after: Option<&str>,
    limit: usize,
) -> Vec<(Vec<u8>, Ns)> {
    list_creds(b, namespaces, prefix, after, limit)
        .await
        .into_iter()
        .map(|r| (r.write.key, r.ns))
        .collect()
}

fn pairs(items: &[(&str, Ns)]) -> Vec<(Vec<u8>, Ns)> {
    items
        .iter()
        .map(|(k, ns)| (k.as_bytes().to_vec(), *ns))
        .collect()
}

fn created_of(applied: Applied) -> bool {
    match applied {
        Applied::Put { created, .. } => created,
        other => panic!("expected Applied::Put, got {other:?}"),
    }
}

fn created_at_of(applied: Applied) -> Millis {
    match applied {
        Applied::Put { created_at, .. } => created_at,
        other => panic!("expected Applied::Put, got {other:?}"),
    }
}

/// Asserts that `m` fails with `Conflict` naming `owner`, and that nothing of its commit (nor a
/// record written beside it) applied.
async fn assert_held_by<B: Backend>(b: &B, m: Mutation, owner: &str) {
    let result = commit(
        b,
        &[INST_NS, ACCOUNT_NS],
        vec![put(INST_NS, "bystander", b"x"), m],
    )
    .await;
    match result {
        Err(CoreError::Conflict(message)) => assert_eq!(
            message,
            format!("the key is held by the {owner}'s credentials")
        ),
        other => panic!("expected a conflict with the {owner}'s credential, got {other:?}"),
    }
    assert!(
        read(b, INST_NS, "bystander").await.is_none(),
        "nothing applies"
    );
}

fn assert_same_write(got: &CredentialWrite, want: &CredentialWrite, with_secret: bool) {
    assert_eq!(got.key, want.key);
    assert_eq!(got.owner, want.owner);
    assert_eq!(got.app_id, want.app_id);
    assert_eq!(got.provider, want.provider);
    assert_eq!(got.kind, want.kind);
    assert_eq!(got.token_expires_at, want.token_expires_at);
    assert_eq!(got.scopes, want.scopes);
    assert_eq!(got.needs_reconsent, want.needs_reconsent);
    assert_eq!(
        got.metadata, want.metadata,
        "metadata bytes come back exactly"
    );
    if with_secret {
        assert_eq!(got.secret, want.secret, "secret bytes come back exactly");
    } else {
        assert!(got.secret.is_empty(), "the secret is left empty");
    }
}

pub async fn credential_put_then_read_round_trips<B: Backend>(b: &B) {
    tenant(b).await;
    let before = now_millis();
    let full = CredentialWrite {
        key: "github/main".as_bytes().to_vec(),
        owner: CredentialOwner::Installation,
        app_id: "app1".into(),
        provider: "github".into(),
        kind: "oauth2".into(),
        token_expires_at: Some(before + 3_600_000),
        scopes: strings(&["repo", "read:user"]),
        needs_reconsent: true,
        metadata: vec![0, 1, 0xFF, b'{', b'}', 0],
        secret: (0..=255).collect(),
    };
    let applied = cred_ok(
        b,
        put_cred_with(
            INST_NS,
            Some(ACCOUNT_NS),
            Precondition::Absent,
            full.clone(),
            Expiry::In(3600),
        ),
    )
    .await;
    let Applied::Put {
        version,
        created,
        created_at,
        updated_at,
        expires_at,
    } = applied
    else {
        panic!("a credential put answers Applied::Put, got {applied:?}");
    };
    assert!(created);
    assert!((1..=MAX_VERSION).contains(&version));
    assert!(created_at >= before - CLOCK_SLACK && created_at == updated_at);
    let expires_at = expires_at.expect("Expiry::In sets expires_at");
    assert!(
        (before + 3_600_000 - CLOCK_SLACK..=now_millis() + 3_600_000 + CLOCK_SLACK)
            .contains(&expires_at)
    );

    let row = read_cred(b, &[INST_NS], "github/main")
        .await
        .expect("the credential was just written");
    assert_eq!(row.ns, INST_NS);
    assert_same_write(&row.write, &full, true);
    assert_eq!(row.version, version);
    assert_eq!((row.created_at, row.updated_at), (created_at, updated_at));
    assert_eq!(row.expires_at, Some(expires_at));
    assert_eq!((row.lease_until, row.lease_id), (None, None));

    let rows = list_creds(b, &[INST_NS, ACCOUNT_NS], "", None, 10).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].ns, INST_NS);
    assert_same_write(&rows[0].write, &full, false);
    assert_eq!(
        (rows[0].version, rows[0].created_at, rows[0].updated_at),
        (version, created_at, updated_at)
    );
    assert_eq!(rows[0].expires_at, Some(expires_at));

    // A replace changes every field, keeps created_at, and Keep keeps the expiry.
    let plain = cred(INST_NS, "github/main");
    let replaced = cred_ok(
        b,
        put_cred_with(
            INST_NS,
            Some(ACCOUNT_NS),
            Precondition::Version(version),
            plain.clone(),
            Expiry::Keep,
        ),
    )
    .await;
    let Applied::Put {
        version: v2,
        created,
        created_at: kept,
        updated_at: u2,
        expires_at: e2,
    } = replaced
    else {
        panic!("a credential put answers Applied::Put");
    };
    assert!(!created, "a put over a live credential replaces it");
    assert!(v2 > version);
    assert_eq!(kept, created_at, "a replace keeps created_at");
    assert!(u2 >= updated_at);
    assert_eq!(e2, Some(expires_at), "Keep keeps the expiry");
    let row = read_cred(b, &[INST_NS], "github/main").await.expect("live");
    assert_same_write(&row.write, &plain, true);
    assert_eq!(row.version, v2);

    // An account credential comes back with its owner.
    let mut shared = cred(ACCOUNT_NS, "shared");
    shared.app_id = "app2".into();
    cred_ok(
        b,
        put_cred_with(
            ACCOUNT_NS,
            Some(INST_NS),
            Precondition::Absent,
            shared.clone(),
            Expiry::Clear,
        ),
    )
    .await;
    let row = read_cred(b, &[ACCOUNT_NS], "shared").await.expect("live");
    assert_eq!(row.ns, ACCOUNT_NS);
    assert_same_write(&row.write, &shared, true);
    assert_eq!(row.expires_at, None);
    assert!(read_cred(b, &[INST_NS], "shared").await.is_none());
    assert!(
        read_cred(b, &[INST_NS, ACCOUNT_NS], "missing")
            .await
            .is_none()
    );

    let commits = b
        .audit_query(&audit_all())
        .await
        .expect("audit")
        .into_iter()
        .filter(|e| e.operation == "commit")
        .count();
    assert_eq!(commits, 3, "each credential commit writes its audit event");
}

pub async fn credential_versions_share_the_record_counter<B: Backend>(b: &B) {
    tenant(b).await;
    let mut seen = Vec::new();
    seen.push(version_of(put_ok(b, INST_NS, "record", b"v").await));
    seen.push(version_of(cred_ok(b, put_cred(INST_NS, "c")).await));
    seen.push(version_of(put_ok(b, INST_NS, "record", b"v2").await));
    seen.push(version_of(cred_ok(b, put_cred(INST_NS, "c")).await));
    seen.push(version_of(cred_ok(b, put_cred(ACCOUNT_NS, "d")).await));
    cred_ok(b, delete_cred(INST_NS, "c", Precondition::Any)).await;
    let recreated = cred_ok(b, put_cred(INST_NS, "c")).await;
    assert!(created_of(recreated));
    seen.push(version_of(recreated));
    // A record and a credential in one commit: two versions, in mutation order.
    let both = commit_ok(
        b,
        &[INST_NS],
        vec![put_cred(INST_NS, "e"), put(INST_NS, "record", b"v3")],
    )
    .await;
    seen.extend(both.into_iter().map(version_of));
    assert!(
        seen.windows(2).all(|w| w[0] < w[1]),
        "versions strictly increase across records and credentials: {seen:?}"
    );
    assert!(seen.iter().all(|v| (1..=MAX_VERSION).contains(v)));
}

pub async fn credential_preconditions<B: Backend>(b: &B) {
    tenant(b).await;
    let ns = INST_NS;
    let v = version_of(cred_ok(b, put_cred(ns, "existing")).await);
    let failing: Vec<(&str, Mutation)> = vec![
        (
            "absent on a live key",
            put_cred_shared(ns, ACCOUNT_NS, "existing", Precondition::Absent),
        ),
        (
            "wrong version",
            put_cred_shared(ns, ACCOUNT_NS, "existing", Precondition::Version(v + 1)),
        ),
        (
            "version on a missing key",
            put_cred_shared(ns, ACCOUNT_NS, "missing", Precondition::Version(v)),
        ),
        (
            "delete with a wrong version",
            delete_cred(ns, "existing", Precondition::Version(v + 1)),
        ),
        (
            "delete absent on a live key",
            delete_cred(ns, "existing", Precondition::Absent),
        ),
    ];
    for (what, m) in failing {
        let result = commit(
            b,
            &[ns],
            vec![put(ns, "bystander", b"x"), put_cred(ns, "bystander"), m],
        )
        .await;
        assert!(
            matches!(result, Err(CoreError::WriteConflict)),
            "{what}: expected WriteConflict, got {result:?}"
        );
        assert!(read(b, ns, "bystander").await.is_none(), "{what}");
        assert!(read_cred(b, &[ns], "bystander").await.is_none(), "{what}");
        let kept = read_cred(b, &[ns], "existing").await.expect("still there");
        assert_eq!(kept.version, v, "{what}");
    }
    // A record under the same key is no credential.
    put_ok(b, ns, "record-key", b"v").await;
    let applied = commit_ok(
        b,
        &[ns],
        vec![
            put_cred_shared(ns, ACCOUNT_NS, "record-key", Precondition::Absent),
            put_cred_shared(ns, ACCOUNT_NS, "missing", Precondition::Absent),
            put_cred_shared(ns, ACCOUNT_NS, "existing", Precondition::Version(v)),
        ],
    )
    .await;
    assert!(created_of(applied[0]) && created_of(applied[1]));
    assert!(!created_of(applied[2]));
    let v2 = version_of(applied[2]);
    // Any writes whatever is there; a later mutation sees an earlier one.
    let applied = commit_ok(
        b,
        &[ns],
        vec![
            put_cred_shared(ns, ACCOUNT_NS, "existing", Precondition::Any),
            put_cred_shared(ns, ACCOUNT_NS, "fresh", Precondition::Any),
            delete_cred(ns, "fresh", Precondition::Any),
        ],
    )
    .await;
    assert!(!created_of(applied[0]));
    assert!(created_of(applied[1]));
    assert_eq!(applied[2], Applied::Deleted);
    let v3 = version_of(applied[0]);
    assert!(v3 > v2);
    assert!(read_cred(b, &[ns], "fresh").await.is_none());
    let stale = commit(
        b,
        &[ns],
        vec![delete_cred(ns, "existing", Precondition::Version(v2))],
    )
    .await;
    assert!(matches!(stale, Err(CoreError::WriteConflict)), "{stale:?}");
    commit_ok(
        b,
        &[ns],
        vec![delete_cred(ns, "existing", Precondition::Version(v3))],
    )
    .await;
    assert!(read_cred(b, &[ns], "existing").await.is_none());
}

pub async fn credential_key_space_is_shared_with_the_other_owner<B: Backend>(b: &B) {
    tenant(b).await;
    cred_ok(
        b,
        put_cred_shared(INST_NS, ACCOUNT_NS, "k", Precondition::Absent),
    )
    .await;
    cred_ok(
        b,
        put_cred_shared(ACCOUNT_NS, INST_NS, "a", Precondition::Absent),
    )
    .await;
    // Whatever the precondition, the other owner's live key refuses the write.
    for expect in [Precondition::Absent, Precondition::Any] {
        assert_held_by(
            b,
            put_cred_shared(ACCOUNT_NS, INST_NS, "k", expect),
            "installation",
        )
        .await;
        assert_held_by(
            b,
            put_cred_shared(INST_NS, ACCOUNT_NS, "a", expect),
            "account",
        )
        .await;
    }
    assert!(read_cred(b, &[ACCOUNT_NS], "k").await.is_none());
    assert!(read_cred(b, &[INST_NS], "a").await.is_none());
    // Other keys and unrelated namespaces are free.
    cred_ok(
        b,
        put_cred_shared(ACCOUNT_NS, INST_NS, "free", Precondition::Absent),
    )
    .await;

    // Once the other owner's credential is deleted, the key is free.
    cred_ok(b, delete_cred(INST_NS, "k", Precondition::Any)).await;
    let applied = cred_ok(
        b,
        put_cred_shared(ACCOUNT_NS, INST_NS, "k", Precondition::Absent),
    )
    .await;
    assert!(created_of(applied));
    assert_eq!(
        read_cred(b, &[INST_NS, ACCOUNT_NS], "k")
            .await
            .expect("live")
            .write
            .owner,
        CredentialOwner::Account
    );

    // Once it has expired, too.
    let expiring = cred_ok(b, put_cred_expiring(INST_NS, "e", Expiry::In(1))).await;
    assert_held_by(
        b,
        put_cred_shared(ACCOUNT_NS, INST_NS, "e", Precondition::Absent),
        "installation",
    )
    .await;
    sleep_past(expires_of(expiring).expect("expiry")).await;
    let applied = cred_ok(
        b,
        put_cred_shared(ACCOUNT_NS, INST_NS, "e", Precondition::Absent),
    )
    .await;
    assert!(created_of(applied));
    assert_held_by(
        b,
        put_cred_shared(INST_NS, ACCOUNT_NS, "e", Precondition::Absent),
        "account",
    )
    .await;
}

pub async fn read_credential_follows_namespace_order<B: Backend>(b: &B) {
    tenant(b).await;
    // Both owners under one key (written without the shared-key check).
    cred_ok(b, put_cred(INST_NS, "both")).await;
    cred_ok(b, put_cred(ACCOUNT_NS, "both")).await;
    cred_ok(b, put_cred(ACCOUNT_NS, "account-only")).await;
    let ns_of = |row: Option<CredentialRow>| row.map(|r| r.ns);
    assert_eq!(
        ns_of(read_cred(b, &[INST_NS, ACCOUNT_NS], "both").await),
        Some(INST_NS)
    );
    assert_eq!(
        ns_of(read_cred(b, &[ACCOUNT_NS, INST_NS], "both").await),
        Some(ACCOUNT_NS)
    );
    let row = read_cred(b, &[ACCOUNT_NS, INST_NS], "both")
        .await
        .expect("live");
    assert_eq!(row.write.owner, CredentialOwner::Account);
    assert_eq!(row.write.secret, b"sealed-secret-of-both");
    assert_eq!(
        ns_of(read_cred(b, &[INST_NS, ACCOUNT_NS], "account-only").await),
        Some(ACCOUNT_NS)
    );
    assert_eq!(ns_of(read_cred(b, &[INST_NS], "account-only").await), None);
    assert_eq!(ns_of(read_cred(b, &[], "both").await), None);
    assert_eq!(
        ns_of(read_cred(b, &[APP_NS, 987_654_321], "both").await),
        None
    );

    // An expired credential in the first namespace gives way to the second's.
    let expiring = cred_ok(b, put_cred_expiring(INST_NS, "later", Expiry::In(1))).await;
    cred_ok(b, put_cred(ACCOUNT_NS, "later")).await;
    assert_eq!(
        ns_of(read_cred(b, &[INST_NS, ACCOUNT_NS], "later").await),
        Some(INST_NS)
    );
    sleep_past(expires_of(expiring).expect("expiry")).await;
    assert_eq!(
        ns_of(read_cred(b, &[INST_NS, ACCOUNT_NS], "later").await),
        Some(ACCOUNT_NS)
    );
}

pub async fn list_credentials_merges_namespaces_in_byte_order<B: Backend>(b: &B) {
    tenant(b).await;
    let own = ["apple", "b", "é", "zeta", "\u{10FFFF}"];
    let shared = ["apple/pie", "apples", "Zebra", "ä", "~"];
    let mut mutations: Vec<Mutation> = own.iter().map(|k| put_cred(INST_NS, k)).collect();
    mutations.extend(shared.iter().map(|k| put_cred(ACCOUNT_NS, k)));
    commit_ok(b, &[INST_NS, ACCOUNT_NS], mutations).await;
    let mut want: Vec<(Vec<u8>, Ns)> = own
        .iter()
        .map(|k| (k.as_bytes().to_vec(), INST_NS))
        .chain(shared.iter().map(|k| (k.as_bytes().to_vec(), ACCOUNT_NS)))
        .collect();
    want.sort();
    let both = [INST_NS, ACCOUNT_NS];
    assert_eq!(
        listed(b, &both, "", None, 100).await,
        want,
        "merged in key byte order"
    );
    assert_eq!(
        listed(b, &[ACCOUNT_NS, INST_NS], "", None, 100).await,
        want,
        "whatever the order of the namespaces"
    );
    let (inst_want, acct_want): (Vec<_>, Vec<_>) =
        want.iter().cloned().partition(|(_, ns)| *ns == INST_NS);
    assert_eq!(listed(b, &[INST_NS], "", None, 100).await, inst_want);
    assert_eq!(listed(b, &[ACCOUNT_NS], "", None, 100).await, acct_want);
    assert!(listed(b, &[], "", None, 100).await.is_empty());
    assert_eq!(
        listed(b, &[INST_NS, INST_NS], "", None, 100).await,
        inst_want,
        "a namespace named twice is listed once"
    );

    let check = |prefix: &'static str,
                 after: Option<&'static str>,
                 limit: usize,
                 items: &'static [(&'static str, Ns)]| async move {
        assert_eq!(
            listed(b, &both, prefix, after, limit).await,
            pairs(items),
            "prefix {prefix:?} after {after:?} limit {limit}"
        );
    };
    check(
        "app",
        None,
        10,
        &[
            ("apple", INST_NS),
            ("apple/pie", ACCOUNT_NS),
            ("apples", ACCOUNT_NS),
        ],
    )
    .await;
    check(
        "app",
        None,
        2,
        &[("apple", INST_NS), ("apple/pie", ACCOUNT_NS)],
    )
    .await;
    check(
        "app",
        Some("apple"),
        10,
        &[("apple/pie", ACCOUNT_NS), ("apples", ACCOUNT_NS)],
    )
    .await;
    check("app", Some("apples"), 10, &[]).await;
    check("app", Some("a"), 1, &[("apple", INST_NS)]).await;
    check(
        "",
        Some("zeta"),
        10,
        &[
            ("~", ACCOUNT_NS),
            ("ä", ACCOUNT_NS),
            ("é", INST_NS),
            ("\u{10FFFF}", INST_NS),
        ],
    )
    .await;
    check("\u{10FFFF}", None, 10, &[("\u{10FFFF}", INST_NS)]).await;
    check("nothing", None, 10, &[]).await;
    check("", None, 0, &[]).await;

    // Paging with the cursor visits every credential once, in order.
    let mut seen = Vec::new();
    let mut after: Option<Vec<u8>> = None;
    loop {
        let query = ListQuery {
            prefix: Vec::new(),
            after: after.clone(),
            limit: 3,
        };
        let page = b.list_credentials(&both, &query).await.expect("list");
        let Some(last) = page.last() else { break };
        assert!(page.len() <= 3);
        after = Some(last.write.key.clone());
        seen.extend(page.into_iter().map(|r| (r.write.key, r.ns)));
    }
    assert_eq!(seen, want);

    // One key in both namespaces (written without the shared-key check): by namespace next.
    cred_ok(b, put_cred(INST_NS, "dup")).await;
    cred_ok(b, put_cred(ACCOUNT_NS, "dup")).await;
    let mut dup = vec![("dup", INST_NS), ("dup", ACCOUNT_NS)];
    dup.sort_by_key(|(_, ns)| *ns);
    assert_eq!(listed(b, &both, "dup", None, 10).await, pairs(&dup));
}

pub async fn expired_credentials_disappear<B: Backend>(b: &B) {
    tenant(b).await;
    let ns = INST_NS;
    let start = now_millis();
    let applied = commit_ok(
        b,
        &[ns],
        vec![
            put_cred_expiring(ns, "short", Expiry::In(1)),
            put_cred(ns, "long"),
        ],
    )
    .await;
    let expires_at = expires_of(applied[0]).expect("Expiry::In sets expires_at");
    assert!(
        (start + 1000 - CLOCK_SLACK..=now_millis() + 1000 + CLOCK_SLACK).contains(&expires_at),
        "expires_at is about one second after the commit"
    );
    assert_eq!(expires_of(applied[1]), None);
    assert!(read_cred(b, &[ns], "short").await.is_some());
    assert_eq!(
        listed(b, &[ns], "", None, 10).await,
        pairs(&[("long", ns), ("short", ns)])
    );
    sleep_past(expires_at).await;
    assert!(
        read_cred(b, &[ns], "short").await.is_none(),
        "an expired credential reads as absent"
    );
    assert_eq!(
        listed(b, &[ns], "", None, 10).await,
        pairs(&[("long", ns)]),
        "lists omit it"
    );
    let absent = commit(
        b,
        &[ns],
        vec![delete_cred(ns, "short", Precondition::Absent)],
    )
    .await;
    assert!(absent.is_ok(), "preconditions see it as absent: {absent:?}");

    // A put over an expired credential is a create.
    let again = cred_ok(b, put_cred_expiring(INST_NS, "gone", Expiry::In(1))).await;
    sleep_past(expires_of(again).expect("expiry")).await;
    let second = cred_ok(
        b,
        put_cred_with(
            ns,
            Some(ACCOUNT_NS),
            Precondition::Absent,
            cred(ns, "gone"),
            Expiry::Keep,
        ),
    )
    .await;
    assert!(
        created_of(second),
        "a put over an expired credential is a create"
    );
    assert!(
        created_at_of(second) > created_at_of(again),
        "with a new created_at"
    );
    assert!(version_of(second) > version_of(again));
    assert_eq!(
        expires_of(second),
        None,
        "Keep does not revive the expired credential's expiry"
    );

    // Keep and Clear on a live credential.
    let set = expires_of(cred_ok(b, put_cred_expiring(ns, "ttl", Expiry::In(3600))).await);
    assert!(set.is_some());
    let kept = cred_ok(b, put_cred_expiring(ns, "ttl", Expiry::Keep)).await;
    assert_eq!(
        expires_of(kept),
        set,
        "Keep keeps the live credential's expiry"
    );
    assert_eq!(
        read_cred(b, &[ns], "ttl").await.expect("live").expires_at,
        set
    );
    let cleared = cred_ok(b, put_cred_expiring(ns, "ttl", Expiry::Clear)).await;
    assert_eq!(expires_of(cleared), None);
    assert_eq!(
        read_cred(b, &[ns], "ttl").await.expect("live").expires_at,
        None
    );
}

pub async fn delete_credential_removes_it<B: Backend>(b: &B) {
    tenant(b).await;
    let ns = INST_NS;
    cred_ok(b, put_cred(ns, "k")).await;
    cred_ok(b, put_cred(ns, "other")).await;
    cred_ok(b, put_cred(ACCOUNT_NS, "k")).await;
    let applied = commit_ok(b, &[ns], vec![delete_cred(ns, "k", Precondition::Any)]).await;
    assert_eq!(applied, vec![Applied::Deleted]);
    assert!(read_cred(b, &[ns], "k").await.is_none());
    assert_eq!(
        listed(b, &[ns], "", None, 10).await,
        pairs(&[("other", ns)])
    );
    assert!(
        read_cred(b, &[ACCOUNT_NS], "k").await.is_some(),
        "a delete touches only its namespace"
    );
    assert!(read(b, ns, "k").await.is_none());
    // Deleting a missing credential without a precondition succeeds.
    let applied = commit_ok(b, &[ns], vec![delete_cred(ns, "k", Precondition::Any)]).await;
    assert_eq!(applied, vec![Applied::Deleted]);
    let absent = commit(b, &[ns], vec![delete_cred(ns, "k", Precondition::Absent)]).await;
    assert!(absent.is_ok(), "Absent holds for a deleted key: {absent:?}");
    let versioned = commit(
        b,
        &[ns],
        vec![delete_cred(ns, "k", Precondition::Version(1))],
    )
    .await;
    assert!(
        matches!(versioned, Err(CoreError::WriteConflict)),
        "{versioned:?}"
    );
}

pub async fn credential_commits_need_their_guards<B: Backend>(b: &B) {
    let row = tenant(b).await;
    let result = commit(
        b,
        &[row.ns, 987_654_321],
        vec![put_cred(row.ns, "k"), put_cred(ACCOUNT_NS, "a")],
    )
    .await;
    assert!(
        matches!(result, Err(CoreError::Unauthenticated)),
        "a missing guard namespace fails the commit: {result:?}"
    );
    let result = commit(
        b,
        &[row.ns, 987_654_321],
        vec![delete_cred(row.ns, "k", Precondition::Any)],
    )
    .await;
    assert!(
        matches!(result, Err(CoreError::Unauthenticated)),
        "{result:?}"
    );
    assert!(read_cred(b, &[row.ns, ACCOUNT_NS], "k").await.is_none());
    assert!(read_cred(b, &[row.ns, ACCOUNT_NS], "a").await.is_none());
    let events = b.audit_query(&audit_all()).await.expect("audit query");
    assert!(
        events.iter().all(|e| e.operation != "commit"),
        "the audit of a failed commit is not written with it"
    );
    // After an uninstall, a write for the old incarnation applies nothing.
    assert!(
        b.uninstall("i1", event("uninstall"))
            .await
            .expect("uninstall")
    );
    let late = commit(
        b,
        &[row.ns, ACCOUNT_NS],
        vec![
            put_cred(row.ns, "late"),
            put_cred(ACCOUNT_NS, "late-shared"),
        ],
    )
    .await;
    assert!(matches!(late, Err(CoreError::Unauthenticated)), "{late:?}");
    assert!(read_cred(b, &[row.ns], "late").await.is_none());
    assert!(read_cred(b, &[ACCOUNT_NS], "late-shared").await.is_none());
}

pub async fn uninstall_removes_installation_credentials_only<B: Backend>(b: &B) {
    let row = tenant(b).await;
    cred_ok(
        b,
        put_cred_shared(row.ns, ACCOUNT_NS, "mine", Precondition::Absent),
    )
    .await;
    cred_ok(
        b,
        put_cred_shared(row.ns, ACCOUNT_NS, "mine/2", Precondition::Absent),
    )
    .await;
    cred_ok(
        b,
        put_cred_shared(ACCOUNT_NS, row.ns, "shared", Precondition::Absent),
    )
    .await;
    assert!(
        b.uninstall("i1", event("uninstall"))
            .await
            .expect("uninstall")
    );
    assert!(read_cred(b, &[row.ns], "mine").await.is_none());
    assert!(listed(b, &[row.ns], "", None, 10).await.is_empty());
    assert!(
        read_cred(b, &[ACCOUNT_NS], "shared").await.is_some(),
        "the account's credentials stay"
    );
    assert!(b.namespace_key(ACCOUNT_NS).await.expect("key").is_some());

    // A reinstall sees the account's credentials and none of the old installation's, whose keys
    // are free again.
    let again = created(install(b, "i1", "app1", "acct1", INST_NS + 1, "t9").await);
    assert_eq!(
        listed(b, &[again.ns, ACCOUNT_NS], "", None, 10).await,
        pairs(&[("shared", ACCOUNT_NS)])
    );
    let applied = commit_ok(
        b,
        &[again.ns, ACCOUNT_NS],
        vec![put_cred_shared(
            ACCOUNT_NS,
            again.ns,
            "mine",
            Precondition::Absent,
        )],
    )
    .await;
    assert!(created_of(applied[0]));
}

pub async fn delete_account_removes_account_credentials<B: Backend>(b: &B) {
    app(b, "app1", APP_NS).await;
    account(b, "acct1", ACCOUNT_NS).await;
    account(b, "acct2", ACCOUNT_NS + 1).await;
    let i1 = created(install(b, "i1", "app1", "acct1", INST_NS, "t1").await);
    let i2 = created(install(b, "i2", "app1", "acct2", INST_NS + 1, "t2").await);
    cred_ok(b, put_cred(ACCOUNT_NS, "shared")).await;
    cred_ok(b, put_cred(i1.ns, "own")).await;
    commit_ok(
        b,
        &[i2.ns, ACCOUNT_NS + 1],
        vec![put_cred(ACCOUNT_NS + 1, "shared"), put_cred(i2.ns, "own")],
    )
    .await;
    assert!(
        b.delete_account("acct1", event("delete_account"))
            .await
            .expect("delete")
    );
    assert!(read_cred(b, &[ACCOUNT_NS], "shared").await.is_none());
    assert!(listed(b, &[ACCOUNT_NS], "", None, 10).await.is_empty());
    assert!(
        read_cred(b, &[i1.ns], "own").await.is_none(),
        "its installations' credentials go too"
    );
    assert_eq!(
        listed(b, &[i2.ns, ACCOUNT_NS + 1], "", None, 10).await,
        pairs(&[("own", i2.ns), ("shared", ACCOUNT_NS + 1)]),
        "other accounts keep theirs"
    );
}

pub async fn delete_app_removes_its_installations_credentials<B: Backend>(b: &B) {
    app(b, "app1", APP_NS).await;
    app(b, "app2", APP_NS + 1).await;
    account(b, "acct1", ACCOUNT_NS).await;
    let i1 = created(install(b, "i1", "app1", "acct1", INST_NS, "t1").await);
    let i3 = created(install(b, "i3", "app2", "acct1", INST_NS + 2, "t3").await);
    cred_ok(b, put_cred(i1.ns, "own")).await;
    // An account credential app1 stored belongs to the account.
    cred_ok(b, put_cred(ACCOUNT_NS, "shared")).await;
    commit_ok(b, &[i3.ns], vec![put_cred(i3.ns, "other-app")]).await;
    assert!(
        b.delete_app("app1", event("delete_app"))
            .await
            .expect("delete")
    );
    assert!(read_cred(b, &[i1.ns], "own").await.is_none());
    let shared = read_cred(b, &[i3.ns, ACCOUNT_NS], "shared")
        .await
        .expect("the account's credential stays");
    assert_eq!(shared.write.app_id, "app1");
    assert!(read_cred(b, &[i3.ns], "other-app").await.is_some());
}

pub async fn authenticate_returns_the_account_namespace<B: Backend>(b: &B) {
    tenant(b).await;
    account(b, "acct2", ACCOUNT_NS + 1).await;
    created(install(b, "i2", "app1", "acct2", INST_NS + 1, "t2").await);
    let auth = b.authenticate("t1").await.expect("auth").expect("exists");
    assert_eq!(auth.account_ns, Some(ACCOUNT_NS));
    assert_eq!(auth.app_ns, Some(APP_NS));
    let auth = b.authenticate("t2").await.expect("auth").expect("exists");
    assert_eq!(auth.account_ns, Some(ACCOUNT_NS + 1));
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
    let auth = b
        .authenticate("admin1")
        .await
        .expect("auth")
        .expect("exists");
    assert_eq!(auth.account_ns, None, "an admin token has no account");
}

fn provider(name: &str, document: &[u8], client_secret: Option<&[u8]>) -> ProviderRow {
    ProviderRow {
        name: name.to_owned(),
        document: document.to_vec(),
        client_secret: client_secret.map(<[u8]>::to_vec),
        // The backend stamps both.
        created_at: 0,
        updated_at: 0,
    }
}

async fn put_provider<B: Backend>(
    b: &B,
    row: ProviderRow,
    keep_secret: bool,
) -> (ProviderRow, bool) {
    b.put_provider(row, keep_secret, event("put_provider"))
        .await
        .expect("put_provider")
}

fn same_provider(a: &ProviderRow, b: &ProviderRow) -> bool {
    (
        &a.name,
        &a.document,
        &a.client_secret,
        a.created_at,
        a.updated_at,
    ) == (
        &b.name,
        &b.document,
        &b.client_secret,
        b.created_at,
        b.updated_at,
    )
}

pub async fn providers_create_update_get_list_delete<B: Backend>(b: &B) {
    let before = now_millis();
    let (row, created) =
        put_provider(b, provider("github", b"{\"v\":1}", Some(b"sealed-1")), true).await;
    assert!(created);
    assert_eq!(row.name, "github");
    assert_eq!(row.document, b"{\"v\":1}");
    assert_eq!(row.client_secret.as_deref(), Some(&b"sealed-1"[..]));
    assert!(row.created_at >= before - CLOCK_SLACK && row.created_at == row.updated_at);
    let got = b
        .get_provider("github")
        .await
        .expect("get")
        .expect("stored");
    assert!(same_provider(&got, &row), "{got:?} != {row:?}");

    let (updated, created) =
        put_provider(b, provider("github", b"{\"v\":2}", Some(b"sealed-2")), true).await;
    assert!(!created);
    assert_eq!(
        updated.created_at, row.created_at,
        "an update keeps created_at"
    );
    assert!(updated.updated_at >= row.updated_at);
    assert_eq!(updated.document, b"{\"v\":2}");
    assert_eq!(updated.client_secret.as_deref(), Some(&b"sealed-2"[..]));
    let got = b
        .get_provider("github")
        .await
        .expect("get")
        .expect("stored");
    assert!(same_provider(&got, &updated), "{got:?} != {updated:?}");

    let (acme, _) = put_provider(b, provider("acme", b"{}", None), false).await;
    let all = b.list_providers().await.expect("list");
    let names: Vec<&str> = all.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["acme", "github"], "listed by name");
    assert!(same_provider(&all[0], &acme) && same_provider(&all[1], &updated));
    assert!(b.get_provider("nope").await.expect("get").is_none());

    assert!(
        b.delete_provider("github", event("delete_provider"))
            .await
            .expect("delete")
    );
    assert!(
        !b.delete_provider("github", event("delete_provider"))
            .await
            .expect("delete"),
        "only once"
    );
    assert!(b.get_provider("github").await.expect("get").is_none());
    let names: Vec<String> = b
        .list_providers()
        .await
        .expect("list")
        .into_iter()
        .map(|p| p.name)
        .collect();
    assert_eq!(names, ["acme"]);
    // A deleted provider is created anew.
    let (again, created) = put_provider(b, provider("github", b"{}", None), true).await;
    assert!(created);
    assert_eq!(
        again.client_secret, None,
        "nothing of the deleted provider is kept"
    );

    let events = b.audit_query(&audit_all()).await.expect("audit");
    let count = |op: &str| events.iter().filter(|e| e.operation == op).count();
    assert_eq!(
        count("put_provider"),
        4,
        "each write commits its audit event"
    );
    assert_eq!(count("delete_provider"), 2);
}

pub async fn provider_client_secret_is_kept_replaced_or_cleared<B: Backend>(b: &B) {
    let secret = |row: &ProviderRow| row.client_secret.clone();
    let stored = async || {
        b.get_provider("p")
            .await
            .expect("get")
            .expect("stored")
            .client_secret
    };
    let (row, _) = put_provider(b, provider("p", b"{}", Some(b"one")), true).await;
    assert_eq!(secret(&row), Some(b"one".to_vec()));
    let (row, _) = put_provider(b, provider("p", b"{\"d\":1}", None), true).await;
    assert_eq!(
        secret(&row),
        Some(b"one".to_vec()),
        "None with keep_secret keeps it"
    );
    assert_eq!(row.document, b"{\"d\":1}", "while the document changes");
    assert_eq!(stored().await, Some(b"one".to_vec()));
    let (row, _) = put_provider(b, provider("p", b"{}", Some(b"two")), true).await;
    assert_eq!(
        secret(&row),
        Some(b"two".to_vec()),
        "a given secret replaces it"
    );
    assert_eq!(stored().await, Some(b"two".to_vec()));
    let (row, _) = put_provider(b, provider("p", b"{}", Some(b"three")), false).await;
    assert_eq!(secret(&row), Some(b"three".to_vec()));
    assert_eq!(stored().await, Some(b"three".to_vec()));
    let (row, _) = put_provider(b, provider("p", b"{}", None), false).await;
    assert_eq!(secret(&row), None, "None without keep_secret clears it");
    assert_eq!(stored().await, None);
    let (row, _) = put_provider(b, provider("p", b"{}", None), true).await;
    assert_eq!(secret(&row), None, "keeping no secret keeps none");
    let (row, created) = put_provider(b, provider("new", b"{}", None), true).await;
    assert!(created);
    assert_eq!(secret(&row), None);
}

pub async fn purge_expired_removes_expired_credentials<B: Backend>(b: &B) {
    tenant(b).await;
    let ns = INST_NS;
    let applied = commit_ok(
        b,
        &[ns, ACCOUNT_NS],
        vec![
            put_cred_expiring(ns, "a", Expiry::In(1)),
            put_cred_expiring(ACCOUNT_NS, "b", Expiry::In(1)),
            put_cred(ns, "forever"),
            put_cred_expiring(ns, "later", Expiry::In(3600)),
            put_with(
                ns,
                "record",
                Precondition::Any,
                DescriptionChange::Keep,
                Expiry::In(1),
            ),
        ],
    )
    .await;
    assert_eq!(
        b.purge_expired(100).await.expect("purge"),
        0,
        "nothing has expired yet"
    );
    let last_expiry = [applied[0], applied[1], applied[4]]
        .iter()
        .filter_map(|a| expires_of(*a))
        .max()
        .expect("expiries");
    sleep_past(last_expiry).await;
    // Records and credentials share one budget.
    assert_eq!(
        b.purge_expired(2).await.expect("purge"),
        2,
        "purge honours its limit"
    );
    assert_eq!(b.purge_expired(100).await.expect("purge"), 1);
    assert_eq!(b.purge_expired(100).await.expect("purge"), 0);
    assert_eq!(
        listed(b, &[ns, ACCOUNT_NS], "", None, 10).await,
        pairs(&[("forever", ns), ("later", ns)])
    );
    assert!(
        b.read_record(ns, StoreKind::Kv, b"record")
            .await
            .expect("read")
            .is_none()
    );
    // The purged keys are writable as new credentials, with new versions.
    let again = cred_ok(
        b,
        put_cred_shared(ns, ACCOUNT_NS, "b", Precondition::Absent),
    )
    .await;
    assert!(created_of(again));
    assert!(version_of(again) > version_of(applied[4]));
}
