//! `tresor migrate`: applies the pending schema migrations of a PostgreSQL database (under the
//! migration lock, so it is safe next to starting servers) or of an embedded store, and prints
//! the schema version before and after. Schema only: it never reads or writes data, so it needs
//! no root key.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail};
use tresor_backend_sqlite::{DATABASE_FILE, SqliteBackend, SqliteOptions};

use crate::database::{self, DatabaseArgs, DatabaseUrl, describe};

/// The long `--help` of `tresor migrate`.
pub const LONG_ABOUT: &str = "Applies the pending schema migrations and prints the schema \
    version before and after (exit 0 when the schema is current afterwards).\n\n\
    Give --database-url for PostgreSQL, or --data-dir for the embedded store. Migrations change \
    the schema only, never the data, so no root key is needed (no --master-key-file). Servers \
    also migrate when they start, so this is for upgrading ahead of a rollout; a database \
    written by a newer release is refused.";

/// Flags of `tresor migrate`.
#[derive(Debug, clap::Args)]
pub struct MigrateArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// Directory of the embedded store to migrate (instead of --database-url). No server may be
    /// running on it.
    #[arg(long, env = "TRESOR_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
}

pub async fn run(args: MigrateArgs) -> anyhow::Result<()> {
    match (&args.database.database_url, &args.data_dir) {
        (Some(_), Some(_)) => {
            bail!("give one of --database-url and --data-dir, not both")
        }
        (Some(url), None) => migrate_postgres(url, &args.database).await,
        (None, Some(dir)) => migrate_embedded(dir).await,
        (None, None) => bail!(
            "nothing to migrate: give --database-url URL (PostgreSQL) or --data-dir DIR (the \
             embedded store)"
        ),
    }
}

async fn migrate_postgres(url: &DatabaseUrl, args: &DatabaseArgs) -> anyhow::Result<()> {
    let backend = database::connect(url, args).await?;
    let outcome = async {
        let before = backend
            .schema_version()
            .await
            .map_err(|e| url.error("reading the schema version", &e))?;
        let report = backend
            .migrate()
            .await
            .map_err(|e| url.error(&format!("migrating {url}"), &e))?;
        print_versions(&url.to_string(), before, report.version, &report.applied);
        Ok(())
    }
    .await;
    backend.shutdown().await;
    outcome
}

async fn migrate_embedded(dir: &Path) -> anyhow::Result<()> {
    let file = dir.join(DATABASE_FILE);
    if !file.is_file() {
        bail!(
            "nothing to migrate: {} holds no embedded store (`tresor serve` creates one)",
            dir.display()
        );
    }
    let _lock = crate::serve::lock_data_dir(dir)?;
    let before = sqlite_user_version(&file)?;
    // Opening the embedded store migrates it, in one transaction.
    let backend = SqliteBackend::open(dir, SqliteOptions::default())
        .map_err(|e| anyhow!("migrating {}: {}", file.display(), describe(&e)))?;
    backend.shutdown().await;
    drop(backend);
    let after = sqlite_user_version(&file)?;
    let applied: Vec<i64> = (before + 1..=after).collect();
    print_versions(&file.display().to_string(), before, after, &applied);
    Ok(())
}

fn print_versions(what: &str, before: i64, after: i64, applied: &[i64]) {
    println!("{what}: schema version {before} before, {after} after");
    if applied.is_empty() {
        println!("nothing to apply: the schema is current");
    } else {
        let list: Vec<String> = applied.iter().map(i64::to_string).collect();
        println!("applied migrations {}", list.join(", "));
    }
}

/// The embedded store's schema version (SQLite's `user_version`, which its migrations set),
/// read through a read-only connection so that a committed but not yet checkpointed WAL counts.
fn sqlite_user_version(file: &Path) -> anyhow::Result<i64> {
    use rusqlite::OpenFlags;
    let conn = rusqlite::Connection::open_with_flags(
        file,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| anyhow!("opening {}: {e}", file.display()))?;
    conn.query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(|e| anyhow!("reading the schema version of {}: {e}", file.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        migrate: MigrateArgs,
    }

    #[test]
    fn takes_a_database_url_or_a_data_dir() {
        let args = ["migrate", "--database-url", "postgres://u:pw@h/d"];
        let cli = Cli::try_parse_from(args).unwrap();
        assert!(!format!("{cli:?}").contains(":pw@"), "{cli:?}");
        let url = cli.migrate.database.database_url.unwrap();
        assert_eq!(url.to_string(), "postgres://u:***@h/d");
        let cli = Cli::try_parse_from(["migrate", "--data-dir", "/tmp/x"]).unwrap();
        assert_eq!(cli.migrate.data_dir, Some(PathBuf::from("/tmp/x")));
    }
}
