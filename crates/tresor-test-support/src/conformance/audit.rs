//! Cases on audit events (committed with writes, or queued) and on purging expired records.

use std::time::Duration;

use tresor_core::audit::{AuditEvent, AuditQuery};
use tresor_core::backend::{Applied, Backend, Commit, DescriptionChange, Expiry, Precondition};

use super::helpers::*;

pub async fn audit_of_writes_commits_with_them<B: Backend>(b: &B) {
    let ns = namespace(b, 1).await;
    let mut ev = event("put");
    ev.installation_id = Some("i1".into());
    ev.store = Some("kv".into());
    ev.key = Some("k".into());
    ev.status = 201;
    b.commit(Commit {
        guards: vec![ns],
        keys: Vec::new(),
        mutations: vec![put(ns, "k", b"v")],
        audit: vec![ev.clone()],
    })
    .await
    .expect("commit");
    let mut admin_ev = event("put_app");
    admin_ev.request_id = "req-admin".into();
    b.put_app("app1", &[], ns_row(APP_NS), admin_ev.clone())
        .await
        .expect("put_app");
    let events = b.audit_query(&audit_all()).await.expect("query");
    let found = events
        .iter()
        .find(|e| e.operation == "put")
        .expect("the write's event is committed with it");
    assert!(found.id > 0, "the backend assigns ids");
    assert_eq!(
        AuditEvent {
            id: 0,
            ..found.clone()
        },
        ev
    );
    let admin = events
        .iter()
        .find(|e| e.operation == "put_app")
        .expect("the admin action's event is committed with it");
    assert_eq!(
        AuditEvent {
            id: 0,
            ..admin.clone()
        },
        admin_ev
    );
    assert!(events.windows(2).all(|w| w[0].id < w[1].id), "oldest first");
}

pub async fn audit_enqueue_becomes_queryable<B: Backend>(b: &B) {
    let mut events = Vec::new();
    for i in 0..5 {
        let mut ev = event("read");
        ev.request_id = format!("req-{i}");
        ev.status = 200;
        events.push(ev);
    }
    b.audit_enqueue(events[..2].to_vec()).expect("enqueue");
    b.audit_enqueue(events[2..].to_vec()).expect("enqueue");
    b.audit_enqueue(Vec::new())
        .expect("an empty enqueue is fine");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    loop {
        let stored = b.audit_query(&audit_all()).await.expect("query");
        if stored.len() >= events.len() {
            let ids: Vec<String> = stored.iter().map(|e| e.request_id.clone()).collect();
            let want: Vec<String> = events.iter().map(|e| e.request_id.clone()).collect();
            assert_eq!(ids, want, "queued events keep their order");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "enqueued audit events must be committed within 2 s ({} of {})",
            stored.len(),
            events.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub async fn audit_filters_and_paging<B: Backend>(b: &B) {
    let spec = [
        ("i1", "acct1", 1_000),
        ("i2", "acct1", 2_000),
        ("i1", "acct1", 3_000),
        ("i3", "acct2", 4_000),
        ("i1", "acct1", 5_000),
    ];
    let events: Vec<AuditEvent> = spec
        .iter()
        .enumerate()
        .map(|(n, (inst, acct, time))| {
            let mut ev = event("get");
            ev.request_id = format!("r{n}");
            ev.installation_id = Some((*inst).into());
            ev.account_id = Some((*acct).into());
            ev.time = *time;
            ev
        })
        .collect();
    // No admin call before: these are the only events stored.
    b.commit(Commit {
        guards: Vec::new(),
        keys: Vec::new(),
        mutations: Vec::new(),
        audit: events,
    })
    .await
    .expect("commit");
    let query = |f: &dyn Fn(&mut AuditQuery)| {
        let mut q = audit_all();
        f(&mut q);
        async move {
            b.audit_query(&q)
                .await
                .expect("query")
                .into_iter()
                .map(|e| e.request_id)
                .collect::<Vec<_>>()
        }
    };
    let all = b.audit_query(&audit_all()).await.expect("query");
    assert_eq!(all.len(), 5);
    assert_eq!(query(&|_| {}).await, ["r0", "r1", "r2", "r3", "r4"]);
    assert_eq!(
        query(&|q| q.installation_id = Some("i1".into())).await,
        ["r0", "r2", "r4"]
    );
    assert_eq!(
        query(&|q| q.account_id = Some("acct1".into())).await,
        ["r0", "r1", "r2", "r4"]
    );
    assert_eq!(
        query(&|q| {
            q.account_id = Some("acct1".into());
            q.installation_id = Some("i2".into());
        })
        .await,
        ["r1"]
    );
    assert_eq!(
        query(&|q| q.since = Some(2_000)).await,
        ["r1", "r2", "r3", "r4"],
        "since is inclusive"
    );
    assert_eq!(
        query(&|q| q.until = Some(3_000)).await,
        ["r0", "r1"],
        "until is exclusive"
    );
    assert_eq!(
        query(&|q| {
            q.since = Some(2_000);
            q.until = Some(4_001);
        })
        .await,
        ["r1", "r2", "r3"]
    );
    assert_eq!(query(&|q| q.limit = 2).await, ["r0", "r1"]);
    assert!(query(&|q| q.limit = 0).await.is_empty());
    // Paging with `after` visits every matching event once.
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let mut q = audit_all();
        q.installation_id = Some("i1".into());
        q.after = after;
        q.limit = 2;
        let page = b.audit_query(&q).await.expect("query");
        let Some(last) = page.last() else { break };
        after = Some(last.id);
        seen.extend(page.into_iter().map(|e| e.request_id));
    }
    assert_eq!(seen, ["r0", "r2", "r4"]);
    let after_second = all[1].id;
    assert_eq!(
        query(&|q| q.after = Some(after_second)).await,
        ["r2", "r3", "r4"]
    );
}

pub async fn purge_expired_removes_expired_rows<B: Backend>(b: &B) {
    let ns = namespace(b, 1).await;
    let short = |k| {
        put_with(
            ns,
            k,
            Precondition::Any,
            DescriptionChange::Keep,
            Expiry::In(1),
        )
    };
    let applied = commit_ok(
        b,
        &[ns],
        vec![
            short("a"),
            short("b"),
            short("c"),
            put(ns, "forever", b"v"),
            put_with(
                ns,
                "later",
                Precondition::Any,
                DescriptionChange::Keep,
                Expiry::In(3600),
            ),
        ],
    )
    .await;
    assert_eq!(
        b.purge_expired(100).await.expect("purge"),
        0,
        "nothing has expired yet"
    );
    let last_expiry = applied[..3]
        .iter()
        .filter_map(|a| expires_of(*a))
        .max()
        .expect("expiries");
    sleep_past(last_expiry).await;
    assert_eq!(
        b.purge_expired(2).await.expect("purge"),
        2,
        "purge honours its limit"
    );
    assert_eq!(b.purge_expired(100).await.expect("purge"), 1);
    assert_eq!(b.purge_expired(100).await.expect("purge"), 0);
    assert_eq!(
        list_keys(b, ns, "", None, 10).await,
        keys(&["forever", "later"])
    );
    // The purged keys are writable as new records, with new versions.
    let again = put_ok(b, ns, "a", b"v").await;
    assert!(matches!(again, Applied::Put { created: true, .. }));
    assert!(version_of(again) > version_of(applied[4]));
}

pub async fn purge_audit_removes_old_events<B: Backend>(b: &B) {
    let mut events = Vec::new();
    for (i, time) in [1_000, 2_000, 3_000, 4_000].into_iter().enumerate() {
        let mut ev = event("read");
        ev.request_id = format!("req-{i}");
        ev.time = time;
        events.push(ev);
    }
    let ns = namespace(b, 1).await;
    b.commit(Commit {
        guards: vec![ns],
        keys: Vec::new(),
        mutations: vec![],
        audit: events,
    })
    .await
    .expect("commit");
    assert_eq!(b.purge_audit(3_000, 1).await.expect("purge"), 1);
    assert_eq!(b.purge_audit(3_000, 100).await.expect("purge"), 1);
    assert_eq!(b.purge_audit(3_000, 100).await.expect("purge"), 0);
    let left: Vec<i64> = b
        .audit_query(&audit_all())
        .await
        .expect("query")
        .into_iter()
        .filter(|e| e.operation == "read")
        .map(|e| e.time)
        .collect();
    assert_eq!(left, [3_000, 4_000], "events at or after the cut stay");
}
