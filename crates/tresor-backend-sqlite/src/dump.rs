//! `export_rows` and `import_rows` over SQLite: the tables' rows as stored, in primary-key
//! order, as neutral [`DumpRow`]s, and back.
//!
//! The SQL is built from [`DumpTable::columns`], whose names are constants of `tresor-core`,
//! never input. Keys are BLOBs or TEXT with the BINARY collation, so the row-value comparison
//! of the cursor and `ORDER BY` both follow bytes (memcmp), as the contract's key order does.
//! Booleans are INTEGER 0/1 in SQLite and become [`Cell::Bool`].

use rusqlite::types::{Value, ValueRef};
use rusqlite::{Connection, params_from_iter};
use tresor_core::CoreError;
use tresor_core::dump::{Cell, CellType, Column, DumpRow, DumpTable};

use crate::apply::{MAX_VERSION, VersionCounter};
use crate::error::{SqlResultExt, from_sqlite};

type Result<T> = std::result::Result<T, CoreError>;

/// Up to `limit` rows of `table` after the row whose key cells are `after`, in key order.
pub(crate) fn export_rows(
    conn: &Connection,
    table: DumpTable,
    after: Option<&[Cell]>,
    limit: usize,
) -> Result<Vec<DumpRow>> {
    if limit == 0 {
        return Ok(Vec::new());
    }
    let mut params = Vec::with_capacity(table.key_len() + 1);
    if let Some(cursor) = after {
        table.check_cursor(cursor)?;
        params.extend(cursor.iter().map(to_sql));
    }
    params.push(Value::Integer(i64::try_from(limit).unwrap_or(i64::MAX)));
    let mut stmt = conn
        .prepare_cached(&select_sql(table, after.is_some()))
        .db()?;
    let mut rows = stmt.query(params_from_iter(params)).db()?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().db()? {
        let cells = table
            .columns()
            .iter()
            .enumerate()
            .map(|(i, column)| from_sql(table, column, row.get_ref(i).db()?))
            .collect::<Result<Vec<_>>>()?;
        out.push(DumpRow(cells));
    }
    Ok(out)
}

/// Inserts `rows` into `table` as they are; runs inside the writer's savepoint, so a failure
/// leaves nothing of the call. A primary key (or another unique column) that exists already is
/// a `Conflict`. Raises the version counter past the imported versions.
pub(crate) fn import_rows(
    conn: &Connection,
    versions: &mut VersionCounter,
    table: DumpTable,
    rows: &[DumpRow],
) -> Result<()> {
    for row in rows {
        row.check(table)?;
    }
    let version_at = version_column(table);
    let mut highest = 0u64;
    let mut stmt = conn.prepare_cached(&insert_sql(table)).db()?;
    for row in rows {
        if let Some(i) = version_at {
            highest = highest.max(checked_version(table, &row.0[i])?);
        }
        stmt.execute(params_from_iter(row.0.iter().map(to_sql)))
            .map_err(|e| insert_error(table, &e))?;
    }
    versions.raise_to(highest);
    Ok(())
}

fn select_sql(table: DumpTable, with_cursor: bool) -> String {
    let columns = column_list(table.columns());
    let keys = column_list(table.key_columns());
    let name = table.name();
    if with_cursor {
        let marks = placeholders(1, table.key_len());
        let limit = table.key_len() + 1;
        format!(
            "SELECT {columns} FROM \"{name}\" WHERE ({keys}) > ({marks}) \
             ORDER BY {keys} LIMIT ?{limit}"
        )
    } else {
        format!("SELECT {columns} FROM \"{name}\" ORDER BY {keys} LIMIT ?1")
    }
}

fn insert_sql(table: DumpTable) -> String {
    let columns = column_list(table.columns());
    let marks = placeholders(1, table.columns().len());
    format!(
        "INSERT INTO \"{}\" ({columns}) VALUES ({marks})",
        table.name()
    )
}

fn column_list(columns: &[Column]) -> String {
    columns
        .iter()
        .map(|c| format!("\"{}\"", c.name))
        .collect::<Vec<_>>()
        .join(", ")
}

fn placeholders(first: usize, n: usize) -> String {
    (first..first + n)
        .map(|i| format!("?{i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The position of the version column of the tables whose versions come from the counter.
fn version_column(table: DumpTable) -> Option<usize> {
    match table {
        DumpTable::Records | DumpTable::Credentials => {
            table.columns().iter().position(|c| c.name == "version")
        }
        _ => None,
    }
}

fn checked_version(table: DumpTable, cell: &Cell) -> Result<u64> {
    match cell {
        Cell::Int(v) => u64::try_from(*v)
            .ok()
            .filter(|v| *v <= MAX_VERSION)
            .ok_or_else(|| {
                CoreError::invalid(format!(
                    "a row of `{}` has a version out of range",
                    table.name()
                ))
            }),
        _ => Err(CoreError::invalid(format!(
            "a row of `{}` has no integer version",
            table.name()
        ))),
    }
}

fn insert_error(table: DumpTable, e: &rusqlite::Error) -> CoreError {
    if let rusqlite::Error::SqliteFailure(failure, _) = e
        && matches!(
            failure.extended_code,
            rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY | rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
        )
    {
        return CoreError::Conflict(format!("a row of `{}` exists already", table.name()));
    }
    from_sqlite(e)
}

fn to_sql(cell: &Cell) -> Value {
    match cell {
        Cell::Null => Value::Null,
        Cell::Int(v) => Value::Integer(*v),
        Cell::Bool(v) => Value::Integer(i64::from(*v)),
        Cell::Text(v) => Value::Text(v.clone()),
        Cell::Bytes(v) => Value::Blob(v.clone()),
    }
}

/// A stored value as the cell its column declares. A BLOB column may hold TEXT (SQLite's
/// typing is per value); its bytes are the same. Anything else is a broken row.
fn from_sql(table: DumpTable, column: &Column, value: ValueRef<'_>) -> Result<Cell> {
    let cell = match (column.ty, value) {
        (_, ValueRef::Null) if column.nullable => Some(Cell::Null),
        (CellType::Int, ValueRef::Integer(v)) => Some(Cell::Int(v)),
        (CellType::Bool, ValueRef::Integer(0)) => Some(Cell::Bool(false)),
        (CellType::Bool, ValueRef::Integer(1)) => Some(Cell::Bool(true)),
        (CellType::Text, ValueRef::Text(bytes)) => std::str::from_utf8(bytes)
            .ok()
            .map(|s| Cell::Text(s.to_owned())),
        (CellType::Bytes, ValueRef::Blob(bytes) | ValueRef::Text(bytes)) => {
            Some(Cell::Bytes(bytes.to_vec()))
        }
        _ => None,
    };
    cell.ok_or_else(|| {
        CoreError::internal(format!(
            "column `{}.{}` holds a value of an unexpected type",
            table.name(),
            column.name
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_name_every_column_and_page_by_key() {
        assert_eq!(
            select_sql(DumpTable::Records, true),
            "SELECT \"ns\", \"store\", \"key\", \"version\", \"created_at\", \"updated_at\", \
             \"expires_at\", \"value\", \"description\" FROM \"records\" \
             WHERE (\"ns\", \"store\", \"key\") > (?1, ?2, ?3) \
             ORDER BY \"ns\", \"store\", \"key\" LIMIT ?4"
        );
        assert_eq!(
            select_sql(DumpTable::Meta, false),
            "SELECT \"name\", \"value\" FROM \"meta\" ORDER BY \"name\" LIMIT ?1"
        );
        assert_eq!(
            insert_sql(DumpTable::Meta),
            "INSERT INTO \"meta\" (\"name\", \"value\") VALUES (?1, ?2)"
        );
    }

    #[test]
    fn booleans_are_integers_zero_or_one() {
        let column = Column {
            name: "taken",
            ty: CellType::Bool,
            nullable: false,
        };
        let t = DumpTable::OauthFlows;
        assert_eq!(
            from_sql(t, &column, ValueRef::Integer(1)).ok(),
            Some(Cell::Bool(true))
        );
        assert_eq!(
            from_sql(t, &column, ValueRef::Integer(0)).ok(),
            Some(Cell::Bool(false))
        );
        assert!(from_sql(t, &column, ValueRef::Integer(2)).is_err());
        assert!(from_sql(t, &column, ValueRef::Null).is_err());
        assert_eq!(to_sql(&Cell::Bool(true)), Value::Integer(1));
    }
}
