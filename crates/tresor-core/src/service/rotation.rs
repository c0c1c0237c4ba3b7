//! Root key rotation with no downtime, across every server.
//!
//! The store records its *active* root key version (`root_key_active` in the meta table): every
//! new key (namespace keys, and the token pepper and system key of a new store) is wrapped under
//! it. A store from before this record gets the version that wraps its token pepper.
//!
//! The operator's steps, and what each does:
//! 1. `tresor keygen --add-version FILE` on every server's key file. Nothing changes yet: a
//!    server wraps under the store's active version, whatever its file's newest version is, so
//!    servers that have the new version and servers that do not yet can run side by side.
//! 2. `POST /v1/admin/keys/rotate` (`tresor keys rotate`) on any server: it reloads its key
//!    file ([`KeyProvider`](crate::key_provider::KeyProvider)), re-registers, and checks that
//!    every live server holds its newest version (409 naming the ones that do not; a server
//!    reports its versions at start and at every heartbeat, reloading its key file first).
//!    Then it makes that version the active one (compare-and-set on the record), re-wraps the
//!    pepper and the system key, and starts re-wrapping every namespace key in the background:
//!    each one unwrapped and wrapped again under the active version, written with
//!    compare-and-set, so any number of servers can run the re-wrap at once and a crash loses
//!    nothing (any server resumes it: at start, and at every heartbeat while keys remain).
//!    Other servers take the new active version at their next heartbeat; a key one of them
//!    wraps under the old version meanwhile is re-wrapped by the next pass. Data is never
//!    re-encrypted: records are sealed under namespace keys, which do not change.
//! 3. `GET /v1/admin/keys` (`tresor keys status`) shows, per version, how many keys it wraps.
//!    Once the old version wraps none, it can be retired: removed from every key file
//!    (`tresor keys retire`). A server refuses to start, and a running one refuses to reload, a
//!    key file that lacks a version still in use.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tresor_crypto::RootKeyRing;

use super::{ACTIVE_ROOT_META, PEPPER_META, SYSTEM_KEY_META, Service};
use crate::audit::RequestContext;
use crate::backend::{Backend, NodeRow};
use crate::error::{CoreError, Result};
use crate::key_provider::KeyProvider;
use crate::keyring::namespace_context;
use crate::model::{Millis, Principal};

/// Namespace keys read per query of the re-wrap.
const REWRAP_BATCH: usize = 256;

/// The server-wide keys kept in the meta table, each wrapped with its name as context.
const META_KEYS: [&str; 2] = [PEPPER_META, SYSTEM_KEY_META];

/// The store's active version, recorded at the first start of this release: the version of the
/// token pepper for an existing store, the newest version of `root` for a new one. Refused when
/// `root` does not hold it.
pub(super) async fn active_version(backend: &dyn Backend, root: &RootKeyRing) -> Result<String> {
    let recorded = match backend.meta_get(ACTIVE_ROOT_META).await? {
        Some(v) => v,
        None => {
            let initial = match backend.meta_get(PEPPER_META).await? {
                Some(pepper) => RootKeyRing::wrapped_version(&pepper)?,
                None => root.active_id().to_owned(),
            };
            backend
                .meta_get_or_insert(ACTIVE_ROOT_META, initial.as_bytes())
                .await?
        }
    };
    let active = String::from_utf8(recorded)
        .map_err(|_| CoreError::internal("the recorded active root key version is not text"))?;
    if !root.holds(&active) {
        return Err(CoreError::Unavailable(format!(
            "the root key file does not hold version `{active}`, which this store wraps its new \
             keys with: add it to this server's key file (the same file as the other servers')"
        )));
    }
    Ok(active)
}

/// The background re-wrap's counters (this process's share).
#[derive(Default)]
pub(super) struct RewrapProgress {
    running: AtomicBool,
    rewrapped: AtomicU64,
    failed: AtomicU64,
    last_error: Mutex<Option<String>>,
}

/// A server in the node registry, as the key status shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyServer {
    pub node_id: String,
    pub key_versions: Vec<String>,
    pub last_seen: Millis,
    /// Seen within three heartbeats of the freshest registration.
    pub live: bool,
}

/// Progress of the re-wrap towards the active version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RewrapStatus {
    /// This server is re-wrapping now.
    pub running: bool,
    /// Keys in all: namespace keys and the server-wide keys.
    pub total: u64,
    /// Keys not yet wrapped under the active version.
    pub remaining: u64,
    /// Keys this server re-wrapped since it started.
    pub rewrapped: u64,
    /// Keys this server could not unwrap (damaged): left as they are, and counted in
    /// `remaining`.
    pub failed: u64,
    /// The last error that stopped a pass of this server, if any.
    pub last_error: Option<String>,
}

/// What `GET /v1/admin/keys` answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeysStatus {
    /// The version new keys are wrapped under.
    pub active: String,
    /// The newest version this server holds: what a rotation would activate.
    pub newest: String,
    /// The versions this server holds, oldest first.
    pub versions: Vec<String>,
    pub servers: Vec<KeyServer>,
    /// Keys wrapped under each version (every version this server holds, and any other found).
    pub wrapped: BTreeMap<String, u64>,
    pub rewrap: RewrapStatus,
}

impl Service {
    /// Lets the service load the root key versions again while serving (see the module
    /// documentation); without one, a rotation activates only versions held since the start.
    pub fn set_key_provider(&mut self, provider: Arc<dyn KeyProvider>) {
        self.key_provider = Some(provider);
    }

    /// Root key versions, which servers hold which, and the re-wrap's progress.
    pub async fn keys_status(&self, p: &Principal, ctx: &RequestContext) -> Result<KeysStatus> {
        self.admin(p, ctx, "admin.keys", async || {
            let status = self.key_status().await?;
            self.audit_read(p, ctx, "admin.keys")?;
            Ok(status)
        })
        .await
    }

    /// Activates the newest version every live server holds and starts the re-wrap (see the
    /// module documentation). `Conflict` while a live server lacks this server's newest version.
    pub async fn rotate_root_key(
        self: &Arc<Self>,
        p: &Principal,
        ctx: &RequestContext,
    ) -> Result<KeysStatus> {
        self.admin(p, ctx, "admin.rotate_root_key", async || {
            if self.key_provider.is_some() {
                self.reload_root().await?;
            }
            // The registry must show what this server holds now.
            self.register_node().await?;
            let target = self.keys.root().active_id().to_owned();
            let nodes = self.backend.list_nodes().await?;
            let lacking: Vec<&str> = self
                .servers_that_count(&nodes)
                .into_iter()
                .filter(|n| !n.key_versions.contains(&target))
                .map(|n| n.node_id.as_str())
                .collect();
            if !lacking.is_empty() {
                return Err(CoreError::Conflict(format!(
                    "root key version `{target}` is not held by every running server (missing on \
                     {}): add it to their key files; a server reloads its key file at its next \
                     heartbeat (30 s) or start",
                    lacking.join(", ")
                )));
            }
            let previous = self.keys.active();
            if previous != target {
                let swapped = self
                    .backend
                    .meta_replace(ACTIVE_ROOT_META, previous.as_bytes(), target.as_bytes())
                    .await?;
                let now = self.backend.meta_get(ACTIVE_ROOT_META).await?;
                if !swapped && now.as_deref() != Some(target.as_bytes()) {
                    return Err(CoreError::Conflict(
                        "another rotation changed the active root key version meanwhile; look at \
                         GET /v1/admin/keys and try again"
                            .into(),
                    ));
                }
                self.keys.set_active(&target)?;
                tracing::warn!(
                    previous,
                    active = target,
                    "root key rotation: new keys are wrapped under the new version; re-wrapping \
                     the existing ones in the background"
                );
            }
            self.rewrap_meta_keys(&target).await?;
            self.enqueue(vec![self.admin_event(p, ctx, "admin.rotate_root_key", 202)])?;
            Ok(())
        })
        .await?;
        self.spawn_rewrap();
        self.key_status().await
    }

    /// The heartbeat's part (also run at start): reloads the key file when there is a provider
    /// (a failed reload keeps the versions held and logs why), follows the store's active
    /// version, and resumes the re-wrap while keys remain under another version.
    pub async fn refresh_root_keys(self: &Arc<Self>) -> Result<()> {
        if self.key_provider.is_some()
            && let Err(e) = self.reload_root().await
        {
            tracing::warn!(error = %e, "the root key file was not reloaded; the versions loaded before stay in use");
        }
        if let Some(recorded) = self.backend.meta_get(ACTIVE_ROOT_META).await? {
            let recorded = String::from_utf8_lossy(&recorded).into_owned();
            if recorded != self.keys.active() {
                match self.keys.set_active(&recorded) {
                    Ok(()) => tracing::info!(
                        active = recorded,
                        "the store's active root key version changed: new keys are wrapped under it"
                    ),
                    Err(_) => tracing::error!(
                        active = recorded,
                        "the store's active root key version is not in this server's key file: \
                         this server keeps wrapping new keys under the previous version; add the \
                         version to its key file"
                    ),
                }
            }
        }
        let header = self.active_header()?;
        if !self
            .backend
            .namespace_keys_not_under(&header, 0, 1)
            .await?
            .is_empty()
        {
            self.spawn_rewrap();
        }
        Ok(())
    }

    /// Loads the ring again from the key provider and swaps it in, unless it lacks a version
    /// the store still uses.
    async fn reload_root(&self) -> Result<()> {
        let Some(provider) = &self.key_provider else {
            return Ok(());
        };
        let mut fresh = provider.load()?;
        let active = self.keys.active();
        if !fresh.holds(&active) {
            return Err(CoreError::Unavailable(format!(
                "{} lacks root key version `{active}`, which this store wraps new keys with",
                provider.source()
            )));
        }
        let current = self.keys.root();
        for dropped in current.version_ids().iter().filter(|id| !fresh.holds(id)) {
            let used = self.keys_under(dropped).await?;
            if used > 0 {
                return Err(CoreError::Unavailable(format!(
                    "{} lacks root key version `{dropped}`, which still wraps {used} keys of this \
                     store: keep it until `tresor keys status` shows 0",
                    provider.source()
                )));
            }
        }
        if fresh.version_ids() == current.version_ids() {
            return Ok(());
        }
        if let Err(e) = fresh.lock_in_memory() {
            tracing::warn!(error = %e, "the reloaded root key versions could not be locked in memory");
        }
        tracing::info!(versions = ?fresh.version_ids(), source = provider.source(), "reloaded the root key versions");
        self.keys.replace_root(Arc::new(fresh));
        Ok(())
    }

    /// How many stored keys (namespace keys and server-wide keys) version `id` wraps.
    async fn keys_under(&self, id: &str) -> Result<u64> {
        let header = RootKeyRing::header_of(id)
            .ok_or_else(|| CoreError::internal("an invalid root key version id"))?;
        let (counts, _) = self
            .backend
            .count_namespace_keys(std::slice::from_ref(&header))
            .await?;
        let mut n = counts.first().copied().unwrap_or(0);
        for name in META_KEYS {
            if let Some(stored) = self.backend.meta_get(name).await?
                && stored.starts_with(&header)
            {
                n += 1;
            }
        }
        Ok(n)
    }

    fn active_header(&self) -> Result<Vec<u8>> {
        RootKeyRing::header_of(&self.keys.active())
            .ok_or_else(|| CoreError::internal("an invalid active root key version id"))
    }

    /// The registered servers whose versions a rotation must respect: every live one over a
    /// shared store; this process alone over a store only one process can serve.
    fn servers_that_count<'a>(&self, nodes: &'a [NodeRow]) -> Vec<&'a NodeRow> {
        if self.backend.serves_alone() {
            return nodes.iter().filter(|n| n.node_id == self.node_id).collect();
        }
        super::nodes::live_nodes(nodes)
    }

    /// Re-wraps the token pepper and the system key under `target` (compare-and-set).
    async fn rewrap_meta_keys(&self, target: &str) -> Result<()> {
        let root = self.keys.root();
        for name in META_KEYS {
            let Some(stored) = self.backend.meta_get(name).await? else {
                continue;
            };
            if RootKeyRing::wrapped_version(&stored)? == target {
                continue;
            }
            let key = root.unwrap(&stored, name.as_bytes())?;
            let again = root.wrap_with(target, &key, name.as_bytes())?;
            // False: another server re-wrapped it first.
            self.backend.meta_replace(name, &stored, &again).await?;
        }
        Ok(())
    }

    /// Starts the background re-wrap unless this process runs one already.
    fn spawn_rewrap(self: &Arc<Self>) {
        if self.rewrap.running.swap(true, Ordering::AcqRel) {
            return;
        }
        let svc = self.clone();
        tokio::spawn(async move {
            loop {
                match svc.rewrap_pass().await {
                    // A pass that changed nothing: done (or only damaged keys remain).
                    Ok(0) => break,
                    Ok(_) => continue,
                    Err(e) => {
                        tracing::warn!(error = %e, "the root key re-wrap stopped; the next heartbeat resumes it");
                        *svc.rewrap
                            .last_error
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner) = Some(e.to_string());
                        break;
                    }
                }
            }
            svc.rewrap.running.store(false, Ordering::Release);
        });
    }

    /// One pass over every namespace key not under the active version, in `ns` order; returns
    /// how many it re-wrapped.
    async fn rewrap_pass(&self) -> Result<u64> {
        let active = self.keys.active();
        self.rewrap_meta_keys(&active).await?;
        let header = self.active_header()?;
        let mut after = 0;
        let mut done = 0;
        loop {
            let batch = self
                .backend
                .namespace_keys_not_under(&header, after, REWRAP_BATCH)
                .await?;
            if batch.is_empty() {
                return Ok(done);
            }
            let root = self.keys.root();
            for row in &batch {
                after = row.ns;
                let context = namespace_context(row.ns);
                let again = root
                    .unwrap(&row.wrapped_key, &context)
                    .and_then(|key| root.wrap_with(&active, &key, &context));
                match again {
                    Ok(again) => {
                        if self
                            .backend
                            .namespace_key_replace(row.ns, &row.wrapped_key, &again)
                            .await?
                        {
                            done += 1;
                            self.rewrap.rewrapped.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Err(e) => {
                        self.rewrap.failed.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(ns = row.ns, error = %e, "a namespace key does not unwrap; left as it is");
                    }
                }
            }
        }
    }

    /// The status, without the admin check.
    pub(super) async fn key_status(&self) -> Result<KeysStatus> {
        let root = self.keys.root();
        let active = self.keys.active();
        let nodes = self.backend.list_nodes().await?;
        let counted: Vec<&str> = self
            .servers_that_count(&nodes)
            .iter()
            .map(|n| n.node_id.as_str())
            .collect();
        let servers = nodes
            .iter()
            .map(|n| KeyServer {
                node_id: n.node_id.clone(),
                key_versions: n.key_versions.clone(),
                last_seen: n.last_seen,
                live: counted.contains(&n.node_id.as_str()),
            })
            .collect();
        let headers = root.wrapped_headers();
        let prefixes: Vec<Vec<u8>> = headers.iter().map(|(_, h)| h.clone()).collect();
        let (counts, namespaces) = self.backend.count_namespace_keys(&prefixes).await?;
        let mut wrapped: BTreeMap<String, u64> = headers
            .iter()
            .map(|(id, _)| id.clone())
            .zip(counts.iter().copied())
            .collect();
        let known: u64 = counts.iter().sum();
        if namespaces > known {
            wrapped.insert("(other)".into(), namespaces - known);
        }
        let mut total = namespaces;
        for name in META_KEYS {
            if let Some(stored) = self.backend.meta_get(name).await? {
                total += 1;
                let id = RootKeyRing::wrapped_version(&stored).unwrap_or_else(|_| "(other)".into());
                *wrapped.entry(id).or_default() += 1;
            }
        }
        let under_active = wrapped.get(&active).copied().unwrap_or(0);
        Ok(KeysStatus {
            newest: root.active_id().to_owned(),
            versions: root.version_ids(),
            servers,
            wrapped,
            rewrap: RewrapStatus {
                running: self.rewrap.running.load(Ordering::Acquire),
                total,
                remaining: total.saturating_sub(under_active),
                rewrapped: self.rewrap.rewrapped.load(Ordering::Relaxed),
                failed: self.rewrap.failed.load(Ordering::Relaxed),
                last_error: self
                    .rewrap
                    .last_error
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clone(),
            },
            active,
        })
    }
}
