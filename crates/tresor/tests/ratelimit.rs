//! Rate limits (issue 7, item 7), black-box against the real binary: an installation over its
//! rate is answered 429 `rate_limited` with `Retry-After` before its body is read, while other
//! installations and admin tokens go on; it recovers after the wait; failed authentications are
//! limited per client address, and once over, a request with a token is refused before the
//! token is checked; `X-Forwarded-For` names the client only when the peer is a trusted proxy
//! (and the audit's `remote_addr` follows it); the OAuth callback is limited per address; and
//! two servers over one PostgreSQL database split an installation's limit between them.
//!
//! No timing assertions: the rates are low enough (one request per ten seconds after the burst)
//! that a quick burst of requests is counted exactly.

use std::time::Duration;

use serde_json::Value;
use tresor_test_support::server::{Answer, TestServer};

fn bin() -> &'static std::path::Path {
    env!("CARGO_BIN_EXE_tresor").as_ref()
}

/// A token of the right shape that no store issued.
fn bogus_token() -> String {
    format!("tsr_0123456789abcdef_{}", "A".repeat(43))
}

/// One request every ten seconds after a burst of five: a quick burst of requests is counted
/// exactly.
const SLOW: [&str; 4] = [
    "--rate-limit-per-installation",
    "0.1",
    "--rate-limit-burst",
    "5",
];

async fn get_with(s: &TestServer, token: Option<&str>, xff: Option<&str>) -> Answer {
    let headers: Vec<(&str, String)> = xff
        .map(|v| vec![("x-forwarded-for", v.to_owned())])
        .unwrap_or_default();
    s.raw("GET", "/v1/secrets/k", token, &headers, None).await
}

/// How many of `n` quick reads with `token` were not refused with 429; checks every 429.
async fn burst(s: &TestServer, token: &str, n: usize) -> usize {
    let mut passed = 0;
    for _ in 0..n {
        let r = get_with(s, Some(token), None).await;
        if r.status == 429 {
            assert_rate_limited(&r);
        } else {
            assert_eq!(r.status, 404, "{r:?}");
            passed += 1;
        }
    }
    passed
}

/// The contract's 429: code `rate_limited`, `Retry-After` in whole seconds, at least 1.
fn assert_rate_limited(r: &Answer) -> u64 {
    assert_eq!(r.status, 429, "{r:?}");
    assert_eq!(r.code(), Some("rate_limited"), "{r:?}");
    assert!(r.body["error"]["request_id"].is_string(), "{r:?}");
    let secs: u64 = r
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no Retry-After in whole seconds: {r:?}"));
    assert!(secs >= 1, "{r:?}");
    secs
}

async fn metric(s: &TestServer, kind: &str) -> u64 {
    let text = s.call("GET", "/metrics", None, None).await.text;
    let name = format!("tresor_rate_limited_total{{kind=\"{kind}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&name).and_then(|v| v.trim().parse().ok()))
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
}

/// The audit events (waiting up to 10 s for `want` to hold, as reads are audited a moment
/// after they are answered).
async fn audit_until(s: &TestServer, want: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    for _ in 0..100 {
        let r = s.admin("GET", "/v1/admin/audit?limit=1000", None).await;
        assert_eq!(r.status, 200, "{r:?}");
        let items = r.body["items"].as_array().cloned().unwrap_or_default();
        if want(&items) {
            return items;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the audit log never held what was expected");
}

fn events_from<'a>(items: &'a [Value], addr: &str) -> Vec<&'a Value> {
    items
        .iter()
        .filter(|e| e["remote_addr"].as_str() == Some(addr))
        .collect()
}

#[tokio::test]
async fn an_installation_over_its_rate_gets_429_and_nobody_else_does() {
    let s = TestServer::start_with(bin(), &SLOW, &[]).await;
    let a = s.install("app", &["storage:app"], "acct-a", "inst-a").await;
    let b = s.install("app", &["storage:app"], "acct-b", "inst-b").await;

    // The burst of five, then 429 with the wait.
    assert_eq!(burst(&s, &a, 12).await, 5);
    let r = get_with(&s, Some(&a), None).await;
    let secs = assert_rate_limited(&r);
    assert!(secs <= 10, "one request per 10 s: {r:?}");

    // Refused before the body is read: a body that would be a 400 is a 429.
    let r = s
        .raw(
            "PUT",
            "/v1/secrets/k",
            Some(&a),
            &[("content-type", "application/json".into())],
            Some(b"{not json".to_vec()),
        )
        .await;
    assert_rate_limited(&r);
    // Every route of the installation: the batch, the credentials.
    let r = s
        .raw(
            "POST",
            "/v1/batch",
            Some(&a),
            &[("content-type", "application/json".into())],
            Some(b"{}".to_vec()),
        )
        .await;
    assert_rate_limited(&r);

    // Another installation has its own bucket.
    assert_eq!(burst(&s, &b, 5).await, 5);
    // Admin tokens are never limited.
    for _ in 0..30 {
        let r = s.admin("GET", "/v1/admin/apps", None).await;
        assert_eq!(r.status, 200, "{r:?}");
    }
    // A bad token is still 401, not 429 (and no failed-auth limit is on by default).
    for _ in 0..30 {
        let r = get_with(&s, Some(&bogus_token()), None).await;
        assert_eq!(r.status, 401, "{r:?}");
    }
    assert!(metric(&s, "installation").await >= 9);
    assert_eq!(metric(&s, "auth_failure").await, 0);
}

#[tokio::test]
async fn an_installation_recovers_after_retry_after() {
    let args = [
        "--rate-limit-per-installation",
        "2",
        "--rate-limit-burst",
        "2",
    ];
    let s = TestServer::start_with(bin(), &args, &[]).await;
    let a = s.install("app", &["storage:app"], "acct", "inst").await;
    let mut limited = None;
    for _ in 0..50 {
        let r = get_with(&s, Some(&a), None).await;
        if r.status == 429 {
            limited = Some(assert_rate_limited(&r));
            break;
        }
    }
    let secs = limited.expect("a 429 within 50 requests at 2/s");
    assert_eq!(secs, 1, "half a second at most: 1 whole second");
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let r = get_with(&s, Some(&a), None).await;
    assert_eq!(r.status, 404, "{r:?}");
}

#[tokio::test]
async fn failed_authentications_are_limited_per_address_before_the_token_is_checked() {
    let args = ["--auth-failure-limit-per-address", "3"];
    let s = TestServer::start_with(bin(), &args, &[]).await;
    let good = s.install("app", &["storage:app"], "acct", "inst").await;
    // Successes do not count.
    for _ in 0..10 {
        assert_eq!(get_with(&s, Some(&good), None).await.status, 404);
    }
    for _ in 0..3 {
        let r = get_with(&s, Some(&bogus_token()), None).await;
        assert_eq!(r.status, 401, "{r:?}");
    }
    let r = get_with(&s, Some(&bogus_token()), None).await;
    let secs = assert_rate_limited(&r);
    assert!((1..=20).contains(&secs), "three a minute: {r:?}");
    // Refused before the token is checked: a good token from this address gets the same 429,
    // so a guess that happens to be right is not told apart.
    let r = get_with(&s, Some(&good), None).await;
    assert_rate_limited(&r);
    let r = s.admin("GET", "/v1/admin/apps", None).await;
    assert_rate_limited(&r);
    // Without credentials there is nothing to guess: 401 as ever.
    let r = get_with(&s, None, None).await;
    assert_eq!(r.status, 401, "{r:?}");
    assert!(metric(&s, "auth_failure").await >= 3);
    assert_eq!(metric(&s, "installation").await, 0);
}

#[tokio::test]
async fn forwarded_for_names_the_client_only_behind_a_trusted_proxy() {
    let args = [
        "--auth-failure-limit-per-address",
        "2",
        "--trusted-proxy",
        "127.0.0.1/32",
    ];
    let s = TestServer::start_with(bin(), &args, &[]).await;
    let bad = bogus_token();
    for _ in 0..2 {
        let r = get_with(&s, Some(&bad), Some("203.0.113.7")).await;
        assert_eq!(r.status, 401, "{r:?}");
    }
    assert_rate_limited(&get_with(&s, Some(&bad), Some("203.0.113.7")).await);
    // Another client behind the same proxy has its own count.
    let r = get_with(&s, Some(&bad), Some("203.0.113.8")).await;
    assert_eq!(r.status, 401, "{r:?}");
    // A client cannot pick its address by prepending one: the rightmost untrusted one counts.
    let r = get_with(&s, Some(&bad), Some("198.51.100.1, 203.0.113.7")).await;
    assert_rate_limited(&r);
    let r = get_with(&s, Some(&bad), Some("203.0.113.7, 198.51.100.1")).await;
    assert_eq!(r.status, 401, "{r:?}");
    // The proxy's own address (no header) is untouched: the admin reads the audit.
    let items = audit_until(&s, |items| {
        events_from(items, "203.0.113.7")
            .iter()
            .any(|e| e["status"] == 429)
    })
    .await;
    let seven = events_from(&items, "203.0.113.7");
    assert_eq!(
        seven.iter().filter(|e| e["status"] == 401).count(),
        2,
        "{seven:?}"
    );
    assert!(seven.iter().all(|e| e["operation"] == "authenticate"));
    assert!(!events_from(&items, "203.0.113.8").is_empty());
    assert!(
        events_from(&items, "127.0.0.1")
            .iter()
            .all(|e| e["status"] != 401),
        "no failure was the proxy's own"
    );
}

#[tokio::test]
async fn forwarded_for_from_an_untrusted_peer_is_ignored() {
    let args = [
        "--auth-failure-limit-per-address",
        "3",
        "--trusted-proxy",
        "10.0.0.0/8",
    ];
    let s = TestServer::start_with(bin(), &args, &[]).await;
    let bad = bogus_token();
    for addr in ["203.0.113.1", "203.0.113.2"] {
        let r = get_with(&s, Some(&bad), Some(addr)).await;
        assert_eq!(r.status, 401, "{r:?}");
    }
    // The audit shows the peer, not what the header claims.
    let items = audit_until(&s, |items| {
        events_from(items, "127.0.0.1")
            .iter()
            .filter(|e| e["status"] == 401)
            .count()
            >= 2
    })
    .await;
    assert!(
        items
            .iter()
            .all(|e| !e["remote_addr"].as_str().unwrap_or("").starts_with("203.")),
        "{items:?}"
    );
    // Every "client" is 127.0.0.1: the third failure fills its count, whatever the header.
    let r = get_with(&s, Some(&bad), Some("203.0.113.3")).await;
    assert_eq!(r.status, 401, "{r:?}");
    assert_rate_limited(&get_with(&s, Some(&bad), Some("203.0.113.4")).await);
}

#[tokio::test]
async fn the_oauth_callback_is_limited_per_address() {
    let args = ["--oauth-callback-limit-per-address", "2"];
    let s = TestServer::start_with(bin(), &args, &[]).await;
    let call = || s.raw("GET", "/v1/oauth/callback?state=nope", None, &[], None);
    for _ in 0..2 {
        let r = call().await;
        assert_eq!(r.status, 400, "{r:?}");
    }
    let r = call().await;
    assert_eq!(r.status, 429, "{r:?}");
    let secs: u64 = r
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .expect("Retry-After");
    assert!((1..=30).contains(&secs), "{r:?}");
    assert!(r.text.contains("Too many attempts"), "{r:?}");
    assert_eq!(metric(&s, "oauth_callback").await, 1);
    // Refusals of the callback are audited, this one too.
    audit_until(&s, |items| {
        items
            .iter()
            .any(|e| e["operation"] == "oauth.callback" && e["status"] == 429)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_over_one_database_split_the_limit() {
    let args = [
        "--rate-limit-per-installation",
        "0.1",
        "--rate-limit-burst",
        "10",
    ];
    let mut s = TestServer::start_cluster(bin(), 2, &args, &[]).await;
    // The second server saw both registrations when it started; the first one counts again
    // at its next heartbeat, or, as here, at a restart.
    assert_eq!(s[0].terminate(), Some(0), "{}", s[0].log());
    s[0].launch().await;
    let t = s[0].install("app", &["storage:app"], "acct", "inst").await;
    // Each server allows half of the burst of ten: ten in all, as one server alone would.
    assert_eq!(burst(&s[0], &t, 8).await, 5);
    assert_eq!(burst(&s[1], &t, 8).await, 5);
    // Another installation is not touched on either.
    let u = s[1]
        .install("app", &["storage:app"], "acct2", "inst2")
        .await;
    assert_eq!(burst(&s[0], &u, 5).await, 5);
}
