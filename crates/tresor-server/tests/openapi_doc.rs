//! `docs/openapi.json` must equal the document the code builds. Run with `TRESOR_BLESS=1` to
//! rewrite it after changing the API.

#[test]
fn committed_openapi_document_is_current() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/openapi.json");
    let want = format!(
        "{}\n",
        serde_json::to_string_pretty(&tresor_server::openapi::document()).unwrap_or_default()
    );
    if std::env::var_os("TRESOR_BLESS").is_some() {
        std::fs::write(path, &want).unwrap_or_else(|e| panic!("writing {path}: {e}"));
        return;
    }
    let have = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        have == want,
        "docs/openapi.json is stale: run `TRESOR_BLESS=1 cargo test -p tresor-server --test openapi_doc`"
    );
}

#[test]
fn document_is_openapi_3_1_with_every_store() {
    let doc = tresor_server::openapi::document();
    assert_eq!(doc["openapi"], "3.1.0");
    for store in ["secrets", "settings", "kv", "shared"] {
        for suffix in ["", "/{key}", "/{key}/ops"] {
            let p = format!("/v1/{store}{suffix}");
            assert!(doc["paths"].get(&p).is_some(), "missing {p}");
        }
    }
    assert!(doc["paths"]["/v1/batch"]["post"].is_object());
}
