//! The SDK against a scripted HTTP server: checks the exact requests it sends (method, path,
//! query, headers, body) and how it reads the answers, without a real tresor server.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tresor_client::{
    AuditQuery, BatchOp, Client, CredentialPut, DeleteOptions, End, Error, ErrorCode, FieldOp,
    Owner, PatchOptions, PutOptions, Store,
};

const TOKEN: &str = "tok_test_0123456789abcdef0123456789";

struct Canned {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: String,
}

fn reply(status: u16, body: Value) -> Canned {
    Canned {
        status,
        headers: vec![("content-type", "application/json".into())],
        body: if body.is_null() {
            String::new()
        } else {
            body.to_string()
        },
    }
}

fn empty(status: u16) -> Canned {
    Canned {
        status,
        headers: Vec::new(),
        body: String::new(),
    }
}

fn api_error(status: u16, code: &str) -> Canned {
    reply(
        status,
        json!({"error": {"code": code, "message": format!("{code} happened"), "request_id": "req-1"}}),
    )
}

#[derive(Debug, Clone)]
struct Seen {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    body: String,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap()
    }
}

struct Mock {
    client: Client,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Mock {
    async fn start(script: Vec<Canned>) -> Mock {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let script = Arc::new(Mutex::new(VecDeque::from(script)));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let seen_by_server = seen.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                serve(stream, script.clone(), seen_by_server.clone()).await;
            }
        });
        let client = Client::new(&format!("http://{addr}"), TOKEN).unwrap();
        Mock { client, seen }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn only(&self) -> Seen {
        let seen = self.seen();
        assert_eq!(seen.len(), 1, "{seen:#?}");
        seen[0].clone()
    }
}

/// Serves one request per connection (`Connection: close`), the next scripted answer each.
async fn serve(
    mut stream: TcpStream,
    script: Arc<Mutex<VecDeque<Canned>>>,
    seen: Arc<Mutex<Vec<Seen>>>,
) {
    let mut buf = Vec::new();
    let head_end = loop {
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "connection closed mid-request");
        buf.extend_from_slice(&chunk[..n]);
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break pos + 4;
        }
    };
    let head = String::from_utf8(buf[..head_end].to_vec()).unwrap();
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next().unwrap().split(' ');
    let method = request_line.next().unwrap().to_owned();
    let target = request_line.next().unwrap().to_owned();
    let headers: Vec<(String, String)> = lines
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (n, v) = l.split_once(':').unwrap();
            (n.trim().to_ascii_lowercase(), v.trim().to_owned())
        })
        .collect();
    let length: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .map(|(_, v)| v.parse().unwrap())
        .unwrap_or(0);
    let mut body = buf[head_end..].to_vec();
    while body.len() < length {
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await.unwrap();
        body.extend_from_slice(&chunk[..n]);
    }
    seen.lock().unwrap().push(Seen {
        method: method.clone(),
        target,
        headers,
        body: String::from_utf8(body).unwrap(),
    });
    let canned = script
        .lock()
        .unwrap()
        .pop_front()
        .expect("more requests than scripted answers");
    let mut out = format!(
        "HTTP/1.1 {} X\r\nconnection: close\r\ncontent-length: {}\r\nx-request-id: hdr-req\r\n",
        canned.status,
        canned.body.len()
    );
    for (name, value) in &canned.headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str("\r\n");
    if method != "HEAD" {
        out.push_str(&canned.body);
    }
    stream.write_all(out.as_bytes()).await.unwrap();
    stream.shutdown().await.ok();
}

fn meta(key: &str, version: u64) -> Value {
    json!({"key": key, "version": version, "description": null,
           "created_at": "2026-01-01T00:00:00.000Z", "updated_at": "2026-01-01T00:00:00.000Z",
           "expires_at": null})
}

fn record(key: &str, version: u64, value: Value) -> Value {
    let mut doc = meta(key, version);
    doc["value"] = value;
    doc
}

#[tokio::test]
async fn get_sends_one_encoded_segment_and_the_bearer_token() {
    let mock = Mock::start(vec![reply(
        200,
        record("a/b c%", 3, json!({"token": "t", "n": 10})),
    )])
    .await;
    let got = mock
        .client
        .secrets()
        .get::<Value>("a/b c%")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.meta.version, 3);
    assert_eq!(got.value["n"], json!(10));
    let seen = mock.only();
    assert_eq!(seen.method, "GET");
    assert_eq!(seen.target, "/v1/secrets/a%2Fb%20c%25");
    assert_eq!(
        seen.header("authorization"),
        Some(format!("Bearer {TOKEN}").as_str())
    );
}

#[tokio::test]
async fn get_of_a_missing_key_is_none_and_fields_go_in_the_query() {
    let mock = Mock::start(vec![api_error(404, "not_found")]).await;
    let got = mock
        .client
        .kv()
        .get_fields::<Value, _>("k", &["a", "b c"])
        .await
        .unwrap();
    assert!(got.is_none());
    assert_eq!(mock.only().target, "/v1/kv/k?fields=a,b%20c");
}

#[tokio::test]
async fn get_errors_carry_code_and_request_id() {
    let mock = Mock::start(vec![api_error(403, "forbidden")]).await;
    let err = mock.client.settings().get::<Value>("k").await.unwrap_err();
    assert_eq!(err.code(), Some(&ErrorCode::Forbidden));
    assert_eq!(err.status(), Some(403));
    assert_eq!(err.request_id(), Some("req-1"));
    assert!(!err.to_string().contains(TOKEN));
}

#[tokio::test]
async fn put_with_options() {
    let mut previous = meta("k", 6);
    previous["previous"] = record("k", 6, json!("old"));
    previous["version"] = json!(7);
    let mock = Mock::start(vec![
        reply(201, meta("k", 1)),
        reply(200, previous),
        api_error(412, "precondition_failed"),
    ])
    .await;
    let store = mock.client.secrets();

    let first = store.put("k", &json!({"x": 1})).await.unwrap();
    assert!(first.created);
    assert_eq!(first.previous, None);

    let second = store
        .put_with(
            "k",
            "new",
            PutOptions {
                description: Some("d".into()),
                ttl_seconds: Some(60),
                if_match: Some(6),
                return_previous: true,
                ..PutOptions::default()
            },
        )
        .await
        .unwrap();
    assert!(!second.created);
    assert_eq!(second.meta.version, 7);
    assert_eq!(second.previous.unwrap().value, json!("old"));

    let third = store
        .put_with(
            "k",
            &1,
            PutOptions {
                if_none_match: true,
                ..PutOptions::default()
            },
        )
        .await
        .unwrap_err();
    assert!(third.is_precondition_failed());

    let seen = mock.seen();
    assert_eq!(seen[0].method, "PUT");
    assert_eq!(seen[0].target, "/v1/secrets/k");
    assert_eq!(seen[0].body, r#"{"value":{"x":1}}"#);
    assert_eq!(seen[0].header("content-type"), Some("application/json"));
    assert_eq!(seen[0].header("if-match"), None);
    assert_eq!(seen[1].target, "/v1/secrets/k?return=previous");
    assert_eq!(
        seen[1].body,
        r#"{"value":"new","description":"d","ttl_seconds":60}"#
    );
    assert_eq!(seen[1].header("if-match"), Some("\"6\""));
    assert_eq!(seen[2].header("if-none-match"), Some("*"));
}

#[tokio::test]
async fn put_passes_raw_json_through_unchanged() {
    let mock = Mock::start(vec![reply(201, meta("k", 1))]).await;
    let raw = serde_json::value::RawValue::from_string(
        r#"{"big": 123456789012345678901234567890, "f": 1.10}"#.to_owned(),
    )
    .unwrap();
    mock.client.kv().put("k", &*raw).await.unwrap();
    assert_eq!(
        mock.only().body,
        r#"{"value":{"big": 123456789012345678901234567890, "f": 1.10}}"#
    );
}

#[tokio::test]
async fn patch_uses_merge_patch_and_query_ttl() {
    let mock = Mock::start(vec![
        reply(200, record("k", 2, json!({"a": 1, "b": 2}))),
        reply(200, meta("k", 3)),
    ])
    .await;
    let store = mock.client.kv();
    let out = store.patch("k", &json!({"b": 2})).await.unwrap();
    assert_eq!(out.value, Some(json!({"a": 1, "b": 2})));
    let out = store
        .patch_with(
            "k",
            &json!({"a": null}),
            PatchOptions {
                if_match: Some(2),
                ttl_seconds: Some(30),
                return_previous: true,
            },
        )
        .await
        .unwrap();
    assert_eq!(out.value, None, "write-only answers carry no value");
    let seen = mock.seen();
    assert_eq!(seen[0].method, "PATCH");
    assert_eq!(
        seen[0].header("content-type"),
        Some("application/merge-patch+json")
    );
    assert_eq!(seen[0].body, r#"{"b":2}"#);
    assert_eq!(seen[1].target, "/v1/kv/k?ttl_seconds=30&return=previous");
    assert_eq!(seen[1].header("if-match"), Some("\"2\""));
}

#[tokio::test]
async fn update_retries_on_412_and_keeps_description() {
    let mut described = record("c", 1, json!({"counter": 1}));
    described["description"] = json!("rate limit");
    let mock = Mock::start(vec![
        reply(200, described),
        api_error(412, "precondition_failed"),
        reply(200, record("c", 2, json!({"counter": 5}))),
        reply(200, meta("c", 3)),
    ])
    .await;
    let mut calls = 0;
    let updated = mock
        .client
        .secrets()
        .update::<Value, _>("c", |old| {
            calls += 1;
            let counter = old
                .as_ref()
                .and_then(|v| v["counter"].as_u64())
                .unwrap_or(0);
            json!({"counter": counter + 1})
        })
        .await
        .unwrap();
    assert_eq!(calls, 2);
    assert_eq!(updated.meta.version, 3);
    assert_eq!(updated.value, json!({"counter": 6}));
    let seen = mock.seen();
    let methods: Vec<_> = seen.iter().map(|s| s.method.as_str()).collect();
    assert_eq!(methods, ["GET", "PUT", "GET", "PUT"]);
    assert_eq!(seen[1].header("if-match"), Some("\"1\""));
    assert_eq!(
        seen[1].json(),
        json!({"value": {"counter": 2}, "description": "rate limit"})
    );
    assert_eq!(seen[3].header("if-match"), Some("\"2\""));
}

#[tokio::test]
async fn update_of_a_missing_key_uses_if_none_match() {
    let mock = Mock::start(vec![api_error(404, "not_found"), reply(201, meta("n", 1))]).await;
    let updated = mock
        .client
        .kv()
        .update::<u64, _>("n", |old| old.unwrap_or(41) + 1)
        .await
        .unwrap();
    assert_eq!(updated.value, 42);
    let seen = mock.seen();
    assert_eq!(seen[1].header("if-none-match"), Some("*"));
    assert_eq!(seen[1].header("if-match"), None);
    assert_eq!(seen[1].body, r#"{"value":42}"#);
}

#[tokio::test]
async fn update_keeps_the_expiry() {
    let mut expiring = record("e", 1, json!(1));
    expiring["expires_at"] = json!("2999-01-01T00:00:00.000Z");
    let mock = Mock::start(vec![reply(200, expiring), reply(200, meta("e", 2))]).await;
    mock.client
        .kv()
        .update::<u64, _>("e", |old| old.unwrap_or(0) + 1)
        .await
        .unwrap();
    let body = mock.seen()[1].json();
    assert!(body["ttl_seconds"].as_u64().unwrap() > 30_000_000_000 / 10);
}

#[tokio::test]
async fn update_gives_up_with_the_last_412() {
    let mut script = Vec::new();
    for _ in 0..tresor_client::UPDATE_ATTEMPTS {
        script.push(reply(200, record("hot", 1, json!(0))));
        script.push(api_error(412, "precondition_failed"));
    }
    let mock = Mock::start(script).await;
    let err = mock
        .client
        .kv()
        .update::<u64, _>("hot", |old| old.unwrap_or(0) + 1)
        .await
        .unwrap_err();
    assert!(err.is_precondition_failed());
    assert_eq!(
        mock.seen().len(),
        2 * tresor_client::UPDATE_ATTEMPTS as usize
    );
}

#[tokio::test]
async fn exists_uses_head() {
    let mock = Mock::start(vec![empty(200), empty(404), empty(401)]).await;
    let store = mock.client.shared();
    assert!(store.exists("k").await.unwrap());
    assert!(!store.exists("k").await.unwrap());
    let err = store.exists("k").await.unwrap_err();
    assert_eq!(err.code(), Some(&ErrorCode::Unauthenticated));
    assert_eq!(err.request_id(), Some("hdr-req"));
    let seen = mock.seen();
    assert!(seen.iter().all(|s| s.method == "HEAD"));
    assert_eq!(seen[0].target, "/v1/shared/k");
}

#[tokio::test]
async fn delete_variants() {
    let mock = Mock::start(vec![
        empty(204),
        reply(
            200,
            json!({"previous": record("k", 4, json!({"a": 1, "b": 2}))}),
        ),
        reply(200, json!({"previous": null})),
    ])
    .await;
    let store = mock.client.secrets();
    store.delete("k").await.unwrap();
    let previous = store
        .delete_with(
            "k",
            DeleteOptions {
                if_match: Some(4),
                fields: vec!["a".into(), "b".into()],
                return_previous: true,
            },
        )
        .await
        .unwrap();
    assert_eq!(previous.unwrap().meta.version, 4);
    let none = store
        .delete_with(
            "k",
            DeleteOptions {
                return_previous: true,
                ..DeleteOptions::default()
            },
        )
        .await
        .unwrap();
    assert!(none.is_none());
    let seen = mock.seen();
    assert_eq!(seen[0].method, "DELETE");
    assert_eq!(seen[0].target, "/v1/secrets/k");
    assert_eq!(seen[1].target, "/v1/secrets/k?fields=a,b&return=previous");
    assert_eq!(seen[1].header("if-match"), Some("\"4\""));
}

#[tokio::test]
async fn listing_follows_cursors() {
    let mock = Mock::start(vec![
        reply(
            200,
            json!({"items": [meta("p/1", 1), meta("p/2", 1)], "next_cursor": "c 1"}),
        ),
        reply(200, json!({"items": [], "next_cursor": "c2"})),
        reply(200, json!({"items": [meta("p/3", 9)], "next_cursor": null})),
    ])
    .await;
    let mut pages = mock.client.kv().list("p/", Some(2));
    let mut keys = Vec::new();
    let mut count = 0;
    while let Some(page) = pages.next_page().await.unwrap() {
        count += 1;
        keys.extend(page.into_iter().map(|m| m.key));
    }
    assert_eq!(count, 3);
    assert_eq!(keys, ["p/1", "p/2", "p/3"]);
    assert!(pages.next_page().await.unwrap().is_none());
    let targets: Vec<_> = mock.seen().into_iter().map(|s| s.target).collect();
    assert_eq!(
        targets,
        [
            "/v1/kv?prefix=p%2F&limit=2",
            "/v1/kv?prefix=p%2F&limit=2&cursor=c%201",
            "/v1/kv?prefix=p%2F&limit=2&cursor=c2",
        ]
    );
}

#[tokio::test]
async fn list_all_without_prefix() {
    let mock = Mock::start(vec![reply(
        200,
        json!({"items": [meta("a", 1)], "next_cursor": null}),
    )])
    .await;
    let all = mock.client.settings().list_all("").await.unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(mock.only().target, "/v1/settings?limit=1000");
}

#[tokio::test]
async fn field_ops_request() {
    let mock = Mock::start(vec![reply(
        200,
        json!({"record": meta("k", 2), "results": [3, 1]}),
    )])
    .await;
    let out = mock
        .client
        .kv()
        .ops(
            "k",
            vec![
                FieldOp::increment("n", 3),
                FieldOp::list_push("q", ["x"], End::Back),
            ],
        )
        .await
        .unwrap();
    assert_eq!(out.results, [json!(3), json!(1)]);
    assert_eq!(out.record.unwrap().version, 2);
    let seen = mock.only();
    assert_eq!(seen.method, "POST");
    assert_eq!(seen.target, "/v1/kv/k/ops");
    assert_eq!(
        seen.body,
        r#"{"ops":[{"op":"increment","field":"n","by":3},{"op":"list_push","field":"q","values":["x"],"end":"back"}]}"#
    );
}

#[tokio::test]
async fn atomic_batch_failure_names_the_op() {
    let mock = Mock::start(vec![
        reply(
            412,
            json!({"error": {"code": "precondition_failed", "message": "m", "request_id": "r", "op_index": 1}}),
        ),
        reply(
            200,
            json!({"results": [{"status": 204}, {"status": 404, "error": {"code": "not_found", "message": "m", "request_id": "r"}}]}),
        ),
    ])
    .await;
    let err = mock
        .client
        .batch(
            true,
            vec![
                BatchOp::put(Store::Kv, "a", json!(1)),
                BatchOp::put(Store::Kv, "b", json!(2)).if_version(0),
            ],
        )
        .await
        .unwrap_err();
    assert!(err.is_precondition_failed());
    assert_eq!(err.op_index(), Some(1));
    let results = mock
        .client
        .batch(
            false,
            vec![
                BatchOp::delete(Store::Kv, "a"),
                BatchOp::get(Store::Secrets, "b"),
            ],
        )
        .await
        .unwrap();
    assert_eq!(results[0].status, 204);
    assert!(results[1].error().unwrap().is_not_found());
    let seen = mock.seen();
    assert_eq!(seen[0].target, "/v1/batch");
    assert_eq!(
        seen[0].json(),
        json!({"atomic": true, "ops": [
            {"op": "put", "store": "kv", "key": "a", "value": 1},
            {"op": "put", "store": "kv", "key": "b", "value": 2, "if_version": 0}
        ]})
    );
}

#[tokio::test]
async fn admin_install_and_tokens() {
    let mock = Mock::start(vec![
        reply(
            201,
            json!({"installation_id": "inst-1", "token_id": "tid-1", "token": "tresor_secret"}),
        ),
        reply(
            200,
            json!({"installation_id": "inst-1", "app_id": "app", "account_id": "acc"}),
        ),
        reply(201, json!({"token_id": "tid-2", "token": "tresor_secret2"})),
        empty(204),
        reply(200, json!({"items": [{"id": 1}], "next_cursor": "n"})),
        reply(201, json!({"app_id": "my.app", "scopes": ["kv:read"]})),
        api_error(404, "not_found"),
        reply(200, json!({"items": [{"account_id": "a"}]})),
    ])
    .await;
    let admin = mock.client.admin();
    let installed = admin.install("inst-1", "app", "acc").await.unwrap();
    assert!(installed.created);
    assert_eq!(installed.token.as_deref(), Some("tresor_secret"));
    assert!(!format!("{installed:?}").contains("tresor_secret"));
    let again = admin.install("inst-1", "app", "acc").await.unwrap();
    assert!(!again.created);
    assert_eq!(again.token, None);
    let issued = admin
        .create_token("inst-1", Some(vec!["kv:read".into()]), Some(3600))
        .await
        .unwrap();
    assert_eq!(issued.token_id, "tid-2");
    admin.revoke_token("tid-2").await.unwrap();
    let page = admin
        .audit(&AuditQuery {
            installation_id: Some("inst-1".into()),
            since: Some("2026-01-01T00:00:00Z".into()),
            limit: Some(10),
            ..AuditQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(page.next_cursor.as_deref(), Some("n"));
    let app = admin.put_app("my.app", &["kv:read"]).await.unwrap();
    assert!(app.created);
    assert_eq!(admin.get_account("nope").await.unwrap(), None);
    assert_eq!(admin.list_accounts().await.unwrap().len(), 1);

    let seen = mock.seen();
    assert_eq!(seen[0].method, "PUT");
    assert_eq!(seen[0].target, "/v1/admin/installations/inst-1");
    assert_eq!(
        seen[0].json(),
        json!({"app_id": "app", "account_id": "acc"})
    );
    assert_eq!(seen[2].target, "/v1/admin/installations/inst-1/tokens");
    assert_eq!(
        seen[2].json(),
        json!({"scopes": ["kv:read"], "ttl_seconds": 3600})
    );
    assert_eq!(seen[3].method, "DELETE");
    assert_eq!(seen[3].target, "/v1/admin/tokens/tid-2");
    assert_eq!(
        seen[4].target,
        "/v1/admin/audit?installation_id=inst-1&since=2026-01-01T00%3A00%3A00Z&limit=10"
    );
    assert_eq!(seen[5].target, "/v1/admin/apps/my.app");
    assert_eq!(seen[5].json(), json!({"scopes": ["kv:read"]}));
    assert_eq!(seen[6].target, "/v1/admin/accounts/nope");
    assert_eq!(seen[7].target, "/v1/admin/accounts");
}

#[tokio::test]
async fn unsendable_keys_never_reach_the_server() {
    let mock = Mock::start(Vec::new()).await;
    for key in ["", ".", ".."] {
        let err = mock.client.kv().get::<Value>(key).await.unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}");
    }
    assert!(mock.seen().is_empty());
}

#[tokio::test]
async fn transport_errors_are_transport_errors() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let client = Client::new(&format!("http://{addr}"), TOKEN).unwrap();
    let err = client.kv().get::<Value>("k").await.unwrap_err();
    assert!(matches!(err, Error::Transport(_)), "{err:?}");
    assert!(!format!("{err:?} {err}").contains(TOKEN));
}

#[tokio::test]
async fn typed_get_mismatch_does_not_leak_the_value() {
    let mock = Mock::start(vec![reply(200, record("k", 1, json!("hunter2-secret")))]).await;
    let err = mock.client.secrets().get::<u64>("k").await.unwrap_err();
    assert!(matches!(err, Error::Decode(_)));
    assert!(!err.to_string().contains("hunter2"), "{err}");
}

fn credential_meta(key: &str, owner: &str, version: u64) -> Value {
    json!({"key": key, "owner": owner, "provider": "stripe", "kind": "api_key",
           "version": version, "created_at": "2026-01-01T00:00:00.000Z",
           "updated_at": "2026-01-01T00:00:00.000Z", "expires_at": null,
           "token_expires_at": null, "scopes": [], "metadata": {"shop": "s1"},
           "needs_reconsent": false})
}

const CANARY: &str = "sk_live_CANARY_0af3";

#[tokio::test]
async fn credential_put_sends_the_contract_body() {
    let mock = Mock::start(vec![
        reply(201, credential_meta("stripe/main", "account", 1)),
        reply(200, credential_meta("k", "installation", 2)),
    ])
    .await;
    let credentials = mock.client.credentials();
    let mut metadata = serde_json::Map::new();
    metadata.insert("shop".into(), json!("s1"));
    let put = CredentialPut::api_key("stripe", CANARY)
        .owner(Owner::Account)
        .metadata(metadata)
        .ttl_seconds(3600);
    let (meta, created) = credentials.put("stripe/main", &put).await.unwrap();
    assert!(created);
    assert_eq!(meta.owner, Owner::Account);
    assert_eq!(meta.kind, "api_key");
    assert_eq!(meta.metadata["shop"], json!("s1"));

    let secret = json!({"access_token": "at", "refresh_token": "rt", "expires_at": 1795323794});
    let put = CredentialPut::new("github", secret);
    let (meta, created) = credentials.put("k", &put).await.unwrap();
    assert!(!created);
    assert_eq!(meta.version, 2);

    let seen = mock.seen();
    assert_eq!(seen[0].method, "PUT");
    assert_eq!(seen[0].target, "/v1/credentials/stripe%2Fmain");
    assert_eq!(seen[0].header("content-type"), Some("application/json"));
    assert_eq!(
        seen[0].header("authorization"),
        Some(format!("Bearer {TOKEN}").as_str())
    );
    assert_eq!(
        seen[0].body,
        format!(
            r#"{{"owner":"account","provider":"stripe","secret":{{"api_key":"{CANARY}"}},"metadata":{{"shop":"s1"}},"ttl_seconds":3600}}"#
        )
    );
    assert_eq!(
        seen[1].body,
        r#"{"provider":"github","secret":{"access_token":"at","refresh_token":"rt","expires_at":1795323794}}"#
    );
}

#[tokio::test]
async fn credential_secrets_stay_out_of_debug_and_errors() {
    let mock = Mock::start(vec![api_error(400, "invalid_request")]).await;
    let put = CredentialPut::basic("jira", "bob", CANARY).owner(Owner::Installation);
    let debug = format!("{put:?} {put:#?}");
    assert!(!debug.contains(CANARY), "{debug}");
    assert!(
        debug.contains("jira") && debug.contains("<redacted>"),
        "{debug}"
    );
    let err = mock.client.credentials().put("k", &put).await.unwrap_err();
    assert_eq!(err.code(), Some(&ErrorCode::InvalidRequest));
    assert!(!format!("{err} {err:?}").contains(CANARY));
    assert_eq!(
        mock.only().json(),
        json!({"owner": "installation", "provider": "jira",
               "secret": {"username": "bob", "password": CANARY}})
    );
}

#[tokio::test]
async fn credential_secrets_must_be_objects_and_keys_sendable() {
    let mock = Mock::start(Vec::new()).await;
    let credentials = mock.client.credentials();
    for secret in [json!(CANARY), json!([CANARY]), json!(null)] {
        let err = credentials
            .put("k", &CredentialPut::new("p", secret))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}");
        assert!(!err.to_string().contains(CANARY));
    }
    for key in ["", ".", ".."] {
        let err = credentials.get(key).await.unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}");
        let err = credentials
            .put(key, &CredentialPut::api_key("p", "k"))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}");
    }
    assert!(mock.seen().is_empty());
}

#[tokio::test]
async fn credential_get_and_delete() {
    let mock = Mock::start(vec![
        reply(200, credential_meta("a b", "installation", 4)),
        api_error(404, "not_found"),
        api_error(403, "forbidden"),
        empty(204),
    ])
    .await;
    let credentials = mock.client.credentials();
    let meta = credentials.get("a b").await.unwrap().unwrap();
    assert_eq!(meta.key, "a b");
    assert_eq!(meta.version, 4);
    assert_eq!(meta.owner, Owner::Installation);
    assert_eq!(credentials.get("gone").await.unwrap(), None);
    let err = credentials.get("k").await.unwrap_err();
    assert_eq!(err.code(), Some(&ErrorCode::Forbidden));
    credentials.delete("x/y").await.unwrap();
    let seen = mock.seen();
    let requests: Vec<_> = seen
        .iter()
        .map(|s| (s.method.as_str(), s.target.as_str(), s.body.as_str()))
        .collect();
    assert_eq!(
        requests,
        [
            ("GET", "/v1/credentials/a%20b", ""),
            ("GET", "/v1/credentials/gone", ""),
            ("GET", "/v1/credentials/k", ""),
            ("DELETE", "/v1/credentials/x%2Fy", ""),
        ]
    );
    assert!(seen.iter().all(|s| s.header("content-type").is_none()));
}

#[tokio::test]
async fn credential_listing_follows_cursors() {
    let mock = Mock::start(vec![
        reply(
            200,
            json!({"items": [credential_meta("p/1", "installation", 1)], "next_cursor": "c 1"}),
        ),
        reply(
            200,
            json!({"items": [credential_meta("p/2", "account", 1)], "next_cursor": null}),
        ),
        reply(
            200,
            json!({"items": [credential_meta("a", "installation", 1)], "next_cursor": null}),
        ),
    ])
    .await;
    let credentials = mock.client.credentials();
    let mut pages = credentials.list("p/", Some(1));
    let mut keys = Vec::new();
    while let Some(page) = pages.next_page().await.unwrap() {
        keys.extend(page.into_iter().map(|m| (m.key, m.owner)));
    }
    assert_eq!(
        keys,
        [
            ("p/1".to_owned(), Owner::Installation),
            ("p/2".to_owned(), Owner::Account)
        ]
    );
    assert!(pages.next_page().await.unwrap().is_none());
    assert_eq!(pages.cursor(), None);
    assert_eq!(credentials.list_all("").await.unwrap().len(), 1);
    let targets: Vec<_> = mock.seen().into_iter().map(|s| s.target).collect();
    assert_eq!(
        targets,
        [
            "/v1/credentials?prefix=p%2F&limit=1",
            "/v1/credentials?prefix=p%2F&limit=1&cursor=c%201",
            "/v1/credentials?limit=1000",
        ]
    );
}

#[tokio::test]
async fn admin_providers() {
    let shown = json!({"name": "example", "base_url": "https://api.example.com/v2/",
        "inject": {"type": "bearer"},
        "oauth2": {"grant": "authorization_code", "client_id": "abc", "client_secret_set": true},
        "created_at": "2026-01-01T00:00:00.000Z", "updated_at": "2026-01-01T00:00:00.000Z"});
    let mock = Mock::start(vec![
        reply(201, shown.clone()),
        reply(200, shown.clone()),
        reply(200, shown.clone()),
        api_error(404, "not_found"),
        reply(200, json!({"items": [shown.clone()]})),
        empty(204),
    ])
    .await;
    let admin = mock.client.admin();
    let document = json!({"base_url": "https://api.example.com/v2/",
        "inject": {"type": "bearer"},
        "oauth2": {"grant": "authorization_code", "client_id": "abc", "client_secret": CANARY}});
    let upserted = admin.put_provider("example", &document).await.unwrap();
    assert!(upserted.created);
    assert_eq!(upserted.document["oauth2"]["client_secret_set"], true);
    assert!(
        !admin
            .put_provider("example", &document)
            .await
            .unwrap()
            .created
    );
    assert_eq!(
        admin.get_provider("example").await.unwrap(),
        Some(shown.clone())
    );
    assert_eq!(admin.get_provider("nope").await.unwrap(), None);
    assert_eq!(admin.list_providers().await.unwrap(), [shown]);
    admin.delete_provider("example").await.unwrap();
    let seen = mock.seen();
    let requests: Vec<_> = seen
        .iter()
        .map(|s| (s.method.as_str(), s.target.as_str()))
        .collect();
    assert_eq!(
        requests,
        [
            ("PUT", "/v1/admin/providers/example"),
            ("PUT", "/v1/admin/providers/example"),
            ("GET", "/v1/admin/providers/example"),
            ("GET", "/v1/admin/providers/nope"),
            ("GET", "/v1/admin/providers"),
            ("DELETE", "/v1/admin/providers/example"),
        ]
    );
    assert_eq!(seen[0].json(), document);
    assert_eq!(seen[0].header("content-type"), Some("application/json"));
}
