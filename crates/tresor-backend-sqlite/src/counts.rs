//! `tresor status`'s row counts ([`tresor_core::Backend::store_counts`]): one read transaction
//! of `count(*)`s, and the file's size from SQLite's own page count.

use rusqlite::Connection;
use tresor_core::CoreError;
use tresor_core::backend::StoreCounts;

use crate::error::SqlResultExt;

pub(crate) fn store_counts(conn: &Connection) -> Result<StoreCounts, CoreError> {
    let count = |table: &str| -> Result<u64, CoreError> {
        let n: i64 = conn
            .query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
            .db()?;
        Ok(u64::try_from(n).unwrap_or(0))
    };
    let pages: i64 = conn
        .query_row(
            "SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()",
            [],
            |r| r.get(0),
        )
        .db()?;
    Ok(StoreCounts {
        apps: count("apps")?,
        accounts: count("accounts")?,
        installations: count("installations")?,
        records: count("records")?,
        credentials: count("credentials")?,
        audit_events: count("audit")?,
        bytes: u64::try_from(pages).ok(),
    })
}
