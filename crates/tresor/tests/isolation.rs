//! The isolation matrix (issue 7, item 4): every endpoint of the contract × its methods (and
//! one it does not allow) × every kind of token × key variants, each cell with the status and
//! error code the contract (`API.md`) gives, and three properties over all of them:
//!
//! - **no existence leak**: wherever a token must not see tenant A's data, the answer about
//!   "A's existing key" is the same (status, headers, body, modulo the key's name, the request
//!   id and the version/timestamps of a record the request itself created) as the answer about
//!   "a key nobody has" (its *twin*);
//! - **no cross-tenant value**: every tenant's stores hold canary strings, and no answer to a
//!   token ever carries a canary of a namespace that token may not read (credential secrets:
//!   nobody);
//! - **no cross-tenant write**: after the matrix, every record of A that a cell's token had no
//!   right to change still has its planted version.
//!
//! The matrix is data: [`rows`] lists each endpoint and method with the expected status per
//! token column, [`VARIANTS`] lists the key variants with their class. Every cell has its own
//! key (`c00042`; its twin `z00042`), so the cells run concurrently and in any order. Requests
//! go out byte for byte over a raw HTTP/1.1 connection, because HTTP clients normalise `..` and
//! `%2e%2e` away. Mismatches are collected and reported all at once; the cell count is printed
//! (`cargo test -p tresor --test isolation -- --nocapture`).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tresor_test_support::ALL_SCOPES;
use tresor_test_support::provider::{ProviderConfig, TestProvider};
use tresor_test_support::server::TestServer;

fn bin() -> &'static std::path::Path {
    env!("CARGO_BIN_EXE_tresor").as_ref()
}

const CONCURRENCY: usize = 16;

// ---------------------------------------------------------------------------------------------
// Token kinds
// ---------------------------------------------------------------------------------------------

/// Who sends the request. Tenant A is `app1` installed in `acct1` (installation `inst-a`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    /// A's installation token (every scope of app1).
    Own,
    /// A second token of `inst-a` with only the `:read` scopes (and `credentials:read`).
    ReadOnly,
    /// Another installation in the same account: `app2` in `acct1` (`inst-c`). It shares A's
    /// account credentials, nothing else.
    SameAccountOtherApp,
    /// Another installation of the same app: `app1` in `acct2` (`inst-b`). It shares app1's
    /// shared store, nothing else.
    OtherAccountSameApp,
    /// `app2` in `acct2` (`inst-d`): shares nothing with A.
    OtherAccountOtherApp,
    /// The admin token: 403 on every tenant route.
    Admin,
    /// A token of `inst-a`, revoked.
    Revoked,
    /// A token of `inst-a` with `ttl_seconds: 2`, past its expiry.
    Expired,
    /// The token of an installation of `app3` in `acct1`, uninstalled.
    Uninstalled,
    /// A's token with the `tsr_` prefix changed.
    BadPrefix,
    /// A's token with the last character of its secret changed (right id, wrong MAC).
    BadMac,
    /// A's token with its last six characters cut.
    Truncated,
    /// No `Authorization` header.
    NoToken,
}

const KINDS: [Kind; 13] = [
    Kind::Own,
    Kind::ReadOnly,
    Kind::SameAccountOtherApp,
    Kind::OtherAccountSameApp,
    Kind::OtherAccountOtherApp,
    Kind::Admin,
    Kind::Revoked,
    Kind::Expired,
    Kind::Uninstalled,
    Kind::BadPrefix,
    Kind::BadMac,
    Kind::Truncated,
    Kind::NoToken,
];

/// The kinds the key-variant section runs (one of each behaviour; the others are the main
/// matrix's).
const VARIANT_KINDS: [Kind; 8] = [
    Kind::Own,
    Kind::ReadOnly,
    Kind::SameAccountOtherApp,
    Kind::OtherAccountSameApp,
    Kind::OtherAccountOtherApp,
    Kind::Admin,
    Kind::BadMac,
    Kind::NoToken,
];

impl Kind {
    /// The column of a row's expectation: `[own, ro, same-acct, same-app, other, admin, unauth]`;
    /// every kind that must fail authentication shares the last column.
    fn column(self) -> usize {
        match self {
            Kind::Own => 0,
            Kind::ReadOnly => 1,
            Kind::SameAccountOtherApp => 2,
            Kind::OtherAccountSameApp => 3,
            Kind::OtherAccountOtherApp => 4,
            Kind::Admin => 5,
            _ => 6,
        }
    }

    fn unauthenticated(self) -> bool {
        self.column() == 6
    }

    /// Whether this token may see A's data behind `target` (then no twin comparison).
    fn sees(self, target: Target, store: &str) -> bool {
        match (self, target) {
            (Kind::Own | Kind::ReadOnly, Target::Record | Target::CredInst | Target::CredAcct) => {
                true
            }
            (Kind::OtherAccountSameApp, Target::Record) => store == "shared",
            (Kind::SameAccountOtherApp, Target::CredAcct) => true,
            (Kind::Own, Target::Flow) => true,
            _ => false,
        }
    }

    /// Whether this token may change A's record behind `target` (the integrity check skips it).
    fn may_change(self, target: Target, store: &str) -> bool {
        match (self, target) {
            (Kind::Own, _) => true,
            (Kind::OtherAccountSameApp, Target::Record) => store == "shared",
            _ => false,
        }
    }

    /// The canaries this token may ever see.
    fn allowed_canaries(self) -> &'static [&'static str] {
        match self {
            Kind::Own | Kind::ReadOnly => &[
                CANARY_INST_A,
                CANARY_SHARED_APP1,
                CANARY_META_INST_A,
                CANARY_META_ACCT1,
            ],
            Kind::SameAccountOtherApp => &[
                CANARY_INST_C,
                CANARY_SHARED_APP2,
                CANARY_META_INST_C,
                CANARY_META_ACCT1,
            ],
            Kind::OtherAccountSameApp => &[CANARY_INST_B, CANARY_SHARED_APP1, CANARY_META_INST_B],
            Kind::OtherAccountOtherApp => &[CANARY_INST_D, CANARY_SHARED_APP2, CANARY_META_INST_D],
            _ => &[],
        }
    }
}

// Canaries: one per namespace (and kind of data), so a hit names whose data leaked.
const CANARY_INST_A: &str = "cnry-inst-a-5b1e";
const CANARY_INST_B: &str = "cnry-inst-b-9c07";
const CANARY_INST_C: &str = "cnry-inst-c-27fd";
const CANARY_INST_D: &str = "cnry-inst-d-e3a4";
const CANARY_SHARED_APP1: &str = "cnry-shared-app1-41c2";
const CANARY_SHARED_APP2: &str = "cnry-shared-app2-8d3b";
const CANARY_META_INST_A: &str = "cnry-meta-inst-a-0f9e";
const CANARY_META_INST_B: &str = "cnry-meta-inst-b-7a21";
const CANARY_META_INST_C: &str = "cnry-meta-inst-c-c6d0";
const CANARY_META_INST_D: &str = "cnry-meta-inst-d-3e58";
const CANARY_META_ACCT1: &str = "cnry-meta-acct1-b4f7";
/// Every credential secret contains this: no answer to anyone may carry it.
const CANARY_SECRET: &str = "cnry-credsecret-91aa";

const ALL_CANARIES: [&str; 12] = [
    CANARY_INST_A,
    CANARY_INST_B,
    CANARY_INST_C,
    CANARY_INST_D,
    CANARY_SHARED_APP1,
    CANARY_SHARED_APP2,
    CANARY_META_INST_A,
    CANARY_META_INST_B,
    CANARY_META_INST_C,
    CANARY_META_INST_D,
    CANARY_META_ACCT1,
    CANARY_SECRET,
];

const READ_SCOPES: [&str; 5] = [
    "secrets:read",
    "settings:read",
    "kv:read",
    "shared:read",
    "credentials:read",
];

// ---------------------------------------------------------------------------------------------
// The table
// ---------------------------------------------------------------------------------------------

/// What `{key}` (and `{flow}`) of a row names, which decides what is planted and whether the
/// cell has a twin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    /// A record of A in `{store}` under the cell's own key.
    Record,
    /// A credential of A's installation under the cell's own key.
    CredInst,
    /// An account credential of A's account under the cell's own key (stored by app1).
    CredAcct,
    /// A's pending OAuth flow.
    Flow,
    /// A fresh key nobody has (no twin), or no key.
    Fresh,
}

const PRIVATE: &[&str] = &["secrets", "settings", "kv"];
const SHARED: &[&str] = &["shared"];
const ALL_STORES: &[&str] = &["secrets", "settings", "kv", "shared"];
const NO_STORE: &[&str] = &[""];

/// One endpoint and method. `path` and `body` may hold `{store}`, `{key}`, `{owner}`, `{flow}`
/// and `{spare}` (a spare token id of A).
struct Row {
    method: &'static str,
    path: &'static str,
    headers: &'static [(&'static str, &'static str)],
    body: Option<&'static str>,
    target: Target,
    stores: &'static [&'static str],
    /// The status per column: own, read-only, same account/other app, other account/same app,
    /// other account/other app, admin, and every unauthenticated kind (revoked, expired,
    /// uninstalled, bad prefix, bad MAC, truncated, none).
    expect: [u16; 7],
}

const JSON: &[(&str, &str)] = &[("content-type", "application/json")];
const MERGE: &[(&str, &str)] = &[("content-type", "application/merge-patch+json")];
const NONE: &[(&str, &str)] = &[];

#[allow(clippy::too_many_arguments)]
const fn row(
    method: &'static str,
    path: &'static str,
    headers: &'static [(&'static str, &'static str)],
    body: Option<&'static str>,
    target: Target,
    stores: &'static [&'static str],
    expect: [u16; 7],
) -> Row {
    Row {
        method,
        path,
        headers,
        body,
        target,
        stores,
        expect,
    }
}

// Shorthands for columns that repeat: a tenant row's admin and unauthenticated answers.
const F: u16 = 403; // forbidden
const U: u16 = 401; // unauthenticated
const M: [u16; 7] = [405; 7]; // method not allowed, before authentication
const NR: [u16; 7] = [404; 7]; // unknown route, before authentication

#[rustfmt::skip]
fn rows() -> Vec<Row> {
    use Target::*;
    let put_body = Some(r#"{"value": {"w": 1}}"#);
    let cred_body =
        Some(r#"{"owner": "{owner}", "provider": "up", "secret": {"access_token": "cnry-credsecret-91aa-new"}}"#);
    let cred_body_inst =
        Some(r#"{"provider": "up", "secret": {"access_token": "cnry-credsecret-91aa-new"}}"#);
    let if_none_match = &[("content-type", "application/json"), ("if-none-match", "*")];
    let if_match_never = &[("content-type", "application/json"), ("if-match", "\"9007199254740991\"")];
    let patch_if_match = &[("content-type", "application/merge-patch+json"), ("if-match", "*")];
    let batch_get = Some(r#"{"atomic": false, "ops": [{"op": "get", "store": "{store}", "key": "{key}"}]}"#);
    let batch_exists = Some(r#"{"atomic": false, "ops": [{"op": "exists", "store": "{store}", "key": "{key}"}]}"#);
    let batch_put = Some(r#"{"atomic": true, "ops": [{"op": "put", "store": "{store}", "key": "{key}", "value": 2}]}"#);
    let batch_put_new = Some(r#"{"atomic": true, "ops": [{"op": "put", "store": "{store}", "key": "{key}", "value": 2, "if_version": 0}]}"#);
    let batch_patch = Some(r#"{"atomic": true, "ops": [{"op": "patch", "store": "{store}", "key": "{key}", "value": {"q": 1}}]}"#);
    let batch_delete = Some(r#"{"atomic": true, "ops": [{"op": "delete", "store": "{store}", "key": "{key}"}]}"#);
    let increment = Some(r#"{"ops": [{"op": "increment", "field": "n"}]}"#);
    let increment_string = Some(r#"{"ops": [{"op": "increment", "field": "canary"}]}"#);
    let proxy = Some(r#"{"method": "GET", "path": "/me"}"#);
    vec![
        //  method    path                                       headers  body  target  stores
        //                                                        [own, ro, sameAcct, sameApp, other, admin, unauth]
        // ---- records: /v1/{store}/{key} ----
        row("GET",    "/v1/{store}/{key}",                       NONE, None, Record, PRIVATE,    [200, 200, 404, 404, 404, F, U]),
        row("GET",    "/v1/{store}/{key}",                       NONE, None, Record, SHARED,     [200, 200, 404, 200, 404, F, U]),
        row("GET",    "/v1/{store}/{key}?fields=canary,n",       NONE, None, Record, PRIVATE,    [200, 200, 404, 404, 404, F, U]),
        row("GET",    "/v1/{store}/{key}?fields=canary,n",       NONE, None, Record, SHARED,     [200, 200, 404, 200, 404, F, U]),
        row("GET",    "/v1/{store}/{key}?bogus=1",               NONE, None, Record, ALL_STORES, [400, 400, 400, 400, 400, F, U]),
        row("HEAD",   "/v1/{store}/{key}",                       NONE, None, Record, PRIVATE,    [200, 200, 404, 404, 404, F, U]),
        row("HEAD",   "/v1/{store}/{key}",                       NONE, None, Record, SHARED,     [200, 200, 404, 200, 404, F, U]),
        row("PUT",    "/v1/{store}/{key}",                       JSON, put_body, Record, PRIVATE, [200, F, 201, 201, 201, F, U]),
        row("PUT",    "/v1/{store}/{key}",                       JSON, put_body, Record, SHARED,  [200, F, 201, 200, 201, F, U]),
        row("PUT",    "/v1/{store}/{key}?return=previous",       JSON, put_body, Record, PRIVATE, [200, F, 201, 201, 201, F, U]),
        row("PUT",    "/v1/{store}/{key}?return=previous",       JSON, put_body, Record, SHARED,  [200, F, 201, 200, 201, F, U]),
        row("PUT",    "/v1/{store}/{key}",                       if_none_match, put_body, Record, PRIVATE, [412, F, 201, 201, 201, F, U]),
        row("PUT",    "/v1/{store}/{key}",                       if_none_match, put_body, Record, SHARED,  [412, F, 201, 412, 201, F, U]),
        row("PUT",    "/v1/{store}/{key}",                       if_match_never, put_body, Record, ALL_STORES, [412, F, 412, 412, 412, F, U]),
        row("PUT",    "/v1/{store}/{key}",                       &[("content-type", "text/plain")], put_body, Record, ALL_STORES, [415, F, 415, 415, 415, F, U]),
        row("PUT",    "/v1/{store}/{key}",                       JSON, Some("nope"), Record, ALL_STORES, [400, F, 400, 400, 400, F, U]),
        row("PATCH",  "/v1/{store}/{key}",                       MERGE, Some(r#"{"p": 1}"#), Record, ALL_STORES, [200, F, 200, 200, 200, F, U]),
        row("PATCH",  "/v1/{store}/{key}?return=previous",       MERGE, Some(r#"{"p": 1}"#), Record, ALL_STORES, [200, F, 200, 200, 200, F, U]),
        row("PATCH",  "/v1/{store}/{key}",                       patch_if_match, Some(r#"{"p": 1}"#), Record, PRIVATE, [200, F, 412, 412, 412, F, U]),
        row("PATCH",  "/v1/{store}/{key}",                       patch_if_match, Some(r#"{"p": 1}"#), Record, SHARED,  [200, F, 412, 200, 412, F, U]),
        row("DELETE", "/v1/{store}/{key}",                       NONE, None, Record, ALL_STORES, [204, F, 204, 204, 204, F, U]),
        row("DELETE", "/v1/{store}/{key}?return=previous",       NONE, None, Record, ALL_STORES, [200, F, 200, 200, 200, F, U]),
        row("DELETE", "/v1/{store}/{key}?fields=n",              NONE, None, Record, ALL_STORES, [204, F, 204, 204, 204, F, U]),
        row("DELETE", "/v1/{store}/{key}",                       &[("if-match", "*")], None, Record, PRIVATE, [204, F, 412, 412, 412, F, U]),
        row("DELETE", "/v1/{store}/{key}",                       &[("if-match", "*")], None, Record, SHARED,  [204, F, 412, 204, 412, F, U]),
        row("POST",   "/v1/{store}/{key}",                       JSON, put_body, Record, ALL_STORES, M),
        row("POST",   "/v1/{store}/{key}/extra",                 NONE, None, Record, ALL_STORES, NR),
        // ---- field ops: /v1/{store}/{key}/ops ----
        row("POST",   "/v1/{store}/{key}/ops",                   JSON, increment, Record, ALL_STORES, [200, F, 200, 200, 200, F, U]),
        row("POST",   "/v1/{store}/{key}/ops",                   JSON, Some(r#"{"ops": [{"op": "list_peek", "field": "l", "count": 3}]}"#), Record, ALL_STORES, [200, 200, 200, 200, 200, F, U]),
        row("POST",   "/v1/{store}/{key}/ops",                   JSON, Some(r#"{"ops": [{"op": "set_contains", "field": "s", "members": ["x"]}]}"#), Record, ALL_STORES, [200, 200, 200, 200, 200, F, U]),
        row("POST",   "/v1/{store}/{key}/ops",                   JSON, Some(r#"{"ops": [{"op": "list_pop", "field": "l"}]}"#), Record, ALL_STORES, [200, F, 200, 200, 200, F, U]),
        row("POST",   "/v1/{store}/{key}/ops",                   JSON, increment_string, Record, PRIVATE, [409, F, 200, 200, 200, F, U]),
        row("POST",   "/v1/{store}/{key}/ops",                   JSON, increment_string, Record, SHARED,  [409, F, 200, 409, 200, F, U]),
        // Which scope ops need depends on the body (a read-only request needs only `:read`), so
        // a token with `:read` gets the body's 400 before any 403 (as batches: body first).
        row("POST",   "/v1/{store}/{key}/ops",                   JSON, Some(r#"{"ops": []}"#), Record, ALL_STORES, [400, 400, 400, 400, 400, F, U]),
        row("GET",    "/v1/{store}/{key}/ops",                   NONE, None, Record, ALL_STORES, M),
        // ---- listing: /v1/{store} ----
        row("GET",    "/v1/{store}?prefix={key}",                NONE, None, Record, ALL_STORES, [200, 200, 200, 200, 200, F, U]),
        row("GET",    "/v1/{store}?prefix={key}&limit=1",        NONE, None, Record, ALL_STORES, [200, 200, 200, 200, 200, F, U]),
        row("GET",    "/v1/{store}",                             NONE, None, Fresh, ALL_STORES,  [200, 200, 200, 200, 200, F, U]),
        // The same name in every tenant: each token reads its own (the canary scan checks whose).
        row("GET",    "/v1/{store}/same",                        NONE, None, Fresh, ALL_STORES,  [200, 200, 200, 200, 200, F, U]),
        row("GET",    "/v1/{store}?limit=1001",                  NONE, None, Fresh, ALL_STORES,  [400, 400, 400, 400, 400, F, U]),
        row("GET",    "/v1/{store}?bogus=1",                     NONE, None, Fresh, ALL_STORES,  [400, 400, 400, 400, 400, F, U]),
        row("PUT",    "/v1/{store}",                             JSON, put_body, Fresh, ALL_STORES, M),
        // ---- batch: /v1/batch ----
        row("POST",   "/v1/batch",                               JSON, batch_get, Record, ALL_STORES,     [200, 200, 200, 200, 200, F, U]),
        row("POST",   "/v1/batch",                               JSON, batch_exists, Record, ALL_STORES,  [200, 200, 200, 200, 200, F, U]),
        row("POST",   "/v1/batch",                               JSON, batch_put, Record, ALL_STORES,     [200, F, 200, 200, 200, F, U]),
        row("POST",   "/v1/batch",                               JSON, batch_put_new, Record, PRIVATE,    [412, F, 200, 200, 200, F, U]),
        row("POST",   "/v1/batch",                               JSON, batch_put_new, Record, SHARED,     [412, F, 200, 412, 200, F, U]),
        row("POST",   "/v1/batch",                               JSON, batch_patch, Record, ALL_STORES,   [200, F, 200, 200, 200, F, U]),
        row("POST",   "/v1/batch",                               JSON, batch_delete, Record, ALL_STORES,  [200, F, 200, 200, 200, F, U]),
        row("POST",   "/v1/batch",                               JSON, Some(r#"{"atomic": true}"#), Fresh, NO_STORE, [400, 400, 400, 400, 400, F, U]),
        row("GET",    "/v1/batch",                               NONE, None, Fresh, NO_STORE, M),
        // ---- credentials ----
        row("GET",    "/v1/credentials/{key}",                   NONE, None, CredInst, NO_STORE, [200, 200, 404, 404, 404, F, U]),
        row("GET",    "/v1/credentials/{key}",                   NONE, None, CredAcct, NO_STORE, [200, 200, 200, 404, 404, F, U]),
        row("GET",    "/v1/credentials?prefix={key}",            NONE, None, CredInst, NO_STORE, [200, 200, 200, 200, 200, F, U]),
        row("GET",    "/v1/credentials?prefix={key}",            NONE, None, CredAcct, NO_STORE, [200, 200, 200, 200, 200, F, U]),
        row("GET",    "/v1/credentials",                         NONE, None, Fresh, NO_STORE,    [200, 200, 200, 200, 200, F, U]),
        row("GET",    "/v1/credentials/same",                    NONE, None, Fresh, NO_STORE,    [200, 200, 200, 200, 200, F, U]),
        row("GET",    "/v1/credentials?bogus=1",                 NONE, None, Fresh, NO_STORE,    [400, 400, 400, 400, 400, F, U]),
        row("PUT",    "/v1/credentials/{key}",                   JSON, cred_body, CredInst, NO_STORE,      [200, F, 201, 201, 201, F, U]),
        // Only the app that stored an account credential may replace it (403); storing under a
        // key the other owner holds is 409.
        row("PUT",    "/v1/credentials/{key}",                   JSON, cred_body, CredAcct, NO_STORE,      [200, F, 403, 201, 201, F, U]),
        row("PUT",    "/v1/credentials/{key}",                   JSON, cred_body_inst, CredAcct, NO_STORE, [409, F, 409, 201, 201, F, U]),
        row("DELETE", "/v1/credentials/{key}",                   NONE, None, CredInst, NO_STORE, [204, F, 204, 204, 204, F, U]),
        row("DELETE", "/v1/credentials/{key}",                   NONE, None, CredAcct, NO_STORE, [204, F, 403, 204, 204, F, U]),
        row("POST",   "/v1/credentials/{key}/request",           JSON, proxy, CredInst, NO_STORE, [200, F, 404, 404, 404, F, U]),
        row("POST",   "/v1/credentials/{key}/request",           JSON, proxy, CredAcct, NO_STORE, [200, F, 200, 404, 404, F, U]),
        row("PATCH",  "/v1/credentials/{key}",                   MERGE, Some("{}"), CredInst, NO_STORE, M),
        row("GET",    "/v1/credentials/{key}/request",           NONE, None, CredInst, NO_STORE, M),
        row("DELETE", "/v1/credentials",                         NONE, None, Fresh, NO_STORE, M),
        // ---- OAuth ----
        row("POST",   "/v1/oauth/flows",                         JSON, Some(r#"{"provider": "up", "store_as": {"key": "{key}"}}"#), Fresh, NO_STORE, [201, F, 201, 201, 201, F, U]),
        row("GET",    "/v1/oauth/flows/{flow}",                  NONE, None, Flow, NO_STORE, [200, F, 404, 404, 404, F, U]),
        row("POST",   "/v1/oauth/flows/{flow}/complete",         NONE, None, Flow, NO_STORE, [409, F, 404, 404, 404, F, U]),
        row("DELETE", "/v1/oauth/flows/{flow}",                  NONE, None, Flow, NO_STORE, M),
        row("GET",    "/v1/oauth/flows",                         NONE, None, Fresh, NO_STORE, M),
        // The callback needs no token: the same 400 HTML page for everyone.
        row("GET",    "/v1/oauth/callback?state=bogus-{key}&code=x", NONE, None, Fresh, NO_STORE, [400; 7]),
        row("POST",   "/v1/oauth/callback",                      NONE, None, Fresh, NO_STORE, M),
        // ---- administration (0: a destructive admin call, run once at the end) ----
        row("GET",    "/v1/admin/apps",                          NONE, None, Fresh, NO_STORE, [F, F, F, F, F, 200, U]),
        row("GET",    "/v1/admin/apps/app1",                     NONE, None, Fresh, NO_STORE, [F, F, F, F, F, 200, U]),
        row("PUT",    "/v1/admin/apps/new-{key}",                JSON, Some(r#"{"scopes": ["kv:read"]}"#), Fresh, NO_STORE, [F, F, F, F, F, 201, U]),
        row("DELETE", "/v1/admin/apps/app1",                     NONE, None, Fresh, NO_STORE, [F, F, F, F, F, 0, U]),
        row("POST",   "/v1/admin/apps",                          JSON, Some("{}"), Fresh, NO_STORE, M),
        row("PATCH",  "/v1/admin/apps/app1",                     MERGE, Some("{}"), Fresh, NO_STORE, M),
        row("GET",    "/v1/admin/accounts",                      NONE, None, Fresh, NO_STORE, [F, F, F, F, F, 200, U]),
        row("GET",    "/v1/admin/accounts/acct1",                NONE, None, Fresh, NO_STORE, [F, F, F, F, F, 200, U]),
        row("PUT",    "/v1/admin/accounts/new-{key}",            NONE, None, Fresh, NO_STORE, [F, F, F, F, F, 201, U]),
        row("DELETE", "/v1/admin/accounts/acct1",                NONE, None, Fresh, NO_STORE, [F, F, F, F, F, 0, U]),
        row("POST",   "/v1/admin/accounts/acct1",                NONE, None, Fresh, NO_STORE, M),
        row("GET",    "/v1/admin/installations",                 NONE, None, Fresh, NO_STORE, [F, F, F, F, F, 200, U]),
        row("GET",    "/v1/admin/installations/inst-a",          NONE, None, Fresh, NO_STORE, [F, F, F, F, F, 200, U]),
        row("PUT",    "/v1/admin/installations/inst-a",          JSON, Some(r#"{"app_id": "app1", "account_id": "acct1"}"#), Fresh, NO_STORE, [F, F, F, F, F, 200, U]),
        row("DELETE", "/v1/admin/installations/inst-a",          NONE, None, Fresh, NO_STORE, [F, F, F, F, F, 0, U]),
        row("POST",   "/v1/admin/installations",                 JSON, Some("{}"), Fresh, NO_STORE, M),
        row("POST",   "/v1/admin/installations/inst-a/tokens",   JSON, Some(r#"{"scopes": ["kv:read"]}"#), Fresh, NO_STORE, [F, F, F, F, F, 201, U]),
        row("GET",    "/v1/admin/installations/inst-a/tokens",   NONE, None, Fresh, NO_STORE, M),
        // Installation key rotation: re-seals all of A's data under a new key, mid-matrix, so every
        // later cell reads A through the new key.
        row("POST",   "/v1/admin/installations/inst-a/rotate-key", JSON, Some("{}"), Fresh, NO_STORE, [F, F, F, F, F, 200, U]),
        row("POST",   "/v1/admin/installations/nobody/rotate-key", NONE, None, Fresh, NO_STORE, [F, F, F, F, F, 404, U]),
        row("GET",    "/v1/admin/installations/inst-a/rotate-key", NONE, None, Fresh, NO_STORE, M),
        row("DELETE", "/v1/admin/tokens/{spare}",                NONE, None, Fresh, NO_STORE, [F, F, F, F, F, 204, U]),
        row("GET",    "/v1/admin/tokens/{spare}",                NONE, None, Fresh, NO_STORE, M),
        row("GET",    "/v1/admin/audit?installation_id=inst-a&limit=5", NONE, None, Fresh, NO_STORE, [F, F, F, F, F, 200, U]),
        row("GET",    "/v1/admin/audit?bogus=1",                 NONE, None, Fresh, NO_STORE, [F, F, F, F, F, 400, U]),
        row("DELETE", "/v1/admin/audit",                         NONE, None, Fresh, NO_STORE, M),
        // Root key rotation: the key file has one version, so a rotation re-activates it.
        row("GET",    "/v1/admin/keys",                          NONE, None, Fresh, NO_STORE, [F, F, F, F, F, 200, U]),
        row("POST",   "/v1/admin/keys/rotate",                   JSON, Some("{}"), Fresh, NO_STORE, [F, F, F, F, F, 202, U]),
        row("DELETE", "/v1/admin/keys",                          NONE, None, Fresh, NO_STORE, M),
        row("GET",    "/v1/admin/status",                        NONE, None, Fresh, NO_STORE, [F, F, F, F, F, 200, U]),
        row("GET",    "/v1/admin/providers",                     NONE, None, Fresh, NO_STORE, [F, F, F, F, F, 200, U]),
        row("GET",    "/v1/admin/providers/up",                  NONE, None, Fresh, NO_STORE, [F, F, F, F, F, 200, U]),
        row("PUT",    "/v1/admin/providers/new-{key}",           JSON, Some(r#"{"base_url": "https://p.example.com/", "inject": {"type": "bearer"}}"#), Fresh, NO_STORE, [F, F, F, F, F, 201, U]),
        row("DELETE", "/v1/admin/providers/up",                  NONE, None, Fresh, NO_STORE, [F, F, F, F, F, 0, U]),
        row("POST",   "/v1/admin/providers",                     JSON, Some("{}"), Fresh, NO_STORE, M),
        // ---- operations (no token needed) and unknown routes ----
        row("GET",    "/healthz",                                NONE, None, Fresh, NO_STORE, [200; 7]),
        row("GET",    "/readyz",                                 NONE, None, Fresh, NO_STORE, [200; 7]),
        row("GET",    "/metrics",                                NONE, None, Fresh, NO_STORE, [200; 7]),
        row("GET",    "/openapi.json",                           NONE, None, Fresh, NO_STORE, [200; 7]),
        row("POST",   "/healthz",                                NONE, None, Fresh, NO_STORE, M),
        row("GET",    "/v1/nope",                                NONE, None, Fresh, NO_STORE, NR),
        row("GET",    "/v1/nope/{key}",                          NONE, None, Fresh, NO_STORE, NR),
        row("GET",    "/v2/secrets/{key}",                       NONE, None, Fresh, NO_STORE, NR),
    ]
}

/// A key variant: the raw path segment sent, and what the contract makes of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    /// Decodes to the planted key named here: A's record for whoever may see it, else 404.
    Same(&'static str),
    /// A valid key of its own that nobody planted: 404, never someone else's record.
    Distinct,
    /// An invalid key: 400 `invalid_request` (after authentication and scope).
    Invalid,
    /// Over 500 bytes: 413 `payload_too_large` (after authentication and scope).
    TooLong,
    /// Not one path segment: no route, 404 before authentication.
    NoRoute,
}

struct Variant {
    name: &'static str,
    segment: String,
    class: Class,
}

/// The keys planted in A's stores (and A's installation credentials) for the variants.
fn variant_plants() -> Vec<String> {
    vec![
        "pa".into(),
        "a/b".into(),
        "caf\u{e9}".into(),
        "%2e%2e".into(),
        "k".repeat(500),
        "\u{e9}".repeat(250),
    ]
}

fn variants() -> Vec<Variant> {
    use Class::*;
    let v = |name: &'static str, segment: &str, class| Variant {
        name,
        segment: segment.to_owned(),
        class,
    };
    vec![
        v("plain", "pa", Same("pa")),
        v("all-encoded", "%70%61", Same("pa")),
        v("cyrillic a", "p%D0%B0", Distinct),
        v("full-width", "%EF%BD%90%EF%BD%81", Distinct),
        v("upper case", "PA", Distinct),
        v("trailing space", "pa%20", Distinct),
        v("NFC", "caf%C3%A9", Same("caf\u{e9}")),
        v("NFD of the NFC key", "cafe%CC%81", Distinct),
        v("encoded slash", "a%2Fb", Same("a/b")),
        v("encoded slash lower", "a%2fb", Same("a/b")),
        v("raw slash", "a/b", NoRoute),
        v("dot", ".", Invalid),
        v("dot-dot", "..", Invalid),
        v("encoded dot", "%2e", Invalid),
        v("encoded dot-dot", "%2E%2e", Invalid),
        v("half-encoded dot-dot", ".%2e", Invalid),
        v("double-encoded dot-dot", "%252e%252e", Same("%2e%2e")),
        v("encoded traversal", "%2e%2e%2Fpa", Distinct),
        v("dot-dot then encoded slash", "..%2Fpb", Distinct),
        v("raw traversal", "x/../pa", NoRoute),
        v("raw traversal to other store", "../kv/pa", NoRoute),
        v("overlong UTF-8 dot-dot", "%C0%AE%C0%AE", Invalid),
        v("invalid UTF-8", "%FF", Invalid),
        v("NUL", "%00", Invalid),
        v("newline", "a%0Ab", Invalid),
        v("DEL", "%7F", Invalid),
        v("empty", "", Invalid),
        Variant {
            name: "500 bytes",
            segment: "k".repeat(500),
            class: Same("k500"),
        },
        Variant {
            name: "501 bytes",
            segment: "k".repeat(501),
            class: TooLong,
        },
        Variant {
            name: "500 bytes of 2-byte chars",
            segment: "%C3%A9".repeat(250),
            class: Same("e250"),
        },
        Variant {
            name: "501 bytes of 3-byte chars",
            segment: "%E2%82%AC".repeat(167),
            class: TooLong,
        },
        Variant {
            name: "10,000 bytes",
            segment: "k".repeat(10_000),
            class: TooLong,
        },
    ]
}

/// The status a variant cell expects: no route first, then authentication (401), kind of token
/// (403), scope (403), then key validation (400/413), then the operation.
fn variant_expect(class: Class, method: &str, store: &str, kind: Kind) -> u16 {
    if class == Class::NoRoute {
        return 404;
    }
    if kind.unauthenticated() {
        return 401;
    }
    if kind == Kind::Admin {
        return 403;
    }
    // Field ops may be a read (`list_peek`, `set_contains`): a token with `{store}:read` passes
    // the check before the key is validated, and the body decides the rest.
    let write = !matches!(method, "GET" | "HEAD" | "OPS");
    if write && kind == Kind::ReadOnly {
        return 403;
    }
    let target = if store == "credentials" {
        Target::CredInst
    } else {
        Target::Record
    };
    match class {
        Class::Invalid => 400,
        Class::TooLong => 413,
        Class::Distinct => 404,
        Class::Same(_) if kind.sees(target, store) => 200,
        Class::Same(_) => 404,
        Class::NoRoute => unreachable!(),
    }
}

// ---------------------------------------------------------------------------------------------
// Raw HTTP
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    text: String,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn code(&self) -> Option<String> {
        serde_json::from_str::<Value>(&self.text)
            .ok()
            .and_then(|v| v["error"]["code"].as_str().map(str::to_owned))
    }
}

#[derive(Debug, Clone)]
struct Req {
    method: String,
    target: String,
    token: Option<String>,
    headers: Vec<(String, String)>,
    body: Option<String>,
    request_id: String,
}

/// Sends `req` byte for byte on a fresh connection and reads the whole answer.
async fn send(addr: &str, req: &Req) -> Result<Resp, String> {
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let mut head = format!(
        "{} {} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nX-Request-Id: {}\r\n",
        req.method, req.target, req.request_id
    );
    if let Some(t) = &req.token {
        head.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    for (k, v) in &req.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    let body = req.body.clone().unwrap_or_default();
    head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    head.push_str(&body);
    stream
        .write_all(head.as_bytes())
        .await
        .map_err(|e| format!("write: {e}"))?;
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut out))
        .await
        .map_err(|_| "read: timeout".to_owned())?
        .map_err(|e| format!("read: {e}"))?;
    parse_response(&out)
}

fn parse_response(raw: &[u8]) -> Result<Resp, String> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| format!("no header end in {:?}", String::from_utf8_lossy(raw)))?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut body = raw[split + 4..].to_vec();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no status in {head}"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    if headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"))
    {
        body = dechunk(&body)?;
    }
    Ok(Resp {
        status,
        headers,
        text: String::from_utf8_lossy(&body).into_owned(),
    })
}

fn dechunk(mut b: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let nl = b.windows(2).position(|w| w == b"\r\n").ok_or("bad chunk")?;
        let size_text = String::from_utf8_lossy(&b[..nl]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|e| format!("chunk size: {e}"))?;
        b = &b[nl + 2..];
        if size == 0 {
            return Ok(out);
        }
        if b.len() < size + 2 {
            return Err("short chunk".into());
        }
        out.extend_from_slice(&b[..size]);
        b = &b[size + 2..];
    }
}

fn error_code_of(status: u16) -> Option<&'static str> {
    Some(match status {
        400 => "invalid_request",
        401 => "unauthenticated",
        403 => "forbidden",
        404 => "not_found",
        405 => "method_not_allowed",
        409 => "conflict",
        410 => "gone",
        412 => "precondition_failed",
        413 => "payload_too_large",
        415 => "unsupported_media_type",
        _ => return None,
    })
}

// ---------------------------------------------------------------------------------------------
// Cells
// ---------------------------------------------------------------------------------------------

struct Cell {
    label: String,
    kind: Kind,
    req: Req,
    expect: u16,
    /// The same request about a key nobody has, and the strings to mask in both answers.
    twin: Option<(Req, Vec<String>)>,
    /// No JSON error body to check (HEAD, the callback's HTML page).
    no_error_body: bool,
}

struct Outcome {
    mismatches: Vec<String>,
}

impl Outcome {
    fn add(&mut self, label: &str, what: String) {
        self.mismatches.push(format!("{label}: {what}"));
    }
}

/// Checks one answer against its cell: status, code, contract headers, canaries.
fn check_answer(cell: &Cell, r: &Resp, out: &mut Outcome) {
    if r.status != cell.expect {
        let body: String = r.text.chars().take(200).collect();
        out.add(
            &cell.label,
            format!("status {} (expected {}): {body}", r.status, cell.expect),
        );
        return;
    }
    if let Some(code) = error_code_of(cell.expect)
        && !cell.no_error_body
        && r.code().as_deref() != Some(code)
    {
        out.add(
            &cell.label,
            format!("code {:?} (expected {code})", r.code()),
        );
    }
    if r.header("x-request-id") != Some(cell.req.request_id.as_str()) {
        out.add(&cell.label, "X-Request-Id not kept".into());
    }
    if r.status == 401
        && r.header("www-authenticate")
            .is_none_or(|v| !v.starts_with("Bearer"))
    {
        out.add(&cell.label, "401 without WWW-Authenticate: Bearer".into());
    }
    if r.status == 405 && r.header("allow").is_none() {
        out.add(&cell.label, "405 without Allow".into());
    }
    if cell.req.target.starts_with("/v1/") && r.header("cache-control") != Some("no-store") {
        out.add(&cell.label, "no Cache-Control: no-store".into());
    }
    scan_canaries(&cell.label, cell.kind, r, out);
}

fn scan_canaries(label: &str, kind: Kind, r: &Resp, out: &mut Outcome) {
    let allowed = kind.allowed_canaries();
    let mut all = r.text.clone();
    for (k, v) in &r.headers {
        all.push_str(&format!("\n{k}: {v}"));
    }
    for c in ALL_CANARIES {
        if !allowed.contains(&c) && all.contains(c) {
            out.add(label, format!("answer carries the canary {c} to {kind:?}"));
        }
    }
}

/// An answer reduced to what must not depend on whether A's key exists.
fn normalized(r: &Resp, masks: &[String]) -> String {
    let mut text = r.text.clone();
    for m in masks {
        text = text.replace(m.as_str(), "<KEY>");
    }
    let mut masked_fields = false;
    let body = match serde_json::from_str::<Value>(&text) {
        Ok(mut v) => {
            mask(&mut v, &mut masked_fields);
            v.to_string()
        }
        Err(_) => text,
    };
    let mut headers: Vec<String> = r
        .headers
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "date" | "x-request-id" | "connection"))
        .filter(|(k, _)| !(masked_fields && k == "content-length"))
        .map(|(k, v)| {
            if k == "etag" {
                format!("{k}: <etag>")
            } else {
                format!("{k}: {v}")
            }
        })
        .collect();
    headers.sort();
    format!("{} {headers:?} {body}", r.status)
}

/// Masks what differs between two records created by the same request on two fresh keys.
fn mask(v: &mut Value, masked: &mut bool) {
    match v {
        Value::Object(m) => {
            for (k, x) in m.iter_mut() {
                if matches!(
                    k.as_str(),
                    "version" | "created_at" | "updated_at" | "expires_at"
                ) && !x.is_null()
                {
                    *x = Value::String("<masked>".into());
                    *masked = true;
                } else if k == "request_id" {
                    *x = Value::String("<rid>".into());
                } else {
                    mask(x, masked);
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|x| mask(x, masked)),
        _ => {}
    }
}

/// An answer, or why there was none.
type Sent = Result<Resp, String>;

/// Runs every cell, `CONCURRENCY` at a time, and collects what did not hold.
async fn run_cells(addr: &str, cells: Vec<Cell>, out: &mut Outcome) -> usize {
    let count = cells.len();
    let results: Vec<(Cell, Sent, Option<Sent>)> = futures::stream::iter(cells)
        .map(|cell| async move {
            let r = send(addr, &cell.req).await;
            let t = match &cell.twin {
                Some((twin, _)) => Some(send(addr, twin).await),
                None => None,
            };
            (cell, r, t)
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    for (cell, r, twin) in results {
        let r = match r {
            Ok(r) => r,
            Err(e) => {
                out.add(&cell.label, e);
                continue;
            }
        };
        check_answer(&cell, &r, out);
        if let (Some((_, masks)), Some(t)) = (&cell.twin, twin) {
            match t {
                Ok(t) => {
                    scan_canaries(&format!("{} (twin)", cell.label), cell.kind, &t, out);
                    let (a, b) = (normalized(&r, masks), normalized(&t, masks));
                    if a != b {
                        out.add(
                            &cell.label,
                            format!("existence leak: A's key answers\n    {a}\n  a key nobody has answers\n    {b}"),
                        );
                    }
                }
                Err(e) => out.add(&cell.label, format!("twin: {e}")),
            }
        }
    }
    count
}

// ---------------------------------------------------------------------------------------------
// Setup
// ---------------------------------------------------------------------------------------------

struct World {
    s: TestServer,
    _up: TestProvider,
    tokens: BTreeMap<Kind, Option<String>>,
    flow_id: String,
    spare_token_id: String,
}

fn a_value(store: &str, n: usize) -> Value {
    let canary = if store == "shared" {
        CANARY_SHARED_APP1
    } else {
        CANARY_INST_A
    };
    json!({"canary": format!("{canary}-{n}"), "n": 1, "l": [1, 2, 3], "s": ["x"]})
}

async fn admin_ok(s: &TestServer, method: &str, path: &str, body: Option<&Value>) -> Value {
    let r = s.admin(method, path, body).await;
    assert!(
        (200..300).contains(&r.status),
        "{method} {path}: {} {}",
        r.status,
        r.text
    );
    r.body
}

async fn tenant_ok(s: &TestServer, t: &str, method: &str, path: &str, body: &Value) -> Value {
    let r = s.call(method, path, Some(t), Some(body)).await;
    assert!(
        (200..300).contains(&r.status),
        "{method} {path}: {} {}",
        r.status,
        r.text
    );
    r.body
}

async fn setup() -> World {
    let s = TestServer::start(bin()).await;
    let up = TestProvider::start(ProviderConfig::default()).await;
    let c = up.config().clone();
    admin_ok(
        &s,
        "PUT",
        "/v1/admin/providers/up",
        Some(&json!({
            "base_url": up.api_base(),
            "allow_private_network": true,
            "inject": {"type": "bearer"},
            "oauth2": {
                "grant": "authorization_code",
                "authorize_url": up.authorize_url(),
                "token_url": up.token_url(),
                "client_id": c.client_id,
                "client_secret": c.client_secret,
                "scopes": ["read"],
            }
        })),
    )
    .await;

    // The expired token first, so that its two seconds run during the rest of the setup.
    let own = s.install("app1", &ALL_SCOPES, "acct1", "inst-a").await;
    let body = admin_ok(
        &s,
        "POST",
        "/v1/admin/installations/inst-a/tokens",
        Some(&json!({"ttl_seconds": 2})),
    )
    .await;
    let expired = body["token"].as_str().unwrap().to_owned();
    let expiry = Instant::now() + Duration::from_millis(2300);
    let r = s.call("GET", "/v1/kv/x", Some(&expired), None).await;
    assert_eq!(r.status, 404, "the short-lived token works at first: {r:?}");

    let c_tok = s.install("app2", &ALL_SCOPES, "acct1", "inst-c").await;
    let b_tok = s.install("app1", &ALL_SCOPES, "acct2", "inst-b").await;
    let d_tok = s.install("app2", &ALL_SCOPES, "acct2", "inst-d").await;
    let body = admin_ok(
        &s,
        "POST",
        "/v1/admin/installations/inst-a/tokens",
        Some(&json!({"scopes": READ_SCOPES})),
    )
    .await;
    let ro = body["token"].as_str().unwrap().to_owned();
    let body = admin_ok(&s, "POST", "/v1/admin/installations/inst-a/tokens", None).await;
    let revoked = body["token"].as_str().unwrap().to_owned();
    let revoked_id = body["token_id"].as_str().unwrap().to_owned();
    let body = admin_ok(&s, "POST", "/v1/admin/installations/inst-a/tokens", None).await;
    let spare_token_id = body["token_id"].as_str().unwrap().to_owned();
    let gone = s.install("app3", &ALL_SCOPES, "acct1", "inst-gone").await;
    for t in [&revoked, &gone] {
        let r = s.call("GET", "/v1/kv/x", Some(t), None).await;
        assert_eq!(r.status, 404, "the token works before: {r:?}");
    }
    admin_ok(
        &s,
        "DELETE",
        &format!("/v1/admin/tokens/{revoked_id}"),
        None,
    )
    .await;
    admin_ok(&s, "DELETE", "/v1/admin/installations/inst-gone", None).await;

    // Every other tenant keeps a record and a credential of its own under the name `same`.
    for (t, canary, meta) in [
        (&b_tok, CANARY_INST_B, CANARY_META_INST_B),
        (&c_tok, CANARY_INST_C, CANARY_META_INST_C),
        (&d_tok, CANARY_INST_D, CANARY_META_INST_D),
    ] {
        for store in PRIVATE {
            let v = json!({"value": {"canary": canary}});
            tenant_ok(&s, t, "PUT", &format!("/v1/{store}/same"), &v).await;
        }
        let v = json!({"provider": "up", "secret": {"access_token": format!("{CANARY_SECRET}-other")},
                       "metadata": {"m": meta}});
        tenant_ok(&s, t, "PUT", "/v1/credentials/same", &v).await;
    }
    let v = json!({"value": {"canary": CANARY_SHARED_APP2}});
    tenant_ok(&s, &c_tok, "PUT", "/v1/shared/same", &v).await;
    let v = json!({"provider": "up", "secret": {"access_token": format!("{CANARY_SECRET}-a")},
                   "metadata": {"m": CANARY_META_INST_A}});
    tenant_ok(&s, &own, "PUT", "/v1/credentials/same", &v).await;
    for store in ALL_STORES {
        tenant_ok(
            &s,
            &own,
            "PUT",
            &format!("/v1/{store}/same"),
            &json!({"value": a_value(store, 0)}),
        )
        .await;
    }

    let body = tenant_ok(
        &s,
        &own,
        "POST",
        "/v1/oauth/flows",
        &json!({"provider": "up", "store_as": {"key": "flow-cred"}}),
    )
    .await;
    let flow_id = body["flow_id"].as_str().unwrap().to_owned();

    let mut bad_prefix = own.clone();
    bad_prefix.replace_range(0..4, "tsx_");
    let mut bad_mac = own.clone();
    let last = bad_mac.pop().unwrap();
    bad_mac.push(if last == 'A' { 'B' } else { 'A' });
    let truncated = own[..own.len() - 6].to_owned();

    let tokens = BTreeMap::from([
        (Kind::Own, Some(own)),
        (Kind::ReadOnly, Some(ro)),
        (Kind::SameAccountOtherApp, Some(c_tok)),
        (Kind::OtherAccountSameApp, Some(b_tok)),
        (Kind::OtherAccountOtherApp, Some(d_tok)),
        (Kind::Admin, Some(s.admin_token.clone())),
        (Kind::Revoked, Some(revoked)),
        (Kind::Expired, Some(expired)),
        (Kind::Uninstalled, Some(gone)),
        (Kind::BadPrefix, Some(bad_prefix)),
        (Kind::BadMac, Some(bad_mac)),
        (Kind::Truncated, Some(truncated)),
        (Kind::NoToken, None),
    ]);
    tokio::time::sleep_until(expiry.into()).await;
    World {
        s,
        _up: up,
        tokens,
        flow_id,
        spare_token_id,
    }
}

/// Plants A's records (by batches) and returns their versions, by (store, key).
async fn plant_records(
    w: &World,
    plants: &[(String, String, Value)],
) -> BTreeMap<(String, String), u64> {
    let own = w.tokens[&Kind::Own].clone().unwrap();
    let mut versions = BTreeMap::new();
    for chunk in plants.chunks(100) {
        let ops: Vec<Value> = chunk
            .iter()
            .map(|(store, key, value)| {
                json!({"op": "put", "store": store, "key": key, "value": value})
            })
            .collect();
        let body = tenant_ok(
            &w.s,
            &own,
            "POST",
            "/v1/batch",
            &json!({"atomic": true, "ops": ops}),
        )
        .await;
        for ((store, key, _), res) in chunk.iter().zip(body["results"].as_array().unwrap()) {
            let v = res["record"]["version"]
                .as_u64()
                .unwrap_or_else(|| panic!("plant {store}/{key}: {res}"));
            versions.insert((store.clone(), key.clone()), v);
        }
    }
    versions
}

/// Plants A's credentials, `CONCURRENCY` at a time, and returns their versions by key.
async fn plant_credentials(w: &World, plants: &[(String, &'static str)]) -> BTreeMap<String, u64> {
    let own = w.tokens[&Kind::Own].clone().unwrap();
    let s = &w.s;
    let own = &own;
    futures::stream::iter(plants)
        .map(|(key, owner)| async move {
            let meta = if *owner == "account" {
                CANARY_META_ACCT1
            } else {
                CANARY_META_INST_A
            };
            let body = json!({"owner": owner, "provider": "up",
                "secret": {"access_token": format!("{CANARY_SECRET}-{key}")},
                "metadata": {"m": meta}});
            let path = format!("/v1/credentials/{}", encode(key));
            let r = tenant_ok(s, own, "PUT", &path, &body).await;
            (key.clone(), r["version"].as_u64().unwrap())
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await
}

fn encode(k: &str) -> String {
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

fn fill(t: &str, store: &str, key: &str, owner: &str, flow: &str, spare: &str) -> String {
    t.replace("{store}", store)
        .replace("{key}", key)
        .replace("{owner}", owner)
        .replace("{flow}", flow)
        .replace("{spare}", spare)
}

/// A flow id of the same shape as `id` that nobody has.
fn other_flow_id(id: &str) -> String {
    let (head, tail) = id.split_at(id.len() - 4);
    let tail: String = tail
        .chars()
        .map(|c| if c == '0' { '1' } else { '0' })
        .collect();
    format!("{head}{tail}")
}

// ---------------------------------------------------------------------------------------------
// The test
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolation_matrix() {
    let started = Instant::now();
    let w = setup().await;
    let setup_time = started.elapsed();
    let addr = w.s.addr.clone();
    let rid = AtomicUsize::new(0);
    let next_rid = || rid.fetch_add(1, Ordering::Relaxed);
    let req = |kind: Kind,
               method: &str,
               target: String,
               headers: &[(&str, &str)],
               body: Option<String>,
               n: usize,
               twin: bool| Req {
        method: method.to_owned(),
        target,
        token: w.tokens[&kind].clone(),
        headers: headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        body,
        request_id: format!("iso-{n:06}-{}", if twin { 'z' } else { 'c' }),
    };

    // ---- the endpoint matrix ----
    let rows = rows();
    let mut cells = Vec::new();
    let mut record_plants = Vec::new();
    let mut cred_plants = Vec::new();
    // (store or "credentials", key) of A that the cell's token may not change.
    let mut must_keep: Vec<(String, String, String)> = Vec::new();
    let mut admin_deletes = 0;
    for (ri, r) in rows.iter().enumerate() {
        for store in r.stores {
            for kind in KINDS {
                let expect = r.expect[kind.column()];
                if expect == 0 {
                    // A destructive admin call whose success would empty the world under the
                    // other cells: only the refusals run here, the call itself is elsewhere.
                    admin_deletes += 1;
                    continue;
                }
                let n = next_rid();
                let key = format!("c{n:05}");
                let twin_key = format!("z{n:05}");
                let owner = if r.target == Target::CredAcct {
                    "account"
                } else {
                    "installation"
                };
                match r.target {
                    Target::Record => {
                        record_plants.push((store.to_string(), key.clone(), a_value(store, n)));
                        if !kind.may_change(r.target, store) {
                            must_keep.push((
                                store.to_string(),
                                key.clone(),
                                cell_label(ri, r, store, kind),
                            ));
                        }
                    }
                    Target::CredInst | Target::CredAcct => {
                        cred_plants.push((key.clone(), owner));
                        if !kind.may_change(r.target, store) {
                            must_keep.push((
                                "credentials".into(),
                                key.clone(),
                                cell_label(ri, r, store, kind),
                            ));
                        }
                    }
                    _ => {}
                }
                let (flow, twin_flow) = (w.flow_id.clone(), other_flow_id(&w.flow_id));
                let f =
                    |t: &str, k: &str, fl: &str| fill(t, store, k, owner, fl, &w.spare_token_id);
                let target = f(r.path, &key, &flow);
                let body = r.body.map(|b| f(b, &key, &flow));
                let has_twin = r.target != Target::Fresh && !kind.sees(r.target, store);
                let twin = has_twin.then(|| {
                    let t = req(
                        kind,
                        r.method,
                        f(r.path, &twin_key, &twin_flow),
                        r.headers,
                        r.body.map(|b| f(b, &twin_key, &twin_flow)),
                        n,
                        true,
                    );
                    let masks = vec![
                        key.clone(),
                        twin_key.clone(),
                        flow.clone(),
                        twin_flow.clone(),
                    ];
                    (t, masks)
                });
                cells.push(Cell {
                    label: cell_label(ri, r, store, kind),
                    kind,
                    req: req(kind, r.method, target, r.headers, body, n, false),
                    expect,
                    twin,
                    no_error_body: r.method == "HEAD" || r.path.starts_with("/v1/oauth/callback"),
                });
            }
        }
    }

    // ---- the key variants ----
    let mut variant_record_plants = Vec::new();
    let mut variant_cred_plants = Vec::new();
    for key in variant_plants() {
        for store in ALL_STORES {
            variant_record_plants.push((store.to_string(), key.clone(), a_value(store, 0)));
        }
        variant_cred_plants.push((key, "installation"));
    }
    let variants = variants();
    let mut variant_cells = 0;
    for v in &variants {
        for store in ["secrets", "settings", "kv", "shared", "credentials"] {
            let mut methods = vec![("GET", "/v1/{store}/{v}", NONE, None)];
            if store != "credentials" {
                methods.push(("HEAD", "/v1/{store}/{v}", NONE, None));
            }
            if !matches!(v.class, Class::Same(_) | Class::Distinct) {
                // Writes only where nothing may be written, so that the cells stay independent.
                if store == "credentials" {
                    methods.push((
                        "PUT",
                        "/v1/{store}/{v}",
                        JSON,
                        Some(r#"{"provider": "up", "secret": {"access_token": "t"}}"#),
                    ));
                    methods.push(("DELETE", "/v1/{store}/{v}", NONE, None));
                    if !v.segment.is_empty() {
                        methods.push((
                            "POST",
                            "/v1/{store}/{v}/request",
                            JSON,
                            Some(r#"{"method": "GET", "path": "/"}"#),
                        ));
                    }
                } else {
                    methods.push(("PUT", "/v1/{store}/{v}", JSON, Some(r#"{"value": 1}"#)));
                    methods.push(("PATCH", "/v1/{store}/{v}", MERGE, Some(r#"{"a": 1}"#)));
                    methods.push(("DELETE", "/v1/{store}/{v}", NONE, None));
                    if !v.segment.is_empty() {
                        methods.push((
                            "POST",
                            "/v1/{store}/{v}/ops",
                            JSON,
                            Some(r#"{"ops": [{"op": "increment", "field": "n"}]}"#),
                        ));
                    }
                }
            }
            for (method, path, headers, body) in methods {
                for kind in VARIANT_KINDS {
                    let as_method = match method {
                        "GET" | "HEAD" => method,
                        "POST" if path.ends_with("/ops") => "OPS",
                        _ => "PUT",
                    };
                    let expect = variant_expect(v.class, as_method, store, kind);
                    let n = next_rid();
                    let target = path.replace("{store}", store).replace("{v}", &v.segment);
                    cells.push(Cell {
                        label: format!(
                            "variant {:?} ({}) {method} {} {kind:?}",
                            v.name,
                            v.class_name(),
                            path.replace("{store}", store)
                        ),
                        kind,
                        req: req(
                            kind,
                            method,
                            target,
                            headers,
                            body.map(str::to_owned),
                            n,
                            false,
                        ),
                        expect,
                        twin: None,
                        no_error_body: method == "HEAD",
                    });
                    variant_cells += 1;
                }
            }
        }
    }

    let mut out = Outcome {
        mismatches: Vec::new(),
    };
    record_plants.extend(variant_record_plants);
    cred_plants.extend(variant_cred_plants.iter().map(|(k, o)| (k.clone(), *o)));
    let t_plant = Instant::now();
    let versions = plant_records(&w, &record_plants).await;
    let cred_versions = plant_credentials(&w, &cred_plants).await;
    let plant_time = t_plant.elapsed();
    let matrix_cells = cells.len() - variant_cells;
    let twins = cells.iter().filter(|c| c.twin.is_some()).count();
    let t_run = Instant::now();
    let total = run_cells(&addr, cells, &mut out).await;
    let run_time = t_run.elapsed();

    // ---- look-alike writes: each is a key of its own ----
    let own = w.tokens[&Kind::Own].clone();
    let mut lookalike_cells = Vec::new();
    for v in variants.iter().filter(|v| v.class == Class::Distinct) {
        for store in ALL_STORES {
            let n = next_rid();
            lookalike_cells.push(Cell {
                label: format!("look-alike write {:?} PUT /v1/{store}", v.name),
                kind: Kind::Own,
                req: Req {
                    method: "PUT".into(),
                    target: format!("/v1/{store}/{}", v.segment),
                    token: own.clone(),
                    headers: vec![("content-type".into(), "application/json".into())],
                    body: Some(r#"{"value": "look-alike"}"#.into()),
                    request_id: format!("iso-{n:06}-c"),
                },
                expect: 201,
                twin: None,
                no_error_body: false,
            });
        }
    }
    let total = total + run_cells(&addr, lookalike_cells, &mut out).await;

    // ---- integrity: A's records that no cell had the right to change are as planted ----
    let mut keep: Vec<(String, String, String, u64)> = must_keep
        .into_iter()
        .map(|(store, key, label)| {
            let v = if store == "credentials" {
                cred_versions[&key]
            } else {
                versions[&(store.clone(), key.clone())]
            };
            (store, key, label, v)
        })
        .collect();
    for (store, key, _) in &record_plants[record_plants.len() - variant_plants().len() * 4..] {
        keep.push((
            store.clone(),
            key.clone(),
            format!("variant plant {store}/{key:.20}"),
            versions[&(store.clone(), key.clone())],
        ));
    }
    for (key, _) in &variant_cred_plants {
        keep.push((
            "credentials".into(),
            key.clone(),
            format!("variant plant credentials/{key:.20}"),
            cred_versions[key],
        ));
    }
    let checked = keep.len();
    let own_ref = &own;
    let s = &w.s;
    let integrity: Vec<(String, Result<Resp, String>, u64)> = futures::stream::iter(keep)
        .map(|(store, key, label, version)| async move {
            let r = send(
                &s.addr,
                &Req {
                    method: "GET".into(),
                    target: format!("/v1/{store}/{}", encode(&key)),
                    token: own_ref.clone(),
                    headers: vec![],
                    body: None,
                    request_id: "iso-integrity".into(),
                },
            )
            .await;
            (label, r, version)
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    for (label, r, version) in integrity {
        match r {
            Ok(r) if r.status == 200 => {
                let v: Value = serde_json::from_str(&r.text).unwrap_or(Value::Null);
                if v["version"].as_u64() != Some(version) {
                    out.add(
                        &label,
                        format!(
                            "A's record changed: version {} (planted {version})",
                            v["version"]
                        ),
                    );
                }
            }
            Ok(r) => out.add(
                &label,
                format!("A's record is gone: {} {}", r.status, r.text),
            ),
            Err(e) => out.add(&label, e),
        }
    }

    // ---- the destructive admin calls, last, one each ----
    let mut destructive = 0;
    for path in [
        "/v1/admin/providers/up",
        "/v1/admin/installations/inst-a",
        "/v1/admin/apps/app1",
        "/v1/admin/accounts/acct1",
    ] {
        let r = s.admin("DELETE", path, None).await;
        destructive += 1;
        if r.status != 204 {
            out.add(
                &format!("DELETE {path} admin"),
                format!("status {} (expected 204)", r.status),
            );
        }
    }
    // After the uninstall, A's token is one of the unauthenticated kinds.
    let r = s.call("GET", "/v1/kv/same", own.as_deref(), None).await;
    if r.status != 401 {
        out.add(
            "GET /v1/kv/same with the uninstalled inst-a's token",
            format!("status {}", r.status),
        );
    }

    let total = total + destructive + 1;
    println!(
        "isolation matrix: {} rows × stores × {} token kinds = {matrix_cells} endpoint cells \
         ({twins} with an existence twin, {admin_deletes} destructive admin cells run once at the end as {destructive}), \
         {} key variants × 5 stores × methods × {} token kinds = {variant_cells} variant cells, \
         {checked} integrity checks; {total} cells in all (+ twins). \
         Setup {setup_time:.1?}, planting {plant_time:.1?}, matrix {run_time:.1?}, total {:.1?}.",
        rows.len(),
        KINDS.len(),
        variants.len(),
        VARIANT_KINDS.len(),
        started.elapsed()
    );
    assert!(
        out.mismatches.is_empty(),
        "{} of {total} cells are wrong:\n{}",
        out.mismatches.len(),
        out.mismatches.join("\n")
    );
}

fn cell_label(ri: usize, r: &Row, store: &str, kind: Kind) -> String {
    let path = r.path.replace("{store}", store);
    let target = match r.target {
        Target::Record => "A's record",
        Target::CredInst => "A's installation credential",
        Target::CredAcct => "A's account credential",
        Target::Flow => "A's flow",
        Target::Fresh => "-",
    };
    format!(
        "row {ri} {} {path} [{} ] on {target} by {kind:?}",
        r.method,
        r.headers
            .iter()
            .filter(|(k, _)| *k != "content-type")
            .map(|(k, v)| format!(" {k}: {v}"))
            .collect::<String>()
    )
}

impl Variant {
    fn class_name(&self) -> String {
        match self.class {
            Class::Same(k) => format!("= {k}"),
            other => format!("{other:?}"),
        }
    }
}
