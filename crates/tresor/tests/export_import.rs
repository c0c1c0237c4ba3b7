//! Black-box tests of `tresor export` and `tresor import` with the real binary: a store filled
//! through the HTTP API (records with TTLs and descriptions in every store, the shared store,
//! credentials of both owners, providers, several installations and tokens, audit) is stopped,
//! exported and imported into a fresh store, and a server started there with the same root key
//! serves every record with its version, every credential's metadata (and its secret, through
//! the proxy), and every token. The export file holds none of the planted plaintexts. Also:
//! the embedded store → PostgreSQL → embedded store round trip, refusals (a store a server
//! holds, a target that is not empty, a truncated or altered file).
//!
//! The source server is a [`TestServer`] on the embedded store with a root key file of the
//! test's own; servers on imported stores are started with exact command lines ([`serve`]),
//! since they need that same key and a store that exists before they start.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde_json::{Value, json};
use tresor_test_support::process::{Output, run};
use tresor_test_support::provider::{ProviderConfig, TestProvider};
use tresor_test_support::server::{TestServer, free_port, on_postgres};

fn bin() -> &'static Path {
    env!("CARGO_BIN_EXE_tresor").as_ref()
}

const VALUE_CANARY: &str = "EXPORT-CANARY-value-5c1d";
const DESCRIPTION_CANARY: &str = "EXPORT-CANARY-description-9b2e";
const METADATA_CANARY: &str = "EXPORT-CANARY-metadata-3f7a";
const CLIENT_SECRET_CANARY: &str = "EXPORT-CANARY-client-secret-77c0";

const SHOP_SCOPES: &[&str] = &tresor_test_support::ALL_SCOPES;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_store_round_trip() {
    let work = tempdir();
    let key = root_key(work.path()).await;
    let up = TestProvider::start(ProviderConfig::default()).await;
    let (mut source, mut planted) = filled_source(&key, &up).await;
    let source_dir = source.data_dir().to_owned();

    // A store a server holds is refused, and no file is left behind.
    let held = work.path().join("held.jsonl");
    let out = tresor(&["export", "--data-dir", s(&source_dir), "--out", s(&held)]).await;
    assert_failed(&out, "lock");
    assert!(!held.exists());

    planted.audit_ids = audit_ids(&source).await;
    assert_eq!(source.terminate(), Some(0), "{}", source.log());
    let file = work.path().join("export.jsonl");
    let out = tresor(&["export", "--data-dir", s(&source_dir), "--out", s(&file)]).await;
    assert_succeeded(&out);
    assert_no_plaintext(&file, &planted);
    // The file is as sensitive as the store: private to its owner.
    assert_private(&file);
    let out = tresor(&["export", "--data-dir", s(&source_dir), "--out", s(&file)]).await;
    assert_failed(&out, "must not exist");

    let target = work.path().join("target");
    assert_succeeded(&tresor(&["import", "--in", s(&file), "--data-dir", s(&target)]).await);
    // A second import into the now filled store is refused.
    assert_failed(
        &tresor(&["import", "--in", s(&file), "--data-dir", s(&target)]).await,
        "not empty",
    );

    let mut served = serve(
        &[
            "--data-dir".into(),
            target.clone().into(),
            "--master-key-file".into(),
            key.clone().into(),
        ],
        &planted.admin,
    )
    .await;
    check(&served, &mut planted, &up, "first").await;
    assert_eq!(served.terminate(), Some(0), "{}", served.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_or_altered_files_are_refused_before_anything_is_written() {
    let work = tempdir();
    let key = root_key(work.path()).await;
    let up = TestProvider::start(ProviderConfig::default()).await;
    let (mut source, _) = filled_source(&key, &up).await;
    assert_eq!(source.terminate(), Some(0), "{}", source.log());
    let file = work.path().join("export.jsonl");
    assert_succeeded(
        &tresor(&[
            "export",
            "--data-dir",
            s(source.data_dir()),
            "--out",
            s(&file),
        ])
        .await,
    );
    let bytes = std::fs::read(&file).unwrap_or_else(|e| panic!("{e}"));
    let text = String::from_utf8(bytes.clone()).unwrap_or_else(|e| panic!("{e}"));
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines.len() > 20, "a filled store has many rows");

    let without_trailer: String = lines[..lines.len() - 1]
        .iter()
        .map(|l| format!("{l}\n"))
        .collect();
    let half = bytes[..bytes.len() / 2].to_vec();
    // One row changed (a cell of the middle line), the trailer kept.
    let middle = lines.len() / 2;
    let altered: String = lines
        .iter()
        .enumerate()
        .map(|(i, l)| {
            if i == middle {
                format!("{}\n", alter_row(l))
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    let cases: [(&str, Vec<u8>, &str); 3] = [
        (
            "without its trailer",
            without_trailer.into_bytes(),
            "truncated",
        ),
        ("cut in half", half, "truncated"),
        ("with a row altered", altered.into_bytes(), "altered"),
    ];
    for (what, content, says) in cases {
        let broken = work.path().join("broken.jsonl");
        std::fs::write(&broken, content).unwrap_or_else(|e| panic!("{e}"));
        let target = work.path().join("never");
        let out = tresor(&["import", "--in", s(&broken), "--data-dir", s(&target)]).await;
        assert_failed(&out, says);
        assert!(
            !target.exists(),
            "{what}: the target was touched although the file was refused"
        );
    }
}

/// The embedded store → PostgreSQL → the embedded store, with a server on each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_to_postgres_and_back() {
    let work = tempdir();
    let key = root_key(work.path()).await;
    let up = TestProvider::start(ProviderConfig::default()).await;
    let (mut source, mut planted) = filled_source(&key, &up).await;
    planted.audit_ids = audit_ids(&source).await;
    assert_eq!(source.terminate(), Some(0), "{}", source.log());
    let first = work.path().join("from-sqlite.jsonl");
    assert_succeeded(
        &tresor(&[
            "export",
            "--data-dir",
            s(source.data_dir()),
            "--out",
            s(&first),
        ])
        .await,
    );

    let url = tresor_test_support::postgres::fresh_database().await;
    assert_succeeded(&tresor(&["import", "--in", s(&first), "--database-url", &url]).await);
    let mut on_pg = serve(
        &[
            "--database-url".into(),
            url.clone().into(),
            "--master-key-file".into(),
            key.clone().into(),
            "--data-dir".into(),
            work.path().join("pg-server").into(),
        ],
        &planted.admin,
    )
    .await;
    check(&on_pg, &mut planted, &up, "on-postgres").await;
    planted.audit_ids = audit_ids(&on_pg).await;

    // A database a server uses is refused.
    let busy = work.path().join("busy.jsonl");
    assert_failed(
        &tresor(&["export", "--database-url", &url, "--out", s(&busy)]).await,
        "stop them first",
    );
    assert!(!busy.exists());
    assert_eq!(on_pg.terminate(), Some(0), "{}", on_pg.log());

    let second = work.path().join("from-postgres.jsonl");
    assert_succeeded(&tresor(&["export", "--database-url", &url, "--out", s(&second)]).await);
    assert_no_plaintext(&second, &planted);
    let back = work.path().join("back");
    assert_succeeded(&tresor(&["import", "--in", s(&second), "--data-dir", s(&back)]).await);
    let mut served = serve(
        &[
            "--data-dir".into(),
            back.into(),
            "--master-key-file".into(),
            key.clone().into(),
        ],
        &planted.admin,
    )
    .await;
    check(&served, &mut planted, &up, "back").await;
    assert_eq!(served.terminate(), Some(0), "{}", served.log());
}

// ---------------------------------------------------------------------------------------------
// What the source holds

/// What was planted in the source, to be found again after the import.
struct Planted {
    admin: String,
    /// Installation tokens that work, each with a path it may read.
    tokens: Vec<(String, String)>,
    /// A revoked token, which must stay revoked.
    revoked: String,
    /// (token, path, the GET answer's body) of every record and credential.
    reads: Vec<(String, String, Value)>,
    /// The token and key of a credential whose secret the proxy uses.
    proxied: (String, String),
    /// The highest version seen: a write after an import must get a greater one.
    max_version: u64,
    /// The audit events of the source, by id and request id.
    audit_ids: Vec<(i64, String)>,
    /// Plaintexts that must never appear in an export file.
    secrets: Vec<String>,
}

async fn filled_source(key: &Path, up: &TestProvider) -> (TestServer, Planted) {
    assert!(
        !on_postgres(),
        "this test chooses its stores itself: run it without TRESOR_TEST_BACKEND=postgres"
    );
    let source = TestServer::start_with(bin(), &["--master-key-file", s(key)], &[]).await;
    let planted = fill(&source, up).await;
    (source, planted)
}

async fn fill(s: &TestServer, up: &TestProvider) -> Planted {
    let shop_acme = s.install("shop", SHOP_SCOPES, "acme", "shop-acme").await;
    let shop_globex = s
        .install("shop", SHOP_SCOPES, "globex", "shop-globex")
        .await;
    let analytics = s
        .install(
            "analytics",
            &["kv:read", "kv:write"],
            "acme",
            "analytics-acme",
        )
        .await;
    let mut secrets = vec![
        VALUE_CANARY.to_owned(),
        DESCRIPTION_CANARY.to_owned(),
        METADATA_CANARY.to_owned(),
        CLIENT_SECRET_CANARY.to_owned(),
        shop_acme.clone(),
        shop_globex.clone(),
        analytics.clone(),
        s.admin_token.clone(),
    ];

    let r = s
        .admin(
            "POST",
            "/v1/admin/installations/shop-acme/tokens",
            Some(&json!({"scopes": ["secrets:read"], "ttl_seconds": 86_400})),
        )
        .await;
    assert_eq!(r.status, 201, "{r:?}");
    let narrow = text(&r.body["token"]);
    let r = s
        .admin("POST", "/v1/admin/installations/shop-globex/tokens", None)
        .await;
    assert_eq!(r.status, 201, "{r:?}");
    let revoked = text(&r.body["token"]);
    let r = s
        .admin(
            "DELETE",
            &format!("/v1/admin/tokens/{}", text(&r.body["token_id"])),
            None,
        )
        .await;
    assert_eq!(r.status, 204, "{r:?}");
    secrets.extend([narrow.clone(), revoked.clone()]);

    let (sa, sg, an) = (shop_acme.as_str(), shop_globex.as_str(), analytics.as_str());
    let writes: Vec<(&str, &str, Value)> = vec![
        (
            sa,
            "/v1/secrets/apiKey",
            json!({"value": {"key": VALUE_CANARY}, "description": DESCRIPTION_CANARY}),
        ),
        (
            sa,
            "/v1/settings/theme",
            json!({"value": {"color": format!("{VALUE_CANARY}-theme")}, "ttl_seconds": 86_400}),
        ),
        (
            sa,
            "/v1/kv/B",
            json!({"value": [1, 2, 3], "description": "upper"}),
        ),
        (sa, "/v1/kv/a", json!({"value": "first"})),
        (
            sa,
            "/v1/kv/%C3%A9t%C3%A9",
            json!({"value": {"n": 1.5}, "ttl_seconds": 3_600}),
        ),
        (sa, "/v1/kv/gone", json!({"value": "deleted later"})),
        (
            sa,
            "/v1/shared/catalog",
            json!({"value": {"items": [format!("{VALUE_CANARY}-shared")]}}),
        ),
        (an, "/v1/kv/visits", json!({"value": 42})),
        (
            sg,
            "/v1/secrets/apiKey",
            json!({"value": "globex's own", "description": "other tenant"}),
        ),
    ];
    for (token, path, body) in &writes {
        let r = s.call("PUT", path, Some(token), Some(body)).await;
        assert_eq!(r.status, 201, "PUT {path}: {r:?}");
    }
    // A second version, a field op, and a delete.
    let r = s
        .call(
            "PUT",
            "/v1/kv/a",
            Some(&shop_acme),
            Some(&json!({"value": "second"})),
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    let r = s
        .call(
            "POST",
            "/v1/kv/counter/ops",
            Some(&shop_acme),
            Some(&json!({"ops": [{"op": "increment", "field": "calls", "by": 3}]})),
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    let r = s
        .call("DELETE", "/v1/kv/gone", Some(&shop_acme), None)
        .await;
    assert_eq!(r.status, 204, "{r:?}");

    for (name, body) in [
        (
            "upstream",
            json!({"base_url": up.api_base(), "allow_private_network": true, "inject": {"type": "bearer"}}),
        ),
        (
            "oauthy",
            json!({"base_url": up.api_base(), "allow_private_network": true, "inject": {"type": "bearer"},
                   "oauth2": {"grant": "authorization_code", "authorize_url": up.authorize_url(),
                              "token_url": up.token_url(), "client_id": "tresor-test-client",
                              "client_secret": CLIENT_SECRET_CANARY, "scopes": ["read"]}}),
        ),
    ] {
        let r = s
            .admin("PUT", &format!("/v1/admin/providers/{name}"), Some(&body))
            .await;
        assert_eq!(r.status, 201, "provider {name}: {r:?}");
    }
    let access_token = up.mint_access_token();
    secrets.push(access_token.clone());
    let r = s
        .call(
            "PUT",
            "/v1/credentials/api",
            Some(&shop_acme),
            Some(&json!({"provider": "upstream", "owner": "installation",
                         "secret": {"access_token": access_token},
                         "metadata": {"note": METADATA_CANARY}})),
        )
        .await;
    assert_eq!(r.status, 201, "{r:?}");
    let account_token = up.mint_access_token();
    secrets.push(account_token.clone());
    let r = s
        .call(
            "PUT",
            "/v1/credentials/shared-cred",
            Some(&shop_acme),
            Some(&json!({"provider": "oauthy", "owner": "account",
                         "secret": {"access_token": account_token, "refresh_token": format!("{account_token}-refresh"), "expires_in": 3600, "scope": "read"}})),
        )
        .await;
    assert_eq!(r.status, 201, "{r:?}");

    // What every record and credential reads as now.
    let mut reads = Vec::new();
    let mut max_version = 0;
    let mut paths: Vec<(&str, String)> = writes
        .iter()
        .filter(|(_, p, _)| !p.ends_with("/gone"))
        .map(|(t, p, _)| (*t, (*p).to_owned()))
        .collect();
    paths.push((sa, "/v1/kv/counter".into()));
    paths.push((sg, "/v1/shared/catalog".into()));
    paths.push((sa, "/v1/credentials/api".into()));
    paths.push((sa, "/v1/credentials/shared-cred".into()));
    for (token, path) in paths {
        let r = s.call("GET", &path, Some(token), None).await;
        assert_eq!(r.status, 200, "GET {path}: {r:?}");
        max_version = max_version.max(r.body["version"].as_u64().unwrap_or(0));
        reads.push((token.to_owned(), path, r.body));
    }
    assert!(max_version > 0, "records carry versions");
    let r = s.call("GET", "/v1/kv/gone", Some(&shop_acme), None).await;
    assert_eq!(r.status, 404);

    Planted {
        admin: s.admin_token.clone(),
        tokens: vec![
            (shop_acme.clone(), "/v1/kv/a".into()),
            (shop_globex, "/v1/secrets/apiKey".into()),
            (analytics, "/v1/kv/visits".into()),
            (narrow, "/v1/secrets/apiKey".into()),
        ],
        revoked,
        reads,
        proxied: (shop_acme, "api".into()),
        max_version,
        audit_ids: Vec::new(),
        secrets,
    }
}

/// Everything planted is there on the server `api`; a write then gets a version above every
/// version that was imported. `round` names this check's own writes.
async fn check(api: &TestServer, planted: &mut Planted, up: &TestProvider, round: &str) {
    for (token, path, want) in &planted.reads {
        let r = api.call("GET", path, Some(token), None).await;
        assert_eq!(r.status, 200, "GET {path}: {r:?}");
        assert_eq!(&r.body, want, "GET {path} after the import");
    }
    for (token, path) in &planted.tokens {
        let r = api.call("GET", path, Some(token), None).await;
        assert_eq!(r.status, 200, "a token works after the import: {r:?}");
    }
    let r = api
        .call("GET", "/v1/secrets/apiKey", Some(&planted.revoked), None)
        .await;
    assert_eq!(r.status, 401, "a revoked token stays revoked: {r:?}");
    let r = api
        .call("GET", "/v1/admin/apps", Some(&planted.admin), None)
        .await;
    assert_eq!(r.status, 200, "the admin token works: {r:?}");
    let apps: Vec<&str> = r.body["items"]
        .as_array()
        .map(|a| a.iter().filter_map(|i| i["app_id"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(apps, ["analytics", "shop"], "{r:?}");

    // The credential's secret opens under the same root key: the proxy uses it.
    let (token, key) = &planted.proxied;
    let r = api
        .call(
            "POST",
            &format!("/v1/credentials/{key}/request"),
            Some(token),
            Some(&json!({"method": "GET", "path": "echo"})),
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body["status"], 200, "the upstream took the token: {r:?}");
    up.assert_no_violations();

    assert!(planted.audit_ids.len() > 10, "the source was audited");
    let found = audit_ids(api).await;
    let missing: Vec<_> = planted
        .audit_ids
        .iter()
        .filter(|id| !found.contains(id))
        .collect();
    assert!(missing.is_empty(), "audit events lost: {missing:?}");

    // Versions go on above every imported one, for a new key and for an existing one.
    let (token, _) = &planted.tokens[0];
    let r = api
        .call(
            "PUT",
            &format!("/v1/kv/after-{round}"),
            Some(token),
            Some(&json!({"value": round})),
        )
        .await;
    assert_eq!(r.status, 201, "{r:?}");
    let fresh = r.body["version"].as_u64().unwrap_or(0);
    assert!(
        fresh > planted.max_version,
        "{round}: a new key got version {fresh}, not above {}",
        planted.max_version
    );
    let r = api
        .call(
            "PUT",
            "/v1/kv/B",
            Some(token),
            Some(&json!({"value": round, "description": "upper"})),
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    let again = r.body["version"].as_u64().unwrap_or(0);
    assert!(again > fresh, "{round}: {again} after {fresh}");
    planted.max_version = again;
    // Keep what later rounds compare in step with this write.
    let r = api.call("GET", "/v1/kv/B", Some(token), None).await;
    for (_, path, body) in &mut planted.reads {
        if path == "/v1/kv/B" {
            *body = r.body.clone();
        }
    }
}

/// Every audit event as (id, request id): ids alone could be handed out again by a target that
/// did not get the events.
async fn audit_ids(api: &TestServer) -> Vec<(i64, String)> {
    api.audit_events("")
        .await
        .iter()
        .filter_map(|e| Some((e["id"].as_i64()?, e["request_id"].as_str()?.to_owned())))
        .collect()
}

/// No planted plaintext in the file, in the clear or inside a base64 cell.
fn assert_no_plaintext(file: &Path, planted: &Planted) {
    let content = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("{e}"));
    let mut texts = vec![content.clone()];
    for line in content.lines() {
        let value: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        for cell in value["r"].as_array().into_iter().flatten() {
            if let Some(s) = cell.as_str()
                && let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(s)
            {
                texts.push(String::from_utf8_lossy(&bytes).into_owned());
            }
        }
    }
    for secret in &planted.secrets {
        for text in &texts {
            assert!(
                !text.contains(secret.as_str()),
                "{} holds a planted plaintext ({} chars)",
                file.display(),
                secret.len()
            );
        }
    }
}

#[cfg(unix)]
fn assert_private(file: &Path) {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(file)
        .unwrap_or_else(|e| panic!("{e}"))
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "{}", file.display());
}

/// A row line with one cell changed (an integer moved, or a string cut), still valid JSON.
fn alter_row(line: &str) -> String {
    let mut value: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
    let Some(cells) = value["r"].as_array_mut() else {
        panic!("not a row line: {line}");
    };
    let cell = cells
        .iter_mut()
        .find(|c| c.is_i64() || c.is_string())
        .unwrap_or_else(|| panic!("nothing to alter in {line}"));
    let altered = match &*cell {
        Value::String(s) => Value::String(format!("{s}x")),
        other => json!(other.as_i64().unwrap_or(0) + 1),
    };
    *cell = altered;
    value.to_string()
}

// ---------------------------------------------------------------------------------------------
// The binary

fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("tresor-export-test-")
        .tempdir()
        .unwrap_or_else(|e| panic!("tempdir: {e}"))
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap_or_else(|| panic!("a non-UTF-8 path"))
}

fn text(v: &Value) -> String {
    v.as_str()
        .unwrap_or_else(|| panic!("not a string: {v}"))
        .to_owned()
}

/// A root key file made by `tresor keygen`, shared by the source and every imported store.
async fn root_key(dir: &Path) -> PathBuf {
    let path = dir.join("root.key");
    assert_succeeded(&tresor(&["keygen", s(&path)]).await);
    path
}

/// Runs `tresor ARGS` to its end, with none of the environment that would pick a store.
async fn tresor(args: &[&str]) -> Output {
    run(bin(), args, &[]).await
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
    let stderr = &out.stderr;
    assert_eq!(out.code, Some(1), "stderr: {stderr}");
    assert!(stderr.contains(says), "expected `{says}` in: {stderr}");
}

/// `tresor serve --listen ADDR ARGS` on a store that exists already (an imported one), whose
/// admin token is `admin`.
async fn serve(args: &[OsString], admin: &str) -> TestServer {
    let listen = format!("127.0.0.1:{}", free_port());
    let mut all: Vec<OsString> = vec!["serve".into(), "--listen".into(), listen.into()];
    all.extend_from_slice(args);
    TestServer::start_exact(bin(), &all, &[], Some(admin)).await
}
