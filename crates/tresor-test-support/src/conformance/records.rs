//! Cases on records: round trips, versions, preconditions, guards, TTL, descriptions, delete
//! and lists in byte order.

use tresor_core::CoreError;
use tresor_core::backend::{
    Applied, Backend, DescriptionChange, Expiry, ListQuery, Mutation, Precondition,
};
use tresor_core::model::{StoreKind, now_millis};

use super::helpers::*;

pub async fn meta_get_or_insert_keeps_the_first_value<B: Backend>(b: &B) {
    assert_eq!(b.meta_get("pepper").await.expect("meta_get"), None);
    let first = b
        .meta_get_or_insert("pepper", b"one")
        .await
        .expect("insert");
    assert_eq!(first, b"one");
    let again = b
        .meta_get_or_insert("pepper", b"two")
        .await
        .expect("insert");
    assert_eq!(again, b"one", "an existing meta value is never replaced");
    assert_eq!(
        b.meta_get("pepper").await.expect("meta_get"),
        Some(b"one".to_vec())
    );
    assert_eq!(b.meta_get("other").await.expect("meta_get"), None);
}

pub async fn put_then_read_round_trips<B: Backend>(b: &B) {
    let ns = namespace(b, 1).await;
    let before = now_millis();
    let applied = put_ok(b, ns, "greeting", b"sealed-value").await;
    let Applied::Put {
        version,
        created,
        created_at,
        updated_at,
        expires_at,
    } = applied
    else {
        panic!("a put answers Applied::Put, got {applied:?}");
    };
    assert!(created);
    assert!((1..=MAX_VERSION).contains(&version));
    assert!(created_at >= before - CLOCK_SLACK && created_at == updated_at);
    assert_eq!(expires_at, None);
    let rec = read(b, ns, "greeting")
        .await
        .expect("the record was just written");
    assert_eq!(rec.key, b"greeting");
    assert_eq!(rec.value, b"sealed-value");
    assert_eq!(rec.version, version);
    assert_eq!((rec.created_at, rec.updated_at), (created_at, updated_at));
    assert_eq!(rec.description, None);
    assert_eq!(rec.expires_at, None);

    let replaced = put_ok(b, ns, "greeting", b"second").await;
    let Applied::Put {
        created,
        created_at: kept,
        ..
    } = replaced
    else {
        panic!("a put answers Applied::Put");
    };
    assert!(!created, "a put over a live record replaces it");
    assert_eq!(kept, created_at, "a replace keeps created_at");
    assert_eq!(
        read(b, ns, "greeting").await.expect("live").value,
        b"second"
    );
    assert!(read(b, ns, "missing").await.is_none());
}

pub async fn stores_and_namespaces_are_separate<B: Backend>(b: &B) {
    let ns1 = namespace(b, 1).await;
    let ns2 = namespace(b, 2).await;
    commit_ok(
        b,
        &[ns1, ns2],
        vec![
            put_in(ns1, StoreKind::Kv, "k", b"kv1"),
            put_in(ns1, StoreKind::Secrets, "k", b"secret1"),
            put_in(ns2, StoreKind::Kv, "k", b"kv2"),
        ],
    )
    .await;
    let value = |ns, store| async move {
        b.read_record(ns, store, b"k")
            .await
            .expect("read")
            .map(|r| r.value)
    };
    assert_eq!(value(ns1, StoreKind::Kv).await, Some(b"kv1".to_vec()));
    assert_eq!(
        value(ns1, StoreKind::Secrets).await,
        Some(b"secret1".to_vec())
    );
    assert_eq!(value(ns1, StoreKind::Settings).await, None);
    assert_eq!(value(ns2, StoreKind::Kv).await, Some(b"kv2".to_vec()));
    assert_eq!(value(ns2, StoreKind::Secrets).await, None);
    let listed = b
        .list_records(ns1, StoreKind::Secrets, &list_all())
        .await
        .expect("list");
    assert_eq!(listed.len(), 1);
}

pub async fn versions_always_increase<B: Backend>(b: &B) {
    let ns = namespace(b, 1).await;
    let mut seen = Vec::new();
    seen.push(version_of(put_ok(b, ns, "a", b"1").await));
    seen.push(version_of(put_ok(b, ns, "a", b"2").await));
    seen.push(version_of(put_ok(b, ns, "b", b"1").await));
    commit_ok(b, &[ns], vec![delete(ns, "a", Precondition::Any)]).await;
    let recreated = put_ok(b, ns, "a", b"3").await;
    assert!(matches!(recreated, Applied::Put { created: true, .. }));
    seen.push(version_of(recreated));
    // Two puts of one key in one commit get two versions.
    let both = commit_ok(b, &[ns], vec![put(ns, "c", b"1"), put(ns, "c", b"2")]).await;
    seen.extend(both.into_iter().map(version_of));
    assert!(
        seen.windows(2).all(|w| w[0] < w[1]),
        "versions must strictly increase: {seen:?}"
    );
    assert!(seen.iter().all(|v| (1..=MAX_VERSION).contains(v)));
    let last = read(b, ns, "c").await.expect("live");
    assert_eq!(Some(&last.version), seen.last());
}

pub async fn failed_precondition_applies_nothing<B: Backend>(b: &B) {
    let ns = namespace(b, 1).await;
    let v = version_of(put_ok(b, ns, "existing", b"old").await);
    let failing: Vec<(&str, Mutation)> = vec![
        (
            "absent on a live key",
            put_expect(ns, "existing", Precondition::Absent),
        ),
        (
            "wrong version",
            put_expect(ns, "existing", Precondition::Version(v + 1)),
        ),
        (
            "version on a missing key",
            put_expect(ns, "missing", Precondition::Version(v)),
        ),
        (
            "delete with a wrong version",
            delete(ns, "existing", Precondition::Version(v + 1)),
        ),
        (
            "check absent on a live key",
            check(ns, "existing", Precondition::Absent),
        ),
        (
            "check a missing key",
            check(ns, "missing", Precondition::Version(v)),
        ),
    ];
    for (what, m) in failing {
        // An earlier mutation of the same commit must not survive the failure either.
        let result = commit(b, &[ns], vec![put(ns, "bystander", b"x"), m]).await;
        assert!(
            matches!(result, Err(CoreError::WriteConflict)),
            "{what}: expected WriteConflict, got {result:?}"
        );
        assert!(
            read(b, ns, "bystander").await.is_none(),
            "{what}: nothing may apply"
        );
        let kept = read(b, ns, "existing").await.expect("still there");
        assert_eq!(
            (kept.version, kept.value.as_slice()),
            (v, b"old".as_slice()),
            "{what}"
        );
    }
    // The same preconditions hold when they should.
    let applied = commit_ok(
        b,
        &[ns],
        vec![
            check(ns, "existing", Precondition::Version(v)),
            check(ns, "missing", Precondition::Absent),
            put_expect(ns, "existing", Precondition::Version(v)),
            put_expect(ns, "missing", Precondition::Absent),
        ],
    )
    .await;
    assert_eq!(applied[0], Applied::Checked);
    assert_eq!(applied[1], Applied::Checked);
    let v2 = version_of(applied[2]);
    commit_ok(
        b,
        &[ns],
        vec![delete(ns, "existing", Precondition::Version(v2))],
    )
    .await;
    assert!(read(b, ns, "existing").await.is_none());
}

pub async fn later_mutations_see_earlier_ones<B: Backend>(b: &B) {
    let ns = namespace(b, 1).await;
    let result = commit(
        b,
        &[ns],
        vec![
            put_expect(ns, "k", Precondition::Absent),
            check(ns, "k", Precondition::Absent),
        ],
    )
    .await;
    assert!(
        matches!(result, Err(CoreError::WriteConflict)),
        "a check after a put of the same commit sees the put: {result:?}"
    );
    assert!(read(b, ns, "k").await.is_none());
    let applied = commit_ok(
        b,
        &[ns],
        vec![
            put_expect(ns, "k", Precondition::Absent),
            delete(ns, "k", Precondition::Any),
            put_expect(ns, "k", Precondition::Absent),
        ],
    )
    .await;
    assert_eq!(applied.len(), 3);
    assert_eq!(applied[1], Applied::Deleted);
    assert_eq!(
        read(b, ns, "k").await.expect("live").version,
        version_of(applied[2])
    );
}

pub async fn missing_guard_applies_nothing<B: Backend>(b: &B) {
    let ns = namespace(b, 1).await;
    let result = commit(b, &[ns, 987_654_321], vec![put(ns, "k", b"v")]).await;
    assert!(
        matches!(result, Err(CoreError::Unauthenticated)),
        "a missing guard namespace fails the commit: {result:?}"
    );
    assert!(read(b, ns, "k").await.is_none());
    let events = b.audit_query(&audit_all()).await.expect("audit query");
    assert!(
        events.iter().all(|e| e.operation != "commit"),
        "the audit of a failed commit is not written with it"
    );
}

pub async fn expired_records_disappear<B: Backend>(b: &B) {
    let ns = namespace(b, 1).await;
    let start = now_millis();
    let applied = commit_ok(
        b,
        &[ns],
        vec![
            put_with(
                ns,
                "short",
                Precondition::Any,
                DescriptionChange::Keep,
                Expiry::In(1),
            ),
            put(ns, "long", b"v"),
        ],
    )
    .await;
    let Applied::Put { expires_at, .. } = applied[0] else {
        panic!("a put answers Applied::Put");
    };
    let expires_at = expires_at.expect("Expiry::In sets expires_at");
    assert!(
        (start + 1000 - CLOCK_SLACK..=now_millis() + 1000 + CLOCK_SLACK).contains(&expires_at),
        "expires_at is about one second after the commit"
    );
    assert!(read(b, ns, "short").await.is_some());
    assert_eq!(
        list_keys(b, ns, "", None, 10).await,
        keys(&["long", "short"])
    );
    sleep_past(expires_at).await;
    assert!(
        read(b, ns, "short").await.is_none(),
        "an expired record reads as absent"
    );
    assert_eq!(
        list_keys(b, ns, "", None, 10).await,
        keys(&["long"]),
        "lists omit it"
    );
    let result = commit(b, &[ns], vec![check(ns, "short", Precondition::Absent)]).await;
    assert!(result.is_ok(), "preconditions see it as absent: {result:?}");
}

pub async fn expiry_keep_and_clear<B: Backend>(b: &B) {
    let ns = namespace(b, 1).await;
    let ttl = |e| put_with(ns, "k", Precondition::Any, DescriptionChange::Keep, e);
    let first = commit_ok(b, &[ns], vec![ttl(Expiry::In(3600))]).await[0];
    let set = expires_of(first).expect("In sets an expiry");
    let kept = commit_ok(b, &[ns], vec![ttl(Expiry::Keep)]).await[0];
    assert_eq!(
        expires_of(kept),
        Some(set),
        "Keep keeps the live record's expiry"
    );
    assert_eq!(read(b, ns, "k").await.expect("live").expires_at, Some(set));
    let cleared = commit_ok(b, &[ns], vec![ttl(Expiry::Clear)]).await[0];
    assert_eq!(expires_of(cleared), None);
    assert_eq!(read(b, ns, "k").await.expect("live").expires_at, None);
    let fresh = commit_ok(
        b,
        &[ns],
        vec![put_with(
            ns,
            "new",
            Precondition::Any,
            DescriptionChange::Keep,
            Expiry::Keep,
        )],
    )
    .await[0];
    assert_eq!(
        expires_of(fresh),
        None,
        "Keep on a new record means no expiry"
    );
}

pub async fn put_over_expired_record_is_a_create<B: Backend>(b: &B) {
    let ns = namespace(b, 1).await;
    let first = commit_ok(
        b,
        &[ns],
        vec![put_with(
            ns,
            "k",
            Precondition::Any,
            DescriptionChange::Set(Some(b"sealed-description".to_vec())),
            Expiry::In(1),
        )],
    )
    .await[0];
    let Applied::Put {
        version: old_version,
        created_at: old_created,
        expires_at: Some(expires_at),
        ..
    } = first
    else {
        panic!("a put with Expiry::In answers with an expiry");
    };
    sleep_past(expires_at).await;
    let second = commit_ok(
        b,
        &[ns],
        vec![put_with(
            ns,
            "k",
            Precondition::Absent,
            DescriptionChange::Keep,
            Expiry::Keep,
        )],
    )
    .await[0];
    let Applied::Put {
        version,
        created,
        created_at,
        expires_at,
        ..
    } = second
    else {
        panic!("a put answers Applied::Put");
    };
    assert!(created, "a put over an expired record is a create");
    assert!(created_at > old_created, "with a new created_at");
    assert!(version > old_version);
    assert_eq!(
        expires_at, None,
        "Keep does not revive the expired record's expiry"
    );
    let rec = read(b, ns, "k").await.expect("live again");
    assert_eq!(rec.description, None, "nor its description");
}

pub async fn description_keep_and_set<B: Backend>(b: &B) {
    let ns = namespace(b, 1).await;
    let with = |d| put_with(ns, "k", Precondition::Any, d, Expiry::Clear);
    let description = |d: &[u8]| DescriptionChange::Set(Some(d.to_vec()));
    commit_ok(b, &[ns], vec![with(description(b"first"))]).await;
    assert_eq!(
        read(b, ns, "k").await.expect("live").description,
        Some(b"first".to_vec())
    );
    commit_ok(b, &[ns], vec![with(DescriptionChange::Keep)]).await;
    assert_eq!(
        read(b, ns, "k").await.expect("live").description,
        Some(b"first".to_vec()),
        "Keep keeps the description"
    );
    commit_ok(b, &[ns], vec![with(description(b"second"))]).await;
    assert_eq!(
        read(b, ns, "k").await.expect("live").description,
        Some(b"second".to_vec())
    );
    let listed = b
        .list_records(ns, StoreKind::Kv, &list_all())
        .await
        .expect("list");
    assert_eq!(
        listed[0].description,
        Some(b"second".to_vec()),
        "lists carry descriptions"
    );
    commit_ok(b, &[ns], vec![with(DescriptionChange::Set(None))]).await;
    assert_eq!(read(b, ns, "k").await.expect("live").description, None);
    commit_ok(
        b,
        &[ns],
        vec![put_with(
            ns,
            "new",
            Precondition::Any,
            DescriptionChange::Keep,
            Expiry::Clear,
        )],
    )
    .await;
    assert_eq!(read(b, ns, "new").await.expect("live").description, None);
}

pub async fn delete_removes_a_record<B: Backend>(b: &B) {
    let ns = namespace(b, 1).await;
    put_ok(b, ns, "k", b"v").await;
    put_ok(b, ns, "other", b"v").await;
    let applied = commit_ok(b, &[ns], vec![delete(ns, "k", Precondition::Any)]).await;
    assert_eq!(applied, vec![Applied::Deleted]);
    assert!(read(b, ns, "k").await.is_none());
    assert_eq!(list_keys(b, ns, "", None, 10).await, keys(&["other"]));
    // Deleting a missing key without a precondition succeeds.
    let applied = commit_ok(b, &[ns], vec![delete(ns, "k", Precondition::Any)]).await;
    assert_eq!(applied, vec![Applied::Deleted]);
    let absent = commit(b, &[ns], vec![delete(ns, "k", Precondition::Absent)]).await;
    assert!(absent.is_ok(), "Absent holds for a deleted key: {absent:?}");
}

/// Keys whose UTF-8 bytes sort differently from their characters or from a case-insensitive
/// or locale collation.
const ORDER_KEYS: &[&str] = &[
    "Zebra",
    "apple",
    "apple/pie",
    "apples",
    "apq",
    "ap",
    "é",
    "ä",
    "éclair",
    "z",
    "~tilde",
    "中",
    "\u{FFFF}",
    "\u{10FFFF}",
    "\u{10FFFF}a",
    "\u{10FFFF}\u{10FFFF}",
];

pub async fn list_is_in_byte_order<B: Backend>(b: &B) {
    let ns = namespace(b, 1).await;
    let mutations = ORDER_KEYS.iter().map(|k| put(ns, k, b"v")).collect();
    commit_ok(b, &[ns], mutations).await;
    let mut want: Vec<Vec<u8>> = ORDER_KEYS.iter().map(|k| k.as_bytes().to_vec()).collect();
    want.sort();
    assert_eq!(
        list_keys(b, ns, "", None, 100).await,
        want,
        "keys sort by their bytes"
    );
    let listed = b
        .list_records(ns, StoreKind::Kv, &list_all())
        .await
        .expect("list");
    assert!(
        listed.iter().all(|r| r.value.is_empty()),
        "lists never carry values"
    );
    assert!(listed.iter().all(|r| r.version >= 1));
}

pub async fn list_prefix_cursor_and_limit<B: Backend>(b: &B) {
    let ns = namespace(b, 1).await;
    let mutations = ORDER_KEYS.iter().map(|k| put(ns, k, b"v")).collect();
    commit_ok(b, &[ns], mutations).await;
    let check = |prefix: &'static str,
                 after: Option<&'static str>,
                 limit,
                 want: &'static [&'static str]| async move {
        assert_eq!(
            list_keys(b, ns, prefix, after, limit).await,
            keys(want),
            "prefix {prefix:?} after {after:?} limit {limit}"
        );
    };
    check("app", None, 10, &["apple", "apple/pie", "apples"]).await;
    check("apple", None, 10, &["apple", "apple/pie", "apples"]).await;
    check("apple/", None, 10, &["apple/pie"]).await;
    check("app", None, 2, &["apple", "apple/pie"]).await;
    check("app", Some("apple/pie"), 10, &["apples"]).await;
    check("app", Some("apples"), 10, &[]).await;
    check("app", Some("a"), 10, &["apple", "apple/pie", "apples"]).await;
    check("app", Some("b"), 10, &[]).await;
    check("", Some("z"), 3, &["~tilde", "ä", "é"]).await;
    check("é", None, 10, &["é", "éclair"]).await;
    check(
        "\u{10FFFF}",
        None,
        10,
        &["\u{10FFFF}", "\u{10FFFF}a", "\u{10FFFF}\u{10FFFF}"],
    )
    .await;
    check("\u{10FFFF}", Some("\u{10FFFF}"), 1, &["\u{10FFFF}a"]).await;
    check("\u{FFFF}", None, 10, &["\u{FFFF}"]).await;
    check("nothing", None, 10, &[]).await;
    check("", None, 0, &[]).await;
    // Paging with the cursor visits every key once, in order.
    let mut seen = Vec::new();
    let mut after: Option<Vec<u8>> = None;
    loop {
        let page = b
            .list_records(
                ns,
                StoreKind::Kv,
                &ListQuery {
                    prefix: Vec::new(),
                    after: after.clone(),
                    limit: 3,
                },
            )
            .await
            .expect("list");
        let Some(last) = page.last() else { break };
        after = Some(last.key.clone());
        seen.extend(page.into_iter().map(|r| r.key));
    }
    let mut want: Vec<Vec<u8>> = ORDER_KEYS.iter().map(|k| k.as_bytes().to_vec()).collect();
    want.sort();
    assert_eq!(seen, want);
}

/// The root key rotation's storage: compare-and-set of meta values and of namespace keys, the
/// scan of keys not under a version's header, and the counts per header.
pub async fn wrapped_keys_are_replaced_by_compare_and_set<B: Backend>(b: &B) {
    b.meta_get_or_insert("active", b"1").await.expect("insert");
    assert!(
        !b.meta_replace("active", b"9", b"2").await.expect("cas"),
        "a stale value wins"
    );
    assert!(!b.meta_replace("absent", b"1", b"2").await.expect("cas"));
    assert_eq!(
        b.meta_get("absent").await.expect("get"),
        None,
        "a CAS never inserts"
    );
    assert!(b.meta_replace("active", b"1", b"2").await.expect("cas"));
    assert_eq!(
        b.meta_get("active").await.expect("get"),
        Some(b"2".to_vec())
    );

    // Five namespaces: keys under "v1:" and "v2:" (as version headers would be).
    let mut nss = Vec::new();
    for n in 1..=5 {
        nss.push(namespace(b, n).await);
    }
    let v1 = |ns: tresor_core::model::Ns| format!("v1:{ns}").into_bytes();
    let v2 = |ns: tresor_core::model::Ns| format!("v2:{ns}").into_bytes();
    for ns in &nss {
        let current = b.namespace_key(*ns).await.expect("key").expect("a key");
        assert!(
            b.namespace_key_replace(*ns, &current, &v1(*ns))
                .await
                .expect("cas")
        );
    }
    assert!(
        !b.namespace_key_replace(nss[0], b"stale", &v2(nss[0]))
            .await
            .expect("cas"),
        "a stale key wins"
    );
    assert!(
        !b.namespace_key_replace(9_999_999, b"x", b"y")
            .await
            .expect("cas")
    );
    assert!(
        b.namespace_key_replace(nss[1], &v1(nss[1]), &v2(nss[1]))
            .await
            .expect("cas")
    );
    assert_eq!(
        b.namespace_key(nss[1]).await.expect("key"),
        Some(v2(nss[1]))
    );

    let (counts, total) = b
        .count_namespace_keys(&[b"v1:".to_vec(), b"v2:".to_vec(), b"v3:".to_vec()])
        .await
        .expect("count");
    assert_eq!(counts, vec![4, 1, 0]);
    assert_eq!(total, 5);

    // In ns order, after the cursor, not under "v2:", at most `limit`.
    let not_v2 = |after: tresor_core::model::Ns, limit: usize| async move {
        b.namespace_keys_not_under(b"v2:", after, limit)
            .await
            .expect("scan")
            .into_iter()
            .map(|r| r.ns)
            .collect::<Vec<_>>()
    };
    let mut expected: Vec<tresor_core::model::Ns> =
        nss.iter().copied().filter(|ns| *ns != nss[1]).collect();
    expected.sort_unstable();
    assert_eq!(not_v2(0, 100).await, expected);
    assert_eq!(not_v2(0, 2).await, expected[..2].to_vec());
    assert_eq!(not_v2(expected[1], 100).await, expected[2..].to_vec());
    // A prefix longer than some keys, and bytes that are not text, compare as bytes.
    let long = vec![0xff; 64];
    assert_eq!(
        b.namespace_keys_not_under(&long, 0, 100)
            .await
            .expect("scan")
            .len(),
        5
    );
}
