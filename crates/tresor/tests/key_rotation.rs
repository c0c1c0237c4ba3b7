//! Root key rotation (issue 8, item 1) against the real binary: a version added to the key file
//! is activated under load, every installation key is re-wrapped in the background while reads
//! and writes go on without a single failure, the old version is retired from the key file,
//! and the server restarted on the new file alone serves every record. A key file without the
//! active version is then refused at start. On PostgreSQL, two servers: a rotation is refused
//! (409) while one of them lacks the new version.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tresor_test_support::ALL_SCOPES;
use tresor_test_support::process::run;
use tresor_test_support::server::TestServer;

fn bin() -> &'static Path {
    env!("CARGO_BIN_EXE_tresor").as_ref()
}

const INSTALLATIONS: usize = 20;
const KEYS: usize = 5;

/// Polls `GET /v1/admin/keys` until the re-wrap is done; returns the last answer.
async fn wait_rewrapped(s: &TestServer) -> Value {
    let started = Instant::now();
    loop {
        let r = s.admin("GET", "/v1/admin/keys", None).await;
        assert_eq!(r.status, 200, "{r:?}");
        if r.body["rewrap"]["done"] == true && r.body["rewrap"]["running"] == false {
            return r.body;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the re-wrap did not finish: {}",
            r.body
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Writers and readers on every installation until `stop`; counts answers that were not 2xx.
fn load(
    s: &Arc<TestServer>,
    tokens: &[String],
    stop: &Arc<AtomicBool>,
) -> (
    Vec<tokio::task::JoinHandle<()>>,
    Arc<AtomicU64>,
    Arc<AtomicU64>,
) {
    let failures = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for (i, token) in tokens.iter().enumerate() {
        let (s, token, stop) = (s.clone(), token.clone(), stop.clone());
        let (failures, done) = (failures.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Acquire) {
                n += 1;
                let key = format!("load-{}", n % 5);
                let r = s
                    .call(
                        "PUT",
                        &format!("/v1/kv/{key}"),
                        Some(&token),
                        Some(&json!({"value": n})),
                    )
                    .await;
                let g = s.call("GET", "/v1/secrets/k0", Some(&token), None).await;
                if !(200..300).contains(&r.status) || g.status != 200 {
                    failures.fetch_add(1, Ordering::Relaxed);
                    eprintln!(
                        "installation {i}: PUT {} GET {} {}",
                        r.status, g.status, g.text
                    );
                }
                done.fetch_add(2, Ordering::Relaxed);
            }
        }));
    }
    (tasks, failures, done)
}

async fn seed(s: &TestServer) -> Vec<String> {
    let mut tokens = Vec::new();
    for i in 0..INSTALLATIONS {
        let t = s
            .install(
                "rot-app",
                &ALL_SCOPES,
                &format!("acct-{i}"),
                &format!("inst-{i}"),
            )
            .await;
        for k in 0..KEYS {
            let r = s
                .call(
                    "PUT",
                    &format!("/v1/secrets/k{k}"),
                    Some(&t),
                    Some(&json!({"value": format!("secret {i}/{k}")})),
                )
                .await;
            assert_eq!(r.status, 201, "{r:?}");
        }
        tokens.push(t);
    }
    tokens
}

async fn check_all(s: &TestServer, tokens: &[String]) {
    for (i, t) in tokens.iter().enumerate() {
        for k in 0..KEYS {
            let r = s
                .call("GET", &format!("/v1/secrets/k{k}"), Some(t), None)
                .await;
            assert_eq!(r.status, 200, "inst-{i} k{k}: {r:?}");
            assert_eq!(r.body["value"], format!("secret {i}/{k}"));
        }
    }
}

async fn keygen_add_version(file: &Path) {
    let out = run(
        bin(),
        &[
            "keygen".as_ref(),
            "--add-version".as_ref(),
            file.as_os_str(),
        ],
        &[],
    )
    .await;
    assert_eq!(out.code, Some(0), "{out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rotation_under_load_then_the_old_version_is_retired() {
    let s = Arc::new(TestServer::start(bin()).await);
    let key_file: PathBuf = s.data_dir().join("root.key");
    let old_file = s.data_dir().join("root.key.v1-only");
    std::fs::copy(&key_file, &old_file).unwrap();
    let tokens = seed(&s).await;

    let status = s.admin("GET", "/v1/admin/keys", None).await;
    assert_eq!(status.body["active"], "1", "{status:?}");
    assert_eq!(status.body["rewrap"]["remaining"], 0, "{status:?}");

    let stop = Arc::new(AtomicBool::new(false));
    let (tasks, failures, done) = load(&s, &tokens, &stop);
    tokio::time::sleep(Duration::from_millis(300)).await;

    // A version in the file changes nothing until the rotation.
    keygen_add_version(&key_file).await;
    let r = s.admin("GET", "/v1/admin/keys", None).await;
    assert_eq!(r.body["active"], "1", "{r:?}");

    let r = s
        .admin("POST", "/v1/admin/keys/rotate", Some(&json!({})))
        .await;
    assert_eq!(r.status, 202, "{r:?}");
    assert_eq!(r.body["active"], "2");
    assert_eq!(r.body["versions"], json!(["1", "2"]));
    // Installations made during the re-wrap get keys under the new version.
    let t = s
        .install("rot-app", &ALL_SCOPES, "acct-new", "inst-new")
        .await;
    let put = s
        .call(
            "PUT",
            "/v1/secrets/k0",
            Some(&t),
            Some(&json!({"value": "new"})),
        )
        .await;
    assert_eq!(put.status, 201, "{put:?}");

    let status = wait_rewrapped(&s).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Release);
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(
        failures.load(Ordering::Relaxed),
        0,
        "requests failed during the rotation"
    );
    assert!(done.load(Ordering::Relaxed) > 0);
    // Every namespace key (apps, accounts, installations) and the two server keys.
    assert_eq!(status["wrapped"]["1"], 0, "{status}");
    let total = status["rewrap"]["total"].as_u64().unwrap();
    assert_eq!(status["wrapped"]["2"], total, "{status}");
    assert!(total >= (2 * INSTALLATIONS + 4) as u64, "{status}");
    check_all(&s, &tokens).await;

    // Retire version 1 from the key file; the CLI asks the server first.
    let url = format!("http://{}", s.addr);
    let envs = [
        ("TRESOR_ADDR", url.as_str()),
        ("TRESOR_ADMIN_TOKEN", s.admin_token.as_str()),
    ];
    let out = run(
        bin(),
        &[
            "keys".as_ref(),
            "retire".as_ref(),
            "2".as_ref(),
            "--master-key-file".as_ref(),
            key_file.as_os_str(),
        ],
        &envs,
    )
    .await;
    assert_eq!(
        out.code,
        Some(4),
        "the active version is never retired: {out:?}"
    );
    assert!(out.stderr.contains("active version"), "{}", out.stderr);
    let out = run(
        bin(),
        &[
            "keys".as_ref(),
            "retire".as_ref(),
            "1".as_ref(),
            "--master-key-file".as_ref(),
            key_file.as_os_str(),
        ],
        &envs,
    )
    .await;
    assert_eq!(out.code, Some(0), "{out:?}");
    let text = std::fs::read_to_string(&key_file).unwrap();
    assert!(
        !text.lines().any(|l| l.starts_with("1:")),
        "version 1 is still in the file"
    );

    // The server on the new file alone serves everything.
    let mut s = Arc::into_inner(s).unwrap_or_else(|| panic!("the load still holds the server"));
    assert_eq!(s.terminate(), Some(0));
    s.launch().await;
    check_all(&s, &tokens).await;
    let r = s.call("GET", "/v1/secrets/k0", Some(&t), None).await;
    assert_eq!(r.body["value"], "new");
    let status = s.admin("GET", "/v1/admin/keys", None).await;
    assert_eq!(status.body["versions"], json!(["2"]), "{status:?}");
    assert_eq!(s.terminate(), Some(0));

    // The key file from before the rotation lacks the active version: refused, nothing served.
    let out = run(
        bin(),
        &[
            "serve".as_ref(),
            "--data-dir".as_ref(),
            s.data_dir().as_os_str(),
            "--master-key-file".as_ref(),
            old_file.as_os_str(),
            "--listen".as_ref(),
            "127.0.0.1:0".as_ref(),
        ],
        &[],
    )
    .await;
    assert_ne!(out.code, Some(0), "{out:?}");
    assert!(out.stderr.contains("`2`"), "{}", out.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rotation_waits_for_every_running_server_to_hold_the_version() {
    // Two servers on one PostgreSQL database, sharing one key file.
    let mut servers = TestServer::start_cluster(bin(), 2, &[], &[]).await;
    let key_file = servers[0].key_file().expect("a cluster has a key file");
    let t = servers[0]
        .install("rot-app", &ALL_SCOPES, "acct", "inst")
        .await;
    let r = servers[0]
        .call(
            "PUT",
            "/v1/secrets/a",
            Some(&t),
            Some(&json!({"value": "kept"})),
        )
        .await;
    assert_eq!(r.status, 201, "{r:?}");

    keygen_add_version(&key_file).await;
    // Server 0 reloads its file at the rotation; server 1 still registers version 1 alone
    // until its next heartbeat.
    let r = servers[0]
        .admin("POST", "/v1/admin/keys/rotate", None)
        .await;
    assert_eq!(r.status, 409, "{r:?}");
    assert_eq!(r.code(), Some("conflict"));
    let r = servers[0].admin("GET", "/v1/admin/keys", None).await;
    assert_eq!(r.body["active"], "1", "{r:?}");

    // Restarted, server 1 holds version 2 as well: the rotation goes ahead.
    assert_eq!(servers[1].terminate(), Some(0));
    servers[1].launch().await;
    let r = servers[1]
        .admin("POST", "/v1/admin/keys/rotate", None)
        .await;
    assert_eq!(r.status, 202, "{r:?}");
    let status = wait_rewrapped(&servers[1]).await;
    assert_eq!(status["wrapped"]["1"], 0, "{status}");
    for s in &servers {
        let r = s.call("GET", "/v1/secrets/a", Some(&t), None).await;
        assert_eq!(r.body["value"], "kept", "{r:?}");
    }
}

/// A crash in the middle of the re-wrap loses nothing: the restarted server resumes it by
/// itself (at start) and finishes it. The crash is a fail point (`tresor_core::faults`) armed
/// to abort the process at a write of the re-wrap.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rewrap_cut_by_a_crash_is_resumed_at_the_next_start() {
    let mut s = TestServer::start(bin()).await;
    if s.backend() != tresor_test_support::server::StorageBackend::Sqlite {
        return;
    }
    let tokens = seed(&s).await;
    keygen_add_version(&s.data_dir().join("root.key")).await;
    // The rotation writes the node registration, the active version and the two server-wide
    // keys (with their audit): the 16th write is well inside the re-wrap of the 40 namespace
    // keys, which commit one by one.
    let armed = s
        .admin(
            "PUT",
            "/v1/admin/failpoints/sqlite::write",
            Some(&json!({"actions": "15*off->1*return(crash)"})),
        )
        .await;
    assert_eq!(armed.status, 204, "{armed:?}");
    // The answer may come before the crash, or not at all.
    let _ = s
        .http
        .post(s.url("/v1/admin/keys/rotate"))
        .bearer_auth(&s.admin_token)
        .send()
        .await;
    let started = Instant::now();
    while s.http.get(s.url("/healthz")).send().await.is_ok() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the fail point never fired"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    s.kill9();
    s.launch().await;
    let restarted = Instant::now();
    let status = wait_rewrapped(&s).await;
    // Well before the first heartbeat (30 s), which would resume it too: the start did.
    assert!(restarted.elapsed() < Duration::from_secs(20), "{status}");
    assert_eq!(status["active"], "2", "{status}");
    assert_eq!(status["wrapped"]["1"], 0, "{status}");
    assert!(
        status["rewrap"]["rewrapped"]
            .as_u64()
            .is_some_and(|n| n > 0),
        "the restarted server did not resume the re-wrap: {status}"
    );
    check_all(&s, &tokens).await;
}
