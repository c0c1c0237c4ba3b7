//! `tresor export` and `tresor import`: every row of a store (embedded or PostgreSQL) to a file
//! and back, as stored. Nothing is decrypted: ciphertexts, wrapped keys and token MACs move as
//! opaque bytes, so neither command needs the root key, and the imported store opens only with
//! the root key of the exported one.
//!
//! The file is a versioned, line-oriented stream (one JSON object a line):
//!
//! ```text
//! {"format":"tresor-export","version":1,"created_at":…,"source":"sqlite","tables":[{"name":"meta","columns":["name","value"]},…]}
//! {"t":"meta","r":["pepper","base64…"]}
//! …one line per row, tables in the order of `DumpTable::ALL`, cells in the canonical column
//! order: null, integers, booleans, text as strings, bytes as base64 strings…
//! {"format":"tresor-export-end","rows":N,"counts":{"meta":1,…},"sha256":"hex"}
//! ```
//!
//! The trailer's SHA-256 covers every byte before it. `import` reads the file twice: first it
//! checks the whole file (header, every row against its table's columns, table order, counts,
//! the digest) without touching the target, so a truncated or altered file is refused before
//! anything is imported; then it imports it in pages, re-computing the digest, and only then
//! reports success. Neither pass holds more than a page of rows in memory. The digest guards
//! against accidents (a cut-off copy, a flipped bit), not against someone who rewrites the file
//! and its digest; such a person still cannot forge a token or a ciphertext without the root
//! key, since every ciphertext is authenticated and token MACs need the wrapped pepper.
//!
//! Both commands refuse an embedded store that a server holds (its lock file), and `export`
//! refuses a PostgreSQL database on which a server registered within the last two heartbeats,
//! so that the export is a consistent picture. `import` refuses a target with any row in any
//! table: it is for moving a store into a new data directory or an empty database. Opening an
//! embedded store migrates its schema first, as a server start would.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, IsTerminal as _, Read as _, Seek, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use aws_lc_rs::digest;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Map, Value, json};
use tresor_backend_postgres::PostgresBackend;
use tresor_backend_sqlite::{DATABASE_FILE, SqliteBackend, SqliteOptions};
use tresor_core::CoreError;
use tresor_core::backend::Backend;
use tresor_core::dump::{Cell, CellType, Column, DumpRow, DumpTable};
use tresor_core::model::now_millis;
use tresor_core::service::NODE_HEARTBEAT;

use crate::database::{self, DatabaseArgs, DatabaseUrl, describe};

/// The long `--help` of `tresor export`.
pub const EXPORT_ABOUT: &str = "Writes every row of a store to a file, as stored: ciphertexts, \
    wrapped keys and token MACs stay as they are, so no root key is needed and the file is as \
    sensitive as the store itself (it is created with mode 0600).\n\n\
    Give --data-dir for the embedded store or --database-url for PostgreSQL. Stop the servers \
    first: a data directory a server holds is refused, and so is a database on which a server \
    registered within the last minute. `tresor import` loads the file into an empty store.";

/// The long `--help` of `tresor import`.
pub const IMPORT_ABOUT: &str = "Loads a file written by `tresor export` into an empty store: a \
    new data directory (--data-dir) or an empty PostgreSQL database (--database-url, migrated \
    first). The whole file is checked (format, every row, counts, SHA-256) before anything is \
    written, so a truncated or altered file is refused.\n\n\
    Nothing is decrypted; start the server on the imported store with the root key of the \
    exported one (--master-key-file or TRESOR_MASTER_KEY). If the import fails part-way, the \
    target holds part of the file: remove the data directory or empty the database before \
    trying again.";

/// Flags of `tresor export`.
#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    /// Directory of the embedded store to export (instead of --database-url).
    #[arg(long, env = "TRESOR_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// The file to write; it must not exist yet.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
}

/// Flags of `tresor import`.
#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    /// The file `tresor export` wrote.
    #[arg(long = "in", value_name = "FILE")]
    pub input: PathBuf,
    /// Directory of the embedded store to create (instead of --database-url); it must hold no
    /// store yet, or an empty one.
    #[arg(long, env = "TRESOR_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    #[command(flatten)]
    pub database: DatabaseArgs,
}

const FORMAT: &str = "tresor-export";
const FORMAT_END: &str = "tresor-export-end";
const FORMAT_VERSION: u64 = 1;

/// Rows per `export_rows` page and per `import_rows` call.
const PAGE: usize = 1000;

/// The longest line accepted: a row holds values within the contract's limits, far below this.
const MAX_LINE: usize = 64 * 1024 * 1024;

pub async fn export(args: ExportArgs) -> anyhow::Result<()> {
    let source = Store::open_source(args.data_dir.as_deref(), &args.database).await?;
    let outcome = match source.check_no_live_servers().await {
        Ok(()) => export_to(&source, &args.out).await,
        Err(e) => Err(e),
    };
    source.close().await;
    let counts = outcome?;
    eprintln!(
        "exported {} rows of {} to {} ({})",
        counts.values().sum::<u64>(),
        source.describe(),
        args.out.display(),
        summary(&counts)
    );
    Ok(())
}

pub async fn import(args: ImportArgs) -> anyhow::Result<()> {
    let mut file =
        File::open(&args.input).with_context(|| format!("opening {}", args.input.display()))?;
    let verified = verify(&mut file)
        .with_context(|| format!("refusing {}: nothing was imported", args.input.display()))?;
    let target = Store::open_target(args.data_dir.as_deref(), &args.database).await?;
    let outcome = match target.check_empty().await {
        Ok(()) => import_into(&target, &mut file, &verified).await,
        Err(e) => Err(e),
    };
    target.close().await;
    outcome?;
    eprintln!(
        "imported {} rows into {} ({}); start the server with the root key of the exported store",
        verified.counts.values().sum::<u64>(),
        target.describe(),
        summary(&verified.counts)
    );
    Ok(())
}

/// An opened store: the embedded one with its data directory locked, or PostgreSQL.
enum Store {
    Embedded {
        backend: SqliteBackend,
        dir: PathBuf,
        _lock: File,
    },
    Postgres {
        backend: PostgresBackend,
        url: DatabaseUrl,
    },
}

impl Store {
    /// The store to export: it must exist; a data directory is locked against servers.
    async fn open_source(data_dir: Option<&Path>, db: &DatabaseArgs) -> anyhow::Result<Store> {
        match choose(data_dir, db)? {
            Choice::Embedded(dir) => {
                if !dir.join(DATABASE_FILE).is_file() {
                    bail!(
                        "{} holds no embedded store (no {DATABASE_FILE})",
                        dir.display()
                    );
                }
                let lock = crate::serve::lock_data_dir(dir)?;
                let backend = SqliteBackend::open(dir, SqliteOptions::default())
                    .map_err(|e| anyhow!("opening {}: {}", dir.display(), describe(&e)))?;
                Ok(Store::Embedded {
                    backend,
                    dir: dir.to_owned(),
                    _lock: lock,
                })
            }
            Choice::Postgres(url) => {
                let backend = database::connect(url, db).await?;
                Ok(Store::Postgres {
                    backend,
                    url: url.clone(),
                })
            }
        }
    }

    /// The store to import into: a data directory is created (private) when missing and
    /// locked; a database is migrated to the current schema.
    async fn open_target(data_dir: Option<&Path>, db: &DatabaseArgs) -> anyhow::Result<Store> {
        match choose(data_dir, db)? {
            Choice::Embedded(dir) => {
                create_private_dir(dir)?;
                let lock = crate::serve::lock_data_dir(dir)?;
                let backend = SqliteBackend::open(dir, SqliteOptions::default())
                    .map_err(|e| anyhow!("opening {}: {}", dir.display(), describe(&e)))?;
                Ok(Store::Embedded {
                    backend,
                    dir: dir.to_owned(),
                    _lock: lock,
                })
            }
            Choice::Postgres(url) => {
                let backend = database::connect(url, db).await?;
                if let Err(e) = backend.migrate().await {
                    backend.shutdown().await;
                    return Err(url.error(&format!("migrating {url}"), &e));
                }
                Ok(Store::Postgres {
                    backend,
                    url: url.clone(),
                })
            }
        }
    }

    fn backend(&self) -> &dyn Backend {
        match self {
            Store::Embedded { backend, .. } => backend,
            Store::Postgres { backend, .. } => backend,
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Store::Embedded { .. } => "sqlite",
            Store::Postgres { .. } => "postgres",
        }
    }

    fn describe(&self) -> String {
        match self {
            Store::Embedded { dir, .. } => dir.display().to_string(),
            Store::Postgres { url, .. } => url.to_string(),
        }
    }

    /// A storage error for the console, with any database password scrubbed.
    fn error(&self, what: &str, e: &CoreError) -> anyhow::Error {
        match self {
            Store::Embedded { .. } => anyhow!("{what}: {}", describe(e)),
            Store::Postgres { url, .. } => url.error(what, e),
        }
    }

    /// Commits what is queued and lets go of the store (the lock goes with `self`).
    async fn close(&self) {
        match self {
            Store::Embedded { backend, .. } => backend.shutdown().await,
            Store::Postgres { backend, .. } => backend.shutdown().await,
        }
    }

    /// A PostgreSQL store may have servers on other machines: refuse while one is registered
    /// and has sent a heartbeat lately (a crashed one's registration goes stale).
    async fn check_no_live_servers(&self) -> anyhow::Result<()> {
        let Store::Postgres { .. } = self else {
            return Ok(()); // the data directory's lock is held
        };
        let nodes = self
            .backend()
            .list_nodes()
            .await
            .map_err(|e| self.error("listing the servers of the database", &e))?;
        let window = i64::try_from(2 * NODE_HEARTBEAT.as_millis()).unwrap_or(i64::MAX);
        let recent = now_millis().saturating_sub(window);
        let live = nodes.iter().filter(|n| n.last_seen >= recent).count();
        if live > 0 {
            bail!(
                "{live} server(s) use {} (registered within the last {} s): stop them first, \
                 so that the export is one consistent picture",
                self.describe(),
                window / 1000
            );
        }
        Ok(())
    }

    /// Refuses a target that holds any row in any table.
    async fn check_empty(&self) -> anyhow::Result<()> {
        for table in DumpTable::ALL {
            let rows = self
                .backend()
                .export_rows(table, None, 1)
                .await
                .map_err(|e| self.error(&format!("reading `{}`", table.name()), &e))?;
            if !rows.is_empty() {
                bail!(
                    "{} is not empty (`{}` holds rows): import only into a new data directory \
                     or an empty database",
                    self.describe(),
                    table.name()
                );
            }
        }
        Ok(())
    }
}

enum Choice<'a> {
    Embedded(&'a Path),
    Postgres(&'a DatabaseUrl),
}

fn choose<'a>(data_dir: Option<&'a Path>, db: &'a DatabaseArgs) -> anyhow::Result<Choice<'a>> {
    match (data_dir, &db.database_url) {
        (Some(_), Some(_)) => bail!("give one of --data-dir and --database-url, not both"),
        (Some(dir), None) => Ok(Choice::Embedded(dir)),
        (None, Some(url)) => Ok(Choice::Postgres(url)),
        (None, None) => bail!(
            "no store: give --data-dir DIR (the embedded store) or --database-url URL \
             (PostgreSQL)"
        ),
    }
}

fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt as _;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating the data directory {}", dir.display()))
}

/// Rows per table, in the order of [`DumpTable::ALL`].
type Counts = BTreeMap<&'static str, u64>;

fn summary(counts: &Counts) -> String {
    DumpTable::ALL
        .iter()
        .map(|t| {
            format!(
                "{} {}",
                t.name(),
                counts.get(t.name()).copied().unwrap_or(0)
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

// ---------------------------------------------------------------------------------------------
// Export

async fn export_to(source: &Store, out: &Path) -> anyhow::Result<Counts> {
    let file = create_private_file(out)?;
    let written = write_export(source, file).await;
    if written.is_err() {
        // Never leave a file behind that a later import would only refuse.
        let _ = std::fs::remove_file(out);
    }
    written.with_context(|| format!("writing {}", out.display()))
}

fn create_private_file(path: &Path) -> anyhow::Result<File> {
    use std::os::unix::fs::OpenOptionsExt as _;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {} (it must not exist yet)", path.display()))
}

/// Lines go through here, so the digest covers exactly what was written.
struct HashedLines {
    out: BufWriter<File>,
    digest: digest::Context,
}

impl HashedLines {
    fn line(&mut self, value: &Value) -> io::Result<()> {
        let mut bytes = serde_json::to_vec(value)?;
        bytes.push(b'\n');
        self.digest.update(&bytes);
        self.out.write_all(&bytes)
    }
}

async fn write_export(source: &Store, file: File) -> anyhow::Result<Counts> {
    let mut out = HashedLines {
        out: BufWriter::new(file),
        digest: digest::Context::new(&digest::SHA256),
    };
    out.line(&header(source.kind()))?;
    let progress = spinner("exporting");
    let mut counts = Counts::new();
    for table in DumpTable::ALL {
        progress.set_message(table.name());
        let mut after: Option<Vec<Cell>> = None;
        let mut n = 0u64;
        loop {
            let page = source
                .backend()
                .export_rows(table, after.as_deref(), PAGE)
                .await
                .map_err(|e| source.error(&format!("reading `{}`", table.name()), &e))?;
            for row in &page {
                out.line(&row_line(table, row)?)?;
            }
            n += page.len() as u64;
            progress.inc(page.len() as u64);
            match page.last() {
                Some(last) if page.len() == PAGE => after = Some(last.key(table).to_vec()),
                _ => break,
            }
        }
        counts.insert(table.name(), n);
    }
    progress.finish_and_clear();
    let digest = hex(out.digest.clone().finish().as_ref());
    let trailer = json!({
        "format": FORMAT_END,
        "rows": counts.values().sum::<u64>(),
        "counts": counts,
        "sha256": digest,
    });
    let mut bytes = serde_json::to_vec(&trailer)?;
    bytes.push(b'\n');
    out.out.write_all(&bytes)?;
    let file = out.out.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    Ok(counts)
}

fn header(source: &str) -> Value {
    let tables: Vec<Value> = DumpTable::ALL
        .iter()
        .map(|t| {
            let columns: Vec<&str> = t.columns().iter().map(|c| c.name).collect();
            json!({ "name": t.name(), "columns": columns })
        })
        .collect();
    json!({
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "created_at": now_millis(),
        "source": source,
        "tables": tables,
    })
}

fn row_line(table: DumpTable, row: &DumpRow) -> anyhow::Result<Value> {
    // The backend checked its own rows; a row that does not fit would not import anywhere.
    row.check(table)
        .map_err(|e| anyhow!("the store returned a malformed row: {}", describe(&e)))?;
    let cells: Vec<Value> = row.0.iter().map(encode_cell).collect();
    Ok(json!({ "t": table.name(), "r": cells }))
}

fn encode_cell(cell: &Cell) -> Value {
    match cell {
        Cell::Null => Value::Null,
        Cell::Int(v) => Value::from(*v),
        Cell::Bool(v) => Value::Bool(*v),
        Cell::Text(v) => Value::String(v.clone()),
        Cell::Bytes(v) => Value::String(BASE64.encode(v)),
    }
}

// ---------------------------------------------------------------------------------------------
// Import

/// What the first pass found in a sound file.
#[derive(Debug)]
struct Verified {
    counts: Counts,
    digest: Vec<u8>,
}

/// One line of the file after the header.
enum Line {
    Row(DumpTable, DumpRow),
    End(Value),
}

/// Reads the file's lines, hashing each one that comes before the trailer.
struct LineReader<'f> {
    input: BufReader<&'f mut File>,
    digest: digest::Context,
    number: u64,
    buf: Vec<u8>,
}

impl<'f> LineReader<'f> {
    fn new(file: &'f mut File) -> io::Result<LineReader<'f>> {
        file.rewind()?;
        Ok(LineReader {
            input: BufReader::with_capacity(1 << 16, file),
            digest: digest::Context::new(&digest::SHA256),
            number: 0,
            buf: Vec::new(),
        })
    }

    /// The next line parsed as JSON; `None` at the end of the file.
    fn next_value(&mut self) -> anyhow::Result<Option<Value>> {
        self.buf.clear();
        let read = (&mut self.input)
            .take(MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut self.buf)?;
        if read == 0 {
            return Ok(None);
        }
        self.number += 1;
        if self.buf.len() > MAX_LINE {
            bail!("line {} is longer than {MAX_LINE} bytes", self.number);
        }
        if self.buf.last() != Some(&b'\n') {
            bail!("line {} is cut off (the file is truncated)", self.number);
        }
        let value = serde_json::from_slice(&self.buf)
            .map_err(|e| anyhow!("line {} is not JSON ({})", self.number, json_error_kind(&e)))?;
        Ok(Some(value))
    }

    fn header(&mut self) -> anyhow::Result<()> {
        let value = self
            .next_value()?
            .ok_or_else(|| anyhow!("the file is empty"))?;
        self.digest.update(&self.buf);
        check_header(&value)
    }

    /// The next row or the trailer; anything else, or the end of the file, is an error.
    fn next_line(&mut self) -> anyhow::Result<Line> {
        let value = self
            .next_value()?
            .ok_or_else(|| anyhow!("the file ends without its trailer (it is truncated)"))?;
        if value.get("format").and_then(Value::as_str) == Some(FORMAT_END) {
            return Ok(Line::End(value));
        }
        self.digest.update(&self.buf);
        let (table, row) = decode_row(&value).map_err(|e| anyhow!("line {}: {e}", self.number))?;
        Ok(Line::Row(table, row))
    }

    fn digest(&self) -> Vec<u8> {
        self.digest.clone().finish().as_ref().to_vec()
    }
}

/// The kind of a JSON error without its text, which may quote the input.
fn json_error_kind(e: &serde_json::Error) -> &'static str {
    match e.classify() {
        serde_json::error::Category::Io => "read error",
        serde_json::error::Category::Syntax => "syntax error",
        serde_json::error::Category::Data => "unexpected data",
        serde_json::error::Category::Eof => "unexpected end",
    }
}

fn check_header(value: &Value) -> anyhow::Result<()> {
    if value.get("format").and_then(Value::as_str) != Some(FORMAT) {
        bail!("the first line is not a tresor export header");
    }
    match value.get("version").and_then(Value::as_u64) {
        Some(FORMAT_VERSION) => {}
        Some(v) => bail!(
            "the file has export format version {v}; this release reads version \
             {FORMAT_VERSION}: use the release that wrote it, or a newer one"
        ),
        None => bail!("the header names no format version"),
    }
    let tables = value
        .get("tables")
        .and_then(Value::as_array)
        .ok_or_else(|| anyhow!("the header lists no tables"))?;
    let ours: Vec<Value> = header("")["tables"].as_array().cloned().unwrap_or_default();
    if tables != &ours {
        bail!("the header's tables and columns are not the ones this release exports");
    }
    Ok(())
}

fn decode_row(value: &Value) -> Result<(DumpTable, DumpRow), String> {
    let object = value.as_object().ok_or("not an object")?;
    let name = object
        .get("t")
        .and_then(Value::as_str)
        .ok_or("no table name (`t`)")?;
    let table = DumpTable::parse(name).ok_or_else(|| format!("unknown table `{name}`"))?;
    let cells = object
        .get("r")
        .and_then(Value::as_array)
        .ok_or("no cells (`r`)")?;
    if object.len() != 2 {
        return Err("unexpected members beside `t` and `r`".into());
    }
    let columns = table.columns();
    if cells.len() != columns.len() {
        return Err(format!(
            "a row of `{name}` has {} cells, not {}",
            cells.len(),
            columns.len()
        ));
    }
    let row = cells
        .iter()
        .zip(columns)
        .map(|(v, c)| decode_cell(v, c).ok_or_else(|| format!("column `{name}.{}`", c.name)))
        .collect::<Result<Vec<_>, _>>()
        .map(DumpRow)
        .map_err(|where_| format!("{where_} holds a value of the wrong type"))?;
    row.check(table).map_err(|e| describe(&e))?;
    Ok((table, row))
}

fn decode_cell(value: &Value, column: &Column) -> Option<Cell> {
    match (value, column.ty) {
        (Value::Null, _) if column.nullable => Some(Cell::Null),
        (Value::Number(_), CellType::Int) => value.as_i64().map(Cell::Int),
        (Value::Bool(b), CellType::Bool) => Some(Cell::Bool(*b)),
        (Value::String(s), CellType::Text) => Some(Cell::Text(s.clone())),
        (Value::String(s), CellType::Bytes) => BASE64.decode(s).ok().map(Cell::Bytes),
        _ => None,
    }
}

/// The first pass: the whole file is read and checked; nothing is written anywhere.
fn verify(file: &mut File) -> anyhow::Result<Verified> {
    let progress = spinner("checking");
    let mut lines = LineReader::new(file)?;
    lines.header()?;
    let mut counts = Counts::new();
    let mut position = 0;
    let trailer = loop {
        match lines.next_line()? {
            Line::Row(table, _) => {
                position = table_order(table, position)
                    .ok_or_else(|| anyhow!("line {}: rows out of table order", lines.number))?;
                *counts.entry(table.name()).or_default() += 1;
                progress.inc(1);
            }
            Line::End(trailer) => break trailer,
        }
    };
    progress.finish_and_clear();
    if lines.next_value()?.is_some() {
        bail!("there are lines after the trailer");
    }
    let digest = lines.digest();
    check_trailer(&trailer, &counts, &digest)?;
    Ok(Verified { counts, digest })
}

/// Tables come in the order of [`DumpTable::ALL`]: the position of `table`, if it is not
/// before `current`.
fn table_order(table: DumpTable, current: usize) -> Option<usize> {
    let at = DumpTable::ALL.iter().position(|t| *t == table)?;
    (at >= current).then_some(at)
}

fn check_trailer(trailer: &Value, counts: &Counts, digest: &[u8]) -> anyhow::Result<()> {
    let stated = trailer
        .get("sha256")
        .and_then(Value::as_str)
        .ok_or_else(|| anyhow!("the trailer has no sha256"))?;
    if stated != hex(digest) {
        bail!("the SHA-256 of the content does not match the trailer: the file was altered");
    }
    let stated_counts = trailer
        .get("counts")
        .and_then(Value::as_object)
        .ok_or_else(|| anyhow!("the trailer has no counts"))?;
    let expected: Map<String, Value> = counts
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(t, n)| ((*t).to_owned(), Value::from(*n)))
        .collect();
    let stated_nonzero: Map<String, Value> = stated_counts
        .iter()
        .filter(|(_, n)| n.as_u64() != Some(0))
        .map(|(t, n)| (t.clone(), n.clone()))
        .collect();
    if stated_nonzero != expected {
        bail!("the rows per table do not match the trailer's counts");
    }
    let total: u64 = counts.values().sum();
    if trailer.get("rows").and_then(Value::as_u64) != Some(total) {
        bail!("the number of rows does not match the trailer");
    }
    Ok(())
}

/// The second pass: the rows, a page per `import_rows` call, table by table.
async fn import_into(target: &Store, file: &mut File, verified: &Verified) -> anyhow::Result<()> {
    let total: u64 = verified.counts.values().sum();
    let progress = bar(total);
    let mut lines = LineReader::new(file)?;
    let mut imported = 0u64;
    let outcome: anyhow::Result<()> = async {
        lines.header()?;
        let mut batch: Vec<DumpRow> = Vec::with_capacity(PAGE);
        let mut current: Option<DumpTable> = None;
        loop {
            let line = lines.next_line()?;
            let next_table = match &line {
                Line::Row(table, _) => Some(*table),
                Line::End(_) => None,
            };
            if let Some(table) = current
                && (next_table != Some(table) || batch.len() == PAGE)
                && !batch.is_empty()
            {
                let n = batch.len() as u64;
                target
                    .backend()
                    .import_rows(table, std::mem::take(&mut batch))
                    .await
                    .map_err(|e| target.error(&format!("importing into `{}`", table.name()), &e))?;
                imported += n;
                progress.inc(n);
            }
            match line {
                Line::Row(table, row) => {
                    progress.set_message(table.name());
                    current = Some(table);
                    batch.push(row);
                }
                Line::End(_) => break,
            }
        }
        if lines.digest() != verified.digest {
            bail!("the file changed while it was being imported");
        }
        Ok(())
    }
    .await;
    progress.finish_and_clear();
    outcome.map_err(|e| {
        e.context(format!(
            "the import stopped after {imported} of {total} rows; {} now holds part of the \
             file: remove the data directory or empty the database before trying again",
            target.describe()
        ))
    })
}

// ---------------------------------------------------------------------------------------------
// Small parts

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A row counter on stderr, hidden when stderr is not a terminal.
fn spinner(what: &str) -> ProgressBar {
    if !io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let style = ProgressStyle::with_template(&format!(
        "{{spinner}} {what} {{msg}}: {{human_pos}} rows ({{elapsed}})"
    ))
    .unwrap_or_else(|_| ProgressStyle::default_spinner());
    let progress = ProgressBar::new_spinner().with_style(style);
    progress.enable_steady_tick(Duration::from_millis(120));
    progress
}

/// A bar of `total` rows on stderr, hidden when stderr is not a terminal.
fn bar(total: u64) -> ProgressBar {
    if !io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let style = ProgressStyle::with_template(
        "importing {msg:12} [{bar:32}] {human_pos}/{human_len} rows ({eta})",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("=> ");
    ProgressBar::new(total).with_style(style)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;

    #[derive(Debug, clap::Parser)]
    struct ExportCli {
        #[command(flatten)]
        args: ExportArgs,
    }

    #[derive(Debug, clap::Parser)]
    struct ImportCli {
        #[command(flatten)]
        args: ImportArgs,
    }

    #[test]
    fn one_store_is_named_exactly() {
        let both = ExportCli::try_parse_from([
            "export",
            "--data-dir",
            "d",
            "--database-url",
            "postgres://u:pw@h/db",
            "--out",
            "f",
        ])
        .unwrap();
        let args = &both.args;
        let err = choose(args.data_dir.as_deref(), &args.database)
            .err()
            .unwrap();
        assert!(err.to_string().contains("not both"), "{err}");
        let dir = ImportCli::try_parse_from(["import", "--in", "f", "--data-dir", "d"]).unwrap();
        let args = &dir.args;
        assert!(matches!(
            choose(args.data_dir.as_deref(), &args.database),
            Ok(Choice::Embedded(_))
        ));
        assert!(
            ExportCli::try_parse_from(["export", "--data-dir", "d"]).is_err(),
            "--out is needed"
        );
        assert!(
            ImportCli::try_parse_from(["import", "--data-dir", "d"]).is_err(),
            "--in is needed"
        );
    }

    fn row_value(table: &str, cells: Value) -> Value {
        json!({ "t": table, "r": cells })
    }

    #[test]
    fn cells_round_trip_through_their_json_form() {
        let row = DumpRow(vec![
            Cell::Text("pepper".into()),
            Cell::Bytes(vec![0, 1, 0xff, b'\n']),
        ]);
        let line = row_line(DumpTable::Meta, &row).unwrap();
        assert_eq!(line, row_value("meta", json!(["pepper", "AAH/Cg=="])));
        assert_eq!(decode_row(&line).unwrap(), (DumpTable::Meta, row));
    }

    #[test]
    fn rows_that_do_not_fit_their_table_are_refused() {
        let cases = [
            row_value("meta", json!(["pepper"])),
            row_value("meta", json!(["pepper", "not base64!"])),
            row_value("meta", json!([null, "AA=="])),
            row_value("meta", json!([1, "AA=="])),
            row_value("nope", json!(["pepper", "AA=="])),
            json!({ "t": "meta", "r": ["pepper", "AA=="], "x": 1 }),
            json!(["meta"]),
        ];
        for case in cases {
            assert!(decode_row(&case).is_err(), "{case}");
        }
    }

    #[test]
    fn tables_must_come_in_export_order() {
        assert_eq!(table_order(DumpTable::Meta, 0), Some(0));
        assert_eq!(table_order(DumpTable::Records, 0), Some(6));
        assert_eq!(table_order(DumpTable::Records, 6), Some(6));
        assert_eq!(table_order(DumpTable::Meta, 6), None);
    }

    #[test]
    fn a_header_of_another_version_or_shape_is_refused() {
        assert!(check_header(&header("sqlite")).is_ok());
        let mut newer = header("sqlite");
        newer["version"] = json!(2);
        let err = check_header(&newer).unwrap_err().to_string();
        assert!(err.contains("version 2"), "{err}");
        let mut other = header("sqlite");
        other["tables"][0]["columns"] = json!(["name"]);
        assert!(check_header(&other).is_err());
        assert!(check_header(&json!({"format": "something"})).is_err());
    }

    /// Writes an export of two meta rows by hand, the way `write_export` does.
    fn sample() -> Vec<u8> {
        let mut ctx = digest::Context::new(&digest::SHA256);
        let mut out = Vec::new();
        let lines = [
            header("sqlite"),
            row_value("meta", json!(["a", "AQ=="])),
            row_value("meta", json!(["b", "Ag=="])),
        ];
        for line in lines {
            let mut bytes = serde_json::to_vec(&line).unwrap();
            bytes.push(b'\n');
            ctx.update(&bytes);
            out.extend(bytes);
        }
        let trailer = json!({
            "format": FORMAT_END,
            "rows": 2,
            "counts": { "meta": 2, "records": 0 },
            "sha256": hex(ctx.finish().as_ref()),
        });
        out.extend(serde_json::to_vec(&trailer).unwrap());
        out.push(b'\n');
        out
    }

    fn verify_bytes(bytes: &[u8]) -> anyhow::Result<Verified> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("export");
        std::fs::write(&path, bytes).unwrap();
        verify(&mut File::open(&path).unwrap())
    }

    #[test]
    fn a_sound_file_verifies() {
        let verified = verify_bytes(&sample()).unwrap();
        assert_eq!(verified.counts.get("meta"), Some(&2));
    }

    #[test]
    fn truncated_or_altered_files_are_refused() {
        let good = sample();
        let text = String::from_utf8(good.clone()).unwrap();
        let without_trailer: String = text.lines().take(3).map(|l| format!("{l}\n")).collect();
        let mut cut_mid_line = good.clone();
        cut_mid_line.truncate(good.len() - 5);
        let altered = text.replace("AQ==", "Aw==");
        let dropped_row: String = text
            .lines()
            .enumerate()
            .filter(|(i, _)| *i != 2)
            .map(|(_, l)| format!("{l}\n"))
            .collect();
        let extra = format!("{text}{{}}\n");
        let cases: [(&str, Vec<u8>, &str); 6] = [
            ("no trailer", without_trailer.into_bytes(), "truncated"),
            ("cut mid-line", cut_mid_line, "cut off"),
            ("altered", altered.into_bytes(), "altered"),
            ("a row dropped", dropped_row.into_bytes(), "altered"),
            ("after the trailer", extra.into_bytes(), "after the trailer"),
            ("empty", Vec::new(), "empty"),
        ];
        for (what, bytes, says) in cases {
            let err = format!("{:#}", verify_bytes(&bytes).unwrap_err());
            assert!(err.contains(says), "{what}: {err}");
        }
    }
}
