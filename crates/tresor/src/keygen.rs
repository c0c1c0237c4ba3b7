//! `tresor keygen`: writes a new root key file (mode 0600) or appends a version to one.

use std::path::PathBuf;

use anyhow::anyhow;
use tresor_crypto::RootKeyRing;

/// Flags of `tresor keygen`.
#[derive(Debug, clap::Args)]
pub struct KeygenArgs {
    /// Append a new version to an existing key file instead of creating one.
    #[arg(long)]
    pub add_version: bool,
    /// The key file.
    pub file: PathBuf,
}

pub fn run(args: KeygenArgs) -> anyhow::Result<()> {
    let path = &args.file;
    if args.add_version {
        let id = RootKeyRing::add_version_to_file(path)
            .map_err(|e| anyhow!("{}: {e}", path.display()))?;
        eprintln!(
            "added root key version {id} to {} (now the newest)",
            path.display()
        );
    } else {
        let ring =
            RootKeyRing::generate_file(path).map_err(|e| anyhow!("{}: {e}", path.display()))?;
        eprintln!(
            "wrote root key {} (version {}, mode 0600); keep it apart from the data and back it up",
            path.display(),
            ring.active_id()
        );
    }
    Ok(())
}
