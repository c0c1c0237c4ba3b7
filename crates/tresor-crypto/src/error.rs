//! The crate's single error type.
//!
//! Messages name what went wrong and where (line numbers, lengths, key ids) but never carry key
//! text, plaintext or anything derived from them.

/// Everything that can go wrong in tresor-crypto.
#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    /// The root key file (or `TRESOR_MASTER_KEY`) is malformed; the message names the line.
    #[error("root key file: {0}")]
    KeyFile(String),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// Authentication failed, or the ciphertext is truncated or malformed, or the AAD differs.
    /// Deliberately one variant: callers (and attackers) learn nothing about which check failed.
    #[error("integrity check failed")]
    Integrity,
    #[error("unknown root key version {0}")]
    UnknownKeyVersion(String),
    /// The format or algorithm byte is not one this version understands. Also returned by
    /// `seal`/`wrap` in the unreachable-in-practice case that the AEAD primitive refuses to
    /// encrypt (a plaintext above GCM's 64 GiB per-message limit).
    #[error("unsupported ciphertext format")]
    UnsupportedFormat,
    #[error("random number generator failed")]
    Random,
}

/// Result alias used throughout the crate.
pub type Result<T> = std::result::Result<T, CryptoError>;
