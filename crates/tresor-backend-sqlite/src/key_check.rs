//! A read-only view of a data directory's database, for the start-up check of the root key
//! ([`tresor_core::service::Service::check_root_key`]): a server with a wrong key file must
//! refuse before it migrates the file, switches it to WAL, or creates anything beside it.
//!
//! A cleanly stopped store is one file (the shutdown folds the log in), which is opened with
//! SQLite's `immutable=1`: no lock, no `-wal` or `-shm` file, no write. A log left by a crash
//! holds committed data the check must see, so then the file is opened `mode=ro`, which reads
//! the log and may rebuild SQLite's shared-memory index (`-shm`) beside it, but writes neither
//! the database nor the log.

use std::path::Path;
use std::sync::Mutex;

use async_trait::async_trait;
use rusqlite::{Connection, OpenFlags};
use tresor_core::CoreError;
use tresor_core::backend::{NamespaceRow, StoredKeys};

use crate::error::SqlResultExt;
use crate::{DATABASE_FILE, queries, schema};

type Result<T> = std::result::Result<T, CoreError>;

/// The wrapped keys of an embedded store, read through one read-only connection.
pub struct ReadOnlyKeys {
    conn: Mutex<Connection>,
}

impl ReadOnlyKeys {
    /// Opens `dir/tresor.db` read-only. `None` when there is no database, or one that was never
    /// migrated (nothing in it to check a key against). Refuses a schema newer than this
    /// release, as opening it for serving would.
    pub fn open(dir: &Path) -> Result<Option<ReadOnlyKeys>> {
        let path = dir.join(DATABASE_FILE);
        if !path.exists() {
            return Ok(None);
        }
        let mut wal = path.clone().into_os_string();
        wal.push("-wal");
        let log_left = std::fs::metadata(&wal).is_ok_and(|m| m.len() > 0);
        let mode = if log_left { "mode=ro" } else { "immutable=1" };
        let uri = format!("file:{}?{mode}", uri_path(&path));
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_URI;
        let conn = Connection::open_with_flags(&uri, flags).db()?;
        conn.busy_timeout(schema::BUSY_TIMEOUT).db()?;
        if schema::check_version(&conn)? == 0 {
            return Ok(None);
        }
        Ok(Some(ReadOnlyKeys {
            conn: Mutex::new(conn),
        }))
    }

    fn with<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let conn = self
            .conn
            .lock()
            .map_err(|_| CoreError::internal("the key check connection is poisoned"))?;
        f(&conn)
    }
}

#[async_trait]
impl StoredKeys for ReadOnlyKeys {
    async fn stored_meta_key(&self, name: &str) -> Result<Option<Vec<u8>>> {
        self.with(|conn| queries::meta_get(conn, name))
    }

    async fn namespace_keys_with_prefix(
        &self,
        prefix: &[u8],
        limit: usize,
    ) -> Result<Vec<NamespaceRow>> {
        self.with(|conn| queries::namespace_keys_with_prefix(conn, prefix, limit))
    }

    async fn namespace_key_without_prefixes(
        &self,
        prefixes: &[Vec<u8>],
    ) -> Result<Option<NamespaceRow>> {
        self.with(|conn| queries::namespace_key_without_prefixes(conn, prefixes))
    }
}

/// The path as the path part of an SQLite URI: bytes outside the unreserved set and `/` are
/// percent-encoded, so a `?`, `#` or `%` in a directory name is not read as URI syntax.
pub(crate) fn uri_path(path: &Path) -> String {
    use std::os::unix::ffi::OsStrExt as _;
    let mut out = String::new();
    for &b in path.as_os_str().as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'/' | b'.' | b'_' | b'-' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every file in `dir` with its size and a digest of its bytes (short to print).
    fn files(dir: &Path) -> Vec<(String, usize, u64)> {
        let mut out: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let bytes = std::fs::read(e.path()).unwrap();
                let mut h = std::hash::DefaultHasher::new();
                std::hash::Hash::hash(&bytes, &mut h);
                (
                    e.file_name().to_string_lossy().into_owned(),
                    bytes.len(),
                    std::hash::Hasher::finish(&h),
                )
            })
            .collect();
        out.sort();
        out
    }

    #[tokio::test]
    async fn reads_a_stopped_store_without_touching_it() {
        let tmp = tempfile::tempdir().unwrap();
        // Odd characters in the path must not be read as URI syntax.
        let dir = tmp.path().join("a dir?with#odd%chars");
        {
            // No audit reserve: the stopped store is then the database file alone.
            let options = crate::SqliteOptions {
                audit_reserve_bytes: 0,
                ..Default::default()
            };
            let backend = crate::SqliteBackend::open(&dir, options).unwrap();
            use tresor_core::backend::Backend as _;
            backend
                .meta_get_or_insert("token_pepper", b"wrapped")
                .await
                .unwrap();
            backend.shutdown().await;
        }
        {
            let c = Connection::open(dir.join(DATABASE_FILE)).unwrap();
            for (ns, key) in [
                (1, &b"\x01\x01\x011abc"[..]),
                (2, b"\x01\x01\x011def"),
                (3, b"\x01\x01\x012ghi"),
            ] {
                c.execute(
                    "INSERT INTO namespaces (ns, kind, owner_id, wrapped_key, created_at) \
                     VALUES (?1, 'installation', 'o', ?2, 0)",
                    rusqlite::params![ns, key],
                )
                .unwrap();
            }
        }
        let before = files(&dir);
        assert_eq!(
            before.len(),
            1,
            "{:?}",
            before.iter().map(|f| &f.0).collect::<Vec<_>>()
        );
        let keys = ReadOnlyKeys::open(&dir).unwrap().unwrap();
        assert_eq!(
            keys.stored_meta_key("token_pepper")
                .await
                .unwrap()
                .as_deref(),
            Some(&b"wrapped"[..])
        );
        let v1 = b"\x01\x01\x011".to_vec();
        let v2 = b"\x01\x01\x012".to_vec();
        let ns = |rows: Vec<NamespaceRow>| rows.iter().map(|r| r.ns).collect::<Vec<_>>();
        assert_eq!(
            ns(keys.namespace_keys_with_prefix(&v1, 5).await.unwrap()),
            [1, 2]
        );
        assert_eq!(
            ns(keys.namespace_keys_with_prefix(&v1, 1).await.unwrap()),
            [1]
        );
        assert_eq!(
            ns(keys.namespace_keys_with_prefix(&v2, 5).await.unwrap()),
            [3]
        );
        let outside = |p: Vec<Vec<u8>>| {
            let keys = &keys;
            async move {
                keys.namespace_key_without_prefixes(&p)
                    .await
                    .unwrap()
                    .map(|r| r.ns)
            }
        };
        assert_eq!(outside(vec![v1.clone()]).await, Some(3));
        assert_eq!(outside(vec![v2.clone()]).await.map(|n| n < 3), Some(true));
        assert_eq!(outside(vec![v1, v2]).await, None);
        assert!(outside(vec![]).await.is_some());
        drop(keys);
        assert_eq!(files(&dir), before);
    }

    #[test]
    fn no_database_is_no_store() {
        let tmp = tempfile::tempdir().unwrap();
        assert!(ReadOnlyKeys::open(tmp.path()).unwrap().is_none());
        assert!(files(tmp.path()).is_empty());
    }
}
