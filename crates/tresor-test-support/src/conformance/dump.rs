//! Cases on the node registry and on `export_rows`/`import_rows`, the backend side of `tresor
//! export` and `tresor import`.
//!
//! The round trip needs two stores, so it is a *pair case*: the macro hands it two fresh
//! fixtures from the same factory (the source, filled through the ordinary API, and an empty
//! target). Doing the round trip inside one backend would need the source emptied through the
//! API first, which the `meta` table cannot be, and would not show that an import into a fresh
//! store rebuilds what the backend derives from the rows (its version counter). Every other
//! case takes one fresh backend.

use std::cmp::Ordering;
use std::time::Duration;

use tresor_core::CoreError;
use tresor_core::backend::{
    Backend, CredentialOwner, CredentialWrite, DescriptionChange, Expiry, FlowRow, FlowStatus,
    Mutation, NodeRow, Precondition, ProviderRow, StoredRecord, TokenKind, TokenRow,
};
use tresor_core::dump::{Cell, DumpRow, DumpTable};
use tresor_core::model::{Ns, StoreKind, now_millis};

use super::helpers::*;

/// Registration, listing in `node_id` order, a refresh that keeps `started_at`, and removal.
pub async fn nodes_register_list_and_unregister<B: Backend>(b: &B) {
    assert_eq!(b.list_nodes().await.expect("list_nodes"), Vec::new());
    let before = now_millis();
    b.register_node(&node("node-b", &["v1"]))
        .await
        .expect("register node-b");
    b.register_node(&node("node-a", &["v1", "v2"]))
        .await
        .expect("register node-a");
    let listed = b.list_nodes().await.expect("list_nodes");
    let ids: Vec<_> = listed.iter().map(|n| n.node_id.as_str()).collect();
    assert_eq!(
        ids,
        ["node-a", "node-b"],
        "nodes are listed in node_id order"
    );
    assert_eq!(listed[0].key_versions, strings(&["v1", "v2"]));
    assert_eq!(listed[1].key_versions, strings(&["v1"]));
    for n in &listed {
        // The given times (0) are ignored: the backend stamps its own clock.
        assert!(
            n.started_at >= before - CLOCK_SLACK && n.started_at <= now_millis() + CLOCK_SLACK,
            "{n:?}"
        );
        assert_eq!(n.last_seen, n.started_at, "{n:?}");
    }

    tokio::time::sleep(Duration::from_millis(30)).await;
    b.register_node(&node("node-a", &["v2"]))
        .await
        .expect("re-register node-a");
    let again = b.list_nodes().await.expect("list_nodes");
    assert_eq!(again.len(), 2);
    assert_eq!(again[0].node_id, "node-a");
    assert_eq!(
        again[0].key_versions,
        strings(&["v2"]),
        "key versions are replaced"
    );
    assert_eq!(
        again[0].started_at, listed[0].started_at,
        "a refresh keeps started_at"
    );
    assert!(
        again[0].last_seen > listed[0].last_seen,
        "a refresh moves last_seen: {:?} then {:?}",
        listed[0],
        again[0]
    );
    assert_eq!(again[1], listed[1], "the other node is untouched");

    assert!(b.unregister_node("node-a").await.expect("unregister"));
    assert!(!b.unregister_node("node-a").await.expect("unregister again"));
    assert!(
        !b.unregister_node("never")
            .await
            .expect("unregister unknown")
    );
    let left = b.list_nodes().await.expect("list_nodes");
    assert_eq!(left, vec![listed[1].clone()]);
}

/// A pair case: exports every table of a filled `source` in pages of several sizes (the same
/// rows, strictly in key order, keys compared as bytes), imports them into the empty `target`
/// in small calls, and checks that the target exports identical rows, serves the same records
/// and tokens, and gives a later write a version above every imported one.
pub async fn export_then_import_round_trips<B: Backend>(source: &B, target: &B) {
    fill(source).await;
    let mut exported = Vec::new();
    for table in DumpTable::ALL {
        let rows = export_all(source, table, 1000).await;
        assert!(
            !rows.is_empty(),
            "the filled store has rows in `{}`",
            table.name()
        );
        for row in &rows {
            row.check(table)
                .unwrap_or_else(|e| panic!("a row of `{}` does not fit: {e}", table.name()));
        }
        for pair in rows.windows(2) {
            assert_eq!(
                compare_keys(pair[0].key(table), pair[1].key(table)),
                Ordering::Less,
                "`{}` is exported in strictly increasing key order",
                table.name()
            );
        }
        for page in [1, 2, 3] {
            assert_eq!(
                export_all(source, table, page).await,
                rows,
                "`{}` in pages of {page}",
                table.name()
            );
        }
        exported.push((table, rows));
    }

    // Record keys compare as bytes: \x01 < "B" < "a" < "é" (0xC3 0xA9).
    let records = &exported
        .iter()
        .find(|(t, _)| *t == DumpTable::Records)
        .expect("records")
        .1;
    let kv_keys: Vec<Vec<u8>> = records
        .iter()
        .filter(|r| r.0[0] == Cell::Int(INST_NS) && r.0[1] == Cell::Int(StoreKind::Kv.code()))
        .map(|r| match &r.0[2] {
            Cell::Bytes(k) => k.clone(),
            other => panic!("a record key is {other:?}"),
        })
        .collect();
    assert_eq!(kv_keys, keys(&["\u{1}", "B", "a", "é"]));
    let paged: Vec<_> = {
        let mut after: Option<Vec<Cell>> = None;
        let mut seen = Vec::new();
        loop {
            let page = source
                .export_rows(DumpTable::Records, after.as_deref(), 1)
                .await
                .expect("export_rows");
            let Some(row) = page.first() else { break };
            seen.push(row.clone());
            after = Some(row.key(DumpTable::Records).to_vec());
        }
        seen
    };
    assert_eq!(&paged, records, "a cursor resumes right after its row");
    let last = records.last().expect("a record").key(DumpTable::Records);
    assert!(
        source
            .export_rows(DumpTable::Records, Some(last), 10)
            .await
            .expect("export past the end")
            .is_empty()
    );
    assert!(
        source
            .export_rows(DumpTable::Records, None, 0)
            .await
            .expect("a zero limit")
            .is_empty()
    );

    for (table, rows) in &exported {
        assert!(
            target
                .export_rows(*table, None, 1)
                .await
                .expect("export from the target")
                .is_empty(),
            "the target starts empty in `{}`",
            table.name()
        );
        for chunk in rows.chunks(2) {
            target
                .import_rows(*table, chunk.to_vec())
                .await
                .unwrap_or_else(|e| panic!("import into `{}`: {e:?}", table.name()));
        }
    }
    for (table, rows) in &exported {
        assert_eq!(
            &export_all(target, *table, 1000).await,
            rows,
            "`{}` is identical after the round trip",
            table.name()
        );
    }

    // The target serves what the source served.
    for key in ["\u{1}", "B", "a", "é"] {
        let want = read(source, INST_NS, key).await.expect("source record");
        let got = read(target, INST_NS, key).await.expect("imported record");
        assert!(same_record(&got, &want), "{key:?}: {got:?} != {want:?}");
    }
    let shared = target
        .read_record(APP_NS, StoreKind::Shared, b"shared-key")
        .await
        .expect("read_record");
    assert!(shared.is_some(), "the shared store is imported");
    let auth = target
        .authenticate("t1")
        .await
        .expect("authenticate")
        .expect("the installation token is imported");
    assert_eq!(auth.token.mac, mac("t1"));
    assert_eq!(auth.installation.map(|i| i.ns), Some(INST_NS));
    assert!(target.has_admin_token().await.expect("has_admin_token"));
    let cred = target
        .read_credential(&[INST_NS, ACCOUNT_NS], b"cred-inst")
        .await
        .expect("read_credential")
        .expect("the credential is imported");
    assert_eq!(cred.write.secret, b"sealed-secret-inst");
    assert!(cred.write.needs_reconsent);
    let flow = target
        .flow_by_state(b"mac-of-state-1")
        .await
        .expect("flow_by_state")
        .expect("the flow is imported");
    assert_eq!(flow.flow_id, "flow-1");
    assert_eq!(
        target.meta_get("pepper").await.expect("meta_get"),
        Some(b"wrapped-pepper".to_vec())
    );

    // Versions go on above every imported one, for new keys, existing keys and credentials.
    let highest = exported
        .iter()
        .filter(|(t, _)| matches!(t, DumpTable::Records | DumpTable::Credentials))
        .flat_map(|(t, rows)| {
            let at = t
                .columns()
                .iter()
                .position(|c| c.name == "version")
                .expect("a version column");
            rows.iter().map(move |r| match r.0[at] {
                Cell::Int(v) => v,
                _ => panic!("a version is not an integer"),
            })
        })
        .max()
        .expect("versions");
    let fresh = version_of(put_ok(target, INST_NS, "after-import", b"v").await);
    assert!(
        i64::try_from(fresh).is_ok_and(|v| v > highest),
        "a new key after the import gets {fresh}, not above {highest}"
    );
    let again = version_of(put_ok(target, INST_NS, "a", b"v2").await);
    assert!(again > fresh, "{again} after {fresh}");
    let applied = commit_ok(
        target,
        &[INST_NS],
        vec![put_credential(
            INST_NS,
            "cred-after",
            CredentialOwner::Installation,
            false,
        )],
    )
    .await;
    let cred_version = version_of(applied[0]);
    assert!(cred_version > again, "{cred_version} after {again}");
}

/// An import whose rows include a key that exists fails with `Conflict` and inserts none of its
/// rows; so does one that repeats a key, and one with a malformed row; a clean one then lands.
pub async fn import_of_an_existing_key_conflicts_and_inserts_nothing<B: Backend>(b: &B) {
    tenant(b).await;
    put_ok(b, INST_NS, "k", b"value").await;
    let existing = export_all(b, DumpTable::Records, 100).await;
    assert_eq!(existing.len(), 1);
    let mut new = existing[0].clone();
    new.0[2] = Cell::Bytes(b"k2".to_vec());

    let err = b
        .import_rows(DumpTable::Records, vec![new.clone(), existing[0].clone()])
        .await
        .expect_err("an existing key");
    assert!(matches!(err, CoreError::Conflict(_)), "{err:?}");
    assert_eq!(export_all(b, DumpTable::Records, 100).await, existing);

    let err = b
        .import_rows(DumpTable::Records, vec![new.clone(), new.clone()])
        .await
        .expect_err("a key twice");
    assert!(matches!(err, CoreError::Conflict(_)), "{err:?}");
    assert_eq!(export_all(b, DumpTable::Records, 100).await, existing);

    let apps = export_all(b, DumpTable::Apps, 100).await;
    let err = b
        .import_rows(DumpTable::Apps, apps.clone())
        .await
        .expect_err("an existing app");
    assert!(matches!(err, CoreError::Conflict(_)), "{err:?}");
    assert_eq!(export_all(b, DumpTable::Apps, 100).await, apps);

    let mut short = new.clone();
    short.0.pop();
    let err = b
        .import_rows(DumpTable::Records, vec![new.clone(), short])
        .await
        .expect_err("a malformed row");
    assert!(matches!(err, CoreError::InvalidRequest(_)), "{err:?}");
    let mut mistyped = new.clone();
    mistyped.0[2] = Cell::Text("k3".into());
    let err = b
        .import_rows(DumpTable::Records, vec![mistyped])
        .await
        .expect_err("a mistyped row");
    assert!(matches!(err, CoreError::InvalidRequest(_)), "{err:?}");
    assert_eq!(export_all(b, DumpTable::Records, 100).await, existing);

    b.import_rows(DumpTable::Records, vec![new.clone()])
        .await
        .expect("a clean import");
    assert_eq!(
        export_all(b, DumpTable::Records, 100).await,
        vec![existing[0].clone(), new]
    );
    let k2 = read(b, INST_NS, "k2").await.expect("the imported record");
    assert_eq!(k2.value, b"value");
    let k = read(b, INST_NS, "k").await.expect("the existing record");
    assert_eq!(k2.version, k.version, "the version is imported as it was");
    let next = version_of(put_ok(b, INST_NS, "k2", b"newer").await);
    assert!(next > k2.version);
}

fn node(node_id: &str, versions: &[&str]) -> NodeRow {
    NodeRow {
        node_id: node_id.to_owned(),
        key_versions: strings(versions),
        started_at: 0,
        last_seen: 0,
    }
}

/// Every row of `table`, fetched `page` rows at a time.
async fn export_all<B: Backend>(b: &B, table: DumpTable, page: usize) -> Vec<DumpRow> {
    let mut rows: Vec<DumpRow> = Vec::new();
    loop {
        let after = rows.last().map(|r| r.key(table).to_vec());
        let next = b
            .export_rows(table, after.as_deref(), page)
            .await
            .unwrap_or_else(|e| panic!("export `{}`: {e:?}", table.name()));
        assert!(next.len() <= page, "a page holds at most its limit");
        let done = next.len() < page;
        rows.extend(next);
        if done {
            return rows;
        }
    }
}

/// Key order: integers by value, text and bytes as bytes, column by column.
fn compare_keys(a: &[Cell], b: &[Cell]) -> Ordering {
    for (x, y) in a.iter().zip(b) {
        let o = match (x, y) {
            (Cell::Int(x), Cell::Int(y)) => x.cmp(y),
            (Cell::Text(x), Cell::Text(y)) => x.as_bytes().cmp(y.as_bytes()),
            (Cell::Bytes(x), Cell::Bytes(y)) => x.cmp(y),
            (Cell::Bool(x), Cell::Bool(y)) => x.cmp(y),
            _ => panic!("key cells of different types: {x:?} and {y:?}"),
        };
        if o != Ordering::Equal {
            return o;
        }
    }
    a.len().cmp(&b.len())
}

fn same_record(a: &StoredRecord, b: &StoredRecord) -> bool {
    (
        &a.key,
        a.version,
        a.created_at,
        a.updated_at,
        a.expires_at,
        &a.value,
        &a.description,
    ) == (
        &b.key,
        b.version,
        b.created_at,
        b.updated_at,
        b.expires_at,
        &b.value,
        &b.description,
    )
}

fn put_credential(ns: Ns, key: &str, owner: CredentialOwner, reconsent: bool) -> Mutation {
    Mutation::PutCredential {
        ns,
        other_ns: None,
        expect: Precondition::Any,
        credential: CredentialWrite {
            key: key.as_bytes().to_vec(),
            owner,
            app_id: "app1".into(),
            provider: "github".into(),
            kind: "oauth2".into(),
            token_expires_at: Some(now_millis() + 3_600_000),
            scopes: strings(&["repo", "user"]),
            needs_reconsent: reconsent,
            metadata: b"sealed-metadata".to_vec(),
            secret: format!("sealed-secret-{}", key.trim_start_matches("cred-")).into_bytes(),
        },
        expiry: Expiry::In(3_600),
    }
}

/// Rows in every table: meta, an app with its shared store, an account, an installation with
/// two tokens, an admin token, records in several stores (TTL, descriptions, keys that sort
/// differently as bytes and as text), credentials of both owners, a provider, a flow, audit.
async fn fill<B: Backend>(b: &B) {
    b.meta_get_or_insert("pepper", b"wrapped-pepper")
        .await
        .expect("meta");
    tenant(b).await;
    let admin = TokenRow {
        token_id: "admin-1".into(),
        mac: mac("admin-1"),
        kind: TokenKind::Admin,
        installation_id: None,
        ns: None,
        scopes: None,
        expires_at: None,
        created_at: now_millis(),
    };
    b.create_token(admin, event("create_token"))
        .await
        .expect("admin token");
    let scoped = TokenRow {
        scopes: Some(strings(&["kv:read"])),
        expires_at: Some(now_millis() + 3_600_000),
        ..installation_token("t2", "i1", INST_NS)
    };
    b.create_token(scoped, event("create_token"))
        .await
        .expect("scoped token");

    let mut mutations = Vec::new();
    for (i, key) in ["a", "é", "B", "\u{1}"].into_iter().enumerate() {
        let description = if i % 2 == 0 {
            DescriptionChange::Set(Some(format!("sealed-description-{i}").into_bytes()))
        } else {
            DescriptionChange::Set(None)
        };
        let expiry = if i < 2 {
            Expiry::In(3_600)
        } else {
            Expiry::Clear
        };
        mutations.push(put_with(
            INST_NS,
            key,
            Precondition::Absent,
            description,
            expiry,
        ));
    }
    mutations.push(put_in(INST_NS, StoreKind::Secrets, "api", b"sealed-api"));
    mutations.push(put_in(
        INST_NS,
        StoreKind::Settings,
        "theme",
        b"sealed-theme",
    ));
    commit_ok(b, &[INST_NS], mutations).await;
    commit_ok(
        b,
        &[APP_NS],
        vec![put_in(
            APP_NS,
            StoreKind::Shared,
            "shared-key",
            b"sealed-shared",
        )],
    )
    .await;
    // A second version of one key, so versions are not simply one per key.
    put_ok(b, INST_NS, "a", b"value-of-a-2").await;

    commit_ok(
        b,
        &[INST_NS],
        vec![put_credential(
            INST_NS,
            "cred-inst",
            CredentialOwner::Installation,
            true,
        )],
    )
    .await;
    commit_ok(
        b,
        &[INST_NS, ACCOUNT_NS],
        vec![put_credential(
            ACCOUNT_NS,
            "cred-acct",
            CredentialOwner::Account,
            false,
        )],
    )
    .await;

    let provider = ProviderRow {
        name: "github".into(),
        document: b"{\"kind\":\"oauth2\"}".to_vec(),
        client_secret: Some(b"sealed-client-secret".to_vec()),
        created_at: 0,
        updated_at: 0,
    };
    b.put_provider(provider, true, event("put_provider"))
        .await
        .expect("put_provider");
    // "Zeta" sorts first as bytes, last in most natural-language collations.
    for name in ["plain", "Zeta"] {
        let plain = ProviderRow {
            name: name.into(),
            document: b"{}".to_vec(),
            client_secret: None,
            created_at: 0,
            updated_at: 0,
        };
        b.put_provider(plain, true, event("put_provider"))
            .await
            .expect("put_provider");
    }

    let now = now_millis();
    let flow = FlowRow {
        flow_id: "flow-1".into(),
        ns: INST_NS,
        installation_id: "i1".into(),
        provider: "github".into(),
        store_key: b"cred-flow".to_vec(),
        store_owner: CredentialOwner::Installation,
        scopes: strings(&["repo"]),
        return_to: Some("https://app.example/done".into()),
        state_mac: b"mac-of-state-1".to_vec(),
        verifier: b"sealed-verifier".to_vec(),
        status: FlowStatus::Pending,
        error: None,
        access_token: None,
        taken: false,
        expires_at: now + 600_000,
        created_at: now,
    };
    commit_ok(b, &[INST_NS], vec![Mutation::PutFlow { flow }]).await;
    let done = FlowRow {
        flow_id: "flow-2".into(),
        state_mac: b"mac-of-state-2".to_vec(),
        return_to: None,
        ..flow_template(now)
    };
    commit_ok(b, &[INST_NS], vec![Mutation::PutFlow { flow: done }]).await;
    let finish = Mutation::FinishFlow {
        flow_id: "flow-2".into(),
        status: FlowStatus::Completed,
        error: None,
        access_token: Some(b"sealed-access-token".to_vec()),
    };
    commit_ok(b, &[INST_NS], vec![finish]).await;
    let take = Mutation::TakeFlowToken {
        flow_id: "flow-2".into(),
    };
    commit_ok(b, &[INST_NS], vec![take]).await;
}

fn flow_template(now: i64) -> FlowRow {
    FlowRow {
        flow_id: String::new(),
        ns: INST_NS,
        installation_id: "i1".into(),
        provider: "github".into(),
        store_key: b"cred-flow-2".to_vec(),
        store_owner: CredentialOwner::Account,
        scopes: Vec::new(),
        return_to: None,
        state_mac: Vec::new(),
        verifier: b"sealed-verifier-2".to_vec(),
        status: FlowStatus::Pending,
        error: None,
        access_token: None,
        taken: false,
        expires_at: now + 600_000,
        created_at: now,
    }
}
