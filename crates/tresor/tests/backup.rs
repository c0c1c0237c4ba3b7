//! Black-box tests of `tresor backup` and `tresor restore` on the embedded store, with the real
//! binary: a backup taken while writers keep writing holds every write acknowledged before it
//! started (and passes SQLite's integrity check), and a server on its restore serves them; an
//! installation uninstalled (and an app deleted) after the backup stays gone after a restore,
//! because the shredded list is re-applied; the backup file and the command's output hold no
//! plaintext; and the refusals (an existing file, a data directory that is not empty, a wrong
//! root key) write nothing.

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tresor_test_support::ALL_SCOPES;
use tresor_test_support::process::{Output, run};
use tresor_test_support::server::{TestServer, free_port, integrity_check, on_postgres};

fn bin() -> &'static Path {
    env!("CARGO_BIN_EXE_tresor").as_ref()
}

const WRITERS: usize = 8;
const KEYS_PER_WRITER: i64 = 10;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backup_under_load_holds_every_write_acknowledged_before_it() {
    assert_embedded();
    let work = tempdir();
    let mut source = TestServer::start(bin()).await;
    let token = source.install("app", &ALL_SCOPES, "acct", "inst").await;

    // Writers that never stop for the backup: each key's values only grow.
    let acked: Arc<Mutex<HashMap<String, i64>>> = Arc::default();
    let acks = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let (acked, acks, stop) = (acked.clone(), acks.clone(), stop.clone());
        let (http, base, token) = (source.http.clone(), source.url(""), token.clone());
        writers.push(tokio::spawn(async move {
            let mut i = 0i64;
            while !stop.load(Ordering::Relaxed) {
                let key = format!("w{w}-{}", i % KEYS_PER_WRITER);
                let r = http
                    .put(format!("{base}/v1/kv/{key}"))
                    .bearer_auth(&token)
                    .json(&json!({ "value": { "writer": w, "i": i, "pad": "x".repeat(200) } }))
                    .send()
                    .await;
                match r {
                    Ok(resp) if resp.status().is_success() => {
                        acked
                            .lock()
                            .unwrap_or_else(|e| panic!("{e}"))
                            .insert(key, i);
                        acks.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(resp) => panic!("write {key}={i}: {}", resp.status()),
                    Err(e) => panic!("write {key}={i}: {e}"),
                }
                i += 1;
            }
        }));
    }
    // Every key written at least once before the snapshot point.
    wait_until(|| acked_len(&acked) == WRITERS * KEYS_PER_WRITER as usize).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let file = work.path().join("store.backup");
    // The snapshot point is after this copy was taken: every write in it was acknowledged
    // before the command started.
    let before = acked.lock().unwrap_or_else(|e| panic!("{e}")).clone();
    let acks_at_start = acks.load(Ordering::Relaxed);
    let out = tresor(&["backup", "--data-dir", s(source.data_dir()), s(&file)]).await;
    let acks_during = acks.load(Ordering::Relaxed) - acks_at_start;
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.unwrap_or_else(|e| panic!("writer: {e}"));
    }
    assert_succeeded(&out);
    // The server kept acknowledging writes while the backup ran: it was not stopped or locked.
    assert!(
        acks_during > 0,
        "no write was acknowledged during the backup"
    );

    let line = json_line(&out);
    assert_eq!(line["root_key_included"], json!(false), "{line}");
    assert_eq!(line["installations"], json!(1), "{line}");
    assert_eq!(
        line["records"],
        json!(WRITERS as i64 * KEYS_PER_WRITER),
        "{line}"
    );
    assert!(line["schema_version"].as_i64().unwrap_or(0) >= 1, "{line}");
    assert!(
        out.stderr.contains("does NOT contain the root key"),
        "{}",
        out.stderr
    );
    let bytes = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
    assert_eq!(line["bytes"], json!(bytes), "{line}");
    assert_private(&file);
    integrity_check(&file).unwrap_or_else(|e| panic!("the backup: {e}"));
    // Nothing but the backup beside it (no temporary file, journal or log).
    assert_eq!(names(work.path()), ["store.backup"]);
    // The last backup is recorded in the data directory, for `tresor status`.
    let last: Value = serde_json::from_slice(
        &std::fs::read(source.data_dir().join("last-backup.json"))
            .unwrap_or_else(|e| panic!("last-backup.json: {e}")),
    )
    .unwrap_or_else(|e| panic!("last-backup.json: {e}"));
    assert_eq!(last["bytes"], json!(bytes), "{last}");
    assert_eq!(last["backup"], line["backup"], "{last}");
    assert_eq!(last["taken_at"], line["taken_at"], "{last}");

    // Refused without --force while FILE exists, and nothing changes; replaced with it.
    let again = tresor(&["backup", "--data-dir", s(source.data_dir()), s(&file)]).await;
    assert_failed(&again, "--force");
    assert_eq!(std::fs::metadata(&file).map(|m| m.len()).ok(), Some(bytes));
    let forced = tresor(&[
        "backup",
        "--data-dir",
        s(source.data_dir()),
        "--force",
        s(&file),
    ])
    .await;
    assert_succeeded(&forced);
    assert_eq!(names(work.path()), ["store.backup"]);
    // The second backup is the one to restore; its snapshot point is later still.

    let key = source.data_dir().join("root.key");
    let target = work.path().join("restored");
    let out = tresor(&[
        "restore",
        "--data-dir",
        s(&target),
        "--master-key-file",
        s(&key),
        s(&file),
    ])
    .await;
    assert_succeeded(&out);
    let line = json_line(&out);
    assert_eq!(line["reapplied"]["installations"], json!(0), "{line}");
    assert_eq!(line["installations"], json!(1), "{line}");

    let mut restored = serve(&target, &key, &source.admin_token).await;
    for (key, acked_i) in &before {
        let r = restored
            .call("GET", &format!("/v1/kv/{key}"), Some(&token), None)
            .await;
        assert_eq!(r.status, 200, "{key}: {r:?}");
        // Acknowledged before the backup: there, at that value or a later one.
        let got = r.body["value"]["i"].as_i64().unwrap_or(-1);
        assert!(
            got >= *acked_i,
            "{key}: acknowledged {acked_i} before the backup, restored {got}"
        );
        assert_eq!(got % KEYS_PER_WRITER, *acked_i % KEYS_PER_WRITER, "{key}");
    }
    assert_eq!(restored.terminate(), Some(0), "{}", restored.log());
    integrity_check(&target.join("tresor.db")).unwrap_or_else(|e| panic!("the restore: {e}"));
    assert_eq!(source.terminate(), Some(0), "{}", source.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_uninstall_after_the_backup_survives_the_restore() {
    assert_embedded();
    let work = tempdir();
    let mut source = TestServer::start(bin()).await;
    let a = source
        .install("app-a", &ALL_SCOPES, "acct-a", "inst-a")
        .await;
    let b = source
        .install("app-b", &ALL_SCOPES, "acct-b", "inst-b")
        .await;
    let c = source
        .install("app-c", &ALL_SCOPES, "acct-a", "inst-c")
        .await;
    for (token, name) in [(&a, "a"), (&b, "b"), (&c, "c")] {
        for store in ["secrets", "kv", "shared"] {
            for i in 0..3 {
                put(&source, token, store, &format!("{name}-{i}"), json!(i)).await;
            }
        }
    }
    let file = work.path().join("before.backup");
    assert_succeeded(&tresor(&["backup", "--data-dir", s(source.data_dir()), s(&file)]).await);

    // After the backup: B uninstalled, app C deleted (its installation and shared store).
    let list = source.data_dir().join("shredded.log");
    assert!(!list.exists(), "a list before anything was deleted");
    let r = source
        .admin("DELETE", "/v1/admin/installations/inst-b", None)
        .await;
    assert_eq!(r.status, 204, "{r:?}");
    let r = source.admin("DELETE", "/v1/admin/apps/app-c", None).await;
    assert_eq!(r.status, 204, "{r:?}");
    let listed = std::fs::read_to_string(&list).unwrap_or_else(|e| panic!("{e}"));
    let entries: Vec<Value> = listed
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect();
    assert_eq!(entries.len(), 2, "{listed}");
    assert_eq!(entries[0]["kind"], "installation");
    assert_eq!(entries[0]["id"], "inst-b");
    assert_eq!(entries[0]["namespaces"].as_array().map(Vec::len), Some(1));
    assert_eq!(entries[1]["kind"], "app");
    assert_eq!(entries[1]["installations"], json!(["inst-c"]));
    assert_eq!(entries[1]["namespaces"].as_array().map(Vec::len), Some(2));
    assert_private(&list);
    // Deleting what no longer exists lists nothing more.
    let r = source
        .admin("DELETE", "/v1/admin/installations/inst-b", None)
        .await;
    assert_eq!(r.status, 204, "{r:?}");
    assert_eq!(std::fs::read_to_string(&list).unwrap_or_default(), listed);

    let key = source.data_dir().join("root.key");
    // A wrong root key is refused before anything is written.
    let other_key = work.path().join("other.key");
    assert_succeeded(&tresor(&["keygen", s(&other_key)]).await);
    let never = work.path().join("never");
    let out = tresor(&[
        "restore",
        "--data-dir",
        s(&never),
        "--master-key-file",
        s(&other_key),
        "--shredded-list",
        s(&list),
        s(&file),
    ])
    .await;
    assert_failed(&out, "root key");
    assert!(
        !never.exists(),
        "a refused restore left {}",
        never.display()
    );

    let target = work.path().join("restored");
    let out = tresor(&[
        "restore",
        "--data-dir",
        s(&target),
        "--master-key-file",
        s(&key),
        s(&file),
    ])
    .await;
    assert_succeeded(&out);
    let line = json_line(&out);
    assert_eq!(line["shredded_entries"], json!(2), "{line}");
    assert_eq!(line["reapplied"]["installations"], json!(2), "{line}");
    assert_eq!(line["reapplied"]["apps"], json!(1), "{line}");
    assert_eq!(line["installations"], json!(1), "{line}");
    // A's secrets and kv, and the shared stores of apps A and B (B's app stays): nothing of
    // installation B's or C's, nor of app C's shared store.
    assert_eq!(line["records"], json!(12), "{line}");
    assert_eq!(names(&target), ["lock", "tresor.db"]);
    integrity_check(&target.join("tresor.db")).unwrap_or_else(|e| panic!("{e}"));

    // A second restore into the now filled directory is refused.
    let out = tresor(&[
        "restore",
        "--data-dir",
        s(&target),
        "--master-key-file",
        s(&key),
        s(&file),
    ])
    .await;
    assert_failed(&out, "not empty");

    let mut restored = serve(&target, &key, &source.admin_token).await;
    for store in ["secrets", "kv", "shared"] {
        for i in 0..3 {
            let r = restored
                .call("GET", &format!("/v1/{store}/a-{i}"), Some(&a), None)
                .await;
            assert_eq!(r.status, 200, "{store}/a-{i}: {r:?}");
            assert_eq!(r.body["value"], json!(i));
        }
    }
    for token in [&b, &c] {
        let r = restored.call("GET", "/v1/kv/b-0", Some(token), None).await;
        assert_eq!(r.status, 401, "a shredded installation's token: {r:?}");
    }
    for path in [
        "/v1/admin/installations/inst-b",
        "/v1/admin/installations/inst-c",
        "/v1/admin/apps/app-c",
    ] {
        let r = restored.admin("GET", path, None).await;
        assert_eq!(r.status, 404, "{path}: {r:?}");
    }
    assert_eq!(
        restored
            .admin("GET", "/v1/admin/apps/app-b", None)
            .await
            .status,
        200
    );
    assert_eq!(restored.terminate(), Some(0), "{}", restored.log());
    // No wrapped key of B or C is left: only A's installation, apps A and B and the accounts.
    let db = rusqlite::Connection::open_with_flags(
        target.join("tresor.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let owners: Vec<String> = db
        .prepare("SELECT owner_id FROM namespaces ORDER BY owner_id")
        .and_then(|mut st| {
            st.query_map([], |r| r.get::<_, String>(0))?
                .collect::<Result<_, _>>()
        })
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(owners, ["acct-a", "acct-b", "app-a", "app-b", "inst-a"]);
    assert_eq!(source.terminate(), Some(0), "{}", source.log());
}

const VALUE_CANARY: &str = "BACKUP-CANARY-value-61f3";
const DESCRIPTION_CANARY: &str = "BACKUP-CANARY-description-0d8a";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_holds_no_plaintext() {
    assert_embedded();
    let work = tempdir();
    let mut source = TestServer::start(bin()).await;
    let token = source.install("app", &ALL_SCOPES, "acct", "inst").await;
    for i in 0..20 {
        let r = source
            .call(
                "PUT",
                &format!("/v1/secrets/k{i}"),
                Some(&token),
                Some(&json!({ "value": format!("{VALUE_CANARY}-{i}"), "description": DESCRIPTION_CANARY })),
            )
            .await;
        assert_eq!(r.status, 201, "{r:?}");
    }
    let file = work.path().join("plain.backup");
    let files_before = names(source.data_dir());
    let out = tresor(&["backup", "--data-dir", s(source.data_dir()), s(&file)]).await;
    assert_succeeded(&out);
    // The one file a backup writes into the data directory.
    let mut expected = files_before.clone();
    expected.push("last-backup.json".to_owned());
    expected.sort();
    assert_eq!(names(source.data_dir()), expected);
    let bytes = std::fs::read(&file).unwrap_or_else(|e| panic!("{e}"));
    let last =
        std::fs::read(source.data_dir().join("last-backup.json")).unwrap_or_else(|e| panic!("{e}"));
    let token_bytes = token.as_bytes();
    for (what, haystack) in [
        ("the backup file", &bytes[..]),
        ("stdout", out.stdout.as_bytes()),
        ("stderr", out.stderr.as_bytes()),
        ("last-backup.json", &last[..]),
    ] {
        for needle in [
            VALUE_CANARY.as_bytes(),
            DESCRIPTION_CANARY.as_bytes(),
            token_bytes,
            source.admin_token.as_bytes(),
        ] {
            assert!(
                !contains(haystack, needle),
                "{what} holds {}",
                String::from_utf8_lossy(needle)
            );
        }
    }
    // The values are in the backup all the same, sealed: a restore serves them.
    let key = source.data_dir().join("root.key");
    let target = work.path().join("restored");
    assert_succeeded(
        &tresor(&[
            "restore",
            "--data-dir",
            s(&target),
            "--master-key-file",
            s(&key),
            s(&file),
        ])
        .await,
    );
    let mut restored = serve(&target, &key, &source.admin_token).await;
    let r = restored
        .call("GET", "/v1/secrets/k19", Some(&token), None)
        .await;
    assert_eq!(
        r.body["value"],
        json!(format!("{VALUE_CANARY}-19")),
        "{r:?}"
    );
    assert_eq!(restored.terminate(), Some(0), "{}", restored.log());

    // A stopped store is backed up without a file appearing beside it (read `immutable`).
    assert_eq!(source.terminate(), Some(0), "{}", source.log());
    let stopped = names(source.data_dir());
    let db = source.data_dir().join("tresor.db");
    let db_before = std::fs::read(&db).unwrap_or_else(|e| panic!("{e}"));
    let again = work.path().join("stopped.backup");
    assert_succeeded(&tresor(&["backup", "--data-dir", s(source.data_dir()), s(&again)]).await);
    assert_eq!(names(source.data_dir()), stopped);
    assert!(
        std::fs::read(&db).is_ok_and(|b| b == db_before),
        "the store changed"
    );
    integrity_check(&again).unwrap_or_else(|e| panic!("{e}"));
}

// ---------------------------------------------------------------------------------------------

fn assert_embedded() {
    assert!(
        !on_postgres(),
        "backup and restore are for the embedded store: run without TRESOR_TEST_BACKEND=postgres"
    );
}

fn acked_len(acked: &Mutex<HashMap<String, i64>>) -> usize {
    acked.lock().map(|m| m.len()).unwrap_or(0)
}

async fn wait_until(done: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(tokio::time::Instant::now() < deadline, "timed out");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn put(server: &TestServer, token: &str, store: &str, key: &str, value: Value) {
    let r = server
        .call(
            "PUT",
            &format!("/v1/{store}/{key}"),
            Some(token),
            Some(&json!({ "value": value })),
        )
        .await;
    assert_eq!(r.status, 201, "{store}/{key}: {r:?}");
}

/// A server on a restored data directory with the original root key file.
async fn serve(dir: &Path, key: &Path, admin: &str) -> TestServer {
    let args: Vec<OsString> = vec![
        "serve".into(),
        "--listen".into(),
        format!("127.0.0.1:{}", free_port()).into(),
        "--data-dir".into(),
        dir.into(),
        "--master-key-file".into(),
        key.into(),
    ];
    TestServer::start_exact(bin(), &args, &[], Some(admin)).await
}

async fn tresor(args: &[&str]) -> Output {
    run(bin(), args, &[]).await
}

fn json_line(out: &Output) -> Value {
    let line = out
        .stdout
        .lines()
        .last()
        .unwrap_or_else(|| panic!("no output: {}", out.stderr));
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{line}: {e}"))
}

fn assert_succeeded(out: &Output) {
    assert_eq!(
        out.code,
        Some(0),
        "stdout: {}\nstderr: {}",
        out.stdout,
        out.stderr
    );
}

fn assert_failed(out: &Output, says: &str) {
    assert_eq!(
        out.code,
        Some(1),
        "stdout: {}\nstderr: {}",
        out.stdout,
        out.stderr
    );
    assert!(
        out.stderr.contains(says),
        "expected `{says}` in: {}",
        out.stderr
    );
}

fn assert_private(path: &Path) {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "{} is mode {mode:o}", path.display());
}

fn names(dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| {
            e.unwrap_or_else(|e| panic!("{e}"))
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|n| n != "server.log")
        .collect();
    out.sort();
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("tresor-backup-test-")
        .tempdir()
        .unwrap_or_else(|e| panic!("tempdir: {e}"))
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap_or_else(|| panic!("a non-UTF-8 path"))
}
