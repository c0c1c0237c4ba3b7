//! The hostile-input checks of tresor (issue 7, item 5): one function per parser that takes
//! arbitrary bytes, runs the parser on them and asserts the invariants it must keep. A panic
//! here is a bug in tresor (or in the invariant), never an expected outcome.
//!
//! The cargo-fuzz crate in `fuzz/` has one target per function of [`TARGETS`], each a one-line
//! call into this crate; `tests/replay.rs` runs every file of the kept corpora
//! (`fuzz/corpus/<target>/`) through the same functions as an ordinary `cargo test`.
//!
//! Where a target needs several inputs (a target and a patch, a base URL and a path), the bytes
//! are split at the first NUL byte, which valid JSON and valid paths never contain outside of
//! escapes. Every error message is also checked for the marker character `~`: no message
//! template contains it, so a `~` in a message can only be text the caller sent, which
//! ARCHITECTURE.md invariant 6 forbids repeating.

use percent_encoding::percent_decode_str;
use serde_json::{Map, Value};
use tresor_core::CoreError;
use tresor_core::field_ops::{FieldOp, apply_ops, parse_ops};
use tresor_core::json::{compact_len, depth, parse_strict};
use tresor_core::model::Limits;
use tresor_crypto::{DataKey, RootKeyRing, open, seal, sealed_key_id, token_id_of};
use tresor_server::fuzzing::{decode_key, parse_batch_op, parse_put_body, parse_query};
use tresor_server::proxy::{
    build_target, classify_host, default_allowed_hosts, fill_base_url, host_allowed,
    validate_allowed_host_entry,
};
use url::Url;

/// A fuzz target: arbitrary bytes in, a panic only on a broken invariant.
pub type Target = fn(&[u8]);

/// Every target by the name of its `fuzz/fuzz_targets/<name>.rs` and `fuzz/corpus/<name>/`.
pub const TARGETS: &[(&str, Target)] = &[
    ("json_strict", json_strict),
    ("merge_patch", merge_patch),
    ("field_ops", field_ops),
    ("request_body", request_body),
    ("record_open", record_open),
    ("token", token),
    ("proxy_target", proxy_target),
];

/// The depth limit of the default configuration.
const MAX_DEPTH: usize = 64;

/// The strict JSON parser on arbitrary bytes: it never panics; what it accepts serde_json also
/// accepts, is within the depth limit (exactly: one level less refuses it), and re-encodes and
/// re-parses to the same value with the same member order; `compact_len` is the encoded length.
pub fn json_strict(data: &[u8]) {
    let value = match parse_strict(data, MAX_DEPTH) {
        Ok(value) => value,
        Err(e) => {
            assert_clean(&e, &[400]);
            return;
        }
    };
    assert!(
        serde_json::from_slice::<Value>(data).is_ok(),
        "strict parser accepted what serde_json refuses"
    );
    let d = depth(&value);
    assert!(d <= MAX_DEPTH, "accepted depth {d} above the limit");
    assert!(
        parse_strict(data, d).is_ok(),
        "refused at its own depth {d}"
    );
    if d > 0 {
        assert!(
            parse_strict(data, d - 1).is_err(),
            "accepted below its depth {d}"
        );
    }
    let encoded = encode(&value);
    assert_eq!(compact_len(&value), encoded.len(), "compact_len is wrong");
    let again = parse_strict(&encoded, MAX_DEPTH).unwrap_or_else(|e| {
        panic!("its own encoding does not parse back: {e}");
    });
    assert_eq!(encode(&again), encoded, "the value changed on a round trip");
}

/// Merge patch (RFC 7396) on two strict-parsed documents, `target NUL patch`: the result equals
/// a plain reference implementation of RFC 7396 section 2 (with the same member order),
/// applying the patch again changes nothing, the result is never deeper than the deeper input
/// (so the depth limit the service checks on the result holds whenever it held on the inputs),
/// and surviving members of the target keep their order.
pub fn merge_patch(data: &[u8]) {
    let (target_bytes, patch_bytes) = split(data);
    let (Ok(target), Ok(patch)) = (
        parse_strict(target_bytes, MAX_DEPTH),
        parse_strict(patch_bytes, MAX_DEPTH),
    ) else {
        return;
    };
    let mut once = target.clone();
    tresor_core::merge_patch::merge_patch(&mut once, &patch);
    let expected = reference_merge_patch(Some(&target), &patch);
    assert_eq!(
        encode(&once),
        encode(&expected),
        "differs from RFC 7396 section 2"
    );

    let mut twice = once.clone();
    tresor_core::merge_patch::merge_patch(&mut twice, &patch);
    assert_eq!(encode(&twice), encode(&once), "patch is not idempotent");

    assert!(
        depth(&once) <= depth(&target).max(depth(&patch)),
        "the result is deeper than both inputs"
    );
    if let (Value::Object(before), Value::Object(after), Value::Object(_)) =
        (&target, &once, &patch)
    {
        let kept: Vec<&String> = before.keys().filter(|k| after.contains_key(*k)).collect();
        let order: Vec<&String> = after.keys().filter(|k| before.contains_key(*k)).collect();
        assert_eq!(kept, order, "surviving members were reordered");
    }
}

/// RFC 7396 section 2, written as the RFC's pseudocode, `None` for an absent target.
fn reference_merge_patch(target: Option<&Value>, patch: &Value) -> Value {
    let Value::Object(patch_members) = patch else {
        return patch.clone();
    };
    let mut result = match target {
        Some(Value::Object(members)) => members.clone(),
        _ => Map::new(),
    };
    for (name, value) in patch_members {
        if value.is_null() {
            result.shift_remove(name);
        } else {
            let merged = reference_merge_patch(result.get(name), value);
            match result.get_mut(name) {
                Some(slot) => *slot = merged,
                None => {
                    result.insert(name.clone(), merged);
                }
            }
        }
    }
    Value::Object(result)
}

/// Field ops, `stored object NUL ops array`: parsing refuses with a clean 400; applying either
/// succeeds with one result per op or fails with a clean 400/409 and leaves the stored object
/// byte for byte as it was; read-only ops never change it.
pub fn field_ops(data: &[u8]) {
    let (stored_bytes, ops_bytes) = split(data);
    let mut stored = match parse_strict(stored_bytes, MAX_DEPTH) {
        Ok(Value::Object(members)) => members,
        _ => Map::new(),
    };
    let ops_value = match parse_strict(ops_bytes, MAX_DEPTH + 3) {
        Ok(v) => v,
        Err(e) => {
            assert_clean(&e, &[400]);
            return;
        }
    };
    let ops = match parse_ops(ops_value) {
        Ok(ops) => ops,
        Err(e) => {
            assert_clean(&e, &[400]);
            return;
        }
    };
    let before = encode_map(&stored);
    match apply_ops(&mut stored, &ops) {
        Ok(results) => {
            assert_eq!(results.len(), ops.len(), "one result per op");
            if ops.iter().all(FieldOp::is_read_only) {
                assert_eq!(
                    encode_map(&stored),
                    before,
                    "read-only ops changed the value"
                );
            }
            // Every field a successful op touched holds what that kind of op leaves there.
            for op in &ops {
                let field = stored.get(op.field());
                match op {
                    FieldOp::Increment { .. } => {
                        assert!(
                            field.is_some_and(Value::is_number),
                            "increment left a non-number"
                        );
                    }
                    FieldOp::ListPush { .. } | FieldOp::SetAdd { .. } => {
                        assert!(
                            field.is_some_and(Value::is_array),
                            "push or add left a non-array"
                        );
                    }
                    _ => {}
                }
            }
        }
        Err(e) => {
            assert_clean(&e, &[400, 409]);
            assert_eq!(
                encode_map(&stored),
                before,
                "a failed request changed the value"
            );
        }
    }
}

/// The request parsers of the server, chosen by the first byte: 0 the PUT body, 1 the batch
/// body (its wrapper as `batch_inner` reads it, each op by `parse_batch_op`), 2 the field-ops
/// body, 3 a key path segment, 4 a query string. Every refusal is a clean 4xx; what is
/// accepted is within the limits.
pub fn request_body(data: &[u8]) {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let limits = Limits::default();
    match selector % 5 {
        0 => match parse_put_body(body, limits.max_depth) {
            Ok((value, _, _)) => {
                assert!(depth(&value) <= limits.max_depth, "value too deep")
            }
            Err(e) => assert_clean(&e, &[400]),
        },
        1 => batch_body(body, &limits),
        2 => match parse_strict(body, limits.max_depth + 3) {
            Ok(Value::Object(mut members)) => {
                if let Some(ops) = members.shift_remove("ops")
                    && let Err(e) = parse_ops(ops)
                {
                    assert_clean(&e, &[400]);
                }
            }
            Ok(_) => {}
            Err(e) => assert_clean(&e, &[400]),
        },
        3 => {
            let Ok(raw) = std::str::from_utf8(body) else {
                return;
            };
            match decode_key(raw) {
                Ok(key) => {
                    let decoded = percent_decode_str(raw).decode_utf8_lossy();
                    assert_eq!(key.as_str(), decoded, "the key is not decoded exactly once");
                    assert!(
                        key.as_str().len() <= limits.max_key_bytes,
                        "key above the limit"
                    );
                }
                Err(e) => assert_clean(&e, &[400, 413]),
            }
        }
        _ => {
            let Ok(raw) = std::str::from_utf8(body) else {
                return;
            };
            const ALLOWED: &[&str] = &["prefix", "cursor", "limit", "fields", "return"];
            match parse_query(Some(raw), ALLOWED) {
                Ok(params) => assert!(
                    params.keys().all(|k| ALLOWED.contains(&k.as_str())),
                    "an unknown query parameter was accepted"
                ),
                Err(e) => assert_clean(&e, &[400]),
            }
        }
    }
}

fn batch_body(body: &[u8], limits: &Limits) {
    let doc = match parse_strict(body, limits.max_depth + 3) {
        Ok(Value::Object(members)) => members,
        Ok(_) => return,
        Err(e) => {
            assert_clean(&e, &[400]);
            return;
        }
    };
    let Some(Value::Array(items)) = doc.get("ops") else {
        return;
    };
    for item in items.iter().take(limits.max_batch_ops) {
        if let Err(e) = parse_batch_op(item.clone()) {
            assert_clean(&e, &[400, 413]);
        }
    }
}

/// The associated data every record seal here is bound to.
const AAD: &[u8] = b"fuzz/ns:1/store:secrets/key:k/part:value";
/// The context every key wrap here is bound to.
const WRAP_CONTEXT: &[u8] = b"fuzz/namespace:1";
/// A fixed root key file (version `1`, 32 bytes of 0x11).
const KEY_FILE: &str = "tresor-root-key v1\n1:ERERERERERERERERERERERERERERERERERERERERERE=\n";

/// The ciphertext decoders: arbitrary bytes never open as a record or unwrap as a key (a forgery
/// would need the key), and the header readers never panic. Then an authentic seal of a known
/// plaintext (and an authentic key wrap) is mutated by the input (`[pos_hi, pos_lo, x]`
/// triples: flip, truncate or append): a mutated blob must fail to open, an unchanged one must
/// open to exactly the original.
pub fn record_open(data: &[u8]) {
    let key = DataKey::from_bytes([0x5a; 32]);
    let _ = sealed_key_id(data);
    assert!(
        open(&key, AAD, data).is_err(),
        "arbitrary bytes opened as a record"
    );
    let Ok(ring) = RootKeyRing::parse(KEY_FILE) else {
        panic!("the fixed key file does not parse");
    };
    let _ = RootKeyRing::wrapped_version(data);
    assert!(
        ring.unwrap(data, WRAP_CONTEXT).is_err(),
        "arbitrary bytes unwrapped as a key"
    );
    if let Ok(text) = std::str::from_utf8(data) {
        // The key file parser on arbitrary text: never panics (its messages are checked by its
        // own tests).
        let _ = RootKeyRing::parse(text);
    }

    let (plaintext, mutations) = data.split_at(data.len().min(24));
    let Ok(sealed) = seal(&key, 7, AAD, plaintext) else {
        panic!("sealing failed");
    };
    assert_eq!(sealed_key_id(&sealed).ok(), Some(7), "key id not kept");
    let mutated = mutate(&sealed, mutations);
    match open(&key, AAD, &mutated) {
        Ok(opened) => {
            assert_eq!(mutated, sealed, "a tampered record opened");
            assert_eq!(&opened[..], plaintext, "opened to another plaintext");
        }
        Err(_) => assert_ne!(mutated, sealed, "an authentic record did not open"),
    }
    if mutated == sealed {
        let other_aad = [AAD, b"/x"].concat();
        assert!(
            open(&key, &other_aad, &sealed).is_err(),
            "opened under other AAD"
        );
    }

    let data_key = DataKey::from_bytes([0xa5; 32]);
    let Ok(wrapped) = ring.wrap(&data_key, WRAP_CONTEXT) else {
        panic!("wrapping failed");
    };
    let mutated = mutate(&wrapped, mutations);
    match ring.unwrap(&mutated, WRAP_CONTEXT) {
        Ok(unwrapped) => {
            assert_eq!(mutated, wrapped, "a tampered wrapped key unwrapped");
            assert!(unwrapped == data_key, "unwrapped to another key");
        }
        Err(_) => assert_ne!(mutated, wrapped, "an authentic wrap did not unwrap"),
    }
}

/// Applies `[pos_hi, pos_lo, x]` triples to a copy of `blob`: a position inside the blob flips
/// the bits of `x` there; past its end an odd `x` truncates, an even one appends `x`.
fn mutate(blob: &[u8], mutations: &[u8]) -> Vec<u8> {
    let mut out = blob.to_vec();
    for triple in mutations.chunks_exact(3) {
        let pos = usize::from(u16::from_be_bytes([triple[0], triple[1]]));
        let x = triple[2];
        if let Some(byte) = out.get_mut(pos) {
            *byte ^= x;
        } else if x % 2 == 1 {
            let len = out.len();
            out.truncate(pos % len.max(1));
        } else {
            out.push(x);
        }
    }
    out
}

/// The token parser on arbitrary text: never panics; what it accepts is exactly
/// `tsr_<16 lowercase hex>_<43 base64url>` and the id it returns is the one in that text; an
/// issued token parses back to its own id; a token's MAC verifies it and nothing else. The
/// same text as an `Authorization` value: the bearer parser takes a token only after the scheme
/// `Bearer` (any case) and one space, and hands back a non-empty, trimmed part of the value.
pub fn token(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    bearer(&text);
    if let Some(id) = token_id_of(&text) {
        let rest = text
            .strip_prefix("tsr_")
            .unwrap_or_else(|| panic!("no prefix"));
        let (in_text, secret) = rest
            .split_once('_')
            .unwrap_or_else(|| panic!("no separator"));
        assert_eq!(id, in_text, "the id is not the one in the text");
        assert!(
            id.len() == 16 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')),
            "the id is not 16 lowercase hex"
        );
        assert!(
            secret.len() == 43
                && secret
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
            "the secret is not 43 base64url characters"
        );
    }
    let pepper = tresor_crypto::TokenPepper::from_data_key(DataKey::from_bytes([0x33; 32]));
    let mac = pepper.mac(&text);
    assert!(
        pepper.verify(&text, &mac),
        "a MAC does not verify its token"
    );
    let mut other = text.to_string();
    other.push('x');
    assert!(!pepper.verify(&other, &mac), "a MAC verifies another token");
    assert!(!pepper.verify(&text, &mac[..31]), "a short MAC verifies");
}

/// The provider base URLs the proxy target joins paths to; the first byte of the input picks
/// one. The `{metadata.sub}` ones are filled from the second NUL-separated part.
const BASES: &[&str] = &[
    "https://api.example.com",
    "https://api.example.com/v2",
    "https://api.example.com/v2/",
    "http://api.example.com:8080/a/b;c",
    "https://10.0.0.1/x%2Fy/",
    "https://[2001:db8::1]:8443/api",
    "https://{metadata.sub}.example.com/api",
    "https://api.example.com/{metadata.sub}/v1",
];

/// The proxy's URL handling, `selector path NUL metadata-value NUL query-json`: the base URL
/// filled from metadata keeps the template's scheme, port and shape; a built target never
/// panics and, when accepted, has the base's scheme, host and port, the base path as a prefix,
/// no userinfo or fragment, no dot segment (even percent-encoded), passes the provider's default
/// `allowed_hosts`, and serializes to a URL that parses back to itself.
pub fn proxy_target(data: &[u8]) {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let template = BASES[usize::from(selector) % BASES.len()];
    let (path_bytes, rest) = split(rest);
    let (metadata_bytes, query_bytes) = split(rest);
    let path = String::from_utf8_lossy(path_bytes);
    let sub = String::from_utf8_lossy(metadata_bytes);

    let mut metadata = Map::new();
    metadata.insert("sub".to_owned(), Value::String(sub.to_string()));
    let base = match fill_base_url(template, &metadata) {
        Ok(base) => base,
        Err(e) => {
            assert!(template.contains('{'), "a fixed base URL was refused: {e}");
            assert_clean(&e, &[400]);
            return;
        }
    };
    if template.contains('{') {
        check_filled_base(template, &sub, &base);
    }

    let query = match parse_strict(query_bytes, 4) {
        Ok(Value::Object(members)) => Some(members),
        _ => None,
    };
    let target = match build_target(&base, Some(&path), query.as_ref()) {
        Ok(target) => target,
        Err(e) => {
            assert_clean(&e, &[400]);
            return;
        }
    };
    assert_eq!(target.scheme(), base.scheme(), "scheme changed");
    assert_eq!(target.host(), base.host(), "host changed");
    assert_eq!(target.port(), base.port(), "port changed");
    assert!(
        target.username().is_empty() && target.password().is_none(),
        "userinfo added"
    );
    assert!(target.fragment().is_none(), "fragment added");
    assert!(target.path().starts_with(base.path()), "left the base path");
    for segment in target.path().split('/') {
        let mut current = segment.to_owned();
        for _ in 0..4 {
            let bare = current.split(';').next().unwrap_or_default();
            assert!(bare != "." && bare != "..", "dot segment in the target");
            current = percent_decode_str(&current)
                .decode_utf8_lossy()
                .into_owned();
        }
    }
    assert!(
        host_allowed(&target, &default_allowed_hosts(&base)),
        "the target's host is not the provider's"
    );
    let reparsed = Url::parse(target.as_str()).unwrap_or_else(|e| {
        panic!("the target does not parse back: {e}");
    });
    assert_eq!(reparsed, target, "the target does not round-trip");
    let _ = classify_host(&target);
    // The path text as an allowed_hosts entry: judged without panicking.
    let entry = path.to_string();
    if validate_allowed_host_entry(&entry).is_err() {
        assert!(
            !host_allowed(&target, &[entry]),
            "a refused allowed_hosts entry matched"
        );
    }
}

/// The filled `{metadata.sub}` base URL: the value fills one label or one segment, nothing
/// else of the template changes.
fn check_filled_base(template: &str, sub: &str, base: &Url) {
    assert!(
        base.username().is_empty() && base.password().is_none() && base.fragment().is_none(),
        "metadata added userinfo or a fragment"
    );
    assert_eq!(base.port(), None, "metadata added a port");
    assert_eq!(base.query(), None, "metadata added a query");
    let sub = sub.to_ascii_lowercase();
    if template.starts_with("https://{") {
        let host = base.host_str().unwrap_or_default();
        assert!(
            host.strip_suffix(".example.com") == Some(sub.as_str()),
            "metadata changed the host beyond its label"
        );
        assert_eq!(base.path(), "/api", "metadata changed the path");
    } else {
        assert_eq!(
            base.host_str(),
            Some("api.example.com"),
            "metadata changed the host"
        );
        let segments: Vec<&str> = base.path().split('/').collect();
        assert_eq!(segments.len(), 3, "metadata added or removed a path level");
    }
}

/// Splits at the first NUL byte (the rest is empty without one).
fn split(data: &[u8]) -> (&[u8], &[u8]) {
    match data.iter().position(|b| *b == 0) {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &[]),
    }
}

fn encode(value: &Value) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_else(|e| panic!("a value does not encode: {e}"))
}

fn encode_map(members: &Map<String, Value>) -> Vec<u8> {
    serde_json::to_vec(members).unwrap_or_else(|e| panic!("a value does not encode: {e}"))
}

/// An error answered to a caller: one of the expected statuses, and no caller text in it (the
/// marker `~` appears in no message template).
fn assert_clean(e: &CoreError, statuses: &[u16]) {
    let status = e.code().http_status();
    assert!(
        statuses.contains(&status),
        "unexpected status {status}: {e}"
    );
    for message in [e.to_string(), e.public_message()] {
        assert!(
            !message.contains('~'),
            "an error message repeats the caller's text: {message}"
        );
    }
}

/// The invariants of `tresor_core::service::bearer_token` on one `Authorization` value.
fn bearer(header: &str) {
    let Some(token) = tresor_core::service::bearer_token(header) else {
        return;
    };
    let (scheme, rest) = header
        .split_once(' ')
        .unwrap_or_else(|| panic!("a token without a scheme"));
    assert!(
        scheme.eq_ignore_ascii_case("bearer"),
        "a token under another scheme"
    );
    assert!(!token.is_empty(), "an empty token");
    assert_eq!(token, token.trim(), "the token is not trimmed");
    assert!(rest.contains(token), "the token is not from the value");
}
