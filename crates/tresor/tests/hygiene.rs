//! Secret hygiene (issue 7, item 6), black-box: the real binary runs with every log at TRACE
//! (`TRESOR_LOG=trace`) while the test plants distinct canaries as record values, descriptions,
//! field-op and batch values, bodies of failing requests, a bogus bearer token, write-only
//! credential secrets (created and updated, then injected by the proxy into a local upstream as
//! a bearer token, a header, a query parameter and Basic auth), an OAuth client secret (the
//! client-credentials grant against the local fake provider), the admin token
//! (`TRESOR_ADMIN_TOKEN`) and the root key bytes (`TRESOR_MASTER_KEY`). Tokens the server issues
//! (installation tokens, the bootstrap admin token) and access tokens the provider mints are
//! watched too. Then everything the test saw is searched for every one of them, raw, as
//! standard and URL-safe base64 (at the three byte alignments, so a secret inside a longer
//! encoded string is found too), as lower- and uppercase hex, percent-encoded and as a decimal
//! byte list (`Debug` of a byte slice): the server's whole stdout and stderr, every response
//! body and header, `/metrics`, the audit log, the output and file of `tresor export` and the
//! output of `tresor import`, and the bytes of the store's files on disk.
//!
//! The only responses allowed to hold a secret are the ones that return it to its owner, each
//! named where it is recorded: a GET (or batch get, list, field op) of the caller's own record,
//! the answer to the request that wrote it (which echoes the record), the installation and
//! token responses that hand out a new token once. Every other secret is still searched in
//! those responses.
//!
//! `Debug` of the secret-carrying types is covered by unit tests where the types live:
//! `tresor-crypto` `data_key::tests::debug_is_redacted` (`DataKey`, so also the namespace keys
//! cache), `root_key::tests::debug_shows_ids_only` (`RootKeyRing`),
//! `token::tests::debug_hides_the_token` (`IssuedToken`), `token::tests::pepper_debug_is_redacted`
//! (`TokenPepper`), `key_file` (errors); `tresor-core` `credentials` (`CredentialSecret`,
//! `ProviderInput`), `dump::tests::debug_never_shows_bytes_or_text`,
//! `field_ops::tests::messages_and_debug_hide_values`. The plaintext holders of the record engine
//! (`RecordWithValue`, the transaction's `Live`/`PendingOutput`) implement no `Debug` at all.
//!
//! Also the process hardening of `serve`: core dumps off (`RLIMIT_CORE` 0, not dumpable), key
//! pages locked (`VmLck` > 0), and the loud warning when the system refuses to lock them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use serde_json::{Value, json};
use tresor_test_support::process;
use tresor_test_support::provider::{ProviderConfig, TestProvider};
use tresor_test_support::server::{Answer, TestServer, free_port};

fn bin() -> &'static Path {
    env!("CARGO_BIN_EXE_tresor").as_ref()
}

const SCOPES: &[&str] = &tresor_test_support::ALL_SCOPES;

fn random_hex(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    aws_lc_rs::rand::fill(&mut b).unwrap_or_else(|_| panic!("no randomness"));
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// One watched secret: its role, its bytes, and the distinctive part of it that must not show
/// up either (for a planted canary its random tail, for an issued token its secret part).
struct Secret {
    role: String,
    bytes: Vec<u8>,
    tail: Vec<u8>,
}

/// What the test saw: named texts (or bytes), each with the secrets it may legitimately hold.
#[derive(Default)]
struct Evidence {
    secrets: Vec<Secret>,
    items: Vec<(String, Vec<u8>, Vec<String>)>,
}

impl Evidence {
    /// A new canary `CANARY-<role>-<random>` under `role`.
    fn canary(&mut self, role: &str) -> String {
        let tail = random_hex(10);
        let value = format!("CANARY-{role}-{tail}");
        self.watch(role, value.as_bytes(), tail.as_bytes());
        value
    }

    fn watch(&mut self, role: &str, bytes: &[u8], tail: &[u8]) {
        assert!(
            !self.secrets.iter().any(|s| s.role == role),
            "role {role} twice"
        );
        self.secrets.push(Secret {
            role: role.to_owned(),
            bytes: bytes.to_vec(),
            tail: tail.to_vec(),
        });
    }

    /// A token the server issued (`tsr_<id>_<secret>`): the id may be logged, the rest not.
    fn watch_token(&mut self, role: &str, token: &str) {
        let secret = token.rsplit_once('_').map(|(_, s)| s).unwrap_or(token);
        let secret = token.get(21..).unwrap_or(secret);
        assert!(secret.len() >= 16, "{role}: unexpected token shape");
        self.watch(role, token.as_bytes(), secret.as_bytes());
    }

    fn add(&mut self, place: impl Into<String>, bytes: impl Into<Vec<u8>>, allowed: &[&str]) {
        self.items.push((
            place.into(),
            bytes.into(),
            allowed.iter().map(|s| (*s).to_owned()).collect(),
        ));
    }

    /// Records an answer (body and every header) under `place`.
    fn answer(&mut self, place: &str, r: &Answer, allowed: &[&str]) {
        let mut text = format!("HTTP {}\n", r.status);
        for (k, v) in &r.headers {
            text.push_str(&format!("{k}: {}\n", String::from_utf8_lossy(v.as_bytes())));
        }
        text.push('\n');
        text.push_str(&r.text);
        self.add(place, text, allowed);
    }

    /// Every hit: (place, role, encoding, excerpt).
    fn hits(&self) -> Vec<String> {
        let mut out = Vec::new();
        for secret in &self.secrets {
            let mut needles = renderings(&secret.bytes);
            for (name, n) in renderings(&secret.tail) {
                needles.push((format!("{name} of its distinctive part"), n));
            }
            for (place, bytes, allowed) in &self.items {
                if allowed.contains(&secret.role) {
                    continue;
                }
                for (encoding, needle) in &needles {
                    if let Some(at) = find(bytes, needle.as_bytes()) {
                        let from = at.saturating_sub(60);
                        let to = (at + needle.len() + 60).min(bytes.len());
                        out.push(format!(
                            "{} found in {place} as {encoding} at byte {at}: …{}…",
                            secret.role,
                            String::from_utf8_lossy(&bytes[from..to]).replace('\n', "⏎")
                        ));
                        break;
                    }
                }
            }
        }
        out
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || needle.len() > haystack.len() {
        return None;
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Every form `bytes` are searched in. Base64 is taken at the three alignments a secret can
/// have inside a longer encoded string: the characters that depend only on the secret's own
/// bits (the partial characters at either edge stripped), so one substring search matches with
/// or without padding and whatever surrounds it.
fn renderings(bytes: &[u8]) -> Vec<(String, String)> {
    let mut out = vec![(
        "raw".to_owned(),
        String::from_utf8_lossy(bytes).into_owned(),
    )];
    for (name, engine) in [
        ("base64", &STANDARD_NO_PAD),
        ("base64url", &URL_SAFE_NO_PAD),
    ] {
        for offset in 0..3usize {
            let mut input = vec![0u8; offset];
            input.extend_from_slice(bytes);
            let encoded = engine.encode(&input);
            let first = (8 * offset).div_ceil(6);
            let last = (8 * (offset + bytes.len())) / 6;
            if let Some(inner) = encoded.get(first..last) {
                out.push((format!("{name} (alignment {offset})"), inner.to_owned()));
            }
        }
    }
    let lower: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    out.push(("hex".to_owned(), lower.clone()));
    out.push(("HEX".to_owned(), lower.to_uppercase()));
    let percent: String = bytes
        .iter()
        .map(|&b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    out.push(("percent-encoding".to_owned(), percent));
    let every: String = bytes.iter().map(|b| format!("%{b:02X}")).collect();
    out.push(("percent-encoding of every byte".to_owned(), every.clone()));
    out.push((
        "percent-encoding of every byte (lowercase)".to_owned(),
        every.to_lowercase(),
    ));
    let decimal = bytes
        .iter()
        .map(|b| b.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    out.push(("decimal byte list".to_owned(), decimal));
    out.dedup_by(|a, b| a.1 == b.1);
    out
}

#[test]
fn renderings_find_a_secret_inside_longer_encodings() {
    let secret = b"CANARY-x-0123456789";
    for prefix in [&b""[..], b"a", b"ab", b"abc"] {
        let mut all = prefix.to_vec();
        all.extend_from_slice(secret);
        all.extend_from_slice(b"tail!");
        let forms = renderings(secret);
        for encoded in [
            base64::engine::general_purpose::STANDARD.encode(&all),
            URL_SAFE_NO_PAD.encode(&all),
        ] {
            assert!(
                forms.iter().any(|(_, f)| encoded.contains(f.as_str())),
                "{encoded}"
            );
        }
    }
    let forms = renderings(b"a b/c");
    assert!(forms.iter().any(|(_, f)| f == "a%20b%2Fc"));
    assert!(forms.iter().any(|(_, f)| f == "97, 32, 98, 47, 99"));
}

struct Hygiene {
    s: TestServer,
    ev: Evidence,
    admin: String,
    t: String,
}

impl Hygiene {
    async fn call(
        &mut self,
        place: &str,
        method: &str,
        path: &str,
        body: Option<&Value>,
        allowed: &[&str],
    ) -> Answer {
        let r = self.s.call(method, path, Some(&self.t), body).await;
        self.ev.answer(place, &r, allowed);
        r
    }

    async fn raw(
        &mut self,
        place: &str,
        method: &str,
        path: &str,
        token: &str,
        headers: &[(&str, String)],
        body: Vec<u8>,
    ) -> Answer {
        let r = self
            .s
            .raw(method, path, Some(token), headers, Some(body))
            .await;
        self.ev.answer(place, &r, &[]);
        r
    }

    async fn admin(
        &mut self,
        place: &str,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Answer {
        let r = self.s.call(method, path, Some(&self.admin), body).await;
        self.ev.answer(place, &r, &[]);
        r
    }
}

fn expect(r: &Answer, status: u16, what: &str) {
    assert_eq!(r.status, status, "{what}: {r:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn no_planted_secret_reaches_a_log_a_response_metrics_or_audit() {
    let mut ev = Evidence::default();
    // The root key: 32 bytes of which the test knows every one.
    let root_tail = random_hex(9);
    let root_bytes = format!("CANARY-rootkey-{}", &root_tail[..17]);
    assert_eq!(root_bytes.len(), 32);
    ev.watch(
        "root key",
        root_bytes.as_bytes(),
        &root_tail.as_bytes()[..17],
    );
    let master_key = base64::engine::general_purpose::STANDARD.encode(root_bytes.as_bytes());
    let admin = ev.canary("admintoken");
    let client_secret = ev.canary("oauthclientsecret");
    let up = TestProvider::start(ProviderConfig {
        client_secret: client_secret.clone(),
        ..ProviderConfig::default()
    })
    .await;

    let envs = [
        ("TRESOR_LOG", "trace"),
        ("TRESOR_ADMIN_TOKEN", admin.as_str()),
        ("TRESOR_MASTER_KEY", master_key.as_str()),
    ];
    let s = TestServer::start_with(bin(), &[], &envs).await;
    let bootstrap = s.admin_token.clone();
    ev.watch_token("bootstrap admin token", &bootstrap);
    let mut h = Hygiene {
        s,
        ev,
        admin: admin.clone(),
        t: String::new(),
    };

    // Administration with the planted admin token; the installation token comes back once.
    for (path, body) in [
        ("/v1/admin/apps/app", json!({"scopes": SCOPES})),
        ("/v1/admin/accounts/acct", json!({})),
    ] {
        let r = h.admin(path, "PUT", path, Some(&body)).await;
        assert!(r.status == 201 || r.status == 200, "{r:?}");
    }
    let r =
        h.s.call(
            "PUT",
            "/v1/admin/installations/inst",
            Some(&admin),
            Some(&json!({"app_id": "app", "account_id": "acct"})),
        )
        .await;
    expect(&r, 201, "install");
    let t = r.body["token"].as_str().unwrap_or_default().to_owned();
    h.ev.watch_token("installation token", &t);
    h.ev.answer(
        "the installation's creation (returns its token once)",
        &r,
        &["installation token"],
    );
    h.t = t.clone();
    let r =
        h.s.call(
            "POST",
            "/v1/admin/installations/inst/tokens",
            Some(&admin),
            Some(&json!({"scopes": ["kv:read"], "ttl_seconds": 3600})),
        )
        .await;
    expect(&r, 201, "token issue");
    let second = r.body["token"].as_str().unwrap_or_default().to_owned();
    h.ev.watch_token("issued installation token", &second);
    h.ev.answer(
        "a token's issue (returns it once)",
        &r,
        &["issued installation token"],
    );
    let r = h.s.call("GET", "/v1/kv", Some(&second), None).await;
    h.ev.answer("a listing with the issued token", &r, &[]);
    let r = h
        .admin(
            "admin: installation",
            "GET",
            "/v1/admin/installations/inst",
            None,
        )
        .await;
    expect(&r, 200, "get installation");
    h.admin(
        "admin: installations",
        "GET",
        "/v1/admin/installations",
        None,
    )
    .await;
    // The bootstrap admin token works too.
    let r =
        h.s.call("GET", "/v1/admin/apps", Some(&bootstrap), None)
            .await;
    expect(&r, 200, "bootstrap admin token");
    h.ev.answer("admin: apps", &r, &[]);

    // Records: put (value and description), get, patch, field ops, batch, listing, delete.
    let put = h.ev.canary("recordput");
    let desc = h.ev.canary("recorddescription");
    let r = h
        .call(
            "PUT secrets/api (echoes the owner's record)",
            "PUT",
            "/v1/secrets/api",
            Some(&json!({"value": {"password": put}, "description": desc})),
            &["recordput", "recorddescription"],
        )
        .await;
    expect(&r, 201, "put");
    let r = h
        .call(
            "GET secrets/api (the owner's own secret)",
            "GET",
            "/v1/secrets/api",
            None,
            &["recordput", "recorddescription"],
        )
        .await;
    expect(&r, 200, "get");
    assert_eq!(r.body["value"]["password"], put.as_str());
    let patched = h.ev.canary("recordpatch");
    let r = h
        .call(
            "PATCH secrets/api (echoes the owner's record)",
            "PATCH",
            "/v1/secrets/api",
            Some(&json!({"token": patched})),
            &["recordput", "recorddescription", "recordpatch"],
        )
        .await;
    expect(&r, 200, "patch");
    let r = h
        .call(
            "GET secrets/api?fields (the owner's own secret)",
            "GET",
            "/v1/secrets/api?fields=token",
            None,
            &["recordpatch", "recorddescription"],
        )
        .await;
    expect(&r, 200, "get fields");
    let r = h
        .call("HEAD secrets/api", "HEAD", "/v1/secrets/api", None, &[])
        .await;
    expect(&r, 200, "head");
    let listed = h.ev.canary("opslistpush");
    let member = h.ev.canary("opssetadd");
    let r = h
        .call(
            "POST kv/state/ops (returns the owner's record)",
            "POST",
            "/v1/kv/state/ops",
            Some(&json!({"ops": [
                {"op": "list_push", "field": "l", "values": [listed]},
                {"op": "set_add", "field": "s", "members": [member]},
                {"op": "increment", "field": "n", "by": 3},
            ]})),
            &["opslistpush", "opssetadd"],
        )
        .await;
    expect(&r, 200, "ops");
    let r = h
        .call(
            "POST kv/state/ops list_pop (returns the owner's values)",
            "POST",
            "/v1/kv/state/ops",
            Some(&json!({"ops": [{"op": "list_pop", "field": "l"}, {"op": "set_contains", "field": "s", "members": [member]}]})),
            &["opslistpush", "opssetadd"],
        )
        .await;
    expect(&r, 200, "ops pop");
    let batch_put = h.ev.canary("batchput");
    let batch_patch = h.ev.canary("batchpatch");
    let r = h
        .call(
            "POST batch (returns the owner's records)",
            "POST",
            "/v1/batch",
            Some(&json!({"atomic": true, "ops": [
                {"op": "put", "store": "settings", "key": "cfg", "value": {"k": batch_put}},
                {"op": "patch", "store": "settings", "key": "cfg", "value": {"p": batch_patch}},
                {"op": "get", "store": "settings", "key": "cfg"},
                {"op": "get", "store": "secrets", "key": "api"},
            ]})),
            &[
                "batchput",
                "batchpatch",
                "recordput",
                "recordpatch",
                "recorddescription",
            ],
        )
        .await;
    expect(&r, 200, "batch");
    let failed_batch = h.ev.canary("failedbatch");
    let r = h
        .call(
            "POST batch that fails",
            "POST",
            "/v1/batch",
            Some(&json!({"atomic": true, "ops": [
                {"op": "put", "store": "kv", "key": "b", "value": failed_batch},
                {"op": "put", "store": "secrets", "key": "api", "value": failed_batch, "if_version": 1},
            ]})),
            &[],
        )
        .await;
    assert_ne!(r.status, 200, "{r:?}");
    let shared = h.ev.canary("sharedput");
    let r = h
        .call(
            "PUT shared/k (echoes the owner's record)",
            "PUT",
            "/v1/shared/k",
            Some(&json!({"value": shared, "ttl_seconds": 3600})),
            &["sharedput"],
        )
        .await;
    expect(&r, 201, "shared put");
    for store in ["secrets", "settings", "kv", "shared"] {
        h.call(
            &format!("listing of {store} (the owner's descriptions)"),
            "GET",
            &format!("/v1/{store}?limit=100"),
            None,
            &["recorddescription"],
        )
        .await;
    }

    // Failing requests whose bodies carry canaries: none may come back or reach a log.
    let bad_json = h.ev.canary("badjson");
    let token = t.clone();
    let json_ct = [("content-type", "application/json".to_owned())];
    let r = h
        .raw(
            "PUT with malformed JSON",
            "PUT",
            "/v1/secrets/bad",
            &token,
            &json_ct,
            format!("{{\"value\": {{\"pw\": \"{bad_json}\" ").into_bytes(),
        )
        .await;
    expect(&r, 400, "bad json");
    let dup = h.ev.canary("duplicatemember");
    h.raw(
        "PUT with a duplicate member",
        "PUT",
        "/v1/secrets/bad",
        &token,
        &json_ct,
        format!("{{\"value\": {{\"pw\": \"{dup}\", \"pw\": \"{dup}\"}}}}").into_bytes(),
    )
    .await;
    let unknown_field = h.ev.canary("unknownfield");
    h.raw(
        "PUT with an unknown member",
        "PUT",
        "/v1/secrets/bad",
        &token,
        &json_ct,
        format!("{{\"value\": 1, \"{unknown_field}\": \"{unknown_field}\"}}").into_bytes(),
    )
    .await;
    // Names a caller controls (members, stores, ops, query parameters) are not echoed either.
    for (role, body) in [
        ("batchstore", json!({"op": "get", "store": "$", "key": "a"})),
        ("batchop", json!({"op": "$", "store": "kv", "key": "a"})),
        (
            "batchopfield",
            json!({"op": "get", "store": "kv", "key": "a", "$": 1}),
        ),
    ] {
        let c = h.ev.canary(role);
        let op: Value =
            serde_json::from_str(&body.to_string().replace('$', &c)).unwrap_or_default();
        let r = h
            .call(
                &format!("batch with a canary as {role}"),
                "POST",
                "/v1/batch",
                Some(&json!({"atomic": true, "ops": [op]})),
                &[],
            )
            .await;
        expect(&r, 400, role);
    }
    let param = h.ev.canary("queryparam");
    let r = h
        .call(
            "a canary as a query parameter",
            "GET",
            &format!("/v1/secrets/api?{param}=1"),
            None,
            &[],
        )
        .await;
    expect(&r, 400, "query parameter");
    let field = h.ev.canary("fieldsparam");
    h.call(
        "a canary in ?fields",
        "GET",
        &format!("/v1/kv/state?fields={field}"),
        None,
        &[],
    )
    .await;
    let cred_field = h.ev.canary("credentialfield");
    h.call(
        "a credential body with a canary member",
        "PUT",
        "/v1/credentials/z",
        Some(
            &json!({"provider": "bearer", "secret": {"access_token": "x"}, cred_field.as_str(): 1}),
        ),
        &[],
    )
    .await;
    let bad_type = h.ev.canary("badtype");
    h.raw(
        "PATCH with a wrong content type",
        "PATCH",
        "/v1/secrets/api",
        &token,
        &[("content-type", "text/plain".to_owned())],
        bad_type.clone().into_bytes(),
    )
    .await;
    let bad_ops = h.ev.canary("badops");
    h.call(
        "ops that fail",
        "POST",
        "/v1/kv/state/ops",
        Some(&json!({"ops": [{"op": "increment", "field": "l", "by": bad_ops}]})),
        &[],
    )
    .await;
    h.call(
        "ops on a value of the wrong type",
        "POST",
        "/v1/secrets/api/ops",
        Some(&json!({"ops": [{"op": "increment", "field": "token"}]})),
        &[],
    )
    .await;
    let precondition = h.ev.canary("precondition");
    let r = h
        .raw(
            "PUT with a failing If-Match",
            "PUT",
            "/v1/secrets/api",
            &token,
            &[
                ("content-type", "application/json".to_owned()),
                ("if-match", "\"999\"".to_owned()),
            ],
            serde_json::to_vec(&json!({"value": precondition})).unwrap_or_default(),
        )
        .await;
    expect(&r, 412, "precondition");
    let exists = h.ev.canary("ifnonematch");
    let r = h
        .raw(
            "PUT with a failing If-None-Match",
            "PUT",
            "/v1/secrets/api",
            &token,
            &[
                ("content-type", "application/json".to_owned()),
                ("if-none-match", "*".to_owned()),
            ],
            serde_json::to_vec(&json!({"value": exists})).unwrap_or_default(),
        )
        .await;
    expect(&r, 412, "if-none-match");
    let large = h.ev.canary("toolarge");
    let mut big = format!("{{\"value\": \"{large}");
    big.push_str(&"x".repeat(600 * 1024));
    big.push_str(&large);
    big.push_str("\"}");
    // On a connection of its own: the server stops reading an oversized body and closes the
    // connection, which must not break the next request of the shared client.
    let resp = reqwest::Client::new()
        .put(h.s.url("/v1/kv/big"))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await;
    let r = match resp {
        Ok(resp) => {
            let status = resp.status().as_u16();
            let headers = resp.headers().clone();
            let text = resp.text().await.unwrap_or_default();
            Answer {
                status,
                headers,
                body: serde_json::from_str(&text).unwrap_or(Value::Null),
                text,
            }
        }
        Err(e) => panic!("PUT too large: {e}"),
    };
    h.ev.answer("PUT too large", &r, &[]);
    assert!(r.status == 413 || r.status == 400, "{r:?}");
    let deep = h.ev.canary("toodeep");
    let nested = format!("{}\"{deep}\"{}", "[".repeat(100), "]".repeat(100));
    h.raw(
        "PUT too deep",
        "PUT",
        "/v1/kv/deep",
        &token,
        &json_ct,
        format!("{{\"value\": {nested}}}").into_bytes(),
    )
    .await;
    let bogus = h.ev.canary("bogusbearer");
    let r = h
        .raw(
            "GET with a bogus bearer token",
            "GET",
            "/v1/secrets/api",
            &bogus,
            &[],
            Vec::new(),
        )
        .await;
    expect(&r, 401, "bogus bearer");
    // A token of the right shape whose secret part is a canary reaches the MAC lookup.
    let shaped_tail = format!("CANARY-tsrshaped-{}", &random_hex(13));
    assert_eq!(shaped_tail.len(), 43);
    h.ev.watch(
        "token-shaped bogus bearer",
        shaped_tail.as_bytes(),
        &shaped_tail.as_bytes()[17..],
    );
    let shaped = format!("tsr_0123456789abcdef_{shaped_tail}");
    let r = h
        .raw(
            "GET with a token-shaped bogus bearer",
            "GET",
            "/v1/secrets/api",
            &shaped,
            &[],
            Vec::new(),
        )
        .await;
    expect(&r, 401, "token-shaped bearer");
    let r = h
        .raw(
            "admin with a bogus token",
            "GET",
            "/v1/admin/apps",
            &bogus,
            &[],
            Vec::new(),
        )
        .await;
    expect(&r, 401, "admin bogus");
    let r = h
        .raw(
            "admin with an installation token",
            "GET",
            "/v1/admin/apps",
            &token,
            &[],
            Vec::new(),
        )
        .await;
    expect(&r, 403, "admin forbidden");

    // Credentials: write-only secrets, created, updated, listed, injected by the proxy.
    for (name, inject, oauth2) in [
        ("bearer", json!({"type": "bearer"}), Value::Null),
        (
            "keyed",
            json!({"type": "header", "name": "X-Api-Key"}),
            Value::Null,
        ),
        (
            "query",
            json!({"type": "query", "name": "api_key"}),
            Value::Null,
        ),
        ("basic", json!({"type": "basic"}), Value::Null),
        (
            "cc",
            json!({"type": "bearer"}),
            json!({"grant": "client_credentials", "token_url": up.token_url(),
                   "client_id": up.config().client_id, "client_secret": client_secret}),
        ),
    ] {
        let mut doc =
            json!({"base_url": up.api_base(), "allow_private_network": true, "inject": inject});
        if !oauth2.is_null() {
            doc["oauth2"] = oauth2;
        }
        let path = format!("/v1/admin/providers/{name}");
        let r = h
            .admin(&format!("PUT {path}"), "PUT", &path, Some(&doc))
            .await;
        expect(&r, 201, "provider");
        h.admin(&format!("GET {path}"), "GET", &path, None).await;
    }
    h.admin("GET providers", "GET", "/v1/admin/providers", None)
        .await;

    let created = h.ev.canary("credcreate");
    let updated = h.ev.canary("credupdate");
    let api_key = h.ev.canary("credapikey");
    let query_key = h.ev.canary("credquerykey");
    let basic_user = h.ev.canary("credbasicuser");
    let basic_password = h.ev.canary("credbasicpassword");
    let minted = up.mint_access_token();
    h.ev.watch("minted access token", minted.as_bytes(), minted.as_bytes());
    for (key, body) in [
        (
            "b",
            json!({"provider": "bearer", "secret": {"access_token": created}}),
        ),
        (
            "b",
            json!({"provider": "bearer", "secret": {"access_token": updated}}),
        ),
        (
            "m",
            json!({"provider": "bearer", "secret": {"access_token": minted}}),
        ),
        (
            "k",
            json!({"provider": "keyed", "secret": {"api_key": api_key}}),
        ),
        (
            "q",
            json!({"provider": "query", "secret": {"api_key": query_key}}),
        ),
        (
            "u",
            json!({"provider": "basic", "secret": {"username": basic_user, "password": basic_password}}),
        ),
        ("c", json!({"provider": "cc", "secret": {}})),
    ] {
        let path = format!("/v1/credentials/{key}");
        let r = h
            .call(&format!("PUT {path}"), "PUT", &path, Some(&body), &[])
            .await;
        assert!(r.status == 201 || r.status == 200, "{r:?}");
        h.call(&format!("GET {path}"), "GET", &path, None, &[])
            .await;
    }
    let bad_cred = h.ev.canary("credinvalid");
    h.call(
        "PUT a credential the provider cannot use",
        "PUT",
        "/v1/credentials/x",
        Some(&json!({"provider": "basic", "secret": {"access_token": bad_cred}})),
        &[],
    )
    .await;
    h.call("GET credentials", "GET", "/v1/credentials", None, &[])
        .await;
    for key in ["b", "m", "k", "q", "u", "c", "c"] {
        let r = h
            .call(
                &format!("proxy through {key}"),
                "POST",
                &format!("/v1/credentials/{key}/request"),
                Some(&json!({"method": "GET", "path": "echo", "query": {"x": "1"}})),
                &[],
            )
            .await;
        expect(&r, 200, "proxy");
    }
    let r = h
        .call(
            "proxy POST through m",
            "POST",
            "/v1/credentials/m/request",
            Some(&json!({"method": "POST", "path": "echo", "body": {"hello": "world"}})),
            &[],
        )
        .await;
    assert_eq!(r.body["status"], 200, "{r:?}");
    up.expire_access_tokens();
    h.call(
        "proxy through c after expiry (renewal)",
        "POST",
        "/v1/credentials/c/request",
        Some(&json!({"method": "GET", "path": "echo"})),
        &[],
    )
    .await;
    assert!(
        up.stats().client_credentials_grants >= 1,
        "{:?}",
        up.stats()
    );
    h.call(
        "DELETE a credential",
        "DELETE",
        "/v1/credentials/k",
        None,
        &[],
    )
    .await;
    let r = h
        .call("DELETE a record", "DELETE", "/v1/shared/k", None, &[])
        .await;
    expect(&r, 204, "delete");

    // Metrics and audit.
    let r = h.s.call("GET", "/metrics", None, None).await;
    expect(&r, 200, "metrics");
    h.ev.answer("/metrics", &r, &[]);
    let mut after: Option<String> = None;
    let mut events = 0;
    loop {
        let path = match &after {
            Some(c) => format!("/v1/admin/audit?limit=1000&after={c}"),
            None => "/v1/admin/audit?limit=1000".to_owned(),
        };
        let r = h.admin("the audit log", "GET", &path, None).await;
        expect(&r, 200, "audit");
        let items = r.body["items"].as_array().map(Vec::len).unwrap_or(0);
        events += items;
        match r.body["next_cursor"].as_str() {
            Some(c) if items > 0 => after = Some(c.to_owned()),
            _ => break,
        }
    }
    assert!(events > 20, "the audit log holds the requests: {events}");

    // Stop the server, then export and import the store with the CLI at TRACE too.
    assert_eq!(h.s.terminate(), Some(0), "{}", h.s.log());
    let work = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let file = work.path().join("export.jsonl");
    let data = h.s.data_dir().to_string_lossy().into_owned();
    let file_arg = file.to_string_lossy().into_owned();
    let trace = [("TRESOR_LOG", "trace")];
    let out = process::run(
        bin(),
        &["export", "--data-dir", &data, "--out", &file_arg],
        &trace,
    )
    .await;
    assert_eq!(out.code, Some(0), "export: {out:?}");
    h.ev.add("export stdout", out.stdout, &[]);
    h.ev.add("export stderr", out.stderr, &[]);
    let exported = std::fs::read(&file).unwrap_or_else(|e| panic!("export file: {e}"));
    h.ev.add("the export file", exported, &[]);
    let target = work.path().join("imported");
    let target_arg = target.to_string_lossy().into_owned();
    let out = process::run(
        bin(),
        &["import", "--in", &file_arg, "--data-dir", &target_arg],
        &[
            ("TRESOR_LOG", "trace"),
            ("TRESOR_MASTER_KEY", master_key.as_str()),
        ],
    )
    .await;
    assert_eq!(out.code, Some(0), "import: {out:?}");
    h.ev.add("import stdout", out.stdout, &[]);
    h.ev.add("import stderr", out.stderr, &[]);

    // The store's files on disk (the bootstrap admin token file is the one plaintext token).
    for dir in [h.s.data_dir().to_path_buf(), target.clone()] {
        for path in files_under(&dir) {
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
            let allowed: &[&str] = match name.as_deref() {
                Some("admin.token") => &["bootstrap admin token"],
                Some("server.log") => continue,
                // The audit reserve is megabytes of zeros: checked as such, not searched.
                Some("audit.reserve") => {
                    let bytes = std::fs::read(&path).unwrap_or_default();
                    assert!(
                        bytes.iter().all(|&b| b == 0),
                        "{} is not all zeros",
                        path.display()
                    );
                    continue;
                }
                _ => &[],
            };
            if let Ok(bytes) = std::fs::read(&path) {
                h.ev.add(format!("the file {}", path.display()), bytes, allowed);
            }
        }
    }

    let log = h.s.log();
    assert!(
        log.contains("TRACE") && log.lines().count() > 100,
        "the server logged at TRACE ({} lines)",
        log.lines().count()
    );
    h.ev.add("the server's log at TRACE", log, &[]);

    let hits = h.ev.hits();
    assert!(
        hits.is_empty(),
        "{} planted secret(s) leaked:\n{}",
        hits.len(),
        hits.join("\n")
    );
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// `tresor serve` started by the test itself (the harness does not say a server's pid), killed
/// when dropped.
struct Served {
    child: std::process::Child,
    addr: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Served {
    /// `wrapper` (e.g. `prlimit --memlock=0:0`) runs the binary, which it must exec.
    async fn start(wrapper: &[&str]) -> Served {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let addr = format!("127.0.0.1:{}", free_port());
        let log = dir.path().join("server.log");
        let out = std::fs::File::create(&log).unwrap_or_else(|e| panic!("log: {e}"));
        let err = out.try_clone().unwrap_or_else(|e| panic!("log: {e}"));
        let data = dir.path().join("data");
        let mut argv: Vec<String> = wrapper.iter().map(|s| (*s).to_owned()).collect();
        argv.push(bin().to_string_lossy().into_owned());
        argv.extend(["serve", "--listen", &addr, "--data-dir"].map(str::to_owned));
        argv.push(data.to_string_lossy().into_owned());
        let mut cmd = std::process::Command::new(&argv[0]);
        cmd.args(&argv[1..])
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        for var in process::STORE_ENV {
            cmd.env_remove(var);
        }
        cmd.env("TRESOR_LOG", "info");
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {argv:?}: {e}"));
        let mut s = Served {
            child,
            addr,
            log,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        let http = reqwest::Client::new();
        loop {
            if let Ok(r) = http.get(format!("http://{}/healthz", s.addr)).send().await
                && r.status().is_success()
            {
                break;
            }
            if let Ok(Some(status)) = s.child.try_wait() {
                panic!("tresor exited ({status}): {}", s.log());
            }
            assert!(Instant::now() < deadline, "no start: {}", s.log());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        s
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The `Name:  value` lines of `/proc/PID/status`.
    fn status(&self) -> BTreeMap<String, String> {
        let text = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_else(|e| panic!("/proc/{}/status: {e}", self.child.id()));
        text.lines()
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.to_owned(), v.trim().to_owned()))
            .collect()
    }

    fn locked_kib(&self) -> u64 {
        let status = self.status();
        let v = status.get("VmLck").cloned().unwrap_or_default();
        v.trim_end_matches("kB")
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("VmLck {v:?}"))
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_disables_core_dumps_and_locks_the_key_pages() {
    let s = Served::start(&[]).await;
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", s.child.id()))
        .unwrap_or_else(|e| panic!("limits: {e}"));
    let core = limits
        .lines()
        .find(|l| l.starts_with("Max core file size"))
        .unwrap_or_else(|| panic!("no core limit in {limits}"));
    let fields: Vec<&str> = core.split_whitespace().collect();
    assert_eq!(
        &fields[4..6],
        ["0", "0"],
        "soft and hard core limit: {core}"
    );
    let memlock = rustix::process::getrlimit(rustix::process::Resource::Memlock);
    let can_lock = rustix::process::getuid().is_root()
        || memlock.current.is_none_or(|bytes| bytes >= 64 * 1024);
    if can_lock {
        // The root key ring (one version), the token pepper and the system key: a page each.
        let kib = s.locked_kib();
        assert!(kib >= 12, "VmLck {kib} kB; log: {}", s.log());
        assert!(kib < 1024, "only key pages are locked: VmLck {kib} kB");
        assert!(
            s.log().contains("key pages locked in memory"),
            "{}",
            s.log()
        );
        assert!(!s.log().contains("could not lock key pages"), "{}", s.log());
    }
    assert!(
        !s.log().contains("could not disable core dumps")
            && !s.log().contains("could not mark the process not dumpable"),
        "{}",
        s.log()
    );
    // Not dumpable: the kernel hands the process's /proc files to root, and the files the
    // server's operators (and tresor-bench) read stay readable.
    assert!(!s.status().is_empty());
    let http = reqwest::Client::new();
    let r = http
        .get(format!("http://{}/metrics", s.addr))
        .send()
        .await
        .unwrap_or_else(|e| panic!("metrics: {e}"));
    assert_eq!(r.status().as_u16(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_lock_is_a_loud_warning_and_the_server_keeps_serving() {
    // RLIMIT_MEMLOCK 0; as root, also without CAP_IPC_LOCK (which ignores the limit).
    let mut wrapper = vec!["prlimit", "--memlock=0:0"];
    if rustix::process::getuid().is_root() {
        wrapper.extend([
            "setpriv",
            "--inh-caps=-ipc_lock",
            "--bounding-set=-ipc_lock",
        ]);
    }
    let s = Served::start(&wrapper).await;
    assert_eq!(s.locked_kib(), 0);
    let log = s.log();
    let warning = log
        .lines()
        .find(|l| l.contains("could not lock key pages in memory"))
        .unwrap_or_else(|| panic!("no warning in {log}"));
    assert!(
        warning.contains("WARN")
            && warning.contains("SECURITY")
            && warning.contains("the root key ring and the token pepper and the system key")
            && warning.contains("ulimit -l")
            && warning.contains("memlock_limit")
            && warning.contains("0/0"),
        "{warning}"
    );
    assert_eq!(
        log.matches("could not lock key pages").count(),
        1,
        "once: {log}"
    );
    let http = reqwest::Client::new();
    let token = std::fs::read_to_string(s._dir.path().join("data/admin.token"))
        .unwrap_or_else(|e| panic!("admin.token: {e}"));
    let r = http
        .get(format!("http://{}/v1/admin/apps", s.addr))
        .bearer_auth(token.trim())
        .send()
        .await
        .unwrap_or_else(|e| panic!("apps: {e}"));
    assert_eq!(r.status().as_u16(), 200, "the server serves");
}
