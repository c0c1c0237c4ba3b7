//! Verified token state, kept between requests where the backend can say exactly when it goes
//! stale ([`Backend::auth_epoch`](crate::Backend::auth_epoch)).
//!
//! An entry holds what authentication derived from the store for one token id: the token's
//! MAC, its expiry, and the principal (installation incarnation and effective scopes). Never
//! the token itself, and never a value. Each entry carries the epoch read *before* the store
//! was queried; an entry whose epoch is not the current one is never used, so a revocation,
//! uninstall, app or scope change is seen by the very next request. Every request still checks
//! the presented token against the MAC and the expiry against the clock.

use std::collections::HashMap;
use std::sync::RwLock;

use crate::model::{Millis, Principal};

/// Entries kept at most; past it an arbitrary entry makes room. A few hundred bytes each.
pub(crate) const CAPACITY: usize = 32_768;

pub(crate) struct TokenCache {
    entries: RwLock<HashMap<String, Entry>>,
    capacity: usize,
}

#[derive(Clone)]
pub(crate) struct Entry {
    pub(crate) epoch: u64,
    pub(crate) mac: [u8; 32],
    pub(crate) expires_at: Option<Millis>,
    pub(crate) principal: Principal,
}

impl TokenCache {
    pub(crate) fn new(capacity: usize) -> TokenCache {
        TokenCache {
            entries: RwLock::new(HashMap::new()),
            capacity,
        }
    }

    /// The entry for `token_id` if it was made at `epoch`.
    pub(crate) fn get(&self, token_id: &str, epoch: u64) -> Option<Entry> {
        let entries = self.entries.read().ok()?;
        entries.get(token_id).filter(|e| e.epoch == epoch).cloned()
    }

    pub(crate) fn insert(&self, token_id: &str, entry: Entry) {
        // A poisoned lock only means a panic elsewhere mid-insert; the cache is an
        // optimisation, so it is simply not used then.
        let Ok(mut entries) = self.entries.write() else {
            return;
        };
        if entries.len() >= self.capacity && !entries.contains_key(token_id) {
            // Entries of an older epoch go first; they can never be used again.
            entries.retain(|_, e| e.epoch >= entry.epoch);
            if entries.len() >= self.capacity
                && let Some(victim) = entries.keys().next().cloned()
            {
                entries.remove(&victim);
            }
        }
        entries.insert(token_id.to_owned(), entry);
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.read().map(|e| e.len()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(epoch: u64) -> Entry {
        Entry {
            epoch,
            mac: [7; 32],
            expires_at: None,
            principal: Principal::Admin { token_id: None },
        }
    }

    #[test]
    fn an_entry_of_another_epoch_is_never_returned() {
        let cache = TokenCache::new(4);
        cache.insert("t1", entry(3));
        assert!(cache.get("t1", 3).is_some());
        assert!(cache.get("t1", 4).is_none());
        assert!(cache.get("t1", 2).is_none());
        assert!(cache.get("t2", 3).is_none());
    }

    #[test]
    fn the_cache_stays_within_its_capacity() {
        let cache = TokenCache::new(3);
        for i in 0..10 {
            cache.insert(&format!("t{i}"), entry(1));
            assert!(cache.len() <= 3);
        }
        assert!(cache.get("t9", 1).is_some(), "the newest entry is kept");
        // Stale entries make room before live ones.
        cache.insert("new", entry(2));
        assert_eq!(cache.len(), 1);
    }
}
