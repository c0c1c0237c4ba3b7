//! The neutral row format of `tresor export` and `tresor import`: every table that holds state,
//! its columns in one canonical order, and cells typed only as far as both backends need.
//!
//! Rows move exactly as stored: ciphertexts, wrapped keys and MACs are opaque bytes here, so
//! nothing is decrypted or re-encrypted on the way, and the root key is never needed. Backend
//! bookkeeping that is derived from the rows (SQLite's version counter, PostgreSQL's version
//! floors) and per-process state (the node registry) is not exported; an importing backend
//! rebuilds what it needs from the rows.

use serde::{Deserialize, Serialize};

/// The type of a column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CellType {
    Int,
    Bool,
    Text,
    Bytes,
}

/// One column of a dumped table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Column {
    pub name: &'static str,
    pub ty: CellType,
    pub nullable: bool,
}

const fn col(name: &'static str, ty: CellType) -> Column {
    Column {
        name,
        ty,
        nullable: false,
    }
}

const fn opt(name: &'static str, ty: CellType) -> Column {
    Column {
        name,
        ty,
        nullable: true,
    }
}

use CellType::{Bool, Bytes, Int, Text};

const META_COLUMNS: &[Column] = &[col("name", Text), col("value", Bytes)];
const NAMESPACES_COLUMNS: &[Column] = &[
    col("ns", Int),
    col("kind", Text),
    col("owner_id", Text),
    col("wrapped_key", Bytes),
    col("created_at", Int),
];
const APPS_COLUMNS: &[Column] = &[
    col("app_id", Text),
    col("scopes", Text),
    col("ns", Int),
    col("created_at", Int),
    col("updated_at", Int),
];
const ACCOUNTS_COLUMNS: &[Column] = &[
    col("account_id", Text),
    col("ns", Int),
    col("created_at", Int),
    col("updated_at", Int),
];
const INSTALLATIONS_COLUMNS: &[Column] = &[
    col("installation_id", Text),
    col("app_id", Text),
    col("account_id", Text),
    col("ns", Int),
    col("created_at", Int),
];
const TOKENS_COLUMNS: &[Column] = &[
    col("token_id", Text),
    col("mac", Bytes),
    col("kind", Text),
    opt("installation_id", Text),
    opt("ns", Int),
    opt("scopes", Text),
    opt("expires_at", Int),
    col("created_at", Int),
];
const RECORDS_COLUMNS: &[Column] = &[
    col("ns", Int),
    col("store", Int),
    col("key", Bytes),
    col("version", Int),
    col("created_at", Int),
    col("updated_at", Int),
    opt("expires_at", Int),
    col("value", Bytes),
    opt("description", Bytes),
];
const CREDENTIALS_COLUMNS: &[Column] = &[
    col("ns", Int),
    col("key", Bytes),
    col("owner", Text),
    col("app_id", Text),
    col("provider", Text),
    col("kind", Text),
    col("version", Int),
    col("created_at", Int),
    col("updated_at", Int),
    opt("expires_at", Int),
    opt("token_expires_at", Int),
    col("scopes", Text),
    col("needs_reconsent", Bool),
    col("metadata", Bytes),
    col("secret", Bytes),
    opt("lease_until", Int),
    opt("lease_id", Text),
];
const PROVIDERS_COLUMNS: &[Column] = &[
    col("name", Text),
    col("document", Bytes),
    opt("client_secret", Bytes),
    col("created_at", Int),
    col("updated_at", Int),
];
const OAUTH_FLOWS_COLUMNS: &[Column] = &[
    col("flow_id", Text),
    col("ns", Int),
    col("installation_id", Text),
    col("provider", Text),
    col("store_key", Bytes),
    col("store_owner", Text),
    col("scopes", Text),
    opt("return_to", Text),
    col("state_mac", Bytes),
    col("verifier", Bytes),
    col("status", Text),
    opt("error", Text),
    opt("access_token", Bytes),
    col("taken", Bool),
    col("expires_at", Int),
    col("created_at", Int),
];
const AUDIT_COLUMNS: &[Column] = &[
    col("id", Int),
    col("time", Int),
    col("request_id", Text),
    opt("token_id", Text),
    opt("app_id", Text),
    opt("account_id", Text),
    opt("installation_id", Text),
    col("operation", Text),
    opt("store", Text),
    opt("key", Text),
    col("status", Int),
    opt("remote_addr", Text),
];

/// A table that `export` writes and `import` reads, in the order they are moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DumpTable {
    Meta,
    Namespaces,
    Apps,
    Accounts,
    Installations,
    Tokens,
    Records,
    Credentials,
    Providers,
    OauthFlows,
    Audit,
}

impl DumpTable {
    /// Every table, in the order an export writes them.
    pub const ALL: [DumpTable; 11] = [
        DumpTable::Meta,
        DumpTable::Namespaces,
        DumpTable::Apps,
        DumpTable::Accounts,
        DumpTable::Installations,
        DumpTable::Tokens,
        DumpTable::Records,
        DumpTable::Credentials,
        DumpTable::Providers,
        DumpTable::OauthFlows,
        DumpTable::Audit,
    ];

    /// The SQL table name (the same in every backend).
    pub fn name(self) -> &'static str {
        match self {
            DumpTable::Meta => "meta",
            DumpTable::Namespaces => "namespaces",
            DumpTable::Apps => "apps",
            DumpTable::Accounts => "accounts",
            DumpTable::Installations => "installations",
            DumpTable::Tokens => "tokens",
            DumpTable::Records => "records",
            DumpTable::Credentials => "credentials",
            DumpTable::Providers => "providers",
            DumpTable::OauthFlows => "oauth_flows",
            DumpTable::Audit => "audit",
        }
    }

    /// The columns in canonical order; the first [`key_len`](Self::key_len) are the primary
    /// key, by which rows are exported in order.
    pub fn columns(self) -> &'static [Column] {
        match self {
            DumpTable::Meta => META_COLUMNS,
            DumpTable::Namespaces => NAMESPACES_COLUMNS,
            DumpTable::Apps => APPS_COLUMNS,
            DumpTable::Accounts => ACCOUNTS_COLUMNS,
            DumpTable::Installations => INSTALLATIONS_COLUMNS,
            DumpTable::Tokens => TOKENS_COLUMNS,
            DumpTable::Records => RECORDS_COLUMNS,
            DumpTable::Credentials => CREDENTIALS_COLUMNS,
            DumpTable::Providers => PROVIDERS_COLUMNS,
            DumpTable::OauthFlows => OAUTH_FLOWS_COLUMNS,
            DumpTable::Audit => AUDIT_COLUMNS,
        }
    }

    /// How many leading columns form the primary key.
    pub fn key_len(self) -> usize {
        match self {
            DumpTable::Records => 3,
            DumpTable::Credentials => 2,
            _ => 1,
        }
    }

    /// The primary-key columns.
    pub fn key_columns(self) -> &'static [Column] {
        &self.columns()[..self.key_len()]
    }

    /// Checks that an export cursor is a full primary key of this table.
    pub fn check_cursor(self, cursor: &[Cell]) -> crate::Result<()> {
        let fits = cursor.len() == self.key_len()
            && cursor
                .iter()
                .zip(self.key_columns())
                .all(|(cell, column)| cell.fits(column));
        if fits {
            Ok(())
        } else {
            Err(crate::CoreError::invalid(format!(
                "the export cursor is not a key of `{}`",
                self.name()
            )))
        }
    }

    pub fn parse(name: &str) -> Option<DumpTable> {
        DumpTable::ALL.into_iter().find(|t| t.name() == name)
    }
}

/// One cell of a dumped row. Bytes are opaque (ciphertext, wrapped keys, MACs, keys).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Cell {
    Null,
    Int(i64),
    Bool(bool),
    Text(String),
    Bytes(Vec<u8>),
}

impl std::fmt::Debug for Cell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Cell::Null => f.write_str("Null"),
            Cell::Int(v) => write!(f, "Int({v})"),
            Cell::Bool(v) => write!(f, "Bool({v})"),
            // Text cells are ids, names and metadata; bytes may be sealed values: length only.
            Cell::Text(v) => write!(f, "Text({} chars)", v.chars().count()),
            Cell::Bytes(v) => write!(f, "Bytes({} bytes)", v.len()),
        }
    }
}

impl Cell {
    /// Does this cell fit `column`?
    pub fn fits(&self, column: &Column) -> bool {
        matches!(
            (self, column.ty),
            (Cell::Int(_), CellType::Int)
                | (Cell::Bool(_), CellType::Bool)
                | (Cell::Text(_), CellType::Text)
                | (Cell::Bytes(_), CellType::Bytes)
        ) || (column.nullable && matches!(self, Cell::Null))
    }
}

/// One row of a dumped table, its cells in the order of [`DumpTable::columns`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DumpRow(pub Vec<Cell>);

impl DumpRow {
    /// Checks the row against the table's columns: the count and every cell's type.
    pub fn check(&self, table: DumpTable) -> crate::Result<()> {
        let columns = table.columns();
        if self.0.len() != columns.len() {
            return Err(crate::CoreError::invalid(format!(
                "a row of `{}` has {} cells, not {}",
                table.name(),
                self.0.len(),
                columns.len()
            )));
        }
        for (cell, column) in self.0.iter().zip(columns) {
            if !cell.fits(column) {
                return Err(crate::CoreError::invalid(format!(
                    "column `{}.{}` holds a cell of the wrong type",
                    table.name(),
                    column.name
                )));
            }
        }
        Ok(())
    }

    /// The primary-key cells: the cursor after this row.
    pub fn key(&self, table: DumpTable) -> &[Cell] {
        &self.0[..table.key_len().min(self.0.len())]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_table_has_a_key_and_unique_column_names() {
        for table in DumpTable::ALL {
            assert!(table.key_len() >= 1 && table.key_len() <= table.columns().len());
            assert!(table.key_columns().iter().all(|c| !c.nullable));
            let mut names: Vec<_> = table.columns().iter().map(|c| c.name).collect();
            names.sort_unstable();
            names.dedup();
            assert_eq!(names.len(), table.columns().len(), "{}", table.name());
            assert_eq!(DumpTable::parse(table.name()), Some(table));
        }
    }

    #[test]
    fn rows_are_checked_against_their_columns() {
        let ok = DumpRow(vec![Cell::Text("pepper".into()), Cell::Bytes(vec![1, 2])]);
        assert!(ok.check(DumpTable::Meta).is_ok());
        let short = DumpRow(vec![Cell::Text("pepper".into())]);
        assert!(short.check(DumpTable::Meta).is_err());
        let null_key = DumpRow(vec![Cell::Null, Cell::Bytes(vec![])]);
        assert!(null_key.check(DumpTable::Meta).is_err());
        let wrong = DumpRow(vec![Cell::Int(1), Cell::Bytes(vec![])]);
        assert!(wrong.check(DumpTable::Meta).is_err());
    }

    #[test]
    fn cursors_must_be_full_keys() {
        let key = [Cell::Int(1), Cell::Int(2), Cell::Bytes(b"k".to_vec())];
        assert!(DumpTable::Records.check_cursor(&key).is_ok());
        assert!(DumpTable::Records.check_cursor(&key[..2]).is_err());
        assert!(DumpTable::Meta.check_cursor(&key[..1]).is_err());
        assert!(
            DumpTable::Meta
                .check_cursor(&[Cell::Text("a".into())])
                .is_ok()
        );
    }

    #[test]
    fn debug_never_shows_bytes_or_text() {
        let row = DumpRow(vec![
            Cell::Text("canary-text".into()),
            Cell::Bytes(b"canary-bytes".to_vec()),
        ]);
        let shown = format!("{row:?}");
        assert!(!shown.contains("canary"), "{shown}");
    }
}
