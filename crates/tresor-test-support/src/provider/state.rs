//! The fake provider's memory: pending authorization requests, codes, grants and the tokens
//! issued for them, and the statistics and violations tests read. One lock guards it all; no
//! handler holds it across an await.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::{ProviderConfig, ProviderStats};

/// Shared between the handlers and [`TestProvider`](super::TestProvider).
pub(super) struct Shared {
    pub(super) config: ProviderConfig,
    state: Mutex<ProviderState>,
}

impl Shared {
    pub(super) fn new(config: ProviderConfig) -> Shared {
        Shared {
            config,
            state: Mutex::new(ProviderState::default()),
        }
    }

    /// A panicking holder cannot leave the state half-updated in a way that matters to tests,
    /// so a poisoned lock is simply taken over.
    pub(super) fn lock(&self) -> MutexGuard<'_, ProviderState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Never call while holding [`lock`](Self::lock); use [`ProviderState::violation`] then.
    pub(super) fn violation(&self, message: String) {
        self.lock().violation(message);
    }
}

pub(super) type GrantId = usize;

/// An authorize request shown to the user and not yet decided.
pub(super) struct PendingAuthorization {
    pub(super) redirect_uri: String,
    pub(super) state: Option<String>,
    pub(super) code_challenge: Option<String>,
    pub(super) scope: String,
}

pub(super) struct IssuedCode {
    pub(super) redirect_uri: String,
    pub(super) code_challenge: Option<String>,
    pub(super) scope: String,
    pub(super) issued_at: Instant,
    /// Set on first presentation: a code is single-use even when that first exchange fails.
    pub(super) used: bool,
    /// The grant a successful exchange created, revoked when the code is replayed.
    pub(super) grant: Option<GrantId>,
}

#[derive(Default)]
pub(super) struct ProviderState {
    pub(super) pending: HashMap<String, PendingAuthorization>,
    pub(super) codes: HashMap<String, IssuedCode>,
    pub(super) stats: ProviderStats,
    grants: Vec<Grant>,
    access_tokens: HashMap<String, AccessToken>,
    /// Every refresh token ever issued, stale ones included, so reuse can be recognized.
    refresh_tokens: HashMap<String, GrantId>,
    passwords: HashMap<String, GrantId>,
}

struct Grant {
    revoked: bool,
    latest_refresh_token: Option<String>,
    scope: String,
}

struct AccessToken {
    grant: GrantId,
    /// `None`: never expires by itself.
    expires_at: Option<Instant>,
}

impl ProviderState {
    pub(super) fn violation(&mut self, message: String) {
        self.stats.violations.push(message);
    }

    pub(super) fn new_grant(&mut self, scope: String) -> GrantId {
        self.grants.push(Grant {
            revoked: false,
            latest_refresh_token: None,
            scope,
        });
        self.grants.len() - 1
    }

    pub(super) fn grant_scope(&self, grant: GrantId) -> String {
        self.grants
            .get(grant)
            .map(|g| g.scope.clone())
            .unwrap_or_default()
    }

    pub(super) fn is_revoked(&self, grant: GrantId) -> bool {
        self.grants.get(grant).is_none_or(|g| g.revoked)
    }

    pub(super) fn revoke(&mut self, grant: GrantId) {
        if let Some(g) = self.grants.get_mut(grant) {
            g.revoked = true;
        }
    }

    pub(super) fn revoke_all(&mut self) {
        for g in &mut self.grants {
            g.revoked = true;
        }
    }

    /// `lifetime: None` for tokens that never expire by themselves.
    pub(super) fn issue_access_token(
        &mut self,
        grant: GrantId,
        lifetime: Option<Duration>,
    ) -> String {
        let token = random_id("at-");
        // An overflowing lifetime means "practically never".
        let expires_at = lifetime.and_then(|l| Instant::now().checked_add(l));
        self.access_tokens
            .insert(token.clone(), AccessToken { grant, expires_at });
        token
    }

    /// Issues a refresh token and makes it the grant's latest.
    pub(super) fn issue_refresh_token(&mut self, grant: GrantId) -> String {
        let token = random_id("rt-");
        self.refresh_tokens.insert(token.clone(), grant);
        if let Some(g) = self.grants.get_mut(grant) {
            g.latest_refresh_token = Some(token.clone());
        }
        token
    }

    pub(super) fn refresh_token_grant(&self, token: &str) -> Option<GrantId> {
        self.refresh_tokens.get(token).copied()
    }

    pub(super) fn is_latest_refresh_token(&self, grant: GrantId, token: &str) -> bool {
        self.grants
            .get(grant)
            .and_then(|g| g.latest_refresh_token.as_deref())
            == Some(token)
    }

    pub(super) fn issue_password(&mut self) -> String {
        let grant = self.new_grant(String::new());
        let password = random_id("pw-");
        self.passwords.insert(password.clone(), grant);
        password
    }

    pub(super) fn expire_access_tokens(&mut self) {
        let now = Instant::now();
        for token in self.access_tokens.values_mut() {
            token.expires_at = Some(now);
        }
    }

    pub(super) fn accepts_token(&self, token: &str) -> bool {
        let now = Instant::now();
        self.access_tokens
            .get(token)
            .is_some_and(|t| !self.is_revoked(t.grant) && t.expires_at.is_none_or(|at| now < at))
    }

    pub(super) fn accepts_password(&self, password: &str) -> bool {
        self.passwords
            .get(password)
            .is_some_and(|&grant| !self.is_revoked(grant))
    }
}

/// `prefix` + 192 random bits, base64url: distinct every time.
pub(super) fn random_id(prefix: &str) -> String {
    let mut bytes = [0u8; 24];
    if aws_lc_rs::rand::fill(&mut bytes).is_err() {
        // Handlers must not panic; std's per-process random hash keys with a counter are
        // unpredictable enough for a test provider.
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        for chunk in bytes.chunks_mut(8) {
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let h = std::hash::RandomState::new().hash_one(n).to_le_bytes();
            chunk.copy_from_slice(&h[..chunk.len()]);
        }
    }
    format!("{prefix}{}", URL_SAFE_NO_PAD.encode(bytes))
}
