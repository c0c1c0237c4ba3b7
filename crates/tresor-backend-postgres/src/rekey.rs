//! Installation key rotation over PostgreSQL (see `tresor_core::sealed_rows`): the fence, the
//! read of a namespace's sealed rows, and the one SERIALIZABLE transaction that swaps the key
//! and every ciphertext. The guard that holds other commits off a fenced namespace, or off a
//! key that has been replaced, is read with the attempt's clock (`tx::CLOCK_AND_GUARDS_SQL`).
//!
//! The swap replaces ciphertexts a chunk of rows per statement (`UPDATE … FROM unnest(…)`),
//! each row matched on the version (or, for a flow, the ciphertexts) it was read with, so a
//! large installation costs a few round trips rather than one per row.

use deadpool_postgres::GenericClient;
use tresor_core::CoreError;
use tresor_core::backend::columns::decode_owner;
use tresor_core::model::{Ns, StoreKind};
use tresor_core::sealed_rows::{
    Rekey, RekeyCounts, SealedCredentialRow, SealedFlowRow, SealedRecordRow, SealedRows,
};

use crate::apply::insert_audit;
use crate::error::TxError;
use crate::queries::{self, store_code};
use crate::tx::Tx;

type Result<T> = std::result::Result<T, TxError>;

/// Rows per `UPDATE … FROM unnest(…)` statement of a swap.
const CHUNK: usize = 500;

// The rotation's writes (`apply::Op::Rekey`), shared with the other backend.
pub(crate) use tresor_core::sealed_rows::{RekeyOp, RekeyOutcome};

pub(crate) async fn apply(t: &mut Tx<'_>, op: &RekeyOp) -> Result<RekeyOutcome> {
    match op {
        RekeyOp::Fence {
            ns,
            lease_id,
            lease_ms,
        } => {
            if queries::namespace_key(&t.tx, *ns).await?.is_none() {
                return Err(CoreError::NotFound("the namespace is gone".into()).into());
            }
            let until = t.now.saturating_add(*lease_ms);
            let n =
                t.tx.execute(
                    "INSERT INTO rekey_fences (ns, lease_id, lease_until) VALUES ($1, $2, $3) \
                     ON CONFLICT (ns) DO UPDATE SET lease_id = excluded.lease_id, \
                     lease_until = excluded.lease_until WHERE rekey_fences.lease_until <= $4",
                    &[ns, lease_id, &until, &t.now],
                )
                .await?;
            Ok(RekeyOutcome::Done(n == 1))
        }
        RekeyOp::Unfence { ns, lease_id } => {
            let n =
                t.tx.execute(
                    "DELETE FROM rekey_fences WHERE ns = $1 AND lease_id = $2",
                    &[ns, lease_id],
                )
                .await?;
            Ok(RekeyOutcome::Done(n == 1))
        }
        RekeyOp::Swap(rekey) => swap(t, rekey).await.map(RekeyOutcome::Swapped),
    }
}

/// Every row of `ns` holding ciphertext, one statement per table.
pub(crate) async fn sealed_rows(c: &impl GenericClient, ns: Ns) -> Result<SealedRows> {
    let stmt = c
        .prepare_cached(
            "SELECT store, key, version, value, description FROM records WHERE ns = $1 \
             ORDER BY store, key",
        )
        .await?;
    let mut records = Vec::new();
    for r in c.query(&stmt, &[&ns]).await? {
        let store: i16 = r.try_get(0)?;
        records.push(SealedRecordRow {
            store: StoreKind::from_code(i64::from(store)).ok_or_else(|| {
                TxError::Core(CoreError::internal(format!("unknown stored store {store}")))
            })?,
            key: r.try_get(1)?,
            version: queries::version(&r, 2)?,
            value: r.try_get(3)?,
            description: r.try_get(4)?,
        });
    }
    let stmt = c
        .prepare_cached(
            "SELECT key, owner, version, metadata, secret FROM credentials WHERE ns = $1 \
             ORDER BY key",
        )
        .await?;
    let mut credentials = Vec::new();
    for r in c.query(&stmt, &[&ns]).await? {
        let owner: String = r.try_get(1)?;
        credentials.push(SealedCredentialRow {
            key: r.try_get(0)?,
            owner: decode_owner(&owner)?,
            version: queries::version(&r, 2)?,
            metadata: r.try_get(3)?,
            secret: r.try_get(4)?,
        });
    }
    let stmt = c
        .prepare_cached(
            "SELECT flow_id, verifier, access_token FROM oauth_flows WHERE ns = $1 \
             ORDER BY flow_id COLLATE \"C\"",
        )
        .await?;
    let mut flows = Vec::new();
    for r in c.query(&stmt, &[&ns]).await? {
        flows.push(SealedFlowRow {
            flow_id: r.try_get(0)?,
            verifier: r.try_get(1)?,
            access_token: r.try_get(2)?,
        });
    }
    Ok(SealedRows {
        records,
        credentials,
        flows,
    })
}

/// The swap of a rotation; see [`Rekey`] for what must hold.
async fn swap(t: &mut Tx<'_>, rekey: &Rekey) -> Result<RekeyCounts> {
    let ns = rekey.ns;
    let Some(stored) = queries::namespace_key(&t.tx, ns).await? else {
        return Err(CoreError::NotFound("the namespace is gone".into()).into());
    };
    let fence: Option<String> =
        t.tx.query_opt("SELECT lease_id FROM rekey_fences WHERE ns = $1", &[&ns])
            .await?
            .map(|r| r.try_get(0))
            .transpose()?;
    if fence.as_deref() != Some(rekey.lease_id.as_str()) || stored != rekey.old_wrapped_key {
        return Err(CoreError::WriteConflict.into());
    }
    let mut counts = RekeyCounts::default();
    for chunk in rekey.records.chunks(CHUNK) {
        let stores: Vec<i16> = chunk.iter().map(|r| store_code(r.store)).collect();
        let keys: Vec<&[u8]> = chunk.iter().map(|r| r.key.as_slice()).collect();
        let versions = chunk
            .iter()
            .map(|r| as_i64(r.version))
            .collect::<Result<Vec<i64>>>()?;
        let values: Vec<&[u8]> = chunk.iter().map(|r| r.value.as_slice()).collect();
        let descriptions: Vec<Option<&[u8]>> =
            chunk.iter().map(|r| r.description.as_deref()).collect();
        counts.records +=
            t.tx.execute(
                "UPDATE records r SET value = u.value, description = u.description \
                 FROM unnest($2::SMALLINT[], $3::BYTEA[], $4::BIGINT[], $5::BYTEA[], \
                 $6::BYTEA[]) AS u(store, key, version, value, description) \
                 WHERE r.ns = $1 AND r.store = u.store AND r.key = u.key \
                 AND r.version = u.version",
                &[&ns, &stores, &keys, &versions, &values, &descriptions],
            )
            .await?;
    }
    for chunk in rekey.credentials.chunks(CHUNK) {
        let keys: Vec<&[u8]> = chunk.iter().map(|c| c.key.as_slice()).collect();
        let versions = chunk
            .iter()
            .map(|c| as_i64(c.version))
            .collect::<Result<Vec<i64>>>()?;
        let metadata: Vec<&[u8]> = chunk.iter().map(|c| c.metadata.as_slice()).collect();
        let secrets: Vec<&[u8]> = chunk.iter().map(|c| c.secret.as_slice()).collect();
        counts.credentials +=
            t.tx.execute(
                "UPDATE credentials c SET metadata = u.metadata, secret = u.secret \
                 FROM unnest($2::BYTEA[], $3::BIGINT[], $4::BYTEA[], $5::BYTEA[]) \
                 AS u(key, version, metadata, secret) \
                 WHERE c.ns = $1 AND c.key = u.key AND c.version = u.version",
                &[&ns, &keys, &versions, &metadata, &secrets],
            )
            .await?;
    }
    for chunk in rekey.flows.chunks(CHUNK) {
        if chunk.iter().any(|(old, new)| old.flow_id != new.flow_id) {
            return Err(CoreError::internal("a re-sealed flow changed its id").into());
        }
        let ids: Vec<&str> = chunk.iter().map(|(o, _)| o.flow_id.as_str()).collect();
        let old_verifiers: Vec<&[u8]> = chunk.iter().map(|(o, _)| o.verifier.as_slice()).collect();
        let old_tokens: Vec<Option<&[u8]>> = chunk
            .iter()
            .map(|(o, _)| o.access_token.as_deref())
            .collect();
        let new_verifiers: Vec<&[u8]> = chunk.iter().map(|(_, n)| n.verifier.as_slice()).collect();
        let new_tokens: Vec<Option<&[u8]>> = chunk
            .iter()
            .map(|(_, n)| n.access_token.as_deref())
            .collect();
        counts.flows +=
            t.tx.execute(
                "UPDATE oauth_flows f SET verifier = u.new_verifier, access_token = u.new_token \
                 FROM unnest($2::TEXT[], $3::BYTEA[], $4::BYTEA[], $5::BYTEA[], $6::BYTEA[]) \
                 AS u(flow_id, old_verifier, old_token, new_verifier, new_token) \
                 WHERE f.ns = $1 AND f.flow_id = u.flow_id AND f.verifier = u.old_verifier \
                 AND f.access_token IS NOT DISTINCT FROM u.old_token",
                &[
                    &ns,
                    &ids,
                    &old_verifiers,
                    &old_tokens,
                    &new_verifiers,
                    &new_tokens,
                ],
            )
            .await?;
    }
    // Every row the namespace holds now was re-sealed: a row that changed, or appeared, since
    // the rotation read them would be left under the old key.
    let held =
        t.tx.query_one(
            "SELECT (SELECT count(*) FROM records WHERE ns = $1), \
                    (SELECT count(*) FROM credentials WHERE ns = $1), \
                    (SELECT count(*) FROM oauth_flows WHERE ns = $1)",
            &[&ns],
        )
        .await?;
    let held: (i64, i64, i64) = (held.try_get(0)?, held.try_get(1)?, held.try_get(2)?);
    let swapped = (
        i64::try_from(counts.records).unwrap_or(i64::MAX),
        i64::try_from(counts.credentials).unwrap_or(i64::MAX),
        i64::try_from(counts.flows).unwrap_or(i64::MAX),
    );
    if held != swapped {
        return Err(CoreError::WriteConflict.into());
    }
    t.tx.execute(
        "UPDATE namespaces SET wrapped_key = $1 WHERE ns = $2",
        &[&rekey.new_wrapped_key, &ns],
    )
    .await?;
    t.tx.execute("DELETE FROM rekey_fences WHERE ns = $1", &[&ns])
        .await?;
    insert_audit(t, std::slice::from_ref(&rekey.audit)).await?;
    Ok(counts)
}

fn as_i64(v: u64) -> Result<i64> {
    i64::try_from(v).map_err(|_| CoreError::internal("a version is out of range").into())
}
