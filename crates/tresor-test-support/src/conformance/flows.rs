//! Cases on OAuth flows and the refresh lease of credentials: round trips of every flow field by
//! id and by state, unique ids and states, finishing a flow once, handing its token out once,
//! the lease's compare-and-set, what uninstalling or deleting removes, and the purge that keeps
//! flows a day past their expiry.

use tresor_core::CoreError;
use tresor_core::backend::{
    Applied, Backend, CredentialOwner, CredentialRow, CredentialWrite, DescriptionChange, Expiry,
    FlowRow, FlowStatus, Mutation, Precondition,
};
use tresor_core::model::{Millis, Ns, now_millis};

use super::helpers::*;

/// How long after its expiry a flow survives the purge (a day).
const FLOW_RETENTION: Millis = 24 * 60 * 60 * 1000;

/// A pending flow of the installation in `ns` that expires in ten minutes; every optional part
/// is empty, the sealed parts name the flow.
fn flow(ns: Ns, flow_id: &str, state: &str) -> FlowRow {
    let now = now_millis();
    FlowRow {
        flow_id: flow_id.to_owned(),
        ns,
        installation_id: "i1".into(),
        provider: "github".into(),
        store_key: format!("key-of-{flow_id}").into_bytes(),
        store_owner: CredentialOwner::Installation,
        scopes: Vec::new(),
        return_to: None,
        state_mac: state_mac(state),
        verifier: format!("sealed-verifier-of-{flow_id}").into_bytes(),
        status: FlowStatus::Pending,
        error: None,
        access_token: None,
        taken: false,
        expires_at: now + 600_000,
        created_at: now,
    }
}

/// A flow that expired `ago` milliseconds before now.
fn expired_flow(ns: Ns, flow_id: &str, state: &str, ago: Millis) -> FlowRow {
    FlowRow {
        expires_at: now_millis() - ago,
        ..flow(ns, flow_id, state)
    }
}

fn state_mac(state: &str) -> Vec<u8> {
    format!("mac-of-state-{state}").into_bytes()
}

fn token(flow_id: &str) -> Vec<u8> {
    format!("sealed-token-of-{flow_id}").into_bytes()
}

fn finish(
    flow_id: &str,
    status: FlowStatus,
    error: Option<&str>,
    token: Option<&[u8]>,
) -> Mutation {
    Mutation::FinishFlow {
        flow_id: flow_id.to_owned(),
        status,
        error: error.map(str::to_owned),
        access_token: token.map(<[u8]>::to_vec),
    }
}

fn complete(flow_id: &str) -> Mutation {
    finish(flow_id, FlowStatus::Completed, None, Some(&token(flow_id)))
}

fn take(flow_id: &str) -> Mutation {
    Mutation::TakeFlowToken {
        flow_id: flow_id.to_owned(),
    }
}

/// Commits `m` guarded by the installation's namespace; answers its one `Applied`.
async fn commit_one<B: Backend>(b: &B, m: Mutation) -> Result<Applied, CoreError> {
    commit(b, &[INST_NS], vec![m]).await.map(|applied| {
        assert_eq!(applied.len(), 1, "one Applied per mutation");
        applied[0]
    })
}

async fn put_flow<B: Backend>(b: &B, row: FlowRow) {
    let applied = commit_ok(b, &[row.ns], vec![Mutation::PutFlow { flow: row }]).await;
    assert_eq!(
        applied,
        vec![Applied::Checked],
        "a flow put answers Checked"
    );
}

async fn by_id<B: Backend>(b: &B, flow_id: &str) -> Option<FlowRow> {
    b.flow_by_id(flow_id).await.expect("flow_by_id")
}

async fn by_state<B: Backend>(b: &B, state: &str) -> Option<FlowRow> {
    b.flow_by_state(&state_mac(state))
        .await
        .expect("flow_by_state")
}

/// The flow as stored; panics when it is gone.
async fn stored<B: Backend>(b: &B, flow_id: &str) -> FlowRow {
    by_id(b, flow_id).await.expect("the flow is stored")
}

/// Asserts that `m` fails with `WriteConflict` and that nothing of its commit (nor a record
/// written beside it) applied.
async fn assert_conflicts<B: Backend>(b: &B, m: Mutation, what: &str) {
    let result = commit(b, &[INST_NS], vec![put(INST_NS, "bystander", b"x"), m]).await;
    assert!(
        matches!(result, Err(CoreError::WriteConflict)),
        "{what}: expected WriteConflict, got {result:?}"
    );
    assert!(
        read(b, INST_NS, "bystander").await.is_none(),
        "{what}: nothing applies"
    );
}

fn assert_same_flow(got: &FlowRow, want: &FlowRow) {
    assert_eq!(got.flow_id, want.flow_id);
    assert_eq!(got.ns, want.ns);
    assert_eq!(got.installation_id, want.installation_id);
    assert_eq!(got.provider, want.provider);
    assert_eq!(
        got.store_key, want.store_key,
        "store key bytes come back exactly"
    );
    assert_eq!(got.store_owner, want.store_owner);
    assert_eq!(got.scopes, want.scopes);
    assert_eq!(got.return_to, want.return_to);
    assert_eq!(
        got.state_mac, want.state_mac,
        "state MAC bytes come back exactly"
    );
    assert_eq!(
        got.verifier, want.verifier,
        "verifier bytes come back exactly"
    );
    assert_eq!(got.status, want.status);
    assert_eq!(got.error, want.error);
    assert_eq!(
        got.access_token, want.access_token,
        "token bytes come back exactly"
    );
    assert_eq!(got.taken, want.taken);
    assert_eq!(got.expires_at, want.expires_at);
    assert_eq!(
        got.created_at, want.created_at,
        "created_at is stored as given"
    );
}

pub async fn flow_put_then_read_round_trips<B: Backend>(b: &B) {
    tenant(b).await;
    let full = FlowRow {
        flow_id: "flow-full".into(),
        ns: INST_NS,
        installation_id: "i1".into(),
        provider: "github-enterprise".into(),
        store_key: vec![0, b'k', 0xFF, 0xC3, 0xA9, 0],
        store_owner: CredentialOwner::Account,
        scopes: strings(&["repo", "read:user", "é"]),
        return_to: Some("https://app.example/setup?x=1&y=ü".into()),
        state_mac: (0..=255).collect(),
        verifier: vec![0xFF, 0, 1, 2, 0],
        status: FlowStatus::Completed,
        error: Some("{\"error\":\"partial\"}".into()),
        access_token: Some(vec![0, 0xFE, 0xFF, 0]),
        taken: true,
        expires_at: 4_102_444_800_000,
        created_at: 1_234_567,
    };
    put_flow(b, full.clone()).await;
    let plain = flow(INST_NS, "flow-plain", "plain");
    put_flow(b, plain.clone()).await;

    assert_same_flow(&stored(b, "flow-full").await, &full);
    let got = b
        .flow_by_state(&full.state_mac)
        .await
        .expect("flow_by_state")
        .expect("found by its state MAC");
    assert_same_flow(&got, &full);
    assert_same_flow(&stored(b, "flow-plain").await, &plain);
    assert_same_flow(&by_state(b, "plain").await.expect("found"), &plain);

    assert!(by_id(b, "missing").await.is_none());
    assert!(
        by_id(b, "FLOW-PLAIN").await.is_none(),
        "ids compare exactly"
    );
    assert!(by_state(b, "missing").await.is_none());
    assert!(
        b.flow_by_state(&state_mac("plain")[1..])
            .await
            .expect("flow_by_state")
            .is_none(),
        "state MACs compare exactly"
    );

    let commits = b
        .audit_query(&audit_all())
        .await
        .expect("audit")
        .into_iter()
        .filter(|e| e.operation == "commit")
        .count();
    assert_eq!(commits, 2, "each flow commit writes its audit event");
}

pub async fn flow_ids_and_states_are_unique<B: Backend>(b: &B) {
    tenant(b).await;
    let first = flow(INST_NS, "f1", "s1");
    put_flow(b, first.clone()).await;
    let duplicates = [
        ("a duplicate state", flow(INST_NS, "f2", "s1")),
        ("a duplicate id", flow(INST_NS, "f1", "s2")),
    ];
    for (what, row) in duplicates {
        let result = commit(
            b,
            &[INST_NS],
            vec![
                put(INST_NS, "bystander", b"x"),
                Mutation::PutFlow { flow: row },
            ],
        )
        .await;
        assert!(
            matches!(result, Err(CoreError::Conflict(_))),
            "{what}: expected Conflict, got {result:?}"
        );
        assert!(
            read(b, INST_NS, "bystander").await.is_none(),
            "{what}: nothing applies"
        );
    }
    assert!(by_id(b, "f2").await.is_none());
    assert!(by_state(b, "s2").await.is_none());
    assert_same_flow(&stored(b, "f1").await, &first);
    // Two flows in one commit: the second sees the first.
    let result = commit(
        b,
        &[INST_NS],
        vec![
            Mutation::PutFlow {
                flow: flow(INST_NS, "f3", "s3"),
            },
            Mutation::PutFlow {
                flow: flow(INST_NS, "f4", "s3"),
            },
        ],
    )
    .await;
    assert!(matches!(result, Err(CoreError::Conflict(_))), "{result:?}");
    assert!(
        by_id(b, "f3").await.is_none(),
        "nothing of the commit applies"
    );
    // Fresh ids and states go in.
    put_flow(b, flow(INST_NS, "f2", "s2")).await;
    assert_eq!(stored(b, "f2").await.state_mac, state_mac("s2"));
}

pub async fn finish_flow_once_while_pending<B: Backend>(b: &B) {
    tenant(b).await;
    put_flow(b, flow(INST_NS, "ok", "s-ok")).await;
    put_flow(b, flow(INST_NS, "denied", "s-denied")).await;

    assert_eq!(
        commit_one(b, complete("ok")).await.expect("finish"),
        Applied::Checked
    );
    let done = stored(b, "ok").await;
    assert_eq!(done.status, FlowStatus::Completed);
    assert_eq!(done.access_token, Some(token("ok")));
    assert_eq!(done.error, None);
    assert!(!done.taken);
    assert_eq!(done.verifier, b"sealed-verifier-of-ok", "the rest stays");

    let failed = finish(
        "denied",
        FlowStatus::Failed,
        Some("access_denied: the user said no"),
        None,
    );
    assert_eq!(
        commit_one(b, failed).await.expect("finish"),
        Applied::Checked
    );
    let denied = stored(b, "denied").await;
    assert_eq!(denied.status, FlowStatus::Failed);
    assert_eq!(
        denied.error.as_deref(),
        Some("access_denied: the user said no")
    );
    assert_eq!(denied.access_token, None);

    // A finished flow never finishes again, whichever way.
    for id in ["ok", "denied"] {
        assert_conflicts(b, complete(id), "completing a finished flow").await;
        assert_conflicts(
            b,
            finish(id, FlowStatus::Failed, Some("late"), None),
            "failing a finished flow",
        )
        .await;
    }
    let kept = stored(b, "ok").await;
    assert_eq!(
        (kept.status, kept.access_token),
        (FlowStatus::Completed, Some(token("ok")))
    );
    assert_eq!(stored(b, "denied").await.status, FlowStatus::Failed);

    // An expired flow cannot finish; a missing one neither.
    put_flow(b, expired_flow(INST_NS, "late", "s-late", 1_000)).await;
    assert_conflicts(b, complete("late"), "completing an expired flow").await;
    assert_conflicts(
        b,
        finish("late", FlowStatus::Failed, Some("x"), None),
        "failing an expired flow",
    )
    .await;
    let late = stored(b, "late").await;
    assert_eq!(
        (late.status, late.access_token),
        (FlowStatus::Pending, None)
    );
    assert_conflicts(b, complete("missing"), "completing a missing flow").await;
}

pub async fn take_flow_token_once<B: Backend>(b: &B) {
    tenant(b).await;
    put_flow(b, flow(INST_NS, "ok", "s-ok")).await;
    commit_one(b, complete("ok")).await.expect("finish");

    assert_eq!(
        commit_one(b, take("ok")).await.expect("take"),
        Applied::Checked
    );
    let taken = stored(b, "ok").await;
    assert!(taken.taken, "the flow is marked taken");
    assert_eq!(taken.access_token, None, "the token is gone from the row");
    assert_eq!(
        taken.status,
        FlowStatus::Completed,
        "and it stays completed"
    );
    assert_conflicts(b, take("ok"), "taking the token twice").await;
    assert_conflicts(b, complete("ok"), "finishing a taken flow").await;

    // Pending, failed, expired or missing flows hand out nothing.
    put_flow(b, flow(INST_NS, "pending", "s-pending")).await;
    assert_conflicts(b, take("pending"), "taking from a pending flow").await;
    put_flow(b, flow(INST_NS, "failed", "s-failed")).await;
    commit_one(
        b,
        finish("failed", FlowStatus::Failed, Some("access_denied"), None),
    )
    .await
    .expect("finish");
    assert_conflicts(b, take("failed"), "taking from a failed flow").await;
    let expired = FlowRow {
        status: FlowStatus::Completed,
        access_token: Some(token("expired")),
        ..expired_flow(INST_NS, "expired", "s-expired", 1_000)
    };
    put_flow(b, expired).await;
    assert_conflicts(b, take("expired"), "taking from an expired flow").await;
    let kept = stored(b, "expired").await;
    assert!(!kept.taken);
    assert_eq!(kept.access_token, Some(token("expired")));
    assert_conflicts(b, take("missing"), "taking from a missing flow").await;

    // In one commit, the take sees the finish before it.
    put_flow(b, flow(INST_NS, "quick", "s-quick")).await;
    let applied = commit_ok(b, &[INST_NS], vec![complete("quick"), take("quick")]).await;
    assert_eq!(applied, vec![Applied::Checked, Applied::Checked]);
    let quick = stored(b, "quick").await;
    assert!(quick.taken && quick.access_token.is_none());
}

fn lease(ns: Ns, key: &str, expect_version: u64, lease_id: &str, until: Millis) -> Mutation {
    Mutation::AcquireCredentialLease {
        ns,
        key: key.as_bytes().to_vec(),
        expect_version,
        lease_id: lease_id.to_owned(),
        lease_until: until,
    }
}

fn oauth_cred(key: &str, secret: &str) -> CredentialWrite {
    CredentialWrite {
        key: key.as_bytes().to_vec(),
        owner: CredentialOwner::Installation,
        app_id: "app1".into(),
        provider: "github".into(),
        kind: "oauth2".into(),
        token_expires_at: Some(now_millis() + 60_000),
        scopes: strings(&["repo"]),
        needs_reconsent: false,
        metadata: b"sealed-metadata".to_vec(),
        secret: secret.as_bytes().to_vec(),
    }
}

fn put_oauth_cred(key: &str, secret: &str, expect: Precondition, expiry: Expiry) -> Mutation {
    Mutation::PutCredential {
        ns: INST_NS,
        other_ns: Some(ACCOUNT_NS),
        expect,
        credential: oauth_cred(key, secret),
        expiry,
    }
}

async fn live_cred<B: Backend>(b: &B, key: &str) -> CredentialRow {
    b.read_credential(&[INST_NS], key.as_bytes())
        .await
        .expect("read_credential")
        .expect("the credential is live")
}

fn lease_of(row: &CredentialRow) -> (Option<Millis>, Option<&str>) {
    (row.lease_until, row.lease_id.as_deref())
}

pub async fn credential_lease_is_a_compare_and_set<B: Backend>(b: &B) {
    tenant(b).await;
    let put = commit_ok(
        b,
        &[INST_NS],
        vec![put_oauth_cred(
            "gh",
            "tokens-1",
            Precondition::Absent,
            Expiry::Clear,
        )],
    )
    .await[0];
    let v1 = version_of(put);
    let before = live_cred(b, "gh").await;
    assert_eq!(lease_of(&before), (None, None));

    let until = now_millis() + 60_000;
    let applied = commit_one(b, lease(INST_NS, "gh", v1, "lease-a", until))
        .await
        .expect("acquire a free lease");
    assert_eq!(applied, Applied::Checked);
    let held = live_cred(b, "gh").await;
    assert_eq!(lease_of(&held), (Some(until), Some("lease-a")));
    assert_eq!(held.version, v1, "a lease does not change the version");
    assert_eq!(held.updated_at, before.updated_at, "nor updated_at");
    assert_eq!(held.write.secret, b"tokens-1", "nor the secret");
    let listed = b
        .list_credentials(&[INST_NS], &list_all())
        .await
        .expect("list_credentials");
    assert_eq!(listed.len(), 1);
    assert_eq!(lease_of(&listed[0]), (Some(until), Some("lease-a")));

    // Held: nobody else takes it, whatever version they name.
    let later = now_millis() + 90_000;
    assert_conflicts(
        b,
        lease(INST_NS, "gh", v1, "lease-b", later),
        "a held lease",
    )
    .await;
    assert_conflicts(
        b,
        lease(INST_NS, "gh", v1, "lease-a", later),
        "a held lease, even by its holder's id",
    )
    .await;
    assert_conflicts(
        b,
        lease(INST_NS, "gh", v1 + 1, "lease-b", later),
        "another version",
    )
    .await;
    assert_conflicts(
        b,
        lease(INST_NS, "missing", v1, "lease-b", later),
        "a missing key",
    )
    .await;
    assert_conflicts(
        b,
        lease(ACCOUNT_NS, "gh", v1, "lease-b", later),
        "the same key in another namespace",
    )
    .await;
    assert_eq!(
        lease_of(&live_cred(b, "gh").await),
        (Some(until), Some("lease-a"))
    );

    // A lease whose time has passed is free (its holder died).
    let v2 = version_of(
        commit_ok(
            b,
            &[INST_NS],
            vec![put_oauth_cred(
                "other",
                "t",
                Precondition::Absent,
                Expiry::Clear,
            )],
        )
        .await[0],
    );
    let past = now_millis() - 1_000;
    commit_one(b, lease(INST_NS, "other", v2, "dead-holder", past))
        .await
        .expect("acquire a free lease");
    assert_eq!(
        lease_of(&live_cred(b, "other").await),
        (Some(past), Some("dead-holder"))
    );
    let fresh = now_millis() + 60_000;
    commit_one(b, lease(INST_NS, "other", v2, "next-holder", fresh))
        .await
        .expect("an expired lease is taken over");
    assert_eq!(
        lease_of(&live_cred(b, "other").await),
        (Some(fresh), Some("next-holder"))
    );

    // The refreshed token set is put: the lease is cleared, and only the new version leases.
    let refreshed = commit_ok(
        b,
        &[INST_NS],
        vec![put_oauth_cred(
            "gh",
            "tokens-2",
            Precondition::Version(v1),
            Expiry::Keep,
        )],
    )
    .await[0];
    let v3 = version_of(refreshed);
    assert!(v3 > v1);
    let after = live_cred(b, "gh").await;
    assert_eq!(lease_of(&after), (None, None), "a put clears the lease");
    assert_eq!(after.write.secret, b"tokens-2");
    assert_conflicts(
        b,
        lease(INST_NS, "gh", v1, "lease-c", later),
        "the replaced version",
    )
    .await;
    commit_one(b, lease(INST_NS, "gh", v3, "lease-c", later))
        .await
        .expect("acquire on the new version");
    assert_eq!(
        lease_of(&live_cred(b, "gh").await),
        (Some(later), Some("lease-c"))
    );

    // A lease needs a live credential.
    let expiring = commit_ok(
        b,
        &[INST_NS],
        vec![put_oauth_cred(
            "short",
            "t",
            Precondition::Absent,
            Expiry::In(1),
        )],
    )
    .await[0];
    sleep_past(expires_of(expiring).expect("expiry")).await;
    assert_conflicts(
        b,
        lease(INST_NS, "short", version_of(expiring), "lease-d", later),
        "an expired credential",
    )
    .await;
}

pub async fn uninstall_removes_installation_flows<B: Backend>(b: &B) {
    let row = tenant(b).await;
    account(b, "acct2", ACCOUNT_NS + 1).await;
    let other = created(install(b, "i2", "app1", "acct2", INST_NS + 1, "t2").await);
    put_flow(b, flow(row.ns, "mine", "s-mine")).await;
    put_flow(b, flow(row.ns, "mine-done", "s-mine-done")).await;
    commit_one(b, complete("mine-done")).await.expect("finish");
    let theirs = FlowRow {
        installation_id: "i2".into(),
        ..flow(other.ns, "theirs", "s-theirs")
    };
    put_flow(b, theirs.clone()).await;

    assert!(
        b.uninstall("i1", event("uninstall"))
            .await
            .expect("uninstall")
    );
    for (id, state) in [("mine", "s-mine"), ("mine-done", "s-mine-done")] {
        assert!(
            by_id(b, id).await.is_none(),
            "{id} dies with its installation"
        );
        assert!(by_state(b, state).await.is_none(), "{state}");
    }
    assert_same_flow(&stored(b, "theirs").await, &theirs);

    // A late write for the old incarnation applies nothing.
    let late = commit(
        b,
        &[row.ns],
        vec![Mutation::PutFlow {
            flow: flow(row.ns, "late", "s-late"),
        }],
    )
    .await;
    assert!(matches!(late, Err(CoreError::Unauthenticated)), "{late:?}");
    assert!(by_id(b, "late").await.is_none());
    // Its id and state are free again.
    let again = created(install(b, "i1", "app1", "acct1", INST_NS + 2, "t9").await);
    put_flow(b, flow(again.ns, "mine", "s-mine")).await;
    assert_eq!(stored(b, "mine").await.ns, again.ns);
}

pub async fn deleting_an_app_or_account_removes_its_flows<B: Backend>(b: &B) {
    app(b, "app1", APP_NS).await;
    app(b, "app2", APP_NS + 1).await;
    account(b, "acct1", ACCOUNT_NS).await;
    account(b, "acct2", ACCOUNT_NS + 1).await;
    let a1 = created(install(b, "i1", "app1", "acct1", INST_NS, "t1").await);
    let a2 = created(install(b, "i2", "app2", "acct1", INST_NS + 1, "t2").await);
    let b2 = created(install(b, "i3", "app2", "acct2", INST_NS + 2, "t3").await);
    for (ns, id) in [(a1.ns, "f-a1"), (a2.ns, "f-a2"), (b2.ns, "f-b2")] {
        put_flow(b, flow(ns, id, id)).await;
    }
    assert!(
        b.delete_app("app1", event("delete_app"))
            .await
            .expect("delete_app")
    );
    assert!(by_id(b, "f-a1").await.is_none());
    assert!(by_id(b, "f-a2").await.is_some() && by_id(b, "f-b2").await.is_some());
    assert!(
        b.delete_account("acct1", event("delete_account"))
            .await
            .expect("delete_account")
    );
    assert!(by_id(b, "f-a2").await.is_none());
    assert!(by_state(b, "f-a2").await.is_none());
    assert!(
        by_id(b, "f-b2").await.is_some(),
        "other accounts keep theirs"
    );
}

pub async fn purge_expired_keeps_flows_a_day_past_expiry<B: Backend>(b: &B) {
    tenant(b).await;
    let minute = 60_000;
    let flows = [
        expired_flow(INST_NS, "old", "s-old", FLOW_RETENTION + minute),
        expired_flow(INST_NS, "older", "s-older", FLOW_RETENTION + 60 * minute),
        expired_flow(INST_NS, "almost-a-day", "s-almost", FLOW_RETENTION - minute),
        expired_flow(INST_NS, "recent", "s-recent", minute),
        flow(INST_NS, "live", "s-live"),
    ];
    for row in flows {
        put_flow(b, row).await;
    }
    let record = commit_ok(
        b,
        &[INST_NS],
        vec![put_with(
            INST_NS,
            "record",
            Precondition::Any,
            DescriptionChange::Keep,
            Expiry::In(1),
        )],
    )
    .await[0];
    sleep_past(expires_of(record).expect("expiry")).await;
    // Records, credentials and flows share one budget.
    assert_eq!(
        b.purge_expired(2).await.expect("purge"),
        2,
        "purge honours its limit"
    );
    assert_eq!(b.purge_expired(100).await.expect("purge"), 1);
    assert_eq!(b.purge_expired(100).await.expect("purge"), 0);
    assert!(read(b, INST_NS, "record").await.is_none());
    for id in ["old", "older"] {
        assert!(by_id(b, id).await.is_none(), "{id} expired over a day ago");
    }
    assert!(by_state(b, "s-old").await.is_none());
    for id in ["almost-a-day", "recent", "live"] {
        assert!(by_id(b, id).await.is_some(), "{id} is kept");
    }
    // A kept expired flow still answers that it expired: it refuses to finish.
    assert_conflicts(b, complete("recent"), "completing an expired flow").await;
}
