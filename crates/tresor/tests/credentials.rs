//! Black-box tests of providers and write-only credentials: the secret part is stored and never
//! answered (a canary scan of every response, the audit log, the server log and the data
//! directory), owners and their shared key space, scopes, kinds, and lifecycles.

use serde_json::{Value, json};
use tresor_test_support::server::{Answer, TestServer};

fn bin() -> &'static std::path::Path {
    env!("CARGO_BIN_EXE_tresor").as_ref()
}

const CANARY_SECRET: &str = "CRED-CANARY-4e1f0a-secret";
const CANARY_CLIENT_SECRET: &str = "PROVIDER-CANARY-77aa-client-secret";
const SCOPES: &[&str] = &["credentials:read", "credentials:store", "credentials:use"];

struct Seen(Vec<String>);

impl Seen {
    fn add(&mut self, r: &Answer) {
        self.0.push(r.text.clone());
        for (k, v) in &r.headers {
            self.0.push(format!("{k}: {}", v.to_str().unwrap_or("")));
        }
    }
}

async fn setup() -> (TestServer, String, String, Seen) {
    let s = TestServer::start(bin()).await;
    let mut seen = Seen(Vec::new());
    let r = s
        .admin(
            "PUT",
            "/v1/admin/providers/example",
            Some(&json!({
                "base_url": "https://api.example.com/v2/",
                "inject": {"type": "bearer"},
                "oauth2": {
                    "grant": "authorization_code",
                    "authorize_url": "https://example.com/oauth/authorize",
                    "token_url": "https://example.com/oauth/token",
                    "client_id": "abc",
                    "client_secret": CANARY_CLIENT_SECRET,
                    "scopes": ["read"],
                }
            })),
        )
        .await;
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(r.body["oauth2"]["client_secret_set"], true);
    seen.add(&r);
    let r = s
        .admin(
            "PUT",
            "/v1/admin/providers/keyed",
            Some(&json!({"base_url": "https://keyed.example.com/", "inject": {"type": "header", "name": "X-Api-Key"}})),
        )
        .await;
    assert_eq!(r.status, 201, "{r:?}");
    let a = s.install("app-a", SCOPES, "acct", "inst-a").await;
    let b = s.install("app-b", SCOPES, "acct", "inst-b").await;
    (s, a, b, seen)
}

#[tokio::test]
async fn providers_never_return_their_client_secret() {
    let (s, _, _, mut seen) = setup().await;
    for path in ["/v1/admin/providers/example", "/v1/admin/providers"] {
        let r = s.admin("GET", path, None).await;
        assert_eq!(r.status, 200);
        seen.add(&r);
    }
    // A PUT without the secret keeps the stored one.
    let r = s
        .admin(
            "PUT",
            "/v1/admin/providers/example",
            Some(
                &json!({"base_url": "https://api.example.com/v3/", "inject": {"type": "bearer"},
                "oauth2": {"grant": "authorization_code", "authorize_url": "https://example.com/a",
                           "token_url": "https://example.com/t", "client_id": "abc"}}),
            ),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["oauth2"]["client_secret_set"], true);
    assert_eq!(r.body["base_url"], "https://api.example.com/v3/");
    seen.add(&r);
    for bad in [
        json!({"base_url": "http://api.example.com/", "inject": {"type": "bearer"}}),
        json!({"base_url": "https://api.example.com/", "inject": {"type": "bogus"}}),
        json!({"base_url": "https://api.example.com/"}),
    ] {
        let r = s.admin("PUT", "/v1/admin/providers/bad", Some(&bad)).await;
        assert_eq!(
            (r.status, r.code()),
            (400, Some("invalid_request")),
            "{bad}"
        );
    }
    assert_eq!(
        s.admin("DELETE", "/v1/admin/providers/keyed", None)
            .await
            .status,
        204
    );
    assert_eq!(
        s.admin("GET", "/v1/admin/providers/keyed", None)
            .await
            .status,
        404
    );
    for text in &seen.0 {
        assert!(
            !text.contains(CANARY_CLIENT_SECRET),
            "the client secret leaked: {text}"
        );
    }
}

#[tokio::test]
async fn credentials_are_write_only() {
    let (mut s, a, b, mut seen) = setup().await;
    let put = |owner: &str, secret: Value| json!({"owner": owner, "provider": "example", "secret": secret, "metadata": {"shop": "acme"}});
    let r = s
        .call("PUT", "/v1/credentials/shopify%3Aacme", Some(&a), Some(&put("installation", json!({"access_token": CANARY_SECRET, "refresh_token": CANARY_SECRET, "expires_in": 3600, "scope": "read write"}))))
        .await;
    assert_eq!(r.status, 201, "{r:?}");
    seen.add(&r);
    assert_eq!(r.body["key"], "shopify:acme");
    assert_eq!(r.body["kind"], "oauth2");
    assert_eq!(r.body["owner"], "installation");
    assert_eq!(r.body["scopes"], json!(["read", "write"]));
    assert_eq!(r.body["metadata"], json!({"shop": "acme"}));
    assert_eq!(r.body["needs_reconsent"], false);
    assert!(r.body["token_expires_at"].is_string());
    assert!(r.body.get("secret").is_none());
    let r = s
        .call(
            "PUT",
            "/v1/credentials/shopify%3Aacme",
            Some(&a),
            Some(&put("installation", json!({"access_token": CANARY_SECRET}))),
        )
        .await;
    assert_eq!(r.status, 200);
    seen.add(&r);
    let r = s
        .call("GET", "/v1/credentials/shopify%3Aacme", Some(&a), None)
        .await;
    assert_eq!(r.status, 200);
    seen.add(&r);
    let r = s.call("GET", "/v1/credentials", Some(&a), None).await;
    assert_eq!(r.body["items"].as_array().map(Vec::len), Some(1));
    seen.add(&r);

    // Account credentials are shared by the account's installations, under one key space.
    let r = s
        .call(
            "PUT",
            "/v1/credentials/shared-key",
            Some(&a),
            Some(&put("account", json!({"access_token": CANARY_SECRET}))),
        )
        .await;
    assert_eq!(r.status, 201, "{r:?}");
    let r = s
        .call("GET", "/v1/credentials/shared-key", Some(&b), None)
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["owner"], "account");
    seen.add(&r);
    let r = s
        .call(
            "PUT",
            "/v1/credentials/shared-key",
            Some(&b),
            Some(&put("installation", json!({"access_token": "x"}))),
        )
        .await;
    assert_eq!((r.status, r.code()), (409, Some("conflict")), "{r:?}");
    let r = s
        .call(
            "PUT",
            "/v1/credentials/shopify%3Aacme",
            Some(&a),
            Some(&put("account", json!({"access_token": "x"}))),
        )
        .await;
    assert_eq!((r.status, r.code()), (409, Some("conflict")), "{r:?}");
    // Only the app that stored an account credential may replace or delete it.
    let r = s
        .call(
            "PUT",
            "/v1/credentials/shared-key",
            Some(&b),
            Some(&put("account", json!({"access_token": "x"}))),
        )
        .await;
    assert_eq!(r.status, 403, "{r:?}");
    let r = s
        .call("DELETE", "/v1/credentials/shared-key", Some(&b), None)
        .await;
    assert_eq!(r.status, 403, "{r:?}");
    // b's own credentials are invisible to a.
    let r = s
        .call(
            "PUT",
            "/v1/credentials/b-only",
            Some(&b),
            Some(&put("installation", json!({"access_token": "x"}))),
        )
        .await;
    assert_eq!(r.status, 201);
    assert_eq!(
        s.call("GET", "/v1/credentials/b-only", Some(&a), None)
            .await
            .status,
        404
    );
    let r = s.call("GET", "/v1/credentials", Some(&b), None).await;
    let keys: Vec<&str> = r.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|i| i["key"].as_str())
        .collect();
    assert_eq!(keys, ["b-only", "shared-key"]);

    // Kinds and providers are checked.
    for (body, why) in [
        (
            json!({"provider": "nope", "secret": {"access_token": "x"}}),
            "unknown provider",
        ),
        (
            json!({"provider": "example", "secret": {"api_key": "x"}}),
            "api key cannot serve bearer",
        ),
        (json!({"provider": "example", "secret": {}}), "empty secret"),
        (
            json!({"provider": "example", "secret": {"access_token": "x", "bogus": "y"}}),
            "unknown field",
        ),
        (json!({"provider": "example"}), "no secret"),
        (
            json!({"provider": "example", "secret": {"access_token": "x"}, "owner": "site"}),
            "bad owner",
        ),
        (
            json!({"provider": "example", "secret": {"access_token": "x"}, "metadata": {"m": "x".repeat(17 * 1024)}}),
            "metadata too large",
        ),
    ] {
        let r = s
            .call("PUT", "/v1/credentials/k", Some(&a), Some(&body))
            .await;
        assert!(r.status == 400 || r.status == 413, "{why}: {r:?}");
        assert!(!r.text.contains(CANARY_SECRET));
    }
    let r = s
        .call(
            "PUT",
            "/v1/credentials/api",
            Some(&a),
            Some(&json!({"provider": "keyed", "secret": {"api_key": CANARY_SECRET}})),
        )
        .await;
    assert_eq!(
        (r.status, r.body["kind"].as_str()),
        (201, Some("api_key")),
        "{r:?}"
    );

    // Uninstalling b keeps the account's credentials; a keeps seeing them.
    assert_eq!(
        s.admin("DELETE", "/v1/admin/installations/inst-b", None)
            .await
            .status,
        204
    );
    assert_eq!(
        s.call("GET", "/v1/credentials/shared-key", Some(&a), None)
            .await
            .status,
        200
    );
    // Deleting a credential; a missing one is 204 too.
    assert_eq!(
        s.call("DELETE", "/v1/credentials/shopify%3Aacme", Some(&a), None)
            .await
            .status,
        204
    );
    assert_eq!(
        s.call("DELETE", "/v1/credentials/shopify%3Aacme", Some(&a), None)
            .await
            .status,
        204
    );
    assert_eq!(
        s.call("GET", "/v1/credentials/shopify%3Aacme", Some(&a), None)
            .await
            .status,
        404
    );

    // The audit log names the operations and never the secret.
    let r = s.admin("GET", "/v1/admin/audit?limit=1000", None).await;
    assert!(r.text.contains("credentials.put"));
    seen.add(&r);
    // Deleting the account deletes its credentials with it.
    assert_eq!(
        s.admin("DELETE", "/v1/admin/accounts/acct", None)
            .await
            .status,
        204
    );

    assert_eq!(s.terminate(), Some(0));
    let log = s.log();
    seen.0.push(log);
    for text in &seen.0 {
        assert!(
            !text.contains(CANARY_SECRET),
            "a credential secret leaked: {text}"
        );
        assert!(!text.contains(CANARY_CLIENT_SECRET));
    }
    for entry in walk(s.data_dir()) {
        let bytes = std::fs::read(&entry).unwrap_or_default();
        for c in [CANARY_SECRET, CANARY_CLIENT_SECRET] {
            assert!(
                !bytes.windows(c.len()).any(|w| w == c.as_bytes()),
                "{} holds a secret",
                entry.display()
            );
        }
    }
}

#[tokio::test]
async fn credential_scopes() {
    let s = TestServer::start(bin()).await;
    s.admin(
        "PUT",
        "/v1/admin/providers/p",
        Some(&json!({"base_url": "https://api.example.com/", "inject": {"type": "bearer"}})),
    )
    .await;
    let ro = s.install("ro", &["credentials:read"], "acct", "i1").await;
    let none = s.install("none", &["secrets:read"], "acct", "i2").await;
    let body = json!({"provider": "p", "secret": {"access_token": "x"}});
    let r = s
        .call("PUT", "/v1/credentials/k", Some(&ro), Some(&body))
        .await;
    assert_eq!(r.status, 403);
    assert!(
        r.body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("credentials:store")
    );
    assert_eq!(
        s.call("GET", "/v1/credentials/k", Some(&ro), None)
            .await
            .status,
        404
    );
    let r = s.call("GET", "/v1/credentials", Some(&none), None).await;
    assert_eq!(r.status, 403);
    assert!(
        r.body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("credentials:read")
    );
    assert_eq!(
        s.call("DELETE", "/v1/credentials/k", Some(&ro), None)
            .await
            .status,
        403
    );
    // Admin tokens do not use tenant routes.
    assert_eq!(s.admin("GET", "/v1/credentials", None).await.status, 403);
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}
