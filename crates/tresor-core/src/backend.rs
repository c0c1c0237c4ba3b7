//! The storage engine interface. A backend stores only ciphertext, MACs and metadata; it never
//! sees a key or a plaintext value. Every rule lives in the service; a backend answers reads and
//! applies a [`Commit`] atomically, checking its preconditions and namespace guards inside the
//! transaction.

use async_trait::async_trait;

use crate::audit::{AuditEvent, AuditQuery};
use crate::dump::{Cell, DumpRow, DumpTable};
use crate::error::Result;
use crate::model::{Millis, Ns, StoreKind};
use crate::sealed_rows::{KeyCheck, Rekey, RekeyCounts, SealedRows};

/// One stored record: metadata in the clear, value and description sealed.
#[derive(Clone)]
pub struct StoredRecord {
    pub key: Vec<u8>,
    pub version: u64,
    pub created_at: Millis,
    pub updated_at: Millis,
    pub expires_at: Option<Millis>,
    /// The sealed compact JSON value.
    pub value: Vec<u8>,
    /// The sealed description, if any.
    pub description: Option<Vec<u8>>,
}

impl std::fmt::Debug for StoredRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredRecord")
            .field("key_len", &self.key.len())
            .field("version", &self.version)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// A page request of record metadata, in key byte order.
#[derive(Debug, Clone)]
pub struct ListQuery {
    pub prefix: Vec<u8>,
    /// Only keys strictly greater than this (the cursor).
    pub after: Option<Vec<u8>>,
    pub limit: usize,
}

/// What must hold of a key, inside the transaction, for a commit to apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precondition {
    /// No live record (missing or expired).
    Absent,
    /// A live record with exactly this version.
    Version(u64),
    /// No check: an earlier mutation of the same commit already checked this key (a batch that
    /// writes one key twice), or the caller wants a blind write.
    Any,
}

/// How a write changes a record's expiry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// Keep the live record's expiry (none for a new record).
    Keep,
    /// No expiry.
    Clear,
    /// Expire this many seconds after the commit, on the backend's clock.
    In(i64),
}

/// How a write changes a record's description.
#[derive(Clone, PartialEq, Eq)]
pub enum DescriptionChange {
    Keep,
    Set(Option<Vec<u8>>),
}

/// One change inside a commit.
#[derive(Clone)]
pub enum Mutation {
    /// Create or replace. The backend assigns a version greater than any this key ever had,
    /// stamps `updated_at`, and keeps `created_at` of a live record it replaces.
    Put {
        ns: Ns,
        store: StoreKind,
        key: Vec<u8>,
        expect: Precondition,
        value: Vec<u8>,
        description: DescriptionChange,
        expiry: Expiry,
    },
    /// Remove a live record.
    Delete {
        ns: Ns,
        store: StoreKind,
        key: Vec<u8>,
        expect: Precondition,
    },
    /// Change nothing; only assert the precondition (reads inside an atomic batch).
    Check {
        ns: Ns,
        store: StoreKind,
        key: Vec<u8>,
        expect: Precondition,
    },
    /// Create or replace a credential in `ns`. Fails with `WriteConflict` when `expect` does not
    /// hold in `ns`, and with `CoreError::Conflict` when `other_ns` holds a live credential
    /// under the same key (an installation and its account share one key space). The backend
    /// assigns the version and timestamps as for records; `lease_*` are cleared.
    PutCredential {
        ns: Ns,
        other_ns: Option<Ns>,
        expect: Precondition,
        credential: CredentialWrite,
        expiry: Expiry,
    },
    /// Remove a live credential from `ns`.
    DeleteCredential {
        ns: Ns,
        key: Vec<u8>,
        expect: Precondition,
    },
    /// Take the refresh lease of a live credential whose version is `expect_version` and whose
    /// lease is free (none, or `lease_until` not after now). The version does not change; a
    /// held lease or another version fails with `WriteConflict`. The next `PutCredential`
    /// clears the lease.
    AcquireCredentialLease {
        ns: Ns,
        key: Vec<u8>,
        expect_version: u64,
        lease_id: String,
        lease_until: Millis,
    },
    /// Record a new OAuth flow.
    PutFlow { flow: FlowRow },
    /// End a pending, unexpired flow (else `WriteConflict`): completed with the sealed access
    /// token kept for the one `complete` call, or failed with the provider's error. `status`
    /// is `Completed` or `Failed`, never `Pending`.
    FinishFlow {
        flow_id: String,
        status: FlowStatus,
        error: Option<String>,
        access_token: Option<Vec<u8>>,
    },
    /// Hand out a completed flow's access token once: requires a completed, unexpired flow whose
    /// token was not taken (else `WriteConflict`); marks it taken and deletes the token.
    TakeFlowToken { flow_id: String },
}

/// The state of an OAuth flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlowStatus {
    Pending,
    Completed,
    Failed,
}

impl FlowStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            FlowStatus::Pending => "pending",
            FlowStatus::Completed => "completed",
            FlowStatus::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<FlowStatus> {
        match s {
            "pending" => Some(FlowStatus::Pending),
            "completed" => Some(FlowStatus::Completed),
            "failed" => Some(FlowStatus::Failed),
            _ => None,
        }
    }
}

/// An OAuth authorization-code flow, started by one installation incarnation.
#[derive(Clone)]
pub struct FlowRow {
    pub flow_id: String,
    /// The installation incarnation that started it; the flow dies with it.
    pub ns: Ns,
    pub installation_id: String,
    pub provider: String,
    /// Where the token set lands: a credential key and owner.
    pub store_key: Vec<u8>,
    pub store_owner: CredentialOwner,
    pub scopes: Vec<String>,
    pub return_to: Option<String>,
    /// MAC of the single-use `state` (the state itself is never stored).
    pub state_mac: Vec<u8>,
    /// The sealed PKCE verifier.
    pub verifier: Vec<u8>,
    pub status: FlowStatus,
    /// The provider's error of a failed flow.
    pub error: Option<String>,
    /// The sealed access token of a completed flow, until `complete` takes it.
    pub access_token: Option<Vec<u8>>,
    pub taken: bool,
    pub expires_at: Millis,
    pub created_at: Millis,
}

impl std::fmt::Debug for FlowRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlowRow")
            .field("flow_id", &self.flow_id)
            .field("status", &self.status)
            .field("taken", &self.taken)
            .finish_non_exhaustive()
    }
}

/// What a credential write stores; the secret and the metadata arrive sealed.
#[derive(Clone)]
pub struct CredentialWrite {
    pub key: Vec<u8>,
    pub owner: CredentialOwner,
    /// The app whose installation stored it: only that app (or an admin) may replace or delete
    /// an account credential.
    pub app_id: String,
    pub provider: String,
    pub kind: String,
    pub token_expires_at: Option<Millis>,
    pub scopes: Vec<String>,
    pub needs_reconsent: bool,
    /// Sealed JSON object.
    pub metadata: Vec<u8>,
    /// Sealed secret; never leaves the service except into the proxy's outbound request.
    pub secret: Vec<u8>,
}

/// Who a credential belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialOwner {
    Installation,
    Account,
}

impl CredentialOwner {
    pub fn as_str(self) -> &'static str {
        match self {
            CredentialOwner::Installation => "installation",
            CredentialOwner::Account => "account",
        }
    }

    pub fn parse(s: &str) -> Option<CredentialOwner> {
        match s {
            "installation" => Some(CredentialOwner::Installation),
            "account" => Some(CredentialOwner::Account),
            _ => None,
        }
    }
}

/// A stored credential.
#[derive(Clone)]
pub struct CredentialRow {
    pub ns: Ns,
    pub write: CredentialWrite,
    pub version: u64,
    pub created_at: Millis,
    pub updated_at: Millis,
    pub expires_at: Option<Millis>,
    /// A refresh lease (single-flight token refresh): held until this time by `lease_id`.
    pub lease_until: Option<Millis>,
    pub lease_id: Option<String>,
}

impl std::fmt::Debug for CredentialRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CredentialRow")
            .field("ns", &self.ns)
            .field("version", &self.version)
            .field("provider", &self.write.provider)
            .field("kind", &self.write.kind)
            .finish_non_exhaustive()
    }
}

/// A provider: operator configuration. The document never holds the client secret, which is
/// stored sealed beside it.
#[derive(Clone)]
pub struct ProviderRow {
    pub name: String,
    /// The provider document as JSON, without `client_secret`.
    pub document: Vec<u8>,
    pub client_secret: Option<Vec<u8>>,
    pub created_at: Millis,
    pub updated_at: Millis,
}

impl std::fmt::Debug for ProviderRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderRow")
            .field("name", &self.name)
            .field("client_secret_set", &self.client_secret.is_some())
            .finish_non_exhaustive()
    }
}

/// An atomic unit of writes with its audit events.
#[derive(Default)]
pub struct Commit {
    /// Namespaces that must still exist inside the transaction (the installation incarnation the
    /// request authenticated against, and the app's shared namespace when it is touched).
    /// A missing guard fails the commit with `Unauthenticated`.
    pub guards: Vec<Ns>,
    /// The namespace keys the commit's ciphertexts were sealed under: each must still be its
    /// namespace's key, and no guard may be fenced by a key rotation, else `Rekeying`
    /// (see [`crate::sealed_rows`]).
    pub keys: Vec<KeyCheck>,
    pub mutations: Vec<Mutation>,
    /// Committed in the same transaction as the mutations.
    pub audit: Vec<AuditEvent>,
}

/// Storage quotas per namespace (an installation's stores, or an app's shared store), set by
/// the operator and enforced by the backend inside the commit's transaction, so that servers
/// sharing a database enforce them together. Off when both are `None`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Quota {
    /// Live records at most.
    pub max_records: Option<u64>,
    /// Stored bytes at most: keys, sealed values and sealed descriptions of live records.
    pub max_bytes: Option<u64>,
}

/// A namespace's live records and their stored bytes (see [`Quota::max_bytes`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub records: u64,
    pub bytes: u64,
}

impl Quota {
    pub fn is_off(&self) -> bool {
        self.max_records.is_none() && self.max_bytes.is_none()
    }

    /// Whether a commit that moved a namespace from `before` to `after` must be refused: it
    /// ends over a limit and grew what that limit counts. A namespace already over a lowered
    /// quota can still delete, shrink and overwrite in place.
    pub fn refuses(&self, before: Usage, after: Usage) -> bool {
        let over = |max: Option<u64>, b: u64, a: u64| max.is_some_and(|m| a > m && a > b);
        over(self.max_records, before.records, after.records)
            || over(self.max_bytes, before.bytes, after.bytes)
    }
}

/// The namespaces whose usage a commit may grow: those it puts records into, each once.
pub fn grown_namespaces(commit: &Commit) -> Vec<Ns> {
    let mut ns: Vec<Ns> = commit
        .mutations
        .iter()
        .filter_map(|m| match m {
            Mutation::Put { ns, .. } => Some(*ns),
            _ => None,
        })
        .collect();
    ns.sort_unstable();
    ns.dedup();
    ns
}

/// What a committed mutation produced, in the order of `Commit::mutations`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    Put {
        version: u64,
        created: bool,
        created_at: Millis,
        updated_at: Millis,
        expires_at: Option<Millis>,
    },
    Deleted,
    Checked,
}

/// A namespace: a partition with its own data key, wrapped by the root key.
#[derive(Clone)]
pub struct NamespaceRow {
    pub ns: Ns,
    pub wrapped_key: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppRow {
    pub app_id: String,
    pub scopes: Vec<String>,
    pub ns: Ns,
    pub created_at: Millis,
    pub updated_at: Millis,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountRow {
    pub account_id: String,
    pub ns: Ns,
    pub created_at: Millis,
    pub updated_at: Millis,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstallationRow {
    pub installation_id: String,
    pub app_id: String,
    pub account_id: String,
    pub ns: Ns,
    pub created_at: Millis,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    Admin,
    Installation,
}

impl TokenKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TokenKind::Admin => "admin",
            TokenKind::Installation => "installation",
        }
    }

    pub fn parse(s: &str) -> Option<TokenKind> {
        match s {
            "admin" => Some(TokenKind::Admin),
            "installation" => Some(TokenKind::Installation),
            _ => None,
        }
    }
}

/// How every backend stores the columns that are not plain numbers, bytes or text, so that the
/// stores (and export files) agree: lists of strings (scopes, root key version ids) as a JSON
/// array, and the enumerations by their `as_str` names. A stored value that does not decode is
/// an internal error: the backend wrote it.
pub mod columns {
    use super::{CredentialOwner, FlowStatus, TokenKind};
    use crate::error::{CoreError, Result};

    pub fn encode_list(items: &[String]) -> Result<String> {
        serde_json::to_string(items)
            .map_err(|e| CoreError::internal(format!("encode a stored list: {e}")))
    }

    pub fn decode_list(text: &str) -> Result<Vec<String>> {
        serde_json::from_str(text)
            .map_err(|e| CoreError::internal(format!("a stored list is not a JSON array: {e}")))
    }

    pub fn decode_owner(text: &str) -> Result<CredentialOwner> {
        CredentialOwner::parse(text)
            .ok_or_else(|| CoreError::internal(format!("unknown stored credential owner `{text}`")))
    }

    pub fn decode_token_kind(text: &str) -> Result<TokenKind> {
        TokenKind::parse(text)
            .ok_or_else(|| CoreError::internal(format!("unknown stored token kind `{text}`")))
    }

    pub fn decode_flow_status(text: &str) -> Result<FlowStatus> {
        FlowStatus::parse(text)
            .ok_or_else(|| CoreError::internal(format!("unknown stored flow status `{text}`")))
    }
}

/// A token as stored: its MAC, never the token.
#[derive(Clone)]
pub struct TokenRow {
    pub token_id: String,
    pub mac: Vec<u8>,
    pub kind: TokenKind,
    pub installation_id: Option<String>,
    /// The installation incarnation the token was issued for.
    pub ns: Option<Ns>,
    /// None: every scope of the app.
    pub scopes: Option<Vec<String>>,
    pub expires_at: Option<Millis>,
    pub created_at: Millis,
}

impl std::fmt::Debug for TokenRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenRow")
            .field("token_id", &self.token_id)
            .field("kind", &self.kind)
            .field("installation_id", &self.installation_id)
            .finish_non_exhaustive()
    }
}

/// What authentication needs, read in one step: the token, and for installation tokens the
/// live installation it belongs to and its app's current scopes and shared namespace.
#[derive(Debug, Clone)]
pub struct AuthRecord {
    pub token: TokenRow,
    pub installation: Option<InstallationRow>,
    pub app_scopes: Vec<String>,
    pub app_ns: Option<Ns>,
    /// The namespace of the installation's account (account credentials).
    pub account_ns: Option<Ns>,
}

/// A new installation with its namespace key and first token.
#[derive(Clone)]
pub struct NewInstallation {
    pub installation_id: String,
    pub app_id: String,
    pub account_id: String,
    pub namespace: NamespaceRow,
    pub token: TokenRow,
}

/// A server process that uses this store, and the root key versions it holds (ids only, never
/// key material): rotation activates only a version that every live server holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRow {
    /// Unique per process start.
    pub node_id: String,
    /// The root key version ids in the process's key ring.
    pub key_versions: Vec<String>,
    /// When the process registered, on the backend's clock.
    pub started_at: Millis,
    /// The last heartbeat, on the backend's clock.
    pub last_seen: Millis,
}

#[derive(Debug, Clone)]
pub enum InstallOutcome {
    Created(InstallationRow),
    /// The same app and account were already installed under this id.
    Existing(InstallationRow),
    /// The id is taken by another app or account.
    Taken(InstallationRow),
    AppMissing,
    AccountMissing,
}

/// What the store holds, counted (see [`Backend::store_counts`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreCounts {
    pub apps: u64,
    pub accounts: u64,
    pub installations: u64,
    pub records: u64,
    pub credentials: u64,
    pub audit_events: u64,
    /// The store's size on disk in bytes, where the backend knows it (the embedded file; the
    /// PostgreSQL database's size).
    pub bytes: Option<u64>,
}

/// The wrapped keys a store keeps, read without writing anything, for the start-up check of
/// the root key ([`crate::service::Service::check_root_key`]). A store that is not open for
/// serving yet implements it too: the embedded store reads a read-only view of its file before
/// it migrates anything; PostgreSQL reads through its pool before migrating.
#[async_trait]
pub trait StoredKeys: Send + Sync {
    /// A server-wide wrapped key kept in the meta table (the token pepper, the system key).
    async fn stored_meta_key(&self, name: &str) -> Result<Option<Vec<u8>>>;

    /// Up to `limit` namespaces whose wrapped key starts with `prefix` (the header of one root
    /// key version).
    async fn namespace_keys_with_prefix(
        &self,
        prefix: &[u8],
        limit: usize,
    ) -> Result<Vec<NamespaceRow>>;

    /// One namespace whose wrapped key starts with none of `prefixes`, if any.
    async fn namespace_key_without_prefixes(
        &self,
        prefixes: &[Vec<u8>],
    ) -> Result<Option<NamespaceRow>>;
}

/// The storage engine. Implementations: the embedded SQLite backend, PostgreSQL.
///
/// Reads see only live records (`expires_at` is null or after the backend's clock). A commit is
/// all or nothing; a failed precondition fails it with `CoreError::WriteConflict` (the service
/// re-reads and retries), a missing guard with `CoreError::Unauthenticated`.
#[async_trait]
pub trait Backend: Send + Sync + 'static {
    /// A short name for logs and `/readyz`.
    fn name(&self) -> &'static str;

    /// Can only one process serve this store (the embedded store's lock)? Then registrations
    /// of other processes in the node registry are left by processes that died.
    fn serves_alone(&self) -> bool {
        false
    }

    /// Is the storage reachable?
    async fn ready(&self) -> Result<()>;

    /// Server-wide settings (e.g. the wrapped token pepper). Inserts `value` unless the name
    /// already has one, and returns the stored value either way.
    async fn meta_get_or_insert(&self, name: &str, value: &[u8]) -> Result<Vec<u8>>;

    async fn meta_get(&self, name: &str) -> Result<Option<Vec<u8>>>;

    /// Replaces the meta value `name` with `new` if it is still `old` (compare-and-set; the
    /// root key rotation's re-wrap of the pepper and system key, and the active version). False
    /// when it changed or is absent.
    async fn meta_replace(&self, name: &str, old: &[u8], new: &[u8]) -> Result<bool>;

    /// Replaces a namespace's wrapped key with `new` if it is still `old` (compare-and-set: the
    /// re-wrap of a root key rotation, safe to run on several servers at once). False when it
    /// changed or the namespace is gone.
    async fn namespace_key_replace(&self, ns: Ns, old: &[u8], new: &[u8]) -> Result<bool>;

    /// Puts up the rekey fence of `ns` under `lease_id` for `lease_ms`, judged on the
    /// backend's clock (an expired fence is replaced): while it stands, every commit guarded by
    /// `ns` fails with `Rekeying`. False when another fence stands; `NotFound` when the
    /// namespace is gone. See [`crate::sealed_rows`].
    async fn fence_namespace(&self, ns: Ns, lease_id: &str, lease_ms: i64) -> Result<bool>;

    /// Takes down the rekey fence `lease_id` of `ns` (a rotation that gave up); false when it
    /// is not there.
    async fn unfence_namespace(&self, ns: Ns, lease_id: &str) -> Result<bool>;

    /// Every row of `ns` that holds ciphertext sealed under its key: records and credentials,
    /// expired ones too, and OAuth flows.
    async fn namespace_sealed_rows(&self, ns: Ns) -> Result<SealedRows>;

    /// Applies an installation key rotation in one transaction (see [`Rekey`]).
    async fn rekey_namespace(&self, rekey: Rekey) -> Result<RekeyCounts>;

    /// Up to `limit` namespaces with `ns > after`, in `ns` order, whose wrapped key does not
    /// start with `prefix` (the header of one root key version): what a re-wrap still has to do.
    async fn namespace_keys_not_under(
        &self,
        prefix: &[u8],
        after: Ns,
        limit: usize,
    ) -> Result<Vec<NamespaceRow>>;

    /// How many namespace keys start with each of `prefixes` (in their order), and how many
    /// namespaces there are in all.
    async fn count_namespace_keys(&self, prefixes: &[Vec<u8>]) -> Result<(Vec<u64>, u64)>;

    /// Row counts for `tresor status` (expired rows not yet purged included).
    async fn store_counts(&self) -> Result<StoreCounts>;

    async fn authenticate(&self, token_id: &str) -> Result<Option<AuthRecord>>;

    /// A number that changes, before any write is acknowledged, whenever that write may have
    /// changed what [`Backend::authenticate`] answers for some token (tokens, installations,
    /// apps, accounts). Only a backend that sees every write to its store can promise that:
    /// the embedded store, which one process owns. `None` (the default) means it cannot, and
    /// every request must authenticate against the store itself, as it must when several
    /// servers share one database.
    ///
    /// A caller that reads the epoch *before* `authenticate` may keep the answer for as long as
    /// the epoch stays the same.
    fn auth_epoch(&self) -> Option<u64> {
        None
    }

    /// The wrapped key of a live namespace.
    async fn namespace_key(&self, ns: Ns) -> Result<Option<Vec<u8>>>;

    async fn read_record(
        &self,
        ns: Ns,
        store: StoreKind,
        key: &[u8],
    ) -> Result<Option<StoredRecord>>;

    /// Metadata (and sealed descriptions) of live records; `value` is left empty.
    async fn list_records(
        &self,
        ns: Ns,
        store: StoreKind,
        query: &ListQuery,
    ) -> Result<Vec<StoredRecord>>;

    /// Applies a commit atomically and durably; returns only after it is on disk.
    async fn commit(&self, commit: Commit) -> Result<Vec<Applied>>;

    /// Queues audit events of reads and refusals; durable within milliseconds, without making
    /// the caller wait for an fsync. Fails (and the caller answers 503) when the queue is full.
    fn audit_enqueue(&self, events: Vec<AuditEvent>) -> Result<()>;

    async fn audit_query(&self, query: &AuditQuery) -> Result<Vec<AuditEvent>>;

    /// Deletes up to `limit` expired records, credentials, and OAuth flows more than a day past
    /// their expiry (kept that long so a late `complete` still answers 410); returns how many.
    async fn purge_expired(&self, limit: usize) -> Result<usize>;

    /// A live credential under `key` in the first of `namespaces` that holds one.
    async fn read_credential(&self, namespaces: &[Ns], key: &[u8])
    -> Result<Option<CredentialRow>>;

    /// Live credentials of all `namespaces` merged in key byte order; `secret` is left empty.
    async fn list_credentials(
        &self,
        namespaces: &[Ns],
        query: &ListQuery,
    ) -> Result<Vec<CredentialRow>>;

    async fn flow_by_id(&self, flow_id: &str) -> Result<Option<FlowRow>>;

    /// The flow whose `state_mac` this is (whatever its status or expiry).
    async fn flow_by_state(&self, state_mac: &[u8]) -> Result<Option<FlowRow>>;

    /// Creates or updates a provider. With `keep_secret`, a stored client secret is kept when
    /// `row.client_secret` is None. Returns the stored row and whether it was created.
    async fn put_provider(
        &self,
        row: ProviderRow,
        keep_secret: bool,
        audit: AuditEvent,
    ) -> Result<(ProviderRow, bool)>;
    async fn get_provider(&self, name: &str) -> Result<Option<ProviderRow>>;
    async fn list_providers(&self) -> Result<Vec<ProviderRow>>;
    async fn delete_provider(&self, name: &str, audit: AuditEvent) -> Result<bool>;

    /// Deletes up to `limit` audit events older than `before` (retention); returns how many.
    async fn purge_audit(&self, before: Millis, limit: usize) -> Result<usize>;

    /// Creates or updates an app (a new app gets `namespace` for its shared store).
    /// Returns the row and whether it was created.
    async fn put_app(
        &self,
        app_id: &str,
        scopes: &[String],
        namespace: NamespaceRow,
        audit: AuditEvent,
    ) -> Result<(AppRow, bool)>;
    async fn get_app(&self, app_id: &str) -> Result<Option<AppRow>>;
    async fn list_apps(&self) -> Result<Vec<AppRow>>;
    /// Deletes an app, its installations (records, tokens, keys) and its shared store.
    async fn delete_app(&self, app_id: &str, audit: AuditEvent) -> Result<bool>;

    async fn put_account(
        &self,
        account_id: &str,
        namespace: NamespaceRow,
        audit: AuditEvent,
    ) -> Result<(AccountRow, bool)>;
    async fn get_account(&self, account_id: &str) -> Result<Option<AccountRow>>;
    async fn list_accounts(&self) -> Result<Vec<AccountRow>>;
    /// Deletes an account, every installation in it (as uninstall does), and the account's
    /// namespace with its credentials.
    async fn delete_account(&self, account_id: &str, audit: AuditEvent) -> Result<bool>;

    async fn install(&self, new: NewInstallation, audit: AuditEvent) -> Result<InstallOutcome>;
    async fn get_installation(&self, installation_id: &str) -> Result<Option<InstallationRow>>;
    async fn list_installations(&self) -> Result<Vec<InstallationRow>>;
    /// Deletes the installation's records, credentials, OAuth flows, tokens and namespace (its
    /// key). The account's credentials stay.
    async fn uninstall(&self, installation_id: &str, audit: AuditEvent) -> Result<bool>;

    /// Stores a token; for an installation token, fails with `NotFound` unless the installation
    /// incarnation `token.ns` is still live.
    async fn create_token(&self, token: TokenRow, audit: AuditEvent) -> Result<()>;
    async fn revoke_token(&self, token_id: &str, audit: AuditEvent) -> Result<bool>;
    /// Is there any admin token stored (for the bootstrap token)?
    async fn has_admin_token(&self) -> Result<bool>;

    /// Records (or refreshes) a server process and the root key versions it holds;
    /// `started_at` and `last_seen` of `node` are ignored and stamped from the backend's clock
    /// (`started_at` only on the first call for the id).
    async fn register_node(&self, node: &NodeRow) -> Result<()>;

    /// Every registered server process, in `node_id` order.
    async fn list_nodes(&self) -> Result<Vec<NodeRow>>;

    /// Removes a server process's registration (at a clean shutdown); true if it was there.
    async fn unregister_node(&self, node_id: &str) -> Result<bool>;

    /// Up to `limit` rows of `table` as stored (ciphertext as is), in primary-key order (keys
    /// as bytes), after the row whose key cells are `after`. Export only.
    async fn export_rows(
        &self,
        table: DumpTable,
        after: Option<&[Cell]>,
        limit: usize,
    ) -> Result<Vec<DumpRow>>;

    /// Inserts rows as they are, in one durable transaction, rebuilding whatever bookkeeping
    /// the backend derives from them (so that versions keep increasing past the imported ones).
    /// Fails with `Conflict`, inserting none, when a row's primary key exists. Import only, into
    /// a store no server is using.
    async fn import_rows(&self, table: DumpTable, rows: Vec<DumpRow>) -> Result<()>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(records: u64, bytes: u64) -> Usage {
        Usage { records, bytes }
    }

    #[test]
    fn a_quota_refuses_growth_past_it_only() {
        let q = Quota {
            max_records: Some(3),
            max_bytes: Some(100),
        };
        assert!(!q.refuses(usage(2, 50), usage(3, 60)), "up to the limit");
        assert!(q.refuses(usage(3, 60), usage(4, 70)), "one record past it");
        assert!(q.refuses(usage(2, 90), usage(2, 101)), "one byte past it");
        // Over a lowered quota: shrinking, deleting and equal overwrites stay possible.
        assert!(!q.refuses(usage(5, 500), usage(4, 400)));
        assert!(!q.refuses(usage(5, 500), usage(5, 500)));
        assert!(q.refuses(usage(5, 500), usage(5, 501)));
        assert!(Quota::default().is_off());
        assert!(!Quota::default().refuses(usage(0, 0), usage(u64::MAX, u64::MAX)));
    }
}
