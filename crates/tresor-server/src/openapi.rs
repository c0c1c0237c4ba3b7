//! The OpenAPI 3.1 document of the contract, built from the same route table and store list
//! the router uses, and served at `/openapi.json`. `docs/openapi.json` in the repository is a
//! copy that a test keeps in step with this function.

use serde_json::{Map, Value, json};
use tresor_core::model::StoreKind;

/// The whole document.
pub fn document() -> Value {
    let mut paths = Map::new();
    for store in StoreKind::ALL {
        let s = store.as_str();
        paths.insert(format!("/v1/{s}"), list_path(s));
        paths.insert(format!("/v1/{s}/{{key}}"), record_path(s));
        paths.insert(format!("/v1/{s}/{{key}}/ops"), ops_path(s));
    }
    paths.insert("/v1/batch".into(), batch_path());
    credential_paths(&mut paths);
    oauth_paths(&mut paths);
    admin_paths(&mut paths);
    for (p, summary) in [
        ("/healthz", "Liveness: the process answers."),
        (
            "/readyz",
            "Readiness: the storage is reachable (503 otherwise).",
        ),
    ] {
        paths.insert(
            p.into(),
            json!({"get": {"summary": summary, "security": [], "responses": {
                "200": {"description": "ok"}, "503": err_ref("storage unreachable")}}}),
        );
    }
    paths.insert(
        "/metrics".into(),
        json!({"get": {"summary": "Prometheus metrics (text format 0.0.4).", "security": [],
            "responses": {"200": {"description": "metrics",
                "content": {"text/plain": {"schema": {"type": "string"}}}}}}}),
    );
    paths.insert(
        "/openapi.json".into(),
        json!({"get": {"summary": "This document.", "security": [],
            "responses": {"200": {"description": "OpenAPI 3.1 document",
                "content": {"application/json": {"schema": {"type": "object"}}}}}}}),
    );
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "tresor",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Secrets, settings, key-value state and write-only credentials for \
                the apps installed on an app platform. Decisions where the contract is silent: \
                PATCH also accepts Content-Type application/json; field ops that return stored \
                values (increment, list_pop, list_peek, set_contains) need the store's read \
                scope; DELETE ?fields= on a non-object value is 409; features of later releases \
                (root key rotation) answer 501 not_implemented; a \
                provider document answers `oauth2.client_secret_set` in place of the secret.",
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "paths": paths,
        "components": components(),
    })
}

fn err_ref(description: &str) -> Value {
    json!({"description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}})
}

fn std_errors(extra: &[(&str, &str)]) -> Map<String, Value> {
    let mut m = Map::new();
    for (code, d) in [
        ("400", "invalid request"),
        ("401", "missing, unknown, expired or revoked token"),
        ("403", "the token lacks a scope, or is the wrong kind"),
        ("429", "rate limited"),
        ("500", "internal error"),
        ("503", "storage unavailable"),
    ]
    .iter()
    .chain(extra)
    {
        m.insert((*code).into(), err_ref(d));
    }
    m
}

/// The answer to a key over 500 bytes, for operations whose only size limit is the key's.
const KEY_TOO_LONG: (&str, &str) = ("413", "the key is over 500 bytes");

/// The answers of `HEAD` on a record: the statuses of [`std_errors`] and the key's, bodiless.
fn head_responses(extra: &[(&str, &str)]) -> Value {
    let mut m = Map::new();
    m.insert("200".into(), json!({"description": "exists"}));
    m.insert("404".into(), json!({"description": "no such key"}));
    for (code, value) in std_errors(extra) {
        let description = value.get("description").cloned().unwrap_or(Value::Null);
        m.insert(code, json!({ "description": description }));
    }
    Value::Object(m)
}

fn with_ok(mut m: Map<String, Value>, code: &str, body: Value) -> Value {
    m.insert(code.into(), body);
    Value::Object(m)
}

fn json_body(schema: &str, description: &str) -> Value {
    json!({"description": description,
        "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}}})
}

/// A record key as a regular expression (ECMA-262 and Python alike, no look-around so that
/// generators can use it): no control characters, and not `.` or `..` — the first character is
/// not a dot, or the second is not, or there is a third. Its 500-byte limit is `maxLength`, which
/// counts characters: a key of 500 characters may still be over 500 bytes (413).
const KEY_PATTERN: &str = "^([^\\u0000-\\u001F\\u007F.][^\\u0000-\\u001F\\u007F]*|\\.[^\\u0000-\\u001F\\u007F.][^\\u0000-\\u001F\\u007F]*|\\.\\.[^\\u0000-\\u001F\\u007F]+)$";

fn key_param() -> Value {
    json!({"name": "key", "in": "path", "required": true,
        "description": "1 to 500 bytes of UTF-8 without control characters, not `.` or `..`, as one percent-encoded segment.",
        "schema": {"type": "string", "minLength": 1, "maxLength": 500, "pattern": KEY_PATTERN}})
}

fn query(name: &str, schema: Value, description: &str) -> Value {
    json!({"name": name, "in": "query", "required": false, "schema": schema, "description": description})
}

fn header(name: &str, description: &str) -> Value {
    json!({"name": name, "in": "header", "required": false, "schema": {"type": "string"}, "description": description})
}

fn record_path(store: &str) -> Value {
    let ret = query(
        "return",
        json!({"type": "string", "enum": ["previous"]}),
        "Also answer with the record the write replaced.",
    );
    let if_match = header("If-Match", "`*` or a strong ETag such as \"7\".");
    json!({
        "parameters": [key_param()],
        "get": {
            "summary": format!("Read a record of the {store} store."),
            "parameters": [query("fields", json!({"type": "string"}), "Comma-separated top-level fields of an object value.")],
            "responses": with_ok(std_errors(&[("404", "no such key"), ("409", "fields asked of a non-object value"), KEY_TOO_LONG]), "200", json_body("Record", "the record")),
        },
        "head": {
            "summary": "Does the key exist?",
            // A HEAD answer has no body, so the errors are listed without one.
            "responses": head_responses(&[KEY_TOO_LONG]),
        },
        "put": {
            "summary": "Create or replace.",
            "parameters": [ret.clone(), if_match.clone(), header("If-None-Match", "`*`: only if the key does not exist.")],
            "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/PutBody"}}}},
            "responses": with_ok(
                {
                    let mut m = std_errors(&[("412", "precondition failed"), ("413", "too large"), ("415", "wrong content type"), ("507", "disk full")]);
                    m.insert("200".into(), json_body("RecordMeta", "replaced"));
                    m
                },
                "201", json_body("RecordMeta", "created")),
        },
        "patch": {
            "summary": "Atomic JSON Merge Patch (RFC 7396); a missing key is patched from {}.",
            "parameters": [ret.clone(), if_match.clone(), query("ttl_seconds", json!({"type": "integer", "minimum": 1, "maximum": 3153600000u64}), "New expiry.")],
            "requestBody": {"required": true, "content": {"application/merge-patch+json": {"schema": {}}}},
            "responses": with_ok(std_errors(&[("412", "precondition failed"), ("413", "too large"), ("415", "wrong content type"), ("507", "disk full")]), "200", json_body("Record", "the new record (RecordMeta without the read scope)")),
        },
        "delete": {
            "summary": "Delete (idempotent), or only some fields with ?fields=.",
            "parameters": [ret, if_match, query("fields", json!({"type": "string"}), "Remove only these top-level fields.")],
            "responses": with_ok(
                {
                    let mut m = std_errors(&[("409", "fields of a non-object value"), ("412", "precondition failed"), KEY_TOO_LONG]);
                    m.insert("200".into(), json!({"description": "deleted, with `previous` (return=previous)", "content": {"application/json": {"schema": {"type": "object", "properties": {"previous": {"oneOf": [{"$ref": "#/components/schemas/Record"}, {"type": "null"}]}}}}}}));
                    m
                },
                "204", json!({"description": "deleted"})),
        },
    })
}

fn list_path(store: &str) -> Value {
    json!({"get": {
        "summary": format!("List keys of the {store} store in byte order, metadata only."),
        "parameters": [
            query("prefix", json!({"type": "string"}), "Only keys starting with this."),
            query("limit", json!({"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}), "Page size."),
            query("cursor", json!({"type": "string"}), "next_cursor of the previous page."),
        ],
        "responses": with_ok(std_errors(&[]), "200", json_body("RecordPage", "a page")),
    }})
}

fn ops_path(store: &str) -> Value {
    json!({"parameters": [key_param()], "post": {
        "summary": format!("Atomic field operations on an object of the {store} store."),
        "parameters": [header("If-Match", "`*` or a strong ETag.")],
        "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/OpsBody"}}}},
        "responses": with_ok(std_errors(&[("409", "an op does not fit the stored value"), ("412", "precondition failed"), ("413", "too large")]), "200", json_body("OpsResult", "results")),
    }})
}

fn batch_path() -> Value {
    json!({"post": {
        "summary": "Up to 100 record operations, atomically or not.",
        "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/BatchBody"}}}},
        "responses": with_ok(std_errors(&[("404", "an atomic batch's write op found no key"), ("409", "conflict"), ("412", "precondition failed"), ("413", "too large")]), "200", json_body("BatchResult", "one result per op")),
    }})
}

fn credential_paths(paths: &mut Map<String, Value>) {
    paths.insert(
        "/v1/credentials".into(),
        json!({"get": {
            "summary": "List credential metadata (own and the account's), never secrets.",
            "parameters": [
                query("prefix", json!({"type": "string"}), ""),
                query("limit", json!({"type": "integer", "minimum": 1, "maximum": 1000}), ""),
                query("cursor", json!({"type": "string"}), ""),
            ],
            "responses": with_ok(std_errors(&[]), "200", json_body("CredentialPage", "a page")),
        }}),
    );
    let mut put_resp = std_errors(&[
        ("409", "the other owner holds the key"),
        ("413", "too large"),
        ("415", "wrong content type"),
    ]);
    put_resp.insert("200".into(), json_body("CredentialMeta", "replaced"));
    paths.insert("/v1/credentials/{key}".into(), json!({
        "parameters": [key_param()],
        "get": {"summary": "Credential metadata.", "responses": with_ok(std_errors(&[("404", "no such credential"), KEY_TOO_LONG]), "200", json_body("CredentialMeta", "metadata"))},
        "put": {"summary": "Store a credential (write-only).",
            "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/CredentialBody"}}}},
            "responses": with_ok(put_resp, "201", json_body("CredentialMeta", "created"))},
        "delete": {"summary": "Delete (204 also when missing).", "responses": with_ok(std_errors(&[KEY_TOO_LONG]), "204", json!({"description": "deleted"}))},
    }));
    paths.insert("/v1/credentials/{key}/request".into(), json!({
        "parameters": [key_param()],
        "post": {"summary": "Make an authenticated request to the credential's provider; the host injects the credential and redacts it from the answer.",
            "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ProxyRequest"}}}},
            "responses": with_ok(std_errors(&[("404", "no such credential"), ("409", "reconsent_required or an unusable credential"), KEY_TOO_LONG, ("502", "upstream_failed")]), "200", json_body("ProxyAnswer", "the upstream's answer"))},
    }));
    let doc = json!({"description": "the provider document without secrets", "content": {"application/json": {"schema": {"type": "object"}}}});
    let errs = || std_errors(&[("404", "no such provider")]);
    paths.insert("/v1/admin/providers".into(), json!({"get": {"summary": "List providers.", "responses": with_ok(errs(), "200", doc.clone())}}));
    let mut put_resp = errs();
    put_resp.insert("200".into(), doc.clone());
    paths.insert("/v1/admin/providers/{name}".into(), json!({
        "parameters": [{"name": "name", "in": "path", "required": true, "schema": {"type": "string", "pattern": "^[A-Za-z0-9._:-]{1,128}$"}}],
        "get": {"summary": "Read a provider (`oauth2.client_secret_set` instead of the secret).", "responses": with_ok(errs(), "200", doc.clone())},
        "put": {"summary": "Configure a provider; a PUT without `oauth2.client_secret` keeps the stored one.",
            "requestBody": {"required": true, "content": {"application/json": {"schema": {"type": "object", "required": ["base_url", "inject"]}}}},
            "responses": with_ok(put_resp, "201", doc)},
        "delete": {"summary": "Delete a provider.", "responses": with_ok(errs(), "204", json!({"description": "deleted"}))},
    }));
}

fn oauth_paths(paths: &mut Map<String, Value>) {
    let obj = |d: &str| json!({"description": d, "content": {"application/json": {"schema": {"type": "object"}}}});
    paths.insert("/v1/oauth/flows".into(), json!({"post": {
        "summary": "Start an authorization-code flow with PKCE (S256); the answer's authorize_url goes to the user's browser.",
        "requestBody": {"required": true, "content": {"application/json": {"schema": {"type": "object", "required": ["provider", "store_as"], "properties": {
            "provider": {"type": "string"},
            "store_as": {"type": "object", "required": ["key"], "properties": {"key": {"type": "string"}, "owner": {"type": "string", "enum": ["installation", "account"]}}},
            "scopes": {"type": "array", "items": {"type": "string"}},
            "return_to": {"type": "string"}}}}}},
        "responses": with_ok(std_errors(&[]), "201", obj("{flow_id, authorize_url, expires_at}")),
    }}));
    let flow_id =
        json!({"name": "flow_id", "in": "path", "required": true, "schema": {"type": "string"}});
    paths.insert("/v1/oauth/flows/{flow_id}".into(), json!({"parameters": [flow_id.clone()], "get": {
        "summary": "Flow status: pending, completed, failed (with the provider's error) or expired.",
        "responses": with_ok(std_errors(&[("404", "no such flow for this installation")]), "200", obj("{flow_id, status, error?, expires_at}")),
    }}));
    paths.insert("/v1/oauth/flows/{flow_id}/complete".into(), json!({"parameters": [flow_id], "post": {
        "summary": "The setup result: the credential's metadata and the access token, exactly once.",
        "responses": with_ok(std_errors(&[("404", "no such flow"), ("409", "pending or failed"), ("410", "expired or already taken")]), "200", obj("{credential, access_token}")),
    }}));
    paths.insert("/v1/oauth/callback".into(), json!({"get": {
        "summary": "The provider sends the user's browser here (no token): exchanges the code and redirects to return_to or shows a page.",
        "security": [],
        "parameters": [
            query("state", json!({"type": "string"}), ""), query("code", json!({"type": "string"}), ""),
            query("error", json!({"type": "string"}), ""),
        ],
        "responses": {"302": {"description": "to return_to?flow_id=…&status=completed|failed"},
            "200": {"description": "an HTML page", "content": {"text/html": {"schema": {"type": "string"}}}},
            "400": {"description": "unknown, used or expired state (HTML page)", "content": {"text/html": {"schema": {"type": "string"}}}}},
    }}));
}

fn admin_paths(paths: &mut Map<String, Value>) {
    let doc = |summary: &str| json!({"description": summary, "content": {"application/json": {"schema": {"type": "object"}}}});
    let id = |name: &str| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string", "pattern": "^[A-Za-z0-9._:-]{1,128}$"}});
    let errs = || std_errors(&[("404", "not found"), ("409", "conflict")]);
    for (plural, single, put_body) in [
        (
            "apps",
            "app_id",
            json!({"type": "object", "required": ["scopes"], "properties": {"scopes": {"type": "array", "items": {"type": "string"}}}}),
        ),
        ("accounts", "account_id", json!({"type": "object"})),
        (
            "installations",
            "installation_id",
            json!({"type": "object", "required": ["app_id", "account_id"], "properties": {"app_id": {"type": "string"}, "account_id": {"type": "string"}}}),
        ),
    ] {
        paths.insert(format!("/v1/admin/{plural}"), json!({"get": {"summary": format!("List {plural}."), "responses": with_ok(errs(), "200", doc("{\"items\": [...]}"))}}));
        let mut put_resp = errs();
        put_resp.insert("200".into(), doc("updated (no token)"));
        paths.insert(format!("/v1/admin/{plural}/{{{single}}}"), json!({
            "parameters": [id(single)],
            "get": {"summary": "Read.", "responses": with_ok(errs(), "200", doc("the resource"))},
            "put": {"summary": "Create or update (an installation answers its token once, at creation).",
                "requestBody": {"required": false, "content": {"application/json": {"schema": put_body}}},
                "responses": with_ok(put_resp, "201", doc("created"))},
            "delete": {"summary": "Delete everything it holds.", "responses": with_ok(errs(), "204", json!({"description": "deleted"}))},
        }));
    }
    paths.insert("/v1/admin/installations/{installation_id}/tokens".into(), json!({
        "parameters": [id("installation_id")],
        "post": {"summary": "Issue another token (shown once).",
            "requestBody": {"required": false, "content": {"application/json": {"schema": {"type": "object", "properties": {"scopes": {"type": "array", "items": {"type": "string"}}, "ttl_seconds": {"type": "integer"}}}}}},
            "responses": with_ok(errs(), "201", doc("{\"token_id\", \"token\"}"))},
    }));
    let mut rotate_key = errs();
    rotate_key.insert(
        "409".into(),
        err_ref("a key rotation of the installation is already running, or it holds too much to rotate in one transaction"),
    );
    rotate_key.insert(
        "503".into(),
        err_ref("the installation's rows kept changing; nothing was rotated"),
    );
    paths.insert("/v1/admin/installations/{installation_id}/rotate-key".into(), json!({
        "parameters": [id("installation_id")],
        "post": {"summary": "Re-seal the installation's records, credentials and OAuth flows under a new data key, which replaces the old one in the same transaction. Online: the installation's writes wait while it runs.",
            "requestBody": {"required": false, "content": {"application/json": {"schema": {"type": "object", "additionalProperties": false}}}},
            "responses": with_ok(rotate_key, "200", json_body("InstallationKeyRotated", "rotated: what was re-sealed"))},
    }));
    paths.insert("/v1/admin/tokens/{token_id}".into(), json!({
        "parameters": [{"name": "token_id", "in": "path", "required": true, "schema": {"type": "string"}}],
        "delete": {"summary": "Revoke, effective at once.", "responses": with_ok(errs(), "204", json!({"description": "revoked"}))},
    }));
    paths.insert(
        "/v1/admin/audit".into(),
        json!({"get": {
        "summary": "Audit events, oldest first.",
        "parameters": [
            query("installation_id", json!({"type": "string"}), ""),
            query("account_id", json!({"type": "string"}), ""),
            query("since", json!({"type": "string", "format": "date-time"}), ""),
            query("until", json!({"type": "string", "format": "date-time"}), ""),
            query("after", json!({"type": "string"}), "next_cursor of the previous page"),
            query("limit", json!({"type": "integer", "minimum": 1, "maximum": 1000}), ""),
        ],
        "responses": with_ok(errs(), "200", json_body("AuditPage", "a page"))}}),
    );
    paths.insert("/v1/admin/status".into(), json!({"get": {
        "summary": "The running system: version, backend, this server, what the store holds, the root key versions and the last backup.",
        "responses": with_ok(errs(), "200", json_body("SystemStatus", "the status"))}}));
    paths.insert("/v1/admin/keys".into(), json!({"get": {
        "summary": "Root key versions (ids only), which servers hold which, keys per version and the re-wrap's progress.",
        "responses": with_ok(errs(), "200", json_body("KeysStatus", "the key status"))}}));
    let mut rotate = errs();
    rotate.insert(
        "409".into(),
        err_ref("a running server lacks the newest version"),
    );
    paths.insert("/v1/admin/keys/rotate".into(), json!({"post": {
        "summary": "Activate the newest root key version every running server holds, and re-wrap the installation keys in the background.",
        "requestBody": {"required": false, "content": {"application/json": {"schema": {"type": "object", "additionalProperties": false}}}},
        "responses": with_ok(rotate, "202", json_body("KeysStatus", "rotating: the key status"))}}));
}

fn components() -> Value {
    let ts = json!({"type": "string", "format": "date-time"});
    let ts_or_null = json!({"type": ["string", "null"], "format": "date-time"});
    let meta_props = json!({
        "key": {"type": "string"},
        "version": {"type": "integer", "minimum": 1},
        "description": {"type": ["string", "null"]},
        "created_at": ts,
        "updated_at": ts,
        "expires_at": ts_or_null,
    });
    let mut record_props = meta_props.clone();
    if let Some(o) = record_props.as_object_mut() {
        o.insert("value".into(), json!({"not": {"type": "null"}}));
    }
    let meta_required = json!([
        "key",
        "version",
        "description",
        "created_at",
        "updated_at",
        "expires_at"
    ]);
    let mut record_required = meta_required.clone();
    if let Some(a) = record_required.as_array_mut() {
        a.push("value".into());
    }
    json!({
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        "schemas": {
            "Error": {"type": "object", "required": ["error"], "properties": {"error": {
                "type": "object", "required": ["code", "message", "request_id"],
                "properties": {"code": {"type": "string"}, "message": {"type": "string"},
                    "request_id": {"type": "string"}, "op_index": {"type": "integer"}}}}},
            "RecordMeta": {"type": "object", "required": meta_required, "properties": meta_props},
            "Record": {"type": "object", "required": record_required, "properties": record_props},
            "RecordPage": {"type": "object", "required": ["items", "next_cursor"], "properties": {
                "items": {"type": "array", "items": {"$ref": "#/components/schemas/RecordMeta"}},
                "next_cursor": {"type": ["string", "null"]}}},
            "PutBody": {"type": "object", "required": ["value"], "additionalProperties": false, "properties": {
                "value": {"not": {"type": "null"}},
                "description": {"type": ["string", "null"], "maxLength": 1024},
                "ttl_seconds": {"type": "integer", "minimum": 1, "maximum": 3153600000u64}}},
            "FieldOp": {"type": "object", "required": ["op", "field"], "properties": {
                "op": {"type": "string", "enum": ["increment", "list_push", "list_pop", "list_peek", "set_add", "set_remove", "set_contains"]},
                "field": {"type": "string"}, "by": {"type": "number"},
                "values": {"type": "array"}, "members": {"type": "array"},
                "count": {"type": "integer", "minimum": 1}, "end": {"type": "string", "enum": ["front", "back"]}}},
            "OpsBody": {"type": "object", "required": ["ops"], "additionalProperties": false, "properties": {
                "ops": {"type": "array", "minItems": 1, "maxItems": 100, "items": {"$ref": "#/components/schemas/FieldOp"}},
                "ttl_seconds": {"type": "integer", "minimum": 1, "maximum": 3153600000u64}}},
            "OpsResult": {"type": "object", "required": ["record", "results"], "properties": {
                "record": {"oneOf": [{"$ref": "#/components/schemas/RecordMeta"}, {"type": "null"}]},
                "results": {"type": "array"}}},
            "BatchOp": {"type": "object", "required": ["op", "store", "key"], "additionalProperties": false, "properties": {
                "op": {"type": "string", "enum": ["get", "exists", "put", "patch", "delete"]},
                "store": {"type": "string", "enum": ["secrets", "settings", "kv", "shared"]},
                "key": {"type": "string"}, "value": {},
                "description": {"type": ["string", "null"]},
                "ttl_seconds": {"type": "integer", "minimum": 1, "maximum": 3153600000u64},
                "if_version": {"type": "integer", "minimum": 0}}},
            "BatchBody": {"type": "object", "required": ["atomic", "ops"], "additionalProperties": false, "properties": {
                "atomic": {"type": "boolean"},
                "ops": {"type": "array", "minItems": 1, "maxItems": 100, "items": {"$ref": "#/components/schemas/BatchOp"}}}},
            "BatchResult": {"type": "object", "required": ["results"], "properties": {"results": {"type": "array", "items": {
                "type": "object", "required": ["status"], "properties": {"status": {"type": "integer"}, "record": {"type": "object"},
                "error": {"type": "object"}}}}}},
            "SystemStatus": {"type": "object", "required": ["version", "backend", "node_id", "store", "keys", "last_backup"], "properties": {
                "version": {"type": "string"}, "backend": {"type": "string"}, "node_id": {"type": "string"},
                "store": {"type": "object", "properties": {
                    "apps": {"type": "integer"}, "accounts": {"type": "integer"}, "installations": {"type": "integer"},
                    "records": {"type": "integer"}, "credentials": {"type": "integer"}, "audit_events": {"type": "integer"},
                    "bytes": {"type": ["integer", "null"]}}},
                "keys": {"$ref": "#/components/schemas/KeysStatus"},
                "last_backup": {"type": ["object", "null"]}}},
            "InstallationKeyRotated": {"type": "object", "required": ["installation_id", "records", "credentials", "oauth_flows"], "properties": {
                "installation_id": {"type": "string"},
                "records": {"type": "integer", "minimum": 0},
                "credentials": {"type": "integer", "minimum": 0},
                "oauth_flows": {"type": "integer", "minimum": 0}}},
            "KeysStatus": {"type": "object", "required": ["active", "newest", "versions", "servers", "wrapped", "rewrap"], "properties": {
                "active": {"type": "string"}, "newest": {"type": "string"},
                "versions": {"type": "array", "items": {"type": "string"}},
                "servers": {"type": "array", "items": {"type": "object", "properties": {
                    "node_id": {"type": "string"}, "key_versions": {"type": "array", "items": {"type": "string"}},
                    "last_seen": ts, "live": {"type": "boolean"}}}},
                "wrapped": {"type": "object", "additionalProperties": {"type": "integer"}},
                "rewrap": {"type": "object", "properties": {
                    "running": {"type": "boolean"}, "done": {"type": "boolean"}, "total": {"type": "integer"},
                    "remaining": {"type": "integer"}, "rewrapped": {"type": "integer"}, "failed": {"type": "integer"},
                    "last_error": {"type": ["string", "null"]}}}}},
            "AuditEvent": {"type": "object", "properties": {
                "id": {"type": "integer"}, "time": ts, "request_id": {"type": "string"},
                "token_id": {"type": ["string", "null"]}, "app_id": {"type": ["string", "null"]},
                "account_id": {"type": ["string", "null"]}, "installation_id": {"type": ["string", "null"]},
                "operation": {"type": "string"}, "store": {"type": ["string", "null"]},
                "key": {"type": ["string", "null"]}, "status": {"type": "integer"},
                "remote_addr": {"type": ["string", "null"]}}},
            "CredentialMeta": {"type": "object", "required": ["key", "owner", "provider", "kind", "version", "created_at", "updated_at", "expires_at", "token_expires_at", "scopes", "metadata", "needs_reconsent"], "properties": {
                "key": {"type": "string"}, "owner": {"type": "string", "enum": ["installation", "account"]},
                "provider": {"type": "string"}, "kind": {"type": "string", "enum": ["oauth2", "api_key", "basic", "client_credentials"]},
                "version": {"type": "integer"}, "created_at": ts, "updated_at": ts, "expires_at": ts_or_null,
                "token_expires_at": ts_or_null, "scopes": {"type": "array", "items": {"type": "string"}},
                "metadata": {"type": "object"}, "needs_reconsent": {"type": "boolean"}}},
            "CredentialPage": {"type": "object", "required": ["items", "next_cursor"], "properties": {
                "items": {"type": "array", "items": {"$ref": "#/components/schemas/CredentialMeta"}},
                "next_cursor": {"type": ["string", "null"]}}},
            "CredentialBody": {"type": "object", "required": ["provider", "secret"], "additionalProperties": false, "properties": {
                "owner": {"type": "string", "enum": ["installation", "account"]},
                "provider": {"type": "string"}, "secret": {"type": "object"},
                "metadata": {"type": "object"},
                "ttl_seconds": {"type": "integer", "minimum": 1, "maximum": 3153600000u64}}},
            "ProxyRequest": {"type": "object", "required": ["method"], "additionalProperties": false, "properties": {
                "method": {"type": "string", "enum": ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]},
                "path": {"type": "string"}, "query": {"type": "object"}, "headers": {"type": "object"},
                "body": {}, "body_base64": {"type": "string"}}},
            "ProxyAnswer": {"type": "object", "required": ["status", "headers"], "properties": {
                "status": {"type": "integer"}, "headers": {"type": "object"},
                "body": {}, "body_base64": {"type": "string"}}},
            "AuditPage": {"type": "object", "required": ["items", "next_cursor"], "properties": {
                "items": {"type": "array", "items": {"$ref": "#/components/schemas/AuditEvent"}},
                "next_cursor": {"type": ["string", "null"]}}},
        }
    })
}
