//! The shredded list: an append-only file beside the root key that names every namespace
//! whose key an uninstall (or the deletion of an app or an account) destroyed, so that
//! `tresor restore` can destroy them again in a backup taken before (DESIGN.md,
//! "Cryptography"). `serve` appends through [`ShreddedList`], the hook of
//! `tresor_core::service::ShreddedSink`; `restore` reads it with [`read`].
//!
//! Where: beside the root key file. `DIR/root.key` (the embedded default) keeps it in
//! `DIR/shredded.log`, and so does any key file named `root.key` given with
//! `--master-key-file`, so that restoring with the original `DIR/root.key` finds the original
//! list; another key file `F` keeps it in `F.shredded`; a key from `TRESOR_MASTER_KEY` keeps it
//! in the data directory (`DIR/shredded.log`).
//!
//! Format: one JSON object a line, ids and namespace numbers only (namespace ids as decimal
//! strings, since they exceed what a JSON double holds exactly):
//!
//! ```text
//! {"v":1,"at":"2026-01-02T03:04:05.678Z","kind":"installation","id":"shop-acme","namespaces":["4611686018427387905"],"installations":["shop-acme"]}
//! ```
//!
//! Each entry is one `write` of a whole line under an exclusive `flock` of the file, followed by
//! `fsync` (and of the directory when the file is new), before the deletion is answered. A
//! crash in the middle of a write leaves a last line without its newline: [`parse`] tolerates
//! it (it is read when it is a whole entry, skipped otherwise), and the next append first
//! completes or cuts it. Any other line that does not parse is damage, and `restore` refuses.

use std::fs::{File, OpenOptions};
use std::io::{self, Read as _, Seek as _, SeekFrom, Write as _};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use serde_json::{Value, json};
use tresor_core::model::{Ns, format_millis};
use tresor_core::service::{ShreddedEntry, ShreddedSink};

/// The list's name in a data directory (and beside a key file named `root.key`).
pub const LIST_FILE: &str = "shredded.log";

/// The format version of each line.
const VERSION: u64 = 1;

/// Where the list of a root key lives (see the module documentation).
pub fn list_path(master_key_file: Option<&Path>, data_dir: &Path) -> PathBuf {
    match master_key_file {
        Some(key) if key.file_name() == Some(crate::serve::ROOT_KEY_FILE.as_ref()) => {
            key.with_file_name(LIST_FILE)
        }
        Some(key) => {
            let mut name = key.as_os_str().to_owned();
            name.push(".shredded");
            PathBuf::from(name)
        }
        None => data_dir.join(LIST_FILE),
    }
}

/// One entry as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub at: String,
    pub kind: String,
    pub id: String,
    pub namespaces: Vec<Ns>,
    pub installations: Vec<String>,
}

/// What a list holds.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Parsed {
    pub entries: Vec<Listed>,
    /// A last line cut off by a crash, not a whole entry: skipped.
    pub torn_tail: bool,
}

/// The appending end, used by `serve`.
#[derive(Debug, Clone)]
pub struct ShreddedList {
    path: PathBuf,
}

impl ShreddedList {
    pub fn new(path: PathBuf) -> ShreddedList {
        ShreddedList { path }
    }

    /// The list of the root key a server was given (see [`list_path`]).
    pub fn beside_key(master_key_file: Option<&Path>, data_dir: &Path) -> ShreddedList {
        ShreddedList::new(list_path(master_key_file, data_dir))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one line and syncs it; blocking.
    pub fn append_blocking(&self, entry: &ShreddedEntry) -> io::Result<()> {
        if let Some(parent) = self.path.parent().filter(|p| !p.as_os_str().is_empty())
            && !parent.exists()
        {
            use std::os::unix::fs::DirBuilderExt as _;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)?;
        }
        let mut file = {
            use std::os::unix::fs::OpenOptionsExt as _;
            OpenOptions::new()
                .read(true)
                .append(true)
                .create(true)
                .mode(0o600)
                .open(&self.path)?
        };
        // Several servers on one machine may share a key file, and so its list.
        file.lock()?;
        let len = file.metadata()?.len();
        if len > 0 {
            repair_torn_tail(&mut file, len)?;
        }
        file.write_all(&line(entry))?;
        file.sync_all()?;
        if len == 0 {
            sync_parent(&self.path)?;
        }
        file.unlock()
    }
}

#[async_trait::async_trait]
impl ShreddedSink for ShreddedList {
    async fn append(&self, entry: &ShreddedEntry) -> io::Result<()> {
        let list = self.clone();
        let entry = entry.clone();
        tokio::task::spawn_blocking(move || list.append_blocking(&entry))
            .await
            .map_err(io::Error::other)?
    }

    fn location(&self) -> String {
        self.path.display().to_string()
    }
}

/// The line of an entry, newline included.
fn line(entry: &ShreddedEntry) -> Vec<u8> {
    let namespaces: Vec<String> = entry.namespaces.iter().map(Ns::to_string).collect();
    let value = json!({
        "v": VERSION,
        "at": format_millis(entry.at),
        "kind": entry.kind.as_str(),
        "id": entry.id,
        "namespaces": namespaces,
        "installations": entry.installations,
    });
    let mut bytes = value.to_string().into_bytes();
    bytes.push(b'\n');
    bytes
}

/// A last line without its newline (a crash during an append): completed when it is a whole
/// entry, cut off otherwise, so the next line starts on a line of its own.
fn repair_torn_tail(file: &mut File, len: u64) -> io::Result<()> {
    let mut last = [0u8; 1];
    file.seek(SeekFrom::Start(len - 1))?;
    file.read_exact(&mut last)?;
    if last[0] == b'\n' {
        return Ok(());
    }
    let mut all = Vec::new();
    file.seek(SeekFrom::Start(0))?;
    file.read_to_end(&mut all)?;
    let start = all.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    if entry_of(&all[start..]).is_ok() {
        file.write_all(b"\n")?;
    } else {
        file.set_len(start as u64)?;
    }
    file.sync_all()
}

fn sync_parent(path: &Path) -> io::Result<()> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    File::open(parent)?.sync_all()
}

/// Reads the list at `path`: `None` when there is no file (nothing was ever deleted with this
/// key, or the list is elsewhere).
pub fn read(path: &Path) -> anyhow::Result<Option<Parsed>> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    parse(&bytes)
        .map(Some)
        .with_context(|| format!("the shredded list {} is damaged", path.display()))
}

/// Parses a list (see the module documentation for what is tolerated).
pub fn parse(bytes: &[u8]) -> anyhow::Result<Parsed> {
    let mut parsed = Parsed::default();
    let mut lines = bytes.split(|&b| b == b'\n').enumerate().peekable();
    while let Some((index, raw)) = lines.next() {
        // `split` yields what follows the last newline too: empty, or a line cut short.
        let last = lines.peek().is_none();
        if raw.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match entry_of(raw) {
            Ok(entry) => parsed.entries.push(entry),
            Err(_) if last => parsed.torn_tail = true,
            Err(why) => bail!("line {} is not an entry ({why})", index + 1),
        }
    }
    Ok(parsed)
}

fn entry_of(raw: &[u8]) -> Result<Listed, String> {
    let value: Value = serde_json::from_slice(raw).map_err(|_| "not JSON".to_owned())?;
    if value["v"].as_u64() != Some(VERSION) {
        return Err(format!("not version {VERSION}"));
    }
    let text = |name: &str| {
        value[name]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| format!("no `{name}`"))
    };
    let list = |name: &str| -> Result<Vec<String>, String> {
        value[name]
            .as_array()
            .ok_or_else(|| format!("no `{name}` list"))?
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| format!("`{name}` holds a non-string"))
            })
            .collect()
    };
    let namespaces = list("namespaces")?
        .iter()
        .map(|n| {
            n.parse::<Ns>()
                .map_err(|_| "a namespace is not a number".to_owned())
        })
        .collect::<Result<Vec<Ns>, String>>()?;
    Ok(Listed {
        at: text("at")?,
        kind: text("kind")?,
        id: text("id")?,
        namespaces,
        installations: list("installations")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tresor_core::service::ShreddedKind;

    fn entry(id: &str, namespaces: &[Ns]) -> ShreddedEntry {
        ShreddedEntry {
            at: 1_700_000_000_123,
            kind: ShreddedKind::Installation,
            id: id.to_owned(),
            namespaces: namespaces.to_vec(),
            installations: vec![id.to_owned()],
        }
    }

    fn listed(id: &str, namespaces: &[Ns]) -> Listed {
        Listed {
            at: format_millis(1_700_000_000_123),
            kind: "installation".into(),
            id: id.to_owned(),
            namespaces: namespaces.to_vec(),
            installations: vec![id.to_owned()],
        }
    }

    fn text(entries: &[ShreddedEntry]) -> Vec<u8> {
        entries.iter().flat_map(line).collect()
    }

    #[test]
    fn lines_round_trip_with_large_namespace_ids() {
        let big = (1i64 << 62) - 1;
        let bytes = text(&[entry("a", &[big, 7]), entry("b", &[42])]);
        let parsed = parse(&bytes).unwrap();
        assert_eq!(parsed.entries, [listed("a", &[big, 7]), listed("b", &[42])]);
        assert!(!parsed.torn_tail);
        assert_eq!(parse(b"").unwrap(), Parsed::default());
        assert_eq!(parse(b"\n\n").unwrap(), Parsed::default());
    }

    #[test]
    fn a_torn_last_line_is_tolerated() {
        let whole = text(&[entry("a", &[1]), entry("b", &[2])]);
        // Every cut inside the second line: the first entry stays, the torn one is skipped
        // (or read, when only its newline is missing).
        let first_len = line(&entry("a", &[1])).len();
        for cut in first_len + 1..whole.len() {
            let parsed = parse(&whole[..cut]).unwrap_or_else(|e| panic!("cut at {cut}: {e:#}"));
            if cut == whole.len() - 1 {
                assert_eq!(parsed.entries.len(), 2, "cut at {cut}");
                assert!(!parsed.torn_tail);
            } else {
                assert_eq!(parsed.entries, [listed("a", &[1])], "cut at {cut}");
                assert!(parsed.torn_tail, "cut at {cut}");
            }
        }
    }

    #[test]
    fn damage_before_the_last_line_is_refused() {
        let mut bytes = b"{\"v\":1,\"at\":\"x\"\n".to_vec();
        bytes.extend(text(&[entry("a", &[1])]));
        let err = parse(&bytes).unwrap_err();
        assert!(format!("{err:#}").contains("line 1"), "{err:#}");
        for bad in [
            &b"not json\n"[..],
            b"{\"v\":2,\"at\":\"x\",\"kind\":\"app\",\"id\":\"a\",\"namespaces\":[],\"installations\":[]}\n",
            b"{\"v\":1,\"at\":\"x\",\"kind\":\"app\",\"id\":\"a\",\"namespaces\":[\"x1\"],\"installations\":[]}\n",
            b"{\"v\":1,\"at\":\"x\",\"kind\":\"app\",\"id\":\"a\",\"namespaces\":[1],\"installations\":[]}\n",
        ] {
            let mut bytes = bad.to_vec();
            bytes.extend(text(&[entry("a", &[1])]));
            assert!(parse(&bytes).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn appends_repair_a_torn_tail() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("sub").join(LIST_FILE);
        let list = ShreddedList::new(path.clone());
        list.append_blocking(&entry("a", &[1])).unwrap();
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // A crash in the middle of the second append.
        let second = line(&entry("b", &[2]));
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&second[..second.len() / 2]).unwrap();
        drop(f);
        list.append_blocking(&entry("c", &[3])).unwrap();
        let parsed = read(&path).unwrap().unwrap();
        assert_eq!(parsed.entries, [listed("a", &[1]), listed("c", &[3])]);
        assert!(!parsed.torn_tail);
        // A crash just before the newline: the entry is whole and kept.
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        let fourth = line(&entry("d", &[4]));
        f.write_all(&fourth[..fourth.len() - 1]).unwrap();
        drop(f);
        list.append_blocking(&entry("e", &[5])).unwrap();
        let ids: Vec<String> = read(&path)
            .unwrap()
            .unwrap()
            .entries
            .into_iter()
            .map(|e| e.id)
            .collect();
        assert_eq!(ids, ["a", "c", "d", "e"]);
        assert!(read(&tmp.path().join("none")).unwrap().is_none());
    }

    #[test]
    fn the_list_lives_beside_the_key() {
        let dir = Path::new("/data");
        assert_eq!(list_path(None, dir), Path::new("/data/shredded.log"));
        assert_eq!(
            list_path(Some(Path::new("/data/root.key")), Path::new("/elsewhere")),
            Path::new("/data/shredded.log")
        );
        assert_eq!(
            list_path(Some(Path::new("/keys/prod.key")), dir),
            Path::new("/keys/prod.key.shredded")
        );
    }
}
