//! Tamper detection through the real binary: ciphertexts moved between records, stores and
//! tenants, flipped bits in values and wrapped keys are all refused with an integrity error,
//! never answered with a wrong plaintext, and the rest of the store keeps serving.

use serde_json::json;
use tresor_test_support::server::TestServer;

fn bin() -> &'static std::path::Path {
    env!("CARGO_BIN_EXE_tresor").as_ref()
}

fn db(s: &TestServer) -> rusqlite::Connection {
    rusqlite::Connection::open(s.data_dir().join("tresor.db")).unwrap_or_else(|e| panic!("{e}"))
}

fn value_of(c: &rusqlite::Connection, key: &str, store: i64) -> Vec<u8> {
    c.query_row(
        "SELECT value FROM records WHERE key = ?1 AND store = ?2",
        rusqlite::params![key.as_bytes(), store],
        |r| r.get(0),
    )
    .unwrap_or_else(|e| panic!("{key}: {e}"))
}

fn set_value(c: &rusqlite::Connection, key: &str, store: i64, v: &[u8]) {
    let n = c
        .execute(
            "UPDATE records SET value = ?1 WHERE key = ?2 AND store = ?3",
            rusqlite::params![v, key.as_bytes(), store],
        )
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(n, 1);
}

#[tokio::test]
async fn moved_and_flipped_ciphertexts_are_refused() {
    let mut s = TestServer::start(bin()).await;
    let a = s.install("app", &["storage:app"], "acct1", "i1").await;
    let b = s.install("app", &["storage:app"], "acct2", "i2").await;
    for (t, key, store, v) in [
        (&a, "moved-to", "secrets", "a-original"),
        (&a, "moved-from", "secrets", "a-other-key"),
        (&a, "store-moved", "kv", "a-kv"),
        (&a, "flipped", "secrets", "a-flipped"),
        (&a, "intact", "secrets", "a-intact"),
        (&b, "cross", "secrets", "b-value"),
    ] {
        let r = s
            .call(
                "PUT",
                &format!("/v1/{store}/{key}"),
                Some(t),
                Some(&json!({"value": v})),
            )
            .await;
        assert_eq!(r.status, 201);
    }
    assert_eq!(s.terminate(), Some(0));
    {
        let c = db(&s);
        // Another key of the same installation.
        let v = value_of(&c, "moved-from", 1);
        set_value(&c, "moved-to", 1, &v);
        // Another store: copy the kv ciphertext into a secrets row of the same key name.
        let v = value_of(&c, "store-moved", 3);
        c.execute(
            "INSERT INTO records (ns, store, key, version, created_at, updated_at, expires_at, value, description)
             SELECT ns, 1, key, version + 1000, created_at, updated_at, expires_at, ?1, NULL FROM records WHERE key = ?2 AND store = 3",
            rusqlite::params![v, b"store-moved".as_slice()],
        )
        .unwrap_or_else(|e| panic!("{e}"));
        // Another tenant: b's ciphertext into a's row.
        let v = value_of(&c, "cross", 1);
        set_value(&c, "moved-from", 1, &v);
        // A flipped bit in the tag.
        let mut v = value_of(&c, "flipped", 1);
        let last = v.len() - 1;
        v[last] ^= 1;
        set_value(&c, "flipped", 1, &v);
    }
    s.launch().await;
    for key in ["moved-to", "moved-from", "store-moved", "flipped"] {
        let r = s
            .call("GET", &format!("/v1/secrets/{key}"), Some(&a), None)
            .await;
        assert_eq!(
            (r.status, r.code()),
            (500, Some("internal")),
            "{key}: {r:?}"
        );
        assert!(r.text.contains("integrity"), "{key}: {r:?}");
        for leak in ["a-original", "a-other-key", "a-kv", "a-flipped", "b-value"] {
            assert!(!r.text.contains(leak));
        }
        // A patch over a tampered record is refused too, and changes nothing.
        let r = s
            .call(
                "PATCH",
                &format!("/v1/secrets/{key}"),
                Some(&a),
                Some(&json!({"x": 1})),
            )
            .await;
        assert_eq!(r.status, 500, "{key}: {r:?}");
    }
    let r = s.call("GET", "/v1/secrets/intact", Some(&a), None).await;
    assert_eq!(r.body["value"], "a-intact");
    let r = s.call("GET", "/v1/secrets/cross", Some(&b), None).await;
    assert_eq!(r.body["value"], "b-value");
}

#[tokio::test]
async fn a_flipped_wrapped_key_fails_only_its_installation() {
    let mut s = TestServer::start(bin()).await;
    let a = s.install("app", &["storage:app"], "acct1", "i1").await;
    let b = s.install("app", &["storage:app"], "acct2", "i2").await;
    s.call(
        "PUT",
        "/v1/secrets/k",
        Some(&a),
        Some(&json!({"value": "a"})),
    )
    .await;
    s.call(
        "PUT",
        "/v1/secrets/k",
        Some(&b),
        Some(&json!({"value": "b"})),
    )
    .await;
    assert_eq!(s.terminate(), Some(0));
    {
        let c = db(&s);
        let (ns, mut wrapped): (i64, Vec<u8>) = c
            .query_row(
                "SELECT n.ns, n.wrapped_key FROM namespaces n JOIN installations i ON i.ns = n.ns WHERE i.installation_id = 'i1'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap_or_else(|e| panic!("{e}"));
        let mid = wrapped.len() / 2;
        wrapped[mid] ^= 0x80;
        c.execute(
            "UPDATE namespaces SET wrapped_key = ?1 WHERE ns = ?2",
            rusqlite::params![wrapped, ns],
        )
        .unwrap_or_else(|e| panic!("{e}"));
    }
    s.launch().await;
    let r = s.call("GET", "/v1/secrets/k", Some(&a), None).await;
    assert_eq!(r.status, 500, "{r:?}");
    let r = s.call("GET", "/v1/secrets/k", Some(&b), None).await;
    assert_eq!(r.body["value"], "b");
}
