//! The [`Service`]: every rule of the contract (authentication, scopes, limits, versions, TTL,
//! tenancy, audit) is enforced here, above any backend and below any protocol, so the HTTP API,
//! the batch endpoint and any future front end cannot disagree.

mod admin;
mod auth;
pub use auth::bearer_token;
mod credentials;
mod nodes;
mod oauth;
mod records;
mod refresh;
mod rekey;
mod rotation;
mod shredding;
mod status;
mod token_cache;

use std::sync::Arc;

use tresor_crypto::{RootKeyRing, TokenPepper};

use crate::audit::{AuditEvent, RequestContext};
use crate::backend::{Backend, NamespaceRow, StoredKeys};
use crate::error::{CoreError, Result};
use crate::keyring::{KeyRing, namespace_context};
use crate::model::{Limits, Principal, now_millis};

pub use admin::{Installed, IssuedTokenOut, RecordPage};
pub use credentials::{
    CredentialInput, CredentialMeta, CredentialPage, ProviderOut, UsableCredential,
};
pub use nodes::{NODE_HEARTBEAT, live_node_count};
pub use oauth::{
    CallbackWork, FLOW_LIFETIME_MS, FlowStarted, FlowView, StartFlow, TokenEndpoint, TokenSet,
};
pub use records::{
    Condition, OpOutput, OpRequest, RecordMeta, RecordOp, RecordOut, RecordWithValue,
};
pub use refresh::{REFRESH_MARGIN_MS, RefreshFailure, RefreshStep, RefreshWork};
pub use rekey::InstallationKeyRotated;
pub use rotation::{KeyServer, KeysStatus, RewrapStatus};
pub use shredding::{ShreddedEntry, ShreddedKind, ShreddedSink};
pub use status::SystemStatus;

/// The name under which the wrapped token pepper is kept in the backend's meta table.
const PEPPER_META: &str = "token_pepper";
/// The server-wide data key that seals provider client secrets.
const SYSTEM_KEY_META: &str = "system_key";
/// The store's active root key version (its id, as text): what new keys are wrapped under.
const ACTIVE_ROOT_META: &str = "root_key_active";

/// Everything a front end needs to serve the contract.
pub struct Service {
    backend: Arc<dyn Backend>,
    keys: KeyRing,
    pepper: TokenPepper,
    /// Seals operator secrets (provider client secrets).
    system_key: tresor_crypto::DataKey,
    limits: Limits,
    /// MAC of `TRESOR_ADMIN_TOKEN`, when the operator set one.
    env_admin_mac: Option<[u8; 32]>,
    /// This process in the store's node registry (new at every start).
    node_id: String,
    /// Verified token state, used only while the backend's auth epoch stands still.
    tokens: token_cache::TokenCache,
    /// Where the root key versions can be loaded again while serving (see `rotation`).
    key_provider: Option<Arc<dyn crate::key_provider::KeyProvider>>,
    /// The background re-wrap of namespace keys after a rotation.
    rewrap: Arc<rotation::RewrapProgress>,
    /// Where committed deletions of namespace keys are recorded (`shredding`).
    shredded: Option<Arc<dyn ShreddedSink>>,
}

/// What [`Service::check_root_key`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RootKeyCheck {
    /// The store holds a token pepper and the root key unwraps it.
    Matches,
    /// The store holds no token pepper yet (a new store): nothing to check against.
    NewStore,
}

impl Service {
    /// Opens the service over a backend. Creates the token pepper on first start; a root key
    /// that cannot unwrap the stored pepper is refused here, before anything is served or
    /// written.
    pub async fn open(
        backend: Arc<dyn Backend>,
        root: Arc<RootKeyRing>,
        limits: Limits,
        env_admin_token: Option<&str>,
    ) -> Result<Service> {
        if let Some(t) = env_admin_token
            && (t.len() < 32 || !t.bytes().all(|b| (0x21..=0x7e).contains(&b)))
        {
            return Err(CoreError::invalid(
                "TRESOR_ADMIN_TOKEN must be at least 32 printable characters",
            ));
        }
        let active = rotation::active_version(backend.as_ref(), &root).await?;
        let fresh = TokenPepper::generate()?;
        let wrapped = root.wrap_with(&active, &fresh.as_data_key(), PEPPER_META.as_bytes())?;
        let stored = backend.meta_get_or_insert(PEPPER_META, &wrapped).await?;
        let pepper = TokenPepper::from_data_key(unwrap_pepper(&root, &stored)?);
        let env_admin_mac = env_admin_token.map(|t| pepper.mac(t));
        let fresh = tresor_crypto::DataKey::generate()?;
        let wrapped = root.wrap_with(&active, &fresh, SYSTEM_KEY_META.as_bytes())?;
        let stored = backend
            .meta_get_or_insert(SYSTEM_KEY_META, &wrapped)
            .await?;
        let system_key = unwrap_system_key(&root, &stored)?;
        Ok(Service {
            backend,
            keys: KeyRing::new(root, active),
            pepper,
            system_key,
            limits,
            env_admin_mac,
            node_id: nodes::new_node_id()?,
            tokens: token_cache::TokenCache::new(token_cache::CAPACITY),
            key_provider: None,
            rewrap: Arc::default(),
            shredded: None,
        })
    }

    /// Locks the long-lived keys this service holds (the token pepper and the system key) in
    /// memory, each in a page of its own (see `DataKey::lock_in_memory`). Unwrapped namespace
    /// keys are not locked: there is one per active namespace, cached and dropped as tenants
    /// come and go, and a page each would exhaust a default `RLIMIT_MEMLOCK`. Returns the first
    /// refusal, after both keys were tried.
    pub fn lock_keys_in_memory(&mut self) -> std::io::Result<()> {
        let pepper = self.pepper.lock_in_memory();
        let system = self.system_key.lock_in_memory();
        pepper.and(system)
    }

    /// Checks the root key against a store without writing anything, so that a start-up
    /// refuses a wrong, incomplete or foreign key file before it migrates or writes (both
    /// backends call it first). The store's own wrapped keys are the key check values; no
    /// separate record is kept:
    ///
    /// - the token pepper and the system key (made at the store's first start) must unwrap;
    /// - every root key version id that wraps a namespace key must be in the ring (a key file
    ///   from before a `keygen --add-version`, or cut short, lacks the newer version);
    /// - each such version that neither of the two proves must unwrap one of a few of its
    ///   namespace keys (two copies of a key file that each had a version added differ there).
    ///
    /// A single damaged namespace key under a proven version stops nothing: that namespace
    /// answers integrity errors and the rest is served. Needs the store's `meta` table, so a
    /// store without any schema yet is the caller's [`RootKeyCheck::NewStore`] to decide.
    pub async fn check_root_key(
        store: &dyn StoredKeys,
        root: &RootKeyRing,
    ) -> Result<RootKeyCheck> {
        let Some(pepper) = store.stored_meta_key(PEPPER_META).await? else {
            return Ok(RootKeyCheck::NewStore);
        };
        unwrap_pepper(root, &pepper)?;
        if let Some(active) = store.stored_meta_key(ACTIVE_ROOT_META).await? {
            let active = String::from_utf8_lossy(&active);
            if !root.holds(&active) {
                return Err(CoreError::Unavailable(format!(
                    "the root key file does not hold version `{active}`, which this store wraps \
                     its new keys with (activated by a rotation): wrong key file, or one that \
                     still lacks the version (add it, the same as on the other servers)"
                )));
            }
        }
        let mut proven = vec![RootKeyRing::wrapped_version(&pepper)?];
        if let Some(system) = store.stored_meta_key(SYSTEM_KEY_META).await? {
            unwrap_system_key(root, &system)?;
            proven.push(RootKeyRing::wrapped_version(&system)?);
        }

        let headers = root.wrapped_headers();
        let prefixes: Vec<Vec<u8>> = headers.iter().map(|(_, h)| h.clone()).collect();
        if let Some(row) = store.namespace_key_without_prefixes(&prefixes).await? {
            return Err(CoreError::Unavailable(
                match RootKeyRing::wrapped_version(&row.wrapped_key) {
                    Ok(id) => format!(
                        "the root key file does not hold version `{id}`, which keys of this \
                         store are wrapped with (a key file from before a version was added, \
                         or cut short?): wrong key file"
                    ),
                    Err(_) => format!(
                        "the key of namespace {} is not in a format this release reads: the \
                         store is damaged or was written by a newer release",
                        row.ns
                    ),
                },
            ));
        }
        for (id, header) in &headers {
            if proven.contains(id) {
                continue;
            }
            let sample = store
                .namespace_keys_with_prefix(header, KEY_CHECK_SAMPLE)
                .await?;
            let opens = |row: &NamespaceRow| {
                root.unwrap(&row.wrapped_key, &namespace_context(row.ns))
                    .is_ok()
            };
            if !sample.is_empty() && !sample.iter().any(opens) {
                return Err(CoreError::Unavailable(format!(
                    "version `{id}` of the root key file does not open the keys of this store \
                     wrapped with that version (the key file holds another key under the same \
                     id): wrong key file"
                )));
            }
        }
        Ok(RootKeyCheck::Matches)
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    /// Is the storage reachable?
    pub async fn ready(&self) -> Result<()> {
        self.backend.ready().await
    }

    /// Deletes expired records in the background; returns how many.
    pub async fn purge_expired(&self, limit: usize) -> Result<usize> {
        self.backend.purge_expired(limit).await
    }

    /// Deletes audit events older than the retention period; returns how many.
    pub async fn purge_audit(&self, retention: std::time::Duration, limit: usize) -> Result<usize> {
        let before = now_millis() - i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
        self.backend.purge_audit(before, limit).await
    }

    /// A fresh audit event for this request; the caller fills in what it did.
    fn event(
        &self,
        principal: Option<&Principal>,
        ctx: &RequestContext,
        operation: &str,
    ) -> AuditEvent {
        let (token_id, app_id, account_id, installation_id) = match principal {
            Some(Principal::Installation(p)) => (
                Some(p.token_id.clone()),
                Some(p.app_id.clone()),
                Some(p.account_id.clone()),
                Some(p.installation_id.clone()),
            ),
            Some(Principal::Admin { token_id }) => (token_id.clone(), None, None, None),
            None => (None, None, None, None),
        };
        AuditEvent {
            id: 0,
            time: now_millis(),
            request_id: ctx.request_id.clone(),
            token_id,
            app_id,
            account_id,
            installation_id,
            operation: operation.to_owned(),
            store: None,
            key: None,
            status: 0,
            remote_addr: ctx.remote_addr.clone(),
        }
    }

    /// Queues events of requests that committed nothing (reads, refusals). A full queue fails
    /// the request (503) rather than let it go unaudited.
    fn enqueue(&self, events: Vec<AuditEvent>) -> Result<()> {
        self.backend.audit_enqueue(events)
    }
}

/// Unwraps the stored token pepper, or says the root key is the wrong one (and which version it
/// lacks, when that is the reason).
fn unwrap_pepper(root: &RootKeyRing, stored: &[u8]) -> Result<tresor_crypto::DataKey> {
    match root.unwrap(stored, PEPPER_META.as_bytes()) {
        Ok(key) => Ok(key),
        Err(tresor_crypto::CryptoError::UnknownKeyVersion(v)) => {
            Err(CoreError::Unavailable(format!(
                "the root key file does not hold version `{v}`, which this store was written \
                 with: wrong key file"
            )))
        }
        Err(_) => Err(CoreError::Unavailable(
            match RootKeyRing::wrapped_version(stored) {
                Ok(v) if root.holds(&v) => format!(
                    "version `{v}` of the root key file does not open this store's keys (the \
                     key file holds another key under the same id): wrong key file"
                ),
                _ => "the root key does not match this store (its data cannot be decrypted \
                      with it): wrong key file"
                    .to_owned(),
            },
        )),
    }
}

fn unwrap_system_key(root: &RootKeyRing, stored: &[u8]) -> Result<tresor_crypto::DataKey> {
    root.unwrap(stored, SYSTEM_KEY_META.as_bytes())
        .map_err(|_| CoreError::Unavailable("the system key does not open: wrong key file".into()))
}

/// How many namespace keys of one root key version the start-up check tries before it calls
/// the version wrong: one damaged key must not stop the server, a wrong version opens none.
const KEY_CHECK_SAMPLE: usize = 3;

/// The HTTP status an error answers with, for its audit event.
pub(crate) fn status_of(e: &CoreError) -> u16 {
    e.code().http_status()
}
