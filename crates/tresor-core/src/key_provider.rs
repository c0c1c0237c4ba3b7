//! Where the root key versions come from. A server loads its ring once at start (with the
//! messages of `tresor serve`); a [`KeyProvider`] lets it load the ring again while serving, so
//! that a version added to the key file (`tresor keygen --add-version`) can be activated by a
//! rotation without a restart, and a retired one dropped.
//!
//! Two providers ship: [`FileKeyProvider`] (the root key file) and [`EnvKeyProvider`]
//! (`TRESOR_MASTER_KEY`, one version). A KMS or HSM provider implements the same trait in its
//! own crate: its `load` asks the KMS to decrypt the key versions (kept encrypted beside the
//! server, or fetched), builds the ring with `RootKeyRing::parse` or `RootKeyRing::from_base64`
//! and returns it; `tresor serve` hands it to `Service::set_key_provider`. Nothing in the core
//! changes: the service only ever asks a provider for a whole ring, and checks before it swaps
//! that the new ring still holds every version the store uses.

use std::path::PathBuf;

use tresor_crypto::RootKeyRing;

use crate::error::{CoreError, Result};

/// A source of root key versions.
pub trait KeyProvider: Send + Sync {
    /// Where the keys come from, for logs and errors; never key material.
    fn source(&self) -> String;

    /// Loads every root key version, as the source holds them now.
    fn load(&self) -> Result<RootKeyRing>;
}

/// The root key file (`--master-key-file`, or `DIR/root.key` of the embedded store).
pub struct FileKeyProvider {
    path: PathBuf,
}

impl FileKeyProvider {
    pub fn new(path: impl Into<PathBuf>) -> FileKeyProvider {
        FileKeyProvider { path: path.into() }
    }
}

impl KeyProvider for FileKeyProvider {
    fn source(&self) -> String {
        format!("the file {}", self.path.display())
    }

    fn load(&self) -> Result<RootKeyRing> {
        RootKeyRing::load_file(&self.path).map_err(|e| {
            CoreError::Unavailable(format!(
                "cannot load the root key file {}: {e}",
                self.path.display()
            ))
        })
    }
}

/// An environment variable holding one version in base64 (`TRESOR_MASTER_KEY`). It is read
/// again at every load, though a running process's environment does not change: a server on
/// this provider holds one version, and its rotation needs a restart with a key file.
pub struct EnvKeyProvider {
    var: String,
}

impl EnvKeyProvider {
    pub fn new(var: impl Into<String>) -> EnvKeyProvider {
        EnvKeyProvider { var: var.into() }
    }
}

impl KeyProvider for EnvKeyProvider {
    fn source(&self) -> String {
        format!("the environment variable {}", self.var)
    }

    fn load(&self) -> Result<RootKeyRing> {
        let b64 = std::env::var(&self.var)
            .map_err(|_| CoreError::Unavailable(format!("{} is not set", self.var)))?;
        RootKeyRing::from_base64(&b64)
            .map_err(|e| CoreError::Unavailable(format!("{}: {e}", self.var)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_provider_reads_the_file_as_it_is_now() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("root.key");
        RootKeyRing::generate_file(&path).unwrap();
        let provider = FileKeyProvider::new(&path);
        assert_eq!(provider.load().unwrap().version_ids(), ["1"]);
        RootKeyRing::add_version_to_file(&path).unwrap();
        assert_eq!(provider.load().unwrap().version_ids(), ["1", "2"]);
        assert!(provider.source().contains("root.key"));
        let missing = FileKeyProvider::new(dir.path().join("nope"));
        assert!(matches!(missing.load(), Err(CoreError::Unavailable(_))));
    }

    #[test]
    fn the_env_provider_reads_its_variable() {
        let var = "TRESOR_TEST_KEY_PROVIDER_UNSET";
        let provider = EnvKeyProvider::new(var);
        assert!(matches!(provider.load(), Err(CoreError::Unavailable(m)) if m.contains(var)));
        assert!(provider.source().contains(var));
    }
}
