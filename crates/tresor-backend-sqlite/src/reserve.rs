//! The disk reserve: space the store sets aside when it opens (`audit.reserve` beside the
//! database, filled with zeros), so that a full disk does not silence the audit log at once.
//!
//! When a commit fails because the disk is full, the writer releases the reserve (truncates
//! the file, which gives its blocks back) and enters the full-disk mode: every write request
//! answers 507 `insufficient_storage` without running, so the freed space serves only the audit
//! events of reads, which keep being answered (DESIGN.md, "Audit"). Once the reserve is used up
//! too, those events stay queued, the queue fills, and reads answer 503 rather than run
//! unaudited. The writer tries to put the reserve back every [`PROBE_INTERVAL`]; when that
//! succeeds, space has returned and writes resume.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The reserve file, beside the database.
pub const RESERVE_FILE: &str = "audit.reserve";

/// How often the writer, in full-disk mode, tries to take the reserve back.
pub(crate) const PROBE_INTERVAL: Duration = Duration::from_secs(1);

/// Written in chunks of this size.
const CHUNK: usize = 64 * 1024;

/// The reserve file and whether it currently holds its space.
pub(crate) struct DiskReserve {
    path: PathBuf,
    bytes: u64,
    held: bool,
}

impl DiskReserve {
    /// Sets aside `bytes` (none when 0) in `dir`. A disk too full to hold it leaves the store
    /// starting without it: the first failed commit then finds nothing to release.
    pub(crate) fn open(dir: &Path, bytes: u64) -> DiskReserve {
        let mut reserve = DiskReserve {
            path: dir.join(RESERVE_FILE),
            bytes,
            held: false,
        };
        if bytes == 0 {
            let _ = std::fs::remove_file(&reserve.path);
        } else if reserve.already_held() {
            reserve.held = true;
        } else if !reserve.take() {
            tracing::warn!(
                path = %reserve.path.display(),
                bytes,
                "the disk has no room for the audit reserve"
            );
        }
        reserve
    }

    /// A reserve file from an earlier start that still holds its whole size in allocated
    /// blocks (not a sparse or truncated file): kept as it is, so a start writes nothing.
    #[cfg(unix)]
    fn already_held(&self) -> bool {
        use std::os::unix::fs::MetadataExt as _;
        std::fs::metadata(&self.path)
            .is_ok_and(|m| m.len() == self.bytes && m.blocks().saturating_mul(512) >= self.bytes)
    }

    #[cfg(not(unix))]
    fn already_held(&self) -> bool {
        false
    }

    /// Whether the reserve holds its space now.
    pub(crate) fn held(&self) -> bool {
        self.held
    }

    /// Gives the reserve's space back to the file system.
    pub(crate) fn release(&mut self) {
        if let Err(e) = OpenOptions::new()
            .write(true)
            .open(&self.path)
            .and_then(|f| f.set_len(0).and_then(|()| f.sync_all()))
        {
            tracing::warn!(error = %e, path = %self.path.display(), "cannot release the audit reserve");
        }
        self.held = false;
    }

    /// Tries to fill the reserve to its size; on failure (the disk is still full) it is left
    /// empty. Answers whether it now holds its space.
    pub(crate) fn take(&mut self) -> bool {
        if self.bytes == 0 {
            return true;
        }
        let filled = (|| -> std::io::Result<()> {
            let mut f = OpenOptions::new()
                .create(true)
                .write(true)
                .truncate(true)
                .open(&self.path)?;
            let zeros = [0u8; CHUNK];
            let mut left = self.bytes;
            while left > 0 {
                let n = usize::try_from(left).unwrap_or(CHUNK).min(CHUNK);
                f.write_all(&zeros[..n])?;
                left -= n as u64;
            }
            f.sync_all()
        })();
        self.held = match filled {
            Ok(()) => true,
            Err(_) => {
                let _ = File::options()
                    .write(true)
                    .open(&self.path)
                    .and_then(|f| f.set_len(0));
                false
            }
        };
        self.held
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reserve_holds_releases_and_takes_back_its_space() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = DiskReserve::open(dir.path(), 200_000);
        let len = || {
            std::fs::metadata(dir.path().join(RESERVE_FILE))
                .unwrap()
                .len()
        };
        assert!(r.held());
        assert_eq!(len(), 200_000);
        r.release();
        assert!(!r.held());
        assert_eq!(len(), 0);
        assert!(r.take());
        assert_eq!(len(), 200_000);
        // A later start keeps the file it finds whole, and rewrites one that is not.
        let modified = || {
            std::fs::metadata(dir.path().join(RESERVE_FILE))
                .unwrap()
                .modified()
                .unwrap()
        };
        let before = modified();
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert!(DiskReserve::open(dir.path(), 200_000).held());
        assert_eq!(modified(), before, "a whole reserve is not rewritten");
        std::fs::File::options()
            .write(true)
            .open(dir.path().join(RESERVE_FILE))
            .unwrap()
            .set_len(10)
            .unwrap();
        assert!(DiskReserve::open(dir.path(), 200_000).held());
        assert_eq!(len(), 200_000, "a short one is filled again");
    }

    #[test]
    fn a_zero_reserve_is_none() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(RESERVE_FILE), b"old").unwrap();
        let r = DiskReserve::open(dir.path(), 0);
        assert!(!dir.path().join(RESERVE_FILE).exists());
        assert!(!r.held());
    }
}
