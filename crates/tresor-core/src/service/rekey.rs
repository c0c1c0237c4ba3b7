//! Installation key rotation: one installation's records, credentials and OAuth flows re-sealed
//! under a fresh data key, online.
//!
//! # How
//!
//! 1. **Fence.** The rotation puts up the namespace's rekey fence (a lease on the backend's
//!    clock, [`REKEY_LEASE_MS`]). From then on every commit guarded by the namespace fails
//!    inside its transaction with `Rekeying`, and its request waits ([`RekeyWait`]) and runs
//!    again; reads go on as before. Without the fence, a rotation of a busy installation would
//!    lose every race against its writers and never commit.
//! 2. **Read and re-seal.** It reads the wrapped key (not the cache), unwraps it, reads every row
//!    of the namespace that holds ciphertext (records and credentials, expired ones too, and
//!    OAuth flows), opens each under the old key and seals it under a new one with the same
//!    associated data (which names namespace, owner, store, key and part, never the key).
//! 3. **Swap.** One backend transaction replaces the wrapped key (compare-and-set on the old
//!    one) and every ciphertext (compare-and-set on each row's version, or on a flow's old
//!    ciphertexts), checks that the namespace holds no row it did not re-seal, takes the fence
//!    down and writes the audit event. Readers see all-old or all-new. A commit that raced the
//!    fence is caught by the compare-and-sets: the rotation reads again, a few times.
//!
//! # Caches on other servers
//!
//! Other servers may cache the old key (`KeyRing`). They cannot write with it: every commit
//! that sealed something carries the wrapped key it sealed under (`KeyCheck`), compared inside
//! the transaction, so such a commit fails with `Rekeying` and runs again with the key unwrapped
//! afresh. They cannot read wrong with it: a ciphertext the cached key does not open makes
//! `KeyRing::open` unwrap the stored key again and try that one; a ciphertext read just before
//! the swap and opened just after is read again once ([`Service::rekey_safe`]).
//!
//! The old key exists nowhere once the swap commits; like any deleted row, copies of old
//! ciphertexts in free pages or backups stay readable only with the old wrapped key.

use std::time::{Duration, Instant};

use tresor_crypto::DataKey;

use crate::audit::RequestContext;
use crate::backend::CredentialOwner;
use crate::error::{CoreError, Result};
use crate::keyring::{DATA_KEY_ID, KeyRing, RecordPart, credential_aad, record_aad};
use crate::model::{Ns, Principal, validate_id};
use crate::sealed_rows::{Rekey, SealedCredentialRow, SealedFlowRow, SealedRecordRow, SealedRows};

use super::Service;
use super::admin::no_installation;
use super::oauth::flow_aad;

/// How long a rotation may hold its namespace's fence, on the backend's clock. A rotation that
/// dies holding it blocks the installation's writes this long at most.
pub const REKEY_LEASE_MS: i64 = 10_000;

/// How long a request waits for a rotation of its namespace before it answers 503: a little
/// longer than a fence can stand.
const REKEY_WAIT: Duration = Duration::from_millis(REKEY_LEASE_MS.unsigned_abs() + 2_000);

/// The longest pause between two tries of a waiting request.
const REKEY_POLL_MAX: Duration = Duration::from_millis(25);

/// Times a rotation reads and re-seals again after one of its compare-and-sets lost.
const MAX_ATTEMPTS: u32 = 5;

/// The most ciphertext a rotation holds in memory (old and new, so about twice this): a larger
/// installation is refused rather than rotated in one transaction.
const MAX_SEALED_BYTES: usize = 256 << 20;

/// The audit operation of a rotation.
const OPERATION: &str = "admin.rotate_installation_key";

/// What a committed rotation re-sealed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstallationKeyRotated {
    pub installation_id: String,
    pub records: u64,
    pub credentials: u64,
    pub oauth_flows: u64,
}

impl Service {
    /// Re-seals every record, credential and OAuth flow of an installation under a new data
    /// key, which replaces the old one in the same transaction (admin only). `NotFound` for an
    /// unknown installation; `Conflict` while another rotation of it runs or when it holds too
    /// much to rotate in one transaction; `Unavailable` when its rows kept changing.
    pub async fn rotate_installation_key(
        &self,
        p: &Principal,
        ctx: &RequestContext,
        installation_id: &str,
    ) -> Result<InstallationKeyRotated> {
        self.admin(p, ctx, OPERATION, async || {
            validate_id("installation", installation_id)?;
            let inst = self.installation(installation_id).await?;
            let owner = Owner {
                ns: inst.ns,
                account_id: inst.account_id.clone(),
                installation_id: inst.installation_id.clone(),
            };
            let lease_id = lease_id()?;
            let fenced = self
                .backend
                .fence_namespace(owner.ns, &lease_id, REKEY_LEASE_MS)
                .await
                .map_err(|e| match e {
                    CoreError::NotFound(_) => no_installation(installation_id),
                    other => other,
                })?;
            if !fenced {
                return Err(CoreError::Conflict(
                    "a key rotation of this installation is already running".into(),
                ));
            }
            let result = self.rekey_fenced(p, ctx, &owner, &lease_id).await;
            if result.is_err() {
                // Whatever happened, the next use unwraps the stored key afresh.
                self.keys.forget(owner.ns);
                if let Err(e) = self.backend.unfence_namespace(owner.ns, &lease_id).await {
                    tracing::warn!(error = %e, "a failed key rotation's fence stays until it expires");
                }
            }
            result
        })
        .await
    }

    /// Steps 2 and 3 of a rotation, under its fence.
    async fn rekey_fenced(
        &self,
        p: &Principal,
        ctx: &RequestContext,
        owner: &Owner,
        lease_id: &str,
    ) -> Result<InstallationKeyRotated> {
        let started = Instant::now();
        let not_found = || no_installation(&owner.installation_id);
        for attempt in 1..=MAX_ATTEMPTS {
            let old_wrapped = self
                .backend
                .namespace_key(owner.ns)
                .await?
                .ok_or_else(not_found)?;
            let old_key = self.keys.unwrap_namespace_key(owner.ns, &old_wrapped)?;
            let rows = self.backend.namespace_sealed_rows(owner.ns).await?;
            if rows.sealed_bytes() > MAX_SEALED_BYTES {
                return Err(CoreError::Conflict(format!(
                    "the installation holds more than {} MiB of sealed data, too much to \
                     rotate in one transaction",
                    MAX_SEALED_BYTES >> 20
                )));
            }
            let new_key = DataKey::generate()?;
            let new_wrapped = self
                .keys
                .wrap(&new_key, &crate::keyring::namespace_context(owner.ns))?;
            let resealed = reseal(owner, &rows, &old_key, &new_key)?;
            if started.elapsed() >= Duration::from_millis(REKEY_LEASE_MS.unsigned_abs() / 2) {
                return Err(CoreError::Unavailable(
                    "the installation's key rotation took too long; nothing was rotated".into(),
                ));
            }
            let mut ev = self.admin_event(p, ctx, OPERATION, 200);
            ev.installation_id = Some(owner.installation_id.clone());
            ev.account_id = Some(owner.account_id.clone());
            let rekey = Rekey {
                ns: owner.ns,
                lease_id: lease_id.to_owned(),
                old_wrapped_key: old_wrapped,
                new_wrapped_key: new_wrapped.clone(),
                records: resealed.records,
                credentials: resealed.credentials,
                flows: resealed.flows,
                audit: ev,
            };
            match self.backend.rekey_namespace(rekey).await {
                Ok(counts) => {
                    self.keys.replace(owner.ns, new_key, &new_wrapped);
                    tracing::info!(
                        installation_id = %owner.installation_id,
                        records = counts.records,
                        credentials = counts.credentials,
                        flows = counts.flows,
                        "rotated an installation's data key"
                    );
                    return Ok(InstallationKeyRotated {
                        installation_id: owner.installation_id.clone(),
                        records: counts.records,
                        credentials: counts.credentials,
                        oauth_flows: counts.flows,
                    });
                }
                Err(CoreError::WriteConflict) => {
                    tracing::debug!(attempt, "a key rotation lost a race; reading again");
                }
                Err(CoreError::NotFound(_)) => return Err(not_found()),
                Err(e) => return Err(e),
            }
        }
        Err(CoreError::Unavailable(
            "the installation kept changing during its key rotation; nothing was rotated, try \
             again"
                .into(),
        ))
    }

    /// Runs `op` (which reads, seals and commits, or only reads and opens) again while its
    /// commit finds one of `namespaces` being re-keyed ([`RekeyWait`]), and once more after an
    /// integrity failure: a ciphertext read just before a rotation committed does not open
    /// under the key read just after. A damaged ciphertext fails the second run too.
    pub(super) async fn rekey_safe<T, F, Fut>(&self, namespaces: &[Ns], mut op: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let mut wait = RekeyWait::new();
        let mut read_again = true;
        loop {
            match op().await {
                Err(CoreError::Rekeying) => wait.again(&self.keys, namespaces).await?,
                Err(CoreError::Integrity) if read_again => read_again = false,
                other => return other,
            }
        }
    }
}

/// The wait of a request whose commit found its namespace being re-keyed (`Rekeying`).
pub(super) struct RekeyWait {
    started: Instant,
    tries: u32,
}

impl RekeyWait {
    pub(super) fn new() -> RekeyWait {
        RekeyWait {
            started: Instant::now(),
            tries: 0,
        }
    }

    /// Forgets the cached keys of `namespaces` (the key may have changed), waits before the
    /// caller runs again (not at all the first time: a changed key alone needs no wait), and
    /// answers `Rekeying` (503) once the wait has lasted longer than a fence can stand.
    pub(super) async fn again(&mut self, keys: &KeyRing, namespaces: &[Ns]) -> Result<()> {
        for ns in namespaces {
            keys.forget(*ns);
        }
        if self.started.elapsed() > REKEY_WAIT {
            return Err(CoreError::Rekeying);
        }
        self.tries += 1;
        if self.tries > 1 {
            let pause = Duration::from_millis(1 << self.tries.min(5)).min(REKEY_POLL_MAX);
            tokio::time::sleep(pause).await;
        }
        Ok(())
    }
}

/// The namespace being rotated and the names its associated data binds.
struct Owner {
    ns: Ns,
    account_id: String,
    installation_id: String,
}

impl Owner {
    /// The owner that records of the installation's stores name.
    fn record_owner(&self) -> String {
        format!("{}/{}", self.account_id, self.installation_id)
    }

    /// The owner label of a credential (as `credentials::owner_label` makes it).
    fn credential_owner(&self, owner: CredentialOwner) -> String {
        match owner {
            CredentialOwner::Installation => self.record_owner(),
            CredentialOwner::Account => format!("account/{}", self.account_id),
        }
    }
}

/// The rows of a namespace with their ciphertexts re-sealed.
struct Resealed {
    records: Vec<SealedRecordRow>,
    credentials: Vec<SealedCredentialRow>,
    flows: Vec<(SealedFlowRow, SealedFlowRow)>,
}

/// Opens every ciphertext of `rows` under `old` and seals its plaintext under `new` with the
/// same associated data. Plaintexts live only inside `reseal_one`, in zeroizing buffers.
fn reseal(owner: &Owner, rows: &SealedRows, old: &DataKey, new: &DataKey) -> Result<Resealed> {
    let record_owner = owner.record_owner();
    let records = rows
        .records
        .iter()
        .map(|r| {
            let aad = |part| record_aad(owner.ns, &record_owner, r.store, &r.key, part);
            Ok(SealedRecordRow {
                value: reseal_one(old, new, &aad(RecordPart::Value), &r.value)?,
                description: r
                    .description
                    .as_ref()
                    .map(|d| reseal_one(old, new, &aad(RecordPart::Description), d))
                    .transpose()?,
                ..r.clone()
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let credentials = rows
        .credentials
        .iter()
        .map(|c| {
            let label = owner.credential_owner(c.owner);
            let aad = |part| credential_aad(owner.ns, &label, &c.key, part);
            Ok(SealedCredentialRow {
                metadata: reseal_one(old, new, &aad(RecordPart::CredentialMetadata), &c.metadata)?,
                secret: reseal_one(old, new, &aad(RecordPart::CredentialSecret), &c.secret)?,
                ..c.clone()
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let flows = rows
        .flows
        .iter()
        .map(|f| {
            let verifier = reseal_one(old, new, &flow_aad("verifier", &f.flow_id), &f.verifier)?;
            let access_token = f
                .access_token
                .as_ref()
                .map(|t| reseal_one(old, new, &flow_aad("access_token", &f.flow_id), t))
                .transpose()?;
            let resealed = SealedFlowRow {
                flow_id: f.flow_id.clone(),
                verifier,
                access_token,
            };
            Ok((f.clone(), resealed))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Resealed {
        records,
        credentials,
        flows,
    })
}

fn reseal_one(old: &DataKey, new: &DataKey, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>> {
    let plain = tresor_crypto::open(old, aad, sealed)?;
    Ok(tresor_crypto::seal(new, DATA_KEY_ID, aad, &plain)?)
}

fn lease_id() -> Result<String> {
    Ok(tresor_crypto::random_bytes::<16>()?
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::StoreKind;

    fn owner() -> Owner {
        Owner {
            ns: 77,
            account_id: "acct".into(),
            installation_id: "inst".into(),
        }
    }

    /// Rows of `owner()` sealed under `key`: a record with and without a description, an
    /// installation credential, a pending and a completed flow.
    fn rows(key: &DataKey) -> SealedRows {
        let o = owner();
        let seal =
            |aad: &[u8], plain: &[u8]| tresor_crypto::seal(key, DATA_KEY_ID, aad, plain).unwrap();
        let rec = |store, k: &str, part| record_aad(o.ns, "acct/inst", store, k.as_bytes(), part);
        let cred = |part| credential_aad(o.ns, "acct/inst", b"gh", part);
        SealedRows {
            records: vec![
                SealedRecordRow {
                    store: StoreKind::Secrets,
                    key: b"a".to_vec(),
                    version: 3,
                    value: seal(&rec(StoreKind::Secrets, "a", RecordPart::Value), b"\"va\""),
                    description: Some(seal(
                        &rec(StoreKind::Secrets, "a", RecordPart::Description),
                        b"da",
                    )),
                },
                SealedRecordRow {
                    store: StoreKind::Kv,
                    key: b"b".to_vec(),
                    version: 4,
                    value: seal(&rec(StoreKind::Kv, "b", RecordPart::Value), b"1"),
                    description: None,
                },
            ],
            credentials: vec![SealedCredentialRow {
                key: b"gh".to_vec(),
                owner: CredentialOwner::Installation,
                version: 5,
                metadata: seal(&cred(RecordPart::CredentialMetadata), b"{}"),
                secret: seal(&cred(RecordPart::CredentialSecret), b"{\"token\":\"s\"}"),
            }],
            flows: vec![
                SealedFlowRow {
                    flow_id: "f1".into(),
                    verifier: seal(&flow_aad("verifier", "f1"), b"v1"),
                    access_token: None,
                },
                SealedFlowRow {
                    flow_id: "f2".into(),
                    verifier: seal(&flow_aad("verifier", "f2"), b"v2"),
                    access_token: Some(seal(&flow_aad("access_token", "f2"), b"t2")),
                },
            ],
        }
    }

    /// Every ciphertext of `rows` with the associated data it was sealed with.
    fn ciphertexts(rows: &SealedRows) -> Vec<(Vec<u8>, Vec<u8>)> {
        let o = owner();
        let mut out = Vec::new();
        for r in &rows.records {
            let aad = |part| record_aad(o.ns, "acct/inst", r.store, &r.key, part);
            out.push((aad(RecordPart::Value), r.value.clone()));
            if let Some(d) = &r.description {
                out.push((aad(RecordPart::Description), d.clone()));
            }
        }
        for c in &rows.credentials {
            let aad = |part| credential_aad(o.ns, "acct/inst", &c.key, part);
            out.push((aad(RecordPart::CredentialMetadata), c.metadata.clone()));
            out.push((aad(RecordPart::CredentialSecret), c.secret.clone()));
        }
        for f in &rows.flows {
            out.push((flow_aad("verifier", &f.flow_id), f.verifier.clone()));
            if let Some(t) = &f.access_token {
                out.push((flow_aad("access_token", &f.flow_id), t.clone()));
            }
        }
        out
    }

    #[test]
    fn resealing_keeps_every_plaintext_and_moves_it_to_the_new_key_only() {
        let (old, new) = (DataKey::generate().unwrap(), DataKey::generate().unwrap());
        let before = rows(&old);
        let out = reseal(&owner(), &before, &old, &new).unwrap();
        let after = SealedRows {
            records: out.records,
            credentials: out.credentials,
            flows: out.flows.iter().map(|(_, n)| n.clone()).collect(),
        };
        // What identifies a row and its compare-and-set stays; every ciphertext changes.
        assert!(out.flows.iter().map(|(o, _)| o).eq(before.flows.iter()));
        for (b, a) in before.records.iter().zip(&after.records) {
            assert_eq!((b.store, &b.key, b.version), (a.store, &a.key, a.version));
            assert_eq!(b.description.is_some(), a.description.is_some());
        }
        assert_eq!(after.credentials[0].version, 5);
        assert_eq!(after.flows[0].access_token, None);
        let (old_cts, new_cts) = (ciphertexts(&before), ciphertexts(&after));
        assert_eq!(old_cts.len(), 8);
        assert_eq!(old_cts.len(), new_cts.len());
        for ((aad, was), (aad2, now)) in old_cts.iter().zip(&new_cts) {
            assert_eq!(aad, aad2);
            assert_ne!(was, now);
            let plain = tresor_crypto::open(&old, aad, was).unwrap();
            assert_eq!(*tresor_crypto::open(&new, aad, now).unwrap(), *plain);
            // The old ciphertexts do not open under the new key, nor the new under the old.
            assert!(tresor_crypto::open(&new, aad, was).is_err());
            assert!(tresor_crypto::open(&old, aad, now).is_err());
        }
    }

    #[test]
    fn a_damaged_or_foreign_ciphertext_stops_the_rotation() {
        let (old, new) = (DataKey::generate().unwrap(), DataKey::generate().unwrap());
        let mut damaged = rows(&old);
        let last = damaged.credentials[0].secret.len() - 1;
        damaged.credentials[0].secret[last] ^= 1;
        assert!(matches!(
            reseal(&owner(), &damaged, &old, &new),
            Err(CoreError::Integrity)
        ));
        // Rows sealed under another key (not this namespace's) do not open either.
        let foreign = rows(&DataKey::generate().unwrap());
        assert!(matches!(
            reseal(&owner(), &foreign, &old, &new),
            Err(CoreError::Integrity)
        ));
    }

    #[tokio::test]
    async fn waiting_forgets_keys_and_gives_up_after_the_lease() {
        let ring = KeyRing::new(
            std::sync::Arc::new(tresor_crypto::RootKeyRing::generate().unwrap()),
            "1".into(),
        );
        let mut wait = RekeyWait::new();
        let first = Instant::now();
        wait.again(&ring, &[1, 2]).await.unwrap();
        assert!(
            first.elapsed() < Duration::from_millis(20),
            "the first try is at once"
        );
        wait.again(&ring, &[1]).await.unwrap();
        wait.started = Instant::now() - REKEY_WAIT - Duration::from_millis(1);
        assert!(matches!(
            wait.again(&ring, &[1]).await,
            Err(CoreError::Rekeying)
        ));
    }
}
