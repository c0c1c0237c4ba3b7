//! Black-box tests of the authenticated request proxy over real HTTP on loopback: injection of
//! each kind, redaction of every copy of the secret, refused headers and paths, redirects that
//! never carry the credential elsewhere, SSRF classes refused before anything is sent, and
//! bodies as JSON, text and base64.

use serde_json::{Value, json};
use tresor_test_support::provider::{CanaryListener, ProviderConfig, TestProvider};
use tresor_test_support::server::{Answer, TestServer};

fn bin() -> &'static std::path::Path {
    env!("CARGO_BIN_EXE_tresor").as_ref()
}

const SCOPES: &[&str] = &["credentials:read", "credentials:store", "credentials:use"];

struct World {
    s: TestServer,
    up: TestProvider,
    token: String,
    canary: CanaryListener,
    answers: Vec<String>,
}

impl World {
    async fn new() -> World {
        let up = TestProvider::start(ProviderConfig::default()).await;
        let s = TestServer::start(bin()).await;
        let canary = CanaryListener::start().await;
        for (name, inject) in [
            ("bearer", json!({"type": "bearer"})),
            (
                "keyed",
                json!({"type": "header", "name": "X-Api-Key", "prefix": "Token "}),
            ),
            ("query", json!({"type": "query", "name": "api_key"})),
            ("basic", json!({"type": "basic"})),
        ] {
            let r = s
                .admin(
                    "PUT",
                    &format!("/v1/admin/providers/{name}"),
                    Some(&json!({"base_url": up.api_base(), "allow_private_network": true, "inject": inject})),
                )
                .await;
            assert_eq!(r.status, 201, "{r:?}");
        }
        let token = s.install("app", SCOPES, "acct", "inst").await;
        World {
            s,
            up,
            token,
            canary,
            answers: Vec::new(),
        }
    }

    async fn store(&mut self, key: &str, provider: &str, secret: Value) {
        let r = self
            .s
            .call(
                "PUT",
                &format!("/v1/credentials/{key}"),
                Some(&self.token),
                Some(&json!({"provider": provider, "secret": secret})),
            )
            .await;
        assert_eq!(r.status, 201, "{r:?}");
        self.keep(&r);
    }

    async fn request(&mut self, key: &str, body: Value) -> Answer {
        let r = self
            .s
            .call(
                "POST",
                &format!("/v1/credentials/{key}/request"),
                Some(&self.token),
                Some(&body),
            )
            .await;
        self.keep(&r);
        r
    }

    fn keep(&mut self, r: &Answer) {
        self.answers.push(r.text.clone());
        for (k, v) in &r.headers {
            self.answers
                .push(format!("{k}: {}", v.to_str().unwrap_or("")));
        }
    }

    fn assert_never_answered(&self, secret: &str) {
        for a in &self.answers {
            assert!(!a.contains(secret), "a secret came back: {a}");
        }
    }
}

#[tokio::test]
async fn injection_and_redaction() {
    let mut w = World::new().await;
    let at = w.up.mint_access_token();
    w.store("b", "bearer", json!({"access_token": at})).await;
    let r = w.request("b", json!({"method": "GET", "path": "echo", "query": {"q": ["1", "2"], "x": "a b"}, "headers": {"X-Trace": "t1"}})).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body["status"], 200, "{r:?}");
    let echo = &r.body["body"];
    assert_eq!(echo["method"], "GET");
    assert_eq!(echo["path"], "/api/v2/echo");
    assert_eq!(echo["headers"]["x-trace"], "t1");
    assert_eq!(
        echo["token"], "[REDACTED]",
        "the upstream saw the token and the echo was redacted"
    );
    assert_eq!(r.body["headers"]["x-echo-token"], "[REDACTED]");
    assert!(
        echo["headers"]["authorization"]
            .as_str()
            .unwrap_or("")
            .contains("[REDACTED]")
    );

    let key = w.up.mint_access_token();
    w.store("k", "keyed", json!({"api_key": key})).await;
    let r = w
        .request(
            "k",
            json!({"method": "POST", "path": "/echo", "body": {"hello": "world"}}),
        )
        .await;
    assert_eq!(r.body["status"], 200, "{r:?}");
    assert_eq!(r.body["body"]["body"], json!({"hello": "world"}));
    assert_eq!(r.body["body"]["token"], "[REDACTED]");

    let qk = w.up.mint_access_token();
    w.store("q", "query", json!({"api_key": qk})).await;
    let r = w
        .request("q", json!({"method": "GET", "path": "echo"}))
        .await;
    assert_eq!(r.body["status"], 200, "{r:?}");
    let r = w
        .request(
            "q",
            json!({"method": "GET", "path": "echo", "query": {"api_key": "mine"}}),
        )
        .await;
    assert_eq!((r.status, r.code()), (400, Some("invalid_request")));

    let (user, pass) = w.up.mint_basic();
    w.store("u", "basic", json!({"username": user, "password": pass}))
        .await;
    let r = w
        .request("u", json!({"method": "GET", "path": "echo"}))
        .await;
    assert_eq!(r.body["status"], 200, "{r:?}");

    // Upstream errors come back inside a 200; cookies are dropped; bodies keep their type.
    let r = w
        .request("b", json!({"method": "GET", "path": "status/404"}))
        .await;
    assert_eq!((r.status, r.body["status"].as_u64()), (200, Some(404)));
    let r = w
        .request("b", json!({"method": "GET", "path": "set-cookie"}))
        .await;
    assert!(r.body["headers"].get("set-cookie").is_none(), "{r:?}");
    let r = w
        .request("b", json!({"method": "GET", "path": "text"}))
        .await;
    assert_eq!(r.body["body"], "hello");
    let r = w
        .request("b", json!({"method": "GET", "path": "binary"}))
        .await;
    let bytes: Vec<u8> = (0..=255).collect();
    use base64::Engine as _;
    assert_eq!(
        r.body["body_base64"],
        base64::engine::general_purpose::STANDARD.encode(bytes)
    );
    let r = w
        .request(
            "b",
            json!({"method": "PUT", "path": "echo", "body_base64": "AAEC"}),
        )
        .await;
    assert_eq!(r.body["status"], 200);

    // Headers and query parameters that carry the credential cannot be set or overridden.
    for (key, headers) in [
        ("b", json!({"Authorization": "Bearer mine"})),
        ("b", json!({"authorization": "x"})),
        ("k", json!({"x-api-key": "mine"})),
        ("b", json!({"Host": "evil.example"})),
        ("b", json!({"Cookie": "a=b"})),
        ("b", json!({"Proxy-Authorization": "x"})),
    ] {
        let r = w
            .request(
                key,
                json!({"method": "GET", "path": "echo", "headers": headers}),
            )
            .await;
        assert_eq!(
            (r.status, r.code()),
            (400, Some("invalid_request")),
            "{headers}"
        );
    }
    assert!(
        w.up.stats().violations.is_empty(),
        "{:?}",
        w.up.stats().violations
    );
    for s in [&at, &key, &qk, &pass] {
        w.assert_never_answered(s);
    }
}

#[tokio::test]
async fn paths_redirects_and_destinations() {
    let mut w = World::new().await;
    let at = w.up.mint_access_token();
    w.store("b", "bearer", json!({"access_token": at})).await;
    let canary_url = w.canary.url();
    for path in [
        "../oauth/token",
        "a/../../x",
        "%2e%2e/x",
        "//127.0.0.1:1/x",
        "http://evil.example/",
        "\\evil",
        "a#frag",
        "a?x=1",
    ] {
        let r = w.request("b", json!({"method": "GET", "path": path})).await;
        assert_eq!(
            (r.status, r.code()),
            (400, Some("invalid_request")),
            "{path}: {r:?}"
        );
    }
    // A redirect goes back to the app as is and is never followed.
    let r = w.request("b", json!({"method": "GET", "path": "redirect", "query": {"to": format!("{canary_url}/steal")}})).await;
    assert_eq!(r.body["status"], 302, "{r:?}");
    assert!(
        r.body["headers"]["location"]
            .as_str()
            .unwrap_or("")
            .starts_with(&canary_url)
    );
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert_eq!(w.canary.hits(), 0, "the redirect was followed");

    // Destinations: without the operator's opt-in, loopback and private addresses are refused;
    // link-local and metadata always.
    let cases = [
        ("https://127.0.0.1/", false),
        ("https://localhost/", false),
        ("https://10.0.0.1/", false),
        ("https://[::1]/", false),
        ("https://2130706433/", false),
        ("https://169.254.169.254/", true),
        ("https://[::ffff:169.254.169.254]/", true),
        ("https://0.0.0.0/", true),
        ("https://224.0.0.1/", true),
        ("https://metadata.google.internal/", true),
    ];
    for (i, (base, even_with_opt_in)) in cases.iter().enumerate() {
        for allow in [false, true] {
            if allow && !even_with_opt_in {
                continue;
            }
            let name = format!("ssrf{i}{allow}");
            let r = w
                .s
                .admin("PUT", &format!("/v1/admin/providers/{name}"), Some(&json!({"base_url": base, "allow_private_network": allow, "inject": {"type": "bearer"}})))
                .await;
            assert_eq!(r.status, 201, "{base}: {r:?}");
            let key = format!("c{name}");
            w.store(&key, &name, json!({"access_token": at})).await;
            let r = w.request(&key, json!({"method": "GET", "path": "x"})).await;
            assert_eq!(
                (r.status, r.code()),
                (403, Some("destination_forbidden")),
                "{base} allow={allow}: {r:?}"
            );
        }
    }
    // A provider's allowed_hosts bound where the credential may go.
    let r = w
        .s
        .admin("PUT", "/v1/admin/providers/narrow", Some(&json!({"base_url": w.up.api_base(), "allow_private_network": true, "allowed_hosts": ["api.example.com"], "inject": {"type": "bearer"}})))
        .await;
    assert_eq!(r.status, 201);
    w.store("n", "narrow", json!({"access_token": at})).await;
    let r = w
        .request("n", json!({"method": "GET", "path": "echo"}))
        .await;
    assert_eq!((r.status, r.code()), (403, Some("destination_forbidden")));
    // An unreachable provider is 502.
    let r = w
        .s
        .admin("PUT", "/v1/admin/providers/down", Some(&json!({"base_url": "http://127.0.0.1:1/", "allow_private_network": true, "inject": {"type": "bearer"}})))
        .await;
    assert_eq!(r.status, 201);
    w.store("d", "down", json!({"access_token": at})).await;
    let r = w.request("d", json!({"method": "GET", "path": "x"})).await;
    assert_eq!((r.status, r.code()), (502, Some("upstream_failed")));
    assert_eq!(w.canary.hits(), 0);
    w.assert_never_answered(&at);
}

#[tokio::test]
async fn proxy_scopes_and_missing_credentials() {
    let w = World::new().await;
    let no_use =
        w.s.install(
            "app2",
            &["credentials:read", "credentials:store"],
            "acct",
            "inst2",
        )
        .await;
    let r =
        w.s.call(
            "POST",
            "/v1/credentials/x/request",
            Some(&no_use),
            Some(&json!({"method": "GET"})),
        )
        .await;
    assert_eq!(r.status, 403);
    assert!(
        r.body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("credentials:use")
    );
    let r =
        w.s.call(
            "POST",
            "/v1/credentials/missing/request",
            Some(&w.token),
            Some(&json!({"method": "GET"})),
        )
        .await;
    assert_eq!((r.status, r.code()), (404, Some("not_found")));
    let r =
        w.s.call(
            "POST",
            "/v1/credentials/missing/request",
            Some(&w.token),
            Some(&json!({"method": "TRACE"})),
        )
        .await;
    assert_eq!(r.status, 400);
}

#[tokio::test]
async fn time_and_size_caps_answer_502() {
    let up = TestProvider::start(ProviderConfig::default()).await;
    let s = TestServer::start_with(
        bin(),
        &["--proxy-timeout", "1", "--proxy-max-response-bytes", "4096"],
        &[],
    )
    .await;
    let r = s
        .admin("PUT", "/v1/admin/providers/p", Some(&json!({"base_url": up.api_base(), "allow_private_network": true, "inject": {"type": "bearer"}})))
        .await;
    assert_eq!(r.status, 201);
    let t = s.install("app", SCOPES, "acct", "inst").await;
    let at = up.mint_access_token();
    let r = s
        .call(
            "PUT",
            "/v1/credentials/c",
            Some(&t),
            Some(&json!({"provider": "p", "secret": {"access_token": at}})),
        )
        .await;
    assert_eq!(r.status, 201);
    let req = |body: Value| {
        let (s, t) = (&s, &t);
        async move {
            s.call("POST", "/v1/credentials/c/request", Some(t), Some(&body))
                .await
        }
    };
    let r = req(json!({"method": "GET", "path": "big", "query": {"bytes": "4096"}})).await;
    assert_eq!(r.body["status"], 200, "at the cap: {r:?}");
    let r = req(json!({"method": "GET", "path": "big", "query": {"bytes": "4097"}})).await;
    assert_eq!(
        (r.status, r.code()),
        (502, Some("upstream_failed")),
        "{r:?}"
    );
    let started = std::time::Instant::now();
    let r = req(json!({"method": "GET", "path": "slow", "query": {"ms": "3000"}})).await;
    assert_eq!(
        (r.status, r.code()),
        (502, Some("upstream_failed")),
        "{r:?}"
    );
    assert!(started.elapsed() < std::time::Duration::from_millis(2500));
    assert!(!r.text.contains(&at));
}

#[tokio::test]
async fn metadata_placeholders_fill_the_base_url_within_allowed_hosts() {
    let mut w = World::new().await;
    let api = url::Url::parse(&w.up.api_base()).unwrap();
    let port = api.port().unwrap_or(80);
    let r = w
        .s
        .admin(
            "PUT",
            "/v1/admin/providers/shops",
            Some(&json!({"base_url": format!("http://{{metadata.host}}:{port}/api/v2/"), "allow_private_network": true,
                "inject": {"type": "bearer"}})),
        )
        .await;
    assert_eq!(
        r.status, 400,
        "a host from metadata needs allowed_hosts: {r:?}"
    );
    let r = w
        .s
        .admin(
            "PUT",
            "/v1/admin/providers/shops",
            Some(&json!({"base_url": format!("http://{{metadata.host}}:{port}/api/v2/"), "allow_private_network": true,
                "allowed_hosts": [format!("127.0.0.1:{port}")], "inject": {"type": "bearer"}})),
        )
        .await;
    assert_eq!(r.status, 201, "{r:?}");
    let at = w.up.mint_access_token();
    for (key, host, want_status, want_code) in [
        ("good", "127.0.0.1", 200, None),
        ("other", "localhost", 403, Some("destination_forbidden")),
        ("inject", "127.0.0.1/evil", 400, Some("invalid_request")),
        ("userinfo", "evil@127.0.0.1", 400, Some("invalid_request")),
    ] {
        let r = w
            .s
            .call("PUT", &format!("/v1/credentials/{key}"), Some(&w.token), Some(&json!({"provider": "shops", "secret": {"access_token": at}, "metadata": {"host": host}})))
            .await;
        assert_eq!(r.status, 201);
        let r = w
            .request(key, json!({"method": "GET", "path": "echo"}))
            .await;
        assert_eq!(
            (r.status, r.code()),
            (want_status, want_code),
            "{host}: {r:?}"
        );
    }
    w.assert_never_answered(&at);
}
