//! The example Grafana dashboard (`docs/grafana/tresor.json`) queries only what the server
//! serves: every metric name in every panel's expression is in `GET /metrics` of a running
//! embedded server, and every label a panel selects or groups by is one that metric carries.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};
use tresor_test_support::server::TestServer;

fn bin() -> &'static std::path::Path {
    env!("CARGO_BIN_EXE_tresor").as_ref()
}

fn dashboard() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/grafana/tresor.json"
    );
    let text = std::fs::read_to_string(path).expect("docs/grafana/tresor.json");
    serde_json::from_str(&text).expect("the dashboard is JSON")
}

/// Every `expr` of every panel (and of panels nested in rows).
fn expressions(panels: &Value, out: &mut Vec<String>) {
    for p in panels.as_array().expect("panels is an array") {
        for t in p["targets"].as_array().into_iter().flatten() {
            out.push(t["expr"].as_str().expect("a target has an expr").to_owned());
        }
        if p.get("panels").is_some() {
            expressions(&p["panels"], out);
        }
    }
}

/// The served series: metric name → the label names it carries.
fn served(text: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let name_end = line.find(['{', ' ']).unwrap_or(line.len());
        let labels = out.entry(line[..name_end].to_owned()).or_default();
        if let Some(rest) = line[name_end..].strip_prefix('{') {
            let body = &rest[..rest.find('}').unwrap_or(rest.len())];
            for pair in body.split("\",") {
                if let Some((k, _)) = pair.split_once('=') {
                    labels.insert(k.trim().to_owned());
                }
            }
        }
    }
    out
}

/// Names that look like tresor metrics in an expression.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(i) = rest.find("tresor_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.push(tail[..end].to_owned());
        rest = &tail[end..];
    }
    names
}

/// Label names an expression selects (`{a="…"}`) or groups by (`by (a, b)`), apart from
/// `instance` and `le`, which Prometheus and histograms supply.
fn label_names(expr: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (open, close) in [("{", '}'), ("by (", ')')] {
        for part in expr.split(open).skip(1) {
            let inner = &part[..part.find(close).unwrap_or(part.len())];
            for m in inner.split(',') {
                if let Some(k) = m.split(['=', '!']).next() {
                    out.insert(k.trim().to_owned());
                }
            }
        }
    }
    out.retain(|l| !l.is_empty() && l != "instance" && l != "le");
    out
}

#[tokio::test]
async fn every_queried_metric_and_label_is_served() {
    let d = dashboard();
    assert_eq!(d["uid"], "tresor-overview");
    let mut exprs = Vec::new();
    expressions(&d["panels"], &mut exprs);
    assert!(exprs.len() >= 8, "the dashboard has its panels: {exprs:?}");

    let s = TestServer::start(bin()).await;
    let t = s.install("app", &["storage:app"], "acct", "inst").await;
    // Some traffic, a refusal among it, so every labelled series exists.
    s.call("PUT", "/v1/kv/k", Some(&t), Some(&json!({"value": 1})))
        .await;
    s.call("GET", "/v1/kv/k", Some(&t), None).await;
    s.call("GET", "/v1/kv/absent", Some(&t), None).await;
    let r = s.call("GET", "/metrics", None, None).await;
    assert_eq!(r.status, 200);
    let served = served(&r.text);

    let mut missing = Vec::new();
    for expr in &exprs {
        let names = metric_names(expr);
        assert!(
            !names.is_empty(),
            "an expression queries no tresor metric: {expr}"
        );
        let labels = label_names(expr);
        for name in names {
            match served.get(&name) {
                None => missing.push(format!("{name} (in `{expr}`)")),
                Some(carried) => {
                    for l in &labels {
                        // A label a panel filters or groups by must be on at least one of the
                        // expression's metrics; checked per metric when it is the only one.
                        if !carried.contains(l) && metric_names(expr).len() == 1 {
                            missing.push(format!("label {l} of {name} (in `{expr}`)"));
                        }
                    }
                }
            }
        }
    }
    assert!(missing.is_empty(), "not served: {missing:#?}");
}

#[test]
fn the_label_parser_reads_selectors_and_groupings() {
    let e = r#"sum by (route) (rate(tresor_http_requests_total{instance=~"$instance",status=~"5.."}[5m]))"#;
    assert_eq!(metric_names(e), ["tresor_http_requests_total"]);
    let labels: Vec<String> = label_names(e).into_iter().collect();
    assert_eq!(labels, ["route", "status"]);
    let served = served("a_total{route=\"/x\",method=\"GET\"} 1\nb 2\n# HELP c c\n");
    assert_eq!(served["a_total"].len(), 2);
    assert!(served["b"].is_empty());
}
