//! Namespace data keys: creation, wrapping under the root key, and a cache of unwrapped keys.
//! Also the associated data that binds every ciphertext to its owner, store and key.
//!
//! New keys are wrapped under the store's *active* root key version, which the store records
//! (see `service::rotation`): it is the newest version every running server held when it was
//! activated, not necessarily the newest in this server's key file. The ring itself can be
//! replaced while serving (a key file that gained a version, reloaded by a rotation).
//!
//! The cache holds keys, never plaintext values. A namespace id is never reused, and once a
//! namespace is deleted its records are gone and every write guarded by it fails inside the
//! transaction. An installation key rotation (`service::rekey`) replaces a namespace's key while
//! other servers may still cache the old one, so the cache is self-correcting rather than
//! invalidated: each entry remembers the wrapped key it was unwrapped from; a ciphertext the
//! cached key does not open sends [`KeyRing::open`] back to the store for the current wrapped
//! key (and a second try when it is another key); and a commit that sealed anything carries the
//! wrapped key it sealed under ([`KeyCheck`]), which the backend compares inside the
//! transaction, so a write sealed under a key that has been replaced never lands.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

use tresor_crypto::{CryptoError, DataKey, RootKeyRing};
use zeroize::Zeroizing;

use crate::backend::{Backend, NamespaceRow};
use crate::error::{CoreError, Result};
use crate::model::{Ns, StoreKind};
use crate::sealed_rows::KeyCheck;

/// The data-key id written into every record header. Installation key rotation does not raise
/// it: the key that opens a ciphertext is always its namespace's current key (a rotation
/// re-seals every ciphertext of the namespace in the transaction that replaces the key), and a
/// per-namespace generation would be state that an export, an import or a backup would have to
/// carry. [`KeyRing::open`] tells a stale cached key from a damaged ciphertext instead.
pub const DATA_KEY_ID: u32 = 1;

/// Most keys the cache keeps before it starts over (keys are re-unwrapped on a miss).
const CACHE_CAPACITY: usize = 100_000;

pub struct KeyRing {
    root: RwLock<Arc<RootKeyRing>>,
    /// The store's active root key version: the one [`KeyRing::wrap`] uses.
    active: RwLock<String>,
    cache: RwLock<HashMap<Ns, Cached>>,
}

/// An unwrapped namespace key and the wrapped key it came from.
#[derive(Clone)]
struct Cached {
    key: DataKey,
    wrapped: Arc<[u8]>,
}

impl KeyRing {
    /// A ring over `root` that wraps under `active`, which `root` must hold (checked by the
    /// caller when it read the version from the store).
    pub fn new(root: Arc<RootKeyRing>, active: String) -> KeyRing {
        KeyRing {
            root: RwLock::new(root),
            active: RwLock::new(active),
            cache: RwLock::new(HashMap::new()),
        }
    }

    /// The root key versions this server holds now.
    pub fn root(&self) -> Arc<RootKeyRing> {
        // The lock only guards a pointer swap; a panic elsewhere cannot leave it half-written.
        self.root
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Replaces the root key versions (a reloaded key file). Unwrapped namespace keys stay
    /// cached: they do not depend on the version that wrapped them.
    pub fn replace_root(&self, root: Arc<RootKeyRing>) {
        *self.root.write().unwrap_or_else(PoisonError::into_inner) = root;
    }

    /// The version new keys are wrapped under.
    pub fn active(&self) -> String {
        self.active
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Makes `id` the version new keys are wrapped under; the ring must hold it.
    pub fn set_active(&self, id: &str) -> Result<()> {
        if !self.root().holds(id) {
            return Err(CoreError::Unavailable(format!(
                "root key version `{id}` is not in this server's key file"
            )));
        }
        *self.active.write().unwrap_or_else(PoisonError::into_inner) = id.to_owned();
        Ok(())
    }

    /// Wraps a key under the active version.
    pub fn wrap(&self, key: &DataKey, context: &[u8]) -> Result<Vec<u8>> {
        Ok(self.root().wrap_with(&self.active(), key, context)?)
    }

    /// A fresh namespace with a random id and a new data key, wrapped for storage.
    pub fn new_namespace(&self) -> Result<NamespaceRow> {
        let raw: [u8; 8] = tresor_crypto::random_bytes()?;
        // 62 bits: positive in every SQL integer type, and collisions are negligible (a
        // collision is refused by the primary key anyway).
        let ns = (u64::from_be_bytes(raw) >> 2) as i64 | 1;
        let key = DataKey::generate()?;
        let wrapped_key = self.wrap(&key, &namespace_context(ns))?;
        self.insert(ns, key, &wrapped_key);
        Ok(NamespaceRow { ns, wrapped_key })
    }

    /// The data key of a live namespace; `Unauthenticated` when the namespace is gone (its
    /// installation was uninstalled after the token was checked).
    pub async fn key(&self, backend: &dyn Backend, ns: Ns) -> Result<DataKey> {
        Ok(self.entry(backend, ns).await?.key)
    }

    /// The key to seal under, and the check that makes a commit of what it sealed apply only
    /// while it is still the namespace's key (put it in [`crate::backend::Commit::keys`]).
    pub async fn sealing_key(&self, backend: &dyn Backend, ns: Ns) -> Result<(DataKey, KeyCheck)> {
        let entry = self.entry(backend, ns).await?;
        let check = KeyCheck {
            ns,
            wrapped_key: entry.wrapped.to_vec(),
        };
        Ok((entry.key, check))
    }

    /// Opens a ciphertext sealed under the key of `ns`. When the cached key does not open it,
    /// the cached key may be older than the ciphertext (another server rotated the namespace's
    /// key): the stored key is unwrapped afresh, and if it is another key it gets a second try.
    /// `Integrity` when neither opens it: damaged, moved, or read before a rotation that this
    /// server's key already reflects (a caller that read it may read it again once).
    pub async fn open(
        &self,
        backend: &dyn Backend,
        ns: Ns,
        aad: &[u8],
        sealed: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>> {
        let cached = self.entry(backend, ns).await?;
        match tresor_crypto::open(&cached.key, aad, sealed) {
            Err(CryptoError::Integrity) => {}
            other => return Ok(other?),
        }
        self.forget_if(ns, &cached.wrapped);
        let fresh = self.entry(backend, ns).await?;
        if fresh.key == cached.key {
            return Err(CoreError::Integrity);
        }
        Ok(tresor_crypto::open(&fresh.key, aad, sealed)?)
    }

    /// Unwraps a namespace key as stored (not through the cache).
    pub fn unwrap_namespace_key(&self, ns: Ns, wrapped: &[u8]) -> Result<DataKey> {
        Ok(self.root().unwrap(wrapped, &namespace_context(ns))?)
    }

    /// Caches the key a committed rotation gave `ns`.
    pub fn replace(&self, ns: Ns, key: DataKey, wrapped: &[u8]) {
        self.insert(ns, key, wrapped);
    }

    pub fn forget(&self, ns: Ns) {
        if let Ok(mut map) = self.cache.write() {
            map.remove(&ns);
        }
    }

    /// Forgets the cached key of `ns` if it is still the one unwrapped from `wrapped` (not one
    /// another request has put there since).
    fn forget_if(&self, ns: Ns, wrapped: &[u8]) {
        if let Ok(mut map) = self.cache.write()
            && map.get(&ns).is_some_and(|c| *c.wrapped == *wrapped)
        {
            map.remove(&ns);
        }
    }

    async fn entry(&self, backend: &dyn Backend, ns: Ns) -> Result<Cached> {
        if let Some(c) = self.cached(ns)? {
            return Ok(c);
        }
        let wrapped = backend
            .namespace_key(ns)
            .await?
            .ok_or(CoreError::Unauthenticated)?;
        let key = self.unwrap_namespace_key(ns, &wrapped)?;
        self.insert(ns, key.clone(), &wrapped);
        Ok(Cached {
            key,
            wrapped: wrapped.into(),
        })
    }

    fn cached(&self, ns: Ns) -> Result<Option<Cached>> {
        let map = self
            .cache
            .read()
            .map_err(|_| CoreError::internal("key cache lock poisoned"))?;
        Ok(map.get(&ns).cloned())
    }

    fn insert(&self, ns: Ns, key: DataKey, wrapped: &[u8]) {
        if let Ok(mut map) = self.cache.write() {
            if map.len() >= CACHE_CAPACITY {
                map.clear();
            }
            map.insert(
                ns,
                Cached {
                    key,
                    wrapped: wrapped.into(),
                },
            );
        }
    }
}

/// The wrap context of a namespace key: a key unwraps only for the namespace it was made for.
pub fn namespace_context(ns: Ns) -> Vec<u8> {
    format!("tresor/ns/v1:{ns}").into_bytes()
}

/// Which part of a record a ciphertext holds.
#[derive(Debug, Clone, Copy)]
pub enum RecordPart {
    Value = 1,
    Description = 2,
    CredentialSecret = 3,
    CredentialMetadata = 4,
}

/// The store code credentials use in associated data: never a record store's code, so a
/// credential ciphertext never opens as a record and the reverse.
const CREDENTIALS_CODE: i64 = 100;

/// The associated data of a credential's secret or metadata.
pub fn credential_aad(ns: Ns, owner: &str, key: &[u8], part: RecordPart) -> Vec<u8> {
    aad(ns, owner, CREDENTIALS_CODE, key, part)
}

/// The associated data of a record ciphertext: namespace, owner (account and installation, or
/// app for the shared store), store, key and part. A ciphertext moved to another record, store,
/// tenant or part fails to open.
pub fn record_aad(ns: Ns, owner: &str, store: StoreKind, key: &[u8], part: RecordPart) -> Vec<u8> {
    aad(ns, owner, store.code(), key, part)
}

fn aad(ns: Ns, owner: &str, store_code: i64, key: &[u8], part: RecordPart) -> Vec<u8> {
    let mut aad = Vec::with_capacity(48 + owner.len() + key.len());
    aad.extend_from_slice(b"tresor/record/v1\0");
    aad.extend_from_slice(&ns.to_be_bytes());
    push_prefixed(&mut aad, owner.as_bytes());
    aad.extend_from_slice(&store_code.to_be_bytes());
    push_prefixed(&mut aad, key);
    aad.push(part as u8);
    aad
}

fn push_prefixed(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aad_differs_for_every_binding() {
        let base = record_aad(7, "acct/inst", StoreKind::Secrets, b"k", RecordPart::Value);
        let variants = [
            record_aad(8, "acct/inst", StoreKind::Secrets, b"k", RecordPart::Value),
            record_aad(7, "acct/inst2", StoreKind::Secrets, b"k", RecordPart::Value),
            record_aad(7, "acct/inst", StoreKind::Kv, b"k", RecordPart::Value),
            record_aad(7, "acct/inst", StoreKind::Secrets, b"k2", RecordPart::Value),
            record_aad(
                7,
                "acct/inst",
                StoreKind::Secrets,
                b"k",
                RecordPart::Description,
            ),
            // Length prefixes keep owner/key boundaries unambiguous.
            record_aad(7, "acct/ins", StoreKind::Secrets, b"tk", RecordPart::Value),
        ];
        for v in variants {
            assert_ne!(v, base);
        }
    }
}
