//! Providers (operator configuration) and write-only credentials: store, read metadata, list
//! and delete. The secret part is sealed on the way in and has no way back out: nothing here
//! returns it.

use serde_json::{Map, Value};

use crate::audit::RequestContext;
use crate::backend::{
    Commit, CredentialOwner, CredentialRow, CredentialWrite, Expiry, Mutation, Precondition,
    ProviderRow,
};
use crate::credentials::{CredentialSecret, ProviderDoc, check_metadata, parse_provider};
use crate::error::{CoreError, Result};
use crate::keyring::{DATA_KEY_ID, RecordPart, credential_aad};
use crate::model::{
    InstallationPrincipal, Millis, Ns, Principal, RecordKey, Scope, now_millis, validate_id,
};
use crate::sealed_rows::KeyCheck;

use super::Service;

/// A provider as answered: the document, with `client_secret_set` in place of the secret.
#[derive(Debug, Clone)]
pub struct ProviderOut {
    pub name: String,
    pub doc: ProviderDoc,
    pub client_secret_set: bool,
    pub created_at: Millis,
    pub updated_at: Millis,
}

/// A credential's metadata: everything but the secret.
#[derive(Debug, Clone, PartialEq)]
pub struct CredentialMeta {
    pub key: String,
    pub owner: CredentialOwner,
    pub provider: String,
    pub kind: String,
    pub version: u64,
    pub created_at: Millis,
    pub updated_at: Millis,
    pub expires_at: Option<Millis>,
    pub token_expires_at: Option<Millis>,
    pub scopes: Vec<String>,
    pub metadata: Map<String, Value>,
    pub needs_reconsent: bool,
}

/// A credential opened for the request proxy: the one path by which a secret leaves storage,
/// and it leads only into an outbound request. Neither `Serialize` nor a revealing `Debug`.
pub struct UsableCredential {
    pub meta: CredentialMeta,
    pub provider: ProviderDoc,
    pub secret: CredentialSecret,
    /// The namespace holding it and the app that stored it, for refreshes.
    pub(super) ns: crate::model::Ns,
    pub(super) stored_by: String,
}

impl std::fmt::Debug for UsableCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UsableCredential")
            .field("key", &self.meta.key)
            .field("provider", &self.meta.provider)
            .finish_non_exhaustive()
    }
}

/// A credential validated and sealed, ready to commit.
pub(super) struct PreparedCredential {
    pub ns: crate::model::Ns,
    pub other_ns: crate::model::Ns,
    pub write: CredentialWrite,
    pub metadata: Map<String, Value>,
    pub expiry: Expiry,
    /// The key `write` was sealed under.
    pub key_check: KeyCheck,
}

pub struct CredentialPage {
    pub items: Vec<CredentialMeta>,
    pub next_cursor: Option<String>,
}

/// Mutations committed together with a credential write, and the keys their ciphertexts were
/// sealed under.
#[derive(Default)]
pub(super) struct Extra {
    pub mutations: Vec<Mutation>,
    pub keys: Vec<KeyCheck>,
}

/// What `PUT /v1/credentials/{key}` carries.
pub struct CredentialInput {
    pub owner: CredentialOwner,
    pub provider: String,
    pub secret: Map<String, Value>,
    pub metadata: Map<String, Value>,
    pub ttl: Option<i64>,
}

impl std::fmt::Debug for CredentialInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CredentialInput")
            .field("owner", &self.owner)
            .field("provider", &self.provider)
            .finish_non_exhaustive()
    }
}

/// The AAD of a system-sealed provider secret.
fn provider_aad(name: &str) -> Vec<u8> {
    format!("tresor/provider/v1:{name}").into_bytes()
}

impl Service {
    pub async fn put_provider(
        &self,
        p: &Principal,
        ctx: &RequestContext,
        name: &str,
        body: Value,
    ) -> Result<(ProviderOut, bool)> {
        self.admin(p, ctx, "admin.put_provider", async || {
            validate_id("provider", name)?;
            let input = parse_provider(body)?;
            let document = serde_json::to_vec(&input.doc)
                .map_err(|e| CoreError::internal(format!("provider encoding: {e}")))?;
            let client_secret = match &input.client_secret {
                Some(s) => Some(tresor_crypto::seal(
                    &self.system_key,
                    DATA_KEY_ID,
                    &provider_aad(name),
                    s.as_bytes(),
                )?),
                None => None,
            };
            let existed = self.backend.get_provider(name).await?.is_some();
            let mut ev = self.admin_event(
                p,
                ctx,
                "admin.put_provider",
                if existed { 200 } else { 201 },
            );
            ev.key = Some(name.to_owned());
            let row = ProviderRow {
                name: name.to_owned(),
                document,
                client_secret,
                created_at: 0,
                updated_at: 0,
            };
            let (stored, created) = self.backend.put_provider(row, true, ev).await?;
            Ok((provider_out(stored)?, created))
        })
        .await
    }

    pub async fn get_provider(
        &self,
        p: &Principal,
        ctx: &RequestContext,
        name: &str,
    ) -> Result<ProviderOut> {
        self.admin(p, ctx, "admin.get_provider", async || {
            let row = self
                .backend
                .get_provider(name)
                .await?
                .ok_or_else(|| CoreError::NotFound(format!("no provider `{name}`")))?;
            self.audit_read(p, ctx, "admin.get_provider")?;
            provider_out(row)
        })
        .await
    }

    pub async fn list_providers(
        &self,
        p: &Principal,
        ctx: &RequestContext,
    ) -> Result<Vec<ProviderOut>> {
        self.admin(p, ctx, "admin.list_providers", async || {
            let rows = self.backend.list_providers().await?;
            self.audit_read(p, ctx, "admin.list_providers")?;
            rows.into_iter().map(provider_out).collect()
        })
        .await
    }

    pub async fn delete_provider(
        &self,
        p: &Principal,
        ctx: &RequestContext,
        name: &str,
    ) -> Result<()> {
        self.admin(p, ctx, "admin.delete_provider", async || {
            validate_id("provider", name)?;
            let mut ev = self.admin_event(p, ctx, "admin.delete_provider", 204);
            ev.key = Some(name.to_owned());
            self.backend.delete_provider(name, ev).await?;
            Ok(())
        })
        .await
    }

    /// Stores a credential (201 created / 200 replaced).
    pub async fn put_credential(
        &self,
        principal: &Principal,
        ctx: &RequestContext,
        key: &RecordKey,
        input: CredentialInput,
    ) -> Result<(CredentialMeta, bool)> {
        let p = principal.installation()?;
        let r = self.put_credential_inner(p, ctx, key, input).await;
        self.credential_refusal(p, ctx, "credentials.put", key, &r)?;
        r
    }

    async fn put_credential_inner(
        &self,
        p: &InstallationPrincipal,
        ctx: &RequestContext,
        key: &RecordKey,
        input: CredentialInput,
    ) -> Result<(CredentialMeta, bool)> {
        p.require(Scope::CredentialsStore)?;
        let input = &input;
        self.rekey_safe(&[p.ns, p.account_ns], || async move {
            let prepared = self.prepare_credential(p, key, input).await?;
            self.store_credential(p, ctx, key, prepared, "credentials.put", Extra::default())
                .await
        })
        .await
    }

    /// Validates and seals a credential for storage.
    pub(super) async fn prepare_credential(
        &self,
        p: &InstallationPrincipal,
        key: &RecordKey,
        input: &CredentialInput,
    ) -> Result<PreparedCredential> {
        if let Some(t) = input.ttl {
            self.limits.check_ttl(t)?;
        }
        let metadata = check_metadata(&input.metadata)?;
        validate_id("provider", &input.provider)
            .map_err(|_| CoreError::invalid(format!("unknown provider `{}`", input.provider)))?;
        let provider = self
            .backend
            .get_provider(&input.provider)
            .await?
            .ok_or_else(|| CoreError::invalid(format!("unknown provider `{}`", input.provider)))?;
        let doc = provider_doc(&provider)?;
        let parsed = CredentialSecret::parse(&input.secret, &doc, now_millis())?;
        let (ns, other_ns) = match input.owner {
            CredentialOwner::Installation => (p.ns, p.account_ns),
            CredentialOwner::Account => (p.account_ns, p.ns),
        };
        let owner_label = owner_label(p, input.owner);
        let (dk, key_check) = self.keys.sealing_key(self.backend.as_ref(), ns).await?;
        let (sealed_secret, sealed_meta) = seal_credential(
            &dk,
            ns,
            &owner_label,
            key,
            parsed.secret.as_bytes(),
            &metadata,
        )?;
        let write = CredentialWrite {
            key: key.as_bytes().to_vec(),
            owner: input.owner,
            app_id: p.app_id.clone(),
            provider: input.provider.clone(),
            kind: parsed.kind.as_str().to_owned(),
            token_expires_at: parsed.token_expires_at,
            scopes: parsed.scopes.clone(),
            needs_reconsent: false,
            metadata: sealed_meta,
            secret: sealed_secret,
        };
        Ok(PreparedCredential {
            ns,
            other_ns,
            write,
            metadata: input.metadata.clone(),
            expiry: input.ttl.map_or(Expiry::Clear, Expiry::In),
            key_check,
        })
    }

    /// Stores a prepared credential (replacing the one under its key), together with `extra`
    /// mutations in the same transaction; retried on write conflicts.
    pub(super) async fn store_credential(
        &self,
        p: &InstallationPrincipal,
        ctx: &RequestContext,
        key: &RecordKey,
        prepared: PreparedCredential,
        operation: &str,
        extra: Extra,
    ) -> Result<(CredentialMeta, bool)> {
        let owner = prepared.write.owner;
        loop {
            let current = self
                .backend
                .read_credential(&[prepared.ns], key.as_bytes())
                .await?;
            if let Some(c) = &current {
                check_may_change(p, c)?;
            }
            let created = current.is_none();
            let mut ev = self.credential_event(p, ctx, operation, key);
            ev.status = if created { 201 } else { 200 };
            let mut guards = vec![p.ns];
            if owner == CredentialOwner::Account {
                guards.push(p.account_ns);
            }
            let mut mutations = vec![Mutation::PutCredential {
                ns: prepared.ns,
                other_ns: Some(prepared.other_ns),
                expect: current
                    .as_ref()
                    .map_or(Precondition::Absent, |c| Precondition::Version(c.version)),
                credential: prepared.write.clone(),
                expiry: prepared.expiry,
            }];
            mutations.extend(extra.mutations.iter().cloned());
            let mut keys = vec![prepared.key_check.clone()];
            keys.extend(extra.keys.iter().cloned());
            let commit = Commit {
                guards,
                keys,
                mutations,
                audit: vec![ev],
            };
            match self.backend.commit(commit).await {
                // With extra mutations the caller decides: its own precondition may be what failed.
                Err(CoreError::WriteConflict) if extra.mutations.is_empty() => continue,
                Err(e) => return Err(e),
                Ok(applied) => {
                    let Some(crate::backend::Applied::Put {
                        version,
                        created_at,
                        updated_at,
                        expires_at,
                        ..
                    }) = applied.first().copied()
                    else {
                        return Err(CoreError::internal("a credential put applied nothing"));
                    };
                    let w = &prepared.write;
                    let meta = CredentialMeta {
                        key: key.as_str().to_owned(),
                        owner,
                        provider: w.provider.clone(),
                        kind: w.kind.clone(),
                        version,
                        created_at,
                        updated_at,
                        expires_at,
                        token_expires_at: w.token_expires_at,
                        scopes: w.scopes.clone(),
                        metadata: prepared.metadata.clone(),
                        needs_reconsent: false,
                    };
                    return Ok((meta, created));
                }
            }
        }
    }

    /// Opens a credential for the request proxy (scope `credentials:use`). Refused with
    /// `reconsent_required` when its grant was revoked.
    pub async fn credential_for_use(
        &self,
        principal: &Principal,
        key: &RecordKey,
    ) -> Result<UsableCredential> {
        let p = principal.installation()?;
        p.require(Scope::CredentialsUse)?;
        self.rekey_safe(&[], || self.credential_for_use_once(p, key))
            .await
    }

    async fn credential_for_use_once(
        &self,
        p: &InstallationPrincipal,
        key: &RecordKey,
    ) -> Result<UsableCredential> {
        let row = self
            .backend
            .read_credential(&[p.ns, p.account_ns], key.as_bytes())
            .await?
            .ok_or_else(|| CoreError::NotFound("no such credential".into()))?;
        if row.write.needs_reconsent {
            return Err(CoreError::ReconsentRequired);
        }
        let provider = self
            .backend
            .get_provider(&row.write.provider)
            .await?
            .ok_or_else(|| {
                CoreError::Conflict(format!(
                    "the credential's provider `{}` is no longer configured",
                    row.write.provider
                ))
            })?;
        let provider = provider_doc(&provider)?;
        let label = owner_label(p, row.write.owner);
        let secret = self
            .keys
            .open(
                self.backend.as_ref(),
                row.ns,
                &credential_aad(row.ns, &label, &row.write.key, RecordPart::CredentialSecret),
                &row.write.secret,
            )
            .await?;
        let secret = CredentialSecret::from_opened(secret);
        let ns = row.ns;
        let stored_by = row.write.app_id.clone();
        let meta = self.credential_meta(p, row).await?;
        Ok(UsableCredential {
            meta,
            provider,
            secret,
            ns,
            stored_by,
        })
    }

    /// Audits one proxied request.
    pub fn audit_credential_use(
        &self,
        principal: &Principal,
        ctx: &RequestContext,
        key: &str,
        status: u16,
    ) -> Result<()> {
        let mut ev = self.event(Some(principal), ctx, "credentials.request");
        ev.store = Some("credentials".into());
        ev.key = Some(key.to_owned());
        ev.status = status;
        self.enqueue(vec![ev])
    }

    /// A credential's metadata as `p` sees it (no audit; callers audit their own operation).
    pub(super) async fn get_credential_meta_for(
        &self,
        p: &InstallationPrincipal,
        key: &RecordKey,
    ) -> Result<CredentialMeta> {
        self.rekey_safe(&[], || async move {
            let row = self
                .backend
                .read_credential(&[p.ns, p.account_ns], key.as_bytes())
                .await?
                .ok_or_else(|| CoreError::NotFound("no such credential".into()))?;
            self.credential_meta(p, row).await
        })
        .await
    }

    pub async fn get_credential(
        &self,
        principal: &Principal,
        ctx: &RequestContext,
        key: &RecordKey,
    ) -> Result<CredentialMeta> {
        let p = principal.installation()?;
        let r = async {
            p.require(Scope::CredentialsRead)?;
            self.get_credential_meta_for(p, key).await
        }
        .await;
        let mut ev = self.credential_event(p, ctx, "credentials.get", key);
        ev.status = match &r {
            Ok(_) => 200,
            Err(e) => super::status_of(e),
        };
        self.enqueue(vec![ev])?;
        r
    }

    pub async fn list_credentials(
        &self,
        principal: &Principal,
        ctx: &RequestContext,
        prefix: &str,
        cursor: Option<&str>,
        limit: Option<usize>,
    ) -> Result<CredentialPage> {
        let p = principal.installation()?;
        let r = async {
            p.require(Scope::CredentialsRead)?;
            let (limit, query) = self.page_query(prefix, cursor, limit)?;
            let query = &query;
            self.rekey_safe(&[], || async move {
                let rows = self
                    .backend
                    .list_credentials(&[p.ns, p.account_ns], query)
                    .await?;
                let more = rows.len() > limit;
                let mut items = Vec::new();
                for row in rows.into_iter().take(limit) {
                    items.push(self.credential_meta(p, row).await?);
                }
                let next_cursor =
                    super::admin::next_cursor(more, items.last().map(|m| m.key.as_str()));
                Ok(CredentialPage { items, next_cursor })
            })
            .await
        }
        .await;
        let mut ev = self.event(Some(principal), ctx, "credentials.list");
        ev.status = match &r {
            Ok(_) => 200,
            Err(e) => super::status_of(e),
        };
        self.enqueue(vec![ev])?;
        r
    }

    /// Deletes a credential; a missing one is fine (204).
    pub async fn delete_credential(
        &self,
        principal: &Principal,
        ctx: &RequestContext,
        key: &RecordKey,
    ) -> Result<()> {
        let p = principal.installation()?;
        let r = self
            .rekey_safe(&[p.ns], || self.delete_credential_inner(p, ctx, key))
            .await;
        self.credential_refusal(p, ctx, "credentials.delete", key, &r)?;
        r
    }

    async fn delete_credential_inner(
        &self,
        p: &InstallationPrincipal,
        ctx: &RequestContext,
        key: &RecordKey,
    ) -> Result<()> {
        p.require(Scope::CredentialsStore)?;
        loop {
            let Some(current) = self
                .backend
                .read_credential(&[p.ns, p.account_ns], key.as_bytes())
                .await?
            else {
                let mut ev = self.credential_event(p, ctx, "credentials.delete", key);
                ev.status = 204;
                return self.enqueue(vec![ev]);
            };
            check_may_change(p, &current)?;
            let mut ev = self.credential_event(p, ctx, "credentials.delete", key);
            ev.status = 204;
            let commit = Commit {
                guards: vec![p.ns],
                keys: Vec::new(),
                mutations: vec![Mutation::DeleteCredential {
                    ns: current.ns,
                    key: key.as_bytes().to_vec(),
                    expect: Precondition::Version(current.version),
                }],
                audit: vec![ev],
            };
            match self.backend.commit(commit).await {
                Err(CoreError::WriteConflict) => continue,
                Err(e) => return Err(e),
                Ok(_) => return Ok(()),
            }
        }
    }

    async fn credential_meta(
        &self,
        p: &InstallationPrincipal,
        row: CredentialRow,
    ) -> Result<CredentialMeta> {
        let owner = row.write.owner;
        let label = owner_label(p, owner);
        let plain = self
            .keys
            .open(
                self.backend.as_ref(),
                row.ns,
                &credential_aad(
                    row.ns,
                    &label,
                    &row.write.key,
                    RecordPart::CredentialMetadata,
                ),
                &row.write.metadata,
            )
            .await?;
        let metadata = match serde_json::from_slice::<Value>(&plain) {
            Ok(Value::Object(m)) => m,
            _ => return Err(CoreError::Integrity),
        };
        Ok(CredentialMeta {
            key: String::from_utf8(row.write.key).map_err(|_| CoreError::Integrity)?,
            owner,
            provider: row.write.provider,
            kind: row.write.kind,
            version: row.version,
            created_at: row.created_at,
            updated_at: row.updated_at,
            expires_at: row.expires_at,
            token_expires_at: row.write.token_expires_at,
            scopes: row.write.scopes,
            metadata,
            needs_reconsent: row.write.needs_reconsent,
        })
    }

    fn credential_event(
        &self,
        p: &InstallationPrincipal,
        ctx: &RequestContext,
        op: &str,
        key: &RecordKey,
    ) -> crate::audit::AuditEvent {
        let mut ev = self.event(Some(&Principal::Installation(p.clone())), ctx, op);
        ev.store = Some("credentials".into());
        ev.key = Some(key.as_str().to_owned());
        ev
    }

    /// Audits a refused credential write (successes are audited in their transaction).
    fn credential_refusal<T>(
        &self,
        p: &InstallationPrincipal,
        ctx: &RequestContext,
        op: &str,
        key: &RecordKey,
        r: &Result<T>,
    ) -> Result<()> {
        if let Err(e) = r {
            let mut ev = self.credential_event(p, ctx, op, key);
            ev.status = super::status_of(e);
            self.enqueue(vec![ev])?;
        }
        Ok(())
    }
}

/// Only the app that stored an account credential may replace or delete it.
fn check_may_change(p: &InstallationPrincipal, current: &CredentialRow) -> Result<()> {
    if current.write.owner == CredentialOwner::Account && current.write.app_id != p.app_id {
        return Err(CoreError::Forbidden(
            "only the app that stored this account credential may replace or delete it".into(),
        ));
    }
    Ok(())
}

/// A credential's secret and metadata sealed under `dk`, each bound to its namespace, owner,
/// key and part: (secret, metadata).
pub(super) fn seal_credential(
    dk: &tresor_crypto::DataKey,
    ns: Ns,
    owner_label: &str,
    key: &RecordKey,
    secret: &[u8],
    metadata: &[u8],
) -> Result<(Vec<u8>, Vec<u8>)> {
    let aad = |part| credential_aad(ns, owner_label, key.as_bytes(), part);
    let secret = tresor_crypto::seal(dk, DATA_KEY_ID, &aad(RecordPart::CredentialSecret), secret)?;
    let metadata = tresor_crypto::seal(
        dk,
        DATA_KEY_ID,
        &aad(RecordPart::CredentialMetadata),
        metadata,
    )?;
    Ok((secret, metadata))
}

pub(super) fn owner_label(p: &InstallationPrincipal, owner: CredentialOwner) -> String {
    match owner {
        CredentialOwner::Installation => format!("{}/{}", p.account_id, p.installation_id),
        CredentialOwner::Account => format!("account/{}", p.account_id),
    }
}

fn provider_doc(row: &ProviderRow) -> Result<ProviderDoc> {
    serde_json::from_slice(&row.document).map_err(|_| CoreError::Integrity)
}

fn provider_out(row: ProviderRow) -> Result<ProviderOut> {
    Ok(ProviderOut {
        doc: provider_doc(&row)?,
        name: row.name,
        client_secret_set: row.client_secret.is_some(),
        created_at: row.created_at,
        updated_at: row.updated_at,
    })
}
