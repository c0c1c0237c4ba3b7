//! Token refresh, single-flight across threads and servers: before a provider is called, a
//! refresh lease is taken by compare-and-set on the credential row, so that with rotating
//! refresh tokens only one request ever presents the current refresh token. Others wait for
//! the next version (or for the lease to lapse if its holder died). A refresh answered
//! `invalid_grant` marks the credential `needs_reconsent`.

use std::time::Duration;

use zeroize::Zeroizing;

use crate::backend::{Commit, CredentialWrite, Expiry, Mutation, Precondition};
use crate::credentials::{CredentialKind, CredentialSecret, Grant};
use crate::error::{CoreError, Result};
use crate::model::{Millis, Principal, RecordKey, now_millis};

use super::Service;
use super::credentials::{UsableCredential, owner_label, seal_credential};
use super::oauth::{TokenEndpoint, TokenSet};

/// A token is refreshed when it expires within this margin.
pub const REFRESH_MARGIN_MS: Millis = 60_000;
/// How long a refresh lease holds; longer than a token request may take.
const LEASE_MS: Millis = 20_000;
/// How often a waiter looks for the refreshed credential.
const WAIT_STEP: Duration = Duration::from_millis(25);

/// The token request a lease holder must make.
pub struct RefreshWork {
    pub endpoint: TokenEndpoint,
    /// Form parameters of the grant (`refresh_token` or `client_credentials`).
    pub params: Vec<(&'static str, Zeroizing<String>)>,
    key: RecordKey,
    version: u64,
    /// The credential as read under the lease.
    base: UsableCredential,
}

impl std::fmt::Debug for RefreshWork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RefreshWork")
            .field("key", &self.key)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

/// What a caller must do to get a fresh token.
#[derive(Debug)]
pub enum RefreshStep {
    /// This caller holds the lease: call the token endpoint, then `finish_refresh`.
    Refresh(RefreshWork),
    /// Someone else refreshed meanwhile; use this.
    Fresh(UsableCredential),
}

/// Why a refresh ended without tokens.
#[derive(Debug)]
pub enum RefreshFailure {
    /// The provider answered `invalid_grant`: the grant is gone.
    InvalidGrant,
    /// Any other failure (transport, other OAuth errors).
    Other(String),
}

impl UsableCredential {
    /// Can tresor get a new token for this credential by itself?
    pub fn renewable(&self) -> bool {
        let Some(o) = &self.provider.oauth2 else {
            return false;
        };
        match self.meta.kind.as_str() {
            k if k == CredentialKind::ClientCredentials.as_str() => {
                o.grant == Grant::ClientCredentials
            }
            k if k == CredentialKind::OAuth2.as_str() => {
                self.secret.field("refresh_token").is_some()
            }
            _ => false,
        }
    }

    /// Does the token need renewing before use (missing, or expiring within the margin)?
    pub fn needs_renewal(&self, now: Millis) -> bool {
        if !self.renewable() {
            return false;
        }
        if self.secret.field("access_token").is_none() {
            return true;
        }
        self.meta
            .token_expires_at
            .is_some_and(|t| t <= now + REFRESH_MARGIN_MS)
    }

    pub fn version(&self) -> u64 {
        self.meta.version
    }
}

impl Service {
    /// Takes the refresh lease of `cred` (as read at its version), or waits for whoever holds
    /// it and answers the refreshed credential.
    pub async fn begin_refresh(
        &self,
        principal: &Principal,
        cred: &UsableCredential,
    ) -> Result<RefreshStep> {
        let key = RecordKey::parse(&cred.meta.key)?;
        let mut current_version = cred.meta.version;
        let deadline = now_millis() + 2 * LEASE_MS;
        loop {
            let lease_id = format!(
                "{:x}",
                u64::from_be_bytes(tresor_crypto::random_bytes::<8>()?)
            );
            let commit = Commit {
                guards: vec![principal.installation()?.ns],
                keys: Vec::new(),
                mutations: vec![Mutation::AcquireCredentialLease {
                    ns: cred.ns,
                    key: key.as_bytes().to_vec(),
                    expect_version: current_version,
                    lease_id,
                    lease_until: now_millis() + LEASE_MS,
                }],
                audit: vec![],
            };
            match self.backend.commit(commit).await {
                Ok(_) => {
                    // Read again under the lease: the refresh must present the latest refresh
                    // token.
                    let base = self.credential_for_use(principal, &key).await?;
                    if base.meta.version != current_version {
                        current_version = base.meta.version;
                        continue;
                    }
                    return Ok(RefreshStep::Refresh(self.refresh_work(base, key)?));
                }
                Err(CoreError::WriteConflict) => {}
                // The installation's key is being rotated: wait like for another holder.
                Err(CoreError::Rekeying) => self.keys.forget(principal.installation()?.ns),
                Err(e) => return Err(e),
            }
            // Held by someone else, or the version moved: look again.
            tokio::time::sleep(WAIT_STEP).await;
            let now_cred = self.credential_for_use(principal, &key).await?;
            if now_cred.meta.version != cred.meta.version && !now_cred.needs_renewal(now_millis()) {
                return Ok(RefreshStep::Fresh(now_cred));
            }
            current_version = now_cred.meta.version;
            if now_millis() > deadline {
                return Err(CoreError::Unavailable(
                    "the credential's token refresh did not finish in time".into(),
                ));
            }
        }
    }

    fn refresh_work(&self, cred: UsableCredential, key: RecordKey) -> Result<RefreshWork> {
        let oauth = cred
            .provider
            .oauth2
            .as_ref()
            .ok_or_else(|| CoreError::Conflict("the provider has no OAuth settings".into()))?;
        let url = url::Url::parse(&oauth.token_url)
            .map_err(|_| CoreError::internal("stored token_url does not parse"))?;
        let mut params: Vec<(&'static str, Zeroizing<String>)> = Vec::new();
        let mut client_id = oauth.client_id.clone();
        let mut own_secret = None;
        if cred.meta.kind == CredentialKind::ClientCredentials.as_str() {
            params.push(("grant_type", Zeroizing::new("client_credentials".into())));
            if !oauth.scopes.is_empty() {
                params.push(("scope", Zeroizing::new(oauth.scopes.join(" "))));
            }
            // A credential holding its own client uses it, otherwise the provider's.
            if let (Some(id), Some(secret)) = (
                cred.secret.field("client_id"),
                cred.secret.field("client_secret"),
            ) {
                client_id = id.to_string();
                own_secret = Some(secret);
            }
        } else {
            let rt = cred
                .secret
                .field("refresh_token")
                .ok_or_else(|| CoreError::Conflict("the credential has no refresh token".into()))?;
            params.push(("grant_type", Zeroizing::new("refresh_token".into())));
            params.push(("refresh_token", rt));
        }
        Ok(RefreshWork {
            endpoint: TokenEndpoint {
                url,
                allow_private_network: cred.provider.allow_private_network,
                client_id,
                client_secret: own_secret,
                auth: oauth.token_auth,
            },
            params,
            key,
            version: cred.meta.version,
            base: cred,
        })
    }

    /// Fills the provider's client secret into a refresh's endpoint (kept apart so the secret
    /// is opened only by the lease holder).
    pub async fn refresh_endpoint_secret(&self, work: &mut RefreshWork) -> Result<()> {
        if work.endpoint.client_secret.is_none() {
            let (_, secret) = self.provider_with_secret(&work.base.meta.provider).await?;
            work.endpoint.client_secret = secret;
        }
        Ok(())
    }

    /// Stores the outcome of a refresh: the new token set (releasing the lease), or
    /// `needs_reconsent` after `invalid_grant`. Answers the credential to use.
    pub async fn finish_refresh(
        &self,
        principal: &Principal,
        work: RefreshWork,
        outcome: std::result::Result<TokenSet, RefreshFailure>,
    ) -> Result<UsableCredential> {
        let p = principal.installation()?;
        let cred = &work.base;
        let now = now_millis();
        let (secret_json, needs_reconsent) = match outcome {
            Ok(tokens) => {
                let mut secret = tokens.into_secret(cred.secret.field("refresh_token"), now);
                // A client-credentials credential keeps its own client with the new token.
                for k in ["client_id", "client_secret"] {
                    if let Some(v) = cred.secret.field(k) {
                        secret.insert(k.into(), serde_json::Value::String(v.to_string()));
                    }
                }
                (secret, false)
            }
            Err(RefreshFailure::InvalidGrant) => {
                let v: serde_json::Value = serde_json::from_slice(cred.secret.as_bytes())
                    .map_err(|_| CoreError::Integrity)?;
                (v.as_object().cloned().unwrap_or_default(), true)
            }
            Err(RefreshFailure::Other(msg)) => {
                return Err(CoreError::UpstreamFailed(format!(
                    "refreshing the token failed: {msg}"
                )));
            }
        };
        let parsed = CredentialSecret::parse(&secret_json, &cred.provider, now)?;
        let label = owner_label(p, cred.meta.owner);
        let key = work.key.clone();
        let metadata = serde_json::to_vec(&cred.meta.metadata)
            .map_err(|e| CoreError::internal(format!("metadata encoding: {e}")))?;
        let mut ev = self.event(
            Some(principal),
            &crate::audit::RequestContext::default(),
            "credentials.refresh",
        );
        ev.request_id = "refresh".into();
        ev.store = Some("credentials".into());
        ev.key = Some(key.as_str().to_owned());
        ev.status = if needs_reconsent { 409 } else { 200 };
        let expiry = match cred.meta.expires_at {
            Some(_) => Expiry::Keep,
            None => Expiry::Clear,
        };
        // Sealed again if the installation's key is rotated meanwhile: the new token set must
        // not be lost (with rotating refresh tokens the old one is spent).
        let (label, key, metadata, parsed, ev) = (&label, &key, &metadata, &parsed, &ev);
        self.rekey_safe(&[p.ns, cred.ns], || async move {
            let (dk, key_check) = self
                .keys
                .sealing_key(self.backend.as_ref(), cred.ns)
                .await?;
            let (sealed_secret, sealed_meta) =
                seal_credential(&dk, cred.ns, label, key, parsed.secret.as_bytes(), metadata)?;
            let write = CredentialWrite {
                key: key.as_bytes().to_vec(),
                owner: cred.meta.owner,
                app_id: cred.stored_by.clone(),
                provider: cred.meta.provider.clone(),
                // A renewed client-credentials token stays a client-credentials credential.
                kind: cred.meta.kind.clone(),
                token_expires_at: parsed.token_expires_at,
                scopes: if parsed.scopes.is_empty() {
                    cred.meta.scopes.clone()
                } else {
                    parsed.scopes.clone()
                },
                needs_reconsent,
                metadata: sealed_meta,
                secret: sealed_secret,
            };
            self.backend
                .commit(Commit {
                    guards: vec![p.ns],
                    keys: vec![key_check],
                    mutations: vec![Mutation::PutCredential {
                        ns: cred.ns,
                        other_ns: None,
                        expect: Precondition::Version(work.version),
                        credential: write,
                        expiry,
                    }],
                    audit: vec![ev.clone()],
                })
                .await
        })
        .await
        .map_err(|e| match e {
            CoreError::WriteConflict => CoreError::Unavailable(
                "the credential changed during its refresh; try again".into(),
            ),
            other => other,
        })?;
        if needs_reconsent {
            return Err(CoreError::ReconsentRequired);
        }
        self.credential_for_use(principal, key).await
    }
}
