//! `tresor status`'s row counts ([`tresor_core::Backend::store_counts`]) in one statement, and
//! the database's size.

use deadpool_postgres::GenericClient;
use tresor_core::backend::StoreCounts;

use crate::error::TxError;

pub(crate) async fn store_counts(c: &impl GenericClient) -> Result<StoreCounts, TxError> {
    let row = c
        .query_one(
            "SELECT (SELECT count(*) FROM apps), (SELECT count(*) FROM accounts), \
             (SELECT count(*) FROM installations), (SELECT count(*) FROM records), \
             (SELECT count(*) FROM credentials), (SELECT count(*) FROM audit), \
             pg_database_size(current_database())",
            &[],
        )
        .await?;
    let n = |i: usize| -> Result<u64, TxError> {
        Ok(u64::try_from(row.try_get::<_, i64>(i)?).unwrap_or(0))
    };
    Ok(StoreCounts {
        apps: n(0)?,
        accounts: n(1)?,
        installations: n(2)?,
        records: n(3)?,
        credentials: n(4)?,
        audit_events: n(5)?,
        bytes: Some(n(6)?),
    })
}
