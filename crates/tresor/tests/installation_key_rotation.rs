//! Black-box tests of installation key rotation (`POST /v1/admin/installations/{id}/rotate-key`,
//! `tresor keys rotate-installation`): an installation with records in every store,
//! credentials (one renewed host-side through the client-credentials grant), a completed and a
//! pending OAuth flow, rotated again and again while writers and readers work on it and on
//! another installation, with no failed request; afterwards every record reads back with its
//! last acknowledged value, no increment is lost, the flows still complete, the stored wrapped
//! key and every ciphertext of the installation changed (and nothing of the other one), and a
//! restart reads it all. Over PostgreSQL, a rotation through one server is read and written
//! correctly through another that cached the old key.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tresor_test_support::ALL_SCOPES;
use tresor_test_support::provider::{ProviderConfig, TestProvider};
use tresor_test_support::server::{Answer, TestServer};

fn bin() -> &'static std::path::Path {
    env!("CARGO_BIN_EXE_tresor").as_ref()
}

/// The private stores of an installation, and the app's shared one.
const STORES: [&str; 4] = ["secrets", "settings", "kv", "shared"];

/// What the load saw: failed requests (described), and the last acknowledged value of every
/// key it wrote.
#[derive(Default)]
struct Seen {
    failures: Mutex<Vec<String>>,
    acked: Mutex<BTreeMap<(String, String), Value>>,
    increments: AtomicU64,
    requests: AtomicU64,
}

impl Seen {
    fn check(&self, what: &str, r: &Answer, ok: &[u16]) -> bool {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if ok.contains(&r.status) {
            return true;
        }
        if let Ok(mut f) = self.failures.lock() {
            f.push(format!("{what}: {} {}", r.status, r.text));
        }
        false
    }

    /// The first few failures (and how many there were).
    fn failures(&self) -> Vec<String> {
        let all = self.failures.lock().map(|f| f.clone()).unwrap_or_default();
        let mut first: Vec<String> = all.iter().take(5).cloned().collect();
        if all.len() > first.len() {
            first.push(format!("… {} in all", all.len()));
        }
        first
    }
}

/// Writers, readers, field ops and (with `credentials`) credential reads and proxied calls on
/// `server` with `token`, until `stop`. Each writer owns its keys, so the last value it had
/// acknowledged is the one that must read back.
fn load(
    server: Arc<TestServer>,
    token: Arc<String>,
    tag: &str,
    credentials: bool,
    stop: Arc<AtomicBool>,
    seen: Arc<Seen>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = Vec::new();
    for (w, store) in STORES.iter().enumerate() {
        let (s, t, stop, seen) = (server.clone(), token.clone(), stop.clone(), seen.clone());
        let (store, tag) = (store.to_string(), tag.to_owned());
        tasks.push(tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let key = format!("{tag}-w{w}-{}", i % 7);
                let value = json!({"n": i, "by": format!("{tag}-w{w}")});
                let path = format!("/v1/{store}/{key}");
                let r = if i % 3 == 2 {
                    // A merge patch: read, decrypt, change, seal, under a precondition.
                    let patch = json!({"n": i});
                    let r = s.call("PATCH", &path, Some(&t), Some(&patch)).await;
                    if r.status == 200 {
                        let mut acked = seen.acked.lock().unwrap_or_else(|e| e.into_inner());
                        let entry = acked
                            .entry((store.clone(), key.clone()))
                            .or_insert_with(|| json!({}));
                        entry["n"] = json!(i);
                    }
                    r
                } else {
                    let r = s
                        .call("PUT", &path, Some(&t), Some(&json!({"value": value})))
                        .await;
                    if r.status == 200 || r.status == 201 {
                        seen.acked
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .insert((store.clone(), key.clone()), value);
                    }
                    r
                };
                seen.check(&format!("write {path}"), &r, &[200, 201]);
                i += 1;
            }
        }));
    }
    // Increments of one counter: none may be lost across the rotations.
    {
        let (s, t, stop, seen) = (server.clone(), token.clone(), stop.clone(), seen.clone());
        let path = format!("/v1/kv/{tag}-counter/ops");
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let body = json!({"ops": [{"op": "increment", "field": "n"}]});
                let r = s.call("POST", &path, Some(&t), Some(&body)).await;
                if seen.check("increment", &r, &[200]) {
                    seen.increments.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    // Readers of the records written before the load, of credential metadata, and of the
    // credential itself through the proxy.
    for reader in 0..2 {
        let (s, t, stop, seen) = (server.clone(), token.clone(), stop.clone(), seen.clone());
        let tag = tag.to_owned();
        tasks.push(tokio::spawn(async move {
            let mut i = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let store = STORES[(i + reader) % STORES.len()];
                let path = format!("/v1/{store}/{tag}-fixed");
                let r = s.call("GET", &path, Some(&t), None).await;
                if seen.check(&format!("read {path}"), &r, &[200])
                    && r.body["value"]["fixed"] != json!(store)
                {
                    seen.check(&format!("value of {path}"), &r, &[]);
                }
                let r = s
                    .call("GET", &format!("/v1/kv?prefix={tag}-"), Some(&t), None)
                    .await;
                seen.check("list", &r, &[200]);
                if credentials {
                    let r = s
                        .call("GET", "/v1/credentials/static", Some(&t), None)
                        .await;
                    seen.check("credential metadata", &r, &[200]);
                    let r = s
                        .call(
                            "POST",
                            "/v1/credentials/conn/request",
                            Some(&t),
                            Some(&json!({"method": "GET", "path": "echo"})),
                        )
                        .await;
                    if seen.check("proxy", &r, &[200]) && r.body["status"] != 200 {
                        seen.check("proxied status", &r, &[]);
                    }
                }
                i += 1;
            }
        }));
    }
    tasks
}

/// Writes `{tag}-fixed` into every store, with a description in the first.
async fn fixed_records(s: &TestServer, t: &str, tag: &str) {
    for (i, store) in STORES.iter().enumerate() {
        let mut body = json!({"value": {"fixed": store}});
        if i == 0 {
            body["description"] = json!("a described record");
        }
        let r = s
            .call(
                "PUT",
                &format!("/v1/{store}/{tag}-fixed"),
                Some(t),
                Some(&body),
            )
            .await;
        assert_eq!(r.status, 201, "{r:?}");
    }
}

/// Every acknowledged value reads back as it was acknowledged, and the counter holds every
/// acknowledged increment.
async fn assert_acked(s: &TestServer, t: &str, tag: &str, seen: &Seen) {
    let acked = seen.acked.lock().unwrap_or_else(|e| e.into_inner()).clone();
    assert!(acked.len() >= STORES.len(), "the load wrote too little");
    for ((store, key), value) in &acked {
        let r = s
            .call("GET", &format!("/v1/{store}/{key}"), Some(t), None)
            .await;
        assert_eq!(r.status, 200, "{store}/{key}: {r:?}");
        assert_eq!(r.body["value"]["n"], value["n"], "{store}/{key}: {r:?}");
    }
    let r = s
        .call("GET", &format!("/v1/kv/{tag}-counter"), Some(t), None)
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        r.body["value"]["n"],
        json!(seen.increments.load(Ordering::Relaxed)),
        "no increment is lost"
    );
}

/// The rows of one namespace as stored: every ciphertext by where it is, and the wrapped key.
#[derive(Debug, PartialEq)]
struct Stored {
    wrapped_key: Vec<u8>,
    sealed: BTreeMap<Where, (i64, Vec<u8>)>,
}

/// Where a ciphertext is stored: table, row id and part. It maps to the row's version (0 for a
/// flow, which has none) and the ciphertext.
type Where = (String, Vec<u8>, &'static str);

/// Reads an installation's namespace straight from the embedded store's file (read-only; the
/// server keeps running: WAL readers do not block its writer).
fn stored(s: &TestServer, installation: &str) -> Stored {
    let db = rusqlite::Connection::open_with_flags(
        s.data_dir().join("tresor.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap_or_else(|e| panic!("open: {e}"));
    let (ns, wrapped_key): (i64, Vec<u8>) = db
        .query_row(
            "SELECT n.ns, n.wrapped_key FROM namespaces n JOIN installations i ON i.ns = n.ns \
             WHERE i.installation_id = ?1",
            [installation],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap_or_else(|e| panic!("namespace: {e}"));
    let mut sealed = BTreeMap::new();
    let mut add = |sql: &str, parts: &[&'static str]| {
        let mut stmt = db.prepare(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
        let mut rows = stmt.query([ns]).unwrap_or_else(|e| panic!("{sql}: {e}"));
        while let Some(r) = rows.next().unwrap_or_else(|e| panic!("{sql}: {e}")) {
            let id: Vec<u8> = r.get(0).unwrap_or_else(|e| panic!("{e}"));
            let version: i64 = r.get(1).unwrap_or_else(|e| panic!("{e}"));
            for (i, part) in parts.iter().enumerate() {
                let blob: Option<Vec<u8>> = r.get(2 + i).unwrap_or_else(|e| panic!("{e}"));
                if let Some(blob) = blob {
                    let table = sql.split(" FROM ").nth(1).unwrap_or("").to_owned();
                    sealed.insert((table, id.clone(), *part), (version, blob));
                }
            }
        }
    };
    add(
        "SELECT CAST(CAST(store AS TEXT) || '/' || CAST(key AS TEXT) AS BLOB), version, value, \
         description FROM records WHERE ns = ?1",
        &["value", "description"],
    );
    add(
        "SELECT key, version, metadata, secret FROM credentials WHERE ns = ?1",
        &["metadata", "secret"],
    );
    add(
        "SELECT CAST(flow_id AS BLOB), 0, verifier, access_token FROM oauth_flows WHERE ns = ?1",
        &["verifier", "access_token"],
    );
    Stored {
        wrapped_key,
        sealed,
    }
}

async fn provider(s: &TestServer, name: &str, doc: Value) {
    let r = s
        .admin("PUT", &format!("/v1/admin/providers/{name}"), Some(&doc))
        .await;
    assert_eq!(r.status, 201, "{r:?}");
}

async fn start_flow(s: &TestServer, t: &str, key: &str) -> (String, String) {
    let r = s
        .call(
            "POST",
            "/v1/oauth/flows",
            Some(t),
            Some(&json!({"provider": "up", "store_as": {"key": key}})),
        )
        .await;
    assert_eq!(r.status, 201, "{r:?}");
    (
        r.body["flow_id"].as_str().unwrap_or_default().to_owned(),
        r.body["authorize_url"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    )
}

/// The user consents and the browser lands on the callback, which exchanges the code with the
/// flow's PKCE verifier.
async fn consent(s: &TestServer, up: &TestProvider, authorize_url: &str) {
    let callback = up.consent(authorize_url, false).await;
    let resp = s
        .http
        .get(&callback)
        .send()
        .await
        .unwrap_or_else(|e| panic!("callback: {e}"));
    assert_eq!(
        resp.status().as_u16(),
        200,
        "the callback completes the flow"
    );
}

/// A request through the credential `conn` reaches the upstream and gets its 200.
async fn assert_proxy_answers(s: &TestServer, t: &str) {
    let r = s
        .call(
            "POST",
            "/v1/credentials/conn/request",
            Some(t),
            Some(&json!({"method": "GET", "path": "echo"})),
        )
        .await;
    assert_eq!(
        (r.status, r.body["status"].as_u64()),
        (200, Some(200)),
        "{r:?}"
    );
}

async fn rotate(s: &TestServer, installation: &str) -> Answer {
    s.admin(
        "POST",
        &format!("/v1/admin/installations/{installation}/rotate-key"),
        None,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_installation_key_is_rotated_under_load_and_everything_still_reads() {
    let up = TestProvider::start(ProviderConfig::default()).await;
    let s = TestServer::start(bin()).await;
    let c = up.config().clone();
    provider(&s, "cc", up.client_credentials_document()).await;
    provider(
        &s,
        "up",
        json!({"base_url": up.api_base(), "allow_private_network": true, "inject": {"type": "bearer"},
            "oauth2": {"grant": "authorization_code", "authorize_url": up.authorize_url(),
                "token_url": up.token_url(), "client_id": c.client_id,
                "client_secret": c.client_secret, "scopes": ["read"]}}),
    )
    .await;
    let a = s.install("app", &ALL_SCOPES, "acct-a", "inst-a").await;
    let b = s.install("app", &ALL_SCOPES, "acct-b", "inst-b").await;
    fixed_records(&s, &a, "a").await;
    fixed_records(&s, &b, "b").await;
    for (t, tag) in [(&a, "a"), (&b, "b")] {
        let r = s
            .call(
                "PUT",
                &format!("/v1/kv/{tag}-counter"),
                Some(t),
                Some(&json!({"value": {"n": 0}})),
            )
            .await;
        assert_eq!(r.status, 201, "{r:?}");
    }
    // Credentials: one renewed host-side (client credentials), one static (and one per flow).
    let r = s
        .call(
            "PUT",
            "/v1/credentials/conn",
            Some(&a),
            Some(&json!({"provider": "cc", "secret": {}})),
        )
        .await;
    assert_eq!(r.status, 201, "{r:?}");
    let r = s
        .call(
            "PUT",
            "/v1/credentials/static",
            Some(&a),
            Some(
                &json!({"provider": "up", "secret": {"access_token": "static-token"},
                "metadata": {"label": "kept"}}),
            ),
        )
        .await;
    assert_eq!(r.status, 201, "{r:?}");
    assert_proxy_answers(&s, &a).await;
    // A completed flow whose access token waits to be taken, and a pending one.
    let (done_flow, authorize) = start_flow(&s, &a, "done").await;
    consent(&s, &up, &authorize).await;
    let (pending_flow, pending_authorize) = start_flow(&s, &a, "later").await;

    let before_a = stored(&s, "inst-a");
    let before_b = stored(&s, "inst-b");
    assert_eq!(
        before_a
            .sealed
            .keys()
            .filter(|(table, ..)| table.starts_with("oauth_flows"))
            .count(),
        3,
        "two verifiers and one access token"
    );

    // The load, on both installations, and three rotations of A meanwhile.
    let s = Arc::new(s);
    let stop = Arc::new(AtomicBool::new(false));
    let (seen_a, seen_b) = (Arc::new(Seen::default()), Arc::new(Seen::default()));
    let mut tasks = load(
        s.clone(),
        Arc::new(a.clone()),
        "a",
        true,
        stop.clone(),
        seen_a.clone(),
    );
    tasks.extend(load(
        s.clone(),
        Arc::new(b.clone()),
        "b",
        false,
        stop.clone(),
        seen_b.clone(),
    ));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut rotations = Vec::new();
    for _ in 0..3 {
        let r = rotate(&s, "inst-a").await;
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.body["installation_id"], "inst-a");
        rotations.push(r.body.clone());
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.unwrap_or_else(|e| panic!("a load task: {e}"));
    }
    for seen in [&seen_a, &seen_b] {
        assert!(
            seen.failures().is_empty(),
            "failed requests: {:?}",
            seen.failures()
        );
        assert!(
            seen.requests.load(Ordering::Relaxed) > 50,
            "too little load"
        );
    }
    // Every record of A's stores (shared is the app's, not the installation's), both
    // credentials and three flow ciphertexts were re-sealed, at least.
    for r in &rotations {
        assert!(r["records"].as_u64().unwrap_or(0) >= 4, "{r}");
        assert_eq!(r["credentials"], 3, "{r}");
        assert_eq!(r["oauth_flows"], 2, "{r}");
    }
    let s = Arc::try_unwrap(s).unwrap_or_else(|_| panic!("the load still holds the server"));
    assert_acked(&s, &a, "a", &seen_a).await;
    assert_acked(&s, &b, "b", &seen_b).await;

    // The stored key and every ciphertext of A changed (the rows the load did not rewrite kept
    // their versions); nothing of B did.
    let after_a = stored(&s, "inst-a");
    assert_ne!(after_a.wrapped_key, before_a.wrapped_key, "A has a new key");
    let mut compared = 0;
    for (at, (version, blob)) in &before_a.sealed {
        let Some((now_version, now_blob)) = after_a.sealed.get(at) else {
            continue;
        };
        if version == now_version {
            assert_ne!(blob, now_blob, "{at:?} was not re-sealed");
            compared += 1;
        }
    }
    assert!(compared >= 9, "only {compared} ciphertexts compared");
    let after_b = stored(&s, "inst-b");
    assert_eq!(after_b.wrapped_key, before_b.wrapped_key, "B keeps its key");
    for (at, (version, blob)) in &before_b.sealed {
        if let Some((now_version, now_blob)) = after_b.sealed.get(at)
            && now_version == version
        {
            assert_eq!(blob, now_blob, "{at:?} of B changed");
        }
    }

    // The flows: the completed one hands out its (re-sealed) access token; the pending one
    // completes with its (re-sealed) PKCE verifier.
    let r = s
        .call(
            "POST",
            &format!("/v1/oauth/flows/{done_flow}/complete"),
            Some(&a),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(
        r.body["access_token"]
            .as_str()
            .is_some_and(|t| !t.is_empty())
    );
    consent(&s, &up, &pending_authorize).await;
    let r = s
        .call(
            "POST",
            &format!("/v1/oauth/flows/{pending_flow}/complete"),
            Some(&a),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    up.assert_no_violations();

    // Refusals: unknown installation, installation token, a body with fields.
    let r = rotate(&s, "nobody").await;
    assert_eq!((r.status, r.code()), (404, Some("not_found")), "{r:?}");
    let r = s
        .call(
            "POST",
            "/v1/admin/installations/inst-a/rotate-key",
            Some(&a),
            None,
        )
        .await;
    assert_eq!(r.status, 403, "{r:?}");
    let r = s
        .admin(
            "POST",
            "/v1/admin/installations/inst-a/rotate-key",
            Some(&json!({"force": true})),
        )
        .await;
    assert_eq!(r.status, 400, "{r:?}");
    // The load leaves thousands of events on inst-a (more on a slow machine), so all pages.
    let events = s.audit_events("installation_id=inst-a").await;
    let rotated = events
        .iter()
        .filter(|e| e["operation"] == "admin.rotate_installation_key" && e["status"] == 200)
        .count();
    assert_eq!(rotated, 3, "each rotation is audited");

    // The CLI.
    let out = tresor_test_support::process::run(
        bin(),
        &["keys", "rotate-installation", "inst-a"],
        &[
            ("TRESOR_ADDR", s.url("").as_str()),
            ("TRESOR_ADMIN_TOKEN", s.admin_token.as_str()),
        ],
    )
    .await;
    assert_eq!(out.code, Some(0), "{out:?}");
    let answer: Value = serde_json::from_str(&out.stdout).unwrap_or(Value::Null);
    assert_eq!(answer["installation_id"], "inst-a", "{out:?}");
    assert_eq!(answer["credentials"], 4, "{out:?}");
    assert_eq!(answer["oauth_flows"], 2, "{out:?}");

    // A restart reads everything under the key it finds stored.
    let mut s = s;
    assert_eq!(s.terminate(), Some(0));
    s.launch().await;
    assert_acked(&s, &a, "a", &seen_a).await;
    assert_acked(&s, &b, "b", &seen_b).await;
    for key in ["static", "later", "done"] {
        let r = s
            .call("GET", &format!("/v1/credentials/{key}"), Some(&a), None)
            .await;
        assert_eq!(r.status, 200, "{key}: {r:?}");
    }
    let r = s
        .call("GET", "/v1/credentials/static", Some(&a), None)
        .await;
    assert_eq!(r.body["metadata"]["label"], "kept");
    assert_proxy_answers(&s, &a).await;
    for store in STORES {
        let r = s
            .call("GET", &format!("/v1/{store}/a-fixed"), Some(&a), None)
            .await;
        assert_eq!(r.body["value"]["fixed"], store, "{r:?}");
    }
    let r = s
        .call("GET", "/v1/secrets?prefix=a-fixed", Some(&a), None)
        .await;
    assert_eq!(
        r.body["items"][0]["description"], "a described record",
        "{r:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rotation_through_one_server_is_read_and_written_through_another_at_once() {
    let mut servers = TestServer::start_cluster(bin(), 2, &[], &[])
        .await
        .into_iter();
    let s0 = servers.next().unwrap_or_else(|| panic!("server 0"));
    let s1 = Arc::new(servers.next().unwrap_or_else(|| panic!("server 1")));
    let a = s0.install("app", &ALL_SCOPES, "acct-a", "inst-a").await;
    let r = s0
        .admin(
            "PUT",
            "/v1/admin/providers/up",
            Some(&json!({"base_url": "https://p.example.com/", "inject": {"type": "bearer"}})),
        )
        .await;
    assert_eq!(r.status, 201, "{r:?}");
    fixed_records(&s0, &a, "a").await;
    let r = s0
        .call(
            "PUT",
            "/v1/kv/a-counter",
            Some(&a),
            Some(&json!({"value": {"n": 0}})),
        )
        .await;
    assert_eq!(r.status, 201, "{r:?}");
    let r = s1
        .call(
            "PUT",
            "/v1/credentials/static",
            Some(&a),
            Some(&json!({"provider": "up", "secret": {"access_token": "t"}, "metadata": {"m": 1}})),
        )
        .await;
    assert_eq!(r.status, 201, "{r:?}");
    // Server 1 reads and writes: it caches the key.
    for store in STORES {
        let r = s1
            .call("GET", &format!("/v1/{store}/a-fixed"), Some(&a), None)
            .await;
        assert_eq!(r.status, 200, "{r:?}");
    }

    // A rotation through server 0; then at once a blind write through server 1, which still
    // caches the old key: its commit must not land a ciphertext sealed under it.
    let r = rotate(&s0, "inst-a").await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body["credentials"], 1, "{r:?}");
    let r = s1
        .call(
            "PUT",
            "/v1/kv/a-blind",
            Some(&a),
            Some(&json!({"value": "after"})),
        )
        .await;
    assert_eq!(r.status, 201, "{r:?}");
    let r = s0.call("GET", "/v1/kv/a-blind", Some(&a), None).await;
    assert_eq!(
        (r.status, &r.body["value"]),
        (200, &json!("after")),
        "{r:?}"
    );
    // Again, with a credential.
    let r = rotate(&s0, "inst-a").await;
    assert_eq!(r.status, 200, "{r:?}");
    let r = s1
        .call(
            "PUT",
            "/v1/credentials/other",
            Some(&a),
            Some(&json!({"provider": "up", "secret": {"access_token": "o"}, "metadata": {"m": 2}})),
        )
        .await;
    assert_eq!(r.status, 201, "{r:?}");
    let r = s0
        .call("GET", "/v1/credentials/other", Some(&a), None)
        .await;
    assert_eq!(
        (r.status, &r.body["metadata"]["m"]),
        (200, &json!(2)),
        "{r:?}"
    );
    // And every read through server 1, its cached key stale once more.
    let r = rotate(&s0, "inst-a").await;
    assert_eq!(r.status, 200, "{r:?}");
    for store in STORES {
        let r = s1
            .call("GET", &format!("/v1/{store}/a-fixed"), Some(&a), None)
            .await;
        assert_eq!(
            (r.status, &r.body["value"]["fixed"]),
            (200, &json!(store)),
            "read through the other server: {r:?}"
        );
    }
    let r = s1
        .call("GET", "/v1/secrets?prefix=a-fixed", Some(&a), None)
        .await;
    assert_eq!(
        r.body["items"][0]["description"], "a described record",
        "{r:?}"
    );
    let r = s1
        .call("GET", "/v1/credentials/static", Some(&a), None)
        .await;
    assert_eq!(
        (r.status, &r.body["metadata"]["m"]),
        (200, &json!(1)),
        "{r:?}"
    );
    let r = s1
        .call(
            "PATCH",
            "/v1/settings/a-fixed",
            Some(&a),
            Some(&json!({"after": 1})),
        )
        .await;
    assert_eq!(r.status, 200, "a write through the other server: {r:?}");
    let r = s0.call("GET", "/v1/settings/a-fixed", Some(&a), None).await;
    assert_eq!(
        r.body["value"],
        json!({"fixed": "settings", "after": 1}),
        "{r:?}"
    );

    // Load through server 1 while server 0 rotates, twice.
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Seen::default());
    let tasks = load(
        s1.clone(),
        Arc::new(a.clone()),
        "a",
        false,
        stop.clone(),
        seen.clone(),
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    for _ in 0..2 {
        let r = rotate(&s0, "inst-a").await;
        assert_eq!(r.status, 200, "{r:?}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.unwrap_or_else(|e| panic!("a load task: {e}"));
    }
    assert!(
        seen.failures().is_empty(),
        "failed requests: {:?}",
        seen.failures()
    );
    assert!(
        seen.requests.load(Ordering::Relaxed) > 50,
        "too little load"
    );
    assert_acked(&s1, &a, "a", &seen).await;
    assert_acked(&s0, &a, "a", &seen).await;
}

/// The key cache of a server that did not rotate (`KeyRing` over the embedded backend, two
/// rings standing for two servers): a ciphertext under the new key opens after a fresh unwrap,
/// a commit sealed under the replaced key is refused, and a root key re-wrap (the same key
/// wrapped anew) costs nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_cached_key_is_unwrapped_again_and_never_sealed_under() {
    use tresor_backend_sqlite::{SqliteBackend, SqliteOptions};
    use tresor_core::CoreError;
    use tresor_core::audit::AuditEvent;
    use tresor_core::backend::{
        Backend, Commit, DescriptionChange, Expiry, Mutation, Precondition,
    };
    use tresor_core::keyring::{KeyRing, namespace_context};
    use tresor_core::model::StoreKind;
    use tresor_crypto::{DataKey, RootKeyRing, seal};

    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let backend = SqliteBackend::open(dir.path(), SqliteOptions::default())
        .unwrap_or_else(|e| panic!("open: {e}"));
    let root = Arc::new(RootKeyRing::generate().unwrap_or_else(|e| panic!("{e}")));
    let active = root.active_id().to_owned();
    let here = KeyRing::new(root.clone(), active.clone());
    let elsewhere = KeyRing::new(root.clone(), active);
    let row = here.new_namespace().unwrap_or_else(|e| panic!("{e}"));
    let ns = row.ns;
    let event = AuditEvent {
        id: 0,
        time: 0,
        request_id: "r".into(),
        token_id: None,
        app_id: None,
        account_id: None,
        installation_id: None,
        operation: "put_account".into(),
        store: None,
        key: None,
        status: 201,
        remote_addr: None,
    };
    backend
        .put_account("acct", row.clone(), event)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let aad = b"associated data";
    let old_key = here
        .key(&backend, ns)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let old = seal(&old_key, 1, aad, b"old").unwrap_or_else(|e| panic!("{e}"));

    // Another server replaces the key (what a rotation's swap does to the wrapped key).
    let new_key = DataKey::generate().unwrap_or_else(|e| panic!("{e}"));
    let new_wrapped = elsewhere
        .wrap(&new_key, &namespace_context(ns))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        backend
            .namespace_key_replace(ns, &row.wrapped_key, &new_wrapped)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    );
    let new = seal(&new_key, 1, aad, b"new").unwrap_or_else(|e| panic!("{e}"));

    // A commit sealed under the cached (replaced) key is refused, before anything else
    // unwraps the stored key again.
    let (_, stale) = here
        .sealing_key(&backend, ns)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(stale.wrapped_key, row.wrapped_key, "still the cached key");
    let put = |keys| Commit {
        guards: vec![ns],
        keys,
        mutations: vec![Mutation::Put {
            ns,
            store: StoreKind::Kv,
            key: b"k".to_vec(),
            expect: Precondition::Any,
            value: b"sealed".to_vec(),
            description: DescriptionChange::Set(None),
            expiry: Expiry::Clear,
        }],
        audit: Vec::new(),
    };
    let refused = backend.commit(put(vec![stale])).await;
    assert!(matches!(refused, Err(CoreError::Rekeying)), "{refused:?}");

    // The new ciphertext opens: the cached key fails, the stored one is unwrapped again.
    let opened = here
        .open(&backend, ns, aad, &new)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(&**opened, b"new");
    let (_, fresh) = here
        .sealing_key(&backend, ns)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        fresh.wrapped_key, new_wrapped,
        "the cache holds the new key now"
    );
    backend
        .commit(put(vec![fresh]))
        .await
        .unwrap_or_else(|e| panic!("a commit under the new key applies: {e}"));
    // A ciphertext of the old key (read before the swap) does not open any more, nor does a
    // damaged one: both are integrity errors, which callers read again once.
    let gone = here.open(&backend, ns, aad, &old).await;
    assert!(matches!(gone, Err(CoreError::Integrity)), "{gone:?}");
    let mut damaged = new.clone();
    let last = damaged.len() - 1;
    damaged[last] ^= 1;
    let damaged = here.open(&backend, ns, aad, &damaged).await;
    assert!(matches!(damaged, Err(CoreError::Integrity)), "{damaged:?}");

    // A root key re-wrap: the same key under a new wrapping. Opening needs no second unwrap
    // (the cached key still opens), and a commit names the new wrapping after one refusal.
    let rewrapped = elsewhere
        .wrap(&new_key, &namespace_context(ns))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        backend
            .namespace_key_replace(ns, &new_wrapped, &rewrapped)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    );
    let opened = here
        .open(&backend, ns, aad, &new)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(&**opened, b"new");
}
