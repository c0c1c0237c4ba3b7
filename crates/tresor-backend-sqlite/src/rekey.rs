//! Installation key rotation over SQLite (see `tresor_core::sealed_rows`): the namespace
//! guard that also checks the rekey fence and the keys a commit sealed under, the fence
//! itself, the read of a namespace's sealed rows, and the one transaction that swaps the key
//! and every ciphertext.
//!
//! The writes run as [`RekeyOp`]s on the group-commit writer, each in its own savepoint, like
//! every other write; the fence makes a rotation's swap a single op even when the installation
//! is busy, because its writers wait instead of racing it.

use rusqlite::{Connection, OptionalExtension, params};
use tresor_core::CoreError;
use tresor_core::backend::Commit;
use tresor_core::backend::columns::decode_owner;
use tresor_core::model::{Millis, Ns, StoreKind};
use tresor_core::sealed_rows::{
    Rekey, RekeyCounts, SealedCredentialRow, SealedFlowRow, SealedRecordRow, SealedRows,
};

use crate::apply::{WriteStatement, insert_audit};
use crate::error::SqlResultExt;

type Result<T> = std::result::Result<T, CoreError>;

// The rotation's writes (`apply::Op::Rekey`), shared with the other backend.
pub(crate) use tresor_core::sealed_rows::{RekeyOp, RekeyOutcome};

pub(crate) fn apply(conn: &Connection, op: RekeyOp, now: Millis) -> Result<RekeyOutcome> {
    match op {
        RekeyOp::Fence {
            ns,
            lease_id,
            lease_ms,
        } => fence(conn, ns, &lease_id, now.saturating_add(lease_ms), now).map(RekeyOutcome::Done),
        RekeyOp::Unfence { ns, lease_id } => conn
            .prepare_cached("DELETE FROM rekey_fences WHERE ns = ?1 AND lease_id = ?2")
            .db()?
            .write(params![ns, lease_id])
            .db()
            .map(|n| RekeyOutcome::Done(n == 1)),
        RekeyOp::Swap(rekey) => swap(conn, &rekey).map(RekeyOutcome::Swapped),
    }
}

/// The namespace guard of a commit (invariant 7), run first inside its savepoint: every guard
/// must exist (else `Unauthenticated`) and stand unfenced, and every key the commit sealed under
/// must still be its namespace's (else `Rekeying`).
pub(crate) fn check_guards(conn: &Connection, commit: &Commit, now: Millis) -> Result<()> {
    let key_of = |ns: Ns| commit.keys.iter().filter(move |k| k.ns == ns);
    for ns in &commit.guards {
        let row: Option<(Vec<u8>, Option<Millis>)> = conn
            .prepare_cached(
                "SELECT n.wrapped_key, f.lease_until FROM namespaces n \
                 LEFT JOIN rekey_fences f ON f.ns = n.ns WHERE n.ns = ?1",
            )
            .db()?
            .query_row([ns], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()
            .db()?;
        let Some((stored, fence)) = row else {
            return Err(CoreError::Unauthenticated);
        };
        if fence.is_some_and(|until| until > now) || key_of(*ns).any(|k| k.wrapped_key != stored) {
            return Err(CoreError::Rekeying);
        }
    }
    for check in commit
        .keys
        .iter()
        .filter(|k| !commit.guards.contains(&k.ns))
    {
        match stored_key(conn, check.ns)? {
            None => return Err(CoreError::Unauthenticated),
            Some(stored) if stored != check.wrapped_key => return Err(CoreError::Rekeying),
            Some(_) => {}
        }
    }
    Ok(())
}

/// Every row of `ns` holding ciphertext, in one read transaction.
pub(crate) fn sealed_rows(conn: &Connection, ns: Ns) -> Result<SealedRows> {
    let tx = conn.unchecked_transaction().db()?;
    let records = tx
        .prepare_cached(
            "SELECT store, key, version, value, description FROM records WHERE ns = ?1 \
             ORDER BY store, key",
        )
        .db()?
        .query_map([ns], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get(1)?,
                r.get::<_, i64>(2)?,
                r.get(3)?,
                r.get(4)?,
            ))
        })
        .db()?
        .map(|row| {
            let (store, key, version, value, description) = row.db()?;
            Ok(SealedRecordRow {
                store: StoreKind::from_code(store)
                    .ok_or_else(|| CoreError::internal(format!("unknown stored store {store}")))?,
                key,
                version: version_of(version)?,
                value,
                description,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let credentials = tx
        .prepare_cached(
            "SELECT key, owner, version, metadata, secret FROM credentials WHERE ns = ?1 \
             ORDER BY key",
        )
        .db()?
        .query_map([ns], |r| {
            Ok((
                r.get(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
                r.get(3)?,
                r.get(4)?,
            ))
        })
        .db()?
        .map(|row| {
            let (key, owner, version, metadata, secret) = row.db()?;
            Ok(SealedCredentialRow {
                key,
                owner: decode_owner(&owner)?,
                version: version_of(version)?,
                metadata,
                secret,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let flows = tx
        .prepare_cached(
            "SELECT flow_id, verifier, access_token FROM oauth_flows WHERE ns = ?1 \
             ORDER BY flow_id",
        )
        .db()?
        .query_map([ns], |r| {
            Ok(SealedFlowRow {
                flow_id: r.get(0)?,
                verifier: r.get(1)?,
                access_token: r.get(2)?,
            })
        })
        .db()?
        .collect::<rusqlite::Result<Vec<_>>>()
        .db()?;
    tx.commit().db()?;
    Ok(SealedRows {
        records,
        credentials,
        flows,
    })
}

/// Puts up the fence of `ns` unless another unexpired one stands.
fn fence(conn: &Connection, ns: Ns, lease_id: &str, until: Millis, now: Millis) -> Result<bool> {
    if stored_key(conn, ns)?.is_none() {
        return Err(CoreError::NotFound("the namespace is gone".into()));
    }
    let taken = conn
        .prepare_cached(
            "INSERT INTO rekey_fences (ns, lease_id, lease_until) VALUES (?1, ?2, ?3) \
             ON CONFLICT (ns) DO UPDATE SET lease_id = excluded.lease_id, \
             lease_until = excluded.lease_until WHERE rekey_fences.lease_until <= ?4",
        )
        .db()?
        .write(params![ns, lease_id, until, now])
        .db()?;
    Ok(taken == 1)
}

/// The swap of a rotation; see [`Rekey`] for what must hold. Runs in the op's savepoint, so a
/// conflict found half-way leaves nothing behind.
fn swap(conn: &Connection, rekey: &Rekey) -> Result<RekeyCounts> {
    let ns = rekey.ns;
    let Some(stored) = stored_key(conn, ns)? else {
        return Err(CoreError::NotFound("the namespace is gone".into()));
    };
    let fenced: Option<String> = conn
        .prepare_cached("SELECT lease_id FROM rekey_fences WHERE ns = ?1")
        .db()?
        .query_row([ns], |r| r.get(0))
        .optional()
        .db()?;
    if fenced.as_deref() != Some(rekey.lease_id.as_str()) || stored != rekey.old_wrapped_key {
        return Err(CoreError::WriteConflict);
    }
    let mut counts = RekeyCounts::default();
    {
        let mut stmt = conn
            .prepare_cached(
                "UPDATE records SET value = ?1, description = ?2 \
                 WHERE ns = ?3 AND store = ?4 AND key = ?5 AND version = ?6",
            )
            .db()?;
        for r in &rekey.records {
            let version = i64::try_from(r.version)
                .map_err(|_| CoreError::internal("a version is out of range"))?;
            counts.records += stmt
                .write(params![
                    r.value,
                    r.description,
                    ns,
                    r.store.code(),
                    r.key,
                    version
                ])
                .db()? as u64;
        }
    }
    {
        let mut stmt = conn
            .prepare_cached(
                "UPDATE credentials SET metadata = ?1, secret = ?2 \
                 WHERE ns = ?3 AND key = ?4 AND version = ?5",
            )
            .db()?;
        for c in &rekey.credentials {
            let version = i64::try_from(c.version)
                .map_err(|_| CoreError::internal("a version is out of range"))?;
            counts.credentials += stmt
                .write(params![c.metadata, c.secret, ns, c.key, version])
                .db()? as u64;
        }
    }
    {
        let mut stmt = conn
            .prepare_cached(
                "UPDATE oauth_flows SET verifier = ?1, access_token = ?2 \
                 WHERE flow_id = ?3 AND ns = ?4 AND verifier = ?5 AND access_token IS ?6",
            )
            .db()?;
        for (old, new) in &rekey.flows {
            if old.flow_id != new.flow_id {
                return Err(CoreError::internal("a re-sealed flow changed its id"));
            }
            counts.flows += stmt
                .write(params![
                    new.verifier,
                    new.access_token,
                    old.flow_id,
                    ns,
                    old.verifier,
                    old.access_token
                ])
                .db()? as u64;
        }
    }
    // Every row the namespace holds now was re-sealed: a row that changed, or appeared, since
    // the rotation read them would be left under the old key.
    let held: (i64, i64, i64) = conn
        .prepare_cached(
            "SELECT (SELECT count(*) FROM records WHERE ns = ?1), \
                    (SELECT count(*) FROM credentials WHERE ns = ?1), \
                    (SELECT count(*) FROM oauth_flows WHERE ns = ?1)",
        )
        .db()?
        .query_row([ns], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .db()?;
    let swapped = (
        i64::try_from(counts.records).unwrap_or(i64::MAX),
        i64::try_from(counts.credentials).unwrap_or(i64::MAX),
        i64::try_from(counts.flows).unwrap_or(i64::MAX),
    );
    if held != swapped {
        return Err(CoreError::WriteConflict);
    }
    conn.prepare_cached("UPDATE namespaces SET wrapped_key = ?1 WHERE ns = ?2")
        .db()?
        .write(params![rekey.new_wrapped_key, ns])
        .db()?;
    conn.prepare_cached("DELETE FROM rekey_fences WHERE ns = ?1")
        .db()?
        .write([ns])
        .db()?;
    insert_audit(conn, &rekey.audit)?;
    Ok(counts)
}

fn stored_key(conn: &Connection, ns: Ns) -> Result<Option<Vec<u8>>> {
    conn.prepare_cached("SELECT wrapped_key FROM namespaces WHERE ns = ?1")
        .db()?
        .query_row([ns], |r| r.get(0))
        .optional()
        .db()
}

fn version_of(v: i64) -> Result<u64> {
    u64::try_from(v).map_err(|_| CoreError::internal("a stored version is negative"))
}
