//! What only the PostgreSQL backend has to show: migrations that many servers may run at once
//! (a row lock, no advisory lock), a schema newer than the release refused, and writes from
//! several backends over one database (as several servers) that race on one key and lose
//! nothing, with versions that only ever increase.

use std::sync::Arc;

use tresor_backend_postgres::{PostgresBackend, PostgresOptions};
use tresor_core::CoreError;
use tresor_core::audit::AuditEvent;
use tresor_core::backend::{
    Applied, Backend, Commit, DescriptionChange, Expiry, Mutation, NamespaceRow, Precondition,
};
use tresor_core::model::StoreKind;

async fn connect(url: &str) -> PostgresBackend {
    PostgresBackend::connect(url, PostgresOptions::default())
        .await
        .expect("connect to the throwaway database")
}

fn event(operation: &str) -> AuditEvent {
    AuditEvent {
        id: 0,
        time: tresor_core::model::now_millis(),
        request_id: format!("req-{operation}"),
        token_id: None,
        app_id: None,
        account_id: None,
        installation_id: None,
        operation: operation.to_owned(),
        store: None,
        key: None,
        status: 200,
        remote_addr: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_servers_migrating_at_once_apply_each_migration_once() {
    let url = tresor_test_support::postgres::fresh_database().await;
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            let backend = connect(&url).await;
            backend.migrate().await
        }));
    }
    let mut applied_total = 0;
    for task in tasks {
        let report = task
            .await
            .expect("join")
            .expect("every migration run succeeds");
        assert_eq!(report.version, PostgresBackend::SCHEMA_VERSION);
        applied_total += report.applied.len();
    }
    assert_eq!(
        applied_total,
        usize::try_from(PostgresBackend::SCHEMA_VERSION).unwrap(),
        "each migration was applied by exactly one server"
    );
    let client = tresor_test_support::postgres::connect(&url).await;
    let rows = client
        .query(
            "SELECT version FROM tresor_schema_history ORDER BY version",
            &[],
        )
        .await
        .expect("history");
    assert_eq!(rows.len(), applied_total);
    // No advisory lock is used: the lock is a row.
    let locks: i64 = client
        .query_one("SELECT count(*) FROM tresor_migration_lock", &[])
        .await
        .expect("lock table")
        .get(0);
    assert_eq!(locks, 1);
}

/// Every released schema migrates to the current one with its data: a database as release
/// V1 left it (the V2 table dropped and its history row removed) gets V2 and keeps its rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_1_database_is_migrated_and_keeps_its_data() {
    let url = tresor_test_support::postgres::fresh_database().await;
    let backend = connect(&url).await;
    backend.migrate().await.expect("migrate");
    backend
        .meta_get_or_insert("kept", b"from v1")
        .await
        .expect("a row written under V1");
    let client = tresor_test_support::postgres::connect(&url).await;
    client
        .batch_execute(
            "DROP TABLE rekey_fences; DELETE FROM tresor_schema_history WHERE version = 2;",
        )
        .await
        .expect("take the database back to V1");
    assert_eq!(backend.schema_version().await.unwrap(), 1);
    let report = backend.migrate().await.expect("migrate from V1");
    assert_eq!(report.applied, vec![2]);
    assert_eq!(backend.schema_version().await.unwrap(), 2);
    let fences: i64 = client
        .query_one("SELECT count(*) FROM rekey_fences", &[])
        .await
        .expect("the V2 table exists")
        .get(0);
    assert_eq!(fences, 0);
    assert_eq!(
        backend.meta_get("kept").await.unwrap(),
        Some(b"from v1".to_vec())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_newer_than_the_release_is_refused() {
    let url = tresor_test_support::postgres::fresh_database().await;
    let backend = connect(&url).await;
    assert_eq!(backend.schema_version().await.unwrap(), 0);
    backend.migrate().await.expect("migrate");
    let client = tresor_test_support::postgres::connect(&url).await;
    client
        .execute(
            "INSERT INTO tresor_schema_history (version, name, applied_on, checksum) \
             VALUES (999, 'from_the_future', '2099-01-01T00:00:00Z', '0')",
            &[],
        )
        .await
        .expect("pretend a newer release migrated");
    let err = backend
        .migrate()
        .await
        .expect_err("a newer schema is refused");
    assert!(matches!(err, CoreError::Unavailable(_)), "{err:?}");
    assert!(err.to_string().contains("newer"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_writers_on_three_backends_lose_nothing_and_versions_increase() {
    let url = tresor_test_support::postgres::fresh_database().await;
    let first = connect(&url).await;
    first.migrate().await.expect("migrate");
    let backends: Vec<Arc<PostgresBackend>> = vec![
        Arc::new(first),
        Arc::new(connect(&url).await),
        Arc::new(connect(&url).await),
    ];
    let ns = 4_242;
    backends[0]
        .put_account(
            "acct",
            NamespaceRow {
                ns,
                wrapped_key: b"wrapped".to_vec(),
            },
            event("account.put"),
        )
        .await
        .expect("account");

    // 48 writers, each a compare-and-swap loop appending its number to one record.
    let mut tasks = Vec::new();
    for i in 0..48u32 {
        let backend = Arc::clone(&backends[i as usize % backends.len()]);
        tasks.push(tokio::spawn(async move {
            loop {
                let current = backend
                    .read_record(ns, StoreKind::Kv, b"list")
                    .await
                    .expect("read");
                let (expect, mut items) = match &current {
                    Some(r) => (
                        Precondition::Version(r.version),
                        String::from_utf8(r.value.clone()).unwrap(),
                    ),
                    None => (Precondition::Absent, String::new()),
                };
                items.push_str(&format!("{i},"));
                let commit = Commit {
                    guards: vec![ns],
                    keys: Vec::new(),
                    mutations: vec![Mutation::Put {
                        ns,
                        store: StoreKind::Kv,
                        key: b"list".to_vec(),
                        expect,
                        value: items.into_bytes(),
                        description: DescriptionChange::Keep,
                        expiry: Expiry::Keep,
                    }],
                    audit: vec![event("kv.put")],
                };
                match backend.commit(commit).await {
                    Ok(applied) => match applied[0] {
                        Applied::Put { version, .. } => return version,
                        other => panic!("unexpected {other:?}"),
                    },
                    Err(CoreError::WriteConflict) => continue,
                    Err(e) => panic!("writer {i}: {e}"),
                }
            }
        }));
    }
    let mut versions = Vec::new();
    for task in tasks {
        versions.push(task.await.expect("join"));
    }
    let last = backends[1]
        .read_record(ns, StoreKind::Kv, b"list")
        .await
        .unwrap()
        .expect("the record");
    let text = String::from_utf8(last.value).unwrap();
    let mut seen: Vec<u32> = text
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap())
        .collect();
    seen.sort_unstable();
    assert_eq!(seen, (0..48).collect::<Vec<_>>(), "every append survived");
    versions.sort_unstable();
    versions.dedup();
    assert_eq!(versions.len(), 48, "no version was handed out twice");
    assert_eq!(*versions.last().unwrap(), last.version);

    // Every write's audit event is there, one each, with distinct ids.
    let events = backends[2]
        .audit_query(&tresor_core::audit::AuditQuery {
            limit: 1_000,
            ..Default::default()
        })
        .await
        .unwrap();
    let puts = events.iter().filter(|e| e.operation == "kv.put").count();
    assert_eq!(puts, 48);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_read_audit_events_reach_the_database_and_shutdown_flushes_them() {
    let url = tresor_test_support::postgres::fresh_database().await;
    let backend = connect(&url).await;
    backend.migrate().await.expect("migrate");
    let events: Vec<AuditEvent> = (0..700).map(|i| event(&format!("read.{i}"))).collect();
    backend.audit_enqueue(events).expect("queued");
    backend.shutdown().await;
    assert_eq!(backend.audit_queue_len(), 0);
    let reader = connect(&url).await;
    let stored = reader
        .audit_query(&tresor_core::audit::AuditQuery {
            limit: 1_000,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(stored.len(), 700);
    let mut ids: Vec<i64> = stored.iter().map(|e| e.id).collect();
    ids.dedup();
    assert_eq!(ids.len(), 700);
    assert!(
        ids.iter().all(|id| *id < (1 << 53)),
        "ids are safe JavaScript integers"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_audit_events_whose_ids_are_taken_move_on_and_are_written_once() {
    let url = tresor_test_support::postgres::fresh_database().await;
    let backend = connect(&url).await;
    backend.migrate().await.expect("migrate");
    // Take every fiftieth id of the next ten seconds of the database clock, as concurrent
    // write transactions would: each batch the queue writes then collides somewhere.
    let (sql, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(conn);
    sql.batch_execute(
        "INSERT INTO audit (id, time, request_id, operation, status) \
         SELECT c + 50 * g, 0, 'filler', 'filler', 200 \
         FROM (SELECT floor(extract(epoch FROM clock_timestamp()) * 1000000)::BIGINT AS c) n, \
              generate_series(0, 200000) g",
    )
    .await
    .expect("fill");
    let events: Vec<AuditEvent> = (0..700).map(|i| event(&format!("read.{i}"))).collect();
    backend.audit_enqueue(events).expect("queued");
    backend.shutdown().await;
    assert_eq!(backend.audit_queue_len(), 0);
    let rows = sql
        .query(
            "SELECT operation, count(*) FROM audit WHERE operation <> 'filler' \
             GROUP BY operation",
            &[],
        )
        .await
        .expect("count");
    assert_eq!(rows.len(), 700, "every event is there");
    assert!(
        rows.iter().all(|r| r.get::<_, i64>(1) == 1),
        "no event was written twice"
    );
    let fillers: i64 = sql
        .query_one("SELECT count(*) FROM audit WHERE operation = 'filler'", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(fillers, 200_001, "no taken id was overwritten");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_database_is_unavailable_not_a_panic() {
    // A port nothing listens on.
    let err = PostgresBackend::connect(
        "postgres://nobody@127.0.0.1:1/none",
        PostgresOptions {
            connect_timeout: std::time::Duration::from_secs(2),
            ..PostgresOptions::default()
        },
    )
    .await
    .err()
    .expect("refused");
    assert!(matches!(err, CoreError::Unavailable(_)), "{err:?}");
    let err = PostgresBackend::connect("not a url at all ::", PostgresOptions::default())
        .await
        .err()
        .expect("refused");
    assert!(matches!(err, CoreError::InvalidRequest(_)), "{err:?}");
}
