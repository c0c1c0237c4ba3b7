//! Cases on installation key rotation (`tresor_core::sealed_rows`): the fence that holds a
//! namespace's commits off, the key check by which a commit proves what it sealed under, the
//! read of every sealed row, and the swap that replaces them with the wrapped key in one
//! transaction, or changes nothing when anything it read has moved.

use std::time::Duration;

use tresor_core::CoreError;
use tresor_core::backend::{
    Backend, Commit, CredentialOwner, CredentialWrite, DescriptionChange, Expiry, FlowRow,
    FlowStatus, Mutation, Precondition,
};
use tresor_core::model::{Ns, StoreKind, now_millis};
use tresor_core::sealed_rows::{KeyCheck, Rekey, RekeyCounts, SealedFlowRow, SealedRows};

use super::helpers::*;

/// The installation's rows: records in two stores (one with a description, one expired), a
/// credential, a pending and a completed flow; and a record of the app's shared store.
async fn populate<B: Backend>(b: &B) {
    tenant(b).await;
    let described = Mutation::Put {
        ns: INST_NS,
        store: StoreKind::Secrets,
        key: b"described".to_vec(),
        expect: Precondition::Absent,
        value: b"sealed-value-of-described".to_vec(),
        description: DescriptionChange::Set(Some(b"sealed-description".to_vec())),
        expiry: Expiry::Clear,
    };
    let expiring = Mutation::Put {
        ns: INST_NS,
        store: StoreKind::Kv,
        key: b"expiring".to_vec(),
        expect: Precondition::Absent,
        value: b"sealed-value-of-expiring".to_vec(),
        description: DescriptionChange::Set(None),
        expiry: Expiry::In(1),
    };
    let credential = Mutation::PutCredential {
        ns: INST_NS,
        other_ns: None,
        expect: Precondition::Absent,
        credential: credential("gh"),
        expiry: Expiry::Clear,
    };
    commit_ok(
        b,
        &[INST_NS],
        vec![
            described,
            put(INST_NS, "plain", b"sealed-value-of-plain"),
            expiring,
            credential,
            Mutation::PutFlow {
                flow: flow("flow-pending", "state-1"),
            },
            Mutation::PutFlow {
                flow: flow("flow-done", "state-2"),
            },
            Mutation::FinishFlow {
                flow_id: "flow-done".into(),
                status: FlowStatus::Completed,
                error: None,
                access_token: Some(b"sealed-token-of-flow-done".to_vec()),
            },
        ],
    )
    .await;
    put_ok(b, APP_NS, "shared", b"sealed-value-of-shared").await;
}

fn credential(key: &str) -> CredentialWrite {
    CredentialWrite {
        key: key.as_bytes().to_vec(),
        owner: CredentialOwner::Installation,
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

fn flow(flow_id: &str, state: &str) -> FlowRow {
    let now = now_millis();
    FlowRow {
        flow_id: flow_id.to_owned(),
        ns: INST_NS,
        installation_id: "i1".into(),
        provider: "github".into(),
        store_key: b"gh".to_vec(),
        store_owner: CredentialOwner::Installation,
        scopes: Vec::new(),
        return_to: None,
        state_mac: format!("mac-of-{state}").into_bytes(),
        verifier: format!("sealed-verifier-of-{flow_id}").into_bytes(),
        status: FlowStatus::Pending,
        error: None,
        access_token: None,
        taken: false,
        expires_at: now + 600_000,
        created_at: now,
    }
}

/// `bytes` "re-sealed": tagged, so the cases can tell old from new.
fn resealed(bytes: &[u8]) -> Vec<u8> {
    [b"new:".as_slice(), bytes].concat()
}

/// The swap of everything `rows` holds, re-sealed by [`resealed`], under fence `lease_id`.
fn rekey_of(rows: &SealedRows, lease_id: &str, old: Vec<u8>) -> Rekey {
    let records = rows
        .records
        .iter()
        .map(|r| {
            let mut r = r.clone();
            r.value = resealed(&r.value);
            r.description = r.description.as_deref().map(resealed);
            r
        })
        .collect();
    let credentials = rows
        .credentials
        .iter()
        .map(|c| {
            let mut c = c.clone();
            c.metadata = resealed(&c.metadata);
            c.secret = resealed(&c.secret);
            c
        })
        .collect();
    let flows = rows
        .flows
        .iter()
        .map(|f| {
            let new = SealedFlowRow {
                flow_id: f.flow_id.clone(),
                verifier: resealed(&f.verifier),
                access_token: f.access_token.as_deref().map(resealed),
            };
            (f.clone(), new)
        })
        .collect();
    let mut audit = event("admin.rotate_installation_key");
    audit.installation_id = Some("i1".into());
    Rekey {
        ns: INST_NS,
        lease_id: lease_id.to_owned(),
        old_wrapped_key: old,
        new_wrapped_key: b"new-wrapped-key".to_vec(),
        records,
        credentials,
        flows,
        audit,
    }
}

async fn commit_guarded<B: Backend>(b: &B, ns: Ns, keys: Vec<KeyCheck>) -> Result<(), CoreError> {
    b.commit(Commit {
        guards: vec![ns],
        keys,
        mutations: vec![put(ns, "probe", b"sealed-probe")],
        audit: Vec::new(),
    })
    .await
    .map(|_| ())
}

async fn sealed<B: Backend>(b: &B) -> SealedRows {
    b.namespace_sealed_rows(INST_NS)
        .await
        .expect("namespace_sealed_rows")
}

/// Every ciphertext of the installation, in one list, to compare before and after.
fn ciphertexts(rows: &SealedRows) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for r in &rows.records {
        out.push(r.value.clone());
        out.extend(r.description.clone());
    }
    for c in &rows.credentials {
        out.push(c.metadata.clone());
        out.push(c.secret.clone());
    }
    for f in &rows.flows {
        out.push(f.verifier.clone());
        out.extend(f.access_token.clone());
    }
    out
}

pub async fn rekey_swaps_every_sealed_row_and_the_key_at_once<B: Backend>(b: &B) {
    populate(b).await;
    // The expired record still holds a ciphertext under the key, so it is re-sealed too.
    sleep_past(now_millis() + 1_000).await;
    let rows = sealed(b).await;
    let mut keys: Vec<(i64, Vec<u8>)> = rows
        .records
        .iter()
        .map(|r| (r.store.code(), r.key.clone()))
        .collect();
    keys.sort();
    let mut expected = vec![
        (StoreKind::Secrets.code(), b"described".to_vec()),
        (StoreKind::Kv.code(), b"expiring".to_vec()),
        (StoreKind::Kv.code(), b"plain".to_vec()),
    ];
    expected.sort();
    assert_eq!(
        keys, expected,
        "every record of the namespace, expired or not, none of another"
    );
    let described = rows
        .records
        .iter()
        .find(|r| r.key == b"described")
        .expect("the described record");
    assert_eq!(
        described.description.as_deref(),
        Some(&b"sealed-description"[..])
    );
    assert_eq!(rows.credentials.len(), 1);
    assert_eq!(rows.credentials[0].owner, CredentialOwner::Installation);
    assert_eq!(rows.credentials[0].secret, b"sealed-secret-of-gh");
    let mut flows: Vec<_> = rows
        .flows
        .iter()
        .map(|f| (f.flow_id.as_str(), f.access_token.is_some()))
        .collect();
    flows.sort();
    assert_eq!(flows, vec![("flow-done", true), ("flow-pending", false)]);
    let versions_before: Vec<u64> = rows.records.iter().map(|r| r.version).collect();

    assert!(
        b.fence_namespace(INST_NS, "lease-1", 60_000)
            .await
            .expect("fence")
    );
    let counts = b
        .rekey_namespace(rekey_of(&rows, "lease-1", wrapped(INST_NS)))
        .await
        .expect("the swap applies");
    assert_eq!(
        counts,
        RekeyCounts {
            records: 3,
            credentials: 1,
            flows: 2
        }
    );
    assert_eq!(
        b.namespace_key(INST_NS).await.expect("namespace_key"),
        Some(b"new-wrapped-key".to_vec())
    );
    let after = sealed(b).await;
    let expected: Vec<Vec<u8>> = ciphertexts(&rows).iter().map(|c| resealed(c)).collect();
    assert_eq!(ciphertexts(&after), expected, "every ciphertext replaced");
    assert_eq!(
        after.records.iter().map(|r| r.version).collect::<Vec<_>>(),
        versions_before,
        "versions stay"
    );
    let rec = read(b, INST_NS, "plain").await.expect("the record reads");
    assert_eq!(rec.value, resealed(b"sealed-value-of-plain"));
    let cred = b
        .read_credential(&[INST_NS], b"gh")
        .await
        .expect("read_credential")
        .expect("the credential reads");
    assert_eq!(cred.write.secret, resealed(b"sealed-secret-of-gh"));
    assert_eq!(cred.version, rows.credentials[0].version);
    let done = b
        .flow_by_id("flow-done")
        .await
        .expect("flow_by_id")
        .expect("the flow");
    assert_eq!(
        done.access_token,
        Some(resealed(b"sealed-token-of-flow-done"))
    );
    assert_eq!(done.status, FlowStatus::Completed);
    // Another namespace is untouched.
    let shared = read(b, APP_NS, "shared").await.expect("the shared record");
    assert_eq!(shared.value, b"sealed-value-of-shared");
    // The fence is down: commits under the new key apply, under the old key they do not.
    commit_guarded(
        b,
        INST_NS,
        vec![KeyCheck {
            ns: INST_NS,
            wrapped_key: b"new-wrapped-key".to_vec(),
        }],
    )
    .await
    .expect("a commit sealed under the new key applies");
    let stale = commit_guarded(
        b,
        INST_NS,
        vec![KeyCheck {
            ns: INST_NS,
            wrapped_key: wrapped(INST_NS),
        }],
    )
    .await;
    assert!(matches!(stale, Err(CoreError::Rekeying)), "{stale:?}");
    let events = b.audit_query(&audit_all()).await.expect("audit_query");
    assert!(
        events
            .iter()
            .any(|e| e.operation == "admin.rotate_installation_key"
                && e.installation_id.as_deref() == Some("i1")),
        "the swap writes its audit event"
    );
}

pub async fn rekey_fence_holds_off_the_namespace_commits_only<B: Backend>(b: &B) {
    populate(b).await;
    assert!(matches!(
        b.fence_namespace(424_242, "lease-x", 60_000).await,
        Err(CoreError::NotFound(_))
    ));
    assert!(
        b.fence_namespace(INST_NS, "lease-1", 60_000)
            .await
            .expect("fence")
    );
    assert!(
        !b.fence_namespace(INST_NS, "lease-2", 60_000)
            .await
            .expect("fence"),
        "one fence at a time"
    );
    let fenced = commit_guarded(b, INST_NS, Vec::new()).await;
    assert!(matches!(fenced, Err(CoreError::Rekeying)), "{fenced:?}");
    assert!(
        read(b, INST_NS, "probe").await.is_none(),
        "the fenced commit applied nothing"
    );
    assert!(
        read(b, INST_NS, "plain").await.is_some(),
        "reads go on under the fence"
    );
    commit_guarded(b, APP_NS, Vec::new())
        .await
        .expect("another namespace's commits apply");
    assert!(
        !b.unfence_namespace(INST_NS, "lease-2")
            .await
            .expect("unfence"),
        "only the holder takes the fence down"
    );
    assert!(
        b.unfence_namespace(INST_NS, "lease-1")
            .await
            .expect("unfence")
    );
    commit_guarded(b, INST_NS, Vec::new())
        .await
        .expect("commits apply once the fence is down");
    // An expired fence holds nothing off and may be replaced.
    assert!(
        b.fence_namespace(INST_NS, "lease-3", 1)
            .await
            .expect("fence")
    );
    tokio::time::sleep(Duration::from_millis(50)).await;
    commit_guarded(b, INST_NS, Vec::new())
        .await
        .expect("an expired fence holds nothing off");
    assert!(
        b.fence_namespace(INST_NS, "lease-4", 60_000)
            .await
            .expect("fence"),
        "an expired fence is replaced"
    );
    // A key check of another wrapped key fails with or without a fence; the right one passes.
    assert!(
        b.unfence_namespace(INST_NS, "lease-4")
            .await
            .expect("unfence")
    );
    let wrong = commit_guarded(
        b,
        INST_NS,
        vec![KeyCheck {
            ns: INST_NS,
            wrapped_key: b"some-other-wrapped-key".to_vec(),
        }],
    )
    .await;
    assert!(matches!(wrong, Err(CoreError::Rekeying)), "{wrong:?}");
    commit_guarded(
        b,
        INST_NS,
        vec![KeyCheck {
            ns: INST_NS,
            wrapped_key: wrapped(INST_NS),
        }],
    )
    .await
    .expect("a commit sealed under the current key applies");
}

pub async fn rekey_swap_that_lost_a_race_changes_nothing<B: Backend>(b: &B) {
    populate(b).await;
    let rows = sealed(b).await;
    let unchanged = |after: &SealedRows| ciphertexts(after) == ciphertexts(&rows);

    // Without the fence, or under another lease, or over another wrapped key.
    let no_fence = b
        .rekey_namespace(rekey_of(&rows, "lease-1", wrapped(INST_NS)))
        .await;
    assert!(
        matches!(no_fence, Err(CoreError::WriteConflict)),
        "{no_fence:?}"
    );
    assert!(
        b.fence_namespace(INST_NS, "lease-1", 1)
            .await
            .expect("fence")
    );
    let other_lease = b
        .rekey_namespace(rekey_of(&rows, "lease-2", wrapped(INST_NS)))
        .await;
    assert!(matches!(other_lease, Err(CoreError::WriteConflict)));
    let other_key = b
        .rekey_namespace(rekey_of(&rows, "lease-1", b"not-the-key".to_vec()))
        .await;
    assert!(matches!(other_key, Err(CoreError::WriteConflict)));
    assert!(unchanged(&sealed(b).await));

    // The short lease expired: a writer got in and replaced a record the swap read.
    tokio::time::sleep(Duration::from_millis(50)).await;
    commit_ok(b, &[INST_NS], vec![put(INST_NS, "plain", b"sealed-later")]).await;
    let moved = b
        .rekey_namespace(rekey_of(&rows, "lease-1", wrapped(INST_NS)))
        .await;
    assert!(matches!(moved, Err(CoreError::WriteConflict)), "{moved:?}");
    let now = sealed(b).await;
    assert_eq!(
        b.namespace_key(INST_NS).await.expect("namespace_key"),
        Some(wrapped(INST_NS)),
        "the key stays"
    );
    assert!(
        now.records.iter().all(|r| !r.value.starts_with(b"new:")),
        "no record was re-sealed"
    );

    // A row the swap did not read: it would be left under the old key.
    let rows = now;
    commit_ok(
        b,
        &[INST_NS],
        vec![put(INST_NS, "newcomer", b"sealed-newcomer")],
    )
    .await;
    let grown = b
        .rekey_namespace(rekey_of(&rows, "lease-1", wrapped(INST_NS)))
        .await;
    assert!(matches!(grown, Err(CoreError::WriteConflict)), "{grown:?}");

    // A flow whose token was taken since.
    let rows = sealed(b).await;
    commit_ok(
        b,
        &[INST_NS],
        vec![Mutation::TakeFlowToken {
            flow_id: "flow-done".into(),
        }],
    )
    .await;
    let taken = b
        .rekey_namespace(rekey_of(&rows, "lease-1", wrapped(INST_NS)))
        .await;
    assert!(matches!(taken, Err(CoreError::WriteConflict)), "{taken:?}");

    // Read again, the swap applies (the expired fence is still this lease's).
    let rows = sealed(b).await;
    let counts = b
        .rekey_namespace(rekey_of(&rows, "lease-1", wrapped(INST_NS)))
        .await
        .expect("the swap applies");
    assert_eq!(counts.records, 4);
    assert_eq!(counts.flows, 2);

    // A namespace that is gone.
    assert!(
        b.uninstall("i1", event("uninstall"))
            .await
            .expect("uninstall")
    );
    let gone = b
        .rekey_namespace(rekey_of(&rows, "lease-1", b"new-wrapped-key".to_vec()))
        .await;
    assert!(matches!(gone, Err(CoreError::NotFound(_))), "{gone:?}");
}
