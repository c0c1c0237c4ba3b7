//! `tresor backup` and `tresor restore`: an online, consistent copy of the embedded store while
//! a server runs, and its return into a fresh data directory with the shredded list re-applied
//! (`docs/operations.md`, "Backups and restore").
//!
//! `backup` reads the store through a read-only connection of its own (the server keeps its
//! lock and keeps writing) and copies it with SQLite's online backup API in one read
//! transaction (`tresor_backend_sqlite::backup_online`) into a temporary file beside FILE, which
//! is synced and renamed into place. The one file it writes in the data directory is
//! `DIR/last-backup.json` (replaced atomically), which says when the last backup was taken,
//! where to and how large it is, for `tresor status` and for monitoring.
//!
//! `restore` checks the file (a tresor store of a schema this release knows, SQLite's integrity
//! check) and the root key against it, then works in `DIR/.restore-partial/`: the copy is
//! opened as a server would open it (migrated, WAL), every installation, app and account whose
//! namespace the shredded list names is deleted again through the backend (records,
//! credentials, flows, tokens, wrapped key), and only then is the file moved to
//! `DIR/tresor.db`. A restore that fails leaves no store in DIR.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{self, Read as _};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, anyhow, bail};
use aws_lc_rs::digest;
use serde_json::{Value, json};
use tresor_backend_sqlite::{
    DATABASE_FILE, SourceState, SqliteBackend, SqliteOptions, StoreSummary, backup_online,
    inspect_file,
};
use tresor_core::audit::AuditEvent;
use tresor_core::backend::Backend;
use tresor_core::model::{Ns, format_millis, now_millis};
use tresor_crypto::RootKeyRing;

use crate::database::describe;
use crate::serve::{
    DB_FILE, LOCK_FILE, ROOT_KEY_FILE, check_embedded_key, create_private_dir, load_key_file,
    lock_data_dir,
};
use crate::shredded::{self, LIST_FILE};

/// The long `--help` of `tresor backup`.
pub const BACKUP_ABOUT: &str = "Copies the embedded store into FILE while the server keeps \
    running and writing: one consistent point in time (SQLite's online backup API inside one \
    read transaction, through a read-only connection; the server's lock is not taken and \
    nothing in the store changes). The copy is written beside FILE, synced and renamed into \
    place; an existing FILE is refused unless --force. A JSON line on stdout says what the \
    backup holds, and DIR/last-backup.json records the last backup (time, file, size) for \
    `tresor status`: the only file this command writes in the data directory.\n\n\
    THE ROOT KEY IS NOT IN THE BACKUP. Records stay encrypted and every data key stays wrapped \
    by the root key, so the backup is useless without it: back up the root key file (DIR/root.key \
    or the --master-key-file of the server) and the shredded list beside it (DIR/shredded.log, \
    or KEYFILE.shredded) separately, and keep the key away from the backups.";

/// The long `--help` of `tresor restore`.
pub const RESTORE_ABOUT: &str = "Brings a file written by `tresor backup` back into a fresh \
    data directory (missing, empty, or holding only root.key and shredded.log). The file is \
    checked (a tresor store, SQLite's integrity check) and so is the root key against it before \
    anything is written. The shredded list beside the root key (see `tresor backup --help`) is \
    then re-applied: every installation, app or account deleted after the backup was taken is \
    deleted again, with its records, credentials and wrapped key, so an uninstall is never \
    undone by a restore. The restored store appears as DIR/tresor.db only once all of that \
    succeeded.\n\n\
    The root key must be given as the server will be given it: --master-key-file FILE, \
    TRESOR_MASTER_KEY, or DIR/root.key placed there first. Start the server with that same key.";

/// Flags of `tresor backup`.
#[derive(Debug, clap::Args)]
pub struct BackupArgs {
    /// Directory of the embedded store (a server may be running on it).
    #[arg(long, env = "TRESOR_DATA_DIR", default_value = "./tresor-data")]
    pub data_dir: PathBuf,
    /// Replace FILE when it exists.
    #[arg(long)]
    pub force: bool,
    /// The backup file to write. It holds no root key: back that up separately.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
}

/// Flags of `tresor restore`.
#[derive(Debug, clap::Args)]
pub struct RestoreArgs {
    /// Directory to restore into: missing, empty, or holding only root.key and shredded.log.
    #[arg(long, env = "TRESOR_DATA_DIR", default_value = "./tresor-data")]
    pub data_dir: PathBuf,
    /// The root key file of the backed-up store (else TRESOR_MASTER_KEY, else DIR/root.key).
    #[arg(long, env = "TRESOR_MASTER_KEY_FILE")]
    pub master_key_file: Option<PathBuf>,
    /// The shredded list to re-apply. Default: the one beside the root key
    /// (DIR/shredded.log for a key file named root.key or a key from TRESOR_MASTER_KEY,
    /// KEYFILE.shredded for another key file).
    #[arg(long, value_name = "FILE")]
    pub shredded_list: Option<PathBuf>,
    /// The file `tresor backup` wrote.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
}

/// The file in the data directory that records the last backup.
pub const LAST_BACKUP_FILE: &str = "last-backup.json";

/// What is said on every backup, on stderr, besides the help.
const NO_ROOT_KEY: &str = "WARNING: the backup does NOT contain the root key. Its records are \
    ciphertext and its keys are wrapped by the root key: without that key the backup cannot be \
    restored. Back up the root key file and the shredded list beside it separately.";

/// The name the restored file has while it is checked and the shredded list is re-applied.
const STAGING_DIR: &str = ".restore-partial";

pub async fn backup(args: BackupArgs) -> anyhow::Result<()> {
    let dir = args.data_dir.clone();
    if !dir.join(DB_FILE).is_file() {
        bail!("{} holds no embedded store (no {DB_FILE})", dir.display());
    }
    if !args.force && args.file.exists() {
        bail!("{} exists; give --force to replace it", args.file.display());
    }
    let file = args.file.clone();
    let force = args.force;
    let made = tokio::task::spawn_blocking(move || take_backup(&dir, &file, force))
        .await
        .context("the backup thread failed")??;

    let line = json!({
        "backup": made.file.display().to_string(),
        "data_dir": std::path::absolute(&args.data_dir)
            .unwrap_or_else(|_| args.data_dir.clone())
            .display()
            .to_string(),
        "taken_at": format_millis(made.taken_at),
        "bytes": made.bytes,
        "sha256": made.sha256,
        "schema_version": made.summary.schema_version,
        "apps": made.summary.apps,
        "accounts": made.summary.accounts,
        "installations": made.summary.installations,
        "records": made.summary.records,
        "credentials": made.summary.credentials,
        "root_key_included": false,
    });
    println!("{line}");
    eprintln!(
        "backed up {} installations and {} records to {} ({} bytes)",
        made.summary.installations,
        made.summary.records,
        made.file.display(),
        made.bytes
    );
    eprintln!("{NO_ROOT_KEY}");
    if let Err(e) = record_last_backup(&args.data_dir, &line) {
        eprintln!(
            "warning: the backup is complete, but {} could not be written: {e:#}",
            args.data_dir.join(LAST_BACKUP_FILE).display()
        );
    }
    Ok(())
}

/// A finished backup.
struct Made {
    file: PathBuf,
    taken_at: i64,
    bytes: u64,
    sha256: String,
    summary: StoreSummary,
}

fn take_backup(dir: &Path, file: &Path, force: bool) -> anyhow::Result<Made> {
    // Held while the copy runs when no server holds it, so that none starts meanwhile.
    let (state, _held) = source_state(dir)?;
    let parent = parent_of(file);
    let name = file
        .file_name()
        .ok_or_else(|| anyhow!("{} names no file", file.display()))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".partial-{}", std::process::id()));
    let tmp = parent.join(tmp_name);
    create_private_file(&tmp)?;
    let outcome = (|| {
        let taken_at = now_millis();
        let summary = backup_online(dir, state, &tmp)
            .map_err(|e| anyhow!("{}", describe(&e)))
            .with_context(|| format!("copying the store in {}", dir.display()))?;
        let (bytes, sha256) = sync_and_digest(&tmp)?;
        place(&tmp, file, force)?;
        sync_dir(parent)?;
        Ok(Made {
            file: std::path::absolute(file).unwrap_or_else(|_| file.to_owned()),
            taken_at,
            bytes,
            sha256,
            summary,
        })
    })();
    if outcome.is_err() {
        let _ = std::fs::remove_file(&tmp);
        let mut journal = tmp.into_os_string();
        journal.push("-journal");
        let _ = std::fs::remove_file(journal);
    }
    outcome
}

/// Whether a server holds the data directory: its lock file, locked (opened read-only, never
/// created). When none does, the lock is taken and returned, so that none starts during the
/// copy.
fn source_state(dir: &Path) -> anyhow::Result<(SourceState, Option<File>)> {
    let path = dir.join(LOCK_FILE);
    let file = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((SourceState::Stopped, None)),
        Err(e) => return Err(e).with_context(|| format!("opening {}", path.display())),
    };
    match file.try_lock() {
        Ok(()) => Ok((SourceState::Stopped, Some(file))),
        Err(std::fs::TryLockError::WouldBlock) => Ok((SourceState::Live, None)),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(e).with_context(|| format!("locking {}", path.display()))
        }
    }
}

/// Moves the finished copy to `file`: never over an existing file without `force` (a hard link
/// fails when the name is taken, so a file that appeared meanwhile is not replaced).
fn place(tmp: &Path, file: &Path, force: bool) -> anyhow::Result<()> {
    if force {
        return std::fs::rename(tmp, file)
            .with_context(|| format!("renaming the copy to {}", file.display()));
    }
    match std::fs::hard_link(tmp, file) {
        Ok(()) => std::fs::remove_file(tmp).with_context(|| format!("removing {}", tmp.display())),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            bail!("{} exists; give --force to replace it", file.display())
        }
        // A file system without hard links: check, then rename.
        Err(_) if !file.exists() => std::fs::rename(tmp, file)
            .with_context(|| format!("renaming the copy to {}", file.display())),
        Err(_) => bail!("{} exists; give --force to replace it", file.display()),
    }
}

/// Records the last backup in the data directory: a temporary file, synced, renamed.
fn record_last_backup(dir: &Path, line: &Value) -> anyhow::Result<()> {
    let path = dir.join(LAST_BACKUP_FILE);
    let tmp = dir.join(format!(
        ".{LAST_BACKUP_FILE}.partial-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_file(&tmp);
    let written = (|| {
        use std::io::Write as _;
        let mut f = create_private_file(&tmp)?;
        let mut bytes = serde_json::to_vec_pretty(line)?;
        bytes.push(b'\n');
        f.write_all(&bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        sync_dir(dir)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

pub async fn restore(args: RestoreArgs) -> anyhow::Result<()> {
    let dir = args.data_dir.clone();
    let file = args.file.clone();
    let before = tokio::task::spawn_blocking(move || inspect_file(&file))
        .await
        .context("the restore thread failed")?
        .map_err(|e| anyhow!("{}", describe(&e)))
        .with_context(|| format!("refusing {}, nothing was written", args.file.display()))?;
    let created_dir = check_fresh(&dir)?;
    let (root, key_source) = restore_root_key(&args)?;
    let list_path = args
        .shredded_list
        .clone()
        .unwrap_or_else(|| shredded::list_path(args.master_key_file.as_deref(), &dir));
    let list = shredded::read(&list_path)
        .with_context(|| "refusing to restore, nothing was written".to_owned())?;

    create_private_dir(&dir)?;
    let lock = lock_data_dir(&dir)?;
    let staging = dir.join(STAGING_DIR);
    let outcome = restore_into(&args.file, &dir, &staging, &root, list.as_ref()).await;
    if outcome.is_err() {
        let _ = std::fs::remove_dir_all(&staging);
        let _ = std::fs::remove_file(dir.join(LOCK_FILE));
        if created_dir {
            let _ = std::fs::remove_dir(&dir);
        }
    }
    drop(lock);
    let (after, reapplied) = outcome?;

    let line = json!({
        "restored": std::path::absolute(&args.file)
            .unwrap_or_else(|_| args.file.clone())
            .display()
            .to_string(),
        "data_dir": std::path::absolute(&dir).unwrap_or_else(|_| dir.clone()).display().to_string(),
        "schema_version": after.schema_version,
        "backup_schema_version": before.schema_version,
        "apps": after.apps,
        "accounts": after.accounts,
        "installations": after.installations,
        "records": after.records,
        "credentials": after.credentials,
        "shredded_list": list.as_ref().map(|_| list_path.display().to_string()),
        "shredded_entries": list.as_ref().map_or(0, |l| l.entries.len()),
        "reapplied": {
            "installations": reapplied.installations,
            "apps": reapplied.apps,
            "accounts": reapplied.accounts,
        },
    });
    println!("{line}");
    eprintln!(
        "restored {} into {}: {} installations and {} records",
        args.file.display(),
        dir.display(),
        after.installations,
        after.records
    );
    match &list {
        Some(l) => {
            eprintln!(
                "re-applied the shredded list {} ({} entries): {} shredded installations, {} apps \
                 and {} accounts deleted again",
                list_path.display(),
                l.entries.len(),
                reapplied.installations,
                reapplied.apps,
                reapplied.accounts
            );
            if l.torn_tail {
                eprintln!(
                    "note: the list's last line was cut off by a crash and skipped (it was never \
                     acknowledged)"
                );
            }
        }
        None => eprintln!(
            "note: no shredded list at {}, so nothing was re-applied (there is none until the \
             first uninstall with this key). If installations were uninstalled after this \
             backup was taken and their list is elsewhere, restore again with --shredded-list \
             FILE, or they come back",
            list_path.display()
        ),
    }
    eprintln!(
        "start the server on {} with the root key from {key_source}",
        dir.display()
    );
    Ok(())
}

/// What the re-applied shredded list deleted.
#[derive(Debug, Default)]
struct Reapplied {
    installations: usize,
    apps: usize,
    accounts: usize,
}

async fn restore_into(
    file: &Path,
    dir: &Path,
    staging: &Path,
    root: &RootKeyRing,
    list: Option<&shredded::Parsed>,
) -> anyhow::Result<(StoreSummary, Reapplied)> {
    create_private_dir(staging)?;
    let staged = staging.join(DATABASE_FILE);
    let (source, target) = (file.to_owned(), staged.clone());
    tokio::task::spawn_blocking(move || copy_synced(&source, &target))
        .await
        .context("the restore thread failed")??;
    check_embedded_key(staging, root)
        .await
        .context("checking the root key against the backup")?;

    let backend = SqliteBackend::open(
        staging,
        SqliteOptions {
            audit_reserve_bytes: 0,
            ..SqliteOptions::default()
        },
    )
    .map_err(|e| anyhow!("opening the restored store: {}", describe(&e)))?;
    let shredded: BTreeSet<Ns> = list
        .map(|l| {
            l.entries
                .iter()
                .flat_map(|e| e.namespaces.iter().copied())
                .collect()
        })
        .unwrap_or_default();
    let reapplied = reapply(&backend, &shredded).await;
    backend.shutdown().await;
    let reapplied = reapplied?;

    let mut wal = staged.clone().into_os_string();
    wal.push("-wal");
    if std::fs::metadata(&wal).is_ok_and(|m| m.len() > 0) {
        bail!("the restored store could not be folded into one file (its log is left)");
    }
    let checked = staged.clone();
    let after = tokio::task::spawn_blocking(move || inspect_file(&checked))
        .await
        .context("the restore thread failed")?
        .map_err(|e| anyhow!("checking the restored store: {}", describe(&e)))?;
    std::fs::rename(&staged, dir.join(DB_FILE))
        .with_context(|| format!("moving the restored store into {}", dir.display()))?;
    sync_dir(dir)?;
    std::fs::remove_dir_all(staging).with_context(|| format!("removing {}", staging.display()))?;
    Ok((after, reapplied))
}

/// Deletes again every installation, app and account whose namespace is in `shredded`, as the
/// server deleted them (same backend operations, audited as `restore.shred`).
async fn reapply(backend: &SqliteBackend, shredded: &BTreeSet<Ns>) -> anyhow::Result<Reapplied> {
    let mut done = Reapplied::default();
    if shredded.is_empty() {
        return Ok(done);
    }
    let err = |what: &str, e: tresor_core::CoreError| anyhow!("{what}: {}", describe(&e));
    let installations_before = backend
        .list_installations()
        .await
        .map_err(|e| err("listing installations", e))?;
    for app in backend
        .list_apps()
        .await
        .map_err(|e| err("listing apps", e))?
    {
        if shredded.contains(&app.ns) {
            let mut ev = event();
            ev.app_id = Some(app.app_id.clone());
            backend
                .delete_app(&app.app_id, ev)
                .await
                .map_err(|e| err(&format!("deleting app `{}`", app.app_id), e))?;
            done.apps += 1;
        }
    }
    for account in backend
        .list_accounts()
        .await
        .map_err(|e| err("listing accounts", e))?
    {
        if shredded.contains(&account.ns) {
            let mut ev = event();
            ev.account_id = Some(account.account_id.clone());
            backend
                .delete_account(&account.account_id, ev)
                .await
                .map_err(|e| err(&format!("deleting account `{}`", account.account_id), e))?;
            done.accounts += 1;
        }
    }
    for inst in backend
        .list_installations()
        .await
        .map_err(|e| err("listing installations", e))?
    {
        if shredded.contains(&inst.ns) {
            let mut ev = event();
            ev.installation_id = Some(inst.installation_id.clone());
            ev.app_id = Some(inst.app_id.clone());
            ev.account_id = Some(inst.account_id.clone());
            backend
                .uninstall(&inst.installation_id, ev)
                .await
                .map_err(|e| err(&format!("uninstalling `{}`", inst.installation_id), e))?;
        }
    }
    let left = backend
        .list_installations()
        .await
        .map_err(|e| err("listing installations", e))?;
    done.installations = installations_before.len() - left.len().min(installations_before.len());
    Ok(done)
}

fn event() -> AuditEvent {
    AuditEvent {
        id: 0,
        time: now_millis(),
        request_id: "restore".into(),
        token_id: None,
        app_id: None,
        account_id: None,
        installation_id: None,
        operation: "restore.shred".into(),
        store: None,
        key: None,
        status: 204,
        remote_addr: None,
    }
}

/// Refuses a data directory with anything in it but a root key and a shredded list placed
/// there for the restore. Whether the directory is missing (and will be created).
fn check_fresh(dir: &Path) -> anyhow::Result<bool> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(true),
        Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
    };
    let mut found = Vec::new();
    for entry in entries {
        let name = entry
            .with_context(|| format!("reading {}", dir.display()))?
            .file_name();
        if name != ROOT_KEY_FILE && name != LIST_FILE {
            found.push(name.to_string_lossy().into_owned());
        }
    }
    if !found.is_empty() {
        found.sort();
        found.truncate(5);
        bail!(
            "refusing to restore into {}: it is not empty (it holds {}); restore only into a \
             new data directory (one with nothing but {ROOT_KEY_FILE} and {LIST_FILE} in it)",
            dir.display(),
            found.join(", ")
        );
    }
    Ok(false)
}

/// The root key as the server will load it, and where it came from.
fn restore_root_key(args: &RestoreArgs) -> anyhow::Result<(RootKeyRing, String)> {
    if let Some(path) = &args.master_key_file {
        return Ok((
            load_key_file(path)?,
            format!("--master-key-file {}", path.display()),
        ));
    }
    if let Ok(b64) = std::env::var("TRESOR_MASTER_KEY") {
        let ring = RootKeyRing::from_base64(&b64).map_err(|e| anyhow!("TRESOR_MASTER_KEY: {e}"))?;
        return Ok((ring, "TRESOR_MASTER_KEY".into()));
    }
    let path = args.data_dir.join(ROOT_KEY_FILE);
    if path.exists() {
        return Ok((load_key_file(&path)?, path.display().to_string()));
    }
    bail!(
        "the root key of the backed-up store is needed (the backup does not contain it): give \
         --master-key-file FILE or TRESOR_MASTER_KEY, or copy the key file to {} first; \
         nothing was written",
        path.display()
    )
}

fn create_private_file(path: &Path) -> anyhow::Result<File> {
    use std::os::unix::fs::OpenOptionsExt as _;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))
}

/// Copies `source` to the new file `target` (mode 0600) and syncs it.
fn copy_synced(source: &Path, target: &Path) -> anyhow::Result<()> {
    let mut from = File::open(source).with_context(|| format!("opening {}", source.display()))?;
    let mut to = create_private_file(target)?;
    io::copy(&mut from, &mut to)
        .with_context(|| format!("copying {} to {}", source.display(), target.display()))?;
    to.sync_all()
        .with_context(|| format!("syncing {}", target.display()))
}

/// Syncs a finished file; its size and SHA-256 (hex).
fn sync_and_digest(path: &Path) -> anyhow::Result<(u64, String)> {
    let mut f = File::options()
        .read(true)
        .write(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    f.sync_all()
        .with_context(|| format!("syncing {}", path.display()))?;
    let mut ctx = digest::Context::new(&digest::SHA256);
    let mut buf = vec![0u8; 1 << 16];
    let mut bytes = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        ctx.update(&buf[..n]);
        bytes += n as u64;
    }
    let hex = ctx
        .finish()
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok((bytes, hex))
}

fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

fn sync_dir(dir: &Path) -> anyhow::Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing the directory {}", dir.display()))
}
