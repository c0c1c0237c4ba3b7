//! What an installation key rotation (`service::rekey`) exchanges with a backend: the rows of
//! one namespace that hold ciphertext sealed under its data key, the transaction that replaces
//! them together with the key, the fence that holds the namespace's writers off meanwhile, and
//! the check by which every other commit proves it sealed under the current key. A backend
//! sees ciphertext and wrapped keys only, as everywhere.

use crate::audit::AuditEvent;
use crate::backend::CredentialOwner;
use crate::model::{Ns, StoreKind};

/// A namespace key that a commit's ciphertexts were sealed under, as its wrapped bytes: the
/// commit applies only while the namespace still stores exactly this wrapped key, and fails
/// with `CoreError::Rekeying` otherwise (a rotation replaced the key, or a root key re-wrap
/// replaced its wrapping; the service re-reads the key and runs again).
#[derive(Clone, PartialEq, Eq)]
pub struct KeyCheck {
    pub ns: Ns,
    pub wrapped_key: Vec<u8>,
}

impl std::fmt::Debug for KeyCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyCheck")
            .field("ns", &self.ns)
            .finish_non_exhaustive()
    }
}

/// A record's sealed parts, with the version they belong to.
#[derive(Clone, PartialEq, Eq)]
pub struct SealedRecordRow {
    pub store: StoreKind,
    pub key: Vec<u8>,
    pub version: u64,
    pub value: Vec<u8>,
    pub description: Option<Vec<u8>>,
}

/// A credential's sealed parts, with the version they belong to and the owner its associated
/// data names.
#[derive(Clone, PartialEq, Eq)]
pub struct SealedCredentialRow {
    pub key: Vec<u8>,
    pub owner: CredentialOwner,
    pub version: u64,
    pub metadata: Vec<u8>,
    pub secret: Vec<u8>,
}

/// An OAuth flow's sealed parts: the PKCE verifier, and the access token of a completed flow
/// until it is taken. Flows have no version; their ciphertexts are their own compare-and-set.
#[derive(Clone, PartialEq, Eq)]
pub struct SealedFlowRow {
    pub flow_id: String,
    pub verifier: Vec<u8>,
    pub access_token: Option<Vec<u8>>,
}

/// Every row of one namespace that holds ciphertext under its key, expired or not.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SealedRows {
    pub records: Vec<SealedRecordRow>,
    pub credentials: Vec<SealedCredentialRow>,
    pub flows: Vec<SealedFlowRow>,
}

impl SealedRows {
    /// The ciphertext bytes held, to bound what a rotation keeps in memory.
    pub fn sealed_bytes(&self) -> usize {
        let records: usize = self
            .records
            .iter()
            .map(|r| r.value.len() + r.description.as_ref().map_or(0, Vec::len))
            .sum();
        let credentials: usize = self
            .credentials
            .iter()
            .map(|c| c.metadata.len() + c.secret.len())
            .sum();
        let flows: usize = self
            .flows
            .iter()
            .map(|f| f.verifier.len() + f.access_token.as_ref().map_or(0, Vec::len))
            .sum();
        records + credentials + flows
    }
}

impl std::fmt::Debug for SealedRows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealedRows")
            .field("records", &self.records.len())
            .field("credentials", &self.credentials.len())
            .field("flows", &self.flows.len())
            .finish()
    }
}

/// The one transaction of an installation key rotation. The backend applies it only when all of
/// this holds inside the transaction, and otherwise fails with `CoreError::WriteConflict`,
/// changing nothing (`CoreError::NotFound` when the namespace is gone):
///
/// - the rekey fence `lease_id` of `ns` still stands (expired or not, but not replaced);
/// - the namespace's wrapped key is still `old_wrapped_key`;
/// - every record and credential listed still has the version it was read at, and every flow
///   the ciphertexts it was read with (a row deleted meanwhile, by the purge, is skipped);
/// - the namespace holds no other record, credential or flow.
///
/// Then every listed ciphertext is replaced (versions, timestamps, expiry and leases stay), the
/// wrapped key becomes `new_wrapped_key`, the fence is taken down and `audit` is written.
#[derive(Clone)]
pub struct Rekey {
    pub ns: Ns,
    pub lease_id: String,
    pub old_wrapped_key: Vec<u8>,
    pub new_wrapped_key: Vec<u8>,
    /// Each record as read (its version), carrying its new ciphertexts.
    pub records: Vec<SealedRecordRow>,
    /// Each credential as read (its version), carrying its new ciphertexts.
    pub credentials: Vec<SealedCredentialRow>,
    /// Each flow as read, and re-sealed (the same flow id).
    pub flows: Vec<(SealedFlowRow, SealedFlowRow)>,
    pub audit: AuditEvent,
}

impl std::fmt::Debug for Rekey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rekey")
            .field("ns", &self.ns)
            .field("records", &self.records.len())
            .field("credentials", &self.credentials.len())
            .field("flows", &self.flows.len())
            .finish_non_exhaustive()
    }
}

/// How many rows a committed rotation re-sealed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RekeyCounts {
    pub records: u64,
    pub credentials: u64,
    pub flows: u64,
}

/// A write of a key rotation, as each backend runs it in its own transaction: the fence put up
/// or taken down, or the swap.
pub enum RekeyOp {
    Fence {
        ns: Ns,
        lease_id: String,
        lease_ms: i64,
    },
    Unfence {
        ns: Ns,
        lease_id: String,
    },
    Swap(Box<Rekey>),
}

impl RekeyOp {
    /// Audit events the op writes: the swap's one.
    pub fn audit_count(&self) -> usize {
        match self {
            RekeyOp::Swap(_) => 1,
            RekeyOp::Fence { .. } | RekeyOp::Unfence { .. } => 0,
        }
    }
}

/// What a [`RekeyOp`] produced.
#[derive(Debug)]
pub enum RekeyOutcome {
    /// A fence put up or taken down (or not).
    Done(bool),
    Swapped(RekeyCounts),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_shows_counts_never_bytes() {
        let rows = SealedRows {
            records: vec![SealedRecordRow {
                store: StoreKind::Kv,
                key: b"canary-key".to_vec(),
                version: 1,
                value: b"canary-value".to_vec(),
                description: Some(b"canary-desc".to_vec()),
            }],
            credentials: Vec::new(),
            flows: vec![SealedFlowRow {
                flow_id: "f".into(),
                verifier: b"canary-verifier".to_vec(),
                access_token: None,
            }],
        };
        assert_eq!(rows.sealed_bytes(), 12 + 11 + 15);
        let check = KeyCheck {
            ns: 7,
            wrapped_key: b"canary-wrapped".to_vec(),
        };
        let shown = format!("{rows:?} {check:?}");
        assert!(!shown.contains("canary"), "{shown}");
        assert!(shown.contains("records: 1"), "{shown}");
    }
}
