//! Online backups of the embedded store (`tresor backup`) and the read-only look at a backup
//! file that `tresor restore` takes before it copies one into place.
//!
//! A backup is SQLite's online backup API run from a connection of its own, opened read-only
//! on the live file while a server keeps writing: the whole copy is one `sqlite3_backup_step`
//! inside one read transaction, so it is the store as of one commit (WAL readers never block
//! the writer; the log only grows until the copy ends, because checkpoints cannot pass a
//! reader). The copy is then made a self-contained rollback-journal file (no `-wal` to carry
//! along), checked with `PRAGMA integrity_check`, and counted. Nothing is decrypted and nothing
//! is written into the data directory: records stay ciphertext, keys stay wrapped by the root
//! key, which is not in the file.

use std::path::Path;

use rusqlite::backup::{Backup, StepResult};
use rusqlite::{Connection, OpenFlags};
use tresor_core::CoreError;

use crate::error::SqlResultExt;
use crate::{DATABASE_FILE, schema};

type Result<T> = std::result::Result<T, CoreError>;

/// What a store file holds, counted in one read transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreSummary {
    /// `PRAGMA user_version`: the schema migrations applied.
    pub schema_version: i64,
    pub apps: u64,
    pub accounts: u64,
    pub installations: u64,
    /// Record rows (expired ones not yet purged included).
    pub records: u64,
    pub credentials: u64,
}

/// How the store to copy is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceState {
    /// A server may be writing: read through the WAL and its shared-memory index.
    Live,
    /// No server can write while the copy runs (the caller holds the data directory's lock).
    /// A store without a log left is then opened `immutable=1`, which creates no file.
    Stopped,
}

/// Copies `dir/tresor.db` into `dest`, an empty file the caller created (with the permissions
/// the copy should have), as one point in time. `dest` is written but not synced: the caller
/// syncs it before it renames it into place. Refuses a store whose schema is newer than this
/// release or that was never migrated, and a copy that fails its integrity check.
pub fn backup_online(dir: &Path, state: SourceState, dest: &Path) -> Result<StoreSummary> {
    let source_path = dir.join(DATABASE_FILE);
    if !source_path.is_file() {
        return Err(CoreError::Unavailable(format!(
            "{} holds no embedded store (no {DATABASE_FILE})",
            dir.display()
        )));
    }
    let source = open_read_only(&source_path, state)?;
    if schema::check_version(&source)? == 0 {
        return Err(CoreError::Unavailable(
            "the store was never migrated: there is nothing to back up".into(),
        ));
    }
    let mut copy = Connection::open(dest).db()?;
    // The caller fsyncs the finished file once; SQLite need not sync each step of the copy.
    copy.pragma_update(None, "synchronous", "OFF").db()?;
    copy_all_pages(&source, &mut copy)?;
    drop(source);
    // The copied header still says WAL. A rollback journal makes the backup one file that
    // opens anywhere without a `-wal` beside it; a server switches it back to WAL at start.
    let mode: String = copy
        .query_row("PRAGMA journal_mode=DELETE", [], |r| r.get(0))
        .db()?;
    if !mode.eq_ignore_ascii_case("delete") {
        return Err(CoreError::Internal(format!(
            "the backup copy stayed in journal mode `{mode}`"
        )));
    }
    integrity_check(&copy)?;
    let summary = summarize(&copy)?;
    copy.close().map_err(|(_, e)| e).db()?;
    Ok(summary)
}

/// Checks and counts a backup file without changing it or creating anything beside it: the
/// file must be a tresor store of a schema this release knows, and pass `integrity_check`.
pub fn inspect_file(path: &Path) -> Result<StoreSummary> {
    if !path.is_file() {
        return Err(CoreError::Unavailable(format!(
            "{} is not a file",
            path.display()
        )));
    }
    let conn = open_read_only(path, SourceState::Stopped)?;
    let version = schema::check_version(&conn)?;
    if version == 0 {
        return Err(CoreError::Unavailable(format!(
            "{} is not a tresor store (no schema)",
            path.display()
        )));
    }
    integrity_check(&conn)?;
    summarize(&conn)
}

/// The whole database in one backup step: one read transaction on the source, so a
/// concurrent commit is either entirely in the copy or not at all (a step that copied part
/// of the file would restart whenever another process commits, and might never finish under
/// load). Busy or locked (the log being recovered) is retried for a few seconds.
fn copy_all_pages(source: &Connection, copy: &mut Connection) -> Result<()> {
    let backup = Backup::new(source, copy).db()?;
    let deadline = std::time::Instant::now() + schema::BUSY_TIMEOUT;
    loop {
        match backup.step(-1).db()? {
            StepResult::Done => return Ok(()),
            StepResult::Busy | StepResult::Locked | StepResult::More
                if std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => {
                return Err(CoreError::Unavailable(format!(
                    "the store stayed busy while it was being copied ({other:?})"
                )));
            }
        }
    }
}

/// A read-only connection that never writes the database or its log. A live store is read
/// through its WAL (`mode=ro`); a stopped one without a log left is `immutable=1`.
fn open_read_only(path: &Path, state: SourceState) -> Result<Connection> {
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    let log_left = std::fs::metadata(&wal).is_ok_and(|m| m.len() > 0);
    let mode = match state {
        SourceState::Stopped if !log_left => "immutable=1",
        _ => "mode=ro",
    };
    let uri = format!("file:{}?{mode}", crate::key_check::uri_path(path));
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY
        | OpenFlags::SQLITE_OPEN_NO_MUTEX
        | OpenFlags::SQLITE_OPEN_URI;
    let conn = Connection::open_with_flags(&uri, flags).db()?;
    conn.busy_timeout(schema::BUSY_TIMEOUT).db()?;
    Ok(conn)
}

fn integrity_check(conn: &Connection) -> Result<()> {
    let mut stmt = conn.prepare("PRAGMA integrity_check").db()?;
    let rows: Vec<String> = stmt
        .query_map([], |r| r.get(0))
        .db()?
        .collect::<std::result::Result<_, _>>()
        .db()?;
    if rows == ["ok"] {
        return Ok(());
    }
    let shown: Vec<&str> = rows.iter().take(5).map(String::as_str).collect();
    Err(CoreError::Internal(format!(
        "the copy failed SQLite's integrity check: {}",
        shown.join("; ")
    )))
}

/// The counts, all in one read transaction.
fn summarize(conn: &Connection) -> Result<StoreSummary> {
    conn.execute_batch("BEGIN").db()?;
    let summary = (|| {
        let count = |table: &str| -> Result<u64> {
            let n: i64 = conn
                .query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
                .db()?;
            u64::try_from(n).map_err(|_| CoreError::Internal(format!("{table}: negative count")))
        };
        Ok(StoreSummary {
            schema_version: schema::check_version(conn)?,
            apps: count("apps")?,
            accounts: count("accounts")?,
            installations: count("installations")?,
            records: count("records")?,
            credentials: count("credentials")?,
        })
    })();
    conn.execute_batch("COMMIT").db()?;
    summary
}

#[cfg(test)]
mod tests {
    use super::*;
    use tresor_core::backend::Backend as _;

    fn files(dir: &Path) -> Vec<String> {
        let mut out: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        out.sort();
        out
    }

    #[tokio::test]
    async fn copies_a_live_store_into_one_file() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        let options = crate::SqliteOptions {
            audit_reserve_bytes: 0,
            ..Default::default()
        };
        let backend = crate::SqliteBackend::open(&dir, options).unwrap();
        backend
            .meta_get_or_insert("token_pepper", b"wrapped")
            .await
            .unwrap();
        let before = files(&dir);
        let out = tmp.path().join("out");
        std::fs::create_dir(&out).unwrap();
        let dest = out.join("copy.db");
        std::fs::File::create(&dest).unwrap();
        let summary = backup_online(&dir, SourceState::Live, &dest).unwrap();
        assert_eq!(summary.schema_version, schema::SCHEMA_VERSION);
        assert_eq!(summary.installations, 0);
        // One file, no log or journal beside it; the data directory gained nothing.
        assert_eq!(files(&out), ["copy.db"]);
        assert_eq!(files(&dir), before);
        assert_eq!(inspect_file(&dest).unwrap(), summary);
        assert_eq!(files(&out), ["copy.db"]);
        let c = Connection::open(&dest).unwrap();
        let pepper: Vec<u8> = c
            .query_row(
                "SELECT value FROM meta WHERE name = 'token_pepper'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(pepper, b"wrapped");
        backend.shutdown().await;
    }

    #[test]
    fn refuses_what_is_not_a_store() {
        let tmp = tempfile::tempdir().unwrap();
        let junk = tmp.path().join("junk");
        std::fs::write(&junk, b"not a database, not at all, no no no").unwrap();
        assert!(inspect_file(&junk).is_err());
        assert!(inspect_file(&tmp.path().join("missing")).is_err());
        let dest = tmp.path().join("dest");
        std::fs::File::create(&dest).unwrap();
        assert!(backup_online(tmp.path(), SourceState::Live, &dest).is_err());
    }
}
