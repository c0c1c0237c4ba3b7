//! `tresor export` and `tresor import` on PostgreSQL: rows of the canonical tables
//! ([`DumpTable`]) read and written exactly as stored, ciphertext as is.
//!
//! **Export** pages in primary-key order with a row-value cursor, `(a, b) > ($1, $2) ORDER BY
//! a, b`, one statement per page. Keys compare as bytes: record and credential keys are BYTEA,
//! and text key columns (ids and names) are compared and sorted `COLLATE "C"`, whatever the
//! database's default collation. (On a database whose default collation is not `C`, the
//! primary-key index of a text-keyed table then cannot serve the order, and each page of such a
//! table sorts the rows after the cursor; export is an offline operation, and a database
//! created with `C` collation avoids the sort.)
//!
//! **Import** inserts one call's rows in one transaction, several rows per statement; a row
//! whose primary key (or another unique column) exists, in the table or earlier in the same
//! call, fails the call with `Conflict` and nothing of it stays.
//!
//! **No bookkeeping is rebuilt**, unlike SQLite's version counter. A write gives a key the
//! version `max(previous + 1, clock in µs)` (see `tx.rs`):
//! - an imported live row is the key's `previous`, so its next version is greater;
//! - a key deleted in the source before the export has no row, and `version_floors` is not
//!   exported: its last version was handed out before the export, so it lies below the clock of
//!   any later write here — far below when it came from the embedded store's counter, and below
//!   the source database's clock at the export when it came from PostgreSQL, which this
//!   database's clock has passed by the time of the import (the same agreement of clocks within
//!   `FLOOR_MARGIN_MICROS` that `tx.rs` relies on across a failover);
//! - for the same reason every imported version is below the clock of the first write after
//!   the import, so versions keep increasing across keys too.
//!
//! Audit ids likewise come from the clock (microseconds × 1024 + position), above any imported
//! id, so audit order goes on.

use deadpool_postgres::{GenericClient, Pool};
use tokio_postgres::Row;
use tokio_postgres::types::{ToSql, Type};
use tresor_core::CoreError;
use tresor_core::dump::{Cell, CellType, Column, DumpRow, DumpTable};

use crate::error::PgResultExt;

type Result<T> = std::result::Result<T, CoreError>;

/// A statement parameter of the column's SQL type.
type Param = Box<dyn ToSql + Sync + Send>;

/// PostgreSQL allows 65 535 parameters per statement; rows per INSERT stay well below.
const MAX_PARAMS: usize = 16_384;

/// Rows per INSERT statement: enough to save round trips, few enough to keep statements small.
const MAX_ROWS_PER_INSERT: usize = 256;

/// Up to `limit` rows of `table` after the row whose key cells are `after`, in key order.
pub(crate) async fn export_rows(
    pool: &Pool,
    table: DumpTable,
    after: Option<&[Cell]>,
    limit: usize,
) -> Result<Vec<DumpRow>> {
    if limit == 0 {
        return Ok(Vec::new());
    }
    let mut params: Vec<Param> = Vec::with_capacity(table.key_len() + 1);
    if let Some(cursor) = after {
        table.check_cursor(cursor)?;
        for (cell, column) in cursor.iter().zip(table.key_columns()) {
            params.push(param(table, column, cell)?);
        }
    }
    params.push(Box::new(i64::try_from(limit).unwrap_or(i64::MAX)));
    let sql = select_sql(table, after.is_some());
    let client = pool.get().await.db()?;
    let stmt = client.prepare_cached(&sql).await.db()?;
    let rows = client.query(&stmt, &refs(&params)).await.db()?;
    rows.iter().map(|row| dump_row(table, row)).collect()
}

/// Inserts `rows` into `table` as they are, in one transaction.
pub(crate) async fn import_rows(pool: &Pool, table: DumpTable, rows: Vec<DumpRow>) -> Result<()> {
    for row in &rows {
        row.check(table)?;
    }
    if rows.is_empty() {
        return Ok(());
    }
    let columns = table.columns();
    let per_statement = (MAX_PARAMS / columns.len()).clamp(1, MAX_ROWS_PER_INSERT);
    let mut client = pool.get().await.db()?;
    let tx = client.transaction().await.db()?;
    for chunk in rows.chunks(per_statement) {
        let stmt = tx
            .prepare_cached(&insert_sql(table, chunk.len()))
            .await
            .db()?;
        let mut params: Vec<Param> = Vec::with_capacity(chunk.len() * columns.len());
        for row in chunk {
            for (cell, column) in row.0.iter().zip(columns) {
                params.push(param(table, column, cell)?);
            }
        }
        if let Err(e) = tx.execute(&stmt, &refs(&params)).await {
            // Returning drops the transaction, which rolls back every row of this call.
            return Err(insert_error(table, &e));
        }
    }
    tx.commit().await.db()?;
    Ok(())
}

fn select_sql(table: DumpTable, with_cursor: bool) -> String {
    let columns = table
        .columns()
        .iter()
        .map(|c| format!("\"{}\"", c.name))
        .collect::<Vec<_>>()
        .join(", ");
    let keys = table
        .key_columns()
        .iter()
        .map(sort_key)
        .collect::<Vec<_>>()
        .join(", ");
    let name = table.name();
    if with_cursor {
        let marks = placeholders(1, table.key_len());
        let limit = table.key_len() + 1;
        format!(
            "SELECT {columns} FROM \"{name}\" WHERE ({keys}) > ({marks}) \
             ORDER BY {keys} LIMIT ${limit}"
        )
    } else {
        format!("SELECT {columns} FROM \"{name}\" ORDER BY {keys} LIMIT $1")
    }
}

/// A key column as it is compared and sorted: text as bytes.
fn sort_key(column: &Column) -> String {
    match column.ty {
        CellType::Text => format!("\"{}\" COLLATE \"C\"", column.name),
        _ => format!("\"{}\"", column.name),
    }
}

/// `INSERT … VALUES (…), (…)` for `rows` rows.
fn insert_sql(table: DumpTable, rows: usize) -> String {
    let columns = table.columns();
    let names = columns
        .iter()
        .map(|c| format!("\"{}\"", c.name))
        .collect::<Vec<_>>()
        .join(", ");
    let values = (0..rows)
        .map(|r| format!("({})", placeholders(r * columns.len() + 1, columns.len())))
        .collect::<Vec<_>>()
        .join(", ");
    format!("INSERT INTO \"{}\" ({names}) VALUES {values}", table.name())
}

fn placeholders(first: usize, n: usize) -> String {
    (first..first + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn refs(params: &[Param]) -> Vec<&(dyn ToSql + Sync)> {
    params
        .iter()
        .map(|p| p.as_ref() as &(dyn ToSql + Sync))
        .collect()
}

/// A duplicate key is the caller's `Conflict`; the rest is mapped as everywhere in this crate.
fn insert_error(table: DumpTable, e: &tokio_postgres::Error) -> CoreError {
    if e.code().map(|c| c.code()) == Some("23505") {
        return CoreError::Conflict(format!("a row of `{}` exists already", table.name()));
    }
    crate::error::from_postgres(e)
}

/// The SQL type of a column (see `schema.rs`): integers are BIGINT but for the two narrower
/// columns, booleans BOOLEAN, bytes BYTEA.
fn sql_type(table: DumpTable, column: &Column) -> Type {
    match (table, column.name, column.ty) {
        (DumpTable::Records, "store", _) => Type::INT2,
        (DumpTable::Audit, "status", _) => Type::INT4,
        (_, _, CellType::Int) => Type::INT8,
        (_, _, CellType::Bool) => Type::BOOL,
        (_, _, CellType::Text) => Type::TEXT,
        (_, _, CellType::Bytes) => Type::BYTEA,
    }
}

/// A cell (already checked against its column) as a parameter of the column's SQL type.
fn param(table: DumpTable, column: &Column, cell: &Cell) -> Result<Param> {
    let out_of_range = || {
        CoreError::invalid(format!(
            "column `{}.{}` holds a value out of range",
            table.name(),
            column.name
        ))
    };
    let ty = sql_type(table, column);
    Ok(match cell {
        Cell::Null if ty == Type::INT2 => Box::new(None::<i16>),
        Cell::Null if ty == Type::INT4 => Box::new(None::<i32>),
        Cell::Null if ty == Type::INT8 => Box::new(None::<i64>),
        Cell::Null if ty == Type::BOOL => Box::new(None::<bool>),
        Cell::Null if ty == Type::TEXT => Box::new(None::<String>),
        Cell::Null => Box::new(None::<Vec<u8>>),
        Cell::Int(v) if ty == Type::INT2 => {
            Box::new(i16::try_from(*v).map_err(|_| out_of_range())?)
        }
        Cell::Int(v) if ty == Type::INT4 => {
            Box::new(i32::try_from(*v).map_err(|_| out_of_range())?)
        }
        Cell::Int(v) => Box::new(*v),
        Cell::Bool(v) => Box::new(*v),
        Cell::Text(v) => Box::new(v.clone()),
        Cell::Bytes(v) => Box::new(v.clone()),
    })
}

fn dump_row(table: DumpTable, row: &Row) -> Result<DumpRow> {
    table
        .columns()
        .iter()
        .enumerate()
        .map(|(i, column)| cell(table, row, i, column))
        .collect::<Result<Vec<_>>>()
        .map(DumpRow)
}

fn cell(table: DumpTable, row: &Row, idx: usize, column: &Column) -> Result<Cell> {
    let ty = sql_type(table, column);
    let cell = if ty == Type::INT2 {
        row.try_get::<_, Option<i16>>(idx)
            .db()?
            .map(|v| Cell::Int(i64::from(v)))
    } else if ty == Type::INT4 {
        row.try_get::<_, Option<i32>>(idx)
            .db()?
            .map(|v| Cell::Int(i64::from(v)))
    } else if ty == Type::INT8 {
        row.try_get::<_, Option<i64>>(idx).db()?.map(Cell::Int)
    } else if ty == Type::BOOL {
        row.try_get::<_, Option<bool>>(idx).db()?.map(Cell::Bool)
    } else if ty == Type::TEXT {
        row.try_get::<_, Option<String>>(idx).db()?.map(Cell::Text)
    } else {
        row.try_get::<_, Option<Vec<u8>>>(idx)
            .db()?
            .map(Cell::Bytes)
    };
    match cell {
        Some(cell) => Ok(cell),
        None if column.nullable => Ok(Cell::Null),
        None => Err(CoreError::internal(format!(
            "column `{}.{}` holds NULL",
            table.name(),
            column.name
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_page_by_key_with_text_compared_as_bytes() {
        assert_eq!(
            select_sql(DumpTable::Records, true),
            "SELECT \"ns\", \"store\", \"key\", \"version\", \"created_at\", \"updated_at\", \
             \"expires_at\", \"value\", \"description\" FROM \"records\" \
             WHERE (\"ns\", \"store\", \"key\") > ($1, $2, $3) \
             ORDER BY \"ns\", \"store\", \"key\" LIMIT $4"
        );
        assert_eq!(
            select_sql(DumpTable::Meta, false),
            "SELECT \"name\", \"value\" FROM \"meta\" ORDER BY \"name\" COLLATE \"C\" LIMIT $1"
        );
        assert_eq!(
            insert_sql(DumpTable::Meta, 2),
            "INSERT INTO \"meta\" (\"name\", \"value\") VALUES ($1, $2), ($3, $4)"
        );
    }

    #[test]
    fn inserts_stay_within_the_parameter_limit() {
        for table in DumpTable::ALL {
            let per = (MAX_PARAMS / table.columns().len()).clamp(1, MAX_ROWS_PER_INSERT);
            assert!(per * table.columns().len() <= 65_535, "{}", table.name());
        }
    }

    #[test]
    fn narrow_integers_are_range_checked() {
        let store = DumpTable::Records.columns()[1];
        assert!(param(DumpTable::Records, &store, &Cell::Int(3)).is_ok());
        let err = param(DumpTable::Records, &store, &Cell::Int(70_000)).err();
        assert!(matches!(err, Some(CoreError::InvalidRequest(_))), "{err:?}");
    }
}
