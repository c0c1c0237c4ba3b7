//! Puts the data set in place through the API, as a platform would: one app (`bench`, scope
//! `storage:app`), one account and one installation per installation index (admin API), then
//! every key with its value, in atomic batches of up to 100 PUTs per installation. Returns
//! each installation's token.

use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{Context, bail};
use http::{HeaderValue, Method};
use serde_json::{Value, json};

use crate::client::{Conn, Req, Target, bearer};
use crate::workload::DataSet;

/// How many connections the preload uses.
const PRELOAD_CONNECTIONS: usize = 8;
/// The largest batch the contract allows.
const MAX_BATCH: usize = 100;

/// Creates the installations and the records of `data`; answers one `Authorization` value per
/// installation.
pub async fn preload(
    target: &Target,
    admin_token: &str,
    data: &DataSet,
) -> anyhow::Result<Vec<HeaderValue>> {
    let admin = bearer(admin_token)?;
    let mut conn = Conn::connect(target).await?;
    let app = json!({"scopes": ["storage:app"]});
    expect(
        &mut conn,
        admin_req(Method::PUT, "/v1/admin/apps/bench", &admin, Some(app))?,
        &[200, 201],
    )
    .await?;

    let tokens = parallel(
        data.installations,
        async |conn: &mut Conn, i| {
            let account = format!("/v1/admin/accounts/bench-{i}");
            expect(
                conn,
                admin_req(Method::PUT, &account, &admin, None)?,
                &[200, 201],
            )
            .await?;
            let install = json!({"app_id": "bench", "account_id": format!("bench-{i}")});
            let path = format!("/v1/admin/installations/bench-{i}");
            let answer = expect(
                conn,
                admin_req(Method::PUT, &path, &admin, Some(install))?,
                &[200, 201],
            )
            .await?;
            // 200: installed by an earlier run against the same server; mint another token.
            let answer = match answer["token"].as_str() {
                Some(_) => answer,
                None => {
                    let path = format!("/v1/admin/installations/bench-{i}/tokens");
                    expect(
                        conn,
                        admin_req(Method::POST, &path, &admin, Some(json!({})))?,
                        &[201],
                    )
                    .await?
                }
            };
            let token = answer["token"].as_str().context("no token in the answer")?;
            bearer(token)
        },
        target,
    )
    .await?;

    if data.reuse {
        return Ok(tokens);
    }
    // Batches: per installation, its keys in chunks of up to 100.
    let per_installation = data.keys.div_ceil(data.installations);
    let chunks_per_installation = per_installation.div_ceil(MAX_BATCH).max(1);
    let chunks = data.installations * chunks_per_installation;
    let value: Value = serde_json::from_str(&data.value_json('a'))?;
    let (n, keys, store) = (data.installations, data.keys, &data.store);
    parallel(
        chunks,
        async |conn: &mut Conn, c| {
            let installation = c / chunks_per_installation;
            let chunk = c % chunks_per_installation;
            let ops: Vec<Value> = (chunk * MAX_BATCH..((chunk + 1) * MAX_BATCH).min(per_installation))
                .map(|j| installation + n * j)
                .filter(|&k| k < keys)
                .map(|k| json!({"op": "put", "store": store, "key": DataSet::key_name(k), "value": value}))
                .collect();
            if ops.is_empty() {
                return Ok(());
            }
            let body = json!({"atomic": true, "ops": ops});
            let req = Req::new(Method::POST, "/v1/batch".parse()?)
                .token(&tokens[installation])
                .json("application/json", body.to_string());
            expect(conn, req, &[200]).await?;
            Ok(())
        },
        target,
    )
    .await?;
    Ok(tokens)
}

fn admin_req(
    method: Method,
    path: &str,
    admin: &HeaderValue,
    body: Option<Value>,
) -> anyhow::Result<Req> {
    let req = Req::new(method, path.parse()?).token(admin);
    Ok(match body {
        Some(b) => req.json("application/json", b.to_string()),
        None => req,
    })
}

/// Sends `req`; fails unless the status is one of `ok`. Answers the body as JSON (`null` when
/// empty).
async fn expect(conn: &mut Conn, req: Req, ok: &[u16]) -> anyhow::Result<Value> {
    let (status, body) = conn
        .send(&req)
        .await
        .with_context(|| format!("{} {}", req.method, req.uri))?;
    if !ok.contains(&status) {
        bail!(
            "{} {} answered {status}: {}",
            req.method,
            req.uri,
            String::from_utf8_lossy(&body)
        );
    }
    if body.is_empty() {
        return Ok(Value::Null);
    }
    Ok(serde_json::from_slice(&body)?)
}

/// Runs `task(conn, i)` for every `i` in `0..count`, on a few connections at once (one task:
/// the server is the bottleneck here, not the client); answers the results in the order of `i`.
async fn parallel<T>(
    count: usize,
    task: impl AsyncFn(&mut Conn, usize) -> anyhow::Result<T>,
    target: &Target,
) -> anyhow::Result<Vec<T>> {
    let next = AtomicUsize::new(0);
    let workers = (0..PRELOAD_CONNECTIONS.min(count.max(1))).map(|_| async {
        let mut conn = Conn::connect(target).await?;
        let mut done = Vec::new();
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            if i >= count {
                return Ok::<_, anyhow::Error>(done);
            }
            done.push((i, task(&mut conn, i).await?));
        }
    });
    let mut all: Vec<(usize, T)> = futures::future::try_join_all(workers)
        .await?
        .into_iter()
        .flatten()
        .collect();
    all.sort_by_key(|(i, _)| *i);
    Ok(all.into_iter().map(|(_, t)| t).collect())
}
