//! Start-up safety of the embedded store, through the real binary: a missing, wrong, foreign,
//! incomplete or malformed root key makes `tresor serve` refuse with a non-zero exit and one
//! clear message on stderr (naming the file and what is wrong, never a byte of a key), before
//! it writes anything: the data directory is compared file by file (names, sizes, SHA-256)
//! before and after every refusal. The very first start of an empty directory still creates
//! `DIR/root.key` (the README's quick start), and the right key still opens everything after
//! the refusals.

use std::collections::BTreeMap;
use std::path::Path;

use base64::Engine as _;
use serde_json::json;
use tresor_test_support::process::{Output, STORE_ENV, run};
use tresor_test_support::server::{TestServer, free_port};

fn bin() -> &'static Path {
    env!("CARGO_BIN_EXE_tresor").as_ref()
}

/// The admin token of every server here (`TRESOR_ADMIN_TOKEN`).
const ADMIN: &str = "startup-test-admin-token-0123456789abcdef";

fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("tresor-startup-")
        .tempdir()
        .unwrap_or_else(|e| panic!("tempdir: {e}"))
}

fn s(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// Every file under `dir`, recursively: relative path → (size, SHA-256 in hex). Empty when
/// the directory does not exist; directories appear with a trailing `/`.
fn listing(dir: &Path) -> BTreeMap<String, (u64, String)> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, (u64, String)>) {
        let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        for entry in entries {
            let path = entry.unwrap_or_else(|e| panic!("{e}")).path();
            let name = s(path.strip_prefix(root).unwrap_or(&path));
            if path.is_dir() {
                out.insert(format!("{name}/"), (0, String::new()));
                walk(root, &path, out);
            } else {
                let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
                let hash = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &bytes);
                let hex = hash.as_ref().iter().map(|b| format!("{b:02x}")).collect();
                out.insert(name, (bytes.len() as u64, hex));
            }
        }
    }
    let mut out = BTreeMap::new();
    if dir.exists() {
        walk(dir, dir, &mut out);
    }
    out
}

/// `tresor serve` over `data` with `extra` flags, run to its end (a refused start ends at
/// once). A server that starts instead (the refusal this file tests is broken) is killed after
/// 20 s rather than left running, and the test fails.
async fn serve(data: &Path, extra: &[String], envs: &[(&str, &str)]) -> Output {
    let mut cmd = tokio::process::Command::new(bin());
    cmd.args(["serve", "--listen", &format!("127.0.0.1:{}", free_port())])
        .arg("--data-dir")
        .arg(data)
        .args(extra)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    for var in STORE_ENV {
        cmd.env_remove(var);
    }
    cmd.env("TRESOR_ADMIN_TOKEN", ADMIN)
        .envs(envs.iter().copied());
    let out = tokio::time::timeout(std::time::Duration::from_secs(20), cmd.output())
        .await
        .unwrap_or_else(|_| panic!("serve {extra:?} did not stop: it should have refused"))
        .unwrap_or_else(|e| panic!("{}: {e}", bin().display()));
    Output {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Starts a server that must come up; its log is kept apart from `data`.
async fn start(data: &Path, extra: &[String], envs: &[(&str, &str)]) -> TestServer {
    let mut args = vec![
        "serve".to_owned(),
        "--listen".to_owned(),
        format!("127.0.0.1:{}", free_port()),
        "--data-dir".to_owned(),
        s(data),
    ];
    args.extend(extra.iter().cloned());
    let mut envs = envs.to_vec();
    envs.push(("TRESOR_ADMIN_TOKEN", ADMIN));
    TestServer::start_exact(bin(), &args, &envs, Some(ADMIN)).await
}

/// Asserts a refused start: non-zero exit, one paragraph on stderr that says it refused, wrote
/// nothing and contains every one of `says`, never `secrets` (key text), and the data
/// directory exactly as `before`.
fn assert_refused(
    case: &str,
    out: &Output,
    says: &[&str],
    secrets: &[String],
    data: &Path,
    before: &BTreeMap<String, (u64, String)>,
) {
    assert_ne!(out.code, Some(0), "{case}: {out:?}");
    assert!(out.code.is_some(), "{case}: ended by a signal: {out:?}");
    let err = out.stderr.trim();
    assert_eq!(err.lines().count(), 1, "{case}: one paragraph: {err}");
    assert!(
        err.starts_with("error: refusing to start on the data directory"),
        "{case}: {err}"
    );
    assert!(err.contains("nothing was written"), "{case}: {err}");
    for needle in says {
        assert!(err.contains(needle), "{case}: {err:?} lacks {needle:?}");
    }
    for secret in secrets {
        assert!(
            !err.contains(secret.as_str()),
            "{case}: the message shows key text"
        );
        // Fragments too (a message quoting part of a line).
        for part in secret.as_bytes().chunks(12).filter(|c| c.len() == 12) {
            let part = std::str::from_utf8(part).unwrap_or_default();
            assert!(!err.contains(part), "{case}: the message shows key text");
        }
    }
    assert!(!out.stderr.contains("tresor serving on"), "{case}: {out:?}");
    assert_eq!(&listing(data), before, "{case}: the data directory changed");
}

/// A store written with the key `flags` give (or `DIR/root.key` when none): an installation and
/// one secret; stopped cleanly. Returns the installation token.
async fn filled_store(data: &Path, flags: &[String]) -> String {
    let mut server = start(data, flags, &[]).await;
    let token = server
        .install("app", &["storage:app"], "acct", "inst")
        .await;
    let put = server
        .call(
            "PUT",
            "/v1/secrets/kept",
            Some(&token),
            Some(&json!({"value": "v1"})),
        )
        .await;
    assert_eq!(put.status, 201, "{put:?}");
    assert_eq!(server.terminate(), Some(0), "{}", server.log());
    token
}

/// The secret of [`filled_store`] reads back: the store is intact and the key right.
async fn assert_opens(data: &Path, flags: &[String], token: &str) {
    let mut server = start(data, flags, &[]).await;
    let got = server
        .call("GET", "/v1/secrets/kept", Some(token), None)
        .await;
    assert_eq!(got.status, 200, "{got:?}");
    assert_eq!(got.body["value"], "v1");
    assert_eq!(server.terminate(), Some(0), "{}", server.log());
}

async fn keygen(path: &Path, add_version: bool) {
    let mut args = vec!["keygen".to_owned()];
    if add_version {
        args.push("--add-version".to_owned());
    }
    args.push(s(path));
    let out = run(bin(), &args, &[]).await;
    assert_eq!(out.code, Some(0), "{out:?}");
}

fn key_flag(path: &Path) -> Vec<String> {
    vec!["--master-key-file".to_owned(), s(path)]
}

/// The base64 key texts of a key file, the secrets no message may show.
fn key_texts(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{e}"));
    text.lines()
        .skip(1)
        .filter_map(|l| l.split_once(':').map(|(_, k)| k.to_owned()))
        .collect()
}

#[tokio::test]
async fn the_first_start_of_an_empty_directory_creates_the_key() {
    let tmp = tempdir();
    let data = tmp.path().join("tresor-data");
    let token = filled_store(&data, &[]).await;
    let key = data.join("root.key");
    let mode = {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::metadata(&key)
            .unwrap_or_else(|e| panic!("{e}"))
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode, 0o600);
    assert_opens(&data, &[], &token).await;

    // An empty directory that exists is a first start too.
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap_or_else(|e| panic!("{e}"));
    let mut server = start(&empty, &[], &[]).await;
    assert_eq!(server.terminate(), Some(0), "{}", server.log());
    assert!(empty.join("root.key").exists());
}

#[tokio::test]
async fn a_store_whose_key_file_is_missing_is_refused_and_no_key_is_made() {
    let tmp = tempdir();
    let data = tmp.path().join("data");
    let token = filled_store(&data, &[]).await;
    let saved = tmp.path().join("saved.key");
    std::fs::rename(data.join("root.key"), &saved).unwrap_or_else(|e| panic!("{e}"));
    let before = listing(&data);

    let out = serve(&data, &[], &[]).await;
    assert_refused(
        "root.key moved away",
        &out,
        &[
            "root.key is missing",
            "none is generated",
            "--master-key-file",
        ],
        &[],
        &data,
        &before,
    );
    assert!(!data.join("root.key").exists());

    // Given where it is now, it opens the store again.
    assert_opens(&data, &key_flag(&saved), &token).await;
}

#[tokio::test]
async fn a_given_key_file_that_does_not_exist_is_never_created() {
    let tmp = tempdir();
    let missing = tmp.path().join("typo.key");

    // On a first start: the directory is not even created.
    let fresh = tmp.path().join("fresh");
    let out = serve(&fresh, &key_flag(&missing), &[]).await;
    assert_refused(
        "a first start with a missing key file",
        &out,
        &[&s(&missing), "does not exist", "tresor keygen"],
        &[],
        &fresh,
        &BTreeMap::new(),
    );
    assert!(!fresh.exists(), "the data directory was created");
    assert!(!missing.exists(), "the key file was created");

    // The same through the environment variable, and on an existing store.
    let data = tmp.path().join("data");
    let token = filled_store(&data, &[]).await;
    let before = listing(&data);
    let env = [(
        "TRESOR_MASTER_KEY_FILE",
        missing.to_str().unwrap_or_default(),
    )];
    let out = serve(&data, &[], &env).await;
    assert_refused(
        "TRESOR_MASTER_KEY_FILE missing",
        &out,
        &[&s(&missing), "does not exist"],
        &[],
        &data,
        &before,
    );
    assert!(!missing.exists(), "the key file was created");
    assert_opens(&data, &[], &token).await;
}

#[tokio::test]
async fn malformed_key_files_are_refused_naming_the_file_and_the_fault() {
    let tmp = tempdir();
    let data = tmp.path().join("data");
    let token = filled_store(&data, &[]).await;
    let key = data.join("root.key");
    let good = std::fs::read(&key).unwrap_or_else(|e| panic!("{e}"));
    let secrets = key_texts(&key);
    let text = String::from_utf8(good.clone()).unwrap_or_else(|e| panic!("{e}"));
    let line = text.lines().nth(1).unwrap_or_default().to_owned();
    let b64 = line.split_once(':').map(|(_, k)| k).unwrap_or_default();
    let short = base64::engine::general_purpose::STANDARD.encode([7u8; 31]);

    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("empty", Vec::new(), "the file is empty"),
        (
            "cut in the header",
            good[..10].to_vec(),
            "line 1: expected the header",
        ),
        (
            "the header only",
            b"tresor-root-key v1\n".to_vec(),
            "no key versions",
        ),
        (
            "cut inside the key",
            good[..good.len() / 2].to_vec(),
            "is it truncated?",
        ),
        (
            "wrong header",
            text.replace("tresor-root-key v1", "tresor-key v0")
                .into_bytes(),
            "line 1: expected the header",
        ),
        (
            "bad base64",
            text.replace(b64, &format!("*{}", &b64[1..])).into_bytes(),
            "line 2: key is not valid base64",
        ),
        (
            "a short key",
            format!("tresor-root-key v1\n1:{short}\n").into_bytes(),
            "line 2: key must be 32 bytes, found 31",
        ),
        (
            "no id",
            format!("tresor-root-key v1\n{b64}\n").into_bytes(),
            "line 2: expected ID:BASE64",
        ),
        (
            "not text",
            [&good[..25], &[0xff, 0xfe][..], &good[27..]].concat(),
            "not UTF-8",
        ),
    ];
    for (case, content, says) in cases {
        // As DIR/root.key of the store...
        std::fs::write(&key, &content).unwrap_or_else(|e| panic!("{e}"));
        let before = listing(&data);
        let out = serve(&data, &[], &[]).await;
        assert_refused(
            case,
            &out,
            &[&s(&key), "damaged", says],
            &secrets,
            &data,
            &before,
        );

        // ...and as a given file on a first start.
        let given = tmp.path().join("given.key");
        std::fs::write(&given, &content).unwrap_or_else(|e| panic!("{e}"));
        let fresh = tmp.path().join("fresh");
        let out = serve(&fresh, &key_flag(&given), &[]).await;
        assert_refused(
            case,
            &out,
            &[&s(&given), says],
            &secrets,
            &fresh,
            &BTreeMap::new(),
        );
        assert!(!fresh.exists(), "{case}: the data directory was created");
    }

    std::fs::write(&key, &good).unwrap_or_else(|e| panic!("{e}"));
    assert_opens(&data, &[], &token).await;
}

#[tokio::test]
async fn a_wrong_key_is_refused_before_anything_is_written() {
    let tmp = tempdir();
    let data = tmp.path().join("data");
    let right = tmp.path().join("right.key");
    keygen(&right, false).await;
    let token = filled_store(&data, &key_flag(&right)).await;
    let before = listing(&data);

    let wrong = tmp.path().join("wrong.key");
    keygen(&wrong, false).await;
    let env_key = base64::engine::general_purpose::STANDARD.encode([9u8; 32]);
    let out = serve(&data, &key_flag(&wrong), &[]).await;
    assert_refused(
        "another key file",
        &out,
        &["wrong key file", &s(&wrong)],
        &key_texts(&wrong),
        &data,
        &before,
    );
    let out = serve(&data, &[], &[("TRESOR_MASTER_KEY", &env_key)]).await;
    assert_refused(
        "another TRESOR_MASTER_KEY",
        &out,
        &["wrong key file", "TRESOR_MASTER_KEY"],
        std::slice::from_ref(&env_key),
        &data,
        &before,
    );
    // A key file in the directory that is not the store's (replaced by mistake).
    std::fs::copy(&wrong, data.join("root.key")).unwrap_or_else(|e| panic!("{e}"));
    let before_default = listing(&data);
    let out = serve(&data, &[], &[]).await;
    assert_refused(
        "another DIR/root.key",
        &out,
        &["wrong key file"],
        &key_texts(&wrong),
        &data,
        &before_default,
    );
    std::fs::remove_file(data.join("root.key")).unwrap_or_else(|e| panic!("{e}"));

    assert_opens(&data, &key_flag(&right), &token).await;
}

/// A key file that lacks a version the store uses (a copy from before `keygen --add-version`,
/// or one whose last line was cut off at a line end), or holds another key under that
/// version's id (two copies that each had a version added), is refused too, although the
/// store's first keys (wrapped under version 1) still open with it.
#[tokio::test]
async fn a_key_file_without_the_stores_newer_version_is_refused() {
    let tmp = tempdir();
    let data = tmp.path().join("data");
    let key = tmp.path().join("root.key");
    keygen(&key, false).await;
    let token = filled_store(&data, &key_flag(&key)).await;
    let old_copy = tmp.path().join("old-copy.key");
    let other_copy = tmp.path().join("other-copy.key");
    std::fs::copy(&key, &old_copy).unwrap_or_else(|e| panic!("{e}"));
    std::fs::copy(&key, &other_copy).unwrap_or_else(|e| panic!("{e}"));
    keygen(&key, true).await;
    keygen(&other_copy, true).await;

    // A rotation makes version 2 the store's active one; an installation made under it.
    let mut server = start(&data, &key_flag(&key), &[]).await;
    let rotated = server.admin("POST", "/v1/admin/keys/rotate", None).await;
    assert_eq!(rotated.status, 202, "{rotated:?}");
    let newer = server
        .install("app", &["storage:app"], "acct2", "inst2")
        .await;
    let put = server
        .call(
            "PUT",
            "/v1/secrets/newer",
            Some(&newer),
            Some(&json!({"value": "v2"})),
        )
        .await;
    assert_eq!(put.status, 201, "{put:?}");
    assert_eq!(server.terminate(), Some(0), "{}", server.log());
    let before = listing(&data);

    let out = serve(&data, &key_flag(&old_copy), &[]).await;
    assert_refused(
        "the copy without version 2",
        &out,
        &["does not hold version `2`", "wrong key file"],
        &key_texts(&key),
        &data,
        &before,
    );
    let out = serve(&data, &key_flag(&other_copy), &[]).await;
    assert_refused(
        "another version 2",
        &out,
        &["version `2`", "does not open", "wrong key file"],
        &key_texts(&other_copy),
        &data,
        &before,
    );

    let mut server = start(&data, &key_flag(&key), &[]).await;
    let got = server
        .call("GET", "/v1/secrets/newer", Some(&newer), None)
        .await;
    assert_eq!(got.body["value"], "v2", "{got:?}");
    let got = server
        .call("GET", "/v1/secrets/kept", Some(&token), None)
        .await;
    assert_eq!(got.body["value"], "v1", "{got:?}");
    assert_eq!(server.terminate(), Some(0), "{}", server.log());
}

/// After a crash the log (`tresor.db-wal`) holds committed data; the check reads it without
/// writing the database or the log. SQLite's shared-memory index (`-shm`) is the one file it
/// may rebuild.
#[tokio::test]
async fn a_wrong_key_after_a_crash_leaves_the_database_and_its_log_alone() {
    let tmp = tempdir();
    let data = tmp.path().join("data");
    let mut server = start(&data, &[], &[]).await;
    let token = server
        .install("app", &["storage:app"], "acct", "inst")
        .await;
    let put = server
        .call(
            "PUT",
            "/v1/secrets/kept",
            Some(&token),
            Some(&json!({"value": "v1"})),
        )
        .await;
    assert_eq!(put.status, 201, "{put:?}");
    server.kill9();
    let without_shm = |data: &Path| {
        let mut l = listing(data);
        l.remove("tresor.db-shm");
        l
    };
    let before = without_shm(&data);
    assert!(before.contains_key("tresor.db-wal"), "{before:?}");

    let wrong = tmp.path().join("wrong.key");
    keygen(&wrong, false).await;
    let out = serve(&data, &key_flag(&wrong), &[]).await;
    assert_ne!(out.code, Some(0), "{out:?}");
    assert!(out.stderr.contains("wrong key file"), "{out:?}");
    assert_eq!(
        without_shm(&data),
        before,
        "the database or its log changed"
    );

    assert_opens(&data, &[], &token).await;
}
