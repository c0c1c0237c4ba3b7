//! Black-box tests of the record stores against the real binary: reads, writes, merge patch,
//! conditional writes, TTL, listing, field ops, batches, limits and error codes.

use serde_json::{Value, json};
use tresor_test_support::server::{Answer, TestServer};

const ALL_SCOPES: &[&str] = &[
    "secrets:read",
    "secrets:write",
    "settings:read",
    "settings:write",
    "kv:read",
    "kv:write",
    "shared:read",
    "shared:write",
];

async fn server() -> (TestServer, String) {
    let s = TestServer::start(env!("CARGO_BIN_EXE_tresor").as_ref()).await;
    let t = s.install("app", ALL_SCOPES, "acct", "inst").await;
    (s, t)
}

fn check(r: &Answer, status: u16, code: Option<&str>) {
    assert_eq!(r.status, status, "unexpected answer: {r:?}");
    assert_eq!(r.code(), code, "unexpected code: {r:?}");
    assert!(r.header("x-request-id").is_some(), "no request id: {r:?}");
}

#[tokio::test]
async fn put_get_head_delete_round_trip() {
    let (s, t) = server().await;
    let t = Some(t.as_str());
    let r = s
        .call(
            "PUT",
            "/v1/secrets/authToken",
            t,
            Some(&json!({"value": {"token": "abc", "siteId": 123}, "description": "vendor"})),
        )
        .await;
    check(&r, 201, None);
    assert_eq!(r.body["key"], "authToken");
    assert_eq!(r.body["description"], "vendor");
    assert!(r.body.get("value").is_none(), "PUT answers metadata only");
    let v1 = r.body["version"].as_u64().unwrap();
    assert_eq!(r.header("etag"), Some(format!("\"{v1}\"").as_str()));
    assert_eq!(r.header("cache-control"), Some("no-store"));

    let r = s.call("GET", "/v1/secrets/authToken", t, None).await;
    check(&r, 200, None);
    assert_eq!(r.body["value"], json!({"token": "abc", "siteId": 123}));
    assert_eq!(r.body["version"].as_u64(), Some(v1));
    assert!(r.body["expires_at"].is_null());
    let created = r.body["created_at"].as_str().unwrap().to_owned();
    assert!(created.ends_with('Z') && created.len() == 24, "{created}");

    let r = s.call("HEAD", "/v1/secrets/authToken", t, None).await;
    check(&r, 200, None);
    let r = s
        .call(
            "PUT",
            "/v1/secrets/authToken",
            t,
            Some(&json!({"value": "v2"})),
        )
        .await;
    check(&r, 200, None);
    let v2 = r.body["version"].as_u64().unwrap();
    assert!(v2 > v1);
    assert_eq!(r.body["created_at"], created, "a replace keeps created_at");
    assert!(
        r.body["description"].is_null(),
        "PUT replaces the description"
    );

    let r = s.call("DELETE", "/v1/secrets/authToken", t, None).await;
    check(&r, 204, None);
    let r = s.call("DELETE", "/v1/secrets/authToken", t, None).await;
    check(&r, 204, None);
    let r = s.call("GET", "/v1/secrets/authToken", t, None).await;
    check(&r, 404, Some("not_found"));
    let r = s.call("HEAD", "/v1/secrets/authToken", t, None).await;
    assert_eq!(r.status, 404);

    // Versions are never reused, not even after delete and re-create.
    let r = s
        .call(
            "PUT",
            "/v1/secrets/authToken",
            t,
            Some(&json!({"value": 1})),
        )
        .await;
    check(&r, 201, None);
    assert!(r.body["version"].as_u64().unwrap() > v2);
}

#[tokio::test]
async fn values_round_trip_as_written() {
    let (s, t) = server().await;
    let t = Some(t.as_str());
    for (i, raw) in [
        r#"{"value":{"a":1.10,"b":12345678901234567890123,"c":-0,"d":1e400,"e":[true,false,"x"]}}"#,
        r#"{"value":"plain string"}"#,
        r#"{"value":42}"#,
        r#"{"value":[1,"two",{"three":3}]}"#,
        r#"{"value":false}"#,
    ]
    .iter()
    .enumerate()
    {
        let path = format!("/v1/kv/v{i}");
        let r = s
            .raw(
                "PUT",
                &path,
                t,
                &[("content-type", "application/json".into())],
                Some(raw.as_bytes().to_vec()),
            )
            .await;
        check(&r, 201, None);
        let r = s.call("GET", &path, t, None).await;
        let want = &raw[9..raw.len() - 1];
        assert!(
            r.text.contains(&format!("\"value\":{want}")),
            "{} does not hold {want}",
            r.text
        );
    }
}

#[tokio::test]
async fn validation_errors_and_limits() {
    let (s, t) = server().await;
    let token = t.clone();
    let t = Some(t.as_str());
    let json_ct = [("content-type", "application/json".to_owned())];
    let s = &s;
    let json_ct = &json_ct;
    let put_raw = |path: String, body: String| async move {
        s.raw("PUT", &path, t, json_ct, Some(body.into_bytes()))
            .await
    };
    // (path, body, status, code)
    let deep = |n: usize| format!("{}1{}", "[".repeat(n), "]".repeat(n));
    let cases: Vec<(String, String, u16, Option<&str>)> = vec![
        (
            "/v1/kv/k".into(),
            "{\"value\": null}".into(),
            400,
            Some("invalid_request"),
        ),
        (
            "/v1/kv/k".into(),
            "{\"value\": 1, \"value\": 2}".into(),
            400,
            Some("invalid_request"),
        ),
        (
            "/v1/kv/k".into(),
            "{\"value\": {\"a\":1,\"a\":2}}".into(),
            400,
            Some("invalid_request"),
        ),
        (
            "/v1/kv/k".into(),
            "{\"value\": 1, \"extra\": 2}".into(),
            400,
            Some("invalid_request"),
        ),
        (
            "/v1/kv/k".into(),
            "{\"value\": 1,}".into(),
            400,
            Some("invalid_request"),
        ),
        (
            "/v1/kv/k".into(),
            "not json".into(),
            400,
            Some("invalid_request"),
        ),
        ("/v1/kv/k".into(), "{}".into(), 400, Some("invalid_request")),
        (
            "/v1/kv/k".into(),
            format!("{{\"value\": {}}}", deep(64)),
            201,
            None,
        ),
        (
            "/v1/kv/k".into(),
            format!("{{\"value\": {}}}", deep(65)),
            400,
            Some("invalid_request"),
        ),
        (
            "/v1/kv/k".into(),
            "{\"value\": 1, \"ttl_seconds\": 0}".into(),
            400,
            Some("invalid_request"),
        ),
        (
            "/v1/kv/k".into(),
            "{\"value\": 1, \"ttl_seconds\": 3153600001}".into(),
            400,
            Some("invalid_request"),
        ),
        (
            "/v1/kv/k".into(),
            "{\"value\": 1, \"ttl_seconds\": 1.5}".into(),
            400,
            Some("invalid_request"),
        ),
        (
            "/v1/kv/k".into(),
            format!(
                "{{\"value\": 1, \"description\": \"{}\"}}",
                "d".repeat(1024)
            ),
            200,
            None,
        ),
        (
            "/v1/kv/k".into(),
            format!(
                "{{\"value\": 1, \"description\": \"{}\"}}",
                "d".repeat(1025)
            ),
            413,
            Some("payload_too_large"),
        ),
        (
            format!("/v1/kv/{}", "k".repeat(500)),
            "{\"value\": 1}".into(),
            201,
            None,
        ),
        (
            format!("/v1/kv/{}", "k".repeat(501)),
            "{\"value\": 1}".into(),
            413,
            Some("payload_too_large"),
        ),
        (
            "/v1/kv/a%00b".into(),
            "{\"value\": 1}".into(),
            400,
            Some("invalid_request"),
        ),
        (
            "/v1/kv/".into(),
            "{\"value\": 1}".into(),
            400,
            Some("invalid_request"),
        ),
        (
            "/v1/kv/k?bogus=1".into(),
            "{\"value\": 1}".into(),
            400,
            Some("invalid_request"),
        ),
        // The secrets store allows 128 KiB of compact JSON; the value is a string with quotes.
        (
            "/v1/secrets/big".into(),
            format!("{{\"value\": \"{}\"}}", "x".repeat(128 * 1024 - 2)),
            201,
            None,
        ),
        (
            "/v1/secrets/big".into(),
            format!("{{\"value\": \"{}\"}}", "x".repeat(128 * 1024 - 1)),
            413,
            Some("payload_too_large"),
        ),
        (
            "/v1/kv/big".into(),
            format!("{{\"value\": \"{}\"}}", "x".repeat(400 * 1024 - 2)),
            201,
            None,
        ),
        (
            "/v1/kv/big".into(),
            format!("{{\"value\": \"{}\"}}", "x".repeat(400 * 1024 - 1)),
            413,
            Some("payload_too_large"),
        ),
        // Over the request body limit (largest value limit plus 64 KiB).
        (
            "/v1/kv/huge".into(),
            format!("{{\"value\": \"{}\"}}", "x".repeat(470 * 1024)),
            413,
            Some("payload_too_large"),
        ),
    ];
    for (path, body, status, code) in cases {
        let r = put_raw(path.clone(), body.clone()).await;
        assert_eq!(
            (r.status, r.code()),
            (status, code),
            "PUT {} {}: {:?}",
            &path[..path.len().min(40)],
            &body[..body.len().min(60)],
            r.text
        );
    }
    // Dot segments, sent byte for byte (HTTP clients would normalize them away).
    for target in ["/v1/kv/%2E%2E", "/v1/kv/..", "/v1/kv/.", "/v1/kv/%2e"] {
        let status = s
            .raw_target_status("PUT", target, &token, "{\"value\": 1}")
            .await;
        assert_eq!(status, 400, "{target}");
    }
    // Wrong or missing content type.
    let r = s
        .raw(
            "PUT",
            "/v1/kv/k",
            t,
            &[("content-type", "text/plain".into())],
            Some(b"{\"value\":1}".to_vec()),
        )
        .await;
    check(&r, 415, Some("unsupported_media_type"));
    let r = s
        .raw("PUT", "/v1/kv/k", t, &[], Some(b"{\"value\":1}".to_vec()))
        .await;
    check(&r, 415, Some("unsupported_media_type"));
    // The value a key names with an encoded slash is one key.
    let r = s
        .call("PUT", "/v1/kv/a%2Fb", t, Some(&json!({"value": 1})))
        .await;
    check(&r, 201, None);
    assert_eq!(r.body["key"], "a/b");
    let r = s
        .call("PUT", "/v1/kv/a%252Fb", t, Some(&json!({"value": 1})))
        .await;
    assert_eq!(r.body["key"], "a%2Fb", "decoded exactly once");
}

#[tokio::test]
async fn merge_patch_and_conditions() {
    let (s, t) = server().await;
    let t = Some(t.as_str());
    // A missing key is patched from {}.
    let r = s
        .call(
            "PATCH",
            "/v1/settings/cfg",
            t,
            Some(&json!({"a": 1, "b": {"c": 2}})),
        )
        .await;
    check(&r, 200, None);
    assert_eq!(r.body["value"], json!({"a": 1, "b": {"c": 2}}));
    let v1 = r.body["version"].as_u64().unwrap();
    let r = s
        .call(
            "PATCH",
            "/v1/settings/cfg",
            t,
            Some(&json!({"a": null, "b": {"d": 3}})),
        )
        .await;
    check(&r, 200, None);
    assert_eq!(r.body["value"], json!({"b": {"c": 2, "d": 3}}));
    // A patch whose result is null is 400; a non-object patch replaces.
    let r = s
        .call("PATCH", "/v1/settings/cfg", t, Some(&json!(null)))
        .await;
    check(&r, 400, Some("invalid_request"));
    let r = s
        .call("PATCH", "/v1/settings/other", t, Some(&json!([1, 2])))
        .await;
    assert_eq!(r.body["value"], json!([1, 2]));

    // If-Match.
    let stale = format!("\"{v1}\"");
    let r = s
        .raw(
            "PATCH",
            "/v1/settings/cfg",
            t,
            &[
                ("content-type", "application/merge-patch+json".into()),
                ("if-match", stale),
            ],
            Some(b"{\"x\":1}".to_vec()),
        )
        .await;
    check(&r, 412, Some("precondition_failed"));
    let current = r.header("etag").unwrap().to_owned();
    let r = s
        .raw(
            "PATCH",
            "/v1/settings/cfg",
            t,
            &[
                ("content-type", "application/merge-patch+json".into()),
                ("if-match", current),
            ],
            Some(b"{\"x\":1}".to_vec()),
        )
        .await;
    check(&r, 200, None);
    // If-None-Match: * on an existing key, If-Match on a missing key.
    let r = s
        .raw(
            "PUT",
            "/v1/settings/cfg",
            t,
            &[
                ("content-type", "application/json".into()),
                ("if-none-match", "*".into()),
            ],
            Some(b"{\"value\":1}".to_vec()),
        )
        .await;
    check(&r, 412, Some("precondition_failed"));
    assert!(r.header("etag").is_some());
    let r = s
        .raw(
            "PUT",
            "/v1/settings/nope",
            t,
            &[
                ("content-type", "application/json".into()),
                ("if-match", "*".into()),
            ],
            Some(b"{\"value\":1}".to_vec()),
        )
        .await;
    check(&r, 412, Some("precondition_failed"));
    let r = s
        .raw(
            "DELETE",
            "/v1/settings/nope",
            t,
            &[("if-match", "\"3\"".into())],
            None,
        )
        .await;
    check(&r, 412, Some("precondition_failed"));
    let r = s
        .raw(
            "PUT",
            "/v1/settings/new",
            t,
            &[
                ("content-type", "application/json".into()),
                ("if-none-match", "*".into()),
            ],
            Some(b"{\"value\":1}".to_vec()),
        )
        .await;
    check(&r, 201, None);

    // return=previous on put, patch and delete.
    let r = s
        .call(
            "PUT",
            "/v1/settings/new?return=previous",
            t,
            Some(&json!({"value": 2})),
        )
        .await;
    check(&r, 200, None);
    assert_eq!(r.body["previous"]["value"], json!(1));
    let r = s
        .call(
            "PATCH",
            "/v1/settings/fresh?return=previous",
            t,
            Some(&json!({"a": 1})),
        )
        .await;
    assert!(
        r.body["previous"].is_null() && r.body.get("previous").is_some(),
        "{r:?}"
    );
    let r = s
        .call("DELETE", "/v1/settings/new?return=previous", t, None)
        .await;
    check(&r, 200, None);
    assert_eq!(r.body["previous"]["value"], json!(2));

    // fields on GET and DELETE.
    s.call(
        "PUT",
        "/v1/secrets/obj",
        t,
        Some(&json!({"value": {"a": 1, "b": 2, "c": 3}})),
    )
    .await;
    let r = s
        .call("GET", "/v1/secrets/obj?fields=a,c,zz", t, None)
        .await;
    assert_eq!(r.body["value"], json!({"a": 1, "c": 3}));
    let r = s
        .call("DELETE", "/v1/secrets/obj?fields=a,b", t, None)
        .await;
    check(&r, 204, None);
    let r = s.call("GET", "/v1/secrets/obj", t, None).await;
    assert_eq!(r.body["value"], json!({"c": 3}));
    s.call("PUT", "/v1/secrets/str", t, Some(&json!({"value": "s"})))
        .await;
    let r = s.call("GET", "/v1/secrets/str?fields=a", t, None).await;
    check(&r, 409, Some("conflict"));
    let r = s
        .call("DELETE", "/v1/secrets/missing?fields=a", t, None)
        .await;
    check(&r, 204, None);
}

#[tokio::test]
async fn ttl_is_exact_at_read_time() {
    let (s, t) = server().await;
    let t = Some(t.as_str());
    let r = s
        .call(
            "PUT",
            "/v1/kv/short",
            t,
            Some(&json!({"value": {"n": 1}, "ttl_seconds": 1})),
        )
        .await;
    check(&r, 201, None);
    assert!(r.body["expires_at"].is_string());
    // PATCH keeps the expiry.
    let r = s
        .call("PATCH", "/v1/kv/short", t, Some(&json!({"m": 2})))
        .await;
    assert!(r.body["expires_at"].is_string(), "{r:?}");
    s.call(
        "PUT",
        "/v1/kv/long",
        t,
        Some(&json!({"value": 1, "ttl_seconds": 100})),
    )
    .await;
    // A PUT without ttl removes the expiry.
    let r = s
        .call("PUT", "/v1/kv/long", t, Some(&json!({"value": 2})))
        .await;
    assert!(r.body["expires_at"].is_null());
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let r = s.call("GET", "/v1/kv/short", t, None).await;
    check(&r, 404, Some("not_found"));
    let r = s.call("GET", "/v1/kv?prefix=short", t, None).await;
    assert_eq!(r.body["items"], json!([]));
    // A PUT over an expired record is a create; PATCH starts from {}.
    let r = s
        .call("PATCH", "/v1/kv/short", t, Some(&json!({"fresh": true})))
        .await;
    assert_eq!(r.body["value"], json!({"fresh": true}));
    assert!(r.body["expires_at"].is_null());
    let r = s
        .call("PATCH", "/v1/kv/short?ttl_seconds=50", t, Some(&json!({})))
        .await;
    assert!(r.body["expires_at"].is_string());
}

#[tokio::test]
async fn listing_pages_in_byte_order() {
    let (s, t) = server().await;
    let t = Some(t.as_str());
    let keys = ["b", "a", "a/1", "a/2", "ab", "é", "z", "A"];
    for k in keys {
        let path = format!("/v1/kv/{}", urlencode(k));
        check(
            &s.call(
                "PUT",
                &path,
                t,
                Some(&json!({"value": k, "description": "d"})),
            )
            .await,
            201,
            None,
        );
    }
    let mut sorted: Vec<&str> = keys.to_vec();
    sorted.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    let mut got = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            None => "/v1/kv?limit=3".to_owned(),
            Some(c) => format!("/v1/kv?limit=3&cursor={c}"),
        };
        let r = s.call("GET", &path, t, None).await;
        check(&r, 200, None);
        for item in r.body["items"].as_array().unwrap() {
            assert!(item.get("value").is_none(), "listing never carries values");
            assert_eq!(item["description"], "d");
            got.push(item["key"].as_str().unwrap().to_owned());
        }
        match r.body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(got, sorted);
    let r = s.call("GET", "/v1/kv?prefix=a%2F", t, None).await;
    let keys: Vec<&str> = r.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["a/1", "a/2"]);
    assert!(r.body["next_cursor"].is_null());
    // next_cursor is null exactly when nothing further matches.
    let r = s.call("GET", "/v1/kv?prefix=a%2F&limit=2", t, None).await;
    assert!(r.body["next_cursor"].is_null(), "{r:?}");
    for bad in ["limit=0", "limit=1001", "limit=x", "cursor=%25%25", "zzz=1"] {
        let r = s.call("GET", &format!("/v1/kv?{bad}"), t, None).await;
        check(&r, 400, Some("invalid_request"));
    }
}

#[tokio::test]
async fn field_ops() {
    let (s, t) = server().await;
    let t = Some(t.as_str());
    let s = &s;
    let ops = |body: Value| async move { s.call("POST", "/v1/kv/state/ops", t, Some(&body)).await };
    // Reads on a missing key create nothing.
    let r = ops(json!({"ops": [{"op": "list_peek", "field": "l"}, {"op": "set_contains", "field": "s", "members": ["x"]}]})).await;
    check(&r, 200, None);
    assert!(r.body["record"].is_null());
    assert_eq!(r.body["results"], json!([[], [false]]));
    let r = ops(json!({"ops": [{"op": "list_pop", "field": "l"}]})).await;
    assert!(r.body["record"].is_null());
    check(
        &s.call("GET", "/v1/kv/state", t, None).await,
        404,
        Some("not_found"),
    );

    let r = ops(json!({"ops": [
        {"op": "increment", "field": "n"},
        {"op": "increment", "field": "n", "by": 5},
        {"op": "list_push", "field": "l", "values": [1, 2, 3]},
        {"op": "list_push", "field": "l", "values": [0], "end": "front"},
        {"op": "list_pop", "field": "l", "count": 2},
        {"op": "list_pop", "field": "l", "end": "back"},
        {"op": "set_add", "field": "s", "members": ["b", 2, "a", 1, "a"]},
        {"op": "set_remove", "field": "s", "members": [2, "zz"]},
        {"op": "set_contains", "field": "s", "members": ["a", 2]},
        {"op": "list_peek", "field": "l", "count": 5},
    ]}))
    .await;
    check(&r, 200, None);
    assert_eq!(
        r.body["results"],
        json!([1, 6, 3, 4, [0, 1], [3], 4, 1, [true, false], [2]])
    );
    let version = r.body["record"]["version"].as_u64().unwrap();
    let r = s.call("GET", "/v1/kv/state", t, None).await;
    assert_eq!(
        r.body["value"],
        json!({"n": 6, "l": [2], "s": [1, "a", "b"]})
    );
    assert_eq!(r.body["version"].as_u64(), Some(version));

    // A conflicting op names its index and changes nothing.
    let r =
        ops(json!({"ops": [{"op": "increment", "field": "n"}, {"op": "increment", "field": "l"}]}))
            .await;
    check(&r, 409, Some("conflict"));
    assert!(
        r.body["error"]["message"].as_str().unwrap().contains('1'),
        "{r:?}"
    );
    let r = s.call("GET", "/v1/kv/state", t, None).await;
    assert_eq!(r.body["value"]["n"], json!(6));
    for bad in [
        json!({"ops": []}),
        json!({"ops": [{"op": "nope", "field": "x"}]}),
        json!({"ops": [{"op": "increment"}]}),
        json!({"ops": [{"op": "increment", "field": "n", "by": "1"}]}),
        json!({"ops": [{"op": "increment", "field": "n"}], "extra": 1}),
        json!({"ops": (0..101).map(|_| json!({"op": "increment", "field": "n"})).collect::<Vec<_>>()}),
    ] {
        let r = ops(bad.clone()).await;
        check(&r, 400, Some("invalid_request"));
    }
    s.call("PUT", "/v1/kv/scalar", t, Some(&json!({"value": 5})))
        .await;
    let r = s
        .call(
            "POST",
            "/v1/kv/scalar/ops",
            t,
            Some(&json!({"ops": [{"op": "increment", "field": "n"}]})),
        )
        .await;
    check(&r, 409, Some("conflict"));
}

#[tokio::test]
async fn batches_atomic_and_not() {
    let (s, t) = server().await;
    let t = Some(t.as_str());
    let r = s
        .call(
            "POST",
            "/v1/batch",
            t,
            Some(&json!({"atomic": true, "ops": [
                {"op": "put", "store": "kv", "key": "a", "value": {"x": 1}},
                {"op": "patch", "store": "kv", "key": "a", "value": {"y": 2}},
                {"op": "get", "store": "kv", "key": "a"},
                {"op": "exists", "store": "secrets", "key": "nope"},
                {"op": "put", "store": "secrets", "key": "s", "value": "v", "if_version": 0},
                {"op": "delete", "store": "kv", "key": "gone"},
            ]})),
        )
        .await;
    check(&r, 200, None);
    let res = r.body["results"].as_array().unwrap();
    let statuses: Vec<u64> = res.iter().map(|x| x["status"].as_u64().unwrap()).collect();
    assert_eq!(statuses, [201, 200, 200, 404, 201, 204]);
    assert_eq!(res[2]["record"]["value"], json!({"x": 1, "y": 2}));
    assert_eq!(res[3]["error"]["code"], "not_found");
    assert!(res[1]["record"]["version"].as_u64() > res[0]["record"]["version"].as_u64());

    // Atomic: a failing write op fails the batch, names its index, and nothing is written.
    let r = s
        .call(
            "POST",
            "/v1/batch",
            t,
            Some(&json!({"atomic": true, "ops": [
                {"op": "put", "store": "kv", "key": "b", "value": 1},
                {"op": "put", "store": "secrets", "key": "s", "value": "w", "if_version": 0},
            ]})),
        )
        .await;
    check(&r, 412, Some("precondition_failed"));
    assert_eq!(r.body["error"]["op_index"], 1);
    check(
        &s.call("GET", "/v1/kv/b", t, None).await,
        404,
        Some("not_found"),
    );

    // Not atomic: each op stands alone.
    let r = s
        .call(
            "POST",
            "/v1/batch",
            t,
            Some(&json!({"atomic": false, "ops": [
                {"op": "put", "store": "kv", "key": "b", "value": 1},
                {"op": "put", "store": "secrets", "key": "s", "value": "w", "if_version": 0},
                {"op": "get", "store": "kv", "key": "b"},
            ]})),
        )
        .await;
    check(&r, 200, None);
    let res = r.body["results"].as_array().unwrap();
    assert_eq!(res[0]["status"], 201);
    assert_eq!(res[1]["status"], 412);
    assert_eq!(res[1]["error"]["code"], "precondition_failed");
    assert_eq!(res[2]["record"]["value"], json!(1));

    for bad in [
        json!({"ops": [{"op": "get", "store": "kv", "key": "a"}]}),
        json!({"atomic": true, "ops": []}),
        json!({"atomic": true, "ops": [{"op": "get", "store": "nope", "key": "a"}]}),
        json!({"atomic": true, "ops": [{"op": "frob", "store": "kv", "key": "a"}]}),
        json!({"atomic": true, "ops": [{"op": "put", "store": "kv", "key": "a"}]}),
        json!({"atomic": true, "ops": [{"op": "get", "store": "kv", "key": "a", "ttl_seconds": 5}]}),
        json!({"atomic": true, "ops": [{"op": "put", "store": "kv", "key": "a", "value": 1, "bogus": 1}]}),
    ] {
        check(
            &s.call("POST", "/v1/batch", t, Some(&bad)).await,
            400,
            Some("invalid_request"),
        );
    }
}

#[tokio::test]
async fn routes_methods_and_errors() {
    let (s, t) = server().await;
    let t = Some(t.as_str());
    // Authentication comes before validation, also for an empty key.
    let r = s.call("GET", "/v1/secrets/", None, None).await;
    check(&r, 401, Some("unauthenticated"));
    let r = s.call("GET", "/v1/secrets/", t, None).await;
    check(&r, 400, Some("invalid_request"));
    // Unknown routes are 404 and wrong methods 405 with Allow, both before authentication.
    let r = s.call("GET", "/v1/nope/x", None, None).await;
    check(&r, 404, Some("not_found"));
    let r = s.call("POST", "/v1/secrets/x", None, None).await;
    check(&r, 405, Some("method_not_allowed"));
    assert!(r.header("allow").unwrap().contains("GET"));
    // 401 carries WWW-Authenticate.
    let r = s.call("GET", "/v1/secrets/x", None, None).await;
    check(&r, 401, Some("unauthenticated"));
    assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    let r = s
        .call(
            "GET",
            "/v1/secrets/x",
            Some("tsr_0000000000000000_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
            None,
        )
        .await;
    check(&r, 401, Some("unauthenticated"));
    // Request ids: a well-formed one is kept, others replaced.
    let r = s
        .raw(
            "GET",
            "/v1/secrets/x",
            t,
            &[("x-request-id", "my-id.1".into())],
            None,
        )
        .await;
    assert_eq!(r.header("x-request-id"), Some("my-id.1"));
    assert_eq!(r.body["error"]["request_id"], "my-id.1");
    let r = s
        .raw(
            "GET",
            "/v1/secrets/x",
            t,
            &[("x-request-id", "bad id!".into())],
            None,
        )
        .await;
    assert_ne!(r.header("x-request-id"), Some("bad id!"));
    // The key routes authenticate like every admin route.
    let r = s.call("GET", "/v1/admin/keys", None, None).await;
    check(&r, 401, Some("unauthenticated"));
    let r = s.call("POST", "/v1/admin/keys/rotate", t, None).await;
    check(&r, 403, Some("forbidden"));
    let admin = Some(s.admin_token.as_str());
    let r = s.call("GET", "/v1/admin/keys", admin, None).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body["versions"], serde_json::json!(["1"]));
}

fn urlencode(k: &str) -> String {
    k.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
