//! The root key file: parsing, loading, creating and adding versions.
//!
//! Format (text, UTF-8): a first line exactly `tresor-root-key v1`, then one line per version
//! `ID:BASE64` (standard base64 of 32 bytes; ids `[A-Za-z0-9._-]{1,32}`, unique), the last
//! line being the active version. Blank lines may follow the last version.
//!
//! Error messages name the line and the problem, never the line's text: a malformed line may
//! well be a key.

use std::ffi::OsString;
use std::fs::{self, OpenOptions};
use std::io::{self, Write as _};
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use zeroize::Zeroizing;

use crate::data_key::{DataKey, KEY_LEN};
use crate::encoding::{append_base64, lower_hex};
use crate::error::{CryptoError, Result};
use crate::random::random_bytes;
use crate::root_key::{MAX_ID_LEN, RootKeyRing, RootVersion, valid_id};

impl RootKeyRing {
    /// Parses the key file: first line exactly `tresor-root-key v1`, then one line per version
    /// `ID:BASE64` (standard base64 of exactly 32 bytes), last line active. Ids match
    /// `[A-Za-z0-9._-]{1,32}` and are unique. Blank trailing lines are allowed. Errors say which
    /// line is wrong and never contain key text.
    pub fn parse(text: &str) -> Result<RootKeyRing> {
        parse_text(text).map_err(CryptoError::KeyFile)
    }

    /// Reads and parses a key file. Errors name the path.
    pub fn load_file(path: &Path) -> Result<RootKeyRing> {
        let bytes = Zeroizing::new(fs::read(path).map_err(|e| io_at(path, e))?);
        let text = std::str::from_utf8(&bytes).map_err(|e| {
            let line = 1 + bytes
                .get(..e.valid_up_to())
                .map_or(0, |ok| ok.iter().filter(|&&b| b == b'\n').count());
            CryptoError::KeyFile(format!("{}: line {line}: not UTF-8 text", path.display()))
        })?;
        parse_text(text).map_err(|msg| CryptoError::KeyFile(format!("{}: {msg}", path.display())))
    }

    /// The `TRESOR_MASTER_KEY` form: base64 of 32 bytes, giving one version with id `env`.
    /// Surrounding whitespace (a trailing newline from a secrets file) is ignored.
    pub fn from_base64(b64: &str) -> Result<RootKeyRing> {
        let key = decode_key(b64.trim())
            .map_err(|msg| CryptoError::KeyFile(format!("TRESOR_MASTER_KEY: {msg}")))?;
        Ok(RootKeyRing {
            active: RootVersion {
                id: ENV_ID.to_string(),
                key,
            },
            older: Vec::new(),
        })
    }

    /// Creates a new key file with one random version, id `1`, mode 0600. Refuses to overwrite
    /// an existing file (`KeyFile("… already exists")`).
    pub fn generate_file(path: &Path) -> Result<RootKeyRing> {
        let ring = RootKeyRing::generate()?;
        let text = serialize(&ring)?;
        write_new_file(path, text.as_bytes())?;
        Ok(ring)
    }

    /// Appends a new random version to an existing key file and returns its id: one more than
    /// the largest numeric id, or `2` if no id is numeric. The file is replaced atomically (temp
    /// file 0600 in the same directory, fsync, rename, fsync of the directory), so a crash leaves
    /// either the old or the new file, never a torn one. Concurrent calls on the same file are
    /// not serialized; the caller (the `keygen` command) runs alone.
    pub fn add_version_to_file(path: &Path) -> Result<String> {
        let ring = RootKeyRing::load_file(path)?;
        let id = next_id(&ring).ok_or_else(|| {
            CryptoError::KeyFile(format!("{}: no free numeric id", path.display()))
        })?;
        let ring = ring.with_new_active(RootVersion {
            id: id.clone(),
            key: DataKey::generate()?,
        });
        let text = serialize(&ring)?;
        replace_file(path, text.as_bytes())?;
        Ok(id)
    }

    /// Removes the version `id` from a key file (a retired version: no stored key uses it any
    /// more, which the caller checks against the store). Refuses the file's newest version and
    /// an id the file does not hold. Replaced atomically, as [`RootKeyRing::add_version_to_file`].
    pub fn remove_version_from_file(path: &Path, id: &str) -> Result<()> {
        let ring = RootKeyRing::load_file(path)?;
        if ring.active_id() == id {
            return Err(CryptoError::KeyFile(format!(
                "{}: `{id}` is the newest version of the file; it cannot be retired",
                path.display()
            )));
        }
        if !ring.holds(id) {
            return Err(CryptoError::KeyFile(format!(
                "{}: the file holds no version `{id}`",
                path.display()
            )));
        }
        let RootKeyRing { active, older } = ring;
        let older = older.into_iter().filter(|v| v.id != id).collect();
        let text = serialize(&RootKeyRing { active, older })?;
        replace_file(path, text.as_bytes())
    }
}

const HEADER: &str = "tresor-root-key v1";
const ENV_ID: &str = "env";
/// Standard base64 of 32 bytes, with padding.
const KEY_B64_LEN: usize = 44;

/// Parses the file text; the error is the message without the `KeyFile` prefix, so callers can
/// put the path in front. A file cut short (a failed copy, a full disk) usually ends without a
/// newline in the middle of a line, so an error on such a last line says so.
fn parse_text(text: &str) -> std::result::Result<RootKeyRing, String> {
    if text.trim().is_empty() {
        return Err("the file is empty".to_string());
    }
    parse_lines(text).map_err(|e| match e {
        ParseError::Line(n, what) => {
            let last = text.lines().count();
            if n == last && !text.ends_with('\n') {
                format!("line {n}: {what} (the file ends inside this line: is it truncated?)")
            } else {
                format!("line {n}: {what}")
            }
        }
        ParseError::NoVersions => {
            "no key versions after the header (is the file truncated?)".to_string()
        }
    })
}

/// What is wrong with a key file, before the message is worded.
enum ParseError {
    /// The line number and the problem.
    Line(usize, String),
    NoVersions,
}

fn parse_lines(text: &str) -> std::result::Result<RootKeyRing, ParseError> {
    let mut lines = text.lines().zip(1usize..);
    match lines.next() {
        Some((HEADER, _)) => {}
        _ => {
            return Err(ParseError::Line(
                1,
                format!("expected the header `{HEADER}`"),
            ));
        }
    }
    let mut versions: Vec<RootVersion> = Vec::new();
    let mut first_blank: Option<usize> = None;
    for (line, n) in lines {
        if line.trim().is_empty() {
            first_blank.get_or_insert(n);
            continue;
        }
        if let Some(blank) = first_blank {
            return Err(ParseError::Line(
                blank,
                format!("blank line before line {n}; blank lines are only allowed at the end"),
            ));
        }
        let (id, b64) = line
            .split_once(':')
            .ok_or_else(|| ParseError::Line(n, "expected ID:BASE64".to_string()))?;
        if !valid_id(id) {
            return Err(ParseError::Line(
                n,
                format!("invalid key id (1 to {MAX_ID_LEN} characters from A-Z a-z 0-9 . _ -)"),
            ));
        }
        // The id has passed validation, so it is not key text and may be shown.
        if versions.iter().any(|v| v.id == id) {
            return Err(ParseError::Line(n, format!("duplicate key id `{id}`")));
        }
        let key = decode_key(b64).map_err(|msg| ParseError::Line(n, msg))?;
        versions.push(RootVersion {
            id: id.to_string(),
            key,
        });
    }
    RootKeyRing::from_versions(versions).ok_or(ParseError::NoVersions)
}

/// Decodes one key. The base64 crate's error would name the offending character, which is key
/// text, so only our own fixed messages come out of here.
fn decode_key(b64: &str) -> std::result::Result<DataKey, String> {
    // Room for one byte more than a key, so "too long" is told apart from "just right" without
    // ever decoding an over-long value into an unzeroized buffer.
    let mut buf = Zeroizing::new([0u8; KEY_LEN + 1]);
    match STANDARD.decode_slice(b64, &mut buf[..]) {
        Ok(len) if len == KEY_LEN => buf
            .get(..KEY_LEN)
            .and_then(DataKey::from_slice)
            .ok_or_else(|| "key must be 32 bytes".to_string()),
        Ok(len) => Err(format!("key must be 32 bytes, found {len}")),
        Err(base64::DecodeSliceError::OutputSliceTooSmall) => {
            Err("key must be 32 bytes, found more".to_string())
        }
        Err(base64::DecodeSliceError::DecodeError(_)) => Err("key is not valid base64".to_string()),
    }
}

/// The file text for `ring`, built in a zeroizing string sized up front so it never reallocates
/// and leaves key text in freed memory.
fn serialize(ring: &RootKeyRing) -> Result<Zeroizing<String>> {
    let capacity = HEADER.len()
        + 1
        + ring
            .versions()
            .map(|v| v.id.len() + 1 + KEY_B64_LEN + 1)
            .sum::<usize>();
    let mut text = Zeroizing::new(String::with_capacity(capacity));
    text.push_str(HEADER);
    text.push('\n');
    for v in ring.versions() {
        text.push_str(&v.id);
        text.push(':');
        append_base64(&STANDARD, v.key.expose(), &mut text)
            .ok_or_else(|| CryptoError::KeyFile("could not encode a key".to_string()))?;
        text.push('\n');
    }
    Ok(text)
}

/// Next version id: one past the largest all-digit id, or `2` if there is none. `None` only if
/// the largest is `u64::MAX`.
fn next_id(ring: &RootKeyRing) -> Option<String> {
    let largest = ring
        .versions()
        .filter(|v| v.id.bytes().all(|b| b.is_ascii_digit()))
        .filter_map(|v| v.id.parse::<u64>().ok())
        .max();
    let next = match largest {
        Some(n) => n.checked_add(1)?,
        None => 2,
    };
    let id = next.to_string();
    // Numeric ids too long for u64 are skipped above, so make sure we do not collide with one.
    if ring.versions().any(|v| v.id == id) {
        return None;
    }
    Some(id)
}

/// Writes a new 0600 file that must not exist yet, durably.
fn write_new_file(path: &Path, contents: &[u8]) -> Result<()> {
    let mut file = match secret_file_options().create_new(true).open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            return Err(CryptoError::KeyFile(format!(
                "{} already exists",
                path.display()
            )));
        }
        Err(e) => return Err(io_at(path, e)),
    };
    if let Err(e) = file.write_all(contents).and_then(|()| file.sync_all()) {
        drop(file);
        // A half-written key file would make the retry fail with "already exists".
        let _ = fs::remove_file(path);
        return Err(io_at(path, e));
    }
    sync_parent_dir(path)
}

/// Atomically replaces `path` with `contents` via a temp file in the same directory.
fn replace_file(path: &Path, contents: &[u8]) -> Result<()> {
    let name = path
        .file_name()
        .ok_or_else(|| CryptoError::KeyFile(format!("{}: not a file path", path.display())))?;
    let suffix: [u8; 8] = random_bytes()?;
    let mut tmp_name = OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".{}.tmp", lower_hex(&suffix)));
    let tmp = parent_dir(path).join(tmp_name);

    let written = secret_file_options()
        .create_new(true)
        .open(&tmp)
        .and_then(|mut file| {
            file.write_all(contents)?;
            file.sync_all()
        })
        .and_then(|()| fs::rename(&tmp, path));
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(io_at(path, e));
    }
    sync_parent_dir(path)
}

/// Write-only, and owner-only from the moment of creation: setting the mode afterwards would
/// leave a window in which the key is readable by others.
fn secret_file_options() -> OpenOptions {
    let mut options = OpenOptions::new();
    options.write(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    options
}

/// Makes the directory entry (new file or rename) durable, not just the file contents.
fn sync_parent_dir(path: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        let dir = parent_dir(path);
        fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io_at(dir, e))?;
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// `io::Error` does not carry the path; keep the kind and put the path in the message.
fn io_at(path: &Path, e: io::Error) -> CryptoError {
    CryptoError::Io(io::Error::new(e.kind(), format!("{}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    use super::*;
    use crate::test_util::assert_no_secret;

    const K1: [u8; 32] = [0x11; 32];
    const K2: [u8; 32] = [
        0xde, 0xad, 0xbe, 0xef, 0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef, 0xfe, 0xdc, 0xba,
        0x98, 0x76, 0x54, 0x32, 0x10, 0x0f, 0x1e, 0x2d, 0x3c, 0x4b, 0x5a, 0x69, 0x78, 0x87, 0x96,
        0xa5, 0xb4,
    ];

    fn b64(k: &[u8]) -> String {
        STANDARD.encode(k)
    }

    fn good_file() -> String {
        format!("{HEADER}\n1:{}\n2:{}\n\n\n", b64(&K1), b64(&K2))
    }

    /// Parses `text`, expects a KeyFile error mentioning `needle`, and checks that neither
    /// Display nor Debug carries any form of the keys or the raw key text.
    fn expect_error(text: &str, needle: &str, secrets: &[&str]) {
        let err = match RootKeyRing::parse(text) {
            Ok(ring) => panic!("parsed: {ring:?}"),
            Err(e) => e,
        };
        assert!(matches!(err, CryptoError::KeyFile(_)), "{err:?}");
        let shown = format!("{err} {err:?}");
        assert!(shown.contains(needle), "{shown:?} lacks {needle:?}");
        for k in [&K1, &K2] {
            assert_no_secret(&shown, k);
        }
        for s in secrets {
            assert!(!shown.contains(s), "{shown:?} contains key text {s:?}");
            // Key text fragments, too.
            assert!(
                !shown.contains(&s[..12]),
                "{shown:?} contains key text {s:?}"
            );
        }
    }

    #[test]
    fn parses_a_good_file() {
        let ring = RootKeyRing::parse(&good_file()).unwrap();
        assert_eq!(ring.version_ids(), ["1", "2"]);
        assert_eq!(ring.active_id(), "2");
        assert_eq!(ring.active.key, DataKey::from_bytes(K2));
        assert_eq!(ring.older[0].key, DataKey::from_bytes(K1));
    }

    #[test]
    fn parses_crlf_and_no_trailing_newline() {
        let text = format!("{HEADER}\r\n1:{}\r\nab._-Z9:{}", b64(&K1), b64(&K2));
        let ring = RootKeyRing::parse(&text).unwrap();
        assert_eq!(ring.version_ids(), ["1", "ab._-Z9"]);
    }

    #[test]
    fn missing_header() {
        let k = b64(&K1);
        expect_error(&format!("1:{k}\n"), "line 1", &[&k]);
        expect_error(&format!("tresor-root-key v2\n1:{k}\n"), "line 1", &[&k]);
        expect_error(&format!(" {HEADER}\n1:{k}\n"), "line 1", &[&k]);
    }

    #[test]
    fn empty_file() {
        for text in ["", "\n", "  \n\n", "\r\n"] {
            expect_error(text, "the file is empty", &[]);
        }
    }

    /// A key file cut short anywhere is refused, never read as a shorter key, and the error
    /// says which line and, when the cut falls inside a line, that the file looks truncated.
    #[test]
    fn every_truncation_is_refused() {
        let (a, b) = (b64(&K1), b64(&K2));
        let full = format!("{HEADER}\n1:{a}\n2:{b}\n");
        for len in 0..full.len() - 1 {
            let cut = &full[..len];
            let err = match RootKeyRing::parse(cut) {
                // Cut exactly at the end of the first version's line: a valid file of one
                // version. Only the check against the store (the version it lacks) finds this.
                Ok(ring) if full[len..].starts_with('\n') || cut.ends_with('\n') => {
                    assert_eq!(ring.version_ids(), ["1"], "length {len}");
                    continue;
                }
                Ok(ring) => panic!("length {len}: parsed {ring:?}"),
                Err(e) => e,
            };
            let shown = format!("{err} {err:?}");
            for k in [&K1, &K2] {
                assert_no_secret(&shown, k);
            }
            let inside_a_version_line = len > HEADER.len() + 1;
            if inside_a_version_line && !cut.ends_with('\n') {
                assert!(shown.contains("truncated"), "length {len}: {shown}");
            }
        }
        // A complete file without the final newline is still a good file.
        assert!(RootKeyRing::parse(&full[..full.len() - 1]).is_ok());
    }

    #[test]
    fn truncation_is_named() {
        let k = b64(&K1);
        expect_error(
            &format!("{HEADER}\n1:{}", &k[..30]),
            "line 2: key is not valid base64 (the file ends inside this line: is it truncated?)",
            &[&k],
        );
        expect_error(
            &format!("{HEADER}\n1:{}\n", &k[..30]),
            "line 2: key is not valid base64",
            &[&k],
        );
        expect_error(
            &format!("{HEADER}\n1:{}", &k[..32]),
            "line 2: key must be 32 bytes, found 24 (the file ends",
            &[&k],
        );
        expect_error(
            &format!("{HEADER}\n1"),
            "line 2: expected ID:BASE64 (the file ends",
            &[],
        );
        expect_error(
            HEADER,
            "no key versions after the header (is the file truncated?)",
            &[],
        );
        expect_error("tresor-root", "line 1: expected the header", &[]);
    }

    #[test]
    fn no_versions() {
        expect_error(&format!("{HEADER}\n"), "no key versions", &[]);
        expect_error(&format!("{HEADER}\n\n  \n"), "no key versions", &[]);
    }

    #[test]
    fn bad_base64() {
        let k = b64(&K1);
        let mut broken = k.clone();
        broken.replace_range(5..6, "*");
        expect_error(
            &format!("{HEADER}\n1:{k}\n2:{broken}\n"),
            "line 3: key is not valid base64",
            &[&k, &broken],
        );
        // URL-safe alphabet is not the file's alphabet.
        let url = URL_SAFE_NO_PAD.encode(K2);
        expect_error(&format!("{HEADER}\n1:{url}\n"), "line 2", &[&url]);
        // Missing padding.
        let unpadded = k.trim_end_matches('=').to_string();
        expect_error(&format!("{HEADER}\n1:{unpadded}\n"), "line 2", &[&unpadded]);
        // Trailing whitespace on the key.
        expect_error(&format!("{HEADER}\n1:{k} \n"), "line 2", &[&k]);
    }

    #[test]
    fn wrong_length() {
        let short = b64(&K2[..31]);
        expect_error(
            &format!("{HEADER}\n1:{short}\n"),
            "line 2: key must be 32 bytes, found 31",
            &[&short],
        );
        let long = b64(&[K2, K2].concat());
        expect_error(
            &format!("{HEADER}\n1:{long}\n"),
            "line 2: key must be 32 bytes",
            &[&long],
        );
        let one_more = b64(&[&K2[..], &[7]].concat());
        expect_error(
            &format!("{HEADER}\n1:{one_more}\n"),
            "line 2: key must be 32 bytes",
            &[&one_more],
        );
        expect_error(&format!("{HEADER}\n1:\n"), "found 0", &[]);
    }

    #[test]
    fn duplicate_id() {
        let (a, b) = (b64(&K1), b64(&K2));
        expect_error(
            &format!("{HEADER}\n7:{a}\n7:{b}\n"),
            "line 3: duplicate key id `7`",
            &[&a, &b],
        );
    }

    #[test]
    fn bad_id_chars() {
        let k = b64(&K2);
        for bad in ["a b", "", "x/y", "é", &"n".repeat(33)] {
            expect_error(
                &format!("{HEADER}\n{bad}:{k}\n"),
                "line 2: invalid key id",
                &[&k],
            );
        }
    }

    #[test]
    fn line_without_colon_is_not_echoed() {
        let k = b64(&K2);
        expect_error(
            &format!("{HEADER}\n{k}\n"),
            "line 2: expected ID:BASE64",
            &[&k],
        );
        // A key pasted before the id: the "id" is key text and must not be echoed either.
        expect_error(
            &format!("{HEADER}\n{k}:1\n"),
            "line 2: invalid key id",
            &[&k],
        );
    }

    #[test]
    fn blank_line_in_the_middle() {
        let (a, b) = (b64(&K1), b64(&K2));
        expect_error(&format!("{HEADER}\n1:{a}\n\n2:{b}\n"), "line 3", &[&a, &b]);
    }

    #[test]
    fn from_base64_env_form() {
        let ring = RootKeyRing::from_base64(&format!("  {}\n", b64(&K2))).unwrap();
        assert_eq!(ring.version_ids(), ["env"]);
        assert_eq!(ring.active_id(), "env");
        assert_eq!(ring.active.key, DataKey::from_bytes(K2));

        for bad in [b64(&K2[..16]), "not base64!".to_string(), String::new()] {
            let err = RootKeyRing::from_base64(&bad).unwrap_err();
            let shown = format!("{err} {err:?}");
            assert!(shown.contains("TRESOR_MASTER_KEY"), "{shown}");
            assert_no_secret(&shown, &K2);
            if !bad.is_empty() {
                assert!(!shown.contains(&bad));
            }
        }
    }

    #[cfg(unix)]
    fn mode_of(path: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt as _;
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn generate_file_creates_0600_and_refuses_to_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("root.key");
        let ring = RootKeyRing::generate_file(&path).unwrap();
        assert_eq!(ring.version_ids(), ["1"]);
        #[cfg(unix)]
        assert_eq!(mode_of(&path), 0o600);

        let text = fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("tresor-root-key v1\n1:"));
        assert!(text.ends_with('\n'));
        let loaded = RootKeyRing::load_file(&path).unwrap();
        assert_eq!(loaded.active.key, ring.active.key);

        let err = RootKeyRing::generate_file(&path).unwrap_err();
        assert!(
            matches!(&err, CryptoError::KeyFile(m) if m.ends_with("already exists")),
            "{err}"
        );
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            text,
            "file was modified"
        );
    }

    #[test]
    fn remove_version_keeps_the_others_and_refuses_the_newest_and_unknown_ids() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("root.key");
        RootKeyRing::generate_file(&path).unwrap();
        RootKeyRing::add_version_to_file(&path).unwrap();
        RootKeyRing::add_version_to_file(&path).unwrap();
        let before = RootKeyRing::load_file(&path).unwrap();
        let wrapped = before.wrap(&DataKey::from_bytes(K1), b"ctx").unwrap();
        for refused in ["3", "9"] {
            let text = fs::read_to_string(&path).unwrap();
            assert!(RootKeyRing::remove_version_from_file(&path, refused).is_err());
            assert_eq!(
                fs::read_to_string(&path).unwrap(),
                text,
                "changed by {refused}"
            );
        }
        RootKeyRing::remove_version_from_file(&path, "1").unwrap();
        let after = RootKeyRing::load_file(&path).unwrap();
        assert_eq!(after.version_ids(), ["2", "3"]);
        assert_eq!(
            after.unwrap(&wrapped, b"ctx").unwrap(),
            DataKey::from_bytes(K1)
        );
        #[cfg(unix)]
        assert_eq!(mode_of(&path), 0o600);
    }

    #[test]
    fn add_version_appends_and_keeps_old_versions() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("root.key");
        let original = RootKeyRing::generate_file(&path).unwrap();
        let wrapped = original.wrap(&DataKey::from_bytes(K1), b"ctx").unwrap();

        assert_eq!(RootKeyRing::add_version_to_file(&path).unwrap(), "2");
        let ring = RootKeyRing::load_file(&path).unwrap();
        assert_eq!(ring.version_ids(), ["1", "2"]);
        assert_eq!(ring.active_id(), "2");
        assert_eq!(ring.older[0].key, original.active.key);
        assert_ne!(ring.active.key, original.active.key);
        assert_eq!(
            ring.unwrap(&wrapped, b"ctx").unwrap(),
            DataKey::from_bytes(K1)
        );
        #[cfg(unix)]
        assert_eq!(mode_of(&path), 0o600);

        assert_eq!(RootKeyRing::add_version_to_file(&path).unwrap(), "3");
        // No temp files left behind.
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["root.key"]);
    }

    #[test]
    fn add_version_id_choice() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        let (a, b) = (b64(&K1), b64(&K2));

        fs::write(&path, format!("{HEADER}\nprod-a:{a}\n")).unwrap();
        assert_eq!(RootKeyRing::add_version_to_file(&path).unwrap(), "2");

        fs::write(&path, format!("{HEADER}\n9:{a}\nx:{b}\n")).unwrap();
        assert_eq!(RootKeyRing::add_version_to_file(&path).unwrap(), "10");
        let ring = RootKeyRing::load_file(&path).unwrap();
        assert_eq!(ring.version_ids(), ["9", "x", "10"]);

        fs::write(&path, format!("{HEADER}\n{}:{a}\n", u64::MAX)).unwrap();
        assert!(matches!(
            RootKeyRing::add_version_to_file(&path),
            Err(CryptoError::KeyFile(_))
        ));
    }

    #[test]
    fn add_version_to_a_broken_file_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        let broken = format!("{HEADER}\n1:{}\n", b64(&K1[..20]));
        fs::write(&path, &broken).unwrap();
        assert!(RootKeyRing::add_version_to_file(&path).is_err());
        assert_eq!(fs::read_to_string(&path).unwrap(), broken);
    }

    #[test]
    fn load_errors_name_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.key");
        let err = RootKeyRing::load_file(&missing).unwrap_err();
        assert!(matches!(&err, CryptoError::Io(e) if e.kind() == io::ErrorKind::NotFound));
        assert!(err.to_string().contains("nope.key"), "{err}");

        let path = dir.path().join("bad.key");
        fs::write(
            &path,
            format!("{HEADER}\n1:{}\n", b64(&K1)).replace('\n', "\n\u{0}"),
        )
        .unwrap();
        let err = RootKeyRing::load_file(&path).unwrap_err();
        assert!(err.to_string().contains("bad.key: line 2"), "{err}");
        assert_no_secret(&format!("{err} {err:?}"), &K1);

        fs::write(&path, b"tresor-root-key v1\n1:\xff\xfe\n").unwrap();
        let err = RootKeyRing::load_file(&path).unwrap_err();
        assert!(err.to_string().contains("line 2: not UTF-8"), "{err}");
    }

    #[test]
    fn round_trips_through_serialize() {
        let ring = RootKeyRing::parse(&good_file()).unwrap();
        let text = serialize(&ring).unwrap();
        assert_eq!(text.len(), text.capacity());
        assert_eq!(*text, format!("{HEADER}\n1:{}\n2:{}\n", b64(&K1), b64(&K2)));
    }
}
